/* fulldisk.c — berthd on a full filesystem and at its map ceiling.
 *
 * Owns the promise of group commit when space runs out: writes get `-FULL`
 * with a sentence, reads and WATCH keep working, nothing acknowledged is
 * lost, and once space is freed writes resume. Four phases, the first two
 * on the LMDB road (--commit-log off), the last two with the commit log
 * (--commit-log on, docs/server.md "The commit log"):
 *   disk: the data directory sits on a small filesystem (fulldisk.sh mounts
 *     a tmpfs); a ballast file takes most of it, writes go on until -FULL,
 *     then the ballast is deleted and writes must succeed again in the same
 *     process.
 *   map: a fresh data directory with --map-size-max-mib small; writes go on
 *     until -FULL; reads and WATCH keep working; a restart with a larger
 *     ceiling accepts writes again.
 *   disk-log: as disk, on a filesystem big enough for the commit log. The
 *     frames are acknowledged from the log; the checkpoint into LMDB fails
 *     FULL, and from then on: writes get -FULL at once and stage nothing
 *     (the log's pending count stays put), WORKER.GET, INSTANCE.LIST and
 *     INSTANCE.GET answer, JOURNAL.RANGE and JOURNAL.HEAD answer -FULL
 *     naming the commit log, a live WATCH stays connected and gets every
 *     acknowledged record, a WATCH opened then catches up to LMDB's head
 *     only and waits. Once the ballast is deleted the checkpoint's retry
 *     (every second) succeeds and writes resume in the same process; both
 *     watchers then get every record.
 *   map-log: as map with the commit log. Stopped while stuck, the log
 *     holds acknowledged frames past LMDB's head: a restart with the same
 *     ceiling must refuse to start with FULL naming commit.log, or, when
 *     room appeared (the stopped berthd's readers had kept LMDB from
 *     reusing freed pages), move every one of them and say so; a restart
 *     with a larger ceiling moves them (if still in the log) and accepts
 *     writes.
 * After each phase berthd is stopped and the harness opens the journal
 * itself: first it moves what the commit log holds into LMDB, as berthd's
 * start does, then it verifies the chain and finds every acknowledged seq
 * with the acknowledged REQID.
 *
 *   berth_fulldisk --berthd PATH --dir MOUNTED_DIR [--map-mib N]
 *                  [--log-dir MOUNTED_DIR --log-mib N] */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "commit_log.h"
#include "harness.h"
#include "journal.h"
#include "replay.h"

#define FD_ACKED_MAX 2000000             /* acknowledged writes one phase may record */
#define FD_REPLY_TIMEOUT_MS 30000
#define FD_LEFT_FREE_BYTES (3u << 20)    /* what the ballast leaves for the journal */
#define FD_WRITES_MAX 2000000            /* give up if -FULL never comes */
#define FD_FULL_PROBES 5                 /* pipelined write rounds tried again while full */
#define FD_PATH_LEN_MAX 4096
#define FD_ERR_LEN_MAX 1024
#define FD_PIPELINE 32
#define FD_WATCH_WAIT_MS 10000
#define FD_GPUS 64                       /* w0's GPUs: instances spread over 0..62 */
#define FD_KEEP_GPU 63                   /* the instance "keep" holds this one */
#define FD_STUCK_TRIES 10                /* fill again when a checkpoint retry got through */
#define FD_RESUME_WAIT_MS 5000           /* the checkpoint is retried every second */
#define FD_CATCHUP_WAIT_MS 1500          /* how long a WATCH opened while stuck is watched */
#define FD_LOG_TEXT_MAX 65536
#define FD_BIG_MAP_MIB "64"

typedef struct acked {
    uint64_t seq;
    char reqid[32];
} acked;

typedef struct phase {
    const char *name;
    bool log_on;                 /* --commit-log on */
    char data[FD_PATH_LEN_MAX];
    h_server server;
    h_conn c;
    acked *acks;
    size_t ack_count;
    uint64_t full_replies;
    uint64_t refusals;
    uint64_t next_id;
    char full_text[512];
} phase;

/* A WATCH connection and the next seq it owes. */
typedef struct watcher {
    h_conn c;
    uint64_t next;
} watcher;

static const char *berthd_path;
static const char *log_mib = "80";
static char log_path[FD_PATH_LEN_MAX];

/* ---- berthd ---- */

static int try_start(phase *p, const char *map_mib) {
    const char *extra[] = { "--snapshot-every", "0", "--map-size-max-mib", map_mib, "--commit-log",
                            p->log_on ? "on" : "off", "--commit-log-mib", log_mib };
    return h_server_start(&p->server, berthd_path, p->data, extra, p->log_on ? 8 : 6, log_path);
}

static void start(phase *p, const char *map_mib) {
    if (try_start(p, map_mib) != 0) h_die("%s: berthd did not start on %s; see %s", p->name, p->data, log_path);
    if (h_conn_open(&p->c, "127.0.0.1", p->server.port, 5000) != 0) h_die("%s: cannot connect", p->name);
}

