/* commit_log.c — owns DIR/commit.log (commit_log.h): the frame layout, the
 * append that makes a batch durable with one write and one fdatasync, and
 * the walk that moves frames into the journal (the checkpoint, which is
 * also the recovery at start) or only counts them (berth_clog_pending).
 *
 * Reading. The whole file is mapped read-only and shared (coherent with
 * pwrite on Linux), so the records a checkpoint decodes point into the map
 * and stay valid while the journal appends them; the file never changes
 * size, so the map never goes stale. (A read error in a mapped page is
 * SIGBUS, as it is for LMDB's own map.)
 *
 * The walk (walk_run) reads each frame's header before anything else. A
 * frame whose seqs all lie at or below the journal's head is stale: before
 * the first frame to apply it is skipped (a checkpoint that moved part of
 * a generation before it failed, or one with no frame since the last), once
 * frames are being applied it ends the walk; either way it is never hashed,
 * so a running berthd's checkpoint costs the SHA-256 of the frames it moves
 * and little more. A frame holding a seq past the last one applied is
 * hashed: whole and following (seq and chain), it is checked record by
 * record and applied; whole and not following (a gap, an overlap, a broken
 * chain) is CORRUPT; not whole ends the walk (the torn last frame). Then the
 * damage check (damage_scan) reads the header at every aligned offset the
 * walk did not verify and hashes those holding a seq past the last applied:
 * a whole one means an acknowledged frame before it was lost, CORRUPT.
 * Every check runs before the first journal append, so a damaged log moves
 * nothing: each record must be the very bytes berth_record_encode makes of
 * its fields, so the journal stores the same bytes and hashes (checked
 * again after each append). What no walk can tell apart: the last
 * acknowledged frame damaged on the medium, with nothing whole after it,
 * looks like the torn frame a crash leaves, and is dropped like one. A checkpoint then re-reads the frames it verified (no hash) and
 * appends them in as few journal appends as the journal's limits allow;
 * frames without touched names ride in a batch with others as records that
 * touched none (an empty entry, which the journal stores exactly as no
 * entry), so the touched flag does not split batches.
 *
 * Cheap damage checks while running. Once a checkpoint of this open
 * scanned the whole file, offsets at or past the furthest byte this open
 * has written since are unchanged and were proven to hold no whole frame
 * past that checkpoint's head (which only grows), so later checkpoints scan
 * only up to that byte (scan_end). pending always scans the whole file.
 *
 * Creation. The file is made as DIR/commit.log.new, zero-filled by writes
 * (not fallocate: unwritten extents would make each fdatasync write
 * metadata), fsynced, renamed to DIR/commit.log, and DIR fsynced: a crash
 * while it is made never leaves a short commit.log behind. */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* SHA256_Init/Update/Final: deprecated in OpenSSL 3.0 but kept through 3.x,
 * and the frame checksum needs an incremental hash (header fields, then
 * payload) taking no lock (record.c says why). */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#include "backend.h"   /* journal.h, and the record encode seam */
#include "be64.h"
#include "berth_limits.h"
#include "commit_log.h"

#define FRAME_MAGIC "BRTHCLOG"
#define CLOG_FILE_NEW BERTH_CLOG_FILE ".new"

enum {
    dir_len_max = 4000,                 /* data directory path, bytes */
    path_len_max = dir_len_max + 64,    /* DIR/commit.log.new fits */
    magic_len = 8,
    frame_format = 1,
    flag_touched = 1u,                  /* the frame carries touched names */
    flags_known = flag_touched,
    head_fields_len = 32,               /* header bytes before the checksum */
    zero_chunk_bytes = 1 << 20,         /* creation writes zeros this much at a time */
    /* one record's names in a frame: instance, worker count, workers */
    touched_bytes_max = 2 + BERTH_NAME_LEN_MAX + 2 +
                        BERTH_PLACEMENT_WORKERS_MAX * (2 + BERTH_NAME_LEN_MAX),
    batch_workers_max = BERTH_BATCH_RECORDS_MAX * BERTH_PLACEMENT_WORKERS_MAX,
    err_why_len_max = 160               /* a record decode's reason */
};

/* The largest payload a frame can have (one batch at the journal's limits,
 * each record with the most names): a header claiming more is not one. */
#define FRAME_PAYLOAD_MAX \
    ((uint64_t)BERTH_BATCH_BYTES_MAX + (uint64_t)BERTH_BATCH_RECORDS_MAX * (4 + touched_bytes_max))

_Static_assert(sizeof(FRAME_MAGIC) - 1 == magic_len, "magic is 8 bytes");
_Static_assert(head_fields_len + BERTH_HASH_LEN == BERTH_CLOG_HEADER_BYTES, "header layout");
_Static_assert(SHA256_DIGEST_LENGTH == BERTH_HASH_LEN, "checksum is SHA-256");
_Static_assert(BERTH_NAME_LEN_MAX <= UINT16_MAX && BERTH_PLACEMENT_WORKERS_MAX <= UINT16_MAX,
               "names and worker counts carry a u16");
_Static_assert(FRAME_PAYLOAD_MAX <= UINT32_MAX, "payload_len is a u32");
_Static_assert(BERTH_CLOG_BYTES_MIN % BERTH_CLOG_ALIGN == 0 &&
               BERTH_CLOG_BYTES_MAX % BERTH_CLOG_ALIGN == 0, "size bounds are aligned");

struct berth_clog {
    int fd;
    const uint8_t *map;             /* the whole file, PROT_READ, MAP_SHARED */
    uint64_t size;
    bool ready;                     /* a checkpoint succeeded: offset and chain known */
    bool failed;                    /* a write or sync failed: sticky IO */
    bool scanned;                   /* a checkpoint of this open scanned the whole file */
    uint64_t offset;                /* the next frame's start */
    uint64_t written_max;           /* end of the furthest frame this open wrote */
    uint64_t last_seq;
    uint8_t chain[BERTH_HASH_LEN];  /* the last record's hash: the next frame chains on it */
    uint8_t *frame;                 /* the frame being built, frame_cap bytes */
    size_t frame_cap;
    uint32_t *lens;                 /* encoded record lengths of the frame being built */
    uint8_t *recode;                /* BERTH_RECORD_BYTES_MAX: a walk re-encodes each record */
    /* A checkpoint's journal batch: records decoded from the map, their
     * names, and where each record's hash sits in its frame. */
    berth_record *batch_records;
    berth_touched *batch_touched;
    berth_str *batch_workers;
    const uint8_t **batch_hashes;
    char path[path_len_max];
};

