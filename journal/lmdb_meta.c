/* lmdb_meta.c — owns the check of an LMDB data file's two meta pages before
 * LMDB maps it (lmdb_meta.h).
 *
 * mdb_env_open trusts the meta pages: it takes the page size from the newer
 * one and reaches the second meta page, and every tree page, at page size
 * times page number in its map. One flipped byte of a page size, a last page
 * or a root page number then points past the end of the file, and the first
 * touch faults (SIGBUS) inside mdb_env_open, before any check of ours could
 * run. So the pages are read here with pread, never mapped.
 *
 * The layout is LMDB 0.9's (mdb.c, data version 1; Debian ships 0.9.24+),
 * mirrored below with LMDB's own field types so that native size and
 * alignment match: a page header (pgno, pad, flags, lower, upper), then
 * MDB_meta: mm_magic, mm_version, mm_address, mm_mapsize, mm_dbs[2] (FREE_DBI,
 * MAIN_DBI; FREE_DBI's md_pad holds the page size), mm_last_pg, mm_txnid.
 * LMDB never rewrites a meta page's magic, version or page size after it
 * creates the file (mdb_env_write_meta writes from mm_mapsize or md_depth
 * on), so a healthy file always passes those tests on both pages; the
 * length and root tests use only the newer page, the one LMDB opens, as
 * the older one may be half-written by a crash LMDB itself survives.
 * Everything checked is a fact of every healthy file: the check refuses
 * only what LMDB would fault on or misread. */
#define _GNU_SOURCE
#include "lmdb_meta.h"
#include "jutil.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum {
    meta_pages = 2,                 /* NUM_METAS */
    page_flag_meta = 0x08,          /* P_META */
    data_version = 1,               /* MDB_DATA_VERSION (not MDB_DEVEL) */
    page_size_min = 512,            /* below any OS page LMDB takes its size from */
    page_size_max = 0x10000,        /* MAX_PAGESIZE with PAGEBASE; 0x8000 without */
    /* A read-only open beside a writer may read the newer meta page while
     * the writer rewrites it: a refusal is read again this many times. */
    read_attempts_max = 3,
    read_retry_wait_ms = 2,
    why_len_max = 160
};

static const uint32_t lmdb_magic = 0xBEEFC0DEu;   /* MDB_MAGIC */

/* MDB_page's header; PAGEHDRSZ is offsetof(.., ptrs). */
typedef struct {
    size_t pgno;
    uint16_t pad;
    uint16_t flags;
    uint16_t lower;
    uint16_t upper;
    uint16_t ptrs[1];
} disk_page_head;

/* MDB_db: pgno_t and mdb_size_t are size_t (MDB_ID) in LMDB 0.9. */
typedef struct {
    uint32_t pad;
    uint16_t flags;
    uint16_t depth;
    size_t branch_pages;
    size_t leaf_pages;
    size_t overflow_pages;
    size_t entries;
    size_t root;
} disk_db;

typedef struct {
    uint32_t magic;
    uint32_t version;
    void *address;
    size_t mapsize;
    disk_db dbs[2];
    size_t last_pg;
    size_t txnid;
} disk_meta;

#define PAGE_HEAD_BYTES offsetof(disk_page_head, ptrs)
#define META_READ_BYTES (PAGE_HEAD_BYTES + sizeof(disk_meta))   /* LMDB's MDB_metabuf */
#define PAGE_NONE SIZE_MAX   /* P_INVALID: an empty tree's root */


static bool page_size_ok(uint32_t size) {
    return size >= page_size_min && size <= page_size_max && (size & (size - 1)) == 0;
}

/* One meta page: its header and MDB_meta. OK, or CORRUPT with why set
 * (the file too short for it, no meta mark, magic, version, page size). */
static berth_jerr meta_read(int fd, uint32_t index, uint64_t at, disk_meta *meta, char *why,
                            size_t why_size, bool *empty) {
    uint8_t buf[META_READ_BYTES];
    ssize_t got = pread(fd, buf, sizeof buf, (off_t)at);
    if (got < 0) {
        snprintf(why, why_size, "cannot read meta page %" PRIu32 ": %s", index, strerror(errno));
        return BERTH_J_IO;
    }
    if (got == 0 && at == 0) {
        *empty = true;   /* a new file: LMDB writes both meta pages */
        return BERTH_J_OK;
    }
    if ((size_t)got < sizeof buf) {
        snprintf(why, why_size, "is too short for its meta page %" PRIu32 " (%zd bytes at %" PRIu64
                 ")", index, got, at);
        return BERTH_J_CORRUPT;
    }
    disk_page_head head;
    memcpy(&head, buf, PAGE_HEAD_BYTES);
    memcpy(meta, buf + PAGE_HEAD_BYTES, sizeof *meta);
    if ((head.flags & page_flag_meta) == 0 || meta->magic != lmdb_magic) {
        snprintf(why, why_size, "%s (meta page %" PRIu32 " has no %s)",
                 index == 0 ? "is not an LMDB file" : "is damaged", index,
                 (head.flags & page_flag_meta) == 0 ? "meta page mark" : "LMDB magic");
        return BERTH_J_CORRUPT;
    }
    if (meta->version != data_version) {
        snprintf(why, why_size, "is damaged or of another LMDB format: meta page %" PRIu32
                 " says data version %" PRIu32 ", LMDB 0.9 writes %d", index, meta->version,
                 data_version);
        return BERTH_J_CORRUPT;
    }
    uint32_t psize = meta->dbs[0].pad;
    if (!page_size_ok(psize)) {
        snprintf(why, why_size, "is damaged: meta page %" PRIu32 " says page size %" PRIu32
                 " (not a power of two from %d to %d)", index, psize, page_size_min, page_size_max);
        return BERTH_J_CORRUPT;
    }
    return BERTH_J_OK;
}

