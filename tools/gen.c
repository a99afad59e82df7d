/* gen.c — the deterministic scenario generator behind tools/gen.h.
 *
 * It owns a seeded xoshiro256** stream and a small model of the cluster it
 * is describing. The model exists for two reasons: to pick placements that
 * mostly fit (a benchmark of nothing but refusals would measure the wrong
 * thing) and to predict each outcome, which the unit test holds against the
 * real state machine. Everything is integer arithmetic and every choice comes
 * from the PRNG, so the stream is byte-identical on every machine.
 *
 * The model only knows what the generator itself asked for; it applies a
 * command when it predicts success, mirroring the rules of state.h: DEPLOY
 * checks EXISTS, then each listed worker in order through NOWORKER,
 * CORDONED, NOGPU, EXCLUSIVE, GPUBUSY (every GPU) and NOVRAM (every GPU). */
#include "gen.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "berth_limits.h"

#define GEN_BACKEND_COUNT 3
#define GEN_MODEL_COUNT 8
#define GEN_CARD_COUNT 7
#define GEN_ZONE_COUNT 8
#define GEN_POLICY_CHOICE_COUNT 4
#define GEN_ATTEMPTS_MAX 16              /* random probes for a worker that fits */
#define GEN_INSTANCES_PER_GPU_MAX 4      /* smallest claim is 30% of a card: at most 3 share */
#define GEN_LIVE_INITIAL 1024            /* first size of the live-instance array */
#define GEN_NUMBER_TEXT_MAX 24           /* one u64 in decimal, with NUL */
#define GEN_CLAIM_ALIGN_MIB 256u         /* claims are whole multiples: how operators write them */
#define GEN_REFUSAL_KIND_COUNT 10
#define GEN_VLLM 0                       /* index of vllm in backend_names: the genesis policy */

static const char *const backend_names[GEN_BACKEND_COUNT] = { "vllm", "sglang", "llama-box" };
/* Of 1000 DEPLOYs: how many use each backend. */
static const uint32_t backend_weights[GEN_BACKEND_COUNT] = { 700, 200, 100 };

typedef struct gen_model {
    const char *name;      /* the MODEL word */
    const char *short_name;/* prefix of instance names */
    bool large;            /* worth distributing */
} gen_model;

static const gen_model models[GEN_MODEL_COUNT] = {
    { "meta-llama/Llama-3.1-8B-Instruct", "llama3.1-8b", false },
    { "meta-llama/Llama-3.1-70B-Instruct", "llama3.1-70b", true },
    { "meta-llama/Llama-3.1-405B-Instruct", "llama3.1-405b", true },
    { "Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b", false },
    { "Qwen/Qwen2.5-72B-Instruct", "qwen2.5-72b", true },
    { "deepseek-ai/DeepSeek-V3", "deepseek-v3", true },
    { "mistralai/Mixtral-8x22B-Instruct-v0.1", "mixtral-8x22b", true },
    { "google/gemma-2-27b-it", "gemma2-27b", false },
};

typedef struct gen_card {
    const char *label;     /* value of the gpu= label */
    uint32_t vram_mib;     /* per GPU as the driver reports it; 0: registered without VRAM */
    uint32_t weight;       /* of 1000 workers */
} gen_card;

static const gen_card cards[GEN_CARD_COUNT] = {
    { "h100", 81559, 300 },
    { "a100-80g", 81920, 200 },
    { "a100-40g", 40960, 120 },
    { "l40s", 46068, 130 },
    { "rtx4090", 24564, 100 },
    { "h200", 143771, 100 },
    { "unknown", 0, 50 },
};

/* Of 1000 workers: how many have 0..8 GPUs. Powers of two dominate, as in
 * real fleets; a few have none (CPU nodes that still register). */
static const uint32_t gpu_count_weights[BERTH_GEN_WORKER_GPUS_MAX + 1] = {
    20, 100, 150, 20, 300, 10, 40, 10, 350
};

/* Exclusive-backend sets POLICY.SET cycles through, as backend bit masks;
 * the canonical text lists them sorted (llama-box < sglang < vllm). */
static const uint8_t policy_choices[GEN_POLICY_CHOICE_COUNT] = {
    1u << GEN_VLLM, (1u << GEN_VLLM) | (1u << 1), (1u << GEN_VLLM) | (1u << 2), 1u << 1
};

/* Of 1000 claims: the fraction of a card's memory a VRAM claim takes
 * (vLLM's gpu_memory_utilization, in permille). */
static const uint32_t claim_utils_permille[4] = { 300, 450, 450, 900 };

typedef struct gen_worker {
    uint32_t vram_mib;
    uint32_t served;                                  /* instances on it */
    uint32_t claimed_mib[BERTH_GEN_WORKER_GPUS_MAX];  /* sum of VRAM claims per GPU */
    uint32_t dist_by_backend[GEN_BACKEND_COUNT];      /* distributed instances on it, per backend */
    uint32_t list_pos;                                /* index in cordoned[] or removed[] */
    uint8_t gpu_count;
    uint8_t whole_mask;                               /* GPUs held whole */
    bool present;
    bool cordoned;
} gen_worker;

typedef struct gen_instance {
    uint64_t id;                                      /* the name's number */
    uint32_t claim_mib;                               /* 0: whole GPUs */
    uint32_t workers[BERTH_GEN_SPAN_WORKERS_MAX];
    uint8_t masks[BERTH_GEN_SPAN_WORKERS_MAX];        /* resolved GPUs */
    uint8_t slot_count;
    uint8_t backend;
    uint8_t model;
} gen_instance;

/* A DEPLOY being composed: a slot names a model worker, or a ghost (a name
 * never registered, for NOWORKER). */
typedef struct gen_slot {
    uint32_t worker;
    uint8_t mask;          /* GPUs listed; with all_gpus, ignored */
    bool all_gpus;
    bool ghost;
    uint64_t ghost_id;
} gen_slot;

typedef struct gen_deploy {
    uint64_t id;
    uint8_t model;
    uint8_t backend;
    uint32_t claim_mib;
    uint32_t slot_count;
    gen_slot slots[BERTH_GEN_SPAN_WORKERS_MAX];
} gen_deploy;

