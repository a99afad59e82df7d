/* replay.h — rebuild berth's state from the journal, verify it, snapshot it.
 *
 * Replay is the only road from journal to state: berthd's start, `AT <seq>`
 * queries, the berth tool and verification all go through it, so a state
 * seen anywhere is one the journal proves. The canonical state digest is
 * SHA-256 of the state's snapshot encoding, which lists everything in one
 * canonical order (snapshot.c: workers by name, instances by deploy seq,
 * request ids oldest first), so equal states have equal digests however they were reached. */
#ifndef BERTH_REPLAY_H
#define BERTH_REPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "journal.h"
#include "state.h"

#define BERTH_SNAPSHOT_VERSION 2   /* 2: anchored, SHA-256 request-id identities */

typedef struct berth_replay_stats {
    uint64_t from_snapshot_seq;   /* 0: replayed from genesis */
    uint64_t records;             /* records applied after the snapshot */
    uint64_t last_seq;
    uint64_t elapsed_ns;          /* filled by the caller's clock, not by replay */
    uint32_t bad_snapshots;       /* berth_engine_open's: snapshots that failed their check (replay
                                     proper clears it and counts in its own argument) */
} berth_replay_stats;

/* Apply one decoded record to state (parse its command text, apply at its
 * seq). out gets the outcome recomputed now. Returns 0, or -1 with err when
 * the command does not parse or seq is not last_seq+1 (a corrupt journal),
 * or memory ran out. */
int berth_replay_record(berth_state *state, const berth_record *rec, berth_outcome *out,
                        char *err, size_t err_size);

/* The wording (core/state.h) a record of this format version was answered
 * in: version 1 wording 1, version 2 wording 2. A caller that applies
 * records itself (the berth tool's feed) sets it for each record that is
 * not of the current version, and sets it back after. */
_Static_assert(BERTH_RECORD_VERSION_MIN == BERTH_WORDING_MIN && BERTH_RECORD_VERSION == BERTH_WORDING_CURRENT,
               "each format version is one wording");
static inline uint32_t berth_record_wording(uint32_t version) {
    return version;
}

/* The REQID checks replay makes before applying a record, which
 * berth_state_apply asserts: cmd's REQID, if any, is a valid name and not
 * one still in the window. For a caller that applies records itself (the
 * berth tool's feed). 0, or -1 with err naming seq (the journal is corrupt). */
int berth_replay_reqid_check(const berth_state *state, const berth_cmd *cmd, berth_str canonical,
                             uint64_t seq, char *err, size_t err_size);

/* Build the state as of target seq (UINT64_MAX: head) from the newest good
 * snapshot at or before it (when use_snapshots) plus the records after it.
 * A snapshot that fails to decode or whose digest differs is skipped (and
 * counted in *bad_snapshots, may be NULL) and an older one, or genesis, used.
 * Returns BERTH_J_OK with *out, NOTFOUND if target is beyond the head, or
 * CORRUPT / NOMEM / IO with err naming the seq. */
berth_jerr berth_replay_to(berth_journal_reader *reader, uint64_t target, bool use_snapshots,
                           berth_state **out, berth_replay_stats *stats,
                           uint32_t *bad_snapshots, char *err, size_t err_size);

/* Continue a state forward to target (UINT64_MAX: head) within reader. */
berth_jerr berth_replay_forward(berth_journal_reader *reader, berth_state *state,
                                uint64_t target, berth_replay_stats *stats,
                                char *err, size_t err_size);

/* Asked between chunks of records (every few hundred) by a run that may
 * stop early; true: stop here. May be called from a thread of replay's. */
typedef bool (*berth_replay_yield_fn)(void *arg);

/* berth_replay_to and berth_replay_forward that may stop short of target,
 * so no reader need stay open for a long replay (a long-lived LMDB reader
 * holds up map growth): after records_max records, or at a chunk boundary
 * where yield (may be NULL) returned true. OK then means the state is at
 * stats->last_seq (<= target; stats may not be NULL); go on with
 * berth_replay_forward_part in a fresh reader, whose head is at least
 * target, until it reaches target. The state reached, and any error and its
 * text, are those of one berth_replay_to call, wherever the parts split. */
berth_jerr berth_replay_to_part(berth_journal_reader *reader, uint64_t target, bool use_snapshots,
                                uint64_t records_max, berth_replay_yield_fn yield,
                                void *yield_arg, berth_state **out, berth_replay_stats *stats,
                                uint32_t *bad_snapshots, char *err, size_t err_size);
