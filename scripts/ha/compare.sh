#!/usr/bin/env bash
# The HA runs of docs/HA.md, side by side: the same lab (scripts/ha/lab.sh) with pgmux (HAProxy's
# checks answered by pgmux) and with PgBouncer 1.25.2 (HAProxy's checks answered by Patroni, as
# Pigsty deploys it), pgbench -c 8 through the primary service, each change REPEAT times.
#
#   PGBOUNCER_BIN=/path/to/pgbouncer scripts/ha/compare.sh [REPEAT]
#   POOLERS=pgbouncer ... (one of them only)
set -euo pipefail
cd "$(dirname "$0")/../.."
REPEAT=${1:-1}
: "${PGBOUNCER_BIN:?PGBOUNCER_BIN names PgBouncer 1.25.2}"
export PGMUX_BIN=${PGMUX_BIN:-$PWD/target/release/pgmux}
echo "| pooler | change | script | failed xacts | aborted clients (of 8) | longest stall s | xacts in the last 2 s | psql session kept, ended on the new leader |"
echo "|---|---|---|---|---|---|---|---|"
for pooler in ${POOLERS:-pgmux pgbouncer}; do
    runs=("patronictl select-only" "patronictl tpcb-like")
    [[ $pooler == pgmux ]] && runs=("pgmux select-only" "pgmux tpcb-like" "${runs[@]}")
    runs+=("kill-node select-only")
    for ((r = 0; r < REPEAT; r++)); do
        for run in "${runs[@]}"; do
            read -r how script <<<"$run"
            secs=12
            [[ $how == kill-node ]] && secs=30
            # A fresh lab for each repetition, and for a kill (it leaves one member).
            if [[ $run == "${runs[0]}" || $how == kill-node ]]; then
                scripts/ha/lab.sh up "$pooler" >/dev/null
            fi
            all=$(scripts/ha/switchover.sh "$how" "$script" 8 "$secs" || true)
            line=${all%%$'\n'*}
            f() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
            session="-"
            if [[ $how == kill-node ]]; then
                new=$(f leader)
                new=${new#*->}
                kept=no
                [[ $(f session_rc) == 0 ]] && kept=yes
                on=no
                [[ $new =~ ^pg[12]$ && $(f session_last_port) == $((5440 + ${new#pg})) ]] && on=yes
                session="$kept, $on ($(f session_errors) failed statements)"
            fi
            echo "| $pooler | $how | $script | $(f failed) | $(f aborted_clients) | $(f stall_s) | $(f done_last_2s) | $session |"
            sleep 2
        done
    done
done
scripts/ha/lab.sh down >/dev/null 2>&1 || true
