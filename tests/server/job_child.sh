#!/bin/bash
# job_child.sh — the processes berthd and berth run a journal walk in
# (guard.h) hold nothing of their parent's and do not outlive it (review
# hV4). A job's child is caught and stopped (SIGSTOP: a hung child) with
# the journal open, then:
#   - it holds no socket, no DIR/LOCK, no eventfd or epoll of berthd's;
#   - SIGKILLed from outside, its client hears -ERR "killed by SIGKILL (not
#     page damage)", not -CORRUPT, and the log says nothing of damage;
#   - dead of SIGABRT, SIGFPE or SIGILL, -INTERNAL (a bug to report), not
#     -CORRUPT; of SIGSEGV, -CORRUPT;
#   - SIGTERM to berthd ends berthd within seconds (the child is killed)
#     and the job's client hears "berthd is stopping";
#   - berthd SIGKILLed takes its child along: a restart is not LOCKED;
#   - under --job-timeout 2 the stopped child is killed at its time: its
#     client hears -TIMEOUT within bounds, berthd logs it and frees the
#     child's reader slot, the VERIFY and AT queued behind it are answered,
#     INFO counts it, and no child or reader slot is left;
#   - a killed child that does not go (its exit held by a ptracer, as D
#     state would) holds neither the queued jobs nor berthd's stop: it is
#     logged, counted in INFO, and reaped with its reader slot freed once
#     it goes.
# And `berth history rebuild` (writes, holds the LOCK) SIGTERMed by its pid
# while its child is stopped: berth waits for the child, which ends of the
# same signal; no orphan walks on. Needs BERTH (the berth binary) too.
source "$(dirname "$0")/lib.sh"
BERTH=${BERTH:?BERTH must name the berth binary}
CATCH="$(dirname "$0")/catch_child.py"
HOLD="$(dirname "$0")/hold_exit.py"
RECORDS=20000
JOB_TIMEOUT_S=2          # a healthy job here takes well under 1 s, sanitizer build too
ulimit -c 0              # the children killed by SIGABRT and the like leave no core

# verifies_until_caught OUT: JOURNAL.VERIFYs one after another into OUT
# until a child of berthd is caught (stopped, the journal open, holding
# none of berthd's descriptors); sets CHILD.
verifies_until_caught() {
    : >"$1"
    ( while :; do "$REDIS_CLI" -p "$PORT" JOURNAL.VERIFY >>"$1" 2>&1 || exit; done ) &
    VERIFIER=$!
    bg_pids+=("$VERIFIER")
    CHILD=$(python3 "$CATCH" "$BERTHD_PID" 20 "$DATA/data.mdb") || fail "no job child with the journal open and none of berthd's sockets, eventfd, epoll or LOCK in 20 s"
}
# The loop's redis-cli goes too: left running, its JOURNAL.VERIFY would
# still be queued, and the next verifies_until_caught could catch that job's
# child, whose reply goes to the old output file.
stop_verifier() {
    pkill -P "$VERIFIER" 2>/dev/null
    kill "$VERIFIER" 2>/dev/null; wait "$VERIFIER" 2>/dev/null
}
# jobs_idle: berthd runs no job child (zombies aside) for 0.5 s in a row, at
# most 10 s: a job its killed client queued runs to its end first, so the
# next catch is of a job whose client is listening (seen once in CI: a
# child caught for SIGFPE was the killed client's, and its -INTERNAL never
# reached the file the check read).
jobs_idle() {
    local i quiet=0
    for ((i = 0; i < 200 && quiet < 10; i++)); do
        if ps -o stat= --ppid "$BERTHD_PID" | grep -qv '^Z'; then quiet=0; else quiet=$((quiet + 1)); fi
        sleep 0.05
    done
}
# readers: the pids in the journal's reader table (mdb_stat -r, which exits
# 1 after printing it).
readers() {
    local out
    out=$(mdb_stat -r "$DATA" 2>&1)
    [[ "$out" == "Reader Table Status"* ]] || fail "mdb_stat -r: $out"
    awk 'NR > 1 && $1 ~ /^[0-9]+$/ { print $1 }' <<<"$out"
}
# holds_reader PID: PID holds a reader slot of the journal (a job's child
# holds one only inside a step: between steps it has none).
holds_reader() { readers | grep -qx "$1"; }
# caught_reading OUT: verifies_until_caught until the caught child is
# inside a step, so that freeing its reader slot can be seen.
caught_reading() {
    local tries
    for ((tries = 0; tries < 20; tries++)); do
        verifies_until_caught "$1"
        holds_reader "$CHILD" && return 0
        kill -CONT "$CHILD"
        stop_verifier
    done
    fail "no job child caught inside a step (holding a reader slot) in 20 tries"
}
# A process ended: gone, or a zombie (an orphan's reaper may not be quick).
ended() { ! kill -0 "$1" 2>/dev/null || grep -q ') Z' "/proc/$1/stat" 2>/dev/null; }
gone_within() {   # PID STEPS(50 ms) WHY
    local i
    for ((i = 0; i < $2; i++)); do
        ended "$1" && return 0
        sleep 0.05
    done
    fail "$3"
}

