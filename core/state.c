/* state.c — the allocation state machine: workers, instances, policy, the
 * request-id window, and the one function that judges commands.
 *
 * apply runs in three phases so that a refusal or an allocation failure
 * never leaves a half-changed state: judge (read only, builds the sentence),
 * prepare (every allocation the change needs), commit (pointer moves only,
 * cannot fail). Names live in open-addressing hash tables that are only
 * ever probed, never iterated for output; listings are sorted by name.
 * berth_state_prefetch only reads: replay's cache hints, a few records
 * ahead of apply. */
#include "state.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sanitizer/asan_interface.h>   /* spare blocks poisoned; no-op macros without ASan */

/* ---------------------------------------------------------------- memory */

static void *libc_alloc(void *ctx, size_t size) { (void)ctx; return malloc(size); }
static void *libc_realloc(void *ctx, void *ptr, size_t size) { (void)ctx; return realloc(ptr, size); }
static void libc_free(void *ctx, void *ptr) { (void)ctx; free(ptr); }
static const berth_allocator libc_allocator = { libc_alloc, libc_realloc, libc_free, NULL };

/* ---------------------------------------------------------------- tables */

/* Every object stored in a table starts with its berth_str name. Each slot
 * keeps the name's hash beside the pointer, so a probe that misses, a
 * rehash and a delete's backward shift never touch the object itself: with
 * tens of thousands of workers and instances those would be cache misses. */
typedef struct table_slot {
    uint64_t hash;
    void *obj;      /* NULL: empty */
} table_slot;

typedef struct table {
    table_slot *slots;
    uint32_t cap;    /* power of two, or 0 */
    uint32_t count;
} table;

#define TABLE_CAP_MIN 16u

static berth_str key_of(const void *obj) { return *(const berth_str *)obj; }

/* berth_str_eq for a probe's hit, without a call: names are 1..128 bytes,
 * mostly under 32, so fixed-size loads (overlapping at the end) compare
 * them in a few instructions. */
static inline bool key_eq(berth_str a, berth_str b) {
    if (a.len != b.len) return false;
    uint32_t n = a.len;
    const char *p = a.ptr, *q = b.ptr;
    if (n >= 8) {
        uint64_t x, y;
        for (uint32_t i = 0; i + 8 < n; i += 8) {
            memcpy(&x, p + i, 8);
            memcpy(&y, q + i, 8);
            if (x != y) return false;
        }
        memcpy(&x, p + n - 8, 8);
        memcpy(&y, q + n - 8, 8);
        return x == y;
    }
    if (n >= 4) {
        uint32_t x0, y0, x1, y1;
        memcpy(&x0, p, 4);
        memcpy(&y0, q, 4);
        memcpy(&x1, p + n - 4, 4);
        memcpy(&y1, q + n - 4, 4);
        return x0 == y0 && x1 == y1;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (p[i] != q[i]) return false;
    }
    return true;
}

static void *table_probe(const table *t, berth_str key, uint64_t h) {
    if (t->cap == 0) return NULL;
    uint32_t mask = t->cap - 1;
    for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
        const table_slot *sl = &t->slots[i];
        if (sl->obj == NULL) return NULL;
        if (sl->hash == h && key_eq(key_of(sl->obj), key)) return sl->obj;
    }
}

/* *h is meant to be berth_name_hash(key): commands carry it from parse, so
 * a hit (the hot path) never hashes a name again. A carried hash is not
 * trusted, though: stored hashes are always recomputed ones (every insert
 * follows a miss here), so a wrong *h can only cause a false miss, and a
 * miss re-probes with the recomputed hash and corrects *h for the insert
 * that follows. A command built without parse can thus never misjudge. */
static void *table_get_h(const table *t, berth_str key, uint64_t *h) {
    void *hit = table_probe(t, key, *h);
    if (hit != NULL) return hit;
    uint64_t real = berth_name_hash(key);
    if (real == *h) return NULL;
    *h = real;
    return table_probe(t, key, real);
}

/* Unoptimised and sanitizer builds check what the precomputed path trusts. */
#if !defined(__OPTIMIZE__) || defined(__SANITIZE_ADDRESS__)
#define STATE_CHECK_CARRIED_HASHES 1
#else
#define STATE_CHECK_CARRIED_HASHES 0
#endif

/* A lookup of a command's name: with exact (berth_state_apply_precomputed),
 * *h is the name's hash and a miss is final; else as table_get_h. */
static inline void *table_get_c(const table *t, berth_str key, uint64_t *h, bool exact) {
    if (!exact) return table_get_h(t, key, h);
    assert(!STATE_CHECK_CARRIED_HASHES || *h == berth_name_hash(key));
    return table_probe(t, key, *h);
}

static void *table_get(const table *t, berth_str key) {
    return table_probe(t, key, berth_name_hash(key));
}

static void table_put_hashed(table *t, void *obj, uint64_t h) {
    uint32_t mask = t->cap - 1;
    uint32_t i = (uint32_t)h & mask;
    while (t->slots[i].obj != NULL) i = (i + 1) & mask;
    t->slots[i].hash = h;
    t->slots[i].obj = obj;
    t->count++;
}

/* Make room for `extra` more entries at load <= 1/2; a failure changes nothing. */
static int table_reserve(const berth_allocator *a, table *t, uint32_t extra) {
    uint64_t need = (uint64_t)t->count + extra;
    if (need * 2 <= t->cap) return 0;
    uint64_t cap = t->cap ? t->cap : TABLE_CAP_MIN;
    while (need * 2 > cap) cap *= 2;
    if (cap > (1ull << 31)) return -1;
    table_slot *slots = a->alloc(a->ctx, (size_t)cap * sizeof(table_slot));
    if (slots == NULL) return -1;
    memset(slots, 0, (size_t)cap * sizeof(table_slot));
    table old = *t;
    t->slots = slots;
    t->cap = (uint32_t)cap;
    t->count = 0;
    for (uint32_t i = 0; i < old.cap; i++) {
        if (old.slots[i].obj) table_put_hashed(t, old.slots[i].obj, old.slots[i].hash);
    }
    assert(t->count == old.count);
    if (old.slots) a->free(a->ctx, old.slots);
    return 0;
}

/* Linear-probing delete with backward shift: no tombstones to age. Every
 * caller holds the object it deletes and the hash it is stored under, so
 * the slot is found by the pointer, without touching a name. */
static void table_del_obj(table *t, const void *obj, uint64_t h) {
    assert(t->cap > 0 && obj != NULL);
    uint32_t mask = t->cap - 1;
    uint32_t i = (uint32_t)h & mask;
    while (t->slots[i].obj != obj) {
        assert(t->slots[i].obj != NULL && "deleting an object the table does not hold");
        i = (i + 1) & mask;
    }
    assert(t->slots[i].hash == h);
    t->slots[i].obj = NULL;
    t->count--;
    for (uint32_t j = (i + 1) & mask; t->slots[j].obj != NULL; j = (j + 1) & mask) {
        uint32_t home = (uint32_t)t->slots[j].hash & mask;
        /* Move j back to i if its home is not in the cyclic range (i, j]. */
        bool in_range = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
        if (!in_range) {
            t->slots[i] = t->slots[j];
            t->slots[j].obj = NULL;
            i = j;
        }
    }
}

/* ---------------------------------------------------------------- state */

typedef struct reqid_slot {
    berth_reqid_entry e;   /* first: e.reqid is the table key */
    void *block;           /* owns e.reqid and e.sentence bytes */
    uint64_t hash;         /* berth_name_hash(e.reqid): the window's eviction finds its slot by it */
} reqid_slot;

/* Released instances' blocks are kept for the next DEPLOY instead of going
 * back to the allocator: replay deploys and releases millions of times over
 * a steady population, and a block popped off a list is cheaper (and
 * warmer) than malloc and free. Blocks come in size classes, so any block
 * of a class fits any instance of it. */
#define SPARE_CLASS_BYTES 32u
#define SPARE_CLASSES 48u            /* up to 1,536 bytes: the largest instance block */
#define SPARE_BLOCKS_MAX 4096u       /* kept per class; beyond it, blocks are freed */
_Static_assert(sizeof(berth_instance) + BERTH_PLACEMENT_WORKERS_MAX * sizeof(berth_slot) + 3 * BERTH_NAME_LEN_MAX <=
                   SPARE_CLASSES * SPARE_CLASS_BYTES,
               "every instance block must have a spare class");

typedef struct spare_block {
    struct spare_block *next;
} spare_block;

/* A table's objects sorted by name, kept until the state next changes. */
typedef struct sorted_view {
    const void **items;    /* the table's count entries when valid; state allocator */
    size_t cap;
    bool valid;
} sorted_view;

struct berth_state {
    berth_allocator a;
    spare_block *spare[SPARE_CLASSES];   /* per class: released instance blocks, newest first */
    uint32_t spare_count[SPARE_CLASSES];
    uint64_t last_seq;
    uint64_t policy_seq;   /* seq of the last POLICY.SET (or restore point) */
    uint32_t wording;      /* of the sentences apply writes: not state, never in the digest */
    bool restored;
    table workers;
    table instances;
    uint32_t policy_count;
    berth_str policy[BERTH_POLICY_BACKENDS_MAX];
    void *policy_block;
    table reqids;
    reqid_slot *ring;      /* BERTH_REQID_WINDOW slots, allocated on first use */
    void *reqid_spare;     /* room for the longest entry, so a committed command's id always fits */
    uint32_t ring_head;    /* oldest */
    uint32_t ring_count;
    /* What queries worked out from this exact state, dropped by every change
     * (state_changed: apply, restore, set_last_seq), so a client looping
     * WORKER.LIST or DIGEST on an unchanged state costs a copy, not a sort
     * of every name or an encoding of everything. Filled by const queries
     * (the state is never a const object): like apply, not for two threads
     * at once on one state. */
    sorted_view worker_view;
    sorted_view instance_view;
    uint8_t digest[BERTH_STATE_DIGEST_LEN];
    bool digest_valid;
};

static void state_changed(berth_state *s) {
    s->worker_view.valid = false;
    s->instance_view.valid = false;
    s->digest_valid = false;
}

static const char *const code_names[BERTH_CODE_COUNT] = {
    "OK", "EXISTS", "NOWORKER", "CORDONED", "NOGPU", "EXCLUSIVE", "GPUBUSY", "NOVRAM", "NOINSTANCE", "BUSY",
};

