#!/usr/bin/env bash
# auth.sh — AUTH with the admin password allows everything; the read-only
# password allows queries, audit and WATCH and gets NOPERM for a mutating
# command; no AUTH gets NOAUTH; a wrong password is refused; a non-loopback
# bind without a password is refused at start; before AUTH the parser's
# limits are tight (an oversized command is refused and the connection
# closed; refusals not read stop being served at 16 KiB), yet the longest
# password fits AUTH and HELLO; the one user is "default" (either password),
# any other user name is WRONGPASS; --auth-timeout closes a connection that
# never logs in.
. "$(dirname "$0")/lib.sh"

# Refused at start: listening beyond loopback with no password.
pick_port
rc=0
timeout 10 "$BERTHD" --data "$TMP/open" --bind 0.0.0.0 --port "$PORT" >"$TMP/open.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "berthd must refuse --bind 0.0.0.0 without a password (rc $rc)"
grep -qi 'pass' "$TMP/open.log" || fail "the refusal should say a password is needed: $(cat "$TMP/open.log")"

printf 'ro-secret\n' >"$TMP/ro.pass"
# A read-only password alone is a usage error (exit 2) that says why.
rc=0; out=$("$BERTHD" --data "$TMP/ro-only" --port "$PORT" --readonly-password-file "$TMP/ro.pass" 2>&1) || rc=$?
expect_eq "$rc" 2 "exit status of --readonly-password-file without an admin password"
expect_match "$out" 'ERR .*admin password' "the read-only password needs an admin password"
printf 'admin-secret\n' >"$TMP/admin.pass"
start_berthd --password-file "$TMP/admin.pass" --readonly-password-file "$TMP/ro.pass"
admin() { r -a admin-secret --no-auth-warning "$@"; }
ro() { r -a ro-secret --no-auth-warning "$@"; }

out=$(r WORKER.ADD w1 GPUS 1); expect_match "$out" '^NOAUTH' "a write without AUTH"
out=$(r WORKER.GET w1); expect_match "$out" '^NOAUTH' "a query without AUTH"
out=$(r JOURNAL.HEAD); expect_match "$out" '^NOAUTH' "audit without AUTH"
out=$(r AUTH wrong)
expect_match "$out" '^WRONGPASS ' "a wrong password is refused"
out=$(nc_send 'AUTH wrong\r\nWORKER.GET w1\r\nQUIT\r\n')
expect_match "$(sed -n 1p <<<"$out")" '^-WRONGPASS ' "inline AUTH with a wrong password"
expect_match "$(sed -n 2p <<<"$out")" '^-NOAUTH ' "still unauthenticated after a wrong password"

seq=$(admin WORKER.ADD w1 GPUS 2); expect_int "$seq" "admin WORKER.ADD"
expect_int "$(admin DEPLOY i1 MODEL m BACKEND vllm ON w1)" "admin DEPLOY"
head=$(admin JOURNAL.HEAD | head -n 1)

out=$(ro WORKER.ADD w2 GPUS 1); expect_match "$out" '^NOPERM ' "read-only WORKER.ADD"
out=$(ro RELEASE i1); expect_match "$out" '^NOPERM ' "read-only RELEASE"
out=$(ro POLICY.SET EXCLUSIVE x); expect_match "$out" '^NOPERM ' "read-only POLICY.SET"
expect_eq "$(admin JOURNAL.HEAD | head -n 1)" "$head" "NOPERM writes append nothing"
expect_match "$(ro WORKER.GET w1 2>/dev/null)" 'i1' "read-only WORKER.GET"
expect_match "$(ro INSTANCE.LIST)" 'i1' "read-only INSTANCE.LIST"
expect_match "$(ro JOURNAL.RANGE 1 2)" 'WORKER.ADD w1' "read-only JOURNAL.RANGE"
expect_match "$(ro HISTORY INSTANCE i1)" '[0-9]' "read-only HISTORY"
expect_eq "$(ro JOURNAL.VERIFY | map_field ok)" 1 "read-only JOURNAL.VERIFY"

# Read-only WATCH sees the records; AUTH inline on one connection.
out=$( (printf 'AUTH ro-secret\r\nWATCH 1\r\n'; sleep 0.5; printf 'QUIT\r\n') | nc -w 5 127.0.0.1 "$PORT" | tr -d '\r')
expect_match "$(head -n 1 <<<"$out")" '^\+OK$' "inline AUTH with the read-only password"
grep -q 'DEPLOY i1' <<<"$out" || fail "read-only WATCH 1 should send the DEPLOY record: [$out]"

