/* query.c — berthd's read-only queries over a berth_state.
 *
 * Owns the reply shape of WORKER.GET/LIST, INSTANCE.GET/LIST, POLICY.GET and
 * DIGEST. Each is a function of (state, words) only, so the same code answers
 * the live committed state on the loop and a replayed past state for
 * `AT <seq>` on the background thread. Every listing is sorted by name
 * (berth_state_*_select, memcmp order): output never depends on hash order.
 * Filters run before the sort, so a query that keeps few names sorts few,
 * and the state keeps full sorted listings and the digest until it next
 * changes: a read-only client looping them does not stall the loop. */
#include "server.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "query_sentences.h"
#include "replay.h"

#define QUERY_WORKER_FIELDS 10
#define QUERY_INSTANCE_FIELDS 9

/* Room for n pointers in the caller's scratch array (grows, never shrinks). */
static bool query_scratch(const query_ctx *ctx, size_t n) {
    if (*ctx->scratch_cap >= n) {
        return true;
    }
    size_t cap = *ctx->scratch_cap == 0 ? 64 : *ctx->scratch_cap;
    while (cap < n) {
        cap *= 2;
    }
    const void **p = realloc((void *)*ctx->scratch, cap * sizeof *p);
    if (p == NULL) {
        return false;
    }
    *ctx->scratch = p;
    *ctx->scratch_cap = cap;
    return true;
}

static bool query_name_arg(berth_str name, const char *what, reply_buf *rb) {
    if (berth_name_valid(name)) {
        return true;
    }
    reply_error(rb, "ERR", "invalid %s name: 1 to %d bytes of [A-Za-z0-9._:/-]", what,
                BERTH_NAME_LEN_MAX);
    return false;
}

/* ---- WORKER.GET -------------------------------------------------------- */

static void query_worker_gpus(const berth_worker *w, reply_buf *rb) {
    uint64_t free_mask = berth_worker_free_gpu_mask(w);
    uint32_t free_count = (uint32_t)__builtin_popcountll(free_mask);
    reply_bulk_lit(rb, "free_gpus");
    reply_array(rb, free_count);
    for (uint32_t g = 0; g < w->gpu_count; g++) {
        if (free_mask & (1ull << g)) {
            reply_int(rb, g);
        }
    }
    reply_bulk_lit(rb, "gpu_claimed_mib");
    reply_array(rb, w->gpu_count);
    for (uint32_t g = 0; g < w->gpu_count; g++) {
        reply_int(rb, w->gpus[g].claimed_mib);
    }
}

static void query_worker_get(const query_ctx *ctx, size_t argc, const berth_str *argv,
                             reply_buf *rb) {
    assert(argc == 2);
    if (!query_name_arg(argv[1], "worker", rb)) {
        return;
    }
    const berth_worker *w = berth_state_worker(ctx->state, argv[1]);
    if (w == NULL) {
        reply_error(rb, "NOWORKER", QUERY_NOWORKER_FMT, (int)argv[1].len, argv[1].ptr);
        return;
    }
    reply_map(rb, QUERY_WORKER_FIELDS);
    reply_bulk_lit(rb, "name");
    reply_bulk_str(rb, w->name);
    reply_bulk_lit(rb, "gpus");
    reply_int(rb, w->gpu_count);
    reply_bulk_lit(rb, "vram_mib");
    reply_int(rb, w->vram_mib);
    reply_bulk_lit(rb, "state");
    reply_bulk_cstr(rb, w->status == BERTH_WORKER_CORDONED ? "cordoned" : "active");
    reply_bulk_lit(rb, "added_seq");
    reply_uint(rb, w->added_seq);
    reply_bulk_lit(rb, "labels");
    reply_map(rb, w->label_count);
    for (uint32_t i = 0; i < w->label_count; i++) {
        reply_bulk_str(rb, w->labels[i].key);
        reply_bulk_str(rb, w->labels[i].value);
    }
    reply_bulk_lit(rb, "instances");
    reply_array(rb, w->served_count);
    for (uint32_t i = 0; i < w->served_count; i++) {
        reply_bulk_str(rb, w->served[i]->name);
    }
    reply_bulk_lit(rb, "exclusive_holder");
    const berth_instance *holder = berth_worker_exclusive_holder(w);
    if (holder == NULL) {
        reply_null(rb);
    } else {
        reply_bulk_str(rb, holder->name);
    }
    query_worker_gpus(w, rb);
}

