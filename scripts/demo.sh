#!/usr/bin/env bash
# Builds pgmux and runs it in front of a throwaway PostgreSQL cluster it creates, the way a
# PostgreSQL node runs it: PostgreSQL demands scram-sha-256 on its unix socket, userlist.txt holds
# the role's SCRAM secret copied from pg_authid, and pgmux logs in with SCRAM pass-through.
# Ctrl-C stops pgmux; the cluster and its files are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pg-env.sh
pg_ensure_installed
build_deps_ensure_installed
PGBIN=$(pg_find_bin)
PORT=${PGMUX_PORT:-6432}

cargo build --release -p pgmux

DIR=$(mktemp -d /tmp/pgmux-demo.XXXXXX)
chmod 755 "$DIR"
[ "$(id -u)" = 0 ] && chown postgres: "$DIR"
cleanup() {
  as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT

as_pg "$PGBIN/initdb" -D "$DIR/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 >/dev/null
cat >"$DIR/data/pg_hba.conf" <<HBA
local all postgres trust
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
HBA
as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -w \
  -o "-k $DIR -c listen_addresses='' -p 5432" start >/dev/null
as_pg psql -h "$DIR" -U postgres -d postgres -q -c "CREATE ROLE app LOGIN PASSWORD 'app-password'" -c "CREATE DATABASE app OWNER app"
SECRET=$(as_pg psql -h "$DIR" -U postgres -d postgres -Atc "SELECT rolpassword FROM pg_authid WHERE rolname='app'")

cat >"$DIR/userlist.txt" <<USERS
"app" "$SECRET"
USERS
cat >"$DIR/pgmux.ini" <<INI
[databases]
app = host=$DIR port=5432

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PORT
unix_socket_dir = $DIR
auth_type = scram-sha-256
auth_file = $DIR/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 1000
INI
[ "$(id -u)" = 0 ] && chown postgres: "$DIR"/userlist.txt "$DIR"/pgmux.ini

cat <<MSG

pgmux is starting in front of a throwaway PostgreSQL 
  config:   $DIR/pgmux.ini
  connect:  psql "host=127.0.0.1 port=$PORT dbname=app user=app password=app-password"
  bench:    PGPASSWORD=app-password pgbench -h 127.0.0.1 -p $PORT -U app -i app
Ctrl-C stops it and removes the cluster.

MSG
target/release/pgmux "$DIR/pgmux.ini"
