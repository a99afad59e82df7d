#!/usr/bin/env bash
# queries.sh — the queries' exact answers: WORKER.GET / INSTANCE.GET fields,
# the filters of WORKER.LIST and INSTANCE.LIST alone and combined, listings
# and DIGEST following every change (the state keeps them between changes),
# POLICY.GET, every listing sorted by name in byte order whatever the order
# of creation, HISTORY's
# from/count, JOURNAL.RANGE's bounds, and AT over each query.
. "$(dirname "$0")/lib.sh"
start_berthd

ok() { local out; out=$(r "$@"); expect_int "$out" "$*"; echo "$out"; }
flat() { tr '\n' ' ' | sed 's/ $//'; }   # redis-cli's lines as one line

# Created out of order on purpose: listings must come back sorted.
ok WORKER.ADD zeta GPUS 4 VRAM 1000 LABEL b=2 LABEL a=1 >/dev/null
ok WORKER.ADD Alpha GPUS 2 >/dev/null
ok WORKER.ADD alpha GPUS 2 >/dev/null
ok WORKER.ADD mid GPUS 1 >/dev/null
ok WORKER.CORDON mid >/dev/null
d_seq=$(ok DEPLOY d MODEL m BACKEND vllm ON zeta:0 alpha)
ok DEPLOY v MODEL m2 BACKEND sglang VRAM 300 ON zeta:1 >/dev/null
ok DEPLOY c MODEL m2 BACKEND sglang VRAM 200 ON zeta:1 >/dev/null
ok DEPLOY b MODEL m BACKEND sglang ON Alpha:1 >/dev/null
at_seq=$(head_seq)

expect_eq "$(r WORKER.GET zeta | flat)" \
  "name zeta gpus 4 vram_mib 1000 state active added_seq 1 labels a 1 b 2 instances d v c exclusive_holder d free_gpus 2 3 gpu_claimed_mib 0 500 0 0" \
  "WORKER.GET zeta (labels sorted, instances in deploy order, claims summed)"
expect_eq "$(r WORKER.GET mid | flat)" \
  "name mid gpus 1 vram_mib 0 state cordoned added_seq 4 labels  instances  exclusive_holder  free_gpus 0 gpu_claimed_mib 0" \
  "WORKER.GET of a cordoned idle worker (RESP2 null holder prints empty)"
out=$(nc_send 'HELLO 3\r\nWORKER.GET mid\r\nINSTANCE.GET v\r\nQUIT\r\n')
grep -A1 -x 'exclusive_holder' <<<"$out" | grep -q -x '_' || fail "RESP3 null exclusive_holder is '_': [$out]"
grep -A1 -x 'distributed' <<<"$out" | grep -q -x '#f' || fail "RESP3 boolean distributed is '#f': [$out]"
expect_eq "$(r INSTANCE.GET d | sed '/^deploy_time$/{n;d}' | flat)" \
  "name d model m backend vllm vram_mib 0 distributed 1 exclusive 1 deploy_seq $d_seq deploy_time placement worker zeta gpus 0 worker alpha gpus 0 1" \
  "INSTANCE.GET d (main worker first)"
t=$(r INSTANCE.GET d | map_field deploy_time)
rec_t=$(r JOURNAL.RANGE "$d_seq" 1 | map_field time)
expect_eq "$t" "$rec_t" "deploy_time is the DEPLOY record's time"

