#!/usr/bin/env bash
# Side-by-side benchmark in one run: pgbench select-only against PostgreSQL directly, through
# PgBouncer and through pgmux, both poolers with the same ini (transaction mode, pool 20).
# Prints tps, the pgmux/PgBouncer ratio and each pooler's CPU time per 1,000 transactions.
#
#   benches/pgbench.sh                 # 10 s per run (about 5 minutes in all)
#   BENCH_SECONDS=3 benches/pgbench.sh # quicker, noisier
#   BENCH_CLIENTS="1 16" BENCH_MODES=simple benches/pgbench.sh
#   BENCH_ONLY_TLS=1 benches/pgbench.sh # only the client-TLS rows (steady state and -C)
#   BENCH_ONLY_MODES=1 benches/pgbench.sh # only the -M rows (no login, TLS, scrape, idle rows)
#   PGBOUNCER_BIN=/tmp/pgbouncer-ref/_build/pgbouncer benches/pgbench.sh
#   REPEAT=3 benches/pgbench.sh         # each row 3 times, interleaved; medians reported
#   BENCH_WRITE=1 benches/pgbench.sh    # also adds the table, dated and with this command, to
#                                       # docs/BENCHMARKS.md (above the earlier runs)
#   PGDOORMAN_BIN=/tmp/pg_doorman/target/release/pg_doorman benches/pgbench.sh
#                                       # adds PgDoorman (its defaults: 4 workers, prepared
#                                       # statement cache on) to the -M rows, as a peer
#
# Rows: -S in simple, extended and prepared mode per client count; a new connection per
# transaction (-C) logging in with md5 and with SCRAM-SHA-256; TLS from the client (steady state
# and -C); TLS from the pooler to PostgreSQL (server_tls_sslmode = prefer over TCP; the other
# rows reach PostgreSQL over its unix socket, where there is no TLS). The direct column of the
# SCRAM and server-TLS rows is PostgreSQL with trust auth and no TLS, for reference only.
#
# Compare against the PgBouncer a node runs (1.25.2), built from source as
# ../shared/peer-suite/README.md says, with PGBOUNCER_BIN. Without it Debian's package is used
# (1.18, three years older) and the header line says so.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pg-env.sh
pg_ensure_installed
build_deps_ensure_installed
if [ -n "${PGBOUNCER_BIN:-}" ]; then
  [ -x "$PGBOUNCER_BIN" ] || { echo "error: PGBOUNCER_BIN=$PGBOUNCER_BIN is not an executable" >&2; exit 1; }
elif ! command -v pgbouncer >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
    systemctl disable --now pgbouncer >/dev/null 2>&1 || true
  else
    echo "error: pgbouncer is needed for the comparison: apt-get install pgbouncer" >&2; exit 1
  fi
fi
PGBOUNCER=${PGBOUNCER_BIN:-$(command -v pgbouncer)}
if ! command -v openssl >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
  else
    echo "error: openssl is needed to make the TLS rows' certificate: apt-get install openssl" >&2; exit 1
  fi
fi
PGBIN=$(pg_find_bin)
SECS=${BENCH_SECONDS:-10}
CLIENTS=${BENCH_CLIENTS:-"1 16 64 256 1000"}
MODES=${BENCH_MODES:-"simple extended prepared"}
# Below the ephemeral port range (32768-60999): a port there can be held by a TIME_WAIT socket
# of an earlier run's clients, and then nothing can listen on it for a minute.
PG_PORT=25432; BOUNCER_PORT=26432; MUX_PORT=27432; METRICS_PORT=27631; DOORMAN_PORT=28432
if [ -n "${PGDOORMAN_BIN:-}" ]; then
  [ -x "$PGDOORMAN_BIN" ] || { echo "error: PGDOORMAN_BIN=$PGDOORMAN_BIN is not an executable" >&2; exit 1; }
fi

cargo build --release -q -p pgmux
cargo build --release -q --example idle_clients
pooler_workdir pgmux-bench

