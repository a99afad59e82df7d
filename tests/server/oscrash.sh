#!/usr/bin/env bash
# oscrash.sh — an OS crash, not only a process crash, under pipelined writes.
#
# kill -9 cannot catch a reply sent before its write was synced: the page
# cache keeps the write and the restarted berthd finds it. So berthd runs
# under disk_shim (LD_PRELOAD), which keeps the image of data.mdb that only
# synced writes reach. Each round: a pipelined burst on one connection must
# get every reply; then several clients stream writes while a WATCH client
# follows; berthd is killed with -9 mid-stream, the image is copied over
# data.mdb (what the disk holds after the OS went down), and berthd restarts
# on it. Every seq berthd acknowledged (burst included), every acknowledged
# refusal and every record the watcher saw must be there with its command
# and outcome, and JOURNAL.VERIFY must pass. Two rounds, on the same data.
# Then the disk dies: from some sync on, every sync fails with EIO. berthd
# must answer no write of the failed syncs as a success, stop, and after the
# OS crash that follows hold every write it did acknowledge.
# The LMDB road: every berthd here runs with --commit-log off, so a batch is
# acknowledged after LMDB's own syncs and data.mdb is all the disk the shim
# must model; the dead disk's expectations (the syncs it counts, what berthd
# logs) are LMDB's. With the commit log on, an OS crash must take
# commit.log's image too: oscrash_log.sh runs these rounds that way.
. "$(dirname "$0")/lib.sh"
IMAGE="$TMP/disk.mdb"
burst=3000             # pipelined commands on one connection
clients=4
per_client=3000        # more than a client can send before the kill
rounds=2
acked_before_kill=1200

# A sanitizer build's runtime must be the first library loaded, so it is
# preloaded ahead of the shim when berthd links one.
shim_preload
start_lmdb() { start_berthd --commit-log off "$@"; }
# No berthd of this test may have made a commit log: else it tested that road
# with a disk model that leaves commit.log out.
no_commit_log() { [ ! -e "$DATA/commit.log" ] || fail "$1: berthd made $DATA/commit.log on the LMDB road"; }

start_shimmed() {
    rm -f "$IMAGE"     # the shim starts the image from the data file as it is
    BERTH_SHIM_DATA="$DATA/data.mdb" BERTH_SHIM_DISK="$IMAGE" LD_PRELOAD="$PRELOAD" start_lmdb
}
os_crash() {
    kill9_berthd
    [ -s "$IMAGE" ] || fail "the disk image is empty: the shim saw no sync"
    cp "$IMAGE" "$DATA/data.mdb"
}
# commands ROUND NAME COUNT: a stream of writes with a REQID each; every
# fifth step releases an instance that never existed (a refusal).
commands() {
    local i
    for ((i = 0; i < $3 / 3; i++)); do
        echo "WORKER.ADD $2-$1-$i GPUS 2 REQID a$2-$1-$i"
        echo "DEPLOY i$2-$1-$i MODEL m BACKEND vllm ON $2-$1-$i REQID d$2-$1-$i"
        if ((i % 5 == 0)); then echo "RELEASE none$2-$1-$i REQID r$2-$1-$i"
        else echo "WORKER.CORDON $2-$1-$i REQID c$2-$1-$i"; fi
    done
}