static berth_clog_fault_hook fault_hook;

void berth_clog_fault_hook_set(berth_clog_fault_hook hook) {
    fault_hook = hook;
}

/* The errno the test hook wants this step to fail with, or 0. */
static int fault_of(const char *step) {
    return fault_hook != NULL ? fault_hook(step) : 0;
}

/* ---- small helpers ---------------------------------------------------- */

static void say(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(char *err, size_t err_size, const char *fmt, ...) {
    if (err == NULL || err_size == 0) {
        return;
    }
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(err, err_size, fmt, args);
    va_end(args);
    assert(n >= 0);
    (void)n;
}

static inline void be32_put(uint8_t out[4], uint32_t v) {
    out[0] = (uint8_t)(v >> 24);
    out[1] = (uint8_t)(v >> 16);
    out[2] = (uint8_t)(v >> 8);
    out[3] = (uint8_t)v;
}

static inline uint32_t be32_get(const uint8_t in[4]) {
    return (uint32_t)in[0] << 24 | (uint32_t)in[1] << 16 | (uint32_t)in[2] << 8 | in[3];
}

static inline void be16_put(uint8_t out[2], uint32_t v) {
    assert(v <= UINT16_MAX);
    out[0] = (uint8_t)(v >> 8);
    out[1] = (uint8_t)v;
}

static inline uint32_t be16_get(const uint8_t in[2]) {
    return (uint32_t)in[0] << 8 | in[1];
}

static uint64_t align_up(uint64_t value) {
    assert(value <= UINT64_MAX - BERTH_CLOG_ALIGN);
    return (value + BERTH_CLOG_ALIGN - 1) / BERTH_CLOG_ALIGN * BERTH_CLOG_ALIGN;
}

static bool path_of(char *out, const char *dir, const char *name) {
    if (strnlen(dir, dir_len_max + 1) > dir_len_max) {
        return false;
    }
    int n = snprintf(out, path_len_max, "%s/%s", dir, name);
    return n > 0 && n < path_len_max;
}

/* fsync a directory, so a new entry in it survives an OS crash. 0 or errno. */
static int dir_sync(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return errno;
    }
    int rc = fsync(fd) == 0 ? 0 : errno;
    (void)close(fd);   /* read-only: nothing of ours is lost if it fails */
    return rc;
}

/* Write all of len bytes at off, through EINTR and short writes. 0 or errno. */
static int write_all(int fd, const uint8_t *bytes, size_t len, uint64_t off) {
    while (len > 0) {
        ssize_t wrote = pwrite(fd, bytes, len, (off_t)off);
        if (wrote < 0 && errno == EINTR) {
            continue;
        }
        if (wrote < 0) {
            return errno;
        }
        if (wrote == 0) {
            return EIO;   /* no progress and no reason: never loop on it */
        }
        bytes += wrote;
        len -= (size_t)wrote;
        off += (uint64_t)wrote;
    }
    return 0;
}

static int datasync(int fd) {
    int rc;
    do {
        rc = fdatasync(fd);
    } while (rc != 0 && errno == EINTR);
    return rc == 0 ? 0 : errno;
}

/* ---- frame layout ------------------------------------------------------ */

typedef struct frame_head {
    uint64_t off;
    uint32_t flags;
    uint64_t first_seq;
    uint32_t count;
    uint32_t payload_len;
} frame_head;

static uint64_t frame_last(const frame_head *h) {
    return h->first_seq + h->count - 1;
}

static uint64_t frame_next(const frame_head *h) {
    return align_up(h->off + BERTH_CLOG_HEADER_BYTES + h->payload_len);
}

/* The header at off, when it looks like one this file could hold (magic,
 * format, known flags, a count a batch can have, a payload inside the
 * file). Checks nothing the checksum covers beyond that: call frame_whole. */
static bool head_read(const uint8_t *map, uint64_t size, uint64_t off, frame_head *h) {
    assert(off % BERTH_CLOG_ALIGN == 0 && size % BERTH_CLOG_ALIGN == 0);
    if (off >= size) {
        return false;
    }
    const uint8_t *p = map + off;
    if (memcmp(p, FRAME_MAGIC, magic_len) != 0 || be32_get(p + 8) != frame_format) {
        return false;
    }
    h->off = off;
    h->flags = be32_get(p + 12);
    h->first_seq = be64_get(p + 16);
    h->count = be32_get(p + 24);
    h->payload_len = be32_get(p + 28);
    uint64_t room = size - off - BERTH_CLOG_HEADER_BYTES;
    return (h->flags & ~(uint32_t)flags_known) == 0 && h->count >= 1 &&
           h->count <= BERTH_BATCH_RECORDS_MAX && h->first_seq >= 1 &&
           h->first_seq <= UINT64_MAX - h->count && h->payload_len <= FRAME_PAYLOAD_MAX &&
           h->payload_len <= room;
}

static void frame_sum(const uint8_t *fields, const uint8_t *payload, size_t payload_len,
                      uint8_t digest[BERTH_HASH_LEN]) {
    SHA256_CTX ctx;
    /* These return 1 always for in-memory input; checked all the same. */
    int ok = SHA256_Init(&ctx);
    ok &= SHA256_Update(&ctx, fields, head_fields_len);
    ok &= SHA256_Update(&ctx, payload, payload_len);
    ok &= SHA256_Final(digest, &ctx);
    assert(ok == 1);
    (void)ok;
}

/* Whether the frame's checksum matches: all of it reached the disk. */
static bool frame_whole(const uint8_t *map, const frame_head *h) {
    const uint8_t *p = map + h->off;
    uint8_t digest[BERTH_HASH_LEN];
    frame_sum(p, p + BERTH_CLOG_HEADER_BYTES, h->payload_len, digest);
    return memcmp(digest, p + head_fields_len, BERTH_HASH_LEN) == 0;
}

/* One record of a payload and its names, pointing into the payload. */
typedef struct payload_item {
    const uint8_t *rec;
    uint32_t rec_len;
    berth_str instance;
    uint32_t worker_count;
    const uint8_t *workers;     /* worker_count of (u16 length, name) */
} payload_item;

typedef struct payload_cursor {
    const uint8_t *at;
    const uint8_t *end;
    bool touched;
} payload_cursor;

