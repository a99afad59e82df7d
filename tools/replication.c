/* replication.c — owns berthd's side of the etcd journal (issue 6): opening
 * it, the follower's apply loop, READONLY answers and INFO replication.
 *
 * Why here and not in the backend: the backend's threads fetch records and
 * win or lose the leadership, but only the loop thread may touch the engine
 * and the WATCH clients. So the backend calls notify() from its threads,
 * which wakes the loop through one ev_async; the loop then takes the fetched
 * records, applies them through the engine (state, then the local journal,
 * byte for byte what etcd holds) and feeds WATCH clients as a commit would.
 * Writes are refused unless this berthd leads; the refusal names the leader
 * so a client can redirect. */
#include "server.h"

#include <assert.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etcd.h"

#define REPLICATION_ERR_LEN_MAX 512

typedef struct replication {
    server *s;
    uint64_t rebuild_snapshot_seq;      /* the etcd snapshot an empty copy was rebuilt to; 0: none */
    uint32_t rebuild_snapshots_skipped; /* bad ones passed over on the way */
    ev_async async;
    atomic_bool live;                   /* async started: other threads may send */
    berth_etcd_role role_seen;
    uint64_t applied_batches;
    berth_etcd_feed feed;
    berth_record records[BERTH_ETCD_FEED_RECORDS_MAX];
} replication;

bool replication_configured(const server_config *cfg) {
    return strcmp(cfg->journal_kind, "etcd") == 0;
}

/* Called on the backend's threads. */
static void replication_notify(void *ctx) {
    replication *r = ctx;
    if (atomic_load(&r->live)) {
        ev_async_send(r->s->loop, &r->async);
    }
}

/* The newest etcd snapshot that decodes to the state of its seq, at or
 * below max_seq; NULL when there is none. Bad ones are skipped (logged). */
static berth_state *rebuild_pick(replication *r, uint64_t max_seq, uint64_t *seq, uint8_t **bytes,
                                 size_t *len, uint8_t anchor[BERTH_HASH_LEN]) {
    berth_journal *journal = r->s->journal;
    for (uint32_t tries = 0; tries < BERTH_ETCD_SNAPSHOTS_KEPT_MAX * 4 && max_seq > 0; tries++) {
        char why[REPLICATION_ERR_LEN_MAX] = "";
        uint32_t skipped = 0;
        berth_jerr e = berth_etcd_snapshot_fetch(journal, max_seq, seq, bytes, len, &skipped, why, sizeof why);
        r->rebuild_snapshots_skipped += skipped;
        if (skipped > 0) server_log("rebuild: %s", why);
        if (e != BERTH_J_OK) {
            if (e != BERTH_J_NOTFOUND) server_log("rebuild: no snapshot from etcd (%s): %s", berth_jerr_name(e), why);
            return NULL;
        }
        berth_state *state = NULL;
        if (berth_snapshot_decode(*bytes, *len, &state, anchor, why, sizeof why) == 0 &&
            berth_state_last_seq(state) == *seq) {
            return state;
        }
        server_log("rebuild: snapshot %" PRIu64 " in etcd skipped: it does not decode to the state of its seq (%s)",
                   *seq, why);
        r->rebuild_snapshots_skipped++;
        berth_state_free(state);
        free(*bytes);
        *bytes = NULL;
        max_seq = *seq - 1;
    }
    return NULL;
}

/* Copy records head+1..upto from etcd through engine (each replayed to its
 * recorded outcome, so HISTORY gets its entries as on any replica). */
