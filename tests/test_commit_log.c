/* test_commit_log.c — owns the commit log's unit tests (ctest `commit_log`).
 *
 * The log (journal/commit_log.h) is driven through its API beside a real
 * LMDB journal, and the damage a crash or a bad disk leaves is planted with
 * pwrite straight into DIR/commit.log. A "crash" is closing the log and the
 * journal without a checkpoint and opening both again: a killed process
 * leaves the same bytes in the page cache. Every data directory lives under
 * one mkdtemp root made and removed by the unchecked fixture. */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "berth_limits.h"
#include "commit_log.h"
#include "journal.h"

enum {
    err_len_max = 512,
    text_fixed = 300,           /* a record's strings besides the command's padding */
    workers_per = 2,            /* names a touching record carries */
    history_cap = 20000,
    mib = 1 << 20
};

#define loop_assert_msg(expr, ...) \
    do { if (!(expr)) ck_abort_msg(__VA_ARGS__); } while (0)
#define loop_assert(expr) loop_assert_msg(expr, "Assertion '%s' failed", #expr)

static char temp_root[] = "/tmp/berth-clog-test-XXXXXX";
static unsigned dir_counter;

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

static void root_make(void) {
    memcpy(temp_root + sizeof(temp_root) - 7, "XXXXXX", 6);
    ck_assert_ptr_nonnull(mkdtemp(temp_root));
}

static void mount_path(char *out, size_t size) {
    int n = snprintf(out, size, "%s/tmpfs", temp_root);
    ck_assert(n > 0 && (size_t)n < size);
}