static payload_cursor payload_open(const uint8_t *map, const frame_head *h) {
    const uint8_t *payload = map + h->off + BERTH_CLOG_HEADER_BYTES;
    payload_cursor c = { payload, payload + h->payload_len, (h->flags & flag_touched) != 0 };
    return c;
}

static bool take(payload_cursor *c, size_t n, const uint8_t **out) {
    assert(c->at <= c->end);
    if ((size_t)(c->end - c->at) < n) {
        return false;
    }
    *out = c->at;
    c->at += n;
    return true;
}

/* A name: u16 length (len_min..BERTH_NAME_LEN_MAX) and its bytes. */
static bool take_name(payload_cursor *c, uint32_t len_min, berth_str *name) {
    const uint8_t *p;
    if (!take(c, 2, &p)) {
        return false;
    }
    uint32_t len = be16_get(p);
    if (len < len_min || len > BERTH_NAME_LEN_MAX || !take(c, len, &p)) {
        return false;
    }
    *name = len > 0 ? berth_str_make((const char *)p, len) : berth_str_make("", 0);
    return true;
}

/* The next record and names; false when the bytes do not parse (lengths
 * within the limits and within the payload). */
static bool payload_next(payload_cursor *c, payload_item *it) {
    const uint8_t *p;
    if (!take(c, 4, &p)) {
        return false;
    }
    it->rec_len = be32_get(p);
    if (it->rec_len == 0 || it->rec_len > BERTH_RECORD_BYTES_MAX ||
        !take(c, it->rec_len, &it->rec)) {
        return false;
    }
    it->instance = berth_str_make("", 0);
    it->worker_count = 0;
    it->workers = NULL;
    if (!c->touched) {
        return true;
    }
    if (!take_name(c, 0, &it->instance) || !take(c, 2, &p)) {
        return false;
    }
    it->worker_count = be16_get(p);
    if (it->worker_count > BERTH_PLACEMENT_WORKERS_MAX) {
        return false;
    }
    it->workers = c->at;
    for (uint32_t i = 0; i < it->worker_count; i++) {
        berth_str name;
        if (!take_name(c, 1, &name)) {
            return false;
        }
    }
    return true;
}

/* The worker names of an item payload_next accepted. */
static void workers_fill(const payload_item *it, berth_str *out) {
    const uint8_t *at = it->workers;
    for (uint32_t i = 0; i < it->worker_count; i++) {
        uint32_t len = be16_get(at);
        assert(len >= 1 && len <= BERTH_NAME_LEN_MAX);
        out[i] = berth_str_make((const char *)at + 2, len);
        at += 2 + len;
    }
}

/* The encoded record bytes of a frame a walk verified. */
static uint64_t frame_record_bytes(const uint8_t *map, const frame_head *h) {
    payload_cursor c = payload_open(map, h);
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < h->count; i++) {
        payload_item it;
        bool ok = payload_next(&c, &it);
        assert(ok);
        (void)ok;
        bytes += it.rec_len;
    }
    return bytes;
}

static bool touched_valid(const berth_touched *t) {
    if (t->instance.len > BERTH_NAME_LEN_MAX || (t->instance.ptr == NULL && t->instance.len > 0) ||
        t->worker_count > BERTH_PLACEMENT_WORKERS_MAX ||
        (t->workers == NULL && t->worker_count > 0)) {
        return false;
    }
    for (uint32_t i = 0; i < t->worker_count; i++) {
        berth_str w = t->workers[i];
        if (w.len == 0 || w.len > BERTH_NAME_LEN_MAX || w.ptr == NULL) {
            return false;
        }
    }
    return true;
}

static uint64_t touched_bytes(const berth_touched *t) {
    uint64_t bytes = 2 + (uint64_t)t->instance.len + 2;
    for (uint32_t i = 0; i < t->worker_count; i++) {
        bytes += 2 + (uint64_t)t->workers[i].len;
    }
    return bytes;
}

uint64_t berth_clog_frame_bytes(const berth_record *records, const berth_touched *touched,
                                size_t n) {
    assert(records != NULL || n == 0);
    uint64_t bytes = BERTH_CLOG_HEADER_BYTES;
    for (size_t i = 0; i < n; i++) {
        berth_record rec = records[i];
        rec.version = BERTH_RECORD_VERSION;   /* as append sets it */
        size_t len = berth_record_encoded_len(&rec, false);
        if (len == 0 || (touched != NULL && !touched_valid(&touched[i]))) {
            return 0;   /* append would refuse it */
        }
        bytes += 4 + len + (touched != NULL ? touched_bytes(&touched[i]) : 0);
    }
    return align_up(bytes);
}

/* ---- open and close ------------------------------------------------------ */

/* Remove a half-made DIR/commit.log.new and say why it was abandoned. */
static berth_jerr create_failed(int fd, const char *tmp, const char *what, int errnum, char *err,
                                size_t err_size) {
    (void)close(fd);   /* the file is being removed */
    (void)unlink(tmp);
    say(err, err_size, "cannot create the commit log %s (%s): %s", tmp, what, strerror(errnum));
    return errnum == ENOSPC || errnum == EDQUOT ? BERTH_J_FULL : BERTH_J_IO;
}

/* Make DIR/commit.log zero-filled to bytes (see "Creation"); *fd_out is
 * open on it, read-write. */
static berth_jerr file_create(const char *dir, const char *path, uint64_t bytes, int *fd_out,
                              char *err, size_t err_size) {
    char tmp[path_len_max];
    bool fits = path_of(tmp, dir, CLOG_FILE_NEW);
    assert(fits);   /* path fitted, and the name is as long as the room left for it */
    (void)fits;
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        say(err, err_size, "cannot create the commit log %s: %s", tmp, strerror(errno));
        return errno == ENOSPC || errno == EDQUOT ? BERTH_J_FULL : BERTH_J_IO;
    }
    uint8_t *zeros = calloc(1, zero_chunk_bytes);
    if (zeros == NULL) {
        (void)close(fd);
        (void)unlink(tmp);
        say(err, err_size, "out of memory creating the commit log %s", path);
        return BERTH_J_NOMEM;
    }
    int rc = 0;
    for (uint64_t off = 0; off < bytes && rc == 0; off += zero_chunk_bytes) {
        uint64_t left = bytes - off;
        rc = write_all(fd, zeros, left < zero_chunk_bytes ? (size_t)left : zero_chunk_bytes, off);
    }
    free(zeros);
    if (rc != 0) {
        return create_failed(fd, tmp, "zero-filling it", rc, err, err_size);
    }
    if (fsync(fd) != 0) {
        return create_failed(fd, tmp, "syncing it", errno, err, err_size);
    }
    if (rename(tmp, path) != 0) {
        return create_failed(fd, tmp, "renaming it", errno, err, err_size);
    }
    rc = dir_sync(dir);
    if (rc != 0) {
        (void)close(fd);
        say(err, err_size, "cannot sync the directory %s after creating %s: %s", dir, path,
            strerror(rc));
        return BERTH_J_IO;   /* commit.log stays: a later open finds it whole */
    }
    *fd_out = fd;
    return BERTH_J_OK;
}

