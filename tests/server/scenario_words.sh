#!/usr/bin/env bash
# scenario_words.sh — berth's scenario reader (tools/cli_scenario.c,
# query_words) recognises and skips exactly the read-only commands berthd
# answers: the list in that file must equal the names berthd's COMMAND INFO
# flags readonly, with the arity COMMAND INFO gives each, each such line is
# skipped or answered by `berth whatif`, and a word berthd refuses (SELECT)
# is refused by the what-if too.
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
    # COMMAND INFO's second line is the arity.
    printf '%s %s\n' "$(tr 'a-z' 'A-Z' <<<"$name")" "$(sed -n 2p <<<"$flags")" >>"$TMP/server.arities"
done
expect_match "$(r SELECT 0)" '^ERR unknown command' "berthd refuses SELECT"
stop_berthd
sort -o "$TMP/server.words" "$TMP/server.words"
[ "$(wc -l <"$TMP/server.words")" -ge 15 ] || fail "too few read-only commands: $(cat "$TMP/server.words")"

# berth's list, as written in its source.
sed -n '/query_words\[\] = {/,/^};/p' "$src" | grep -o '"[A-Z.]*"' | tr -d '"' | sort >"$TMP/berth.words"
diff "$TMP/server.words" "$TMP/berth.words" >"$TMP/words.diff" ||
    fail "berth's scenario query words differ from berthd's read-only commands (< berthd, > berth): $(cat "$TMP/words.diff")"
sort -o "$TMP/server.arities" "$TMP/server.arities"
sed -n '/query_words\[\] = {/,/^};/p' "$src" | grep -o '{ "[A-Z.]*", -\{0,1\}[0-9]* }' |
    sed 's/{ "\([A-Z.]*\)", \(-\{0,1\}[0-9]*\) }/\1 \2/' | sort >"$TMP/berth.arities"
diff "$TMP/server.arities" "$TMP/berth.arities" >"$TMP/arities.diff" ||
    fail "berth's scenario query arities differ from berthd's (< berthd, > berth): $(cat "$TMP/arities.diff")"

# And as berth acts on them: each with the fewest words its arity allows
# is skipped (or answered); a word fewer, or one more where the arity is
# exact, is berthd's "wrong number of arguments" and exit 2.
whatif_line() {   # whatif_line LINE: sets out and rc
    rc=0; out=$(printf '%s\n' "$1" | "$BERTH" whatif --data "$DATA" --scenario - 2>&1) || rc=$?
}
while read -r word arity; do
    n=${arity#-}
    line=$word
    i=1; while [ "$i" -lt "$n" ]; do line="$line 1"; i=$((i + 1)); done
    whatif_line "$line"
    expect_eq "$rc" 0 "whatif's exit status on the read-only line '$line': $out"
    expect_match "$out" ' (1 queries answered, 0 skipped|0 queries answered, 1 skipped)' "whatif on '$line'"
    wrong=("${line% *}")
    [ "$arity" -gt 0 ] && wrong+=("$line 1")
    [ "$n" -gt 1 ] || wrong=("${wrong[@]:1}")
    for bad in "${wrong[@]}"; do
        whatif_line "$bad"
        expect_eq "$rc" 2 "whatif's exit status on '$bad' (arity $arity)"
        expect_match "$out" "ERR scenario \\(stdin\\) line 1: wrong number of arguments for '$word' command" \
            "whatif on '$bad'"
    done
done <"$TMP/server.arities"
out=$(printf 'WORKER.ADD q1 GPUS 1\nDIGEST\n' | "$BERTH" whatif --data "$DATA" --scenario - 2>&1) ||
    fail "whatif with a DIGEST line: $out"
expect_match "$out" '1 ok, .* 1 skipped' "WORKER.ADD then DIGEST"
rc=0; out=$(printf 'SELECT 0\n' | "$BERTH" whatif --data "$DATA" --scenario - 2>&1) || rc=$?
expect_eq "$rc" 2 "whatif's exit status on SELECT (berthd refuses it)"
expect_match "$out" 'line 1' "whatif names the SELECT line"
note ok
