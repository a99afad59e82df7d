#!/usr/bin/env bash
# accept_pause.sh — accept failing for want of descriptors (EMFILE) leaves
# the connection queued, so the listener is ready again at once: berthd
# used to spin a core and log a line per turn. Now its listeners rest
# 100 ms at a time, one log line says so, clients already connected are
# served meanwhile, and the queued connection is served once descriptors
# are free again. The test takes berthd's descriptors away by lowering its
# RLIMIT_NOFILE from outside (prlimit), so every accept fails.
. "$(dirname "$0")/lib.sh"
command -v python3 >/dev/null || fail "python3 missing"

start_berthd
python3 - "$BERTHD_PID" "$PORT" >"$TMP/emfile.out" 2>&1 <<'PY' || fail "the EMFILE client: $(cat "$TMP/emfile.out")"
import os, resource, socket, sys, time
pid, port = int(sys.argv[1]), int(sys.argv[2])
tick = os.sysconf("SC_CLK_TCK")

def cpu_s():
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick    # utime + stime

def ping(s):
    s.sendall(b"PING\r\n")
    got = b""
    while not got.endswith(b"\r\n"):
        chunk = s.recv(64)
        if not chunk:
            break
        got += chunk
    return got

old = socket.create_connection(("127.0.0.1", port), timeout=5)
assert ping(old) == b"+PONG\r\n", "PING before the limit"
limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
resource.prlimit(pid, resource.RLIMIT_NOFILE, (3, limits[1]))   # no new descriptor
try:
    queued = socket.create_connection(("127.0.0.1", port), timeout=5)   # the kernel's backlog
    queued.sendall(b"PING\r\n")
    wall0, cpu0 = time.monotonic(), cpu_s()
    time.sleep(1.5)
    wall, cpu = time.monotonic() - wall0, cpu_s() - cpu0
    assert ping(old) == b"+PONG\r\n", "a connected client is served while accept fails"
finally:
    resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
queued.settimeout(5)
got = queued.recv(64)
print("cpu %.2f s in %.2f s; queued client got %r" % (cpu, wall, got))
assert got == b"+PONG\r\n", "the queued connection is served once descriptors are free"
assert cpu < 0.25 * wall, "berthd burned %.2f s of CPU in %.2f s while accept failed" % (cpu, wall)
PY
note "$(cat "$TMP/emfile.out")"
lines=$(grep -c 'accept: Too many open files' "$LOG")
[ "$lines" -ge 1 ] && [ "$lines" -le 2 ] \
    || fail "expected one or two log lines for the failing accepts, got $lines"
pauses=$(r INFO stats | tr -d '\r' | sed -n 's/^accept_pauses://p')
[[ "$pauses" =~ ^[0-9]+$ ]] && [ "$pauses" -ge 5 ] && [ "$pauses" -le 40 ] \
    || fail "INFO stats accept_pauses: expected 5 to 40 pauses of 100 ms in ~1.5 s, got [$pauses]"
expect_eq "$(r PING)" PONG "new connections are accepted again"
stop_berthd
note "ok"