struct berth_gen {
    berth_gen_options options;
    uint64_t rng[4];
    uint64_t index;                 /* commands produced */
    uint64_t next_instance_id;
    uint64_t next_ghost_id;         /* names that are never registered or deployed */
    uint64_t next_reqid;
    uint8_t policy;                 /* exclusive backends, bit per backend_names index */
    gen_worker *workers;            /* options.workers entries */
    uint32_t *cordoned;             /* worker indices, unordered */
    uint32_t cordoned_count;
    uint32_t *removed;
    uint32_t removed_count;
    gen_instance *live;             /* live instances, unordered */
    uint64_t live_count;
    uint64_t live_cap;
    uint64_t live_max;
    uint64_t gpus_total;
    uint64_t gpus_used;
    uint64_t predicted_records;
    uint64_t predicted_refusals;
    /* The last command that carried a REQID, for retries and reuse. */
    bool have_last_reqid;
    berth_code last_reqid_code;
    uint32_t last_reqid_text_len;
    uint32_t last_reqid_id_offset;  /* where the id starts in last_reqid_text */
    char last_reqid_text[BERTH_GEN_TEXT_LEN_MAX];
};

/* ---- PRNG: splitmix64 seeds xoshiro256** (Blackman & Vigna) ---- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(berth_gen *g) {
    uint64_t *s = g->rng;
    uint64_t result = rotl64(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

/* Uniform-enough integer in [0, n) by multiply-shift of the top 32 bits:
 * no division, no modulo bias worth measuring, identical everywhere. */
static uint32_t rng_below(berth_gen *g, uint32_t n) {
    assert(n > 0);
    uint64_t r = rng_next(g) >> 32;
    uint32_t v = (uint32_t)((r * (uint64_t)n) >> 32);
    assert(v < n);
    return v;
}

static bool rng_permille(berth_gen *g, uint32_t permille) {
    assert(permille <= BERTH_GEN_PERMILLE_MAX);
    return rng_below(g, BERTH_GEN_PERMILLE_MAX) < permille;
}

static uint32_t rng_weighted(berth_gen *g, const uint32_t *weights, uint32_t count) {
    uint32_t total = 0;
    for (uint32_t i = 0; i < count; i++) total += weights[i];
    assert(total > 0);
    uint32_t r = rng_below(g, total);
    for (uint32_t i = 0; i < count; i++) {
        if (r < weights[i]) return i;
        r -= weights[i];
    }
    assert(0 && "unreachable: r < total");
    return 0;
}

/* ---- text ---- */

typedef struct gen_text {
    char *buf;
    uint32_t len;
} gen_text;

static void put_bytes(gen_text *t, const char *bytes, size_t n) {
    /* Every command is far below the cap by construction; the assert keeps it so. */
    assert(t->len + n < BERTH_GEN_TEXT_LEN_MAX);
    memcpy(t->buf + t->len, bytes, n);
    t->len += (uint32_t)n;
    t->buf[t->len] = '\0';
}

static void put_cstr(gen_text *t, const char *s) { put_bytes(t, s, strlen(s)); }

static void put_u64(gen_text *t, uint64_t v) {
    char digits[GEN_NUMBER_TEXT_MAX];
    int n = snprintf(digits, sizeof digits, "%llu", (unsigned long long)v);
    assert(n > 0 && (size_t)n < sizeof digits);
    put_bytes(t, digits, (size_t)n);
}

/* Worker names are zero-padded so they sort in index order, as operators name nodes. */
static void put_worker_name(gen_text *t, uint32_t worker) {
    char name[GEN_NUMBER_TEXT_MAX];
    int n = snprintf(name, sizeof name, "node-%05u", worker);
    assert(n > 0 && (size_t)n < sizeof name);
    put_bytes(t, name, (size_t)n);
}

static void put_instance_name(gen_text *t, uint8_t model, uint64_t id) {
    assert(model < GEN_MODEL_COUNT);
    put_cstr(t, models[model].short_name);
    put_cstr(t, "-");
    put_u64(t, id);
}

static void put_gpu_list(gen_text *t, uint8_t mask) {
    assert(mask != 0);
    char sep = ':';
    for (uint32_t gpu = 0; gpu < BERTH_GEN_WORKER_GPUS_MAX; gpu++) {
        if (!(mask & (1u << gpu))) continue;
        put_bytes(t, &sep, 1);
        put_u64(t, gpu);
        sep = ',';
    }
}

static void put_policy(gen_text *t, uint8_t policy) {
    /* Sorted by memcmp: llama-box (2), sglang (1), vllm (0). */
    static const uint8_t sorted[GEN_BACKEND_COUNT] = { 2, 1, 0 };
    assert(policy != 0);
    const char *sep = " ";
    put_cstr(t, "POLICY.SET EXCLUSIVE");
    for (uint32_t i = 0; i < GEN_BACKEND_COUNT; i++) {
        if (!(policy & (1u << sorted[i]))) continue;
        put_cstr(t, sep);
        put_cstr(t, backend_names[sorted[i]]);
        sep = ",";
    }
}

/* ---- model queries ---- */

static uint8_t full_mask(uint32_t gpu_count) {
    assert(gpu_count <= BERTH_GEN_WORKER_GPUS_MAX);
    return (uint8_t)((1u << gpu_count) - 1u);
}

static uint8_t claimed_mask(const gen_worker *w) {
    uint8_t mask = 0;
    for (uint32_t gpu = 0; gpu < w->gpu_count; gpu++) {
        if (w->claimed_mib[gpu] > 0) mask |= (uint8_t)(1u << gpu);
    }
    return mask;
}

static uint32_t used_gpus(const gen_worker *w) {
    return (uint32_t)__builtin_popcount((unsigned)(w->whole_mask | claimed_mask(w)));
}

/* Does a distributed instance of a backend that is exclusive now serve w? */
static bool exclusively_held(const berth_gen *g, const gen_worker *w) {
    for (uint32_t b = 0; b < GEN_BACKEND_COUNT; b++) {
        if ((g->policy & (1u << b)) && w->dist_by_backend[b] > 0) return true;
    }
    return false;
}

/* GPUs of w a new claim could take: not held whole, and either untouched
 * (whole claim) or with room for claim_mib more. */
