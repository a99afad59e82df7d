/* jobs.c — long work off the loop: JOURNAL.VERIFY and AT <seq> <query>.
 *
 * Owns one background thread and its queue. A job runs on its own journal
 * reader (an LMDB read transaction: a consistent view while the loop keeps
 * appending), writes its whole reply into its own buffer, and is handed back
 * through an ev_async; the loop thread then copies the reply into the
 * client's output and lets the client continue. The client is blocked while
 * its job runs (its later commands wait, so replies stay in order); other
 * clients are served meanwhile. A client that disconnects mid-job stays
 * allocated until the job returns, then is freed.
 *
 * No job holds one journal reader for its whole run: an LMDB reader open
 * in this process keeps the map from growing (lmdb_store.c, "Map growth"),
 * and a 10M-record verify takes seconds, so writes got FULL with room on
 * disk. Both jobs go in steps of at most job_step_records_max records,
 * each in a reader of its own opened on this thread, and a step ends
 * early at a chunk boundary once a resize waits for the readers
 * (berth_journal_readers_wanted); the next step opens a fresh reader,
 * which waits out the resize. The steps give the one-pass result
 * (replay.h). Each job's range is fixed on the loop when it is queued:
 * JOURNAL.VERIFY checks up to the durable head then (right after the
 * command's drain, so every record it counts is durable, though a later
 * reader sees commits that are not yet), AT replays up to its seq, which
 * the loop checked against the durable head.
 *
 * On LMDB each job runs in a child the job thread forks (guard.h): LMDB
 * trusts its pages, so a damaged one can kill whoever reads it, and a
 * JOURNAL.VERIFY (allowed for the read-only login) must not kill berthd.
 * The child opens the journal itself, read-only (the parent's environment
 * is not to be used across fork), runs the job on the range fixed on the
 * loop and hands the reply's bytes back over a pipe; the job thread waits
 * for them as it waited for the job. A child killed by SIGSEGV or SIGBUS
 * becomes a -CORRUPT reply naming how far a verify got, a log line, and a
 * sweep of the reader slot it left; one dead of SIGABRT, SIGFPE or SIGILL
 * an -INTERNAL asking for a bug report (guard_signal_cause, as `berth`);
 * one killed from outside (SIGKILL) an -ERR asking for a retry; one that
 * runs past --job-timeout (stopped, or looping on pages whose pointers
 * form a cycle) is SIGKILLed by the job thread (guard_opts.timeout_ms) and
 * its client hears -TIMEOUT, so the next queued job runs. A killed child
 * is waited for SERVER_JOB_REAP_WAIT_MS at most (guard_opts.
 * reap_timeout_ms): one in D state is left to the loop's reap timer, which
 * never waits, so it holds neither the next job nor berthd's stop. The
 * child holds none of berthd's descriptors and dies with berthd
 * (guard_opts.death_signal); jobs_stop kills a running child, whose pid
 * the job thread keeps under the queue's mutex, so a hung child cannot
 * hold the stop. Healthy replies are byte for byte
 * the same.
 * The fork and the open cost about 1 ms of CPU a job (docs/reliability.md),
 * so queued verifies of the same range share one run's reply. The child
 * must take no lock another thread may hold at the fork (no stdio, no
 * log, no OpenSSL fetch: record.c and snapshot.c hash without one); a
 * sanitizer build, whose runtime is not fork-safe, spawns berthd afresh
 * for each job instead (JOBS_SPAWN, jobs_child_main). */
#include "server.h"

#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "berth_sanitized.h"
#include "guard.h"

#define JOB_ARGS_MAX 32             /* words of an AT query */
#define JOB_ARG_BYTES_MAX 4096      /* their bytes */
#define JOB_ERR_LEN_MAX 512

enum {
    /* records one reader is held for at most (~0.5 s of verify): also
     * bounds the old pages a step pins while no resize asks it to go */
    job_step_records_max = 1 << 20,
    /* a job's child: records between progress reports to berthd */
    job_guard_step_records = 16384,
    /* a job's child's exit codes other than 0 */
    job_child_exit_nomem = 3,
    job_child_exit_pipe = 4,
    job_child_exit_usage = 5
};

/* A sanitizer's runtime is not fork-safe beside other threads (GCC 12's
 * libasan: a job's child hung in it for ever, on a lock another thread
 * held at the fork), so that build runs each job in berthd run afresh
 * (guard_spawn, /proc/self/exe: this binary even if its file was replaced
 * since). Elsewhere the fork is cheaper (docs/reliability.md). */
#define JOBS_SPAWN BERTH_SANITIZED
#define JOBS_SELF_EXE "/proc/self/exe"

typedef enum job_kind { JOB_VERIFY, JOB_AT } job_kind;

typedef struct job {
    struct job *next;
    job_kind kind;
    client *client;
    server *server;
    uint64_t seq;                   /* VERIFY: the durable head at submit; AT: its seq */
    query_fn query;
    size_t argc;
    berth_str argv[JOB_ARGS_MAX];
    char arg_bytes[JOB_ARG_BYTES_MAX];
    reply_buf out;
    bool shareable;                 /* a VERIFY's whole reply: queued twins may take it */
    bool timed_out;                 /* its child ran past --job-timeout (INFO counts it) */
} job;

