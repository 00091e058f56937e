#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for SECONDS_PER_TARGET seconds (default 10: a smoke run) on the
# stable toolchain (cargo-fuzz with --sanitizer none), starting from the seeds in fuzz/seeds/.
# New inputs go to a temporary corpus, not into the repository. Installs cargo-fuzz if missing
# (needs a C++ compiler for libFuzzer: Debian's g++). FUZZ_BUILD=dev builds the targets without
# optimizations, with overflow checks (half the build time, a tenth of the executions: what the
# test command's 3 s smoke run uses); the default is an optimized build, for real runs.
#   scripts/fuzz.sh                      # all targets, 10 s each
#   SECONDS_PER_TARGET=600 scripts/fuzz.sh frames scram
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
command -v c++ >/dev/null || { echo "error: libFuzzer needs a C++ compiler: apt-get install g++" >&2; exit 1; }
secs=${SECONDS_PER_TARGET:-10}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frames startup scram session_sql config hba ident userlist md5 admin http_request patroni)
case ${FUZZ_BUILD:-release} in
  dev) build=(--dev) ;;
  release) build=(-O) ;;
  *) echo "error: FUZZ_BUILD is dev or release" >&2; exit 1 ;;
esac
cargo fuzz build --sanitizer none "${build[@]}"
for t in "${targets[@]}"; do
  corpus=$(mktemp -d)
  log=$(mktemp)
  if ! cargo fuzz run "$t" --sanitizer none "${build[@]}" "$corpus" "seeds/$t" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz target $t FAILED (reproducer under fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  runs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
  echo "fuzz $t: ${secs}s, ${runs:-?} executions, $cov, no crash"
  rm -rf "$corpus" "$log"
done
