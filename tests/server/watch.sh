#!/usr/bin/env bash
# watch.sh — WATCH <from-seq>: catch-up from the journal, then each new
# record live as it commits, in seq order, each exactly once; subscribe-style
# arrays under RESP2 and push frames under RESP3; a read-only query on
# another connection is unaffected.
. "$(dirname "$0")/lib.sh"
start_berthd
before=40
live=25

for ((i = 0; i < before; i++)); do printf 'WORKER.ADD ww-%d GPUS 1\n' "$i"; done | r >/dev/null
expect_eq "$(head_seq)" "$before" "records before the watch"

# watcher NAME PREFIX: nc kept open on a fifo, its output in $TMP/NAME.out.
watcher() {
    local name=$1 prefix=$2
    mkfifo "$TMP/$name.in"
    nc 127.0.0.1 "$PORT" <"$TMP/$name.in" >"$TMP/$name.out" &
    bg_pids+=($!)
    eval "exec {fd_$name}>\"\$TMP/\$name.in\""
    local fd_var="fd_$name"
    printf '%b' "$prefix" >&"${!fd_var}"
}
# wait_for NAME COUNT PATTERN: until COUNT lines match, 10 s at most.
wait_for() {
    local i n
    for ((i = 0; i < 400; i++)); do
        n=$(tr -d '\r' <"$TMP/$1.out" | grep -c -- "$3")
        [ "$n" -ge "$2" ] && return 0
        sleep 0.025
    done
    fail "$1 saw $n of $2 lines matching /$3/: $(tr -d '\r' <"$TMP/$1.out" | tail -n 12)"
}

watcher w2 'WATCH 1\r\n'
watcher w3 'HELLO 3\r\nWATCH 21\r\n'
watcher w4 'WATCH 0\r\n'
wait_for w2 "$before" '^WORKER.ADD ww-'
wait_for w3 "$((before - 20))" '^WORKER.ADD ww-'
# The first frame is ["watch", from-seq, head-seq]; WATCH 0 starts after the head.
wait_for w4 1 '^watch$'
expect_eq "$(tr -d '\r' <"$TMP/w4.out" | head -n 5 | tr '\n' ' ')" "*3 \$5 watch :$((before + 1)) :$before " "WATCH 0's first frame"
# A from-seq above 2^63-1 comes back as a bulk string (RESP integers are signed).
out=$(printf 'WATCH 18446744073709551615\r\nQUIT\r\n' | nc -q 2 127.0.0.1 "$PORT" | tr -d '\r' | head -n 7 | tr '\n' ' ')
expect_eq "$out" "*3 \$5 watch \$20 18446744073709551615 :$before +OK " "WATCH 2^64-1's first frame"

# Live: writes from another client appear while the watchers stay connected.
for ((i = 0; i < live; i++)); do
    expect_int "$(r WORKER.ADD live-$i GPUS 2)" "live WORKER.ADD $i"
done
expect_int "$(r DEPLOY li MODEL m BACKEND vllm ON live-0 live-1)" "live DEPLOY"
wait_for w2 "$live" '^WORKER.ADD live-'
wait_for w2 1 '^DEPLOY li '
wait_for w3 "$live" '^WORKER.ADD live-'
wait_for w4 "$live" '^WORKER.ADD live-'
n=$(tr -d '\r' <"$TMP/w4.out" | grep -c '^WORKER.ADD ww-')
expect_eq "$n" 0 "WATCH 0 sends no record from before it"

# A watching connection takes only PING and QUIT. Under RESP2 PING answers
# as Redis does in subscribe mode, ["pong", <message or "">]; under RESP3
# as anywhere.
printf 'WORKER.GET live-0\r\nPING\r\nPING hc-1\r\n' >&"$fd_w2"
wait_for w2 1 '^-ERR only PING and QUIT'
wait_for w2 1 '^hc-1$'
expect_eq "$(tr -d '\r' <"$TMP/w2.out" | grep -B2 -A2 -x pong | tr '\n' ' ')" \
    "*2 \$4 pong \$0  *2 \$4 pong \$4 hc-1 " "PING and PING hc-1 while watching, RESP2"
! grep -q '^+PONG' "$TMP/w2.out" || fail "a RESP2 watching connection answered PING with +PONG"
printf 'PING\r\n' >&"$fd_w3"
wait_for w3 1 '^+PONG'

