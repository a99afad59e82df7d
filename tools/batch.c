/* batch.c — group commit: stage writes, commit once, then release replies.
 *
 * Owns the open batch: one entry per mutating command read since the last
 * commit, holding the client to answer and the engine's staged result. No
 * entry's outcome leaves the process before berth_engine_commit returns OK,
 * so no client ever sees an effect that is not durable; when a commit fails,
 * every entry that depended on it is answered -FULL or -IOERR and the engine
 * has already rebuilt its state from the journal. Also owns the commit
 * latency histogram (fixed buckets, so percentiles cost no allocation). */
#include "server.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define LATENCY_SUB_BUCKETS 4       /* per power of two: <= 19% error per bucket */

int batch_init(server *s) {
    s->batch = calloc(SERVER_BATCH_ENTRIES_MAX, sizeof *s->batch);
    s->batch_count = 0;
    return s->batch == NULL ? -1 : 0;
}

void batch_free(server *s) {
    assert(s->batch_count == 0);
    free(s->batch);
    s->batch = NULL;
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

static void batch_reply_commit_error(reply_buf *rb, berth_jerr err) {
    if (err == BERTH_J_FULL) {
        reply_error(rb, "FULL", "the journal is full (disk or map at its maximum): the command was "
                                "not applied; retry once space is freed");
    } else if (err == BERTH_J_READONLY) {
        reply_error(rb, "READONLY", "this berthd lost the leadership before the command was "
                                    "committed: it was not applied; retry it on the leader");
    } else if (err == BERTH_J_CORRUPT) {
        reply_error(rb, "IOERR", "the journal write failed and the state could not be reloaded: the "
                                 "command was not applied and berthd is stopping");
    } else {
        reply_error(rb, "IOERR", "the journal write failed (%s): the command was not applied; "
                                 "retry it",
                    berth_jerr_name(err));
    }
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

/* head: the committed head after this flush. A RETRY or CONFLICT that points
 * past it referred to a record of the batch that just failed. */
static void batch_reply(reply_buf *rb, const berth_submit_result *r, berth_jerr err, uint64_t head) {
    switch (r->kind) {
    case BERTH_SUBMIT_STAGED:
        if (err != BERTH_J_OK) {
            batch_reply_commit_error(rb, err);
        } else {
            batch_reply_outcome(rb, r);
        }
        return;
    case BERTH_SUBMIT_RETRY:
        if (r->seq > head) {
            batch_reply_commit_error(rb, err == BERTH_J_OK ? BERTH_J_IO : err);
        } else {
            batch_reply_outcome(rb, r);
        }
        return;
    case BERTH_SUBMIT_CONFLICT:
        if (r->seq > head) {
            batch_reply_commit_error(rb, err == BERTH_J_OK ? BERTH_J_IO : err);
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

/* ---- staging and commit ------------------------------------------------ */

void batch_submit(client *c, size_t argc, const berth_str *argv) {
    server *s = c->server;
    assert(argc >= 1);
    if (s->batch_count == SERVER_BATCH_ENTRIES_MAX) {
        batch_flush(s);
    }
    batch_entry *e = &s->batch[s->batch_count];
    berth_str actor = berth_str_make(c->actor, c->actor_len);
    berth_engine_submit(s->engine, argc, argv, actor, &e->result);
    if (e->result.kind == BERTH_SUBMIT_BATCH_FULL) {
        batch_flush(s);
        e = &s->batch[0];
        berth_engine_submit(s->engine, argc, argv, actor, &e->result);
        assert(e->result.kind != BERTH_SUBMIT_BATCH_FULL);
    }
    if (e->result.kind == BERTH_SUBMIT_SYNTAX && c->batch_pending == 0) {
        /* Nothing of this client is held: the error can go out at once. */
        batch_reply(&c->out, &e->result, BERTH_J_OK, berth_engine_head_seq(s->engine));
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

static berth_jerr batch_commit(server *s) {
    if (berth_engine_staged(s->engine) == 0) {
        return BERTH_J_OK;
    }
    uint64_t t0 = now_ns_mono();
    berth_jerr err = berth_engine_commit(s->engine, now_ms_wall());
    uint64_t us = (now_ns_mono() - t0) / 1000u;
    s->stats.commits++;
    s->stats.latency_us[latency_bucket(us)]++;
    if (err != BERTH_J_OK) {
        s->stats.commit_failures++;
        server_log("commit of %u commands failed: %s; they were answered with an error and the "
                   "state reloaded from the journal",
                   s->batch_count, berth_jerr_name(err));
    }
    if (err == BERTH_J_CORRUPT) {
        server_log("the engine could not reload the journal after a failed commit: stopping");
        s->fatal = true;
        ev_break(s->loop, EVBREAK_ALL);
    }
    return err;
}

/* Group commit's one timing heuristic, which never changes an outcome:
 * clients whose replies the last commit released send their next commands
 * within microseconds of each other, but the loop wakes on the first to
 * arrive. Committing that first handful alone would split the cohort in two
 * batches and pay two fsyncs for it. So when the batch is smaller than the
 * last one, sleep commit_gather_us once (far below a commit's fsync) and
 * poll again before committing. A lone writer never waits: its batch is
 * never smaller than its last. */
bool batch_gather(server *s) {
    if (s->batch_count == 0 || s->gathered || s->config.commit_gather_us == 0 ||
        s->batch_count >= s->last_batch_count || s->resume.next != &s->resume) {
        return false;
    }
    s->gathered = true;
    ev_sleep((ev_tstamp)s->config.commit_gather_us / 1e6);
    return true;
}

void batch_flush(server *s) {
    if (s->batch_count == 0) {
        return;
    }
    s->last_batch_count = s->batch_count;
    s->gathered = false;
    uint64_t before = berth_engine_head_seq(s->engine);
    berth_jerr err = batch_commit(s);
    uint64_t after = berth_engine_head_seq(s->engine);
    assert(err == BERTH_J_OK || after == before);
    uint32_t count = s->batch_count;
    s->batch_count = 0;
    for (uint32_t i = 0; i < count; i++) {
        batch_entry *e = &s->batch[i];
        client *c = e->client;
        assert(c != NULL && c->batch_pending > 0);
        c->batch_pending--;
        if (!c->closed) {
            batch_reply(&c->out, &e->result, err, after);
            client_output_added(c);
        }
        e->client = NULL;
        client_release(c);
    }
    if (after > before) {
        s->stats.records_committed += after - before;
        watch_committed(s, before + 1, after);
    }
}
