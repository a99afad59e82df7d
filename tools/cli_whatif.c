/* cli_whatif.c — `berth whatif`: try a plan, or re-judge the past, without
 * touching anything.
 *
 * Scenario mode replays the journal into memory as of --at, then applies the
 * scenario's commands to that in-memory state with berth_cmd_parse and
 * berth_state_apply — the same parse and the same rules berthd uses — at the
 * seqs they would get. No engine and no writable journal are involved, so it
 * writes nothing anywhere (the tests prove it by hashing the data directory).
 *
 * Rejudge mode replays the whole journal from genesis with another policy in
 * force: the given policy is set before seq 1, and each of the journal's own
 * POLICY.SET records is replaced by the given policy (so it stays in force;
 * the record still takes its seq, as it must for every later seq to match).
 * Every record whose outcome code differs from the recorded one is listed,
 * with the earlier differing record it follows from when they concern the
 * same instance: a DEPLOY refused under the new policy makes its RELEASE a
 * NOINSTANCE, which shows up as a differing record of its own. */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"
#include "cli_scenario.h"

#define TRACK_ENTRIES_MAX (1u << 22)      /* instances remembered as changed by rejudge */
#define POLICY_TEXT_LEN_MAX (BERTH_POLICY_BACKENDS_MAX * (BERTH_NAME_LEN_MAX + 1) + 32)

static const char whatif_usage[] =
    "usage: berth whatif --data DIR [--at SEQ | --at-time RFC3339] --scenario FILE\n"
    "                    [--json] [--show-state] [--fail-on-refusal]\n"
    "       berth whatif --data DIR --policy EXCLUSIVE=b1[,b2...] --rejudge [--json] [--fail-on-diff]\n"
    "                    [--stats]\n"
    "  Scenario: apply FILE's commands (one per line, the protocol's words, '#' comments; '-' is\n"
    "  stdin) to a copy of the state at SEQ (default: the head) and print each outcome and a\n"
    "  summary. Queries in the file are recognised and skipped. Nothing is written anywhere.\n"
    "  Rejudge: replay the whole journal with the given policy in force from genesis (the\n"
    "  journal's own POLICY.SET records are replaced by it) and list every record whose outcome\n"
    "  code would differ, and what follows from it. Exit 1 with --fail-on-refusal when a\n"
    "  scenario command is refused, with --fail-on-diff when a decision differs. --stats prints\n"
    "  records/s on stderr.\n";

typedef struct whatif_opts {
    const char *data;
    const char *at;
    const char *at_time;
    const char *scenario;
    const char *policy;
    bool rejudge;
    bool json;
    bool show_state;
    bool fail_on_refusal;
    bool fail_on_diff;
    bool stats;
} whatif_opts;

static bool parse_bool_flag(const char *arg, whatif_opts *o) {
    struct { const char *name; bool *flag; } flags[] = {
        { "--rejudge", &o->rejudge },         { "--json", &o->json },
        { "--show-state", &o->show_state },   { "--fail-on-refusal", &o->fail_on_refusal },
        { "--fail-on-diff", &o->fail_on_diff }, { "--stats", &o->stats },
    };
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        if (strcmp(arg, flags[i].name) == 0) {
            *flags[i].flag = true;
            return true;
        }
    }
    return false;
}

static int parse_whatif_opts(int argc, char **argv, whatif_opts *o) {
    memset(o, 0, sizeof *o);
    bool bad = false;
    for (int i = 1; i < argc && !bad; i++) {
        if (cli_flag_value(argc, argv, &i, "--data", &o->data, &bad) ||
            cli_flag_value(argc, argv, &i, "--at-time", &o->at_time, &bad) ||
            cli_flag_value(argc, argv, &i, "--at", &o->at, &bad) ||
            cli_flag_value(argc, argv, &i, "--scenario", &o->scenario, &bad) ||
            cli_flag_value(argc, argv, &i, "--policy", &o->policy, &bad) ||
            parse_bool_flag(argv[i], o)) {
            continue;
        }
        fprintf(stderr, "ERR unknown option '%s'\n%s", argv[i], whatif_usage);
        return CLI_EXIT_USAGE;
    }
    if (bad) {
        return CLI_EXIT_USAGE;
    }
    if (o->rejudge != (o->policy != NULL)) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "--rejudge and --policy go together");
    }
    if (o->rejudge && (o->scenario != NULL || o->at != NULL || o->at_time != NULL)) {
        return cli_fail(CLI_EXIT_USAGE, "ERR",
                        "--rejudge replays the whole journal: drop --scenario, --at and --at-time");
    }
    if (!o->rejudge && o->scenario == NULL) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "give --scenario FILE, or --policy ... --rejudge");
    }
    if (o->at != NULL && o->at_time != NULL) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "give --at or --at-time, not both");
    }
    return CLI_EXIT_OK;
}

