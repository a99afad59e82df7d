/* test_commit_log.c — owns the commit log's unit tests (ctest `commit_log`).
 *
 * The log (journal/commit_log.h) is driven through its API beside a real
 * LMDB journal, and the damage a crash or a bad disk leaves is planted with
 * pwrite straight into DIR/commit.log or DIR/commit.log.2. A "crash" is
 * closing the log and the journal without a checkpoint and opening both
 * again: a killed process leaves the same bytes in the page cache. A journal
 * whose appends or syncs fail on demand (fjournal) wraps the real one where
 * a checkpoint must fail midway. Every data directory lives under one
 * mkdtemp root made and removed by the unchecked fixture. */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
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
#include "test_valgrind.h"

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

/* Append f; it must take frame_bytes at the offset the active file stood
 * at, and count them in both used figures. */
static uint64_t append_ok(berth_clog *log, tframe *f) {
    uint64_t before = berth_clog_active_used_bytes(log);
    uint64_t used = berth_clog_used_bytes(log);
    uint64_t bytes = berth_clog_frame_bytes(f->recs, f->touched, f->n);
    ck_assert_uint_gt(bytes, 0);
    ck_assert_uint_eq(bytes % BERTH_CLOG_ALIGN, 0);
    berth_jerr rc = berth_clog_append(log, f->recs, f->touched, f->n);
    ck_assert_msg(rc == BERTH_J_OK, "append %" PRIu64 "..: %s", f->recs[0].seq,
                  berth_jerr_name(rc));
    ck_assert_uint_eq(berth_clog_active_used_bytes(log), before + bytes);
    ck_assert_uint_eq(berth_clog_used_bytes(log), used + bytes);
    ck_assert_uint_eq(berth_clog_last_seq(log), tf_last(f));
    return before;   /* the frame's offset in the active file */
}

/* A seal that must leave a file sealed; the active file is then empty
 * unless one was sealed already. */
static void seal_ok(berth_clog *log) {
    ck_assert(berth_clog_seal(log));
}

/* A checkpoint of the sealed file that must succeed; the records it moved.
 * The journal's head is then the sealed file's last seq: the active file's
 * frames follow it. */
