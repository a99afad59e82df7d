#!/usr/bin/env bash
# ckpt_priority.sh — the checkpointer (berthd-ckpt) lives at SCHED_IDLE and
# is raised when something waits on it (batch.c, "The checkpointer's
# priority"):
#   1. where the process may bring a thread back from SCHED_IDLE
#      (CAP_SYS_NICE, or RLIMIT_NICE 20), INFO says checkpoint_priority:background and the
#      thread's policy (/proc/.../stat field 41) is SCHED_IDLE (5) at rest;
#   2. a reader of the journal waits for a checkpoint: it is answered, the
#      raise is counted (checkpoint_boosts), and the thread goes back down;
#   3. the same on one CPU shared with a busy loop at the normal priority,
#      where an idle thread alone gets ~0.3% of the CPU: the reader is
#      answered within 5 s (15-18 ms measured);
#   4. --checkpoint-priority normal keeps SCHED_OTHER (0);
#   5. without CAP_SYS_NICE and with RLIMIT_NICE 0 the probe refuses: normal,
#      and the log says why (where 1 ran: setpriv drops the capabilities).
. "$(dirname "$0")/lib.sh"

policy_of() {   # TID: the scheduling policy, field 41 of stat (after "comm)")
    local stat
    stat=$(cat "/proc/$BERTHD_PID/task/$1/stat" 2>/dev/null) || return 1
    awk '{ print $39 }' <<<"${stat##*) }"
}
ckpt_tid() { thread_tid berthd-ckpt; }
# wait_policy TID WANT WHY: the thread's policy becomes WANT within 10 s.
wait_policy() {
    local i p=""
    for ((i = 0; i < 200; i++)); do
        p=$(policy_of "$1")
        [ "$p" = "$2" ] && return 0
        sleep 0.05
    done
    fail "$3: berthd-ckpt's policy is [$p], expected [$2]"
}
# write_some N FROM: N WORKER.ADDs, w<FROM>.., over one connection.
write_some() {
    local i
    for ((i = $2; i < $2 + $1; i++)); do echo "WORKER.ADD w$i GPUS 8"; done | r_stdin >/dev/null
}

# Privileged: CAP_SYS_NICE (bit 23 of CapEff; root in a container may lack
# it) or an RLIMIT_NICE of 20 or more, as berthd's probe needs.
privileged=0
capeff=$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status)
if [ -n "$capeff" ] && (( (0x$capeff >> 23) & 1 )); then
    privileged=1
fi
nice_limit=$(ulimit -e)
if [ "$nice_limit" = unlimited ] || [ "$nice_limit" -ge 20 ]; then
    privileged=1
fi

