/* test_gen.c — unit tests of the scenario generator (tools/gen.h).
 *
 * The generator's promises are what the benchmark and `berth gen` rely on:
 * the same options give the same bytes (the golden digest pins the stream
 * across machines and compilers), every command is canonical text that
 * berth_cmd_parse accepts and prints back unchanged, the mix contains every
 * kind of command and refusal it claims, and its predicted outcome of each
 * command equals what the real state machine decides. That last check runs
 * the generator's model against core/state.c: a mismatch is a bug in one of
 * them, reported with the seed and the command. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "command.h"
#include "gen.h"
#include "state.h"
#include "test_loop.h"

#define STREAM_COMMANDS_MAX 120000      /* per seed in the heavier tests */
#define CHECK_EVERY_COMMANDS 997        /* berth_state_check cadence (prime: varies the phase) */
#define ERR_TEXT_MAX 256

/* The default makes POLICY.SET rare (10 per million, as in life); the
 * model tests want re-marking exercised, so they ask for it more often. */
#define POLICY_PER_MILLION_TEST 2000u

static berth_gen *make_gen_policy(uint64_t seed, uint32_t workers, uint32_t policy_per_million) {
    berth_gen_options o;
    berth_gen_options_default(&o, seed, workers);
    o.policy_per_million = policy_per_million;
    berth_gen *g = NULL;
    char err[ERR_TEXT_MAX];
    ck_assert_msg(berth_gen_init(&g, &o, err, sizeof err) == 0, "init: %s", err);
    ck_assert_ptr_nonnull(g);
    return g;
}

static berth_gen *make_gen(uint64_t seed, uint32_t workers) {
    berth_gen_options o;
    berth_gen_options_default(&o, seed, workers);
    return make_gen_policy(seed, workers, o.policy_per_million);
}

static void next_ok(berth_gen *g, berth_gen_command *c) {
    LOOP_ASSERT(berth_gen_next(g, c) == 0, "berth_gen_next failed");
    LOOP_ASSERT(strlen(c->text) == c->text_len, "command %llu '%s': text_len %zu", (unsigned long long)c->index,
                c->text, (size_t)c->text_len);
    LOOP_ASSERT(c->canonical_len <= c->text_len, "command %llu '%s': canonical_len %zu", (unsigned long long)c->index,
                c->text, (size_t)c->canonical_len);
}

/* FNV-1a 64 over the stream's bytes and predictions: a digest of everything
 * the generator promises to keep identical. */
static uint64_t fnv_add(uint64_t h, const void *bytes, size_t n) {
    const unsigned char *p = bytes;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t stream_digest(uint64_t seed, uint32_t workers, uint64_t commands) {
    berth_gen *g = make_gen(seed, workers);
    berth_gen_command c;
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint64_t i = 0; i < commands; i++) {
        next_ok(g, &c);
        h = fnv_add(h, c.text, c.text_len + 1);
        uint32_t meta[3] = { (uint32_t)c.expect, (uint32_t)c.code, (uint32_t)c.intent };
        h = fnv_add(h, meta, sizeof meta);
    }
    berth_gen_free(g);
    return h;
}

START_TEST(test_options_rejected) {
    berth_gen_options o;
    berth_gen *g = (berth_gen *)&o;   /* must be reset to NULL on failure */
    char err[ERR_TEXT_MAX];
    berth_gen_options_default(&o, 1, 0);
    ck_assert_int_eq(berth_gen_init(&g, &o, err, sizeof err), -1);
    ck_assert_ptr_null(g);
    ck_assert_msg(strncmp(err, "ERR ", 4) == 0, "error starts with ERR: %s", err);
    berth_gen_options_default(&o, 1, BERTH_GEN_WORKERS_MAX + 1);
    ck_assert_int_eq(berth_gen_init(&g, &o, err, sizeof err), -1);
    berth_gen_options_default(&o, 1, 10);
    o.distributed_permille = BERTH_GEN_PERMILLE_MAX + 1;
    ck_assert_int_eq(berth_gen_init(&g, &o, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "permille") != NULL, "names the unit: %s", err);
    berth_gen_options_default(&o, 1, 10);
    o.refusal_permille = 600;
    o.churn_permille = 500;
    ck_assert_int_eq(berth_gen_init(&g, &o, err, sizeof err), -1);
    berth_gen_options_default(&o, 1, 10);
    o.policy_per_million = BERTH_GEN_PER_MILLION_MAX + 1;
    ck_assert_int_eq(berth_gen_init(&g, &o, err, sizeof err), -1);
}
END_TEST

