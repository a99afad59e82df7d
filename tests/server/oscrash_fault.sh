#!/usr/bin/env bash
# oscrash_fault.sh — a disk that fails one sync, then an OS crash.
#
# oscrash.sh's dead disk fails every sync from some point on, so it cannot
# tell a journal that trusts a later sync from one that does not. Here the
# disk fails one sync and drops the writes it held, as Linux does after a
# failed writeback, and later syncs succeed again. berthd syncs after each
# commit (tools/batch.c, pipe_run): the commit's own sync writes its data
# pages, the sync after it the meta page that makes the batch durable.
#   1. ENOSPC in the sync of a meta page (BERTH_SHIM_FAIL_ON=meta): that
#      batch is not durable, its replies stay held, and berthd goes on; the
#      OS crashes during the second sync after the failure (the one that
#      proves a fresh meta page). Every write berthd acknowledged must be on
#      the disk image.
#   2. EIO there: berthd stops and answers the unsynced batch "outcome
#      unknown, retry with the same REQID"; it is restarted in the same boot
#      (the page cache, the real data file, still holds the dropped meta
#      page), the writers retry, and the OS crashes. Every retry answered
#      with a seq must be on the disk image with its command.
#   3. ENOSPC once in a commit's data sync (FAIL_ON=data), no crash, each
#      write sent twice in a row on pipelined connections: the failed batch
#      hears -FULL, its repeats must not hear "not applied" when the
#      original is in the journal, and every command told -FULL twice must be
#      absent from the journal.
#   4. The same with EIO: berthd stops; restarted on what the page cache
#      kept, its journal must agree with every reply (a repeat whose
#      original's outcome is unknown hears so too).
# disk_shim (LD_PRELOAD) models the disk: BERTH_SHIM_FAIL_AFTER and friends.
# The LMDB road: every phase rests on LMDB's sync pattern (a commit's data
# sync, then the meta page's; the syncs FAIL_AFTER counts; -FULL from a
# commit's failed sync), so every berthd here runs with --commit-log off.
# With the commit log on, a frame's failed sync is fatal (sticky IO) and a
# checkpoint's failed sync leaves acknowledged frames in the log to retry:
# oscrash_log.sh covers both, with both files imaged.
. "$(dirname "$0")/lib.sh"
IMAGE="$TMP/disk.mdb"
clients=4
per_client=3000
fail_after=60          # syncs before the one that fails
fail_after_piped=20    # the same under pipelined writes (bigger batches, fewer syncs)
exit_wait_steps=600    # 50 ms each: berthd must stop (or crash) by then
stream_rounds_max=6    # rounds of pipelined writes waiting for the armed fault

shim_preload
start_lmdb() { start_berthd --commit-log off "$@"; }
# No berthd of this test may have made a commit log: else it tested that road
# with a disk model that leaves commit.log out.
no_commit_log() { [ ! -e "$DATA/commit.log" ] || fail "$1: berthd made $DATA/commit.log on the LMDB road"; }

commands() {   # PHASE NAME COUNT: writes with a REQID each
    local i
    for ((i = 0; i < $3 / 3; i++)); do
        echo "WORKER.ADD $2-$1-$i GPUS 2 REQID a$2-$1-$i"
        echo "DEPLOY i$2-$1-$i MODEL m BACKEND vllm ON $2-$1-$i REQID d$2-$1-$i"
        echo "WORKER.CORDON $2-$1-$i REQID c$2-$1-$i"
    done
}
stream() {     # PHASE: clients write until berthd is gone
    pids=()
    for ((c = 0; c < clients; c++)); do
        commands "$1" "k$c" "$per_client" >"$TMP/in.$1.$c"
        r_stdin <"$TMP/in.$1.$c" >"$TMP/out.$1.$c" 2>/dev/null &
        pids+=($!); bg_pids+=($!)
    done
    berthd_gone_within "$exit_wait_steps" "$1: berthd still runs: the staged fault never came"
    wait "$BERTHD_PID" 2>/dev/null
    BERTHD_PID=""
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
}
replies() {    # PHASE: reply TAB command, for every command answered
    for ((c = 0; c < clients; c++)); do
        paste -d '\t' "$TMP/out.$1.$c" \
            <(head -n "$(wc -l <"$TMP/out.$1.$c")" "$TMP/in.$1.$c" | sed 's/ REQID .*//')
    done
}
check_image() {   # PHASE ACKED: restart on the disk image, every ack there
    cp "$IMAGE" "$DATA/data.mdb"
    start_lmdb
    dump_journal >"$TMP/journal.$1"
    acked_check "$1" "$TMP/journal.$1" "$2" >"$TMP/check.$1" \
        || fail "$1, after the OS crash: $(head -n 10 "$TMP/check.$1")"
    note "$(tail -n 1 "$TMP/check.$1") after the failed sync and an OS crash"
    expect_verify_ok "$1: JOURNAL.VERIFY after the OS crash"
    stop_berthd
    no_commit_log "$1"
}

