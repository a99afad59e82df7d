/* etcd.h — berth's journal on etcd: the calls only the etcd backend has.
 *
 * The etcd backend is a berth_journal like the LMDB one (journal.h works on
 * it unchanged) that wraps a local LMDB journal. etcd is the replicated
 * source of truth for appends; the local copy serves every read. Under the
 * prefix /berth/<cluster>/ etcd holds journal/<seq, 20 digits> (the exact
 * encoded record bytes, same msgpack and hash chain as LMDB), head (the last
 * seq, decimal) and leader (the leader's advertised host:port, on a lease).
 *
 * Exactly one berthd leads: it won a campaign (a transaction creating the
 * leader key on its lease while the head equals its own) and keeps the lease
 * alive. Its appends are etcd transactions fenced on the leader key's create
 * revision and on the head, so a deposed leader's batch is refused, never
 * forked. Followers fetch new records into a feed that their event loop
 * applies (berth_engine_apply_committed), then campaign when the leader key
 * is gone and they hold the whole journal. Threads: the caller's (appends,
 * feed take/done, status), a feed thread (range reads, a watch to wait,
 * campaigns) and a lease thread (keepalive); each has its own HTTP handle. */
#ifndef BERTH_JOURNAL_ETCD_H
#define BERTH_JOURNAL_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "journal.h"

/* etcd's default --max-txn-ops is 128: the records of a batch plus the head. */
#define BERTH_ETCD_TXN_RECORDS_MAX 127
/* etcd's default request limit is 1.5 MiB; base64 grows bytes by 4/3. */
#define BERTH_ETCD_TXN_BYTES_MAX (960u * 1024u)
#define BERTH_ETCD_FEED_RECORDS_MAX 128     /* records fetched per range read */
#define BERTH_ETCD_ENDPOINTS_MAX 16
#define BERTH_ETCD_ADDR_LEN_MAX 256         /* advertised host:port */
#define BERTH_ETCD_CLUSTER_LEN_MAX 128
#define BERTH_ETCD_LEASE_TTL_S_DEFAULT 3
#define BERTH_ETCD_LEASE_TTL_S_MAX 600
#define BERTH_ETCD_ERR_LEN_MAX 256
/* Snapshots in etcd: each is cut into chunks of at most this many bytes
 * (base64 keeps one chunk's put far under etcd's 1.5 MiB request limit),
 * at most this many chunks, and only the newest few are kept. */
#define BERTH_ETCD_SNAPSHOT_CHUNK_BYTES (512u * 1024u)
#define BERTH_ETCD_SNAPSHOT_CHUNKS_MAX 4096
#define BERTH_ETCD_SNAPSHOTS_KEPT_MAX 3
/* One HTTP request to etcd (--etcd-timeout-ms): below the minimum a loaded
 * member's ordinary answer would count as a failure (and a leader would step
 * down on it); above the maximum a hung member stalls the commit path for
 * longer than any client waits. */
#define BERTH_ETCD_TIMEOUT_MS_DEFAULT 5000
#define BERTH_ETCD_TIMEOUT_MS_MIN 100
#define BERTH_ETCD_TIMEOUT_MS_MAX 600000

typedef struct berth_etcd_options {
    const char *endpoints;          /* "http://h:p[,http://h:p...]", tried in turn */
    const char *cluster;            /* the prefix's name: letters, digits, - _ . */
    uint32_t lease_ttl_s;           /* 0: BERTH_ETCD_LEASE_TTL_S_DEFAULT */
    const char *advertise;          /* value of the leader key; NULL/"" never campaigns.
                                     * Closing a leading journal revokes its lease, so a
                                     * follower takes over at once. */
    const char *cacert;             /* TLS, passed to libcurl as is; NULL or "" for none */
    const char *cert;
    const char *key;
    const char *user;               /* etcd auth user; NULL or "" for none */
    const char *password;
    uint32_t request_timeout_ms;    /* every HTTP request; 0: BERTH_ETCD_TIMEOUT_MS_DEFAULT,
                                     * else BERTH_ETCD_TIMEOUT_MS_MIN..MAX (INVALID otherwise) */
    bool follow;                    /* run the feed and lease threads (berthd) */
    /* Called from the backend's threads when the feed has records or the
     * role changed. Must be async-signal-light (ev_async_send). */
    void (*notify)(void *ctx);
    void *notify_ctx;
} berth_etcd_options;

typedef enum berth_etcd_role {
    BERTH_ETCD_FOLLOWER = 0,
    BERTH_ETCD_LEADER = 1,
    BERTH_ETCD_STOPPED = 2          /* the feed found a journal it cannot follow */
} berth_etcd_role;

