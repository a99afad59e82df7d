/* replay_internal.h — what replay.c shares with engine.c and nobody else.
 *
 * The engine opens on a journal the way berth_replay_to does, but must also
 * check the tail that no snapshot vouches for (each record's hash and
 * recomputed outcome), in the same pass so start-up reads the tail once. */
#ifndef BERTH_REPLAY_INTERNAL_H
#define BERTH_REPLAY_INTERNAL_H

#include "replay.h"

/* berth_replay_to; with check_tail, every record replayed after the snapshot
 * also has its SHA-256 recomputed and its outcome compared (code and
 * sentence) with the recorded one, as berth_verify does. */
berth_jerr berth_replay_to_checked(berth_journal_reader *reader, uint64_t target, bool use_snapshots,
                                   bool check_tail, berth_state **out, berth_replay_stats *stats,
                                   uint32_t *bad_snapshots, char *err, size_t err_size);

/* The names an outcome touched, as the journal's HISTORY index takes them:
 * a view into out, valid until the next apply. The engine copies it into
 * each staged record's berth_touched; berth_verify_touched hands it on. */
berth_touched berth_outcome_touched(const berth_outcome *out);

#endif
