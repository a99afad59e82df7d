#!/bin/sh
# cli_test.sh — ctest cases for the `berth` tool (issue 4).
#
# usage: cli_test.sh CASE BERTH MKJOURNAL SRC_DIR WORK_DIR [BERTHD]
# Each case builds its own journals with mkjournal (the real engine, the
# same write path as berthd) in WORK_DIR/CASE and checks `berth` against
# them: against the engine's own digest, against each other (dump vs
# replay), against outcomes worked out by hand from the rules (rejudge,
# whatif, history), and against the bytes of the data directory (whatif
# writes nothing). Needs only POSIX sh, sed, awk, grep, sort, sha256sum,
# perl (to flip a byte), xmllint and lmdb-utils (mdb_dump, mdb_load: cut_head).
set -u

CASE=$1
BERTH=$2
MKJOURNAL=$3
SRC=$4
WORK=$5/$CASE
BERTHD=${6:-}

rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK" || exit 1

fail() {
    echo "FAIL [$CASE]: $*" >&2
    exit 1
}

# expect_exit CODE command...: run it, keep stdout in out.txt, stderr in err.txt.
expect_exit() {
    want=$1
    shift
    "$@" >out.txt 2>err.txt
    got=$?
    if [ "$got" != "$want" ]; then
        echo "--- stdout" >&2; head -20 out.txt >&2
        echo "--- stderr" >&2; head -20 err.txt >&2
        fail "exit $got, wanted $want: $*"
    fi
}

json_field() {   # json_field NAME < lines: the value of "NAME":"..." or "NAME":123
    sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\)\"\{0,1\}[,}].*/\1/p"
}

# A generated journal: 30 workers, ${2:-600} commands, snapshots every 100
# records, committed in batches of ${1:-16} (at_time wants 1: a record a
# second); the engine's digest is printed at seq ${3:-300}.
make_gen_journal() {
    at=${3:-300}
    expect_exit 0 "$BERTH" gen --workers 30 --ops "${2:-600}" --seed 7
    mv out.txt gen.scenario
    "$MKJOURNAL" --data data --scenario gen.scenario --batch "${1:-16}" --snapshot-every 100 \
        --digest-at "$at" >mk.txt 2>mk.err || fail "mkjournal: $(cat mk.err)"
    DIGEST300=$(awk -v at="$at" '$1 == "digest" && $2 == at { print $3 }' mk.txt)
    HEAD_SEQ=$(awk '$1 == "head" { print $2 }' mk.txt)
    HEAD_DIGEST=$(awk '$1 == "head" { print $3 }' mk.txt)
    [ -n "$DIGEST300" ] && [ -n "$HEAD_SEQ" ] || fail "mkjournal printed no digests: $(cat mk.txt)"
    [ "$HEAD_SEQ" -gt "$at" ] || fail "generated journal too short: $HEAD_SEQ records"
}

make_journal() {   # make_journal SCENARIO
    make_journal_in data "$1"
}

make_journal_in() {   # make_journal_in DIR SCENARIO
    "$MKJOURNAL" --data "$1" --scenario "$SRC/$2" >mk.txt 2>mk.err || fail "mkjournal: $(cat mk.err)"
}

case_gen() {
    expect_exit 0 "$BERTH" gen --workers 20 --ops 500 --seed 42 --distributed-fraction 0.3
    mv out.txt a.txt
    expect_exit 0 "$BERTH" gen --workers 20 --ops 500 --seed 42 --distributed-fraction 0.3
    mv out.txt b.txt
    cmp -s a.txt b.txt || fail "same seed gave different bytes"
    expect_exit 0 "$BERTH" gen --workers 20 --ops 500 --seed 43 --distributed-fraction 0.3
    cmp -s a.txt out.txt && fail "a different seed gave the same bytes"
    expect_exit 0 "$BERTH" gen --workers 20 --ops 500 --seed 42 --distributed-fraction 0.9
    cmp -s a.txt out.txt && fail "a different fraction gave the same bytes"
    [ "$(wc -l <a.txt)" -eq 520 ] || fail "wanted 20 WORKER.ADD + 500 commands, got $(wc -l <a.txt) lines"
    [ "$(grep -c '^WORKER.ADD ' a.txt)" -ge 20 ] || fail "fewer WORKER.ADD than workers"
    grep -q '^DEPLOY .* ON [^ ]* [^ ]*' a.txt || fail "no distributed DEPLOY in the scenario"
    # The scenario is valid input for the engine, line by line.
    "$MKJOURNAL" --data data --scenario a.txt --batch 64 >/dev/null 2>mk.err || fail "engine rejected gen output: $(cat mk.err)"
    expect_exit 2 "$BERTH" gen --workers 20 --ops 5 --seed 1 --distributed-fraction 1.5
    expect_exit 2 "$BERTH" gen --workers 0 --ops 5 --seed 1
    expect_exit 2 "$BERTH" gen --ops 5 --seed 1
}

case_dump_replay() {
    make_gen_journal
    # replay (snapshot + tail, and from genesis) equals the engine's own state.
    expect_exit 0 "$BERTH" replay --data data --at 300 --json
    [ "$(head -1 out.txt | json_field digest)" = "$DIGEST300" ] || fail "replay --at 300 digest differs from the engine's"
    [ "$(head -1 out.txt | json_field seq)" = 300 ] || fail "replay --at 300 reports another seq"
    mv out.txt replay300.json
    expect_exit 0 "$BERTH" replay --data data --at 300 --genesis --json
    cmp -s out.txt replay300.json || fail "replay from genesis differs from replay via snapshot"
    expect_exit 0 "$BERTH" replay --data data --json
    [ "$(head -1 out.txt | json_field digest)" = "$HEAD_DIGEST" ] || fail "replay at the head differs from the engine's"
    # dump agrees with replay: the instances and workers alive at 300.
    expect_exit 0 "$BERTH" journal dump --data data --to 300 --json
    mv out.txt dump300.json
    [ "$(wc -l <dump300.json)" -eq 300 ] || fail "dump --to 300 printed $(wc -l <dump300.json) records"
    awk -F'"seq":' '{ split($2, a, ","); if (a[1] != NR) { print "gap at " NR; exit 1 } }' dump300.json ||
        fail "dump seqs are not 1..300"
    [ "$(grep -c '"version":2}$' dump300.json)" -eq 300 ] || fail "dump does not say each record's format version (2)"
    sed -n 's/.*"command":"\([^"]*\)","code":"OK".*/\1/p' dump300.json | awk '
        $1 == "DEPLOY" { live[$2] = 1 } $1 == "RELEASE" { delete live[$2] }
        END { for (n in live) print n }' | sort >dump_instances.txt
    grep '"type":"instance"' replay300.json | json_field name | sort >replay_instances.txt
    cmp -s dump_instances.txt replay_instances.txt || fail "live instances from dump and replay differ"
    [ -s replay_instances.txt ] || fail "no live instances at 300: the test proves nothing"
    sed -n 's/.*"command":"\([^"]*\)","code":"OK".*/\1/p' dump300.json | awk '
        $1 == "WORKER.ADD" { live[$2] = 1 } $1 == "WORKER.REMOVE" { delete live[$2] }
        END { for (n in live) print n }' | sort >dump_workers.txt
    grep '"type":"worker"' replay300.json | json_field name | sort >replay_workers.txt
    cmp -s dump_workers.txt replay_workers.txt || fail "workers from dump and replay differ"
    # a sub-range is exactly that range
    expect_exit 0 "$BERTH" journal dump --data data --from 10 --to 20 --json
    [ "$(json_field seq <out.txt | tr '\n' ' ')" = "10 11 12 13 14 15 16 17 18 19 20 " ] ||
        fail "dump --from 10 --to 20 gave $(json_field seq <out.txt | tr '\n' ' ')"
    expect_exit 0 "$BERTH" journal dump --data data --from 10 --to 12
    [ "$(wc -l <out.txt)" -ge 4 ] || fail "human dump too short"
}

case_at_time() {
    make_gen_journal 1 150 120
    # mkjournal commits record k at 2025-11-26T09:00:00Z + (k-1) s.
    expect_exit 0 "$BERTH" replay --data data --at 100 --json
    D100=$(head -1 out.txt | json_field digest)
    expect_exit 0 "$BERTH" replay --data data --at-time 2025-11-26T09:01:39.500Z --json
    [ "$(head -1 out.txt | json_field seq)" = 100 ] || fail "--at-time 09:01:39.5 is not seq 100"
    [ "$(head -1 out.txt | json_field digest)" = "$D100" ] || fail "--at-time state differs from --at 100"
    expect_exit 0 "$BERTH" replay --data data --at-time 2025-11-26T10:01:39+01:00 --json
    [ "$(head -1 out.txt | json_field seq)" = 100 ] || fail "offset +01:00 not honoured"
    expect_exit 0 "$BERTH" replay --data data --at-time 2025-11-26T09:00:00Z --json
    [ "$(head -1 out.txt | json_field seq)" = 1 ] || fail "the first record's own time is not seq 1"
    expect_exit 0 "$BERTH" replay --data data --at-time 2025-11-26T08:59:59.999Z --json
    [ "$(head -1 out.txt | json_field seq)" = 0 ] || fail "a time before the journal is not the empty state"
    expect_exit 0 "$BERTH" replay --data data --at-time 2030-01-01T00:00:00Z --json
    [ "$(head -1 out.txt | json_field seq)" = "$HEAD_SEQ" ] || fail "a time after the journal is not the head"
    expect_exit 2 "$BERTH" replay --data data --at-time 2025-11-31T00:00:00Z
    expect_exit 2 "$BERTH" replay --data data --at-time yesterday
    expect_exit 2 "$BERTH" replay --data data --at 999999
}

case_verify_corrupt() {
    make_journal seed.scenario
    expect_exit 0 "$BERTH" journal verify --data data
    grep -q '^OK 11 records' out.txt || fail "verify of a good journal: $(cat out.txt)"
    # Record 3 carries the label value zzmarkzz; flip one byte of every copy
    # of it in the LMDB file (old page copies too), leaving the length alone.
    grep -c zzmarkzz data/data.mdb >/dev/null || fail "marker not found in data.mdb"
    perl -0777 -pi -e 's/zzmarkzz/zzmarkzy/g' data/data.mdb || fail "perl could not flip the byte"
    expect_exit 1 "$BERTH" journal verify --data data
    grep -q '^CORRUPT seq 3: hash mismatch' err.txt || fail "verify did not name seq 3 once: $(cat err.txt)"
    expect_exit 1 "$BERTH" journal verify --data data --json
    [ "$(json_field first_bad_seq <out.txt)" = 3 ] || fail "json first_bad_seq is not 3: $(cat out.txt)"
    [ "$(json_field ok <out.txt)" = false ] || fail "json ok is not false"
}

