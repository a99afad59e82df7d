/* test_model.c — model-based randomized test of core/: seeded command
 * streams applied to the engine and to a deliberately naive reference model.
 *
 * Owned by the core-tests helper. The reference model below is written to be
 * obviously correct rather than fast: plain arrays indexed by a fixed pool of
 * names, every question answered by a linear scan, the rules of issue 2
 * transcribed in their documented order. After every step the outcome code
 * and the parties its sentence names must agree, and the whole engine state,
 * read only through the public query API, must equal the model's and satisfy
 * the invariants (no GPU held twice, claims within VRAM, at most one
 * exclusive holder per worker unless a policy change came after, no
 * placement on a removed worker, served lists equal to the slots). A second
 * engine takes the same stream through berth_state_apply_quiet and is
 * periodically rebuilt through the restore API, as a snapshot load would.
 *
 * Reproduce a failure with BERTH_MODEL_SEED=<seed> (and optionally
 * BERTH_MODEL_STEPS=<n>); every failure message starts with the seed. */
#include <assert.h>
#include <check.h>
#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "command.h"
#include "berth_limits.h"
#include "names.h"
#include "state.h"

enum {
    pool_workers_max = 20,       /* worker names w00..w19 */
    pool_instances_max = 48,     /* instance names i00..i47 */
    gen_gpus_max = 8,            /* GPUs per generated worker */
    gen_slots_max = 4,           /* workers per generated DEPLOY */
    gen_gpu_pick_max = 3,        /* GPUs listed per generated placement */
    gen_labels_max = 3,          /* labels per generated worker (one per key) */
    backends_max = 3,
    models_max = 4,
    steps_default = 3000,        /* per seed: all seeds together run in about a second */
    restore_every = 250,         /* steps between snapshot-style restores of the quiet engine */
    steps_env_max = 1000000,     /* bound for BERTH_MODEL_STEPS */
    key_len_max = 512,           /* the model's own canonical key of a command */
    line_len_max = 1024,         /* rendered command text */
    why_len_max = 512,
    message_len_max = 4096,
};

/* memcmp order, so the policy list reads back in this order. */
static const char *const backend_names[backends_max] = { "llama.cpp", "sglang", "vllm" };
enum { backend_vllm = 2 };
static const char *const label_keys[gen_labels_max] = { "gen", "rack", "zone" };
static const char *const label_values[] = { "a", "b", "h100" };
static const char *const model_names[models_max] = { "meta/llama-3-70b", "qwen/qwen2-72b", "mistral-7b", "tiny" };
static const uint32_t worker_vram_choices[] = { 24576, 40960, 81920 };
static const uint32_t claim_choices[] = { 4096, 12288, 20480, 36864, 40960 };

static const uint64_t fixed_seeds[] = { 1, 2, 3, 42, 1234567, 0xdeadbeefull, 0x9e3779b97f4a7c15ull, 20261126 };
enum { fixed_seed_count = sizeof fixed_seeds / sizeof fixed_seeds[0] };

/* ---- deterministic generator ------------------------------------------- */

typedef struct rng {
    uint64_t state;
} rng;

