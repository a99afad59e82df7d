/* test_replay.c — owns the tests of replay/: the engine over real LMDB
 * journals, replay determinism and time travel, verify and its reports,
 * snapshot checking and fallback, request-id retries, and failed commits.
 *
 * Why it is shaped this way: every property replay promises is a comparison
 * of digests reached by different roads (live engine, replay from genesis,
 * from each snapshot, in a fresh process, by applying commands directly), so
 * each test builds a journal through the engine and then takes the roads.
 * Random streams are seeded; the seed is in every failure message and
 * BERTH_TEST_SEED overrides it. */
#define _GNU_SOURCE
#include <check.h>
#include <lmdb.h>
#include <msgpack.h>
#include <openssl/sha.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "test_loop.h"
#include "test_valgrind.h"
#include "engine.h"
#include "replay.h"

#define TEST_LINE_LEN_MAX 2048
#define TEST_WORDS_MAX 128
#define TEST_DIGEST_HEX_LEN (2 * BERTH_HASH_LEN + 1)
#define TEST_SNAPSHOTS_MAX 4096
#define TEST_TIMEOUT_S 300
#define TEST_RANDOM_RECORDS 20000      /* over the two-thread threshold */
#define TEST_BATCH_RECORDS_MAX 300
#define TEST_CHILD_OUTPUT_MAX 256

static uint64_t test_seed = 20261126;
static char self_exe[4096];   /* this program, re-run as a fresh process */

/* ------------------------------------------------------------- helpers */

/* Asserts inside loops of thousands of commands are LOOP_ASSERTs
 * (test_loop.h): under valgrind, Check's record of every passing ck_assert
 * made test_precomputed_matches_apply take 108 s of CPU (0.8 s natively). */

static uint64_t rng_state;
static void rng_seed(uint64_t seed) { rng_state = seed ? seed : 0x9e3779b97f4a7c15ull; }
static uint64_t rng_next(void) {
    /* xorshift64*: deterministic across platforms, good enough for streams. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}
static uint32_t rng_below(uint32_t n) {
    LOOP_ASSERT(n > 0, "a draw below 0");
    return (uint32_t)(rng_next() % n);
}

static void make_dir(char *out, size_t size) {
    int n = snprintf(out, size, "/tmp/berth-replay-XXXXXX");
    ck_assert(n > 0 && (size_t)n < size);
    ck_assert_ptr_nonnull(mkdtemp(out));
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

/* The data directory holds the history environment's directory too. */
static void remove_dir(const char *dir) {
    struct stat st;
    if (stat(dir, &st) != 0) return;
    ck_assert_int_eq(nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
}

static berth_journal *journal_open(const char *dir, bool read_only, uint64_t map_max) {
    berth_journal_options opt = { .read_only = read_only, .map_size_initial = 0,
                                  .map_size_max = map_max, .no_lock = false };
    if (map_max != 0) opt.map_size_initial = map_max;
    berth_journal *j = NULL;
    char err[256] = "";
    berth_jerr e = berth_journal_open_lmdb(&j, dir, &opt, err, sizeof(err));
    ck_assert_msg(e == BERTH_J_OK, "open %s: %s %s", dir, berth_jerr_name(e), err);
    return j;
}

static berth_engine *engine_open(berth_journal *j, uint64_t snapshot_every, bool dry_run) {
    berth_engine_options opt = { .snapshot_every = snapshot_every, .dry_run = dry_run };
    berth_engine *engine = NULL;
    char err[512] = "";
    berth_jerr e = berth_engine_open(&engine, j, &opt, NULL, err, sizeof(err));
    ck_assert_msg(e == BERTH_J_OK, "engine open: %s %s", berth_jerr_name(e), err);
    return engine;
}

/* Split a line on spaces into words pointing into buf (a copy of line). */
static size_t split_line(const char *line, char *buf, berth_str *words) {
    size_t len = strlen(line);
    LOOP_ASSERT(len < TEST_LINE_LEN_MAX, "line of %zu bytes: too long", len);
    memcpy(buf, line, len + 1);
    size_t n = 0;
    char *save = NULL;
    for (char *w = strtok_r(buf, " ", &save); w != NULL; w = strtok_r(NULL, " ", &save)) {
        LOOP_ASSERT(n < TEST_WORDS_MAX, "more than %d words", TEST_WORDS_MAX);
        words[n++] = berth_str_make(w, strlen(w));
    }
    return n;
}

static void submit(berth_engine *engine, const char *line, berth_submit_result *r) {
    char buf[TEST_LINE_LEN_MAX];
    berth_str words[TEST_WORDS_MAX];
    size_t n = split_line(line, buf, words);
    berth_engine_submit(engine, n, words, berth_str_make("tester", 6), r);
}

/* Submit and commit one command; returns its result (STAGED expected). */
static berth_submit_result run(berth_engine *engine, const char *line) {
    berth_submit_result r;
    submit(engine, line, &r);
    ck_assert_msg(r.kind == BERTH_SUBMIT_STAGED, "%s: kind %d %s", line, (int)r.kind, r.sentence);
    ck_assert_int_eq(berth_engine_commit(engine, 1700000000000ull), BERTH_J_OK);
    return r;
}

static void digest_hex(const berth_state *state, char out[TEST_DIGEST_HEX_LEN]) {
    uint8_t d[BERTH_HASH_LEN];
    ck_assert_int_eq(berth_state_digest(state, d), 0);
    berth_hex(d, BERTH_HASH_LEN, out);
}

/* Replay journal j to target and return the digest (and the stats). */
static void replay_digest(berth_journal *j, uint64_t target, bool snapshots,
                          char out[TEST_DIGEST_HEX_LEN], berth_replay_stats *stats,
                          uint32_t *bad) {
    berth_journal_reader *r = NULL;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    berth_state *s = NULL;
    char err[512] = "";
    berth_replay_stats local;
    berth_jerr e = berth_replay_to(r, target, snapshots, &s, stats ? stats : &local, bad, err, sizeof(err));
    ck_assert_msg(e == BERTH_J_OK, "replay to %" PRIu64 ": %s %s (seed %" PRIu64 ")", target,
                  berth_jerr_name(e), err, test_seed);
    char why[256];
    ck_assert_msg(berth_state_check(s, why, sizeof(why)), "replayed state broken: %s", why);
    digest_hex(s, out);
    berth_state_free(s);
    berth_journal_reader_close(r);
}

static berth_verify_report verify(berth_journal *j, berth_jerr *out_e) {
    berth_journal_reader *r = NULL;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    berth_verify_report rep;
    *out_e = berth_verify(r, &rep);
    berth_journal_reader_close(r);
    return rep;
}

static uint64_t journal_head(berth_journal *j) {
    uint64_t seq = 0;
    uint8_t hash[BERTH_HASH_LEN];
    ck_assert_int_eq(berth_journal_head(j, &seq, hash), BERTH_J_OK);
    return seq;
}

/* A record with these fields, time 1 and no actor, as tests append them
 * straight to the journal (the strings must outlive the append). */
static berth_record record_of(uint64_t seq, const char *reqid, const char *command, uint32_t code,
                              berth_str sentence) {
    berth_record rec;
    memset(&rec, 0, sizeof(rec));
    rec.seq = seq;
    rec.time_ms = 1;
    rec.actor = berth_str_make("", 0);
    rec.reqid = berth_str_make(reqid, strlen(reqid));
    rec.command = berth_str_make(command, strlen(command));
    rec.code = code;
    rec.sentence = sentence;
    return rec;
}

/* ------------------------------------------------------ random streams */

static const char *const backends[] = { "vllm", "sglang", "llama.cpp" };
#define TEST_WORKER_POOL 24
#define TEST_INSTANCE_POOL 40

/* Mostly one to three workers; one in eight has four to six, past the
 * four placements a replay item carries, so replay parses those again. */
static void gen_placement(char *p, size_t size) {
    uint32_t count = rng_below(8) == 0 ? 4 + rng_below(3) : 1 + rng_below(3);
    uint32_t used[6];
    size_t at = 0;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t w = rng_below(TEST_WORKER_POOL);
        /* a repeated worker is a syntax error: keep a few of those too */
        if (rng_below(50) != 0) {
            for (uint32_t k = 0; k < i; k++) {
                if (used[k] == w) w = (w + 1 + k) % TEST_WORKER_POOL;
            }
        }
        used[i] = w;
        at += (size_t)snprintf(p + at, size - at, " w%u", w);
        if (rng_below(10) < 6) {
            uint32_t g0 = rng_below(8), g1 = rng_below(8);
            if (g0 == g1 || rng_below(2) == 0) at += (size_t)snprintf(p + at, size - at, ":%u", g0);
            else at += (size_t)snprintf(p + at, size - at, ":%u,%u", g0, g1);
        }
        LOOP_ASSERT(at < size, "a placement of %zu bytes", at);
    }
}

static void gen_command(char *line, size_t size, uint32_t reqid_space) {
    uint32_t r = rng_below(100);
    int n;
    char place[256];
    if (r < 15) {
        n = snprintf(line, size, "WORKER.ADD w%u GPUS %u", rng_below(TEST_WORKER_POOL), rng_below(9));
        if (rng_below(2)) n += snprintf(line + n, size - (size_t)n, " VRAM %u", 40000u * (1 + rng_below(2)));
        if (rng_below(3) == 0) n += snprintf(line + n, size - (size_t)n, " LABEL zone=z%u LABEL rack=r%u",
                                             rng_below(3), rng_below(5));
    } else if (r < 20) {
        n = snprintf(line, size, "WORKER.CORDON w%u", rng_below(TEST_WORKER_POOL));
    } else if (r < 25) {
        n = snprintf(line, size, "WORKER.UNCORDON w%u", rng_below(TEST_WORKER_POOL));
    } else if (r < 29) {
        n = snprintf(line, size, "WORKER.REMOVE w%u", rng_below(TEST_WORKER_POOL));
    } else if (r < 65) {
        gen_placement(place, sizeof(place));
        n = snprintf(line, size, "DEPLOY i%u MODEL m%u BACKEND %s", rng_below(TEST_INSTANCE_POOL),
                     rng_below(4), backends[rng_below(3)]);
        if (rng_below(10) < 3) n += snprintf(line + n, size - (size_t)n, " VRAM %u", 10000 + rng_below(35000));
        n += snprintf(line + n, size - (size_t)n, " ON%s", place);
    } else if (r < 92) {
        n = snprintf(line, size, "RELEASE i%u", rng_below(TEST_INSTANCE_POOL));
    } else {
        static const char *const policies[] = { "vllm", "vllm,sglang", "sglang", "llama.cpp,vllm" };
        n = snprintf(line, size, "POLICY.SET EXCLUSIVE %s", policies[rng_below(4)]);
    }
    if (rng_below(5) == 0) n += snprintf(line + n, size - (size_t)n, " REQID r%u", rng_below(reqid_space));
    LOOP_ASSERT(n > 0 && (size_t)n < size, "generated line too long");
}

/* The journaled lines of a stream, seq i+1 at index i. */
typedef struct stream {
    size_t count;
    char (*lines)[TEST_LINE_LEN_MAX / 4];
} stream;

/* Drive records through engine in random batches until head reaches target. */
static void run_stream(berth_engine *engine, uint64_t target, uint32_t batch_max, stream *st) {
    st->lines = calloc(target, sizeof(st->lines[0]));
    ck_assert_ptr_nonnull(st->lines);
    st->count = 0;
    uint64_t guard = target * 4 + 1000;
    while (berth_engine_head_seq(engine) < target) {
        ck_assert_msg(guard-- > 0, "stream stalled (seed %" PRIu64 ")", test_seed);
        uint64_t batch = 1 + rng_below(batch_max);
        uint64_t room = target - berth_engine_head_seq(engine);
        if (batch > room) batch = room;
        while (berth_engine_staged(engine) < batch) {
            char line[TEST_LINE_LEN_MAX / 4];
            gen_command(line, sizeof(line), (uint32_t)(target / 8 + 1));
            berth_submit_result r;
            submit(engine, line, &r);
            if (r.kind != BERTH_SUBMIT_STAGED) {
                LOOP_ASSERT(r.kind == BERTH_SUBMIT_SYNTAX || r.kind == BERTH_SUBMIT_RETRY ||
                            r.kind == BERTH_SUBMIT_CONFLICT, "%s: kind %d (seed %" PRIu64 ")",
                            line, (int)r.kind, test_seed);
                continue;
            }
            LOOP_ASSERT(r.seq == st->count + 1, "%s: seq %" PRIu64 ", want %zu", line, r.seq, st->count + 1);
            memcpy(st->lines[st->count++], line, sizeof(line));
        }
        berth_jerr e = berth_engine_commit(engine, 1700000000000ull + st->count);
        LOOP_ASSERT(e == BERTH_J_OK, "commit at %zu: %s (seed %" PRIu64 ")", st->count, berth_jerr_name(e), test_seed);
    }
    ck_assert_uint_eq(st->count, target);
}

/* A journal in dir (made here) of `records` records from the stream seeded
 * test_seed + seed_offset, committed `batch` at a time through an engine
 * that snapshots every snapshot_every records (0: never) and is closed
 * again. st (may be NULL) keeps the stream's lines; the caller frees them. */
static berth_journal *stream_journal(char *dir, size_t dir_size, uint64_t seed_offset, uint64_t snapshot_every,
                                     size_t records, size_t batch, stream *st) {
    rng_seed(test_seed + seed_offset);
    make_dir(dir, dir_size);
    berth_journal *j = journal_open(dir, false, 0);
    berth_engine *engine = engine_open(j, snapshot_every, false);
    stream own;
    stream *lines = st != NULL ? st : &own;
    run_stream(engine, records, batch, lines);
    berth_engine_close(engine);
    if (st == NULL) free(own.lines);
    return j;
}

/* stream_journal's TEST_RANDOM_RECORDS records, lines not kept. */
static berth_journal *random_journal(char *dir, size_t dir_size, uint64_t seed_offset,
                                     uint64_t snapshot_every) {
    return stream_journal(dir, dir_size, seed_offset, snapshot_every, TEST_RANDOM_RECORDS,
                          TEST_BATCH_RECORDS_MAX, NULL);
}

/* Build the state of the first k lines by parsing and applying them directly. */
static void direct_digest(const stream *st, size_t k, char out[TEST_DIGEST_HEX_LEN]) {
    berth_state *s = berth_state_new(NULL);
    ck_assert_ptr_nonnull(s);
    static berth_cmd cmd;
    static berth_outcome outcome;
    char canonical[BERTH_COMMAND_LEN_MAX];
    for (size_t i = 0; i < k; i++) {
        char buf[TEST_LINE_LEN_MAX];
        berth_str words[TEST_WORDS_MAX];
        size_t n = split_line(st->lines[i], buf, words);
        char err[BERTH_ERR_LEN_MAX];
        LOOP_ASSERT(berth_cmd_parse(&cmd, n, words, err, sizeof(err)) == 0, "line %zu '%s': %s", i + 1, st->lines[i], err);
        size_t len = berth_cmd_canonical(&cmd, canonical, sizeof(canonical));
        LOOP_ASSERT(len > 0, "line %zu '%s': no canonical text", i + 1, st->lines[i]);
        if (cmd.reqid.len > 0) {
            berth_reqid_entry hit;
            LOOP_ASSERT(berth_state_reqid_check(s, cmd.reqid, berth_str_make(canonical, len), &hit) == BERTH_REQID_NEW,
                        "line %zu '%s': its REQID is not new", i + 1, st->lines[i]);
        }
        LOOP_ASSERT(berth_state_apply(s, &cmd, berth_str_make(canonical, len), i + 1, &outcome) == 0,
                    "line %zu '%s': apply failed", i + 1, st->lines[i]);
    }
    digest_hex(s, out);
    berth_state_free(s);
}

/* The digest a brand-new process computes by opening the engine on dir. */
static void fresh_process_digest(const char *dir, char out[TEST_DIGEST_HEX_LEN]) {
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (dup2(fds[1], STDOUT_FILENO) < 0) _exit(3);
        close(fds[0]);
        execl(self_exe, self_exe, "--digest", dir, (char *)NULL);
        _exit(4);
    }
    close(fds[1]);
    char buf[TEST_CHILD_OUTPUT_MAX];
    size_t got = 0;
    ssize_t n;
    while ((n = read(fds[0], buf + got, sizeof(buf) - 1 - got)) > 0) got += (size_t)n;
    close(fds[0]);
    buf[got] = '\0';
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed: %s", buf);
    ck_assert_uint_eq(got, TEST_DIGEST_HEX_LEN);   /* hex + newline */
    memcpy(out, buf, TEST_DIGEST_HEX_LEN - 1);
    out[TEST_DIGEST_HEX_LEN - 1] = '\0';
}

static int digest_main(const char *dir) {
    berth_journal_options opt = { .read_only = true };
    berth_journal *j = NULL;
    char err[512] = "";
    if (berth_journal_open_lmdb(&j, dir, &opt, err, sizeof(err)) != BERTH_J_OK) {
        fprintf(stdout, "open: %s\n", err);
        return 1;
    }
    berth_engine *engine = NULL;
    berth_engine_options eopt = { .snapshot_every = 0, .dry_run = true };
    if (berth_engine_open(&engine, j, &eopt, NULL, err, sizeof(err)) != BERTH_J_OK) {
        fprintf(stdout, "engine: %s\n", err);
        berth_journal_close(j);
        return 1;
    }
    uint8_t d[BERTH_HASH_LEN];
    char hex[TEST_DIGEST_HEX_LEN];
    int rc = berth_state_digest(berth_engine_state(engine), d);
    berth_hex(d, BERTH_HASH_LEN, hex);
    berth_engine_close(engine);
    berth_journal_close(j);
    if (rc != 0) return 1;
    printf("%s\n", hex);
    return 0;
}

/* ---------------------------------------------------------------- tests */