const char *berth_code_name(berth_code code) {
    assert(code >= 0 && code < BERTH_CODE_COUNT);
    return code_names[code];
}

bool berth_code_lookup(berth_str word, berth_code *out) {
    for (int c = 0; c < BERTH_CODE_COUNT; c++) {
        if (berth_str_eq_word(word, code_names[c])) {
            *out = (berth_code)c;
            return true;
        }
    }
    return false;
}

berth_state *berth_state_new(const berth_allocator *allocator) {
    const berth_allocator *a = allocator ? allocator : &libc_allocator;
    berth_state *s = a->alloc(a->ctx, sizeof *s);
    if (s == NULL) return NULL;
    memset(s, 0, sizeof *s);
    s->a = *a;
    /* vllm is exclusive at genesis: the rule GPUStack documents. */
    static const char genesis_backend[] = "vllm";
    s->policy_block = a->alloc(a->ctx, sizeof genesis_backend);
    if (s->policy_block == NULL) {
        a->free(a->ctx, s);
        return NULL;
    }
    memcpy(s->policy_block, genesis_backend, sizeof genesis_backend);
    s->policy[0] = berth_str_make(s->policy_block, sizeof genesis_backend - 1);
    s->policy_count = 1;
    s->wording = BERTH_WORDING_CURRENT;
    return s;
}

void berth_state_set_wording(berth_state *s, uint32_t wording) {
    assert(s != NULL && wording >= BERTH_WORDING_MIN && wording <= BERTH_WORDING_CURRENT);
    s->wording = wording;
}

/* A worker's block: the header, its first SERVED_INLINE_MAX served
 * entries, its name, its GPUs, then its labels and their text. What apply
 * reads of a worker (status, name, served list, GPUs) thus sits in the
 * block's first lines; most workers serve a few instances, so their served
 * list never needs a block of its own (or the cache miss to reach it). */
#define SERVED_INLINE_MAX 4u

static const berth_instance **served_inline(const berth_worker *w) {
    return (const berth_instance **)(void *)((char *)(uintptr_t)w + sizeof *w);
}

static void free_worker(berth_state *s, berth_worker *w) {
    if (w->served != served_inline(w)) s->a.free(s->a.ctx, (void *)w->served);
    s->a.free(s->a.ctx, w);
}

/* ---------------------------------------------------------------- instance blocks */

static uint32_t spare_class(size_t size) {
    assert(size > 0 && size <= SPARE_CLASSES * SPARE_CLASS_BYTES);
    return (uint32_t)((size - 1) / SPARE_CLASS_BYTES);
}

/* An instance's block: the header, its name, model and backend (padded to
 * INSTANCE_ALIGN), then its slots. The name a lookup compares and the slots
 * a RELEASE walks follow the header closely. */
#define INSTANCE_ALIGN 8u   /* berth_slot holds a pointer */
_Static_assert(sizeof(berth_instance) % INSTANCE_ALIGN == 0, "the text after the header starts aligned");

static size_t instance_text_room(berth_str name, berth_str model, berth_str backend) {
    size_t text = (size_t)name.len + model.len + backend.len;
    return (text + INSTANCE_ALIGN - 1) / INSTANCE_ALIGN * INSTANCE_ALIGN;
}

static size_t instance_block_size(uint32_t slots, berth_str name, berth_str model, berth_str backend) {
    return sizeof(berth_instance) + instance_text_room(name, model, backend) + slots * sizeof(berth_slot);
}

/* A spare block is poisoned for AddressSanitizer (the macros are no-ops in
 * other builds) while it waits on its list, so a pointer kept past its
 * instance's RELEASE is still reported as a use after free. */
static size_t spare_class_bytes(uint32_t k) {
    return (size_t)(k + 1) * SPARE_CLASS_BYTES;
}

static spare_block *spare_take(berth_state *s, uint32_t k) {
    spare_block *b = s->spare[k];
    if (b == NULL) return NULL;
    ASAN_UNPOISON_MEMORY_REGION(b, spare_class_bytes(k));
    assert(s->spare_count[k] > 0);
    s->spare[k] = b->next;
    s->spare_count[k]--;
    return b;
}

/* A block of at least size bytes: a spare of its class, else a new one of
 * the whole class size (so it can be reused for any instance of the class). */
static void *instance_block_alloc(berth_state *s, size_t size) {
    uint32_t k = spare_class(size);
    spare_block *b = spare_take(s, k);
    if (b != NULL) {
        return b;
    }
    return s->a.alloc(s->a.ctx, spare_class_bytes(k));
}

static void instance_block_free(berth_state *s, berth_instance *in) {
    uint32_t k = spare_class(instance_block_size(in->slot_count, in->name, in->model, in->backend));
    if (s->spare_count[k] == SPARE_BLOCKS_MAX) {
        s->a.free(s->a.ctx, in);
        return;
    }
    spare_block *b = (spare_block *)in;
    b->next = s->spare[k];
    s->spare[k] = b;
    s->spare_count[k]++;
    ASAN_POISON_MEMORY_REGION(b, spare_class_bytes(k));
}

void berth_state_trim(berth_state *s) {
    assert(s != NULL);
    for (uint32_t k = 0; k < SPARE_CLASSES; k++) {
        spare_block *b;
        while ((b = spare_take(s, k)) != NULL) s->a.free(s->a.ctx, b);
        assert(s->spare_count[k] == 0);
    }
}

void berth_state_free(berth_state *s) {
    if (s == NULL) return;
    for (uint32_t i = 0; i < s->instances.cap; i++) {
        if (s->instances.slots[i].obj) instance_block_free(s, s->instances.slots[i].obj);
    }
    for (uint32_t i = 0; i < s->workers.cap; i++) {
        if (s->workers.slots[i].obj) free_worker(s, s->workers.slots[i].obj);
    }
    for (uint32_t i = 0; i < s->ring_count; i++) {
        s->a.free(s->a.ctx, s->ring[(s->ring_head + i) % BERTH_REQID_WINDOW].block);
    }
    if (s->ring) s->a.free(s->a.ctx, s->ring);
    if (s->reqid_spare) s->a.free(s->a.ctx, s->reqid_spare);
    berth_state_trim(s);
    if (s->workers.slots) s->a.free(s->a.ctx, s->workers.slots);
    if (s->instances.slots) s->a.free(s->a.ctx, s->instances.slots);
    if (s->reqids.slots) s->a.free(s->a.ctx, s->reqids.slots);
    if (s->policy_block) s->a.free(s->a.ctx, s->policy_block);
    if (s->worker_view.items) s->a.free(s->a.ctx, (void *)s->worker_view.items);
    if (s->instance_view.items) s->a.free(s->a.ctx, (void *)s->instance_view.items);
    s->a.free(s->a.ctx, s);
}

/* ---------------------------------------------------------------- queries */

uint64_t berth_state_last_seq(const berth_state *s) { return s->last_seq; }
size_t berth_state_worker_count(const berth_state *s) { return s->workers.count; }
size_t berth_state_instance_count(const berth_state *s) { return s->instances.count; }

const berth_worker *berth_state_worker(const berth_state *s, berth_str name) {
    return table_get(&s->workers, name);
}

const berth_instance *berth_state_instance(const berth_state *s, berth_str name) {
    return table_get(&s->instances, name);
}

static int cmp_named(const void *a, const void *b) {
    return berth_str_cmp(key_of(*(void *const *)a), key_of(*(void *const *)b));
}

/* The view's sorted objects, sorting them once per state change; NULL when
 * its array cannot be allocated (the caller then sorts what it keeps). */
static const void **view_sorted(berth_state *s, const table *t, sorted_view *v) {
    assert(t->count > 0);
    if (v->valid) return v->items;
    if (v->cap < t->count) {
        const void **items = s->a.realloc(s->a.ctx, (void *)v->items, t->count * sizeof *items);
        if (items == NULL) return NULL;
        v->items = items;
        v->cap = t->count;
    }
    size_t n = 0;
    for (uint32_t i = 0; i < t->cap; i++) {
        if (t->slots[i].obj) v->items[n++] = t->slots[i].obj;
    }
    assert(n == t->count);
    /* Names are unique, so the sorted order is total: table layout never shows. */
    qsort(v->items, n, sizeof *v->items, cmp_named);
    v->valid = true;
    return v->items;
}

/* The objects keep accepts (all when keep is NULL), sorted by name, into
 * out. Filtered first, so a listing that keeps few sorts few (a query
 * matching nothing sorted every name: hV5); one that keeps most sorts the
 * whole table once and keeps that order for the next query. Either way the
 * output is the same: the sorted order is total. */
static size_t table_select(const berth_state *cs, const table *t, sorted_view *v,
                           bool (*keep)(const void *obj, void *ctx), void *ctx,
                           const void **out, size_t cap) {
    assert(cap >= t->count && "a partial listing would depend on table layout");
    berth_state *s = (berth_state *)cs;   /* only the view changes: see struct berth_state */
    if (t->count == 0) return 0;
    const void **sorted = v->valid || keep == NULL ? view_sorted(s, t, v) : NULL;
    size_t n = 0;
    if (sorted == NULL) {
        for (uint32_t i = 0; i < t->cap; i++) {
            const void *obj = t->slots[i].obj;
            if (obj && (keep == NULL || keep(obj, ctx))) out[n++] = obj;
        }
        if (n * 2 <= t->count || (sorted = view_sorted(s, t, v)) == NULL) {
            if (n > 1) qsort(out, n, sizeof *out, cmp_named);
            return n;
        }
        n = 0;
    }
    for (size_t i = 0; i < t->count; i++) {
        if (keep == NULL || keep(sorted[i], ctx)) out[n++] = sorted[i];
    }
    return n;
}

size_t berth_state_workers_sorted(const berth_state *s, const berth_worker **out, size_t cap) {
    return table_select(s, &s->workers, &((berth_state *)s)->worker_view, NULL, NULL,
                        (const void **)out, cap);
}

size_t berth_state_instances_sorted(const berth_state *s, const berth_instance **out, size_t cap) {
    return table_select(s, &s->instances, &((berth_state *)s)->instance_view, NULL, NULL,
                        (const void **)out, cap);
}

size_t berth_state_workers_select(const berth_state *s, berth_worker_keep keep, void *ctx,
                                  const berth_worker **out, size_t cap) {
    return table_select(s, &s->workers, &((berth_state *)s)->worker_view,
                        (bool (*)(const void *, void *))keep, ctx, (const void **)out, cap);
}

