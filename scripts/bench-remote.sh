#!/usr/bin/env bash
# Full-restore throughput of one 1 GiB image from four stores, in one run: a local directory,
# the same directory served by python's http.server, moto_server (S3) and a Ceph RADOS
# Gateway (S3, a single-node memstore cluster from scripts/rgw.sh), all on this machine
# (127.0.0.1). Usage: scripts/bench-remote.sh [WORKDIR]; JOBS=16 and RUNS=2 by default.
# Each server is also measured without restore: the same chunk objects the restore reads,
# fetched by plain parallel GETs (curl --parallel --parallel-max JOBS, SigV4-signed for S3),
# so restore's rate is compared with what that server delivers in the same run.
# PIN=1 runs the servers on the last core and curl and restore on the others (taskset), as
# on two machines, so a server does not compete with its client for the same cores.
# BIN=PATH measures that restore binary (bench-all.sh passes the static one that ships);
# without it, `cargo build --release` here.
# Every run starts with a cold page cache (needs root for drop_caches; without it the
# figures are warm-cache ones and the script says so); a restore goes onto a fresh blank
# target and is compared with the original.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
ensure_rust
ensure_commands sgdisk:gdisk mkfs.ext4:e2fsprogs cmp:diffutils curl:curl
ensure_python_servers
ensure_ceph
if [ -n "${BIN:-}" ]; then
    R=$(realpath "$BIN")
else
    cargo build --release --locked --quiet
    R=$PWD/target/release/restore
fi
RGW_SH=$PWD/scripts/rgw.sh
W=${1:-$(mktemp -d /tmp/restore-bench.XXXXXX)}
JOBS=${JOBS:-16}
RUNS=${RUNS:-2}
SERVER_CPU=() CLIENT_CPU=()
if [ "${PIN:-0}" = 1 ]; then
    n=$(nproc)
    [ "$n" -ge 2 ] || { echo "PIN=1 needs at least 2 cores" >&2; exit 1; }
    SERVER_CPU=(taskset -c $((n - 1)))
    CLIENT_CPU=(taskset -c 0-$((n - 2)))
fi
mkdir -p "$W"
cd "$W"
W=$PWD
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    bash "$RGW_SH" stop "$W/rgw" || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$1))" 2>/dev/null && return 0; sleep 0.1; done; return 1; }
cold() {
    sync
    if [ -w /proc/sys/vm/drop_caches ]; then echo 3 >/proc/sys/vm/drop_caches; else echo "(warm cache: not root)"; fi
}
now() { date +%s.%N; }
# Connections the kernel dropped because a listener's accept queue was full (each waits a 1 s
# SYN retransmit): python's http.server listens with a backlog of 5.
overflows() { awk '/^TcpExt:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "ListenOverflows") c = i; h = 1 } else print $c }' /proc/net/netstat; }

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
"${SERVER_CPU[@]}" python3 -m http.server --bind 127.0.0.1 --directory store "$HTTP_PORT" >http.log 2>&1 &
PIDS+=($!)
S3_PORT=$(free_port)
"${SERVER_CPU[@]}" moto_server -H 127.0.0.1 -p "$S3_PORT" >moto.log 2>&1 &
PIDS+=($!)
wait_port "$HTTP_PORT" && wait_port "$S3_PORT"
python3 -c "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:$S3_PORT/backups', method='PUT'))"
echo "== start a Ceph RADOS Gateway (scripts/rgw.sh)"
RGW_OWNER_PID=$$ "${SERVER_CPU[@]}" bash "$RGW_SH" start "$W/rgw"
RGW_ENDPOINT=$(bash "$RGW_SH" env "$W/rgw" | sed -n 's/^RGW_ENDPOINT=//p')
RGW_KEY=$(bash "$RGW_SH" env "$W/rgw" | sed -n 's/^AWS_ACCESS_KEY_ID=//p')
RGW_SECRET=$(bash "$RGW_SH" env "$W/rgw" | sed -n 's/^AWS_SECRET_ACCESS_KEY=//p')

