#!/usr/bin/env bash
# limits.sh — berthd's flags and limits from outside: --version, --help and
# a bad flag; a config file with a flag overriding it; the unix socket;
# --max-clients; a bulk over --max-arg-bytes (protocol error, connection
# closed, others unaffected); --idle-timeout; a WATCH client that stops
# reading, past --max-output-bytes; --max-pipeline; --output-timeout (a
# client that stops reading its replies); --job-timeout's bounds, as a flag
# and a config-file line (job_child.sh kills a hung job with it). Each limit
# answers with a clear error or a log line.
. "$(dirname "$0")/lib.sh"

out=$("$BERTHD" --version) || fail "--version should exit 0"
expect_match "$out" '^berthd [0-9]' "--version"
"$BERTHD" --help >"$TMP/help.txt" || fail "--help should exit 0"
for flag in --data --bind --port --unixsocket --requirepass --password-file --readonly-password-file \
            --snapshot-every --max-clients --job-timeout --config; do
    grep -q -- "$flag" "$TMP/help.txt" || fail "--help does not mention $flag"
done
rc=0; out=$("$BERTHD" --no-such-flag 2>&1) || rc=$?
expect_eq "$rc" 2 "exit status of a usage error"
expect_match "$out" 'ERR .*no-such-flag' "a bad flag is named"
grep -q -- "--job-timeout SECONDS .*0 never (default 600" "$TMP/help.txt" || fail "--help: --job-timeout's default"
for bad in abc -1 1.5 31536001; do
    rc=0; out=$("$BERTHD" --job-timeout "$bad" 2>&1) || rc=$?
    expect_eq "$rc" 2 "exit status of --job-timeout $bad"
    expect_eq "$out" "berthd: ERR --job-timeout: expected a whole number from 0 to 31536000, got \"$bad\"" "--job-timeout $bad"
done
printf '# a typo\njob-timeout 10m\n' >"$TMP/bad-timeout.conf"
rc=0; out=$("$BERTHD" --config "$TMP/bad-timeout.conf" 2>&1) || rc=$?
expect_eq "$rc" 2 "exit status of a bad job-timeout line"
expect_eq "$out" "berthd: ERR $TMP/bad-timeout.conf:2: --job-timeout: expected a whole number from 0 to 31536000, got \"10m\"" "a bad job-timeout line"

# Config file: its port is overridden by the flag start_berthd passes; its
# unix socket and limits apply.
pick_port
cat >"$TMP/berthd.conf" <<CONF
# berthd test configuration
port 1
unixsocket $TMP/berthd.sock
max-clients 3
max-arg-bytes 64
idle-timeout 1
max-output-bytes 65536
output-timeout 3
job-timeout 0
CONF
start_berthd --config "$TMP/berthd.conf"
expect_eq "$(r PING)" PONG "the --port flag overrides the file's port"
expect_eq "$("$REDIS_CLI" -s "$TMP/berthd.sock" PING)" PONG "PING over the unix socket"
expect_int "$("$REDIS_CLI" -s "$TMP/berthd.sock" WORKER.ADD u1 GPUS 1)" "a write over the unix socket"

# max-clients 3: two idle connections plus a third are fine, a fourth is refused.
for i in 1 2 3; do
    nc -d 127.0.0.1 "$PORT" >/dev/null &
    bg_pids+=($!)
done
sleep 0.2
# It sends nothing: a request left unread when berthd closes would turn the
# close into a reset that can discard the error before nc reads it.
out=$(nc -d -w 5 127.0.0.1 "$PORT" | tr -d '\r')
expect_match "$out" '^-ERR max number of clients reached' "the client over --max-clients"
grep -q 'max clients' "$LOG" || fail "berthd should log the refused connection"