typedef struct berth_etcd_status {
    berth_etcd_role role;
    char leader[BERTH_ETCD_ADDR_LEN_MAX];   /* "" when no leader is known */
    uint64_t local_head;            /* last seq in the local copy */
    uint64_t etcd_head;             /* last seq seen in etcd */
    uint64_t lease_id;              /* 0 unless leading */
    uint32_t lease_ttl_s;
    uint32_t request_timeout_ms;    /* every HTTP request's limit */
    uint64_t elections_won;
    uint64_t step_downs;
    uint64_t fence_refusals;        /* appends etcd refused: no longer leader */
    uint64_t txns;                  /* append transactions committed */
    uint64_t feed_records;          /* records fetched for the follower feed */
    uint64_t request_errors;        /* HTTP requests that failed on every endpoint */
    uint64_t snapshots_uploaded;    /* snapshots this replica wrote to etcd as leader */
    uint64_t snapshot_upload_seq;   /* the newest of them; 0: none */
    char endpoint[BERTH_ETCD_ADDR_LEN_MAX]; /* the endpoint last answering */
    char last_error[BERTH_ETCD_ERR_LEN_MAX];
} berth_etcd_status;

/* Open the local LMDB journal in dir and check it against etcd: the local
 * copy must be a prefix of the etcd journal (same bytes at its head).
 * Errors: those of berth_journal_open_lmdb, IO (etcd unreachable),
 * CORRUPT (the copies diverge), INVALID (bad options). err gets a sentence. */
berth_jerr berth_journal_open_etcd(berth_journal **out, const char *dir,
                                   const berth_journal_options *local_options,
                                   const berth_etcd_options *etcd, char *err, size_t err_size);

/* Start the feed and lease threads (options.follow). Until then the journal
 * is a follower that fetches nothing. Errors: NOMEM, INVALID. */
berth_jerr berth_etcd_start(berth_journal *journal);

bool berth_journal_is_etcd(const berth_journal *journal);
berth_etcd_role berth_etcd_role_now(berth_journal *journal);
void berth_etcd_status_get(berth_journal *journal, berth_etcd_status *out);

/* Records fetched from etcd for the follower to apply, in seq order. The raw
 * bytes stay valid until berth_etcd_feed_done; the follower applies them
 * (whose append this backend accepts, byte for byte, while following). */
typedef struct berth_etcd_feed {
    uint64_t first_seq;
    uint32_t count;
    const uint8_t *raw[BERTH_ETCD_FEED_RECORDS_MAX];
    size_t len[BERTH_ETCD_FEED_RECORDS_MAX];
} berth_etcd_feed;
bool berth_etcd_feed_take(berth_journal *journal, berth_etcd_feed *out);
void berth_etcd_feed_done(berth_journal *journal);

/* Tools (no threads, options.follow false): fetch the next records after
 * the local head into the feed, synchronously; *count 0 when the local copy
 * holds all of etcd's journal. Take, apply and finish them as a follower
 * does. Errors: IO (etcd unreachable), CORRUPT (not a prefix), INVALID. */
berth_jerr berth_etcd_fetch(berth_journal *journal, uint32_t *count, char *err, size_t err_size);

/* Snapshots replicated through etcd. A leader's berth_journal_snapshot_put
 * stores the snapshot locally and then, on the feed thread, in etcd: its
 * chunks under snapchunk/<seq>/<index>, then a manifest snapmeta/<seq>
 * (seq, length, chunk count, SHA-256 of the bytes), each put fenced on the
 * leader key like an append; older snapshots beyond
 * BERTH_ETCD_SNAPSHOTS_KEPT_MAX are deleted. fetch: the newest snapshot with
 * seq <= max_seq whose manifest parses and whose chunks are all present,
 * of the stated length and hash (and whose bytes end in the SHA-256 of the
 * rest, as every stored berth snapshot does); one that fails is skipped,
 * counted in *skipped with the reason in err, and an older one tried.
 * *bytes is malloc'd; the caller frees it. Only before berth_etcd_start
 * (the caller's thread, as berth_etcd_fetch). Errors: NOTFOUND (no good
 * snapshot), IO (etcd unreachable), NOMEM, INVALID (threads running). */
berth_jerr berth_etcd_snapshot_fetch(berth_journal *journal, uint64_t max_seq, uint64_t *seq,
                                     uint8_t **bytes, size_t *len, uint32_t *skipped,
                                     char *err, size_t err_size);

#endif
