/* jutil.h — small helpers the journal's stores share (commit_log.c,
 * lmdb_store.c, lmdb_meta.c, etcd_store.c): the error sentence and the
 * directory sync. Private to journal/: no caller outside it includes this. */
#ifndef BERTH_JUTIL_H
#define BERTH_JUTIL_H

#include <stddef.h>

/* Format a sentence into err (err_size bytes, truncated to fit); nothing
 * when err is NULL or err_size is 0. */
void berth_jsay(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* fsync the directory at path, so an entry made or renamed in it survives
 * an OS crash. 0 or errno (of the open or the fsync). */
int berth_dir_sync(const char *path);

#endif