berth_jerr berth_replay_forward_part(berth_journal_reader *reader, berth_state *state,
                                     uint64_t target, uint64_t records_max,
                                     berth_replay_yield_fn yield, void *yield_arg,
                                     berth_replay_stats *stats, char *err, size_t err_size);

/* Verify the chain from `from` (1: genesis) to the reader's head: each
 * record's hash, its prev_hash against its predecessor, dense seqs, and each
 * recomputed outcome against the recorded one (code and sentence). */
typedef struct berth_verify_report {
    bool ok;
    uint64_t records;             /* records checked */
    uint64_t first_bad_seq;       /* 0 when ok */
    char what[512];               /* how it disagrees, for a human */
} berth_verify_report;
berth_jerr berth_verify(berth_journal_reader *reader, berth_verify_report *report);

/* berth_verify that also hands each record's touched names to fn, in seq
 * order, on the caller's thread, once the record's outcome matched the
 * recorded one: the names come from the same apply (berth_state_apply)
 * and the same outcome-to-names step (berth_outcome_touched) as the
 * engine's at append, so they are exactly the names berthd gave the
 * journal's HISTORY index. They point into the outcome: valid during the
 * call only. fn returning other than OK stops the walk; the report names
 * the seq and the error, which is returned. For `berth history rebuild`. */
typedef berth_jerr (*berth_touched_fn)(void *ctx, uint64_t seq, const berth_touched *touched);
berth_jerr berth_verify_touched(berth_journal_reader *reader, berth_touched_fn fn, void *ctx,
                                berth_verify_report *report);

/* The same verify in steps, each within a reader of its own, so no reader
 * stays open for the whole run (a long-lived LMDB reader holds up map
 * growth and pins old pages). begin fixes the range, 1..target (UINT64_MAX:
 * reader's head), and target's hash; NULL when out of memory. Each step
 * goes on from where the last one stopped, in any reader of the same
 * journal whose head is at least target, and returns true once the run is
 * over (checked to target, or failed), false when it stopped early: after
 * records_max records, or at a chunk boundary (every few hundred records)
 * where yield (may be NULL) returned true; it may be called from another
 * thread. Records the step read are not used after it returns, so its
 * reader may be closed then. end gives what berth_verify would have on a
 * reader whose head is target: the same result, records, first_bad_seq
 * and what, wherever the steps split; it frees run. end on a run that is
 * not over (its caller gave up between steps) returns INVALID, ok false. */
typedef struct berth_verify_run berth_verify_run;
berth_verify_run *berth_verify_begin(berth_journal_reader *reader, uint64_t target);
bool berth_verify_step(berth_verify_run *run, berth_journal_reader *reader, uint64_t records_max,
                       berth_replay_yield_fn yield, void *yield_arg);
berth_jerr berth_verify_end(berth_verify_run *run, berth_verify_report *report);

/* Snapshot codec (msgpack; snapshot.c gives the layout). encode: *bytes
 * malloc'd, caller frees. anchor: the hash of the journal record at the
 * state's last seq, which ties the snapshot to its chain; NULL leaves it
 * unsealed (zeros: no load will use it) for berth_snapshot_seal to set once
 * that record is hashed (berthd writes a batch after its engine took the
 * snapshot that follows it). */
int berth_snapshot_encode(const berth_state *state, const uint8_t anchor[BERTH_HASH_LEN],
                          uint8_t **bytes, size_t *len);
void berth_snapshot_seal(uint8_t *bytes, size_t len, const uint8_t anchor[BERTH_HASH_LEN]);
/* decode: checks the trailing digest, the format version, every field and
 * the state's invariants; anchor (may be NULL) gets the stored anchor,
 * which the caller compares with its journal's record. */
int berth_snapshot_decode(const void *bytes, size_t len, berth_state **out,
                          uint8_t anchor[BERTH_HASH_LEN], char *err, size_t err_size);
/* The state digest a stored snapshot vouches for (SHA-256 of its encoding,
 * without the anchor), from its bytes alone. -1: too short to be one. */
int berth_snapshot_body_digest(const void *bytes, size_t len, uint8_t digest[BERTH_HASH_LEN]);
/* SHA-256 of the snapshot encoding. Returns 0, -1 on memory. */
int berth_state_digest(const berth_state *state, uint8_t digest[BERTH_HASH_LEN]);
void berth_hex(const uint8_t *bytes, size_t len, char *out);  /* out: 2*len+1 */

#endif
