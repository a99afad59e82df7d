#!/usr/bin/env bash
# config.sh — the config file's lines as an editor leaves them: blanks after
# a value are dropped (a trailing space must not name a new, empty data
# directory, or a password AUTH never matches), and a '#' after a blank in a
# value is refused at start with the file and line named, never kept in a
# password nor silently cut.
. "$(dirname "$0")/lib.sh"

pick_port
# Every string option with trailing blanks (a space, then a tab and a space).
printf 'data %s \nport %s\t \nrequirepass s3cret \t\nunixsocket %s \n' \
    "$TMP/cdata" "$PORT" "$TMP/c.sock" >"$TMP/c.conf"
"$BERTHD" --config "$TMP/c.conf" >>"$LOG" 2>&1 &
BERTHD_PID=$!
for ((i = 0; i < START_WAIT_TRIES_MAX; i++)); do
    kill -0 "$BERTHD_PID" 2>/dev/null || fail "berthd exited on start with a config file"
    [ -n "$(r PING 2>/dev/null)" ] && break
    sleep 0.025
done
expect_eq "$(r AUTH s3cret)" OK "AUTH with the password of 'requirepass s3cret <blanks>'"
expect_eq "$(r -a s3cret --no-auth-warning WORKER.ADD w1 GPUS 1)" 1 "a write after AUTH"
[ -d "$TMP/cdata" ] || fail "'data DIR <blank>' should open DIR"
[ ! -e "$TMP/cdata " ] || fail "'data DIR <blank>' created 'DIR ' (the blank kept)"
[ -S "$TMP/c.sock" ] || fail "'unixsocket PATH <blank>' should listen on PATH"
stop_berthd

# A '#' after a blank in a value: exit 2, naming the file, the line and the option.
for value in 's3cret # the admin password' "s3cret\t#x"; do
    printf '# a comment line is fine\n  # so is an indented one\nport 0\nrequirepass %b\n' "$value" >"$TMP/hash.conf"
    rc=0; out=$("$BERTHD" --config "$TMP/hash.conf" --data "$TMP/hdata" --unixsocket "$TMP/h.sock" 2>&1) || rc=$?
    expect_eq "$rc" 2 "exit status with 'requirepass $value'"
    expect_match "$out" "ERR $TMP/hash.conf:4: .*\"requirepass\".*#" "the refusal names the file, line 4 and the option"
done
[ ! -e "$TMP/hdata" ] || fail "berthd opened its data directory despite the refused config line"

# An empty value on the command line (an unset shell variable) is a usage
# error, exit 2, before anything is opened: never "no password", never a
# data-directory error a service manager would restart.
for opt in --data --requirepass --bind --unixsocket; do
    rc=0; out=$("$BERTHD" "$opt" "" --port 0 --unixsocket "$TMP/e.sock" 2>&1) || rc=$?
    [ "$opt" = --unixsocket ] && { rc=0; out=$("$BERTHD" --data "$TMP/edata" "$opt" "" 2>&1) || rc=$?; }
    expect_eq "$rc" 2 "exit status with $opt \"\""
    expect_match "$out" "ERR $opt needs a value, got an empty one" "the refusal names $opt"
done
[ ! -e "$TMP/edata" ] || fail "berthd opened its data directory despite an empty value"

# A '#' inside a word is part of the value.
printf 'requirepass s3#cret \n' >"$TMP/inner.conf"
start_berthd --config "$TMP/inner.conf"
expect_eq "$(r AUTH 's3#cret')" OK "a '#' not after a blank belongs to the password"
stop_berthd
note "ok"
