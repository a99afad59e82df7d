#!/usr/bin/env bash
# protocol.sh — RESP2 and RESP3 (HELLO 3 / redis-cli -3), inline commands
# through nc, the connection commands (PING, ECHO, HELLO, CLIENT SETNAME,
# INFO, COMMAND, QUIT), and the actor recorded in the journal.
. "$(dirname "$0")/lib.sh"
start_berthd

expect_int "$(r WORKER.ADD w1 GPUS 4 VRAM 1000 LABEL zone=z1 LABEL pool=p)" "WORKER.ADD w1"
expect_int "$(r DEPLOY i1 MODEL m1 BACKEND vllm ON w1:0)" "DEPLOY i1"

# Maps: flat field/value arrays under RESP2, maps under RESP3 (redis-cli
# prints a map entry as "field value" on one line).
two=$(r WORKER.GET w1)
three=$(r -3 WORKER.GET w1)
n2=$(grep -c '' <<<"$two"); n3=$(grep -c '' <<<"$three")
[ "$n2" -ge 8 ] || fail "WORKER.GET under RESP2 is a flat field/value array, got [$two]"
[ "$n3" -lt "$n2" ] || fail "WORKER.GET under RESP3 should be a map ($n3 lines vs $n2 under RESP2): [$three]"

# On the wire: * under RESP2, % after HELLO 3, * again after HELLO 2.
out=$(nc_send 'WORKER.GET w1\r\nHELLO 3\r\nWORKER.GET w1\r\nHELLO 2\r\nWORKER.GET w1\r\nQUIT\r\n')
first=$(grep -m1 -n '^\*' <<<"$out" | cut -d: -f1)
[ "$first" = 1 ] || fail "RESP2 WORKER.GET should start with '*': [$(head -n 3 <<<"$out")]"
grep -q '^%' <<<"$out" || fail "HELLO 3 then WORKER.GET should send RESP3 maps ('%'): [$out]"
hello=$(r HELLO 3 2>&1 | tr '\n' ' ')
expect_match "$hello" 'proto' "HELLO 3 answers the server's properties"
out=$(r HELLO 4 2>&1)
expect_match "$out" '^NOPROTO' "HELLO 4 is refused with NOPROTO"
out=$(r -3 HELLO 2 | tr '\n' ' ')
expect_match "$out" 'proto' "HELLO 2 answers too"

# Inline commands (nc): each reply in RESP, connection kept across commands.
out=$(nc_send 'PING\r\nECHO hello-inline\r\nWORKER.ADD w2 GPUS 2\r\nRELEASE i1\r\nRELEASE i1\r\nWHAT\r\nQUIT\r\n')
expected=$'+PONG\n$12\nhello-inline'
expect_eq "$(head -n 3 <<<"$out")" "$expected" "inline PING and ECHO"
expect_match "$(sed -n 4p <<<"$out")" '^:[0-9]+$' "inline WORKER.ADD answers a seq"
expect_match "$(sed -n 5p <<<"$out")" '^:[0-9]+$' "inline RELEASE answers a seq"
expect_match "$(sed -n 6p <<<"$out")" '^-NOINSTANCE ' "inline RELEASE again: NOINSTANCE"
expect_match "$(sed -n 7p <<<"$out")" '^-ERR ' "inline unknown command: ERR"
expect_match "$(sed -n 8p <<<"$out")" '^\+OK$' "QUIT"

# An unknown command's name is echoed with bytes past printable ASCII as
# '?': a NUL ended the echo early ('FOO' for FOO<NUL>BAR), naming a command
# the client never sent.
out=$(nc_send '*1\r\n$7\r\nFOO\0BAR\r\n*2\r\n$3\r\nGET\r\n$1\r\n\0\r\nQUIT\r\n')
expect_eq "$(sed -n 1p <<<"$out")" "-ERR unknown command 'FOO?BAR'" "an unknown command with a NUL, echoed"
expect_match "$(sed -n 2p <<<"$out")" "^-ERR unknown command 'GET'" "the connection stays usable"

