#!/usr/bin/env bash
# pause.sh — SIGSTOP the leader past its lease: another replica takes over;
# a write that reached the paused leader is refused once it runs again
# (-READONLY: its lease is gone, etcd's fence refuses its batch), the old
# leader steps down to follower, and nothing forks: every replica and etcd
# end on the same head, digest and chain, without the refused write.
. "$(dirname "$0")/lib.sh"

start_etcd
start_replicas
L=$(wait_leader)
for w in 1 2 3; do [[ "$(rr "$L" WORKER.ADD "w$w" GPUS 8 VRAM 81920)" =~ ^[0-9]+$ ]] || fail "seed write $w"; done
kill -STOP "${BPID[$L]}"
PAUSED=$L
stopped_at=$(now_ms)
# The paused leader's socket takes this write; it is read after SIGCONT.
timeout 30 "$REDIS_CLI" -p "${BPORT[$L]}" WORKER.ADD paused-write GPUS 8 VRAM 81920 >"$TMP/paused.reply" 2>&1 &
pending=$!
bg_pids+=($pending)
N=$(wait_leader 10000)
took=$(( $(now_ms) - stopped_at ))
note "replica $N leads ${took} ms after replica $L was paused (lease ${LEASE_TTL_S} s)"
[ "$took" -le $(( (LEASE_TTL_S + 1) * 1000 + 500 )) ] || fail "takeover took ${took} ms"
for w in 4 5; do [[ "$(rr "$N" WORKER.ADD "w$w" GPUS 8 VRAM 81920)" =~ ^[0-9]+$ ]] || fail "write $w to the new leader"; done

kill -CONT "${BPID[$L]}"
PAUSED=""
wait "$pending" || true
reply=$(cat "$TMP/paused.reply")
[[ "$reply" =~ ^READONLY ]] || fail "the paused leader's pending write: expected -READONLY, got [$reply]"
note "pending write on the old leader: $reply"
deadline=$(( $(now_ms) + 5000 ))
until [ "$(info_field "$L" etcd_role)" = follower ]; do
    [ "$(now_ms)" -lt "$deadline" ] || fail "the old leader did not step down"
    sleep 0.05
done
[ "$(info_field "$L" step_downs)" -ge 1 ] || fail "old leader: step_downs"
note "old leader: fence_refusals $(info_field "$L" fence_refusals), last event: $(info_field "$L" last_event)"

[ "$(wait_leader)" = "$N" ] || fail "leadership moved again"
wait_applied 5
expect_same DIGEST
expect_same JOURNAL.HEAD
for ((i = 1; i <= REPLICAS; i++)); do
    expect_verify_ok "$i"
    [[ "$(rr "$i" WORKER.GET paused-write)" =~ ^NOWORKER ]] || fail "replica $i knows the refused write"
done
[ "$(etcd_get head)" = 5 ] || fail "etcd head [$(etcd_get head)], expected 5"
note "ok: no fork; head 5 everywhere"