start_berthd
{
    for ((i = 1; i <= RECORDS; i++)); do printf 'WORKER.ADD w%d GPUS 8\r\n' "$i"; done
    printf 'QUIT\r\n'
} >"$TMP/writes.txt"
nc_file "$TMP/writes.txt" >/dev/null
expect_eq "$(head_seq)" "$RECORDS" "the head after the writes"

# 1. What the child holds, and a SIGKILL from outside.
verifies_until_caught "$TMP/v1.out"
fds=$(ls -l "/proc/$CHILD/fd" | awk 'NR > 1 {print $NF}')
echo "$fds" | grep -Eq 'socket:|anon_inode|/LOCK$' &&
    fail "the job's child $CHILD holds berthd's descriptors: $(echo $fds)"
kill -KILL "$CHILD"
sleep 0.3
stop_verifier
grep -q "ERR JOURNAL.VERIFY was not finished: its process was killed by SIGKILL (not page damage); retry it" "$TMP/v1.out" ||
    fail "no -ERR retry for the SIGKILLed child: $(sort "$TMP/v1.out" | uniq -c)"
grep -q CORRUPT "$TMP/v1.out" && fail "a SIGKILLed child reported as damage: $(sort "$TMP/v1.out" | uniq -c)"
grep -q "damaged" "$LOG" && fail "the log calls a SIGKILLed child damage"
grep -q "JOURNAL.VERIFY's process was killed by SIGKILL" "$LOG" || fail "no log line for the killed child"
expect_eq "$(r PING)" PONG "PING after the killed child"

# 1b. Deaths of SIGABRT (an assertion), SIGFPE and SIGILL are a bug, not
# damage: -INTERNAL asking for a report, nothing of damaged pages (before,
# -CORRUPT told the operator to restore data.mdb from a copy); SIGSEGV is
# still the pages' (CORRUPT). The signal waits while the child is stopped.
for sig in ABRT FPE ILL SEGV; do
    jobs_idle
    verifies_until_caught "$TMP/v1$sig.out"
    kill -"$sig" "$CHILD"; kill -CONT "$CHILD"
    gone_within "$CHILD" 40 "the job's child outlived SIG$sig"
    # its reply, on a loaded machine (the sanitizer build's) not at once
    for ((i = 0; i < 200; i++)); do grep -Eq '^(INTERNAL|CORRUPT|ERR)' "$TMP/v1$sig.out" && break; sleep 0.05; done
    stop_verifier
    if [ "$sig" = SEGV ]; then
        grep -q "^CORRUPT JOURNAL.VERIFY: the journal's pages in .*(SIGSEGV)" "$TMP/v1$sig.out" ||
            fail "no -CORRUPT for a child dead of SIGSEGV: $(sort "$TMP/v1$sig.out" | uniq -c)"
        continue
    fi
    grep -Eq "^INTERNAL JOURNAL.VERIFY stopped on an internal error \(SIG$sig[:)].*a bug in berthd, not damage to .*/data.mdb; please report it" "$TMP/v1$sig.out" ||
        fail "no -INTERNAL for a child dead of SIG$sig: $(sort "$TMP/v1$sig.out" | uniq -c)"
    grep -q CORRUPT "$TMP/v1$sig.out" && fail "a child dead of SIG$sig reported as damage: $(sort "$TMP/v1$sig.out" | uniq -c)"
    grep -q "damaged" "$LOG" && fail "the log calls a child dead of SIG$sig damage: $(grep damaged "$LOG")"
    grep -q "JOURNAL.VERIFY's process died of SIG$sig: an internal error, a bug in berthd" "$LOG" ||
        fail "no log line for the child dead of SIG$sig"
    expect_eq "$(r PING)" PONG "PING after the child dead of SIG$sig"
