#!/bin/sh
# install.sh — ctest case `install`: `cmake --install BUILD --prefix P`
# makes a tree that works (tools/install.cmake).
#
# usage: install.sh BUILD_DIR WORK_DIR BINDIR
# BINDIR is the configured install bindir, which the unit must name.
# Checks: berthd and berth land in P/bin and run from there (--version, and
# berthd answers PING on a fresh data directory); the unit in
# P/lib/systemd/system names BINDIR/berthd and passes `systemd-analyze
# verify` (pointed at P's berthd) with no complaint, when systemd-analyze
# is there; README.md and docs/ land in P/share/doc/berth.
set -u
BUILD=$1
WORK=$2/install
BINDIR=$3
fail() {
    echo "FAIL [install]: $*" >&2
    exit 1
}
rm -rf "$WORK"
mkdir -p "$WORK" || fail "cannot make $WORK"
P=$WORK/prefix
cmake --install "$BUILD" --prefix "$P" >"$WORK/install.log" 2>&1 || fail "cmake --install: $(tail -5 "$WORK/install.log")"
for tool in berthd berth; do
    [ -x "$P/bin/$tool" ] || fail "$P/bin/$tool is not installed"
    "$P/bin/$tool" --version >"$WORK/version.txt" 2>&1 || fail "$tool --version: $(cat "$WORK/version.txt")"
done
[ -f "$P/share/doc/berth/README.md" ] && [ -f "$P/share/doc/berth/docs/server.md" ] &&
    [ -f "$P/share/doc/berth/docs/cli.md" ] || fail "README.md or docs/ missing under $P/share/doc/berth"
UNIT=$P/lib/systemd/system/berthd.service
[ -f "$UNIT" ] || fail "no unit at $UNIT"
grep -qx "ExecStart=$BINDIR/berthd --data /var/lib/berth/data" "$UNIT" || fail "the unit's ExecStart: $(grep '^ExecStart' "$UNIT")"
! grep -q '@BERTH_' "$UNIT" || fail "the unit keeps an unconfigured @…@ word"
if command -v systemd-analyze >/dev/null 2>&1; then
    sed "s|$BINDIR/berthd|$P/bin/berthd|g" "$UNIT" >"$WORK/berthd.service"
    systemd-analyze verify "$WORK/berthd.service" >"$WORK/verify.txt" 2>&1 || fail "systemd-analyze verify: $(cat "$WORK/verify.txt")"
    [ ! -s "$WORK/verify.txt" ] || fail "systemd-analyze verify complained: $(cat "$WORK/verify.txt")"
    echo "systemd-analyze verify: no complaint"
else
    echo "systemd-analyze not installed: the unit's keys were not checked"
fi
"$P/bin/berthd" --data "$WORK/data" --port 0 --unixsocket "$WORK/s" >"$WORK/berthd.log" 2>&1 &
pid=$!
tries=0
until [ "$(redis-cli -s "$WORK/s" PING 2>/dev/null)" = PONG ]; do
    tries=$((tries + 1))
    [ $tries -lt 100 ] || { kill $pid; fail "the installed berthd did not answer: $(cat "$WORK/berthd.log")"; }
    sleep 0.1
done
kill $pid
wait $pid || fail "the installed berthd did not stop cleanly: $(cat "$WORK/berthd.log")"
echo "PASS [install]"