# The S3 variables for each server: NAME -> endpoint, key, secret.
s3_env() {
    case $1 in
        moto) echo "http://127.0.0.1:$S3_PORT bench bench" ;;
        rgw) echo "$RGW_ENDPOINT $RGW_KEY $RGW_SECRET" ;;
    esac
}
with_s3() {
    local endpoint key secret
    read -r endpoint key secret <<<"$(s3_env "$1")"
    shift
    AWS_ENDPOINT_URL=$endpoint AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret AWS_REGION=us-east-1 "$@"
}
for server in moto rgw; do
    echo "== capture into S3 ($server)"
    t0=$(now)
    with_s3 "$server" "$R" capture --store s3://backups/fleet --host web-3 --no-progress disk.img >/dev/null
    echo "capture into S3 ($server): $(python3 -c "print(f'{$(now) - $t0:.1f}')") s"
done

rm -f probe.img && truncate -s 1G probe.img
PLAN=$("$R" plan --store store --json --no-progress probe.img)
FETCH=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["totals"]["bytes_to_fetch"])' <<<"$PLAN")
NFETCH=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["totals"]["chunks_to_fetch"])' <<<"$PLAN")
rm -f probe.img
# The objects a full restore GETs, as the web server saw them in one restore (not timed):
# every chunk object, a few twice (the plan also reads those holding tables and boot regions).
rm -f target.img && truncate -s 1G target.img
seen=$(wc -l <http.log)
"$R" apply --store "http://127.0.0.1:$HTTP_PORT" --yes --no-progress --jobs "$JOBS" target.img >/dev/null 2>probe.log
# (Not the shard index pages, chunks/xx/, the plan reads from a web server instead of a
# HEAD per chunk: the GET baseline is the chunk objects alone.)
tail -n +$((seen + 1)) http.log | sed -n 's|.*"GET /\(chunks/[^ ]*[^/ ]\) HTTP/[0-9.]*" 200 .*|\1|p' >chunks.txt
NOBJ=$(wc -l <chunks.txt)
OBJ_BYTES=$(cd store && xargs stat -c %s <../chunks.txt | awk '{s+=$1} END {print s}')
echo "a full restore onto a blank disk writes $NFETCH chunks from the store ($((FETCH / 1048576)) MiB of the 1024 MiB disk);"
echo "it GETs $NOBJ chunk objects ($((OBJ_BYTES / 1048576)) MiB; the plan also reads the chunks holding tables and boot regions)"

# curl config: one URL per chunk object, bodies to /dev/null, the HTTP status of each on stdout.
url_list() {
    local base=$1
    while read -r key; do
        printf 'url = "%s/%s"\noutput = "/dev/null"\n' "$base" "$key"
    done <chunks.txt
}
url_list "http://127.0.0.1:$HTTP_PORT" >urls-http.cfg
url_list "http://127.0.0.1:$S3_PORT/backups/fleet" >urls-moto.cfg
url_list "$RGW_ENDPOINT/backups/fleet" >urls-rgw.cfg