START_TEST(test_seed_case) {
    char dir[64];
    make_dir(dir, sizeof(dir));
    berth_journal *j = journal_open(dir, false, 0);
    berth_engine *engine = engine_open(j, 0, false);
    run(engine, "WORKER.ADD w1 GPUS 4");
    run(engine, "WORKER.ADD w2 GPUS 4");
    run(engine, "WORKER.ADD w3 GPUS 4");
    berth_submit_result a = run(engine, "DEPLOY a MODEL llama BACKEND vllm ON w1:0,1 w2:0,1");
    ck_assert_int_eq(a.code, BERTH_OK);
    ck_assert_uint_eq(a.seq, 4);
    berth_submit_result b = run(engine, "DEPLOY b MODEL qwen BACKEND vllm ON w3:0,1 w2:2,3");
    ck_assert_int_eq(b.code, BERTH_EXCLUSIVE);
    ck_assert_msg(strstr(b.sentence, "w2") && strstr(b.sentence, "a"), "sentence: %s", b.sentence);
    ck_assert_ptr_null(berth_state_instance(berth_engine_state(engine), berth_str_make("b", 1)));
    ck_assert_int_eq(run(engine, "RELEASE a").code, BERTH_OK);
    berth_submit_result b2 = run(engine, "DEPLOY b MODEL qwen BACKEND vllm ON w3:0,1 w2:2,3");
    ck_assert_int_eq(b2.code, BERTH_OK);
    ck_assert_uint_eq(berth_engine_head_seq(engine), 7);
    char live[TEST_DIGEST_HEX_LEN], again[TEST_DIGEST_HEX_LEN];
    digest_hex(berth_engine_state(engine), live);
    berth_engine_close(engine);

    /* Reopen: the same state, the same refusal recorded at seq 5. */
    engine = engine_open(j, 0, false);
    digest_hex(berth_engine_state(engine), again);
    ck_assert_str_eq(live, again);
    ck_assert_ptr_nonnull(berth_state_instance(berth_engine_state(engine), berth_str_make("b", 1)));
    berth_journal_reader *r = NULL;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    berth_record rec;
    ck_assert_int_eq(berth_journal_read(r, 5, &rec, NULL, NULL), BERTH_J_OK);
    ck_assert_uint_eq(rec.code, BERTH_EXCLUSIVE);
    ck_assert_uint_eq(rec.sentence.len, strlen(b.sentence));
    ck_assert(memcmp(rec.sentence.ptr, b.sentence, rec.sentence.len) == 0);
    ck_assert(berth_str_eq(rec.actor, berth_str_make("tester", 6)));
    berth_journal_reader_close(r);
    berth_jerr e;
    berth_verify_report rep = verify(j, &e);
    ck_assert_msg(e == BERTH_J_OK && rep.ok, "verify: %s", rep.what);
    ck_assert_uint_eq(rep.records, 7);
    berth_engine_close(engine);
    berth_journal_close(j);
    remove_dir(dir);
}
END_TEST

START_TEST(test_determinism_and_time_travel) {
    rng_seed(test_seed);
    char dir[64];
    make_dir(dir, sizeof(dir));
    berth_journal *j = journal_open(dir, false, 0);
    berth_engine *engine = engine_open(j, 997, false);
    stream st;
    run_stream(engine, TEST_RANDOM_RECORDS, TEST_BATCH_RECORDS_MAX, &st);
    char live[TEST_DIGEST_HEX_LEN], d1[TEST_DIGEST_HEX_LEN], d2[TEST_DIGEST_HEX_LEN];
    digest_hex(berth_engine_state(engine), live);
    char why[256];
    ck_assert_msg(berth_state_check(berth_engine_state(engine), why, sizeof(why)), "%s", why);

    /* genesis, then every snapshot plus its tail */
    berth_replay_stats stats;
    replay_digest(j, UINT64_MAX, false, d1, &stats, NULL);
    ck_assert_msg(strcmp(live, d1) == 0, "live != genesis replay (seed %" PRIu64 ")", test_seed);
    ck_assert_uint_eq(stats.from_snapshot_seq, 0);
    ck_assert_uint_eq(stats.records, TEST_RANDOM_RECORDS);
    berth_journal_reader *r = NULL;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    static uint64_t snaps[TEST_SNAPSHOTS_MAX];
    size_t nsnap = 0;
    ck_assert_int_eq(berth_journal_snapshot_list(r, snaps, TEST_SNAPSHOTS_MAX, &nsnap), BERTH_J_OK);
    ck_assert_uint_eq(nsnap, TEST_RANDOM_RECORDS / 997);
    /* Under valgrind every fourth snapshot and the last: the first's tail
     * takes the two-thread road, the last's the one-thread road, as all do. */
    size_t snap_step = test_under_valgrind() ? 4 : 1;
    for (size_t i = 0; i < nsnap; i++) {
        if (i % snap_step != 0 && i != nsnap - 1) continue;
        /* the snapshot alone equals genesis replay to its seq */
        uint32_t bad = 0;
        replay_digest(j, snaps[i], true, d1, &stats, &bad);
        ck_assert_uint_eq(stats.from_snapshot_seq, snaps[i]);
        ck_assert_uint_eq(bad, 0);
        replay_digest(j, snaps[i], false, d2, NULL, NULL);
        ck_assert_msg(strcmp(d1, d2) == 0, "snapshot %" PRIu64 " != replay (seed %" PRIu64 ")", snaps[i], test_seed);
        /* snapshot plus tail equals live: forward from the snapshot's state */
        berth_state *s = NULL;
        char err[512];
        ck_assert_int_eq(berth_replay_to(r, snaps[i], true, &s, NULL, NULL, err, sizeof(err)), BERTH_J_OK);
        ck_assert_int_eq(berth_replay_forward(r, s, UINT64_MAX, &stats, err, sizeof(err)), BERTH_J_OK);
        ck_assert_uint_eq(stats.records, TEST_RANDOM_RECORDS - snaps[i]);
        digest_hex(s, d2);
        berth_state_free(s);
        ck_assert_msg(strcmp(live, d2) == 0, "snapshot %" PRIu64 " + tail != live (seed %" PRIu64 ")",
                      snaps[i], test_seed);
    }
    replay_digest(j, UINT64_MAX, true, d1, &stats, NULL);
    ck_assert_str_eq(live, d1);
    ck_assert_uint_eq(stats.from_snapshot_seq, snaps[nsnap - 1]);

    /* time travel: replay to k == applying only the first k commands */
    uint64_t ks[8] = { 1, 2, 996, 997, 998, TEST_RANDOM_RECORDS - 1, 0, 0 };
    ks[6] = 1 + rng_below(TEST_RANDOM_RECORDS - 1);
    ks[7] = TEST_RANDOM_RECORDS;
    for (size_t i = 0; i < 8; i++) {
        direct_digest(&st, ks[i], d1);
        replay_digest(j, ks[i], true, d2, NULL, NULL);
        ck_assert_msg(strcmp(d1, d2) == 0, "time travel to %" PRIu64 " differs (seed %" PRIu64 ")", ks[i], test_seed);
    }
    berth_state *s = NULL;
    char err[512] = "";
    ck_assert_int_eq(berth_replay_to(r, TEST_RANDOM_RECORDS + 1, true, &s, NULL, NULL, err, sizeof(err)),
                     BERTH_J_NOTFOUND);
    ck_assert_ptr_null(s);
    berth_journal_reader_close(r);

    berth_jerr e;
    berth_verify_report rep = verify(j, &e);
    ck_assert_msg(e == BERTH_J_OK && rep.ok, "verify: %s (seed %" PRIu64 ")", rep.what, test_seed);
    ck_assert_uint_eq(rep.records, TEST_RANDOM_RECORDS);

    /* a fresh process, and a reopen here, reach the same digest */
    berth_engine_close(engine);
    berth_journal_close(j);
    fresh_process_digest(dir, d1);
    ck_assert_msg(strcmp(live, d1) == 0, "fresh process digest differs (seed %" PRIu64 ")", test_seed);
    j = journal_open(dir, false, 0);
    engine = engine_open(j, 997, false);
    digest_hex(berth_engine_state(engine), d2);
    ck_assert_str_eq(live, d2);
    berth_engine_close(engine);
    berth_journal_close(j);
    free(st.lines);
    remove_dir(dir);
}
END_TEST

/* Flip one byte of record `seq` directly in the LMDB data file. */
static void flip_record_byte(const char *dir, const uint8_t *raw, size_t raw_len, size_t offset) {
    ck_assert_uint_lt(offset, raw_len);
    char path[600];
    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    int fd = open(path, O_RDWR);
    ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
    struct stat sb;
    ck_assert_int_eq(fstat(fd, &sb), 0);
    uint8_t *file = malloc((size_t)sb.st_size);
    ck_assert_ptr_nonnull(file);
    ck_assert_int_eq(pread(fd, file, (size_t)sb.st_size, 0), sb.st_size);
    /* Copy-on-write leaves stale copies of a record in freed pages: flip them all. */
    size_t hits = 0;
    for (uint8_t *at = file; (at = memmem(at, (size_t)sb.st_size - (size_t)(at - file), raw, raw_len)) != NULL;
         at += raw_len) {
        uint8_t b = at[offset] ^ 0x01;
        ck_assert_int_eq(pwrite(fd, &b, 1, (off_t)(at - file) + (off_t)offset), 1);
        hits++;
    }
    ck_assert_uint_ge(hits, 1);
    ck_assert_int_eq(fsync(fd), 0);
    ck_assert_int_eq(close(fd), 0);
    free(file);
}

START_TEST(test_verify_flipped_byte) {
    char dir[64];
    berth_journal *j = random_journal(dir, sizeof(dir), 1, 0);
    const uint64_t bad_seq = TEST_RANDOM_RECORDS - 2345;   /* deep in the two-thread run */
    berth_journal_reader *r = NULL;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    berth_record rec;
    const uint8_t *raw = NULL;
    size_t raw_len = 0;
    ck_assert_int_eq(berth_journal_read(r, bad_seq, &rec, &raw, &raw_len), BERTH_J_OK);
    uint8_t *copy = malloc(raw_len);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, raw, raw_len);
    /* a byte inside the command text: still decodes, but the hash breaks */
    size_t offset = (size_t)((const uint8_t *)rec.command.ptr - raw) + 1;
    berth_journal_reader_close(r);
    berth_journal_close(j);
    flip_record_byte(dir, copy, raw_len, offset);
    free(copy);

    j = journal_open(dir, true, 0);
    berth_jerr e;
    berth_verify_report rep = verify(j, &e);
    ck_assert_int_eq(e, BERTH_J_CORRUPT);
    ck_assert(!rep.ok);
    ck_assert_uint_eq(rep.first_bad_seq, bad_seq);
    ck_assert_uint_eq(rep.records, bad_seq - 1);
    char want[64];
    snprintf(want, sizeof(want), "seq %" PRIu64 ": hash mismatch", bad_seq);
    ck_assert_msg(strstr(rep.what, want) != NULL, "what: %s", rep.what);
    /* The engine checks the tail it opens on and refuses, naming the seq. */
    berth_engine *broken = NULL;
    berth_engine_options opt = { .snapshot_every = 0, .dry_run = true };
    char err[512] = "";
    ck_assert_int_eq(berth_engine_open(&broken, j, &opt, NULL, err, sizeof(err)), BERTH_J_CORRUPT);
    ck_assert_ptr_null(broken);
    ck_assert_msg(strstr(err, want) != NULL && strstr(err, "berth journal verify") != NULL, "err: %s", err);
    berth_journal_close(j);
    remove_dir(dir);
}
END_TEST

/* Edit the journal's LMDB database behind the journal's back: delete record
 * seq (a gap) or keep only the first half of its bytes (a truncation). */
static void lmdb_damage(const char *dir, uint64_t seq, bool truncate) {
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    ck_assert_int_eq(mdb_env_create(&env), 0);
    ck_assert_int_eq(mdb_env_set_maxdbs(env, 16), 0);
    ck_assert_int_eq(mdb_env_open(env, dir, 0, 0644), 0);
    ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    ck_assert_int_eq(mdb_dbi_open(txn, "journal", MDB_INTEGERKEY, &dbi), 0);
    MDB_val key = { sizeof(seq), &seq }, val;
    if (truncate) {
        ck_assert_int_eq(mdb_get(txn, dbi, &key, &val), 0);
        uint8_t half[BERTH_RECORD_BYTES_MAX];
        size_t n = val.mv_size / 2;
        memcpy(half, val.mv_data, n);
        MDB_val cut = { n, half };
        ck_assert_int_eq(mdb_put(txn, dbi, &key, &cut, 0), 0);
    } else {
        ck_assert_int_eq(mdb_del(txn, dbi, &key, NULL), 0);
    }
    ck_assert_int_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* An applier slowed down for its first records: the feeder gets far ahead,
 * so it takes the hash, decode and parse steps of the chunks after. */
static berth_jerr slow_touched(void *ctx, uint64_t seq, const berth_touched *touched) {
    (void)touched;
    uint64_t *slow_until = ctx;
    if (seq <= *slow_until) {
        struct timespec pause = { 0, 20000 };
        nanosleep(&pause, NULL);
    }
    return BERTH_J_OK;
}

/* Two faults a few records apart, in one chunk: a flipped byte (hash
 * mismatch) and, after it, a deleted record (a gap). The feeder reads a
 * chunk whole before it hashes any of it, so it meets the gap first; the
 * report must still name the first bad record, as record-by-record
 * checking does, whichever thread hashed it. Replay, which does not hash,
 * stops at the gap. */
START_TEST(test_verify_first_of_two_faults) {
    char dir[64];
    berth_journal *j = random_journal(dir, sizeof(dir), 11, 0);
    const uint64_t bad_seq = TEST_RANDOM_RECORDS - 3001;
    const uint64_t gap_seq = bad_seq + 3;
    berth_journal_reader *r = NULL;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    berth_record rec;
    const uint8_t *raw = NULL;
    size_t raw_len = 0;
    ck_assert_int_eq(berth_journal_read(r, bad_seq, &rec, &raw, &raw_len), BERTH_J_OK);
    uint8_t *copy = malloc(raw_len);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, raw, raw_len);
    /* The sentence's last byte: the record still decodes and parses, and
     * replay, which neither hashes nor compares outcomes, passes it. */
    ck_assert_uint_gt(rec.sentence.len, 0);
    size_t offset = (size_t)((const uint8_t *)rec.sentence.ptr - raw) + rec.sentence.len - 1;
    berth_journal_reader_close(r);
    berth_journal_close(j);
    flip_record_byte(dir, copy, raw_len, offset);
    free(copy);
    lmdb_damage(dir, gap_seq, false);

    j = journal_open(dir, true, 0);
    char want[64];
    snprintf(want, sizeof(want), "seq %" PRIu64 ": hash mismatch", bad_seq);
    for (int slow = 0; slow < 2; slow++) {
        uint64_t slow_until = slow ? bad_seq - 1 : 0;
        ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
        berth_verify_report rep;
        berth_jerr e = berth_verify_touched(r, slow_touched, &slow_until, &rep);
        berth_journal_reader_close(r);
        ck_assert_int_eq(e, BERTH_J_CORRUPT);
        ck_assert_uint_eq(rep.first_bad_seq, bad_seq);
        ck_assert_uint_eq(rep.records, bad_seq - 1);
        ck_assert_msg(strstr(rep.what, want) != NULL, "slow %d, what: %s", slow, rep.what);
    }
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    berth_state *s = NULL;
    char err[512] = "";
    ck_assert_int_eq(berth_replay_to(r, UINT64_MAX, false, &s, NULL, NULL, err, sizeof(err)), BERTH_J_CORRUPT);
    ck_assert_ptr_null(s);
    snprintf(want, sizeof(want), "seq %" PRIu64 " missing (gap after %" PRIu64 ")", gap_seq, gap_seq - 1);
    ck_assert_msg(strstr(err, want) != NULL, "err: %s", err);
    berth_journal_reader_close(r);
    berth_journal_close(j);
    remove_dir(dir);
}
END_TEST

/* An applier slow for half the walk keeps the ring full: its feeder
 * sleeps at a full ring and is woken at REPLAY_RING_RESUME, lap after lap,
 * and must neither miss a wake (the walk would hang) nor lose or repeat a
 * chunk (the count or the outcomes would differ). Then the applier speeds
 * up and drains the ring. */
START_TEST(test_verify_slow_applier_full_ring) {
    char dir[64];
    berth_journal *j = random_journal(dir, sizeof(dir), 12, 0);
    berth_journal_reader *r = NULL;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    uint64_t slow_until = TEST_RANDOM_RECORDS / 2;
    berth_verify_report rep;
    berth_jerr e = berth_verify_touched(r, slow_touched, &slow_until, &rep);
    ck_assert_msg(e == BERTH_J_OK && rep.ok, "verify: %s", rep.what);
    ck_assert_uint_eq(rep.records, TEST_RANDOM_RECORDS);
    ck_assert_uint_eq(rep.first_bad_seq, 0);
    berth_journal_reader_close(r);
    berth_journal_close(j);
    remove_dir(dir);
}
END_TEST

START_TEST(test_verify_gap_and_truncation) {
    char dir[64];
    stream st;
    berth_journal *j = stream_journal(dir, sizeof(dir), 4, 0, 200, 50, &st);
    berth_journal_close(j);

    lmdb_damage(dir, 150, true);
    j = journal_open(dir, true, 0);
    berth_jerr e;
    berth_verify_report rep = verify(j, &e);
    ck_assert_int_eq(e, BERTH_J_CORRUPT);
    ck_assert_uint_eq(rep.first_bad_seq, 150);
    ck_assert_msg(strstr(rep.what, "seq 150: undecodable") != NULL, "what: %s", rep.what);
    berth_journal_close(j);

    lmdb_damage(dir, 100, false);
    j = journal_open(dir, true, 0);
    rep = verify(j, &e);
    ck_assert_int_eq(e, BERTH_J_CORRUPT);
    ck_assert_uint_eq(rep.first_bad_seq, 100);
    ck_assert_uint_eq(rep.records, 99);
    ck_assert_msg(strstr(rep.what, "seq 100 missing (gap after 99)") != NULL, "what: %s", rep.what);
    /* replay stops at the gap and says where; before it, time travel works */
    berth_journal_reader *r = NULL;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    berth_state *s = NULL;
    char err[512] = "";
    ck_assert_int_eq(berth_replay_to(r, UINT64_MAX, true, &s, NULL, NULL, err, sizeof(err)), BERTH_J_CORRUPT);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(err, "seq 100 missing") != NULL, "err: %s", err);
    berth_journal_reader_close(r);
    char d1[TEST_DIGEST_HEX_LEN], d2[TEST_DIGEST_HEX_LEN];
    replay_digest(j, 99, false, d1, NULL, NULL);
    direct_digest(&st, 99, d2);
    ck_assert_str_eq(d1, d2);
    berth_engine *broken = NULL;
    berth_engine_options opt = { .snapshot_every = 0, .dry_run = true };
    ck_assert_int_eq(berth_engine_open(&broken, j, &opt, NULL, err, sizeof(err)), BERTH_J_CORRUPT);
    ck_assert_msg(strstr(err, "seq 100") != NULL, "err: %s", err);
    berth_journal_close(j);
    free(st.lines);
    remove_dir(dir);
}
END_TEST

/* A head record that does not decode (cut to half its bytes) is a finding
 * about one seq, as it is mid-journal: the reader still gives its seq,
 * verify names it, and the records below it replay (hV3: every read failed
 * at the head, and verify could not name the seq). */
