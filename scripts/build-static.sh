#!/usr/bin/env bash
# Builds the static `restore` binary for the rescue image: x86_64 musl (the fallback is a
# glibc build with crt-static), stripped. Prints the binary's path; its size is tracked in
# docs/rescue-image.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
ensure_rust
TARGET=x86_64-unknown-linux-musl
if rustup target add "$TARGET" >/dev/null 2>&1 && ensure_commands musl-gcc:musl-tools; then
    cargo build --release --locked --target "$TARGET" >&2
    BIN=target/$TARGET/release/restore
else
    echo "musl unavailable: building a static glibc binary instead" >&2
    TARGET=x86_64-unknown-linux-gnu
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$TARGET" >&2
    BIN=target/$TARGET/release/restore
fi
if file "$BIN" 2>/dev/null | grep -q "dynamically linked"; then
    echo "error: $BIN is dynamically linked" >&2
    exit 1
fi
echo "$(realpath "$BIN")"
