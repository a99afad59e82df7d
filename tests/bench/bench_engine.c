/* bench_engine.c — the engine's speed figures (issue 2, "Speed"), in one run.
 *
 * Owns the measurement, not the engine: it builds a deterministic journal of
 * --records records over --workers workers (berth_gen's stream, submitted
 * through replay/engine.h in batches of 1024, fsync on), then measures on
 * it, each figure --runs times, printing median and spread:
 *   ceilings  raw LMDB cursor scan, record decode alone, SHA-256 alone
 *   replay    berth_replay_to from genesis, no snapshots
 *   verify    berth_verify over the whole chain
 *   apply     parse + apply in memory, no journal
 *   append    durable berth_journal_append of pre-built records at batch
 *             sizes 1, 64, 1024 and 4096 into a fresh journal (the store's
 *             default: two syncs a commit, durable on return); at 1024 also
 *             in berthd's one-sync mode (defer_meta_sync), with a last
 *             sync inside the timing so every record counted is durable,
 *             and on berthd's road: each batch one frame of the commit log
 *             (journal/commit_log.h: durable on return), its files moved
 *             into LMDB by a checkpointer thread meanwhile, and the last
 *             checkpoint inside the timing, so every record counted is
 *             durable in LMDB too; and through an appender (journal/appender.h:
 *             batches encoded while the one before commits, the queued
 *             ones committed together) in either sync mode, each batch
 *             counted once its wait said it is durable. The roads at 1024
 *             alternate in each run.
 *   memory    bytes per worker and per instance, counted by a berth_allocator
 * It checks as it goes (record counts, verify ok, replay digest equal to the
 * live engine's, generator predictions equal to the engine's outcomes) and
 * exits non-zero if anything is wrong, so `bench_smoke` can run it small.
 * It never asserts on time: figures are printed beside targets and ceilings.
 *
 * Usage: bench_engine [--records N] [--workers W] [--data DIR] [--runs R]
 *                     [--seed S] [--keep] [--only PHASE[,PHASE...]]
 *                     [--append-batch 1|64|1024|4096]
 * --only picks phases (ceilings, replay, verify, apply, append, memory) so one
 * can be profiled alone under perf; the journal is built or reused either way.
 * --append-batch appends at that one batch size only (for perf, strace). The
 * append lines give CPU per record beside the rate: on this shared machine
 * the rate moves with other jobs' disk syncs, the CPU much less.
 * --data defaults to a new directory under $TMPDIR, else /work, else /tmp;
 * it is removed at the end unless --keep. With --keep, a later run with the
 * same --data, --records, --workers and --seed reuses the built journal. */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "commit_log.h"
#include "engine.h"
#include "gen.h"
#include "journal.h"
#include "appender.h"
#include "replay.h"
#include "state.h"

#define RECORDS_DEFAULT 10000000ull
#define WORKERS_DEFAULT 10000u
#define RUNS_DEFAULT 3u
#define RUNS_MAX 15u
#define SEED_DEFAULT 20261126ull
#define BUILD_BATCH_RECORDS 1024u
#define SAMPLE_RECORDS_MAX 1000000ull        /* decode/hash ceilings run over this many in memory */
#define APPLY_RECORDS_MAX 16000000ull        /* apply-in-memory runs over this many commands (~150 B each in memory) */
#define APPEND_SOURCE_RECORDS_MAX 65536ull   /* distinct pre-built records, cycled */
#define APPEND_SIZES 4
#define APPEND_ONE_SYNC_BATCH 1024u          /* the batch size also run in berthd's one-sync mode */
#define DISK_BYTES_PER_RECORD 420ull         /* record + LMDB page/branch overhead + history index */
#define DISK_SLACK_BYTES (2ull << 30)        /* append journals and headroom */
#define PATH_LEN_MAX 4096
#define ERR_LEN_MAX 1024
#define LINE_LEN_MAX 256
#define TIME_BASE_MS 1798761600000ull        /* 2027-01-01T00:00:00Z: fixed, so the journal is deterministic */
#define ACTOR "bench"
#define MALLOC_BLOCK_OVERHEAD 16             /* glibc: 8-byte chunk header, 16-byte rounding, on average */

/* 4096 (BERTH_BATCH_RECORDS_MAX) is beyond the list: it shows what
 * a larger group commit buys when the syncs dominate. */
static const uint32_t append_batch_sizes[APPEND_SIZES] = { 1, 64, 1024, 4096 };
/* Records appended per run at each batch size: batch 1 pays one fsync per
 * record, so it gets fewer. */
static const uint64_t append_records_max[APPEND_SIZES] = { 2000, 64000, 1048576, 1048576 };

/* Targets of issue 2 on this 2-core machine, records per second. */
#define TARGET_REPLAY 5000000.0
#define TARGET_VERIFY 2000000.0
#define TARGET_APPEND_1024 1000000.0

/* Phases --only can pick, to profile one at a time under perf. */
enum {
    PHASE_CEILINGS = 1u << 0,       /* scan, decode, hash */
    PHASE_REPLAY = 1u << 1,
    PHASE_VERIFY = 1u << 2,
    PHASE_APPLY = 1u << 3,
    PHASE_APPEND = 1u << 4,
    PHASE_MEMORY = 1u << 5,
    PHASE_ALL = (1u << 6) - 1
};

static const struct { const char *name; uint32_t bit; } phase_names[] = {
    { "ceilings", PHASE_CEILINGS }, { "replay", PHASE_REPLAY }, { "verify", PHASE_VERIFY },
    { "apply", PHASE_APPLY }, { "append", PHASE_APPEND }, { "memory", PHASE_MEMORY },
};

typedef struct options {
    uint64_t records;
    uint32_t workers;
    uint32_t runs;
    uint64_t seed;
    bool keep;
    uint32_t phases;                /* PHASE_* bits to measure */
    uint32_t append_batch;          /* --append-batch: the one batch size to append at; 0: all */
    char data[PATH_LEN_MAX];
    bool data_given;
} options;

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("ERR ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return -1;
}