static void stop(phase *p) {
    h_conn_close(&p->c);
    int status = h_server_stop(&p->server, SIGTERM, 30000);
    if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        h_die("%s: berthd did not stop cleanly (status %d); see %s", p->name, status, log_path);
    }
}

static void check_alive(phase *p, const char *when) {
    int status = 0;
    if (h_wait_pid(p->server.pid, 0, &status) != 0) h_die("%s: berthd exited %s (status %d); see %s", p->name, when, status, log_path);
}

static long log_size(void) {
    struct stat st;
    return stat(log_path, &st) == 0 ? (long)st.st_size : 0;
}

/* berthd's log from offset on (the tail of it past FD_LOG_TEXT_MAX). */
static void log_since(long offset, char *out, size_t size) {
    out[0] = '\0';
    FILE *f = fopen(log_path, "r");
    if (f == NULL) return;
    long end = log_size();
    if (end - offset > (long)size - 1) offset = end - (long)size + 1;
    if (fseek(f, offset, SEEK_SET) == 0) {
        size_t n = fread(out, 1, size - 1, f);
        out[n] = '\0';
    }
    fclose(f);
}

/* One of the commit log's files: its size, or -1 when absent. */
static long long clog_file_bytes(const char *data, const char *name) {
    char path[FD_PATH_LEN_MAX];
    snprintf(path, sizeof path, "%s/%s", data, name);
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* --commit-log-mib sizes the log's two files together, half each. */
static void check_clog_file(phase *p) {
    const char *names[] = { BERTH_CLOG_FILE, BERTH_CLOG_FILE2 };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        long long bytes = clog_file_bytes(p->data, names[i]);
        if (!p->log_on) {
            if (bytes >= 0) h_die("%s: --commit-log off created %s/%s", p->name, p->data, names[i]);
            continue;
        }
        long long want = (atoll(log_mib) << 20) / 2;
        if (bytes != want) h_die("%s: %s/%s is %lld bytes, --commit-log-mib %s wants %lld (half)", p->name, p->data, names[i], bytes, log_mib, want);
    }
}

/* ---- writes ---- */

/* Send FD_PIPELINE DEPLOY/RELEASE commands with REQIDs; record the acked
 * ones. Returns how many got -FULL; any other error fails the test. */
static uint32_t write_round(phase *p) {
    char *out = NULL;
    size_t len = 0, cap = 0;
    char reqids[FD_PIPELINE][32];
    for (uint32_t k = 0; k < FD_PIPELINE; k++) {
        uint64_t id = p->next_id++;
        char inst[32], on[32];
        snprintf(inst, sizeof inst, "i%" PRIu64, id / 2);
        snprintf(on, sizeof on, "w0:%" PRIu64, (id / 2) % FD_KEEP_GPU);
        snprintf(reqids[k], sizeof reqids[k], "%s-%" PRIu64, p->name, id);
        const char *dep[] = { "DEPLOY", inst, "MODEL", "meta/llama-3-70b-instruct-awq-int4-long-model-name",
                              "BACKEND", "vllm", "ON", on, "REQID", reqids[k] };
        const char *rel[] = { "RELEASE", inst, "REQID", reqids[k] };
        const char *const *w = id % 2 == 0 ? dep : rel;
        size_t argc = id % 2 == 0 ? 10 : 4, lens[10];
        for (size_t i = 0; i < argc; i++) lens[i] = strlen(w[i]);
        if (h_encode_argv(&out, &len, &cap, argc, w, lens) != 0) h_die("ERR out of memory");
    }
    if (h_write_all(p->c.fd, out, len, FD_REPLY_TIMEOUT_MS) != 0) h_die("%s: send failed", p->name);
    free(out);
    uint32_t full = 0;
    for (uint32_t k = 0; k < FD_PIPELINE; k++) {
        h_reply r;
        h_reply_init(&r);
        if (h_read_reply(&p->c, &r, FD_REPLY_TIMEOUT_MS) != 0) h_die("%s: no reply to a write", p->name);
        const h_node *n = h_reply_root(&r);
        if (n->type == H_INT) {
            if (p->ack_count == FD_ACKED_MAX) h_die("%s: more than %d writes and never full", p->name, FD_ACKED_MAX);
            p->acks[p->ack_count].seq = (uint64_t)n->integer;
            memcpy(p->acks[p->ack_count].reqid, reqids[k], sizeof p->acks[0].reqid);
            p->ack_count++;
        } else if (h_node_error_code(n, "FULL")) {
            full++;
            p->full_replies++;
            snprintf(p->full_text, sizeof p->full_text, "%.*s", (int)n->len, n->str);
        } else if (h_node_error_code(n, "NOINSTANCE") || h_node_error_code(n, "GPUBUSY") ||
                   h_node_error_code(n, "EXCLUSIVE")) {
            /* A journaled refusal, no seq to check: a RELEASE whose DEPLOY
             * got -FULL, or a DEPLOY on a GPU still held by an instance
             * whose RELEASE got -FULL. */
            p->refusals++;
        } else if (h_node_error_code(n, "IOERR")) {
            /* LMDB turns a short write (the filesystem filled mid-page) into EIO. */
            h_die("%s: a write on a full filesystem got '%.*s' (want -FULL: the journal must report a "
                  "short write with the disk out of space as FULL)", p->name, (int)n->len, n->str);
        } else {
            h_die("%s: a write got '%.*s' (want a seq or -FULL)", p->name, (int)n->len, n->str);
        }
        h_reply_free(&r);
    }
    return full;
}

