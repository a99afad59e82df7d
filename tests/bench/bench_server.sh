#!/usr/bin/env bash
# bench_server.sh — runs berthd, Redis (appendfsync always) and PostgreSQL
# (synchronous_commit on) side by side in one run and prints berth's speed
# targets beside the figures (issue 3, "Speed"; docs/bench-server.md).
#
# It owns the peers' lifecycles: each server is started on a free loopback
# port in its own temporary directory (all on one filesystem, so every fsync
# pays the same disk) and stopped again, whatever happens, by the EXIT trap.
# It installs nothing: a missing peer is named, with the Debian package that
# provides it, and its rows are skipped.
#
# Usage: bench_server.sh [--berthd PATH] [--bench PATH] [--seconds S] [--rounds N]
#                        [--connections N] [--workers N] [--threads N] [--tmp DIR]
#                        [--commit-log on|off]
# --commit-log is passed to berthd (default: berthd's own, on).
# Defaults: 4 s per run, 3 rounds, 50 connections, 10,000 workers, one load
# thread per core (bench_server's threads, redis-benchmark's processes),
# temporaries in /var/tmp.
set -u -o pipefail

here=$(cd "$(dirname "$0")" && pwd)
berthd=${BERTHD:-}
bench=${BENCH_SERVER:-}
seconds=4
rounds=3
connections=50
workers=10000
threads=$(nproc 2>/dev/null || echo 1)
depth_pipelined=16
tmp_base=${TMPDIR:-/var/tmp}
seconds_max=3600
commit_log=""

die() { echo "bench_server.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || die "$1 wants a value"
    case "$1" in
        --berthd) berthd=$2 ;;
        --bench) bench=$2 ;;
        --seconds) seconds=$2 ;;
        --rounds) rounds=$2 ;;
        --connections) connections=$2 ;;
        --workers) workers=$2 ;;
        --threads) threads=$2 ;;
        --tmp) tmp_base=$2 ;;
        --commit-log) commit_log=$2 ;;
        *) die "unknown flag $1 (see the header of this script)" ;;
    esac
    shift 2
done
for n in "$seconds" "$rounds" "$connections" "$workers" "$threads"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "numbers must be positive integers, got '$n'"
done
[ "$seconds" -le "$seconds_max" ] || die "--seconds is at most $seconds_max"
case "$commit_log" in ""|on|off) ;; *) die "--commit-log is on or off, not '$commit_log'" ;; esac

# Defaults: the binaries of a CMake build directory next to the source tree.
find_built() {
    local name=$1 dir
    for dir in "$here/../../build" "$here/../../build"-*; do
        [ -x "$dir/tools/$name" ] && { echo "$dir/tools/$name"; return; }
        [ -x "$dir/tests/bench/$name" ] && { echo "$dir/tests/bench/$name"; return; }
    done
}
[ -n "$berthd" ] || berthd=$(find_built berthd)
[ -n "$bench" ] || bench=$(find_built bench_server)

# ---- which peers are here -------------------------------------------------
missing=()
have_berth=1; have_redis=1; have_pg=1
if [ -z "$berthd" ] || [ ! -x "$berthd" ]; then
    missing+=("berthd (build it: cmake --build build --target berthd, or pass --berthd)"); have_berth=0
fi
if [ -z "$bench" ] || [ ! -x "$bench" ]; then
    missing+=("bench_server (build it: cmake --build build --target bench_server, or pass --bench)"); have_berth=0
fi
for tool in redis-server redis-benchmark redis-cli; do
    command -v "$tool" >/dev/null || { missing+=("$tool (apt-get install -y redis-server redis-tools)"); have_redis=0; }
done
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ] || [ ! -x "$pg_bin/pgbench" ]; then
    missing+=("PostgreSQL (apt-get install -y postgresql)"); have_pg=0
fi
pg_user=""
if [ "$have_pg" = 1 ] && [ "$(id -u)" = 0 ]; then
    # initdb refuses root: run PostgreSQL as Debian's postgres user.
    if id postgres >/dev/null 2>&1 && command -v runuser >/dev/null; then
        pg_user=postgres
    else
        missing+=("a postgres user and runuser to run PostgreSQL as non-root"); have_pg=0
    fi
