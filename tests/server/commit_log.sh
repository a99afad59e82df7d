#!/usr/bin/env bash
# commit_log.sh — the commit log (--commit-log on, the default; docs/server.md
# "The commit log"): a batch is acknowledged once its frame in DATA/commit.log
# is synced, and moved into LMDB by a checkpoint later.
#   1. The files: commit.log and commit.log.2, each created at half of
#      --commit-log-mib, zero-filled.
#   2. A command that reads the LMDB journal right after a write sees it:
#      JOURNAL.HEAD, JOURNAL.RANGE, HISTORY, INSTANCE.GET's DEPLOY time (each
#      waits for a checkpoint), also while another client streams writes (the
#      read is not starved); INFO shows the log and its checkpoints, and LMDB
#      catches up with the durable head once writes pause.
#   3. kill -9 mid-stream: `berth status` says how many acknowledged records
#      only the log holds, the restart logs that it moved that many, and every
#      acknowledged write is there; then the same with the restart on
#      --commit-log off (a log left behind is moved whatever the flag says).
#   4. A clean stop leaves LMDB holding everything: no note, nothing moved.
#   5. A damaged frame before a whole one: berthd refuses to start (CORRUPT,
#      naming the file) rather than drop acknowledged writes; repaired, it
#      starts and moves them.
#   6. The map at its cap (checkpoints fail FULL): new writes -FULL, yet a
#      retried REQID hears its seq; JOURNAL.RANGE -FULL; WORKER.GET answers.
# The OS-crash side (only synced writes survive) is oscrash_log.sh's.
. "$(dirname "$0")/lib.sh"
BERTH=${BERTH:?BERTH must name the berth tool}
command -v python3 >/dev/null || { echo "$test_name: python3 missing"; exit 1; }

# 1. The file.
start_berthd --commit-log-mib 80
for f in commit.log commit.log.2; do
    expect_eq "$(stat -c %s "$DATA/$f")" $((40 << 20)) "$f's size with --commit-log-mib 80 (half each)"
    cmp -s -n 1048576 "$DATA/$f" /dev/zero || fail "a fresh $f should be zero-filled"
done
expect_eq "$(r INFO journal | tr -d '\r' | grep '^commit_log:')" "commit_log:on" "INFO journal"

# 2. Reads of the journal right after a write.
ok() { local out; out=$(r "$@"); expect_int "$out" "$*"; echo "$out"; }
for i in 1 2 3 4; do ok WORKER.ADD "w$i" GPUS 8 >/dev/null; done
for i in $(seq 1 20); do
    s=$(ok DEPLOY "i$i" MODEL m BACKEND vllm ON w1 w2)
    expect_eq "$(head_seq)" "$s" "JOURNAL.HEAD right after DEPLOY i$i"
    expect_eq "$(r JOURNAL.RANGE "$s" 1 | map_field command)" "DEPLOY i$i MODEL m BACKEND vllm ON w1 w2" \
        "JOURNAL.RANGE right after DEPLOY i$i"
    hist=$(r HISTORY INSTANCE "i$i" | map_field seq)
    expect_eq "$hist" "$s" "HISTORY INSTANCE i$i right after its DEPLOY"
    t=$(r INSTANCE.GET "i$i" | map_field deploy_time)
    expect_match "$t" '^[0-9]+$' "INSTANCE.GET i$i's DEPLOY time right after it"
    ok RELEASE "i$i" >/dev/null
done
# While another client streams pipelined writes, each read still sees the
# write acknowledged just before it, within a few seconds.
python3 - "$PORT" >"$TMP/stream.out" 2>&1 <<'PY' &
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
end = time.time() + 2
n = 0
while time.time() < end:
    batch = b"".join(b"WORKER.ADD s%d GPUS 1\r\n" % (n + j) for j in range(64))
    s.sendall(batch)
    got = 0
    buf = b""
    while got < 64:
        d = s.recv(65536)
        if not d:
            sys.exit("closed")
        buf += d
        got = buf.count(b"\r\n")
    n += 64