static uint64_t last_acked(const phase *p) {
    return p->ack_count ? p->acks[p->ack_count - 1].seq : 0;
}

/* ---- WATCH ---- */

/* Frames are ["watch", from, head] and then ["message", "watch", {seq: ...}]. */
static void watcher_open(phase *p, watcher *w, uint64_t from) {
    if (h_conn_open(&w->c, "127.0.0.1", p->server.port, 5000) != 0) h_die("%s: WATCH cannot connect", p->name);
    char from_text[24];
    snprintf(from_text, sizeof from_text, "%" PRIu64, from);
    const char *argv[] = { "WATCH", from_text };
    size_t lens[] = { 5, strlen(from_text) };
    char *out = NULL;
    size_t len = 0, cap = 0;
    if (h_encode_argv(&out, &len, &cap, 2, argv, lens) != 0 || h_write_all(w->c.fd, out, len, 5000) != 0) h_die("%s: WATCH send", p->name);
    free(out);
    w->next = from;
}

/* Take what the watcher sent within wait_ms; every record must be the
 * next seq. A closed connection fails the test. */
static void watcher_pump(phase *p, watcher *w, int wait_ms) {
    struct pollfd pf = { .fd = w->c.fd, .events = POLLIN };
    int pr = poll(&pf, 1, wait_ms);
    if (pr < 0 && errno != EINTR) h_die("%s: poll: %s", p->name, strerror(errno));
    if (pr > 0 && h_conn_fill(&w->c) < 0) h_die("%s: the WATCH connection was closed (next seq %" PRIu64 ")", p->name, w->next);
    for (;;) {
        h_reply r;
        h_reply_init(&r);
        int t = h_conn_take(&w->c, &r);
        if (t < 0) h_die("%s: WATCH sent bytes that are not RESP", p->name);
        if (t == 0) break;
        const h_node *root = h_reply_root(&r);
        if (root->type == H_ERROR) h_die("%s: WATCH: %.*s", p->name, (int)root->len, root->str);
        if (h_node_is(h_reply_child(&r, root, 0), "message")) {
            const h_node *seq = h_reply_field(&r, h_reply_child(&r, root, 2), "seq");
            if (seq == NULL || seq->type != H_INT || (uint64_t)seq->integer != w->next) {
                h_die("%s: WATCH sent seq %" PRId64 " where %" PRIu64 " was due", p->name, seq ? seq->integer : -1, w->next);
            }
            w->next++;
        }
        h_reply_free(&r);
    }
}

/* The watcher must deliver every seq up to last within wait_ms. */
static void watcher_expect(phase *p, watcher *w, uint64_t last, int wait_ms, const char *what) {
    uint64_t deadline = h_now_ns() + (uint64_t)wait_ms * 1000000ull;
    while (w->next <= last && h_now_ns() < deadline) watcher_pump(p, w, 50);
    if (w->next <= last) h_die("%s: %s stopped at seq %" PRIu64 " of %" PRIu64, p->name, what, w->next - 1, last);
}

/* ---- checks ---- */

static void fill_until_full(phase *p, watcher *w) {
    for (uint64_t i = 0; i < FD_WRITES_MAX / FD_PIPELINE; i++) {
        uint32_t full = write_round(p);
        if (w != NULL) watcher_pump(p, w, 0);   /* keep the live watcher's buffer small */
        if (full > 0) return;
    }
    h_die("%s: %d writes and never -FULL", p->name, FD_WRITES_MAX);
}

/* A -FULL reply must say why, not just the code. */
static void check_full_sentence(phase *p) {
    if (strlen(p->full_text) < 30 || strstr(p->full_text, "full") == NULL) {
        h_die("%s: the -FULL reply has no sentence: \"%s\"", p->name, p->full_text);
    }
}

static void expect_answer(phase *p, const char *cmd) {
    h_reply r;
    h_reply_init(&r);
    if (h_cmdf(&p->c, &r, FD_REPLY_TIMEOUT_MS, "%s", cmd) != 0) h_die("%s: no reply to %s while full", p->name, cmd);
    const h_node *n = h_reply_root(&r);
    if (n->type == H_ERROR) h_die("%s: %s while full: %.*s", p->name, cmd, (int)n->len, n->str);
    h_reply_free(&r);
}

