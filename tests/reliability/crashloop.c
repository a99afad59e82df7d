/* crashloop.c — kill berthd with SIGKILL under load, again and again, and
 * prove that nothing it acknowledged was lost.
 *
 * Owns berth's central durability promise: a reply leaves only after its
 * record is durable. Many connections send DEPLOY / RELEASE / CORDON with a
 * unique REQID each and remember every reply; at a random moment berthd is
 * killed. With berthd dead the harness opens the journal itself and checks:
 * the chain verifies, every acknowledged command is there with the
 * acknowledged seq and outcome, no REQID was applied twice, and the digest of
 * a replay from genesis equals the digest with snapshots and the digest of
 * the engine berthd's own start path builds. Then berthd restarts, every
 * unacknowledged command is retried with its REQID (it must be applied at
 * most once), and the load goes on. A WATCH client follows the journal the
 * whole time: every record it was shown must be in the journal after every
 * kill, with the same hash (no client may see a record that is not durable),
 * and its stream resumes after each restart without a gap. At the end
 * JOURNAL.VERIFY runs over RESP. Half the writers and the watcher speak RESP3.
 *
 *   berth_crashloop --berthd PATH --data DIR [--kills N] [--duration S]
 *       [--connections C] [--workers W] [--seed S] [--kill-min-ms A]
 *       [--kill-max-ms B] [--snapshot-every N]
 * Prints kills, acknowledged writes, retries and losses; exits 0 only when
 * losses and double applications are 0 and every check passed. */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine.h"
#include "harness.h"
#include "journal.h"
#include "replay.h"
#include "state.h"

#define CL_CONNECTIONS_MAX 512
#define CL_WORKERS_MAX 4096
#define CL_GPUS_PER_WORKER 8
#define CL_LIVE_PER_CONN_MAX 8           /* instances one connection keeps deployed */
#define CL_REQID_LEN_MAX 48
#define CL_NAME_LEN_MAX (CL_REQID_LEN_MAX + 1)   /* an instance: "i" + its DEPLOY's REQID */
#define CL_TEXT_LEN_MAX 512
#define CL_OPS_MAX 50000000u             /* commands one run may send */
#define CL_REPLY_TIMEOUT_MS 30000
#define CL_PATH_LEN_MAX 4096
#define CL_ERR_LEN_MAX 1024
#define CL_STALL_MS_MAX 30000            /* no reply at all for this long: berthd is stuck */
#define CL_ACKED_RETRIES 16              /* acknowledged commands sent again after each restart */
#define CL_RECENT_OPS 2000               /* ...chosen among the newest, well inside the REQID window */

typedef enum op_state { OP_PENDING = 0, OP_ACKED } op_state;

/* One command the harness sent, and what berthd answered. */
typedef struct op {
    char reqid[CL_REQID_LEN_MAX];
    char text[CL_TEXT_LEN_MAX];          /* the command without REQID */
    char instance[CL_NAME_LEN_MAX];      /* DEPLOY / RELEASE: the instance */
    berth_cmd_kind kind;
    op_state state;
    bool retried;
    uint64_t seq;                        /* acked success */
    berth_code code;
    char *sentence;                      /* acked refusal: the reply text, owned */
} op;

typedef struct lconn {
    h_conn c;
    uint32_t id;
    int64_t current;                     /* index into ops, -1: idle */
    uint32_t next_n;
    uint32_t live_count;
    char live[CL_LIVE_PER_CONN_MAX][CL_NAME_LEN_MAX];
} lconn;

/* The WATCH client: the hash of every record it was shown, by seq. */
typedef struct watcher {
    h_conn c;
    uint64_t next;                       /* the seq it expects next */
    uint8_t (*hashes)[BERTH_HASH_LEN];   /* hashes[seq], owned */
    size_t cap;
    uint64_t shown;                      /* records shown, over all restarts */
} watcher;

typedef struct options {
    const char *berthd;
    const char *data;
    uint32_t kills;
    uint32_t duration_s;
    uint32_t connections;
    uint32_t workers;
    uint64_t seed;
    uint32_t kill_min_ms;
    uint32_t kill_max_ms;
    uint32_t snapshot_every;
} options;

typedef struct run {
    options o;
    h_rng rng;
    h_server server;
    op *ops;
    size_t op_count;
    size_t op_cap;
    lconn conns[CL_CONNECTIONS_MAX];
    watcher watch;
    char log_path[CL_PATH_LEN_MAX];
    /* figures */
    uint32_t kills;
    uint64_t acked;
    uint64_t acked_ok;
    uint64_t retried;
    uint64_t acked_retries;
    uint64_t losses;
    uint64_t recovered;     /* records moved from the commit log by the checks after kills */
    uint64_t doubles;
    uint64_t verifications;
    uint64_t last_head;
    char last_digest[2 * BERTH_HASH_LEN + 1];   /* of the last offline replay from genesis */
    uint64_t digest_checks;
    bool planting;                               /* planted losses: count them, do not print them */
} run;

static void usage(void) {
    fprintf(stderr, "usage: berth_crashloop --berthd PATH --data DIR [--kills N] [--duration S]\n"
                    "  [--connections C] [--workers W] [--seed S] [--kill-min-ms A] [--kill-max-ms B]\n"
                    "  [--snapshot-every N]\n");
    exit(2);
}

