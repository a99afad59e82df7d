#!/usr/bin/env bash
# order.sh — every command a client sends is answered, in the order sent,
# whatever ends it: a protocol error, a failed commit, a failed sync that
# stops berthd, a shutdown with background jobs waiting.
#   1. A write then a malformed command in one packet: the write's reply
#      (held until durable) comes before -ERR Protocol error.
#   2. A failed commit whose batch had queued a snapshot: the next,
#      successful commit must not try that snapshot (it names a seq the
#      journal never reached; berthd logged a misleading failure).
#   3. A sync that fails with EIO while a client has a write staged on top
#      of it and a PING behind that: berthd turns fatal and stops, and the
#      client hears its write's -IOERR before PONG (the open batch is
#      answered at once, not at shutdown after later commands).
#   4. SIGTERM while clients wait for JOURNAL.VERIFY: each hears either its
#      answer or an error saying berthd stopped, never a bare close.
#   5. A command waiting behind a client's held write does not stop the
#      loop: another client's PING is answered during the sync, and writers
#      that each follow their write with a PING still share commits.
# disk_shim (LD_PRELOAD, BERTH_SHIM_CTL) slows and fails chosen syncs.
# berthd runs with --commit-log off: these rounds steer LMDB's own syncs
# (a commit's, the sync after it); the commit log's road is checked by
# commit_log.sh and oscrash_log.sh.
. "$(dirname "$0")/lib.sh"
command -v python3 >/dev/null || { echo "$test_name: python3 missing"; exit 1; }
shim_ctl_setup

start_shimmed --commit-log off --snapshot-every 10

# 1. The protocol error waits for the write before it.
out=$(nc_send 'WORKER.ADD p1 GPUS 1\r\n*1\r\n$-5\r\n')
expect_match "$(sed -n 1p <<<"$out")" '^:[0-9]+$' "a write's reply comes before a later protocol error [$out]"
expect_match "$(sed -n 2p <<<"$out")" '^-ERR Protocol error' "then the protocol error"
expect_eq "$(grep -c '' <<<"$out")" 2 "two replies, then the connection is closed"
expect_match "$(r WORKER.GET p1 | head -n 2 | tail -n 1)" '^p1$' "the write answered before the error exists"

# 2. Seqs 1..8 on disk (p1 is 1); a batch of 9..10 (a snapshot due at 10)
# fails in its sync with ENOSPC; then seq 9 alone commits.
for i in 2 3 4 5 6 7 8; do expect_int "$(r WORKER.ADD s$i GPUS 1)" "WORKER.ADD s$i"; done
shim_arm fail 28
out=$(nc_send 'WORKER.ADD f9 GPUS 1\r\nWORKER.ADD f10 GPUS 1\r\nQUIT\r\n')
expect_match "$(sed -n 1p <<<"$out")" '^-FULL' "the first write of the batch whose sync failed"
expect_match "$(sed -n 2p <<<"$out")" '^-FULL' "the second write of that batch"
[ ! -e "$CTL/fail" ] || fail "the armed sync failure never happened"
expect_eq "$(r WORKER.ADD s9 GPUS 1)" 9 "the next write after the failed commit"
expect_eq "$(r WORKER.ADD s10 GPUS 1)" 10 "and the one after it"
! grep -q 'snapshot at seq [0-9]* failed' "$LOG" || fail "a failed commit's queued snapshot was tried later: $(grep -m1 'snapshot at seq [0-9]* failed' "$LOG")"
expect_verify_ok "after the failed commit"
stop_berthd

