#!/bin/sh
# as_root.sh — ctest case `cli_as_root`: `berth` run as root on a service's
# data directory leaves it one the service's user can start berthd on.
#
# usage: as_root.sh BERTH BERTHD
# The systemd unit runs berthd as a user of its own (DynamicUser) and tells
# the operator to run berth as root beside it; whatever berth makes there
# as root (lock.mdb at any open, a rebuilt history/, a backup's DEST) must
# go to the data directory's owner, or berthd, restarted as that user,
# fails with Permission denied (docs/cli.md, "Run as root"). Here `nobody`
# stands for the service's user:
#   1. berthd as nobody makes DIR and writes to it;
#   2. as root: `berth status` on DIR with its lock.mdb files removed,
#      `berth history rebuild`, `berth backup` to DEST: everything in DIR
#      and DEST is nobody's, and berthd as nobody starts on DIR, answers
#      and writes, and does so on DEST moved in place of DIR (the restore);
#   3. a lock.mdb nobody cannot open: berthd's error says so once, naming
#      the file, not "cannot open the journal in DIR: " twice.
# Exits 77 (skipped) unless run as root with setpriv, redis-cli and a
# `nobody` user.
set -u
BERTH=$1
BERTHD_BUILT=$2
skip() {
    echo "SKIP [cli_as_root]: $*"
    exit 77
}
fail() {
    echo "FAIL [cli_as_root]: $*" >&2
    exit 1
}
[ "$(id -u)" = 0 ] || skip "not root: berth as root on a service's directory is the case"
command -v setpriv >/dev/null 2>&1 || skip "setpriv missing (util-linux)"
command -v redis-cli >/dev/null 2>&1 || skip "redis-cli missing: apt-get install -y redis-tools"
NOBODY_UID=$(id -u nobody 2>/dev/null) && NOBODY_GID=$(id -g nobody 2>/dev/null) || skip "no user nobody"
AS_NOBODY="setpriv --reuid=$NOBODY_UID --regid=$NOBODY_GID --clear-groups"
OWNER=$NOBODY_UID:$NOBODY_GID

# Under /tmp, not the build tree: nobody must reach the directory (a build
# under /root would not let it), and berthd is copied there for the same reason.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/berth-as-root.XXXXXX") || fail "cannot make a work directory"
BERTHD_PID=
cleanup() {
    [ -z "$BERTHD_PID" ] || { kill "$BERTHD_PID" 2>/dev/null; wait "$BERTHD_PID" 2>/dev/null; }
    rm -rf "$WORK"
}
trap cleanup EXIT
chmod 0755 "$WORK" && cp "$BERTHD_BUILT" "$WORK/berthd" && chmod 0755 "$WORK/berthd" || fail "cannot set up $WORK"
SVC=$WORK/svc                       # nobody's, like /var/lib/berth
mkdir "$SVC" "$WORK/backup" && chown "$OWNER" "$SVC" || fail "cannot make $SVC"
DIR=$SVC/data
SOCK=$SVC/berthd.sock
$AS_NOBODY test -x "$WORK/berthd" || skip "nobody cannot reach $WORK (a parent directory shuts it out)"

rcli() {
    redis-cli -s "$SOCK" "$@"
}

# start_berthd DIR: berthd as nobody on DIR; returns once it answers PING.
start_berthd() {
    rm -f "$SOCK"
    $AS_NOBODY "$WORK/berthd" --data "$1" --port 0 --unixsocket "$SOCK" >"$WORK/berthd.log" 2>&1 &
    BERTHD_PID=$!
    tries=0
    until [ "$(rcli PING 2>/dev/null)" = PONG ]; do
        tries=$((tries + 1))
        if [ $tries -ge 100 ] || ! kill -0 "$BERTHD_PID" 2>/dev/null; then
            fail "berthd as nobody did not start on $1: $(cat "$WORK/berthd.log")"
        fi
        sleep 0.1
    done
}

stop_berthd() {
    kill "$BERTHD_PID" && wait "$BERTHD_PID" || fail "berthd did not stop cleanly: $(cat "$WORK/berthd.log")"
    BERTHD_PID=
}

