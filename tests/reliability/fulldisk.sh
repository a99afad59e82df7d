#!/bin/sh
# tests/reliability/fulldisk.sh — give berth_fulldisk small filesystems.
#
# Mounts two tmpfs (root only) and runs the program on them, unmounting
# them whatever happens: a 16 MiB one for the phases with --commit-log off
# (the LMDB road), and one big enough for the commit log's preallocated
# file (--commit-log-mib 80, created at berthd's first start) for the
# phases with it on, where the ballast then leaves ~3 MiB. Exits 77, which
# ctest reports as skipped, when this machine does not allow the mount (not
# root, or in a container without CAP_SYS_ADMIN): the test then says why
# instead of passing silently.
#   fulldisk.sh <berth_fulldisk> <berthd> <work-dir>
set -u
prog=$1; berthd=$2; work=$3
mnt=$work/mnt
mnt_log=$work/mnt-log
log_mib=80
mkdir -p "$mnt" "$mnt_log"
# Leftovers of an interrupted run: unmount until nothing is mounted there.
for m in "$mnt" "$mnt_log"; do
  n=0
  while mountpoint -q "$m" 2>/dev/null && [ $n -lt 8 ]; do umount "$m" 2>/dev/null || umount -l "$m"; n=$((n + 1)); done
done
if ! mount -t tmpfs -o size=16m,mode=0755 berth-fulldisk "$mnt" 2>"$work/mount.err"; then
  echo "SKIP cannot mount a tmpfs at $mnt: $(cat "$work/mount.err") (needs root with CAP_SYS_ADMIN)"
  exit 77
fi
# The harness kills its berthd on any failure, so the mounts are free by
# now; a lazy unmount is the last resort so a mount never outlives the test.
trap 'for m in "$mnt" "$mnt_log"; do mountpoint -q "$m" 2>/dev/null && { umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; }; done' EXIT INT TERM
# Two logs of 80 MiB (one per commit-log phase) and a few MiB of LMDB each.
if ! mount -t tmpfs -o size=256m,mode=0755 berth-fulldisk-log "$mnt_log" 2>"$work/mount.err"; then
  echo "SKIP cannot mount a second tmpfs at $mnt_log: $(cat "$work/mount.err") (needs root with CAP_SYS_ADMIN)"
  exit 77
fi
rm -f "$mnt.berthd.log"
"$prog" --berthd "$berthd" --dir "$mnt" --map-mib 2 --log-dir "$mnt_log" --log-mib $log_mib
status=$?
if [ $status -ne 0 ]; then
  echo "--- berthd log ($mnt.berthd.log), last 40 lines:"
  tail -40 "$mnt.berthd.log"
fi
exit $status
