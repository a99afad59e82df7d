/* etcd_store.c — owns berth's journal on etcd: the etcd backend behind
 * backend.h, its HTTP/JSON client for etcd's v3 gateway, the leader's lease
 * and fenced appends, and the follower's feed.
 *
 * Why it is shaped this way: etcd is the replicated source of truth and the
 * local LMDB copy is the only thing berth ever reads, so this backend wraps
 * an LMDB backend and hands its readers out unchanged. Every append is one
 * etcd transaction that puts the records and the head only if the leader key
 * still has the create revision this berthd won it with and the head is the
 * seq it extends; after etcd says yes the same records go to LMDB, whose
 * encoding is deterministic, so both copies hold the same bytes and hashes.
 * Anything uncertain (no answer, a refused fence, a local write that failed
 * after etcd's yes) makes this berthd step down: as a follower it fetches
 * from etcd whatever etcd really holds, which is the one way back to truth.
 * No consensus of our own: etcd decides, we compare-and-swap. */
#include <assert.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "berth_limits.h"
#include "etcd.h"
#include "jutil.h"

#define ETCD_URL_LEN_MAX 512
#define ETCD_PREFIX_LEN_MAX (BERTH_ETCD_CLUSTER_LEN_MAX + 32)
#define ETCD_KEY_LEN_MAX (ETCD_PREFIX_LEN_MAX + 32)
#define ETCD_ENDPOINTS_LEN_MAX 4096
#define ETCD_CRED_LEN_MAX 256
#define ETCD_RESPONSE_BYTES_MAX (64u << 20)    /* a feed range of 128 records in base64, with room */
#define ETCD_WATCH_BYTES_MAX (64u << 20)       /* one watch stream's buffered events */
#define ETCD_CONNECT_TIMEOUT_MS 1000          /* or the request timeout, if shorter */
#define ETCD_FEED_RETRY_MS 100                 /* after a failed read */
#define ETCD_FEED_IDLE_MS 200                  /* leader or feed held: recheck this often */
/* A live follower reads at most this often: each read then carries several
 * of the leader's commits, so following costs etcd (and this replica) a few
 * requests a second instead of two per commit, for this much more lag. */
#define ETCD_FEED_PACE_MS 25
#define ETCD_WATCH_STREAM_MS 10000             /* a caught-up follower's watch, then a fresh read */
#define ETCD_B64_LEN_MAX (4 * ((BERTH_RECORD_BYTES_MAX + 2) / 3) + 1)
#define ETCD_SEQ_DIGITS 20
#define ETCD_CHUNK_DIGITS 6                    /* BERTH_ETCD_SNAPSHOT_CHUNKS_MAX fits */
#define ETCD_MANIFEST_LEN_MAX 160              /* "v1 seq len chunks sha256hex" */
#define ETCD_SNAPSHOTS_LISTED_MAX 64           /* manifests read at once: KEPT_MAX plus strays */
/* The leader's copy of a batch for its local append: the records' strings
 * (bounded by the batch's encoded bytes) and the touched names. */
#define ETCD_LOCAL_ARENA_BYTES (BERTH_ETCD_TXN_BYTES_MAX + \
    (size_t)BERTH_ETCD_TXN_RECORDS_MAX * ((BERTH_PLACEMENT_WORKERS_MAX + 1) * (BERTH_NAME_LEN_MAX + 8) + \
                                         BERTH_PLACEMENT_WORKERS_MAX * sizeof(berth_str) + 16))

typedef enum http_result {
    HTTP_OK = 0,        /* 200 and a JSON object */
    HTTP_UNREACHABLE,   /* no endpoint accepted a connection: nothing was sent */
    HTTP_FAILED         /* sent, but no usable answer: the outcome is unknown */
} http_result;

typedef struct etcd_config {
    char endpoints[BERTH_ETCD_ENDPOINTS_MAX][ETCD_URL_LEN_MAX];
    uint32_t endpoint_count;
    char prefix[ETCD_PREFIX_LEN_MAX];           /* /berth/<cluster>/ */
    char advertise[BERTH_ETCD_ADDR_LEN_MAX];
    char cacert[ETCD_URL_LEN_MAX];
    char cert[ETCD_URL_LEN_MAX];
    char key[ETCD_URL_LEN_MAX];
    char user[ETCD_CRED_LEN_MAX];
    char password[ETCD_CRED_LEN_MAX];
    uint32_t lease_ttl_s;
    uint32_t request_timeout_ms;
} etcd_config;

/* One thread's HTTP client: a libcurl handle keeps its connections alive. */
typedef struct etcd_http {
    const etcd_config *cfg;
    struct etcd_journal *owner;
    CURL *curl;
    uint32_t current;                   /* endpoint tried first */
    char *body;                         /* response bytes, owned */
    size_t body_len;
    size_t body_cap;
    char token[ETCD_CRED_LEN_MAX * 2];  /* etcd auth token, "" when none */
    char b64[ETCD_B64_LEN_MAX];
    uint8_t raw[BERTH_RECORD_BYTES_MAX + 3];   /* base64 decodes whole groups of 3 */
    char error[BERTH_ETCD_ERR_LEN_MAX];
} etcd_http;

typedef enum feed_state { FEED_EMPTY = 0, FEED_READY, FEED_TAKEN } feed_state;

typedef struct etcd_journal {
    berth_journal base;
    berth_journal *local;               /* owned LMDB journal */
    etcd_config cfg;
    berth_etcd_options options;         /* notify only; strings copied into cfg */
    etcd_http caller;                   /* appends: the thread that commits */
    etcd_http feeder;
    etcd_http leaser;
    pthread_mutex_t mutex;
    pthread_cond_t cond;                /* CLOCK_MONOTONIC */
    pthread_cond_t lease_cond;          /* CLOCK_MONOTONIC: the lease thread's alone, woken only for
                                         * the stop or a failed local append (cond wakes at every
                                         * commit) */
    pthread_t feed_thread;
    pthread_t lease_thread;
    bool threads_started;
    bool stop;                          /* under mutex */
    _Atomic int role;                   /* berth_etcd_role */
    int64_t lease_id;                   /* under mutex; 0 unless leading */
    int64_t leader_rev;                 /* leader key's create revision we won */
    uint64_t renewed_ns;                /* last keepalive answered, monotonic */
    char leader[BERTH_ETCD_ADDR_LEN_MAX];
    uint64_t etcd_head;
    char endpoint[BERTH_ETCD_ADDR_LEN_MAX];
    char last_error[BERTH_ETCD_ERR_LEN_MAX];
    uint64_t elections_won;
    uint64_t step_downs;
    uint64_t fence_refusals;
    uint64_t txns;
    uint64_t feed_records;
    uint64_t request_errors;
    feed_state feed;                    /* under mutex */
    uint64_t feed_first;
    uint32_t feed_count;
    uint8_t *feed_bytes;                /* BERTH_ETCD_FEED_RECORDS_MAX records, owned */
    size_t feed_off[BERTH_ETCD_FEED_RECORDS_MAX];
    size_t feed_len[BERTH_ETCD_FEED_RECORDS_MAX];
    uint8_t scratch[BERTH_RECORD_BYTES_MAX];    /* caller thread: encode */
    /* The leader's local append of a batch runs on the local thread while
     * the next batch's etcd transaction is in flight; every read of the
     * local copy waits for it first (local_wait), so no reader ever misses
     * an acknowledged record. */
    pthread_t local_thread;
    bool local_busy;                    /* under mutex: a batch awaits its local append */
    berth_jerr local_err;               /* under mutex: a failed one, sticky */
    uint32_t local_n;
    bool local_has_touched;
    uint8_t local_expect[BERTH_HASH_LEN];   /* the hash etcd got for the batch's last record */
    berth_record *local_records;        /* BERTH_ETCD_TXN_RECORDS_MAX, owned */
    berth_touched *local_touched;       /* BERTH_ETCD_TXN_RECORDS_MAX, owned */
    uint8_t *local_arena;               /* ETCD_LOCAL_ARENA_BYTES, owned */
    size_t local_arena_used;
    uint64_t feed_last_ns;              /* feed thread: when its last live read began */
    /* Records a watch delivered while the loop held the feed: moved into
     * the feed when it is free again (by either thread, under mutex). */
    uint8_t *stage_bytes;               /* BERTH_ETCD_FEED_RECORDS_MAX records, owned */
    size_t stage_off[BERTH_ETCD_FEED_RECORDS_MAX];
    size_t stage_len[BERTH_ETCD_FEED_RECORDS_MAX];
    uint32_t stage_count;               /* under mutex */
    uint64_t stage_first;
    uint64_t chain_seq;                 /* leader: the head etcd holds, and its hash */
    uint8_t chain_hash[BERTH_HASH_LEN];
    /* The leader's newest snapshot waiting for the feed thread to put it in
     * etcd (under mutex): a newer one replaces it, since only the newest
     * matters to a replica rebuilding. */
    uint8_t *upload_bytes;              /* owned; NULL: none waiting */
    size_t upload_len;
    uint64_t upload_seq;
    uint64_t snapshots_uploaded;
    uint64_t snapshot_upload_seq;
} etcd_journal;

static const berth_journal_ops etcd_ops;

static etcd_journal *journal_of(berth_journal *base) {
    assert(base != NULL && base->ops == &etcd_ops);
    return (etcd_journal *)(void *)base;
}

/* ------------------------------------------------------------ utilities */

static uint64_t mono_ns(void) {
    struct timespec ts;
    int rc = clock_gettime(CLOCK_MONOTONIC, &ts);
    assert(rc == 0);
    (void)rc;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void lock(etcd_journal *j) {
    int rc = pthread_mutex_lock(&j->mutex);
    assert(rc == 0);
    (void)rc;
}

static void unlock(etcd_journal *j) {
    int rc = pthread_mutex_unlock(&j->mutex);
    assert(rc == 0);
    (void)rc;
}

/* Wait on cond for at most ms; caller holds the mutex. */
static void wait_ms_on(etcd_journal *j, pthread_cond_t *cond, uint32_t ms) {
    struct timespec ts;
    int rc = clock_gettime(CLOCK_MONOTONIC, &ts);
    assert(rc == 0);
    uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)ms * 1000000u;
    ts.tv_sec += (time_t)(ns / 1000000000u);
    ts.tv_nsec = (long)(ns % 1000000000u);
    rc = pthread_cond_timedwait(cond, &j->mutex, &ts);
    assert(rc == 0 || rc == ETIMEDOUT);
    (void)rc;
}

static void wait_ms(etcd_journal *j, uint32_t ms) {
    wait_ms_on(j, &j->cond, ms);
}

/* Holding the mutex: the stop, or a change the lease thread must act on. */
static void wake_all(etcd_journal *j) {
    int rc = pthread_cond_broadcast(&j->cond);
    assert(rc == 0);
    rc = pthread_cond_broadcast(&j->lease_cond);
    assert(rc == 0);
    (void)rc;
}


static void notify(etcd_journal *j) {
    if (j->options.notify != NULL) j->options.notify(j->options.notify_ctx);
}

/* base64 of len bytes into out (ETCD_B64_LEN_MAX at least for one record). */
static const char *b64_encode(char *out, size_t cap, const void *bytes, size_t len) {
    assert(4 * ((len + 2) / 3) + 1 <= cap);
    int n = EVP_EncodeBlock((unsigned char *)out, bytes, (int)len);
    assert(n >= 0 && (size_t)n < cap);
    out[n] = '\0';
    return out;
}

/* Decode base64 text; -1 when malformed or over cap. */
static long b64_decode(uint8_t *out, size_t cap, const char *text, size_t len) {
    if (len % 4 != 0 || (len / 4) * 3 > cap) return -1;
    if (len == 0) return 0;
    int n = EVP_DecodeBlock(out, (const unsigned char *)text, (int)len);
    if (n < 0) return -1;
    size_t pad = (text[len - 1] == '=') + (len > 1 && text[len - 2] == '=');
    return (long)((size_t)n - pad);
}

static void key_journal(const etcd_config *cfg, uint64_t seq, char *out, size_t size) {
    int n = snprintf(out, size, "%sjournal/%0*" PRIu64, cfg->prefix, ETCD_SEQ_DIGITS, seq);
    assert(n > 0 && (size_t)n < size);
    (void)n;
}