print(n)
PY
stream_pid=$!; bg_pids+=($stream_pid)
sleep 0.3
for i in $(seq 1 15); do
    t0=$(date +%s%N)
    s=$(ok WORKER.ADD "x$i" GPUS 1)
    got=$(timeout 10 "$REDIS_CLI" -p "$PORT" JOURNAL.RANGE "$s" 1 | map_field command)
    t1=$(date +%s%N)
    expect_eq "$got" "WORKER.ADD x$i GPUS 1" "JOURNAL.RANGE of an acknowledged write during a stream"
    [ $(( (t1 - t0) / 1000000 )) -lt 5000 ] || fail "a read behind a write stream took $(( (t1 - t0) / 1000000 )) ms"
done
wait "$stream_pid" || fail "the writer stream failed: $(cat "$TMP/stream.out")"
streamed=$(cat "$TMP/stream.out")
[ "$streamed" -gt 1000 ] || fail "the writer stream wrote only $streamed commands"
info=$(r INFO journal | tr -d '\r')
checkpoints=$(grep '^checkpoints:' <<<"$info" | cut -d: -f2)
[ "$checkpoints" -gt 20 ] || fail "INFO journal: expected more than 20 checkpoints, got [$info]"
# The stream's files were moved by the checkpointer thread while the
# committer logged on (the reads' waits too: a sealed file each).
background=$(grep '^checkpoints_background:' <<<"$info" | cut -d: -f2)
[ "$background" -gt 10 ] || fail "INFO journal: expected more than 10 checkpoints by the checkpointer thread, got [$info]"
expect_eq "$(grep '^checkpoint_failures:' <<<"$info")" "checkpoint_failures:0" "INFO journal"
# Writes pause: the idle checkpoint (10 ms) brings LMDB to the head, unasked
# (INFO waits for nothing and urges nothing). The checkpointer runs at
# SCHED_IDLE, so on cores other tests keep busy it may take a while: up to
# 10 s.
ok WORKER.ADD y1 GPUS 1 >/dev/null
for ((i = 0; i < 200; i++)); do
    info=$(r INFO journal | tr -d '\r')
    head=$(grep '^head_seq:' <<<"$info" | cut -d: -f2)
    [ "$(grep '^lmdb_head_seq:' <<<"$info" | cut -d: -f2)" = "$head" ] && break
    sleep 0.05
done
expect_eq "$(grep '^lmdb_head_seq:' <<<"$info" | cut -d: -f2)" "$head" "lmdb_head_seq after a pause"
expect_eq "$(grep '^commit_log_used_bytes:' <<<"$info")" "commit_log_used_bytes:0" "the log after a pause"
expect_verify_ok "after the stream"

