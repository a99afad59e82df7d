#!/usr/bin/env bash
# rebuild.sh — a follower restarted with its local copy deleted fetches the
# whole journal from etcd and reaches the same digest; one restarted on a
# copy that etcd never held refuses to start instead of forking.
. "$(dirname "$0")/lib.sh"

start_etcd
start_replicas
L=$(wait_leader)
writer 1 300 "$TMP/acked1"
head=$(head_of "$L")
[ "$head" = 300 ] || fail "head after the load: $head"
F=$(( L % REPLICAS + 1 ))
wait_applied "$head"
kill_replica "$F" TERM
rm -rf "$TMP/b$F"
start_replica "$F"
wait_applied "$head"
expect_same DIGEST
expect_same JOURNAL.HEAD
expect_verify_ok "$F"
[ "$(info_field "$F" feed_records)" = "$head" ] || fail "the rebuilt follower fetched $(info_field "$F" feed_records) records"
note "follower $F rebuilt $head records from etcd, same digest"

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