static void key_named(const etcd_config *cfg, const char *name, char *out, size_t size) {
    int n = snprintf(out, size, "%s%s", cfg->prefix, name);
    assert(n > 0 && (size_t)n < size);
    (void)n;
}

/* ---------------------------------------------------------------- JSON */

static json_t *jstr_b64(etcd_http *h, const void *bytes, size_t len) {
    return json_string(b64_encode(h->b64, sizeof h->b64, bytes, len));
}

static json_t *jkey(etcd_http *h, const char *key) {
    return jstr_b64(h, key, strlen(key));
}

static json_t *ju64(uint64_t v) {
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return json_string(buf);
}

/* etcd's int64 fields arrive as strings; absent means 0. */
static uint64_t jget_u64(const json_t *obj, const char *name) {
    const json_t *v = json_object_get(obj, name);
    if (json_is_integer(v)) return (uint64_t)json_integer_value(v);
    if (!json_is_string(v)) return 0;
    return strtoull(json_string_value(v), NULL, 10);
}

/* A base64 field decoded into out; -1 when absent or malformed. */
static long jget_b64(const json_t *obj, const char *name, uint8_t *out, size_t cap) {
    const json_t *v = json_object_get(obj, name);
    if (v == NULL) return 0;   /* an empty value is omitted */
    if (!json_is_string(v)) return -1;
    return b64_decode(out, cap, json_string_value(v), json_string_length(v));
}

static json_t *compare_create(etcd_http *h, const char *key, uint64_t rev) {
    return json_pack("{s:s, s:s, s:o, s:o}", "target", "CREATE", "result", "EQUAL", "key",
                     jkey(h, key), "create_revision", ju64(rev));
}

/* head == seq: a VALUE compare on a missing key fails, so seq 0 is "no head key". */
static json_t *compare_head(etcd_http *h, uint64_t seq) {
    char key[ETCD_KEY_LEN_MAX];
    key_named(h->cfg, "head", key, sizeof key);
    if (seq == 0) return compare_create(h, key, 0);
    char value[24];
    snprintf(value, sizeof value, "%" PRIu64, seq);
    json_t *k = jkey(h, key);
    return json_pack("{s:s, s:s, s:o, s:o}", "target", "VALUE", "result", "EQUAL", "key", k,
                     "value", jstr_b64(h, value, strlen(value)));
}

static json_t *op_put(etcd_http *h, const char *key, const void *value, size_t len, int64_t lease) {
    json_t *put = json_pack("{s:o, s:o}", "key", jkey(h, key), "value", jstr_b64(h, value, len));
    if (put != NULL && lease != 0) json_object_set_new(put, "lease", ju64((uint64_t)lease));
    return json_pack("{s:o}", "request_put", put);
}

/* Feed reads are serializable: the member answers from its own applied
 * state without a round to etcd's leader. A stale answer only delays a
 * follower (etcd never shows uncommitted writes), and a campaign decided on
 * one is still judged by its own transaction's compares. */
static json_t *op_range(etcd_http *h, const char *key, const char *end, uint32_t limit) {
    json_t *range = json_pack("{s:o, s:b}", "key", jkey(h, key), "serializable", 1);
    if (range != NULL && end != NULL) json_object_set_new(range, "range_end", jkey(h, end));
    if (range != NULL && limit > 0) json_object_set_new(range, "limit", json_integer(limit));
    return json_pack("{s:o}", "request_range", range);
}

/* ---------------------------------------------------------------- HTTP */

static size_t http_collect(char *data, size_t size, size_t nmemb, void *arg) {
    etcd_http *h = arg;
    size_t n = size * nmemb;
    if (h->body_len + n + 1 > ETCD_RESPONSE_BYTES_MAX) return 0;
    if (h->body_len + n + 1 > h->body_cap) {
        size_t cap = h->body_cap == 0 ? 65536 : h->body_cap;
        while (cap < h->body_len + n + 1) cap *= 2;
        char *grown = realloc(h->body, cap);
        if (grown == NULL) return 0;
        h->body = grown;
        h->body_cap = cap;
    }
    memcpy(h->body + h->body_len, data, n);
    h->body_len += n;
    h->body[h->body_len] = '\0';
    return n;
}

static int http_init(etcd_http *h, const etcd_config *cfg, struct etcd_journal *owner) {
    memset(h, 0, sizeof *h);
    h->cfg = cfg;
    h->owner = owner;
    h->curl = curl_easy_init();
    return h->curl == NULL ? -1 : 0;
}

static void http_free(etcd_http *h) {
    if (h->curl != NULL) curl_easy_cleanup(h->curl);
    free(h->body);
    memset(h, 0, sizeof *h);
}

static void http_note_endpoint(etcd_http *h) {
    etcd_journal *j = h->owner;
    lock(j);
    snprintf(j->endpoint, sizeof j->endpoint, "%s", h->cfg->endpoints[h->current]);
    unlock(j);
}

static void http_note_error(etcd_http *h) {
    etcd_journal *j = h->owner;
    lock(j);
    j->request_errors++;
    snprintf(j->last_error, sizeof j->last_error, "%s", h->error);
    unlock(j);
}

/* A member that does not accept a connection soon is skipped for the next
 * one; never longer than a whole request may take. */
static uint32_t connect_timeout_ms(const etcd_config *cfg) {
    assert(cfg->request_timeout_ms >= BERTH_ETCD_TIMEOUT_MS_MIN);
    return cfg->request_timeout_ms < ETCD_CONNECT_TIMEOUT_MS ? cfg->request_timeout_ms : ETCD_CONNECT_TIMEOUT_MS;
}

/* One POST to one endpoint. CURLcode, with *status the HTTP status. */
static CURLcode http_post_one(etcd_http *h, const char *url, const char *body, long *status,
                              uint32_t timeout_ms, struct curl_slist *headers) {
    CURL *c = h->curl;
    const etcd_config *cfg = h->cfg;
    curl_easy_reset(c);
    h->body_len = 0;
    if (h->body != NULL) h->body[0] = '\0';
    CURLcode rc = curl_easy_setopt(c, CURLOPT_URL, url);
    if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, http_collect);
    if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_WRITEDATA, h);
    if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)connect_timeout_ms(cfg));
    if (rc == CURLE_OK && cfg->cacert[0] != '\0') rc = curl_easy_setopt(c, CURLOPT_CAINFO, cfg->cacert);
    if (rc == CURLE_OK && cfg->cert[0] != '\0') rc = curl_easy_setopt(c, CURLOPT_SSLCERT, cfg->cert);
    if (rc == CURLE_OK && cfg->key[0] != '\0') rc = curl_easy_setopt(c, CURLOPT_SSLKEY, cfg->key);
    if (rc == CURLE_OK) rc = curl_easy_perform(c);
    *status = 0;
    if (rc == CURLE_OK) {
        CURLcode info = curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
        if (info != CURLE_OK) *status = 0;
    }
    return rc;
}

/* Nothing reached the server: another endpoint may be tried safely. A
 * timeout is that only when not a byte of the request went out (libcurl
 * names a connect timeout, a member that answers no SYN, as it names a
 * read timeout after the request): the transfer's request size says which. */
static bool http_not_sent(CURL *c, CURLcode rc) {
    if (rc == CURLE_OPERATION_TIMEDOUT) {
        long sent = -1;
        return curl_easy_getinfo(c, CURLINFO_REQUEST_SIZE, &sent) == CURLE_OK && sent == 0;
    }
    return rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
           rc == CURLE_COULDNT_RESOLVE_PROXY || rc == CURLE_SSL_CONNECT_ERROR;
}

static struct curl_slist *http_headers(etcd_http *h) {
    struct curl_slist *list = curl_slist_append(NULL, "Content-Type: application/json");
    if (list != NULL && h->token[0] != '\0') {
        char line[sizeof h->token + 32];
        snprintf(line, sizeof line, "Authorization: %s", h->token);
        struct curl_slist *more = curl_slist_append(list, line);
        if (more == NULL) {
            curl_slist_free_all(list);
            return NULL;
        }
        list = more;
    }
    return list;
}

static http_result http_post_raw(etcd_http *h, const char *path, const char *body, json_t **reply,
                                 uint32_t timeout_ms);

/* etcd auth: a token for this handle, fetched once and again when refused. */
static int http_authenticate(etcd_http *h) {
    const etcd_config *cfg = h->cfg;
    h->token[0] = '\0';
    json_t *req = json_pack("{s:s, s:s}", "name", cfg->user, "password", cfg->password);
    char *body = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (body == NULL) return -1;
    json_t *reply = NULL;
    http_result r = http_post_raw(h, "/v3/auth/authenticate", body, &reply, cfg->request_timeout_ms);
    free(body);
    int rc = -1;
    const char *token = json_string_value(json_object_get(reply, "token"));
    if (r == HTTP_OK && token != NULL && strlen(token) < sizeof h->token) {
        snprintf(h->token, sizeof h->token, "%s", token);
        rc = 0;
    }
    json_decref(reply);
    return rc;
}

/* POST body to path on the endpoints in turn; *reply gets the JSON answer
 * (caller decrefs) when HTTP_OK. */
static http_result http_post_raw(etcd_http *h, const char *path, const char *body, json_t **reply,
                                 uint32_t timeout_ms) {
    const etcd_config *cfg = h->cfg;
    *reply = NULL;
    struct curl_slist *headers = http_headers(h);
    if (headers == NULL) {
        snprintf(h->error, sizeof h->error, "out of memory building a request");
        return HTTP_UNREACHABLE;
    }
    http_result result = HTTP_UNREACHABLE;
    for (uint32_t tried = 0; tried < cfg->endpoint_count; tried++) {
        char url[ETCD_URL_LEN_MAX + 64];
        snprintf(url, sizeof url, "%s%s", cfg->endpoints[h->current], path);
        long status = 0;
        CURLcode rc = http_post_one(h, url, body, &status, timeout_ms, headers);
        if (rc != CURLE_OK) {
            snprintf(h->error, sizeof h->error, "%s: %s", cfg->endpoints[h->current], curl_easy_strerror(rc));
            h->current = (h->current + 1) % cfg->endpoint_count;
            if (http_not_sent(h->curl, rc)) continue;
            result = HTTP_FAILED;
            break;
        }
        json_error_t jerr;
        json_t *answer = json_loadb(h->body, h->body_len, 0, &jerr);
        if (status != 200 || !json_is_object(answer)) {
            const char *msg = json_string_value(json_object_get(answer, "error"));
            snprintf(h->error, sizeof h->error, "%s: HTTP %ld %s", cfg->endpoints[h->current], status,
                     msg != NULL ? msg : "(no JSON answer)");
            json_decref(answer);
            /* An unhealthy member (no leader, timed out) may be alone in its
             * trouble: the next request starts at the next endpoint. */
            h->current = (h->current + 1) % cfg->endpoint_count;
            result = HTTP_FAILED;
            break;
        }
        *reply = answer;
        result = HTTP_OK;
        break;
    }
    curl_slist_free_all(headers);
    if (result == HTTP_OK) {
        http_note_endpoint(h);
    } else {
        http_note_error(h);
    }
    return result;
}

/* POST a JSON request (consumed); authenticates first when configured. */
static http_result http_post(etcd_http *h, const char *path, json_t *request, json_t **reply) {
    *reply = NULL;
    char *body = request != NULL ? json_dumps(request, JSON_COMPACT) : NULL;
    json_decref(request);
    if (body == NULL) {
        snprintf(h->error, sizeof h->error, "out of memory building a request");
        return HTTP_UNREACHABLE;
    }
    if (h->cfg->user[0] != '\0' && h->token[0] == '\0' && http_authenticate(h) != 0) {
        free(body);
        return HTTP_UNREACHABLE;
    }
    http_result r = http_post_raw(h, path, body, reply, h->cfg->request_timeout_ms);
    /* etcd drops idle tokens (--auth-token-ttl): a refused token means the
     * request was not applied, so one retry with a fresh token is safe. */
    if (r == HTTP_FAILED && h->cfg->user[0] != '\0' && strstr(h->error, "invalid auth token") != NULL &&
        http_authenticate(h) == 0) {
        r = http_post_raw(h, path, body, reply, h->cfg->request_timeout_ms);
    }
    free(body);
    return r;
}

