/* fold_sort.c — owns the order in which a history fold (and a rebuild's
 * batch) puts its names: history's key order, then seq.
 *
 * Why not one qsort of the items: glibc's merge sort of a fold's ~49,000
 * 32-byte items with a comparator was a third of the fold's CPU
 * (docs/bench-server.md, "Session 6"), and names that share their first
 * seven bytes (i-<tag>-...) sent most comparisons to memcmp. The items
 * arrive in seq order (the touch log is walked forwards), so a stable sort
 * by key alone leaves each key's items in seq order. fold_sort takes the
 * kind and the first 15 bytes of each name as two 64-bit keys and sorts
 * 16-byte references to the items by them: one counting pass by kind,
 * then a stable LSD radix sort of each kind's range, one byte per pass,
 * skipping the byte positions every name of the range shares (glibc's
 * sort took ~3,200 instructions per folded record, this ~1,200: callgrind,
 * docs/bench-server.md "Session 6"). Names longer than that
 * whose first 15 bytes are equal may still be out of order: those runs,
 * short in practice, get the comparator. Anything else (seqs not in
 * order, no memory for the buffers) takes the plain qsort, which orders the
 * same. */
#define _GNU_SOURCE     /* qsort_r */
#include "fold_sort.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

enum {
    fold_prefix_name_bytes = 7,     /* of the name, after the kind byte */
    tail_name_bytes = 8,            /* the second key: the name's next 8 bytes */
    radix_name_bytes = fold_prefix_name_bytes + tail_name_bytes,
    radix_buckets = 256,            /* one byte per pass */
    key_bytes = 8,
};

/* What the radix passes move: the item, and the half of its key the
 * current passes sort on. */
typedef struct item_ref {
    uint64_t key;
    uint32_t item;
    uint32_t unused;
} item_ref;

/* Names hold no NUL, so 0-padding sorts a shorter name first, as LMDB does. */
uint64_t fold_prefix(char kind, const uint8_t *name, size_t len) {
    uint64_t p = (uint64_t)(uint8_t)kind;
    for (size_t i = 0; i < fold_prefix_name_bytes; i++) {
        p = (p << 8) | (i < len ? name[i] : 0u);
    }
    return p;
}

/* The key part of fold_item_cmp: equal prefixes, so same kind. */
static int name_tail_cmp(const fold_item *x, const fold_item *y) {
    if (x->len > fold_prefix_name_bytes && y->len > fold_prefix_name_bytes) {
        size_t min = x->len < y->len ? x->len : y->len;
        int c = memcmp(x->name + fold_prefix_name_bytes, y->name + fold_prefix_name_bytes,
                       min - fold_prefix_name_bytes);
        if (c != 0) {
            return c;
        }
    }
    if (x->len != y->len) {
        return x->len < y->len ? -1 : 1;
    }
    return 0;
}

/* history's key order (LMDB's default: bytes, then the shorter first), then
 * seq, so each key's seqs go in ascending, as its dups sort. The prefix
 * settles most comparisons without touching the names. */
int fold_item_cmp(const void *a, const void *b) {
    const fold_item *x = a;
    const fold_item *y = b;
    if (x->prefix != y->prefix) {
        return x->prefix < y->prefix ? -1 : 1;
    }
    int c = name_tail_cmp(x, y);
    if (c != 0) {
        return c;
    }
    return x->seq < y->seq ? -1 : (x->seq > y->seq ? 1 : 0);
}

static int ref_cmp(const void *a, const void *b, void *arg) {
    const fold_item *items = arg;
    return fold_item_cmp(&items[((const item_ref *)a)->item], &items[((const item_ref *)b)->item]);
}

/* The name's bytes 7..14, big-endian, 0-padded: with the prefix, the whole
 * key of any name up to radix_name_bytes long. */
static uint64_t tail_key(const fold_item *it) {
    uint64_t k = 0;
    for (size_t i = fold_prefix_name_bytes; i < radix_name_bytes; i++) {
        k = (k << 8) | (i < it->len ? it->name[i] : 0u);
    }
    return k;
}

static bool seqs_ascend(const fold_item *items, size_t n) {
    for (size_t i = 1; i < n; i++) {
        if (items[i].seq < items[i - 1].seq) {
            return false;
        }
    }
    return true;
}

/* Stable LSD radix sort of n refs by key, one byte per pass, skipping the
 * bytes all keys share; from and to are n long. Returns the buffer that
 * holds the result (from or to). */
static item_ref *radix_passes(item_ref *from, item_ref *to, size_t n) {
    static_assert(sizeof(uint32_t) * radix_buckets * key_bytes <= 8192, "counts fit the stack");
    uint32_t counts[key_bytes][radix_buckets];
    memset(counts, 0, sizeof counts);
    for (size_t i = 0; i < n; i++) {
        uint64_t k = from[i].key;
        for (size_t b = 0; b < key_bytes; b++) {
            counts[b][(k >> (8 * b)) & 0xff]++;
        }
    }
    for (size_t b = 0; b < key_bytes; b++) {
        uint32_t *c = counts[b];
        if (c[(from[0].key >> (8 * b)) & 0xff] == n) {
            continue;   /* every key has this byte: the pass would move nothing */
        }
        uint32_t at = 0;
        for (size_t v = 0; v < radix_buckets; v++) {
            uint32_t count = c[v];
            c[v] = at;
            at += count;
        }
        for (size_t i = 0; i < n; i++) {
            to[c[(from[i].key >> (8 * b)) & 0xff]++] = from[i];
        }
        item_ref *t = from;
        from = to;
        to = t;
    }
    return from;
}