/* The file's size, if it is one this module could have made. */
static berth_jerr size_check(int fd, const char *path, uint64_t *size, char *err,
                             size_t err_size) {
    struct stat st;
    if (fstat(fd, &st) != 0) {
        say(err, err_size, "cannot stat the commit log %s: %s", path, strerror(errno));
        return BERTH_J_IO;
    }
    uint64_t bytes = st.st_size < 0 ? 0 : (uint64_t)st.st_size;
    if (!S_ISREG(st.st_mode) || bytes % BERTH_CLOG_ALIGN != 0 || bytes < BERTH_CLOG_BYTES_MIN ||
        bytes > BERTH_CLOG_BYTES_MAX) {
        say(err, err_size, "the commit log %s is not a regular file of %llu..%llu bytes in"
            " multiples of %u: it has %llu", path, (unsigned long long)BERTH_CLOG_BYTES_MIN,
            (unsigned long long)BERTH_CLOG_BYTES_MAX, BERTH_CLOG_ALIGN,
            (unsigned long long)bytes);
        return BERTH_J_INVALID;
    }
    *size = bytes;
    return BERTH_J_OK;
}

static berth_jerr map_file(int fd, uint64_t size, const uint8_t **map, const char *path,
                           char *err, size_t err_size) {
    void *at = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
    if (at == MAP_FAILED) {
        say(err, err_size, "cannot map the commit log %s: %s", path, strerror(errno));
        return errno == ENOMEM ? BERTH_J_NOMEM : BERTH_J_IO;
    }
    *map = at;
    return BERTH_J_OK;
}

static bool scratch_alloc(berth_clog *log) {
    log->lens = calloc(BERTH_BATCH_RECORDS_MAX, sizeof(*log->lens));
    log->recode = malloc(BERTH_RECORD_BYTES_MAX);
    log->batch_records = calloc(BERTH_BATCH_RECORDS_MAX, sizeof(*log->batch_records));
    log->batch_touched = calloc(BERTH_BATCH_RECORDS_MAX, sizeof(*log->batch_touched));
    log->batch_workers = calloc(batch_workers_max, sizeof(*log->batch_workers));
    log->batch_hashes = calloc(BERTH_BATCH_RECORDS_MAX, sizeof(*log->batch_hashes));
    return log->lens != NULL && log->recode != NULL && log->batch_records != NULL && log->batch_touched != NULL &&
           log->batch_workers != NULL && log->batch_hashes != NULL;
}

static berth_jerr open_steps(berth_clog *log, const char *dir, uint64_t bytes, char *err,
                             size_t err_size) {
    if (!path_of(log->path, dir, BERTH_CLOG_FILE)) {
        say(err, err_size, "data directory path %.64s... is too long", dir);
        return BERTH_J_INVALID;
    }
    log->fd = open(log->path, O_RDWR | O_CLOEXEC);
    if (log->fd < 0 && errno != ENOENT) {
        say(err, err_size, "cannot open the commit log %s: %s", log->path, strerror(errno));
        return errno == EISDIR ? BERTH_J_INVALID : BERTH_J_IO;   /* not a file berth made */
    }
    if (log->fd < 0) {
        if (bytes < BERTH_CLOG_BYTES_MIN || bytes > BERTH_CLOG_BYTES_MAX ||
            bytes % BERTH_CLOG_ALIGN != 0) {
            say(err, err_size, "a commit log's size must be %llu..%llu bytes in multiples of"
                " %u, not %llu", (unsigned long long)BERTH_CLOG_BYTES_MIN,
                (unsigned long long)BERTH_CLOG_BYTES_MAX, BERTH_CLOG_ALIGN,
                (unsigned long long)bytes);
            return BERTH_J_INVALID;
        }
        berth_jerr jerr = file_create(dir, log->path, bytes, &log->fd, err, err_size);
        if (jerr != BERTH_J_OK) {
            return jerr;
        }
    }
    berth_jerr jerr = size_check(log->fd, log->path, &log->size, err, err_size);
    if (jerr == BERTH_J_OK) {
        jerr = map_file(log->fd, log->size, &log->map, log->path, err, err_size);
    }
    if (jerr == BERTH_J_OK && !scratch_alloc(log)) {
        say(err, err_size, "out of memory opening the commit log %s", log->path);
        jerr = BERTH_J_NOMEM;
    }
    return jerr;
}

berth_jerr berth_clog_open(berth_clog **out, const char *dir, uint64_t bytes, char *err,
                           size_t err_size) {
    assert(out != NULL && dir != NULL);
    *out = NULL;
    berth_clog *log = calloc(1, sizeof(*log));
    if (log == NULL) {
        say(err, err_size, "out of memory opening the commit log in %.64s", dir);
        return BERTH_J_NOMEM;
    }
    log->fd = -1;
    berth_jerr jerr = open_steps(log, dir, bytes, err, err_size);
    if (jerr != BERTH_J_OK) {
        berth_clog_close(log);
        return jerr;
    }
    assert(log->map != NULL && log->size % BERTH_CLOG_ALIGN == 0 && !log->ready);
    *out = log;
    return BERTH_J_OK;
}

void berth_clog_close(berth_clog *log) {
    if (log == NULL) {
        return;
    }
    if (log->map != NULL) {
        int rc = munmap((void *)log->map, (size_t)log->size);
        assert(rc == 0);
        (void)rc;
    }
    if (log->fd >= 0) {
        /* Every frame that was acknowledged was synced: a failed close
         * loses nothing anyone was told is durable. */
        (void)close(log->fd);
    }
    free(log->frame);
    free(log->lens);
    free(log->recode);
    free(log->batch_records);
    free(log->batch_touched);
    free(log->batch_workers);
    free(log->batch_hashes);
    free(log);
}