# Each record once and in order (the command words are unique).
tr -d '\r' <"$TMP/w2.out" | grep -E '^(WORKER.ADD|DEPLOY) ' >"$TMP/w2.cmds"
{
    for ((i = 0; i < before; i++)); do echo "WORKER.ADD ww-$i GPUS 1"; done
    for ((i = 0; i < live; i++)); do echo "WORKER.ADD live-$i GPUS 2"; done
    echo "DEPLOY li MODEL m BACKEND vllm ON live-0 live-1"
} >"$TMP/expected.cmds"
diff "$TMP/expected.cmds" "$TMP/w2.cmds" >"$TMP/w2.diff" || fail "RESP2 WATCH 1 stream differs: $(head -n 10 "$TMP/w2.diff")"
tr -d '\r' <"$TMP/w3.out" | grep -E '^(WORKER.ADD|DEPLOY) ' >"$TMP/w3.cmds"
tail -n +21 "$TMP/expected.cmds" | diff - "$TMP/w3.cmds" >"$TMP/w3.diff" || fail "RESP3 WATCH 21 stream differs: $(head -n 10 "$TMP/w3.diff")"

# Framing: subscribe-style arrays under RESP2, push frames under RESP3.
grep -q '^\*' "$TMP/w2.out" || fail "RESP2 WATCH should send arrays"
grep -q '^>' "$TMP/w3.out" && ! grep -q '^>' "$TMP/w2.out" || fail "push frames ('>') under RESP3 only"

# Other clients are served while watchers are attached.
expect_eq "$(r PING)" PONG "PING beside two watchers"
expect_match "$(r WORKER.GET live-0)" 'li' "WORKER.GET beside two watchers"
stop_berthd

# A watcher that reads as fast as it can is never dropped, even when one
# group commit's frames are past --max-output-bytes (65536, the least it
# takes; a burst of records with long labels makes a commit of ~1 MB): that
# commit sends it back to catch-up, which serves the records from the
# journal as its buffer drains, in order, each once.
start_berthd --max-output-bytes 65536
head0=$(head_seq)
burst=2000
label=$(printf 'v%.0s' {1..120})
watcher fast 'WATCH 0\r\n'
wait_for fast 1 '^watch$'
for ((i = 0; i < burst; i++)); do
    printf '*6\r\n$10\r\nWORKER.ADD\r\n$%d\r\nfast-%d\r\n$4\r\nGPUS\r\n$1\r\n1\r\n$5\r\nLABEL\r\n$%d\r\nk=%s\r\n' \
        $(( ${#i} + 5 )) "$i" $(( ${#label} + 2 )) "$label"
done >"$TMP/burst.resp"
out=$(r --pipe <"$TMP/burst.resp" 2>&1)
expect_match "$out" "errors: 0, replies: $burst" "the burst beside a fast watcher"
wait_for fast "$burst" '^WORKER.ADD fast-'
stat_of() { r INFO stats | tr -d '\r' | sed -n "s/^$1://p"; }
expect_eq "$(stat_of watch_disconnects)" 0 "a watcher that keeps up is not disconnected"
[ "$(stat_of watch_catchups)" -ge 1 ] || fail "a commit past --max-output-bytes should send the watcher to catch-up"
expect_eq "$(head_seq)" "$((head0 + burst))" "the burst's records"
tr -d '\r' <"$TMP/fast.out" | grep '^WORKER.ADD fast-' | sed 's/ GPUS.*//' >"$TMP/fast.cmds"
for ((i = 0; i < burst; i++)); do echo "WORKER.ADD fast-$i"; done | diff - "$TMP/fast.cmds" >"$TMP/fast.diff" ||
    fail "the fast watcher's stream differs (gap, repeat or order): $(head -n 10 "$TMP/fast.diff")"
# The seqs too: head0+1 .. head0+burst, each once, ascending.
tr -d '\r' <"$TMP/fast.out" | grep -A1 '^seq$' | grep -E '^:?[0-9]+$' | tr -d ':' >"$TMP/fast.seqs"
seq "$((head0 + 1))" "$((head0 + burst))" | diff - "$TMP/fast.seqs" >/dev/null ||
    fail "the fast watcher's seqs are not $((head0 + 1))..$((head0 + burst)) once each"
printf 'PING\r\n' >&"$fd_fast"
wait_for fast 1 '^pong$'
stop_berthd
note "ok ($before catch-up + $((live + 1)) live records, RESP2 and RESP3; $burst records past --max-output-bytes to a fast watcher)"
