/* history_runs.c — owns the run layout of the HISTORY index's folded part:
 * writing a fold's run, merging runs, and reading a name's seqs from them
 * (history_runs.h says why runs, and what each database holds). The history
 * environment itself, its transactions, its map and its thread belong to
 * lmdb_store.c; everything here works inside the transactions it is given
 * and allocates nothing. */
#include <assert.h>
#include <string.h>

#include "be64.h"
#include "berth_limits.h"
#include "history_runs.h"

enum {
    run_id_len = 8,
    run_key_len_max = run_id_len + 1 + BERTH_NAME_LEN_MAX,
    runlist_key_len = 8,
    runlist_val_len = 32,       /* last_seq, id, bytes (u64s), level (u32), 4 bytes zero */
    node_bytes = 8,             /* LMDB's node header: counted in a run's bytes */
};

static const MDB_val next_id_key = { 11, (void *)"next_run_id" };

const char *const hist_runs_db_names[hist_run_levels] = { "runs0", "runs1", "runs2" };


static uint64_t u64_at(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/* ---- runlist entries ---------------------------------------------------- */

static int run_decode(const MDB_val *key, const MDB_val *val, hist_run *run) {
    if (key->mv_size != runlist_key_len || val->mv_size != runlist_val_len) {
        return MDB_CORRUPTED;
    }
    const uint8_t *v = val->mv_data;
    run->first_seq = be64_get(key->mv_data);
    run->last_seq = u64_at(v);
    run->id = u64_at(v + 8);
    run->bytes = u64_at(v + 16);
    memcpy(&run->level, v + 24, sizeof(run->level));
    if (run->first_seq == 0 || run->last_seq < run->first_seq || run->id == 0 ||
        run->level > hist_run_level_max) {
        return MDB_CORRUPTED;
    }
    return 0;
}

static int runlist_put(MDB_txn *txn, const hist_runs_dbs *dbs, const hist_run *run,
                       unsigned int flags) {
    uint8_t key_bytes[runlist_key_len];
    uint8_t val_bytes[runlist_val_len];
    be64_put(key_bytes, run->first_seq);
    memcpy(val_bytes, &run->last_seq, 8);
    memcpy(val_bytes + 8, &run->id, 8);
    memcpy(val_bytes + 16, &run->bytes, 8);
    memcpy(val_bytes + 24, &run->level, 4);
    memset(val_bytes + 28, 0, 4);
    MDB_val key = { sizeof(key_bytes), key_bytes };
    MDB_val val = { sizeof(val_bytes), val_bytes };
    return mdb_put(txn, dbs->runlist, &key, &val, flags);
}

/* The id the next run takes (1 in a new index), and the one after it stored. */
static int next_id_take(MDB_txn *txn, const hist_runs_dbs *dbs, uint64_t *id) {
    MDB_val key = next_id_key;
    MDB_val val;
    int rc = mdb_get(txn, dbs->meta, &key, &val);
    *id = 1;
    if (rc == 0) {
        if (val.mv_size != sizeof(*id)) {
            return MDB_CORRUPTED;
        }
        *id = u64_at(val.mv_data);
    } else if (rc != MDB_NOTFOUND) {
        return rc;
    }
    if (*id == 0 || *id == UINT64_MAX) {
        return MDB_CORRUPTED;
    }
    uint64_t next = *id + 1;
    MDB_val put = { sizeof(next), &next };
    key = next_id_key;
    return mdb_put(txn, dbs->meta, &key, &put, 0);
}

static size_t run_key_make(uint8_t out[run_key_len_max], uint64_t id, const uint8_t *suffix,
                           size_t suffix_len) {
    assert(suffix_len >= 2 && suffix_len <= 1 + BERTH_NAME_LEN_MAX);
    be64_put(out, id);
    memcpy(out + run_id_len, suffix, suffix_len);
    return run_id_len + suffix_len;
}

/* ---- writing a fold's run ---------------------------------------------- */

/* Sorted items compare their neighbours here twice each, and the names of a
 * fold's instances share long stems (i-<tag>-<client>-...): libc's memcmp,
 * a call and its setup per pair, was 7% of a fold's CPU (perf, session 10).
 * The prefix (kind and first 7 bytes) settles most pairs that differ; the
 * rest compare 8 bytes at a time, the last load overlapping. */
static bool item_same_key(const fold_item *x, const fold_item *y) {
    if (x->prefix != y->prefix || x->len != y->len) {
        return false;
    }
    assert(x->kind == y->kind);   /* the prefix's top byte (fold_gather_entry sets it) */
    size_t n = x->len;
    if (n <= 7) {
        return true;   /* the prefix holds the whole name, zero-padded */
    }
    for (size_t i = 7; i + 8 < n; i += 8) {
        uint64_t a, b;
        memcpy(&a, x->name + i, 8);
        memcpy(&b, y->name + i, 8);
        if (a != b) {
            return false;
        }
    }
    uint64_t a, b;
    memcpy(&a, x->name + n - 8, 8);
    memcpy(&b, y->name + n - 8, 8);
    return a == b;
}

/* The bytes a run of items takes (its keys, each name's seqs once, LMDB's
 * node headers), before it is written: they decide its level. */
static uint64_t run_bytes_of(const fold_item *items, size_t count) {
    uint64_t bytes = 0;
    for (size_t i = 0; i < count; i++) {
        bool new_key = i == 0 || !item_same_key(&items[i - 1], &items[i]);
        if (new_key) {
            bytes += run_id_len + 1 + (uint64_t)items[i].len + node_bytes;
        }
        if (new_key || items[i].seq != items[i - 1].seq) {
            bytes += sizeof(uint64_t);
        }
    }
    return bytes;
}

int hist_run_write(MDB_txn *txn, const hist_runs_dbs *dbs, const fold_item *items, size_t count,
                   uint64_t first, uint64_t last, uint64_t *bytes) {
    assert(first >= 1 && first <= last);
    *bytes = 0;
    if (count == 0) {
        return 0;
    }
    /* level 0, or the top one for a run too big for hist_run_fanout of it
     * to fit one merge: it would only hold up the merges of the runs after it */
    *bytes = run_bytes_of(items, count);
    uint32_t level = *bytes > HIST_MERGE_BYTES_MAX / hist_run_fanout ? hist_run_level_max : 0;
    uint64_t id = 0;
    int rc = next_id_take(txn, dbs, &id);
    MDB_cursor *cursor = NULL;
    if (rc == 0) rc = mdb_cursor_open(txn, dbs->runs[level], &cursor);
    size_t i = 0;
    while (rc == 0 && i < count) {
        const fold_item *it = &items[i];
        if (it->len == 0 || it->len > BERTH_NAME_LEN_MAX || it->seq < first || it->seq > last) {
            rc = MDB_CORRUPTED;
            break;
        }
        size_t end = i + 1;
        size_t distinct = 1;
        for (; end < count && item_same_key(it, &items[end]); end++) {
            assert(items[end].seq >= items[end - 1].seq);   /* fold_item_cmp's order */
            distinct += items[end].seq != items[end - 1].seq;
        }
        uint8_t suffix[1 + BERTH_NAME_LEN_MAX];
        suffix[0] = (uint8_t)it->kind;
        memcpy(suffix + 1, it->name, it->len);
        uint8_t key_bytes[run_key_len_max];
        MDB_val key = { run_key_make(key_bytes, id, suffix, 1 + (size_t)it->len), key_bytes };
        MDB_val val = { distinct * sizeof(uint64_t), NULL };
        /* names arrive in key order under a fresh id: each goes at the end */
        rc = mdb_cursor_put(cursor, &key, &val, MDB_RESERVE | MDB_APPEND);
        if (rc != 0) {
            break;
        }
        uint8_t *out = val.mv_data;
        size_t k = 0;
        for (size_t s = i; s < end; s++) {
            if (s == i || items[s].seq != items[s - 1].seq) {
                memcpy(out + k * sizeof(uint64_t), &items[s].seq, sizeof(uint64_t));
                k++;
            }
        }
        assert(k == distinct);
        i = end;
    }
    if (cursor != NULL) {
        mdb_cursor_close(cursor);
    }
    if (rc == 0) {
        hist_run run = { first, last, id, *bytes, level };
        rc = runlist_put(txn, dbs, &run, MDB_APPEND);   /* KEYEXIST if not after every run */
    }
    return rc;
}

/* ---- merging ------------------------------------------------------------- */

int hist_merge_find(MDB_txn *txn, const hist_runs_dbs *dbs, hist_merge_plan *plan, bool *due) {
    *due = false;
    plan->whole_level = false;
    MDB_cursor *cursor;
    int rc = mdb_cursor_open(txn, dbs->runlist, &cursor);
    if (rc != 0) {
        return rc;
    }
    /* From the newest run back: the first hist_run_fanout in a row of one
     * level below the top. Normally the newest are the ones due; after a
     * merge failed, runs of a level may sit between runs of a higher one,
     * and they merge once the newer ones have. Every run is counted, to
     * know whether the ones found are all of their level. */
    hist_run *found = plan->runs;
    uint64_t per_level[hist_run_levels] = { 0 };
    MDB_val key, val;
    size_t streak = 0;
    uint64_t bytes = 0;
    uint32_t scanned = 0;
    rc = mdb_cursor_get(cursor, &key, &val, MDB_LAST);
    while (rc == 0 && scanned < hist_plan_scan_max) {
        hist_run run;
        rc = run_decode(&key, &val, &run);
        if (rc != 0) {
            break;
        }
        scanned++;
        per_level[run.level]++;
        if (!*due) {
            if (streak > 0 && run.last_seq >= found[hist_run_fanout - streak].first_seq) {
                rc = MDB_CORRUPTED;   /* runs overlap */
                break;
            }
            bool joins = streak > 0 && run.level == found[hist_run_fanout - streak].level &&
                         bytes + run.bytes <= HIST_MERGE_BYTES_MAX;
            if (!joins) {
                streak = 0;
                bytes = 0;
            }
            if (run.level < hist_run_level_max && run.bytes <= HIST_MERGE_BYTES_MAX) {
                streak++;
                bytes += run.bytes;
                found[hist_run_fanout - streak] = run;
            }
            *due = streak == hist_run_fanout;
        }
        rc = mdb_cursor_get(cursor, &key, &val, MDB_PREV);
    }
    mdb_cursor_close(cursor);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        *due = false;
        return rc;
    }
    /* with runs past the scan's limit uncounted, never take a level as whole */
    plan->whole_level = *due && rc == MDB_NOTFOUND &&
                        per_level[found[0].level] == hist_run_fanout;
    return 0;
}

