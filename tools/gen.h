/* gen.h — berth's deterministic synthetic scenario generator.
 *
 * The benchmark, the tests and `berth gen` all need realistic command
 * streams that are the same on every machine: same options (seed included)
 * → byte-identical commands, in the same order, forever. So the generator
 * draws from its own seeded PRNG (xoshiro256**, seeded through splitmix64),
 * uses integer arithmetic only, and reads no clock, no environment and no
 * files. It does no I/O at all: the caller writes the text where it likes.
 *
 * The stream: first one WORKER.ADD for every worker (GPU counts 0–8, VRAM
 * per GPU from a table of real cards, a few without VRAM, labels), then an
 * endless mix of DEPLOY (local and distributed over 2–4 workers, whole-GPU
 * and VRAM claims, vllm / sglang / llama-box backends), RELEASE of live
 * instances, occasional WORKER.CORDON / UNCORDON / REMOVE / re-ADD, rare
 * POLICY.SET, some commands carrying REQID (some of them retried, some ids
 * reused for another command), and some commands chosen to be refused.
 *
 * The generator keeps a small model of the cluster (which GPUs are held
 * whole or claimed, which workers are cordoned, removed or held exclusively,
 * the exclusive policy) so that most placements fit; with it, it predicts
 * each command's outcome. The prediction follows the rules in state.h; the
 * test compares it with berth_state_apply, so a disagreement is a bug in one
 * of them. The prediction assumes the commands are applied in order, each
 * exactly once, starting from genesis.
 *
 * Usage:
 *     berth_gen_options o;
 *     berth_gen_options_default(&o, seed, workers);
 *     o.distributed_permille = 300;            // optional tuning
 *     berth_gen *g;
 *     if (berth_gen_init(&g, &o, err, sizeof err) != 0) ... err says why
 *     berth_gen_command c;
 *     for (...) { if (berth_gen_next(g, &c) != 0) ...out of memory...;
 *                 use c.text / c.words; }
 *     berth_gen_free(g);
 */
#ifndef BERTH_GEN_H
#define BERTH_GEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "names.h"
#include "state.h"

/* Bumped whenever the stream for given options changes (the unit test's
 * golden digest changes with it), so saved journals can say which
 * generator made them. */
#define BERTH_GEN_STREAM_VERSION 3

#define BERTH_GEN_WORKERS_MAX 1000000u     /* workers in one scenario */
#define BERTH_GEN_WORKER_GPUS_MAX 8        /* GPUs the generator gives one worker */
#define BERTH_GEN_SPAN_WORKERS_MAX 4       /* workers of one distributed DEPLOY */
#define BERTH_GEN_TEXT_LEN_MAX 512         /* one command's text, bytes incl. NUL */
#define BERTH_GEN_WORDS_MAX 32             /* words in one command */
#define BERTH_GEN_PERMILLE_MAX 1000u       /* fractions are integer permille: no floating point */
#define BERTH_GEN_PER_MILLION_MAX 1000000u /* rarer events are counted per million commands */

typedef struct berth_gen_options {
    uint64_t seed;
    uint32_t workers;               /* 1..BERTH_GEN_WORKERS_MAX; all are added first */
    uint32_t distributed_permille;  /* DEPLOYs spanning 2–4 workers; default 250 */
    uint32_t vram_permille;         /* DEPLOYs claiming VRAM rather than whole GPUs; default 350 */
    uint32_t reqid_permille;        /* commands carrying REQID; default 100 */
    uint32_t refusal_permille;      /* commands chosen to be refused; default 30 */
    uint32_t churn_permille;        /* CORDON / UNCORDON / REMOVE / re-ADD; default 20 */
    uint32_t policy_per_million;    /* POLICY.SET, an administrator's rare act; default 10 */
    uint32_t fill_permille;         /* GPU use the mix steers toward; default 700 */
} berth_gen_options;

/* Defaults for everything but seed and workers, which the caller gives. */
void berth_gen_options_default(berth_gen_options *options, uint64_t seed, uint32_t workers);

/* What the generator expects the authority to do with the command. */
typedef enum berth_gen_expect {
    BERTH_GEN_EXPECT_APPLIED = 0,   /* judged and journaled with outcome `code` */
    BERTH_GEN_EXPECT_RETRY,         /* same REQID and command as before: first outcome `code`, nothing appended */
    BERTH_GEN_EXPECT_CONFLICT       /* REQID reused for another command: refused, nothing appended */
} berth_gen_expect;

typedef enum berth_gen_intent {
    BERTH_GEN_INTENT_WORKER = 0,    /* the initial WORKER.ADD of every worker */
    BERTH_GEN_INTENT_PLAUSIBLE,     /* meant to succeed (may still be refused when nothing fits) */
    BERTH_GEN_INTENT_REFUSAL,       /* built to be refused */
    BERTH_GEN_INTENT_CHURN,         /* cordon, uncordon, remove, re-add, policy */
    BERTH_GEN_INTENT_REQID_REPLAY   /* a retry or a reused REQID */
} berth_gen_intent;

/* One generated command. text is canonical (upper-case keywords, GPU lists
 * ascending, labels sorted, single spaces) with " REQID <id>" appended when
 * it carries one; its first canonical_len bytes are exactly what
 * berth_cmd_canonical prints and the journal stores. words point into text. */
typedef struct berth_gen_command {
    char text[BERTH_GEN_TEXT_LEN_MAX];  /* NUL-terminated */
    uint32_t text_len;
    uint32_t canonical_len;
    uint32_t word_count;
    berth_str words[BERTH_GEN_WORDS_MAX];
    berth_cmd_kind kind;
    berth_gen_intent intent;
    berth_gen_expect expect;
    berth_code code;                /* predicted outcome (APPLIED, RETRY) */
    uint64_t index;                 /* 0-based position in the stream */
} berth_gen_command;

typedef struct berth_gen berth_gen;

/* Check options and allocate a generator (malloc; berth_gen_free releases
 * it). Returns 0, or -1 with a sentence starting "ERR" in err (options out
 * of range, or out of memory). */
int berth_gen_init(berth_gen **out, const berth_gen_options *options,
                   char *err, size_t err_size);
void berth_gen_free(berth_gen *gen);

/* Produce the next command. The stream never ends. Returns 0, or -1 when
 * the generator could not grow its model (out of memory): then nothing was
 * consumed and the generator is unchanged. */
int berth_gen_next(berth_gen *gen, berth_gen_command *out);

/* How far along the stream is and what the model believes now: for
 * reports and tests. */
typedef struct berth_gen_stats {
    uint64_t commands;              /* produced so far */
    uint64_t predicted_records;     /* of them, expected to append a record */
    uint64_t predicted_refusals;    /* expected to be journaled with a refusal */
    uint32_t workers_present;
    uint32_t workers_cordoned;
    uint64_t instances_live;
    uint64_t gpus_total;            /* on present workers */
    uint64_t gpus_used;             /* held whole or claimed */
} berth_gen_stats;
void berth_gen_get_stats(const berth_gen *gen, berth_gen_stats *out);

#endif
