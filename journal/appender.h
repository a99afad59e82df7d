/* appender.h — pipelined durable appends: the caller encodes the next batch
 * while the journal commits the one before it.
 *
 * berth_journal_append encodes and hashes a batch, then writes and syncs
 * it, all on the caller's thread: the CPU (about 0.4 ms for 1,024 records
 * on the development VM) and the disk's syncs (0.6-1 ms there) take turns.
 * An appender keeps up to BERTH_APPENDER_DEPTH batches in flight.
 * berth_appender_submit encodes a batch on the caller's thread, chained
 * from the batch submitted before it, and hands it to the appender's
 * committer thread, which appends it in one write transaction (with the
 * batches queued beside it: BERTH_APPENDER_DEPTH), storing the very bytes
 * berth_journal_append would. berth_appender_wait gives the oldest batch's
 * outcome, and its OK means the batch is durable: no crash, OS or power
 * loss included, can undo it. That holds on a journal opened with
 * defer_meta_sync too, where berth_journal_append's OK means only
 * committed: there the appender answers a batch once the next commit
 * (whose one sync also makes the commit before it durable) or, with
 * nothing queued, a sync of its own has made it durable. (A caller slower
 * to encode than a commit takes leaves nothing queued: then every batch
 * gets a sync of its own, two a batch.) So a caller acknowledges a batch's
 * records once berth_appender_wait returned OK for it; the appender changes
 * when the CPU works, never what an OK promises.
 *
 *   for each batch:
 *       if (berth_appender_in_flight(a) == BERTH_APPENDER_DEPTH)
 *           err = berth_appender_wait(a, &seq);
 *       berth_appender_submit(a, records, touched, n);
 *   while (berth_appender_in_flight(a) > 0) err = berth_appender_wait(a, &seq);
 *
 * After an error, every batch still in flight chains from the failed one, so
 * submit refuses (INVALID) until the caller has waited them all out; then
 * berth_journal_head says where the journal stands and the next submit
 * chains from it. Which failed batches' records are in the journal:
 * - A commit that failed writes none of its batches, and each fails with
 *   its error; the batches behind it fail with that error untried, writing
 *   nothing either. (A commit of several queued batches that found no room
 *   is tried again with its first batch alone first, so a batch fails FULL
 *   or AGAIN only when it did not fit alone.)
 * - With defer_meta_sync a batch can commit and then fail because the sync
 *   that would make it durable failed (IO; or FULL or AGAIN while the disk
 *   or map has no room for the meta rewrite that sync needs). Its records
 *   are in the journal and may become durable at the next successful commit
 *   or sync; the batches behind it fail untried.
 * So after any error the records up to berth_journal_head are in the
 * journal and those up to berth_journal_durable are durable, whatever the
 * waits said; a record whose batch's wait failed was never acknowledged.
 *
 * One thread uses an appender. While batches are in flight nothing else
 * may append to the journal: another append breaks the chain, and the
 * committer's next batch then fails INVALID, writing nothing. Close the
 * appender before its journal. Only a backend with the encoded road (LMDB)
 * has appenders. */
#ifndef BERTH_JOURNAL_APPENDER_H
#define BERTH_JOURNAL_APPENDER_H

#include <stddef.h>
#include <stdint.h>

#include "journal.h"

/* Batches in flight. While a commit and its syncs run, the caller encodes
 * the batches behind it, and the committer takes all that are queued into
 * its next commit (one write transaction, up to BERTH_BATCH_RECORDS_MAX
 * records and BERTH_BATCH_BYTES_MAX bytes): a slower disk makes commits
 * bigger, not more. A batch is never split across commits, and each one's
 * wait answers for it alone. */
#define BERTH_APPENDER_DEPTH 8

typedef struct berth_appender berth_appender;

/* An appender over journal, with its committer thread started. Errors:
 * INVALID (a backend without the encoded road: etcd), NOMEM, IO (the thread
 * could not start). A read-only journal's first batch fails READONLY. */
berth_jerr berth_appender_open(berth_appender **out, berth_journal *journal);

/* Encode n records (1..BERTH_BATCH_RECORDS_MAX) and queue them as one batch.
 * Their seqs follow the last batch submitted, or the journal's head when none
 * is in flight. Sets each record's version, prev_hash and hash, as
 * berth_journal_append does; the records' strings may be reused once this
 * returns. touched is NULL or has n entries (touched[i] for records[i]), and
 * it, names included, must stay valid until berth_appender_wait has
 * returned this batch or berth_appender_close has returned. Errors, with
 * nothing queued: INVALID (n out of range, a seq that does not follow, a
 * field or a touched name over its limit, more than BERTH_BATCH_BYTES_MAX
 * encoded, BERTH_APPENDER_DEPTH batches already in flight, or a wait failed
 * while batches are still in flight: above), NOMEM, and the journal's
 * head's errors when none is in flight. */
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

/* The commits the appender made so far (successful appends, each of one
 * batch or several): records divided by it is the commit's average size. */
uint64_t berth_appender_commits(berth_appender *ap);

/* Let every batch in flight finish (their outcomes are dropped; committed
 * ones stay committed, and durable once the appender's last sync ran), stop
 * the committer thread, free the appender. The touched names of batches not
 * yet waited for are read until it returns. */
void berth_appender_close(berth_appender *ap);

#endif