static uint64_t clock_ns(clockid_t id) {
    struct timespec ts;
    int rc = clock_gettime(id, &ts);
    assert(rc == 0);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ns(void) {
    return clock_ns(CLOCK_MONOTONIC);
}

/* CPU time around a two-thread phase: the process's (every thread, the
 * replay feeder included) and the calling thread's (the applier). Wall
 * time on this shared 2-core machine moves with other jobs; CPU per record
 * moves much less, and the two threads' shares show how the work splits. */
typedef struct cpu_mark {
    uint64_t process_ns;
    uint64_t thread_ns;
} cpu_mark;

static cpu_mark cpu_now(void) {
    cpu_mark m = { clock_ns(CLOCK_PROCESS_CPUTIME_ID), clock_ns(CLOCK_THREAD_CPUTIME_ID) };
    return m;
}

/* ------------------------------------------------------------ figures */

typedef struct figure {
    const char *name;
    uint32_t runs;
    double rate[RUNS_MAX];          /* per second */
    uint64_t written_bytes;         /* write(2) bytes over all runs (appends only) */
    uint64_t records;               /* records over all runs */
    uint32_t cpu_runs;              /* runs with a CPU split (replay, verify) */
    double cpu_ns[RUNS_MAX];        /* per record: CPU of all the process's threads */
    double caller_ns[RUNS_MAX];     /* per record: CPU of the calling (applying) thread */
    const char *caller;             /* what the calling thread does; NULL: "applying" */
    uint64_t full_checkpoints;      /* berthd's road: the appending thread's own, over all runs */
    uint64_t commits;               /* the appender's road: its commits over all runs */
} figure;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void figure_add(figure *f, uint64_t count, uint64_t ns) {
    assert(f->runs < RUNS_MAX);
    assert(ns > 0);
    f->rate[f->runs++] = (double)count * 1e9 / (double)ns;
    f->records += count;
}

static void figure_add_cpu(figure *f, uint64_t count, cpu_mark start, cpu_mark end) {
    assert(f->cpu_runs < RUNS_MAX && count > 0);
    f->cpu_ns[f->cpu_runs] = (double)(end.process_ns - start.process_ns) / (double)count;
    f->caller_ns[f->cpu_runs] = (double)(end.thread_ns - start.thread_ns) / (double)count;
    f->cpu_runs++;
}

static double median_of(const double *v, uint32_t n) {
    assert(n > 0 && n <= RUNS_MAX);
    double sorted[RUNS_MAX];
    memcpy(sorted, v, n * sizeof(double));
    qsort(sorted, n, sizeof(double), cmp_double);
    if (n % 2) return sorted[n / 2];
    return (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
}

static double figure_median(const figure *f) {
    return median_of(f->rate, f->runs);
}

static void figure_range(const figure *f, double *lo, double *hi) {
    *lo = *hi = f->rate[0];
    for (uint32_t i = 1; i < f->runs; i++) {
        if (f->rate[i] < *lo) *lo = f->rate[i];
        if (f->rate[i] > *hi) *hi = f->rate[i];
    }
}

static void human(double v, char *out, size_t size) {
    if (v >= 1e6) snprintf(out, size, "%.2fM", v / 1e6);
    else if (v >= 1e3) snprintf(out, size, "%.1fk", v / 1e3);
    else snprintf(out, size, "%.0f", v);
}

/* One line: name, median, min..max and spread, then target and ceiling. */
static void figure_print(const figure *f, const char *unit, double target, const char *ceiling) {
    if (f->runs == 0) return;   /* not measured this run (--only) */
    char med[32], lo_s[32], hi_s[32];
    double lo, hi, m = figure_median(f);
    figure_range(f, &lo, &hi);
    human(m, med, sizeof med);
    human(lo, lo_s, sizeof lo_s);
    human(hi, hi_s, sizeof hi_s);
    double spread = m > 0 ? (hi - lo) / m * 100 : 0;
    printf("  %-34s %9s %-5s [%s..%s, spread %4.1f%%, %u runs]", f->name, med, unit, lo_s, hi_s, spread,
           f->runs);
    if (target > 0) {
        char t[32];
        human(target, t, sizeof t);
        printf("  target >= %s: %s", t, m >= target ? "MET" : "MISSED");
    }
    putchar('\n');
    if (ceiling != NULL && ceiling[0] != '\0') printf("  %-34s ceiling: %s\n", "", ceiling);
    if (f->written_bytes > 0) {
        printf("  %-34s wrote %.0f bytes per record to the store (write syscalls)\n", "",
               (double)f->written_bytes / (double)f->records);
    }
    if (f->full_checkpoints > 0) {
        printf("  %-34s the checkpointer fell behind: %" PRIu64 " full checkpoints by the appending thread\n",
               "", f->full_checkpoints);
    }
    if (f->commits > 0) {
        printf("  %-34s %.0f records a commit on average (queued batches share one)\n", "",
               (double)f->records / (double)f->commits);
    }
    if (f->cpu_runs > 0) {
        double total = median_of(f->cpu_ns, f->cpu_runs), caller = median_of(f->caller_ns, f->cpu_runs);
        double cpu_lo = f->cpu_ns[0], cpu_hi = f->cpu_ns[0];
        for (uint32_t i = 1; i < f->cpu_runs; i++) {
            if (f->cpu_ns[i] < cpu_lo) cpu_lo = f->cpu_ns[i];
            if (f->cpu_ns[i] > cpu_hi) cpu_hi = f->cpu_ns[i];
        }
        printf("  %-34s CPU %.0f ns per record, all threads [%.0f..%.0f]; the %s thread %.0f, "
               "the others %.0f (medians)\n", "", total, cpu_lo, cpu_hi, f->caller != NULL ? f->caller : "applying",
               caller, total - caller);
    }
}

/* ------------------------------------------------------------ machine */

static void print_load(const char *when) {
    FILE *f = fopen("/proc/loadavg", "r");
    char line[LINE_LEN_MAX] = "unknown";
    if (f != NULL) {
        if (fgets(line, sizeof line, f) == NULL) snprintf(line, sizeof line, "unknown\n");
        fclose(f);
    }
    line[strcspn(line, "\n")] = '\0';
    printf("load average %s: %s\n", when, line);
}

static void print_machine(void) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[LINE_LEN_MAX], model[LINE_LEN_MAX] = "unknown";
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "model name", 10) == 0) {
            const char *colon = strchr(line, ':');
            if (colon) snprintf(model, sizeof model, "%s", colon + 2);
            break;
        }
    }
    if (f != NULL) fclose(f);
    model[strcspn(model, "\n")] = '\0';
    printf("machine: %ld online CPUs, %s\n", sysconf(_SC_NPROCESSORS_ONLN), model);
}

/* Bytes this process has passed to write(2)-family calls (/proc/self/io
 * wchar): LMDB writes dirty pages with pwrite, so this is what a commit
 * writes before the fsync. */
static uint64_t io_written_bytes(void) {
    FILE *f = fopen("/proc/self/io", "r");
    char line[LINE_LEN_MAX];
    uint64_t bytes = 0;
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        if (sscanf(line, "wchar: %" SCNu64, &bytes) == 1) break;
    }
    if (f != NULL) fclose(f);
    return bytes;
}

/* ------------------------------------------------------------ files */

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    return remove(path);
}

/* Remove a directory tree we created (nftw walks it; no recursion here). */
static int remove_tree(const char *path) {
    if (access(path, F_OK) != 0) return 0;
    if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) {
        return fail("cannot remove %s: %s", path, strerror(errno));
    }
    return 0;
}

static int path_join(char *out, const char *dir, const char *name) {
    int n = snprintf(out, PATH_LEN_MAX, "%s/%s", dir, name);
    if (n < 0 || n >= PATH_LEN_MAX) return fail("path too long: %s/%s", dir, name);
    return 0;
}

static int make_data_dir(options *o) {
    if (o->data_given) {
        if (mkdir(o->data, 0700) != 0 && errno != EEXIST) {
            return fail("cannot create data directory %s: %s", o->data, strerror(errno));
        }
        return 0;
    }
    const char *base = getenv("TMPDIR");
    if (base == NULL || access(base, W_OK) != 0) base = access("/work", W_OK) == 0 ? "/work" : "/tmp";
    int n = snprintf(o->data, sizeof o->data, "%s/berth-bench-XXXXXX", base);
    if (n < 0 || (size_t)n >= sizeof o->data) return fail("TMPDIR path too long");
    if (mkdtemp(o->data) == NULL) return fail("cannot create a directory under %s: %s", base, strerror(errno));
    return 0;
}

static int check_disk(const options *o) {
    struct statvfs vfs;
    if (statvfs(o->data, &vfs) != 0) return fail("statvfs %s: %s", o->data, strerror(errno));
    uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    uint64_t need = o->records * DISK_BYTES_PER_RECORD + DISK_SLACK_BYTES;
    printf("disk: %s has %.1f GB free; this run needs about %.1f GB\n", o->data, avail / 1e9, need / 1e9);
    if (avail < need) {
        return fail("not enough disk under %s: %.1f GB free, about %.1f GB needed; use --data on a larger "
                    "disk or fewer --records", o->data, avail / 1e9, need / 1e9);
    }
    return 0;
}

/* ------------------------------------------------------------ build */

/* The parameters a built journal was made with, so --keep can reuse it. */
static void params_line(const options *o, char *out, size_t size) {
    snprintf(out, size, "records=%" PRIu64 " workers=%u seed=%" PRIu64 " gen=%d\n", o->records, o->workers,
             o->seed, BERTH_GEN_STREAM_VERSION);
}

static bool params_match(const options *o) {
    char path[PATH_LEN_MAX], want[LINE_LEN_MAX], have[LINE_LEN_MAX] = "";
    if (path_join(path, o->data, "bench.params") != 0) return false;
    FILE *f = fopen(path, "r");
    if (f == NULL) return false;
    bool ok = fgets(have, sizeof have, f) != NULL;
    fclose(f);
    params_line(o, want, sizeof want);
    return ok && strcmp(have, want) == 0;
}

static int params_write(const options *o) {
    char path[PATH_LEN_MAX], line[LINE_LEN_MAX];
    if (path_join(path, o->data, "bench.params") != 0) return -1;
    FILE *f = fopen(path, "w");
    if (f == NULL) return fail("cannot write %s: %s", path, strerror(errno));
    params_line(o, line, sizeof line);
    bool ok = fputs(line, f) >= 0;
    if (fclose(f) != 0 || !ok) return fail("cannot write %s", path);
    return 0;
}

typedef struct build_batch {
    uint32_t count;
    berth_code predicted[BUILD_BATCH_RECORDS];
    uint64_t seq[BUILD_BATCH_RECORDS];
} build_batch;

typedef struct build_result {
    uint64_t commands;
    uint64_t mispredicted;          /* generator and engine disagree: a bug in one */
    uint64_t retries, conflicts;
    uint64_t refusals;
    uint64_t ns;
    uint64_t written_bytes;         /* write(2) bytes of all commits */
    uint8_t digest[BERTH_HASH_LEN]; /* the live state's digest at the end */
} build_result;

/* Staged results are final only after commit; compare them then. */
static int commit_batch(berth_engine *engine, build_batch *b, uint64_t *commit_index, build_result *r) {
    berth_jerr e = berth_engine_commit(engine, TIME_BASE_MS + (*commit_index)++);
    if (e != BERTH_J_OK) return fail("commit at seq %" PRIu64 ": %s", berth_engine_head_seq(engine),
                                     berth_jerr_name(e));
    b->count = 0;
    return 0;
}

