#!/usr/bin/env bash
# members.sh — etcd members die under a write load: first one that is not
# etcd's leader (writes go on with two of three), then, after it rejoined,
# etcd's leader itself (writes go on once etcd elects another). berthd tries
# its endpoints in turn; nothing acknowledged is lost, nothing applied twice.
. "$(dirname "$0")/lib.sh"

WRITERS=2
PER_WRITER=250
start_etcd
start_replicas
L=$(wait_leader)
for ((k = 1; k <= WRITERS; k++)); do
    writer "$k" "$PER_WRITER" "$TMP/acked$k" &
    bg_pids+=($!)
done
acks() { cat "$TMP"/acked? 2>/dev/null | wc -l; }
wait_acks_past() {   # n: wait until more than n writes are acknowledged
    local deadline=$(( $(now_ms) + 15000 ))
    until [ "$(acks)" -gt "$1" ]; do
        [ "$(now_ms)" -lt "$deadline" ] || fail "writes stalled at $(acks) acks"
        sleep 0.05
    done
}
wait_acks_past 50
EL=$(etcd_leader_member) || fail "no etcd leader"
M=$(( EL % MEMBERS + 1 ))
kill_etcd_member "$M"
before=$(acks)
note "killed etcd member $M (etcd leader is $EL) at $before acks"
wait_acks_past $((before + 50))
note "writes continue with two members: $(acks) acks"
restart_etcd_member "$M"
sleep 1
EL=$(etcd_leader_member) || fail "no etcd leader after member $M rejoined"
kill_etcd_member "$EL"
before=$(acks)
note "killed etcd's leader, member $EL, at $before acks"
wait_acks_past $((before + 50))
note "writes continue after etcd's election: $(acks) acks"
for pid in "${bg_pids[@]}"; do wait "$pid" || fail "a writer failed"; done
bg_pids=()
if ls "$TMP"/acked*.err >/dev/null 2>&1; then fail "unexpected replies: $(cat "$TMP"/acked*.err | head -3)"; fi
[ "$(acks)" = $((WRITERS * PER_WRITER)) ] || fail "$(acks) acks, expected $((WRITERS * PER_WRITER))"
N=$(wait_leader)
check_acks "$N" "$TMP"/acked?
head=$(head_of "$N")
wait_applied "$head"
expect_same DIGEST
for ((i = 1; i <= REPLICAS; i++)); do expect_verify_ok "$i"; done
[ "$(etcd_get head)" = "$head" ] || fail "etcd head [$(etcd_get head)] vs replicas [$head]"
note "ok: $(acks) acknowledged writes present once; head $head; leader changes: replica $L -> $N"
