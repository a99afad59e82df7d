/* disk_shim.c — an LD_PRELOAD library that keeps, beside the files of a
 * journal (LMDB's data file, and berthd's commit log when asked), the image
 * an OS crash would leave of each: only what a sync made durable. Used by
 * oscrash.sh, oscrash_fault.sh, oscrash_log.sh, order.sh and park.sh.
 *
 * Why: kill -9 only kills the process; the page cache keeps every write, so
 * a server that answered before its data was synced passes every kill -9
 * test. This shim models the disk instead. Each tracked file has its own
 * image and its own pending list: writes to it through a plain descriptor
 * are held in its list; fdatasync or fsync of a descriptor of that file
 * applies that file's pending writes, in order, to its image (the other
 * file's stay pending: a sync flushes one file, not the disk); a write
 * through an O_DSYNC (or O_SYNC) descriptor reaches the image at once. The
 * image is therefore the most pessimistic OS crash: none of the unsynced
 * writes made it. (LMDB's own ordering keeps any subset consistent, and a
 * commit-log frame carries its own hash; these tests are about what berthd
 * acknowledged, so the pessimistic case is the one that loses the most.)
 * After killing the process, the test copies each image over its file and
 * restarts.
 *
 * Environment: BERTH_SHIM_DATA (the data file's path, exactly as the
 * process opens it) and BERTH_SHIM_DISK (its image's path); optionally
 * BERTH_SHIM_LOG (the commit log's first file's path, exactly as the
 * process opens it: "$DATA/commit.log") and BERTH_SHIM_LOG_DISK (its
 * image's path), and BERTH_SHIM_LOG2 and BERTH_SHIM_LOG2_DISK for its second
 * file ("$DATA/commit.log.2"). Without a path and its image's path, that
 * file is not tracked;
 * with neither, every call passes straight through. An image absent at the
 * first open of its file is made from the file's current bytes (a restart
 * of a crashed run begins from its images, copied over the files). A file
 * may be made under a temporary name, its path plus a suffix starting with
 * a dot, then renamed onto its path (commit_log.c makes DIR/commit.log.new,
 * zero-fills it with pwrite, fsyncs it, renames it): opened with O_CREAT
 * under that name it is tracked from its first byte, its image starts
 * empty (O_TRUNC empties an image that exists), the zero-fill like any
 * write reaches the image only through a sync, and the rename keeps the
 * image. A rename onto a tracked path from any other name, or away from
 * it, aborts: this model cannot follow it. Sizes follow the writes only:
 * ftruncate and fallocate are not modelled (neither file uses them).
 * BERTH_SHIM_SYNCS_OK=N (optional): the first N syncs of the tracked files
 * (all counted together) succeed, every later one fails with EIO and
 * reaches nothing, and so does a write through an O_DSYNC descriptor, as a
 * disk that died would.
 * One failed sync of the data file (optional; the commit log never fails
 * this way): BERTH_SHIM_FAIL_AFTER=N arms it; the first data-file sync
 * after N data-file syncs whose pending writes hold what BERTH_SHIM_FAIL_ON
 * names fails with BERTH_SHIM_FAIL_ERRNO (default ENOSPC) and drops the
 * data file's pending writes, as Linux marks pages clean after a failed
 * writeback; later syncs succeed. FAIL_ON=meta: a meta page (LMDB's pages 0
 * and 1), i.e. the sync that makes a commit durable (berthd's sync after
 * each commit); data: a data page, i.e. a commit's own data sync; unset:
 * both at once (a commit's data sync while the commit before it is not yet
 * synced). BERTH_SHIM_CRASH_AFTER_FAIL=K (optional, with it): the Kth
 * data-file sync after the failed one never returns: the shim waits
 * SHIM_CRASH_PAUSE_US (so replies already released reach their clients) and
 * kills the process, applying nothing: an OS crash. The two model a disk
 * that fails once, and the staged crash shows what a berthd that trusted a
 * later sync acknowledged without it being on disk.
 * Steered at run time (optional): BERTH_SHIM_CTL=DIR, for syncs of both
 * files. Each sync of a tracked file appends a line to DIR/syncs as it
 * starts, naming the file ("sync data" or "sync log"; so a test can tell
 * which sync is under way, and count them by lines), then sleeps the
 * milliseconds in DIR/delay_ms.data or DIR/delay_ms.log for this sync's
 * file if that exists, else in DIR/delay_ms if that exists (a slow disk;
 * a slow data file alone holds checkpoints back, so frames wait), then, if
 * DIR/fail.data or DIR/fail.log exists for this sync's file, or else
 * DIR/fail for a sync of either, removes it and fails with the errno it
 * holds (EIO when empty), dropping that file's pending writes as above. So
 * a test fails exactly the sync it chooses, of the file it chooses, at the
 * moment it chooses, without counting syncs in advance.
 * Intercepts what liblmdb 0.9 calls on its data file and commit_log.c on
 * the commit log: open, close, rename, pwrite, writev, fdatasync, fsync
 * (neither calls pwritev). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define SHIM_FDS_MAX 16                     /* descriptors of one tracked file open at once */