static int submit_one(berth_engine *engine, const berth_gen_command *c, build_batch *b, uint64_t *commit_index,
                      build_result *r) {
    static berth_submit_result res;
    berth_str actor = berth_str_make(ACTOR, strlen(ACTOR));
    berth_engine_submit(engine, c->word_count, c->words, actor, &res);
    if (res.kind == BERTH_SUBMIT_BATCH_FULL) {
        if (commit_batch(engine, b, commit_index, r) != 0) return -1;
        berth_engine_submit(engine, c->word_count, c->words, actor, &res);
    }
    switch (res.kind) {
    case BERTH_SUBMIT_STAGED:
        if (c->expect != BERTH_GEN_EXPECT_APPLIED || res.code != c->code) r->mispredicted++;
        if (res.code != BERTH_OK) r->refusals++;
        b->count++;
        return 0;
    case BERTH_SUBMIT_RETRY:
        r->retries++;
        if (c->expect != BERTH_GEN_EXPECT_RETRY) r->mispredicted++;
        return 0;
    case BERTH_SUBMIT_CONFLICT:
        r->conflicts++;
        if (c->expect != BERTH_GEN_EXPECT_CONFLICT) r->mispredicted++;
        return 0;
    case BERTH_SUBMIT_SYNTAX:
        return fail("generated command %" PRIu64 " '%s' refused as syntax: %s", c->index, c->text, res.sentence);
    default:
        return fail("submit of command %" PRIu64 " failed (kind %d): %s", c->index, (int)res.kind, res.sentence);
    }
}

/* The build's rate and write volume per tenth of the journal: how the
 * engine's commit cost grows with the journal's size. */
typedef struct build_progress {
    uint64_t seq;
    uint64_t ns;
    uint64_t written;
} build_progress;

static void progress_maybe(const options *o, uint64_t head, build_progress *p) {
    uint64_t step = o->records / 10;
    if (step < BUILD_BATCH_RECORDS || head / step == p->seq / step) return;
    uint64_t ns = now_ns(), written = io_written_bytes();
    double records = (double)(head - p->seq);
    printf("  build at seq %9" PRIu64 ": %8.0f records/s, %7.0f bytes written per record over the last %.0f\n",
           head, records * 1e9 / (double)(ns - p->ns), (double)(written - p->written) / records, records);
    p->seq = head;
    p->ns = ns;
    p->written = written;
}

static int build_journal(const options *o, berth_journal *journal, build_result *r) {
    berth_gen_options go;
    berth_gen_options_default(&go, o->seed, o->workers);
    berth_gen *gen = NULL;
    char err[ERR_LEN_MAX];
    if (berth_gen_init(&gen, &go, err, sizeof err) != 0) return fail("generator: %s", err);
    berth_engine_options eo = { .snapshot_every = 0, .dry_run = false };
    berth_engine *engine = NULL;
    berth_jerr e = berth_engine_open(&engine, journal, &eo, NULL, err, sizeof err);
    if (e != BERTH_J_OK) {
        berth_gen_free(gen);
        return fail("engine open: %s: %s", berth_jerr_name(e), err);
    }
    static build_batch batch;
    static berth_gen_command c;
    uint64_t commit_index = 0;
    int rc = 0;
    uint64_t w0 = io_written_bytes();
    uint64_t t0 = now_ns();
    build_progress progress = { 0, t0, w0 };
    while (rc == 0 && berth_engine_head_seq(engine) + batch.count < o->records) {
        if (berth_gen_next(gen, &c) != 0) { rc = fail("generator out of memory"); break; }
        r->commands++;
        rc = submit_one(engine, &c, &batch, &commit_index, r);
        if (rc == 0 && batch.count == BUILD_BATCH_RECORDS) {
            rc = commit_batch(engine, &batch, &commit_index, r);
            progress_maybe(o, berth_engine_head_seq(engine), &progress);
        }
    }
    if (rc == 0 && batch.count > 0) rc = commit_batch(engine, &batch, &commit_index, r);
    r->ns = now_ns() - t0;
    r->written_bytes = io_written_bytes() - w0;
    if (rc == 0 && berth_engine_head_seq(engine) != o->records) {
        rc = fail("built %" PRIu64 " records, wanted %" PRIu64, berth_engine_head_seq(engine), o->records);
    }
    if (rc == 0 && berth_state_digest(berth_engine_state(engine), r->digest) != 0) rc = fail("digest: no memory");
    berth_engine_close(engine);
    berth_gen_free(gen);
    return rc;
}

/* ------------------------------------------------------------ ceilings */

typedef struct sample {
    uint8_t *bytes;
    size_t *offsets;                /* count + 1 entries */
    uint64_t count;
} sample;

static int scan_once(berth_journal_reader *reader, uint64_t expect, uint64_t *bytes_out, uint64_t *ns) {
    berth_journal_cursor *cur = NULL;
    berth_jerr e = berth_journal_cursor_open(reader, 1, &cur);
    if (e != BERTH_J_OK) return fail("cursor open: %s", berth_jerr_name(e));
    uint64_t n = 0, bytes = 0, seq;
    const uint8_t *raw;
    size_t len;
    uint64_t t0 = now_ns();
    while ((e = berth_journal_cursor_next_raw(cur, &seq, &raw, &len)) == BERTH_J_OK) {
        n++;
        bytes += len;
    }
    *ns = now_ns() - t0;
    berth_journal_cursor_close(cur);
    if (e != BERTH_J_NOTFOUND) return fail("scan stopped at record %" PRIu64 ": %s", n + 1, berth_jerr_name(e));
    if (n != expect) return fail("scan saw %" PRIu64 " records, journal has %" PRIu64, n, expect);
    *bytes_out = bytes;
    return 0;
}

static int sample_load(berth_journal_reader *reader, uint64_t count, uint64_t bytes_hint, sample *s) {
    s->count = count;
    s->offsets = malloc((count + 1) * sizeof *s->offsets);
    s->bytes = malloc(bytes_hint);
    if (s->offsets == NULL || s->bytes == NULL) return fail("no memory for a %" PRIu64 "-record sample", count);
    berth_journal_cursor *cur = NULL;
    berth_jerr e = berth_journal_cursor_open(reader, 1, &cur);
    if (e != BERTH_J_OK) return fail("cursor open: %s", berth_jerr_name(e));
    size_t at = 0;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t seq;
        const uint8_t *raw;
        size_t len;
        e = berth_journal_cursor_next_raw(cur, &seq, &raw, &len);
        if (e != BERTH_J_OK || at + len > bytes_hint) {
            berth_journal_cursor_close(cur);
            return fail("sample read stopped at record %" PRIu64 ": %s", i + 1, berth_jerr_name(e));
        }
        s->offsets[i] = at;
        memcpy(s->bytes + at, raw, len);
        at += len;
    }
    s->offsets[count] = at;
    berth_journal_cursor_close(cur);
    return 0;
}

static void sample_free(sample *s) {
    free(s->bytes);
    free(s->offsets);
}

static int decode_once(const sample *s, uint64_t *ns) {
    berth_record rec;
    char why[ERR_LEN_MAX];
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < s->count; i++) {
        const uint8_t *p = s->bytes + s->offsets[i];
        size_t len = s->offsets[i + 1] - s->offsets[i];
        if (berth_record_decode(p, len, &rec, why, sizeof why) != BERTH_J_OK) {
            return fail("sample record %" PRIu64 " does not decode: %s", i + 1, why);
        }
    }
    *ns = now_ns() - t0;
    return 0;
}

static int hash_once(const sample *s, uint64_t *ns) {
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < s->count; i++) {
        const uint8_t *p = s->bytes + s->offsets[i];
        size_t len = s->offsets[i + 1] - s->offsets[i];
        if (!berth_record_hash_ok(p, len)) return fail("sample record %" PRIu64 " fails its hash", i + 1);
    }
    *ns = now_ns() - t0;
    return 0;
}

/* ------------------------------------------------------------ replay, verify */

static int replay_once(berth_journal_reader *reader, uint64_t expect, const uint8_t *digest, uint64_t *ns,
                       cpu_mark *cpu0, cpu_mark *cpu1) {
    berth_state *state = NULL;
    berth_replay_stats stats;
    memset(&stats, 0, sizeof stats);
    char err[ERR_LEN_MAX];
    *cpu0 = cpu_now();
    uint64_t t0 = now_ns();
    berth_jerr e = berth_replay_to(reader, UINT64_MAX, false, &state, &stats, NULL, err, sizeof err);
    *ns = now_ns() - t0;
    *cpu1 = cpu_now();
    if (e != BERTH_J_OK) return fail("replay: %s: %s", berth_jerr_name(e), err);
    int rc = 0;
    uint8_t d[BERTH_HASH_LEN];
    if (berth_state_last_seq(state) != expect) rc = fail("replay ended at seq %" PRIu64, berth_state_last_seq(state));
    if (rc == 0 && berth_state_digest(state, d) != 0) rc = fail("digest: no memory");
    if (rc == 0 && memcmp(d, digest, BERTH_HASH_LEN) != 0) {
        char a[2 * BERTH_HASH_LEN + 1], b[2 * BERTH_HASH_LEN + 1];
        berth_hex(d, BERTH_HASH_LEN, a);
        berth_hex(digest, BERTH_HASH_LEN, b);
        rc = fail("replayed state digest %s differs from the live engine's %s", a, b);
    }
    berth_state_free(state);
    return rc;
}

