#!/usr/bin/env bash
# test.sh — build berth and run its whole test suite: the normal build, then
# the same suite under AddressSanitizer + UndefinedBehaviorSanitizer, then the
# unit tests under valgrind memcheck. CI runs exactly this (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${BERTH_JOBS:-2}
# Each stage's wall time, for whoever compares CI runs ("time: <stage> N s").
mark=$(date +%s)
took() { echo "time: $1 $(( $(date +%s) - mark )) s"; mark=$(date +%s); }

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
took build
# Many tests wait on sockets and fsyncs rather than the CPU: one more than the cores.
ctest --test-dir build --output-on-failure -j"$((jobs + 1))" --timeout 600
took ctest

if [ "${BERTH_SKIP_SANITIZE:-0}" != 1 ]; then
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DBERTH_SANITIZE=ON >/dev/null
  cmake --build build-asan -j"$jobs"
  took build-asan
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j"$((jobs + 1))" --timeout 900 -LE 'nosan' -E '^bench_smoke$'
  took ctest-asan
fi

if [ "${BERTH_SKIP_VALGRIND:-0}" != 1 ]; then
  sh tests/reliability/valgrind.sh build
  took valgrind
fi

# One closing line for whoever reads the end of the log: the stages above
# (ctest, ctest under sanitizers, memcheck) that ran; set -e stops at a failure.
stages=1
[ "${BERTH_SKIP_SANITIZE:-0}" != 1 ] && stages=$((stages + 1))
[ "${BERTH_SKIP_VALGRIND:-0}" != 1 ] && stages=$((stages + 1))
echo "stages: $stages passed, 0 failed"
