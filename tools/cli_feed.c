/* cli_feed.c — records, decoded and parsed on a second thread, for the berth
 * tool's own replays (whatif --rejudge, timeline); see cli_feed.h.
 *
 * berth_replay_to reaches its speed by reading, decoding and parsing on one
 * core while applying on the other. The tool's replays that must see every
 * outcome (rejudge compares each one with the recorded code; timeline draws
 * them) cannot use it as a black box, so this gives them the same shape. A
 * chunk goes round a ring: the feed thread fills it with records read from
 * the journal, the caller judges the whole chunk in order and notes what
 * its hook needs (rejudge: only the records that differ), and the feed
 * thread runs the drain hook on it (rejudge's printing and bookkeeping)
 * before filling it again. The caller takes the lock once per chunk, not
 * per record. Hooks run in chunk order, so whatever they print comes out
 * in seq order.
 *
 * Decode and parse, the steps between, go to whichever thread has room, as
 * in the engine's replay: the feed thread does them for a chunk when it is
 * at least half the ring ahead of the caller (the caller is the slow half)
 * and leaves them to the caller otherwise (the feed thread, with its hook,
 * is). Both threads run the same per-record function in seq order and a
 * chunk is wholly one thread's, so what is judged, and every message, is
 * the same whoever prepared it; only the CPU split depends on timing.
 *
 * Owns: the feed thread, the chunk ring and its lock. While a feed runs,
 * the read view belongs to the feed thread: the caller must not use it. */
#include <assert.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cli_feed.h"

#define FEED_CHUNKS 8u                 /* chunks in the ring: how far the feed thread runs ahead */
#define FEED_CHUNK_ITEMS 256u          /* records per chunk: amortises the lock and the hand-over */
#ifndef FEED_PREPARE_AHEAD_MIN  /* the tests build it at 0 (always) and FEED_CHUNKS + 1 (never) */
#define FEED_PREPARE_AHEAD_MIN (FEED_CHUNKS / 2)  /* chunks ahead at which the feed thread prepares */
#endif
_Static_assert(FEED_PREPARE_AHEAD_MIN <= FEED_CHUNKS + 1, "FEED_CHUNKS + 1 already means never");

typedef struct feed_chunk {
    cli_feed_item items[FEED_CHUNK_ITEMS];
    cli_feed_note notes[FEED_CHUNK_ITEMS];
    uint32_t count;
    uint32_t note_count;               /* notes the caller made */
    bool prepared;                     /* every item decoded and parsed (by the feed thread) */
    bool failed;                       /* the records stop at this chunk's end: err says why */
    char err[CLI_ERR_LEN_MAX];
} feed_chunk;

struct cli_feed {
    berth_journal_reader *reader;
    cli_feed_options options;
    feed_chunk *chunks;                /* FEED_CHUNKS, owned */
    pthread_t thread;
    bool thread_started;
    bool joined;
    pthread_mutex_t lock;
    pthread_cond_t can_fill;           /* the feed thread waits here: a chunk drained, or stop */
    pthread_cond_t can_drain;          /* the caller waits here: a chunk filled, or the end */
    /* Under lock: */
    uint64_t filled;                   /* chunks published by the feed thread */
    uint64_t drained;                  /* chunks the caller has finished */
    bool done;                         /* the feed thread published its last chunk */
    bool stop;                         /* the caller gave up: the feed thread should too */
    bool failed_drained;               /* the caller met a failed record: hook what it finished, read no more */
    bool hook_failed;                  /* the drain hook said no: hook_err says why */
    char hook_err[CLI_ERR_LEN_MAX];
    /* The feed thread's own: */
    uint64_t hooked;                   /* drained chunks the hook has run on */
    bool last;                         /* the last chunk is published */
    uint64_t cpu_ns;                   /* the thread's CPU time, set as it leaves */
    uint64_t prepared_by_feed;         /* chunks it decoded and parsed */
    berth_str words[BERTH_ARGS_MAX];   /* parse scratch */
    /* The caller's own: */
    bool holding;                      /* chunks[drained % FEED_CHUNKS] is the caller's batch */
    uint64_t prepared_by_caller;       /* chunks it decoded and parsed */
    berth_str caller_words[BERTH_ARGS_MAX];  /* parse scratch */
};

static void lock(pthread_mutex_t *m) {
    int rc = pthread_mutex_lock(m);
    assert(rc == 0);
    (void)rc;
}