# 3. kill -9 mid-stream: what only the log holds is moved at the restart.
# stream ROUND: unpipelined writes, one per line of $TMP/in.ROUND, replies to
# $TMP/ack.ROUND, killed with berthd.
stream() {
    local round=$1 j
    for ((j = 0; j < 4000; j++)); do
        if ((j % 2 == 0)); then echo "WORKER.ADD k$round-$j GPUS 2 REQID k$round-$j"
        else echo "WORKER.CORDON k$round-$((j - 1)) REQID k$round-$j"; fi
    done >"$TMP/in.$round"
    "$REDIS_CLI" -p "$PORT" <"$TMP/in.$round" >"$TMP/ack.$round" 2>/dev/null &
    stream_pid=$!; bg_pids+=($stream_pid)
}
kill_mid_stream() {   # ROUND
    stream "$1"
    local n=0 i
    # Up to 30 s: a loaded machine acks slowly (350 in 4 s was seen while
    # round 5 held data.mdb's syncs); the loop ends at 600 anyway.
    for ((i = 0; i < 1500 && n < 600; i++)); do sleep 0.02; n=$(grep -c '' "$TMP/ack.$1"); done
    [ "$n" -ge 600 ] || fail "round $1: only $n writes acknowledged before the kill"
    kill9_berthd
    wait "$stream_pid" 2>/dev/null
    sed -i '/^$/d' "$TMP/ack.$1"
}
restart_check() {   # ROUND FLAGS…: restart, every acknowledged write present
    local round=$1 pending moved lines
    shift
    note=$("$BERTH" status --data "$DATA" 2>&1 >/dev/null | grep 'commit log in .* holds' || true)
    pending=0
    [ -z "$note" ] || pending=$(sed -E 's/.* holds ([0-9]+) acknowledged.*/\1/' <<<"$note")
    lines=$(grep -c 'moved .* acknowledged records from' "$LOG" || true)
    start_berthd "$@"
    moved=$(grep 'moved .* acknowledged records from' "$LOG" | tail -n 1 | sed -E 's/.*moved ([0-9]+) .*/\1/')
    if [ "$pending" -gt 0 ]; then
        [ "$(grep -c 'moved .* acknowledged records from' "$LOG")" -gt "$lines" ] \
            || fail "round $round: berth status said $pending records wait in commit.log, the restart moved none"
        expect_eq "$moved" "$pending" "round $round: records moved at the restart"
        recovered=$((recovered + moved))
    fi
    dump_journal >"$TMP/journal.$round"
    acked_pairs_one "$round" >"$TMP/acked.$round"
    acked_check "round $round" "$TMP/journal.$round" "$TMP/acked.$round" >"$TMP/check.$round" \
        || fail "round $round: $(head -n 5 "$TMP/check.$round")"
    expect_verify_ok "round $round"
}
acked_pairs_one() {   # ROUND: "reply<TAB>command" for each acknowledged line
    paste -d '\t' "$TMP/ack.$1" <(head -n "$(wc -l <"$TMP/ack.$1")" "$TMP/in.$1" | sed 's/ REQID .*//')
}
recovered=0
kill_mid_stream 1
restart_check 1
kill_mid_stream 2
restart_check 2 --commit-log off
[ -f "$DATA/commit.log" ] || fail "the log should stay in place with --commit-log off"
stop_berthd
start_berthd
kill_mid_stream 3
restart_check 3

# 4. A clean stop: LMDB holds everything.
ok WORKER.ADD z1 GPUS 1 >/dev/null
stop_berthd
"$BERTH" status --data "$DATA" >/dev/null 2>"$TMP/status.err" || fail "berth status: $(cat "$TMP/status.err")"
! grep -q 'commit log in .* holds' "$TMP/status.err" || fail "after a clean stop: $(cat "$TMP/status.err")"
lines=$(grep -c 'moved .* acknowledged records from' "$LOG" || true)
start_berthd
expect_eq "$(grep -c 'moved .* acknowledged records from' "$LOG" || true)" "$lines" "moved lines after a clean stop"

# 5. Damage before a whole frame. Since the committer hands the log to the
# checkpointer every 20 ms, a kill may find a single frame waiting, and a
# lone damaged last frame is rightly taken for a torn one. So this round runs
# under disk_shim with every sync of data.mdb held 60 s: the first sealed
# file's checkpoint never ends, the committer cannot seal again while it
# runs, and every frame after it waits in the log. Unpipelined writes, one
# frame each.
stop_berthd
shim_ctl_setup
start_shimmed
echo 60000 >"$CTL/delay_ms.data"
kill_mid_stream 5
grep -q '^sync data$' "$CTL/syncs" || fail "round 5: no checkpoint reached data.mdb's sync before the kill"
note=$("$BERTH" status --data "$DATA" 2>&1 >/dev/null | grep 'commit log in .* holds' || true)
[ -n "$note" ] || fail "round 5: with data.mdb's syncs held, berth status found nothing waiting in the log"
pending=$(sed -E 's/.* holds ([0-9]+) acknowledged.*/\1/' <<<"$note")
[ "$pending" -ge 2 ] || fail "round 5: only $pending record waits in the log: $note"
# The frames wait in one file or both (one sealed, its checkpoint held, the
# other taking frames). Damage the first frame of the older file whose first
# frame LMDB lacks: frames follow it, so the walk must refuse rather than
# take it for a torn last frame. Its payload starts 64 bytes in: flip a byte
# of it.
head=$(sed -E 's/.* after seq ([0-9]+) .*/\1/' <<<"$note")
# backup_refused STATUS PATTERN WHY: berth backup of $DATA exits STATUS,
# says PATTERN, and leaves neither the backup nor its .partial.
backup_refused() {
    local rc=0
    "$BERTH" backup --data "$DATA" --to "$TMP/bk5" >"$TMP/bk5.out" 2>"$TMP/bk5.err" || rc=$?
    expect_eq "$rc" "$1" "berth backup $3"
    grep -q "$2" "$TMP/bk5.err" || fail "round 5: berth backup $3: $(cat "$TMP/bk5.err")"
    [ ! -e "$TMP/bk5" ] && [ ! -e "$TMP/bk5.partial" ] || fail "round 5: a refused backup left $TMP/bk5 or its .partial"
}
# berth backup refuses a copy that would lack them.
backup_refused 2 "holds $pending acknowledged records after seq $head that its data.mdb does not hold yet, and its head did not move in 90 ms: no berthd runs on" \
    "while only the commit log holds acknowledged records"