# 4. (before 3, which stops berthd for good) SIGTERM with VERIFY clients waiting.
start_shimmed --commit-log off --snapshot-every 0
for ((i = 0; i < 20000; i++)); do
    printf '*4\r\n$10\r\nWORKER.ADD\r\n$%d\r\nv-%d\r\n$4\r\nGPUS\r\n$1\r\n1\r\n' $(( ${#i} + 2 )) "$i"
done >"$TMP/seed.resp"
out=$(r --pipe <"$TMP/seed.resp" 2>&1)
expect_match "$out" "errors: 0, replies: 20000" "seeding 20000 records"
python3 - "$PORT" "$BERTHD_PID" >"$TMP/jobs.out" <<'PY' || fail "VERIFY clients at shutdown: $(cat "$TMP/jobs.out")"
import os, signal, socket, sys, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
clients = []
for _ in range(60):
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(20)
    clients.append(s)
for s in clients:
    s.sendall(b"JOURNAL.VERIFY\r\n")
time.sleep(0.05)
os.kill(pid, signal.SIGTERM)
silent, answered, stopped = 0, 0, 0
for s in clients:
    got = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        got += d
    if got.startswith(b"*") or got.startswith(b"%"):
        answered += 1
    elif got.startswith(b"-") and b"stopping" in got:
        stopped += 1
    else:
        silent += 1
print(f"answered {answered} stopped {stopped} silent {silent}")
sys.exit(1 if silent else 0)
PY
note "SIGTERM with 60 VERIFY clients waiting: $(cat "$TMP/jobs.out")"
rc=0; wait "$BERTHD_PID" || rc=$?
BERTHD_PID=""
expect_eq "$rc" 0 "berthd's exit status after SIGTERM"
sanitizer_clean

# 5. A command behind a client's own held write (or a read behind anyone's)
# waits without stopping the loop: while W's write syncs (slowly), another
# client's PING is answered at once; W's replies keep their order; a read
# sees W's write. And twenty clients each sending "write; PING" share a few
# commits instead of one commit each (each PING drained the loop alone).
start_shimmed --commit-log off
python3 - "$PORT" "$CTL" >"$TMP/park.out" <<'PY' || fail "parked clients: $(cat "$TMP/park.out")"
import os, re, socket, sys, time
port, ctl = int(sys.argv[1]), sys.argv[2]
def conn():
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(20)
    return s
def read_n(s, n):
    got = b""
    while got.count(b"\r\n") < n:
        d = s.recv(65536)
        if not d:
            break
        got += d
    return got
def info_commits(s):
    s.sendall(b"INFO stats\r\n")
    text = b""
    while b"background_jobs" not in text:
        text += s.recv(65536)
    return int(text.split(b"\r\ncommits:")[1].split(b"\r\n")[0])
w, p, r = conn(), conn(), conn()
open(os.path.join(ctl, "delay_ms"), "w").write("800")
w.sendall(b"WORKER.ADD w5 GPUS 1\r\nPING\r\n")
time.sleep(0.2)
t = time.time()
p.sendall(b"PING\r\n")
pong = read_n(p, 1)
ping_s = time.time() - t
r.sendall(b"WORKER.GET w5\r\n")
got_w = read_n(w, 2)
got_r = read_n(r, 3)
print("W", got_w, "PING", pong, "%.3f s" % ping_s, "R", got_r[:40])
ok = re.fullmatch(rb":[0-9]+\r\n\+PONG\r\n", got_w) is not None and pong == b"+PONG\r\n" and ping_s < 0.5 and b"w5" in got_r
open(os.path.join(ctl, "delay_ms"), "w").write("50")
before = info_commits(r)
cs = [conn() for _ in range(20)]
for i, c in enumerate(cs):
    c.sendall(b"WORKER.ADD g%d GPUS 1\r\nPING\r\n" % i)
replies = [read_n(c, 2) for c in cs]
commits = info_commits(r) - before
os.unlink(os.path.join(ctl, "delay_ms"))
in_order = all(x.startswith(b":") and x.endswith(b"\r\n+PONG\r\n") for x in replies)
print("20 writers with a PING each: %d commits, replies in order %s" % (commits, in_order))
sys.exit(0 if ok and in_order and commits <= 6 else 1)
PY
note "$(tr '\n' ' ' <"$TMP/park.out")"
stop_berthd

# 3. B's write commits; its sync (the committer's explicit one, nothing
# else staged) is slow and fails with EIO while A's write is staged on top
# and A's PING waits for it.
rm -rf "$DATA" "$TMP/disk.mdb" "$CTL"/*
start_shimmed --commit-log off
python3 - "$PORT" "$CTL" >"$TMP/fatal.out" <<'PY' || fail "fatal ordering driver: $(cat "$TMP/fatal.out")"
import os, socket, sys, time
port, ctl = int(sys.argv[1]), sys.argv[2]
def syncs():
    try:
        return open(os.path.join(ctl, "syncs")).read().count("\n")
    except FileNotFoundError:
        return 0
def conn():
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(20)
    return s
def read_all(s):
    got = b""
    while True:
        d = s.recv(65536)
        if not d:
            return got
        got += d
a, b = conn(), conn()
open(os.path.join(ctl, "delay_ms"), "w").write("1000")
n0 = syncs()
b.sendall(b"WORKER.ADD b1 GPUS 1\r\n")
deadline = time.time() + 15
while syncs() < n0 + 2 and time.time() < deadline:   # the commit's sync, then the explicit one
    time.sleep(0.01)
open(os.path.join(ctl, "fail"), "w").write("5")
a.sendall(b"WORKER.ADD a1 GPUS 1\r\nPING\r\n")
print("A", read_all(a))
print("B", read_all(b))
PY
berthd_gone_within 200 "berthd still runs after a failed sync"
rc=0; wait "$BERTHD_PID" || rc=$?
BERTHD_PID=""
expect_eq "$rc" 1 "berthd's exit status after a failed sync"
sanitizer_clean
a=$(sed -n 's/^A //p' "$TMP/fatal.out")
b=$(sed -n 's/^B //p' "$TMP/fatal.out")
expect_match "$a" "^b'-IOERR [^\\\\]*not applied[^\\\\]*\\\\r\\\\n\\+PONG\\\\r\\\\n'$" "A's write is answered (not applied) before its PING"
expect_match "$b" "^b'-IOERR [^\\\\]*outcome is unknown" "B's write, committed but never synced"
note ok