START_TEST(test_cut_head_named) {
    char dir[64];
    stream st;
    berth_journal *j = stream_journal(dir, sizeof(dir), 5, 0, 200, 50, &st);
    berth_journal_close(j);

    lmdb_damage(dir, 200, true);
    j = journal_open(dir, true, 0);
    berth_journal_reader *r = NULL;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    uint64_t head = 0;
    uint8_t hash[BERTH_HASH_LEN];
    ck_assert_int_eq(berth_journal_reader_head(r, &head, hash), BERTH_J_CORRUPT);
    ck_assert_uint_eq(head, 200);
    berth_state *s = NULL;
    char err[512] = "";
    ck_assert_int_eq(berth_replay_to(r, UINT64_MAX, true, &s, NULL, NULL, err, sizeof(err)), BERTH_J_CORRUPT);
    ck_assert_msg(strstr(err, "seq 200: undecodable") != NULL, "err: %s", err);
    ck_assert_ptr_null(s);
    ck_assert_int_eq(berth_replay_to(r, 150, false, &s, NULL, NULL, err, sizeof(err)), BERTH_J_OK);
    ck_assert_int_eq(berth_replay_forward(r, s, 199, NULL, err, sizeof(err)), BERTH_J_OK);
    char d1[TEST_DIGEST_HEX_LEN], d2[TEST_DIGEST_HEX_LEN];
    digest_hex(s, d1);
    direct_digest(&st, 199, d2);
    ck_assert_str_eq(d1, d2);
    ck_assert_int_eq(berth_replay_forward(r, s, UINT64_MAX, NULL, err, sizeof(err)), BERTH_J_CORRUPT);
    ck_assert_msg(strstr(err, "seq 200: undecodable") != NULL, "err: %s", err);
    berth_state_free(s);
    berth_journal_reader_close(r);
    berth_jerr e;
    berth_verify_report rep = verify(j, &e);
    ck_assert_int_eq(e, BERTH_J_CORRUPT);
    ck_assert_uint_eq(rep.first_bad_seq, 200);
    ck_assert_uint_eq(rep.records, 199);
    ck_assert_msg(strstr(rep.what, "seq 200: undecodable") != NULL, "what: %s", rep.what);
    berth_journal_close(j);
    /* A writable open still refuses, naming it (its own head check). */
    berth_journal_options opt = { 0 };
    ck_assert_int_eq(berth_journal_open_lmdb(&j, dir, &opt, err, sizeof(err)), BERTH_J_CORRUPT);
    ck_assert_msg(strstr(err, "(seq 200) does not decode") != NULL, "err: %s", err);
    free(st.lines);
    remove_dir(dir);
}
END_TEST

/* With a snapshot at the head, the engine's open replays nothing, and the
 * record the snapshot ends at is the chain's anchor: its hash is checked
 * (hV3: a flipped byte there was accepted, and the next write chained
 * onto the damaged record). */
START_TEST(test_snapshot_anchor_checked) {
    char dir[64];
    stream st;
    berth_journal *j = stream_journal(dir, sizeof(dir), 6, 1, 120, 20, &st);   /* a snapshot after every commit */
    berth_journal_reader *r = NULL;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    uint64_t snap = 0;
    const void *bytes = NULL;
    size_t len = 0;
    ck_assert_int_eq(berth_journal_snapshot_get(r, UINT64_MAX, &snap, &bytes, &len), BERTH_J_OK);
    ck_assert_uint_eq(snap, 120);
    berth_record rec;
    const uint8_t *raw = NULL;
    size_t raw_len = 0;
    ck_assert_int_eq(berth_journal_read(r, 120, &rec, &raw, &raw_len), BERTH_J_OK);
    uint8_t *copy = malloc(raw_len);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, raw, raw_len);
    size_t offset = (size_t)((const uint8_t *)rec.command.ptr - raw) + 1;   /* still decodes */
    berth_journal_reader_close(r);
    berth_journal_close(j);
    flip_record_byte(dir, copy, raw_len, offset);
    free(copy);

    j = journal_open(dir, false, 0);
    berth_engine *broken = NULL;
    berth_engine_options opt = { .snapshot_every = 1 };
    char err[512] = "";
    ck_assert_int_eq(berth_engine_open(&broken, j, &opt, NULL, err, sizeof(err)), BERTH_J_CORRUPT);
    ck_assert_ptr_null(broken);
    ck_assert_msg(strstr(err, "seq 120: hash mismatch") != NULL && strstr(err, "berth journal verify") != NULL,
                  "err: %s", err);
    ck_assert_uint_eq(journal_head(j), 120);   /* nothing chained onto it */
    /* An unchecked replay (berth replay, status) still starts from the snapshot. */
    char d1[TEST_DIGEST_HEX_LEN], d2[TEST_DIGEST_HEX_LEN];
    replay_digest(j, UINT64_MAX, true, d1, NULL, NULL);
    direct_digest(&st, 120, d2);
    ck_assert_str_eq(d1, d2);
    berth_journal_close(j);
    free(st.lines);
    remove_dir(dir);
}
END_TEST

START_TEST(test_verify_altered_outcome) {
    char dir[64];
    make_dir(dir, sizeof(dir));
    berth_journal *j = journal_open(dir, false, 0);
    berth_engine *engine = engine_open(j, 0, false);
    run(engine, "WORKER.ADD w1 GPUS 2");
    run(engine, "WORKER.ADD w2 GPUS 2");
    berth_engine_close(engine);
    /* Re-hashed and re-chained by the journal, but the outcome is a lie. */
    berth_record lie[2] = {
        record_of(3, "", "WORKER.ADD w3 GPUS 2", BERTH_EXCLUSIVE, berth_str_make("made up", 7)),
        record_of(4, "", "WORKER.CORDON w1", BERTH_OK, berth_str_make("made up", 7)),
    };
    ck_assert_int_eq(berth_journal_append(j, lie, NULL, 2), BERTH_J_OK);
    berth_jerr e;
    berth_verify_report rep = verify(j, &e);
    ck_assert_int_eq(e, BERTH_J_CORRUPT);
    ck_assert_uint_eq(rep.first_bad_seq, 3);
    ck_assert_msg(strstr(rep.what, "seq 3: recorded EXCLUSIVE but replay gives OK") != NULL, "what: %s", rep.what);
    berth_engine *broken = NULL;
    berth_engine_options opt = { 0 };
    char err[512] = "";
    ck_assert_int_eq(berth_engine_open(&broken, j, &opt, NULL, err, sizeof(err)), BERTH_J_CORRUPT);
    ck_assert_msg(strstr(err, "seq 3") != NULL, "err: %s", err);
    /* Replay itself does not judge outcomes: it rebuilds what the commands did. */
    char d[TEST_DIGEST_HEX_LEN];
    replay_digest(j, UINT64_MAX, false, d, NULL, NULL);
    berth_journal_close(j);
    remove_dir(dir);
}
END_TEST

/* A journal written before session 16: version-1 records, whose sentences
 * are in wording 1 (core/state.h). Each is encoded as that berth wrote it
 * and appended as bytes (the journal's append writes the current version). */
static void append_v1(berth_journal *j, berth_state *state, uint8_t chain[BERTH_HASH_LEN], const char *text) {
    berth_str words[BERTH_ARGS_MAX];
    berth_cmd cmd;
    char err[BERTH_ERR_LEN_MAX];
    ck_assert_msg(berth_cmd_parse_text(&cmd, text, strlen(text), words, BERTH_ARGS_MAX, err, sizeof(err)) == 0,
                  "%s: %s", text, err);
    static berth_outcome out;
    uint64_t seq = berth_state_last_seq(state) + 1;
    berth_state_set_wording(state, 1);
    ck_assert_int_eq(berth_state_apply(state, &cmd, berth_str_make(text, strlen(text)), seq, &out), 0);
    berth_state_set_wording(state, BERTH_WORDING_CURRENT);
    berth_record rec = record_of(seq, "", text, out.code, berth_str_make(out.sentence, out.sentence_len));
    rec.version = 1;
    memcpy(rec.prev_hash, chain, BERTH_HASH_LEN);
    static uint8_t buf[BERTH_RECORD_BYTES_MAX];
    size_t len = berth_record_encode(&rec, buf, sizeof(buf));
    ck_assert_uint_gt(len, 0);
    memcpy(chain, rec.hash, BERTH_HASH_LEN);
    berth_encoded enc = { buf, len };
    ck_assert_int_eq(berth_journal_append_encoded(j, &enc, NULL, 1), BERTH_J_OK);
}

/* An older journal verifies and opens as it was written: each record is
 * judged again in the wording of its format version, while new records
 * are answered and written in the current one (a journal then holds both).
 * A current record in the old wording is a finding, so the wording really
 * follows the record. */
START_TEST(test_older_wording_verifies) {
    char dir[64];
    make_dir(dir, sizeof(dir));
    berth_journal *j = journal_open(dir, false, 0);
    berth_state *old = berth_state_new(NULL);
    ck_assert_ptr_nonnull(old);
    uint8_t chain[BERTH_HASH_LEN] = { 0 };
    static const char *const v1[] = {
        "WORKER.ADD w1 GPUS 2", "WORKER.ADD z GPUS 0 VRAM 10", "WORKER.ADD v GPUS 1 VRAM 100",
        "WORKER.CORDON w1", "WORKER.UNCORDON w1", "DEPLOY a MODEL m BACKEND vllm ON w1:0",
        "WORKER.REMOVE w1", "DEPLOY b MODEL m BACKEND vllm VRAM 200 ON v:0",
        "DEPLOY b MODEL m BACKEND vllm VRAM 20 ON z",
    };
    const size_t n1 = sizeof(v1) / sizeof(v1[0]);
    for (size_t i = 0; i < n1; i++) append_v1(j, old, chain, v1[i]);
    berth_state_free(old);
    berth_engine *engine = engine_open(j, 0, false);   /* checks the tail's outcomes */
    berth_submit_result r = run(engine, "WORKER.REMOVE w1");
    ck_assert_str_eq(r.sentence, "worker w1 still serves 1 instance (a); release it before removing the worker");
    r = run(engine, "WORKER.CORDON v");
    ck_assert_str_eq(r.sentence, "worker v cordoned: it serves no instance and accepts no new ones");
    berth_engine_close(engine);
    berth_jerr e;
    berth_verify_report rep = verify(j, &e);
    ck_assert_msg(e == BERTH_J_OK && rep.ok, "verify: %s", rep.what);
    ck_assert_uint_eq(rep.records, n1 + 2);
    berth_journal_reader *rd = NULL;
    ck_assert_int_eq(berth_journal_reader_open(j, &rd), BERTH_J_OK);
    berth_record rec;
    ck_assert_int_eq(berth_journal_read(rd, 7, &rec, NULL, NULL), BERTH_J_OK);
    ck_assert_uint_eq(rec.version, 1);
    static const char busy1[] = "worker w1 still serves 1 instance (a); release them before removing it";
    ck_assert(rec.sentence.len == sizeof(busy1) - 1 && memcmp(rec.sentence.ptr, busy1, rec.sentence.len) == 0);
    ck_assert_int_eq(berth_journal_read(rd, n1 + 1, &rec, NULL, NULL), BERTH_J_OK);
    ck_assert_uint_eq(rec.version, BERTH_RECORD_VERSION);
    berth_journal_reader_close(rd);
    /* The old wording on a current record. */
    berth_record lie = record_of(n1 + 3, "", "WORKER.REMOVE w1", BERTH_BUSY, berth_str_make(busy1, sizeof(busy1) - 1));
    ck_assert_int_eq(berth_journal_append(j, &lie, NULL, 1), BERTH_J_OK);
    rep = verify(j, &e);
    ck_assert_int_eq(e, BERTH_J_CORRUPT);
    ck_assert_uint_eq(rep.first_bad_seq, n1 + 3);
    ck_assert_msg(strstr(rep.what, "release it before removing the worker") != NULL, "what: %s", rep.what);
    berth_journal_close(j);
    remove_dir(dir);
}
END_TEST

/* Append text as the record after state's last, with the outcome state
 * gives the text as stored (and reqid beside it): a foreign writer's record
 * that is honest about everything but its spelling. */
static void append_as_stored(berth_journal *j, berth_state *state, const char *reqid, const char *text) {
    berth_str words[BERTH_ARGS_MAX];
    berth_cmd cmd;
    char err[BERTH_ERR_LEN_MAX];
    ck_assert_msg(berth_cmd_parse_text(&cmd, text, strlen(text), words, BERTH_ARGS_MAX, err, sizeof(err)) == 0,
                  "%s: %s", text, err);
    cmd.reqid = berth_str_make(reqid, strlen(reqid));
    static berth_outcome out;
    uint64_t seq = berth_state_last_seq(state) + 1;
    ck_assert_int_eq(berth_state_apply(state, &cmd, berth_str_make(text, strlen(text)), seq, &out), 0);
    berth_record rec = record_of(seq, reqid, text, out.code, berth_str_make(out.sentence, out.sentence_len));
    ck_assert_int_eq(berth_journal_append(j, &rec, NULL, 1), BERTH_J_OK);
}

/* A record's command must be the canonical text berthd writes, not only
 * parse to the same command: a REQID window rebuilt from "release x" holds
 * that text's hash, and an honest retry of "RELEASE x" was then refused
 * with REQID (review hV6). Verify and the engine's open refuse it; plain
 * replay, which checks no hashes either, takes it. */
