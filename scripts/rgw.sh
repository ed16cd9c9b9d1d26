#!/usr/bin/env bash
# A throwaway single-node Ceph cluster with a RADOS Gateway (S3) on 127.0.0.1, for the RGW
# tests (tests/rgw.rs) and scripts/bench-remote.sh. Everything it makes (config, data, logs,
# pid files, sockets) lives under DIR; it never reads or writes /etc/ceph or /var/lib/ceph.
#
#   scripts/rgw.sh start DIR   one monitor, one memstore OSD (pool size 1), radosgw (beast) on
#                              a free loopback port, an S3 user with fixed keys and a bucket
#                              "backups"; waits until a bucket can be created (RGW_DEADLINE
#                              seconds, default 90), prints how long that took
#   scripts/rgw.sh env DIR     the endpoint and credentials as shell assignments
#   scripts/rgw.sh stop DIR    kills what start started (its pid files); safe to repeat
#
# With RGW_OWNER_PID=PID, start also leaves a watcher that stops the cluster when that process
# is gone: a test killed before its guard could run `stop` leaves no daemons behind.
#
# No cephx: the cluster listens on loopback only and lives for one test run. The OSD keeps
# its objects in memory (memstore), so stopping the cluster drops every object.
set -euo pipefail

# The keys tests/common/servers.rs's s3_env() gives every S3 test.
ACCESS_KEY=restore-test
SECRET_KEY=restore-test-secret
BUCKET=backups
ME=$(cd "$(dirname "$0")" && pwd)