bool berth_clog_exists(const char *dir) {
    char path[path_len_max];
    struct stat st;
    return path_of(path, dir, BERTH_CLOG_FILE) && stat(path, &st) == 0;
}

uint64_t berth_clog_last_seq(const berth_clog *log) {
    return log->last_seq;
}

uint64_t berth_clog_used_bytes(const berth_clog *log) {
    return log->offset;
}

uint64_t berth_clog_size_bytes(const berth_clog *log) {
    return log->size;
}

/* ---- append ----------------------------------------------------------- */

/* Check the batch as the journal's append would (seqs, each record's
 * limits, the batch's bytes, the names) and measure its payload; sets each
 * record's version. */
static berth_jerr frame_measure(berth_clog *log, berth_record *records,
                                const berth_touched *touched, size_t n, uint64_t *payload_len) {
    uint64_t record_bytes = 0;
    uint64_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        berth_record *rec = &records[i];
        if (rec->seq != log->last_seq + 1 + i) {
            return BERTH_J_INVALID;
        }
        rec->version = BERTH_RECORD_VERSION;
        size_t len = berth_record_encoded_len(rec, false);
        if (len == 0 || (touched != NULL && !touched_valid(&touched[i]))) {
            return BERTH_J_INVALID;
        }
        log->lens[i] = (uint32_t)len;
        record_bytes += len;
        bytes += 4 + len + (touched != NULL ? touched_bytes(&touched[i]) : 0);
    }
    if (record_bytes > BERTH_BATCH_BYTES_MAX) {
        return BERTH_J_INVALID;   /* the journal would refuse it as one batch */
    }
    assert(bytes <= FRAME_PAYLOAD_MAX);
    *payload_len = bytes;
    return BERTH_J_OK;
}

/* Room for a frame of bytes in log->frame (never more than the file). */
static bool frame_room(berth_clog *log, uint64_t bytes) {
    assert(bytes <= log->size);
    if (log->frame_cap >= bytes) {
        return true;
    }
    uint64_t cap = log->frame_cap * 2 > bytes ? log->frame_cap * 2 : bytes;
    cap = cap < log->size ? cap : log->size;
    uint8_t *grown = realloc(log->frame, (size_t)cap);
    if (grown == NULL) {
        return false;
    }
    log->frame = grown;
    log->frame_cap = (size_t)cap;
    return true;
}

static uint8_t *name_put(uint8_t *at, berth_str name) {
    be16_put(at, name.len);
    if (name.len > 0) {
        memcpy(at + 2, name.ptr, name.len);
    }
    return at + 2 + name.len;
}

/* Encode the records, chained on the log's hash, and their names into
 * log->frame; then the header and its checksum; zeros to frame_bytes. */
static void frame_build(berth_clog *log, berth_record *records, const berth_touched *touched,
                        size_t n, uint64_t payload_len, uint64_t frame_bytes) {
    uint8_t *head = log->frame;
    uint8_t *payload = head + BERTH_CLOG_HEADER_BYTES;
    uint8_t *at = payload;
    const uint8_t *prev = log->chain;
    for (size_t i = 0; i < n; i++) {
        berth_record *rec = &records[i];
        memcpy(rec->prev_hash, prev, BERTH_HASH_LEN);
        be32_put(at, log->lens[i]);
        bool ok = berth_record_encode_sized(rec, at + 4, log->lens[i]);
        assert(ok);   /* encoded_len measured it */
        (void)ok;
        at += 4 + log->lens[i];
        if (touched != NULL) {
            at = name_put(at, touched[i].instance);
            be16_put(at, touched[i].worker_count);
            at += 2;
            for (uint32_t w = 0; w < touched[i].worker_count; w++) {
                at = name_put(at, touched[i].workers[w]);
            }
        }
        prev = rec->hash;
    }
    assert((uint64_t)(at - payload) == payload_len);
    memcpy(head, FRAME_MAGIC, magic_len);
    be32_put(head + 8, frame_format);
    be32_put(head + 12, touched != NULL ? flag_touched : 0);
    be64_put(head + 16, records[0].seq);
    be32_put(head + 24, (uint32_t)n);
    be32_put(head + 28, (uint32_t)payload_len);
    frame_sum(head, payload, (size_t)payload_len, head + head_fields_len);
    /* Whole pages: the kernel need not read the last one before writing it. */
    memset(at, 0, (size_t)(frame_bytes - BERTH_CLOG_HEADER_BYTES - payload_len));
}

/* One write and one fdatasync; the fault hook stands in for either. */
static int frame_write(berth_clog *log, uint64_t frame_bytes) {
    int rc = fault_of("write");
    if (rc == 0) {
        rc = write_all(log->fd, log->frame, (size_t)frame_bytes, log->offset);
    }
    if (rc == 0) {
        rc = fault_of("sync");
    }
    return rc == 0 ? datasync(log->fd) : rc;
}

berth_jerr berth_clog_append(berth_clog *log, berth_record *records,
                             const berth_touched *touched, size_t n) {
    assert(log != NULL);
    if (log->failed) {
        return BERTH_J_IO;
    }
    if (!log->ready || records == NULL || n == 0 || n > BERTH_BATCH_RECORDS_MAX) {
        return BERTH_J_INVALID;
    }
    uint64_t payload_len = 0;
    berth_jerr jerr = frame_measure(log, records, touched, n, &payload_len);
    if (jerr != BERTH_J_OK) {
        return jerr;
    }
    uint64_t frame_bytes = align_up(BERTH_CLOG_HEADER_BYTES + payload_len);
    if (frame_bytes > log->size) {
        return BERTH_J_INVALID;   /* no checkpoint would make room for it */
    }
    assert(log->offset <= log->size && log->offset % BERTH_CLOG_ALIGN == 0);
    if (frame_bytes > log->size - log->offset) {
        return BERTH_J_FULL;
    }
    if (!frame_room(log, frame_bytes)) {
        return BERTH_J_NOMEM;
    }
    frame_build(log, records, touched, n, payload_len, frame_bytes);
    if (frame_write(log, frame_bytes) != 0) {
        /* Whether the frame reached the disk is unknown, and after a failed
         * fdatasync the kernel may have dropped pages it could not write:
         * no later sync could prove anything. */
        log->failed = true;
        return BERTH_J_IO;
    }
    log->offset += frame_bytes;
    log->written_max = log->offset > log->written_max ? log->offset : log->written_max;
    log->last_seq = records[n - 1].seq;
    memcpy(log->chain, records[n - 1].hash, BERTH_HASH_LEN);
    return BERTH_J_OK;
}