/* While full: PING, WORKER.GET, JOURNAL.HEAD answer; more writes get -FULL. */
static void check_reads_while_full(phase *p) {
    h_reply r;
    h_reply_init(&r);
    if (h_cmdf(&p->c, &r, FD_REPLY_TIMEOUT_MS, "PING") != 0 || !h_node_is(h_reply_root(&r), "PONG")) h_die("%s: PING failed while full", p->name);
    h_reply_free(&r);
    expect_answer(p, "WORKER.GET w0");
    expect_answer(p, "INSTANCE.LIST");
    expect_answer(p, "JOURNAL.HEAD");
    /* Full is not all-or-nothing: a smaller batch may still fit in the
     * pages left. Every write must get a seq or -FULL, nothing else. */
    uint32_t full = 0;
    for (int k = 0; k < FD_FULL_PROBES; k++) full += write_round(p);
    printf("%s: while full, %d more pipelined rounds: %u -FULL replies, reads answered\n", p->name, FD_FULL_PROBES, full);
}

/* A WATCH from seq 1 opened while full must deliver every committed record,
 * in order and without a gap, up to the last acknowledged seq. */
static void check_watch_while_full(phase *p) {
    watcher w;
    watcher_open(p, &w, 1);
    watcher_expect(p, &w, last_acked(p), FD_WATCH_WAIT_MS, "WATCH 1 while full");
    h_conn_close(&w.c);
    printf("%s: WATCH 1 while full delivered seqs 1..%" PRIu64 " in order\n", p->name, last_acked(p));
}

/* INFO journal's value for key, or UINT64_MAX (and *text gets its text). */
static uint64_t info_journal(phase *p, const char *key, char *text, size_t text_size) {
    h_reply r;
    h_reply_init(&r);
    if (h_cmdf(&p->c, &r, FD_REPLY_TIMEOUT_MS, "INFO journal") != 0) h_die("%s: no reply to INFO", p->name);
    const h_node *n = h_reply_root(&r);
    if (n->type == H_ERROR) h_die("%s: INFO journal: %.*s", p->name, (int)n->len, n->str);
    char body[8192];
    snprintf(body, sizeof body, "%.*s", (int)n->len, n->str);
    h_reply_free(&r);
    char pat[64];
    snprintf(pat, sizeof pat, "\n%s:", key);
    const char *at = strstr(body, pat);
    if (at == NULL) h_die("%s: INFO journal has no %s", p->name, key);
    at += strlen(pat);
    if (text != NULL) {
        size_t k = strcspn(at, "\r\n");
        snprintf(text, text_size, "%.*s", (int)k, at);
    }
    return strtoull(at, NULL, 10);
}

/* A command that reads the LMDB journal while the log is stuck: -FULL
 * naming the commit log and the count of records LMDB lacks. Returns that
 * count, or 0 when it answered (a checkpoint retry got through). */
static uint64_t journal_refused(phase *p, const char *cmd) {
    h_reply r;
    h_reply_init(&r);
    if (h_cmdf(&p->c, &r, FD_REPLY_TIMEOUT_MS, "%s", cmd) != 0) h_die("%s: no reply to %s while stuck", p->name, cmd);
    const h_node *n = h_reply_root(&r);
    uint64_t count = 0;
    if (n->type == H_ERROR) {
        char text[512];
        snprintf(text, sizeof text, "%.*s", (int)n->len, n->str);
        const char *want = "FULL the journal cannot take the commit log's last ";
        if (strncmp(text, want, strlen(want)) != 0) h_die("%s: %s while stuck got \"%s\" (want \"%s N ...\")", p->name, cmd, text, want);
        count = strtoull(text + strlen(want), NULL, 10);
        if (count == 0) h_die("%s: %s while stuck names no records: \"%s\"", p->name, cmd, text);
    }
    h_reply_free(&r);
    return count;
}

static void keep_instance(phase *p) {
    h_reply r;
    h_reply_init(&r);
    if (h_cmdf(&p->c, &r, FD_REPLY_TIMEOUT_MS, "DEPLOY keep MODEL m BACKEND vllm ON w0:%d", FD_KEEP_GPU) != 0 ||
        h_reply_root(&r)->type != H_INT) h_die("%s: DEPLOY keep failed", p->name);
    h_reply_free(&r);
}

/* With the commit log: fill until the checkpoint fails FULL, then check
 * what docs/server.md promises while stuck. live is a WATCH opened before
 * the fill; late gets a WATCH opened while stuck (caught up to LMDB only). */
