#!/usr/bin/env bash
# stop_drain.sh — a clean stop (SIGTERM) hands every client the replies it
# had already earned, whole: large JOURNAL.RANGE replies and the
# acknowledgement of a write behind them to a client that reads slowly, and
# a WATCH client's frames up to a frame's end; a client that reads nothing
# holds the stop up for SERVER_STOP_STALL_MS at most and is logged. Before
# this, berthd wrote once and closed: a slow reader got a reply cut in half
# and never heard the seq of a write that was durable.
. "$(dirname "$0")/lib.sh"
command -v python3 >/dev/null || { echo "$test_name: python3 missing (apt-get install -y python3)"; exit 1; }

start_berthd
# ~500 bytes a record in JOURNAL.RANGE: 3,000 records make each range of
# 1,000 ~0.5 MB and 30 of them more than the kernel buffers and a socket with an 8 KiB receive buffer takes.
for ((i = 0; i < 3000; i += 500)); do
    for ((j = i; j < i + 500; j++)); do echo "WORKER.ADD w$j GPUS 8 LABEL rack=r$((j % 7))"; done | r_stdin >/dev/null
done
head0=$(head_seq)
[ "$head0" -ge 3000 ] || fail "expected 3000 records, head is $head0"

cat >"$TMP/slow.py" <<'PY'
import os, socket, sys, time
port, mode, out, go = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def enc(*a):
    b = b'*%d\r\n' % len(a)
    for x in a:
        x = x.encode(); b += b'$%d\r\n%s\r\n' % (len(x), x)
    return b
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
s.connect(('127.0.0.1', port))
if mode == 'range':
    s.sendall(enc('WORKER.ADD', 'first', 'GPUS', '1') + enc('JOURNAL.RANGE', '1', '1000') * 30
              + enc('WORKER.ADD', 'last', 'GPUS', '1'))
elif mode == 'watch':
    s.sendall(enc('WATCH', '1'))
elif mode == 'mute':
    s.sendall(enc('JOURNAL.RANGE', '1', '1000') * 30)
open(out + '.ready', 'w').close()   # sent; the script checks berthd took it all
while not os.path.exists(go):
    time.sleep(0.01)   # read only once the stop has begun
if mode == 'mute':
    time.sleep(30)     # never reads; the stop must not wait for it
    sys.exit(0)
data = bytearray()
while True:
    b = s.recv(65536)
    if not b:
        break
    data += b
open(out, 'wb').write(data)
PY

# RESP: how many whole top-level replies, and whether the bytes end at one's end.
cat >"$TMP/count.py" <<'PY'
import sys
d = open(sys.argv[1], 'rb').read()
def item(i):
    t = d[i:i+1]
    j = d.index(b'\r\n', i)
    if t in (b'+', b'-', b':'):
        return j + 2, d[i:j]
    n = int(d[i+1:j])
    if t == b'$':
        return (j + 2 if n < 0 else j + 2 + n + 2), None
    if t in (b'*', b'>'):
        k = j + 2
        for _ in range(max(n, 0)):
            k, _x = item(k)
        return k, None
    raise ValueError('type %r at %d' % (t, i))
i, n, last = 0, 0, None
try:
    while i < len(d):
        k, v = item(i)
        if k > len(d):
            raise IndexError
        i, n = k, n + 1
        if v is not None:
            last = v.decode()
    print(n, 'whole', last)
except (IndexError, ValueError):
    print(n, 'cut', last)
PY

python3 "$TMP/slow.py" "$PORT" range "$TMP/range.out" "$TMP/stop1" &
bg_pids+=($!); range_pid=$!
python3 "$TMP/slow.py" "$PORT" watch "$TMP/watch.out" "$TMP/stop1" &
bg_pids+=($!); watch_pid=$!
for ((i = 0; i < 200; i++)); do
    [ -e "$TMP/range.out.ready" ] && [ -e "$TMP/watch.out.ready" ] && break
    sleep 0.05
done
[ -e "$TMP/range.out.ready" ] || fail "the slow reader did not start"
# The write behind the ranges answers another client once it is durable;
# replies go in order, so every reply of the slow reader is buffered then.
for ((i = 0; i < 200; i++)); do
    [[ "$(r WORKER.GET last 2>/dev/null)" == *last* ]] && break
    sleep 0.05
done
[[ "$(r WORKER.GET last)" == *last* ]] || fail "the slow reader's write never became durable"
# The watcher has had its catch-up frames buffered when its first arrived.
sleep 0.2
kill -TERM "$BERTHD_PID"
touch "$TMP/stop1"
rc=0; wait "$BERTHD_PID" || rc=$?
BERTHD_PID=""
expect_eq "$rc" 0 "berthd's exit status after SIGTERM"
wait "$range_pid" || fail "the slow reader failed"
wait "$watch_pid" || fail "the watch reader failed"

read -r n shape last < <(python3 "$TMP/count.py" "$TMP/range.out")
expect_eq "$shape" whole "the slow reader's bytes end at a reply's end"
expect_eq "$n" 32 "the slow reader got all 32 replies"
expect_eq "$last" ":$((head0 + 2))" "the write behind the ranges was answered with its seq"
read -r n shape last < <(python3 "$TMP/count.py" "$TMP/watch.out")
expect_eq "$shape" whole "the watcher's bytes end at a frame's end"
[ "$n" -ge 2 ] || fail "the watcher got $n frames"

# Both writes are durable: the acknowledgements were not promises.
start_berthd
expect_match "$(r WORKER.GET last)" "last" "the last write is in the journal"

# A client that reads nothing holds the stop up for 2 s (SERVER_STOP_STALL_MS), logged.
python3 "$TMP/slow.py" "$PORT" mute "$TMP/mute.out" "$TMP/stop2" &
bg_pids+=($!)
for ((i = 0; i < 200; i++)); do [ -e "$TMP/mute.out.ready" ] && break; sleep 0.05; done
[ -e "$TMP/mute.out.ready" ] || fail "the mute client did not start"
sleep 1.5   # its ranges read and buffered (reads: nothing durable to wait for)
touch "$TMP/stop2"
t0=$(date +%s%N)
stop_berthd TERM
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$ms" -lt 10000 ] || fail "the stop took $ms ms beside a client that reads nothing"
grep -q 'bytes of replies unsent at the stop' "$LOG" || fail "the unsent replies were not logged"
note "ok (the stop beside a mute client took $ms ms)"
