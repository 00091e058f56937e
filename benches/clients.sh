#!/usr/bin/env bash
# Many clients and a long churn, against a throwaway PostgreSQL (issue 12, item 3):
#
#   benches/clients.sh                       # both parts
#   CLIENTS_MANY=50000 benches/clients.sh    # the many-clients part with that many
#   SOAK_SECONDS=600 benches/clients.sh      # the churn part for that long
#   CLIENTS_ONLY=many|soak benches/clients.sh
#
# many: CLIENTS_MANY clients (default 50,000) log in with md5, run one query, sit idle for
#   HOLD seconds, then each runs a second query; every one must succeed. The clients are spread
#   over several loopback source addresses (127.0.0.x), each with its own ephemeral port range,
#   and over several client processes. One pgmux serves them all when the open-files limit
#   allows it; when the hard limit is lower than the clients (it cannot be raised without
#   CAP_SYS_RESOURCE), the clients are spread over that many pgmux processes sharing the port
#   with so_reuseport, and the output says so. Prints the pooler's resident memory.
# soak: pgbench -C (a new connection, login included, for every transaction) for SOAK_SECONDS
#   (default 600) at 16 clients; pgmux's RSS is sampled every 10 s. Flat means the last
#   minute's samples are no higher than the first minute's maximum plus 1 MiB.
#
# BENCH_WRITE=1 appends the results to docs/BENCHMARKS.md with the command line.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pg-env.sh
pg_ensure_installed
build_deps_ensure_installed
PGBIN=$(pg_find_bin)
MANY=${CLIENTS_MANY:-50000}
SOAK=${SOAK_SECONDS:-600}
HOLD=${HOLD:-5}
ONLY=${CLIENTS_ONLY:-}
PG_PORT=25442; MUX_PORT=26442

cargo build --release -q -p pgmux
cargo build --release -q --example idle_clients
pooler_workdir pgmux-clients
# The pgmux processes are started in command substitutions: stopped by their pidfiles.
trap 'for f in "$DIR"/pgmux*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done; pooler_workdir_cleanup' EXIT
as_pg "$PGBIN/initdb" -D "$DIR/data" -U postgres --auth=trust --no-sync >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/pg.log" -w \
  -o "-k $DIR -p $PG_PORT -c listen_addresses='' -c max_connections=200 -c fsync=off" start >/dev/null
as_pg psql -h "$DIR" -p $PG_PORT -U postgres -qc "CREATE ROLE bench LOGIN PASSWORD 'bench'" -c "CREATE DATABASE bench OWNER bench"
as_pg pgbench -h "$DIR" -p $PG_PORT -U bench -i -s 1 -q bench >/dev/null 2>&1
printf '"bench" "bench"\n' >"$DIR/userlist.txt"

rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
fd_limit=$(ulimit -Hn)
ulimit -n "$fd_limit"
RESULTS=()

# Starts pgmux number $1 (so_reuseport = $2) and prints its pid.
start_pgmux() {
  cat >"$DIR/pgmux$1.ini" <<INI
[databases]
bench = host=$DIR port=$PG_PORT
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $MUX_PORT
unix_socket_dir =
so_reuseport = $2
auth_type = md5
auth_file = $DIR/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = $fd_limit
log_connections = 0
log_disconnections = 0
logfile = $DIR/pgmux$1.log
pidfile = $DIR/pgmux$1.pid
INI
  target/release/pgmux -q "$DIR/pgmux$1.ini" >>"$DIR/pgmux$1.out" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 100); do grep -q "listening on" "$DIR/pgmux$1.log" 2>/dev/null && break; sleep 0.1; done
  echo "$pid"
}

