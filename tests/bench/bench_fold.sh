#!/usr/bin/env bash
# bench_fold.sh — what the HISTORY fold costs a long-running berthd: starts
# one berthd, adds 10,000 workers, runs rounds of pipelined DEPLOY/RELEASE
# cycles (bench_server --mode cycle) against it, and after each round prints
# the fold thread's bytes written and CPU per fold (from /proc: the thread is
# named berth-fold), the index's runs and merges and its size on disk; then
# HISTORY's latency on the index that resulted (redis-benchmark, one
# connection and fifty). The fold's cost grew with the history before
# session 9 (docs/server.md, "The history index: runs"); this shows whether
# it does.
#
# Usage: bench_fold.sh [--berthd PATH] [--bench PATH] [--rounds N]
#                      [--seconds S] [--depth D] [--port P] [--tmp DIR]
# Needs redis-cli and redis-benchmark (redis-tools). Linux only (/proc).
set -eu

berthd=""
bench=""
rounds=6
seconds=8
depth=16
port=7431
tmp=/var/tmp
while [ $# -gt 0 ]; do
    case "$1" in
        --berthd) berthd=$2 ;;
        --bench) bench=$2 ;;
        --rounds) rounds=$2 ;;
        --seconds) seconds=$2 ;;
        --depth) depth=$2 ;;
        --port) port=$2 ;;
        --tmp) tmp=$2 ;;
        *) echo "usage: bench_fold.sh [--berthd PATH] [--bench PATH] [--rounds N] [--seconds S] [--depth D] [--port P] [--tmp DIR]" >&2; exit 2 ;;
    esac
    shift 2
done
root=$(cd "$(dirname "$0")/../.." && pwd)
for b in build build-*; do
    [ -n "$berthd" ] || { [ -x "$root/$b/tools/berthd" ] && berthd=$root/$b/tools/berthd; } || true
    [ -n "$bench" ] || { [ -x "$root/$b/tests/bench/bench_server" ] && bench=$root/$b/tests/bench/bench_server; } || true
done
[ -x "$berthd" ] || { echo "bench_fold.sh: no berthd (build it, or --berthd PATH)" >&2; exit 2; }
[ -x "$bench" ] || { echo "bench_fold.sh: no bench_server (build it, or --bench PATH)" >&2; exit 2; }
for tool in redis-cli redis-benchmark; do
    command -v $tool >/dev/null || { echo "MISSING: $tool (apt-get install -y redis-tools)" >&2; exit 3; }
done

data=$(mktemp -d "$tmp/berth-fold.XXXXXX")
pid=""
cleanup() {
    [ -z "$pid" ] || { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
    rm -rf "$data"
}
trap cleanup EXIT

info() { redis-cli -p "$port" INFO journal | tr -d '\r' | awk -F: -v k="$1" '$1 == k { print $2 }'; }

"$berthd" --data "$data/d" --port "$port" >"$data/berthd.log" 2>&1 &
pid=$!
for _ in $(seq 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
"$bench" --port "$port" --mode add-workers --workers 10000 >/dev/null
fold_tid=$(grep -l '^berth-fold$' /proc/$pid/task/*/comm | head -1 | cut -d/ -f5)
[ -n "$fold_tid" ] || { echo "bench_fold.sh: berthd has no berth-fold thread" >&2; exit 1; }
tick_ms=$((1000 / $(getconf CLK_TCK)))
echo "bench_fold.sh: berthd $berthd, depth $depth, $rounds rounds of ${seconds}s, 10000 workers; load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$rounds"); do
    folds0=$(info history_folds)
    bytes0=$(awk '/^write_bytes/ { print $2 }' /proc/$pid/task/$fold_tid/io)
    cpu0=$(awk '{ print $14 + $15 }' /proc/$pid/task/$fold_tid/stat)
    result=$("$bench" --port "$port" --mode cycle --depth "$depth" --seconds "$seconds" \
             --workers 10000 --connections 50 --tag "r$r" | grep '^RESULT')
    folds1=$(info history_folds)
    bytes1=$(awk '/^write_bytes/ { print $2 }' /proc/$pid/task/$fold_tid/io)
    cpu1=$(awk '{ print $14 + $15 }' /proc/$pid/task/$fold_tid/stat)
    folds=$((folds1 - folds0))
    per=$((folds > 0 ? folds : 1))
    echo "round $r: $(echo "$result" | grep -o 'cmds_per_s=[0-9]*') $(echo "$result" | grep -o 'p99_us=[0-9]*')" \
         "head $(info head_seq) folds $folds" \
         "fold_write_mib_per_fold $(( (bytes1 - bytes0) / 1048576 / per ))" \
         "fold_cpu_ms_per_fold $(( (cpu1 - cpu0) * tick_ms / per ))" \
         "history_runs $(info history_runs) history_merges $(info history_merges)" \
         "history_mib $(du -sm "$data/d/history" | cut -f1)"
done
# A worker's first 10 records are found in the oldest run; an instance of
# the first round has 2 records, so its query looks in every run for more.
for q in "WORKER w-4242" "INSTANCE i-r1-0-0"; do
    for c in 1 50; do
        printf 'HISTORY %s 0 10, %s connection(s): ' "$q" "$c"
        # shellcheck disable=SC2086
        redis-benchmark -p "$port" -c "$c" -n $((c * 4000)) -q HISTORY $q 0 10 2>&1 |
            tr '\r' '\n' | grep -v '^$' | tail -1
    done
done
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
