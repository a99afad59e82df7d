/* batch.c — group commit: stage writes, commit on a committer thread, then
 * release replies.
 *
 * Owns the open batch (one entry per command read since it was last handed
 * off, holding the client to answer and the engine's staged result), the
 * batch in flight (handed to the committer thread, waiting to be durable),
 * the committer thread itself, and the commit latency histogram (fixed
 * buckets, so percentiles cost no allocation).
 *
 * Why a committer thread: a durable LMDB commit is one or two syncs of the disk.
 * Done on the loop thread, every client waits while the disk syncs and the
 * disk idles while the loop parses, applies and replies. With the commit on
 * its own thread the loop reads, parses and applies the next batch while the
 * previous one syncs, so the disk and the CPU work at the same time.
 * Committing on the loop: with the commit log, a batch is one frame, a
 * write and one sync; on a disk that syncs in a fraction of a millisecond
 * the loop writes it itself (pipe_run_on_loop, when the committer is
 * idle), as Redis's appendfsync always does, since then the two wake-ups a
 * hand-off costs (the committer's, then the loop's) are what a reply waits
 * on when the cores are busy, more than the sync. --commit-on-loop auto
 * (the default) does so while the frames' write and sync average under
 * --commit-on-loop-us (1 ms), and hands them to the committer on a slower
 * disk, where the overlap above is worth more. Either thread runs the same
 * pipe_run; the mutex's flags (busy, on_loop, running, idle_working) let one
 * run at a time, so the fields marked "thread only" have one owner at any
 * moment.
 * Measured: docs/bench-server.md, "Session 21".
 *
 * How it stays correct. The engine appends to a journal; berthd hands it a
 * "pipe" journal (below) whose append copies the batch's records and returns
 * at once, and whose snapshot_put copies the snapshot; the committer thread
 * then appends the copy to the real (LMDB) journal. So the engine's state
 * runs ahead of the disk by at most one batch in flight plus the open batch.
 * Syncing a commit. berthd opens LMDB with defer_meta_sync: a commit
 * syncs its data pages once and leaves its meta page to a later sync
 * (journal.h; the argument is in journal/lmdb_store.c), and the journal
 * says which seq is durable. The committer syncs right after each commit
 * (pipe_run), so a committed batch is normally durable when reported. If
 * that sync fails, the batch moves from "in flight" to "unsynced", its
 * replies still held, until berth_journal_durable covers its last seq: the
 * next commit's data sync does that, or, when nothing is staged to commit,
 * a sync the loop asks the committer for, so an unsynced batch never waits
 * for traffic that may not come. At most one batch is unsynced: a
 * successful commit always covers the one before it.
 *
 * The rule "no client sees the effect of a command that is not durable"
 * holds because nothing derived from that state leaves the process early:
 *   - a write's reply is held in its batch entry until the journal reports
 *     its batch durable (a RETRY or CONFLICT entry sits in a later or the
 *     same batch as the record it names, and batches become durable in
 *     order), and a batch of refusals only, which writes nothing, is
 *     answered only once every batch before it is durable;
 *   - a command that reads the state (a query, INFO, WATCH, AT, ...) first
 *     waits until the batch in flight, the open batch and the unsynced one
 *     are durable (batch_state_durable), so it reads a state that equals the
 *     durable journal (and a reader opened then sees only durable records);
 *     and any other command from a client with held replies waits for them,
 *     so replies keep their order. On this road the client waits parked
 *     (commands.c, networking.c): its command stays unparsed while the loop
 *     serves everyone else and the committer drains; so does a write that
 *     finds the open batch full (batch_submit), until the batch is handed
 *     off; batch_flush, which blocks the loop, is left for shutdown (and
 *     for an empty open batch the engine still calls full);
 *   - WATCH gets records only from watch_committed, called with the durable
 *     range, and catch-up reads the journal, which holds only durable
 *     records; the head shown anywhere is the durable head;
 *   - at most one batch is in flight: the next is handed off only after the
 *     committer has reported the last (and written its snapshot, if one
 *     was queued), and the one committer thread runs its jobs in turn
 *     (the journal's upkeep after a commit delays the next batch, never
 *     reorders it), so the journal receives batches in seq order, each
 *     chained on the one before.
 * If a commit fails, an unsynced batch is settled first (synced and
 * answered, so no client's replies change order); then the failed batch,
 * and the open batch staged on top of it, are answered with the error (a
 * repeated REQID whose original is committed hears its outcome, or that it
 * is unknown, never "not applied"); then the engine is reopened from the
 * journal, so memory equals disk again before any further command runs. If
 * a sync fails, the unsynced batch's outcome is unknown (the journal refuses
 * to call it durable, yet it may survive): its writers hear so, and berthd
 * stops, since its state may hold effects that a crash would undo.
 * The etcd journal (replication.c) keeps the synchronous path: its commit
 * is a network round trip that replication.c fences and watches itself. */
#define _GNU_SOURCE     /* pthread_setname_np */
#include "server.h"

#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "commit_log.h"

#define LATENCY_SUB_BUCKETS 4       /* per power of two: <= 19% error per bucket */
/* A copied batch's strings: the engine caps a batch's encoded bytes, and
 * touched names repeat names of the command text, plus their arrays. */
#define PIPE_BYTES_MAX (2 * (size_t)BERTH_BATCH_BYTES_MAX + \
                        (size_t)BERTH_BATCH_RECORDS_MAX * (BERTH_PLACEMENT_WORKERS_MAX + 1) * 24)
#define PIPE_SNAPSHOT_BYTES_MAX ((size_t)1 << 32)   /* far above any state this engine holds */
#define PIPE_ALIGN 8
/* The pipe copies what the engine staged in its arena, each string padded
 * to PIPE_ALIGN as the arena pads its own, so a copy needs at most what the
 * arena held plus one alignment: a batch the engine accepted never fails
 * here for room. */
_Static_assert(PIPE_BYTES_MAX >= BERTH_ENGINE_ARENA_BYTES_MAX + PIPE_ALIGN,
               "the committer pipe holds any batch the engine can stage");
#define BATCH_RELOAD_WHY_LEN_MAX 512     /* the engine's sentence when a reload fails */

/* ---- the committer thread and its pipe journal ------------------------- */

/* Where a batch's frame is written and synced ("Committing on the loop"). */
typedef enum pipe_on_loop_mode { PIPE_ON_LOOP_OFF = 0, PIPE_ON_LOOP_AUTO, PIPE_ON_LOOP_ON } pipe_on_loop_mode;
#define COMMIT_FRAME_AVG_SHIFT 3         /* each frame moves the average by 1/8 of its difference */

typedef struct pipe_journal {
    berth_journal base;             /* first: the engine appends here */
    berth_journal *inner;           /* the LMDB journal; owned by the server */
    server *server;
    pthread_t thread;
    bool started;
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    /* Under mutex. */
    bool work;                      /* a batch waits for the thread */
    bool work_sync;                 /* a berth_journal_sync waits for the thread */
    bool busy;                      /* handed off and not finished (snapshot included) */
    bool result_ready;              /* result holds the last batch's outcome */
    bool sync_ready;                /* sync_result holds the last sync's outcome */
    bool stop;
    berth_jerr result;
    berth_jerr sync_result;
    uint64_t durable;               /* the inner journal's durable seq after the last job */
    /* The copied batch: written by the loop while !busy, read by the thread
     * while busy. */
    berth_record *records;          /* BERTH_BATCH_RECORDS_MAX, owned */
    berth_touched *touched;         /* BERTH_BATCH_RECORDS_MAX, owned */
    bool has_touched;
    size_t n;
    uint8_t *bytes;                 /* the records' strings, owned */
    size_t bytes_cap;
    size_t bytes_used;
    uint8_t *snapshot;              /* owned */
    size_t snapshot_cap;
    size_t snapshot_len;
    uint64_t snapshot_seq;          /* 0: none queued */
    ev_async async;
    /* The commit log (--commit-log on; see "The commit log" below), or
     * NULL. Used by the thread only; owned by the server. */
    berth_clog *clog;
    /* Under mutex, with clog. */
    uint64_t checkpointed;          /* the LMDB journal's head after the last checkpoint */
    bool checkpoint_wanted;         /* the loop waits for LMDB to reach the durable head */
    berth_jerr stuck;               /* not OK: checkpoints fail (FULL; or AGAIN, NOMEM and
                                       the active file is half full): new writes are
                                       refused with it */
    berth_jerr checkpoint_fatal;    /* not OK: a checkpoint failed for good: berthd stops */
    uint64_t checkpoints;           /* that succeeded */
    uint64_t checkpoints_sealed;    /* of them, by the checkpointer thread */
    uint64_t checkpoint_failures;
    uint64_t full_checkpoint_failures;  /* of them, full ones (pipe_checkpoint) */
    uint64_t checkpoint_records;    /* records they moved into LMDB */
    uint64_t clog_used_bytes;       /* the log's frames not in LMDB, after the last job */
    bool retry_now;                 /* the loop blocks on a checkpoint: skip the retry pause */
    uint64_t retry_after_ns;        /* after a failed checkpoint: no policy retry before */
    berth_jerr last_failure;        /* the last checkpoint's error; OK after a success */
    bool ckpt_work;                 /* a sealed file waits for the checkpointer thread */
    bool ckpt_busy;                 /* handed to the checkpointer and not finished */
    bool ckpt_sealed;               /* a sealed file waits for its checkpoint (handed or
                                       failed and waiting for its retry) */
    bool ckpt_stop;
    /* The checkpointer thread (with clog). */
    pthread_t ckpt_thread;
    bool ckpt_started;
    pthread_cond_t ckpt_cond;       /* with mutex: ckpt_work or ckpt_stop was set. Its own,
                                       so that a commit's broadcast does not wake it */
    /* Its priority ("The checkpointer's priority"). ckpt_background is set
     * before the threads start; the atomics are shared by every thread. */
    bool ckpt_background;           /* may run at SCHED_IDLE while nothing waits for it */
    pid_t ckpt_tid;                 /* its kernel id, written before ckpt_lowered is first set */
    atomic_bool ckpt_lowered;       /* it asks for SCHED_IDLE (a holder's raise clears it) */
    atomic_bool ckpt_urgent;        /* something waits on it: the normal priority, until a
                                       checkpoint ends (pipe_checkpoint_done) */
    atomic_uint_fast64_t ckpt_prio_gen; /* bumped by every change of the two above */
    atomic_bool ckpt_idle;          /* the policy last applied was SCHED_IDLE */
    atomic_bool ckpt_holds;         /* it holds mutex (set after taking it, cleared before) */
    atomic_uint_fast64_t ckpt_boosts;   /* raises because something waited on it */
    atomic_uint_fast64_t ckpt_holder_raises;   /* raises because it held a lock wanted */
    atomic_uint_fast64_t ckpt_background_runs;   /* checkpoints it began at SCHED_IDLE */
    /* Committing on the loop ("Committing on the loop"), with clog. Under
     * mutex, but for the mode and its threshold (set before the threads
     * start) and the frames' average (written by whichever thread writes a
     * frame). */
    pipe_on_loop_mode on_loop_mode;
    uint64_t on_loop_frame_ns_max;  /* auto: on the loop while frames average under it */
    bool on_loop;                   /* the loop runs a batch's job itself: the thread-only
                                       fields below are the loop's until it clears this */
    bool idle_working;              /* the committer seals or checkpoints while idle: the loop
                                       hands batches to it meanwhile */
    bool running;                   /* the committer runs a job it took, tail included (it
                                       frees the slot before its tail): the same */
    bool wake_after_loop;           /* the committer waits for on_loop to clear */
    atomic_uint_fast64_t frame_ns_avg;  /* a frame's write and sync, averaged (1/8 each) */
    /* Thread only (the committer's, or the loop's while on_loop), with clog. */
    bool clog_broken;               /* an append failed its write or sync (sticky) */
    uint64_t active_records;        /* records logged in the active file since it was last
                                       sealed or checkpointed */
    uint64_t first_pending_ns;      /* when the active file's oldest frame was written;
                                       0: none */
    uint64_t last_frame_ns;         /* when the last frame was written */
    /* Loop only: the batch in the slot, for WATCH (batch_slot_records). */
    uint64_t slot_first_seq;
    size_t slot_count;
} pipe_journal;

static pipe_journal *pipe_of(berth_journal *base) {
    return (pipe_journal *)(void *)base;
}

static void pipe_ckpt_boost(pipe_journal *p);   /* "The checkpointer's priority" */
static void pipe_ckpt_boost_holder(pipe_journal *p);
static void pipe_ckpt_took_mutex(pipe_journal *p);
static void pipe_ckpt_unlock(pipe_journal *p);

/* The checkpointer may hold the mutex at SCHED_IDLE, preempted: then it is
 * raised before the wait ("The checkpointer's priority"). */
static void pipe_lock(pipe_journal *p) {
    if (pthread_mutex_trylock(&p->mutex) == 0) {
        return;
    }
    if (atomic_load(&p->ckpt_holds)) {
        pipe_ckpt_boost_holder(p);
    }
    int rc = pthread_mutex_lock(&p->mutex);
    assert(rc == 0);
}