# 1. ENOSPC once; the OS crashes during the second sync after it.
rm -f "$IMAGE"
BERTH_SHIM_FAIL_AFTER=$fail_after BERTH_SHIM_FAIL_ON=meta BERTH_SHIM_FAIL_ERRNO=28 \
    BERTH_SHIM_CRASH_AFTER_FAIL=2 \
    BERTH_SHIM_DATA="$DATA/data.mdb" BERTH_SHIM_DISK="$IMAGE" LD_PRELOAD="$PRELOAD" start_lmdb
stream nospace
grep -q 'disk_shim: a sync fails' "$LOG" || fail "nospace: the shim failed no sync"
# A sync that fails for room is not fatal (journal.h): berthd went on until
# the staged OS crash took it, rather than stopping on its own.
grep -q 'syncing the journal failed' "$LOG" && fail "nospace: berthd stopped on a sync that failed for room"
replies nospace >"$TMP/replies.nospace"
# (the crash may come before the failed batch's -FULL leaves: phase 3 checks it)
grep -vE '^(IOERR|FULL|ERR)' "$TMP/replies.nospace" >"$TMP/acked.nospace"
check_image nospace "$TMP/acked.nospace"

# 2. EIO once: berthd stops; restart in the same boot, retry, OS crash.
rm -f "$IMAGE"       # the disk as the data file is now
BERTH_SHIM_FAIL_AFTER=$fail_after BERTH_SHIM_FAIL_ON=meta BERTH_SHIM_FAIL_ERRNO=5 \
    BERTH_SHIM_DATA="$DATA/data.mdb" BERTH_SHIM_DISK="$IMAGE" LD_PRELOAD="$PRELOAD" start_lmdb
stream ioerr
grep -q 'disk_shim: a sync fails with EIO' "$LOG" || fail "ioerr: the shim failed no sync"
: >"$TMP/retry"
for ((c = 0; c < clients; c++)); do
    grep -n 'outcome is unknown' "$TMP/out.ioerr.$c" | cut -d: -f1 | while read -r n; do
        sed -n "${n}p" "$TMP/in.ioerr.$c"
    done >>"$TMP/retry"
done
[ -s "$TMP/retry" ] || fail "ioerr: no write was answered with an unknown outcome"
replies ioerr | grep -vE '^(IOERR|FULL|ERR)' >"$TMP/acked.ioerr"
# The same image: what the disk holds; the data file: what the page cache does.
BERTH_SHIM_DATA="$DATA/data.mdb" BERTH_SHIM_DISK="$IMAGE" LD_PRELOAD="$PRELOAD" start_lmdb
r_stdin <"$TMP/retry" >"$TMP/retry.out" 2>/dev/null
grep -qE '^[0-9]+$' "$TMP/retry.out" || fail "ioerr: no retry was answered with a seq: $(head -n 3 "$TMP/retry.out")"
paste -d '\t' "$TMP/retry.out" <(sed 's/ REQID .*//' "$TMP/retry") | grep -E '^[0-9]+'$'\t' \
    >>"$TMP/acked.ioerr"
note "ioerr: $(grep -c '' "$TMP/retry") writes retried after the restart"
kill9_berthd
check_image ioerr "$TMP/acked.ioerr"