/* The default stream is the benchmark's: POLICY.SET stays rare in it. */
START_TEST(test_default_policy_rare) {
    berth_gen *g = make_gen(5, 100);
    berth_gen_command c;
    uint64_t policies = 0;
    const uint64_t commands = 300000;
    for (uint64_t i = 0; i < commands; i++) {
        next_ok(g, &c);
        if (c.kind == BERTH_CMD_POLICY_SET) policies++;
    }
    /* 10 per million: about 3 expected here; 30 would be ten times the rate. */
    ck_assert_uint_lt(policies, 30);
    berth_gen_free(g);
}
END_TEST

START_TEST(test_same_seed_same_bytes) {
    berth_gen *a = make_gen(12345, 64);
    berth_gen *b = make_gen(12345, 64);
    berth_gen_command ca, cb;
    for (uint64_t i = 0; i < STREAM_COMMANDS_MAX; i++) {
        next_ok(a, &ca);
        next_ok(b, &cb);
        LOOP_ASSERT(ca.index == i, "command %llu has index %llu", (unsigned long long)i, (unsigned long long)ca.index);
        LOOP_ASSERT(ca.text_len == cb.text_len && memcmp(ca.text, cb.text, ca.text_len) == 0,
                    "command %llu differs: '%s' vs '%s'", (unsigned long long)i, ca.text, cb.text);
        LOOP_ASSERT(ca.code == cb.code, "command %llu: code %d vs %d", (unsigned long long)i, (int)ca.code, (int)cb.code);
        LOOP_ASSERT(ca.expect == cb.expect, "command %llu: expect %d vs %d", (unsigned long long)i, (int)ca.expect,
                    (int)cb.expect);
    }
    berth_gen_free(a);
    berth_gen_free(b);
}
END_TEST

START_TEST(test_seeds_differ) {
    ck_assert_uint_ne(stream_digest(1, 64, 5000), stream_digest(2, 64, 5000));
    ck_assert_uint_ne(stream_digest(1, 64, 5000), stream_digest(1, 65, 5000));
    ck_assert_uint_eq(stream_digest(3, 64, 5000), stream_digest(3, 64, 5000));
}
END_TEST

/* The stream must not change between machines, compilers or releases
 * without anyone noticing: benchmarks and saved scenarios depend on it.
 * If the generator is changed on purpose, print the new digest and update
 * it here in the same commit, saying why. */
#define GOLDEN_SEED 42
#define GOLDEN_WORKERS 100
#define GOLDEN_COMMANDS 20000
#define GOLDEN_DIGEST 0x64aaa90b5e146d4full
_Static_assert(BERTH_GEN_STREAM_VERSION == 3, "stream version and golden digest change together");
START_TEST(test_golden_stream) {
    uint64_t h = stream_digest(GOLDEN_SEED, GOLDEN_WORKERS, GOLDEN_COMMANDS);
    ck_assert_msg(h == GOLDEN_DIGEST, "stream digest changed: 0x%016llxull", (unsigned long long)h);
}
END_TEST

START_TEST(test_workers_first) {
    const uint32_t workers = 500;
    berth_gen *g = make_gen(7, workers);
    berth_gen_command c;
    uint32_t gpu_hist[BERTH_GEN_WORKER_GPUS_MAX + 1] = { 0 };
    for (uint32_t i = 0; i < workers; i++) {
        next_ok(g, &c);
        ck_assert_int_eq(c.kind, BERTH_CMD_WORKER_ADD);
        ck_assert_int_eq(c.intent, BERTH_GEN_INTENT_WORKER);
        ck_assert_int_eq(c.code, BERTH_OK);
        ck_assert_uint_eq(c.canonical_len, c.text_len);  /* no REQID on registration */
        ck_assert_uint_ge(c.word_count, 4);
        uint64_t gpus;
        ck_assert(berth_parse_u64(c.words[3], &gpus));
        ck_assert_uint_le(gpus, BERTH_GEN_WORKER_GPUS_MAX);
        gpu_hist[gpus]++;
    }
    next_ok(g, &c);
    ck_assert_int_ne(c.intent, BERTH_GEN_INTENT_WORKER);
    for (uint32_t n = 0; n <= BERTH_GEN_WORKER_GPUS_MAX; n++) {
        ck_assert_msg(gpu_hist[n] > 0, "no worker with %u GPUs among %u", n, workers);
    }
    berth_gen_stats st;
    berth_gen_get_stats(g, &st);
    ck_assert_uint_eq(st.commands, workers + 1);
    berth_gen_free(g);
}
END_TEST

