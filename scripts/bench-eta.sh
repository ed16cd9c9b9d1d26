#!/usr/bin/env bash
# How good is the first ETA (issue 15)? On the benchmark image (scripts/bench-image.sh), a full
# restore onto a blank file and onto a blank loop device, and a minimal one (the boot code and
# 20 MiB of the root filesystem's metadata overwritten), each with `--progress json`: the
# plan's estimate and the first progress event's ETA against the real duration of the apply.
# Target: within 2x.
#
# Usage: sudo scripts/bench-eta.sh [--size 2G] [--bin PATH] [--work DIR] [--keep]
# Every apply starts with a cold page cache. Runs as root (loop devices, drop_caches).
set -euo pipefail

die() { echo "bench-eta.sh: error: $*" >&2; exit 1; }
log() { echo "bench-eta.sh: $*" >&2; }

SIZE=2G BIN="" WORK="" KEEP=0
while [ $# -gt 0 ]; do
    case $1 in
        --size) SIZE=${2:?}; shift 2 ;;
        --bin) BIN=${2:?}; shift 2 ;;
        --work) WORK=${2:?}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[ "$(id -u)" -eq 0 ] || die "must run as root (loop devices, drop_caches)"
IMG_BYTES=$(numfmt --from=iec "$SIZE" 2>/dev/null) || die "--size: cannot parse '$SIZE'"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=deps.sh
. "$ROOT/scripts/deps.sh"
# shellcheck source=bench-image.sh
. "$ROOT/scripts/bench-image.sh"
ensure_commands sgdisk:gdisk mkfs.ext4:e2fsprogs losetup:mount numfmt:coreutils python3:python3 \
    || die "could not install what the benchmark needs"
if [ -z "$BIN" ]; then
    ensure_rust || die "no cargo: install Rust, or pass --bin PATH"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
    BIN=$ROOT/target/release/restore
fi
BIN=$(realpath "$BIN")
[ -n "$WORK" ] || WORK=$(mktemp -d /var/tmp/restore-bench-eta.XXXXXX)
mkdir -p "$WORK"; WORK=$(realpath "$WORK")
cd "$WORK" # apply leaves its restore reports in the working directory
LOOP=""
cleanup() {
    [ -z "$LOOP" ] || losetup -d "$LOOP" 2>/dev/null || true
    if [ "$KEEP" -eq 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

make_bench_image
log "capturing the image"
"$BIN" capture --store "$WORK/store" --host bench --no-progress "$IMG" >/dev/null

# apply_eta NAME TARGET: one apply with JSON progress; prints its row.
apply_eta() {
    sync; echo 3 > /proc/sys/vm/drop_caches
    "$BIN" apply --store "$WORK/store" --yes --progress json "$2" 2> "$WORK/events.json" >/dev/null \
        || { tail -n 3 "$WORK/events.json" >&2; die "$1: apply failed"; }
    python3 - "$WORK/events.json" "$1" <<'PY'
import json, sys
events = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
plan = next(e for e in events if e["event"] == "plan")
# The first progress event of the writes (after the plan; the diagnosis reports progress too).
after = events[events.index(plan) + 1:]
first = next(e for e in after if e["event"] == "progress")
done = next(e for e in after if e["event"] == "done")
eta, real = first.get("eta_seconds"), done["duration_seconds"]
ratio = "-" if not eta else "%.2f" % (real / eta)
print("| %s | %.2f | %s | %.2f | %s |" % (sys.argv[2], plan["estimated_seconds"], eta, real, ratio))
PY
}

echo
echo "$(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg); image $SIZE, $("$BIN" --version | head -n 1)"
echo
echo "| apply | plan estimate s | first progress ETA s | real s | real / ETA |"
echo "|---|---:|---:|---:|---:|"
T=$WORK/target.img
rm -f "$T"; truncate -s "$IMG_BYTES" "$T"
apply_eta "full -> blank file" "$T"
rm -f "$T"; truncate -s "$IMG_BYTES" "$T"
LOOP=$(losetup -f --show "$T")
apply_eta "full -> blank loop device" "$LOOP"
losetup -d "$LOOP"; LOOP=""
# About 1%: the boot code and the first 20 MiB of the root filesystem (superblock, group
# descriptors, inode tables: used blocks, which a restore must write back; damage in free
# space is not repaired, so it would measure nothing).
cp "$IMG" "$T"
dd if=/dev/zero of="$T" bs=440 count=1 conv=notrunc status=none
head -c $((20 * 1048576)) /dev/urandom | dd of="$T" bs=1M seek=$((P2_OFF / 1048576)) conv=notrunc status=none
apply_eta "minimal (boot code + 20 MiB of ext4 metadata)" "$T"
