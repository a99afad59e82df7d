/* journal.h — berth's append-only, hash-chained journal, behind one small
 * interface.
 *
 * Records are keyed by a dense seq from 1. Each record's hash is SHA-256 of
 * its encoded body, and the body carries the previous record's hash, so a
 * changed byte anywhere breaks the chain from that seq on. Appends go in
 * batches, one durable write transaction each: when berth_journal_append
 * returns BERTH_J_OK the whole batch is on disk; when it returns anything
 * else none of it is, and the head is unchanged. (With the opt-in
 * defer_meta_sync option an append's OK means committed, and
 * berth_journal_durable says which seq is on disk: see there.)
 *
 * The LMDB backend is the embedded default (a data directory with two
 * environments: journal, snapshots and meta in one, the history index in
 * DIR/history, written by a thread of the journal's own). Every function returns
 * a berth_jerr; the errors each may return are listed beside it. */
#ifndef BERTH_JOURNAL_H
#define BERTH_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "names.h"

/* A record's format version. Version 2 has version 1's layout; it says
 * the outcome's sentence is in the rules' second wording (core/state.h,
 * BERTH_WORDING_CURRENT), which reads better in a few refusals. Verify
 * compares sentences byte for byte, so each record is judged again in the
 * wording it was written in. New records carry BERTH_RECORD_VERSION; every
 * version from BERTH_RECORD_VERSION_MIN on decodes. */
#define BERTH_RECORD_VERSION 2
#define BERTH_RECORD_VERSION_MIN 1
#define BERTH_HASH_LEN 32
#define BERTH_BATCH_RECORDS_MAX 4096        /* records in one append */
#define BERTH_BATCH_BYTES_MAX (16u << 20)   /* encoded bytes in one append */
#define BERTH_RECORD_BYTES_MAX 32768        /* one encoded record */
#define BERTH_SNAPSHOTS_KEPT_MAX 32         /* newest snapshots kept; older are deleted */
#define BERTH_HISTORY_FOLD_RECORDS_DEFAULT 16384   /* touch-log backlog folded at once */
#define BERTH_HISTORY_FOLD_RECORDS_MAX (1u << 20)   /* bounds one fold's transaction */

typedef enum berth_jerr {
    BERTH_J_OK = 0,
    BERTH_J_NOTFOUND,   /* no such seq / snapshot / data directory */
    BERTH_J_FULL,       /* map at its maximum or disk full: nothing written */
    BERTH_J_IO,         /* I/O error: nothing acknowledged was written */
    BERTH_J_CORRUPT,    /* a record or the store does not decode or chain */
    BERTH_J_LOCKED,     /* another process holds the data directory */
    BERTH_J_NOMEM,
    BERTH_J_INVALID,    /* caller error: seq gap, batch too large, bad argument */
    BERTH_J_READONLY,   /* opened read-only */
    BERTH_J_AGAIN,      /* the map had to grow, but this process's readers stayed open
                         * past the wait: nothing written; retry */
    BERTH_J_INDOUBT     /* a replicated append was sent and got no answer: the records
                         * may yet be committed (etcd); only a later read can tell */
} berth_jerr;

const char *berth_jerr_name(berth_jerr err);   /* "FULL", "IO", ... */

/* One journal record. Decoded records point into the store's memory and stay
 * valid while the reader they came from is open. */
typedef struct berth_record {
    uint32_t version;
    uint64_t seq;
    uint64_t time_ms;       /* wall clock at append (ms since the epoch); replay never reads it */
    berth_str actor;        /* CLIENT SETNAME of the writer, or "" */
    berth_str reqid;        /* "" when none */
    berth_str command;      /* canonical command text */
    uint32_t code;          /* berth_code of the outcome */
    berth_str sentence;     /* the outcome's sentence */
    uint8_t prev_hash[BERTH_HASH_LEN];
    uint8_t hash[BERTH_HASH_LEN];
} berth_record;

/* True for the format versions this build decodes. */
static inline bool berth_record_version_known(uint32_t version) {
    return version >= BERTH_RECORD_VERSION_MIN && version <= BERTH_RECORD_VERSION;
}

/* Encode rec's body (everything but hash) after setting nothing; computes
 * rec->hash = SHA-256(body) and writes body+hash to buf. Returns bytes
 * written, 0 if cap is too small or a field is over its limit. */
size_t berth_record_encode(berth_record *rec, uint8_t *buf, size_t cap);
/* Decode one record from bytes (pointers into bytes). Checks structure and
 * version, not the hash. Returns BERTH_J_OK or BERTH_J_CORRUPT with a reason
 * in why (may be NULL). */
