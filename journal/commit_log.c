/* commit_log.c — owns DIR/commit.log and DIR/commit.log.2 (commit_log.h):
 * the frame layout, the append that makes a batch durable with one write
 * and one fdatasync, the seal that hands the active file to a checkpointer
 * thread, and the walks that move frames into the journal
 * (berth_clog_checkpoint_sealed over the sealed file alone;
 * berth_clog_checkpoint over both, which is also the recovery at start) or
 * only count them (berth_clog_pending).
 *
 * Two files. files[0] is commit.log, files[1] commit.log.2; each has its
 * own fd, map, size, write offset, written_max and scanned. One is active
 * (appends go there); the other is free or sealed. A seal hands the active
 * file to the checkpointer and makes the other active from its offset 0:
 * the other is free only when its frames are durable in the journal (it was
 * never used, or its checkpoint synced), so every frame it holds is at or
 * below the journal's head, and overwriting them loses nothing. A full
 * checkpoint moves both files' frames and makes file 0 active from offset
 * 0, as open leaves it: after any full checkpoint the same file takes the
 * next frame, whichever was active before.
 *
 * Order of the files. Nothing on disk says which file came first: the seal
 * lives in memory. A full checkpoint and pending peek at each file's first
 * frame past the journal's head, by headers alone, skipping stale frames
 * as the walk does (first_live_seq), and walk first the file whose first
 * such frame starts at head+1, then the other from where the first ended
 * (its last seq and hash). Legitimately at most one whole frame can start
 * at head+1: the older file's frames past the head start there, the newer
 * file's start after the older's last. When both headers claim head+1 (a
 * torn frame left by a crash, whose seqs the next process wrote again) or
 * neither does, file 0 goes first: a torn first frame ends that walk with
 * nothing applied and the other file is walked from the head, and with
 * neither the walks report the gap as CORRUPT. While running, this open
 * knows the order (the sealed file, if it holds frames past the head,
 * comes first) and the last seq (log->last_seq): a walk that disagrees is
 * CORRUPT.
 *
 * Reading. Each file is mapped whole, read-only and shared (coherent with
 * pwrite on Linux), so the records a checkpoint hands the journal point
 * into the map and stay valid while the journal appends them; a file never changes
 * size, so its map never goes stale. (A read error in a mapped page is
 * SIGBUS, as it is for LMDB's own map.)
 *
 * The walk of one file (walk_run) reads each frame's header before anything
 * else. A frame whose seqs all lie at or below where the walk starts (the
 * journal's head, or the first file's last seq) is stale: before the first
 * frame to apply it is skipped (a checkpoint that moved part of a
 * generation before it failed, or one with no frame since the last, or the
 * other file's seqs), once frames are being applied it ends the walk;
 * either way it is never hashed, so a running berthd's checkpoint costs
 * the SHA-256 of the frames it moves and little more. A frame holding a seq
 * past the last one applied is hashed: whole and following (seq and
 * chain), it is checked record by record and applied; whole and not
 * following (a gap, an overlap, a broken chain) is CORRUPT; not whole ends
 * the walk (the torn last frame). Then the damage check (damage_scan)
 * reads the header at every aligned offset the walk did not verify and
 * hashes those holding a seq past the walk's last applied: a whole one
 * means an acknowledged frame before it was lost, CORRUPT. (For the first
 * file of two that is its own last seq: no frame of the older file can
 * hold a seq the newer one holds.) Every check of both walks runs before
 * the first journal append, so a damaged log moves nothing: each record
 * must be the very bytes berth_record_encode makes of its fields (proved
 * by the frame's SHA-256 for frames this open wrote, by encoding each
 * record again for the others: frame_check), so the journal stores those
 * bytes as they are (berth_journal_append_encoded: no decode and no
 * encoding; it checks each record's seq, link and SHA-256 on the bytes it
 * stores, so LMDB never keeps a record that does not hash, whatever the
 * map's pages did after the walk read them). What no walk can tell apart: the last acknowledged frame
 * damaged on the medium, with nothing whole after it, looks like the torn
 * frame a crash leaves, and is dropped like one. A checkpoint then re-reads
 * the frames it verified (no hash), the first file's then the second's,
 * and appends them in as few journal appends as the journal's limits
 * allow, a batch running on from one file into the other; frames without
 * touched names ride in a batch with others as records that touched none
 * (an empty entry, which the journal stores exactly as no entry), so the
 * touched flag does not split batches. A batch holds whole frames, so the
 * journal's head always ends at a frame's end.
 *
 * Cheap damage checks while running. Once a full checkpoint of this open
 * scanned both files whole, offsets of a file at or past the furthest byte
 * this open has written into it since are unchanged and were proven to
 * hold no whole frame past that checkpoint's head (which only grows), so
 * later checkpoints scan each file only up to that byte (its scan_end).
 * pending always scans the whole files.
 *
 * Threads. One thread appends (append, seal, last_seq,
 * active_used_bytes); one checkpointer may run checkpoint_sealed meanwhile.
 * They share no scratch: frame and lens are append's, recode and the
 * batch_* arrays the checkpoints'. A file belongs to one thread at a time:
 * the active one to the appender, the sealed one to the checkpointer from
 * the seal until it frees it; the hand-over in both directions is a write
 * of `sealed` under mu, so what one thread wrote into a file's fields is
 * visible to the other. Everything both threads (or used_bytes, from any
 * thread) read or write is in `struct shared` and touched only under mu:
 * the sealed index, the bytes each file's frames take as used_bytes
 * reports them, the sealed file's last seq and hash, and the sticky failed
 * flag. ready, last_seq and chain are the appender's (a full checkpoint,
 * with no other call in flight, writes them).
 *
 * Creation. A file is made as its name plus ".new", zero-filled by writes
 * (not fallocate: unwritten extents would make each fdatasync write
 * metadata), fsynced, renamed to its name, and DIR fsynced: a crash while
 * it is made never leaves a short log file behind. */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
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
#include "jutil.h"

#define FRAME_MAGIC "BRTHCLOG"
#define NEW_SUFFIX ".new"