done
grep -q "SIGABRT: an assertion failed" "$TMP/v1ABRT.out" || fail "the SIGABRT reply should name the assertion"
expect_verify_ok "a VERIFY after the children's deaths"

# 2. SIGTERM with a hung child.
verifies_until_caught "$TMP/v2.out"
kill -TERM "$BERTHD_PID"
gone_within "$BERTHD_PID" 100 "berthd still running 5 s after SIGTERM with a stopped job child"
rc=0; wait "$BERTHD_PID" || rc=$?
BERTHD_PID=""
[ "$rc" -eq 0 ] || fail "berthd exited $rc after SIGTERM"
sanitizer_clean
gone_within "$CHILD" 40 "the job's child outlived berthd's stop"
stop_verifier
grep -q "berthd is stopping: JOURNAL.VERIFY was not finished; retry it after the restart" "$TMP/v2.out" ||
    fail "no stopping reply for the killed job: $(sort "$TMP/v2.out" | uniq -c)"

# 3. berthd SIGKILLed: its child goes too, the restart is not LOCKED.
start_berthd
verifies_until_caught "$TMP/v3.out"
kill -KILL "$BERTHD_PID"; wait "$BERTHD_PID" 2>/dev/null; BERTHD_PID=""
stop_verifier
gone_within "$CHILD" 40 "the job's child outlived a SIGKILLed berthd"
start_berthd
expect_eq "$(head_seq)" "$RECORDS" "the head after the restart"
stop_berthd

# 4. --job-timeout: a hung (stopped) child is killed at its time.
command -v mdb_stat >/dev/null || fail "mdb_stat missing (apt-get install -y lmdb-utils)"
start_berthd --job-timeout "$JOB_TIMEOUT_S"
caught_reading "$TMP/v4.out"
caught_at=$EPOCHREALTIME
r JOURNAL.VERIFY >"$TMP/queued_verify.out" 2>&1 &
queued_verify=$!; bg_pids+=("$queued_verify")
r AT 5 WORKER.GET w1 >"$TMP/queued_at.out" 2>&1 &
queued_at=$!; bg_pids+=("$queued_at")
for ((i = 0; i < (JOB_TIMEOUT_S + 5) * 20; i++)); do
    grep -q TIMEOUT "$TMP/v4.out" && break
    sleep 0.05
done
waited_ms=$(( (${EPOCHREALTIME/./} - ${caught_at/./}) / 1000 ))
stop_verifier
grep -q TIMEOUT "$TMP/v4.out" || { kill -KILL "$CHILD"; fail "no -TIMEOUT $JOB_TIMEOUT_S + 5 s after the job's child was stopped: $(sort "$TMP/v4.out" | uniq -c)"; }
# Caught within a few hundred ms of its start (it had opened the journal).
[ "$waited_ms" -ge $(( JOB_TIMEOUT_S * 1000 - 1000 )) ] || fail "-TIMEOUT after $waited_ms ms, before --job-timeout $JOB_TIMEOUT_S s"
note "-TIMEOUT $waited_ms ms after the child was caught (--job-timeout $JOB_TIMEOUT_S s)"
grep -Eq "^TIMEOUT JOURNAL.VERIFY ran past --job-timeout $JOB_TIMEOUT_S s.*; the job was stopped; retry it" "$TMP/v4.out" ||
    fail "the -TIMEOUT reply: $(grep TIMEOUT "$TMP/v4.out")"