static void unlock(pthread_mutex_t *m) {
    int rc = pthread_mutex_unlock(m);
    assert(rc == 0);
    (void)rc;
}

static void wait_on(pthread_cond_t *cv, pthread_mutex_t *m) {
    int rc = pthread_cond_wait(cv, m);
    assert(rc == 0);
    (void)rc;
}

static void signal_one(pthread_cond_t *cv) {
    int rc = pthread_cond_signal(cv);
    assert(rc == 0);
    (void)rc;
}

/* Parse text into item->cmd; false with err when it does not parse. */
static bool parse_item(cli_feed_item *item, berth_str text, berth_str *words, char *err,
                       size_t err_size) {
    char perr[BERTH_ERR_LEN_MAX];
    if (berth_cmd_parse_text(&item->cmd, text.ptr, text.len, words, BERTH_ARGS_MAX, perr,
                             sizeof perr) != 0) {
        snprintf(err, err_size, "record %" PRIu64 "'s command does not parse: %s", item->rec.seq, perr);
        return false;
    }
    item->text = text;
    return true;
}

static void unreadable(uint64_t seq, const char *why, char *err, size_t err_size) {
    snprintf(err, err_size, "record %" PRIu64 " cannot be read (%s): run `berth journal verify`", seq, why);
}

/* Read one record's bytes (the feed thread's share of every record).
 * false with err when the store cannot give them; a record stored under
 * another seq is read, and prepare_item refuses it. */
static bool read_item(berth_journal_cursor *cursor, uint64_t seq, cli_feed_item *item, char *err,
                      size_t err_size) {
    berth_jerr jerr = berth_journal_cursor_next_raw(cursor, &item->raw_seq, &item->raw, &item->raw_len);
    if (jerr != BERTH_J_OK) {
        unreadable(seq, berth_jerr_name(jerr), err, err_size);
        return false;
    }
    item->rec.seq = seq;   /* the seq it must have: prepare_item checks the record agrees */
    return true;
}

/* Decode one record read at its seq and parse the command it will be
 * judged by (either thread; words is that thread's scratch). */
static bool prepare_item(const cli_feed_options *o, cli_feed_item *item, berth_str *words, char *err,
                         size_t err_size) {
    uint64_t seq = item->rec.seq;
    /* As berth_journal_cursor_next decodes: the record must say the seq it
     * is stored under; then that must be the seq that comes next. */
    berth_jerr jerr = berth_record_decode(item->raw, item->raw_len, &item->rec, NULL, 0);
    if (jerr != BERTH_J_OK || item->rec.seq != item->raw_seq) {
        item->rec.seq = seq;
        /* NOMEM is the decoder's, not the journal's fault: say which. */
        unreadable(seq, berth_jerr_name(jerr != BERTH_J_OK ? jerr : BERTH_J_CORRUPT), err, err_size);
        return false;
    }
    if (item->rec.seq != seq) {
        item->rec.seq = seq;
        unreadable(seq, "out of order", err, err_size);
        return false;
    }
    if (!parse_item(item, item->rec.command, words, err, err_size)) {
        return false;
    }
    /* Substitutes are rare (rejudge's POLICY.SET): parse every record as
     * written and only the few of substitute_kind a second time. */
    item->substituted = o->substitute_kind != BERTH_CMD_NONE && item->cmd.kind == o->substitute_kind;
    if (item->substituted && !parse_item(item, o->substitute_text, words, err, err_size)) {
        return false;
    }
    /* The journal keeps the REQID beside the canonical text: re-attach it,
     * as replay does, so the request-id window is rebuilt too. */
    item->cmd.reqid = item->rec.reqid;
    return true;
}

/* Decode and parse a chunk's items in order, on whichever thread: a
 * failing item ends the chunk there, with its reason. */
static void prepare_chunk(const cli_feed_options *o, feed_chunk *chunk, berth_str *words) {
    assert(!chunk->prepared);
    for (uint32_t i = 0; i < chunk->count; i++) {
        if (!prepare_item(o, &chunk->items[i], words, chunk->err, sizeof chunk->err)) {
            chunk->count = i;
            chunk->failed = true;
            break;
        }
    }
    chunk->prepared = true;
}

/* Fill the next free chunk from *seq on and publish it; ahead is how many
 * published chunks the caller has not finished. */