static uint8_t fitting_mask(const gen_worker *w, uint32_t claim_mib) {
    uint8_t free_mask = (uint8_t)(full_mask(w->gpu_count) & ~w->whole_mask);
    if (claim_mib == 0) return (uint8_t)(free_mask & ~claimed_mask(w));
    if (w->vram_mib == 0) return 0;
    uint8_t fit = 0;
    for (uint32_t gpu = 0; gpu < w->gpu_count; gpu++) {
        bool room = (uint64_t)w->claimed_mib[gpu] + claim_mib <= w->vram_mib;
        if ((free_mask & (1u << gpu)) && room) fit |= (uint8_t)(1u << gpu);
    }
    return fit;
}

static bool live_name_taken(const berth_gen *g, uint64_t id) {
    /* Ids are never reused, so only an EXISTS refusal names a live id; the
     * caller passes that instance's id and model, and ids are unique. */
    for (uint64_t i = 0; i < g->live_count; i++) {
        if (g->live[i].id == id) return true;
    }
    return false;
}

/* The rules of state.h for one DEPLOY against the model. */
static berth_code predict_slot(const berth_gen *g, const gen_deploy *d, const gen_slot *s) {
    if (s->ghost) return BERTH_NOWORKER;
    assert(s->worker < g->options.workers);
    const gen_worker *w = &g->workers[s->worker];
    if (!w->present) return BERTH_NOWORKER;
    if (w->cordoned) return BERTH_CORDONED;
    uint8_t mask = s->all_gpus ? full_mask(w->gpu_count) : s->mask;
    if (!s->all_gpus && (mask & ~full_mask(w->gpu_count))) return BERTH_NOGPU;
    bool exclusive = d->slot_count > 1 && (g->policy & (1u << d->backend));
    if (exclusive && exclusively_held(g, w)) return BERTH_EXCLUSIVE;
    if (mask & w->whole_mask) return BERTH_GPUBUSY;
    if (d->claim_mib == 0 && (mask & claimed_mask(w))) return BERTH_GPUBUSY;
    if (d->claim_mib > 0 && w->vram_mib == 0) return BERTH_NOVRAM;   /* whatever the mask, none included */
    if (d->claim_mib > 0 && w->gpu_count == 0) return BERTH_NOVRAM;  /* no GPU to claim on */
    if (d->claim_mib > 0 && (mask & fitting_mask(w, d->claim_mib)) != mask) return BERTH_NOVRAM;
    return BERTH_OK;
}

static berth_code predict_deploy(const berth_gen *g, const gen_deploy *d, bool name_reused) {
    assert(d->slot_count >= 1 && d->slot_count <= BERTH_GEN_SPAN_WORKERS_MAX);
    if (name_reused) {
        assert(live_name_taken(g, d->id));
        return BERTH_EXISTS;
    }
    for (uint32_t i = 0; i < d->slot_count; i++) {
        berth_code code = predict_slot(g, d, &d->slots[i]);
        if (code != BERTH_OK) return code;
    }
    return BERTH_OK;
}

/* ---- model updates ---- */

static void account_worker(berth_gen *g, const gen_worker *w, uint32_t used_before) {
    g->gpus_used = g->gpus_used - used_before + used_gpus(w);
    assert(g->gpus_used <= g->gpus_total);
}

static void take_slot(berth_gen *g, const gen_instance *inst, uint32_t slot) {
    gen_worker *w = &g->workers[inst->workers[slot]];
    uint32_t before = used_gpus(w);
    uint8_t mask = inst->masks[slot];
    if (inst->claim_mib == 0) {
        assert((w->whole_mask & mask) == 0);
        w->whole_mask |= mask;
    } else {
        for (uint32_t gpu = 0; gpu < w->gpu_count; gpu++) {
            if (mask & (1u << gpu)) w->claimed_mib[gpu] += inst->claim_mib;
            assert(w->claimed_mib[gpu] <= w->vram_mib);
        }
    }
    w->served++;
    if (inst->slot_count > 1) w->dist_by_backend[inst->backend]++;
    account_worker(g, w, before);
}

static void drop_slot(berth_gen *g, const gen_instance *inst, uint32_t slot) {
    gen_worker *w = &g->workers[inst->workers[slot]];
    uint32_t before = used_gpus(w);
    uint8_t mask = inst->masks[slot];
    if (inst->claim_mib == 0) {
        assert((w->whole_mask & mask) == mask);
        w->whole_mask &= (uint8_t)~mask;
    } else {
        for (uint32_t gpu = 0; gpu < w->gpu_count; gpu++) {
            if (!(mask & (1u << gpu))) continue;
            assert(w->claimed_mib[gpu] >= inst->claim_mib);
            w->claimed_mib[gpu] -= inst->claim_mib;
        }
    }
    assert(w->served > 0);
    w->served--;
    if (inst->slot_count > 1) {
        assert(w->dist_by_backend[inst->backend] > 0);
        w->dist_by_backend[inst->backend]--;
    }
    account_worker(g, w, before);
}

static void apply_deploy(berth_gen *g, const gen_deploy *d) {
    assert(g->live_count < g->live_cap);
    gen_instance *inst = &g->live[g->live_count++];
    memset(inst, 0, sizeof *inst);
    inst->id = d->id;
    inst->claim_mib = d->claim_mib;
    inst->slot_count = (uint8_t)d->slot_count;
    inst->backend = d->backend;
    inst->model = d->model;
    for (uint32_t i = 0; i < d->slot_count; i++) {
        const gen_slot *s = &d->slots[i];
        assert(!s->ghost);
        inst->workers[i] = s->worker;
        uint32_t gpu_count = g->workers[s->worker].gpu_count;
        inst->masks[i] = s->all_gpus ? full_mask(gpu_count) : s->mask;
        take_slot(g, inst, i);
    }
}

static void apply_release(berth_gen *g, uint64_t live_index) {
    assert(live_index < g->live_count);
    gen_instance inst = g->live[live_index];
    for (uint32_t i = 0; i < inst.slot_count; i++) drop_slot(g, &inst, i);
    g->live[live_index] = g->live[--g->live_count];
}

/* Unordered index lists (cordoned, removed) with O(1) removal: each worker
 * remembers its position in the one list it can be on at a time. */
