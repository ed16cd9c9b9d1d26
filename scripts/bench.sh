#!/usr/bin/env bash
# Benchmarks restore (issue 8) against the physical limit (cat, cp, dd of the raw image), casync and
# partclone, on one realistic disk image: GPT, a BIOS boot partition with boot code, and an ext4
# root ~60% full of text, binaries and incompressible data.
#
# Usage: sudo scripts/bench.sh [--size 2G] [--runs 3] [--bin PATH] [--work DIR] [--keep] [--out FILE]
#   --size SIZE   image size (numfmt IEC suffixes: 512M, 2G, ...), default 2G
#   --runs N      runs per measurement; the table shows the median, default 3
#   --bin PATH    restore binary; default: `cargo build --release` here and use target/release/restore
#   --work DIR    scratch directory (needs ~6x SIZE free); default: a new directory under /var/tmp
#   --keep        keep the scratch directory (it is removed at the end otherwise)
#   --out FILE    also write the results as markdown to FILE
#   --raw         capture with --all-blocks: the data has no used-block map (raw partitions,
#                 LVM, XFS offline), so every block is stored and restored
#   --sparse      server sizes instead: `--size 256G --sparse` runs scripts/bench-scale.sh
#
# Every timed run starts with a cold page cache (sync; echo 3 > /proc/sys/vm/drop_caches) and every
# timed command ends with `sync`, so each one pays for its own writes. Times and peak RSS come from
# `/usr/bin/time -f "%e %M"`. Runs as root (loop devices, drop_caches); installs casync, partclone,
# gdisk, e2fsprogs and time when they are missing.
set -euo pipefail

die() { echo "bench.sh: error: $*" >&2; exit 1; }
log() { echo "bench.sh: $*" >&2; }

# Sparse images at server sizes (256G, 1T): scripts/bench-scale.sh makes that table.
for a in "$@"; do
    if [ "$a" = --sparse ]; then exec bash "$(dirname "${BASH_SOURCE[0]}")/bench-scale.sh" "$@"; fi
done
SIZE=2G RUNS=3 BIN="" WORK="" KEEP=0 OUT="" RAW=0
while [ $# -gt 0 ]; do
    case $1 in
        --size) SIZE=${2:?--size needs a value}; shift 2 ;;
        --runs) RUNS=${2:?--runs needs a value}; shift 2 ;;
        --bin) BIN=${2:?--bin needs a value}; shift 2 ;;
        --work) WORK=${2:?--work needs a value}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --out) OUT=${2:?--out needs a value}; shift 2 ;;
        --raw) RAW=1; shift ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[ "$(id -u)" -eq 0 ] || die "must run as root (loop devices, drop_caches, apt-get)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer, not '$RUNS'"
IMG_BYTES=$(numfmt --from=iec "$SIZE" 2>/dev/null) || die "--size: cannot parse '$SIZE' (use e.g. 512M, 2G)"
[ $((IMG_BYTES % 1048576)) -eq 0 ] && [ "$IMG_BYTES" -ge $((256 * 1048576)) ] \
    || die "--size must be a whole number of MiB and at least 256M"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=deps.sh
. "$ROOT/scripts/deps.sh"
ensure_commands casync:casync partclone.ext4:partclone sgdisk:gdisk mkfs.ext4:e2fsprogs \
    /usr/bin/time:time losetup:mount cmp:diffutils numfmt:coreutils shuf:coreutils awk:mawk \
    || die "could not install the packages the benchmark needs"

if [ -z "$BIN" ]; then
    ensure_rust || die "no cargo: install Rust, or pass --bin PATH"
    log "building restore (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
    BIN=$ROOT/target/release/restore
fi
[ -x "$BIN" ] || die "restore binary not found or not executable: $BIN"
BIN=$(realpath "$BIN")

if [ -z "$WORK" ]; then
    WORK=$(mktemp -d /var/tmp/restore-bench.XXXXXX)
else
    mkdir -p "$WORK"; WORK=$(realpath "$WORK")
