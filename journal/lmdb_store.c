/* lmdb_store.c — owns the LMDB backend of the journal: two environments in
 * a data directory (the journal's, and the history index's in DIR/history),
 * the directory lock, map growth, the history folder thread, the rebuild of
 * the history index, and every read and write on them.
 *
 * Layout, main environment (DIR/data.mdb), named databases:
 *   journal    MDB_INTEGERKEY: u64 seq (native) -> encoded record (record.c)
 *   snapshots  MDB_INTEGERKEY: u64 seq (native) -> snapshot bytes (opaque)
 *   touchlog   MDB_INTEGERKEY: u64 seq (native) -> the names that record
 *              touched, packed as (kind byte, 1-byte length, name bytes)...
 *   meta       "format" -> u32 store format (store_format below);
 *              "trimmed_seq" -> u64 (native): touchlog holds no entry at or
 *              before it, and one for every touching record after it
 * History environment (DIR/history/data.mdb), written only by the folder:
 *   runs, runlist  the folded names as runs, one per fold, merged as they
 *              accumulate (history_runs.h: layout, and why)
 *   history    MDB_DUPSORT|MDB_DUPFIXED: kind byte 'w'/'i' + name -> 8-byte
 *              big-endian seq: the layout before runs (session 9), kept as
 *              it was for records 1..legacy_end and never written again
 *   meta       "folded_seq" -> u64 (native): the index holds every record's
 *              names up to it; "layout" -> hist_layout_runs and
 *              "legacy_end" -> u64, set by the first writable open of an
 *              index made before runs (hist_layout_set; legacy_end 0 in
 *              a new one); "next_run_id" (history_runs.c)
 * Store formats (the journal's meta "format"): 1 kept the history index in
 * the main environment (before session 4; history_migrate moves it), 2 in
 * DIR/history with a key per name (before session 9), 3 as runs. A writable
 * open takes 1 to 2 to 3 (history_upgrade); a berth of an earlier session
 * refuses a format it does not know rather than read the index short.
 * Format 1 had "folded_seq" in the main environment's meta too.
 *
 * HISTORY without scattered writes, and off the commit path. An append
 * writes one touchlog entry per touching record (sequential pages,
 * MDB_APPEND). A folder thread, started at a writable open and joined at
 * close, moves those names into the history environment once the durable
 * head is history_fold_records (BERTH_HISTORY_FOLD_RECORDS_DEFAULT) past
 * folded_seq: it copies touchlog entries folded_seq+1..durable head out of
 * one short read transaction on the main environment (bounded by
 * fold_items_max names and fold_bytes_max bytes, so a reader never holds up
 * map growth for long), sorts the names into key order (fold_sort.c), and
 * appends them as one new run (history_runs.c: its pages are about the
 * bytes it adds, not a page per name it touches), with the new folded_seq,
 * in one history transaction with LMDB's default durability (two syncs:
 * nobody waits for them); then merges runs that are due, each merge in a
 * transaction of its own (hist_merge_due). LMDB has one writer per environment,
 * so a fold in the main environment held up the next commit by tens of ms
 * (berthd's p999); now no commit waits for a fold. The fold reads only the
 * durable head (berth_journal_durable), so history never names a record an
 * OS crash could undo and then reuse for another.
 * Trim: touchlog entries are deleted only once the history environment's
 * commit covering them returned (so they are on its disk), inside a later
 * append's own transaction (touchlog_trim: a bounded range delete, no
 * extra commit or sync), which
 * also stores trimmed_seq. So at every commit, and on disk after any
 * crash, trimmed_seq <= the history environment's folded_seq. An append
 * wakes the folder when a fold is due (berth_journal_maintain is a no-op).
 *
 * Queries (lmdb_history) are exact and consistent. The reader's main
 * snapshot M has head h and trimmed t; the query then opens a history
 * snapshot H, which has folded f. Claim: f >= t. The trim that made t
 * committed in the main environment only after the history commit with
 * folded_seq >= t returned; M sees that trim, so M began after it, and H
 * began after M, so H sees that history commit or a later one (folded_seq
 * only grows). Hence, with u = min(f, h): history entries from..u come
 * from H (they are all of them, since H holds every name up to f >= u, and
 * none past u is taken: a fold may have passed h, a record M does not
 * show), and M's touchlog holds every touching record in t+1..h, so
 * u+1..h (u >= t) comes from it. Nothing is counted twice (u splits
 * them), nothing after h is shown. A trim or fold that commits while the
 * query runs changes neither snapshot. f < t is reported CORRUPT (it
 * would mean a history environment replaced behind the writer's back).
 * Read-only opens (the berth tool beside berthd) open the history
 * environment read-only through LMDB's reader table, without the
 * directory lock, and adopt its writer's map growth like the main map.
 *
 * Crashes. A killed process loses nothing: the page cache keeps every
 * commit of both environments, and the touch log past trimmed_seq is in
 * the journal's commits. After an OS crash the history environment holds
 * every fold that returned (default sync), the main environment at least
 * its durable head; trims covered only folds that returned, so trimmed_seq
 * <= folded_seq <= head still holds, and the next writable open checks it.
 * The backlog (durable head - folded_seq) stays in touchlog, read by
 * queries, and the folder folds it at the open when it is due. A missing
 * history environment is created anew when nothing was trimmed (touchlog
 * holds every name). Once the touch log was trimmed, a missing, cut,
 * unreadable or ill-fitting one is refused by every open, with a sentence
 * naming it and `berth history rebuild --data DIR`: this layer cannot
 * rebuild it alone (the names come from the engine's apply, which it does
 * not run), so that command replays the journal through the engine and
 * hands the names to an open made for it (history_rebuild; see
 * "Rebuilding the index" below for its steps and crash points). Each
 * writable open commits a rewrite of folded_seq in the history environment
 * (a fresh synced meta page, as sync_at_open below does for the journal;
 * the map is first made twice the file's used pages, as LMDB maps an
 * existing file bigger than map_size_initial at exactly its used pages)
 * and fsyncs history/ and DIR (the new files' entries),
 * and an I/O error in a fold's commit stops folding for this process
 * (the touch log keeps growing, queries stay exact). One in a merge's
 * commit stops only merging (merge_failed): the pages it failed to write
 * are its own new ones, which no committed tree names, and every fold
 * after it syncs its own pages (should LMDB be left unusable, the next
 * fold fails too and stops folding).
 *
 * Durability is LMDB's default sync: an append returns OK only after its
 * write transaction committed, and a failed batch is aborted whole, so the
 * journal only ever ends at a batch boundary. With defer_meta_sync the
 * commit syncs once instead of twice, and durable_seq says what is on disk
 * (see "One sync per commit" below). A full map at its cap, ENOSPC,
 * EDQUOT, and an I/O error while the filesystem lacks room for the write
 * (LMDB turns a short write into EIO) are FULL; other errors are IO.
 *
 * Directory lock: a writable open holds flock(LOCK_EX) on dir/LOCK (with its
 * pid written inside, for the LOCKED sentence) for its lifetime. Read-only
 * opens never take it: LMDB's reader table already makes them safe beside
 * the one writer, and they must work beside a running berthd.
 *
 * Map growth. The map starts at map_size_initial and doubles up to
 * map_size_max. LMDB resizes by unmapping and remapping, so no read
 * transaction of this process may be open meanwhile (their records point
 * into the old mapping). A "map gate" counts open readers: a resize sets
 * `resizing` (new readers wait), waits a bounded time for the count to reach
 * zero, remaps, and lets readers in again. While it waits, `wanted` is
 * set (berth_journal_readers_wanted: one atomic load), so a long reader
 * (a stepped verify or replay: replay.h) closes at its next chunk of
 * records and opens a fresh one, which waits out the resize. Two occasions:
 *   - early: before a write, when the map is over half used. The first try
 *     at each map size waits up to grow_early_wait_ms_max for the readers
 *     open then to leave (a stepped job leaves within a chunk, a query
 *     within its own short life); later tries at that size wait for none,
 *     so a reader that never leaves costs the writer that wait once per
 *     size, not on every write. Before session 5 this never waited, and a
 *     server with a reader nearly always open (looping JOURNAL.VERIFY) never
 *     grew early;
 *   - on MDB_MAP_FULL: the aborted batch waits up to grow_wait_ms_max for
 *     readers to close, grows, and retries; if readers stay open (including
 *     one held by the appending thread itself) the append returns AGAIN
 *     with nothing written (not FULL: the map is below its cap, and FULL
 *     would send the operator after disk space), and a later append grows
 *     once the readers are gone. At the cap it is FULL.
 * A read-only process adopts a writer's larger map (MDB_MAP_RESIZED) the
 * same way. Readers should therefore be short-lived (one per query, not
 * one per connection), or step and watch `wanted`. The reader slots of
 * processes killed inside a read
 * transaction are swept at a writable open and before each growth. The
 * history environment has a gate of its own (hgate), grown the same way by
 * its one writer, the folder; a query holds a main reader while it enters
 * hgate, and no one holding an hgate reader waits on anything, so the two
 * gates cannot wait on each other.
 *
 * One sync per commit (defer_meta_sync). LMDB's commit (mdb_txn_commit,
 * 0.9.x) writes the dirty data pages, fdatasync()s the data file, then
 * writes the meta page that makes the new tree current: by default through
 * a second O_DSYNC descriptor, so each commit waits for two syncs. Opened
 * with MDB_NOMETASYNC the meta page goes through the plain descriptor and
 * stays in the page cache. The argument that this loses no acknowledged
 * record, given that a caller acknowledges only seqs <= durable_seq:
 *   1. The meta page of commit T is written only after T's data pages were
 *      synced, so whenever meta T is on disk its tree is too.
 *   2. fdatasync covers every page of the file written before it, so the
 *      data sync of the next commit T+1, or an explicit mdb_env_sync(env, 1)
 *      (one fdatasync), makes meta T durable. Hence after a successful
 *      commit durable_seq = the head as of the commit before it, and after
 *      a successful sync_now durable_seq = the head.
 *   3. A write transaction reuses only pages freed by transactions older
 *      than the last committed one (mdb_find_oldest starts at txnid - 1), so
 *      while T+1 is written the pages of tree T are never overwritten. A
 *      crash at any point leaves on disk either meta T with its whole tree,
 *      or meta T+1 with its whole tree (point 1): the two meta slots
 *      alternate, and LMDB opens the newer valid one. That is LMDB's
 *      documented promise for MDB_NOMETASYNC: integrity is kept, and a
 *      system crash may undo only the last commit.
 *   4. Every write transaction (append, snapshot, meta rewrite) writes at
 *      least one page, so its commit does sync (LMDB skips the sync of an
 *      empty one).
 * A process crash loses nothing either way: the page cache survives it. At
 * every writable open the whole file is synced once, so what a killed
 * writer left in the page cache is durable before this process shows any
 * of it, and a clean close syncs too. Readers (in this process or others)
 * see committed records before they are durable: a server must bound what
 * it shows by durable_seq, not by what a reader finds. A failed commit or
 * sync with an I/O error is sticky (sync_failed): after a failed fsync Linux
 * may drop the pages it could not write and report success next time, so
 * no later sync could prove them durable; appends and syncs are then
 * refused and durable_seq stops.
 * A commit that fails otherwise (ENOSPC, EDQUOT, EIO on a nearly full disk;
 * not MDB_MAP_FULL, which LMDB reports before writing anything) may have
 * failed in the fdatasync meant to cover the previous commit's meta page,
 * and Linux may have dropped that page: no later sync of the file proves it
 * (point 2 fails). So the journal marks its meta suspect (meta_suspect):
 * durable_seq stays, and the next successful write transaction (an append,
 * or the one-key rewrite berth_journal_sync commits when nothing else
 * writes) syncs again at once, before any further commit, so that its own
 * fresh meta page, whose tree holds every committed record, is on disk; only
 * then does durable_seq move. Syncing before the next commit also keeps
 * point 3: while meta T may be missing from disk, the disk's newest meta is
 * T-1, whose pages the commit after the rewrite could otherwise reuse.
 * A full disk thus stays a FULL the caller can cure, and loses nothing.
 * Restart in the same boot after a failed sync: the page cache may still
 * hold a meta page the disk never got, marked clean, so a plain sync at
 * open would prove nothing; every writable open therefore commits the same
 * one-key rewrite and syncs (sync_at_open), in either mode. */
#define _GNU_SOURCE     /* pthread_setname_np */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>

#include "backend.h"
#include "be64.h"
#include "berth_limits.h"
#include "commit_log.h"
#include "fold_sort.h"
#include "history_runs.h"
#include "jutil.h"
#include "lmdb_meta.h"

#define MAP_SIZE_INITIAL_DEFAULT (64ull << 20)
#define MAP_SIZE_MAX_DEFAULT (1ull << 40)
#define SNAPSHOT_BYTES_MAX (1ull << 30)

enum {
    dir_len_max = 4000,             /* data directory path, bytes */
    path_len_max = dir_len_max + 64,   /* DIR/history.damaged-N/lock.mdb fits */
    readers_max = 1024,             /* LMDB reader slots */
    dbs_max = 5,
    hist_dbs_max = 6,               /* the history environment: history, meta, runlist, runs0..2 */
    hist_layout_runs = 2,           /* history environment layout: folds write runs */
    store_format_legacy = 1,        /* history inside this environment (before session 4) */
    store_format_dups = 2,          /* history in DIR/history, a key per name (before session 9) */
    store_format = 3,               /* history in DIR/history as runs (history_runs.h) */
    grow_wait_ms_max = 2000,        /* a resize waits this long for readers */
    /* an early resize waits this long, once per map size, for readers that
     * leave when asked (berth_journal_readers_wanted): a stepped verify
     * leaves within a chunk of records, a query within its own short life */
    grow_early_wait_ms_max = 50,
    grow_attempts_max = 48,         /* doublings from a tiny map to the cap */
    remap_attempts_max = 8,         /* reader retries after MDB_MAP_RESIZED */
    history_key_len_max = 1 + BERTH_NAME_LEN_MAX,
    /* one record's packed names: an instance and its workers */
    touchlog_value_len_max = (1 + BERTH_PLACEMENT_WORKERS_MAX) * (2 + BERTH_NAME_LEN_MAX),
    fold_need_bytes_per_record = 1024,  /* history growth one folded record may need */
    /* names one fold transaction sorts and puts (32 bytes each): every name
     * of a default-threshold backlog (16384 records of up to 65 names) fits */
    fold_items_max = 1 << 21,
    /* the raw touchlog bytes one fold copies out of its short read
     * transaction (a default backlog is ~1 MiB); more waits for the next fold */
    fold_bytes_max = 16 << 20,
    /* touchlog entries an append deletes once the history environment holds
     * them: this many, or twice the batch's records if more (so the trim
     * always outpaces the appends, and ends within half the next fold's
     * wait). Each delete costs ~0.35 us: 1,024 put 0.36 ms on one commit in
     * fifty at depth 1, a commit the whole cohort waits for; 64 spread it
     * over the fold's interval at ~20 us a commit (docs/bench-server.md,
     * "Session 6: the depth-1 tail") */
    trim_entries_per_append_min = 64,
    fold_retry_ms = 1000,           /* a failed fold waits this long before the next */
    pid_text_len_max = 32,
    grow_slack_bytes = 1 << 20,     /* B-tree and free-list overhead of one write */
    meta_rewrite_need_bytes = 1 << 16,  /* a one-key rewrite: a few pages copied */
    fold_need_bytes_per_name = 256,     /* history growth one rebuilt name may need */
    damaged_kept_max = 1000             /* DIR/history.damaged-N: N from 1 up to this */
};

typedef struct map_gate {
    pthread_mutex_t mutex;
    pthread_cond_t changed;         /* readers or resizing changed */
    uint32_t readers;               /* read transactions open in this process */
    bool resizing;
    _Atomic bool wanted;            /* resizing, for readers that poll without the mutex */
} map_gate;

typedef struct lmdb_journal {
    berth_journal base;
    MDB_env *env;
    MDB_dbi dbi_journal;
    MDB_dbi dbi_snapshots;
    MDB_dbi dbi_history;
    MDB_dbi dbi_meta;
    MDB_dbi dbi_touchlog;
    bool has_touchlog;              /* false: a read-only open of a pre-touchlog store */
    uint32_t format;                /* store_format, or store_format_legacy (read-only only
                                     * once open returned: a writable open migrates) */
    bool read_only;
    bool env_open;
    bool sync_ready;
    _Atomic bool broken;            /* a remap failed: the map is gone, every call is IO */
    bool defer_meta_sync;           /* MDB_NOMETASYNC: see "One sync per commit" */
    _Atomic bool sync_failed;       /* defer_meta_sync: a commit or sync hit an I/O error */
    bool meta_suspect;              /* defer_meta_sync, under write_mutex: see "One sync per commit" */
    int lock_fd;                    /* -1: no lock file open */
    bool lock_held;                 /* the flock on it is ours */
    uint64_t map_size_max;
    uint64_t page_size;
    pthread_mutex_t write_mutex;    /* one append or snapshot_put at a time */
    pthread_mutex_t head_mutex;     /* the cached head, so head() never waits on an fsync */
    map_gate gate;
    uint64_t early_waited_map_bytes;    /* under write_mutex: map_grow_early's last waited size */
    uint64_t head_seq;              /* writable opens: the committed head */
    uint8_t head_hash[BERTH_HASH_LEN];
    uint64_t durable_seq;           /* defer_meta_sync, under head_mutex: on disk up to here */
    uint64_t trimmed_seq;           /* writable opens, under write_mutex: touchlog holds
                                     * no entry at or before it */
    uint32_t history_fold_records;  /* touchlog backlog that triggers a fold */
    /* The history environment (DIR/history): see "The history environment". */
    MDB_env *henv;                  /* NULL: none (a read-only open of a legacy store, or of
                                     * a new one whose writer never got to create it) */
    MDB_dbi hdbi_history;           /* the layout before runs: 1..legacy_end (see there) */
    MDB_dbi hdbi_meta;
    hist_runs_dbs hruns;            /* runs, runlist, meta: history_runs.h */
    bool hruns_open;                /* false: a read-only open of an index made before runs */
    uint64_t hpage_size;
    map_gate hgate;                 /* as gate, for henv's map */
    bool hgate_ready;
    _Atomic bool hbroken;           /* a remap of henv failed */
    _Atomic bool upgrade_told;      /* read-only, format 1: said the store was migrated */
    /* writable: henv durably holds every touched name up to here; written by
     * the folder only, read by appends (the trim) */
    _Atomic uint64_t hist_folded;
    /* The folder thread's own: record 1's hash, read by its first gather
     * (under the gate, in the gather's transaction), for the index's
     * binding (hist_journal_bind), so a fold's henv transaction never opens
     * one on the main environment. */
    uint8_t fold_first_hash[BERTH_HASH_LEN];
    bool fold_first_known;
    /* The folder thread (writable opens), under fold_mutex. */
    pthread_t folder;
    bool folder_started;
    bool fold_ready;                /* fold_mutex and fold_cond initialised */
    pthread_mutex_t fold_mutex;
    pthread_cond_t fold_cond;       /* wake, stop, or the folder went idle */
    bool fold_wake;                 /* a fold may be due: look */
    bool fold_idle;                 /* waiting, nothing due it could do */
    _Atomic bool fold_stop;
    bool fold_dead;                 /* an I/O error in henv: no more folds this process */
    berth_jerr fold_err;            /* the last fold's result */
    /* The fold's progress, for INFO (berth_journal_fold_stats). */
    _Atomic uint64_t fold_count;    /* fold transactions committed since open */
    _Atomic uint64_t merge_count;   /* merges of runs committed since open */
    _Atomic uint64_t run_count;     /* runs after the last fold or merge */
    bool merge_off;                 /* a merge failed other than for room: no more this process */
    bool merge_room_told;           /* said that a merge found no room */
    _Atomic uint64_t fold_backlog_max;   /* the largest backlog an append or sync left */
    /* The folder's buffers, kept here rather than on its stack so that they
     * stay reachable from the journal (a leak checker in a forked child,
     * which has no folder thread, would call them lost). */
    struct fold_work *fold_work;
    uint8_t *scratch;               /* one encoded record, BERTH_RECORD_BYTES_MAX */
    /* An open for history_rebuild: henv is a new index in DIR/history.rebuild,
     * filled in batches through fold_work (see "Rebuilding the index"). */
    bool rebuild;
    bool rebuild_swapped;           /* finish put it in place of DIR/history */
    uint64_t rebuild_next;          /* the seq the next add must carry */
    size_t rebuild_count;           /* names gathered in fold_work, not yet written */
    size_t rebuild_used;            /* bytes of fold_work's arena they take */
    uint64_t rebuild_names;         /* names written to henv so far */
    uint32_t rebuild_batch_records; /* records per batch at most; 0: as the buffers allow */
    char dir[dir_len_max + 1];
} lmdb_journal;

typedef struct lmdb_reader {
    berth_journal_reader base;
    lmdb_journal *journal;
    MDB_txn *txn;
} lmdb_reader;

typedef struct lmdb_cursor {
    berth_journal_cursor base;
    MDB_cursor *cursor;
    uint64_t expect;                /* the seq the next record must carry */
    bool started;
    bool failed;                    /* a gap or a bad key ends the walk */
    uintptr_t page_bytes;           /* the map's page (a power of two); 0: no hints */
    uintptr_t hint_page;            /* the page of the last record returned */
    uintptr_t hint_low;             /* the lowest address hinted in it */
} lmdb_cursor;

static const berth_journal_ops lmdb_ops;

static lmdb_journal *journal_of(berth_journal *base) {
    assert(base != NULL && base->ops == &lmdb_ops);
    return (lmdb_journal *)base;
}

static lmdb_reader *reader_of(berth_journal_reader *base) {
    assert(base != NULL && base->ops == &lmdb_ops);
    return (lmdb_reader *)base;
}

static lmdb_cursor *cursor_of(berth_journal_cursor *base) {
    assert(base != NULL && base->ops == &lmdb_ops);
    return (lmdb_cursor *)base;
}

/* ---- errors ---------------------------------------------------------- */

static berth_jerr jerr_of_mdb(int rc) {
    assert(rc != MDB_SUCCESS);
    switch (rc) {
    case MDB_MAP_FULL: case ENOSPC: case EDQUOT: return BERTH_J_FULL;
    case MDB_NOTFOUND: case ENOENT: return BERTH_J_NOTFOUND;
    case ENOMEM: return BERTH_J_NOMEM;
    case MDB_CORRUPTED: case MDB_INVALID: case MDB_VERSION_MISMATCH:
    case MDB_INCOMPATIBLE: case MDB_BAD_VALSIZE: return BERTH_J_CORRUPT;
    default: return BERTH_J_IO;
    }
}

/* A put's error; *map_full says the write may succeed in a larger map. */
static berth_jerr put_err(int rc, bool *map_full) {
    assert(rc != MDB_SUCCESS);
    *map_full = rc == MDB_MAP_FULL;
    return jerr_of_mdb(rc);
}