static void fill_and_publish(cli_feed *feed, berth_journal_cursor *cursor, berth_jerr open_err,
                             uint64_t *seq, uint64_t ahead) {
    const cli_feed_options *o = &feed->options;
    assert(!feed->last && feed->filled - feed->hooked < FEED_CHUNKS && ahead <= FEED_CHUNKS);
    feed_chunk *chunk = &feed->chunks[feed->filled % FEED_CHUNKS];
    chunk->count = 0;
    chunk->prepared = false;
    chunk->failed = open_err != BERTH_J_OK;
    if (chunk->failed) {
        snprintf(chunk->err, sizeof chunk->err, "cannot read from seq %" PRIu64 " (%s)", *seq,
                 berth_jerr_name(open_err));
    }
    /* A record stored under another seq ends the chunk: nothing after it
     * can be in order (prepare_item reports it). */
    bool misplaced = false;
    while (!chunk->failed && !misplaced && chunk->count < FEED_CHUNK_ITEMS && *seq <= o->to) {
        cli_feed_item *item = &chunk->items[chunk->count];
        chunk->failed = !read_item(cursor, *seq, item, chunk->err, sizeof chunk->err);
        misplaced = !chunk->failed && item->raw_seq != *seq;
        chunk->count += chunk->failed ? 0 : 1;
        *seq += chunk->failed ? 0 : 1;
    }
    if ((int64_t)ahead >= (int64_t)FEED_PREPARE_AHEAD_MIN) {   /* signed: the tests' 0 is no warning */
        /* The caller is the slow half: take decode and parse off it. */
        prepare_chunk(o, chunk, feed->words);
        feed->prepared_by_feed++;
    }
    assert(chunk->count > 0 || chunk->failed);
    feed->last = chunk->failed || misplaced || *seq > o->to;
    lock(&feed->lock);
    feed->filled++;
    feed->done = feed->last;
    signal_one(&feed->can_drain);
    unlock(&feed->lock);
}

/* Wait until there is work for the feed thread: a drained chunk to hook, a
 * free chunk to fill, or the end. Returns the drained count (the chunks
 * the caller finished), or false in *go when the caller stopped the feed or
 * everything it judged before a failed record is hooked; *fill false once
 * the caller met a failed record. */
static uint64_t wait_work(cli_feed *feed, bool *go, bool *fill) {
    lock(&feed->lock);
    for (;;) {
        bool hook_work = feed->hooked < feed->drained;
        bool fill_work = !feed->last && !feed->failed_drained &&
                         feed->filled - feed->hooked < FEED_CHUNKS;
        bool all_hooked = (feed->last && feed->hooked == feed->filled) ||
                          (feed->failed_drained && feed->hooked == feed->drained);
        if (feed->stop || hook_work || fill_work || all_hooked) {
            break;
        }
        wait_on(&feed->can_fill, &feed->lock);
    }
    /* After a failed record: once its chunk is hooked, nothing is left. */
    *go = !feed->stop && !(feed->failed_drained && feed->hooked == feed->drained);
    *fill = !feed->failed_drained;
    uint64_t drained = feed->drained;
    unlock(&feed->lock);
    return drained;
}

/* Run the drain hook on every chunk the caller has finished, in order. */
static bool run_hooks(cli_feed *feed, uint64_t drained) {
    const cli_feed_options *o = &feed->options;
    for (; feed->hooked < drained; feed->hooked++) {
        const feed_chunk *chunk = &feed->chunks[feed->hooked % FEED_CHUNKS];
        char err[CLI_ERR_LEN_MAX] = "";
        assert(chunk->note_count <= chunk->count);
        if (o->drain == NULL || chunk->count == 0 || o->drain(o->drain_ctx, chunk->items, chunk->count, chunk->notes,
                                         chunk->note_count, err, sizeof err) == 0) {
            continue;
        }
        lock(&feed->lock);
        feed->hook_failed = true;
        snprintf(feed->hook_err, sizeof feed->hook_err, "%s", err[0] ? err : "ERR the drain hook failed");
        signal_one(&feed->can_drain);
        unlock(&feed->lock);
        return false;
    }
    return true;
}