berth_jerr berth_record_decode(const uint8_t *bytes, size_t len, berth_record *out,
                               char *why, size_t why_size);
/* An encoded record's seq and time, read from its first fields alone: for
 * a scan over record times (`--at-time`), which need not decode the rest.
 * false when the bytes do not start as a body of a known version (decode them for
 * the reason). Checks nothing after the time, the hash included. */
bool berth_record_peek_time(const uint8_t *bytes, size_t len, uint64_t *seq, uint64_t *time_ms);
/* An encoded record's seq, and where its prev_hash and hash lie in bytes,
 * from its first fields and its last 68 bytes alone (both hashes are
 * fixed-size bins at the end): what an append of encoded records checks
 * the chain with. false when the bytes do not start as a body of a known version or
 * do not end with the two bins. Checks nothing in between, the hash's
 * value included. */
bool berth_record_peek_chain(const uint8_t *bytes, size_t len, uint64_t *seq,
                             const uint8_t **prev_hash, const uint8_t **hash);
/* Recompute SHA-256 of the encoded body in bytes and compare with the stored
 * hash: true when equal. */
bool berth_record_hash_ok(const uint8_t *bytes, size_t len);
/* SHA-256 of len bytes: the hash records and snapshot digests use. Takes
 * no lock (SHA256_Init/Update/Final, not the one-shot SHA256(), which
 * fetches the algorithm under OpenSSL's provider locks): berthd forks its
 * jobs' children while other threads run, and a child must not inherit a
 * held lock. Cannot fail. */
void berth_sha256(const void *bytes, size_t len, uint8_t digest[BERTH_HASH_LEN]);

/* The names a record touched, for HISTORY's index. */
typedef struct berth_touched {
    berth_str instance;                 /* len 0: none */
    uint32_t worker_count;
    const berth_str *workers;
} berth_touched;

typedef struct berth_journal_options {
    bool read_only;             /* tools beside a running berthd */
    uint64_t map_size_initial;  /* bytes; 0: 64 MiB */
    uint64_t map_size_max;      /* bytes; 0: 1 TiB. FULL once reached */
    bool no_lock;               /* read_only tools: do not take the directory lock */
    /* HISTORY touch-log backlog (durable records) that wakes the fold into
     * the history index; 0: BERTH_HISTORY_FOLD_RECORDS_DEFAULT. Over
     * BERTH_HISTORY_FOLD_RECORDS_MAX the open is INVALID. Only layout and
     * write cost depend on it, never a query's answer. An open for
     * history_rebuild writes batches of at most this many records when it
     * is set (0: as many as the folder's buffers hold). */
    uint32_t history_fold_records;
    /* LMDB, writable: one disk sync per commit instead of two. LMDB is
     * opened with MDB_NOMETASYNC: a commit syncs its data pages, then writes
     * its meta page without syncing it, so an append's OK means committed
     * (visible to readers, kept by any crash of this process) but an OS
     * crash may undo the last commit. The next commit's data sync, or
     * berth_journal_sync, makes it durable; berth_journal_durable says how
     * far that reaches. Whoever acknowledges a record must wait until it is
     * durable. false (the default): every append is durable on return. The
     * etcd backend ignores it: its appends are durable on return. */
    bool defer_meta_sync;
    /* LMDB, writable: open only to rebuild the HISTORY index (see
     * berth_journal_history_rebuild_add). Takes the directory lock and
     * syncs the head like any writable open, but neither opens DIR/history
     * nor checks it, so it works exactly where a plain writable open refuses
     * a missing or damaged index; it builds a new index in
     * DIR/history.rebuild (removing one a rebuild cut short left there).
     * Appends, snapshots and HISTORY queries are INVALID on it. An open
     * that finds no journal (no data.mdb) is NOTFOUND, a store of format 1
     * (its index inside data.mdb) INVALID. */
    bool history_rebuild;
} berth_journal_options;

typedef struct berth_journal berth_journal;
typedef struct berth_journal_reader berth_journal_reader;
typedef struct berth_journal_cursor berth_journal_cursor;

