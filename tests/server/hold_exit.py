#!/usr/bin/env python3
# hold_exit.py PID — holds PID's end from its parent: it attaches to PID
# as a ptracer (PTRACE_SEIZE, which stops nothing) and never waits for it,
# so once PID dies (SIGKILL included) it stays a zombie its parent's
# waitpid cannot reap until this tracer waits or ends. That is what a
# killed process in uninterruptible sleep (D state: a read of a hung
# network filesystem) looks like to its parent, which a test cannot
# otherwise bring about. Prints "ready" once attached; ends at SIGTERM,
# letting PID go (to its parent).
#
# hold_exit.py - : prints "waiting", then reads PID from stdin. Python's
# start can take seconds on a loaded machine, longer than a caught child
# may wait before berthd's --job-timeout kills it; started ahead, the
# holder attaches within milliseconds of being told the PID.
import ctypes, signal, sys

PTRACE_SEIZE = 0x4206
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
if sys.argv[1] == "-":
    print("waiting", flush=True)
    pid = int(sys.stdin.readline())
else:
    pid = int(sys.argv[1])
if libc.ptrace(PTRACE_SEIZE, pid, None, None) != 0:
    print(f"PTRACE_SEIZE {pid}: errno {ctypes.get_errno()}", file=sys.stderr)
    sys.exit(1)
print("ready", flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    signal.pause()