/* ---- the walk ----------------------------------------------------------- */

typedef struct walk {
    /* in */
    const uint8_t *map;
    uint64_t size;
    uint64_t head_seq;
    uint8_t head_hash[BERTH_HASH_LEN];
    uint64_t scan_end;          /* the damage check reads offsets below it */
    const char *path;
    uint8_t *recode;            /* BERTH_RECORD_BYTES_MAX bytes of scratch */
    /* out */
    uint64_t apply_off;         /* the first frame to apply (== end_off: none) */
    uint64_t end_off;           /* where the walk ended */
    const char *end_why;        /* what is there */
    bool end_hashed;            /* the frame at end_off was hashed: not whole */
    uint64_t last_seq;          /* the last seq to apply (head_seq: none) */
    uint8_t last_hash[BERTH_HASH_LEN];
    uint64_t records;
} walk;

/* Whether the stored bytes are berth_record_encode's of the decoded fields
 * (rec's hash is recomputed; the stored one is in the bytes compared). */
static bool record_canonical(const berth_record *decoded, const uint8_t *bytes, size_t len,
                             uint8_t *scratch) {
    berth_record rec = *decoded;
    size_t got = berth_record_encode(&rec, scratch, BERTH_RECORD_BYTES_MAX);
    return got == len && memcmp(scratch, bytes, len) == 0;
}

/* Every record of a whole frame that follows: parses, decodes, carries its
 * seq, chains on the record before it (the first on chain), and is the very
 * bytes berth_record_encode makes of its fields, so its hash is right and
 * the journal, which encodes the same fields, stores the same bytes and
 * hash: a frame the journal would chain differently is refused here,
 * before anything is appended (one SHA-256 per record, as
 * berth_record_hash_ok would cost). Sets chain to the last record's hash.
 * CORRUPT with a sentence. */
static berth_jerr frame_check(const walk *w, const frame_head *h, uint8_t chain[BERTH_HASH_LEN],
                              char *err, size_t err_size) {
    payload_cursor c = payload_open(w->map, h);
    uint64_t record_bytes = 0;
    char why[err_why_len_max] = "";
    for (uint32_t i = 0; i < h->count; i++) {
        uint64_t seq = h->first_seq + i;
        payload_item it;
        berth_record rec;
        berth_jerr jerr = BERTH_J_CORRUPT;
        if (!payload_next(&c, &it)) {
            snprintf(why, sizeof(why), "its bytes do not parse");
        } else if ((jerr = berth_record_decode(it.rec, it.rec_len, &rec, why, sizeof(why))) !=
                   BERTH_J_OK) {
            /* why says it */
        } else if (rec.seq != seq) {
            jerr = BERTH_J_CORRUPT;
            snprintf(why, sizeof(why), "it carries seq %llu", (unsigned long long)rec.seq);
        } else if (!record_canonical(&rec, it.rec, it.rec_len, w->recode)) {
            jerr = BERTH_J_CORRUPT;
            snprintf(why, sizeof(why), "it is not what append encodes of its fields (%s)",
                     berth_record_hash_ok(it.rec, it.rec_len) ? "another encoding"
                                                               : "its hash does not match its body");
        } else if (memcmp(rec.prev_hash, chain, BERTH_HASH_LEN) != 0) {
            say(err, err_size, "the commit log %s is corrupt: the frame at offset %llu (seqs"
                " %llu..%llu) does not chain: seq %llu's prev_hash is not seq %llu's hash%s",
                w->path, (unsigned long long)h->off, (unsigned long long)h->first_seq,
                (unsigned long long)frame_last(h), (unsigned long long)seq,
                (unsigned long long)(seq - 1),
                seq == w->head_seq + 1 ? " (the journal's head)" : "");
            return BERTH_J_CORRUPT;
        } else {
            jerr = BERTH_J_OK;
            memcpy(chain, rec.hash, BERTH_HASH_LEN);
            record_bytes += it.rec_len;
        }
        if (jerr == BERTH_J_NOMEM) {
            say(err, err_size, "out of memory decoding the commit log %s: %s", w->path, why);
            return jerr;
        }
        if (jerr != BERTH_J_OK) {
            say(err, err_size, "the commit log %s is corrupt: the frame at offset %llu (seqs"
                " %llu..%llu) is whole, but its record for seq %llu is bad: %s", w->path,
                (unsigned long long)h->off, (unsigned long long)h->first_seq,
                (unsigned long long)frame_last(h), (unsigned long long)seq, why);
            return jerr;
        }
    }
    if (c.at != c.end || record_bytes > BERTH_BATCH_BYTES_MAX) {
        say(err, err_size, "the commit log %s is corrupt: the frame at offset %llu (seqs"
            " %llu..%llu) is whole, but %s", w->path, (unsigned long long)h->off,
            (unsigned long long)h->first_seq, (unsigned long long)frame_last(h),
            c.at != c.end ? "bytes follow its last record" : "its records exceed a batch");
        return BERTH_J_CORRUPT;
    }
    return BERTH_J_OK;
}

/* A whole frame at the walk's position that holds seqs past the last one
 * applied but does not start at the seq that follows. */
static berth_jerr not_following(const walk *w, const frame_head *h, uint64_t expect, char *err,
                                size_t err_size) {
    bool first = w->records == 0;
    say(err, err_size, "the commit log %s is corrupt: the frame at offset %llu holds seqs"
        " %llu..%llu, but the seq after %s is %llu (%s)", w->path,
        (unsigned long long)h->off, (unsigned long long)h->first_seq,
        (unsigned long long)frame_last(h), first ? "the journal's head" : "the frame before it",
        (unsigned long long)expect,
        h->first_seq > expect ? "a gap" : first ? "it is partly at or below the head"
                                              : "it overlaps the frame before it");
    return BERTH_J_CORRUPT;
}

/* Offsets [from, to) at every alignment: a whole frame holding a seq past
 * the last one applied means a frame the walk needed was damaged. */