static void root_remove(void) {
    char path[300];
    mount_path(path, sizeof(path));
    (void)umount2(path, MNT_DETACH);   /* a failed test left it mounted */
    int rc = nftw(temp_root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    ck_assert_int_eq(rc, 0);
}

static void dir_fresh(char *out, size_t size) {
    int n = snprintf(out, size, "%s/d%u-%d", temp_root, dir_counter++, (int)getpid());
    ck_assert(n > 0 && (size_t)n < size);
}

static void log_path(char *out, size_t size, const char *dir, const char *name) {
    int n = snprintf(out, size, "%s/%s", dir, name);
    ck_assert(n > 0 && (size_t)n < size);
}

/* ---- records ------------------------------------------------------------ */

/* The records of one frame, their names and the bytes they point at. salt
 * makes records of the same seqs that differ (another history). */
typedef struct tframe {
    size_t n;
    berth_record *recs;
    berth_touched *touched;     /* NULL: the frame carries no names */
    berth_str *workers;
    char *text;
} tframe;

static berth_str put_text(char **at, const char *fmt, uint64_t a, unsigned b) {
    int n = snprintf(*at, 64, fmt, a, b);
    loop_assert(n >= 0 && n < 64);
    berth_str s = berth_str_make(*at, (size_t)n);
    *at += 64;
    return s;
}

static void tf_make(tframe *f, uint64_t first, size_t n, size_t pad, bool touched, unsigned salt) {
    ck_assert_uint_le(pad, BERTH_COMMAND_LEN_MAX - 64);
    memset(f, 0, sizeof(*f));
    f->n = n;
    f->recs = calloc(n, sizeof(*f->recs));
    f->workers = calloc(n * workers_per, sizeof(*f->workers));
    size_t stride = pad + text_fixed + 64 * 6;
    f->text = malloc(n * stride);
    ck_assert(f->recs != NULL && f->workers != NULL && f->text != NULL);
    if (touched) {
        f->touched = calloc(n, sizeof(*f->touched));
        ck_assert_ptr_nonnull(f->touched);
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t seq = first + i;
        char *at = f->text + i * stride;
        berth_record *r = &f->recs[i];
        int len = snprintf(at, 64, "WORKER.ADD w%" PRIu64 "-%u GPUS 8 ", seq, salt);
        loop_assert(len > 0 && len < 64);
        memset(at + len, 'p', pad);
        r->command = berth_str_make(at, (size_t)len + pad);
        at += len + pad;
        r->seq = seq;
        r->time_ms = 1700000000000ull + seq * 3 + salt;
        r->actor = put_text(&at, "ctl-%" PRIu64 "%.0u", seq % 7, salt);
        r->reqid = seq % 2 == 0 ? put_text(&at, "req-%" PRIu64 "-%u", seq, salt)
                                : berth_str_make("", 0);
        r->code = (uint32_t)(seq % 10);
        r->sentence = seq % 3 == 0 ? berth_str_make("", 0)
                                   : put_text(&at, "done %" PRIu64 " (%u)", seq, salt);
        if (touched) {
            berth_touched *t = &f->touched[i];
            t->instance = seq % 2 == 1 ? put_text(&at, "inst-%" PRIu64 "%.0u", seq % 5, salt)
                                       : berth_str_make("", 0);
            berth_str *w = &f->workers[i * workers_per];
            w[0] = put_text(&at, "w-all%.0" PRIu64 "%.0u", 0, salt);
            w[1] = put_text(&at, "w-%" PRIu64 "%.0u", seq % 3, salt);
            t->worker_count = seq % 4 == 0 ? 0 : workers_per;
            t->workers = t->worker_count > 0 ? w : NULL;
        }
    }
}

static void tf_free(tframe *f) {
    free(f->recs);
    free(f->touched);
    free(f->workers);
    free(f->text);
    memset(f, 0, sizeof(*f));
}

static uint64_t tf_last(const tframe *f) {
    return f->recs[f->n - 1].seq;
}

static const uint8_t *tf_last_hash(const tframe *f) {
    return f->recs[f->n - 1].hash;
}

static bool str_same(berth_str a, berth_str b) {
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* ---- journal and log ------------------------------------------------------ */

static berth_journal *jopen(const char *dir, uint64_t map_initial, uint64_t map_max) {
    berth_journal_options o = { .map_size_initial = map_initial, .map_size_max = map_max };
    berth_journal *j = NULL;
    char err[err_len_max] = "";
    berth_jerr rc = berth_journal_open_lmdb(&j, dir, &o, err, sizeof(err));
    ck_assert_msg(rc == BERTH_J_OK, "open %s: %s %s", dir, berth_jerr_name(rc), err);
    return j;
}

static berth_clog *lopen(const char *dir, uint64_t bytes) {
    berth_clog *log = NULL;
    char err[err_len_max] = "";
    berth_jerr rc = berth_clog_open(&log, dir, bytes, err, sizeof(err));
    ck_assert_msg(rc == BERTH_J_OK, "clog open %s: %s %s", dir, berth_jerr_name(rc), err);
    return log;
}

static uint64_t head_of(berth_journal *j, uint8_t hash[BERTH_HASH_LEN]) {
    uint64_t seq = 99;
    uint8_t scratch[BERTH_HASH_LEN];
    ck_assert_int_eq(berth_journal_head(j, &seq, hash != NULL ? hash : scratch), BERTH_J_OK);
    return seq;
}

/* A checkpoint that must succeed; the records it moved. */
static uint64_t checkpoint_ok(berth_clog *log, berth_journal *j) {
    uint64_t moved = 12345;
    char err[err_len_max] = "";
    berth_jerr rc = berth_clog_checkpoint(log, j, &moved, err, sizeof(err));
    ck_assert_msg(rc == BERTH_J_OK, "checkpoint: %s %s", berth_jerr_name(rc), err);
    uint8_t hash[BERTH_HASH_LEN];
    ck_assert_uint_eq(berth_clog_last_seq(log), head_of(j, hash));
    ck_assert_uint_eq(berth_clog_used_bytes(log), 0);
    return moved;
}

/* A checkpoint that must fail CORRUPT with a sentence holding every needle. */
static void checkpoint_corrupt(berth_clog *log, berth_journal *j, const char *needle1,
                               const char *needle2) {
    char err[err_len_max] = "";
    uint64_t moved = 12345;
    berth_jerr rc = berth_clog_checkpoint(log, j, &moved, err, sizeof(err));
    ck_assert_msg(rc == BERTH_J_CORRUPT, "checkpoint: %s %s", berth_jerr_name(rc), err);
    ck_assert_uint_eq(moved, 0);
    ck_assert_msg(needle1 == NULL || strstr(err, needle1) != NULL, "'%s' lacks '%s'", err,
                  needle1);
    ck_assert_msg(needle2 == NULL || strstr(err, needle2) != NULL, "'%s' lacks '%s'", err,
                  needle2);
}

/* Append f; it must take frame_bytes at the offset the log stood at. */
static uint64_t append_ok(berth_clog *log, tframe *f) {
    uint64_t before = berth_clog_used_bytes(log);
    uint64_t bytes = berth_clog_frame_bytes(f->recs, f->touched, f->n);
    ck_assert_uint_gt(bytes, 0);
    ck_assert_uint_eq(bytes % BERTH_CLOG_ALIGN, 0);
    berth_jerr rc = berth_clog_append(log, f->recs, f->touched, f->n);
    ck_assert_msg(rc == BERTH_J_OK, "append %" PRIu64 "..: %s", f->recs[0].seq,
                  berth_jerr_name(rc));
    ck_assert_uint_eq(berth_clog_used_bytes(log), before + bytes);
    ck_assert_uint_eq(berth_clog_last_seq(log), tf_last(f));
    return before;   /* the frame's offset */
}

/* Every record of the frames reads back from the journal as appended. */
static void expect_frames(berth_journal *j, tframe *frames, size_t count) {
    berth_journal_reader *r;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    for (size_t k = 0; k < count; k++) {
        const tframe *f = &frames[k];
        for (size_t i = 0; i < f->n; i++) {
            const berth_record *want = &f->recs[i];
            berth_record got;
            berth_jerr rc = berth_journal_read(r, want->seq, &got, NULL, NULL);
            loop_assert_msg(rc == BERTH_J_OK, "read %" PRIu64 ": %s", want->seq,
                            berth_jerr_name(rc));
            loop_assert_msg(str_same(got.command, want->command) &&
                            str_same(got.sentence, want->sentence) &&
                            str_same(got.actor, want->actor) &&
                            str_same(got.reqid, want->reqid) && got.code == want->code &&
                            got.time_ms == want->time_ms,
                            "seq %" PRIu64 " differs from what was appended", want->seq);
            loop_assert_msg(memcmp(got.hash, want->hash, BERTH_HASH_LEN) == 0 &&
                            memcmp(got.prev_hash, want->prev_hash, BERTH_HASH_LEN) == 0,
                            "seq %" PRIu64 "'s hashes differ from the log's", want->seq);
        }
    }
    berth_journal_reader_close(r);
}

/* The seqs of the frames' records that touched the worker (or, kind 'i',
 * the instance) called name. */
static size_t touched_seqs(const tframe *frames, size_t count, berth_history_kind kind,
                           const char *name, uint64_t *out, size_t cap) {
    size_t n = 0;
    berth_str want = berth_str_make(name, strlen(name));
    for (size_t k = 0; k < count; k++) {
        const tframe *f = &frames[k];
        for (size_t i = 0; f->touched != NULL && i < f->n; i++) {
            const berth_touched *t = &f->touched[i];
            bool hit = kind == BERTH_HISTORY_INSTANCE && str_same(t->instance, want);
            for (uint32_t w = 0; kind == BERTH_HISTORY_WORKER && w < t->worker_count; w++) {
                hit |= str_same(t->workers[w], want);
            }
            if (hit) {
                ck_assert_uint_lt(n, cap);
                out[n++] = f->recs[i].seq;
            }
        }
    }
    return n;
}

static void expect_history(berth_journal *j, const tframe *frames, size_t count,
                           berth_history_kind kind, const char *name) {
    static uint64_t want[history_cap], got[history_cap];
    size_t n_want = touched_seqs(frames, count, kind, name, want, history_cap);
    ck_assert_uint_gt(n_want, 0);   /* the test asks about a name that was touched */
    ck_assert_int_eq(berth_journal_lmdb_settle(j), BERTH_J_OK);
    berth_journal_reader *r;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    size_t n_got = 0;
    ck_assert_int_eq(berth_journal_history(r, kind, berth_str_make(name, strlen(name)), 1, got,
                                           history_cap, &n_got), BERTH_J_OK);
    berth_journal_reader_close(r);
    ck_assert_uint_eq(n_got, n_want);
    ck_assert_mem_eq(got, want, n_want * sizeof(uint64_t));
}

/* ---- the file -------------------------------------------------------------- */

static int file_open(const char *dir, int flags) {
    char path[400];
    log_path(path, sizeof(path), dir, BERTH_CLOG_FILE);
    int fd = open(path, flags | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    return fd;
}

/* Flip every bit of the byte at off in DIR/commit.log. */
static void flip_byte(const char *dir, uint64_t off) {
    int fd = file_open(dir, O_RDWR);
    uint8_t b;
    ck_assert_int_eq(pread(fd, &b, 1, (off_t)off), 1);
    b ^= 0xff;
    ck_assert_int_eq(pwrite(fd, &b, 1, (off_t)off), 1);
    ck_assert_int_eq(close(fd), 0);
}

static void zero_range(const char *dir, uint64_t off, size_t len) {
    int fd = file_open(dir, O_RDWR);
    uint8_t *zeros = calloc(1, len);
    ck_assert_ptr_nonnull(zeros);
    ck_assert_int_eq(pwrite(fd, zeros, len, (off_t)off), (ssize_t)len);
    free(zeros);
    ck_assert_int_eq(close(fd), 0);
}

/* True when DIR/commit.log holds only zeros in [off, off+len). */
static bool zeros_at(const char *dir, uint64_t off, size_t len) {
    int fd = file_open(dir, O_RDONLY);
    uint8_t *buf = malloc(len);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(pread(fd, buf, len, (off_t)off), (ssize_t)len);
    bool zero = true;
    for (size_t i = 0; i < len; i++) {
        zero &= buf[i] == 0;
    }
    free(buf);
    ck_assert_int_eq(close(fd), 0);
    return zero;
}

static uint64_t file_size(const char *dir, const char *name) {
    char path[400];
    log_path(path, sizeof(path), dir, name);
    struct stat st;
    if (stat(path, &st) != 0) {
        return UINT64_MAX;
    }
    return (uint64_t)st.st_size;
}

/* Recompute the checksum of the frame at off over its header fields and
 * payload_len bytes of payload, as a writer of that frame would have: the
 * frame is whole again, whatever its bytes now say. */
static void reseal(const char *dir, uint64_t off) {
    int fd = file_open(dir, O_RDWR);
    uint8_t head[BERTH_CLOG_HEADER_BYTES];
    ck_assert_int_eq(pread(fd, head, sizeof(head), (off_t)off), (ssize_t)sizeof(head));
    size_t payload_len = (size_t)head[28] << 24 | (size_t)head[29] << 16 |
                         (size_t)head[30] << 8 | head[31];
    uint8_t *buf = malloc(32 + payload_len);
    ck_assert_ptr_nonnull(buf);
    memcpy(buf, head, 32);
    ck_assert_int_eq(pread(fd, buf + 32, payload_len, (off_t)(off + BERTH_CLOG_HEADER_BYTES)),
                     (ssize_t)payload_len);
    uint8_t digest[BERTH_HASH_LEN];
    berth_sha256(buf, 32 + payload_len, digest);
    free(buf);
    ck_assert_int_eq(pwrite(fd, digest, sizeof(digest), (off_t)(off + 32)),
                     (ssize_t)sizeof(digest));
    ck_assert_int_eq(close(fd), 0);
}

static uint32_t be32_at(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void be32_to(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Rewrite the first record of the frame at off with its version as a
 * uint8 (0xcc 0x01) instead of a fixint, its own hash recomputed: the same
 * fields, bytes berth_record_encode never makes. The frame is resealed. */
static void recode_first_record(const char *dir, uint64_t off) {
    int fd = file_open(dir, O_RDWR);
    uint8_t head[BERTH_CLOG_HEADER_BYTES];
    ck_assert_int_eq(pread(fd, head, sizeof(head), (off_t)off), (ssize_t)sizeof(head));
    uint32_t len = be32_at(head + 28);
    uint8_t *p = malloc(len), *q = malloc(len + 1);
    ck_assert(p != NULL && q != NULL);
    ck_assert_int_eq(pread(fd, p, len, (off_t)(off + BERTH_CLOG_HEADER_BYTES)), (ssize_t)len);
    uint32_t rec_len = be32_at(p);
    uint32_t body_len = rec_len - 2 - BERTH_HASH_LEN;
    ck_assert_uint_eq(p[4], 0x99);   /* fixarray of 9 */
    ck_assert_uint_eq(p[5], BERTH_RECORD_VERSION);
    be32_to(q, rec_len + 1);
    q[4] = 0x99;
    q[5] = 0xcc;
    q[6] = BERTH_RECORD_VERSION;
    memcpy(q + 7, p + 6, body_len - 2);
    q[4 + body_len + 1] = 0xc4;
    q[4 + body_len + 2] = BERTH_HASH_LEN;
    berth_sha256(q + 4, body_len + 1, q + 4 + body_len + 3);
    memcpy(q + 4 + rec_len + 1, p + 4 + rec_len, len - 4 - rec_len);
    be32_to(head + 28, len + 1);
    ck_assert_int_eq(pwrite(fd, head, sizeof(head), (off_t)off), (ssize_t)sizeof(head));
    ck_assert_int_eq(pwrite(fd, q, len + 1, (off_t)(off + BERTH_CLOG_HEADER_BYTES)),
                     (ssize_t)len + 1);
    free(p);
    free(q);
    ck_assert_int_eq(close(fd), 0);
    reseal(dir, off);
}

/* payload_len of the frame at off, plus add (the bytes after it are the
 * frame's zero padding). */
static void payload_len_add(const char *dir, uint64_t off, uint32_t add) {
    int fd = file_open(dir, O_RDWR);
    uint8_t field[4];
    ck_assert_int_eq(pread(fd, field, 4, (off_t)(off + 28)), 4);
    be32_to(field, be32_at(field) + add);
    ck_assert_int_eq(pwrite(fd, field, 4, (off_t)(off + 28)), 4);
    ck_assert_int_eq(close(fd), 0);
}

static void put_byte(const char *dir, uint64_t off, uint8_t b) {
    int fd = file_open(dir, O_RDWR);
    ck_assert_int_eq(pwrite(fd, &b, 1, (off_t)off), 1);
    ck_assert_int_eq(close(fd), 0);
}

/* ---- tests ------------------------------------------------------------------ */

/* Frames with and without names, of varied sizes, move into a fresh
 * journal exactly; a second checkpoint moves nothing; appends after it
 * continue the chain. */
START_TEST(clog_round_trip) {
    char dir[300];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = jopen(dir, 0, 0);
    berth_clog *log = lopen(dir, 8 * mib);
    ck_assert_uint_eq(berth_clog_size_bytes(log), 8 * mib);
    ck_assert_uint_eq(berth_clog_last_seq(log), 0);

    tframe f[6];
    tf_make(&f[0], 1, 3, 0, true, 0);
    tf_make(&f[1], 4, 1, 5000, false, 0);
    tf_make(&f[2], 5, 36, 100, true, 0);
    tf_make(&f[3], 41, 1, BERTH_COMMAND_LEN_MAX - 64, true, 0);
    tf_make(&f[4], 42, 100, 10, false, 0);
    tf_make(&f[5], 142, 9, 20, true, 0);
    /* No append before the first checkpoint: the write offset is unknown. */
    ck_assert_int_eq(berth_clog_append(log, f[0].recs, f[0].touched, f[0].n), BERTH_J_INVALID);
    ck_assert_uint_eq(checkpoint_ok(log, j), 0);

    for (int k = 0; k < 5; k++) {
        append_ok(log, &f[k]);
        ck_assert_uint_eq(f[k].recs[0].version, BERTH_RECORD_VERSION);
    }
    /* Each frame chains on the one before it, from the empty head. */
    uint8_t zeros[BERTH_HASH_LEN] = { 0 };
    ck_assert_mem_eq(f[0].recs[0].prev_hash, zeros, BERTH_HASH_LEN);
    ck_assert_mem_eq(f[1].recs[0].prev_hash, tf_last_hash(&f[0]), BERTH_HASH_LEN);
    ck_assert_mem_eq(f[4].recs[0].prev_hash, tf_last_hash(&f[3]), BERTH_HASH_LEN);
    ck_assert_uint_eq(head_of(j, NULL), 0);   /* nothing in the journal yet */

    ck_assert_uint_eq(checkpoint_ok(log, j), 141);
    uint8_t hash[BERTH_HASH_LEN];
    ck_assert_uint_eq(head_of(j, hash), 141);
    ck_assert_mem_eq(hash, tf_last_hash(&f[4]), BERTH_HASH_LEN);
    expect_frames(j, f, 5);
    expect_history(j, f, 5, BERTH_HISTORY_WORKER, "w-all");
    expect_history(j, f, 5, BERTH_HISTORY_WORKER, "w-2");
    expect_history(j, f, 5, BERTH_HISTORY_INSTANCE, "inst-3");

    ck_assert_uint_eq(checkpoint_ok(log, j), 0);
    ck_assert_uint_eq(head_of(j, NULL), 141);

    append_ok(log, &f[5]);
    ck_assert_mem_eq(f[5].recs[0].prev_hash, hash, BERTH_HASH_LEN);
    ck_assert_uint_eq(checkpoint_ok(log, j), 9);
    ck_assert_uint_eq(head_of(j, hash), 150);
    ck_assert_mem_eq(hash, tf_last_hash(&f[5]), BERTH_HASH_LEN);
    expect_frames(j, f, 6);
    expect_history(j, f, 6, BERTH_HISTORY_WORKER, "w-all");
    for (int k = 0; k < 6; k++) {
        tf_free(&f[k]);
    }
    berth_clog_close(log);
    berth_journal_close(j);
}
END_TEST

/* Frames past the journal's limits per append (records, then bytes), and
 * frames with and without names side by side, all move exactly. */
START_TEST(clog_batches) {
    char dir[300];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = jopen(dir, 0, 0);
    berth_clog *log = lopen(dir, 64 * mib);
    ck_assert_uint_eq(checkpoint_ok(log, j), 0);
    enum { frames = 9 };
    tframe f[frames];
    uint64_t next = 1;
    for (int k = 0; k < 3; k++) {           /* 9000 records: over one append's count */
        tf_make(&f[k], next, 3000, 0, k != 1, 0);
        next += f[k].n;
    }
    for (int k = 3; k < 6; k++) {           /* ~17 MB: over one append's bytes */
        tf_make(&f[k], next, 350, 16000, k == 4, 0);
        next += f[k].n;
    }
    for (int k = 6; k < frames; k++) {      /* small, names on and off */
        tf_make(&f[k], next, 2, 0, k % 2 == 0, 0);
        next += f[k].n;
    }
    for (int k = 0; k < frames; k++) {
        append_ok(log, &f[k]);
    }
    ck_assert_uint_eq(checkpoint_ok(log, j), next - 1);
    uint8_t hash[BERTH_HASH_LEN];
    ck_assert_uint_eq(head_of(j, hash), next - 1);
    ck_assert_mem_eq(hash, tf_last_hash(&f[frames - 1]), BERTH_HASH_LEN);
    expect_frames(j, f, frames);
    expect_history(j, f, frames, BERTH_HISTORY_WORKER, "w-1");
    for (int k = 0; k < frames; k++) {
        tf_free(&f[k]);
    }
    berth_clog_close(log);
    berth_journal_close(j);
}
END_TEST

/* Acknowledged frames survive a crash before any checkpoint: the
 * checkpoint at the next start moves them all. */
START_TEST(clog_recovery) {
    char dir[300];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = jopen(dir, 0, 0);
    berth_clog *log = lopen(dir, 4 * mib);
    ck_assert_uint_eq(checkpoint_ok(log, j), 0);
    tframe f[3];
    tf_make(&f[0], 1, 5, 0, true, 0);
    tf_make(&f[1], 6, 20, 3000, true, 0);
    tf_make(&f[2], 26, 1, 0, false, 0);
    for (int k = 0; k < 3; k++) {
        append_ok(log, &f[k]);
    }
    berth_clog_close(log);   /* the crash */
    berth_journal_close(j);

    j = jopen(dir, 0, 0);
    ck_assert_uint_eq(head_of(j, NULL), 0);
    log = lopen(dir, 4 * mib);
    ck_assert_uint_eq(berth_clog_last_seq(log), 0);
    ck_assert_int_eq(berth_clog_append(log, f[2].recs, NULL, 1), BERTH_J_INVALID);
    ck_assert_uint_eq(checkpoint_ok(log, j), 26);
    uint8_t hash[BERTH_HASH_LEN];
    ck_assert_uint_eq(head_of(j, hash), 26);
    ck_assert_mem_eq(hash, tf_last_hash(&f[2]), BERTH_HASH_LEN);
    expect_frames(j, f, 3);
    expect_history(j, f, 3, BERTH_HISTORY_WORKER, "w-all");
    for (int k = 0; k < 3; k++) {
        tf_free(&f[k]);
    }
    berth_clog_close(log);
    berth_journal_close(j);
}
END_TEST

/* The last frame torn three ways (a payload byte, its header never
 * written, its last page never written): the frames before it move, OK,
 * and the next frame takes its seqs. While the writer still runs, the same
 * damage is CORRUPT: that process knows the frame was synced. */
START_TEST(clog_torn_last) {
    for (int variant = 0; variant < 3; variant++) {
        char dir[300];
        dir_fresh(dir, sizeof(dir));
        berth_journal *j = jopen(dir, 0, 0);
        berth_clog *log = lopen(dir, 4 * mib);
        ck_assert_uint_eq(checkpoint_ok(log, j), 0);
        tframe f[3], again;
        tf_make(&f[0], 1, 5, 0, true, 0);
        tf_make(&f[1], 6, 5, 0, false, 0);
        tf_make(&f[2], 11, 5, 3000, true, 0);   /* four pages */
        append_ok(log, &f[0]);
        append_ok(log, &f[1]);
        uint64_t off = append_ok(log, &f[2]);
        uint64_t end = berth_clog_used_bytes(log);
        if (variant == 0) {
            flip_byte(dir, off + BERTH_CLOG_HEADER_BYTES + 100);
        } else if (variant == 1) {
            zero_range(dir, off, BERTH_CLOG_HEADER_BYTES);
        } else {
            zero_range(dir, end - BERTH_CLOG_ALIGN, BERTH_CLOG_ALIGN);
        }
        if (variant == 0) {
            char at[64];
            snprintf(at, sizeof(at), "offset %" PRIu64, off);
            checkpoint_corrupt(log, j, "seq 15", at);
            ck_assert_uint_eq(head_of(j, NULL), 0);
        }
        berth_clog_close(log);   /* the crash */
        berth_journal_close(j);

        j = jopen(dir, 0, 0);
        log = lopen(dir, 4 * mib);
        ck_assert_uint_eq(checkpoint_ok(log, j), 10);
        uint8_t hash[BERTH_HASH_LEN];
        ck_assert_uint_eq(head_of(j, hash), 10);
        ck_assert_mem_eq(hash, tf_last_hash(&f[1]), BERTH_HASH_LEN);
        expect_frames(j, f, 2);
        /* Seqs 11.. again, another batch: the torn one was never acknowledged. */
        tf_make(&again, 11, 2, 0, true, 1);
        append_ok(log, &again);
        ck_assert_mem_eq(again.recs[0].prev_hash, hash, BERTH_HASH_LEN);
        ck_assert_uint_eq(checkpoint_ok(log, j), 2);
        expect_frames(j, &again, 1);
        tf_free(&again);
        for (int k = 0; k < 3; k++) {
            tf_free(&f[k]);
        }
        berth_clog_close(log);
        berth_journal_close(j);
    }
}
END_TEST

/* A damaged frame before a whole one (payload byte, header field, the
 * first frame) is CORRUPT, naming the damaged offset and the whole
 * frame's seqs; nothing reaches the journal, and pending says the same. */
START_TEST(clog_damaged_middle) {
    for (int variant = 0; variant < 3; variant++) {
        char dir[300];
        dir_fresh(dir, sizeof(dir));
        berth_journal *j = jopen(dir, 0, 0);
        berth_clog *log = lopen(dir, 4 * mib);
        ck_assert_uint_eq(checkpoint_ok(log, j), 0);
        tframe f[4];
        uint64_t off[4];
        for (int k = 0; k < 4; k++) {
            tf_make(&f[k], 1 + 5 * (uint64_t)k, 5, 200, k % 2 == 0, 0);
            off[k] = append_ok(log, &f[k]);
        }
        berth_clog_close(log);
        berth_journal_close(j);
        uint64_t damaged = variant == 2 ? off[0] : off[1];
        if (variant == 1) {
            flip_byte(dir, damaged + 23);   /* first_seq's low byte */
        } else {
            flip_byte(dir, damaged + BERTH_CLOG_HEADER_BYTES + 7);
        }

        j = jopen(dir, 0, 0);
        log = lopen(dir, 4 * mib);
        char at[64];
        snprintf(at, sizeof(at), "offset %" PRIu64 " after", damaged);
        checkpoint_corrupt(log, j, at, variant == 2 ? "holds seqs 6..10" : "holds seqs 11..15");
        ck_assert_uint_eq(head_of(j, NULL), 0);
        ck_assert_int_eq(berth_clog_append(log, f[0].recs, NULL, 1), BERTH_J_INVALID);
        checkpoint_corrupt(log, j, at, NULL);   /* as often as asked */
        uint64_t pending = 99;
        uint8_t zeros[BERTH_HASH_LEN] = { 0 };
        char err[err_len_max] = "";
        ck_assert_int_eq(berth_clog_pending(dir, 0, zeros, &pending, err, sizeof(err)),
                         BERTH_J_CORRUPT);
        ck_assert_msg(strstr(err, at) != NULL, "%s", err);
        for (int k = 0; k < 4; k++) {
            tf_free(&f[k]);
        }
        berth_clog_close(log);
        berth_journal_close(j);
    }
}
END_TEST

/* Generations: a shorter one after a checkpoint leaves the older frames
 * behind it, which a recovery ignores; a crash right after a checkpoint
 * leaves only frames the journal holds; frames the journal already holds
 * at the start of a generation (a checkpoint cut short) are skipped, even
 * damaged, and the rest move. */
START_TEST(clog_stale_generations) {
    char dir[300];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = jopen(dir, 0, 0);
    berth_clog *log = lopen(dir, 4 * mib);
    ck_assert_uint_eq(checkpoint_ok(log, j), 0);
    tframe g1[3], g2, g3[2];
    for (int k = 0; k < 3; k++) {
        tf_make(&g1[k], 1 + 10 * (uint64_t)k, 10, 2000, true, 0);
        append_ok(log, &g1[k]);
    }
    ck_assert_uint_eq(checkpoint_ok(log, j), 30);
    tf_make(&g2, 31, 2, 0, true, 0);
    ck_assert_uint_eq(append_ok(log, &g2), 0);   /* over g1's first frame */
    berth_clog_close(log);   /* crash: g1's later frames follow g2 in the file */
    berth_journal_close(j);

    j = jopen(dir, 0, 0);
    log = lopen(dir, 4 * mib);
    ck_assert_uint_eq(checkpoint_ok(log, j), 2);
    uint8_t hash[BERTH_HASH_LEN];
    ck_assert_uint_eq(head_of(j, hash), 32);
    ck_assert_mem_eq(hash, tf_last_hash(&g2), BERTH_HASH_LEN);
    expect_frames(j, g1, 3);
    expect_frames(j, &g2, 1);
    ck_assert_uint_eq(checkpoint_ok(log, j), 0);   /* running, no new frame */
    berth_clog_close(log);   /* crash right after a checkpoint */
    berth_journal_close(j);

    j = jopen(dir, 0, 0);
    log = lopen(dir, 4 * mib);
    ck_assert_uint_eq(checkpoint_ok(log, j), 0);
    ck_assert_uint_eq(head_of(j, NULL), 32);
    tf_make(&g3[0], 33, 3, 0, true, 0);
    tf_make(&g3[1], 36, 3, 0, false, 0);
    uint64_t off0 = append_ok(log, &g3[0]);
    append_ok(log, &g3[1]);
    berth_clog_close(log);
    /* A checkpoint that moved g3[0] and then died: the journal holds it. */
    berth_record copy[3];
    memcpy(copy, g3[0].recs, sizeof(copy));
    ck_assert_int_eq(berth_journal_append(j, copy, g3[0].touched, 3), BERTH_J_OK);
    ck_assert_mem_eq(copy[2].hash, tf_last_hash(&g3[0]), BERTH_HASH_LEN);
    berth_journal_close(j);
    flip_byte(dir, off0 + BERTH_CLOG_HEADER_BYTES + 5);   /* stale: never read again */

    j = jopen(dir, 0, 0);
    log = lopen(dir, 4 * mib);
    ck_assert_uint_eq(checkpoint_ok(log, j), 3);
    ck_assert_uint_eq(head_of(j, hash), 38);
    ck_assert_mem_eq(hash, tf_last_hash(&g3[1]), BERTH_HASH_LEN);
    expect_frames(j, g3, 2);
    for (int k = 0; k < 3; k++) {
        tf_free(&g1[k]);
    }
    tf_free(&g2);
    tf_free(&g3[0]);
    tf_free(&g3[1]);
    berth_clog_close(log);
    berth_journal_close(j);
}
END_TEST

/* A frame whose checksum matches but whose contents do not hold together
 * (a record's hash not its body's, bytes after the last record, a record
 * that does not decode, a record in bytes append never makes, which the
 * journal would store with another hash) was never written by append:
 * CORRUPT, and nothing reaches the journal, not even the whole frames
 * before it. */
START_TEST(clog_whole_but_bad) {
    for (int variant = 0; variant < 4; variant++) {
        char dir[300];
        dir_fresh(dir, sizeof(dir));
        berth_journal *j = jopen(dir, 0, 0);
        berth_clog *log = lopen(dir, 2 * mib);
        ck_assert_uint_eq(checkpoint_ok(log, j), 0);
        tframe f[2];
        tf_make(&f[0], 1, 3, 0, true, 0);
        tf_make(&f[1], 4, 3, 0, true, 0);
        append_ok(log, &f[0]);
        uint64_t off = append_ok(log, &f[1]);
        berth_clog_close(log);
        /* The first record starts after its u32 length; its command text
         * (after array, version, seq, uint64 time, actor, reqid) is ASCII. */
        uint64_t first_rec = off + BERTH_CLOG_HEADER_BYTES + 4;
        const char *needle;
        if (variant == 0) {
            put_byte(dir, first_rec + 30, 'Z');      /* inside seq 4's command */
            needle = "its hash does not match";
        } else if (variant == 1) {
            payload_len_add(dir, off, 4);            /* four zero bytes after the names */
            needle = "bytes follow its last record";
        } else if (variant == 2) {
            put_byte(dir, first_rec, 0x00);          /* not an array: does not decode */
            needle = "record for seq 4 is bad";
        } else {
            recode_first_record(dir, off);
            needle = "another encoding";
        }
        reseal(dir, off);
        log = lopen(dir, 2 * mib);
        char at[64];
        snprintf(at, sizeof(at), "offset %" PRIu64, off);
        checkpoint_corrupt(log, j, at, needle);
        ck_assert_uint_eq(head_of(j, NULL), 0);
        tf_free(&f[0]);
        tf_free(&f[1]);
        berth_clog_close(log);
        berth_journal_close(j);
    }
}
END_TEST

/* A stale frame is skipped by its header alone; if that header lies about
 * its length, the skip may jump over frames the journal lacks, so the
 * damage check reads those offsets too: CORRUPT, never a silent drop. */
START_TEST(clog_stale_header_damaged) {
    char dir[300];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = jopen(dir, 0, 0);
    berth_clog *log = lopen(dir, 4 * mib);
    ck_assert_uint_eq(checkpoint_ok(log, j), 0);
    tframe f[3];
    uint64_t off[3];
    for (int k = 0; k < 3; k++) {
        tf_make(&f[k], 1 + 3 * (uint64_t)k, 3, 0, false, 0);
        off[k] = append_ok(log, &f[k]);
    }
    berth_clog_close(log);
    berth_record copy[3];
    memcpy(copy, f[0].recs, sizeof(copy));
    ck_assert_int_eq(berth_journal_append(j, copy, NULL, 3), BERTH_J_OK);   /* f[0] moved */
    put_byte(dir, off[0] + 29, 0x10);   /* payload_len now over 1 MiB: past f[1] and f[2] */
    log = lopen(dir, 4 * mib);
    char at[64];
    snprintf(at, sizeof(at), "whole frame at offset %" PRIu64 " holds seqs 4..6", off[1]);
    checkpoint_corrupt(log, j, at, NULL);
    ck_assert_uint_eq(head_of(j, NULL), 3);
    for (int k = 0; k < 3; k++) {
        tf_free(&f[k]);
    }
    berth_clog_close(log);
    berth_journal_close(j);
}
END_TEST

/* A log whose first frame is not the seq after the journal's head (a gap),
 * or is that seq but chains on another record (another history), or
 * starts at or below the head and ends past it, is CORRUPT: nothing moves. */
START_TEST(clog_gap_and_chain) {
    char dir1[300], dir2[300], dir3[300];
    dir_fresh(dir1, sizeof(dir1));
    dir_fresh(dir2, sizeof(dir2));
    dir_fresh(dir3, sizeof(dir3));
    tframe base, other, f[2];
    tf_make(&base, 1, 3, 0, false, 0);
    tf_make(&other, 1, 3, 0, false, 1);
    berth_journal *j = jopen(dir1, 0, 0);
    ck_assert_int_eq(berth_journal_append(j, base.recs, NULL, 3), BERTH_J_OK);
    berth_clog *log = lopen(dir1, 2 * mib);
    ck_assert_uint_eq(checkpoint_ok(log, j), 0);
    ck_assert_uint_eq(berth_clog_last_seq(log), 3);
    tf_make(&f[0], 4, 3, 0, true, 0);
    tf_make(&f[1], 7, 2, 0, true, 0);
    append_ok(log, &f[0]);
    append_ok(log, &f[1]);
    berth_clog_close(log);
    berth_journal_close(j);

    /* A gap: an empty journal beside a log that starts at seq 4. */
    berth_journal *j2 = jopen(dir2, 0, 0);
    log = lopen(dir1, 2 * mib);
    checkpoint_corrupt(log, j2, "offset 0 holds seqs 4..6", "a gap");
    ck_assert_uint_eq(head_of(j2, NULL), 0);
    /* Another history: seqs 1..3 with other records, so seq 4 does not chain. */
    ck_assert_int_eq(berth_journal_append(j2, other.recs, NULL, 3), BERTH_J_OK);
    checkpoint_corrupt(log, j2, "offset 0", "does not chain");
    ck_assert_uint_eq(head_of(j2, NULL), 3);
    berth_journal_close(j2);
    /* Partly at or below the head: a journal that already holds seqs 1..5. */
    berth_journal *j3 = jopen(dir3, 0, 0);
    ck_assert_int_eq(berth_journal_append(j3, base.recs, NULL, 3), BERTH_J_OK);
    berth_record two[2];
    memcpy(two, f[0].recs, sizeof(two));
    ck_assert_int_eq(berth_journal_append(j3, two, NULL, 2), BERTH_J_OK);
    checkpoint_corrupt(log, j3, "holds seqs 4..6", "partly at or below the head");
    ck_assert_uint_eq(head_of(j3, NULL), 5);
    berth_journal_close(j3);

    /* With its own journal the same log is sound. */
    j = jopen(dir1, 0, 0);
    ck_assert_uint_eq(checkpoint_ok(log, j), 5);
    expect_frames(j, f, 2);
    tf_free(&base);
    tf_free(&other);
    tf_free(&f[0]);
    tf_free(&f[1]);
    berth_clog_close(log);
    berth_journal_close(j);
}
END_TEST

/* A 1 MiB log fills: the append that does not fit is FULL and writes
 * nothing; after a checkpoint the same append fits at offset 0. A frame
 * bigger than the whole file is INVALID. */
START_TEST(clog_full) {
    char dir[300];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = jopen(dir, 0, 0);
    berth_clog *log = lopen(dir, BERTH_CLOG_BYTES_MIN);
    ck_assert_uint_eq(checkpoint_ok(log, j), 0);
    enum { frames_max = 20 };
    tframe f[frames_max];
    int count = 0;
    berth_jerr rc = BERTH_J_OK;
    while (rc == BERTH_J_OK) {
        ck_assert_int_lt(count, frames_max);
        tf_make(&f[count], berth_clog_last_seq(log) + 1, 12, 8000, true, 0);
        uint64_t used = berth_clog_used_bytes(log);
        rc = berth_clog_append(log, f[count].recs, f[count].touched, f[count].n);
        if (rc == BERTH_J_OK) {
            count++;
        } else {
            ck_assert_uint_eq(berth_clog_used_bytes(log), used);
        }
    }
    ck_assert_int_eq(rc, BERTH_J_FULL);
    ck_assert_int_ge(count, 5);
    uint64_t used = berth_clog_used_bytes(log);
    ck_assert_uint_eq(berth_clog_last_seq(log), tf_last(&f[count - 1]));
    ck_assert(zeros_at(dir, used, (size_t)(BERTH_CLOG_BYTES_MIN - used)));   /* nothing written */
    ck_assert_int_eq(berth_clog_append(log, f[count].recs, f[count].touched, f[count].n),
                     BERTH_J_FULL);

    tframe huge;
    tf_make(&huge, berth_clog_last_seq(log) + 1, 80, 16000, false, 0);
    ck_assert_int_eq(berth_clog_append(log, huge.recs, NULL, huge.n), BERTH_J_INVALID);
    ck_assert_uint_eq(berth_clog_used_bytes(log), used);

    ck_assert_uint_eq(checkpoint_ok(log, j), tf_last(&f[count - 1]));
    ck_assert_uint_eq(append_ok(log, &f[count]), 0);
    ck_assert_uint_eq(checkpoint_ok(log, j), f[count].n);
    expect_frames(j, f, (size_t)count + 1);
    for (int k = 0; k <= count; k++) {
        tf_free(&f[k]);
    }
    tf_free(&huge);
    berth_clog_close(log);
    berth_journal_close(j);
}
END_TEST

/* What append refuses, it refuses without writing: a seq gap, no records,
 * too many, a record or a name over its limits, more bytes than a batch. */
START_TEST(clog_append_invalid) {
    char dir[300];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = jopen(dir, 0, 0);
    berth_clog *log = lopen(dir, 2 * mib);
    ck_assert_uint_eq(checkpoint_ok(log, j), 0);
    tframe f;
    tf_make(&f, 2, 3, 0, true, 0);
    ck_assert_int_eq(berth_clog_append(log, f.recs, f.touched, 3), BERTH_J_INVALID);  /* gap */
    tf_free(&f);
    tf_make(&f, 1, 3, 0, true, 0);
    ck_assert_int_eq(berth_clog_append(log, f.recs, f.touched, 0), BERTH_J_INVALID);
    f.recs[1].command = berth_str_make("", 0);
    ck_assert_int_eq(berth_clog_append(log, f.recs, f.touched, 3), BERTH_J_INVALID);
    ck_assert_uint_eq(berth_clog_frame_bytes(f.recs, f.touched, 3), 0);
    f.recs[1].command = f.recs[0].command;
    f.touched[1].worker_count = 2;
    f.workers[2 * 1 + 1] = berth_str_make("", 0);   /* an empty worker name */
    ck_assert_int_eq(berth_clog_append(log, f.recs, f.touched, 3), BERTH_J_INVALID);
    f.workers[2 * 1 + 1] = berth_str_make("w-x", 3);
    f.touched[1].worker_count = BERTH_PLACEMENT_WORKERS_MAX + 1;
    ck_assert_int_eq(berth_clog_append(log, f.recs, f.touched, 3), BERTH_J_INVALID);
    f.touched[1].worker_count = 2;
    ck_assert_uint_eq(berth_clog_used_bytes(log), 0);
    ck_assert(zeros_at(dir, 0, BERTH_CLOG_ALIGN));
    append_ok(log, &f);
    tf_free(&f);

    tframe many;
    tf_make(&many, 4, BERTH_BATCH_RECORDS_MAX + 1, 0, false, 0);
    ck_assert_int_eq(berth_clog_append(log, many.recs, NULL, many.n), BERTH_J_INVALID);
    tf_free(&many);
    tframe big;   /* ~17.6 MB of records: over a batch's bytes */
    tf_make(&big, 4, 1100, 16000, false, 0);
    ck_assert_int_eq(berth_clog_append(log, big.recs, NULL, big.n), BERTH_J_INVALID);
    tf_free(&big);
    ck_assert_uint_eq(berth_clog_last_seq(log), 3);
    ck_assert_uint_eq(checkpoint_ok(log, j), 3);
    berth_clog_close(log);
    berth_journal_close(j);
}
END_TEST

static const char *fault_step;

static int fault_eio(const char *step) {
    return strcmp(step, fault_step) == 0 ? EIO : 0;
}

/* A failed write or sync is IO and sticky (every later append and
 * checkpoint is IO). After a restart a frame whose write failed is not
 * there; one whose sync failed was written and is whole, so it moves. */
START_TEST(clog_faults) {
    for (int variant = 0; variant < 2; variant++) {
        fault_step = variant == 0 ? "write" : "sync";
        char dir[300];
        dir_fresh(dir, sizeof(dir));
        berth_journal *j = jopen(dir, 0, 0);
        berth_clog *log = lopen(dir, 2 * mib);
        ck_assert_uint_eq(checkpoint_ok(log, j), 0);
        tframe f[3];
        tf_make(&f[0], 1, 4, 0, true, 0);
        tf_make(&f[1], 5, 4, 0, true, 0);
        tf_make(&f[2], 9, 4, 0, true, 0);
        append_ok(log, &f[0]);
        uint64_t used = berth_clog_used_bytes(log);
        berth_clog_fault_hook_set(fault_eio);
        ck_assert_int_eq(berth_clog_append(log, f[1].recs, f[1].touched, f[1].n), BERTH_J_IO);
        berth_clog_fault_hook_set(NULL);
        ck_assert_uint_eq(berth_clog_used_bytes(log), used);
        ck_assert_uint_eq(berth_clog_last_seq(log), 4);
        ck_assert(zeros_at(dir, used, BERTH_CLOG_ALIGN) == (variant == 0));
        ck_assert_int_eq(berth_clog_append(log, f[1].recs, f[1].touched, f[1].n), BERTH_J_IO);
        char err[err_len_max] = "";
        uint64_t moved = 99;
        ck_assert_int_eq(berth_clog_checkpoint(log, j, &moved, err, sizeof(err)), BERTH_J_IO);
        ck_assert_uint_eq(moved, 0);
        ck_assert_uint_gt(strlen(err), 0);
        ck_assert_uint_eq(head_of(j, NULL), 0);
        berth_clog_close(log);   /* berthd stops */

        log = lopen(dir, 2 * mib);
        uint64_t moved_at_start = variant == 0 ? 4 : 8;
        ck_assert_uint_eq(checkpoint_ok(log, j), moved_at_start);
        expect_frames(j, f, variant == 0 ? 1 : 2);
        tframe *next = variant == 0 ? &f[1] : &f[2];
        append_ok(log, next);
        ck_assert_uint_eq(checkpoint_ok(log, j), 4);
        expect_frames(j, next, 1);
        for (int k = 0; k < 3; k++) {
            tf_free(&f[k]);
        }
        berth_clog_close(log);
        berth_journal_close(j);
    }
}
END_TEST

/* The journal's own append failing in a checkpoint (its map at a tiny
 * cap: FULL) returns that error and leaves the log as it was: appends go
 * on after its frames, and with room the same frames move. */
START_TEST(clog_journal_full) {
    char dir[300];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = jopen(dir, mib, mib);
    berth_clog *log = lopen(dir, 16 * mib);
    ck_assert_uint_eq(checkpoint_ok(log, j), 0);
    tframe f[5];
    for (int k = 0; k < 4; k++) {
        tf_make(&f[k], 1 + 40 * (uint64_t)k, 40, 16000, true, 0);   /* ~2.6 MB in all */
        append_ok(log, &f[k]);
    }
    uint64_t used = berth_clog_used_bytes(log);
    char err[err_len_max] = "";
    uint64_t moved = 99;
    berth_jerr rc = berth_clog_checkpoint(log, j, &moved, err, sizeof(err));
    ck_assert_msg(rc == BERTH_J_FULL, "%s %s", berth_jerr_name(rc), err);
    ck_assert_msg(strstr(err, "FULL") != NULL, "%s", err);
    ck_assert_uint_eq(moved, 0);
    ck_assert_uint_eq(head_of(j, NULL), 0);
    ck_assert_uint_eq(berth_clog_used_bytes(log), used);   /* not reset */
    ck_assert_uint_eq(berth_clog_last_seq(log), 160);
    tf_make(&f[4], 161, 3, 0, false, 0);
    ck_assert_uint_eq(append_ok(log, &f[4]), used);
    ck_assert_int_eq(berth_clog_checkpoint(log, j, &moved, err, sizeof(err)), BERTH_J_FULL);
    berth_journal_close(j);

    j = jopen(dir, 0, 0);
    ck_assert_uint_eq(checkpoint_ok(log, j), 163);
    expect_frames(j, f, 5);
    expect_history(j, f, 5, BERTH_HISTORY_WORKER, "w-0");
    for (int k = 0; k < 5; k++) {
        tf_free(&f[k]);
    }
    berth_clog_close(log);
    berth_journal_close(j);
}
END_TEST

/* pending counts what a checkpoint would move, from any head at a frame
 * boundary; reports CORRUPT as checkpoint does; writes nothing; and is 0
 * when there is no log. */
START_TEST(clog_pending) {
    char dir[300];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = jopen(dir, 0, 0);
    uint8_t zeros[BERTH_HASH_LEN] = { 0 };
    char err[err_len_max] = "";
    uint64_t n = 99;
    ck_assert_int_eq(berth_clog_pending(dir, 0, zeros, &n, err, sizeof(err)), BERTH_J_OK);
    ck_assert_uint_eq(n, 0);
    ck_assert(!berth_clog_exists(dir));   /* and it made none */

    berth_clog *log = lopen(dir, 2 * mib);
    ck_assert(berth_clog_exists(dir));
    ck_assert_uint_eq(checkpoint_ok(log, j), 0);
    tframe f[3];
    tf_make(&f[0], 1, 4, 0, true, 0);
    tf_make(&f[1], 5, 6, 0, false, 0);
    tf_make(&f[2], 11, 2, 0, true, 0);
    for (int k = 0; k < 3; k++) {
        append_ok(log, &f[k]);
    }
    uint8_t *before = malloc(2 * mib), *after = malloc(2 * mib);
    ck_assert(before != NULL && after != NULL);
    int fd = file_open(dir, O_RDONLY);
    ck_assert_int_eq(pread(fd, before, 2 * mib, 0), 2 * mib);
    ck_assert_int_eq(berth_clog_pending(dir, 0, zeros, &n, err, sizeof(err)), BERTH_J_OK);
    ck_assert_uint_eq(n, 12);
    ck_assert_int_eq(berth_clog_pending(dir, 4, tf_last_hash(&f[0]), &n, err, sizeof(err)),
                     BERTH_J_OK);
    ck_assert_uint_eq(n, 8);
    ck_assert_int_eq(berth_clog_pending(dir, 12, tf_last_hash(&f[2]), &n, err, sizeof(err)),
                     BERTH_J_OK);
    ck_assert_uint_eq(n, 0);
    /* Seq 4 with another hash: not the history these frames chain on. */
    ck_assert_int_eq(berth_clog_pending(dir, 4, zeros, &n, err, sizeof(err)), BERTH_J_CORRUPT);
    ck_assert_msg(strstr(err, "does not chain") != NULL, "%s", err);
    ck_assert_int_eq(pread(fd, after, 2 * mib, 0), 2 * mib);
    ck_assert_mem_eq(before, after, 2 * mib);
    ck_assert_int_eq(close(fd), 0);
    free(before);
    free(after);

    ck_assert_uint_eq(checkpoint_ok(log, j), 12);
    uint8_t hash[BERTH_HASH_LEN];
    ck_assert_uint_eq(head_of(j, hash), 12);
    ck_assert_int_eq(berth_clog_pending(dir, 12, hash, &n, err, sizeof(err)), BERTH_J_OK);
    ck_assert_uint_eq(n, 0);
    tframe g;
    tf_make(&g, 13, 5, 0, true, 0);
    append_ok(log, &g);
    ck_assert_int_eq(berth_clog_pending(dir, 12, hash, &n, err, sizeof(err)), BERTH_J_OK);
    ck_assert_uint_eq(n, 5);
    /* From an empty head the log starts at 13: a gap. */
    ck_assert_int_eq(berth_clog_pending(dir, 0, zeros, &n, err, sizeof(err)), BERTH_J_CORRUPT);
    ck_assert_msg(strstr(err, "offset 0") != NULL && strstr(err, "a gap") != NULL, "%s", err);
    berth_clog_close(log);

    /* A file no open would take. */
    char path[400];
    log_path(path, sizeof(path), dir, BERTH_CLOG_FILE);
    ck_assert_int_eq(truncate(path, 2 * mib + 100), 0);
    ck_assert_int_eq(berth_clog_pending(dir, 12, hash, &n, err, sizeof(err)), BERTH_J_CORRUPT);
    for (int k = 0; k < 3; k++) {
        tf_free(&f[k]);
    }
    tf_free(&g);
    berth_journal_close(j);
}
END_TEST

/* Open: a size outside the bounds is INVALID and makes no file; a new
 * file is zero-filled to the size asked; an existing one keeps its size;
 * one of a bad size (or not a file) is INVALID; no room is FULL and
 * leaves nothing behind. */
START_TEST(clog_open_sizes) {
    char dir[300];
    dir_fresh(dir, sizeof(dir));
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    char err[err_len_max] = "";
    berth_clog *log = (berth_clog *)&err;
    const uint64_t bad[] = { 0, BERTH_CLOG_BYTES_MIN - BERTH_CLOG_ALIGN,
                             BERTH_CLOG_BYTES_MIN + 100, BERTH_CLOG_BYTES_MAX + BERTH_CLOG_ALIGN };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_int_eq(berth_clog_open(&log, dir, bad[i], err, sizeof(err)), BERTH_J_INVALID);
        ck_assert_ptr_null(log);
        ck_assert_uint_gt(strlen(err), 0);
        ck_assert(!berth_clog_exists(dir));
    }

    const uint64_t size = BERTH_CLOG_BYTES_MIN + 3 * BERTH_CLOG_ALIGN;
    log = lopen(dir, size);
    ck_assert_uint_eq(berth_clog_size_bytes(log), size);
    ck_assert_uint_eq(berth_clog_used_bytes(log), 0);
    berth_clog_close(log);
    ck_assert_uint_eq(file_size(dir, BERTH_CLOG_FILE), size);
    ck_assert_uint_eq(file_size(dir, BERTH_CLOG_FILE ".new"), UINT64_MAX);
    ck_assert(zeros_at(dir, 0, (size_t)size));
    log = lopen(dir, 2 * size);   /* bytes ignored */
    ck_assert_uint_eq(berth_clog_size_bytes(log), size);
    berth_clog_close(log);
    log = lopen(dir, 1);           /* even out of bounds */
    berth_clog_close(log);

    char path[400];
    log_path(path, sizeof(path), dir, BERTH_CLOG_FILE);
    const uint64_t sizes[] = { size + 100, BERTH_CLOG_BYTES_MIN / 2, 0 };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        ck_assert_int_eq(truncate(path, (off_t)sizes[i]), 0);
        ck_assert_int_eq(berth_clog_open(&log, dir, size, err, sizeof(err)), BERTH_J_INVALID);
        ck_assert_ptr_null(log);
        ck_assert_msg(strstr(err, path) != NULL, "%s", err);
    }
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    ck_assert_int_eq(berth_clog_open(&log, dir, size, err, sizeof(err)), BERTH_J_INVALID);
    ck_assert_int_eq(rmdir(path), 0);

    /* No room: a 512 KiB tmpfs for a 1 MiB log (needs root to mount). */
    char disk[300], small[400];
    mount_path(disk, sizeof(disk));
    ck_assert_int_eq(mkdir(disk, 0700), 0);
    if (mount("tmpfs", disk, "tmpfs", 0, "size=512k") != 0) {
        fprintf(stderr, "clog_open_sizes: cannot mount a tmpfs (%s): FULL not checked\n",
                strerror(errno));
        return;
    }
    snprintf(small, sizeof(small), "%s/data", disk);
    ck_assert_int_eq(mkdir(small, 0700), 0);
    ck_assert_int_eq(berth_clog_open(&log, small, BERTH_CLOG_BYTES_MIN, err, sizeof(err)),
                     BERTH_J_FULL);
    ck_assert_ptr_null(log);
    ck_assert(!berth_clog_exists(small));
    ck_assert_uint_eq(file_size(small, BERTH_CLOG_FILE ".new"), UINT64_MAX);
    ck_assert_int_eq(umount(disk), 0);
}
END_TEST

static Suite *clog_suite(void) {
    Suite *s = suite_create("commit_log");
    TCase *tc = tcase_create("clog");
    tcase_add_unchecked_fixture(tc, root_make, root_remove);
    tcase_add_test(tc, clog_round_trip);
    tcase_add_test(tc, clog_batches);
    tcase_add_test(tc, clog_recovery);
    tcase_add_test(tc, clog_torn_last);
    tcase_add_test(tc, clog_damaged_middle);
    tcase_add_test(tc, clog_stale_generations);
    tcase_add_test(tc, clog_gap_and_chain);
    tcase_add_test(tc, clog_whole_but_bad);
    tcase_add_test(tc, clog_stale_header_damaged);
    tcase_add_test(tc, clog_full);
    tcase_add_test(tc, clog_append_invalid);
    tcase_add_test(tc, clog_faults);
    tcase_add_test(tc, clog_journal_full);
    tcase_add_test(tc, clog_pending);
    tcase_add_test(tc, clog_open_sizes);
    /* Only guards against a hang; no assertion is timed. */
    tcase_set_timeout(tc, 240);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *runner = srunner_create(clog_suite());
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