victim=$(python3 - "$DATA" "$head" <<'PY'
import struct, sys
d, head = sys.argv[1], int(sys.argv[2])
best = None
for name in ("commit.log", "commit.log.2"):
    with open(f"{d}/{name}", "rb") as f:
        h = f.read(64)
    if h[:8] != b"BRTHCLOG":
        continue
    first, count = struct.unpack(">QI", h[16:28])
    if first + count - 1 > head and (best is None or first < best[0]):
        best = (first, name)
print(best[1] if best else "")
PY
)
[ -n "$victim" ] || fail "round 5: berth status counts records after seq $head, yet no file starts with one"
orig=$(od -An -tu1 -j 100 -N 1 "$DATA/$victim" | tr -d ' ')
printf "$(printf '\\%03o' $(( orig ^ 255 )))" | dd of="$DATA/$victim" bs=1 seek=100 conv=notrunc status=none
rc=0
timeout 20 "$BERTHD" --data "$DATA" --bind 127.0.0.1 --port "$PORT" >"$TMP/corrupt.log" 2>&1 || rc=$?
expect_eq "$rc" 1 "berthd's exit status on a damaged $victim ($note)"
grep -q 'CORRUPT.*commit.log' "$TMP/corrupt.log" || fail "berthd should name CORRUPT and the commit log: $(cat "$TMP/corrupt.log")"
# The tools read LMDB alone, but must not look fine beside a log berthd refuses.
"$BERTH" status --data "$DATA" >/dev/null 2>"$TMP/status5.err" || true
grep -q "warning: CORRUPT the commit log .*$victim.*berthd will not start" "$TMP/status5.err" ||
    fail "round 5: berth status does not warn of the damaged log: $(cat "$TMP/status5.err")"
# berth backup refuses it too: the backup would lack what the log holds.
backup_refused 1 "^CORRUPT cannot back up $DATA: .*$victim.*berthd will not start on $DATA, and the acknowledged records that log may hold past seq $head would be missing" \
    "beside a damaged commit log"
printf "$(printf '\\%03o' "$orig")" | dd of="$DATA/$victim" bs=1 seek=100 conv=notrunc status=none
restart_check 5
note "round 5: $pending records waited in the log; a flipped byte in $victim's first frame refused the start"
# Once a start moved them, the backup holds every acknowledged record.
"$BERTH" backup --data "$DATA" --to "$TMP/bk5" --json >"$TMP/bk5.out" 2>"$TMP/bk5.err" ||
    fail "round 5: berth backup after the restart: $(cat "$TMP/bk5.err")"
expect_eq "$(sed -E 's/.*"head_seq":([0-9]+).*/\1/' "$TMP/bk5.out")" "$(r JOURNAL.HEAD | sed -n 2p)" \
    "round 5: the backup's head beside the restarted berthd"
# Rounds 1-3 may each find nothing but LMDB's (a checkpoint every 20 ms);
# round 5 holds checkpoints back, so it always has something to move.
[ "$recovered" -gt 0 ] || fail "no round found acknowledged records only in the log"
note "records moved from commit.log after the kills: $recovered"
stop_berthd

