#!/usr/bin/env bash
# park.sh — a client parked with its command unparsed (behind its own held
# writes, or a read behind staged writes) is answered whatever happens next:
#   1. SIGTERM: each parked command hears its answer or "berthd is stopping
#      ... not run", after the client's earlier replies, never a bare close;
#      a parked write is not applied.
#   2. A sync fails (fatal) while a reader is parked behind another client's
#      staged write: the reader hears -IOERR, not a bare close.
#   3. A reader parked behind a writer that pipelines "write; PING" pairs is
#      answered within a few syncs, not when the writer's pipeline ends.
#   4. A command refused anyway (not logged in, wrong arity) never parks;
#      INFO's commands_processed counts the INFO that asks.
#   5. A write that finds the open batch full parks instead of stopping the
#      loop for a sync.
#   6. A writer (and a reader) beside a client that pipelines "write; read"
#      pairs commits within a few syncs, not when that pipeline ends; with
#      the commit log off and on.
# disk_shim (LD_PRELOAD, BERTH_SHIM_CTL) slows and fails chosen syncs.
# berthd runs with --commit-log off: these rounds steer LMDB's own syncs
# (a commit's, the sync after it); the commit log's road is checked by
# commit_log.sh and oscrash_log.sh.
. "$(dirname "$0")/lib.sh"
command -v python3 >/dev/null || { echo "$test_name: python3 missing"; exit 1; }
shim_ctl_setup
PYLIB='
import os, socket, sys, time
def conn(port):
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
'

# 1. SIGTERM with A's PING parked behind A's write, B's DIGEST parked behind
# it, and C's write parked behind B's read (slow syncs: all still parked).
start_shimmed --commit-log off
python3 - "$PORT" "$CTL" "$BERTHD_PID" >"$TMP/term.out" <<PY || fail "SIGTERM driver: $(cat "$TMP/term.out")"
$PYLIB
import signal
port, ctl, pid = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
open(os.path.join(ctl, "delay_ms"), "w").write("1500")
a = conn(port); a.sendall(b"WORKER.ADD a1 GPUS 1\r\nPING\r\n")
time.sleep(0.2)
b = conn(port); b.sendall(b"DIGEST\r\n"); time.sleep(0.1)
c = conn(port); c.sendall(b"WORKER.ADD c1 GPUS 1\r\n"); time.sleep(0.1)
os.kill(pid, signal.SIGTERM)
print("A", read_all(a))
print("B", read_all(b))
print("C", read_all(c))
PY
rc=0; wait "$BERTHD_PID" || rc=$?
BERTHD_PID=""
expect_eq "$rc" 0 "berthd's exit status after SIGTERM"
sanitizer_clean
note "$(tr '\n' ' ' <"$TMP/term.out")"
a=$(sed -n 's/^A //p' "$TMP/term.out")
b=$(sed -n 's/^B //p' "$TMP/term.out")
c=$(sed -n 's/^C //p' "$TMP/term.out")
expect_match "$a" "^b':1\\\\r\\\\n(\\+PONG|-ERR berthd is stopping[^\\\\]*not run[^\\\\]*)\\\\r\\\\n'$" "A: its write's reply, then its parked PING's answer or refusal"
expect_match "$b" "^b'(\\\$64\\\\r\\\\n[0-9a-f]{64}|-ERR berthd is stopping[^\\\\]*not run[^\\\\]*)\\\\r\\\\n'$" "B: its parked DIGEST's answer or refusal"
expect_match "$c" "^b'(:2|-ERR berthd is stopping[^\\\\]*not run[^\\\\]*)\\\\r\\\\n'$" "C: its parked write's reply or refusal"
rm -f "$CTL/delay_ms"
start_shimmed --commit-log off
if [[ $c == *stopping* ]]; then
    expect_match "$(r WORKER.GET c1)" '^NOWORKER' "C's refused write was not applied"
fi
expect_match "$(r WORKER.GET a1 | head -n 2 | tail -n 1)" '^a1$' "A's write survived the restart"
stop_berthd

