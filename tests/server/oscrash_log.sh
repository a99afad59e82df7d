#!/usr/bin/env bash
# oscrash_log.sh — OS crashes with the commit log on (the default): berthd
# acknowledges a batch once its frame in DATA/commit.log is synced, and moves
# frames into LMDB later (tools/batch.c, "The commit log"); at start it
# moves whatever the log holds past LMDB's head (the recovery).
#
# berthd runs under disk_shim (LD_PRELOAD) tracking data.mdb and the commit
# log's two files (commit.log, commit.log.2): each has an image that only its
# own synced writes reach. An OS crash is kill -9, then the images copied
# over the files.
#   a. Two rounds on the same data: a pipelined burst on one connection must
#      get every reply; then several clients stream writes with REQIDs while
#      a WATCH client follows and a reader asks JOURNAL.HEAD (each such read
#      waits for a checkpoint, so the log is reset and overwritten from
#      offset 0 mid-stream); kill -9 mid-stream (round 1: during a sync, the
#      disk slowed by BERTH_SHIM_CTL's delay_ms; round 2: with data.mdb's
#      syncs held for the last 100 replies, so that checkpoints stall),
#      images over the files, restart (round 2's restart runs with
#      --commit-log off: a log left behind is recovered whatever the flag
#      says). Every seq berthd acknowledged (burst included), every
#      acknowledged refusal, every record the watcher saw and the last head
#      the reader saw must be there with its command and outcome (and hash),
#      and JOURNAL.VERIFY must pass. In at least one round (round 2 by
#      construction) berthd must say it moved records from commit.log that
#      include acknowledged writes (LMDB on the disk was behind what was
#      acknowledged), and round 1's
#      crash must have lost writes the page cache held (the model did hold
#      something back, so a lie would have shown).
#   b. The log's sync fails (BERTH_SHIM_CTL's fail.log, EIO) while writes
#      stream: berthd must answer no write of that sync as a success (its
#      writers hear -IOERR "outcome is unknown"; any other error says "not
#      applied", or that berthd is stopping after a journal failure, and
#      such a write must be absent) and stop; after the OS crash and a
#      restart, every write it acknowledged is there, and the failed sync's
#      writes are not (the crash lost them: acknowledging one would have
#      been caught).
#   b2. A checkpoint's sync in LMDB fails (fail.data, EIO): berthd stops;
#      the restart moves from commit.log every write it acknowledged.
#   b3. A checkpoint's sync fails once for room (ENOSPC): berthd goes on
#      (writes meanwhile hear -FULL, not applied, and must be absent), a
#      later checkpoint succeeds, the log is reset, writes are acknowledged
#      again, then the OS crashes: every acknowledged write is there.
#   c. The disk dies (BERTH_SHIM_SYNCS_OK: from some sync on, every sync of
#      either file fails): the same guarantees, whichever sync meets it
#      first (a frame's, or a checkpoint's in LMDB).
# The log is made as small as berthd allows (--commit-log-mib): each start
# copies both files into their images, each crash copies them back.
. "$(dirname "$0")/lib.sh"
IMAGE="$TMP/disk.mdb"
LOG_IMAGE="$TMP/disk.log"      # the commit log's first file
LOG2_IMAGE="$TMP/disk.log2"    # and its second
CTL="$TMP/ctl"
burst=3000             # pipelined commands on one connection
clients=4
per_client=3000        # more than a client can send before the kill
rounds=2
acked_before_kill=1200
acked_before_fault=300 # replies the clients got before the log's sync fails
clog_mib=80            # the log's size, the smallest berthd takes (images are copied)
exit_wait_steps=400    # 50 ms each: berthd must stop by then
syncs_ok=400           # c: syncs of both files before the disk dies
sync_delay_ms=500      # a: the sync the OS crash comes in

shim_preload
mkdir -p "$CTL"