/* One source of a merge: a cursor over one run's keys in rtxn. */
typedef struct merge_src {
    MDB_cursor *cursor;
    uint64_t id;
    MDB_val key;
    MDB_val val;
    bool live;              /* key and val are its current entry */
} merge_src;

/* The current entry if it is still src's run; else live = false. */
static int src_check(merge_src *src, int rc) {
    src->live = false;
    if (rc == MDB_NOTFOUND) {
        return 0;
    }
    if (rc != 0) {
        return rc;
    }
    if (src->key.mv_size < run_id_len || be64_get(src->key.mv_data) != src->id) {
        return 0;   /* the next run's keys */
    }
    if (src->key.mv_size < run_id_len + 2 || src->key.mv_size > run_key_len_max ||
        src->val.mv_size == 0 || src->val.mv_size % sizeof(uint64_t) != 0) {
        return MDB_CORRUPTED;
    }
    src->live = true;
    return 0;
}

static int src_first(merge_src *src) {
    uint8_t prefix[run_id_len];
    be64_put(prefix, src->id);
    src->key = (MDB_val){ sizeof(prefix), prefix };
    return src_check(src, mdb_cursor_get(src->cursor, &src->key, &src->val, MDB_SET_RANGE));
}

static int src_next(merge_src *src) {
    return src_check(src, mdb_cursor_get(src->cursor, &src->key, &src->val, MDB_NEXT));
}