static berth_jerr rebuild_copy(replication *r, berth_engine *engine, uint64_t upto, char *err, size_t err_size) {
    berth_journal *journal = r->s->journal;
    while (berth_engine_head_seq(engine) < upto) {
        uint32_t count = 0;
        berth_jerr e = berth_etcd_fetch(journal, &count, err, err_size);
        if (e != BERTH_J_OK) return e;
        if (count == 0) {
            snprintf(err, err_size, "etcd's journal ends before the snapshot's seq %" PRIu64, upto);
            return BERTH_J_CORRUPT;
        }
        bool ready = berth_etcd_feed_take(journal, &r->feed);
        assert(ready && r->feed.count == count);
        (void)ready;
        uint64_t head = berth_engine_head_seq(engine);
        uint32_t n = upto - head < count ? (uint32_t)(upto - head) : count;
        for (uint32_t i = 0; i < n && e == BERTH_J_OK; i++) {
            e = berth_record_decode(r->feed.raw[i], r->feed.len[i], &r->records[i], err, err_size);
        }
        if (e == BERTH_J_OK) e = berth_engine_apply_committed(engine, r->records, n, err, err_size);
        berth_etcd_feed_done(journal);
        if (e != BERTH_J_OK) return e;
    }
    return BERTH_J_OK;
}

/* A replica starting with an empty local copy takes it from the newest good
 * snapshot in etcd: the records up to the snapshot's seq are copied in one
 * go before berthd serves (no pacing, no round trips through the loop),
 * each replayed once on a scratch engine for its outcome check and its
 * HISTORY entries, which only a replay can give; the state they reach must
 * equal the snapshot's (same digest) before the snapshot is stored in the
 * local copy, so the engine then opens from it and the feed brings the
 * tail. A snapshot that is missing chunks, hashes wrong, does not decode or
 * disagrees with the journal is skipped. Errors leave the copy as far as it
 * got; the feed continues from there, as it would without snapshots. */
static void replication_rebuild(replication *r) {
    berth_journal *journal = r->s->journal;
    uint64_t head = 0;
    uint8_t hash[BERTH_HASH_LEN];
    if (berth_journal_head(journal, &head, hash) != BERTH_J_OK || head != 0) return;
    uint64_t seq = 0;
    uint8_t *bytes = NULL;
    size_t len = 0;
    uint8_t anchor[BERTH_HASH_LEN];
    berth_state *snap = rebuild_pick(r, UINT64_MAX, &seq, &bytes, &len, anchor);
    if (snap == NULL) return;
    berth_engine_options eopt;
    memset(&eopt, 0, sizeof eopt);
    berth_engine *engine = NULL;
    char err[REPLICATION_ERR_LEN_MAX] = "";
    berth_jerr e = berth_engine_open(&engine, journal, &eopt, NULL, err, sizeof err);
    if (e == BERTH_J_OK) e = rebuild_copy(r, engine, seq, err, sizeof err);
    uint8_t want[BERTH_HASH_LEN], have[BERTH_HASH_LEN];
    if (e == BERTH_J_OK && (berth_state_digest(snap, want) != 0 ||
                            berth_state_digest(berth_engine_state(engine), have) != 0)) {
        e = BERTH_J_NOMEM;
        snprintf(err, sizeof err, "out of memory computing a digest");
    }
    /* The copy's head is the snapshot's seq: its hash must be the anchor. */
    uint64_t copied = 0;
    if (e == BERTH_J_OK && (berth_journal_head(journal, &copied, hash) != BERTH_J_OK || copied != seq ||
                            memcmp(anchor, hash, BERTH_HASH_LEN) != 0)) {
        r->rebuild_snapshots_skipped++;
        server_log("rebuild: snapshot %" PRIu64 " in etcd skipped: its anchor is not the journal's hash at that seq",
                   seq);
    } else if (e == BERTH_J_OK && memcmp(want, have, BERTH_HASH_LEN) != 0) {
        r->rebuild_snapshots_skipped++;
        server_log("rebuild: snapshot %" PRIu64 " in etcd skipped: its state differs from the journal's at that seq",
                   seq);
    } else if (e == BERTH_J_OK) {
        e = berth_journal_snapshot_put(journal, seq, bytes, len);
        if (e == BERTH_J_OK) {
            r->rebuild_snapshot_seq = seq;
        } else {
            snprintf(err, sizeof err, "storing the snapshot locally failed");
        }
    }
    if (e != BERTH_J_OK) {
        server_log("rebuild: from etcd snapshot %" PRIu64 " stopped at seq %" PRIu64 ": %s (%s); the feed goes on",
                   seq, engine != NULL ? berth_engine_head_seq(engine) : 0, err, berth_jerr_name(e));
    } else if (r->rebuild_snapshot_seq != 0) {
        server_log("rebuild: the empty local copy was rebuilt to etcd snapshot %" PRIu64 "; the feed brings the rest",
                   seq);
    }
    if (engine != NULL) berth_engine_close(engine);
    berth_state_free(snap);
    free(bytes);
}

