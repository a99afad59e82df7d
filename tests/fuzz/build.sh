#!/bin/sh
# tests/fuzz/build.sh — configure and build the fuzz targets with clang.
# ctest's fixture `fuzz_build` runs it; by hand:
#   sh tests/fuzz/build.sh clang . build/fuzz
#   build/fuzz/build/fuzz_resp -max_total_time=600 tests/fuzz/corpus/fuzz_resp
#   build.sh <clang> <berth-source-dir> <fuzz-build-dir>
set -eu
clang=$1; src=$2; out=$3
mkdir -p "$out"
cmake -S "$src/tests/fuzz" -B "$out/build" -DCMAKE_C_COMPILER="$clang" \
  -DBERTH_SOURCE_DIR="$src" >"$out/configure.log" 2>&1 || { cat "$out/configure.log"; exit 1; }
grep 'fuzz:' "$out/configure.log" || true
cmake --build "$out/build" -j"${BERTH_JOBS:-2}"
