#!/usr/bin/env bash
# watch_readers.sh — a WATCH catch-up that cannot open a journal reader
# (LMDB's reader table full: hold_readers takes every free slot) waits for
# the next tick instead of retrying on every turn of the loop: berthd stays
# near idle and logs the failure about once a second, other clients are
# served, and once the slots are free the watcher gets every record.
# Before session 9 the loop spun at 100% CPU, logging on every turn.
. "$(dirname "$0")/lib.sh"
HOLD_READERS=${HOLD_READERS:?HOLD_READERS must name the hold_readers binary}
start_berthd
records=30
for ((i = 0; i < records; i++)); do printf 'WORKER.ADD wr-%d GPUS 1\n' "$i"; done | r >/dev/null
expect_eq "$(head_seq)" "$records" "records before the watch"

mkfifo "$TMP/hold.in"
"$HOLD_READERS" "$DATA" <"$TMP/hold.in" >"$TMP/hold.out" 2>&1 &
bg_pids+=($!)
exec {hold_fd}>"$TMP/hold.in"
for ((i = 0; i < 400; i++)); do grep -q '^held' "$TMP/hold.out" && break; sleep 0.025; done
grep -q '^held' "$TMP/hold.out" || fail "hold_readers did not fill the reader table: $(cat "$TMP/hold.out")"

mkfifo "$TMP/w.in"
nc 127.0.0.1 "$PORT" <"$TMP/w.in" >"$TMP/w.out" {hold_fd}>&- &   # not the holder's fifo
bg_pids+=($!)
exec {w_fd}>"$TMP/w.in"
printf 'WATCH 1\r\n' >&"$w_fd"
sleep 0.5
cpu() { awk '{ print $14 + $15 }' "/proc/$BERTHD_PID/stat"; }
fails() { grep -c 'cannot open a journal reader' "$LOG"; }
cpu0=$(cpu)
fails0=$(fails)
sleep 3
cpu1=$(cpu)
fails1=$(fails)
ticks=$(getconf CLK_TCK)
used_ms=$(( (cpu1 - cpu0) * 1000 / ticks ))
[ "$fails0" -ge 1 ] || fail "the watcher's catch-up should have failed to open a reader"
[ "$used_ms" -le 600 ] || fail "berthd used ${used_ms} ms of CPU in 3 s with a watcher it cannot serve (spinning?)"
[ $((fails1 - fails0)) -le 6 ] || fail "$((fails1 - fails0)) log lines in 3 s about the reader: retried on every turn?"
expect_eq "$(r PING)" PONG "PING while the watcher waits"
n=$(tr -d '\r' <"$TMP/w.out" | grep -c '^WORKER.ADD wr-' || true)
expect_eq "$n" 0 "records sent while no reader opens"

exec {hold_fd}>&-   # hold_readers frees the slots
for ((i = 0; i < 200; i++)); do
    n=$(tr -d '\r' <"$TMP/w.out" | grep -c '^WORKER.ADD wr-' || true)
    [ "$n" -ge "$records" ] && break
    sleep 0.025
done
expect_eq "$n" "$records" "records once the reader table has room"
note "ok (${used_ms} ms of CPU in 3 s, $((fails1 - fails0)) log lines; $records records after)"