/* ---- on the background thread ------------------------------------------ */

/* Long readers leave when a resize of the journal's map waits for them. */
static bool job_yield(void *arg) {
    berth_journal *journal = arg;
    return berth_journal_readers_wanted(journal);
}

static void reply_reader_failed(job *j, berth_jerr err) {
    reply_error(&j->out, "IOERR", "cannot open a journal reader: %s", berth_jerr_name(err));
}

/* progress_fd >= 0 (in a job's child): steps of job_guard_step_records,
 * each reported to the parent once checked, so a death names where. */
static void job_verify(job *j, berth_journal *journal, int progress_fd) {
    uint64_t step_records = progress_fd >= 0 ? job_guard_step_records : job_step_records_max;
    berth_journal_reader *reader = NULL;
    berth_jerr err = berth_journal_reader_open(journal, &reader);
    if (err != BERTH_J_OK) {
        reply_reader_failed(j, err);
        return;
    }
    berth_verify_run *run = berth_verify_begin(reader, j->seq);
    bool over = run == NULL;
    uint64_t checked = 0;
    while (!over) {
        over = berth_verify_step(run, reader, step_records, progress_fd >= 0 ? NULL : job_yield,
                                 journal);
        if (over) {
            break;
        }
        if (progress_fd >= 0) {
            /* no yield: each step checked exactly step_records more */
            checked += step_records;
            (void)guard_send_checked(progress_fd, checked);
        }
        berth_journal_reader_close(reader);
        reader = NULL;
        err = berth_journal_reader_open(journal, &reader);
        if (err != BERTH_J_OK) {
            berth_verify_report abandoned;
            (void)berth_verify_end(run, &abandoned);
            reply_reader_failed(j, err);
            return;
        }
    }
    berth_journal_reader_close(reader);
    berth_verify_report report;
    memset(&report, 0, sizeof report);
    err = run == NULL ? BERTH_J_NOMEM : berth_verify_end(run, &report);
    if (err != BERTH_J_OK && err != BERTH_J_CORRUPT) {
        reply_error(&j->out, "IOERR", "journal verification could not read the journal: %s",
                    berth_jerr_name(err));
        return;
    }
    reply_map(&j->out, 4);
    reply_bulk_lit(&j->out, "ok");
    reply_bool(&j->out, report.ok);
    reply_bulk_lit(&j->out, "records");
    reply_uint(&j->out, report.records);
    reply_bulk_lit(&j->out, "first_bad_seq");
    reply_uint(&j->out, report.first_bad_seq);
    reply_bulk_lit(&j->out, "what");
    reply_bulk_cstr(&j->out, report.ok ? "" : report.what);
}

/* AT's state, replayed in steps; *reader is left open (the query reads
 * through it) unless the replay failed, in which case the reply says why. */
static berth_state *job_at_state(job *j, berth_journal *journal, berth_journal_reader **reader) {
    berth_state *state = NULL;
    berth_replay_stats stats;
    memset(&stats, 0, sizeof stats);
    char err[JOB_ERR_LEN_MAX] = "";
    berth_jerr rc = berth_journal_reader_open(journal, reader);
    if (rc != BERTH_J_OK) {
        *reader = NULL;
        reply_reader_failed(j, rc);
        return NULL;
    }
    rc = berth_replay_to_part(*reader, j->seq, true, job_step_records_max, job_yield, journal,
                              &state, &stats, NULL, err, sizeof err);
    while (rc == BERTH_J_OK && stats.last_seq < j->seq) {
        berth_journal_reader_close(*reader);
        rc = berth_journal_reader_open(journal, reader);
        if (rc != BERTH_J_OK) {
            *reader = NULL;
            berth_state_free(state);
            reply_reader_failed(j, rc);
            return NULL;
        }
        rc = berth_replay_forward_part(*reader, state, j->seq, job_step_records_max, job_yield,
                                       journal, &stats, err, sizeof err);
    }
    if (rc == BERTH_J_OK) {
        return state;
    }
    if (state != NULL) {
        berth_state_free(state);
    }
    berth_journal_reader_close(*reader);
    *reader = NULL;
    if (rc == BERTH_J_NOTFOUND) {
        reply_error(&j->out, "ERR", "seq %llu is beyond the journal's head",
                    (unsigned long long)j->seq);
        return NULL;
    }
    reply_error(&j->out, "IOERR", "replay to seq %llu failed (%s): %s",
                (unsigned long long)j->seq, berth_jerr_name(rc), err);
    return NULL;
}

static void job_at(job *j, berth_journal *journal) {
    berth_journal_reader *reader = NULL;
    berth_state *state = job_at_state(j, journal, &reader);
    if (state == NULL) {
        return;
    }
    const void **scratch = NULL;
    size_t scratch_cap = 0;
    query_ctx ctx = { state, reader, NULL, &scratch, &scratch_cap };
    j->query(&ctx, j->argc, j->argv, &j->out);
    free(scratch);
    berth_state_free(state);
    berth_journal_reader_close(reader);
}

