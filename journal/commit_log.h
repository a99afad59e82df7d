/* commit_log.h — one device flush per acknowledged batch: a preallocated
 * log of batch frames beside the LMDB journal, in two files
 * (DIR/commit.log and DIR/commit.log.2).
 *
 * Why. A durable LMDB commit is two ordered flushes (its data pages, then
 * the meta page that points at them): LMDB cannot know a page is whole, so
 * the meta page may reach the disk only after the pages it names. A frame
 * of this log carries its own SHA-256, so a torn frame is recognised and
 * one write plus one fdatasync makes a batch durable. berthd acknowledges a
 * batch once its frame is synced and moves frames into LMDB later, many
 * batches per LMDB commit (a checkpoint, fully synced), off the reply path.
 * Each file is zero-filled to its full size when created and only ever
 * overwritten in place, so fdatasync has no file size or block map to
 * write: one flush.
 *
 * Why two files. A checkpoint takes an LMDB append and its syncs; if the
 * appending thread had to wait for it, every batch behind it would too. So
 * frames go into one file (the active one) while the other, sealed
 * (berth_clog_seal), is checkpointed on another thread
 * (berth_clog_checkpoint_sealed); the sealed file is reused only after its
 * frames are durable in the journal. A data directory from before the
 * second file (commit.log alone) is read the same way: the second file is
 * then created beside it.
 *
 * Layout of each file. Frames start at offsets that are multiples of
 * BERTH_CLOG_ALIGN; a generation of frames starts at offset 0 of a file
 * each time the file is reused after a checkpoint. A frame is a 64-byte
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
 * frame's first record chains on the record before it. A walk of a file
 * starts at its offset 0 and follows frames while each is whole (its
 * SHA-256 matches) and starts at the seq after the last one; a frame of an
 * older generation holds seqs at or below the journal's head (they were
 * checkpointed before the file was reused), so it ends the walk or is
 * skipped, never applied. The two files are walked in seq order: first the
 * one whose first frame past the journal's head starts at head+1, then the
 * other from where the first ended. The frames past the journal's head must
 * start at head+1 and chain on the head's hash, and the second file's must
 * follow the first's, or the log is CORRUPT. A walk ends at the first frame
 * that is not whole or does not follow: the last frame written may be torn
 * (it was never acknowledged: a frame is acknowledged only after its sync,
 * and a file is sealed only after its last frame was synced, so only the
 * newer file can end torn). A whole frame past that point, in either file,
 * holding seqs beyond the last one applied means a frame in the middle was
 * damaged: CORRUPT, never silently dropped.
 *
 * Threads. One thread appends (berth_clog_append, berth_clog_seal,
 * berth_clog_last_seq, berth_clog_active_used_bytes); one other thread may
 * run berth_clog_checkpoint_sealed at the same time. berth_clog_checkpoint,
 * berth_clog_close and berth_clog_open run with no other call in flight.
 * berth_clog_used_bytes and berth_clog_size_bytes may be called from any
 * thread. */
#ifndef BERTH_COMMIT_LOG_H
#define BERTH_COMMIT_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "journal.h"

#define BERTH_CLOG_FILE "commit.log"                 /* the first file */
#define BERTH_CLOG_FILE2 "commit.log.2"              /* the second file */
#define BERTH_CLOG_ALIGN 4096u                      /* frame start offsets */
#define BERTH_CLOG_HEADER_BYTES 64u
#define BERTH_CLOG_BYTES_DEFAULT ((uint64_t)64 << 20)    /* each file's size */
#define BERTH_CLOG_BYTES_MIN ((uint64_t)1 << 20)
#define BERTH_CLOG_BYTES_MAX ((uint64_t)1 << 34)

typedef struct berth_clog berth_clog;

/* Open both files for writing, creating each one that is absent
 * (zero-filled to bytes, then the file and DIR fsynced). An existing file
 * keeps its size (bytes is then ignored for it); the two may differ. The
 * caller holds DIR's lock (the journal's writable open takes it). The log
 * starts with its write offsets unknown: call berth_clog_checkpoint before
 * the first append. Errors: INVALID (bytes outside
 * BERTH_CLOG_BYTES_MIN..MAX for a file to create, or an existing file whose
 * size is not a multiple of BERTH_CLOG_ALIGN or outside those bounds), FULL
 * (no room to create one: a first file made already stays, whole), IO,
 * NOMEM. err gets a sentence. */
berth_jerr berth_clog_open(berth_clog **out, const char *dir, uint64_t bytes, char *err,
                           size_t err_size);
void berth_clog_close(berth_clog *log);

/* True when either file exists in DIR. */
bool berth_clog_exists(const char *dir);

/* True when either file in DIR ever took a frame: a file is made of zeros
 * and its first frame goes at offset 0, which later frames only overwrite
 * with frames. So records were acknowledged in DIR at some time (the
 * journal's open refuses a missing data.mdb then). A file that cannot be
 * read counts as holding one: the caller must not take DIR for new. */
bool berth_clog_ever_written(const char *dir);

/* Bytes a frame of these records takes in the log (header, payload,
 * alignment). touched may be NULL. */
uint64_t berth_clog_frame_bytes(const berth_record *records, const berth_touched *touched,
                                size_t n);