static int verify_once(berth_journal_reader *reader, uint64_t expect, uint64_t *ns, cpu_mark *cpu0,
                       cpu_mark *cpu1) {
    static berth_verify_report report;
    *cpu0 = cpu_now();
    uint64_t t0 = now_ns();
    berth_jerr e = berth_verify(reader, &report);
    *ns = now_ns() - t0;
    *cpu1 = cpu_now();
    if (e != BERTH_J_OK) return fail("verify: %s", berth_jerr_name(e));
    if (!report.ok) return fail("verify: seq %" PRIu64 ": %s", report.first_bad_seq, report.what);
    if (report.records != expect) return fail("verify checked %" PRIu64 " records", report.records);
    return 0;
}

/* ------------------------------------------------------------ apply in memory */

/* The first records' commands, reqids and recorded codes, copied out of the
 * journal so the apply loop touches no LMDB page. */
typedef struct commands {
    char *text;
    uint64_t *cmd_off;              /* count + 1 */
    uint32_t *reqid_len;            /* reqid follows the command text */
    uint32_t *code;
    uint64_t count;
} commands;

static int commands_load(berth_journal_reader *reader, uint64_t count, commands *cs) {
    memset(cs, 0, sizeof *cs);
    size_t cap = (size_t)count * 128 + (1u << 20);
    cs->text = malloc(cap);
    cs->cmd_off = malloc((count + 1) * sizeof *cs->cmd_off);
    cs->reqid_len = malloc(count * sizeof *cs->reqid_len);
    cs->code = malloc(count * sizeof *cs->code);
    if (!cs->text || !cs->cmd_off || !cs->reqid_len || !cs->code) return fail("no memory for commands");
    berth_journal_cursor *cur = NULL;
    berth_jerr e = berth_journal_cursor_open(reader, 1, &cur);
    if (e != BERTH_J_OK) return fail("cursor open: %s", berth_jerr_name(e));
    size_t at = 0;
    berth_record rec;
    for (uint64_t i = 0; i < count; i++) {
        e = berth_journal_cursor_next(cur, &rec, NULL, NULL);
        size_t need = (size_t)rec.command.len + rec.reqid.len;
        while (e == BERTH_J_OK && at + need > cap) {
            char *grown = realloc(cs->text, cap * 2);
            if (grown == NULL) { e = BERTH_J_NOMEM; break; }
            cs->text = grown;
            cap *= 2;
        }
        if (e != BERTH_J_OK) {
            berth_journal_cursor_close(cur);
            return fail("reading commands stopped at record %" PRIu64 ": %s", i + 1, berth_jerr_name(e));
        }
        cs->cmd_off[i] = at;
        memcpy(cs->text + at, rec.command.ptr, rec.command.len);
        memcpy(cs->text + at + rec.command.len, rec.reqid.ptr, rec.reqid.len);
        cs->reqid_len[i] = rec.reqid.len;
        cs->code[i] = rec.code;
        at += need;
    }
    cs->cmd_off[count] = at;
    cs->count = count;
    berth_journal_cursor_close(cur);
    return 0;
}

static void commands_free(commands *cs) {
    free(cs->text);
    free(cs->cmd_off);
    free(cs->reqid_len);
    free(cs->code);
}

/* What replay does per record, minus the journal: parse the canonical text,
 * restore its REQID, check the window, apply. quiet: replay's apply, which
 * writes no sentence; else berthd's, which does. */
static int apply_once(const commands *cs, bool quiet, uint64_t *ns) {
    berth_state *state = berth_state_new(NULL);
    if (state == NULL) return fail("no memory for a state");
    static berth_cmd cmd;
    static berth_outcome out;
    static berth_str words[BERTH_ARGS_MAX];
    char err[BERTH_ERR_LEN_MAX];
    int rc = 0;
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < cs->count && rc == 0; i++) {
        const char *text = cs->text + cs->cmd_off[i];
        size_t len = cs->cmd_off[i + 1] - cs->cmd_off[i] - cs->reqid_len[i];
        if (berth_cmd_parse_text(&cmd, text, len, words, BERTH_ARGS_MAX, err, sizeof err) != 0) {
            rc = fail("record %" PRIu64 " does not parse: %s", i + 1, err);
            break;
        }
        cmd.reqid = berth_str_make(text + len, cs->reqid_len[i]);
        berth_str canonical = berth_str_make(text, len);
        if (cmd.reqid.len > 0) {
            berth_reqid_entry hit;
            if (berth_state_reqid_check(state, cmd.reqid, canonical, &hit) != BERTH_REQID_NEW) {
                rc = fail("record %" PRIu64 " repeats a REQID", i + 1);
                break;
            }
        }
        int ar = quiet ? berth_state_apply_quiet(state, &cmd, canonical, i + 1, &out)
                       : berth_state_apply(state, &cmd, canonical, i + 1, &out);
        if (ar != 0) rc = fail("apply: no memory");
        else if ((uint32_t)out.code != cs->code[i]) rc = fail("record %" PRIu64 " outcome differs", i + 1);
    }
    *ns = now_ns() - t0;
    berth_state_free(state);
    return rc;
}

/* ------------------------------------------------------------ append */

typedef struct append_source {
    berth_record *records;          /* decoded from the sample; strings point into it */
    uint64_t count;
} append_source;

static int append_source_load(const sample *s, append_source *src) {
    src->count = s->count < APPEND_SOURCE_RECORDS_MAX ? s->count : APPEND_SOURCE_RECORDS_MAX;
    src->records = malloc(src->count * sizeof *src->records);
    if (src->records == NULL) return fail("no memory for append records");
    char why[ERR_LEN_MAX];
    for (uint64_t i = 0; i < src->count; i++) {
        const uint8_t *p = s->bytes + s->offsets[i];
        if (berth_record_decode(p, s->offsets[i + 1] - s->offsets[i], &src->records[i], why, sizeof why) != BERTH_J_OK) {
            return fail("append source record %" PRIu64 ": %s", i + 1, why);
        }
    }
    return 0;
}

/* The next batch after seq (at most batch records, none past total): the
 * source's records cycled, with new seqs. Returns how many. */
static uint32_t append_fill(const append_source *src, berth_record *buf, uint64_t seq,
                            uint64_t total, uint32_t batch) {
    uint32_t n = (uint32_t)(total - seq < batch ? total - seq : batch);
    for (uint32_t i = 0; i < n; i++) {
        buf[i] = src->records[(seq + i) % src->count];
        buf[i].seq = seq + i + 1;
    }
    return n;
}

/* Append `total` records in batches of `batch` into a fresh journal in dir,
 * durably, timing only the appends. one_sync: berthd's mode
 * (defer_meta_sync: one disk sync a commit, each commit's making the one
 * before it durable), with a berth_journal_sync at the end inside the
 * timing, so every record counted is durable; otherwise the store's
 * default (two syncs a commit, durable on return: the target's line). */
/* A fresh journal in dir; one_sync: opened with defer_meta_sync. */
static int journal_fresh(const char *dir, bool one_sync, berth_journal **j) {
    if (remove_tree(dir) != 0) return -1;
    char err[ERR_LEN_MAX];
    berth_journal_options jo;
    memset(&jo, 0, sizeof jo);
    jo.defer_meta_sync = one_sync;
    berth_jerr e = berth_journal_open_lmdb(j, dir, &jo, err, sizeof err);
    if (e != BERTH_J_OK) return fail("open %s: %s: %s", dir, berth_jerr_name(e), err);
    return 0;
}

static int append_once(const append_source *src, const char *dir, uint32_t batch, uint64_t total, bool one_sync,
                       uint64_t *ns, uint64_t *written, cpu_mark *c0, cpu_mark *c1) {
    berth_journal *j = NULL;
    if (journal_fresh(dir, one_sync, &j) != 0) return -1;
    berth_jerr e;
    static berth_record buf[BERTH_BATCH_RECORDS_MAX];
    assert(batch <= BERTH_BATCH_RECORDS_MAX);
    uint64_t seq = 0;
    int rc = 0;
    uint64_t w0 = io_written_bytes();
    *c0 = cpu_now();
    uint64_t t0 = now_ns();
    while (seq < total && rc == 0) {
        uint32_t n = append_fill(src, buf, seq, total, batch);
        e = berth_journal_append(j, buf, NULL, n);
        if (e != BERTH_J_OK) rc = fail("append at seq %" PRIu64 ": %s", seq + 1, berth_jerr_name(e));
        seq += n;
    }
    if (rc == 0 && one_sync) {
        e = berth_journal_sync(j);
        uint64_t durable = 0;
        if (e == BERTH_J_OK) e = berth_journal_durable(j, &durable);
        if (e != BERTH_J_OK) rc = fail("sync: %s", berth_jerr_name(e));
        else if (durable != total) rc = fail("durable seq %" PRIu64 " after the sync, not %" PRIu64, durable, total);
    }
    *ns = now_ns() - t0;
    *c1 = cpu_now();
    *written = io_written_bytes() - w0;
    berth_journal_close(j);
    if (remove_tree(dir) != 0) return -1;
    return rc;
}