/* Open (creating when writable and absent) the LMDB journal in dir. A
 * writable open takes an exclusive lock on dir/LOCK and commits and syncs a
 * fresh meta page over the records it finds (content unchanged), so the
 * head is durable on return even if an earlier process's sync failed. It
 * also opens (creates) the history index in dir/history, moves a history
 * index written by a berth before session 4 there (once, logged on
 * stderr), and starts the thread that folds into it; close joins it.
 * Errors: NOTFOUND (dir missing on read-only), LOCKED, FULL (no room for
 * that write), IO, CORRUPT (also: dir/history missing, cut or unreadable,
 * or behind a touch log that was already trimmed: the sentence names
 * `berth history rebuild --data DIR`), NOMEM. err gets a sentence. */
berth_jerr berth_journal_open_lmdb(berth_journal **out, const char *dir,
                                   const berth_journal_options *options,
                                   char *err, size_t err_size);
void berth_journal_close(berth_journal *journal);

/* Head: last seq (0 when empty) and its hash (zeros when empty). IO. */
berth_jerr berth_journal_head(berth_journal *journal, uint64_t *seq, uint8_t hash[BERTH_HASH_LEN]);

/* Append n records (1..BERTH_BATCH_RECORDS_MAX) as one durable transaction.
 * The caller sets seq (head+1, head+2, ...), time_ms, actor, reqid, command,
 * code, sentence; the journal sets version, prev_hash and hash. touched may
 * be NULL; otherwise it has n entries, touched[i] for records[i]. Errors:
 * INVALID (seq gap, too many or too big), FULL, AGAIN (the map must grow and
 * readers held it: see berth_journal_readers_wanted), IO, NOMEM, READONLY.
 * On any error nothing is written. */
berth_jerr berth_journal_append(berth_journal *journal, berth_record *records,
                                const berth_touched *touched, size_t n);

/* A record already encoded by berth_record_encode: its bytes, hash last. */
typedef struct berth_encoded {
    const uint8_t *bytes;
    size_t len;
} berth_encoded;

/* Append n records (1..BERTH_BATCH_RECORDS_MAX) that are already encoded,
 * as one durable transaction, storing their bytes as they are: the commit
 * log's checkpoint, which moves frames whose bytes it has proved (the
 * frame's SHA-256 over what this process encoded, or each record encoded
 * again and compared), so the store need not decode and encode them again.
 * The store checks each record: it starts as a body of a known version carrying seq
 * head+1, head+2, ..., ends with its prev_hash and hash bins, its prev_hash
 * is the hash of the record before it (the head's for the first), and its
 * hash is the SHA-256 of its body, computed on the bytes the store keeps.
 * So every stored record chains and hashes right; what the store trusts the
 * caller for is that the bytes are berth_record_encode's own spelling of
 * their fields (verify checks that too). The head's hash becomes the last
 * record's. touched as in berth_journal_append. Errors: INVALID (a seq, a
 * link or a record's shape is wrong, too many or too big, a store open for
 * a HISTORY rebuild, or a backend without this road: etcd), CORRUPT (a
 * record's hash is not its body's), FULL, AGAIN, IO, NOMEM, READONLY. On
 * any error nothing is written. */
berth_jerr berth_journal_append_encoded(berth_journal *journal, const berth_encoded *records,
                                        const berth_touched *touched, size_t n);

/* The last seq that no crash, OS or power loss included, can undo. Without
 * defer_meta_sync (and on etcd) it is the head. With it, it trails the head
 * by at most the last commit: each commit's data sync also makes the commit
 * before it durable. Never ahead of what a sync covered. Errors: READONLY
 * (a read-only open cannot know what the writer synced). */
berth_jerr berth_journal_durable(berth_journal *journal, uint64_t *seq);
/* Make every committed record durable: afterwards berth_journal_durable
 * equals the head. One sync with defer_meta_sync; nothing to do otherwise.
 * A failed sync is sticky: the journal then refuses appends and syncs (IO)
 * and its durable seq stops, since after a failed sync the OS may have
 * dropped the data it could not write. After an append failed otherwise
 * (FULL: its own sync may have dropped the meta page of the commit before
 * it), the durable seq does not move until a fresh meta page is synced:
 * the next append does that before it returns, and this call commits a
 * one-key rewrite of the store's meta data to do it (so it may fail FULL,
 * not sticky, while the disk has no room for a few pages). A sync that
 * itself fails for room (ENOSPC, EDQUOT) is FULL and not sticky for the same
 * reason: the durable seq stays until a fresh meta page is synced. Errors:
 * FULL, AGAIN, IO, READONLY. */
berth_jerr berth_journal_sync(berth_journal *journal);
/* Upkeep an append leaves to its caller: none now, on either backend; a
 * no-op that returns OK. (The LMDB history fold runs on a thread of the
 * journal's own, in an environment of its own, woken by appends; it never
 * holds up an append, and it commits nothing in the journal, so it makes
 * no record durable.) Kept so callers need not change if a backend
 * defers work again. */