/* splitmix64: tiny, seedable with any value, good enough to pick commands. */
static uint64_t rng_next(rng *r) {
    uint64_t z = (r->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint32_t rng_below(rng *r, uint32_t n) {
    assert(n > 0);
    return (uint32_t)(rng_next(r) % n);
}

static bool rng_chance(rng *r, uint32_t percent) { return rng_below(r, 100) < percent; }

/* ---- the generated command (the model's input) ------------------------- */

typedef struct gcmd {
    berth_cmd_kind kind;
    int worker;                          /* WORKER.* */
    int instance;                        /* DEPLOY, RELEASE */
    uint32_t gpus;
    uint32_t vram;
    int label_value[gen_labels_max];     /* -1: key absent */
    int model;
    int backend;
    uint32_t claim;
    uint32_t place_count;
    int place_worker[gen_slots_max];
    bool place_all[gen_slots_max];
    uint64_t place_mask[gen_slots_max];
    uint32_t policy;                     /* bit b: backend_names[b] exclusive */
    int reqid;                           /* -1: none; else "q<reqid>" */
} gcmd;

/* ---- the reference model ----------------------------------------------- */

typedef struct mworker {
    bool present;
    uint32_t gpus;
    uint32_t vram;
    bool cordoned;
    uint64_t added_seq;
    int label_value[gen_labels_max];
} mworker;

typedef struct minst {
    bool present;
    int model;
    int backend;
    uint32_t claim;
    uint64_t seq;
    uint32_t n;
    int w[gen_slots_max];
    uint64_t mask[gen_slots_max];
} minst;

typedef struct mreq {
    int reqid;
    char name[16];                           /* "q<reqid>", as sent */
    char key[key_len_max];
    uint64_t seq;
    berth_code code;
    char sentence[BERTH_SENTENCE_LEN_MAX];   /* the engine's first answer, for retries */
} mreq;

typedef struct model {
    mworker w[pool_workers_max];
    minst in[pool_instances_max];
    uint32_t policy;
    uint64_t seq;
    uint64_t policy_seq;          /* seq of the last POLICY.SET; 0 at genesis */
    mreq *reqs;                   /* ring of BERTH_REQID_WINDOW entries, oldest at req_start */
    size_t req_start;
    size_t req_count;
} model;

/* What the model expects: the code and the parties the sentence must name. */
typedef struct facts {
    berth_code code;
    int worker;          /* -1: none */
    int instance;        /* -1: none */
    int holder;          /* EXCLUSIVE / GPUBUSY held whole: the instance named; -1: none */
    int gpu;             /* NOGPU / GPUBUSY / NOVRAM: the GPU; -1: none */
    int64_t number;      /* BUSY: count; NOVRAM: free MiB; EXCLUSIVE: holder's seq; -1: none */
    int64_t number2;     /* NOVRAM: claimed MiB; -1: none */
    uint64_t users;      /* GPUBUSY on a claimed GPU: bit per instance claiming it */
} facts;

static bool policy_has(const model *m, int backend) { return (m->policy >> backend) & 1u; }

static bool inst_exclusive(const model *m, int i) {
    return m->in[i].present && m->in[i].n > 1 && policy_has(m, m->in[i].backend);
}

static uint64_t full_mask(uint32_t gpus) { return gpus >= 64 ? UINT64_MAX : ((1ull << gpus) - 1); }

/* The slot of instance i on worker wi, or -1. */
static int slot_on(const model *m, int i, int wi) {
    if (!m->in[i].present) return -1;
    for (uint32_t k = 0; k < m->in[i].n; k++) {
        if (m->in[i].w[k] == wi) return (int)k;
    }
    return -1;
}

static bool uses_gpu(const model *m, int i, int wi, uint32_t g) {
    int k = slot_on(m, i, wi);
    return k >= 0 && (m->in[i].mask[k] >> g & 1u);
}

static int whole_holder(const model *m, int wi, uint32_t g) {
    for (int i = 0; i < pool_instances_max; i++) {
        if (m->in[i].claim == 0 && uses_gpu(m, i, wi, g)) return i;
    }
    return -1;
}

static uint32_t claimed_mib(const model *m, int wi, uint32_t g, uint32_t *count, uint64_t *users) {
    uint32_t sum = 0;
    *count = 0;
    *users = 0;
    for (int i = 0; i < pool_instances_max; i++) {
        if (m->in[i].claim > 0 && uses_gpu(m, i, wi, g)) {
            sum += m->in[i].claim;
            (*count)++;
            *users |= 1ull << i;
        }
    }
    return sum;
}

/* The earliest-deployed exclusive instance on worker wi, or -1. */
static int exclusive_holder(const model *m, int wi) {
    int best = -1;
    for (int i = 0; i < pool_instances_max; i++) {
        if (!inst_exclusive(m, i) || slot_on(m, i, wi) < 0) continue;
        if (best < 0 || m->in[i].seq < m->in[best].seq) best = i;
    }
    return best;
}

static int served_count(const model *m, int wi) {
    int n = 0;
    for (int i = 0; i < pool_instances_max; i++) n += slot_on(m, i, wi) >= 0;
    return n;
}

static facts facts_none(berth_code code) {
    facts f = { code, -1, -1, -1, -1, -1, -1, 0 };
    return f;
}

/* One placement worker, checked in the documented order. */
static facts judge_slot(const model *m, const gcmd *c, uint32_t k, bool exclusive) {
    int wi = c->place_worker[k];
    const mworker *w = &m->w[wi];
    facts f = facts_none(BERTH_OK);
    f.worker = wi;
    if (!w->present) { f.code = BERTH_NOWORKER; return f; }
    if (w->cordoned) { f.code = BERTH_CORDONED; return f; }
    uint64_t mask = c->place_all[k] ? full_mask(w->gpus) : c->place_mask[k];
    if (mask & ~full_mask(w->gpus)) {
        f.code = BERTH_NOGPU;
        for (uint32_t g = 0; g < 64; g++) {
            if ((mask >> g & 1u) && g >= w->gpus) { f.gpu = (int)g; break; }
        }
        return f;
    }
    int h = exclusive ? exclusive_holder(m, wi) : -1;
    if (h >= 0) {
        f.code = BERTH_EXCLUSIVE;
        f.holder = h;
        f.number = (int64_t)m->in[h].seq;
        return f;
    }
    for (uint32_t g = 0; g < w->gpus; g++) {
        if (!(mask >> g & 1u)) continue;
        uint32_t count;
        uint64_t users;
        claimed_mib(m, wi, g, &count, &users);
        int whole = whole_holder(m, wi, g);
        if (whole >= 0 || (c->claim == 0 && count > 0)) {
            f.code = BERTH_GPUBUSY;
            f.gpu = (int)g;
            f.holder = whole;
            f.users = whole >= 0 ? 0 : users;
            return f;
        }
    }
    /* The issue: NOVRAM is "also a claim on a worker registered without
     * VRAM", whatever GPUs it names, none included. */
    if (c->claim > 0 && w->vram == 0) { f.code = BERTH_NOVRAM; return f; }
    /* A claim is memory on a GPU: on a worker of no GPUs (named bare: all
     * of its GPUs, none) it fits nowhere, VRAM registered or not. */
    if (c->claim > 0 && w->gpus == 0) { f.code = BERTH_NOVRAM; return f; }
    if (c->claim > 0) {
        for (uint32_t g = 0; g < w->gpus; g++) {
            if (!(mask >> g & 1u)) continue;
            uint32_t count;
            uint64_t users;
            uint32_t sum = claimed_mib(m, wi, g, &count, &users);
            if ((uint64_t)sum + c->claim > w->vram) {
                f.code = BERTH_NOVRAM;
                f.gpu = (int)g;
                f.number = (int64_t)(w->vram - sum);
                f.number2 = sum;
                return f;
            }
        }
    }
    return f;
}

static facts judge(const model *m, const gcmd *c) {
    facts f = facts_none(BERTH_OK);
    switch (c->kind) {
    case BERTH_CMD_WORKER_ADD:
        f.worker = c->worker;
        if (m->w[c->worker].present) f.code = BERTH_EXISTS;
        return f;
    case BERTH_CMD_WORKER_CORDON:
    case BERTH_CMD_WORKER_UNCORDON:
        f.worker = c->worker;
        if (!m->w[c->worker].present) f.code = BERTH_NOWORKER;
        return f;
    case BERTH_CMD_WORKER_REMOVE:
        f.worker = c->worker;
        if (!m->w[c->worker].present) {
            f.code = BERTH_NOWORKER;
        } else if (served_count(m, c->worker) > 0) {
            f.code = BERTH_BUSY;
            f.number = served_count(m, c->worker);
        }
        return f;
    case BERTH_CMD_RELEASE:
        f.instance = c->instance;
        if (!m->in[c->instance].present) f.code = BERTH_NOINSTANCE;
        return f;
    case BERTH_CMD_POLICY_SET: return f;
    case BERTH_CMD_DEPLOY: {
        f.instance = c->instance;
        if (m->in[c->instance].present) {
            f.code = BERTH_EXISTS;
            return f;
        }
        bool exclusive = c->place_count > 1 && policy_has(m, c->backend);
        for (uint32_t k = 0; k < c->place_count; k++) {
            facts s = judge_slot(m, c, k, exclusive);
            if (s.code != BERTH_OK) {
                s.instance = c->instance;
                return s;
            }
        }
        return f;
    }
    default: assert(0 && "unreachable"); return f;
    }
}

/* Change the model as an OK outcome says. */
static void commit(model *m, const gcmd *c, uint64_t seq) {
    switch (c->kind) {
    case BERTH_CMD_WORKER_ADD: {
        mworker *w = &m->w[c->worker];
        w->present = true;
        w->gpus = c->gpus;
        w->vram = c->vram;
        w->cordoned = false;
        w->added_seq = seq;
        memcpy(w->label_value, c->label_value, sizeof w->label_value);
        break;
    }
    case BERTH_CMD_WORKER_CORDON: m->w[c->worker].cordoned = true; break;
    case BERTH_CMD_WORKER_UNCORDON: m->w[c->worker].cordoned = false; break;
    case BERTH_CMD_WORKER_REMOVE: m->w[c->worker].present = false; break;
    case BERTH_CMD_RELEASE: m->in[c->instance].present = false; break;
    case BERTH_CMD_POLICY_SET:
        m->policy = c->policy;
        m->policy_seq = seq;
        break;
    case BERTH_CMD_DEPLOY: {
        minst *in = &m->in[c->instance];
        in->present = true;
        in->model = c->model;
        in->backend = c->backend;
        in->claim = c->claim;
        in->seq = seq;
        in->n = c->place_count;
        for (uint32_t k = 0; k < c->place_count; k++) {
            in->w[k] = c->place_worker[k];
            in->mask[k] = c->place_all[k] ? full_mask(m->w[c->place_worker[k]].gpus) : c->place_mask[k];
        }
        break;
    }
    default: assert(0 && "unreachable");
    }
}

/* The model's own canonical key: equal exactly when two commands are the same. */
static void command_key(const gcmd *c, char *key, size_t size) {
    int n = snprintf(key, size, "%d|", (int)c->kind);
    switch (c->kind) {
    case BERTH_CMD_WORKER_ADD:
        n += snprintf(key + n, size - (size_t)n, "w%d g%u v%u", c->worker, c->gpus, c->vram);
        for (int l = 0; l < gen_labels_max; l++) n += snprintf(key + n, size - (size_t)n, " l%d", c->label_value[l]);
        break;
    case BERTH_CMD_WORKER_CORDON:
    case BERTH_CMD_WORKER_UNCORDON:
    case BERTH_CMD_WORKER_REMOVE: n += snprintf(key + n, size - (size_t)n, "w%d", c->worker); break;
    case BERTH_CMD_RELEASE: n += snprintf(key + n, size - (size_t)n, "i%d", c->instance); break;
    case BERTH_CMD_POLICY_SET: n += snprintf(key + n, size - (size_t)n, "p%u", c->policy); break;
    case BERTH_CMD_DEPLOY:
        n += snprintf(key + n, size - (size_t)n, "i%d m%d b%d c%u", c->instance, c->model, c->backend, c->claim);
        for (uint32_t k = 0; k < c->place_count; k++) {
            n += snprintf(key + n, size - (size_t)n, " w%d:%s%" PRIx64, c->place_worker[k], c->place_all[k] ? "all" : "",
                          c->place_all[k] ? 0 : c->place_mask[k]);
        }
        break;
    default: assert(0 && "unreachable");
    }
    assert(n > 0 && (size_t)n < size);
}

static const mreq *model_reqid_find(const model *m, int reqid) {
    for (size_t k = 0; k < m->req_count; k++) {
        const mreq *e = &m->reqs[(m->req_start + k) % BERTH_REQID_WINDOW];
        if (e->reqid == reqid) return e;
    }
    return NULL;
}

static void model_reqid_remember(model *m, int reqid, const char *key, uint64_t seq, berth_code code,
                                 const char *sentence) {
    if (m->req_count == BERTH_REQID_WINDOW) {
        m->req_start = (m->req_start + 1) % BERTH_REQID_WINDOW;
        m->req_count--;
    }
    mreq *e = &m->reqs[(m->req_start + m->req_count) % BERTH_REQID_WINDOW];
    m->req_count++;
    e->reqid = reqid;
    snprintf(e->name, sizeof e->name, "q%05d", reqid);
    snprintf(e->key, sizeof e->key, "%s", key);
    e->seq = seq;
    e->code = code;
    snprintf(e->sentence, sizeof e->sentence, "%s", sentence);
}

/* ---- one run: a seed, an engine, a model ------------------------------- */

typedef struct run {
    uint64_t seed;
    int step;
    rng rng;
    model m;
    berth_state *state;
    berth_state *quiet;         /* the same stream through berth_state_apply_quiet */
    gcmd *history;              /* commands that carried a REQID, for retries */
    size_t history_count;
    size_t history_cap;
    int next_reqid;
    char line[line_len_max];
    char canonical[BERTH_COMMAND_LEN_MAX + 1];
    uint64_t seen[BERTH_CODE_COUNT];
    uint64_t retries;
    uint64_t conflicts;
} run;

static void failf(const run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void failf(const run *r, const char *fmt, ...) {
    char msg[message_len_max];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "model: seed %" PRIu64 " step %d command '%s': %s\n", r->seed, r->step, r->line, msg);
    ck_abort_msg("seed %" PRIu64 " (BERTH_MODEL_SEED=%" PRIu64 ") step %d command '%s': %s", r->seed, r->seed,
                 r->step, r->line, msg);
}

/* Two digits each: no name is a prefix of another, so sentences can be searched. */
static void worker_name(int wi, char *buf, size_t size) {
    assert(wi >= 0 && wi < pool_workers_max && size >= 4);
    buf[0] = 'w';
    buf[1] = (char)('0' + wi / 10);
    buf[2] = (char)('0' + wi % 10);
    buf[3] = '\0';
}

static void instance_name(int i, char *buf, size_t size) {
    assert(i >= 0 && i < pool_instances_max && size >= 4);
    buf[0] = 'i';
    buf[1] = (char)('0' + i / 10);
    buf[2] = (char)('0' + i % 10);
    buf[3] = '\0';
}

static berth_str cstr(const char *c) { return berth_str_make(c, strlen(c)); }

static bool str_is(berth_str s, const char *c) { return berth_str_eq(s, cstr(c)); }

/* ---- generation ----------------------------------------------------------- */

/* Usually a registered worker (for DEPLOY: usually an active one), else any name. */
static int pick_worker(run *r, uint32_t present_percent, bool prefer_active) {
    if (rng_chance(&r->rng, present_percent)) {
        bool active_only = prefer_active && rng_chance(&r->rng, 85);
        int present[pool_workers_max];
        int n = 0;
        for (int wi = 0; wi < pool_workers_max; wi++) {
            if (r->m.w[wi].present && !(active_only && r->m.w[wi].cordoned)) present[n++] = wi;
        }
        if (n > 0) return present[rng_below(&r->rng, (uint32_t)n)];
    }
    return (int)rng_below(&r->rng, pool_workers_max);
}

static int pick_instance(run *r, bool want_present) {
    int pool[pool_instances_max];
    int n = 0;
    for (int i = 0; i < pool_instances_max; i++) {
        if (r->m.in[i].present == want_present) pool[n++] = i;
    }
    if (n == 0) return (int)rng_below(&r->rng, pool_instances_max);
    return pool[rng_below(&r->rng, (uint32_t)n)];
}

static void gen_worker_add(run *r, gcmd *c) {
    c->worker = pick_worker(r, 15, false);
    c->gpus = rng_chance(&r->rng, 10) ? 0 : 1 + rng_below(&r->rng, gen_gpus_max);
    c->vram = rng_chance(&r->rng, 40) ? 0 : worker_vram_choices[rng_below(&r->rng, 3)];
    for (int l = 0; l < gen_labels_max; l++) {
        c->label_value[l] = rng_chance(&r->rng, 40) ? (int)rng_below(&r->rng, 3) : -1;
    }
}

/* GPUs for one placement: usually free ones, sometimes busy or beyond the count. */
static void gen_place(run *r, gcmd *c, uint32_t k) {
    int wi = c->place_worker[k];
    const mworker *w = &r->m.w[wi];
    c->place_all[k] = rng_chance(&r->rng, c->place_count > 1 ? 8 : 20);
    c->place_mask[k] = 0;
    if (c->place_all[k]) return;
    uint32_t span = w->present && w->gpus > 0 ? w->gpus : 2;
    uint32_t want = 1 + rng_below(&r->rng, gen_gpu_pick_max);
    for (uint32_t tries = 0; tries < 4 * gen_gpu_pick_max && want > 0; tries++) {
        uint32_t g = rng_chance(&r->rng, 2) ? span + rng_below(&r->rng, 3) : rng_below(&r->rng, span);
        if (rng_chance(&r->rng, 1)) g = 63;
        bool free_gpu = w->present && g < w->gpus && whole_holder(&r->m, wi, g) < 0;
        if (!free_gpu && rng_chance(&r->rng, 60)) continue;   /* prefer free GPUs */
        if (c->place_mask[k] >> g & 1u) continue;
        c->place_mask[k] |= 1ull << g;
        want--;
    }
    if (c->place_mask[k] == 0) c->place_mask[k] = 1;
}

static void gen_deploy(run *r, gcmd *c) {
    c->instance = pick_instance(r, rng_chance(&r->rng, 8));
    c->model = (int)rng_below(&r->rng, models_max);
    uint32_t b = rng_below(&r->rng, 10);
    c->backend = b < 5 ? backend_vllm : (b < 8 ? 1 : 0);
    c->claim = rng_chance(&r->rng, 60) ? 0 : claim_choices[rng_below(&r->rng, 5)];
    c->place_count = rng_chance(&r->rng, 50) ? 1 : 2 + rng_below(&r->rng, gen_slots_max - 1);
    for (uint32_t k = 0; k < c->place_count; k++) {
        int wi;
        bool dup;
        do {
            wi = pick_worker(r, 95, true);
            dup = false;
            for (uint32_t j = 0; j < k; j++) dup = dup || c->place_worker[j] == wi;
        } while (dup);
        c->place_worker[k] = wi;
        gen_place(r, c, k);
    }
}

static void gen_fresh(run *r, gcmd *c) {
    memset(c, 0, sizeof *c);
    c->reqid = -1;
    c->worker = c->instance = -1;
    for (int l = 0; l < gen_labels_max; l++) c->label_value[l] = -1;
    uint32_t roll = rng_below(&r->rng, 100);
    if (roll < 8) {
        c->kind = BERTH_CMD_WORKER_ADD;
        gen_worker_add(r, c);
    } else if (roll < 11) {
        c->kind = BERTH_CMD_WORKER_CORDON;
        c->worker = pick_worker(r, 85, false);
    } else if (roll < 17) {
        c->kind = BERTH_CMD_WORKER_UNCORDON;
        c->worker = pick_worker(r, 85, false);
    } else if (roll < 20) {
        c->kind = BERTH_CMD_WORKER_REMOVE;
        c->worker = pick_worker(r, 85, false);
    } else if (roll < 82) {
        c->kind = BERTH_CMD_DEPLOY;
        gen_deploy(r, c);
    } else if (roll < 97) {
        c->kind = BERTH_CMD_RELEASE;
        c->instance = pick_instance(r, rng_chance(&r->rng, 85));
    } else {
        c->kind = BERTH_CMD_POLICY_SET;
        c->policy = rng_chance(&r->rng, 40) ? 1u << backend_vllm : 1 + rng_below(&r->rng, 7);
    }
}

/* A fresh command, a retry of an earlier one, or an earlier id on a new command. */
static void gen_command(run *r, gcmd *c) {
    uint32_t roll = rng_below(&r->rng, 100);
    if (roll < 4 && r->history_count > 0) {
        *c = r->history[rng_below(&r->rng, (uint32_t)r->history_count)];
        return;
    }
    gen_fresh(r, c);
    if (roll < 6 && r->history_count > 0) {
        c->reqid = r->history[rng_below(&r->rng, (uint32_t)r->history_count)].reqid;
    } else if (roll < 20) {
        c->reqid = r->next_reqid++;
    }
}

/* ---- rendering: many spellings of one command ---------------------------- */

typedef struct text {
    char *buf;
    size_t len;
} text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->buf + t->len, line_len_max - t->len, fmt, ap);
    va_end(ap);
    assert(n >= 0 && (size_t)n < line_len_max - t->len);
    t->len += (size_t)n;
}

