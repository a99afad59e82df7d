/* journal.c — owns the public journal API: dispatch to the backend's ops and
 * the checks every backend shares.
 *
 * A backend hands back raw record bytes; this file decodes them and holds
 * them to the journal's promises (a read of seq N returns a record that says
 * it is N, a cursor never skips a seq silently), so a second backend cannot
 * weaken them by accident. */
#include <assert.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"

static const char *const jerr_names[] = {
    [BERTH_J_OK] = "OK",
    [BERTH_J_NOTFOUND] = "NOTFOUND",
    [BERTH_J_FULL] = "FULL",
    [BERTH_J_IO] = "IO",
    [BERTH_J_CORRUPT] = "CORRUPT",
    [BERTH_J_LOCKED] = "LOCKED",
    [BERTH_J_NOMEM] = "NOMEM",
    [BERTH_J_INVALID] = "INVALID",
    [BERTH_J_READONLY] = "READONLY",
    [BERTH_J_AGAIN] = "AGAIN",
    [BERTH_J_INDOUBT] = "INDOUBT",
};

const char *berth_jerr_name(berth_jerr err) {
    size_t count = sizeof(jerr_names) / sizeof(jerr_names[0]);
    if ((size_t)err >= count || jerr_names[err] == NULL) {
        return "UNKNOWN";
    }
    return jerr_names[err];
}

void berth_journal_close(berth_journal *journal) {
    if (journal != NULL) {
        assert(journal->ops != NULL);
        journal->ops->close(journal);
    }
}

berth_jerr berth_journal_head(berth_journal *journal, uint64_t *seq,
                              uint8_t hash[BERTH_HASH_LEN]) {
    assert(journal != NULL && seq != NULL && hash != NULL);
    return journal->ops->head(journal, seq, hash);
}

berth_jerr berth_journal_append(berth_journal *journal, berth_record *records,
                                const berth_touched *touched, size_t n) {
    assert(journal != NULL);
    if (records == NULL || n == 0 || n > BERTH_BATCH_RECORDS_MAX) {
        return BERTH_J_INVALID;
    }
    return journal->ops->append(journal, records, touched, n);
}

berth_jerr berth_journal_append_encoded(berth_journal *journal, const berth_encoded *records,
                                        const berth_touched *touched, size_t n) {
    assert(journal != NULL);
    if (records == NULL || n == 0 || n > BERTH_BATCH_RECORDS_MAX ||
        journal->ops->append_encoded == NULL) {
        return BERTH_J_INVALID;
    }
    return journal->ops->append_encoded(journal, records, touched, n);
}

berth_jerr berth_journal_durable(berth_journal *journal, uint64_t *seq) {
    assert(journal != NULL && seq != NULL);
    if (journal->ops->durable == NULL) {
        uint8_t hash[BERTH_HASH_LEN];
        return journal->ops->head(journal, seq, hash);
    }
    return journal->ops->durable(journal, seq);
}

berth_jerr berth_journal_sync(berth_journal *journal) {
    assert(journal != NULL);
    return journal->ops->sync == NULL ? BERTH_J_OK : journal->ops->sync(journal);
}

berth_jerr berth_journal_maintain(berth_journal *journal) {
    assert(journal != NULL);
    return journal->ops->maintain == NULL ? BERTH_J_OK : journal->ops->maintain(journal);
}

berth_jerr berth_journal_readers_clear_dead(berth_journal *journal, uint32_t *cleared) {
    assert(journal != NULL && cleared != NULL);
    *cleared = 0;
    if (journal->ops->readers_clear_dead == NULL) {
        return BERTH_J_OK;
    }
    return journal->ops->readers_clear_dead(journal, cleared);
}

bool berth_journal_readers_wanted(berth_journal *journal) {
    return journal->ops->readers_wanted != NULL && journal->ops->readers_wanted(journal);
}

berth_jerr berth_journal_snapshot_put(berth_journal *journal, uint64_t seq,
                                      const void *bytes, size_t len) {
    assert(journal != NULL);
    if (bytes == NULL || len == 0 || seq == 0) {
        return BERTH_J_INVALID;
    }
    return journal->ops->snapshot_put(journal, seq, bytes, len);
}

berth_jerr berth_journal_size(berth_journal *journal, berth_journal_sizes *out) {
    assert(journal != NULL && out != NULL);
    memset(out, 0, sizeof *out);
    return journal->ops->size(journal, out);
}

berth_jerr berth_journal_copy(berth_journal *journal, const char *dest_dir, char *err,
                              size_t err_size) {
    assert(journal != NULL && dest_dir != NULL);
    if (journal->ops->copy == NULL) {
        if (err != NULL && err_size > 0) {
            snprintf(err, err_size, "the %s journal has no data file of its own to copy",
                     journal->ops->name);
        }
        return BERTH_J_INVALID;
    }
    return journal->ops->copy(journal, dest_dir, err, err_size);
}

berth_jerr berth_journal_history_rebuild_add(berth_journal *journal, uint64_t seq,
                                             const berth_touched *touched) {
    assert(journal != NULL && touched != NULL);
    if (journal->ops->history_rebuild_add == NULL || seq == 0) {
        return BERTH_J_INVALID;
    }
    return journal->ops->history_rebuild_add(journal, seq, touched);
}