# The head record (seq 11) cut to half its bytes with lmdb-utils: a finding
# about seq 11, as the same damage mid-journal is. Before, every command
# failed at open ("cannot read the journal head", exit 2) naming no seq.
case_cut_head() {
    make_journal seed.scenario
    mdb_dump -s journal data >dump.txt || fail "mdb_dump failed"
    # keep the header and the last key/value pair, its value's hex cut in half
    awk '/^HEADER=END/ { h = 1; print; next } !h { print; next }
         /^DATA=END/ { print k; n = length(v) - 1; print substr(v, 1, 1 + int(n / 4) * 2); print; next }
         /^ / { if (c++ % 2 == 0) k = $0; else v = $0 }' dump.txt >cut.txt
    [ "$(tail -3 cut.txt | head -1)" = " 0b00000000000000" ] || fail "the last key is not seq 11: $(tail -3 cut.txt)"
    mdb_load -s journal -f cut.txt data 2>load.err || fail "mdb_load failed: $(cat load.err)"
    expect_exit 1 "$BERTH" journal verify --data data
    grep -q '^CORRUPT seq 11: undecodable' err.txt || fail "verify: $(cat err.txt)"
    expect_exit 1 "$BERTH" journal verify --data data --json
    [ "$(json_field first_bad_seq <out.txt)" = 11 ] || fail "json first_bad_seq is not 11: $(cat out.txt)"
    grep -q '"head_hash":null' out.txt || fail "json head_hash of an undecodable head: $(cat out.txt)"
    expect_exit 0 "$BERTH" replay --data data --at 10
    expect_exit 0 "$BERTH" journal dump --data data --from 1 --to 10
    [ "$(grep -c . out.txt)" -ge 11 ] || fail "dump below the head: $(cat out.txt)"
    expect_exit 1 "$BERTH" status --data data
    grep -q '^CORRUPT .*seq 11: undecodable' err.txt || fail "status: $(cat err.txt)"
    expect_exit 1 "$BERTH" replay --data data
    grep -q 'seq 11: undecodable' err.txt || fail "replay to the head: $(cat err.txt)"
}

# flip_byte FILE OFFSET: xor one byte with 0x5a.
flip_byte() {
    perl -e 'open(my $f, "+<", $ARGV[0]) or exit 1; binmode $f; seek($f, $ARGV[1], 0) or exit 1;
             read($f, my $b, 1) == 1 or exit 1; seek($f, $ARGV[1], 0);
             print $f chr(ord($b) ^ 0x5a) or exit 1; close $f or exit 1' "$1" "$2" ||
        fail "could not flip byte $2 of $1"
}

# verify_pages (review hV3): LMDB trusts its pages, so one flipped node
# pointer in a journal leaf page kills whoever walks it. The byte is not
# left to luck: node_ptrs.py lists each journal leaf page's middle pointer,
# and the case takes the first, in a page past verify's first progress step
# (16384 records), whose flip does kill an unguarded walk (BERTH_UNGUARDED=1:
# in-process, as berth was), verify and replay --genesis both. Guarded (the
# default), both exit 1 with a CORRUPT finding, verify naming the last seq
# its child reported checked; unguarded, berth's last words name the
# directory and the command to run.
case_verify_pages() {
    # A sanitizer build: berth's own handlers must get the signals (last
    # words; the guarded child's default action), as in a release build,
    # not ASan's SEGV report and exit 1. That is ASan's default; said here
    # so a caller's ASAN_OPTIONS cannot turn it off.
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}allow_user_segv_handler=1"
    export ASAN_OPTIONS
    make_gen_journal 256 20000
    [ "$HEAD_SEQ" -gt 17000 ] || fail "journal too short for a second verify step: $HEAD_SEQ"
    expect_exit 0 "$BERTH" journal verify --data data
    python3 "$SRC/../damage/node_ptrs.py" data/data.mdb 100000 >ptrs.txt || fail "node_ptrs.py failed"
    chosen=""
    while read -r off first last; do
        [ "$first" -gt 16400 ] || continue
        rm -rf probe
        cp -r data probe
        flip_byte probe/data.mdb "$off"
        BERTH_UNGUARDED=1 "$BERTH" journal verify --data probe >out.txt 2>err.txt
        [ $? -gt 128 ] || continue
        cp err.txt last_words.txt
        BERTH_UNGUARDED=1 "$BERTH" replay --data probe --genesis >/dev/null 2>&1
        [ $? -gt 128 ] || continue
        chosen=$off
        break
    done <ptrs.txt
    [ -n "$chosen" ] || fail "no node-pointer flip past seq 16400 killed an unguarded walk"
    grep -q '^berth: FATAL SIG[A-Z]* (data directory probe): .*damaged journal pages.*`berth journal verify --data probe`' \
        last_words.txt || fail "no last words from the unguarded walk: $(cat last_words.txt)"
    expect_exit 1 "$BERTH" journal verify --data probe
    grep -qE '^CORRUPT seq 16385: probe/data.mdb.s pages are damaged past seq 16384: reading them killed the walk \(SIG(SEGV|BUS)\)' \
        err.txt || fail "verify did not report the damage past seq 16384: $(cat err.txt)"
    grep -q 'FATAL' err.txt && fail "the guarded child's death printed last words: $(cat err.txt)"
    expect_exit 1 "$BERTH" journal verify --data probe --json
    [ "$(json_field ok <out.txt)" = false ] || fail "json ok is not false: $(cat out.txt)"
    [ "$(json_field first_bad_seq <out.txt)" = 16385 ] || fail "json first_bad_seq: $(cat out.txt)"
    expect_exit 1 "$BERTH" replay --data probe --genesis
    grep -qE '^CORRUPT probe/data.mdb.s pages are damaged: reading them killed `berth replay` \(SIG(SEGV|BUS)\)' \
        err.txt || fail "replay did not report the damage: $(cat err.txt)"
    # a backup: the copy's check dies the same way, and berth removes what it made
    expect_exit 1 "$BERTH" backup --data probe --to pb
    grep -qE '^CORRUPT probe/data.mdb.s pages are damaged: reading them killed `berth backup` \(SIG(SEGV|BUS)\)' \
        err.txt || fail "backup did not report the damage: $(cat err.txt)"
    [ ! -e pb ] && [ ! -e pb.partial ] || fail "a backup killed by damaged pages left pb or pb.partial"
    # the healthy copy still verifies through the child, every seq
    expect_exit 0 "$BERTH" journal verify --data data
    grep -q "^OK $HEAD_SEQ records verified" out.txt || fail "healthy verify: $(cat out.txt)"
}

# Every file's bytes, except that lock.mdb is compared by size only: it is
# LMDB's reader table (shared memory, no journal data), where every reader
# -- berthd's own included -- must register its read transaction. That
# registration is what makes a read safe beside a running berthd, and it
# necessarily rewrites a slot (pid, thread, txn id). The journal itself
# (data.mdb), berthd's LOCK and the set of files must not change at all.
snapshot_dir() {
    find data -type f ! -name lock.mdb | sort | xargs sha256sum
    find data -type f | sort
    wc -c <data/lock.mdb
    ls -l --time-style=+%s data/data.mdb | awk '{ print $1, $5, $6 }'
}

# docs/cli.md's audit session is berth's real output on the seed journal:
# each `$ berth ...` line is run (its `# comment` dropped), `$ cat plan.txt`
# gives the plan the lines under it, and everything printed must be what
# the page shows, blank lines and the `disk` line (file sizes: LMDB's page
# size is the machine's) aside.
case_doc_session() {
    doc=$SRC/../../docs/cli.md
    awk '/^## A short audit session/ { f = 1 } f && /^```$/ { if (++n == 2) exit; next } f && n == 1' \
        "$doc" >doc.txt
    [ "$(grep -c '^\$ berth ' doc.txt)" -ge 6 ] || fail "no audit session in $doc"
    "$MKJOURNAL" --data seed --scenario "$SRC/seed.scenario" >mk.txt 2>mk.err || fail "mkjournal: $(cat mk.err)"
    sed -n '/^\$ cat plan.txt$/,/^\$ /p' doc.txt | sed '1d;$d' >plan.txt
    [ -s plan.txt ] || fail "the session cats no plan.txt"
    grep '^\$ ' doc.txt | while IFS= read -r line; do
        printf '%s\n' "$line"
        case $line in
        '$ berth '*)
            cmd=${line#\$ berth }
            # shellcheck disable=SC2086 # the words of the command line
            "$BERTH" ${cmd%%#*} </dev/null 2>&1 || echo "(exit $?)";;
        '$ cat plan.txt') cat plan.txt;;
        *) echo "(not run: $line)";;
        esac
    done >real.txt
    grep -v -e '^$' -e '^disk ' doc.txt >want.txt
    grep -v -e '^$' -e '^disk ' real.txt >got.txt
    cmp -s want.txt got.txt || { diff want.txt got.txt >&2; fail "docs/cli.md's audit session is not berth's output (< page, > berth)"; }
    # The page's synopsis is each command's --help usage, option for option
    # (wrapped lines joined, spaces squeezed).
    awk '/^```$/ { if (++n == 2) exit; next } n == 1' "$doc" |
        awk '/^berth / { if (l != "") print l; l = $0; next } /^ +\[/ { sub(/^ +/, " "); l = l $0; next }
             END { if (l != "") print l }' | grep -v '^berth help ' | tr -s ' ' >doc_synopsis.txt
    for c in status journal replay history whatif gen timeline backup; do
        "$BERTH" "$c" --help | awk '/^(usage: |       )berth / { sub(/^usage: /, ""); sub(/^ +/, ""); if (l != "") print l; l = $0; next }
            /^ +\[/ && l != "" { sub(/^ +/, " "); l = l $0; next } { if (l != "") print l; l = "" }
            END { if (l != "") print l }'
    done | tr -s ' ' >help_synopsis.txt
    [ "$(wc -l <help_synopsis.txt)" -ge 10 ] || fail "too few usage lines from --help: $(cat help_synopsis.txt)"
    cmp -s doc_synopsis.txt help_synopsis.txt ||
        { diff doc_synopsis.txt help_synopsis.txt >&2; fail "docs/cli.md's synopsis is not --help's (< page, > --help)"; }
    # Every form of gen --expect's comment but the code word's is on the page as printed.
    expect_exit 0 "$BERTH" gen --workers 5 --ops 2000 --seed 3 --reqid-fraction 0.3 --expect
    sed -n 's/^# expect \([A-Z]* (.*)\)$/# expect \1/p' out.txt | sort -u >forms.txt
    [ "$(wc -l <forms.txt)" = 2 ] || fail "gen --expect printed other forms than RETRY and CONFLICT: $(cat forms.txt)"
    tr '\n' ' ' <"$doc" | tr -s ' ' >doc_line.txt
    while IFS= read -r form; do
        grep -qF "\`$form\`" doc_line.txt || fail "docs/cli.md does not say gen --expect prints '$form'"
    done <forms.txt
}