grep -Eq "JOURNAL.VERIFY ran past --job-timeout $JOB_TIMEOUT_S s.*: its process was killed \(SIGKILL\) and the client got TIMEOUT; its reader slot was freed" "$LOG" ||
    fail "no log line for the timed-out job freeing its reader slot"
gone_within "$CHILD" 20 "the timed-out child $CHILD still exists"
holds_reader "$CHILD" && fail "the timed-out child's reader slot is still taken: $(readers)"
wait "$queued_verify"; wait "$queued_at"
expect_eq "$(map_field ok <"$TMP/queued_verify.out")" 1 "the VERIFY queued behind the timed-out job: $(cat "$TMP/queued_verify.out")"
expect_eq "$(map_field name <"$TMP/queued_at.out")" w1 "the AT queued behind the timed-out job: $(cat "$TMP/queued_at.out")"
expect_verify_ok "a VERIFY after the timeout"
expect_eq "$(r INFO stats | tr -d '\r' | sed -n 's/^background_jobs_timed_out://p')" 1 "INFO's timed-out jobs"
expect_eq "$(cat /proc/"$BERTHD_PID"/task/*/children | tr -d ' \n')" "" "berthd's children once its jobs ended"
expect_eq "$(readers | grep -vx "$BERTHD_PID")" "" "reader slots of other processes than berthd"

# 4b. A killed child that does not go (D state on a hung filesystem; here
# its exit held by a ptracer that never waits, hold_exit.py, which looks
# the same to berthd): the job thread waits SERVER_JOB_REAP_WAIT_MS (2 s)
# for it, logs it and goes on, so the jobs queued behind it are answered
# (before, its waitpid held the job slot until the child went); INFO counts
# it; once it goes, the loop's reap timer reaps it and frees its reader slot.
REAP_WAIT_S=2
unreaped_info() { r INFO stats | tr -d '\r' | sed -n 's/^background_job_processes_unreaped://p'; }
expect_eq "$(unreaped_info)" 0 "INFO's unreaped job processes at first"
# hold_child OUT: a child caught inside a step, then held by a tracer (HOLDER).
# The tracer starts first and is told the pid once the child is caught:
# Python's start can take seconds on a loaded machine (a pyenv shim runs
# first), and a caught child that waited that long was killed by
# --job-timeout before the tracer attached (an ASan stage of CI, session 10).
hold_child() {
    rm -f "$TMP/hold.in" "$TMP/hold.out"
    mkfifo "$TMP/hold.in"
    python3 "$HOLD" - <"$TMP/hold.in" >"$TMP/hold.out" 2>&1 &
    HOLDER=$!; bg_pids+=("$HOLDER")
    local hold_in
    exec {hold_in}>"$TMP/hold.in"
    for ((i = 0; i < 600; i++)); do
        grep -q waiting "$TMP/hold.out" && break
        kill -0 "$HOLDER" 2>/dev/null || break
        sleep 0.05
    done
    grep -q waiting "$TMP/hold.out" || fail "hold_exit.py did not start in 30 s: $(cat "$TMP/hold.out")"
    caught_reading "$1"
    echo "$CHILD" >&"$hold_in"
    exec {hold_in}>&-
    # Wait for the tracer to show in the child's status.
    for ((i = 0; i < 600; i++)); do
        grep -q ready "$TMP/hold.out" && grep -Eq '^TracerPid:[[:space:]]*[1-9]' "/proc/$CHILD/status" && break
        kill -0 "$HOLDER" 2>/dev/null || break
        sleep 0.05
    done
    grep -q ready "$TMP/hold.out" ||
        fail "hold_exit.py did not attach to $CHILD in 30 s ($(ended "$HOLDER" && echo ended || echo running)): $(cat "$TMP/hold.out"); holder in $(cat /proc/$HOLDER/wchan 2>&1; tr '\n' ' ' </proc/$HOLDER/stack 2>&1); child: $(grep -E '^(State|TracerPid|Threads|SigPnd|ShdPnd)' /proc/$CHILD/status 2>&1 | tr '\n\t' '  ')"
}
hold_child "$TMP/v4b.out"
r JOURNAL.VERIFY >"$TMP/queued_verify2.out" 2>&1 &
queued_verify=$!; bg_pids+=("$queued_verify")
r AT 5 WORKER.GET w1 >"$TMP/queued_at2.out" 2>&1 &
queued_at=$!; bg_pids+=("$queued_at")
for ((i = 0; i < (JOB_TIMEOUT_S + REAP_WAIT_S + 8) * 20; i++)); do
    ended "$queued_verify" && ended "$queued_at" && break
    sleep 0.05