size_t berth_state_instances_select(const berth_state *s, berth_instance_keep keep, void *ctx,
                                    const berth_instance **out, size_t cap) {
    return table_select(s, &s->instances, &((berth_state *)s)->instance_view,
                        (bool (*)(const void *, void *))keep, ctx, (const void **)out, cap);
}

bool berth_state_digest_cached(const berth_state *s, uint8_t digest[BERTH_STATE_DIGEST_LEN]) {
    if (!s->digest_valid) return false;
    memcpy(digest, s->digest, BERTH_STATE_DIGEST_LEN);
    return true;
}

void berth_state_digest_keep(const berth_state *cs, const uint8_t digest[BERTH_STATE_DIGEST_LEN]) {
    berth_state *s = (berth_state *)cs;   /* only the cache changes: see struct berth_state */
    memcpy(s->digest, digest, BERTH_STATE_DIGEST_LEN);
    s->digest_valid = true;
}

uint32_t berth_state_policy(const berth_state *s, const berth_str **backends) {
    *backends = s->policy;
    return s->policy_count;
}

bool berth_state_backend_exclusive(const berth_state *s, berth_str backend) {
    for (uint32_t i = 0; i < s->policy_count; i++) {
        if (berth_str_eq(s->policy[i], backend)) return true;
    }
    return false;
}

const berth_instance *berth_worker_exclusive_holder(const berth_worker *w) {
    for (uint32_t i = 0; i < w->served_count; i++) {
        if (w->served[i]->exclusive) return w->served[i];
    }
    return NULL;
}

static uint64_t all_gpus_mask(uint32_t gpu_count) {
    assert(gpu_count <= BERTH_GPUS_MAX);
    return gpu_count == 64 ? ~0ull : ((1ull << gpu_count) - 1);
}

uint64_t berth_worker_free_gpu_mask(const berth_worker *w) {
    uint64_t mask = 0;
    for (uint32_t g = 0; g < w->gpu_count; g++) {
        if (w->gpus[g].whole_holder == NULL && w->gpus[g].claim_count == 0) mask |= 1ull << g;
    }
    return mask;
}

size_t berth_state_reqid_count(const berth_state *s) { return s->ring_count; }

void berth_state_reqid_at(const berth_state *s, size_t i, berth_reqid_entry *out) {
    assert(i < s->ring_count);
    *out = s->ring[(s->ring_head + i) % BERTH_REQID_WINDOW].e;
}