/* A transaction; *succeeded and *revision (the header's) when HTTP_OK. */
static http_result etcd_txn(etcd_http *h, json_t *compare, json_t *success, json_t *failure,
                            bool *succeeded, uint64_t *revision, json_t **reply) {
    json_t *req = json_pack("{s:o, s:o, s:o}", "compare", compare, "success", success, "failure",
                            failure != NULL ? failure : json_array());
    json_t *answer = NULL;
    http_result r = http_post(h, "/v3/kv/txn", req, &answer);
    *succeeded = false;
    *revision = 0;
    if (r == HTTP_OK) {
        *succeeded = json_is_true(json_object_get(answer, "succeeded"));
        *revision = jget_u64(json_object_get(answer, "header"), "revision");
    }
    if (reply != NULL) {
        *reply = answer;
    } else {
        json_decref(answer);
    }
    return r;
}

/* The kvs of the i-th range response of a txn answer (NULL: none). */
static json_t *txn_kvs(json_t *reply, size_t i, uint64_t *count) {
    json_t *range = json_object_get(json_array_get(json_object_get(reply, "responses"), i), "response_range");
    if (count != NULL) *count = jget_u64(range, "count");
    return json_object_get(range, "kvs");
}

/* ----------------------------------------------------------------- role */

/* Leave the leader role (if held): clients of later appends get READONLY and
 * the feed resumes. Revokes the lease through h so followers need not wait
 * out its TTL. */
/* term: the lease the caller saw when it began what failed (a keepalive, an
 * append), or 0 for any. A failure that began under an older term (this
 * replica stepped down and won again while it hung) says nothing of the
 * new one, so it steps nothing down: only an extra failover, never unsafe,
 * but needless. */
static void step_down(etcd_journal *j, etcd_http *h, int64_t term, const char *why) {
    lock(j);
    int64_t lease = j->lease_id;
    bool was_leader = atomic_load(&j->role) == BERTH_ETCD_LEADER && (term == 0 || term == lease);
    if (was_leader) {
        atomic_store(&j->role, BERTH_ETCD_FOLLOWER);
        j->lease_id = 0;
        j->leader_rev = 0;
        j->leader[0] = '\0';
        j->step_downs++;
        snprintf(j->last_error, sizeof j->last_error, "stepped down: %s", why);
    }
    int rc = pthread_cond_broadcast(&j->cond);
    assert(rc == 0);
    (void)rc;
    unlock(j);
    if (!was_leader) return;
    notify(j);
    if (lease != 0) {
        json_t *reply = NULL;
        http_result r = http_post(h, "/v3/lease/revoke", json_pack("{s:o}", "ID", ju64((uint64_t)lease)), &reply);
        (void)r;   /* best effort: an unrevoked lease simply runs out */
        json_decref(reply);
        lock(j);   /* a lease already gone is no news: keep the reason */
        snprintf(j->last_error, sizeof j->last_error, "stepped down: %s", why);
        unlock(j);
    }
}

/* ---------------------------------------------------------- local copy */

/* Wait for the pending local append; its error, sticky, if it failed. */
static berth_jerr local_wait(etcd_journal *j) {
    lock(j);
    while (j->local_busy) {
        int rc = pthread_cond_wait(&j->cond, &j->mutex);
        assert(rc == 0);
        (void)rc;
    }
    berth_jerr e = j->local_err;
    unlock(j);
    return e;
}

static berth_str local_copy_str(etcd_journal *j, berth_str s) {
    if (s.len == 0) return berth_str_make("", 0);
    assert(j->local_arena_used + s.len <= ETCD_LOCAL_ARENA_BYTES);
    char *p = (char *)j->local_arena + j->local_arena_used;
    memcpy(p, s.ptr, s.len);
    j->local_arena_used += s.len;
    return berth_str_make(p, s.len);
}

static void local_copy_touched(etcd_journal *j, berth_touched *dst, const berth_touched *src) {
    assert(src->worker_count <= BERTH_PLACEMENT_WORKERS_MAX);
    dst->instance = local_copy_str(j, src->instance);
    dst->worker_count = src->worker_count;
    dst->workers = NULL;
    if (src->worker_count == 0) return;
    size_t at = (j->local_arena_used + 7) & ~(size_t)7;
    size_t bytes = src->worker_count * sizeof(berth_str);
    assert(at + bytes <= ETCD_LOCAL_ARENA_BYTES);
    berth_str *workers = (berth_str *)(void *)(j->local_arena + at);
    j->local_arena_used = at + bytes;
    for (uint32_t w = 0; w < src->worker_count; w++) workers[w] = local_copy_str(j, src->workers[w]);
    dst->workers = workers;
}

/* Hand a batch etcd accepted to the local thread (the slot is free: the
 * caller waited). The engine reuses its own memory, so this is a copy. */
static void local_enqueue(etcd_journal *j, const berth_record *records, const berth_touched *touched,
                          size_t n, const uint8_t last_hash[BERTH_HASH_LEN]) {
    assert(n >= 1 && n <= BERTH_ETCD_TXN_RECORDS_MAX);
    j->local_arena_used = 0;
    for (size_t i = 0; i < n; i++) {
        berth_record *dst = &j->local_records[i];
        *dst = records[i];
        dst->actor = local_copy_str(j, records[i].actor);
        dst->reqid = local_copy_str(j, records[i].reqid);
        dst->command = local_copy_str(j, records[i].command);
        dst->sentence = local_copy_str(j, records[i].sentence);
        if (touched != NULL) local_copy_touched(j, &j->local_touched[i], &touched[i]);
    }
    lock(j);
    assert(!j->local_busy);
    j->local_n = (uint32_t)n;
    j->local_has_touched = touched != NULL;
    memcpy(j->local_expect, last_hash, BERTH_HASH_LEN);
    j->local_busy = true;
    int rc = pthread_cond_broadcast(&j->cond);
    assert(rc == 0);
    (void)rc;
    unlock(j);
}

static void *local_main(void *arg) {
    etcd_journal *j = arg;
    lock(j);
    for (;;) {
        while (!j->local_busy && !j->stop) {
            int rc = pthread_cond_wait(&j->cond, &j->mutex);
            assert(rc == 0);
            (void)rc;
        }
        if (!j->local_busy) break;
        uint32_t n = j->local_n;
        berth_touched *touched = j->local_has_touched ? j->local_touched : NULL;
        unlock(j);
        berth_jerr e = berth_journal_append(j->local, j->local_records, touched, n);
        uint64_t head = 0;
        uint8_t hash[BERTH_HASH_LEN];
        if (e == BERTH_J_OK) e = berth_journal_head(j->local, &head, hash);
        lock(j);
        /* The local backend encoded the same records: same bytes, same chain. */
        assert(e != BERTH_J_OK || (head == j->local_records[n - 1].seq &&
                                   memcmp(hash, j->local_expect, BERTH_HASH_LEN) == 0));
        if (e != BERTH_J_OK) {
            j->local_err = e;
            snprintf(j->last_error, sizeof j->last_error, "the local copy failed to take records etcd holds (%s)",
                     berth_jerr_name(e));
            int lrc = pthread_cond_broadcast(&j->lease_cond);   /* lease_main gives the lease up */
            assert(lrc == 0);
            (void)lrc;
        }
        j->local_busy = false;
        int rc = pthread_cond_broadcast(&j->cond);
        assert(rc == 0);
        (void)rc;
    }
    unlock(j);
    return NULL;
}

/* The local copy failed to take records etcd holds: memory, disk and etcd
 * can only agree again after a restart (which copies them from etcd), so
 * give up the lease and stop; berthd exits on seeing STOPPED. */
static void local_broken(etcd_journal *j, etcd_http *h) {
    step_down(j, h, 0, "the local copy failed to take records etcd holds");
    lock(j);
    atomic_store(&j->role, BERTH_ETCD_STOPPED);
    snprintf(j->last_error, sizeof j->last_error, "the local copy failed to take records etcd holds (%s)",
             berth_jerr_name(j->local_err));
    unlock(j);
    notify(j);
}

/* --------------------------------------------------------------- append */

/* The success branch of an append: every record under its key, chained
 * from prev (updated to the last record's hash), then the head. NULL when
 * a seq does not follow, the batch is over etcd's bytes, or memory ran
 * out (*err says which). */
static json_t *append_puts(etcd_journal *j, berth_record *records, size_t n, uint64_t head,
                           uint8_t prev[BERTH_HASH_LEN], berth_jerr *err) {
    etcd_http *h = &j->caller;
    json_t *puts = json_array();
    size_t total = 0;
    char key[ETCD_KEY_LEN_MAX];
    *err = BERTH_J_NOMEM;
    for (size_t i = 0; i < n && puts != NULL; i++) {
        berth_record *rec = &records[i];
        rec->version = BERTH_RECORD_VERSION;
        memcpy(rec->prev_hash, prev, BERTH_HASH_LEN);
        size_t len = rec->seq == head + 1 + i ? berth_record_encode(rec, j->scratch, sizeof j->scratch) : 0;
        total += len;
        if (len == 0 || total > BERTH_ETCD_TXN_BYTES_MAX) {
            *err = BERTH_J_INVALID;
            json_decref(puts);
            return NULL;
        }
        key_journal(&j->cfg, rec->seq, key, sizeof key);
        /* A put lost to memory would make the head vouch for a missing
         * record: any failure to build the request fails the batch. */
        if (json_array_append_new(puts, op_put(h, key, j->scratch, len, 0)) != 0) {
            json_decref(puts);
            return NULL;
        }
        memcpy(prev, rec->hash, BERTH_HASH_LEN);
    }
    char value[24];
    snprintf(value, sizeof value, "%" PRIu64, head + n);
    key_named(&j->cfg, "head", key, sizeof key);
    if (puts == NULL || json_array_append_new(puts, op_put(h, key, value, strlen(value), 0)) != 0) {
        json_decref(puts);
        return NULL;
    }
    assert(json_array_size(puts) == n + 1);
    *err = BERTH_J_OK;
    return puts;
}

/* The append got no yes from etcd (r: no answer, or !ok: the fence). le is
 * the previous batch's local append; term the lease it was sent under. */
static berth_jerr append_refused(etcd_journal *j, http_result r, berth_jerr le, int64_t term) {
    etcd_http *h = &j->caller;
    if (r == HTTP_OK) {
        lock(j);
        j->fence_refusals++;
        unlock(j);
    }
    if (le != BERTH_J_OK) {
        local_broken(j, h);
        return BERTH_J_CORRUPT;
    }
    if (r == HTTP_OK) {
        step_down(j, h, term, "etcd refused an append: the leader key or the head moved");
        return BERTH_J_READONLY;
    }
    if (strstr(h->error, "database space exceeded") != NULL) {
        /* etcd's quota: refused before it applied anything, and any leader
         * would be refused alike, so keep the lease. */
        return BERTH_J_FULL;
    }
    /* Unknown outcome: etcd may yet hold these records. As a follower we
     * learn what it holds; clients retry with their REQIDs. (Nothing was
     * sent only when no member took the connection.) */
    step_down(j, h, term, "an append got no answer from etcd");
    return r == HTTP_UNREACHABLE ? BERTH_J_IO : BERTH_J_INDOUBT;
}

/* Leader: one fenced etcd transaction; then the same records go to the
 * local copy on the local thread, while the next batch's transaction runs. */