/* LMDB's default key order on the part after the id: bytes, then the shorter first. */
static int suffix_cmp(const MDB_val *a, const MDB_val *b) {
    size_t la = a->mv_size - run_id_len;
    size_t lb = b->mv_size - run_id_len;
    int c = memcmp((const uint8_t *)a->mv_data + run_id_len, (const uint8_t *)b->mv_data + run_id_len,
                   la < lb ? la : lb);
    return c != 0 ? c : (la < lb ? -1 : (la > lb ? 1 : 0));
}

/* Write the merged run's keys: each name once, its seqs from every source
 * that has it, oldest source first (so ascending: the runs are disjoint and
 * in order). */
static int merge_keys(MDB_cursor *out, merge_src *srcs, uint64_t id, uint64_t *bytes) {
    int rc = 0;
    for (;;) {
        merge_src *low = NULL;
        for (size_t k = 0; k < hist_run_fanout; k++) {
            if (srcs[k].live && (low == NULL || suffix_cmp(&srcs[k].key, &low->key) < 0)) {
                low = &srcs[k];
            }
        }
        if (low == NULL) {
            return 0;
        }
        uint8_t key_bytes[run_key_len_max];
        MDB_val key = { run_key_make(key_bytes, id, (const uint8_t *)low->key.mv_data + run_id_len,
                                     low->key.mv_size - run_id_len), key_bytes };
        size_t total = 0;
        for (size_t k = 0; k < hist_run_fanout; k++) {
            if (srcs[k].live && suffix_cmp(&srcs[k].key, &low->key) == 0) {
                total += srcs[k].val.mv_size;
            }
        }
        MDB_val val = { total, NULL };
        rc = mdb_cursor_put(out, &key, &val, MDB_RESERVE | MDB_APPEND);
        if (rc != 0) {
            return rc;
        }
        size_t at = 0;
        MDB_val low_key = low->key;   /* the sources move on below */
        for (size_t k = 0; k < hist_run_fanout && rc == 0; k++) {
            if (srcs[k].live && suffix_cmp(&srcs[k].key, &low_key) == 0) {
                memcpy((uint8_t *)val.mv_data + at, srcs[k].val.mv_data, srcs[k].val.mv_size);
                at += srcs[k].val.mv_size;
                rc = src_next(&srcs[k]);
            }
        }
        assert(rc != 0 || at == total);
        *bytes += key.mv_size + total + node_bytes;
        if (rc != 0) {
            return rc;
        }
    }
}

