#!/usr/bin/env bash
# seed.sh — the seed case through the etcd leader; every follower answers
# WORKER.GET and JOURNAL.HEAD the same, all reach the same digest, a write
# to a follower is refused with -READONLY naming the leader, and etcd holds
# the head and the very record bytes the replicas hold.
. "$(dirname "$0")/lib.sh"

start_etcd
start_replicas
L=$(wait_leader)
note "leader is replica $L"
# A WATCH client on a follower gets each record as the follower applies it.
F=$(( L % REPLICAS + 1 ))
(printf 'WATCH 1\r\n' | timeout 8 nc -q -1 127.0.0.1 "${BPORT[$F]}" >"$TMP/watch.out") &
bg_pids+=($!)
# And one on the leader, whose local append runs behind its commits.
(printf 'WATCH 1\r\n' | timeout 8 nc -q -1 127.0.0.1 "${BPORT[$L]}" >"$TMP/watch-leader.out") &
bg_pids+=($!)

expected=(1 2 3 4 "EXCLUSIVE worker w2 already serves distributed vllm instance llama-a since seq 4; a worker serves one distributed vllm instance at a time"
          6 7 8 9 "CORDONED worker w1 is cordoned and accepts no new instances"
          "BUSY worker w1 still serves 1 instance (small); release it before removing the worker")
n=0
while read -r line; do
    [[ -z "$line" || "$line" == \#* ]] && continue
    # shellcheck disable=SC2086
    got=$(rr "$L" $line)
    [ "$got" = "${expected[$n]}" ] || fail "seed line $((n + 1)) ($line): expected [${expected[$n]}], got [$got]"
    n=$((n + 1))
done <"$(dirname "$0")/../cli/seed.scenario"
[ "$n" = 11 ] || fail "seed: $n commands, expected 11"

wait_applied 11
deadline=$(( $(now_ms) + 5000 ))
watched() { tr -d '\r' <"$1" | grep -c '^command$'; }
for w in "$TMP/watch.out" "$TMP/watch-leader.out"; do
    until [ "$(watched "$w")" -ge 11 ]; do
        [ "$(now_ms)" -lt "$deadline" ] || fail "WATCH ($(basename "$w")) saw $(watched "$w") records, expected 11"
        sleep 0.05
    done
    tr -d '\r' <"$w" | grep -q "^WORKER.REMOVE w1$" || fail "WATCH ($(basename "$w")): the last record is missing"
done
expect_same WORKER.GET w2
expect_same WORKER.GET w1
expect_same JOURNAL.HEAD
expect_same DIGEST
expect_same INSTANCE.LIST
expect_same HISTORY WORKER w2

# Redis's words, as redis-cli and client libraries read them: INFO's role
# master on the leader and slave on a follower, HELLO's master and replica.
for ((i = 1; i <= REPLICAS; i++)); do
    want_info=slave; want_hello=replica
    [ "$i" = "$L" ] && { want_info=master; want_hello=master; }
    [ "$(info_field "$i" role)" = "$want_info" ] || fail "replica $i INFO role: [$(info_field "$i" role)], want $want_info"
    got=$(rr "$i" HELLO 2 | awk 'w { print; exit } $0 == "role" { w = 1 }')
    [ "$got" = "$want_hello" ] || fail "replica $i HELLO role: [$got], want $want_hello"
done

for ((i = 1; i <= REPLICAS; i++)); do
    expect_verify_ok "$i"
    [ "$i" = "$L" ] && continue
    got=$(rr "$i" WORKER.ADD w9 GPUS 8 VRAM 81920)
    [ "$got" = "READONLY leader is 127.0.0.1:${BPORT[$L]}" ] || fail "follower $i write: got [$got]"
    [ "$(info_field "$i" etcd_role)" = follower ] || fail "replica $i is not a follower"
    [ "$(info_field "$i" applied_seq)" = 11 ] || fail "replica $i INFO applied_seq"
    [ "$(info_field "$i" lag_records)" = 0 ] || fail "replica $i INFO lag_records"
done

[ "$(etcd_get head)" = 11 ] || fail "etcd head: [$(etcd_get head)]"
# The record bytes in etcd hash to the hash every replica reports for seq 11.
want=$(rr "$L" JOURNAL.HEAD | awk 'w { print; exit } $0 == "hash" { w = 1 }')
got=$(etcd_get "journal/00000000000000000011" | tail -c 32 | od -An -tx1 | tr -d ' \n')
[ "$got" = "$want" ] || fail "etcd's record 11 ends in hash [$got], replicas say [$want]"
note "ok: 11 records, 3 replicas agree, etcd holds the same bytes"

# The berth tool reads the same journal straight from etcd (a local copy in
# --data, brought up to date first) and finds the same chain and state.
if [ -n "${BERTH:-}" ]; then
    flags=(--journal etcd --etcd-endpoints "$(etcd_endpoints)" --cluster "$CLUSTER" --data "$TMP/tool-copy")
    out=$("$BERTH" journal verify "${flags[@]}" 2>"$TMP/tool.err") || fail "berth journal verify on etcd: $out $(cat "$TMP/tool.err")"
    grep -q "copied 11 records" "$TMP/tool.err" || fail "berth did not say it copied 11 records: $(cat "$TMP/tool.err")"
    [[ "$out" =~ 11 ]] || fail "berth journal verify: [$out]"
    digest=$(rr "$L" DIGEST)
    out=$("$BERTH" replay "${flags[@]}" --json 2>/dev/null) || fail "berth replay on etcd failed"
    [[ "$out" == *"$digest"* ]] || fail "berth replay's digest differs from the replicas' [$digest]: $out"
    [[ "$(rr "$L" WORKER.ADD w9 GPUS 8 VRAM 81920)" = 12 ]] || fail "write 12"
    "$BERTH" status "${flags[@]}" >"$TMP/status.out" 2>"$TMP/tool.err" || fail "berth status on etcd"
    grep -q "copied 1 records" "$TMP/tool.err" || fail "the second run should copy only the new record: $(cat "$TMP/tool.err")"
    note "berth tool: verify, replay and status on --journal etcd agree"
fi

# The leader renews its lease every third of the TTL, not at every commit:
# the lease thread shares a condition variable that each local append
# broadcasts, and until session 22 it sent a keepalive at each wake-up
# (about one per write). 1,500 pipelined writes; every member's count of the
# keepalive messages it received, before and after.
keepalives() {
    local i sum=0 n
    for ((i = 1; i <= MEMBERS; i++)); do
        n=$(curl -s -m 2 "http://127.0.0.1:${ETCD_CPORT[$i]}/metrics" |
            awk '/^grpc_server_msg_received_total.*LeaseKeepAlive/ { s += $2 } END { printf "%d", s }')
        sum=$((sum + n))
    done
    echo "$sum"
}
k0=$(keepalives); t0=$(now_ms)
for ((i = 0; i < 1500; i++)); do echo "WORKER.ADD ka$i GPUS 1"; done | "$REDIS_CLI" -p "${BPORT[$L]}" >/dev/null
k1=$(keepalives); took=$(( $(now_ms) - t0 ))
# Three a lease (LEASE_TTL_S, lib.sh's), plus slack for the rounds' edges
# and a retry or two.
[ $((k1 - k0)) -le $(( took * 3 / (LEASE_TTL_S * 1000) + 6 )) ] || fail "$((k1 - k0)) keepalives for 1,500 writes in $took ms"
note "$((k1 - k0)) keepalives for 1,500 writes in $took ms"
