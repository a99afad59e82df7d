/* cli_feed.c — records, decoded and parsed on a second thread, for the berth
 * tool's own replays (whatif --rejudge, timeline); see cli_feed.h.
 *
 * berth_replay_to reaches its speed by reading, decoding and parsing on one
 * core while applying on the other. The tool's replays that must see every
 * outcome (rejudge compares each one with the recorded code; timeline draws
 * them) cannot use it as a black box, so this gives them the same shape. A
 * chunk goes round a ring: the feed thread fills it with (record, parsed
 * command), the caller judges the whole chunk in order and notes what its
 * hook needs (rejudge: only the records that differ), and the feed thread
 * runs the drain hook on it (rejudge's printing and bookkeeping) before
 * filling it again. So the caller's thread does next to nothing
 * per record but apply, as in the engine's replay, and takes the lock once
 * per chunk, not per record. Hooks run in chunk order, so whatever they
 * print comes out in seq order.
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

typedef struct feed_chunk {
    cli_feed_item items[FEED_CHUNK_ITEMS];
    cli_feed_note notes[FEED_CHUNK_ITEMS];
    uint32_t count;
    uint32_t note_count;               /* notes the caller made */
    bool failed;                       /* the feed thread stopped reading at this chunk's end */
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
    bool hook_failed;                  /* the drain hook said no: hook_err says why */
    char hook_err[CLI_ERR_LEN_MAX];
    /* The feed thread's own: */
    uint64_t hooked;                   /* drained chunks the hook has run on */
    bool last;                         /* the last chunk is published */
    uint64_t cpu_ns;                   /* the thread's CPU time, set as it leaves */
    berth_str words[BERTH_ARGS_MAX];   /* parse scratch */
    /* The caller's own: */
    bool holding;                      /* chunks[drained % FEED_CHUNKS] is the caller's batch */
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
static bool parse_item(cli_feed *feed, cli_feed_item *item, berth_str text, char *err,
                       size_t err_size) {
    char perr[BERTH_ERR_LEN_MAX];
    if (berth_cmd_parse_text(&item->cmd, text.ptr, text.len, feed->words, BERTH_ARGS_MAX, perr,
                             sizeof perr) != 0) {
        snprintf(err, err_size, "record %" PRIu64 "'s command does not parse: %s", item->rec.seq, perr);
        return false;
    }
    item->text = text;
    return true;
}

/* Decode one record and parse the command it will be judged by. */
static bool fill_item(cli_feed *feed, berth_journal_cursor *cursor, uint64_t seq,
                      cli_feed_item *item, char *err, size_t err_size) {
    const cli_feed_options *o = &feed->options;
    berth_jerr jerr = berth_journal_cursor_next(cursor, &item->rec, NULL, NULL);
    if (jerr != BERTH_J_OK || item->rec.seq != seq) {
        snprintf(err, err_size, "record %" PRIu64 " cannot be read (%s): run `berth journal verify`",
                 seq, jerr != BERTH_J_OK ? berth_jerr_name(jerr) : "out of order");
        return false;
    }
    if (!parse_item(feed, item, item->rec.command, err, err_size)) {
        return false;
    }
    /* Substitutes are rare (rejudge's POLICY.SET): parse every record as
     * written and only the few of substitute_kind a second time. */
    item->substituted = o->substitute_kind != BERTH_CMD_NONE && item->cmd.kind == o->substitute_kind;
    if (item->substituted && !parse_item(feed, item, o->substitute_text, err, err_size)) {
        return false;
    }
    /* The journal keeps the REQID beside the canonical text: re-attach it,
     * as replay does, so the request-id window is rebuilt too. */
    item->cmd.reqid = item->rec.reqid;
    return true;
}

/* Fill the next free chunk from *seq on and publish it. */
static void fill_and_publish(cli_feed *feed, berth_journal_cursor *cursor, berth_jerr open_err,
                             uint64_t *seq) {
    const cli_feed_options *o = &feed->options;
    assert(!feed->last && feed->filled - feed->hooked < FEED_CHUNKS);
    feed_chunk *chunk = &feed->chunks[feed->filled % FEED_CHUNKS];
    chunk->count = 0;
    chunk->failed = open_err != BERTH_J_OK;
    if (chunk->failed) {
        snprintf(chunk->err, sizeof chunk->err, "cannot read from seq %" PRIu64 " (%s)", *seq,
                 berth_jerr_name(open_err));
    }
    while (!chunk->failed && chunk->count < FEED_CHUNK_ITEMS && *seq <= o->to) {
        chunk->failed = !fill_item(feed, cursor, *seq, &chunk->items[chunk->count], chunk->err,
                                   sizeof chunk->err);
        chunk->count += chunk->failed ? 0 : 1;
        *seq += chunk->failed ? 0 : 1;
    }
    assert(chunk->count > 0 || chunk->failed);
    feed->last = chunk->failed || *seq > o->to;
    lock(&feed->lock);
    feed->filled++;
    feed->done = feed->last;
    signal_one(&feed->can_drain);
    unlock(&feed->lock);
}

/* Wait until there is work for the feed thread: a drained chunk to hook, a
 * free chunk to fill, or the end. Returns the drained count, or false in
 * *go when the caller stopped the feed. */
static uint64_t wait_work(cli_feed *feed, bool *go) {
    lock(&feed->lock);
    for (;;) {
        bool hook_work = feed->hooked < feed->drained;
        bool fill_work = !feed->last && feed->filled - feed->hooked < FEED_CHUNKS;
        bool all_hooked = feed->last && feed->hooked == feed->filled;
        if (feed->stop || hook_work || fill_work || all_hooked) {
            break;
        }
        wait_on(&feed->can_fill, &feed->lock);
    }
    *go = !feed->stop;
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
        if (o->drain == NULL || o->drain(o->drain_ctx, chunk->items, chunk->count, chunk->notes,
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
        uint64_t drained = wait_work(feed, &go);
        if (!go || !run_hooks(feed, drained) || (feed->last && feed->hooked == feed->filled)) {
            break;
        }
        if (!feed->last && feed->filled - feed->hooked < FEED_CHUNKS) {
            fill_and_publish(feed, cursor, open_err, &seq);
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

/* Hand the caller's batch back to the feed thread for its hook. */
static void release_chunk(cli_feed *feed) {
    assert(feed->holding);
    lock(&feed->lock);
    feed->drained++;
    feed->holding = false;
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
        if (held->failed) {
            snprintf(err, err_size, "%s", held->err);
            return -1;
        }
        release_chunk(feed);
    }
    int got = take_chunk(feed, err, err_size);
    if (got <= 0) {
        return got;
    }
    feed_chunk *chunk = &feed->chunks[feed->drained % FEED_CHUNKS];
    if (chunk->count == 0) {
        assert(chunk->failed);
        snprintf(err, err_size, "%s", chunk->err);
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
    assert(feed->hook_failed || (feed->done && feed->hooked == feed->filled));
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
    int rc = quiet_mode == 1   ? berth_state_apply_quiet(state, cmd, item->text, seq, out)
             : quiet_mode == 2 ? berth_state_apply_expect(state, cmd, item->text, seq, expected, out)
                               : berth_state_apply(state, cmd, item->text, seq, out);
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

uint64_t cli_feed_own_cpu_ns(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) {
        return 0;   /* only ever printed as a figure: 0 reads as "unknown" */
    }
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