static berth_jerr append_leader(etcd_journal *j, berth_record *records, const berth_touched *touched,
                                size_t n) {
    etcd_http *h = &j->caller;
    if (n > BERTH_ETCD_TXN_RECORDS_MAX) return BERTH_J_INVALID;
    uint8_t prev[BERTH_HASH_LEN];
    lock(j);
    int64_t leader_rev = j->leader_rev;
    int64_t term = j->lease_id;
    uint64_t head = j->chain_seq;
    memcpy(prev, j->chain_hash, BERTH_HASH_LEN);
    berth_jerr earlier = j->local_err;
    unlock(j);
    if (earlier != BERTH_J_OK) {   /* send nothing more to etcd */
        local_broken(j, h);
        return BERTH_J_CORRUPT;
    }
    if (leader_rev == 0) {   /* stepped down meanwhile */
        return local_wait(j) != BERTH_J_OK ? BERTH_J_CORRUPT : BERTH_J_READONLY;
    }
    berth_jerr e = BERTH_J_OK;
    json_t *puts = append_puts(j, records, n, head, prev, &e);
    if (puts == NULL) return e;
    char leader_key[ETCD_KEY_LEN_MAX];
    key_named(&j->cfg, "leader", leader_key, sizeof leader_key);
    json_t *compare = json_pack("[o, o]", compare_create(h, leader_key, (uint64_t)leader_rev),
                                compare_head(h, head));
    bool ok = false;
    uint64_t revision = 0;
    http_result r = etcd_txn(h, compare, puts, NULL, &ok, &revision, NULL);
    /* The previous batch's local append ran meanwhile. An engine that
     * rebuilds after a failure must find it on disk. */
    berth_jerr le = local_wait(j);
    if (r != HTTP_OK || !ok) return append_refused(j, r, le, term);
    uint64_t last = head + n;
    if (le == BERTH_J_OK) {
        local_enqueue(j, records, touched, n, prev);
    } else {
        /* etcd took this batch, so its clients are told so (OK); but the
         * local copy lacks the one before: stop. */
        local_broken(j, h);
    }
    lock(j);
    j->chain_seq = last;
    memcpy(j->chain_hash, prev, BERTH_HASH_LEN);
    j->txns++;
    if (j->etcd_head < last) j->etcd_head = last;
    unlock(j);
    return BERTH_J_OK;
}

/* Follower: only the records the feed handed out, byte for byte. */
static berth_jerr append_follower(etcd_journal *j, berth_record *records, const berth_touched *touched,
                                  size_t n) {
    lock(j);
    bool taken = j->feed == FEED_TAKEN;
    uint64_t first = j->feed_first;
    uint32_t count = j->feed_count;
    unlock(j);
    if (!taken) return BERTH_J_READONLY;
    uint64_t head = 0;
    uint8_t prev[BERTH_HASH_LEN];
    berth_jerr e = berth_journal_head(j->local, &head, prev);
    if (e != BERTH_J_OK) return e;
    for (size_t i = 0; i < n; i++) {
        berth_record *rec = &records[i];
        if (rec->seq != head + 1 + i || rec->seq < first || rec->seq - first >= count) return BERTH_J_READONLY;
        rec->version = BERTH_RECORD_VERSION;
        memcpy(rec->prev_hash, prev, BERTH_HASH_LEN);
        size_t len = berth_record_encode(rec, j->scratch, sizeof j->scratch);
        uint64_t at = rec->seq - first;
        if (len == 0 || len != j->feed_len[at] || memcmp(j->scratch, j->feed_bytes + j->feed_off[at], len) != 0) {
            return BERTH_J_CORRUPT;
        }
        memcpy(prev, rec->hash, BERTH_HASH_LEN);
    }
    return berth_journal_append(j->local, records, touched, n);
}

static berth_jerr etcd_append(berth_journal *base, berth_record *records, const berth_touched *touched,
                              size_t n) {
    etcd_journal *j = journal_of(base);
    assert(records != NULL && n >= 1);
    if (atomic_load(&j->role) == BERTH_ETCD_LEADER) return append_leader(j, records, touched, n);
    berth_jerr le = local_wait(j);
    if (le != BERTH_J_OK) return BERTH_J_CORRUPT;
    return append_follower(j, records, touched, n);
}

/* ------------------------------------------------------------ snapshots */

static void key_snapmeta(const etcd_config *cfg, uint64_t seq, char *out, size_t size) {
    int n = snprintf(out, size, "%ssnapmeta/%0*" PRIu64, cfg->prefix, ETCD_SEQ_DIGITS, seq);
    assert(n > 0 && (size_t)n < size);
    (void)n;
}

/* chunk < 0: the prefix of every chunk of seq; its range end is the same
 * with a '0' in place of the last '/'. */
static void key_snapchunk(const etcd_config *cfg, uint64_t seq, long chunk, char *out, size_t size) {
    int n = chunk < 0 ? snprintf(out, size, "%ssnapchunk/%0*" PRIu64 "/", cfg->prefix, ETCD_SEQ_DIGITS, seq)
                      : snprintf(out, size, "%ssnapchunk/%0*" PRIu64 "/%0*ld", cfg->prefix, ETCD_SEQ_DIGITS, seq,
                                 ETCD_CHUNK_DIGITS, chunk);
    assert(n > 0 && (size_t)n < size);
    (void)n;
}