/* A root page number of the meta LMDB opens: an empty tree, or a page
 * after the meta pages up to its last page. */
static bool root_ok(size_t root, size_t last_pg) {
    return root == PAGE_NONE || (root >= meta_pages && root <= last_pg);
}

static berth_jerr check_once(int fd, char *why, size_t why_size) {
    disk_meta metas[meta_pages];
    bool empty = false;
    berth_jerr e = meta_read(fd, 0, 0, &metas[0], why, why_size, &empty);
    if (e != BERTH_J_OK || empty) {
        return e;
    }
    uint32_t psize = metas[0].dbs[0].pad;
    e = meta_read(fd, 1, psize, &metas[1], why, why_size, &empty);
    if (e != BERTH_J_OK) {
        return e;
    }
    assert(!empty);
    if (metas[1].dbs[0].pad != psize) {
        snprintf(why, why_size, "is damaged: meta page 1 says page size %" PRIu32
                 " where meta page 0 says %" PRIu32, metas[1].dbs[0].pad, psize);
        return BERTH_J_CORRUPT;
    }
    /* mdb_env_pick_meta: the higher txnid, meta page 0 on a tie. The
     * length is taken after the meta pages were read: a writer only grows
     * the file, and writes a page before any meta page names it. */
    uint32_t newer = metas[1].txnid > metas[0].txnid ? 1 : 0;
    const disk_meta *m = &metas[newer];
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(why, why_size, "cannot be examined: %s", strerror(errno));
        return BERTH_J_IO;
    }
    for (uint32_t db = 0; db < 2; db++) {
        if (!root_ok(m->dbs[db].root, m->last_pg)) {
            snprintf(why, why_size, "is damaged: meta page %" PRIu32 " (the newer) names page %zu"
                     " as the root of its %s tree, outside pages %d..%zu", newer,
                     m->dbs[db].root, db == 0 ? "free-page" : "main", meta_pages, m->last_pg);
            return BERTH_J_CORRUPT;
        }
    }
    uint64_t pages = (uint64_t)st.st_size / psize;
    if (m->last_pg < meta_pages - 1 || (uint64_t)m->last_pg >= pages) {
        /* The same sentence file_size_check gives once LMDB has it open. */
        if (m->last_pg >= meta_pages - 1 && (uint64_t)m->last_pg < UINT64_MAX / psize) {
            snprintf(why, why_size, "is truncated: it has %lld bytes, its pages need %" PRIu64
                     " (meta page %" PRIu32 ")", (long long)st.st_size,
                     ((uint64_t)m->last_pg + 1) * psize, newer);
        } else {
            snprintf(why, why_size, "is damaged: meta page %" PRIu32 " (the newer) says its last"
                     " page is %zu, and the file holds %" PRIu64 " pages", newer, m->last_pg, pages);
        }
        return BERTH_J_CORRUPT;
    }
    return BERTH_J_OK;
}

berth_jerr lmdb_meta_check(const char *file, const char *what, char *err, size_t err_size) {
    assert(file != NULL && what != NULL);
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            return BERTH_J_OK;   /* LMDB creates it (or the caller says it is missing) */
        }
        berth_jsay(err, err_size, "cannot open %s %s: %s", what, file, strerror(errno));
        return BERTH_J_IO;
    }
    char why[why_len_max] = "";
    berth_jerr e = BERTH_J_OK;
    for (uint32_t attempt = 0; attempt < read_attempts_max; attempt++) {
        if (attempt > 0) {
            struct timespec pause = { 0, read_retry_wait_ms * 1000000L };
            nanosleep(&pause, NULL);
        }
        e = check_once(fd, why, sizeof why);
        if (e != BERTH_J_CORRUPT) {
            break;
        }
    }
    int rc = close(fd);
    assert(rc == 0);
    if (e != BERTH_J_OK) {
        berth_jsay(err, err_size, "%s %s %s", what, file, why);
    }
    return e;
}