/* A keyword in upper, lower or mixed case: keywords are case-insensitive. */
static void put_keyword(run *r, text *t, const char *kw) {
    uint32_t style = rng_below(&r->rng, 3);
    char word[32];
    size_t n = strlen(kw);
    assert(n < sizeof word);
    for (size_t i = 0; i <= n; i++) {
        char ch = kw[i];
        bool lower = style == 1 || (style == 2 && i > 0);
        word[i] = lower ? (char)tolower((unsigned char)ch) : ch;
    }
    put(t, " %s", word);
}

static void shuffle(run *r, int *a, int n) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rng_below(&r->rng, (uint32_t)i + 1);
        int tmp = a[i];
        a[i] = a[j];
        a[j] = tmp;
    }
}

static void render_worker_add(run *r, const gcmd *c, text *t) {
    put(t, " w%02d", c->worker);
    int order[3] = { 0, 1, 2 };   /* GPUS, VRAM, labels */
    shuffle(r, order, 3);
    for (int o = 0; o < 3; o++) {
        if (order[o] == 0) {
            put_keyword(r, t, "GPUS");
            put(t, " %u", c->gpus);
        } else if (order[o] == 1 && c->vram) {
            put_keyword(r, t, "VRAM");
            put(t, " %u", c->vram);
        } else if (order[o] == 2) {
            int keys[gen_labels_max] = { 0, 1, 2 };
            shuffle(r, keys, gen_labels_max);
            bool one_keyword = rng_chance(&r->rng, 50);
            bool opened = false;
            for (int k = 0; k < gen_labels_max; k++) {
                int l = keys[k];
                if (c->label_value[l] < 0) continue;
                if (!one_keyword || !opened) put_keyword(r, t, "LABEL");
                opened = true;
                put(t, " %s=%s", label_keys[l], label_values[c->label_value[l]]);
            }
        }
    }
}