# owned_by_nobody PATH WHAT: every entry under PATH is nobody's (user and group).
owned_by_nobody() {
    find "$1" \( ! -uid "$NOBODY_UID" -o ! -gid "$NOBODY_GID" \) -printf '%u:%g %p\n' >"$WORK/foreign.txt" ||
        fail "find $1"
    [ ! -s "$WORK/foreign.txt" ] || fail "after $2, not nobody's: $(cat "$WORK/foreign.txt")"
}

# berth as root: ARGS..., exit 0 wanted.
berth_ok() {
    "$BERTH" "$@" >"$WORK/out.txt" 2>"$WORK/err.txt" || fail "berth $*: $(cat "$WORK/err.txt")"
}

# 1. The service's directory, made and written by berthd as nobody.
start_berthd "$DIR"
[ "$(rcli WORKER.ADD w1 GPUS 4)" = 1 ] || fail "berthd refused WORKER.ADD"
[ "$(rcli DEPLOY i1 MODEL m BACKEND b ON w1)" = 2 ] || fail "berthd refused DEPLOY"
stop_berthd
owned_by_nobody "$DIR" "berthd as nobody"

# 2a. A read-only berth where the lock files are missing makes them.
rm -f "$DIR/lock.mdb" "$DIR/history/lock.mdb"
berth_ok status --data "$DIR"
[ -f "$DIR/lock.mdb" ] && [ -f "$DIR/history/lock.mdb" ] || fail "berth status made no lock.mdb (nothing was tested)"
for f in "$DIR/lock.mdb" "$DIR/history/lock.mdb"; do
    [ "$(stat -c %u:%g "$f")" = "$OWNER" ] || fail "berth status as root left $f $(stat -c %U:%G "$f")"
done
owned_by_nobody "$DIR" "berth status"
start_berthd "$DIR"
stop_berthd

# 2b. The rebuild makes a new history/.
berth_ok history rebuild --data "$DIR"
owned_by_nobody "$DIR" "berth history rebuild"
start_berthd "$DIR"
[ "$(rcli WORKER.ADD w2 GPUS 2)" = 3 ] || fail "berthd as nobody refused a write after the rebuild"
stop_berthd

# 2c. The backup, moved in place of DIR (the restore docs/cli.md gives).
berth_ok backup --data "$DIR" --to "$WORK/backup/b1"
[ "$(stat -c %u:%g "$WORK/backup")" = 0:0 ] || fail "the backup changed its parent's owner"
owned_by_nobody "$WORK/backup/b1" "berth backup"
mv "$DIR" "$SVC/data.old" && mv "$WORK/backup/b1" "$DIR" || fail "cannot move the backup in place"
start_berthd "$DIR"
[ "$(rcli WORKER.ADD w3 GPUS 1)" = 4 ] || fail "berthd as nobody refused a write on the restored backup"
stop_berthd

# 3. What berthd says of a lock.mdb it cannot open.
rm -f "$DIR/lock.mdb" && : >"$DIR/lock.mdb" || fail "cannot make a root-owned lock.mdb"
$AS_NOBODY "$WORK/berthd" --data "$DIR" --port 0 --unixsocket "$SOCK" >"$WORK/berthd.log" 2>&1
rc=$?
[ $rc = 1 ] || fail "berthd on a lock.mdb it cannot open exited $rc: $(cat "$WORK/berthd.log")"
grep -q "Permission denied" "$WORK/berthd.log" || fail "berthd did not say why: $(cat "$WORK/berthd.log")"
[ "$(grep -o 'cannot open the journal in' "$WORK/berthd.log" | wc -l)" = 1 ] ||
    fail "berthd repeats its prefix: $(cat "$WORK/berthd.log")"
grep -q "$DIR/data.mdb and its lock file lock.mdb" "$WORK/berthd.log" ||
    fail "berthd does not name the files: $(cat "$WORK/berthd.log")"
echo "PASS [cli_as_root]"