# A null array (*-1), an empty one (*0) and an empty line are no command:
# ignored as redis-server 7 ignores them, the connection kept. A negative
# bulk length is still a protocol error.
out=$(nc_send '*-1\r\n*1\r\n$4\r\nPING\r\n*0\r\n*-7\r\n\r\nECHO after\r\nQUIT\r\n')
expect_eq "$out" $'+PONG\n$5\nafter\n+OK' "null and empty arrays are ignored"
out=$(nc_send '*1\r\n$-1\r\nPING\r\n')
expect_match "$out" '^-ERR Protocol error: invalid bulk length: negative length -1$' "a null bulk string as an argument"

# The role in Redis's words, in both places redis-cli and client libraries
# read it: INFO replication's role:master and HELLO's role master.
expect_eq "$(r INFO replication | tr -d '\r' | sed -n 's/^role://p')" master "INFO replication role"
expect_eq "$(r HELLO 2 | map_field role)" master "HELLO role"

# PING and ECHO through redis-cli, both protocols.
expect_eq "$(r PING)" PONG "PING"
expect_eq "$(r PING hi)" hi "PING with a message"
expect_eq "$(r -3 ECHO 'x y')" "x y" "ECHO under RESP3"

# CLIENT SETNAME is the actor in the journal.
out=$(printf '%s\n' 'CLIENT SETNAME controller-7' 'WORKER.ADD w3 GPUS 1' | r_stdin)
expect_eq "$(head -n 1 <<<"$out")" OK "CLIENT SETNAME"
seq=$(tail -n 1 <<<"$out"); expect_int "$seq" "WORKER.ADD after SETNAME"
expect_match "$(r JOURNAL.RANGE "$seq" 1)" 'controller-7' "the journal records the actor"
# (CLIENT GETNAME before SETNAME is null: redis-cli prints an empty line, dropped.)
out=$(printf '%s\n' 'CLIENT GETNAME' 'CLIENT SETNAME ctl-9' 'CLIENT GETNAME' 'CLIENT ID' | r_stdin)
expect_eq "$(sed -n 1p <<<"$out")" "OK" "CLIENT SETNAME ctl-9"
expect_eq "$(sed -n 2p <<<"$out")" "ctl-9" "CLIENT GETNAME after SETNAME"
expect_match "$(sed -n 3p <<<"$out")" '^[0-9]+$' "CLIENT ID"
out=$(r CLIENT SETNAME 'bad name')
expect_match "$out" '^ERR' "CLIENT SETNAME with a space is refused"

# INFO sections and enough COMMAND for redis-cli.
info=$(r INFO)
for section in Server Clients Journal State Stats Latency; do
    grep -qi "^# $section" <<<"$info" || fail "INFO lacks the $section section"
done
expect_match "$(r INFO journal)" 'seq' "INFO journal names the head seq"
out=$(r COMMAND COUNT); expect_int "$out" "COMMAND COUNT"
# COMMAND INFO with no name lists every command, as bare COMMAND does (Redis 7).
expect_eq "$(r COMMAND INFO | grep -c -x -i 'deploy')" 1 "COMMAND INFO with no name lists DEPLOY"
expect_eq "$(r COMMAND INFO | md5sum)" "$(r COMMAND | md5sum)" "COMMAND INFO with no name answers as COMMAND"
expect_eq "$(r CONFIG GET appendonly | tr '\n' ' ')" "appendonly yes " "CONFIG GET appendonly (what redis-benchmark probes)"
expect_eq "$(r CONFIG GET appendfsync | tr '\n' ' ')" "appendfsync always " "CONFIG GET appendfsync"
out=$(r COMMAND DOCS 2>&1); [[ "$out" != ERR* ]] || fail "COMMAND DOCS (redis-cli asks at start): $out"
stop_berthd
note ok
