/* engine.h — the live authority: a state kept in step with its journal.
 *
 * berthd and the berth tool's what-if both drive commands through here.
 * Commands are staged into a batch (parsed, request-id checked, applied to
 * the in-memory state) and then committed in one journal append; nobody may
 * reveal a staged outcome before commit returns OK. If the commit fails the
 * engine rebuilds its state from the journal, so memory equals disk again,
 * and every staged command of the batch fails with the commit's error. */
#ifndef BERTH_ENGINE_H
#define BERTH_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "journal.h"
#include "replay.h"
#include "state.h"
#include "berth_limits.h"

/* The most bytes a staged batch's strings take in the engine's arena (the
 * command text, sentence, actor and reqid are bounded by the byte cap;
 * touched names repeat names from the command text, at most as many bytes
 * again, plus their berth_str arrays). A journal wrapper that copies a
 * batch (berthd's committer pipe) sizes its buffer from this. */
#define BERTH_ENGINE_ARENA_BYTES_MAX (2 * (size_t)BERTH_BATCH_BYTES_MAX + \
                                      (size_t)BERTH_BATCH_RECORDS_MAX * (BERTH_PLACEMENT_WORKERS_MAX + 1) * 16)

typedef struct berth_engine berth_engine;

typedef struct berth_engine_options {
    uint64_t snapshot_every;      /* records between snapshots; 0: never */
    bool dry_run;                 /* what-if: stage and apply, never append */
    uint32_t batch_records_max;   /* records per commit; 0: BERTH_BATCH_RECORDS_MAX (etcd: its txn cap) */
    size_t batch_bytes_max;       /* encoded bytes per commit (upper bound); 0: BERTH_BATCH_BYTES_MAX */
} berth_engine_options;

typedef enum berth_submit_kind {
    BERTH_SUBMIT_STAGED = 0,      /* applied; seq/code/sentence valid after commit */
    BERTH_SUBMIT_SYNTAX,          /* not a valid command: sentence holds "ERR ..." */
    BERTH_SUBMIT_RETRY,           /* REQID seen with this command: first outcome */
    BERTH_SUBMIT_CONFLICT,        /* REQID seen with another command: refused */
    BERTH_SUBMIT_BATCH_FULL,      /* commit first, then submit again */
    BERTH_SUBMIT_NOMEM
} berth_submit_kind;

typedef struct berth_submit_result {
    berth_submit_kind kind;
    uint64_t seq;                 /* STAGED: its seq; RETRY/CONFLICT: the first one's */
    berth_code code;
    char sentence[BERTH_SENTENCE_LEN_MAX];
} berth_submit_result;

/* Open on an already-open journal: load the newest good snapshot, replay the
 * tail, check the tail's chain. Errors as berth_replay_to; err says which seq
 * is bad and how to inspect it. */
berth_jerr berth_engine_open(berth_engine **out, berth_journal *journal,
                             const berth_engine_options *options,
                             berth_replay_stats *stats, char *err, size_t err_size);
void berth_engine_close(berth_engine *engine);

const berth_state *berth_engine_state(const berth_engine *engine);
berth_journal *berth_engine_journal(berth_engine *engine);
uint64_t berth_engine_head_seq(const berth_engine *engine);  /* committed */

/* Stage one mutating command given as words. actor: the client's name. */
void berth_engine_submit(berth_engine *engine, size_t argc, const berth_str *argv,
                         berth_str actor, berth_submit_result *result);
size_t berth_engine_staged(const berth_engine *engine);
/* What berth_engine_submit would answer for a command it would not stage,
 * staging nothing: true with result set (SYNTAX, NOMEM, or RETRY/CONFLICT
 * for a REQID the window holds); false for a new write, result untouched.
 * For a caller that refuses new writes for a while but must still answer a
 * retry with its first outcome. */
bool berth_engine_submit_answered(berth_engine *engine, size_t argc, const berth_str *argv,
                                  berth_submit_result *result);

/* Commit the staged batch at wall-clock time_ms, raised to the head
 * record's time when below it (a clock stepped back): record times never
 * decrease, which `--at-time` relies on. BERTH_J_OK: durable. Else
 * the state is rebuilt from the journal and the error returned (FULL, IO,
 * NOMEM); if even the rebuild fails the engine is unusable (CORRUPT). */
berth_jerr berth_engine_commit(berth_engine *engine, uint64_t time_ms);

/* Write a snapshot of the committed state now. */
berth_jerr berth_engine_snapshot(berth_engine *engine);

/* A follower's road (issue 6): records another berthd already committed,
 * in seq order from head+1, are applied to the state (each outcome must
 * equal the recorded one) and appended to the journal as given, times and
 * all. Nothing may be staged. Errors: INVALID (staged commands, a seq gap),
 * CORRUPT (a record does not replay to its recorded outcome; err says which),
 * or the append's; on any error the state is rebuilt from the journal. */
berth_jerr berth_engine_apply_committed(berth_engine *engine, berth_record *records, size_t n,
                                        char *err, size_t err_size);

#endif