/* ---- scenario mode ----------------------------------------------------- */

typedef struct whatif_tally {
    uint64_t commands;
    uint64_t ok;
    uint64_t refused;
    uint64_t retries;
    uint64_t queries;           /* skipped: they need a server */
    uint64_t answered;          /* WORKER.GET / INSTANCE.GET / POLICY.GET */
} whatif_tally;

static void print_outcome(const whatif_opts *o, uint64_t line, uint64_t seq, const char *code,
                          berth_str command, const char *sentence, bool retry) {
    if (o->json) {
        printf("{\"type\":\"outcome\",\"line\":%" PRIu64 ",\"seq\":%" PRIu64 ",\"code\":\"%s\",\"command\":",
               line, seq, code);
        cli_json_bstr(stdout, command);
        fputs(",\"sentence\":", stdout);
        cli_json_str(stdout, sentence, strlen(sentence));
        printf(",\"retry\":%s}\n", retry ? "true" : "false");
        return;
    }
    printf("%6" PRIu64 " %10" PRIu64 " %-10s %.*s%s\n", line, seq, code, (int)command.len,
           command.ptr, retry ? "  (retry: first outcome)" : "");
    if (strcmp(code, "OK") != 0) {
        printf("%17s %s\n", "", sentence);
    }
}

/* A REQID already in the window: answer as berthd would, append nothing. */
static bool reqid_answered(const whatif_opts *o, const berth_state *state, const berth_cmd *cmd,
                           berth_str canonical, uint64_t line, whatif_tally *tally) {
    if (cmd->reqid.len == 0) {
        return false;
    }
    berth_reqid_entry hit;
    berth_reqid_status st = berth_state_reqid_check(state, cmd->reqid, canonical, &hit);
    if (st == BERTH_REQID_NEW) {
        return false;
    }
    char sentence[BERTH_SENTENCE_LEN_MAX];
    if (st == BERTH_REQID_RETRY) {
        snprintf(sentence, sizeof sentence, "%.*s", (int)hit.sentence.len, hit.sentence.ptr);
        print_outcome(o, line, hit.seq, berth_code_name(hit.code), canonical, sentence, true);
        tally->retries++;
        return true;
    }
    /* berthd's words for this refusal (code REQID), so a what-if reads like the server. */
    snprintf(sentence, sizeof sentence,
             "request id %.*s was used at seq %" PRIu64 " for a different command",
             (int)cmd->reqid.len, cmd->reqid.ptr, hit.seq);
    print_outcome(o, line, hit.seq, "REQID", canonical, sentence, false);
    tally->refused++;
    return true;
}

static int apply_line(const whatif_opts *o, berth_state *state, const cli_scenario *sc,
                      whatif_tally *tally) {
    static berth_cmd cmd;                           /* large: keep it off the stack */
    static char canonical[BERTH_COMMAND_LEN_MAX];
    char err[BERTH_ERR_LEN_MAX];
    if (berth_cmd_parse(&cmd, sc->word_count, sc->words, err, sizeof err) != 0) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "scenario %s line %" PRIu64 ": %s", sc->path,
                        sc->line_no, err);
    }
    size_t len = berth_cmd_canonical(&cmd, canonical, sizeof canonical);
    assert(len > 0);
    berth_str text = berth_str_make(canonical, len);
    tally->commands++;
    if (reqid_answered(o, state, &cmd, text, sc->line_no, tally)) {
        return CLI_EXIT_OK;
    }
    uint64_t seq = berth_state_last_seq(state) + 1;
    static berth_outcome out;
    if (berth_state_apply(state, &cmd, text, seq, &out) != 0) {
        return cli_fail(CLI_EXIT_USAGE, "NOMEM", "out of memory applying scenario line %" PRIu64,
                        sc->line_no);
    }
    assert(berth_state_last_seq(state) == seq);
    print_outcome(o, sc->line_no, seq, berth_code_name(out.code), text, out.sentence, false);
    if (out.code == BERTH_OK) {
        tally->ok++;
    } else {
        tally->refused++;
    }
    return CLI_EXIT_OK;
}