# One certificate for PostgreSQL and both poolers, so TLS rows compare like with like.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$DIR/server.key" -out "$DIR/server.crt" 2>/dev/null
chmod 600 "$DIR/server.key"; [ "$(id -u)" = 0 ] && chown postgres: "$DIR/server.key" "$DIR/server.crt"
as_pg "$PGBIN/initdb" -D "$DIR/data" -U postgres --auth=trust --no-sync >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/pg.log" -w \
  -o "-k $DIR -p $PG_PORT -c listen_addresses=127.0.0.1 -c max_connections=1100 -c shared_buffers=256MB -c fsync=off -c synchronous_commit=off -c ssl=on -c ssl_cert_file=$DIR/server.crt -c ssl_key_file=$DIR/server.key" \
  start >/dev/null
# bench, and bench_scram for the -C SCRAM row (scripts/pg-env.sh).
bench_roles 10
write_ini() { # name port
  cat >"$DIR/$1.ini" <<INI
[databases]
bench = host=$DIR port=$PG_PORT
bench_tls = host=127.0.0.1 port=$PG_PORT dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $2
unix_socket_dir = $DIR/$1
auth_type = md5
auth_file = $DIR/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 20000
log_connections = 0
log_disconnections = 0
logfile = $DIR/$1.log
pidfile = $DIR/$1.pid
client_tls_sslmode = prefer
client_tls_cert_file = $DIR/server.crt
client_tls_key_file = $DIR/server.key
server_tls_sslmode = prefer
INI
  mkdir -p "$DIR/$1"
}
write_ini pgbouncer $BOUNCER_PORT
write_ini pgmux $MUX_PORT
if [ -n "${PGDOORMAN_BIN:-}" ]; then
  # The same pool as the others (transaction mode, 20 servers, md5 over the unix socket); the
  # rest is PgDoorman's defaults.
  cat >"$DIR/doorman.toml" <<TOML
[general]
host = "127.0.0.1"
port = $DOORMAN_PORT
max_connections = 20000
admin_username = "admin"
admin_password = "admin"
[pools.bench]
server_host = "$DIR"
server_port = $PG_PORT
pool_mode = "transaction"
[pools.bench.users.0]
username = "bench"
password = "md5$(printf 'benchbench' | md5sum | cut -d' ' -f1)"
pool_size = 20
TOML
fi
echo "exporter_port = $METRICS_PORT" >>"$DIR/pgmux.ini"
# Extra [pgbouncer] lines per side, e.g. pgmux against itself with another thread count:
#   PGBOUNCER_BIN=target/release/pgmux BOUNCER_INI_EXTRA='worker_threads = 1' \
#     MUX_INI_EXTRA='worker_threads = 2' benches/pgbench.sh
[ -n "${BOUNCER_INI_EXTRA:-}" ] && printf '%s\n' "$BOUNCER_INI_EXTRA" >>"$DIR/pgbouncer.ini"
[ -n "${MUX_INI_EXTRA:-}" ] && printf '%s\n' "$MUX_INI_EXTRA" >>"$DIR/pgmux.ini"
[ "$(id -u)" = 0 ] && chown -R postgres: "$DIR"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# runuser resets resource limits (PAM): raise the open-files limit inside, for both poolers alike.
NOFILE=$(ulimit -Hn)
as_pg sh -c "ulimit -n $NOFILE; exec $PGBOUNCER -q $DIR/pgbouncer.ini" >/dev/null 2>&1 & PIDS+=($!)
as_pg sh -c "ulimit -n $NOFILE; exec target/release/pgmux -q $DIR/pgmux.ini" >/dev/null 2>&1 & PIDS+=($!)
DOORMAN_PID=
if [ -n "${PGDOORMAN_BIN:-}" ]; then
  # Its pidfile is written by the shell it replaces, for the cleanup (pg-env.sh).
  as_pg sh -c "ulimit -n $NOFILE; echo \$\$ >$DIR/doorman.pid; exec $PGDOORMAN_BIN -l warn $DIR/doorman.toml" >"$DIR/doorman.log" 2>&1 & PIDS+=($!)
  for _ in $(seq 100); do pg_isready -q -h 127.0.0.1 -p $DOORMAN_PORT && break; sleep 0.1; done
  DOORMAN_PID=$(cat "$DIR/doorman.pid")
  pg_isready -q -h 127.0.0.1 -p $DOORMAN_PORT || { echo "error: PgDoorman did not start: $(tail -5 "$DIR/doorman.log")" >&2; exit 1; }
