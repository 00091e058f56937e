#!/usr/bin/env bash
# Sourced by the other scripts: finds PostgreSQL's server binaries and pgbench, and OpenSSL's
# headers for the build, installing the Debian packages when they are missing and we are root;
# otherwise says what to install.
pg_find_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin /usr/local/pgsql/bin; do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
  done
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return 0; fi
  return 1
}

pg_ensure_installed() {
  if pg_find_bin >/dev/null && command -v pgbench >/dev/null && command -v psql >/dev/null; then return 0; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing PostgreSQL server, psql and pgbench (apt-get install postgresql postgresql-contrib)..." >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-contrib >&2
  fi
  if ! pg_find_bin >/dev/null || ! command -v pgbench >/dev/null || ! command -v psql >/dev/null; then
    echo "error: PostgreSQL server binaries (initdb, pg_ctl, postgres), psql and pgbench are needed." >&2
    echo "       On Debian/Ubuntu: sudo apt-get install postgresql postgresql-contrib" >&2
    exit 1
  fi
}

# The build links OpenSSL (certificate verification, as PgBouncer and libpq do it): the openssl
# crate finds the headers and library with pkg-config. Installs them on Debian when we are root.
build_deps_ensure_installed() {
  if pkg-config --exists openssl 2>/dev/null; then return 0; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing OpenSSL headers and pkg-config for the build (apt-get install libssl-dev pkg-config)..." >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev pkg-config >&2
  fi
  if ! pkg-config --exists openssl 2>/dev/null; then
    echo "error: the build needs OpenSSL's headers and pkg-config." >&2
    echo "       On Debian/Ubuntu: sudo apt-get install libssl-dev pkg-config" >&2
    exit 1
  fi
}

# The network fault tests (tests/network_faults.rs) put a PostgreSQL in its own network namespace
# (iproute2) and drop its traffic with iptables; the fuzz smoke run builds libFuzzer (a C++
# compiler). Installs them on Debian when we are root.
fault_tools_ensure_installed() {
  local missing=()
  command -v ip >/dev/null || missing+=(iproute2)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v c++ >/dev/null || missing+=(g++)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]} for the fault tests and the fuzz smoke run..." >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
  else
    echo "error: the fault tests and the fuzz smoke run need: ${missing[*]} (and root for ip netns)." >&2
    echo "       On Debian/Ubuntu: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
}

# The Python drivers tests/drivers.rs runs (psycopg 3, asyncpg), in a virtualenv under target/
# made from PyPI (python3-venv installed when missing); prints its interpreter's path. A machine
# that cannot make it (no python3-venv and no root, no network) gets a warning, and the driver
# tests say that they did not run.
drivers_env_ensure() {
  local venv=target/drivers-venv
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import psycopg, asyncpg' 2>/dev/null; then
    echo "$PWD/$venv/bin/python"
    return 0
  fi
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing python3-venv for the driver tests (apt-get install python3-venv)..." >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; } >&2 || true
  fi
  rm -rf "$venv"
  if python3 -m venv "$venv" >&2 &&
    "$venv/bin/pip" install -q --disable-pip-version-check 'psycopg[binary]==3.3.*' 'asyncpg==0.32.*' >&2; then
    echo "$PWD/$venv/bin/python"
  else
    echo "warning: could not make $venv with psycopg and asyncpg (python3-venv, PyPI): the driver tests will not run" >&2
  fi
}

# The Node.js drivers tests/drivers.rs runs (node-postgres, postgres.js), at the versions
# tests/drivers/package.json pins, installed from its package-lock.json (`npm ci`) into
# target/drivers-node; prints the node_modules directory (for NODE_PATH). Kept while the copies
# of both files there match tests/drivers' and both modules load; nodejs and npm installed when
# missing (root, apt-get). A machine that cannot install them (no node or npm, no registry)
# gets a warning, and the driver tests say that they did not run.
drivers_node_ensure() {
  local dir=target/drivers-node src=tests/drivers
  if cmp -s "$src/package.json" "$dir/package.json" && cmp -s "$src/package-lock.json" "$dir/package-lock.json" &&
    NODE_PATH="$dir/node_modules" node -e 'require("pg"); require("postgres")' 2>/dev/null; then
    echo "$PWD/$dir/node_modules"
    return 0
  fi
  if ! { command -v node && command -v npm; } >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing nodejs and npm for the driver tests (apt-get install nodejs npm)..." >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; } >&2 || true
  fi
  rm -rf "$dir"
  if mkdir -p "$dir" && cp "$src/package.json" "$src/package-lock.json" "$dir/" &&
    (cd "$dir" && npm ci --silent --no-audit --no-fund) >&2 &&
    NODE_PATH="$dir/node_modules" node -e 'require("pg"); require("postgres")' >&2; then
    echo "$PWD/$dir/node_modules"
  else
    rm -rf "$dir"
    echo "warning: could not install $src/package.json's node-postgres and postgres.js into $dir (node, npm, the npm registry): the Node.js driver tests will not run" >&2
  fi
}