static void pipe_unlock(pipe_journal *p) {
    int rc = pthread_mutex_unlock(&p->mutex);
    assert(rc == 0);
}

static size_t pipe_align(size_t at) {
    return (at + PIPE_ALIGN - 1) & ~(size_t)(PIPE_ALIGN - 1);
}

/* Bytes a batch's strings and worker arrays take once copied (with alignment). */
static size_t pipe_batch_bytes(const berth_record *records, const berth_touched *touched,
                               size_t n) {
    size_t need = 0;
    for (size_t i = 0; i < n; i++) {
        const berth_record *r = &records[i];
        need += pipe_align(r->actor.len) + pipe_align(r->reqid.len) +
                pipe_align(r->command.len) + pipe_align(r->sentence.len);
        if (touched != NULL) {
            const berth_touched *t = &touched[i];
            need += pipe_align(t->instance.len) + pipe_align(t->worker_count * sizeof(berth_str));
            for (uint32_t w = 0; w < t->worker_count; w++) {
                need += pipe_align(t->workers[w].len);
            }
        }
    }
    return need;
}

static void *pipe_take(pipe_journal *p, size_t size) {
    assert(p->bytes_used + pipe_align(size) <= p->bytes_cap);
    void *at = p->bytes + p->bytes_used;
    p->bytes_used += pipe_align(size);
    return at;
}

static berth_str pipe_copy_str(pipe_journal *p, berth_str s) {
    if (s.len == 0) {
        return berth_str_make("", 0);
    }
    char *at = pipe_take(p, s.len);
    memcpy(at, s.ptr, s.len);
    return berth_str_make(at, s.len);
}

static void pipe_copy_touched(pipe_journal *p, berth_touched *dst, const berth_touched *src) {
    dst->instance = pipe_copy_str(p, src->instance);
    dst->worker_count = src->worker_count;
    dst->workers = NULL;
    if (src->worker_count == 0) {
        return;
    }
    berth_str *workers = pipe_take(p, src->worker_count * sizeof(berth_str));
    for (uint32_t w = 0; w < src->worker_count; w++) {
        workers[w] = pipe_copy_str(p, src->workers[w]);
    }
    dst->workers = workers;
}

/* The engine's append: copy the batch (its strings live in the engine's
 * arena, reset when this returns) for the committer thread. Not yet durable:
 * batch.c holds every reply until the thread says so. */
static berth_jerr pipe_append(berth_journal *base, berth_record *records,
                              const berth_touched *touched, size_t n) {
    pipe_journal *p = pipe_of(base);
    assert(n >= 1 && n <= BERTH_BATCH_RECORDS_MAX);
    pipe_lock(p);
    bool free_slot = !p->busy && !p->work && p->n == 0;
    pipe_unlock(p);
    assert(free_slot && "batch.c hands off only to an idle committer");
    if (!free_slot) {
        return BERTH_J_INVALID;
    }
    size_t need = pipe_batch_bytes(records, touched, n);
    if (need > PIPE_BYTES_MAX) {
        return BERTH_J_INVALID;
    }
    if (need > p->bytes_cap) {
        uint8_t *bytes = realloc(p->bytes, need);
        if (bytes == NULL) {
            return BERTH_J_NOMEM;
        }
        p->bytes = bytes;
        p->bytes_cap = need;
    }
    p->bytes_used = 0;
    for (size_t i = 0; i < n; i++) {
        berth_record *dst = &p->records[i];
        *dst = records[i];
        dst->actor = pipe_copy_str(p, records[i].actor);
        dst->reqid = pipe_copy_str(p, records[i].reqid);
        dst->command = pipe_copy_str(p, records[i].command);
        dst->sentence = pipe_copy_str(p, records[i].sentence);
        if (touched != NULL) {
            pipe_copy_touched(p, &p->touched[i], &touched[i]);
        }
    }
    assert(p->bytes_used == need);
    p->has_touched = touched != NULL;
    p->n = n;
    p->slot_first_seq = records[0].seq;
    p->slot_count = n;
    return BERTH_J_OK;
}

/* The engine's snapshot: copied, and stored by the thread after the batch
 * it follows. A snapshot only shortens the next start, so its own failure
 * is logged, never answered. */
static berth_jerr pipe_snapshot_put(berth_journal *base, uint64_t seq, const void *bytes,
                                    size_t len) {
    pipe_journal *p = pipe_of(base);
    assert(seq > 0 && bytes != NULL && len > 0);
    pipe_lock(p);
    bool free_slot = !p->busy && !p->work;
    pipe_unlock(p);
    if (!free_slot || len > PIPE_SNAPSHOT_BYTES_MAX) {
        return BERTH_J_INVALID;
    }
    if (len > p->snapshot_cap) {
        uint8_t *copy = realloc(p->snapshot, len);
        if (copy == NULL) {
            return BERTH_J_NOMEM;
        }
        p->snapshot = copy;
        p->snapshot_cap = len;
    }
    memcpy(p->snapshot, bytes, len);
    p->snapshot_len = len;
    p->snapshot_seq = seq;
    return BERTH_J_OK;
}

/* Reads and sizes go to the real journal: they see only durable records. */
static berth_jerr pipe_head(berth_journal *base, uint64_t *seq, uint8_t hash[BERTH_HASH_LEN]) {
    return berth_journal_head(pipe_of(base)->inner, seq, hash);
}

static berth_jerr pipe_size(berth_journal *base, berth_journal_sizes *out) {
    return berth_journal_size(pipe_of(base)->inner, out);
}

static berth_jerr pipe_catch_up(pipe_journal *p);

static berth_jerr pipe_reader_open(berth_journal *base, berth_journal_reader **out) {
    /* Only the engine reads through the pipe: at its open, and when it
     * reloads after a failed commit, where it must find every durable
     * record, so with the commit log LMDB catches up first. */
    berth_jerr err = pipe_catch_up(pipe_of(base));
    if (err != BERTH_J_OK) {
        return err;
    }
    /* The reader is the real journal's: every later call dispatches there. */
    return berth_journal_reader_open(pipe_of(base)->inner, out);
}

static void pipe_stop(pipe_journal *p);

static void pipe_close(berth_journal *base) {
    pipe_stop(pipe_of(base));   /* the engine never closes its journal; batch_stop does */
}

/* Reader and cursor operations are absent: pipe_reader_open returns the
 * real journal's reader, whose own table serves them. */
static const berth_journal_ops pipe_ops = {
    .name = "pipe",
    .close = pipe_close,
    .head = pipe_head,
    .append = pipe_append,
    .snapshot_put = pipe_snapshot_put,
    .size = pipe_size,
    .reader_open = pipe_reader_open,
};

/* Wake the other side after a change made under the mutex. Outside it: a
 * thread woken while the signaller still holds the mutex would only block
 * again on the mutex (two more futex calls and a context switch). */
static void pipe_signal(pipe_journal *p) {
    int rc = pthread_cond_broadcast(&p->cond);
    assert(rc == 0);
}

/* The checkpointer's own wake-up: work handed, or the stop. */
static void pipe_ckpt_signal(pipe_journal *p) {
    int rc = pthread_cond_signal(&p->ckpt_cond);
    assert(rc == 0);
}

/* Committer thread (or the loop, on_loop), holding the mutex: what the
 * journal says is durable now. Only ever grows; a failure to say leaves the
 * last answer. */
static void pipe_note_durable(pipe_journal *p) {
    uint64_t durable = 0;
    if (berth_journal_durable(p->inner, &durable) == BERTH_J_OK && durable > p->durable) {
        p->durable = durable;
    }
}

/* ---- the commit log ----------------------------------------------------
 *
 * With --commit-log on, a batch is made durable by one frame in the commit
 * log (journal/commit_log.h: one write, one fdatasync) instead of an LMDB
 * commit (two ordered syncs), and its replies go then. The frames move into
 * LMDB later, many batches per LMDB commit, in checkpoints (LMDB append,
 * LMDB sync, then the log's file is free again); a crash between the two is
 * repaired at the next start, when berthd runs the same checkpoint before
 * it loads the engine. So the durable head is the log's, and LMDB's head
 * (checkpointed) trails it. What reads LMDB must see every durable record,
 * so it waits for a checkpoint: the loop parks such commands
 * (PARK_JOURNAL) and asks for one (batch_want_checkpoint); WATCH's live
 * frames come from the batch still in the slot (batch_slot_records), not
 * from LMDB.
 *
 * Two threads checkpoint. The log is two files: the committer logs into
 * the active one and, when the policy below calls for it, seals it and
 * hands it to the checkpointer thread (pipe_ckpt_thread), which moves it
 * into LMDB while the committer logs on into the other file. So no batch
 * waits for an LMDB commit and its syncs (the pause that held session 11's
 * p99 up). The committer seals when the loop wants LMDB up to the durable
 * head (a reader parked on PARK_JOURNAL, or WATCH catching up), when the
 * active file's oldest frame is CHECKPOINT_AGE_MS old, when
 * CHECKPOINT_RECORDS records wait in it, when it is half full, and when no
 * batch came for CHECKPOINT_IDLE_MS; each only if the checkpointer is free
 * (else the active file keeps growing, and is sealed once it is). A full
 * checkpoint of both files runs on the committer itself, after the
 * checkpointer finished, when it cannot wait: for the engine's reload after
 * a failed batch (pipe_catch_up, which blocks the loop), when a snapshot is
 * queued (its anchor is LMDB's head hash), when the active file has no room
 * for a frame, and at a clean stop. The
 * checkpointer is the only thread that writes LMDB while it works: the
 * committer writes LMDB (a full checkpoint, a snapshot, the LMDB road's
 * commits, which never run with the log) only after waiting for it.
 *
 * A failed checkpoint loses nothing: the frames stay in their file (a
 * sealed file stays sealed and is handed again after the retry pause).
 * FULL (LMDB's map at its cap, or the disk) is retried every
 * CHECKPOINT_RETRY_FULL_MS, and from the first such failure new writes are
 * refused with -FULL (batch_writes_stuck: nothing is staged) until a
 * checkpoint succeeds, so the records acknowledged but not in LMDB stay few;
 * reads go on. AGAIN and NOMEM are retried every CHECKPOINT_RETRY_MS, and
 * refuse writes only once the active file is half full, so that what is already
 * staged still fits. Any other checkpoint failure (IO, CORRUPT) stops
 * berthd: LMDB can take no more, while the log keeps every acknowledged
 * frame for the next start. The largest frame, a batch at the engine's
 * byte limit with its touched names, is under each file's size at the
 * smallest --commit-log-mib (two files of 40 MiB), so a frame always fits
 * in a file a checkpoint emptied. */
#define CHECKPOINT_RECORDS BERTH_BATCH_RECORDS_MAX
#define CHECKPOINT_IDLE_MS 10u
#define CHECKPOINT_AGE_MS 20u
#define CHECKPOINT_RETRY_FULL_MS 1000u
#define CHECKPOINT_RETRY_MS 50u
#define CHECKPOINT_WHY_LEN_MAX 512
#define CKPT_APPLY_PASSES_MAX 8

/* Committer thread: the queued snapshot, anchored on LMDB's head. The
 * engine took it before its batch was hashed, so it could not anchor it:
 * the anchor is the head record's hash, known now. */
static void pipe_write_snapshot(pipe_journal *p) {
    uint64_t head = 0;
    uint8_t anchor[BERTH_HASH_LEN];
    berth_jerr se = berth_journal_head(p->inner, &head, anchor);
    if (se == BERTH_J_OK && head != p->snapshot_seq) se = BERTH_J_INVALID;
    if (se == BERTH_J_OK) {
        berth_snapshot_seal(p->snapshot, p->snapshot_len, anchor);
        se = berth_journal_snapshot_put(p->inner, p->snapshot_seq, p->snapshot, p->snapshot_len);
    }
    if (se != BERTH_J_OK) {
        server_log("snapshot at seq %llu failed (%s); the journal is whole, the next start "
                   "replays further",
                   (unsigned long long)p->snapshot_seq, berth_jerr_name(se));
    }
}

/* The thread that checkpointed (the committer, or the checkpointer for a
 * sealed file), without the mutex: book the outcome, and say what changed.
 * head is LMDB's head after a success. */