fi
for port in $BOUNCER_PORT $MUX_PORT; do
  for _ in $(seq 100); do pg_isready -q -h 127.0.0.1 -p $port && break; sleep 0.1; done
done
for f in pgbouncer pgmux; do
  for _ in $(seq 50); do [ -s "$DIR/$f.pid" ] && break; sleep 0.1; done
done
BOUNCER_PID=$(cat "$DIR/pgbouncer.pid"); MUX_PID=$(cat "$DIR/pgmux.pid")

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

# run PORT ARGS... -> prints "tps xacts"
run() {
  local port=$1; shift
  local out db=${DB_NAME:-bench}
  # PostgreSQL itself has no bench_tls alias.
  [ "$port" = "$PG_PORT" ] && db=bench
  out=$(PGSSLMODE=${SSLMODE:-disable} PGPASSWORD=bench pgbench -h 127.0.0.1 -p "$port" -U "${USER_NAME:-bench}" -n -S "$@" -T "$SECS" "$db" 2>&1) || { echo "pgbench failed: $out" >&2; echo "0 0"; return; }
  local tps xacts
  tps=$(echo "$out" | awk '/^tps = /{print $3; exit}')
  xacts=$(echo "$out" | awk -F': ' '/number of transactions actually processed/{split($2,a,"/"); print a[1]}')
  echo "${tps:-0} ${xacts:-0}"
}

REPEAT=${REPEAT:-1}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# measure LABEL ARGS... : one row with all three targets; with REPEAT > 1 the three runs are
# repeated in turn (direct, PgBouncer, pgmux, then direct, pgmux, PgBouncer, ...) and each
# column is the median.
measure() {
  local label=$1; shift
  local i d_all="" b_all="" m_all="" bc_all="" mc_all="" w_all="" wc_all=""
  for i in $(seq "$REPEAT"); do
    echo "  $label: round $i of $REPEAT" >&2
    read -r d_tps _ < <(run $PG_PORT "$@")
    local b0 m0 b1 m1
    # The two poolers take turns going first: whatever the previous run leaves behind (warm
    # caches, a busier PostgreSQL) does not always favour the same one.
    if [ $((i % 2)) = 1 ]; then
      b0=$(cpu_ticks "$BOUNCER_PID"); read -r b_tps b_x < <(run $BOUNCER_PORT "$@"); b1=$(cpu_ticks "$BOUNCER_PID")
      m0=$(cpu_ticks "$MUX_PID"); read -r m_tps m_x < <(run $MUX_PORT "$@"); m1=$(cpu_ticks "$MUX_PID")
    else
      m0=$(cpu_ticks "$MUX_PID"); read -r m_tps m_x < <(run $MUX_PORT "$@"); m1=$(cpu_ticks "$MUX_PID")
      b0=$(cpu_ticks "$BOUNCER_PID"); read -r b_tps b_x < <(run $BOUNCER_PORT "$@"); b1=$(cpu_ticks "$BOUNCER_PID")
    fi
    d_all+="$d_tps"$'\n'; b_all+="$b_tps"$'\n'; m_all+="$m_tps"$'\n'
    if [ -n "$DOORMAN_PID" ] && [ -n "${WITH_DOORMAN:-}" ]; then
      local w0 w1
      w0=$(cpu_ticks "$DOORMAN_PID"); read -r w_tps w_x < <(run $DOORMAN_PORT "$@"); w1=$(cpu_ticks "$DOORMAN_PID")
      w_all+="$w_tps"$'\n'
      wc_all+=$(awk -v c=$((w1 - w0)) -v x="$w_x" -v t="$TICK" 'BEGIN { print (x > 0) ? c / t * 1e6 / x : 0 }')$'\n'
    fi
    # ms of CPU per 1000 transactions, per round
    bc_all+=$(awk -v c=$((b1 - b0)) -v x="$b_x" -v t="$TICK" 'BEGIN { print (x > 0) ? c / t * 1e6 / x : 0 }')$'\n'
    mc_all+=$(awk -v c=$((m1 - m0)) -v x="$m_x" -v t="$TICK" 'BEGIN { print (x > 0) ? c / t * 1e6 / x : 0 }')$'\n'
  done
  awk -v l="$label" -v d="$(printf '%s' "$d_all" | median)" -v b="$(printf '%s' "$b_all" | median)" \
      -v m="$(printf '%s' "$m_all" | median)" -v bcpu="$(printf '%s' "$bc_all" | median)" \
      -v mcpu="$(printf '%s' "$mc_all" | median)" 'BEGIN {
    printf "| %-22s | %9.0f | %9.0f | %9.0f | %5.2f | %7.1f | %7.1f | %5.2f |\n", l, d, b, m,
      (b > 0 ? m / b : 0), bcpu, mcpu, (bcpu > 0 ? mcpu / bcpu : 0) }' >"$DIR/row"
  if [ -n "$DOORMAN_PID" ]; then
    if [ -n "$w_all" ]; then
      awk -v w="$(printf '%s' "$w_all" | median)" -v wcpu="$(printf '%s' "$wc_all" | median)" \
        'BEGIN { printf " %9.0f | %7.1f |\n", w, wcpu }' >>"$DIR/row"
    else
      echo "         - |       - |" >>"$DIR/row"
    fi
  fi
  tr -d '\n' <"$DIR/row" | tee -a "$DIR/table.md"; echo | tee -a "$DIR/table.md"
}