static void sentence(char *err, size_t err_size, const char *fmt, const char *a,
                     const char *b) {
    if (err != NULL && err_size > 0) {
        int n = snprintf(err, err_size, fmt, a, b);
        assert(n >= 0);
    }
}

/* ---- the map gate ---------------------------------------------------- */

static bool gate_init(map_gate *gate) {
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0) {
        return false;
    }
    bool ok = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 &&
              pthread_cond_init(&gate->changed, &attr) == 0;
    int rc = pthread_condattr_destroy(&attr);
    assert(rc == 0);
    if (!ok) {
        return false;
    }
    if (pthread_mutex_init(&gate->mutex, NULL) != 0) {
        rc = pthread_cond_destroy(&gate->changed);
        assert(rc == 0);
        return false;
    }
    gate->readers = 0;
    gate->resizing = false;
    atomic_store(&gate->wanted, false);
    return true;
}

static void gate_destroy(map_gate *gate) {
    assert(gate->readers == 0 && !gate->resizing);
    int rc = pthread_cond_destroy(&gate->changed);
    assert(rc == 0);
    rc = pthread_mutex_destroy(&gate->mutex);
    assert(rc == 0);
}

static void gate_lock(map_gate *gate) {
    int rc = pthread_mutex_lock(&gate->mutex);
    assert(rc == 0);
}

static void gate_unlock(map_gate *gate) {
    int rc = pthread_mutex_unlock(&gate->mutex);
    assert(rc == 0);
}

/* A reader may start once no resize is under way. */
static void gate_reader_enter(map_gate *gate) {
    gate_lock(gate);
    while (gate->resizing) {
        int rc = pthread_cond_wait(&gate->changed, &gate->mutex);
        assert(rc == 0);
    }
    gate->readers++;
    assert(gate->readers > 0);
    gate_unlock(gate);
}

static void gate_reader_leave(map_gate *gate) {
    gate_lock(gate);
    assert(gate->readers > 0);
    gate->readers--;
    if (gate->readers == 0) {
        int rc = pthread_cond_broadcast(&gate->changed);
        assert(rc == 0);
    }
    gate_unlock(gate);
}