static bool same_radix_key(const fold_item *x, const fold_item *y) {
    return x->prefix == y->prefix && tail_key(x) == tail_key(y);
}

/* After the radix passes, only items whose first radix_name_bytes match
 * and one of which is longer can be out of order: find such runs and sort
 * them with the comparator. */
static void long_runs_fix(item_ref *refs, size_t n, fold_item *items) {
    size_t i = 0;
    while (i + 1 < n) {
        const fold_item *x = &items[refs[i].item];
        const fold_item *y = &items[refs[i + 1].item];
        if (x->prefix != y->prefix || (x->len <= radix_name_bytes && y->len <= radix_name_bytes) ||
            fold_item_cmp(x, y) <= 0) {
            i++;
            continue;
        }
        size_t lo = i;
        while (lo > 0 && same_radix_key(&items[refs[lo - 1].item], x)) {
            lo--;
        }
        size_t hi = i + 2;
        while (hi < n && same_radix_key(&items[refs[hi].item], x)) {
            hi++;
        }
        qsort_r(refs + lo, hi - lo, sizeof *refs, ref_cmp, items);
        i = hi;
    }
}

void fold_sort_scratch_free(fold_sort_scratch *scratch) {
    free(scratch->block);
    scratch->block = NULL;
    scratch->items_cap = 0;   /* keep_items_max stays: it is the owner's policy */
}

/* Two halves of n refs, then room for a copy of the items: twice what
 * glibc's merge sort takes for them. From scratch when it has room or can
 * grow to it. */
static size_t block_bytes(size_t n) {
    static_assert(sizeof(fold_item) % sizeof(item_ref) == 0, "the copy follows the refs aligned");
    return 2 * n * sizeof(item_ref) + n * sizeof(fold_item);
}

static item_ref *refs_block(fold_sort_scratch *scratch, size_t n) {
    if (scratch == NULL) {
        return malloc(block_bytes(n));
    }
    if (scratch->items_cap < n) {
        free(scratch->block);
        scratch->block = malloc(block_bytes(n));
        scratch->items_cap = scratch->block != NULL ? n : 0;
    }
    return scratch->block;
}

bool fold_sort(fold_item *items, size_t n, fold_sort_scratch *scratch) {
    assert(items != NULL || n == 0);
    if (n < 2) {
        return true;
    }
    item_ref *block = NULL;
    if (n < UINT32_MAX && seqs_ascend(items, n)) {
        block = refs_block(scratch, n);
    }
    if (block == NULL) {
        qsort(items, n, sizeof *items, fold_item_cmp);
        return false;
    }
    item_ref *refs = block;
    item_ref *spare = block + n;
    /* First by kind alone (the prefix's top byte), then each kind's range
     * on its own, so the byte positions every name of that kind shares
     * (a worker's empty tail, an instance's common stem) cost no pass. */
    item_ref *sorted = spare;
    size_t kind_start[radix_buckets] = { 0 };
    for (size_t i = 0; i < n; i++) {
        kind_start[items[i].prefix >> 56]++;
    }
    size_t at = 0;
    for (size_t v = 0; v < radix_buckets; v++) {
        size_t count = kind_start[v];
        kind_start[v] = at;
        at += count;
    }
    size_t kind_end[radix_buckets];
    memcpy(kind_end, kind_start, sizeof kind_end);
    for (size_t i = 0; i < n; i++) {
        sorted[kind_end[items[i].prefix >> 56]++] =
            (item_ref){ .key = tail_key(&items[i]), .item = (uint32_t)i };
    }
    for (size_t v = 0; v < radix_buckets; v++) {
        size_t lo = kind_start[v];
        size_t len = kind_end[v] - lo;
        if (len < 2) {
            continue;
        }
        /* Less significant half first; stability keeps it under the prefix. */
        item_ref *half = radix_passes(sorted + lo, refs + lo, len);
        item_ref *other = half == sorted + lo ? refs + lo : sorted + lo;
        for (size_t i = 0; i < len; i++) {
            half[i].key = items[half[i].item].prefix;
        }
        item_ref *done = radix_passes(half, other, len);
        if (done != sorted + lo) {
            memcpy(sorted + lo, done, len * sizeof *done);
        }
    }
    long_runs_fix(sorted, n, items);

    /* Each item to its place through a copy: the reads are random but
     * independent, so the core has many in flight. Putting them in place by
     * following each cycle of the permutation (which needs no copy) made
     * every load wait for the one before: 70% of the sort's CPU, 14% of a
     * history rebuild's (perf, session 10). */
    fold_item *out = (fold_item *)(void *)(block + 2 * n);
    for (size_t r = 0; r < n; r++) {
        out[r] = items[sorted[r].item];
    }
    memcpy(items, out, n * sizeof *items);
    if (scratch == NULL) {
        free(block);
    } else if (scratch->items_cap > (scratch->keep_items_max != 0 ? scratch->keep_items_max
                                                                   : FOLD_SORT_KEEP_ITEMS_DEFAULT)) {
        fold_sort_scratch_free(scratch);
    }
    return true;
}
