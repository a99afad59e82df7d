/* engine.c — owns the live authority: one berth_state kept in step with its
 * journal, the batch of staged commands, and the rule that memory equals
 * disk after every commit, good or bad.
 *
 * Why it is shaped this way: berthd group-commits, so commands are applied
 * to the state as they arrive (later commands in the batch must see earlier
 * ones) and written in one append. The staged records' strings live in one
 * arena owned by the engine and reset per batch, so staging allocates
 * nothing per command. If the append fails, the applied-but-unwritten
 * commands cannot be undone piecemeal; the state is rebuilt by replay from
 * the journal instead, which is the one road from disk to memory anyway. */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "replay_internal.h"

/* Encoded bytes a record needs beyond its strings: msgpack headers, version,
 * seq, time, code, two hashes. An upper bound, so the byte cap is never
 * passed. */
#define ENGINE_RECORD_OVERHEAD_BYTES 160
#define ENGINE_ARENA_BYTES_MAX BERTH_ENGINE_ARENA_BYTES_MAX   /* engine.h says why */
#define ENGINE_ACTOR_LEN_MAX BERTH_NAME_LEN_MAX
#define ENGINE_ARENA_ALIGN 8

struct berth_engine {
    berth_journal *journal;                 /* not owned */
    berth_engine_options options;
    berth_state *state;                     /* owned; includes the staged commands */
    uint64_t head_seq;                      /* committed (dry run: applied) */
    uint64_t head_time_ms;                  /* the head record's time: no commit stamps less */
    bool broken;                            /* a rebuild failed: memory may differ from disk */
    uint32_t staged;
    size_t staged_bytes;                    /* encoded size bound of the batch */
    berth_record *records;                  /* BERTH_BATCH_RECORDS_MAX, owned */
    berth_touched *touched;                 /* BERTH_BATCH_RECORDS_MAX, owned */
    uint8_t *arena;                         /* ENGINE_ARENA_BYTES_MAX, owned */
    size_t arena_used;
    berth_cmd cmd;                          /* scratch for submit: too big for the stack */
    berth_outcome out;
    char canonical[BERTH_COMMAND_LEN_MAX];
};

static void result_set(berth_submit_result *result, berth_submit_kind kind, uint64_t seq,
                       berth_code code, const char *sentence, size_t len) {
    result->kind = kind;
    result->seq = seq;
    result->code = code;
    if (len > BERTH_SENTENCE_LEN_MAX - 1) len = BERTH_SENTENCE_LEN_MAX - 1;
    memcpy(result->sentence, sentence, len);
    result->sentence[len] = '\0';
}

static void result_say(berth_submit_result *result, berth_submit_kind kind, const char *sentence) {
    result_set(result, kind, 0, BERTH_OK, sentence, strlen(sentence));
}

/* ------------------------------------------------------------ the arena */

static void *arena_take(berth_engine *engine, size_t size) {
    size_t at = (engine->arena_used + ENGINE_ARENA_ALIGN - 1) & ~(size_t)(ENGINE_ARENA_ALIGN - 1);
    /* submit reserves the worst case before applying, so this cannot fail. */
    assert(at + size <= ENGINE_ARENA_BYTES_MAX);
    engine->arena_used = at + size;
    return engine->arena + at;
}

static berth_str arena_copy(berth_engine *engine, berth_str s) {
    if (s.len == 0) return berth_str_make("", 0);
    char *p = arena_take(engine, s.len);
    memcpy(p, s.ptr, s.len);
    return berth_str_make(p, s.len);
}

/* The most arena one submit can use, alignment included. */
static size_t arena_need_max(size_t canonical_len, berth_str actor, berth_str reqid) {
    size_t names = (size_t)(BERTH_PLACEMENT_WORKERS_MAX + 1) * (BERTH_NAME_LEN_MAX + ENGINE_ARENA_ALIGN);
    size_t strs = (size_t)BERTH_PLACEMENT_WORKERS_MAX * sizeof(berth_str) + ENGINE_ARENA_ALIGN;
    return canonical_len + BERTH_SENTENCE_LEN_MAX + actor.len + reqid.len + 4 * ENGINE_ARENA_ALIGN +
           names + strs;
}

static void batch_clear(berth_engine *engine) {
    engine->staged = 0;
    engine->staged_bytes = 0;
    engine->arena_used = 0;
}

/* -------------------------------------------------------------- opening */

/* Replay the whole journal into *out; *head_time_ms gets the head record's
 * time (0 when empty), the floor for the next commit's. */
