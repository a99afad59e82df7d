/* jutil.h — small helpers the journal's stores share (commit_log.c,
 * lmdb_store.c, lmdb_meta.c, etcd_store.c, appender.c): the error sentence,
 * the directory sync and the check of a record's touched names. Private to
 * journal/: no caller outside it includes this. */
#ifndef BERTH_JUTIL_H
#define BERTH_JUTIL_H

#include <stdbool.h>
#include <stddef.h>

#include "journal.h"

/* Format a sentence into err (err_size bytes, truncated to fit); nothing
 * when err is NULL or err_size is 0. */
void berth_jsay(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* fsync the directory at path, so an entry made or renamed in it survives
 * an OS crash. 0 or errno (of the open or the fsync). */
int berth_dir_sync(const char *path);

/* Whether a record's touched names can be stored: an instance of at most
 * BERTH_NAME_LEN_MAX bytes (0: none), at most BERTH_PLACEMENT_WORKERS_MAX
 * workers, each 1..BERTH_NAME_LEN_MAX bytes, and no NULL where bytes are
 * promised. What every road that takes touched names refuses before it
 * writes anything. */
bool berth_touched_valid(const berth_touched *t);

#endif
