#!/usr/bin/env bash
# commit_on_loop.sh — which thread writes and syncs a batch's commit-log
# frame (--commit-on-loop, --commit-on-loop-us; tools/batch.c, "Committing
# on the loop"). Whether a disk counts as quick is auto's own measure (the
# frames' average write and sync), and a CI machine's disk under load may
# average past the default 1 ms, so the checks that need a quick disk set
# the threshold far above any sync here, and the slow disk is disk_shim's
# delay_ms.log, far above that threshold.
#   1. auto, the default: INFO journal names the mode and the frames'
#      average; the first commit, made before any frame was timed, is on
#      the loop's thread (INFO stats commits_on_loop); the journal verifies.
#   2. auto under a 50 ms threshold: the commits are written on the loop,
#      all but the few that met the committer sealing the log's file after
#      10 ms idle (its idle work; those go to it): at most 3 of 40 here;
#      and the committer still seals and the checkpointer still moves the
#      frames into LMDB once writes pause, with no reader asking.
#   3. off: none is (commits_on_loop 0), the writes answered as before.
#   4. auto under a 20 ms threshold on a disk slowed to 60 ms a sync of the
#      log: once the average passes 20 ms the commits go to the committer
#      thread; once the delay is gone and the average falls back under it,
#      they come back to the loop. on keeps them on the loop on a slow disk.
#   5. A bad value is refused at start, naming the flag.
# What was acknowledged surviving kill -9 and OS crashes on either road is
# kill9.sh's and oscrash_log.sh's (run by ctest on both: server.cmake).
. "$(dirname "$0")/lib.sh"

# mark, then all_on_loop WHAT MISSES_MAX: every commit since the mark on
# the loop, but for at most MISSES_MAX that found the committer sealing the
# active file after 10 ms idle (they go to it; about one in a hundred here).
mark() {
    mark_commits=$(stat_field commits)
    mark_on_loop=$(stat_field commits_on_loop)
}
all_on_loop() {
    local commits on_loop
    commits=$(($(stat_field commits) - mark_commits))
    on_loop=$(($(stat_field commits_on_loop) - mark_on_loop))
    [ "$commits" -gt 0 ] && [ "$on_loop" -le "$commits" ] && [ "$on_loop" -ge $((commits - $2)) ] ||
        fail "$1: $on_loop of $commits commits on the loop"
}
# lmdb_catches_up WHAT: with no reader asking, the committer seals the
# active file once writes pause and the checkpointer moves it, so LMDB
# reaches the durable head (it must have armed its idle deadline though
# the frames were written on the loop).
lmdb_catches_up() {
    local i head lmdb
    for ((i = 0; i < 100; i++)); do
        head=$(info_field head_seq)
        lmdb=$(info_field lmdb_head_seq)
        [ -n "$head" ] && [ "$head" = "$lmdb" ] && return 0
        sleep 0.05
    done
    fail "$1: LMDB's head $lmdb stayed behind the durable head $head"
}
# writes N TAG: N DEPLOY/RELEASE pairs, one command a round trip (one commit each).
writes() {
    local i out
    for ((i = 0; i < $1; i++)); do
        out=$(r DEPLOY "$2-$i" MODEL m BACKEND vllm ON w1:0)
        expect_int "$out" "DEPLOY $2-$i"
        out=$(r RELEASE "$2-$i")
        expect_int "$out" "RELEASE $2-$i"
    done
}

# 1. auto, the default.
start_berthd
expect_eq "$(info_field commit_on_loop)" auto "INFO journal's commit_on_loop by default"
expect_int "$(r WORKER.ADD w1 GPUS 2)" "WORKER.ADD w1"
expect_eq "$(stat_field commits_on_loop)" 1 "the first commit, before any frame was timed"
writes 5 a
expect_match "$(info_field commit_frame_avg_us)" '^[0-9]+$' "INFO journal's commit_frame_avg_us"
expect_verify_ok "after writes under auto"
stop_berthd

# 2. auto, a threshold no sync here reaches.
start_berthd --commit-on-loop-us 50000
mark
writes 20 b
all_on_loop "auto under a 50 ms threshold" 3
lmdb_catches_up "after writes committed on the loop"
# One frame after a quiet spell: no later frame's own check seals it, only
# the committer's idle deadline, which that frame must have started.
expect_int "$(r DEPLOY lone MODEL m BACKEND vllm ON w1:1)" "DEPLOY lone"
lmdb_catches_up "after one more frame"
expect_verify_ok "after writes committed on the loop"
stop_berthd

# 3. off.
start_berthd --commit-on-loop off
expect_eq "$(info_field commit_on_loop)" off "INFO journal's commit_on_loop with off"
writes 10 c
[ "$(stat_field commits)" -ge 20 ] || fail "expected at least 20 commits with off"
expect_eq "$(stat_field commits_on_loop)" 0 "commits on the loop with off"
expect_verify_ok "after writes committed on the committer thread"
stop_berthd

# 4. A slow disk, then a quick one again; on, on a slow disk.
shim_preload
CTL="$TMP/ctl"
mkdir -p "$CTL"
start_log_shimmed() {
    BERTH_SHIM_DATA="$DATA/data.mdb" BERTH_SHIM_DISK="$TMP/disk.mdb" \
        BERTH_SHIM_LOG="$DATA/commit.log" BERTH_SHIM_LOG_DISK="$TMP/log.img" \
        BERTH_SHIM_LOG2="$DATA/commit.log.2" BERTH_SHIM_LOG2_DISK="$TMP/log2.img" \
        BERTH_SHIM_CTL="$CTL" LD_PRELOAD="$PRELOAD" start_berthd "$@"
}
start_log_shimmed --commit-on-loop-us 20000
mark
writes 5 d
all_on_loop "a quick disk under the shim, 20 ms threshold" 2
echo 60 >"$CTL/delay_ms.log"
writes 3 e   # six 60 ms frames: the average passes 20 ms after the fourth
slow_from=$(stat_field commits_on_loop)
commits_from=$(stat_field commits)
writes 5 f
expect_eq "$(stat_field commits_on_loop)" "$slow_from" "commits on the loop once frames average over 20 ms"
[ "$(stat_field commits)" -ge $((commits_from + 10)) ] || fail "the slow disk's writes were not committed"
[ "$(info_field commit_frame_avg_us)" -ge 20000 ] ||
    fail "the frames' average on a 60 ms disk: $(info_field commit_frame_avg_us) us"
rm -f "$CTL/delay_ms.log"
writes 15 g   # the average falls back under 20 ms within ~8 of the committer's frames
[ "$(stat_field commits_on_loop)" -gt "$slow_from" ] ||
    fail "commits did not come back to the loop once the disk was quick again"
expect_verify_ok "after commits moved between the threads"
stop_berthd
start_log_shimmed --commit-on-loop on
echo 20 >"$CTL/delay_ms.log"
mark
writes 5 h
rm -f "$CTL/delay_ms.log"
all_on_loop "on, on a 20 ms disk" 2
expect_verify_ok "after slow commits on the loop"
stop_berthd

# 5. A bad value.
if "$BERTHD" --data "$TMP/bad" --port 0 --unixsocket "$TMP/bad.sock" --commit-on-loop yes \
    >"$TMP/bad.log" 2>&1; then
    fail "berthd started with --commit-on-loop yes"
fi
grep -q -- '--commit-on-loop must be auto, on or off' "$TMP/bad.log" ||
    fail "the refusal does not name the flag: $(cat "$TMP/bad.log")"
note "ok"