case_whatif_readonly() {
    make_gen_journal
    snapshot_dir >before.txt
    expect_exit 0 "$BERTH" whatif --data data --scenario gen.scenario
    expect_exit 0 "$BERTH" whatif --data data --at 150 --scenario gen.scenario --json --show-state
    expect_exit 0 "$BERTH" whatif --data data --policy EXCLUSIVE=vllm,sglang --rejudge
    expect_exit 0 "$BERTH" status --data data
    expect_exit 0 "$BERTH" journal dump --data data
    expect_exit 0 "$BERTH" journal verify --data data
    expect_exit 0 "$BERTH" replay --data data --at 10
    expect_exit 0 "$BERTH" timeline --data data --out ../whatif_readonly.svg
    snapshot_dir >after.txt
    cmp -s before.txt after.txt || { diff before.txt after.txt >&2; fail "the data directory changed"; }
    [ "$(wc -l <before.txt)" -ge 2 ] || fail "no files hashed: the test proves nothing"
}

case_whatif_scenario() {
    make_journal rejudge.scenario
    expect_exit 0 "$BERTH" whatif --data data --at 7 --scenario "$SRC/plan.scenario" --json
    grep '"type":"outcome"' out.txt | sed 's/.*"line":\([0-9]*\),"seq":\([0-9]*\),"code":"\([A-Z]*\)".*"retry":\([a-z]*\).*/\1:\2:\3:\4/' \
        | tr '\n' ' ' >got.txt
    want="2:8:EXCLUSIVE:false 5:9:OK:false 6:9:OK:true 7:10:NOINSTANCE:false 8:11:NOWORKER:false 9:9:REQID:false "
    [ "$(cat got.txt)" = "$want" ] || fail "outcomes: got '$(cat got.txt)' want '$want'"
    grep -q '"type":"summary","at":7,"commands":6,"ok":1,"refused":4,"retries":1,"queries_answered":4,"queries_skipped":1' out.txt ||
        fail "summary: $(grep summary out.txt)"
    # Queries are answered from the what-if state at their line.
    grep -A1 '"type":"query","line":3,' out.txt | tail -1 | grep -q '"type":"worker","name":"w1".*"exclusive_holder":"v1","instances":\["s1","v1"\]' ||
        fail "WORKER.GET w1 at line 3: $(grep -A1 '"line":3,' out.txt)"
    grep -A1 '"type":"query","line":10,' out.txt | tail -1 | grep -q '"type":"instance","name":"p2".*"deploy_seq":9' ||
        fail "INSTANCE.GET p2 at line 10: $(grep -A1 '"line":10,' out.txt)"
    grep -A1 '"type":"query","line":11,' out.txt | tail -1 | grep -q '"type":"policy","exclusive":\["vllm"\]' ||
        fail "POLICY.GET at line 11"
    grep -q '"type":"query","line":13,"query":"WORKER.GET","name":"nobody","code":"NOWORKER","sentence":"no worker named nobody is registered"}' out.txt ||
        fail "WORKER.GET nobody at line 13: $(grep '"line":13,' out.txt)"
    grep '"code":"EXCLUSIVE"' out.txt | grep -q 'w3.*v1' || fail "EXCLUSIVE sentence does not name w3 and v1"
    [ "$(grep '"type":"state"' out.txt | json_field instances)" = 3 ] || fail "resulting state should hold s1, v1, p2"
    # The journal's own scenario, what-if'd from genesis, reaches the state
    # the engine built from it: same rules, same seqs, same digest.
    expect_exit 0 "$BERTH" whatif --data data --at 0 --scenario "$SRC/rejudge.scenario" --json
    [ "$(grep '"type":"state"' out.txt | json_field digest)" = "$(awk '$1 == "head" { print $3 }' mk.txt)" ] ||
        fail "what-if from genesis differs from the engine's state"
    expect_exit 1 "$BERTH" whatif --data data --at 7 --scenario "$SRC/plan.scenario" --fail-on-refusal
    expect_exit 0 "$BERTH" whatif --data data --at-time 2025-11-26T09:00:06Z --scenario "$SRC/plan.scenario" --json
    grep -q '"at":7,' out.txt || fail "--at-time 09:00:06 is not seq 7"
    printf 'WORKER.ADD w9 GPUS 2\nDEPLOY x MODEL\n' >bad.scenario
    expect_exit 2 "$BERTH" whatif --data data --scenario bad.scenario
    grep -q 'line 2' err.txt || fail "syntax error does not name line 2: $(cat err.txt)"
    printf '# ok\n\nFLUSHALL\n' >bad2.scenario
    expect_exit 2 "$BERTH" whatif --data data --scenario bad2.scenario
    grep -q 'line 3' err.txt || fail "unknown command does not name line 3: $(cat err.txt)"
    # A query with a word too many or too few is berthd's -ERR, not a query
    # skipped or answered: the reader holds berthd's arities.
    for q in 'WORKER.GET' 'WORKER.GET a b' 'instance.get' 'INSTANCE.GET a b' 'POLICY.GET extra' \
             'DIGEST x' 'WATCH' 'JOURNAL.RANGE 1'; do
        printf 'WORKER.ADD w9 GPUS 2\n%s\n' "$q" >arity.scenario
        expect_exit 2 "$BERTH" whatif --data data --scenario arity.scenario
        grep -qx "ERR scenario arity.scenario line 2: wrong number of arguments for '${q%% *}' command" err.txt ||
            fail "'$q': $(cat err.txt)"
    done
    expect_exit 0 sh -c "cat '$SRC/plan.scenario' | '$BERTH' whatif --data data --at 7 --scenario - --json"
    grep -q '"refused":4' out.txt || fail "scenario from stdin differs"
    # Not there: berthd's sentences (cli_vs_berthd compares them with its answers).
    printf 'WORKER.GET nobody\nINSTANCE.GET nothing\n' >absent.scenario
    expect_exit 0 "$BERTH" whatif --data data --scenario absent.scenario
    sed -n 's/^ *\(NO[A-Z]* .*\)/\1/p' out.txt >got.txt
    printf 'NOWORKER no worker named nobody is registered\nNOINSTANCE no instance named nothing is deployed\n' >want.txt
    cmp -s got.txt want.txt || fail "not-there sentences: $(cat got.txt)"
}

case_rejudge() {
    make_journal rejudge.scenario
    # Written under EXCLUSIVE vllm (the genesis policy, re-set at seq 9);
    # judged under EXCLUSIVE vllm,sglang from genesis. Worked out by hand:
    # s2 (5) and v1 (6) meet s1's exclusive hold, their RELEASEs (7, 10)
    # find nothing, and s3 (11) meets s1 again because the journal's
    # POLICY.SET at 9 is replaced, not obeyed.
    expect_exit 0 "$BERTH" whatif --data data --policy EXCLUSIVE=vllm,sglang --rejudge --json
    grep '"type":"differs"' out.txt | sed 's/.*"seq":\([0-9]*\),.*"recorded":"\([A-Z]*\)","rejudged":"\([A-Z]*\)".*"follows_from":\([0-9]*\)}/\1:\2:\3:\4/' \
        | tr '\n' ' ' >got.txt
    want="5:OK:EXCLUSIVE:0 6:OK:EXCLUSIVE:0 7:OK:NOINSTANCE:5 10:OK:NOINSTANCE:6 11:OK:EXCLUSIVE:0 "
    [ "$(cat got.txt)" = "$want" ] || fail "rejudge: got '$(cat got.txt)' want '$want'"
    grep -q '"records":11,"differ":5,"policy_records_replaced":1,"instances_recorded":2,"instances_rejudged":1' out.txt ||
        fail "summary: $(grep summary out.txt)"
    grep '"seq":5,' out.txt | grep -q 'worker w2 .*s1' || fail "seq 5's new refusal does not name w2 and s1"
    expect_exit 1 "$BERTH" whatif --data data --policy EXCLUSIVE=vllm,sglang --rejudge --fail-on-diff
    # The journal's own policy changes nothing.
    expect_exit 0 "$BERTH" whatif --data data --policy EXCLUSIVE=vllm --rejudge --json --fail-on-diff
    [ "$(grep -c '"type":"differs"' out.txt)" = 0 ] || fail "rejudging under the recorded policy differs"
    # Only sglang exclusive: vllm instances hold nothing, so v1 (6) and its
    # RELEASE stand, v2 (8) is no longer refused; the sglang refusals remain.
    expect_exit 0 "$BERTH" whatif --data data --policy sglang --rejudge --json
    grep '"type":"differs"' out.txt | sed 's/.*"seq":\([0-9]*\),.*"recorded":"\([A-Z]*\)","rejudged":"\([A-Z]*\)".*/\1:\2:\3/' \
        | tr '\n' ' ' >got2.txt
    want2="5:OK:EXCLUSIVE 7:OK:NOINSTANCE 8:EXCLUSIVE:OK 11:OK:EXCLUSIVE "
    [ "$(cat got2.txt)" = "$want2" ] || fail "rejudge sglang: got '$(cat got2.txt)' want '$want2'"
    # No exclusive backend at all: only the one EXCLUSIVE refusal changes.
    expect_exit 0 "$BERTH" whatif --data data --policy EXCLUSIVE= --rejudge --json
    grep '"type":"differs"' out.txt | sed 's/.*"seq":\([0-9]*\),.*"recorded":"\([A-Z]*\)","rejudged":"\([A-Z]*\)".*/\1:\2:\3/' \
        | tr '\n' ' ' >got3.txt
    [ "$(cat got3.txt)" = "8:EXCLUSIVE:OK " ] || fail "rejudge with no exclusive backend: got '$(cat got3.txt)'"
    expect_exit 2 "$BERTH" whatif --data data --policy 'EXCLUSIVE=bad!name' --rejudge
    # One word, no spaces: "vllm REQID x" read as words was backend vllm
    # and a request id, dropped; "vllm sglang" two backends. Errors quote
    # the text as typed.
    for p in 'EXCLUSIVE=vllm REQID x' 'vllm sglang' 'EXCLUSIVE= vllm' 'vllm,sglang '; do
        expect_exit 2 "$BERTH" whatif --data data --policy "$p" --rejudge
        [ "$(cat err.txt)" = "ERR --policy '$p' is not a policy: it holds a space; give EXCLUSIVE=b1,b2,... as one word" ] ||
            fail "--policy '$p': $(cat err.txt)"
    done
    expect_exit 2 "$BERTH" whatif --data data --policy FOO=vllm --rejudge
    [ "$(cat err.txt)" = "ERR --policy 'FOO=vllm' is not a policy: ERR POLICY.SET: invalid backend name 'FOO=vllm'" ] ||
        fail "--policy FOO=vllm: $(cat err.txt)"
    expect_exit 2 "$BERTH" whatif --data data --rejudge
}