static berth_jerr engine_replay(berth_journal *journal, bool check_tail, berth_state **out,
                                uint64_t *head_time_ms, berth_replay_stats *stats, char *err,
                                size_t err_size) {
    berth_journal_reader *reader = NULL;
    berth_jerr e = berth_journal_reader_open(journal, &reader);
    if (e != BERTH_J_OK) {
        if (err_size > 0) snprintf(err, err_size, "cannot open a journal reader (%s)", berth_jerr_name(e));
        return e;
    }
    /* A snapshot that fails its check is skipped for an older one (or
     * genesis): the answer is the same, but the damage is worth a line in
     * the caller's log. */
    uint32_t bad_snapshots = 0;
    e = berth_replay_to_checked(reader, UINT64_MAX, true, check_tail, out, stats, &bad_snapshots,
                                err, err_size);
    if (stats != NULL) {
        stats->bad_snapshots = bad_snapshots;   /* after replay, which clears stats */
    }
    *head_time_ms = 0;
    uint64_t head = e == BERTH_J_OK ? berth_state_last_seq(*out) : 0;
    if (head > 0) {
        berth_record rec;
        e = berth_journal_read(reader, head, &rec, NULL, NULL);
        if (e == BERTH_J_OK) {
            *head_time_ms = rec.time_ms;
        } else {
            if (err_size > 0) snprintf(err, err_size, "cannot read the head record %" PRIu64 " (%s)", head, berth_jerr_name(e));
            berth_state_free(*out);
            *out = NULL;
        }
    }
    berth_journal_reader_close(reader);
    return e;
}

berth_jerr berth_engine_open(berth_engine **out, berth_journal *journal,
                             const berth_engine_options *options,
                             berth_replay_stats *stats, char *err, size_t err_size) {
    assert(out != NULL && journal != NULL);
    assert(err != NULL || err_size == 0);
    *out = NULL;
    berth_engine *engine = calloc(1, sizeof(*engine));
    if (engine == NULL) return BERTH_J_NOMEM;
    engine->journal = journal;
    if (options != NULL) engine->options = *options;
    /* A backend with smaller transactions (etcd) caps the batch; never above
     * the journal's own limits. */
    if (engine->options.batch_records_max == 0 || engine->options.batch_records_max > BERTH_BATCH_RECORDS_MAX) {
        engine->options.batch_records_max = BERTH_BATCH_RECORDS_MAX;
    }
    if (engine->options.batch_bytes_max == 0 || engine->options.batch_bytes_max > BERTH_BATCH_BYTES_MAX) {
        engine->options.batch_bytes_max = BERTH_BATCH_BYTES_MAX;
    }
    engine->records = calloc(BERTH_BATCH_RECORDS_MAX, sizeof(*engine->records));
    engine->touched = calloc(BERTH_BATCH_RECORDS_MAX, sizeof(*engine->touched));
    engine->arena = malloc(ENGINE_ARENA_BYTES_MAX);
    if (engine->records == NULL || engine->touched == NULL || engine->arena == NULL) {
        if (err_size > 0) snprintf(err, err_size, "out of memory opening the engine");
        berth_engine_close(engine);
        return BERTH_J_NOMEM;
    }
    char why[512] = "";
    berth_jerr e = engine_replay(journal, true, &engine->state, &engine->head_time_ms, stats, why,
                                 sizeof(why));
    if (e != BERTH_J_OK) {
        if (err_size > 0) {
            snprintf(err, err_size, "%s%s", why,
                     e == BERTH_J_CORRUPT ? "; inspect with `berth journal verify --data <dir>`" : "");
        }
        berth_engine_close(engine);
        return e;
    }
    engine->head_seq = berth_state_last_seq(engine->state);
    *out = engine;
    return BERTH_J_OK;
}

void berth_engine_close(berth_engine *engine) {
    if (engine == NULL) return;
    if (engine->state != NULL) berth_state_free(engine->state);
    free(engine->arena);
    free(engine->touched);
    free(engine->records);
    free(engine);
}

const berth_state *berth_engine_state(const berth_engine *engine) {
    assert(engine != NULL && engine->state != NULL);
    return engine->state;
}

berth_journal *berth_engine_journal(berth_engine *engine) {
    assert(engine != NULL);
    return engine->journal;
}

uint64_t berth_engine_head_seq(const berth_engine *engine) {
    assert(engine != NULL);
    return engine->head_seq;
}

size_t berth_engine_staged(const berth_engine *engine) {
    assert(engine != NULL);
    return engine->staged;
}

/* -------------------------------------------------------------- staging */

/* The names rec touched, copied into the arena: out points into scratch
 * that the next apply overwrites. */
