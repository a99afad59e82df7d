#!/bin/sh
# tests/reliability/valgrind.sh — the Check unit tests under valgrind memcheck.
#
# Runs each unit test program (the tests labelled `unit`, or while none
# carry the label: resp core model journal replay) under valgrind with
# --error-exitcode: any invalid read or write, use of uninitialised memory
# or definite leak fails it. The programs are run directly rather than
# through `ctest -T memcheck`, whose per-test TIMEOUT (set for the normal
# build) kills them: everything is ~30x slower under valgrind. Check's own
# per-test timeouts are stretched the same way; BERTH_JOBS (2) programs run
# at once. Each verdict line gives the program's time, its memcheck errors
# and its bytes definitely lost. .ci/run calls it after the normal build:
#   sh tests/reliability/valgrind.sh build
set -eu
build=${1:?usage: valgrind.sh <build-dir> [label]}
label=${2:-unit}
command -v valgrind >/dev/null || { echo "ERR valgrind not found: apt-get install -y valgrind" >&2; exit 1; }
export CK_TIMEOUT_MULTIPLIER="${CK_TIMEOUT_MULTIPLIER:-40}"
# Check's tests run in the memchecked process itself (no fork per test), so
# --child-silent-after-fork silences only the children the tests fork on
# purpose (a writer killed mid-batch), which exit without tearing down the
# parent's inherited journal and would report it as leaked.
export CK_FORK=no
if ctest --test-dir "$build" -N -L "$label" | grep -q 'Test *#'; then
  names=$(ctest --test-dir "$build" -N -L "$label" | sed -n 's/^ *Test *#[0-9]*: *//p')
else
  # Longest first, for the slots.
  names="replay journal core model resp"
fi
log=$build/valgrind
mkdir -p "$log"
jobs=${BERTH_JOBS:-2}

# A program's own figures from memcheck's closing summary in its log (its
# forked children are silent): errors, and bytes definitely lost (no leak
# summary at all means every block was freed).
figures() {
  errors=$(sed -n 's/^==[0-9]*== ERROR SUMMARY: \([0-9,]*\) error.*/\1/p' "$1" | tail -1)
  lost=$(sed -n 's/^==[0-9]*== *definitely lost: \([0-9,]*\) bytes.*/\1/p' "$1" | tail -1)
  echo "${errors:-?} errors, ${lost:-0} bytes definitely lost"
}

# One program under memcheck; its verdict goes to $log/<name>.verdict.
check_one() {
  name=$1
  cmd=$(ctest --test-dir "$build" -N -V -R "^$name\$" | sed -n 's/^.*Test command: //p' | head -1)
  if [ -z "$cmd" ]; then echo "ERR no test named $name in $build" >"$log/$name.verdict"; return; fi
  start=$(date +%s)
  # $cmd is unquoted on purpose: ctest prints the program and its arguments as words.
  if valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 \
       --child-silent-after-fork=yes \
       --log-file="$log/$name.log" $cmd >"$log/$name.out" 2>&1; then
    echo "valgrind $name: clean ($(( $(date +%s) - start )) s; $(figures "$log/$name.log"))" >"$log/$name.verdict"
  else
    echo "FAIL valgrind $name ($(( $(date +%s) - start )) s; $(figures "$log/$name.log")): see $log/$name.log and $log/$name.out" >"$log/$name.verdict"
  fi
}

# Programs whose verdict is written: a slot is free once its program's is.
finished() {
  n=0
  for v in "$log"/*.verdict; do [ -e "$v" ] && n=$((n + 1)); done
  echo "$n"
}

# Up to $jobs programs at a time (valgrind runs one thread each). A slot is
# refilled as soon as its program ends, so the longest program (first) runs
# beside all the others rather than holding back a batch of them.
rm -f "$log"/*.verdict
started=0
for name in $names; do
  while [ $((started - $(finished))) -ge "$jobs" ]; do sleep 1; done
  check_one "$name" &
  started=$((started + 1))
done
wait

failed=""
for name in $names; do
  cat "$log/$name.verdict"
  if ! grep -q ': clean' "$log/$name.verdict"; then
    failed="$failed $name"
    grep -v '^==[0-9]*== *$' "$log/$name.log" 2>/dev/null | head -60 >&2 || true
  fi
done
[ -z "$failed" ] || { echo "FAIL valgrind:$failed" >&2; exit 1; }