# rejudge on a generated journal of ~30,000 records (over a hundred
# batches of the feed, thousands of differences), against an oracle that
# shares none of rejudge's machinery: the journal's own commands, each
# POLICY.SET replaced by the new policy, run as a what-if scenario from the
# empty state (scenario mode: one berth_state_apply per line, no feed, no
# tracker). The journal opens with a POLICY.SET, so "the policy in force
# from before seq 1" is that line's replacement in both. Then the build
# whose feed thread prepares every batch and the one whose judging thread
# prepares them all (both with a tiny tracker and output buffer, so they
# grow and flush here) must print the default build's bytes, text and JSON,
# and all three must stop at the same record when one does not parse.
case_rejudge_large() {
    FEED_BERTH=${6:-}
    CALLER_BERTH=${7:-}
    [ -x "$FEED_BERTH" ] && [ -x "$CALLER_BERTH" ] || fail "the two prepare builds are missing"
    expect_exit 0 "$BERTH" gen --workers 40 --ops 30000 --seed 11 --distributed-fraction 0.5
    mv out.txt gen.scenario
    # A marker worker two thousand-odd records in, to corrupt at the end.
    { echo "POLICY.SET EXCLUSIVE vllm"; sed -n '1,3000p' gen.scenario
      echo "WORKER.ADD zzmarkzz GPUS 8"; sed -n '3001,$p' gen.scenario; } >journal.scenario
    "$MKJOURNAL" --data data --scenario journal.scenario --batch 256 >mk.txt 2>mk.err ||
        fail "mkjournal: $(cat mk.err)"
    HEAD_SEQ=$(awk '$1 == "head" { print $2 }' mk.txt)
    [ "$HEAD_SEQ" -gt 20000 ] || fail "generated journal too short: $HEAD_SEQ records"
    expect_exit 0 "$BERTH" journal dump --data data --json
    mv out.txt dump.json
    # seq, recorded code and command of every record; the oracle's scenario.
    awk -F'"' '{ s = $3; gsub(/[:,]/, "", s); print s, $24, $20 }' dump.json >records.txt
    awk -F'"' '{ c = $20; if (c ~ /^POLICY\.SET /) c = "POLICY.SET EXCLUSIVE vllm sglang"
                 print c ($16 != "" ? " REQID " $16 : "") }' dump.json >oracle.scenario
    expect_exit 0 "$BERTH" whatif --data data --at 0 --scenario oracle.scenario --json
    mv out.txt oracle.json
    grep -q '"type":"summary","at":0,"commands":'"$HEAD_SEQ"',.*"retries":0,' oracle.json ||
        fail "the oracle did not apply every record once: $(grep summary oracle.json)"
    # The differences the oracle implies, with the follows-from links
    # worked out from their definition.
    grep '"type":"outcome"' oracle.json | awk -F'"' '{ s = $9; gsub(/[:,]/, "", s); print s, $12, $20 }' \
        >oracle.txt
    [ "$(wc -l <oracle.txt)" -eq "$HEAD_SEQ" ] || fail "the oracle answered $(wc -l <oracle.txt) lines"
    paste -d '|' records.txt oracle.txt | awk -F'|' '{
            split($1, r, " "); split($2, o, " ")
            if (r[1] != o[1]) { print "seq mismatch " r[1] " " o[1]; exit 1 }
            if (r[2] == o[2]) next
            inst = (r[3] == "DEPLOY" || r[3] == "RELEASE") ? r[4] : ""
            follows = (inst != "" && inst in first) ? first[inst] : 0
            if (inst != "" && follows == 0) first[inst] = r[1]
            sentence = $2; sub(/^[^ ]* [^ ]* /, "", sentence)
            print r[1] ":" r[2] ":" o[2] ":" follows ":" sentence }' >want.txt ||
        fail "the oracle's seqs are not the journal's: $(tail -1 want.txt)"
    [ "$(wc -l <want.txt)" -gt 2000 ] || fail "only $(wc -l <want.txt) differences: the test proves little"
    LINKS=$(awk -F: '$4 != 0' want.txt | wc -l)
    [ "$LINKS" -gt 100 ] || fail "only $LINKS follows-from links in the oracle's differences"
    for b in "$BERTH" "$FEED_BERTH" "$CALLER_BERTH"; do
        expect_exit 0 "$b" whatif --data data --policy EXCLUSIVE=vllm,sglang --rejudge --json
        grep '"type":"differs"' out.txt | awk -F'"' '{ s = $7; gsub(/[:,]/, "", s); f = $35; gsub(/[:}]/, "", f)
                                                      print s ":" $16 ":" $20 ":" f ":" $28 }' >got.txt
        cmp -s got.txt want.txt || { diff got.txt want.txt | head -5 >&2; fail "$b: differences differ from the oracle's"; }
        grep -q '"records":'"$HEAD_SEQ"',"differ":'"$(wc -l <want.txt)"',' out.txt ||
            fail "$b: summary $(grep summary out.txt)"
        [ "$(grep '"type":"summary"' out.txt | json_field instances_rejudged)" = \
          "$(grep '"type":"state"' oracle.json | json_field instances)" ] || fail "$b: instances at the head"
        mv out.txt "$(basename "$b").json"
        expect_exit 0 "$b" whatif --data data --policy EXCLUSIVE=vllm,sglang --rejudge
        mv out.txt "$(basename "$b").txt"
    done
    for f in "$(basename "$FEED_BERTH")" "$(basename "$CALLER_BERTH")"; do
        cmp -s "$f.json" "$(basename "$BERTH").json" || fail "$f prints other JSON than the default build"
        cmp -s "$f.txt" "$(basename "$BERTH").txt" || fail "$f prints other text than the default build"
    done
    # The text lists the JSON's differences, with as many follows-from lines.
    awk '$3 == "->" { print $1 ":" $2 ":" $4 }' "$(basename "$BERTH").txt" >text.txt
    cut -d: -f1-3 want.txt | cmp -s - text.txt || fail "the text lists other differences than the JSON"
    [ "$(grep -c 'follows from the changed decision at seq' "$(basename "$BERTH").txt")" = "$LINKS" ] ||
        fail "the text has another number of follows-from lines"
    # A record that does not parse stops every build at that record.
    mark=$(grep '"command":"WORKER.ADD zzmarkzz ' dump.json | json_field seq)
    [ "$mark" -gt 2000 ] || fail "the marker is at seq '$mark'"
    perl -0777 -pi -e 's/zzmarkzz/zz!arkzz/g' data/data.mdb || fail "perl could not flip the byte"
    # Every build prints exactly the differences before that record, in
    # whichever thread's timing: the start of the full run's text.
    for b in "$BERTH" "$FEED_BERTH" "$CALLER_BERTH"; do
        expect_exit 1 "$b" whatif --data data --policy EXCLUSIVE=vllm,sglang --rejudge
        grep -q "^CORRUPT record $mark's command does not parse" err.txt || fail "$b: $(cat err.txt)"
        want=$(awk -v mark="$mark" '$1 + 0 >= mark { exit } { n += length($0) + 1 } END { print n + 0 }' \
            "$(basename "$BERTH").txt")
        [ "$want" -gt 0 ] || fail "no difference before the marker at seq $mark"
        head -c "$want" "$(basename "$BERTH").txt" | cmp -s - out.txt ||
            fail "$b printed $(wc -c <out.txt) bytes before the unparsable record, not the $want the full run printed"
    done
}