/* WORKER.GET, INSTANCE.GET and POLICY.GET are answered from the what-if
 * state as it stands at that line, so a plan can look at what it built;
 * other queries need a server and are counted as skipped. */
/* The query's header: the line and what was asked (and whether it was there). */
static void print_query_head(const whatif_opts *o, const cli_scenario *sc, const char *code) {
    berth_str arg = sc->word_count == 2 ? sc->words[1] : berth_str_make("", 0);
    if (o->json) {
        printf("{\"type\":\"query\",\"line\":%" PRIu64 ",\"query\":", sc->line_no);
        cli_json_bstr(stdout, sc->words[0]);
        fputs(",\"name\":", stdout);
        cli_json_bstr(stdout, arg);
        printf(",\"code\":\"%s\"}\n", code);
        return;
    }
    printf("%6" PRIu64 " %10s %-10s %.*s%s%.*s\n", sc->line_no, "-", "QUERY", (int)sc->words[0].len,
           sc->words[0].ptr, arg.len ? " " : "", (int)arg.len, arg.ptr);
    if (strcmp(code, "OK") != 0) {
        printf("%17s %s %.*s is not there\n", "", code, (int)arg.len, arg.ptr);
    }
}

static void print_policy_answer(const whatif_opts *o, const berth_state *state) {
    const berth_str *backends = NULL;
    uint32_t n = berth_state_policy(state, &backends);
    fputs(o->json ? "{\"type\":\"policy\",\"exclusive\":[" : "                  EXCLUSIVE ", stdout);
    for (uint32_t i = 0; i < n; i++) {
        fputs(i ? "," : "", stdout);
        if (o->json) {
            cli_json_bstr(stdout, backends[i]);
        } else {
            printf("%.*s", (int)backends[i].len, backends[i].ptr);
        }
    }
    fputs(o->json ? "]}\n" : "\n", stdout);
}

/* WORKER.GET, INSTANCE.GET and POLICY.GET are answered from the what-if
 * state as it stands at that line, so a plan can look at what it built;
 * other queries need a server and are counted as skipped. Names are
 * checked by the lookup itself: a bad name is simply not there. */
static void answer_query(const whatif_opts *o, const berth_state *state, const cli_scenario *sc,
                         whatif_tally *tally) {
    bool get_worker = berth_str_eq_word(sc->words[0], "WORKER.GET");
    bool get_instance = berth_str_eq_word(sc->words[0], "INSTANCE.GET");
    bool get_policy = berth_str_eq_word(sc->words[0], "POLICY.GET");
    if (!((get_worker || get_instance) && sc->word_count == 2) &&
        !(get_policy && sc->word_count == 1)) {
        tally->queries++;
        return;
    }
    tally->answered++;
    if (get_policy) {
        print_query_head(o, sc, "OK");
        print_policy_answer(o, state);
        return;
    }
    const berth_worker *w = get_worker ? berth_state_worker(state, sc->words[1]) : NULL;
    const berth_instance *inst = get_instance ? berth_state_instance(state, sc->words[1]) : NULL;
    if (w == NULL && inst == NULL) {
        print_query_head(o, sc, get_worker ? "NOWORKER" : "NOINSTANCE");
        return;
    }
    print_query_head(o, sc, "OK");
    fputs(o->json ? "" : "                  ", stdout);
    if (w != NULL) {
        cli_print_worker(stdout, w, o->json);
    } else {
        cli_print_instance(stdout, inst, o->json);
    }
}