static struct timespec deadline_after_ms(uint32_t wait_ms) {
    struct timespec t;
    int rc = clock_gettime(CLOCK_MONOTONIC, &t);
    assert(rc == 0);
    t.tv_sec += wait_ms / 1000;
    t.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec += 1;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

/* Wait (until deadline) for pred-false; true if it became false. */
static bool gate_wait_until(map_gate *gate, const struct timespec *deadline, bool for_readers) {
    while (for_readers ? gate->readers > 0 : gate->resizing) {
        int rc = pthread_cond_timedwait(&gate->changed, &gate->mutex, deadline);
        if (rc == ETIMEDOUT) {
            return !(for_readers ? gate->readers > 0 : gate->resizing);
        }
        assert(rc == 0);
    }
    return true;
}

/* Enter the exclusive resize state: no reader open, none may start. wait_ms
 * 0: only if that holds right now. false: not entered. */
static bool gate_resize_begin(map_gate *gate, uint32_t wait_ms) {
    struct timespec deadline = deadline_after_ms(wait_ms);
    gate_lock(gate);
    bool entered = false;
    if (gate_wait_until(gate, &deadline, false)) {
        gate->resizing = true;
        /* only a resize that will wait asks readers to leave: a try that
         * does not wait would just cut long readers' steps short */
        atomic_store(&gate->wanted, wait_ms > 0);
        entered = gate_wait_until(gate, &deadline, true);
        if (!entered) {
            gate->resizing = false;
            atomic_store(&gate->wanted, false);
            int rc = pthread_cond_broadcast(&gate->changed);
            assert(rc == 0);
        }
    }
    assert(!entered || (gate->resizing && gate->readers == 0));
    gate_unlock(gate);
    return entered;
}

static void gate_resize_end(map_gate *gate) {
    gate_lock(gate);
    assert(gate->resizing && gate->readers == 0);
    gate->resizing = false;
    atomic_store(&gate->wanted, false);
    int rc = pthread_cond_broadcast(&gate->changed);
    assert(rc == 0);
    gate_unlock(gate);
}

/* ---- map size -------------------------------------------------------- */

static uint64_t round_up(uint64_t value, uint64_t unit) {
    assert(unit > 0);
    uint64_t r = value % unit;
    return r == 0 ? value : value + (unit - r);
}

typedef struct map_use {
    uint64_t map_bytes;
    uint64_t used_bytes;    /* high-water mark of pages in use */
} map_use;

static map_use map_use_of(MDB_env *env, uint64_t page_size) {
    MDB_envinfo info;
    int rc = mdb_env_info(env, &info);
    assert(rc == 0);
    map_use use = { info.me_mapsize, ((uint64_t)info.me_last_pgno + 1) * page_size };
    return use;
}

static map_use map_use_now(lmdb_journal *j) {
    return map_use_of(j->env, j->page_size);
}

/* The size to grow env's map to, or 0 when it is already at the cap. */
static uint64_t map_size_next_of(MDB_env *env, uint64_t page_size, uint64_t map_max,
                                 uint64_t need_bytes) {
    map_use use = map_use_of(env, page_size);
    if (use.map_bytes >= map_max) {
        return 0;
    }
    uint64_t want = use.map_bytes * 2;
    uint64_t floor = use.used_bytes + need_bytes + grow_slack_bytes;
    if (want < floor) {
        want = floor;
    }
    want = round_up(want, page_size);
    return want < map_max ? want : map_max;
}

/* Grow one environment's map through its gate (the journal's, or the
 * history index's): its one writer calls it holding no transaction on it.
 * wait_ms 0: only when no reader is open now. FULL at the cap; AGAIN when
 * readers stayed open all of wait_ms (the map is not at its maximum, so
 * FULL would send the operator after disk space there is no need for). A
 * failed remap marks the environment broken: LMDB unmapped the old map
 * first. */
static berth_jerr env_map_grow(MDB_env *env, uint64_t page_size, uint64_t map_max, map_gate *gate,
                               _Atomic bool *broken, uint64_t need_bytes, uint32_t wait_ms) {
    uint64_t next = map_size_next_of(env, page_size, map_max, need_bytes);
    if (next == 0) {
        return BERTH_J_FULL;
    }
    if (!gate_resize_begin(gate, wait_ms)) {
        return BERTH_J_AGAIN;
    }
    int rc = mdb_env_set_mapsize(env, (size_t)next);
    if (rc != 0) {
        atomic_store(broken, true);
    }
    gate_resize_end(gate);
    return rc == 0 ? BERTH_J_OK : BERTH_J_IO;
}

/* The journal's map; caller holds write_mutex and no transaction. */
static berth_jerr map_grow(lmdb_journal *j, uint64_t need_bytes, uint32_t wait_ms) {
    return env_map_grow(j->env, j->page_size, j->map_size_max, &j->gate, &j->broken, need_bytes,
                        wait_ms);
}

/* Free the reader slots of processes that died inside a read transaction
 * (a killed `berth` tool) while this environment stayed open: each pins
 * the pages it could see, so the file grows instead of reusing them. */
static int readers_sweep(lmdb_journal *j) {
    int dead = 0;
    int rc = mdb_reader_check(j->env, &dead);
    assert(rc != 0 || dead >= 0);
    return rc;
}

/* Before a write: grow if the map is over half used, so MDB_MAP_FULL (and
 * its long wait) stays rare. The first try at each map size waits up to
 * grow_early_wait_ms_max for the readers open then (which see the gate's
 * want and leave, if they are long ones: berth_journal_readers_wanted);
 * later tries at the same size wait for none, so a reader that does not
 * leave costs the writer that wait once, not on every write. Dead readers
 * are swept first, as they may be why the map filled. Caller holds
 * write_mutex. */
static void map_grow_early(lmdb_journal *j, uint64_t need_bytes) {
    map_use use = map_use_now(j);
    if (use.used_bytes + need_bytes > use.map_bytes / 2) {
        int rc = readers_sweep(j);
        (void)rc;   /* a failed sweep only leaves pages pinned a while longer */
        bool first = j->early_waited_map_bytes != use.map_bytes;
        j->early_waited_map_bytes = use.map_bytes;
        berth_jerr err = map_grow(j, need_bytes, first ? grow_early_wait_ms_max : 0);
        (void)err;   /* at the cap or readers open: the write itself decides */
    }
}

/* ---- the directory lock ---------------------------------------------- */

static bool path_join(char *out, const char *dir, const char *name) {
    int n = snprintf(out, path_len_max, "%s/%s", dir, name);
    return n > 0 && n < path_len_max;
}

static void lock_holder_pid(int fd, char *pid, size_t pid_size) {
    char text[pid_text_len_max];
    ssize_t got = pread(fd, text, sizeof(text) - 1, 0);
    size_t len = 0;
    while (got > 0 && len < (size_t)got && text[len] >= '0' && text[len] <= '9') {
        len++;
    }
    if (len == 0) {
        snprintf(pid, pid_size, "unknown");
        return;
    }
    text[len] = '\0';
    snprintf(pid, pid_size, "%s", text);
}

static berth_jerr lock_take(lmdb_journal *j, char *err, size_t err_size) {
    char path[path_len_max];
    if (!path_join(path, j->dir, "LOCK")) {
        sentence(err, err_size, "data directory path %s is too long%s", j->dir, "");
        return BERTH_J_INVALID;
    }
    j->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (j->lock_fd < 0) {
        sentence(err, err_size, "cannot open the lock file %s: %s", path, strerror(errno));
        return BERTH_J_IO;
    }
    if (flock(j->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK) {
            sentence(err, err_size, "cannot lock %s: %s", path, strerror(errno));
            return BERTH_J_IO;
        }
        char pid[pid_text_len_max];
        lock_holder_pid(j->lock_fd, pid, sizeof(pid));
        sentence(err, err_size, "data directory %s is in use by another berthd (pid %s)",
                 j->dir, pid);
        return BERTH_J_LOCKED;
    }
    j->lock_held = true;
    char text[pid_text_len_max];
    int len = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
    assert(len > 0 && (size_t)len < sizeof(text));
    if (ftruncate(j->lock_fd, 0) != 0 || pwrite(j->lock_fd, text, (size_t)len, 0) != len) {
        sentence(err, err_size, "cannot write the lock file %s: %s", path, strerror(errno));
        return BERTH_J_IO;
    }
    return BERTH_J_OK;
}

/* ---- open ------------------------------------------------------------ */


/* The directory holding dir ("." for a relative name without a slash). */
static bool parent_path(char *out, const char *dir) {
    size_t len = strnlen(dir, dir_len_max + 1);
    if (len == 0 || len > dir_len_max) {
        return false;
    }
    memcpy(out, dir, len + 1);
    while (len > 1 && out[len - 1] == '/') {
        out[--len] = '\0';   /* "a/b/" names b */
    }
    char *slash = strrchr(out, '/');
    if (slash == NULL) {
        memcpy(out, ".", 2);
    } else if (slash == out) {
        out[1] = '\0';       /* "/b": the root */
    } else {
        *slash = '\0';
    }
    return true;
}

/* A new data directory's entry must survive an OS crash before anything in
 * it is acknowledged (its own entries are synced once the history index is
 * set up, hist_env_open). "New": created now, or holding no data.mdb yet (an
 * open that failed here before left it made but perhaps unsynced). */
static berth_jerr dir_created_sync(lmdb_journal *j, char *err, size_t err_size) {
    char parent[path_len_max];
    if (!parent_path(parent, j->dir)) {
        sentence(err, err_size, "data directory path %s is too long%s", j->dir, "");
        return BERTH_J_INVALID;
    }
    int rc = berth_dir_sync(parent);
    if (rc != 0) {
        sentence(err, err_size, "cannot sync the directory %s (after creating the data"
                 " directory in it): %s", parent, strerror(rc));
        return BERTH_J_IO;
    }
    return BERTH_J_OK;
}

/* data.mdb missing or empty in a directory that held records: LMDB would
 * make a new, empty journal there, and every acknowledged write would be
 * gone without a word. What a journal leaves beside data.mdb: a commit log
 * that took a frame, a history index. Either refuses the open, before LMDB
 * touches the file. Neither is there only for a directory that never
 * acknowledged a write (a first start cut short may leave data.mdb empty),
 * which is new. */
static bool hist_dir_path(char *out, const lmdb_journal *j);

static berth_jerr dir_lost_journal(lmdb_journal *j, const char *what, char *err, size_t err_size) {
    char hist[path_len_max];
    char hist_file[path_len_max];
    struct stat st;
    bool clog = berth_clog_ever_written(j->dir);
    bool history = hist_dir_path(hist, j) && path_join(hist_file, hist, "data.mdb") &&
                   stat(hist_file, &st) == 0 && st.st_size > 0;
    if (!clog && !history) {
        return BERTH_J_OK;
    }
    berth_jsay(err, err_size, "the journal's data file %s/data.mdb is %s, but the directory holds what a"
             " journal leaves behind (%s): its records are lost. Restore data.mdb from a backup (with"
             " commit.log and commit.log.2); if no record was ever written here, move the directory"
             " aside and start afresh", j->dir, what,
             clog && history ? "a commit log with frames and the history index" :
             clog ? "a commit log with frames" : "the history index");
    return BERTH_J_CORRUPT;
}

static berth_jerr dir_prepare(lmdb_journal *j, char *err, size_t err_size) {
    struct stat st;
    char path[path_len_max];
    if (!path_join(path, j->dir, "data.mdb")) {
        sentence(err, err_size, "data directory path %s is too long%s", j->dir, "");
        return BERTH_J_INVALID;
    }
    if (!j->read_only && !j->rebuild) {
        bool created = mkdir(j->dir, 0700) == 0;
        if (!created && errno != EEXIST) {
            sentence(err, err_size, "cannot create data directory %s: %s", j->dir,
                     strerror(errno));
            return errno == ENOENT ? BERTH_J_NOTFOUND : BERTH_J_IO;
        }
        bool found = stat(path, &st) == 0;
        bool missing = !found && errno == ENOENT;
        bool empty = found && S_ISREG(st.st_mode) && st.st_size == 0;
        if (!created && (missing || empty)) {
            berth_jerr lost = dir_lost_journal(j, missing ? "missing" : "empty (0 bytes)", err,
                                               err_size);
            if (lost != BERTH_J_OK) {
                return lost;
            }
        }
        bool fresh = created || missing;
        berth_jerr jerr = fresh ? dir_created_sync(j, err, err_size) : BERTH_J_OK;
        return jerr == BERTH_J_OK ? lock_take(j, err, err_size) : jerr;
    }
    bool exists = stat(j->dir, &st) == 0;
    if (!exists || !S_ISDIR(st.st_mode)) {
        sentence(err, err_size, "data directory %s %s", j->dir,
                 exists ? "is not a directory" : "does not exist");
        return BERTH_J_NOTFOUND;
    }
    if (stat(path, &st) != 0) {
        sentence(err, err_size, "data directory %s holds no journal (no data.mdb)%s",
                 j->dir, "");
        return BERTH_J_NOTFOUND;
    }
    if (S_ISREG(st.st_mode) && st.st_size == 0) {
        /* LMDB would take it for a new file: a read-only open fails on it
         * obscurely, a rebuild would write a journal into it. */
        sentence(err, err_size, "the journal's data file %s is empty (0 bytes): there is no journal"
                 " to read%s", path, "");
        return BERTH_J_CORRUPT;
    }
    /* A rebuild works on a journal that is there, never on a new one. */
    return j->rebuild ? lock_take(j, err, err_size) : BERTH_J_OK;
}

/* What to do about a data file no open can map (cut short, a meta page
 * damaged): every open (berthd's, each berth subcommand's, `berth journal
 * verify`'s) refuses it alike, so the way out is a copy from before the
 * damage. (A head record that does not decode is another matter: the
 * tool's read-only open reads past it, and verify names its seq.) */
#define RESTORE_HINT \
    "restore the data directory from a backup (`berth backup`; docs/reliability.md, \"Damage found at open\")"

/* A data file shorter than the pages its meta page claims (cut by a bad
 * copy, a crashed filesystem or a careless truncate) would fault (SIGBUS) on
 * the first read of a missing page: refuse it before any page is touched. */
static berth_jerr file_size_check(lmdb_journal *j, char *err, size_t err_size) {
    MDB_envinfo info;
    int rc = mdb_env_info(j->env, &info);
    assert(rc == 0);
    char path[path_len_max];
    struct stat st;
    if (!path_join(path, j->dir, "data.mdb") || stat(path, &st) != 0) {
        sentence(err, err_size, "cannot stat the journal's data file in %s%s", j->dir, "");
        return BERTH_J_IO;
    }
    uint64_t need = ((uint64_t)info.me_last_pgno + 1) * j->page_size;
    if ((uint64_t)st.st_size < need) {
        char sizes[96];
        snprintf(sizes, sizeof(sizes), "%llu bytes, its pages need %llu",
                 (unsigned long long)st.st_size, (unsigned long long)need);
        sentence(err, err_size, "the journal in %s is truncated: data.mdb has %s; " RESTORE_HINT, j->dir,
                 sizes);
        return BERTH_J_CORRUPT;
    }
    return BERTH_J_OK;
}

/* Before LMDB maps data.mdb: a damaged meta page would fault inside
 * mdb_env_open (lmdb_meta.c). */
static berth_jerr meta_pages_check(lmdb_journal *j, char *err, size_t err_size) {
    char path[path_len_max];
    if (!path_join(path, j->dir, "data.mdb")) {
        sentence(err, err_size, "data directory path %s is too long%s", j->dir, "");
        return BERTH_J_INVALID;
    }
    berth_jerr jerr = lmdb_meta_check(path, "the journal's data file", err, err_size);
    size_t len = err != NULL ? strnlen(err, err_size) : 0;
    if (jerr == BERTH_J_CORRUPT && err != NULL && len + 1 < err_size) {
        snprintf(err + len, err_size - len, "; " RESTORE_HINT);
    }
    return jerr;
}

static berth_jerr env_open(lmdb_journal *j, uint64_t map_initial, char *err,
                           size_t err_size) {
    berth_jerr jerr = meta_pages_check(j, err, err_size);
    if (jerr != BERTH_J_OK) {
        return jerr;
    }
    int rc = mdb_env_create(&j->env);
    if (rc != 0) {
        j->env = NULL;
        sentence(err, err_size, "cannot create an LMDB environment: %s%s", mdb_strerror(rc), "");
        return jerr_of_mdb(rc);
    }
    rc = mdb_env_set_maxreaders(j->env, readers_max);
    if (rc == 0) rc = mdb_env_set_maxdbs(j->env, dbs_max);
    if (rc == 0 && !j->read_only) rc = mdb_env_set_mapsize(j->env, (size_t)map_initial);
    if (rc == 0) {
        unsigned int flags = MDB_NOTLS | (j->read_only ? MDB_RDONLY : 0) |
                             (j->defer_meta_sync ? MDB_NOMETASYNC : 0);
        rc = mdb_env_open(j->env, j->dir, flags, 0600);
    }
    if (rc != 0) {
        /* Callers put "cannot open the journal in DIR" (berthd) or the like
         * first: this names the files, which a Permission denied is about. */
        sentence(err, err_size, "cannot open %s/data.mdb and its lock file lock.mdb: %s", j->dir,
                 mdb_strerror(rc));
        return jerr_of_mdb(rc);
    }
    j->env_open = true;
    MDB_stat st;
    rc = mdb_env_stat(j->env, &st);
    assert(rc == 0);
    j->page_size = st.ms_psize;
    assert(j->page_size > 0);
    return file_size_check(j, err, err_size);
}

static int dbi_open_all(lmdb_journal *j, MDB_txn *txn) {
    unsigned int create = j->read_only ? 0 : MDB_CREATE;
    int rc = mdb_dbi_open(txn, "journal", create | MDB_INTEGERKEY, &j->dbi_journal);
    if (rc == 0) rc = mdb_dbi_open(txn, "snapshots", create | MDB_INTEGERKEY, &j->dbi_snapshots);
    if (rc == 0) rc = mdb_dbi_open(txn, "meta", create, &j->dbi_meta);
    if (rc == 0) {
        rc = mdb_dbi_open(txn, "touchlog", create | MDB_INTEGERKEY, &j->dbi_touchlog);
        j->has_touchlog = rc == 0;
        if (rc == MDB_NOTFOUND && j->read_only) {
            rc = 0;   /* a store no writer of this version opened yet */
        }
    }
    return rc;
}

static const MDB_val format_key = { 6, (void *)"format" };
static const MDB_val folded_key = { 10, (void *)"folded_seq" };
static const MDB_val trimmed_key = { 11, (void *)"trimmed_seq" };

/* A u64 (native) under key in a meta db; *present false when absent. */
static berth_jerr meta_u64_get(MDB_txn *txn, MDB_dbi dbi, const MDB_val *key, uint64_t *seq,
                               bool *present) {
    MDB_val k = *key;
    MDB_val val;
    int rc = mdb_get(txn, dbi, &k, &val);
    *present = rc == 0;
    *seq = 0;
    if (rc == MDB_NOTFOUND) {
        return BERTH_J_OK;
    }
    if (rc != 0) {
        return jerr_of_mdb(rc);
    }
    if (val.mv_size != sizeof(*seq)) {
        return BERTH_J_CORRUPT;
    }
    memcpy(seq, val.mv_data, sizeof(*seq));
    return BERTH_J_OK;
}

static berth_jerr meta_u64_put(MDB_txn *txn, MDB_dbi dbi, const MDB_val *key, uint64_t seq,
                               bool *map_full) {
    MDB_val k = *key;
    MDB_val val = { sizeof(seq), &seq };
    int rc = mdb_put(txn, dbi, &k, &val, 0);
    return rc == 0 ? BERTH_J_OK : put_err(rc, map_full);
}

/* The store format in meta: written when the store is new (with an empty
 * touchlog trimmed through 0), checked always. A legacy store's history db
 * is opened here; a writable open migrates it later (history_migrate). */
static berth_jerr meta_check(lmdb_journal *j, MDB_txn *txn, char *err, size_t err_size) {
    MDB_val key = format_key;
    MDB_val val;
    int rc = mdb_get(txn, j->dbi_meta, &key, &val);
    if (rc == MDB_NOTFOUND && !j->read_only) {
        uint32_t format = store_format;
        MDB_val put = { sizeof(format), &format };
        bool map_full = false;
        rc = mdb_put(txn, j->dbi_meta, &key, &put, 0);
        berth_jerr jerr = rc == 0 ? meta_u64_put(txn, j->dbi_meta, &trimmed_key, 0, &map_full)
                                  : jerr_of_mdb(rc);
        if (jerr != BERTH_J_OK) {
            sentence(err, err_size, "cannot initialise the journal in %s: %s", j->dir,
                     berth_jerr_name(jerr));
            return jerr;
        }
        j->format = store_format;
        return BERTH_J_OK;
    }
    uint32_t format = 0;
    if (rc == 0 && val.mv_size == sizeof(format)) {
        memcpy(&format, val.mv_data, sizeof(format));
    }
    if (format != store_format && format != store_format_dups && format != store_format_legacy) {
        char found[pid_text_len_max];
        snprintf(found, sizeof(found), "%u", format);
        sentence(err, err_size, "the journal in %s has an unknown store format (%s)", j->dir,
                 found);
        return BERTH_J_CORRUPT;
    }
    j->format = format;
    if (format == store_format_legacy) {
        rc = mdb_dbi_open(txn, "history", MDB_DUPSORT | MDB_DUPFIXED, &j->dbi_history);
        if (rc != 0) {
            sentence(err, err_size, "the journal in %s (store format 1) has no history index: %s",
                     j->dir, mdb_strerror(rc));
            return BERTH_J_CORRUPT;
        }
    }
    return BERTH_J_OK;
}

/* The last key of the journal, undecoded (head_load checks the record). */
static int journal_last_seq(lmdb_journal *j, MDB_txn *txn, uint64_t *seq) {
    MDB_cursor *cursor;
    int rc = mdb_cursor_open(txn, j->dbi_journal, &cursor);
    if (rc != 0) {
        return rc;
    }
    MDB_val key, val;
    rc = mdb_cursor_get(cursor, &key, &val, MDB_LAST);
    mdb_cursor_close(cursor);
    *seq = 0;
    if (rc == 0 && key.mv_size == sizeof(*seq)) {
        memcpy(seq, key.mv_data, sizeof(*seq));
    }
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Writable opens of the current format: load trimmed_seq. */
static berth_jerr trimmed_init(lmdb_journal *j, MDB_txn *txn, char *err, size_t err_size) {
    bool present = false;
    berth_jerr jerr = meta_u64_get(txn, j->dbi_meta, &trimmed_key, &j->trimmed_seq, &present);
    if (jerr == BERTH_J_OK && !present) {
        jerr = BERTH_J_CORRUPT;
    }
    if (jerr != BERTH_J_OK) {
        sentence(err, err_size, "cannot read how far the touch log of %s was trimmed (%s)",
                 j->dir, berth_jerr_name(jerr));
    }
    return jerr;
}

/* A writable open makes the journal's databases where they are missing,
 * which is right for a new data.mdb and wrong for an LMDB file that holds
 * something else (the history index's, say, given as --data DIR/history):
 * berthd would write a journal into it and serve an empty state. So a file
 * whose main database already names databases but no "journal" is refused
 * (true, with the sentence said). An LMDB error here says false: the opens
 * that follow meet it again and report it. */
static bool foreign_file(lmdb_journal *j, MDB_txn *txn, char *err, size_t err_size) {
    MDB_dbi probe;
    if (mdb_dbi_open(txn, "journal", 0, &probe) != MDB_NOTFOUND) {
        return false;
    }
    MDB_dbi main_dbi;
    MDB_stat st;
    int rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
    if (rc == 0) rc = mdb_stat(txn, main_dbi, &st);
    if (rc != 0 || st.ms_entries == 0) {
        return false;   /* an error, or a new file: the journal is made here */
    }
    char count[32];
    snprintf(count, sizeof(count), "%llu", (unsigned long long)st.ms_entries);
    sentence(err, err_size, "data.mdb in %s is an LMDB file that holds no berth journal (%s other"
             " databases or keys): not a berth data directory, or its journal was removed; nothing was"
             " written", j->dir, count);
    return true;
}

static berth_jerr dbs_open(lmdb_journal *j, char *err, size_t err_size) {
    MDB_txn *txn;
    int rc = mdb_txn_begin(j->env, NULL, j->read_only ? MDB_RDONLY : 0, &txn);
    if (rc != 0) {
        sentence(err, err_size, "cannot begin a transaction in %s: %s", j->dir, mdb_strerror(rc));
        return jerr_of_mdb(rc);
    }
    if (!j->read_only && foreign_file(j, txn, err, err_size)) {
        mdb_txn_abort(txn);
        return BERTH_J_CORRUPT;
    }
    rc = dbi_open_all(j, txn);
    if (rc != 0) {
        mdb_txn_abort(txn);
        sentence(err, err_size, rc == MDB_NOTFOUND ? "data directory %s holds no journal%s"
                 : "cannot open the journal's databases in %s: %s", j->dir,
                 rc == MDB_NOTFOUND ? "" : mdb_strerror(rc));
        return jerr_of_mdb(rc);
    }
    berth_jerr jerr = meta_check(j, txn, err, err_size);
    if (jerr == BERTH_J_OK && !j->read_only && j->format != store_format_legacy) {
        jerr = trimmed_init(j, txn, err, err_size);
    }
    if (jerr != BERTH_J_OK) {
        mdb_txn_abort(txn);
        return jerr;
    }
    rc = mdb_txn_commit(txn);   /* keeps the handles for every later transaction */
    if (rc != 0) {
        sentence(err, err_size, "cannot commit the journal's setup in %s: %s", j->dir,
                 mdb_strerror(rc));
        return jerr_of_mdb(rc);
    }
    return BERTH_J_OK;
}

/* Last record of the journal as seen by txn: its seq and stored hash. A
 * record there that does not decode (or names another seq) is CORRUPT with
 * *seq still its key, so a reader can name it and read the records below
 * it (berth_journal_reader_head); hash is then zeros. */
static berth_jerr txn_head(lmdb_journal *j, MDB_txn *txn, uint64_t *seq,
                           uint8_t hash[BERTH_HASH_LEN], char *why, size_t why_size) {
    *seq = 0;
    memset(hash, 0, BERTH_HASH_LEN);
    MDB_cursor *cursor;
    int rc = mdb_cursor_open(txn, j->dbi_journal, &cursor);
    if (rc != 0) {
        return jerr_of_mdb(rc);
    }
    MDB_val key, val;
    rc = mdb_cursor_get(cursor, &key, &val, MDB_LAST);
    mdb_cursor_close(cursor);
    if (rc == MDB_NOTFOUND) {
        return BERTH_J_OK;
    }
    if (rc != 0) {
        return jerr_of_mdb(rc);
    }
    if (key.mv_size != sizeof(uint64_t)) {
        return BERTH_J_CORRUPT;
    }
    memcpy(seq, key.mv_data, sizeof(*seq));
    berth_record rec;
    berth_jerr err = berth_record_decode(val.mv_data, val.mv_size, &rec, why, why_size);
    if (err == BERTH_J_OK && rec.seq != *seq) {
        if (why != NULL && why_size > 0) {
            snprintf(why, why_size, "it says seq %llu", (unsigned long long)rec.seq);
        }
        err = BERTH_J_CORRUPT;
    }
    if (err == BERTH_J_OK) {
        memcpy(hash, rec.hash, BERTH_HASH_LEN);
    }
    return err;
}

static berth_jerr head_load(lmdb_journal *j, char *err, size_t err_size) {
    MDB_txn *txn;
    int rc = mdb_txn_begin(j->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        sentence(err, err_size, "cannot read the journal in %s: %s", j->dir, mdb_strerror(rc));
        return jerr_of_mdb(rc);
    }
    char why[256] = "";
    berth_jerr jerr = txn_head(j, txn, &j->head_seq, j->head_hash, why, sizeof(why));
    mdb_txn_abort(txn);
    if (jerr != BERTH_J_OK) {
        char seq[pid_text_len_max];
        snprintf(seq, sizeof(seq), "%llu", (unsigned long long)j->head_seq);
        sentence(err, err_size, "the record at the head of the journal (seq %s) does not"
                 " decode (%s); inspect it with `berth journal verify`", seq, why);
    }
    return jerr;
}

/* At open: a killed tool's slot survives while any other process (another
 * tool) kept the environment open. */
static berth_jerr readers_sweep_at_open(lmdb_journal *j, char *err, size_t err_size) {
    int rc = readers_sweep(j);
    if (rc != 0) {
        sentence(err, err_size, "cannot check the reader table in %s: %s", j->dir,
                 mdb_strerror(rc));
        return jerr_of_mdb(rc);
    }
    return BERTH_J_OK;
}

static berth_jerr sync_init(lmdb_journal *j) {
    if (pthread_mutex_init(&j->write_mutex, NULL) != 0) {
        return BERTH_J_NOMEM;
    }
    if (pthread_mutex_init(&j->head_mutex, NULL) != 0) {
        int rc = pthread_mutex_destroy(&j->write_mutex);
        assert(rc == 0);
        return BERTH_J_NOMEM;
    }
    if (!gate_init(&j->gate)) {
        int rc = pthread_mutex_destroy(&j->write_mutex);
        assert(rc == 0);
        rc = pthread_mutex_destroy(&j->head_mutex);
        assert(rc == 0);
        return BERTH_J_NOMEM;
    }
    j->sync_ready = true;
    return BERTH_J_OK;
}

static berth_jerr history_open(lmdb_journal *j, uint64_t map_initial, char *err,
                               size_t err_size);
static berth_jerr history_open_read_only(lmdb_journal *j, char *err, size_t err_size);
static berth_jerr rebuild_open(lmdb_journal *j, uint64_t map_initial, char *err,
                               size_t err_size);
static void rebuild_close(lmdb_journal *j);
static void folder_stop(lmdb_journal *j);

static berth_jerr meta_rewrite(lmdb_journal *j);
static void mutex_lock(pthread_mutex_t *mutex);
static void mutex_unlock(pthread_mutex_t *mutex);

/* A writer before us may have died with its last commit's meta page only
 * in the page cache (defer_meta_sync), or failed to sync it, in which case
 * the page cache may hold it marked clean and a sync would not write it.
 * So commit a fresh meta page over the same tree and sync it: the head's
 * data pages were synced by its own commit, so after this the head is
 * durable, and nothing this process shows can be undone by an OS crash. */
static berth_jerr sync_at_open(lmdb_journal *j, char *err, size_t err_size) {
    mutex_lock(&j->write_mutex);
    berth_jerr jerr = meta_rewrite(j);
    mutex_unlock(&j->write_mutex);
    int rc = jerr == BERTH_J_OK ? mdb_env_sync(j->env, 1) : 0;
    if (jerr != BERTH_J_OK || rc != 0) {
        sentence(err, err_size, "cannot sync the journal in %s: %s", j->dir,
                 rc != 0 ? mdb_strerror(rc) : berth_jerr_name(jerr));
        return jerr == BERTH_J_FULL ? jerr : BERTH_J_IO;
    }
    j->durable_seq = j->head_seq;
    return BERTH_J_OK;
}

static berth_jerr open_steps(lmdb_journal *j, const berth_journal_options *options,
                             char *err, size_t err_size) {
    berth_jerr jerr = sync_init(j);
    if (jerr != BERTH_J_OK) {
        sentence(err, err_size, "out of memory opening %s%s", j->dir, "");
        return jerr;
    }
    long page = sysconf(_SC_PAGESIZE);
    uint64_t unit = page > 0 ? (uint64_t)page : 4096;
    uint64_t map_max = options->map_size_max ? options->map_size_max : MAP_SIZE_MAX_DEFAULT;
    uint64_t map_initial = options->map_size_initial ? options->map_size_initial
                                                    : MAP_SIZE_INITIAL_DEFAULT;
    j->map_size_max = round_up(map_max, unit);
    map_initial = round_up(map_initial, unit);
    if (map_initial > j->map_size_max) {
        map_initial = j->map_size_max;
    }
    jerr = dir_prepare(j, err, err_size);
    if (jerr == BERTH_J_OK) jerr = env_open(j, map_initial, err, err_size);
    if (jerr == BERTH_J_OK) jerr = dbs_open(j, err, err_size);
    if (jerr == BERTH_J_OK && !j->read_only) jerr = readers_sweep_at_open(j, err, err_size);
    if (jerr == BERTH_J_OK && !j->read_only) jerr = head_load(j, err, err_size);
    if (jerr == BERTH_J_OK && !j->read_only) jerr = sync_at_open(j, err, err_size);
    if (jerr == BERTH_J_OK && !j->read_only) {
        j->scratch = malloc(BERTH_RECORD_BYTES_MAX);
        if (j->scratch == NULL) {
            sentence(err, err_size, "out of memory opening %s%s", j->dir, "");
            jerr = BERTH_J_NOMEM;
        }
    }
    if (jerr == BERTH_J_OK && !j->read_only && !j->rebuild) {
        jerr = history_open(j, map_initial, err, err_size);
    }
    if (jerr == BERTH_J_OK && j->rebuild) jerr = rebuild_open(j, map_initial, err, err_size);
    if (jerr == BERTH_J_OK && j->read_only) jerr = history_open_read_only(j, err, err_size);
    return jerr;
}

static void lmdb_close(berth_journal *base) {
    lmdb_journal *j = journal_of(base);
    folder_stop(j);   /* before either environment closes */
    if (j->henv != NULL) {
        mdb_env_close(j->henv);   /* every fold committed synced: nothing to sync */
        j->henv = NULL;
    }
    rebuild_close(j);
    if (j->hgate_ready) {
        gate_destroy(&j->hgate);
    }
    if (j->env != NULL) {
        assert(!j->sync_ready || j->gate.readers == 0);
        if (j->env_open && j->defer_meta_sync && !atomic_load(&j->broken) &&
            !atomic_load(&j->sync_failed)) {
            (void)mdb_env_sync(j->env, 1);   /* best effort: the next open syncs again */
        }
        mdb_env_close(j->env);   /* also when mdb_env_open failed */
    }
    if (j->lock_fd >= 0) {
        int rc = close(j->lock_fd);   /* releases the flock */
        assert(rc == 0);
    }
    if (j->sync_ready) {
        gate_destroy(&j->gate);
        int rc = pthread_mutex_destroy(&j->write_mutex);
        assert(rc == 0);
        rc = pthread_mutex_destroy(&j->head_mutex);
        assert(rc == 0);
    }
    free(j->scratch);
    free(j);
}

berth_jerr berth_journal_open_lmdb(berth_journal **out, const char *dir,
                                   const berth_journal_options *options,
                                   char *err, size_t err_size) {
    assert(out != NULL && dir != NULL);
    *out = NULL;
    if (err != NULL && err_size > 0) {
        err[0] = '\0';
    }
    size_t dir_len = strlen(dir);
    if (dir_len == 0 || dir_len > dir_len_max) {
        sentence(err, err_size, "data directory path is empty or too long%s%s", "", "");
        return BERTH_J_INVALID;
    }
    berth_journal_options none = { 0 };
    const berth_journal_options *opts = options != NULL ? options : &none;
    if (opts->history_fold_records > BERTH_HISTORY_FOLD_RECORDS_MAX) {
        char most[pid_text_len_max];
        int n = snprintf(most, sizeof most, "%u", (unsigned)BERTH_HISTORY_FOLD_RECORDS_MAX);
        assert(n > 0 && (size_t)n < sizeof most);
        sentence(err, err_size, "the history_fold_records option is over its maximum of %s%s",
                 most, " records");
        return BERTH_J_INVALID;
    }
    lmdb_journal *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        sentence(err, err_size, "out of memory opening %s%s", dir, "");
        return BERTH_J_NOMEM;
    }
    j->base.ops = &lmdb_ops;
    j->lock_fd = -1;
    j->read_only = opts->read_only;
    j->rebuild = opts->history_rebuild && !opts->read_only;
    j->rebuild_batch_records = opts->history_fold_records;
    j->defer_meta_sync = opts->defer_meta_sync && !opts->read_only;
    j->history_fold_records = opts->history_fold_records != 0 ? opts->history_fold_records
                                                              : BERTH_HISTORY_FOLD_RECORDS_DEFAULT;
    memcpy(j->dir, dir, dir_len + 1);
    berth_jerr jerr = open_steps(j, opts, err, err_size);
    if (jerr != BERTH_J_OK) {
        lmdb_close(&j->base);
        return jerr;
    }
    *out = &j->base;
    return BERTH_J_OK;
}

/* ---- head and size --------------------------------------------------- */

static void mutex_lock(pthread_mutex_t *mutex) {
    int rc = pthread_mutex_lock(mutex);
    assert(rc == 0);
}

static void mutex_unlock(pthread_mutex_t *mutex) {
    int rc = pthread_mutex_unlock(mutex);
    assert(rc == 0);
}

static berth_jerr lmdb_reader_open(berth_journal *base, berth_journal_reader **out);
static void lmdb_reader_close(berth_journal_reader *base);

static berth_jerr lmdb_head(berth_journal *base, uint64_t *seq, uint8_t hash[BERTH_HASH_LEN]) {
    lmdb_journal *j = journal_of(base);
    if (!j->read_only) {
        mutex_lock(&j->head_mutex);
        *seq = j->head_seq;
        memcpy(hash, j->head_hash, BERTH_HASH_LEN);
        mutex_unlock(&j->head_mutex);
        return BERTH_J_OK;
    }
    /* Read-only: another process appends, so ask a fresh read view. */
    berth_journal_reader *reader;
    berth_jerr err = lmdb_reader_open(base, &reader);
    if (err != BERTH_J_OK) {
        return err;
    }
    err = txn_head(j, reader_of(reader)->txn, seq, hash, NULL, 0);
    lmdb_reader_close(reader);
    return err;
}

static bool hist_dir_path(char *out, const lmdb_journal *j);

/* Both environments' data files; the history one may be absent (a legacy
 * store, or a writer that has not created it yet): 0 bytes. */
static berth_jerr lmdb_size(berth_journal *base, berth_journal_sizes *out) {
    lmdb_journal *j = journal_of(base);
    char path[path_len_max];
    char hpath[path_len_max];
    struct stat st;
    if (!path_join(path, j->dir, "data.mdb") || stat(path, &st) != 0) {
        return BERTH_J_IO;
    }
    uint64_t journal_bytes = (uint64_t)st.st_size;
    if (!hist_dir_path(hpath, j) || !path_join(path, hpath, "data.mdb")) {
        return BERTH_J_IO;
    }
    if (stat(path, &st) == 0) {
        out->history_disk_bytes = (uint64_t)st.st_size;
    } else if (errno != ENOENT) {
        return BERTH_J_IO;
    }
    out->disk_bytes = journal_bytes + out->history_disk_bytes;
    if (atomic_load(&j->broken)) {
        return BERTH_J_IO;
    }
    gate_reader_enter(&j->gate);   /* the map size is stable while we look */
    out->map_bytes = map_use_now(j).map_bytes;
    gate_reader_leave(&j->gate);
    if (j->henv != NULL && !atomic_load(&j->hbroken)) {
        gate_reader_enter(&j->hgate);
        out->history_map_bytes = map_use_of(j->henv, j->hpage_size).map_bytes;
        gate_reader_leave(&j->hgate);
    }
    return BERTH_J_OK;
}

/* ---- writes ---------------------------------------------------------- */


_Static_assert(BERTH_NAME_LEN_MAX <= 255, "touchlog names carry a 1-byte length");

static size_t touch_pack_one(uint8_t *out, size_t at, char kind, berth_str name) {
    assert(name.len > 0 && name.len <= BERTH_NAME_LEN_MAX && name.ptr != NULL);
    assert(at + 2 + name.len <= touchlog_value_len_max);
    out[at] = (uint8_t)kind;
    out[at + 1] = (uint8_t)name.len;
    memcpy(out + at + 2, name.ptr, name.len);
    return at + 2 + name.len;
}

/* One record's names packed for touchlog; 0 bytes when it touched none. */
static berth_jerr touch_pack(const berth_touched *t, uint8_t *out, size_t *len) {
    if (!berth_touched_valid(t)) {
        return BERTH_J_INVALID;
    }
    size_t at = 0;
    if (t->instance.len > 0) {
        at = touch_pack_one(out, at, BERTH_HISTORY_INSTANCE, t->instance);
    }
    for (uint32_t i = 0; i < t->worker_count; i++) {
        at = touch_pack_one(out, at, BERTH_HISTORY_WORKER, t->workers[i]);
    }
    *len = at;
    return BERTH_J_OK;
}

/* The sequential half of HISTORY: one touchlog entry per record that
 * touched a name (the fold moves it into history later), put through the
 * batch's touchlog cursor, which stays on the last leaf. */
static berth_jerr touchlog_put(MDB_cursor *cursor, const berth_touched *t, uint64_t seq,
                               bool *map_full) {
    uint8_t packed[touchlog_value_len_max];
    size_t len = 0;
    berth_jerr err = touch_pack(t, packed, &len);
    if (err != BERTH_J_OK || len == 0) {
        return err;
    }
    MDB_val key = { sizeof(seq), &seq };
    MDB_val val = { len, packed };
    int rc = mdb_cursor_put(cursor, &key, &val, MDB_APPEND);
    if (rc != 0) {
        return rc == MDB_KEYEXIST ? BERTH_J_CORRUPT : put_err(rc, map_full);
    }
    return BERTH_J_OK;
}

/* Walk one packed touchlog value: the next (kind, name) from *at. False at
 * the end; *bad when the bytes do not parse. */
static bool touch_next(const MDB_val *val, size_t *at, char *kind, berth_str *name, bool *bad) {
    const uint8_t *bytes = val->mv_data;
    if (*at >= val->mv_size) {
        return false;
    }
    if (val->mv_size - *at < 2) {
        *bad = true;
        return false;
    }
    size_t len = bytes[*at + 1];
    if (len == 0 || val->mv_size - *at - 2 < len) {
        *bad = true;
        return false;
    }
    *kind = (char)bytes[*at];
    *name = berth_str_make((const char *)bytes + *at + 2, (uint32_t)len);
    *at += 2 + len;
    return true;
}

/* Whether rec's actor is the one the batch's record before had (the same
 * bytes), which berth_record_encoded_len already found valid: a batch's
 * records mostly share one writer's name, and its scan was 6% of a batch
 * of 1024's CPU samples (perf). A byte loop, not memcmp: names are short
 * and the call cost more than the compare (2% of the samples). */
static bool actor_same(const berth_record *rec, const berth_record *before) {
    if (before == NULL || rec->actor.len != before->actor.len) {
        return false;
    }
    if (rec->actor.ptr == before->actor.ptr) {
        return true;
    }
    uint8_t differ = 0;
    for (uint32_t i = 0; i < rec->actor.len; i++) {
        differ |= (uint8_t)(rec->actor.ptr[i] ^ before->actor.ptr[i]);
    }
    return differ == 0;
}

/* The journal's cursor, and the touch log's when touched names come. */
static berth_jerr batch_cursors_open(lmdb_journal *j, MDB_txn *txn, bool touched,
                                     MDB_cursor **cursor, MDB_cursor **tcursor, bool *map_full) {
    *tcursor = NULL;
    int rc = mdb_cursor_open(txn, j->dbi_journal, cursor);
    if (rc != 0) {
        return put_err(rc, map_full);
    }
    if (touched) {
        rc = mdb_cursor_open(txn, j->dbi_touchlog, tcursor);
        if (rc != 0) {
            mdb_cursor_close(*cursor);
            return put_err(rc, map_full);
        }
    }
    return BERTH_J_OK;
}

static void batch_cursors_close(MDB_cursor *cursor, MDB_cursor *tcursor) {
    if (tcursor != NULL) {
        mdb_cursor_close(tcursor);
    }
    mdb_cursor_close(cursor);
}

/* Encode and put every record of the batch, chaining from the head,
 * through one cursor (and its touchlog entries through another): mdb_put
 * opens a cursor per call and walks from the root to the last leaf each
 * time, while a kept cursor stays on that leaf. Each record is encoded in
 * place: its exact length first, then MDB_RESERVE makes room for it in the
 * leaf and the encoder writes and hashes it there (no copy from a scratch
 * buffer; LMDB asks that the room be filled before the next put, and it
 * is). */
static berth_jerr batch_put(lmdb_journal *j, MDB_txn *txn, berth_record *records,
                            const berth_touched *touched, size_t n, bool *map_full) {
    MDB_cursor *cursor, *tcursor;
    berth_jerr open_err = batch_cursors_open(j, txn, touched != NULL, &cursor, &tcursor, map_full);
    if (open_err != BERTH_J_OK) {
        return open_err;
    }
    int rc;
    const uint8_t *prev = j->head_hash;
    uint64_t total_bytes = 0;
    berth_jerr err = BERTH_J_OK;
    for (size_t i = 0; i < n && err == BERTH_J_OK; i++) {
        berth_record *rec = &records[i];
        assert(rec->seq == j->head_seq + 1 + i);
        rec->version = BERTH_RECORD_VERSION;
        memcpy(rec->prev_hash, prev, BERTH_HASH_LEN);
        size_t len = berth_record_encoded_len(rec, actor_same(rec, i > 0 ? &records[i - 1] : NULL));
        total_bytes += len;
        if (len == 0 || total_bytes > BERTH_BATCH_BYTES_MAX) {
            err = BERTH_J_INVALID;
            break;
        }
        MDB_val key = { sizeof(rec->seq), &rec->seq };
        MDB_val val = { len, NULL };
        rc = mdb_cursor_put(cursor, &key, &val, MDB_APPEND | MDB_RESERVE);
        if (rc != 0) {
            err = rc == MDB_KEYEXIST ? BERTH_J_CORRUPT : put_err(rc, map_full);
        } else if (!berth_record_encode_sized(rec, val.mv_data, len)) {
            assert(!"encoded_len and encode disagree");
            err = BERTH_J_INVALID;   /* the transaction is aborted: nothing half-written stays */
        }
        if (err == BERTH_J_OK && tcursor != NULL) {
            err = touchlog_put(tcursor, &touched[i], rec->seq, map_full);
        }
        prev = rec->hash;
    }
    batch_cursors_close(cursor, tcursor);
    return err;
}

/* batch_put for records already encoded: each one's bytes copied into
 * the room MDB_RESERVE makes, then checked there, on the bytes LMDB will
 * keep: its shape, its seq and its prev_hash link (INVALID: the caller's
 * batch does not follow the head), and its hash, the SHA-256 of its body
 * (CORRUPT). Either aborts the transaction: nothing is written. That is
 * one SHA-256 a record, as the other road's encoding costs; this road
 * saves the caller's decode and the encoding. hashes_known (the appender's
 * road: this process's own berth_record_encode computed each hash from
 * these bytes a moment before) skips the SHA-256, not the shape, seq and
 * link checks. last_hash gets the last stored record's hash. */
static berth_jerr batch_put_encoded(lmdb_journal *j, MDB_txn *txn, const berth_encoded *records,
                                    const berth_touched *touched, size_t n, bool hashes_known,
                                    uint8_t last_hash[BERTH_HASH_LEN], bool *map_full) {
    MDB_cursor *cursor, *tcursor;
    berth_jerr err = batch_cursors_open(j, txn, touched != NULL, &cursor, &tcursor, map_full);
    if (err != BERTH_J_OK) {
        return err;
    }
    uint8_t chain[BERTH_HASH_LEN];
    memcpy(chain, j->head_hash, BERTH_HASH_LEN);
    uint64_t total_bytes = 0;
    for (size_t i = 0; i < n && err == BERTH_J_OK; i++) {
        uint64_t seq = j->head_seq + 1 + i;
        size_t len = records[i].len;
        total_bytes += len;
        if (records[i].bytes == NULL || len > BERTH_RECORD_BYTES_MAX ||
            total_bytes > BERTH_BATCH_BYTES_MAX) {
            err = BERTH_J_INVALID;
            break;
        }
        MDB_val key = { sizeof(seq), &seq };
        MDB_val val = { len, NULL };
        int rc = mdb_cursor_put(cursor, &key, &val, MDB_APPEND | MDB_RESERVE);
        if (rc != 0) {
            err = rc == MDB_KEYEXIST ? BERTH_J_CORRUPT : put_err(rc, map_full);
            break;
        }
        memcpy(val.mv_data, records[i].bytes, len);
        uint64_t stored_seq = 0;
        const uint8_t *prev = NULL, *hash = NULL;
        if (!berth_record_peek_chain(val.mv_data, len, &stored_seq, &prev, &hash) ||
            stored_seq != seq || memcmp(prev, chain, BERTH_HASH_LEN) != 0) {
            err = BERTH_J_INVALID;
        } else if (!hashes_known && !berth_record_hash_ok(val.mv_data, len)) {
            err = BERTH_J_CORRUPT;
        } else {
            memcpy(chain, hash, BERTH_HASH_LEN);
            if (tcursor != NULL) {
                err = touchlog_put(tcursor, &touched[i], seq, map_full);
            }
        }
    }
    memcpy(last_hash, chain, BERTH_HASH_LEN);
    batch_cursors_close(cursor, tcursor);
    return err;
}

/* One write transaction around body(); *map_full when LMDB ran out of map,
 * in which case nothing was written and the caller may grow and retry. */
typedef berth_jerr (*txn_body)(lmdb_journal *j, MDB_txn *txn, void *arg, bool *map_full);

/* LMDB reports a short pwritev as EIO, and a filling disk writes short
 * before it refuses outright; so an I/O error while the filesystem has less
 * room than the write needs is a full disk, which the caller can cure. */
static berth_jerr disk_verdict(lmdb_journal *j, berth_jerr err, uint64_t need_bytes) {
    if (err != BERTH_J_IO) {
        return err;
    }
    struct statvfs fs;
    if (statvfs(j->dir, &fs) != 0) {
        return err;
    }
    uint64_t avail = (uint64_t)fs.f_bavail * fs.f_frsize;
    return avail < need_bytes + grow_slack_bytes ? BERTH_J_FULL : err;
}

static berth_jerr durable_after_commit(lmdb_journal *j, int rc, berth_jerr err);

static berth_jerr write_txn(lmdb_journal *j, txn_body body, void *arg, uint64_t need_bytes,
                            bool *map_full) {
    *map_full = false;
    if (atomic_load(&j->sync_failed)) {
        return BERTH_J_IO;
    }
    MDB_txn *txn;
    int rc = mdb_txn_begin(j->env, NULL, 0, &txn);
    if (rc != 0) {
        *map_full = rc == MDB_MAP_FULL;
        return jerr_of_mdb(rc);
    }
    berth_jerr err = body(j, txn, arg, map_full);   /* puts may spill pages to disk */
    if (err != BERTH_J_OK) {
        mdb_txn_abort(txn);
        return disk_verdict(j, err, need_bytes);
    }
    rc = mdb_txn_commit(txn);   /* frees txn whatever it returns */
    if (rc != 0) {
        *map_full = rc == MDB_MAP_FULL;
        err = disk_verdict(j, jerr_of_mdb(rc), need_bytes);
    }
    return durable_after_commit(j, rc, err);
}

/* Run body in a write transaction, growing the map only on MDB_MAP_FULL.
 * Caller holds write_mutex. */
static berth_jerr write_growing_if_full(lmdb_journal *j, txn_body body, void *arg,
                                        uint64_t need_bytes) {
    for (uint32_t attempt = 0; attempt < grow_attempts_max; attempt++) {
        bool map_full = false;
        berth_jerr err = write_txn(j, body, arg, need_bytes, &map_full);
        if (!map_full) {
            return err;
        }
        err = map_grow(j, need_bytes, grow_wait_ms_max);
        if (err != BERTH_J_OK) {
            return err;
        }
    }
    return BERTH_J_FULL;
}

/* Run body in a write transaction, growing the map early when over half
 * used and on MDB_MAP_FULL. Caller holds write_mutex. */
static berth_jerr write_with_growth(lmdb_journal *j, txn_body body, void *arg,
                                    uint64_t need_bytes) {
    map_grow_early(j, need_bytes);
    return write_growing_if_full(j, body, arg, need_bytes);
}

/* ---- HISTORY fold ---------------------------------------------------- */

/* fold_item, and the order a fold puts them in: fold_sort.c. */

/* Parse one touchlog entry's names onto items; false (nothing added) when
 * they would pass cap. */
static berth_jerr fold_gather_entry(const MDB_val *key, const MDB_val *val, fold_item *items,
                                    size_t *count, size_t cap, bool *fits) {
    if (key->mv_size != sizeof(uint64_t)) {
        return BERTH_J_CORRUPT;
    }
    uint64_t seq;
    memcpy(&seq, key->mv_data, sizeof(seq));
    size_t n = *count;
    size_t at = 0;
    char kind;
    berth_str name;
    bool bad = false;
    *fits = true;
    while (touch_next(val, &at, &kind, &name, &bad)) {
        if (n == cap) {
            *fits = false;
            return BERTH_J_OK;
        }
        items[n].name = (const uint8_t *)name.ptr;
        items[n].prefix = fold_prefix(kind, items[n].name, name.len);
        items[n].len = (uint8_t)name.len;
        items[n].kind = kind;
        items[n].seq = seq;
        n++;
    }
    if (bad) {
        return BERTH_J_CORRUPT;
    }
    *count = n;
    return BERTH_J_OK;
}

/* ---- the append's trim of the touch log --------------------------------- */

/* Inside an append's transaction: delete touchlog entries the history
 * environment already holds durably (seq <= hist_folded), oldest first, at
 * most trim_entries_per_append_min or twice the batch's records, and store
 * how far the touch log is now trimmed. No extra commit and no extra sync: the append's own. */
static berth_jerr touchlog_trim(lmdb_journal *j, MDB_txn *txn, size_t batch_records,
                                uint64_t *trimmed_to, bool *map_full) {
    uint64_t target = atomic_load(&j->hist_folded);
    *trimmed_to = j->trimmed_seq;
    if (target <= j->trimmed_seq) {
        return BERTH_J_OK;
    }
    MDB_cursor *cursor;
    int rc = mdb_cursor_open(txn, j->dbi_touchlog, &cursor);
    if (rc != 0) {
        return jerr_of_mdb(rc);
    }
    MDB_val key, val;
    uint64_t reached = target;   /* every entry up to here is gone */
    uint64_t deleted = 0;
    uint64_t most = 2 * (uint64_t)batch_records;
    if (most < trim_entries_per_append_min) {
        most = trim_entries_per_append_min;
    }
    rc = mdb_cursor_get(cursor, &key, &val, MDB_FIRST);
    while (rc == 0) {
        uint64_t seq;
        if (key.mv_size != sizeof(seq)) {
            rc = MDB_CORRUPTED;
            break;
        }
        memcpy(&seq, key.mv_data, sizeof(seq));
        if (seq > target) {
            break;
        }
        if (deleted == most) {
            reached = seq - 1;   /* seq itself stays: the next append goes on */
            break;
        }
        rc = mdb_cursor_del(cursor, 0);
        deleted++;
        /* after a delete the cursor is on the next entry already, and
         * MDB_NEXT returns that one: no walk from the root per entry */
        if (rc == 0) rc = mdb_cursor_get(cursor, &key, &val, MDB_NEXT);
    }
    mdb_cursor_close(cursor);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        return put_err(rc, map_full);
    }
    assert(reached >= j->trimmed_seq && reached <= target);
    berth_jerr err = meta_u64_put(txn, j->dbi_meta, &trimmed_key, reached, map_full);
    if (err == BERTH_J_OK) {
        *trimmed_to = reached;
    }
    return err;
}

