/* replay.c — owns the road from journal to state: applying one record,
 * replaying a range (from genesis or from a checked snapshot), and verifying
 * the whole chain.
 *
 * Why it is shaped this way: replay runs on every start, every `AT <seq>`
 * query and every audit, over journals of tens of millions of records, so
 * the hot loop allocates nothing and can split across two threads: a feeder
 * walks the LMDB cursor into a bounded ring of chunks, while the caller's
 * thread applies and compares. The steps between (hash, decode, parse) go
 * to whichever thread has room: the feeder takes them for a chunk when it
 * is far ahead of the applier and leaves them when it is not, so both cores
 * stay busy whether apply or SHA-256 is the heavier half. Both threads run
 * the same per-record functions in the same order, whoever runs them and
 * whether or not a second thread is used, so the result cannot depend on
 * the split. Decoded records point into the LMDB map, which stays valid
 * while the reader (an MDB_NOTLS read transaction) is open.
 *
 * Every record is checked as it goes by: its seq follows the previous one
 * and its prev_hash equals the previous record's hash (a 32-byte compare).
 * Recomputing each record's SHA-256, checking its command is spelt exactly
 * as berthd spells it (canonical) and comparing outcomes is verify's job
 * (and the engine's, over the tail it opens on). */
#include <assert.h>
#include <inttypes.h>
#include <pthread.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "berth_sanitized.h"
#include "replay.h"
#include "replay_internal.h"

/* Non-temporal stores where the ISA has them; sanitizers do not see such a
 * store (GCC instruments none), so their builds copy plainly and keep
 * checking every write into the ring. */
#if defined(__SSE2__) && !BERTH_SANITIZED
#define REPLAY_STREAM_ITEMS 1
#include <emmintrin.h>
#else
#define REPLAY_STREAM_ITEMS 0
#endif

#ifndef REPLAY_CHUNK_RECORDS  /* a build may override these two to measure other shapes */
#define REPLAY_CHUNK_RECORDS 256        /* records handed between threads at once */
#endif
#ifndef REPLAY_RING_CHUNKS
#define REPLAY_RING_CHUNKS 16           /* chunks in flight: bounds the feeder's lead (1.3 MB) */
#endif
/* A feeder that finds the ring full sleeps until the applier has drained it
 * to this fill, not until one chunk is free. The applier is the slower half
 * of a replay, so the ring is full most of the time; woken for every chunk,
 * the feeder slept and was woken once a chunk (41,000 context switches in a
 * 10M-record replay, each a dear trip through this VM's hypervisor); woken
 * at half a ring of 16, at most once every eight chunks (1,157 context
 * switches in the same replay). The feeder then fills while the applier
 * drains the rest; a wake slower than eight chunks' apply leaves the
 * applier idle a moment (twice in seven wakes in a review's trace; the
 * bench's rate still rose, docs/bench.md "Session 19"). A yield (berthd's long jobs) still waits for the
 * chunks already read: at most a ring, 4,096 records, ~1 ms. */
#ifndef REPLAY_RING_RESUME
#define REPLAY_RING_RESUME (REPLAY_RING_CHUNKS / 2)
#endif
_Static_assert(REPLAY_RING_RESUME < REPLAY_RING_CHUNKS, "a full ring must drain before its feeder wakes");
#ifndef REPLAY_PIPELINE_RECORDS_MIN   /* a build may override it to measure one thread alone */
#define REPLAY_PIPELINE_RECORDS_MIN 16384  /* fewer: a second thread costs more than it saves */
#endif
#ifndef REPLAY_PREFETCH_AHEAD
#define REPLAY_PREFETCH_AHEAD 3         /* records between two stages of a cache hint */
#endif
#ifndef REPLAY_PREPARE_AHEAD
#define REPLAY_PREPARE_AHEAD 4          /* items between a hint and the step that reads it */
#endif
#define SINK_SLOTS 16                   /* unpacked commands: power of two, > the hints' reach */
#define REPLAY_SNAPSHOT_TRIES_MAX 64    /* bad snapshots skipped before falling back to genesis */
#define REPLAY_WHY_LEN_MAX 512
#define REPLAY_QUOTE_LEN_MAX 160        /* sentence bytes quoted in a verify report */
#define REPLAY_VERIFY_SNAPSHOTS_MAX (1u << 20)  /* snapshots verify lists (32 are kept since session 5) */

typedef enum feed_status { FEED_MORE = 0, FEED_END, FEED_FAIL } feed_status;

/* The first thing that went wrong, with the seq it went wrong at. */
typedef struct replay_fail {
    berth_jerr err;
    uint64_t seq;
    char why[REPLAY_WHY_LEN_MAX];
} replay_fail;

/* One placement as an item carries it: a berth_place in 32 bytes. */
typedef struct feed_place {
    const char *worker;
    uint64_t gpu_mask;
    uint64_t worker_hash;
    uint32_t worker_len;
    uint32_t all_gpus;
} feed_place;

#define FEED_PLACES_INLINE 4   /* placements an item carries; a command with more goes whole */

/* One record between the threads. The feeder writes it (streamed from its
 * stage: item_stream) and the applier reads it on the other core, so every
 * line of it that is written crosses between the cores: it carries only what
 * apply reads, packed into its first lines, not the decoded record and the
 * parsed command (~480 bytes over eight lines). The applier unpacks it into
 * a berth_cmd of its own (its slots), in lines that never leave its core.
 * A command that does not fit (labels, a policy, more placements than
 * FEED_PLACES_INLINE) is marked ITEM_WHOLE, and the applier parses it
 * again from the record: the same function over the same bytes. */
typedef struct feed_item {
    /* Line 0: the cursor's part, and what every apply reads. Items start
     * on a line (chunks are allocated line-aligned), so these are lines. */
    _Alignas(64) uint64_t seq;
    const uint8_t *raw;
    const uint8_t *prev_hash_at;    /* the hash prev_hash must equal: the trailer of the record before */
    uint32_t raw_len;
    uint16_t done;                  /* ITEM_* marks */
    uint8_t kind;                   /* valid once parsed, as all below: berth_cmd_kind */
    uint8_t place_count;
    uint32_t version;
    uint32_t claim_mib;
    const char *name;
    uint64_t name_hash;
    uint32_t name_len;
    uint32_t command_len;
    /* Line 1. */
    const char *command;            /* the record's canonical text */
    const char *model;
    const char *backend;
    uint32_t model_len;
    uint32_t backend_len;
    uint32_t gpu_count;
    uint32_t vram_mib;
    const char *reqid;
    uint32_t reqid_len;
    uint32_t code;                  /* the recorded outcome, for verify's compare */
    uint32_t sentence_len;
    /* Lines 2 and 3: the placements. */
    feed_place place[FEED_PLACES_INLINE];
    /* Line 4, read only with a REQID or by verify. */
    const char *sentence;
    berth_precomputed pre;          /* the REQID's hashes, on whichever thread parsed */
} feed_item;

_Static_assert(offsetof(feed_item, command) == 64, "an item's apply fields fill its first line");
_Static_assert(offsetof(feed_item, place) == 128, "placements start the third line");
_Static_assert(sizeof(feed_item) % 64 == 0, "every item of an array starts on a line");

/* The per-record steps before apply, in the order they always run. Either
 * thread may take them; the sink takes whatever the feeder left, so the same
 * checks run in the same order and a run's result never depends on the split. */
#define ITEM_HASHED 1u
#define ITEM_PARSED 2u     /* decoded, parsed, chain-checked, and packed into the item */
#define ITEM_WHOLE 4u      /* parsed, but the command did not fit: the applier parses it again */
#define ITEM_REQID_OK 8u   /* parsed: the REQID is a valid name (or absent) */

/* How much the feeder does for a chunk: chosen from how far ahead of the
 * sink it is, so the two threads share the work whichever half is heavier. */
typedef enum feed_level { FEED_LEVEL_READ = 0, FEED_LEVEL_HASH = 1, FEED_LEVEL_ALL = 2 } feed_level;

/* What the feeder does per record; the sink does the rest. */
typedef struct feed_source {
    berth_journal_cursor *cursor;
    uint64_t next_seq;              /* the seq that must come next */
    uint64_t first_seq;             /* where the range began */
    uint64_t last_seq;              /* inclusive end of the range (lowered by a yield) */
    berth_replay_yield_fn yield;    /* NULL, or asked between chunks whether to stop */
    void *yield_arg;
    bool hash;                      /* recompute each record's SHA-256; its text canonical too */
    feed_level level;               /* the feeder's share of the current chunk */
    const uint8_t *last_hash_at;    /* the last record read's trailer (start_hash before the first) */
    uint8_t start_hash[BERTH_HASH_LEN];  /* the hash the range's first record must link to */
    berth_str words[BERTH_ARGS_MAX];  /* parse scratch, feeder thread only */
    berth_cmd cmd;                  /* parse scratch, feeder thread only */
} feed_source;

