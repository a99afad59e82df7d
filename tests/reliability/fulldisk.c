/* fulldisk.c — berthd on a full filesystem and at its map ceiling.
 *
 * Owns the promise of issue 3's group commit when space runs out: writes get
 * `-FULL` with a sentence, reads and WATCH keep working, nothing
 * acknowledged is lost, and once space is freed writes resume in the same
 * process, without a restart. Two phases:
 *   disk: the data directory sits on a small filesystem (fulldisk.sh mounts
 *     a tmpfs); a ballast file takes most of it, writes go on until -FULL,
 *     then the ballast is deleted and writes must succeed again.
 *   map: a fresh data directory with --map-size-max-mib small; writes go on
 *     until -FULL; reads and WATCH keep working; a restart with a larger
 *     ceiling accepts writes again.
 * After each phase berthd is stopped and the harness opens the journal
 * itself: it verifies the chain and finds every acknowledged seq with the
 * acknowledged REQID.
 *
 *   berth_fulldisk --berthd PATH --dir MOUNTED_DIR [--map-mib N] */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

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

typedef struct acked {
    uint64_t seq;
    char reqid[32];
} acked;

typedef struct phase {
    const char *name;
    h_server server;
    h_conn c;
    acked *acks;
    size_t ack_count;
    uint64_t full_replies;
    uint64_t refusals;
    uint64_t next_id;
    char full_text[512];
} phase;

static const char *berthd_path;
static char log_path[FD_PATH_LEN_MAX];

static void start(phase *p, const char *data, const char *map_mib) {
    const char *extra[] = { "--snapshot-every", "0", "--map-size-max-mib", map_mib };
    if (h_server_start(&p->server, berthd_path, data, extra, 4, log_path) != 0) {
        h_die("%s: berthd did not start on %s; see %s", p->name, data, log_path);
    }
    if (h_conn_open(&p->c, "127.0.0.1", p->server.port, 5000) != 0) h_die("%s: cannot connect", p->name);
}

static void stop(phase *p) {
    h_conn_close(&p->c);
    int status = h_server_stop(&p->server, SIGTERM, 30000);
    if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        h_die("%s: berthd did not stop cleanly (status %d); see %s", p->name, status, log_path);
    }
}

/* Send FD_PIPELINE DEPLOY/RELEASE commands with REQIDs; record the acked
 * ones. Returns how many got -FULL; any other error fails the test. */