start_shimmed() {
    rm -f "$IMAGE" "$LOG_IMAGE" "$LOG2_IMAGE"   # each image starts from its file as it is
    BERTH_SHIM_DATA="$DATA/data.mdb" BERTH_SHIM_DISK="$IMAGE" \
        BERTH_SHIM_LOG="$DATA/commit.log" BERTH_SHIM_LOG_DISK="$LOG_IMAGE" \
        BERTH_SHIM_LOG2="$DATA/commit.log.2" BERTH_SHIM_LOG2_DISK="$LOG2_IMAGE" \
        BERTH_SHIM_CTL="$CTL" LD_PRELOAD="$PRELOAD" start_berthd --commit-log-mib "$clog_mib"
}
# What the disk holds after the OS went down. Sets lost when the page cache
# held writes the images lack (the crash lost something).
images_over_files() {
    [ -s "$IMAGE" ] || fail "$1: the data file's image is empty: the shim saw no sync"
    [ -s "$LOG_IMAGE" ] || fail "$1: the commit log's image is empty: the shim saw no sync of it"
    [ -s "$LOG2_IMAGE" ] || fail "$1: the commit log's second image is empty: the shim saw no sync of it"
    lost=0 lost_what=""
    cmp -s "$IMAGE" "$DATA/data.mdb" || { lost=1; lost_what+=" data.mdb"; }
    cmp -s "$LOG_IMAGE" "$DATA/commit.log" || { lost=1; lost_what+=" commit.log"; }
    cmp -s "$LOG2_IMAGE" "$DATA/commit.log.2" || { lost=1; lost_what+=" commit.log.2"; }
    cp "$IMAGE" "$DATA/data.mdb"
    cp "$LOG_IMAGE" "$DATA/commit.log"
    cp "$LOG2_IMAGE" "$DATA/commit.log.2"
}
# restart LABEL [flags…]: start (without the shim) on the images; sets moved
# to the records berthd said it moved from commit.log (0: none).
restart() {
    local label=$1 from
    shift
    from=$(($(wc -l <"$LOG") + 1))
    start_berthd "$@"
    moved=$(tail -n +"$from" "$LOG" | sed -n 's/.*moved \([0-9]*\) acknowledged records from the commit log .* into the journal.*/\1/p')
    moved=${moved:-0}
    note "$label: the restart moved $moved records from commit.log"
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
stream_start() {   # PHASE [FIRST]: clients FIRST.. stream writes into $TMP/out.PHASE.C
    pids=()
    for ((c = ${2:-0}; c < ${2:-0} + clients; c++)); do
        commands "$1" "k$c" "$per_client" >"$TMP/in.$1.$c"
        r_stdin <"$TMP/in.$1.$c" >"$TMP/out.$1.$c" 2>/dev/null &
        pids+=($!); bg_pids+=($!)
    done
}
replies_to() {     # PHASE: reply TAB command, for every command answered
    local in out
    for in in "$TMP"/in."$1".[0-9]*; do
        out="$TMP/out.${in##*/in.}"
        paste -d '\t' "$out" <(head -n "$(wc -l <"$out")" "$in" | sed 's/ REQID .*//')
    done
}
wait_replies() {   # PHASE N: until the clients got N replies (or 10 s)
    local i n
    for ((i = 0; i < 400; i++)); do
        n=$(cat "$TMP"/out."$1".[0-9]* | wc -l)
        [ "$n" -ge "$2" ] && return 0
        sleep 0.025
    done
    fail "$1: the clients got $n replies in 10 s, $2 expected"
}
max_seq() { grep -hE '^[0-9]+$' "$@" | sort -n | tail -n 1; }
acked_seqs() { cat "$TMP"/out."$1".[0-9]* | grep -cE '^[0-9]+$'; }   # PHASE
# reader_start PHASE: a client asking JOURNAL.HEAD every 200 ms: each waits
# for LMDB to hold the durable head, so checkpoints run (and reset the log)
# mid-stream. reader_end stops it.
reader_start() {
    "$REDIS_CLI" -p "$PORT" -r -1 -i 0.2 JOURNAL.HEAD >"$TMP/heads.$1" 2>/dev/null &
    reader_pid=$!; bg_pids+=("$reader_pid")
}
reader_end() { kill "$reader_pid" 2>/dev/null; wait "$reader_pid" 2>/dev/null; }
# reader_shown PHASE: until the reader was shown its first head (10 s). The
# phases with a fault start it first and wait for this before the writes
# begin: on a disk whose sync takes ~0.1 ms a fault could come before a
# reader started beside the writes was answered (its JOURNAL.HEAD waits for
# a checkpoint), and heads_check then found no head (session 20's machine).
reader_shown() {
    local i
    for ((i = 0; i < 400; i++)); do
        [ "$(grep -c '^seq$' "$TMP/heads.$1" 2>/dev/null)" -gt 0 ] && return 0
        sleep 0.025
    done
    fail "$1: the reader was shown no head in 10 s"
}
# heads_check PHASE: the last head the reader was shown is in the journal
# with its hash (a reader is never shown what a crash can take back).
heads_check() {
    local shown seq hash
    shown=$(awk 'want == "seq" { seq = $0; want = "" ; next }
        want == "hash" { if (seq + 0 > max) { max = seq + 0; mh = $0 } want = ""; next }
        $0 == "seq" || $0 == "hash" { want = $0 }
        END { if (max > 0) print max, mh }' "$TMP/heads.$1")
    [ -n "$shown" ] || fail "$1: the reader was shown no head"
    read -r seq hash <<<"$shown"
    expect_eq "$(r JOURNAL.RANGE "$seq" 1 | map_field hash)" "$hash" \
        "$1: the record at seq $seq, the last head a reader was shown"
    heads=$(grep -c '^seq$' "$TMP/heads.$1")
}

# a. Bursts, streams, a watcher, OS crashes; recovery from the log.
# crash_in_sync: kill -9 while a sync (of either file) is under way, its
# writes still held: the slow disk (CTL's delay_ms) keeps it there.
crash_in_sync() {
    local n0 i
    n0=$(wc -l <"$CTL/syncs")
    echo "$sync_delay_ms" >"$CTL/delay_ms"
    for ((i = 0; i < 400; i++)); do
        [ "$(wc -l <"$CTL/syncs")" -gt "$n0" ] && break
        sleep 0.005
    done
    [ "$i" -lt 400 ] || fail "round $round: no sync began in 2 s"
    sleep 0.05     # the new sync has read delay_ms: it sleeps, its writes held
    kill9_berthd
    rm -f "$CTL/delay_ms"
    note "round $round: the OS crash came during a $(tail -n 1 "$CTL/syncs")"
}
# hold_checkpoints_then_kill: once the reader was shown a head, stop it and
# hold every later sync of data.mdb (CTL's delay_ms.data): the checkpoint under way
# never ends, so what is acknowledged from then on is only in the log on
# the disk; kill -9 after 100 more replies. Without the hold a kill could
# land just after a checkpoint (one every 20 ms), and the restart would find
# no acknowledged write to move (seen in CI).
hold_checkpoints_then_kill() {
    local i n0
    reader_shown "$round"
    # A read parked for a checkpoint holds writes back until it is answered
    # (so that it is answered at all): with checkpoints held, the reader
    # would stop the stream. It has been shown its heads; it stops here.
    reader_end
    n0=$(cat "$TMP"/out."$round".[0-9]* | wc -l)
    echo 60000 >"$CTL/delay_ms.data"
    wait_replies "$round" $((n0 + 100))
    kill9_berthd
    rm -f "$CTL/delay_ms.data"
    note "round $round: the OS crash came with data.mdb's syncs held since $n0 replies"
}
recovered_acks=0
for ((round = 1; round <= rounds; round++)); do
    start_shimmed
    commands "$round" b "$burst" >"$TMP/in.$round.b"
    { cat "$TMP/in.$round.b"; echo QUIT; } >"$TMP/burst.$round"
    nc_file "$TMP/burst.$round" | sed 's/^[:-]//' >"$TMP/burst_out.$round"
    [ "$(tail -n 1 "$TMP/burst_out.$round")" = "+OK" ] || fail "round $round: the burst's QUIT got no +OK"
    sed -i '$d' "$TMP/burst_out.$round"
    got=$(grep -c '' "$TMP/burst_out.$round")
    [ "$got" -eq "$burst" ] || fail "round $round: the pipelined burst got $got replies for $burst commands"
    ! grep -qE '^(ERR|IOERR|FULL)' "$TMP/burst_out.$round" \
        || fail "round $round: the burst got $(grep -m1 -E '^(ERR|IOERR|FULL)' "$TMP/burst_out.$round")"
    cp "$TMP/burst_out.$round" "$TMP/out.$round.b"
    note "round $round: a pipelined burst of $burst commands got every reply"

    watch_start "$round"
    stream_start "$round"
    reader_start "$round"
    wait_replies "$round" "$acked_before_kill"
    if ((round == 1)); then crash_in_sync; else hold_checkpoints_then_kill; fi
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
    reader_end
    watch_end "$round"
    images_over_files "round $round"
    note "round $round: the OS crash lost unsynced writes of:${lost_what:- nothing}"
    # A crash during a sync loses the writes it held: else the disk model
    # held nothing back, and no lie could show.
    ((round != 1 || lost)) || fail "round 1: the OS crash during a sync lost nothing the page cache held"
    acked=$(cat "$TMP"/out.$round.[0-9]* | wc -l)
    [ "$acked" -lt $((clients * per_client)) ] || fail "round $round: the crash came after every command"

    if ((round == rounds)); then restart "round $round" --commit-log off; else restart "round $round"; fi
    dump_journal >"$TMP/journal.$round"
    head=$(tail -n 1 "$TMP/journal.$round" | cut -f1)
    # Seqs past head - moved were only in the log on the disk.
    ((moved > 0)) && [ "$(max_seq "$TMP"/out.$round.*)" -gt $((head - moved)) ] \
        && recovered_acks=$((recovered_acks + 1))
    for s in b $(seq 0 $((clients - 1))); do
        paste -d '\t' "$TMP/out.$round.$s" \
            <(head -n "$(wc -l <"$TMP/out.$round.$s")" "$TMP/in.$round.$s" | sed 's/ REQID .*//')
    done >"$TMP/acked.$round"
    acked_check "round $round" "$TMP/journal.$round" "$TMP/acked.$round" >"$TMP/check.$round" \
        || fail "round $round, after the OS crash: $(head -n 10 "$TMP/check.$round")"
    note "$(tail -n 1 "$TMP/check.$round") after an OS crash (LMDB on disk ended at seq $((head - moved)))"
    watched_durable "round $round" "$TMP/journal.$round" "$TMP/watched.$round"
    heads_check "$round"
    note "round $round: the $watched records a watcher saw and the last of $heads heads a reader saw survived the OS crash"
    expect_verify_ok "round $round: JOURNAL.VERIFY after the OS crash"
    stop_berthd
done
[ "$recovered_acks" -gt 0 ] || fail "in no round did the restart move acknowledged writes from \
commit.log: LMDB on the disk held all of them, the log's recovery was not tested"

# Writes that got no seq: "unknown" only for a batch that may be on disk;
# "not applied" only for one that is not, and so "berthd is stopping after
# a journal failure" (a write that came after berthd turned fatal: never
# staged, though the sentence does not say "not applied"); no other error.
not_applied='not applied|is stopping after a journal failure'
errors_check() {   # PHASE REPLIES JOURNAL [unknown: some writer must hear so]
    [ "${4:-}" != unknown ] || grep -q $'^IOERR[^\t]*outcome is unknown' "$2" \
        || fail "$1: no writer heard its outcome is unknown"
    awk -F '\t' -v na="$not_applied" '$1 ~ /^(IOERR|ERR|FULL|TRYAGAIN)/ && $1 !~ "outcome is unknown|" na {
        print "[" $2 "] told \"" $1 "\""; bad = 1 } END { exit bad }' "$2" >"$TMP/bare.$1" \
        || fail "$1: an error says neither unknown nor not applied: $(head -n 3 "$TMP/bare.$1")"
    awk -F '\t' -v na="$not_applied" 'FILENAME == ARGV[1] { held[$3] = 1; next }
        $1 ~ na && ($2 in held) { print "[" $2 "] told \"" $1 "\" is in the journal"; bad = 1 }
        END { exit bad }' "$3" "$2" >"$TMP/not_applied.$1" \
        || fail "$1: $(head -n 3 "$TMP/not_applied.$1")"
}
# stopped PHASE: berthd stopped by itself, with a non-zero status.
stopped() {
    local rc=0
    berthd_gone_within "$exit_wait_steps" "$1: berthd kept running after its disk failed"
    wait "$BERTHD_PID" || rc=$?
    BERTHD_PID=""
    [ "$rc" -ne 0 ] || fail "$1: berthd exited 0 after its disk failed"
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
    reader_end
}
# after_crash PHASE [unknown] [lost]: images over the files, restart, check
# every reply; lost: the crash must have lost writes the page cache held (a
# failed sync's, which the model drops).
after_crash() {
    local flags=" ${*:2} " unknown=""
    [[ "$flags" != *" unknown "* ]] || unknown=unknown
    images_over_files "$1"
    [[ "$flags" != *" lost "* ]] || ((lost)) \
        || fail "$1: the failed sync's writes reached the disk image: the model dropped nothing"
    restart "$1"
    dump_journal >"$TMP/journal.$1"
    replies_to "$1" >"$TMP/replies.$1"
    grep -vE '^(IOERR|FULL|ERR|TRYAGAIN)' "$TMP/replies.$1" >"$TMP/acked.$1"
    acked_check "$1" "$TMP/journal.$1" "$TMP/acked.$1" >"$TMP/check.$1" \
        || fail "$1, after the OS crash: $(head -n 10 "$TMP/check.$1")"
    errors_check "$1" "$TMP/replies.$1" "$TMP/journal.$1" "$unknown"
    heads_check "$1"
    note "$(tail -n 1 "$TMP/check.$1"); $(grep -c 'outcome is unknown' "$TMP/replies.$1") told unknown, \
$(grep -cE "$not_applied" "$TMP/replies.$1") not applied"
    expect_verify_ok "$1: JOURNAL.VERIFY after the OS crash"
}

# b. One sync of the log fails with EIO mid-stream.
start_shimmed
reader_start logfail
reader_shown logfail
stream_start logfail
wait_replies logfail "$acked_before_fault"
shim_arm fail.log 5
stopped logfail
[ ! -e "$CTL/fail.log" ] || fail "logfail: the armed failure of the log's sync never happened"
grep -q 'disk_shim: a sync of the commit log fails' "$LOG" || fail "logfail: the shim failed no sync of the log"
grep -q 'syncing the journal failed' "$LOG" || fail "logfail: berthd's log does not say the sync failed"
after_crash logfail unknown lost
# The failed sync's frame is not on the disk: had berthd acknowledged any of
# its writes, acked_check would have caught it.
awk -F '\t' 'FILENAME == ARGV[1] { held[$3] = 1; next }
    $1 ~ /outcome is unknown/ && ($2 in held) { print "[" $2 "]"; bad = 1 }
    END { exit bad }' "$TMP/journal.logfail" "$TMP/replies.logfail" >"$TMP/unknown_held" \
    || fail "logfail: a write of the failed sync survived the OS crash, the model dropped nothing: $(head -n 3 "$TMP/unknown_held")"
stop_berthd

# b2. A checkpoint's sync in LMDB fails with EIO mid-stream: LMDB takes no
#     more, every acknowledged write is in the log, berthd stops.
start_shimmed
reader_start ckptfail
reader_shown ckptfail
stream_start ckptfail
wait_replies ckptfail "$acked_before_fault"
shim_arm fail.data 5
stopped ckptfail
[ ! -e "$CTL/fail.data" ] || fail "ckptfail: the armed failure of a checkpoint's sync never happened"
grep -q 'the journal cannot take the commit log' "$LOG" || fail "ckptfail: berthd's log does not say the checkpoint failed"
after_crash ckptfail lost
[ "$moved" -gt 0 ] || fail "ckptfail: the restart moved nothing from commit.log"
stop_berthd

# b3. A checkpoint's sync in LMDB fails once for room (fail.data, ENOSPC):
#     not fatal, the frames stay in the log and the checkpoint is retried
#     (meanwhile new writes hear -FULL, not applied); once one succeeded
#     (the log reset, its frames overwritten), writes are acknowledged
#     again, and the OS crashes mid-stream. Every write acknowledged is
#     there: a retry that trusted a plain sync after the failed one (whose
#     dropped pages no later sync writes) would have reset the log over
#     records LMDB on the disk does not hold.
start_shimmed
reader_start ckptfull
reader_shown ckptfull
stream_start ckptfull
wait_replies ckptfull "$acked_before_fault"
log_from=$(($(wc -l <"$LOG") + 1))
shim_arm fail.data 28
for ((i = 0; i < 400; i++)); do
    [ ! -e "$CTL/fail.data" ] && tail -n +"$log_from" "$LOG" | grep -q 'moved into the journal again' && break
    sleep 0.025
done
[ ! -e "$CTL/fail.data" ] || fail "ckptfull: the armed failure of a checkpoint's sync never happened"
tail -n +"$log_from" "$LOG" | grep -q 'moved into the journal again' \
    || fail "ckptfull: no checkpoint succeeded within 10 s of the failed one"
# Writes refused meanwhile return at once: the clients may have no command
# left, so fresh ones write now.
stream_pids=("${pids[@]}")
resumed=$(acked_seqs ckptfull)
stream_start ckptfull "$clients"
pids+=("${stream_pids[@]}")
for ((i = 0; i < 400; i++)); do
    [ "$(acked_seqs ckptfull)" -ge $((resumed + acked_before_fault)) ] && break
    sleep 0.025
done
[ "$i" -lt 400 ] || fail "ckptfull: writes were not acknowledged again after the checkpoint succeeded"
kill9_berthd
for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
reader_end
after_crash ckptfull
stop_berthd

# c. The disk dies: every sync of either file after the first syncs_ok fails.
log_from=$(($(wc -l <"$LOG") + 1))
BERTH_SHIM_SYNCS_OK=$syncs_ok start_shimmed
reader_start dead
reader_shown dead   # the 400 syncs go by in ~50 ms on a fast disk
stream_start dead
stopped dead
tail -n +"$log_from" "$LOG" >"$TMP/log.dead"
grep -q 'syncing the journal failed\|the journal cannot take the commit log' "$TMP/log.dead" \
    || fail "dead: berthd's log does not say a sync failed"
if grep -q 'the journal cannot take the commit log' "$TMP/log.dead"; then
    note "dead: a checkpoint's sync met the dead disk first"
else
    note "dead: a frame's sync met the dead disk first"
fi
after_crash dead lost
stop_berthd
note ok
