#!/usr/bin/env bash
# bench_etcd.sh — issue 6's speed figures, side by side in one run: durable
# DEPLOY/RELEASE from N connections on berth's etcd journal (three etcd
# members, three berthd replicas), etcd's own single-key put throughput from
# the same number of clients over the same JSON gateway (bench_etcd_put),
# and berth on LMDB; then follower lag (p99 seq behind the leader, sampled
# during one more berth-on-etcd run under the same load, after the timed
# rounds: the sampler starts a redis-cli per replica every 20 ms, CPU that
# would otherwise be taken from the berth-on-etcd figure alone) and failover
# time (SIGKILL of the leader to the first write another replica accepts).
# Rounds are interleaved so machine noise falls on every system alike;
# medians are printed, each round with its load average. See docs/etcd.md.
#
# It reuses the etcd tests' harness (tests/etcd/lib.sh): every process is
# started on free loopback ports in one temporary directory and killed by
# the EXIT trap. Temporaries go to /var/tmp (a disk, so fsyncs are real).
#
# Usage: bench_etcd.sh [--berthd PATH] [--bench-server PATH] [--bench-put PATH]
#                      [--seconds S] [--rounds N] [--connections N] [--failovers N]
#                      [--lease-ttl S]
# Defaults: 5 s per run, 2 rounds, 50 connections, 3 failovers, lease 3 s.
set -u -o pipefail

here=$(cd "$(dirname "$0")" && pwd)
seconds=5
rounds=2
connections=50
failovers=3
lease=3
workers=5000
bench=""
bench_put=""
die() { echo "bench_etcd.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || die "$1 wants a value"
    case "$1" in
        --berthd) BERTHD=$2 ;;
        --bench-server) bench=$2 ;;
        --bench-put) bench_put=$2 ;;
        --seconds) seconds=$2 ;;
        --rounds) rounds=$2 ;;
        --connections) connections=$2 ;;
        --failovers) failovers=$2 ;;
        --lease-ttl) lease=$2 ;;
        *) die "unknown flag $1 (see the header of this script)" ;;
    esac
    shift 2
done
for n in "$seconds" "$rounds" "$connections" "$failovers" "$lease"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "numbers must be positive integers, got '$n'"
done
find_built() {
    local dir
    for dir in "$here/../../build" "$here/../../build"-*; do
        [ -x "$dir/$1" ] && { echo "$dir/$1"; return; }
    done
}
BERTHD=${BERTHD:-$(find_built tools/berthd)}
bench=${bench:-$(find_built tests/bench/bench_server)}
bench_put=${bench_put:-$(find_built tests/bench/bench_etcd_put)}
[ -x "$BERTHD" ] && [ -x "$bench" ] && [ -x "$bench_put" ] ||
    die "build berthd, bench_server and bench_etcd_put first (cmake --build build --target berthd bench_server bench_etcd_put)"
