#!/usr/bin/env bash
# Makes the real inputs the property tests mutate (src/fuzz.rs): sector dumps of a GPT and an
# MBR with logical partitions, the first 128 KiB of ext4, XFS-less superblock heads, a small
# FAT16 ESP, a chunk index, a manifest and a plan. Deterministic where the tools allow; the
# outputs are committed (zstd-compressed), so the tests need none of these tools.
#
#   tests/fuzz-seeds/make.sh        (needs sgdisk, sfdisk, mkfs.ext4, mkfs.vfat, mtools, zstd)
set -euo pipefail
cd "$(dirname "$0")"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

# GPT: 4 MiB disk, partitions 1, 2, 3, 5 (a gap in the numbering), first 34 sectors + last 33.
truncate -s 4M "$W/gpt.img"
sgdisk -n1:2048:+512K -t1:ef02 -n2:0:+1M -t2:ef00 -c2:esp -n3:0:+512K -n5:0:0 -c5:data \
    -U 11111111-2222-3333-4444-555555555555 "$W/gpt.img" >/dev/null
head -c $((34 * 512)) "$W/gpt.img" > "$W/gpt-head.bin"
tail -c $((33 * 512)) "$W/gpt.img" > "$W/gpt-tail.bin"

# MBR with an extended partition and three logical partitions (an EBR chain).
truncate -s 8M "$W/mbr.img"
printf 'label: dos\nlabel-id: 0x12345678\nstart=2048, size=2048, type=83\nstart=4096, size=12288, type=5\nstart=6144, size=1024, type=83\nsize=1024, type=82\nsize=1024, type=83\n' \
    | sfdisk -q "$W/mbr.img" >/dev/null
# LBA 0 and the EBR 2048 sectors before each logical partition (6144, 10240, 13312).
: > "$W/mbr-sectors.bin"
for lba in 0 4096 8192 11264; do
    dd if="$W/mbr.img" bs=512 skip=$lba count=1 status=none >> "$W/mbr-sectors.bin"
done

# ext4: the first 128 KiB of a small filesystem with files (superblock, group descriptors,
# bitmaps), and the whole 4 MiB image for the used-block reader.
mkdir -p "$W/root/etc"
echo web-3 > "$W/root/etc/hostname"
head -c 300000 /dev/zero | tr '\0' 'x' > "$W/root/data.txt"
mkfs.ext4 -q -F -L root -U 22222222-3333-4444-5555-666666666666 -E root_owner=0:0 \
    -d "$W/root" "$W/ext4.img" 4M
cp "$W/ext4.img" ext4.img
head -c 131072 "$W/ext4.img" > "$W/ext4-head.bin"

# FAT16 ESP of 4 MiB with nested directories and a loader.
mkfs.vfat -F 16 -s 1 -n ESP -i 12345678 -C "$W/esp.img" 4096 >/dev/null
mmd -i "$W/esp.img" ::/EFI ::/EFI/BOOT ::/EFI/debian ::/EFI/debian/deep
head -c 20000 /dev/zero | tr '\0' 'M' > "$W/grub.efi"
mcopy -i "$W/esp.img" "$W/grub.efi" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$W/esp.img" "$W/grub.efi" ::/EFI/debian/grubx64.efi
echo 'menuentry' | mcopy -i "$W/esp.img" - ::/EFI/debian/deep/grub.cfg

for f in gpt-head.bin gpt-tail.bin mbr-sectors.bin ext4-head.bin esp.img; do
    zstd -q -19 -f "$W/$f" -o "$f.zst"
done
zstd -q -19 -f ext4.img -o ext4.img.zst && rm ext4.img
echo "seeds written to $(pwd)"
