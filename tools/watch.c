/* watch.c — WATCH: a controller's informer over the journal.
 *
 * Owns the watcher list and the two phases of a watch. Catch-up reads the
 * journal in chunks of SERVER_WATCH_CHUNK_RECORDS on a fresh read view, and
 * only while the client's output buffer is below a quarter of its limit, so
 * a client catching up on millions of records costs bounded memory. Once
 * caught up the watcher is live: every commit's records are encoded once per
 * protocol and copied to each live watcher. A commit whose frames would take
 * a live watcher's buffer past --max-output-bytes (one group commit can hold
 * more than the whole limit, so a reader keeping up can meet it) sends that
 * watcher back to catch-up from the first record it lacks: the records are
 * durable, so the journal serves them chunk by chunk as its buffer drains,
 * in order, none twice. Memory stays bounded either way; a watcher whose
 * output does not drain is disconnected by --output-timeout (networking.c),
 * with a log line, whether live or catching up. */
#include "server.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

static const char *watch_code_name(uint32_t code) {
    return code < BERTH_CODE_COUNT ? berth_code_name((berth_code)code) : "UNKNOWN";
}

void reply_record(reply_buf *rb, const berth_record *rec) {
    char hex[2 * BERTH_HASH_LEN + 1];
    char prev_hex[2 * BERTH_HASH_LEN + 1];
    berth_hex(rec->hash, BERTH_HASH_LEN, hex);
    berth_hex(rec->prev_hash, BERTH_HASH_LEN, prev_hex);
    /* prev_hash and version last, after the fields clients read by place
     * before session 17: a follower checks the chain link by link with
     * them, and knows which wording a sentence is in. */
    reply_map(rb, 10);
    reply_bulk_lit(rb, "seq");
    reply_uint(rb, rec->seq);
    reply_bulk_lit(rb, "time");
    reply_uint(rb, rec->time_ms);
    reply_bulk_lit(rb, "actor");
    reply_bulk_str(rb, rec->actor);
    reply_bulk_lit(rb, "reqid");
    reply_bulk_str(rb, rec->reqid);
    reply_bulk_lit(rb, "command");
    reply_bulk_str(rb, rec->command);
    reply_bulk_lit(rb, "code");
    reply_bulk_cstr(rb, watch_code_name(rec->code));
    reply_bulk_lit(rb, "sentence");
    reply_bulk_str(rb, rec->sentence);
    reply_bulk_lit(rb, "hash");
    reply_bulk(rb, hex, 2 * BERTH_HASH_LEN);
    reply_bulk_lit(rb, "prev_hash");
    reply_bulk(rb, prev_hex, 2 * BERTH_HASH_LEN);
    reply_bulk_lit(rb, "version");
    reply_uint(rb, rec->version);
}

/* One record as a push frame: ["message", "watch", <record>]. */
static void watch_frame(reply_buf *rb, const berth_record *rec) {
    reply_push(rb, 3);
    reply_bulk(rb, "message", 7);
    reply_bulk(rb, "watch", 5);
    reply_record(rb, rec);
}

void watch_start(client *c, uint64_t from_seq) {
    server *s = c->server;
    assert(!c->watching && !c->closed);
    uint64_t head = batch_durable_head(s);
    c->watching = true;
    c->watch_live = false;
    c->watch_next_seq = from_seq == 0 ? head + 1 : from_seq;
    dlink_push(&s->watchers, &c->link_watch);
    s->watcher_count++;
    reply_push(&c->out, 3);
    reply_bulk(&c->out, "watch", 5);
    reply_uint(&c->out, c->watch_next_seq);
    reply_uint(&c->out, head);
    client_output_added(c);
}

void watch_stop(client *c) {
    server *s = c->server;
    assert(c->watching && s->watcher_count > 0);
    dlink_remove(&c->link_watch);
    s->watcher_count--;
    c->watching = false;
    c->watch_live = false;
}

/* Drop a watcher at its next write (never inside someone else's callback). */
static void watch_drop(client *c, const char *why) {
    if (c->close_reason == NULL) {
        c->server->stats.watch_disconnects++;
        c->close_reason = why;
        client_output_added(c);
    }
}