static uint32_t write_round(phase *p) {
    char *out = NULL;
    size_t len = 0, cap = 0;
    char reqids[FD_PIPELINE][32];
    for (uint32_t k = 0; k < FD_PIPELINE; k++) {
        uint64_t id = p->next_id++;
        char inst[32];
        snprintf(inst, sizeof inst, "i%" PRIu64, id / 2);
        snprintf(reqids[k], sizeof reqids[k], "%s-%" PRIu64, p->name, id);
        const char *dep[] = { "DEPLOY", inst, "MODEL", "meta/llama-3-70b-instruct-awq-int4-long-model-name",
                              "BACKEND", "vllm", "ON", "w0:0", "REQID", reqids[k] };
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
        } else if (h_node_error_code(n, "NOINSTANCE")) {
            /* a RELEASE whose DEPLOY got -FULL earlier: a journaled refusal, no seq to check */
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

static void fill_until_full(phase *p) {
    for (uint64_t i = 0; i < FD_WRITES_MAX / FD_PIPELINE; i++) {
        if (write_round(p) > 0) return;
    }
    h_die("%s: %d writes and never -FULL", p->name, FD_WRITES_MAX);
}

/* While full: PING, WORKER.GET, JOURNAL.HEAD answer; more writes get -FULL. */
static void check_reads_while_full(phase *p) {
    h_reply r;
    h_reply_init(&r);
    if (h_cmdf(&p->c, &r, FD_REPLY_TIMEOUT_MS, "PING") != 0 || !h_node_is(h_reply_root(&r), "PONG")) h_die("%s: PING failed while full", p->name);
    h_reply_free(&r);
    if (h_cmdf(&p->c, &r, FD_REPLY_TIMEOUT_MS, "WORKER.GET w0") != 0 || h_reply_root(&r)->type == H_ERROR) h_die("%s: WORKER.GET failed while full", p->name);
    h_reply_free(&r);
    if (h_cmdf(&p->c, &r, FD_REPLY_TIMEOUT_MS, "JOURNAL.HEAD") != 0 || h_reply_root(&r)->type == H_ERROR) h_die("%s: JOURNAL.HEAD failed while full", p->name);
    h_reply_free(&r);
    /* Full is not all-or-nothing: a smaller batch may still fit in the
     * pages left. Every write must get a seq or -FULL, nothing else. */
    uint32_t full = 0;
    for (int k = 0; k < FD_FULL_PROBES; k++) full += write_round(p);
    printf("%s: while full, %d more pipelined rounds: %u -FULL replies, reads answered\n", p->name, FD_FULL_PROBES, full);
}

/* A WATCH from seq 1 opened while full must deliver every committed record,
 * in order and without a gap, up to the last acknowledged seq. Frames are
 * ["watch", from, head] and then ["message", "watch", {seq: ..., ...}]. */
static void check_watch_while_full(phase *p) {
    uint64_t last = p->ack_count ? p->acks[p->ack_count - 1].seq : 0;
    h_conn w;
    if (h_conn_open(&w, "127.0.0.1", p->server.port, 5000) != 0) h_die("%s: WATCH cannot connect", p->name);
    const char *argv[] = { "WATCH", "1" };
    size_t lens[] = { 5, 1 };
    char *out = NULL;
    size_t len = 0, cap = 0;
    if (h_encode_argv(&out, &len, &cap, 2, argv, lens) != 0 || h_write_all(w.fd, out, len, 5000) != 0) h_die("%s: WATCH send", p->name);
    free(out);
    uint64_t deadline = h_now_ns() + (uint64_t)FD_WATCH_WAIT_MS * 1000000ull;
    uint64_t next = 1;
    while (next <= last && h_now_ns() < deadline) {
        h_reply r;
        h_reply_init(&r);
        if (h_read_reply(&w, &r, FD_WATCH_WAIT_MS) != 0) break;
        const h_node *root = h_reply_root(&r);
        if (root->type == H_ERROR) h_die("%s: WATCH while full: %.*s", p->name, (int)root->len, root->str);
        if (h_node_is(h_reply_child(&r, root, 0), "message")) {
            const h_node *seq = h_reply_field(&r, h_reply_child(&r, root, 2), "seq");
            if (seq == NULL || seq->type != H_INT || (uint64_t)seq->integer != next) {
                h_die("%s: WATCH sent seq %" PRId64 " where %" PRIu64 " was due", p->name, seq ? seq->integer : -1, next);
            }
            next++;
        }
        h_reply_free(&r);
    }
    h_conn_close(&w);
    if (next <= last) h_die("%s: WATCH 1 while full stopped at seq %" PRIu64 " of %" PRIu64, p->name, next - 1, last);
    printf("%s: WATCH 1 while full delivered seqs 1..%" PRIu64 " in order\n", p->name, last);
}

/* Offline, berthd stopped: chain verifies, every acked seq holds its REQID. */
static void check_journal(phase *p, const char *data) {
    berth_journal *j = NULL;
    char err[FD_ERR_LEN_MAX];
    berth_journal_options jo = { .read_only = true, .no_lock = true };
    if (berth_journal_open_lmdb(&j, data, &jo, err, sizeof err) != BERTH_J_OK) h_die("%s: open journal: %s", p->name, err);
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
        if (e != BERTH_J_OK || rec.reqid.len != rl || memcmp(rec.reqid.ptr, p->acks[i].reqid, rl) != 0) {
            fprintf(stderr, "LOSS %s: seq %" PRIu64 " (%s) acknowledged but %s\n", p->name, p->acks[i].seq,
                    p->acks[i].reqid, e != BERTH_J_OK ? berth_jerr_name(e) : "holds another command");
            lost++;
        }
    }
    berth_journal_reader_close(reader);
    berth_journal_close(j);
    printf("%s: journal verified (%" PRIu64 " records), %zu acknowledged writes, losses %" PRIu64 "\n",
           p->name, rep.records, p->ack_count, lost);
    if (lost != 0) h_die("%s: %" PRIu64 " acknowledged writes lost", p->name, lost);
}

static void add_worker(phase *p) {
    h_reply r;
    h_reply_init(&r);
    if (h_cmdf(&p->c, &r, FD_REPLY_TIMEOUT_MS, "WORKER.ADD w0 GPUS 8") != 0 || h_reply_root(&r)->type != H_INT) h_die("%s: WORKER.ADD w0 failed", p->name);
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

static void disk_phase(const char *dir) {
    static phase p = { .name = "disk" };
    p.acks = calloc(FD_ACKED_MAX, sizeof *p.acks);
    if (p.acks == NULL) h_die("ERR out of memory");
    char data[FD_PATH_LEN_MAX], ballast[FD_PATH_LEN_MAX];
    snprintf(data, sizeof data, "%s/data-disk", dir);
    snprintf(ballast, sizeof ballast, "%s/ballast", dir);
    start(&p, data, "4096");
    add_worker(&p);
    uint64_t ballast_bytes = make_ballast(ballast, dir);
    fill_until_full(&p);
    printf("disk: -FULL after %zu acknowledged writes (ballast %" PRIu64 " MiB): \"%s\"\n", p.ack_count,
           ballast_bytes >> 20, p.full_text);
    check_reads_while_full(&p);
    check_watch_while_full(&p);
    if (unlink(ballast) != 0) h_die("unlink ballast: %s", strerror(errno));
    size_t before = p.ack_count;
    if (write_round(&p) != 0) h_die("disk: writes still -FULL after space was freed (no restart)");
    printf("disk: space freed, writes resumed without a restart (%zu more acknowledged)\n", p.ack_count - before);
    stop(&p);
    check_journal(&p, data);
    free(p.acks);
}

static void map_phase(const char *dir, const char *map_mib) {
    static phase p = { .name = "map" };
    p.acks = calloc(FD_ACKED_MAX, sizeof *p.acks);
    if (p.acks == NULL) h_die("ERR out of memory");
    char data[FD_PATH_LEN_MAX];
    snprintf(data, sizeof data, "%s/data-map", dir);
    start(&p, data, map_mib);
    add_worker(&p);
    fill_until_full(&p);
    printf("map: -FULL at --map-size-max-mib %s after %zu acknowledged writes: \"%s\"\n", map_mib, p.ack_count, p.full_text);
    check_reads_while_full(&p);
    check_watch_while_full(&p);
    stop(&p);
    check_journal(&p, data);
    start(&p, data, "64");
    size_t before = p.ack_count;
    if (write_round(&p) != 0) h_die("map: writes still -FULL after a restart with a larger ceiling");
    printf("map: restarted with a larger ceiling, writes resumed (%zu more acknowledged)\n", p.ack_count - before);
    stop(&p);
    check_journal(&p, data);
    free(p.acks);
}

int main(int argc, char **argv) {
    const char *dir = NULL, *map_mib = "2";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--berthd") == 0) berthd_path = argv[i + 1];
        else if (strcmp(argv[i], "--dir") == 0) dir = argv[i + 1];
        else if (strcmp(argv[i], "--map-mib") == 0) map_mib = argv[i + 1];
        else h_die("usage: berth_fulldisk --berthd PATH --dir MOUNTED_DIR [--map-mib N]");
    }
    if (berthd_path == NULL || dir == NULL) h_die("usage: berth_fulldisk --berthd PATH --dir MOUNTED_DIR [--map-mib N]");
    signal(SIGPIPE, SIG_IGN);
    snprintf(log_path, sizeof log_path, "%s.berthd.log", dir);
    disk_phase(dir);
    map_phase(dir, map_mib);
    printf("fulldisk: ok\n");
    return 0;
}
