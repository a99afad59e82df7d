/* fold_sort.h — the history fold's names and the order they are put in
 * (internal to the LMDB store: lmdb_store.c, and tests/test_journal.c). */
#ifndef BERTH_FOLD_SORT_H
#define BERTH_FOLD_SORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One name to fold: it points into the folder's copy of the touchlog
 * bytes, not into the map (the read transaction that found them is closed
 * before the history environment is written). 32 bytes. */
typedef struct fold_item {
    uint64_t prefix;                /* kind and the name's first 7 bytes, big-endian, 0-padded */
    const uint8_t *name;
    uint64_t seq;
    uint8_t len;
    char kind;
} fold_item;

uint64_t fold_prefix(char kind, const uint8_t *name, size_t len);

/* history's key order (LMDB's default: bytes, then the shorter first),
 * then seq: the order fold_sort leaves. A qsort comparator. */
int fold_item_cmp(const void *a, const void *b);

/* Sort items into fold_item_cmp's order (items of equal key and seq in any
 * order: they put the same pair). Fast path when the seqs never fall, as a
 * fold and a rebuild gather them; otherwise, or without memory for its 32
 * bytes per item, qsort. Returns true when it took the fast path. */
bool fold_sort(fold_item *items, size_t n);

#endif