/* Append up to one chunk of records from c->watch_next_seq. */
static berth_jerr watch_catch_up(client *c, berth_journal_reader *reader, uint64_t head) {
    berth_journal_cursor *cursor = NULL;
    berth_jerr err = berth_journal_cursor_open(reader, c->watch_next_seq, &cursor);
    if (err != BERTH_J_OK) {
        return err;
    }
    for (uint32_t i = 0; i < SERVER_WATCH_CHUNK_RECORDS && c->watch_next_seq <= head; i++) {
        berth_record rec;
        err = berth_journal_cursor_next(cursor, &rec, NULL, NULL);
        if (err != BERTH_J_OK) {
            break;
        }
        assert(rec.seq == c->watch_next_seq);
        watch_frame(&c->out, &rec);
        c->watch_next_seq = rec.seq + 1;
    }
    berth_journal_cursor_close(cursor);
    return err == BERTH_J_NOTFOUND ? BERTH_J_OK : err;
}

/* A watcher caught up with LMDB while the records after it wait in the
 * commit log: ask for the checkpoint that moves them. When none can run
 * (the disk or the map full: batch.c, stuck) it waits, connected, and
 * resumes by itself once one succeeds, as JOURNAL.RANGE's -FULL says to
 * retry then; its header named the durable head, so the client can tell it
 * is behind. The wait is logged once a seq, so the operator sees it. */
static void watch_log_behind(server *s, client *c, uint64_t durable) {
    batch_want_checkpoint(s);
    berth_jerr stuck = BERTH_J_OK;
    if (!batch_writes_stuck(s, &stuck) || c->watch_wait_logged == c->watch_next_seq) {
        return;
    }
    c->watch_wait_logged = c->watch_next_seq;
    server_log("WATCH client id=%llu waits at seq %llu: records to %llu wait in the commit log, which the "
               "journal cannot take now (%s); it resumes once a checkpoint succeeds",
               (unsigned long long)c->id, (unsigned long long)c->watch_next_seq, (unsigned long long)durable,
               berth_jerr_name(stuck));
}

void watch_pump(server *s) {
    if (s->watcher_count == 0 || s->watch_reader_failed) {
        return;
    }
    /* Catch-up reads the LMDB journal, which with the commit log trails the
     * durable head until a checkpoint (batch.c): a watcher that caught up
     * with LMDB but not with the durable head asks for one. */
    uint64_t durable = batch_durable_head(s);
    uint64_t head = batch_journal_head(s);
    size_t low_water = (size_t)(s->config.max_output_bytes / 4);
    berth_journal_reader *reader = NULL;
    for (dlink *l = s->watchers.next; l != &s->watchers; l = l->next) {
        client *c = DLINK_OWNER(l, client, link_watch);
        if (c->close_reason != NULL || c->watch_next_seq > head) {
            c->watch_live = c->watch_next_seq == durable + 1;
            if (c->close_reason == NULL && c->watch_next_seq <= durable) {
                watch_log_behind(s, c, durable);
            }
            continue;
        }
        while (c->watch_next_seq <= head && reply_pending(&c->out) < low_water) {
            berth_jerr open_err = reader == NULL ? berth_journal_reader_open(s->journal, &reader)
                                                 : BERTH_J_OK;
            if (open_err != BERTH_J_OK) {
                /* (LMDB's reader table full, say.) The watchers wait for the
                 * next tick: retrying at once would spin the loop, which
                 * watch_ready keeps from blocking while they are behind. */
                server_log("WATCH catch-up: cannot open a journal reader (%s); retrying at the"
                           " next tick", berth_jerr_name(open_err));
                s->watch_reader_failed = true;
                return;
            }
            berth_jerr err = watch_catch_up(c, reader, head);
            if (err != BERTH_J_OK) {
                server_log("WATCH client id=%llu: reading seq %llu failed: %s",
                           (unsigned long long)c->id, (unsigned long long)c->watch_next_seq,
                           berth_jerr_name(err));
                watch_drop(c, "WATCH catch-up could not read the journal");
                break;
            }
        }
        c->watch_live = c->watch_next_seq == durable + 1;
        if (c->watch_next_seq <= durable && c->watch_next_seq > head) {
            watch_log_behind(s, c, durable);
        }
        client_output_added(c);
    }
    if (reader != NULL) {
        berth_journal_reader_close(reader);
    }
}

/* true when watch_pump has work it can do now: a watcher behind the head
 * with room in its buffer. The writes after a pump can empty a buffer into
 * the kernel at once, and then no write readiness would wake the loop for
 * the next chunk: the loop must not block while this holds. */