/* ---- the history environment --------------------------------------------- */

/* The history environment's directory: DIR/history, or for an open that
 * rebuilds it, the new one beside it. */
static bool hist_dir_path(char *out, const lmdb_journal *j) {
    return path_join(out, j->dir, j->rebuild ? "history.rebuild" : "history");
}

/* After a sentence saying why the history index cannot be used: the
 * command that builds it again from the journal. */
static void hist_rebuild_hint(const lmdb_journal *j, char *err, size_t err_size) {
    if (err == NULL || err_size == 0) {
        return;
    }
    size_t len = strnlen(err, err_size);
    if (len + 1 < err_size) {
        snprintf(err + len, err_size - len, "; rebuild it from the journal with `berth history"
                 " rebuild --data %s` while no berthd runs on it", j->dir);
    }
}

/* The history environment's layout keys (its meta db): "layout" is
 * hist_layout_runs once folds write runs; "legacy_end" is the last record
 * whose names are in the history db, the layout before runs (duplicates
 * per name). An index made before runs has neither: all it folded is in
 * the history db. Why a store of format 3 and these keys come in this
 * order, see history_upgrade. */
static const MDB_val layout_key = { 6, (void *)"layout" };
static const MDB_val legacy_end_key = { 10, (void *)"legacy_end" };
static const MDB_val next_run_id_key = { 11, (void *)"next_run_id" };
static const MDB_val *const hist_layout_keys[] = { &layout_key, &legacy_end_key,
                                                   &next_run_id_key };

/* Open runs and runlist. A read-only open of an index made before runs
 * finds neither: it reads the history db alone (hist_legacy_end). */
static int hist_runs_dbs_open(lmdb_journal *j, MDB_txn *txn, unsigned int create) {
    j->hruns.meta = j->hdbi_meta;
    int rc = mdb_dbi_open(txn, "runlist", create, &j->hruns.runlist);
    for (uint32_t level = 0; level < hist_run_levels && rc == 0; level++) {
        rc = mdb_dbi_open(txn, hist_runs_db_names[level], create, &j->hruns.runs[level]);
    }
    j->hruns_open = rc == 0;
    return rc == MDB_NOTFOUND && j->read_only ? 0 : rc;
}

/* In a write transaction of a format 3 store's index: one made before runs
 * keeps what it holds in the history db, as records 1..folded, and folds
 * from now on write runs (nothing is rewritten: a query reads both,
 * history_index). No-op once set. */
static berth_jerr hist_layout_set(lmdb_journal *j, MDB_txn *txn, uint64_t folded,
                                  bool *map_full) {
    assert(j->format == store_format);
    uint64_t layout = 0;
    bool present = false;
    berth_jerr err = meta_u64_get(txn, j->hdbi_meta, &layout_key, &layout, &present);
    if (err != BERTH_J_OK || (present && layout == hist_layout_runs)) {
        return err;
    }
    if (present) {
        return BERTH_J_CORRUPT;   /* a layout this berth does not know */
    }
    err = meta_u64_put(txn, j->hdbi_meta, &legacy_end_key, folded, map_full);
    if (err == BERTH_J_OK) err = meta_u64_put(txn, j->hdbi_meta, &layout_key, hist_layout_runs,
                                              map_full);
    return err;
}

/* The last record whose names are in the history db (the layout before
 * runs), as htxn sees it; the rest of what is folded is in runs. */
static berth_jerr hist_legacy_end(lmdb_journal *j, MDB_txn *htxn, uint64_t folded,
                                  uint64_t *legacy_end) {
    uint64_t layout = 0;
    bool present = false;
    berth_jerr err = meta_u64_get(htxn, j->hdbi_meta, &layout_key, &layout, &present);
    if (err != BERTH_J_OK) {
        return err;
    }
    if (!present) {
        *legacy_end = folded;   /* made before runs, and not written since */
        return BERTH_J_OK;
    }
    if (layout != hist_layout_runs) {
        return BERTH_J_CORRUPT;
    }
    err = meta_u64_get(htxn, j->hdbi_meta, &legacy_end_key, legacy_end, &present);
    if (err == BERTH_J_OK && (!present || *legacy_end > folded)) {
        err = BERTH_J_CORRUPT;
    }
    if (err == BERTH_J_OK && *legacy_end < folded && !j->hruns_open) {
        /* a writer upgraded the index after this read-only open looked */
        if (!atomic_exchange(&j->upgrade_told, true)) {
            fprintf(stderr, "berth journal: the history index in %s/history was upgraded"
                    " (runs) while this reader had it open; reopen it to read HISTORY\n", j->dir);
        }
        err = BERTH_J_IO;
    }
    return err;
}

/* Grow henv's map: the folder only (its one writer), holding no henv
 * transaction. wait_ms 0: only when no history reader is open now. */
static berth_jerr hist_map_grow(lmdb_journal *j, uint64_t need_bytes, uint32_t wait_ms) {
    return env_map_grow(j->henv, j->hpage_size, j->map_size_max, &j->hgate, &j->hbroken,
                        need_bytes, wait_ms);
}

/* A read transaction on henv, through its gate; a read-only process adopts
 * the writer's larger map. Close with hist_read_end. */
static berth_jerr hist_read_begin(lmdb_journal *j, MDB_txn **txn) {
    for (uint32_t attempt = 0; attempt < remap_attempts_max; attempt++) {
        gate_reader_enter(&j->hgate);
        int rc = atomic_load(&j->hbroken) ? EIO : mdb_txn_begin(j->henv, NULL, MDB_RDONLY, txn);
        if (rc == 0) {
            return BERTH_J_OK;
        }
        gate_reader_leave(&j->hgate);
        if (rc != MDB_MAP_RESIZED) {
            berth_jerr err = jerr_of_mdb(rc);
            return err == BERTH_J_NOTFOUND ? BERTH_J_IO : err;
        }
        if (!gate_resize_begin(&j->hgate, grow_wait_ms_max)) {
            return BERTH_J_IO;
        }
        rc = mdb_env_set_mapsize(j->henv, 0);
        if (rc != 0) {
            atomic_store(&j->hbroken, true);
        }
        gate_resize_end(&j->hgate);
    }
    return BERTH_J_IO;
}

static void hist_read_end(lmdb_journal *j, MDB_txn *txn) {
    mdb_txn_abort(txn);
    gate_reader_leave(&j->hgate);
}

/* hist_env_open failed with rc: j->henv is closed and NULL again, so no
 * later query uses an environment that never opened. NOTFOUND is left to the
 * file's stat check (a read-only open then treats it as absent): a file
 * gone in between is IO. */
static berth_jerr hist_env_failed(lmdb_journal *j, int rc) {
    if (j->henv != NULL) {
        mdb_env_close(j->henv);
        j->henv = NULL;
    }
    berth_jerr jerr = jerr_of_mdb(rc);
    return jerr == BERTH_J_NOTFOUND ? BERTH_J_IO : jerr;
}

/* Which journal a history index belongs to: "journal_first" in its meta
 * holds the hash of that journal's record 1, written by the index's first
 * fold (the index is made while the journal is empty), or by the first
 * writable open that finds the journal holding one (an index from before
 * session 14 gets it then). An index copied in from another data directory may fit
 * this journal's seqs and still name other records: HISTORY would answer
 * from it, wrong and without a word. A mismatch is CORRUPT (the rebuild
 * cures it). */
static const MDB_val journal_first_key = { 13, (void *)"journal_first" };

static berth_jerr journal_first_hash_in(lmdb_journal *j, MDB_txn *txn, uint8_t hash[BERTH_HASH_LEN],
                                        bool *present) {
    *present = false;
    uint64_t seq = 1;
    MDB_val key = { sizeof(seq), &seq };
    MDB_val val;
    int rc = mdb_get(txn, j->dbi_journal, &key, &val);
    berth_jerr jerr = BERTH_J_OK;
    if (rc == 0) {
        uint64_t got = 0;
        const uint8_t *prev = NULL, *stored = NULL;
        /* A record 1 that cannot be read is verify's to report; the
         * binding is then left unchecked. */
        *present = berth_record_peek_chain(val.mv_data, val.mv_size, &got, &prev, &stored) && got == 1;
        if (*present) {
            memcpy(hash, stored, BERTH_HASH_LEN);
        }
    } else if (rc != MDB_NOTFOUND) {
        jerr = jerr_of_mdb(rc);
    }
    return jerr;
}

/* At open only: no other thread of this process uses the map yet. */
static berth_jerr journal_first_hash(lmdb_journal *j, uint8_t hash[BERTH_HASH_LEN], bool *present) {
    *present = false;
    MDB_txn *txn;
    int rc = mdb_txn_begin(j->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        return jerr_of_mdb(rc);
    }
    berth_jerr jerr = journal_first_hash_in(j, txn, hash, present);
    mdb_txn_abort(txn);
    return jerr;
}

/* check: compare a binding already there (at open); a fold only writes a
 * missing one (the index is first made while the journal is empty, so its
 * first fold binds it). */
static berth_jerr hist_journal_bind(lmdb_journal *j, MDB_txn *htxn, bool check, bool *map_full) {
    MDB_val key = journal_first_key;
    MDB_val val;
    int rc = mdb_get(htxn, j->hdbi_meta, &key, &val);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        return jerr_of_mdb(rc);
    }
    bool bound = rc == 0;
    if ((bound && !check) || (!bound && j->read_only)) {
        return BERTH_J_OK;
    }
    uint8_t first[BERTH_HASH_LEN];
    bool have_first = false;
    berth_jerr jerr = BERTH_J_OK;
    if (check) {
        jerr = journal_first_hash(j, first, &have_first);   /* at open */
        if (jerr != BERTH_J_OK && j->read_only) {
            return BERTH_J_OK;   /* a writer grew the map meanwhile, say: the check is skipped */
        }
    } else {
        have_first = j->fold_first_known;   /* a fold: its gather read it */
        memcpy(first, j->fold_first_hash, BERTH_HASH_LEN);
    }
    if (jerr != BERTH_J_OK || !have_first) {
        return jerr;
    }
    if (bound) {
        bool same = val.mv_size == BERTH_HASH_LEN && memcmp(val.mv_data, first, BERTH_HASH_LEN) == 0;
        return same ? BERTH_J_OK : BERTH_J_CORRUPT;
    }
    val = (MDB_val){ BERTH_HASH_LEN, first };
    rc = mdb_put(htxn, j->hdbi_meta, &key, &val, 0);
    return rc == 0 ? BERTH_J_OK : put_err(rc, map_full);
}

/* Open DIR/history (created when writable). Writable: its setup commit
 * rewrites folded_seq with the value it holds (0 when new), so, as
 * sync_at_open does for the main environment, a fresh meta page is synced
 * before this process trusts what the page cache shows. NOTFOUND (no
 * sentence) when a read-only open finds no history environment, or an
 * empty data file. */
