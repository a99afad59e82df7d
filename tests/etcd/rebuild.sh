#!/usr/bin/env bash
# rebuild.sh — a follower restarted with its local copy deleted takes the
# journal from etcd, starting from the newest good snapshot the leader put
# there, and reaches the same digest; a damaged snapshot is skipped for an
# older one; a copy that etcd never held refuses to start instead of
# forking; --etcd-timeout-ms is checked, shown and bounds a request to a
# cluster that does not answer.
. "$(dirname "$0")/lib.sh"

# A bad --etcd-timeout-ms is refused before anything starts, on the command
# line and in a config file.
out=$("$BERTHD" --journal etcd --etcd-timeout-ms 99 --data "$TMP/never" --port 0 --unixsocket "$TMP/never.sock" 2>&1)
[ $? != 0 ] || fail "berthd accepted --etcd-timeout-ms 99"
[[ "$out" =~ ERR\ --etcd-timeout-ms:\ expected\ a\ whole\ number\ from\ 100\ to\ 600000 ]] ||
    fail "--etcd-timeout-ms 99: unexpected message [$out]"
printf 'journal etcd\netcd-timeout-ms 600001\n' >"$TMP/bad.conf"
out=$("$BERTHD" --config "$TMP/bad.conf" --data "$TMP/never" --port 0 --unixsocket "$TMP/never.sock" 2>&1)
[ $? != 0 ] || fail "berthd accepted etcd-timeout-ms 600001 in a config file"
[[ "$out" =~ bad.conf:2:.*etcd-timeout-ms ]] || fail "config etcd-timeout-ms 600001: unexpected message [$out]"
[ ! -e "$TMP/never" ] || fail "a refused configuration created the data directory"
out=$("${BERTH:-false}" status --journal etcd --etcd-timeout-ms 5 --data "$TMP/never" 2>&1)
[ $? = 2 ] && [[ "$out" =~ etcd-timeout-ms\ must\ be\ 100\ to\ 600000 ]] || [ -z "${BERTH:-}" ] ||
    fail "berth --etcd-timeout-ms 5: unexpected [$out]"
note "bad --etcd-timeout-ms values refused: ${out}"

# etcd_put KEY VALUE under the cluster's prefix.
etcd_put() {
    local k v
    k=$(printf '%s' "/berth/$CLUSTER/$1" | base64 -w0)
    v=$(printf '%s' "$2" | base64 -w0)
    curl -s -m 2 -X POST "http://127.0.0.1:$(first_etcd_port)/v3/kv/put" -d "{\"key\":\"$k\",\"value\":\"$v\"}" >/dev/null
}
# The seqs of the snapshots in etcd (their manifests), ascending.
etcd_snapshots() {
    local from end
    from=$(printf '%s' "/berth/$CLUSTER/snapmeta/" | base64 -w0)
    end=$(printf '%s' "/berth/$CLUSTER/snapmeta0" | base64 -w0)
    curl -s -m 2 -X POST "http://127.0.0.1:$(first_etcd_port)/v3/kv/range" \
        -d "{\"key\":\"$from\",\"range_end\":\"$end\",\"keys_only\":true}" |
        grep -o '"key":"[^"]*"' | cut -d'"' -f4 | while read -r k; do base64 -d <<<"$k" | sed 's/.*\///; s/^0*//'; echo; done
}

# etcd_count PREFIX: how many keys etcd holds under the cluster's PREFIX.
etcd_count() {
    local from end
    from=$(printf '%s' "/berth/$CLUSTER/$1" | base64 -w0)
    end=$(printf '%s' "/berth/$CLUSTER/${1%?}$(printf '%s' "${1: -1}" | tr '/' '0')" | base64 -w0)
    curl -s -m 2 -X POST "http://127.0.0.1:$(first_etcd_port)/v3/kv/range" \
        -d "{\"key\":\"$from\",\"range_end\":\"$end\",\"count_only\":true}" | sed -n 's/.*"count":"\([0-9]*\)".*/\1/p'
}

start_etcd
for ((i = 1; i <= REPLICAS; i++)); do start_replica "$i" --snapshot-every 100 --etcd-timeout-ms 2000; done
L=$(wait_leader)
[ "$(info_field "$L" etcd_timeout_ms)" = 2000 ] || fail "INFO replication etcd_timeout_ms: $(info_field "$L" etcd_timeout_ms)"
# 2,000 workers with long names and labels, pipelined: the state's snapshot
# passes 1 MiB, so each goes to etcd in several 512 KiB chunks.
pad=$(printf 'x%.0s' $(seq 110))
for ((i = 1; i <= 2000; i++)); do
    printf 'WORKER.ADD big-%04d-%s GPUS 1 LABEL a=%s b=%s c=%s d=%s\r\n' "$i" "$pad" "$pad" "$pad" "$pad" "$pad"
