#!/usr/bin/env bash
# unixsocket.sh — --unixsocket removes only a stale socket of its own kind:
# a regular file at the path is refused, not deleted; a live socket (a
# second berthd on another data directory, whose LOCK does not guard this
# path) is refused, not stolen; a stale one (berthd killed) is replaced;
# and at stop berthd removes the path only if it is still the socket it
# bound.
. "$(dirname "$0")/lib.sh"

SOCK="$TMP/berthd.sock"
us() { "$REDIS_CLI" -s "$SOCK" "$@"; }

# A regular file at the path: exit 1, the path named, the file intact.
printf 'precious\n' >"$SOCK"
pick_port
rc=0; out=$(timeout 20 "$BERTHD" --data "$TMP/f" --port "$PORT" --unixsocket "$SOCK" 2>&1) || rc=$?
expect_eq "$rc" 1 "exit status with a regular file at --unixsocket"
expect_match "$out" "ERR --unixsocket $SOCK exists and is not a socket" "the refusal names the path"
expect_eq "$(cat "$SOCK")" precious "the regular file at --unixsocket is left as it was"
rm "$SOCK"

# A live socket: a second berthd on another data directory is refused.
start_berthd --unixsocket "$SOCK"
expect_eq "$(us PING)" PONG "PING over the unix socket"
rc=0; out=$(timeout 20 "$BERTHD" --data "$TMP/other" --port 0 --unixsocket "$SOCK" 2>&1) || rc=$?
expect_eq "$rc" 1 "exit status of a second berthd on a live --unixsocket"
expect_match "$out" "ERR --unixsocket $SOCK is in use" "the refusal says the socket is in use"
expect_int "$(us WORKER.ADD w1 GPUS 1)" "a write over the unix socket after the refused takeover"
expect_eq "$(r JOURNAL.HEAD | map_field seq)" 1 "the unix socket still reaches the first berthd's journal"

# A stale socket (berthd killed, the file left behind) is replaced.
kill9_berthd
[ -S "$SOCK" ] || fail "a killed berthd should leave its socket file behind (the stale case)"
start_berthd --unixsocket "$SOCK"
expect_eq "$(us JOURNAL.HEAD | map_field seq)" 1 "the restarted berthd serves over the replaced stale socket"

# The path taken over while berthd runs: its stop leaves the new file.
mv "$SOCK" "$TMP/moved.sock"
printf 'not berthd\n' >"$SOCK"
stop_berthd
expect_eq "$(cat "$SOCK" 2>/dev/null)" "not berthd" "berthd's stop leaves a file at --unixsocket that is not its socket"
grep -q "not removing --unixsocket $SOCK: it is no longer the socket berthd bound" "$LOG" \
    || fail "berthd should log why it left --unixsocket in place"
rm "$SOCK"

# Its own socket is removed at a normal stop.
start_berthd --unixsocket "$SOCK"
stop_berthd
[ ! -e "$SOCK" ] || fail "berthd's stop should remove the socket it bound"
note "ok"
