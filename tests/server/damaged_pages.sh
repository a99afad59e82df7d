#!/bin/bash
# damaged_pages.sh — a flipped node pointer in a journal leaf page of
# data.mdb (review hV3) kills whoever walks it, since LMDB trusts its
# pages. berthd runs JOURNAL.VERIFY and AT in a child process: the client
# hears -CORRUPT naming the damage, berthd keeps answering (PING, reads,
# writes), frees the dead child's reader slot, and stops cleanly.
#
# The byte is not left to luck: tests/damage/node_ptrs.py lists each
# journal leaf page's middle node pointer; the test takes the first whose
# flip kills an unguarded walk (`berth` with BERTH_UNGUARDED=1, in-process:
# a verify, and a replay to the page's last seq from the snapshot before
# it) yet leaves `berth status` (the head and the newest snapshot, what
# berthd's start reads) alive. Needs BERTH (the berth binary) too.
source "$(dirname "$0")/lib.sh"
BERTH=${BERTH:?BERTH must name the berth binary}
NODE_PTRS="$(dirname "$0")/../damage/node_ptrs.py"
RECORDS=3000                        # a snapshot lands on the head
SNAPSHOT_EVERY=1000
# A sanitizer build: berth's and berthd's own handlers must get SIGSEGV and
# SIGBUS (last words; a job's child dying of the default action), not
# ASan's report and exit 1. ASan's default; said so that a caller's
# ASAN_OPTIONS cannot turn it off.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}allow_user_segv_handler=1"

start_berthd --snapshot-every "$SNAPSHOT_EVERY"
{
    for ((i = 1; i <= RECORDS; i++)); do printf 'WORKER.ADD w%d GPUS 8\r\n' "$i"; done
    printf 'QUIT\r\n'
} >"$TMP/writes.txt"
nc_file "$TMP/writes.txt" >"$TMP/writes.out"
expect_eq "$(head_seq)" "$RECORDS" "the head after the writes"
expect_verify_ok "the healthy journal"
healthy_at=$(r AT 2500 WORKER.GET w7)
stop_berthd

python3 "$NODE_PTRS" "$DATA/data.mdb" 100000 >"$TMP/ptrs.txt" || fail "node_ptrs.py failed"
probe="$TMP/probe"
flip() {   # DIR OFFSET
    python3 -c 'import sys
f = open(sys.argv[1], "r+b"); o = int(sys.argv[2]); f.seek(o); b = f.read(1)[0]
f.seek(o); f.write(bytes([b ^ 0x5a])); f.close()' "$1/data.mdb" "$2" || fail "flip failed"
}
chosen=""
while read -r off first last; do
    [ "$last" -lt $((RECORDS - 100)) ] || continue
    [ $((first / SNAPSHOT_EVERY)) -eq $((last / SNAPSHOT_EVERY)) ] || continue
    rm -rf "$probe"; cp -r "$DATA" "$probe"; flip "$probe" "$off"
    # (braces: the shell's own "Segmentation fault" note goes to /dev/null too)
    { BERTH_UNGUARDED=1 "$BERTH" journal verify --data "$probe" >/dev/null; } 2>/dev/null
    [ $? -gt 128 ] || continue
    { BERTH_UNGUARDED=1 "$BERTH" replay --data "$probe" --at "$last" >/dev/null; } 2>/dev/null
    [ $? -gt 128 ] || continue
    BERTH_UNGUARDED=1 "$BERTH" status --data "$probe" >/dev/null 2>&1 || continue
    chosen=$off; at_seq=$last
    break
done <"$TMP/ptrs.txt"
[ -n "$chosen" ] || fail "no node-pointer flip killed an unguarded walk and spared the start"
note "flipped byte $chosen (a node pointer of the leaf page ending at seq $at_seq)"
flip "$DATA" "$chosen"

start_berthd
out=$(r JOURNAL.VERIFY 2>&1)
expect_match "$out" "^CORRUPT JOURNAL.VERIFY: the journal's pages in $DATA/data.mdb are damaged past seq 0 .*: reading them killed the job's process \(SIG(SEGV|BUS)\).*berth journal verify --data $DATA" \
    "JOURNAL.VERIFY on damaged pages"
expect_eq "$(r PING)" PONG "PING after the verify's child died"
grep -q "JOURNAL.VERIFY's process died of SIG.*its reader slot was freed" "$LOG" ||
    fail "no log line naming the death and the freed reader slot"
out=$(r AT "$at_seq" WORKER.GET w7 2>&1)
expect_match "$out" "^CORRUPT AT: the journal's pages in $DATA/data.mdb are damaged at or before seq $at_seq: reading them killed the job's process" \
    "AT $at_seq on damaged pages"
expect_eq "$(r PING)" PONG "PING after the AT's child died"
# Jobs that read no damaged page still answer, byte for byte as before.
expect_eq "$(r AT 2500 WORKER.GET w7)" "$healthy_at" "AT 2500 beside the damage"
expect_int "$(r WORKER.ADD wnew GPUS 8)" "a write after the deaths"
out=$(r JOURNAL.VERIFY 2>&1)
expect_match "$out" "^CORRUPT JOURNAL.VERIFY" "a second JOURNAL.VERIFY"
stop_berthd
note "ok: -CORRUPT for JOURNAL.VERIFY and AT $at_seq, berthd served on and stopped cleanly"