/* Append `total` records in batches of `batch` into a fresh journal in dir
 * through an appender (journal/appender.h): this thread encodes the next
 * batch while the appender's thread commits the one before. one_sync: the
 * journal opened with defer_meta_sync (one sync a commit); otherwise the
 * store's default (two). Either way a batch's wait says OK only once it is
 * durable, and the timing ends when the last batch's wait returned, so
 * every record counted is durable. */
static int append_once_appender(const append_source *src, const char *dir, uint32_t batch,
                                uint64_t total, bool one_sync, uint64_t *ns, uint64_t *written,
                                cpu_mark *c0, cpu_mark *c1, uint64_t *commits) {
    berth_journal *j = NULL;
    if (journal_fresh(dir, one_sync, &j) != 0) return -1;
    berth_appender *ap = NULL;
    berth_jerr e = berth_appender_open(&ap, j);
    if (e != BERTH_J_OK) {
        berth_journal_close(j);
        return fail("appender on %s: %s", dir, berth_jerr_name(e));
    }
    static berth_record buf[BERTH_BATCH_RECORDS_MAX];
    assert(batch <= BERTH_BATCH_RECORDS_MAX);
    uint64_t seq = 0, acked = 0;
    int rc = 0;
    uint64_t w0 = io_written_bytes();
    *c0 = cpu_now();
    uint64_t t0 = now_ns();
    while (rc == 0 && (seq < total || berth_appender_in_flight(ap) > 0)) {
        if (seq == total || berth_appender_in_flight(ap) == BERTH_APPENDER_DEPTH) {
            e = berth_appender_wait(ap, &acked);
            if (e != BERTH_J_OK) rc = fail("appender batch after seq %" PRIu64 ": %s", acked, berth_jerr_name(e));
            continue;
        }
        uint32_t n = append_fill(src, buf, seq, total, batch);
        e = berth_appender_submit(ap, buf, NULL, n);
        if (e != BERTH_J_OK) rc = fail("appender submit at seq %" PRIu64 ": %s", seq + 1, berth_jerr_name(e));
        seq += n;
    }
    *ns = now_ns() - t0;
    *c1 = cpu_now();
    *written = io_written_bytes() - w0;
    *commits += berth_appender_commits(ap);
    berth_appender_close(ap);
    uint64_t durable = 0;
    if (rc == 0 && (berth_journal_durable(j, &durable) != BERTH_J_OK || durable != total || acked != total)) {
        rc = fail("durable seq %" PRIu64 " (acknowledged %" PRIu64 ") after the appender, not %" PRIu64,
                  durable, acked, total);
    }
    berth_journal_close(j);
    if (remove_tree(dir) != 0) return -1;
    return rc;
}

/* berthd's road for a batch (tools/batch.c, "The commit log"): the
 * appending thread makes each batch durable as one frame of the commit log
 * and seals a file for the checkpointer thread when CLOG_SEAL_RECORDS
 * records wait in it (or it is half full) and the checkpointer is free;
 * the checkpointer moves sealed files into LMDB meanwhile. When the
 * active file is full (the checkpointer fell behind), the appending thread
 * waits for it and checkpoints both files itself, as berthd's committer
 * does, and counts it. */
#define CLOG_SEAL_RECORDS 4096u
#define CLOG_FILE_BYTES ((uint64_t)64 << 20)   /* berthd's default, each file */

typedef struct clog_mover {
    berth_clog *log;
    berth_journal *journal;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool work;                      /* a sealed file waits for the mover */
    bool busy;                      /* handed and not finished */
    bool stop;
    berth_jerr err;                 /* the first failure */
    char why[ERR_LEN_MAX];
    uint64_t full_checkpoints;      /* the appending thread's, for a full active file */
} clog_mover;