expect_eq "$(r WORKER.LIST | flat)" "Alpha alpha mid zeta" "WORKER.LIST in byte order"
expect_eq "$(r WORKER.LIST STATE cordoned | flat)" "mid" "WORKER.LIST STATE cordoned"
expect_eq "$(r WORKER.LIST STATE active | flat)" "Alpha alpha zeta" "WORKER.LIST STATE active"
expect_eq "$(r WORKER.LIST FREE | flat)" "Alpha mid zeta" "WORKER.LIST FREE (a free GPU each)"
expect_eq "$(r WORKER.LIST STATE active FREE | flat)" "Alpha zeta" "WORKER.LIST STATE active FREE"
expect_eq "$(r INSTANCE.LIST | flat)" "b c d v" "INSTANCE.LIST sorted"
expect_eq "$(r INSTANCE.LIST WORKER zeta | flat)" "c d v" "INSTANCE.LIST WORKER zeta"
expect_eq "$(r INSTANCE.LIST MODEL m2 | flat)" "c v" "INSTANCE.LIST MODEL m2"
expect_eq "$(r INSTANCE.LIST BACKEND sglang WORKER Alpha | flat)" "b" "INSTANCE.LIST BACKEND sglang WORKER Alpha"
expect_eq "$(r INSTANCE.LIST WORKER nowhere | flat)" "" "INSTANCE.LIST of an unknown worker"
# Filters run before the sort and the state keeps its sorted listings between
# changes: the answers stay exact, whichever filters combine, and follow
# every change.
expect_eq "$(r INSTANCE.LIST MODEL nosuch | flat)" "" "INSTANCE.LIST MODEL matching nothing"
expect_eq "$(r INSTANCE.LIST MODEL m | flat)" "b d" "INSTANCE.LIST MODEL m"
expect_eq "$(r INSTANCE.LIST BACKEND sglang | flat)" "b c v" "INSTANCE.LIST BACKEND sglang"
expect_eq "$(r INSTANCE.LIST MODEL m BACKEND sglang | flat)" "b" "INSTANCE.LIST MODEL m BACKEND sglang"
expect_eq "$(r INSTANCE.LIST WORKER zeta MODEL m2 | flat)" "c v" "INSTANCE.LIST WORKER zeta MODEL m2"
expect_eq "$(r INSTANCE.LIST BACKEND vllm WORKER zeta | flat)" "d" "INSTANCE.LIST BACKEND vllm WORKER zeta"
expect_eq "$(r INSTANCE.LIST WORKER alpha MODEL m2 | flat)" "" "INSTANCE.LIST WORKER alpha MODEL m2"
expect_eq "$(r INSTANCE.LIST WORKER mid | flat)" "" "INSTANCE.LIST of an idle worker"
expect_eq "$(r WORKER.LIST STATE cordoned FREE | flat)" "mid" "WORKER.LIST STATE cordoned FREE"
# A filter given twice is refused, as INSTANCE.LIST refuses one (not the last one kept).
expect_match "$(r WORKER.LIST STATE active STATE cordoned)" '^ERR WORKER.LIST takes .*each once' "WORKER.LIST with STATE twice"
expect_match "$(r WORKER.LIST FREE FREE)" '^ERR WORKER.LIST takes .*each once' "WORKER.LIST with FREE twice"
expect_match "$(r INSTANCE.LIST MODEL m MODEL m2)" '^ERR INSTANCE.LIST takes .*each once' "INSTANCE.LIST with MODEL twice"
digest1=$(r DIGEST)
expect_eq "$(r DIGEST)" "$digest1" "DIGEST twice on an unchanged state"
ok WORKER.ADD beta GPUS 1 >/dev/null
ok DEPLOY a0 MODEL m BACKEND sglang ON beta >/dev/null
expect_eq "$(r WORKER.LIST | flat)" "Alpha alpha beta mid zeta" "WORKER.LIST after a WORKER.ADD"
expect_eq "$(r INSTANCE.LIST | flat)" "a0 b c d v" "INSTANCE.LIST after a DEPLOY"
expect_eq "$(r INSTANCE.LIST MODEL m | flat)" "a0 b d" "INSTANCE.LIST MODEL m after a DEPLOY"
digest2=$(r DIGEST)
[ "$digest2" != "$digest1" ] || fail "DIGEST after two writes still $digest1"
ok RELEASE a0 >/dev/null
ok WORKER.REMOVE beta >/dev/null
expect_eq "$(r WORKER.LIST | flat)" "Alpha alpha mid zeta" "WORKER.LIST after a WORKER.REMOVE"
expect_eq "$(r INSTANCE.LIST | flat)" "b c d v" "INSTANCE.LIST after a RELEASE"
expect_eq "$(r INSTANCE.LIST WORKER beta | flat)" "" "INSTANCE.LIST of a removed worker"
digest3=$(r DIGEST)
[ "$digest3" != "$digest2" ] && [ "$digest3" != "$digest1" ] || fail "DIGEST after the release and remove: $digest3"
expect_eq "$(r POLICY.GET | flat)" "exclusive vllm" "POLICY.GET at genesis"
ok POLICY.SET EXCLUSIVE vllm,sglang,aaa >/dev/null
expect_eq "$(r POLICY.GET | flat)" "exclusive aaa sglang vllm" "POLICY.GET sorted"
expect_match "$(r WORKER.GET nowhere)" '^NOWORKER ' "WORKER.GET of an unknown worker"
expect_match "$(r INSTANCE.GET nothing)" '^NOINSTANCE ' "INSTANCE.GET of an unknown instance"
expect_match "$(r WORKER.LIST STATE sleeping)" '^ERR ' "WORKER.LIST with a bad state"

# HISTORY: records that touched zeta, from/count.
all=$(r HISTORY WORKER zeta | grep -A1 -x seq | grep -v -x -- '--' | grep -v -x seq | flat)
expect_eq "$all" "1 $d_seq $((d_seq + 1)) $((d_seq + 2))" "HISTORY WORKER zeta seqs"
part=$(r HISTORY WORKER zeta "$d_seq" 2 | grep -A1 -x seq | grep -v -x -- '--' | grep -v -x seq | flat)
expect_eq "$part" "$d_seq $((d_seq + 1))" "HISTORY WORKER zeta from $d_seq count 2"
expect_eq "$(r HISTORY INSTANCE c | map_field seq)" "$((d_seq + 2))" "HISTORY INSTANCE c"
expect_eq "$(r HISTORY WORKER nowhere | flat)" "" "HISTORY of a name never seen"
# A count past 1000 (or 0) is refused, as docs/server.md says, not capped.
expect_eq "$(r HISTORY WORKER zeta 1 1001)" "ERR count must be 1 to 1000" "HISTORY count 1001"
expect_eq "$(r HISTORY WORKER zeta 1 0)" "ERR count must be 1 to 1000" "HISTORY count 0"