int replication_open(server *s, const berth_journal_options *jopt, char *err, size_t err_size) {
    assert(s->replication == NULL && replication_configured(&s->config));
    const server_config *cfg = &s->config;
    replication *r = calloc(1, sizeof *r);
    if (r == NULL) {
        snprintf(err, err_size, "out of memory");
        return BERTH_J_NOMEM;
    }
    r->s = s;
    atomic_init(&r->live, false);
    char advertise[SERVER_PATH_LEN_MAX + 16];
    if (cfg->advertise[0] != '\0') {
        snprintf(advertise, sizeof advertise, "%s", cfg->advertise);
    } else {
        snprintf(advertise, sizeof advertise, "%s:%u", cfg->bind, cfg->port);
        if (strcmp(cfg->bind, "0.0.0.0") == 0 || strcmp(cfg->bind, "::") == 0) {
            server_log("warning: --bind %s with no --advertise: followers will redirect clients to %s; "
                       "set --advertise HOST:PORT",
                       cfg->bind, advertise);
        }
    }
    berth_etcd_options eo;
    memset(&eo, 0, sizeof eo);
    eo.endpoints = cfg->etcd_endpoints;
    eo.cluster = cfg->cluster;
    eo.lease_ttl_s = cfg->etcd_lease_ttl_s;
    eo.request_timeout_ms = cfg->etcd_timeout_ms;
    if (cfg->port == 0 && cfg->advertise[0] == '\0') {
        /* Only a unix socket: followers can name it to local clients. */
        snprintf(advertise, sizeof advertise, "unix:%.*s", (int)(sizeof advertise - 6), cfg->unixsocket);
    }
    eo.advertise = advertise;
    eo.cacert = cfg->etcd_cacert;
    eo.cert = cfg->etcd_cert;
    eo.key = cfg->etcd_key;
    eo.user = cfg->etcd_user;
    eo.password = cfg->etcd_password;
    eo.follow = true;
    eo.notify = replication_notify;
    eo.notify_ctx = r;
    berth_jerr e = berth_journal_open_etcd(&s->journal, cfg->data_dir, jopt, &eo, err, err_size);
    if (e != BERTH_J_OK) {
        free(r);
        return (int)e;
    }
    s->replication = r;
    replication_rebuild(r);
    return BERTH_J_OK;
}

void replication_engine_options(const server *s, berth_engine_options *eopt) {
    if (s->replication == NULL) {
        return;
    }
    /* One batch is one etcd transaction: within etcd's ops and bytes. */
    eopt->batch_records_max = BERTH_ETCD_TXN_RECORDS_MAX;
    eopt->batch_bytes_max = BERTH_ETCD_TXN_BYTES_MAX;
}

static const char *role_name(berth_etcd_role role) {
    switch (role) {
    case BERTH_ETCD_LEADER:
        return "leader";
    case BERTH_ETCD_FOLLOWER:
        return "follower";
    case BERTH_ETCD_STOPPED:
        return "stopped";
    }
    return "unknown";
}