# Seconds for plain parallel GETs of every chunk object from SERVER; fails unless all are 200.
get_all() {
    local server=$1 jobs=${2:-$JOBS} sign=() endpoint key secret t0 t1 ok o0
    if [ "$server" != http ]; then
        read -r endpoint key secret <<<"$(s3_env "$server")"
        sign=(--aws-sigv4 "aws:amz:us-east-1:s3" --user "$key:$secret"
            -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    fi
    cold >&2
    o0=$(overflows)
    t0=$(now)
    "${CLIENT_CPU[@]}" curl -s --no-progress-meter --parallel --parallel-max "$jobs" "${sign[@]}" -w '%{http_code}\n' -K "urls-$server.cfg" >gets.txt 2>curl.err
    t1=$(now)
    ok=$(grep -c '^200$' gets.txt || true)
    [ "$ok" -eq "$NOBJ" ] || { echo "GETs from $server: $ok of $NOBJ answered 200" >&2; exit 1; }
    echo "$(python3 -c "print(f'{$t1 - $t0:.3f}')") $(($(overflows) - o0))"
}

# Seconds for a full restore from SERVER onto a blank target (checked with cmp), and of them
# the seconds apply spent fetching and writing (after its plan).
restore_all() {
    local server=$1 store t0 t1 o0
    case $server in
        local) store=store ;;
        http) store=http://127.0.0.1:$HTTP_PORT ;;
        *) store=s3://backups/fleet ;;
    esac
    rm -f target.img && truncate -s 1G target.img
    cold >&2
    o0=$(overflows)
    t0=$(now)
    if [ "$server" = local ] || [ "$server" = http ]; then
        "${CLIENT_CPU[@]}" "$R" apply --store "$store" --yes --no-progress --jobs "$JOBS" target.img >apply.log 2>apply.err
    else
        with_s3 "$server" "${CLIENT_CPU[@]}" "$R" apply --store "$store" --yes --no-progress --jobs "$JOBS" target.img >apply.log 2>apply.err
    fi
    t1=$(now)
    cmp -s disk.img target.img || { echo "restore from $server differs!" >&2; exit 1; }
    # End to end, and the fetch-and-write phase alone (apply's "Applied: ... in N s").
    echo "$(python3 -c "print(f'{$t1 - $t0:.3f}')") $(sed -n 's/^Applied: .* in \([0-9.]*\) s\.$/\1/p' apply.log) $(($(overflows) - o0))"
}

echo "load before the runs: $(uptime)"
[ "${PIN:-0}" = 1 ] && echo "PIN=1: servers on core $(($(nproc) - 1)), curl and restore on cores 0-$(($(nproc) - 2))"
declare -A LABEL=([local]="local directory" [http]="python http.server" [moto]="moto_server (S3)" [rgw]="Ceph RGW (S3)")
printf '\n%-20s %3s %6s %5s %9s %5s %9s %7s %7s %7s\n' "server" "run" "GET s" "drops" "restore s" "drops" "rest MiB/s" "ratio" "fetch s" "f.ratio"
row() { # LABEL RUN GET_S GET_DROPS RESTORE_S FETCH_S RESTORE_DROPS
    python3 - "$@" <<PY
import sys
label, run, g, gd, r, f, rd = sys.argv[1:8]
r, f = float(r), float(f or "nan")
mib = $OBJ_BYTES / 1048576
if g == "-":
    gs, ratio, fratio = "-", "-", "-"
else:
    gs, ratio, fratio = f"{float(g):.2f}", f"{float(g) / r:.2f}", f"{float(g) / f:.2f}"
print(f"{label:<20} {run:>3} {gs:>6} {gd:>5} {r:>9.2f} {rd:>5} {mib / r:>10.0f} {ratio:>7} {f:>7.2f} {fratio:>7}")
PY
}
for server in local http moto rgw; do
    for run in $(seq "$RUNS"); do
        g=- gd=- g6=- g6d=-
        [ "$server" = local ] || read -r g gd <<<"$(get_all "$server")"
        # A server that closes its connections gets 6 requests at once from restore: its
        # GETs at that concurrency too, to compare like with like.
        [ "$server" = http ] && read -r g6 g6d <<<"$(get_all http 6)"
        read -r r f rd <<<"$(restore_all "$server")"
        row "${LABEL[$server]}" "$run" "$g" "$gd" "$r" "$f" "$rd"
        [ "$server" = http ] && row "  (GETs 6 at once)" "$run" "$g6" "$g6d" "$r" "$f" "$rd"
    done
done
echo
echo "(MiB/s: the $((OBJ_BYTES / 1048576)) MiB of chunk objects ($NOBJ GETs) over the time. GET: curl --parallel"
echo " --parallel-max $JOBS, bodies discarded. restore: restore apply --store S --yes --jobs $JOBS onto a"
echo " blank 1 GiB file, end to end: plan (which chunks the store holds: an S3 listing, a web server's
 shard index pages) + fetch + verify + decompress + write + flush + read-back check."
echo " ratio = restore rate / GET rate. fetch s: apply's fetch-and-write phase and its checks (after
 its plan); f.ratio = GET s / fetch s. drops: connections the kernel dropped for a full accept
 queue (/proc/net/netstat ListenOverflows; each costs a 1 s SYN retransmit). Each run after
 drop_caches.)"
uptime
