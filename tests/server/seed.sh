#!/usr/bin/env bash
# seed.sh — the seed case end to end through redis-cli: two distributed vllm
# instances over a shared worker; the second is refused with EXCLUSIVE naming
# the worker and the holder (and the seq of its DEPLOY); after RELEASE it is
# accepted. The refusal is itself a journal record with its outcome.
. "$(dirname "$0")/lib.sh"
start_berthd

for w in gpu-a gpu-b gpu-c; do
    out=$(r WORKER.ADD "$w" GPUS 8 VRAM 81920 LABEL rack=r1)
    expect_int "$out" "WORKER.ADD $w"
done
a_seq=$(r DEPLOY llama-a MODEL llama-3-70b BACKEND vllm ON gpu-a gpu-b)
expect_int "$a_seq" "DEPLOY llama-a"

out=$(r DEPLOY qwen-b MODEL qwen-72b BACKEND vllm ON gpu-c gpu-b)
expect_match "$out" '^EXCLUSIVE ' "second distributed vllm on gpu-b"
expect_match "$out" 'gpu-b' "the refusal names the shared worker"
expect_match "$out" 'llama-a' "the refusal names the holder"
expect_match "$out" "(^|[^0-9])$a_seq([^0-9]|$)" "the refusal names the holder's deploy seq $a_seq"
refusal_seq=$(head_seq)
expect_eq "$refusal_seq" "$((a_seq + 1))" "a refusal is journaled: head after it"

# The refusal's record carries its outcome.
rec=$(r JOURNAL.RANGE "$refusal_seq" 1)
expect_match "$rec" 'EXCLUSIVE' "JOURNAL.RANGE shows the refusal's code"
expect_match "$rec" 'DEPLOY qwen-b' "JOURNAL.RANGE shows the refused command"

# The subordinate is checked too: the main worker free, the shared one not.
out=$(r DEPLOY qwen-b MODEL qwen-72b BACKEND vllm ON gpu-b gpu-c)
expect_match "$out" '^EXCLUSIVE .*gpu-b' "main worker gpu-b held by llama-a"

r_seq=$(r RELEASE llama-a)
expect_int "$r_seq" "RELEASE llama-a"
b_seq=$(r DEPLOY qwen-b MODEL qwen-72b BACKEND vllm ON gpu-c gpu-b)
expect_int "$b_seq" "DEPLOY qwen-b after RELEASE"
[ "$b_seq" -gt "$r_seq" ] || fail "seqs must grow: release $r_seq, deploy $b_seq"

inst=$(r INSTANCE.GET qwen-b)
expect_match "$inst" 'qwen-72b' "INSTANCE.GET shows the model"
expect_match "$inst" 'vllm' "INSTANCE.GET shows the backend"
expect_match "$inst" 'gpu-c' "INSTANCE.GET shows the main worker"
expect_match "$inst" "(^|[^0-9])$b_seq([^0-9]|$)" "INSTANCE.GET shows the DEPLOY's seq"
wk=$(r WORKER.GET gpu-b)
expect_match "$wk" 'qwen-b' "WORKER.GET gpu-b shows the instance it serves"
expect_match "$wk" 'rack' "WORKER.GET shows labels"
out=$(r INSTANCE.GET llama-a)
expect_match "$out" '^NOINSTANCE ' "a released instance is gone"
list=$(r INSTANCE.LIST WORKER gpu-b)
expect_match "$list" 'qwen-b' "INSTANCE.LIST WORKER gpu-b"
[[ "$list" != *llama-a* ]] || fail "INSTANCE.LIST still lists llama-a: $list"

hist=$(r HISTORY WORKER gpu-b)
for s in "$a_seq" "$refusal_seq" "$r_seq" "$b_seq"; do
    expect_match "$hist" "(^|[^0-9])$s([^0-9]|$)" "HISTORY WORKER gpu-b lists seq $s"
done
expect_verify_ok "JOURNAL.VERIFY"
stop_berthd
note "ok (deploy seq $a_seq, refusal seq $refusal_seq, redeploy seq $b_seq)"
