#!/usr/bin/env bash
# refusals.sh — every refusal code over the wire, each journaled (the head
# moves by one and JOURNAL.RANGE shows the code), and every syntax error
# answered with -ERR without touching the journal, the connection staying
# usable.
. "$(dirname "$0")/lib.sh"
start_berthd

ok() {   # command… : must succeed with a seq
    local out; out=$(r "$@"); expect_int "$out" "$*"
}
# refused CODE command… : -CODE sentence, journaled as one record with CODE.
refused() {
    local code=$1; shift
    local before out after rec
    before=$(head_seq)
    out=$(r "$@")
    expect_match "$out" "^$code [^ ]" "$* must be refused with $code and a sentence"
    after=$(head_seq)
    expect_eq "$after" "$((before + 1))" "$* ($code) is one journal record"
    rec=$(r JOURNAL.RANGE "$after" 1)
    expect_match "$rec" "$code" "JOURNAL.RANGE $after shows $code"
    echo "$out"
}
# syntax PATTERN command… : -ERR, nothing journaled.
syntax() {
    local pattern=$1; shift
    local before out
    before=$(head_seq)
    out=$(r "$@")
    expect_match "$out" "^ERR .*$pattern" "$* must be a syntax error"
    expect_eq "$(head_seq)" "$before" "$* must not reach the journal"
}

ok WORKER.ADD w1 GPUS 4 VRAM 1000
ok WORKER.ADD w2 GPUS 4 VRAM 1000
ok WORKER.ADD w3 GPUS 2
ok WORKER.ADD wc GPUS 2
ok WORKER.CORDON wc

refused EXISTS WORKER.ADD w1 GPUS 1 >/dev/null
refused NOWORKER WORKER.CORDON nowhere >/dev/null
refused NOWORKER WORKER.REMOVE nowhere >/dev/null
out=$(refused NOWORKER DEPLOY x MODEL m BACKEND vllm ON w1 nowhere)
expect_match "$out" 'nowhere' "NOWORKER names the worker"
out=$(refused CORDONED DEPLOY x MODEL m BACKEND vllm ON wc)
expect_match "$out" 'wc' "CORDONED names the worker"
out=$(refused NOGPU DEPLOY x MODEL m BACKEND vllm ON w1:9)
expect_match "$out" 'w1' "NOGPU names the worker"

ok DEPLOY d1 MODEL m BACKEND vllm ON w1:0 w2:0
out=$(refused EXCLUSIVE DEPLOY d2 MODEL m BACKEND vllm ON w3 w1:1)
expect_match "$out" 'w1.*d1|d1.*w1' "EXCLUSIVE names worker w1 and holder d1"
out=$(refused EXISTS DEPLOY d1 MODEL m BACKEND vllm ON w3)
expect_match "$out" 'd1' "EXISTS names the instance"

ok DEPLOY l1 MODEL m BACKEND sglang ON w2:1
out=$(refused GPUBUSY DEPLOY l2 MODEL m BACKEND sglang ON w2:1)
expect_match "$out" 'l1' "GPUBUSY names the holder"
ok DEPLOY v1 MODEL m BACKEND sglang VRAM 600 ON w2:2
out=$(refused NOVRAM DEPLOY v2 MODEL m BACKEND sglang VRAM 600 ON w2:2)
expect_match "$out" 'v1' "NOVRAM names the holders"
refused NOVRAM DEPLOY v3 MODEL m BACKEND sglang VRAM 100 ON w3:0 >/dev/null
ok DEPLOY v4 MODEL m BACKEND sglang VRAM 400 ON w2:2

refused NOINSTANCE RELEASE nothing-here >/dev/null
out=$(refused BUSY WORKER.REMOVE w2)
expect_match "$out" '[0-9]' "BUSY counts the instances"

# The same names do succeed once the rule is satisfied.
ok WORKER.UNCORDON wc
ok DEPLOY x MODEL m BACKEND vllm ON wc
ok POLICY.SET EXCLUSIVE vllm,sglang
ok RELEASE x
ok WORKER.REMOVE wc

# REQID: a retry answers the first seq and appends nothing; the same id with
# another command is refused and appends nothing.
first=$(r WORKER.ADD rq GPUS 1 REQID req-1); expect_int "$first" "WORKER.ADD with REQID"
h=$(head_seq)
again=$(r WORKER.ADD rq GPUS 1 REQID req-1)
expect_eq "$again" "$first" "a REQID retry answers the first seq"
expect_eq "$(head_seq)" "$h" "a REQID retry appends nothing"
out=$(r WORKER.ADD other GPUS 1 REQID req-1)
expect_match "$out" '^REQID ' "the same REQID with another command is refused with REQID"
expect_eq "$(head_seq)" "$h" "a REQID conflict appends nothing"

# Syntax errors: -ERR that says what was wrong; nothing journaled.
syntax 'unknown|command' NO.SUCH.COMMAND a b
syntax 'arg|arity|number' DEPLOY
syntax '' WORKER.ADD 'bad name!' GPUS 1
syntax '' WORKER.ADD w9 GPUS many
syntax '' WORKER.ADD w9 GPUS 65
syntax '' DEPLOY y MODEL m BACKEND vllm ON w1 w1
syntax '' DEPLOY y MODEL m BACKEND vllm ON w1:0,0
# A script's "REQID $id" with $id empty: refused, not read as a worker or a backend.
syntax 'REQID needs an id' DEPLOY y MODEL m BACKEND vllm ON w1 REQID
syntax 'REQID needs an id' POLICY.SET EXCLUSIVE vllm REQID
syntax 'backend cannot be named' POLICY.SET EXCLUSIVE vllm,reqid
syntax 'backend cannot be named' DEPLOY y MODEL m BACKEND REQID ON w1
syntax '' WORKER.GET
syntax '' JOURNAL.RANGE x 1

# One connection: errors in the middle leave it usable.
out=$(printf '%s\n' 'NO.SUCH' 'WORKER.ADD' 'RELEASE nothing-here' 'PING' | r_stdin)
expect_match "$(tail -n 1 <<<"$out")" '^PONG$' "the connection survives errors"
expect_eq "$(wc -l <<<"$out" | tr -d ' ')" 4 "one reply per command on one connection"

expect_verify_ok "JOURNAL.VERIFY after every refusal"
stop_berthd
note "ok (head $h)"