static int run_scenario(const whatif_opts *o, berth_state *state, whatif_tally *tally) {
    cli_scenario sc;
    char err[CLI_ERR_LEN_MAX];
    if (cli_scenario_open(&sc, o->scenario, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return CLI_EXIT_USAGE;
    }
    if (!o->json) {
        printf("%6s %10s %-10s %s\n", "LINE", "SEQ", "OUTCOME", "COMMAND");
    }
    int rc = CLI_EXIT_OK;
    for (;;) {
        int got = cli_scenario_next(&sc, err, sizeof err);
        if (got < 0) {
            fprintf(stderr, "%s\n", err);
            rc = CLI_EXIT_USAGE;
            break;
        }
        if (got == 0) {
            break;
        }
        if (sc.kind == CLI_LINE_QUERY) {
            answer_query(o, state, &sc, tally);
            continue;
        }
        rc = apply_line(o, state, &sc, tally);
        if (rc != CLI_EXIT_OK) {
            break;
        }
    }
    cli_scenario_close(&sc);
    return rc;
}

static int print_whatif_summary(const whatif_opts *o, const berth_state *state, uint64_t at,
                                const whatif_tally *t) {
    if (o->json) {
        printf("{\"type\":\"summary\",\"at\":%" PRIu64 ",\"commands\":%" PRIu64 ",\"ok\":%" PRIu64
               ",\"refused\":%" PRIu64 ",\"retries\":%" PRIu64 ",\"queries_answered\":%" PRIu64
               ",\"queries_skipped\":%" PRIu64 "}\n",
               at, t->commands, t->ok, t->refused, t->retries, t->answered, t->queries);
    } else {
        printf("\nwhat-if from seq %" PRIu64 ": %" PRIu64 " commands, %" PRIu64 " ok, %" PRIu64
               " refused, %" PRIu64 " retries, %" PRIu64 " queries answered, %" PRIu64 " skipped\n",
               at, t->commands, t->ok, t->refused, t->retries, t->answered, t->queries);
    }
    if (o->show_state) {
        return cli_print_state(stdout, state, o->json);
    }
    uint8_t digest[BERTH_HASH_LEN];
    if (berth_state_digest(state, digest) != 0) {
        return cli_fail(CLI_EXIT_USAGE, "NOMEM", "out of memory computing the state digest");
    }
    char hex[CLI_HEX_HASH_LEN];
    cli_hex_hash(digest, hex);
    if (o->json) {
        printf("{\"type\":\"state\",\"seq\":%" PRIu64 ",\"digest\":\"%s\",\"workers\":%zu,\"instances\":%zu}\n",
               berth_state_last_seq(state), hex, berth_state_worker_count(state),
               berth_state_instance_count(state));
    } else {
        printf("resulting state: seq %" PRIu64 ", %zu workers, %zu instances, digest %s\n",
               berth_state_last_seq(state), berth_state_worker_count(state),
               berth_state_instance_count(state), hex);
    }
    return CLI_EXIT_OK;
}

static int whatif_scenario(const whatif_opts *o, cli_store *store) {
    uint64_t at = store->head_seq;
    if (o->at != NULL && !cli_parse_seq_flag("--at", o->at, &at)) {
        return CLI_EXIT_USAGE;
    }
    if (o->at_time != NULL) {
        int rc = cli_seq_at_time(store, o->at_time, &at);
        if (rc != CLI_EXIT_OK) {
            return rc;
        }
    }
    berth_state *state = NULL;
    berth_replay_stats stats;
    int rc = cli_state_at(store, at, true, &state, &stats);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }
    whatif_tally tally;
    memset(&tally, 0, sizeof tally);
    rc = run_scenario(o, state, &tally);
    if (rc == CLI_EXIT_OK) {
        rc = print_whatif_summary(o, state, at, &tally);
    }
    if (state != NULL) {
        berth_state_free(state);
    }
    if (rc == CLI_EXIT_OK && o->fail_on_refusal && tally.refused > 0) {
        return CLI_EXIT_FINDING;
    }
    return rc;
}

/* ---- rejudge mode ------------------------------------------------------ */

/* The alternative policy as one parsed POLICY.SET, kept with its canonical
 * text: it stands in for every POLICY.SET record of the journal. */
