#!/usr/bin/env bash
# PostgreSQL restarted under pgbench, through PgBouncer and through pgmux side by side: a fresh
# cluster, both poolers with the same ini (transaction mode), `pgbench -c 10` (tpcb-like and
# select-only) through each in turn, `pg_ctl restart -m fast` (or a backend killed with SIGKILL,
# FAULT=kill) 4 s into each run. Prints, per pooler, transactions done, failed transactions, and
# the clients pgbench aborted (pgbench 15 aborts a client on any error but serialization and
# deadlock failures, so a client that only loses its statement in flight counts as aborted too).
#
#   PGBOUNCER_BIN=/tmp/pgbouncer-ref/_build/pgbouncer scripts/faults/restart.sh
#   RUNS=3 FAULT=kill POOL_SIZE=4 scripts/faults/restart.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/pg-env.sh
pg_ensure_installed
PGBOUNCER=${PGBOUNCER_BIN:-$(command -v pgbouncer || true)}
[ -x "$PGBOUNCER" ] || { echo "error: set PGBOUNCER_BIN to a PgBouncer binary (or apt-get install pgbouncer)" >&2; exit 1; }
PGBIN=$(pg_find_bin)
RUNS=${RUNS:-2}; FAULT=${FAULT:-restart}; POOL_SIZE=${POOL_SIZE:-20}; SECS=${SECS:-10}
PG_PORT=25532; BOUNCER_PORT=26532; MUX_PORT=27532
cargo build --release -q -p pgmux
pooler_workdir pgmux-restart
pg() { as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/pg.log" -w -o "-k $DIR -p $PG_PORT -c listen_addresses=''" "$@" >/dev/null; }
as_pg "$PGBIN/initdb" -D "$DIR/data" -U postgres --auth=trust --no-sync >/dev/null
pg start
as_pg psql -h "$DIR" -p $PG_PORT -U postgres -qc "CREATE ROLE bench LOGIN PASSWORD 'bench'" -c "CREATE DATABASE bench OWNER bench"
as_pg pgbench -h "$DIR" -p $PG_PORT -U bench -i -s 2 -q bench >/dev/null 2>&1
echo '"bench" "bench"' >"$DIR/userlist.txt"
for p in pgbouncer:$BOUNCER_PORT pgmux:$MUX_PORT; do
  name=${p%%:*}; port=${p##*:}; mkdir -p "$DIR/$name"
  cat >"$DIR/$name.ini" <<INI
[databases]
bench = host=$DIR port=$PG_PORT
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir = $DIR/$name
auth_type = md5
auth_file = $DIR/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
server_login_retry = 1
logfile = $DIR/$name.log
pidfile = $DIR/$name.pid
INI
done
[ "$(id -u)" = 0 ] && chown -R postgres: "$DIR"
as_pg "$PGBOUNCER" -q "$DIR/pgbouncer.ini" >/dev/null 2>&1 & PIDS+=($!)
as_pg target/release/pgmux -q "$DIR/pgmux.ini" >/dev/null 2>&1 & PIDS+=($!)
for port in $BOUNCER_PORT $MUX_PORT; do
  for _ in $(seq 100); do pg_isready -q -h 127.0.0.1 -p $port && break; sleep 0.1; done
done
for f in pgbouncer pgmux; do
  for _ in $(seq 50); do [ -s "$DIR/$f.pid" ] && break; sleep 0.1; done
  [ -s "$DIR/$f.pid" ] || { echo "error: $f did not start (is port $BOUNCER_PORT or $MUX_PORT taken?): $(tail -3 "$DIR/$f.log")" >&2; exit 1; }
done

fault() {
  sleep 4
  if [ "$FAULT" = kill ]; then
    local pid
    pid=$(as_pg psql -h "$DIR" -p $PG_PORT -U postgres -Atc "SELECT pid FROM pg_stat_activity WHERE usename = 'bench' LIMIT 1")
    [ -n "$pid" ] && kill -9 "$pid"
  else
    pg restart -m fast
  fi
}

# one PORT SCRIPT -> "xacts failed aborted"
one() {
  local out
  fault & local f=$!
  out=$(PGPASSWORD=bench pgbench -h 127.0.0.1 -p "$1" -U bench -n -c 10 -T "$SECS" $2 bench 2>&1 || true)
  wait $f
  local x fl ab
  x=$(echo "$out" | awk -F': ' '/number of transactions actually processed/{split($2,a,"/"); print a[1]}')
  fl=$(echo "$out" | awk -F': ' '/number of failed transactions/{split($2,a," "); print a[1]}')
  ab=$(echo "$out" | grep -c "aborted in command" || true)
  echo "${x:-0} ${fl:-0} $ab"
  # Let the pools settle before the next run.
  sleep 2
}

echo "fault: $FAULT under pgbench -c 10 for ${SECS}s, pool_size $POOL_SIZE, $RUNS runs per row; PgBouncer: $("$PGBOUNCER" --version | head -1)"
printf '%-12s %-10s %28s %28s\n' workload run "PgBouncer xacts/failed/aborted" "pgmux xacts/failed/aborted"
for workload in tpcb-like select-only; do
  opt=""; [ $workload = select-only ] && opt=-S
  for r in $(seq "$RUNS"); do
    read -r bx bf ba < <(one $BOUNCER_PORT "$opt")
    read -r mx mf ma < <(one $MUX_PORT "$opt")
    printf '%-12s %-10s %28s %28s\n' $workload "$r" "$bx / $bf / $ba of 10" "$mx / $mf / $ma of 10"
  done
done