START_TEST(test_verify_noncanonical) {
    static const struct { const char *reqid, *text, *canonical; } cases[] = {
        { "r1", "release x", "RELEASE x" },
        { "", "RELEASE x REQID junk", "RELEASE x" },
        { "", "DEPLOY a MODEL m BACKEND b ON w:3,1", "DEPLOY a MODEL m BACKEND b ON w:1,3" },
        { "", "WORKER.ADD v LABEL b=1 a=2 GPUS 1", "WORKER.ADD v GPUS 1 LABEL a=2 b=1" },
        { "", "POLICY.SET EXCLUSIVE vllm sglang", "POLICY.SET EXCLUSIVE sglang,vllm" },
        { "", "DEPLOY a MODEL m BACKEND b ON w:01", "DEPLOY a MODEL m BACKEND b ON w:1" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (int spelt = 0; spelt < 2; spelt++) {   /* 0: as berthd writes it, 1: the other spelling */
            char dir[64];
            make_dir(dir, sizeof(dir));
            berth_journal *j = journal_open(dir, false, 0);
            berth_state *state = berth_state_new(NULL);
            append_as_stored(j, state, "", "WORKER.ADD w GPUS 4");
            append_as_stored(j, state, cases[i].reqid, spelt ? cases[i].text : cases[i].canonical);
            append_as_stored(j, state, "", "WORKER.CORDON w");
            berth_jerr e;
            berth_verify_report rep = verify(j, &e);
            berth_engine *engine = NULL;
            berth_engine_options opt = { 0 };
            char err[512] = "";
            berth_jerr oe = berth_engine_open(&engine, j, &opt, NULL, err, sizeof(err));
            if (!spelt) {
                ck_assert_msg(e == BERTH_J_OK, "'%s': %s", cases[i].canonical, rep.what);
                ck_assert_int_eq(oe, BERTH_J_OK);
                berth_engine_close(engine);
            } else {
                ck_assert_int_eq(e, BERTH_J_CORRUPT);
                ck_assert_uint_eq(rep.first_bad_seq, 2);
                char want[256];
                snprintf(want, sizeof(want), "seq 2: command is not in canonical form: \"%s\" is written \"%s\"",
                         cases[i].text, cases[i].canonical);
                ck_assert_str_eq(rep.what, want);
                ck_assert_int_eq(oe, BERTH_J_CORRUPT);
                ck_assert_msg(strstr(err, "seq 2: command is not in canonical form") != NULL, "err: %s", err);
                /* One record at a time (a replica's apply) checks it too. */
                berth_journal_reader *r = NULL;
                ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
                berth_record rec;
                ck_assert_int_eq(berth_journal_read(r, 2, &rec, NULL, NULL), BERTH_J_OK);
                berth_state *one = berth_state_new(NULL);
                berth_record first;
                ck_assert_int_eq(berth_journal_read(r, 1, &first, NULL, NULL), BERTH_J_OK);
                static berth_outcome out;
                ck_assert_int_eq(berth_replay_record(one, &first, &out, err, sizeof(err)), 0);
                ck_assert_int_eq(berth_replay_record(one, &rec, &out, err, sizeof(err)), -1);
                ck_assert_msg(strstr(err, "not in canonical form") != NULL, "err: %s", err);
                berth_state_free(one);
                berth_journal_reader_close(r);
            }
            char d[TEST_DIGEST_HEX_LEN];
            replay_digest(j, UINT64_MAX, false, d, NULL, NULL);   /* plain replay takes it */
            berth_state_free(state);
            berth_journal_close(j);
            remove_dir(dir);
        }
    }
}
END_TEST

/* A record the engine would not write: appended straight to the journal. */
static void append_raw(berth_journal *j, uint64_t seq, const char *reqid, const char *command) {
    berth_record rec = record_of(seq, reqid, command, BERTH_OK, berth_str_make("made up", 7));
    ck_assert_int_eq(berth_journal_append(j, &rec, NULL, 1), BERTH_J_OK);
}

/* A REQID that repeats one in the window, and one that is no name, each
 * named as what it is (review hV6: both said "repeats"); the check is the
 * one the berth tool's own replays call before apply, which asserts it. */
START_TEST(test_reqid_damage_named) {
    for (int invalid = 0; invalid < 2; invalid++) {
        char dir[64];
        make_dir(dir, sizeof(dir));
        berth_journal *j = journal_open(dir, false, 0);
        berth_engine *engine = engine_open(j, 0, false);
        run(engine, "WORKER.ADD w GPUS 1");
        run(engine, "WORKER.CORDON w REQID r1");
        const char *reqid = invalid ? "bad!id" : "r1";
        berth_str words[TEST_WORDS_MAX];
        berth_cmd cmd;
        char perr[256];
        const char *text = "WORKER.UNCORDON w";
        ck_assert_int_eq(berth_cmd_parse_text(&cmd, text, strlen(text), words, TEST_WORDS_MAX, perr,
                                              sizeof(perr)), 0);
        cmd.reqid = berth_str_make(reqid, strlen(reqid));
        char err[256] = "";
        ck_assert_int_eq(berth_replay_reqid_check(berth_engine_state(engine), &cmd,
                                                  berth_str_make(text, strlen(text)), 3, err, sizeof(err)), -1);
        const char *want = invalid ? "seq 3: request id is not a valid name"
                                   : "seq 3: request id r1 repeats the one of seq 2, still in the window";
        ck_assert_msg(strstr(err, want) != NULL, "check: %s", err);
        cmd.reqid = berth_str_make("r2", 2);
        ck_assert_int_eq(berth_replay_reqid_check(berth_engine_state(engine), &cmd,
                                                  berth_str_make(text, strlen(text)), 3, err, sizeof(err)), 0);
        berth_engine_close(engine);
        append_raw(j, 3, reqid, text);
        berth_jerr e;
        berth_verify_report rep = verify(j, &e);
        ck_assert_int_eq(e, BERTH_J_CORRUPT);
        ck_assert_uint_eq(rep.first_bad_seq, 3);
        ck_assert_msg(strstr(rep.what, want) != NULL, "verify: %s", rep.what);
        ck_assert_msg(invalid == (strstr(rep.what, "repeats") == NULL), "verify: %s", rep.what);
        berth_journal_close(j);
        remove_dir(dir);
    }
}
END_TEST

static uint64_t record_time_ms(berth_journal *j, uint64_t seq) {
    berth_journal_reader *r = NULL;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    berth_record rec;
    ck_assert_int_eq(berth_journal_read(r, seq, &rec, NULL, NULL), BERTH_J_OK);
    uint64_t t = rec.time_ms;
    berth_journal_reader_close(r);
    return t;
}

static void submit_commit_at(berth_engine *engine, const char *line, uint64_t time_ms) {
    berth_submit_result r;
    submit(engine, line, &r);
    ck_assert_msg(r.kind == BERTH_SUBMIT_STAGED, "%s: %s", line, r.sentence);
    ck_assert_int_eq(berth_engine_commit(engine, time_ms), BERTH_J_OK);
}

/* The wall clock stepping back must not step record times back (review
 * hV6: --at-time searches them as if sorted): a commit is stamped no
 * earlier than the head, known at open, after each commit, and after
 * records committed elsewhere. */
START_TEST(test_commit_time_never_decreases) {
    char dir[64];
    make_dir(dir, sizeof(dir));
    berth_journal *j = journal_open(dir, false, 0);
    berth_engine *engine = engine_open(j, 0, false);
    submit_commit_at(engine, "WORKER.ADD a GPUS 1", 10000);
    submit_commit_at(engine, "WORKER.ADD b GPUS 1", 5000);    /* the clock stepped back */
    ck_assert_uint_eq(record_time_ms(j, 1), 10000);
    ck_assert_uint_eq(record_time_ms(j, 2), 10000);
    berth_engine_close(engine);
    engine = engine_open(j, 0, false);                          /* the head's time, read at open */
    submit_commit_at(engine, "WORKER.ADD c GPUS 1", 3000);
    ck_assert_uint_eq(record_time_ms(j, 3), 10000);
    submit_commit_at(engine, "WORKER.ADD d GPUS 1", 20000);   /* forward as given */
    ck_assert_uint_eq(record_time_ms(j, 4), 20000);
    berth_engine_close(engine);
    /* A follower: records committed elsewhere keep their times and raise
     * its floor, should it lead next. */
    char dir2[64];
    make_dir(dir2, sizeof(dir2));
    berth_journal *j2 = journal_open(dir2, false, 0);
    berth_engine *follower = engine_open(j2, 0, false);
    berth_journal_reader *r = NULL;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    berth_record recs[4];
    for (uint64_t seq = 1; seq <= 4; seq++) {
        ck_assert_int_eq(berth_journal_read(r, seq, &recs[seq - 1], NULL, NULL), BERTH_J_OK);
    }
    char err[256] = "";
    ck_assert_msg(berth_engine_apply_committed(follower, recs, 4, err, sizeof(err)) == BERTH_J_OK, "%s", err);
    berth_journal_reader_close(r);
    ck_assert_uint_eq(record_time_ms(j2, 4), 20000);
    submit_commit_at(follower, "WORKER.ADD e GPUS 1", 15000);
    ck_assert_uint_eq(record_time_ms(j2, 5), 20000);
    berth_engine_close(follower);
    berth_journal_close(j2);
    berth_journal_close(j);
    remove_dir(dir2);
    remove_dir(dir);
}
END_TEST

/* ---------------------------------------------------- verify in steps */

typedef struct yield_every {
    uint32_t calls;
    uint32_t every;     /* 0: never yield */
} yield_every;

static bool yield_now(void *arg) {
    yield_every *y = arg;
    y->calls++;
    return y->every != 0 && y->calls % y->every == 0;
}

/* Verify 1..target in steps of at most records_max records, each step in a
 * reader of its own (the one before closed), yielding every `every` chunk
 * boundaries; *steps gets how many steps it took. */
static berth_verify_report verify_stepped(berth_journal *j, uint64_t target, uint64_t records_max,
                                          uint32_t every, berth_jerr *out_e, uint64_t *steps) {
    berth_journal_reader *r = NULL;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    berth_verify_run *run = berth_verify_begin(r, target);
    ck_assert_ptr_nonnull(run);
    yield_every y = { 0, every };
    *steps = 0;
    for (;;) {
        bool over = berth_verify_step(run, r, records_max, yield_now, &y);
        (*steps)++;
        berth_journal_reader_close(r);
        r = NULL;
        if (over) break;
        ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    }
    berth_verify_report rep;
    *out_e = berth_verify_end(run, &rep);
    return rep;
}

/* Every split gives the one-pass verify's result, records, first bad seq
 * and sentence, for splits on, just before and just after the bad seq, in
 * one-thread and two-thread steps. */
static void check_stepped_equals_whole(berth_journal *j, const uint64_t *sizes, size_t n_sizes) {
    berth_jerr whole_e;
    berth_verify_report whole = verify(j, &whole_e);
    uint64_t head = journal_head(j);
    /* 1: a yield at every chunk of records, so the size matters not: once */
    const uint32_t everies[] = { 0, 1 };
    for (size_t i = 0; i < n_sizes; i++) {
        for (size_t k = 0; k < (i == 0 ? 2u : 1u); k++) {
            berth_jerr e;
            uint64_t steps = 0;
            berth_verify_report rep = verify_stepped(j, UINT64_MAX, sizes[i], everies[k], &e, &steps);
            ck_assert_msg(e == whole_e && rep.ok == whole.ok && rep.records == whole.records &&
                              rep.first_bad_seq == whole.first_bad_seq &&
                              strcmp(rep.what, whole.what) == 0,
                          "steps of %" PRIu64 ", yield every %u: %s %s %" PRIu64 " records, bad %"
                          PRIu64 " \"%s\"; whole: %s %s %" PRIu64 " records, bad %" PRIu64 " \"%s\"",
                          sizes[i], everies[k], berth_jerr_name(e), rep.ok ? "ok" : "bad", rep.records,
                          rep.first_bad_seq, rep.what, berth_jerr_name(whole_e),
                          whole.ok ? "ok" : "bad", whole.records, whole.first_bad_seq, whole.what);
            /* the split really happened wherever the run got that far */
            uint64_t reach = whole.ok ? head : whole.first_bad_seq;
            if (everies[k] == 0 && reach > sizes[i]) ck_assert_uint_gt(steps, 1);
        }
    }
}

START_TEST(test_verify_steps_match_whole) {
    char dir[64];
    berth_journal *j = random_journal(dir, sizeof(dir), 9, 0);
    const uint64_t n = TEST_RANDOM_RECORDS;
    /* splits at, before and after each damage below, and over the two-thread threshold */
    const uint64_t sizes[] = { 4999, 5000, 5001, 10000, 16384, n + 1 };
    const size_t n_sizes = sizeof(sizes) / sizeof(sizes[0]);
    check_stepped_equals_whole(j, sizes, n_sizes);

    /* A short range in steps of one record, and a target below the head. */
    berth_jerr e1, e2;
    uint64_t steps = 0;
    berth_verify_report a = verify_stepped(j, 300, 1, 0, &e1, &steps);
    ck_assert_uint_eq(steps, 300);
    berth_verify_report b = verify_stepped(j, 300, UINT64_MAX, 0, &e2, &steps);
    ck_assert_int_eq(e1, BERTH_J_OK);
    ck_assert_int_eq(e2, BERTH_J_OK);
    ck_assert_uint_eq(a.records, 300);
    ck_assert_str_eq(a.what, b.what);
    /* A range fixed while the journal was empty (berthd's durable head 0). */
    a = verify_stepped(j, 0, 1000, 0, &e1, &steps);
    ck_assert_int_eq(e1, BERTH_J_OK);
    ck_assert(a.ok);
    ck_assert_uint_eq(a.records, 0);
    ck_assert_str_eq(a.what, "0 records verified");

    /* Damage from the top down, so each is the first bad seq in its turn. */
    /* an outcome the state carried over the split disproves */
    berth_record lie = record_of(n + 1, "", "WORKER.ADD steplie GPUS 2", BERTH_EXCLUSIVE, berth_str_make("made up", 7));
    ck_assert_int_eq(berth_journal_append(j, &lie, NULL, 1), BERTH_J_OK);
    check_stepped_equals_whole(j, sizes, n_sizes);
    berth_journal_close(j);

    lmdb_damage(dir, 15000, true);   /* undecodable */
    j = journal_open(dir, true, 0);
    check_stepped_equals_whole(j, sizes, n_sizes);
    berth_journal_close(j);

    lmdb_damage(dir, 10001, false);   /* a gap just after a split at 10000 */
    j = journal_open(dir, true, 0);
    check_stepped_equals_whole(j, sizes, n_sizes);
    berth_journal_reader *r = NULL;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    berth_record rec;
    const uint8_t *raw = NULL;
    size_t raw_len = 0;
    ck_assert_int_eq(berth_journal_read(r, 5000, &rec, &raw, &raw_len), BERTH_J_OK);
    uint8_t *copy = malloc(raw_len);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, raw, raw_len);
    size_t offset = (size_t)((const uint8_t *)rec.command.ptr - raw) + 1;
    berth_journal_reader_close(r);
    berth_journal_close(j);
    flip_record_byte(dir, copy, raw_len, offset);   /* a hash mismatch on a split */
    free(copy);
    j = journal_open(dir, true, 0);
    berth_jerr e;
    berth_verify_report whole = verify(j, &e);
    ck_assert_uint_eq(whole.first_bad_seq, 5000);
    check_stepped_equals_whole(j, sizes, n_sizes);
    berth_journal_close(j);
    remove_dir(dir);
}
END_TEST

/* Replay to target in parts of at most records_max records, each part in a
 * reader of its own; returns the code, with the digest or the error text. */
static berth_jerr replay_parts(berth_journal *j, uint64_t target, uint64_t records_max,
                               uint32_t every, char digest[TEST_DIGEST_HEX_LEN], char *err,
                               size_t err_size, uint64_t *parts) {
    berth_journal_reader *r = NULL;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    yield_every y = { 0, every };
    berth_state *s = NULL;
    berth_replay_stats stats;
    err[0] = '\0';
    berth_jerr e = berth_replay_to_part(r, target, true, records_max, yield_now, &y, &s, &stats,
                                        NULL, err, err_size);
    *parts = 1;
    while (e == BERTH_J_OK && stats.last_seq < target) {
        berth_journal_reader_close(r);
        ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
        e = berth_replay_forward_part(r, s, target, records_max, yield_now, &y, &stats, err,
                                      err_size);
        (*parts)++;
    }
    berth_journal_reader_close(r);
    if (e == BERTH_J_OK) {
        ck_assert_uint_eq(berth_state_last_seq(s), target);
        digest_hex(s, digest);
    }
    if (s != NULL) berth_state_free(s);
    return e;
}

/* AT's road in parts reaches the one-pass replay's state, or its error. */
START_TEST(test_replay_parts_match_whole) {
    char dir[64];
    berth_journal *j = random_journal(dir, sizeof(dir), 10, 3000);
    const uint64_t targets[] = { 1, 2999, 3000, 3001, 12345, TEST_RANDOM_RECORDS };
    const uint64_t sizes[] = { 700, 2999, 3000, 16384, UINT64_MAX };
    const uint32_t everies[] = { 0, 1 };
    for (int damaged = 0; damaged < 2; damaged++) {
        for (size_t t = 0; t < sizeof(targets) / sizeof(targets[0]); t++) {
            char whole[TEST_DIGEST_HEX_LEN] = "";
            char whole_err[512] = "";
            berth_journal_reader *r = NULL;
            ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
            berth_state *s = NULL;
            berth_jerr we = berth_replay_to(r, targets[t], true, &s, NULL, NULL, whole_err,
                                            sizeof(whole_err));
            if (we == BERTH_J_OK) {
                digest_hex(s, whole);
                berth_state_free(s);
            }
            berth_journal_reader_close(r);
            for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
                for (size_t k = 0; k < sizeof(everies) / sizeof(everies[0]); k++) {
                    /* Under valgrind one yield setting per target and size,
                     * alternating, so both still run on every target. */
                    if (test_under_valgrind() && k != (t + i) % 2) continue;
                    char d[TEST_DIGEST_HEX_LEN] = "";
                    char err[512];
                    uint64_t parts = 0;
                    berth_jerr e = replay_parts(j, targets[t], sizes[i], everies[k], d, err,
                                                sizeof(err), &parts);
                    ck_assert_msg(e == we && strcmp(d, whole) == 0 && strcmp(err, whole_err) == 0,
                                  "to %" PRIu64 " in parts of %" PRIu64 " (yield %u, %" PRIu64
                                  " parts): %s %s \"%s\"; whole: %s %s \"%s\"",
                                  targets[t], sizes[i], everies[k], parts, berth_jerr_name(e), d,
                                  err, berth_jerr_name(we), whole, whole_err);
                    if (targets[t] == 2999 && sizes[i] == 700 && !damaged) {
                        ck_assert_uint_ge(parts, 5);   /* from genesis, no snapshot yet */
                    }
                }
            }
            if (damaged && (targets[t] == 2999 || targets[t] == 12345)) {
                ck_assert_int_eq(we, BERTH_J_CORRUPT);
            }
        }
        if (!damaged) {
            berth_journal_close(j);
            lmdb_damage(dir, 2101, false);    /* just after a part of 700 from genesis */
            lmdb_damage(dir, 12345, false);   /* on the way from the snapshot before it */
            j = journal_open(dir, true, 0);
        }
    }
    berth_journal_close(j);
    remove_dir(dir);
}
END_TEST

START_TEST(test_bad_snapshot_falls_back) {
    rng_seed(test_seed + 2);
    char dir[64];
    make_dir(dir, sizeof(dir));
    berth_journal *j = journal_open(dir, false, 0);
    berth_engine *engine = engine_open(j, 50, false);
    stream st;
    run_stream(engine, 350, 20, &st);
    char live[TEST_DIGEST_HEX_LEN], d[TEST_DIGEST_HEX_LEN];
    digest_hex(berth_engine_state(engine), live);
    ck_assert_int_eq(berth_engine_snapshot(engine), BERTH_J_OK);   /* at 350 */
    berth_engine_close(engine);

    /* Damage the newest snapshot (flip a body byte) and forge the one before
     * (a good encoding of another state): both skipped, the third used. */
    berth_journal_reader *r = NULL;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    uint64_t snaps[TEST_SNAPSHOTS_MAX];
    size_t nsnap = 0;
    ck_assert_int_eq(berth_journal_snapshot_list(r, snaps, TEST_SNAPSHOTS_MAX, &nsnap), BERTH_J_OK);
    ck_assert_uint_ge(nsnap, 3);
    ck_assert_uint_eq(snaps[nsnap - 1], 350);
    uint64_t seq = 0;
    const void *bytes = NULL;
    size_t len = 0;
    ck_assert_int_eq(berth_journal_snapshot_get(r, UINT64_MAX, &seq, &bytes, &len), BERTH_J_OK);
    ck_assert_uint_eq(seq, 350);
    uint8_t *bad = malloc(len);
    ck_assert_ptr_nonnull(bad);
    memcpy(bad, bytes, len);
    berth_journal_reader_close(r);
    bad[len / 2] ^= 0x40;
    ck_assert_int_eq(berth_journal_snapshot_put(j, 350, bad, len), BERTH_J_OK);
    berth_state *empty = berth_state_new(NULL);
    ck_assert_ptr_nonnull(empty);
    uint8_t *forged = NULL;
    size_t forged_len = 0;
    ck_assert_int_eq(berth_snapshot_encode(empty, NULL, &forged, &forged_len), 0);   /* says seq 0 */
    ck_assert_int_eq(berth_journal_snapshot_put(j, snaps[nsnap - 2], forged, forged_len), BERTH_J_OK);
    free(forged);
    berth_state_free(empty);
    free(bad);

    berth_replay_stats stats;
    uint32_t bad_count = 0;
    replay_digest(j, UINT64_MAX, true, d, &stats, &bad_count);
    ck_assert_str_eq(live, d);
    ck_assert_uint_eq(bad_count, 2);
    ck_assert_uint_eq(stats.from_snapshot_seq, snaps[nsnap - 3]);
    ck_assert_uint_eq(stats.records, 350 - snaps[nsnap - 3]);
    engine = engine_open(j, 100, false);
    digest_hex(berth_engine_state(engine), d);
    ck_assert_str_eq(live, d);
    berth_engine_close(engine);
    berth_journal_close(j);
    free(st.lines);
    remove_dir(dir);
}
END_TEST

/* ------------------------------------------------------ record decode roads */

/* A hand-made record: body bytes as given, then the SHA-256 trailer. */
typedef struct raw_record {
    uint8_t bytes[BERTH_RECORD_BYTES_MAX];   /* the fields at their limits fit */
    size_t len;
} raw_record;

static void raw_put(raw_record *r, const void *p, size_t n) {
    ck_assert_uint_le(r->len + n, sizeof(r->bytes));
    memcpy(r->bytes + r->len, p, n);
    r->len += n;
}
static void raw_byte(raw_record *r, uint8_t b) { raw_put(r, &b, 1); }
static void raw_fixstr(raw_record *r, const char *s) {
    raw_byte(r, (uint8_t)(0xa0 | strlen(s)));
    raw_put(r, s, strlen(s));
}
static void raw_hash32(raw_record *r, uint8_t fill) {
    uint8_t h[BERTH_HASH_LEN];
    memset(h, fill, sizeof(h));
    raw_byte(r, 0xc4);
    raw_byte(r, BERTH_HASH_LEN);
    raw_put(r, h, sizeof(h));
}
/* The nine fields of a good version-1 body after its array header, with
 * the command written as given (fixstr, or str8 when long8). */
