#!/usr/bin/env bash
# bench_smoke.sh — bench_server against a real berthd, tiny: it adds the
# workers, runs short DEPLOY/RELEASE cycles unpipelined and 16 deep with no
# error reply, and stops each connection only after a RELEASE, so nothing is
# left deployed. Checks that the load generator works; asserts no figure.
. "$(dirname "$0")/lib.sh"
BENCH_SERVER=${BENCH_SERVER:?BENCH_SERVER must name the bench_server binary}
workers=400
start_berthd

out=$("$BENCH_SERVER" --port "$PORT" --mode add-workers --workers "$workers" --connections 4 --depth 32) \
    || fail "add-workers: $out"
expect_eq "$(head_seq)" "$workers" "add-workers adds each worker once"
expect_eq "$(r WORKER.GET w-$((workers - 1)) | map_field gpus)" 8 "the last worker"
# A rerun on the same data accepts EXISTS and adds nothing.
"$BENCH_SERVER" --port "$PORT" --mode add-workers --workers "$workers" --connections 4 >/dev/null \
    || fail "add-workers rerun"
expect_eq "$(head_seq)" "$((2 * workers))" "the rerun's WORKER.ADDs are EXISTS refusals"

for depth in 1 16; do
    out=$("$BENCH_SERVER" --port "$PORT" --connections 8 --threads 2 --depth "$depth" --workers "$workers" \
          --seconds 1 --warmup-seconds 0 --tag "d$depth") || fail "cycle depth $depth: $out"
    expect_match "$out" ' errors=0$' "cycle depth $depth has no error reply"
    n=$(sed -n 's/.* commands=\([0-9]*\) .*/\1/p' <<<"$out")
    [ "${n:-0}" -gt 0 ] || fail "cycle depth $depth counted no command: $out"
    expect_eq "$(r INSTANCE.LIST | sed '/^$/d' | wc -l)" 0 "nothing left deployed after depth $depth"
done
# The first cycle record: some connection c's first DEPLOY, on the first
# pair of c's own pool of workers/8.
first=$(r JOURNAL.RANGE "$((2 * workers + 1))" 1 | map_field command)
[[ "$first" =~ ^DEPLOY\ i-d1-([0-9]+)-0\ MODEL\ llama-70b\ BACKEND\ vllm\ ON\ w-([0-9]+)\ w-([0-9]+)$ ]] \
    || fail "the first cycle record is not a first DEPLOY: [$first]"
c=${BASH_REMATCH[1]}
expect_eq "${BASH_REMATCH[2]} ${BASH_REMATCH[3]}" "$((c * workers / 8)) $((c * workers / 8 + 1))" \
    "connection $c deploys on its own pool"
expect_verify_ok "after the cycles"
stop_berthd
note "ok"