/* Tallies of what a stream contained, by the engine's verdicts. */
typedef struct tally {
    uint64_t by_kind[BERTH_CMD_KIND_COUNT];
    uint64_t by_code[BERTH_CODE_COUNT];
    uint64_t retries;
    uint64_t conflicts;
    uint64_t records;
    uint64_t distributed;
    uint64_t vram_claims;
    uint64_t by_backend[3];
    uint64_t policy_without_vllm;
} tally;

static void tally_parsed(tally *t, const berth_cmd *cmd) {
    if (cmd->kind == BERTH_CMD_DEPLOY) {
        if (cmd->place_count > 1) t->distributed++;
        if (cmd->claim_mib > 0) t->vram_claims++;
        static const char *const backends[3] = { "vllm", "sglang", "llama-box" };
        for (int b = 0; b < 3; b++) {
            if (berth_str_eq(cmd->backend, berth_str_make(backends[b], strlen(backends[b])))) t->by_backend[b]++;
        }
    }
    if (cmd->kind == BERTH_CMD_POLICY_SET) {
        bool vllm = false;
        for (uint32_t i = 0; i < cmd->backend_count; i++) {
            if (berth_str_eq(cmd->backends[i], berth_str_make("vllm", 4))) vllm = true;
        }
        if (!vllm) t->policy_without_vllm++;
    }
}

/* Parse c, check it is canonical, and judge it on state the way the engine
 * does (REQID window first, then apply at the next seq). Fails the test at
 * the first disagreement with the generator's prediction. */
static void judge_one(berth_state *state, const berth_gen_command *c, uint64_t seed, tally *t) {
    berth_cmd cmd;
    char err[BERTH_ERR_LEN_MAX];
    int rc = berth_cmd_parse(&cmd, c->word_count, c->words, err, sizeof err);
    LOOP_ASSERT(rc == 0, "seed %llu command %llu '%s' does not parse: %s", (unsigned long long)seed,
                (unsigned long long)c->index, c->text, err);
    LOOP_ASSERT(cmd.kind == c->kind, "seed %llu command %llu '%s': kind %d, generated %d", (unsigned long long)seed,
                (unsigned long long)c->index, c->text, (int)cmd.kind, (int)c->kind);
    static char canonical[BERTH_COMMAND_LEN_MAX];
    size_t len = berth_cmd_canonical(&cmd, canonical, sizeof canonical);
    LOOP_ASSERT(len == c->canonical_len && memcmp(canonical, c->text, len) == 0,
                "seed %llu command %llu is not canonical: '%s' prints as '%.*s'",
                (unsigned long long)seed, (unsigned long long)c->index, c->text, (int)len, canonical);
    bool has_reqid = c->canonical_len < c->text_len;
    LOOP_ASSERT((cmd.reqid.len > 0) == has_reqid, "seed %llu command %llu '%s': REQID parsed %d, generated %d",
                (unsigned long long)seed, (unsigned long long)c->index, c->text, cmd.reqid.len > 0, has_reqid);
    LOOP_ASSERT(berth_cmd_is_canonical(&cmd, c->text, c->canonical_len), "seed %llu command %llu '%s'",
                (unsigned long long)seed, (unsigned long long)c->index, c->text);
    LOOP_ASSERT(!has_reqid || !berth_cmd_is_canonical(&cmd, c->text, c->text_len), "seed %llu command %llu '%s'",
                (unsigned long long)seed, (unsigned long long)c->index, c->text);
    berth_str canon = berth_str_make(canonical, len);
    t->by_kind[cmd.kind]++;
    tally_parsed(t, &cmd);
    if (has_reqid) {
        berth_reqid_entry hit;
        berth_reqid_status st = berth_state_reqid_check(state, cmd.reqid, canon, &hit);
        if (st != BERTH_REQID_NEW) {
            bool retry = st == BERTH_REQID_RETRY;
            LOOP_ASSERT(c->expect == (retry ? BERTH_GEN_EXPECT_RETRY : BERTH_GEN_EXPECT_CONFLICT),
                        "seed %llu command %llu '%s': engine says %s, generator expected %d",
                        (unsigned long long)seed, (unsigned long long)c->index, c->text,
                        retry ? "RETRY" : "CONFLICT", (int)c->expect);
            LOOP_ASSERT(!retry || hit.code == c->code, "seed %llu command %llu '%s': retry of %s, generator predicted %s",
                        (unsigned long long)seed, (unsigned long long)c->index, c->text, berth_code_name(hit.code),
                        berth_code_name(c->code));
            if (retry) t->retries++; else t->conflicts++;
            return;
        }
    }
    LOOP_ASSERT(c->expect == BERTH_GEN_EXPECT_APPLIED, "seed %llu command %llu '%s': REQID is new to the engine",
                (unsigned long long)seed, (unsigned long long)c->index, c->text);
    static berth_outcome out;
    LOOP_ASSERT(berth_state_apply(state, &cmd, canon, berth_state_last_seq(state) + 1, &out) == 0,
                "seed %llu command %llu '%s': apply failed", (unsigned long long)seed, (unsigned long long)c->index,
                c->text);
    LOOP_ASSERT(out.code == c->code, "seed %llu command %llu '%s': engine %s (%s), generator predicted %s",
                (unsigned long long)seed, (unsigned long long)c->index, c->text, berth_code_name(out.code),
                out.sentence, berth_code_name(c->code));
    t->by_code[out.code]++;
    t->records++;
}

