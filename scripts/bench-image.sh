# The benchmark disk image, shared by scripts/bench.sh and scripts/bench-store.sh (sourced):
# GPT; partition 1 BIOS boot (1 MiB) at 1 MiB with random bytes, partition 2 ext4 from 2 MiB to
# the end, about 60% full of text (30%), real binaries (35%) and random data (35%); random boot
# code. Needs WORK, SIZE and IMG_BYTES, and die/log; sets IMG, P2_OFF, P2_BYTES, FS_USED_PCT,
# SRC_BYTES and IMG_MIB.
make_bench_image() {
    # The image: GPT; partition 1 BIOS boot (1 MiB) at 1 MiB, partition 2 ext4 from 2 MiB to the end.
    IMG=$WORK/disk.img
    log "building a $SIZE image in $WORK"
    head -c "$IMG_BYTES" /dev/zero > "$IMG"   # fully allocated, like a real disk: cp/dd cannot skip holes
    sgdisk -n 1:2048:+1M -t 1:ef02 -c 1:bios -n 2:0:0 -t 2:8300 -c 2:root "$IMG" >/dev/null \
        || die "sgdisk could not partition the image"
    P2_FIRST=$(sgdisk -i 2 "$IMG" | awk '/^First sector:/ {print $3}')
    P2_LAST=$(sgdisk -i 2 "$IMG" | awk '/^Last sector:/ {print $3}')
    [ -n "$P2_FIRST" ] && [ -n "$P2_LAST" ] || die "could not read partition 2 from sgdisk -i 2"
    P2_OFF=$((P2_FIRST * 512)); P2_BYTES=$(((P2_LAST - P2_FIRST + 1) * 512))
    P2_BYTES=$((P2_BYTES / 4096 * 4096))   # the ext4 size (whole 4 KiB blocks)

    # Content ~60% of the filesystem: 30% text, 35% binaries, 35% incompressible.
    SRC=$WORK/src; mkdir -p "$SRC/text" "$SRC/bin" "$SRC/random"
    # The budget leaves room for what an empty ext4 of this size already uses (journal, inode tables).
    FS=$WORK/root.ext4
    truncate -s "$P2_BYTES" "$FS"; mkfs.ext4 -q -F "$FS" "$((P2_BYTES / 1024))k" || die "mkfs.ext4 failed"
    EMPTY_USED=$(dumpe2fs -h "$FS" 2>/dev/null | awk -F: '/^Block count/ {bc=$2} /^Free blocks/ {fb=$2} /^Block size/ {bs=$2} END {print (bc - fb) * bs}')
    rm -f "$FS"
    BUDGET=$((P2_BYTES * 60 / 100 - EMPTY_USED))
    TEXT_B=$((BUDGET * 30 / 100)); BIN_B=$((BUDGET * 35 / 100)); RAND_B=$((BUDGET - TEXT_B - BIN_B))
    # Text: log-like lines from a small vocabulary, and number lists (seq), in files of 64 KiB .. 8 MiB.
    i=0; made=0
    while [ "$made" -lt "$TEXT_B" ]; do
        sz=$(( (65536 << (i % 8)) )); [ $((made + sz)) -le "$TEXT_B" ] || sz=$((TEXT_B - made))
        if [ $((i % 3)) -eq 2 ]; then
            (set +o pipefail; seq -f 'entry %g' "$((i * 1000000))" "$((i * 1000000 + 999999))" | head -c "$sz" > "$SRC/text/numbers-$i.txt")
        else
            (set +o pipefail; awk -v seed="$i" -v n="$sz" 'BEGIN {
                srand(seed); split("the a disk block chunk store restore partition boot loader kernel " \
                  "module error warning info device mount file system read write sync plan apply " \
                  "snapshot capture table sector offset size hash zstd ext4 grub efi root user home", w, " ")
                out = 0
                while (out < n) {
                    line = sprintf("2026-11-%02d %02d:%02d:%02d host%d", 1 + int(rand() * 28),
                        int(rand() * 24), int(rand() * 60), int(rand() * 60), int(rand() * 16))
                    k = 4 + int(rand() * 12)
                    for (j = 0; j < k; j++) line = line " " w[1 + int(rand() * 39)]
                    line = line " " int(rand() * 100000)
                    print line; out += length(line) + 1
                }
            }' | head -c "$sz" > "$SRC/text/log-$i.txt")
        fi
        made=$((made + sz)); i=$((i + 1))
    done
    # Binaries: real executables and libraries (as on a root filesystem), until the budget is used.
    made=0; round=0
    while [ "$made" -lt "$BIN_B" ]; do
        before=$made
        while IFS= read -r -d '' f; do
            sz=$(stat -c %s "$f")
            [ $((made + sz)) -le "$BIN_B" ] || continue
            d=$SRC/bin/r$round$(dirname "$f"); mkdir -p "$d"
            cp "$f" "$d/" 2>/dev/null && made=$((made + sz))
        done < <(find /usr/bin /usr/sbin /usr/lib/x86_64-linux-gnu /usr/libexec -type f -size +1k -print0 2>/dev/null | sort -z)
        [ "$made" -gt "$before" ] || break
        round=$((round + 1))
        [ $((BIN_B - made)) -gt 1048576 ] || break
    done
    # Incompressible: random data, in files of 256 KiB .. 32 MiB.
    i=0; made=0
    while [ "$made" -lt "$RAND_B" ]; do
        sz=$(( (262144 << (i % 8)) )); [ $((made + sz)) -le "$RAND_B" ] || sz=$((RAND_B - made))
        head -c "$sz" /dev/urandom > "$SRC/random/blob-$i.bin"
        made=$((made + sz)); i=$((i + 1))
    done
    SRC_BYTES=$(du -sb "$SRC" | cut -f1)

    truncate -s "$P2_BYTES" "$FS"; mkfs.ext4 -q -F -L root -d "$SRC" "$FS" "$((P2_BYTES / 1024))k" || die "mkfs.ext4 -d failed"
    dd if="$FS" of="$IMG" bs=4M seek="$P2_OFF" oflag=seek_bytes conv=notrunc status=none \
        || die "could not copy the filesystem into the image"
    rm -rf "$FS" "$SRC"
    # Boot code: random bytes in the first 440 bytes (MBR boot code) and in the BIOS boot partition.
    head -c 440 /dev/urandom | dd of="$IMG" conv=notrunc status=none
    head -c $((48 * 1024)) /dev/urandom | dd of="$IMG" bs=512 seek=2048 conv=notrunc status=none
    sync
    L=$(losetup -f --show -r --offset "$P2_OFF" --sizelimit "$P2_BYTES" "$IMG") || die "losetup failed"
    e2fsck -fn "$L" >/dev/null 2>&1 || { losetup -d "$L"; die "the generated ext4 does not pass e2fsck -fn"; }
    read -r BC FBC BS < <(dumpe2fs -h "$L" 2>/dev/null | awk -F: '
        /^Block count/ {bc=$2} /^Free blocks/ {fb=$2} /^Block size/ {bs=$2} END {print bc+0, fb+0, bs+0}')
    losetup -d "$L"
    FS_USED_PCT=$(( (BC - FBC) * 100 / BC ))
    IMG_MIB=$((IMG_BYTES / 1048576))
    log "image: $IMG_MIB MiB, ext4 partition $((P2_BYTES / 1048576)) MiB at offset $P2_OFF, ${FS_USED_PCT}% used" \
        "($((SRC_BYTES / 1048576)) MiB of files: text, binaries, random)"
}
