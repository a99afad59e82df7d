/* cli_feed.h — the berth tool's own replays (whatif --rejudge, timeline):
 * records read, decoded and parsed on a second thread, handed to the
 * caller's thread a batch at a time, and each finished batch handed back to
 * the second thread for whatever the caller wants done after judging
 * (rejudge prints its differences there), in seq order.
 *
 * Why: issue 4 asks rejudge to run at the engine's replay speed. The
 * engine's replay keeps the applying thread doing little but apply and
 * shares decode and parse between its two threads by how far ahead the
 * reader is; this gives the tool's replays the same shape, with the
 * per-record work after apply on the other core too. Private to
 * tools/cli_*.c. */
#ifndef BERTH_CLI_FEED_H
#define BERTH_CLI_FEED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "journal.h"
#include "state.h"

/* One record and the command it is judged by. */
typedef struct cli_feed_item {
    berth_record rec;          /* points into the read view: valid while the store is open */
    berth_cmd cmd;             /* parsed from text, REQID re-attached */
    berth_str text;            /* the canonical text judged: rec.command or the substitute */
    bool substituted;
    /* The feed's own: the record as read, before decode and parse (which
     * either thread may do; see cli_feed.c). */
    const uint8_t *raw;
    size_t raw_len;
    uint64_t raw_seq;          /* the key it was stored under */
} cli_feed_item;

/* What the caller's thread has to say about one item, for the drain hook:
 * rejudge notes only the records whose code differs, so the judging thread
 * writes nothing for the others. */
typedef struct cli_feed_note {
    uint32_t index;                         /* the item it is about, in the batch */
    berth_code code;                        /* the outcome recomputed now */
    uint32_t sentence_len;
    char sentence[BERTH_SENTENCE_LEN_MAX];  /* NUL-terminated */
} cli_feed_note;

/* Runs on the feed's thread with every batch the caller has finished, in
 * seq order, before the batch's memory is reused; notes are the ones the
 * caller made, in item order. Returns 0, or -1 with a sentence in err
 * (starting with a code word): the feed then stops and cli_feed_next /
 * cli_feed_finish report err. */
typedef int (*cli_feed_drain_fn)(void *ctx, const cli_feed_item *items, uint32_t count,
                                 const cli_feed_note *notes, uint32_t note_count,
                                 char *err, size_t err_size);

typedef struct cli_feed_options {
    uint64_t from;                    /* first seq, >= 1 */
    uint64_t to;                      /* last seq, inclusive */
    berth_cmd_kind substitute_kind;   /* BERTH_CMD_NONE: judge every record as written */
    berth_str substitute_text;        /* records of substitute_kind are judged by this instead */
    cli_feed_drain_fn drain;          /* NULL: nothing runs after a batch */
    void *drain_ctx;
} cli_feed_options;

/* A run of consecutive items for the caller to judge in order. The caller
 * may add notes (at most one per item, in item order) for its drain hook. */
typedef struct cli_feed_batch {
    const cli_feed_item *items;
    uint32_t count;                   /* >= 1 */
    cli_feed_note *notes;             /* room for count notes */
    uint32_t *note_count;             /* notes made so far: 0 when the batch is handed out */
} cli_feed_batch;

typedef struct cli_feed cli_feed;

/* Start feeding records [from, to] of reader. While the feed runs the read
 * view is the feed thread's alone. Returns CLI_EXIT_*. */
int cli_feed_start(cli_feed **out, berth_journal_reader *reader, const cli_feed_options *options);
/* 1 with the next batch (valid until the next call), 0 after the last one,
 * -1 with err (a record that cannot be read or parsed, or the hook's error).
 * Decodes and parses on the caller's thread the records the feed thread
 * left undone (it leaves them when it is not far ahead); the batch ends
 * before a record that fails, and the next call reports it. */
int cli_feed_next(cli_feed *feed, cli_feed_batch *batch, char *err, size_t err_size);
/* After cli_feed_next returned 0, or -1 for a record that cannot be read or
 * parsed: wait until the drain hook has seen every batch handed out (so
 * what it printed does not depend on the threads' timing). 0, or -1 with
 * the hook's err. */
int cli_feed_finish(cli_feed *feed, char *err, size_t err_size);
/* Stop the feed thread (at once if it is still reading) and free the feed. */
void cli_feed_stop(cli_feed *feed);
/* For --stats on stderr only: the CPU time the feed thread used, valid after
 * cli_feed_finish, and the calling thread's own so far. On a quiet machine
 * the larger of the two threads' bounds the wall time. */
uint64_t cli_feed_thread_cpu_ns(const cli_feed *feed);
uint64_t cli_feed_own_cpu_ns(void);
/* For --stats: batches whose records the feed thread decoded and parsed,
 * and the ones the caller's thread did, valid after cli_feed_finish. */
uint64_t cli_feed_batches_prepared_by_feed(const cli_feed *feed);
uint64_t cli_feed_batches_prepared_by_caller(const cli_feed *feed);

/* Apply an item at its seq (must be last_seq + 1). quiet: the sentence is
 * not built (berth_state_apply_quiet); code and touched names are the same.
 * 0, or -1 with err. */
int cli_feed_apply(berth_state *state, const cli_feed_item *item, bool quiet, berth_outcome *out,
                   char *err, size_t err_size);
/* The same, with a sentence only when the outcome's code differs from the
 * record's (rejudge: matching records need none). */
int cli_feed_apply_expect(berth_state *state, const cli_feed_item *item, berth_outcome *out,
                          char *err, size_t err_size);

#endif