static void pipe_checkpoint_done(pipe_journal *p, berth_jerr err, uint64_t moved, uint64_t head,
                                 bool sealed, const char *why) {
    uint64_t now = now_ns_mono();
    bool transient = err == BERTH_J_FULL || err == BERTH_J_AGAIN || err == BERTH_J_NOMEM;
    pipe_lock(p);
    if (sealed) {
        pipe_ckpt_took_mutex(p);   /* the checkpointer's own thread */
        /* The urge was for this checkpoint. Cleared here, under the mutex
         * and before ckpt_busy and the signals, so that a reader or the
         * committer that finds more to wait for urges the next one. */
        atomic_store(&p->ckpt_urgent, false);
        /* And its request for SCHED_IDLE, so that no other thread's apply
         * lowers it while it holds the mutex: its own lower, right after,
         * asks again. */
        atomic_store(&p->ckpt_lowered, false);
        atomic_fetch_add(&p->ckpt_prio_gen, 1);
    }
    /* Read under the mutex, as pipe_run stores it: never older than its. */
    uint64_t used = berth_clog_used_bytes(p->clog);
    bool was_stuck = p->stuck != BERTH_J_OK;
    bool was_failing = was_stuck || p->retry_after_ns != 0;
    if (err == BERTH_J_OK) {
        assert(head >= p->checkpointed);
        p->checkpointed = head;
        p->stuck = BERTH_J_OK;
        p->last_failure = BERTH_J_OK;
        p->checkpoints++;
        p->checkpoints_sealed += sealed ? 1 : 0;
        p->checkpoint_records += moved;
        p->retry_after_ns = 0;
        p->ckpt_sealed = false;   /* a full checkpoint moves the sealed file too */
        if (!sealed || head >= p->durable) {
            /* LMDB holds every frame logged: no reader waits any more. */
            p->checkpoint_wanted = false;
        }
    } else {
        p->checkpoint_failures++;
        p->full_checkpoint_failures += sealed ? 0 : 1;
        p->last_failure = err;
        if (!transient) {
            p->checkpoint_fatal = err;
        } else if (err == BERTH_J_FULL) {
            p->stuck = err;   /* AGAIN and NOMEM: once the active file is half full
                                 (pipe_note_room, on the committer) */
        }
        uint64_t retry_ms = err == BERTH_J_FULL ? CHECKPOINT_RETRY_FULL_MS : CHECKPOINT_RETRY_MS;
        p->retry_after_ns = now + retry_ms * 1000000u;
    }
    if (sealed) {
        p->ckpt_busy = false;
    }
    p->clog_used_bytes = used;
    if (sealed) {
        pipe_ckpt_unlock(p);
    } else {
        pipe_unlock(p);
    }
    if (err == BERTH_J_OK) {
        if (was_failing) {
            server_log("checkpoint: the commit log's records moved into the journal again "
                       "(%llu records)%s",
                       (unsigned long long)moved, was_stuck ? "; writes resume" : "");
        }
    } else if (!was_failing || !transient) {
        server_log("checkpoint: moving the commit log's records into the journal failed "
                   "(%s%s%s); they stay in the commit log and %s",
                   berth_jerr_name(err), why[0] != '\0' ? ": " : "", why,
                   !transient ? "berthd stops"
                   : err == BERTH_J_FULL ? "the move is retried every second; writes are refused meanwhile"
                                         : "the move is retried shortly");
    }
}

/* Committer thread: move every frame of the log into LMDB (both files),
 * after the checkpointer thread finished what it was handed: the
 * checkpoint that cannot wait (the engine's reload, a snapshot, a full
 * active file, a stop). */
static berth_jerr pipe_checkpoint(pipe_journal *p) {
    assert(p->clog != NULL);
    pipe_lock(p);
    if (p->ckpt_busy) {
        pipe_ckpt_boost(p);   /* this thread now waits on it */
    }
    while (p->ckpt_busy) {
        int rc = pthread_cond_wait(&p->cond, &p->mutex);
        assert(rc == 0);
    }
    berth_jerr fatal = p->checkpoint_fatal;
    pipe_unlock(p);
    if (fatal != BERTH_J_OK) {
        return fatal;   /* the checkpointer's failure stops berthd: no second try */
    }
    uint64_t moved = 0;
    char why[CHECKPOINT_WHY_LEN_MAX] = "";
    berth_jerr err = p->clog_broken ? BERTH_J_IO
                                     : berth_clog_checkpoint(p->clog, p->inner, &moved, why,
                                                             sizeof why);
    if (err == BERTH_J_OK) {
        p->first_pending_ns = 0;
        p->active_records = 0;
    }
    pipe_checkpoint_done(p, err, moved, berth_clog_last_seq(p->clog), false, why);
    return err;
}

/* ---- the checkpointer's priority ---------------------------------------
 *
 * Why. A checkpoint is a burst of CPU: at 50 unpipelined connections a
 * sealed file of ~2,000 records every CHECKPOINT_AGE_MS costs ~3 ms of it
 * (the frames' SHA-256, LMDB's pages, its sync). On a 2-core machine that
 * burst takes a core from the loop, the committer and the clients: the
 * replies' p99 was ~3.5 ms. A checkpointer at SCHED_IDLE runs only on a
 * core no other thread wants, and yields it to any thread that wakes: p99
 * ~2 ms, with more commands/s (docs/bench-server.md, "Session 20"). But an
 * idle thread gets nothing while the cores are busy: at depth 16, held
 * there whatever happened, it let the active file fill, and the full
 * checkpoint that then blocks every batch stalled replies for 130-190 ms.
 *
 * So the checkpointer lives at SCHED_IDLE, and is raised to the normal
 * priority (pipe_ckpt_boost) the moment something waits on it: the active
 * file holding a checkpoint's worth of records (CHECKPOINT_RECORDS) or a
 * quarter full, so it never fills while the checkpointer starves,
 * a reader or WATCH waiting for LMDB to reach the durable head, the
 * committer or the loop waiting for the checkpointer, berthd stopping, and
 * a thread finding a lock held that the idle checkpointer holds (this
 * mutex, the commit log's own lock), since an idle thread preempted inside
 * one would hold up the threads that need it. A raise lasts until the end
 * of the checkpoint under way (or of the next, if none is); then it goes
 * back down. It stays down between checkpoints because the round trip per
 * checkpoint measured worse (p99 ~3 ms): a thread woken at the normal
 * priority preempts the loop or a client before it can lower itself.
 * (The journal's own locks it takes inside a checkpoint have no raise:
 * its cached head and its fold queue are held for a few instructions, and
 * the map's resize gate (journal/lmdb_store.c), which holds new readers
 * while the map doubles, for a resize, once a doubling. A holder preempted
 * there holds the loop up only until a core frees, which the loop's own
 * wait brings about.)
 *
 * Where. Only where a thread may come back from SCHED_IDLE (CAP_SYS_NICE,
 * or an RLIMIT_NICE of 20 or more, which the systemd unit's LimitNICE=+0
 * gives): server_thread_background_probe tries the round trip at start.
 * Elsewhere, or with --checkpoint-priority normal, it runs at the normal
 * priority.
 *
 * The protocol. Two flags say what is wanted: ckpt_lowered (the
 * checkpointer asks for SCHED_IDLE; a holder's raise takes the request
 * back) and ckpt_urgent (something waits; cleared under the mutex as a
 * checkpoint ends, so a waiter woken by that end urges the next one). The
 * policy is SCHED_IDLE exactly when lowered and not urgent, and whoever
 * changes a flag applies it (pipe_ckpt_apply), with a generation count so
 * that of two threads applying at once the later state wins. */

/* Any thread: bring the checkpointer's policy to what its flags ask for,
 * SCHED_IDLE while it asks for it and nothing urges it. Two threads may
 * apply at once, and a policy applied late would stand; so each reads the
 * generation, applies, and applies again if the flags changed meanwhile:
 * the last to pass its check read the flags after every change, and any
 * syscall before its own had completed before the change it followed. A
 * pass follows a change by another thread, so a few are enough. */
static void pipe_ckpt_apply(pipe_journal *p) {
    for (uint32_t pass = 0; pass < CKPT_APPLY_PASSES_MAX; pass++) {
        uint64_t gen = atomic_load(&p->ckpt_prio_gen);
        bool idle = atomic_load(&p->ckpt_lowered) && !atomic_load(&p->ckpt_urgent);
        (void)server_thread_background(p->ckpt_tid, idle);   /* the probe proved both ways */
        atomic_store(&p->ckpt_idle, idle);
        if (atomic_load(&p->ckpt_prio_gen) == gen) {
            return;
        }
    }
    /* Passes spent with the flags still moving: say "may be idle", so that
     * the next urge or holder's raise applies again rather than trust a
     * state that a late syscall may have overturned. */
    atomic_store(&p->ckpt_idle, true);
}

/* Something waits on the checkpointer: the normal priority until the
 * checkpoint under way (or the next) ends. Counted once an urge. */
static void pipe_ckpt_boost(pipe_journal *p) {
    if (!p->ckpt_background) {
        return;
    }
    bool was_urgent = atomic_exchange(&p->ckpt_urgent, true);
    if (was_urgent && !atomic_load(&p->ckpt_idle)) {
        return;   /* already urged, and raised */
    }
    if (!was_urgent) {
        atomic_fetch_add(&p->ckpt_boosts, 1);
    }
    atomic_fetch_add(&p->ckpt_prio_gen, 1);
    /* Neither lowered nor maybe idle: it never asked for SCHED_IDLE (or its
     * thread has not started, or has ended), so there is nothing to undo. */
    if (atomic_load(&p->ckpt_lowered) || atomic_load(&p->ckpt_idle)) {
        pipe_ckpt_apply(p);
    }
}

/* A lock the idle checkpointer may hold is held: raise it so that it lets
 * go soon, without an urge; it lowers itself again at its next chance
 * (never while holding the mutex). */
static void pipe_ckpt_boost_holder(pipe_journal *p) {
    if (!p->ckpt_background || !atomic_load(&p->ckpt_idle)) {
        return;
    }
    atomic_store(&p->ckpt_lowered, false);
    atomic_fetch_add(&p->ckpt_prio_gen, 1);
    atomic_fetch_add(&p->ckpt_holder_raises, 1);
    pipe_ckpt_apply(p);
}

/* Set on the checkpointer's own thread: its own wait for the commit log's
 * lock raises nothing. */
static _Thread_local bool ckpt_on_own_thread;

/* The commit log's lock is held (berth_clog_set_contention_hook). */
static void pipe_ckpt_boost_hook(void *arg) {
    if (!ckpt_on_own_thread) {
        pipe_ckpt_boost_holder(arg);
    }
}

/* The checkpointer, never holding the mutex (lowering yields the core at
 * once, and a holder not yet marked as one would go unraised): ask for
 * SCHED_IDLE, which it gets unless urged. At its start, on waking for
 * work, after each checkpoint, and before a wait that a holder's raise
 * would otherwise spend at the normal priority. Always applied, not only
 * when the flag changes: a raise applied late may have left it normal. */
static void pipe_ckpt_lower(pipe_journal *p) {
    if (!p->ckpt_background) {
        return;
    }
    atomic_store(&p->ckpt_lowered, true);
    atomic_fetch_add(&p->ckpt_prio_gen, 1);
    pipe_ckpt_apply(p);
}

/* The checkpointer: a holder's raise took back its request for SCHED_IDLE. */
static bool pipe_ckpt_raised(pipe_journal *p) {
    return p->ckpt_background && !atomic_load(&p->ckpt_lowered);
}

/* The checkpointer, holding the mutex. */
static void pipe_ckpt_took_mutex(pipe_journal *p) {
    atomic_store(&p->ckpt_holds, true);
}

static void pipe_ckpt_unlock(pipe_journal *p) {
    atomic_store(&p->ckpt_holds, false);
    pipe_unlock(p);
}

/* The committer, after a frame: the checkpointer must not starve while the
 * active file fills (a full one blocks every batch on a full checkpoint),
 * nor let the next checkpoint grow past one's worth of records (a larger
 * one, run once raised, is a longer burst: at depth 16 an urge at 16,384
 * records gave a p999 of 39-45 ms, at 4,096 17-19 ms, as at the normal
 * priority). */
static void pipe_ckpt_urge_room(pipe_journal *p) {
    if (atomic_load(&p->ckpt_idle) &&
        (p->active_records >= CHECKPOINT_RECORDS ||
         berth_clog_active_used_bytes(p->clog) >= berth_clog_active_size_bytes(p->clog) / 4)) {
        pipe_ckpt_boost(p);
    }
}

/* The checkpointer thread: moves each sealed file it is handed into LMDB
 * while the committer logs into the other file, so a batch never waits
 * for an LMDB commit and its syncs. It is the only thread writing LMDB
 * while it works: the committer writes LMDB (a full checkpoint, a
 * snapshot) only after waiting for it (pipe_checkpoint), and hands it work
 * only from its own thread. */
