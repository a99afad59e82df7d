# lib.sh — shared harness of the etcd journal's tests (issue 6; sourced).
#
# Owns the life of one test's world: a three-member etcd cluster (Debian's
# etcd-server) and three berthd replicas on --journal etcd, all on free
# loopback ports under one mktemp directory. The EXIT trap SIGKILLs every
# process it started and removes the directory, so a failed or interrupted
# test leaves nothing running. A failure prints the expectation, what came
# back and the tail of every berthd log.
#
# Environment: BERTHD (required), ETCD (default etcd), REDIS_CLI (default
# redis-cli), KEEP_TMP=1 keeps the directory.
set -u -o pipefail

BERTHD=${BERTHD:?BERTHD must name the berthd binary}
ETCD=${ETCD:-etcd}
REDIS_CLI=${REDIS_CLI:-redis-cli}
REPLICAS=${REPLICAS:-3}
MEMBERS=3
LEASE_TTL_S=${LEASE_TTL_S:-2}
WAIT_TRIES_MAX=400                 # x 25 ms: 10 s for a process to answer
PORT_TRIES_MAX=200
test_name=$(basename "$0" .sh)
CLUSTER=t$$

for tool in "$ETCD" "$REDIS_CLI" curl base64; do
    command -v "$tool" >/dev/null || { echo "$test_name: $tool missing (tools/setup-debian.sh installs it)"; exit 1; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/berth-$test_name.XXXXXX") || { echo "mktemp failed"; exit 1; }
declare -a ETCD_PID ETCD_CPORT ETCD_PPORT BPID BPORT
bg_pids=()
used_ports=" "
PAUSED=""                          # a replica under SIGSTOP: asked nothing

# berthds get SIGTERM first: an orderly stop (lease resigned, threads
# joined) is part of what is tested, and a sanitizer build reports leaks
# only at exit. A sanitizer report in any berthd log fails the test.
cleanup() {
    local pid i t bad=0
    for pid in "${BPID[@]+"${BPID[@]}"}"; do
        [ -n "$pid" ] || continue
        kill -CONT "$pid" 2>/dev/null
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${BPID[@]+"${BPID[@]}"}"; do
        [ -n "$pid" ] || continue
        for ((t = 0; t < 200; t++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.025; done
    done
    for ((i = 1; i <= REPLICAS; i++)); do
        if [ -f "$TMP/berthd$i.log" ] && grep -qE 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error:' "$TMP/berthd$i.log"; then
            echo "FAIL $test_name: sanitizer report in berthd$i's log:" >&2
            grep -m3 -E 'Sanitizer|runtime error:' -A5 "$TMP/berthd$i.log" >&2
            bad=1
        fi
    done
    for pid in "${bg_pids[@]+"${bg_pids[@]}"}" "${BPID[@]+"${BPID[@]}"}" "${ETCD_PID[@]+"${ETCD_PID[@]}"}"; do
        [ -n "$pid" ] || continue
        kill -CONT "$pid" 2>/dev/null
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [ "${KEEP_TMP:-0}" = 1 ]; then echo "$test_name: kept $TMP"; else rm -rf "$TMP"; fi
    [ "$bad" = 0 ] || exit 1
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'exit 1' USR1

fail() {
    echo "FAIL $test_name: $*" >&2
    local i
    for ((i = 1; i <= REPLICAS; i++)); do
        [ -f "$TMP/berthd$i.log" ] && { echo "--- berthd$i log (tail) ---" >&2; tail -n 12 "$TMP/berthd$i.log" >&2; }
    done
    [ "$BASHPID" = "$$" ] || kill -USR1 "$$"
    exit 1
}
note() { echo "$test_name: $*"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# A free loopback port below the ephemeral range, not handed out before.
pick_port() {
    local p i low=10000 high
    high=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    for ((i = 0; i < PORT_TRIES_MAX; i++)); do
        p=$(( low + (RANDOM * 32768 + RANDOM) % (high - low) ))
        if [[ "$used_ports" != *" $p "* ]] && port_free "$p"; then
            used_ports+="$p "
            echo "$p"
            return 0
        fi
    done
    fail "no free loopback port"
}

# ---- etcd ---------------------------------------------------------------

etcd_endpoints() {
    local i out=""
    for ((i = 1; i <= MEMBERS; i++)); do out+="${out:+,}http://127.0.0.1:${ETCD_CPORT[$i]}"; done
    echo "$out"
}
etcd_start_member() {   # i [new|existing]
    local i=$1 state=${2:-new} cluster="" k
    for ((k = 1; k <= MEMBERS; k++)); do cluster+="${cluster:+,}e$k=http://127.0.0.1:${ETCD_PPORT[$k]}"; done
    "$ETCD" --name "e$i" --data-dir "$TMP/etcd$i" \
        --listen-client-urls "http://127.0.0.1:${ETCD_CPORT[$i]}" \
        --advertise-client-urls "http://127.0.0.1:${ETCD_CPORT[$i]}" \
        --listen-peer-urls "http://127.0.0.1:${ETCD_PPORT[$i]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PPORT[$i]}" \
        --initial-cluster "$cluster" --initial-cluster-state "$state" \
        --initial-cluster-token "berth-$CLUSTER" \
        --heartbeat-interval 50 --election-timeout 500 >>"$TMP/etcd$i.log" 2>&1 &
    ETCD_PID[$i]=$!
}
etcd_healthy() {   # i: this member answers and the cluster has a leader
    curl -s -m 1 "http://127.0.0.1:${ETCD_CPORT[$1]}/health" 2>/dev/null | grep -q '"health":"true"'
}
start_etcd() {
    local i t
    for ((i = 1; i <= MEMBERS; i++)); do ETCD_CPORT[$i]=$(pick_port); ETCD_PPORT[$i]=$(pick_port); done
    for ((i = 1; i <= MEMBERS; i++)); do etcd_start_member "$i" new; done
    for ((i = 1; i <= MEMBERS; i++)); do
        for ((t = 0; t < WAIT_TRIES_MAX; t++)); do etcd_healthy "$i" && break; sleep 0.025; done
        etcd_healthy "$i" || fail "etcd member $i did not become healthy"
    done
}
kill_etcd_member() {   # i
    kill -9 "${ETCD_PID[$1]}" 2>/dev/null
    wait "${ETCD_PID[$1]}" 2>/dev/null
    ETCD_PID[$1]=""
}
restart_etcd_member() {   # i
    local t
    etcd_start_member "$1" existing
    for ((t = 0; t < WAIT_TRIES_MAX; t++)); do etcd_healthy "$1" && return 0; sleep 0.025; done
    fail "etcd member $1 did not rejoin"
}
# The member index of etcd's raft leader, asked of member $1 (default any alive).
etcd_leader_member() {
    local i k st leader id
    for ((i = 1; i <= MEMBERS; i++)); do
        [ -n "${ETCD_PID[$i]}" ] || continue
        leader=$(curl -s -m 2 -X POST "http://127.0.0.1:${ETCD_CPORT[$i]}/v3/maintenance/status" -d '{}' |
                 sed -n 's/.*"leader":"\([0-9]*\)".*/\1/p')
        [ -n "$leader" ] || continue
        for ((k = 1; k <= MEMBERS; k++)); do
            [ -n "${ETCD_PID[$k]}" ] || continue
            st=$(curl -s -m 2 -X POST "http://127.0.0.1:${ETCD_CPORT[$k]}/v3/maintenance/status" -d '{}')
            id=$(sed -n 's/.*"member_id":"\([0-9]*\)".*/\1/p' <<<"$st")
            [ "$id" = "$leader" ] && { echo "$k"; return 0; }
        done
    done
    return 1
}
# etcd_get KEY (under the cluster's prefix): the value, decoded.
etcd_get() {
    local k
    k=$(printf '%s' "/berth/$CLUSTER/$1" | base64 -w0)
    curl -s -m 2 -X POST "http://127.0.0.1:$(first_etcd_port)/v3/kv/range" -d "{\"key\":\"$k\"}" |
        sed -n 's/.*"value":"\([^"]*\)".*/\1/p' | base64 -d
}
first_etcd_port() {
    local i
    for ((i = 1; i <= MEMBERS; i++)); do [ -n "${ETCD_PID[$i]}" ] && { echo "${ETCD_CPORT[$i]}"; return; }; done
}
etcd_del() {   # KEY under the prefix
    local k
    k=$(printf '%s' "/berth/$CLUSTER/$1" | base64 -w0)
    curl -s -m 2 -X POST "http://127.0.0.1:$(first_etcd_port)/v3/kv/deleterange" -d "{\"key\":\"$k\"}" >/dev/null
}

# ---- berthd replicas -----------------------------------------------------

start_replica() {   # i [extra flags]
    local i=$1 t
    shift
    [ -n "${BPORT[$i]:-}" ] || BPORT[$i]=$(pick_port)
    "$BERTHD" --journal etcd --etcd-endpoints "$(etcd_endpoints)" --cluster "$CLUSTER" \
        --etcd-lease-ttl "$LEASE_TTL_S" --data "$TMP/b$i" --bind 127.0.0.1 --port "${BPORT[$i]}" \
        "$@" >>"$TMP/berthd$i.log" 2>&1 &
    BPID[$i]=$!
    for ((t = 0; t < WAIT_TRIES_MAX; t++)); do
        kill -0 "${BPID[$i]}" 2>/dev/null || fail "berthd $i exited on start"
        [ -n "$("$REDIS_CLI" -p "${BPORT[$i]}" PING 2>/dev/null)" ] && return 0
        sleep 0.025
    done
    fail "berthd $i did not answer PING"
}
start_replicas() {
    local i
    for ((i = 1; i <= REPLICAS; i++)); do start_replica "$i"; done
}
# live i: running and not paused.
live() { [ -n "${BPID[$1]:-}" ] && [ "$1" != "$PAUSED" ]; }
kill_replica() {   # i [signal]
    kill "-${2:-9}" "${BPID[$1]}" 2>/dev/null
    wait "${BPID[$1]}" 2>/dev/null
    BPID[$1]=""
}

rr() { local i=$1; shift; "$REDIS_CLI" -p "${BPORT[$i]}" "$@"; }
info_field() {   # i field: from INFO replication
    rr "$1" INFO replication | tr -d '\r' | sed -n "s/^$2://p"
}
# The index of the one leader; waits up to ms (default 10 s).
wait_leader() {
    local deadline=$(( $(now_ms) + ${1:-10000} )) i found
    while [ "$(now_ms)" -lt "$deadline" ]; do
        found=""
        for ((i = 1; i <= REPLICAS; i++)); do
            live "$i" || continue
            [ "$(info_field "$i" etcd_role)" = leader ] && found+="$i "
        done
        if [ "$(wc -w <<<"$found")" = 1 ]; then echo "${found% }"; return 0; fi
        sleep 0.05
    done
    fail "no single leader within ${1:-10000} ms (leaders: [$found])"
}
# Every live replica applied head seq; waits up to 10 s.
wait_applied() {   # seq
    local deadline=$(( $(now_ms) + 10000 )) i all
    while [ "$(now_ms)" -lt "$deadline" ]; do
        all=1
        for ((i = 1; i <= REPLICAS; i++)); do
            live "$i" || continue
            [ "$(rr "$i" JOURNAL.HEAD | awk 'w { print; exit } $0 == "seq" { w = 1 }')" = "$1" ] || all=0
        done
        [ "$all" = 1 ] && return 0
        sleep 0.05
    done
    fail "replicas did not all reach seq $1"
}
head_of() { rr "$1" JOURNAL.HEAD | awk 'w { print; exit } $0 == "seq" { w = 1 }'; }
# All live replicas answer the same to a query (prints it).
expect_same() {   # query words…
    local i first="" out
    for ((i = 1; i <= REPLICAS; i++)); do
        live "$i" || continue
        out=$(rr "$i" "$@")
        if [ -z "$first" ]; then first=$out; continue; fi
        [ "$out" = "$first" ] || fail "replica $i answers $* differently: [$out] vs [$first]"
    done
    [ -n "$first" ] || fail "no replica answered $*"
}
expect_verify_ok() {   # i
    local out
    out=$(rr "$1" JOURNAL.VERIFY)
    [ "$(awk 'w { print; exit } $0 == "ok" { w = 1 }' <<<"$out")" = 1 ] || fail "replica $1: JOURNAL.VERIFY failed: [$out]"
}
# Records of replica i as "seq<TAB>reqid<TAB>code", one a line.
journal_table() {   # i
    local i=$1 from=1 head
    head=$(head_of "$i")
    while [ "$from" -le "$head" ]; do
        rr "$i" JOURNAL.RANGE "$from" 1000 |
            awk 'k == "" { k = $0; next } { v[k] = $0; if (k == "hash") print v["seq"] "\t" v["reqid"] "\t" v["code"]; k = "" }'
        from=$((from + 1000))
    done
}

# ---- a write load through whoever leads ----------------------------------

# writer K N OUT: N WORKER.ADDs with REQIDs qK-1…qK-N, each retried (same
# REQID) until answered with a seq, following -READONLY redirects and trying
# the next replica when one does not answer. OUT gets "reqid seq ms port" per
# ack.
writer() {
    local k=$1 n=$2 out=$3 i reply at=1 port
    port=${BPORT[1]}
    for ((i = 1; i <= n; i++)); do
        while :; do
            reply=$(timeout 5 "$REDIS_CLI" -p "$port" WORKER.ADD "lw$k-$i" GPUS 1 VRAM 1000 REQID "q$k-$i" 2>&1)
            if [[ "$reply" =~ ^[0-9]+$ ]]; then
                echo "q$k-$i $reply $(now_ms) $port" >>"$out"
                break
            fi
            if [[ "$reply" =~ leader\ is\ [0-9.]+:([0-9]+) ]]; then
                port=${BASH_REMATCH[1]}
                continue
            fi
            at=$(( at % REPLICAS + 1 ))
            port=${BPORT[$at]}
            [[ "$reply" =~ READONLY|IOERR|refused|closed|reset|Could\ not|^$ ]] || echo "writer $k: unexpected [$reply]" >>"$out.err"
            sleep 0.05
        done
    done
}
# Every acknowledged REQID is in replica i's journal at its seq with OK, and
# no REQID appears twice.
check_acks() {   # i files…
    local i=$1
    shift
    journal_table "$i" >"$TMP/table$i"
    local dups
    dups=$(awk -F'\t' '$2 != "" { c[$2]++ } END { for (r in c) if (c[r] > 1) print r }' "$TMP/table$i")
    [ -z "$dups" ] || fail "REQIDs applied more than once: $dups"
    local missing
    missing=$(cat "$@" |
              awk -v t="$TMP/table$i" 'BEGIN { FS = "\t"; while ((getline l < t) > 0) { split(l, f, "\t"); at[f[2]] = f[1]; code[f[2]] = f[3] } FS = " " }
                   { if (at[$1] != $2 || code[$1] != "OK") print $1 " acked at " $2 " but journal has [" at[$1] " " code[$1] "]" }')
    [ -z "$missing" ] || fail "acknowledged writes lost or moved: $missing"
}