static void render_deploy(run *r, const gcmd *c, text *t) {
    put(t, " i%02d", c->instance);
    int order[3] = { 0, 1, 2 };   /* MODEL, BACKEND, VRAM */
    shuffle(r, order, 3);
    for (int o = 0; o < 3; o++) {
        if (order[o] == 0) {
            put_keyword(r, t, "MODEL");
            put(t, " %s", model_names[c->model]);
        } else if (order[o] == 1) {
            put_keyword(r, t, "BACKEND");
            put(t, " %s", backend_names[c->backend]);
        } else if (c->claim) {
            put_keyword(r, t, "VRAM");
            put(t, " %u", c->claim);
        }
    }
    put_keyword(r, t, "ON");
    for (uint32_t k = 0; k < c->place_count; k++) {
        put(t, " w%02d", c->place_worker[k]);
        if (c->place_all[k]) continue;
        int gpus[64];
        int n = 0;
        for (int g = 0; g < 64; g++) {
            if (c->place_mask[k] >> g & 1u) gpus[n++] = g;
        }
        shuffle(r, gpus, n);
        for (int i = 0; i < n; i++) put(t, "%c%d", i ? ',' : ':', gpus[i]);
    }
}

static void render(run *r, const gcmd *c) {
    text t = { r->line, 0 };
    r->line[0] = '\0';
    put_keyword(r, &t, berth_cmd_kind_name(c->kind));
    switch (c->kind) {
    case BERTH_CMD_WORKER_ADD: render_worker_add(r, c, &t); break;
    case BERTH_CMD_WORKER_CORDON:
    case BERTH_CMD_WORKER_UNCORDON:
    case BERTH_CMD_WORKER_REMOVE: put(&t, " w%02d", c->worker); break;
    case BERTH_CMD_RELEASE: put(&t, " i%02d", c->instance); break;
    case BERTH_CMD_DEPLOY: render_deploy(r, c, &t); break;
    case BERTH_CMD_POLICY_SET: {
        put_keyword(r, &t, "EXCLUSIVE");
        int order[backends_max] = { 0, 1, 2 };
        shuffle(r, order, backends_max);
        bool first = true;
        for (int k = 0; k < backends_max; k++) {
            if (!(c->policy >> order[k] & 1u)) continue;
            put(&t, "%s%s", first ? " " : ",", backend_names[order[k]]);
            first = false;
        }
        break;
    }
    default: assert(0 && "unreachable");
    }
    if (c->reqid >= 0) {
        put_keyword(r, &t, "REQID");
        put(&t, " q%05d", c->reqid);
    }
    memmove(r->line, r->line + 1, t.len);   /* drop the leading space */
}

