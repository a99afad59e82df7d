/* state.h — the deterministic allocation state machine.
 *
 * berth_state is the worker-to-instance map that the journal replays into.
 * berth_state_apply is the only way a mutating command changes it, and the
 * only place the rules are checked: every worker of every placement, main and
 * subordinates alike, goes through the same checks in the same order. Apply
 * is a pure function of (state, command, seq): no clock, no I/O, no
 * randomness; hash tables are internal and never iterated for output —
 * every listing has one canonical order: names in memcmp order, a worker's
 * instances (BUSY's sentence) by the seq of their DEPLOY.
 *
 * Rules (the first failure decides; see README "The rules"):
 *   DEPLOY: EXISTS (instance), then for each listed worker in order:
 *     NOWORKER, CORDONED, NOGPU, EXCLUSIVE, GPUBUSY, NOVRAM.
 *   RELEASE: NOINSTANCE. WORKER.ADD: EXISTS. WORKER.CORDON/UNCORDON/REMOVE:
 *   NOWORKER; REMOVE also BUSY while the worker serves instances.
 *   POLICY.SET always succeeds.
 * Exclusivity is judged under the policy in force at each DEPLOY: a worker
 * holds at most one distributed instance whose backend is exclusive now.
 * A POLICY.SET re-marks existing instances but evicts nobody.
 *
 * Memory: every allocation goes through the allocator given at creation, and
 * apply allocates before it mutates, so a failed allocation leaves the state
 * exactly as it was (apply returns -1). */
#ifndef BERTH_STATE_H
#define BERTH_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "command.h"
#include "berth_limits.h"
#include "names.h"

typedef enum berth_code {
    BERTH_OK = 0,
    BERTH_EXISTS,
    BERTH_NOWORKER,
    BERTH_CORDONED,
    BERTH_NOGPU,
    BERTH_EXCLUSIVE,
    BERTH_GPUBUSY,
    BERTH_NOVRAM,
    BERTH_NOINSTANCE,
    BERTH_BUSY,
    BERTH_CODE_COUNT
} berth_code;

/* "OK", "EXISTS", ... — the code word a RESP error starts with. */
const char *berth_code_name(berth_code code);
/* Inverse of berth_code_name; false if unknown. */
bool berth_code_lookup(berth_str word, berth_code *out);

typedef enum berth_worker_status {
    BERTH_WORKER_ACTIVE = 0,
    BERTH_WORKER_CORDONED = 1
} berth_worker_status;

struct berth_instance;

typedef struct berth_gpu {
    const struct berth_instance *whole_holder;  /* NULL: not held whole */
    uint32_t claimed_mib;                        /* sum of VRAM claims */
    uint32_t claim_count;                        /* instances claiming VRAM */
} berth_gpu;

typedef struct berth_worker {
    berth_str name;                 /* owned by the state */
    uint32_t gpu_count;
    uint32_t vram_mib;              /* per GPU; 0: unknown, VRAM claims refused */
    berth_worker_status status;
    uint64_t added_seq;
    uint32_t label_count;
    berth_label *labels;            /* sorted by key; owned */
    berth_gpu *gpus;                /* gpu_count entries */
    uint32_t served_count;
    uint32_t served_cap;
    const struct berth_instance **served;  /* in deploy-seq order */
} berth_worker;

typedef struct berth_slot {
    const berth_worker *worker;
    uint64_t gpu_mask;              /* resolved: the GPUs actually taken */
} berth_slot;

typedef struct berth_instance {
    berth_str name;                 /* owned by the state */
    berth_str model;
    berth_str backend;
    uint32_t claim_mib;             /* 0: whole GPUs */
    uint64_t deploy_seq;
    bool distributed;               /* slot_count > 1 */
    bool exclusive;                 /* distributed and backend exclusive under the current policy */
    uint32_t slot_count;
    berth_slot *slots;              /* slots[0] is the main worker */
} berth_instance;

/* What one command did, for the caller's reply and the history index.
 * The strings point into the command or into the state; they stay valid
 * until the next apply. */