static void *pipe_ckpt_thread(void *arg) {
    pipe_journal *p = arg;
    (void)pthread_setname_np(pthread_self(), "berthd-ckpt");   /* for top and perf; best effort */
    p->ckpt_tid = server_thread_id();   /* before pipe_ckpt_lower publishes ckpt_lowered */
    ckpt_on_own_thread = true;
    pipe_ckpt_lower(p);
    pipe_lock(p);
    pipe_ckpt_took_mutex(p);
    for (;;) {
        bool lowered = false;
        while (!p->ckpt_work && !p->ckpt_stop) {
            if (!lowered && pipe_ckpt_raised(p)) {
                /* Raised while it held the mutex (a holder's raise): down
                 * again before the wait, so that its next wake-up preempts
                 * no one. Never with the mutex held: lowering yields the
                 * core at once, and a holder found idle would go unraised. */
                lowered = true;
                pipe_ckpt_unlock(p);
                pipe_ckpt_lower(p);
                pipe_lock(p);
                pipe_ckpt_took_mutex(p);
                continue;
            }
            atomic_store(&p->ckpt_holds, false);   /* the wait lets go of the mutex */
            int rc = pthread_cond_wait(&p->ckpt_cond, &p->mutex);
            assert(rc == 0);
            pipe_ckpt_took_mutex(p);
            lowered = false;
        }
        if (!p->ckpt_work) {
            break;
        }
        assert(p->ckpt_busy && p->ckpt_sealed);
        p->ckpt_work = false;
        pipe_ckpt_unlock(p);
        pipe_ckpt_lower(p);   /* a holder's raise during the wait is spent */
        if (atomic_load(&p->ckpt_idle)) {
            atomic_fetch_add(&p->ckpt_background_runs, 1);
        }
        uint64_t moved = 0;
        uint64_t head = 0;
        uint8_t hash[BERTH_HASH_LEN];
        char why[CHECKPOINT_WHY_LEN_MAX] = "";
        berth_jerr err = berth_clog_checkpoint_sealed(p->clog, p->inner, &moved, why, sizeof why);
        if (err == BERTH_J_OK) {
            err = berth_journal_head(p->inner, &head, hash);
        }
        pipe_checkpoint_done(p, err, moved, head, true, why);   /* the urge is spent */
        pipe_signal(p);                               /* the committer may seal again */
        ev_async_send(p->server->loop, &p->async);   /* readers may go */
        pipe_ckpt_lower(p);
        pipe_lock(p);
        pipe_ckpt_took_mutex(p);
    }
    /* No raise may name this thread once it is joined: with the flag off,
     * pipe_ckpt_boost and pipe_ckpt_boost_holder apply nothing, and the
     * one thread left to call them (the loop, in pipe_stop) joins after. */
    atomic_store(&p->ckpt_idle, false);
    atomic_store(&p->ckpt_lowered, false);
    pipe_ckpt_unlock(p);
    return NULL;
}

/* Committer thread: a full checkpoint that must run now, on this thread:
 * a snapshot is queued and needs its anchor in LMDB. */
static bool pipe_checkpoint_due(pipe_journal *p, uint64_t now, bool snapshot) {
    if (!snapshot || p->clog == NULL || p->clog_broken || berth_clog_used_bytes(p->clog) == 0) {
        return false;
    }
    pipe_lock(p);
    bool fatal = p->checkpoint_fatal != BERTH_J_OK;
    bool waiting = now < p->retry_after_ns;
    pipe_unlock(p);
    return !fatal && !waiting;
}

/* Committer thread (or the loop, on_loop): true when the active file should
 * be sealed and handed to the checkpointer (the policy above), or a sealed
 * file whose checkpoint failed waits for its retry. */
static bool pipe_seal_due(pipe_journal *p, uint64_t now) {
    if (p->clog == NULL || p->clog_broken) {
        return false;
    }
    pipe_lock(p);
    bool idle = !p->ckpt_busy && now >= p->retry_after_ns && p->checkpoint_fatal == BERTH_J_OK;
    bool retry = p->ckpt_sealed;
    bool wanted = p->checkpoint_wanted;
    pipe_unlock(p);
    if (!idle) {
        return false;
    }
    if (retry) {
        return true;
    }
    return p->first_pending_ns != 0 &&
           (wanted ||
            berth_clog_active_used_bytes(p->clog) >= berth_clog_active_size_bytes(p->clog) / 2 ||
            p->active_records >= CHECKPOINT_RECORDS ||
            now - p->first_pending_ns >= (uint64_t)CHECKPOINT_AGE_MS * 1000000u);
}

/* Committer thread (or the loop, on_loop), without the mutex, when
 * pipe_seal_due: seal the active file (unless a sealed one still waits) and
 * hand it to the checkpointer. */
static void pipe_hand_sealed(pipe_journal *p) {
    pipe_lock(p);
    bool sealed_before = p->ckpt_sealed;
    assert(!p->ckpt_busy);
    pipe_unlock(p);
    if (!berth_clog_seal(p->clog)) {
        /* Nothing logged since the last checkpoint: LMDB holds every frame,
         * so a reader waiting for that has it. */
        assert(!sealed_before);
        p->first_pending_ns = 0;
        p->active_records = 0;
        pipe_lock(p);
        p->checkpoint_wanted = false;
        pipe_unlock(p);
        return;
    }
    if (!sealed_before) {
        /* The frames just sealed are the checkpointer's now: the policy
         * counts the active file's from here. */
        p->first_pending_ns = 0;
        p->active_records = 0;
    }
    pipe_lock(p);
    p->ckpt_sealed = true;
    p->ckpt_work = true;
    p->ckpt_busy = true;
    /* A reader waiting for LMDB to reach the durable head gets it when this
     * file is moved, unless batches come meanwhile: the loop then asks again
     * (batch_want_checkpoint). A command it parks holds writers back, so it
     * converges; WATCH holds none back, and reads what LMDB has each time. */
    p->checkpoint_wanted = false;
    pipe_unlock(p);
    pipe_signal(p);
    pipe_ckpt_signal(p);
}

/* Committer thread (or the loop, on_loop), after a frame: while
 * checkpoints fail AGAIN or NOMEM, refuse new writes once the active file
 * is half full, so that what is already staged still fits in it (the
 * sealed file takes no frames). */
static void pipe_note_room(pipe_journal *p) {
    bool half = berth_clog_active_used_bytes(p->clog) >= berth_clog_active_size_bytes(p->clog) / 2;
    pipe_lock(p);
    berth_jerr failing = p->last_failure;
    if (half && (failing == BERTH_J_AGAIN || failing == BERTH_J_NOMEM) && p->stuck == BERTH_J_OK) {
        p->stuck = failing;
    }
    pipe_unlock(p);
}

/* The frames' average write and sync, which auto's choice reads. One
 * thread at a time writes frames (the committer, or the loop while
 * on_loop), so a relaxed load and store suffice. */
static void pipe_frame_timed(pipe_journal *p, uint64_t ns) {
    uint64_t avg = atomic_load_explicit(&p->frame_ns_avg, memory_order_relaxed);
    avg = ns >= avg ? avg + ((ns - avg) >> COMMIT_FRAME_AVG_SHIFT)
                    : avg - ((avg - ns) >> COMMIT_FRAME_AVG_SHIFT);
    atomic_store_explicit(&p->frame_ns_avg, avg, memory_order_relaxed);
}

/* Committer thread (or the loop, on_loop): the batch in the slot as one
 * frame of the log. FULL (the log has no room: only while checkpoints
 * fail) checkpoints first, on the committer; on the loop it is returned,
 * nothing written, for the committer to take up. */
static berth_jerr pipe_log(pipe_journal *p, bool on_loop) {
    const berth_touched *touched = p->has_touched ? p->touched : NULL;
    uint64_t t0 = now_ns_mono();
    berth_jerr err = berth_clog_append(p->clog, p->records, touched, p->n);
    if (err == BERTH_J_OK) {
        pipe_frame_timed(p, now_ns_mono() - t0);
    }
    if (err == BERTH_J_FULL && !on_loop && pipe_checkpoint(p) == BERTH_J_OK) {
        err = berth_clog_append(p->clog, p->records, touched, p->n);
    }
    if (err == BERTH_J_IO) {
        p->clog_broken = true;
    }
    if (err == BERTH_J_OK) {
        uint64_t now = now_ns_mono();
        p->last_frame_ns = now;
        if (p->first_pending_ns == 0) {
            p->first_pending_ns = now;
        }
        p->active_records += p->n;
        pipe_note_room(p);
        pipe_ckpt_urge_room(p);
    }
    return err;
}

/* One batch on the committer thread (or the loop, on_loop: see "Committing
 * on the loop"): append (or log), sync, report, then a checkpoint if one is
 * due, then the snapshot. false only on the loop, when the frame was not
 * written and the job is the committer's (batch_hand_off hands it over).
 *
 * Why sync at once rather than leave the meta page to the next commit's data
 * sync: a batch left for the next commit waits a whole commit more (its
 * pages, its data sync) before its replies go, while this sync writes one
 * meta page. Unpipelined clients wait on exactly that: at 50 connections,
 * depth 1, answering after the next commit gave 39-45k commands/s at p50
 * 0.96-1.12 ms, syncing at once 50-52k/s at p50 0.81-0.84 ms (docs/server.md,
 * "Syncing a commit"). Correctness does not rest on this sync: the
 * journal's durable seq decides what is answered. If the sync fails, the
 * batch stays unsynced and the next commit or the loop's own sync settles
 * it as before (a failed sync is sticky, so that one fails too).
 *
 * With the commit log, a frame's write or sync that failed leaves the
 * batch's fate unknown (the frame may be on disk whole): it is reported
 * committed but not durable, so the loop's sync (pipe_run_sync, IO once the
 * log is broken) answers it "unknown" and stops berthd, exactly as a failed
 * LMDB sync does. A frame refused with nothing written (FULL while
 * checkpoints fail, NOMEM) fails the batch; the loop then reloads the engine
 * from LMDB, so a checkpoint runs first to bring LMDB up to every frame. */
static bool pipe_run(pipe_journal *p, bool on_loop) {
    assert(!on_loop || (p->clog != NULL && p->snapshot_seq == 0));
    berth_jerr err = BERTH_J_OK;
    bool logged = false;
    if (p->clog != NULL) {
        err = pipe_log(p, on_loop);
        if (on_loop && err != BERTH_J_OK && err != BERTH_J_IO) {
            /* Nothing written (FULL, NOMEM, a frame too big): the roads
             * that follow (a full checkpoint, the batch failed) are the
             * committer's, which runs this job again from the start. */
            return false;
        }
        logged = err == BERTH_J_OK;
        if (err == BERTH_J_IO) {
            err = BERTH_J_OK;   /* committed, never durable: see above */
        } else if (err != BERTH_J_OK) {
            (void)pipe_checkpoint(p);
        }
    } else {
        err = berth_journal_append(p->inner, p->records, p->has_touched ? p->touched : NULL,
                                   p->n);
        if (err == BERTH_J_OK) {
            (void)berth_journal_sync(p->inner);   /* see above: durable_seq is the verdict */
        }
    }
    bool snapshot = err == BERTH_J_OK && p->snapshot_seq != 0;
    bool checkpoint = err == BERTH_J_OK && pipe_checkpoint_due(p, now_ns_mono(), snapshot);
    if (snapshot && p->clog != NULL && !checkpoint) {
        /* LMDB cannot reach the snapshot's seq now (checkpoints failing):
         * a snapshot only shortens a start, so this one is skipped. */
        server_log("snapshot at seq %llu skipped: the commit log's records cannot move into "
                   "the journal now",
                   (unsigned long long)p->snapshot_seq);
        snapshot = false;
    }
    pipe_lock(p);
    p->result = err;
    p->result_ready = true;
    pipe_note_durable(p);
    if (logged && p->records[p->n - 1].seq > p->durable) {
        p->durable = p->records[p->n - 1].seq;
    }
    if (p->clog != NULL) {
        p->clog_used_bytes = berth_clog_used_bytes(p->clog);
    }
    if (err != BERTH_J_OK) {
        /* The failed batch's snapshot names a seq the journal never
         * reached: a later batch must not write it. */
        p->snapshot_seq = 0;
    }
    /* Without a snapshot to write, the slot is free now: the loop may hand
     * off the next batch (or a sync) at once, and this thread takes it up
     * when this call returns. So one report, one wake-up of the loop, per
     * batch; otherwise the slot stays busy until the snapshot is written
     * (its bytes live in it, and the full checkpoint before it must reach
     * its seq before the next batch moves the head). */
    bool after = snapshot || checkpoint;
    assert(!(after && on_loop));   /* no snapshot queued, so no checkpoint due */
    if (!after) {
        p->n = 0;
        p->busy = false;
    }
    pipe_unlock(p);
    /* On the loop, the loop collects the result itself, and no one waits
     * for the slot: no wake-up of the committer, none of the loop. */
    if (!after && !on_loop) {
        pipe_signal(p);
    }
    if (!on_loop) {
        ev_async_send(p->server->loop, &p->async);   /* the replies go out before the rest */
    }
    if (err == BERTH_J_OK) {
        /* A no-op on both journals now (the LMDB history fold runs on the
         * journal's own thread and environment, woken by the append; it
         * makes nothing durable): kept for a backend that defers work. */
        berth_jerr fe = berth_journal_maintain(p->inner);
        if (fe != BERTH_J_OK) {
            server_log("the journal's upkeep after a commit failed (%s); it is retried after "
                       "the next one",
                       berth_jerr_name(fe));
        }
    }
    if (!after) {
        uint64_t now = now_ns_mono();
        if (err == BERTH_J_OK && pipe_seal_due(p, now)) {
            pipe_hand_sealed(p);
        }
        return true;
    }
    if (checkpoint && pipe_checkpoint(p) != BERTH_J_OK) {
        snapshot = false;   /* its anchor would be a record LMDB does not hold yet */
    }
    if (snapshot) {
        pipe_write_snapshot(p);
    }
    pipe_lock(p);
    p->n = 0;
    p->snapshot_seq = 0;
    p->busy = false;
    pipe_note_durable(p);   /* a snapshot's commit synced the batch's meta page */
    pipe_unlock(p);
    pipe_signal(p);
    ev_async_send(p->server->loop, &p->async);   /* the next batch may go */
    return true;
}