#define SHIM_PENDING_BYTES_MAX (1ull << 30) /* unsynced bytes held per file; over it the shim aborts */
#define SHIM_COPY_CHUNK 65536
#define SHIM_PATH_LEN_MAX 4096
#define SHIM_LINE_LEN_MAX 256
#define SHIM_META_BYTES 8192                /* LMDB's two meta pages, 4 KiB each */
#define SHIM_CRASH_PAUSE_US 500000          /* replies in flight leave before the crash */

typedef struct pending {
    struct pending *next;
    off_t offset;
    size_t len;
    unsigned char bytes[];
} pending;

/* One tracked file: its open descriptors, its image, its unsynced writes. */
typedef struct shim_file {
    const char *name;                   /* "data" or "log": messages, DIR/syncs */
    const char *path_env;               /* the file's path, exactly as opened */
    const char *image_env;              /* its image's path */
    int fd[SHIM_FDS_MAX];
    bool dsync[SHIM_FDS_MAX];
    int count;
    int image_fd;
    pending *head;
    pending *tail;
    uint64_t pending_bytes;
} shim_file;

/* The commit log is two files (commit_log.h); both are "log" in messages,
 * DIR/syncs and DIR/fail.log. */
enum { SHIM_DATA = 0, SHIM_LOG = 1, SHIM_LOG2 = 2, SHIM_FILES = 3 };

typedef int (*open_fn)(const char *, int, ...);
typedef int (*close_fn)(int);
typedef int (*rename_fn)(const char *, const char *);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);
typedef int (*sync_fn)(int);

static pthread_mutex_t shim_mutex = PTHREAD_MUTEX_INITIALIZER;
static open_fn real_open;
static close_fn real_close;
static rename_fn real_rename;
static pwrite_fn real_pwrite;
static writev_fn real_writev;
static sync_fn real_fdatasync;
static sync_fn real_fsync;
static shim_file files[SHIM_FILES] = {
    { .name = "data", .path_env = "BERTH_SHIM_DATA", .image_env = "BERTH_SHIM_DISK", .image_fd = -1 },
    { .name = "log", .path_env = "BERTH_SHIM_LOG", .image_env = "BERTH_SHIM_LOG_DISK", .image_fd = -1 },
    { .name = "log", .path_env = "BERTH_SHIM_LOG2", .image_env = "BERTH_SHIM_LOG2_DISK",
      .image_fd = -1 },
};
static uint64_t syncs_done;                 /* of all files: BERTH_SHIM_SYNCS_OK */
static uint64_t data_syncs_done;            /* of the data file: BERTH_SHIM_FAIL_AFTER */
static bool fail_done;                      /* the one failed sync happened */
static uint64_t syncs_after_fail;           /* syncs of the data file since then */

static void shim_die(const char *what) {
    char line[SHIM_LINE_LEN_MAX];
    int n = snprintf(line, sizeof line, "disk_shim: %s (errno %d)\n", what, errno);
    if (n > 0) {
        ssize_t w = write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
        (void)w;
    }
    abort();
}

static void shim_lock(void) {
    if (pthread_mutex_lock(&shim_mutex) != 0) {
        shim_die("cannot lock");
    }
}

static void shim_unlock(void) {
    if (pthread_mutex_unlock(&shim_mutex) != 0) {
        shim_die("cannot unlock");
    }
}

static void *real(const char *name) {
    void *fn = dlsym(RTLD_NEXT, name);
    if (fn == NULL) {
        shim_die("dlsym failed");
    }
    return fn;
}