static void touched_copy(berth_engine *engine, berth_touched *t, const berth_outcome *out) {
    berth_touched view = berth_outcome_touched(out);
    t->instance = arena_copy(engine, view.instance);
    t->worker_count = view.worker_count;
    berth_str *workers = NULL;
    if (view.worker_count > 0) {
        workers = arena_take(engine, view.worker_count * sizeof(berth_str));
        for (uint32_t i = 0; i < view.worker_count; i++) workers[i] = arena_copy(engine, view.workers[i]);
    }
    t->workers = workers;
}


static void stage_record(berth_engine *engine, uint64_t seq, berth_str canonical,
                         berth_str actor, berth_str reqid) {
    assert(engine->staged < BERTH_BATCH_RECORDS_MAX);
    const berth_outcome *out = &engine->out;
    berth_record *rec = &engine->records[engine->staged];
    berth_touched *t = &engine->touched[engine->staged];
    memset(rec, 0, sizeof(*rec));
    rec->seq = seq;
    rec->actor = arena_copy(engine, actor);
    rec->reqid = arena_copy(engine, reqid);
    rec->command = arena_copy(engine, canonical);
    rec->code = (uint32_t)out->code;
    rec->sentence = arena_copy(engine, berth_str_make(out->sentence, out->sentence_len));
    touched_copy(engine, t, out);
    engine->staged_bytes += canonical.len + out->sentence_len + actor.len + reqid.len +
                            ENGINE_RECORD_OVERHEAD_BYTES;
    engine->staged++;
}

/* A REQID seen before: answer from the window, append nothing. */
static bool submit_reqid_seen(berth_engine *engine, const berth_cmd *cmd, const berth_precomputed *pre,
                              berth_submit_result *result) {
    berth_reqid_entry hit;
    berth_str reqid = cmd->reqid;
    berth_reqid_status st = berth_state_reqid_check_precomputed(engine->state, cmd, pre, &hit);
    if (st == BERTH_REQID_NEW) return false;
    if (st == BERTH_REQID_RETRY) {
        result_set(result, BERTH_SUBMIT_RETRY, hit.seq, hit.code, hit.sentence.ptr, hit.sentence.len);
        return true;
    }
    assert(st == BERTH_REQID_CONFLICT);
    char sentence[BERTH_SENTENCE_LEN_MAX];
    int n = snprintf(sentence, sizeof(sentence),
                     "request id %.*s was used at seq %" PRIu64 " for a different command",
                     (int)reqid.len, reqid.ptr, hit.seq);
    assert(n > 0);
    result_set(result, BERTH_SUBMIT_CONFLICT, hit.seq, hit.code, sentence, strlen(sentence));
    return true;
}

/* The part of a submit that stages nothing: parse, canonical text, and the
 * REQID window. true: result holds the answer (SYNTAX, NOMEM, RETRY or
 * CONFLICT); false: the command is new and *len, *pre are set for the apply. */
static bool submit_answered(berth_engine *engine, size_t argc, const berth_str *argv,
                            berth_submit_result *result, size_t *len, berth_precomputed *pre) {
    if (engine->broken) {
        result_say(result, BERTH_SUBMIT_NOMEM, "ERR the engine lost its state after a failed commit; restart it");
        return true;
    }
    if (argc == 0 || argc > BERTH_ARGS_MAX) {
        result_say(result, BERTH_SUBMIT_SYNTAX, argc == 0 ? "ERR empty command" : "ERR too many words in the command");
        return true;
    }
    char err[BERTH_ERR_LEN_MAX];
    berth_cmd *cmd = &engine->cmd;
    if (berth_cmd_parse(cmd, argc, argv, err, sizeof(err)) != 0) {
        result_say(result, BERTH_SUBMIT_SYNTAX, err);
        return true;
    }
    *len = berth_cmd_canonical(cmd, engine->canonical, sizeof(engine->canonical));
    if (*len == 0) {
        result_say(result, BERTH_SUBMIT_SYNTAX, "ERR command too long");
        return true;
    }
    /* A REQID's identity is SHA-256 of the canonical text: worked out once
     * for both the window check and the apply. berth_cmd_parse left the
     * names' carried hashes exact. */
    if (cmd->reqid.len > 0) {
        uint8_t digest[BERTH_HASH_LEN];
        berth_sha256(engine->canonical, *len, digest);
        bool valid = berth_state_precompute_id(cmd, digest, pre);
        assert(valid && "berth_cmd_parse checked the REQID");
        (void)valid;
        if (submit_reqid_seen(engine, cmd, pre, result)) return true;
    }
    return false;
}