static void raw_fields(raw_record *r, bool long8) {
    raw_byte(r, 1);                        /* version */
    raw_byte(r, 0xcd); raw_byte(r, 0x01); raw_byte(r, 0x02);   /* seq 258 as uint16 */
    raw_byte(r, 0xcf);                     /* time_ms as uint64 */
    raw_put(r, "\0\0\0\0\0\0\0\7", 8);
    raw_fixstr(r, "actor");
    raw_fixstr(r, "");
    if (long8) {
        raw_byte(r, 0xd9);
        raw_byte(r, 14);
        raw_put(r, "RELEASE inst-1", 14);
    } else {
        raw_fixstr(r, "RELEASE inst-1");
    }
    raw_byte(r, 8);                        /* code */
    raw_fixstr(r, "instance inst-1 is not deployed");
    raw_hash32(r, 0x11);                   /* prev_hash */
}
static void raw_seal(raw_record *r) {
    uint8_t d[BERTH_HASH_LEN];
    SHA256(r->bytes, r->len, d);
    raw_byte(r, 0xc4);
    raw_byte(r, BERTH_HASH_LEN);
    raw_put(r, d, sizeof(d));
}

/* Records decode the same whichever msgpack spelling their fields take, and
 * every malformed shape is refused with the careful road's reason. */
START_TEST(test_record_decode_shapes) {
    raw_record r;
    berth_record out;
    char why[256];
    for (int form = 0; form < 3; form++) {
        memset(&r, 0, sizeof(r));
        if (form == 0) raw_byte(&r, 0x99);                                   /* fixarray 9 */
        if (form == 1) { raw_byte(&r, 0xdc); raw_byte(&r, 0); raw_byte(&r, 9); }   /* array16 */
        if (form == 2) { raw_byte(&r, 0xdd); raw_put(&r, "\0\0\0\x09", 4); }       /* array32 */
        raw_fields(&r, form == 1);
        raw_seal(&r);
        ck_assert_int_eq(berth_record_decode(r.bytes, r.len, &out, why, sizeof(why)), BERTH_J_OK);
        ck_assert_uint_eq(out.seq, 258);
        ck_assert_uint_eq(out.time_ms, 7);
        ck_assert_uint_eq(out.code, 8);
        ck_assert(out.command.len == 14 && memcmp(out.command.ptr, "RELEASE inst-1", 14) == 0);
        ck_assert(out.actor.len == 5 && out.reqid.len == 0);
        ck_assert_uint_eq(out.prev_hash[0], 0x11);
        ck_assert(berth_record_hash_ok(r.bytes, r.len));
        ck_assert_mem_eq(out.hash, r.bytes + r.len - BERTH_HASH_LEN, BERTH_HASH_LEN);
    }
    struct { const char *what; int shape; const char *why; } bad[] = {
        { "map body", 0, "record does not start with a msgpack array" },
        { "17 fields", 1, "record body has 17 fields, at most 16 are possible" },
        { "nested array", 2, "record field 3 is truncated or of an impossible type" },
        { "nested map", 3, "record field 3 is truncated or of an impossible type" },
        { "ext field", 4, "record field 3 is truncated or of an impossible type" },
        { "10 fields", 5, "record has 10 fields, its format version has 9" },
        { "negative seq", 6, "record field seq is of the wrong type or out of its limits" },
        { "trailing byte", 7, "record has 1 trailing bytes after its hash" },
        { "never-used byte", 8, "record field 0 is truncated or of an impossible type" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&r, 0, sizeof(r));
        int shape = bad[i].shape;
        if (shape == 0) { raw_byte(&r, 0x81); raw_byte(&r, 1); raw_byte(&r, 2); }
        if (shape == 1) { raw_byte(&r, 0xdc); raw_byte(&r, 0); raw_byte(&r, 17); for (int k = 0; k < 17; k++) raw_byte(&r, 1); }
        if (shape >= 2 && shape <= 4) {
            raw_byte(&r, 0x99);
            raw_byte(&r, 1);
            raw_byte(&r, 2);
            raw_byte(&r, 3);
            if (shape == 2) { raw_byte(&r, 0x91); raw_byte(&r, 1); }
            if (shape == 3) { raw_byte(&r, 0x81); raw_byte(&r, 1); raw_byte(&r, 2); }
            if (shape == 4) { raw_byte(&r, 0xd4); raw_byte(&r, 1); raw_byte(&r, 2); }
            for (int k = 0; k < 5; k++) raw_byte(&r, 1);
        }
        if (shape == 5) { raw_byte(&r, 0x9a); raw_fields(&r, false); raw_byte(&r, 0); }
        if (shape == 6) {
            raw_byte(&r, 0x99);
            raw_byte(&r, 1);
            raw_byte(&r, 0xff);   /* seq -1 */
            for (int k = 0; k < 7; k++) raw_byte(&r, 1);
        }
        if (shape == 7) { raw_byte(&r, 0x99); raw_fields(&r, false); }
        if (shape == 8) { raw_byte(&r, 0x99); raw_byte(&r, 0xc1); for (int k = 0; k < 8; k++) raw_byte(&r, 1); }
        raw_seal(&r);
        if (shape == 7) raw_byte(&r, 0);
        why[0] = '\0';
        ck_assert_int_eq(berth_record_decode(r.bytes, r.len, &out, why, sizeof(why)), BERTH_J_CORRUPT);
        ck_assert_msg(strncmp(why, bad[i].why, strlen(bad[i].why)) == 0, "%s: got \"%s\"", bad[i].what, why);
    }
}
END_TEST

/* The record layout read the slow, obvious way: msgpack-c's object API
 * over the body, then each field against record.c's stated limits. The
 * reference the decoder's two roads (each element taken as it arrives;
 * the careful road over msgpack_unpack) are held to. */
static bool ref_decode(const uint8_t *bytes, size_t len, berth_record *out) {
    msgpack_zone zone;
    ck_assert(msgpack_zone_init(&zone, 2048));
    msgpack_object body;
    size_t off = 0;
    msgpack_unpack_return rc = msgpack_unpack((const char *)bytes, len, &off, &zone, &body);
    bool ok = (rc == MSGPACK_UNPACK_SUCCESS || rc == MSGPACK_UNPACK_EXTRA_BYTES) &&
              len - off == 2 + BERTH_HASH_LEN && bytes[off] == 0xc4 && bytes[off + 1] == BERTH_HASH_LEN &&
              body.type == MSGPACK_OBJECT_ARRAY && body.via.array.size == 9;
    const msgpack_object *f = ok ? body.via.array.ptr : NULL;
    for (uint32_t i = 0; ok && i < 9; i++) {
        bool is_uint = f[i].type == MSGPACK_OBJECT_POSITIVE_INTEGER;
        bool is_str = f[i].type == MSGPACK_OBJECT_STR;
        uint64_t u = is_uint ? f[i].via.u64 : 0;
        uint32_t n = is_str ? f[i].via.str.size : 0;
        berth_str str = berth_str_make(n > 0 ? f[i].via.str.ptr : "", n);
        switch (i) {
        case 0: ok = is_uint && u >= BERTH_RECORD_VERSION_MIN && u <= BERTH_RECORD_VERSION; out->version = (uint32_t)u; break;
        case 1: ok = is_uint && u != 0; out->seq = u; break;
        case 2: ok = is_uint; out->time_ms = u; break;
        case 3: ok = is_str && (n == 0 || berth_name_valid(str)); out->actor = str; break;
        case 4: ok = is_str && n <= BERTH_NAME_LEN_MAX; out->reqid = str; break;
        case 5: ok = is_str && n >= 1 && n <= BERTH_COMMAND_LEN_MAX; out->command = str; break;
        case 6: ok = is_uint && u <= UINT32_MAX; out->code = (uint32_t)u; break;
        case 7: ok = is_str && n < BERTH_SENTENCE_LEN_MAX; out->sentence = str; break;
        case 8:
            ok = f[i].type == MSGPACK_OBJECT_BIN && f[i].via.bin.size == BERTH_HASH_LEN;
            if (ok) memcpy(out->prev_hash, f[i].via.bin.ptr, BERTH_HASH_LEN);
            break;
        default: ok = false;
        }
    }
    if (ok) {
        memcpy(out->hash, bytes + off + 2, BERTH_HASH_LEN);
    }
    msgpack_zone_destroy(&zone);
    return ok;
}

/* The same string: the same bytes of the input, or both empty (an empty
 * one is a "" of the decoder's, never NULL; two files' "" need not be one). */
static bool str_at_same(berth_str a, berth_str b) {
    return a.len == b.len && a.ptr != NULL && b.ptr != NULL && (a.len == 0 || a.ptr == b.ptr);
}

static bool record_same(const berth_record *a, const berth_record *b) {
    return a->version == b->version && a->seq == b->seq && a->time_ms == b->time_ms && a->code == b->code &&
           str_at_same(a->actor, b->actor) && str_at_same(a->reqid, b->reqid) &&
           str_at_same(a->command, b->command) && str_at_same(a->sentence, b->sentence) &&
           memcmp(a->prev_hash, b->prev_hash, BERTH_HASH_LEN) == 0 && memcmp(a->hash, b->hash, BERTH_HASH_LEN) == 0;
}

/* berth_record_decode against ref_decode over every cut of a few records
 * and each byte at each position set to values that change a token's type
 * or width (not to an array16/32 or map16/32 header, whose count
 * msgpack_unpack would size an allocation by: test_record_decode_shapes
 * takes those). Every field just inside and just past its limit too. Both
 * must give the same verdict, and on OK the same fields, pointing at the
 * same bytes: the decoder accepts exactly the stated layout. */
START_TEST(test_record_decode_matches_reference) {
    static char text[BERTH_COMMAND_LEN_MAX + 8];   /* fields start up to 3 bytes in */
    for (size_t i = 0; i < sizeof(text); i++) text[i] = (char)('a' + i % 26);
    static const uint8_t values[] = { 0x00, 0x01, 0x1f, 0x7f, 0x80, 0x8f, 0x90, 0x91, 0x99, 0x9f, 0xa0, 0xa1,
                                      0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xca, 0xcb, 0xcc,
                                      0xcd, 0xce, 0xcf, 0xd0, 0xd3, 0xd4, 0xd8, 0xd9, 0xda, 0xdb, 0xe0, 0xff };
    struct { uint64_t seq, time_ms; uint32_t actor, reqid, command, code, sentence; } shapes[] = {
        { 1, 0, 0, 0, 1, 0, 0 },                                   /* the smallest, fixints */
        { 258, 1700000000000ull, 5, 9, 40, 8, 31 },                /* uint16, uint64, fixstrs */
        { 1ull << 40, 7, 128, 128, 300, UINT32_MAX, 200 },         /* str8 and str16, the name limits */
        { 70000, 3, 17, 0, BERTH_COMMAND_LEN_MAX, 65536, BERTH_SENTENCE_LEN_MAX - 1 },   /* the text limits */
    };
    static uint8_t buf[BERTH_RECORD_BYTES_MAX], copy[BERTH_RECORD_BYTES_MAX];
    uint32_t accepted = 0, refused = 0;
    for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
        berth_record rec = {
            .version = BERTH_RECORD_VERSION, .seq = shapes[k].seq, .time_ms = shapes[k].time_ms,
            .actor = berth_str_make(text, shapes[k].actor), .reqid = berth_str_make(text + 1, shapes[k].reqid),
            .command = berth_str_make(text + 2, shapes[k].command), .code = shapes[k].code,
            .sentence = berth_str_make(text + 3, shapes[k].sentence),
        };
        for (int i = 0; i < BERTH_HASH_LEN; i++) rec.prev_hash[i] = (uint8_t)(k * 7 + (size_t)i);
        size_t len = berth_record_encode(&rec, buf, sizeof(buf));
        ck_assert_uint_gt(len, 0);
        /* Short records: every position; long ones: the headers and the tail. */
        for (size_t at = 0; at < len; at++) {
            if (len > 1024 && at > 600 && at < len - 300) continue;
            for (size_t v = 0; v <= sizeof(values); v++) {
                memcpy(copy, buf, len);
                size_t n = len;
                if (v == sizeof(values)) n = at;   /* the cut */
                else copy[at] = values[v];
                berth_record got, want;
                memset(&got, 0, sizeof(got));
                memset(&want, 0, sizeof(want));
                char why[256];
                bool ok = berth_record_decode(copy, n, &got, why, sizeof(why)) == BERTH_J_OK;
                bool ref = ref_decode(copy, n, &want);
                LOOP_ASSERT(ok == ref, "record %zu, byte %zu %s 0x%02x: decode %s, reference %s (%s)", k, at,
                            v == sizeof(values) ? "cut" : "set to", v == sizeof(values) ? 0 : values[v],
                            ok ? "accepts" : "refuses", ref ? "accepts" : "refuses", ok ? "" : why);
                LOOP_ASSERT(!ok || record_same(&got, &want), "record %zu, byte %zu: fields differ", k, at);
                if (ok) accepted++; else refused++;
            }
        }
    }
    /* Both verdicts occur: a changed string byte decodes, a changed header does not. */
    ck_assert_uint_gt(accepted, 1000);
    ck_assert_uint_gt(refused, 1000);
    /* Each field just past its limit, spelt by hand (the encoder refuses them). */
    struct { uint32_t field; uint32_t len; bool ok; } limits[] = {
        { 3, BERTH_NAME_LEN_MAX, true }, { 3, BERTH_NAME_LEN_MAX + 1, false },
        { 4, BERTH_NAME_LEN_MAX, true }, { 4, BERTH_NAME_LEN_MAX + 1, false },
        { 5, 1, true }, { 5, 0, false }, { 5, BERTH_COMMAND_LEN_MAX, true }, { 5, BERTH_COMMAND_LEN_MAX + 1, false },
        { 7, BERTH_SENTENCE_LEN_MAX - 1, true }, { 7, BERTH_SENTENCE_LEN_MAX, false },
    };
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
        static raw_record r;
        memset(&r, 0, sizeof(r));
        raw_byte(&r, 0x99);
        raw_byte(&r, 1);
        raw_byte(&r, 5);      /* seq */
        raw_byte(&r, 0);      /* time_ms */
        for (uint32_t fi = 3; fi <= 7; fi++) {
            if (fi == 6) {
                raw_byte(&r, 0);
                continue;
            }
            uint32_t n = fi == limits[i].field ? limits[i].len : fi == 5 ? 3 : 0;
            raw_byte(&r, 0xda);   /* str16 */
            raw_byte(&r, (uint8_t)(n >> 8));
            raw_byte(&r, (uint8_t)n);
            raw_put(&r, text, n);
        }
        raw_hash32(&r, 0x22);
        raw_seal(&r);
        berth_record got, want;
        bool ok = berth_record_decode(r.bytes, r.len, &got, NULL, 0) == BERTH_J_OK;
        ck_assert_msg(ok == limits[i].ok, "field %u of %u bytes", limits[i].field, limits[i].len);
        ck_assert(ref_decode(r.bytes, r.len, &want) == ok);
        ck_assert(!ok || record_same(&got, &want));
    }
    /* seq 0, the code past u32, a negative seq, and versions 0 and 3 (one
     * past the newest this build writes): refused. */
    struct { uint8_t version, seq_tag; uint64_t seq, code; } scalars[] = {
        { 1, 0xcf, 0, 0 }, { 1, 0xcf, 1, UINT32_MAX + 1ull }, { 1, 0xd3, UINT64_MAX, 0 },
        { 0, 0xcf, 1, 0 }, { BERTH_RECORD_VERSION + 1, 0xcf, 1, 0 },
    };
    for (size_t i = 0; i < sizeof(scalars) / sizeof(scalars[0]); i++) {
        static raw_record r;
        memset(&r, 0, sizeof(r));
        raw_byte(&r, 0x99);
        raw_byte(&r, scalars[i].version);
        raw_byte(&r, scalars[i].seq_tag);
        for (int b = 7; b >= 0; b--) raw_byte(&r, (uint8_t)(scalars[i].seq >> (8 * b)));
        raw_byte(&r, 0);
        raw_fixstr(&r, "");
        raw_fixstr(&r, "");
        raw_fixstr(&r, "RELEASE x");
        raw_byte(&r, 0xcf);
        for (int b = 7; b >= 0; b--) raw_byte(&r, (uint8_t)(scalars[i].code >> (8 * b)));
        raw_fixstr(&r, "");
        raw_hash32(&r, 0x33);
        raw_seal(&r);
        berth_record got, want;
        ck_assert_msg(berth_record_decode(r.bytes, r.len, &got, NULL, 0) == BERTH_J_CORRUPT, "scalar case %zu", i);
        ck_assert(!ref_decode(r.bytes, r.len, &want));
    }
}
END_TEST

/* ------------------------------------------- snapshots bound to the chain */

/* The engine's state at its head, plus a worker the journal never added:
 * what a buggy writer or a forger would leave (review hV6). anchor: NULL
 * seals it with another chain's hash (zeros). */
static void put_ghost_snapshot(berth_journal *j, berth_engine *engine, const uint8_t *anchor) {
    static const uint8_t other_chain[BERTH_HASH_LEN];
    uint8_t *bytes = NULL;
    size_t len = 0;
    ck_assert_int_eq(berth_snapshot_encode(berth_engine_state(engine), other_chain, &bytes, &len), 0);
    berth_state *ghost = NULL;
    char err[256];
    ck_assert_int_eq(berth_snapshot_decode(bytes, len, &ghost, NULL, err, sizeof(err)), 0);
    free(bytes);
    uint64_t seq = berth_state_last_seq(ghost);
    ck_assert_int_eq(berth_state_restore_worker(ghost, berth_str_make("ghost", 5), 8, 0, BERTH_WORKER_ACTIVE,
                                                seq, NULL, 0), 0);
    ck_assert_int_eq(berth_snapshot_encode(ghost, anchor != NULL ? anchor : other_chain, &bytes, &len), 0);
    ck_assert_int_eq(berth_journal_snapshot_put(j, seq, bytes, len), BERTH_J_OK);
    free(bytes);
    berth_state_free(ghost);
}