berth_jerr berth_journal_history_rebuild_finish(berth_journal *journal, uint64_t *names,
                                                char *err, size_t err_size) {
    assert(journal != NULL && names != NULL);
    assert(err != NULL || err_size == 0);
    *names = 0;
    if (err_size > 0) {
        err[0] = '\0';
    }
    if (journal->ops->history_rebuild_finish == NULL) {
        if (err_size > 0) {
            snprintf(err, err_size, "the %s backend keeps no HISTORY index of its own to rebuild",
                     journal->ops->name);
        }
        return BERTH_J_INVALID;
    }
    return journal->ops->history_rebuild_finish(journal, names, err, err_size);
}

berth_jerr berth_journal_fold_stats(berth_journal *journal, berth_fold_stats *out) {
    assert(journal != NULL && out != NULL);
    memset(out, 0, sizeof *out);
    return journal->ops->fold_stats == NULL ? BERTH_J_OK : journal->ops->fold_stats(journal, out);
}

berth_jerr berth_journal_reader_open(berth_journal *journal, berth_journal_reader **out) {
    assert(journal != NULL && out != NULL);
    *out = NULL;
    berth_jerr err = journal->ops->reader_open(journal, out);
    assert((err == BERTH_J_OK) == (*out != NULL));
    return err;
}

void berth_journal_reader_close(berth_journal_reader *reader) {
    if (reader != NULL) {
        reader->ops->reader_close(reader);
    }
}

berth_jerr berth_journal_reader_head(berth_journal_reader *reader, uint64_t *seq,
                                     uint8_t hash[BERTH_HASH_LEN]) {
    assert(reader != NULL && seq != NULL && hash != NULL);
    return reader->ops->reader_head(reader, seq, hash);
}

/* Decode raw bytes stored under seq and insist the record agrees. */
static berth_jerr decode_at(uint64_t seq, const uint8_t *bytes, size_t len,
                            berth_record *out) {
    berth_jerr err = berth_record_decode(bytes, len, out, NULL, 0);
    if (err == BERTH_J_OK && out->seq != seq) {
        err = BERTH_J_CORRUPT;
    }
    if (err != BERTH_J_OK) {
        out->seq = seq;   /* names the bad seq for the caller's message */
    }
    return err;
}

berth_jerr berth_journal_read(berth_journal_reader *reader, uint64_t seq, berth_record *out,
                              const uint8_t **raw, size_t *raw_len) {
    assert(reader != NULL && out != NULL);
    const uint8_t *bytes = NULL;
    size_t len = 0;
    berth_jerr err = reader->ops->read_raw(reader, seq, &bytes, &len);
    if (err != BERTH_J_OK) {
        return err;
    }
    if (raw != NULL) *raw = bytes;
    if (raw_len != NULL) *raw_len = len;
    return decode_at(seq, bytes, len, out);
}

berth_jerr berth_journal_cursor_open(berth_journal_reader *reader, uint64_t from,
                                     berth_journal_cursor **out) {
    assert(reader != NULL && out != NULL);
    *out = NULL;
    berth_jerr err = reader->ops->cursor_open(reader, from == 0 ? 1 : from, out);
    assert((err == BERTH_J_OK) == (*out != NULL));
    return err;
}

berth_jerr berth_journal_cursor_next_raw(berth_journal_cursor *cursor, uint64_t *seq,
                                         const uint8_t **raw, size_t *raw_len) {
    assert(cursor != NULL && seq != NULL && raw != NULL && raw_len != NULL);
    return cursor->ops->cursor_next_raw(cursor, seq, raw, raw_len);
}

berth_jerr berth_journal_cursor_next(berth_journal_cursor *cursor, berth_record *out,
                                     const uint8_t **raw, size_t *raw_len) {
    assert(cursor != NULL && out != NULL);
    uint64_t seq = 0;
    const uint8_t *bytes = NULL;
    size_t len = 0;
    berth_jerr err = cursor->ops->cursor_next_raw(cursor, &seq, &bytes, &len);
    if (err == BERTH_J_CORRUPT) {
        out->seq = seq;   /* the seq that should have come next */
    }
    if (err != BERTH_J_OK) {
        return err;
    }
    if (raw != NULL) *raw = bytes;
    if (raw_len != NULL) *raw_len = len;
    return decode_at(seq, bytes, len, out);
}

void berth_journal_cursor_close(berth_journal_cursor *cursor) {
    if (cursor != NULL) {
        cursor->ops->cursor_close(cursor);
    }
}

berth_jerr berth_journal_snapshot_get(berth_journal_reader *reader, uint64_t max_seq,
                                      uint64_t *seq, const void **bytes, size_t *len) {
    assert(reader != NULL && seq != NULL && bytes != NULL && len != NULL);
    return reader->ops->snapshot_get(reader, max_seq, seq, bytes, len);
}

berth_jerr berth_journal_snapshot_list(berth_journal_reader *reader, uint64_t *seqs,
                                       size_t cap, size_t *n) {
    assert(reader != NULL && n != NULL && (seqs != NULL || cap == 0));
    return reader->ops->snapshot_list(reader, seqs, cap, n);
}

berth_jerr berth_journal_history(berth_journal_reader *reader, berth_history_kind kind,
                                 berth_str name, uint64_t from, uint64_t *seqs, size_t cap,
                                 size_t *n) {
    assert(reader != NULL && n != NULL && (seqs != NULL || cap == 0));
    *n = 0;
    if (kind != BERTH_HISTORY_WORKER && kind != BERTH_HISTORY_INSTANCE) {
        return BERTH_J_INVALID;
    }
    return reader->ops->history(reader, kind, name, from, seqs, cap, n);
}
