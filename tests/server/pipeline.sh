#!/usr/bin/env bash
# pipeline.sh — many commands in flight on one connection: redis-cli --pipe
# with RESP arrays, and inline commands through nc. Every command gets exactly
# one reply, in order, and a read pipelined behind a write sees that write
# (it is answered only after the write's commit).
. "$(dirname "$0")/lib.sh"
start_berthd
workers=2000
deploys=1000

# RESP arrays: WORKER.ADD then a local DEPLOY on half of them.
resp() {   # words… → one RESP array
    local w
    printf '*%d\r\n' $#
    for w in "$@"; do printf '$%d\r\n%s\r\n' ${#w} "$w"; done
}
{
    for ((i = 0; i < workers; i++)); do resp WORKER.ADD "p-$i" GPUS 8; done
    for ((i = 0; i < deploys; i++)); do resp DEPLOY "inst-$i" MODEL m BACKEND vllm ON "p-$i:0,1"; done
} >"$TMP/pipe.resp"
out=$(r --pipe <"$TMP/pipe.resp" 2>&1)
expect_match "$out" "errors: 0, replies: $((workers + deploys))" "redis-cli --pipe of $((workers + deploys)) commands"
expect_eq "$(head_seq)" "$((workers + deploys))" "every pipelined command is one record"

# Inline commands through nc, writes then reads on one connection.
{
    printf 'WORKER.ADD late-1 GPUS 2\r\n'
    for ((i = 0; i < 200; i++)); do printf 'RELEASE inst-%d\r\n' "$i"; done
    printf 'INSTANCE.GET inst-0\r\nINSTANCE.GET inst-999\r\n'
    printf 'PING\r\nQUIT\r\n'
} >"$TMP/inline.txt"
out=$(nc_file "$TMP/inline.txt")
expect_match "$(sed -n 1p <<<"$out")" '^:[0-9]+$' "inline WORKER.ADD answers its seq"
expect_eq "$(head -n 201 <<<"$out" | grep -c '^:[0-9]')" 201 "inline WORKER.ADD + 200 RELEASEs each answer a seq"
expect_match "$(sed -n 202p <<<"$out")" '^-NOINSTANCE ' "INSTANCE.GET pipelined behind the RELEASE of that instance"
expect_match "$(sed -n 203p <<<"$out")" '^\*' "INSTANCE.GET of a live instance"
expect_match "$(tail -n 2 <<<"$out" | head -n 1)" '^\+PONG$' "PING after the pipeline"
expect_match "$(tail -n 1 <<<"$out")" '^\+OK$' "QUIT answers +OK"
# A read pipelined right behind a write sees it: answered after its commit.
out=$(nc_send 'WORKER.ADD late-2 GPUS 3\r\nWORKER.GET late-2\r\nQUIT\r\n')
expect_match "$(sed -n 1p <<<"$out")" '^:[0-9]+$' "WORKER.ADD late-2"
expect_match "$(sed -n 2p <<<"$out")" '^\*' "WORKER.GET pipelined behind WORKER.ADD sees the worker"
expect_eq "$(head_seq)" "$((workers + deploys + 202))" "journal head after the inline pipelines"
stop_berthd
note "ok ($((workers + deploys + 202)) records)"
