#!/bin/sh
# install.sh — ctest case `install`: `cmake --install BUILD --prefix P`
# makes a tree that works (tools/install.cmake).
#
# usage: install.sh BUILD_DIR WORK_DIR PREFIX BINDIR DOCDIR
# PREFIX, BINDIR and DOCDIR are the configured install prefix and full
# bindir and docdir (GNUInstallDirs' CMAKE_INSTALL_FULL_*).
# Checks: berthd and berth land in P/bin and run from there (--version, and
# berthd answers PING on a fresh data directory); the unit in
# P/lib/systemd/system names P/bin/berthd and P's docs, and passes
# `systemd-analyze verify` with no complaint, when systemd-analyze is
# there; README.md and docs/ land in P/share/doc/berth. The unit is filled
# in at install time, so two more installs under DESTDIR check that it
# names the prefix the install was given, not the tree under DESTDIR:
# without --prefix, the configured BINDIR and DOCDIR; with --prefix /usr,
# /usr/bin/berthd and /usr/share/doc/berth.
set -u
BUILD=$1
WORK=$2/install
PREFIX=$3
BINDIR=$4
DOCDIR=$5
fail() {
    echo "FAIL [install]: $*" >&2
    exit 1
}
# check_unit UNIT BINDIR DOCDIR: UNIT names BINDIR/berthd and DOCDIR's docs.
check_unit() {
    [ -f "$1" ] || fail "no unit at $1"
    grep -qx "ExecStart=$2/berthd --data /var/lib/berth/data" "$1" ||
        fail "$1: ExecStart is not $2/berthd: $(grep '^ExecStart' "$1")"
    grep -qx "Documentation=file://$3/docs/server.md" "$1" ||
        fail "$1: Documentation is not under $3: $(grep '^Documentation' "$1")"
    ! grep -q '@BERTH_' "$1" || fail "$1 keeps an unconfigured @…@ word"
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
check_unit "$UNIT" "$P/bin" "$P/share/doc/berth"
for case in configured usr; do
    D=$WORK/destdir-$case
    if [ $case = configured ]; then
        DESTDIR=$D cmake --install "$BUILD" >"$WORK/install-$case.log" 2>&1 ||
            fail "DESTDIR=$D cmake --install: $(tail -5 "$WORK/install-$case.log")"
        check_unit "$D$PREFIX/lib/systemd/system/berthd.service" "$BINDIR" "$DOCDIR"
    else
        DESTDIR=$D cmake --install "$BUILD" --prefix /usr >"$WORK/install-$case.log" 2>&1 ||
            fail "DESTDIR=$D cmake --install --prefix /usr: $(tail -5 "$WORK/install-$case.log")"
        [ -x "$D/usr/bin/berthd" ] || fail "DESTDIR=$D --prefix /usr: no $D/usr/bin/berthd"
        check_unit "$D/usr/lib/systemd/system/berthd.service" /usr/bin /usr/share/doc/berth
    fi
done
if command -v systemd-analyze >/dev/null 2>&1; then
    systemd-analyze verify "$UNIT" >"$WORK/verify.txt" 2>&1 || fail "systemd-analyze verify: $(cat "$WORK/verify.txt")"
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