static void job_work(job *j, berth_journal *journal, int progress_fd) {
    if (j->kind == JOB_VERIFY) {
        job_verify(j, journal, progress_fd);
    } else {
        job_at(j, journal);
    }
}

static const char *job_name(const job *j) {
    return j->kind == JOB_VERIFY ? "JOURNAL.VERIFY" : "AT";
}

/* The job's child: the parent's LMDB environment must not be used across
 * fork, so it opens the journal itself, read-only and lock-free the way
 * `berth` does beside a running berthd, and runs the job on the range the
 * loop fixed; the reply's bytes go back whole in one result frame. It
 * touches nothing else of the parent's (no loop, no log, no stdio). */
static int job_child_in(job *j, const char *dir, int fd) {
    berth_journal_options options;
    memset(&options, 0, sizeof options);
    options.read_only = true;
    options.no_lock = true;
    char err[JOB_ERR_LEN_MAX] = "";
    berth_journal *journal = NULL;
    berth_jerr rc = berth_journal_open_lmdb(&journal, dir, &options, err, sizeof err);
    if (rc != BERTH_J_OK) {
        reply_error(&j->out, "IOERR", "%s cannot open the journal (%s): %s", job_name(j),
                    berth_jerr_name(rc), err);
    } else {
        (void)guard_send_opened(fd, j->seq);
        job_work(j, journal, fd);
        berth_journal_close(journal);   /* frees its reader slot: nothing pinned */
    }
    if (j->out.failed) {
        return job_child_exit_nomem;
    }
    if (guard_send_result(fd, j->out.data + j->out.start, reply_pending(&j->out)) != 0) {
        return job_child_exit_pipe;
    }
    return 0;
}

static int job_child(void *arg, int fd) {
    job *j = arg;
    return job_child_in(j, j->server->config.data_dir, fd);
}

/* Hex of a query word: argv carries no NUL, a word may. */
static void hex_word(berth_str word, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < word.len; i++) {
        unsigned char b = (unsigned char)word.ptr[i];
        out[2 * i] = digits[b >> 4];
        out[2 * i + 1] = digits[b & 15];
    }
    out[2 * word.len] = '\0';
}

