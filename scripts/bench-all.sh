#!/usr/bin/env bash
# The whole benchmark table of docs/performance.md in one run, for a quiet machine (issue 16):
#   1. scripts/bench.sh --raw: full restore on data without a used-block map against its I/O
#      limit (onto a file and a loop device), capture against casync make, casync, partclone;
#   2. scripts/bench-scale.sh: sparse 256 GiB and 1 TiB images (time, bytes read, peak RSS);
#   3. scripts/bench-remote.sh: restore from python's http.server, moto and a Ceph RGW against
#      each server's own parallel-GET rate.
# One binary serves all three: the static build that ships in the rescue image
# (scripts/build-static.sh, musl), or with --glibc the dynamic `cargo build --release` one
# (musl's allocator made the shipped binary slower than the glibc one until stop 24). The load
# average is printed before and after each part, so a reader can see whether the machine was
# quiet.
#
# Usage: sudo scripts/bench-all.sh [--out FILE] [--sizes "256G 1T"] [--runs 3] [--glibc]
set -euo pipefail

die() { echo "bench-all.sh: error: $*" >&2; exit 1; }

OUT="" SIZES="256G 1T" RUNS=3 GLIBC=0
while [ $# -gt 0 ]; do
    case $1 in
        --glibc) GLIBC=1; shift ;;
        --out) OUT=${2:?}; shift 2 ;;
        --sizes) SIZES=${2:?}; shift 2 ;;
        --runs) RUNS=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[ "$(id -u)" -eq 0 ] || die "must run as root (loop devices, mounts, drop_caches)"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ -n "$OUT" ] || OUT=$(mktemp /var/tmp/restore-bench-all.XXXXXX.md)
if [ "$GLIBC" = 1 ]; then
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
    BIN=$ROOT/target/release/restore
else
    BIN=$(bash "$ROOT/scripts/build-static.sh") || die "scripts/build-static.sh failed"
fi
load() { echo "load: $(uptime)"; }
{
    echo "# restore benchmarks, one run ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) cores, kernel $(uname -r))"
    echo
    echo "binary: $BIN ($(file -b "$BIN" | cut -d, -f1-2))"
    echo
    load
    echo
    echo "## 1. Raw data (bench.sh --raw --runs $RUNS)"
    bash "$ROOT/scripts/bench.sh" --raw --runs "$RUNS" --bin "$BIN"
    load
    echo
    echo "## 2. Server sizes (bench-scale.sh --sizes \"$SIZES\")"
    bash "$ROOT/scripts/bench-scale.sh" --sizes "$SIZES" --bin "$BIN"
    load
    echo
    echo "## 3. Remote stores (bench-remote.sh, JOBS=${JOBS:-16}, RUNS=${REMOTE_RUNS:-2})"
    BIN=$BIN RUNS=${REMOTE_RUNS:-2} bash "$ROOT/scripts/bench-remote.sh"
    load
} 2>&1 | tee "$OUT"
echo "bench-all.sh: report in $OUT" >&2