for ((round = 1; round <= rounds; round++)); do
    start_shimmed
    # The burst: all of it written at once, every reply read back.
    commands "$round" b "$burst" >"$TMP/in.$round.b"
    { cat "$TMP/in.$round.b"; echo QUIT; } >"$TMP/burst.$round"
    nc_file "$TMP/burst.$round" | sed 's/^[:-]//' >"$TMP/burst_out.$round"
    [ "$(tail -n 1 "$TMP/burst_out.$round")" = "+OK" ] || fail "round $round: the burst's QUIT got no +OK"
    sed -i '$d' "$TMP/burst_out.$round"
    got=$(grep -c '' "$TMP/burst_out.$round")
    [ "$got" -eq "$burst" ] || fail "round $round: the pipelined burst got $got replies for $burst commands"
    ! grep -qE '^(ERR|IOERR|FULL)' "$TMP/burst_out.$round" \
        || fail "round $round: the burst got $(grep -m1 -E '^(ERR|IOERR|FULL)' "$TMP/burst_out.$round")"
    cp "$TMP/burst_out.$round" "$TMP/ack.$round.b"
    note "round $round: a pipelined burst of $burst commands got every reply"

    # The stream, a watcher, and the crash.
    watch_start "$round"
    pids=()
    for ((c = 0; c < clients; c++)); do
        commands "$round" "k$c" "$per_client" >"$TMP/in.$round.$c"
        r_stdin <"$TMP/in.$round.$c" >"$TMP/ack.$round.$c" 2>/dev/null &
        pids+=($!); bg_pids+=($!)
    done
    for ((i = 0; i < 400; i++)); do
        n=$(cat "$TMP"/ack.$round.[0-9]* | wc -l)
        [ "$n" -ge "$acked_before_kill" ] && break
        sleep 0.025
    done
    os_crash
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
    watch_end "$round"
    acked=$(cat "$TMP"/ack.$round.[0-9]* | wc -l)
    [ "$acked" -gt 0 ] || fail "round $round: no client got a reply before the crash"
    [ "$acked" -lt $((clients * per_client)) ] || fail "round $round: the crash came after every command"

    start_lmdb         # on the image, without the shim
    dump_journal >"$TMP/journal.$round"
    acked_pairs "$round" b $(seq 0 $((clients - 1))) >"$TMP/acked.$round"
    acked_check "round $round" "$TMP/journal.$round" "$TMP/acked.$round" >"$TMP/check.$round" \
        || fail "round $round, after the OS crash: $(head -n 10 "$TMP/check.$round")"
    note "$(tail -n 1 "$TMP/check.$round") after an OS crash"
    watched_durable "round $round" "$TMP/journal.$round" "$TMP/watched.$round"
    note "round $round: the $watched records a watcher saw survived the OS crash"
    expect_verify_ok "round $round: JOURNAL.VERIFY after the OS crash"
    stop_berthd
    no_commit_log "round $round"
done

# The disk dies mid-stream: the syncs after the first syncs_ok fail.
syncs_ok=400
BERTH_SHIM_SYNCS_OK=$syncs_ok start_shimmed
pids=()
for ((c = 0; c < clients; c++)); do
    commands dead "k$c" "$per_client" >"$TMP/in.dead.$c"
    r_stdin <"$TMP/in.dead.$c" >"$TMP/out.dead.$c" 2>/dev/null &
    pids+=($!); bg_pids+=($!)
done
berthd_gone_within 400 "berthd kept running after its syncs failed"
rc=0; wait "$BERTHD_PID" || rc=$?
BERTHD_PID=""
[ "$rc" -ne 0 ] || fail "berthd exited 0 after its syncs failed"
grep -q 'syncing the journal failed\|commit of [0-9]* commands failed: IO' "$LOG" \
    || fail "berthd's log does not say the sync failed"
for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
# The failed syncs' writes are in the page cache, not on the disk: else the
# model held nothing back and this round could catch no lie.
! cmp -s "$IMAGE" "$DATA/data.mdb" || fail "dead disk: the image holds every write: the disk model dropped nothing"
cp "$IMAGE" "$DATA/data.mdb"      # and then the OS went down
start_lmdb
dump_journal >"$TMP/journal.dead"
for ((c = 0; c < clients; c++)); do
    paste -d '\t' "$TMP/out.dead.$c" \
        <(head -n "$(wc -l <"$TMP/out.dead.$c")" "$TMP/in.dead.$c" | sed 's/ REQID .*//')
done >"$TMP/replies.dead"
grep -qE '^(IOERR|FULL)' "$TMP/replies.dead" || fail "no writer was told its write failed"
grep -vE '^(IOERR|FULL)' "$TMP/replies.dead" >"$TMP/acked.dead"
acked_check "dead disk" "$TMP/journal.dead" "$TMP/acked.dead" >"$TMP/check.dead" \
    || fail "after the failed syncs and an OS crash: $(head -n 10 "$TMP/check.dead")"
note "$(tail -n 1 "$TMP/check.dead"); $(grep -cE '^(IOERR|FULL)' "$TMP/replies.dead") writes were refused"
expect_verify_ok "JOURNAL.VERIFY after the failed syncs"
stop_berthd
no_commit_log "dead disk"
note ok