/* Make the last commit durable when no next commit would. With the commit
 * log every frame was synced when written: only a broken log fails. */
static void pipe_run_sync(pipe_journal *p) {
    berth_jerr err = BERTH_J_OK;
    if (p->clog == NULL) {
        err = berth_journal_sync(p->inner);
    } else if (p->clog_broken) {
        err = BERTH_J_IO;
    }
    pipe_lock(p);
    p->sync_result = err;
    p->sync_ready = true;
    p->busy = false;
    pipe_note_durable(p);
    pipe_unlock(p);
    pipe_signal(p);
    ev_async_send(p->server->loop, &p->async);
}

/* Committer thread, idle, holding the mutex: when the idle policy next
 * wants the active file sealed and moved (CHECKPOINT_IDLE_MS after the last
 * frame, or its oldest frame CHECKPOINT_AGE_MS old), or a sealed file whose
 * checkpoint failed its retry; 0: wait for work, or for the checkpointer's
 * report, alone. */
static uint64_t pipe_idle_deadline_ns(pipe_journal *p) {
    if (p->clog == NULL || p->clog_broken || p->checkpoint_fatal != BERTH_J_OK || p->ckpt_busy) {
        return 0;
    }
    uint64_t due = 0;
    if (p->ckpt_sealed) {
        due = 1;   /* as soon as the retry pause allows */
    } else if (p->first_pending_ns != 0) {
        uint64_t idle = p->last_frame_ns + (uint64_t)CHECKPOINT_IDLE_MS * 1000000u;
        uint64_t age = p->first_pending_ns + (uint64_t)CHECKPOINT_AGE_MS * 1000000u;
        due = idle < age ? idle : age;
    } else {
        return 0;
    }
    return due > p->retry_after_ns ? due : p->retry_after_ns;
}

/* Committer thread, idle, holding the mutex: when the checkpoint the loop
 * waits for (pipe_catch_up, batch_want_checkpoint) may run; 0: not wanted,
 * or not possible now. */
static uint64_t pipe_wanted_deadline_ns(pipe_journal *p, uint64_t now) {
    if (!(p->checkpoint_wanted || p->retry_now) || p->clog == NULL || p->clog_broken ||
        p->checkpoint_fatal != BERTH_J_OK || p->clog_used_bytes == 0 || p->ckpt_busy) {
        return 0;
    }
    return p->retry_after_ns > now && !p->retry_now ? p->retry_after_ns : now;
}

/* Committer thread, holding the mutex: wait for work, or until deadline_ns
 * (CLOCK_MONOTONIC, as now_ns_mono). true: the deadline passed. */
static bool pipe_wait(pipe_journal *p, uint64_t deadline_ns) {
    if (deadline_ns == 0) {
        int rc = pthread_cond_wait(&p->cond, &p->mutex);
        assert(rc == 0);
        return false;
    }
    struct timespec ts = { (time_t)(deadline_ns / 1000000000u), (long)(deadline_ns % 1000000000u) };
    int rc = pthread_cond_timedwait(&p->cond, &p->mutex, &ts);
    assert(rc == 0 || rc == ETIMEDOUT);
    return rc == ETIMEDOUT;
}

static void *pipe_thread(void *arg) {
    pipe_journal *p = arg;
    (void)pthread_setname_np(pthread_self(), "berthd-commit");   /* for top and perf; best effort */
    server_thread_short_slice();   /* a reply waits on each of its wake-ups */
    pipe_lock(p);
    for (;;) {
        while (!p->work && !p->work_sync && !p->stop) {
            if (p->on_loop) {
                /* The loop writes a frame: the fields the deadlines read
                 * are its own until it ends (pipe_run_on_loop wakes us). */
                p->wake_after_loop = true;
                (void)pipe_wait(p, 0);
                continue;
            }
            uint64_t now = now_ns_mono();
            uint64_t wanted = pipe_wanted_deadline_ns(p, now);
            uint64_t deadline = wanted != 0 ? wanted : pipe_idle_deadline_ns(p);
            if (p->retry_now || (deadline != 0 && now >= deadline)) {
                /* Idle: the slot stays free, so a batch handed off meanwhile
                 * waits only for this checkpoint (a full one: the engine's
                 * reload blocks the loop for it, pipe_catch_up), or not at
                 * all (a sealed file, moved by the checkpointer, which is
                 * also how a reader's wish is met). */
                bool full = p->retry_now;
                p->retry_now = false;
                p->idle_working = true;   /* the loop hands batches over meanwhile */
                pipe_unlock(p);
                if (full) {
                    (void)pipe_checkpoint(p);
                } else {
                    pipe_hand_sealed(p);
                }
                pipe_signal(p);                               /* pipe_catch_up */
                ev_async_send(p->server->loop, &p->async);   /* readers may go */
                pipe_lock(p);
                p->idle_working = false;
                continue;
            }
            (void)pipe_wait(p, deadline);
        }
        if (!p->work && !p->work_sync) {
            break;      /* stop, and nothing handed off is left behind */
        }
        assert(!(p->work && p->work_sync));
        bool sync = p->work_sync;
        p->work = false;
        p->work_sync = false;
        p->running = true;
        pipe_unlock(p);
        if (sync) {
            pipe_run_sync(p);
        } else {
            bool done = pipe_run(p, false);
            assert(done);
            (void)done;
        }
        pipe_lock(p);
        p->running = false;
    }
    pipe_unlock(p);
    /* A clean stop leaves LMDB holding every acknowledged record, so tools
     * reading the directory see them all; if this fails, the next start
     * moves them. */
    pipe_lock(p);
    bool fatal = p->checkpoint_fatal != BERTH_J_OK;
    pipe_unlock(p);
    if (p->clog != NULL && berth_clog_used_bytes(p->clog) > 0 && !p->clog_broken && !fatal &&
        pipe_checkpoint(p) != BERTH_J_OK) {
        pipe_lock(p);
        uint64_t checkpointed = p->checkpointed;
        pipe_unlock(p);
        server_log("stopping with records after seq %llu only in %s and %s: the next start "
                   "moves them into the journal",
                   (unsigned long long)checkpointed, BERTH_CLOG_FILE, BERTH_CLOG_FILE2);
    }
    return NULL;
}

static void pipe_async_cb(struct ev_loop *loop, ev_async *w, int revents) {
    /* Nothing here: the prepare watcher, which runs before the next poll,
     * collects the result and hands off the next batch. */
    (void)loop;
    (void)w;
    (void)revents;
}

static void pipe_free(pipe_journal *p) {
    if (p->clog != NULL) {
        berth_clog_set_contention_hook(p->clog, NULL, NULL);   /* the log outlives p */
    }
    free(p->records);
    free(p->touched);
    free(p->bytes);
    free(p->snapshot);
    free(p);
}

/* pipe_create's undoing once its watcher, mutex and condition exist and
 * no thread runs. */
static void pipe_abandon(server *s, pipe_journal *p) {
    ev_async_stop(s->loop, &p->async);
    int rc = pthread_cond_destroy(&p->cond);
    assert(rc == 0);
    rc = pthread_cond_destroy(&p->ckpt_cond);
    assert(rc == 0);
    rc = pthread_mutex_destroy(&p->mutex);
    assert(rc == 0);
    (void)rc;
    pipe_free(p);
}

static pipe_journal *pipe_create(server *s, berth_journal *inner) {
    uint64_t durable = 0;
    if (berth_journal_durable(inner, &durable) != BERTH_J_OK) {
        return NULL;
    }
    pipe_journal *p = calloc(1, sizeof *p);
    if (p == NULL) {
        return NULL;
    }
    p->base.ops = &pipe_ops;
    p->inner = inner;
    p->durable = durable;
    p->server = s;
    p->clog = s->clog;
    if (p->clog != NULL) {
        /* berthd checkpointed the log before it started the pipe. */
        assert(berth_clog_used_bytes(p->clog) == 0 && berth_clog_last_seq(p->clog) == durable);
        p->checkpointed = durable;
        p->ckpt_background = s->checkpoint_background;
        p->on_loop_mode = strcmp(s->config.commit_on_loop, "on") == 0     ? PIPE_ON_LOOP_ON
                          : strcmp(s->config.commit_on_loop, "auto") == 0 ? PIPE_ON_LOOP_AUTO
                                                                          : PIPE_ON_LOOP_OFF;
        p->on_loop_frame_ns_max = (uint64_t)s->config.commit_on_loop_us * 1000u;
    }
    p->records = calloc(BERTH_BATCH_RECORDS_MAX, sizeof *p->records);
    p->touched = calloc(BERTH_BATCH_RECORDS_MAX, sizeof *p->touched);
    if (p->records == NULL || p->touched == NULL) {
        pipe_free(p);
        return NULL;
    }
    if (pthread_mutex_init(&p->mutex, NULL) != 0) {
        pipe_free(p);
        return NULL;
    }
    /* The idle checkpoint's timed wait counts on now_ns_mono's clock. */
    pthread_condattr_t attr;
    bool cond_ok = pthread_condattr_init(&attr) == 0;
    if (cond_ok) {
        cond_ok = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 &&
                  pthread_cond_init(&p->cond, &attr) == 0;
        int rc = pthread_condattr_destroy(&attr);
        assert(rc == 0);
        if (cond_ok && pthread_cond_init(&p->ckpt_cond, NULL) != 0) {
            rc = pthread_cond_destroy(&p->cond);
            assert(rc == 0);
            cond_ok = false;
        }
    }
    if (!cond_ok) {
        int rc = pthread_mutex_destroy(&p->mutex);
        assert(rc == 0);
        pipe_free(p);
        return NULL;
    }
    ev_async_init(&p->async, pipe_async_cb);
    p->async.data = s;
    ev_async_start(s->loop, &p->async);
    if (p->clog != NULL) {   /* before any thread that may contend */
        berth_clog_set_contention_hook(p->clog, p->ckpt_background ? pipe_ckpt_boost_hook : NULL,
                                       p);
    }
    if (pthread_create(&p->thread, NULL, pipe_thread, p) != 0) {
        pipe_abandon(s, p);
        return NULL;
    }
    p->started = true;
    if (p->clog != NULL && pthread_create(&p->ckpt_thread, NULL, pipe_ckpt_thread, p) != 0) {
        pipe_stop(p);
        pipe_abandon(s, p);
        return NULL;
    }
    p->ckpt_started = p->clog != NULL;
    return p;
}

/* Join the thread after it finished what was handed off. Idempotent. */
static void pipe_stop(pipe_journal *p) {
    if (!p->started) {
        return;
    }
    pipe_lock(p);
    p->stop = true;
    pipe_unlock(p);
    pipe_signal(p);
    int rc = pthread_join(p->thread, NULL);
    assert(rc == 0);
    p->started = false;
    assert(!p->busy);
    if (p->ckpt_started) {
        /* It finishes what it was handed, then sees the stop. */
        pipe_ckpt_boost(p);
        pipe_lock(p);
        p->ckpt_stop = true;
        pipe_unlock(p);
        pipe_signal(p);
        pipe_ckpt_signal(p);
        rc = pthread_join(p->ckpt_thread, NULL);
        assert(rc == 0);
        p->ckpt_started = false;
    }
}

/* Loop thread, on the engine's reload (pipe_reader_open): block until a
 * checkpoint brought LMDB up to every frame logged, or one failed. */
static berth_jerr pipe_catch_up(pipe_journal *p) {
    if (p->clog == NULL) {
        return BERTH_J_OK;
    }
    pipe_lock(p);
    while (p->busy) {
        int rc = pthread_cond_wait(&p->cond, &p->mutex);
        assert(rc == 0);
    }
    /* Count only the failures of the full checkpoint asked for here, not
     * of one the checkpointer has under way (a fatal one counts anyway). */
    berth_jerr err = BERTH_J_OK;
    uint64_t failures = p->full_checkpoint_failures;
    while (p->checkpointed < p->durable && err == BERTH_J_OK) {
        if (p->full_checkpoint_failures != failures || p->checkpoint_fatal != BERTH_J_OK) {
            err = p->checkpoint_fatal != BERTH_J_OK ? p->checkpoint_fatal
                  : p->last_failure != BERTH_J_OK   ? p->last_failure
                                                    : BERTH_J_IO;
            break;
        }
        p->checkpoint_wanted = true;
        p->retry_now = true;
        int rc = pthread_cond_broadcast(&p->cond);
        assert(rc == 0);
        rc = pthread_cond_wait(&p->cond, &p->mutex);
        assert(rc == 0);
    }
    pipe_unlock(p);
    return err;
}

/* Loop thread: block until the thread finished the batch handed off. */
static void pipe_wait_idle(pipe_journal *p) {
    pipe_lock(p);
    while (p->busy) {
        int rc = pthread_cond_wait(&p->cond, &p->mutex);
        assert(rc == 0);
    }
    pipe_unlock(p);
}

