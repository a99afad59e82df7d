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

/* The fast path's buffers, 64 bytes per item (its references, then a copy
 * of the items), kept from one sort to the next by a caller that sorts again
 * and again (the folder): allocated afresh for every fold they were
 * megabytes that the kernel mapped in and faulted page by page each time.
 * Kept after a sort of up to keep_items_max items (0: 131,072, 8 MiB, which
 * a default fold's ~49,000 fit), so a long-running process does not keep
 * the 128 MiB a rare huge sort took; a larger sort's go back when it ends.
 * Zero-initialise; fold_sort_scratch_free releases them. */
typedef struct fold_sort_scratch {
    void *block;
    size_t items_cap;               /* items the block has room for */
    size_t keep_items_max;          /* 0: FOLD_SORT_KEEP_ITEMS_DEFAULT */
} fold_sort_scratch;

#define FOLD_SORT_KEEP_ITEMS_DEFAULT ((size_t)1 << 17)

void fold_sort_scratch_free(fold_sort_scratch *scratch);

/* Sort items into fold_item_cmp's order (items of equal key and seq in any
 * order: they put the same pair). Fast path when the seqs never fall, as a
 * fold and a rebuild gather them; otherwise, or without memory for its 64
 * bytes per item, qsort. scratch may be NULL (buffers for this call only).
 * Returns true when it took the fast path. */
bool fold_sort(fold_item *items, size_t n, fold_sort_scratch *scratch);

#endif
