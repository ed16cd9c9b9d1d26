#!/usr/bin/env bash
# Builds the rescue image into rescue-image/out/ from Debian packages (apt) and the static
# `restore` binary: vmlinuz, initrd.img, restore-rescue.iso (hybrid, BIOS + UEFI, USB or CD)
# and pxe/ (kernel, initrd, iPXE script, pxelinux). Reproducible: file dates are pinned to
# SOURCE_DATE_EPOCH (default: the last commit's date) and archives are sorted.
#
#   rescue-image/build.sh [--out DIR] [--cmdline "restore.auto=apply ..."] [--binary PATH]
#                         [--trust KEY.pub ...]
#
# --cmdline bakes extra kernel options into the default boot entry (unattended use).
# --trust (repeatable) builds in public keys: inside the image, only snapshots signed by one
# of them are restored (RESTORE_TRUST), unless restore.trust= on the kernel command line adds
# more.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
OUT=$HERE/out
CMDLINE_EXTRA=""
BIN=""
TRUST=()
while [ $# -gt 0 ]; do
    case $1 in
        --out) OUT=$(realpath -m "$2"); shift 2 ;;
        --cmdline) CMDLINE_EXTRA=$2; shift 2 ;;
        --binary) BIN=$(realpath "$2"); shift 2 ;;
        --trust) TRUST+=("$(realpath "$2")"); shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
