#!/usr/bin/env bash
# setup-debian.sh — install what berth needs to build, test and benchmark on
# Debian (bookworm or later), as root. Idempotent: apt-get skips what is there.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
packages=(
  build-essential cmake pkg-config            # toolchain
  liblmdb-dev libmsgpack-dev libev-dev libssl-dev   # berth's libraries
  check                                       # unit tests
  redis-tools netcat-openbsd libxml2-utils lmdb-utils   # integration tests: redis-cli, nc, xmllint
  python3 procps                              # integration tests: the job-child catchers, ps and pkill
  clang libclang-rt-14-dev valgrind           # fuzzing, sanitizers, memcheck
  libcurl4-openssl-dev libjansson-dev etcd-server etcd-client curl   # the etcd journal and its tests
)
if [ "${BERTH_SETUP_BENCH:-0}" = 1 ]; then
  packages+=(redis-server postgresql postgresql-contrib linux-perf)   # peers for tests/bench
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
fi