bool berth_engine_submit_answered(berth_engine *engine, size_t argc, const berth_str *argv,
                                  berth_submit_result *result) {
    assert(engine != NULL && result != NULL);
    assert(argv != NULL || argc == 0);
    size_t len = 0;
    berth_precomputed pre;
    return submit_answered(engine, argc, argv, result, &len, &pre);
}

void berth_engine_submit(berth_engine *engine, size_t argc, const berth_str *argv,
                         berth_str actor, berth_submit_result *result) {
    assert(engine != NULL && result != NULL);
    assert(argv != NULL || argc == 0);
    size_t len = 0;
    berth_precomputed pre;
    if (submit_answered(engine, argc, argv, result, &len, &pre)) return;
    berth_cmd *cmd = &engine->cmd;
    berth_str canonical = berth_str_make(engine->canonical, len);
    if (actor.len > ENGINE_ACTOR_LEN_MAX) actor.len = ENGINE_ACTOR_LEN_MAX;
    size_t bytes_need = len + BERTH_SENTENCE_LEN_MAX + actor.len + cmd->reqid.len + ENGINE_RECORD_OVERHEAD_BYTES;
    size_t arena_need = arena_need_max(len, actor, cmd->reqid);
    if (engine->staged >= engine->options.batch_records_max ||
        engine->staged_bytes + bytes_need > engine->options.batch_bytes_max ||
        engine->arena_used + arena_need > ENGINE_ARENA_BYTES_MAX) {
        result_say(result, BERTH_SUBMIT_BATCH_FULL, "ERR batch full: commit, then submit again");
        return;
    }
    uint64_t seq = berth_state_last_seq(engine->state) + 1;
    assert(seq == engine->head_seq + engine->staged + 1);
    int rc = cmd->reqid.len > 0
                 ? berth_state_apply_precomputed(engine->state, cmd, canonical, seq, &pre, false, &engine->out)
                 : berth_state_apply(engine->state, cmd, canonical, seq, &engine->out);
    if (rc != 0) {
        result_say(result, BERTH_SUBMIT_NOMEM, "ERR out of memory applying the command");
        return;
    }
    stage_record(engine, seq, canonical, actor, cmd->reqid);
    result_set(result, BERTH_SUBMIT_STAGED, seq, engine->out.code, engine->out.sentence,
               engine->out.sentence_len);
}

/* ----------------------------------------------------------- committing */

/* memory := disk, after a failed append. */
static berth_jerr engine_rebuild(berth_engine *engine) {
    berth_state *fresh = NULL;
    uint64_t head_time_ms = 0;
    char why[512];
    berth_jerr e = engine_replay(engine->journal, false, &fresh, &head_time_ms, NULL, why, sizeof(why));
    if (e != BERTH_J_OK) {
        engine->broken = true;
        return BERTH_J_CORRUPT;
    }
    berth_state_free(engine->state);
    engine->state = fresh;
    engine->head_seq = berth_state_last_seq(fresh);
    engine->head_time_ms = head_time_ms;
    return BERTH_J_OK;
}

berth_jerr berth_engine_commit(berth_engine *engine, uint64_t time_ms) {
    assert(engine != NULL);
    if (engine->broken) return BERTH_J_CORRUPT;
    if (engine->staged == 0) return BERTH_J_OK;
    uint32_t n = engine->staged;
    if (engine->options.dry_run) {
        engine->head_seq += n;
        batch_clear(engine);
        return BERTH_J_OK;
    }
    /* The wall clock can step back (NTP, a VM resumed): record times must
     * not, since `--at-time` finds a time by binary search over seqs. A
     * stepped-back clock stamps the head's time until it catches up. */
    if (time_ms < engine->head_time_ms) time_ms = engine->head_time_ms;
    for (uint32_t i = 0; i < n; i++) engine->records[i].time_ms = time_ms;
    berth_jerr e = berth_journal_append(engine->journal, engine->records, engine->touched, n);
    batch_clear(engine);
    if (e != BERTH_J_OK) {
        if (engine_rebuild(engine) != BERTH_J_OK) return BERTH_J_CORRUPT;
        return e;
    }
    uint64_t old_head = engine->head_seq;
    engine->head_seq += n;
    engine->head_time_ms = time_ms;
    assert(engine->head_seq == berth_state_last_seq(engine->state));
    uint64_t every = engine->options.snapshot_every;
    if (every > 0 && engine->head_seq / every != old_head / every) {
        /* A snapshot only shortens the next start; a failed one leaves the
         * journal whole, so the commit still succeeded. */
        berth_jerr se = berth_engine_snapshot(engine);
        (void)se;
    }
    return BERTH_J_OK;
}