# 6. Checkpoints failing (the map at its cap): a new write is refused
# unstaged, but a retry of an acknowledged REQID hears its seq, and a
# command with a syntax error its error, as always.
DATA="$TMP/data-full"
start_berthd --map-size-max-mib 2 --map-size-initial-mib 1
pad=$(printf 'p%.0s' $(seq 1 100))
# In chunks, each followed by JOURNAL.HEAD, which waits for a checkpoint: the
# checkpointer lives at SCHED_IDLE, and on a machine busy with other tests
# it may not run at all while 12,000 writes go into the log (a CI run saw
# every one acknowledged and no map filled).
: >"$TMP/ack.full"
for ((c = 0; c < 12; c++)); do
    for ((i = c * 1000; i < (c + 1) * 1000; i++)); do echo "WORKER.ADD f$i GPUS 8 LABEL pad=$pad REQID f$i"; done |
        "$REDIS_CLI" -p "$PORT" | sed '/^$/d' >>"$TMP/ack.full"
    grep -q -v '^[0-9]*$' "$TMP/ack.full" && break
    r JOURNAL.HEAD >/dev/null
done
first_full=$(grep -n -m1 -v '^[0-9]*$' "$TMP/ack.full" | cut -d: -f1)
[ -n "$first_full" ] || fail "12,000 writes filled no 2 MiB map"
full=$(sed -n "${first_full}p" "$TMP/ack.full")
[ "$first_full" -gt 1 ] || fail "no write was acknowledged before the map filled"
last_ok="f$((first_full - 2))"; last_seq=$(sed -n "$((first_full - 1))p" "$TMP/ack.full")
expect_match "$full" '^FULL ' "a write once checkpoints fail for the map's cap"
[ -n "$last_ok" ] || fail "no write was acknowledged before the map filled"
expect_eq "$(r WORKER.ADD "$last_ok" GPUS 8 LABEL "pad=$pad" REQID "$last_ok")" \
    "$last_seq" "a retry of an acknowledged REQID while writes are refused"
expect_match "$(r WORKER.ADD bad GPUS 999)" '^ERR ' "a syntax error while writes are refused"
expect_match "$(r WORKER.ADD never GPUS 1 REQID never-seen)" '^FULL ' "a new REQID while writes are refused"
expect_match "$(r JOURNAL.RANGE 1 1)" '^FULL .*commit log' "JOURNAL.RANGE while checkpoints fail"
# WATCH from just below LMDB's head: the two records LMDB holds, then it
# waits, connected (it resumes once a checkpoint succeeds: fulldisk.c), and
# berthd logs the wait once.
info=$(r INFO journal | tr -d '\r')
lmdb_head=$(grep '^lmdb_head_seq:' <<<"$info" | cut -d: -f2)
durable=$(grep '^head_seq:' <<<"$info" | cut -d: -f2)
[ "$durable" -gt "$lmdb_head" ] || fail "no acknowledged record waits in the log ($lmdb_head, $durable)"
rc=0
w=$(printf 'WATCH %s\r\n' "$((lmdb_head - 1))" | timeout 2 nc -q -1 127.0.0.1 "$PORT" | tr -d '\r') || rc=$?
expect_eq "$rc" 124 "WATCH's connection while checkpoints fail (timeout's status: still open)"
expect_eq "$(grep -c -x seq <<<"$w")" 2 "WATCH's records from LMDB while checkpoints fail"
expect_eq "$(grep -c "WATCH client id=[0-9]* waits at seq $((lmdb_head + 1)): records to $durable wait in the commit log, which the journal cannot take now (FULL)" "$LOG")" 1 \
    "berthd's log of the waiting watcher"
expect_eq "$(r WORKER.GET "$last_ok" | map_field gpus)" 8 "WORKER.GET while writes are refused"
stop_berthd
note "ok ($streamed streamed writes, $checkpoints checkpoints, $background by the checkpointer thread)"