# JOURNAL.RANGE bounds.
expect_match "$(r JOURNAL.RANGE 1 1001)" '^ERR ' "JOURNAL.RANGE count over 1000"
expect_match "$(r JOURNAL.RANGE 1 0)" '^ERR ' "JOURNAL.RANGE count 0"
h=$(head_seq)
expect_eq "$(r JOURNAL.RANGE "$((h - 1))" 5 | grep -c -x seq)" 2 "JOURNAL.RANGE stops at the head"
expect_eq "$(r JOURNAL.RANGE "$((h + 1))" 5 | flat)" "" "JOURNAL.RANGE past the head is empty"
# Chain: each record's prev_hash is the hash of the record before it (64
# zeros for seq 1), every record says its format version; JOURNAL.HEAD's
# hash is the last.
chain=$(r JOURNAL.RANGE 1 1000 | awk '
    want == "hash" { hash = $0; want = ""; next }
    want == "prev_hash" { if ($0 != prev) bad = bad " " n + 1; prev = hash; n++; want = ""; next }
    want == "version" { if ($0 != 2) bad = bad " v" n; want = ""; next }
    $0 == "hash" || $0 == "prev_hash" || $0 == "version" { want = $0 }
    BEGIN { prev = sprintf("%064d", 0) }
    END { print n " records, bad links:" bad }')
expect_eq "$chain" "$h records, bad links:" "JOURNAL.RANGE's prev_hash chain and versions"
last_hash=$(r JOURNAL.RANGE "$h" 1 | map_field hash)
expect_eq "$(r JOURNAL.HEAD | map_field hash)" "$last_hash" "JOURNAL.HEAD hash"
expect_match "$last_hash" '^[0-9a-f]{64}$' "hash is 64 hex characters"

# AT: every query as of a past seq, after later changes.
before_list=$(r INSTANCE.LIST | flat)
before_zeta=$(r AT "$at_seq" WORKER.GET zeta | flat)
ok RELEASE d >/dev/null
ok RELEASE v >/dev/null
ok WORKER.REMOVE mid >/dev/null
expect_eq "$(r AT "$at_seq" INSTANCE.LIST | flat)" "$before_list" "AT INSTANCE.LIST"
expect_eq "$(r AT "$at_seq" WORKER.GET zeta | flat)" "$before_zeta" "AT WORKER.GET zeta"
expect_eq "$(r AT "$at_seq" WORKER.LIST STATE cordoned | flat)" "mid" "AT WORKER.LIST STATE cordoned"
expect_eq "$(r AT "$at_seq" POLICY.GET | flat)" "exclusive vllm" "AT POLICY.GET"
expect_eq "$(r AT "$d_seq" INSTANCE.GET d | map_field deploy_seq)" "$d_seq" "AT INSTANCE.GET at its own DEPLOY"
expect_match "$(r AT "$((d_seq - 1))" INSTANCE.GET d)" '^NOINSTANCE ' "AT before the DEPLOY"
expect_eq "$(r WORKER.LIST | flat)" "Alpha alpha zeta" "now: mid removed"
expect_match "$(r AT 1 WORKER.ADD x GPUS 1)" '^ERR ' "AT refuses a mutating command"
stop_berthd

# INFO is never cut: a --data path of ~3,800 bytes and a full policy (32
# backends of 128 bytes) make it past 8 KiB, and every section, down to the
# last line of replication, still comes back.
long=$TMP
for ((i = 0; i < 19; i++)); do long=$long/$(printf 'd%.0s' {1..200}); done
mkdir -p "$long" || fail "mkdir of a long path"
DATA=$long/data
start_berthd
backends=""
for ((i = 10; i < 42; i++)); do backends=$backends${backends:+,}b$i$(printf 'x%.0s' {1..125}); done
expect_int "$(r POLICY.SET EXCLUSIVE "$backends")" "POLICY.SET of 32 backends of 128 bytes"
info=$(r INFO | tr -d '\r')
[ "${#info}" -gt 8192 ] || fail "INFO should pass 8 KiB here, got ${#info} bytes"
expect_eq "$(sed -n 's/^data_dir://p' <<<"$info")" "$DATA" "INFO data_dir, whole"
expect_eq "$(sed -n 's/^exclusive_backends://p' <<<"$info")" "$backends" "INFO exclusive_backends, whole"
expect_eq "$(tail -n 1 <<<"$info")" "connected_slaves:0" "INFO's last line"
for section in Server Clients Journal State Stats Latency Replication; do
    grep -q "^# $section\$" <<<"$info" || fail "INFO lacks # $section"
done
stop_berthd
note ok