typedef struct alt_policy {
    char words_text[POLICY_TEXT_LEN_MAX];
    char canonical[POLICY_TEXT_LEN_MAX];
    size_t canonical_len;
    berth_cmd cmd;
} alt_policy;

static int parse_policy(const char *text, alt_policy *p) {
    const char *prefix = "EXCLUSIVE=";
    size_t prefix_len = strlen(prefix);
    if (strncasecmp(text, prefix, prefix_len) == 0) {
        text += prefix_len;
    }
    /* An empty list is a policy too: no backend holds its workers exclusively. */
    int n = snprintf(p->words_text, sizeof p->words_text, "POLICY.SET EXCLUSIVE%s%s",
                     text[0] != '\0' ? " " : "", text);
    if (n <= 0 || (size_t)n >= sizeof p->words_text) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "--policy is too long");
    }
    berth_str words[BERTH_POLICY_BACKENDS_MAX + 3];
    size_t count = berth_cmd_split(p->words_text, (size_t)n, words, BERTH_POLICY_BACKENDS_MAX + 3);
    char err[BERTH_ERR_LEN_MAX];
    if (count == 0 || berth_cmd_parse(&p->cmd, count, words, err, sizeof err) != 0) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "--policy EXCLUSIVE=%s is not a policy: %s", text,
                        count == 0 ? "no backends" : err);
    }
    assert(p->cmd.kind == BERTH_CMD_POLICY_SET);
    p->canonical_len = berth_cmd_canonical(&p->cmd, p->canonical, sizeof p->canonical);
    assert(p->canonical_len > 0);
    return CLI_EXIT_OK;
}

/* Instances whose fate changed, so a later differing record can say which
 * earlier decision it follows from (lookups only: see cli_name_map). */
typedef struct tracker {
    cli_name_map map;
    bool full;
} tracker;

static uint64_t track_find(const tracker *t, berth_str name) {
    uint64_t seq = 0;
    if (t->map.slots == NULL || name.len == 0 || !cli_map_get(&t->map, name, &seq)) {
        return 0;
    }
    return seq;
}

/* Remember the first differing record about name; past TRACK_ENTRIES_MAX
 * (or out of memory) stop linking and say so in the summary. */
static void track_add(tracker *t, berth_str name, uint64_t seq) {
    if (t->map.slots == NULL || name.len == 0 || t->full || track_find(t, name) != 0) {
        return;
    }
    if (t->map.used >= TRACK_ENTRIES_MAX || cli_map_put(&t->map, name, seq) != 0) {
        t->full = true;
    }
}

typedef struct rejudge_tally {
    uint64_t records;
    uint64_t differ;
    uint64_t policy_records_replaced;
    uint64_t transitions[BERTH_CODE_COUNT][BERTH_CODE_COUNT];   /* [recorded][rejudged] */
    int64_t instances_recorded;     /* live at the head per the recorded outcomes */
} rejudge_tally;

static void print_difference(const whatif_opts *o, const berth_record *rec,
                             const berth_outcome *out, berth_str instance, uint64_t follows) {
    const char *was = rec->code < BERTH_CODE_COUNT ? berth_code_name((berth_code)rec->code) : "?";
    const char *now = berth_code_name(out->code);
    if (o->json) {
        printf("{\"type\":\"differs\",\"seq\":%" PRIu64 ",\"time_ms\":%" PRIu64 ",\"command\":", rec->seq,
               rec->time_ms);
        cli_json_bstr(stdout, rec->command);
        printf(",\"recorded\":\"%s\",\"rejudged\":\"%s\",\"recorded_sentence\":", was, now);
        cli_json_bstr(stdout, rec->sentence);
        fputs(",\"rejudged_sentence\":", stdout);
        cli_json_str(stdout, out->sentence, out->sentence_len);
        fputs(",\"instance\":", stdout);
        cli_json_bstr(stdout, instance);
        printf(",\"follows_from\":%" PRIu64 "}\n", follows);
        return;
    }
    printf("%10" PRIu64 " %-10s -> %-10s %.*s\n", rec->seq, was, now, (int)rec->command.len,
           rec->command.ptr);
    printf("%10s now: %.*s\n", "", (int)out->sentence_len, out->sentence);
    if (rec->code != BERTH_OK) {
        printf("%10s was: %.*s\n", "", (int)rec->sentence.len, rec->sentence.ptr);
    }
    if (follows != 0) {
        printf("%10s follows from the changed decision at seq %" PRIu64 "\n", "", follows);
    }
}