static void *clog_mover_main(void *arg) {
    clog_mover *m = arg;
    pthread_mutex_lock(&m->mu);
    for (;;) {
        while (!m->work && !m->stop) pthread_cond_wait(&m->cv, &m->mu);
        if (!m->work) break;
        m->work = false;
        pthread_mutex_unlock(&m->mu);
        char why[ERR_LEN_MAX] = "";
        berth_jerr e = berth_clog_checkpoint_sealed(m->log, m->journal, NULL, why, sizeof why);
        pthread_mutex_lock(&m->mu);
        if (e != BERTH_J_OK && m->err == BERTH_J_OK) {
            m->err = e;
            snprintf(m->why, sizeof m->why, "%s", why);
        }
        m->busy = false;
        pthread_cond_broadcast(&m->cv);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

/* Appending thread: hand the active file to the mover when it is free and
 * the file holds enough; returns the records still waiting in the active
 * file (0 after a hand-off). */
static uint64_t clog_maybe_seal(clog_mover *m, uint64_t waiting) {
    bool half = berth_clog_active_used_bytes(m->log) >= berth_clog_active_size_bytes(m->log) / 2;
    if (waiting < CLOG_SEAL_RECORDS && !half) return waiting;
    pthread_mutex_lock(&m->mu);
    bool idle = !m->busy && m->err == BERTH_J_OK;
    pthread_mutex_unlock(&m->mu);
    if (!idle || !berth_clog_seal(m->log)) return waiting;
    pthread_mutex_lock(&m->mu);
    m->work = true;
    m->busy = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    return 0;
}

/* Appending thread, when the active file had no room for a frame: wait
 * for the checkpointer, then move both files into LMDB (berthd's committer
 * on a full active file), so the append can be retried from offset 0. */
static berth_jerr clog_make_room(clog_mover *m, char *err, size_t err_size) {
    pthread_mutex_lock(&m->mu);
    while (m->busy) pthread_cond_wait(&m->cv, &m->mu);
    berth_jerr moved = m->err;
    pthread_mutex_unlock(&m->mu);
    if (moved != BERTH_J_OK) {
        snprintf(err, err_size, "checkpointer: %.900s", m->why);
        return moved;
    }
    m->full_checkpoints++;
    return berth_clog_checkpoint(m->log, m->journal, NULL, err, err_size);
}

static int clog_open_fresh(const char *dir, berth_journal **j, berth_clog **log) {
    char err[ERR_LEN_MAX];
    berth_journal_options jo;
    memset(&jo, 0, sizeof jo);
    jo.defer_meta_sync = true;   /* as berthd opens it: a checkpoint ends with a sync */
    berth_jerr e = berth_journal_open_lmdb(j, dir, &jo, err, sizeof err);
    if (e != BERTH_J_OK) return fail("open %s: %s: %s", dir, berth_jerr_name(e), err);
    e = berth_clog_open(log, dir, CLOG_FILE_BYTES, err, sizeof err);
    if (e == BERTH_J_OK) e = berth_clog_checkpoint(*log, *j, NULL, err, sizeof err);
    if (e != BERTH_J_OK) {
        if (*log != NULL) berth_clog_close(*log);
        berth_journal_close(*j);
        return fail("commit log in %s: %s: %s", dir, berth_jerr_name(e), err);
    }
    return 0;
}

/* Append `total` records in batches of `batch` on berthd's road (above)
 * into a fresh journal and log in dir. The timing covers the appends and
 * the last checkpoint (after the mover finished), so every record counted
 * is durable in the log when its append returns and in LMDB at the end.
 * Creating the files (zero-filled) is outside it, as at berthd's start. */
static int append_once_clog(const append_source *src, const char *dir, uint32_t batch, uint64_t total,
                            uint64_t *ns, uint64_t *written, cpu_mark *c0, cpu_mark *c1,
                            uint64_t *full_checkpoints) {
    if (remove_tree(dir) != 0) return -1;
    berth_journal *j = NULL;
    berth_clog *log = NULL;
    if (clog_open_fresh(dir, &j, &log) != 0) return -1;
    static clog_mover m;
    memset(&m, 0, sizeof m);
    m.log = log;
    m.journal = j;
    pthread_mutex_init(&m.mu, NULL);
    pthread_cond_init(&m.cv, NULL);
    pthread_t mover;
    if (pthread_create(&mover, NULL, clog_mover_main, &m) != 0) {
        berth_clog_close(log);
        berth_journal_close(j);
        return fail("cannot start the checkpointer thread");
    }
    static berth_record buf[BERTH_BATCH_RECORDS_MAX];
    assert(batch <= BERTH_BATCH_RECORDS_MAX);
    uint64_t seq = 0, waiting = 0;
    int rc = 0;
    char err[ERR_LEN_MAX] = "";
    uint64_t w0 = io_written_bytes();
    *c0 = cpu_now();
    uint64_t t0 = now_ns();
    while (seq < total && rc == 0) {
        uint32_t n = append_fill(src, buf, seq, total, batch);
        berth_jerr e = berth_clog_append(log, buf, NULL, n);
        if (e == BERTH_J_FULL) {
            e = clog_make_room(&m, err, sizeof err);
            if (e != BERTH_J_OK) {
                rc = fail("full checkpoint at seq %" PRIu64 ": %s: %s", seq + 1, berth_jerr_name(e), err);
                break;
            }
            waiting = 0;
            e = berth_clog_append(log, buf, NULL, n);
        }
        if (e != BERTH_J_OK) rc = fail("log append at seq %" PRIu64 ": %s", seq + 1, berth_jerr_name(e));
        seq += n;
        waiting = clog_maybe_seal(&m, waiting + n);
    }
    pthread_mutex_lock(&m.mu);
    while (m.busy) pthread_cond_wait(&m.cv, &m.mu);
    m.stop = true;
    pthread_cond_broadcast(&m.cv);
    berth_jerr moved = m.err;
    pthread_mutex_unlock(&m.mu);
    pthread_join(mover, NULL);
    if (rc == 0 && moved != BERTH_J_OK) rc = fail("checkpointer: %s: %s", berth_jerr_name(moved), m.why);
    if (rc == 0) {
        berth_jerr e = berth_clog_checkpoint(log, j, NULL, err, sizeof err);
        if (e != BERTH_J_OK) rc = fail("last checkpoint: %s: %s", berth_jerr_name(e), err);
    }
    *ns = now_ns() - t0;
    *c1 = cpu_now();
    *written = io_written_bytes() - w0;
    uint64_t head = 0;
    uint8_t hash[BERTH_HASH_LEN];
    if (rc == 0 && (berth_journal_head(j, &head, hash) != BERTH_J_OK || head != total)) {
        rc = fail("LMDB's head is %" PRIu64 " after the last checkpoint, not %" PRIu64, head, total);
    }
    *full_checkpoints += m.full_checkpoints;
    pthread_cond_destroy(&m.cv);
    pthread_mutex_destroy(&m.mu);
    berth_clog_close(log);
    berth_journal_close(j);
    if (remove_tree(dir) != 0) return -1;
    return rc;
}

/* ------------------------------------------------------------ memory */

/* Counts the bytes the state asks for (not malloc's own overhead): each
 * block carries its size in a header so free and realloc can subtract. */
typedef struct counting {
    uint64_t live_bytes;
    uint64_t live_blocks;
} counting;

typedef union block_header {
    size_t size;
    max_align_t align;
} block_header;

static void *count_alloc(void *ctx, size_t size) {
    counting *c = ctx;
    block_header *h = malloc(sizeof *h + size);
    if (h == NULL) return NULL;
    h->size = size;
    c->live_bytes += size;
    c->live_blocks++;
    return h + 1;
}

static void count_free(void *ctx, void *ptr) {
    if (ptr == NULL) return;
    counting *c = ctx;
    block_header *h = (block_header *)ptr - 1;
    assert(c->live_bytes >= h->size && c->live_blocks > 0);
    c->live_bytes -= h->size;
    c->live_blocks--;
    free(h);
}

static void *count_realloc(void *ctx, void *ptr, size_t size) {
    if (ptr == NULL) return count_alloc(ctx, size);
    counting *c = ctx;
    block_header *h = (block_header *)ptr - 1;
    size_t old = h->size;
    block_header *g = realloc(h, sizeof *g + size);
    if (g == NULL) return NULL;
    g->size = size;
    c->live_bytes = c->live_bytes - old + size;
    return g + 1;
}

/* Release every live instance and count the bytes that come back: what an
 * instance itself owns, apart from the tables and windows around it. */
static int release_all(berth_state *state, const counting *c, uint64_t *freed) {
    size_t n = berth_state_instance_count(state);
    const berth_instance **list = malloc(n * sizeof *list);
    char *texts = malloc(n * (BERTH_NAME_LEN_MAX + 16));
    uint32_t *lens = malloc(n * sizeof *lens);
    int rc = 0;
    if (list == NULL || texts == NULL || lens == NULL) rc = fail("no memory for the release list");
    if (rc == 0 && berth_state_instances_sorted(state, list, n) != n) rc = fail("instance list short");
    for (size_t i = 0; i < n && rc == 0; i++) {
        /* Copy the names first: a RELEASE frees the name it was given. */
        int len = snprintf(texts + i * (BERTH_NAME_LEN_MAX + 16), BERTH_NAME_LEN_MAX + 16, "RELEASE %.*s",
                           (int)list[i]->name.len, list[i]->name.ptr);
        lens[i] = (uint32_t)len;
    }
    uint64_t before = c->live_bytes;
    static berth_cmd cmd;
    static berth_outcome out;
    static berth_str words[BERTH_ARGS_MAX];
    char err[BERTH_ERR_LEN_MAX];
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *text = texts + i * (BERTH_NAME_LEN_MAX + 16);
        if (berth_cmd_parse_text(&cmd, text, lens[i], words, BERTH_ARGS_MAX, err, sizeof err) != 0) {
            rc = fail("'%.*s': %s", (int)lens[i], text, err);
        } else if (berth_state_apply(state, &cmd, berth_str_make(text, lens[i]), berth_state_last_seq(state) + 1,
                                     &out) != 0 || out.code != BERTH_OK) {
            rc = fail("'%.*s' was not applied: %s", (int)lens[i], text, out.sentence);
        }
    }
    /* Released blocks wait in the state's spare lists for later DEPLOYs;
     * trim hands them back, so what comes back is what instances owned. */
    berth_state_trim(state);
    *freed = before > c->live_bytes ? before - c->live_bytes : 0;
    if (rc == 0 && berth_state_instance_count(state) != 0) rc = fail("instances remain after releasing all");
    free(list);
    free(texts);
    free(lens);
    return rc;
}

static int measure_memory(berth_journal_reader *reader, const options *o) {
    counting c = { 0, 0 };
    berth_allocator a = { count_alloc, count_realloc, count_free, &c };
    berth_state *state = berth_state_new(&a);
    if (state == NULL) return fail("no memory for a state");
    uint64_t empty = c.live_bytes, empty_blocks = c.live_blocks;
    char err[ERR_LEN_MAX];
    berth_replay_stats stats;
    memset(&stats, 0, sizeof stats);
    /* The first `workers` records are the WORKER.ADDs: the fleet, empty. */
    berth_jerr e = berth_replay_forward(reader, state, o->workers, &stats, err, sizeof err);
    if (e != BERTH_J_OK) { berth_state_free(state); return fail("replay to the fleet: %s", err); }
    uint64_t fleet = c.live_bytes, fleet_blocks = c.live_blocks - empty_blocks;
    e = berth_replay_forward(reader, state, UINT64_MAX, &stats, err, sizeof err);
    if (e != BERTH_J_OK) { berth_state_free(state); return fail("replay to head: %s", err); }
    uint64_t full = c.live_bytes;
    size_t workers = berth_state_worker_count(state);
    size_t instances = berth_state_instance_count(state);
    size_t reqids = berth_state_reqid_count(state);
    printf("memory (a counting berth_allocator: the bytes the state asked for and still holds; RSS is\n"
           "        not used because freed heap stays resident after the earlier replays):\n");
    printf("  empty state                        %10" PRIu64 " bytes\n", empty);
    printf("  after %u WORKER.ADD                %10" PRIu64 " bytes  -> %.0f bytes per worker (hash tables, "
           "names, labels, GPUs)\n", o->workers, fleet, (double)(fleet - empty) / o->workers);
    printf("  at head: %zu workers, %zu instances, %zu request ids: %" PRIu64 " bytes in %" PRIu64 " blocks\n",
           workers, instances, reqids, full, c.live_blocks);
    if (instances > 0 && full > fleet) {
        printf("  -> %.0f bytes per live instance (growth past the fleet / instances; includes the request-id "
               "window and served lists)\n", (double)(full - fleet) / (double)instances);
    }
    uint64_t owned = 0, owned_blocks = c.live_blocks;
    if (instances > 0 && release_all(state, &c, &owned) != 0) {
        berth_state_free(state);
        return -1;
    }
    owned_blocks -= c.live_blocks;
    if (instances > 0) {
        printf("  -> %.0f bytes each live instance owns (freed by releasing all %zu; hash-table slots and "
               "served-list capacity stay)\n", (double)owned / (double)instances, instances);
    }
    printf("  glibc malloc adds about %d bytes per block: %.0f bytes per worker, %.0f per instance with it\n",
           MALLOC_BLOCK_OVERHEAD, (double)(fleet - empty + fleet_blocks * MALLOC_BLOCK_OVERHEAD) / o->workers,
           instances > 0 ? (double)(owned + owned_blocks * MALLOC_BLOCK_OVERHEAD) / (double)instances : 0.0);
    berth_state_free(state);
    if (c.live_bytes != 0) return fail("state leaked %" PRIu64 " bytes after free", c.live_bytes);
    return 0;
}

/* ------------------------------------------------------------ main */

static int usage(void) {
    fprintf(stderr, "usage: bench_engine [--records N] [--workers W] [--data DIR] [--runs R] [--seed S] [--keep]\n"
                    "                    [--only ceilings,replay,verify,apply,append,memory]\n"
                    "                    [--append-batch 1|64|1024|4096]\n");
    return 2;
}

/* "replay,verify" -> PHASE_REPLAY | PHASE_VERIFY. */
static int parse_phases(const char *text, uint32_t *out) {
    *out = 0;
    const char *p = text;
    while (*p) {
        size_t len = strcspn(p, ",");
        bool known = false;
        for (size_t i = 0; i < sizeof phase_names / sizeof phase_names[0]; i++) {
            if (strlen(phase_names[i].name) == len && strncmp(p, phase_names[i].name, len) == 0) {
                *out |= phase_names[i].bit;
                known = true;
            }
        }
        if (!known) return fail("--only: unknown phase '%.*s' (ceilings, replay, verify, apply, append, memory)",
                                (int)len, p);
        p += len + (p[len] == ',');
    }
    return *out ? 0 : -1;
}

static bool append_batch_known(uint64_t v) {
    for (uint32_t k = 0; k < APPEND_SIZES; k++) {
        if (append_batch_sizes[k] == v) return true;
    }
    return false;
}

static bool parse_u64_arg(const char *text, uint64_t *out) {
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-') return false;
    *out = v;
    return true;
}

static int parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->records = RECORDS_DEFAULT;
    o->workers = WORKERS_DEFAULT;
    o->runs = RUNS_DEFAULT;
    o->seed = SEED_DEFAULT;
    o->phases = PHASE_ALL;
    for (int i = 1; i < argc; i++) {
        uint64_t v = 0;
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        if (strcmp(a, "--keep") == 0) { o->keep = true; continue; }
        if (!has_value) return -1;
        const char *val = argv[++i];
        if (strcmp(a, "--only") == 0) {
            if (parse_phases(val, &o->phases) != 0) return -1;
        } else if (strcmp(a, "--data") == 0) {
            if (strlen(val) >= PATH_LEN_MAX - 64) return -1;
            snprintf(o->data, sizeof o->data, "%s", val);
            o->data_given = true;
        } else if (!parse_u64_arg(val, &v)) {
            return -1;
        } else if (strcmp(a, "--records") == 0) {
            o->records = v;
        } else if (strcmp(a, "--workers") == 0 && v <= BERTH_GEN_WORKERS_MAX) {
            o->workers = (uint32_t)v;
        } else if (strcmp(a, "--runs") == 0 && v >= 1 && v <= RUNS_MAX) {
            o->runs = (uint32_t)v;
        } else if (strcmp(a, "--seed") == 0) {
            o->seed = v;
        } else if (strcmp(a, "--append-batch") == 0 && append_batch_known(v)) {
            o->append_batch = (uint32_t)v;
        } else {
            return -1;
        }
    }
    if (o->workers < 1 || o->records <= o->workers) {
        return fail("--records (%" PRIu64 ") must exceed --workers (%u): the fleet is added first",
                    o->records, o->workers);
    }
    return 0;
}

