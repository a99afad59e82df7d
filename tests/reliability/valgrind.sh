#!/bin/sh
# tests/reliability/valgrind.sh — the Check unit tests under valgrind memcheck.
#
# Runs the tests labelled `unit` (or, while none carry the label, the unit
# test programs by name) through ctest's memcheck with valgrind; any invalid
# read or write, use of uninitialised memory or definite leak makes valgrind
# exit 99 and the test fail. Check's per-test timeouts are stretched, since
# everything runs ~30x slower under valgrind. .ci/run calls it after the
# normal build:
#   sh tests/reliability/valgrind.sh build
set -eu
build=${1:?usage: valgrind.sh <build-dir> [label]}
label=${2:-unit}
valgrind=$(command -v valgrind) || { echo "ERR valgrind not found: apt-get install -y valgrind" >&2; exit 1; }
export CK_TIMEOUT_MULTIPLIER="${CK_TIMEOUT_MULTIPLIER:-40}"
if ctest --test-dir "$build" -N -L "$label" | grep -q 'Test *#'; then
  set -- -L "$label"
else
  set -- -R '^(resp|core|model|journal|replay)$'
fi
ctest --test-dir "$build" "$@" -T memcheck --timeout 3600 --output-on-failure \
  --overwrite MemoryCheckCommand="$valgrind" \
  --overwrite MemoryCheckCommandOptions="--leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99"