static void shim_init(void) {
    if (real_open != NULL) {
        return;
    }
    real_close = (close_fn)real("close");
    real_rename = (rename_fn)real("rename");
    real_pwrite = (pwrite_fn)real("pwrite");
    real_writev = (writev_fn)real("writev");
    real_fdatasync = (sync_fn)real("fdatasync");
    real_fsync = (sync_fn)real("fsync");
    real_open = (open_fn)real("open");
}

/* The tracked file fd is a descriptor of (and *idx its slot), or NULL. */
static shim_file *tracked(int fd, int *idx) {
    for (int f = 0; f < SHIM_FILES; f++) {
        for (int i = 0; i < files[f].count; i++) {
            if (files[f].fd[i] == fd) {
                if (idx != NULL) {
                    *idx = i;
                }
                return &files[f];
            }
        }
    }
    return NULL;
}

static void image_write(shim_file *file, const void *bytes, size_t len, off_t offset) {
    const unsigned char *p = bytes;
    while (len > 0) {
        ssize_t w = real_pwrite(file->image_fd, p, len, offset);
        if (w <= 0) {
            shim_die(file != &files[SHIM_DATA] ? "cannot write the commit log's disk image"
                                              : "cannot write the data file's disk image");
        }
        p += w;
        len -= (size_t)w;
        offset += w;
    }
}

/* The image starts as the file is now (a restart of a crashed run begins
 * from its image, copied over the file); a file just created is empty. */