# After AUTH on one connection, both roles on the same connection in turn.
out=$(printf '%s\n' 'AUTH ro-secret' 'WORKER.ADD w3 GPUS 1' 'AUTH admin-secret' 'WORKER.ADD w3 GPUS 1' | r_stdin)
expect_match "$(sed -n 2p <<<"$out")" '^NOPERM' "read-only on a connection"
expect_match "$(sed -n 4p <<<"$out")" '^[0-9]+$' "admin after re-AUTH on the same connection"
# HELLO with AUTH and SETNAME in one command.
out=$(nc_send 'HELLO 3 AUTH default admin-secret SETNAME ctl-h\r\nWORKER.ADD w4 GPUS 1\r\nQUIT\r\n')
expect_match "$(head -n 1 <<<"$out")" '^%' "HELLO 3 AUTH … SETNAME answers a map"
seq=$(grep '^:[0-9]' <<<"$out" | tail -n 1 | tr -d ':')   # after the HELLO map's own integers
expect_int "$seq" "a write after HELLO … AUTH admin"
expect_eq "$(admin JOURNAL.RANGE "$seq" 1 | map_field actor)" ctl-h "HELLO … SETNAME is the actor"
out=$(nc_send 'HELLO 3 AUTH default nope\r\nQUIT\r\n')
expect_match "$(head -n 1 <<<"$out")" '^-WRONGPASS' "HELLO with a wrong password"
# A HELLO refused for its name changes nothing: its AUTH does not log the
# connection in, and the protocol stays RESP2 (a review found both taken).
out=$(nc_send 'HELLO 3 AUTH default admin-secret SETNAME bad!\r\nJOURNAL.HEAD\r\nCLIENT GETNAME\r\nQUIT\r\n')
expect_match "$(sed -n 1p <<<"$out")" '^-ERR client names are' "HELLO with a bad SETNAME: ERR"
expect_match "$(sed -n 2p <<<"$out")" '^-NOAUTH' "no login from a HELLO answered with an error"
expect_match "$(sed -n 3p <<<"$out")" '^-NOAUTH' "no name either"

# One user, Redis 7's "default": it takes either password (the one-word AUTH
# is the same user); any other name is refused with either password, as
# redis-server refuses a user it does not know (before, the name was ignored
# and "bob" logged in as admin).
out=$(nc_send 'AUTH default ro-secret\r\nWORKER.ADD w5 GPUS 1\r\nAUTH default admin-secret\r\nWORKER.ADD w5 GPUS 1\r\nQUIT\r\n')
expect_eq "$(sed -n 1p <<<"$out")" +OK "AUTH default <read-only password>"
expect_match "$(sed -n 2p <<<"$out")" '^-NOPERM' "AUTH default <read-only password> is read-only"
expect_eq "$(sed -n 3p <<<"$out")" +OK "AUTH default <admin password>"
expect_match "$(sed -n 4p <<<"$out")" '^:[0-9]+$' "a write after AUTH default <admin password>"
for user in bob Default 'default ' admin readonly; do
    for pass in admin-secret ro-secret; do
        out=$(printf '*3\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\nWORKER.GET w1\r\nQUIT\r\n' \
              "${#user}" "$user" "${#pass}" "$pass" | nc -w 5 127.0.0.1 "$PORT" | tr -d '\r')
        expect_eq "$(sed -n 1p <<<"$out")" '-WRONGPASS invalid username-password pair or user is disabled.' \
            "AUTH [$user] $pass"
        expect_match "$(sed -n 2p <<<"$out")" '^-NOAUTH ' "still unauthenticated after AUTH [$user] $pass"
        out=$(printf '*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\nQUIT\r\n' \
              "${#user}" "$user" "${#pass}" "$pass" | nc -w 5 127.0.0.1 "$PORT" | tr -d '\r')
        expect_eq "$(head -n 1 <<<"$out")" '-WRONGPASS invalid username-password pair or user is disabled.' \
            "HELLO 3 AUTH [$user] $pass"
    done
