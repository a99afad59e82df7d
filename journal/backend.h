/* backend.h — the journal's private seam between the public API and a store.
 *
 * journal.c implements journal.h once, on top of this ops table; each
 * backend (LMDB now, etcd later) fills one table and embeds the three base
 * structs as the first member of its own. Callers never see this header, so
 * adding a backend touches neither them nor journal.h. Record decoding, the
 * seq checks on reads and the gap check on cursors live in journal.c, so
 * every backend is held to the same rules. */
#ifndef BERTH_JOURNAL_BACKEND_H
#define BERTH_JOURNAL_BACKEND_H

#include "journal.h"

typedef struct berth_journal_ops berth_journal_ops;

struct berth_journal {
    const berth_journal_ops *ops;
};

struct berth_journal_reader {
    const berth_journal_ops *ops;
};

struct berth_journal_cursor {
    const berth_journal_ops *ops;
};

struct berth_journal_ops {
    const char *name;   /* "lmdb" */
    void (*close)(berth_journal *journal);
    berth_jerr (*head)(berth_journal *journal, uint64_t *seq, uint8_t hash[BERTH_HASH_LEN]);
    berth_jerr (*append)(berth_journal *journal, berth_record *records,
                         const berth_touched *touched, size_t n);
    /* NULL in a backend without that road (etcd): journal.c answers INVALID. */
    berth_jerr (*append_encoded)(berth_journal *journal, const berth_encoded *records,
                                 const berth_touched *touched, size_t n);
    /* append_encoded for bytes berth_record_encode wrote in this process
     * (journal/appender.c's): the same checks but the SHA-256, whose value the
     * encoder computed from these very bytes. NULL in a backend without
     * the encoded road: berth_appender_open answers INVALID. */
    berth_jerr (*append_own)(berth_journal *journal, const berth_encoded *records,
                             const berth_touched *touched, size_t n);
    berth_jerr (*snapshot_put)(berth_journal *journal, uint64_t seq, const void *bytes,
                               size_t len);
    /* NULL in a backend whose appends are durable on return: the durable
     * seq is then the head and a sync has nothing to do. */
    berth_jerr (*durable)(berth_journal *journal, uint64_t *seq);
    berth_jerr (*sync)(berth_journal *journal);
    berth_jerr (*maintain)(berth_journal *journal);   /* NULL: nothing deferred */
    bool (*readers_wanted)(berth_journal *journal);   /* NULL: no reader ever holds anything up */
    /* NULL: no reader slots that a dead process could leave taken. */
    berth_jerr (*readers_clear_dead)(berth_journal *journal, uint32_t *cleared);
    berth_jerr (*size)(berth_journal *journal, berth_journal_sizes *out);
    /* NULL in a backend with no files of its own to copy (etcd): journal.c
     * answers INVALID. */
    berth_jerr (*copy)(berth_journal *journal, const char *dest_dir, char *err, size_t err_size);
    /* NULL in a backend with no HISTORY index of its own (etcd): journal.c
     * answers INVALID. */
    berth_jerr (*history_rebuild_add)(berth_journal *journal, uint64_t seq,
                                      const berth_touched *touched);
    berth_jerr (*history_rebuild_finish)(berth_journal *journal, uint64_t *names, char *err,
                                         size_t err_size);
    /* NULL: no fold (the stats are zeros). */
    berth_jerr (*fold_stats)(berth_journal *journal, berth_fold_stats *out);
    berth_jerr (*reader_open)(berth_journal *journal, berth_journal_reader **out);
    void (*reader_close)(berth_journal_reader *reader);
    berth_jerr (*reader_head)(berth_journal_reader *reader, uint64_t *seq,
                              uint8_t hash[BERTH_HASH_LEN]);
    /* The stored bytes of seq; NOTFOUND when absent. */
    berth_jerr (*read_raw)(berth_journal_reader *reader, uint64_t seq, const uint8_t **raw,
                           size_t *raw_len);
    berth_jerr (*cursor_open)(berth_journal_reader *reader, uint64_t from,
                              berth_journal_cursor **out);
    /* Next stored record; CORRUPT with *seq = the expected seq on a gap. */
    berth_jerr (*cursor_next_raw)(berth_journal_cursor *cursor, uint64_t *seq,
                                  const uint8_t **raw, size_t *raw_len);
    void (*cursor_close)(berth_journal_cursor *cursor);
    berth_jerr (*snapshot_get)(berth_journal_reader *reader, uint64_t max_seq, uint64_t *seq,
                               const void **bytes, size_t *len);
    berth_jerr (*snapshot_list)(berth_journal_reader *reader, uint64_t *seqs, size_t cap,
                                size_t *n);
    berth_jerr (*history)(berth_journal_reader *reader, berth_history_kind kind,
                          berth_str name, uint64_t from, uint64_t *seqs, size_t cap,
                          size_t *n);
};

/* For a store's append, which encodes straight into the space it reserved
 * in a page (MDB_RESERVE) instead of copying from a scratch buffer:
 * encoded_len is the exact length berth_record_encode would write for rec
 * (version set; the two hashes are fixed-size, so their values do not
 * count), or 0 when it would refuse rec. actor_checked: the caller already
 * found rec->actor a valid actor (the batch's record before had the same
 * bytes), so its scan is skipped; the other checks run. encode_sized
 * writes the record into exactly len bytes (encoded_len's answer) and sets
 * rec->hash, as berth_record_encode does; false if it did not come to len
 * bytes, which encoded_len's contract rules out. */
size_t berth_record_encoded_len(const berth_record *rec, bool actor_checked);
bool berth_record_encode_sized(berth_record *rec, uint8_t *buf, size_t len);

/* LMDB backend, for tests: wake the history folder thread and wait until it
 * is idle with no fold due that it could do; returns the last fold's result
 * (OK when none ran). OK at once on a read-only open. */
berth_jerr berth_journal_lmdb_settle(berth_journal *journal);

/* LMDB backend, for tests: a history rebuild calls hook with the name of
 * each step it completed ("batch" after each batch an add wrote; then
 * finish's "written", "synced", "moved", "swapped"), so a test can kill the
 * process between two steps. NULL (the default): none. Process-wide; set
 * it before the rebuild starts. */
typedef void (*berth_lmdb_rebuild_hook)(const char *step);
void berth_journal_lmdb_rebuild_hook_set(berth_lmdb_rebuild_hook hook);

/* LMDB backend, for tests: each merge of history runs calls hook once its
 * writes are done, before it commits; a non-zero return (an errno or an
 * LMDB code) fails that merge as if the commit had, and the hook may also
 * end the process there. NULL (the default): none. Process-wide. */
typedef int (*berth_lmdb_merge_hook)(void);
void berth_journal_lmdb_merge_hook_set(berth_lmdb_merge_hook hook);

#endif
