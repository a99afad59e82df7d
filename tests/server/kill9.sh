#!/usr/bin/env bash
# kill9.sh — kill -9 under writes from several clients, then restart: every
# seq berthd acknowledged is in the journal with the command and outcome it
# was acknowledged for, every acknowledged refusal is there too, every record
# a live WATCH client saw is there, nothing is applied twice, and
# JOURNAL.VERIFY passes. Every command carries a REQID:
# after the restart each client resends its stream up to a little past what
# was acknowledged, and gets the very replies it was acknowledged with, while
# the commands in flight at the kill are applied at most once. Three rounds:
# kill -9, SIGTERM (which must also exit 0 after committing the batch in
# flight), kill -9.
. "$(dirname "$0")/lib.sh"
clients=4
per_client=6000        # more than a client can send before the kill
rounds=3
retry_extra=50         # lines past the acknowledged ones each client resends
start_berthd

for ((round = 1; round <= rounds; round++)); do
    # A watcher sees records only once they are durable: everything it
    # saw must survive the kill.
    watch_start "$round"
    # Client c's commands: add a worker, deploy on it, and every fifth step a
    # RELEASE of an instance that never existed (an acknowledged refusal).
    pids=()
    for ((c = 0; c < clients; c++)); do
        for ((i = 0; i < per_client / 3; i++)); do
            echo "WORKER.ADD k$round-$c-$i GPUS 2 REQID a$round-$c-$i"
            echo "DEPLOY j$round-$c-$i MODEL m BACKEND vllm ON k$round-$c-$i REQID d$round-$c-$i"
            if ((i % 5 == 0)); then echo "RELEASE none$round-$c-$i REQID r$round-$c-$i"
            else echo "WORKER.CORDON k$round-$c-$i REQID c$round-$c-$i"; fi
        done >"$TMP/in.$round.$c"
        r_stdin <"$TMP/in.$round.$c" >"$TMP/ack.$round.$c" 2>"$TMP/err.$round.$c" &
        pids+=($!); bg_pids+=($!)
    done
    # Let the clients get going, then kill berthd mid-stream.
    for ((i = 0; i < 400; i++)); do
        n=$(cat "$TMP"/ack.$round.* | wc -l)
        [ "$n" -ge 1500 ] && break
        sleep 0.025
    done
    if [ "$round" = 2 ]; then stop_berthd; else kill9_berthd; fi
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
    watch_end "$round"
    acked=$(cat "$TMP"/ack.$round.* | wc -l)
    [ "$acked" -gt 0 ] || fail "round $round: no client got a reply before the kill"
    [ "$acked" -lt $((clients * per_client)) ] || fail "round $round: the kill came after every command"

    start_berthd
    dump_journal >"$TMP/journal.$round"
    # Acknowledged: line k of ack answers line k of in.
    acked_pairs "$round" $(seq 0 $((clients - 1))) >"$TMP/acked.$round"
    acked_check "round $round" "$TMP/journal.$round" "$TMP/acked.$round" >"$TMP/check.$round" \
        || fail "round $round: $(head -n 10 "$TMP/check.$round")"
    note "$(tail -n 1 "$TMP/check.$round")"
    watched_durable "round $round" "$TMP/journal.$round" "$TMP/watched.$round"
    note "round $round: $watched records a watcher saw before the kill are all durable"

    # Retries with the same REQIDs: the acknowledged replies again, and the
    # commands in flight at the kill applied at most once (checked by the
    # next dump's "applied twice").
    pids=()
    for ((c = 0; c < clients; c++)); do
        head -n "$(( $(wc -l <"$TMP/ack.$round.$c") + retry_extra ))" "$TMP/in.$round.$c" |
            r_stdin >"$TMP/retry.$round.$c" &
        pids+=($!); bg_pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || fail "round $round: a retry client failed"; done
    for ((c = 0; c < clients; c++)); do
        n=$(wc -l <"$TMP/ack.$round.$c")
        head -n "$n" "$TMP/retry.$round.$c" | diff "$TMP/ack.$round.$c" - >"$TMP/retry.diff" \
            || fail "round $round client $c: a retry answered differently: $(head -n 4 "$TMP/retry.diff")"
        ! tail -n +"$((n + 1))" "$TMP/retry.$round.$c" | grep -q '^REQID' \
            || fail "round $round client $c: a retry of an unacknowledged command conflicted"
    done
    dump_journal | awk -F '\t' '{ if (seen[$3]++) { print "applied twice: " $3; bad = 1 } } END { exit bad }' \
        >"$TMP/twice.$round" || fail "round $round, after retries: $(head -n 3 "$TMP/twice.$round")"
    expect_verify_ok "round $round: JOURNAL.VERIFY"
done
stop_berthd
note ok