static uint64_t arg_u64(const char *flag, const char *text) {
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0') h_die("ERR %s wants a number, got '%s'", flag, text);
    return (uint64_t)v;
}

static void parse_options(int argc, char **argv, options *o) {
    *o = (options){ .kills = 3, .duration_s = 0, .connections = 16, .workers = 24, .seed = 1,
                    .kill_min_ms = 150, .kill_max_ms = 900, .snapshot_every = 200 };
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (strcmp(f, "--berthd") == 0) o->berthd = v;
        else if (strcmp(f, "--data") == 0) o->data = v;
        else if (strcmp(f, "--kills") == 0) o->kills = (uint32_t)arg_u64(f, v);
        else if (strcmp(f, "--duration") == 0) o->duration_s = (uint32_t)arg_u64(f, v);
        else if (strcmp(f, "--connections") == 0) o->connections = (uint32_t)arg_u64(f, v);
        else if (strcmp(f, "--workers") == 0) o->workers = (uint32_t)arg_u64(f, v);
        else if (strcmp(f, "--seed") == 0) o->seed = arg_u64(f, v);
        else if (strcmp(f, "--kill-min-ms") == 0) o->kill_min_ms = (uint32_t)arg_u64(f, v);
        else if (strcmp(f, "--kill-max-ms") == 0) o->kill_max_ms = (uint32_t)arg_u64(f, v);
        else if (strcmp(f, "--snapshot-every") == 0) o->snapshot_every = (uint32_t)arg_u64(f, v);
        else usage();
    }
    if (o->berthd == NULL || o->data == NULL) usage();
    if (o->connections == 0 || o->connections > CL_CONNECTIONS_MAX) h_die("ERR --connections must be 1..%d", CL_CONNECTIONS_MAX);
    if (o->workers < 4 || o->workers > CL_WORKERS_MAX) h_die("ERR --workers must be 4..%d", CL_WORKERS_MAX);
    if (o->kill_min_ms == 0 || o->kill_max_ms < o->kill_min_ms) h_die("ERR need 0 < --kill-min-ms <= --kill-max-ms");
}

static op *op_new(run *r) {
    if (r->op_count == r->op_cap) {
        if (r->op_cap >= CL_OPS_MAX) h_die("ERR more than %u commands in one run", CL_OPS_MAX);
        size_t cap = r->op_cap == 0 ? 4096 : r->op_cap * 2;
        op *ops = realloc(r->ops, cap * sizeof *ops);
        if (ops == NULL) h_die("ERR out of memory for %zu commands", cap);
        r->ops = ops;
        r->op_cap = cap;
    }
    op *o = &r->ops[r->op_count++];
    memset(o, 0, sizeof *o);
    return o;
}

/* Choose the next command of connection lc: mostly DEPLOYs that collide
 * with other connections' (so refusals happen), RELEASEs of its own
 * instances, and now and then a CORDON/UNCORDON pair. */
static void make_command(run *r, lconn *lc, op *o) {
    uint32_t w = r->o.workers;
    snprintf(o->reqid, sizeof o->reqid, "c%u-%u", lc->id, lc->next_n++);
    uint64_t dice = h_rng_below(&r->rng, 100);
    if (lc->live_count > 0 && (dice < 35 || lc->live_count == CL_LIVE_PER_CONN_MAX)) {
        uint32_t k = (uint32_t)h_rng_below(&r->rng, lc->live_count);
        o->kind = BERTH_CMD_RELEASE;
        snprintf(o->instance, sizeof o->instance, "%s", lc->live[k]);
        snprintf(o->text, sizeof o->text, "RELEASE %s", o->instance);
        return;
    }
    if (dice >= 97) {
        o->kind = dice == 97 ? BERTH_CMD_WORKER_CORDON : BERTH_CMD_WORKER_UNCORDON;
        snprintf(o->text, sizeof o->text, "%s w%" PRIu64, berth_cmd_kind_name(o->kind),
                 h_rng_below(&r->rng, w));
        return;
    }
    o->kind = BERTH_CMD_DEPLOY;
    snprintf(o->instance, sizeof o->instance, "i%s", o->reqid);
    uint64_t a = h_rng_below(&r->rng, w), b = (a + 1 + h_rng_below(&r->rng, w - 1)) % w;
    uint64_t g = h_rng_below(&r->rng, CL_GPUS_PER_WORKER);
    if (dice < 60) {
        const char *backend = dice < 50 ? "vllm" : "sglang";
        snprintf(o->text, sizeof o->text, "DEPLOY %s MODEL meta/llama-3-70b BACKEND %s ON w%" PRIu64
                 ":%" PRIu64 " w%" PRIu64 ":%" PRIu64, o->instance, backend, a, g, b, g);
    } else if (dice < 80) {
        snprintf(o->text, sizeof o->text, "DEPLOY %s MODEL qwen2-7b BACKEND vllm VRAM 30000 ON w%" PRIu64
                 ":%" PRIu64, o->instance, a, g);
    } else {
        snprintf(o->text, sizeof o->text, "DEPLOY %s MODEL phi-3 BACKEND llama-box ON w%" PRIu64
                 ":%" PRIu64, o->instance, a, g);
    }
}