static uint64_t sealed_ok(berth_clog *log, berth_journal *j) {
    uint64_t moved = 12345;
    uint64_t active = berth_clog_active_used_bytes(log);
    char err[err_len_max] = "";
    berth_jerr rc = berth_clog_checkpoint_sealed(log, j, &moved, err, sizeof(err));
    ck_assert_msg(rc == BERTH_J_OK, "checkpoint_sealed: %s %s", berth_jerr_name(rc), err);
    ck_assert_uint_eq(berth_clog_used_bytes(log), active);   /* only the active file's */
    return moved;
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

/* The helpers named *_in act on DIR/name; the others on DIR/commit.log. */
static int file_open_in(const char *dir, const char *name, int flags) {
    char path[400];
    log_path(path, sizeof(path), dir, name);
    int fd = open(path, flags | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    return fd;
}

static int file_open(const char *dir, int flags) {
    return file_open_in(dir, BERTH_CLOG_FILE, flags);
}

/* Flip every bit of the byte at off. */
static void flip_byte_in(const char *dir, const char *name, uint64_t off) {
    int fd = file_open_in(dir, name, O_RDWR);
    uint8_t b;
    ck_assert_int_eq(pread(fd, &b, 1, (off_t)off), 1);
    b ^= 0xff;
    ck_assert_int_eq(pwrite(fd, &b, 1, (off_t)off), 1);
    ck_assert_int_eq(close(fd), 0);
}

static void flip_byte(const char *dir, uint64_t off) {
    flip_byte_in(dir, BERTH_CLOG_FILE, off);
}

static void zero_range_in(const char *dir, const char *name, uint64_t off, size_t len) {
    int fd = file_open_in(dir, name, O_RDWR);
    uint8_t *zeros = calloc(1, len);
    ck_assert_ptr_nonnull(zeros);
    ck_assert_int_eq(pwrite(fd, zeros, len, (off_t)off), (ssize_t)len);
    free(zeros);
    ck_assert_int_eq(close(fd), 0);
}

static void zero_range(const char *dir, uint64_t off, size_t len) {
    zero_range_in(dir, BERTH_CLOG_FILE, off, len);
}

/* first_seq of the frame header at off (0: no header there). */
static uint64_t frame_seq_at(const char *dir, const char *name, uint64_t off) {
    int fd = file_open_in(dir, name, O_RDONLY);
    uint8_t head[BERTH_CLOG_HEADER_BYTES];
    ck_assert_int_eq(pread(fd, head, sizeof(head), (off_t)off), (ssize_t)sizeof(head));
    ck_assert_int_eq(close(fd), 0);
    if (memcmp(head, "BRTHCLOG", 8) != 0) {
        return 0;
    }
    uint64_t seq = 0;
    for (int i = 16; i < 24; i++) {
        seq = seq << 8 | head[i];
    }
    return seq;
}

/* True when DIR/name holds only zeros in [off, off+len). */
static bool zeros_at_in(const char *dir, const char *name, uint64_t off, size_t len) {
    int fd = file_open_in(dir, name, O_RDONLY);
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

static bool zeros_at(const char *dir, uint64_t off, size_t len) {
    return zeros_at_in(dir, BERTH_CLOG_FILE, off, len);
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
    ck_assert_uint_eq(berth_clog_size_bytes(log), 16 * mib);   /* two files */
    ck_assert_uint_eq(berth_clog_active_size_bytes(log), 8 * mib);
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
        /* Said for the log when its header still reads (not variant 1's). */
        uint64_t df = 0, dl = 0, doff = 0;
        const char *dpath = NULL;
        bool dropped = berth_clog_dropped(log, &df, &dl, &dpath, &doff);
        ck_assert(dropped == (variant != 1));
        if (dropped) {
            ck_assert_uint_eq(df, 11);
            ck_assert_uint_eq(dl, 15);
            ck_assert_uint_eq(doff, off);
            ck_assert_ptr_nonnull(strstr(dpath, BERTH_CLOG_FILE));
        }
        uint8_t hash[BERTH_HASH_LEN];
        ck_assert_uint_eq(head_of(j, hash), 10);
        ck_assert_mem_eq(hash, tf_last_hash(&f[1]), BERTH_HASH_LEN);
        expect_frames(j, f, 2);
        /* Seqs 11.. again, another batch: the torn one was never acknowledged. */
        tf_make(&again, 11, 2, 0, true, 1);
        append_ok(log, &again);
        ck_assert_mem_eq(again.recs[0].prev_hash, hash, BERTH_HASH_LEN);
        ck_assert_uint_eq(checkpoint_ok(log, j), 2);
        ck_assert(!berth_clog_dropped(log, &df, &dl, &dpath, &doff));
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

/* Open: a size outside the bounds is INVALID and makes no file; both new
 * files are zero-filled to the size asked; an existing one keeps its size,
 * and a missing second file is made at the size asked, so the two may
 * differ; a file of a bad size (or not a file), either one, is INVALID; no
 * room is FULL and leaves no half-made file behind. */
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
    ck_assert_uint_eq(berth_clog_size_bytes(log), 2 * size);
    ck_assert_uint_eq(berth_clog_active_size_bytes(log), size);
    ck_assert_uint_eq(berth_clog_used_bytes(log), 0);
    ck_assert_uint_eq(berth_clog_active_used_bytes(log), 0);
    berth_clog_close(log);
    const char *names[] = { BERTH_CLOG_FILE, BERTH_CLOG_FILE2 };
    for (int i = 0; i < 2; i++) {
        char tmp[100];
        snprintf(tmp, sizeof(tmp), "%s.new", names[i]);
        ck_assert_uint_eq(file_size(dir, names[i]), size);
        ck_assert_uint_eq(file_size(dir, tmp), UINT64_MAX);
        ck_assert(zeros_at_in(dir, names[i], 0, (size_t)size));
    }
    log = lopen(dir, 2 * size);   /* bytes ignored */
    ck_assert_uint_eq(berth_clog_size_bytes(log), 2 * size);
    berth_clog_close(log);
    log = lopen(dir, 1);           /* even out of bounds */
    berth_clog_close(log);

    /* A directory from before the second file: it is made at the size
     * asked, beside the first at its own. An out-of-bounds size makes none. */
    char path2[400];
    log_path(path2, sizeof(path2), dir, BERTH_CLOG_FILE2);
    ck_assert_int_eq(unlink(path2), 0);
    ck_assert_int_eq(berth_clog_open(&log, dir, 1, err, sizeof(err)), BERTH_J_INVALID);
    ck_assert_ptr_null(log);
    ck_assert_uint_eq(file_size(dir, BERTH_CLOG_FILE2), UINT64_MAX);
    log = lopen(dir, 2 * mib);
    ck_assert_uint_eq(berth_clog_size_bytes(log), size + 2 * mib);
    ck_assert_uint_eq(berth_clog_active_size_bytes(log), size);   /* file 0 is active */
    berth_clog_close(log);
    ck_assert_uint_eq(file_size(dir, BERTH_CLOG_FILE2), 2 * mib);

    for (int f = 0; f < 2; f++) {
        char path[400];
        log_path(path, sizeof(path), dir, names[f]);
        uint64_t keep = file_size(dir, names[f]);
        const uint64_t sizes[] = { size + 100, BERTH_CLOG_BYTES_MIN / 2, 0 };
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            ck_assert_int_eq(truncate(path, (off_t)sizes[i]), 0);
            ck_assert_int_eq(berth_clog_open(&log, dir, size, err, sizeof(err)),
                             BERTH_J_INVALID);
            ck_assert_ptr_null(log);
            ck_assert_msg(strstr(err, path) != NULL, "%s", err);
        }
        ck_assert_int_eq(unlink(path), 0);
        ck_assert_int_eq(mkdir(path, 0700), 0);
        ck_assert_int_eq(berth_clog_open(&log, dir, size, err, sizeof(err)), BERTH_J_INVALID);
        ck_assert_int_eq(rmdir(path), 0);
        log = lopen(dir, keep);   /* made again */
        berth_clog_close(log);
    }

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
    /* Room for the first file only: the second is FULL; the first stays,
     * whole, for a later open. */
    ck_assert_int_eq(mount("tmpfs", disk, "tmpfs", 0, "size=1536k"), 0);
    ck_assert_int_eq(mkdir(small, 0700), 0);
    ck_assert_int_eq(berth_clog_open(&log, small, BERTH_CLOG_BYTES_MIN, err, sizeof(err)),
                     BERTH_J_FULL);
    ck_assert_ptr_null(log);
    ck_assert_msg(strstr(err, BERTH_CLOG_FILE2) != NULL, "%s", err);
    ck_assert_uint_eq(file_size(small, BERTH_CLOG_FILE), BERTH_CLOG_BYTES_MIN);
    ck_assert_uint_eq(file_size(small, BERTH_CLOG_FILE2), UINT64_MAX);
    ck_assert_uint_eq(file_size(small, BERTH_CLOG_FILE2 ".new"), UINT64_MAX);
    ck_assert_int_eq(umount(disk), 0);
}
END_TEST

/* ---- two files ------------------------------------------------------------- */

/* A journal whose appends or syncs fail on demand, over a real one: a
 * checkpoint that fails midway (appends_left appends go through, then
 * FULL) or after its appends (sync_err). Only head, append_encoded and
 * sync are there: all a checkpoint calls. fj_ops_decoded_only has no
 * append_encoded, as a backend without that road (etcd). */
typedef struct fjournal {
    berth_journal base;         /* first: the journal API sees this */
    berth_journal *inner;
    int appends_left;           /* < 0: no limit */
    berth_jerr sync_err;        /* BERTH_J_OK: syncs reach the inner journal */
} fjournal;

static berth_jerr fj_head(berth_journal *journal, uint64_t *seq, uint8_t hash[BERTH_HASH_LEN]) {
    return berth_journal_head(((fjournal *)journal)->inner, seq, hash);
}

static berth_jerr fj_append_encoded(berth_journal *journal, const berth_encoded *records,
                                    const berth_touched *touched, size_t n) {
    fjournal *f = (fjournal *)journal;
    if (f->appends_left == 0) {
        return BERTH_J_FULL;
    }
    f->appends_left -= f->appends_left > 0 ? 1 : 0;
    return berth_journal_append_encoded(f->inner, records, touched, n);
}

static berth_jerr fj_append(berth_journal *journal, berth_record *records,
                            const berth_touched *touched, size_t n) {
    return berth_journal_append(((fjournal *)journal)->inner, records, touched, n);
}

static berth_jerr fj_sync(berth_journal *journal) {
    fjournal *f = (fjournal *)journal;
    return f->sync_err != BERTH_J_OK ? f->sync_err : berth_journal_sync(f->inner);
}

static const berth_journal_ops fj_ops = {
    .name = "fault", .head = fj_head, .append_encoded = fj_append_encoded, .sync = fj_sync
};

static const berth_journal_ops fj_ops_decoded_only = {
    .name = "decoded-only", .head = fj_head, .append = fj_append, .sync = fj_sync
};

static void fj_init(fjournal *f, berth_journal *inner) {
    memset(f, 0, sizeof(*f));
    f->base.ops = &fj_ops;
    f->inner = inner;
    f->appends_left = -1;
    f->sync_err = BERTH_J_OK;
}

/* A frame this open wrote whose record no longer hashes though the frame
 * is whole (a byte of seq 4's command changed, the frame's SHA-256 made
 * again: what a bug or a page gone bad between the frame's write and the
 * checkpoint's read would leave): the walk reads own frames' seqs and
 * links in place and does not hash records, so the journal's check on the
 * bytes it stores must catch it. CORRUPT, nothing moved, by the full
 * checkpoint (variant 0) and by the sealed one (variant 1). */
START_TEST(clog_own_frames_bad_hash) {
    for (int variant = 0; variant < 2; variant++) {
        char dir[300];
        dir_fresh(dir, sizeof(dir));
        berth_journal *j = jopen(dir, 0, 0);
        berth_clog *log = lopen(dir, 2 * mib);
        ck_assert_uint_eq(checkpoint_ok(log, j), 0);
        tframe f[3];
        tf_make(&f[0], 1, 3, 0, true, 0);
        tf_make(&f[1], 4, 3, 0, true, 0);
        append_ok(log, &f[0]);
        uint64_t off = append_ok(log, &f[1]);
        if (variant == 1) {
            seal_ok(log);
            tf_make(&f[2], 7, 2, 0, false, 0);
            append_ok(log, &f[2]);                   /* the active file's */
        }
        put_byte(dir, off + BERTH_CLOG_HEADER_BYTES + 4 + 30, 'Z');   /* seq 4's command */
        reseal(dir, off);
        char err[err_len_max] = "";
        uint64_t moved = 12345;
        berth_jerr rc = variant == 0 ? berth_clog_checkpoint(log, j, &moved, err, sizeof(err))
                                     : berth_clog_checkpoint_sealed(log, j, &moved, err, sizeof(err));
        ck_assert_msg(rc == BERTH_J_CORRUPT, "%s %s", berth_jerr_name(rc), err);
        ck_assert_msg(strstr(err, "not the SHA-256 of its body") != NULL, "%s", err);
        ck_assert_uint_eq(moved, 0);
        ck_assert_uint_eq(head_of(j, NULL), 0);
        for (int k = 0; k < (variant == 1 ? 3 : 2); k++) {
            tf_free(&f[k]);
        }
        berth_clog_close(log);
        berth_journal_close(j);
    }
}
END_TEST

/* A journal without berth_journal_append_encoded (a backend without that
 * road, as etcd) takes no checkpoint: INVALID, saying so, nothing moved,
 * the log as it was; the LMDB journal then takes the same frames. */
START_TEST(clog_journal_without_encoded) {
    char dir[300];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = jopen(dir, 0, 0);
    berth_clog *log = lopen(dir, 16 * mib);
    ck_assert_uint_eq(checkpoint_ok(log, j), 0);
    tframe f[2];
    tf_make(&f[0], 1, 5, 0, true, 0);
    tf_make(&f[1], 6, 7, 0, false, 0);
    append_ok(log, &f[0]);
    append_ok(log, &f[1]);
    uint64_t used = berth_clog_used_bytes(log);
    fjournal fj;
    fj_init(&fj, j);
    fj.base.ops = &fj_ops_decoded_only;
    char err[err_len_max] = "";
    uint64_t moved = 99;
    berth_jerr rc = berth_clog_checkpoint(log, &fj.base, &moved, err, sizeof(err));
    ck_assert_msg(rc == BERTH_J_INVALID, "%s %s", berth_jerr_name(rc), err);
    ck_assert_msg(strstr(err, "takes no encoded records") != NULL, "%s", err);
    ck_assert_uint_eq(moved, 0);
    ck_assert_uint_eq(head_of(j, NULL), 0);
    ck_assert_uint_eq(berth_clog_used_bytes(log), used);
    ck_assert_uint_eq(checkpoint_ok(log, j), 12);
    expect_frames(j, f, 2);
    expect_history(j, f, 2, BERTH_HISTORY_WORKER, "w-0");
    for (int k = 0; k < 2; k++) {
        tf_free(&f[k]);
    }
    berth_clog_close(log);
    berth_journal_close(j);
}
END_TEST

/* Seal hands file 0 to checkpoint_sealed while appends go on in file 1 from
 * its offset 0; the sealed frames land in the journal with their hashes; a
 * second seal goes back to file 0 and overwrites its stale frames from
 * offset 0; a full checkpoint moves what is left and makes file 0 active. */
START_TEST(clog_seal_round_trip) {
    char dir[300];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = jopen(dir, 0, 0);
    berth_clog *log = lopen(dir, 2 * mib);
    ck_assert_uint_eq(checkpoint_ok(log, j), 0);
    tframe f[6];
    tf_make(&f[0], 1, 4, 0, true, 0);
    tf_make(&f[1], 5, 6, 3000, false, 0);
    tf_make(&f[2], 11, 3, 0, true, 0);
    tf_make(&f[3], 14, 7, 100, true, 0);
    tf_make(&f[4], 21, 2, 0, false, 0);
    tf_make(&f[5], 23, 1, 0, true, 0);
    ck_assert_uint_eq(append_ok(log, &f[0]), 0);
    append_ok(log, &f[1]);
    uint64_t used0 = berth_clog_used_bytes(log);
    seal_ok(log);
    ck_assert_uint_eq(berth_clog_active_used_bytes(log), 0);
    ck_assert_uint_eq(berth_clog_used_bytes(log), used0);   /* the sealed file's frames */
    ck_assert_uint_eq(berth_clog_last_seq(log), 10);
    ck_assert_uint_eq(append_ok(log, &f[2]), 0);             /* file 1, offset 0 */
    ck_assert_uint_eq(frame_seq_at(dir, BERTH_CLOG_FILE2, 0), 11);
    ck_assert_mem_eq(f[2].recs[0].prev_hash, tf_last_hash(&f[1]), BERTH_HASH_LEN);
    ck_assert_uint_eq(head_of(j, NULL), 0);

    ck_assert_uint_eq(sealed_ok(log, j), 10);
    uint8_t hash[BERTH_HASH_LEN];
    ck_assert_uint_eq(head_of(j, hash), 10);
    ck_assert_mem_eq(hash, tf_last_hash(&f[1]), BERTH_HASH_LEN);
    expect_frames(j, f, 2);
    expect_history(j, f, 2, BERTH_HISTORY_WORKER, "w-all");

    seal_ok(log);                                            /* file 1: f[2] */
    ck_assert_uint_eq(append_ok(log, &f[3]), 0);             /* file 0 again, over f[0] */
    ck_assert_uint_eq(frame_seq_at(dir, BERTH_CLOG_FILE, 0), 14);
    ck_assert_uint_eq(sealed_ok(log, j), 3);
    ck_assert_uint_eq(head_of(j, hash), 13);
    ck_assert_mem_eq(hash, tf_last_hash(&f[2]), BERTH_HASH_LEN);
    seal_ok(log);                                            /* file 0: f[3] */
    ck_assert_uint_eq(append_ok(log, &f[4]), 0);             /* file 1, over f[2] */
    ck_assert_uint_eq(frame_seq_at(dir, BERTH_CLOG_FILE2, 0), 21);
    ck_assert_uint_eq(sealed_ok(log, j), 7);
    ck_assert_uint_eq(head_of(j, NULL), 20);

    ck_assert_uint_eq(checkpoint_ok(log, j), 2);
    ck_assert_uint_eq(head_of(j, hash), 22);
    ck_assert_mem_eq(hash, tf_last_hash(&f[4]), BERTH_HASH_LEN);
    ck_assert_uint_eq(append_ok(log, &f[5]), 0);             /* file 0 after a full checkpoint */
    ck_assert_uint_eq(frame_seq_at(dir, BERTH_CLOG_FILE, 0), 23);
    ck_assert_uint_eq(checkpoint_ok(log, j), 1);
    expect_frames(j, f, 6);
    expect_history(j, f, 6, BERTH_HISTORY_WORKER, "w-2");
    expect_history(j, f, 6, BERTH_HISTORY_INSTANCE, "inst-3");
    for (int k = 0; k < 6; k++) {
        tf_free(&f[k]);
    }
    berth_clog_close(log);
    berth_journal_close(j);
}
END_TEST

/* seal: false before the first checkpoint and with nothing to seal; true
 * when it seals and while a sealed file waits (changing nothing then,
 * even with frames in the active file); checkpoint_sealed is INVALID with
 * nothing sealed; the active file fills (FULL) while the other is sealed,
 * and a seal after its checkpoint makes room. */
START_TEST(clog_seal_states) {
    char dir[300];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = jopen(dir, 0, 0);
    berth_clog *log = lopen(dir, BERTH_CLOG_BYTES_MIN);
    ck_assert(!berth_clog_seal(log));   /* before the first checkpoint */
    char err[err_len_max] = "";
    uint64_t moved = 99;
    ck_assert_int_eq(berth_clog_checkpoint_sealed(log, j, &moved, err, sizeof(err)),
                     BERTH_J_INVALID);
    ck_assert_uint_eq(moved, 0);
    ck_assert_uint_gt(strlen(err), 0);
    ck_assert_uint_eq(checkpoint_ok(log, j), 0);
    ck_assert(!berth_clog_seal(log));   /* nothing appended */
    err[0] = '\0';
    ck_assert_int_eq(berth_clog_checkpoint_sealed(log, j, &moved, err, sizeof(err)),
                     BERTH_J_INVALID);
    ck_assert_uint_gt(strlen(err), 0);

    enum { frames_max = 24 };
    tframe f[frames_max];
    int count = 0;
    tf_make(&f[count], 1, 3, 0, true, 0);
    append_ok(log, &f[count++]);
    seal_ok(log);
    seal_ok(log);                       /* already sealed: nothing changes */
    ck_assert_uint_eq(berth_clog_active_used_bytes(log), 0);
    ck_assert_uint_eq(sealed_ok(log, j), 3);
    ck_assert(!berth_clog_seal(log));   /* the active file is empty, none sealed */
    ck_assert_int_eq(berth_clog_checkpoint_sealed(log, j, &moved, err, sizeof(err)),
                     BERTH_J_INVALID);

    tf_make(&f[count], 4, 2, 0, false, 0);
    append_ok(log, &f[count++]);        /* file 1 */
    seal_ok(log);                       /* file 1 sealed; file 0 active */
    uint64_t sealed_bytes = berth_clog_used_bytes(log);
    /* File 0 fills while file 1 waits: seal changes nothing, append is FULL. */
    berth_jerr rc = BERTH_J_OK;
    while (rc == BERTH_J_OK) {
        ck_assert_int_lt(count, frames_max - 1);
        tf_make(&f[count], berth_clog_last_seq(log) + 1, 12, 8000, true, 0);
        uint64_t active = berth_clog_active_used_bytes(log);
        rc = berth_clog_append(log, f[count].recs, f[count].touched, f[count].n);
        if (rc == BERTH_J_OK) {
            count++;
            seal_ok(log);
            ck_assert_uint_gt(berth_clog_active_used_bytes(log), active);   /* still file 0 */
        }
    }
    ck_assert_int_eq(rc, BERTH_J_FULL);
    ck_assert_uint_eq(berth_clog_used_bytes(log),
                      sealed_bytes + berth_clog_active_used_bytes(log));
    ck_assert_uint_eq(sealed_ok(log, j), 2);
    ck_assert_uint_eq(head_of(j, NULL), 5);
    seal_ok(log);                       /* file 0, full */
    ck_assert_uint_eq(append_ok(log, &f[count]), 0);   /* the same frame fits in file 1 */
    count++;
    ck_assert_uint_eq(checkpoint_ok(log, j), tf_last(&f[count - 1]) - 5);
    ck_assert(!berth_clog_seal(log));
    expect_frames(j, f, (size_t)count);
    for (int k = 0; k < count; k++) {
        tf_free(&f[k]);
    }
    berth_clog_close(log);
    berth_journal_close(j);
}
END_TEST

/* The states a crash can leave (close without checkpoint, reopen, full
 * checkpoint), each with its frames moved in seq order:
 *   0  frames in file 0 only;
 *   1  file 0 sealed, never checkpointed, frames in file 1;
 *   2  file 0 sealed and partly moved (a checkpoint_sealed cut short),
 *      frames in file 1;
 *   3  file 1 older than file 0 (the second seal): file 1 sealed, file 0
 *      active again from offset 0 over its stale frames;
 *   4  as 3, the newer file's last frame torn: the rest moves and its seqs
 *      are written again;
 *   5  as 1, the newer file's (file 1's) last frame torn. */
START_TEST(clog_recovery_states) {
    for (int variant = 0; variant < 6; variant++) {
        char dir[300];
        dir_fresh(dir, sizeof(dir));
        berth_journal *j = jopen(dir, 0, 0);
        berth_clog *log = lopen(dir, 2 * mib);
        ck_assert_uint_eq(checkpoint_ok(log, j), 0);
        tframe f[6], again;
        for (int k = 0; k < 6; k++) {
            tf_make(&f[k], 1 + 4 * (uint64_t)k, 4, 500 * (unsigned)k, k % 2 == 0, 0);
        }
        int frames = 6;            /* appended and acknowledged */
        uint64_t journal_has = 0;  /* seqs in the journal at the crash */
        const char *torn_file = NULL;
        uint64_t torn_off = 0;
        if (variant == 0) {
            for (int k = 0; k < 6; k++) {
                append_ok(log, &f[k]);
            }
        } else if (variant <= 2 || variant == 5) {
            for (int k = 0; k < 3; k++) {
                append_ok(log, &f[k]);
            }
            seal_ok(log);
            for (int k = 3; k < 6; k++) {
                torn_off = append_ok(log, &f[k]);
            }
            torn_file = BERTH_CLOG_FILE2;
            if (variant == 2) {     /* the cut-short checkpoint moved f[0] */
                berth_record copy[4];
                memcpy(copy, f[0].recs, sizeof(copy));
                ck_assert_int_eq(berth_journal_append(j, copy, f[0].touched, 4), BERTH_J_OK);
                ck_assert_mem_eq(copy[3].hash, tf_last_hash(&f[0]), BERTH_HASH_LEN);
                journal_has = 4;
            }
        } else {
            append_ok(log, &f[0]);  /* file 0 */
            seal_ok(log);
            append_ok(log, &f[1]);  /* file 1 */
            append_ok(log, &f[2]);
            ck_assert_uint_eq(sealed_ok(log, j), 4);
            seal_ok(log);
            for (int k = 3; k < 6; k++) {
                torn_off = append_ok(log, &f[k]);   /* file 0 from offset 0 */
            }
            ck_assert_uint_eq(frame_seq_at(dir, BERTH_CLOG_FILE, 0), 13);
            torn_file = BERTH_CLOG_FILE;
            journal_has = 4;
        }
        berth_clog_close(log);     /* the crash */
        berth_journal_close(j);
        if (variant == 4 || variant == 5) {
            flip_byte_in(dir, torn_file, torn_off + BERTH_CLOG_HEADER_BYTES + 50);
            frames = 5;            /* never acknowledged: its sync never returned */
        }

        j = jopen(dir, 0, 0);
        ck_assert_uint_eq(head_of(j, NULL), journal_has);
        log = lopen(dir, 2 * mib);
        uint64_t last = tf_last(&f[frames - 1]);
        uint8_t hash[BERTH_HASH_LEN];
        ck_assert_uint_eq(head_of(j, hash), journal_has);
        uint64_t pending = 99;
        char err[err_len_max] = "";
        ck_assert_int_eq(berth_clog_pending(dir, journal_has, hash, &pending, err, sizeof(err)),
                         BERTH_J_OK);
        ck_assert_uint_eq(pending, last - journal_has);
        ck_assert_uint_eq(checkpoint_ok(log, j), last - journal_has);
        ck_assert_uint_eq(head_of(j, hash), last);
        ck_assert_mem_eq(hash, tf_last_hash(&f[frames - 1]), BERTH_HASH_LEN);
        expect_frames(j, f, (size_t)frames);
        expect_history(j, f, (size_t)frames, BERTH_HISTORY_WORKER, "w-all");
        /* The next frame chains on the last one moved, in file 0. */
        tf_make(&again, last + 1, 2, 0, true, 1);
        ck_assert_uint_eq(append_ok(log, &again), 0);
        ck_assert_mem_eq(again.recs[0].prev_hash, hash, BERTH_HASH_LEN);
        ck_assert_uint_eq(checkpoint_ok(log, j), 2);
        expect_frames(j, &again, 1);
        tf_free(&again);
        for (int k = 0; k < 6; k++) {
            tf_free(&f[k]);
        }
        berth_clog_close(log);
        berth_journal_close(j);
    }
}
END_TEST

/* Two files, file 1 the older (g, sealed) and file 0 the newer (h), the
 * journal at seq 4 (f, checkpointed from file 0 earlier). Damage is CORRUPT
 * and moves nothing, for checkpoint and pending alike:
 *   0  a damaged frame in the middle of the older file, whole ones after;
 *   1  the older file's last frame lost: a gap between the two files;
 *   2  a damaged frame in the middle of the newer file, a whole one after;
 *   3  the older file's first frame damaged and nothing whole after it: the
 *      newer file's frames are a gap after the journal's head, and the
 *      sentence says the other file has no whole frame past it (it named
 *      "the other file's last frame" of a walk that applied nothing). */
START_TEST(clog_two_files_corrupt) {
    for (int variant = 0; variant < 4; variant++) {
        char dir[300];
        dir_fresh(dir, sizeof(dir));
        berth_journal *j = jopen(dir, 0, 0);
        berth_clog *log = lopen(dir, 2 * mib);
        ck_assert_uint_eq(checkpoint_ok(log, j), 0);
        tframe f, g[3], h[2];
        uint64_t goff[3], hoff[2];
        tf_make(&f, 1, 4, 0, true, 0);
        append_ok(log, &f);
        seal_ok(log);
        for (int k = 0; k < 3; k++) {
            tf_make(&g[k], 5 + 3 * (uint64_t)k, 3, 200, k != 1, 0);
            goff[k] = append_ok(log, &g[k]);   /* file 1 */
        }
        ck_assert_uint_eq(sealed_ok(log, j), 4);
        seal_ok(log);
        for (int k = 0; k < 2; k++) {
            tf_make(&h[k], 14 + 2 * (uint64_t)k, 2, 0, true, 0);
            hoff[k] = append_ok(log, &h[k]);   /* file 0 */
        }
        berth_clog_close(log);
        berth_journal_close(j);
        char at[64];
        const char *needle;
        if (variant == 0) {
            flip_byte_in(dir, BERTH_CLOG_FILE2, goff[1] + BERTH_CLOG_HEADER_BYTES + 9);
            snprintf(at, sizeof(at), "offset %" PRIu64 " after seq 7", goff[1]);
            needle = "holds seqs 11..13";
        } else if (variant == 1) {
            zero_range_in(dir, BERTH_CLOG_FILE2, goff[2], BERTH_CLOG_ALIGN);
            snprintf(at, sizeof(at), "the other file's last frame is 11");
            needle = "a gap";
        } else if (variant == 2) {
            flip_byte_in(dir, BERTH_CLOG_FILE, hoff[0] + BERTH_CLOG_HEADER_BYTES + 9);
            snprintf(at, sizeof(at), "offset %" PRIu64 " after seq 13", hoff[0]);
            needle = "holds seqs 16..17";
        } else {
            flip_byte_in(dir, BERTH_CLOG_FILE2, goff[0] + BERTH_CLOG_HEADER_BYTES + 9);
            zero_range_in(dir, BERTH_CLOG_FILE2, goff[1], BERTH_CLOG_ALIGN);
            zero_range_in(dir, BERTH_CLOG_FILE2, goff[2], BERTH_CLOG_ALIGN);
            snprintf(at, sizeof(at), "the journal's head (the other file holds no whole frame past it");
            needle = "holds seqs 14..15";
        }

        j = jopen(dir, 0, 0);
        log = lopen(dir, 2 * mib);
        checkpoint_corrupt(log, j, at, needle);
        uint8_t hash[BERTH_HASH_LEN];
        ck_assert_uint_eq(head_of(j, hash), 4);   /* not even the older file's frames */
        uint64_t pending = 99;
        char err[err_len_max] = "";
        ck_assert_int_eq(berth_clog_pending(dir, 4, hash, &pending, err, sizeof(err)),
                         BERTH_J_CORRUPT);
        ck_assert_msg(strstr(err, at) != NULL, "%s", err);
        tf_free(&f);
        for (int k = 0; k < 3; k++) {
            tf_free(&g[k]);
        }
        tf_free(&h[0]);
        tf_free(&h[1]);
        berth_clog_close(log);
        berth_journal_close(j);
    }
}
END_TEST

/* pending counts the records of both files past any head at a frame
 * boundary, in either order of the files, and writes nothing. */
START_TEST(clog_pending_two) {
    char dir[300];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = jopen(dir, 0, 0);
    berth_clog *log = lopen(dir, 2 * mib);
    ck_assert_uint_eq(checkpoint_ok(log, j), 0);
    tframe f[4];
    for (int k = 0; k < 4; k++) {
        tf_make(&f[k], 1 + 5 * (uint64_t)k, 5, 0, k != 2, 0);
    }
    uint8_t zeros[BERTH_HASH_LEN] = { 0 };
    char err[err_len_max] = "";
    uint64_t n = 99;
    append_ok(log, &f[0]);                  /* file 0 */
    seal_ok(log);
    append_ok(log, &f[1]);                  /* file 1 */
    ck_assert_int_eq(berth_clog_pending(dir, 0, zeros, &n, err, sizeof(err)), BERTH_J_OK);
    ck_assert_uint_eq(n, 10);
    ck_assert_int_eq(berth_clog_pending(dir, 5, tf_last_hash(&f[0]), &n, err, sizeof(err)),
                     BERTH_J_OK);
    ck_assert_uint_eq(n, 5);
    ck_assert_uint_eq(sealed_ok(log, j), 5);
    seal_ok(log);
    append_ok(log, &f[2]);                  /* file 0, over f[0] */
    append_ok(log, &f[3]);
    ck_assert_int_eq(berth_clog_pending(dir, 5, tf_last_hash(&f[0]), &n, err, sizeof(err)),
                     BERTH_J_OK);
    ck_assert_uint_eq(n, 15);               /* file 1 first, then file 0 */
    ck_assert_int_eq(berth_clog_pending(dir, 10, tf_last_hash(&f[1]), &n, err, sizeof(err)),
                     BERTH_J_OK);
    ck_assert_uint_eq(n, 10);
    ck_assert_int_eq(berth_clog_pending(dir, 15, tf_last_hash(&f[2]), &n, err, sizeof(err)),
                     BERTH_J_OK);
    ck_assert_uint_eq(n, 5);
    ck_assert_int_eq(berth_clog_pending(dir, 20, tf_last_hash(&f[3]), &n, err, sizeof(err)),
                     BERTH_J_OK);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(berth_clog_pending(dir, 0, zeros, &n, err, sizeof(err)), BERTH_J_CORRUPT);
    ck_assert_msg(strstr(err, "a gap") != NULL, "%s", err);
    ck_assert_uint_eq(checkpoint_ok(log, j), 15);
    expect_frames(j, f, 4);
    for (int k = 0; k < 4; k++) {
        tf_free(&f[k]);
    }
    berth_clog_close(log);
    berth_journal_close(j);
}
END_TEST

/* A data directory from before the second file (commit.log alone, with
 * frames a crash left): pending reads it, open makes commit.log.2 beside
 * it, and the recovery moves every frame. */
START_TEST(clog_old_directory) {
    char dir[300];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = jopen(dir, 0, 0);
    berth_clog *log = lopen(dir, 2 * mib);
    ck_assert_uint_eq(checkpoint_ok(log, j), 0);
    tframe f[3];
    for (int k = 0; k < 3; k++) {
        tf_make(&f[k], 1 + 6 * (uint64_t)k, 6, 1000, k != 1, 0);
        append_ok(log, &f[k]);
    }
    berth_clog_close(log);   /* the crash */
    berth_journal_close(j);
    char path2[400];
    log_path(path2, sizeof(path2), dir, BERTH_CLOG_FILE2);
    ck_assert_int_eq(unlink(path2), 0);
    ck_assert(berth_clog_exists(dir));
    uint8_t zeros[BERTH_HASH_LEN] = { 0 };
    char err[err_len_max] = "";
    uint64_t n = 99;
    ck_assert_int_eq(berth_clog_pending(dir, 0, zeros, &n, err, sizeof(err)), BERTH_J_OK);
    ck_assert_uint_eq(n, 18);
    ck_assert_uint_eq(file_size(dir, BERTH_CLOG_FILE2), UINT64_MAX);   /* pending made none */

    j = jopen(dir, 0, 0);
    log = lopen(dir, 4 * mib);
    ck_assert_uint_eq(file_size(dir, BERTH_CLOG_FILE2), 4 * mib);
    ck_assert_uint_eq(berth_clog_size_bytes(log), 6 * mib);
    ck_assert_uint_eq(checkpoint_ok(log, j), 18);
    uint8_t hash[BERTH_HASH_LEN];
    ck_assert_uint_eq(head_of(j, hash), 18);
    ck_assert_mem_eq(hash, tf_last_hash(&f[2]), BERTH_HASH_LEN);
    expect_frames(j, f, 3);
    tframe g;
    tf_make(&g, 19, 2, 0, true, 0);
    append_ok(log, &g);
    seal_ok(log);
    ck_assert_uint_eq(sealed_ok(log, j), 2);
    expect_frames(j, &g, 1);
    tf_free(&g);
    for (int k = 0; k < 3; k++) {
        tf_free(&f[k]);
    }
    berth_clog_close(log);
    berth_journal_close(j);
}
END_TEST

/* A checkpoint_sealed that fails leaves the file sealed with its frames
 * (used_bytes counts them, seal says so, appends go on in the other file);
 * a retry or a full checkpoint moves them:
 *   0  the journal is FULL (its map at a tiny cap), then a full checkpoint
 *      with room moves both files;
 *   1  the journal's sync fails after every append went through: the
 *      retry moves nothing more and frees the file;
 *   2  the journal fails midway (one of two appends went through), then a
 *      crash: the recovery moves the sealed file's rest and file 1.
 * And a full checkpoint that fails after moving the sealed file and part
 * of the active one (3) leaves checkpoint_sealed nothing to move: it frees
 * the file, and the next full checkpoint moves the rest. */
START_TEST(clog_sealed_fails) {
    for (int variant = 0; variant < 4; variant++) {
        char dir[300];
        dir_fresh(dir, sizeof(dir));
        berth_journal *j = variant == 0 ? jopen(dir, mib, mib) : jopen(dir, 0, 0);
        berth_clog *log = lopen(dir, 16 * mib);
        ck_assert_uint_eq(checkpoint_ok(log, j), 0);
        tframe f[6];
        if (variant == 3) {
            tframe g[3];
            tf_make(&g[0], 1, 3000, 0, true, 0);          /* sealed */
            tf_make(&g[1], 3001, 1000, 0, false, 0);      /* same journal append as g[0] */
            tf_make(&g[2], 4001, 3000, 0, true, 0);       /* the next: FULL */
            append_ok(log, &g[0]);
            seal_ok(log);
            append_ok(log, &g[1]);
            append_ok(log, &g[2]);
            fjournal fj;
            fj_init(&fj, j);
            fj.appends_left = 1;
            char err[err_len_max] = "";
            uint64_t moved = 99;
            ck_assert_int_eq(berth_clog_checkpoint(log, &fj.base, &moved, err, sizeof(err)),
                             BERTH_J_FULL);
            ck_assert_uint_eq(moved, 4000);
            ck_assert_uint_eq(sealed_ok(log, j), 0);
            ck_assert_uint_eq(head_of(j, NULL), 4000);
            ck_assert_uint_eq(checkpoint_ok(log, j), 3000);
            expect_frames(j, g, 3);
            for (int k = 0; k < 3; k++) {
                tf_free(&g[k]);
            }
            berth_clog_close(log);
            berth_journal_close(j);
            continue;
        }
        int sealed_frames = variant == 0 ? 4 : 2;
        uint64_t next = 1;
        for (int k = 0; k < sealed_frames; k++) {
            if (variant == 0) {
                tf_make(&f[k], next, 40, 16000, true, 0);   /* ~2.6 MB in all */
            } else {
                tf_make(&f[k], next, 3000, 0, k == 0, 0);    /* 2 journal appends */
            }
            next += f[k].n;
            append_ok(log, &f[k]);
        }
        uint64_t sealed_last = next - 1;
        seal_ok(log);
        tf_make(&f[sealed_frames], next, 3, 0, false, 0);
        append_ok(log, &f[sealed_frames]);                   /* file 1 */
        next += 3;
        uint64_t used = berth_clog_used_bytes(log);
        fjournal fj;
        fj_init(&fj, j);
        fj.appends_left = variant == 2 ? 1 : -1;
        fj.sync_err = variant == 1 ? BERTH_J_IO : BERTH_J_OK;
        berth_journal *cj = variant == 0 ? j : &fj.base;
        char err[err_len_max] = "";
        uint64_t moved = 99;
        berth_jerr want = variant == 1 ? BERTH_J_IO : BERTH_J_FULL;
        berth_jerr rc = berth_clog_checkpoint_sealed(log, cj, &moved, err, sizeof(err));
        ck_assert_msg(rc == want, "%s %s", berth_jerr_name(rc), err);
        ck_assert_msg(strstr(err, berth_jerr_name(want)) != NULL, "%s", err);
        uint64_t in_journal = variant == 0 ? 0 : variant == 1 ? sealed_last : 3000;
        ck_assert_uint_eq(moved, in_journal);
        ck_assert_uint_eq(head_of(j, NULL), in_journal);
        ck_assert_uint_eq(berth_clog_used_bytes(log), used);   /* still sealed */
        seal_ok(log);
        ck_assert_uint_eq(berth_clog_used_bytes(log), used);   /* nothing changed */
        tf_make(&f[sealed_frames + 1], next, 2, 0, true, 0);
        append_ok(log, &f[sealed_frames + 1]);                 /* file 1 still */
        next += 2;
        int total = sealed_frames + 2;
        if (variant == 0) {
            ck_assert_int_eq(berth_clog_checkpoint_sealed(log, j, &moved, err, sizeof(err)),
                             BERTH_J_FULL);
            berth_journal_close(j);
            j = jopen(dir, 0, 0);
            ck_assert_uint_eq(checkpoint_ok(log, j), next - 1);
        } else if (variant == 1) {
            fj.sync_err = BERTH_J_OK;
            ck_assert_uint_eq(sealed_ok(log, j), 0);
            ck_assert_uint_eq(checkpoint_ok(log, j), 5);
        } else {
            berth_clog_close(log);   /* the crash */
            berth_journal_close(j);
            j = jopen(dir, 0, 0);
            log = lopen(dir, 16 * mib);
            ck_assert_uint_eq(checkpoint_ok(log, j), next - 1 - 3000);
        }
        uint8_t hash[BERTH_HASH_LEN];
        ck_assert_uint_eq(head_of(j, hash), next - 1);
        ck_assert_mem_eq(hash, tf_last_hash(&f[total - 1]), BERTH_HASH_LEN);
        expect_frames(j, f, (size_t)total);
        expect_history(j, f, (size_t)total, BERTH_HISTORY_WORKER, "w-all");
        for (int k = 0; k < total; k++) {
            tf_free(&f[k]);
        }
        berth_clog_close(log);
        berth_journal_close(j);
    }
}
END_TEST

/* Damage in the sealed file while running (planted through the shared
 * map's file): checkpoint_sealed is CORRUPT and moves nothing, the file
 * stays sealed, and the full checkpoint is CORRUPT too:
 *   0  its last frame: the walk ends before the seq it was sealed at;
 *   1  its first frame, a whole one after it. */
START_TEST(clog_sealed_damaged) {
    for (int variant = 0; variant < 2; variant++) {
        char dir[300];
        dir_fresh(dir, sizeof(dir));
        berth_journal *j = jopen(dir, 0, 0);
        berth_clog *log = lopen(dir, 2 * mib);
        ck_assert_uint_eq(checkpoint_ok(log, j), 0);
        tframe f[3];
        uint64_t off[2];
        tf_make(&f[0], 1, 4, 0, true, 0);
        tf_make(&f[1], 5, 6, 0, false, 0);
        tf_make(&f[2], 11, 2, 0, true, 0);
        off[0] = append_ok(log, &f[0]);
        off[1] = append_ok(log, &f[1]);
        seal_ok(log);
        append_ok(log, &f[2]);
        uint64_t used = berth_clog_used_bytes(log);
        flip_byte(dir, off[variant == 0 ? 1 : 0] + BERTH_CLOG_HEADER_BYTES + 40);
        char err[err_len_max] = "";
        uint64_t moved = 99;
        berth_jerr rc = berth_clog_checkpoint_sealed(log, j, &moved, err, sizeof(err));
        ck_assert_msg(rc == BERTH_J_CORRUPT, "%s %s", berth_jerr_name(rc), err);
        const char *needle = variant == 0 ? "ended at seq 10 when it was sealed"
                                          : "holds seqs 5..10";
        ck_assert_msg(strstr(err, needle) != NULL, "'%s' lacks '%s'", err, needle);
        ck_assert_uint_eq(moved, 0);
        ck_assert_uint_eq(head_of(j, NULL), 0);
        ck_assert_uint_eq(berth_clog_used_bytes(log), used);
        seal_ok(log);
        checkpoint_corrupt(log, j, NULL, NULL);
        ck_assert_uint_eq(head_of(j, NULL), 0);
        for (int k = 0; k < 3; k++) {
            tf_free(&f[k]);
        }
        berth_clog_close(log);
        berth_journal_close(j);
    }
}
END_TEST

/* The checkpointer thread of clog_concurrent: waits for work (a file the
 * appender sealed), runs checkpoint_sealed, says it is idle again. Check's
 * asserts belong to the test's own thread: errors are kept for it. */
typedef struct ckpt_thread {
    berth_clog *log;
    berth_journal *journal;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool work;                  /* a file is sealed for the checkpointer */
    bool stop;
    unsigned rounds;
    uint64_t moved;
    uint64_t used_seen;         /* used_bytes read on this thread */
    berth_jerr failed;          /* the first error */
    char err[err_len_max];
} ckpt_thread;

static void *ckpt_main(void *arg) {
    ckpt_thread *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->work && !c->stop) {
            pthread_cond_wait(&c->cv, &c->mu);
        }
        if (!c->work) {
            break;
        }
        pthread_mutex_unlock(&c->mu);
        char err[err_len_max] = "";
        uint64_t moved = 0;
        berth_jerr rc = berth_clog_checkpoint_sealed(c->log, c->journal, &moved, err,
                                                     sizeof(err));
        uint64_t used = berth_clog_used_bytes(c->log);   /* any thread */
        pthread_mutex_lock(&c->mu);
        if (rc != BERTH_J_OK && c->failed == BERTH_J_OK) {
            c->failed = rc;
            memcpy(c->err, err, sizeof(err));
        }
        c->used_seen += used > 0 ? 1 : 0;
        c->moved += moved;
        c->rounds++;
        c->work = false;
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* Hand the active file to the checkpointer if it is idle (wait: until it
 * is). Appending thread. */
static void hand_over(ckpt_thread *c, bool wait) {
    pthread_mutex_lock(&c->mu);
    while (wait && c->work) {
        pthread_cond_wait(&c->cv, &c->mu);
    }
    if (!c->work && berth_clog_seal(c->log)) {
        c->work = true;
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
}

/* One thread appends frames in a loop, sealing the active file when the
 * checkpointer is idle (often, or in some phases never, so that the active
 * file fills: FULL, then it waits for the checkpointer and seals); the
 * checkpointer moves each sealed file meanwhile. A full checkpoint at the
 * end moves the rest: the journal holds every record, chained as the log
 * chained it. Built with -fsanitize=thread this is the
 * data race check of the two threads' calls. */
START_TEST(clog_concurrent) {
    char dir[300];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = jopen(dir, 0, 0);
    berth_clog *log = lopen(dir, BERTH_CLOG_BYTES_MIN);
    ck_assert_uint_eq(checkpoint_ok(log, j), 0);
    ckpt_thread c = { .log = log, .journal = j, .failed = BERTH_J_OK };
    ck_assert_int_eq(pthread_mutex_init(&c.mu, NULL), 0);
    ck_assert_int_eq(pthread_cond_init(&c.cv, NULL), 0);
    pthread_t thread;
    ck_assert_int_eq(pthread_create(&thread, NULL, ckpt_main, &c), 0);

    size_t frames = test_under_valgrind() ? 150 : 1500;
    tframe *f = calloc(frames, sizeof(*f));
    ck_assert_ptr_nonnull(f);
    uint64_t next = 1;
    unsigned fulls = 0;
    for (size_t k = 0; k < frames; k++) {
        tf_make(&f[k], next, 1 + k % 5, (k * 37) % 3000, k % 3 != 0, (unsigned)(k % 2));
        berth_jerr rc = berth_clog_append(log, f[k].recs, f[k].touched, f[k].n);
        if (rc == BERTH_J_FULL) {
            fulls++;
            hand_over(&c, true);
            rc = berth_clog_append(log, f[k].recs, f[k].touched, f[k].n);
        }
        loop_assert_msg(rc == BERTH_J_OK, "append %" PRIu64 ": %s", next, berth_jerr_name(rc));
        loop_assert(berth_clog_last_seq(log) == tf_last(&f[k]));
        loop_assert(berth_clog_active_used_bytes(log) <= berth_clog_active_size_bytes(log));
        next += f[k].n;
        /* Phases: seal at every third frame, then none for a while (the
         * active file fills: FULL, wait, seal). */
        if (k % 3 == 0 && (k / 200) % 2 == 0) {
            hand_over(&c, false);
        }
    }
    pthread_mutex_lock(&c.mu);
    while (c.work) {
        pthread_cond_wait(&c.cv, &c.mu);
    }
    c.stop = true;
    pthread_cond_broadcast(&c.cv);
    pthread_mutex_unlock(&c.mu);
    ck_assert_int_eq(pthread_join(thread, NULL), 0);
    ck_assert_msg(c.failed == BERTH_J_OK, "checkpoint_sealed: %s %s", berth_jerr_name(c.failed),
                  c.err);
    ck_assert_uint_gt(c.rounds, 2);
    ck_assert(fulls > 0 || frames < 400);   /* the phases without seals filled a file */
    ck_assert_uint_eq(c.moved, head_of(j, NULL));
    uint64_t rest = checkpoint_ok(log, j);
    ck_assert_uint_eq(c.moved + rest, next - 1);
    uint8_t hash[BERTH_HASH_LEN];
    ck_assert_uint_eq(head_of(j, hash), next - 1);
    ck_assert_mem_eq(hash, tf_last_hash(&f[frames - 1]), BERTH_HASH_LEN);
    for (size_t k = 1; k < frames; k++) {
        loop_assert(memcmp(f[k].recs[0].prev_hash, tf_last_hash(&f[k - 1]), BERTH_HASH_LEN) == 0);
    }
    expect_frames(j, f, frames);
    expect_history(j, f, frames, BERTH_HISTORY_WORKER, "w-1");
    fprintf(stderr, "clog_concurrent: %zu frames, %u sealed checkpoints, %u FULL waits\n",
            frames, c.rounds, fulls);
    for (size_t k = 0; k < frames; k++) {
        tf_free(&f[k]);
    }
    free(f);
    pthread_cond_destroy(&c.cv);
    pthread_mutex_destroy(&c.mu);
    berth_clog_close(log);
    berth_journal_close(j);
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
    tcase_add_test(tc, clog_journal_without_encoded);
    tcase_add_test(tc, clog_own_frames_bad_hash);
    tcase_add_test(tc, clog_pending);
    tcase_add_test(tc, clog_open_sizes);
    tcase_add_test(tc, clog_seal_round_trip);
    tcase_add_test(tc, clog_seal_states);
    tcase_add_test(tc, clog_recovery_states);
    tcase_add_test(tc, clog_two_files_corrupt);
    tcase_add_test(tc, clog_pending_two);
    tcase_add_test(tc, clog_old_directory);
    tcase_add_test(tc, clog_sealed_fails);
    tcase_add_test(tc, clog_sealed_damaged);
    tcase_add_test(tc, clog_concurrent);
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