static void check_stuck(phase *p, watcher *live, watcher *late) {
    uint64_t pending = 0;
    for (int t = 0; t < FD_STUCK_TRIES && pending == 0; t++) {
        fill_until_full(p, live);
        pending = journal_refused(p, "JOURNAL.RANGE 1 10");
        if (pending == 0) printf("%s: JOURNAL.RANGE answered after -FULL (a checkpoint retry got through): filling again\n", p->name);
    }
    if (pending == 0) h_die("%s: %d times -FULL but JOURNAL.RANGE never refused", p->name, FD_STUCK_TRIES);
    check_full_sentence(p);
    char status[64];
    uint64_t head = info_journal(p, "head_seq", NULL, 0);
    uint64_t lmdb = info_journal(p, "lmdb_head_seq", NULL, 0);
    (void)info_journal(p, "commit_log_status", status, sizeof status);
    printf("%s: stuck after %zu acknowledged writes: \"%s\"; JOURNAL.RANGE: -FULL, %" PRIu64
           " records in the log only; INFO: head %" PRIu64 ", lmdb_head %" PRIu64 ", commit_log_status %s\n",
           p->name, p->ack_count, p->full_text, pending, head, lmdb, status);
    if (strcmp(status, "FULL") != 0) h_die("%s: INFO commit_log_status is %s while stuck (want FULL)", p->name, status);
    if (head - lmdb != pending || head < last_acked(p)) {
        h_die("%s: head %" PRIu64 ", lmdb_head %" PRIu64 ", last acknowledged %" PRIu64 ", %" PRIu64 " pending do not add up",
              p->name, head, lmdb, last_acked(p), pending);
    }
    /* New writes: -FULL at once, nothing staged (the log's count stays). */
    size_t acks_before = p->ack_count;
    uint64_t refusals_before = p->refusals;
    uint64_t t0 = h_now_ns();
    uint32_t full = 0;
    for (int k = 0; k < FD_FULL_PROBES; k++) full += write_round(p);
    double ms = (double)(h_now_ns() - t0) / 1e6;
    if (full != FD_FULL_PROBES * FD_PIPELINE || p->ack_count != acks_before || p->refusals != refusals_before) {
        h_die("%s: while stuck %d writes got %u -FULL, %zu seqs, %" PRIu64 " refusals (want all -FULL)", p->name,
              FD_FULL_PROBES * FD_PIPELINE, full, p->ack_count - acks_before, p->refusals - refusals_before);
    }
    uint64_t pending2 = journal_refused(p, "JOURNAL.HEAD");
    if (pending2 != pending) h_die("%s: the refused writes changed the log's count from %" PRIu64 " to %" PRIu64, p->name, pending, pending2);
    printf("%s: while stuck %d writes all got -FULL in %.1f ms; JOURNAL.HEAD: -FULL, still %" PRIu64 " in the log only\n",
           p->name, FD_FULL_PROBES * FD_PIPELINE, ms, pending2);
    /* Reads of the in-memory state go on; INSTANCE.GET too. */
    h_reply r;
    h_reply_init(&r);
    if (h_cmdf(&p->c, &r, FD_REPLY_TIMEOUT_MS, "PING") != 0 || !h_node_is(h_reply_root(&r), "PONG")) h_die("%s: PING failed while stuck", p->name);
    h_reply_free(&r);
    expect_answer(p, "WORKER.GET w0");
    expect_answer(p, "INSTANCE.LIST");
    expect_answer(p, "INSTANCE.GET keep");
    /* The live watcher got every acknowledged record and stays connected. */
    watcher_expect(p, live, head, FD_WATCH_WAIT_MS, "the live WATCH while stuck");
    watcher_pump(p, live, 200);
    if (live->next != head + 1) h_die("%s: the live WATCH sent past the head %" PRIu64, p->name, head);
    /* A WATCH opened now catches up to LMDB's head and waits. */
    watcher_open(p, late, 1);
    uint64_t deadline = h_now_ns() + (uint64_t)FD_CATCHUP_WAIT_MS * 1000000ull;
    while (h_now_ns() < deadline) watcher_pump(p, late, 50);
    if (late->next != lmdb + 1) {
        h_die("%s: a WATCH 1 opened while stuck delivered up to seq %" PRIu64 " (want LMDB's head %" PRIu64 ", then wait)",
              p->name, late->next - 1, lmdb);
    }
    check_alive(p, "while stuck");
    printf("%s: PING, WORKER.GET, INSTANCE.LIST, INSTANCE.GET answered; live WATCH delivered 1..%" PRIu64
           " and stays connected; WATCH 1 opened while stuck delivered 1..%" PRIu64 " and waits\n",
           p->name, head, lmdb);
}

/* Offline: the seq and hash LMDB ends at. */
static void lmdb_head(phase *p, uint64_t *seq, uint8_t hash[BERTH_HASH_LEN]) {
    berth_journal *j = NULL;
    char err[FD_ERR_LEN_MAX];
    berth_journal_options jo = { .read_only = true, .no_lock = true };
    if (berth_journal_open_lmdb(&j, p->data, &jo, err, sizeof err) != BERTH_J_OK) h_die("%s: open journal: %s", p->name, err);
    berth_journal_reader *reader = NULL;
    if (berth_journal_reader_open(j, &reader) != BERTH_J_OK) h_die("%s: reader", p->name);
    if (berth_journal_reader_head(reader, seq, hash) != BERTH_J_OK) h_die("%s: journal head", p->name);
    berth_journal_reader_close(reader);
    berth_journal_close(j);
}

/* Offline, berthd stopped: the log moved into LMDB, the chain verifies,
 * every acked seq holds its REQID. */