if [ -z "${BENCH_ONLY_IDLE:-}" ]; then
HEADLINE="pgbench -S, transaction mode, pool 20, ${SECS}s per run, REPEAT=$REPEAT (medians), $(nproc) cores; reference: $($PGBOUNCER --version | head -1); pgmux -V: $(target/release/pgmux -V | head -1)"
echo
echo "$HEADLINE"
echo
if [ -n "$DOORMAN_PID" ]; then
  echo "| run                    | direct tps | pgbouncer | pgmux     | ratio | bnc ms/1k | mux ms/1k | cpu ratio | pgdoorman | door ms/1k |"
  echo "|------------------------|-----------:|----------:|----------:|------:|----------:|----------:|----------:|----------:|--------:|"
else
  echo "| run                    | direct tps | pgbouncer | pgmux     | ratio | bnc ms/1k | mux ms/1k | cpu ratio |"
  echo "|------------------------|-----------:|----------:|----------:|------:|----------:|----------:|----------:|"
fi | tee "$DIR/table.md"
if [ -z "${BENCH_ONLY_TLS:-}" ]; then
for mode in $MODES; do
  for c in $CLIENTS; do
    j=$(( c < 2 ? 1 : 2 ))
    WITH_DOORMAN=1 measure "-M $mode -c $c" -M "$mode" -c "$c" -j "$j"
  done
done
fi
if [ -z "${BENCH_ONLY_MODES:-}" ]; then
if [ -z "${BENCH_ONLY_TLS:-}" ]; then
measure "-C -M simple -c 16" -C -M simple -c 16 -j 2
for c in ${BENCH_LOGIN_CLIENTS:-1 16 64}; do
  j=$(( c < 2 ? 1 : 2 ))
  USER_NAME=bench_scram measure "-C SCRAM -c $c" -C -M simple -c "$c" -j "$j"
done
# The pooler to PostgreSQL over TCP with TLS (bench_tls), the client side plain.
DB_NAME=bench_tls measure "server TLS -c 16" -M simple -c 16 -j 2
fi
# Client TLS (sslmode=require, same certificate everywhere; the poolers reach PostgreSQL over
# the unix socket, so only the client side is encrypted for them).
SSLMODE=require measure "TLS -M simple -c 16" -M simple -c 16 -j 2
SSLMODE=require measure "TLS -C -M simple -c 16" -C -M simple -c 16 -j 2

