#!/bin/sh
# tests/reliability/fulldisk.sh — give berth_fulldisk a small filesystem.
#
# Mounts a 16 MiB tmpfs (root only), runs the program on it and unmounts it
# whatever happens. Exits 77, which ctest reports as skipped, when this
# machine does not allow the mount (not root, or in a container without
# CAP_SYS_ADMIN): the test then says why instead of passing silently.
#   fulldisk.sh <berth_fulldisk> <berthd> <work-dir>
set -u
prog=$1; berthd=$2; work=$3
mnt=$work/mnt
mkdir -p "$mnt"
# Leftovers of an interrupted run: unmount until nothing is mounted there.
n=0
while mountpoint -q "$mnt" 2>/dev/null && [ $n -lt 8 ]; do umount "$mnt" 2>/dev/null || umount -l "$mnt"; n=$((n + 1)); done
if ! mount -t tmpfs -o size=16m,mode=0755 berth-fulldisk "$mnt" 2>"$work/mount.err"; then
  echo "SKIP cannot mount a tmpfs at $mnt: $(cat "$work/mount.err") (needs root with CAP_SYS_ADMIN)"
  exit 77
fi
# The harness kills its berthd on any failure, so the mount is free by now;
# a lazy unmount is the last resort so a mount never outlives the test.
trap 'umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null' EXIT INT TERM
rm -f "$mnt.berthd.log"
"$prog" --berthd "$berthd" --dir "$mnt" --map-mib 2
status=$?
if [ $status -ne 0 ]; then
  echo "--- berthd log ($mnt.berthd.log), last 30 lines:"
  tail -30 "$mnt.berthd.log"
fi
exit $status