start_berthd
tid=$(ckpt_tid)
if [ "$privileged" = 1 ]; then
    expect_eq "$(info_field checkpoint_priority)" background "INFO checkpoint_priority (privileged)"
    # At rest after a checkpoint (a raise at start, when the loop met it
    # holding the mutex, lasts until then).
    write_some 10 100000
    wait_policy "$tid" 5 "at rest"

    # 2. A reader that needs LMDB at the durable head raises it.
    write_some 2000 0
    wait_policy "$tid" 5 "after 2,000 writes"
    boosts0=$(info_field checkpoint_boosts)
    # The write and the read in one packet: the read waits for the write to
    # be durable, then for a checkpoint, never finding LMDB already there
    # (two redis-cli calls could be slower than the 10 ms checkpoint).
    seq=$(( $(head_seq) + 1 ))
    out=$(nc_send "WORKER.ADD reader-probe GPUS 1\r\nJOURNAL.RANGE $seq 1\r\nQUIT\r\n")
    expect_match "$out" "^:$seq" "the write just before the read"
    expect_match "$out" "WORKER.ADD reader-probe GPUS 1" "JOURNAL.RANGE of the record just written"
    boosts1=$(info_field checkpoint_boosts)
    [ "$boosts1" -gt "$boosts0" ] || fail "the reader's wait raised nothing: boosts $boosts0 -> $boosts1"
    wait_policy "$tid" 5 "after the raised checkpoint"
    [ "$(info_field checkpoint_background_runs)" -ge 1 ] || fail "no checkpoint ran in the background"

    # 3. One CPU, a busy loop beside berthd: the reader still gets its checkpoint.
    if command -v taskset >/dev/null; then
        cpu=$(taskset -pc "$BERTHD_PID" | sed 's/.*: *//; s/[,-].*//')
        taskset -apc "$cpu" "$BERTHD_PID" >/dev/null || fail "taskset on berthd"
        taskset -c "$cpu" bash -c 'while :; do :; done' &
        bg_pids+=($!)
        write_some 3000 10000
        seq=$(r WORKER.ADD reader-probe-2 GPUS 1)
        expect_int "$seq" "a write beside the busy loop"
        t0=$(date +%s%N)
        expect_eq "$(r JOURNAL.RANGE "$seq" 1 | map_field command)" \
            "WORKER.ADD reader-probe-2 GPUS 1" "JOURNAL.RANGE beside the busy loop"
        ms=$(( ($(date +%s%N) - t0) / 1000000 ))
        note "a journal read beside a busy loop on CPU $cpu: ${ms} ms"
        # Raised: 15-18 ms here (16-800 ms before the second review's mends,
        # when an urge could be lost); with the raise removed, 1,089 ms (the
        # room urge at 4,096 records bounds even that). The counter in 2 is
        # what tells the raise apart; this bound only catches a starvation.
        [ "$ms" -lt 5000 ] || fail "the reader waited ${ms} ms for an idle checkpointer"
        kill -9 "${bg_pids[@]}" 2>/dev/null; wait "${bg_pids[@]}" 2>/dev/null; bg_pids=()
    else
        note "no taskset: the one-CPU case is skipped"
    fi
    expect_verify_ok "after the checkpoints"
else
    expect_eq "$(info_field checkpoint_priority)" normal "INFO checkpoint_priority (unprivileged)"
    expect_eq "$(policy_of "$tid")" 0 "berthd-ckpt's policy (unprivileged)"
fi
stop_berthd

# 4. Asked for the normal priority.
start_berthd --checkpoint-priority normal
expect_eq "$(info_field checkpoint_priority)" normal "INFO with --checkpoint-priority normal"
write_some 500 20000
expect_eq "$(policy_of "$(ckpt_tid)")" 0 "berthd-ckpt's policy with --checkpoint-priority normal"
expect_eq "$(info_field checkpoint_background_runs)" 0 "background runs with --checkpoint-priority normal"
stop_berthd
rc=0
out=$("$BERTHD" --data "$TMP/bad" --port 0 --unixsocket "$TMP/bad.sock" --checkpoint-priority low 2>&1) || rc=$?
expect_eq "$rc" 2 "berthd's exit on a bad --checkpoint-priority"
expect_match "$out" "checkpoint-priority must be background or normal" "a bad --checkpoint-priority"

# 5. No way back from SCHED_IDLE: the probe refuses, and the log says so.
if [ "$privileged" = 1 ] && command -v setpriv >/dev/null && command -v prlimit >/dev/null; then
    real_berthd=$BERTHD
    BERTHD="$TMP/berthd-unprivileged"
    cat >"$BERTHD" <<EOF
#!/bin/sh
exec prlimit --nice=0:0 setpriv --inh-caps=-all --bounding-set=-all -- "$real_berthd" "\$@"
EOF
    chmod +x "$BERTHD"
    start_berthd
    expect_eq "$(info_field checkpoint_priority)" normal "INFO without CAP_SYS_NICE, RLIMIT_NICE 0"
    grep -q "the checkpointer runs at the normal priority" "$LOG" || fail "no log line on the refused probe"
    expect_int "$(r WORKER.ADD w-unprivileged GPUS 1)" "a write, unprivileged"
    stop_berthd
    BERTHD=$real_berthd
else
    note "unprivileged, or no setpriv/prlimit: the refused probe is not staged"
fi
note "ok"