fi
[ -z "$OUT" ] || OUT=$(realpath -m "$OUT")
cd "$WORK" # apply leaves its restore reports in the working directory: here, not in the checkout
LOOPS=()
cleanup() {
    local rc=$? l
    for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null || true; done
    if [ "$KEEP" -eq 0 ]; then rm -rf "$WORK"; else log "kept scratch directory $WORK"; fi
    [ $rc -eq 0 ] || echo "bench.sh: FAILED (exit $rc); see the messages above" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need=$((IMG_BYTES * 6 / 1048576)); avail=$(($(df --output=avail -B1M "$WORK" | tail -1)))
[ "$avail" -ge "$need" ] || die "$WORK has $avail MiB free, the benchmark needs about $need MiB"

attach() { # attach FILE [losetup options...] -> sets ATTACHED to the loop device, detached at exit
    local f=$1; shift
    ATTACHED=$(losetup -f --show "$@" "$f") || die "losetup $* $f failed"
    LOOPS+=("$ATTACHED")
}
detach() {
    local d=$1 i
    losetup -d "$d" || die "losetup -d $d failed"
    for i in "${!LOOPS[@]}"; do [ "${LOOPS[$i]}" != "$d" ] || unset 'LOOPS[i]'; done
}

# The image (scripts/bench-image.sh): sets IMG, P2_OFF, P2_BYTES, FS_USED_PCT, SRC_BYTES, IMG_MIB.
# shellcheck source=bench-image.sh
. "$ROOT/scripts/bench-image.sh"
make_bench_image

# ---------------------------------------------------------------------------------------------
# Timing. A measurement is NAME, an untimed setup function, a command; each of RUNS runs does:
# setup, sync + drop caches, then `/usr/bin/time bash -c 'CMD && sync'`.
declare -A MED RSS
TF=$WORK/time.out
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
CMDLOG=$WORK/cmd.log
measure() { # measure NAME SETUP CHECK -- CMD...
    local name=$1 setup=$2 check=$3 r times=() rss=0 e m a cmd; shift 4
    for ((r = 1; r <= RUNS; r++)); do
        "$setup"
        cmd=(); for a in "$@"; do cmd+=("${a//@TLOOP@/$TLOOP}"); done
        drop_caches
        if ! /usr/bin/time -f "%e %M" -o "$TF" bash -c '"$@" && sync' bench "${cmd[@]}" >"$CMDLOG" 2>&1; then
            cat "$CMDLOG" >&2; die "$name: command failed: ${cmd[*]}"
        fi
        read -r e m < "$TF"
        times+=("$e"); [ "$m" -le "$rss" ] || rss=$m
        "$check" || die "$name: the result is wrong (run $r)"
        log "  $name run $r/$RUNS: ${e}s, peak RSS $((m / 1024)) MiB"
    done
    MED[$name]=$(printf '%s\n' "${times[@]}" | median)
    RSS[$name]=$rss
}
none() { :; }
same_as_image() { cmp -s "$1" "$IMG" || { log "$1 differs from the image: $(cmp "$1" "$IMG" 2>&1 | head -1)"; return 1; }; }

OUTF=$WORK/out.img
STORE=$WORK/store          # restore's store (from the last capture run)
CASTORE=$WORK/castore      # casync's store
CAIDX=$WORK/index.caibx
PC=$WORK/root.pc           # partclone image
DAMAGED=$WORK/damaged.img
TLOOP=""

rm_out() { rm -f "$OUTF"; }
check_out() { same_as_image "$OUTF"; }
fresh_store() { rm -rf "$STORE"; }
check_store() { [ -d "$STORE" ]; }
fresh_castore() { rm -rf "$CASTORE" "$CAIDX"; mkdir -p "$CASTORE"; }
check_caidx() { [ -s "$CAIDX" ]; }
blank_out() { rm -f "$OUTF"; truncate -s "$IMG_BYTES" "$OUTF"; }
blank_loop() {
    [ -z "$TLOOP" ] || { detach "$TLOOP"; TLOOP=""; }
    blank_out; attach "$OUTF"; TLOOP=$ATTACHED
}
check_loop() { same_as_image "$TLOOP"; }
blank_part_loop() { # a blank target disk; the loop device covers its partition 2 only
    [ -z "$TLOOP" ] || { detach "$TLOOP"; TLOOP=""; }
    blank_out; attach "$OUTF" --offset "$P2_OFF" --sizelimit "$P2_BYTES"; TLOOP=$ATTACHED
}
check_part() { # partclone restores the filesystem only: compare partition 2
    cmp -s -n "$P2_BYTES" "$TLOOP" <(tail -c +$((P2_OFF + 1)) "$IMG") || { log "partition 2 differs"; return 1; }
}
rm_pc() { rm -f "$PC"; }
check_pc() { [ -s "$PC" ]; }

# 1% damage: 1 MiB of random data over 1% of the 1 MiB blocks of partition 2, same places every run.
P2_MIB=$((P2_BYTES / 1048576)); DAMAGE_N=$(( (P2_MIB + 99) / 100 ))
mapfile -t DAMAGE_AT < <(set +o pipefail; shuf -i 0-$((P2_MIB - 1)) -n "$DAMAGE_N" --random-source=<(yes 8) | sort -n)
make_damaged() {
    cp "$IMG" "$DAMAGED"
    local b
    for b in "${DAMAGE_AT[@]}"; do
        head -c 1048576 /dev/urandom | dd of="$DAMAGED" bs=1M seek=$((P2_OFF / 1048576 + b)) conv=notrunc status=none
    done
    cmp -s "$DAMAGED" "$IMG" && die "damaging the copy changed nothing"
    rm -f "$OUTF"
}
# restore skips the free space of ext4 (damage there does not matter and is not repaired), so
# the repaired copy must: have nothing left to do, pass e2fsck, and hold every file of the image.
check_damaged_repaired() {
    "$BIN" plan --store "$STORE" --detailed-exitcode --no-progress "$DAMAGED" >/dev/null ||
        { log "a fresh plan of the repaired copy still has work to do"; return 1; }
    local a b ma mb rc=0
    a=$(losetup -f --show -r --offset "$P2_OFF" --sizelimit "$P2_BYTES" "$DAMAGED") || return 1
    b=$(losetup -f --show -r --offset "$P2_OFF" --sizelimit "$P2_BYTES" "$IMG") || { losetup -d "$a"; return 1; }
    e2fsck -fn "$a" >/dev/null 2>&1 || { log "e2fsck -fn fails on the repaired filesystem"; rc=1; }
    ma=$(mktemp -d "$WORK/ma.XXXX"); mb=$(mktemp -d "$WORK/mb.XXXX")
    if mount -o ro "$a" "$ma" && mount -o ro "$b" "$mb"; then
        diff -r --no-dereference "$ma" "$mb" >/dev/null 2>&1 || { log "files of the repaired filesystem differ"; rc=1; }
    else
        log "cannot mount the filesystems to compare their files"; rc=1
    fi
    umount "$ma" 2>/dev/null; umount "$mb" 2>/dev/null; rmdir "$ma" "$mb"
    losetup -d "$a" "$b"
    return $rc
}
boot_damaged() { # the repaired copy, with the MBR boot code zeroed
    [ -f "$DAMAGED" ] || cp "$IMG" "$DAMAGED"
    cmp -s "$DAMAGED" "$IMG" || cp "$IMG" "$DAMAGED"
    dd if=/dev/zero of="$DAMAGED" bs=440 count=1 conv=notrunc status=none
}

check_quick() { # the quick plan must have seen the zeroed boot code
    grep -q 'boot-code.*differ' "$CMDLOG" || { log "plan --quick did not report the zeroed boot code:"; cat "$CMDLOG" >&2; return 1; }
}

R=(--no-progress)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "timing $RUNS run(s) of each; every run starts with a cold page cache (sync; echo 3 > /proc/sys/vm/drop_caches)"
measure "cat image" none true -- sh -c 'cat "$1" > /dev/null' cat "$IMG"
measure "cp image" rm_out check_out -- cp "$IMG" "$OUTF"
measure "dd image (bs=4M)" rm_out check_out -- dd if="$IMG" of="$OUTF" bs=4M status=none
measure "dd image -> loop device" blank_loop check_loop -- dd if="$IMG" of=@TLOOP@ bs=4M status=none
[ -z "$TLOOP" ] || { detach "$TLOOP"; TLOOP=""; }
CAPTURE_FLAGS=()
[ "$RAW" -eq 1 ] && CAPTURE_FLAGS=(--all-blocks)
measure "restore capture" fresh_store check_store -- "$BIN" capture --store "$STORE" --host bench "${R[@]}" "${CAPTURE_FLAGS[@]}" "$IMG"
# The other half of the I/O limit of a full restore: reading every object of the store once, cold,
# four readers at a time (restore reads chunks concurrently too).
measure "read store objects" none true -- sh -c 'find "$1" -type f -print0 | xargs -0 -r -n 64 -P 4 cat > /dev/null' read-store "$STORE"
measure "casync make" fresh_castore check_caidx -- casync make --store="$CASTORE" "$CAIDX" "$IMG"
measure "partclone save" rm_pc check_pc -- sh -c 'l=$(losetup -f --show -r --offset "$2" --sizelimit "$3" "$1") || exit 1
    partclone.ext4 -q -c -s "$l" -O "$4"; rc=$?; losetup -d "$l"; exit $rc' partclone-save "$IMG" "$P2_OFF" "$P2_BYTES" "$PC"
measure "restore full -> file" blank_out check_out -- "$BIN" apply --store "$STORE" --yes "${R[@]}" "$OUTF"
measure "restore full -> loop" blank_loop check_loop -- "$BIN" apply --store "$STORE" --yes "${R[@]}" @TLOOP@
[ -z "$TLOOP" ] || { detach "$TLOOP"; TLOOP=""; }
measure "casync extract" rm_out check_out -- casync extract --store="$CASTORE" "$CAIDX" "$OUTF"
measure "partclone restore" blank_part_loop check_part -- partclone.ext4 -q -r -s "$PC" -o @TLOOP@
[ -z "$TLOOP" ] || { detach "$TLOOP"; TLOOP=""; }
measure "restore minimal (1% damaged)" make_damaged check_damaged_repaired -- "$BIN" apply --store "$STORE" --yes "${R[@]}" "$DAMAGED"
measure "casync extract --seed (1% damaged)" make_damaged check_out -- casync extract --store="$CASTORE" --seed="$DAMAGED" "$CAIDX" "$OUTF"
measure "restore plan --quick (boot code zeroed)" boot_damaged check_quick -- "$BIN" plan --store "$STORE" --quick "${R[@]}" "$DAMAGED"

# ---------------------------------------------------------------------------------------------
# Report.
calc() { awk "BEGIN {printf \"%.2f\", $*}"; }
ge() { awk "BEGIN {exit !(($1) >= ($2))}"; }
t() { echo "${MED[$1]}"; }
thr() { awk -v s="$IMG_MIB" -v t="$(t "$1")" 'BEGIN {if (t > 0) printf "%.0f", s / t; else print "-"}'; }
rss_mib() { echo $(( RSS[$1] / 1024 )); }
F="restore full -> file"; LP="restore full -> loop"; MIN="restore minimal (1% damaged)"
QP="restore plan --quick (boot code zeroed)"; SEED="casync extract --seed (1% damaged)"
FULL_T=$(awk -v a="$(t "$F")" -v b="$(t "$LP")" 'BEGIN {print (a > b ? a : b)}')
declare -A VS=(
    ["cat image"]="reference: reading the image once"
    ["cp image"]="reference: physical limit"
    ["read store objects"]="reference: every store object read once, cold"
    ["dd image (bs=4M)"]="$(calc "$(t "dd image (bs=4M)")" / "$(t "cp image")")x the time of cp"
    ["dd image -> loop device"]="reference: physical limit onto a loop device"
    ["restore capture"]="$(calc "$(t "casync make")" / "$(t "restore capture")")x faster than casync make"
    ["$F"]="$(calc "$(t "cp image")" / "$(t "$F")")x cp throughput; $(calc "$(t "casync extract")" / "$(t "$F")")x faster than casync extract"
    ["$LP"]="$(calc "$(t "cp image")" / "$(t "$LP")")x cp throughput; $(calc "$(t "dd image -> loop device")" / "$(t "$LP")")x dd -> loop throughput; $(calc "$(t "partclone restore")" / "$(t "$LP")")x faster than partclone restore"
    ["$MIN"]="$(calc "$(t "$MIN")" / "$(t "cat image")")x the time of cat; $(calc "$(t "$SEED")" / "$(t "$MIN")")x faster than casync --seed"
    ["partclone save"]="root filesystem only"
    ["partclone restore"]="root filesystem only"
)
ORDER=("cat image" "cp image" "dd image (bs=4M)" "dd image -> loop device" "read store objects" "restore capture" "casync make" "partclone save"
    "$F" "$LP" "casync extract" "partclone restore" "$MIN" "$SEED" "$QP")

TARGETS=()
target() { # target TEXT CONDITION-EXIT-STATUS
    local text=$1; shift
    if "$@"; then TARGETS+=("PASS  $text"); else TARGETS+=("MISS  $text"); fi
}
max_rss=0; max_rss_name=""
for n in "${ORDER[@]}"; do
    case $n in restore*) [ "${RSS[$n]}" -le "$max_rss" ] || { max_rss=${RSS[$n]}; max_rss_name=$n; } ;; esac