done
stop_verifier
if ! ended "$queued_verify" || ! ended "$queued_at"; then
    kill "$HOLDER"
    fail "the jobs queued behind a killed child that does not go were not answered in $((JOB_TIMEOUT_S + REAP_WAIT_S + 8)) s: $(sort "$TMP/v4b.out" | uniq -c)"
fi
wait "$queued_verify"; wait "$queued_at"
grep -Eq "^TIMEOUT JOURNAL.VERIFY ran past --job-timeout $JOB_TIMEOUT_S s" "$TMP/v4b.out" ||
    fail "the held child's client: $(sort "$TMP/v4b.out" | uniq -c)"
expect_eq "$(map_field ok <"$TMP/queued_verify2.out")" 1 "the VERIFY queued behind the unreaped child: $(cat "$TMP/queued_verify2.out")"
expect_eq "$(map_field name <"$TMP/queued_at2.out")" w1 "the AT queued behind the unreaped child: $(cat "$TMP/queued_at2.out")"
grep -q "JOURNAL.VERIFY's process $CHILD has not ended 2000 ms after it was killed (SIGKILL)" "$LOG" ||
    fail "no log line for the killed child that did not go"
expect_eq "$(unreaped_info)" 1 "INFO's unreaped job processes while the child is held"
expect_eq "$(r PING)" PONG "PING with a killed child unreaped"
kill "$HOLDER"; wait "$HOLDER" 2>/dev/null
for ((i = 0; i < 60; i++)); do [ "$(unreaped_info)" = 0 ] && break; sleep 0.05; done
expect_eq "$(unreaped_info)" 0 "INFO's unreaped job processes once the child went"
grep -Eq "job process $CHILD, killed and left unreaped [0-9]+ ms ago, has ended and was reaped$" "$LOG" ||
    fail "no log line for the late reap: $(grep 'job process' "$LOG")"
grep -q "after reaping 1 job process: their reader slots were freed" "$LOG" ||
    fail "the late reap did not free the child's reader slot: $(grep 'after reaping' "$LOG")"
holds_reader "$CHILD" && fail "the reaped child's reader slot is still taken: $(readers)"
# (a verify the verifier loop sent last may still be running: its child ends soon)
for ((i = 0; i < 100; i++)); do [ -z "$(cat /proc/"$BERTHD_PID"/task/*/children | tr -d ' \n')" ] && break; sleep 0.05; done
expect_eq "$(cat /proc/"$BERTHD_PID"/task/*/children | tr -d ' \n')" "" "berthd's children once the held one was reaped"

# 4c. berthd's stop with a killed child that does not go: bounded (before,
# SIGTERM waited for the child as long as the tracer held it).
hold_child "$TMP/v4c.out"
kill -TERM "$BERTHD_PID"
gone_within "$BERTHD_PID" $(( (REAP_WAIT_S + 4) * 20 )) "berthd still running $((REAP_WAIT_S + 4)) s after SIGTERM with a killed job child that does not go"
rc=0; wait "$BERTHD_PID" || rc=$?
BERTHD_PID=""
[ "$rc" -eq 0 ] || fail "berthd exited $rc after SIGTERM"
sanitizer_clean
stop_verifier
grep -q "berthd stops with job process $CHILD killed but not ended" "$LOG" || fail "no log line for the child left at the stop"
kill "$HOLDER"; wait "$HOLDER" 2>/dev/null
gone_within "$CHILD" 40 "the held child outlived its tracer"