static berth_jerr hist_env_open(lmdb_journal *j, uint64_t map_initial, char *err,
                                size_t err_size) {
    char path[path_len_max];
    char file[path_len_max];
    if (!hist_dir_path(path, j) || !path_join(file, path, "data.mdb")) {
        sentence(err, err_size, "data directory path %s is too long%s", j->dir, "");
        return BERTH_J_INVALID;
    }
    struct stat st;
    if (j->read_only && (stat(file, &st) != 0 || st.st_size == 0)) {
        /* An empty file is no environment (LMDB cannot open it read-only):
         * a writer that died creating it, or a damaged one. */
        return BERTH_J_NOTFOUND;
    }
    if (!j->read_only && mkdir(path, 0700) != 0 && errno != EEXIST) {
        sentence(err, err_size, "cannot create the history index directory %s: %s", path,
                 strerror(errno));
        return BERTH_J_IO;
    }
    berth_jerr checked = lmdb_meta_check(file, "the history index", err, err_size);
    if (checked != BERTH_J_OK) {
        return checked;
    }
    if (!gate_init(&j->hgate)) {
        sentence(err, err_size, "out of memory opening %s%s", path, "");
        return BERTH_J_NOMEM;
    }
    j->hgate_ready = true;
    int rc = mdb_env_create(&j->henv);
    if (rc != 0) {
        j->henv = NULL;
    }
    if (rc == 0) rc = mdb_env_set_maxreaders(j->henv, readers_max);
    if (rc == 0) rc = mdb_env_set_maxdbs(j->henv, hist_dbs_max);
    if (rc == 0 && !j->read_only) rc = mdb_env_set_mapsize(j->henv, (size_t)map_initial);
    if (rc == 0) rc = mdb_env_open(j->henv, path, MDB_NOTLS | (j->read_only ? MDB_RDONLY : 0), 0600);
    MDB_stat est;
    if (rc == 0) rc = mdb_env_stat(j->henv, &est);
    if (rc != 0) {
        sentence(err, err_size, "cannot open the history index in %s: %s", path, mdb_strerror(rc));
        return hist_env_failed(j, rc);
    }
    j->hpage_size = est.ms_psize;
    /* As file_size_check: a cut file would fault on its first missing page. */
    MDB_envinfo info;
    rc = mdb_env_info(j->henv, &info);
    assert(rc == 0);
    uint64_t need = ((uint64_t)info.me_last_pgno + 1) * j->hpage_size;
    if (stat(file, &st) != 0 || (uint64_t)st.st_size < need) {
        sentence(err, err_size, "the history index %s is truncated or unreadable%s", file, "");
        return hist_env_failed(j, MDB_CORRUPTED);
    }
    if (!j->read_only) {
        int dead = 0;
        rc = mdb_reader_check(j->henv, &dead);   /* slots of killed readers pin pages */
        (void)rc;   /* a failed sweep only leaves pages pinned a while longer */
        /* LMDB maps an existing file bigger than map_initial at exactly its
         * used pages, leaving the setup commit below no room (MDB_MAP_FULL):
         * give it the room a fold would (no reader of ours is open yet). */
        uint64_t want = round_up(2 * need + grow_slack_bytes, j->hpage_size);
        if (want > j->map_size_max) {
            want = j->map_size_max;
        }
        if (want > info.me_mapsize) {
            rc = mdb_env_set_mapsize(j->henv, (size_t)want);
            if (rc != 0) {
                sentence(err, err_size, "cannot map the history index in %s: %s", path,
                         mdb_strerror(rc));
                return hist_env_failed(j, rc);
            }
        }
    }
    MDB_txn *txn;
    rc = mdb_txn_begin(j->henv, NULL, j->read_only ? MDB_RDONLY : 0, &txn);
    if (rc == 0) {
        unsigned int create = j->read_only ? 0 : MDB_CREATE;
        rc = mdb_dbi_open(txn, "history", create | MDB_DUPSORT | MDB_DUPFIXED, &j->hdbi_history);
        if (rc == 0) rc = mdb_dbi_open(txn, "meta", create, &j->hdbi_meta);
        rc = rc != 0 ? rc : hist_runs_dbs_open(j, txn, create);
        uint64_t folded = 0;
        bool present = false;
        bool map_full = false;
        berth_jerr jerr = BERTH_J_OK;
        if (rc == 0 && !j->read_only) {
            jerr = meta_u64_get(txn, j->hdbi_meta, &folded_key, &folded, &present);
            if (jerr == BERTH_J_OK) jerr = meta_u64_put(txn, j->hdbi_meta, &folded_key, folded,
                                                        &map_full);
            /* a store of format 2 or 1 gets its layout keys only once it
             * is format 3 (history_open: the order is what keeps a berth
             * before session 9 away from runs) */
            if (jerr == BERTH_J_OK && j->format == store_format) {
                jerr = hist_layout_set(j, txn, folded, &map_full);
            }
        }
        if (rc == 0 && jerr == BERTH_J_OK) {
            jerr = hist_journal_bind(j, txn, true, &map_full);
        }
        if (rc == 0 && jerr == BERTH_J_OK) {
            rc = mdb_txn_commit(txn);   /* keeps the handles; writable: synced */
        } else {
            mdb_txn_abort(txn);
        }
        if (rc == 0 && jerr != BERTH_J_OK) {
            if (jerr == BERTH_J_CORRUPT) {
                sentence(err, err_size, "the history index %s belongs to another journal: the record"
                         " 1 it was built from is not this journal's%s", path, "");
            } else {
                sentence(err, err_size, "cannot set up the history index in %s (%s)", path,
                         berth_jerr_name(jerr));
            }
            mdb_env_close(j->henv);
            j->henv = NULL;
            return jerr;
        }
    }
    if (rc != 0) {
        sentence(err, err_size, "cannot set up the history index in %s: %s", path,
                 mdb_strerror(rc));
        return hist_env_failed(j, rc == MDB_NOTFOUND && j->read_only ? MDB_CORRUPTED : rc);
    }
    if (!j->read_only) {
        /* The entries of history/ and of its files in DIR must survive an OS
         * crash before anything (a trim) relies on what the files hold. */
        const char *dirs[] = { path, j->dir };
        for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
            int sync_rc = berth_dir_sync(dirs[i]);
            if (sync_rc != 0) {
                sentence(err, err_size, "cannot sync the directory %s: %s", dirs[i],
                         strerror(sync_rc));
                mdb_env_close(j->henv);
                j->henv = NULL;
                return BERTH_J_IO;
            }
        }
    }
    return BERTH_J_OK;
}

/* folded_seq of the history environment as txn sees it (0 when a new
 * environment's setup has not committed it yet). */
static berth_jerr hist_folded_get(lmdb_journal *j, MDB_txn *htxn, uint64_t *seq) {
    bool present = false;
    return meta_u64_get(htxn, j->hdbi_meta, &folded_key, seq, &present);
}

/* ---- migration from store format 1 ------------------------------------- */

typedef struct migrate_arg {
    uint64_t folded;                /* the legacy folded_seq: touchlog starts after it */
} migrate_arg;

/* The main environment's half: drop the legacy history db and its
 * folded_seq, record the touch log as trimmed through it, flip the format. */
static berth_jerr migrate_finish_body(lmdb_journal *j, MDB_txn *txn, void *arg, bool *map_full) {
    migrate_arg *m = arg;
    /* mdb_drop(.., 1) closes the handle env-wide even if this transaction is
     * then aborted (a full map: write_growing_if_full grows and calls again),
     * so each attempt opens its own. */
    MDB_dbi history;
    int rc = mdb_dbi_open(txn, "history", MDB_DUPSORT | MDB_DUPFIXED, &history);
    if (rc == 0) rc = mdb_drop(txn, history, 1);
    MDB_val fk = folded_key;
    if (rc == 0) rc = mdb_del(txn, j->dbi_meta, &fk, NULL);
    if (rc == MDB_NOTFOUND) rc = 0;   /* a pre-touchlog store had none */
    if (rc != 0) {
        return put_err(rc, map_full);
    }
    berth_jerr err = meta_u64_put(txn, j->dbi_meta, &trimmed_key, m->folded, map_full);
    uint32_t format = store_format_dups;   /* then history_open's step to runs */
    MDB_val key = format_key;
    MDB_val val = { sizeof(format), &format };
    if (err == BERTH_J_OK) {
        rc = mdb_put(txn, j->dbi_meta, &key, &val, 0);
        err = rc == 0 ? BERTH_J_OK : put_err(rc, map_full);
    }
    return err;
}

/* Copy the legacy history db into henv in key order (cursor order is
 * already history's order: MDB_APPEND for a new key, MDB_APPENDDUP for the
 * next seq of the same key, as mdb_load -a does),
 * with folded_seq, in one synced henv transaction. It empties henv's db
 * first, so a copy cut short by a crash is simply redone. */
static berth_jerr migrate_copy(lmdb_journal *j, uint64_t folded, uint64_t *copied) {
    MDB_txn *rtxn;
    int rc = mdb_txn_begin(j->env, NULL, MDB_RDONLY, &rtxn);
    if (rc != 0) {
        return jerr_of_mdb(rc);
    }
    MDB_stat st;
    rc = mdb_stat(rtxn, j->dbi_history, &st);
    if (rc == 0) {
        uint64_t bytes = (st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages) *
                         (uint64_t)st.ms_psize;
        map_use use = map_use_of(j->henv, j->hpage_size);
        if (use.map_bytes < 2 * bytes + grow_slack_bytes) {
            berth_jerr err = hist_map_grow(j, 2 * bytes, 0);   /* no reader yet */
            rc = err == BERTH_J_OK ? 0
                 : (err == BERTH_J_FULL || err == BERTH_J_AGAIN ? MDB_MAP_FULL : EIO);
        }
    }
    MDB_txn *wtxn = NULL;
    if (rc == 0) rc = mdb_txn_begin(j->henv, NULL, 0, &wtxn);
    if (rc == 0) rc = mdb_drop(wtxn, j->hdbi_history, 0);
    for (uint32_t level = 0; level < hist_run_levels && rc == 0; level++) {
        rc = mdb_drop(wtxn, j->hruns.runs[level], 0);   /* empty: no fold ran before this */
    }
    if (rc == 0) rc = mdb_drop(wtxn, j->hruns.runlist, 0);
    MDB_cursor *from = NULL;
    MDB_cursor *to = NULL;
    if (rc == 0) rc = mdb_cursor_open(rtxn, j->dbi_history, &from);
    if (rc == 0) rc = mdb_cursor_open(wtxn, j->hdbi_history, &to);
    *copied = 0;
    MDB_val key, val;
    if (rc == 0) rc = mdb_cursor_get(from, &key, &val, MDB_FIRST);
    uint8_t prev[history_key_len_max];
    size_t prev_len = 0;   /* no key is empty */
    while (rc == 0) {
        bool same = key.mv_size == prev_len && memcmp(key.mv_data, prev, prev_len) == 0;
        if (!same && key.mv_size > sizeof(prev)) {
            rc = MDB_CORRUPTED;
            break;
        }
        rc = mdb_cursor_put(to, &key, &val, same ? MDB_APPENDDUP : MDB_APPEND);
        if (!same) {
            memcpy(prev, key.mv_data, key.mv_size);
            prev_len = key.mv_size;
        }
        (*copied)++;
        if (rc == 0) rc = mdb_cursor_get(from, &key, &val, MDB_NEXT);
    }
    if (to != NULL) mdb_cursor_close(to);
    if (from != NULL) mdb_cursor_close(from);
    mdb_txn_abort(rtxn);
    bool map_full = false;
    berth_jerr err = rc == MDB_NOTFOUND ? BERTH_J_OK : jerr_of_mdb(rc);
    if (err == BERTH_J_OK) err = meta_u64_put(wtxn, j->hdbi_meta, &folded_key, folded, &map_full);
    /* no layout keys: the copy is an index of the layout before runs (a
     * stale environment's are dropped), which history_open then upgrades */
    for (size_t k = 0; k < sizeof(hist_layout_keys) / sizeof(hist_layout_keys[0]) &&
                       err == BERTH_J_OK; k++) {
        MDB_val layout = *hist_layout_keys[k];
        rc = mdb_del(wtxn, j->hdbi_meta, &layout, NULL);
        err = rc == 0 || rc == MDB_NOTFOUND ? BERTH_J_OK : jerr_of_mdb(rc);
    }
    if (err == BERTH_J_OK) {
        rc = mdb_txn_commit(wtxn);
        wtxn = NULL;
        err = rc == 0 ? BERTH_J_OK : jerr_of_mdb(rc);
    }
    if (wtxn != NULL) {
        mdb_txn_abort(wtxn);
    }
    return err;
}

/* Store format 1 kept history in this environment. Order, each step
 * durable before the next, so a crash anywhere is redone at the next open:
 * (1) copy it into henv with folded_seq (synced); (2) in the main
 * environment, one transaction drops it, stores trimmed_seq = the legacy
 * folded_seq (touchlog held only entries after it) and sets format 2;
 * (3) sync. Until (2) is durable the store is format 1 and the next open
 * copies again from scratch, also if a berth before this one wrote to it in
 * between; after it, a berth before this one refuses the store (unknown
 * format) rather than write a history nobody reads. */
static berth_jerr history_migrate(lmdb_journal *j, char *err, size_t err_size) {
    assert(!j->read_only && j->format == store_format_legacy);
    MDB_txn *txn;
    int rc = mdb_txn_begin(j->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        sentence(err, err_size, "cannot read the journal in %s: %s", j->dir, mdb_strerror(rc));
        return jerr_of_mdb(rc);
    }
    uint64_t folded = 0;
    bool present = false;
    berth_jerr jerr = meta_u64_get(txn, j->dbi_meta, &folded_key, &folded, &present);
    MDB_stat st = { 0 };
    if (jerr == BERTH_J_OK) {
        rc = mdb_stat(txn, j->dbi_touchlog, &st);
        jerr = rc == 0 ? BERTH_J_OK : jerr_of_mdb(rc);
    }
    mdb_txn_abort(txn);
    if (jerr == BERTH_J_OK && !present) {
        /* pre-touchlog: history holds everything up to the head */
        jerr = st.ms_entries == 0 ? BERTH_J_OK : BERTH_J_CORRUPT;
        folded = j->head_seq;
    }
    if (jerr == BERTH_J_OK && folded > j->head_seq) {
        jerr = BERTH_J_CORRUPT;
    }
    uint64_t copied = 0;
    if (jerr == BERTH_J_OK) jerr = migrate_copy(j, folded, &copied);
    migrate_arg m = { folded };
    mutex_lock(&j->write_mutex);
    if (jerr == BERTH_J_OK) jerr = write_growing_if_full(j, migrate_finish_body, &m,
                                                         meta_rewrite_need_bytes);
    mutex_unlock(&j->write_mutex);
    if (jerr == BERTH_J_OK && mdb_env_sync(j->env, 1) != 0) {
        /* The store is format 2 from the finishing commit on (an OS crash may
         * yet undo it, and the next open moves the index again): not
         * "unchanged". After a failed sync no later one proves anything. */
        atomic_store(&j->sync_failed, true);
        sentence(err, err_size, "moved the history index of %s into its own environment"
                 " (store format 2), but the sync after it failed%s; the next open checks the"
                 " store again", j->dir, "");
        return BERTH_J_IO;
    }
    if (jerr != BERTH_J_OK) {
        sentence(err, err_size, "cannot move the history index of %s into its own environment"
                 " (%s); the store is unchanged and the next open tries again", j->dir,
                 berth_jerr_name(jerr));
        return jerr;
    }
    j->format = store_format_dups;
    j->trimmed_seq = folded;
    fprintf(stderr, "berth journal: moved the history index of %s into %s/history "
            "(%llu entries, records up to seq %llu; store format 1 -> 2)\n", j->dir, j->dir,
            (unsigned long long)copied, (unsigned long long)folded);
    return BERTH_J_OK;
}

/* A store of format 2 (its index a key per name, before session 9)
 * becomes format 3 before any run is written, in this order, each step
 * durable before the next:
 *   (a) the journal's format 3 (store_format_raise), so that a berth before
 *       session 9, which would read only the history db and fold into it
 *       past legacy_end, refuses the store from then on (unknown format);
 *   (b) the index's layout keys, legacy_end = its folded_seq.
 * Before (a) no run exists (the folder starts after this), so the history
 * db holds every name up to folded_seq. A crash between (a) and (b) leaves
 * format 3 and an index without layout keys, which every reader takes as
 * all in the history db (hist_legacy_end) and the next writable open
 * finishes (hist_env_open's setup, as for any format 3 store). */
static berth_jerr store_format_raise(lmdb_journal *j, char *err, size_t err_size) {
    assert(!j->read_only && j->format == store_format_dups);
    j->format = store_format;
    mutex_lock(&j->write_mutex);
    berth_jerr jerr = meta_rewrite(j);   /* writes j->format */
    mutex_unlock(&j->write_mutex);
    int rc = jerr == BERTH_J_OK ? mdb_env_sync(j->env, 1) : 0;
    if (rc != 0) {
        atomic_store(&j->sync_failed, true);   /* after a failed sync no later one proves anything */
        jerr = BERTH_J_IO;
    }
    if (jerr != BERTH_J_OK) {
        j->format = store_format_dups;
        sentence(err, err_size, "cannot upgrade the store in %s to format 3 (the history index"
                 " as runs): %s", j->dir, rc != 0 ? mdb_strerror(rc) : berth_jerr_name(jerr));
    }
    return jerr;
}

static berth_jerr history_upgrade(lmdb_journal *j, char *err, size_t err_size) {
    berth_jerr jerr = store_format_raise(j, err, err_size);
    if (jerr != BERTH_J_OK) {
        return jerr;
    }
    MDB_txn *txn;
    int rc = mdb_txn_begin(j->henv, NULL, 0, &txn);
    uint64_t folded = 0;
    bool map_full = false;
    jerr = rc == 0 ? hist_folded_get(j, txn, &folded) : jerr_of_mdb(rc);
    if (jerr == BERTH_J_OK) jerr = hist_layout_set(j, txn, folded, &map_full);
    if (rc == 0 && jerr == BERTH_J_OK) {
        rc = mdb_txn_commit(txn);   /* synced: LMDB's default in henv */
        jerr = rc == 0 ? BERTH_J_OK : jerr_of_mdb(rc);
    } else if (rc == 0) {
        mdb_txn_abort(txn);
    }
    if (jerr != BERTH_J_OK) {
        sentence(err, err_size, "cannot mark the history index of %s as runs (%s); the next"
                 " open tries again", j->dir, berth_jerr_name(jerr));
        return jerr;
    }
    fprintf(stderr, "berth journal: store %s upgraded to format 3: the history index keeps records"
            " up to seq %llu as they are and writes the ones after them as runs\n", j->dir,
            (unsigned long long)folded);
    return BERTH_J_OK;
}

/* ---- the folder thread ---------------------------------------------------- */

/* The folder's buffers, kept across folds. */
typedef struct fold_work {
    fold_item *items;               /* fold_items_max */
    uint8_t *arena;                 /* fold_bytes_max: copies of touchlog values */
    fold_sort_scratch sort;         /* fold_sort's buffers */
} fold_work;

/* What a fold may read: the durable head (an OS crash cannot undo it, so
 * history never holds a name of a record that could vanish). */
static uint64_t durable_now(lmdb_journal *j) {
    mutex_lock(&j->head_mutex);
    uint64_t seq = j->defer_meta_sync ? j->durable_seq : j->head_seq;
    mutex_unlock(&j->head_mutex);
    return seq;
}

static bool fold_due(lmdb_journal *j) {
    uint64_t durable = durable_now(j);
    uint64_t folded = atomic_load(&j->hist_folded);
    assert(folded <= durable);
    return durable - folded >= j->history_fold_records;
}

/* After an append or a sync: the largest backlog, for INFO. */
static void fold_note_backlog(lmdb_journal *j, uint64_t backlog) {
    uint64_t max = atomic_load(&j->fold_backlog_max);
    while (backlog > max && !atomic_compare_exchange_weak(&j->fold_backlog_max, &max, backlog)) {
    }
}

/* Wake the folder when a fold is due (after a commit or sync moved the
 * durable head). Costs a mutex only then. */
static void folder_poke(lmdb_journal *j) {
    if (!j->folder_started) {
        return;
    }
    uint64_t durable = durable_now(j);
    uint64_t folded = atomic_load(&j->hist_folded);
    assert(folded <= durable);
    fold_note_backlog(j, durable - folded);
    if (durable - folded < j->history_fold_records) {
        return;
    }
    mutex_lock(&j->fold_mutex);
    j->fold_wake = true;
    int rc = pthread_cond_broadcast(&j->fold_cond);
    assert(rc == 0);
    mutex_unlock(&j->fold_mutex);
}

/* Copy touchlog entries hist_folded+1..through (at most fold_items_max
 * names and fold_bytes_max bytes) out of one short read transaction on the
 * main environment; *covered: every touching record up to it was taken. */
static berth_jerr fold_gather(lmdb_journal *j, fold_work *w, uint64_t through, size_t *count,
                              uint64_t *covered) {
    uint64_t from = atomic_load(&j->hist_folded) + 1;
    assert(from <= through);
    *count = 0;
    *covered = from - 1;
    if (atomic_load(&j->broken)) {
        return BERTH_J_IO;
    }
    gate_reader_enter(&j->gate);
    MDB_txn *txn;
    int rc = mdb_txn_begin(j->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        gate_reader_leave(&j->gate);
        return jerr_of_mdb(rc);
    }
    if (!j->fold_first_known) {
        /* A failure leaves the binding to a later fold, or the next open. */
        (void)journal_first_hash_in(j, txn, j->fold_first_hash, &j->fold_first_known);
    }
    MDB_cursor *cursor;
    rc = mdb_cursor_open(txn, j->dbi_touchlog, &cursor);
    berth_jerr err = rc == 0 ? BERTH_J_OK : jerr_of_mdb(rc);
    size_t used = 0;
    bool done = false;   /* every entry up to through taken */
    if (err == BERTH_J_OK) {
        MDB_val key = { sizeof(from), &from };
        MDB_val val;
        rc = mdb_cursor_get(cursor, &key, &val, MDB_SET_RANGE);
        while (rc == 0 && err == BERTH_J_OK) {
            uint64_t seq = 0;
            if (key.mv_size != sizeof(seq)) {
                err = BERTH_J_CORRUPT;
                break;
            }
            memcpy(&seq, key.mv_data, sizeof(seq));
            if (seq > through) {
                done = true;
                break;
            }
            if (val.mv_size > fold_bytes_max - used) {
                break;   /* the rest at the next fold */
            }
            memcpy(w->arena + used, val.mv_data, val.mv_size);
            MDB_val copy = { val.mv_size, w->arena + used };
            bool fits = true;
            err = fold_gather_entry(&key, &copy, w->items, count, fold_items_max, &fits);
            if (err != BERTH_J_OK || !fits) {
                break;
            }
            used += val.mv_size;
            *covered = seq;
            rc = mdb_cursor_get(cursor, &key, &val, MDB_NEXT);
        }
        if (rc == MDB_NOTFOUND) {
            done = true;
        } else if (rc != 0 && err == BERTH_J_OK) {
            err = jerr_of_mdb(rc);
        }
        mdb_cursor_close(cursor);
    }
    mdb_txn_abort(txn);
    gate_reader_leave(&j->gate);
    if (done) {
        *covered = through;   /* records after the last entry touched nothing */
    }
    if (err == BERTH_J_OK && *covered < from) {
        err = BERTH_J_CORRUPT;   /* one entry larger than the whole buffer */
    }
    return err;
}

