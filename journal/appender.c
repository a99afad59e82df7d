/* appender.c — owns pipelined appends (appender.h): the batches in flight, their
 * encoded bytes, and the committer thread that appends them and says when
 * each is durable.
 *
 * The caller's thread encodes; the committer thread only appends bytes
 * already encoded (the backend's append_own: the encoded road without a
 * second SHA-256), then reads how far the journal is durable. Skipping the
 * hash is sound here and not for the commit log's checkpoint, whose bytes
 * come from a file that may change after its walk read them: these never
 * leave this process's heap between berth_record_encode hashing them and
 * LMDB copying them, and no pointer into the arena leaves this file. Slots are a
 * ring of BERTH_APPENDER_DEPTH: batch k lives in slot k % DEPTH, and a slot is
 * reused only after the caller waited for the batch before in it, which
 * the committer had resolved, so no slot is written while the committer
 * reads it.
 *
 * A batch is tried (its append ran, alone or with the batches queued
 * beside it, or was skipped behind a failure), then resolved (its outcome
 * final: its failure, or OK once the journal's durable seq reaches its
 * last record). On a journal with defer_meta_sync a commit's own sync
 * makes the commit before it durable, so a batch usually resolves when the
 * next commit is made; with nothing queued to commit, the committer syncs
 * instead (berth_journal_sync) rather than leave a tried batch waiting.
 * Batches resolve in order. A failure, of an append
 * or of such a sync, fails every batch queued behind it untried (failed),
 * and submit refuses new batches once a wait has returned an error until
 * the batches in flight are waited out (saw_failure): they all chain from
 * the failed one.
 *
 * Counters, all monotonic: submitted and waited change on the caller's
 * thread, under mu (the committer reads submitted); tried and resolved
 * change under mu on the committer. failed, under mu, is set by the
 * committer and cleared by the caller once nothing is in flight, when the
 * committer is idle. Invariant: waited <= resolved <= tried <= submitted
 * <= waited + DEPTH. */
#define _GNU_SOURCE     /* pthread_setname_np */
#include <assert.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "appender.h"
#include "backend.h"
#include "jutil.h"

enum { arena_bytes_initial = 64u << 10 };

typedef struct appender_slot {
    uint8_t *arena;                     /* the batch's encoded records, back to back */
    size_t arena_bytes;                 /* its capacity; grows, never past BERTH_BATCH_BYTES_MAX */
    berth_encoded records[BERTH_BATCH_RECORDS_MAX];
    const berth_touched *touched;       /* the caller's, valid until the batch is waited for */
    size_t n;
    size_t bytes;                       /* the records' encoded bytes */
    uint64_t last_seq;
    berth_jerr err;                     /* once tried: the append's outcome; once resolved: final */
} appender_slot;

struct berth_appender {
    berth_journal *journal;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t submitted;
    uint64_t waited;
    uint64_t tried;                     /* under mu */
    uint64_t resolved;                  /* under mu */
    berth_jerr failed;                  /* under mu: the first failure not yet waited out */
    bool stop;                          /* under mu */
    bool saw_failure;                   /* a wait failed, and batches are still in flight */
    uint64_t chain_seq;                 /* the last submitted record, while any is in flight */
    uint8_t chain_hash[BERTH_HASH_LEN];
    uint64_t commits;                   /* under mu: appends the committer made */
    appender_slot slots[BERTH_APPENDER_DEPTH];
    /* The committer's: consecutive queued batches as one append. */
    berth_encoded merged[BERTH_BATCH_RECORDS_MAX];
    berth_touched merged_touched[BERTH_BATCH_RECORDS_MAX];
};

static appender_slot *slot_of(berth_appender *p, uint64_t batch) {
    return &p->slots[batch % BERTH_APPENDER_DEPTH];
}

/* Under mu: resolve, in order, the tried batches whose outcome is final: a
 * failure, or OK with every record durable (durable_seq). sync_err, when
 * not OK, is the outcome of a sync that ran after every tried batch
 * committed: it fails each OK batch still waiting to be durable. */
static void resolve(berth_appender *p, uint64_t durable_seq, berth_jerr sync_err) {
    while (p->resolved < p->tried) {
        appender_slot *slot = slot_of(p, p->resolved);
        if (slot->err == BERTH_J_OK && slot->last_seq > durable_seq) {
            if (sync_err == BERTH_J_OK) {
                break;   /* committed; durable at a later commit's sync or the idle sync */
            }
            slot->err = sync_err;
        }
        p->resolved++;
    }
    pthread_cond_broadcast(&p->cv);
}

