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
# Usage: bench_server.sh [--berthd PATH] [--bench PATH] [--seconds S]
#                        [--connections N] [--workers N] [--threads N] [--tmp DIR]
set -u -o pipefail

here=$(cd "$(dirname "$0")" && pwd)
berthd=${BERTHD:-}
bench=${BENCH_SERVER:-}
seconds=10
connections=50
workers=10000
threads=1
depth_pipelined=16
tmp_base=${TMPDIR:-/var/tmp}
seconds_max=3600

die() { echo "bench_server.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || die "$1 wants a value"
    case "$1" in
        --berthd) berthd=$2 ;;
        --bench) bench=$2 ;;
        --seconds) seconds=$2 ;;
        --connections) connections=$2 ;;
        --workers) workers=$2 ;;
        --threads) threads=$2 ;;
        --tmp) tmp_base=$2 ;;
        *) die "unknown flag $1 (see the header of this script)" ;;
    esac
    shift 2
done
for n in "$seconds" "$connections" "$workers" "$threads"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "numbers must be positive integers, got '$n'"
done
[ "$seconds" -le "$seconds_max" ] || die "--seconds is at most $seconds_max"

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
free_port() {
    local p tries=0
    while [ $tries -lt 200 ]; do
        p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
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

# Rows of the result table: name depth cmds/s p50_ms p99_ms p999_ms
rows=()
add_row() { rows+=("$1|$2|$3|$4|$5|$6"); }
us_to_ms() { awk -v v="$1" 'BEGIN { printf "%.3f", v / 1000 }'; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

# redis-benchmark has no duration flag: a short probe sizes the real run so
# each lasts about $seconds.
redis_bench() {   # label depth port args...
    local label=$1 depth=$2 port=$3; shift 3
    local probe rps n line
    probe=$(redis-benchmark -p "$port" -c "$connections" -n 20000 -P "$depth" --csv "$@" | tail -n 1)
    rps=$(cut -d, -f2 <<<"$probe" | tr -d '"')
    n=$(awk -v r="$rps" -v s="$seconds" 'BEGIN { n = int(r * s); if (n < 20000) n = 20000; print n }')
    line=$(redis-benchmark -p "$port" -c "$connections" -n "$n" -P "$depth" --csv "$@" | tail -n 1)
    IFS=, read -r _ rps _ _ p50 _ p99 _ <<<"$(tr -d '"' <<<"$line")"
    [ -n "${p99:-}" ] || { echo "redis-benchmark gave no figures for $label: $line"; return 1; }
    add_row "$label" "$depth" "$rps" "$p50" "$p99" "-"
}

# ---- berth -------------------------------------------------------------------
berth_fail=""
run_berth() {
    local port data log
    port=$(free_port); data="$tmp/berth"; log="$tmp/berthd.log"
    "$berthd" --data "$data" --bind 127.0.0.1 --port "$port" >"$log" 2>&1 &
    pids+=($!)
    wait_ping "$port" berthd
    echo "berthd: adding $workers workers"
    local out
    out=$("$bench" --port "$port" --mode add-workers --workers "$workers" --connections 8 \
          --threads 1 --depth 64) || { berth_fail="WORKER.ADD setup failed: $out"; return 1; }
    local depth tag=0
    for depth in 1 "$depth_pipelined"; do
        tag=$((tag + 1))
        echo "berthd: DEPLOY/RELEASE, $connections connections, depth $depth, ${seconds}s"
        out=$("$bench" --port "$port" --mode cycle --connections "$connections" \
              --threads "$threads" --depth "$depth" --workers "$workers" --seconds "$seconds" \
              --tag "t$tag" --name berth)
        local rc=$?
        echo "  $out" | head -n 2
        [ $rc -eq 0 ] || berth_fail="DEPLOY/RELEASE errors at depth $depth: $(grep FIRST_ERROR <<<"$out")"
        local line; line=$(grep '^RESULT' <<<"$out")
        add_row "berth DEPLOY/RELEASE" "$depth" "$(field cmds_per_s "$line")" \
            "$(us_to_ms "$(field p50_us "$line")")" "$(us_to_ms "$(field p99_us "$line")")" \
            "$(us_to_ms "$(field p999_us "$line")")"
    done
    echo "berthd: WORKER.GET under redis-benchmark"
    redis_bench "berth WORKER.GET" 1 "$port" WORKER.GET w-1
    tail -n 3 "$log" | sed 's/^/  berthd log: /'
}

# ---- Redis -------------------------------------------------------------------
run_redis() {
    local port dir
    port=$(free_port); dir="$tmp/redis"; mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --appendonly yes \
        --appendfsync always --save '' --daemonize no --logfile "$dir/redis.log" &
    pids+=($!)
    wait_ping "$port" redis-server
    local depth
    for depth in 1 "$depth_pipelined"; do
        echo "redis-server: SET (appendfsync always), $connections connections, depth $depth"
        redis_bench "redis SET always" "$depth" "$port" -t set
    done
    echo "redis-server: GET"
    redis_bench "redis GET" 1 "$port" -t get
}

# ---- PostgreSQL --------------------------------------------------------------
# The equivalent of a DEPLOY on two workers is one durable transaction that
# checks the workers exist, are active and have no holder, then inserts the
# holder rows; a RELEASE deletes them. Each pgbench client owns two workers.
pg_script() {
    cat <<'EOF'
\set a :client_id * 2
\set b :client_id * 2 + 1
INSERT INTO holder (worker, instance) SELECT w.id, 'i-' || :client_id FROM worker w WHERE w.id IN (:a, :b) AND w.active AND NOT EXISTS (SELECT 1 FROM holder h WHERE h.worker IN (:a, :b));
DELETE FROM holder WHERE instance = 'i-' || :client_id;
EOF
}
# 16 in flight: pgbench's pipeline mode sends 8 DEPLOY/RELEASE pairs before it
# waits; the pipeline is one implicit transaction (one commit per 16).
pg_script_pipelined() {
    local i
    printf '\\set a :client_id * 2\n\\set b :client_id * 2 + 1\n\\startpipeline\n'
    for i in $(seq 1 $((depth_pipelined / 2))); do pg_script | tail -n 2; done
    printf '\\endpipeline\n'
}
pgbench_row() {   # label depth commands_per_script round_trips_per_script script
    local label=$1 depth=$2 per=$3 trips=$4 script=$5 out tps p50 p99 p999
    out=$(pg_run "$pg_bin/pgbench" -h 127.0.0.1 -p "$pg_port" -U postgres -n -M prepared \
          -c "$connections" -j 1 -T "$seconds" -f "$script" -l --log-prefix "$tmp/pglog/log" postgres 2>&1)
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -n 1)
    [ -n "$tps" ] || { echo "pgbench failed: $out" | tail -n 5; return 1; }
    local failed; failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
    [ "${failed:-0}" = 0 ] || echo "  pgbench: $failed failed transactions"
    # Log lines: client tx_no latency_us script_no epoch us. Latency is per
    # script run: a command waits one of the script's round trips.
    read -r p50 p99 p999 < <(cat "$tmp"/pglog/log* | awk '{ print $3 }' | sort -n | awk -v d="$trips" '
        function at(f,  i) { i = int(NR * f) + 1; if (i > NR) i = NR; return v[i] / d / 1000 }
        { v[NR] = $1 } END { if (NR == 0) { print "- - -"; exit }
          printf "%.3f %.3f %.3f\n", at(0.5), at(0.99), at(0.999) }')
    rm -f "$tmp"/pglog/log*
    add_row "$label" "$depth" "$(awk -v t="$tps" -v p="$per" 'BEGIN { printf "%.0f", t * p }')" \
        "$p50" "$p99" "$p999"
}
run_pg() {
    pg_port=$(free_port)
    pg_data="$tmp/pg"
    mkdir -p "$pg_data" "$tmp/pgsock" "$tmp/pglog"
    [ -z "$pg_user" ] || chown "$pg_user" "$pg_data" "$tmp/pgsock" "$tmp/pglog"
    pg_run "$pg_bin/initdb" -D "$pg_data" -U postgres --auth=trust --no-sync >"$tmp/initdb.log" 2>&1 \
        || { pg_data=""; echo "initdb failed: $(tail -n 3 "$tmp/initdb.log")"; return 1; }
    pg_run "$pg_bin/pg_ctl" -D "$pg_data" -l "$tmp/pglog/server.log" -w -o \
        "-p $pg_port -k $tmp/pgsock -c listen_addresses=127.0.0.1 -c synchronous_commit=on -c fsync=on -c max_connections=$((connections + 10)) -c shared_buffers=256MB" \
        start >/dev/null || { echo "pg_ctl start failed: $(tail -n 5 "$tmp/pglog/server.log")"; return 1; }
    local workers_pg=$((connections * 2 + 2))
    pg_run "$pg_bin/psql" -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -v ON_ERROR_STOP=1 <<EOF >/dev/null
CREATE TABLE worker (id bigint PRIMARY KEY, gpus int NOT NULL, active boolean NOT NULL);
CREATE TABLE holder (worker bigint PRIMARY KEY REFERENCES worker(id), instance text NOT NULL);
CREATE INDEX holder_instance ON holder (instance);
INSERT INTO worker SELECT g, 8, true FROM generate_series(0, $workers_pg) g;
EOF
    pg_script >"$tmp/deploy_release.sql"
    pg_script_pipelined >"$tmp/deploy_release_pipelined.sql"
    chmod 644 "$tmp"/*.sql
    echo "PostgreSQL: check-and-insert, $connections connections, depth 1, ${seconds}s"
    pgbench_row "postgres check+insert" 1 2 2 "$tmp/deploy_release.sql"
    echo "PostgreSQL: check-and-insert, $connections connections, depth $depth_pipelined (pipeline), ${seconds}s"
    pgbench_row "postgres check+insert" "$depth_pipelined" "$depth_pipelined" 1 "$tmp/deploy_release_pipelined.sql"
}

echo "bench_server.sh: $connections connections, $workers workers, ${seconds}s per run, $(nproc) cores, tmp $tmp"
[ "$have_berth" = 1 ] && { run_berth || echo "berth run failed"; }
[ "$have_redis" = 1 ] && { run_redis || echo "redis run failed"; }
[ "$have_pg" = 1 ] && { run_pg || echo "PostgreSQL run failed"; }

# ---- report --------------------------------------------------------------------
echo
printf '%-24s %6s %12s %9s %9s %9s\n' "peer" "depth" "commands/s" "p50 ms" "p99 ms" "p999 ms"
for r in "${rows[@]+"${rows[@]}"}"; do
    IFS='|' read -r name depth rps p50 p99 p999 <<<"$r"
    printf '%-24s %6s %12.0f %9s %9s %9s\n' "$name" "$depth" "$rps" "$p50" "$p99" "$p999"
done
row_get() {   # name depth column(3=rps,5=p99)
    local r
    for r in "${rows[@]+"${rows[@]}"}"; do
        IFS='|' read -r -a f <<<"$r"
        [ "${f[0]}" = "$1" ] && [ "${f[1]}" = "$2" ] && { echo "${f[$(( $3 - 1 ))]}"; return; }
    done
}
ratio_line() {   # label numerator denominator target comparison
    local label=$1 a=$2 b=$3 target=$4
    if [ -z "$a" ] || [ -z "$b" ]; then printf '%-44s %10s   target %s\n' "$label" "n/a" "$target"; return; fi
    awk -v l="$label" -v a="$a" -v b="$b" -v t="$target" 'BEGIN {
        r = a / b; want = substr(t, 3) + 0
        ok = (substr(t, 1, 2) == ">=") ? (r >= want) : (r <= want)
        printf "%-44s %9.2fx   target %s   %s\n", l, r, t, ok ? "MET" : "MISSED" }'
}
echo
ratio_line "berth/Redis-always, depth 1" "$(row_get 'berth DEPLOY/RELEASE' 1 3)" "$(row_get 'redis SET always' 1 3)" ">=1.0"
ratio_line "berth/Redis-always, depth $depth_pipelined" "$(row_get 'berth DEPLOY/RELEASE' "$depth_pipelined" 3)" "$(row_get 'redis SET always' "$depth_pipelined" 3)" ">=1.0"
ratio_line "berth/PostgreSQL, depth 1" "$(row_get 'berth DEPLOY/RELEASE' 1 3)" "$(row_get 'postgres check+insert' 1 3)" ">=20"
ratio_line "berth/PostgreSQL, depth $depth_pipelined" "$(row_get 'berth DEPLOY/RELEASE' "$depth_pipelined" 3)" "$(row_get 'postgres check+insert' "$depth_pipelined" 3)" ">=20"
ratio_line "berth WORKER.GET/Redis GET" "$(row_get 'berth WORKER.GET' 1 3)" "$(row_get 'redis GET' 1 3)" ">=0.9"
p99=$(row_get 'berth DEPLOY/RELEASE' 1 5)
if [ -n "$p99" ]; then
    awk -v p="$p99" -v c="$connections" 'BEGIN { printf "%-44s %9.3f ms target <=2 ms   %s\n", "berth p99, " c " unpipelined connections", p, p <= 2 ? "MET" : "MISSED" }'
else
    printf '%-44s %10s   target <=2 ms\n' "berth p99, $connections unpipelined connections" "n/a"
fi
[ -z "$berth_fail" ] || { echo "BERTH ERRORS: $berth_fail"; exit 1; }
[ ${#missing[@]} -eq 0 ] || exit 3
exit 0