uint64_t berth_command_hash(berth_str canonical) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint32_t i = 0; i < canonical.len; i++) {
        h ^= (unsigned char)canonical.ptr[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

berth_reqid_status berth_state_reqid_check(const berth_state *s, berth_str reqid, berth_str canonical,
                                           berth_reqid_entry *hit) {
    assert(reqid.len > 0);
    const reqid_slot *slot = table_get(&s->reqids, reqid);
    if (slot == NULL) return BERTH_REQID_NEW;
    *hit = slot->e;
    uint8_t id[BERTH_COMMAND_ID_LEN];
    berth_command_id(canonical, id);
    return memcmp(slot->e.command_id, id, BERTH_COMMAND_ID_LEN) == 0 ? BERTH_REQID_RETRY : BERTH_REQID_CONFLICT;
}

bool berth_state_precompute(const berth_cmd *c, berth_str canonical, berth_precomputed *pre) {
    assert(c != NULL && pre != NULL);
    uint8_t id[BERTH_COMMAND_ID_LEN] = { 0 };
    if (c->reqid.len > 0) berth_command_id(canonical, id);
    return berth_state_precompute_id(c, id, pre);
}

bool berth_state_precompute_id(const berth_cmd *c, const uint8_t id[BERTH_COMMAND_ID_LEN],
                               berth_precomputed *pre) {
    assert(c != NULL && id != NULL && pre != NULL);
    pre->reqid_hash = 0;
    memset(pre->command_id, 0, sizeof pre->command_id);
    if (c->reqid.len == 0) return true;
    if (!berth_name_valid_hash(c->reqid, &pre->reqid_hash)) return false;
    memcpy(pre->command_id, id, BERTH_COMMAND_ID_LEN);
    return true;
}

berth_reqid_status berth_state_reqid_check_precomputed(const berth_state *s, const berth_cmd *c,
                                                       const berth_precomputed *pre,
                                                       berth_reqid_entry *hit) {
    assert(c->reqid.len > 0);
    assert(!STATE_CHECK_CARRIED_HASHES || pre->reqid_hash == berth_name_hash(c->reqid));
    const reqid_slot *slot = table_probe(&s->reqids, c->reqid, pre->reqid_hash);
    if (slot == NULL) return BERTH_REQID_NEW;
    *hit = slot->e;
    return memcmp(slot->e.command_id, pre->command_id, BERTH_COMMAND_ID_LEN) == 0 ? BERTH_REQID_RETRY
                                                                                 : BERTH_REQID_CONFLICT;
}

/* ---------------------------------------------------------------- sentences */

/* Sentences are built on every apply, replay included, so they use a small
 * formatter of their own instead of vsnprintf: it knows only what the
 * sentences use (%s %.*s %c %d %u %llu) and runs several times faster. */
/* Past the room left: cut, and end the sentence with "...". */
static void fmt_put_cut(berth_outcome *out, const char *p, size_t n) {
    size_t room = sizeof out->sentence - 1 - out->sentence_len;
    assert(n > room);
    memcpy(out->sentence + out->sentence_len, p, room);
    out->sentence_len += (uint32_t)room;
    memcpy(out->sentence + out->sentence_len - 3, "...", 3);
}

/* A sentence's pieces are mostly names and literals of under 32 bytes, and
 * a memcpy call of a length not known at compile time costs more than the
 * copy: fixed-size loads and stores, overlapping at the end, move them
 * without reading or writing a byte outside [0, n). */
static inline void copy_piece(char *dst, const char *src, size_t n) {
    if (n > 32) {
        memcpy(dst, src, n);
        return;
    }
    if (n >= 16) {
        uint64_t a, b, c, d;
        memcpy(&a, src, 8);
        memcpy(&b, src + 8, 8);
        memcpy(&c, src + n - 16, 8);
        memcpy(&d, src + n - 8, 8);
        memcpy(dst, &a, 8);
        memcpy(dst + 8, &b, 8);
        memcpy(dst + n - 16, &c, 8);
        memcpy(dst + n - 8, &d, 8);
    } else if (n >= 8) {
        uint64_t a, b;
        memcpy(&a, src, 8);
        memcpy(&b, src + n - 8, 8);
        memcpy(dst, &a, 8);
        memcpy(dst + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, src, 4);
        memcpy(&b, src + n - 4, 4);
        memcpy(dst, &a, 4);
        memcpy(dst + n - 4, &b, 4);
    } else if (n > 0) {
        char a = src[0], b = src[n / 2], c = src[n - 1];
        dst[0] = a;
        dst[n / 2] = b;
        dst[n - 1] = c;
    }
}

/* Inline, so a piece whose length is known at compile time (a literal, a
 * digit) is copied without a call. */
static inline void fmt_put(berth_outcome *out, const char *p, size_t n) {
    size_t room = sizeof out->sentence - 1 - out->sentence_len;
    if (__builtin_expect(n > room, 0)) {
        fmt_put_cut(out, p, n);
        return;
    }
    copy_piece(out->sentence + out->sentence_len, p, n);
    out->sentence_len += (uint32_t)n;
}

static void fmt_u64(berth_outcome *out, uint64_t v) {
    if (v < 10) {   /* GPU indices, mostly */
        char c = (char)('0' + v);
        fmt_put(out, &c, 1);
        return;
    }
    char d[20];
    size_t n = 0;
    do {
        d[sizeof d - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    fmt_put(out, d + sizeof d - n, n);
}

/* sentence_len holds this while apply_quiet runs: say() records the code only. */
#define SENTENCE_QUIET UINT32_MAX
/* ...or this while apply_expect runs: quiet as long as the code is the
 * expected one; a different code turns the sentence on (set_code). */
#define SENTENCE_QUIET_EXPECT(code) (UINT32_MAX - 1u - (uint32_t)(code))
#define SENTENCE_QUIET_MIN SENTENCE_QUIET_EXPECT(BERTH_CODE_COUNT - 1)

static bool out_quiet(const berth_outcome *out) {
    return out->sentence_len >= SENTENCE_QUIET_MIN;
}

/* Decide the code; a sentence that is being built starts over. */
static void set_code(berth_outcome *out, berth_code code) {
    out->code = code;
    if (!out_quiet(out)) {
        out->sentence_len = 0;
    } else if (out->sentence_len != SENTENCE_QUIET && out->sentence_len != SENTENCE_QUIET_EXPECT(code)) {
        out->sentence_len = 0;  /* not the expected code: its sentence is wanted */
    }
}

static void fmt_v(berth_outcome *out, const char *f, va_list ap) {
    if (out_quiet(out)) return;
    while (*f) {
        const char *lit = f;
        while (*f && *f != '%') f++;
        if (f > lit) fmt_put(out, lit, (size_t)(f - lit));
        if (!*f) break;
        f++;
        if (f[0] == '.' && f[1] == '*' && f[2] == 's') {
            int n = va_arg(ap, int);
            const char *p = va_arg(ap, const char *);
            fmt_put(out, p, n > 0 ? (size_t)n : 0);
            f += 3;
        } else if (f[0] == 's') {
            const char *p = va_arg(ap, const char *);
            fmt_put(out, p, strlen(p));
            f++;
        } else if (f[0] == 'c') {
            char c = (char)va_arg(ap, int);
            fmt_put(out, &c, 1);
            f++;
        } else if (f[0] == 'd') {
            int v = va_arg(ap, int);
            if (v < 0) fmt_put(out, "-", 1);
            fmt_u64(out, v < 0 ? (uint64_t)(-(int64_t)v) : (uint64_t)v);
            f++;
        } else if (f[0] == 'u') {
            fmt_u64(out, va_arg(ap, unsigned));
            f++;
        } else if (f[0] == 'l' && f[1] == 'l' && f[2] == 'u') {
            fmt_u64(out, va_arg(ap, unsigned long long));
            f += 3;
        } else {
            assert(f[0] == '%' && "sentence format uses an unsupported conversion");
            fmt_put(out, "%", 1);
            f++;
        }
    }
    out->sentence[out->sentence_len] = '\0';
}

static void say(berth_outcome *out, berth_code code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(berth_outcome *out, berth_code code, const char *fmt, ...) {
    set_code(out, code);
    va_list ap;
    va_start(ap, fmt);
    fmt_v(out, fmt, ap);
    va_end(ap);
}

static void say_more(berth_outcome *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say_more(berth_outcome *out, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fmt_v(out, fmt, ap);
    va_end(ap);
}

#define S(x) (int)(x).len, (x).ptr

/* "a distributed vllm instance" / "a distributed instance of an exclusive backend (sglang, vllm)" */
static void say_rule(berth_outcome *out, const berth_state *s) {
    if (s->policy_count == 1) {
        say_more(out, "; a worker serves one distributed %.*s instance at a time", S(s->policy[0]));
        return;
    }
    say_more(out, "; a worker serves one distributed instance of an exclusive backend (");
    for (uint32_t i = 0; i < s->policy_count; i++) say_more(out, "%s%.*s", i ? ", " : "", S(s->policy[i]));
    say_more(out, ") at a time");
}

/* ---------------------------------------------------------------- workers */

static void touch_worker(berth_outcome *out, berth_str name) {
    if (out->worker_count < BERTH_PLACEMENT_WORKERS_MAX) out->workers[out->worker_count++] = name;
}

#define WORKER_ALIGN 8u   /* berth_gpu and berth_label hold pointers */
_Static_assert(sizeof(berth_worker) % WORKER_ALIGN == 0, "the inline served list follows the header aligned");

static int apply_worker_add(berth_state *s, const berth_cmd *c, uint64_t seq, bool exact, berth_outcome *out) {
    uint64_t h = c->name_hash;   /* corrected on a miss */
    const berth_worker *old = table_get_c(&s->workers, c->name, &h, exact);
    touch_worker(out, c->name);
    if (old) {
        say(out, BERTH_EXISTS, "worker %.*s is already registered (since seq %llu); remove it first to register it again",
            S(c->name), (unsigned long long)old->added_seq);
        return 0;
    }
    size_t label_bytes = 0;
    for (uint32_t i = 0; i < c->label_count; i++) label_bytes += c->labels[i].key.len + c->labels[i].value.len;
    /* The name is padded so the GPUs and labels after it stay aligned. */
    size_t name_room = (c->name.len + WORKER_ALIGN - 1) / WORKER_ALIGN * WORKER_ALIGN;
    size_t size = sizeof(berth_worker) + SERVED_INLINE_MAX * sizeof(berth_instance *) + name_room +
                  c->gpu_count * sizeof(berth_gpu) + c->label_count * sizeof(berth_label) + label_bytes;
    if (table_reserve(&s->a, &s->workers, 1) != 0) return -1;
    char *block = s->a.alloc(s->a.ctx, size);
    if (block == NULL) return -1;
    memset(block, 0, size);
    berth_worker *w = (berth_worker *)block;
    w->served = served_inline(w);
    w->served_cap = SERVED_INLINE_MAX;
    char *name_text = (char *)(w->served + SERVED_INLINE_MAX);
    memcpy(name_text, c->name.ptr, c->name.len);
    w->name = berth_str_make(name_text, c->name.len);
    w->gpus = (berth_gpu *)(void *)(name_text + name_room);
    w->labels = (berth_label *)(w->gpus + c->gpu_count);
    char *text = (char *)(w->labels + c->label_count);
    for (uint32_t i = 0; i < c->label_count; i++) {
        memcpy(text, c->labels[i].key.ptr, c->labels[i].key.len);
        w->labels[i].key = berth_str_make(text, c->labels[i].key.len);
        text += c->labels[i].key.len;
        memcpy(text, c->labels[i].value.ptr, c->labels[i].value.len);
        w->labels[i].value = berth_str_make(text, c->labels[i].value.len);
        text += c->labels[i].value.len;
    }
    assert(text == block + size);
    assert((uintptr_t)w->gpus % _Alignof(berth_gpu) == 0 && (uintptr_t)w->labels % _Alignof(berth_label) == 0);
    w->gpu_count = c->gpu_count;
    w->vram_mib = c->vram_mib;
    w->label_count = c->label_count;
    w->status = BERTH_WORKER_ACTIVE;
    w->added_seq = seq;
    table_put_hashed(&s->workers, w, h);
    out->workers[0] = w->name;
    const char *gpus = w->gpu_count == 1 ? "GPU" : "GPUs";
    if (w->vram_mib && (w->gpu_count > 0 || s->wording < 2)) {
        say(out, BERTH_OK, "worker %.*s registered with %u %s of %u MiB", S(w->name), w->gpu_count, gpus,
            w->vram_mib);
    } else {
        say(out, BERTH_OK, "worker %.*s registered with %u %s", S(w->name), w->gpu_count, gpus);
    }
    return 0;
}

static void say_noworker(berth_outcome *out, berth_str name) {
    say(out, BERTH_NOWORKER, "worker %.*s is not registered", S(name));
}

static int apply_worker_cordon(berth_state *s, const berth_cmd *c, bool exact, berth_outcome *out, bool cordon) {
    uint64_t h = c->name_hash;   /* corrected on a miss */
    berth_worker *w = table_get_c(&s->workers, c->name, &h, exact);
    touch_worker(out, c->name);
    if (w == NULL) {
        say_noworker(out, c->name);
        return 0;
    }
    berth_worker_status want = cordon ? BERTH_WORKER_CORDONED : BERTH_WORKER_ACTIVE;
    bool already = w->status == want;
    w->status = want;
    if (cordon && w->served_count == 0 && s->wording >= 2) {
        say(out, BERTH_OK, "worker %.*s %s: it serves no instance and accepts no new ones", S(w->name),
            already ? "was already cordoned" : "cordoned");
    } else if (cordon) {
        say(out, BERTH_OK, "worker %.*s %s: it keeps its %u instance%s and accepts no new ones", S(w->name),
            already ? "was already cordoned" : "cordoned", w->served_count, w->served_count == 1 ? "" : "s");
    } else {
        say(out, BERTH_OK, "worker %.*s %s", S(w->name),
            already ? "was not cordoned; it accepts new instances" : "uncordoned: it accepts new instances again");
    }
    return 0;
}

static int apply_worker_remove(berth_state *s, const berth_cmd *c, bool exact, berth_outcome *out) {
    uint64_t h = c->name_hash;   /* corrected on a miss */
    berth_worker *w = table_get_c(&s->workers, c->name, &h, exact);
    touch_worker(out, c->name);
    if (w == NULL) {
        say_noworker(out, c->name);
        return 0;
    }
    if (w->served_count > 0) {
        say(out, BERTH_BUSY, "worker %.*s still serves %u instance%s (", S(w->name), w->served_count,
            w->served_count == 1 ? "" : "s");
        for (uint32_t i = 0; i < w->served_count; i++) {
            say_more(out, "%s%.*s", i ? ", " : "", S(w->served[i]->name));
        }
        say_more(out, w->served_count == 1 && s->wording >= 2 ? "); release it before removing the worker"
                                                              : "); release them before removing it");
        return 0;
    }
    say(out, BERTH_OK, "worker %.*s removed", S(c->name));
    table_del_obj(&s->workers, w, h);
    free_worker(s, w);
    return 0;
}

/* ---------------------------------------------------------------- deploy */

/* Names every instance on worker w that uses GPU g, for NOVRAM/GPUBUSY. */
static void say_gpu_users(berth_outcome *out, const berth_worker *w, uint32_t g) {
    uint32_t named = 0;
    for (uint32_t i = 0; i < w->served_count; i++) {
        const berth_instance *in = w->served[i];
        for (uint32_t k = 0; k < in->slot_count; k++) {
            if (in->slots[k].worker != w || !(in->slots[k].gpu_mask & (1ull << g))) continue;
            if (in->claim_mib) {
                say_more(out, "%s%.*s %u MiB", named ? ", " : "", S(in->name), in->claim_mib);
            } else {
                say_more(out, "%s%.*s", named ? ", " : "", S(in->name));
            }
            named++;
        }
    }
}

/* Judge one worker of a placement; returns true when it passes. */
static bool judge_place(const berth_state *s, const berth_cmd *c, const berth_place *pl, bool exclusive,
                        bool exact, const berth_worker **wout, uint64_t *mask_out, berth_outcome *out) {
    uint64_t worker_h = pl->worker_hash;
    const berth_worker *w = table_get_c(&s->workers, pl->worker, &worker_h, exact);
    if (w == NULL) {
        say_noworker(out, pl->worker);
        return false;
    }
    if (w->status == BERTH_WORKER_CORDONED) {
        say(out, BERTH_CORDONED, "worker %.*s is cordoned and accepts no new instances", S(w->name));
        return false;
    }
    uint64_t have = all_gpus_mask(w->gpu_count);
    uint64_t mask = pl->all_gpus ? have : pl->gpu_mask;
    if (mask & ~have) {
        uint32_t g = (uint32_t)__builtin_ctzll(mask & ~have);
        say(out, BERTH_NOGPU, "worker %.*s has %u GPU%s, so GPU %u does not exist", S(w->name), w->gpu_count,
            w->gpu_count == 1 ? "" : "s", g);
        return false;
    }
    if (exclusive) {
        const berth_instance *h = berth_worker_exclusive_holder(w);
        if (h) {
            say(out, BERTH_EXCLUSIVE, "worker %.*s already serves distributed %.*s instance %.*s since seq %llu",
                S(w->name), S(h->backend), S(h->name), (unsigned long long)h->deploy_seq);
            say_rule(out, s);
            return false;
        }
    }
    for (uint64_t m = mask; m; m &= m - 1) {
        uint32_t g = (uint32_t)__builtin_ctzll(m);
        const berth_gpu *gpu = &w->gpus[g];
        if (gpu->whole_holder) {
            say(out, BERTH_GPUBUSY, "GPU %.*s:%u is held whole by instance %.*s", S(w->name), g,
                S(gpu->whole_holder->name));
            return false;
        }
        if (c->claim_mib == 0 && gpu->claim_count > 0) {
            say(out, BERTH_GPUBUSY, "GPU %.*s:%u is shared by %u instance%s claiming %u MiB (", S(w->name), g,
                gpu->claim_count, gpu->claim_count == 1 ? "" : "s", gpu->claimed_mib);
            say_gpu_users(out, w, g);
            say_more(out, "); a whole-GPU claim needs it unused");
            return false;
        }
    }
    /* A claim on a worker registered without VRAM is refused whatever the
     * GPUs it names, none included (a bare worker of 0 GPUs): the contract
     * says so, and it would otherwise serve an instance claiming nothing.
     * From wording 2 a worker of 0 GPUs hears the reason below instead,
     * since registering it with VRAM would not help it. */
    if (c->claim_mib && w->vram_mib == 0 && (w->gpu_count > 0 || s->wording < 2)) {
        say(out, BERTH_NOVRAM, "worker %.*s was registered without VRAM, so instance %.*s cannot claim %u MiB "
            "on its GPUs; register it with VRAM <MiB>", S(w->name), S(c->name), c->claim_mib);
        return false;
    }
    /* A claim is memory on a GPU: a worker of no GPUs (named bare, so all
     * of them, none) has none to claim on, whatever VRAM it was registered
     * with; accepted, the instance claimed nothing (a whole-GPU DEPLOY
     * there stays a CPU instance, which VRAM has nothing to do with). */
    if (c->claim_mib && w->gpu_count == 0) {
        assert(mask == 0);
        say(out, BERTH_NOVRAM, "worker %.*s has 0 GPUs, so instance %.*s cannot claim %u MiB on any GPU of it",
            S(w->name), S(c->name), c->claim_mib);
        return false;
    }
    if (c->claim_mib) {
        for (uint64_t m = mask; m; m &= m - 1) {
            uint32_t g = (uint32_t)__builtin_ctzll(m);
            const berth_gpu *gpu = &w->gpus[g];
            if ((uint64_t)gpu->claimed_mib + c->claim_mib <= w->vram_mib) continue;
            say(out, BERTH_NOVRAM, s->wording >= 2 ? "GPU %.*s:%u has %u MiB free of %u MiB (%u MiB claimed"
                                                   : "GPU %.*s:%u has %u MiB free of %u (%u MiB claimed",
                S(w->name), g, w->vram_mib - gpu->claimed_mib, w->vram_mib, gpu->claimed_mib);
            if (gpu->claim_count) {
                say_more(out, " by ");
                say_gpu_users(out, w, g);
            }
            say_more(out, "); instance %.*s claims %u MiB", S(c->name), c->claim_mib);
            return false;
        }
    }
    *wout = w;
    *mask_out = mask;
    return true;
}

/* Grow w's served list so one more fits; a no-op for the state's meaning. */
static int served_reserve(berth_state *s, berth_worker *w) {
    if (w->served_count < w->served_cap) return 0;
    assert(w->served_cap >= SERVED_INLINE_MAX);
    uint32_t cap = w->served_cap * 2;
    const berth_instance **p;
    if (w->served == served_inline(w)) {
        p = s->a.alloc(s->a.ctx, cap * sizeof *p);
        if (p != NULL) memcpy(p, w->served, w->served_count * sizeof *p);
    } else {
        p = s->a.realloc(s->a.ctx, (void *)w->served, cap * sizeof *p);
    }
    if (p == NULL) return -1;
    w->served = p;
    w->served_cap = cap;
    return 0;
}

/* The two sentences nearly every record says (a DEPLOY's and a RELEASE's)
 * are written piece by piece rather than through a format: verify and
 * berthd build one per record, and the format walk and the varargs cost as
 * much as the rest of the apply. fmt_put truncates the same way however the
 * text is cut into pieces, so the bytes equal the formatted ones. Callers
 * check the quiet mark first: these write unconditionally. */
#define put_lit(out, lit) put_bytes((out), "" lit "", sizeof(lit) - 1)   /* literals only: no strlen */

static inline void put_bytes(berth_outcome *out, const char *p, size_t n) {
    assert(!out_quiet(out));
    fmt_put(out, p, n);
}

static inline void put_name(berth_outcome *out, berth_str name) {
    assert(!out_quiet(out));
    fmt_put(out, name.ptr, name.len);
}

static inline void put_u32(berth_outcome *out, uint32_t v) {
    assert(!out_quiet(out));
    if (v < 10) {   /* a GPU index, mostly: one byte, no call */
        char c = (char)('0' + v);
        fmt_put(out, &c, 1);
        return;
    }
    fmt_u64(out, v);
}

static void put_end(berth_outcome *out) {
    assert(out->sentence_len < sizeof out->sentence);
    out->sentence[out->sentence_len] = '\0';
}

/* ":0-3,6": GPU lists as runs, so a whole 8-GPU worker reads ":0-7". A run
 * at a time: its first GPU is the lowest bit left, its length the ones
 * that follow. */
static void say_gpu_runs(berth_outcome *out, uint64_t mask) {
    bool first = true;
    while (mask) {
        uint32_t g = (uint32_t)__builtin_ctzll(mask);
        uint64_t rest = ~(mask >> g);    /* its lowest set bit ends the run */
        uint32_t run = rest ? (uint32_t)__builtin_ctzll(rest) : BERTH_GPUS_MAX - g;
        uint32_t end = g + run - 1;
        assert(end < BERTH_GPUS_MAX);
        if (first) put_lit(out, ":");
        else put_lit(out, ",");
        put_u32(out, g);
        if (end != g) {
            put_lit(out, "-");
            put_u32(out, end);
        }
        first = false;
        mask = end + 1 == BERTH_GPUS_MAX ? 0 : mask & ~((1ull << (end + 1)) - 1);
    }
}

/* "instance <name> deployed on <w>:<gpus> (main), <w>:<gpus>[ claiming <n>
 * MiB per GPU][; holds its workers exclusively as a distributed <b> instance]" */
static void say_deployed(berth_outcome *out, const berth_instance *in) {
    set_code(out, BERTH_OK);
    if (out_quiet(out)) return;
    put_lit(out, "instance ");
    put_name(out, in->name);
    put_lit(out, " deployed on ");
    for (uint32_t i = 0; i < in->slot_count; i++) {
        const berth_slot *sl = &in->slots[i];
        if (i) put_lit(out, ", ");
        put_name(out, sl->worker->name);
        say_gpu_runs(out, sl->gpu_mask);
        if (i == 0 && in->distributed) put_lit(out, " (main)");
    }
    if (in->claim_mib) {
        put_lit(out, " claiming ");
        put_u32(out, in->claim_mib);
        put_lit(out, " MiB per GPU");
    }
    if (in->exclusive) {
        put_lit(out, "; holds its workers exclusively as a distributed ");
        put_name(out, in->backend);
        put_lit(out, " instance");
    }
    put_end(out);
}

/* judge_exclusive: false only when restoring a snapshot, whose instances may
 * hold a worker together after a POLICY.SET made both backends exclusive. */
static int apply_deploy(berth_state *s, const berth_cmd *c, uint64_t seq, bool judge_exclusive, bool exact,
                        berth_outcome *out) {
    out->instance = c->name;
    for (uint32_t i = 0; i < c->place_count; i++) touch_worker(out, c->place[i].worker);
    uint64_t h = c->name_hash;   /* corrected on a miss */
    const berth_instance *old = table_get_c(&s->instances, c->name, &h, exact);
    if (old) {
        say(out, BERTH_EXISTS, "instance %.*s is already deployed (since seq %llu)", S(c->name),
            (unsigned long long)old->deploy_seq);
        return 0;
    }
    bool distributed = c->place_count > 1;
    bool exclusive = distributed && berth_state_backend_exclusive(s, c->backend);
    const berth_worker *ws[BERTH_PLACEMENT_WORKERS_MAX];
    uint64_t masks[BERTH_PLACEMENT_WORKERS_MAX];
    for (uint32_t i = 0; i < c->place_count; i++) {
        if (!judge_place(s, c, &c->place[i], exclusive && judge_exclusive, exact, &ws[i], &masks[i], out)) {
            out->refused_by = i + 1;
            return 0;
        }
    }
    /* Prepare: every allocation before the first mutation. */
    if (table_reserve(&s->a, &s->instances, 1) != 0) return -1;
    for (uint32_t i = 0; i < c->place_count; i++) {
        if (served_reserve(s, (berth_worker *)ws[i]) != 0) return -1;
    }
    size_t size = instance_block_size(c->place_count, c->name, c->model, c->backend);
    char *block = instance_block_alloc(s, size);
    if (block == NULL) return -1;
    /* Commit. */
    berth_instance *in = (berth_instance *)block;
    char *text = block + sizeof *in;
    in->slots = (berth_slot *)(void *)(text + instance_text_room(c->name, c->model, c->backend));
    assert((uintptr_t)in->slots % _Alignof(berth_slot) == 0);
    assert((char *)(in->slots + c->place_count) == block + size);
    memcpy(text, c->name.ptr, c->name.len);
    in->name = berth_str_make(text, c->name.len);
    text += c->name.len;
    memcpy(text, c->model.ptr, c->model.len);
    in->model = berth_str_make(text, c->model.len);
    text += c->model.len;
    memcpy(text, c->backend.ptr, c->backend.len);
    in->backend = berth_str_make(text, c->backend.len);
    in->claim_mib = c->claim_mib;
    in->deploy_seq = seq;
    in->distributed = distributed;
    in->exclusive = exclusive;
    in->slot_count = c->place_count;
    for (uint32_t i = 0; i < c->place_count; i++) {
        berth_worker *w = (berth_worker *)ws[i];
        in->slots[i].worker = w;
        in->slots[i].gpu_mask = masks[i];
        w->served[w->served_count++] = in;
        for (uint64_t m = masks[i]; m; m &= m - 1) {
            berth_gpu *gpu = &w->gpus[__builtin_ctzll(m)];
            if (c->claim_mib) {
                gpu->claimed_mib += c->claim_mib;
                gpu->claim_count++;
                assert(gpu->claimed_mib <= w->vram_mib);
            } else {
                assert(gpu->whole_holder == NULL && gpu->claim_count == 0);
                gpu->whole_holder = in;
            }
        }
    }
    table_put_hashed(&s->instances, in, h);
    out->instance = in->name;
    say_deployed(out, in);
    return 0;
}

static void served_remove(berth_worker *w, const berth_instance *in) {
    for (uint32_t i = 0; i < w->served_count; i++) {
        if (w->served[i] != in) continue;
        /* Keep deploy-seq order: the exclusive holder is the first match.
         * A few entries to move, mostly: a loop, not a call. */
        for (uint32_t j = i + 1; j < w->served_count; j++) w->served[j - 1] = w->served[j];
        w->served_count--;
        return;
    }
    assert(0 && "instance missing from a worker it holds");
}

static int apply_release(berth_state *s, const berth_cmd *c, bool exact, berth_outcome *out) {
    out->instance = c->name;
    uint64_t h = c->name_hash;   /* corrected on a miss */
    berth_instance *in = table_get_c(&s->instances, c->name, &h, exact);
    if (in == NULL) {
        say(out, BERTH_NOINSTANCE, "instance %.*s is not deployed", S(c->name));
        return 0;
    }
    /* "instance <name> released from <w>, <w>" */
    set_code(out, BERTH_OK);
    bool quiet = out_quiet(out);
    if (!quiet) {
        put_lit(out, "instance ");
        put_name(out, c->name);
        put_lit(out, " released from ");
    }
    for (uint32_t i = 0; i < in->slot_count; i++) {
        berth_worker *w = (berth_worker *)in->slots[i].worker;
        touch_worker(out, w->name);
        if (!quiet) {
            if (i) put_lit(out, ", ");
            put_name(out, w->name);
        }
        served_remove(w, in);
        for (uint64_t m = in->slots[i].gpu_mask; m; m &= m - 1) {
            berth_gpu *gpu = &w->gpus[__builtin_ctzll(m)];
            if (in->claim_mib) {
                assert(gpu->claim_count > 0 && gpu->claimed_mib >= in->claim_mib);
                gpu->claimed_mib -= in->claim_mib;
                gpu->claim_count--;
            } else {
                assert(gpu->whole_holder == in);
                gpu->whole_holder = NULL;
            }
        }
    }
    if (!quiet) put_end(out);
    table_del_obj(&s->instances, in, h);
    instance_block_free(s, in);
    return 0;
}

/* ---------------------------------------------------------------- policy */

static int set_policy(berth_state *s, const berth_str *backends, uint32_t count) {
    assert(count <= BERTH_POLICY_BACKENDS_MAX);
    size_t bytes = 1;
    for (uint32_t i = 0; i < count; i++) bytes += backends[i].len;
    char *block = s->a.alloc(s->a.ctx, bytes);
    if (block == NULL) return -1;
    char *text = block;
    for (uint32_t i = 0; i < count; i++) {
        assert(i == 0 || berth_str_cmp(backends[i - 1], backends[i]) < 0);
        memcpy(text, backends[i].ptr, backends[i].len);
        s->policy[i] = berth_str_make(text, backends[i].len);
        text += backends[i].len;
    }
    if (s->policy_block) s->a.free(s->a.ctx, s->policy_block);
    s->policy_block = block;
    s->policy_count = count;
    /* Re-mark every instance; the order of this walk cannot matter. */
    for (uint32_t i = 0; i < s->instances.cap; i++) {
        berth_instance *in = s->instances.slots[i].obj;
        if (in) in->exclusive = in->distributed && berth_state_backend_exclusive(s, in->backend);
    }
    return 0;
}

static int apply_policy_set(berth_state *s, const berth_cmd *c, uint64_t seq, berth_outcome *out) {
    if (set_policy(s, c->backends, c->backend_count) != 0) return -1;
    s->policy_seq = seq;
    if (c->backend_count == 0) {
        say(out, BERTH_OK, "no backend is exclusive now: distributed instances share workers");
        return 0;
    }
    say(out, BERTH_OK, "exclusive backends now: ");
    for (uint32_t i = 0; i < c->backend_count; i++) say_more(out, "%s%.*s", i ? ", " : "", S(c->backends[i]));
    say_more(out, "; existing instances stay where they are");
    return 0;
}

/* ---------------------------------------------------------------- reqids */

static reqid_slot *ring_slot(berth_state *s, uint32_t i) {
    return &s->ring[(s->ring_head + i) % BERTH_REQID_WINDOW];
}

/* Allocate what remembering one request id needs; nothing changes yet. */
static int reqid_prepare(berth_state *s, berth_str reqid, berth_str sentence, void **block) {
    if (s->ring == NULL) {
        s->ring = s->a.alloc(s->a.ctx, BERTH_REQID_WINDOW * sizeof *s->ring);
        if (s->ring == NULL) return -1;
    }
    if (table_reserve(&s->a, &s->reqids, 1) != 0) return -1;
    *block = s->a.alloc(s->a.ctx, reqid.len + sentence.len + 1);
    return *block ? 0 : -1;
}

#define REQID_SPARE_BYTES (BERTH_NAME_LEN_MAX + BERTH_SENTENCE_LEN_MAX)   /* id + sentence + NUL */

/* Everything a command's request id needs before apply changes anything. */
static int reqid_reserve(berth_state *s) {
    if (s->ring == NULL) {
        s->ring = s->a.alloc(s->a.ctx, BERTH_REQID_WINDOW * sizeof *s->ring);
        if (s->ring == NULL) return -1;
    }
    if (table_reserve(&s->a, &s->reqids, 1) != 0) return -1;
    if (s->reqid_spare == NULL) s->reqid_spare = s->a.alloc(s->a.ctx, REQID_SPARE_BYTES);
    return s->reqid_spare ? 0 : -1;
}

/* reqid_h: berth_name_hash(e->reqid), which the caller has at hand. */
static void reqid_commit(berth_state *s, const berth_reqid_entry *e, uint64_t reqid_h, void *block) {
    assert(!STATE_CHECK_CARRIED_HASHES || reqid_h == berth_name_hash(e->reqid));
    assert(table_probe(&s->reqids, e->reqid, reqid_h) == NULL);
    if (s->ring_count == BERTH_REQID_WINDOW) {
        reqid_slot *old = ring_slot(s, 0);
        table_del_obj(&s->reqids, old, old->hash);
        s->a.free(s->a.ctx, old->block);
        s->ring_head = (s->ring_head + 1) % BERTH_REQID_WINDOW;
        s->ring_count--;
    }
    reqid_slot *slot = ring_slot(s, s->ring_count);
    char *text = block;
    memcpy(text, e->reqid.ptr, e->reqid.len);
    memcpy(text + e->reqid.len, e->sentence.ptr, e->sentence.len);
    text[e->reqid.len + e->sentence.len] = '\0';
    slot->block = block;
    slot->hash = reqid_h;
    slot->e = *e;
    slot->e.reqid = berth_str_make(text, e->reqid.len);
    slot->e.sentence = berth_str_make(text + e->reqid.len, e->sentence.len);
    s->ring_count++;
    table_put_hashed(&s->reqids, slot, reqid_h);
}

/* ---------------------------------------------------------------- apply */

/* quiet_mark: 0 (a sentence), SENTENCE_QUIET or SENTENCE_QUIET_EXPECT(code). */
/* pre: NULL, or the command's precomputed values, whose hashes are then
 * trusted (berth_state_apply_precomputed). */
static int apply(berth_state *s, const berth_cmd *c, berth_str canonical, uint64_t seq, berth_outcome *out,
                 uint32_t quiet_mark, const berth_precomputed *pre) {
    assert(s != NULL && c != NULL && out != NULL);
    assert(seq == s->last_seq + 1);
    assert(c->kind > BERTH_CMD_NONE && c->kind < BERTH_CMD_KIND_COUNT);
    state_changed(s);
    out->code = BERTH_OK;
    assert(quiet_mark == 0 || quiet_mark >= SENTENCE_QUIET_MIN);
    out->sentence_len = c->reqid.len == 0 ? quiet_mark : 0;   /* the window keeps a REQID's sentence */
    out->sentence[0] = '\0';
    out->instance = (berth_str){ 0 };
    out->worker_count = 0;
    out->refused_by = 0;
    /* Reserve the request id's memory first: after the command commits,
     * failing is not allowed. The reserve is a block for the longest entry,
     * kept in the state from one request id to the next; the entry itself
     * gets a block of its exact size once the sentence is known, and takes
     * the reserve only if that allocation fails (which then goes unnoticed:
     * the next request id allocates a new reserve before it changes anything). */
    uint64_t reqid_h = 0;
    if (c->reqid.len) {
        reqid_h = pre != NULL ? pre->reqid_hash : berth_name_hash(c->reqid);
        assert(!STATE_CHECK_CARRIED_HASHES || reqid_h == berth_name_hash(c->reqid));
        assert(table_probe(&s->reqids, c->reqid, reqid_h) == NULL && "reqid_check must run before apply");
        if (reqid_reserve(s) != 0) return -1;
    }
    bool exact = pre != NULL;
    int rc;
    switch (c->kind) {
    case BERTH_CMD_WORKER_ADD: rc = apply_worker_add(s, c, seq, exact, out); break;
    case BERTH_CMD_WORKER_CORDON: rc = apply_worker_cordon(s, c, exact, out, true); break;
    case BERTH_CMD_WORKER_UNCORDON: rc = apply_worker_cordon(s, c, exact, out, false); break;
    case BERTH_CMD_WORKER_REMOVE: rc = apply_worker_remove(s, c, exact, out); break;
    case BERTH_CMD_DEPLOY: rc = apply_deploy(s, c, seq, true, exact, out); break;
    case BERTH_CMD_RELEASE: rc = apply_release(s, c, exact, out); break;
    case BERTH_CMD_POLICY_SET: rc = apply_policy_set(s, c, seq, out); break;
    default: assert(0 && "unreachable"); rc = -1;
    }
    if (rc != 0) {
        if (out_quiet(out)) out->sentence_len = 0;
        return -1;
    }
    if (c->reqid.len) {
        berth_reqid_entry e = { c->reqid, { 0 }, seq, out->code,
                                berth_str_make(out->sentence, out->sentence_len) };
        if (pre != NULL) {
            memcpy(e.command_id, pre->command_id, BERTH_COMMAND_ID_LEN);
#if STATE_CHECK_CARRIED_HASHES
            uint8_t real[BERTH_COMMAND_ID_LEN];
            berth_command_id(canonical, real);
            assert(memcmp(real, e.command_id, BERTH_COMMAND_ID_LEN) == 0);
#endif
        } else {
            berth_command_id(canonical, e.command_id);
        }
        void *block = s->a.alloc(s->a.ctx, c->reqid.len + out->sentence_len + 1);
        if (block == NULL) {
            assert(s->reqid_spare != NULL);
            block = s->reqid_spare;
            s->reqid_spare = NULL;
        }
        reqid_commit(s, &e, reqid_h, block);
    }
    if (out_quiet(out)) out->sentence_len = 0;
    assert(out->sentence_len < sizeof out->sentence && out->sentence[out->sentence_len] == '\0');
    s->last_seq = seq;
    return 0;
}

int berth_state_apply(berth_state *s, const berth_cmd *c, berth_str canonical, uint64_t seq, berth_outcome *out) {
    return apply(s, c, canonical, seq, out, 0, NULL);
}

int berth_state_apply_quiet(berth_state *s, const berth_cmd *c, berth_str canonical, uint64_t seq,
                            berth_outcome *out) {
    return apply(s, c, canonical, seq, out, SENTENCE_QUIET, NULL);
}

int berth_state_apply_precomputed(berth_state *s, const berth_cmd *c, berth_str canonical, uint64_t seq,
                                  const berth_precomputed *pre, bool quiet, berth_outcome *out) {
    assert(pre != NULL);
    return apply(s, c, canonical, seq, out, quiet ? SENTENCE_QUIET : 0, pre);
}

int berth_state_apply_expect(berth_state *s, const berth_cmd *c, berth_str canonical, uint64_t seq,
                             berth_code expected, berth_outcome *out) {
    assert((uint32_t)expected < BERTH_CODE_COUNT);
    return apply(s, c, canonical, seq, out, SENTENCE_QUIET_EXPECT(expected), NULL);
}

/* ---------------------------------------------------------------- prefetch */

/* Replay applies records one after another, and most of an apply's time is
 * waiting on the cache misses of the tables and the objects they point to,
 * one dependent miss after another. A hint issued a few records ahead lets
 * those loads overlap. Hints only read, and only what is live at the call:
 * the slots, the objects in them, an instance's slots; every address they
 * load is a prefetch, which cannot fault and changes nothing observable. */
#define PREFETCH_LINE_BYTES 64u
#define PREFETCH_PROBE_MAX 8u          /* slots a hint walks before it gives up */
#define PREFETCH_GPUS_ASSUMED 8u       /* a worker's GPUs when the hint cannot know how many */
#define PREFETCH_INSTANCE_BYTES 256u   /* header, names and a few slots of an instance block */

static void prefetch_span(const void *p, size_t bytes) {
    uintptr_t at = (uintptr_t)p & ~(uintptr_t)(PREFETCH_LINE_BYTES - 1);
    uintptr_t end = (uintptr_t)p + bytes;
    for (; at < end; at += PREFETCH_LINE_BYTES) __builtin_prefetch((const void *)at);
}

static void prefetch_slot(const table *t, uint64_t h) {
    if (t->cap == 0) return;
    __builtin_prefetch(&t->slots[(uint32_t)h & (t->cap - 1)]);
}

/* The object stored under hash h, by the hash alone: for a hint, a
 * collision only sends the loads to the wrong place. */
static const void *table_peek(const table *t, uint64_t h) {
    if (t->cap == 0) return NULL;
    uint32_t mask = t->cap - 1;
    uint32_t i = (uint32_t)h & mask;
    for (uint32_t n = 0; n < PREFETCH_PROBE_MAX; n++, i = (i + 1) & mask) {
        const table_slot *sl = &t->slots[i];
        if (sl->obj == NULL) return NULL;
        if (sl->hash == h) return sl->obj;
    }
    return NULL;
}

/* A worker's block from its header through the GPUs in mask: what judging
 * and committing a placement read (status, the served list inline, the
 * name a lookup compares, the GPUs). name_len is the placement's worker
 * name, which a hit shares, so no byte of the worker is read here. */
static void prefetch_worker(const berth_worker *w, uint32_t name_len, uint64_t mask) {
    size_t name_room = ((size_t)name_len + WORKER_ALIGN - 1) / WORKER_ALIGN * WORKER_ALIGN;
    size_t gpus_at = sizeof *w + SERVED_INLINE_MAX * sizeof(berth_instance *) + name_room;
    uint32_t gpus = mask ? 64u - (uint32_t)__builtin_clzll(mask) : 0;
    prefetch_span(w, gpus_at + gpus * sizeof(berth_gpu));
}

/* The table a command's own name is looked up in, or NULL for one whose
 * apply looks up no name (POLICY.SET). */
static inline const table *prefetch_names(const berth_state *s, const berth_cmd *c) {
    switch (c->kind) {
    case BERTH_CMD_DEPLOY:
    case BERTH_CMD_RELEASE: return &s->instances;
    case BERTH_CMD_WORKER_ADD:
    case BERTH_CMD_WORKER_CORDON:
    case BERTH_CMD_WORKER_UNCORDON:
    case BERTH_CMD_WORKER_REMOVE: return &s->workers;
    default: return NULL;
    }
}

/* Stage 0: the slots the command's names hash to. */
static inline void prefetch_stage0(const berth_state *s, const berth_cmd *c) {
    const table *names = prefetch_names(s, c);
    if (names == NULL) return;
    prefetch_slot(names, c->name_hash);
    if (c->kind != BERTH_CMD_DEPLOY) return;
    for (uint32_t i = 0; i < c->place_count; i++) prefetch_slot(&s->workers, c->place[i].worker_hash);
}

/* The request-id window's oldest entry, which a command with a REQID
 * evicts once the window is full: written BERTH_REQID_WINDOW REQIDs ago, so
 * its ring slot, its table slot and its block are cold. The head moves only
 * with REQID records, so a hint a few records ahead is mostly still right. */
static inline const reqid_slot *prefetch_evicted(const berth_state *s, const berth_cmd *c) {
    if (c->reqid.len == 0 || s->ring_count != BERTH_REQID_WINDOW) return NULL;
    assert(s->ring != NULL && s->ring_head < BERTH_REQID_WINDOW);
    return &s->ring[s->ring_head];
}

/* Stage 1: what those slots point to; the evicted REQID's ring slot. */
static inline void prefetch_stage1(const berth_state *s, const berth_cmd *c) {
    const reqid_slot *evicted = prefetch_evicted(s, c);
    if (evicted != NULL) prefetch_span(evicted, sizeof *evicted);
    const table *names = prefetch_names(s, c);
    if (names == NULL) return;
    if (c->kind == BERTH_CMD_DEPLOY) {
        for (uint32_t i = 0; i < c->place_count; i++) {
            const berth_place *pl = &c->place[i];
            const berth_worker *w = table_peek(&s->workers, pl->worker_hash);
            uint64_t mask = pl->all_gpus ? all_gpus_mask(PREFETCH_GPUS_ASSUMED) : pl->gpu_mask;
            if (w != NULL) prefetch_worker(w, pl->worker.len, mask);
        }
        return;
    }
    const void *obj = table_peek(names, c->name_hash);
    if (obj == NULL) return;
    if (names == &s->workers) prefetch_worker(obj, c->name.len, 0);
    else prefetch_span(obj, PREFETCH_INSTANCE_BYTES);
}

/* Stage 2: the instance has arrived; a RELEASE walks its workers. Their
 * names are not known here, so assume short ones. */
static inline void prefetch_stage2(const berth_state *s, const berth_cmd *c) {
    /* The evicted REQID's ring slot has arrived: its table slot (the
     * eviction's delete) and its block (freed or reused). */
    const reqid_slot *evicted = prefetch_evicted(s, c);
    if (evicted != NULL) {
        prefetch_slot(&s->reqids, evicted->hash);
        __builtin_prefetch(evicted->block);
    }
    if (c->kind != BERTH_CMD_RELEASE) return;
    const berth_instance *in = table_peek(&s->instances, c->name_hash);
    if (in == NULL) return;
    for (uint32_t i = 0; i < in->slot_count && i < BERTH_PLACEMENT_WORKERS_MAX; i++) {
        prefetch_worker(in->slots[i].worker, BERTH_NAME_LEN_MAX / 4, in->slots[i].gpu_mask);
    }
}

void berth_state_prefetch(const berth_state *s, const berth_cmd *c, uint32_t stage) {
    assert(s != NULL && c != NULL && stage < BERTH_PREFETCH_STAGES);
    if (stage == 0) prefetch_stage0(s, c);
    else if (stage == 1) prefetch_stage1(s, c);
    else prefetch_stage2(s, c);
}

/* One call per applied record instead of one per stage: replay issues the
 * three stages for three different commands at every record, and the calls,
 * their checks and the dispatch on the kind cost more than the loads. */
void berth_state_prefetch_stages(const berth_state *s, const berth_cmd *const c[BERTH_PREFETCH_STAGES]) {
    assert(s != NULL && c != NULL);
    _Static_assert(BERTH_PREFETCH_STAGES == 3, "one step per stage below");
    if (c[0] != NULL) prefetch_stage0(s, c[0]);
    if (c[1] != NULL) prefetch_stage1(s, c[1]);
    if (c[2] != NULL) prefetch_stage2(s, c[2]);
}

void berth_state_prefetch_reqid(const berth_state *s, uint64_t reqid_hash) {
    assert(s != NULL);
    prefetch_slot(&s->reqids, reqid_hash);
}

/* ---------------------------------------------------------------- restore */

int berth_state_restore_policy(berth_state *s, const berth_str *backends, uint32_t count) {
    state_changed(s);
    if (count > BERTH_POLICY_BACKENDS_MAX) return -1;
    for (uint32_t i = 0; i < count; i++) {
        if (!berth_name_valid(backends[i])) return -1;
        if (i > 0 && berth_str_cmp(backends[i - 1], backends[i]) >= 0) return -1;
    }
    s->restored = true;
    return set_policy(s, backends, count);
}

int berth_state_restore_worker(berth_state *s, berth_str name, uint32_t gpu_count, uint32_t vram_mib,
                               berth_worker_status status, uint64_t added_seq, const berth_label *labels,
                               uint32_t label_count) {
    state_changed(s);
    if (!berth_name_valid(name) || gpu_count > BERTH_GPUS_MAX || vram_mib > BERTH_VRAM_MIB_MAX) return -1;
    if (status != BERTH_WORKER_ACTIVE && status != BERTH_WORKER_CORDONED) return -1;
    if (label_count > BERTH_LABELS_MAX || table_get(&s->workers, name)) return -1;
    berth_cmd c;
    memset(&c, 0, sizeof c);
    c.kind = BERTH_CMD_WORKER_ADD;
    c.name = name;
    c.gpu_count = gpu_count;
    c.vram_mib = vram_mib;
    c.label_count = label_count;
    for (uint32_t i = 0; i < label_count; i++) {
        if (!berth_name_valid(labels[i].key) || !berth_name_valid(labels[i].value)) return -1;
        if (i > 0 && berth_str_cmp(labels[i - 1].key, labels[i].key) >= 0) return -1;
        c.labels[i] = labels[i];
    }
    berth_cmd_hash_names(&c);
    berth_outcome *out = s->a.alloc(s->a.ctx, sizeof *out);
    if (out == NULL) return -1;
    memset(out, 0, sizeof *out);
    out->sentence_len = SENTENCE_QUIET;
    int rc = apply_worker_add(s, &c, added_seq, false, out);
    s->a.free(s->a.ctx, out);
    if (rc != 0) return -1;
    ((berth_worker *)table_get(&s->workers, name))->status = status;
    s->restored = true;
    return 0;
}

int berth_state_restore_instance(berth_state *s, berth_str name, berth_str model, berth_str backend,
                                 uint32_t claim_mib, uint64_t deploy_seq, const berth_str *workers,
                                 const uint64_t *gpu_masks, uint32_t slot_count) {
    state_changed(s);
    if (!berth_name_valid(name) || !berth_name_valid(model) || !berth_name_valid(backend)) return -1;
    if (slot_count == 0 || slot_count > BERTH_PLACEMENT_WORKERS_MAX || claim_mib > BERTH_VRAM_MIB_MAX) return -1;
    if (table_get(&s->instances, name)) return -1;
    berth_cmd *c = s->a.alloc(s->a.ctx, sizeof *c);
    berth_outcome *out = s->a.alloc(s->a.ctx, sizeof *out);
    int rc = -1;
    if (c == NULL || out == NULL) goto done;
    memset(c, 0, sizeof *c);
    memset(out, 0, sizeof *out);
    out->sentence_len = SENTENCE_QUIET;
    c->kind = BERTH_CMD_DEPLOY;
    c->name = name;
    c->model = model;
    c->backend = backend;
    c->claim_mib = claim_mib;
    c->place_count = slot_count;
    for (uint32_t i = 0; i < slot_count; i++) {
        for (uint32_t j = 0; j < i; j++) {
            if (berth_str_eq(workers[j], workers[i])) goto done;
        }
        c->place[i] = (berth_place){ workers[i], gpu_masks[i], false, 0 };
    }
    berth_cmd_hash_names(c);
    /* Judge without the exclusivity rule: the snapshot's policy may have
     * changed since these instances were deployed, and they stay. Cordons
     * are lifted for the judgement and put back after. */
    bool exclusive = slot_count > 1 && berth_state_backend_exclusive(s, backend);
    const berth_worker *ws[BERTH_PLACEMENT_WORKERS_MAX];
    uint64_t masks[BERTH_PLACEMENT_WORKERS_MAX];
    berth_worker_status saved[BERTH_PLACEMENT_WORKERS_MAX];
    uint32_t found = 0;
    for (; found < slot_count; found++) {
        berth_worker *w = table_get(&s->workers, workers[found]);
        if (w == NULL) break;
        saved[found] = w->status;
        w->status = BERTH_WORKER_ACTIVE;
    }
    bool ok = found == slot_count;
    for (uint32_t i = 0; ok && i < slot_count; i++) {
        ok = judge_place(s, c, &c->place[i], false, false, &ws[i], &masks[i], out);
    }
    if (ok) {
        /* apply_deploy judges again, cordons included: keep them lifted
         * until it is done, and refuse the snapshot if it still says no
         * (the instance would be missing from the restored state). */
        uint64_t last = s->last_seq;
        s->last_seq = deploy_seq - 1;
        rc = apply_deploy(s, c, deploy_seq, false, false, out);
        s->last_seq = last;
        berth_instance *in = rc == 0 ? table_get(&s->instances, name) : NULL;
        if (rc == 0 && (out->code != BERTH_OK || in == NULL)) rc = -1;
        if (rc == 0) {
            in->exclusive = exclusive;
            s->restored = true;
        }
    }
    for (uint32_t i = 0; i < found; i++) ((berth_worker *)table_get(&s->workers, workers[i]))->status = saved[i];
done:
    if (c) s->a.free(s->a.ctx, c);
    if (out) s->a.free(s->a.ctx, out);
    return rc;
}

int berth_state_restore_reqid(berth_state *s, const berth_reqid_entry *e) {
    state_changed(s);
    if (!berth_name_valid(e->reqid) || e->code >= BERTH_CODE_COUNT) return -1;
    if (e->sentence.len >= BERTH_SENTENCE_LEN_MAX || table_get(&s->reqids, e->reqid)) return -1;
    void *block;
    if (reqid_prepare(s, e->reqid, e->sentence, &block) != 0) return -1;
    reqid_commit(s, e, berth_name_hash(e->reqid), block);
    s->restored = true;
    return 0;
}

void berth_state_set_last_seq(berth_state *s, uint64_t seq) {
    state_changed(s);
    s->last_seq = seq;
    /* After a restore we no longer know when the policy last changed;
     * the snapshot point is the conservative answer for berth_state_check. */
    if (s->restored) s->policy_seq = seq;
}

/* ---------------------------------------------------------------- check */

static bool why(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool why(char *buf, size_t size, const char *fmt, ...) {
    if (buf && size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, size, fmt, ap);
        va_end(ap);
    }
    return false;
}

static bool check_worker(const berth_state *s, const berth_worker *w, char *wb, size_t ws) {
    uint32_t exclusive = 0, exclusive_after_policy = 0;
    for (uint32_t g = 0; g < w->gpu_count; g++) {
        const berth_gpu *gpu = &w->gpus[g];
        uint32_t whole = 0, claims = 0;
        uint64_t mib = 0;
        for (uint32_t i = 0; i < w->served_count; i++) {
            const berth_instance *in = w->served[i];
            for (uint32_t k = 0; k < in->slot_count; k++) {
                if (in->slots[k].worker != w || !(in->slots[k].gpu_mask & (1ull << g))) continue;
                if (in->claim_mib) {
                    claims++;
                    mib += in->claim_mib;
                } else {
                    whole++;
                    if (gpu->whole_holder != in) return why(wb, ws, "GPU %.*s:%u holder mismatch", S(w->name), g);
                }
            }
        }
        if (whole > 1) return why(wb, ws, "GPU %.*s:%u held whole twice", S(w->name), g);
        if (whole && claims) return why(wb, ws, "GPU %.*s:%u held whole and claimed", S(w->name), g);
        if (!whole && gpu->whole_holder) return why(wb, ws, "GPU %.*s:%u stale holder", S(w->name), g);
        if (claims != gpu->claim_count || mib != gpu->claimed_mib) {
            return why(wb, ws, "GPU %.*s:%u claim totals disagree", S(w->name), g);
        }
        if (mib > w->vram_mib && claims) return why(wb, ws, "GPU %.*s:%u claims exceed VRAM", S(w->name), g);
    }
    for (uint32_t i = 0; i < w->served_count; i++) {
        const berth_instance *in = w->served[i];
        if (table_get(&s->instances, in->name) != in) return why(wb, ws, "worker %.*s serves a ghost", S(w->name));
        if (i > 0 && w->served[i - 1]->deploy_seq >= in->deploy_seq) {
            return why(wb, ws, "worker %.*s served list out of order", S(w->name));
        }
        if (in->exclusive) {
            exclusive++;
            if (in->deploy_seq > s->policy_seq) exclusive_after_policy++;
        }
    }
    if (exclusive > 1 && exclusive_after_policy > 0) {
        return why(wb, ws, "worker %.*s has %u exclusive holders", S(w->name), exclusive);
    }
    return true;
}

static bool check_instance(const berth_state *s, const berth_instance *in, char *wb, size_t ws) {
    if (in->slot_count == 0 || in->distributed != (in->slot_count > 1)) {
        return why(wb, ws, "instance %.*s slot count", S(in->name));
    }
    if (in->exclusive != (in->distributed && berth_state_backend_exclusive(s, in->backend))) {
        return why(wb, ws, "instance %.*s exclusive flag stale", S(in->name));
    }
    for (uint32_t k = 0; k < in->slot_count; k++) {
        const berth_worker *w = in->slots[k].worker;
        if (table_get(&s->workers, w->name) != w) return why(wb, ws, "instance %.*s on a removed worker", S(in->name));
        if (in->slots[k].gpu_mask & ~all_gpus_mask(w->gpu_count)) {
            return why(wb, ws, "instance %.*s holds a GPU its worker lacks", S(in->name));
        }
        uint32_t seen = 0;
        for (uint32_t i = 0; i < w->served_count; i++) seen += w->served[i] == in;
        if (seen != 1) return why(wb, ws, "instance %.*s listed %u times on %.*s", S(in->name), seen, S(w->name));
    }
    return true;
}

/* Every stored hash is its name's: lookups trust a stored hash on a hit. */
static bool check_table_hashes(const table *t, const char *what, char *wb, size_t ws) {
    for (uint32_t i = 0; i < t->cap; i++) {
        const void *obj = t->slots[i].obj;
        if (obj != NULL && t->slots[i].hash != berth_name_hash(key_of(obj))) {
            return why(wb, ws, "%s %.*s stored under a wrong hash", what, S(key_of(obj)));
        }
    }
    return true;
}

bool berth_state_check(const berth_state *s, char *wb, size_t ws) {
    /* Request ids are hashed on insert by apply or restore (reqid_commit asserts it). */
    if (!check_table_hashes(&s->workers, "worker", wb, ws) ||
        !check_table_hashes(&s->instances, "instance", wb, ws)) {
        return false;
    }
    for (uint32_t i = 0; i < s->workers.cap; i++) {
        if (s->workers.slots[i].obj && !check_worker(s, s->workers.slots[i].obj, wb, ws)) return false;
    }
    for (uint32_t i = 0; i < s->instances.cap; i++) {
        if (s->instances.slots[i].obj && !check_instance(s, s->instances.slots[i].obj, wb, ws)) return false;
    }
    if (s->reqids.count != s->ring_count) return why(wb, ws, "reqid table and window disagree");
    for (uint32_t i = 0; i < s->policy_count; i++) {
        if (i > 0 && berth_str_cmp(s->policy[i - 1], s->policy[i]) >= 0) return why(wb, ws, "policy unsorted");
    }
    return true;
}
