#!/usr/bin/env bash
# Benchmarks restore at real server sizes (issue 16) on sparse disk images: GPT with an ext4
# holding 4 GiB of files, an XFS holding 1 GiB of files, a raw partition with 1 GiB of data,
# and large empty areas (the rest of the disk). For each size: capture, a deep plan against
# the original, a full restore onto a blank sparse image, and a 1% repair (plan + apply).
# Run through `scripts/bench.sh --size 256G --sparse` or directly.
#
# Usage: scripts/bench-scale.sh [--sizes "16G 256G 1T"] [--bin PATH] [--work DIR] [--keep]
#
# Needs root (loop devices, mounts, drop_caches) and about 16 GiB free in --work (the images
# are sparse). Every timed command starts with a cold page cache; time, peak RSS and the bytes
# read from storage (%I of /usr/bin/time, 512-byte blocks) come from /usr/bin/time.
set -euo pipefail

die() { echo "bench-scale.sh: error: $*" >&2; exit 1; }
log() { echo "bench-scale.sh: $*" >&2; }

SIZES="16G 256G 1T" BIN="" WORK="" KEEP=0
while [ $# -gt 0 ]; do
    case $1 in
        --sizes|--size) SIZES=${2:?}; shift 2 ;;
        --sparse) shift ;;
        --bin) BIN=${2:?}; shift 2 ;;
        --work) WORK=${2:?}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --runs|--out) shift 2 ;;  # accepted from bench.sh, not used here
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[ "$(id -u)" -eq 0 ] || die "must run as root (loop devices, mounts, drop_caches)"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=deps.sh
. "$ROOT/scripts/deps.sh"
ensure_commands sgdisk:gdisk mkfs.ext4:e2fsprogs mkfs.xfs:xfsprogs /usr/bin/time:time \
    python3:python3 || die "could not install the packages the benchmark needs"
if [ -z "$BIN" ]; then
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
    BIN=$ROOT/target/release/restore