/* ---- comparing sentences ------------------------------------------------- */

static bool is_word_byte(char ch) { return isalnum((unsigned char)ch) || ch == '_'; }

static bool has_word(const char *sentence, const char *word) {
    size_t n = strlen(word);
    for (const char *at = strstr(sentence, word); at; at = strstr(at + 1, word)) {
        if ((at == sentence || !is_word_byte(at[-1])) && !is_word_byte(at[n])) return true;
    }
    return false;
}

static void expect_word(const run *r, const char *sentence, const char *word, const char *role) {
    if (!has_word(sentence, word)) failf(r, "sentence '%s' does not name the %s '%s'", sentence, role, word);
}

static void expect_number(const run *r, const char *sentence, int64_t v, const char *role) {
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, v);
    expect_word(r, sentence, buf, role);
}

/* The parties the model says the sentence must name. */
static void check_sentence(const run *r, const facts *f, const char *sentence) {
    char name[16];
    if (f->code != BERTH_OK && f->worker >= 0) {
        worker_name(f->worker, name, sizeof name);
        expect_word(r, sentence, name, "worker");
    }
    if ((f->code == BERTH_EXISTS || f->code == BERTH_NOINSTANCE) && f->instance >= 0) {
        instance_name(f->instance, name, sizeof name);
        expect_word(r, sentence, name, "instance");
    }
    if (f->code != BERTH_OK && f->holder >= 0) {
        instance_name(f->holder, name, sizeof name);
        expect_word(r, sentence, name, "holder");
    }
    if (f->code != BERTH_OK && f->gpu >= 0) expect_number(r, sentence, f->gpu, "GPU");
    if (f->code != BERTH_OK && f->number >= 0) expect_number(r, sentence, f->number, "figure");
    if (f->code != BERTH_OK && f->number2 >= 0) expect_number(r, sentence, f->number2, "claimed MiB");
    for (int i = 0; i < pool_instances_max; i++) {
        if (!(f->users >> i & 1u)) continue;
        instance_name(i, name, sizeof name);
        expect_word(r, sentence, name, "GPU user");
    }
}

/* ---- comparing states ---------------------------------------------------- */

/* The model's GPU occupancy, tallied once per comparison by one pass over
 * the instances (the judge asks the same questions by linear scans). */
typedef struct occupancy {
    int whole[pool_workers_max][gen_gpus_max];
    uint32_t sum[pool_workers_max][gen_gpus_max];
    uint32_t count[pool_workers_max][gen_gpus_max];
} occupancy;

static void tally(const model *m, occupancy *o) {
    memset(o->sum, 0, sizeof o->sum);
    memset(o->count, 0, sizeof o->count);
    for (int wi = 0; wi < pool_workers_max; wi++) {
        for (int g = 0; g < gen_gpus_max; g++) o->whole[wi][g] = -1;
    }
    for (int i = 0; i < pool_instances_max; i++) {
        const minst *in = &m->in[i];
        if (!in->present) continue;
        for (uint32_t k = 0; k < in->n; k++) {
            for (uint32_t g = 0; g < gen_gpus_max; g++) {
                if (!(in->mask[k] >> g & 1u)) continue;
                if (in->claim == 0) o->whole[in->w[k]][g] = i;
                else o->sum[in->w[k]][g] += in->claim, o->count[in->w[k]][g]++;
            }
        }
    }
}

static void compare_worker(const run *r, const occupancy *o, int wi, const berth_worker *w) {
    const model *m = &r->m;
    const mworker *mw = &m->w[wi];
    if (w->gpu_count != mw->gpus || w->vram_mib != mw->vram) {
        failf(r, "worker w%02d: gpus/vram %u/%u, model %u/%u", wi, w->gpu_count, w->vram_mib, mw->gpus, mw->vram);
    }
    if ((w->status == BERTH_WORKER_CORDONED) != mw->cordoned) failf(r, "worker w%02d: cordon differs", wi);
    if (w->added_seq != mw->added_seq) failf(r, "worker w%02d: added_seq %" PRIu64 ", model %" PRIu64, wi, w->added_seq, mw->added_seq);
    uint32_t li = 0;
    for (int l = 0; l < gen_labels_max; l++) {
        if (mw->label_value[l] < 0) continue;
        if (li >= w->label_count || !str_is(w->labels[li].key, label_keys[l]) ||
            !str_is(w->labels[li].value, label_values[mw->label_value[l]])) {
            failf(r, "worker w%02d: label %u differs from model", wi, li);
        }
        li++;
    }
    if (li != w->label_count) failf(r, "worker w%02d: %u labels, model %u", wi, w->label_count, li);
    uint64_t free_mask = 0;
    for (uint32_t g = 0; g < mw->gpus; g++) {
        uint32_t count = o->count[wi][g];
        uint32_t sum = o->sum[wi][g];
        int whole = o->whole[wi][g];
        const berth_gpu *gpu = &w->gpus[g];
        char name[16];
        if (whole >= 0) instance_name(whole, name, sizeof name);
        if ((whole < 0) != (gpu->whole_holder == NULL) || (whole >= 0 && !str_is(gpu->whole_holder->name, name))) {
            failf(r, "GPU w%02d:%u: whole holder differs from model (i%02d)", wi, g, whole);
        }
        if (gpu->claimed_mib != sum || gpu->claim_count != count) {
            failf(r, "GPU w%02d:%u: claimed %u MiB by %u, model %u by %u", wi, g, gpu->claimed_mib, gpu->claim_count, sum, count);
        }
        if (whole < 0 && count == 0) free_mask |= 1ull << g;
    }
    if (berth_worker_free_gpu_mask(w) != free_mask) failf(r, "worker w%02d: free mask differs", wi);
    /* served: the model's instances on this worker in deploy-seq order */
    uint32_t k = 0;
    uint64_t last_seq = 0;
    for (;;) {
        int next = -1;
        for (int i = 0; i < pool_instances_max; i++) {
            if (slot_on(m, i, wi) < 0 || m->in[i].seq <= last_seq) continue;
            if (next < 0 || m->in[i].seq < m->in[next].seq) next = i;
        }
        if (next < 0) break;
        char name[16];
        instance_name(next, name, sizeof name);
        if (k >= w->served_count || !str_is(w->served[k]->name, name)) {
            failf(r, "worker w%02d: served[%u] is not %s", wi, k, name);
        }
        last_seq = m->in[next].seq;
        k++;
    }
    if (k != w->served_count) failf(r, "worker w%02d: serves %u, model %u", wi, w->served_count, k);
    int h = exclusive_holder(m, wi);
    const berth_instance *eh = berth_worker_exclusive_holder(w);
    char name[16];
    if (h >= 0) instance_name(h, name, sizeof name);
    if ((h < 0) != (eh == NULL) || (h >= 0 && !str_is(eh->name, name))) {
        failf(r, "worker w%02d: exclusive holder differs from model (i%02d)", wi, h);
    }
}

