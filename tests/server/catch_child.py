#!/usr/bin/env python3
# catch_child.py PID SECONDS [FILE] — stops (SIGSTOP) the first child
# process of PID that appears within SECONDS and prints its pid; exit 1 if
# none did. With FILE: only a child that holds FILE open, has written its
# first frame (so is past its setup: a spawned one may hold an inherited
# data.mdb before) and holds none of berthd's sockets, eventfd, epoll or
# DIR/LOCK counts; one caught before it ran that far is let go and caught
# again (so when every child holds its parent's descriptors, none counts).
# With --grandchild first: a child of a child of PID (PID the calling
# shell, which starts the process afterwards: a walk may end before Python
# has started); it prints "ready" first, when it polls.
# Polls /proc/PID/task/*/children in a tight loop: a job's child lives for
# tens of milliseconds, too short for pgrep in a shell loop to catch.
import os, signal, sys, time

def children(pid):
    found = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    found += [int(x) for x in f.read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return found

def stopped_with(child, path):
    for _ in range(200):   # SIGSTOP takes effect asynchronously
        try:
            with open(f"/proc/{child}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        if state in "Tt":
            break
        if state in "ZX":
            return False
        time.sleep(0.001)
    else:
        return False
    if path is None:
        return True
    try:
        held = [os.readlink(f"/proc/{child}/fd/{fd}") for fd in os.listdir(f"/proc/{child}/fd")]
    except OSError:
        return False
    parents = [h for h in held if h.startswith(("socket:", "anon_inode:")) or h.endswith("/LOCK")]
    # Written: the child sent its first frame (the journal opened), so it
    # is past its setup (a spawned one may hold an inherited data.mdb before).
    try:
        with open(f"/proc/{child}/io") as f:
            wrote = int(next(l for l in f if l.startswith("wchar:")).split()[1])
    except (OSError, StopIteration, ValueError):
        return False
    return path in held and wrote > 0 and not parents

args = sys.argv[1:]
grand = args[0] == "--grandchild"
if grand:
    args = args[1:]
pid, seconds = int(args[0]), float(args[1])
path = os.path.realpath(args[2]) if len(args) > 2 else None
if grand:
    print("ready", flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    found = children(pid)
    if grand:
        found = [g for c in found if c != os.getpid() for g in children(c)]
    for child in found:
        try:
            os.kill(child, signal.SIGSTOP)
        except OSError:
            continue
        if stopped_with(child, path):
            print(child)
            sys.exit(0)
        try:
            os.kill(child, signal.SIGCONT)
        except OSError:
            pass
        time.sleep(0.002)
sys.exit(1)
