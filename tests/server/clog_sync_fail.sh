#!/usr/bin/env bash
# clog_sync_fail.sh — drives clog_sync_fail.c under disk_shim: a sealed
# commit-log file whose checkpoint met a full disk, then a failed sync on the
# retry, is never freed on that retry; after a power loss every acknowledged
# seq is in the journal. (No berthd: the journal and the commit log alone.)
set -u
test_name=clog_sync_fail
: "${CLOG_SYNC_FAIL:?path to clog_sync_fail}" "${BERTH_DISK_SHIM:?path to libberth_disk_shim.so}"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/berth-$test_name.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL $test_name: $*" >&2; exit 1; }
D=$TMP/data
mkdir -p "$TMP/ctl" "$TMP/img" "$D"
# A sanitizer build's runtime must load before the shim (as lib.sh's shim_preload).
PRELOAD=$BERTH_DISK_SHIM
runtime=$(ldd "$CLOG_SYNC_FAIL" | awk '/libasan\.so/ { print $3; exit }')
[ -n "$runtime" ] && PRELOAD="$runtime:$BERTH_DISK_SHIM"
acked=$(env BERTH_SHIM_DATA="$D/data.mdb" BERTH_SHIM_DISK="$TMP/img/data.mdb" \
            BERTH_SHIM_LOG="$D/commit.log" BERTH_SHIM_LOG_DISK="$TMP/img/commit.log" \
            BERTH_SHIM_LOG2="$D/commit.log.2" BERTH_SHIM_LOG2_DISK="$TMP/img/commit.log.2" \
            BERTH_SHIM_CTL="$TMP/ctl" LD_PRELOAD="$PRELOAD" \
            "$CLOG_SYNC_FAIL" run "$D") || fail "the run failed"
[ -n "$acked" ] && [ "$acked" -ge 10 ] || fail "the run acknowledged nothing: [$acked]"
# The OS crash: what the syncs put on the shim's disk, and nothing else.
for f in data.mdb commit.log commit.log.2; do cp "$TMP/img/$f" "$D/$f" || fail "no disk image of $f"; done
rm -f "$D/lock.mdb"
"$CLOG_SYNC_FAIL" recover "$D" "$acked" || fail "acknowledged records were lost"
echo "$test_name: ok (acknowledged up to seq $acked, all there after the power loss)"