/* Decode the fetched records (pointers into the feed) and apply them. */
static void replication_apply(replication *r) {
    server *s = r->s;
    berth_etcd_feed *feed = &r->feed;
    assert(feed->count >= 1 && feed->count <= BERTH_ETCD_FEED_RECORDS_MAX);
    char err[REPLICATION_ERR_LEN_MAX] = "";
    berth_jerr e = BERTH_J_OK;
    for (uint32_t i = 0; i < feed->count && e == BERTH_J_OK; i++) {
        e = berth_record_decode(feed->raw[i], feed->len[i], &r->records[i], err, sizeof err);
    }
    uint64_t before = berth_engine_head_seq(s->engine);
    if (e == BERTH_J_OK && feed->first_seq == before + 1) {
        e = berth_engine_apply_committed(s->engine, r->records, feed->count, err, sizeof err);
    } else if (e == BERTH_J_OK) {
        /* Fetched against a head the loop has since moved past: fetch again. */
        e = BERTH_J_INVALID;
        snprintf(err, sizeof err, "feed starts at %" PRIu64 ", head is %" PRIu64, feed->first_seq, before);
    }
    berth_etcd_feed_done(s->journal);
    uint64_t after = berth_engine_head_seq(s->engine);
    if (e != BERTH_J_OK) {
        server_log("follower: cannot apply records %" PRIu64 "..%" PRIu64 " from etcd: %s (%s)",
                   feed->first_seq, feed->first_seq + feed->count - 1, err, berth_jerr_name(e));
    }
    if (e == BERTH_J_CORRUPT) {
        server_log("follower: this replica cannot follow the etcd journal: stopping");
        s->fatal = true;
        ev_break(s->loop, EVBREAK_ALL);
        return;
    }
    if (after > before) {
        r->applied_batches++;
        watch_committed(s, before + 1, after);
    }
}

static void replication_async_cb(struct ev_loop *loop, ev_async *w, int revents) {
    replication *r = w->data;
    server *s = r->s;
    berth_etcd_role role = berth_etcd_role_now(s->journal);
    if (role != r->role_seen) {
        berth_etcd_status st;
        berth_etcd_status_get(s->journal, &st);
        server_log("replication: now %s at seq %" PRIu64 "%s%s%s", role_name(role),
                   berth_engine_head_seq(s->engine), st.last_error[0] != '\0' ? " (" : "",
                   st.last_error, st.last_error[0] != '\0' ? ")" : "");
        r->role_seen = role;
    }
    if (role == BERTH_ETCD_STOPPED && !s->fatal) {
        /* The local copy cannot follow etcd's journal (or failed to take
         * records etcd holds): a restart copies it right, serving cannot. */
        server_log("replication: stopping; restart berthd to copy the journal from etcd again");
        s->fatal = true;
        ev_break(s->loop, EVBREAK_ALL);
        return;
    }
    /* Writes staged while leading (held by group commit's gather) go first,
     * before the feed is taken: with no feed taken the journal refuses them
     * READONLY. Taken first, the feed may already hold the new leader's
     * record at the same seq, and the held one, other bytes at that seq,
     * was CORRUPT: berthd stopped (a leader resumed after a pause). */
    if (role == BERTH_ETCD_FOLLOWER && berth_engine_staged(s->engine) > 0) {
        batch_flush(s);
    }
    if (role == BERTH_ETCD_FOLLOWER && berth_etcd_feed_take(s->journal, &r->feed)) {
        replication_apply(r);
    }
    (void)loop;
    (void)revents;
}

int replication_start(server *s, char *err, size_t err_size) {
    replication *r = s->replication;
    if (r == NULL) {
        return 0;
    }
    ev_async_init(&r->async, replication_async_cb);
    r->async.data = r;
    ev_async_start(s->loop, &r->async);
    atomic_store(&r->live, true);
    berth_jerr e = berth_etcd_start(s->journal);
    if (e != BERTH_J_OK) {
        snprintf(err, err_size, "ERR cannot start the etcd threads (%s)", berth_jerr_name(e));
        return -1;
    }
    ev_async_send(s->loop, &r->async);   /* a first look at the role */
    return 0;
}