static void list_add(uint32_t *list, uint32_t *count, gen_worker *workers, uint32_t worker) {
    workers[worker].list_pos = *count;
    list[(*count)++] = worker;
}

static void list_remove(uint32_t *list, uint32_t *count, gen_worker *workers, uint32_t worker) {
    uint32_t pos = workers[worker].list_pos;
    assert(pos < *count && list[pos] == worker);
    uint32_t last = list[--(*count)];
    list[pos] = last;
    workers[last].list_pos = pos;
}

/* ---- composing commands ---- */

static void put_deploy(gen_text *t, const gen_deploy *d) {
    put_cstr(t, "DEPLOY ");
    put_instance_name(t, d->model, d->id);
    put_cstr(t, " MODEL ");
    put_cstr(t, models[d->model].name);
    put_cstr(t, " BACKEND ");
    put_cstr(t, backend_names[d->backend]);
    if (d->claim_mib > 0) {
        put_cstr(t, " VRAM ");
        put_u64(t, d->claim_mib);
    }
    put_cstr(t, " ON");
    for (uint32_t i = 0; i < d->slot_count; i++) {
        const gen_slot *s = &d->slots[i];
        put_cstr(t, " ");
        if (s->ghost) {
            put_cstr(t, "ghost-");
            put_u64(t, s->ghost_id);
        } else {
            put_worker_name(t, s->worker);
        }
        if (!s->all_gpus) put_gpu_list(t, s->mask);
    }
}

/* Take the `want` lowest GPUs of fit (first fit, as schedulers do). */
static uint8_t lowest_gpus(uint8_t fit, uint32_t want) {
    uint8_t mask = 0;
    for (uint32_t gpu = 0; gpu < BERTH_GEN_WORKER_GPUS_MAX && want > 0; gpu++) {
        if (!(fit & (1u << gpu))) continue;
        mask |= (uint8_t)(1u << gpu);
        want--;
    }
    return mask;
}

static uint32_t claim_for_card(berth_gen *g, uint32_t vram_mib) {
    assert(vram_mib > 0);
    uint32_t util = claim_utils_permille[rng_below(g, 4)];
    uint32_t claim = (uint32_t)((uint64_t)vram_mib * util / BERTH_GEN_PERMILLE_MAX);
    claim -= claim % GEN_CLAIM_ALIGN_MIB;
    return claim < GEN_CLAIM_ALIGN_MIB ? GEN_CLAIM_ALIGN_MIB : claim;
}

static bool slot_taken(const gen_deploy *d, uint32_t worker) {
    for (uint32_t i = 0; i < d->slot_count; i++) {
        if (!d->slots[i].ghost && d->slots[i].worker == worker) return true;
    }
    return false;
}

/* Probe random workers for one that can take slot d->slots[d->slot_count]
 * with `want` GPUs (0, or more than it has: all of them). */
static bool find_slot(berth_gen *g, gen_deploy *d, uint32_t want, bool exclusive) {
    for (uint32_t attempt = 0; attempt < GEN_ATTEMPTS_MAX; attempt++) {
        uint32_t wi = rng_below(g, g->options.workers);
        const gen_worker *w = &g->workers[wi];
        if (!w->present || w->cordoned || w->gpu_count == 0 || slot_taken(d, wi)) continue;
        if (exclusive && exclusively_held(g, w)) continue;
        uint8_t fit = fitting_mask(w, d->claim_mib);
        uint32_t need = (want == 0 || want > w->gpu_count) ? w->gpu_count : want;
        if ((uint32_t)__builtin_popcount(fit) < need) continue;
        gen_slot *s = &d->slots[d->slot_count++];
        memset(s, 0, sizeof *s);
        s->worker = wi;
        s->mask = lowest_gpus(fit, need);
        /* A whole worker is usually named bare; sometimes its GPUs are listed. */
        s->all_gpus = need == w->gpu_count && rng_permille(g, 500);
        return true;
    }
    return false;
}

static uint32_t pick_want(berth_gen *g) {
    static const uint32_t wants[4] = { 1, 2, 4, 0 };
    static const uint32_t weights[4] = { 400, 250, 150, 200 };
    return wants[rng_weighted(g, weights, 4)];
}

static void start_deploy(berth_gen *g, gen_deploy *d, bool distributed) {
    memset(d, 0, sizeof *d);
    d->id = g->next_instance_id;
    d->backend = (uint8_t)rng_weighted(g, backend_weights, GEN_BACKEND_COUNT);
    uint32_t model;
    do {
        model = rng_below(g, GEN_MODEL_COUNT);
    } while (distributed && !models[model].large);
    d->model = (uint8_t)model;
}

/* A VRAM claim is sized from some present card, so it is plausible for
 * the fleet; workers whose free memory is smaller simply do not fit. */
static void choose_claim(berth_gen *g, gen_deploy *d) {
    for (uint32_t attempt = 0; attempt < GEN_ATTEMPTS_MAX; attempt++) {
        const gen_worker *w = &g->workers[rng_below(g, g->options.workers)];
        if (w->present && w->vram_mib > 0) {
            d->claim_mib = claim_for_card(g, w->vram_mib);
            return;
        }
    }
    d->claim_mib = 0;   /* no VRAM-capable worker found quickly: hold whole GPUs */
}

/* Compose a plausible DEPLOY; false when the probes found no room. */
static bool compose_plausible_deploy(berth_gen *g, gen_deploy *d) {
    bool distributed = rng_permille(g, g->options.distributed_permille);
    start_deploy(g, d, distributed);
    if (rng_permille(g, g->options.vram_permille)) choose_claim(g, d);
    uint32_t span = distributed ? 2 + rng_below(g, BERTH_GEN_SPAN_WORKERS_MAX - 1) : 1;
    bool exclusive = distributed && (g->policy & (1u << d->backend));
    for (uint32_t i = 0; i < span; i++) {
        uint32_t want = distributed && rng_permille(g, 700) ? 0 : pick_want(g);
        if (!find_slot(g, d, want, exclusive)) return false;
    }
    return true;
}

/* ---- command emitters: each writes text, predicts, and updates the model ---- */

typedef struct gen_emit {
    gen_text text;
    berth_cmd_kind kind;
    berth_gen_intent intent;
    berth_gen_expect expect;
    berth_code code;
    bool reqid_allowed;
} gen_emit;