fi
for m in "${missing[@]+"${missing[@]}"}"; do echo "MISSING peer: $m"; done

# ---- temporary directory and cleanup ---------------------------------------
tmp=$(mktemp -d "$tmp_base/berth-bench.XXXXXX") || die "mktemp in $tmp_base failed"
chmod 755 "$tmp"
pids=()
pg_data=""
cleanup() {
    local pid
    for pid in "${pids[@]+"${pids[@]}"}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${pids[@]+"${pids[@]}"}"; do wait "$pid" 2>/dev/null; done
    if [ -n "$pg_data" ]; then pg_run "$pg_bin/pg_ctl" -D "$pg_data" -m immediate stop >/dev/null 2>&1; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Ports from below the kernel's ephemeral range: no outgoing connection can
# be holding one.
free_port() {
    local p tries=0 low=10000 high
    high=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    [ "$high" -gt $((low + 1000)) ] || low=1024
    while [ $tries -lt 200 ]; do
        p=$(( low + (RANDOM * 32768 + RANDOM) % (high - low) ))
        port_free "$p" && { echo "$p"; return; }
        tries=$((tries + 1))
    done
    die "no free loopback port found"
}
wait_ping() {   # port, name
    local i
    for i in $(seq 1 200); do
        [ "$(redis-cli -p "$1" PING 2>/dev/null)" = PONG ] && return 0
        sleep 0.05
    done
    die "$2 did not answer PING on port $1 within 10 s"
}
pg_run() { if [ -n "$pg_user" ]; then runuser -u "$pg_user" -- "$@"; else "$@"; fi; }

# Samples: one file per row key ("name|depth"), one line per round:
# cmds/s p50_ms p99_ms p999_ms.
mkdir -p "$tmp/samples"
row_keys=()
add_sample() {   # name depth rps p50 p99 p999
    local key="$1|$2" file
    file="$tmp/samples/$(tr ' /|' '__-' <<<"$key")"
    [ -f "$file" ] || row_keys+=("$key")
    echo "$3 $4 $5 $6" >>"$file"
}
sample_file() { echo "$tmp/samples/$(tr ' /|' '__-' <<<"$1|$2")"; }
us_to_ms() { awk -v v="$1" 'BEGIN { printf "%.3f", v / 1000 }'; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

# redis-benchmark is one thread, and on a long reply (WORKER.GET's map cost
# it 2.4x GET's CPU) that thread, not the server, sets the pace; its own
# --threads mode stopped every row here at 63.6k-64.0k/s. So each run is
# --threads processes (one per core by default, as bench_server's threads)
# sharing the connections and the requests: commands/s is all of their
# requests over the wall time from the first start to the last exit, and
# p50 and p99 the worst of the processes'.
rb_run() {   # N port depth args... -> "rps p50 p99", or nothing
    local n=$1 port=$2 depth=$3; shift 3
    local procs=$threads i c n_i t0 t1 pids_rb=()
    [ "$procs" -le "$connections" ] || procs=$connections
    t0=$(date +%s%N)
    for ((i = 0; i < procs; i++)); do
        c=$(( connections / procs + (i < connections % procs ? 1 : 0) ))
        n_i=$(( n * c / connections )); [ "$n_i" -ge "$c" ] || n_i=$c
        # A server that dies mid-run leaves redis-benchmark retrying its
        # connections for good: the timeout ends the run, with no figures.
        timeout $((seconds * 10 + 60)) redis-benchmark -p "$port" -c "$c" -n "$n_i" -P "$depth" --csv "$@" 2>/dev/null \
            | tail -n 1 | tr -d '"' >"$tmp/rb.$i" &
        pids_rb+=($!)
    done
    wait "${pids_rb[@]}"
    t1=$(date +%s%N)
    for ((i = 0; i < procs; i++)); do cat "$tmp/rb.$i"; echo; done | awk -F, -v n="$n" -v ns=$((t1 - t0)) '
        NF >= 7 { k++; if ($5 > p50) p50 = $5; if ($7 > p99) p99 = $7 }
        END { if (k == 0 || ns <= 0) exit; printf "%.0f %s %s\n", n / (ns / 1e9), p50, p99 }'
}
# redis-benchmark has no duration flag: the first run of each kind is sized
# by a short probe so that each lasts about $seconds; later rounds reuse it.
declare -A redis_n=()
redis_bench() {   # label depth port args...
    local label=$1 depth=$2 port=$3; shift 3
    local key="$label|$depth" out rps p50 p99
    if [ -z "${redis_n[$key]:-}" ]; then
        out=$(rb_run $((2000 * depth)) "$port" "$depth" "$@")
        rps=${out%% *}
        redis_n[$key]=$(awk -v r="${rps:-0}" -v s="$seconds" -v d="$depth" 'BEGIN { n = int(r * s); if (n < 2000 * d) n = 2000 * d; print n }')
    fi
    out=$(rb_run "${redis_n[$key]}" "$port" "$depth" "$@")
    read -r rps p50 p99 <<<"$out"
    [ -n "${p99:-}" ] || { echo "  redis-benchmark gave no figures for $label"; return 1; }
    echo "  $label depth $depth: $rps/s p50 $p50 ms p99 $p99 ms"
    add_sample "$label" "$depth" "$rps" "$p50" "$p99" "-"
}

# ---- berth -------------------------------------------------------------------
berth_fail=""
berth_port=""
info_stat() { redis-cli -p "$berth_port" INFO "$1" | tr -d '\r' | sed -n "s/^$2:\(.*\)/\1/p"; }
setup_berth() {
    berth_port=$(free_port)
    "$berthd" --data "$tmp/berth" --bind 127.0.0.1 --port "$berth_port" \
        ${commit_log:+--commit-log "$commit_log"} >"$tmp/berthd.log" 2>&1 &
    pids+=($!)
    wait_ping "$berth_port" berthd
    echo "berthd: adding $workers workers"
    local out
    out=$("$bench" --port "$berth_port" --mode add-workers --workers "$workers" --connections 8 \
          --threads 1 --depth 64) || { berth_fail="WORKER.ADD setup failed: $out"; return 1; }
}
berth_cycle() {   # depth tag
    local depth=$1 tag=$2 out rc line c0 r0 c1 r1
    c0=$(info_stat stats commits); r0=$(info_stat stats records_committed)
    out=$("$bench" --port "$berth_port" --mode cycle --connections "$connections" \
          --threads "$threads" --depth "$depth" --workers "$workers" --seconds "$seconds" \
          --tag "$tag" --name berth)
    rc=$?
    c1=$(info_stat stats commits); r1=$(info_stat stats records_committed)
    line=$(grep '^RESULT' <<<"$out")
    if [ -z "$line" ]; then
        # berthd stopped (its log says why): no more berth rows this run.
        berth_fail="bench_server printed no result: $out; berthd's log: $(tail -n 3 "$tmp/berthd.log")"
        have_berth=0
        return 1
    fi
    [ $rc -eq 0 ] || berth_fail="DEPLOY/RELEASE errors at depth $depth: $(grep FIRST_ERROR <<<"$out")"
    echo "  berth DEPLOY/RELEASE depth $depth: $(field cmds_per_s "$line")/s p50 $(us_to_ms "$(field p50_us "$line")") ms" \
         "p99 $(us_to_ms "$(field p99_us "$line")") ms; $((c1 - c0)) commits of $(awk -v r=$((r1 - r0)) -v c=$((c1 - c0)) 'BEGIN { printf "%.1f", c ? r / c : 0 }') records"
    add_sample "berth DEPLOY/RELEASE" "$depth" "$(field cmds_per_s "$line")" \
        "$(us_to_ms "$(field p50_us "$line")")" "$(us_to_ms "$(field p99_us "$line")")" \
        "$(us_to_ms "$(field p999_us "$line")")"
}

# ---- Redis -------------------------------------------------------------------
redis_port=""
setup_redis() {
    redis_port=$(free_port); mkdir -p "$tmp/redis"
    redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$tmp/redis" --appendonly yes \
        --appendfsync always --save '' --daemonize no --logfile "$tmp/redis/redis.log" &
    pids+=($!)
    wait_ping "$redis_port" redis-server
}

# ---- PostgreSQL --------------------------------------------------------------
# The equivalent of a DEPLOY on two workers is one durable transaction that
# checks the workers exist, are active and have no holder, then inserts the
# holder rows; a RELEASE deletes them. Each pgbench client owns two workers.
pg_script() {
    cat <<'EOF2'
\set a :client_id * 2
\set b :client_id * 2 + 1
INSERT INTO holder (worker, instance) SELECT w.id, 'i-' || :client_id FROM worker w WHERE w.id IN (:a, :b) AND w.active AND NOT EXISTS (SELECT 1 FROM holder h WHERE h.worker IN (:a, :b));
DELETE FROM holder WHERE instance = 'i-' || :client_id;
EOF2
}
# 16 in flight: pgbench's pipeline mode sends 8 DEPLOY/RELEASE pairs before it
# waits; the pipeline is one implicit transaction (one commit per 16).
pg_script_pipelined() {
    local i
    printf '\\set a :client_id * 2\n\\set b :client_id * 2 + 1\n\\startpipeline\n'
    for i in $(seq 1 $((depth_pipelined / 2))); do pg_script | tail -n 2; done
    printf '\\endpipeline\n'
}
pg_port=""
pg_bench() {   # depth
    local depth=$1 per trips script out tps p50 p99 p999 failed
    if [ "$depth" = 1 ]; then per=2; trips=2; script="$tmp/deploy_release.sql"
    else per=$depth_pipelined; trips=1; script="$tmp/deploy_release_pipelined.sql"; fi
    out=$(pg_run "$pg_bin/pgbench" -h 127.0.0.1 -p "$pg_port" -U postgres -n -M prepared \
          -c "$connections" -j 1 -T "$seconds" -f "$script" -l --log-prefix "$tmp/pglog/log" postgres 2>&1)
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -n 1)
    [ -n "$tps" ] || { echo "  pgbench failed: $(tail -n 5 <<<"$out")"; return 1; }
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
    [ "${failed:-0}" = 0 ] || echo "  pgbench: $failed failed transactions"
    # Log lines: client tx_no latency_us script_no epoch us. Latency is per
    # script run: a command waits one of the script's round trips.
    read -r p50 p99 p999 < <(cat "$tmp"/pglog/log* | awk '{ print $3 }' | sort -n | awk -v d="$trips" '
        function at(f,  i) { i = int(NR * f) + 1; if (i > NR) i = NR; return v[i] / d / 1000 }
        { v[NR] = $1 } END { if (NR == 0) { print "- - -"; exit }
          printf "%.3f %.3f %.3f\n", at(0.5), at(0.99), at(0.999) }')
    rm -f "$tmp"/pglog/log*
    local rps; rps=$(awk -v t="$tps" -v p="$per" 'BEGIN { printf "%.0f", t * p }')
    echo "  postgres check+insert depth $depth: $rps/s p50 $p50 ms p99 $p99 ms"
    add_sample "postgres check+insert" "$depth" "$rps" "$p50" "$p99" "$p999"
}
setup_pg() {
    pg_port=$(free_port)
    pg_data="$tmp/pg"
    mkdir -p "$pg_data" "$tmp/pgsock" "$tmp/pglog"
    [ -z "$pg_user" ] || chown "$pg_user" "$pg_data" "$tmp/pgsock" "$tmp/pglog"
    pg_run "$pg_bin/initdb" -D "$pg_data" -U postgres --auth=trust --no-sync >"$tmp/initdb.log" 2>&1 \
        || { pg_data=""; echo "initdb failed: $(tail -n 3 "$tmp/initdb.log")"; return 1; }
    pg_run "$pg_bin/pg_ctl" -D "$pg_data" -l "$tmp/pglog/server.log" -w -o \
        "-p $pg_port -k $tmp/pgsock -c listen_addresses=127.0.0.1 -c synchronous_commit=on -c fsync=on -c max_connections=$((connections + 10)) -c shared_buffers=256MB" \
        start >/dev/null || { echo "pg_ctl start failed: $(tail -n 5 "$tmp/pglog/server.log")"; return 1; }
    pg_run "$pg_bin/psql" -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -v ON_ERROR_STOP=1 <<EOF2 >/dev/null
CREATE TABLE worker (id bigint PRIMARY KEY, gpus int NOT NULL, active boolean NOT NULL);
CREATE TABLE holder (worker bigint PRIMARY KEY REFERENCES worker(id), instance text NOT NULL);
CREATE INDEX holder_instance ON holder (instance);
INSERT INTO worker SELECT g, 8, true FROM generate_series(0, $workers) g;
EOF2
    pg_script >"$tmp/deploy_release.sql"
    pg_script_pipelined >"$tmp/deploy_release_pipelined.sql"
    chmod 644 "$tmp"/*.sql
}

# ---- the machine's noise -------------------------------------------------------
# The peers here are all bound by fsync; its cost on this disk, and the load
# other processes put on the cores, are printed beside the figures.
fsync_ms() {
    local t0 t1
    t0=$(date +%s%N)
    dd if=/dev/zero of="$tmp/fsync.probe" bs=4k count=100 oflag=dsync 2>/dev/null
    t1=$(date +%s%N)
    rm -f "$tmp/fsync.probe"
    awk -v ns=$((t1 - t0)) 'BEGIN { printf "%.2f", ns / 100 / 1e6 }'
}
noise() { echo "noise: one 4 KiB O_DSYNC write $(fsync_ms) ms; load average $(cut -d' ' -f1-3 /proc/loadavg)"; }

echo "bench_server.sh: $connections connections, $workers workers, ${seconds}s per run, $rounds rounds, $(nproc) cores, tmp $tmp"
echo "tree: $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$here" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)'); berthd: ${berthd:-none}${commit_log:+ --commit-log $commit_log}"
[ "$have_berth" = 1 ] && { setup_berth || { echo "berthd setup failed: $berth_fail"; have_berth=0; }; }
[ "$have_redis" = 1 ] && { setup_redis || have_redis=0; }
[ "$have_pg" = 1 ] && { setup_pg || have_pg=0; }
# Rounds interleave the peers so that a burst of noise from other processes
# lands on all of them rather than on one; the report takes the medians.
for ((round = 1; round <= rounds; round++)); do
    echo "round $round: $(noise)"
    for depth in 1 "$depth_pipelined"; do
        [ "$have_berth" = 1 ] && berth_cycle "$depth" "r$round-d$depth"
        [ "$have_redis" = 1 ] && redis_bench "redis SET always" "$depth" "$redis_port" -t set
        [ "$have_pg" = 1 ] && pg_bench "$depth"
    done
    [ "$have_berth" = 1 ] && redis_bench "berth WORKER.GET" 1 "$berth_port" WORKER.GET w-1
    [ "$have_redis" = 1 ] && redis_bench "redis GET" 1 "$redis_port" -t get
done
echo "after: $(noise)"
if [ "$have_berth" = 1 ]; then
    echo "berthd commit latency (all rounds): p50 $(info_stat latency commit_latency_p50_us) us," \
         "p99 $(info_stat latency commit_latency_p99_us) us, max $(info_stat latency commit_latency_max_us) us;" \
         "$(info_stat stats commits) commits of $(info_stat stats records_committed) records"
fi

# ---- report --------------------------------------------------------------------
# median COLUMN FILE: the median of one column over the rounds ("-" stays "-").
median() {
    awk -v c="$1" '{ print $c }' "$2" | sort -g | awk '
        { v[NR] = $1 } END { if (NR == 0 || v[1] == "-") { print "-"; exit }
          if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
row_get() {   # name depth column(1=cmds/s, 3=p99)
    local f; f=$(sample_file "$1" "$2")
    [ -f "$f" ] && median "$3" "$f"
}
echo
printf '%-24s %6s %12s %19s %9s %9s %9s\n' "peer (median of rounds)" "depth" "commands/s" "min..max" "p50 ms" "p99 ms" "p999 ms"
for key in "${row_keys[@]+"${row_keys[@]}"}"; do
    IFS='|' read -r name depth <<<"$key"
    f=$(sample_file "$name" "$depth")
    range=$(awk '{ print $1 }' "$f" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.0f..%.0f", lo, hi }')
    printf '%-24s %6s %12.0f %19s %9s %9s %9s\n' "$name" "$depth" "$(median 1 "$f")" "$range" \
        "$(median 2 "$f")" "$(median 3 "$f")" "$(median 4 "$f")"
done
# ratio_line LABEL NAME_A NAME_B DEPTH TARGET: the median over rounds of
# A/B, each ratio taken within one round (the two ran back to back, under
# the same noise), with the spread beside it.
ratio_line() {
    local label=$1 fa fb target=$5
    fa=$(sample_file "$2" "$4"); fb=$(sample_file "$3" "$4")
    if [ ! -f "$fa" ] || [ ! -f "$fb" ]; then printf '%-40s %10s   target %s\n' "$label" "n/a" "$target"; return; fi
    paste -d ' ' <(awk '{ print $1 }' "$fa") <(awk '{ print $1 }' "$fb") |
        awk '$2 > 0 { print $1 / $2 }' | sort -g | awk -v l="$label" -v t="$target" '
        { v[NR] = $1 } END {
            if (NR == 0) { printf "%-40s %10s   target %s\n", l, "n/a", t; exit }
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            want = substr(t, 3) + 0
            ok = (substr(t, 1, 2) == ">=") ? (m >= want) : (m <= want)
            printf "%-40s %9.2fx   (rounds %.2f..%.2f)   target %s   %s\n", l, m, v[1], v[NR], t, ok ? "MET" : "MISSED" }'
}
echo
ratio_line "berth/Redis-always, depth 1" 'berth DEPLOY/RELEASE' 'redis SET always' 1 ">=1.0"
ratio_line "berth/Redis-always, depth $depth_pipelined" 'berth DEPLOY/RELEASE' 'redis SET always' "$depth_pipelined" ">=1.0"
ratio_line "berth/PostgreSQL, depth 1" 'berth DEPLOY/RELEASE' 'postgres check+insert' 1 ">=20"
ratio_line "berth/PostgreSQL, depth $depth_pipelined" 'berth DEPLOY/RELEASE' 'postgres check+insert' "$depth_pipelined" ">=20"
ratio_line "berth WORKER.GET/Redis GET" 'berth WORKER.GET' 'redis GET' 1 ">=0.9"
# The machine's own ceiling at depth 1: Redis GET (an in-memory read,
# nothing durable) is the fastest round trip any server here gives these
# clients, so a target above it cannot be met on this machine by anyone.
pg1=$(row_get 'postgres check+insert' 1 1)
get1=$(row_get 'redis GET' 1 1)
if [ -n "$pg1" ] && [ -n "$get1" ]; then
    awk -v pg="$pg1" -v get="$get1" 'BEGIN { want = 20 * pg
        printf "%-40s %9.0f/s against Redis GET %.0f/s (nothing durable): %s\n", "20x PostgreSQL at depth 1 is", want, get,
               (want > get ? "above what any server reaches on this machine" : "within the round trips measured here") }'
fi
p99=$(row_get 'berth DEPLOY/RELEASE' 1 3)
if [ -n "$p99" ]; then
    awk -v p="$p99" -v c="$connections" 'BEGIN { printf "%-40s %8.3f ms (median of rounds)   target <=2 ms   %s\n", "berth p99, " c " unpipelined connections", p, p <= 2 ? "MET" : "MISSED" }'
else
    printf '%-40s %10s   target <=2 ms\n' "berth p99, $connections unpipelined connections" "n/a"
fi
[ -z "$berth_fail" ] || { echo "BERTH ERRORS: $berth_fail"; exit 1; }
[ ${#missing[@]} -eq 0 ] || exit 3
exit 0