static void *feeder_main(void *arg) {
    cli_feed *feed = arg;
    berth_journal_cursor *cursor = NULL;
    berth_jerr open_err = berth_journal_cursor_open(feed->reader, feed->options.from, &cursor);
    uint64_t seq = feed->options.from;
    for (;;) {
        bool go = false;
        bool fill = false;
        uint64_t drained = wait_work(feed, &go, &fill);
        if (!go || !run_hooks(feed, drained) || (feed->last && feed->hooked == feed->filled)) {
            break;
        }
        if (fill && !feed->last && feed->filled - feed->hooked < FEED_CHUNKS) {
            /* drained is a moment ago's: the caller may have finished more
             * since, which only makes this chunk's share the caller's. */
            fill_and_publish(feed, cursor, open_err, &seq, feed->filled - drained);
        }
    }
    if (cursor != NULL) {
        berth_journal_cursor_close(cursor);
    }
    feed->cpu_ns = cli_feed_own_cpu_ns();
    return NULL;
}

int cli_feed_start(cli_feed **out, berth_journal_reader *reader, const cli_feed_options *options) {
    assert(out != NULL && reader != NULL && options != NULL);
    assert(options->from >= 1 && options->from <= options->to);
    cli_feed *feed = calloc(1, sizeof *feed);
    if (feed == NULL || (feed->chunks = calloc(FEED_CHUNKS, sizeof *feed->chunks)) == NULL) {
        free(feed);
        return cli_fail(CLI_EXIT_USAGE, "NOMEM", "out of memory starting the record feed");
    }
    feed->reader = reader;
    feed->options = *options;
    if (pthread_mutex_init(&feed->lock, NULL) != 0 || pthread_cond_init(&feed->can_fill, NULL) != 0 ||
        pthread_cond_init(&feed->can_drain, NULL) != 0 ||
        pthread_create(&feed->thread, NULL, feeder_main, feed) != 0) {
        cli_feed_stop(feed);
        return cli_fail(CLI_EXIT_USAGE, "ERR", "cannot start the record feed thread");
    }
    feed->thread_started = true;
    *out = feed;
    return CLI_EXIT_OK;
}

/* Hand the caller's batch back to the feed thread for its hook; failed: it
 * ends at a record that failed, so nothing after it will be judged (the
 * failure may have been found by the caller's prepare, after the feed
 * thread published more chunks). */
static void release_chunk(cli_feed *feed, bool failed) {
    assert(feed->holding);
    lock(&feed->lock);
    feed->drained++;
    feed->holding = false;
    feed->failed_drained = feed->failed_drained || failed;
    signal_one(&feed->can_fill);
    unlock(&feed->lock);
}

/* Wait for the next published chunk: 1, 0 at the end, -1 when the hook failed. */
static int take_chunk(cli_feed *feed, char *err, size_t err_size) {
    lock(&feed->lock);
    while (feed->drained == feed->filled && !feed->done && !feed->hook_failed) {
        wait_on(&feed->can_drain, &feed->lock);
    }
    int got = feed->hook_failed ? -1 : (feed->drained < feed->filled ? 1 : 0);
    if (got < 0) {
        snprintf(err, err_size, "%s", feed->hook_err);
    }
    feed->holding = got > 0;
    unlock(&feed->lock);
    return got;
}

int cli_feed_next(cli_feed *feed, cli_feed_batch *batch, char *err, size_t err_size) {
    assert(feed != NULL && batch != NULL && err != NULL);
    if (feed->holding) {
        const feed_chunk *held = &feed->chunks[feed->drained % FEED_CHUNKS];
        bool failed = held->failed;
        if (failed) {
            snprintf(err, err_size, "%s", held->err);
        }
        /* A failed chunk's records before the failure were judged: its
         * hook runs too, so cli_feed_finish sees every judged record. */
        release_chunk(feed, failed);
        if (failed) {
            return -1;
        }
    }
    int got = take_chunk(feed, err, err_size);
    if (got <= 0) {
        return got;
    }
    feed_chunk *chunk = &feed->chunks[feed->drained % FEED_CHUNKS];
    if (!chunk->prepared) {
        /* The feed thread was not far enough ahead to take this one. */
        prepare_chunk(&feed->options, chunk, feed->caller_words);
        feed->prepared_by_caller++;
    }
    if (chunk->count == 0) {
        assert(chunk->failed);
        snprintf(err, err_size, "%s", chunk->err);
        release_chunk(feed, true);   /* nothing to judge; the feed thread can end */
        return -1;
    }
    chunk->note_count = 0;
    batch->items = chunk->items;
    batch->count = chunk->count;
    batch->notes = chunk->notes;
    batch->note_count = &chunk->note_count;
    return 1;
}