static void sha256_hex(const uint8_t *bytes, size_t len, char out[2 * BERTH_HASH_LEN + 1]) {
    uint8_t md[BERTH_HASH_LEN];
    unsigned int md_len = 0;
    int ok = EVP_Digest(bytes, len, md, &md_len, EVP_sha256(), NULL);
    assert(ok == 1 && md_len == BERTH_HASH_LEN);
    (void)ok;
    for (size_t i = 0; i < BERTH_HASH_LEN; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* A berth snapshot as stored ends in the SHA-256 of the bytes before it. */
static bool snapshot_self_hash_ok(const uint8_t *bytes, size_t len) {
    if (len <= BERTH_HASH_LEN) return false;
    uint8_t md[BERTH_HASH_LEN];
    unsigned int md_len = 0;
    int ok = EVP_Digest(bytes, len - BERTH_HASH_LEN, md, &md_len, EVP_sha256(), NULL);
    return ok == 1 && md_len == BERTH_HASH_LEN && memcmp(md, bytes + len - BERTH_HASH_LEN, BERTH_HASH_LEN) == 0;
}

/* One transaction fenced like an append (the leader key still carries the
 * create revision this replica won): true when etcd applied success. */
static bool fenced_txn(etcd_journal *j, etcd_http *h, int64_t leader_rev, json_t *success) {
    char leader_key[ETCD_KEY_LEN_MAX];
    key_named(&j->cfg, "leader", leader_key, sizeof leader_key);
    json_t *compare = json_pack("[o]", compare_create(h, leader_key, (uint64_t)leader_rev));
    bool ok = false;
    uint64_t revision = 0;
    http_result r = etcd_txn(h, compare, success, NULL, &ok, &revision, NULL);
    return r == HTTP_OK && ok;
}

static json_t *op_delete_range(etcd_http *h, const char *key, const char *end) {
    json_t *del = json_pack("{s:o}", "key", jkey(h, key));
    if (del != NULL && end != NULL) json_object_set_new(del, "range_end", jkey(h, end));
    return json_pack("{s:o}", "request_delete_range", del);
}

/* Up to ETCD_SNAPSHOTS_LISTED_MAX manifests under snapmeta/, oldest first
 * or newest first: the kvs of the reply (caller decrefs *reply; etcd omits
 * an empty list, so NULL with *reply set means none). NULL with *reply NULL
 * when etcd did not answer. */
static json_t *snapshot_list(etcd_journal *j, etcd_http *h, bool keys_only, bool newest_first, json_t **reply) {
    char from[ETCD_KEY_LEN_MAX], end[ETCD_KEY_LEN_MAX];
    key_named(&j->cfg, "snapmeta/", from, sizeof from);
    key_named(&j->cfg, "snapmeta0", end, sizeof end);
    json_t *req = json_pack("{s:o, s:o, s:i, s:b, s:s, s:s}", "key", jkey(h, from), "range_end", jkey(h, end),
                            "limit", (json_int_t)ETCD_SNAPSHOTS_LISTED_MAX, "keys_only", keys_only ? 1 : 0,
                            "sort_order", newest_first ? "DESCEND" : "ASCEND", "sort_target", "KEY");
    *reply = NULL;
    if (http_post(h, "/v3/kv/range", req, reply) != HTTP_OK) {
        json_decref(*reply);
        *reply = NULL;
        return NULL;
    }
    json_t *kvs = json_object_get(*reply, "kvs");
    return json_is_array(kvs) ? kvs : NULL;
}

/* The seq a manifest key names; 0 when it is not one. */
static uint64_t snapmeta_seq(etcd_journal *j, const json_t *kv) {
    char key[ETCD_KEY_LEN_MAX];
    long klen = jget_b64(kv, "key", (uint8_t *)key, sizeof key - 1);
    if (klen <= 0) return 0;
    key[klen] = '\0';
    char prefix[ETCD_KEY_LEN_MAX];
    key_named(&j->cfg, "snapmeta/", prefix, sizeof prefix);
    size_t plen = strlen(prefix);
    if ((size_t)klen != plen + ETCD_SEQ_DIGITS || strncmp(key, prefix, plen) != 0) return 0;
    return strtoull(key + plen, NULL, 10);
}

/* Keep the newest BERTH_ETCD_SNAPSHOTS_KEPT_MAX: each older one's chunks
 * and manifest go in one fenced transaction. */
static void snapshot_prune(etcd_journal *j, etcd_http *h, int64_t leader_rev) {
    json_t *reply = NULL;
    json_t *kvs = snapshot_list(j, h, true, false, &reply);
    size_t n = json_array_size(kvs);
    for (size_t i = 0; i + BERTH_ETCD_SNAPSHOTS_KEPT_MAX < n; i++) {
        uint64_t seq = snapmeta_seq(j, json_array_get(kvs, i));
        if (seq == 0) continue;
        char meta[ETCD_KEY_LEN_MAX], from[ETCD_KEY_LEN_MAX], end[ETCD_KEY_LEN_MAX];
        key_snapmeta(&j->cfg, seq, meta, sizeof meta);
        key_snapchunk(&j->cfg, seq, -1, from, sizeof from);
        snprintf(end, sizeof end, "%s", from);
        end[strlen(end) - 1] = '0';   /* '/' + 1 */
        json_t *ops = json_pack("[o, o]", op_delete_range(h, meta, NULL), op_delete_range(h, from, end));
        if (!fenced_txn(j, h, leader_rev, ops)) break;   /* no longer leader, or etcd away: next time */
    }
    json_decref(reply);
}

/* The leader's snapshot at seq into etcd: chunks first, the manifest last,
 * so a manifest vouches only for chunks already there. Fenced, so a deposed
 * leader writes nothing; a snapshot cut short by a step-down has no
 * manifest and is never read (the next upload's prune does not see it:
 * such strays stay until the cluster prefix is removed). */
static void snapshot_upload(etcd_journal *j, uint64_t seq, const uint8_t *bytes, size_t len) {
    etcd_http *h = &j->feeder;
    assert(seq > 0 && bytes != NULL && len > 0);
    lock(j);
    int64_t leader_rev = atomic_load(&j->role) == BERTH_ETCD_LEADER ? j->leader_rev : 0;
    unlock(j);
    size_t chunks = (len + BERTH_ETCD_SNAPSHOT_CHUNK_BYTES - 1) / BERTH_ETCD_SNAPSHOT_CHUNK_BYTES;
    const char *why = NULL;
    if (leader_rev == 0) why = "no longer the leader";
    if (why == NULL && chunks > BERTH_ETCD_SNAPSHOT_CHUNKS_MAX) why = "it is over the chunk limit";
    char key[ETCD_KEY_LEN_MAX];
    for (size_t i = 0; why == NULL && i < chunks; i++) {
        size_t off = i * BERTH_ETCD_SNAPSHOT_CHUNK_BYTES;
        size_t part = len - off < BERTH_ETCD_SNAPSHOT_CHUNK_BYTES ? len - off : BERTH_ETCD_SNAPSHOT_CHUNK_BYTES;
        key_snapchunk(&j->cfg, seq, (long)i, key, sizeof key);
        json_t *put = json_pack("{s:o, s:o}", "key", jkey(h, key), "value",
                                json_stringn_nocheck("", 0));
        /* A chunk is far over one record's base64 buffer: encode it apart. */
        char *text = malloc(4 * ((part + 2) / 3) + 1);
        if (put == NULL || text == NULL) {
            json_decref(put);
            free(text);
            why = "out of memory";
            break;
        }
        int tn = EVP_EncodeBlock((unsigned char *)text, bytes + off, (int)part);
        assert(tn >= 0 && (size_t)tn == 4 * ((part + 2) / 3));
        /* A chunk put without its bytes would be caught by the manifest's
         * length, but is never sent: the upload stops instead. */
        int set = json_object_set_new(put, "value", json_stringn_nocheck(text, (size_t)tn));
        free(text);
        if (set != 0) {
            json_decref(put);
            why = "out of memory";
            break;
        }
        if (!fenced_txn(j, h, leader_rev, json_pack("[{s:o}]", "request_put", put))) why = "a chunk put was refused";
    }
    if (why == NULL) {
        char hex[2 * BERTH_HASH_LEN + 1];
        sha256_hex(bytes, len, hex);
        char manifest[ETCD_MANIFEST_LEN_MAX];
        int mn = snprintf(manifest, sizeof manifest, "v1 %" PRIu64 " %zu %zu %s", seq, len, chunks, hex);
        assert(mn > 0 && (size_t)mn < sizeof manifest);
        key_snapmeta(&j->cfg, seq, key, sizeof key);
        if (!fenced_txn(j, h, leader_rev, json_pack("[o]", op_put(h, key, manifest, (size_t)mn, 0)))) {
            why = "the manifest put was refused";
        }
    }
    lock(j);
    if (why == NULL) {
        j->snapshots_uploaded++;
        j->snapshot_upload_seq = seq;
    } else {
        snprintf(j->last_error, sizeof j->last_error, "snapshot %" PRIu64 " not written to etcd: %s", seq, why);
    }
    unlock(j);
    if (why == NULL) snapshot_prune(j, h, leader_rev);
}

/* Feed thread, leading: put the waiting snapshot (if any) in etcd. */
static void snapshot_upload_pending(etcd_journal *j) {
    lock(j);
    uint8_t *bytes = j->upload_bytes;
    size_t len = j->upload_len;
    uint64_t seq = j->upload_seq;
    j->upload_bytes = NULL;
    unlock(j);
    if (bytes == NULL) return;
    snapshot_upload(j, seq, bytes, len);
    free(bytes);
}

/* Read one snapshot named by its manifest into *out (malloc'd); NULL with
 * why when it is missing, short or hashes wrong. */
static uint8_t *snapshot_load(etcd_journal *j, etcd_http *h, uint64_t seq, const char *manifest, size_t *out_len,
                              char *why, size_t why_size) {
    uint64_t mseq = 0;
    size_t len = 0, chunks = 0;
    char hex[2 * BERTH_HASH_LEN + 2] = "";
    if (sscanf(manifest, "v1 %" SCNu64 " %zu %zu %65s", &mseq, &len, &chunks, hex) != 4 || mseq != seq ||
        len == 0 || chunks == 0 || chunks > BERTH_ETCD_SNAPSHOT_CHUNKS_MAX ||
        chunks != (len + BERTH_ETCD_SNAPSHOT_CHUNK_BYTES - 1) / BERTH_ETCD_SNAPSHOT_CHUNK_BYTES ||
        strlen(hex) != 2 * BERTH_HASH_LEN) {
        berth_jsay(why, why_size, "its manifest does not parse");
        return NULL;
    }
    uint8_t *bytes = malloc(len + 3);   /* base64 decodes whole groups of 3 */
    if (bytes == NULL) {
        berth_jsay(why, why_size, "out of memory for %zu bytes", len);
        return NULL;
    }
    char key[ETCD_KEY_LEN_MAX];
    size_t off = 0;
    for (size_t i = 0; i < chunks; i++) {
        key_snapchunk(&j->cfg, seq, (long)i, key, sizeof key);
        json_t *reply = NULL;
        if (http_post(h, "/v3/kv/range", json_pack("{s:o}", "key", jkey(h, key)), &reply) != HTTP_OK) {
            berth_jsay(why, why_size, "etcd did not answer for chunk %zu: %s", i, h->error);
            json_decref(reply);
            free(bytes);
            return NULL;
        }
        json_t *kv = json_array_get(json_object_get(reply, "kvs"), 0);
        size_t want = len - off < BERTH_ETCD_SNAPSHOT_CHUNK_BYTES ? len - off : BERTH_ETCD_SNAPSHOT_CHUNK_BYTES;
        long got = kv != NULL ? jget_b64(kv, "value", bytes + off, len + 3 - off) : -1;
        json_decref(reply);
        if (got < 0 || (size_t)got != want) {
            berth_jsay(why, why_size, "chunk %zu is missing or not %zu bytes long", i, want);
            free(bytes);
            return NULL;
        }
        off += want;
    }
    char have[2 * BERTH_HASH_LEN + 1];
    sha256_hex(bytes, len, have);
    if (strcmp(have, hex) != 0 || !snapshot_self_hash_ok(bytes, len)) {
        berth_jsay(why, why_size, "its bytes do not hash to the manifest's SHA-256");
        free(bytes);
        return NULL;
    }
    *out_len = len;
    return bytes;
}

berth_jerr berth_etcd_snapshot_fetch(berth_journal *journal, uint64_t max_seq, uint64_t *seq, uint8_t **bytes,
                                     size_t *len, uint32_t *skipped, char *err, size_t err_size) {
    etcd_journal *j = journal_of(journal);
    assert(seq != NULL && bytes != NULL && len != NULL && skipped != NULL);
    *seq = 0;
    *bytes = NULL;
    *len = 0;
    lock(j);
    bool idle = !j->threads_started;
    unlock(j);
    if (!idle) return BERTH_J_INVALID;
    etcd_http *h = &j->caller;
    json_t *reply = NULL;
    json_t *kvs = snapshot_list(j, h, false, true, &reply);
    if (reply == NULL) {
        berth_jsay(err, err_size, "etcd is unreachable: %s", h->error);
        return BERTH_J_IO;
    }
    char manifest[ETCD_MANIFEST_LEN_MAX];
    char why[BERTH_ETCD_ERR_LEN_MAX];
    berth_jerr e = BERTH_J_NOTFOUND;
    for (size_t i = 0; i < json_array_size(kvs) && e == BERTH_J_NOTFOUND; i++) {
        json_t *kv = json_array_get(kvs, i);
        uint64_t s = snapmeta_seq(j, kv);
        if (s == 0 || s > max_seq) continue;
        long mlen = jget_b64(kv, "value", (uint8_t *)manifest, sizeof manifest - 1);
        manifest[mlen > 0 ? mlen : 0] = '\0';
        why[0] = '\0';
        *bytes = snapshot_load(j, h, s, manifest, len, why, sizeof why);
        if (*bytes != NULL) {
            *seq = s;
            e = BERTH_J_OK;
        } else {
            (*skipped)++;
            berth_jsay(err, err_size, "snapshot %" PRIu64 " in etcd skipped: %s", s, why);
        }
    }
    json_decref(reply);
    return e;
}

/* ----------------------------------------------------------------- feed */

/* Check and store one fetched record at slot i; false when it does not
 * follow (seq, chain, hash). */
/* Record bytes from etcd must be seq, chain onto prev (then prev moves to
 * their hash) and hash right. */
static bool record_follows(uint64_t seq, const uint8_t *bytes, size_t len, uint8_t prev[BERTH_HASH_LEN],
                           char *why, size_t why_size) {
    berth_record rec;
    if (berth_record_decode(bytes, len, &rec, why, why_size) != BERTH_J_OK) return false;
    if (rec.seq != seq || memcmp(rec.prev_hash, prev, BERTH_HASH_LEN) != 0 || !berth_record_hash_ok(bytes, len)) {
        berth_jsay(why, why_size, "record %" PRIu64 " in etcd does not chain onto the local copy", seq);
        return false;
    }
    memcpy(prev, rec.hash, BERTH_HASH_LEN);
    return true;
}

/* Put bytes in slot i of a record buffer (slots are packed in order). */
static void slot_store(uint8_t *buf, size_t *off, size_t *lens, uint32_t i, const uint8_t *bytes, size_t len) {
    assert(i < BERTH_ETCD_FEED_RECORDS_MAX && len <= BERTH_RECORD_BYTES_MAX);
    size_t at = i == 0 ? 0 : off[i - 1] + lens[i - 1];
    memcpy(buf + at, bytes, len);
    off[i] = at;
    lens[i] = len;
}

static bool feed_store(etcd_journal *j, uint32_t i, uint64_t seq, const uint8_t *bytes, size_t len,
                       uint8_t prev[BERTH_HASH_LEN], char *why, size_t why_size) {
    if (!record_follows(seq, bytes, len, prev, why, why_size)) return false;
    slot_store(j->feed_bytes, j->feed_off, j->feed_len, i, bytes, len);
    return true;
}

/* Move the staged records into the feed if it is free; caller holds the
 * mutex. true when it did (the loop should be told). */
static bool stage_promote_locked(etcd_journal *j) {
    if (j->feed != FEED_EMPTY || j->stage_count == 0) return false;
    uint8_t *bytes = j->feed_bytes;
    j->feed_bytes = j->stage_bytes;
    j->stage_bytes = bytes;
    memcpy(j->feed_off, j->stage_off, sizeof j->feed_off);
    memcpy(j->feed_len, j->stage_len, sizeof j->feed_len);
    j->feed_first = j->stage_first;
    j->feed_count = j->stage_count;
    j->feed_records += j->stage_count;
    j->stage_count = 0;
    j->feed = FEED_READY;
    return true;
}

static void feed_stop_fatal(etcd_journal *j, const char *why) {
    lock(j);
    atomic_store(&j->role, BERTH_ETCD_STOPPED);
    snprintf(j->last_error, sizeof j->last_error, "%s", why);
    unlock(j);
    notify(j);
}

/* Parse a fetched journal range into the feed. Returns records stored, or
 * -1 when etcd's journal does not continue the local one. */
static long feed_fill(etcd_journal *j, json_t *kvs, uint64_t head, const uint8_t head_hash[BERTH_HASH_LEN]) {
    etcd_http *h = &j->feeder;
    uint8_t prev[BERTH_HASH_LEN];
    memcpy(prev, head_hash, BERTH_HASH_LEN);
    size_t n = json_array_size(kvs);
    assert(n <= BERTH_ETCD_FEED_RECORDS_MAX);
    char why[BERTH_ETCD_ERR_LEN_MAX] = "";
    char want[ETCD_KEY_LEN_MAX];
    uint8_t keybuf[ETCD_KEY_LEN_MAX];
    for (size_t i = 0; i < n; i++) {
        json_t *kv = json_array_get(kvs, i);
        uint64_t seq = head + 1 + i;
        key_journal(&j->cfg, seq, want, sizeof want);
        long klen = jget_b64(kv, "key", keybuf, sizeof keybuf - 1);
        long vlen = jget_b64(kv, "value", h->raw, sizeof h->raw);
        if (klen < 0 || (size_t)klen != strlen(want) || memcmp(keybuf, want, (size_t)klen) != 0) {
            berth_jsay(why, sizeof why, "etcd's journal has a gap: seq %" PRIu64 " is missing", seq);
            feed_stop_fatal(j, why);
            return -1;
        }
        if (vlen <= 0 || !feed_store(j, (uint32_t)i, seq, h->raw, (size_t)vlen, prev, why, sizeof why)) {
            feed_stop_fatal(j, why[0] != '\0' ? why : "a record in etcd does not decode");
            return -1;
        }
    }
    return (long)n;
}

typedef struct watch_ctx {
    etcd_journal *j;
    char *buf;          /* owned */
    size_t len;
    size_t cap;
    bool end;           /* stop streaming: read again (or campaign) */
    uint64_t next_seq;  /* the record the stream must bring next */
    uint8_t prev[BERTH_HASH_LEN];
    char journal_prefix[ETCD_KEY_LEN_MAX];
    char leader_key[ETCD_KEY_LEN_MAX];
} watch_ctx;

/* A journal record from the stream: checked, then staged. false ends the
 * stream (out of order, stage full: a read catches up instead). */
static bool watch_record(watch_ctx *w, uint64_t seq, json_t *kv) {
    etcd_journal *j = w->j;
    etcd_http *h = &j->feeder;
    if (seq != w->next_seq) return false;
    long vlen = jget_b64(kv, "value", h->raw, sizeof h->raw);
    char why[BERTH_ETCD_ERR_LEN_MAX] = "";
    if (vlen <= 0 || !record_follows(seq, h->raw, (size_t)vlen, w->prev, why, sizeof why)) {
        feed_stop_fatal(j, why[0] != '\0' ? why : "a record in etcd does not decode");
        return false;
    }
    lock(j);
    bool promoted = j->stage_count == BERTH_ETCD_FEED_RECORDS_MAX && stage_promote_locked(j);
    bool room = j->stage_count < BERTH_ETCD_FEED_RECORDS_MAX;
    if (room) {
        if (j->stage_count == 0) j->stage_first = seq;
        slot_store(j->stage_bytes, j->stage_off, j->stage_len, j->stage_count, h->raw, (size_t)vlen);
        j->stage_count++;
        if (j->etcd_head < seq) j->etcd_head = seq;
    }
    unlock(j);
    if (promoted) notify(j);
    w->next_seq += room ? 1 : 0;
    return room;
}

/* One event: records go to the stage, the leader key's value is noted, and
 * its deletion ends the stream so the caller can campaign. */
static bool watch_event(watch_ctx *w, json_t *ev) {
    json_t *kv = json_object_get(ev, "kv");
    char key[ETCD_KEY_LEN_MAX];
    long klen = jget_b64(kv, "key", (uint8_t *)key, sizeof key - 1);
    if (klen <= 0) return false;
    key[klen] = '\0';
    bool deleted = json_is_string(json_object_get(ev, "type")) &&
                   strcmp(json_string_value(json_object_get(ev, "type")), "DELETE") == 0;
    size_t plen = strlen(w->journal_prefix);
    if (strncmp(key, w->journal_prefix, plen) == 0) {
        return !deleted && watch_record(w, strtoull(key + plen, NULL, 10), kv);
    }
    if (strcmp(key, w->leader_key) == 0) {
        if (deleted) return false;
        char leader[BERTH_ETCD_ADDR_LEN_MAX];
        long llen = jget_b64(kv, "value", (uint8_t *)leader, sizeof leader - 1);
        leader[llen > 0 ? llen : 0] = '\0';
        lock(w->j);
        if (atomic_load(&w->j->role) == BERTH_ETCD_FOLLOWER) snprintf(w->j->leader, sizeof w->j->leader, "%s", leader);
        unlock(w->j);
    }
    return true;   /* head, or anything else under the prefix */
}

/* One stream message. false ends the stream. */
static bool watch_message(watch_ctx *w, json_t *msg) {
    json_t *result = json_object_get(msg, "result");
    if (result == NULL || json_is_true(json_object_get(result, "canceled"))) return false;
    json_t *events = json_object_get(result, "events");
    for (size_t i = 0; i < json_array_size(events); i++) {
        if (!watch_event(w, json_array_get(events, i))) return false;
    }
    lock(w->j);
    bool promoted = stage_promote_locked(w->j);
    unlock(w->j);
    if (promoted) notify(w->j);
    return true;
}

static size_t watch_collect(char *data, size_t size, size_t nmemb, void *arg) {
    watch_ctx *w = arg;
    size_t n = size * nmemb;
    if (w->len + n + 1 > ETCD_WATCH_BYTES_MAX) return 0;
    if (w->len + n + 1 > w->cap) {
        size_t cap = w->cap == 0 ? 16384 : w->cap;
        while (cap < w->len + n + 1) cap *= 2;
        char *grown = realloc(w->buf, cap);
        if (grown == NULL) return 0;
        w->buf = grown;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, data, n);
    w->len += n;
    size_t used = 0;
    while (used < w->len && !w->end) {
        json_error_t jerr;
        json_t *msg = json_loadb(w->buf + used, w->len - used, JSON_DISABLE_EOF_CHECK, &jerr);
        if (msg == NULL) break;   /* incomplete: wait for more */
        used += (size_t)jerr.position;
        w->end = !watch_message(w, msg);
        json_decref(msg);
        while (used < w->len && (w->buf[used] == '\n' || w->buf[used] == '\r' || w->buf[used] == ' ')) used++;
    }
    memmove(w->buf, w->buf + used, w->len - used);
    w->len -= used;
    return w->end ? 0 : n;   /* 0 aborts the transfer */
}

static int watch_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
    watch_ctx *w = arg;
    lock(w->j);
    bool stop = w->j->stop;
    unlock(w->j);
    (void)dt; (void)dn; (void)ut; (void)un;
    return stop ? 1 : 0;
}

/* Caught up at revision with the local head at head/head_hash: stream what
 * changes under the prefix from there, staging each new record for the loop
 * as it commits, until ms pass, the stream breaks or ends (the caller then
 * reads from its head again: a resume), or the leader key goes. */
static void feed_stream(etcd_journal *j, uint64_t revision, uint64_t head,
                        const uint8_t head_hash[BERTH_HASH_LEN], uint32_t ms) {
    etcd_http *h = &j->feeder;
    const etcd_config *cfg = &j->cfg;
    char end[ETCD_PREFIX_LEN_MAX];
    snprintf(end, sizeof end, "%s", cfg->prefix);
    end[strlen(end) - 1] = '0';   /* '/' + 1: the prefix's range end */
    json_t *create = json_pack("{s:o, s:o, s:o}", "key", jkey(h, cfg->prefix), "range_end", jkey(h, end),
                               "start_revision", ju64(revision + 1));
    json_t *req = json_pack("{s:o}", "create_request", create);
    char *body = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    struct curl_slist *headers = http_headers(h);
    watch_ctx w = { .j = j, .next_seq = head + 1 };
    memcpy(w.prev, head_hash, BERTH_HASH_LEN);
    key_named(cfg, "journal/", w.journal_prefix, sizeof w.journal_prefix);
    key_named(cfg, "leader", w.leader_key, sizeof w.leader_key);
    if (body != NULL && headers != NULL) {
        char url[ETCD_URL_LEN_MAX + 64];
        snprintf(url, sizeof url, "%s/v3/watch", cfg->endpoints[h->current]);
        CURL *c = h->curl;
        curl_easy_reset(c);
        CURLcode rc = curl_easy_setopt(c, CURLOPT_URL, url);
        if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
        if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, watch_collect);
        if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_WRITEDATA, &w);
        if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, watch_progress);
        if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_XFERINFODATA, &w);
        if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)ms);
        if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)connect_timeout_ms(cfg));
        if (rc == CURLE_OK && cfg->cacert[0] != '\0') rc = curl_easy_setopt(c, CURLOPT_CAINFO, cfg->cacert);
        if (rc == CURLE_OK && cfg->cert[0] != '\0') rc = curl_easy_setopt(c, CURLOPT_SSLCERT, cfg->cert);
        if (rc == CURLE_OK && cfg->key[0] != '\0') rc = curl_easy_setopt(c, CURLOPT_SSLKEY, cfg->key);
        if (rc == CURLE_OK) rc = curl_easy_perform(c);
        if (rc != CURLE_OK && rc != CURLE_WRITE_ERROR && rc != CURLE_OPERATION_TIMEDOUT &&
            rc != CURLE_ABORTED_BY_CALLBACK) {
            /* This endpoint cannot watch: the next wait tries the next one,
             * after a pause so a dead cluster is not spun on. */
            h->current = (h->current + 1) % cfg->endpoint_count;
            lock(j);
            if (!j->stop) wait_ms(j, ETCD_FEED_RETRY_MS);
            unlock(j);
        }
    }
    curl_slist_free_all(headers);
    free(body);
    free(w.buf);
}