static void emit_deploy(berth_gen *g, gen_emit *e, const gen_deploy *d, bool name_reused) {
    put_deploy(&e->text, d);
    e->kind = BERTH_CMD_DEPLOY;
    e->code = predict_deploy(g, d, name_reused);
    if (!name_reused) g->next_instance_id++;   /* the name is spent whatever the outcome */
    if (e->code == BERTH_OK) apply_deploy(g, d);
}

static void emit_release(berth_gen *g, gen_emit *e, uint64_t live_index) {
    const gen_instance *inst = &g->live[live_index];
    put_cstr(&e->text, "RELEASE ");
    put_instance_name(&e->text, inst->model, inst->id);
    e->kind = BERTH_CMD_RELEASE;
    e->code = BERTH_OK;
    apply_release(g, live_index);
}

static void emit_worker_add(berth_gen *g, gen_emit *e, uint32_t wi) {
    gen_worker *w = &g->workers[wi];
    assert(!w->present);
    uint32_t gpus = rng_weighted(g, gpu_count_weights, BERTH_GEN_WORKER_GPUS_MAX + 1);
    uint32_t weights[GEN_CARD_COUNT];
    for (uint32_t c = 0; c < GEN_CARD_COUNT; c++) weights[c] = cards[c].weight;
    const gen_card *card = &cards[rng_weighted(g, weights, GEN_CARD_COUNT)];
    uint32_t zone = rng_below(g, GEN_ZONE_COUNT);
    put_cstr(&e->text, "WORKER.ADD ");
    put_worker_name(&e->text, wi);
    put_cstr(&e->text, " GPUS ");
    put_u64(&e->text, gpus);
    if (card->vram_mib > 0 && gpus > 0) {
        put_cstr(&e->text, " VRAM ");
        put_u64(&e->text, card->vram_mib);
    }
    /* Keys sorted (gpu < zone), as the canonical text lists them. */
    put_cstr(&e->text, " LABEL gpu=");
    put_cstr(&e->text, gpus > 0 ? card->label : "none");
    put_cstr(&e->text, " zone=z");
    put_u64(&e->text, zone);
    memset(w, 0, sizeof *w);
    w->present = true;
    w->gpu_count = (uint8_t)gpus;
    w->vram_mib = gpus > 0 ? card->vram_mib : 0;
    g->gpus_total += gpus;
    e->kind = BERTH_CMD_WORKER_ADD;
    e->code = BERTH_OK;
}

static void emit_worker_word(gen_emit *e, const char *command, uint32_t wi, berth_cmd_kind kind,
                             berth_code code) {
    put_cstr(&e->text, command);
    put_cstr(&e->text, " ");
    put_worker_name(&e->text, wi);
    e->kind = kind;
    e->code = code;
}

static void emit_release_unknown(berth_gen *g, gen_emit *e) {
    put_cstr(&e->text, "RELEASE gone-");
    put_u64(&e->text, g->next_ghost_id++);
    e->kind = BERTH_CMD_RELEASE;
    e->code = BERTH_NOINSTANCE;
}

static uint64_t random_live(berth_gen *g) {
    assert(g->live_count > 0);
    assert(g->live_count <= UINT32_MAX);
    return rng_below(g, (uint32_t)g->live_count);
}

/* The bulk of the stream: DEPLOY while GPU use is below the fill line
 * (mostly), RELEASE above it. When a DEPLOY finds no room it becomes a
 * RELEASE, which keeps the mix plausible. */
static void emit_plausible(berth_gen *g, gen_emit *e) {
    uint64_t fill_line = g->gpus_total * g->options.fill_permille;
    bool below_fill = g->gpus_used * BERTH_GEN_PERMILLE_MAX < fill_line;
    uint32_t deploy_permille = below_fill ? 650 : 300;
    bool room_for_more = g->live_count < g->live_max;
    if (g->live_count > 0 && (!room_for_more || !rng_permille(g, deploy_permille))) {
        emit_release(g, e, random_live(g));
        return;
    }
    gen_deploy d;
    if (!compose_plausible_deploy(g, &d) && g->live_count > 0) {
        emit_release(g, e, random_live(g));
        return;
    }
    if (d.slot_count == 0) {
        /* Nothing fits and nothing runs (a fleet of GPU-less workers): ask
         * for a worker that does not exist, which is refused plainly. */
        d.slot_count = 1;
        d.slots[0].ghost = true;
        d.slots[0].all_gpus = true;
        d.slots[0].ghost_id = g->next_ghost_id++;
    }
    /* A partial distributed placement is still sent: only the listed workers are judged. */
    emit_deploy(g, e, &d, false);
}

/* Find a present worker satisfying a predicate by probing; UINT32_MAX if none. */
typedef bool (*worker_pred)(const berth_gen *g, const gen_worker *w);

static uint32_t probe_worker(berth_gen *g, worker_pred pred) {
    for (uint32_t attempt = 0; attempt < GEN_ATTEMPTS_MAX; attempt++) {
        uint32_t wi = rng_below(g, g->options.workers);
        if (g->workers[wi].present && pred(g, &g->workers[wi])) return wi;
    }
    return UINT32_MAX;
}

static bool pred_any(const berth_gen *g, const gen_worker *w) { return true; }
static bool pred_active(const berth_gen *g, const gen_worker *w) { return !w->cordoned; }
static bool pred_idle(const berth_gen *g, const gen_worker *w) { return w->served == 0; }
static bool pred_nogpu(const berth_gen *g, const gen_worker *w) {
    return !w->cordoned && w->gpu_count < BERTH_GEN_WORKER_GPUS_MAX;
}
static bool pred_vram(const berth_gen *g, const gen_worker *w) {
    return !w->cordoned && w->gpu_count > 0 && w->vram_mib > 0;
}

static void single_slot(gen_deploy *d, uint32_t worker, uint8_t mask, bool all_gpus) {
    d->slot_count = 1;
    d->slots[0].worker = worker;
    d->slots[0].mask = mask;
    d->slots[0].all_gpus = all_gpus;
}