void replication_stop(server *s) {
    replication *r = s->replication;
    if (r == NULL) {
        return;
    }
    atomic_store(&r->live, false);
    ev_async_stop(s->loop, &r->async);
}

void replication_free(server *s) {
    free(s->replication);
    s->replication = NULL;
}

bool replication_refuse_write(client *c) {
    server *s = c->server;
    if (s->replication == NULL || berth_etcd_role_now(s->journal) == BERTH_ETCD_LEADER) {
        return false;
    }
    if (c->batch_pending > 0) {
        batch_flush(s);   /* this client's earlier replies go first */
    }
    berth_etcd_status st;
    berth_etcd_status_get(s->journal, &st);
    if (st.role == BERTH_ETCD_STOPPED) {
        reply_error(&c->out, "READONLY", "this replica stopped following the etcd journal: %s",
                    st.last_error);
    } else if (st.leader[0] != '\0') {
        reply_error(&c->out, "READONLY", "leader is %s", st.leader);
    } else {
        reply_error(&c->out, "READONLY", "the leader is not known yet (an election may be under way): "
                                         "retry shortly");
    }
    return true;
}

bool replication_is_replica(server *s) {
    return s->replication != NULL && berth_etcd_role_now(s->journal) != BERTH_ETCD_LEADER;
}

/* `role` is Redis's word, the one redis-cli and client libraries read:
 * master where writes are taken (the LMDB journal, the etcd leader), slave
 * where they get -READONLY; `etcd_role` tells leader, follower or stopped. */
size_t replication_info(server *s, char *buf, size_t size) {
    replication *r = s->replication;
    int n;
    if (r == NULL) {
        n = snprintf(buf, size, "# Replication\r\nrole:master\r\njournal_backend:lmdb\r\nconnected_slaves:0\r\n\r\n");
        assert(n >= 0);
        return (size_t)n;
    }
    berth_etcd_status st;
    berth_etcd_status_get(s->journal, &st);
    uint64_t applied = berth_engine_head_seq(s->engine);
    uint64_t lag = st.etcd_head > applied ? st.etcd_head - applied : 0;
    n = snprintf(buf, size,
             "# Replication\r\nrole:%s\r\netcd_role:%s\r\nleader:%s\r\njournal_backend:etcd\r\netcd_cluster:%s\r\n"
             "etcd_endpoint:%s\r\napplied_seq:%" PRIu64 "\r\netcd_head_seq:%" PRIu64 "\r\n"
             "lag_records:%" PRIu64 "\r\nlease_id:%" PRIu64 "\r\nlease_ttl_s:%u\r\netcd_timeout_ms:%u\r\n"
             "elections_won:%" PRIu64 "\r\nstep_downs:%" PRIu64 "\r\nfence_refusals:%" PRIu64 "\r\n"
             "etcd_txns:%" PRIu64 "\r\nfeed_records:%" PRIu64 "\r\netcd_request_errors:%" PRIu64 "\r\n"
             "snapshots_to_etcd:%" PRIu64 "\r\nsnapshot_to_etcd_seq:%" PRIu64 "\r\n"
             "rebuild_snapshot_seq:%" PRIu64 "\r\nrebuild_snapshots_skipped:%u\r\n"
             "last_event:%s\r\n\r\n",
             st.role == BERTH_ETCD_LEADER ? "master" : "slave", role_name(st.role), st.leader, s->config.cluster, st.endpoint, applied, st.etcd_head, lag,
             st.lease_id, st.lease_ttl_s, st.request_timeout_ms, st.elections_won, st.step_downs, st.fence_refusals, st.txns,
             st.feed_records, st.request_errors, st.snapshots_uploaded, st.snapshot_upload_seq,
             r->rebuild_snapshot_seq, r->rebuild_snapshots_skipped, st.last_error);
    assert(n >= 0);
    return (size_t)n;
}