/* Try to become leader: leader key absent and etcd's head equals ours. */
static void feed_campaign(etcd_journal *j, uint64_t head) {
    etcd_http *h = &j->feeder;
    json_t *reply = NULL;
    json_t *req = json_pack("{s:i}", "TTL", (json_int_t)j->cfg.lease_ttl_s);
    if (http_post(h, "/v3/lease/grant", req, &reply) != HTTP_OK) return;
    int64_t lease = (int64_t)jget_u64(reply, "ID");
    json_decref(reply);
    if (lease == 0) return;
    uint64_t granted_ns = mono_ns();
    char leader_key[ETCD_KEY_LEN_MAX];
    key_named(&j->cfg, "leader", leader_key, sizeof leader_key);
    json_t *compare = json_pack("[o, o]", compare_create(h, leader_key, 0), compare_head(h, head));
    json_t *success = json_pack("[o]", op_put(h, leader_key, j->cfg.advertise, strlen(j->cfg.advertise), lease));
    bool won = false;
    uint64_t revision = 0;
    http_result r = etcd_txn(h, compare, success, NULL, &won, &revision, NULL);
    uint64_t local_seq = 0;
    uint8_t local_hash[BERTH_HASH_LEN];
    berth_jerr le = berth_journal_head(j->local, &local_seq, local_hash);
    if (r == HTTP_OK && won && le == BERTH_J_OK && local_seq == head) {
        lock(j);
        j->chain_seq = head;
        memcpy(j->chain_hash, local_hash, BERTH_HASH_LEN);
        atomic_store(&j->role, BERTH_ETCD_LEADER);
        j->lease_id = lease;
        j->leader_rev = (int64_t)revision;
        j->renewed_ns = granted_ns;
        j->elections_won++;
        snprintf(j->leader, sizeof j->leader, "%s", j->cfg.advertise);
        int rc = pthread_cond_broadcast(&j->cond);
        assert(rc == 0);
        (void)rc;
        unlock(j);
        notify(j);
        return;
    }
    reply = NULL;
    http_result rr = http_post(h, "/v3/lease/revoke", json_pack("{s:o}", "ID", ju64((uint64_t)lease)), &reply);
    (void)rr;   /* best effort: it runs out by itself */
    json_decref(reply);
}

/* What one fetch saw. */
typedef struct fetch_result {
    berth_jerr err;         /* OK; IO (etcd unreachable); CORRUPT (no longer a prefix) */
    long got;               /* records now in the feed (READY when > 0) */
    bool leader_present;
    uint64_t head;          /* the local head it fetched after */
    uint8_t head_hash[BERTH_HASH_LEN];
    uint64_t revision;      /* etcd's revision of the read */
} fetch_result;

/* Read the leader key and the records after the local head in one
 * transaction (one consistent revision) into the feed. */
static fetch_result feed_fetch(etcd_journal *j, etcd_http *h) {
    fetch_result fr = { .err = BERTH_J_OK };
    fr.err = local_wait(j);   /* a leader that just stepped down may still be writing */
    if (fr.err == BERTH_J_OK) fr.err = berth_journal_head(j->local, &fr.head, fr.head_hash);
    if (fr.err != BERTH_J_OK) return fr;
    char leader_key[ETCD_KEY_LEN_MAX], from[ETCD_KEY_LEN_MAX], end[ETCD_KEY_LEN_MAX];
    key_named(&j->cfg, "leader", leader_key, sizeof leader_key);
    key_journal(&j->cfg, fr.head + 1, from, sizeof from);
    key_named(&j->cfg, "journal0", end, sizeof end);   /* '/' + 1 ends journal/ */
    json_t *ops = json_pack("[o, o]", op_range(h, leader_key, NULL, 0),
                            op_range(h, from, end, BERTH_ETCD_FEED_RECORDS_MAX));
    json_t *reply = NULL;
    bool ok = false;
    if (etcd_txn(h, json_array(), ops, NULL, &ok, &fr.revision, &reply) != HTTP_OK || !ok) {
        json_decref(reply);
        fr.err = BERTH_J_IO;
        return fr;
    }
    json_t *leader_kv = json_array_get(txn_kvs(reply, 0, NULL), 0);
    fr.leader_present = leader_kv != NULL;
    char leader[BERTH_ETCD_ADDR_LEN_MAX] = "";
    long llen = leader_kv != NULL ? jget_b64(leader_kv, "value", (uint8_t *)leader, sizeof leader - 1) : 0;
    leader[llen > 0 ? llen : 0] = '\0';
    uint64_t remaining = 0;
    json_t *kvs = txn_kvs(reply, 1, &remaining);
    lock(j);
    if (atomic_load(&j->role) == BERTH_ETCD_FOLLOWER) snprintf(j->leader, sizeof j->leader, "%s", leader);
    j->etcd_head = fr.head + remaining;
    unlock(j);
    fr.got = feed_fill(j, kvs, fr.head, fr.head_hash);
    json_decref(reply);
    if (fr.got < 0) {
        fr.err = BERTH_J_CORRUPT;
        return fr;
    }
    if (fr.got > 0) {
        lock(j);
        j->feed_first = fr.head + 1;
        j->feed_count = (uint32_t)fr.got;
        j->feed = FEED_READY;
        j->feed_records += (uint64_t)fr.got;
        unlock(j);
    }
    return fr;
}

/* Pace live reads to ETCD_FEED_PACE_MS apart (catch-up reads, which come
 * back full, are not paced: see feed_round). */