/* Append n records (1..BERTH_BATCH_RECORDS_MAX; seq, time_ms, actor, reqid,
 * command, code and sentence set; seqs continue the log's last seq) as one
 * frame and fdatasync it. Sets version, prev_hash and hash in records, as
 * the journal's append would. touched may be NULL, else n entries. On OK
 * the frame is durable. It goes into the active file. Errors: FULL (the
 * frame does not fit in what is left of the active file: seal and
 * checkpoint, or checkpoint, then append again; nothing written), INVALID
 * (no checkpoint yet, a seq gap, a record over its limits, or a frame
 * bigger than the active file; nothing written), IO (the write or the
 * sync failed: sticky, every later append and checkpoint fails IO, since
 * after a failed fdatasync the kernel may have dropped pages it could not
 * write, and whether this frame reached the disk is unknown), NOMEM. */
berth_jerr berth_clog_append(berth_clog *log, berth_record *records,
                             const berth_touched *touched, size_t n);

/* Appending thread: when the active file holds frames and the other file
 * is free (never used, or its frames are durable in the journal), seal the
 * active file: its frames wait for berth_clog_checkpoint_sealed, and the
 * next append goes into the other file from its offset 0. Returns true
 * when a sealed file waits for its checkpoint (sealed by this call or an
 * earlier one whose checkpoint has not yet succeeded), false when none
 * does (the active file holds no frame and no file is sealed). Nothing is
 * written: the seal lives in memory only, since a walk orders the files by
 * their seqs. Before the first checkpoint it returns false. */
bool berth_clog_seal(berth_clog *log);

/* Move the sealed file's frames past the journal's head into the journal,
 * make them durable there (berth_journal_sync), and free the file for a
 * later seal: the checkpoint berthd runs on its own thread while appends go
 * on in the active file. The walk is the header comment's over the sealed
 * file alone, from the journal's head; its frames must end at the seq
 * before the active file's first frame (or all lie at or below the head,
 * when a berth_clog_checkpoint that failed moved them), else CORRUPT.
 * *moved (may be NULL) gets the
 * number of records moved. Errors: INVALID (no file is sealed; nothing
 * done), CORRUPT, IO (sticky: an append failed earlier, or this walk's
 * reads), and the journal's append and sync errors (FULL, AGAIN, IO,
 * NOMEM), as berth_clog_checkpoint; after any error the file stays sealed
 * with its frames, and a later call (or berth_clog_checkpoint) moves them. */
berth_jerr berth_clog_checkpoint_sealed(berth_clog *log, berth_journal *journal,
                                        uint64_t *moved, char *err, size_t err_size);

/* Move every frame past the journal's head, of both files, into the journal
 * and make it durable there, then reset both files so the next frame starts
 * at offset 0 of the active one (file 0, as after open) and no file is
 * sealed: the recovery at start, the checkpoint a running berthd needs at
 * once, and the one at a clean stop are this one call. Frames are appended
 * in as few journal appends as the journal's
 * limits allow (BERTH_BATCH_RECORDS_MAX records, BERTH_BATCH_BYTES_MAX
 * bytes), then berth_journal_sync; the log is reset only after that sync
 * succeeded. The records go in as the bytes their frames hold
 * (berth_journal_append_encoded, which checks each one's seq, link and
 * hash on the bytes it stores). *moved (may be NULL) gets the number of
 * records moved. After any error the log is not reset and its frames stay
 * where they are; after OK the log's last seq is the journal's head.
 * Errors: CORRUPT (the walk above: a gap, a broken chain, a damaged frame
 * before a whole one; err names the offset and the seqs; or a record the
 * journal found not hashing or chaining as stored), INVALID (a journal
 * without berth_journal_append_encoded, or one whose head moved under the
 * log), IO (sticky, as for append), and the journal's append and sync
 * errors (FULL, AGAIN, IO, NOMEM): a retry later moves the same frames. */
berth_jerr berth_clog_checkpoint(berth_clog *log, berth_journal *journal, uint64_t *moved,
                                 char *err, size_t err_size);

/* The last seq a successful append or checkpoint left in the log (the
 * journal's head right after a full checkpoint); 0 before the first
 * checkpoint. Appending thread. */
uint64_t berth_clog_last_seq(const berth_clog *log);
/* Bytes the frames not yet checkpointed take in both files (0 right after
 * a full checkpoint), and the two files' sizes together. Any thread. */
uint64_t berth_clog_used_bytes(berth_clog *log);
uint64_t berth_clog_size_bytes(const berth_clog *log);
/* Bytes the active file's frames take, and the active file's size: what
 * berth_clog_append has left before FULL. Appending thread. */
uint64_t berth_clog_active_used_bytes(const berth_clog *log);
uint64_t berth_clog_active_size_bytes(const berth_clog *log);
/* Have fn(arg) called whenever a thread finds the log's internal lock
 * held, just before it waits for it. A caller whose checkpointing thread
 * may run at a low priority uses it to raise that thread, which could
 * otherwise hold the lock, preempted, while the appending thread waits
 * (berthd: tools/batch.c, "The checkpointer's priority"). fn must not call
 * into the log. Set before any other thread uses the log; NULL: none. */
void berth_clog_set_contention_hook(berth_clog *log, void (*fn)(void *arg), void *arg);

/* After a successful berth_clog_checkpoint: true when its walk ended on a
 * frame that is not whole but whose header still reads, holding seqs past
 * what moved (a frame a crash cut before its sync returned, so none of it
 * was acknowledged; or, had it been whole once, one the disk damaged): its
 * claimed seqs, file and offset, for the caller's log. path points into
 * log. */
bool berth_clog_dropped(const berth_clog *log, uint64_t *first_seq, uint64_t *last_seq,
                        const char **path, uint64_t *off);

/* Read-only, for tools beside a stopped or running berthd: count the
 * records the two files hold past head_seq by the walk above (an absent
 * file holds none). Nothing is written. Errors: CORRUPT (as checkpoint),
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