berth_jerr berth_journal_maintain(berth_journal *journal);
/* True while a map resize waits for this process's readers to close (LMDB
 * remaps only with none open; new readers wait meanwhile). Whoever holds a
 * reader for long (a verify, a replay) should check it every so often and
 * close the reader when it is true, then open a fresh one; otherwise the
 * write that needed the room gets AGAIN. Cheap: one atomic load. Always
 * false on etcd. */
bool berth_journal_readers_wanted(berth_journal *journal);
/* Free the reader slots that processes which died mid-read left taken
 * (LMDB's mdb_reader_check, on the journal's and the history index's
 * environments): such a slot pins the pages its snapshot saw, so the map
 * grows rather than reuse them. Whoever saw a reader process die (berthd,
 * after a job's child was killed by damaged pages) calls it. Any process
 * may, writable or read-only; live readers are untouched. *cleared gets
 * how many were freed. OK and 0 on a backend with no reader slots (etcd).
 * Errors: IO (the lock file's reader table could not be checked). */
berth_jerr berth_journal_readers_clear_dead(berth_journal *journal, uint32_t *cleared);

/* Store a snapshot of the state after seq (bytes opaque to the journal).
 * Only the newest BERTH_SNAPSHOTS_KEPT_MAX are kept; older ones are deleted
 * in the same transaction. Durable on return (under defer_meta_sync:
 * committed, durable with the next sync). Errors: FULL, AGAIN, IO, INVALID, READONLY. */
berth_jerr berth_journal_snapshot_put(berth_journal *journal, uint64_t seq,
                                      const void *bytes, size_t len);

/* A consistent read view (an LMDB read transaction). Many may be open, from
 * any thread, while appends go on. Errors: IO, NOMEM. */
berth_jerr berth_journal_reader_open(berth_journal *journal, berth_journal_reader **out);
void berth_journal_reader_close(berth_journal_reader *reader);
/* The view's last record: its seq and stored hash (0 and zeros when empty).
 * Errors: IO; CORRUPT when that record does not decode (truncated, of an
 * unknown version) or names another seq: *seq is then still its seq (0 when
 * even its key is bad) and hash zeros, so the records below it can be read
 * and it can be named. */
berth_jerr berth_journal_reader_head(berth_journal_reader *reader, uint64_t *seq,
                                     uint8_t hash[BERTH_HASH_LEN]);
/* Read and decode one record. raw/raw_len (may be NULL) get its bytes.
 * Errors: NOTFOUND, CORRUPT. */
berth_jerr berth_journal_read(berth_journal_reader *reader, uint64_t seq, berth_record *out,
                              const uint8_t **raw, size_t *raw_len);

/* Iterate records from seq `from` upward. next returns OK, NOTFOUND at the
 * end, or CORRUPT (undecodable record, or a gap: the key is not the seq that
 * should follow — out->seq then holds the seq expected). */
berth_jerr berth_journal_cursor_open(berth_journal_reader *reader, uint64_t from,
                                     berth_journal_cursor **out);
berth_jerr berth_journal_cursor_next(berth_journal_cursor *cursor, berth_record *out,
                                     const uint8_t **raw, size_t *raw_len);
/* Raw only, no decode: for the scan ceiling and for a decode on another thread. */
berth_jerr berth_journal_cursor_next_raw(berth_journal_cursor *cursor, uint64_t *seq,
                                         const uint8_t **raw, size_t *raw_len);
void berth_journal_cursor_close(berth_journal_cursor *cursor);

/* Newest snapshot with seq <= max_seq. Errors: NOTFOUND. */
berth_jerr berth_journal_snapshot_get(berth_journal_reader *reader, uint64_t max_seq,
                                      uint64_t *seq, const void **bytes, size_t *len);
/* Snapshot seqs, ascending; *n gets how many exist (may exceed cap). */
berth_jerr berth_journal_snapshot_list(berth_journal_reader *reader, uint64_t *seqs,
                                       size_t cap, size_t *n);

/* HISTORY index: seqs of records that touched a worker or an instance,
 * ascending, starting at the first >= from, up to the reader's head. *n
 * gets how many were written. Exact whatever the LMDB fold thread does
 * meanwhile. Errors: IO, CORRUPT (LMDB: a history environment that holds
 * less than the touch log dropped, which no crash leaves), INVALID (an
 * open for history_rebuild). */