START_TEST(test_snapshot_bound_to_chain) {
    char dir[64];
    make_dir(dir, sizeof(dir));
    berth_journal *j = journal_open(dir, false, 0);
    berth_engine *engine = engine_open(j, 0, false);
    run(engine, "WORKER.ADD w1 GPUS 2");
    run(engine, "WORKER.ADD w2 GPUS 2");
    char genesis[TEST_DIGEST_HEX_LEN], d[TEST_DIGEST_HEX_LEN];
    digest_hex(berth_engine_state(engine), genesis);
    uint8_t head_hash[BERTH_HASH_LEN];
    uint64_t head = 0;
    ck_assert_int_eq(berth_journal_head(j, &head, head_hash), BERTH_J_OK);
    ck_assert_uint_eq(head, 2);

    /* Another chain's anchor: no load uses it; verify finds it harmless. */
    put_ghost_snapshot(j, engine, NULL);
    berth_engine_close(engine);
    berth_replay_stats stats;
    uint32_t bad = 0;
    replay_digest(j, UINT64_MAX, true, d, &stats, &bad);
    ck_assert_str_eq(d, genesis);
    ck_assert_uint_eq(bad, 1);
    ck_assert_uint_eq(stats.from_snapshot_seq, 0);
    engine = engine_open(j, 0, false);   /* berthd's start */
    digest_hex(berth_engine_state(engine), d);
    ck_assert_str_eq(d, genesis);
    berth_submit_result r = run(engine, "WORKER.CORDON ghost");
    ck_assert_int_eq(r.code, BERTH_NOWORKER);   /* judged on the journal's state */
    berth_jerr e = BERTH_J_OK;
    berth_verify_report rep = verify(j, &e);
    ck_assert_msg(e == BERTH_J_OK && rep.ok, "%s", rep.what);

    /* Anchored right but holding another state: a load would take it, so
     * verify fails, naming the snapshot's seq. */
    ck_assert_int_eq(berth_journal_head(j, &head, head_hash), BERTH_J_OK);
    put_ghost_snapshot(j, engine, head_hash);
    berth_engine_close(engine);
    rep = verify(j, &e);
    ck_assert_int_eq(e, BERTH_J_CORRUPT);
    ck_assert(!rep.ok);
    ck_assert_uint_eq(rep.first_bad_seq, 3);
    ck_assert_msg(strstr(rep.what, "seq 3: the snapshot there holds another state") != NULL, "%s", rep.what);
    berth_journal_close(j);
    remove_dir(dir);
}
END_TEST

/* A format-1 snapshot (before session 7: FNV request-id hashes, no anchor)
 * is refused by name and replay falls back to genesis, whatever else it
 * holds; here a version-2 one with the version byte set back to 1. */
START_TEST(test_snapshot_old_version_skipped) {
    char dir[64];
    make_dir(dir, sizeof(dir));
    berth_journal *j = journal_open(dir, false, 0);
    berth_engine *engine = engine_open(j, 0, false);
    run(engine, "WORKER.ADD w1 GPUS 2");
    run(engine, "WORKER.ADD w2 GPUS 2 REQID r1");
    ck_assert_int_eq(berth_engine_snapshot(engine), BERTH_J_OK);
    char live[TEST_DIGEST_HEX_LEN], d[TEST_DIGEST_HEX_LEN];
    digest_hex(berth_engine_state(engine), live);
    berth_engine_close(engine);
    berth_replay_stats stats;
    uint32_t bad = 0;
    replay_digest(j, UINT64_MAX, true, d, &stats, &bad);
    ck_assert_uint_eq(stats.from_snapshot_seq, 2);   /* the snapshot is used as written */
    ck_assert_uint_eq(bad, 0);

    berth_journal_reader *r = NULL;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    uint64_t seq = 0;
    const void *bytes = NULL;
    size_t len = 0;
    ck_assert_int_eq(berth_journal_snapshot_get(r, UINT64_MAX, &seq, &bytes, &len), BERTH_J_OK);
    uint8_t *old = malloc(len);
    ck_assert_ptr_nonnull(old);
    memcpy(old, bytes, len);
    uint8_t anchor[BERTH_HASH_LEN];
    berth_state *s = NULL;
    char err[256];
    ck_assert_int_eq(berth_snapshot_decode(old, len, &s, anchor, err, sizeof(err)), 0);
    berth_state_free(s);
    berth_journal_reader_close(r);
    ck_assert_uint_eq(old[0], 0x96);
    ck_assert_uint_eq(old[1], BERTH_SNAPSHOT_VERSION);
    old[1] = 1;
    berth_snapshot_seal(old, len, anchor);   /* its own digest good */
    ck_assert_int_eq(berth_snapshot_decode(old, len, &s, NULL, err, sizeof(err)), -1);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(err, "snapshot format version 1, not 2") != NULL, "%s", err);
    ck_assert_int_eq(berth_journal_snapshot_put(j, seq, old, len), BERTH_J_OK);
    free(old);
    replay_digest(j, UINT64_MAX, true, d, &stats, &bad);
    ck_assert_str_eq(d, live);
    ck_assert_uint_eq(bad, 1);
    ck_assert_uint_eq(stats.from_snapshot_seq, 0);
    berth_jerr e = BERTH_J_OK;
    berth_verify_report rep = verify(j, &e);
    ck_assert_msg(e == BERTH_J_OK && rep.ok, "%s", rep.what);   /* skipped by loads: harmless */
    berth_journal_close(j);
    remove_dir(dir);
}
END_TEST

/* Decode refuses what no journal leads to: a worker added after the
 * snapshot's seq, and an instance slot with no GPU on a worker that has
 * GPUs (a DEPLOY names GPUs or takes all of a worker's). */
START_TEST(test_snapshot_decode_tightened) {
    static const uint8_t anchor[BERTH_HASH_LEN];
    char err[256];
    uint8_t *bytes = NULL;
    size_t len = 0;
    berth_state *s = berth_state_new(NULL);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(berth_state_restore_worker(s, berth_str_make("w1", 2), 2, 0, BERTH_WORKER_ACTIVE, 5, NULL, 0), 0);
    berth_state_set_last_seq(s, 5);
    ck_assert_int_eq(berth_snapshot_encode(s, anchor, &bytes, &len), 0);
    berth_state *back = NULL;
    ck_assert_int_eq(berth_snapshot_decode(bytes, len, &back, NULL, err, sizeof(err)), 0);   /* at its seq: fine */
    berth_state_free(back);
    free(bytes);
    berth_state_set_last_seq(s, 4);
    ck_assert_int_eq(berth_snapshot_encode(s, anchor, &bytes, &len), 0);
    ck_assert_int_eq(berth_snapshot_decode(bytes, len, &back, NULL, err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, "worker added after the snapshot's seq") != NULL, "%s", err);
    free(bytes);
    berth_state_set_last_seq(s, 6);

    /* a zero-GPU worker is held with an empty mask; a worker with GPUs never is */
    ck_assert_int_eq(berth_state_restore_worker(s, berth_str_make("w0", 2), 0, 0, BERTH_WORKER_ACTIVE, 1, NULL, 0), 0);
    berth_str on0[1] = { berth_str_make("w0", 2) }, on1[1] = { berth_str_make("w1", 2) };
    uint64_t none[1] = { 0 };
    ck_assert_int_eq(berth_state_restore_instance(s, berth_str_make("a", 1), berth_str_make("m", 1),
                                                  berth_str_make("vllm", 4), 0, 6, on0, none, 1), 0);
    ck_assert_int_eq(berth_snapshot_encode(s, anchor, &bytes, &len), 0);
    ck_assert_int_eq(berth_snapshot_decode(bytes, len, &back, NULL, err, sizeof(err)), 0);
    berth_state_free(back);
    free(bytes);
    berth_state_free(s);
    s = berth_state_new(NULL);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(berth_state_restore_worker(s, berth_str_make("w1", 2), 2, 0, BERTH_WORKER_ACTIVE, 1, NULL, 0), 0);
    /* restore takes it (it judges nothing), so decode must refuse it */
    ck_assert_int_eq(berth_state_restore_instance(s, berth_str_make("a", 1), berth_str_make("m", 1),
                                                  berth_str_make("vllm", 4), 0, 2, on1, none, 1), 0);
    berth_state_set_last_seq(s, 2);
    ck_assert_int_eq(berth_snapshot_encode(s, anchor, &bytes, &len), 0);
    ck_assert_int_eq(berth_snapshot_decode(bytes, len, &back, NULL, err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, "holds no GPU on a worker that has GPUs") != NULL, "%s", err);
    free(bytes);
    berth_state_free(s);
}
END_TEST

/* The window's identities survive a snapshot and its load, and replay:
 * the colliding pair from review hV6 stays a conflict on every road, and
 * the same journal gives the same digest each time. */
START_TEST(test_reqid_identity_survives_snapshot_and_replay) {
    char dir[64];
    make_dir(dir, sizeof(dir));
    berth_journal *j = journal_open(dir, false, 0);
    berth_engine *engine = engine_open(j, 0, false);
    run(engine, "WORKER.ADD w1 GPUS 2");
    run(engine, "RELEASE dpxqAPiBDLB REQID r1");
    ck_assert_int_eq(berth_engine_snapshot(engine), BERTH_J_OK);
    run(engine, "WORKER.ADD w2 GPUS 1 REQID r2");
    berth_submit_result res;
    submit(engine, "RELEASE bqvEUO8RCQE REQID r1", &res);
    ck_assert_int_eq(res.kind, BERTH_SUBMIT_CONFLICT);
    char live[TEST_DIGEST_HEX_LEN], d1[TEST_DIGEST_HEX_LEN], d2[TEST_DIGEST_HEX_LEN];
    digest_hex(berth_engine_state(engine), live);
    berth_engine_close(engine);

    berth_str canon_a = berth_str_make("RELEASE dpxqAPiBDLB", 19), canon_b = berth_str_make("RELEASE bqvEUO8RCQE", 19);
    for (int road = 0; road < 3; road++) {
        berth_state *s = NULL;
        berth_replay_stats stats;
        berth_journal_reader *r = NULL;
        ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
        char err[256] = "";
        if (road < 2) {   /* genesis, then from the snapshot at 2 */
            ck_assert_int_eq(berth_replay_to(r, UINT64_MAX, road == 1, &s, &stats, NULL, err, sizeof(err)), BERTH_J_OK);
            ck_assert_uint_eq(stats.from_snapshot_seq, road == 1 ? 2 : 0);
        } else {          /* the snapshot's own state */
            uint64_t seq = 0;
            const void *bytes = NULL;
            size_t len = 0;
            ck_assert_int_eq(berth_journal_snapshot_get(r, UINT64_MAX, &seq, &bytes, &len), BERTH_J_OK);
            ck_assert_int_eq(berth_snapshot_decode(bytes, len, &s, NULL, err, sizeof(err)), 0);
        }
        berth_journal_reader_close(r);
        berth_reqid_entry hit;
        ck_assert_int_eq(berth_state_reqid_check(s, berth_str_make("r1", 2), canon_b, &hit), BERTH_REQID_CONFLICT);
        ck_assert_int_eq(berth_state_reqid_check(s, berth_str_make("r1", 2), canon_a, &hit), BERTH_REQID_RETRY);
        ck_assert_uint_eq(hit.seq, 2);
        uint8_t id[BERTH_COMMAND_ID_LEN];
        berth_command_id(canon_a, id);
        ck_assert_mem_eq(hit.command_id, id, sizeof id);
        if (road < 2) {
            digest_hex(s, road == 0 ? d1 : d2);
            ck_assert_str_eq(road == 0 ? d1 : d2, live);
        }
        berth_state_free(s);
    }
    replay_digest(j, UINT64_MAX, false, d1, NULL, NULL);   /* the same journal, the same digest */
    ck_assert_str_eq(d1, live);
    berth_journal_close(j);
    remove_dir(dir);
}
END_TEST

START_TEST(test_snapshot_decode_rejects_damage) {
    rng_seed(test_seed + 3);
    char dir[64];
    make_dir(dir, sizeof(dir));
    berth_journal *j = journal_open(dir, false, 0);
    berth_engine *engine = engine_open(j, 0, true);   /* dry run: nothing written */
    stream st;
    run_stream(engine, 400, TEST_BATCH_RECORDS_MAX, &st);
    ck_assert_uint_eq(journal_head(j), 0);
    uint8_t *bytes = NULL;
    size_t len = 0;
    uint8_t anchor[BERTH_HASH_LEN], anchor_back[BERTH_HASH_LEN];
    for (size_t i = 0; i < BERTH_HASH_LEN; i++) anchor[i] = (uint8_t)(i * 7 + 1);
    ck_assert_int_eq(berth_snapshot_encode(berth_engine_state(engine), anchor, &bytes, &len), 0);
    berth_state *s = NULL;
    char err[256];
    ck_assert_int_eq(berth_snapshot_decode(bytes, len, &s, anchor_back, err, sizeof(err)), 0);
    ck_assert_mem_eq(anchor, anchor_back, BERTH_HASH_LEN);
    char d1[TEST_DIGEST_HEX_LEN], d2[TEST_DIGEST_HEX_LEN];
    digest_hex(berth_engine_state(engine), d1);
    digest_hex(s, d2);
    ck_assert_str_eq(d1, d2);
    /* the body's digest is the state digest; the anchor is outside it */
    char tail[TEST_DIGEST_HEX_LEN];
    uint8_t body_digest[BERTH_HASH_LEN];
    ck_assert_int_eq(berth_snapshot_body_digest(bytes, len, body_digest), 0);
    berth_hex(body_digest, BERTH_HASH_LEN, tail);
    ck_assert_str_eq(tail, d1);
    berth_state_free(s);
    /* every truncation is refused */
    for (size_t cut = 0; cut < len; cut++) {
        LOOP_ASSERT(berth_snapshot_decode(bytes, cut, &s, NULL, err, sizeof(err)) == -1, "cut at %zu decoded", cut);
        LOOP_ASSERT(s == NULL, "cut at %zu left a state", cut);
    }
    /* mutated bodies with a recomputed digest: refused cleanly or, if they
     * still decode, a state that keeps every invariant */
    uint8_t *m = malloc(len);
    ck_assert_ptr_nonnull(m);
    size_t accepted = 0;
    for (uint32_t round = 0; round < 3000; round++) {
        memcpy(m, bytes, len);
        uint32_t flips = 1 + rng_below(4);
        for (uint32_t f = 0; f < flips; f++) m[rng_below((uint32_t)(len - 2 * BERTH_HASH_LEN))] = (uint8_t)rng_next();
        /* recompute the digest the way encode does: SHA-256 of body and anchor */
        berth_state *probe = NULL;
        uint8_t digest[BERTH_HASH_LEN];
        SHA256(m, len - BERTH_HASH_LEN, digest);
        memcpy(m + len - BERTH_HASH_LEN, digest, BERTH_HASH_LEN);
        if (berth_snapshot_decode(m, len, &probe, NULL, err, sizeof(err)) == 0) {
            char why[256];
            LOOP_ASSERT(berth_state_check(probe, why, sizeof(why)), "round %u: %s", round, why);
            berth_state_free(probe);
            accepted++;
        } else {
            LOOP_ASSERT(probe == NULL, "round %u: a refused decode left a state", round);
        }
    }
    ck_assert_uint_lt(accepted, 3000);
    free(m);
    free(bytes);
    berth_engine_close(engine);
    berth_journal_close(j);
    free(st.lines);
    remove_dir(dir);
}
END_TEST

START_TEST(test_reqid_retry) {
    char dir[64];
    make_dir(dir, sizeof(dir));
    berth_journal *j = journal_open(dir, false, 0);
    berth_engine *engine = engine_open(j, 0, false);
    run(engine, "WORKER.ADD w1 GPUS 4 REQID r1");
    berth_submit_result d = run(engine, "DEPLOY a MODEL m BACKEND vllm ON w1:0 REQID r2");
    ck_assert_uint_eq(d.seq, 2);
    berth_submit_result r;
    for (int round = 0; round < 2; round++) {
        /* the same command, spelled differently, is a retry */
        submit(engine, "deploy a model m backend vllm on w1:0 reqid r2", &r);
        ck_assert_int_eq(r.kind, BERTH_SUBMIT_RETRY);
        ck_assert_uint_eq(r.seq, 2);
        ck_assert_int_eq(r.code, d.code);
        ck_assert_str_eq(r.sentence, d.sentence);
        submit(engine, "WORKER.ADD w9 GPUS 4 REQID r1", &r);
        ck_assert_int_eq(r.kind, BERTH_SUBMIT_CONFLICT);
        ck_assert_uint_eq(r.seq, 1);
        ck_assert_msg(strstr(r.sentence, "request id r1 was used at seq 1") != NULL, "%s", r.sentence);
        ck_assert_uint_eq(berth_engine_staged(engine), 0);
        ck_assert_int_eq(berth_engine_commit(engine, 5), BERTH_J_OK);
        ck_assert_uint_eq(journal_head(j), 2);
        /* after a reopen the window is rebuilt by replay */
        berth_engine_close(engine);
        berth_journal_close(j);
        j = journal_open(dir, false, 0);
        engine = engine_open(j, 0, false);
    }
    /* a retry inside the same batch answers with the staged outcome */
    submit(engine, "WORKER.ADD w2 GPUS 1 REQID r3", &r);
    ck_assert_int_eq(r.kind, BERTH_SUBMIT_STAGED);
    submit(engine, "WORKER.ADD w2 GPUS 1 REQID r3", &r);
    ck_assert_int_eq(r.kind, BERTH_SUBMIT_RETRY);
    ck_assert_uint_eq(r.seq, 3);
    ck_assert_uint_eq(berth_engine_staged(engine), 1);
    ck_assert_int_eq(berth_engine_commit(engine, 6), BERTH_J_OK);
    ck_assert_uint_eq(journal_head(j), 3);
    /* syntax errors never stage */
    submit(engine, "DEPLOY x MODEL m BACKEND vllm ON w1 w1", &r);
    ck_assert_int_eq(r.kind, BERTH_SUBMIT_SYNTAX);
    ck_assert_msg(strncmp(r.sentence, "ERR ", 4) == 0, "%s", r.sentence);
    berth_engine_submit(engine, 0, NULL, berth_str_make("", 0), &r);
    ck_assert_int_eq(r.kind, BERTH_SUBMIT_SYNTAX);
    ck_assert_uint_eq(berth_engine_staged(engine), 0);
    berth_engine_close(engine);
    berth_journal_close(j);
    remove_dir(dir);
}
END_TEST