/* Each refusal kind: true when it could be built now. */
static bool refuse_exists_instance(berth_gen *g, gen_emit *e) {
    if (g->live_count == 0) return false;
    const gen_instance *inst = &g->live[random_live(g)];
    gen_deploy d;
    start_deploy(g, &d, false);
    d.id = inst->id;
    d.model = inst->model;
    single_slot(&d, inst->workers[0], inst->masks[0], false);
    emit_deploy(g, e, &d, true);
    return true;
}

static bool refuse_noworker(berth_gen *g, gen_emit *e) {
    gen_deploy d;
    start_deploy(g, &d, false);
    d.slot_count = 1;
    d.slots[0].ghost = true;
    d.slots[0].all_gpus = true;
    d.slots[0].ghost_id = g->next_ghost_id++;
    emit_deploy(g, e, &d, false);
    return true;
}

static bool refuse_cordoned(berth_gen *g, gen_emit *e) {
    if (g->cordoned_count == 0) return false;
    uint32_t wi = g->cordoned[rng_below(g, g->cordoned_count)];
    if (g->workers[wi].gpu_count == 0) return false;
    gen_deploy d;
    start_deploy(g, &d, false);
    single_slot(&d, wi, 0, true);
    emit_deploy(g, e, &d, false);
    return true;
}

static bool refuse_nogpu(berth_gen *g, gen_emit *e) {
    uint32_t wi = probe_worker(g, pred_nogpu);
    if (wi == UINT32_MAX) return false;
    gen_deploy d;
    start_deploy(g, &d, false);
    single_slot(&d, wi, (uint8_t)(1u << g->workers[wi].gpu_count), false);
    emit_deploy(g, e, &d, false);
    return true;
}

/* The seed case: a distributed instance of an exclusive backend onto a
 * worker an exclusive distributed instance already holds. */
static bool refuse_exclusive(berth_gen *g, gen_emit *e) {
    for (uint32_t attempt = 0; attempt < GEN_ATTEMPTS_MAX && g->live_count > 0; attempt++) {
        const gen_instance *holder = &g->live[random_live(g)];
        if (holder->slot_count < 2 || !(g->policy & (1u << holder->backend))) continue;
        gen_deploy d;
        start_deploy(g, &d, true);
        d.backend = holder->backend;
        /* Name the held worker second: subordinates are checked like the main worker. */
        uint32_t other = probe_worker(g, pred_active);
        if (other == UINT32_MAX || other == holder->workers[0]) continue;
        if (g->workers[other].gpu_count == 0) continue;
        d.slot_count = 2;
        d.slots[0].worker = other;
        d.slots[0].all_gpus = true;
        d.slots[1].worker = holder->workers[rng_below(g, holder->slot_count)];
        d.slots[1].all_gpus = true;
        if (d.slots[1].worker == other) continue;
        emit_deploy(g, e, &d, false);
        return true;
    }
    return false;
}

static bool refuse_gpubusy(berth_gen *g, gen_emit *e) {
    if (g->live_count == 0) return false;
    const gen_instance *holder = &g->live[random_live(g)];
    gen_deploy d;
    start_deploy(g, &d, false);
    single_slot(&d, holder->workers[0], holder->masks[0], false);
    emit_deploy(g, e, &d, false);
    return true;
}

static bool refuse_novram(berth_gen *g, gen_emit *e) {
    uint32_t wi = probe_worker(g, pred_vram);
    if (wi == UINT32_MAX) return false;
    gen_deploy d;
    start_deploy(g, &d, false);
    d.claim_mib = g->workers[wi].vram_mib + GEN_CLAIM_ALIGN_MIB;
    assert(d.claim_mib <= BERTH_VRAM_MIB_MAX);
    single_slot(&d, wi, 1u, false);
    emit_deploy(g, e, &d, false);
    return true;
}

static bool refuse_worker_exists(berth_gen *g, gen_emit *e) {
    uint32_t wi = probe_worker(g, pred_any);
    if (wi == UINT32_MAX) return false;
    const gen_worker *w = &g->workers[wi];
    put_cstr(&e->text, "WORKER.ADD ");
    put_worker_name(&e->text, wi);
    put_cstr(&e->text, " GPUS ");
    put_u64(&e->text, w->gpu_count);
    e->kind = BERTH_CMD_WORKER_ADD;
    e->code = BERTH_EXISTS;
    return true;
}

static bool refuse_busy(berth_gen *g, gen_emit *e) {
    if (g->live_count == 0) return false;
    const gen_instance *inst = &g->live[random_live(g)];
    emit_worker_word(e, "WORKER.REMOVE", inst->workers[0], BERTH_CMD_WORKER_REMOVE, BERTH_BUSY);
    return true;
}

static void emit_refusal(berth_gen *g, gen_emit *e) {
    typedef bool (*refusal_fn)(berth_gen *, gen_emit *);
    static const refusal_fn kinds[GEN_REFUSAL_KIND_COUNT] = {
        refuse_exists_instance, refuse_noworker, refuse_cordoned, refuse_nogpu,
        refuse_exclusive, refuse_exclusive, refuse_gpubusy, refuse_novram,
        refuse_worker_exists, refuse_busy,
    };
    e->intent = BERTH_GEN_INTENT_REFUSAL;
    if (kinds[rng_below(g, GEN_REFUSAL_KIND_COUNT)](g, e)) return;
    emit_release_unknown(g, e);   /* always possible */
}

/* ---- churn ---- */

static uint32_t churn_cap(const berth_gen *g) {
    uint32_t cap = g->options.workers / 50;
    return cap > 0 ? cap : 1;
}

static bool churn_cordon(berth_gen *g, gen_emit *e) {
    if (g->cordoned_count >= churn_cap(g)) return false;
    uint32_t wi = probe_worker(g, pred_active);
    if (wi == UINT32_MAX) return false;
    g->workers[wi].cordoned = true;
    list_add(g->cordoned, &g->cordoned_count, g->workers, wi);
    emit_worker_word(e, "WORKER.CORDON", wi, BERTH_CMD_WORKER_CORDON, BERTH_OK);
    return true;
}

static bool churn_uncordon(berth_gen *g, gen_emit *e) {
    if (g->cordoned_count == 0) return false;
    uint32_t wi = g->cordoned[rng_below(g, g->cordoned_count)];
    list_remove(g->cordoned, &g->cordoned_count, g->workers, wi);
    g->workers[wi].cordoned = false;
    emit_worker_word(e, "WORKER.UNCORDON", wi, BERTH_CMD_WORKER_UNCORDON, BERTH_OK);
    return true;
}

