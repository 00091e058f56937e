#!/usr/bin/env bash
# The HA test of the real thing (issue 11): etcd, two Patroni members, HAProxy and a pgmux beside
# each (scripts/ha/lab.sh), pgbench -c 8 through HAProxy's primary service, whose checks pgmux
# answers. Asserts, for each run:
#   SWITCHOVER by pgmux (both ways, select-only and tpcb-like): 0 failed transactions,
#     0 aborted clients, longest stall under 3 s;
#   patronictl switchover: the clients go on (fewer aborted than clients, transactions in the
#     last 2 s of the run);
#   the leader's node killed (Patroni and postmaster): a psql session through HAProxy keeps its
#     connection and ends on the new leader.
# Installs etcd-server, patroni and haproxy when missing (as root on Debian). Takes about 2 min.
#
#   scripts/ha/test.sh            # pgmux from target/debug (PGMUX_BIN to change)
set -euo pipefail
cd "$(dirname "$0")/../.."
export PGMUX_BIN=${PGMUX_BIN:-$PWD/target/debug/pgmux}
export HA_LAB=${HA_LAB:-$(mktemp -d /tmp/pgmux-ha-test.XXXXXX)}
[[ -x $PGMUX_BIN ]] || cargo build -q -p pgmux
trap 'scripts/ha/lab.sh down >/dev/null 2>&1 || true; rm -rf "$HA_LAB"' EXIT
scripts/ha/lab.sh up pgmux

failures=0
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
check() { # description, condition
    if eval "$2"; then echo "  ok: $1"; else echo "  FAILED: $1" >&2; failures=$((failures + 1)); fi
}

# pgmux haproxy-config reads the members from Patroni.
cfg=$("$PGMUX_BIN" haproxy-config "$HA_LAB/pooler1.ini")
check "haproxy-config: both services, both members, pgmux's checks" \
    '[[ $(grep -c "^listen pgmux-ha-" <<<"$cfg") == 2 && $(grep -c "server pg[12] 127.0.0.1:6441 check port 9641 .*agent-port 9651" <<<"$cfg") == 4 ]]'

for run in "pgmux select-only" "pgmux tpcb-like" "patronictl select-only" "patronictl tpcb-like" "kill-node select-only"; do
    read -r how script <<<"$run"
    secs=12
    [[ $how == kill-node ]] && secs=30
    line=$(scripts/ha/switchover.sh "$how" "$script" 8 "$secs")
    echo "$line"
    result=$(head -1 <<<"$line")
    failed=$(field failed "$result")
    aborted=$(field aborted_clients "$result")
    stall=$(field stall_s "$result")
    leader=$(field leader "$result")
    check "$how $script: the leader changed ($leader)" '[[ ${leader%->*} != "${leader#*->}" && ${leader#*->} != "?" ]]'
    case $how in
    pgmux)
        check "$how $script: 0 failed transactions" '[[ $failed == 0 ]]'
        check "$how $script: 0 aborted clients" '[[ $aborted == 0 ]]'
        check "$how $script: longest stall $stall s < 3 s" 'python3 -c "import sys; sys.exit(0 if float(\"$stall\") < 3 else 1)"'
        ;;
    patronictl)
        check "$how $script: clients go on ($aborted of 8 aborted)" '[[ $aborted -lt 8 && $(field done_last_2s "$result") -gt 0 ]]'
        ;;
    kill-node)
        new=${leader#*->}
        check "$how: the psql session kept its connection" '[[ $(field session_rc "$result") == 0 ]]'
        check "$how: the psql session ended on the new leader" '[[ $(field session_last_port "$result") == $((5440 + ${new#pg})) ]]'
        ;;
    esac
    sleep 2
done
if ((failures)); then
    echo "ha test: $failures checks failed; logs in $HA_LAB" >&2
    trap - EXIT
    scripts/ha/lab.sh down >/dev/null 2>&1 || true
    exit 1
fi
echo "ha test: all checks passed"