static void feed_pace(etcd_journal *j) {
    uint64_t since = mono_ns() - j->feed_last_ns;
    uint64_t pace = (uint64_t)ETCD_FEED_PACE_MS * 1000000u;
    if (since < pace) {
        lock(j);
        if (!j->stop) wait_ms(j, (uint32_t)((pace - since) / 1000000u) + 1);
        unlock(j);
    }
    j->feed_last_ns = mono_ns();
}

/* One round of the follower: fetch what is new, or campaign, or wait. */
static void feed_round(etcd_journal *j) {
    feed_pace(j);
    fetch_result fr = feed_fetch(j, &j->feeder);
    if (fr.got == BERTH_ETCD_FEED_RECORDS_MAX) j->feed_last_ns = 0;   /* more is waiting: no pause */
    if (fr.err == BERTH_J_CORRUPT) return;   /* feed_fill stopped the role */
    if (fr.err != BERTH_J_OK) {
        lock(j);
        wait_ms(j, ETCD_FEED_RETRY_MS);
        unlock(j);
        return;
    }
    if (fr.got > 0) {
        notify(j);
        return;
    }
    if (!fr.leader_present && j->cfg.advertise[0] != '\0') {
        feed_campaign(j, fr.head);
        if (atomic_load(&j->role) == BERTH_ETCD_LEADER) return;
    }
    feed_stream(j, fr.revision, fr.head, fr.head_hash, ETCD_WATCH_STREAM_MS);
}

berth_jerr berth_etcd_fetch(berth_journal *journal, uint32_t *count, char *err, size_t err_size) {
    etcd_journal *j = journal_of(journal);
    assert(count != NULL);
    *count = 0;
    lock(j);
    bool idle = !j->threads_started && j->feed == FEED_EMPTY;
    unlock(j);
    if (!idle) return BERTH_J_INVALID;
    fetch_result fr = feed_fetch(j, &j->caller);
    if (fr.err == BERTH_J_IO) berth_jsay(err, err_size, "etcd is unreachable: %s", j->caller.error);
    if (fr.err == BERTH_J_CORRUPT) {
        lock(j);
        berth_jsay(err, err_size, "%s", j->last_error);
        unlock(j);
    }
    if (fr.err == BERTH_J_OK) *count = (uint32_t)fr.got;
    return fr.err;
}

static void *feed_main(void *arg) {
    etcd_journal *j = arg;
    for (;;) {
        lock(j);
        if (j->stop) {
            unlock(j);
            return NULL;
        }
        bool upload = atomic_load(&j->role) == BERTH_ETCD_LEADER && j->upload_bytes != NULL;
        /* Records staged by a stream that ended go to the loop first. */
        bool promoted = stage_promote_locked(j);
        bool idle = atomic_load(&j->role) != BERTH_ETCD_FOLLOWER || j->feed != FEED_EMPTY ||
                    j->stage_count > 0;
        if (idle && !promoted && !upload) wait_ms(j, ETCD_FEED_IDLE_MS);
        unlock(j);
        if (promoted) notify(j);
        if (upload) snapshot_upload_pending(j);
        if (!idle) feed_round(j);
    }
}

bool berth_etcd_feed_take(berth_journal *journal, berth_etcd_feed *out) {
    etcd_journal *j = journal_of(journal);
    assert(out != NULL);
    lock(j);
    bool ready = j->feed == FEED_READY;
    if (ready) {
        j->feed = FEED_TAKEN;
        out->first_seq = j->feed_first;
        out->count = j->feed_count;
        for (uint32_t i = 0; i < j->feed_count; i++) {
            out->raw[i] = j->feed_bytes + j->feed_off[i];
            out->len[i] = j->feed_len[i];
        }
    }
    unlock(j);
    return ready;
}

void berth_etcd_feed_done(berth_journal *journal) {
    etcd_journal *j = journal_of(journal);
    lock(j);
    assert(j->feed == FEED_TAKEN);
    j->feed = FEED_EMPTY;
    j->feed_count = 0;
    bool promoted = stage_promote_locked(j);
    int rc = pthread_cond_broadcast(&j->cond);
    assert(rc == 0);
    (void)rc;
    unlock(j);
    if (promoted) notify(j);   /* the stream staged more meanwhile */
}

/* ---------------------------------------------------------------- lease */

/* Renew the lease; step down when etcd says it is gone, or when no renewal
 * got through for a whole TTL (it may be gone: the fence would say so). */
/* One look at the lease. Returns false when a keepalive failed and the lease
 * still holds: the next try should come soon, not a third of the lease on. */
static bool lease_round(etcd_journal *j) {
    etcd_http *h = &j->leaser;
    lock(j);
    int64_t lease = j->lease_id;
    uint64_t renewed = j->renewed_ns;
    berth_jerr local_err = j->local_err;
    unlock(j);
    if (lease == 0 || atomic_load(&j->role) != BERTH_ETCD_LEADER) return true;
    if (local_err != BERTH_J_OK) {
        /* The local thread failed to take records etcd holds (it broadcast
         * the news, which woke this thread): give the lease up now rather
         * than at the next append, which may never come, while every read
         * fails meanwhile and no follower can take over. */
        local_broken(j, h);
        return true;
    }
    json_t *reply = NULL;
    http_result r = http_post(h, "/v3/lease/keepalive", json_pack("{s:o}", "ID", ju64((uint64_t)lease)), &reply);
    uint64_t ttl = r == HTTP_OK ? jget_u64(json_object_get(reply, "result"), "TTL") : 0;
    json_decref(reply);
    uint64_t now = mono_ns();
    if (r == HTTP_OK && ttl == 0) {
        step_down(j, h, lease, "the lease expired");
        return true;
    }
    if (r == HTTP_OK) {
        lock(j);
        if (j->lease_id == lease) j->renewed_ns = now;
        unlock(j);
        return true;
    }
    if (now - renewed > (uint64_t)j->cfg.lease_ttl_s * 1000000000u) {
        step_down(j, h, lease, "the lease could not be renewed within its TTL");
        return true;
    }
    return false;
}

/* A keepalive every third of the lease, or a tenth of it after one failed.
 * It waits on a condition variable of its own: before session 22 it shared
 * the one every local append broadcasts and sent a keepalive at each
 * wake-up, about one per write under load (3,294 for 3,000 pipelined
 * writes), work for etcd that took from its appends. It ends early only
 * for the stop, or for a local append that failed while leading
 * (lease_round gives the lease up). */
static void *lease_main(void *arg) {
    etcd_journal *j = arg;
    uint64_t every_ns = (uint64_t)j->cfg.lease_ttl_s * 1000000000u / 3u;
    uint64_t retry_ns = (uint64_t)j->cfg.lease_ttl_s * 1000000000u / 10u;
    bool renewed = true;
    for (;;) {
        lock(j);
        uint64_t due_ns = mono_ns() + (renewed ? every_ns : retry_ns);
        for (;;) {
            bool urgent = j->local_err != BERTH_J_OK && atomic_load(&j->role) == BERTH_ETCD_LEADER;
            uint64_t now_ns = mono_ns();
            if (j->stop || urgent || now_ns >= due_ns) break;
            wait_ms_on(j, &j->lease_cond, (uint32_t)((due_ns - now_ns + 999999u) / 1000000u));
        }
        bool stop = j->stop;
        unlock(j);
        if (stop) return NULL;
        renewed = lease_round(j);
    }
}

/* ------------------------------------------------------------- the ops */

static void etcd_close(berth_journal *base) {
    etcd_journal *j = journal_of(base);
    if (j->threads_started) {
        lock(j);
        j->stop = true;
        wake_all(j);
        unlock(j);
        int rc = pthread_join(j->feed_thread, NULL);
        assert(rc == 0);
        rc = pthread_join(j->lease_thread, NULL);
        assert(rc == 0);
        rc = pthread_join(j->local_thread, NULL);   /* after the pending append */
        assert(rc == 0);
        (void)rc;
    }
    if (atomic_load(&j->role) == BERTH_ETCD_LEADER && j->caller.curl != NULL) {
        step_down(j, &j->caller, 0, "closing");
    }
    http_free(&j->caller);
    http_free(&j->feeder);
    http_free(&j->leaser);
    berth_journal_close(j->local);
    free(j->feed_bytes);
    free(j->stage_bytes);
    free(j->local_records);
    free(j->local_touched);
    free(j->local_arena);
    free(j->upload_bytes);
    int rc = pthread_cond_destroy(&j->cond);
    assert(rc == 0);
    rc = pthread_cond_destroy(&j->lease_cond);
    assert(rc == 0);
    rc = pthread_mutex_destroy(&j->mutex);
    assert(rc == 0);
    (void)rc;
    free(j);
}

static berth_jerr etcd_head(berth_journal *base, uint64_t *seq, uint8_t hash[BERTH_HASH_LEN]) {
    etcd_journal *j = journal_of(base);
    berth_jerr e = local_wait(j);
    return e != BERTH_J_OK ? e : berth_journal_head(j->local, seq, hash);
}

/* Every replica keeps its snapshots locally (they shorten its own start);
 * the leader's also go to etcd, on the feed thread so the loop never waits
 * for them, for a replica that rebuilds its copy from etcd. */
static berth_jerr etcd_snapshot_put(berth_journal *base, uint64_t seq, const void *bytes, size_t len) {
    etcd_journal *j = journal_of(base);
    berth_jerr e = local_wait(j);
    if (e == BERTH_J_OK) e = berth_journal_snapshot_put(j->local, seq, bytes, len);
    if (e != BERTH_J_OK || atomic_load(&j->role) != BERTH_ETCD_LEADER || !j->threads_started) return e;
    uint8_t *copy = malloc(len);
    if (copy == NULL) return BERTH_J_OK;   /* etcd's copy is an optimisation: the local one stands */
    memcpy(copy, bytes, len);
    lock(j);
    free(j->upload_bytes);   /* an older one still waiting is superseded */
    j->upload_bytes = copy;
    j->upload_len = len;
    j->upload_seq = seq;
    int rc = pthread_cond_broadcast(&j->cond);
    assert(rc == 0);
    (void)rc;
    unlock(j);
    return BERTH_J_OK;
}

static berth_jerr etcd_size(berth_journal *base, berth_journal_sizes *out) {
    etcd_journal *j = journal_of(base);
    berth_jerr e = local_wait(j);
    return e != BERTH_J_OK ? e : berth_journal_size(j->local, out);
}

/* Readers are the local copy's own: journal.c dispatches on their ops, so
 * every read op below is LMDB's and this table needs none of them. */
static berth_jerr etcd_reader_open(berth_journal *base, berth_journal_reader **out) {
    etcd_journal *j = journal_of(base);
    berth_jerr e = local_wait(j);
    return e != BERTH_J_OK ? e : berth_journal_reader_open(j->local, out);
}

static const berth_journal_ops etcd_ops = {
    .name = "etcd",
    .close = etcd_close,
    .head = etcd_head,
    .append = etcd_append,
    .snapshot_put = etcd_snapshot_put,
    .size = etcd_size,
    .reader_open = etcd_reader_open,
};

/* ------------------------------------------------------------- opening */

static int config_endpoints(etcd_config *cfg, const char *list, char *err, size_t err_size) {
    size_t len = list != NULL ? strlen(list) : 0;
    if (len == 0 || len >= ETCD_ENDPOINTS_LEN_MAX) {
        berth_jsay(err, err_size, "--etcd-endpoints must list 1 to %d URLs", BERTH_ETCD_ENDPOINTS_MAX);
        return -1;
    }
    const char *p = list;
    while (*p != '\0') {
        size_t n = strcspn(p, ",");
        if (n == 0 || n >= ETCD_URL_LEN_MAX || cfg->endpoint_count == BERTH_ETCD_ENDPOINTS_MAX) {
            berth_jsay(err, err_size, "--etcd-endpoints: each URL up to %d bytes, at most %d of them",
                ETCD_URL_LEN_MAX - 1, BERTH_ETCD_ENDPOINTS_MAX);
            return -1;
        }
        char *dst = cfg->endpoints[cfg->endpoint_count++];
        memcpy(dst, p, n);
        dst[n] = '\0';
        while (n > 0 && dst[n - 1] == '/') dst[--n] = '\0';   /* paths are appended */
        if (strncmp(dst, "http://", 7) != 0 && strncmp(dst, "https://", 8) != 0) {
            berth_jsay(err, err_size, "--etcd-endpoints: \"%s\" is not an http:// or https:// URL", dst);
            return -1;
        }
        p += strcspn(p, ",");
        if (*p == ',') p++;
    }
    return 0;
}