/* Delete every key of run id from db (in wtxn), one by one. */
static int run_keys_delete(MDB_txn *txn, MDB_dbi db, uint64_t id) {
    MDB_cursor *cursor;
    int rc = mdb_cursor_open(txn, db, &cursor);
    if (rc != 0) {
        return rc;
    }
    uint8_t prefix[run_id_len];
    be64_put(prefix, id);
    MDB_val key = { sizeof(prefix), prefix };
    MDB_val val;
    rc = mdb_cursor_get(cursor, &key, &val, MDB_SET_RANGE);
    while (rc == 0 && key.mv_size >= run_id_len && be64_get(key.mv_data) == id) {
        rc = mdb_cursor_del(cursor, 0);
        /* after a delete the cursor is on the next entry, which MDB_NEXT returns */
        if (rc == 0) rc = mdb_cursor_get(cursor, &key, &val, MDB_NEXT);
    }
    mdb_cursor_close(cursor);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int hist_merge(MDB_txn *wtxn, MDB_txn *rtxn, const hist_runs_dbs *dbs,
               const hist_merge_plan *plan, hist_run *merged) {
    const hist_run *src_runs = plan->runs;
    uint32_t level = src_runs[0].level;
    assert(level < hist_run_level_max);
    merge_src srcs[hist_run_fanout];
    memset(srcs, 0, sizeof(srcs));
    uint64_t id = 0;
    int rc = next_id_take(wtxn, dbs, &id);
    for (size_t k = 0; k < hist_run_fanout && rc == 0; k++) {
        assert(src_runs[k].level == level && src_runs[k].id < id);
        srcs[k].id = src_runs[k].id;
        rc = mdb_cursor_open(rtxn, dbs->runs[level], &srcs[k].cursor);
        if (rc == 0) rc = src_first(&srcs[k]);
    }
    MDB_cursor *out = NULL;
    if (rc == 0) rc = mdb_cursor_open(wtxn, dbs->runs[level + 1], &out);
    uint64_t bytes = 0;
    if (rc == 0) rc = merge_keys(out, srcs, id, &bytes);
    if (out != NULL) {
        mdb_cursor_close(out);
    }
    for (size_t k = 0; k < hist_run_fanout; k++) {
        if (srcs[k].cursor != NULL) {
            mdb_cursor_close(srcs[k].cursor);
        }
    }
    if (rc == 0 && plan->whole_level) {
        rc = mdb_drop(wtxn, dbs->runs[level], 0);   /* frees its pages without touching keys */
    }
    for (size_t k = 0; k < hist_run_fanout && rc == 0; k++) {
        if (!plan->whole_level) {
            rc = run_keys_delete(wtxn, dbs->runs[level], src_runs[k].id);
        }
        if (rc == 0 && k > 0) {
            uint8_t key_bytes[runlist_key_len];
            be64_put(key_bytes, src_runs[k].first_seq);
            MDB_val key = { sizeof(key_bytes), key_bytes };
            rc = mdb_del(wtxn, dbs->runlist, &key, NULL);
        }
    }
    *merged = (hist_run){ src_runs[0].first_seq, src_runs[hist_run_fanout - 1].last_seq, id, bytes,
                          level + 1 };
    if (rc == 0) rc = runlist_put(wtxn, dbs, merged, 0);   /* in place of the oldest's entry */
    return rc;
}

/* ---- reading -------------------------------------------------------------- */

/* The first run whose records reach from: the one holding it, or the first after it. */
static int run_at(MDB_cursor *cursor, uint64_t from, hist_run *run) {
    uint8_t key_bytes[runlist_key_len];
    be64_put(key_bytes, from);
    MDB_val key = { sizeof(key_bytes), key_bytes };
    MDB_val val;
    int rc = mdb_cursor_get(cursor, &key, &val, MDB_SET_RANGE);
    bool after = rc == 0 && be64_get(key.mv_data) == from;   /* starts right at from */
    if (after) {
        return run_decode(&key, &val, run);
    }
    if (rc != 0 && rc != MDB_NOTFOUND) {
        return rc;
    }
    /* the run before may hold from */
    int prev_rc = mdb_cursor_get(cursor, &key, &val, rc == MDB_NOTFOUND ? MDB_LAST : MDB_PREV);
    if (prev_rc == 0) {
        prev_rc = run_decode(&key, &val, run);
        if (prev_rc != 0 || run->last_seq >= from) {
            return prev_rc;
        }
    } else if (prev_rc != MDB_NOTFOUND) {
        return prev_rc;
    }
    if (rc == MDB_NOTFOUND) {
        return MDB_NOTFOUND;   /* every run ends before from */
    }
    key = (MDB_val){ sizeof(key_bytes), key_bytes };
    rc = mdb_cursor_get(cursor, &key, &val, MDB_SET_RANGE);
    return rc != 0 ? rc : run_decode(&key, &val, run);
}

/* One run's seqs of key in from..upto, appended. */
static int run_read(MDB_txn *txn, const hist_runs_dbs *dbs, const hist_run *run,
                    const uint8_t *suffix, size_t suffix_len, uint64_t from, uint64_t upto,
                    uint64_t *seqs, size_t cap, size_t *n) {
    uint8_t key_bytes[run_key_len_max];
    MDB_val key = { run_key_make(key_bytes, run->id, suffix, suffix_len), key_bytes };
    MDB_val val;
    int rc = mdb_get(txn, dbs->runs[run->level], &key, &val);
    if (rc != 0) {
        return rc == MDB_NOTFOUND ? 0 : rc;
    }
    if (val.mv_size == 0 || val.mv_size % sizeof(uint64_t) != 0) {
        return MDB_CORRUPTED;
    }
    const uint8_t *v = val.mv_data;
    size_t count = val.mv_size / sizeof(uint64_t);
    size_t lo = 0;   /* binary search: the first seq >= from */
    size_t hi = count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (u64_at(v + mid * sizeof(uint64_t)) < from) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    uint64_t prev = 0;
    for (size_t i = lo; i < count && *n < cap; i++) {
        uint64_t seq = u64_at(v + i * sizeof(uint64_t));
        if (seq < run->first_seq || seq > run->last_seq || seq <= prev) {
            return MDB_CORRUPTED;
        }
        if (seq > upto) {
            break;
        }
        seqs[(*n)++] = seq;
        prev = seq;
    }
    return 0;
}

int hist_runs_read(MDB_txn *txn, const hist_runs_dbs *dbs, const uint8_t *key, size_t key_len,
                   uint64_t from, uint64_t upto, uint64_t *seqs, size_t cap, size_t *n) {
    if (from == 0) {
        from = 1;
    }
    if (from > upto || *n >= cap) {
        return 0;
    }
    MDB_cursor *cursor;
    int rc = mdb_cursor_open(txn, dbs->runlist, &cursor);
    if (rc != 0) {
        return rc;
    }
    hist_run run;
    rc = run_at(cursor, from, &run);
    uint64_t last_end = 0;
    while (rc == 0 && *n < cap && run.first_seq <= upto) {
        if (run.first_seq <= last_end) {
            rc = MDB_CORRUPTED;   /* overlapping runs */
            break;
        }
        rc = run_read(txn, dbs, &run, key, key_len, from, upto, seqs, cap, n);
        last_end = run.last_seq;
        if (rc == 0) {
            MDB_val k, v;
            rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT);
            if (rc == 0) rc = run_decode(&k, &v, &run);
        }
    }
    mdb_cursor_close(cursor);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int hist_runs_count(MDB_txn *txn, const hist_runs_dbs *dbs, uint64_t *count) {
    MDB_stat st;
    int rc = mdb_stat(txn, dbs->runlist, &st);
    *count = rc == 0 ? st.ms_entries : 0;
    return rc;
}