/* The durable seq after a commit or sync; 0 when it cannot be read (no batch
 * then resolves by it, and the idle sync's outcome decides). */
static uint64_t durable_now(berth_appender *p) {
    uint64_t seq = 0;
    return berth_journal_durable(p->journal, &seq) == BERTH_J_OK ? seq : 0;
}

/* How many queued batches from the next untried one go into one append:
 * all that are queued, as far as one append takes them
 * (BERTH_BATCH_RECORDS_MAX records, BERTH_BATCH_BYTES_MAX bytes). Under mu. */
static uint64_t queued_take(berth_appender *p) {
    size_t n = 0, bytes = 0;
    uint64_t k = p->tried;
    while (k < p->submitted) {
        const appender_slot *slot = slot_of(p, k);
        if (k > p->tried && (slot->n > BERTH_BATCH_RECORDS_MAX - n ||
                             slot->bytes > BERTH_BATCH_BYTES_MAX - bytes)) {
            break;
        }
        n += slot->n;
        bytes += slot->bytes;
        k++;
    }
    assert(k > p->tried);
    return k - p->tried;
}

/* The append of batches first..first+count-1, one transaction: a single
 * batch as it stands, several through the merged arrays (a batch without
 * touched names gets empty entries, which the store keeps as none). Not
 * under mu: the caller writes none of these slots until they are waited
 * for. */
static berth_jerr append_batches(berth_appender *p, uint64_t first, uint64_t count) {
    const appender_slot *slot = slot_of(p, first);
    if (count == 1) {
        return p->journal->ops->append_own(p->journal, slot->records, slot->touched, slot->n);
    }
    size_t n = 0;
    bool touched = false;
    for (uint64_t k = first; k < first + count; k++) {
        slot = slot_of(p, k);
        assert(n + slot->n <= BERTH_BATCH_RECORDS_MAX);
        memcpy(&p->merged[n], slot->records, slot->n * sizeof(p->merged[0]));
        if (slot->touched != NULL) {
            memcpy(&p->merged_touched[n], slot->touched, slot->n * sizeof(p->merged_touched[0]));
            touched = true;
        } else {
            memset(&p->merged_touched[n], 0, slot->n * sizeof(p->merged_touched[0]));
        }
        n += slot->n;
    }
    return p->journal->ops->append_own(p->journal, p->merged, touched ? p->merged_touched : NULL, n);
}

/* Try every queued batch, in one append (mu held on entry and return). The
 * batches that wait while a commit and its syncs run go together into the
 * next: a slow disk makes commits bigger, not more. A merged append that
 * found no room is tried again with its first batch alone, so merging
 * never fails a batch that alone would have fitted. */
static void try_queued(berth_appender *p) {
    uint64_t first = p->tried;
    uint64_t count = queued_take(p);
    berth_jerr before = p->failed;
    pthread_mutex_unlock(&p->mu);
    berth_jerr err = before;   /* they chain from records that were never written */
    uint64_t durable_seq = 0;
    if (before == BERTH_J_OK) {
        err = append_batches(p, first, count);
        if (count > 1 && (err == BERTH_J_FULL || err == BERTH_J_AGAIN)) {
            /* Nothing was written, and near the map's or the disk's end
             * one batch may fit where several did not: the first goes
             * alone, the rest stay queued for the next round. */
            count = 1;
            err = append_batches(p, first, count);
        }
        durable_seq = durable_now(p);
    }
    pthread_mutex_lock(&p->mu);
    for (uint64_t k = first; k < first + count; k++) {
        slot_of(p, k)->err = err;
    }
    if (err != BERTH_J_OK && p->failed == BERTH_J_OK) {
        p->failed = err;
    }
    p->commits += before == BERTH_J_OK && err == BERTH_J_OK;
    p->tried += count;
    assert(p->tried <= p->submitted);
    resolve(p, durable_seq, BERTH_J_OK);
}

/* Nothing queued, but tried batches wait to be durable: sync (mu held on
 * entry and return). */
