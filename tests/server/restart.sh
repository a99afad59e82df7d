#!/usr/bin/env bash
# restart.sh — a restart (clean, and from a snapshot plus tail) gives back
# the same state and the same DIGEST; REQID retries across a restart answer
# the first seq and append nothing; AT <seq> shows the past as it was; a
# second berthd on a locked data directory exits with a clear message.
. "$(dirname "$0")/lib.sh"
start_berthd --snapshot-every 7

ok() { local out; out=$(r "$@"); expect_int "$out" "$*"; echo "$out"; }
for i in 1 2 3 4 5 6; do ok WORKER.ADD "n$i" GPUS 8 VRAM 81920 LABEL "rack=r$((i % 2))" >/dev/null; done
ok WORKER.CORDON n6 >/dev/null
ok POLICY.SET EXCLUSIVE vllm,sglang >/dev/null
early_seq=$(head_seq)
early_workers=$(r WORKER.LIST)
early_digest=$(r DIGEST)
d1=$(ok DEPLOY big MODEL llama-405b BACKEND vllm ON n1 n2 n3 REQID deploy-big)
ok DEPLOY small MODEL qwen-7b BACKEND sglang VRAM 30000 ON n4:0,1 >/dev/null
ok DEPLOY tiny MODEL phi BACKEND sglang VRAM 20000 ON n4:1 >/dev/null
ok RELEASE small >/dev/null
r DEPLOY clash MODEL m BACKEND vllm ON n5 n1 >/dev/null   # EXCLUSIVE, journaled
a1=$(ok WORKER.ADD n7 GPUS 2 REQID add-n7)

snapshot() {
    for q in 'DIGEST' 'JOURNAL.HEAD' 'WORKER.LIST' 'WORKER.LIST STATE cordoned' 'WORKER.LIST FREE' \
             'INSTANCE.LIST' 'INSTANCE.LIST MODEL phi' 'POLICY.GET' 'WORKER.GET n1' 'WORKER.GET n4' \
             'INSTANCE.GET big' 'INSTANCE.GET tiny' 'HISTORY WORKER n1'; do
        echo "== $q"
        r $q
    done
}
snapshot >"$TMP/before.txt"
digest=$(r DIGEST)
[ -n "$digest" ] && [ "$digest" != "$early_digest" ] || fail "DIGEST should change with the state: [$early_digest] -> [$digest]"

# A second berthd on the same data directory refuses to start.
port2=$PORT; pick_port; other=$PORT; PORT=$port2
rc=0
timeout 10 "$BERTHD" --data "$DATA" --bind 127.0.0.1 --port "$other" >"$TMP/second.log" 2>&1 || rc=$?
expect_eq "$rc" 1 "exit status of a second berthd on a locked data directory"
grep -q 'LOCKED' "$TMP/second.log" || fail "the second berthd should say LOCKED: $(cat "$TMP/second.log")"

for round in 1 2; do
    if [ "$round" = 1 ]; then stop_berthd TERM; else stop_berthd INT; fi
    start_berthd --snapshot-every 7
    snapshot >"$TMP/after.txt"
    diff "$TMP/before.txt" "$TMP/after.txt" >"$TMP/diff.txt" || fail "restart $round changed the state: $(head -n 20 "$TMP/diff.txt")"
done
# The start line: records, workers, instances and the time taken; with
# --snapshot-every 7 the load starts from a snapshot, not genesis.
start_line=$(grep 'loaded ' "$LOG" | tail -n 1)
expect_match "$start_line" '[0-9]+ records .*[0-9]+ workers, [0-9]+ instances in [0-9]+ ms' "the start log line"
expect_match "$start_line" 'snapshot at seq [1-9]' "a restart loads the newest snapshot"

# REQID retries across the restart: first seq, nothing appended.
h=$(head_seq)
expect_eq "$(r DEPLOY big MODEL llama-405b BACKEND vllm ON n1 n2 n3 REQID deploy-big)" "$d1" "DEPLOY retry after restart"
expect_eq "$(r WORKER.ADD n7 GPUS 2 REQID add-n7)" "$a1" "WORKER.ADD retry after restart"
out=$(r WORKER.ADD n8 GPUS 2 REQID add-n7)
expect_match "$out" '^REQID ' "the same REQID with another command after restart"
expect_eq "$(head_seq)" "$h" "retries after restart append nothing"

# AT: the past, replayed.
expect_eq "$(r AT "$early_seq" WORKER.LIST)" "$early_workers" "AT $early_seq WORKER.LIST"
expect_eq "$(r AT "$early_seq" DIGEST)" "$early_digest" "AT $early_seq DIGEST"
expect_eq "$(r AT "$h" DIGEST)" "$digest" "AT head DIGEST"
out=$(r AT "$((h + 100))" DIGEST)
expect_match "$out" '^ERR' "AT beyond the head is an error"

# A kill -9 (no clean shutdown) keeps everything too.
expect_int "$(r RELEASE big)" "RELEASE big"
snapshot >"$TMP/before.txt"
kill9_berthd
start_berthd --snapshot-every 7
snapshot >"$TMP/after.txt"
diff "$TMP/before.txt" "$TMP/after.txt" >"$TMP/diff.txt" || fail "kill -9 and restart changed the state: $(head -n 20 "$TMP/diff.txt")"
expect_verify_ok "JOURNAL.VERIFY after restarts"
stop_berthd
note "ok (digest $digest)"