static void run_against_state(uint64_t seed, uint32_t workers, uint64_t commands, tally *t) {
    berth_gen *g = make_gen_policy(seed, workers, POLICY_PER_MILLION_TEST);
    berth_state *state = berth_state_new(NULL);
    ck_assert_ptr_nonnull(state);
    berth_gen_command c;
    char why[ERR_TEXT_MAX];
    for (uint64_t i = 0; i < commands; i++) {
        next_ok(g, &c);
        judge_one(state, &c, seed, t);
        if (i % CHECK_EVERY_COMMANDS == 0) {
            LOOP_ASSERT(berth_state_check(state, why, sizeof why), "seed %llu after %llu: %s",
                        (unsigned long long)seed, (unsigned long long)i, why);
        }
    }
    berth_gen_stats st;
    berth_gen_get_stats(g, &st);
    ck_assert_uint_eq(st.commands, commands);
    ck_assert_uint_eq(st.predicted_records, t->records);
    ck_assert_uint_eq(st.predicted_records, berth_state_last_seq(state));
    ck_assert_uint_eq(st.instances_live, berth_state_instance_count(state));
    ck_assert_uint_eq(st.workers_present, berth_state_worker_count(state));
    ck_assert_msg(berth_state_check(state, why, sizeof why), "seed %llu at end: %s", (unsigned long long)seed, why);
    berth_state_free(state);
    berth_gen_free(g);
}

/* Small fleets crowd the placements (many refusals of every kind); a larger
 * one is the benchmark's regime. Every seed is printed on failure. */
START_TEST(test_predictions_match_state) {
    static const struct { uint64_t seed; uint32_t workers; uint64_t commands; } runs[] = {
        { 1, 8, 30000 }, { 2, 40, 60000 }, { 3, 300, STREAM_COMMANDS_MAX }, { 4, 2000, 60000 },
    };
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        tally t;
        memset(&t, 0, sizeof t);
        run_against_state(runs[r].seed, runs[r].workers, runs[r].commands, &t);
        ck_assert_uint_gt(t.by_code[BERTH_OK], 0);
    }
}
END_TEST

/* verify's canonical check against the round trip it stands for, over the
 * stream's commands each spelt otherwise in one small way (case, word
 * order, a leading zero, a REQID in the text, a doubled space): wherever
 * the spelling parses, berth_cmd_is_canonical(parse(x), x) must say
 * exactly whether canonical(parse(x)) == x. */