static int send_op(lconn *lc, const op *o) {
    char line[CL_TEXT_LEN_MAX + CL_REQID_LEN_MAX + 16];
    int n = snprintf(line, sizeof line, "%s REQID %s", o->text, o->reqid);
    assert(n > 0 && (size_t)n < sizeof line);
    const char *words[64];
    size_t lens[64];
    size_t argc = 0;
    char *save = NULL;
    for (char *t = strtok_r(line, " ", &save); t != NULL; t = strtok_r(NULL, " ", &save)) {
        assert(argc < 64);
        words[argc] = t;
        lens[argc] = strlen(t);
        argc++;
    }
    char *out = NULL;
    size_t len = 0, cap = 0;
    int rc = h_encode_argv(&out, &len, &cap, argc, words, lens);
    if (rc == 0) rc = h_write_all(lc->c.fd, out, len, CL_REPLY_TIMEOUT_MS);
    free(out);
    return rc;
}

static void live_add(lconn *lc, const char *instance) {
    assert(lc->live_count < CL_LIVE_PER_CONN_MAX);
    snprintf(lc->live[lc->live_count++], CL_NAME_LEN_MAX, "%s", instance);
}

static void live_remove(lconn *lc, const char *instance) {
    for (uint32_t i = 0; i < lc->live_count; i++) {
        if (strcmp(lc->live[i], instance) == 0) {
            memmove(lc->live[i], lc->live[lc->live_count - 1], CL_NAME_LEN_MAX);
            lc->live_count--;
            return;
        }
    }
    h_die("BUG harness lost track of instance %s", instance);
}

/* Record berthd's answer to o. Anything but a seq or an engine refusal is a
 * failure: FULL/IOERR/ERR have no place in this run. */
static void take_answer(run *r, lconn *lc, op *o, const h_reply *reply) {
    const h_node *n = h_reply_root(reply);
    assert(n != NULL);
    assert(o->state == OP_PENDING);
    if (n->type == H_INT) {
        if (n->integer <= 0) h_die("berthd answered %s with seq %" PRId64, o->reqid, n->integer);
        o->seq = (uint64_t)n->integer;
        o->code = BERTH_OK;
        r->acked_ok++;
        if (o->kind == BERTH_CMD_DEPLOY) live_add(lc, o->instance);
        if (o->kind == BERTH_CMD_RELEASE) live_remove(lc, o->instance);
    } else if (n->type == H_ERROR) {
        size_t word = 0;
        while (word < n->len && n->str[word] != ' ') word++;
        berth_code code;
        if (!berth_code_lookup(berth_str_make(n->str, word), &code) || code == BERTH_OK) {
            h_die("berthd answered %s (%s REQID %s) with '%.*s'", o->reqid, o->text, o->reqid,
                  (int)n->len, n->str);
        }
        if (o->kind == BERTH_CMD_RELEASE) {
            h_die("LOSS RELEASE of %s, whose DEPLOY was acknowledged, got '%.*s'", o->instance,
                  (int)n->len, n->str);
        }
        o->code = code;
        o->sentence = strndup(n->str, n->len);
        if (o->sentence == NULL) h_die("ERR out of memory");
    } else {
        h_die("berthd answered %s with an unexpected reply type %d", o->reqid, (int)n->type);
    }
    o->state = OP_ACKED;
    r->acked++;
}

static void conn_open(run *r, lconn *lc) {
    if (h_conn_open(&lc->c, "127.0.0.1", r->server.port, 5000) != 0) {
        h_die("cannot connect to berthd on port %d", r->server.port);
    }
    h_reply reply;
    h_reply_init(&reply);
    /* The actor recorded in the journal; an old berthd without it still works. */
    if (h_cmdf(&lc->c, &reply, CL_REPLY_TIMEOUT_MS, "CLIENT SETNAME crashloop-%u", lc->id) != 0) {
        h_die("berthd did not answer CLIENT SETNAME");
    }
    h_reply_free(&reply);
    /* Half the writers speak RESP3: the same answers must come back either way. */
    if (lc->id % 2 == 1) {
        if (h_cmdf(&lc->c, &reply, CL_REPLY_TIMEOUT_MS, "HELLO 3") != 0 || h_reply_root(&reply)->type != H_MAP) {
            h_die("berthd did not switch connection %u to RESP3", lc->id);
        }
        h_reply_free(&reply);
    }
}

/* Send connection lc's next command (its unacknowledged one first). */
static void conn_next(run *r, lconn *lc) {
    if (lc->current < 0) {
        op *o = op_new(r);
        make_command(r, lc, o);
        lc->current = (int64_t)(o - r->ops);
    }
    if (send_op(lc, &r->ops[lc->current]) != 0) h_die("cannot send to berthd (connection %u)", lc->id);
}

/* berthd's DIGEST right after a restart must equal the harness's own
 * replay of the same journal from genesis. */
static void check_live_digest(run *r) {
    h_conn c;
    if (h_conn_open(&c, "127.0.0.1", r->server.port, 5000) != 0) h_die("cannot connect for DIGEST");
    h_reply reply;
    h_reply_init(&reply);
    if (h_cmdf(&c, &reply, CL_REPLY_TIMEOUT_MS, "DIGEST") != 0) h_die("no reply to DIGEST");
    const h_node *n = h_reply_root(&reply);
    if (!h_node_is(n, r->last_digest)) {
        h_die("DIGEST after restart %u is '%.*s', a fresh replay gives %s", r->kills, (int)n->len,
              n->str ? n->str : "", r->last_digest);
    }
    r->digest_checks++;
    h_reply_free(&reply);
    h_conn_close(&c);
}