fi
BIN=$(realpath "$BIN")
[ -n "$WORK" ] || WORK=$(mktemp -d /var/tmp/restore-bench-scale.XXXXXX)
mkdir -p "$WORK"; WORK=$(realpath "$WORK")
cd "$WORK" # apply leaves its restore reports in the working directory: here, not in the checkout
MNT=$WORK/mnt LOOP=""
cleanup() {
    umount "$MNT" 2>/dev/null || true
    [ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null || true
    [ "$KEEP" -eq 1 ] && log "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$MNT"

# The files, made once: 4 GiB for the ext4 (text and random), 1 GiB for the XFS.
SRC=$WORK/src
mkdir -p "$SRC/ext4" "$SRC/xfs"
log "making 5 GiB of files"
for i in $(seq 0 31); do
    if [ $((i % 4)) -eq 0 ]; then
        (set +o pipefail; seq -f "log line %g of the nightly batch on web-3" $((i * 4000000)) \
            $((i * 4000000 + 3999999)) | head -c 134217728 > "$SRC/ext4/log-$i.txt")
    else
        head -c 134217728 /dev/urandom > "$SRC/ext4/blob-$i.bin"
    fi
done
for i in $(seq 0 7); do head -c 134217728 /dev/urandom > "$SRC/xfs/data-$i.bin"; done

# make_image FILE SIZE: the layout at the start of the disk, the rest empty.
make_image() {
    local img=$1 size=$2
    rm -f "$img"; truncate -s "$size" "$img"
    sgdisk -n1:2048:+6G -t1:8300 -c1:root -n2:0:+2G -t2:8300 -c2:srv -n3:0:+2G -t3:8300 -c3:raw \
        "$img" > /dev/null
    local off
    off=$(( $(sgdisk -i 1 "$img" | awk '/^First sector:/ {print $3}') * 512 ))
    LOOP=$(losetup -f --show --offset "$off" --sizelimit $((6 << 30)) "$img")
    mkfs.ext4 -q -F -E nodiscard "$LOOP"; mount "$LOOP" "$MNT"; cp -a "$SRC/ext4/." "$MNT/"
    umount "$MNT"; losetup -d "$LOOP"; LOOP=""
    off=$(( $(sgdisk -i 2 "$img" | awk '/^First sector:/ {print $3}') * 512 ))
    LOOP=$(losetup -f --show --offset "$off" --sizelimit $((2 << 30)) "$img")
    mkfs.xfs -q -f -K "$LOOP"; mount "$LOOP" "$MNT"; cp -a "$SRC/xfs/." "$MNT/"
    umount "$MNT"; losetup -d "$LOOP"; LOOP=""
    # The raw partition: 1 GiB of data in 16 pieces across its 2 GiB.
    off=$(( $(sgdisk -i 3 "$img" | awk '/^First sector:/ {print $3}') * 512 ))
    for i in $(seq 0 15); do
        head -c 67108864 /dev/urandom | dd of="$img" bs=4M seek=$((off + i * 134217728)) \
            oflag=seek_bytes conv=notrunc,sparse status=none
    done
    sync
}

TF=$WORK/time.out
ROWS=()
timed() { # timed SIZE WHAT CMD...
    local size=$1 what=$2; shift 2
    sync; echo 3 > /proc/sys/vm/drop_caches
    /usr/bin/time -f "%e %M %I" -o "$TF" "$@" > "$WORK/out.log" 2>&1 \
        || { cat "$WORK/out.log" >&2; die "$size $what failed"; }
    sync
    read -r e m io < "$TF"
    ROWS+=("$size|$what|$e|$((m / 1024))|$((io * 512 / 1048576))")
}

for size in $SIZES; do
    img=$WORK/disk.img target=$WORK/target.img store=$WORK/store
    log "$size: building the image"
    make_image "$img" "$size"
    rm -rf "$store"
    timed "$size" capture "$BIN" capture --store "$store" --host big --no-progress "$img"
    timed "$size" "plan (deep, equal disk)" "$BIN" plan --store "$store" --no-progress "$img"
    rm -f "$target"; truncate -s "$size" "$target"
    timed "$size" "full restore (blank sparse)" "$BIN" apply --store "$store" --yes --no-progress "$target"
    # 1%: 64 MiB of the 6.5 GiB of data, in the raw partition and the ext4.
    off=$(( $(sgdisk -i 3 "$img" | awk '/^First sector:/ {print $3}') * 512 ))
    head -c 33554432 /dev/urandom | dd of="$target" bs=4M seek=$off oflag=seek_bytes conv=notrunc status=none
    off=$(( $(sgdisk -i 1 "$img" | awk '/^First sector:/ {print $3}') * 512 + (1 << 30) ))
    head -c 33554432 /dev/urandom | dd of="$target" bs=4M seek=$off oflag=seek_bytes conv=notrunc status=none
    timed "$size" "1% repair (plan + apply)" "$BIN" apply --store "$store" --yes --no-progress "$target"
    # Byte-equal check on the smallest size only (cmp reads the holes of a 1 TiB image too).
    if [ "$size" = 16G ]; then cmp "$img" "$target" > /dev/null || die "$size: the restored image differs"; fi
    man=$(du -b "$store/snapshots" | tail -1 | cut -f1)
    idx=$(du -sb "$store/indexes" | cut -f1)
    ROWS+=("$size|manifest + indexes (bytes)|$man + $idx|-|-")
done

echo
echo "Sparse images: GPT, ext4 6 GiB (4 GiB of files), XFS 2 GiB (1 GiB), raw 2 GiB (1 GiB of data),"
echo "the rest empty; $(nproc) cores, $(uname -r); cold cache for each command"
echo
echo "| disk | what | seconds | peak RSS MiB | MiB read from storage |"
echo "|---|---|---|---|---|"
for r in "${ROWS[@]}"; do IFS='|' read -r a b c d e <<< "$r"; echo "| $a | $b | $c | $d | $e |"; done