typedef enum { BERTH_HISTORY_WORKER = 'w', BERTH_HISTORY_INSTANCE = 'i' } berth_history_kind;
berth_jerr berth_journal_history(berth_journal_reader *reader, berth_history_kind kind,
                                 berth_str name, uint64_t from, uint64_t *seqs, size_t cap,
                                 size_t *n);

/* The LMDB history fold's progress, for INFO and tests. */
typedef struct berth_fold_stats {
    uint64_t folded_seq;    /* the history index holds every record up to it */
    uint64_t backlog;       /* durable records past folded_seq, now */
    uint64_t backlog_max;   /* the largest backlog an append or sync left, since open */
    uint64_t folds;         /* fold transactions committed since open */
    uint64_t merges;        /* merges of the index's runs committed since open */
    uint64_t runs;          /* runs the index holds (as of the last fold or merge) */
} berth_fold_stats;
/* Zeros on a backend without a fold (etcd) and on a read-only open. OK. */
berth_jerr berth_journal_fold_stats(berth_journal *journal, berth_fold_stats *out);

/* Rebuilding the HISTORY index from the journal (`berth history rebuild`).
 * Its names are worked out by the engine's apply, which this layer does
 * not run, so the caller replays the journal from genesis (replay.h's
 * berth_verify_touched) and hands every record's names here, on a journal
 * opened with history_rebuild. add: the names record seq touched; seqs
 * come 1, 2, ... up to the head, each once (one that touched none too:
 * worker_count 0, instance empty). They are copied, sorted and written in
 * batches of bounded memory (the folder's buffers: 80 MiB). finish: writes
 * the rest with folded_seq = the head, syncs the new index, moves
 * DIR/history (if any, whatever its state) aside to DIR/history.damaged-N
 * (the first N free; never deleted), renames DIR/history.rebuild to
 * DIR/history and syncs DIR; *names gets the index entries written. The
 * journal itself is not written: trimmed_seq <= folded_seq = head holds.
 * A crash before the rename leaves the old state (a writable open still
 * refuses, naming the command, and a rebuild can be run again), after it
 * the new one. Errors, both: INVALID (not a rebuild open; seq 0, a seq
 * out of turn or a name over its limit; finish before the head was
 * reached, or a second finish; a backend with no index of its own: etcd,
 * whose local copy is an LMDB directory to rebuild as one), FULL and IO (a
 * batch's write, or finish's syncs and renames). finish's err gets a
 * sentence. */
berth_jerr berth_journal_history_rebuild_add(berth_journal *journal, uint64_t seq,
                                             const berth_touched *touched);
berth_jerr berth_journal_history_rebuild_finish(berth_journal *journal, uint64_t *names,
                                                char *err, size_t err_size);

/* The store's size. disk_bytes counts every data file: on LMDB the
 * journal's (data.mdb) and the history index's (history/data.mdb), which
 * history_disk_bytes gives apart; map_bytes is the journal environment's
 * map (the one FULL is measured against), history_map_bytes the history
 * environment's (0 when this open has none). */
typedef struct berth_journal_sizes {
    uint64_t disk_bytes;
    uint64_t map_bytes;
    uint64_t history_disk_bytes;
    uint64_t history_map_bytes;
} berth_journal_sizes;
berth_jerr berth_journal_size(berth_journal *journal, berth_journal_sizes *out);

/* Copy the journal, as of one committed state, into dest_dir/data.mdb (made
 * 0600), then sync the file and dest_dir: a backup (`berth backup`). Every
 * record, snapshot and piece of metadata in the copy is of that one state,
 * whatever the writer commits meanwhile, so it is safe from a read-only open
 * beside a running berthd (LMDB blocks the writer only while it reads the
 * meta pages; the copy's read transaction keeps the pages it copies from
 * reuse). dest_dir must exist; a data.mdb already there is not touched.
 * Not copied: the HISTORY index (derived: `berth history rebuild` makes it
 * in the copy) and berthd's commit log, whose records reach data.mdb with
 * each checkpoint (every ~20 ms while berthd runs, at its next start after
 * a crash), so the copy holds those already checkpointed. On an error the
 * caller removes what was written. Errors: INVALID (dest_dir missing,
 * dest_dir/data.mdb there already, a path too long, a backend with no data
 * file of its own: etcd), FULL (ENOSPC, EDQUOT or EFBIG writing the copy),
 * NOMEM, IO; err gets a sentence. */
berth_jerr berth_journal_copy(berth_journal *journal, const char *dest_dir, char *err,
                              size_t err_size);

#endif