static void compare_instance(const run *r, int i, const berth_instance *in) {
    const minst *mi = &r->m.in[i];
    if (!str_is(in->model, model_names[mi->model]) || !str_is(in->backend, backend_names[mi->backend])) {
        failf(r, "instance i%02d: model/backend differ", i);
    }
    if (in->claim_mib != mi->claim || in->deploy_seq != mi->seq) failf(r, "instance i%02d: claim/seq differ", i);
    if (in->distributed != (mi->n > 1)) failf(r, "instance i%02d: distributed flag differs", i);
    if (in->exclusive != inst_exclusive(&r->m, i)) failf(r, "instance i%02d: exclusive flag differs", i);
    if (in->slot_count != mi->n) failf(r, "instance i%02d: %u slots, model %u", i, in->slot_count, mi->n);
    for (uint32_t k = 0; k < mi->n; k++) {
        char name[16];
        worker_name(mi->w[k], name, sizeof name);
        if (!str_is(in->slots[k].worker->name, name) || in->slots[k].gpu_mask != mi->mask[k]) {
            failf(r, "instance i%02d: slot %u differs from model (%s %" PRIx64 ")", i, k, name, mi->mask[k]);
        }
    }
}

/* Invariants read from the engine alone, independent of the model. */
static void engine_invariants(const run *r, const berth_state *s) {
    size_t ni = berth_state_instance_count(s);
    size_t nw = berth_state_worker_count(s);
    const berth_instance *is[pool_instances_max];
    const berth_worker *ws[pool_workers_max];
    if (ni > pool_instances_max || nw > pool_workers_max) failf(r, "more instances or workers than names");
    if (berth_state_instances_sorted(s, is, ni) != ni || berth_state_workers_sorted(s, ws, nw) != nw) {
        failf(r, "sorted listings are short");
    }
    for (size_t a = 1; a < nw; a++) {
        if (berth_str_cmp(ws[a - 1]->name, ws[a]->name) >= 0) failf(r, "workers not sorted");
    }
    for (size_t a = 1; a < ni; a++) {
        if (berth_str_cmp(is[a - 1]->name, is[a]->name) >= 0) failf(r, "instances not sorted");
    }
    for (size_t a = 0; a < ni; a++) {
        for (uint32_t k = 0; k < is[a]->slot_count; k++) {
            const berth_worker *w = is[a]->slots[k].worker;
            if (berth_state_worker(s, w->name) != w) failf(r, "instance placed on a removed worker");
        }
    }
    for (size_t b = 0; b < nw; b++) {
        const berth_worker *w = ws[b];
        for (uint32_t g = 0; g < w->gpu_count; g++) {
            uint32_t whole = 0, claims = 0;
            uint64_t sum = 0;
            for (size_t a = 0; a < ni; a++) {
                for (uint32_t k = 0; k < is[a]->slot_count; k++) {
                    if (is[a]->slots[k].worker != w || !(is[a]->slots[k].gpu_mask >> g & 1u)) continue;
                    if (is[a]->claim_mib == 0) whole++;
                    else claims++, sum += is[a]->claim_mib;
                }
            }
            if (whole > 1) failf(r, "GPU %.*s:%u held whole %u times", (int)w->name.len, w->name.ptr, g, whole);
            if (whole && claims) failf(r, "GPU %.*s:%u held whole and claimed", (int)w->name.len, w->name.ptr, g);
            if (sum > w->vram_mib && claims) failf(r, "GPU %.*s:%u claims exceed VRAM", (int)w->name.len, w->name.ptr, g);
        }
        /* at most one exclusive holder, unless a policy change came after both deploys */
        for (uint32_t x = 0; x < w->served_count; x++) {
            for (uint32_t y = x + 1; y < w->served_count; y++) {
                const berth_instance *p = w->served[x], *q = w->served[y];
                if (!p->exclusive || !q->exclusive) continue;
                uint64_t later = p->deploy_seq > q->deploy_seq ? p->deploy_seq : q->deploy_seq;
                if (r->m.policy_seq <= later) {
                    failf(r, "worker %.*s has two exclusive holders %.*s and %.*s with no policy change after",
                          (int)w->name.len, w->name.ptr, (int)p->name.len, p->name.ptr, (int)q->name.len, q->name.ptr);
                }
            }
        }
        uint32_t served = 0;
        for (size_t a = 0; a < ni; a++) {
            for (uint32_t k = 0; k < is[a]->slot_count; k++) served += is[a]->slots[k].worker == w;
        }
        if (served != w->served_count) failf(r, "worker %.*s: served list does not match the slots", (int)w->name.len, w->name.ptr);
    }
}

static void compare_state(const run *r, const berth_state *s) {
    const model *m = &r->m;
    char why[why_len_max] = "";
    if (!berth_state_check(s, why, sizeof why)) failf(r, "berth_state_check: %s", why);
    if (berth_state_last_seq(s) != m->seq) failf(r, "last_seq %" PRIu64 ", model %" PRIu64, berth_state_last_seq(s), m->seq);
    size_t present = 0;
    char name[16];
    occupancy occ;
    tally(m, &occ);
    for (int wi = 0; wi < pool_workers_max; wi++) {
        worker_name(wi, name, sizeof name);
        const berth_worker *w = berth_state_worker(s, cstr(name));
        if (!m->w[wi].present) {
            if (w) failf(r, "worker %s present, model says removed", name);
            continue;
        }
        present++;
        if (!w) failf(r, "worker %s missing", name);
        compare_worker(r, &occ, wi, w);
    }
    if (berth_state_worker_count(s) != present) failf(r, "worker count differs");
    present = 0;
    for (int i = 0; i < pool_instances_max; i++) {
        instance_name(i, name, sizeof name);
        const berth_instance *in = berth_state_instance(s, cstr(name));
        if (!m->in[i].present) {
            if (in) failf(r, "instance %s present, model says gone", name);
            continue;
        }
        present++;
        if (!in) failf(r, "instance %s missing", name);
        compare_instance(r, i, in);
    }
    if (berth_state_instance_count(s) != present) failf(r, "instance count differs");
    const berth_str *pol = NULL;
    uint32_t np = berth_state_policy(s, &pol);
    uint32_t k = 0;
    for (int b = 0; b < backends_max; b++) {
        if (!policy_has(m, b)) continue;
        if (k >= np || !str_is(pol[k], backend_names[b])) failf(r, "policy differs at %u", k);
        k++;
        if (!berth_state_backend_exclusive(s, cstr(backend_names[b]))) failf(r, "%s not exclusive", backend_names[b]);
    }
    if (k != np) failf(r, "policy has %u backends, model %u", np, k);
    if (berth_state_reqid_count(s) != m->req_count) failf(r, "reqid window %zu, model %zu", berth_state_reqid_count(s), m->req_count);
    for (size_t e = 0; e < m->req_count; e++) {
        const mreq *mr = &m->reqs[(m->req_start + e) % BERTH_REQID_WINDOW];
        berth_reqid_entry got;
        berth_state_reqid_at(s, e, &got);
        if (!str_is(got.reqid, mr->name) || got.seq != mr->seq || got.code != mr->code) {
            failf(r, "reqid window entry %zu differs from model (%s)", e, mr->name);
        }
    }
    engine_invariants(r, s);
}

