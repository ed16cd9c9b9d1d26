#!/usr/bin/env bash
# The demo on the embedded default (a local-directory store): builds restore, makes a sample
# server disk, captures it, damages a copy the way the incident did (boot code, BIOS boot
# partition, GPT header, a few MiB of the root filesystem), plans and applies the repair,
# and shows that the result equals the original.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
ensure_rust
ensure_commands sgdisk:gdisk mkfs.ext4:e2fsprogs cmp:diffutils
cargo build --release --locked --quiet
R=$PWD/target/release/restore
W=${1:-$(mktemp -d /tmp/restore-demo.XXXXXX)}
mkdir -p "$W"
cd "$W"
rm -rf store disk.img damaged.img rootfs root.ext4 plan.json

echo "== making a sample server disk in $W/disk.img (GPT: BIOS boot, ext4 root, swap, data)"
truncate -s 512M disk.img
sgdisk -n1:2048:+1M -t1:ef02 -c1:bios -n2:0:+300M -t2:8300 -c2:root -n3:0:+64M -t3:8200 -c3:swap \
       -n4:0:0 -t4:8300 -c4:data disk.img >/dev/null
mkdir -p rootfs/etc rootfs/usr/bin
echo web-3 > rootfs/etc/hostname
cp /bin/ls /bin/cp /bin/tar rootfs/usr/bin/ 2>/dev/null || true
seq 1 400000 > rootfs/etc/numbers.txt
head -c 40M /dev/urandom > rootfs/random.bin
mkfs.ext4 -q -F -d rootfs root.ext4 300M
dd if=root.ext4 of=disk.img bs=1M seek=2 conv=notrunc status=none
head -c 440 /dev/urandom | dd of=disk.img conv=notrunc status=none           # boot code
head -c 60K /dev/urandom | dd of=disk.img bs=1M seek=1 conv=notrunc status=none # core image

echo "== capture"
"$R" capture --store store --host web-3 disk.img
"$R" snapshots --store store

echo "== damage a copy: boot code, BIOS boot partition, GPT primary header, the root fs superblock and inode tables (3 MiB)"
cp disk.img damaged.img
dd if=/dev/zero of=damaged.img bs=440 count=1 conv=notrunc status=none
dd if=/dev/urandom of=damaged.img bs=1M seek=1 count=1 conv=notrunc status=none
dd if=/dev/zero of=damaged.img bs=512 seek=1 count=1 conv=notrunc status=none
dd if=/dev/urandom of=damaged.img bs=1M seek=2 count=3 conv=notrunc status=none

echo "== plan (read-only)"
"$R" plan --store store -o plan.json damaged.img
echo "== apply"
"$R" apply --yes plan.json
echo "== a fresh plan shows nothing to do"
"$R" plan --store store --detailed-exitcode damaged.img >/dev/null && echo "nothing to do"
cmp disk.img damaged.img
echo "demo ok: the repaired disk equals the original, byte for byte ($W)"
