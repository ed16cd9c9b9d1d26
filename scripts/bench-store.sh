#!/usr/bin/env bash
# Benchmarks keeping a store (issue 13) on the benchmark image (scripts/bench-image.sh):
# `restore check --read-data` against `restic check --read-data` on the same image, and
# `restore prune` after 30 snapshots of which 25 are forgotten.
#
# Usage: sudo scripts/bench-store.sh [--size 2G] [--snapshots 30] [--bin PATH] [--work DIR] [--keep]
#
# Every timed command starts with a cold page cache (sync; echo 3 > /proc/sys/vm/drop_caches).
# Times and peak RSS from /usr/bin/time. Installs restic and time when missing.
set -euo pipefail

die() { echo "bench-store.sh: error: $*" >&2; exit 1; }
log() { echo "bench-store.sh: $*" >&2; }

SIZE=2G SNAPS=30 BIN="" WORK="" KEEP=0
while [ $# -gt 0 ]; do
    case $1 in
        --size) SIZE=${2:?}; shift 2 ;;
        --snapshots) SNAPS=${2:?}; shift 2 ;;
        --bin) BIN=${2:?}; shift 2 ;;
        --work) WORK=${2:?}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[ "$(id -u)" -eq 0 ] || die "must run as root (drop_caches, apt-get)"
IMG_BYTES=$(numfmt --from=iec "$SIZE") || die "--size: cannot parse '$SIZE'"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=deps.sh
. "$ROOT/scripts/deps.sh"
ensure_commands restic:restic /usr/bin/time:time sgdisk:gdisk mkfs.ext4:e2fsprogs \
    || die "could not install the packages the benchmark needs"
if [ -z "$BIN" ]; then
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
    BIN=$ROOT/target/release/restore
fi
BIN=$(realpath "$BIN")
[ -n "$WORK" ] || WORK=$(mktemp -d /var/tmp/restore-bench-store.XXXXXX)
mkdir -p "$WORK"; WORK=$(realpath "$WORK")
cd "$WORK" # apply leaves its restore reports in the working directory: here, not in the checkout
cleanup() { [ "$KEEP" -eq 1 ] && log "kept $WORK" || rm -rf "$WORK"; }
trap cleanup EXIT

# shellcheck source=bench-image.sh
. "$ROOT/scripts/bench-image.sh"
make_bench_image

TF=$WORK/time.out
timed() { # timed NAME CMD... -> prints "NAME: seconds, peak RSS MiB"
    local name=$1; shift
    sync; echo 3 > /proc/sys/vm/drop_caches
    /usr/bin/time -f "%e %M" -o "$TF" "$@" > "$WORK/out.log" 2>&1 || { cat "$WORK/out.log" >&2; die "$name failed"; }
    read -r e m < "$TF"
    echo "$name|$e|$((m / 1024))"
}

STORE=$WORK/store
log "capturing the image"
"$BIN" capture --store "$STORE" --host bench --all-blocks --no-progress "$IMG" > /dev/null
RESTIC=$WORK/restic
export RESTIC_PASSWORD=bench
restic init --repo "$RESTIC" -q > /dev/null
log "restic backup of the same image"
restic backup --repo "$RESTIC" -q "$IMG" > /dev/null

R1=$(timed "restore check --read-data" "$BIN" check --store "$STORE" --read-data --no-progress)
R2=$(timed "restic check --read-data" restic check --repo "$RESTIC" --read-data)
STORE_MIB=$(du -sm "$STORE" | cut -f1)
RESTIC_MIB=$(du -sm "$RESTIC" | cut -f1)

log "making $SNAPS snapshots, each after changing 1% of the image's data area"
P2_MIB=$((P2_BYTES / 1048576))
for ((k = 2; k <= SNAPS; k++)); do
    for ((j = 0; j < P2_MIB / 100; j++)); do
        off=$(( (P2_OFF / 1048576) + (k * 7919 + j * 104729) % (P2_MIB - 1) ))
        head -c 1048576 /dev/urandom | dd of="$IMG" bs=1M seek="$off" conv=notrunc status=none
    done
    "$BIN" capture --store "$STORE" --host bench --all-blocks --no-progress "$IMG" > /dev/null
done
BEFORE_MIB=$(du -sm "$STORE" | cut -f1)
"$BIN" forget --store "$STORE" --keep-last 5 > /dev/null
R3=$(timed "restore prune ($SNAPS snapshots, $((SNAPS - 5)) forgotten)" "$BIN" prune --store "$STORE" --no-progress)
AFTER_MIB=$(du -sm "$STORE" | cut -f1)
"$BIN" check --store "$STORE" --no-progress > /dev/null || die "the store is not whole after prune"

echo
echo "image: $SIZE, ext4 ${FS_USED_PCT}% used; $(nproc) cores; cold page cache before each command"
echo
echo "| command | time | MiB/s of image | peak RSS |"
echo "|---|---|---|---|"
for r in "$R1" "$R2" "$R3"; do
    IFS='|' read -r name e rss <<< "$r"
    echo "| \`$name\` | $e s | $(awk -v s="$IMG_MIB" -v t="$e" 'BEGIN {printf "%.0f", s / t}') | $rss MiB |"
done
echo
echo "store: $STORE_MIB MiB after the first capture (restic repository: $RESTIC_MIB MiB);" \
    "$BEFORE_MIB MiB with $SNAPS snapshots, $AFTER_MIB MiB after forgetting $((SNAPS - 5)) and pruning"