static void check_journal(phase *p) {
    uint64_t moved = h_recover_commit_log(p->data, p->name);
    berth_journal *j = NULL;
    char err[FD_ERR_LEN_MAX];
    berth_journal_options jo = { .read_only = true, .no_lock = true };
    if (berth_journal_open_lmdb(&j, p->data, &jo, err, sizeof err) != BERTH_J_OK) h_die("%s: open journal: %s", p->name, err);
    berth_journal_reader *reader = NULL;
    if (berth_journal_reader_open(j, &reader) != BERTH_J_OK) h_die("%s: reader", p->name);
    berth_verify_report rep;
    memset(&rep, 0, sizeof rep);
    if (berth_verify(reader, &rep) != BERTH_J_OK || !rep.ok) h_die("%s: verify: seq %" PRIu64 ": %s", p->name, rep.first_bad_seq, rep.what);
    uint64_t lost = 0;
    for (size_t i = 0; i < p->ack_count; i++) {
        berth_record rec;
        berth_jerr e = berth_journal_read(reader, p->acks[i].seq, &rec, NULL, NULL);
        size_t rl = strlen(p->acks[i].reqid);
        if (e != BERTH_J_OK) {
            fprintf(stderr, "LOSS %s: seq %" PRIu64 " (%s) acknowledged but %s\n", p->name, p->acks[i].seq,
                    p->acks[i].reqid, berth_jerr_name(e));
            lost++;
        } else if (rec.reqid.len != rl || memcmp(rec.reqid.ptr, p->acks[i].reqid, rl) != 0) {
            /* Replies are matched to commands by their order: another
             * REQID here means a reply overtook an earlier one. */
            fprintf(stderr, "LOSS %s: seq %" PRIu64 " was the reply to %s but holds REQID %.*s (%s): "
                    "the replies came out of the order of their commands\n", p->name, p->acks[i].seq,
                    p->acks[i].reqid, (int)rec.reqid.len, rec.reqid.ptr,
                    berth_code_name((berth_code)rec.code));
            lost++;
        }
    }
    berth_journal_reader_close(reader);
    berth_journal_close(j);
    printf("%s: journal verified (%" PRIu64 " records, %" PRIu64 " moved from the commit log by the harness), "
           "%zu acknowledged writes, losses %" PRIu64 "\n", p->name, rep.records, moved, p->ack_count, lost);
    if (lost != 0) h_die("%s: %" PRIu64 " acknowledged writes lost", p->name, lost);
    if (p->ack_count == 0) h_die("%s: no write was acknowledged", p->name);
}

static void add_worker(phase *p) {
    h_reply r;
    h_reply_init(&r);
    if (h_cmdf(&p->c, &r, FD_REPLY_TIMEOUT_MS, "WORKER.ADD w0 GPUS %d", FD_GPUS) != 0 || h_reply_root(&r)->type != H_INT) h_die("%s: WORKER.ADD w0 failed", p->name);
    h_reply_free(&r);
}

/* Take all but FD_LEFT_FREE_BYTES of the filesystem with a ballast file. */
static uint64_t make_ballast(const char *path, const char *dir) {
    struct statvfs sv;
    if (statvfs(dir, &sv) != 0) h_die("statvfs %s: %s", dir, strerror(errno));
    uint64_t avail = (uint64_t)sv.f_bavail * sv.f_frsize;
    if (avail <= FD_LEFT_FREE_BYTES) h_die("%s has only %" PRIu64 " bytes free", dir, avail);
    uint64_t want = avail - FD_LEFT_FREE_BYTES;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) h_die("ballast %s: %s", path, strerror(errno));
    static char block[1 << 16];
    memset(block, 0xba, sizeof block);
    for (uint64_t done = 0; done < want;) {
        size_t n = want - done < sizeof block ? (size_t)(want - done) : sizeof block;
        ssize_t w = write(fd, block, n);
        if (w <= 0) h_die("ballast write: %s", strerror(errno));
        done += (uint64_t)w;
    }
    if (close(fd) != 0) h_die("ballast close: %s", strerror(errno));
    return want;
}

static void phase_init(phase *p, const char *name, bool log_on, const char *dir) {
    memset(p, 0, sizeof *p);
    p->name = name;
    p->log_on = log_on;
    snprintf(p->data, sizeof p->data, "%s/data-%s", dir, name);
    p->acks = calloc(FD_ACKED_MAX, sizeof *p->acks);
    if (p->acks == NULL) h_die("ERR out of memory");
}

/* ---- the LMDB road (--commit-log off) ---- */

