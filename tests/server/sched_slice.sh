#!/usr/bin/env bash
# sched_slice.sh — the loop thread and the committer (berthd-commit) ask
# Linux for a 0.1 ms time slice (networking.c, server_thread_short_slice),
# so that waking from a read or an fdatasync they preempt sooner; the
# other threads keep the default. Read from /proc/PID/task/TID/sched's
# se.slice, which kernels that honour the request (6.12 on) show; skipped
# where there is no such line.
. "$(dirname "$0")/lib.sh"
start_berthd
slice_of() { sed -n 's/^se\.slice *: *\([0-9]*\)$/\1/p' "/proc/$BERTHD_PID/task/$1/sched" 2>/dev/null; }
loop=$(slice_of "$BERTHD_PID")
# 6.6 to 6.11 show se.slice but ignore the request (custom slices came in 6.12).
kernel=$(uname -r)
kmajor=${kernel%%.*}
kminor=${kernel#*.}; kminor=${kminor%%[!0-9]*}
if [ "$kmajor" -lt 6 ] || { [ "$kmajor" -eq 6 ] && [ "$kminor" -lt 12 ]; }; then
    note "Linux $kernel predates custom time slices (6.12): skipped"
    stop_berthd
    exit 0
fi
if [ -z "$loop" ]; then
    note "no se.slice in /proc/$BERTHD_PID/task/*/sched on $(uname -sr): skipped"
    stop_berthd
    exit 0
fi
commit_tid=$(thread_tid berthd-commit)
other=$(thread_tid berth-fold)
expect_eq "$loop" 100000 "the loop thread's slice (ns)"
expect_eq "$(slice_of "$commit_tid")" 100000 "the committer's slice (ns)"
[ "$(slice_of "$other")" -gt 100000 ] || fail "the fold thread's slice is not the default: $(slice_of "$other")"
# Still served after the request: a write and a query.
expect_int "$(r WORKER.ADD w1 GPUS 8)" "WORKER.ADD"
expect_eq "$(r WORKER.GET w1 | map_field gpus)" 8 "WORKER.GET"
stop_berthd
note "ok"