berth_jerr berth_engine_snapshot(berth_engine *engine) {
    assert(engine != NULL);
    if (engine->options.dry_run) return BERTH_J_READONLY;
    if (engine->broken) return BERTH_J_CORRUPT;
    /* Staged commands are in the state but not on disk: a snapshot now would
     * vouch for records the journal does not hold. */
    if (engine->staged > 0 || engine->head_seq == 0) return BERTH_J_INVALID;
    /* The anchor is the head record's hash. A journal that writes a batch
     * after this call (berthd's committer) does not have it yet: the
     * snapshot goes unsealed and that journal seals it once it wrote the
     * batch (berth_snapshot_seal); unsealed, no load would use it. */
    uint64_t head = 0;
    uint8_t anchor[BERTH_HASH_LEN];
    berth_jerr e = berth_journal_head(engine->journal, &head, anchor);
    if (e != BERTH_J_OK) return e;
    uint8_t *bytes = NULL;
    size_t len = 0;
    if (berth_snapshot_encode(engine->state, head == engine->head_seq ? anchor : NULL, &bytes, &len) != 0) {
        return BERTH_J_NOMEM;
    }
    e = berth_journal_snapshot_put(engine->journal, engine->head_seq, bytes, len);
    free(bytes);
    return e;
}

/* ------------------------------------------------- committed elsewhere */


/* Replay one committed record onto the state; its outcome must be the one
 * the leader recorded, or the replicas would disagree from here on. */
static berth_jerr apply_one_committed(berth_engine *engine, const berth_record *rec, char *err,
                                      size_t err_size) {
    char why[BERTH_ERR_LEN_MAX] = "";
    if (berth_replay_record(engine->state, rec, &engine->out, why, sizeof(why)) != 0) {
        if (err_size > 0) snprintf(err, err_size, "record %" PRIu64 " does not replay: %s", rec->seq, why);
        return BERTH_J_CORRUPT;
    }
    const berth_outcome *out = &engine->out;
    if (out->code != (berth_code)rec->code || out->sentence_len != rec->sentence.len ||
        memcmp(out->sentence, rec->sentence.ptr, rec->sentence.len) != 0) {
        if (err_size > 0) {
            snprintf(err, err_size, "record %" PRIu64 " replays to another outcome than the one recorded",
                     rec->seq);
        }
        return BERTH_J_CORRUPT;
    }
    return BERTH_J_OK;
}

berth_jerr berth_engine_apply_committed(berth_engine *engine, berth_record *records, size_t n,
                                        char *err, size_t err_size) {
    assert(engine != NULL && records != NULL);
    assert(err != NULL || err_size == 0);
    if (engine->broken) return BERTH_J_CORRUPT;
    if (engine->staged > 0 || engine->options.dry_run || n == 0 || n > BERTH_BATCH_RECORDS_MAX) {
        if (err_size > 0) snprintf(err, err_size, "committed records cannot be applied now");
        return BERTH_J_INVALID;
    }
    berth_jerr e = BERTH_J_OK;
    size_t applied = 0;
    for (; applied < n && e == BERTH_J_OK; applied++) {
        const berth_record *rec = &records[applied];
        if (rec->seq != engine->head_seq + applied + 1) {
            if (err_size > 0) snprintf(err, err_size, "record %" PRIu64 " is not the next seq", rec->seq);
            e = BERTH_J_INVALID;
            break;
        }
        e = apply_one_committed(engine, rec, err, err_size);
        if (e == BERTH_J_OK) touched_copy(engine, &engine->touched[applied], &engine->out);
    }
    if (e == BERTH_J_OK) {
        e = berth_journal_append(engine->journal, records, engine->touched, n);
        if (e != BERTH_J_OK && err_size > 0) snprintf(err, err_size, "the local append failed (%s)", berth_jerr_name(e));
    }
    batch_clear(engine);
    if (e != BERTH_J_OK) {
        if (applied > 0 && engine_rebuild(engine) != BERTH_J_OK) return BERTH_J_CORRUPT;
        return e;
    }
    uint64_t old_head = engine->head_seq;
    engine->head_seq += n;
    /* The leader stamped them; kept as the floor should this berthd lead. */
    if (records[n - 1].time_ms > engine->head_time_ms) engine->head_time_ms = records[n - 1].time_ms;
    assert(engine->head_seq == berth_state_last_seq(engine->state));
    uint64_t every = engine->options.snapshot_every;
    if (every > 0 && engine->head_seq / every != old_head / every) {
        berth_jerr se = berth_engine_snapshot(engine);   /* only shortens the next start */
        (void)se;
    }
    return BERTH_J_OK;
}