done
expect_match "$(r --user bob -a admin-secret --no-auth-warning WORKER.GET w1 2>&1)" 'WRONGPASS|NOAUTH' \
    "redis-cli --user bob -a <admin password>"
expect_eq "$(r --user default -a ro-secret --no-auth-warning WORKER.GET w1 | head -n 1)" name \
    "redis-cli --user default -a <read-only password>"

# Before AUTH the parser's limits are tight (8 arguments, 512 bytes each,
# 4096 a command): a client that never logs in cannot park a partial
# command of --max-command-bytes (1 MiB) in berthd. Each oversized start
# is refused at once and the connection closed (no QUIT sent: before the
# limits, nc waited out its 5 s with nothing back).
preauth() {   # TEXT: raw bytes without QUIT; prints the reply, fails if berthd kept the connection
    local t0=$SECONDS out
    out=$(printf '%b' "$1" | nc -w 5 127.0.0.1 "$PORT" | tr -d '\r')
    [ $((SECONDS - t0)) -lt 4 ] || fail "berthd kept an unauthenticated connection open after [$1]"
    echo "$out"
}
out=$(preauth '*2\r\n$4\r\nAUTH\r\n$65500\r\nyyyyyyyy')
expect_match "$out" '^-ERR Protocol error: bulk length 65500 exceeds the limit of 512 bytes \(before AUTH: 8 arguments, 512 bytes each, 4096 bytes a command\)$' \
    "an unauthenticated 64 KB argument"
out=$(preauth '*17\r\n$5\r\nHELLO\r\n')
expect_match "$out" '^-ERR Protocol error: 17 arguments exceed the limit of 8 \(before AUTH' "an unauthenticated 17-word command"
out=$(preauth "$(head -c 5000 /dev/zero | tr '\0' x)")
expect_match "$out" '^-ERR Protocol error: inline command longer than 4096 bytes \(before AUTH' "an unauthenticated 5000-byte line"
grep -q 'before AUTH' "$LOG" || fail "berthd should log the refused unauthenticated command"
# Nor can it pile up its refusals: one that never reads them is not served
# past 16 KiB of them (before, until half of --max-output-bytes, 32 MiB:
# all of these 1,000,000 PINGs, 34 MB of -NOAUTH). Served, it would go on
# past 500,000; paused, berthd stops reading it once the kernel's socket
# buffers (~4 MB here) are full too.
yes PING | head -n 1000000 | sed 's/$/\r/' >"$TMP/pings"
exec {flood_fd}<>"/dev/tcp/127.0.0.1/$PORT"
cat "$TMP/pings" >&"$flood_fd" &
flood_pid=$!; bg_pids+=($flood_pid)
processed() { admin INFO stats | tr -d '\r' | sed -n 's/^total_commands_processed://p'; }
prev=0; now=$(processed)
for ((i = 0; i < 60 && now - prev > 2; i++)); do sleep 1; prev=$now; now=$(processed); done
[ "$now" -lt 500000 ] || fail "an unauthenticated client that reads nothing was served $now commands"
kill "$flood_pid" 2>/dev/null; wait "$flood_pid" 2>/dev/null
exec {flood_fd}>&-
note "unauthenticated flood not read: served $now commands, then paused"
# Logged in, the same connection gets the full limits back.
big=$(head -c 60000 /dev/zero | tr '\0' b)
out=$(printf 'AUTH ro-secret\r\n*2\r\n$4\r\nECHO\r\n$60000\r\n%s\r\nQUIT\r\n' "$big" | nc -w 5 127.0.0.1 "$PORT" | tr -d '\r')
expect_eq "$(sed -n 3p <<<"$out" | wc -c)" 60001 "a 60 KB argument after AUTH on the same connection"
stop_berthd