enum {
    dir_len_max = 4000,                 /* data directory path, bytes */
    path_len_max = dir_len_max + 64,    /* DIR/commit.log.2.new fits */
    file_count = 2,                     /* commit.log and commit.log.2 */
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
_Static_assert(sizeof(BERTH_CLOG_FILE2 NEW_SUFFIX) < 64, "a file's name fits path_len_max");

static const char *const file_names[file_count] = { BERTH_CLOG_FILE, BERTH_CLOG_FILE2 };

/* One of the two files. Its fields belong to the thread that owns the
 * file (header comment, "Threads"); fd, map, size and path never change
 * after open. */
typedef struct clog_file {
    int fd;
    const uint8_t *map;             /* the whole file, PROT_READ, MAP_SHARED */
    uint64_t size;
    uint64_t offset;                /* the next frame's start while active; its frames' end
                                       while sealed */
    uint64_t written_max;           /* end of the furthest frame this open wrote into it */
    bool scanned;                   /* a full checkpoint of this open scanned it whole */
    char path[path_len_max];
} clog_file;

/* What the appending thread, the checkpointer and used_bytes's callers
 * share: read and written under berth_clog.mu only. */
struct shared {
    int sealed;                     /* the sealed file's index, or -1: none */
    uint64_t active_bytes;          /* the active file's offset, as used_bytes reports it */
    uint64_t sealed_bytes;          /* the sealed file's frames' bytes (0: none sealed) */
    uint64_t sealed_last_seq;       /* the appender's last seq when it sealed */
    uint8_t sealed_last_hash[BERTH_HASH_LEN];
    bool failed;                    /* a write or sync failed: sticky IO */
};

struct berth_clog {
    clog_file files[file_count];
    /* The appending thread's (written also by a full checkpoint, which runs
     * alone). */
    bool ready;                     /* a full checkpoint succeeded: offsets and chain known */
    int active;                     /* the file appends go into */
    uint64_t last_seq;
    uint8_t chain[BERTH_HASH_LEN];  /* the last record's hash: the next frame chains on it */
    uint8_t *frame;                 /* the frame being built, frame_cap bytes */
    size_t frame_cap;
    uint32_t *lens;                 /* encoded record lengths of the frame being built */
    /* The checkpoints' scratch (checkpoint_sealed's thread, or a full
     * checkpoint): never touched by append. */
    uint8_t *recode;                /* BERTH_RECORD_BYTES_MAX: a walk re-encodes each record */
    /* The torn frame the last full checkpoint's walks ended on, when its
     * header still read (berth_clog_dropped): the full checkpoint's. */
    bool dropped;
    uint64_t dropped_first, dropped_last, dropped_off;
    const char *dropped_path;
    /* A checkpoint's journal batch: each record's bytes in its frame (in
     * the map), and its names. */
    berth_encoded *batch_records;
    berth_touched *batch_touched;
    berth_str *batch_workers;
    pthread_mutex_t mu;             /* guards shared */
    bool mu_made;
    void (*contended)(void *arg);   /* berth_clog_set_contention_hook; set before threads */
    void *contended_arg;
    struct shared shared;
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
        if (len == 0 || (touched != NULL && !berth_touched_valid(&touched[i]))) {
            return 0;   /* append would refuse it */
        }
        bytes += 4 + len + (touched != NULL ? touched_bytes(&touched[i]) : 0);
    }
    return align_up(bytes);
}

/* ---- open and close ------------------------------------------------------ */

static void lock(berth_clog *log) {
    if (pthread_mutex_trylock(&log->mu) == 0) {
        return;
    }
    if (log->contended != NULL) {
        log->contended(log->contended_arg);   /* its holder may be at a low priority */
    }
    int rc = pthread_mutex_lock(&log->mu);
    assert(rc == 0);   /* a default mutex, locked by no one twice */
    (void)rc;
}

static void unlock(berth_clog *log) {
    int rc = pthread_mutex_unlock(&log->mu);
    assert(rc == 0);
    (void)rc;
}

/* Remove a half-made NAME.new and say why it was abandoned. */
static berth_jerr create_failed(int fd, const char *tmp, const char *what, int errnum, char *err,
                                size_t err_size) {
    (void)close(fd);   /* the file is being removed */
    (void)unlink(tmp);
    berth_jsay(err, err_size, "cannot create the commit log %s (%s): %s", tmp, what, strerror(errnum));
    return errnum == ENOSPC || errnum == EDQUOT ? BERTH_J_FULL : BERTH_J_IO;
}

/* Make the file at path zero-filled to bytes (see "Creation"); *fd_out is
 * open on it, read-write. */
static berth_jerr file_create(const char *dir, const char *path, uint64_t bytes, int *fd_out,
                              char *err, size_t err_size) {
    char tmp[path_len_max];
    int n = snprintf(tmp, sizeof(tmp), "%s" NEW_SUFFIX, path);
    assert(n > 0 && n < path_len_max);   /* path fitted with room for the suffix */
    (void)n;
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        berth_jsay(err, err_size, "cannot create the commit log %s: %s", tmp, strerror(errno));
        return errno == ENOSPC || errno == EDQUOT ? BERTH_J_FULL : BERTH_J_IO;
    }
    uint8_t *zeros = calloc(1, zero_chunk_bytes);
    if (zeros == NULL) {
        (void)close(fd);
        (void)unlink(tmp);
        berth_jsay(err, err_size, "out of memory creating the commit log %s", path);
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
    rc = berth_dir_sync(dir);
    if (rc != 0) {
        (void)close(fd);
        berth_jsay(err, err_size, "cannot sync the directory %s after creating %s: %s", dir, path,
            strerror(rc));
        return BERTH_J_IO;   /* the file stays: a later open finds it whole */
    }
    *fd_out = fd;
    return BERTH_J_OK;
}

