#!/usr/bin/env bash
# handoff.sh — the loop/committer hand-off under load, across history folds
# and snapshots. The committer frees its slot as soon as it reports a batch
# (unless a snapshot of it is queued) and folds the history index after
# that, so the loop may hand off the next batch while a fold still runs:
# every DEPLOY/RELEASE must still be answered with success, exactly once and
# in order (bench_server checks each reply), the journal must verify, and a
# restart must rebuild the same state from it.
. "$(dirname "$0")/lib.sh"
BENCH_SERVER=${BENCH_SERVER:?BENCH_SERVER must name the bench_server binary}
workers=400
fold_records=16384        # journal.h's BERTH_HISTORY_FOLD_RECORDS_DEFAULT
records_min=$((2 * fold_records + 1000))
rounds_max=40
start_berthd --snapshot-every 1500

"$BENCH_SERVER" --port "$PORT" --mode add-workers --workers "$workers" --connections 4 --depth 32 \
    >/dev/null || fail "add-workers"
round=0
while [ "$(head_seq)" -lt "$records_min" ]; do
    round=$((round + 1))
    [ "$round" -le "$rounds_max" ] || fail "only $(head_seq) records after $rounds_max rounds"
    depth=$(( round % 2 == 0 ? 1 : 16 ))
    out=$("$BENCH_SERVER" --port "$PORT" --connections 8 --threads 2 --depth "$depth" \
          --workers "$workers" --seconds 1 --warmup-seconds 0 --tag "h$round") \
        || fail "cycle round $round (depth $depth): $out"
    expect_match "$out" ' errors=0$' "round $round (depth $depth) has no error reply"
done
note "$(head_seq) records in $round rounds"
expect_eq "$(r INSTANCE.LIST | sed '/^$/d' | wc -l)" 0 "every DEPLOY was released"
folded=$(r HISTORY WORKER w-0 1 1000 | grep -c '^seq$')
[ "$folded" -gt 2 ] || fail "HISTORY WORKER w-0 holds $folded records"
expect_verify_ok "after the cycles"
digest=$(r DIGEST)
head=$(head_seq)
stop_berthd
start_berthd --snapshot-every 1500
expect_eq "$(head_seq)" "$head" "the head after a restart"
expect_eq "$(r DIGEST)" "$digest" "the state rebuilt from the journal and its snapshots"
# The committer syncs each commit before it reports it (batch.c, pipe_run),
# so a lone write is answered without the loop asking for a sync of its own
# (INFO's commit_syncs), and without waiting for a next commit.
syncs_before=$(r INFO stats | tr -d '\r' | sed -n 's/^commit_syncs://p')
for i in $(seq 1 20); do expect_int "$(r WORKER.ADD lone-$i GPUS 1)" "lone write $i"; done
syncs_after=$(r INFO stats | tr -d '\r' | sed -n 's/^commit_syncs://p')
expect_eq "$syncs_after" "$syncs_before" "syncs the loop asked for, over 20 lone writes"
stop_berthd
note "ok"