# idle-timeout 1: the idle connections are closed (nc -d exits when they are).
for pid in "${bg_pids[@]}"; do
    for ((i = 0; i < 200; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -0 "$pid" 2>/dev/null && fail "an idle client was still connected 10 s after --idle-timeout 1"
done
grep -q 'idle timeout' "$LOG" || fail "berthd should log the idle disconnects"

# A bulk over max-arg-bytes: protocol error, the connection closed at once
# (the PING after it is never answered), other clients served.
out=$(nc_send '*2\r\n$4\r\nECHO\r\n$100\r\nxx\r\nPING\r\n')
expect_match "$out" '^-ERR Protocol error: .*100.*64' "a bulk over --max-arg-bytes names the length and the limit"
expect_eq "$(grep -c '' <<<"$out")" 1 "nothing after a protocol error: the connection is closed"
out=$(nc_send '*1\r\n$-5\r\nPING\r\n')
expect_match "$out" '^-ERR Protocol error' "a negative bulk length"
out=$(nc_send '*x\r\nPING\r\n')
expect_match "$out" '^-ERR Protocol error' "a non-numeric array length"
expect_eq "$(r PING)" PONG "others are served after protocol errors"
expect_eq "$(r ECHO "$(printf 'a%.0s' {1..64})" | wc -c)" 65 "a bulk of exactly max-arg-bytes is accepted"
# A live WATCH client that never reads: its buffer stops at
# --max-output-bytes (a commit past it sends the watcher back to catch-up,
# which adds nothing to a full buffer), and once its output has made no
# progress for --output-timeout it is disconnected with a logged reason;
# writers go on.
exec {slow_fd}<>"/dev/tcp/127.0.0.1/$PORT"
printf 'WATCH 0\r\n' >&"$slow_fd"
records=60000      # ~15 MB of frames: past the kernel's socket buffers too
for ((i = 0; i < records; i++)); do
    printf '*4\r\n$10\r\nWORKER.ADD\r\n$%d\r\nslow-%d\r\n$4\r\nGPUS\r\n$1\r\n1\r\n' $(( ${#i} + 5 )) "$i"
done >"$TMP/slow.resp"
out=$(r --pipe <"$TMP/slow.resp" 2>&1)
expect_match "$out" "errors: 0, replies: $records" "writes beside a WATCH client that never reads"
stat_of() { r INFO stats | tr -d '\r' | sed -n "s/^$1://p"; }
for ((i = 0; i < 200 && $(stat_of watch_disconnects) == 0; i++)); do sleep 0.05; done
expect_eq "$(stat_of watch_disconnects)" 1 "the slow watcher is disconnected within 10 s of --output-timeout 3"
[ "$(stat_of watch_catchups)" -ge 1 ] || fail "the slow watcher should have been sent back to catch-up first"
grep -q 'closed: output timeout: a WATCH client that stopped reading' "$LOG" || fail "berthd should log why it dropped the watcher"
exec {slow_fd}>&-
stop_berthd

# --max-pipeline 4: one client's pipeline is staged 4 commands per group
# commit; the rest waits (backpressure), nothing is refused.
start_berthd --max-pipeline 4
commits() { r INFO stats | tr -d '\r' | sed -n 's/^commits://p'; }
before=$(commits)
for ((i = 0; i < 400; i++)); do
    printf '*4\r\n$10\r\nWORKER.ADD\r\n$%d\r\nmp-%d\r\n$4\r\nGPUS\r\n$1\r\n1\r\n' $(( ${#i} + 3 )) "$i"
done >"$TMP/mp.resp"
out=$(r --pipe <"$TMP/mp.resp" 2>&1)
expect_match "$out" "errors: 0, replies: 400" "400 pipelined writes under --max-pipeline 4"
[ $(( $(commits) - before )) -ge 100 ] || fail "--max-pipeline 4 should take at least 100 commits for 400 writes, took $(( $(commits) - before ))"
stop_berthd

# --output-timeout 2: a normal client that pipelines big replies and stops
# reading is disconnected, with a logged reason, once its output made no
# write progress for 2 s (it was kept forever, its buffer pinned); a client
# that reads slowly but steadily is kept. (Progress is berthd's write()
# moving bytes: a reader so slow that the kernel's socket buffers stay full
# for the whole timeout counts as stalled.) The slow client reads until
# berthd's INFO counts the stalled one dropped (30 s at most), and for at
# least 3 timeouts. A fixed 6 s window raced berthd: under ASan at load 10
# it had not yet dropped the stalled client when the script drained it, so
# that client got all 200 replies (56.7 MB) and the test failed.
start_berthd --output-timeout 2 --idle-timeout 0
for ((i = 0; i < 1000; i++)); do
    printf '*6\r\n$10\r\nWORKER.ADD\r\n$%d\r\not-%d\r\n$4\r\nGPUS\r\n$1\r\n1\r\n$5\r\nLABEL\r\n$102\r\nk=%s\r\n' \
        $(( ${#i} + 3 )) "$i" "$(printf 'v%.0s' {1..100})"
done >"$TMP/ot.resp"
out=$(r --pipe <"$TMP/ot.resp" 2>&1)
expect_match "$out" "errors: 0, replies: 1000" "seeding records with long labels"
python3 - "$PORT" >"$TMP/stall.out" 2>&1 <<'PY' || fail "output timeout: $(cat "$TMP/stall.out")"
import socket, sys, time
port = int(sys.argv[1])
TIMEOUT_S, DROP_WAIT_S = 2, 30         # --output-timeout; how long the drop may take at most
def stuffed(rcvbuf):
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    c.connect(("127.0.0.1", port))
    c.setblocking(False)
    req = b"JOURNAL.RANGE 1 1000\r\n" * 200
    sent, t = 0, time.time()
    while sent < len(req) and time.time() - t < 3:
        try:
            sent += c.send(req[sent:])
        except BlockingIOError:
            time.sleep(0.01)
    return c
def stall_drops():                     # berthd's own count, over a connection of its own
    with socket.create_connection(("127.0.0.1", port), timeout=10) as q:
        q.sendall(b"INFO stats\r\n")
        text = b""
        while b"output_stall_disconnects:" not in text or not text.endswith(b"\r\n"):
            d = q.recv(1 << 16)
            if not d:
                break
            text += d
    for line in text.decode().split("\r\n"):
        if line.startswith("output_stall_disconnects:"):
            return int(line.split(":")[1])
    raise SystemExit("INFO stats has no output_stall_disconnects")
stalled, slow = stuffed(4096), stuffed(1 << 16)
t0 = time.time()
dropped_after = None
while time.time() - t0 < DROP_WAIT_S:  # slow reads 256 KiB every 0.5 s: progress
    try:
        slow.recv(1 << 18)
    except BlockingIOError:
        pass
    time.sleep(0.5)
    if dropped_after is None and stall_drops() > 0:
        dropped_after = time.time() - t0
    if dropped_after is not None and time.time() - t0 >= 3 * TIMEOUT_S:
        break
slow.setblocking(True)
slow.settimeout(0.5)
try:
    alive = len(slow.recv(4096)) > 0
except socket.timeout:
    alive = True
slow.close()                           # before it too stops reading for 2 s
stalled.setblocking(True)
stalled.settimeout(10)
got = 0
try:
    while True:
        d = stalled.recv(1 << 20)
        if not d:
            break
        got += len(d)
    closed = True
except (ConnectionResetError, socket.timeout):
    closed = not isinstance(sys.exc_info()[1], socket.timeout)
when = "never" if dropped_after is None else f"{dropped_after:.1f} s in"
print(f"a drop counted: {when} (waited up to {DROP_WAIT_S} s); stalled closed {closed} after {got} bytes; "
      f"slow reader alive {alive}")
sys.exit(0 if closed and alive else 1)
PY
grep -q 'output timeout' "$LOG" || fail "berthd should log why it dropped the client that stopped reading"
expect_eq "$(r INFO stats | tr -d '\r' | sed -n 's/^output_stall_disconnects://p')" 1 "one client dropped for --output-timeout"
stop_berthd
note ok