static bool cluster_ok(const char *name) {
    size_t len = strlen(name);
    if (len == 0 || len > BERTH_ETCD_CLUSTER_LEN_MAX) return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || c == '.';
        if (!ok) return false;
    }
    return true;
}

static int copy_opt(char *dst, size_t size, const char *src, const char *what, char *err, size_t err_size) {
    const char *s = src != NULL ? src : "";
    if (strlen(s) >= size) {
        berth_jsay(err, err_size, "%s is longer than %zu bytes", what, size - 1);
        return -1;
    }
    snprintf(dst, size, "%s", s);
    return 0;
}

static int config_from(etcd_config *cfg, const berth_etcd_options *o, char *err, size_t err_size) {
    memset(cfg, 0, sizeof *cfg);
    if (config_endpoints(cfg, o->endpoints, err, err_size) != 0) return -1;
    if (o->cluster == NULL || !cluster_ok(o->cluster)) {
        berth_jsay(err, err_size, "--cluster must be 1 to %d letters, digits, '-', '_' or '.'", BERTH_ETCD_CLUSTER_LEN_MAX);
        return -1;
    }
    snprintf(cfg->prefix, sizeof cfg->prefix, "/berth/%s/", o->cluster);
    cfg->lease_ttl_s = o->lease_ttl_s == 0 ? BERTH_ETCD_LEASE_TTL_S_DEFAULT : o->lease_ttl_s;
    if (cfg->lease_ttl_s < 2 || cfg->lease_ttl_s > BERTH_ETCD_LEASE_TTL_S_MAX) {
        berth_jsay(err, err_size, "--etcd-lease-ttl must be 2 to %d seconds", BERTH_ETCD_LEASE_TTL_S_MAX);
        return -1;
    }
    cfg->request_timeout_ms = o->request_timeout_ms == 0 ? BERTH_ETCD_TIMEOUT_MS_DEFAULT : o->request_timeout_ms;
    if (cfg->request_timeout_ms < BERTH_ETCD_TIMEOUT_MS_MIN || cfg->request_timeout_ms > BERTH_ETCD_TIMEOUT_MS_MAX) {
        berth_jsay(err, err_size, "--etcd-timeout-ms must be %d to %d milliseconds, not %" PRIu32, BERTH_ETCD_TIMEOUT_MS_MIN,
            BERTH_ETCD_TIMEOUT_MS_MAX, cfg->request_timeout_ms);
        return -1;
    }
    if (copy_opt(cfg->advertise, sizeof cfg->advertise, o->advertise, "--advertise", err, err_size) != 0 ||
        copy_opt(cfg->cacert, sizeof cfg->cacert, o->cacert, "--etcd-cacert", err, err_size) != 0 ||
        copy_opt(cfg->cert, sizeof cfg->cert, o->cert, "--etcd-cert", err, err_size) != 0 ||
        copy_opt(cfg->key, sizeof cfg->key, o->key, "--etcd-key", err, err_size) != 0 ||
        copy_opt(cfg->user, sizeof cfg->user, o->user, "--etcd-user", err, err_size) != 0 ||
        copy_opt(cfg->password, sizeof cfg->password, o->password, "--etcd-password-file", err, err_size) != 0) {
        return -1;
    }
    return 0;
}

/* The local copy must be a prefix of etcd's journal: the same bytes at its
 * head. (Its own chain was checked when it was written and is checked again
 * by the engine's start.) */
static berth_jerr check_prefix(etcd_journal *j, char *err, size_t err_size) {
    uint64_t head = 0;
    uint8_t hash[BERTH_HASH_LEN];
    berth_jerr e = berth_journal_head(j->local, &head, hash);
    if (e != BERTH_J_OK || head == 0) return e;
    etcd_http *h = &j->caller;
    char key[ETCD_KEY_LEN_MAX];
    key_journal(&j->cfg, head, key, sizeof key);
    json_t *reply = NULL;
    if (http_post(h, "/v3/kv/range", json_pack("{s:o}", "key", jkey(h, key)), &reply) != HTTP_OK) {
        berth_jsay(err, err_size, "etcd is unreachable: %s", h->error);
        return BERTH_J_IO;
    }
    json_t *kv = json_array_get(json_object_get(reply, "kvs"), 0);
    long len = kv != NULL ? jget_b64(kv, "value", h->raw, sizeof h->raw) : -1;
    json_decref(reply);
    bool same = len > 0 && berth_record_hash_ok(h->raw, (size_t)len) &&
                memcmp(h->raw + len - BERTH_HASH_LEN, hash, BERTH_HASH_LEN) == 0;
    if (!same) {
        berth_jsay(err, err_size,
            "the local journal (head %" PRIu64 ") is not a prefix of etcd's journal under %s: "
            "move the data directory aside and start again to copy it from etcd",
            head, j->cfg.prefix);
        return BERTH_J_CORRUPT;
    }
    return BERTH_J_OK;
}

/* libcurl's global state, once per process, before any thread uses it. */
static void curl_init_once(void) {
    CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    assert(rc == CURLE_OK);
    (void)rc;
}

static berth_jerr etcd_alloc(etcd_journal **out, const berth_etcd_options *etcd, char *err, size_t err_size) {
    static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
    int rc = pthread_once(&curl_once, curl_init_once);
    assert(rc == 0);
    etcd_journal *j = calloc(1, sizeof *j);
    if (j == NULL) return BERTH_J_NOMEM;
    j->base.ops = &etcd_ops;
    pthread_condattr_t attr;
    rc = pthread_condattr_init(&attr);
    assert(rc == 0);
    rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    assert(rc == 0);
    if (pthread_mutex_init(&j->mutex, NULL) != 0 || pthread_cond_init(&j->cond, &attr) != 0) {
        free(j);
        return BERTH_J_NOMEM;
    }
    if (pthread_cond_init(&j->lease_cond, &attr) != 0) {
        rc = pthread_cond_destroy(&j->cond);
        assert(rc == 0);
        rc = pthread_mutex_destroy(&j->mutex);
        assert(rc == 0);
        free(j);
        return BERTH_J_NOMEM;
    }
    rc = pthread_condattr_destroy(&attr);
    assert(rc == 0);
    (void)rc;
    j->options = *etcd;
    if (config_from(&j->cfg, etcd, err, err_size) != 0) {
        *out = j;
        return BERTH_J_INVALID;
    }
    j->feed_bytes = malloc((size_t)BERTH_ETCD_FEED_RECORDS_MAX * BERTH_RECORD_BYTES_MAX);
    j->stage_bytes = malloc((size_t)BERTH_ETCD_FEED_RECORDS_MAX * BERTH_RECORD_BYTES_MAX);
    j->local_records = calloc(BERTH_ETCD_TXN_RECORDS_MAX, sizeof *j->local_records);
    j->local_touched = calloc(BERTH_ETCD_TXN_RECORDS_MAX, sizeof *j->local_touched);
    j->local_arena = malloc(ETCD_LOCAL_ARENA_BYTES);
    if (j->feed_bytes == NULL || j->stage_bytes == NULL || j->local_records == NULL || j->local_touched == NULL ||
        j->local_arena == NULL || http_init(&j->caller, &j->cfg, j) != 0 ||
        http_init(&j->feeder, &j->cfg, j) != 0 || http_init(&j->leaser, &j->cfg, j) != 0) {
        *out = j;
        return BERTH_J_NOMEM;
    }
    /* Followers spread their reads over the members (the leader writes to
     * the first that answers); the advertised address picks, so a replica
     * always starts at the same one. */
    uint32_t spread = 0;
    for (const char *a = j->cfg.advertise; *a != '\0'; a++) spread = spread * 31u + (uint8_t)*a;
    j->feeder.current = j->cfg.endpoint_count > 0 ? spread % j->cfg.endpoint_count : 0;
    *out = j;
    return BERTH_J_OK;
}

berth_jerr berth_journal_open_etcd(berth_journal **out, const char *dir,
                                   const berth_journal_options *local_options,
                                   const berth_etcd_options *etcd, char *err, size_t err_size) {
    assert(out != NULL && dir != NULL && etcd != NULL);
    *out = NULL;
    etcd_journal *j = NULL;
    /* An etcd append is durable on return, local copy included: the copy
     * never defers its meta sync (berth_journal_durable is then the head). */
    berth_journal_options local = { 0 };
    if (local_options != NULL) local = *local_options;
    local.defer_meta_sync = false;
    /* The copy's HISTORY index is rebuilt as the LMDB directory it is
     * (`berth history rebuild --data DIR`, berthd stopped), never through
     * this backend, whose rebuild calls answer INVALID. */
    local.history_rebuild = false;
    berth_jerr e = etcd_alloc(&j, etcd, err, err_size);
    if (e == BERTH_J_OK) e = berth_journal_open_lmdb(&j->local, dir, &local, err, err_size);
    if (e == BERTH_J_OK) e = check_prefix(j, err, err_size);
    if (e != BERTH_J_OK) {
        if (e == BERTH_J_NOMEM) berth_jsay(err, err_size, "out of memory opening the etcd journal");
        if (j != NULL) etcd_close(&j->base);
        return e;
    }
    *out = &j->base;
    return BERTH_J_OK;
}

/* Stop and join the threads started so far (a failed start). */
static void threads_unwind(etcd_journal *j, pthread_t *started, size_t count) {
    lock(j);
    j->stop = true;
    wake_all(j);
    unlock(j);
    int rc = 0;
    for (size_t i = 0; i < count; i++) {
        rc = pthread_join(started[i], NULL);
        assert(rc == 0);
    }
    (void)rc;
}

berth_jerr berth_etcd_start(berth_journal *journal) {
    etcd_journal *j = journal_of(journal);
    if (j->threads_started || !j->options.follow) return BERTH_J_INVALID;
    if (pthread_create(&j->local_thread, NULL, local_main, j) != 0) return BERTH_J_NOMEM;
    if (pthread_create(&j->feed_thread, NULL, feed_main, j) != 0) {
        threads_unwind(j, &j->local_thread, 1);
        return BERTH_J_NOMEM;
    }
    if (pthread_create(&j->lease_thread, NULL, lease_main, j) != 0) {
        pthread_t started[2] = { j->local_thread, j->feed_thread };
        threads_unwind(j, started, 2);
        return BERTH_J_NOMEM;
    }
    j->threads_started = true;
    return BERTH_J_OK;
}

bool berth_journal_is_etcd(const berth_journal *journal) {
    return journal != NULL && journal->ops == &etcd_ops;
}

berth_etcd_role berth_etcd_role_now(berth_journal *journal) {
    return (berth_etcd_role)atomic_load(&journal_of(journal)->role);
}

void berth_etcd_status_get(berth_journal *journal, berth_etcd_status *out) {
    etcd_journal *j = journal_of(journal);
    memset(out, 0, sizeof *out);
    uint8_t hash[BERTH_HASH_LEN];
    berth_jerr e = local_wait(j);
    if (e == BERTH_J_OK) e = berth_journal_head(j->local, &out->local_head, hash);
    if (e != BERTH_J_OK) out->local_head = 0;
    lock(j);
    out->role = (berth_etcd_role)atomic_load(&j->role);
    snprintf(out->leader, sizeof out->leader, "%s", j->leader);
    out->etcd_head = j->etcd_head > out->local_head ? j->etcd_head : out->local_head;
    out->lease_id = (uint64_t)j->lease_id;
    out->lease_ttl_s = j->cfg.lease_ttl_s;
    out->request_timeout_ms = j->cfg.request_timeout_ms;
    out->elections_won = j->elections_won;
    out->step_downs = j->step_downs;
    out->fence_refusals = j->fence_refusals;
    out->txns = j->txns;
    out->feed_records = j->feed_records;
    out->request_errors = j->request_errors;
    out->snapshots_uploaded = j->snapshots_uploaded;
    out->snapshot_upload_seq = j->snapshot_upload_seq;
    snprintf(out->endpoint, sizeof out->endpoint, "%s", j->endpoint);
    snprintf(out->last_error, sizeof out->last_error, "%s", j->last_error);
    unlock(j);
}