if [ -z "$ONLY" ] || [ "$ONLY" = many ]; then
  # Room for the pooler's own descriptors (servers, listeners, logs) in each process.
  per_process=$(( fd_limit - 500 ))
  poolers=$(( (MANY + per_process - 1) / per_process ))
  clients_procs=$poolers
  # About 28,000 ephemeral ports per source address (ip_local_port_range): one address per 25,000.
  sources=$(seq -s, -f '127.0.0.%g' 1 $(( (MANY + 24999) / 25000 )))
  pids=()
  for i in $(seq "$poolers"); do pids+=("$(start_pgmux "$i" $([ "$poolers" -gt 1 ] && echo 1 || echo 0))"); done
  before=0; for p in "${pids[@]}"; do before=$(( before + $(rss_kb "$p") )); done
  echo "many: $MANY clients from $clients_procs client process(es), source addresses $sources, $poolers pgmux process(es) (open-files hard limit $fd_limit)"
  cpids=()
  for i in $(seq "$clients_procs"); do
    n=$(( MANY / clients_procs + (i <= MANY % clients_procs ? 1 : 0) ))
    target/release/examples/idle_clients 127.0.0.1 $MUX_PORT "$n" bench bench bench "$HOLD" "$sources" >"$DIR/idle$i.out" 2>&1 &
    cpids+=($!)
  done
  for _ in $(seq 1200); do
    up=$(cat "$DIR"/idle*.out | grep -c "idle clients connected" || true)
    [ "$up" -ge "$clients_procs" ] && break
    failed=0; for c in "${cpids[@]}"; do kill -0 "$c" 2>/dev/null || failed=1; done
    [ "$failed" = 1 ] && break
    sleep 0.5
  done
  after=0; for p in "${pids[@]}"; do after=$(( after + $(rss_kb "$p") )); done
  ok=1; for c in "${cpids[@]}"; do wait "$c" || ok=0; done
  connected=$(cat "$DIR"/idle*.out | awk '/idle clients connected/ {s += $1} END {print s + 0}')
  served=$(cat "$DIR"/idle*.out | awk '/served again/ {s += $1} END {print s + 0}')
  if [ "$ok" = 1 ] && [ "$served" = "$MANY" ]; then
    line=$(awk -v n="$MANY" -v c="$connected" -v s="$served" -v p="$poolers" -v b="$before" -v a="$after" -v src="$sources" 'BEGIN {
      printf "%d clients (source addresses %s): %d logged in and ran a query, %d ran another after the hold, no error; %d pgmux process(es), RSS %.1f MiB before, %.1f MiB with them (%.2f KiB per client)", n, src, c, s, p, b/1024, a/1024, (a-b)/n }')
  else
    line="$MANY clients: FAILED ($connected connected, $served served again): $(cat "$DIR"/idle*.out | grep -v 'connected\|served' | sort | uniq -c | head -5)"
  fi
  echo "$line"; RESULTS+=("$line")
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  [ "$ok" = 1 ] && [ "$served" = "$MANY" ] || { echo "many clients failed" >&2; exit 1; }
fi

if [ -z "$ONLY" ] || [ "$ONLY" = soak ]; then
  pid=$(start_pgmux soak 0)
  echo "soak: pgbench -C -S -c 16 -j 2 -T $SOAK against pgmux, RSS every 10 s"
  : >"$DIR/rss"
  ( while kill -0 "$pid" 2>/dev/null; do echo "$(rss_kb "$pid")" >>"$DIR/rss"; sleep 10; done ) & SAMPLER=$!
  PIDS+=("$SAMPLER")
  PGPASSWORD=bench pgbench -h 127.0.0.1 -p $MUX_PORT -U bench -C -S -c 16 -j 2 -T "$SOAK" bench >"$DIR/soak.out" 2>&1 || true
  kill "$SAMPLER" 2>/dev/null || true
  tps=$(awk '/^tps/ {print $3; exit}' "$DIR/soak.out")
  failed=$(awk '/number of failed transactions/ {print $5; exit}' "$DIR/soak.out")
  xacts=$(awk '/number of transactions actually processed/ {print $6; exit}' "$DIR/soak.out")
  line=$(awk -v secs="$SOAK" -v tps="$tps" -v x="$xacts" -v f="${failed:-0}" '
    { r[NR] = $1 }
    END {
      first = 0; for (i = 1; i <= 6 && i <= NR; i++) if (r[i] > first) first = r[i]
      last = 0; for (i = NR - 5; i <= NR; i++) if (i >= 1 && r[i] > last) last = r[i]
      max = 0; for (i = 1; i <= NR; i++) if (r[i] > max) max = r[i]
      printf "%d s of connect/query/disconnect (pgbench -C -S -c 16): %s connections at %.0f/s, %s failed; pgmux RSS max %.1f MiB in the first minute, %.1f MiB in the last, %.1f MiB over the run (%d samples): %s",
        secs, x, tps, f, first/1024, last/1024, max/1024, NR, (last <= first + 1024 ? "flat" : "GROWING")
    }' "$DIR/rss")
  echo "$line"; RESULTS+=("$line")
fi

if [ -n "${BENCH_WRITE:-}" ]; then
  cmd="$(env | grep -E '^(CLIENTS_[A-Z]+|SOAK_SECONDS|HOLD)=' | sort | tr '\n' ' ')benches/clients.sh"
  {
    echo "## $(date -u +%F), benches/clients.sh"
    echo
    echo "    $cmd"
    echo
    for r in "${RESULTS[@]}"; do echo "- $r"; done
    echo
  } >"$DIR/section.md"
  awk -v f="$DIR/section.md" '!done && /^## / { while ((getline l < f) > 0) print l; done = 1 } { print }' \
    docs/BENCHMARKS.md >"$DIR/BENCHMARKS.md" && cp "$DIR/BENCHMARKS.md" docs/BENCHMARKS.md
  echo "written to docs/BENCHMARKS.md"
fi