case_timeline() {
    make_gen_journal
    expect_exit 0 "$BERTH" timeline --data data --out all.svg --rows-per-group 8
    xmllint --noout all.svg || fail "all.svg is not well-formed XML"
    expect_exit 0 "$BERTH" journal dump --data data --json
    deploys=$(grep -c '"command":"DEPLOY [^"]*","code":"OK"' out.txt)
    bars=$(grep -c '<g class="bar"' all.svg)
    [ "$bars" -eq "$deploys" ] || fail "$bars bars for $deploys successful DEPLOYs"
    [ "$bars" -gt 50 ] || fail "too few instances ($bars) for the test to mean anything"
    grep -q 'class="excl"' all.svg || fail "no exclusive hold marked"
    grep -q 'class="refusal"' all.svg || fail "no refusal tick"
    grep -q 'class="legend"' all.svg || fail "no legend"
    [ "$(grep -c '<g class="group"' all.svg)" -eq 4 ] || fail "30 workers in groups of 8 should make 4 groups"
    # A window: bars for what was live just before it, plus its own deploys.
    expect_exit 0 "$BERTH" timeline --data data --out win.svg --from 200 --to 400
    xmllint --noout win.svg || fail "win.svg is not well-formed XML"
    expect_exit 0 "$BERTH" replay --data data --at 199 --json
    live=$(head -1 out.txt | json_field instances)
    expect_exit 0 "$BERTH" journal dump --data data --from 200 --to 400 --json
    deploys=$(grep -c '"command":"DEPLOY [^"]*","code":"OK"' out.txt)
    bars=$(grep -c '<g class="bar"' win.svg)
    [ "$bars" -eq $((live + deploys)) ] || fail "window: $bars bars for $live live + $deploys deploys"
    expect_exit 0 "$BERTH" timeline --data data --out again.svg --rows-per-group 8
    cmp -s all.svg again.svg || fail "the same journal rendered two different pictures"
    expect_exit 2 "$BERTH" timeline --data data
    expect_exit 2 "$BERTH" timeline --data data --out none.svg --to 0
    [ "$(cat err.txt)" = 'ERR --to 0 names no record: seqs start at 1' ] || fail "timeline --to 0: $(cat err.txt)"
    : >empty.scenario
    "$MKJOURNAL" --data empty --scenario empty.scenario >mk.txt 2>mk.err || fail "mkjournal: $(cat mk.err)"
    expect_exit 2 "$BERTH" timeline --data empty --out none.svg
    [ "$(cat err.txt)" = 'ERR the journal is empty: no records to draw' ] || fail "timeline of an empty journal: $(cat err.txt)"
    # berth only reads a data directory: an --out inside it, or naming one
    # of its files another way (a symbolic link, a hard link, a path through
    # a link to the directory), is refused with exit 2 and the journal stays.
    expect_exit 0 "$BERTH" journal verify --data data
    verified=$(cat out.txt)
    ln -s data datalink
    ln -s data/data.mdb journal.svg
    ln data/history/data.mdb history.svg
    for out in data/data.mdb data/history/data.mdb data/new.svg data datalink/data.mdb \
               datalink/lock.mdb ./data/../data/LOCK journal.svg history.svg "$PWD/data/x.svg"; do
        expect_exit 2 "$BERTH" timeline --data data --out "$out"
        grep -q '^ERR --out ' err.txt || fail "--out $out: no ERR naming --out: $(cat err.txt)"
    done
    [ ! -e data/new.svg ] && [ ! -e data/x.svg ] || fail "timeline wrote into the data directory"
    expect_exit 0 "$BERTH" journal verify --data data
    [ "$(cat out.txt)" = "$verified" ] || fail "the journal changed under refused --out paths"
    expect_exit 0 "$BERTH" timeline --data datalink --out beside.svg
    # A refused DEPLOY lists three workers and one refused: one tick, on
    # its row (each listed worker's row had one). EXISTS is the instance's
    # refusal: no worker's row.
    printf 'WORKER.ADD w1 GPUS 1\nWORKER.ADD w2 GPUS 1\nWORKER.ADD w3 GPUS 1\nWORKER.CORDON w2\nDEPLOY a MODEL m BACKEND vllm ON w1 w2 w3\nDEPLOY b MODEL m BACKEND vllm ON w1\nDEPLOY b MODEL m BACKEND vllm ON w3\n' >refuse.scenario
    "$MKJOURNAL" --data refuse --scenario refuse.scenario >mk.txt 2>mk.err || fail "mkjournal: $(cat mk.err)"
    expect_exit 0 "$BERTH" timeline --data refuse --out refuse.svg
    [ "$(grep -c '<title>seq 5 refused' refuse.svg)" = 1 ] || fail "seq 5: not one tick: $(grep '<title>seq 5' refuse.svg)"
    grep -q '<title>seq 5 refused by w2: CORDONED</title>' refuse.svg || fail "seq 5's tick is not w2's: $(grep '<title>seq 5' refuse.svg)"
    grep -q '<title>seq 7 refused' refuse.svg && fail "EXISTS ticked a worker row"
    grep -q '>x axis: record seq (wall time under each tick); 1 refusals named no worker row<' refuse.svg ||
        fail "EXISTS is not counted as naming no worker row"
}

case_history_status() {
    make_journal rejudge.scenario
    expect_exit 0 "$BERTH" status --data data --json
    [ "$(json_field records <out.txt)" = 11 ] || fail "status records: $(cat out.txt)"
    [ "$(json_field instances <out.txt)" = 2 ] || fail "status instances: $(cat out.txt)"
    grep -q '"policy":\["vllm"\]' out.txt || fail "status policy: $(cat out.txt)"
    expect_exit 0 "$BERTH" journal dump --data data --from 11 --to 11 --json
    [ "$(json_field hash <out.txt)" = "$("$BERTH" status --data data --json | json_field head_hash)" ] ||
        fail "status head hash is not record 11's hash"
    expect_exit 0 "$BERTH" status --data data
    grep -q '^records *11' out.txt || fail "human status: $(cat out.txt)"
    # Every record that touched w3: its ADD, s2 and v1 on it, their
    # RELEASEs, v2 refused naming it, s3 on it.
    expect_exit 0 "$BERTH" history --data data worker w3 --json
    [ "$(json_field seq <out.txt | tr '\n' ' ')" = "3 5 6 7 8 10 11 " ] ||
        fail "history worker w3: $(json_field seq <out.txt | tr '\n' ' ')"
    expect_exit 0 "$BERTH" history --data data instance v1 --json
    [ "$(json_field seq <out.txt | tr '\n' ' ')" = "6 10 " ] || fail "history instance v1: $(cat out.txt)"
    expect_exit 0 "$BERTH" history --data data instance nobody
    grep -q 'no record touched' out.txt || fail "empty history is not said"
    expect_exit 2 "$BERTH" history --data data host w3
    expect_exit 2 "$BERTH" history --data data rebuild --json
    [ "$(head -1 err.txt)" = 'ERR history rebuild takes no --json' ] || fail "rebuild --json: $(cat err.txt)"
    expect_exit 2 "$BERTH" history --data data worker 'bad name'    # Names may start with '-': the word after worker/instance is the name,
    # and -- ends the options (review hV6).
    printf 'WORKER.ADD -w GPUS 1\nWORKER.ADD --json GPUS 1\nWORKER.ADD -h GPUS 1\n' >dash.scenario
    "$MKJOURNAL" --data dash --scenario dash.scenario >mk.txt 2>mk.err || fail "mkjournal: $(cat mk.err)"
    expect_exit 0 "$BERTH" history --data dash worker -w
    grep -q 'WORKER.ADD -w GPUS 1' out.txt || fail "history worker -w: $(cat out.txt)"
    expect_exit 0 "$BERTH" history --data dash --json worker --json
    [ "$(json_field seq <out.txt)" = 2 ] || fail "history worker --json: $(cat out.txt)"
    expect_exit 0 "$BERTH" history worker -h --data dash
    [ "$(grep -c 'WORKER.ADD -h GPUS 1' out.txt)" = 1 ] || fail "history worker -h: $(cat out.txt)"
    expect_exit 0 "$BERTH" history --data dash -- worker -w
    grep -q 'WORKER.ADD -w GPUS 1' out.txt || fail "history -- worker -w: $(cat out.txt)"
    expect_exit 2 "$BERTH" history --data dash worker -w extra
    expect_exit 2 "$BERTH" history --data dash -- --json worker -w
}

case_usage() {
    make_journal rejudge.scenario
    expect_exit 2 "$BERTH"
    expect_exit 0 "$BERTH" help
    grep -q timeline out.txt || fail "help does not list timeline"
    for c in status journal replay history whatif gen timeline; do
        expect_exit 0 "$BERTH" "$c" --help
        grep -q "usage: berth $c" out.txt || fail "$c --help has no usage line"
        expect_exit 0 "$BERTH" help "$c"
    done
    expect_exit 2 "$BERTH" frobnicate
    grep -q '^ERR ' err.txt || fail "error does not start with a code word: $(cat err.txt)"
    expect_exit 2 "$BERTH" replay
    expect_exit 2 "$BERTH" replay --data data --at x
    expect_exit 2 "$BERTH" replay --data data --bogus
    expect_exit 2 "$BERTH" replay --data data --at 1 --at-time 2025-11-26T09:00:00Z
    # UINT64_MAX is a seq past the head like any other, not "the head".
    expect_exit 2 "$BERTH" replay --data data --at 18446744073709551615
    grep -q '^ERR seq 18446744073709551615 is beyond the journal head 11' err.txt || fail "replay --at max: $(cat err.txt)"
    expect_exit 2 "$BERTH" whatif --data data --at 18446744073709551615 --scenario /dev/null
    grep -q '^ERR seq 18446744073709551615 is beyond the journal head 11' err.txt || fail "whatif --at max: $(cat err.txt)"
    expect_exit 2 "$BERTH" replay --data data --at 12
    expect_exit 0 "$BERTH" replay --data data --at 11
    expect_exit 2 "$BERTH" replay --data "$WORK/missing"
    expect_exit 2 "$BERTH" journal
    expect_exit 2 "$BERTH" journal dump --data data --from 5 --to 4
    [ "$(cat err.txt)" = 'ERR --to 4 is before --from 5' ] || fail "dump --from 5 --to 4: $(cat err.txt)"
    # Seqs start at 1: --to 0 says so, quoting it as typed, not "before --from 1".
    expect_exit 2 "$BERTH" journal dump --data data --from 0 --to 0
    [ "$(cat err.txt)" = 'ERR --to 0 names no record: seqs start at 1' ] || fail "dump --to 0: $(cat err.txt)"
    expect_exit 2 "$BERTH" journal dump --data data --to 00
    [ "$(cat err.txt)" = 'ERR --to 00 names no record: seqs start at 1' ] || fail "dump --to 00: $(cat err.txt)"
    expect_exit 2 "$BERTH" journal verify --data data --from 3
    expect_exit 2 "$BERTH" whatif --data data
}