usage() {
    echo "usage: $0 start|stop|env DIR" >&2
    exit 2
}
[ $# -eq 2 ] || usage
CMD=$1
mkdir -p "$2"
DIR=$(cd "$2" && pwd)
CONF=$DIR/ceph.conf

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Every ceph tool is pointed at our config explicitly, so a system /etc/ceph is never read.
ceph_cli() { timeout 30 ceph --conf "$CONF" "$@"; }

# Signals every process with a pid file under DIR/run, then waits for them to go.
stop_all() {
    local f pid pids=()
    for f in "$DIR"/run/*.pid; do
        [ -e "$f" ] || continue
        pid=$(cat "$f" 2>/dev/null || true)
        # Only a process that is still one we started (its command line names our config, or
        # it is our watcher) is signalled: a stale pid file must not kill a stranger that
        # reused the pid. The watcher itself runs this when its owner is gone.
        if [ -n "$pid" ] && [ "$pid" != $$ ] &&
            { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -e "$CONF" -e "rgw.sh watch $DIR"; then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
        rm -f "$f"
    done
    [ ${#pids[@]} -eq 0 ] && return 0
    # Daemons take 1-2 s to stop on SIGTERM; memstore loses nothing worth waiting for after 3 s.
    for _ in $(seq 30); do
        local alive=0
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        [ $alive -eq 0 ] && return 0
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}

fail() {
    echo "rgw.sh: $*" >&2
    local log
    for log in "$DIR"/log/*.log; do
        [ -e "$log" ] || continue
        echo "--- last lines of $log" >&2
        tail -n 25 "$log" >&2
    done
    stop_all
    exit 1
}

# An S3 request signed with the test user's keys (curl's SigV4), printing the HTTP status.
s3_status() {
    local method=$1 path=$2 endpoint
    endpoint=$(sed -n 's/^RGW_ENDPOINT=//p' "$DIR/env")
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X "$method" \
        --aws-sigv4 "aws:amz:us-east-1:s3" --user "$ACCESS_KEY:$SECRET_KEY" \
        -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
        "$endpoint/$path" || true
}

start() {
    . "$ME/deps.sh"
    ensure_ceph
    stop_all
    # A fresh cluster every time: memstore data does not outlive its OSD anyway.
    rm -rf "$DIR/mon" "$DIR/osd" "$DIR/rgw" "$DIR/log" "$DIR/run" "$DIR/env"
    mkdir -p "$DIR/mon" "$DIR/osd" "$DIR/rgw" "$DIR/log" "$DIR/run"
    local t0 mon_port rgw_port fsid uuid status
    t0=$(date +%s.%N)
    local deadline=$(( $(date +%s) + ${RGW_DEADLINE:-90} ))
    mon_port=$(free_port)
    rgw_port=$(free_port)
    fsid=$(python3 -c 'import uuid; print(uuid.uuid4())')
    cat >"$CONF" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
mon initial members = a
public addr = 127.0.0.1
public network = 127.0.0.0/8
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
run dir = $DIR/run
pid file = $DIR/run/\$name.pid
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
keyring = $DIR/keyring
crash dir = $DIR/crash
client mount timeout = 30
log to stderr = false
err to stderr = false
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd pool default pg num = 4
osd pool default pgp num = 4
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
osd crush chooseleaf type = 0
# Propose map changes at once: each pool radosgw creates is a new OSD map.
paxos propose interval = 0.1
[mon]
mon data = $DIR/mon/\$cluster-\$id
[osd]
osd data = $DIR/osd/\$cluster-\$id
osd objectstore = memstore
memstore device bytes = 8589934592
osd max object size = 134217728
[client.rgw.a]
# radosgw's built-in defaults ask for a secure (cephx-only) monitor session.
ms mon client mode = crc
rgw data = $DIR/rgw
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw dns name = 127.0.0.1
EOF
    {
        echo "RGW_ENDPOINT=http://127.0.0.1:$rgw_port"
        echo "AWS_ENDPOINT_URL=http://127.0.0.1:$rgw_port"
        echo "AWS_ACCESS_KEY_ID=$ACCESS_KEY"
        echo "AWS_SECRET_ACCESS_KEY=$SECRET_KEY"
        echo "AWS_REGION=us-east-1"
        echo "RGW_BUCKET=$BUCKET"
    } >"$DIR/env"

    monmaptool --create --clobber --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" \
        "$DIR/monmap" >"$DIR/log/setup.log" 2>&1 || fail "monmaptool failed"
    ceph-mon --conf "$CONF" --mkfs -i a --monmap "$DIR/monmap" >>"$DIR/log/setup.log" 2>&1 ||
        fail "ceph-mon --mkfs failed"
    timeout 60 ceph-mon --conf "$CONF" -i a </dev/null >>"$DIR/log/setup.log" 2>&1 || fail "ceph-mon did not start"

    uuid=$(python3 -c 'import uuid; print(uuid.uuid4())')
    local id
    id=$(ceph_cli osd new "$uuid" 2>>"$DIR/log/setup.log") || fail "ceph osd new failed (monitor not answering?)"
    mkdir -p "$DIR/osd/ceph-$id"
    ceph-osd --conf "$CONF" -i "$id" --mkfs --osd-uuid "$uuid" >>"$DIR/log/setup.log" 2>&1 ||
        fail "ceph-osd --mkfs failed"
    timeout 60 ceph-osd --conf "$CONF" -i "$id" </dev/null >>"$DIR/log/setup.log" 2>&1 || fail "ceph-osd did not start"

    until ceph_cli osd dump 2>/dev/null | grep -q "^osd.$id up"; do
        [ "$(date +%s)" -lt "$deadline" ] || fail "osd.$id not up within ${RGW_DEADLINE:-90} s"
        sleep 0.5
    done
    timeout 60 radosgw-admin --conf "$CONF" user create --uid restore --display-name "restore tests" \
        --access-key "$ACCESS_KEY" --secret "$SECRET_KEY" >/dev/null 2>>"$DIR/log/setup.log" ||
        fail "radosgw-admin user create failed"
    timeout 60 radosgw --conf "$CONF" -n client.rgw.a </dev/null >>"$DIR/log/setup.log" 2>&1 || fail "radosgw did not start"

    until status=$(s3_status PUT "$BUCKET") && [ "$status" = 200 ]; do
        [ "$(date +%s)" -lt "$deadline" ] ||
            fail "RGW did not create bucket $BUCKET within ${RGW_DEADLINE:-90} s (last HTTP status: $status)"
        sleep 0.5
    done
    if [ -n "${RGW_OWNER_PID:-}" ]; then
        setsid bash "$ME/rgw.sh" watch "$DIR" </dev/null >>"$DIR/log/watch.log" 2>&1 &
        echo $! >"$DIR/run/watch.pid"
    fi
    echo "RGW up at http://127.0.0.1:$rgw_port (bucket $BUCKET) in $(python3 -c "import time; print(f'{time.time() - $t0:.1f}')") s"
}

case $CMD in
    start) start ;;
    stop) stop_all ;;
    env)
        [ -f "$DIR/env" ] || { echo "rgw.sh: no cluster in $DIR (run start first)" >&2; exit 1; }
        cat "$DIR/env"
        ;;
    watch)
        # Internal (see RGW_OWNER_PID above).
        while kill -0 "$RGW_OWNER_PID" 2>/dev/null; do sleep 1; done
        echo "owner $RGW_OWNER_PID is gone: stopping the cluster"
        stop_all
        ;;
    *) usage ;;
esac