# The cost of scraping: pgmux alone, without and with GET /metrics every 100 ms.
scraper() {
  local end=$((SECONDS + SECS + 1))
  while [ $SECONDS -lt $end ]; do
    exec 3<>/dev/tcp/127.0.0.1/$METRICS_PORT && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && cat <&3 >/dev/null
    exec 3<&- 3>&-
    sleep 0.1
  done
}
read -r quiet_tps _ < <(run $MUX_PORT -M simple -c 64 -j 2)
scraper & SCRAPER=$!
read -r scraped_tps _ < <(run $MUX_PORT -M simple -c 64 -j 2)
wait $SCRAPER 2>/dev/null || true
echo
awk -v q="$quiet_tps" -v s="$scraped_tps" 'BEGIN { printf "pgmux -M simple -c 64: %.0f tps quiet, %.0f tps with /metrics scraped every 100 ms (ratio %.3f)\n", q, s, (q > 0 ? s / q : 0) }' | tee -a "$DIR/notes.md"
fi
echo
echo "ratio = pgmux tps / PgBouncer tps; ms/1k = pooler process CPU milliseconds per 1,000 transactions (utime+stime from /proc)."
fi

# Memory of idle clients: N clients log in, run one query each, then sit idle.
IDLE=${BENCH_IDLE_CLIENTS:-10000}
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
echo
[ -n "${BENCH_ONLY_MODES:-}" ] || for t in "pgbouncer $BOUNCER_PORT $BOUNCER_PID" "pgmux $MUX_PORT $MUX_PID"; do
  set -- $t
  before=$(rss_kb "$3")
  target/release/examples/idle_clients 127.0.0.1 "$2" "$IDLE" bench bench bench 8 >"$DIR/idle.out" 2>&1 & IP=$!
  for _ in $(seq 600); do grep -q connected "$DIR/idle.out" && break; kill -0 $IP 2>/dev/null || break; sleep 0.2; done
  sleep 1
  after=$(rss_kb "$3")
  wait $IP || { echo "$1: idle clients failed: $(cat "$DIR/idle.out")"; continue; }
  awk -v n="$1" -v c="$IDLE" -v b="$before" -v a="$after" 'BEGIN {
    printf "%-9s RSS %6.1f MiB before, %6.1f MiB with %d idle clients (%.1f KiB per client)\n", n, b/1024, a/1024, c, (a-b)/c }' | tee -a "$DIR/notes.md"
done

# BENCH_WRITE=1: the run goes into docs/BENCHMARKS.md, newest first (above the first section),
# with the command that reproduces it.
if [ -n "${BENCH_WRITE:-}" ]; then
  cmd="$(env | grep -E '^(PGBOUNCER_BIN|PGDOORMAN_BIN|REPEAT|BENCH_[A-Z_]+|[A-Z]+_INI_EXTRA)=' | grep -v '^BENCH_WRITE=' | sort | sed -E "s/^([A-Z_]+_INI_EXTRA)=(.*)$/\1='\2'/" | tr '\n' ' ')benches/pgbench.sh"
  {
    echo "## $(date -u +%F), benches/pgbench.sh"
    echo
    echo "    $cmd"
    echo
    [ -n "${HEADLINE:-}" ] && { echo "$HEADLINE"; echo; }
    [ -s "$DIR/table.md" ] && { cat "$DIR/table.md"; echo; }
    [ -s "$DIR/notes.md" ] && { sed 's/^/- /' "$DIR/notes.md"; echo; }
  } >"$DIR/section.md"
  awk -v f="$DIR/section.md" '!done && /^## / { while ((getline l < f) > 0) print l; done = 1 } { print }' \
    docs/BENCHMARKS.md >"$DIR/BENCHMARKS.md" && cp "$DIR/BENCHMARKS.md" docs/BENCHMARKS.md
  echo "written to docs/BENCHMARKS.md"
fi