typedef struct berth_outcome {
    berth_code code;
    uint32_t sentence_len;
    char sentence[BERTH_SENTENCE_LEN_MAX];     /* NUL-terminated */
    berth_str instance;                        /* len 0: none touched */
    uint32_t worker_count;
    berth_str workers[BERTH_PLACEMENT_WORKERS_MAX];
    /* A refused DEPLOY touches every worker it lists; the one that refused
     * (NOWORKER ... NOVRAM) is workers[refused_by - 1]. 0: no listed worker
     * refused (EXISTS: the instance did), or not a refused DEPLOY. */
    uint32_t refused_by;
} berth_outcome;

typedef struct berth_allocator {
    void *(*alloc)(void *ctx, size_t size);
    void *(*realloc)(void *ctx, void *ptr, size_t size);
    void (*free)(void *ctx, void *ptr);
    void *ctx;
} berth_allocator;

typedef struct berth_state berth_state;

/* NULL allocator: libc. Returns NULL when out of memory. */
berth_state *berth_state_new(const berth_allocator *allocator);
void berth_state_free(berth_state *state);
/* The wording of outcome sentences. A journal record keeps the sentence it
 * was answered with, and verify compares it byte for byte, so a record is
 * judged again in the wording it was written in. Wording 1 is the first
 * one. Wording 2 reads better in four places:
 * - a cordon of a worker that serves nothing;
 * - BUSY for one instance ("release it");
 * - WORKER.ADD of 0 GPUs with VRAM;
 * - NOVRAM: the unit after the GPU's size, and, for a 0-GPU worker
 *   registered without VRAM, the reason that holds whatever VRAM it gets.
 * Codes and state never depend on it. A new state answers in
 * BERTH_WORDING_CURRENT; the journal ties each record to a wording by its
 * format version (journal.h), and replay sets the wording for each record it
 * applies (berth_state_set_wording), then sets it back. */
#define BERTH_WORDING_MIN 1
#define BERTH_WORDING_CURRENT 2
void berth_state_set_wording(berth_state *state, uint32_t wording);

/* Released instances' blocks are kept (up to a bound) for later DEPLOYs;
 * trim hands them back to the allocator. The state means the same after. */
void berth_state_trim(berth_state *state);

/* Apply one parsed command as journal record `seq` (must be last_seq + 1).
 * canonical: the command's canonical text, remembered with its REQID so a
 * retry can be told from a different command. Returns 0 with out filled (a
 * refusal is still 0: the record is journaled), or -1 when an allocation
 * failed: then the state is unchanged and seq is not consumed. */
int berth_state_apply(berth_state *state, const berth_cmd *cmd, berth_str canonical,
                      uint64_t seq, berth_outcome *out);

/* Replay's fast path: exactly berth_state_apply — same code, same touched
 * names, same change — but out->sentence is left empty unless the command
 * carries a REQID (the window remembers that sentence). */
int berth_state_apply_quiet(berth_state *state, const berth_cmd *cmd, berth_str canonical,
                            uint64_t seq, berth_outcome *out);

/* Rejudge's path: exactly berth_state_apply, but the sentence is built only
 * when the code differs from expected (or the command carries a REQID);
 * otherwise out->sentence is empty, as with apply_quiet. */
int berth_state_apply_expect(berth_state *state, const berth_cmd *cmd, berth_str canonical,
                             uint64_t seq, berth_code expected, berth_outcome *out);

/* Request-id window: before journaling a command that carries a REQID.
 * Returns BERTH_REQID_NEW (apply it), BERTH_REQID_RETRY (same command: answer
 * with hit, append nothing) or BERTH_REQID_CONFLICT (the id was used for a
 * different command at hit->seq: refuse, append nothing). */
typedef enum { BERTH_REQID_NEW = 0, BERTH_REQID_RETRY, BERTH_REQID_CONFLICT } berth_reqid_status;
/* A command's identity in the window: the first 16 bytes of SHA-256 of its
 * canonical text (command_id.c says why 16). */