static int unhex_digit(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

enum { job_argv_fixed = 7 };   /* berthd, the flag, DIR, kind, seq, RESP version, parent */

/* `berthd --job-child DIR KIND SEQ PROTO PPID WORD…` for j (words in hex), in
 * one malloc'd block; NULL when out of memory. */
static char **job_child_argv(const job *j) {
    size_t words = j->kind == JOB_AT ? j->argc : 0;
    size_t numbers = 3 * 24;
    size_t bytes = (job_argv_fixed + words + 1) * sizeof(char *) + numbers;
    for (size_t i = 0; i < words; i++) {
        bytes += 2 * j->argv[i].len + 1;
    }
    char **argv = malloc(bytes);
    if (argv == NULL) {
        return NULL;
    }
    char *text = (char *)(argv + job_argv_fixed + words + 1);
    argv[0] = (char *)"berthd";
    argv[1] = (char *)JOBS_CHILD_FLAG;
    argv[2] = (char *)j->server->config.data_dir;
    argv[3] = (char *)(j->kind == JOB_VERIFY ? "verify" : "at");
    int n = snprintf(text, 24, "%llu", (unsigned long long)j->seq);
    assert(n > 0 && n < 24);
    argv[4] = text;
    text += n + 1;
    n = snprintf(text, 24, "%u", (unsigned)j->out.proto);
    assert(n > 0 && n < 24);
    argv[5] = text;
    text += n + 1;
    n = snprintf(text, 24, "%lld", (long long)getpid());
    assert(n > 0 && n < 24);
    argv[6] = text;
    text += n + 1;
    for (size_t i = 0; i < words; i++) {
        argv[job_argv_fixed + i] = text;
        hex_word(j->argv[i], text);
        text += 2 * j->argv[i].len + 1;
    }
    argv[job_argv_fixed + words] = NULL;
    assert((size_t)(text - (char *)argv) <= bytes);
    return argv;
}

/* The query's words from hex into j->arg_bytes and j->argv; false when
 * malformed or over the limits. */
static bool job_child_words(job *j, int argc, char **argv) {
    size_t at = 0;
    for (int i = job_argv_fixed; i < argc; i++) {
        size_t len = strlen(argv[i]);
        if (len % 2 != 0 || at + len / 2 > JOB_ARG_BYTES_MAX || j->argc >= JOB_ARGS_MAX) {
            return false;
        }
        for (size_t k = 0; k < len; k += 2) {
            int hi = unhex_digit(argv[i][k]);
            int lo = unhex_digit(argv[i][k + 1]);
            if (hi < 0 || lo < 0) {
                return false;
            }
            j->arg_bytes[at + k / 2] = (char)(hi << 4 | lo);
        }
        j->argv[j->argc++] = berth_str_make(j->arg_bytes + at, len / 2);
        at += len / 2;
    }
    int arity = 0;
    j->query = j->argc > 0 ? query_lookup(j->argv[0], &arity) : NULL;
    return j->query != NULL;
}

int jobs_child_main(int argc, char **argv) {
    guard_child_defaults();
    static job j;   /* the query's bytes make it big; a child runs one */
    memset(&j, 0, sizeof j);
    uint64_t proto = 0;
    uint64_t parent = 0;
    if (argc < job_argv_fixed || strcmp(argv[1], JOBS_CHILD_FLAG) != 0 ||
        !berth_parse_u64(berth_str_make(argv[4], strlen(argv[4])), &j.seq) ||
        !berth_parse_u64(berth_str_make(argv[5], strlen(argv[5])), &proto) ||
        (proto != 2 && proto != 3) ||
        !berth_parse_u64(berth_str_make(argv[6], strlen(argv[6])), &parent) || parent == 0) {
        return job_child_exit_usage;
    }
    /* What guard_run's child does after its fork: berthd's descriptors that
     * were not close-on-exec go, and berthd's death ends this process. */
    if (guard_child_setup(GUARD_SPAWN_FD, SIGKILL, (pid_t)parent) != 0) {
        return job_child_exit_usage;
    }
    if (strcmp(argv[3], "verify") == 0 && argc == job_argv_fixed) {
        j.kind = JOB_VERIFY;
    } else if (strcmp(argv[3], "at") == 0 && job_child_words(&j, argc, argv)) {
        j.kind = JOB_AT;
    } else {
        return job_child_exit_usage;
    }
    reply_init(&j.out, (uint8_t)proto);
    int code = job_child_in(&j, argv[2], GUARD_SPAWN_FD);
    reply_free(&j.out);
    return code;
}

/* After berth_journal_readers_clear_dead for a dead child: the log's words. */
static const char *reader_slot_note(berth_jerr rc, uint32_t freed) {
    if (rc != BERTH_J_OK) {
        return "its reader slot could not be checked (IO)";
    }
    return freed > 0 ? "its reader slot was freed" : "it left no reader slot taken";
}

/* The job's reply when its child went before finishing, and not for a
 * reason in the pages: the client is told to retry. what says how the
 * process went ("was killed by SIGTERM (not page damage)"). */
static void job_reply_not_finished(job *j, bool killed_by_stop, const char *what) {
    reply_free(&j->out);
    reply_init(&j->out, j->client->out.proto);
    if (killed_by_stop) {
        reply_error(&j->out, "ERR", "berthd is stopping: %s was not finished; retry it after "
                                    "the restart",
                    job_name(j));
    } else {
        reply_error(&j->out, "ERR", "%s was not finished: its process %s; retry it", job_name(j),
                    what);
    }
}

/* A job's child died of a signal. berthd frees the reader slot the child
 * held either way; what the client hears follows guard_signal_cause, the
 * classification `berth` uses too. PAGES (SIGSEGV, SIGBUS): damaged pages,
 * most likely: the client hears CORRUPT and berthd serves on from memory.
 * BUG (SIGABRT: an assertion that failed; SIGFPE, SIGILL): a bug in
 * berthd, not evidence against the data: INTERNAL, with a request for a
 * report (it said CORRUPT, and an operator could restore a good journal
 * from an old copy). OUTSIDE (SIGKILL from the OOM killer or an operator;
 * berthd's own stop, killed_by_stop): says nothing of the pages: retry. */
static void job_child_died(job *j, const guard_result *res, bool killed_by_stop) {
    server *s = j->server;
    char buf[32];
    const char *sig = guard_signal_name(res->signal, buf, sizeof buf);
    guard_cause cause = guard_signal_cause(res->signal);
    if (killed_by_stop || cause == GUARD_CAUSE_OUTSIDE) {
        char what[64];
        snprintf(what, sizeof what, "was killed by %s (not page damage)", sig);
        job_reply_not_finished(j, killed_by_stop, what);
        uint32_t freed = 0;
        berth_jerr jrc = berth_journal_readers_clear_dead(s->journal, &freed);
        server_log("%s's process was killed by %s%s; the client was told to retry; %s",
                   job_name(j), sig, killed_by_stop ? " (berthd is stopping)" : "",
                   reader_slot_note(jrc, freed));
        return;
    }
    if (cause == GUARD_CAUSE_BUG) {
        const char *why = res->signal == SIGABRT
                              ? ": an assertion failed, its message is in berthd's log just before"
                              : "";
        reply_free(&j->out);
        reply_init(&j->out, j->client->out.proto);
        reply_error(&j->out, "INTERNAL",
                    "%s stopped on an internal error (%s%s): a bug in berthd, not damage to "
                    "%s/data.mdb; please report it with the command and `berthd --version` "
                    "(only if the assertion's message names mdb.c, LMDB's own check, may the "
                    "pages be damaged: `berth journal verify --data %s` says)",
                    job_name(j), sig, why, s->config.data_dir, s->config.data_dir);
        uint32_t freed = 0;
        berth_jerr jrc = berth_journal_readers_clear_dead(s->journal, &freed);
        server_log("%s's process died of %s: an internal error, a bug in berthd (not damage to "
                   "%s/data.mdb); the client got INTERNAL; %s",
                   job_name(j), sig, s->config.data_dir, reader_slot_note(jrc, freed));
        return;
    }
    assert(cause == GUARD_CAUSE_PAGES);
    char where[160] = "";
    if (j->kind == JOB_VERIFY && res->opened) {
        uint64_t checked = res->progressed ? res->checked_seq : 0;
        uint64_t died_by = checked + job_guard_step_records < j->seq
                               ? checked + job_guard_step_records
                               : j->seq;
        snprintf(where, sizeof where,
                 " past seq %llu (the walk died at or before seq %llu of the %llu to check)",
                 (unsigned long long)checked, (unsigned long long)died_by,
                 (unsigned long long)j->seq);
    } else if (j->kind == JOB_AT) {
        snprintf(where, sizeof where, " at or before seq %llu", (unsigned long long)j->seq);
    }
    reply_free(&j->out);
    reply_init(&j->out, j->client->out.proto);
    reply_error(&j->out, "CORRUPT",
                "%s: the journal's pages in %s/data.mdb are damaged%s: reading them killed the "
                "job's process (%s); LMDB does not checksum its pages. berthd stays up and "
                "serves from memory, but its next start may read the same pages: stop it, run "
                "`berth journal verify --data %s` and restore the directory from a copy",
                job_name(j), s->config.data_dir, where, sig, s->config.data_dir);
    uint32_t cleared = 0;
    berth_jerr rc = berth_journal_readers_clear_dead(s->journal, &cleared);
    server_log("%s's process died of %s reading %s/data.mdb%s: its pages are damaged; the "
               "client got CORRUPT; %s",
               job_name(j), sig, s->config.data_dir, where, reader_slot_note(rc, cleared));
}

/* A job's child ran past --job-timeout and guard SIGKILLed and reaped it:
 * a stopped child, or a walk looping for ever on damaged pages whose
 * pointers form a cycle, would otherwise hold the one job slot and every
 * later job would queue for ever. Its reader slot is freed as after any
 * dead child; the next queued job then runs. */
static void job_timed_out(job *j, const guard_result *res) {
    assert(res->timed_out && res->bytes == NULL);
    server *s = j->server;
    char where[96] = "";
    if (j->kind == JOB_VERIFY && res->progressed) {
        snprintf(where, sizeof where, " (it had checked %llu of %llu records)",
                 (unsigned long long)res->checked_seq, (unsigned long long)j->seq);
    }
    reply_free(&j->out);
    reply_init(&j->out, j->client->out.proto);
    reply_error(&j->out, "TIMEOUT",
                "%s ran past --job-timeout %u s%s; the job was stopped; retry it, raise "
                "--job-timeout for a journal that takes longer, or, if it times out again, run "
                "`berth journal verify --data %s`: a walk that never ends can mean damaged pages",
                job_name(j), (unsigned)s->config.job_timeout_s, where, s->config.data_dir);
    j->timed_out = true;
    if (res->unreaped) {
        /* job_child_unreaped logs it; its reader slot is freed at the reap */
        server_log("%s ran past --job-timeout %u s%s: its process was killed (SIGKILL) and the "
                   "client got TIMEOUT",
                   job_name(j), (unsigned)s->config.job_timeout_s, where);
        return;
    }
    uint32_t freed = 0;
    berth_jerr rc = berth_journal_readers_clear_dead(s->journal, &freed);
    server_log("%s ran past --job-timeout %u s%s: its process was killed (SIGKILL) and the "
               "client got TIMEOUT; %s",
               job_name(j), (unsigned)s->config.job_timeout_s, where, reader_slot_note(rc, freed));
}

static uint64_t jobs_mono_ms(void) {
    struct timespec ts;
    int rc = clock_gettime(CLOCK_MONOTONIC, &ts);
    assert(rc == 0);
    (void)rc;
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A job's child SIGKILLed (past --job-timeout, at berthd's stop, or after
 * its frames ended) and still not gone SERVER_JOB_REAP_WAIT_MS later: a
 * process in uninterruptible sleep (a read of a hung network filesystem)
 * ends only when that read does. The job thread no longer waits for it
 * (before, its waitpid held the one job slot, every later job, and
 * berthd's stop, for as long): the pid goes to q->unreaped, which the
 * loop's reap timer looks at; its reader slot is freed once it is reaped.
 * The client's reply says what became of the job. */
static void job_child_unreaped(job *j, const guard_result *res, bool killed_by_stop) {
    assert(res->unreaped && res->pid > 0 && res->bytes == NULL);
    server *s = j->server;
    job_queue *q = &s->jobs;
    int rc = pthread_mutex_lock(&q->mutex);
    assert(rc == 0);
    /* job_run_guarded starts no child while the list is full */
    assert(q->unreaped_count < SERVER_JOBS_UNREAPED_MAX);
    q->unreaped[q->unreaped_count] = res->pid;
    q->unreaped_killed_ms[q->unreaped_count] = jobs_mono_ms();
    q->unreaped_count++;
    uint32_t count = q->unreaped_count;
    rc = pthread_mutex_unlock(&q->mutex);
    assert(rc == 0);
    server_log("%s's process %d has not ended %u ms after it was killed (SIGKILL): a process in "
               "uninterruptible sleep (say a read of a hung filesystem) ends only when that read "
               "does; berthd reaps it once it ends and frees its reader slot then (%u job "
               "process%s unreaped)",
               job_name(j), (int)res->pid, (unsigned)SERVER_JOB_REAP_WAIT_MS, (unsigned)count,
               count == 1 ? "" : "es");
    if (res->timed_out) {
        job_timed_out(j, res);
        return;
    }
    /* its frames ended (or were malformed) yet it did not go */
    job_reply_not_finished(j, killed_by_stop, "did not end and was killed");
}

/* guard_opts.started on the job thread: jobs_stop kills the child it
 * finds here (a hung child would hold the stop for ever). */
static void job_child_started(void *ctx, pid_t pid) {
    job_queue *q = ctx;
    int rc = pthread_mutex_lock(&q->mutex);
    assert(rc == 0);
    q->child_pid = pid;
    if (pid > 0 && q->stop) {
        (void)kill(pid, SIGKILL);
        q->child_killed = true;
    }
    rc = pthread_mutex_unlock(&q->mutex);
    assert(rc == 0);
}

static void job_run_guarded(job *j) {
    job_queue *q = &j->server->jobs;
    /* SIGKILL when the job thread dies, which it does only with berthd
     * (jobs_stop joins it after its child is reaped). */
    const guard_opts opts = { SIGKILL, job_child_started, q,
                              (uint64_t)j->server->config.job_timeout_s * 1000u,
                              SERVER_JOB_REAP_WAIT_MS };
    guard_result res;
    int rc = pthread_mutex_lock(&q->mutex);
    assert(rc == 0);
    q->child_killed = false;
    uint32_t unreaped = q->unreaped_count;
    rc = pthread_mutex_unlock(&q->mutex);
    assert(rc == 0);
    if (unreaped >= SERVER_JOBS_UNREAPED_MAX) {
        /* Each would likely hang the same way: no process piles on them. */
        reply_error(&j->out, "ERR", "%u job processes killed earlier have not ended (a hung "
                                    "filesystem?); berthd starts no more until some do; retry "
                                    "later",
                    (unsigned)unreaped);
        return;
    }
    if (JOBS_SPAWN) {
        char **argv = job_child_argv(j);
        if (argv == NULL) {
            reply_error(&j->out, "ERR", "out of memory starting %s's process", job_name(j));
            return;
        }
        rc = guard_spawn(JOBS_SELF_EXE, argv, &opts, &res);
        free(argv);
    } else {
        rc = guard_run(job_child, j, &opts, &res);
    }
    if (rc != 0) {
        reply_error(&j->out, "ERR", "%s could not run in a process of its own (%s); retry shortly",
                    job_name(j), strerror(errno));
        return;
    }
    rc = pthread_mutex_lock(&q->mutex);
    assert(rc == 0);
    bool killed_by_stop = q->child_killed;
    rc = pthread_mutex_unlock(&q->mutex);
    assert(rc == 0);
    if (res.unreaped) {
        job_child_unreaped(j, &res, killed_by_stop);
    } else if (res.timed_out) {
        job_timed_out(j, &res);
    } else if (res.died) {
        job_child_died(j, &res, killed_by_stop);
    } else if (res.exit_code == job_child_exit_nomem) {
        j->out.failed = true;
    } else if (res.exit_code != 0 || res.bytes == NULL) {
        reply_error(&j->out, "IOERR", "%s's process ended (exit %d) without a reply",
                    job_name(j), res.exit_code);
    } else {
        reply_raw(&j->out, res.bytes, res.len);
        j->shareable = j->kind == JOB_VERIFY && !j->out.failed;
    }
    free(res.bytes);
}

/* On LMDB a job reads every page of its range, which damaged pages can
 * turn into a SIGSEGV: it runs in a child (guard.h). The etcd journal's
 * reads are its own decoded copies: in-process as before, and so without
 * --job-timeout: a thread cannot be killed, and one abandoned would keep
 * its reader and memory (docs/server.md says so). */
static void job_run(job *j) {
    if (replication_configured(&j->server->config)) {
        job_work(j, j->server->journal, -1);
    } else {
        job_run_guarded(j);
    }
}

/* A verify's reply depends only on its range (1 to its seq, fixed at
 * submit: the journal below the durable head never changes) and the RESP
 * version, so the queued VERIFYs with the same seq and version get j's
 * bytes instead of a process each: many clients verifying at once (each
 * job costs a fork) are answered together. Called with q->mutex held. */
static void share_verify(job_queue *q, const job *j) {
    assert(j->kind == JOB_VERIFY && j->shareable);
    job **link = &q->todo_head;
    job *prev = NULL;
    while (*link != NULL) {
        job *k = *link;
        if (k->kind != JOB_VERIFY || k->seq != j->seq || k->out.proto != j->out.proto) {
            prev = k;
            link = &k->next;
            continue;
        }
        *link = k->next;
        if (q->todo_tail == k) {
            q->todo_tail = prev;
        }
        reply_raw(&k->out, j->out.data + j->out.start, reply_pending(&j->out));
        k->next = q->done_head;
        q->done_head = k;
    }
}

static void *job_thread(void *arg) {
    job_queue *q = arg;
    for (;;) {
        int rc = pthread_mutex_lock(&q->mutex);
        assert(rc == 0);
        while (!q->stop && q->todo_head == NULL) {
            rc = pthread_cond_wait(&q->cond, &q->mutex);
            assert(rc == 0);
        }
        if (q->stop) {
            rc = pthread_mutex_unlock(&q->mutex);
            assert(rc == 0);
            return NULL;
        }
        job *j = q->todo_head;
        q->todo_head = j->next;
        if (q->todo_head == NULL) {
            q->todo_tail = NULL;
        }
        rc = pthread_mutex_unlock(&q->mutex);
        assert(rc == 0);

        job_run(j);

        rc = pthread_mutex_lock(&q->mutex);
        assert(rc == 0);
        if (j->shareable) {
            share_verify(q, j);
        }
        j->next = q->done_head;
        q->done_head = j;
        rc = pthread_mutex_unlock(&q->mutex);
        assert(rc == 0);
        ev_async_send(j->server->loop, &q->async);
    }
}

/* ---- on the loop thread ------------------------------------------------ */

static void job_finish(job *j, bool deliver) {
    client *c = j->client;
    server *s = j->server;
    assert(c->job_pending && s->jobs.outstanding > 0);
    s->jobs.outstanding--;
    s->stats.jobs_run++;
    s->stats.jobs_timed_out += j->timed_out ? 1u : 0u;
    c->job_pending = false;
    if (!c->closed && deliver) {
        if (j->out.failed) {
            reply_error(&c->out, "ERR", "out of memory building the reply");
        } else {
            reply_raw(&c->out, j->out.data + j->out.start, reply_pending(&j->out));
        }
        client_output_added(c);
        client_resume(c);
    }
    client_release(c);
    reply_free(&j->out);
    free(j);
}

static job *jobs_take_done(job_queue *q) {
    int rc = pthread_mutex_lock(&q->mutex);
    assert(rc == 0);
    job *done = q->done_head;
    q->done_head = NULL;
    rc = pthread_mutex_unlock(&q->mutex);
    assert(rc == 0);
    return done;
}

uint32_t jobs_unreaped(server *s) {
    job_queue *q = &s->jobs;
    if (!q->started) {
        return 0;
    }
    int rc = pthread_mutex_lock(&q->mutex);
    assert(rc == 0);
    uint32_t count = q->unreaped_count;
    rc = pthread_mutex_unlock(&q->mutex);
    assert(rc == 0);
    return count;
}

/* One look at the killed children not yet gone, without waiting: each that
 * ended is reaped, its reader slot freed and a line logged. Returns how
 * many are left. */
static uint32_t jobs_reap_unreaped(server *s) {
    job_queue *q = &s->jobs;
    int rc = pthread_mutex_lock(&q->mutex);
    assert(rc == 0);
    uint32_t kept = 0;
    uint32_t reaped = 0;
    uint64_t now_ms = jobs_mono_ms();
    for (uint32_t i = 0; i < q->unreaped_count; i++) {
        int status = 0;
        int got = guard_reap_poll(q->unreaped[i], &status);
        if (got == 0) {
            q->unreaped[kept] = q->unreaped[i];
            q->unreaped_killed_ms[kept] = q->unreaped_killed_ms[i];
            kept++;
            continue;
        }
        reaped++;
        server_log("job process %d, killed and left unreaped %llu ms ago, has ended and was "
                   "reaped%s",
                   (int)q->unreaped[i], (unsigned long long)(now_ms - q->unreaped_killed_ms[i]),
                   got < 0 ? " (by someone else: not berthd's child any more)" : "");
    }
    q->unreaped_count = kept;
    rc = pthread_mutex_unlock(&q->mutex);
    assert(rc == 0);
    if (reaped > 0) {
        /* a process that ended frees its slot only at this sweep */
        uint32_t freed = 0;
        berth_jerr jrc = berth_journal_readers_clear_dead(s->journal, &freed);
        server_log("after reaping %u job process%s: %s", (unsigned)reaped, reaped == 1 ? "" : "es",
                   jrc != BERTH_J_OK ? "the reader slots could not be checked (IO)"
                   : freed > 0      ? "their reader slots were freed"
                                    : "they left no reader slot taken");
    }
    return kept;
}

static void jobs_reap_timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
    server *s = w->data;
    if (jobs_reap_unreaped(s) == 0) {
        ev_timer_stop(loop, w);
    }
    (void)revents;
}

static void jobs_async_cb(struct ev_loop *loop, ev_async *w, int revents) {
    server *s = w->data;
    job *j = jobs_take_done(&s->jobs);
    while (j != NULL) {
        job *next = j->next;
        job_finish(j, true);
        j = next;
    }
    /* A finished job may have left its killed child unreaped. */
    if (!ev_is_active(&s->jobs.reap_timer) && jobs_unreaped(s) > 0) {
        ev_timer_again(loop, &s->jobs.reap_timer);
    }
    (void)revents;
}

int jobs_start(server *s) {
    job_queue *q = &s->jobs;
    memset(q, 0, sizeof *q);
    if (pthread_mutex_init(&q->mutex, NULL) != 0 || pthread_cond_init(&q->cond, NULL) != 0) {
        return -1;
    }
    ev_async_init(&q->async, jobs_async_cb);
    q->async.data = s;
    ev_async_start(s->loop, &q->async);
    ev_init(&q->reap_timer, jobs_reap_timer_cb);
    q->reap_timer.repeat = SERVER_JOB_REAP_POLL_MS / 1000.0;
    q->reap_timer.data = s;
    if (pthread_create(&q->thread, NULL, job_thread, q) != 0) {
        return -1;
    }
    q->started = true;
    return 0;
}

void jobs_stop(server *s) {
    job_queue *q = &s->jobs;
    if (!q->started) {
        return;
    }
    int rc = pthread_mutex_lock(&q->mutex);
    assert(rc == 0);
    q->stop = true;
    if (q->child_pid > 0) {
        /* Reaped only after the started(0) that clears child_pid: the pid
         * is still this child's. */
        (void)kill(q->child_pid, SIGKILL);
        q->child_killed = true;
    }
    rc = pthread_cond_signal(&q->cond);
    assert(rc == 0);
    rc = pthread_mutex_unlock(&q->mutex);
    assert(rc == 0);
    rc = pthread_join(q->thread, NULL);
    assert(rc == 0);
    /* The join is bounded: the job thread waited SERVER_JOB_REAP_WAIT_MS at
     * most for the child it killed. One not gone is left to init. */
    ev_timer_stop(s->loop, &q->reap_timer);
    if (jobs_reap_unreaped(s) > 0) {
        for (uint32_t i = 0; i < q->unreaped_count; i++) {
            server_log("berthd stops with job process %d killed but not ended (uninterruptible "
                       "sleep?): it is left unreaped, to init",
                       (int)q->unreaped[i]);
        }
    }
    q->started = false;
    job *j = jobs_take_done(q);
    while (j != NULL) {
        job *next = j->next;
        job_finish(j, true);
        j = next;
    }
    /* Never run: each waiting client hears why rather than a bare close
     * (berthd_shutdown writes the replies before it closes the clients). */
    j = q->todo_head;
    q->todo_head = q->todo_tail = NULL;
    while (j != NULL) {
        job *next = j->next;
        reply_free(&j->out);
        reply_init(&j->out, j->client->out.proto);
        reply_error(&j->out, "ERR", "berthd is stopping: %s was not run; retry it after the restart",
                    j->kind == JOB_VERIFY ? "JOURNAL.VERIFY" : "AT");
        job_finish(j, true);
        j = next;
    }
    ev_async_stop(s->loop, &q->async);
    assert(q->outstanding == 0);
}

static job *job_new(client *c, job_kind kind) {
    server *s = c->server;
    if (s->jobs.outstanding >= SERVER_JOBS_MAX) {
        reply_error(&c->out, "LIMIT", "%d background jobs are already queued or running; retry "
                                      "shortly",
                    SERVER_JOBS_MAX);
        return NULL;
    }
    job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        reply_error(&c->out, "ERR", "out of memory queueing the job");
        return NULL;
    }
    j->kind = kind;
    j->client = c;
    j->server = s;
    reply_init(&j->out, c->out.proto);
    return j;
}