# Pipelined clients sending every write twice in a row (phases 3 and 4).
# The armed fault needs a commit's data sync; on a loaded machine berthd
# reads bigger batches and commits fewer times, so one round of writes may end before the fault came. Rounds
# of new writes follow until the shim has failed a sync in this phase (its
# log from this phase on: the log file keeps earlier phases' lines).
stream_twice() {   # PHASE
    local round c log_from; log_from=$(($(wc -l <"$LOG") + 1))
    for ((c = 0; c < clients; c++)); do : >"$TMP/in.$1.$c"; : >"$TMP/out.$1.$c"; done
    for ((round = 0; round < stream_rounds_max; round++)); do
        pids=()
        for ((c = 0; c < clients; c++)); do
            commands "$1.r$round" "k$c" "$per_client" | awk '{ print; print }' >"$TMP/round_in.$1.$c"
            { sed 's/$/\r/' "$TMP/round_in.$1.$c"; printf 'QUIT\r\n'; } >"$TMP/send.$1.$c"
            nc_file "$TMP/send.$1.$c" | sed 's/^[:-]//' >"$TMP/round_out.$1.$c" &
            pids+=($!); bg_pids+=($!)
        done
        for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
        for ((c = 0; c < clients; c++)); do
            sed -i '${/^+OK$/d}' "$TMP/round_out.$1.$c"   # QUIT's +OK, if it came
            cat "$TMP/round_in.$1.$c" >>"$TMP/in.$1.$c"
            cat "$TMP/round_out.$1.$c" >>"$TMP/out.$1.$c"
        done
        tail -n +"$log_from" "$LOG" | grep -q 'disk_shim: a sync fails' && break
        kill -0 "$BERTHD_PID" 2>/dev/null || break
    done
    tail -n +"$log_from" "$LOG" | grep -q 'disk_shim: a sync fails' \
        || fail "$1: the shim failed no sync in $round rounds of writes"
    note "$1: the fault came in round $((round + 1))"
}
# Per client, replies come in pairs, a command then its repeat: a repeat
# told "not applied" after its original got a seq or an unknown outcome,
# or a command told so twice that is in the journal, is a lie.
pairs_check() {    # PHASE JOURNAL
    local c
    for ((c = 0; c < clients; c++)); do
        paste -d '\t' "$TMP/out.$1.$c" \
            <(head -n "$(wc -l <"$TMP/out.$1.$c")" "$TMP/in.$1.$c" | sed 's/ REQID .*//') \
            >"$TMP/pairs.$1.$c"
    done
    awk -F '\t' 'FILENAME == ARGV[1] { held[$3] = 1; next }
        FNR % 2 == 1 { first = $1; next }
        $1 ~ /not applied/ && first !~ /not applied/ {
            print "[" $2 "] got \"" first "\", its repeat \"" $1 "\""; bad = 1 }
        $1 ~ /not applied/ && first ~ /not applied/ && ($2 in held) {
            print "[" $2 "] told twice \"" $1 "\" is in the journal"; bad = 1 }
        END { exit bad }' "$2" "$TMP"/pairs.$1.[0-9]* >"$TMP/pairs_check.$1" \
        || fail "$1: $(head -n 3 "$TMP/pairs_check.$1")"
    grep -hvE '^(IOERR|FULL|ERR)' "$TMP"/pairs.$1.[0-9]* >"$TMP/acked.$1"
    acked_check "$1" "$2" "$TMP/acked.$1" >"$TMP/check.$1" \
        || fail "$1: $(head -n 10 "$TMP/check.$1")"
    note "$1: $(cat "$TMP"/out.$1.[0-9]* | grep -c 'not applied') writes told 'not applied', \
$(cat "$TMP"/out.$1.[0-9]* | grep -c 'outcome is unknown') told 'outcome unknown'; \
$(tail -n 1 "$TMP/check.$1")"
}

# 3. ENOSPC once under pipelined writes, each sent twice; no crash.
rm -f "$IMAGE"
BERTH_SHIM_FAIL_AFTER=$fail_after_piped BERTH_SHIM_FAIL_ON=data BERTH_SHIM_FAIL_ERRNO=28 \
    BERTH_SHIM_DATA="$DATA/data.mdb" BERTH_SHIM_DISK="$IMAGE" LD_PRELOAD="$PRELOAD" start_lmdb
stream_twice twice
for ((c = 0; c < clients; c++)); do
    got=$(grep -c '' "$TMP/out.twice.$c"); sent=$(grep -c '' "$TMP/in.twice.$c")
    [ "$got" -eq "$sent" ] || fail "twice: client $c got $got replies for $sent commands"
done
grep -q '^FULL' "$TMP"/out.twice.[0-9]* || fail "twice: no writer heard -FULL for the failed commit"
dump_journal >"$TMP/journal.twice"
pairs_check twice "$TMP/journal.twice"
expect_verify_ok "twice: JOURNAL.VERIFY"
stop_berthd
no_commit_log twice

# 4. EIO once under pipelined writes, each sent twice: berthd stops; the
#    journal it left (no OS crash: the page cache kept everything) must
#    agree with every reply.
rm -f "$IMAGE"
BERTH_SHIM_FAIL_AFTER=$fail_after_piped BERTH_SHIM_FAIL_ON=data BERTH_SHIM_FAIL_ERRNO=5 \
    BERTH_SHIM_DATA="$DATA/data.mdb" BERTH_SHIM_DISK="$IMAGE" LD_PRELOAD="$PRELOAD" start_lmdb
stream_twice twice_eio
berthd_gone_within "$exit_wait_steps" "twice_eio: berthd kept running after its sync failed"
wait "$BERTHD_PID" 2>/dev/null
BERTHD_PID=""
start_lmdb
dump_journal >"$TMP/journal.twice_eio"
pairs_check twice_eio "$TMP/journal.twice_eio"
expect_verify_ok "twice_eio: JOURNAL.VERIFY"
stop_berthd
no_commit_log twice_eio
note ok