# Record times that go backwards (review hV6). berth's engine stamps no
# record earlier than the head's, so a second writer session whose clock
# stepped back keeps them level; a journal written past the engine (--raw:
# an older berth) can still have them, and --at-time then answers the last
# record at or before the time, by a scan, with a WARN naming the step back
# (a binary search answered seq 0 here).
case_at_time_back() {
    printf 'WORKER.ADD a GPUS 1\nWORKER.ADD b GPUS 1\nWORKER.ADD c GPUS 1\nWORKER.ADD d GPUS 1\nWORKER.ADD e GPUS 1\n' >s1
    printf 'WORKER.ADD f GPUS 1\nWORKER.ADD g GPUS 1\n' >s2
    # seqs 1-5 at 00:00:10Z..14Z; then seqs 6-7 asked at 00:00:01Z, 02Z
    "$MKJOURNAL" --data eng --scenario s1 --time-start 1735689610000 >mk.txt 2>mk.err || fail "mkjournal: $(cat mk.err)"
    "$MKJOURNAL" --data eng --scenario s2 --time-start 1735689601000 >mk.txt 2>mk.err || fail "mkjournal: $(cat mk.err)"
    expect_exit 0 "$BERTH" journal dump --data eng --from 6 --to 7 --json
    [ "$(json_field time_ms <out.txt | tr '\n' ' ')" = "1735689614000 1735689614000 " ] ||
        fail "the engine stamped a stepped-back clock: $(json_field time_ms <out.txt | tr '\n' ' ')"
    expect_exit 0 "$BERTH" replay --data eng --at-time 2025-01-01T00:00:05Z --json
    [ "$(head -1 out.txt | json_field seq)" = 0 ] || fail "engine journal: 00:00:05Z is not before seq 1"
    [ -s err.txt ] && fail "a warning on a journal whose times never decrease: $(cat err.txt)"
    expect_exit 0 "$BERTH" replay --data eng --at-time 2025-01-01T00:00:14Z --json
    [ "$(head -1 out.txt | json_field seq)" = 7 ] || fail "engine journal: 00:00:14Z is not seq 7"
    # The same sessions written past the engine: times go back at seq 6.
    "$MKJOURNAL" --raw 1 --data raw --scenario s1 --time-start 1735689610000 >mk.txt 2>mk.err || fail "mkjournal: $(cat mk.err)"
    "$MKJOURNAL" --raw 1 --data raw --scenario s2 --time-start 1735689601000 >mk.txt 2>mk.err || fail "mkjournal: $(cat mk.err)"
    expect_exit 0 "$BERTH" journal verify --data raw
    expect_exit 0 "$BERTH" replay --data raw --at-time 2025-01-01T00:00:05Z --json
    [ "$(head -1 out.txt | json_field seq)" = 7 ] || fail "raw journal: 00:00:05Z is not seq 7: $(head -1 out.txt)"
    grep -q '^WARN record times go backwards at seq 6 (2025-01-01T00:00:01.000Z after 2025-01-01T00:00:14.000Z at seq 5' err.txt ||
        fail "no warning naming seq 6: $(cat err.txt)"
    expect_exit 0 "$BERTH" replay --data raw --at-time 2025-01-01T00:00:12Z --json
    [ "$(head -1 out.txt | json_field seq)" = 7 ] || fail "raw journal: 00:00:12Z is not seq 7"
    expect_exit 0 "$BERTH" replay --data raw --at-time 2025-01-01T00:00:00Z --json
    [ "$(head -1 out.txt | json_field seq)" = 0 ] || fail "raw journal: 00:00:00Z is not seq 0"
    expect_exit 0 "$BERTH" whatif --data raw --at-time 2025-01-01T00:00:01Z --scenario /dev/null
    grep -q '^what-if from seq 6:' out.txt || fail "whatif --at-time 00:00:01Z is not seq 6: $(cat out.txt)"
    grep -q '^WARN record times go backwards at seq 6' err.txt || fail "whatif gave no warning: $(cat err.txt)"
}

# A REQID repeated within the window, written past the engine (review hV6):
# verify, whatif --rejudge and timeline each report CORRUPT naming seq 3
# (rejudge and timeline aborted on core's assert, and the guard then blamed
# data.mdb's pages).
case_reqid_damage() {
    printf 'WORKER.ADD w GPUS 1\nWORKER.CORDON w REQID r1\nWORKER.UNCORDON w REQID r1\n' >s
    "$MKJOURNAL" --raw 1 --data data --scenario s >mk.txt 2>mk.err || fail "mkjournal: $(cat mk.err)"
    want='CORRUPT seq 3: request id r1 repeats the one of seq 2, still in the window'
    expect_exit 1 "$BERTH" journal verify --data data
    grep -qF "$want" err.txt || fail "verify: $(cat err.txt)"
    for guard in 0 1; do
        expect_exit 1 env BERTH_UNGUARDED=$guard "$BERTH" whatif --data data --policy EXCLUSIVE=vllm --rejudge
        grep -qF "seq 3: request id r1 repeats the one of seq 2, still in the window" err.txt ||
            fail "rejudge (unguarded=$guard): $(cat err.txt)"
        expect_exit 1 env BERTH_UNGUARDED=$guard "$BERTH" timeline --data data --out t.svg
        grep -qF "$want" err.txt || fail "timeline (unguarded=$guard): $(cat err.txt)"
    done
}

# The guarded child dying of SIGABRT (an assertion that failed) is an
# internal error, not damaged pages (review hV6): berth says so, asks for a
# report with the command, and exits 2. The child is caught waiting on a
# FIFO scenario, its journal open, and sent SIGABRT as an assert would raise
# it. Unguarded, berth's own last words say the same.
wait_holds_journal() {   # wait_holds_journal PID: until PID has data/data.mdb open (10 s at most)
    tries=0
    until ls -l "/proc/$1/fd" 2>/dev/null | grep -q 'data/data.mdb'; do
        tries=$((tries + 1))
        [ "$tries" -lt 200 ] || fail "process $1 never opened the journal"
        sleep 0.05
    done
}

case_internal_error() {
    make_journal rejudge.scenario
    mkfifo plan.fifo || fail "mkfifo"
    "$BERTH" whatif --data data --scenario plan.fifo >out.txt 2>err.txt &
    parent=$!
    tries=0
    child=
    while [ -z "$child" ]; do
        child=$(pgrep -P "$parent" | head -1)
        tries=$((tries + 1))
        [ "$tries" -lt 200 ] || fail "no guarded child appeared"
        [ -n "$child" ] || sleep 0.05
    done
    wait_holds_journal "$child"   # past its setup, blocked opening the FIFO
    kill -ABRT "$child"
    wait "$parent"
    got=$?
    [ "$got" = 2 ] || fail "exit $got, wanted 2: $(cat err.txt)"
    grep -q '^INTERNAL `berth whatif` stopped on an internal error (SIGABRT: an assertion failed' err.txt ||
        fail "no internal-error report: $(cat err.txt)"
    grep -qF "berth whatif --data data --scenario plan.fifo" err.txt || fail "the command is not repeated: $(cat err.txt)"
    grep -q 'pages are damaged\|CORRUPT' err.txt && fail "SIGABRT blamed on the data: $(cat err.txt)"
    BERTH_UNGUARDED=1 "$BERTH" whatif --data data --scenario plan.fifo >out.txt 2>err.txt &
    pid=$!
    wait_holds_journal "$pid"     # its last words installed, blocked opening the FIFO
    kill -ABRT "$pid"
    wait "$pid"
    got=$?
    [ "$got" -gt 128 ] || fail "unguarded berth did not die of the signal: exit $got"
    grep -q '^berth: FATAL SIGABRT (data directory data): an internal check failed' err.txt ||
        fail "unguarded last words: $(cat err.txt)"
    grep -q 'the likely cause is damaged' err.txt && fail "the last words blame the pages: $(cat err.txt)"
}

# berthd serving the same data directory: berth, reading beside it, must
# give berthd's own answers at the same seq.
BERTHD_PID=
stop_berthd() {
    if [ -n "$BERTHD_PID" ]; then
        kill "$BERTHD_PID" 2>/dev/null
        wait "$BERTHD_PID" 2>/dev/null
        BERTHD_PID=
    fi
}

rcli() {
    redis-cli -s "$WORK/berthd.sock" "$@"
}

record_hashes() {   # record_hashes < redis-cli's records: each record's hash, a line each
    awk 'take { print; take = 0; next } $0 == "hash" { take = 1 }'
}

# berthd on ./data, on a unix socket only, stopped at exit; returns once it
# answers PING (10 s at most).
start_berthd_on_data() {
    trap stop_berthd EXIT
    "$BERTHD" --data data --port 0 --unixsocket "$WORK/berthd.sock" >berthd.log 2>&1 &
    BERTHD_PID=$!
    tries=0
    until rcli PING 2>/dev/null | grep -q PONG; do
        tries=$((tries + 1))
        [ "$tries" -lt 100 ] || fail "berthd did not answer: $(cat berthd.log)"
        sleep 0.1
    done
}

case_vs_berthd() {
    [ -n "$BERTHD" ] && [ -x "$BERTHD" ] || fail "berthd is not built: $BERTHD"
    command -v redis-cli >/dev/null || fail "redis-cli missing: apt-get install -y redis-tools"
    make_gen_journal
    start_berthd_on_data
    for seq in 150 300 "$HEAD_SEQ"; do
        expect_exit 0 "$BERTH" replay --data data --at "$seq" --json
        mv out.txt replay.json
        [ "$(rcli AT "$seq" DIGEST)" = "$(head -1 replay.json | json_field digest)" ] ||
            fail "berthd's digest at $seq differs from berth replay's"
        grep '"type":"instance"' replay.json | json_field name >ours.txt
        rcli AT "$seq" INSTANCE.LIST >theirs.txt
        cmp -s ours.txt theirs.txt || fail "instances at $seq differ from berthd's"
        grep '"type":"worker"' replay.json | json_field name >ours.txt
        rcli AT "$seq" WORKER.LIST >theirs.txt
        cmp -s ours.txt theirs.txt || fail "workers at $seq differ from berthd's"
    done
    # what-if's answers to a query for a name that is not there are berthd's.
    printf 'WORKER.GET nosuch\nINSTANCE.GET nosuch\n' >absent.scenario
    expect_exit 0 "$BERTH" whatif --data data --scenario absent.scenario
    sed -n 's/^ *\(NO[A-Z]* .*\)/\1/p' out.txt >ours.txt
    # (redis-cli prints an empty line after each error reply.)
    { rcli WORKER.GET nosuch; rcli INSTANCE.GET nosuch; } | sed '/^$/d' >theirs.txt
    [ "$(wc -l <ours.txt)" = 2 ] && cmp -s ours.txt theirs.txt ||
        fail "what-if's not-there answers differ from berthd's: $(cat ours.txt) / $(cat theirs.txt)"
    # dump's hashes are berthd's JOURNAL.RANGE hashes
    expect_exit 0 "$BERTH" journal dump --data data --from 100 --to 149 --json
    json_field hash <out.txt >ours.txt
    rcli JOURNAL.RANGE 100 50 | record_hashes >theirs.txt
    cmp -s ours.txt theirs.txt || fail "dump hashes differ from berthd's JOURNAL.RANGE"
    # berth reads beside the live writer and sees what it commits. berthd
    # acknowledges a write once its commit log is synced and moves it into
    # LMDB, which berth reads, ~10 ms later (docs/server.md, "The commit
    # log"); until then berth's note names it. A berth that starts within
    # those 10 ms (session 20's machine, every time) reads the head before it.
    rcli WORKER.ADD late-worker GPUS 2 >/dev/null || fail "berthd refused a write"
    tries=0
    while :; do
        expect_exit 0 "$BERTH" status --data data --json
        got=$(json_field records <out.txt)
        [ "$got" = $((HEAD_SEQ + 1)) ] && break
        [ "$got" = "$HEAD_SEQ" ] || fail "status beside berthd: $got records, not $HEAD_SEQ or $((HEAD_SEQ + 1))"
        grep -q "holds 1 acknowledged records after seq $HEAD_SEQ" err.txt ||
            fail "status beside berthd missed the new record and said nothing of it: $(cat err.txt)"
        tries=$((tries + 1))
        [ "$tries" -lt 200 ] || fail "status beside berthd missed the new record for 10 s"
        sleep 0.05
    done
    expect_exit 0 "$BERTH" journal verify --data data
    expect_exit 0 "$BERTH" history --data data worker late-worker --json
    [ "$(json_field seq <out.txt)" = $((HEAD_SEQ + 1)) ] || fail "history beside berthd: $(cat out.txt)"
    [ "$(rcli DIGEST)" = "$("$BERTH" replay --data data --json | head -1 | json_field digest)" ] ||
        fail "head digest differs from berthd's"
    stop_berthd
}

