#!/usr/bin/env bash
# The test command: installs what the tests need (PostgreSQL server binaries, psql, pgbench,
# libssl-dev / pkg-config for the build, a virtualenv with the Python drivers psycopg and
# asyncpg from PyPI, the Node.js drivers node-postgres and postgres.js from npm, PgJDBC from Debian) when
# missing, then runs formatting and lint checks and every test of the workspace, then a fuzz
# smoke run of every fuzz target (scripts/fuzz.sh, 3 s each) and the HA test
# (scripts/ha/test.sh). The integration tests start their own throwaway PostgreSQL clusters as
# the `postgres` OS user, some in their own network namespace (root).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pg-env.sh
pg_ensure_installed
build_deps_ensure_installed
fault_tools_ensure_installed
# psycopg and asyncpg for tests/drivers.rs, in target/drivers-venv.
PGMUX_TEST_PYTHON=$(drivers_env_ensure)
[ -n "$PGMUX_TEST_PYTHON" ] && export PGMUX_TEST_PYTHON
# node-postgres and postgres.js for tests/drivers.rs, in target/drivers-node (for NODE_PATH).
PGMUX_TEST_NODE_PATH=$(drivers_node_ensure)
[ -n "$PGMUX_TEST_NODE_PATH" ] && export PGMUX_TEST_NODE_PATH
# PgJDBC for tests/drivers.rs (Debian's package).
PGMUX_TEST_JDBC_JAR=$(drivers_jdbc_ensure)
[ -n "$PGMUX_TEST_JDBC_JAR" ] && export PGMUX_TEST_JDBC_JAR
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  echo "error: the tests run PostgreSQL as the 'postgres' OS user, which does not exist (install the postgresql package)" >&2
  exit 1
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# --all-targets: unit, integration and CLI tests, and the examples and benches must build (there are
# no doc tests). The last line sums every test binary's result.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --all-targets "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
# Every fuzz target for a few seconds from its seeds (cargo-fuzz, installed when missing): a
# parser change that crashes on a seed or an easy mutation fails here. An unoptimized build
# (with overflow checks) takes half the optimized one's time to build. PGMUX_SKIP_FUZZ=1 leaves
# it out.
if [ "$status" = 0 ] && [ "${PGMUX_SKIP_FUZZ:-0}" != 1 ]; then
  set +e
  FUZZ_BUILD=dev SECONDS_PER_TARGET=${FUZZ_SMOKE_SECONDS:-3} scripts/fuzz.sh
  status=$?
  set -e
fi
# The HA node for real: etcd, two Patroni members, HAProxy, pgmux, pgbench across switchovers
# and a killed node (about 2 minutes; installs etcd-server, patroni, haproxy when missing).
# PGMUX_SKIP_HA=1 leaves it out.
if [ "$status" = 0 ] && [ "${PGMUX_SKIP_HA:-0}" != 1 ]; then
  set +e
  scripts/ha/test.sh
  status=$?
  set -e
fi
exit "$status"
