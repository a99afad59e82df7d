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

# A client that sends a long pipeline and reads nothing for a while: its
# socket fills, berthd stops writing to it (EAGAIN, write watcher), then
# stops reading from it (output over half of --max-output-bytes) and resumes
# once it reads. Replies pile up behind partly written ones in the output
# buffer the whole time; every one must come out, once, in order, with the
# writes among them answered after their commits.
start_berthd --max-output-bytes 1048576
slow_n=30000
write_every=1000
{
    for ((i = 1; i <= slow_n; i++)); do
        printf 'WORKER.GET p-1\r\nECHO m-%d\r\n' "$i"
        if ((i % write_every == 0)); then
            if ((i / write_every % 2)); then printf 'WORKER.CORDON p-7\r\n'; else printf 'WORKER.UNCORDON p-7\r\n'; fi
        fi
    done
    printf 'QUIT\r\n'
} >"$TMP/slow.txt"
processed() { r INFO stats | tr -d '\r' | sed -n 's/^total_commands_processed://p'; }
before=$(processed)
exec {slow_fd}<>"/dev/tcp/127.0.0.1/$PORT"
cat "$TMP/slow.txt" >&"$slow_fd" &
bg_pids+=($!)
sleep 1                          # nothing read yet: berthd's side is full
paused_at=$(( $(processed) - before - 1 ))
[ "$paused_at" -lt $((2 * slow_n)) ] || fail "the slow reader was never paused ($paused_at commands served)"
timeout 60 cat <&"$slow_fd" | tr -d '\r' >"$TMP/slow.out"
exec {slow_fd}>&-
expect_eq "$(grep -c '^\*20$' "$TMP/slow.out")" "$slow_n" "a slow reader gets every WORKER.GET reply"
awk -v n="$slow_n" -v every="$write_every" '
    /^m-[0-9]+$/ { k++; if ($0 != "m-" k) { print "reply " $0 " where m-" k " was due"; exit 1 }
                   if (k % every == 0) { want_seq = 1 }; next }
    want_seq { want_seq = 0
               if ($0 !~ /^:[0-9]+$/ || substr($0, 2) + 0 <= last) { print "after m-" k ": [" $0 "], not a seq above " last; exit 1 }
               last = substr($0, 2) + 0; writes++ }
    END { if (k != n || writes != n / every) { print k " ECHO replies and " writes " write replies"; exit 1 } }
' "$TMP/slow.out" || fail "a slow reader's replies out of order or missing (see above)"
expect_eq "$(tail -n 1 "$TMP/slow.out")" "+OK" "QUIT answers last"
stop_berthd
note "ok ($((workers + deploys + 202)) records; a slow reader, paused after $paused_at commands, got $slow_n pipelined replies in order)"