typedef struct replay_sink {
    berth_state *state;
    bool hash;                      /* recompute each record's SHA-256; its text canonical too */
    bool compare;                   /* outcomes must equal the recorded ones */
    berth_touched_fn touched_fn;    /* NULL, or given each record's names after apply */
    void *touched_ctx;
    berth_str words[BERTH_ARGS_MAX];  /* parse scratch, sink thread only */
    berth_cmd cmd;                  /* parse scratch, sink thread only */
    /* Items unpacked for apply and for the state's hints ahead of it: item
     * k of a chunk in slot k % SINK_SLOTS, from its stage-0 hint to its
     * apply. Only their first lines are ever written. */
    berth_cmd slots[SINK_SLOTS];
    uint8_t prev_hash[BERTH_HASH_LEN];  /* the last applied record's hash (between runs, not during) */
    uint64_t applied;
    berth_outcome out;              /* reused for every record: no per-record stack churn */
    replay_fail prepare_fail;       /* a failure found ahead of apply, reported in its turn */
} replay_sink;

_Static_assert((SINK_SLOTS & (SINK_SLOTS - 1)) == 0 &&
               SINK_SLOTS > BERTH_PREFETCH_STAGES * REPLAY_PREFETCH_AHEAD,
               "a slot outlives its item's hints: from the stage-0 hint to apply");