#define BERTH_COMMAND_ID_LEN 16
typedef struct berth_reqid_entry {
    berth_str reqid;
    uint8_t command_id[BERTH_COMMAND_ID_LEN];   /* berth_command_id of the canonical text */
    uint64_t seq;
    berth_code code;
    berth_str sentence;
} berth_reqid_entry;
berth_reqid_status berth_state_reqid_check(const berth_state *state, berth_str reqid,
                                           berth_str canonical, berth_reqid_entry *hit);
void berth_command_id(berth_str canonical, uint8_t id[BERTH_COMMAND_ID_LEN]);
/* FNV-1a 64 of a text: cheap, for hash tables only, never an identity
 * (a client can find two commands with one FNV in minutes). */
uint64_t berth_command_hash(berth_str canonical);

/* What apply and the window check work out from a command alone, before
 * they read the state: replay computes it where it parses (on its feeder
 * thread whenever the feeder is ahead) while the applier is busy with
 * earlier records.
 * Only a command with a REQID has any; the names' hashes travel in cmd. */
typedef struct berth_precomputed {
    uint64_t reqid_hash;            /* berth_name_hash(cmd->reqid) */
    uint8_t command_id[BERTH_COMMAND_ID_LEN];   /* berth_command_id(canonical) */
} berth_precomputed;

/* Fill pre for cmd and its canonical text. false: cmd's REQID is not a
 * valid name (pre is then not to be used). */
bool berth_state_precompute(const berth_cmd *cmd, berth_str canonical, berth_precomputed *pre);
/* The same, with the identity the caller worked out: the first
 * BERTH_COMMAND_ID_LEN bytes of SHA-256 of the canonical text, worked out
 * where the caller has a core to spare (replay: on its parsing thread).
 * Debug and sanitizer builds check it when it is applied. */
bool berth_state_precompute_id(const berth_cmd *cmd, const uint8_t id[BERTH_COMMAND_ID_LEN],
                               berth_precomputed *pre);

/* berth_state_reqid_check for a command with a REQID, from pre. */
berth_reqid_status berth_state_reqid_check_precomputed(const berth_state *state, const berth_cmd *cmd,
                                                       const berth_precomputed *pre,
                                                       berth_reqid_entry *hit);

/* berth_state_apply (quiet: berth_state_apply_quiet), same outcome and same
 * change, for a command whose carried hashes are exact: cmd as
 * berth_cmd_parse or berth_cmd_parse_text left it (or after
 * berth_cmd_hash_names), names unchanged since, and pre from
 * berth_state_precompute on it. Apply then trusts a lookup that misses
 * (berth_state_apply re-probes with a recomputed hash) and hashes nothing.
 * Debug and sanitizer builds check the hashes. */
int berth_state_apply_precomputed(berth_state *state, const berth_cmd *cmd, berth_str canonical,
                                  uint64_t seq, const berth_precomputed *pre, bool quiet,
                                  berth_outcome *out);

/* Queries. Pointers stay valid until the next apply/restore/free. */
uint64_t berth_state_last_seq(const berth_state *state);
size_t berth_state_worker_count(const berth_state *state);
size_t berth_state_instance_count(const berth_state *state);
const berth_worker *berth_state_worker(const berth_state *state, berth_str name);
const berth_instance *berth_state_instance(const berth_state *state, berth_str name);
/* Fill out[0..n) sorted by name; returns n (all of them if cap allows;
 * callers size out with *_count). */
size_t berth_state_workers_sorted(const berth_state *state, const berth_worker **out, size_t cap);
size_t berth_state_instances_sorted(const berth_state *state, const berth_instance **out, size_t cap);
/* The same listings with only what keep accepts (ctx passed through), in
 * the same order: filtered before sorting, so a listing that keeps few
 * sorts few. keep must not change the state.
 * These and berth_state_digest keep what they worked out in the state until
 * its next change (apply, restore, set_last_seq), through its allocator (a
 * failed allocation only skips that): like apply, not to be called on one
 * state from two threads at once. */
typedef bool (*berth_worker_keep)(const berth_worker *worker, void *ctx);
typedef bool (*berth_instance_keep)(const berth_instance *instance, void *ctx);
size_t berth_state_workers_select(const berth_state *state, berth_worker_keep keep, void *ctx,
                                  const berth_worker **out, size_t cap);