# history rebuild: a journal whose touch log was trimmed (mkjournal folds
# every 64 records and waits for each fold, so the commits after it trim)
# loses or damages its HISTORY index. The tool and every writable open then
# refuse it naming `berth history rebuild`; the rebuild gives every worker
# and instance the same answers as before, keeps a damaged index aside, and
# the directory then takes writes (folds and trims) exactly as a twin that
# never lost its index. Refused beside a writer (LOCKED) and on a journal
# that does not verify (nothing changed). With berthd: refused before,
# served and written after, and the rebuild refused while it runs.
# Unguarded (in-process, no child per run): these read healthy directories,
# the guard has tests of its own, and ~1,500 guarded runs under ASan took
# 259 s of this test's 300 on session 10's machine (a fork of an ASan
# process is slow).
history_all() {   # history_all DIR: every named worker's and instance's records
    while read -r kind name; do
        BERTH_UNGUARDED=1 "$BERTH" history --data "$1" "$kind" "$name" --json ||
            fail "history $kind $name in $1"
    done <names.txt
}

rebuild_ok() {   # rebuild_ok: rebuild data, check its line, compare every answer
    expect_exit 0 "$BERTH" history rebuild --data data
    grep -Eq "^rebuilt the history index of data: $HEAD_SEQ records replayed, $ENTRIES names written, [0-9]+\.[0-9]{3} s$" out.txt ||
        fail "rebuild line: $(cat out.txt)"
    ENTRIES=$(sed -n 's/.*replayed, \([0-9]*\) names.*/\1/p' out.txt)
    [ "$ENTRIES" -gt "$HEAD_SEQ" ] || fail "only $ENTRIES names written for $HEAD_SEQ records"
    [ ! -e data/history.rebuild ] || fail "history.rebuild left behind"
    history_all data >after.txt
    cmp -s before.txt after.txt || fail "answers differ after the rebuild ($1)"
}

refused() {   # refused WHY: the tool refuses data with WHY and the command
    expect_exit 1 "$BERTH" history --data data worker node-00000
    grep -q "$1" err.txt || fail "refusal does not say '$1': $(cat err.txt)"
    grep -q 'rebuild it from the journal with `berth history rebuild --data data`' err.txt ||
        fail "refusal does not name the command: $(cat err.txt)"
}

case_history_rebuild() {
    expect_exit 0 "$BERTH" gen --workers 30 --ops 3000 --seed 7 --distributed-fraction 0.4
    mv out.txt gen.scenario
    expect_exit 0 "$BERTH" gen --workers 30 --ops 600 --seed 8 --distributed-fraction 0.4
    grep -v '^WORKER.ADD ' out.txt >more.scenario
    for d in data twin; do
        "$MKJOURNAL" --data $d --scenario gen.scenario --batch 16 --fold-records 64 >mk.txt 2>mk.err ||
            fail "mkjournal: $(cat mk.err)"
    done
    HEAD_SEQ=$(awk '$1 == "head" { print $2 }' mk.txt)
    # every worker and one instance in sixteen (a berth run per name, seven
    # times over: all 1,500 instances would take minutes; with one in eight
    # the test took 339 s under ASan in a CI run of session 10)
    { awk '$1 == "WORKER.ADD" { print "worker", $2 }' gen.scenario | sort -u
      awk '$1 == "DEPLOY" { print "instance", $2 }' gen.scenario | sort -u | awk 'NR % 16 == 1'; } >names.txt
    history_all data >before.txt
    [ "$(wc -l <before.txt)" -gt "$HEAD_SEQ" ] || fail "only $(wc -l <before.txt) answers for $HEAD_SEQ records"
    ENTRIES='[0-9]+'   # the first rebuild's count, then every later one's

    # the size on disk counts the index too
    expect_exit 0 "$BERTH" status --data data --json
    HDISK=$(json_field history_disk_bytes <out.txt)
    [ "$HDISK" -eq "$(wc -c <data/history/data.mdb)" ] || fail "history_disk_bytes: $(cat out.txt)"
    [ "$(json_field disk_bytes <out.txt)" -eq $(($(wc -c <data/data.mdb) + HDISK)) ] ||
        fail "disk_bytes is not data.mdb + history/data.mdb: $(cat out.txt)"

    rm -rf data/history
    refused 'is missing'
    rebuild_ok missing
    [ ! -e data/history.damaged-1 ] || fail "a missing index was kept aside"
    size=$(wc -c <data/history/data.mdb)
    dd if=data/history/data.mdb of=cut.mdb bs=1 count=$((size / 2)) 2>/dev/null
    mv cut.mdb data/history/data.mdb
    refused 'is truncated'
    rebuild_ok cut
    : >data/history/data.mdb
    refused 'is missing (or empty)'
    rebuild_ok emptied
    head -c 20000 /dev/urandom >data/history/data.mdb
    refused 'not an LMDB file'
    rebuild_ok garbage
    for n in 1 2 3; do
        [ -f data/history.damaged-$n/data.mdb ] || fail "damaged index $n was not kept aside"
    done
    [ "$(wc -c <data/history.damaged-3/data.mdb)" -eq 20000 ] || fail "the garbage was not kept as it was"

    # the rebuilt directory takes writes, folds and trims as its twin does
    for d in data twin; do
        "$MKJOURNAL" --data $d --scenario more.scenario --batch 16 --fold-records 64 \
            --time-start 1764200000000 >mk.txt 2>mk.err || fail "mkjournal more: $(cat mk.err)"
    done
    history_all data >data.txt
    history_all twin >twin.txt
    cmp -s data.txt twin.txt || fail "after more writes the rebuilt index differs from the twin's"
    [ "$(wc -l <data.txt)" -gt "$(wc -l <before.txt)" ] || fail "the writes after the rebuild added nothing"
    [ "$("$BERTH" replay --data data --json | head -1)" = "$("$BERTH" replay --data twin --json | head -1)" ] ||
        fail "the twin's state differs"

    # refused beside a writer: the lock is berthd's flock on LOCK
    flock data/LOCK sleep 2 &
    LOCKER=$!
    sleep 0.5
    expect_exit 2 "$BERTH" history rebuild --data data
    grep -q '^LOCKED .*in use by another berthd' err.txt || fail "not LOCKED: $(cat err.txt)"
    wait "$LOCKER"
    expect_exit 2 "$BERTH" history rebuild
    expect_exit 2 "$BERTH" history rebuild --data data --json
    grep -q '^ERR history rebuild takes no --json' err.txt || fail "rebuild --json: $(cat err.txt)"
    expect_exit 2 "$BERTH" history rebuild --data data --journal etcd
    expect_exit 2 "$BERTH" history rebuild --data "$WORK/missing"
    [ ! -e "$WORK/missing" ] || fail "a rebuild created a data directory"

    # a journal that does not verify: a finding, and the index is untouched
    make_journal_in bad seed.scenario
    rm -rf bad/history
    perl -0777 -pi -e 's/zzmarkzz/zzmarkzy/g' bad/data.mdb || fail "perl could not flip the byte"
    expect_exit 1 "$BERTH" history rebuild --data bad
    grep -q '^CORRUPT .*seq 3.*nothing was changed' err.txt || fail "bad journal: $(cat err.txt)"
    [ ! -e bad/history ] && [ ! -e bad/history.rebuild ] || fail "a failed rebuild changed the directory"

    [ -n "$BERTHD" ] || return 0
    command -v redis-cli >/dev/null || fail "redis-cli missing: apt-get install -y redis-tools"
    rm -rf data/history
    expect_exit 1 "$BERTHD" --data data --port 0 --unixsocket "$WORK/berthd.sock"
    grep -q 'rebuild it from the journal with `berth history rebuild --data data`' err.txt ||
        fail "berthd's refusal does not name the command: $(cat err.txt)"
    expect_exit 0 "$BERTH" history rebuild --data data
    start_berthd_on_data
    expect_exit 2 "$BERTH" history rebuild --data data
    grep -q '^LOCKED ' err.txt || fail "rebuild beside berthd: $(cat err.txt)"
    rcli WORKER.ADD after-rebuild GPUS 2 >/dev/null || fail "berthd refused a write"
    rcli RELEASE nobody-at-all >/dev/null
    expect_exit 0 "$BERTH" history --data data worker node-00003 --json
    json_field hash <out.txt >ours.txt
    rcli HISTORY WORKER node-00003 1 1000 | record_hashes >theirs.txt
    [ -s ours.txt ] && cmp -s ours.txt theirs.txt || fail "berthd's HISTORY differs from the rebuilt index's"
    [ "$(rcli HISTORY WORKER after-rebuild | record_hashes | grep -cE '^[0-9a-f]{64}$')" -eq 1 ] ||
        fail "the new write is not in HISTORY"
    stop_berthd
}

# Journals another writer made (forge: hash-valid records berthd never
# writes; review hV6). Their strings never reach a terminal raw: dump and
# verify show control bytes as \xNN.
case_foreign() {
    FORGE=${6:-}
    [ -x "$FORGE" ] || fail "forge is missing"
    esc=$(printf '\033')
    printf '%s\n' 'R - WORKER.ADD w GPUS 1' 'R - RELEASE x\x1b]0;pwn\x07\x1b[2J' \
        'S instance a is not deployed\x1b[2J' 'R - RELEASE a' >esc.forge
    "$FORGE" esc esc.forge || fail "forge failed"
    expect_exit 0 "$BERTH" journal dump --data esc
    ! grep -q "$esc" out.txt || fail "dump printed an ESC byte raw"
    grep -qF 'RELEASE x\x1b]0;pwn\x07\x1b[2J' out.txt || fail "dump did not escape the command: $(cat out.txt)"
    grep -qF 'instance a is not deployed\x1b[2J' out.txt || fail "dump did not escape the sentence: $(cat out.txt)"
    expect_exit 1 "$BERTH" journal verify --data esc
    grep -q '^CORRUPT seq 2: command does not parse' err.txt || fail "verify: $(cat err.txt)"
    # the forged sentence alone: verify quotes it, escaped
    printf '%s\n' 'R - WORKER.ADD w GPUS 1' 'S instance a is not deployed\x1b[2J' 'R - RELEASE a' >sent.forge
    "$FORGE" sent sent.forge || fail "forge failed"
    expect_exit 1 "$BERTH" journal verify --data sent
    ! grep -q "$esc" err.txt || fail "verify printed an ESC byte raw"
    grep -qF 'recorded sentence "instance a is not deployed\x1b[2J"' err.txt || fail "verify: $(cat err.txt)"
    # A command that parses but is not spelt as berthd spells it: its
    # REQID window entry would hold the wrong text's hash.
    printf '%s\n' 'R - WORKER.ADD w GPUS 4' 'R r1 release x' >canon.forge
    "$FORGE" canon canon.forge || fail "forge failed"
    expect_exit 1 "$BERTH" journal verify --data canon
    grep -qF 'CORRUPT seq 2: command is not in canonical form: "release x" is written "RELEASE x"' err.txt ||
        fail "verify took a non-canonical command: $(cat err.txt)"
}

