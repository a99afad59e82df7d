/* replay_speed.c — owns the replay/verify speed figures: builds (or reuses)
 * a deterministic journal through the engine and prints records/s for the
 * ceilings (raw cursor scan, decode alone, hash alone) beside replay and
 * verify. A program, not a test: it prints figures and judges nothing.
 *
 * Why here: replay's two-thread split is tuned against these numbers, so
 * they must be reproducible with one command:
 *   replay_speed --dir /tmp/berth-speed --records 10000000 --workers 10000 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "engine.h"
#include "replay.h"

#define SPEED_LINE_LEN_MAX 512
#define SPEED_WORDS_MAX 32
#define SPEED_GPUS_PER_WORKER 8

static uint64_t rng_state = 0x5eed5eed5eedull;
static uint64_t rng_next(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static double now_s(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) abort();
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds of the whole process (both replay threads): on a machine
 * shared with other work, wall time alone overstates the cost. */
static double cpu_s(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) abort();
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *what, berth_jerr e, const char *err) {
    fprintf(stderr, "replay_speed: %s: %s %s\n", what, berth_jerr_name(e), err ? err : "");
    exit(1);
}

static size_t split(char *line, berth_str *words) {
    size_t n = 0;
    char *save = NULL;
    for (char *w = strtok_r(line, " ", &save); w && n < SPEED_WORDS_MAX; w = strtok_r(NULL, " ", &save)) {
        words[n++] = berth_str_make(w, strlen(w));
    }
    return n;
}

/* The command for record i: workers first, then distributed DEPLOY/RELEASE
 * cycles over them with a bounded set of live instances. */
static void gen_line(uint64_t i, uint64_t workers, uint64_t *live_lo, uint64_t *live_hi, char *line) {
    if (i < workers) {
        snprintf(line, SPEED_LINE_LEN_MAX, "WORKER.ADD w%" PRIu64 " GPUS %d VRAM 81920 LABEL zone=z%" PRIu64,
                 i, SPEED_GPUS_PER_WORKER, i % 16);
        return;
    }
    bool release = *live_hi - *live_lo >= workers / 2 || (*live_hi > *live_lo && rng_next() % 2 == 0);
    if (release) {
        snprintf(line, SPEED_LINE_LEN_MAX, "RELEASE i%" PRIu64, (*live_lo)++);
        return;
    }
    uint64_t a = rng_next() % workers, b = rng_next() % workers;
    if (b == a) b = (a + 1) % workers;
    int n = snprintf(line, SPEED_LINE_LEN_MAX,
                     "DEPLOY i%" PRIu64 " MODEL llama-3-70b BACKEND %s ON w%" PRIu64 ":%u w%" PRIu64 ":%u",
                     *live_hi, rng_next() % 4 ? "vllm" : "sglang", a,
                     (unsigned)(rng_next() % SPEED_GPUS_PER_WORKER), b,
                     (unsigned)(rng_next() % SPEED_GPUS_PER_WORKER));
    if (rng_next() % 10 == 0) snprintf(line + n, SPEED_LINE_LEN_MAX - (size_t)n, " REQID q%" PRIu64, i);
    (*live_hi)++;
}

static void build(berth_journal *j, uint64_t records, uint64_t workers) {
    berth_engine *engine = NULL;
    char err[512] = "";
    berth_engine_options opt = { .snapshot_every = 0, .dry_run = false };
    berth_jerr e = berth_engine_open(&engine, j, &opt, NULL, err, sizeof(err));
    if (e != BERTH_J_OK) die("engine open", e, err);
    uint64_t live_lo = 0, live_hi = 0;
    double t0 = now_s();
    for (uint64_t i = 0; i < records; i++) {
        char line[SPEED_LINE_LEN_MAX];
        berth_str words[SPEED_WORDS_MAX];
        gen_line(i, workers, &live_lo, &live_hi, line);
        berth_submit_result r;
        berth_engine_submit(engine, split(line, words), words, berth_str_make("speed", 5), &r);
        if (r.kind != BERTH_SUBMIT_STAGED) die("submit", BERTH_J_INVALID, r.sentence);
        if (berth_engine_staged(engine) == BERTH_BATCH_RECORDS_MAX || i + 1 == records) {
            e = berth_engine_commit(engine, 1700000000000ull + i);
            if (e != BERTH_J_OK) die("commit", e, NULL);
        }
    }
    double dt = now_s() - t0;
    printf("built %" PRIu64 " records over %" PRIu64 " workers in %.2f s (%.0f records/s through the engine)\n",
           records, workers, dt, (double)records / dt);
    berth_engine_close(engine);
}

typedef enum { SCAN_RAW, SCAN_DECODE, SCAN_HASH } scan_kind;

static double scan(berth_journal *j, scan_kind kind, uint64_t *count) {
    berth_journal_reader *r = NULL;
    berth_journal_cursor *c = NULL;
    berth_jerr e = berth_journal_reader_open(j, &r);
    if (e != BERTH_J_OK) die("reader", e, NULL);
    e = berth_journal_cursor_open(r, 1, &c);
    if (e != BERTH_J_OK) die("cursor", e, NULL);
    double t0 = now_s();
    uint64_t n = 0, seq = 0, sink = 0;
    const uint8_t *raw = NULL;
    size_t len = 0;
    while ((e = berth_journal_cursor_next_raw(c, &seq, &raw, &len)) == BERTH_J_OK) {
        if (kind == SCAN_DECODE) {
            berth_record rec;
            if (berth_record_decode(raw, len, &rec, NULL, 0) != BERTH_J_OK) die("decode", BERTH_J_CORRUPT, NULL);
            sink += rec.code;
        } else if (kind == SCAN_HASH) {
            if (!berth_record_hash_ok(raw, len)) die("hash", BERTH_J_CORRUPT, NULL);
        } else {
            sink += raw[len / 2];
        }
        n++;
    }
    double dt = now_s() - t0;
    if (e != BERTH_J_NOTFOUND) die("scan", e, NULL);
    berth_journal_cursor_close(c);
    berth_journal_reader_close(r);
    *count = n + (sink & 0);
    return dt;
}

