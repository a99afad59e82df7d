/* history_runs.h — the folded part of the HISTORY index, laid out as runs
 * (internal to the LMDB store: lmdb_store.c, and tests/test_journal.c).
 *
 * A run holds the names of one contiguous range of records, written in one
 * go: each fold writes one, and history_run_fanout runs of one level are
 * merged into one of the next level, up to hist_run_level_max. Its keys
 * are (run id, kind, name), ids only ever growing, so a fold or a merge
 * appends at the end of the tree: the pages it writes are about the bytes
 * it adds, whatever the index already holds. (The index before session 9
 * kept one key per name with its seqs as LMDB duplicates, so each fold
 * rewrote a leaf, and a sub-database's path, of every name it touched:
 * with 10,000 workers, 200 MiB per fold once each worker had a few
 * thousand records; docs/server.md, "The history index".) A query looks a
 * name up once in each run its range meets: at most fanout - 1 runs of
 * each level below the top, plus one per 2^20 records or so at the top.
 *
 * Databases of the history environment used here:
 *   runs0, runs1, runs2  one per level: (8-byte big-endian run id, kind
 *             byte, name) -> the seqs of the run's records that touched the
 *             name: native u64s, ascending, at least one. A merge normally
 *             takes every run of its level, so it empties that level's
 *             database with mdb_drop, which frees the pages without
 *             touching each key (deleting key by key was half a merge's
 *             CPU); runs a failed merge left behind are deleted key by key
 *   runlist   8-byte big-endian first seq -> hist_run's other fields
 *             (native), one per run; runs never overlap; each run made
 *             (a fold's or a merge's) takes a larger id than any before
 *   meta      "next_run_id" -> u64 (native): the id the next run takes
 * Every function returns an LMDB code: 0, MDB_NOTFOUND where said, an
 * error of LMDB's, or MDB_CORRUPTED for an entry that breaks the layout. */
#ifndef BERTH_HISTORY_RUNS_H
#define BERTH_HISTORY_RUNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lmdb.h>

#include "fold_sort.h"

enum {
    hist_run_fanout = 8,        /* runs of one level merged into one of the next */
    hist_run_level_max = 2,     /* runs of this level are never merged */
    hist_run_levels = hist_run_level_max + 1,
    hist_plan_scan_max = 4096,  /* runs a merge plan looks over, newest first */
};
/* A merge writes the bytes of its runs again and deletes theirs, in one
 * transaction: bounded so it stays far below LMDB's dirty-page limit
 * (2^17 pages, 512 MiB) whatever the names' lengths. */
#define HIST_MERGE_BYTES_MAX (64ull << 20)

typedef struct hist_runs_dbs {
    MDB_dbi runs[hist_run_levels];  /* runs0..runs2: a run's keys are in its level's */
    MDB_dbi runlist;
    MDB_dbi meta;
} hist_runs_dbs;

/* The names of runs[level] in the environment. */
extern const char *const hist_runs_db_names[hist_run_levels];

typedef struct hist_run {
    uint64_t first_seq;     /* the records it covers: first_seq..last_seq */
    uint64_t last_seq;
    uint64_t id;            /* its keys' prefix in runs */
    uint64_t bytes;         /* its keys' and values' bytes: what a merge rewrites */
    uint32_t level;         /* 0: a fold's; L + 1: a merge of fanout runs of level L;
                             * hist_run_level_max also: a fold too big to merge */
} hist_run;

typedef struct hist_merge_plan {
    hist_run runs[hist_run_fanout];     /* oldest first */
    bool whole_level;                   /* they are every run of their level */
} hist_merge_plan;

/* Write items (sorted by fold_item_cmp; a repeated (name, seq) is kept
 * once) as a new run covering first..last, after every run there is (first
 * above their last seqs): of level 0, or hist_run_level_max if it is too
 * big for eight of it to merge (a rebuild's batch). No items: no run.
 * *bytes gets its size. */
int hist_run_write(MDB_txn *txn, const hist_runs_dbs *dbs, const fold_item *items, size_t count,
                   uint64_t first, uint64_t last, uint64_t *bytes);

/* The newest hist_run_fanout runs in a row (oldest first) that are due to
 * merge: all of one level below hist_run_level_max, HIST_MERGE_BYTES_MAX
 * bytes at most together; *due false when there are none. Normally these
 * are the newest runs; after a failed merge they may be older ones. */
int hist_merge_find(MDB_txn *txn, const hist_runs_dbs *dbs, hist_merge_plan *plan, bool *due);

/* Merge plan's runs into one run of the next level: read through rtxn (a
 * read transaction of the same committed state, so the values read stay
 * put while wtxn writes), write through wtxn, delete the sources. *merged
 * gets the new run. */
int hist_merge(MDB_txn *wtxn, MDB_txn *rtxn, const hist_runs_dbs *dbs,
               const hist_merge_plan *plan, hist_run *merged);

/* Append to seqs[*n..cap) the seqs from..upto (ascending) of records that
 * touched key (kind byte and name), from the runs. */
int hist_runs_read(MDB_txn *txn, const hist_runs_dbs *dbs, const uint8_t *key, size_t key_len,
                   uint64_t from, uint64_t upto, uint64_t *seqs, size_t cap, size_t *n);

/* How many runs there are. */
int hist_runs_count(MDB_txn *txn, const hist_runs_dbs *dbs, uint64_t *count);

#endif
