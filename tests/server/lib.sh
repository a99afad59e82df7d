# lib.sh — shared harness of berthd's integration tests (sourced, not run).
#
# Owns the life of the berthd under test: every test gets its own data
# directory under a fresh mktemp directory and its own free loopback port,
# and the EXIT trap kills whatever berthd it started and removes the
# directory, so a failed or interrupted test leaves nothing behind. A failure
# prints what was expected, what came back, and the tail of berthd's log.
#
# Environment: BERTHD (path to berthd, required), REDIS_CLI (default redis-cli),
# KEEP_TMP=1 keeps the directory for a post-mortem.
set -u -o pipefail

BERTHD=${BERTHD:?BERTHD must name the berthd binary}
REDIS_CLI=${REDIS_CLI:-redis-cli}
START_WAIT_TRIES_MAX=400            # 400 x 25 ms: 10 s for berthd to answer PING
PORT_TRIES_MAX=200
START_ATTEMPTS_MAX=5               # fresh ports tried when one is taken at bind
test_name=$(basename "$0" .sh)

command -v "$REDIS_CLI" >/dev/null || { echo "$test_name: $REDIS_CLI missing (apt-get install -y redis-tools)"; exit 1; }
command -v nc >/dev/null || { echo "$test_name: nc missing (apt-get install -y netcat-openbsd)"; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/berth-$test_name.XXXXXX") || { echo "mktemp failed"; exit 1; }
DATA="$TMP/data"
LOG="$TMP/berthd.log"
PORT=""
BERTHD_PID=""
bg_pids=()

cleanup() {
    local pid
    for pid in "${bg_pids[@]+"${bg_pids[@]}"}"; do kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
    if [ -n "$BERTHD_PID" ]; then kill -9 "$BERTHD_PID" 2>/dev/null; wait "$BERTHD_PID" 2>/dev/null; fi
    if [ "${KEEP_TMP:-0}" = 1 ]; then echo "$test_name: kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# fail may run inside $(…): it signals the test's own shell, which then exits.
trap 'exit 1' USR1

fail() {
    echo "FAIL $test_name: $*" >&2
    if [ -f "$LOG" ]; then echo "--- berthd log (tail) ---" >&2; tail -n 20 "$LOG" >&2; fi
    [ "$BASHPID" = "$$" ] || kill -USR1 "$$"
    exit 1
}
note() { echo "$test_name: $*"; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Ports come from below the kernel's ephemeral range, so no outgoing
# connection of another process can be holding the one picked.
pick_port() {
    local p i low=10000 high
    high=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    [ "$high" -gt $((low + 1000)) ] || { low=1024; }
    for ((i = 0; i < PORT_TRIES_MAX; i++)); do
        p=$(( low + (RANDOM * 32768 + RANDOM) % (high - low) ))
        if port_free "$p"; then PORT=$p; return 0; fi
    done
    fail "no free loopback port"
}

# port_is_ours: the socket listening on 127.0.0.1:$PORT is one of
# $BERTHD_PID's descriptors (/proc/net/tcp names its inode). True where
# /proc/net/tcp is missing: nothing to check against.
port_is_ours() {
    [ -r /proc/net/tcp ] || return 0
    local hexport inode
    hexport=$(printf '%04X' "$PORT")
    inode=$(awk -v p=":$hexport" '$4 == "0A" && substr($2, length($2) - 4) == p { print $10; exit }' /proc/net/tcp)
    [ -n "$inode" ] && ls -l "/proc/$BERTHD_PID/fd" 2>/dev/null | grep -q "socket:\[$inode\]"
}

# start_berthd [extra flags…]: start on $DATA and a free port (the same port
# again on a restart, so clients need not be told), wait for PING. A port
# taken between the pick and the bind is picked again (first start only).
# BERTHD_FLAGS (words, optional) go before the extra flags, so that ctest
# runs one script again on another road (server.cmake's variants) and a
# flag the script gives itself still wins.
start_berthd() {
    local attempt
    for ((attempt = 0; attempt < START_ATTEMPTS_MAX; attempt++)); do
        start_berthd_once "$@" && return 0
        grep -q 'Address already in use' "$LOG" || break
        [ -z "$RESTART_PORT" ] || break
        PORT=""
    done
    fail "berthd exited on start"
}
RESTART_PORT=""
start_berthd_once() {
    [ -z "$BERTHD_PID" ] || fail "start_berthd: berthd already running"
    [ -n "$PORT" ] || pick_port
    : >>"$LOG"
    local log_lines; log_lines=$(wc -l <"$LOG")
    # shellcheck disable=SC2086 # BERTHD_FLAGS is words
    "$BERTHD" --data "$DATA" --bind 127.0.0.1 --port "$PORT" ${BERTHD_FLAGS:-} "$@" >>"$LOG" 2>&1 &
    BERTHD_PID=$!
    local i reply
    for ((i = 0; i < START_WAIT_TRIES_MAX; i++)); do
        if ! kill -0 "$BERTHD_PID" 2>/dev/null; then
            wait "$BERTHD_PID" 2>/dev/null
            BERTHD_PID=""
            tail -n +"$((log_lines + 1))" "$LOG" | grep -q 'Address already in use' || fail "berthd exited on start"
            return 1
        fi
        # Any reply counts (NOAUTH too), if it is ours that listens: another
        # test's berthd that took the port while this one was stopped would
        # answer too (one CI run then tested a stranger with no records).
        reply=$("$REDIS_CLI" -p "$PORT" PING 2>/dev/null)
        if [ -n "$reply" ] && port_is_ours; then RESTART_PORT=$PORT; return 0; fi
        sleep 0.025
    done
    fail "berthd did not answer PING on port $PORT within 10 s"
}
# berthd_gone_within STEPS WHY: berthd must exit by itself within STEPS
# steps of 50 ms (a fault it met stops it); otherwise fail with WHY. The
# caller reaps it (its exit status may matter).
berthd_gone_within() {
    local i
    for ((i = 0; i < $1; i++)); do
        kill -0 "$BERTHD_PID" 2>/dev/null || return 0
        sleep 0.05
    done
    kill -0 "$BERTHD_PID" 2>/dev/null && fail "$2"
    return 0
}
# stop_berthd [SIGNAL]: SIGTERM (or SIGINT), and berthd must exit 0 on its own.
stop_berthd() {
    [ -n "$BERTHD_PID" ] || fail "stop_berthd: no berthd running"
    kill -"${1:-TERM}" "$BERTHD_PID"
    local rc=0
    wait "$BERTHD_PID" || rc=$?
    BERTHD_PID=""
    [ "$rc" -eq 0 ] || fail "berthd exited $rc after SIGTERM"
    sanitizer_clean
}
# In a BERTH_SANITIZE build a report lands in the log, whatever the exit.
sanitizer_clean() {
    ! grep -qE 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error:' "$LOG" \
        || fail "sanitizer report in berthd's log: $(grep -m1 -E 'Sanitizer|runtime error:' "$LOG")"
}
kill9_berthd() {
    [ -n "$BERTHD_PID" ] || fail "kill9_berthd: no berthd running"
    kill -9 "$BERTHD_PID"
    wait "$BERTHD_PID" 2>/dev/null
    BERTHD_PID=""
    sanitizer_clean
}

# r ARGS…: one command through redis-cli (raw output when not a terminal).
r() { "$REDIS_CLI" -p "$PORT" "$@"; }
# r_stdin: commands one a line on stdin, one connection; redis-cli prints an
# empty line after each error reply, so those are dropped (no command here
# answers an empty string).
r_stdin() { "$REDIS_CLI" -p "$PORT" "$@" | sed '/^$/d'; }

expect_eq() {   # actual expected what
    [ "$1" = "$2" ] || fail "$3: expected [$2], got [$1]"
}
expect_match() {   # actual extended-regex what
    [[ "$1" =~ $2 ]] || fail "$3: expected to match /$2/, got [$1]"
}
expect_int() {   # actual what — a mutating command's success is its seq
    [[ "$1" =~ ^[0-9]+$ ]] || fail "$2: expected a seq (integer), got [$1]"
}

# info_field FIELD: FIELD's value in INFO journal.
info_field() { r INFO journal | tr -d '\r' | sed -n "s/^$1://p"; }
# stat_field NAME: the same from INFO stats.
stat_field() { r INFO stats | tr -d '\r' | sed -n "s/^$1://p"; }
# thread_tid NAME: the id of berthd's thread called NAME (its comm); fails
# when there is none.
thread_tid() {
    local t
    for t in /proc/"$BERTHD_PID"/task/*; do
        [ "$(cat "$t/comm" 2>/dev/null)" = "$1" ] && { echo "${t##*/}"; return 0; }
    done
    fail "no $1 thread"
}

# map_field FIELD: the value after FIELD in a flat RESP2 field/value listing
# (redis-cli prints one element per line).
map_field() {
    awk -v f="$1" 'want { print; exit } $0 == f { want = 1 }'
}
# The head seq: JOURNAL.HEAD is {seq, hash}.
head_seq() {
    local out
    out=$(r JOURNAL.HEAD | map_field seq)
    [[ "$out" =~ ^[0-9]+$ ]] || fail "JOURNAL.HEAD: expected {seq, hash}, got [$(r JOURNAL.HEAD)]"
    echo "$out"
}
# JOURNAL.VERIFY is {ok, records, first_bad_seq, what}; ok is :1 under RESP2.
expect_verify_ok() {   # what
    local out
    out=$(r JOURNAL.VERIFY)
    [ "$(map_field ok <<<"$out")" = 1 ] || fail "$1: JOURNAL.VERIFY failed: [$out]"
    [ "$(map_field first_bad_seq <<<"$out")" = 0 ] || fail "$1: JOURNAL.VERIFY names a bad seq: [$out]"
}

# nc_send TEXT: write raw bytes, read until berthd closes (the text should end
# with QUIT); prints what came back with CRs removed.
nc_send() {
    printf '%b' "$1" | nc -w 5 127.0.0.1 "$PORT" | tr -d '\r'
}
nc_file() {   # FILE: the same with the bytes of a file
    nc -w 5 127.0.0.1 "$PORT" <"$1" | tr -d '\r'
}

# dump_journal: every record as "seq<TAB>code<TAB>command", in seq order.
dump_journal() {
    local head from count
    head=$(head_seq)
    for ((from = 1; from <= head; from += 1000)); do
        count=$(( head - from + 1 < 1000 ? head - from + 1 : 1000 ))
        r JOURNAL.RANGE "$from" "$count"
    done | awk '
        want == "seq" { seq = $0; want = "" ; next }
        want == "code" { code = $0; want = ""; next }
        want == "command" { cmd = $0; want = ""; next }
        $0 == "seq" { if (seq != "") print seq "\t" code "\t" cmd; seq = ""; want = "seq"; next }
        $0 == "code" || $0 == "outcome" { want = "code"; next }
        $0 == "command" { want = "command"; next }
        END { if (seq != "") print seq "\t" code "\t" cmd }'
}

# acked_check LABEL JOURNAL ACKED: every line of ACKED ("reply<TAB>command",
# the reply as redis-cli printed it) is in JOURNAL (dump_journal's lines): a
# seq with its command and outcome OK, a refusal with its code; and no
# command was applied twice. Prints a summary line, or the problems and
# exits non-zero.
acked_check() {
    awk -F '\t' -v label="$1" '
        FILENAME == ARGV[1] { code[$1] = $2; cmd[$1] = $3; seen[$3]++; code_of[$3] = $2; next }
        $1 ~ /^[0-9]+$/ {
            if (!($1 in cmd)) { print "acknowledged seq " $1 " (" $2 ") missing"; bad++; next }
            if (cmd[$1] != $2) { print "seq " $1 " acknowledged for [" $2 "] holds [" cmd[$1] "]"; bad++ }
            if (code[$1] != "OK") { print "seq " $1 " acknowledged as success holds outcome " code[$1]; bad++ }
            ok++; next }
        { split($1, w, " ")
          if (!($2 in seen)) { print "acknowledged refusal [" $1 "] for [" $2 "] missing"; bad++ }
          else if (code_of[$2] != w[1]) { print "refusal [" $1 "] for [" $2 "] journaled as " code_of[$2]; bad++ }
          refused++ }
        END {
            for (c in seen) if (seen[c] > 1) { print "applied " seen[c] " times: " c; bad++ }
            printf "%s: %d acknowledged seqs, %d acknowledged refusals checked\n", label, ok, refused
            exit bad > 0 }' "$2" "$3"
}

# acked_pairs ROUND SOURCE...: what berthd acknowledged, as acked_check reads
# it. Line k of $TMP/ack.ROUND.SOURCE is the reply to line k of
# $TMP/in.ROUND.SOURCE; a command without a reply was in flight.
acked_pairs() {
    local round=$1 s
    shift
    for s in "$@"; do
        paste -d '\t' "$TMP/ack.$round.$s" \
            <(head -n "$(wc -l <"$TMP/ack.$round.$s")" "$TMP/in.$round.$s" | sed 's/ REQID .*//')
    done
}

# watched_durable LABEL JOURNAL WATCHED: every record a WATCH client saw
# ("seq<TAB>command") is in JOURNAL with that command; fails the test when
# none were seen or one is missing. Sets watched to how many were seen (not
# printed: fail must not run in a command substitution's subshell).
watched_durable() {
    watched=$(grep -c '' "$3")
    [ "$watched" -gt 0 ] || fail "$1: the watcher saw no record"
    awk -F '\t' 'FILENAME == ARGV[1] { cmd[$1] = $3; next }
        !($1 in cmd) || cmd[$1] != $2 { print "watched seq " $1 " [" $2 "] not durable: [" cmd[$1] "]"; bad = 1 }
        END { exit bad }' "$2" "$3" >"$3.check" \
        || fail "$1: $(head -n 3 "$3.check")"
}

# watch_start ROUND: a raw WATCH 0 client (nc, RESP2) writing to
# $TMP/watch.ROUND; sets watch_pid and watch_fd for watch_end.
watch_start() {
    mkfifo "$TMP/watch.$1.in"
    nc 127.0.0.1 "$PORT" <"$TMP/watch.$1.in" >"$TMP/watch.$1" &
    watch_pid=$!; bg_pids+=($watch_pid)
    exec {watch_fd}>"$TMP/watch.$1.in"
    printf 'WATCH 0\r\n' >&"$watch_fd"
}

# watch_end ROUND: stop the watcher and write the records it saw, as
# "seq<TAB>command", to $TMP/watched.ROUND (watched_durable's input).
watch_end() {
    exec {watch_fd}>&-
    kill "$watch_pid" 2>/dev/null; wait "$watch_pid" 2>/dev/null
    tr -d '\r' <"$TMP/watch.$1" | awk '
        want == "seq" { sub(/^:/, ""); seq = $0; want = ""; next }
        want == "command" { if ($0 ~ /^\$/) next; print seq "\t" $0; want = ""; next }
        $0 == "seq" { want = "seq" } $0 == "command" { want = "command" }' >"$TMP/watched.$1"
}

# shim_preload: SHIM (disk_shim.so, from $BERTH_DISK_SHIM) and PRELOAD, the
# LD_PRELOAD list that loads it; a sanitizer build's runtime must load first.
shim_preload() {
    SHIM=${BERTH_DISK_SHIM:?BERTH_DISK_SHIM must name disk_shim.so}
    PRELOAD="$SHIM"
    local runtime
    runtime=$(ldd "$BERTHD" | awk '/libasan\.so/ { print $3; exit }')
    [ -n "$runtime" ] && PRELOAD="$runtime:$SHIM"
    return 0
}

# shim_arm NAME ERRNO: arm $CTL/NAME (fail, fail.data, fail.log) with an
# errno, atomically: the shim reads an empty file as EIO, and `echo N >FILE`
# leaves it empty for a moment, long enough for a sync to read it so.
shim_arm() {
    printf '%s\n' "$2" >"$CTL/.arm.tmp" && mv "$CTL/.arm.tmp" "$CTL/$1" || fail "cannot arm $CTL/$1"
}
# shim_ctl_setup: shim_preload, plus CTL, the shim's control directory
# (BERTH_SHIM_CTL: slow or fail the sync a test chooses; the shim logs
# each data-file sync to $CTL/syncs), and start_shimmed (start_berthd
# under the shim).
shim_ctl_setup() {
    shim_preload
    CTL="$TMP/ctl"
    mkdir -p "$CTL"
    start_shimmed() {
        BERTH_SHIM_CTL="$CTL" BERTH_SHIM_DATA="$DATA/data.mdb" BERTH_SHIM_DISK="$TMP/disk.mdb" \
            LD_PRELOAD="$PRELOAD" start_berthd "$@"
    }
}
