#!/usr/bin/env bash
# Full-restore throughput of one 1 GiB image from three stores, in one run: a local
# directory, the same directory served by python's http.server, and moto_server (S3), all
# on this machine (127.0.0.1). Usage: scripts/bench-remote.sh [WORKDIR]; JOBS=16 by default.
# Each restore goes onto a fresh blank target with a cold page cache (needs root for
# drop_caches; without it the figures are warm-cache ones and the script says so).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
ensure_rust
ensure_commands sgdisk:gdisk mkfs.ext4:e2fsprogs cmp:diffutils
ensure_python_servers
cargo build --release --locked --quiet
R=$PWD/target/release/restore
W=${1:-$(mktemp -d /tmp/restore-bench.XXXXXX)}
JOBS=${JOBS:-16}
mkdir -p "$W"
cd "$W"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$1))" 2>/dev/null && return 0; sleep 0.1; done; return 1; }
cold() {
    sync
    if [ -w /proc/sys/vm/drop_caches ]; then echo 3 >/proc/sys/vm/drop_caches; else echo "(warm cache: not root)"; fi
}
now() { date +%s.%N; }

if [ ! -f disk.img ]; then
    echo "== making a 1 GiB GPT disk: BIOS boot + ext4 holding ~620 MiB (400 MiB random, ~220 MiB text)"
    rm -rf rootfs && mkdir -p rootfs/etc rootfs/data
    echo web-3 >rootfs/etc/hostname
    head -c 400M /dev/urandom >rootfs/data/random.bin
    seq 1 25000000 >rootfs/data/numbers.txt
    truncate -s 1G disk.img
    sgdisk -n1:2048:+1M -t1:ef02 -n2:0:0 -t2:8300 -c2:root disk.img >/dev/null
    mkfs.ext4 -q -F -d rootfs root.ext4 1000M
    dd if=root.ext4 of=disk.img bs=1M seek=2 conv=notrunc status=none
    head -c 60K /dev/urandom | dd of=disk.img bs=1M seek=1 conv=notrunc status=none
    rm -rf rootfs root.ext4
fi

rm -rf store
echo "== capture into a local directory"
"$R" capture --store store --host web-3 --no-progress disk.img >/dev/null

HTTP_PORT=$(free_port)
python3 -m http.server --bind 127.0.0.1 --directory store "$HTTP_PORT" >http.log 2>&1 &
PIDS+=($!)
S3_PORT=$(free_port)
moto_server -H 127.0.0.1 -p "$S3_PORT" >moto.log 2>&1 &
PIDS+=($!)
wait_port "$HTTP_PORT" && wait_port "$S3_PORT"
python3 -c "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:$S3_PORT/backups', method='PUT'))"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
echo "== capture into S3 (moto_server)"
t0=$(now)
"$R" capture --store s3://backups/fleet --host web-3 --no-progress disk.img >/dev/null
echo "capture into S3: $(python3 -c "print(f'{$(now) - $t0:.1f}')") s"

rm -f probe.img && truncate -s 1G probe.img
FETCH=$("$R" plan --store store --json --no-progress probe.img |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["totals"]["bytes_to_fetch"])')
rm -f probe.img
echo "a full restore onto a blank disk fetches $((FETCH / 1048576)) MiB of the 1024 MiB disk"
printf '\n%-28s %10s %14s %14s\n' "store" "seconds" "disk MiB/s" "fetched MiB/s"
for store in store "http://127.0.0.1:$HTTP_PORT" s3://backups/fleet; do
    rm -f target.img && truncate -s 1G target.img
    cold
    t0=$(now)
    "$R" apply --store "$store" --yes --no-progress --jobs "$JOBS" target.img >apply.log
    t1=$(now)
    cmp -s disk.img target.img || { echo "restore from $store differs!" >&2; exit 1; }
    python3 -c "d=$t1-$t0; print(f'{\"$store\".replace(\"127.0.0.1:$HTTP_PORT\",\"127.0.0.1\"):<28} {d:10.2f} {1024/d:14.0f} {$FETCH/1048576/d:14.0f}')"
done
echo
echo "(each: restore apply --store S --yes --jobs $JOBS onto a blank 1 GiB file; plan + fetch + verify + write + flush)"
