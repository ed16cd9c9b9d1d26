#!/usr/bin/env bash
# Builds the boot-loader test disks, each with a real boot loader installed by the
# distribution's own tools (grub-mkimage + boot.img set up the way grub-bios-setup does it,
# grub-mkimage for UEFI, shim from Debian's shim-signed, extlinux) and a Debian kernel whose
# tiny initramfs prints a marker and powers off. Needs root (extlinux installs into a mounted
# filesystem). Idempotent: what exists in OUT is kept.
#
#   tests/boot/fixtures.sh [OUT]      (default: target/boot-fixtures)
set -euo pipefail
OUT=$(realpath -m "${1:-target/boot-fixtures}")
MARKER=RESTORE-TEST-BOOTED
mkdir -p "$OUT"
cd "$OUT"
WORK=$(mktemp -d "$OUT/.work.XXXXXX")
MNT=""
LOOP=""
cleanup() {
    [ -n "$MNT" ] && umount "$MNT" 2>/dev/null || true
    [ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

patch_le() { # FILE OFFSET BYTES VALUE: little-endian integer written in place
    python3 - "$@" <<'PY'
import sys
path, off, n, val = sys.argv[1], int(sys.argv[2], 0), int(sys.argv[3]), int(sys.argv[4], 0)
with open(path, "r+b") as f:
    f.seek(off); f.write(val.to_bytes(n, "little"))
PY
}

if [ ! -s vmlinuz ]; then
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    if [ -z "$pkg" ]; then
        apt-get update -qq >/dev/null
        pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    fi
    (cd "$WORK" && apt-get download -qq "$pkg" >/dev/null && dpkg -x ./*.deb kernel)
    cp "$WORK"/kernel/boot/vmlinuz-* vmlinuz.tmp && mv vmlinuz.tmp vmlinuz
fi

if [ ! -s initrd.img ]; then
    r=$WORK/initrd
    mkdir -p "$r/bin" "$r/dev" "$r/proc" "$r/sys"
    cp /bin/busybox "$r/bin/busybox"
    mknod -m 600 "$r/dev/console" c 5 1
    cat > "$r/init" <<INIT
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev 2>/dev/null
echo "$MARKER"
echo "$MARKER" > /dev/ttyS0 2>/dev/null
/bin/busybox poweroff -f
INIT
    chmod +x "$r/init"
    (cd "$r" && find . | cpio -o -H newc --quiet | gzip -9) > initrd.tmp && mv initrd.tmp initrd.img
fi

GRUB_CFG='serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set timeout=0
menuentry "test" {
    linux /boot/vmlinuz console=ttyS0 panic=-1
    initrd /boot/initrd.img
}'

# The /boot filesystem every GRUB disk carries: kernel, initrd, grub.cfg and GRUB's modules.
boot_fs() { # OUTFILE SIZE
    local r=$WORK/bootfs
    rm -rf "$r"
    mkdir -p "$r/boot/grub"
    cp vmlinuz initrd.img "$r/boot/"
    cp -r /usr/lib/grub/i386-pc /usr/lib/grub/x86_64-efi "$r/boot/grub/"
    rm -f "$r"/boot/grub/*/*.module "$r"/boot/grub/*/*.image "$r"/boot/grub/*/*.exec 2>/dev/null || true
    printf '%s\n' "$GRUB_CFG" > "$r/boot/grub/grub.cfg"
    mkfs.ext4 -q -F -L boot -d "$r" "$1" "$2" >/dev/null 2>&1
}

# GRUB for BIOS, as grub-bios-setup installs it: core.img at CORE_LBA with its first
# sector-list entry pointing at its own second sector, boot.img in LBA 0 pointing at core.img.
grub_bios() { # DISK CORE_LBA PREFIX PARTMOD
    local disk=$1 lba=$2 core=$WORK/core.img
    grub-mkimage -O i386-pc -o "$core" -p "$3" biosdisk "$4" ext2 normal
    local sectors=$(( ($(stat -c %s "$core") + 511) / 512 ))
    dd if="$core" of="$disk" bs=512 seek="$lba" conv=notrunc status=none
    patch_le "$disk" $((lba * 512 + 0x1f4)) 8 $((lba + 1))
    patch_le "$disk" $((lba * 512 + 0x1fc)) 2 $((sectors - 1))
    dd if=/usr/lib/grub/i386-pc/boot.img of="$disk" bs=440 count=1 conv=notrunc status=none
    patch_le "$disk" 0x5c 8 "$lba"
    printf '\x90\x90' | dd of="$disk" bs=1 seek=$((0x66)) conv=notrunc status=none
}

if [ ! -s bios-gpt.img ]; then
    d=$WORK/bios-gpt.img
    truncate -s 160M "$d"
    sgdisk -n1:2048:+1M -t1:ef02 -c1:bios -n2:0:+100M -t2:8300 -c2:boot -n3:0:0 -t3:8300 -c3:data "$d" >/dev/null
    boot_fs "$WORK/boot.ext4" 100M
    dd if="$WORK/boot.ext4" of="$d" bs=1M seek=2 conv=notrunc status=none
    head -c 3M /dev/urandom | dd of="$d" bs=1M seek=110 conv=notrunc status=none
    grub_bios "$d" 2048 '(hd0,gpt2)/boot/grub' part_gpt
    mv "$d" bios-gpt.img
fi

if [ ! -s bios-mbr.img ]; then
    d=$WORK/bios-mbr.img
    truncate -s 128M "$d"
    printf 'label: dos\nstart=2048, size=204800, type=83, bootable\n' | sfdisk -q "$d" >/dev/null
    boot_fs "$WORK/boot.ext4" 100M
    dd if="$WORK/boot.ext4" of="$d" bs=1M seek=1 conv=notrunc status=none
    grub_bios "$d" 1 '(hd0,msdos1)/boot/grub' part_msdos
    mv "$d" bios-mbr.img
fi

# UEFI: an ESP (FAT16) with the removable fallback path \EFI\BOOT\BOOTX64.EFI, /boot on ext4.
uefi_disk() { # OUT LOADER(grub|shim)
    local d=$WORK/$1 esp=$WORK/esp.img efi=$WORK/grubx64.efi
    truncate -s 192M "$d"
    sgdisk -n1:2048:+64M -t1:ef00 -c1:esp -n2:0:+100M -t2:8300 -c2:boot "$d" >/dev/null
    rm -f "$esp"
    mkfs.vfat -F 16 -n ESP -C "$esp" $((64 * 1024)) >/dev/null
    grub-mkimage -O x86_64-efi -o "$efi" -p '(hd0,gpt2)/boot/grub' part_gpt fat ext2 normal
    mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/EFI/debian
    if [ "$2" = shim ]; then
        local shim=/usr/lib/shim/shimx64.efi.signed
        [ -f "$shim" ] || shim=/usr/lib/shim/shimx64.efi
        mcopy -i "$esp" "$shim" ::/EFI/BOOT/BOOTX64.EFI
        mcopy -i "$esp" "$efi" ::/EFI/BOOT/grubx64.efi
        mcopy -i "$esp" /usr/lib/shim/mmx64.efi ::/EFI/BOOT/mmx64.efi
        mcopy -i "$esp" "$shim" ::/EFI/debian/shimx64.efi
        mcopy -i "$esp" /usr/lib/shim/BOOTX64.CSV ::/EFI/debian/BOOTX64.CSV
    else
        mcopy -i "$esp" "$efi" ::/EFI/BOOT/BOOTX64.EFI
    fi
    mcopy -i "$esp" "$efi" ::/EFI/debian/grubx64.efi
    dd if="$esp" of="$d" bs=1M seek=1 conv=notrunc status=none
    boot_fs "$WORK/boot.ext4" 100M
    dd if="$WORK/boot.ext4" of="$d" bs=1M seek=65 conv=notrunc status=none
    mv "$d" "$1"
}
[ -s uefi-grub.img ] || uefi_disk uefi-grub.img grub
[ -s uefi-shim.img ] || uefi_disk uefi-shim.img shim

# A hybrid disk, as installers make for machines that may boot either way: GPT with a BIOS
# boot partition (GRUB for BIOS), an ESP (GRUB for UEFI as the fallback loader) and /boot.
if [ ! -s hybrid.img ]; then
    d=$WORK/hybrid.img esp=$WORK/esp.img efi=$WORK/grubx64.efi
    truncate -s 192M "$d"
    sgdisk -n1:2048:+1M -t1:ef02 -c1:bios -n2:0:+32M -t2:ef00 -c2:esp -n3:0:+100M -t3:8300 -c3:boot "$d" >/dev/null
    rm -f "$esp"
    mkfs.vfat -F 16 -n ESP -C "$esp" $((32 * 1024)) >/dev/null
    grub-mkimage -O x86_64-efi -o "$efi" -p '(hd0,gpt3)/boot/grub' part_gpt fat ext2 normal
    mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/EFI/debian
    mcopy -i "$esp" "$efi" ::/EFI/BOOT/BOOTX64.EFI
    mcopy -i "$esp" "$efi" ::/EFI/debian/grubx64.efi
    dd if="$esp" of="$d" bs=1M seek=2 conv=notrunc status=none
    boot_fs "$WORK/boot.ext4" 100M
    dd if="$WORK/boot.ext4" of="$d" bs=1M seek=34 conv=notrunc status=none
    grub_bios "$d" 2048 '(hd0,gpt3)/boot/grub' part_gpt
    mv "$d" hybrid.img
fi

# extlinux on an MBR disk: installed into the mounted filesystem by extlinux itself. Through a
# loop device with --offset, extlinux cannot learn the partition's start, so the volume boot
# record's hidden-sectors field (0x1c) is set to it afterwards, as on a real partition.
if [ ! -s extlinux-mbr.img ]; then
    d=$WORK/extlinux-mbr.img
    truncate -s 128M "$d"
    printf 'label: dos\nstart=2048, size=204800, type=83, bootable\n' | sfdisk -q "$d" >/dev/null
    r=$WORK/extfs
    rm -rf "$r"
    mkdir -p "$r/boot/extlinux"
    cp vmlinuz initrd.img "$r/boot/"
    printf 'SERIAL 0 115200\nDEFAULT linux\nTIMEOUT 1\nLABEL linux\n  KERNEL /boot/vmlinuz\n  APPEND console=ttyS0 panic=-1 initrd=/boot/initrd.img\n' \
        > "$r/boot/extlinux/extlinux.conf"
    # Syslinux 6.04 fails to read ext4 extents written by mkfs -d ("I/O error"): ext3 it reads.
    mkfs.ext4 -q -F -t ext3 -d "$r" "$WORK/ext.ext4" 100M >/dev/null 2>&1
    dd if="$WORK/ext.ext4" of="$d" bs=1M seek=1 conv=notrunc status=none
    LOOP=$(losetup -f --show --offset $((2048 * 512)) --sizelimit $((204800 * 512)) "$d")
    MNT=$WORK/mnt
    mkdir -p "$MNT"
    mount "$LOOP" "$MNT"
    extlinux --install "$MNT/boot/extlinux" >/dev/null 2>&1
    umount "$MNT"; MNT=""
    losetup -d "$LOOP"; LOOP=""
    patch_le "$d" $((2048 * 512 + 0x1c)) 4 2048
    dd if=/usr/lib/syslinux/mbr/mbr.bin of="$d" bs=440 count=1 conv=notrunc status=none
    mv "$d" extlinux-mbr.img
fi
echo "$OUT"