# berth_caught OUT: `berth history rebuild` in the background (BERTH_PID),
# its guarded child caught and stopped (CHILD). The walk's child lives
# ~90 ms here, and on a loaded machine the catcher can miss it (2 runs in 10
# at load 4): a rebuild that ran to its end is harmless, so try again.
berth_caught() {
    local shell=$BASHPID   # here: in the background command it would be the catcher's own
    local attempt catcher i
    for ((attempt = 1; attempt <= 8; attempt++)); do
        python3 "$CATCH" --grandchild "$shell" 10 >"$TMP/caught" &
        catcher=$!
        for ((i = 0; i < 400; i++)); do grep -q ready "$TMP/caught" && break; sleep 0.025; done
        "$BERTH" history rebuild --data "$DATA" >"$1" 2>&1 &
        BERTH_PID=$!
        bg_pids+=("$BERTH_PID")
        # A caught child holds berth, so berth ending first means a miss.
        while ! ended "$catcher" && ! ended "$BERTH_PID"; do sleep 0.02; done
        ended "$BERTH_PID" && ! ended "$catcher" && kill "$catcher" 2>/dev/null
        if wait "$catcher"; then
            CHILD=$(tail -n 1 "$TMP/caught")
            # Caught after its swap (stderr, unbuffered, says so): the rebuild
            # is done but for its exit, which a kill now cannot undo; a miss.
            grep -q "kept the history index" "$1" || return
            note "attempt $attempt: berth's child caught after its rebuild was done; again"
            kill -CONT "$CHILD"
            wait "$BERTH_PID" || fail "a rebuild caught at its end failed: $(cat "$1")"
            continue
        fi
        wait "$BERTH_PID" || fail "an uncaught rebuild failed: $(cat "$1")"
        note "attempt $attempt: berth's child ended before it was caught; again"
    done
    fail "no child of berth caught in $((attempt - 1)) rebuilds"
}

# 5. berth SIGTERMed by its pid while its guarded child is stopped.
berth_caught "$TMP/rebuild.out"
kill -TERM "$BERTH_PID"
sleep 0.3
if ended "$BERTH_PID" && ! ended "$CHILD"; then
    kill -KILL "$CHILD"; kill -CONT "$CHILD"
    fail "berth ended at SIGTERM and left its child $CHILD running"
fi
kill -CONT "$CHILD"
gone_within "$BERTH_PID" 60 "berth still running 3 s after SIGTERM"
rc=0; wait "$BERTH_PID" || rc=$?
[ "$rc" -eq 143 ] || fail "berth exited $rc after SIGTERM, not 143 (the child's signal)"
gone_within "$CHILD" 20 "berth's child outlived it"
grep -q "rebuilt" "$TMP/rebuild.out" && fail "the rebuild ran on after SIGTERM: $(cat "$TMP/rebuild.out")"

# berth SIGKILLed (nothing to forward): the child ends of its death signal.
berth_caught "$TMP/rebuild2.out"
kill -KILL "$BERTH_PID"; wait "$BERTH_PID" 2>/dev/null
kill -CONT "$CHILD"
gone_within "$CHILD" 20 "berth's child outlived a SIGKILLed berth"
grep -q "rebuilt" "$TMP/rebuild2.out" && fail "the rebuild ran on after berth was killed: $(cat "$TMP/rebuild2.out")"
"$BERTH" history rebuild --data "$DATA" >"$TMP/rebuild3.out" 2>&1 || fail "a rebuild after: $(cat "$TMP/rebuild3.out")"
note "ok: job children hold none of berthd's descriptors, die with berthd and its stop, a SIGKILL is no damage, a hung one is killed at --job-timeout; berth's child dies with berth"