static feed_status fail_set(replay_fail *fail, berth_jerr err, uint64_t seq, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static feed_status fail_set(replay_fail *fail, berth_jerr err, uint64_t seq, const char *fmt, ...) {
    assert(err != BERTH_J_OK);
    fail->err = err;
    fail->seq = seq;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(fail->why, sizeof(fail->why), fmt, ap);
    va_end(ap);
    assert(n >= 0);
    return FEED_FAIL;
}

static void err_copy(char *err, size_t err_size, const char *why) {
    if (err == NULL || err_size == 0) return;
    snprintf(err, err_size, "%s", why);
}

/* ------------------------------------------------------------ one record */

/* The text parsed but berthd would have written it otherwise ("release x",
 * GPUs out of order, a REQID inside the text): say both spellings. */
static berth_jerr not_canonical(const berth_record *rec, const berth_cmd *cmd, char *why, size_t why_size) {
    char canon[BERTH_COMMAND_LEN_MAX];
    size_t n = berth_cmd_canonical(cmd, canon, sizeof(canon));
    int quote = REPLAY_QUOTE_LEN_MAX;
    snprintf(why, why_size, "seq %" PRIu64 ": command is not in canonical form: \"%.*s\" is written \"%.*s\"",
             rec->seq, rec->command.len < (size_t)quote ? (int)rec->command.len : quote, rec->command.ptr,
             n < (size_t)quote ? (int)n : quote, canon);
    return BERTH_J_CORRUPT;
}

/* Parse a record's canonical text into cmd (pointing into the record), and
 * work out what apply would from the command alone (pre; *reqid_ok: its
 * REQID, if any, is a valid name, which apply checks in its turn).
 * canonical: the text must also be exactly the canonical spelling (verify,
 * and the tail the engine opens on; see docs/reliability.md). */
static berth_jerr replay_parse(const berth_record *rec, bool canonical, berth_cmd *cmd, berth_str *words,
                               berth_precomputed *pre, bool *reqid_ok, char *why, size_t why_size) {
    char perr[BERTH_ERR_LEN_MAX];
    if (berth_cmd_parse_text(cmd, rec->command.ptr, rec->command.len, words, BERTH_ARGS_MAX,
                             perr, sizeof(perr)) != 0) {
        snprintf(why, why_size, "seq %" PRIu64 ": command does not parse: %s", rec->seq, perr);
        return BERTH_J_CORRUPT;
    }
    if (canonical && !berth_cmd_is_canonical(cmd, rec->command.ptr, rec->command.len)) {
        return not_canonical(rec, cmd, why, why_size);
    }
    /* The journal stores the REQID beside the canonical text, not in it;
     * re-attaching it is what rebuilds the request-id window. */
    cmd->reqid = rec->reqid;
    if (cmd->reqid.len == 0) {   /* nine records in ten: nothing to work out, and no call */
        *pre = (berth_precomputed){ 0 };
        *reqid_ok = true;
    } else {
        uint8_t digest[BERTH_HASH_LEN];   /* on whichever thread parses, not the applier */
        berth_sha256(rec->command.ptr, rec->command.len, digest);
        *reqid_ok = berth_state_precompute_id(cmd, digest, pre);
    }
    return BERTH_J_OK;
}

/* The REQID checks before apply (which asserts them): a valid name, and
 * not one still in the window. The engine never journals a retry, so a
 * request id already in the window means something else wrote the journal. */
static bool reqid_refused(const berth_state *state, const berth_cmd *cmd, const berth_precomputed *pre,
                          bool reqid_ok, uint64_t seq, char *why, size_t why_size) {
    assert(cmd->reqid.len > 0);
    if (!reqid_ok) {
        snprintf(why, why_size, "seq %" PRIu64 ": request id is not a valid name (1-128 bytes of [A-Za-z0-9._:/-])",
                 seq);
        return true;
    }
    berth_reqid_entry hit;
    if (berth_state_reqid_check_precomputed(state, cmd, pre, &hit) != BERTH_REQID_NEW) {
        snprintf(why, why_size, "seq %" PRIu64 ": request id %.*s repeats the one of seq %" PRIu64
                 ", still in the window", seq, (int)cmd->reqid.len, cmd->reqid.ptr, hit.seq);
        return true;
    }
    return false;
}

int berth_replay_reqid_check(const berth_state *state, const berth_cmd *cmd, berth_str canonical,
                             uint64_t seq, char *err, size_t err_size) {
    assert(state != NULL && cmd != NULL);
    if (cmd->reqid.len == 0) return 0;
    berth_precomputed pre;
    bool reqid_ok = berth_state_precompute(cmd, canonical, &pre);
    char why[REPLAY_WHY_LEN_MAX];
    if (!reqid_refused(state, cmd, &pre, reqid_ok, seq, why, sizeof(why))) return 0;
    err_copy(err, err_size, why);
    return -1;
}

/* Apply a parsed record: seq, its format version and its canonical text.
 * quiet: the caller never reads the sentence (replay, not verify), so core
 * may skip formatting it. */
static berth_jerr replay_apply_parsed(berth_state *state, uint64_t seq, uint32_t version, berth_str command,
                                      const berth_cmd *cmd, const berth_precomputed *pre, bool reqid_ok,
                                      bool quiet, berth_outcome *out, char *why, size_t why_size) {
    assert(state != NULL && cmd != NULL && out != NULL);
    uint64_t last = berth_state_last_seq(state);
    if (seq != last + 1) {
        snprintf(why, why_size, "seq %" PRIu64 " does not follow seq %" PRIu64, seq, last);
        return BERTH_J_CORRUPT;
    }
    if (cmd->reqid.len > 0 && reqid_refused(state, cmd, pre, reqid_ok, seq, why, why_size)) {
        return BERTH_J_CORRUPT;
    }
    /* cmd is as replay_parse left it, so its carried hashes are exact. A
     * record of an older version is judged in its own wording, and the
     * state answers in the current one again right after. */
    bool current = version == BERTH_RECORD_VERSION;
    if (!current) berth_state_set_wording(state, berth_record_wording(version));
    int rc = berth_state_apply_precomputed(state, cmd, command, seq, pre, quiet, out);
    if (!current) berth_state_set_wording(state, BERTH_WORDING_CURRENT);
    if (rc != 0) {
        snprintf(why, why_size, "seq %" PRIu64 ": out of memory applying the record", seq);
        return BERTH_J_NOMEM;
    }
    assert(berth_state_last_seq(state) == seq);
    return BERTH_J_OK;
}

static berth_jerr replay_apply(berth_state *state, const berth_record *rec, berth_outcome *out,
                               char *why, size_t why_size) {
    berth_str words[BERTH_ARGS_MAX];
    berth_cmd cmd;
    berth_precomputed pre;
    bool reqid_ok = false;
    berth_jerr e = replay_parse(rec, true, &cmd, words, &pre, &reqid_ok, why, why_size);
    if (e != BERTH_J_OK) return e;
    return replay_apply_parsed(state, rec->seq, rec->version, rec->command, &cmd, &pre, reqid_ok, false, out,
                               why, why_size);
}

berth_touched berth_outcome_touched(const berth_outcome *out) {
    assert(out != NULL && out->worker_count <= BERTH_PLACEMENT_WORKERS_MAX);
    berth_touched t = { out->instance, out->worker_count,
                        out->worker_count > 0 ? out->workers : NULL };
    return t;
}

int berth_replay_record(berth_state *state, const berth_record *rec, berth_outcome *out,
                        char *err, size_t err_size) {
    char why[REPLAY_WHY_LEN_MAX];
    berth_jerr e = replay_apply(state, rec, out, why, sizeof(why));
    if (e == BERTH_J_OK) return 0;
    err_copy(err, err_size, why);
    return -1;
}

/* ------------------------------------------------------- feeder and sink */

static feed_status decode_item(const feed_item *item, berth_record *rec, replay_fail *fail) {
    char why[REPLAY_WHY_LEN_MAX / 2];
    why[0] = '\0';
    if (berth_record_decode(item->raw, item->raw_len, rec, why, sizeof(why)) != BERTH_J_OK) {
        return fail_set(fail, BERTH_J_CORRUPT, item->seq, "seq %" PRIu64 ": undecodable: %s",
                        item->seq, why[0] ? why : "bad record");
    }
    if (rec->seq != item->seq) {
        return fail_set(fail, BERTH_J_CORRUPT, item->seq, "seq %" PRIu64 ": record says seq %" PRIu64,
                        item->seq, rec->seq);
    }
    return FEED_MORE;
}

/* Does the command fit an item? Everything replay's journals mostly hold
 * does: deploys on up to four workers, releases, workers without labels. */
static bool cmd_packs(const berth_cmd *cmd) {
    return cmd->place_count <= FEED_PLACES_INLINE && cmd->label_count == 0 && cmd->backend_count == 0;
}

/* What apply reads of a parsed record, into the item's first lines. */
static void item_pack(feed_item *item, const berth_record *rec, const berth_cmd *cmd) {
    assert(rec->seq == item->seq);
    item->version = rec->version;
    item->command = rec->command.ptr;
    item->command_len = rec->command.len;
    item->code = rec->code;
    item->sentence = rec->sentence.ptr;
    item->sentence_len = rec->sentence.len;
    item->kind = (uint8_t)cmd->kind;
    item->reqid = cmd->reqid.ptr;
    item->reqid_len = cmd->reqid.len;
    if (!cmd_packs(cmd)) {
        item->done |= ITEM_WHOLE;
        return;
    }
    item->name = cmd->name.ptr;
    item->name_len = cmd->name.len;
    item->name_hash = cmd->name_hash;
    item->gpu_count = cmd->gpu_count;
    item->vram_mib = cmd->vram_mib;
    item->claim_mib = cmd->claim_mib;
    item->model = cmd->model.ptr;
    item->model_len = cmd->model.len;
    item->backend = cmd->backend.ptr;
    item->backend_len = cmd->backend.len;
    item->place_count = (uint8_t)cmd->place_count;
    for (uint32_t i = 0; i < cmd->place_count; i++) {
        const berth_place *pl = &cmd->place[i];
        item->place[i] = (feed_place){ pl->worker.ptr, pl->gpu_mask, pl->worker_hash, pl->worker.len,
                                       pl->all_gpus };
    }
}

/* Decode, parse (canonical: the spelling checked too) and chain-check one
 * record, then pack it into its item. cmd and words are the calling
 * thread's scratch. The chain check compares prev_hash with the trailer of
 * the record before, which is that record's hash once it decodes; one
 * that does not decode fails before this one is looked at. */
static feed_status decode_parse_item(feed_item *item, bool canonical, berth_cmd *cmd, berth_str *words,
                                     replay_fail *fail) {
    berth_record rec;
    if (decode_item(item, &rec, fail) != FEED_MORE) return FEED_FAIL;
    bool reqid_ok = false;
    berth_jerr e = replay_parse(&rec, canonical, cmd, words, &item->pre, &reqid_ok, fail->why, sizeof(fail->why));
    if (e != BERTH_J_OK) {
        fail->err = e;
        fail->seq = item->seq;
        return FEED_FAIL;
    }
    if (memcmp(rec.prev_hash, item->prev_hash_at, BERTH_HASH_LEN) != 0) {
        if (rec.seq == 1) {
            return fail_set(fail, BERTH_J_CORRUPT, 1, "seq 1: prev_hash is not the genesis zeros");
        }
        return fail_set(fail, BERTH_J_CORRUPT, rec.seq,
                        "seq %" PRIu64 ": prev_hash does not match seq %" PRIu64 "'s hash",
                        rec.seq, rec.seq - 1);
    }
    if (reqid_ok) item->done |= ITEM_REQID_OK;
    item_pack(item, &rec, cmd);
    return FEED_MORE;
}

/* A hash that fails may be a record that does not even decode (truncated,
 * unknown version): say so, since that is the more useful description. */
static feed_status hash_item(const feed_item *item, replay_fail *fail) {
    if (berth_record_hash_ok(item->raw, item->raw_len)) return FEED_MORE;
    berth_record rec;
    if (decode_item(item, &rec, fail) != FEED_MORE) return FEED_FAIL;
    return fail_set(fail, BERTH_J_CORRUPT, item->seq, "seq %" PRIu64 ": hash mismatch (record bytes changed)",
                    item->seq);
}

/* Load a record's bytes into the cache ahead of the steps that read them:
 * the cursor touched only the node's first line, and the hash check's
 * first read (the trailer, the last line) otherwise waits on memory. */
static void prefetch_raw(const uint8_t *raw, size_t raw_len) {
    uintptr_t at = (uintptr_t)raw & ~(uintptr_t)63;
    uintptr_t end = (uintptr_t)raw + raw_len;
    for (; at < end; at += 64) __builtin_prefetch((const void *)at);
}

/* The cursor's part of one record: its bytes, not yet looked at. */
static feed_status read_one(feed_source *src, feed_item *item, replay_fail *fail) {
    assert(src->cursor != NULL);
    if (src->next_seq > src->last_seq) return FEED_END;
    uint64_t want = src->next_seq;
    uint64_t seq = 0;
    const uint8_t *raw = NULL;
    size_t raw_len = 0;
    berth_jerr e = berth_journal_cursor_next_raw(src->cursor, &seq, &raw, &raw_len);
    if (e == BERTH_J_NOTFOUND) {
        return fail_set(fail, BERTH_J_CORRUPT, want, "seq %" PRIu64 " missing (journal ends at %" PRIu64 ")",
                        want, want - 1);
    }
    if (e == BERTH_J_CORRUPT || (e == BERTH_J_OK && seq != want)) {
        return fail_set(fail, BERTH_J_CORRUPT, want, "seq %" PRIu64 " missing (gap after %" PRIu64 ")",
                        want, want - 1);
    }
    if (e != BERTH_J_OK) {
        return fail_set(fail, e, want, "seq %" PRIu64 ": journal read failed (%s)", want, berth_jerr_name(e));
    }
    assert(raw_len <= UINT32_MAX);   /* a record is at most a few KB */
    item->seq = seq;
    item->raw = raw;
    item->raw_len = (uint32_t)raw_len;
    item->done = 0;
    item->prev_hash_at = src->last_hash_at;
    /* A record shorter than its hash never decodes, so what stands here
     * for it is never compared. */
    src->last_hash_at = raw_len >= BERTH_HASH_LEN ? raw + raw_len - BERTH_HASH_LEN : src->start_hash;
    src->next_seq = want + 1;
    prefetch_raw(raw, raw_len);
    return FEED_MORE;
}

/* The steps the feeder takes for a record it read, by its level. */
static feed_status feed_steps(feed_source *src, feed_item *item, replay_fail *fail) {
    if (src->level >= FEED_LEVEL_HASH) {
        if (src->hash && hash_item(item, fail) != FEED_MORE) return FEED_FAIL;
        item->done |= ITEM_HASHED;
    }
    if (src->level >= FEED_LEVEL_ALL) {
        if (decode_parse_item(item, src->hash, &src->cmd, src->words, fail) != FEED_MORE) return FEED_FAIL;
        item->done |= ITEM_PARSED;
    }
    return FEED_MORE;
}

static const char *code_word(uint32_t code) {
    return code < BERTH_CODE_COUNT ? berth_code_name((berth_code)code) : "an unknown code";
}

static feed_status compare_outcome(const feed_item *item, const berth_outcome *out, replay_fail *fail) {
    if (item->code != (uint32_t)out->code) {
        return fail_set(fail, BERTH_J_CORRUPT, item->seq, "seq %" PRIu64 ": recorded %s but replay gives %s",
                        item->seq, code_word(item->code), code_word((uint32_t)out->code));
    }
    if (item->sentence_len != out->sentence_len ||
        memcmp(item->sentence, out->sentence, out->sentence_len) != 0) {
        int rl = (int)(item->sentence_len < REPLAY_QUOTE_LEN_MAX ? item->sentence_len : REPLAY_QUOTE_LEN_MAX);
        int ol = (int)(out->sentence_len < REPLAY_QUOTE_LEN_MAX ? out->sentence_len : REPLAY_QUOTE_LEN_MAX);
        return fail_set(fail, BERTH_J_CORRUPT, item->seq,
                        "seq %" PRIu64 ": recorded sentence \"%.*s\" but replay gives \"%.*s\"",
                        item->seq, rl, item->sentence, ol, out->sentence);
    }
    return FEED_MORE;
}

/* The steps before apply that the feeder left, for items [0, count) in
 * order. Returns how many are ready: count, or the index of the first that
 * failed, with its failure in *fail. */
static uint32_t prepare_items(replay_sink *sink, feed_item *items, uint32_t count, replay_fail *fail) {
    for (uint32_t k = 0; k < count; k++) {
        feed_item *item = &items[k];
        /* The feeder wrote the items on the other core: hint the item two
         * steps ahead, and the bytes of the one a step ahead when this
         * thread is to hash or decode it. */
        if (k + 2 * REPLAY_PREPARE_AHEAD < count) __builtin_prefetch(&items[k + 2 * REPLAY_PREPARE_AHEAD]);
        if (k + REPLAY_PREPARE_AHEAD < count) {
            const feed_item *next = &items[k + REPLAY_PREPARE_AHEAD];
            if (!(next->done & ITEM_PARSED)) prefetch_raw(next->raw, next->raw_len);
        }
        if (sink->hash && !(item->done & ITEM_HASHED) && hash_item(item, fail) != FEED_MORE) return k;
        item->done |= ITEM_HASHED;
        if (!(item->done & ITEM_PARSED) &&
            decode_parse_item(item, sink->hash, &sink->cmd, sink->words, fail) != FEED_MORE) {
            return k;
        }
        item->done |= ITEM_PARSED;
    }
    return count;
}

/* Unoptimised and sanitizer builds check each unpacked command against a
 * fresh parse of its record. */
#if !defined(__OPTIMIZE__) || defined(__SANITIZE_ADDRESS__)
#define REPLAY_CHECK_UNPACK 1
#else
#define REPLAY_CHECK_UNPACK 0
#endif

#if REPLAY_CHECK_UNPACK
/* The same command as parse gives, field by field (the arrays up to their counts). */
static bool cmd_same(const berth_cmd *a, const berth_cmd *b) {
    if (a->kind != b->kind || !berth_str_eq(a->reqid, b->reqid) || !berth_str_eq(a->name, b->name) ||
        a->name_hash != b->name_hash || a->gpu_count != b->gpu_count || a->vram_mib != b->vram_mib ||
        a->label_count != b->label_count || a->claim_mib != b->claim_mib || !berth_str_eq(a->model, b->model) ||
        !berth_str_eq(a->backend, b->backend) || a->place_count != b->place_count ||
        a->backend_count != b->backend_count) {
        return false;
    }
    for (uint32_t i = 0; i < a->place_count; i++) {
        const berth_place *p = &a->place[i], *q = &b->place[i];
        if (!berth_str_eq(p->worker, q->worker) || p->gpu_mask != q->gpu_mask || p->all_gpus != q->all_gpus ||
            p->worker_hash != q->worker_hash) {
            return false;
        }
    }
    for (uint32_t i = 0; i < a->label_count; i++) {
        if (!berth_str_eq(a->labels[i].key, b->labels[i].key) || !berth_str_eq(a->labels[i].value, b->labels[i].value)) {
            return false;
        }
    }
    for (uint32_t i = 0; i < a->backend_count; i++) {
        if (!berth_str_eq(a->backends[i], b->backends[i])) return false;
    }
    return true;
}
#endif

/* Parse a prepared item's record again into cmd: it decoded and parsed
 * before, so it does again, to the same command. */
static void item_reparse(const feed_item *item, berth_cmd *cmd, berth_str *words) {
    berth_record rec;
    berth_jerr e = berth_record_decode(item->raw, item->raw_len, &rec, NULL, 0);
    assert(e == BERTH_J_OK);
    char perr[BERTH_ERR_LEN_MAX];
    int rc = berth_cmd_parse_text(cmd, rec.command.ptr, rec.command.len, words, BERTH_ARGS_MAX, perr, sizeof(perr));
    assert(rc == 0);
    cmd->reqid = rec.reqid;
    (void)e;
    (void)rc;
}

/* The berth_cmd of a prepared item, in the applier's own memory. Fields
 * parse leaves zero for a command's kind are zero here too, and the
 * arrays past their counts are never read. */
static void item_unpack(replay_sink *sink, const feed_item *item, berth_cmd *cmd) {
    assert(item->done & ITEM_PARSED);
    if (item->done & ITEM_WHOLE) {
        item_reparse(item, cmd, sink->words);
        return;
    }
    cmd->kind = (berth_cmd_kind)item->kind;
    cmd->reqid = (berth_str){ item->reqid, item->reqid_len };
    cmd->name = (berth_str){ item->name, item->name_len };
    cmd->name_hash = item->name_hash;
    cmd->gpu_count = item->gpu_count;
    cmd->vram_mib = item->vram_mib;
    cmd->label_count = 0;
    cmd->claim_mib = item->claim_mib;
    cmd->model = (berth_str){ item->model, item->model_len };
    cmd->backend = (berth_str){ item->backend, item->backend_len };
    cmd->place_count = item->place_count;
    cmd->backend_count = 0;
    assert(cmd->place_count <= FEED_PLACES_INLINE);
    for (uint32_t i = 0; i < cmd->place_count; i++) {
        const feed_place *fp = &item->place[i];
        cmd->place[i] = (berth_place){ { fp->worker, fp->worker_len }, fp->gpu_mask, fp->all_gpus != 0,
                                       fp->worker_hash };
    }
#if REPLAY_CHECK_UNPACK
    item_reparse(item, &sink->cmd, sink->words);
    assert(cmd_same(cmd, &sink->cmd));
#endif
}

/* Apply and (verify) compare of one prepared item, whose command cmd
 * holds; its chain was checked when it was parsed. */
static feed_status apply_item(replay_sink *sink, const feed_item *item, const berth_cmd *cmd,
                              replay_fail *fail) {
    assert(item->done & ITEM_PARSED);
    berth_str command = { item->command, item->command_len };
    berth_jerr e = replay_apply_parsed(sink->state, item->seq, item->version, command, cmd, &item->pre,
                                       (item->done & ITEM_REQID_OK) != 0, !sink->compare, &sink->out,
                                       fail->why, sizeof(fail->why));
    if (e != BERTH_J_OK) {
        fail->err = e;
        fail->seq = item->seq;
        return FEED_FAIL;
    }
    if (sink->compare && compare_outcome(item, &sink->out, fail) != FEED_MORE) return FEED_FAIL;
    if (sink->touched_fn != NULL) {
        berth_touched t = berth_outcome_touched(&sink->out);
        e = sink->touched_fn(sink->touched_ctx, item->seq, &t);
        if (e != BERTH_J_OK) {
            return fail_set(fail, e, item->seq, "seq %" PRIu64 ": its touched names were not taken (%s)",
                            item->seq, berth_jerr_name(e));
        }
    }
    sink->applied++;
    return FEED_MORE;
}

static void prefetch_item(const feed_item *item) {
    /* The lines apply reads: the head and the placements; the REQID's
     * hashes and the sentence only when there are some. The feeder wrote
     * them on the other core. */
    uintptr_t at = (uintptr_t)item & ~(uintptr_t)63;
    uintptr_t end = (uintptr_t)&item->sentence;
    for (; at < end; at += 64) __builtin_prefetch((const void *)at);
}

static inline berth_cmd *slot_of(replay_sink *sink, uint32_t k) {
    return &sink->slots[k % SINK_SLOTS];
}

/* Item j's command into its slot, and the hints that come with its stage-0
 * hint: the REQID's window slot, and verify's recorded sentence. */
static const berth_cmd *slot_fill(replay_sink *sink, const feed_item *items, uint32_t j) {
    const feed_item *item = &items[j];
    berth_cmd *cmd = slot_of(sink, j);
    item_unpack(sink, item, cmd);
    /* The names apply compares and copies point into the record, which the
     * feeder read on its core: a line from there costs ~235 ns here. */
    prefetch_raw((const uint8_t *)item->command, item->command_len);
    if (item->reqid_len > 0) {
        berth_state_prefetch_reqid(sink->state, item->pre.reqid_hash);
    }
    if (sink->compare) __builtin_prefetch(item->sentence);
    return cmd;
}

/* The hints for the records ahead of item k, which is about to apply: the
 * item REPLAY_PREFETCH_AHEAD * (STAGES + 1) ahead gets its own lines
 * loaded; the one STAGES * REPLAY_PREFETCH_AHEAD ahead is unpacked into
 * its slot; and the state's stages run in one call for the unpacked ones
 * (the furthest stage 0, the nearest the last stage): one call per record,
 * not one per stage, since the calls and their dispatch cost more than the
 * loads. Items at or past `ready` get none. */
static inline void prefetch_ahead(replay_sink *sink, const feed_item *items, uint32_t k, uint32_t ready) {
    const uint32_t stages = BERTH_PREFETCH_STAGES;
    uint32_t j = k + (stages + 1) * REPLAY_PREFETCH_AHEAD;
    if (j < ready) prefetch_item(&items[j]);
    else if (k + REPLAY_PREFETCH_AHEAD >= ready) return;   /* the chunk's tail: nothing ahead */
    const berth_cmd *c[BERTH_PREFETCH_STAGES];
    j = k + stages * REPLAY_PREFETCH_AHEAD;
    c[0] = j < ready ? slot_fill(sink, items, j) : NULL;
    for (uint32_t st = 1; st < stages; st++) {
        j = k + (stages - st) * REPLAY_PREFETCH_AHEAD;
        c[st] = j < ready ? slot_of(sink, j) : NULL;
    }
    berth_state_prefetch_stages(sink->state, c);
}

/* A chunk's first items get at once every hint the records before them
 * would have given, had they been in this chunk: the furthest step first. */
static void prefetch_start(replay_sink *sink, const feed_item *items, uint32_t ready) {
    const uint32_t stages = BERTH_PREFETCH_STAGES;
    for (uint32_t j = 0; j < (stages + 1) * REPLAY_PREFETCH_AHEAD && j < ready; j++) prefetch_item(&items[j]);
    for (uint32_t j = 0; j < stages * REPLAY_PREFETCH_AHEAD && j < ready; j++) slot_fill(sink, items, j);
    for (uint32_t st = 0; st < stages; st++) {
        for (uint32_t j = 0; j < (stages - st) * REPLAY_PREFETCH_AHEAD && j < ready; j++) {
            const berth_cmd *c[BERTH_PREFETCH_STAGES] = { NULL };
            c[st] = slot_of(sink, j);
            berth_state_prefetch_stages(sink->state, c);
        }
    }
}

/* Every step of items [0, count) in seq order. Preparing them all before
 * applying any changes no outcome: a failure while preparing item f is
 * reported only after items before f applied cleanly, which is the order
 * record-by-record processing reports in. prepared: the feeder took every
 * step before apply for all of them (FEED_LEVEL_ALL), so there is nothing
 * to prepare, and a pass only to read each item's done mark would pull
 * every item's first line from the feeder's core one after another before
 * the hints below pull the same lines several at a time. apply_item still
 * asserts each mark. The last applied record's hash (its trailer) is kept
 * for the run after this one, whose reader may map the journal elsewhere. */
static feed_status consume_items(replay_sink *sink, feed_item *items, uint32_t count, bool prepared,
                                 replay_fail *fail) {
    uint32_t ready = prepared ? count : prepare_items(sink, items, count, &sink->prepare_fail);
    prefetch_start(sink, items, ready);
    feed_status st = FEED_MORE;
    uint32_t k = 0;
    for (; k < ready; k++) {
        prefetch_ahead(sink, items, k, ready);
        if (apply_item(sink, &items[k], slot_of(sink, k), fail) != FEED_MORE) {
            st = FEED_FAIL;
            break;
        }
    }
    if (k > 0) {
        const feed_item *last = &items[k - 1];
        assert(last->raw_len >= BERTH_HASH_LEN);   /* it decoded, so its hash trails it */
        memcpy(sink->prev_hash, last->raw + last->raw_len - BERTH_HASH_LEN, BERTH_HASH_LEN);
    }
    if (st != FEED_MORE || ready == count) return st;
    *fail = sink->prepare_fail;
    return FEED_FAIL;
}

/* ------------------------------------------------------- chunks */

typedef struct feed_chunk {
    uint32_t count;
    bool prepared;                  /* the feeder took every step before apply for items [0, count) */
    feed_status status;             /* after the items: more, end, or the failure below */
    replay_fail fail;
    feed_item items[REPLAY_CHUNK_RECORDS];
} feed_chunk;

typedef struct feed_ring {
    pthread_mutex_t mu;
    pthread_cond_t not_full;
    pthread_cond_t not_empty;
    uint32_t filled;                /* chunks published, not yet consumed */
    bool stop;                      /* the sink failed: the feeder quits */
    bool feeder_waiting;            /* the feeder found the ring full and sleeps until RESUME */
    feed_source *src;
    feed_chunk *chunks;             /* REPLAY_RING_CHUNKS, owned by the run */
    feed_item *stage;               /* REPLAY_CHUNK_RECORDS, the feeder's own; owned by the run */
} feed_ring;

/* The feeder builds each item in its own stage, in lines that stay on its
 * core, and copies it into the ring with non-temporal stores: a plain store
 * into a ring line must first take the line from the applier's core, which
 * read it a lap ago (~235 ns here), and a few of those fill the store
 * buffer and stall every later store, the cursor's and parse's included.
 * A streamed line goes to memory with no read; the applier's hints fetch
 * it from there. The lines copied are the ones written: all of them once
 * the steps packed the item, else the cursor's line 0 (the applier packs
 * the rest itself). */
static void item_stream(feed_item *to, const feed_item *from) {
    assert((uintptr_t)to % 64 == 0 && (uintptr_t)from % 64 == 0);
    size_t lines = (from->done & ITEM_PARSED) ? sizeof(feed_item) / 64 : 1;
#if REPLAY_STREAM_ITEMS
    __m128i *d = (__m128i *)(void *)to;
    const __m128i *s = (const __m128i *)(const void *)from;
    for (size_t i = 0; i < lines * 4; i++) _mm_stream_si128(d + i, _mm_load_si128(s + i));
#else
    memcpy(to, from, lines * 64);
#endif
}

/* Streamed stores are weakly ordered: they must be visible before the
 * chunk is published, whose lock alone does not promise it. */
static void stream_fence(void) {
#if REPLAY_STREAM_ITEMS
    _mm_sfence();
#endif
}

/* A chunk is read whole before any of its steps run, so each record's bytes
 * were hinted into the cache a chunk's worth of cursor steps before the
 * hash reads them. Only the first failure is reported: a step that fails
 * at item k comes before any read failure past k, and cuts the chunk there,
 * as reading and stepping record by record would. stage: NULL, or the
 * feeder's own REPLAY_CHUNK_RECORDS items to build them in (item_stream). */
static void fill_chunk(feed_source *src, feed_chunk *c, feed_item *stage) {
    feed_item *items = stage != NULL ? stage : c->items;
    c->count = 0;
    c->status = FEED_MORE;
    /* At FEED_LEVEL_ALL feed_steps hashes (when asked), decodes and parses
     * every item it counts: a step that fails cuts count before that item. */
    c->prepared = src->level >= FEED_LEVEL_ALL;
    /* A yield ends the range here, between two records: every record
     * before it is handed over whole, and none after it was read. At least
     * one chunk runs first, so a step always moves forward. */
    if (src->yield != NULL && src->next_seq > src->first_seq && src->next_seq <= src->last_seq &&
        src->yield(src->yield_arg)) {
        src->last_seq = src->next_seq - 1;
    }
    uint32_t read = 0;
    feed_status read_status = FEED_MORE;
    while (read < REPLAY_CHUNK_RECORDS) {
        read_status = read_one(src, &items[read], &c->fail);
        if (read_status != FEED_MORE) break;
        read++;
    }
    /* count in a local: the chunk's header line is the applier's too. */
    uint32_t count = 0;
    for (; count < read; count++) {
        if (feed_steps(src, &items[count], &c->fail) != FEED_MORE) {
            c->status = FEED_FAIL;
            break;
        }
        if (stage != NULL) item_stream(&c->items[count], &items[count]);
    }
    c->count = count;
    if (stage != NULL) stream_fence();
    if (c->status != FEED_FAIL) c->status = read_status;
}

/* ------------------------------------------------------- one-thread run */

/* The same chunks on one thread: fill, then consume, so a short range runs
 * exactly the steps a pipelined one does. */
static berth_jerr run_serial(feed_source *src, replay_sink *sink, replay_fail *fail) {
    feed_chunk *c = aligned_alloc(_Alignof(feed_chunk), sizeof(*c));
    if (c == NULL) {
        fail_set(fail, BERTH_J_NOMEM, src->next_seq, "seq %" PRIu64 ": out of memory for the replay buffer",
                 src->next_seq);
        return BERTH_J_NOMEM;
    }
    src->level = FEED_LEVEL_READ;
    berth_jerr e = BERTH_J_OK;
    for (;;) {
        fill_chunk(src, c, NULL);
        if (consume_items(sink, c->items, c->count, c->prepared, fail) != FEED_MORE) {
            e = fail->err;
            break;
        }
        if (c->status == FEED_FAIL) {
            *fail = c->fail;
            e = fail->err;
        }
        if (c->status != FEED_MORE) break;
    }
    free(c);
    return e;
}

/* ------------------------------------------------------- two-thread run */

static void ring_lock(feed_ring *ring) {
    int rc = pthread_mutex_lock(&ring->mu);
    assert(rc == 0);
    (void)rc;
}

static void ring_unlock(feed_ring *ring) {
    int rc = pthread_mutex_unlock(&ring->mu);
    assert(rc == 0);
    (void)rc;
}

static void ring_wait(pthread_cond_t *cv, feed_ring *ring) {
    int rc = pthread_cond_wait(cv, &ring->mu);
    assert(rc == 0);
    (void)rc;
}

static void ring_signal(pthread_cond_t *cv) {
    int rc = pthread_cond_signal(cv);
    assert(rc == 0);
    (void)rc;
}

static void *feeder_main(void *arg) {
    feed_ring *ring = arg;
    for (uint32_t i = 0;; i = (i + 1) % REPLAY_RING_CHUNKS) {
        ring_lock(ring);
        if (ring->filled == REPLAY_RING_CHUNKS) {
            ring->feeder_waiting = true;
            while (ring->filled > REPLAY_RING_RESUME && !ring->stop) {
                ring_wait(&ring->not_full, ring);
            }
            ring->feeder_waiting = false;
        }
        bool quit = ring->stop;
        uint32_t ahead = ring->filled;
        ring_unlock(ring);
        if (quit) return NULL;
        /* Far ahead: the sink is the slow half, take more of its work. */
        ring->src->level = ahead >= REPLAY_RING_CHUNKS / 2   ? FEED_LEVEL_ALL
                           : ahead >= REPLAY_RING_CHUNKS / 4 ? FEED_LEVEL_HASH
                                                             : FEED_LEVEL_READ;
        feed_chunk *c = &ring->chunks[i];
        fill_chunk(ring->src, c, ring->stage);
        ring_lock(ring);
        ring->filled++;
        assert(ring->filled <= REPLAY_RING_CHUNKS);
        ring_signal(&ring->not_empty);
        ring_unlock(ring);
        if (c->status != FEED_MORE) return NULL;
    }
}

/* The sink's half: take chunks in order until the feeder's last one or a failure. */
static berth_jerr drain_ring(feed_ring *ring, replay_sink *sink, replay_fail *fail) {
    for (uint32_t i = 0;; i = (i + 1) % REPLAY_RING_CHUNKS) {
        ring_lock(ring);
        while (ring->filled == 0) ring_wait(&ring->not_empty, ring);
        ring_unlock(ring);
        feed_chunk *c = &ring->chunks[i];
        if (consume_items(sink, c->items, c->count, c->prepared, fail) != FEED_MORE) return fail->err;
        feed_status st = c->status;
        if (st == FEED_FAIL) *fail = c->fail;
        ring_lock(ring);
        ring->filled--;
        if (ring->feeder_waiting && ring->filled == REPLAY_RING_RESUME) ring_signal(&ring->not_full);
        ring_unlock(ring);
        if (st == FEED_END) return BERTH_J_OK;
        if (st == FEED_FAIL) return fail->err;
    }
}

static berth_jerr run_pipelined(feed_source *src, replay_sink *sink, replay_fail *fail) {
    feed_ring ring;
    memset(&ring, 0, sizeof(ring));
    ring.src = src;
    ring.chunks = aligned_alloc(_Alignof(feed_chunk), REPLAY_RING_CHUNKS * sizeof(feed_chunk));
    if (ring.chunks == NULL) return run_serial(src, sink, fail);
    ring.stage = aligned_alloc(_Alignof(feed_item), REPLAY_CHUNK_RECORDS * sizeof(feed_item));
    if (ring.stage == NULL) goto serial_free;
    if (pthread_mutex_init(&ring.mu, NULL) != 0) goto serial_free;
    if (pthread_cond_init(&ring.not_full, NULL) != 0) goto serial_mu;
    if (pthread_cond_init(&ring.not_empty, NULL) != 0) goto serial_nf;
    pthread_t feeder;
    if (pthread_create(&feeder, NULL, feeder_main, &ring) != 0) goto serial_ne;
    berth_jerr e = drain_ring(&ring, sink, fail);
    ring_lock(&ring);
    ring.stop = true;
    ring_signal(&ring.not_full);
    ring_unlock(&ring);
    int rc = pthread_join(feeder, NULL);
    assert(rc == 0);
    (void)rc;
    pthread_cond_destroy(&ring.not_empty);
    pthread_cond_destroy(&ring.not_full);
    pthread_mutex_destroy(&ring.mu);
    free(ring.stage);
    free(ring.chunks);
    return e;
    /* No thread to be had: the same work on one thread is still correct. */
serial_ne:
    pthread_cond_destroy(&ring.not_empty);
serial_nf:
    pthread_cond_destroy(&ring.not_full);
serial_mu:
    pthread_mutex_destroy(&ring.mu);
serial_free:
    free(ring.stage);
    free(ring.chunks);
    return run_serial(src, sink, fail);
}

/* Feed records [from, to] of reader into sink, or [from, s) when yield
 * (may be NULL) stops it before seq s; the sink's state ends at the last
 * record fed. */
static berth_jerr run_range_yielding(berth_journal_reader *reader, uint64_t from, uint64_t to,
                                     bool hash, berth_replay_yield_fn yield, void *yield_arg,
                                     replay_sink *sink, replay_fail *fail) {
    assert(from >= 1);
    if (from > to) return BERTH_J_OK;
    feed_source src = { .cursor = NULL, .next_seq = from, .first_seq = from, .last_seq = to,
                        .yield = yield, .yield_arg = yield_arg, .hash = hash,
                        .level = FEED_LEVEL_READ };
    memcpy(src.start_hash, sink->prev_hash, BERTH_HASH_LEN);
    src.last_hash_at = src.start_hash;
    sink->hash = hash;
    berth_jerr e = berth_journal_cursor_open(reader, from, &src.cursor);
    if (e != BERTH_J_OK) {
        fail_set(fail, e, from, "seq %" PRIu64 ": cannot open a journal cursor (%s)", from, berth_jerr_name(e));
        return e;
    }
    bool two_threads = to - from + 1 >= REPLAY_PIPELINE_RECORDS_MIN;
    e = two_threads ? run_pipelined(&src, sink, fail) : run_serial(&src, sink, fail);
    berth_journal_cursor_close(src.cursor);
    assert(e != BERTH_J_OK || berth_state_last_seq(sink->state) == src.last_seq);
    assert(yield != NULL || e != BERTH_J_OK || src.last_seq == to);
    return e;
}

/* ------------------------------------------------------------ snapshots */

/* Decode one snapshot and prove it belongs to this journal: its anchor is
 * the hash of the record it ends at (an unsealed one's zeros never are).
 * That ties it to this chain, not its content to the chain's: verify
 * compares that, replaying (berth_verify's snapshot check). */
static bool snapshot_usable(berth_journal_reader *reader, uint64_t seq, const void *bytes, size_t len,
                            berth_state **out, uint8_t prev_hash[BERTH_HASH_LEN]) {
    char why[REPLAY_WHY_LEN_MAX];
    berth_state *state = NULL;
    uint8_t anchor[BERTH_HASH_LEN];
    if (berth_snapshot_decode(bytes, len, &state, anchor, why, sizeof(why)) != 0) return false;
    berth_record rec;
    bool ok = berth_state_last_seq(state) == seq &&
              berth_journal_read(reader, seq, &rec, NULL, NULL) == BERTH_J_OK && rec.seq == seq &&
              memcmp(anchor, rec.hash, BERTH_HASH_LEN) == 0;
    if (!ok) {
        berth_state_free(state);
        return false;
    }
    memcpy(prev_hash, rec.hash, BERTH_HASH_LEN);
    *out = state;
    return true;
}

/* The newest good snapshot at or before target, or a new empty state. */
static berth_jerr start_state(berth_journal_reader *reader, uint64_t target, bool use_snapshots,
                              berth_state **out, uint8_t prev_hash[BERTH_HASH_LEN],
                              uint32_t *bad_snapshots) {
    uint64_t max = target;
    for (uint32_t tries = 0; use_snapshots && max > 0 && tries < REPLAY_SNAPSHOT_TRIES_MAX; tries++) {
        uint64_t seq = 0;
        const void *bytes = NULL;
        size_t len = 0;
        berth_jerr e = berth_journal_snapshot_get(reader, max, &seq, &bytes, &len);
        if (e == BERTH_J_NOTFOUND) break;
        if (e != BERTH_J_OK || seq == 0 || seq > max) {
            (*bad_snapshots)++;
            break;
        }
        if (snapshot_usable(reader, seq, bytes, len, out, prev_hash)) return BERTH_J_OK;
        (*bad_snapshots)++;
        max = seq - 1;
    }
    *out = berth_state_new(NULL);
    if (*out == NULL) return BERTH_J_NOMEM;
    memset(prev_hash, 0, BERTH_HASH_LEN);
    return BERTH_J_OK;
}

/* ------------------------------------------------------------ public API */

/* A checked tail chains onto the record its snapshot ends at: that
 * record's stored hash is the anchor, so its bytes are checked too (else a
 * damaged record at the head, under a snapshot there, is accepted and the
 * next write chains onto it). A mismatch is a damaged record, CORRUPT
 * naming it like any other: falling back to an older snapshot would only
 * replay to it and fail there. */
static berth_jerr anchor_check(berth_journal_reader *reader, uint64_t seq, replay_fail *fail) {
    if (seq == 0) return BERTH_J_OK;
    berth_record rec;
    const uint8_t *raw = NULL;
    size_t raw_len = 0;
    berth_jerr e = berth_journal_read(reader, seq, &rec, &raw, &raw_len);
    if (e != BERTH_J_OK) {   /* snapshot_usable read it a moment ago, in this view */
        fail_set(fail, e == BERTH_J_NOTFOUND ? BERTH_J_CORRUPT : e, seq,
                 "seq %" PRIu64 ": the snapshot's record cannot be read (%s)", seq, berth_jerr_name(e));
        return fail->err;
    }
    if (!berth_record_hash_ok(raw, raw_len)) {
        fail_set(fail, BERTH_J_CORRUPT, seq, "seq %" PRIu64 ": hash mismatch (record bytes changed)", seq);
        return BERTH_J_CORRUPT;
    }
    return BERTH_J_OK;
}

/* The view's head seq. A head record that does not decode still has its
 * seq (berth_journal_reader_head's CORRUPT): a replay below it works, and
 * one that reaches it fails there, naming it. */
static berth_jerr head_seq_of(berth_journal_reader *reader, uint64_t *head) {
    uint8_t hash[BERTH_HASH_LEN];
    berth_jerr e = berth_journal_reader_head(reader, head, hash);
    return e == BERTH_J_CORRUPT && *head > 0 ? BERTH_J_OK : e;
}

/* The last seq of a part that starts at from and may run records_max
 * records, not past target. */
static uint64_t part_end(uint64_t from, uint64_t target, uint64_t records_max) {
    assert(records_max > 0);
    return from <= target && target - from >= records_max ? from + records_max - 1 : target;
}

static berth_jerr replay_to_impl(berth_journal_reader *reader, uint64_t target, bool use_snapshots,
                                 bool check_tail, uint64_t records_max, berth_replay_yield_fn yield,
                                 void *yield_arg, berth_state **out, berth_replay_stats *stats,
                                 uint32_t *bad_snapshots, char *err, size_t err_size) {
    assert(reader != NULL && out != NULL);
    *out = NULL;
    uint32_t bad_local = 0;
    if (bad_snapshots == NULL) bad_snapshots = &bad_local;
    *bad_snapshots = 0;
    uint64_t head = 0;
    berth_jerr e = head_seq_of(reader, &head);
    if (e != BERTH_J_OK) {
        err_copy(err, err_size, "cannot read the journal head");
        return e;
    }
    if (target == UINT64_MAX) target = head;
    if (target > head) {
        if (err != NULL && err_size > 0) {
            snprintf(err, err_size, "seq %" PRIu64 " is beyond the head (%" PRIu64 ")", target, head);
        }
        return BERTH_J_NOTFOUND;
    }
    replay_sink *sink = calloc(1, sizeof(*sink));
    if (sink == NULL) return BERTH_J_NOMEM;
    e = start_state(reader, target, use_snapshots, &sink->state, sink->prev_hash, bad_snapshots);
    if (e != BERTH_J_OK) {
        free(sink);
        err_copy(err, err_size, "out of memory creating the state");
        return e;
    }
    uint64_t from_seq = berth_state_last_seq(sink->state);
    sink->compare = check_tail;
    replay_fail fail = { .err = BERTH_J_OK, .seq = 0, .why = "" };
    e = check_tail ? anchor_check(reader, from_seq, &fail) : BERTH_J_OK;
    if (e == BERTH_J_OK) {
        e = run_range_yielding(reader, from_seq + 1, part_end(from_seq + 1, target, records_max),
                               check_tail, yield, yield_arg, sink, &fail);
    }
    if (stats != NULL) {
        memset(stats, 0, sizeof(*stats));
        stats->from_snapshot_seq = from_seq;
        stats->records = sink->applied;
        stats->last_seq = berth_state_last_seq(sink->state);
    }
    if (e != BERTH_J_OK) {
        err_copy(err, err_size, fail.why);
        berth_state_free(sink->state);
    } else {
        *out = sink->state;
    }
    free(sink);
    return e;
}

berth_jerr berth_replay_to_checked(berth_journal_reader *reader, uint64_t target, bool use_snapshots,
                                   bool check_tail, berth_state **out, berth_replay_stats *stats,
                                   uint32_t *bad_snapshots, char *err, size_t err_size) {
    return replay_to_impl(reader, target, use_snapshots, check_tail, UINT64_MAX, NULL, NULL, out,
                          stats, bad_snapshots, err, err_size);
}

berth_jerr berth_replay_to_part(berth_journal_reader *reader, uint64_t target, bool use_snapshots,
                                uint64_t records_max, berth_replay_yield_fn yield,
                                void *yield_arg, berth_state **out, berth_replay_stats *stats,
                                uint32_t *bad_snapshots, char *err, size_t err_size) {
    assert(stats != NULL);
    return replay_to_impl(reader, target, use_snapshots, false, records_max, yield, yield_arg, out,
                          stats, bad_snapshots, err, err_size);
}

berth_jerr berth_replay_to(berth_journal_reader *reader, uint64_t target, bool use_snapshots,
                           berth_state **out, berth_replay_stats *stats,
                           uint32_t *bad_snapshots, char *err, size_t err_size) {
    return berth_replay_to_checked(reader, target, use_snapshots, false, out, stats,
                                   bad_snapshots, err, err_size);
}

berth_jerr berth_replay_forward(berth_journal_reader *reader, berth_state *state,
                                uint64_t target, berth_replay_stats *stats,
                                char *err, size_t err_size) {
    return berth_replay_forward_part(reader, state, target, UINT64_MAX, NULL, NULL, stats, err,
                                     err_size);
}

berth_jerr berth_replay_forward_part(berth_journal_reader *reader, berth_state *state,
                                     uint64_t target, uint64_t records_max,
                                     berth_replay_yield_fn yield, void *yield_arg,
                                     berth_replay_stats *stats, char *err, size_t err_size) {
    assert(reader != NULL && state != NULL);
    uint64_t head = 0;
    berth_jerr e = head_seq_of(reader, &head);
    if (e != BERTH_J_OK) {
        err_copy(err, err_size, "cannot read the journal head");
        return e;
    }
    uint64_t last = berth_state_last_seq(state);
    if (target == UINT64_MAX) target = head;
    if (target > head || target < last) {
        if (err != NULL && err_size > 0) {
            snprintf(err, err_size, "cannot move a state at seq %" PRIu64 " to seq %" PRIu64 " (head %" PRIu64 ")",
                     last, target, head);
        }
        return target > head ? BERTH_J_NOTFOUND : BERTH_J_INVALID;
    }
    replay_sink *sink = calloc(1, sizeof(*sink));
    if (sink == NULL) return BERTH_J_NOMEM;
    sink->state = state;
    replay_fail fail = { .err = BERTH_J_OK, .seq = 0, .why = "" };
    if (last > 0) {
        berth_record rec;
        e = berth_journal_read(reader, last, &rec, NULL, NULL);
        if (e != BERTH_J_OK) {
            fail_set(&fail, e == BERTH_J_NOTFOUND ? BERTH_J_CORRUPT : e, last,
                     "seq %" PRIu64 " (the state's last) is not in the journal", last);
        } else {
            memcpy(sink->prev_hash, rec.hash, BERTH_HASH_LEN);
        }
    }
    if (fail.err == BERTH_J_OK) {
        e = run_range_yielding(reader, last + 1, part_end(last + 1, target, records_max), false,
                               yield, yield_arg, sink, &fail);
    }
    else e = fail.err;
    if (stats != NULL) {
        memset(stats, 0, sizeof(*stats));
        stats->from_snapshot_seq = last;
        stats->records = sink->applied;
        stats->last_seq = berth_state_last_seq(state);
    }
    if (e != BERTH_J_OK) err_copy(err, err_size, fail.why);
    free(sink);
    return e;
}

/* A verify in steps: the sink (state and the last hash) carries the chain
 * check, the state and the outcome compare from one step's reader to the
 * next, so the steps together run exactly the per-record checks, in the
 * same order, that one pass over 1..target does. */
struct berth_verify_run {
    replay_sink *sink;
    uint64_t *snapshots;            /* seqs of the snapshots at or below target, ascending */
    size_t snapshot_count;
    size_t snapshot_next;           /* the first not yet reached */
    uint64_t target;
    uint8_t target_hash[BERTH_HASH_LEN];
    bool target_hash_known;         /* false: the head record does not decode */
    bool over;                      /* checked to target, or failed */
    berth_jerr err;
    replay_fail fail;
};

/* The snapshots verify will compare, fixed with the range: all of them,
 * since the newest are the ones a start uses. */
static berth_jerr snapshots_listed(berth_verify_run *run, berth_journal_reader *reader) {
    size_t n = 0;
    berth_jerr e = berth_journal_snapshot_list(reader, NULL, 0, &n);
    if (e != BERTH_J_OK || n == 0) return e;
    if (n > REPLAY_VERIFY_SNAPSHOTS_MAX) return BERTH_J_INVALID;
    run->snapshots = malloc(n * sizeof(*run->snapshots));
    if (run->snapshots == NULL) return BERTH_J_NOMEM;
    size_t have = 0;
    e = berth_journal_snapshot_list(reader, run->snapshots, n, &have);
    if (e != BERTH_J_OK) return e;
    if (have < n) n = have;
    while (n > 0 && run->snapshots[n - 1] > run->target) n--;
    run->snapshot_count = n;
    return BERTH_J_OK;
}

/* The snapshot at seq against the state replayed to it. One a load would
 * use (its own digest, its version and its anchor, the chain's hash here,
 * all good) must hold that state, or a start from it would judge later
 * commands on another state and journal their outcomes: CORRUPT, naming
 * it. One a load refuses (damaged, older, unsealed, another chain's) is
 * harmless, since loads skip it. Gone since the range was fixed: nothing
 * to check. Costs an encode of the state per snapshot, none per record. */
static berth_jerr snapshot_agrees(berth_verify_run *run, berth_journal_reader *reader, uint64_t seq) {
    uint64_t got = 0;
    const void *bytes = NULL;
    size_t len = 0;
    berth_jerr e = berth_journal_snapshot_get(reader, seq, &got, &bytes, &len);
    if (e == BERTH_J_NOTFOUND || (e == BERTH_J_OK && got != seq)) return BERTH_J_OK;
    if (e != BERTH_J_OK) {
        fail_set(&run->fail, e, seq, "snapshot at seq %" PRIu64 ": cannot be read (%s)", seq, berth_jerr_name(e));
        return e;
    }
    uint8_t want[BERTH_HASH_LEN], have[BERTH_HASH_LEN];
    if (berth_state_digest(run->sink->state, want) != 0) {
        fail_set(&run->fail, BERTH_J_NOMEM, seq, "snapshot at seq %" PRIu64 ": out of memory", seq);
        return BERTH_J_NOMEM;
    }
    if (berth_snapshot_body_digest(bytes, len, have) == 0 && memcmp(want, have, BERTH_HASH_LEN) == 0) {
        return BERTH_J_OK;   /* the replayed state's own encoding: nothing to decode */
    }
    berth_state *state = NULL;
    uint8_t anchor[BERTH_HASH_LEN];
    char why[REPLAY_WHY_LEN_MAX / 2];
    if (berth_snapshot_decode(bytes, len, &state, anchor, why, sizeof(why)) != 0) return BERTH_J_OK;
    bool usable = berth_state_last_seq(state) == seq &&
                  memcmp(anchor, run->sink->prev_hash, BERTH_HASH_LEN) == 0;
    int rc = usable ? berth_state_digest(state, have) : 0;
    berth_state_free(state);
    if (rc != 0) {
        fail_set(&run->fail, BERTH_J_NOMEM, seq, "snapshot at seq %" PRIu64 ": out of memory", seq);
        return BERTH_J_NOMEM;
    }
    if (!usable || memcmp(want, have, BERTH_HASH_LEN) == 0) return BERTH_J_OK;
    char w[2 * BERTH_HASH_LEN + 1], h[2 * BERTH_HASH_LEN + 1];
    berth_hex(want, BERTH_HASH_LEN, w);
    berth_hex(have, BERTH_HASH_LEN, h);
    fail_set(&run->fail, BERTH_J_CORRUPT, seq,
             "seq %" PRIu64 ": the snapshot there holds another state (digest %s) than the journal's "
             "(replay gives %s), and a start would use it", seq, h, w);
    return BERTH_J_CORRUPT;
}

/* target's hash in reader: the head's, or the record's below the head.
 * *known false: the head record does not decode, so it has no hash to give;
 * the pass then fails at that seq and names it. */
static berth_jerr target_of(berth_journal_reader *reader, uint64_t *target,
                            uint8_t hash[BERTH_HASH_LEN], bool *known) {
    uint64_t head = 0;
    berth_jerr e = berth_journal_reader_head(reader, &head, hash);
    *known = e == BERTH_J_OK;
    if (e == BERTH_J_CORRUPT && head > 0) e = BERTH_J_OK;
    if (e != BERTH_J_OK || *target == UINT64_MAX || *target == head) {
        if (e == BERTH_J_OK) *target = head;
        return e;
    }
    *known = true;
    if (*target > head) return BERTH_J_NOTFOUND;
    if (*target == 0) {   /* the empty journal it was when the range was fixed */
        memset(hash, 0, BERTH_HASH_LEN);
        return BERTH_J_OK;
    }
    berth_record rec;
    e = berth_journal_read(reader, *target, &rec, NULL, NULL);
    if (e == BERTH_J_OK) memcpy(hash, rec.hash, BERTH_HASH_LEN);
    return e;
}

berth_verify_run *berth_verify_begin(berth_journal_reader *reader, uint64_t target) {
    assert(reader != NULL);
    berth_verify_run *run = calloc(1, sizeof(*run));
    if (run == NULL) return NULL;
    run->sink = calloc(1, sizeof(*run->sink));
    if (run->sink == NULL) {
        free(run);
        return NULL;
    }
    run->sink->compare = true;
    run->fail.err = BERTH_J_OK;
    run->target = target;
    berth_jerr e = target_of(reader, &run->target, run->target_hash, &run->target_hash_known);
    if (e != BERTH_J_OK) {
        run->over = true;
        run->err = e;
        snprintf(run->fail.why, sizeof(run->fail.why), "cannot read the journal head (%s)",
                 berth_jerr_name(e));
        return run;
    }
    run->sink->state = berth_state_new(NULL);
    if (run->sink->state == NULL) {
        run->over = true;
        run->err = BERTH_J_NOMEM;
        snprintf(run->fail.why, sizeof(run->fail.why), "out of memory");
        return run;
    }
    e = snapshots_listed(run, reader);
    if (e != BERTH_J_OK) {
        run->over = true;
        run->err = e;
        snprintf(run->fail.why, sizeof(run->fail.why), "cannot list the snapshots to check (%s)",
                 berth_jerr_name(e));
    }
    return run;
}

bool berth_verify_step(berth_verify_run *run, berth_journal_reader *reader, uint64_t records_max,
                       berth_replay_yield_fn yield, void *yield_arg) {
    assert(run != NULL && reader != NULL && records_max > 0);
    if (run->over) return true;
    replay_sink *sink = run->sink;
    uint64_t from = berth_state_last_seq(sink->state) + 1;
    uint64_t to = run->target;
    if (from <= to && to - from >= records_max) to = from + records_max - 1;
    berth_jerr e = BERTH_J_OK;
    /* In parts that end at each snapshot, so it meets the state of its seq. */
    for (uint64_t part_from = from;;) {
        while (run->snapshot_next < run->snapshot_count && run->snapshots[run->snapshot_next] < part_from) {
            run->snapshot_next++;
        }
        uint64_t part_to = to;
        if (run->snapshot_next < run->snapshot_count && run->snapshots[run->snapshot_next] < part_to) {
            part_to = run->snapshots[run->snapshot_next];
        }
        e = run_range_yielding(reader, part_from, part_to, true, yield, yield_arg, sink, &run->fail);
        uint64_t at = berth_state_last_seq(sink->state);
        if (e == BERTH_J_OK && run->snapshot_next < run->snapshot_count && run->snapshots[run->snapshot_next] == at) {
            e = snapshot_agrees(run, reader, at);
            run->snapshot_next++;
        }
        if (e != BERTH_J_OK || at < part_to || at >= to) break;   /* failed, yielded, or done */
        part_from = at + 1;
    }
    if (e == BERTH_J_OK && berth_state_last_seq(sink->state) < run->target) return false;
    run->over = true;
    if (e == BERTH_J_OK && run->target > 0 && !run->target_hash_known) {
        /* the pass decoded the record the head read could not: not expected */
        fail_set(&run->fail, BERTH_J_CORRUPT, run->target,
                 "seq %" PRIu64 ": the head record could not be read as the head", run->target);
        e = BERTH_J_CORRUPT;
    } else if (e == BERTH_J_OK && run->target > 0 &&
        memcmp(sink->prev_hash, run->target_hash, BERTH_HASH_LEN) != 0) {
        fail_set(&run->fail, BERTH_J_CORRUPT, run->target,
                 "seq %" PRIu64 ": the head's hash does not match the record's", run->target);
        e = BERTH_J_CORRUPT;
    }
    run->err = e;
    return true;
}

berth_jerr berth_verify_end(berth_verify_run *run, berth_verify_report *report) {
    assert(run != NULL && report != NULL);
    if (!run->over) {   /* abandoned between steps */
        run->err = BERTH_J_INVALID;
        run->fail.seq = 0;
        snprintf(run->fail.why, sizeof(run->fail.why), "verification stopped at seq %" PRIu64
                 " before its end, seq %" PRIu64, berth_state_last_seq(run->sink->state), run->target);
    }
    memset(report, 0, sizeof(*report));
    berth_jerr e = run->err;
    report->records = run->sink->applied;
    report->ok = e == BERTH_J_OK;
    if (e == BERTH_J_OK) {
        snprintf(report->what, sizeof(report->what), "%" PRIu64 " records verified", run->sink->applied);
    } else {
        report->first_bad_seq = run->fail.seq;
        snprintf(report->what, sizeof(report->what), "%s", run->fail.why);
    }
    if (run->sink->state != NULL) berth_state_free(run->sink->state);
    free(run->snapshots);
    free(run->sink);
    free(run);
    return e;
}

/* Returns OK when the chain is good, CORRUPT when the report names a bad
 * seq, and IO / NOMEM when verification could not run (report says why). */
berth_jerr berth_verify(berth_journal_reader *reader, berth_verify_report *report) {
    return berth_verify_touched(reader, NULL, NULL, report);
}

berth_jerr berth_verify_touched(berth_journal_reader *reader, berth_touched_fn fn, void *ctx,
                                berth_verify_report *report) {
    assert(reader != NULL && report != NULL);
    berth_verify_run *run = berth_verify_begin(reader, UINT64_MAX);
    if (run == NULL) {
        memset(report, 0, sizeof(*report));
        snprintf(report->what, sizeof(report->what), "out of memory");
        return BERTH_J_NOMEM;
    }
    run->sink->touched_fn = fn;
    run->sink->touched_ctx = ctx;
    bool over = berth_verify_step(run, reader, UINT64_MAX, NULL, NULL);
    assert(over);
    (void)over;
    return berth_verify_end(run, report);
}