done >"$TMP/big.txt"
out=$("$REDIS_CLI" -p "${BPORT[$L]}" --pipe <"$TMP/big.txt" 2>&1)
[[ "$out" =~ errors:\ 0,\ replies:\ 2000 ]] || fail "the pipelined load: [$out]"
writer 1 300 "$TMP/acked1"
head=$(head_of "$L")
[ "$head" = 2300 ] || fail "head after the load: $head"
# The leader snapshots every 100 records and puts each in etcd off the
# commit path; etcd keeps the newest three.
deadline=$(( $(now_ms) + 20000 ))
until [ "$(info_field "$L" snapshot_to_etcd_seq)" = 2300 ]; do
    [ "$(now_ms)" -lt "$deadline" ] || fail "the leader did not put snapshot 2300 in etcd: $(rr "$L" INFO replication | tr -d '\r' | grep snap)"
    sleep 0.05
done
snaps=$(etcd_snapshots | tr '\n' ' ')
[ "$snaps" = "2100 2200 2300 " ] || fail "snapshots in etcd: [$snaps], expected the newest three [2100 2200 2300]"
s2300="snapchunk/$(printf '%020d' 2300)/"
chunks=$(etcd_count "$s2300")
[ "${chunks:-0}" -ge 3 ] || fail "snapshot 2300 is in ${chunks:-0} chunks, expected 3 or more"
note "the leader put $(info_field "$L" snapshots_to_etcd) snapshots in etcd; it keeps [$snaps], 2300 in $chunks chunks"

F=$(( L % REPLICAS + 1 ))
wait_applied "$head"
kill_replica "$F" TERM
rm -rf "$TMP/b$F"
start_replica "$F" --snapshot-every 100
wait_applied "$head"
expect_same DIGEST
expect_same JOURNAL.HEAD
expect_same HISTORY WORKER lw1-7
expect_same HISTORY WORKER "big-0007-$pad"
expect_verify_ok "$F"
[ "$(info_field "$F" feed_records)" = "$head" ] || fail "the rebuilt follower fetched $(info_field "$F" feed_records) records"
[ "$(info_field "$F" rebuild_snapshot_seq)" = 2300 ] || fail "the rebuilt follower started from snapshot [$(info_field "$F" rebuild_snapshot_seq)], not 2300"
[ "$(info_field "$F" rebuild_snapshots_skipped)" = 0 ] || fail "a good snapshot was skipped"
note "follower $F rebuilt $head records from etcd snapshot 2300, same digest and history"

# A damaged snapshot (a middle chunk overwritten) is skipped for the next older.
etcd_put "${s2300}000001" "not a snapshot"
kill_replica "$F" TERM
rm -rf "$TMP/b$F"
start_replica "$F"
wait_applied "$head"
expect_same DIGEST
[ "$(info_field "$F" rebuild_snapshot_seq)" = 2200 ] || fail "with snapshot 2300 damaged the follower started from [$(info_field "$F" rebuild_snapshot_seq)], not 2200"
[ "$(info_field "$F" rebuild_snapshots_skipped)" = 1 ] || fail "rebuild_snapshots_skipped: $(info_field "$F" rebuild_snapshots_skipped)"
grep -q "snapshot 2300 in etcd skipped: chunk 1 is" "$TMP/berthd$F.log" || fail "the skipped snapshot was not logged: $(grep skipped "$TMP/berthd$F.log")"
note "damaged snapshot 2300 skipped; follower $F started from 2200, same digest"

# A snapshot whose bytes are whole but of another seq: 2200's chunks and
# manifest copied under 2300's keys (the manifest's seq rewritten, its
# SHA-256 still right). It decodes to seq 2200's state, so it is skipped too.
etcd_raw() {   # KEY: the value, still base64
    local k
    k=$(printf '%s' "/berth/$CLUSTER/$1" | base64 -w0)
    curl -s -m 5 -X POST "http://127.0.0.1:$(first_etcd_port)/v3/kv/range" -d "{\"key\":\"$k\"}" |
        sed -n 's/.*"value":"\([^"]*\)".*/\1/p'
}
s2200="snapchunk/$(printf '%020d' 2200)/"
[ "$(etcd_count "$s2200")" = "$chunks" ] || fail "snapshots 2200 and 2300 differ in chunk count"
for ((c = 0; c < chunks; c++)); do
    k=$(printf '%s' "/berth/$CLUSTER/$s2300$(printf '%06d' "$c")" | base64 -w0)
    printf '{"key":"%s","value":"%s"}' "$k" "$(etcd_raw "$s2200$(printf '%06d' "$c")")" >"$TMP/chunk.json"
    curl -s -m 5 -X POST "http://127.0.0.1:$(first_etcd_port)/v3/kv/put" -d @"$TMP/chunk.json" >/dev/null ||
        fail "copying chunk $c"