. "$ROOT/scripts/deps.sh"
ensure_commands grub-mkrescue:grub-common /usr/lib/grub/i386-pc/boot.img:grub-pc-bin \
    /usr/lib/grub/x86_64-efi/normal.mod:grub-efi-amd64-bin xorriso:xorriso mformat:mtools \
    busybox:busybox-static cpio:cpio depmod:kmod /usr/lib/PXELINUX/pxelinux.0:pxelinux \
    /usr/lib/syslinux/modules/bios/ldlinux.c32:syslinux-common
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 1700000000)}
[ -n "$BIN" ] || BIN=$(bash "$ROOT/scripts/build-static.sh")
CONSOLE="console=tty0 console=ttyS0,115200"
mkdir -p "$OUT/cache"
WORK=$(mktemp -d "$OUT/.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# The Debian kernel and its modules.
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$pkg" ]; then
    apt-get update -qq >/dev/null
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
fi
if [ ! -d "$OUT/cache/$pkg" ]; then
    (cd "$WORK" && apt-get download -qq "$pkg" 2>/dev/null && dpkg -x ./*.deb "$OUT/cache/$pkg.tmp")
    mv "$OUT/cache/$pkg.tmp" "$OUT/cache/$pkg"
fi
K=$OUT/cache/$pkg
KVER=$(ls "$K/lib/modules")
depmod -b "$K" "$KVER"

# The initramfs: busybox, restore, init, the modules from modules.txt and their dependencies.
R=$WORK/initrd
mkdir -p "$R"/{bin,dev,etc/rescue,proc,sys,run,tmp,mnt,root,usr/share/udhcpc,lib/modules/$KVER}
cp /bin/busybox "$R/bin/busybox"
cp "$BIN" "$R/bin/restore"
# Man pages and completions from the CLI definition; `man` pages through `restore --help`,
# since busybox has no man reader (rescue-image/man).
mkdir -p "$R/usr/share/man/man1" "$R/usr/share/bash-completion/completions"
"$BIN" man "$R/usr/share/man/man1" >/dev/null
"$BIN" completions bash > "$R/usr/share/bash-completion/completions/restore"
install -m 755 "$HERE/man" "$R/bin/man"
# /init becomes busybox init (PID 1 for good), which runs setup once, then shells.
install -m 755 "$HERE/init" "$R/init"
install -m 755 "$HERE/setup" "$HERE/shutdown" "$R/etc/rescue/"
install -m 644 "$HERE/lib.sh" "$R/etc/rescue/lib.sh"
install -m 644 "$HERE/profile" "$R/etc/profile"
# udhcpc's hook at busybox's default paths (Debian's and upstream's): a plain `udhcpc`
# typed at the shell configures what it leases.
mkdir -p "$R/etc/udhcpc"
install -m 755 "$HERE/udhcpc.script" "$R/etc/udhcpc/default.script"
install -m 755 "$HERE/udhcpc.script" "$R/usr/share/udhcpc/default.script"
# Trusted signing keys, the image's default RESTORE_TRUST.
mkdir -p "$R/etc/restore/trust"
for k in "${TRUST[@]}"; do
    grep -q "^RW" "$k" || { echo "--trust $k: not a minisign public key" >&2; exit 2; }
    install -m 644 "$k" "$R/etc/restore/trust/$(basename "$k")"
done
mknod -m 600 "$R/dev/console" c 5 1
wanted=$(grep -v '^#' "$HERE/modules.txt" | tr ' ' '\n' | grep -v '^$')
python3 - "$K/lib/modules/$KVER" "$R/lib/modules/$KVER" $wanted > "$R/etc/rescue-modules" <<'PY'
import os, shutil, sys
src, dst, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
deps = {}
for line in open(os.path.join(src, "modules.dep")):
    path, _, rest = line.partition(":")
    deps[path] = rest.split()
by_name = {os.path.basename(p).split(".ko")[0].replace("-", "_"): p for p in deps}
builtin = {os.path.basename(l.strip()).split(".ko")[0].replace("-", "_")
           for l in open(os.path.join(src, "modules.builtin"))}
keep, order = set(), []
def add(path):
    if path in keep:
        return
    keep.add(path)
    for d in deps[path]:
        add(d)
for w in wanted:
    n = w.replace("-", "_")
    if n in by_name:
        add(by_name[n]); order.append(w)
    elif n not in builtin:
        print(f"warning: module {w} not found in the kernel package", file=sys.stderr)
for p in sorted(keep):
    os.makedirs(os.path.join(dst, os.path.dirname(p)), exist_ok=True)
    shutil.copy2(os.path.join(src, p), os.path.join(dst, p))
with open(os.path.join(dst, "modules.dep"), "w") as f:
    for p in sorted(keep):
        f.write(f"{p}: {' '.join(deps[p])}\n")
for name in ("modules.builtin", "modules.order"):
    shutil.copy2(os.path.join(src, name), os.path.join(dst, name))
print("\n".join(order))
PY
find "$R" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$R" && find . -print0 | LC_ALL=C sort -z | cpio -o -0 -H newc -R 0:0 --reproducible --quiet | gzip -9 -n) > "$WORK/initrd.img"
cp "$K/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
mkdir -p "$OUT"
install -m 644 "$WORK/vmlinuz" "$OUT/vmlinuz"
install -m 644 "$WORK/initrd.img" "$OUT/initrd.img"

# The hybrid ISO: GRUB for BIOS (El Torito + MBR) and UEFI (EFI image), menus on serial too.
I=$WORK/iso
mkdir -p "$I/boot/grub"
cp "$OUT/vmlinuz" "$OUT/initrd.img" "$I/boot/"
case $CMDLINE_EXTRA in
    *"'"*) echo "--cmdline: single quotes are not supported" >&2; exit 2 ;;
esac
# One menu, drawn once: on the firmware's console only. Serial redirection (a BMC's
# serial-over-LAN, qemu -nographic) copies that console to the serial line; a second GRUB
# terminal on the serial port draws every screen there twice. The entries are short enough
# to edit on an 80-column serial console (`e`, Ctrl-E at the end of the linux line, type,
# Ctrl-X); the long kernel options are in options.cfg.
cat > "$I/boot/grub/options.cfg" <<CFG
# Kernel options of the rescue entries in grub.cfg (restore.* options: docs/rescue-image.md).
set con="$CONSOLE"
set opts='$CMDLINE_EXTRA'
CFG
cat > "$I/boot/grub/grub.cfg" <<'CFG'
terminal_input console
terminal_output console
set timeout=3
set default=0
source /boot/grub/options.cfg
menuentry "Rescue system" {
    linux /boot/vmlinuz $con $opts
    initrd /boot/initrd.img
}
menuentry "Rescue system, network by DHCP" {
    linux /boot/vmlinuz $con ip=dhcp $opts
    initrd /boot/initrd.img
}
CFG
if [ -n "$CMDLINE_EXTRA" ]; then
    cat >> "$I/boot/grub/grub.cfg" <<'CFG'
menuentry "Rescue system without the built-in options" {
    linux /boot/vmlinuz $con
    initrd /boot/initrd.img
}
CFG
fi
find "$I" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
# Pinned volume dates and UUID, a GPT disk GUID derived from them, and a fixed serial for the
# EFI image's FAT (grub-mkrescue runs mformat, which picks a random one) make the ISO reproducible.
mkdir -p "$WORK/bin"
printf '#!/bin/sh\nexec %s -N %08x "$@"\n' "$(command -v mformat)" "$((SOURCE_DATE_EPOCH & 0xffffffff))" > "$WORK/bin/mformat"
chmod +x "$WORK/bin/mformat"
PATH="$WORK/bin:$PATH" grub-mkrescue -o "$WORK/restore-rescue.iso" "$I" -- \
    -volume_date all_file_dates ="$SOURCE_DATE_EPOCH" \
    -volume_date uuid "$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d%H%M%S00)" \
    -boot_image any gpt_disk_guid=volume_date_uuid >/dev/null 2>&1
install -m 644 "$WORK/restore-rescue.iso" "$OUT/restore-rescue.iso"

# PXE: the same kernel and initrd, an iPXE script and a pxelinux configuration.
P=$OUT/pxe
rm -rf "$P"
mkdir -p "$P/pxelinux.cfg"
cp "$OUT/vmlinuz" "$OUT/initrd.img" "$P/"
cp /usr/lib/PXELINUX/pxelinux.0 /usr/lib/syslinux/modules/bios/ldlinux.c32 "$P/"
cat > "$P/boot.ipxe" <<IPXE
#!ipxe
kernel vmlinuz $CONSOLE ip=dhcp $CMDLINE_EXTRA
initrd initrd.img
boot
IPXE
cat > "$P/pxelinux.cfg/default" <<PXE
SERIAL 0 115200
DEFAULT restore
LABEL restore
  KERNEL vmlinuz
  APPEND initrd=initrd.img $CONSOLE ip=dhcp $CMDLINE_EXTRA
PXE
find "$P" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
ls -l "$OUT/vmlinuz" "$OUT/initrd.img" "$OUT/restore-rescue.iso" | awk '{print $5, $9}' >&2
echo "$OUT"