done
target "full restore -> file >= 0.8x cp throughput: $(calc "$(t "cp image")" / "$(t "$F")")x ($(t "$F")s vs $(t "cp image")s)" \
    ge "$(t "cp image") / $(t "$F")" 0.8
target "full restore -> loop device >= 0.8x cp throughput: $(calc "$(t "cp image")" / "$(t "$LP")")x ($(t "$LP")s vs $(t "cp image")s)" \
    ge "$(t "cp image") / $(t "$LP")" 0.8
# Issue 16: a full restore within 1.2x the larger of its two I/O limits (reading the store,
# writing the bytes), on a file and on a loop device; capture 4x faster than casync make.
lim_file=$(awk -v a="$(t "read store objects")" -v b="$(t "cp image")" 'BEGIN {print (a > b ? a : b)}')
lim_loop=$(awk -v a="$(t "read store objects")" -v b="$(t "dd image -> loop device")" 'BEGIN {print (a > b ? a : b)}')
target "full restore -> file <= 1.2x its I/O limit: $(calc "$(t "$F")" / "$lim_file")x ($(t "$F")s vs max(store read, cp) ${lim_file}s)" \
    ge "1.2 * $lim_file" "$(t "$F")"
target "full restore -> loop device <= 1.2x its I/O limit: $(calc "$(t "$LP")" / "$lim_loop")x ($(t "$LP")s vs max(store read, dd -> loop) ${lim_loop}s)" \
    ge "1.2 * $lim_loop" "$(t "$LP")"