/* The file's size, if it is one this module could have made. */
static berth_jerr size_check(int fd, const char *path, uint64_t *size, char *err,
                             size_t err_size) {
    struct stat st;
    if (fstat(fd, &st) != 0) {
        berth_jsay(err, err_size, "cannot stat the commit log %s: %s", path, strerror(errno));
        return BERTH_J_IO;
    }
    uint64_t bytes = st.st_size < 0 ? 0 : (uint64_t)st.st_size;
    if (!S_ISREG(st.st_mode) || bytes % BERTH_CLOG_ALIGN != 0 || bytes < BERTH_CLOG_BYTES_MIN ||
        bytes > BERTH_CLOG_BYTES_MAX) {
        berth_jsay(err, err_size, "the commit log %s is not a regular file of %llu..%llu bytes in"
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
        berth_jsay(err, err_size, "cannot map the commit log %s: %s", path, strerror(errno));
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
    return log->lens != NULL && log->recode != NULL && log->batch_records != NULL &&
           log->batch_touched != NULL && log->batch_workers != NULL;
}

/* Open one file (its path set), creating it when absent, and map it. */
static berth_jerr file_open(clog_file *f, const char *dir, uint64_t bytes, char *err,
                            size_t err_size) {
    f->fd = open(f->path, O_RDWR | O_CLOEXEC);
    if (f->fd < 0 && errno != ENOENT) {
        berth_jsay(err, err_size, "cannot open the commit log %s: %s", f->path, strerror(errno));
        return errno == EISDIR ? BERTH_J_INVALID : BERTH_J_IO;   /* not a file berth made */
    }
    if (f->fd < 0) {
        if (bytes < BERTH_CLOG_BYTES_MIN || bytes > BERTH_CLOG_BYTES_MAX ||
            bytes % BERTH_CLOG_ALIGN != 0) {
            berth_jsay(err, err_size, "a commit log's size must be %llu..%llu bytes in multiples of"
                " %u, not %llu", (unsigned long long)BERTH_CLOG_BYTES_MIN,
                (unsigned long long)BERTH_CLOG_BYTES_MAX, BERTH_CLOG_ALIGN,
                (unsigned long long)bytes);
            return BERTH_J_INVALID;
        }
        berth_jerr jerr = file_create(dir, f->path, bytes, &f->fd, err, err_size);
        if (jerr != BERTH_J_OK) {
            return jerr;
        }
    }
    berth_jerr jerr = size_check(f->fd, f->path, &f->size, err, err_size);
    return jerr == BERTH_J_OK ? map_file(f->fd, f->size, &f->map, f->path, err, err_size) : jerr;
}

static berth_jerr open_steps(berth_clog *log, const char *dir, uint64_t bytes, char *err,
                             size_t err_size) {
    for (int i = 0; i < file_count; i++) {
        if (!path_of(log->files[i].path, dir, file_names[i])) {
            berth_jsay(err, err_size, "data directory path %.64s... is too long", dir);
            return BERTH_J_INVALID;
        }
    }
    if (pthread_mutex_init(&log->mu, NULL) != 0) {
        berth_jsay(err, err_size, "cannot make a mutex for the commit log in %.64s", dir);
        return BERTH_J_NOMEM;
    }
    log->mu_made = true;
    /* commit.log first: a directory from before commit.log.2 keeps its
     * file and gains the second. */
    for (int i = 0; i < file_count; i++) {
        berth_jerr jerr = file_open(&log->files[i], dir, bytes, err, err_size);
        if (jerr != BERTH_J_OK) {
            return jerr;
        }
    }
    if (!scratch_alloc(log)) {
        berth_jsay(err, err_size, "out of memory opening the commit log %s", log->files[0].path);
        return BERTH_J_NOMEM;
    }
    return BERTH_J_OK;
}

berth_jerr berth_clog_open(berth_clog **out, const char *dir, uint64_t bytes, char *err,
                           size_t err_size) {
    assert(out != NULL && dir != NULL);
    *out = NULL;
    berth_clog *log = calloc(1, sizeof(*log));
    if (log == NULL) {
        berth_jsay(err, err_size, "out of memory opening the commit log in %.64s", dir);
        return BERTH_J_NOMEM;
    }
    for (int i = 0; i < file_count; i++) {
        log->files[i].fd = -1;
    }
    log->shared.sealed = -1;
    berth_jerr jerr = open_steps(log, dir, bytes, err, err_size);
    if (jerr != BERTH_J_OK) {
        berth_clog_close(log);
        return jerr;
    }
    for (int i = 0; i < file_count; i++) {
        assert(log->files[i].map != NULL && log->files[i].size % BERTH_CLOG_ALIGN == 0);
    }
    assert(!log->ready && log->active == 0 && log->shared.sealed == -1);
    *out = log;
    return BERTH_J_OK;
}

void berth_clog_close(berth_clog *log) {
    if (log == NULL) {
        return;
    }
    for (int i = 0; i < file_count; i++) {
        clog_file *f = &log->files[i];
        if (f->map != NULL) {
            int rc = munmap((void *)f->map, (size_t)f->size);
            assert(rc == 0);
            (void)rc;
        }
        if (f->fd >= 0) {
            /* Every frame that was acknowledged was synced: a failed close
             * loses nothing anyone was told is durable. */
            (void)close(f->fd);
        }
    }
    if (log->mu_made) {
        int rc = pthread_mutex_destroy(&log->mu);
        assert(rc == 0);   /* no other call in flight */
        (void)rc;
    }
    free(log->frame);
    free(log->lens);
    free(log->recode);
    free(log->batch_records);
    free(log->batch_touched);
    free(log->batch_workers);
    free(log);
}

bool berth_clog_exists(const char *dir) {
    char path[path_len_max];
    struct stat st;
    for (int i = 0; i < file_count; i++) {
        if (path_of(path, dir, file_names[i]) && stat(path, &st) == 0) {
            return true;
        }
    }
    return false;
}

bool berth_clog_ever_written(const char *dir) {
    char path[path_len_max];
    for (int i = 0; i < file_count; i++) {
        if (!path_of(path, dir, file_names[i])) {
            return true;
        }
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT) {
                continue;
            }
            return true;
        }
        uint8_t head[magic_len];
        ssize_t got = pread(fd, head, sizeof head, 0);
        int rc = close(fd);
        assert(rc == 0);
        (void)rc;
        if (got < 0 || (got == (ssize_t)sizeof head && memcmp(head, FRAME_MAGIC, magic_len) == 0)) {
            return true;
        }
    }
    return false;
}

uint64_t berth_clog_last_seq(const berth_clog *log) {
    return log->last_seq;
}

uint64_t berth_clog_used_bytes(berth_clog *log) {
    lock(log);
    uint64_t bytes = log->shared.active_bytes + log->shared.sealed_bytes;
    unlock(log);
    return bytes;
}

uint64_t berth_clog_size_bytes(const berth_clog *log) {
    return log->files[0].size + log->files[1].size;   /* fixed at open */
}

uint64_t berth_clog_active_used_bytes(const berth_clog *log) {
    return log->files[log->active].offset;
}

uint64_t berth_clog_active_size_bytes(const berth_clog *log) {
    return log->files[log->active].size;
}

void berth_clog_set_contention_hook(berth_clog *log, void (*fn)(void *arg), void *arg) {
    assert(log != NULL);
    log->contended = fn;
    log->contended_arg = arg;
}