/* ---- what the outcome says it touched ------------------------------------ */

static void expect_touched_worker(const run *r, const berth_outcome *out, uint32_t k, int wi) {
    char name[16];
    worker_name(wi, name, sizeof name);
    if (k >= out->worker_count || !str_is(out->workers[k], name)) {
        failf(r, "outcome's worker %u is not %s", k, name);
    }
}

/* The names an outcome reports (for replies and the history index). */
static void check_touched(const run *r, const gcmd *c, const berth_outcome *out) {
    char name[16];
    switch (c->kind) {
    case BERTH_CMD_WORKER_ADD:
    case BERTH_CMD_WORKER_CORDON:
    case BERTH_CMD_WORKER_UNCORDON:
    case BERTH_CMD_WORKER_REMOVE:
        expect_touched_worker(r, out, 0, c->worker);
        if (out->worker_count != 1) failf(r, "a worker command touched %u workers", out->worker_count);
        break;
    case BERTH_CMD_DEPLOY:
    case BERTH_CMD_RELEASE:
        instance_name(c->instance, name, sizeof name);
        if (!str_is(out->instance, name)) failf(r, "outcome's instance is not %s", name);
        if (out->code != BERTH_OK) break;
        if (c->kind == BERTH_CMD_DEPLOY) {
            for (uint32_t k = 0; k < c->place_count; k++) expect_touched_worker(r, out, k, c->place_worker[k]);
            if (out->worker_count != c->place_count) failf(r, "DEPLOY touched %u workers", out->worker_count);
        } else {
            const minst *in = &r->m.in[c->instance];   /* still the model before commit */
            for (uint32_t k = 0; k < in->n; k++) expect_touched_worker(r, out, k, in->w[k]);
            if (out->worker_count != in->n) failf(r, "RELEASE touched %u workers", out->worker_count);
        }
        break;
    default: break;
    }
}

/* berth_state_apply_quiet must do exactly what apply did, minus the
 * sentence when the command has no REQID. */
static void check_quiet(const run *r, const berth_cmd *cmd, berth_str canon, uint64_t seq, const berth_outcome *loud) {
    berth_outcome out;
    if (berth_state_apply_quiet(r->quiet, cmd, canon, seq, &out) != 0) failf(r, "apply_quiet failed");
    if (out.code != loud->code) failf(r, "apply_quiet says %s, apply %s", berth_code_name(out.code), berth_code_name(loud->code));
    if (!berth_str_eq(out.instance, loud->instance) || out.worker_count != loud->worker_count) {
        failf(r, "apply_quiet touched other names");
    }
    for (uint32_t k = 0; k < out.worker_count; k++) {
        if (!berth_str_eq(out.workers[k], loud->workers[k])) failf(r, "apply_quiet touched other workers");
    }
    bool want_sentence = cmd->reqid.len > 0;
    if (want_sentence ? strcmp(out.sentence, loud->sentence) != 0 : out.sentence_len != 0) {
        failf(r, "apply_quiet sentence '%s' (len %u)", out.sentence, out.sentence_len);
    }
}

/* ---- the step ------------------------------------------------------------ */

static berth_str words_buf[BERTH_ARGS_MAX];

/* Handle a REQID before applying; returns true when the command is applied. */
static bool reqid_gate(run *r, const gcmd *c, const berth_cmd *cmd, berth_str canon, const char *key) {
    const mreq *e = model_reqid_find(&r->m, c->reqid);
    berth_reqid_status want = !e ? BERTH_REQID_NEW : (strcmp(e->key, key) == 0 ? BERTH_REQID_RETRY : BERTH_REQID_CONFLICT);
    berth_reqid_entry hit;
    memset(&hit, 0, sizeof hit);
    berth_reqid_status got = berth_state_reqid_check(r->state, cmd->reqid, canon, &hit);
    if (got != want) failf(r, "reqid status %d, model %d", (int)got, (int)want);
    berth_reqid_entry quiet_hit;
    memset(&quiet_hit, 0, sizeof quiet_hit);
    if (berth_state_reqid_check(r->quiet, cmd->reqid, canon, &quiet_hit) != got) failf(r, "quiet state's reqid status differs");
    if (want == BERTH_REQID_NEW) return true;
    if (hit.seq != e->seq) failf(r, "reqid hit seq %" PRIu64 ", model %" PRIu64, hit.seq, e->seq);
    if (quiet_hit.seq != hit.seq || quiet_hit.code != hit.code || !berth_str_eq(quiet_hit.sentence, hit.sentence)) {
        failf(r, "quiet state's reqid entry differs");
    }
    if (want == BERTH_REQID_RETRY) {
        if (hit.code != e->code || !berth_str_eq(hit.sentence, cstr(e->sentence))) {
            failf(r, "retry answered %s '%.*s', first outcome %s '%s'", berth_code_name(hit.code), (int)hit.sentence.len,
                  hit.sentence.ptr, berth_code_name(e->code), e->sentence);
        }
        r->retries++;
    } else {
        r->conflicts++;
    }
    return false;
}

static void remember_history(run *r, const gcmd *c) {
    if (r->history_count < r->history_cap) r->history[r->history_count++] = *c;
}

static void step(run *r, berth_cmd *cmd) {
    gcmd c;
    gen_command(r, &c);
    render(r, &c);
    char err[BERTH_ERR_LEN_MAX];
    size_t len = strlen(r->line);
    char *copy = r->canonical;
    char text_copy[line_len_max];
    memcpy(text_copy, r->line, len + 1);
    size_t nw = berth_cmd_split(text_copy, len, words_buf, BERTH_ARGS_MAX);
    if (nw == 0 || berth_cmd_parse(cmd, nw, words_buf, err, sizeof err) != 0) failf(r, "does not parse: %s", err);
    size_t clen = berth_cmd_canonical(cmd, copy, BERTH_COMMAND_LEN_MAX);
    if (clen == 0) failf(r, "no canonical text");
    copy[clen] = '\0';
    berth_str canon = berth_str_make(copy, clen);
    char key[key_len_max];
    command_key(&c, key, sizeof key);
    if (c.reqid >= 0 && !reqid_gate(r, &c, cmd, canon, key)) {
        compare_state(r, r->state);
        return;
    }
    facts want = judge(&r->m, &c);
    berth_outcome out;
    uint64_t seq = r->m.seq + 1;
    if (berth_state_apply(r->state, cmd, canon, seq, &out) != 0) failf(r, "apply failed with the libc allocator");
    check_touched(r, &c, &out);
    check_quiet(r, cmd, canon, seq, &out);
    if (out.code != want.code) {
        failf(r, "engine says %s '%s', model says %s", berth_code_name(out.code), out.sentence, berth_code_name(want.code));
    }
    if (strlen(out.sentence) != out.sentence_len || out.sentence_len == 0) failf(r, "bad sentence length");
    check_sentence(r, &want, out.sentence);
    r->seen[out.code]++;
    r->m.seq = seq;
    if (want.code == BERTH_OK) commit(&r->m, &c, seq);
    if (c.reqid >= 0) {
        model_reqid_remember(&r->m, c.reqid, key, seq, out.code, out.sentence);
        remember_history(r, &c);
    }
    compare_state(r, r->state);
    compare_state(r, r->quiet);
}