/* The sorted names, as one run (history_runs.c), and folded_seq in one
 * henv transaction (synced twice: LMDB's default, off every client's path). */
typedef struct fold_write_arg {
    const fold_item *items;         /* sorted */
    size_t count;
    uint64_t covered;               /* the new folded_seq */
} fold_write_arg;

static berth_jerr fold_write(lmdb_journal *j, const void *arg, bool *map_full) {
    const fold_write_arg *a = arg;
    const fold_item *items = a->items;
    size_t count = a->count;
    uint64_t covered = a->covered;
    *map_full = false;
    MDB_txn *txn;
    int rc = mdb_txn_begin(j->henv, NULL, 0, &txn);
    if (rc != 0) {
        *map_full = rc == MDB_MAP_FULL;
        return jerr_of_mdb(rc);
    }
    uint64_t first = atomic_load(&j->hist_folded) + 1;
    uint64_t bytes = 0;
    rc = count == 0 ? 0 : hist_run_write(txn, &j->hruns, items, count, first, covered, &bytes);
    berth_jerr err = rc == 0 ? BERTH_J_OK : put_err(rc, map_full);
    if (err == BERTH_J_OK) err = meta_u64_put(txn, j->hdbi_meta, &folded_key, covered, map_full);
    if (err == BERTH_J_OK && covered >= 1) err = hist_journal_bind(j, txn, false, map_full);
    if (err != BERTH_J_OK) {
        mdb_txn_abort(txn);
        return err;
    }
    rc = mdb_txn_commit(txn);
    if (rc != 0) {
        *map_full = rc == MDB_MAP_FULL;
        return jerr_of_mdb(rc);
    }
    return BERTH_J_OK;
}

/* One henv write transaction, built and committed by write (a fold's or a
 * merge's), growing henv's map ahead when it is over half used and again,
 * up to its cap, each time the write finds it full. need: the bytes the
 * write may add. */
typedef berth_jerr (*hist_write_fn)(lmdb_journal *j, const void *arg, bool *map_full);
static berth_jerr hist_write_growing(lmdb_journal *j, hist_write_fn write, const void *arg,
                                     uint64_t need) {
    map_use use = map_use_of(j->henv, j->hpage_size);
    if (use.used_bytes + need > use.map_bytes / 2) {
        int dead = 0;
        (void)mdb_reader_check(j->henv, &dead);   /* killed readers may be why it filled */
        (void)hist_map_grow(j, need, 0);   /* at the cap or readers open: the write decides */
    }
    berth_jerr err = BERTH_J_FULL;
    for (uint32_t attempt = 0; attempt < grow_attempts_max; attempt++) {
        bool map_full = false;
        err = write(j, arg, &map_full);
        if (!map_full) {
            break;
        }
        err = hist_map_grow(j, need, grow_wait_ms_max);
        if (err != BERTH_J_OK) {
            break;
        }
        err = BERTH_J_FULL;
    }
    return err;
}

static berth_lmdb_merge_hook merge_hook;

void berth_journal_lmdb_merge_hook_set(berth_lmdb_merge_hook hook) {
    merge_hook = hook;
}

/* One merge of plan's runs, in a henv transaction of its own. The sources
 * are read through a read transaction begun after the write one, on the
 * same state (the folder is henv's one writer), so the values they point
 * to stay where they are while the merge writes and deletes. */
static berth_jerr merge_write(lmdb_journal *j, const void *arg, bool *map_full) {
    const hist_merge_plan *plan = arg;
    *map_full = false;
    MDB_txn *wtxn;
    int rc = mdb_txn_begin(j->henv, NULL, 0, &wtxn);
    if (rc != 0) {
        *map_full = rc == MDB_MAP_FULL;
        return jerr_of_mdb(rc);
    }
    MDB_txn *rtxn = NULL;
    berth_jerr err = hist_read_begin(j, &rtxn);
    hist_run merged;
    if (err == BERTH_J_OK) {
        rc = hist_merge(wtxn, rtxn, &j->hruns, plan, &merged);
        err = rc == 0 ? BERTH_J_OK : put_err(rc, map_full);
        hist_read_end(j, rtxn);
    }
    int hook_rc = err == BERTH_J_OK && merge_hook != NULL ? merge_hook() : 0;
    if (hook_rc != 0) {
        err = jerr_of_mdb(hook_rc);
    }
    if (err != BERTH_J_OK) {
        mdb_txn_abort(wtxn);
        return err;
    }
    assert(merged.first_seq == plan->runs[0].first_seq && merged.level == plan->runs[0].level + 1);
    rc = mdb_txn_commit(wtxn);
    if (rc != 0) {
        *map_full = rc == MDB_MAP_FULL;
        return jerr_of_mdb(rc);
    }
    return BERTH_J_OK;
}

/* After a merge failed: for want of room it is tried again after the next
 * fold; anything else stops merging in this process (queries stay exact:
 * the runs are all there, only more of them). Said once either way. */
static void merge_failed(lmdb_journal *j, berth_jerr err) {
    bool room = err == BERTH_J_FULL || err == BERTH_J_AGAIN;
    if (!j->merge_off && (!room || !j->merge_room_told)) {
        fprintf(stderr, "berth journal: merging history runs in %s/history failed (%s); HISTORY"
                " stays exact, %s\n", j->dir, berth_jerr_name(err),
                room ? "merges are tried again after each fold" : "with no more merges until"
                " the next start");
    }
    j->merge_room_told = j->merge_room_told || room;
    j->merge_off = j->merge_off || !room;
}

/* After a fold: merge runs while the newest hist_run_fanout are due
 * (history_runs.h), so a query meets few runs whatever the journal's
 * length; and count them for INFO. */
static void hist_merge_due(lmdb_journal *j) {
    for (uint32_t merges = 0; merges <= hist_run_level_max; merges++) {
        hist_merge_plan plan;
        bool due = false;
        uint64_t runs = 0;
        MDB_txn *txn;
        berth_jerr err = hist_read_begin(j, &txn);
        if (err == BERTH_J_OK) {
            int rc = hist_merge_find(txn, &j->hruns, &plan, &due);
            if (rc == 0) rc = hist_runs_count(txn, &j->hruns, &runs);
            err = rc == 0 ? BERTH_J_OK : jerr_of_mdb(rc);
            hist_read_end(j, txn);
        }
        if (err == BERTH_J_OK) {
            atomic_store(&j->run_count, runs);
        }
        if (err != BERTH_J_OK || !due || j->merge_off) {
            if (err != BERTH_J_OK) merge_failed(j, err);
            return;
        }
        uint64_t bytes = 0;
        for (size_t k = 0; k < hist_run_fanout; k++) {
            bytes += plan.runs[k].bytes;
        }
        /* written again; the pages it frees are free only after its commit */
        err = hist_write_growing(j, merge_write, &plan, 2 * bytes + grow_slack_bytes);
        if (err != BERTH_J_OK) {
            merge_failed(j, err);
            return;
        }
        atomic_fetch_add(&j->merge_count, 1);
    }
}

/* Sort the count names gathered in w into history's key order and write
 * them with folded_seq = covered in one henv transaction, growing henv's
 * map for need_bytes; then publish hist_folded. The folder's folds and a
 * rebuild's batches both end here. A failure leaves henv and hist_folded
 * as they were. */
static berth_jerr fold_commit(lmdb_journal *j, fold_work *w, size_t count, uint64_t covered,
                              uint64_t need) {
    assert(count <= fold_items_max && covered >= atomic_load(&j->hist_folded));
    (void)fold_sort(w->items, count, &w->sort);
    fold_write_arg arg = { w->items, count, covered };
    berth_jerr err = hist_write_growing(j, fold_write, &arg, need);
    if (err == BERTH_J_OK) {
        atomic_store(&j->hist_folded, covered);
        atomic_fetch_add(&j->fold_count, 1);
        hist_merge_due(j);
    }
    return err;
}

/* One fold: gather, then sort, write and publish. A failure leaves henv and
 * hist_folded as they were (touchlog keeps the entries: queries stay exact). */
static berth_jerr fold_once(lmdb_journal *j, fold_work *w) {
    uint64_t through = durable_now(j);
    size_t count = 0;
    uint64_t covered = 0;
    berth_jerr err = fold_gather(j, w, through, &count, &covered);
    if (err != BERTH_J_OK) {
        return err;
    }
    uint64_t need = (covered - atomic_load(&j->hist_folded)) * fold_need_bytes_per_record;
    return fold_commit(j, w, count, covered, need);
}

static void fold_mutex_wait(lmdb_journal *j, uint32_t wait_ms) {
    if (wait_ms == 0) {
        int rc = pthread_cond_wait(&j->fold_cond, &j->fold_mutex);
        assert(rc == 0);
        return;
    }
    struct timespec deadline = deadline_after_ms(wait_ms);
    int rc = pthread_cond_timedwait(&j->fold_cond, &j->fold_mutex, &deadline);
    assert(rc == 0 || rc == ETIMEDOUT);
}

/* Folds whenever woken and due, until stopped. After a failure it waits
 * fold_retry_ms and tries again (FULL may clear); after an I/O error in
 * henv it folds no more in this process (after a failed fsync no later sync
 * proves anything: see "One sync per commit"), and the next open starts
 * from what henv durably holds. */
static void *folder_main(void *arg) {
    lmdb_journal *j = arg;
    fold_work *w = j->fold_work;   /* folder_start took them: never NULL here */
    assert(w != NULL && w->items != NULL && w->arena != NULL);
#if defined(__linux__)
    (void)pthread_setname_np(pthread_self(), "berth-fold");   /* for top and perf; best effort */
#endif
    mutex_lock(&j->fold_mutex);
    bool retry = false;
    while (!atomic_load(&j->fold_stop)) {
        if (!j->fold_wake || j->fold_dead) {
            j->fold_wake = false;
            j->fold_idle = true;
            int rc = pthread_cond_broadcast(&j->fold_cond);
            assert(rc == 0);
            fold_mutex_wait(j, retry && !j->fold_dead ? fold_retry_ms : 0);
            if (retry && !j->fold_wake) {
                j->fold_wake = true;   /* the retry's time came (or a spurious wake: harmless) */
            }
            retry = false;
            continue;
        }
        j->fold_wake = false;
        j->fold_idle = false;
        mutex_unlock(&j->fold_mutex);
        berth_jerr err = BERTH_J_OK;
        while (err == BERTH_J_OK && !atomic_load(&j->fold_stop) && fold_due(j)) {
            err = fold_once(j, w);
        }
        mutex_lock(&j->fold_mutex);
        bool dead = err == BERTH_J_IO || atomic_load(&j->hbroken);
        if (err != BERTH_J_OK && (err != j->fold_err || dead)) {
            /* nobody else would say it: the fold has no caller */
            fprintf(stderr, "berth journal: the history fold in %s/history failed (%s); HISTORY"
                    " stays exact from the touch log, %s\n", j->dir, berth_jerr_name(err),
                    dead ? "which now grows until the next start" : "retried in 1 s");
        }
        j->fold_err = err;
        j->fold_dead = j->fold_dead || dead;
        retry = err != BERTH_J_OK;
    }
    j->fold_idle = true;
    int rc = pthread_cond_broadcast(&j->fold_cond);
    assert(rc == 0);
    mutex_unlock(&j->fold_mutex);
    return NULL;
}

static void fold_work_free(lmdb_journal *j) {
    fold_work *w = j->fold_work;
    if (w != NULL) {
        free(w->items);
        free(w->arena);
        fold_sort_scratch_free(&w->sort);
        free(w);
        j->fold_work = NULL;
    }
}

/* The folder's buffers (fold_items_max names, fold_bytes_max bytes: 80 MiB)
 * are taken here, so that an open short of memory fails NOMEM rather than
 * run a folder that can never fold and that nobody asks. */
static bool fold_work_alloc(lmdb_journal *j) {
    assert(j->fold_work == NULL);
    fold_work *w = calloc(1, sizeof *w);
    if (w == NULL) {
        return false;
    }
    j->fold_work = w;
    w->items = malloc(fold_items_max * sizeof *w->items);
    w->arena = malloc(fold_bytes_max);
    return w->items != NULL && w->arena != NULL;
}

static bool folder_start(lmdb_journal *j) {
    if (!fold_work_alloc(j)) {
        return false;
    }
    if (pthread_mutex_init(&j->fold_mutex, NULL) != 0) {
        return false;
    }
    /* fold_mutex_wait's deadline is on CLOCK_MONOTONIC (deadline_after_ms):
     * a condvar on the default CLOCK_REALTIME would take it as long past and
     * time out at once, turning the retry's wait into a busy loop. */
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0) {
        int rc = pthread_mutex_destroy(&j->fold_mutex);
        assert(rc == 0);
        return false;
    }
    bool ok = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 &&
              pthread_cond_init(&j->fold_cond, &attr) == 0;
    int rc = pthread_condattr_destroy(&attr);
    assert(rc == 0);
    if (!ok) {
        rc = pthread_mutex_destroy(&j->fold_mutex);
        assert(rc == 0);
        return false;
    }
    j->fold_ready = true;
    j->fold_wake = true;   /* a backlog left by the last process folds now */
    if (pthread_create(&j->folder, NULL, folder_main, j) != 0) {
        return false;
    }
    j->folder_started = true;
    return true;
}

/* At close: a fold under way finishes its transaction first. */
static void folder_stop(lmdb_journal *j) {
    if (j->folder_started) {
        mutex_lock(&j->fold_mutex);
        atomic_store(&j->fold_stop, true);
        int rc = pthread_cond_broadcast(&j->fold_cond);
        assert(rc == 0);
        mutex_unlock(&j->fold_mutex);
        rc = pthread_join(j->folder, NULL);
        assert(rc == 0);
        j->folder_started = false;
    }
    if (j->fold_ready) {
        int rc = pthread_cond_destroy(&j->fold_cond);
        assert(rc == 0);
        rc = pthread_mutex_destroy(&j->fold_mutex);
        assert(rc == 0);
        j->fold_ready = false;
    }
    fold_work_free(j);
}

berth_jerr berth_journal_lmdb_settle(berth_journal *base) {
    lmdb_journal *j = journal_of(base);
    if (!j->folder_started) {
        return BERTH_J_OK;
    }
    mutex_lock(&j->fold_mutex);
    j->fold_wake = true;
    int rc = pthread_cond_broadcast(&j->fold_cond);
    assert(rc == 0);
    while (j->fold_wake || !j->fold_idle) {
        rc = pthread_cond_wait(&j->fold_cond, &j->fold_mutex);
        assert(rc == 0);
    }
    berth_jerr err = j->fold_err;
    mutex_unlock(&j->fold_mutex);
    return err;
}

static berth_jerr lmdb_fold_stats(berth_journal *base, berth_fold_stats *out) {
    lmdb_journal *j = journal_of(base);
    if (!j->folder_started) {
        return BERTH_J_OK;   /* read-only: no folder; its writer's are not ours to tell */
    }
    out->folded_seq = atomic_load(&j->hist_folded);
    uint64_t durable = durable_now(j);
    out->backlog = durable > out->folded_seq ? durable - out->folded_seq : 0;
    out->backlog_max = atomic_load(&j->fold_backlog_max);
    out->folds = atomic_load(&j->fold_count);
    out->merges = atomic_load(&j->merge_count);
    out->runs = atomic_load(&j->run_count);
    return BERTH_J_OK;
}

/* At a writable open, once the head is loaded and synced: migrate a legacy
 * store, open (or create) henv, check it against the touch log, start the
 * folder (which folds a backlog the last process left, if due). */
static berth_jerr history_open(lmdb_journal *j, uint64_t map_initial, char *err,
                               size_t err_size) {
    char path[path_len_max];
    char file[path_len_max];
    struct stat st;
    if (!hist_dir_path(path, j) || !path_join(file, path, "data.mdb")) {
        sentence(err, err_size, "data directory path %s is too long%s", j->dir, "");
        return BERTH_J_INVALID;
    }
    if (j->format != store_format_legacy && j->trimmed_seq > 0 && stat(file, &st) != 0) {
        char seq[pid_text_len_max];
        snprintf(seq, sizeof(seq), "%llu", (unsigned long long)j->trimmed_seq);
        sentence(err, err_size, "the history index %s is missing and the touch log was trimmed"
                 " through seq %s: HISTORY cannot be answered", path, seq);
        hist_rebuild_hint(j, err, err_size);
        return BERTH_J_CORRUPT;
    }
    berth_jerr jerr = hist_env_open(j, map_initial, err, err_size);
    if (jerr == BERTH_J_CORRUPT) {
        hist_rebuild_hint(j, err, err_size);
    }
    if (jerr == BERTH_J_OK && j->format == store_format_legacy) {
        jerr = history_migrate(j, err, err_size);
    }
    if (jerr == BERTH_J_OK && j->format == store_format_dups) {
        jerr = history_upgrade(j, err, err_size);
    }
    if (jerr != BERTH_J_OK) {
        return jerr;
    }
    MDB_txn *htxn;
    uint64_t folded = 0;
    jerr = hist_read_begin(j, &htxn);
    uint64_t runs = 0;
    if (jerr == BERTH_J_OK) {
        jerr = hist_folded_get(j, htxn, &folded);
        int rc = hist_runs_count(htxn, &j->hruns, &runs);
        if (jerr == BERTH_J_OK && rc != 0) jerr = jerr_of_mdb(rc);
        hist_read_end(j, htxn);
    }
    atomic_store(&j->run_count, runs);
    if (jerr != BERTH_J_OK) {
        sentence(err, err_size, "cannot read the history index in %s (%s)", path,
                 berth_jerr_name(jerr));
        return jerr;
    }
    if (folded < j->trimmed_seq || folded > j->head_seq) {
        char seqs[96];
        snprintf(seqs, sizeof(seqs), "up to seq %llu, the touch log was trimmed through %llu"
                 " and the head is %llu", (unsigned long long)folded,
                 (unsigned long long)j->trimmed_seq, (unsigned long long)j->head_seq);
        sentence(err, err_size, "the history index %s does not fit the journal: it holds"
                 " records %s", path, seqs);
        hist_rebuild_hint(j, err, err_size);
        return BERTH_J_CORRUPT;
    }
    atomic_store(&j->hist_folded, folded);
    if (!folder_start(j)) {
        sentence(err, err_size, "cannot start the history folder thread for %s: out of memory"
                 "%s (its buffers take 80 MiB)", j->dir, "");
        return BERTH_J_NOMEM;
    }
    return BERTH_J_OK;
}

/* ---- rebuilding the index --------------------------------------------------- */

/* An open for history_rebuild writes a new history environment in
 * DIR/history.rebuild, never the one in place: the caller replays the
 * journal and adds each record's names (they come from the engine's apply,
 * which this layer does not run); they are gathered into the folder's
 * buffers in touchlog's packed form and written as a fold writes them
 * (fold_gather_entry, fold_commit), each batch sorted, in transactions of
 * bounded size, with folded_seq = the last record the batch covers. finish
 * then swaps the new environment in. Each step is durable before the next
 * begins, so a crash (of the process or the OS) at any point leaves one of:
 *   1. DIR/history as it was (missing or damaged), perhaps with a partial
 *      or complete DIR/history.rebuild beside it: nothing reads the latter,
 *      a writable open still refuses by name, and the next rebuild removes
 *      it and starts again (before "moved");
 *   2. no DIR/history, the old one in DIR/history.damaged-N: the same
 *      (between "moved" and "swapped": the two renames are separated by a
 *      directory sync, so the second never reaches the disk without the
 *      first);
 *   3. the new index as DIR/history, complete and synced (its commits
 *      synced, then history.rebuild/ synced, before the rename), with
 *      folded_seq = the head (after "swapped").
 * The journal is not written at all: the head was synced by this open
 * (sync_at_open) before any name was read, so the index names no record an
 * OS crash could undo, and trimmed_seq (<= head) <= folded_seq = head. The
 * touch log keeps its entries past trimmed_seq: the next writable open's
 * appends trim them, as they trim any folded entries. */

static berth_lmdb_rebuild_hook rebuild_hook;

void berth_journal_lmdb_rebuild_hook_set(berth_lmdb_rebuild_hook hook) {
    rebuild_hook = hook;
}

static void rebuild_step(const char *step) {
    if (rebuild_hook != NULL) {
        rebuild_hook(step);
    }
}

/* Remove a history environment's directory this layer made: its two LMDB
 * files, then the directory. Anything else in it makes rmdir fail, so
 * nothing this layer did not write is deleted. 0 (also when absent) or the
 * errno. */
static int env_dir_remove(const char *path) {
    const char *const files[] = { "data.mdb", "lock.mdb" };
    char file[path_len_max];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        if (!path_join(file, path, files[i])) {
            return ENAMETOOLONG;
        }
        if (unlink(file) != 0 && errno != ENOENT) {
            return errno;
        }
    }
    return rmdir(path) == 0 || errno == ENOENT ? 0 : errno;
}

/* At an open for history_rebuild, instead of history_open: a new, empty
 * history environment in DIR/history.rebuild (a leftover of a rebuild cut
 * short is removed first: it was never in place) and the folder's buffers. */
static berth_jerr rebuild_open(lmdb_journal *j, uint64_t map_initial, char *err,
                               size_t err_size) {
    assert(j->rebuild && !j->read_only);
    if (j->format == store_format_legacy) {
        sentence(err, err_size, "the store in %s is format 1 (its history index inside"
                 " data.mdb): open it writable once (start berthd) to move the index into"
                 " %s/history first", j->dir, j->dir);
        return BERTH_J_INVALID;
    }
    char path[path_len_max];
    if (!hist_dir_path(path, j)) {
        sentence(err, err_size, "data directory path %s is too long%s", j->dir, "");
        return BERTH_J_INVALID;
    }
    int rc = env_dir_remove(path);
    if (rc != 0) {
        sentence(err, err_size, "cannot remove %s, left by a rebuild cut short: %s", path,
                 strerror(rc));
        return BERTH_J_IO;
    }
    /* The new index is runs: the store is format 3 first (store_format_raise
     * says why; the index in place, if it is sound, reads the same under it) */
    berth_jerr jerr = j->format == store_format_dups ? store_format_raise(j, err, err_size)
                                                     : BERTH_J_OK;
    if (jerr != BERTH_J_OK) {
        return jerr;
    }
    jerr = hist_env_open(j, map_initial, err, err_size);
    if (jerr != BERTH_J_OK) {
        return jerr;
    }
    if (!fold_work_alloc(j)) {
        sentence(err, err_size, "out of memory rebuilding the history index of %s%s", j->dir,
                 " (its buffers take 80 MiB)");
        return BERTH_J_NOMEM;
    }
    /* A rebuild's batches fill the buffers (up to 2M names) and the process
     * ends with it: its sort keeps its scratch rather than fault it in again
     * for every batch. */
    j->fold_work->sort.keep_items_max = SIZE_MAX;
    j->rebuild_next = 1;
    return BERTH_J_OK;
}

