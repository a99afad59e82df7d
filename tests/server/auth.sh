#!/usr/bin/env bash
# auth.sh — AUTH with the admin password allows everything; the read-only
# password allows queries, audit and WATCH and gets NOPERM for a mutating
# command; no AUTH gets NOAUTH; a wrong password is refused; a non-loopback
# bind without a password is refused at start.
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
stop_berthd

# --requirepass on the command line; the old passwords are gone.
start_berthd --requirepass other-admin
expect_match "$(admin WORKER.GET w1 2>/dev/null)" '^WRONGPASS|^NOAUTH' "the old admin password after a restart without it"
expect_match "$(r -a other-admin --no-auth-warning WORKER.GET w1)" 'i1' "--requirepass admin"
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