static void server_start(run *r) {
    char every[32];
    snprintf(every, sizeof every, "%u", r->o.snapshot_every);
    const char *extra[] = { "--snapshot-every", every };
    if (h_server_start(&r->server, r->o.berthd, r->o.data, extra, 2, r->log_path) != 0) {
        h_die("berthd did not start (kill %u); its log is %s", r->kills, r->log_path);
    }
}

static void setup_workers(run *r) {
    h_conn c;
    if (h_conn_open(&c, "127.0.0.1", r->server.port, 5000) != 0) h_die("cannot connect for setup");
    for (uint32_t i = 0; i < r->o.workers; i++) {
        h_reply reply;
        h_reply_init(&reply);
        if (h_cmdf(&c, &reply, CL_REPLY_TIMEOUT_MS,
                   "WORKER.ADD w%u GPUS %d VRAM 81920 LABEL rack=r%u REQID setup-w%u", i,
                   CL_GPUS_PER_WORKER, i % 4, i) != 0) h_die("setup: no reply to WORKER.ADD w%u", i);
        const h_node *n = h_reply_root(&reply);
        if (n->type != H_INT) h_die("setup: WORKER.ADD w%u answered '%.*s'", i, (int)n->len, n->str);
        h_reply_free(&reply);
    }
    h_conn_close(&c);
}

/* ---- the WATCH client ---- */