static void job_enqueue(job *j) {
    server *s = j->server;
    job_queue *q = &s->jobs;
    assert(!j->client->job_pending);
    j->client->job_pending = true;
    q->outstanding++;
    int rc = pthread_mutex_lock(&q->mutex);
    assert(rc == 0);
    j->next = NULL;
    if (q->todo_tail == NULL) {
        q->todo_head = j;
    } else {
        q->todo_tail->next = j;
    }
    q->todo_tail = j;
    rc = pthread_cond_signal(&q->cond);
    assert(rc == 0);
    rc = pthread_mutex_unlock(&q->mutex);
    assert(rc == 0);
}

bool jobs_submit_verify(client *c) {
    job *j = job_new(c, JOB_VERIFY);
    if (j == NULL) {
        return false;
    }
    /* The command's drain made everything committed durable. */
    j->seq = batch_durable_head(c->server);
    job_enqueue(j);
    return true;
}

bool jobs_submit_at(client *c, uint64_t seq, size_t argc, const berth_str *argv) {
    if (argc > JOB_ARGS_MAX) {
        reply_error(&c->out, "ERR", "AT takes a query of at most %d words", JOB_ARGS_MAX);
        return false;
    }
    size_t bytes = 0;
    for (size_t i = 0; i < argc; i++) {
        bytes += argv[i].len;
    }
    if (bytes > JOB_ARG_BYTES_MAX) {
        reply_error(&c->out, "ERR", "AT takes a query of at most %d bytes", JOB_ARG_BYTES_MAX);
        return false;
    }
    int arity = 0;
    query_fn fn = query_lookup(argv[0], &arity);
    assert(fn != NULL);
    job *j = job_new(c, JOB_AT);
    if (j == NULL) {
        return false;
    }
    j->seq = seq;
    j->query = fn;
    j->argc = argc;
    size_t at = 0;
    for (size_t i = 0; i < argc; i++) {
        memcpy(j->arg_bytes + at, argv[i].ptr, argv[i].len);
        j->argv[i] = berth_str_make(j->arg_bytes + at, argv[i].len);
        at += argv[i].len;
    }
    job_enqueue(j);
    return true;
}