/* Write the names gathered so far, covering every record up to covered. */
static berth_jerr rebuild_flush(lmdb_journal *j, uint64_t covered) {
    uint64_t folded = atomic_load(&j->hist_folded);
    assert(covered >= folded);
    if (covered == folded && j->rebuild_count == 0) {
        return BERTH_J_OK;
    }
    berth_jerr err = fold_commit(j, j->fold_work, j->rebuild_count, covered,
                                 (uint64_t)j->rebuild_count * fold_need_bytes_per_name);
    if (err == BERTH_J_OK) {
        j->rebuild_names += j->rebuild_count;
        j->rebuild_count = 0;
        j->rebuild_used = 0;
    }
    return err;
}

static berth_jerr lmdb_history_rebuild_add(berth_journal *base, uint64_t seq,
                                           const berth_touched *touched) {
    lmdb_journal *j = journal_of(base);
    if (!j->rebuild || j->henv == NULL || seq != j->rebuild_next || seq > j->head_seq) {
        return BERTH_J_INVALID;
    }
    fold_work *w = j->fold_work;
    assert(w != NULL && j->rebuild_used <= fold_bytes_max && j->rebuild_count <= fold_items_max);
    /* Room for the most one record can touch, or the batch so far goes. */
    uint64_t batch_records = seq - 1 - atomic_load(&j->hist_folded);
    if (fold_bytes_max - j->rebuild_used < touchlog_value_len_max ||
        fold_items_max - j->rebuild_count < 1 + BERTH_PLACEMENT_WORKERS_MAX ||
        (j->rebuild_batch_records != 0 && batch_records >= j->rebuild_batch_records)) {
        berth_jerr err = rebuild_flush(j, seq - 1);
        if (err != BERTH_J_OK) {
            return err;
        }
        rebuild_step("batch");
    }
    uint8_t *packed = w->arena + j->rebuild_used;
    size_t len = 0;
    berth_jerr err = touch_pack(touched, packed, &len);
    if (err == BERTH_J_OK && len > 0) {
        MDB_val key = { sizeof(seq), &seq };
        MDB_val val = { len, packed };
        bool fits = false;
        err = fold_gather_entry(&key, &val, w->items, &j->rebuild_count, fold_items_max, &fits);
        assert(err != BERTH_J_OK || fits);
        j->rebuild_used += len;
    }
    if (err == BERTH_J_OK) {
        j->rebuild_next = seq + 1;
    }
    return err;
}

/* The first DIR/history.damaged-N that does not exist. */
static berth_jerr rebuild_aside_path(const lmdb_journal *j, char *aside) {
    for (uint32_t n = 1; n <= damaged_kept_max; n++) {
        char name[pid_text_len_max];
        snprintf(name, sizeof name, "history.damaged-%u", (unsigned)n);
        struct stat st;
        if (!path_join(aside, j->dir, name)) {
            return BERTH_J_INVALID;
        }
        if (lstat(aside, &st) != 0) {
            return errno == ENOENT ? BERTH_J_OK : BERTH_J_IO;
        }
    }
    return BERTH_J_FULL;
}

/* A failed step of finish, in a sentence. */
static berth_jerr rebuild_failed(char *err, size_t err_size, berth_jerr jerr, const char *what,
                                 const char *path, int errnum) {
    sentence(err, err_size, what, path, errnum != 0 ? strerror(errnum) : berth_jerr_name(jerr));
    return jerr;
}

/* The steps, in order; see "Rebuilding the index" for what a crash between
 * two of them leaves. */
static berth_jerr lmdb_history_rebuild_finish(berth_journal *base, uint64_t *names, char *err,
                                              size_t err_size) {
    lmdb_journal *j = journal_of(base);
    if (!j->rebuild || j->henv == NULL) {
        sentence(err, err_size, "this open of %s does not rebuild the history index, or its"
                 " rebuild already finished%s", j->dir, "");
        return BERTH_J_INVALID;
    }
    if (j->rebuild_next != j->head_seq + 1) {
        char seqs[96];
        snprintf(seqs, sizeof seqs, "up to seq %llu, the head is %llu",
                 (unsigned long long)(j->rebuild_next - 1), (unsigned long long)j->head_seq);
        sentence(err, err_size, "the rebuild of %s was given records %s", j->dir, seqs);
        return BERTH_J_INVALID;
    }
    char fresh[path_len_max];
    char live[path_len_max];
    char aside[path_len_max];
    if (!hist_dir_path(fresh, j) || !path_join(live, j->dir, "history")) {
        sentence(err, err_size, "data directory path %s is too long%s", j->dir, "");
        return BERTH_J_INVALID;
    }
    berth_jerr jerr = rebuild_flush(j, j->head_seq);   /* folded_seq = head, synced */
    if (jerr != BERTH_J_OK) {
        return rebuild_failed(err, err_size, jerr, "cannot write the new history index %s: %s",
                              fresh, 0);
    }
    assert(atomic_load(&j->hist_folded) == j->head_seq);
    rebuild_step("written");
    /* Closed, so that this process holds nothing open in what it renames. */
    mdb_env_close(j->henv);
    j->henv = NULL;
    int rc = berth_dir_sync(fresh);
    if (rc != 0) {
        return rebuild_failed(err, err_size, BERTH_J_IO, "cannot sync the directory %s: %s",
                              fresh, rc);
    }
    rebuild_step("synced");
    struct stat st;
    bool had_old = lstat(live, &st) == 0;
    if (!had_old && errno != ENOENT) {
        return rebuild_failed(err, err_size, BERTH_J_IO, "cannot look at %s: %s", live, errno);
    }
    if (had_old) {
        jerr = rebuild_aside_path(j, aside);
        if (jerr != BERTH_J_OK) {
            return rebuild_failed(err, err_size, jerr, "found no free name beside %s to keep"
                                  " the index it replaces (%s)", live, 0);
        }
        rc = rename(live, aside) == 0 ? berth_dir_sync(j->dir) : errno;
        if (rc != 0) {
            return rebuild_failed(err, err_size, BERTH_J_IO, "cannot move %s aside: %s", live,
                                  rc);
        }
        rebuild_step("moved");
    }
    rc = rename(fresh, live) == 0 ? berth_dir_sync(j->dir) : errno;
    if (rc != 0) {
        return rebuild_failed(err, err_size, BERTH_J_IO, "cannot put the new index in place"
                              " as %s: %s", live, rc);
    }
    j->rebuild_swapped = true;
    rebuild_step("swapped");
    if (had_old) {
        fprintf(stderr, "berth journal: kept the history index it replaced as %s\n", aside);
    }
    *names = j->rebuild_names;
    return BERTH_J_OK;
}

/* At close: a rebuild that did not finish leaves nothing behind (its
 * environment is closed by now). Best effort: the next one removes it too. */
static void rebuild_close(lmdb_journal *j) {
    assert(j->henv == NULL);
    char fresh[path_len_max];
    if (j->rebuild && !j->rebuild_swapped && j->lock_held && hist_dir_path(fresh, j)) {
        (void)env_dir_remove(fresh);
    }
}

typedef struct batch_arg {
    berth_record *records;
    const berth_touched *touched;
    size_t n;
    uint64_t trimmed_to;            /* out: trimmed_seq once committed */
} batch_arg;

static berth_jerr batch_body(lmdb_journal *j, MDB_txn *txn, void *arg, bool *map_full) {
    batch_arg *batch = arg;
    berth_jerr err = batch_put(j, txn, batch->records, batch->touched, batch->n, map_full);
    if (err == BERTH_J_OK) {
        err = touchlog_trim(j, txn, batch->n, &batch->trimmed_to, map_full);
    }
    return err;
}

/* What refuses any append before the write mutex is taken. */
static berth_jerr append_refusal(lmdb_journal *j) {
    if (j->read_only) {
        return BERTH_J_READONLY;
    }
    if (j->rebuild) {
        return BERTH_J_INVALID;   /* no index would take the records' names */
    }
    return atomic_load(&j->broken) ? BERTH_J_IO : BERTH_J_OK;
}

/* One append's transaction for n records, then, once it committed, the
 * head moved to last_seq and last_hash (read when the body has run: it may
 * be the body's output). Caller holds write_mutex, and releases it. */
static berth_jerr append_run(lmdb_journal *j, txn_body body, void *arg, size_t n,
                             uint64_t *trimmed_to, uint64_t last_seq, const uint8_t *last_hash) {
    /* A batch needs at most its bytes twice over (leaf pages half full). */
    uint64_t need = (uint64_t)n * BERTH_RECORD_BYTES_MAX / 8;
    berth_jerr err = write_with_growth(j, body, arg, need);
    if (err == BERTH_J_OK) {
        assert(*trimmed_to >= j->trimmed_seq && last_seq == j->head_seq + n);
        j->trimmed_seq = *trimmed_to;
        mutex_lock(&j->head_mutex);
        j->head_seq = last_seq;
        memcpy(j->head_hash, last_hash, BERTH_HASH_LEN);
        mutex_unlock(&j->head_mutex);
    }
    return err;
}

/* After an append, outside write_mutex. */
static void append_after(lmdb_journal *j, berth_jerr err) {
    if (err == BERTH_J_OK) {
        folder_poke(j);   /* the fold runs on its own thread and environment */
    }
}

static berth_jerr lmdb_append(berth_journal *base, berth_record *records,
                              const berth_touched *touched, size_t n) {
    lmdb_journal *j = journal_of(base);
    assert(n >= 1 && n <= BERTH_BATCH_RECORDS_MAX);
    berth_jerr err = append_refusal(j);
    if (err != BERTH_J_OK) {
        return err;
    }
    mutex_lock(&j->write_mutex);
    for (size_t i = 0; i < n && err == BERTH_J_OK; i++) {
        if (records[i].seq != j->head_seq + 1 + i) {
            err = BERTH_J_INVALID;
        }
    }
    batch_arg batch = { records, touched, n, 0 };
    if (err == BERTH_J_OK) {
        err = append_run(j, batch_body, &batch, n, &batch.trimmed_to, records[n - 1].seq,
                         records[n - 1].hash);
    }
    mutex_unlock(&j->write_mutex);
    append_after(j, err);
    return err;
}

typedef struct encoded_arg {
    const berth_encoded *records;
    const berth_touched *touched;
    size_t n;
    bool hashes_known;              /* see batch_put_encoded */
    uint64_t trimmed_to;            /* out: trimmed_seq once committed */
    uint8_t last_hash[BERTH_HASH_LEN];   /* out: the last stored record's hash */
} encoded_arg;

static berth_jerr encoded_body(lmdb_journal *j, MDB_txn *txn, void *arg, bool *map_full) {
    encoded_arg *batch = arg;
    berth_jerr err = batch_put_encoded(j, txn, batch->records, batch->touched, batch->n,
                                       batch->hashes_known, batch->last_hash, map_full);
    if (err == BERTH_J_OK) {
        err = touchlog_trim(j, txn, batch->n, &batch->trimmed_to, map_full);
    }
    return err;
}

static berth_jerr encoded_append(lmdb_journal *j, const berth_encoded *records,
                                 const berth_touched *touched, size_t n, bool hashes_known) {
    assert(n >= 1 && n <= BERTH_BATCH_RECORDS_MAX);
    berth_jerr err = append_refusal(j);
    if (err != BERTH_J_OK) {
        return err;
    }
    mutex_lock(&j->write_mutex);
    encoded_arg batch = { .records = records, .touched = touched, .n = n,
                          .hashes_known = hashes_known };
    err = append_run(j, encoded_body, &batch, n, &batch.trimmed_to, j->head_seq + n,
                     batch.last_hash);
    mutex_unlock(&j->write_mutex);
    append_after(j, err);
    return err;
}

static berth_jerr lmdb_append_encoded(berth_journal *base, const berth_encoded *records,
                                      const berth_touched *touched, size_t n) {
    return encoded_append(journal_of(base), records, touched, n, false);
}

static berth_jerr lmdb_append_own(berth_journal *base, const berth_encoded *records,
                                  const berth_touched *touched, size_t n) {
    return encoded_append(journal_of(base), records, touched, n, true);
}

typedef struct snapshot_arg {
    uint64_t seq;
    const void *bytes;
    size_t len;
} snapshot_arg;

/* Each snapshot carries the whole state (the request-id window alone is
 * about 1.4 MB), so only the newest BERTH_SNAPSHOTS_KEPT_MAX are kept: older
 * states are still reached by replay, from genesis or an older kept one. */
static berth_jerr snapshots_prune(lmdb_journal *j, MDB_txn *txn) {
    MDB_stat st;
    int rc = mdb_stat(txn, j->dbi_snapshots, &st);
    if (rc != 0) {
        return BERTH_J_IO;
    }
    if (st.ms_entries <= BERTH_SNAPSHOTS_KEPT_MAX) {
        return BERTH_J_OK;
    }
    MDB_cursor *cursor;
    rc = mdb_cursor_open(txn, j->dbi_snapshots, &cursor);
    if (rc != 0) {
        return BERTH_J_IO;
    }
    size_t excess = st.ms_entries - BERTH_SNAPSHOTS_KEPT_MAX;
    MDB_val key, val;
    for (size_t i = 0; i < excess && rc == 0; i++) {
        rc = mdb_cursor_get(cursor, &key, &val, MDB_FIRST);
        if (rc == 0) rc = mdb_cursor_del(cursor, 0);
    }
    mdb_cursor_close(cursor);
    return rc == 0 ? BERTH_J_OK : BERTH_J_IO;
}

static berth_jerr snapshot_body(lmdb_journal *j, MDB_txn *txn, void *arg, bool *map_full) {
    snapshot_arg *snap = arg;
    MDB_val key = { sizeof(snap->seq), &snap->seq };
    MDB_val val = { snap->len, (void *)snap->bytes };
    int rc = mdb_put(txn, j->dbi_snapshots, &key, &val, 0);
    if (rc != 0) {
        return put_err(rc, map_full);
    }
    return snapshots_prune(j, txn);
}

static berth_jerr lmdb_snapshot_put(berth_journal *base, uint64_t seq, const void *bytes,
                                    size_t len) {
    lmdb_journal *j = journal_of(base);
    assert(seq > 0 && bytes != NULL && len > 0);
    if (j->read_only) {
        return BERTH_J_READONLY;
    }
    if (len > SNAPSHOT_BYTES_MAX || j->rebuild) {
        return BERTH_J_INVALID;
    }
    if (atomic_load(&j->broken)) {
        return BERTH_J_IO;
    }
    mutex_lock(&j->write_mutex);
    berth_jerr err = BERTH_J_INVALID;
    if (seq <= j->head_seq) {
        snapshot_arg snap = { seq, bytes, len };
        err = write_with_growth(j, snapshot_body, &snap, 2 * (uint64_t)len);
    }
    mutex_unlock(&j->write_mutex);
    return err;
}

/* ---- durability (defer_meta_sync) ----------------------------------- */

/* After a commit (rc its mdb_txn_commit result, err the verdict): its data
 * sync made the meta page before it durable, and that meta carried head_seq
 * (not yet moved: the caller holds write_mutex and updates the head after
 * this). An I/O error may have come from the sync itself, so it is sticky.
 * Any other failure but MDB_MAP_FULL may have too (ENOSPC and EDQUOT come
 * from fdatasync as well as from pwrite): the meta page before it is
 * suspect, and the next successful commit syncs its own meta at once. A
 * commit that succeeded stays OK even if that sync fails: it is committed,
 * only not durable, and the sync failure is sticky. */
static berth_jerr durable_after_commit(lmdb_journal *j, int rc, berth_jerr err) {
    assert((rc == 0) == (err == BERTH_J_OK));
    if (!j->defer_meta_sync) {
        return err;
    }
    if (err == BERTH_J_IO) {
        atomic_store(&j->sync_failed, true);
        return err;
    }
    if (rc != 0) {
        j->meta_suspect = j->meta_suspect || rc != MDB_MAP_FULL;
        return err;
    }
    if (j->meta_suspect) {
        if (mdb_env_sync(j->env, 1) != 0) {
            atomic_store(&j->sync_failed, true);
            return BERTH_J_OK;
        }
        j->meta_suspect = false;   /* this commit's meta, over every record, is on disk */
    }
    mutex_lock(&j->head_mutex);
    assert(j->durable_seq <= j->head_seq);
    j->durable_seq = j->head_seq;
    mutex_unlock(&j->head_mutex);
    return BERTH_J_OK;
}

/* The write transaction of a meta page and nothing else: it rewrites the
 * store format key with the value meta_check found, so the content stays
 * the same while LMDB copies the touched pages and commits (and syncs) a
 * new meta page over the current tree. It grows the map only if it must:
 * a few pages do not justify moving a map readers may hold. Caller holds
 * write_mutex. */
static berth_jerr meta_rewrite_body(lmdb_journal *j, MDB_txn *txn, void *arg, bool *map_full) {
    (void)arg;
    uint32_t format = j->format;
    MDB_val key = format_key;
    MDB_val val = { sizeof(format), &format };
    int rc = mdb_put(txn, j->dbi_meta, &key, &val, 0);
    return rc == 0 ? BERTH_J_OK : put_err(rc, map_full);
}

static berth_jerr meta_rewrite(lmdb_journal *j) {
    assert(!j->read_only);
    return write_growing_if_full(j, meta_rewrite_body, NULL, meta_rewrite_need_bytes);
}

static berth_jerr lmdb_durable(berth_journal *base, uint64_t *seq) {
    lmdb_journal *j = journal_of(base);
    if (j->read_only) {
        return BERTH_J_READONLY;
    }
    mutex_lock(&j->head_mutex);
    *seq = j->defer_meta_sync ? j->durable_seq : j->head_seq;
    assert(*seq <= j->head_seq);
    mutex_unlock(&j->head_mutex);
    return BERTH_J_OK;
}

/* One fdatasync of the data file: covers the last commit's meta page. */
static berth_jerr lmdb_sync(berth_journal *base) {
    lmdb_journal *j = journal_of(base);
    if (j->read_only) {
        return BERTH_J_READONLY;
    }
    if (!j->defer_meta_sync) {
        return BERTH_J_OK;   /* every commit was durable on return */
    }
    if (atomic_load(&j->broken) || atomic_load(&j->sync_failed)) {
        return BERTH_J_IO;
    }
    mutex_lock(&j->write_mutex);   /* no commit moves the head meanwhile */
    if (j->meta_suspect) {
        /* A plain sync cannot prove a meta page the disk may have dropped:
         * commit a fresh one, which durable_after_commit syncs. Its OK says
         * the commit happened, not that the sync did (an append needs no
         * more): this call's OK promises durable == head, and a commit log
         * frees its file on it, so a failed sync there is this call's
         * failure. */
        berth_jerr err = meta_rewrite(j);
        if (err == BERTH_J_OK && atomic_load(&j->sync_failed)) {
            err = BERTH_J_IO;   /* durable_after_commit moved durable to head unless this */
        }
        mutex_unlock(&j->write_mutex);
        return err;
    }
    uint64_t head = j->head_seq;
    int rc = mdb_env_sync(j->env, 1);
    bool no_room = rc == ENOSPC || rc == EDQUOT;
    if (no_room) {
        /* As for a commit that failed so (durable_after_commit): the
         * kernel may have dropped the meta page this sync was to prove,
         * and no plain sync can prove it again; a fresh meta page can, so
         * this is not sticky. Nothing new is called durable. */
        j->meta_suspect = true;
    } else if (rc != 0) {
        atomic_store(&j->sync_failed, true);
    } else {
        mutex_lock(&j->head_mutex);
        assert(j->durable_seq <= head && head == j->head_seq);
        j->durable_seq = head;
        mutex_unlock(&j->head_mutex);
    }
    mutex_unlock(&j->write_mutex);
    if (rc == 0) {
        folder_poke(j);
    }
    return rc == 0 ? BERTH_J_OK : no_room ? BERTH_J_FULL : BERTH_J_IO;
}

/* ---- readers --------------------------------------------------------- */

/* This process's map is smaller than the data a writer committed: adopt
 * the writer's size, with no reader of ours open. */
static berth_jerr map_adopt(lmdb_journal *j) {
    if (!gate_resize_begin(&j->gate, grow_wait_ms_max)) {
        return BERTH_J_IO;
    }
    int rc = mdb_env_set_mapsize(j->env, 0);
    if (rc != 0) {
        atomic_store(&j->broken, true);
    }
    gate_resize_end(&j->gate);
    return rc == 0 ? BERTH_J_OK : BERTH_J_IO;
}

/* ---- copy ------------------------------------------------------------ */

/* A copy's write failed for room where it goes (EFBIG: a file size limit). */
static berth_jerr copy_err(int rc) {
    return rc == ENOSPC || rc == EDQUOT || rc == EFBIG ? BERTH_J_FULL : rc == ENOMEM ? BERTH_J_NOMEM : BERTH_J_IO;
}

/* LMDB's plain copy (mdb_env_copyfd2, no compaction: the road with no
 * page-leak failure mode) takes its own read transaction, after blocking
 * the writer just long enough to read the meta pages, so what it writes is
 * one committed state. It may find the writer grew the map since this
 * process last looked (MDB_MAP_RESIZED): adopt, as a reader does, and try
 * again on a file emptied first. Inside the gate: no remap of ours meanwhile. */
static int copy_into(lmdb_journal *j, int fd) {
    int rc = EIO;
    for (uint32_t attempt = 0; attempt < remap_attempts_max; attempt++) {
        if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0) {
            return errno;
        }
        gate_reader_enter(&j->gate);
        rc = atomic_load(&j->broken) ? EIO : mdb_env_copyfd2(j->env, fd, 0);
        gate_reader_leave(&j->gate);
        if (rc != MDB_MAP_RESIZED) {
            return rc;
        }
        if (map_adopt(j) != BERTH_J_OK) {
            return EIO;
        }
    }
    return rc;
}

static berth_jerr lmdb_copy(berth_journal *base, const char *dest_dir, char *err, size_t err_size) {
    lmdb_journal *j = journal_of(base);
    char path[path_len_max];
    if (!path_join(path, dest_dir, "data.mdb")) {
        berth_jsay(err, err_size, "the path %s/data.mdb is too long", dest_dir);
        return BERTH_J_INVALID;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        berth_jsay(err, err_size, "cannot create %s: %s", path, strerror(e));
        return e == EEXIST || e == ENOENT ? BERTH_J_INVALID : copy_err(e);
    }
    int rc = copy_into(j, fd);
    const char *step = "copying the journal into";
    if (rc == 0 && fsync(fd) != 0) {
        rc = errno;
        step = "syncing";
    }
    if (close(fd) != 0 && rc == 0) {
        rc = errno;
        step = "closing";
    }
    if (rc == 0 && (rc = berth_dir_sync(dest_dir)) != 0) {
        step = "syncing the directory of";
    }
    if (rc != 0) {
        berth_jsay(err, err_size, "%s %s failed: %s", step, path, mdb_strerror(rc));
        return copy_err(rc);
    }
    return BERTH_J_OK;
}