# 2. A's write commits; its sync is slow and fails with EIO while C's write
# is staged on top and B's DIGEST is parked behind it.
rm -rf "$DATA" "$TMP/disk.mdb" "$CTL"/*
start_shimmed --commit-log off
python3 - "$PORT" "$CTL" >"$TMP/fatal.out" <<PY || fail "fatal driver: $(cat "$TMP/fatal.out")"
$PYLIB
port, ctl = int(sys.argv[1]), sys.argv[2]
open(os.path.join(ctl, "delay_ms"), "w").write("1500")
a = conn(port); a.sendall(b"WORKER.ADD a1 GPUS 1\r\n")
time.sleep(2.0)
c = conn(port); c.sendall(b"WORKER.ADD c1 GPUS 1\r\n"); time.sleep(0.05)
b = conn(port); b.sendall(b"DIGEST\r\n"); time.sleep(0.05)
open(os.path.join(ctl, "fail"), "w").write("5")
print("A", read_all(a))
print("C", read_all(c))
print("B", read_all(b))
PY
berthd_gone_within 200 "berthd still runs after a failed sync"
rc=0; wait "$BERTHD_PID" || rc=$?
BERTHD_PID=""
expect_eq "$rc" 1 "berthd's exit status after a failed sync"
sanitizer_clean
note "$(tr '\n' ' ' <"$TMP/fatal.out")"
expect_match "$(sed -n 's/^C //p' "$TMP/fatal.out")" "^b'-IOERR [^\\\\]*not applied" "C's staged write"
expect_match "$(sed -n 's/^B //p' "$TMP/fatal.out")" "^b'-IOERR " "B's parked DIGEST hears -IOERR, not a bare close"

# 3. Q pipelines 150 "write; PING" pairs over 20 ms syncs (at least 3 s of
# syncs); R's DIGEST, sent 0.3 s in, must not wait for Q's pipeline; three
# writers that park behind R then commit (resumed writers must not park
# each other again).
rm -rf "$DATA" "$TMP/disk.mdb" "$CTL"/*
start_shimmed --commit-log off
python3 - "$PORT" "$CTL" >"$TMP/starve.out" <<PY || fail "a read starved behind a writer's pipeline: $(cat "$TMP/starve.out")"
$PYLIB
import re, threading
port, ctl = int(sys.argv[1]), sys.argv[2]
open(os.path.join(ctl, "delay_ms"), "w").write("20")
n = 150
q = conn(port); q.settimeout(60)
data = b"".join(b"WORKER.ADD q%d GPUS 1\r\nPING\r\n" % i for i in range(n))
done = {}
def qrun():
    q.sendall(data)
    got = b""
    while got.count(b"\r\n") < 2 * n:
        d = q.recv(65536)
        if not d:
            break
        got += d
    done["ok"] = got.count(b"+PONG\r\n") == n
th = threading.Thread(target=qrun); th.start()
time.sleep(0.3)
r = conn(port)
t = time.time()
r.sendall(b"DIGEST\r\n")
time.sleep(0.005)
ws = [conn(port) for _ in range(3)]   # writes that wait behind the read
for i, w in enumerate(ws):
    w.sendall(b"WORKER.ADD x%d GPUS 1\r\n" % i)
x = r.recv(100)
lat = time.time() - t
busy = th.is_alive()
for w in ws:
    w.settimeout(5)
wrote = [w.recv(100) for w in ws]
th.join()
print("DIGEST after %.3f s (writer still busy: %s) %r; writer ok %s; writes behind it %r"
      % (lat, busy, x[:10], done.get("ok"), wrote))
sys.exit(0 if busy and lat < 1.0 and x.startswith(b"\$64") and done.get("ok") and
         all(re.fullmatch(rb":[0-9]+\r\n", w) for w in wrote) else 1)
PY
note "$(cat "$TMP/starve.out")"
stop_berthd
# 4. Nothing refused parks: with W's write syncing slowly, an
# unauthenticated DIGEST hears -NOAUTH and a DIGEST with a wrong argument
# count hears its -ERR at once, not after the sync (an unauthenticated
# client parked on reads made every writer wait behind it). And INFO's
# commands_processed counts the INFO that asks.
rm -rf "$DATA" "$TMP/disk.mdb" "$CTL"/*
start_shimmed --commit-log off --requirepass pw
python3 - "$PORT" "$CTL" >"$TMP/refused.out" <<PY || fail "refused commands parked: $(cat "$TMP/refused.out")"
$PYLIB
port, ctl = int(sys.argv[1]), sys.argv[2]
def read_n(s, n):
    got = b""
    while got.count(b"\r\n") < n:
        d = s.recv(65536)
        if not d:
            break
        got += d
    return got
i = conn(port)
i.sendall(b"AUTH pw\r\nINFO stats\r\n")
info = b""
while b"commands_processed:" not in info or not info.endswith(b"\r\n"):
    info += i.recv(65536)
processed = int(info.split(b"commands_processed:")[1].split(b"\r\n")[0])
w, u, v = conn(port), conn(port), conn(port)
v.sendall(b"AUTH pw\r\n"); read_n(v, 1)
w.sendall(b"AUTH pw\r\n"); read_n(w, 1)
open(os.path.join(ctl, "delay_ms"), "w").write("800")
w.sendall(b"WORKER.ADD w1 GPUS 1\r\n")
time.sleep(0.1)
t = time.time()
u.sendall(b"DIGEST\r\n")
got_u = read_n(u, 1)
v.sendall(b"DIGEST extra\r\n")
got_v = read_n(v, 1)
took = time.time() - t
got_w = read_n(w, 1)
print("commands_processed %d (the probe PING, AUTH, this INFO); NOAUTH %r ERR %r after %.3f s; W %r"
      % (processed, got_u, got_v, took, got_w))
sys.exit(0 if processed == 3 and got_u.startswith(b"-NOAUTH") and got_v.startswith(b"-ERR wrong number")
         and took < 0.5 and got_w.startswith(b":") else 1)
PY
note "$(cat "$TMP/refused.out")"
stop_berthd
# 5. A full open batch (4096 entries) does not stop the loop: with a commit
# syncing slowly, six writers pipeline 1000 writes each (more than one
# batch holds); the writers that find the batch full wait parked, a probe's
# PINGs are answered meanwhile, and every write is answered in order.
rm -rf "$DATA" "$TMP/disk.mdb" "$CTL"/*
start_shimmed --commit-log off
python3 - "$PORT" "$CTL" >"$TMP/full.out" <<PY || fail "a full batch stopped the loop: $(cat "$TMP/full.out")"
$PYLIB
import threading
port, ctl = int(sys.argv[1]), sys.argv[2]
open(os.path.join(ctl, "delay_ms"), "w").write("700")
z = conn(port); z.sendall(b"WORKER.ADD z GPUS 1\r\n"); time.sleep(0.1)   # a commit in flight
n, writers = 1000, 6
ws = [conn(port) for _ in range(writers)]
got = [b""] * writers
def drain(j):
    while got[j].count(b"\r\n") < n:
        d = ws[j].recv(65536)
        if not d:
            break
        got[j] += d
ths = [threading.Thread(target=drain, args=(j,)) for j in range(writers)]
for t in ths:
    t.start()
for j, w in enumerate(ws):
    w.sendall(b"".join(b"WORKER.ADD w%d_%d GPUS 1\r\n" % (j, i) for i in range(n)))
time.sleep(0.05)
p = conn(port)
worst, pings = 0.0, 0
end = time.time() + 3
while time.time() < end:
    t = time.time()
    p.sendall(b"PING\r\n")
    if p.recv(100) != b"+PONG\r\n":
        sys.exit("bad PONG")
    worst = max(worst, time.time() - t)
    pings += 1
    time.sleep(0.01)
for t in ths:
    t.join()
def seqs(b):
    return [int(x[1:]) for x in b.split(b"\r\n")[:-1]]
ordered = all(len(seqs(g)) == n and seqs(g) == sorted(seqs(g)) for g in got)
print("%d PINGs, worst %.3f s; %d writers x %d writes answered in order: %s"
      % (pings, worst, writers, n, ordered))
sys.exit(0 if worst < 0.4 and ordered else 1)
PY
note "$(cat "$TMP/full.out")"
stop_berthd

# 6. The other way round: Q pipelines "write; read" pairs (WORKER.GET
# nosuch: each read parks on Q's own staged write, and holds other writers
# back while it waits): 150 over 20 ms syncs with the commit log off, 3,000
# with it on (the shim does not slow the log's syncs). W's single write,
# sent 0.2 s in, must commit while Q is still busy, among Q's writes rather
# than after the last; and R's DIGEST, sent beside it, must not wait for Q
# either. Once, every W waited out Q's whole pipeline (a review's finding:
# a resumed writer parked again behind Q's next read, every sync).
for log in off on; do
pairs=150; [ "$log" = on ] && pairs=3000
rm -rf "$DATA" "$TMP/disk.mdb" "$CTL"/*
start_shimmed --commit-log "$log"
python3 - "$PORT" "$CTL" "$pairs" >"$TMP/wstarve.out" <<PY || fail "a write starved behind a pipeline of write and read pairs (commit log $log): $(cat "$TMP/wstarve.out")"
$PYLIB
import threading
port, ctl, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
open(os.path.join(ctl, "delay_ms"), "w").write("20")
q = conn(port); q.settimeout(60)
data = b"".join(b"WORKER.ADD q%d GPUS 1\r\nWORKER.GET nosuch\r\n" % i for i in range(n))
done = {}
def qrun():
    q.sendall(data)
    got = b""
    while got.count(b"-NOWORKER") < n:
        d = q.recv(65536)
        if not d:
            break
        got += d
    done["last"] = max(int(x[1:]) for x in got.split(b"\r\n") if x.startswith(b":"))
th = threading.Thread(target=qrun); th.start()
time.sleep(0.2)
w = conn(port); r = conn(port)
t = time.time()
w.sendall(b"WORKER.ADD w GPUS 1\r\n")
r.sendall(b"DIGEST\r\n")
x = w.recv(100)
lat = time.time() - t
busy = th.is_alive()
y = r.recv(100)
th.join()
seq = int(x[1:]) if x.startswith(b":") else -1
print("W's write after %.3f s (Q still busy: %s): %r, Q's last seq %s; DIGEST %r"
      % (lat, busy, x, done.get("last"), y[:10]))
sys.exit(0 if busy and lat < 1.0 and 0 < seq < done.get("last", 0) and y.startswith(b"\$64") else 1)
PY
note "$(cat "$TMP/wstarve.out")"
stop_berthd
done
note ok
