/* appender.h — pipelined durable appends: the caller encodes the next batch
 * while the journal commits the one before it.
 *
 * berth_journal_append encodes and hashes a batch, then writes and syncs it,
 * all on the caller's thread: the CPU (about 0.4 ms for 1,024 records on the
 * development VM) and the disk's syncs (0.6-1 ms there) take turns. An appender
 * keeps up to BERTH_APPENDER_DEPTH batches in flight. berth_appender_submit encodes a
 * batch on the caller's thread, chained from the batch submitted before it,
 * and hands it to the appender's committer thread, which appends it as one write
 * transaction, exactly as berth_journal_append would. berth_appender_wait gives
 * the oldest batch's outcome, and its OK means the batch is durable: no
 * crash, OS or power loss included, can undo it. That holds on a journal
 * opened with defer_meta_sync too, where berth_journal_append's OK means
 * only committed: there the appender answers a batch once the next batch's
 * commit (whose one sync also makes the commit before it durable) or, with
 * nothing queued, a sync of its own has made it durable. So a caller
 * acknowledges a batch's records once berth_appender_wait returned OK for it;
 * the appender changes when the CPU works, never what an OK promises.
 *
 *   for each batch:
 *       if (berth_appender_in_flight(p) == BERTH_APPENDER_DEPTH) berth_appender_wait(p, &seq);
 *       berth_appender_submit(p, records, touched, n);
 *   while (berth_appender_in_flight(p) > 0) berth_appender_wait(p, &seq);
 *
 * A batch that fails writes nothing, and so does every batch submitted after
 * it: they chain from its records, so each fails with the same error without
 * being tried. Once the caller has waited for all of them, the next submit
 * chains from the journal's head again. With defer_meta_sync, a batch that
 * committed and then could not be made durable (the sync failed: IO, or
 * FULL while the disk has no room for the meta rewrite) fails with the
 * sync's error although its records are in the journal: as after a failed
 * berth_journal_sync, berth_journal_head says what was committed and
 * berth_journal_durable what is durable.
 *
 * One thread uses an appender. While batches are in flight nothing else may
 * append to the journal: another append breaks the chain, and the
 * committer's next batch then fails INVALID, writing nothing. Close the appender
 * before its journal. Only a backend with the encoded road (LMDB) has appenders. */
#ifndef BERTH_JOURNAL_APPENDER_H
#define BERTH_JOURNAL_APPENDER_H

#include <stddef.h>
#include <stdint.h>

#include "journal.h"

/* Batches in flight: one committed and waiting for the next commit's sync
 * (defer_meta_sync), one committing, one being encoded. */
#define BERTH_APPENDER_DEPTH 3

typedef struct berth_appender berth_appender;

/* An appender over journal, with its committer thread started. Errors: INVALID
 * (a backend without the encoded road: etcd), NOMEM, IO (the thread could
 * not start). A read-only journal's first batch fails READONLY. */
berth_jerr berth_appender_open(berth_appender **out, berth_journal *journal);

/* Encode n records (1..BERTH_BATCH_RECORDS_MAX) and queue them as one batch.
 * Their seqs follow the last batch submitted, or the journal's head when none
 * is in flight. Sets each record's version, prev_hash and hash, as
 * berth_journal_append does; the records' strings may be reused once this
 * returns. touched is NULL or has n entries (touched[i] for records[i]), and
 * it, names included, must stay valid until berth_appender_wait has returned
 * this batch. Errors, with nothing queued: INVALID (n out of range, a seq
 * that does not follow, a field over its limit, more than
 * BERTH_BATCH_BYTES_MAX encoded, or BERTH_APPENDER_DEPTH batches already in
 * flight), NOMEM, and the journal's head's errors when none is in flight. */
berth_jerr berth_appender_submit(berth_appender *ap, berth_record *records,
                             const berth_touched *touched, size_t n);

/* Wait until the oldest batch in flight is durable or failed, and return
 * its outcome: berth_journal_append's errors, its own or an earlier
 * batch's, or a sync's (above).
 * last_seq (may be NULL) gets the batch's last seq. INVALID when no batch is
 * in flight. */
berth_jerr berth_appender_wait(berth_appender *ap, uint64_t *last_seq);

/* Batches submitted and not yet returned by berth_appender_wait. */
size_t berth_appender_in_flight(const berth_appender *ap);

/* Let every batch in flight finish (their outcomes are dropped; committed
 * ones stay committed), stop the committer thread, free the appender. */
void berth_appender_close(berth_appender *ap);

#endif