/* Rebuild a state through the restore API (what a snapshot load does) from
 * everything the query API says about src. */
static berth_state *clone_by_restore(const run *r, const berth_state *src) {
    berth_state *dst = berth_state_new(NULL);
    if (!dst) failf(r, "berth_state_new failed");
    const berth_str *pol = NULL;
    uint32_t np = berth_state_policy(src, &pol);
    if (berth_state_restore_policy(dst, pol, np) != 0) failf(r, "restore_policy refused");
    const berth_worker *ws[pool_workers_max];
    size_t nw = berth_state_workers_sorted(src, ws, pool_workers_max);
    for (size_t i = 0; i < nw; i++) {
        const berth_worker *w = ws[i];
        if (berth_state_restore_worker(dst, w->name, w->gpu_count, w->vram_mib, w->status, w->added_seq, w->labels,
                                       w->label_count) != 0) {
            failf(r, "restore_worker %.*s refused", (int)w->name.len, w->name.ptr);
        }
    }
    const berth_instance *is[pool_instances_max];
    size_t ni = berth_state_instances_sorted(src, is, pool_instances_max);
    /* deploy-seq order, by selection: the restore contract's order */
    for (size_t a = 0; a < ni; a++) {
        for (size_t b = a + 1; b < ni; b++) {
            if (is[b]->deploy_seq < is[a]->deploy_seq) {
                const berth_instance *t = is[a];
                is[a] = is[b];
                is[b] = t;
            }
        }
    }
    for (size_t a = 0; a < ni; a++) {
        const berth_instance *in = is[a];
        berth_str names[gen_slots_max];
        uint64_t masks[gen_slots_max];
        if (in->slot_count > gen_slots_max) failf(r, "instance with %u slots", in->slot_count);
        for (uint32_t k = 0; k < in->slot_count; k++) {
            names[k] = in->slots[k].worker->name;
            masks[k] = in->slots[k].gpu_mask;
        }
        if (berth_state_restore_instance(dst, in->name, in->model, in->backend, in->claim_mib, in->deploy_seq, names,
                                         masks, in->slot_count) != 0) {
            failf(r, "restore_instance %.*s refused", (int)in->name.len, in->name.ptr);
        }
    }
    size_t nr = berth_state_reqid_count(src);
    for (size_t i = 0; i < nr; i++) {
        berth_reqid_entry e;
        berth_state_reqid_at(src, i, &e);
        if (berth_state_restore_reqid(dst, &e) != 0) failf(r, "restore_reqid %zu refused", i);
    }
    berth_state_set_last_seq(dst, berth_state_last_seq(src));
    return dst;
}

static uint64_t env_u64(const char *name, uint64_t fallback, uint64_t max) {
    const char *v = getenv(name);
    if (!v || !*v) return fallback;
    uint64_t x;
    if (!berth_parse_u64(cstr(v), &x) || x > max) {
        ck_abort_msg("%s='%s' is not a number up to %" PRIu64, name, v, max);
    }
    return x;
}

static void run_seed(uint64_t seed, int steps, bool require_coverage) {
    run *r = calloc(1, sizeof *r);
    ck_assert_ptr_nonnull(r);
    r->seed = seed;
    r->rng.state = seed;
    r->m.policy = 1u << backend_vllm;
    r->m.reqs = calloc(BERTH_REQID_WINDOW, sizeof *r->m.reqs);
    r->history_cap = (size_t)steps + 1;   /* at most one per step */
    r->history = calloc(r->history_cap, sizeof *r->history);
    berth_cmd *cmd = malloc(sizeof *cmd);
    ck_assert(r->m.reqs && r->history && cmd);
    r->state = berth_state_new(NULL);
    r->quiet = berth_state_new(NULL);
    ck_assert(r->state && r->quiet);
    compare_state(r, r->state);
    for (r->step = 0; r->step < steps; r->step++) {
        step(r, cmd);
        if (r->step % restore_every == restore_every - 1) {
            /* The quiet engine continues from a restored copy of the loud one. */
            berth_state *copy = clone_by_restore(r, r->state);
            compare_state(r, copy);
            berth_state_free(r->quiet);
            r->quiet = copy;
        }
    }
    fprintf(stderr, "model: seed %" PRIu64 ": %d steps, seq %" PRIu64 ", retries %" PRIu64 ", conflicts %" PRIu64 ";",
            seed, steps, r->m.seq, r->retries, r->conflicts);
    for (int code = 0; code < BERTH_CODE_COUNT; code++) {
        fprintf(stderr, " %s %" PRIu64, berth_code_name((berth_code)code), r->seen[code]);
    }
    fprintf(stderr, "\n");
    if (require_coverage) {
        /* A stream that never reaches a rule proves nothing about it. */
        for (int code = 0; code < BERTH_CODE_COUNT; code++) {
            ck_assert_msg(r->seen[code] > 0, "seed %" PRIu64 " never produced %s", seed, berth_code_name((berth_code)code));
        }
        ck_assert_msg(r->retries > 0 && r->conflicts > 0, "seed %" PRIu64 " produced no retry or conflict", seed);
    }
    berth_state_free(r->state);
    berth_state_free(r->quiet);
    free(cmd);
    free(r->history);
    free(r->m.reqs);
    free(r);
}

START_TEST(test_model_fixed_seed) {
    ck_assert_int_lt(_i, fixed_seed_count);
    run_seed(fixed_seeds[_i], (int)env_u64("BERTH_MODEL_STEPS", steps_default, steps_env_max), true);
}
END_TEST

START_TEST(test_model_env_seed) {
    uint64_t seed = env_u64("BERTH_MODEL_SEED", 0, UINT64_MAX);
    run_seed(seed, (int)env_u64("BERTH_MODEL_STEPS", steps_default, steps_env_max), false);
}
END_TEST

int main(void) {
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("streams");
    tcase_set_timeout(tc, 60);
    if (getenv("BERTH_MODEL_SEED")) {
        tcase_add_test(tc, test_model_env_seed);
    } else {
        tcase_add_loop_test(tc, test_model_fixed_seed, 0, fixed_seed_count);
    }
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