int main(int argc, char **argv) {
    const char *dir = "/tmp/berth-replay-speed";
    uint64_t records = 10000000, workers = 10000;
    int rounds = 1;
    const char *phase = "all";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--dir") == 0) dir = argv[i + 1];
        else if (strcmp(argv[i], "--records") == 0) records = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--workers") == 0) workers = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--rounds") == 0) rounds = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--phase") == 0) phase = argv[i + 1];
        else {
            fprintf(stderr, "usage: replay_speed [--dir D] [--records N] [--workers W] [--rounds R] [--phase all|replay|verify]\n");
            return 2;
        }
    }
    if (workers == 0 || records <= workers) {
        fprintf(stderr, "replay_speed: need records > workers > 0\n");
        return 2;
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        perror(dir);
        return 1;
    }
    berth_journal *j = NULL;
    char err[512] = "";
    /* An existing journal (ours, or the engine bench's) is only read, so
     * this may run beside the process that owns it. */
    berth_journal_options ropt = { .read_only = true, .no_lock = true };
    uint64_t head = 0;
    uint8_t hash[BERTH_HASH_LEN];
    berth_jerr e = berth_journal_open_lmdb(&j, dir, &ropt, err, sizeof(err));
    if (e == BERTH_J_OK && (e = berth_journal_head(j, &head, hash)) != BERTH_J_OK) die("head", e, NULL);
    if (head > 0) {
        printf("reusing %s (%" PRIu64 " records)\n", dir, head);
    } else {
        if (j != NULL) berth_journal_close(j);
        j = NULL;
        berth_journal_options jopt = { 0 };
        e = berth_journal_open_lmdb(&j, dir, &jopt, err, sizeof(err));
        if (e != BERTH_J_OK) die("open", e, err);
        build(j, records, workers);
    }

    bool all = strcmp(phase, "all") == 0;
    for (int round = 0; round < rounds; round++) {
        uint64_t n = 0;
        double dt = 0;
        if (all) {
        dt = scan(j, SCAN_RAW, &n);
        printf("ceiling  raw cursor scan  %10.0f records/s  (%" PRIu64 " in %.3f s)\n", (double)n / dt, n, dt);
        dt = scan(j, SCAN_DECODE, &n);
        printf("ceiling  scan + decode    %10.0f records/s  (%.3f s)\n", (double)n / dt, dt);
        dt = scan(j, SCAN_HASH, &n);
        printf("ceiling  scan + hash      %10.0f records/s  (%.3f s)\n", (double)n / dt, dt);
        }

        berth_journal_reader *r = NULL;
        if ((e = berth_journal_reader_open(j, &r)) != BERTH_J_OK) die("reader", e, NULL);
        berth_state *s = NULL;
        berth_replay_stats stats;
        double t0 = now_s();
        if (all || strcmp(phase, "replay") == 0) {
        double c0 = cpu_s();
        e = berth_replay_to(r, UINT64_MAX, false, &s, &stats, NULL, err, sizeof(err));
        dt = now_s() - t0;
        double cpu = cpu_s() - c0;
        if (e != BERTH_J_OK) die("replay", e, err);
        printf("replay   from genesis     %10.0f records/s  (%" PRIu64 " in %.3f s, %.3f CPU s; %zu workers, %zu instances)\n",
               (double)stats.records / dt, stats.records, dt, cpu, berth_state_worker_count(s),
               berth_state_instance_count(s));
        uint8_t *snap = NULL;
        size_t snap_len = 0;
        t0 = now_s();
        if (berth_snapshot_encode(s, NULL, &snap, &snap_len) != 0) die("snapshot", BERTH_J_NOMEM, NULL);
        double enc = now_s() - t0;
        berth_state *back = NULL;
        t0 = now_s();
        if (berth_snapshot_decode(snap, snap_len, &back, NULL, err, sizeof(err)) != 0) die("decode", BERTH_J_CORRUPT, err);
        printf("snapshot %zu bytes: encode %.3f s, decode %.3f s\n", snap_len, enc, now_s() - t0);
        berth_state_free(back);
        free(snap);
        berth_state_free(s);
        }
        if (all || strcmp(phase, "verify") == 0) {
        berth_verify_report rep;
        t0 = now_s();
        double c0 = cpu_s();
        e = berth_verify(r, &rep);
        dt = now_s() - t0;
        double cpu = cpu_s() - c0;
        if (e != BERTH_J_OK) die("verify", e, rep.what);
        printf("verify   whole chain      %10.0f records/s  (%" PRIu64 " in %.3f s, %.3f CPU s)\n",
               (double)rep.records / dt, rep.records, dt, cpu);
        }
        berth_journal_reader_close(r);
    }
    berth_journal_close(j);
    return 0;
}
