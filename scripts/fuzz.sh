#!/usr/bin/env bash
# The long fuzzing run (not in CI): every decoder's property test with PROPTEST_CASES cases
# (default 1,000,000), an optimised build, and a 4 GiB address-space limit so a decoder that
# allocates what its input claims aborts instead of swapping. Prints one line per decoder:
#   fuzz NAME: N cases passed in T s
#   scripts/fuzz.sh [CASES] [TEST-NAME-FILTER]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
ensure_rust
CASES=${1:-1000000}
FILTER=${2:-fuzz::}
cargo test --release --locked --features test-hooks --bin restore --no-run 2>&1 | tail -1
ulimit -v $((4 * 1024 * 1024))
PROPTEST_CASES=$CASES cargo test --release --locked --features test-hooks --bin restore "$FILTER" \
    -- --nocapture --test-threads=2 2>&1 | grep -E '^fuzz |test result|panicked|FAILED'
