#!/usr/bin/env bash
# Benchmarks the capture of a running server (issue 14) on the benchmark image
# (scripts/bench-image.sh, ext4) and on an XFS of the same size holding the same files, each
# mounted read-write through a loop device at the partition's offset:
#   - capture time and freeze time at default settings (frozen, used blocks from GETFSMAP);
#   - bytes read with used-block awareness and without it (--all-blocks);
#   - the latency a foreground writer of 4 KiB O_DSYNC blocks (what `dd oflag=dsync bs=4k`
#     does) on the same disk sees during a capture at --io-priority idle (the default) and at
#     --io-priority normal: median and p99, one run each, beside the same writer alone.
#
# Usage: sudo scripts/bench-live.sh [--size 2G] [--bin PATH] [--work DIR] [--keep]
#
# Every capture starts with a cold page cache (sync; echo 3 > /proc/sys/vm/drop_caches).
set -euo pipefail

die() { echo "bench-live.sh: error: $*" >&2; exit 1; }
log() { echo "bench-live.sh: $*" >&2; }

SIZE=2G BIN="" WORK="" KEEP=0
while [ $# -gt 0 ]; do
    case $1 in
        --size) SIZE=${2:?}; shift 2 ;;
        --bin) BIN=${2:?}; shift 2 ;;
        --work) WORK=${2:?}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[ "$(id -u)" -eq 0 ] || die "must run as root (loop devices, mounts, drop_caches)"
IMG_BYTES=$(numfmt --from=iec "$SIZE") || die "--size: cannot parse '$SIZE'"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=deps.sh
. "$ROOT/scripts/deps.sh"
ensure_commands sgdisk:gdisk mkfs.ext4:e2fsprogs mkfs.xfs:xfsprogs python3:python3 \
    || die "could not install the packages the benchmark needs"
if [ -z "$BIN" ]; then
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
    BIN=$ROOT/target/release/restore
fi
BIN=$(realpath "$BIN")
[ -n "$WORK" ] || WORK=$(mktemp -d /var/tmp/restore-bench-live.XXXXXX)
mkdir -p "$WORK"; WORK=$(realpath "$WORK")
cd "$WORK" # apply leaves its restore reports in the working directory: here, not in the checkout
MNT=$WORK/mnt SRCMNT=$WORK/srcmnt
LOOPS=()
cleanup() {
    umount "$MNT" 2>/dev/null || true
    umount "$SRCMNT" 2>/dev/null || true
    for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null || true; done
    [ "$KEEP" -eq 1 ] && log "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=bench-image.sh
. "$ROOT/scripts/bench-image.sh"
make_bench_image
mkdir -p "$MNT" "$SRCMNT"

# The XFS image: the same table, the same files copied into an XFS on partition 2.
IMG_XFS=$WORK/disk-xfs.img
cp --sparse=never "$IMG" "$IMG_XFS"
L=$(losetup -f --show --offset "$P2_OFF" --sizelimit "$P2_BYTES" "$IMG_XFS"); LOOPS+=("$L")
mkfs.xfs -q -f -K "$L"
R=$(losetup -f --show -r --offset "$P2_OFF" --sizelimit "$P2_BYTES" "$IMG"); LOOPS+=("$R")
mount -o ro "$R" "$SRCMNT"; mount "$L" "$MNT"
cp -a "$SRCMNT/." "$MNT/"
umount "$SRCMNT"; umount "$MNT"; losetup -d "$L" "$R"; LOOPS=()

# The foreground writer: 4 KiB O_DSYNC writes to a file on the same disk as the images, each
# timed, until told to stop; prints median and p99 in milliseconds.
cat > "$WORK/latency.py" <<'PY'
import os, sys, time, signal
path, stop = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DSYNC, 0o600)
block = os.urandom(4096)
times = []
while not os.path.exists(stop):
    t = time.perf_counter()
    os.write(fd, block)
    times.append(time.perf_counter() - t)
    if len(times) % 2048 == 0:
        os.lseek(fd, 0, 0)