/* The instance a record is about (DEPLOY, RELEASE), from its words. */
static berth_str record_instance(const berth_record *rec) {
    /* Only the first two words matter: cut them by hand rather than split all. */
    const char *p = rec->command.ptr;
    const char *end = p + rec->command.len;
    const char *sp = memchr(p, ' ', rec->command.len);
    if (sp == NULL) {
        return berth_str_make("", 0);
    }
    berth_str first = berth_str_make(p, (size_t)(sp - p));
    if (!berth_str_eq_word(first, "DEPLOY") && !berth_str_eq_word(first, "RELEASE")) {
        return berth_str_make("", 0);
    }
    const char *name = sp + 1;
    const char *name_end = memchr(name, ' ', (size_t)(end - name));
    return berth_str_make(name, (size_t)((name_end ? name_end : end) - name));
}

static int rejudge_one(const whatif_opts *o, berth_state *state, const cli_feed_item *item,
                       tracker *track, rejudge_tally *tally) {
    const berth_record *rec = &item->rec;
    static berth_outcome out;
    char err[CLI_ERR_LEN_MAX] = "";
    if (cli_feed_apply(state, item, &out, err, sizeof err) != 0) {
        return cli_fail(CLI_EXIT_FINDING, "CORRUPT", "record %" PRIu64 " cannot be replayed: %s",
                        rec->seq, err);
    }
    tally->records++;
    tally->policy_records_replaced += item->substituted ? 1 : 0;
    if (rec->code == BERTH_OK) {
        /* The recorded history's instance count, from its own outcomes: no
         * second replay needed for the summary. */
        berth_cmd_kind kind = item->substituted ? BERTH_CMD_POLICY_SET : item->cmd.kind;
        tally->instances_recorded += kind == BERTH_CMD_DEPLOY ? 1 : (kind == BERTH_CMD_RELEASE ? -1 : 0);
    }
    if ((uint32_t)out.code == rec->code) {
        return CLI_EXIT_OK;
    }
    tally->differ++;
    if (rec->code < BERTH_CODE_COUNT) {
        tally->transitions[rec->code][out.code]++;
    }
    berth_str instance = record_instance(rec);
    uint64_t follows = track_find(track, instance);
    print_difference(o, rec, &out, instance, follows);
    track_add(track, instance, rec->seq);
    return CLI_EXIT_OK;
}

/* Every record from genesis, decoded and parsed on the feed's thread and
 * judged here, in order, under the alternative policy. */
static int rejudge_walk(const whatif_opts *o, cli_store *store, berth_state *state,
                        const alt_policy *policy, tracker *track, rejudge_tally *tally) {
    if (store->head_seq == 0) {
        return CLI_EXIT_OK;
    }
    cli_feed_options fo = { 1, store->head_seq, BERTH_CMD_POLICY_SET,
                            berth_str_make(policy->canonical, policy->canonical_len) };
    cli_feed *feed = NULL;
    int rc = cli_feed_start(&feed, store->reader, &fo);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }
    cli_progress progress;
    cli_progress_start(&progress, "rejudge", store->head_seq);
    while (rc == CLI_EXIT_OK) {
        const cli_feed_item *item = NULL;
        char err[CLI_ERR_LEN_MAX] = "";
        int got = cli_feed_next(feed, &item, err, sizeof err);
        if (got <= 0) {
            rc = got == 0 ? CLI_EXIT_OK : cli_fail(CLI_EXIT_FINDING, "CORRUPT", "%s", err);
            break;
        }
        rc = rejudge_one(o, state, item, track, tally);
        cli_progress_update(&progress, item->rec.seq);
    }
    cli_progress_end(&progress);
    cli_feed_stop(feed);
    assert(rc != CLI_EXIT_OK || tally->records == store->head_seq);
    return rc;
}

