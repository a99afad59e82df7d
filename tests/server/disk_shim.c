/* disk_shim.c — an LD_PRELOAD library that keeps, beside one LMDB data
 * file, the image an OS crash would leave of it: only what a sync made
 * durable. Used by oscrash.sh.
 *
 * Why: kill -9 only kills the process; the page cache keeps every write, so
 * a server that answered before its data was synced passes every kill -9
 * test. This shim models the disk instead. Writes to the data file through a
 * plain descriptor are held in a pending list; fdatasync or fsync of the
 * file applies them, in order, to the image file; a write through an
 * O_DSYNC (or O_SYNC) descriptor reaches the image at once. The image is
 * therefore the most pessimistic OS crash: none of the unsynced writes made
 * it. (LMDB's own ordering keeps any subset consistent; this test is about
 * what berthd acknowledged, so the pessimistic case is the one that loses
 * the most.) After killing the process, the test copies the image over the
 * data file and restarts.
 *
 * Environment: BERTH_SHIM_DATA (the data file's path, exactly as the
 * process opens it) and BERTH_SHIM_DISK (the image's path; made from the
 * data file's current bytes at the first open when absent). Without both,
 * every call passes straight through. BERTH_SHIM_SYNCS_OK=N (optional): the
 * first N syncs of the data file succeed, every later one fails with EIO
 * and reaches nothing, as a disk that died would.
 * One failed sync (optional): BERTH_SHIM_FAIL_AFTER=N arms it; the first
 * sync after N syncs whose pending writes hold what BERTH_SHIM_FAIL_ON names
 * fails with BERTH_SHIM_FAIL_ERRNO (default ENOSPC) and drops every pending
 * write, as Linux marks pages clean after a failed writeback; later syncs
 * succeed. FAIL_ON=meta: a meta page (LMDB's pages 0 and 1), i.e. the sync
 * that makes a commit durable (berthd's sync after each commit); data: a
 * data page, i.e. a commit's own data sync; unset: both at once (a commit's
 * data sync while the commit before it is not yet synced). BERTH_SHIM_CRASH_AFTER_FAIL=K
 * (optional, with it): the Kth sync after the failed one never returns: the
 * shim waits SHIM_CRASH_PAUSE_US (so replies already released reach their
 * clients) and kills the process, applying nothing: an OS crash. The two
 * model a disk that fails once, and the staged crash shows what a berthd
 * that trusted a later sync acknowledged without it being on disk.
 * Steered at run time (optional): BERTH_SHIM_CTL=DIR. Each sync of the data
 * file appends a line to DIR/syncs as it starts (so a test can tell which
 * sync is under way), then sleeps the milliseconds in DIR/delay_ms if that
 * file exists (a slow disk), then, if DIR/fail exists, removes it and fails
 * with the errno it holds (EIO when empty), dropping the pending writes as
 * above. So a test fails exactly the sync it chooses, at the moment it
 * chooses, without counting syncs in advance.
 * Intercepts what liblmdb 0.9 calls on its data file: open, close, pwrite,
 * writev, fdatasync, fsync. */
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

#define SHIM_FDS_MAX 16                     /* descriptors of the data file open at once */
#define SHIM_PENDING_BYTES_MAX (1ull << 30) /* unsynced bytes held; over it the shim aborts */
#define SHIM_COPY_CHUNK 65536
#define SHIM_PATH_LEN_MAX 4096
#define SHIM_META_BYTES 8192                /* LMDB's two meta pages, 4 KiB each */
#define SHIM_CRASH_PAUSE_US 500000          /* replies in flight leave before the crash */

typedef struct pending {
    struct pending *next;
    off_t offset;
    size_t len;
    unsigned char bytes[];
} pending;

typedef int (*open_fn)(const char *, int, ...);
typedef int (*close_fn)(int);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);
typedef int (*sync_fn)(int);

static pthread_mutex_t shim_mutex = PTHREAD_MUTEX_INITIALIZER;
static open_fn real_open;
static close_fn real_close;
static pwrite_fn real_pwrite;
static writev_fn real_writev;
static sync_fn real_fdatasync;
static sync_fn real_fsync;
static int tracked_fd[SHIM_FDS_MAX];
static bool tracked_dsync[SHIM_FDS_MAX];
static int tracked_count;
static int image_fd = -1;
static pending *pending_head;
static pending *pending_tail;
static uint64_t pending_bytes;
static uint64_t syncs_done;
static bool fail_done;                      /* the one failed sync happened */
static uint64_t syncs_after_fail;           /* syncs of the data file since then */

