#!/usr/bin/env bash
# Instructions each pooler runs in user space per transaction, PgBouncer and pgmux side by side,
# counted by callgrind: the same count on every run (unlike CPU time on a shared VM), so a cut of
# 2% shows as one. Each pooler runs under `valgrind --tool=callgrind`; pgbench warms it up, the
# counters are zeroed (callgrind_control -z), T transactions per client run, and the counters
# are dumped and summed. With TOP=n the n functions with the most instructions of their own are
# listed per pooler too. Kernel time is not counted: benches/xact_cost.sh measures it.
# LOGIN=scram or LOGIN=md5 counts logins instead: pgbench -C, a new connection per transaction,
# as a role whose stored secret is a SCRAM verifier (or an md5 password).
#
#   PGBOUNCER_BIN=/path/to/pgbouncer-1.25.2 benches/instructions.sh
#   MODE=extended C=16 J=2 T=2000 TOP=25 PGBOUNCER_BIN=... benches/instructions.sh
#   LOGIN=scram C=1 J=1 T=300 PGBOUNCER_BIN=... benches/instructions.sh
#
# PGMUX_BIN runs another pgmux build instead of this tree's (an A/B of two commits);
# MUX_INI_EXTRA adds [pgbouncer] lines to pgmux's ini only (MUX_INI_EXTRA='worker_threads = 2').
# KEEP=/some/dir keeps each pooler's callgrind profile there (<name>.cg, for callgrind_annotate).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pg-env.sh
pg_ensure_installed
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null ||
  { echo "error: this needs valgrind (apt-get install valgrind)" >&2; exit 1; }
PGBOUNCER=${PGBOUNCER_BIN:-$(command -v pgbouncer || true)}
[ -x "$PGBOUNCER" ] || { echo "error: set PGBOUNCER_BIN to a PgBouncer binary (1.25.2 built from source)" >&2; exit 1; }
PGBIN=$(pg_find_bin)
MODE=${MODE:-simple}; C=${C:-16}; J=${J:-2}; T=${T:-2000}
case "${LOGIN:-}" in
  '') USER_NAME=bench; CONNECT=() ;;
  scram) USER_NAME=bench_scram; CONNECT=(-C) ;;
  md5) USER_NAME=bench; CONNECT=(-C) ;;
  *) echo "error: LOGIN is scram or md5" >&2; exit 1 ;;
esac
PG_PORT=25732; B_PORT=26732; M_PORT=27732
if [ -z "${PGMUX_BIN:-}" ]; then
  cargo build --release -q -p pgmux
  PGMUX_BIN=$PWD/target/release/pgmux
fi
pooler_workdir instructions
as_pg "$PGBIN/initdb" -D "$DIR/data" -U postgres --auth=trust --no-sync >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/pg.log" -w -o "-k $DIR -p $PG_PORT -c listen_addresses='' -c fsync=off" start >/dev/null
bench_roles 1
# max_prepared_statements is 200 on both sides (the default of PgBouncer 1.24 and later).
probe_ini pgbouncer $B_PORT
probe_ini pgmux $M_PORT
[ -n "${MUX_INI_EXTRA:-}" ] && printf '%s\n' "$MUX_INI_EXTRA" >>"$DIR/pgmux.ini"
chown -R postgres: "$DIR"
vg() { as_pg valgrind --tool=callgrind --callgrind-out-file="$DIR/$1.cg" --dump-instr=no "${@:2}" >"$DIR/$1.vg" 2>&1 & }
vg pgbouncer "$PGBOUNCER" -q "$DIR/pgbouncer.ini"
vg pgmux "$PGMUX_BIN" -q "$DIR/pgmux.ini"
for _ in $(seq 200); do [ -s "$DIR/pgbouncer.pid" ] && [ -s "$DIR/pgmux.pid" ] && break; sleep 0.1; done
sleep 2
bench() { PGPASSWORD=bench pgbench -h 127.0.0.1 -p "$1" -U "$USER_NAME" "${CONNECT[@]}" -n -S -M "$MODE" -c "$C" -j "$J" -t "$2" bench 2>&1; }
echo "pgbench -S -M $MODE ${CONNECT[*]} -U $USER_NAME -c $C -j $J -t $T under callgrind, transaction mode, pool 20"
for n in pgbouncer:$B_PORT pgmux:$M_PORT; do
  name=${n%%:*}; port=${n##*:}; pid=$(cat "$DIR/$name.pid")
  bench "$port" 100 >/dev/null
  as_pg callgrind_control -z "$pid" >/dev/null 2>&1
  x=$(bench "$port" "$T" | awk -F': ' '/number of transactions actually processed/ {split($2, a, "/"); print a[1]}')
  as_pg callgrind_control -d "$pid" >/dev/null 2>&1
  sleep 1
  [ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp "$DIR/$name.cg.1" "$KEEP/$name.cg"
  # The dump after zeroing is <file>.1: its per-function self costs, summed (and ranked).
  python3 - "$DIR/$name.cg.1" "$x" "$name" "${TOP:-0}" <<'PY'
import collections, re, sys
path, xacts, name, top = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
names, cost, fn, call = {}, collections.Counter(), None, False
def named(tok):
    m = re.match(r'\((\d+)\)(?: (.*))?', tok)
    if not m:
        return tok
    if m.group(2):
        names[m.group(1)] = m.group(2)
    return names.get(m.group(1), m.group(1))
for line in open(path):
    if line.startswith('fn='):
        fn = named(line[3:].strip())
    elif line.startswith('cfn='):
        named(line[4:].strip())
    elif line.startswith('calls='):
        call = True
    elif line[:1].isdigit() or line[:1] in '+-*':
        parts = line.split()
        if len(parts) >= 2 and not call:
            cost[fn] += int(parts[1])
        call = False
total = sum(cost.values())
print(f"{name:9} {xacts:7d} xacts, {total / xacts:8.0f} instructions/xact in user space")
for f, c in cost.most_common(top):
    print(f"          {c / xacts:7.0f}  {f[:110]}")
PY
done