static int hex_nibble(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void watch_open(run *r) {
    watcher *w = &r->watch;
    if (w->next == 0) w->next = 1;
    if (h_conn_open(&w->c, "127.0.0.1", r->server.port, 5000) != 0) h_die("WATCH cannot connect");
    /* RESP3, so the records come as push frames with maps. */
    h_reply hello;
    h_reply_init(&hello);
    if (h_cmdf(&w->c, &hello, CL_REPLY_TIMEOUT_MS, "HELLO 3") != 0 || h_reply_root(&hello)->type != H_MAP) {
        h_die("berthd did not switch the WATCH client to RESP3");
    }
    h_reply_free(&hello);
    char from[32];
    int n = snprintf(from, sizeof from, "%" PRIu64, w->next);
    const char *argv[] = { "WATCH", from };
    size_t lens[] = { 5, (size_t)n };
    char *out = NULL;
    size_t len = 0, cap = 0;
    if (h_encode_argv(&out, &len, &cap, 2, argv, lens) != 0 || h_write_all(w->c.fd, out, len, CL_REPLY_TIMEOUT_MS) != 0) {
        h_die("cannot send WATCH");
    }
    free(out);
}

/* One frame: ["watch", from, head] or ["message", "watch", {seq, ..., hash}]. */
static void watch_frame(run *r, const h_reply *reply) {
    watcher *w = &r->watch;
    const h_node *root = h_reply_root(reply);
    if (root->type == H_ERROR) h_die("WATCH answered '%.*s'", (int)root->len, root->str);
    if (!h_node_is(h_reply_child(reply, root, 0), "message")) return;
    const h_node *rec = h_reply_child(reply, root, 2);
    const h_node *seq = h_reply_field(reply, rec, "seq");
    const h_node *hash = h_reply_field(reply, rec, "hash");
    if (seq == NULL || seq->type != H_INT || hash == NULL || hash->len != 2 * BERTH_HASH_LEN) {
        h_die("a WATCH frame without seq or hash");
    }
    if ((uint64_t)seq->integer != w->next) {
        h_die("WATCH showed seq %" PRId64 " where %" PRIu64 " was due (after %u kills)", seq->integer, w->next, r->kills);
    }
    if (w->next >= w->cap) {
        size_t cap = w->cap == 0 ? 65536 : w->cap * 2;
        void *grown = realloc(w->hashes, cap * sizeof *w->hashes);
        if (grown == NULL) h_die("ERR out of memory");
        w->hashes = grown;
        w->cap = cap;
    }
    for (size_t i = 0; i < BERTH_HASH_LEN; i++) {
        int hi = hex_nibble(hash->str[2 * i]), lo = hex_nibble(hash->str[2 * i + 1]);
        if (hi < 0 || lo < 0) h_die("WATCH sent a hash that is not hex");
        w->hashes[w->next][i] = (uint8_t)(hi << 4 | lo);
    }
    w->next++;
    w->shown++;
}

static void watch_read(run *r) {
    watcher *w = &r->watch;
    if (h_conn_fill(&w->c) < 0) h_die("berthd closed the WATCH connection before it was killed");
    h_reply reply;
    h_reply_init(&reply);
    int t;
    while ((t = h_conn_take(&w->c, &reply)) == 1) {
        watch_frame(r, &reply);
        h_reply_free(&reply);
    }
    if (t < 0) h_die("berthd sent the WATCH client bytes that are not RESP");
}

/* Offline: every record the watcher was shown is durable, with that hash. */
static void check_watched(run *r, berth_journal_reader *reader) {
    watcher *w = &r->watch;
    for (uint64_t seq = 1; seq < w->next; seq++) {
        berth_record rec;
        berth_jerr e = berth_journal_read(reader, seq, &rec, NULL, NULL);
        if (e != BERTH_J_OK || memcmp(rec.hash, w->hashes[seq], BERTH_HASH_LEN) != 0) {
            h_die("WATCH showed seq %" PRIu64 " but after kill %u the journal %s", seq, r->kills,
                  e != BERTH_J_OK ? "does not have it" : "holds another record there");
        }
    }
}

/* Drive the load until deadline_ns; returns when it is time to kill. */
static void load_until(run *r, uint64_t deadline_ns) {
    uint32_t n = r->o.connections;
    struct pollfd pfd[CL_CONNECTIONS_MAX + 1];
    uint64_t last_progress = h_now_ns();
    for (;;) {
        uint64_t now = h_now_ns();
        if (now >= deadline_ns) return;
        if (now - last_progress > (uint64_t)CL_STALL_MS_MAX * 1000000ull) {
            h_die("berthd answered nothing for %d ms under load", CL_STALL_MS_MAX);
        }
        for (uint32_t i = 0; i < n; i++) pfd[i] = (struct pollfd){ .fd = r->conns[i].c.fd, .events = POLLIN };
        pfd[n] = (struct pollfd){ .fd = r->watch.c.fd, .events = POLLIN };
        int timeout = (int)((deadline_ns - now) / 1000000ull) + 1;
        int pr = poll(pfd, n + 1, timeout);
        if (pr < 0 && errno == EINTR) continue;
        if (pr < 0) h_die("poll: %s", strerror(errno));
        if (pfd[n].revents != 0) watch_read(r);
        for (uint32_t i = 0; i < n && pr > 0; i++) {
            if (pfd[i].revents == 0) continue;
            lconn *lc = &r->conns[i];
            if (h_conn_fill(&lc->c) < 0) h_die("berthd closed connection %u before it was killed", i);
            h_reply reply;
            h_reply_init(&reply);
            int t;
            while ((t = h_conn_take(&lc->c, &reply)) == 1) {
                if (lc->current < 0) h_die("berthd sent connection %u a reply it did not ask for", i);
                take_answer(r, lc, &r->ops[lc->current], &reply);
                h_reply_free(&reply);
                lc->current = -1;
                last_progress = h_now_ns();
                conn_next(r, lc);
            }
            if (t < 0) h_die("berthd sent connection %u bytes that are not RESP", i);
        }
    }
}

/* ---- offline checks, berthd dead ---- */

typedef struct jrec {
    char *reqid;         /* owned copy */
    uint64_t seq;
    uint32_t code;
    char *sentence;      /* owned copy */
    char *command;       /* owned copy */
} jrec;

static int jrec_cmp(const void *a, const void *b) {
    const jrec *x = a, *y = b;
    int c = strcmp(x->reqid, y->reqid);
    if (c != 0) return c;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static char *dup_str(berth_str s) {
    char *p = strndup(s.len ? s.ptr : "", s.len);
    if (p == NULL) h_die("ERR out of memory");
    return p;
}

/* Every record with a REQID, sorted by (reqid, seq). */
static jrec *load_records(berth_journal_reader *reader, size_t *count) {
    berth_journal_cursor *cur = NULL;
    if (berth_journal_cursor_open(reader, 1, &cur) != BERTH_J_OK) h_die("cannot open a journal cursor");
    size_t n = 0, cap = 0;
    jrec *v = NULL;
    for (;;) {
        berth_record rec;
        berth_jerr e = berth_journal_cursor_next(cur, &rec, NULL, NULL);
        if (e == BERTH_J_NOTFOUND) break;
        if (e != BERTH_J_OK) h_die("journal cursor: %s near seq %" PRIu64, berth_jerr_name(e), rec.seq);
        if (rec.reqid.len == 0) continue;
        if (n == cap) {
            cap = cap == 0 ? 4096 : cap * 2;
            v = realloc(v, cap * sizeof *v);
            if (v == NULL) h_die("ERR out of memory");
        }
        v[n++] = (jrec){ dup_str(rec.reqid), rec.seq, rec.code, dup_str(rec.sentence), dup_str(rec.command) };
    }
    berth_journal_cursor_close(cur);
    qsort(v, n, sizeof *v, jrec_cmp);
    *count = n;
    return v;
}

static void free_records(jrec *v, size_t n) {
    for (size_t i = 0; i < n; i++) { free(v[i].reqid); free(v[i].sentence); free(v[i].command); }
    free(v);
}

static const jrec *find_record(const jrec *v, size_t n, const char *reqid) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(v[mid].reqid, reqid) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && strcmp(v[lo].reqid, reqid) == 0 ? &v[lo] : NULL;
}

/* The refusal berthd sent must be the journaled one: "-CODE sentence", where
 * the journal may keep the sentence with or without its code word. */
static bool refusal_matches(const op *o, const jrec *j) {
    if (j->code != (uint32_t)o->code) return false;
    if (strcmp(o->sentence, j->sentence) == 0) return true;
    const char *word = berth_code_name(o->code);
    size_t wl = strlen(word);
    return strncmp(o->sentence, word, wl) == 0 && o->sentence[wl] == ' ' &&
           strcmp(o->sentence + wl + 1, j->sentence) == 0;
}

static bool command_matches(const op *o, const jrec *j) {
    static berth_str words[BERTH_ARGS_MAX];
    static berth_cmd cmd;
    static char canonical[BERTH_COMMAND_LEN_MAX];
    char err[BERTH_ERR_LEN_MAX];
    if (berth_cmd_parse_text(&cmd, o->text, strlen(o->text), words, BERTH_ARGS_MAX, err, sizeof err) != 0) {
        h_die("BUG harness command '%s' does not parse: %s", o->text, err);
    }
    size_t len = berth_cmd_canonical(&cmd, canonical, sizeof canonical);
    return len == strlen(j->command) && memcmp(canonical, j->command, len) == 0;
}

static void check_acked(run *r, const jrec *v, size_t n) {
    for (size_t i = 0; i < r->op_count; i++) {
        const op *o = &r->ops[i];
        if (o->state != OP_ACKED) continue;
        const jrec *j = find_record(v, n, o->reqid);
        if (j == NULL) {
            r->losses++;
            if (!r->planting) fprintf(stderr, "LOSS %s (%s) was acknowledged (%s) but is not in the journal\n", o->reqid,
                    o->text, o->code == BERTH_OK ? "seq" : berth_code_name(o->code));
            continue;
        }
        bool ok = command_matches(o, j) &&
                  (o->code == BERTH_OK ? (j->seq == o->seq && j->code == BERTH_OK) : refusal_matches(o, j));
        if (!ok) {
            r->losses++;
            if (!r->planting) fprintf(stderr, "LOSS %s (%s) acknowledged as %s seq %" PRIu64 " '%s' but journaled as seq %"
                    PRIu64 " code %u '%s' command '%s'\n", o->reqid, o->text, berth_code_name(o->code),
                    o->seq, o->sentence ? o->sentence : "", j->seq, j->code, j->sentence, j->command);
        }
    }
}

static void check_doubles(run *r, const jrec *v, size_t n) {
    for (size_t i = 1; i < n; i++) {
        if (strcmp(v[i - 1].reqid, v[i].reqid) == 0) {
            r->doubles++;
            fprintf(stderr, "TWICE REQID %s applied at seq %" PRIu64 " and %" PRIu64 "\n", v[i].reqid,
                    v[i - 1].seq, v[i].seq);
        }
    }
}

static void digest_of(berth_journal_reader *reader, bool use_snapshots, uint8_t out[BERTH_HASH_LEN],
                      uint64_t *from_snapshot) {
    berth_state *state = NULL;
    berth_replay_stats stats;
    memset(&stats, 0, sizeof stats);
    uint32_t bad = 0;
    char err[CL_ERR_LEN_MAX];
    berth_jerr e = berth_replay_to(reader, UINT64_MAX, use_snapshots, &state, &stats, &bad, err, sizeof err);
    if (e != BERTH_J_OK) h_die("replay (snapshots %s): %s: %s", use_snapshots ? "on" : "off", berth_jerr_name(e), err);
    if (bad != 0) h_die("replay skipped %u bad snapshot(s) after a SIGKILL", bad);
    if (berth_state_digest(state, out) != 0) h_die("ERR out of memory for the digest");
    char why[CL_ERR_LEN_MAX];
    if (!berth_state_check(state, why, sizeof why)) h_die("replayed state breaks an invariant: %s", why);
    *from_snapshot = stats.from_snapshot_seq;
    berth_state_free(state);
}

/* The engine berthd builds at start must equal a replay from genesis. */
static void engine_digest(run *r, uint8_t out[BERTH_HASH_LEN]) {
    berth_journal *j = NULL;
    char err[CL_ERR_LEN_MAX];
    berth_journal_options jo = { 0 };
    berth_jerr e = berth_journal_open_lmdb(&j, r->o.data, &jo, err, sizeof err);
    if (e != BERTH_J_OK) h_die("open the journal as berthd would: %s: %s", berth_jerr_name(e), err);
    berth_engine *engine = NULL;
    berth_engine_options eo = { .snapshot_every = 0, .dry_run = true };
    berth_replay_stats stats;
    memset(&stats, 0, sizeof stats);
    e = berth_engine_open(&engine, j, &eo, &stats, err, sizeof err);
    if (e != BERTH_J_OK) h_die("engine open after kill %u: %s: %s", r->kills, berth_jerr_name(e), err);
    if (berth_state_digest(berth_engine_state(engine), out) != 0) h_die("ERR out of memory for the digest");
    berth_engine_close(engine);
    berth_journal_close(j);
}

static void verify_offline(run *r, const char *when) {
    berth_journal *j = NULL;
    char err[CL_ERR_LEN_MAX];
    /* berthd's next start moves what its commit log holds first (the
     * acknowledged writes of the last moments before a kill may be only
     * there): this check sees the journal that start serves. */
    char what[64];
    snprintf(what, sizeof what, "after kill %u", r->kills);
    r->recovered += h_recover_commit_log(r->o.data, what);
    berth_journal_options jo = { .read_only = true, .no_lock = true };
    berth_jerr e = berth_journal_open_lmdb(&j, r->o.data, &jo, err, sizeof err);
    if (e != BERTH_J_OK) h_die("open the journal read-only after kill %u: %s: %s", r->kills, berth_jerr_name(e), err);
    berth_journal_reader *reader = NULL;
    if (berth_journal_reader_open(j, &reader) != BERTH_J_OK) h_die("cannot open a journal reader");
    berth_verify_report rep;
    memset(&rep, 0, sizeof rep);
    e = berth_verify(reader, &rep);
    if (e != BERTH_J_OK || !rep.ok) {
        h_die("verify after kill %u: %s, first bad seq %" PRIu64 ": %s", r->kills, berth_jerr_name(e),
              rep.first_bad_seq, rep.what);
    }
    uint64_t head = 0;
    uint8_t head_hash[BERTH_HASH_LEN];
    if (berth_journal_reader_head(reader, &head, head_hash) != BERTH_J_OK) h_die("cannot read the head");
    if (head < r->last_head) h_die("the head went back from %" PRIu64 " to %" PRIu64, r->last_head, head);
    r->last_head = head;
    check_watched(r, reader);
    size_t n = 0;
    jrec *v = load_records(reader, &n);
    check_doubles(r, v, n);
    check_acked(r, v, n);
    free_records(v, n);
    uint8_t genesis[BERTH_HASH_LEN], snap[BERTH_HASH_LEN], live[BERTH_HASH_LEN];
    uint64_t from_a = 0, from_b = 0;
    digest_of(reader, false, genesis, &from_a);
    digest_of(reader, true, snap, &from_b);
    berth_journal_reader_close(reader);
    berth_journal_close(j);
    engine_digest(r, live);
    if (memcmp(genesis, snap, BERTH_HASH_LEN) != 0) h_die("digest from genesis differs from digest via snapshot %" PRIu64, from_b);
    if (memcmp(genesis, live, BERTH_HASH_LEN) != 0) h_die("digest of berthd's start path differs from a replay from genesis");
    char *hex = r->last_digest;
    berth_hex(genesis, BERTH_HASH_LEN, hex);
    printf("%s %u: head %" PRIu64 ", verified %" PRIu64 " records, snapshot %" PRIu64 ", digest %.16s, losses %" PRIu64
           ", moved from the commit log so far %" PRIu64 "\n",
           when, r->kills, head, rep.records, from_b, hex, r->losses, r->recovered);
    fflush(stdout);
    r->verifications++;
}

/* ---- the loop ---- */

static void connect_all(run *r) {
    for (uint32_t i = 0; i < r->o.connections; i++) conn_open(r, &r->conns[i]);
    watch_open(r);
}

/* After a restart: every command that was in flight is sent again with its
 * REQID before anything new. */
static void resend_pending(run *r) {
    for (uint32_t i = 0; i < r->o.connections; i++) {
        lconn *lc = &r->conns[i];
        if (lc->current < 0) continue;
        op *o = &r->ops[lc->current];
        o->retried = true;
        r->retried++;
        if (send_op(lc, o) != 0) h_die("cannot resend %s", o->reqid);
        h_reply reply;
        h_reply_init(&reply);
        if (h_read_reply(&lc->c, &reply, CL_REPLY_TIMEOUT_MS) != 0) h_die("no reply to the retry of %s", o->reqid);
        take_answer(r, lc, o, &reply);
        h_reply_free(&reply);
        lc->current = -1;
    }
}

/* After a restart: commands that were acknowledged before the kill, sent
 * again with their REQID, must get the very answer they got then (the seq,
 * or the same refusal) and append nothing (the next offline check finds any
 * REQID journaled twice). */
static void retry_acked(run *r) {
    lconn *lc = &r->conns[0];
    assert(lc->current < 0);
    size_t first = r->op_count > CL_RECENT_OPS ? r->op_count - CL_RECENT_OPS : 0;
    for (uint32_t k = 0; k < CL_ACKED_RETRIES && r->op_count > first; k++) {
        const op *o = &r->ops[first + h_rng_below(&r->rng, r->op_count - first)];
        if (o->state != OP_ACKED) continue;
        if (send_op(lc, o) != 0) h_die("cannot resend %s", o->reqid);
        h_reply reply;
        h_reply_init(&reply);
        if (h_read_reply(&lc->c, &reply, CL_REPLY_TIMEOUT_MS) != 0) h_die("no reply to the retry of %s", o->reqid);
        const h_node *n = h_reply_root(&reply);
        bool same = o->code == BERTH_OK ? n->type == H_INT && (uint64_t)n->integer == o->seq
                                         : n->type == H_ERROR && n->len == strlen(o->sentence) &&
                                               memcmp(n->str, o->sentence, n->len) == 0;
        if (!same) {
            h_die("retry of acknowledged %s (%s) after restart %u answered '%.*s' (%" PRId64 "), first answer %s %" PRIu64,
                  o->reqid, o->text, r->kills, n->str ? (int)n->len : 0, n->str ? n->str : "", n->integer,
                  o->code == BERTH_OK ? "seq" : o->sentence, o->seq);
        }
        h_reply_free(&reply);
        r->acked_retries++;
    }
}

static void disconnect_all(run *r) {
    for (uint32_t i = 0; i < r->o.connections; i++) h_conn_close(&r->conns[i].c);
    h_conn_close(&r->watch.c);
}

/* Proof that the checker can fail: after the first kill, claim one
 * acknowledged success at the wrong seq and one refusal with the wrong
 * sentence; the offline check must count exactly those two losses. */
static void plant_losses(run *r) {
    op *ok = NULL, *refused = NULL;
    for (size_t i = 0; i < r->op_count && (ok == NULL || refused == NULL); i++) {
        op *o = &r->ops[i];
        if (o->state != OP_ACKED) continue;
        if (o->code == BERTH_OK && ok == NULL) ok = o;
        if (o->code != BERTH_OK && refused == NULL) refused = o;
    }
    if (ok == NULL || refused == NULL) h_die("too few acknowledged writes before the first kill to plant losses");
    uint64_t seq = ok->seq;
    char first = refused->sentence[strlen(refused->sentence) - 1];
    ok->seq = seq + 1;
    refused->sentence[strlen(refused->sentence) - 1] = first == 'x' ? 'y' : 'x';
    uint64_t before = r->losses;
    r->planting = true;
    verify_offline(r, "planted losses, kill");
    r->planting = false;
    if (r->losses - before != 2) h_die("the checker found %" PRIu64 " of 2 planted losses", r->losses - before);
    ok->seq = seq;
    refused->sentence[strlen(refused->sentence) - 1] = first;
    r->losses = before;
    r->verifications--;
    printf("planted losses: the checker found both\n");
}

static void kill_and_check(run *r) {
    int status = h_server_stop(&r->server, SIGKILL, 10000);
    if (status < 0 || !WIFSIGNALED(status)) h_die("berthd had already exited before the kill; see %s", r->log_path);
    r->kills++;
    disconnect_all(r);
    verify_offline(r, "kill");
    if (r->kills == 1) plant_losses(r);
}

static void final_checks(run *r) {
    h_conn c;
    if (h_conn_open(&c, "127.0.0.1", r->server.port, 5000) != 0) h_die("cannot connect for JOURNAL.VERIFY");
    h_reply reply;
    h_reply_init(&reply);
    if (h_cmdf(&c, &reply, 120000, "JOURNAL.VERIFY") != 0) h_die("no reply to JOURNAL.VERIFY");
    const h_node *n = h_reply_root(&reply);
    if (n->type == H_ERROR) h_die("JOURNAL.VERIFY failed: %.*s", (int)n->len, n->str);
    const h_node *ok = h_reply_field(&reply, n, "ok");
    const h_node *records = h_reply_field(&reply, n, "records");
    const h_node *what = h_reply_field(&reply, n, "what");
    if (ok == NULL || ok->integer != 1 || records == NULL) {
        h_die("JOURNAL.VERIFY does not say ok: %.*s", what && what->str ? (int)what->len : 0,
              what && what->str ? what->str : "");
    }
    printf("JOURNAL.VERIFY over RESP: ok, %" PRId64 " records\n", records->integer);
    h_reply_free(&reply);
    h_conn_close(&c);
    int status = h_server_stop(&r->server, SIGTERM, 30000);
    if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        h_die("berthd did not stop cleanly on SIGTERM (status %d); see %s", status, r->log_path);
    }
    verify_offline(r, "clean stop after kills");
}