static void shim_die(const char *what) {
    char line[256];
    int n = snprintf(line, sizeof line, "disk_shim: %s (errno %d)\n", what, errno);
    if (n > 0) {
        ssize_t w = write(2, line, (size_t)n);
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
    real_pwrite = (pwrite_fn)real("pwrite");
    real_writev = (writev_fn)real("writev");
    real_fdatasync = (sync_fn)real("fdatasync");
    real_fsync = (sync_fn)real("fsync");
    real_open = (open_fn)real("open");
}

static int tracked_index(int fd) {
    for (int i = 0; i < tracked_count; i++) {
        if (tracked_fd[i] == fd) {
            return i;
        }
    }
    return -1;
}

static void image_write(const void *bytes, size_t len, off_t offset) {
    const unsigned char *p = bytes;
    while (len > 0) {
        ssize_t w = real_pwrite(image_fd, p, len, offset);
        if (w <= 0) {
            shim_die("cannot write the disk image");
        }
        p += w;
        len -= (size_t)w;
        offset += w;
    }
}

/* The image starts as the data file is now (a restart of a crashed run
 * begins from its image, copied over the data file). */
static void image_open(const char *data_path, const char *image_path) {
    image_fd = real_open(image_path, O_RDWR);
    if (image_fd >= 0) {
        return;
    }
    image_fd = real_open(image_path, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (image_fd < 0) {
        shim_die("cannot create the disk image");
    }
    int src = real_open(data_path, O_RDONLY);
    if (src < 0) {
        return;     /* a new data file: the disk holds nothing yet */
    }
    static unsigned char chunk[SHIM_COPY_CHUNK];
    off_t at = 0;
    for (;;) {
        ssize_t n = pread(src, chunk, sizeof chunk, at);
        if (n < 0) {
            shim_die("cannot read the data file");
        }
        if (n == 0) {
            break;
        }
        image_write(chunk, (size_t)n, at);
        at += n;
    }
    if (real_close(src) != 0) {
        shim_die("cannot close the data file");
    }
}

static void pending_add(const void *bytes, size_t len, off_t offset) {
    pending_bytes += len;
    if (pending_bytes > SHIM_PENDING_BYTES_MAX) {
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
    if (pending_tail == NULL) {
        pending_head = p;
    } else {
        pending_tail->next = p;
    }
    pending_tail = p;
}

/* A successful sync of the file: everything written before it is on disk. */
static void pending_apply(void) {
    pending *p = pending_head;
    while (p != NULL) {
        pending *next = p->next;
        image_write(p->bytes, p->len, p->offset);
        free(p);
        p = next;
    }
    pending_head = pending_tail = NULL;
    pending_bytes = 0;
}

/* A write that reached the file: to the image now (O_DSYNC) or later. */
static void recorded(int idx, const void *bytes, size_t len, off_t offset) {
    if (tracked_dsync[idx]) {
        image_write(bytes, len, offset);
    } else {
        pending_add(bytes, len, offset);
    }
}

/* BERTH_SHIM_SYNCS_OK: the syncs of the data file that may still succeed. */
static bool sync_allowed(void) {
    const char *limit = getenv("BERTH_SHIM_SYNCS_OK");
    return limit == NULL || syncs_done < strtoull(limit, NULL, 10);
}

int open(const char *path, int flags, ...) {
    mode_t mode = 0;
    if (flags & O_CREAT) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    shim_lock();
    shim_init();
    int fd = real_open(path, flags, mode);
    const char *data = getenv("BERTH_SHIM_DATA");
    const char *image = getenv("BERTH_SHIM_DISK");
    if (fd >= 0 && data != NULL && image != NULL && strcmp(path, data) == 0) {
        if (tracked_count == SHIM_FDS_MAX) {
            shim_die("too many descriptors of the data file");
        }
        if (image_fd < 0) {
            image_open(data, image);
        }
        tracked_fd[tracked_count] = fd;
        tracked_dsync[tracked_count] = (flags & (O_DSYNC | O_SYNC)) != 0;
        tracked_count++;
    }
    shim_unlock();
    return fd;
}

int close(int fd) {
    shim_lock();
    shim_init();
    int idx = tracked_index(fd);
    if (idx >= 0) {
        tracked_count--;
        tracked_fd[idx] = tracked_fd[tracked_count];
        tracked_dsync[idx] = tracked_dsync[tracked_count];
    }
    int rc = real_close(fd);
    shim_unlock();
    return rc;
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t offset) {
    shim_lock();
    shim_init();
    int idx = tracked_index(fd);
    if (idx >= 0 && tracked_dsync[idx] && !sync_allowed()) {
        shim_unlock();
        errno = EIO;    /* a synchronous write to a dead disk */
        return -1;
    }
    ssize_t w = real_pwrite(fd, buf, len, offset);
    if (idx >= 0 && w > 0) {
        recorded(idx, buf, (size_t)w, offset);
    }
    shim_unlock();
    return w;
}

ssize_t writev(int fd, const struct iovec *iov, int count) {
    shim_lock();
    shim_init();
    int idx = tracked_index(fd);
    off_t at = idx >= 0 ? lseek(fd, 0, SEEK_CUR) : 0;
    if (at < 0) {
        shim_die("cannot tell where writev writes");
    }
    ssize_t w = real_writev(fd, iov, count);
    if (idx >= 0 && w > 0) {
        size_t left = (size_t)w;
        for (int i = 0; i < count && left > 0; i++) {
            size_t part = iov[i].iov_len < left ? iov[i].iov_len : left;
            recorded(idx, iov[i].iov_base, part, at);
            at += (off_t)part;
            left -= part;
        }
    }
    shim_unlock();
    return w;
}

/* The pending writes a failing commit sync would hold: a meta page of the
 * commit before it, and its own data pages. */
/* Whether the pending writes hold what BERTH_SHIM_FAIL_ON asks for. */
static bool pending_matches(void) {
    bool meta = false;
    bool data = false;
    for (const pending *p = pending_head; p != NULL; p = p->next) {
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

/* A failed writeback: the pending writes never reach the image. */
static void pending_drop(void) {
    pending *p = pending_head;
    while (p != NULL) {
        pending *next = p->next;
        free(p);
        p = next;
    }
    pending_head = pending_tail = NULL;
    pending_bytes = 0;
}

static void shim_say(const char *line) {
    ssize_t w = write(2, line, strlen(line));
    (void)w;
}

/* BERTH_SHIM_FAIL_AFTER: the errno this sync fails with, or 0. */
static int sync_fault(void) {
    const char *after = getenv("BERTH_SHIM_FAIL_AFTER");
    if (after == NULL || fail_done || syncs_done < strtoull(after, NULL, 10) ||
        !pending_matches()) {
        return 0;
    }
    const char *e = getenv("BERTH_SHIM_FAIL_ERRNO");
    int err = e != NULL ? atoi(e) : ENOSPC;
    fail_done = true;
    pending_drop();
    syncs_done++;
    shim_say(err == EIO ? "disk_shim: a sync fails with EIO, its writes are dropped\n"
                        : "disk_shim: a sync fails (errno set), its writes are dropped\n");
    return err > 0 ? err : ENOSPC;
}

/* BERTH_SHIM_CRASH_AFTER_FAIL: the OS goes down during this sync. */
static void sync_crash_check(void) {
    const char *k = getenv("BERTH_SHIM_CRASH_AFTER_FAIL");
    if (k == NULL || !fail_done) {
        return;
    }
    syncs_after_fail++;
    if (syncs_after_fail < strtoull(k, NULL, 10)) {
        return;
    }
    shim_say("disk_shim: the OS crashes during this sync\n");
    usleep(SHIM_CRASH_PAUSE_US);   /* the lock stays held: no other write reaches the image */
    if (raise(SIGKILL) != 0) {
        shim_die("cannot kill the process");
    }
}

/* A small number in DIR/name, or -1 when the file is absent. */
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

/* BERTH_SHIM_CTL: note the sync, sleep, and say whether it must fail (its
 * errno) or not (0). Called without the shim's lock, so a slow sync holds
 * up nothing but itself. */
static int ctl_sync(void) {
    const char *dir = getenv("BERTH_SHIM_CTL");
    if (dir == NULL) {
        return 0;
    }
    char path[SHIM_PATH_LEN_MAX];
    int n = snprintf(path, sizeof path, "%s/syncs", dir);
    if (n < 0 || (size_t)n >= sizeof path) {
        shim_die("BERTH_SHIM_CTL path too long");
    }
    int fd = real_open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd < 0 || write(fd, "sync\n", 5) != 5 || real_close(fd) != 0) {
        shim_die("cannot note a sync in BERTH_SHIM_CTL");
    }
    long delay_ms = ctl_read(dir, "delay_ms", 0, 0);
    if (delay_ms > 0) {
        usleep((useconds_t)delay_ms * 1000u);
    }
    long err = ctl_read(dir, "fail", 0, EIO);
    if (err == 0) {
        return 0;
    }
    n = snprintf(path, sizeof path, "%s/fail", dir);
    if (n < 0 || (size_t)n >= sizeof path || unlink(path) != 0) {
        shim_die("cannot remove BERTH_SHIM_CTL's fail file");
    }
    return err > 0 ? (int)err : EIO;
}

static int synced(int fd, sync_fn *fn, const char *name) {
    shim_lock();
    shim_init();
    bool is_data = tracked_index(fd) >= 0;
    shim_unlock();
    int ctl_fault = is_data ? ctl_sync() : 0;
    shim_lock();
    if (ctl_fault != 0) {
        pending_drop();
        shim_unlock();
        shim_say("disk_shim: a sync fails as BERTH_SHIM_CTL asked, its writes are dropped\n");
        errno = ctl_fault;
        return -1;
    }
    if (*fn == NULL) {
        *fn = (sync_fn)real(name);
    }
    bool tracked = tracked_index(fd) >= 0;
    if (tracked && !sync_allowed()) {
        shim_unlock();
        errno = EIO;
        return -1;
    }
    int fault = tracked ? sync_fault() : 0;
    if (fault != 0) {
        shim_unlock();
        errno = fault;
        return -1;
    }
    if (tracked) {
        sync_crash_check();
    }
    int rc = (*fn)(fd);
    if (rc == 0 && tracked) {
        syncs_done++;
        pending_apply();
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