static bool pipe_idle(pipe_journal *p) {
    pipe_lock(p);
    bool idle = !p->busy;
    pipe_unlock(p);
    return idle;
}

/* Loop thread: the outcome of the batch in flight, once known. */
static bool pipe_take_result(pipe_journal *p, berth_jerr *err) {
    pipe_lock(p);
    bool ready = p->result_ready;
    *err = p->result;
    p->result_ready = false;
    pipe_unlock(p);
    return ready;
}

/* Loop thread: hand the committer its next job, the staged batch or (sync)
 * one sync; the slot must be free. */
static void pipe_hand(pipe_journal *p, bool sync) {
    pipe_lock(p);
    assert(!p->busy && !p->work && !p->work_sync && (sync || p->n > 0));
    if (sync) {
        p->work_sync = true;
    } else {
        p->work = true;
    }
    p->busy = true;
    pipe_unlock(p);
    pipe_signal(p);
}

/* Loop thread: run the staged batch's job here, as the committer would,
 * when the committer is idle and the job is a plain frame: no snapshot
 * queued (its full checkpoint is long), the log healthy and no checkpoint
 * failing (their roads stay the committer's), and, under auto, frames
 * quick. false: hand it off (pipe_hand), whether it was not taken or was
 * given back unwritten (FULL, NOMEM: pipe_run), the slot free again. */
static bool pipe_may_run_on_loop(const pipe_journal *p) {
    return p->clog != NULL && p->on_loop_mode != PIPE_ON_LOOP_OFF;
}

static bool pipe_run_on_loop(pipe_journal *p) {
    if (!pipe_may_run_on_loop(p)) {
        return false;
    }
    pipe_lock(p);
    bool quick = p->on_loop_mode == PIPE_ON_LOOP_ON ||
                 atomic_load_explicit(&p->frame_ns_avg, memory_order_relaxed) < p->on_loop_frame_ns_max;
    bool take = quick && !p->busy && !p->work && !p->work_sync && !p->idle_working && !p->running &&
                p->n > 0 &&
                p->snapshot_seq == 0 && !p->clog_broken && p->checkpoint_fatal == BERTH_J_OK &&
                p->last_failure == BERTH_J_OK && p->stuck == BERTH_J_OK;
    if (take) {
        p->busy = true;
        p->on_loop = true;
    }
    pipe_unlock(p);
    if (!take) {
        return false;
    }
    /* A first frame after a seal starts the committer's idle deadline,
     * which it may be waiting without: it must look again. */
    bool fresh = p->first_pending_ns == 0;
    bool done = pipe_run(p, true);
    bool rearm = fresh && p->first_pending_ns != 0;
    pipe_lock(p);
    assert(p->on_loop && p->busy == !done);
    p->on_loop = false;
    if (!done) {
        /* The slot still holds the batch: the caller hands it to the
         * committer (pipe_hand), which runs it from the start. */
        assert(p->n > 0 && !p->work && !p->work_sync);
        p->busy = false;
    }
    bool wake = p->wake_after_loop || rearm;
    p->wake_after_loop = false;
    pipe_unlock(p);
    if (wake) {
        pipe_signal(p);
    }
    return done;
}

/* Loop thread: the outcome of the last sync, once known. */
static bool pipe_take_sync(pipe_journal *p, berth_jerr *err) {
    pipe_lock(p);
    bool ready = p->sync_ready;
    *err = p->sync_result;
    p->sync_ready = false;
    pipe_unlock(p);
    return ready;
}

static uint64_t pipe_durable(pipe_journal *p) {
    pipe_lock(p);
    uint64_t durable = p->durable;
    pipe_unlock(p);
    return durable;
}

/* ---- lifetime ---------------------------------------------------------- */

int batch_init(server *s) {
    s->batch = calloc(SERVER_BATCH_ENTRIES_MAX, sizeof *s->batch);
    s->inflight = calloc(SERVER_BATCH_ENTRIES_MAX, sizeof *s->inflight);
    s->unsynced = calloc(SERVER_BATCH_ENTRIES_MAX, sizeof *s->unsynced);
    s->batch_count = 0;
    s->inflight_count = 0;
    s->unsynced_count = 0;
    return s->batch == NULL || s->inflight == NULL || s->unsynced == NULL ? -1 : 0;
}

void batch_free(server *s) {
    assert(s->batch_count == 0 && s->inflight_count == 0 && s->unsynced_count == 0);
    free(s->batch);
    free(s->inflight);
    free(s->unsynced);
    s->batch = NULL;
    s->inflight = NULL;
    s->unsynced = NULL;
}

berth_jerr batch_start_pipe(server *s) {
    assert(s->journal != NULL && s->pipe == NULL);
    s->pipe = pipe_create(s, s->journal);
    return s->pipe == NULL ? BERTH_J_NOMEM : BERTH_J_OK;
}

berth_journal *batch_engine_journal(server *s) {
    return s->pipe != NULL ? &s->pipe->base : s->journal;
}

void batch_stop_pipe(server *s) {
    if (s->pipe == NULL) {
        return;
    }
    pipe_stop(s->pipe);
    ev_async_stop(s->loop, &s->pipe->async);
    int rc = pthread_cond_destroy(&s->pipe->cond);
    assert(rc == 0);
    rc = pthread_cond_destroy(&s->pipe->ckpt_cond);
    assert(rc == 0);
    rc = pthread_mutex_destroy(&s->pipe->mutex);
    assert(rc == 0);
    pipe_free(s->pipe);
    s->pipe = NULL;
}

uint64_t batch_durable_head(const server *s) {
    return s->pipe != NULL ? s->durable_head : berth_engine_head_seq(s->engine);
}

uint64_t batch_journal_head(const server *s) {
    if (s->pipe == NULL || s->pipe->clog == NULL) {
        return batch_durable_head(s);
    }
    pipe_journal *p = s->pipe;
    pipe_lock(p);
    uint64_t checkpointed = p->checkpointed;
    pipe_unlock(p);
    /* The thread may have checkpointed a batch whose report the loop has
     * not taken yet: never show past what the loop calls durable. */
    return checkpointed < s->durable_head ? checkpointed : s->durable_head;
}

bool batch_journal_current(const server *s) {
    return batch_state_durable(s) && batch_journal_head(s) == batch_durable_head(s);
}

void batch_want_checkpoint(server *s) {
    if (s->pipe == NULL || s->pipe->clog == NULL || batch_journal_head(s) == s->durable_head) {
        return;
    }
    pipe_journal *p = s->pipe;
    pipe_ckpt_boost(p);   /* a reader waits for the checkpoint under way, or the next */
    pipe_lock(p);
    bool ask = !p->checkpoint_wanted;
    p->checkpoint_wanted = true;
    pipe_unlock(p);
    if (ask) {
        pipe_signal(p);
    }
}

bool batch_writes_stuck(const server *s, berth_jerr *err) {
    if (s->pipe == NULL || s->pipe->clog == NULL) {
        return false;
    }
    pipe_lock(s->pipe);
    *err = s->pipe->stuck;
    pipe_unlock(s->pipe);
    return *err != BERTH_J_OK;
}

const berth_record *batch_slot_records(const server *s, uint64_t first, uint64_t last) {
    const pipe_journal *p = s->pipe;
    assert(first <= last);
    if (p == NULL || p->clog == NULL || p->slot_count == 0 || p->slot_first_seq != first ||
        p->slot_first_seq + p->slot_count - 1 != last) {
        return NULL;
    }
    return p->records;
}

void batch_commit_log_stats(const server *s, batch_clog_stats *out) {
    memset(out, 0, sizeof *out);
    if (s->pipe == NULL || s->pipe->clog == NULL) {
        return;
    }
    pipe_journal *p = s->pipe;
    out->enabled = true;
    pipe_lock(p);
    out->checkpointed_seq = p->checkpointed;
    out->checkpoints = p->checkpoints;
    out->checkpoints_sealed = p->checkpoints_sealed;
    out->checkpoint_failures = p->checkpoint_failures;
    out->checkpoint_records = p->checkpoint_records;
    out->used_bytes = p->clog_used_bytes;
    out->stuck = p->stuck;
    pipe_unlock(p);
    out->background = p->ckpt_background;
    out->boosts = atomic_load(&p->ckpt_boosts);
    out->holder_raises = atomic_load(&p->ckpt_holder_raises);
    out->background_runs = atomic_load(&p->ckpt_background_runs);
    out->on_loop = p->on_loop_mode == PIPE_ON_LOOP_ON     ? "on"
                   : p->on_loop_mode == PIPE_ON_LOOP_AUTO ? "auto"
                                                          : "off";
    out->frame_us_avg = atomic_load_explicit(&p->frame_ns_avg, memory_order_relaxed) / 1000u;
    out->size_bytes = berth_clog_size_bytes(p->clog);   /* fixed at open */
}

/* ---- latency histogram ------------------------------------------------- */

static uint32_t latency_bucket(uint64_t us) {
    if (us < LATENCY_SUB_BUCKETS) {
        return (uint32_t)us;
    }
    uint32_t msb = 63u - (uint32_t)__builtin_clzll(us);
    uint32_t sub = (uint32_t)((us >> (msb - 2)) & (LATENCY_SUB_BUCKETS - 1));
    uint32_t idx = (msb - 1) * LATENCY_SUB_BUCKETS + sub;
    return idx < SERVER_LATENCY_BUCKETS ? idx : SERVER_LATENCY_BUCKETS - 1;
}

/* The largest value a bucket holds: percentiles are reported conservatively. */
static uint64_t latency_bucket_upper(uint32_t idx) {
    if (idx < LATENCY_SUB_BUCKETS) {
        return idx;
    }
    uint32_t msb = idx / LATENCY_SUB_BUCKETS + 1;
    uint64_t sub = idx % LATENCY_SUB_BUCKETS;
    uint64_t step = 1ull << (msb - 2);
    return ((LATENCY_SUB_BUCKETS + sub) << (msb - 2)) + step - 1;
}

uint64_t latency_percentile_us(const server_stats *stats, double fraction) {
    assert(fraction > 0.0 && fraction <= 1.0);
    uint64_t total = 0;
    for (uint32_t i = 0; i < SERVER_LATENCY_BUCKETS; i++) {
        total += stats->latency_us[i];
    }
    if (total == 0) {
        return 0;
    }
    uint64_t target = (uint64_t)(fraction * (double)total);
    if ((double)target < fraction * (double)total) {
        target++;
    }
    uint64_t seen = 0;
    for (uint32_t i = 0; i < SERVER_LATENCY_BUCKETS; i++) {
        seen += stats->latency_us[i];
        if (seen >= target) {
            return latency_bucket_upper(i);
        }
    }
    return latency_bucket_upper(SERVER_LATENCY_BUCKETS - 1);
}

/* ---- replies ----------------------------------------------------------- */

/* The code word and sentence a write hears when its commit failed with err. */
static void batch_commit_error_text(berth_jerr err, const char **code, char *sentence,
                                    size_t size) {
    const char *text = NULL;
    if (err == BERTH_J_FULL) {
        *code = "FULL";
        text = "the journal is full (disk or map at its maximum): the command was not applied; "
               "retry once space is freed";
    } else if (err == BERTH_J_AGAIN) {
        /* Not FULL: the map is below its cap and the disk may have room.
         * Not BUSY either: that is an engine refusal with a seq. */
        *code = "TRYAGAIN";
        text = "the journal's map had to grow but journal readers in this berthd held it past "
               "the wait (the map is not at its maximum): the command was not applied; retry it";
    } else if (err == BERTH_J_READONLY) {
        *code = "READONLY";
        text = "this berthd lost the leadership before the command was committed: it was not "
               "applied; retry it on the leader";
    } else if (err == BERTH_J_CORRUPT) {
        *code = "IOERR";
        text = "the journal write failed and the state could not be reloaded: the command was "
               "not applied and berthd is stopping";
    } else if (err == BERTH_J_INDOUBT) {
        *code = "IOERR";
        text = "the journal write got no answer from etcd: its outcome is unknown (it may yet be "
               "applied); retry it with the same REQID, on the leader";
    }
    if (text != NULL) {
        snprintf(sentence, size, "%s", text);
        return;
    }
    *code = "IOERR";
    snprintf(sentence, size, "the journal write failed (%s): the command was not applied; retry it",
             berth_jerr_name(err));
}

static void batch_reply_commit_error(reply_buf *rb, berth_jerr err) {
    const char *code = NULL;
    char sentence[BERTH_SENTENCE_LEN_MAX];
    batch_commit_error_text(err, &code, sentence, sizeof sentence);
    reply_error(rb, code, "%s", sentence);
}

/* A write refused unstaged while checkpoints fail, as a result that
 * batch_reply answers like a syntax error, in batch_reply_commit_error's
 * words. */
static void batch_stuck_result(berth_submit_result *r, berth_jerr err) {
    memset(r, 0, sizeof *r);
    r->kind = BERTH_SUBMIT_SYNTAX;
    const char *code = NULL;
    char sentence[BERTH_SENTENCE_LEN_MAX];
    batch_commit_error_text(err, &code, sentence, sizeof sentence);
    int n = snprintf(r->sentence, sizeof r->sentence, "%s %s", code, sentence);
    assert(n > 0);
}