# --requirepass on the command line; the old passwords are gone. The
# longest password (511 bytes) still fits the limits before AUTH, in HELLO
# with a long user name and the longest client name too.
long_pass=$(head -c 511 /dev/zero | tr '\0' p)
start_berthd --requirepass "$long_pass" --auth-timeout 2
expect_match "$(admin WORKER.GET w1 2>/dev/null)" '^WRONGPASS|^NOAUTH' "the old admin password after a restart without it"
expect_match "$(r -a "$long_pass" --no-auth-warning WORKER.GET w1)" 'i1' "--requirepass admin"
long_user=$(head -c 500 /dev/zero | tr '\0' u)
long_name=$(head -c 128 /dev/zero | tr '\0' n)
out=$(nc_send "HELLO 3 AUTH default $long_pass SETNAME $long_name\r\nCLIENT GETNAME\r\nQUIT\r\n")
expect_match "$(head -n 1 <<<"$out")" '^%' "inline HELLO 3 AUTH with the longest password"
# A 500-byte user name with the longest password still fits the limits:
# refused as a user, not as a protocol error, and the connection kept.
out=$(printf '*7\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$500\r\n%s\r\n$511\r\n%s\r\n$7\r\nSETNAME\r\n$128\r\n%s\r\nPING\r\nQUIT\r\n' \
      "$long_user" "$long_pass" "$long_name" | nc -w 5 127.0.0.1 "$PORT" | tr -d '\r')
expect_match "$(head -n 1 <<<"$out")" '^-WRONGPASS ' "HELLO 3 AUTH <500-byte user> <longest password> SETNAME, as RESP"
expect_match "$(sed -n 2p <<<"$out")" '^-NOAUTH ' "the connection kept after the long user name"
out=$(printf '*7\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$7\r\ndefault\r\n$511\r\n%s\r\n$7\r\nSETNAME\r\n$128\r\n%s\r\nCLIENT GETNAME\r\nQUIT\r\n' \
      "$long_pass" "$long_name" | nc -w 5 127.0.0.1 "$PORT" | tr -d '\r')
expect_match "$(head -n 1 <<<"$out")" '^%' "HELLO 3 AUTH … SETNAME with the longest password, as RESP"
grep -q -x "$long_name" <<<"$out" || fail "CLIENT GETNAME after HELLO … SETNAME: [$out]"
# --auth-timeout 2: a connection that has not logged in 2 s after it
# connected is closed (and logged); one that logged in stays.
exec {noauth_fd}<>"/dev/tcp/127.0.0.1/$PORT"
exec {authed_fd}<>"/dev/tcp/127.0.0.1/$PORT"
printf 'AUTH %s\r\n' "$long_pass" >&"$authed_fd"
IFS= read -r -t 5 line <&"$authed_fd"; expect_eq "${line%$'\r'}" "+OK" "AUTH before the auth timeout"
sleep 4
rc=0; timeout 2 cat <&"$noauth_fd" >/dev/null || rc=$?
expect_eq "$rc" 0 "the unauthenticated connection closed by --auth-timeout (124: still open)"
printf 'PING\r\n' >&"$authed_fd"
IFS= read -r -t 5 line <&"$authed_fd"; expect_eq "${line%$'\r'}" "+PONG" "an authenticated connection outlives --auth-timeout"
exec {noauth_fd}>&- {authed_fd}>&-
grep -q 'auth timeout' "$LOG" || fail "berthd should log the auth timeout"
expect_match "$(ro WORKER.GET w1 2>/dev/null)" '^WRONGPASS|^NOAUTH' "no read-only password configured"
stop_berthd

# No password configured: as redis-server 7, whose default user then has
# none, the user "default" with any password is accepted (a client library
# given credentials sends them on connect), another user is WRONGPASS, and
# the one-word AUTH says no password is configured.
start_berthd
out=$(nc_send 'HELLO 3 AUTH default anything
WORKER.ADD w9 GPUS 1
QUIT
')
expect_match "$(head -n 1 <<<"$out")" '^%7$' "HELLO 3 AUTH default <pw> without a password configured"
expect_match "$(grep '^:[0-9]' <<<"$out" | tail -n 1)" '^:[0-9]+$' "a write after HELLO 3 AUTH default <pw>"
expect_eq "$(r AUTH default anything)" OK "AUTH default <pw> without a password configured"
expect_eq "$(r -a anything --user default --no-auth-warning PING)" PONG "redis-cli --user default -a <pw>"
expect_match "$(r AUTH bob anything)" '^WRONGPASS ' "AUTH <another user> <pw> without a password configured"
out=$(nc_send 'HELLO 2 AUTH Default x
QUIT
')
expect_match "$(head -n 1 <<<"$out")" '^-WRONGPASS ' "HELLO … AUTH with a user other than default (case counts)"
expect_match "$(r AUTH anything)" '^ERR AUTH <password> called without any password configured' \
    "the one-word AUTH without a password configured"
stop_berthd
note ok