typedef struct results {
    figure scan, decode, hash, replay, verify, apply, apply_quiet;
    figure append[APPEND_SIZES];
    figure append_one_sync;         /* batch APPEND_ONE_SYNC_BATCH, defer_meta_sync */
    figure append_clog;             /* batch APPEND_ONE_SYNC_BATCH, berthd's road */
    figure append_appender;             /* batch APPEND_ONE_SYNC_BATCH, through an appender */
    figure append_appender_one_sync;    /* the same, defer_meta_sync */
    uint64_t journal_bytes;
} results;

static int measure_ceilings(const options *o, berth_journal_reader *reader, results *res, sample *s) {
    uint64_t ns = 0, bytes = 0;
    uint32_t runs = o->phases & PHASE_CEILINGS ? o->runs : 1;
    for (uint32_t r = 0; r < runs; r++) {
        if (scan_once(reader, o->records, &bytes, &ns) != 0) return -1;
        if (o->phases & PHASE_CEILINGS) figure_add(&res->scan, o->records, ns);
    }
    res->journal_bytes = bytes;
    uint64_t n = o->records < SAMPLE_RECORDS_MAX ? o->records : SAMPLE_RECORDS_MAX;
    uint64_t hint = bytes / o->records * n * 2 + (1u << 20);
    if (sample_load(reader, n, hint, s) != 0) return -1;
    for (uint32_t r = 0; r < o->runs && (o->phases & PHASE_CEILINGS); r++) {
        if (decode_once(s, &ns) != 0) return -1;
        figure_add(&res->decode, n, ns);
        if (hash_once(s, &ns) != 0) return -1;
        figure_add(&res->hash, n, ns);
    }
    return 0;
}

static int measure_apply(const options *o, berth_journal_reader *reader, results *res) {
    static commands cs;
    uint64_t ns = 0;
    uint64_t an = o->records < APPLY_RECORDS_MAX ? o->records : APPLY_RECORDS_MAX;
    int rc = commands_load(reader, an, &cs);
    for (uint32_t r = 0; r < o->runs && rc == 0; r++) {
        rc = apply_once(&cs, false, &ns);
        if (rc == 0) figure_add(&res->apply, an, ns);
        if (rc == 0) rc = apply_once(&cs, true, &ns);
        if (rc == 0) figure_add(&res->apply_quiet, an, ns);
    }
    commands_free(&cs);
    return rc;
}

/* The roads measured at batch APPEND_ONE_SYNC_BATCH, beside the default. */
enum { ROAD_DEFAULT, ROAD_ONE_SYNC, ROAD_CLOG, ROAD_APPENDER, ROAD_APPENDER_ONE_SYNC, ROADS };

static figure *road_figure(results *res, uint32_t k, uint32_t road) {
    figure *const f[ROADS] = { &res->append[k], &res->append_one_sync, &res->append_clog,
                               &res->append_appender, &res->append_appender_one_sync };
    return f[road];
}

static int road_once(const append_source *src, const char *dir, uint32_t batch, uint64_t total,
                     uint32_t road, results *res, uint64_t *ns, uint64_t *written, cpu_mark *c0,
                     cpu_mark *c1) {
    switch (road) {
    case ROAD_DEFAULT: return append_once(src, dir, batch, total, false, ns, written, c0, c1);
    case ROAD_ONE_SYNC: return append_once(src, dir, batch, total, true, ns, written, c0, c1);
    case ROAD_CLOG:
        return append_once_clog(src, dir, batch, total, ns, written, c0, c1,
                                &res->append_clog.full_checkpoints);
    case ROAD_APPENDER:
        return append_once_appender(src, dir, batch, total, false, ns, written, c0, c1,
                                    &res->append_appender.commits);
    default:
        return append_once_appender(src, dir, batch, total, true, ns, written, c0, c1,
                                    &res->append_appender_one_sync.commits);
    }
}

/* Each batch size's runs; at APPEND_ONE_SYNC_BATCH every road in each run,
 * alternated so all see the same disk, and starting one road later each
 * run: a road that follows the heaviest writer (the commit log's) is slowed
 * by the disk's write-back of it, and no road should always be the one. */
static int measure_append(const options *o, const sample *s, results *res) {
    static append_source src;
    uint64_t ns = 0;
    int rc = append_source_load(s, &src);
    for (uint32_t k = 0; k < APPEND_SIZES && rc == 0; k++) {
        if (o->append_batch != 0 && append_batch_sizes[k] != o->append_batch) continue;
        char dir[PATH_LEN_MAX], name[64];
        snprintf(name, sizeof name, "append-b%u", append_batch_sizes[k]);
        rc = path_join(dir, o->data, name);
        uint64_t total = append_records_max[k];
        if (total > o->records) total = o->records;
        uint32_t roads = append_batch_sizes[k] == APPEND_ONE_SYNC_BATCH ? ROADS : 1;
        for (uint32_t r = 0; r < o->runs && rc == 0; r++) {
            for (uint32_t i = 0; i < roads && rc == 0; i++) {
                uint32_t road = (r + i) % roads;
                figure *f = road_figure(res, k, road);
                uint64_t written = 0;
                cpu_mark c0 = { 0, 0 }, c1 = { 0, 0 };
                rc = road_once(&src, dir, append_batch_sizes[k], total, road, res, &ns, &written,
                               &c0, &c1);
                if (rc == 0) figure_add(f, total, ns);
                if (rc == 0) figure_add_cpu(f, total, c0, c1);
                f->written_bytes += written;
            }
        }
    }
    free(src.records);
    return rc;
}

