#!/usr/bin/env bash
# growth.sh — the journal's map grows under read load (review-hV defect 4):
# many connections loop JOURNAL.VERIFY while a pipelined writer of ~4 KB
# records fills a map that starts small (--map-size-initial-mib). A verify
# used to hold one LMDB reader from its submit to its end, and growth needs
# every reader of the process closed: it waited 2 s, then every write of
# the batch got "-FULL ... disk or map at its maximum" (the cap is 1 TiB),
# and the loop thread stalled in the gate meanwhile. Now no write is
# refused while the map grows many times over, PING stays fast, and the
# verifies still pass.
. "$(dirname "$0")/lib.sh"

VERIFIERS=${GROWTH_VERIFIERS:-48}
MAP_TARGET_MIN_BYTES=$((256 << 20))   # eight doublings from the initial 1 MiB
WRITE_SECONDS_MAX=60
ROUND_COMMANDS=200                  # pipelined writes per connection of the writer
PING_MS_MAX=${GROWTH_PING_MS_MAX:-1500}   # the loop stalled 2-4 s in the gate before the fix; reads
                                    # behind writes still stall it for a sync or two (review-hV defect 5)
# MAP_FLAGS may be set empty to run this against a berthd without the flag.
start_berthd ${MAP_FLAGS---map-size-initial-mib 1}

label=$(printf 'v%.0s' $(seq 120))
labels=""
for ((i = 0; i < 32; i++)); do labels+=" k$i=$label"; done
{
    for ((i = 0; i < ROUND_COMMANDS; i++)); do printf 'WORKER.ADD w0 GPUS 1 LABEL%s\r\n' "$labels"; done
    printf 'QUIT\r\n'
} >"$TMP/round.txt"
expect_int "$(r WORKER.ADD w0 GPUS 1 LABEL $labels)" "the first write"

map_bytes() { r INFO | tr -d '\r' | awk -F: '$1 == "map_bytes" { print $2 }'; }
map0=$(map_bytes)
[ -z "${MAP_FLAGS-x}" ] || [ "$map0" -le $((1 << 20)) ] || fail "the map should start at 1 MiB, not $map0 bytes"
MAP_TARGET_BYTES=$(( 4 * map0 > MAP_TARGET_MIN_BYTES ? 4 * map0 : MAP_TARGET_MIN_BYTES ))

# The verifiers: each a connection sending JOURNAL.VERIFY back to back.
for ((i = 0; i < VERIFIERS; i++)); do
    "$REDIS_CLI" -p "$PORT" -r 1000000 JOURNAL.VERIFY >"$TMP/verify.$i" 2>&1 &
    bg_pids+=($!)
done
# The prober: PING's round trip, one at a time.
(
    while :; do
        t0=$(date +%s%N)
        [ "$("$REDIS_CLI" -p "$PORT" PING)" = PONG ] || echo "no PONG" >>"$TMP/ping.bad"
        echo $(( ($(date +%s%N) - t0) / 1000000 )) >>"$TMP/ping.ms"
        sleep 0.02
    done
) &
bg_pids+=($!)

: >"$TMP/replies"
deadline=$((SECONDS + WRITE_SECONDS_MAX))
rounds=0
while [ "$(map_bytes)" -lt "$MAP_TARGET_BYTES" ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "the map reached only $(map_bytes) bytes in ${WRITE_SECONDS_MAX} s"
    nc_file "$TMP/round.txt" >>"$TMP/replies"
    rounds=$((rounds + 1))
    refused=$(grep -c -E '^-(FULL|TRYAGAIN|IOERR)' "$TMP/replies")
    [ "$refused" = 0 ] || fail "$refused writes refused while the map grew: $(grep -m1 -E '^-(FULL|TRYAGAIN|IOERR)' "$TMP/replies")"
done
for pid in "${bg_pids[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
bg_pids=()

writes=$(grep -c -E '^(:|-EXISTS)' "$TMP/replies")
expect_eq "$writes" $((rounds * ROUND_COMMANDS)) "every write answered with a seq or EXISTS"
verifies=$(cat "$TMP"/verify.* | grep -c '^records$' || true)
[ "$verifies" -ge "$VERIFIERS" ] || fail "only $verifies verifies finished"
! grep -q -v -E '^(ok|records|first_bad_seq|what|1|0|[0-9]+|)$' "$TMP"/verify.* ||
    fail "a verify failed: $(grep -h -v -E '^(ok|records|first_bad_seq|what|1|0|[0-9]+|)$' "$TMP"/verify.* | head -3)"
[ ! -f "$TMP/ping.bad" ] || fail "PING went unanswered"
ping_max=$(sort -n "$TMP/ping.ms" | tail -1)
[ "$ping_max" -le "$PING_MS_MAX" ] || fail "PING took $ping_max ms at worst (bound $PING_MS_MAX)"
expect_verify_ok "after the growth"
note "ok: map $map0 -> $(map_bytes) bytes, $writes writes in $rounds rounds, $verifies verifies, worst PING ${ping_max} ms"
