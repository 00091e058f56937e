#!/usr/bin/env bash
# What one transaction costs the pooler, PgBouncer and pgmux side by side: CPU microseconds and
# context switches per transaction (from /proc, over one pgbench run each), and with STRACE=1
# the system calls per transaction (strace -c; slows the run, counts only).
#
#   PGBOUNCER_BIN=/path/to/pgbouncer-1.25.2 C=16 J=2 benches/xact_cost.sh
#   MODE=extended C=1 STRACE=1 PGBOUNCER_BIN=... benches/xact_cost.sh
#   MODE=simple C=1000 J=2 PERF=25 PGBOUNCER_BIN=... benches/xact_cost.sh
#
# PERF=n samples each pooler with perf's cpu-clock (a software event: this VM has no hardware
# counters) during its run and lists the n symbols with the most samples of their own, user
# and kernel; unlike callgrind it sees the pooler at full speed, so timeouts and waits behave
# as in a real run. KEEP=/some/dir keeps each pooler's profile there (<name>.perf, for perf
# report or perf annotate).
#
# Lighter than benches/pgbench.sh (scale 1, one 5 s run per pooler after a 2 s warm-up), for
# looking at one row closely; pgbench.sh is the record.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pg-env.sh
pg_ensure_installed
build_deps_ensure_installed
PGBOUNCER=${PGBOUNCER_BIN:-$(command -v pgbouncer || true)}
[ -x "$PGBOUNCER" ] || { echo "error: set PGBOUNCER_BIN to a PgBouncer binary (1.25.2 built from source)" >&2; exit 1; }
[ -z "${PERF:-}" ] || command -v perf >/dev/null || { echo "error: PERF=n needs perf (apt-get install linux-perf)" >&2; exit 1; }
[ -z "${STRACE:-}" ] || command -v strace >/dev/null || { echo "error: STRACE=1 needs strace (apt-get install strace)" >&2; exit 1; }
PGBIN=$(pg_find_bin)
PG_PORT=25532; B_PORT=26532; M_PORT=27532
cargo build --release -q -p pgmux
pooler_workdir xact-cost
as_pg "$PGBIN/initdb" -D "$DIR/data" -U postgres --auth=trust --no-sync >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/pg.log" -w -o "-k $DIR -p $PG_PORT -c listen_addresses='' -c fsync=off" start >/dev/null
bench_roles 1
probe_ini pgbouncer $B_PORT
probe_ini pgmux $M_PORT
# BOUNCER_INI_EXTRA / MUX_INI_EXTRA add [pgbouncer] lines to one ini (pgmux against itself:
# PGBOUNCER_BIN=target/release/pgmux BOUNCER_INI_EXTRA='worker_threads = 1' MUX_INI_EXTRA='worker_threads = 2').
[ -n "${BOUNCER_INI_EXTRA:-}" ] && printf '%s\n' "$BOUNCER_INI_EXTRA" >>"$DIR/pgbouncer.ini"
[ -n "${MUX_INI_EXTRA:-}" ] && printf '%s\n' "$MUX_INI_EXTRA" >>"$DIR/pgmux.ini"
chown -R postgres: "$DIR"
as_pg "$PGBOUNCER" -q "$DIR/pgbouncer.ini" >/dev/null 2>&1 &
as_pg "$PWD/target/release/pgmux" -q "$DIR/pgmux.ini" >/dev/null 2>&1 &
for _ in $(seq 50); do [ -s "$DIR/pgbouncer.pid" ] && [ -s "$DIR/pgmux.pid" ] && break; sleep 0.1; done
sleep 0.5
bench() { PGPASSWORD=bench pgbench -h 127.0.0.1 -p "$1" -U bench -n -S -M "${MODE:-simple}" -c "${C:-1}" -j "${J:-1}" -T "$2" bench 2>&1; }
# Summed over the process's threads (worker_threads > 1).
switches() { cat /proc/"$1"/task/*/status | awk '/^voluntary_ctxt_switches/ {v += $2} /^nonvoluntary_ctxt_switches/ {n += $2} END {print v, n}'; }
echo "pgbench -S -M ${MODE:-simple} -c ${C:-1} -j ${J:-1}, transaction mode, pool 20, md5; PostgreSQL over its unix socket"
for n in pgbouncer:$B_PORT pgmux:$M_PORT; do
  name=${n%%:*}; port=${n##*:}; pid=$(cat "$DIR/$name.pid")
  bench "$port" 2 >/dev/null
  [ -z "${STRACE:-}" ] || { strace -c -f -p "$pid" -o "$DIR/$name.strace" 2>/dev/null & SP=$!; sleep 0.5; }
  [ -z "${PERF:-}" ] || { perf record -q -e cpu-clock -F 2000 -p "$pid" -o "$DIR/$name.perf" >/dev/null 2>&1 & PP=$!; sleep 0.5; }
  read -r v0 n0 < <(switches "$pid"); read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  out=$(bench "$port" 5)
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat"); read -r v1 n1 < <(switches "$pid")
  [ -z "${STRACE:-}" ] || { kill -INT "$SP"; wait "$SP" 2>/dev/null || true; }
  [ -z "${PERF:-}" ] || { kill -INT "$PP"; wait "$PP" 2>/dev/null || true; }
  x=$(echo "$out" | awk -F': ' '/number of transactions actually processed/ {split($2, a, "/"); print a[1]}')
  awk -v n="$name" -v x="$x" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$(getconf CLK_TCK)" -v v=$((v1 - v0)) -v nv=$((n1 - n0)) 'BEGIN {
    printf "%-9s %7d xacts in 5 s, CPU %.1f us per xact (user %.1f, kernel %.1f), %.2f voluntary and %.2f involuntary switches per xact\n",
      n, x, (u + s) * 1e6 / hz / x, u * 1e6 / hz / x, s * 1e6 / hz / x, v / x, nv / x }'
  if [ -n "${STRACE:-}" ]; then
    awk -v x="$x" '$NF != "total" && $4 ~ /^[0-9]+$/ && $4 / x >= 0.01 { printf "            %-14s %6.2f per xact\n", $NF, $4 / x }' "$DIR/$name.strace" | sort -k2 -nr
  fi
  if [ -n "${PERF:-}" ]; then
    perf report -q -i "$DIR/$name.perf" --no-children --sort sym --percent-limit 0.3 2>/dev/null |
      awk 'NF' | head -n "$PERF" | cut -c1-150 | sed 's/^/            /'
    [ -z "${KEEP:-}" ] || { mkdir -p "$KEEP" && cp "$DIR/$name.perf" "$KEEP/"; }
  fi
done