static void disk_phase(const char *dir) {
    static phase p;
    phase_init(&p, "disk", false, dir);
    char ballast[FD_PATH_LEN_MAX];
    snprintf(ballast, sizeof ballast, "%s/ballast", dir);
    start(&p, "4096");
    check_clog_file(&p);
    add_worker(&p);
    uint64_t ballast_bytes = make_ballast(ballast, dir);
    fill_until_full(&p, NULL);
    check_full_sentence(&p);
    printf("disk: -FULL after %zu acknowledged writes (ballast %" PRIu64 " MiB): \"%s\"\n", p.ack_count,
           ballast_bytes >> 20, p.full_text);
    check_reads_while_full(&p);
    check_watch_while_full(&p);
    if (unlink(ballast) != 0) h_die("unlink ballast: %s", strerror(errno));
    size_t before = p.ack_count;
    if (write_round(&p) != 0 || p.ack_count == before) h_die("disk: writes still -FULL after space was freed (no restart)");
    check_alive(&p, "after space was freed");
    printf("disk: space freed, writes resumed without a restart (%zu more acknowledged)\n", p.ack_count - before);
    stop(&p);
    check_clog_file(&p);
    check_journal(&p);
    free(p.acks);
}

static void map_phase(const char *dir, const char *map_mib) {
    static phase p;
    phase_init(&p, "map", false, dir);
    start(&p, map_mib);
    add_worker(&p);
    fill_until_full(&p, NULL);
    check_full_sentence(&p);
    printf("map: -FULL at --map-size-max-mib %s after %zu acknowledged writes: \"%s\"\n", map_mib, p.ack_count, p.full_text);
    check_reads_while_full(&p);
    check_watch_while_full(&p);
    stop(&p);
    check_journal(&p);
    start(&p, FD_BIG_MAP_MIB);
    size_t before = p.ack_count;
    if (write_round(&p) != 0 || p.ack_count == before) h_die("map: writes still -FULL after a restart with a larger ceiling");
    printf("map: restarted with a larger ceiling, writes resumed (%zu more acknowledged)\n", p.ack_count - before);
    stop(&p);
    check_clog_file(&p);
    check_journal(&p);
    free(p.acks);
}

/* ---- with the commit log (--commit-log on) ---- */

/* Room is back (the ballast deleted: the checkpoint's retry gets through
 * in this same berthd; or a restart with a larger ceiling): writes are
 * accepted within FD_RESUME_WAIT_MS, the journal commands answer, and both
 * watchers get every record. */
static void expect_resume(phase *p, watcher *live, watcher *late, const char *why, bool same_process) {
    uint64_t t0 = h_now_ns(), deadline = t0 + (uint64_t)FD_RESUME_WAIT_MS * 1000000ull;
    size_t before = p->ack_count;
    uint32_t rounds = 0;
    for (;;) {
        rounds++;
        uint32_t full = write_round(p);
        if (full == 0 && p->ack_count > before) break;
        if (h_now_ns() > deadline) h_die("%s: writes still -FULL %d ms after %s", p->name, FD_RESUME_WAIT_MS, why);
        h_sleep_ms(100);
    }
    double ms = (double)(h_now_ns() - t0) / 1e6;
    check_alive(p, why);
    expect_answer(p, "JOURNAL.RANGE 1 10");
    expect_answer(p, "JOURNAL.VERIFY");
    uint64_t head = info_journal(p, "head_seq", NULL, 0);
    watcher_expect(p, live, head, FD_WATCH_WAIT_MS, "the live WATCH after the resume");
    watcher_expect(p, late, head, FD_WATCH_WAIT_MS, "the WATCH opened while stuck, after the resume");
    printf("%s: %s: writes accepted %s after %.0f ms (%u rounds, %zu more acknowledged); "
           "JOURNAL.RANGE and JOURNAL.VERIFY answer; both WATCHes delivered up to %" PRIu64 "\n",
           p->name, why, same_process ? "by the same berthd, no restart," : "by the restarted berthd", ms, rounds,
           p->ack_count - before, head);
}

static void disk_log_phase(const char *dir) {
    static phase p;
    phase_init(&p, "disk-log", true, dir);
    char ballast[FD_PATH_LEN_MAX];
    snprintf(ballast, sizeof ballast, "%s/ballast", dir);
    start(&p, "4096");
    check_clog_file(&p);
    add_worker(&p);
    keep_instance(&p);
    watcher live, late;
    watcher_open(&p, &live, 1);
    uint64_t ballast_bytes = make_ballast(ballast, dir);
    printf("disk-log: %s/%s is %s MiB; ballast %" PRIu64 " MiB leaves %u MiB\n", p.data, BERTH_CLOG_FILE, log_mib,
           ballast_bytes >> 20, FD_LEFT_FREE_BYTES >> 20);
    check_stuck(&p, &live, &late);
    if (unlink(ballast) != 0) h_die("unlink ballast: %s", strerror(errno));
    expect_resume(&p, &live, &late, "the ballast was deleted", true);
    h_conn_close(&live.c);
    h_conn_close(&late.c);
    stop(&p);
    check_journal(&p);
    free(p.acks);
}

