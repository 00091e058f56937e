#!/usr/bin/env bash
# The test command: installs what the tests need (PostgreSQL server binaries, psql, pgbench) when
# missing, then runs formatting and lint checks and every test of the workspace. The integration
# tests start their own throwaway PostgreSQL clusters as the `postgres` OS user.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pg-env.sh
pg_ensure_installed
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  echo "error: the tests run PostgreSQL as the 'postgres' OS user, which does not exist (install the postgresql package)" >&2
  exit 1
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace "$@"
