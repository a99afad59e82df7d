/* lmdb_meta.h — the LMDB store's check of a data file's two meta pages,
 * read with pread before LMDB maps the file (lmdb_meta.c). Private to the
 * journal library. */
#ifndef BERTH_JOURNAL_LMDB_META_H
#define BERTH_JOURNAL_LMDB_META_H

#include <stddef.h>

#include "journal.h"

/* Check FILE (an LMDB data.mdb) before mdb_env_open maps it: both meta
 * pages' mark, magic, data version and page size, and the newer one's root
 * pages and last page against the file's length. A damaged page size or
 * last page would otherwise fault (SIGBUS) inside LMDB at every open.
 * what names the file in sentences ("the journal's data file").
 * OK also when FILE does not exist or is empty (LMDB creates a new one).
 * Errors: CORRUPT (err names the file and the damaged meta page), IO. */
berth_jerr lmdb_meta_check(const char *file, const char *what, char *err, size_t err_size);

#endif