done
m=$(etcd_get "snapmeta/$(printf '%020d' 2200)")
[[ "$m" =~ ^v1\ 2200\  ]] || fail "manifest of 2200: [$m]"
etcd_put "snapmeta/$(printf '%020d' 2300)" "v1 2300 ${m#v1 2200 }"
kill_replica "$F" TERM
rm -rf "$TMP/b$F"
start_replica "$F"
wait_applied "$head"
expect_same DIGEST
[ "$(info_field "$F" rebuild_snapshot_seq)" = 2200 ] || fail "with 2200's bytes under 2300 the follower started from [$(info_field "$F" rebuild_snapshot_seq)], not 2200"
[ "$(info_field "$F" rebuild_snapshots_skipped)" = 1 ] || fail "rebuild_snapshots_skipped: $(info_field "$F" rebuild_snapshots_skipped)"
grep -q "snapshot 2300 in etcd skipped: it does not decode to the state of its seq" "$TMP/berthd$F.log" ||
    fail "the mislabelled snapshot was not logged: $(grep skipped "$TMP/berthd$F.log")"
note "2200's snapshot relabelled as 2300 skipped; follower $F started from 2200, same digest"

# --etcd-timeout-ms bounds every request: with every etcd member paused, a
# write to the leader is answered -IOERR (its outcome unknown, the leader
# steps down) after about two timeouts (the append, then the lease revoke),
# where the default 5 s would take at least 10 s.
for ((i = 1; i <= MEMBERS; i++)); do kill -STOP "${ETCD_PID[$i]}"; done
t0=$(now_ms)
out=$(timeout 30 "$REDIS_CLI" -p "${BPORT[$L]}" WORKER.ADD slow GPUS 1 VRAM 1000 REQID slow-1 2>&1)
took=$(( $(now_ms) - t0 ))
for ((i = 1; i <= MEMBERS; i++)); do kill -CONT "${ETCD_PID[$i]}"; done
# Its reply says the outcome is unknown, never "not applied": the
# transaction was sent, and etcd may commit it once it runs again.
[[ "$out" =~ ^IOERR.*outcome\ is\ unknown.*same\ REQID ]] || fail "a write with etcd paused: [$out]"
[ "$took" -lt 9000 ] || fail "a write with etcd paused took $took ms to fail with --etcd-timeout-ms 2000"
note "with etcd paused, a write failed after $took ms: $out"
L=$(wait_leader 20000)
head=$(head_of "$L")
wait_applied "$head"
expect_same DIGEST

# A local copy that is not a prefix of etcd's journal: refused at start.
G=$(( F % REPLICAS + 1 ))
[ "$G" != "$L" ] || G=$(( G % REPLICAS + 1 ))
kill_replica "$G" TERM
rm -rf "$TMP/b$G"
"$BERTHD" --data "$TMP/b$G" --port 0 --unixsocket "$TMP/lonely.sock" >"$TMP/lonely.log" 2>&1 &
lonely=$!
bg_pids+=($lonely)
for ((t = 0; t < WAIT_TRIES_MAX; t++)); do
    [ -n "$("$REDIS_CLI" -s "$TMP/lonely.sock" PING 2>/dev/null)" ] && break
    sleep 0.025
done
"$REDIS_CLI" -s "$TMP/lonely.sock" WORKER.ADD stray GPUS 1 VRAM 1000 >/dev/null
kill -TERM "$lonely"
wait "$lonely"
out=$("$BERTHD" --journal etcd --etcd-endpoints "$(etcd_endpoints)" --cluster "$CLUSTER" \
      --data "$TMP/b$G" --port "${BPORT[$G]}" 2>&1)
rc=$?
[ "$rc" != 0 ] || fail "berthd started on a diverging local copy"
[[ "$out" =~ CORRUPT.*not\ a\ prefix ]] || fail "diverging copy: unexpected message [$out]"
note "diverging local copy refused: ${out##*: }"

# etcd authentication: with auth on, a replica given --etcd-user and
# --etcd-password-file copies the journal with a token.
ETCDCTL=${ETCDCTL:-etcdctl}
if command -v "$ETCDCTL" >/dev/null; then
    "$ETCDCTL" --endpoints "$(etcd_endpoints)" user add root:berth-test-pw >/dev/null 2>&1 || fail "etcdctl user add"
    "$ETCDCTL" --endpoints "$(etcd_endpoints)" auth enable >/dev/null 2>&1 || fail "etcdctl auth enable"
    echo berth-test-pw >"$TMP/etcd.pw"
    rm -rf "$TMP/b$G"
    start_replica "$G" --etcd-user root --etcd-password-file "$TMP/etcd.pw"
    deadline=$(( $(now_ms) + 10000 ))
    until [ "$(head_of "$G")" = "$head" ]; do
        [ "$(now_ms)" -lt "$deadline" ] || fail "the replica with etcd credentials did not catch up: head $(head_of "$G")"
        sleep 0.05
    done
    [ "$(rr "$G" DIGEST)" = "$(rr "$F" DIGEST)" ] || fail "the replica with etcd credentials has another digest"
    note "with etcd auth on, a replica with credentials caught up to seq $head"
fi