times.sort()
n = len(times)
print("%d writes, median %.2f ms, p99 %.2f ms" % (n, times[n // 2] * 1e3, times[min(n - 1, n * 99 // 100)] * 1e3))
PY

field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); p=[p for p in d['partitions'] if p['number']==2][0]; print(p.get(sys.argv[2]) or 0)" "$1" "$2"; }

RESULTS=()
# capture_once NAME IMAGE FSTYPE [capture flags...]: mounts partition 2 read-write, captures
# cold into a fresh store, unmounts; sets SECS, FREEZE, READ, CONS.
capture_once() {
    local name=$1 image=$2; shift 2
    local l
    l=$(losetup -f --show --offset "$P2_OFF" --sizelimit "$P2_BYTES" "$image"); LOOPS+=("$l")
    mount "$l" "$MNT"
    rm -rf "$WORK/store"
    sync; echo 3 > /proc/sys/vm/drop_caches
    local t0 t1
    t0=$(date +%s.%N)
    "$BIN" capture --store "$WORK/store" --host bench --no-progress --json "$@" "$image" \
        > "$WORK/$name.json" 2> "$WORK/$name.err" || { cat "$WORK/$name.err" >&2; die "$name: capture failed"; }
    t1=$(date +%s.%N)
    SECS=$(python3 -c "print('%.2f' % ($t1 - $t0))")
    FREEZE=$(printf '%.2f' "$(field "$WORK/$name.json" freeze_seconds)")
    READ=$(( $(field "$WORK/$name.json" bytes_read) / 1048576 ))
    CONS=$(field "$WORK/$name.json" consistency)
    umount "$MNT"; losetup -d "$l"; LOOPS=()
}

for fs in ext4 xfs; do
    image=$IMG; [ "$fs" = xfs ] && image=$IMG_XFS
    capture_once "$fs" "$image"
    RESULTS+=("$fs, default|$CONS|$SECS|$FREEZE|$READ")
    capture_once "$fs-all" "$image" --all-blocks
    RESULTS+=("$fs, --all-blocks|$CONS|$SECS|$FREEZE|$READ")
done

# Latency beside a capture, at each I/O priority.
lat() { # lat NAME [capture flags...] (NAME "alone": no capture)
    local name=$1; shift
    rm -f "$WORK/stop"
    sync; echo 3 > /proc/sys/vm/drop_caches
    python3 "$WORK/latency.py" "$WORK/latency.dat" "$WORK/stop" > "$WORK/lat-$name.txt" &
    local pid=$!
    if [ "$name" = alone ]; then sleep 5; else
        local l; l=$(losetup -f --show --offset "$P2_OFF" --sizelimit "$P2_BYTES" "$IMG"); LOOPS+=("$l")
        mount "$l" "$MNT"; rm -rf "$WORK/store"
        "$BIN" capture --store "$WORK/store" --host bench --no-progress --all-blocks "$@" "$IMG" \
            > /dev/null 2> "$WORK/lat-$name.err" || { cat "$WORK/lat-$name.err" >&2; die "capture $name failed"; }
        umount "$MNT"; losetup -d "$l"; LOOPS=()
    fi
    touch "$WORK/stop"; wait "$pid"
    LAT+=("$name|$(cat "$WORK/lat-$name.txt")")
}
LAT=()
lat alone
lat idle --io-priority idle
lat normal --io-priority normal

echo
echo "Capture of a mounted, read-write filesystem, $((P2_BYTES / 1048576)) MiB, ${FS_USED_PCT}% used, cold cache ($(nproc) cores, $(uname -r), scheduler $(cat /sys/block/"$(basename "$(df --output=source "$WORK" | tail -1)")"/queue/scheduler 2>/dev/null || echo '?'))"
echo
echo "| filesystem | consistency | capture s | frozen s | MiB read |"
echo "|---|---|---|---|---|"
for r in "${RESULTS[@]}"; do IFS='|' read -r a b c d e <<< "$r"; echo "| $a | $b | $c | $d | $e |"; done
echo
echo "Foreground 4 KiB O_DSYNC writes on the same disk (capture with --all-blocks, so it reads the whole partition)"
echo
echo "| beside | result |"
echo "|---|---|"
for r in "${LAT[@]}"; do IFS='|' read -r a b <<< "$r"; echo "| $a | $b |"; done