int cli_feed_finish(cli_feed *feed, char *err, size_t err_size) {
    assert(feed != NULL && feed->thread_started && !feed->holding && err != NULL);
    /* The feed thread leaves once the hook has run on the last chunk. */
    int rc = pthread_join(feed->thread, NULL);
    assert(rc == 0);
    (void)rc;
    feed->joined = true;
    assert(feed->hook_failed || (feed->done && feed->hooked == feed->filled) ||
           (feed->failed_drained && feed->hooked == feed->drained));
    if (feed->hook_failed) {
        snprintf(err, err_size, "%s", feed->hook_err);
        return -1;
    }
    return 0;
}

void cli_feed_stop(cli_feed *feed) {
    if (feed == NULL) {
        return;
    }
    if (feed->thread_started && !feed->joined) {
        lock(&feed->lock);
        feed->stop = true;
        signal_one(&feed->can_fill);
        unlock(&feed->lock);
        int rc = pthread_join(feed->thread, NULL);
        assert(rc == 0);
        (void)rc;
    }
    pthread_cond_destroy(&feed->can_drain);
    pthread_cond_destroy(&feed->can_fill);
    pthread_mutex_destroy(&feed->lock);
    free(feed->chunks);
    free(feed);
}

/* quiet_mode: 0 a sentence, 1 none, 2 only when the code is not expected. */
static int feed_apply(berth_state *state, const cli_feed_item *item, int quiet_mode, berth_code expected,
                      berth_outcome *out, char *err, size_t err_size) {
    assert(state != NULL && item != NULL && out != NULL);
    if (item->rec.seq != berth_state_last_seq(state) + 1) {
        snprintf(err, err_size, "record %" PRIu64 " does not follow seq %" PRIu64, item->rec.seq,
                 berth_state_last_seq(state));
        return -1;
    }
    const berth_cmd *cmd = &item->cmd;
    uint64_t seq = item->rec.seq;
    /* Replay's checks, which apply asserts: a journal from another writer
     * may repeat a request id, and that is a finding, not a crash. */
    if (berth_replay_reqid_check(state, cmd, item->text, seq, err, err_size) != 0) {
        return -1;
    }
    bool current = item->rec.version == BERTH_RECORD_VERSION;   /* else its own wording, as replay */
    if (!current) berth_state_set_wording(state, berth_record_wording(item->rec.version));
    int rc = quiet_mode == 1   ? berth_state_apply_quiet(state, cmd, item->text, seq, out)
             : quiet_mode == 2 ? berth_state_apply_expect(state, cmd, item->text, seq, expected, out)
                               : berth_state_apply(state, cmd, item->text, seq, out);
    if (!current) berth_state_set_wording(state, BERTH_WORDING_CURRENT);
    if (rc != 0) {
        snprintf(err, err_size, "out of memory applying record %" PRIu64, item->rec.seq);
        return -1;
    }
    assert(berth_state_last_seq(state) == item->rec.seq);
    return 0;
}

int cli_feed_apply(berth_state *state, const cli_feed_item *item, bool quiet, berth_outcome *out,
                   char *err, size_t err_size) {
    return feed_apply(state, item, quiet ? 1 : 0, BERTH_OK, out, err, err_size);
}

int cli_feed_apply_expect(berth_state *state, const cli_feed_item *item, berth_outcome *out,
                          char *err, size_t err_size) {
    /* A recorded code this build does not know can never be matched: say it all. */
    if (item->rec.code >= BERTH_CODE_COUNT) {
        return feed_apply(state, item, 0, BERTH_OK, out, err, err_size);
    }
    return feed_apply(state, item, 2, (berth_code)item->rec.code, out, err, err_size);
}

uint64_t cli_feed_thread_cpu_ns(const cli_feed *feed) {
    assert(feed != NULL && feed->joined);
    return feed->cpu_ns;
}

uint64_t cli_feed_batches_prepared_by_feed(const cli_feed *feed) {
    assert(feed != NULL && feed->joined);
    return feed->prepared_by_feed;
}

uint64_t cli_feed_batches_prepared_by_caller(const cli_feed *feed) {
    assert(feed != NULL && feed->joined);
    return feed->prepared_by_caller;
}

uint64_t cli_feed_own_cpu_ns(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) {
        return 0;   /* only ever printed as a figure: 0 reads as "unknown" */
    }
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