START_TEST(test_batch_full_and_dry_run) {
    char dir[64];
    make_dir(dir, sizeof(dir));
    berth_journal *j = journal_open(dir, false, 0);
    berth_engine *engine = engine_open(j, 0, false);
    berth_submit_result r;
    char line[128];
    for (uint32_t i = 0; i < BERTH_BATCH_RECORDS_MAX; i++) {
        snprintf(line, sizeof(line), "WORKER.ADD w%u GPUS 1", i);
        submit(engine, line, &r);
        ck_assert_int_eq(r.kind, BERTH_SUBMIT_STAGED);
    }
    submit(engine, "WORKER.ADD extra GPUS 1", &r);
    ck_assert_int_eq(r.kind, BERTH_SUBMIT_BATCH_FULL);
    ck_assert_int_eq(berth_engine_commit(engine, 7), BERTH_J_OK);
    ck_assert_uint_eq(journal_head(j), BERTH_BATCH_RECORDS_MAX);
    submit(engine, "WORKER.ADD extra GPUS 1", &r);
    ck_assert_int_eq(r.kind, BERTH_SUBMIT_STAGED);
    ck_assert_uint_eq(r.seq, BERTH_BATCH_RECORDS_MAX + 1);
    ck_assert_int_eq(berth_engine_commit(engine, 8), BERTH_J_OK);
    char live[TEST_DIGEST_HEX_LEN], d[TEST_DIGEST_HEX_LEN];
    digest_hex(berth_engine_state(engine), live);
    berth_engine_close(engine);

    /* what-if: seqs advance in memory, the journal never moves */
    engine = engine_open(j, 10, true);
    run(engine, "WORKER.REMOVE extra");
    berth_submit_result again = run(engine, "WORKER.REMOVE extra");
    ck_assert_int_eq(again.code, BERTH_NOWORKER);
    ck_assert_uint_eq(again.seq, BERTH_BATCH_RECORDS_MAX + 3);
    ck_assert_uint_eq(berth_engine_head_seq(engine), BERTH_BATCH_RECORDS_MAX + 3);
    ck_assert_uint_eq(journal_head(j), BERTH_BATCH_RECORDS_MAX + 1);
    ck_assert_int_eq(berth_engine_snapshot(engine), BERTH_J_READONLY);
    berth_engine_close(engine);
    replay_digest(j, UINT64_MAX, true, d, NULL, NULL);
    ck_assert_str_eq(live, d);
    berth_journal_close(j);
    remove_dir(dir);
}
END_TEST

START_TEST(test_failed_commit_rebuilds) {
    char dir[64];
    make_dir(dir, sizeof(dir));
    const uint64_t tiny = 1u << 20;
    berth_journal *j = journal_open(dir, false, tiny);
    /* Snapshots too: as the map fills, some fail; a failed snapshot must
     * not fail its commit, and a good one must still load. */
    berth_engine *engine = engine_open(j, 64, false);
    char line[1024];
    berth_jerr e = BERTH_J_OK;
    uint32_t next = 0;
    for (uint32_t batch = 0; batch < 1000 && e == BERTH_J_OK; batch++) {
        for (uint32_t i = 0; i < 64; i++, next++) {
            int n = snprintf(line, sizeof(line), "WORKER.ADD worker-with-a-long-name-%06u GPUS 8 VRAM 81920", next);
            for (uint32_t l = 0; l < 8; l++) {
                n += snprintf(line + n, sizeof(line) - (size_t)n, " LABEL key%u=value-long-enough-%06u", l, next);
            }
            berth_submit_result r;
            submit(engine, line, &r);
            ck_assert_int_eq(r.kind, BERTH_SUBMIT_STAGED);
        }
        e = berth_engine_commit(engine, 9);
    }
    ck_assert_int_eq(e, BERTH_J_FULL);
    ck_assert_uint_eq(berth_engine_staged(engine), 0);
    uint64_t head = journal_head(j);
    ck_assert_uint_gt(head, 0);
    ck_assert_uint_eq(berth_engine_head_seq(engine), head);
    ck_assert_uint_eq(berth_state_last_seq(berth_engine_state(engine)), head);
    char mem[TEST_DIGEST_HEX_LEN], disk[TEST_DIGEST_HEX_LEN];
    digest_hex(berth_engine_state(engine), mem);
    replay_digest(j, UINT64_MAX, false, disk, NULL, NULL);
    ck_assert_str_eq(mem, disk);
    berth_replay_stats stats;
    uint32_t bad = 0;
    replay_digest(j, UINT64_MAX, true, disk, &stats, &bad);
    ck_assert_str_eq(mem, disk);
    ck_assert_uint_eq(bad, 0);
    ck_assert_uint_gt(stats.from_snapshot_seq, 0);
    /* the refused batch's names are not in memory either */
    snprintf(line, sizeof(line), "worker-with-a-long-name-%06u", next - 1);
    ck_assert_ptr_null(berth_state_worker(berth_engine_state(engine), berth_str_make(line, strlen(line))));
    berth_engine_close(engine);
    berth_journal_close(j);

    /* more room: writes resume where the journal stopped */
    j = journal_open(dir, false, 64u << 20);
    engine = engine_open(j, 64, false);
    digest_hex(berth_engine_state(engine), disk);
    ck_assert_str_eq(mem, disk);
    berth_submit_result r = run(engine, "WORKER.ADD after-full GPUS 1");
    ck_assert_uint_eq(r.seq, head + 1);
    berth_verify_report rep = verify(j, &e);
    ck_assert_msg(e == BERTH_J_OK && rep.ok, "verify: %s", rep.what);
    berth_engine_close(engine);
    berth_journal_close(j);
    remove_dir(dir);
}
END_TEST

/* ------------------------------------------- rebuilding the HISTORY index */

#define HR_FOLD_RECORDS 64         /* a fold every 64 records: the touch log is trimmed often */
#define HR_RECORDS 3000
#define HR_MORE_RECORDS 700
#define HR_BATCH_RECORDS 97        /* the rebuild's batches: about thirty of them */
#define HR_COMMIT_RECORDS_MAX 40
#define HR_SEQS_PAGE 512
#define HR_HINT_LEN_MAX 512

static berth_journal *hr_open(const char *dir) {
    berth_journal_options o = { .history_fold_records = HR_FOLD_RECORDS };
    berth_journal *j = NULL;
    char err[512] = "";
    berth_jerr e = berth_journal_open_lmdb(&j, dir, &o, err, sizeof(err));
    ck_assert_msg(e == BERTH_J_OK, "open %s: %s %s", dir, berth_jerr_name(e), err);
    return j;
}

/* Append `records` seeded random commands through the engine, waiting for
 * the fold after each commit, so the commits after a fold trim the touch
 * log. Two directories fed the same seeds hold the same journal. */
static void hr_feed(const char *dir, uint64_t seed, uint64_t records) {
    berth_journal *j = hr_open(dir);
    berth_engine *engine = engine_open(j, 0, false);
    rng_seed(seed);
    uint64_t target = berth_engine_head_seq(engine) + records;
    while (berth_engine_head_seq(engine) < target) {
        uint64_t batch = 1 + rng_below(HR_COMMIT_RECORDS_MAX);
        uint64_t room = target - berth_engine_head_seq(engine);
        while (berth_engine_staged(engine) < batch && berth_engine_staged(engine) < room) {
            char line[TEST_LINE_LEN_MAX / 4];
            gen_command(line, sizeof(line), 200);
            berth_submit_result r;
            submit(engine, line, &r);
        }
        uint64_t time_ms = 1700000000000ull + berth_engine_head_seq(engine);
        berth_jerr e = berth_engine_commit(engine, time_ms);
        LOOP_ASSERT(e == BERTH_J_OK, "commit: %s", berth_jerr_name(e));
        e = berth_journal_lmdb_settle(j);
        LOOP_ASSERT(e == BERTH_J_OK, "settle: %s", berth_jerr_name(e));
    }
    berth_engine_close(engine);
    berth_journal_close(j);
}

/* Every HISTORY answer for the streams' names (workers w0.., instances
 * i0..), through a read-only open, as one string to compare whole; *entries
 * gets how many seqs it holds. */
static char *hr_capture(const char *dir, uint64_t *entries) {
    berth_journal_options o = { .read_only = true, .no_lock = true };
    berth_journal *j = NULL;
    char err[512] = "";
    berth_jerr e = berth_journal_open_lmdb(&j, dir, &o, err, sizeof(err));
    ck_assert_msg(e == BERTH_J_OK, "read-only open %s: %s %s", dir, berth_jerr_name(e), err);
    berth_journal_reader *r = NULL;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(out);
    *entries = 0;
    for (uint32_t k = 0; k < TEST_WORKER_POOL + TEST_INSTANCE_POOL; k++) {
        bool worker = k < TEST_WORKER_POOL;
        char name[16];
        snprintf(name, sizeof(name), "%c%u", worker ? 'w' : 'i', worker ? k : k - TEST_WORKER_POOL);
        fprintf(out, "%s:", name);
        uint64_t seqs[HR_SEQS_PAGE];
        uint64_t from = 1;
        size_t n = HR_SEQS_PAGE;
        while (n == HR_SEQS_PAGE) {
            e = berth_journal_history(r, worker ? BERTH_HISTORY_WORKER : BERTH_HISTORY_INSTANCE,
                                      berth_str_make(name, strlen(name)), from, seqs, HR_SEQS_PAGE, &n);
            ck_assert_int_eq(e, BERTH_J_OK);
            for (size_t i = 0; i < n; i++) fprintf(out, "%" PRIu64 ",", seqs[i]);
            *entries += n;
            if (n > 0) from = seqs[n - 1] + 1;
        }
        fputc(';', out);
    }
    ck_assert_int_eq(fclose(out), 0);
    berth_journal_reader_close(r);
    berth_journal_close(j);
    return text;
}

static uint64_t hr_kill_seq;       /* child: _exit when the rebuild reaches this seq */
static const char *hr_kill_step;   /* child: _exit at this step of the rebuild */

static void hr_hook(const char *step) {
    if (hr_kill_step != NULL && strcmp(step, hr_kill_step) == 0) _exit(0);
}

static berth_jerr hr_take(void *ctx, uint64_t seq, const berth_touched *touched) {
    if (hr_kill_seq != 0 && seq == hr_kill_seq) _exit(0);
    return berth_journal_history_rebuild_add(ctx, seq, touched);
}

/* What `berth history rebuild` does, in small batches. */
static berth_jerr hr_rebuild(const char *dir, uint64_t *names, char *err, size_t err_size) {
    berth_journal_options o = { .history_rebuild = true, .history_fold_records = HR_BATCH_RECORDS };
    berth_journal *j = NULL;
    *names = 0;
    berth_jerr e = berth_journal_open_lmdb(&j, dir, &o, err, err_size);
    if (e != BERTH_J_OK) return e;
    berth_journal_reader *r = NULL;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    berth_verify_report rep;
    e = berth_verify_touched(r, hr_take, j, &rep);
    berth_journal_reader_close(r);
    if (e == BERTH_J_OK) e = berth_journal_history_rebuild_finish(j, names, err, err_size);
    else snprintf(err, err_size, "%s", rep.what);
    berth_journal_close(j);
    return e;
}

static void hr_rebuild_ok(const char *dir, uint64_t want_names) {
    char err[1024] = "";
    uint64_t names = 0;
    berth_jerr e = hr_rebuild(dir, &names, err, sizeof(err));
    ck_assert_msg(e == BERTH_J_OK, "rebuild %s: %s %s", dir, berth_jerr_name(e), err);
    ck_assert_uint_eq(names, want_names);
}

/* A writable open refuses the directory and names the command that cures it. */
static void hr_refused(const char *dir, const char *why) {
    berth_journal_options o = { .history_fold_records = HR_FOLD_RECORDS };
    berth_journal *j = NULL;
    char err[1024] = "";
    ck_assert_int_eq(berth_journal_open_lmdb(&j, dir, &o, err, sizeof(err)), BERTH_J_CORRUPT);
    ck_assert_ptr_null(j);
    char hint[HR_HINT_LEN_MAX];
    snprintf(hint, sizeof(hint), "rebuild it from the journal with `berth history rebuild --data %s`", dir);
    ck_assert_msg(strstr(err, hint) != NULL && strstr(err, why) != NULL, "%s", err);
    ck_assert(strstr(err, "cannot be rebuilt") == NULL);
}

static void hr_path(char *out, size_t size, const char *dir, const char *name) {
    int n = snprintf(out, size, "%s/%s", dir, name);
    ck_assert(n > 0 && (size_t)n < size);
}

static bool hr_exists(const char *dir, const char *name) {
    char path[256];
    hr_path(path, sizeof(path), dir, name);
    struct stat st;
    return stat(path, &st) == 0;
}

/* history/data.mdb replaced by bytes no LMDB reads. */
static void hr_garbage(const char *dir) {
    char path[256];
    hr_path(path, sizeof(path), dir, "history");
    ck_assert(mkdir(path, 0700) == 0 || errno == EEXIST);
    hr_path(path, sizeof(path), dir, "history/data.mdb");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    uint8_t junk[3 * 4096];
    for (size_t i = 0; i < sizeof(junk); i++) junk[i] = (uint8_t)(rng_next() >> 24);
    ck_assert_int_eq(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
    ck_assert_int_eq(close(fd), 0);
}

/* The index gone once the touch log was trimmed: refused by name, rebuilt
 * to the same answers, and written on afterwards exactly as a directory
 * that never lost it (same seeds, same journal). */
START_TEST(test_history_rebuild_missing) {
    char a[64], b[64];
    make_dir(a, sizeof(a));
    make_dir(b, sizeof(b));
    hr_feed(a, test_seed, HR_RECORDS);
    hr_feed(b, test_seed, HR_RECORDS);
    uint64_t entries = 0, again = 0;
    char *before = hr_capture(a, &entries);
    char *twin = hr_capture(b, &again);
    ck_assert_msg(strcmp(before, twin) == 0, "the twin directories answer differently");
    ck_assert_uint_gt(entries, HR_RECORDS);
    char path[256];
    hr_path(path, sizeof(path), a, "history");
    remove_dir(path);
    hr_refused(a, "/history is missing and the touch log was trimmed through seq ");
    berth_journal_options ro = { .read_only = true, .no_lock = true };
    berth_journal *j = NULL;
    char err[1024] = "";
    ck_assert_int_eq(berth_journal_open_lmdb(&j, a, &ro, err, sizeof(err)), BERTH_J_CORRUPT);
    ck_assert_msg(strstr(err, "`berth history rebuild --data ") != NULL, "%s", err);
    hr_rebuild_ok(a, entries);
    ck_assert(!hr_exists(a, "history.rebuild") && !hr_exists(a, "history.damaged-1"));
    char *after = hr_capture(a, &again);
    ck_assert_msg(strcmp(before, after) == 0, "answers differ after the rebuild");
    /* writes go on, folds and trims included, as in the twin */
    hr_feed(a, test_seed + 1, HR_MORE_RECORDS);
    hr_feed(b, test_seed + 1, HR_MORE_RECORDS);
    free(after);
    free(twin);
    after = hr_capture(a, &entries);
    twin = hr_capture(b, &again);
    ck_assert_msg(strcmp(after, twin) == 0, "answers differ from the twin after more writes");
    ck_assert_msg(strcmp(after, before) != 0, "the writes after the rebuild added nothing");
    berth_verify_report rep;
    j = journal_open(a, true, 0);
    berth_jerr e;
    rep = verify(j, &e);
    ck_assert_msg(e == BERTH_J_OK && rep.ok, "verify: %s", rep.what);
    ck_assert_uint_eq(rep.records, HR_RECORDS + HR_MORE_RECORDS);
    berth_journal_close(j);
    free(before);
    free(after);
    free(twin);
    remove_dir(a);
    remove_dir(b);
}
END_TEST

/* A cut, an emptied and a garbage history/data.mdb: each refused by name,
 * rebuilt to the same answers, the damaged one kept aside; writes go on. */
START_TEST(test_history_rebuild_damaged) {
    static const char *const kinds[] = { "cut", "empty", "garbage" };
    static const char *const why[] = { "/history/data.mdb is truncated", "does not fit the journal",
                                       "data.mdb is not an LMDB file" };
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        char a[64];
        make_dir(a, sizeof(a));
        hr_feed(a, test_seed + 10 + k, HR_RECORDS);
        uint64_t entries = 0, again = 0;
        char *before = hr_capture(a, &entries);
        char file[256];
        hr_path(file, sizeof(file), a, "history/data.mdb");
        struct stat st;
        ck_assert_int_eq(stat(file, &st), 0);
        if (k == 0) ck_assert_int_eq(truncate(file, st.st_size / 2), 0);
        if (k == 1) ck_assert_int_eq(truncate(file, 0), 0);
        if (k == 2) hr_garbage(a);
        ck_assert_int_eq(stat(file, &st), 0);
        off_t damaged_size = st.st_size;
        hr_refused(a, why[k]);
        hr_rebuild_ok(a, entries);
        char *after = hr_capture(a, &again);
        ck_assert_msg(strcmp(before, after) == 0, "%s: answers differ after the rebuild", kinds[k]);
        hr_path(file, sizeof(file), a, "history.damaged-1/data.mdb");
        ck_assert_int_eq(stat(file, &st), 0);   /* kept aside, not deleted */
        if (k != 1) ck_assert_int_eq(st.st_size, damaged_size);   /* (LMDB set the empty one up) */
        hr_feed(a, test_seed + 20 + k, HR_MORE_RECORDS);
        free(after);
        after = hr_capture(a, &again);
        ck_assert_uint_gt(again, entries);
        free(before);
        free(after);
        remove_dir(a);
    }
}
END_TEST

/* The rebuild takes the directory lock like a writer: refused beside one,
 * and a writer is refused beside it. A rebuild that stops before finish
 * leaves the index and the directory as they were. */
START_TEST(test_history_rebuild_locked) {
    char a[64];
    make_dir(a, sizeof(a));
    hr_feed(a, test_seed + 30, HR_RECORDS / 3);
    uint64_t entries = 0, again = 0;
    char *before = hr_capture(a, &entries);
    berth_journal *w = hr_open(a);
    char err[1024] = "";
    uint64_t names = 0;
    ck_assert_int_eq(hr_rebuild(a, &names, err, sizeof(err)), BERTH_J_LOCKED);
    ck_assert_msg(strstr(err, "is in use by another berthd") != NULL, "%s", err);
    ck_assert(!hr_exists(a, "history.rebuild"));
    berth_journal_close(w);
    berth_journal_options o = { .history_rebuild = true };
    berth_journal *rb = NULL;
    ck_assert_int_eq(berth_journal_open_lmdb(&rb, a, &o, err, sizeof(err)), BERTH_J_OK);
    ck_assert(hr_exists(a, "history.rebuild"));
    berth_journal_options plain = { 0 };
    ck_assert_int_eq(berth_journal_open_lmdb(&w, a, &plain, err, sizeof(err)), BERTH_J_LOCKED);
    /* nothing but the rebuild's own calls */
    berth_record rec = { .seq = journal_head(rb) + 1 };
    ck_assert_int_eq(berth_journal_append(rb, &rec, NULL, 1), BERTH_J_INVALID);
    ck_assert_int_eq(berth_journal_snapshot_put(rb, 1, "x", 1), BERTH_J_INVALID);
    berth_touched none = { .instance = berth_str_make("", 0), .worker_count = 0, .workers = NULL };
    ck_assert_int_eq(berth_journal_history_rebuild_add(rb, 2, &none), BERTH_J_INVALID);   /* not 1 */
    ck_assert_int_eq(berth_journal_history_rebuild_add(rb, 1, &none), BERTH_J_OK);
    ck_assert_int_eq(berth_journal_history_rebuild_finish(rb, &names, err, sizeof(err)), BERTH_J_INVALID);
    ck_assert_msg(strstr(err, "was given records up to seq 1, the head is ") != NULL, "%s", err);
    berth_journal_close(rb);   /* unfinished: its new index goes, the old one stays */
    ck_assert(!hr_exists(a, "history.rebuild") && !hr_exists(a, "history.damaged-1"));
    char *after = hr_capture(a, &again);
    ck_assert_msg(strcmp(before, after) == 0, "answers differ after the rebuild");
    /* a plain open's rebuild calls, and a directory with no journal */
    w = hr_open(a);
    ck_assert_int_eq(berth_journal_history_rebuild_add(w, 1, &none), BERTH_J_INVALID);
    ck_assert_int_eq(berth_journal_history_rebuild_finish(w, &names, err, sizeof(err)), BERTH_J_INVALID);
    berth_journal_close(w);
    char empty[64];
    make_dir(empty, sizeof(empty));
    ck_assert_int_eq(berth_journal_open_lmdb(&rb, empty, &o, err, sizeof(err)), BERTH_J_NOTFOUND);
    ck_assert(!hr_exists(empty, "data.mdb") && !hr_exists(empty, "LOCK"));
    free(before);
    free(after);
    remove_dir(empty);
    remove_dir(a);
}
END_TEST