static berth_jerr damage_scan(const walk *w, uint64_t from, uint64_t to, char *err,
                              size_t err_size) {
    to = to < w->size ? to : w->size;
    for (uint64_t off = from; off < to; off += BERTH_CLOG_ALIGN) {
        frame_head h;
        if ((off == w->end_off && w->end_hashed) || !head_read(w->map, w->size, off, &h) ||
            frame_last(&h) <= w->last_seq || !frame_whole(w->map, &h)) {
            continue;
        }
        say(err, err_size, "the commit log %s is corrupt: the walk ended at offset %llu after"
            " seq %llu (that offset %s), but the whole frame at offset %llu holds seqs"
            " %llu..%llu: a frame between them was damaged", w->path,
            (unsigned long long)w->end_off, (unsigned long long)w->last_seq, w->end_why,
            (unsigned long long)off, (unsigned long long)h.first_seq,
            (unsigned long long)frame_last(&h));
        return BERTH_J_CORRUPT;
    }
    return BERTH_J_OK;
}

/* The walk of the header comment: on OK, w's out fields say which frames
 * (seqs head_seq+1..last_seq) to apply. Nothing is written. */
static berth_jerr walk_run(walk *w, char *err, size_t err_size) {
    uint64_t off = 0;
    uint8_t chain[BERTH_HASH_LEN];
    memcpy(chain, w->head_hash, BERTH_HASH_LEN);
    w->apply_off = 0;
    w->last_seq = w->head_seq;
    w->records = 0;
    w->end_hashed = false;
    w->end_why = "is the end of the file";
    while (off < w->size) {
        frame_head h;
        if (!head_read(w->map, w->size, off, &h)) {
            w->end_why = "holds no frame";
            break;
        }
        if (frame_last(&h) <= w->last_seq) {
            if (w->records > 0) {
                w->end_why = "holds an older generation's frame";
                break;
            }
            off = frame_next(&h);   /* stale: already in the journal; never hashed */
            w->apply_off = off;
            continue;
        }
        if (!frame_whole(w->map, &h)) {
            w->end_why = "holds a frame that is not whole";
            w->end_hashed = true;
            break;
        }
        uint64_t expect = w->last_seq + 1;
        if (h.first_seq != expect) {
            return not_following(w, &h, expect, err, err_size);
        }
        berth_jerr jerr = frame_check(w, &h, chain, err, err_size);
        if (jerr != BERTH_J_OK) {
            return jerr;
        }
        w->records += h.count;
        w->last_seq = frame_last(&h);
        off = frame_next(&h);
    }
    w->end_off = off;
    if (w->records == 0) {
        w->apply_off = off;
    }
    memcpy(w->last_hash, chain, BERTH_HASH_LEN);
    assert(w->apply_off <= w->end_off && w->last_seq == w->head_seq + w->records);
    berth_jerr jerr = damage_scan(w, 0, w->apply_off < w->scan_end ? w->apply_off : w->scan_end,
                                  err, err_size);
    return jerr == BERTH_J_OK ? damage_scan(w, w->end_off, w->scan_end, err, err_size) : jerr;
}

/* ---- checkpoint -------------------------------------------------------- */

typedef struct batch {
    size_t n;
    uint64_t bytes;             /* encoded record bytes */
    size_t workers;             /* batch_workers used */
    bool touched;               /* some frame in it carries names */
} batch;

/* Decode a verified frame's records and names into the batch's arrays. */
static berth_jerr batch_add(berth_clog *log, batch *b, const frame_head *h, char *err,
                            size_t err_size) {
    assert(b->n + h->count <= BERTH_BATCH_RECORDS_MAX);
    payload_cursor c = payload_open(log->map, h);
    for (uint32_t i = 0; i < h->count; i++) {
        payload_item it;
        size_t k = b->n + i;
        berth_record *rec = &log->batch_records[k];
        char why[err_why_len_max] = "";
        berth_jerr jerr = payload_next(&c, &it)
                              ? berth_record_decode(it.rec, it.rec_len, rec, why, sizeof(why))
                              : BERTH_J_CORRUPT;
        if (jerr != BERTH_J_OK) {
            /* The walk decoded it a moment ago: the file changed under us. */
            say(err, err_size, "the commit log %s changed during a checkpoint: the frame at"
                " offset %llu no longer decodes: %s", log->path, (unsigned long long)h->off,
                why);
            return jerr;
        }
        log->batch_hashes[k] = it.rec + it.rec_len - BERTH_HASH_LEN;
        berth_touched *t = &log->batch_touched[k];
        t->instance = it.instance;
        t->worker_count = it.worker_count;
        t->workers = NULL;
        if (it.worker_count > 0) {
            assert(b->workers + it.worker_count <= batch_workers_max);
            berth_str *names = &log->batch_workers[b->workers];
            workers_fill(&it, names);
            t->workers = names;
            b->workers += it.worker_count;
        }
        b->bytes += it.rec_len;
    }
    b->n += h->count;
    b->touched |= (h->flags & flag_touched) != 0;
    return BERTH_J_OK;
}

/* One journal append of the batch; then each record's hash as the journal
 * computed it must be its frame's, and the head the last of them. */
static berth_jerr batch_flush(berth_clog *log, berth_journal *journal, batch *b, char *err,
                              size_t err_size) {
    assert(b->n >= 1 && b->n <= BERTH_BATCH_RECORDS_MAX && b->bytes <= BERTH_BATCH_BYTES_MAX);
    berth_record *recs = log->batch_records;
    unsigned long long first = recs[0].seq, last = recs[b->n - 1].seq;
    berth_jerr jerr = berth_journal_append(journal, recs, b->touched ? log->batch_touched : NULL,
                                           b->n);
    if (jerr != BERTH_J_OK) {
        say(err, err_size, "checkpoint of the commit log %s: the journal append of seqs"
            " %llu..%llu failed: %s", log->path, first, last, berth_jerr_name(jerr));
        return jerr;
    }
    for (size_t i = 0; i < b->n; i++) {
        if (memcmp(recs[i].hash, log->batch_hashes[i], BERTH_HASH_LEN) != 0) {
            say(err, err_size, "the commit log %s is corrupt: the journal stored seq %llu"
                " with another hash than its frame holds", log->path,
                (unsigned long long)recs[i].seq);
            return BERTH_J_CORRUPT;
        }
    }
    uint64_t head = 0;
    uint8_t hash[BERTH_HASH_LEN];
    jerr = berth_journal_head(journal, &head, hash);
    if (jerr != BERTH_J_OK || head != last ||
        memcmp(hash, log->batch_hashes[b->n - 1], BERTH_HASH_LEN) != 0) {
        say(err, err_size, "checkpoint of the commit log %s: after appending seqs %llu..%llu"
            " the journal's head is %s", log->path, first, last,
            jerr != BERTH_J_OK ? berth_jerr_name(jerr) : "another record");
        return jerr != BERTH_J_OK ? jerr : BERTH_J_CORRUPT;
    }
    memset(b, 0, sizeof(*b));
    return BERTH_J_OK;
}