# backup: a copy that verifies, replays to the same digest and answers
# HISTORY as the original (its index rebuilt from the copy's journal, whose
# touch log was trimmed: mkjournal folds every 64 records); refusals that
# write nothing; a source that does not verify and a full disk leave no
# DEST and no DEST.partial; beside a berthd under writes, the copy is the
# journal as of one seq (berthd's own AT digest), and a berthd starts on it.
backup_names() {   # backup_names DIR: HISTORY of a sample of names, in-process
    while read -r kind name; do
        BERTH_UNGUARDED=1 "$BERTH" history --data "$1" "$kind" "$name" --json || fail "history $kind $name in $1"
    done <names.txt
}

case_backup() {
    expect_exit 0 "$BERTH" gen --workers 30 --ops 1200 --seed 7 --distributed-fraction 0.4
    mv out.txt gen.scenario
    "$MKJOURNAL" --data data --scenario gen.scenario --batch 16 --fold-records 64 --snapshot-every 100 \
        >mk.txt 2>mk.err || fail "mkjournal: $(cat mk.err)"
    HEAD_SEQ=$(awk '$1 == "head" { print $2 }' mk.txt)
    HEAD_DIGEST=$(awk '$1 == "head" { print $3 }' mk.txt)
    { awk '$1 == "WORKER.ADD" { print "worker", $2 }' gen.scenario | sort -u | awk 'NR % 4 == 1'
      awk '$1 == "DEPLOY" { print "instance", $2 }' gen.scenario | sort -u | awk 'NR % 16 == 1'; } >names.txt
    sum_before=$(sha256sum data/data.mdb | cut -d' ' -f1)

    expect_exit 0 "$BERTH" backup --data data --to b1
    grep -Eq "^backed up data to b1: records 1\.\.$HEAD_SEQ \(head hash [0-9a-f]{64}\), every one checked; data\.mdb [0-9]+ bytes, history index rebuilt \([0-9]+ names\); [0-9]+\.[0-9]{3} s$" out.txt ||
        fail "backup line: $(cat out.txt)"
    [ ! -e b1.partial ] || fail "b1.partial left behind"
    [ "$(sha256sum data/data.mdb | cut -d' ' -f1)" = "$sum_before" ] || fail "the backup changed data/data.mdb"
    [ "$(stat -c %a b1/data.mdb)" = 600 ] || fail "b1/data.mdb is mode $(stat -c %a b1/data.mdb), not 600"
    expect_exit 0 "$BERTH" journal verify --data b1
    grep -q "^OK $HEAD_SEQ records" out.txt || fail "verify of the copy: $(cat out.txt)"
    [ "$("$BERTH" replay --data b1 --json | head -1 | json_field digest)" = "$HEAD_DIGEST" ] ||
        fail "the copy replays to another digest"
    [ "$("$BERTH" replay --data b1 --json --genesis | head -1 | json_field digest)" = "$HEAD_DIGEST" ] ||
        fail "the copy replays from genesis to another digest"
    backup_names data >before.txt
    backup_names b1 >after.txt
    [ "$(wc -l <before.txt)" -gt 100 ] || fail "only $(wc -l <before.txt) HISTORY answers to compare"
    cmp -s before.txt after.txt || fail "HISTORY answers differ in the copy"
    expect_exit 0 "$BERTH" backup --data data --to b2/ --json
    [ "$(json_field head_seq <out.txt)" = "$HEAD_SEQ" ] && [ "$(json_field records_checked <out.txt)" = "$HEAD_SEQ" ] ||
        fail "backup --json: $(cat out.txt)"
    [ "$(json_field head_hash <out.txt)" = "$("$BERTH" status --data data --json | json_field head_hash)" ] ||
        fail "backup --json head_hash is not the journal's: $(cat out.txt)"
    # An empty journal: no records, not "records 1..0".
    : >empty.scenario
    "$MKJOURNAL" --data empty --scenario empty.scenario >mk.txt 2>mk.err || fail "mkjournal: $(cat mk.err)"
    expect_exit 0 "$BERTH" backup --data empty --to b0
    grep -Eq "^backed up empty to b0: no records, the journal is empty \(head hash 0{64}\); data\.mdb [0-9]+ bytes, history index rebuilt \(0 names\); [0-9]+\.[0-9]{3} s$" out.txt ||
        fail "backup line of an empty journal: $(cat out.txt)"

    # refused, nothing written
    expect_exit 2 "$BERTH" backup --data data --to b1
    grep -q '^ERR --to b1 already exists' err.txt || fail "backup over b1: $(cat err.txt)"
    expect_exit 2 "$BERTH" backup --data data --to data/inside
    grep -q 'is inside the data directory' err.txt || fail "backup into data: $(cat err.txt)"
    [ ! -e data/inside ] && [ ! -e data/inside.partial ] || fail "a refused backup wrote into data"
    expect_exit 2 "$BERTH" backup --data data
    grep -q '^ERR no destination given' err.txt || fail "backup without --to: $(cat err.txt)"
    mkdir b3.partial
    expect_exit 2 "$BERTH" backup --data data --to b3
    grep -q '^ERR b3.partial already exists: berth backup builds a backup to b3 there' err.txt || fail "leftover partial: $(cat err.txt)"
    [ ! -e b3 ] || fail "b3 made beside a leftover b3.partial"
    rmdir b3.partial
    expect_exit 2 "$BERTH" backup --data data --to ''
    grep -q '^ERR no destination given' err.txt || fail "backup --to '': $(cat err.txt)"
    cp -r data prod.partial
    expect_exit 2 "$BERTH" backup --data prod.partial --to prod
    grep -q '^ERR --to prod.partial is inside the data directory prod.partial' err.txt ||
        fail "backup of X.partial to X: $(cat err.txt)"
    rm -rf prod.partial
    expect_exit 2 "$BERTH" backup --data nosuch --to b3
    [ ! -e b3 ] && [ ! -e b3.partial ] || fail "a backup of no directory left b3 or b3.partial"

    # a copy that does not verify is no backup
    cp -r data bad
    victim=$(awk '$1 == "WORKER.ADD" { print $2; exit }' gen.scenario)
    grep -c "$victim" bad/data.mdb >/dev/null || fail "$victim not found in data.mdb"
    perl -0777 -pi -e "s/$victim GPUS/${victim%?}Z GPUS/g" bad/data.mdb || fail "perl could not flip the byte"
    expect_exit 1 "$BERTH" backup --data bad --to b4
    grep -q '^CORRUPT cannot back up bad: its copy does not verify: seq [0-9]*: hash mismatch.*the copy is removed, and bad/data.mdb holds the same bytes' err.txt ||
        fail "backup of a damaged journal: $(cat err.txt)"
    [ ! -e b4 ] && [ ! -e b4.partial ] || fail "a failed backup left b4 or b4.partial"

    # a full disk (a file size limit: berth ignores SIGXFSZ, so the write fails with EFBIG)
    (ulimit -f 64; "$BERTH" backup --data data --to b5 >out.txt 2>err.txt)
    rc=$?
    [ $rc = 2 ] || fail "backup under a file size limit: exit $rc: $(cat err.txt)"
    grep -q '^FULL cannot back up data: copying the journal into b5.partial/data.mdb failed' err.txt ||
        fail "backup under a file size limit: $(cat err.txt)"
    [ ! -e b5 ] && [ ! -e b5.partial ] || fail "a full disk left b5 or b5.partial"

    [ -n "$BERTHD" ] || return 0
    # beside berthd under writes: the copy is the journal at one seq
    start_berthd_on_data
    i=0
    while [ $i -lt 3000 ]; do echo "WORKER.ADD live-$i GPUS 1"; i=$((i + 1)); done >writes.txt
    rcli <writes.txt >acks.txt &
    WRITER=$!
    sleep 0.2
    expect_exit 0 "$BERTH" backup --data data --to b6 --json
    wait $WRITER
    [ "$(grep -c '^[0-9]*$' acks.txt)" = 3000 ] || fail "berthd refused writes during the backup"
    SEQ6=$(json_field head_seq <out.txt)
    [ "$SEQ6" -ge "$HEAD_SEQ" ] || fail "the live copy ends at $SEQ6, before $HEAD_SEQ"
    echo "backup beside berthd: records 1..$SEQ6 of $(rcli JOURNAL.HEAD | sed -n 2p)"
    expect_exit 0 "$BERTH" replay --data b6 --json
    [ "$(head -1 out.txt | json_field digest)" = "$(rcli AT "$SEQ6" DIGEST)" ] ||
        fail "the live copy's digest is not berthd's at $SEQ6"
    stop_berthd
    rm -f "$WORK/berthd.sock"
    rm -rf data && mv b6 data
    start_berthd_on_data
    [ "$(rcli DIGEST)" = "$(head -1 out.txt | json_field digest)" ] || fail "berthd on the copy has another digest"
    [ "$(rcli WORKER.ADD after-restore GPUS 1)" = $((SEQ6 + 1)) ] || fail "berthd on the copy refused a write"
    stop_berthd
}

case "$CASE" in
    foreign)
        case_foreign "$@"
        ;;
    gen|dump_replay|at_time|at_time_back|verify_corrupt|cut_head|verify_pages|whatif_readonly|whatif_scenario|rejudge|timeline|history_status|usage|reqid_damage|internal_error|vs_berthd|history_rebuild|backup|doc_session)
        "case_$CASE"
        ;;
    rejudge_large)
        case_rejudge_large "$@"
        ;;
    *)
        fail "unknown case"
        ;;
esac
echo "PASS [$CASE]"