/* "-CODE sentence", without repeating the code if the sentence starts with it. */
static void batch_reply_refusal(reply_buf *rb, const char *code, const char *sentence) {
    size_t code_len = strlen(code);
    size_t len = strlen(sentence);
    if (len > code_len && memcmp(sentence, code, code_len) == 0 && sentence[code_len] == ' ') {
        reply_error_line(rb, berth_str_make(sentence, len));
        return;
    }
    reply_error_str(rb, code, berth_str_make(sentence, len));
}

static void batch_reply_outcome(reply_buf *rb, const berth_submit_result *r) {
    if (r->code == BERTH_OK) {
        reply_uint(rb, r->seq);
        return;
    }
    assert(r->code < BERTH_CODE_COUNT);
    batch_reply_refusal(rb, berth_code_name(r->code), r->sentence);
}

/* A RETRY or CONFLICT whose original is committed but not yet durable, in
 * a batch that failed: the original may yet become durable or be lost, so
 * neither its outcome nor "not applied" is true. */
static void batch_reply_original_unknown(reply_buf *rb) {
    reply_error(rb, "IOERR", "this REQID's original command is committed but not yet durable and "
                             "this batch failed: its outcome is unknown; retry it with the same "
                             "REQID");
}

/* head: the durable head after this commit; committed: the journal's
 * committed head (head, or the last seq of the unsynced batch held). A
 * RETRY or CONFLICT that points past committed referred to a record of a
 * batch that failed; one between the two, to the unsynced batch. */
static void batch_reply(reply_buf *rb, const berth_submit_result *r, berth_jerr err, uint64_t head,
                        uint64_t committed) {
    assert(head <= committed);
    switch (r->kind) {
    case BERTH_SUBMIT_STAGED:
        if (err != BERTH_J_OK) {
            batch_reply_commit_error(rb, err);
        } else {
            batch_reply_outcome(rb, r);
        }
        return;
    case BERTH_SUBMIT_RETRY:
        if (r->seq > committed) {
            batch_reply_commit_error(rb, err == BERTH_J_OK ? BERTH_J_IO : err);
        } else if (r->seq > head) {
            batch_reply_original_unknown(rb);
        } else {
            batch_reply_outcome(rb, r);
        }
        return;
    case BERTH_SUBMIT_CONFLICT:
        if (r->seq > committed) {
            batch_reply_commit_error(rb, err == BERTH_J_OK ? BERTH_J_IO : err);
        } else if (r->seq > head) {
            batch_reply_original_unknown(rb);
        } else {
            batch_reply_refusal(rb, "REQID", r->sentence);
        }
        return;
    case BERTH_SUBMIT_SYNTAX:
        reply_error_line(rb, berth_str_make(r->sentence, strlen(r->sentence)));
        return;
    case BERTH_SUBMIT_NOMEM:
        reply_error(rb, "ERR", "out of memory staging the command: it was not applied");
        return;
    case BERTH_SUBMIT_BATCH_FULL:
        break;
    }
    assert(false && "BATCH_FULL never enters the batch");
}

/* Answer count entries with the outcome of their commit; empties the array.
 * head as batch_reply's; its committed is the journal's committed head. */
static void batch_release(server *s, batch_entry *entries, uint32_t *count, berth_jerr err,
                          uint64_t head) {
    uint64_t committed = head;
    if (s->pipe != NULL && s->unsynced_count > 0 && s->unsynced_last_seq > committed) {
        committed = s->unsynced_last_seq;
    }
    if (s->unknown_last_seq > committed) {
        committed = s->unknown_last_seq;   /* answered unknown: still not "not applied" */
    }
    uint32_t n = *count;
    *count = 0;
    for (uint32_t i = 0; i < n; i++) {
        batch_entry *e = &entries[i];
        client *c = e->client;
        assert(c != NULL && c->batch_pending > 0);
        c->batch_pending--;
        if (!c->closed) {
            batch_reply(&c->out, &e->result, err, head, committed);
            client_output_added(c);
            if (c->in_len > 0) {
                client_resume(c);   /* it may have stopped at max_pipeline or on a drain */
            }
        }
        e->client = NULL;
        client_release(c);
    }
}

static void batch_commit_failed(server *s, uint32_t count, berth_jerr err) {
    s->stats.commit_failures++;
    server_log("commit of %u commands failed: %s; they were answered with an error and the "
               "state reloaded from the journal",
               count, berth_jerr_name(err));
}

static void batch_fatal(server *s) {
    server_log("the engine could not reload the journal after a failed commit: stopping");
    s->fatal = true;
    ev_break(s->loop, EVBREAK_ALL);
}

/* The unsynced batch when the journal can no longer make it durable: it is
 * committed, so it may survive, and it may not. Its writers must not hear
 * success, nor that nothing happened. */
static void batch_release_unknown(server *s) {
    uint32_t n = s->unsynced_count;
    if (n > 0 && s->unsynced_last_seq > s->unknown_last_seq) {
        s->unknown_last_seq = s->unsynced_last_seq;
    }
    s->unsynced_count = 0;
    for (uint32_t i = 0; i < n; i++) {
        batch_entry *e = &s->unsynced[i];
        client *c = e->client;
        assert(c != NULL && c->batch_pending > 0);
        c->batch_pending--;
        if (!c->closed) {
            reply_error(&c->out, "IOERR", "the journal could not make the write durable: its "
                                          "outcome is unknown and berthd is stopping; after the "
                                          "restart, retry it with the same REQID");
            client_output_added(c);
        }
        e->client = NULL;
        client_release(c);
    }
}

/* A sync failed: nothing unsynced can be called durable any more, and no
 * later commit could be either (journal.h: a failed sync is sticky). */
static void batch_sync_failed(server *s, berth_jerr err) {
    s->stats.commit_failures++;
    server_log("syncing the journal failed (%s): %u committed commands could not be confirmed "
               "durable and were answered with an unknown outcome; stopping",
               berth_jerr_name(err), s->unsynced_count);
    batch_release_unknown(s);
    s->fatal = true;
    ev_break(s->loop, EVBREAK_ALL);
}

/* ---- staging ----------------------------------------------------------- */

/* After a flush made room: false (and the client answered) when that
 * flush left berthd unable to serve writes. */
static bool batch_room_made(client *c) {
    if (!c->server->fatal) {
        return true;
    }
    reply_error(&c->out, "IOERR", "berthd is stopping after a journal failure: the command "
                                      "was not applied");
    client_output_added(c);
    return false;
}

/* On the LMDB road a full open batch (by entries, or the engine's bytes)
 * makes the client wait parked (wants_room; commands_dispatch parks it
 * with the command unparsed) until the loop hands the batch to the
 * committer: flushing here would stop the loop for a sync or two. An
 * empty batch the engine still calls full, or the etcd road, flushes. */
static bool batch_wait_room(client *c) {
    server *s = c->server;
    if (s->pipe == NULL || s->fatal || s->batch_count == 0) {
        return false;
    }
    c->wants_room = true;
    return true;
}

void batch_submit(client *c, size_t argc, const berth_str *argv) {
    server *s = c->server;
    assert(argc >= 1 && !c->wants_room);
    if (s->batch_count == SERVER_BATCH_ENTRIES_MAX) {
        if (batch_wait_room(c)) {
            return;
        }
        batch_flush(s);
        if (!batch_room_made(c)) {
            return;
        }
    }
    batch_entry *e = &s->batch[s->batch_count];
    berth_jerr stuck = BERTH_J_OK;
    if (batch_writes_stuck(s, &stuck) &&
        !berth_engine_submit_answered(s->engine, argc, argv, &e->result)) {
        /* Checkpoints fail (the commit log above): a new write is refused
         * unstaged, nothing changes; a retry of a REQID the window holds,
         * or a syntax error, is answered as always, below. The refusal
         * leaves at once when nothing of this client is held, else it takes
         * its place in the batch, so it leaves after the replies before it. */
        if (c->batch_pending == 0) {
            batch_reply_commit_error(&c->out, stuck);
            client_output_added(c);
            return;
        }
        batch_stuck_result(&e->result, stuck);
        e->client = c;
        c->batch_pending++;
        s->batch_count++;
        return;
    }
    if (stuck == BERTH_J_OK) {
        berth_str actor = berth_str_make(c->actor, c->actor_len);
        berth_engine_submit(s->engine, argc, argv, actor, &e->result);
        if (e->result.kind == BERTH_SUBMIT_BATCH_FULL) {
            if (batch_wait_room(c)) {
                return;
            }
            batch_flush(s);
            if (!batch_room_made(c)) {
                return;
            }
            e = &s->batch[0];
            berth_engine_submit(s->engine, argc, argv, actor, &e->result);
            assert(e->result.kind != BERTH_SUBMIT_BATCH_FULL);
        }
    }
    if (e->result.kind == BERTH_SUBMIT_SYNTAX && c->batch_pending == 0) {
        /* Nothing of this client is held: the error can go out at once. */
        batch_reply(&c->out, &e->result, BERTH_J_OK, batch_durable_head(s),
                    batch_durable_head(s));
        client_output_added(c);
        return;
    }
    if (e->result.kind == BERTH_SUBMIT_STAGED) {
        s->stats.writes_staged++;
    }
    e->client = c;
    c->batch_pending++;
    s->batch_count++;
    assert(s->batch_count <= SERVER_BATCH_ENTRIES_MAX);
}

/* ---- the synchronous road (etcd) --------------------------------------- */

static void batch_record_latency(server *s, uint64_t t0_ns) {
    uint64_t us = (now_ns_mono() - t0_ns) / 1000u;
    s->last_commit_us = us;
    s->stats.commits++;
    s->stats.latency_us[latency_bucket(us)]++;
}

static void batch_commit_sync(server *s) {
    uint64_t before = berth_engine_head_seq(s->engine);
    berth_jerr err = BERTH_J_OK;
    if (berth_engine_staged(s->engine) > 0) {
        uint64_t t0 = now_ns_mono();
        err = berth_engine_commit(s->engine, now_ms_wall());
        batch_record_latency(s, t0);
        if (err != BERTH_J_OK) {
            batch_commit_failed(s, s->batch_count, err);
        }
        if (err == BERTH_J_CORRUPT) {
            batch_fatal(s);
        }
    }
    uint64_t after = berth_engine_head_seq(s->engine);
    assert(err == BERTH_J_OK || after == before);
    s->last_batch_count = s->batch_count;
    batch_release(s, s->batch, &s->batch_count, err, after);
    if (after > before) {
        s->stats.records_committed += after - before;
        watch_committed(s, before + 1, after);
    }
}

/* ---- the pipelined road (LMDB) ----------------------------------------- */

/* memory := disk after a failed commit: the engine's state holds the failed
 * batch and whatever was staged on it. The open batch fails with it. */
static void batch_reload(server *s, berth_jerr err) {
    s->last_batch_count = s->batch_count;
    batch_release(s, s->batch, &s->batch_count, err, s->durable_head);
    if (s->fatal) {
        return;   /* settling the unsynced batch failed: berthd stops, no state to serve */
    }
    /* batch_collect settled the unsynced batch first, so this is the
     * durable head; kept general should an unsynced batch ever stay held. */
    uint64_t committed = s->unsynced_count > 0 ? s->unsynced_last_seq : s->durable_head;
    berth_engine *fresh = NULL;
    char why[BATCH_RELOAD_WHY_LEN_MAX] = "";
    berth_replay_stats stats;
    memset(&stats, 0, sizeof stats);
    berth_jerr e = berth_engine_open(&fresh, &s->pipe->base, &s->engine_options, &stats, why,
                                     sizeof why);
    if (e != BERTH_J_OK) {
        server_log("reloading the journal failed: %s", why);
        batch_fatal(s);
        return;
    }
    berth_engine_close(s->engine);
    s->engine = fresh;
    if (berth_engine_head_seq(s->engine) != committed) {
        /* The journal holds a batch it reported as failed (or lost one it
         * reported committed): memory, WATCH and the replies already sent no
         * longer agree with disk, so serving on would mislead. */
        server_log("after a failed commit the journal's head is seq %llu, not the committed "
                   "seq %llu berthd answered or holds replies for",
                   (unsigned long long)berth_engine_head_seq(s->engine),
                   (unsigned long long)committed);
        batch_fatal(s);
    }
}

/* Answer the unsynced batch once the journal's durable seq covers it. */
static void batch_release_durable(server *s, uint64_t durable) {
    if (s->unsynced_count == 0 || durable < s->unsynced_last_seq) {
        return;
    }
    uint64_t before = s->durable_head;
    uint32_t count = s->unsynced_count;
    assert(s->unsynced_last_seq > before);
    s->durable_head = s->unsynced_last_seq;
    batch_release(s, s->unsynced, &s->unsynced_count, BERTH_J_OK, s->durable_head);
    /* The cohort to gather next: the clients just answered come back,
     * joining those already staged. */
    s->last_batch_count = count + s->batch_count;
    s->stats.records_committed += s->durable_head - before;
    watch_committed(s, before + 1, s->durable_head);
}

