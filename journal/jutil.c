/* jutil.c — owns the journal's shared helpers (jutil.h). */
#include "jutil.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "berth_limits.h"

void berth_jsay(char *err, size_t err_size, const char *fmt, ...) {
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

int berth_dir_sync(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return errno;
    }
    int rc = fsync(fd) == 0 ? 0 : errno;
    (void)close(fd);   /* read-only: nothing of ours is lost if it fails */
    return rc;
}

bool berth_touched_valid(const berth_touched *t) {
    assert(t != NULL);
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