/* ---- WORKER.LIST [STATE active|cordoned] [FREE] ------------------------ */

typedef struct worker_filter {
    int state;                  /* -1: any */
    bool free;
} worker_filter;

static bool worker_keep(const berth_worker *w, void *ctx) {
    const worker_filter *f = ctx;
    return (f->state < 0 || (int)w->status == f->state) &&
           (!f->free || berth_worker_free_gpu_mask(w) != 0);
}

static void query_worker_list(const query_ctx *ctx, size_t argc, const berth_str *argv,
                              reply_buf *rb) {
    int want_state = -1;
    bool want_free = false;
    bool seen_state = false;
    static const char usage[] = "WORKER.LIST takes [STATE active|cordoned] [FREE], each once";
    for (size_t i = 1; i < argc; i++) {
        /* A filter given twice is refused, as INSTANCE.LIST does: keeping
         * the last one would answer a question the client did not ask. */
        if (berth_str_eq_word(argv[i], "FREE") && !want_free) {
            want_free = true;
        } else if (berth_str_eq_word(argv[i], "STATE") && i + 1 < argc && !seen_state) {
            seen_state = true;
            i++;
            if (berth_str_eq_word(argv[i], "active")) {
                want_state = BERTH_WORKER_ACTIVE;
            } else if (berth_str_eq_word(argv[i], "cordoned")) {
                want_state = BERTH_WORKER_CORDONED;
            } else {
                reply_error(rb, "ERR", "STATE takes active or cordoned");
                return;
            }
        } else {
            reply_error(rb, "ERR", "%s", usage);
            return;
        }
    }
    size_t n = berth_state_worker_count(ctx->state);
    if (!query_scratch(ctx, n + 1)) {
        reply_error(rb, "ERR", "out of memory listing workers");
        return;
    }
    const berth_worker **ws = (const berth_worker **)*ctx->scratch;
    worker_filter f = { want_state, want_free };
    bool all = want_state < 0 && !want_free;
    size_t kept = berth_state_workers_select(ctx->state, all ? NULL : worker_keep, &f, ws, n);
    assert(kept <= n);
    reply_array(rb, kept);
    for (size_t i = 0; i < kept; i++) {
        reply_bulk_str(rb, ws[i]->name);
    }
}

/* ---- INSTANCE.GET ------------------------------------------------------ */

/* The wall-clock time of the instance's DEPLOY record, from the journal. */
static bool query_deploy_time(const query_ctx *ctx, uint64_t seq, uint64_t *time_ms) {
    berth_journal_reader *reader = ctx->reader;
    if (reader == NULL &&
        (ctx->journal == NULL || berth_journal_reader_open(ctx->journal, &reader) != BERTH_J_OK)) {
        return false;
    }
    berth_record rec;
    berth_jerr err = berth_journal_read(reader, seq, &rec, NULL, NULL);
    if (err == BERTH_J_OK) {
        *time_ms = rec.time_ms;
    }
    if (reader != ctx->reader) {
        berth_journal_reader_close(reader);
    }
    return err == BERTH_J_OK;
}