/* The batch in flight committed: it becomes the unsynced batch. Its commit's
 * data sync made the one before it durable (journal.h), so that one goes
 * first; with the meta sync not deferred, durable already covers both. */
static void batch_committed(server *s) {
    uint64_t durable = pipe_durable(s->pipe);
    batch_release_durable(s, durable);
    if (s->unsynced_count > 0) {
        server_log("the journal says seq %llu is durable after a later commit, not seq %llu: "
                   "stopping",
                   (unsigned long long)durable, (unsigned long long)s->unsynced_last_seq);
        batch_sync_failed(s, BERTH_J_IO);
        /* The batch in flight is committed too, and no more durable. */
        batch_entry *held = s->unsynced;
        s->unsynced = s->inflight;
        s->unsynced_count = s->inflight_count;
        s->unsynced_last_seq = s->inflight_last_seq;
        s->inflight = held;
        s->inflight_count = 0;
        batch_release_unknown(s);
        return;
    }
    batch_entry *entries = s->unsynced;
    s->unsynced = s->inflight;
    s->unsynced_count = s->inflight_count;
    s->unsynced_last_seq = s->inflight_last_seq;
    s->inflight = entries;
    s->inflight_count = 0;
    batch_release_durable(s, durable);
}

static void batch_collect_sync(server *s);

/* A later batch failed while the unsynced batch waits for its sync: the
 * failed batch's errors must not overtake the unsynced batch's replies (a
 * client matches replies to commands by order), and a repeat of one of its
 * REQIDs should hear its outcome. So sync now, blocking the loop once, on
 * this failure path only: the unsynced batch is answered, durable or with
 * an unknown outcome (batch_sync_failed), before the failed one. */
static void batch_settle_unsynced(server *s) {
    if (s->unsynced_count == 0) {
        return;
    }
    pipe_wait_idle(s->pipe);
    batch_release_durable(s, pipe_durable(s->pipe));
    if (s->unsynced_count == 0) {
        return;
    }
    pipe_hand(s->pipe, true);
    pipe_wait_idle(s->pipe);
    batch_collect_sync(s);
    assert(s->unsynced_count == 0);
}

/* Answer the batch in flight once the committer reports it. */
static void batch_collect(server *s) {
    berth_jerr err = BERTH_J_OK;
    if (s->inflight_count == 0 || !pipe_take_result(s->pipe, &err)) {
        return;
    }
    batch_record_latency(s, s->inflight_t0_ns);
    if (err == BERTH_J_OK) {
        batch_committed(s);
        return;
    }
    uint32_t count = s->inflight_count;
    batch_settle_unsynced(s);
    batch_release(s, s->inflight, &s->inflight_count, err, s->durable_head);
    batch_commit_failed(s, count, err);
    /* An I/O error may have been the disk failing a sync: the next step
     * syncs, and stops berthd if the disk cannot (batch_sync_failed). */
    s->sync_probe = s->sync_probe || err == BERTH_J_IO;
    batch_reload(s, err);
}

/* Answer the unsynced batch once the committer's sync reports. */
static void batch_collect_sync(server *s) {
    berth_jerr err = BERTH_J_OK;
    if (!pipe_take_sync(s->pipe, &err)) {
        return;
    }
    s->stats.commit_syncs++;
    s->sync_probe = false;
    if (err != BERTH_J_OK) {
        batch_sync_failed(s, err);
        return;
    }
    batch_release_durable(s, pipe_durable(s->pipe));
    assert(s->unsynced_count == 0);
}

/* Nothing to commit, and a batch waits to be durable: a snapshot's commit
 * may have synced it already; otherwise the committer syncs. True when the
 * unsynced batch is answered. */
static bool batch_sync_unsynced(server *s) {
    if (s->unsynced_count == 0 && !s->sync_probe) {
        return true;
    }
    batch_release_durable(s, pipe_durable(s->pipe));
    if (s->unsynced_count == 0 && !s->sync_probe) {
        return true;
    }
    pipe_hand(s->pipe, true);
    return false;
}

/* Hand the open batch to an idle committer, or have it sync. true: the
 * batch's frame was written here, on the loop, and its result waits. */
static bool batch_hand_off(server *s) {
    if (s->inflight_count > 0 || s->fatal || !pipe_idle(s->pipe)) {
        return false;
    }
    bool nothing_to_write = s->batch_count == 0 || berth_engine_staged(s->engine) == 0;
    if (nothing_to_write || s->sync_probe) {
        /* Only refusals and replays of durable records, or nothing: no
         * commit. Those refusals may follow from the unsynced batch, so
         * they wait for it like any write of a later batch. After an I/O
         * error the sync comes before any further commit. */
        bool synced = batch_sync_unsynced(s);
        if (synced && nothing_to_write && s->batch_count > 0) {
            s->gathered = false;
            batch_release(s, s->batch, &s->batch_count, BERTH_J_OK, s->durable_head);
        }
        if (!synced || nothing_to_write) {
            return false;
        }
    }
    s->gathered = false;
    batch_entry *entries = s->inflight;
    s->inflight = s->batch;
    s->inflight_count = s->batch_count;
    s->batch = entries;
    s->batch_count = 0;
    s->inflight_t0_ns = now_ns_mono();
    berth_jerr err = berth_engine_commit(s->engine, now_ms_wall());
    uint64_t head = berth_engine_head_seq(s->engine);
    if (err != BERTH_J_OK) {
        /* The copy failed; the engine already reloaded from the journal,
         * which holds everything before this batch. */
        batch_record_latency(s, s->inflight_t0_ns);
        batch_commit_failed(s, s->inflight_count, err);
        batch_settle_unsynced(s);
        assert(head == s->durable_head || err == BERTH_J_CORRUPT || s->fatal);
        batch_release(s, s->inflight, &s->inflight_count, err, s->durable_head);
        if (err == BERTH_J_CORRUPT) {
            batch_fatal(s);
        }
        return false;
    }
    assert(head > s->durable_head);
    s->inflight_last_seq = head;
    if (pipe_run_on_loop(s->pipe)) {
        s->stats.commits_on_loop++;
        return true;
    }
    pipe_hand(s->pipe, false);   /* not taken, or given back unwritten (FULL, NOMEM) */
    return false;
}

/* ---- the loop's interface ---------------------------------------------- */

/* berthd turned fatal (a failed sync, or a reload that failed): it serves
 * no more writes, so the writes still held in the open batch will never be
 * committed. Answer them now, "not applied", in order, before any further
 * command of any client runs: a later reply to the same client (a PING, an
 * -IOERR for a write refused as berthd stops) must not overtake them. Every
 * path that turns fatal has answered the batches before (the unsynced one
 * with an unknown outcome, the one in flight with its error). */
static void batch_settle_fatal(server *s) {
    if (!s->fatal) {
        return;
    }
    assert(s->inflight_count == 0 && s->unsynced_count == 0);
    batch_release(s, s->batch, &s->batch_count, BERTH_J_IO, s->durable_head);
}

/* Group commit's one timing heuristic, which never changes an outcome:
 * clients whose replies a commit released send their next commands within
 * microseconds of each other, but the loop wakes on the first to arrive.
 * Committing that first handful alone would split the cohort in two batches
 * and pay two commits for it. When commits are slow (the disk's syncs, at
 * least GATHER_SLOW_FACTOR times commit_gather_us), that costs more than
 * waiting: so when the committer is idle and the batch is smaller than the
 * cohort expected (the clients the last commit answered plus those already
 * staged), wait in slices of short sleeps, polling in between, until the
 * cohort is in (commit at once) or commit_gather_us have passed. When
 * commits are fast, nothing waits: two cohorts then alternate, one applied
 * on the loop while the other syncs. A lone writer never waits: its batch
 * is never smaller than its last. While a commit is in flight nothing waits
 * either: the batch grows by itself until the committer is free. */
#define GATHER_SLOW_FACTOR 10
#define GATHER_SLICES_MAX 4
bool batch_may_gather(server *s) {
    if (s->batch_count == 0 || s->config.commit_gather_us == 0 ||
        s->batch_count >= s->last_batch_count || s->resume.next != &s->resume ||
        s->unsynced_count > 0 || s->drain_waiters > 0) {
        return false;
    }
    return s->pipe == NULL ||
           (s->inflight_count == 0 && pipe_idle(s->pipe) &&
            s->last_commit_us >= (uint64_t)GATHER_SLOW_FACTOR * s->config.commit_gather_us);
}

bool batch_gather(server *s) {
    if (!batch_may_gather(s)) {
        return false;
    }
    uint64_t now = now_ns_mono();
    if (!s->gathered) {
        s->gathered = true;
        s->gather_start_ns = now;
    }
    uint64_t budget_ns = (uint64_t)s->config.commit_gather_us * 1000u;
    uint64_t waited_ns = now - s->gather_start_ns;
    if (waited_ns >= budget_ns) {
        return false;
    }
    uint64_t slice_ns = budget_ns / GATHER_SLICES_MAX;
    uint64_t left_ns = budget_ns - waited_ns;
    ev_sleep((ev_tstamp)(slice_ns < left_ns ? slice_ns : left_ns) / 1e9);
    return true;
}

void batch_reap(server *s) {
    if (s->pipe != NULL) {
        batch_collect(s);
        batch_collect_sync(s);
        batch_settle_fatal(s);
    }
}

/* A checkpoint failed for good (the commit log above): LMDB takes no more
 * records, so berthd stops once nothing is in flight. Every acknowledged
 * record is in the log, and the next start moves it. */
static bool batch_checkpoint_failed(server *s) {
    if (s->pipe == NULL || s->pipe->clog == NULL || s->fatal) {
        return false;
    }
    pipe_lock(s->pipe);
    berth_jerr err = s->pipe->checkpoint_fatal;
    pipe_unlock(s->pipe);
    if (err == BERTH_J_OK) {
        return false;
    }
    if (s->inflight_count > 0) {
        return true;    /* its report comes first */
    }
    server_log("the journal cannot take the commit log's records (%s): stopping; every "
               "acknowledged write is in the commit log (%s/%s, %s) and the next start moves it",
               berth_jerr_name(err), s->config.data_dir, BERTH_CLOG_FILE, BERTH_CLOG_FILE2);
    if (s->unsynced_count > 0) {
        /* A batch whose frame failed too (a dying disk): no sync will be
         * asked for now, so its writers hear the unknown outcome here. */
        batch_sync_failed(s, BERTH_J_IO);
        return true;
    }
    s->fatal = true;
    ev_break(s->loop, EVBREAK_ALL);
    return true;
}

void batch_step(server *s) {
    if (s->pipe == NULL) {
        if (s->batch_count > 0) {
            s->gathered = false;
            batch_commit_sync(s);
        }
        return;
    }
    batch_collect(s);
    batch_collect_sync(s);
    if (!batch_checkpoint_failed(s) && batch_hand_off(s)) {
        batch_collect(s);   /* written on the loop: answer it now */
    }
    batch_settle_fatal(s);
}

bool batch_state_durable(const server *s) {
    return berth_engine_staged(s->engine) == 0 && s->inflight_count == 0 &&
           s->unsynced_count == 0;
}

bool batch_commits_on_loop(const server *s) {
    return s->pipe != NULL && pipe_may_run_on_loop(s->pipe);
}

bool batch_can_step(server *s) {
    if (s->batch_count == 0 && s->unsynced_count == 0 && !s->sync_probe) {
        return false;
    }
    return s->pipe == NULL || (s->inflight_count == 0 && !s->fatal && pipe_idle(s->pipe));
}

void batch_flush(server *s) {
    if (s->pipe == NULL) {
        batch_step(s);
        return;
    }
    while (s->inflight_count > 0 || s->batch_count > 0 || s->unsynced_count > 0) {
        pipe_wait_idle(s->pipe);
        batch_collect(s);
        batch_collect_sync(s);
        if (s->fatal) {
            batch_settle_fatal(s);
            return;
        }
        batch_hand_off(s);
    }
    /* No wait for a trailing snapshot: the state already equals the journal,
     * the next hand-off waits for an idle committer itself, and pipe_stop
     * finishes queued work before it joins. A draining read must not sit
     * through a multi-megabyte snapshot write it does not need. */
    assert(s->inflight_count == 0 && s->batch_count == 0 && s->unsynced_count == 0);
}

void batch_abandon(server *s) {
    if (s->pipe != NULL) {
        pipe_wait_idle(s->pipe);
        batch_collect(s);
        batch_collect_sync(s);
        batch_release_durable(s, pipe_durable(s->pipe));
        batch_release_unknown(s);   /* committed, never confirmed durable */
    }
    /* Never committed, never acknowledged: each writer hears so. */
    batch_release(s, s->inflight, &s->inflight_count, BERTH_J_IO, s->durable_head);
    batch_release(s, s->batch, &s->batch_count, BERTH_J_IO, s->durable_head);
    assert(s->inflight_count == 0 && s->batch_count == 0);
}