bool watch_ready(server *s) {
    if (s->watcher_count == 0 || s->watch_reader_failed) {
        return false;
    }
    uint64_t head = batch_journal_head(s);
    size_t low_water = (size_t)(s->config.max_output_bytes / 4);
    for (dlink *l = s->watchers.next; l != &s->watchers; l = l->next) {
        const client *c = DLINK_OWNER(l, client, link_watch);
        if (c->close_reason == NULL && c->watch_next_seq <= head &&
            reply_pending(&c->out) < low_water) {
            return true;
        }
    }
    return false;
}

/* Encode records first..last once per protocol: from the committer's slot
 * when the commit log holds them and LMDB does not yet (batch.c), else from
 * the journal. */
static berth_jerr watch_encode(server *s, uint64_t first, uint64_t last) {
    reply_consumed(&s->watch_resp2, reply_pending(&s->watch_resp2));
    reply_consumed(&s->watch_resp3, reply_pending(&s->watch_resp3));
    const berth_record *slot = batch_slot_records(s, first, last);
    if (slot != NULL) {
        for (uint64_t seq = first; seq <= last; seq++) {
            const berth_record *rec = &slot[seq - first];
            assert(rec->seq == seq);
            watch_frame(&s->watch_resp2, rec);
            watch_frame(&s->watch_resp3, rec);
        }
        if (s->watch_resp2.failed || s->watch_resp3.failed) {
            s->watch_resp2.failed = s->watch_resp3.failed = false;
            return BERTH_J_NOMEM;
        }
        return BERTH_J_OK;
    }
    berth_journal_reader *reader = NULL;
    berth_jerr err = berth_journal_reader_open(s->journal, &reader);
    if (err != BERTH_J_OK) {
        return err;
    }
    berth_journal_cursor *cursor = NULL;
    err = berth_journal_cursor_open(reader, first, &cursor);
    for (uint64_t seq = first; err == BERTH_J_OK && seq <= last; seq++) {
        berth_record rec;
        err = berth_journal_cursor_next(cursor, &rec, NULL, NULL);
        if (err == BERTH_J_OK) {
            assert(rec.seq == seq);
            watch_frame(&s->watch_resp2, &rec);
            watch_frame(&s->watch_resp3, &rec);
        }
    }
    if (cursor != NULL) {
        berth_journal_cursor_close(cursor);
    }
    berth_journal_reader_close(reader);
    if (err == BERTH_J_OK && (s->watch_resp2.failed || s->watch_resp3.failed)) {
        s->watch_resp2.failed = s->watch_resp3.failed = false;
        err = BERTH_J_NOMEM;
    }
    return err;
}

void watch_committed(server *s, uint64_t first, uint64_t last) {
    assert(first <= last);
    bool any_live = false;
    for (dlink *l = s->watchers.next; l != &s->watchers; l = l->next) {
        client *c = DLINK_OWNER(l, client, link_watch);
        any_live = any_live || (c->watch_live && c->watch_next_seq == first);
    }
    if (!any_live) {
        return;     /* catch-up watchers get these records from watch_pump */
    }
    berth_jerr err = watch_encode(s, first, last);
    for (dlink *l = s->watchers.next; l != &s->watchers; l = l->next) {
        client *c = DLINK_OWNER(l, client, link_watch);
        if (!c->watch_live || c->watch_next_seq != first || c->close_reason != NULL) {
            continue;
        }
        if (err != BERTH_J_OK) {
            c->watch_live = false;      /* watch_pump retries from the journal */
            continue;
        }
        const reply_buf *frames = c->out.proto == 3 ? &s->watch_resp3 : &s->watch_resp2;
        if (reply_pending(&c->out) + reply_pending(frames) > s->config.max_output_bytes) {
            /* Not a verdict on the reader: catch-up sends first..last (and
             * on) from the journal as its buffer drains. */
            c->watch_live = false;
            s->stats.watch_catchups++;
            continue;
        }
        reply_raw(&c->out, frames->data + frames->start, reply_pending(frames));
        c->watch_next_seq = last + 1;
        client_output_added(c);
    }
    if (err != BERTH_J_OK) {
        server_log("WATCH: reading committed records %llu..%llu failed: %s",
                   (unsigned long long)first, (unsigned long long)last, berth_jerr_name(err));
    }
}
