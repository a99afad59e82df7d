#!/usr/bin/env bash
# fold_backlog.sh — INFO journal's history_fold_* figures, and the history
# fold keeping up while every core is busy: a busy loop per core beside a
# pipelined DEPLOY/RELEASE load, with folds every 1,024 records
# (--history-fold-records). The touch-log backlog (durable records not yet
# folded) must stay far under the load's records while it lasts and fall
# under one fold once it stops; folded_seq + backlog must be the head.
. "$(dirname "$0")/lib.sh"
BENCH_SERVER=${BENCH_SERVER:?BENCH_SERVER must name the bench_server binary}
fold=1024
workers=400

# The checkpointer at the normal priority: this tests the fold, and beside
# busy loops a checkpointer at SCHED_IDLE moves records into LMDB only when
# urged, 4,096 at a time, so the folds come one a lump, not one a 1,024
# (28 folds for 120,544 records under ASan in CI, against the 29 asked).
# server_ckpt_priority tests the background checkpointer.
start_berthd --history-fold-records "$fold" --checkpoint-priority normal
out=$("$BENCH_SERVER" --port "$PORT" --mode add-workers --workers "$workers" --connections 4 --depth 32) \
    || fail "add-workers: $out"
# 400 WORKER.ADDs: under one fold, so none ran yet. The backlog counts what
# LMDB holds: JOURNAL.HEAD first, which waits for the checkpoint that moves
# the commit log's records there (the checkpointer may be idle, behind).
expect_eq "$(head_seq)" "$workers" "the head after the workers"
expect_eq "$(info_field history_folds) $(info_field history_folded_seq) $(info_field history_fold_backlog)" \
    "0 0 $workers" "INFO journal before any fold"

# One busy loop per core, in berthd's session (so in its scheduling group
# too, where autogroups are on).
for ((i = 0; i < $(nproc); i++)); do
    ( while :; do :; done ) &
    bg_pids+=($!)
done
out=$("$BENCH_SERVER" --port "$PORT" --connections 8 --threads 2 --depth 16 --workers "$workers" \
      --seconds 6 --warmup-seconds 0 --tag fold) || fail "cycle: $out"
for pid in "${bg_pids[@]}"; do kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
bg_pids=()
n=$(sed -n 's/.* commands=\([0-9]*\) .*/\1/p' <<<"$out")
[ "${n:-0}" -gt $((16 * fold)) ] || fail "the load made only ${n:-0} records, under $((16 * fold)): $out"

max=$(info_field history_fold_backlog_max)
folds=$(info_field history_folds)
note "$n records under load, $folds folds, backlog max $max"
[ "$folds" -ge $((n / (4 * fold))) ] || fail "$folds folds for $n records of $fold a fold"
# A fold takes what is durable when it starts; records keep coming while it
# sorts and syncs, on cores it shares with the busy loops: 18,080 was seen
# on 2 cores at load 8 from other jobs.
[ "$max" -ge "$fold" ] || fail "the backlog never reached a fold ($max)"
# A folder that stopped would leave most of the load's records behind.
[ "$max" -le $((64 * fold)) ] && [ "$max" -lt $((n / 2)) ] \
    || fail "the touch-log backlog reached $max records of $n, $fold a fold"

# Once the load stops, the folds catch up: the backlog falls under one fold.
# The backlog counts what LMDB holds, and LMDB trails the durable head by
# the commit log's last records until a checkpoint: JOURNAL.HEAD waits for
# that checkpoint, so the head is read first. (With the checkpointer at
# SCHED_IDLE beside busy loops, LMDB trailed by 6,656 records here.)
head=$(head_seq)
for ((i = 0; i < 200; i++)); do
    [ "$(info_field history_fold_backlog)" -lt "$fold" ] && break
    sleep 0.05
done
backlog=$(info_field history_fold_backlog)
[ "$backlog" -lt "$fold" ] || fail "the backlog stayed at $backlog records after the load"
expect_eq "$(( $(info_field history_folded_seq) + backlog ))" "$head" "folded_seq + backlog is the head"
[ "$(info_field history_folded_seq)" -gt $((n / 2)) ] || fail "history_folded_seq $(info_field history_folded_seq) for $n records"
expect_verify_ok "after the load"
stop_berthd
note "ok"
