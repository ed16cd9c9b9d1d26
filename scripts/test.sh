#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then runs unit, integration and
# loop-device tests (the latter need root; with CI set they fail rather than skip without it).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
ensure_rust
ensure_commands "${TEST_COMMANDS[@]}"
ensure_python_servers
# The tests against a real Ceph RGW (tests/rgw.rs) start a single-node cluster (~3 s, ~1 GiB of
# memory; the packages install in ~20 s): part of the suite unless RESTORE_TEST_RGW=0.
export RESTORE_TEST_RGW=${RESTORE_TEST_RGW:-1}
if [ "$RESTORE_TEST_RGW" = 1 ]; then
    ensure_ceph
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "note: not root: loop-device tests are skipped (they fail instead when CI is set)" >&2
fi
ensure_rust_tools
cargo fmt --check
cargo clippy --locked --all-targets --features test-hooks -- -D warnings
cargo build --release --locked
STATIC=$(bash scripts/build-static.sh)
# The shipped builds (release, static) have no test hooks; tests/hooks.rs checks that they
# ignore them. The tests themselves run a test build (--features test-hooks).
export RESTORE_RELEASE_BIN=$PWD/target/release/restore RESTORE_STATIC_BIN=$STATIC
status=0
cargo test --locked --features test-hooks --no-fail-fast -- --test-threads="${RESTORE_TEST_THREADS:-2}" || status=$?
# The static binary the rescue image carries passes the same end-to-end tests: capture,
# plan and apply byte-equal, and every refusal of bad or hostile input. (Not tests/planner.rs
# again: its 70 s test the planner's decisions, the same code in both builds.)
echo "== end-to-end tests again with the static binary $STATIC"
RESTORE_TEST_BIN=$STATIC cargo test --locked --features test-hooks --no-fail-fast \
    --test roundtrip --test bad_input --test hostile_input \
    -- --test-threads="${RESTORE_TEST_THREADS:-2}" || status=$?
exit $status
