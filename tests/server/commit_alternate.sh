#!/usr/bin/env bash
# commit_alternate.sh — batches written now on the loop, now on the
# committer thread, under load (tools/batch.c, "Committing on the loop").
# The committer frees the slot before the tail of a job (it may seal the
# commit log's active file there), so a loop that took the next batch at
# once would append to the file being sealed: the sealed file's end then
# misses frames that were acknowledged, and the checkpoint that moves it
# finds them and stops berthd (CORRUPT). Session 21's first version did so
# once, 10 s into bench_server.sh's depth-16 run; the window is a few
# microseconds, and this stress did not catch that version in three tries
# here, so it guards the turns themselves more than that one race.
# To make the two threads take turns, berthd runs with --commit-on-loop-us
# at the frames' own average, measured first on this machine under the
# same load (50 connections, 16 in flight: about half the commits then go
# to each), and with a snapshot every 20,000 records (a snapshot's batch is
# the committer's).
# Then: every DEPLOY/RELEASE answered with success (bench_server checks
# each reply), berthd still up with no checkpoint failed, commits on both
# threads, the journal verifies and a restart rebuilds the same state.
# Last, a frame the loop cannot write: with --commit-on-loop on and the
# checkpoints held back (disk_shim makes each sync of data.mdb take 3 s),
# a depth-16 stream fills the commit log's 40 MiB active file (at about
# 100,000 records), so the loop's
# append finds no room (FULL, nothing written) and gives the batch back to
# the committer, which checkpoints and writes it. Every reply must still
# be a success, and the journal must verify. (The first version of the
# give-back handed the batch over twice and berthd aborted here.)
. "$(dirname "$0")/lib.sh"
BENCH_SERVER=${BENCH_SERVER:?BENCH_SERVER must name the bench_server binary}
workers=4000
rounds=8
cycle() {   # depth seconds tag
    local out
    out=$("$BENCH_SERVER" --port "$PORT" --connections 50 --threads 2 --depth "$1" \
          --workers "$workers" --seconds "$2" --warmup-seconds 0 --tag "$3") ||
        fail "cycle $3 (depth $1): $out"
    expect_match "$out" ' errors=0$' "cycle $3 (depth $1) has no error reply"
}

start_berthd
"$BENCH_SERVER" --port "$PORT" --mode add-workers --workers "$workers" --connections 4 --depth 32 \
    >/dev/null || fail "add-workers"
cycle 16 1 warm
avg_us=$(info_field commit_frame_avg_us)
[[ "$avg_us" =~ ^[0-9]+$ ]] && [ "$avg_us" -ge 1 ] || fail "commit_frame_avg_us after a warm-up: [$avg_us]"
stop_berthd

start_berthd --commit-on-loop-us "$avg_us" --snapshot-every 20000
for ((i = 1; i <= rounds; i++)); do
    cycle 16 1 "a$i"
    kill -0 "$BERTHD_PID" 2>/dev/null || fail "berthd stopped after round $i"
done
commits=$(stat_field commits)
on_loop=$(stat_field commits_on_loop)
note "threshold $avg_us us: $on_loop of $commits commits on the loop"
[ "$on_loop" -gt 0 ] && [ "$on_loop" -lt "$commits" ] ||
    fail "the commits did not take turns: $on_loop of $commits on the loop"
expect_eq "$(info_field checkpoint_failures)" 0 "checkpoints failed"
expect_eq "$(info_field commit_log_status)" OK "the commit log's status"
expect_verify_ok "after the turns"
digest=$(r DIGEST)
head=$(head_seq)
stop_berthd
grep -q 'CORRUPT' "$LOG" && fail "berthd's log names a corrupt commit log: $(grep -m1 CORRUPT "$LOG")"
start_berthd --snapshot-every 20000
expect_eq "$(head_seq)" "$head" "the head after a restart"
expect_eq "$(r DIGEST)" "$digest" "the state rebuilt from the journal"
stop_berthd

# The log tracked too, so that each commit's sync of it is a line in the
# shim's CTL/syncs: the commits' heartbeat.
shim_ctl_setup
start_shimmed_log() {
    BERTH_SHIM_LOG="$DATA/commit.log" BERTH_SHIM_LOG_DISK="$TMP/log.img" \
        BERTH_SHIM_LOG2="$DATA/commit.log.2" BERTH_SHIM_LOG2_DISK="$TMP/log2.img" start_shimmed "$@"
}
# No snapshots: a snapshot's batch would wait for a full checkpoint before
# the active file filled.
start_shimmed_log --commit-on-loop on --commit-log-mib 80 --snapshot-every 0
log_syncs() { grep -c 'sync log' "$CTL/syncs" 2>/dev/null || echo 0; }
echo 3000 >"$CTL/delay_ms.data"   # the checkpointer's syncs: 3 s each
"$BENCH_SERVER" --port "$PORT" --connections 50 --threads 2 --depth 16 --workers "$workers" \
    --seconds 12 --warmup-seconds 0 --tag full >"$TMP/full.out" 2>&1 &
bench=$!
bg_pids+=("$bench")
# Once the active file is full the committer waits for the held-back
# checkpointer and the commits stop: then let the checkpoints run, so that
# the full checkpoint it does next takes seconds, not minutes.
last=-1
still=0
stalled=0
for ((i = 0; i < 200 && stalled == 0; i++)); do   # 10 s at most (it stops about 0.5 s in here)
    sleep 0.05
    now=$(log_syncs)
    if [ "$now" -gt 0 ] && [ "$now" = "$last" ]; then still=$((still + 1)); else still=0; fi
    last=$now
    [ "$still" -ge 20 ] && stalled=1   # 1 s without a commit
done
rm -f "$CTL/delay_ms.data"
wait "$bench" || fail "the stream over a full active file: $(cat "$TMP/full.out")"
expect_match "$(tail -n 1 "$TMP/full.out")" ' errors=0$' "the stream over a full active file has no error reply"
[ "$stalled" = 1 ] || fail "the commits never stopped for the held-back checkpointer ($last log syncs)"
note "the commits stopped after $((i * 50)) ms of the stream"
kill -0 "$BERTHD_PID" 2>/dev/null || fail "berthd stopped when the active file filled"
handed=$(($(stat_field commits) - $(stat_field commits_on_loop)))
[ "$handed" -ge 1 ] || fail "no batch went to the committer: the active file never filled"
expect_eq "$(info_field checkpoint_failures)" 0 "checkpoints failed while held back"
expect_verify_ok "after the active file filled"
stop_berthd
note "ok"