static berth_jerr lmdb_reader_open(berth_journal *base, berth_journal_reader **out) {
    lmdb_journal *j = journal_of(base);
    lmdb_reader *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return BERTH_J_NOMEM;
    }
    r->base.ops = &lmdb_ops;
    r->journal = j;
    for (uint32_t attempt = 0; attempt < remap_attempts_max; attempt++) {
        gate_reader_enter(&j->gate);
        int rc = atomic_load(&j->broken) ? EIO : mdb_txn_begin(j->env, NULL, MDB_RDONLY, &r->txn);
        if (rc == 0) {
            *out = &r->base;
            return BERTH_J_OK;
        }
        gate_reader_leave(&j->gate);
        berth_jerr err = rc == MDB_MAP_RESIZED ? map_adopt(j) : jerr_of_mdb(rc);
        if (err != BERTH_J_OK) {
            free(r);
            return err == BERTH_J_NOTFOUND ? BERTH_J_IO : err;
        }
    }
    free(r);
    return BERTH_J_IO;
}

static void lmdb_reader_close(berth_journal_reader *base) {
    lmdb_reader *r = reader_of(base);
    assert(r->txn != NULL);
    mdb_txn_abort(r->txn);
    gate_reader_leave(&r->journal->gate);
    free(r);
}

static berth_jerr lmdb_reader_head(berth_journal_reader *base, uint64_t *seq,
                                   uint8_t hash[BERTH_HASH_LEN]) {
    lmdb_reader *r = reader_of(base);
    return txn_head(r->journal, r->txn, seq, hash, NULL, 0);
}

static berth_jerr lmdb_read_raw(berth_journal_reader *base, uint64_t seq, const uint8_t **raw,
                                size_t *raw_len) {
    lmdb_reader *r = reader_of(base);
    MDB_val key = { sizeof(seq), &seq };
    MDB_val val;
    int rc = mdb_get(r->txn, r->journal->dbi_journal, &key, &val);
    if (rc != 0) {
        return rc == MDB_NOTFOUND ? BERTH_J_NOTFOUND : jerr_of_mdb(rc);
    }
    *raw = val.mv_data;
    *raw_len = val.mv_size;
    return BERTH_J_OK;
}

/* Cache hints ahead of a journal walk. A record's node is the first thing
 * the cursor touches, and it came from memory on every record: the walk
 * reads each node to learn where the next one is, so the misses queue one
 * behind the other. LMDB lays out a leaf page's nodes from its end
 * downwards, so the records after this one in the page sit just below it;
 * and an append-only journal's leaf pages mostly follow each other upwards
 * in the map (in the 10M-record bench journal, 61% of page changes go to
 * the very next page, 29% to one 2 to 15 pages on; docs/bench.md,
 * "Session 19"). So each step hints the CURSOR_HINT_AHEAD_BYTES below the
 * record it returns, and entering a page hints the next page's header and
 * its first records. A hint is only a hint: a wrong guess costs a line of
 * bandwidth, and a prefetch never faults, whatever the address. A record
 * in overflow pages (a few KB or more) is hinted around as if it were in
 * a leaf: only wasted hints. */
#define CURSOR_HINT_AHEAD_BYTES 1024u     /* about four records of the bench journal */
#define CURSOR_LINE_BYTES 64u

static berth_jerr lmdb_cursor_open(berth_journal_reader *base, uint64_t from,
                                   berth_journal_cursor **out) {
    lmdb_reader *r = reader_of(base);
    assert(from >= 1);
    lmdb_cursor *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return BERTH_J_NOMEM;
    }
    int rc = mdb_cursor_open(r->txn, r->journal->dbi_journal, &c->cursor);
    if (rc != 0) {
        free(c);
        return jerr_of_mdb(rc);
    }
    c->base.ops = &lmdb_ops;
    c->expect = from;
    MDB_stat st;
    if (mdb_env_stat(mdb_txn_env(r->txn), &st) == 0 && st.ms_psize >= 2 * CURSOR_HINT_AHEAD_BYTES &&
        (st.ms_psize & (st.ms_psize - 1)) == 0) {
        c->page_bytes = st.ms_psize;   /* the OS page: 4 KiB here, 16 or 64 KiB on some arm64 and ppc64 */
    }
    *out = &c->base;
    return BERTH_J_OK;
}

static void cursor_hint_ahead(lmdb_cursor *c, uintptr_t at) {
    const uintptr_t page_bytes = c->page_bytes;
    if (page_bytes == 0) return;
    uintptr_t page = at & ~(page_bytes - 1);
    if (page != c->hint_page) {
        c->hint_page = page;
        c->hint_low = at & ~(uintptr_t)(CURSOR_LINE_BYTES - 1);
        uintptr_t next = page + page_bytes;
        __builtin_prefetch((const void *)next);
        for (uintptr_t a = next + page_bytes - CURSOR_HINT_AHEAD_BYTES; a < next + page_bytes;
             a += CURSOR_LINE_BYTES) {
            __builtin_prefetch((const void *)a);
        }
    }
    /* Down to the line above the page's header: the cursor read that one. */
    uintptr_t floor = at - page > CURSOR_HINT_AHEAD_BYTES ? at - CURSOR_HINT_AHEAD_BYTES : page;
    while (c->hint_low > floor + CURSOR_LINE_BYTES) {
        c->hint_low -= CURSOR_LINE_BYTES;
        __builtin_prefetch((const void *)c->hint_low);
    }
    assert(c->hint_low >= page);
}

static berth_jerr lmdb_cursor_next_raw(berth_journal_cursor *base, uint64_t *seq,
                                       const uint8_t **raw, size_t *raw_len) {
    lmdb_cursor *c = cursor_of(base);
    if (c->failed) {
        *seq = c->expect;
        return BERTH_J_CORRUPT;
    }
    MDB_val key = { sizeof(c->expect), &c->expect };
    MDB_val val;
    int rc = mdb_cursor_get(c->cursor, &key, &val, c->started ? MDB_NEXT : MDB_SET_RANGE);
    c->started = true;
    if (rc == MDB_NOTFOUND) {
        return BERTH_J_NOTFOUND;
    }
    if (rc != 0) {
        return jerr_of_mdb(rc);
    }
    uint64_t got = 0;
    if (key.mv_size == sizeof(got)) {
        memcpy(&got, key.mv_data, sizeof(got));
    }
    if (got != c->expect) {
        c->failed = true;   /* a gap (or a bad key): every later seq is suspect */
        *seq = c->expect;
        return BERTH_J_CORRUPT;
    }
    c->expect++;
    *seq = got;
    *raw = val.mv_data;
    *raw_len = val.mv_size;
    cursor_hint_ahead(c, (uintptr_t)val.mv_data);
    return BERTH_J_OK;
}

static void lmdb_cursor_close(berth_journal_cursor *base) {
    lmdb_cursor *c = cursor_of(base);
    mdb_cursor_close(c->cursor);
    free(c);
}

static berth_jerr lmdb_snapshot_get(berth_journal_reader *base, uint64_t max_seq,
                                    uint64_t *seq, const void **bytes, size_t *len) {
    lmdb_reader *r = reader_of(base);
    MDB_cursor *cursor;
    int rc = mdb_cursor_open(r->txn, r->journal->dbi_snapshots, &cursor);
    if (rc != 0) {
        return jerr_of_mdb(rc);
    }
    uint64_t probe = max_seq;
    MDB_val key = { sizeof(probe), &probe };
    MDB_val val;
    rc = mdb_cursor_get(cursor, &key, &val, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND) {
        rc = mdb_cursor_get(cursor, &key, &val, MDB_LAST);   /* all are older */
    } else if (rc == 0 && memcmp(key.mv_data, &max_seq, sizeof(max_seq)) != 0) {
        rc = mdb_cursor_get(cursor, &key, &val, MDB_PREV);   /* first newer: step back */
    }
    mdb_cursor_close(cursor);
    if (rc != 0) {
        return rc == MDB_NOTFOUND ? BERTH_J_NOTFOUND : jerr_of_mdb(rc);
    }
    if (key.mv_size != sizeof(*seq)) {
        return BERTH_J_CORRUPT;
    }
    memcpy(seq, key.mv_data, sizeof(*seq));
    assert(*seq <= max_seq);
    *bytes = val.mv_data;
    *len = val.mv_size;
    return BERTH_J_OK;
}

static berth_jerr lmdb_snapshot_list(berth_journal_reader *base, uint64_t *seqs, size_t cap,
                                     size_t *n) {
    lmdb_reader *r = reader_of(base);
    MDB_stat st;
    int rc = mdb_stat(r->txn, r->journal->dbi_snapshots, &st);
    if (rc != 0) {
        return jerr_of_mdb(rc);
    }
    *n = st.ms_entries;
    MDB_cursor *cursor;
    rc = mdb_cursor_open(r->txn, r->journal->dbi_snapshots, &cursor);
    if (rc != 0) {
        return jerr_of_mdb(rc);
    }
    MDB_val key, val;
    size_t i = 0;
    rc = mdb_cursor_get(cursor, &key, &val, MDB_FIRST);
    while (rc == 0 && i < cap && key.mv_size == sizeof(uint64_t)) {
        memcpy(&seqs[i], key.mv_data, sizeof(uint64_t));
        i++;
        rc = mdb_cursor_get(cursor, &key, &val, MDB_NEXT);
    }
    mdb_cursor_close(cursor);
    if (rc == 0 && i < cap) {
        return BERTH_J_CORRUPT;   /* a key that is not a u64 seq */
    }
    return rc == 0 || rc == MDB_NOTFOUND ? BERTH_J_OK : jerr_of_mdb(rc);
}

/* The folded half: history entries from..upto for the key, in txn's dbi
 * (the history environment's, or a legacy store's own). */
static berth_jerr history_folded(MDB_txn *txn, MDB_dbi dbi, const uint8_t *key_bytes,
                                 size_t key_len, uint64_t from, uint64_t upto, uint64_t *seqs,
                                 size_t cap, size_t *n) {
    uint8_t from_be[8];
    be64_put(from_be, from);
    MDB_val key = { key_len, (void *)key_bytes };
    MDB_val val = { 8, from_be };
    MDB_cursor *cursor;
    int rc = mdb_cursor_open(txn, dbi, &cursor);
    if (rc != 0) {
        return jerr_of_mdb(rc);
    }
    rc = mdb_cursor_get(cursor, &key, &val, MDB_GET_BOTH_RANGE);
    while (rc == 0 && *n < cap) {
        if (val.mv_size != 8) {
            rc = MDB_CORRUPTED;
            break;
        }
        uint64_t seq = be64_get(val.mv_data);
        if (seq > upto) {
            break;
        }
        seqs[(*n)++] = seq;
        rc = mdb_cursor_get(cursor, &key, &val, MDB_NEXT_DUP);
    }
    mdb_cursor_close(cursor);
    return rc == 0 || rc == MDB_NOTFOUND ? BERTH_J_OK : jerr_of_mdb(rc);
}

/* The history environment's half, from..upto (upto <= folded): the
 * history db holds records 1..legacy_end (an index made before runs), the
 * runs the rest. */
static berth_jerr history_index(lmdb_journal *j, MDB_txn *htxn, const uint8_t *key_bytes,
                                size_t key_len, uint64_t folded, uint64_t from, uint64_t upto,
                                uint64_t *seqs, size_t cap, size_t *n) {
    assert(upto <= folded);
    uint64_t legacy_end = 0;
    berth_jerr err = hist_legacy_end(j, htxn, folded, &legacy_end);
    if (err == BERTH_J_OK && legacy_end > 0 && from <= legacy_end) {
        uint64_t legacy_upto = upto < legacy_end ? upto : legacy_end;
        err = history_folded(htxn, j->hdbi_history, key_bytes, key_len, from, legacy_upto, seqs,
                             cap, n);
    }
    uint64_t runs_from = from > legacy_end ? from : legacy_end + 1;
    if (err == BERTH_J_OK && j->hruns_open && *n < cap && runs_from <= upto) {
        int rc = hist_runs_read(htxn, &j->hruns, key_bytes, key_len, runs_from, upto, seqs, cap, n);
        err = rc == 0 ? BERTH_J_OK : jerr_of_mdb(rc);
    }
    return err;
}

static bool touch_has(const MDB_val *val, char kind, berth_str name, bool *bad) {
    size_t at = 0;
    char k;
    berth_str found;
    while (touch_next(val, &at, &k, &found, bad)) {
        if (k == kind && found.len == name.len && memcmp(found.ptr, name.ptr, name.len) == 0) {
            return true;
        }
    }
    return false;
}

/* The unfolded half: touchlog entries from `from` that name the key. */
static berth_jerr history_tail(lmdb_reader *r, char kind, berth_str name, uint64_t from,
                               uint64_t *seqs, size_t cap, size_t *n) {
    MDB_cursor *cursor;
    int rc = mdb_cursor_open(r->txn, r->journal->dbi_touchlog, &cursor);
    if (rc != 0) {
        return jerr_of_mdb(rc);
    }
    MDB_val key = { sizeof(from), &from };
    MDB_val val;
    bool bad = false;
    rc = mdb_cursor_get(cursor, &key, &val, MDB_SET_RANGE);
    while (rc == 0 && *n < cap && !bad) {
        if (key.mv_size != sizeof(uint64_t)) {
            bad = true;
            break;
        }
        if (touch_has(&val, kind, name, &bad)) {
            memcpy(&seqs[(*n)++], key.mv_data, sizeof(uint64_t));
        }
        rc = mdb_cursor_get(cursor, &key, &val, MDB_NEXT);
    }
    mdb_cursor_close(cursor);
    if (bad) {
        return BERTH_J_CORRUPT;
    }
    return rc == 0 || rc == MDB_NOTFOUND ? BERTH_J_OK : jerr_of_mdb(rc);
}

/* A read-only open of a format 1 store reads history from this
 * environment; a writer may have migrated the store since (dropping that
 * db and folded_seq, which would read as no names at all). The format in
 * the reader's own snapshot decides: once it is 2 this open cannot answer
 * (it has no history environment open) and says so, once, instead of
 * answering short. */
static berth_jerr legacy_still(lmdb_reader *r) {
    lmdb_journal *j = r->journal;
    MDB_val key = format_key;
    MDB_val val;
    int rc = mdb_get(r->txn, j->dbi_meta, &key, &val);
    if (rc != 0) {
        return rc == MDB_NOTFOUND ? BERTH_J_CORRUPT : jerr_of_mdb(rc);
    }
    uint32_t format = 0;
    if (val.mv_size == sizeof(format)) {
        memcpy(&format, val.mv_data, sizeof(format));
    }
    if (format == store_format_legacy) {
        return BERTH_J_OK;
    }
    if (!atomic_exchange(&j->upgrade_told, true)) {
        fprintf(stderr, "berth journal: the store in %s was upgraded (store format 1 -> 2) while"
                " this reader had it open; reopen it to read HISTORY\n", j->dir);
    }
    return BERTH_J_IO;
}

/* A legacy (format 1) store, read-only: history in this environment up to
 * the folded_seq in meta, touchlog after it, all in the reader's one
 * transaction. Without folded_seq (pre-touchlog) history is the whole index. */
static berth_jerr history_legacy(lmdb_reader *r, char kind, berth_str name,
                                 const uint8_t *key_bytes, size_t key_len, uint64_t from,
                                 uint64_t *seqs, size_t cap, size_t *n) {
    lmdb_journal *j = r->journal;
    berth_jerr err = legacy_still(r);
    if (err != BERTH_J_OK) {
        return err;
    }
    uint64_t folded = 0;
    bool present = false;
    err = meta_u64_get(r->txn, j->dbi_meta, &folded_key, &folded, &present);
    if (err == BERTH_J_OK && !present && j->has_touchlog) {
        /* names past an unknown fold point would go missing: no short list */
        MDB_stat st;
        int rc = mdb_stat(r->txn, j->dbi_touchlog, &st);
        err = rc != 0 ? jerr_of_mdb(rc) : st.ms_entries > 0 ? BERTH_J_CORRUPT : BERTH_J_OK;
    }
    if (err == BERTH_J_OK) {
        err = history_folded(r->txn, j->dbi_history, key_bytes, key_len, from, UINT64_MAX, seqs,
                             cap, n);
    }
    if (err == BERTH_J_OK && present && j->has_touchlog && *n < cap) {
        uint64_t tail_from = from > folded ? from : folded + 1;
        assert(*n == 0 || seqs[*n - 1] < tail_from);
        err = history_tail(r, kind, name, tail_from, seqs, cap, n);
    }
    return err;
}

/* See "Queries" in the file's opening comment for why this is exact: the
 * main snapshot (the reader's) is opened before the history snapshot. */
static berth_jerr lmdb_history(berth_journal_reader *base, berth_history_kind kind,
                               berth_str name, uint64_t from, uint64_t *seqs, size_t cap,
                               size_t *n) {
    lmdb_reader *r = reader_of(base);
    lmdb_journal *j = r->journal;
    *n = 0;
    if (j->rebuild) {
        return BERTH_J_INVALID;   /* its index is the one being built */
    }
    if (cap == 0 || name.len == 0 || name.len > BERTH_NAME_LEN_MAX) {
        return BERTH_J_OK;   /* no such name can be in the index */
    }
    uint8_t key_bytes[history_key_len_max];
    key_bytes[0] = (uint8_t)kind;
    memcpy(key_bytes + 1, name.ptr, name.len);
    size_t key_len = 1 + (size_t)name.len;
    if (j->format == store_format_legacy) {
        berth_jerr err = history_legacy(r, (char)kind, name, key_bytes, key_len, from, seqs, cap,
                                        n);
        if (err != BERTH_J_OK) {
            *n = 0;
        }
        return err;
    }
    uint64_t head = 0;
    uint64_t trimmed = 0;
    bool present = false;
    int rc = journal_last_seq(j, r->txn, &head);
    berth_jerr err = rc == 0 ? BERTH_J_OK : jerr_of_mdb(rc);
    if (err == BERTH_J_OK) err = meta_u64_get(r->txn, j->dbi_meta, &trimmed_key, &trimmed, &present);
    if (err == BERTH_J_OK && !present) err = BERTH_J_CORRUPT;
    uint64_t folded = 0;   /* the history snapshot's folded_seq */
    MDB_txn *htxn = NULL;
    if (err == BERTH_J_OK && j->henv != NULL) {
        err = hist_read_begin(j, &htxn);   /* after the main snapshot: see "Queries" */
        if (err == BERTH_J_OK) err = hist_folded_get(j, htxn, &folded);
    }
    if (err == BERTH_J_OK && folded < trimmed) {
        /* cannot happen (the trim waits for the fold); a history environment
         * replaced behind the writer's back, or a missing one, would */
        err = j->henv == NULL ? BERTH_J_IO : BERTH_J_CORRUPT;
    }
    uint64_t upto = folded < head ? folded : head;
    if (err == BERTH_J_OK && htxn != NULL) {
        err = history_index(j, htxn, key_bytes, key_len, folded, from, upto, seqs, cap, n);
    }
    if (htxn != NULL) {
        hist_read_end(j, htxn);
    }
    if (err == BERTH_J_OK && *n < cap) {
        uint64_t tail_from = from > upto ? from : upto + 1;
        assert(*n == 0 || seqs[*n - 1] < tail_from);
        err = history_tail(r, (char)kind, name, tail_from, seqs, cap, n);
    }
    if (err != BERTH_J_OK) {
        *n = 0;
    }
    return err;
}

/* A read-only open: a format 2 store's history environment, read-only
 * (LMDB's reader table, no directory lock). None there is fine only while
 * the touch log was never trimmed (a writer that died between creating the
 * store and creating it): touchlog then holds every name. */
static berth_jerr history_open_read_only(lmdb_journal *j, char *err, size_t err_size) {
    assert(j->read_only);
    if (j->format == store_format_legacy) {
        return BERTH_J_OK;
    }
    berth_jerr jerr = hist_env_open(j, 0, err, err_size);
    if (jerr == BERTH_J_CORRUPT) {
        hist_rebuild_hint(j, err, err_size);
    }
    if (jerr != BERTH_J_NOTFOUND) {
        return jerr;
    }
    MDB_txn *txn;
    int rc = mdb_txn_begin(j->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        sentence(err, err_size, "cannot read the journal in %s: %s", j->dir, mdb_strerror(rc));
        return jerr_of_mdb(rc);
    }
    uint64_t trimmed = 0;
    bool present = false;
    jerr = meta_u64_get(txn, j->dbi_meta, &trimmed_key, &trimmed, &present);
    mdb_txn_abort(txn);
    if (jerr == BERTH_J_OK && present && trimmed == 0) {
        return BERTH_J_OK;
    }
    sentence(err, err_size, "the history index %s/history is missing (or empty) and the touch"
             " log was trimmed%s: HISTORY cannot be answered", j->dir, "");
    hist_rebuild_hint(j, err, err_size);
    return BERTH_J_CORRUPT;
}

/* A resize of this process's map waits for its readers: long ones should
 * close theirs now (and open a new one, which waits out the resize). */
static bool lmdb_readers_wanted(berth_journal *base) {
    return atomic_load(&journal_of(base)->gate.wanted);
}

/* Reader slots of processes that died inside a read transaction (a child
 * that berthd forked for a job and damaged pages killed) stay taken in the
 * lock file and pin the pages their snapshot saw, so the map grows instead
 * of reusing them, until someone clears them. */
static berth_jerr lmdb_readers_clear_dead(berth_journal *base, uint32_t *cleared) {
    lmdb_journal *j = journal_of(base);
    int dead = 0;
    int rc = mdb_reader_check(j->env, &dead);
    if (rc != MDB_SUCCESS) {
        return BERTH_J_IO;
    }
    *cleared = (uint32_t)dead;
    if (j->henv != NULL) {
        dead = 0;
        rc = mdb_reader_check(j->henv, &dead);
        if (rc != MDB_SUCCESS) {
            return BERTH_J_IO;
        }
        *cleared += (uint32_t)dead;
    }
    return BERTH_J_OK;
}

static const berth_journal_ops lmdb_ops = {
    .name = "lmdb",
    .close = lmdb_close,
    .head = lmdb_head,
    .append = lmdb_append,
    .append_encoded = lmdb_append_encoded,
    .append_own = lmdb_append_own,
    .snapshot_put = lmdb_snapshot_put,
    .durable = lmdb_durable,
    .sync = lmdb_sync,
    .readers_wanted = lmdb_readers_wanted,
    .readers_clear_dead = lmdb_readers_clear_dead,
    .maintain = NULL,   /* the folder thread folds: nothing is left to the caller */
    .size = lmdb_size,
    .copy = lmdb_copy,
    .fold_stats = lmdb_fold_stats,
    .reader_open = lmdb_reader_open,
    .reader_close = lmdb_reader_close,
    .reader_head = lmdb_reader_head,
    .read_raw = lmdb_read_raw,
    .cursor_open = lmdb_cursor_open,
    .cursor_next_raw = lmdb_cursor_next_raw,
    .cursor_close = lmdb_cursor_close,
    .snapshot_get = lmdb_snapshot_get,
    .snapshot_list = lmdb_snapshot_list,
    .history = lmdb_history,
    .history_rebuild_add = lmdb_history_rebuild_add,
    .history_rebuild_finish = lmdb_history_rebuild_finish,
};
