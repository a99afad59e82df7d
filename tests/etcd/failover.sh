#!/usr/bin/env bash
# failover.sh — SIGKILL the leader berthd under a write load with REQIDs: a
# follower takes over within the lease TTL plus a second, every acknowledged
# seq is in the journal with its outcome, every REQID retried after the kill
# is applied at most once, and the killed replica rejoins at the same digest.
. "$(dirname "$0")/lib.sh"

WRITERS=3
PER_WRITER=150
start_etcd
start_replicas
L=$(wait_leader)
for ((k = 1; k <= WRITERS; k++)); do
    writer "$k" "$PER_WRITER" "$TMP/acked$k" &
    bg_pids+=($!)
done
# Let the load run, then kill the leader mid-stream.
deadline=$(( $(now_ms) + 20000 ))
until [ "$(cat "$TMP"/acked* 2>/dev/null | wc -l)" -ge 60 ]; do
    [ "$(now_ms)" -lt "$deadline" ] || fail "the load did not start"
    sleep 0.05
done
killed_at=$(now_ms)
kill_replica "$L" 9
note "killed leader replica $L at $(cat "$TMP"/acked* | wc -l) acks"
for pid in "${bg_pids[@]}"; do wait "$pid" || fail "a writer failed"; done
bg_pids=()
if ls "$TMP"/acked*.err >/dev/null 2>&1; then fail "unexpected replies: $(cat "$TMP"/acked*.err | head -3)"; fi

N=$(wait_leader)
[ "$N" != "$L" ] || fail "the killed replica still leads"
# Failover: the first write the new leader acknowledged after the kill.
first_after=$(cat "$TMP"/acked* | awk -v t="$killed_at" -v p="${BPORT[$L]}" '$3 > t && $4 != p { print $3 }' | sort -n | head -1)
[ -n "$first_after" ] || fail "no write was acknowledged after the kill"
took=$((first_after - killed_at))
note "first write accepted by the new leader ${took} ms after the kill (lease ${LEASE_TTL_S} s)"
[ "$took" -le $(( (LEASE_TTL_S + 1) * 1000 )) ] || fail "failover took ${took} ms, more than the lease plus a second"

total=$(cat "$TMP"/acked* | wc -l)
[ "$total" = $((WRITERS * PER_WRITER)) ] || fail "$total acks, expected $((WRITERS * PER_WRITER))"
check_acks "$N" "$TMP"/acked*

start_replica "$L"
head=$(head_of "$N")
wait_applied "$head"
expect_same DIGEST
expect_same JOURNAL.HEAD
for ((i = 1; i <= REPLICAS; i++)); do expect_verify_ok "$i"; done
[ "$(etcd_get head)" = "$head" ] || fail "etcd head [$(etcd_get head)] vs replicas [$head]"
note "ok: $total acknowledged writes all present once, head $head on every replica"