# PgJDBC for tests/drivers.rs: Debian's libpostgresql-jdbc-java (42.5) and a JDK that runs a
# single-file program (`java Foo.java`, Java 11+); prints the driver's jar. Installed when
# missing (root, apt-get); a machine that cannot gets a warning, and the JDBC test says that it
# did not run.
drivers_jdbc_ensure() {
  local jar=/usr/share/java/postgresql.jar
  # A single-file program needs the compiler module (Java 11+; Debian's JRE has it).
  java_runs_sources() { java --list-modules 2>/dev/null | grep -q '^jdk.compiler@'; }
  if [ ! -r "$jar" ] || ! java_runs_sources; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "installing PgJDBC for the driver tests (apt-get install libpostgresql-jdbc-java default-jdk-headless)..." >&2
      local pkgs=(libpostgresql-jdbc-java)
      java_runs_sources || pkgs+=(default-jdk-headless)
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"; } >&2 || true
    fi
  fi
  if [ -r "$jar" ] && java_runs_sources; then
    echo "$jar"
  else
    echo "warning: no PgJDBC ($jar) or no java that runs a source file (apt-get install libpostgresql-jdbc-java default-jdk-headless): the JDBC driver test will not run" >&2
  fi
}

# Runs a command as the postgres OS user when we are root (initdb and postgres refuse root).
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# The roles the benchmarks log in as, in the cluster on $DIR and $PG_PORT: bench (owner of
# database bench, with pgbench's tables at scale $1) and bench_scram, whose stored secret is a
# SCRAM verifier: with auth_type = md5 both poolers log it in with SCRAM-SHA-256. Writes both to
# $DIR/userlist.txt.
bench_roles() {
  as_pg psql -h "$DIR" -p "$PG_PORT" -U postgres -qc "CREATE ROLE bench LOGIN PASSWORD 'bench'" -c "CREATE DATABASE bench OWNER bench"
  as_pg pgbench -h "$DIR" -p "$PG_PORT" -U bench -i -s "$1" -q bench >/dev/null 2>&1
  as_pg psql -h "$DIR" -p "$PG_PORT" -U postgres -qc "SET password_encryption = 'scram-sha-256'" \
    -c "CREATE ROLE bench_scram LOGIN PASSWORD 'bench'" -c "GRANT bench TO bench_scram"
  local secret
  secret=$(as_pg psql -h "$DIR" -p "$PG_PORT" -U postgres -Atc "SELECT rolpassword FROM pg_authid WHERE rolname = 'bench_scram'")
  printf '"bench" "bench"\n"bench_scram" "%s"\n' "$secret" >"$DIR/userlist.txt"
}

# The ini of a pooler in a side-by-side probe ($1 its name, $2 its port), the same for PgBouncer
# and pgmux: database bench over PostgreSQL's unix socket, transaction mode, pool 20, md5, no
# connection logging. Used by benches/xact_cost.sh and benches/instructions.sh.
probe_ini() {
  cat >"$DIR/$1.ini" <<INI
[databases]
bench = host=$DIR port=$PG_PORT
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $2
unix_socket_dir =
auth_type = md5
auth_file = $DIR/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 2000
log_connections = 0
log_disconnections = 0
logfile = $DIR/$1.log
pidfile = $DIR/$1.pid
INI
}

# A scratch directory the postgres user can write (DIR, named /tmp/PREFIX.XXXXXX) and, on exit,
# its cleanup: the poolers stopped by their pidfiles ($DIR/{pgbouncer,pgmux,doorman}.pid; runuser
# does not pass a signal on to its child), then what the script put in PIDS, then the cluster
# in $DIR/data (with $PGBIN's pg_ctl). Used by benches/pgbench.sh and scripts/faults/restart.sh.
pooler_workdir() {
  DIR=$(mktemp -d "/tmp/$1.XXXXXX")
  chmod 755 "$DIR"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$DIR"; fi
  PIDS=()
  trap pooler_workdir_cleanup EXIT
}

pooler_workdir_cleanup() {
  for f in "$DIR"/pgbouncer.pid "$DIR"/pgmux.pid "$DIR"/doorman.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  sleep 0.5
  as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