export BERTHD
export TMPDIR=${TMPDIR:-/var/tmp}
LEASE_TTL_S=$lease
# shellcheck source=../etcd/lib.sh
. "$here/../etcd/lib.sh"

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }
ms() { awk -v v="$1" 'BEGIN { printf "%.1f", v / 1000 }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
declare -A samples=()
add() { samples[$1]+="$2 "; }
med() { tr ' ' '\n' <<<"${samples[$1]:-}" | grep . | median; }

echo "bench_etcd: $connections connections, $seconds s x $rounds rounds, lease $lease s, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
start_etcd
start_replicas
L=$(wait_leader)
"$bench" --port "${BPORT[$L]}" --mode add-workers --workers "$workers" --connections 8 --threads 1 \
    --depth 64 >/dev/null || fail "WORKER.ADD setup on etcd failed"
lmdb_port=$(pick_port)
"$BERTHD" --data "$TMP/lmdb" --bind 127.0.0.1 --port "$lmdb_port" >"$TMP/lmdb.log" 2>&1 &
bg_pids+=($!)
for ((t = 0; t < WAIT_TRIES_MAX; t++)); do [ "$("$REDIS_CLI" -p "$lmdb_port" PING 2>/dev/null)" = PONG ] && break; sleep 0.025; done
"$bench" --port "$lmdb_port" --mode add-workers --workers "$workers" --connections 8 --threads 1 \
    --depth 64 >/dev/null || fail "WORKER.ADD setup on LMDB failed"

# Lag sampler: leader's applied seq minus each follower's, every 20 ms; one
# redis-cli per replica per sample, parsed in the shell.
applied_of() {   # i
    local line
    while IFS= read -r line; do
        [[ "$line" == applied_seq:* ]] && { line=${line#applied_seq:}; echo "${line%$'\r'}"; return; }
    done < <(rr "$1" INFO replication 2>/dev/null)
}
# Each follower is asked first and the leader right after, so a sample is
# an upper bound: it includes what the leader committed in between (asking
# the leader first gave a lower bound that read 0 under load).
sample_lag() {   # leader out
    local i lh fh
    while :; do
        for ((i = 1; i <= REPLICAS; i++)); do
            [ "$i" = "$1" ] && continue
            fh=$(applied_of "$i")
            lh=$(applied_of "$1")
            [[ "$lh" =~ ^[0-9]+$ && "$fh" =~ ^[0-9]+$ ]] && echo $(( lh > fh ? lh - fh : 0 )) >>"$2"
        done
        sleep 0.02
    done
}
berth_run() {   # label port
    local out line c0 r0 c1 r1
    c0=$("$REDIS_CLI" -p "$2" INFO stats | tr -d '\r' | sed -n 's/^commits://p')
    r0=$("$REDIS_CLI" -p "$2" INFO stats | tr -d '\r' | sed -n 's/^records_committed://p')
    out=$("$bench" --port "$2" --mode cycle --connections "$connections" --threads 1 --depth 1 \
          --workers "$workers" --seconds "$seconds" --name "$1")
    line=$(grep '^RESULT' <<<"$out")
    [ -n "$line" ] || fail "bench_server printed nothing for $1: $out"
    [ "$(field errors "$line")" = 0 ] || fail "$1: errors: $(grep FIRST_ERROR <<<"$out")"
    c1=$("$REDIS_CLI" -p "$2" INFO stats | tr -d '\r' | sed -n 's/^commits://p')
    r1=$("$REDIS_CLI" -p "$2" INFO stats | tr -d '\r' | sed -n 's/^records_committed://p')
    add "$1 rate" "$(field cmds_per_s "$line")"
    add "$1 p50" "$(field p50_us "$line")"
    add "$1 p99" "$(field p99_us "$line")"
    add "$1 batch" "$(awk -v r=$((r1 - r0)) -v c=$((c1 - c0)) 'BEGIN { printf "%.0f", c ? 10 * r / c : 0 }')"
    echo "  $1: $(field cmds_per_s "$line")/s p50 $(ms "$(field p50_us "$line")") ms p99 $(ms "$(field p99_us "$line")") ms, $((c1 - c0)) commits"
}
for ((round = 1; round <= rounds; round++)); do
    echo "round $round"
    line=$("$bench_put" --endpoint "http://127.0.0.1:${ETCD_CPORT[1]}" --clients "$connections" \
           --seconds "$seconds" --warmup-seconds 1 | grep '^RESULT')
    [ "$(field errors "$line")" = 0 ] || fail "etcd put errors: $line"
    add "etcd rate" "$(field puts_per_s "$line")"
    add "etcd p50" "$(field p50_us "$line")"
    add "etcd p99" "$(field p99_us "$line")"
    echo "  etcd put: $(field puts_per_s "$line")/s p50 $(ms "$(field p50_us "$line")") ms p99 $(ms "$(field p99_us "$line")") ms"
    berth_run berth-etcd "${BPORT[$L]}"
    berth_run berth-lmdb "$lmdb_port"
    e_round=$(field puts_per_s "$line")
    b_round=$(tr ' ' '\n' <<<"${samples[berth-etcd rate]}" | grep . | tail -1)
    ratio=$(awk -v b="$b_round" -v e="$e_round" 'BEGIN { printf "%.2f", e ? b / e : 0 }')
    add ratio "$ratio"
    echo "  round $round: berth on etcd / etcd put = ${ratio}x (load $(cut -d' ' -f1-3 /proc/loadavg))"
done

# Follower lag, sampled during one more berth-on-etcd run (not counted above).
sample_lag "$L" "$TMP/lag" &
sampler=$!
bg_pids+=($sampler)
berth_run berth-etcd-lag "${BPORT[$L]}"
kill "$sampler" 2>/dev/null
wait "$sampler" 2>/dev/null

# Failover: a writer through whoever leads; kill -9 the leader; the first
# write another replica acknowledges after the kill.
for ((f = 1; f <= failovers; f++)); do
    L=$(wait_leader)
    acked="$TMP/acked-failover$f"
    writer "f$f" 100000 "$acked" &
    w=$!
    bg_pids+=($w)
    sleep 1
    killed=$(now_ms)
    kill_replica "$L" 9
    deadline=$(( killed + 30000 ))
    took=""
    while [ -z "$took" ] && [ "$(now_ms)" -lt "$deadline" ]; do
        took=$(awk -v t="$killed" -v p="${BPORT[$L]}" '$3 > t && $4 != p { print $3 - t; exit }' "$acked" 2>/dev/null)
        sleep 0.02
    done
    kill "$w" 2>/dev/null
    wait "$w" 2>/dev/null
    [ -n "$took" ] || fail "no write accepted within 30 s of killing the leader"
    add failover "$took"
    echo "  failover $f: leader replica $L killed, first write accepted ${took} ms later"
    start_replica "$L"
done

lag_p99=$(sort -n "$TMP/lag" | awk '{ v[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; print (NR ? v[i] : 0) }')
lag_max=$(sort -n "$TMP/lag" | tail -1)
lag_n=$(wc -l <"$TMP/lag")
e=$(med "etcd rate"); b=$(med "berth-etcd rate"); l=$(med "berth-lmdb rate")
echo
echo "medians over $rounds rounds, $connections connections, $seconds s each:"
printf '  %-34s %8s/s  p50 %6s ms  p99 %7s ms\n' "etcd put (JSON gateway)" "$e" "$(ms "$(med "etcd p50")")" "$(ms "$(med "etcd p99")")"
printf '  %-34s %8s/s  p50 %6s ms  p99 %7s ms  %s records/commit\n' "berth DEPLOY/RELEASE on etcd" "$b" \
    "$(ms "$(med "berth-etcd p50")")" "$(ms "$(med "berth-etcd p99")")" "$(awk -v v="$(med "berth-etcd batch")" 'BEGIN { printf "%.1f", v / 10 }')"
printf '  %-34s %8s/s  p50 %6s ms  p99 %7s ms  %s records/commit\n' "berth DEPLOY/RELEASE on LMDB" "$l" \
    "$(ms "$(med "berth-lmdb p50")")" "$(ms "$(med "berth-lmdb p99")")" "$(awk -v v="$(med "berth-lmdb batch")" 'BEGIN { printf "%.1f", v / 10 }')"
echo "  berth on etcd / etcd put: $(awk -v b="$b" -v e="$e" 'BEGIN { printf "%.2fx", e ? b / e : 0 }') of the medians; per round: ${samples[ratio]}(target >= 1.0x)"
echo "  follower lag (upper bound): p99 $lag_p99 records, max $lag_max ($lag_n samples every 20 ms, during a separate run at $(med "berth-etcd-lag rate")/s)"
echo "  failover (kill -9 to first accepted write): median $(med failover) ms, each: ${samples[failover]}(lease $lease s)"