/* Killed at each point of a rebuild: the directory is either as it was
 * (refused by name; a second rebuild then succeeds) or rebuilt whole. */
START_TEST(test_history_rebuild_crash) {
    static const char *const steps[] = { "seq", "batch", "written", "synced", "moved", "swapped" };
    char a[64];
    make_dir(a, sizeof(a));
    hr_feed(a, test_seed + 40, HR_RECORDS);
    uint64_t entries = 0, again = 0;
    char *before = hr_capture(a, &entries);
    for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
        hr_garbage(a);   /* a damaged index for every round, so "moved" happens */
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            if (strcmp(steps[s], "seq") == 0) hr_kill_seq = HR_RECORDS / 2;
            else hr_kill_step = steps[s];
            berth_journal_lmdb_rebuild_hook_set(hr_hook);
            char err[1024] = "";
            uint64_t names = 0;
            hr_rebuild(a, &names, err, sizeof(err));
            _exit(3);   /* the kill point was never reached */
        }
        int status = 0;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: child status %d", steps[s], status);
        bool swapped = strcmp(steps[s], "swapped") == 0;
        if (!swapped) {
            hr_refused(a, strcmp(steps[s], "moved") == 0 ? "/history is missing" : "data.mdb is not an LMDB file");
            ck_assert_msg(strcmp(steps[s], "seq") == 0 || hr_exists(a, "history.rebuild"), "%s", steps[s]);
            hr_rebuild_ok(a, entries);
        }
        ck_assert(!hr_exists(a, "history.rebuild"));
        char *after = hr_capture(a, &again);
        ck_assert_msg(strcmp(before, after) == 0, "%s: answers differ", steps[s]);
        free(after);
    }
    /* every round moved its damaged index aside once: the parent's rebuild
     * did, or the child did before it was killed ("moved", "swapped") */
    ck_assert(hr_exists(a, "history.damaged-6") && !hr_exists(a, "history.damaged-7"));
    hr_feed(a, test_seed + 41, HR_MORE_RECORDS);
    free(before);
    remove_dir(a);
}
END_TEST

/* ------------------------------------------------------ cache hints */

/* One parsed command of a prefetch run; cmd points into line. */
typedef struct hinted_cmd {
    char line[TEST_LINE_LEN_MAX / 4];
    char words_buf[TEST_LINE_LEN_MAX / 4];
    berth_str words[TEST_WORDS_MAX];
    char canonical[TEST_LINE_LEN_MAX / 4];
    size_t canonical_len;
    berth_cmd cmd;
} hinted_cmd;

static void outcomes_equal(const berth_outcome *a, const berth_outcome *b, size_t k) {
    LOOP_ASSERT(a->code == b->code, "command %zu: code %d vs %d (seed %" PRIu64 ")", k, (int)a->code,
                (int)b->code, test_seed);
    LOOP_ASSERT(a->sentence_len == b->sentence_len, "command %zu: sentence length %u vs %u", k,
                a->sentence_len, b->sentence_len);
    LOOP_ASSERT(memcmp(a->sentence, b->sentence, a->sentence_len + 1) == 0, "command %zu: '%s' vs '%s'", k,
                a->sentence, b->sentence);
    LOOP_ASSERT(berth_str_eq(a->instance, b->instance), "command %zu: instance differs", k);
    LOOP_ASSERT(a->worker_count == b->worker_count, "command %zu: worker count %u vs %u", k, a->worker_count,
                b->worker_count);
    for (uint32_t i = 0; i < a->worker_count; i++) {
        LOOP_ASSERT(berth_str_eq(a->workers[i], b->workers[i]), "command %zu: worker %u differs", k, i);
    }
}

/* berth_state_prefetch and _prefetch_stages only hint. A state given every stage of the hints
 * for the next commands (replay's use), for commands already applied, and
 * for commands whose carried hashes are wrong ends with the same outcomes,
 * sentences and digest as a state given none; so does a quiet one. */
START_TEST(test_prefetch_changes_nothing) {
    enum { commands = 6000, ahead = 12 };
    rng_seed(test_seed);
    hinted_cmd *cs = calloc(commands, sizeof *cs);
    ck_assert_ptr_nonnull(cs);
    for (size_t k = 0; k < commands;) {
        hinted_cmd *h = &cs[k];
        gen_command(h->line, sizeof h->line, commands / 8);
        size_t n = split_line(h->line, h->words_buf, h->words);
        char err[BERTH_ERR_LEN_MAX];
        if (berth_cmd_parse(&h->cmd, n, h->words, err, sizeof err) != 0) continue;
        h->canonical_len = berth_cmd_canonical(&h->cmd, h->canonical, sizeof h->canonical);
        LOOP_ASSERT(h->canonical_len > 0, "command %zu: no canonical text", k);
        k++;
    }
    berth_state *plain = berth_state_new(NULL), *hinted = berth_state_new(NULL), *quiet = berth_state_new(NULL);
    ck_assert(plain && hinted && quiet);
    static berth_outcome a, b, q;
    static berth_cmd wrong;
    uint64_t seq = 0;
    for (size_t k = 0; k < commands; k++) {
        for (size_t j = k; j < k + ahead && j < commands; j++) {
            for (uint32_t st = 0; st < BERTH_PREFETCH_STAGES; st++) {
                berth_state_prefetch(hinted, &cs[j].cmd, st);
                berth_state_prefetch(quiet, &cs[j].cmd, st);
            }
        }
        if (k >= 3) berth_state_prefetch(hinted, &cs[k - 3].cmd, (uint32_t)(k % BERTH_PREFETCH_STAGES));
        /* Every stage at once, as replay issues them: ahead, behind, and
         * with gaps (NULL) where a chunk ends. */
        const berth_cmd *steps[BERTH_PREFETCH_STAGES];
        for (uint32_t st = 0; st < BERTH_PREFETCH_STAGES; st++) {
            size_t j = k + 3 * (BERTH_PREFETCH_STAGES - st);
            steps[st] = j < commands && (k + st) % 5 != 0 ? &cs[j].cmd : NULL;
        }
        berth_state_prefetch_stages(hinted, steps);
        berth_state_prefetch_stages(quiet, steps);
        for (uint32_t st = 0; st < BERTH_PREFETCH_STAGES; st++) steps[st] = k >= 1 ? &cs[k - 1].cmd : NULL;
        berth_state_prefetch_stages(hinted, steps);
        if (k + 1 < commands) {
            wrong = cs[k + 1].cmd;
            wrong.name_hash = ~wrong.name_hash;
            for (uint32_t i = 0; i < wrong.place_count; i++) wrong.place[i].worker_hash = rng_next();
            for (uint32_t st = 0; st < BERTH_PREFETCH_STAGES; st++) berth_state_prefetch(hinted, &wrong, st);
            const berth_cmd *wrongs[BERTH_PREFETCH_STAGES] = { &wrong, &wrong, &wrong };
            berth_state_prefetch_stages(hinted, wrongs);
        }
        const berth_cmd *c = &cs[k].cmd;
        berth_str canon = berth_str_make(cs[k].canonical, cs[k].canonical_len);
        if (c->reqid.len > 0) {
            berth_reqid_entry hit;
            berth_reqid_status st = berth_state_reqid_check(plain, c->reqid, canon, &hit);
            LOOP_ASSERT(berth_state_reqid_check(hinted, c->reqid, canon, &hit) == st, "command %zu: hinted reqid check differs", k);
            LOOP_ASSERT(berth_state_reqid_check(quiet, c->reqid, canon, &hit) == st, "command %zu: quiet reqid check differs", k);
            if (st != BERTH_REQID_NEW) continue;
        }
        seq++;
        LOOP_ASSERT(berth_state_apply(plain, c, canon, seq, &a) == 0, "command %zu: apply failed", k);
        LOOP_ASSERT(berth_state_apply(hinted, c, canon, seq, &b) == 0, "command %zu: hinted apply failed", k);
        LOOP_ASSERT(berth_state_apply_quiet(quiet, c, canon, seq, &q) == 0, "command %zu: quiet apply failed", k);
        outcomes_equal(&a, &b, k);
        LOOP_ASSERT(a.code == q.code, "command %zu: quiet code differs", k);
        LOOP_ASSERT(berth_str_eq(a.instance, q.instance), "command %zu: quiet instance differs", k);
    }
    ck_assert_uint_gt(seq, commands / 2);
    char why[256];
    ck_assert_msg(berth_state_check(hinted, why, sizeof why), "hinted state broken: %s", why);
    char da[TEST_DIGEST_HEX_LEN], db[TEST_DIGEST_HEX_LEN], dq[TEST_DIGEST_HEX_LEN];
    digest_hex(plain, da);
    digest_hex(hinted, db);
    digest_hex(quiet, dq);
    ck_assert_str_eq(da, db);
    ck_assert_str_eq(da, dq);
    berth_state_free(plain);
    berth_state_free(hinted);
    berth_state_free(quiet);
    free(cs);
}
END_TEST

/* berth_state_apply_precomputed is berth_state_apply with the REQID's
 * hashes worked out ahead (berth_state_precompute) and the carried name
 * hashes trusted on a miss. Over a random stream (misses and hits, REQID
 * retries and conflicts, a window that wraps past BERTH_REQID_WINDOW) it
 * gives the same window answers, outcomes, sentences and digest, with and
 * without sentences, and the states pass berth_state_check. An entry kept
 * under a wrong hash would trip table_del_obj's asserts when the window
 * evicts it. The precomputed state also gets replay's cache hints, the
 * full window's eviction hints included. */
START_TEST(test_precomputed_matches_apply) {
    enum { commands = 24000, reqid_space = 4000 };
    rng_seed(test_seed);
    berth_state *plain = berth_state_new(NULL), *pre = berth_state_new(NULL), *quiet = berth_state_new(NULL);
    ck_assert(plain && pre && quiet);
    static berth_outcome a, b, q;
    static hinted_cmd h;
    uint64_t seq = 0;
    uint32_t with_reqid = 0, refused_reqid = 0;
    for (size_t k = 0; k < commands; k++) {
        /* One command in five comes with a REQID from a small space (retries
         * and conflicts); the others get a new one, so the window wraps. */
        gen_command(h.line, sizeof h.line, reqid_space);
        if (strstr(h.line, " REQID ") == NULL) {
            size_t len = strlen(h.line);
            int w = snprintf(h.line + len, sizeof h.line - len, " REQID q%zu", k);
            LOOP_ASSERT(w > 0 && (size_t)w < sizeof h.line - len, "command %zu: line too long", k);
        }
        size_t n = split_line(h.line, h.words_buf, h.words);
        char err[BERTH_ERR_LEN_MAX];
        if (berth_cmd_parse(&h.cmd, n, h.words, err, sizeof err) != 0) continue;
        h.canonical_len = berth_cmd_canonical(&h.cmd, h.canonical, sizeof h.canonical);
        LOOP_ASSERT(h.canonical_len > 0, "command %zu: no canonical text", k);
        const berth_cmd *c = &h.cmd;
        berth_str canon = berth_str_make(h.canonical, h.canonical_len);
        berth_precomputed p;
        LOOP_ASSERT(berth_state_precompute(c, canon, &p), "command %zu: nothing precomputed", k);
        /* The hints replay gives (every stage, the REQID's window slot) go to
         * pre alone, here where the window is full and a REQID evicts its
         * oldest entry: they change nothing the comparisons below see. */
        const berth_cmd *steps[BERTH_PREFETCH_STAGES] = { c, c, c };
        berth_state_prefetch_stages(pre, steps);
        berth_state_prefetch_reqid(pre, p.reqid_hash);
        if (c->reqid.len > 0) {
            uint8_t id[BERTH_COMMAND_ID_LEN];
            berth_command_id(canon, id);
            LOOP_ASSERT(p.reqid_hash == berth_name_hash(c->reqid) && memcmp(p.command_id, id, sizeof id) == 0,
                        "command %zu: precomputed hashes differ", k);
            berth_reqid_entry hit, hit_pre;
            berth_reqid_status st = berth_state_reqid_check(plain, c->reqid, canon, &hit);
            LOOP_ASSERT(berth_state_reqid_check_precomputed(pre, c, &p, &hit_pre) == st, "command %zu: reqid check differs", k);
            LOOP_ASSERT(berth_state_reqid_check_precomputed(quiet, c, &p, &hit_pre) == st, "command %zu: quiet reqid check differs", k);
            if (st != BERTH_REQID_NEW) {
                LOOP_ASSERT(hit.seq == hit_pre.seq, "command %zu: window hit seq differs", k);
                refused_reqid++;
                continue;
            }
            with_reqid++;
        }
        seq++;
        LOOP_ASSERT(berth_state_apply(plain, c, canon, seq, &a) == 0, "command %zu: apply failed", k);
        LOOP_ASSERT(berth_state_apply_precomputed(pre, c, canon, seq, &p, false, &b) == 0, "command %zu: precomputed apply failed", k);
        LOOP_ASSERT(berth_state_apply_precomputed(quiet, c, canon, seq, &p, true, &q) == 0, "command %zu: quiet precomputed apply failed", k);
        outcomes_equal(&a, &b, k);
        LOOP_ASSERT(a.code == q.code, "command %zu: quiet code differs", k);
        LOOP_ASSERT(berth_str_eq(a.instance, q.instance), "command %zu: quiet instance differs", k);
        LOOP_ASSERT(a.worker_count == q.worker_count, "command %zu: quiet worker count differs", k);
    }
    ck_assert_uint_gt(with_reqid, BERTH_REQID_WINDOW);   /* the window wrapped */
    ck_assert_uint_gt(refused_reqid, 0);
    char why[256];
    ck_assert_msg(berth_state_check(pre, why, sizeof why), "precomputed state broken: %s", why);
    ck_assert_msg(berth_state_check(quiet, why, sizeof why), "quiet state broken: %s", why);
    char da[TEST_DIGEST_HEX_LEN], db[TEST_DIGEST_HEX_LEN], dq[TEST_DIGEST_HEX_LEN];
    digest_hex(plain, da);
    digest_hex(pre, db);
    digest_hex(quiet, dq);
    ck_assert_str_eq(da, db);
    ck_assert_str_eq(da, dq);
    /* A REQID that is not a name has nothing to precompute. */
    berth_cmd bad = h.cmd;
    bad.reqid = berth_str_make("no spaces", 9);
    berth_precomputed p;
    ck_assert(!berth_state_precompute(&bad, berth_str_make("RELEASE i1", 10), &p));
    berth_state_free(plain);
    berth_state_free(pre);
    berth_state_free(quiet);
}
END_TEST

static Suite *replay_suite(void) {
    Suite *s = suite_create("replay");
    struct { const char *name; const TTest *fn; } cases[] = {
        { "seed_case", test_seed_case },
        { "determinism", test_determinism_and_time_travel },
        { "verify_flipped", test_verify_flipped_byte },
        { "verify_outcome", test_verify_altered_outcome },
        { "older_wording", test_older_wording_verifies },
        { "verify_noncanonical", test_verify_noncanonical },
        { "verify_gap", test_verify_gap_and_truncation },
        { "verify_two_faults", test_verify_first_of_two_faults },
        { "verify_slow_applier", test_verify_slow_applier_full_ring },
        { "cut_head", test_cut_head_named },
        { "snapshot_anchor", test_snapshot_anchor_checked },
        { "verify_steps", test_verify_steps_match_whole },
        { "replay_parts", test_replay_parts_match_whole },
        { "bad_snapshot", test_bad_snapshot_falls_back },
        { "snapshot_decode", test_snapshot_decode_rejects_damage },
        { "snapshot_bound", test_snapshot_bound_to_chain },
        { "snapshot_old_version", test_snapshot_old_version_skipped },
        { "snapshot_decode_tight", test_snapshot_decode_tightened },
        { "reqid_identity", test_reqid_identity_survives_snapshot_and_replay },
        { "record_decode_shapes", test_record_decode_shapes },
        { "record_decode_reference", test_record_decode_matches_reference },
        { "reqid", test_reqid_retry },
        { "reqid_damage", test_reqid_damage_named },
        { "commit_time", test_commit_time_never_decreases },
        { "batch_dry_run", test_batch_full_and_dry_run },
        { "failed_commit", test_failed_commit_rebuilds },
        { "prefetch", test_prefetch_changes_nothing },
        { "precomputed", test_precomputed_matches_apply },
        { "history_rebuild_missing", test_history_rebuild_missing },
        { "history_rebuild_damaged", test_history_rebuild_damaged },
        { "history_rebuild_locked", test_history_rebuild_locked },
        { "history_rebuild_crash", test_history_rebuild_crash },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, TEST_TIMEOUT_S);
        tcase_add_test(tc, cases[i].fn);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--digest") == 0) return digest_main(argv[2]);
    if (realpath(argv[0], self_exe) == NULL) {
        perror(argv[0]);
        return EXIT_FAILURE;
    }
    const char *seed = getenv("BERTH_TEST_SEED");
    if (seed != NULL) test_seed = strtoull(seed, NULL, 10);
    printf("replay tests: seed %" PRIu64 " (set BERTH_TEST_SEED to change)\n", test_seed);
    fflush(stdout);
    SRunner *sr = srunner_create(replay_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
