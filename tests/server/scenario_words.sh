#!/usr/bin/env bash
# scenario_words.sh — berth's scenario reader (tools/cli_scenario.c,
# query_words) recognises and skips exactly the read-only commands berthd
# answers: the list in that file must equal the names berthd's COMMAND INFO
# flags readonly, each such line is skipped or answered by `berth whatif`,
# and a word berthd refuses (SELECT) is refused by the what-if too.
. "$(dirname "$0")/lib.sh"
BERTH=${BERTH:?BERTH must name the berth binary}
src=$(dirname "$0")/../../tools/cli_scenario.c
[ -f "$src" ] || fail "cannot find $src"

start_berthd
expect_int "$(r WORKER.ADD w1 GPUS 1)" "WORKER.ADD"
# berthd's read-only commands, from its own table.
: >"$TMP/server.words"
for name in $(r COMMAND LIST | tr -d '\r'); do
    flags=$(r COMMAND INFO "$name" | tr -d '\r')
    grep -qx write <<<"$flags" && continue
    grep -qx readonly <<<"$flags" || fail "COMMAND INFO $name is neither write nor readonly: $flags"
    tr 'a-z' 'A-Z' <<<"$name" >>"$TMP/server.words"
done
expect_match "$(r SELECT 0)" '^ERR unknown command' "berthd refuses SELECT"
stop_berthd
sort -o "$TMP/server.words" "$TMP/server.words"
[ "$(wc -l <"$TMP/server.words")" -ge 15 ] || fail "too few read-only commands: $(cat "$TMP/server.words")"

# berth's list, as written in its source.
sed -n '/query_words\[\] = {/,/^};/p' "$src" | grep -o '"[A-Z.]*"' | tr -d '"' | sort >"$TMP/berth.words"
diff "$TMP/server.words" "$TMP/berth.words" >"$TMP/words.diff" ||
    fail "berth's scenario query words differ from berthd's read-only commands (< berthd, > berth): $(cat "$TMP/words.diff")"

# And as berth acts on them: each alone on a line is skipped (or answered).
while read -r word; do
    out=$(printf '%s\n' "$word" | "$BERTH" whatif --data "$DATA" --scenario - 2>&1) ||
        fail "whatif refuses the read-only line '$word': $out"
    expect_match "$out" ' (1 queries answered, 0 skipped|0 queries answered, 1 skipped)' "whatif on '$word'"
done <"$TMP/server.words"
out=$(printf 'WORKER.ADD q1 GPUS 1\nDIGEST\n' | "$BERTH" whatif --data "$DATA" --scenario - 2>&1) ||
    fail "whatif with a DIGEST line: $out"
expect_match "$out" '1 ok, .* 1 skipped' "WORKER.ADD then DIGEST"
rc=0; out=$(printf 'SELECT 0\n' | "$BERTH" whatif --data "$DATA" --scenario - 2>&1) || rc=$?
expect_eq "$rc" 2 "whatif's exit status on SELECT (berthd refuses it)"
expect_match "$out" 'line 1' "whatif names the SELECT line"
note ok