static bool churn_remove(berth_gen *g, gen_emit *e) {
    if (g->removed_count >= churn_cap(g)) return false;
    uint32_t wi = probe_worker(g, pred_idle);
    if (wi == UINT32_MAX) return false;
    gen_worker *w = &g->workers[wi];
    if (w->cordoned) {
        list_remove(g->cordoned, &g->cordoned_count, g->workers, wi);
        w->cordoned = false;
    }
    assert(used_gpus(w) == 0);
    w->present = false;
    g->gpus_total -= w->gpu_count;
    list_add(g->removed, &g->removed_count, g->workers, wi);
    emit_worker_word(e, "WORKER.REMOVE", wi, BERTH_CMD_WORKER_REMOVE, BERTH_OK);
    return true;
}

static bool churn_readd(berth_gen *g, gen_emit *e) {
    if (g->removed_count == 0) return false;
    uint32_t wi = g->removed[rng_below(g, g->removed_count)];
    list_remove(g->removed, &g->removed_count, g->workers, wi);
    emit_worker_add(g, e, wi);
    return true;
}

static bool churn_policy(berth_gen *g, gen_emit *e) {
    uint8_t next = policy_choices[rng_below(g, GEN_POLICY_CHOICE_COUNT)];
    /* Mostly return to the genesis policy, so EXCLUSIVE stays common. */
    if (next == g->policy) next = 1u << GEN_VLLM;
    if (next == g->policy) return false;
    g->policy = next;
    put_policy(&e->text, next);
    e->kind = BERTH_CMD_POLICY_SET;
    e->code = BERTH_OK;
    return true;
}

static void emit_churn(berth_gen *g, gen_emit *e) {
    typedef bool (*churn_fn)(berth_gen *, gen_emit *);
    static const churn_fn kinds[4] = { churn_cordon, churn_uncordon, churn_remove, churn_readd };
    static const uint32_t weights[4] = { 300, 300, 120, 120 };
    e->intent = BERTH_GEN_INTENT_CHURN;
    uint32_t first = rng_weighted(g, weights, 4);
    for (uint32_t k = 0; k < 4; k++) {
        if (kinds[(first + k) % 4](g, e)) return;
    }
    e->intent = BERTH_GEN_INTENT_PLAUSIBLE;
    emit_plausible(g, e);
}

/* ---- REQID ---- */

static void attach_reqid(berth_gen *g, gen_emit *e) {
    put_cstr(&e->text, " REQID ");
    uint32_t id_offset = e->text.len;
    put_cstr(&e->text, "req-");
    put_u64(&e->text, g->next_reqid++);
    g->have_last_reqid = true;
    g->last_reqid_code = e->code;
    g->last_reqid_text_len = e->text.len;
    g->last_reqid_id_offset = id_offset;
    memcpy(g->last_reqid_text, e->text.buf, e->text.len + 1);
}

/* A retry sends the remembered command again, word for word; a conflict
 * sends a different command under the remembered id. Neither changes state. */
static void emit_reqid_replay(berth_gen *g, gen_emit *e, bool retry) {
    assert(g->have_last_reqid);
    e->intent = BERTH_GEN_INTENT_REQID_REPLAY;
    e->reqid_allowed = false;
    if (retry) {
        put_bytes(&e->text, g->last_reqid_text, g->last_reqid_text_len);
        e->expect = BERTH_GEN_EXPECT_RETRY;
        e->code = g->last_reqid_code;
        e->kind = BERTH_CMD_NONE;   /* filled from the first word below */
        return;
    }
    emit_release_unknown(g, e);
    put_cstr(&e->text, " REQID ");
    put_cstr(&e->text, g->last_reqid_text + g->last_reqid_id_offset);
    e->expect = BERTH_GEN_EXPECT_CONFLICT;
}

/* ---- public ---- */

void berth_gen_options_default(berth_gen_options *options, uint64_t seed, uint32_t workers) {
    assert(options != NULL);
    memset(options, 0, sizeof *options);
    options->seed = seed;
    options->workers = workers;
    options->distributed_permille = 250;
    options->vram_permille = 350;
    options->reqid_permille = 100;
    options->refusal_permille = 30;
    options->churn_permille = 20;
    options->fill_permille = 700;
    options->policy_per_million = 10;
}

static int options_check(const berth_gen_options *o, char *err, size_t err_size) {
    if (o->workers < 1 || o->workers > BERTH_GEN_WORKERS_MAX) {
        snprintf(err, err_size, "ERR workers must be 1..%u, not %u", BERTH_GEN_WORKERS_MAX,
                 o->workers);
        return -1;
    }
    const uint32_t permilles[6] = { o->distributed_permille, o->vram_permille, o->reqid_permille,
                                    o->refusal_permille, o->churn_permille, o->fill_permille };
    for (uint32_t i = 0; i < 6; i++) {
        if (permilles[i] > BERTH_GEN_PERMILLE_MAX) {
            snprintf(err, err_size, "ERR fractions are permille, 0..%u; got %u",
                     BERTH_GEN_PERMILLE_MAX, permilles[i]);
            return -1;
        }
    }
    if (o->policy_per_million > BERTH_GEN_PER_MILLION_MAX) {
        snprintf(err, err_size, "ERR policy_per_million is 0..%u; got %u", BERTH_GEN_PER_MILLION_MAX,
                 o->policy_per_million);
        return -1;
    }
    if ((uint64_t)o->refusal_permille + o->churn_permille > BERTH_GEN_PERMILLE_MAX) {
        snprintf(err, err_size, "ERR refusal and churn permille together exceed %u",
                 BERTH_GEN_PERMILLE_MAX);
        return -1;
    }
    return 0;
}