static void query_placement(const berth_instance *inst, reply_buf *rb) {
    reply_bulk_lit(rb, "placement");
    reply_array(rb, inst->slot_count);
    for (uint32_t i = 0; i < inst->slot_count; i++) {
        const berth_slot *slot = &inst->slots[i];
        reply_map(rb, 2);
        reply_bulk_lit(rb, "worker");
        reply_bulk_str(rb, slot->worker->name);
        reply_bulk_lit(rb, "gpus");
        reply_array(rb, (size_t)__builtin_popcountll(slot->gpu_mask));
        for (uint32_t g = 0; g < BERTH_GPUS_MAX; g++) {
            if (slot->gpu_mask & (1ull << g)) {
                reply_int(rb, g);
            }
        }
    }
}

static void query_instance_get(const query_ctx *ctx, size_t argc, const berth_str *argv,
                               reply_buf *rb) {
    assert(argc == 2);
    if (!query_name_arg(argv[1], "instance", rb)) {
        return;
    }
    const berth_instance *inst = berth_state_instance(ctx->state, argv[1]);
    if (inst == NULL) {
        reply_error(rb, "NOINSTANCE", QUERY_NOINSTANCE_FMT, (int)argv[1].len, argv[1].ptr);
        return;
    }
    reply_map(rb, QUERY_INSTANCE_FIELDS);
    reply_bulk_lit(rb, "name");
    reply_bulk_str(rb, inst->name);
    reply_bulk_lit(rb, "model");
    reply_bulk_str(rb, inst->model);
    reply_bulk_lit(rb, "backend");
    reply_bulk_str(rb, inst->backend);
    reply_bulk_lit(rb, "vram_mib");
    reply_int(rb, inst->claim_mib);
    reply_bulk_lit(rb, "distributed");
    reply_bool(rb, inst->distributed);
    reply_bulk_lit(rb, "exclusive");
    reply_bool(rb, inst->exclusive);
    reply_bulk_lit(rb, "deploy_seq");
    reply_uint(rb, inst->deploy_seq);
    reply_bulk_lit(rb, "deploy_time");
    uint64_t time_ms = 0;
    if (query_deploy_time(ctx, inst->deploy_seq, &time_ms)) {
        reply_uint(rb, time_ms);
    } else {
        reply_null(rb);
    }
    query_placement(inst, rb);
}

/* ---- INSTANCE.LIST [WORKER w] [MODEL m] [BACKEND b] -------------------- */

typedef struct instance_filter {
    berth_str model;            /* len 0: any */
    berth_str backend;
} instance_filter;

static bool instance_keep(const berth_instance *inst, void *ctx) {
    const instance_filter *f = ctx;
    return (f->model.len == 0 || berth_str_eq(inst->model, f->model)) &&
           (f->backend.len == 0 || berth_str_eq(inst->backend, f->backend));
}

static int instance_name_cmp(const void *a, const void *b) {
    return berth_str_cmp((*(const berth_instance *const *)a)->name,
                         (*(const berth_instance *const *)b)->name);
}

/* INSTANCE.LIST WORKER w: the instances w serves (every instance with a
 * slot on w, once each), filtered, then sorted: a few, not the whole table. */
static size_t query_instances_on(const query_ctx *ctx, berth_str worker, instance_filter *f,
                                 const berth_instance **out) {
    const berth_worker *w = berth_state_worker(ctx->state, worker);
    size_t kept = 0;
    for (uint32_t i = 0; w != NULL && i < w->served_count; i++) {
        if (instance_keep(w->served[i], f)) {
            out[kept++] = w->served[i];
        }
    }
    if (kept > 1) {
        qsort(out, kept, sizeof *out, instance_name_cmp);   /* names are unique: total */
    }
    return kept;
}

