/* commit_log.h — one device flush per acknowledged batch: a preallocated
 * log of batch frames beside the LMDB journal (DIR/commit.log).
 *
 * Why. A durable LMDB commit is two ordered flushes (its data pages, then
 * the meta page that points at them): LMDB cannot know a page is whole, so
 * the meta page may reach the disk only after the pages it names. A frame
 * of this log carries its own SHA-256, so a torn frame is recognised and
 * one write plus one fdatasync makes a batch durable. berthd acknowledges a
 * batch once its frame is synced and moves frames into LMDB later, many
 * batches per LMDB commit (a checkpoint, fully synced), off the reply path.
 * The file is zero-filled to its full size when created and only ever
 * overwritten in place, so fdatasync has no file size or block map to
 * write: one flush.
 *
 * Layout. Frames start at offsets that are multiples of
 * BERTH_CLOG_ALIGN; a generation of frames starts at offset 0 after each
 * checkpoint (berth_clog_checkpoint resets the log). A frame is a 64-byte
 * header, then its payload:
 *   header: "BRTHCLOG" (8 bytes), format u32 (1), flags u32 (bit 0: the
 *           frame carries touched names), first_seq u64, count u32,
 *           payload_len u32 (32 bytes so far), then SHA-256 over those 32
 *           bytes and the payload (32 bytes); integers big-endian.
 * The payload holds, for each record in seq order: u32 length, the record
 * encoded as the journal stores it (berth_record_encode: body and hash),
 * then, when the frame carries touched names, u16 instance length and the
 * instance name, u16 worker count, and for each worker u16 length and name.
 *
 * Which frames count. The records are hash-chained like the journal's: a
 * frame's first record chains on the record before it. A scan starts at
 * offset 0 and follows frames while each is whole (its SHA-256 matches) and
 * starts at the seq after the last one; a frame of an older generation
 * holds seqs at or below the journal's head (they were checkpointed before
 * the log was reset), so it ends the walk or is skipped, never applied. The
 * frames past the journal's head must start at head+1 and chain on the
 * head's hash, or the log is CORRUPT. The walk ends at the first frame that
 * is not whole or does not follow: the last frame written may be torn (it
 * was never acknowledged: a frame is acknowledged only after its sync). A
 * whole frame past that point holding seqs beyond the last one applied
 * means a frame in the middle was damaged: CORRUPT, never silently dropped.
 *
 * Threads. A berth_clog is used by one thread at a time. */
#ifndef BERTH_COMMIT_LOG_H
#define BERTH_COMMIT_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "journal.h"

#define BERTH_CLOG_FILE "commit.log"
#define BERTH_CLOG_ALIGN 4096u                      /* frame start offsets */
#define BERTH_CLOG_HEADER_BYTES 64u
#define BERTH_CLOG_BYTES_DEFAULT ((uint64_t)128 << 20)   /* the file's size */
#define BERTH_CLOG_BYTES_MIN ((uint64_t)1 << 20)
#define BERTH_CLOG_BYTES_MAX ((uint64_t)1 << 34)

typedef struct berth_clog berth_clog;

/* Open DIR/commit.log for writing, creating it (zero-filled to bytes,
 * then the file and DIR fsynced) when absent. An existing file keeps its
 * size (bytes is then ignored). The caller holds DIR's lock (the journal's
 * writable open takes it). The log starts with its write offset unknown:
 * call berth_clog_checkpoint before the first append. Errors: INVALID
 * (bytes outside BERTH_CLOG_BYTES_MIN..MAX, or an existing file whose size
 * is not a multiple of BERTH_CLOG_ALIGN or below the minimum), FULL (no
 * room to create it), IO, NOMEM. err gets a sentence. */
berth_jerr berth_clog_open(berth_clog **out, const char *dir, uint64_t bytes, char *err,
                           size_t err_size);
void berth_clog_close(berth_clog *log);

/* True when DIR/commit.log exists. */
bool berth_clog_exists(const char *dir);

/* Bytes a frame of these records takes in the log (header, payload,
 * alignment). touched may be NULL. */
uint64_t berth_clog_frame_bytes(const berth_record *records, const berth_touched *touched,
                                size_t n);

/* Append n records (1..BERTH_BATCH_RECORDS_MAX; seq, time_ms, actor, reqid,
 * command, code and sentence set; seqs continue the log's last seq) as one
 * frame and fdatasync it. Sets version, prev_hash and hash in records, as
 * the journal's append would. touched may be NULL, else n entries. On OK
 * the frame is durable. Errors: FULL (the frame does not fit in what is
 * left of the file: checkpoint, then append again; nothing written),
 * INVALID (no checkpoint yet, a seq gap, a record over its limits, or a
 * frame bigger than the whole file; nothing written), IO (the write or the
 * sync failed: sticky, every later append and checkpoint fails IO, since
 * after a failed fdatasync the kernel may have dropped pages it could not
 * write, and whether this frame reached the disk is unknown), NOMEM. */
berth_jerr berth_clog_append(berth_clog *log, berth_record *records,
                             const berth_touched *touched, size_t n);

/* Move every frame past the journal's head into the journal and make it
 * durable there, then reset the log so the next frame starts at offset 0:
 * the recovery at start and the checkpoint while running are this one
 * call. Frames are appended in as few journal appends as the journal's
 * limits allow (BERTH_BATCH_RECORDS_MAX records, BERTH_BATCH_BYTES_MAX
 * bytes), then berth_journal_sync; the log is reset only after that sync
 * succeeded. Each appended record's hash must equal the one its frame
 * holds (the journal chains the same bytes), or CORRUPT. *moved (may be
 * NULL) gets the number of records moved. After any error the log is not
 * reset and its frames stay where they are; after OK the log's last seq is
 * the journal's head. Errors: CORRUPT (the walk above: a gap, a broken
 * chain, a damaged frame before a whole one; err names the offset and the
 * seqs), IO (sticky, as for append), and the journal's append and sync
 * errors (FULL, AGAIN, IO, NOMEM): a retry later moves the same frames. */
berth_jerr berth_clog_checkpoint(berth_clog *log, berth_journal *journal, uint64_t *moved,
                                 char *err, size_t err_size);

/* The last seq a successful append or checkpoint left in the log (the
 * journal's head right after a checkpoint); 0 before the first checkpoint. */
uint64_t berth_clog_last_seq(const berth_clog *log);
/* Bytes of the file the current generation's frames take (0 right after a
 * checkpoint), and the file's size. */
uint64_t berth_clog_used_bytes(const berth_clog *log);
uint64_t berth_clog_size_bytes(const berth_clog *log);

/* Read-only, for tools beside a stopped or running berthd: count the
 * records DIR/commit.log holds past head_seq by the walk above (0 when the
 * file is absent). Nothing is written. Errors: CORRUPT (as checkpoint),
 * IO, NOMEM. */
berth_jerr berth_clog_pending(const char *dir, uint64_t head_seq,
                              const uint8_t head_hash[BERTH_HASH_LEN], uint64_t *records,
                              char *err, size_t err_size);

/* For tests: when set, the next append fails its write (hook returns an
 * errno: the write returns -1 with it) or its sync; NULL: none.
 * Process-wide. */
typedef int (*berth_clog_fault_hook)(const char *step);   /* "write" or "sync" */
void berth_clog_fault_hook_set(berth_clog_fault_hook hook);

#endif