size_t berth_state_instances_select(const berth_state *state, berth_instance_keep keep, void *ctx,
                                    const berth_instance **out, size_t cap);
/* replay/'s digest of this state as last computed (false: none since the
 * last change), and where it keeps one. */
#define BERTH_STATE_DIGEST_LEN 32
bool berth_state_digest_cached(const berth_state *state, uint8_t digest[BERTH_STATE_DIGEST_LEN]);
void berth_state_digest_keep(const berth_state *state, const uint8_t digest[BERTH_STATE_DIGEST_LEN]);
/* Exclusive backends, sorted. */
uint32_t berth_state_policy(const berth_state *state, const berth_str **backends);
bool berth_state_backend_exclusive(const berth_state *state, berth_str backend);
/* Worker helpers. */
const berth_instance *berth_worker_exclusive_holder(const berth_worker *worker);
uint64_t berth_worker_free_gpu_mask(const berth_worker *worker);  /* no holder, no claims */
/* Request-id window, oldest first: i in [0, count). */
size_t berth_state_reqid_count(const berth_state *state);
void berth_state_reqid_at(const berth_state *state, size_t i, berth_reqid_entry *out);

/* Restore (snapshot load): rebuild a state without judging. Call on a new
 * state: policy, then workers, then instances in deploy-seq order, then
 * request ids oldest first, then set_last_seq. Each returns 0, or -1 on
 * allocation failure or input that breaks an invariant (unknown worker,
 * GPU held twice, duplicate name): a snapshot that fails is not used. */
int berth_state_restore_policy(berth_state *state, const berth_str *backends, uint32_t count);
int berth_state_restore_worker(berth_state *state, berth_str name, uint32_t gpu_count,
                               uint32_t vram_mib, berth_worker_status status, uint64_t added_seq,
                               const berth_label *labels, uint32_t label_count);
int berth_state_restore_instance(berth_state *state, berth_str name, berth_str model,
                                 berth_str backend, uint32_t claim_mib, uint64_t deploy_seq,
                                 const berth_str *workers, const uint64_t *gpu_masks,
                                 uint32_t slot_count);
int berth_state_restore_reqid(berth_state *state, const berth_reqid_entry *entry);
void berth_state_set_last_seq(berth_state *state, uint64_t seq);

/* Replay's cache hint for a command it will apply a few records from now:
 * start loading what applying it will read, so the misses overlap instead
 * of stalling apply one after another. Stage 0 fetches the table slots the
 * command's names hash to; stage 1, a few records later (once those slots
 * have arrived), the workers and the instance they point to; stage 2, later
 * still, the workers a RELEASE's instance holds. It reads the state as it is
 * at the call and changes nothing: not the state, not any outcome. A hint
 * the records in between made stale (a name released, a table grown) only
 * costs its loads. */
#define BERTH_PREFETCH_STAGES 3u
void berth_state_prefetch(const berth_state *state, const berth_cmd *cmd, uint32_t stage);
/* Every stage at once, each for its own command (c[stage]; NULL: none),
 * in one call: what replay issues for each record it applies. Same effect as
 * berth_state_prefetch(state, c[stage], stage) for each stage. */
void berth_state_prefetch_stages(const berth_state *state, const berth_cmd *const c[BERTH_PREFETCH_STAGES]);
/* The request-id window's table slot that a command's REQID hashes to
 * (berth_precomputed's reqid_hash): the REQID check and the insert after
 * apply both read it, and it is as cold as any table slot. A stage-0 hint,
 * for the command the stage-0 hint above is given. */
void berth_state_prefetch_reqid(const berth_state *state, uint64_t reqid_hash);

/* Check every structural invariant (asserts in debug builds call it after
 * each apply in tests): no GPU held twice, claims within VRAM, served lists
 * consistent with slots, no two exclusive holders on a worker unless the
 * policy changed in between. Returns true when all hold; else writes why. */
bool berth_state_check(const berth_state *state, char *why, size_t why_size);

#endif