/* Append the frames the walk verified, as few journal appends as the
 * journal's limits allow. *moved counts what reached the journal. */
static berth_jerr frames_apply(berth_clog *log, berth_journal *journal, const walk *w,
                               uint64_t *moved, char *err, size_t err_size) {
    batch b = { 0 };
    uint64_t off = w->apply_off;
    while (off < w->end_off) {
        frame_head h;
        bool ok = head_read(log->map, log->size, off, &h);
        assert(ok);   /* the walk read it */
        (void)ok;
        uint64_t bytes = frame_record_bytes(log->map, &h);
        if (b.n > 0 && (b.n + h.count > BERTH_BATCH_RECORDS_MAX ||
                        b.bytes + bytes > BERTH_BATCH_BYTES_MAX)) {
            size_t n = b.n;
            berth_jerr jerr = batch_flush(log, journal, &b, err, err_size);
            if (jerr != BERTH_J_OK) {
                return jerr;
            }
            *moved += n;
        }
        berth_jerr jerr = batch_add(log, &b, &h, err, err_size);
        if (jerr != BERTH_J_OK) {
            return jerr;
        }
        off = frame_next(&h);
    }
    if (b.n > 0) {
        size_t n = b.n;
        berth_jerr jerr = batch_flush(log, journal, &b, err, err_size);
        if (jerr != BERTH_J_OK) {
            return jerr;
        }
        *moved += n;
    }
    assert(*moved == w->records);
    return BERTH_J_OK;
}

berth_jerr berth_clog_checkpoint(berth_clog *log, berth_journal *journal, uint64_t *moved,
                                 char *err, size_t err_size) {
    assert(log != NULL && journal != NULL);
    uint64_t moved_now = 0;
    if (moved != NULL) {
        *moved = 0;
    }
    if (log->failed) {
        say(err, err_size, "the commit log %s failed a write or sync earlier: restart to"
            " recover it", log->path);
        return BERTH_J_IO;
    }
    walk w = { .map = log->map, .size = log->size, .path = log->path, .recode = log->recode };
    w.scan_end = log->scanned ? log->written_max : log->size;
    berth_jerr jerr = berth_journal_head(journal, &w.head_seq, w.head_hash);
    if (jerr != BERTH_J_OK) {
        say(err, err_size, "checkpoint of the commit log %s: cannot read the journal's head:"
            " %s", log->path, berth_jerr_name(jerr));
        return jerr;
    }
    jerr = walk_run(&w, err, err_size);
    if (jerr != BERTH_J_OK) {
        return jerr;
    }
    /* While running, this open knows what the walk must find: its own
     * frames past the head, or none. */
    uint64_t known = log->last_seq > w.head_seq ? log->last_seq : w.head_seq;
    if (log->ready && w.last_seq != known) {
        say(err, err_size, "the commit log %s is corrupt: this process's frames end at seq"
            " %llu (the journal's head is %llu), but the walk found frames through seq %llu"
            " (it ended at offset %llu)", log->path, (unsigned long long)log->last_seq,
            (unsigned long long)w.head_seq, (unsigned long long)w.last_seq,
            (unsigned long long)w.end_off);
        return BERTH_J_CORRUPT;
    }
    jerr = frames_apply(log, journal, &w, &moved_now, err, err_size);
    if (moved != NULL) {
        *moved = moved_now;
    }
    if (jerr != BERTH_J_OK) {
        return jerr;
    }
    jerr = berth_journal_sync(journal);
    if (jerr != BERTH_J_OK) {
        say(err, err_size, "checkpoint of the commit log %s: the journal's sync failed: %s",
            log->path, berth_jerr_name(jerr));
        return jerr;
    }
    /* The journal holds every frame durably: the next generation may
     * overwrite them from offset 0. */
    log->ready = true;
    log->scanned = true;
    log->offset = 0;
    log->last_seq = w.last_seq;
    memcpy(log->chain, w.last_hash, BERTH_HASH_LEN);
    return BERTH_J_OK;
}

/* ---- pending ------------------------------------------------------------ */

berth_jerr berth_clog_pending(const char *dir, uint64_t head_seq,
                              const uint8_t head_hash[BERTH_HASH_LEN], uint64_t *records,
                              char *err, size_t err_size) {
    assert(dir != NULL && head_hash != NULL && records != NULL);
    *records = 0;
    char path[path_len_max];
    if (!path_of(path, dir, BERTH_CLOG_FILE)) {
        say(err, err_size, "data directory path %.64s... is too long", dir);
        return BERTH_J_IO;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            return BERTH_J_OK;
        }
        say(err, err_size, "cannot open the commit log %s: %s", path, strerror(errno));
        return BERTH_J_IO;
    }
    walk w = { .head_seq = head_seq, .path = path };
    memcpy(w.head_hash, head_hash, BERTH_HASH_LEN);
    w.recode = malloc(BERTH_RECORD_BYTES_MAX);
    berth_jerr jerr = w.recode != NULL ? size_check(fd, path, &w.size, err, err_size)
                                       : BERTH_J_NOMEM;
    if (jerr == BERTH_J_NOMEM) {
        say(err, err_size, "out of memory reading the commit log %s", path);
    }
    if (jerr == BERTH_J_INVALID) {
        jerr = BERTH_J_CORRUPT;   /* no open would take it: not a log berth made */
    }
    if (jerr == BERTH_J_OK) {
        jerr = map_file(fd, w.size, &w.map, path, err, err_size);
    }
    if (jerr == BERTH_J_OK) {
        w.scan_end = w.size;
        jerr = walk_run(&w, err, err_size);
        int rc = munmap((void *)w.map, (size_t)w.size);
        assert(rc == 0);
        (void)rc;
    }
    (void)close(fd);   /* read-only */
    free(w.recode);
    if (jerr == BERTH_J_OK) {
        *records = w.records;
    }
    return jerr;
}