static void map_log_phase(const char *dir, const char *map_mib) {
    static phase p;
    phase_init(&p, "map-log", true, dir);
    start(&p, map_mib);
    check_clog_file(&p);
    add_worker(&p);
    keep_instance(&p);
    watcher live, late;
    watcher_open(&p, &live, 1);
    check_stuck(&p, &live, &late);
    h_conn_close(&live.c);
    h_conn_close(&late.c);
    long mark = log_size();
    stop(&p);
    char text[FD_LOG_TEXT_MAX];
    log_since(mark, text, sizeof text);
    /* Stopped while stuck: the last checkpoint failed too, so the log
     * holds acknowledged records past LMDB's head. */
    uint64_t head = 0, pending = 0;
    uint8_t hash[BERTH_HASH_LEN];
    char err[FD_ERR_LEN_MAX];
    lmdb_head(&p, &head, hash);
    if (berth_clog_pending(p.data, head, hash, &pending, err, sizeof err) != BERTH_J_OK) h_die("map-log: read the commit log: %s", err);
    printf("map-log: stopped while stuck (exit 0): LMDB ends at %" PRIu64 ", the commit log holds %" PRIu64
           " more acknowledged records (last acknowledged %" PRIu64 ")\n", head, pending, last_acked(&p));
    if (head + pending < last_acked(&p)) h_die("map-log: LMDB and the log end at %" PRIu64 ", before the last acknowledged seq", head + pending);
    char want[128];
    snprintf(want, sizeof want, "moved %" PRIu64 " acknowledged records from", pending);
    bool moved_early = false;
    if (pending > 0) {
        mark = log_size();
        if (try_start(&p, map_mib) == 0) {
            /* The running berthd's readers (its WATCH streams, the fold)
             * kept LMDB from reusing the pages old commits freed; a start
             * has none, so room can appear under the same ceiling (seen
             * under ASan's timing). Then the start must have moved every
             * record the log held, and said so. */
            log_since(mark, text, sizeof text);
            if (strstr(text, want) == NULL) {
                h_die("map-log: berthd started with --map-size-max-mib %s while %s holds %" PRIu64
                      " records, and did not say \"%s ...\":\n%s", map_mib, BERTH_CLOG_FILE, pending, want, text);
            }
            printf("map-log: restart with the same --map-size-max-mib %s found room once no reader held old pages: "
                   "berthd logged \"%s ...\"\n", map_mib, want);
            stop(&p);
            moved_early = true;
        } else {
            log_since(mark, text, sizeof text);
            if (strstr(text, "FULL") == NULL || strstr(text, BERTH_CLOG_FILE) == NULL) {
                h_die("map-log: the refusal to start does not say FULL and name %s:\n%s", BERTH_CLOG_FILE, text);
            }
            printf("map-log: restart with the same --map-size-max-mib %s refused: %s", map_mib, text);
        }
    } else {
        printf("map-log: SKIPPED the same-ceiling restart check: the last checkpoint at stop got through, the log holds nothing past LMDB\n");
    }
    mark = log_size();
    start(&p, FD_BIG_MAP_MIB);
    log_since(mark, text, sizeof text);
    if (pending > 0 && !moved_early && strstr(text, want) == NULL) h_die("map-log: the restart's log does not say \"%s ...\":\n%s", want, text);
    if (pending > 0 && !moved_early) printf("map-log: restarted with --map-size-max-mib %s: berthd logged \"%s %s/%s ...\"\n", FD_BIG_MAP_MIB, want, p.data, BERTH_CLOG_FILE);
    watcher_open(&p, &live, 1);
    watcher_open(&p, &late, last_acked(&p) + 1);
    expect_resume(&p, &live, &late, "restarted with --map-size-max-mib " FD_BIG_MAP_MIB, false);
    h_conn_close(&live.c);
    h_conn_close(&late.c);
    stop(&p);
    check_journal(&p);
    free(p.acks);
}

int main(int argc, char **argv) {
    const char *dir = NULL, *log_dir = NULL, *map_mib = "2";
    const char *usage = "usage: berth_fulldisk --berthd PATH --dir MOUNTED_DIR [--map-mib N] [--log-dir MOUNTED_DIR] [--log-mib N]";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--berthd") == 0) berthd_path = argv[i + 1];
        else if (strcmp(argv[i], "--dir") == 0) dir = argv[i + 1];
        else if (strcmp(argv[i], "--map-mib") == 0) map_mib = argv[i + 1];
        else if (strcmp(argv[i], "--log-dir") == 0) log_dir = argv[i + 1];
        else if (strcmp(argv[i], "--log-mib") == 0) log_mib = argv[i + 1];
        else h_die("%s", usage);
    }
    if (berthd_path == NULL || dir == NULL || argc % 2 == 0) h_die("%s", usage);
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    snprintf(log_path, sizeof log_path, "%s.berthd.log", dir);
    uint64_t t0 = h_now_ns();
    disk_phase(dir);
    map_phase(dir, map_mib);
    if (log_dir != NULL) {
        disk_log_phase(log_dir);
        map_log_phase(log_dir, map_mib);
    } else {
        printf("fulldisk: no --log-dir: the commit-log phases did not run\n");
    }
    printf("fulldisk: ok in %.1f s\n", (double)(h_now_ns() - t0) / 1e9);
    return 0;
}