static void print_rejudge_summary(const whatif_opts *o, const rejudge_tally *t,
                                  const berth_state *rejudged, bool track_full) {
    if (o->json) {
        printf("{\"type\":\"summary\",\"records\":%" PRIu64 ",\"differ\":%" PRIu64
               ",\"policy_records_replaced\":%" PRIu64 ",\"instances_recorded\":%" PRId64
               ",\"instances_rejudged\":%zu,\"transitions\":[",
               t->records, t->differ, t->policy_records_replaced,
               t->instances_recorded, berth_state_instance_count(rejudged));
    } else {
        printf("\nrejudged %" PRIu64 " records (%" PRIu64 " POLICY.SET records replaced): %" PRIu64
               " decisions differ\n",
               t->records, t->policy_records_replaced, t->differ);
        printf("instances at the head: %" PRId64 " recorded, %zu under the new policy\n",
               t->instances_recorded, berth_state_instance_count(rejudged));
    }
    bool first = true;
    for (uint32_t was = 0; was < BERTH_CODE_COUNT; was++) {
        for (uint32_t now = 0; now < BERTH_CODE_COUNT; now++) {
            uint64_t n = t->transitions[was][now];
            if (n == 0) {
                continue;
            }
            if (o->json) {
                printf("%s{\"recorded\":\"%s\",\"rejudged\":\"%s\",\"count\":%" PRIu64 "}",
                       first ? "" : ",", berth_code_name(was), berth_code_name(now), n);
            } else {
                printf("  %-10s -> %-10s %" PRIu64 "\n", berth_code_name(was), berth_code_name(now), n);
            }
            first = false;
        }
    }
    if (o->json) {
        fputs("]}\n", stdout);
    }
    if (track_full) {
        fprintf(stderr, "WARN too many changed instances to link every later record to its cause\n");
    }
}

static int whatif_rejudge(const whatif_opts *o, cli_store *store) {
    static alt_policy policy;
    int rc = parse_policy(o->policy, &policy);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }
    berth_state *state = berth_state_new(NULL);
    if (state == NULL ||
        berth_state_restore_policy(state, policy.cmd.backends, policy.cmd.backend_count) != 0) {
        berth_state_free(state);
        return cli_fail(CLI_EXIT_USAGE, "NOMEM", "cannot set up the rejudged state");
    }
    tracker track;
    memset(&track, 0, sizeof track);
    track.full = cli_map_init(&track.map, 1024) != 0;
    static rejudge_tally tally;
    memset(&tally, 0, sizeof tally);
    if (!o->json) {
        printf("%10s %-10s    %-10s %s\n", "SEQ", "RECORDED", "REJUDGED", "COMMAND");
    }
    uint64_t start_ns = cli_monotonic_ns();
    rc = rejudge_walk(o, store, state, &policy, &track, &tally);
    if (o->stats) {
        /* Figures on stderr only: the clock never reaches stdout. */
        double secs = (double)(cli_monotonic_ns() - start_ns) / 1e9;
        fprintf(stderr, "rejudge: %" PRIu64 " records in %.3f s = %.0f records/s\n", tally.records,
                secs, secs > 0 ? (double)tally.records / secs : 0.0);
    }
    if (rc == CLI_EXIT_OK) {
        print_rejudge_summary(o, &tally, state, track.full);
    }
    if (track.map.slots != NULL) {
        cli_map_free(&track.map);
    }
    if (state != NULL) {
        berth_state_free(state);
    }
    if (rc == CLI_EXIT_OK && o->fail_on_diff && tally.differ > 0) {
        return CLI_EXIT_FINDING;
    }
    return rc;
}

int cli_whatif_main(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        fputs(whatif_usage, stdout);
        return CLI_EXIT_OK;
    }
    whatif_opts o;
    int rc = parse_whatif_opts(argc, argv, &o);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }
    cli_store store;
    rc = cli_store_open(&store, o.data);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }
    rc = o.rejudge ? whatif_rejudge(&o, &store) : whatif_scenario(&o, &store);
    cli_store_close(&store);
    return rc;
}
