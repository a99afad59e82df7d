#!/bin/sh
# tests/fuzz/run.sh — run one libFuzzer target the way ctest and the long
# variant do: first every committed regression input (each must pass), then
# fuzzing for a fixed time on the committed seed corpus. New inputs go to a
# scratch corpus in the build tree, never into the source tree; a crash
# leaves its input in the artifacts directory, to be fixed and then copied
# into tests/fuzz/regress/<target>/.
#   run.sh <fuzz-binary> <source-dir> <work-dir> <seconds> [extra libFuzzer flags]
set -eu
bin=$1; src=$2; work=$3; seconds=$4; shift 4
name=$(basename "$bin")
if [ ! -x "$bin" ]; then
  echo "ERR $name was not built: see the fuzz_build test's output (a berth source it needs is missing or does not compile)" >&2
  exit 1
fi
corpus=$src/tests/fuzz/corpus/$name
regress=$src/tests/fuzz/regress/$name
scratch=$work/scratch/$name
artifacts=$work/artifacts/$name
mkdir -p "$scratch" "$artifacts"
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
if [ -d "$regress" ] && [ -n "$(ls -A "$regress")" ]; then
  echo "== $name: regression inputs"
  "$bin" -runs=1 "$regress"/*
fi
if [ ! -d "$corpus" ] || [ -z "$(ls -A "$corpus")" ]; then
  echo "ERR $name has no seed corpus in $corpus" >&2
  exit 1
fi
echo "== $name: fuzzing for ${seconds}s"
"$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -max_len=8192 \
  -print_final_stats=1 -artifact_prefix="$artifacts/" "$@" "$scratch" "$corpus" 2>&1 | \
  tee "$work/$name.log" | grep -E '^(INFO: seed|#[0-9]+ +DONE|stat::|==[0-9]+==|SUMMARY|Done)' || true
status=0
grep -q -E 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|runtime error:|deadly signal' "$work/$name.log" && status=1
if [ $status -ne 0 ]; then
  echo "FAIL $name crashed; the log is $work/$name.log and the input is in $artifacts/" >&2
  grep -E 'ERROR|runtime error|SUMMARY' "$work/$name.log" | head -20 >&2
fi
exit $status