static void image_open(shim_file *file, const char *path, const char *image_path) {
    file->image_fd = real_open(image_path, O_RDWR);
    if (file->image_fd >= 0) {
        return;
    }
    file->image_fd = real_open(image_path, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (file->image_fd < 0) {
        shim_die("cannot create a disk image");
    }
    int src = real_open(path, O_RDONLY);
    if (src < 0) {
        return;     /* a new file: the disk holds nothing of it yet */
    }
    static unsigned char chunk[SHIM_COPY_CHUNK];
    off_t at = 0;
    for (;;) {
        ssize_t n = pread(src, chunk, sizeof chunk, at);
        if (n < 0) {
            shim_die("cannot read a tracked file");
        }
        if (n == 0) {
            break;
        }
        image_write(file, chunk, (size_t)n, at);
        at += n;
    }
    if (real_close(src) != 0) {
        shim_die("cannot close a tracked file");
    }
}

static void pending_add(shim_file *file, const void *bytes, size_t len, off_t offset) {
    file->pending_bytes += len;
    if (file->pending_bytes > SHIM_PENDING_BYTES_MAX) {
        shim_die("too many unsynced bytes held");
    }
    pending *p = malloc(sizeof *p + len);
    if (p == NULL) {
        shim_die("out of memory");
    }
    p->next = NULL;
    p->offset = offset;
    p->len = len;
    memcpy(p->bytes, bytes, len);
    if (file->tail == NULL) {
        file->head = p;
    } else {
        file->tail->next = p;
    }
    file->tail = p;
}

/* A successful sync of the file: everything written to it before is on disk. */
static void pending_apply(shim_file *file) {
    pending *p = file->head;
    while (p != NULL) {
        pending *next = p->next;
        image_write(file, p->bytes, p->len, p->offset);
        free(p);
        p = next;
    }
    file->head = file->tail = NULL;
    file->pending_bytes = 0;
}

/* A failed writeback: the file's pending writes never reach its image. */
static void pending_drop(shim_file *file) {
    pending *p = file->head;
    while (p != NULL) {
        pending *next = p->next;
        free(p);
        p = next;
    }
    file->head = file->tail = NULL;
    file->pending_bytes = 0;
}

/* A write that reached the file: to the image now (O_DSYNC) or later. */
static void recorded(shim_file *file, int idx, const void *bytes, size_t len, off_t offset) {
    if (file->dsync[idx]) {
        image_write(file, bytes, len, offset);
    } else {
        pending_add(file, bytes, len, offset);
    }
}

/* The same for a vector written from offset at, of which w bytes went. */
static void recorded_iov(shim_file *file, int idx, const struct iovec *iov, int count,
                         ssize_t w, off_t at) {
    size_t left = (size_t)w;
    for (int i = 0; i < count && left > 0; i++) {
        size_t part = iov[i].iov_len < left ? iov[i].iov_len : left;
        recorded(file, idx, iov[i].iov_base, part, at);
        at += (off_t)part;
        left -= part;
    }
}

/* BERTH_SHIM_SYNCS_OK: the syncs of the tracked files that may still succeed. */
static bool sync_allowed(void) {
    const char *limit = getenv("BERTH_SHIM_SYNCS_OK");
    return limit == NULL || syncs_done < strtoull(limit, NULL, 10);
}

/* How path names a tracked file's path want: 0 not, 1 exactly, 2 as a
 * name it is made under before a rename onto want (want plus a suffix
 * starting with a dot: commit_log.c makes DIR/commit.log.new). */
static int path_names(const char *path, const char *want) {
    size_t n = strlen(want);
    if (strncmp(path, want, n) != 0) {
        return 0;
    }
    if (path[n] == '\0') {
        return 1;
    }
    return path[n] == '.' && strchr(path + n, '/') == NULL ? 2 : 0;
}

/* The tracked file path names (*kind as path_names), or NULL. The longest
 * tracked path that names it wins: DIR/commit.log.2 is the second log file
 * itself, not a name the first one is made under. */
static shim_file *file_named(const char *path, int *kind) {
    shim_file *best = NULL;
    size_t best_len = 0;
    for (int f = 0; f < SHIM_FILES; f++) {
        const char *want = getenv(files[f].path_env);
        if (want == NULL || getenv(files[f].image_env) == NULL) {
            continue;
        }
        int k = path_names(path, want);
        if (k != 0 && (best == NULL || strlen(want) > best_len)) {
            best = &files[f];
            best_len = strlen(want);
            *kind = k;
        }
    }
    return best;
}

int open(const char *path, int flags, ...) {
    mode_t mode = 0;
    if ((flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    shim_lock();
    shim_init();
    int fd = real_open(path, flags, mode);
    int kind = 0;
    shim_file *file = fd >= 0 ? file_named(path, &kind) : NULL;
    if (file != NULL && kind == 2 && (flags & O_CREAT) == 0) {
        file = NULL;    /* only a file being made under that name is the tracked one */
    }
    if (file != NULL) {
        if (file->count == SHIM_FDS_MAX) {
            shim_die("too many descriptors of a tracked file");
        }
        if (file->image_fd < 0) {
            image_open(file, path, getenv(file->image_env));
        } else if ((flags & O_TRUNC) != 0) {
            /* A file made afresh: what the disk held of the old one is
             * gone (truncation is not otherwise modelled). */
            if (ftruncate(file->image_fd, 0) != 0) {
                shim_die("cannot empty a disk image");
            }
            pending_drop(file);
        }
        file->fd[file->count] = fd;
        file->dsync[file->count] = (flags & (O_DSYNC | O_SYNC)) != 0;
        file->count++;
    }
    shim_unlock();
    return fd;
}

/* A file made under a temporary name and renamed onto a tracked path keeps
 * its image (the same file, now under its path). Any other rename that
 * touches a tracked path is beyond this model. */
int rename(const char *from, const char *to) {
    shim_lock();
    shim_init();
    int from_kind = 0;
    int to_kind = 0;
    shim_file *from_file = file_named(from, &from_kind);
    shim_file *to_file = file_named(to, &to_kind);
    if (to_file != NULL && to_kind == 1 && (from_file != to_file || from_kind != 2)) {
        shim_die("a file renamed onto a tracked path was not made under a tracked name");
    }
    if (from_file != NULL && from_kind == 1) {
        shim_die("a tracked file renamed away from its path");
    }
    int rc = real_rename(from, to);
    shim_unlock();
    return rc;
}

int close(int fd) {
    shim_lock();
    shim_init();
    int idx = -1;
    shim_file *file = tracked(fd, &idx);
    if (file != NULL) {
        file->count--;
        file->fd[idx] = file->fd[file->count];
        file->dsync[idx] = file->dsync[file->count];
    }
    int rc = real_close(fd);
    shim_unlock();
    return rc;
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t offset) {
    shim_lock();
    shim_init();
    int idx = -1;
    shim_file *file = tracked(fd, &idx);
    if (file != NULL && file->dsync[idx] && !sync_allowed()) {
        shim_unlock();
        errno = EIO;    /* a synchronous write to a dead disk */
        return -1;
    }
    ssize_t w = real_pwrite(fd, buf, len, offset);
    if (file != NULL && w > 0) {
        recorded(file, idx, buf, (size_t)w, offset);
    }
    shim_unlock();
    return w;
}

ssize_t writev(int fd, const struct iovec *iov, int count) {
    shim_lock();
    shim_init();
    int idx = -1;
    shim_file *file = tracked(fd, &idx);
    if (file != NULL && file->dsync[idx] && !sync_allowed()) {
        shim_unlock();
        errno = EIO;
        return -1;
    }
    off_t at = file != NULL ? lseek(fd, 0, SEEK_CUR) : 0;
    if (at < 0) {
        shim_die("cannot tell where writev writes");
    }
    ssize_t w = real_writev(fd, iov, count);
    if (file != NULL && w > 0) {
        recorded_iov(file, idx, iov, count, w, at);
    }
    shim_unlock();
    return w;
}

/* Whether the data file's pending writes hold what BERTH_SHIM_FAIL_ON asks
 * for: a meta page (of the commit before a failing sync), data pages (its
 * own), or both. */
static bool pending_matches(const shim_file *file) {
    bool meta = false;
    bool data = false;
    for (const pending *p = file->head; p != NULL; p = p->next) {
        if (p->offset < SHIM_META_BYTES) {
            meta = true;
        } else {
            data = true;
        }
    }
    const char *on = getenv("BERTH_SHIM_FAIL_ON");
    if (on != NULL && strcmp(on, "meta") == 0) {
        return meta;
    }
    if (on != NULL && strcmp(on, "data") == 0) {
        return data;
    }
    return meta && data;
}

static void shim_say(const char *line) {
    ssize_t w = write(2, line, strlen(line));
    (void)w;
}

/* BERTH_SHIM_FAIL_AFTER (data file only): the errno this sync fails with,
 * or 0. */
static int sync_fault(shim_file *file) {
    const char *after = getenv("BERTH_SHIM_FAIL_AFTER");
    if (file != &files[SHIM_DATA] || after == NULL || fail_done ||
        data_syncs_done < strtoull(after, NULL, 10) || !pending_matches(file)) {
        return 0;
    }
    const char *e = getenv("BERTH_SHIM_FAIL_ERRNO");
    int err = e != NULL ? atoi(e) : ENOSPC;
    fail_done = true;
    pending_drop(file);
    syncs_done++;
    data_syncs_done++;
    shim_say(err == EIO ? "disk_shim: a sync fails with EIO, its writes are dropped\n"
                        : "disk_shim: a sync fails (errno set), its writes are dropped\n");
    return err > 0 ? err : ENOSPC;
}

/* BERTH_SHIM_CRASH_AFTER_FAIL (data file only): the OS goes down during
 * this sync. */
static void sync_crash_check(shim_file *file) {
    const char *k = getenv("BERTH_SHIM_CRASH_AFTER_FAIL");
    if (file != &files[SHIM_DATA] || k == NULL || !fail_done) {
        return;
    }
    syncs_after_fail++;
    if (syncs_after_fail < strtoull(k, NULL, 10)) {
        return;
    }
    shim_say("disk_shim: the OS crashes during this sync\n");
    usleep(SHIM_CRASH_PAUSE_US);   /* the lock stays held: no other write reaches an image */
    if (raise(SIGKILL) != 0) {
        shim_die("cannot kill the process");
    }
}

/* A small number in DIR/name: absent when the file is absent, empty when
 * it holds nothing. */
static long ctl_read(const char *dir, const char *name, long absent, long empty) {
    char path[SHIM_PATH_LEN_MAX];
    int n = snprintf(path, sizeof path, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof path) {
        shim_die("BERTH_SHIM_CTL path too long");
    }
    int fd = real_open(path, O_RDONLY);
    if (fd < 0) {
        return absent;
    }
    char text[32];
    ssize_t got = read(fd, text, sizeof text - 1);
    if (real_close(fd) != 0) {
        shim_die("cannot close a control file");
    }
    if (got <= 0) {
        return empty;
    }
    text[got] = '\0';
    return strtol(text, NULL, 10);
}

/* BERTH_SHIM_CTL: note the sync of file ("sync data", "sync log"), sleep
 * (DIR/delay_ms.NAME, else DIR/delay_ms), and say whether it must fail (its
 * errno: DIR/fail.NAME, else DIR/fail) or not (0). Called without the
 * shim's lock, so a slow sync holds up nothing but itself. */
static int ctl_sync(const shim_file *file) {
    const char *dir = getenv("BERTH_SHIM_CTL");
    if (dir == NULL) {
        return 0;
    }
    char path[SHIM_PATH_LEN_MAX];
    int n = snprintf(path, sizeof path, "%s/syncs", dir);
    if (n < 0 || (size_t)n >= sizeof path) {
        shim_die("BERTH_SHIM_CTL path too long");
    }
    char line[SHIM_LINE_LEN_MAX];
    int len = snprintf(line, sizeof line, "sync %s\n", file->name);
    if (len < 0 || (size_t)len >= sizeof line) {
        shim_die("cannot format a sync's line");
    }
    int fd = real_open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd < 0 || write(fd, line, (size_t)len) != len || real_close(fd) != 0) {
        shim_die("cannot note a sync in BERTH_SHIM_CTL");
    }
    char delay_name[SHIM_LINE_LEN_MAX];
    n = snprintf(delay_name, sizeof delay_name, "delay_ms.%s", file->name);
    if (n < 0 || (size_t)n >= sizeof delay_name) {
        shim_die("cannot format a delay file's name");
    }
    long delay_ms = ctl_read(dir, delay_name, -1, 0);
    if (delay_ms < 0) {
        delay_ms = ctl_read(dir, "delay_ms", 0, 0);
    }
    if (delay_ms > 0) {
        usleep((useconds_t)delay_ms * 1000u);
    }
    char fail_name[SHIM_LINE_LEN_MAX];
    n = snprintf(fail_name, sizeof fail_name, "fail.%s", file->name);
    if (n < 0 || (size_t)n >= sizeof fail_name) {
        shim_die("cannot format a fail file's name");
    }
    long err = ctl_read(dir, fail_name, 0, EIO);
    if (err == 0) {
        snprintf(fail_name, sizeof fail_name, "fail");
        err = ctl_read(dir, fail_name, 0, EIO);
    }
    if (err == 0) {
        return 0;
    }
    n = snprintf(path, sizeof path, "%s/%s", dir, fail_name);
    if (n < 0 || (size_t)n >= sizeof path || unlink(path) != 0) {
        shim_die("cannot remove BERTH_SHIM_CTL's fail file");
    }
    return err > 0 ? (int)err : EIO;
}

static int synced(int fd, sync_fn *fn, const char *name) {
    shim_lock();
    shim_init();
    shim_file *file = tracked(fd, NULL);
    shim_unlock();
    int ctl_fault = file != NULL ? ctl_sync(file) : 0;
    shim_lock();
    if (*fn == NULL) {
        *fn = (sync_fn)real(name);
    }
    file = tracked(fd, NULL);   /* the descriptor may have closed meanwhile */
    if (ctl_fault != 0) {
        if (file != NULL) {
            pending_drop(file);
        }
        shim_unlock();
        shim_say(file != NULL && file != &files[SHIM_DATA]
                     ? "disk_shim: a sync of the commit log fails as BERTH_SHIM_CTL asked, its "
                       "writes are dropped\n"
                     : "disk_shim: a sync fails as BERTH_SHIM_CTL asked, its writes are "
                       "dropped\n");
        errno = ctl_fault;
        return -1;
    }
    if (file != NULL && !sync_allowed()) {
        shim_unlock();
        errno = EIO;
        return -1;
    }
    int fault = file != NULL ? sync_fault(file) : 0;
    if (fault != 0) {
        shim_unlock();
        errno = fault;
        return -1;
    }
    if (file != NULL) {
        sync_crash_check(file);
    }
    int rc = (*fn)(fd);
    if (rc == 0 && file != NULL) {
        syncs_done++;
        if (file == &files[SHIM_DATA]) {
            data_syncs_done++;
        }
        pending_apply(file);
    }
    shim_unlock();
    return rc;
}

int fdatasync(int fd) {
    return synced(fd, &real_fdatasync, "fdatasync");
}

int fsync(int fd) {
    return synced(fd, &real_fsync, "fsync");
}
