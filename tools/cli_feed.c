/* cli_feed.c — records, decoded and parsed on a second thread, for the berth
 * tool's own replays (whatif --rejudge, timeline).
 *
 * berth_replay_to reaches its speed by decoding and parsing on one core while
 * applying on the other. The tool's replays that must see every outcome
 * (rejudge compares each one with the recorded code; timeline draws them)
 * cannot use it as a black box, so this gives them the same shape: a feeder
 * thread fills chunks of (record, parsed command) from one read view, the
 * caller applies them in order on its own thread. Issue 4 asks rejudge to run
 * at the engine's replay speed; this is how.
 *
 * Owns: the feeder thread, the chunk ring and its lock. While a feed runs,
 * the read view belongs to the feeder: the caller must not use it. */
#include <assert.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define FEED_CHUNKS 4u                 /* chunks in flight: the feeder runs this far ahead */
#define FEED_CHUNK_ITEMS 256u          /* records per chunk: amortises the lock */

typedef struct feed_chunk {
    cli_feed_item items[FEED_CHUNK_ITEMS];
    uint32_t count;
    bool failed;                       /* the feeder stopped at this chunk's end */
    char err[CLI_ERR_LEN_MAX];
} feed_chunk;

struct cli_feed {
    berth_journal_reader *reader;
    cli_feed_options options;
    feed_chunk *chunks;                /* FEED_CHUNKS, owned */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t lock;
    pthread_cond_t can_fill;
    pthread_cond_t can_drain;
    uint64_t filled;                   /* chunks published by the feeder */
    uint64_t drained;                  /* chunks handed back by the caller */
    bool done;                         /* the feeder published its last chunk */
    bool stop;                         /* the caller gave up: the feeder should too */
    uint32_t next_item;                /* caller's position in chunks[drained % FEED_CHUNKS] */
    bool holding;                      /* the caller is reading a chunk */
    berth_str words[BERTH_ARGS_MAX];   /* feeder's parse scratch */
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

static bool is_substituted(const cli_feed *feed, berth_str command) {
    const cli_feed_options *o = &feed->options;
    if (o->substitute_kind == BERTH_CMD_NONE) {
        return false;
    }
    const char *sp = memchr(command.ptr, ' ', command.len);
    size_t len = sp ? (size_t)(sp - command.ptr) : command.len;
    return berth_cmd_kind_lookup(berth_str_make(command.ptr, len)) == o->substitute_kind;
}

/* Decode one record and parse the command it will be judged by. */
static bool fill_item(cli_feed *feed, berth_journal_cursor *cursor, uint64_t seq,
                      cli_feed_item *item, char *err, size_t err_size) {
    berth_jerr jerr = berth_journal_cursor_next(cursor, &item->rec, NULL, NULL);
    if (jerr != BERTH_J_OK || item->rec.seq != seq) {
        snprintf(err, err_size, "record %" PRIu64 " cannot be read (%s): run `berth journal verify`",
                 seq, jerr != BERTH_J_OK ? berth_jerr_name(jerr) : "out of order");
        return false;
    }
    item->substituted = is_substituted(feed, item->rec.command);
    item->text = item->substituted ? feed->options.substitute_text : item->rec.command;
    char perr[BERTH_ERR_LEN_MAX];
    if (berth_cmd_parse_text(&item->cmd, item->text.ptr, item->text.len, feed->words,
                             BERTH_ARGS_MAX, perr, sizeof perr) != 0) {
        snprintf(err, err_size, "record %" PRIu64 "'s command does not parse: %s", seq, perr);
        return false;
    }
    /* The journal keeps the REQID beside the canonical text: re-attach it,
     * as replay does, so the request-id window is rebuilt too. */
    item->cmd.reqid = item->rec.reqid;
    return true;
}

/* Wait for a free chunk; false when the caller stopped the feed. */
static bool wait_free_chunk(cli_feed *feed) {
    lock(&feed->lock);
    while (!feed->stop && feed->filled - feed->drained == FEED_CHUNKS) {
        pthread_cond_wait(&feed->can_fill, &feed->lock);
    }
    bool go = !feed->stop;
    unlock(&feed->lock);
    return go;
}

static void publish(cli_feed *feed, bool last) {
    lock(&feed->lock);
    feed->filled++;
    feed->done = last;
    pthread_cond_signal(&feed->can_drain);
    unlock(&feed->lock);
}

static void *feeder_main(void *arg) {
    cli_feed *feed = arg;
    const cli_feed_options *o = &feed->options;
    berth_journal_cursor *cursor = NULL;
    berth_jerr jerr = berth_journal_cursor_open(feed->reader, o->from, &cursor);
    uint64_t seq = o->from;
    bool last = false;
    while (!last && wait_free_chunk(feed)) {
        feed_chunk *chunk = &feed->chunks[feed->filled % FEED_CHUNKS];
        chunk->count = 0;
        chunk->failed = false;
        if (jerr != BERTH_J_OK) {
            chunk->failed = true;
            snprintf(chunk->err, sizeof chunk->err, "cannot read from seq %" PRIu64 " (%s)", seq,
                     berth_jerr_name(jerr));
        }
        while (!chunk->failed && chunk->count < FEED_CHUNK_ITEMS && seq <= o->to) {
            chunk->failed = !fill_item(feed, cursor, seq, &chunk->items[chunk->count], chunk->err,
                                       sizeof chunk->err);
            chunk->count += chunk->failed ? 0 : 1;
            seq += chunk->failed ? 0 : 1;
        }
        last = chunk->failed || seq > o->to;
        publish(feed, last);
    }
    if (cursor != NULL) {
        berth_journal_cursor_close(cursor);
    }
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
    pthread_mutex_init(&feed->lock, NULL);
    pthread_cond_init(&feed->can_fill, NULL);
    pthread_cond_init(&feed->can_drain, NULL);
    if (pthread_create(&feed->thread, NULL, feeder_main, feed) != 0) {
        cli_feed_stop(feed);
        return cli_fail(CLI_EXIT_USAGE, "ERR", "cannot start the record feed thread");
    }
    feed->thread_started = true;
    *out = feed;
    return CLI_EXIT_OK;
}

/* Hand the chunk being read back to the feeder. */
static void release_chunk(cli_feed *feed) {
    assert(feed->holding);
    lock(&feed->lock);
    feed->drained++;
    feed->holding = false;
    feed->next_item = 0;
    pthread_cond_signal(&feed->can_fill);
    unlock(&feed->lock);
}

/* Wait for the next published chunk; false at the end of the feed. */
static bool take_chunk(cli_feed *feed) {
    lock(&feed->lock);
    while (feed->drained == feed->filled && !feed->done) {
        pthread_cond_wait(&feed->can_drain, &feed->lock);
    }
    bool got = feed->drained < feed->filled;
    feed->holding = got;
    unlock(&feed->lock);
    return got;
}

int cli_feed_next(cli_feed *feed, const cli_feed_item **item, char *err, size_t err_size) {
    assert(feed != NULL && item != NULL && err != NULL);
    for (;;) {
        if (!feed->holding && !take_chunk(feed)) {
            return 0;
        }
        const feed_chunk *chunk = &feed->chunks[feed->drained % FEED_CHUNKS];
        if (feed->next_item < chunk->count) {
            *item = &chunk->items[feed->next_item++];
            return 1;
        }
        if (chunk->failed) {
            snprintf(err, err_size, "%s", chunk->err);
            return -1;
        }
        release_chunk(feed);
    }
}

void cli_feed_stop(cli_feed *feed) {
    if (feed == NULL) {
        return;
    }
    if (feed->thread_started) {
        lock(&feed->lock);
        feed->stop = true;
        pthread_cond_signal(&feed->can_fill);
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

int cli_feed_apply(berth_state *state, const cli_feed_item *item, berth_outcome *out,
                   char *err, size_t err_size) {
    assert(state != NULL && item != NULL && out != NULL);
    if (item->rec.seq != berth_state_last_seq(state) + 1) {
        snprintf(err, err_size, "record %" PRIu64 " does not follow seq %" PRIu64, item->rec.seq,
                 berth_state_last_seq(state));
        return -1;
    }
    if (berth_state_apply(state, &item->cmd, item->text, item->rec.seq, out) != 0) {
        snprintf(err, err_size, "out of memory applying record %" PRIu64, item->rec.seq);
        return -1;
    }
    assert(berth_state_last_seq(state) == item->rec.seq);
    return 0;
}