static bool time_left(const run *r, uint64_t start_ns) {
    if (r->o.duration_s == 0) return r->kills < r->o.kills;
    bool in_time = h_now_ns() - start_ns < (uint64_t)r->o.duration_s * 1000000000ull;
    return in_time || r->kills < r->o.kills;
}

int main(int argc, char **argv) {
    static run r;
    parse_options(argc, argv, &r.o);
    signal(SIGPIPE, SIG_IGN);
    r.rng.s = r.o.seed;
    snprintf(r.log_path, sizeof r.log_path, "%s.log", r.o.data);
    char cmd[CL_PATH_LEN_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", r.o.data, r.log_path);
    if (system(cmd) != 0) h_die("cannot clear %s", r.o.data);
    printf("crashloop: seed %" PRIu64 ", %u connections, %u workers, kills %u, duration %us, berthd log %s\n",
           r.o.seed, r.o.connections, r.o.workers, r.o.kills, r.o.duration_s, r.log_path);
    for (uint32_t i = 0; i < r.o.connections; i++) {
        h_conn_init(&r.conns[i].c);
        r.conns[i].id = i;
        r.conns[i].current = -1;
    }
    h_conn_init(&r.watch.c);
    uint64_t start = h_now_ns();
    server_start(&r);
    setup_workers(&r);
    while (time_left(&r, start)) {
        connect_all(&r);
        resend_pending(&r);
        retry_acked(&r);
        for (uint32_t i = 0; i < r.o.connections; i++) conn_next(&r, &r.conns[i]);
        uint64_t span = r.o.kill_min_ms + h_rng_below(&r.rng, r.o.kill_max_ms - r.o.kill_min_ms + 1);
        load_until(&r, h_now_ns() + span * 1000000ull);
        kill_and_check(&r);
        server_start(&r);
        check_live_digest(&r);
    }
    connect_all(&r);
    resend_pending(&r);
    retry_acked(&r);
    disconnect_all(&r);
    final_checks(&r);
    double secs = (double)(h_now_ns() - start) / 1e9;
    printf("crashloop: kills %u, acknowledged writes %" PRIu64 " (%" PRIu64 " ok, %" PRIu64 " refused), "
           "retried after kill %" PRIu64 " (and %" PRIu64 " acknowledged ones: same answer), losses %" PRIu64 ", applied twice %" PRIu64 ", head %" PRIu64
           ", DIGEST equal to replay after %" PRIu64 " restarts, WATCH showed %" PRIu64 " records (all durable), %.1f s\n", r.kills, r.acked, r.acked_ok,
           r.acked - r.acked_ok, r.retried, r.acked_retries, r.losses, r.doubles, r.last_head, r.digest_checks, r.watch.shown, secs);
    for (size_t i = 0; i < r.op_count; i++) free(r.ops[i].sentence);
    free(r.ops);
    free(r.watch.hashes);
    return r.losses == 0 && r.doubles == 0 ? 0 : 1;
}