target "capture >= 4x faster than casync make: $(calc "$(t "casync make")" / "$(t "restore capture")")x" \
    ge "$(t "casync make")" "4 * $(t "restore capture")"
target "full restore faster than casync extract: ${FULL_T}s vs $(t "casync extract")s" \
    ge "$(t "casync extract")" "$FULL_T + 0.001"
target "full restore faster than partclone restore: ${FULL_T}s vs $(t "partclone restore")s" \
    ge "$(t "partclone restore")" "$FULL_T + 0.001"
target "minimal restore (1% damaged) <= 1.3x reading the image once: $(calc "$(t "$MIN")" / "$(t "cat image")")x ($(t "$MIN")s vs $(t "cat image")s)" \
    ge "1.3 * $(t "cat image")" "$(t "$MIN")"
target "minimal restore >= 3x faster than casync extract --seed: $(calc "$(t "$SEED")" / "$(t "$MIN")")x ($(t "$MIN")s vs $(t "$SEED")s)" \
    ge "$(t "$SEED")" "3 * $(t "$MIN")"
target "quick plan under 1 second: $(t "$QP")s" ge 1 "$(t "$QP") + 0.001"
target "capture faster than casync make: $(t "restore capture")s vs $(t "casync make")s" \
    ge "$(t "casync make")" "$(t "restore capture") + 0.001"