static int measure_reads(const options *o, berth_journal_reader *reader, const build_result *b, results *res) {
    static sample s;
    uint64_t ns = 0;
    cpu_mark c0, c1;
    int rc = measure_ceilings(o, reader, res, &s);
    for (uint32_t r = 0; r < o->runs && rc == 0 && (o->phases & PHASE_REPLAY); r++) {
        rc = replay_once(reader, o->records, b->digest, &ns, &c0, &c1);
        if (rc == 0) figure_add(&res->replay, o->records, ns);
        if (rc == 0) figure_add_cpu(&res->replay, o->records, c0, c1);
    }
    for (uint32_t r = 0; r < o->runs && rc == 0 && (o->phases & PHASE_VERIFY); r++) {
        rc = verify_once(reader, o->records, &ns, &c0, &c1);
        if (rc == 0) figure_add(&res->verify, o->records, ns);
        if (rc == 0) figure_add_cpu(&res->verify, o->records, c0, c1);
    }
    if (rc == 0 && (o->phases & PHASE_APPLY)) rc = measure_apply(o, reader, res);
    if (rc == 0 && (o->phases & PHASE_APPEND)) rc = measure_append(o, &s, res);
    sample_free(&s);
    return rc;
}

static double inverse_sum(const figure *const *stages, uint32_t n) {
    double sum = 0;
    for (uint32_t i = 0; i < n; i++) sum += 1.0 / figure_median(stages[i]);
    return sum;
}

static bool all_measured(const figure *const *stages, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        if (stages[i]->runs == 0) return false;
    }
    return true;
}

/* A record costs the sum of its stages' times on one core; on two cores at
 * best half that, and never less than apply's time, since apply runs in seq
 * order on one thread. */
static void ceiling_text(const figure *const *stages, uint32_t n, const figure *apply, const char *what,
                         char *out, size_t size) {
    out[0] = '\0';
    if (!all_measured(stages, n)) return;
    double one = 1.0 / inverse_sum(stages, n), two = 2.0 / inverse_sum(stages, n);
    double apply_rate = figure_median(apply);
    if (two > apply_rate) two = apply_rate;
    snprintf(out, size, "%.2fM/s on 1 core (%s in series), %.2fM/s on 2 cores (split, bounded by apply)",
             one / 1e6, what, two / 1e6);
}

static void print_results(const options *o, const results *res) {
    printf("figures (records/s unless noted; median of runs, min..max, spread = (max-min)/median):\n");
    figure_print(&res->scan, "rec/s", 0, NULL);
    figure_print(&res->decode, "rec/s", 0, NULL);
    figure_print(&res->hash, "rec/s", 0, NULL);
    figure_print(&res->apply, "cmd/s", 0, NULL);
    figure_print(&res->apply_quiet, "cmd/s", 0, NULL);
    const figure *replay_stages[3] = { &res->scan, &res->decode, &res->apply_quiet };
    const figure *verify_stages[4] = { &res->scan, &res->decode, &res->hash, &res->apply_quiet };
    char text[LINE_LEN_MAX];
    ceiling_text(replay_stages, 3, &res->apply_quiet, "scan+decode+quiet apply", text, sizeof text);
    figure_print(&res->replay, "rec/s", TARGET_REPLAY, text);
    ceiling_text(verify_stages, 4, &res->apply_quiet, "scan+decode+hash+quiet apply", text, sizeof text);
    figure_print(&res->verify, "rec/s", TARGET_VERIFY, text);
    for (uint32_t k = 0; k < APPEND_SIZES; k++) {
        text[0] = '\0';
        if (append_batch_sizes[k] == 1024 && res->hash.runs > 0) {
            snprintf(text, sizeof text, "%.2fM/s hashing on 1 core (SHA-256 alone; encode and the fsync come on top)",
                     figure_median(&res->hash) / 1e6);
        }
        figure_print(&res->append[k], "rec/s", append_batch_sizes[k] == 1024 ? TARGET_APPEND_1024 : 0, text);
        if (append_batch_sizes[k] == APPEND_ONE_SYNC_BATCH) {
            figure_print(&res->append_one_sync, "rec/s", 0, NULL);
            figure_print(&res->append_clog, "rec/s", 0, NULL);
            figure_print(&res->append_appender, "rec/s", TARGET_APPEND_1024, NULL);
            figure_print(&res->append_appender_one_sync, "rec/s", TARGET_APPEND_1024, NULL);
        }
    }
    printf("journal: %" PRIu64 " records, %.1f bytes per record on average (encoded)\n", o->records,
           (double)res->journal_bytes / (double)o->records);
}

static int run(options *o) {
    print_machine();
    print_load("at start");
    if (make_data_dir(o) != 0) return -1;
    if (check_disk(o) != 0) return -1;
    char jdir[PATH_LEN_MAX];
    if (path_join(jdir, o->data, "journal") != 0) return -1;
    static build_result b;
    bool reuse = o->keep && params_match(o);
    if (!reuse && remove_tree(jdir) != 0) return -1;
    berth_journal *j = NULL;
    char err[ERR_LEN_MAX];
    berth_journal_options jo;
    memset(&jo, 0, sizeof jo);
    berth_jerr e = berth_journal_open_lmdb(&j, jdir, &jo, err, sizeof err);
    if (e != BERTH_J_OK) return fail("open %s: %s: %s", jdir, berth_jerr_name(e), err);
    int rc = 0;
    if (!reuse) {
        printf("building %" PRIu64 " records over %u workers (seed %" PRIu64 ") in %s ...\n", o->records,
               o->workers, o->seed, jdir);
        fflush(stdout);
        rc = build_journal(o, j, &b);
        if (rc == 0) {
            printf("built: %" PRIu64 " commands -> %" PRIu64 " records (%" PRIu64 " refused, %" PRIu64
                   " retries, %" PRIu64 " conflicts) in %.1f s = %.0f commands/s through the engine, "
                   "batch %u, fsync on\n", b.commands, o->records, b.refusals, b.retries, b.conflicts,
                   b.ns / 1e9, b.commands * 1e9 / b.ns, BUILD_BATCH_RECORDS);
            printf("built: the engine's commits wrote %.0f bytes per record (write syscalls: journal, "
                   "history index, meta)\n", (double)b.written_bytes / (double)o->records);
            if (b.mispredicted > 0) rc = fail("%" PRIu64 " outcomes differ from the generator's predictions",
                                              b.mispredicted);
        }
        if (rc == 0 && o->keep) rc = params_write(o);
    } else {
        printf("reusing the journal in %s\n", jdir);
    }
    berth_journal_reader *reader = NULL;
    if (rc == 0 && berth_journal_reader_open(j, &reader) != BERTH_J_OK) rc = fail("reader open failed");
    if (rc == 0 && reuse && (o->phases & PHASE_REPLAY)) {
        /* No live engine this run: the digest to match is the first replay's. */
        berth_state *state = NULL;
        berth_replay_stats stats;
        memset(&stats, 0, sizeof stats);
        berth_jerr re = berth_replay_to(reader, UINT64_MAX, false, &state, &stats, NULL, err, sizeof err);
        if (re != BERTH_J_OK) rc = fail("replay: %s", err);
        if (rc == 0 && berth_state_digest(state, b.digest) != 0) rc = fail("digest: no memory");
        berth_state_free(state);
    }
    static results res = {
        .scan = { "scan (raw LMDB cursor)" }, .decode = { "decode alone (in memory)" },
        .hash = { "SHA-256 alone (in memory)" }, .replay = { "replay from genesis" },
        .verify = { "verify" }, .apply = { "apply in memory, with sentences" },
        .apply_quiet = { "apply in memory, quiet (replay's)" },
        .append = { { "append batch 1 (durable)", .caller = "appending" },
                    { "append batch 64 (durable)", .caller = "appending" },
                    { "append batch 1024 (durable)", .caller = "appending" },
                    { "append batch 4096 (durable)", .caller = "appending" } },
        .append_one_sync = { "append batch 1024 (1 sync)", .caller = "appending" },
        .append_clog = { "append batch 1024 (commit log + checkpointer, berthd's road)", .caller = "appending" },
        .append_appender = { "append batch 1024 (appender: up to 8 batches in flight, 2 syncs)", .caller = "encoding" },
        .append_appender_one_sync = { "append batch 1024 (appender: up to 8 batches in flight, 1 sync)", .caller = "encoding" },
    };
    if (rc == 0) rc = measure_reads(o, reader, &b, &res);
    if (rc == 0) print_results(o, &res);
    if (rc == 0 && (o->phases & PHASE_MEMORY)) rc = measure_memory(reader, o);
    if (reader) berth_journal_reader_close(reader);
    berth_journal_close(j);
    print_load("at end");
    if (!o->keep && remove_tree(o->data) != 0) rc = -1;
    return rc;
}

int main(int argc, char **argv) {
    options o;
    if (parse_args(argc, argv, &o) != 0) return usage();
    setvbuf(stdout, NULL, _IOLBF, 0);
    return run(&o) == 0 ? 0 : 1;
}