static void sync_tried(berth_appender *p) {
    pthread_mutex_unlock(&p->mu);
    berth_jerr err = berth_journal_sync(p->journal);
    uint64_t durable_seq = durable_now(p);
    pthread_mutex_lock(&p->mu);
    resolve(p, durable_seq, err == BERTH_J_OK ? BERTH_J_IO : err);
    if (err != BERTH_J_OK && p->failed == BERTH_J_OK) {
        /* A batch submitted meanwhile chains from records this sync could
         * not make durable: it fails untried, like any batch behind a
         * failure. (A sync failed for room is not sticky, so without this
         * such a batch would commit, and its sync make durable the batch
         * just answered with the error.) */
        p->failed = err;
    }
}

static void *committer_main(void *arg) {
    berth_appender *p = arg;
    (void)pthread_setname_np(pthread_self(), "berth-appender");   /* for top, perf; best effort */
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (p->tried < p->submitted) {
            try_queued(p);
        } else if (p->resolved < p->tried) {
            sync_tried(p);
        } else if (p->stop) {
            break;
        } else {
            pthread_cond_wait(&p->cv, &p->mu);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

berth_jerr berth_appender_open(berth_appender **out, berth_journal *journal) {
    assert(out != NULL && journal != NULL);
    *out = NULL;
    if (journal->ops->append_own == NULL) {
        return BERTH_J_INVALID;
    }
    berth_appender *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return BERTH_J_NOMEM;
    }
    p->journal = journal;
    p->failed = BERTH_J_OK;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        return BERTH_J_NOMEM;
    }
    if (pthread_cond_init(&p->cv, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        return BERTH_J_NOMEM;
    }
    if (pthread_create(&p->thread, NULL, committer_main, p) != 0) {
        pthread_cond_destroy(&p->cv);
        pthread_mutex_destroy(&p->mu);
        free(p);
        return BERTH_J_IO;
    }
    *out = p;
    return BERTH_J_OK;
}

size_t berth_appender_in_flight(const berth_appender *ap) {
    assert(ap != NULL);
    assert(ap->waited <= ap->submitted && ap->submitted - ap->waited <= BERTH_APPENDER_DEPTH);
    return (size_t)(ap->submitted - ap->waited);
}

/* Room for need more bytes after used in the slot's arena; false when the
 * batch would pass BERTH_BATCH_BYTES_MAX (INVALID) or memory ran out
 * (*nomem). Grows by doubling, so an appender reaches its batches' size once. */
static bool arena_room(appender_slot *slot, size_t used, size_t need, bool *nomem) {
    assert(used <= slot->arena_bytes);
    if (need > BERTH_BATCH_BYTES_MAX - used) {
        return false;
    }
    if (slot->arena_bytes - used >= need) {
        return true;
    }
    size_t size = slot->arena_bytes == 0 ? arena_bytes_initial : slot->arena_bytes;
    while (size - used < need) {
        size *= 2;
    }
    if (size > BERTH_BATCH_BYTES_MAX) {
        size = BERTH_BATCH_BYTES_MAX;
    }
    uint8_t *grown = realloc(slot->arena, size);
    if (grown == NULL) {
        *nomem = true;
        return false;
    }
    slot->arena = grown;
    slot->arena_bytes = size;
    return true;
}

/* Encode one record at used in the slot's arena, chained from prev: its
 * length, or 0 (INVALID, or NOMEM when *nomem). */
static size_t encode_one(appender_slot *slot, size_t used, berth_record *rec,
                         const uint8_t prev[BERTH_HASH_LEN], bool *nomem) {
    rec->version = BERTH_RECORD_VERSION;
    memcpy(rec->prev_hash, prev, BERTH_HASH_LEN);
    size_t need = berth_record_encoded_len(rec, false);
    if (need == 0 || !arena_room(slot, used, need, nomem)) {
        return 0;   /* a field over its limit, or the batch over its bytes */
    }
    bool fitted = berth_record_encode_sized(rec, slot->arena + used, need);
    assert(fitted);   /* encoded_len's contract */
    return fitted ? need : 0;
}

/* Encode the batch into slot, chained from seq and hash; OK, INVALID or
 * NOMEM. The slot's records point into its arena once all are encoded (the
 * arena may move while it grows). */
static berth_jerr encode_batch(appender_slot *slot, berth_record *records,
                               const berth_touched *touched, size_t n, uint64_t seq,
                               const uint8_t hash[BERTH_HASH_LEN]) {
    size_t used = 0;
    const uint8_t *prev = hash;
    for (size_t i = 0; i < n; i++) {
        if (records[i].seq != seq + 1 + i ||
            (touched != NULL && !berth_touched_valid(&touched[i]))) {
            return BERTH_J_INVALID;   /* refused here, not at the wait behind a chain */
        }
        bool nomem = false;
        size_t len = encode_one(slot, used, &records[i], prev, &nomem);
        if (len == 0) {
            return nomem ? BERTH_J_NOMEM : BERTH_J_INVALID;
        }
        slot->records[i].len = len;
        used += len;
        prev = records[i].hash;
    }
    slot->bytes = used;
    const uint8_t *at = slot->arena;
    for (size_t i = 0; i < n; i++) {
        slot->records[i].bytes = at;
        at += slot->records[i].len;
    }
    assert(at == slot->arena + used);
    return BERTH_J_OK;
}

berth_jerr berth_appender_submit(berth_appender *ap, berth_record *records,
                                 const berth_touched *touched, size_t n) {
    assert(ap != NULL);
    if (records == NULL || n == 0 || n > BERTH_BATCH_RECORDS_MAX ||
        berth_appender_in_flight(ap) == BERTH_APPENDER_DEPTH || ap->saw_failure) {
        return BERTH_J_INVALID;   /* saw_failure: the batches in flight chain from a failed one */
    }
    if (berth_appender_in_flight(ap) == 0) {
        /* Nothing in flight: the committer is idle, and the chain starts
         * at the head (again, after a failure). */
        berth_jerr err = berth_journal_head(ap->journal, &ap->chain_seq, ap->chain_hash);
        if (err != BERTH_J_OK) {
            return err;
        }
    }
    /* The slot's last batch was waited for, so the committer is done with it. */
    appender_slot *slot = slot_of(ap, ap->submitted);
    berth_jerr err = encode_batch(slot, records, touched, n, ap->chain_seq, ap->chain_hash);
    if (err != BERTH_J_OK) {
        return err;
    }
    slot->touched = touched;
    slot->n = n;
    slot->last_seq = records[n - 1].seq;
    slot->err = BERTH_J_OK;
    ap->chain_seq = records[n - 1].seq;
    memcpy(ap->chain_hash, records[n - 1].hash, BERTH_HASH_LEN);
    pthread_mutex_lock(&ap->mu);
    ap->submitted++;
    pthread_cond_broadcast(&ap->cv);
    pthread_mutex_unlock(&ap->mu);
    assert(berth_appender_in_flight(ap) >= 1);
    return BERTH_J_OK;
}

berth_jerr berth_appender_wait(berth_appender *ap, uint64_t *last_seq) {
    assert(ap != NULL);
    if (berth_appender_in_flight(ap) == 0) {
        return BERTH_J_INVALID;
    }
    pthread_mutex_lock(&ap->mu);
    while (ap->resolved == ap->waited) {
        pthread_cond_wait(&ap->cv, &ap->mu);
    }
    const appender_slot *slot = slot_of(ap, ap->waited);
    berth_jerr err = slot->err;
    if (last_seq != NULL) {
        *last_seq = slot->last_seq;
    }
    ap->waited++;
    ap->saw_failure = (ap->saw_failure || err != BERTH_J_OK) && ap->waited < ap->submitted;
    if (ap->waited == ap->submitted) {
        ap->failed = BERTH_J_OK;   /* every failed batch is out; the committer is idle */
    }
    pthread_mutex_unlock(&ap->mu);
    return err;
}

uint64_t berth_appender_commits(berth_appender *ap) {
    assert(ap != NULL);
    pthread_mutex_lock(&ap->mu);
    uint64_t commits = ap->commits;
    pthread_mutex_unlock(&ap->mu);
    return commits;
}

void berth_appender_close(berth_appender *ap) {
    if (ap == NULL) {
        return;
    }
    pthread_mutex_lock(&ap->mu);
    ap->stop = true;   /* the committer resolves what was submitted first */
    pthread_cond_broadcast(&ap->cv);
    pthread_mutex_unlock(&ap->mu);
    int rc = pthread_join(ap->thread, NULL);
    assert(rc == 0);
    (void)rc;
    assert(ap->resolved == ap->submitted);
    for (size_t i = 0; i < BERTH_APPENDER_DEPTH; i++) {
        free(ap->slots[i].arena);
    }
    pthread_cond_destroy(&ap->cv);
    pthread_mutex_destroy(&ap->mu);
    free(ap);
}