static void query_instance_list(const query_ctx *ctx, size_t argc, const berth_str *argv,
                                reply_buf *rb) {
    berth_str filter[3] = { { NULL, 0 }, { NULL, 0 }, { NULL, 0 } };  /* worker, model, backend */
    static const char *const keys[3] = { "WORKER", "MODEL", "BACKEND" };
    for (size_t i = 1; i < argc; i += 2) {
        int k = -1;
        for (int j = 0; j < 3; j++) {
            if (berth_str_eq_word(argv[i], keys[j])) {
                k = j;
            }
        }
        if (k < 0 || i + 1 >= argc || filter[k].len > 0) {
            reply_error(rb, "ERR", "INSTANCE.LIST takes [WORKER w] [MODEL m] [BACKEND b], each once");
            return;
        }
        if (!query_name_arg(argv[i + 1], keys[k][0] == 'W' ? "worker" : keys[k][0] == 'M'
                                                                           ? "model"
                                                                           : "backend",
                            rb)) {
            return;
        }
        filter[k] = argv[i + 1];
    }
    size_t n = berth_state_instance_count(ctx->state);
    if (!query_scratch(ctx, n + 1)) {
        reply_error(rb, "ERR", "out of memory listing instances");
        return;
    }
    const berth_instance **is = (const berth_instance **)*ctx->scratch;
    instance_filter f = { filter[1], filter[2] };
    size_t kept = 0;
    if (filter[0].len > 0) {
        kept = query_instances_on(ctx, filter[0], &f, is);
    } else {
        bool all = f.model.len == 0 && f.backend.len == 0;
        kept = berth_state_instances_select(ctx->state, all ? NULL : instance_keep, &f, is, n);
    }
    assert(kept <= n);
    reply_array(rb, kept);
    for (size_t i = 0; i < kept; i++) {
        reply_bulk_str(rb, is[i]->name);
    }
}

/* ---- POLICY.GET, DIGEST ------------------------------------------------ */

static void query_policy_get(const query_ctx *ctx, size_t argc, const berth_str *argv,
                             reply_buf *rb) {
    const berth_str *backends = NULL;
    uint32_t n = berth_state_policy(ctx->state, &backends);
    assert(n == 0 || backends != NULL);
    reply_map(rb, 1);
    reply_bulk_lit(rb, "exclusive");
    reply_array(rb, n);
    for (uint32_t i = 0; i < n; i++) {
        reply_bulk_str(rb, backends[i]);
    }
    (void)argc;
    (void)argv;
}

void query_digest(const query_ctx *ctx, size_t argc, const berth_str *argv, reply_buf *rb) {
    uint8_t digest[BERTH_HASH_LEN];
    if (berth_state_digest(ctx->state, digest) != 0) {
        reply_error(rb, "ERR", "out of memory computing the digest");
        return;
    }
    char hex[2 * BERTH_HASH_LEN + 1];
    berth_hex(digest, BERTH_HASH_LEN, hex);
    reply_bulk(rb, hex, 2 * BERTH_HASH_LEN);
    (void)argc;
    (void)argv;
}

typedef struct query_entry {
    const char *name;
    size_t name_len;            /* checked before the case-insensitive compare */
    int arity;
    query_fn fn;
} query_entry;

#define QUERY_ENTRY(name, arity, fn) { name, sizeof name - 1, arity, fn }
static const query_entry queries[] = {
    QUERY_ENTRY("WORKER.GET", 2, query_worker_get),
    QUERY_ENTRY("WORKER.LIST", -1, query_worker_list),
    QUERY_ENTRY("INSTANCE.GET", 2, query_instance_get),
    QUERY_ENTRY("INSTANCE.LIST", -1, query_instance_list),
    QUERY_ENTRY("POLICY.GET", 1, query_policy_get),
    QUERY_ENTRY("DIGEST", 1, query_digest),
};
#undef QUERY_ENTRY

/* As command_lookup: the exact spelling first, then any case. */
query_fn query_lookup(berth_str name, int *arity_out) {
    const size_t n = sizeof queries / sizeof queries[0];
    for (size_t i = 0; i < n; i++) {
        if (queries[i].name_len == name.len && memcmp(name.ptr, queries[i].name, name.len) == 0) {
            *arity_out = queries[i].arity;
            return queries[i].fn;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (queries[i].name_len == name.len && berth_str_eq_word(name, queries[i].name)) {
            *arity_out = queries[i].arity;
            return queries[i].fn;
        }
    }
    return NULL;
}