/* The sticky IO flag, from any thread. */
static bool failed_get(berth_clog *log) {
    lock(log);
    bool failed = log->shared.failed;
    unlock(log);
    return failed;
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
        if (len == 0 || (touched != NULL && !berth_touched_valid(&touched[i]))) {
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


/* Room for a frame of bytes in log->frame (never more than the active file). */
static bool frame_room(berth_clog *log, uint64_t bytes) {
    uint64_t size = log->files[log->active].size;
    assert(bytes <= size);
    if (log->frame_cap >= bytes) {
        return true;
    }
    uint64_t cap = log->frame_cap * 2 > bytes ? log->frame_cap * 2 : bytes;
    cap = cap < size ? cap : size;
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


/* One write and one fdatasync into the active file; the fault hook stands
 * in for either. */
static int frame_write(berth_clog *log, uint64_t frame_bytes) {
    clog_file *f = &log->files[log->active];
    int rc = fault_of("write");
    if (rc == 0) {
        rc = write_all(f->fd, log->frame, (size_t)frame_bytes, f->offset);
    }
    if (rc == 0) {
        rc = fault_of("sync");
    }
    return rc == 0 ? datasync(f->fd) : rc;
}

berth_jerr berth_clog_append(berth_clog *log, berth_record *records,
                             const berth_touched *touched, size_t n) {
    assert(log != NULL);
    if (failed_get(log)) {
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
    clog_file *f = &log->files[log->active];
    uint64_t frame_bytes = align_up(BERTH_CLOG_HEADER_BYTES + payload_len);
    if (frame_bytes > f->size) {
        return BERTH_J_INVALID;   /* no checkpoint would make room for it in this file */
    }
    assert(f->offset <= f->size && f->offset % BERTH_CLOG_ALIGN == 0);
    if (frame_bytes > f->size - f->offset) {
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
        lock(log);
        log->shared.failed = true;
        unlock(log);
        return BERTH_J_IO;
    }
    f->offset += frame_bytes;
    f->written_max = f->offset > f->written_max ? f->offset : f->written_max;
    log->last_seq = records[n - 1].seq;
    memcpy(log->chain, records[n - 1].hash, BERTH_HASH_LEN);
    lock(log);
    log->shared.active_bytes = f->offset;
    unlock(log);
    return BERTH_J_OK;
}

/* ---- seal ---------------------------------------------------------------- */

bool berth_clog_seal(berth_clog *log) {
    assert(log != NULL);
    if (!log->ready) {
        return false;   /* the write offsets are unknown: nothing to hand over */
    }
    int active = log->active, other = 1 - active;
    clog_file *f = &log->files[active];
    lock(log);
    bool sealed = log->shared.sealed >= 0;
    if (!sealed && f->offset > 0) {
        assert(log->shared.active_bytes == f->offset && log->shared.sealed_bytes == 0);
        /* The other file is free: every frame it holds is at or below the
         * journal's head (its checkpoint synced before it was freed, or it
         * was never used since the last full checkpoint), so the next
         * generation may overwrite them from offset 0. */
        log->shared.sealed = active;
        log->shared.sealed_bytes = f->offset;
        log->shared.sealed_last_seq = log->last_seq;
        memcpy(log->shared.sealed_last_hash, log->chain, BERTH_HASH_LEN);
        log->shared.active_bytes = 0;
        log->files[other].offset = 0;
        log->active = other;
        sealed = true;
    }
    assert(!sealed || log->shared.sealed == 1 - log->active);
    unlock(log);
    return sealed;
}

/* ---- the walk ----------------------------------------------------------- */

/* How a walk's start is named in its sentences. */
typedef struct walk_start {
    const char *name;           /* the seq after it is where the walk's frames start */
    const char *note;           /* after "seq N's prev_hash is not seq N-1's hash" */
    const char *below;          /* the first frame starts at or below it */
} walk_start;

static const walk_start start_head = { "the journal's head", " (the journal's head)",
                                       "it is partly at or below the head" };
static const walk_start start_other = { "the other file's last frame",
                                        " (the other file's last record)",
                                        "it overlaps the other file's frames" };
/* The second file's walk when the first applied nothing: its frames must
 * follow the head, and the seqs between are in no whole frame of the other
 * file (damaged there, or the file is gone). */
static const walk_start start_head_second = {
    "the journal's head (the other file holds no whole frame past it: damaged or missing)",
    " (the journal's head)", "it is partly at or below the head"
};

typedef struct walk {
    /* in */
    const uint8_t *map;         /* NULL with size 0: the file is absent (pending) */
    uint64_t size;
    uint64_t head_seq;          /* the walk applies seqs past it: the journal's head, */
    uint8_t head_hash[BERTH_HASH_LEN];  /* or the last seq the first file's walk applied */
    const walk_start *start;    /* what head_seq is, for sentences */
    uint64_t scan_end;          /* the damage check reads offsets below it */
    const char *path;
    uint8_t *recode;            /* BERTH_RECORD_BYTES_MAX bytes of scratch */
    bool own_frames;            /* this open wrote every frame past the head (see frame_check) */
    /* out */
    uint64_t apply_off;         /* the first frame to apply (== end_off: none) */
    uint64_t end_off;           /* where the walk ended */
    const char *end_why;        /* what is there */
    bool end_hashed;            /* the frame at end_off was hashed: not whole */
    uint64_t end_first, end_last;   /* with end_hashed: the seqs its header claims */
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

/* One record of a frame, not one of this open's: decodes, and is the very
 * bytes berth_record_encode makes of its fields. Sets *seq, and prev and
 * hash (copied out). CORRUPT or NOMEM with why. */
static berth_jerr record_check_foreign(const walk *w, const payload_item *it, uint64_t *seq,
                                       uint8_t prev[BERTH_HASH_LEN], uint8_t hash[BERTH_HASH_LEN],
                                       char *why, size_t why_size) {
    berth_record rec;
    berth_jerr jerr = berth_record_decode(it->rec, it->rec_len, &rec, why, why_size);
    if (jerr != BERTH_J_OK) {
        return jerr;
    }
    if (!record_canonical(&rec, it->rec, it->rec_len, w->recode)) {
        snprintf(why, why_size, "it is not what append encodes of its fields (%s)",
                 berth_record_hash_ok(it->rec, it->rec_len) ? "another encoding"
                                                             : "its hash does not match its body");
        return BERTH_J_CORRUPT;
    }
    *seq = rec.seq;
    memcpy(prev, rec.prev_hash, BERTH_HASH_LEN);
    memcpy(hash, rec.hash, BERTH_HASH_LEN);
    return BERTH_J_OK;
}

/* One record of a frame this open wrote: its seq and hashes read in place
 * (berth_record_peek_chain), no decode. */
static berth_jerr record_check_own(const payload_item *it, uint64_t *seq,
                                   uint8_t prev[BERTH_HASH_LEN], uint8_t hash[BERTH_HASH_LEN],
                                   char *why, size_t why_size) {
    const uint8_t *p = NULL, *h = NULL;
    if (!berth_record_peek_chain(it->rec, it->rec_len, seq, &p, &h)) {
        snprintf(why, why_size, "it does not start as a record of a known format version or lacks its hashes");
        return BERTH_J_CORRUPT;
    }
    memcpy(prev, p, BERTH_HASH_LEN);
    memcpy(hash, h, BERTH_HASH_LEN);
    return BERTH_J_OK;
}

/* Every record of a whole frame that follows: parses, carries its seq,
 * chains on the record before it (the first on chain), and is the very
 * bytes berth_record_encode makes of its fields, hash included. The
 * checkpoint hands those bytes to the journal as they are
 * (berth_journal_append_encoded, which checks seqs and links but does not
 * hash), so a frame is proved here, before anything is appended. Frames
 * another process wrote (at start, recovery, and in pending) are decoded
 * and each record encoded again and compared (one SHA-256 per record).
 * Frames this open wrote (own_frames: a sealed file, or a running berthd's
 * full checkpoint) were built with berth_record_encode, and the frame's
 * SHA-256, checked whole before this, proves the bytes are still those:
 * their seqs and links are read in place. Sets chain to the last record's
 * hash. CORRUPT with a sentence. */
static berth_jerr frame_check(const walk *w, const frame_head *h, uint8_t chain[BERTH_HASH_LEN],
                              char *err, size_t err_size) {
    payload_cursor c = payload_open(w->map, h);
    uint64_t record_bytes = 0;
    char why[err_why_len_max] = "";
    for (uint32_t i = 0; i < h->count; i++) {
        uint64_t seq = h->first_seq + i;
        uint64_t seq_got = 0;
        uint8_t prev[BERTH_HASH_LEN], hash[BERTH_HASH_LEN];
        payload_item it;
        berth_jerr jerr = BERTH_J_CORRUPT;
        if (!payload_next(&c, &it)) {
            snprintf(why, sizeof(why), "its bytes do not parse");
        } else if ((jerr = w->own_frames
                               ? record_check_own(&it, &seq_got, prev, hash, why, sizeof(why))
                               : record_check_foreign(w, &it, &seq_got, prev, hash, why,
                                                      sizeof(why))) != BERTH_J_OK) {
            /* why says it */
        } else if (seq_got != seq) {
            jerr = BERTH_J_CORRUPT;
            snprintf(why, sizeof(why), "it carries seq %llu", (unsigned long long)seq_got);
        } else if (memcmp(prev, chain, BERTH_HASH_LEN) != 0) {
            berth_jsay(err, err_size, "the commit log %s is corrupt: the frame at offset %llu (seqs"
                " %llu..%llu) does not chain: seq %llu's prev_hash is not seq %llu's hash%s",
                w->path, (unsigned long long)h->off, (unsigned long long)h->first_seq,
                (unsigned long long)frame_last(h), (unsigned long long)seq,
                (unsigned long long)(seq - 1), seq == w->head_seq + 1 ? w->start->note : "");
            return BERTH_J_CORRUPT;
        } else {
            memcpy(chain, hash, BERTH_HASH_LEN);
            record_bytes += it.rec_len;
        }
        if (jerr == BERTH_J_NOMEM) {
            berth_jsay(err, err_size, "out of memory decoding the commit log %s: %s", w->path, why);
            return jerr;
        }
        if (jerr != BERTH_J_OK) {
            berth_jsay(err, err_size, "the commit log %s is corrupt: the frame at offset %llu (seqs"
                " %llu..%llu) is whole, but its record for seq %llu is bad: %s", w->path,
                (unsigned long long)h->off, (unsigned long long)h->first_seq,
                (unsigned long long)frame_last(h), (unsigned long long)seq, why);
            return jerr;
        }
    }
    if (c.at != c.end || record_bytes > BERTH_BATCH_BYTES_MAX) {
        berth_jsay(err, err_size, "the commit log %s is corrupt: the frame at offset %llu (seqs"
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
    berth_jsay(err, err_size, "the commit log %s is corrupt: the frame at offset %llu holds seqs"
        " %llu..%llu, but the seq after %s is %llu (%s)", w->path,
        (unsigned long long)h->off, (unsigned long long)h->first_seq,
        (unsigned long long)frame_last(h), first ? w->start->name : "the frame before it",
        (unsigned long long)expect,
        h->first_seq > expect ? "a gap" : first ? w->start->below
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
        berth_jsay(err, err_size, "the commit log %s is corrupt: the walk ended at offset %llu after"
            " seq %llu (that offset %s), but the whole frame at offset %llu holds seqs"
            " %llu..%llu: a frame between them was damaged", w->path,
            (unsigned long long)w->end_off, (unsigned long long)w->last_seq, w->end_why,
            (unsigned long long)off, (unsigned long long)h.first_seq,
            (unsigned long long)frame_last(&h));
        return BERTH_J_CORRUPT;
    }
    return BERTH_J_OK;
}

/* The walk of one file (header comment): on OK, w's out fields say which
 * frames (seqs head_seq+1..last_seq) to apply. Nothing is written. */
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
            w->end_first = h.first_seq;
            w->end_last = frame_last(&h);
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

/* The first seq of the first frame past head_seq in a file, by headers
 * alone, stale frames skipped as walk_run skips them; 0: none (a header
 * that does not read ends the peek). Nothing is hashed. */
static uint64_t first_live_seq(const uint8_t *map, uint64_t size, uint64_t head_seq) {
    uint64_t off = 0;
    frame_head h;
    while (head_read(map, size, off, &h)) {
        if (frame_last(&h) > head_seq) {
            return h.first_seq;
        }
        off = frame_next(&h);   /* > off: a frame takes at least one alignment */
    }
    return 0;
}

/* A file as the walks read it. */
typedef struct file_view {
    const uint8_t *map;         /* NULL with size 0: absent */
    uint64_t size;
    uint64_t scan_end;
    const char *path;
} file_view;

/* Both files in seq order (header comment, "Order of the files"): w[0] is
 * the walk of v[*first] from the journal's head, w[1] the walk of the other
 * from where w[0] ended. Every check of both walks; nothing is written. */
static berth_jerr walk_both(const file_view v[file_count], uint64_t head_seq,
                            const uint8_t head_hash[BERTH_HASH_LEN], uint8_t *recode,
                            bool own_frames, int *first, walk w[file_count], char *err,
                            size_t err_size) {
    uint64_t next = head_seq + 1;
    bool room = head_seq < UINT64_MAX;   /* else next is 0, first_live_seq's "none" */
    bool starts0 = room && first_live_seq(v[0].map, v[0].size, head_seq) == next;
    bool starts1 = room && first_live_seq(v[1].map, v[1].size, head_seq) == next;
    *first = !starts0 && starts1 ? 1 : 0;
    for (int k = 0; k < file_count; k++) {
        const file_view *f = &v[k == 0 ? *first : 1 - *first];
        walk *wk = &w[k];
        memset(wk, 0, sizeof(*wk));
        wk->map = f->map;
        wk->size = f->size;
        wk->scan_end = f->scan_end;
        wk->path = f->path;
        wk->recode = recode;
        wk->own_frames = own_frames;
        wk->start = k == 0 ? &start_head : w[0].records == 0 ? &start_head_second : &start_other;
        wk->head_seq = k == 0 ? head_seq : w[0].last_seq;
        memcpy(wk->head_hash, k == 0 ? head_hash : w[0].last_hash, BERTH_HASH_LEN);
        berth_jerr jerr = walk_run(wk, err, err_size);
        if (jerr != BERTH_J_OK) {
            return jerr;
        }
    }
    assert(w[1].head_seq == w[0].last_seq && w[1].last_seq >= w[0].last_seq);
    return BERTH_J_OK;
}

/* ---- checkpoint -------------------------------------------------------- */

typedef struct batch {
    size_t n;
    uint64_t bytes;             /* encoded record bytes */
    size_t workers;             /* batch_workers used */
    bool touched;               /* some frame in it carries names */
    const char *path;           /* the file of its first frame, for sentences */
} batch;

/* Put a frame w verified into the batch's arrays: each record's bytes (in
 * the map) and its names. */
static berth_jerr batch_add(berth_clog *log, batch *b, const walk *w, const frame_head *h,
                            char *err, size_t err_size) {
    assert(b->n + h->count <= BERTH_BATCH_RECORDS_MAX);
    if (b->n == 0) {
        b->path = w->path;
    }
    payload_cursor c = payload_open(w->map, h);
    for (uint32_t i = 0; i < h->count; i++) {
        payload_item it;
        size_t k = b->n + i;
        if (!payload_next(&c, &it)) {
            /* The walk parsed it a moment ago: the file changed under us. */
            berth_jsay(err, err_size, "the commit log %s changed during a checkpoint: the frame at"
                " offset %llu no longer parses", w->path, (unsigned long long)h->off);
            return BERTH_J_CORRUPT;
        }
        log->batch_records[k] = (berth_encoded){ it.rec, it.rec_len };
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

/* One journal append of the batch's bytes as they are (the walk proved
 * them: see frame_check); then the journal's head must be the batch's last
 * record, its hash the one in that record's bytes. */
static berth_jerr batch_flush(berth_clog *log, berth_journal *journal, batch *b, char *err,
                              size_t err_size) {
    assert(b->n >= 1 && b->n <= BERTH_BATCH_RECORDS_MAX && b->bytes <= BERTH_BATCH_BYTES_MAX);
    const berth_encoded *recs = log->batch_records;
    const berth_encoded *end = &recs[b->n - 1];
    uint64_t first = 0, last = 0;
    const uint8_t *prev = NULL, *last_hash = NULL;
    if (!berth_record_peek_chain(recs[0].bytes, recs[0].len, &first, &prev, &last_hash) ||
        !berth_record_peek_chain(end->bytes, end->len, &last, &prev, &last_hash)) {
        /* The walk read both a moment ago: the file changed under us. */
        berth_jsay(err, err_size, "the commit log %s changed during a checkpoint: a record it"
            " verified no longer reads as one", b->path);
        return BERTH_J_CORRUPT;
    }
    berth_jerr jerr = berth_journal_append_encoded(journal, recs, b->touched ? log->batch_touched : NULL,
                                                   b->n);
    if (jerr == BERTH_J_CORRUPT) {
        berth_jsay(err, err_size, "the commit log %s is corrupt: among seqs %llu..%llu the journal"
            " found a record whose hash is not the SHA-256 of its body, so it took none of them",
            b->path,
            (unsigned long long)first, (unsigned long long)last);
        return jerr;
    }
    if (jerr != BERTH_J_OK) {
        berth_jsay(err, err_size, "checkpoint of the commit log %s: the journal append of seqs"
            " %llu..%llu failed: %s%s", b->path, (unsigned long long)first, (unsigned long long)last,
            berth_jerr_name(jerr), jerr == BERTH_J_INVALID ? " (they do not follow the journal's"
            " head, seq by seq and hash by hash, or this journal takes no encoded records)" : "");
        return jerr;
    }
    uint64_t head = 0;
    uint8_t hash[BERTH_HASH_LEN];
    jerr = berth_journal_head(journal, &head, hash);
    if (jerr != BERTH_J_OK || head != last || memcmp(hash, last_hash, BERTH_HASH_LEN) != 0) {
        berth_jsay(err, err_size, "checkpoint of the commit log %s: after appending seqs %llu..%llu"
            " the journal's head is %s", b->path, (unsigned long long)first, (unsigned long long)last,
            jerr != BERTH_J_OK ? berth_jerr_name(jerr) : "another record");
        return jerr != BERTH_J_OK ? jerr : BERTH_J_CORRUPT;
    }
    memset(b, 0, sizeof(*b));
    return BERTH_J_OK;
}

/* batch_flush, counting in *moved what reached the journal. */
static berth_jerr batch_move(berth_clog *log, berth_journal *journal, batch *b, uint64_t *moved,
                             char *err, size_t err_size) {
    size_t n = b->n;
    berth_jerr jerr = batch_flush(log, journal, b, err, err_size);
    if (jerr == BERTH_J_OK) {
        *moved += n;
    }
    return jerr;
}

/* Append the frames the walks verified, in their order (the first file's,
 * then the second's), in as few journal appends as the journal's limits
 * allow: a batch runs on from one file into the next. *moved counts what
 * reached the journal. */
static berth_jerr frames_apply(berth_clog *log, berth_journal *journal, const walk *ws,
                               size_t nw, uint64_t *moved, char *err, size_t err_size) {
    batch b = { 0 };
    uint64_t records = 0;
    for (size_t k = 0; k < nw; k++) {
        const walk *w = &ws[k];
        assert(k == 0 || w->head_seq == ws[k - 1].last_seq);   /* seq order */
        records += w->records;
        uint64_t off = w->apply_off;
        while (off < w->end_off) {
            frame_head h;
            bool ok = head_read(w->map, w->size, off, &h);
            assert(ok);   /* the walk read it */
            (void)ok;
            uint64_t bytes = frame_record_bytes(w->map, &h);
            berth_jerr jerr = BERTH_J_OK;
            if (b.n > 0 && (b.n + h.count > BERTH_BATCH_RECORDS_MAX ||
                            b.bytes + bytes > BERTH_BATCH_BYTES_MAX)) {
                jerr = batch_move(log, journal, &b, moved, err, err_size);
            }
            if (jerr == BERTH_J_OK) {
                jerr = batch_add(log, &b, w, &h, err, err_size);
            }
            if (jerr != BERTH_J_OK) {
                return jerr;
            }
            off = frame_next(&h);
        }
    }
    if (b.n > 0) {
        berth_jerr jerr = batch_move(log, journal, &b, moved, err, err_size);
        if (jerr != BERTH_J_OK) {
            return jerr;
        }
    }
    assert(*moved == records);
    return BERTH_J_OK;
}

/* The journal's head, or its error with a sentence. */
static berth_jerr head_get(berth_journal *journal, const char *path, uint64_t *seq,
                           uint8_t hash[BERTH_HASH_LEN], char *err, size_t err_size) {
    berth_jerr jerr = berth_journal_head(journal, seq, hash);
    if (jerr != BERTH_J_OK) {
        berth_jsay(err, err_size, "checkpoint of the commit log %s: cannot read the journal's head:"
            " %s", path, berth_jerr_name(jerr));
    }
    return jerr;
}

static berth_jerr sync_journal(berth_journal *journal, const char *path, char *err,
                               size_t err_size) {
    berth_jerr jerr = berth_journal_sync(journal);
    if (jerr != BERTH_J_OK) {
        berth_jsay(err, err_size, "checkpoint of the commit log %s: the journal's sync failed: %s",
            path, berth_jerr_name(jerr));
        return jerr;
    }
    /* A file is freed (and overwritten) on this OK: hold the journal to
     * what it says is durable, not to a return code alone. */
    uint64_t head = 0, durable = 0;
    uint8_t hash[BERTH_HASH_LEN];
    jerr = head_get(journal, path, &head, hash, err, err_size);
    if (jerr != BERTH_J_OK) {
        return jerr;
    }
    jerr = berth_journal_durable(journal, &durable);
    if (jerr == BERTH_J_OK && durable < head) {
        jerr = BERTH_J_IO;
        berth_jsay(err, err_size, "checkpoint of the commit log %s: after the journal's sync its durable"
            " seq %llu is behind its head %llu", path, (unsigned long long)durable, (unsigned long long)head);
    } else if (jerr != BERTH_J_OK) {
        berth_jsay(err, err_size, "checkpoint of the commit log %s: cannot read the journal's durable seq:"
            " %s", path, berth_jerr_name(jerr));
    }
    return jerr;
}

static berth_jerr failed_say(const char *path, char *err, size_t err_size) {
    berth_jsay(err, err_size, "the commit log %s failed a write or sync earlier: restart to"
        " recover it", path);
    return BERTH_J_IO;
}

/* ---- checkpoint of the sealed file (the checkpointer thread) ------------ */

/* What the seal handed over, read under mu. */
typedef struct seal_state {
    int sealed;
    bool failed;
    uint64_t last_seq;
    uint8_t last_hash[BERTH_HASH_LEN];
} seal_state;

static seal_state seal_state_get(berth_clog *log) {
    seal_state s;
    lock(log);
    s.sealed = log->shared.sealed;
    s.failed = log->shared.failed;
    s.last_seq = log->shared.sealed_last_seq;
    memcpy(s.last_hash, log->shared.sealed_last_hash, BERTH_HASH_LEN);
    unlock(log);
    return s;
}

/* The walk of the sealed file from the journal's head: it must end at the
 * last record the file held when it was sealed, or part of it is lost;
 * unless the head is already past that record (a full checkpoint that
 * failed after moving this file's frames and some of the active file's),
 * and then the file holds nothing past the head. */
static berth_jerr sealed_walk(berth_clog *log, const seal_state *s, berth_journal *journal,
                              walk *w, char *err, size_t err_size) {
    const clog_file *f = &log->files[s->sealed];
    /* A seal needs a full checkpoint, which scanned both files whole. */
    assert(f->scanned && f->written_max <= f->size);
    memset(w, 0, sizeof(*w));
    w->map = f->map;
    w->size = f->size;
    w->scan_end = f->written_max;
    w->path = f->path;
    w->recode = log->recode;
    w->own_frames = true;   /* a file is sealed only by the open that wrote its frames */
    w->start = &start_head;
    berth_jerr jerr = head_get(journal, f->path, &w->head_seq, w->head_hash, err, err_size);
    if (jerr == BERTH_J_OK) {
        jerr = walk_run(w, err, err_size);
    }
    if (jerr != BERTH_J_OK) {
        return jerr;
    }
    bool moved_past = w->head_seq > s->last_seq && w->records == 0;
    if (!moved_past &&
        (w->last_seq != s->last_seq || memcmp(w->last_hash, s->last_hash, BERTH_HASH_LEN) != 0)) {
        berth_jsay(err, err_size, "the commit log %s is corrupt: its frames ended at seq %llu when it"
            " was sealed (the journal's head is %llu), but the walk found frames through seq"
            " %llu%s (it ended at offset %llu)", f->path, (unsigned long long)s->last_seq,
            (unsigned long long)w->head_seq, (unsigned long long)w->last_seq,
            w->last_seq == s->last_seq ? " with another hash" : "",
            (unsigned long long)w->end_off);
        return BERTH_J_CORRUPT;
    }
    return BERTH_J_OK;
}

berth_jerr berth_clog_checkpoint_sealed(berth_clog *log, berth_journal *journal,
                                        uint64_t *moved, char *err, size_t err_size) {
    assert(log != NULL && journal != NULL);
    uint64_t moved_now = 0;
    if (moved != NULL) {
        *moved = 0;
    }
    seal_state s = seal_state_get(log);
    if (s.sealed < 0) {
        berth_jsay(err, err_size, "no commit log file is sealed: nothing to checkpoint");
        return BERTH_J_INVALID;
    }
    const char *path = log->files[s.sealed].path;
    if (s.failed) {
        return failed_say(path, err, err_size);
    }
    /* From here to the free below, files[s.sealed] is this thread's: the
     * appender writes only the active file, and seals no other while this
     * one is sealed. */
    walk w;
    berth_jerr jerr = sealed_walk(log, &s, journal, &w, err, err_size);
    if (jerr == BERTH_J_OK) {
        jerr = frames_apply(log, journal, &w, 1, &moved_now, err, err_size);
    }
    if (moved != NULL) {
        *moved = moved_now;
    }
    if (jerr == BERTH_J_OK) {
        jerr = sync_journal(journal, path, err, err_size);
    }
    if (jerr != BERTH_J_OK) {
        return jerr;   /* the file stays sealed: a retry walks it from the new head */
    }
    /* Its frames are durable in the journal: the next seal may overwrite
     * them. Only now, after the sync. */
    lock(log);
    assert(log->shared.sealed == s.sealed);
    log->shared.sealed = -1;
    log->shared.sealed_bytes = 0;
    unlock(log);
    return BERTH_J_OK;
}

/* ---- full checkpoint (no other call in flight) ---------------------------- */

/* While running, this open knows what the walks must find: the sealed
 * file first if it holds frames past the head, and its own frames through
 * log->last_seq (or none past the head). */
static berth_jerr known_check(const berth_clog *log, const seal_state *s, int first,
                              const walk w[file_count], char *err, size_t err_size) {
    uint64_t head = w[0].head_seq;
    if (s->sealed >= 0 && head < s->last_seq && first != s->sealed) {
        berth_jsay(err, err_size, "the commit log %s is corrupt: it was sealed with frames through"
            " seq %llu past the journal's head %llu, but %s holds the first frame past the head",
            log->files[s->sealed].path, (unsigned long long)s->last_seq,
            (unsigned long long)head, log->files[first].path);
        return BERTH_J_CORRUPT;
    }
    uint64_t known = log->last_seq > head ? log->last_seq : head;
    if (w[1].last_seq != known) {
        berth_jsay(err, err_size, "the commit log %s is corrupt: this process's frames end at seq"
            " %llu (the journal's head is %llu), but the walks found frames through seq %llu"
            " (%s's ended at offset %llu, %s's at offset %llu)", log->files[first].path,
            (unsigned long long)log->last_seq, (unsigned long long)head,
            (unsigned long long)w[1].last_seq, w[0].path, (unsigned long long)w[0].end_off,
            w[1].path, (unsigned long long)w[1].end_off);
        return BERTH_J_CORRUPT;
    }
    return BERTH_J_OK;
}

/* The journal holds every frame durably: both files may be overwritten.
 * File 0 is active from offset 0 (as after open), and nothing is sealed. */
static void full_reset(berth_clog *log, const walk *last) {
    for (int i = 0; i < file_count; i++) {
        log->files[i].offset = 0;
        log->files[i].scanned = true;
    }
    log->active = 0;
    log->ready = true;
    log->last_seq = last->last_seq;
    memcpy(log->chain, last->last_hash, BERTH_HASH_LEN);
    lock(log);
    log->shared.sealed = -1;
    log->shared.sealed_bytes = 0;
    log->shared.active_bytes = 0;
    unlock(log);
}

berth_jerr berth_clog_checkpoint(berth_clog *log, berth_journal *journal, uint64_t *moved,
                                 char *err, size_t err_size) {
    assert(log != NULL && journal != NULL);
    uint64_t moved_now = 0;
    if (moved != NULL) {
        *moved = 0;
    }
    seal_state s = seal_state_get(log);
    if (s.failed) {
        return failed_say(log->files[0].path, err, err_size);
    }
    file_view v[file_count];
    for (int i = 0; i < file_count; i++) {
        const clog_file *f = &log->files[i];
        v[i] = (file_view){ f->map, f->size, f->scanned ? f->written_max : f->size, f->path };
    }
    uint64_t head_seq = 0;
    uint8_t head_hash[BERTH_HASH_LEN];
    walk w[file_count];
    int first = 0;
    berth_jerr jerr = head_get(journal, log->files[0].path, &head_seq, head_hash, err, err_size);
    if (jerr == BERTH_J_OK) {
        jerr = walk_both(v, head_seq, head_hash, log->recode, log->ready, &first, w, err,
                         err_size);
    }
    if (jerr == BERTH_J_OK && log->ready) {
        jerr = known_check(log, &s, first, w, err, err_size);
    }
    if (jerr == BERTH_J_OK) {
        jerr = frames_apply(log, journal, w, file_count, &moved_now, err, err_size);
    }
    if (moved != NULL) {
        *moved = moved_now;
    }
    if (jerr == BERTH_J_OK) {
        jerr = sync_journal(journal, log->files[first].path, err, err_size);
    }
    if (jerr != BERTH_J_OK) {
        return jerr;   /* nothing reset: a retry walks from the journal's new head */
    }
    /* The walk that ended on a torn frame past what moved (the newer file's,
     * normally: only it can end torn). */
    log->dropped = false;
    for (int k = file_count - 1; k >= 0 && !log->dropped; k--) {
        if (w[k].end_hashed && w[k].end_last > head_seq + moved_now) {
            log->dropped = true;
            log->dropped_first = w[k].end_first;
            log->dropped_last = w[k].end_last;
            log->dropped_off = w[k].end_off;
            log->dropped_path = w[k].path;
        }
    }
    full_reset(log, &w[1]);
    assert(log->last_seq == head_seq + moved_now);
    return BERTH_J_OK;
}

bool berth_clog_dropped(const berth_clog *log, uint64_t *first_seq, uint64_t *last_seq,
                        const char **path, uint64_t *off) {
    assert(log != NULL);
    if (log->dropped) {
        *first_seq = log->dropped_first;
        *last_seq = log->dropped_last;
        *path = log->dropped_path;
        *off = log->dropped_off;
    }
    return log->dropped;
}

/* ---- pending ------------------------------------------------------------ */

/* Open and map one file for reading; absent: map NULL, size 0. */
static berth_jerr pending_open(const char *dir, const char *name, char *path, int *fd,
                               file_view *v, char *err, size_t err_size) {
    *fd = -1;
    *v = (file_view){ NULL, 0, 0, path };
    if (!path_of(path, dir, name)) {
        berth_jsay(err, err_size, "data directory path %.64s... is too long", dir);
        return BERTH_J_IO;
    }
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0) {
        if (errno == ENOENT) {
            return BERTH_J_OK;   /* holds no frame */
        }
        berth_jsay(err, err_size, "cannot open the commit log %s: %s", path, strerror(errno));
        return BERTH_J_IO;
    }
    berth_jerr jerr = size_check(*fd, path, &v->size, err, err_size);
    if (jerr == BERTH_J_INVALID) {
        return BERTH_J_CORRUPT;   /* no open would take it: not a log berth made */
    }
    if (jerr == BERTH_J_OK) {
        jerr = map_file(*fd, v->size, &v->map, path, err, err_size);
    }
    if (jerr != BERTH_J_OK) {
        v->size = 0;
        return jerr;
    }
    v->scan_end = v->size;
    return BERTH_J_OK;
}

berth_jerr berth_clog_pending(const char *dir, uint64_t head_seq,
                              const uint8_t head_hash[BERTH_HASH_LEN], uint64_t *records,
                              char *err, size_t err_size) {
    assert(dir != NULL && head_hash != NULL && records != NULL);
    *records = 0;
    char paths[file_count][path_len_max];
    int fds[file_count];
    file_view v[file_count];
    berth_jerr jerr = BERTH_J_OK;
    for (int i = 0; i < file_count; i++) {
        berth_jerr jerr_i = pending_open(dir, file_names[i], paths[i], &fds[i], &v[i],
                                         jerr == BERTH_J_OK ? err : NULL, err_size);
        jerr = jerr != BERTH_J_OK ? jerr : jerr_i;   /* the first error's sentence */
    }
    uint8_t *recode = jerr == BERTH_J_OK ? malloc(BERTH_RECORD_BYTES_MAX) : NULL;
    if (jerr == BERTH_J_OK && recode == NULL) {
        berth_jsay(err, err_size, "out of memory reading the commit log %s", paths[0]);
        jerr = BERTH_J_NOMEM;
    }
    walk w[file_count];
    int first = 0;
    if (jerr == BERTH_J_OK) {
        jerr = walk_both(v, head_seq, head_hash, recode, false, &first, w, err, err_size);
    }
    free(recode);
    for (int i = 0; i < file_count; i++) {
        if (v[i].map != NULL) {
            int rc = munmap((void *)v[i].map, (size_t)v[i].size);
            assert(rc == 0);
            (void)rc;
        }
        if (fds[i] >= 0) {
            (void)close(fds[i]);   /* read-only */
        }
    }
    if (jerr == BERTH_J_OK) {
        *records = w[0].records + w[1].records;
    }
    return jerr;
}