target "peak memory of every restore command under 256 MiB: max $((max_rss / 1024)) MiB ($max_rss_name) at $SIZE" \
    ge 262144 "$max_rss + 1"

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
RAW_NOTE=""
[ "$RAW" -eq 1 ] && RAW_NOTE=" captured with --all-blocks (--raw: every block stored and restored, as for data without a used-block map);"
HEADER="$(nproc) cores; load average $LOAD_BEFORE before the timed runs, $LOAD_AFTER after (the cores are shared). image: $SIZE ($IMG_MIB MiB), GPT + BIOS boot + ext4 ${FS_USED_PCT}% used;$RAW_NOTE $RUNS run(s) each, median; cold page cache before every run (sync; echo 3 > /proc/sys/vm/drop_caches); every timed command ends with sync; MiB/s = image size / time"
print_text() {
    echo
    echo "$HEADER"
    printf '%-40s %9s %8s %9s  %s\n' operation "median s" "MiB/s" "RSS MiB" "vs reference"
    local n
    for n in "${ORDER[@]}"; do
        printf '%-40s %9s %8s %9s  %s\n' "$n" "$(t "$n")" "$(thr "$n")" "$(rss_mib "$n")" "${VS[$n]:-}"
    done
    echo
    printf '%s\n' "${TARGETS[@]}"
}
print_md() {
    echo "$HEADER"
    echo
    echo "| operation | median s | MiB/s | peak RSS MiB | vs reference |"
    echo "|---|---:|---:|---:|---|"
    local n
    for n in "${ORDER[@]}"; do
        echo "| $n | $(t "$n") | $(thr "$n") | $(rss_mib "$n") | ${VS[$n]:-} |"
    done
    echo
    printf -- '- %s\n' "${TARGETS[@]}"
}
print_text
if [ -n "$OUT" ]; then print_md > "$OUT"; log "wrote $OUT"; fi