int berth_gen_init(berth_gen **out, const berth_gen_options *options, char *err,
                   size_t err_size) {
    assert(out != NULL && options != NULL && err != NULL && err_size > 0);
    *out = NULL;
    if (options_check(options, err, err_size) != 0) return -1;
    berth_gen *g = calloc(1, sizeof *g);
    if (g == NULL) goto nomem;
    g->options = *options;
    g->workers = calloc(options->workers, sizeof *g->workers);
    g->cordoned = calloc(options->workers, sizeof *g->cordoned);
    g->removed = calloc(options->workers, sizeof *g->removed);
    g->live_cap = GEN_LIVE_INITIAL;
    g->live = calloc(g->live_cap, sizeof *g->live);
    if (!g->workers || !g->cordoned || !g->removed || !g->live) goto nomem;
    g->live_max = (uint64_t)options->workers * BERTH_GEN_WORKER_GPUS_MAX * GEN_INSTANCES_PER_GPU_MAX;
    uint64_t sm = options->seed;
    for (uint32_t i = 0; i < 4; i++) g->rng[i] = splitmix64(&sm);
    g->policy = 1u << GEN_VLLM;
    g->next_instance_id = 1;
    g->next_ghost_id = 1;
    g->next_reqid = 1;
    *out = g;
    return 0;
nomem:
    berth_gen_free(g);
    snprintf(err, err_size, "ERR out of memory for a generator of %u workers", options->workers);
    return -1;
}

void berth_gen_free(berth_gen *gen) {
    if (gen == NULL) return;
    free(gen->workers);
    free(gen->cordoned);
    free(gen->removed);
    free(gen->live);
    free(gen);
}

/* Grow the live array before anything is drawn, so a failure changes nothing. */
static int reserve_live(berth_gen *g) {
    if (g->live_count < g->live_cap) return 0;
    uint64_t cap = g->live_cap * 2;
    if (cap > g->live_max + 1) cap = g->live_max + 1;
    assert(cap > g->live_count);
    gen_instance *grown = realloc(g->live, cap * sizeof *grown);
    if (grown == NULL) return -1;
    g->live = grown;
    g->live_cap = cap;
    return 0;
}

static void split_words(berth_gen_command *out) {
    uint32_t n = 0, start = 0;
    for (uint32_t i = 0; i <= out->text_len; i++) {
        if (i < out->text_len && out->text[i] != ' ') continue;
        assert(i > start && n < BERTH_GEN_WORDS_MAX);
        out->words[n++] = berth_str_make(out->text + start, i - start);
        start = i + 1;
    }
    out->word_count = n;
}

static uint32_t canonical_length(const berth_gen_command *out) {
    const char *reqid = strstr(out->text, " REQID ");
    return reqid ? (uint32_t)(reqid - out->text) : out->text_len;
}

static berth_cmd_kind kind_of_first_word(const berth_gen_command *out) {
    static const char *const names[BERTH_CMD_KIND_COUNT] = {
        "", "WORKER.ADD", "WORKER.CORDON", "WORKER.UNCORDON", "WORKER.REMOVE",
        "DEPLOY", "RELEASE", "POLICY.SET",
    };
    for (int k = 1; k < BERTH_CMD_KIND_COUNT; k++) {
        size_t n = strlen(names[k]);
        if (out->words[0].len == n && memcmp(out->words[0].ptr, names[k], n) == 0) {
            return (berth_cmd_kind)k;
        }
    }
    assert(0 && "the generator writes only known commands");
    return BERTH_CMD_NONE;
}

static void choose_and_emit(berth_gen *g, gen_emit *e) {
    if (g->index < g->options.workers) {
        e->intent = BERTH_GEN_INTENT_WORKER;
        e->reqid_allowed = false;
        emit_worker_add(g, e, (uint32_t)g->index);
        return;
    }
    uint32_t reqid_replay = g->have_last_reqid ? g->options.reqid_permille / 8 : 0;
    uint32_t r = rng_below(g, BERTH_GEN_PERMILLE_MAX);
    if (r < reqid_replay) {
        emit_reqid_replay(g, e, rng_permille(g, 667));
        return;
    }
    if (rng_below(g, BERTH_GEN_PER_MILLION_MAX) < g->options.policy_per_million) {
        e->intent = BERTH_GEN_INTENT_CHURN;
        if (churn_policy(g, e)) return;
    }
    r = rng_below(g, BERTH_GEN_PERMILLE_MAX);
    if (r < g->options.refusal_permille) {
        emit_refusal(g, e);
    } else if (r < g->options.refusal_permille + g->options.churn_permille) {
        emit_churn(g, e);
    } else {
        e->intent = BERTH_GEN_INTENT_PLAUSIBLE;
        emit_plausible(g, e);
    }
}

int berth_gen_next(berth_gen *gen, berth_gen_command *out) {
    assert(gen != NULL && out != NULL);
    if (reserve_live(gen) != 0) return -1;
    gen_emit e;
    memset(&e, 0, sizeof e);
    e.text.buf = out->text;
    e.text.buf[0] = '\0';
    e.expect = BERTH_GEN_EXPECT_APPLIED;
    e.reqid_allowed = true;
    choose_and_emit(gen, &e);
    if (e.reqid_allowed && rng_permille(gen, gen->options.reqid_permille)) attach_reqid(gen, &e);
    out->text_len = e.text.len;
    split_words(out);
    out->canonical_len = canonical_length(out);
    out->kind = e.kind != BERTH_CMD_NONE ? e.kind : kind_of_first_word(out);
    assert(out->kind == kind_of_first_word(out));
    out->intent = e.intent;
    out->expect = e.expect;
    out->code = e.code;
    out->index = gen->index++;
    if (e.expect == BERTH_GEN_EXPECT_APPLIED) {
        gen->predicted_records++;
        if (e.code != BERTH_OK) gen->predicted_refusals++;
    }
    return 0;
}

void berth_gen_get_stats(const berth_gen *gen, berth_gen_stats *out) {
    assert(gen != NULL && out != NULL);
    memset(out, 0, sizeof *out);
    out->commands = gen->index;
    out->predicted_records = gen->predicted_records;
    out->predicted_refusals = gen->predicted_refusals;
    out->workers_present = gen->options.workers - gen->removed_count;
    if (gen->index < gen->options.workers) out->workers_present = (uint32_t)gen->index;
    out->workers_cordoned = gen->cordoned_count;
    out->instances_live = gen->live_count;
    out->gpus_total = gen->gpus_total;
    out->gpus_used = gen->gpus_used;
}
