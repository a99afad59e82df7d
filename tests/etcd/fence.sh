#!/usr/bin/env bash
# fence.sh — the fence alone, with no timing in it: the lease is long, the
# leader key is deleted behind the leader's back, a follower takes over, and
# the old leader (which still believes it leads) has its next batch refused
# by etcd's compare on the leader key: its client gets -READONLY, it steps
# down, and the journal does not fork.
. "$(dirname "$0")/lib.sh"
LEASE_TTL_S=30

start_etcd
start_replicas
L=$(wait_leader)
for w in 1 2; do [[ "$(rr "$L" WORKER.ADD "w$w" GPUS 8 VRAM 81920)" =~ ^[0-9]+$ ]] || fail "seed write $w"; done
etcd_del leader
deadline=$(( $(now_ms) + 10000 ))
N=""
while [ -z "$N" ]; do
    [ "$(now_ms)" -lt "$deadline" ] || fail "no follower took over after the leader key was deleted"
    for ((i = 1; i <= REPLICAS; i++)); do
        [ "$i" != "$L" ] && [ "$(info_field "$i" etcd_role)" = leader ] && N=$i
    done
    sleep 0.05
done
[ "$(info_field "$L" etcd_role)" = leader ] || fail "the old leader noticed without writing (lease thread): the fence is not what is tested"
got=$(rr "$L" WORKER.ADD fenced GPUS 8 VRAM 81920)
expect="READONLY this berthd lost the leadership before the command was committed: it was not applied; retry it on the leader"
[ "$got" = "$expect" ] || fail "write to the deposed leader: got [$got]"
[ "$(info_field "$L" fence_refusals)" = 1 ] || fail "fence_refusals: [$(info_field "$L" fence_refusals)]"
[ "$(info_field "$L" etcd_role)" = follower ] || fail "the deposed leader did not step down"
got=$(rr "$L" WORKER.ADD fenced GPUS 8 VRAM 81920)
[ "$got" = "READONLY leader is 127.0.0.1:${BPORT[$N]}" ] || fail "second write to the old leader: got [$got]"
[[ "$(rr "$N" WORKER.ADD w3 GPUS 8 VRAM 81920)" = 3 ]] || fail "write to the new leader"
wait_applied 3
expect_same DIGEST
for ((i = 1; i <= REPLICAS; i++)); do
    expect_verify_ok "$i"
    [[ "$(rr "$i" WORKER.GET fenced)" =~ ^NOWORKER ]] || fail "replica $i knows the fenced write"
done
[ "$(etcd_get head)" = 3 ] || fail "etcd head [$(etcd_get head)]"
note "ok: the deposed leader's batch was refused by etcd, no fork"