START_TEST(test_canonical_check_mutations) {
    berth_gen *g = make_gen(5, 64);
    berth_gen_command c;
    static char text[BERTH_COMMAND_LEN_MAX + 16], canon[BERTH_COMMAND_LEN_MAX];
    berth_str words[BERTH_ARGS_MAX];
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    uint32_t same = 0, differ = 0;
    for (uint32_t i = 0; i < 40000; i++) {
        next_ok(g, &c);
        size_t len = c.canonical_len;
        memcpy(text, c.text, len);
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        size_t at = (size_t)(rng >> 33) % len;
        switch (i % 6) {
        case 0:   /* a byte's case */
            if (text[at] >= 'A' && text[at] <= 'Z') text[at] = (char)(text[at] - 'A' + 'a');
            else if (text[at] >= 'a' && text[at] <= 'z') text[at] = (char)(text[at] - 'a' + 'A');
            break;
        case 1: {   /* two neighbouring words swapped */
            char *sp = memchr(text + at, ' ', len - at);
            char *sp2 = sp ? memchr(sp + 1, ' ', len - (size_t)(sp + 1 - text)) : NULL;
            char *end = sp2 ? sp2 : text + len;
            if (sp == NULL) break;
            char *start = sp;
            while (start > text && start[-1] != ' ') start--;
            char tmp[BERTH_COMMAND_LEN_MAX];
            size_t a = (size_t)(sp - start), b = (size_t)(end - sp - 1);
            memcpy(tmp, sp + 1, b);
            tmp[b] = ' ';
            memcpy(tmp + b + 1, start, a);
            memcpy(start, tmp, a + b + 1);
            break;
        }
        case 2:   /* a leading zero */
            if (text[at] >= '0' && text[at] <= '9') {
                memmove(text + at + 1, text + at, len - at);
                text[at] = '0';
                len++;
            }
            break;
        case 3:   /* the request id inside the text */
            memcpy(text + len, " REQID r1", 9);
            len += 9;
            break;
        case 4:   /* a doubled space */
            if (text[at] == ' ') {
                memmove(text + at + 1, text + at, len - at);
                len++;
            }
            break;
        default:   /* as written */
            break;
        }
        berth_cmd cmd;
        char err[BERTH_ERR_LEN_MAX];
        if (berth_cmd_parse_text(&cmd, text, len, words, BERTH_ARGS_MAX, err, sizeof err) != 0) continue;
        size_t n = berth_cmd_canonical(&cmd, canon, sizeof canon);
        ck_assert_uint_gt(n, 0);
        bool round_trip = n == len && memcmp(canon, text, len) == 0;
        ck_assert_msg(berth_cmd_is_canonical(&cmd, text, len) == round_trip, "'%.*s': canonical '%.*s'",
                      (int)len, text, (int)n, canon);
        if (round_trip) same++; else differ++;
    }
    ck_assert_uint_gt(same, 10000);
    ck_assert_uint_gt(differ, 5000);   /* the check had spellings to refuse */
    berth_gen_free(g);
}
END_TEST

START_TEST(test_mix_covers_everything) {
    tally t;
    memset(&t, 0, sizeof t);
    run_against_state(99, 300, STREAM_COMMANDS_MAX, &t);
    for (int k = BERTH_CMD_WORKER_ADD; k < BERTH_CMD_KIND_COUNT; k++) {
        ck_assert_msg(t.by_kind[k] > 0, "no %s in the stream", berth_cmd_kind_name((berth_cmd_kind)k));
    }
    for (int code = 0; code < BERTH_CODE_COUNT; code++) {
        ck_assert_msg(t.by_code[code] > 0, "no outcome %s in the stream", berth_code_name((berth_code)code));
    }
    ck_assert_uint_gt(t.retries, 0);
    ck_assert_uint_gt(t.conflicts, 0);
    ck_assert_uint_gt(t.policy_without_vllm, 0);
    for (int b = 0; b < 3; b++) ck_assert_uint_gt(t.by_backend[b], 0);
    uint64_t deploys = t.by_kind[BERTH_CMD_DEPLOY];
    /* Defaults: 25% distributed, 35% VRAM claims; allow wide sampling room. */
    ck_assert_uint_gt(t.distributed * 100, deploys * 15);
    ck_assert_uint_lt(t.distributed * 100, deploys * 35);
    ck_assert_uint_gt(t.vram_claims * 100, deploys * 20);
    /* "Mostly plausible": refusals stay a small share of the records. */
    uint64_t refusals = t.records - t.by_code[BERTH_OK];
    ck_assert_msg(refusals * 100 < t.records * 10, "%llu refusals of %llu records",
                  (unsigned long long)refusals, (unsigned long long)t.records);
    ck_assert_uint_gt(t.by_kind[BERTH_CMD_RELEASE], deploys / 3);
}
END_TEST

static Suite *gen_suite(void) {
    Suite *s = suite_create("gen");
    TCase *tc = tcase_create("gen");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_options_rejected);
    tcase_add_test(tc, test_default_policy_rare);
    tcase_add_test(tc, test_same_seed_same_bytes);
    tcase_add_test(tc, test_seeds_differ);
    tcase_add_test(tc, test_golden_stream);
    tcase_add_test(tc, test_canonical_check_mutations);
    tcase_add_test(tc, test_workers_first);
    tcase_add_test(tc, test_predictions_match_state);
    tcase_add_test(tc, test_mix_covers_everything);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(gen_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
