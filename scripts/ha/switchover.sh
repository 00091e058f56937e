#!/usr/bin/env bash
# pgbench through HAProxy's primary service (127.0.0.1:5433) of the lab (scripts/ha/lab.sh)
# while the leader changes; prints one line: failed transactions, aborted clients, the longest
# stall (no transaction completing), and transactions done.
#
#   scripts/ha/switchover.sh HOW [select-only|tpcb-like] [CLIENTS] [SECONDS]
#
# HOW: pgmux      `pgmux switchover` on the leader's pgmux (needs the lab up with pgmux)
#      patronictl `patronictl switchover --force` (any pooler)
#      kill       SIGKILL to the leader's postmaster (Patroni restarts it in place)
#      kill-node  SIGKILL to the leader's Patroni and postmaster (failover after the leader
#                 key's ttl); a psql session through HAProxy checks its connection survives
#      none       no change (baseline)
# The change happens a third of the way into the run.
set -euo pipefail

LAB=${HA_LAB:-/tmp/pgmux-ha}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PGMUX_BIN=${PGMUX_BIN:-$ROOT/target/release/pgmux}
HOW=${1:?usage: $0 pgmux|patronictl|kill|none [select-only|tpcb-like] [CLIENTS] [SECONDS]}
SCRIPT=${2:-select-only}
CLIENTS=${3:-8}
SECS=${4:-15}
export PGPASSWORD=postgres-pass
CONN=(-h 127.0.0.1 -p 5433 -U postgres)

leader() { curl -fs http://127.0.0.1:8008/cluster | python3 -c 'import json,sys; print([m["name"] for m in json.load(sys.stdin)["members"] if m["role"]=="leader"][0])'; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
pgbench -q -i -s 1 "${CONN[@]}" postgres >/dev/null 2>&1

old=$(leader)
if [[ $HOW == kill-node ]]; then
    # One long session: a statement every 50 ms, errors allowed, the connection must survive.
    for ((i = 0; i < SECS * 20; i++)); do echo "SELECT current_setting('port'), pg_sleep(0.05);"; done >"$out/session.sql"
    # (set +e: psql's own exit status is the result, not the end of this subshell.)
    (set +e; psql -X -A -t -q -v ON_ERROR_STOP=0 "${CONN[@]}" -f "$out/session.sql" postgres >"$out/session.out" 2>"$out/session.err"
        echo $? >"$out/session.rc") &
    session=$!
fi
(cd "$out" && exec pgbench -n -b "$SCRIPT" -c "$CLIENTS" -j 2 -T "$SECS" -l "${CONN[@]}" postgres >"$out/summary" 2>"$out/errors") &
bench=$!
sleep $((SECS / 3))
date +%s.%N >"$out/changed_at"
case $HOW in
pgmux) "$PGMUX_BIN" switchover "$LAB/pooler${old#pg}.ini" >"$out/how" 2>&1 || cat "$out/how" >&2 ;;
patronictl) patronictl -c "$LAB/pg1/patroni.yml" switchover --leader "$old" --force >"$out/how" 2>&1 || cat "$out/how" >&2 ;;
kill) kill -KILL "$(head -1 "$LAB/pg${old#pg}/data/postmaster.pid")" ;;
kill-node)
    pkill -KILL -f "patroni $LAB/${old}/patroni.yml" || true
    kill -KILL "$(head -1 "$LAB/${old}/data/postmaster.pid")"
    ;;
none) ;;
*) echo "unknown HOW: $HOW" >&2; exit 2 ;;
esac
wait "$bench" || true
session_line=
if [[ $HOW == kill-node ]]; then
    wait "$session" || true
    session_line=" session_rc=$(cat "$out/session.rc") session_ok=$(grep -c . "$out/session.out" || true) session_errors=$(grep -c ERROR "$out/session.err" || true) session_last_port=$(tail -1 "$out/session.out" | cut -d'|' -f1)"
fi
cluster_leader() {
    for api in 8008 8009; do
        curl -fs "http://127.0.0.1:$api/cluster" 2>/dev/null && return 0
    done
    return 1
}
new=$(cluster_leader | python3 -c 'import json,sys; print([m["name"] for m in json.load(sys.stdin)["members"] if m["role"]=="leader"][0])' || echo "?")

# -l: one line per transaction, "client xact latency script epoch us [failed]" (PostgreSQL 15).
cat "$out"/pgbench_log.* | python3 -c '
import sys
changed = float(open(sys.argv[1]).read())
ends, failed = [], 0
for line in sys.stdin:
    f = line.split()
    if len(f) < 6: continue
    if f[2] == "failed": failed += 1; continue
    ends.append(int(f[4]) + int(f[5]) / 1e6)
ends.sort()
gap = max((b - a for a, b in zip(ends, ends[1:])), default=0.0)
after = sum(1 for t in ends if t > changed + 0.5)
last = ends[-1] if ends else 0.0
at_end = sum(1 for t in ends if t > last - 2.0) if ends and last > changed + 3.0 else 0
print(f"done={len(ends)} done_after_change={after} done_last_2s={at_end} failed_logged={failed} stall_s={gap:.2f}")
' "$out/changed_at" >"$out/gaps"
failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out/summary")
aborted=$(grep -c "client [0-9]* .*aborted" "$out/errors" || true)
echo "how=$HOW script=$SCRIPT clients=$CLIENTS leader=$old->$new failed=${failed:-?} aborted_clients=$aborted $(cat "$out/gaps") $(grep -m1 '^tps' "$out/summary" | cut -d' ' -f1-3 | tr ' ' '_')$session_line"
if [[ -s $out/how ]]; then sed 's/^/  /' "$out/how"; fi
if [[ -s $out/errors ]]; then head -5 "$out/errors" | sed 's/^/  pgbench: /'; fi
