/* commands.c — berthd's command table and every command's handler.
 *
 * Owns what each command name means: its arity, its flags (WRITE stages into
 * the group commit, READ must see only committed state, NOAUTH may run
 * before AUTH, WATCHOK may run on a watching connection) and its handler,
 * in one table like Redis's. Dispatch enforces auth, read-only logins,
 * arity, and the ordering rule of group commit: a command that reads state
 * waits until every staged write is durable, and any command from a client
 * whose earlier writes are still held waits for their replies, so no reply
 * reveals an effect that is not durable and every client's replies leave in
 * the order it sent its commands. The waiting client is parked (its command
 * left unread, parsed again when it resumes), so the loop serves everyone
 * else meanwhile. */
#include "server.h"

#include <assert.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "replay.h"

#define CMD_WRITE 0x01u
#define CMD_READ 0x02u
#define CMD_NOAUTH 0x04u
#define CMD_WATCHOK 0x08u
/* Reads the LMDB journal itself, not only the state: with the commit log
 * it waits for LMDB to hold the durable head (batch.c, PARK_JOURNAL). */
#define CMD_JOURNAL 0x40u
/* Of those, one that may read LMDB as it is when no checkpoint can run (the
 * disk or map full): INSTANCE.GET (its DEPLOY's time is then null) and
 * WATCH (its catch-up waits). The others answer -FULL then. */
#define CMD_JOURNAL_OPTIONAL 0x80u
#define CMD_ADMIN 0x10u
#define CMD_NAME_SHOWN_MAX 64           /* bytes of an unknown name echoed back */
#define INFO_LEN_INITIAL 8192           /* grown as needed: a long --data path, a full policy */

typedef struct command command;
typedef void (*command_proc)(client *c, const command *cmd, size_t argc, const berth_str *argv);

struct command {
    const char *name;
    size_t name_len;            /* checked before the case-insensitive compare */
    int arity;                  /* > 0: exactly; < 0: at least -arity words */
    uint32_t flags;
    command_proc proc;
    const char *group;
    const char *summary;
};

static const command *command_lookup(berth_str name);
static size_t command_count(void);
static const command *command_at(size_t i);

/* ---- connection commands ----------------------------------------------- */

static void cmd_ping(client *c, const command *cmd, size_t argc, const berth_str *argv) {
    if (argc <= 2 && c->watching && c->out.proto == 2) {
        /* As Redis answers PING in subscribe mode under RESP2: an array,
         * so a reader of the stream's subscribe-style frames (which are
         * all arrays) never meets a simple string there. */
        reply_array(&c->out, 2);
        reply_bulk(&c->out, "pong", 4);
        if (argc == 2) {
            reply_bulk_str(&c->out, argv[1]);
        } else {
            reply_bulk(&c->out, "", 0);
        }
    } else if (argc == 1) {
        reply_simple(&c->out, "PONG");
    } else if (argc == 2) {
        reply_bulk_str(&c->out, argv[1]);
    } else {
        reply_error(&c->out, "ERR", "wrong number of arguments for 'ping' command");
    }
    (void)cmd;
}

static void cmd_echo(client *c, const command *cmd, size_t argc, const berth_str *argv) {
    reply_bulk_str(&c->out, argv[1]);
    (void)cmd;
    (void)argc;
}

static void cmd_quit(client *c, const command *cmd, size_t argc, const berth_str *argv) {
    reply_simple(&c->out, "OK");
    c->close_after_flush = true;
    (void)cmd;
    (void)argc;
    (void)argv;
}

/* Constant time in the password's content: both sides are hashed to fixed
 * length first, then compared with CRYPTO_memcmp. */
static bool password_equal(berth_str given, const char *expected) {
    uint8_t a[SHA256_DIGEST_LENGTH];
    uint8_t b[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)given.ptr, given.len, a);
    SHA256((const unsigned char *)expected, strlen(expected), b);
    return CRYPTO_memcmp(a, b, sizeof a) == 0;
}

/* Redis 7's one user while no ACL is set: berthd has no other. */
#define AUTH_USER_DEFAULT "default"

/* Both passwords are always compared, and the user name too, whatever the
 * other compares said, so timing does not tell which matched or whether the
 * name did. user NULL (the one-word AUTH) is the default user. */
static client_role password_role(const server *s, const berth_str *user, berth_str given) {
    bool user_ok = user == NULL || password_equal(*user, AUTH_USER_DEFAULT);
    bool admin = password_equal(given, s->config.admin_password);
    bool readonly = s->config.readonly_password[0] != '\0' &&
                    password_equal(given, s->config.readonly_password);
    if (!user_ok) {
        return ROLE_NONE;
    }
    return admin ? ROLE_ADMIN : readonly ? ROLE_READONLY : ROLE_NONE;
}

/* AUTH [user] pass (user NULL: the one-word form). berthd has one user,
 * Redis 7's "default", as redis-server has before any ACL: with a password
 * set, "default" (or the one-word form) with the admin password logs in as
 * admin, with the read-only password as read-only; any other user name is
 * WRONGPASS, as redis-server answers it, whatever the password (the name
 * compared in constant time like the passwords). Without one, berthd
 * answers as Redis 7 does, whose default user then has no password: the
 * user "default" with any password is accepted, since client libraries
 * given credentials send them on connect (HELLO 3 AUTH default …); another
 * user is WRONGPASS; the one-word form says no password is configured. */
static bool client_authenticate(client *c, const berth_str *user, berth_str pass) {
    server *s = c->server;
    if (s->config.admin_password[0] == '\0') {
        if (user == NULL) {
            reply_error(&c->out, "ERR", "AUTH <password> called without any password configured; "
                                        "start berthd with --requirepass or --password-file");
            return false;
        }
        if (!berth_str_eq(*user, berth_str_make(AUTH_USER_DEFAULT, sizeof AUTH_USER_DEFAULT - 1))) {
            reply_error(&c->out, "WRONGPASS", "invalid username-password pair or user is disabled.");
            return false;
        }
        assert(c->role == ROLE_ADMIN);
        return true;
    }
    client_role role = password_role(s, user, pass);
    if (role == ROLE_NONE) {
        reply_error(&c->out, "WRONGPASS", "invalid username-password pair or user is disabled.");
        return false;
    }
    c->role = role;
    return true;
}

static void cmd_auth(client *c, const command *cmd, size_t argc, const berth_str *argv) {
    if (argc > 3) {
        reply_error(&c->out, "ERR", "wrong number of arguments for 'auth' command");
        return;
    }
    if (client_authenticate(c, argc == 3 ? &argv[1] : NULL, argv[argc - 1])) {
        reply_simple(&c->out, "OK");
    }
    (void)cmd;
}

/* A word of the client's, as an error echoes it: at most
 * CMD_NAME_SHOWN_MAX bytes, each byte outside printable ASCII shown as '?'
 * (core's quote_word does the same for names). Without it a NUL would end
 * the echo early. Returns out. */
static const char *shown_word(berth_str word, char out[CMD_NAME_SHOWN_MAX + 1]) {
    size_t n = word.len < CMD_NAME_SHOWN_MAX ? word.len : CMD_NAME_SHOWN_MAX;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)word.ptr[i];
        out[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    out[n] = '\0';
    return out;
}

/* An empty name clears it, as in Redis; any other must be a name. */
static bool client_name_ok(client *c, berth_str name) {
    if (name.len > 0 && !berth_name_valid(name)) {
        reply_error(&c->out, "ERR", "client names are 1 to %d bytes of [A-Za-z0-9._:/-], or empty to "
                                    "clear it (the name is the actor recorded in the journal)",
                    BERTH_NAME_LEN_MAX);
        return false;
    }
    return true;
}

static bool client_setname(client *c, berth_str name) {
    if (!client_name_ok(c, name)) {
        return false;
    }
    assert(name.len <= sizeof c->actor);
    memcpy(c->actor, name.ptr, name.len);
    c->actor_len = name.len;
    return true;
}

static void hello_reply(client *c) {
    reply_map(&c->out, 7);
    reply_bulk_lit(&c->out, "server");
    reply_bulk_lit(&c->out, "berth");
    reply_bulk_lit(&c->out, "version");
    reply_bulk_cstr(&c->out, BERTHD_VERSION);
    reply_bulk_lit(&c->out, "proto");
    reply_int(&c->out, c->out.proto);
    reply_bulk_lit(&c->out, "id");
    reply_uint(&c->out, c->id);
    reply_bulk_lit(&c->out, "mode");
    reply_bulk_lit(&c->out, "standalone");
    reply_bulk_lit(&c->out, "role");
    if (replication_is_replica(c->server)) {
        reply_bulk_lit(&c->out, "replica");     /* Redis 7's word in HELLO; INFO says slave */
    } else {
        reply_bulk_lit(&c->out, "master");
    }
    reply_bulk_lit(&c->out, "modules");
    reply_array(&c->out, 0);
}

/* HELLO [protover [AUTH user pass] [SETNAME name]] */
static void cmd_hello(client *c, const command *cmd, size_t argc, const berth_str *argv) {
    uint64_t proto = c->out.proto;
    if (argc >= 2 && (!berth_parse_u64(argv[1], &proto) || (proto != 2 && proto != 3))) {
        reply_error(&c->out, "NOPROTO", "unsupported protocol version; berthd speaks 2 and 3");
        return;
    }
    berth_str user = { NULL, 0 };
    berth_str pass = { NULL, 0 };
    berth_str name = { NULL, 0 };
    bool has_pass = false, has_name = false;
    for (size_t i = 2; i < argc; i++) {
        if (berth_str_eq_word(argv[i], "AUTH") && i + 2 < argc) {
            user = argv[i + 1];
            pass = argv[i + 2];
            has_pass = true;
            i += 2;
        } else if (berth_str_eq_word(argv[i], "SETNAME") && i + 1 < argc) {
            name = argv[++i];
            has_name = true;
        } else {
            reply_error(&c->out, "ERR", "syntax error in HELLO: expected [AUTH user pass] [SETNAME name]");
            return;
        }
    }
    /* A HELLO answered with an error changes nothing: its name is checked
     * before its AUTH can log the connection in. */
    if (has_name && !client_name_ok(c, name)) {
        return;
    }
    if (has_pass && !client_authenticate(c, &user, pass)) {
        return;
    }
    if (c->role == ROLE_NONE) {
        reply_error(&c->out, "NOAUTH", "HELLO must be called with the client already "
                                       "authenticated, or with HELLO <proto> AUTH <user> <pass>");
        return;
    }
    if (has_name && !client_setname(c, name)) {
        return;
    }
    c->out.proto = (uint8_t)proto;
    hello_reply(c);
    (void)cmd;
}

static void cmd_client(client *c, const command *cmd, size_t argc, const berth_str *argv) {
    if (berth_str_eq_word(argv[1], "SETNAME") && argc == 3) {
        if (client_setname(c, argv[2])) {
            reply_simple(&c->out, "OK");
        }
    } else if (berth_str_eq_word(argv[1], "GETNAME") && argc == 2) {
        if (c->actor_len == 0) {
            reply_null(&c->out);
        } else {
            reply_bulk(&c->out, c->actor, c->actor_len);
        }
    } else if (berth_str_eq_word(argv[1], "ID") && argc == 2) {
        reply_uint(&c->out, c->id);
    } else if (berth_str_eq_word(argv[1], "SETINFO") && argc == 4) {
        reply_simple(&c->out, "OK");    /* client libraries send it; berth keeps nothing */
    } else {
        reply_error(&c->out, "ERR", "CLIENT takes SETNAME <name>, GETNAME, ID or SETINFO");
    }
    (void)cmd;
}

/* ---- INFO -------------------------------------------------------------- */

/* INFO's text. It grows instead of clamping: its worst case (a --data path
 * of PATH_MAX, 32 exclusive backends of 128 bytes, etcd endpoints and the
 * last error) is far past any fixed size worth keeping, and a cut reply
 * would drop the sections after the cut (role:master among them) silently. */
typedef struct text {
    char *buf;
    size_t len;
    size_t cap;
    bool failed;                /* out of memory: the reply is an error */
} text;

static bool text_reserve(text *t, size_t need) {
    if (need <= t->cap) {
        return true;
    }
    size_t cap = t->cap == 0 ? INFO_LEN_INITIAL : t->cap;
    while (cap < need) {
        cap *= 2;
    }
    char *buf = realloc(t->buf, cap);
    if (buf == NULL) {
        t->failed = true;
        return false;
    }
    t->buf = buf;
    t->cap = cap;
    return true;
}

static void text_add(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_add(text *t, const char *fmt, ...) {
    if (t->failed || !text_reserve(t, t->len + 1)) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    assert(n >= 0);
    if ((size_t)n >= t->cap - t->len) {
        if (text_reserve(t, t->len + (size_t)n + 1)) {
            int m = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, again);
            assert(m == n);
            (void)m;
        }
    }
    va_end(again);
    if (!t->failed) {
        t->len += (size_t)n;
        assert(t->len < t->cap);
    }
}

static void info_server(server *s, text *t) {
    ev_tstamp up = ev_now(s->loop) - s->started_at;
    text_add(t, "# Server\r\nberth_version:%s\r\nprocess_id:%d\r\ntcp_port:%u\r\nunixsocket:%s\r\n"
                "data_dir:%s\r\nuptime_in_seconds:%llu\r\nstartup_records:%llu\r\n"
                "startup_ms:%llu\r\n\r\n",
             BERTHD_VERSION, (int)getpid(), s->config.port, s->config.unixsocket,
             s->config.data_dir, (unsigned long long)up, (unsigned long long)s->start_records,
             (unsigned long long)s->start_ms);
}

static void info_clients(server *s, text *t) {
    text_add(t, "# Clients\r\nconnected_clients:%u\r\nmaxclients:%u\r\nwatch_clients:%u\r\n"
                "blocked_clients:%u\r\n\r\n",
             s->client_count, s->config.max_clients, s->watcher_count, s->jobs.outstanding);
}

static void info_journal(server *s, text *t) {
    berth_journal_sizes sizes;
    berth_jerr err = berth_journal_size(s->journal, &sizes);
    berth_fold_stats fold;
    berth_jerr ferr = berth_journal_fold_stats(s->journal, &fold);
    assert(ferr == BERTH_J_OK);
    text_add(t, "# Journal\r\nhead_seq:%llu\r\ndisk_bytes:%llu\r\nmap_bytes:%llu\r\n"
                "history_disk_bytes:%llu\r\nhistory_map_bytes:%llu\r\n"
                "size_status:%s\r\nsnapshot_every:%llu\r\n",
             (unsigned long long)batch_durable_head(s), (unsigned long long)sizes.disk_bytes,
             (unsigned long long)sizes.map_bytes, (unsigned long long)sizes.history_disk_bytes,
             (unsigned long long)sizes.history_map_bytes, berth_jerr_name(err),
             (unsigned long long)s->config.snapshot_every);
    batch_clog_stats clog;
    batch_commit_log_stats(s, &clog);
    text_add(t, "commit_log:%s\r\n", clog.enabled ? "on" : "off");
    if (clog.enabled) {
        /* lmdb_head_seq trails head_seq until a checkpoint moves the
         * log's frames into LMDB (batch.c, "The commit log"). */
        text_add(t, "lmdb_head_seq:%llu\r\ncommit_log_used_bytes:%llu\r\n"
                    "commit_log_size_bytes:%llu\r\ncheckpoints:%llu\r\n"
                    "checkpoints_background:%llu\r\n"
                    "checkpoint_records:%llu\r\ncheckpoint_failures:%llu\r\n"
                    "commit_log_status:%s\r\ncheckpoint_priority:%s\r\n"
                    "checkpoint_background_runs:%llu\r\ncheckpoint_boosts:%llu\r\n"
                    "checkpoint_holder_raises:%llu\r\ncommit_on_loop:%s\r\n"
                    "commit_frame_avg_us:%llu\r\n",
                 (unsigned long long)batch_journal_head(s), (unsigned long long)clog.used_bytes,
                 (unsigned long long)clog.size_bytes, (unsigned long long)clog.checkpoints,
                 (unsigned long long)clog.checkpoints_sealed,
                 (unsigned long long)clog.checkpoint_records,
                 (unsigned long long)clog.checkpoint_failures, berth_jerr_name(clog.stuck),
                 clog.background ? "background" : "normal",
                 (unsigned long long)clog.background_runs, (unsigned long long)clog.boosts,
                 (unsigned long long)clog.holder_raises, clog.on_loop,
                 (unsigned long long)clog.frame_us_avg);
    }
    text_add(t, "history_folded_seq:%llu\r\nhistory_fold_backlog:%llu\r\n"
                "history_fold_backlog_max:%llu\r\nhistory_folds:%llu\r\n"
                "history_runs:%llu\r\nhistory_merges:%llu\r\n\r\n",
             (unsigned long long)fold.folded_seq, (unsigned long long)fold.backlog,
             (unsigned long long)fold.backlog_max, (unsigned long long)fold.folds,
             (unsigned long long)fold.runs, (unsigned long long)fold.merges);
}

static void info_state(server *s, text *t) {
    const berth_state *st = berth_engine_state(s->engine);
    const berth_str *backends = NULL;
    uint32_t n = berth_state_policy(st, &backends);
    text_add(t, "# State\r\nworkers:%zu\r\ninstances:%zu\r\nexclusive_backends:",
             berth_state_worker_count(st), berth_state_instance_count(st));
    for (uint32_t i = 0; i < n; i++) {
        text_add(t, "%s%.*s", i == 0 ? "" : ",", (int)backends[i].len, backends[i].ptr);
    }
    text_add(t, "\r\nreqids_remembered:%zu\r\n\r\n", berth_state_reqid_count(st));
}

static void info_stats(server *s, text *t) {
    const server_stats *st = &s->stats;
    text_add(t, "# Stats\r\ntotal_connections_received:%llu\r\nrejected_connections:%llu\r\n"
                "accept_pauses:%llu\r\n"
                "total_commands_processed:%llu\r\nwrites_staged:%llu\r\ncommits:%llu\r\n"
                "commit_failures:%llu\r\ncommit_syncs:%llu\r\ncommits_on_loop:%llu\r\n"
                "records_committed:%llu\r\n"
                "protocol_errors:%llu\r\n"
                "watch_disconnects:%llu\r\nwatch_catchups:%llu\r\n"
                "idle_disconnects:%llu\r\noutput_stall_disconnects:%llu\r\n"
                "background_jobs:%llu\r\nbackground_jobs_timed_out:%llu\r\n"
                "background_job_processes_unreaped:%u\r\n\r\n",
             (unsigned long long)st->connections_received,
             (unsigned long long)st->connections_rejected, (unsigned long long)st->accept_pauses,
             (unsigned long long)st->commands_processed, (unsigned long long)st->writes_staged,
             (unsigned long long)st->commits, (unsigned long long)st->commit_failures,
             (unsigned long long)st->commit_syncs, (unsigned long long)st->commits_on_loop,
             (unsigned long long)st->records_committed, (unsigned long long)st->protocol_errors,
             (unsigned long long)st->watch_disconnects, (unsigned long long)st->watch_catchups,
             (unsigned long long)st->idle_disconnects,
             (unsigned long long)st->output_stall_disconnects, (unsigned long long)st->jobs_run,
             (unsigned long long)st->jobs_timed_out, (unsigned)jobs_unreaped(s));
}

static void info_latency(server *s, text *t) {
    const server_stats *st = &s->stats;
    text_add(t, "# Latency\r\ncommit_latency_p50_us:%llu\r\ncommit_latency_p99_us:%llu\r\n"
                "commit_latency_p999_us:%llu\r\ncommit_latency_max_us:%llu\r\n\r\n",
             (unsigned long long)latency_percentile_us(st, 0.50),
             (unsigned long long)latency_percentile_us(st, 0.99),
             (unsigned long long)latency_percentile_us(st, 0.999),
             (unsigned long long)latency_percentile_us(st, 1.0));
}

/* The etcd figures may move between two reads (the backend's threads count
 * on), so a cut section is read again into a room that fits the last one. */
#define INFO_REPLICATION_TRIES_MAX 8

static void info_replication(server *s, text *t) {
    for (int i = 0; i < INFO_REPLICATION_TRIES_MAX; i++) {
        if (t->failed || !text_reserve(t, t->len + 1)) {
            return;
        }
        size_t n = replication_info(s, t->buf + t->len, t->cap - t->len);
        if (n < t->cap - t->len) {
            t->len += n;
            return;
        }
        if (!text_reserve(t, t->len + n + 1 + 256)) {
            return;
        }
    }
    t->failed = true;       /* never seen: each try has room for the one before and more */
}

typedef struct info_section {
    const char *name;
    void (*fn)(server *s, text *t);
} info_section;

static const info_section info_sections[] = {
    { "server", info_server },   { "clients", info_clients }, { "journal", info_journal },
    { "state", info_state },     { "stats", info_stats },     { "latency", info_latency },
    { "replication", info_replication },
};
#define INFO_SECTIONS (sizeof info_sections / sizeof info_sections[0])

static void cmd_info(client *c, const command *cmd, size_t argc, const berth_str *argv) {
    text t = { NULL, 0, 0, false };
    bool all = argc == 1;
    for (size_t i = 1; i < argc; i++) {
        all = all || berth_str_eq_word(argv[i], "all") || berth_str_eq_word(argv[i], "default") ||
              berth_str_eq_word(argv[i], "everything");
    }
    for (size_t k = 0; k < INFO_SECTIONS; k++) {
        bool want = all;
        for (size_t i = 1; i < argc && !want; i++) {
            want = berth_str_eq_word(argv[i], info_sections[k].name);
        }
        if (want) {
            info_sections[k].fn(c->server, &t);
        }
    }
    if (t.failed) {
        reply_error(&c->out, "ERR", "out of memory building the INFO reply");
    } else {
        reply_verbatim(&c->out, t.len == 0 ? "" : t.buf, t.len);
    }
    free(t.buf);
    (void)cmd;
}

/* ---- COMMAND, CONFIG --------------------------------------------------- */

static void command_name_lower(const command *cmd, char *out, size_t size) {
    size_t len = strlen(cmd->name);
    assert(len < size);
    for (size_t i = 0; i <= len; i++) {
        char ch = cmd->name[i];
        out[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
    }
}

/* Redis 7's 10-element command info, enough for redis-cli and client libraries. */
static void command_info(reply_buf *rb, const command *cmd) {
    char name[64];
    command_name_lower(cmd, name, sizeof name);
    reply_array(rb, 10);
    reply_bulk_cstr(rb, name);
    reply_int(rb, cmd->arity);
    size_t flags = 0;
    const char *names[3];
    if (cmd->flags & CMD_WRITE) {
        names[flags++] = "write";
    } else {
        names[flags++] = "readonly";
    }
    if (cmd->flags & CMD_NOAUTH) {
        names[flags++] = "no_auth";
    }
    if (cmd->flags & CMD_ADMIN) {
        names[flags++] = "admin";
    }
    reply_array(rb, flags);
    for (size_t i = 0; i < flags; i++) {
        reply_simple(rb, names[i]);
    }
    reply_int(rb, 0);
    reply_int(rb, 0);
    reply_int(rb, 0);
    reply_array(rb, 0);
    reply_array(rb, 0);
    reply_array(rb, 0);
    reply_array(rb, 0);
}

static void command_docs(reply_buf *rb, const command *cmd) {
    char name[64];
    command_name_lower(cmd, name, sizeof name);
    reply_bulk_cstr(rb, name);
    reply_map(rb, 3);
    reply_bulk_lit(rb, "summary");
    reply_bulk_cstr(rb, cmd->summary);
    reply_bulk_lit(rb, "since");
    reply_bulk_lit(rb, "0.1.0");
    reply_bulk_lit(rb, "group");
    reply_bulk_cstr(rb, cmd->group);
}

static void cmd_command(client *c, const command *self, size_t argc, const berth_str *argv) {
    reply_buf *rb = &c->out;
    size_t n = command_count();
    /* Bare COMMAND and COMMAND INFO with no name both list every command,
     * as Redis 7 answers them. */
    if (argc == 1 || (argc == 2 && berth_str_eq_word(argv[1], "INFO"))) {
        reply_array(rb, n);
        for (size_t i = 0; i < n; i++) {
            command_info(rb, command_at(i));
        }
    } else if (berth_str_eq_word(argv[1], "COUNT") && argc == 2) {
        reply_int(rb, (int64_t)n);
    } else if (berth_str_eq_word(argv[1], "LIST") && argc == 2) {
        reply_array(rb, n);
        for (size_t i = 0; i < n; i++) {
            char name[64];
            command_name_lower(command_at(i), name, sizeof name);
            reply_bulk_cstr(rb, name);
        }
    } else if (berth_str_eq_word(argv[1], "INFO")) {
        reply_array(rb, argc - 2);
        for (size_t i = 2; i < argc; i++) {
            const command *cmd = command_lookup(argv[i]);
            if (cmd == NULL) {
                reply_null(rb);
            } else {
                command_info(rb, cmd);
            }
        }
    } else if (berth_str_eq_word(argv[1], "DOCS")) {
        size_t found = 0;
        for (size_t i = 2; i < argc; i++) {
            found += command_lookup(argv[i]) != NULL;
        }
        reply_map(rb, argc == 2 ? n : found);
        for (size_t i = 0; argc == 2 && i < n; i++) {
            command_docs(rb, command_at(i));
        }
        for (size_t i = 2; i < argc; i++) {
            const command *cmd = command_lookup(argv[i]);
            if (cmd != NULL) {
                command_docs(rb, cmd);
            }
        }
    } else {
        reply_error(rb, "ERR", "COMMAND takes COUNT, LIST, INFO [name ...] or DOCS [name ...]");
    }
    (void)self;
}

/* CONFIG GET <name>: the settings clients probe. berth never acknowledges a
 * write before it is durable, which is what appendonly/fsync-always means to
 * tools such as redis-benchmark. */
static void cmd_config(client *c, const command *cmd, size_t argc, const berth_str *argv) {
    reply_buf *rb = &c->out;
    if (!berth_str_eq_word(argv[1], "GET") || argc != 3) {
        reply_error(rb, "ERR", "CONFIG takes GET <name>");
        return;
    }
    char value[32];
    const char *v = NULL;
    const char *name = NULL;
    if (berth_str_eq_word(argv[2], "save")) {
        name = "save";
        v = "";
    } else if (berth_str_eq_word(argv[2], "appendonly")) {
        name = "appendonly";
        v = "yes";
    } else if (berth_str_eq_word(argv[2], "appendfsync")) {
        name = "appendfsync";
        v = "always";
    } else if (berth_str_eq_word(argv[2], "maxclients")) {
        name = "maxclients";
        snprintf(value, sizeof value, "%u", c->server->config.max_clients);
        v = value;
    }
    if (name == NULL) {
        reply_map(rb, 0);
        return;
    }
    reply_map(rb, 1);
    reply_bulk_cstr(rb, name);
    reply_bulk_cstr(rb, v);
    (void)cmd;
}

/* ---- queries, audit ---------------------------------------------------- */

static query_ctx live_ctx(server *s) {
    query_ctx ctx = { berth_engine_state(s->engine), NULL, s->journal, &s->scratch, &s->scratch_cap };
    return ctx;
}

static void cmd_query(client *c, const command *cmd, size_t argc, const berth_str *argv) {
    int arity = 0;
    query_fn fn = query_lookup(argv[0], &arity);
    assert(fn != NULL && arity == cmd->arity);
    query_ctx ctx = live_ctx(c->server);
    fn(&ctx, argc, argv, &c->out);
}

static bool arity_ok(int arity, size_t argc);

bool commands_check_query_arity(reply_buf *rb, berth_str name, int arity, size_t argc) {
    bool ok = arity_ok(arity, argc);
    if (!ok) {
        char shown[CMD_NAME_SHOWN_MAX + 1];
        reply_error(rb, "ERR", "wrong number of arguments for '%s' command", shown_word(name, shown));
    }
    return ok;
}

static bool parse_seq(client *c, berth_str word, const char *what, uint64_t *out) {
    if (berth_parse_u64(word, out)) {
        return true;
    }
    char shown[CMD_NAME_SHOWN_MAX + 1];
    reply_error(&c->out, "ERR", "%s must be a whole number, got '%s'", what, shown_word(word, shown));
    return false;
}

/* AT <seq> <query ...>: the present answers at once; the past on a replay
 * built off the loop. */
static void cmd_at(client *c, const command *cmd, size_t argc, const berth_str *argv) {
    server *s = c->server;
    uint64_t seq = 0;
    if (!parse_seq(c, argv[1], "AT's seq", &seq)) {
        return;
    }
    int arity = 0;
    query_fn fn = query_lookup(argv[2], &arity);
    if (fn == NULL) {
        reply_error(&c->out, "ERR", "AT takes a query: WORKER.GET, WORKER.LIST, INSTANCE.GET, "
                                    "INSTANCE.LIST, POLICY.GET or DIGEST");
        return;
    }
    if (!commands_check_query_arity(&c->out, argv[2], arity, argc - 2)) {
        return;
    }
    uint64_t head = batch_durable_head(s);
    if (seq > head) {
        reply_error(&c->out, "ERR", "seq %llu is beyond the journal's head %llu",
                    (unsigned long long)seq, (unsigned long long)head);
        return;
    }
    if (seq == head) {
        query_ctx ctx = live_ctx(s);
        fn(&ctx, argc - 2, argv + 2, &c->out);
        return;
    }
    jobs_submit_at(c, seq, argc - 2, argv + 2);
    (void)cmd;
}

static void cmd_verify(client *c, const command *cmd, size_t argc, const berth_str *argv) {
    jobs_submit_verify(c);
    (void)cmd;
    (void)argc;
    (void)argv;
}

static void cmd_journal_head(client *c, const command *cmd, size_t argc, const berth_str *argv) {
    uint64_t seq = 0;
    uint8_t hash[BERTH_HASH_LEN];
    berth_jerr err = berth_journal_head(c->server->journal, &seq, hash);
    if (err != BERTH_J_OK) {
        reply_error(&c->out, "IOERR", "cannot read the journal head: %s", berth_jerr_name(err));
        return;
    }
    char hex[2 * BERTH_HASH_LEN + 1];
    berth_hex(hash, BERTH_HASH_LEN, hex);
    reply_map(&c->out, 2);
    reply_bulk_lit(&c->out, "seq");
    reply_uint(&c->out, seq);
    reply_bulk_lit(&c->out, "hash");
    reply_bulk(&c->out, hex, 2 * BERTH_HASH_LEN);
    (void)cmd;
    (void)argc;
    (void)argv;
}

static bool parse_count(client *c, berth_str word, uint64_t *count) {
    if (!parse_seq(c, word, "count", count)) {
        return false;
    }
    if (*count == 0 || *count > SERVER_RANGE_COUNT_MAX) {
        reply_error(&c->out, "ERR", "count must be 1 to %d", SERVER_RANGE_COUNT_MAX);
        return false;
    }
    return true;
}

/* Records by seq; the reply's length is only known after reading them, so
 * they are encoded into a side buffer first. */
static void reply_records(client *c, berth_journal_reader *reader, const uint64_t *seqs, size_t n,
                          uint64_t from, uint64_t count) {
    static reply_buf side;
    if (side.data == NULL && side.cap == 0) {
        reply_init(&side, 2);
    }
    side.proto = c->out.proto;
    reply_consumed(&side, reply_pending(&side));
    size_t got = 0;
    berth_jerr err = BERTH_J_OK;
    for (uint64_t i = 0; i < (seqs != NULL ? n : count); i++) {
        berth_record rec;
        err = berth_journal_read(reader, seqs != NULL ? seqs[i] : from + i, &rec, NULL, NULL);
        if (err == BERTH_J_NOTFOUND && seqs == NULL) {
            err = BERTH_J_OK;
            break;
        }
        if (err != BERTH_J_OK) {
            break;
        }
        reply_record(&side, &rec);
        got++;
    }
    if (err != BERTH_J_OK || side.failed) {
        side.failed = false;
        reply_error(&c->out, "IOERR", "cannot read the journal: %s", berth_jerr_name(err));
        return;
    }
    reply_array(&c->out, got);
    reply_raw(&c->out, side.data + side.start, reply_pending(&side));
    reply_shrink(&side, SERVER_OUTPUT_IDLE_CAP_MAX);
}

static void cmd_journal_range(client *c, const command *cmd, size_t argc, const berth_str *argv) {
    uint64_t from = 0, count = 0;
    if (!parse_seq(c, argv[1], "from", &from) || !parse_count(c, argv[2], &count)) {
        return;
    }
    if (from == 0) {
        from = 1;
    }
    berth_journal_reader *reader = NULL;
    berth_jerr err = berth_journal_reader_open(c->server->journal, &reader);
    if (err != BERTH_J_OK) {
        reply_error(&c->out, "IOERR", "cannot open a journal reader: %s", berth_jerr_name(err));
        return;
    }
    reply_records(c, reader, NULL, 0, from, count);
    berth_journal_reader_close(reader);
    (void)cmd;
    (void)argc;
}

/* HISTORY WORKER <w> | INSTANCE <i> [<from> <count>], served from the index. */
static void cmd_history(client *c, const command *cmd, size_t argc, const berth_str *argv) {
    berth_history_kind kind;
    if (berth_str_eq_word(argv[1], "WORKER")) {
        kind = BERTH_HISTORY_WORKER;
    } else if (berth_str_eq_word(argv[1], "INSTANCE")) {
        kind = BERTH_HISTORY_INSTANCE;
    } else {
        reply_error(&c->out, "ERR", "HISTORY takes WORKER <name> or INSTANCE <name> [<from> <count>]");
        return;
    }
    if (argc != 3 && argc != 5) {
        reply_error(&c->out, "ERR", "wrong number of arguments for 'history' command");
        return;
    }
    if (!berth_name_valid(argv[2])) {
        reply_error(&c->out, "ERR", "invalid name: 1 to %d bytes of [A-Za-z0-9._:/-]", BERTH_NAME_LEN_MAX);
        return;
    }
    uint64_t from = 1, count = SERVER_HISTORY_COUNT_DEFAULT;
    if (argc == 5 && (!parse_seq(c, argv[3], "from", &from) || !parse_count(c, argv[4], &count))) {
        return;
    }
    berth_journal_reader *reader = NULL;
    berth_jerr err = berth_journal_reader_open(c->server->journal, &reader);
    if (err != BERTH_J_OK) {
        reply_error(&c->out, "IOERR", "cannot open a journal reader: %s", berth_jerr_name(err));
        return;
    }
    static uint64_t seqs[SERVER_RANGE_COUNT_MAX];
    size_t n = 0;
    err = berth_journal_history(reader, kind, argv[2], from, seqs, (size_t)count, &n);
    if (err != BERTH_J_OK) {
        reply_error(&c->out, "IOERR", "cannot read the history index: %s", berth_jerr_name(err));
    } else {
        assert(n <= count);
        reply_records(c, reader, seqs, n, 0, 0);
    }
    berth_journal_reader_close(reader);
    (void)cmd;
}

static void cmd_watch(client *c, const command *cmd, size_t argc, const berth_str *argv) {
    uint64_t from = 0;
    if (c->watching) {
        reply_error(&c->out, "ERR", "this connection is already watching");
        return;
    }
    if (!parse_seq(c, argv[1], "WATCH's from-seq", &from)) {
        return;
    }
    watch_start(c, from);
    (void)cmd;
    (void)argc;
}

static void cmd_write(client *c, const command *cmd, size_t argc, const berth_str *argv) {
    if (c->server->fatal) {
        reply_error(&c->out, "IOERR", "berthd is stopping after a journal failure: the command "
                                          "was not applied");
        return;
    }
    if (replication_refuse_write(c)) {
        return;
    }
    batch_submit(c, argc, argv);
    (void)cmd;
}

/* ---- the table --------------------------------------------------------- */

#define W CMD_WRITE
#define R CMD_READ
#define J CMD_JOURNAL
static const command commands[] = {
    { "PING", sizeof "PING" - 1, -1, CMD_WATCHOK, cmd_ping, "connection", "Answer PONG, or echo the argument" },
    { "ECHO", sizeof "ECHO" - 1, 2, 0, cmd_echo, "connection", "Echo the argument" },
    { "QUIT", sizeof "QUIT" - 1, -1, CMD_NOAUTH | CMD_WATCHOK, cmd_quit, "connection", "Close the connection" },
    { "AUTH", sizeof "AUTH" - 1, -2, CMD_NOAUTH, cmd_auth, "connection", "Log in with the admin or read-only password" },
    { "HELLO", sizeof "HELLO" - 1, -1, CMD_NOAUTH, cmd_hello, "connection", "Choose RESP2 or RESP3, optionally AUTH and SETNAME" },
    { "CLIENT", sizeof "CLIENT" - 1, -2, 0, cmd_client, "connection", "SETNAME (the journal's actor), GETNAME, ID" },
    { "INFO", sizeof "INFO" - 1, -1, R, cmd_info, "server", "Server, clients, journal, state, stats, latency" },
    { "COMMAND", sizeof "COMMAND" - 1, -1, 0, cmd_command, "server", "Describe berthd's commands" },
    { "CONFIG", sizeof "CONFIG" - 1, -2, 0, cmd_config, "server", "CONFIG GET for client tools" },
    { "WORKER.ADD", sizeof "WORKER.ADD" - 1, -2, W, cmd_write, "write", "Register a worker and its GPUs" },
    { "WORKER.CORDON", sizeof "WORKER.CORDON" - 1, -2, W, cmd_write, "write", "Refuse new instances on a worker" },
    { "WORKER.UNCORDON", sizeof "WORKER.UNCORDON" - 1, -2, W, cmd_write, "write", "Accept new instances on a worker again" },
    { "WORKER.REMOVE", sizeof "WORKER.REMOVE" - 1, -2, W, cmd_write, "write", "Remove an idle worker" },
    { "DEPLOY", sizeof "DEPLOY" - 1, -2, W, cmd_write, "write", "Place an instance on workers' GPUs" },
    { "RELEASE", sizeof "RELEASE" - 1, -2, W, cmd_write, "write", "Release an instance" },
    { "POLICY.SET", sizeof "POLICY.SET" - 1, -2, W, cmd_write, "write", "Set the exclusive backends" },
    { "WORKER.GET", sizeof "WORKER.GET" - 1, 2, R, cmd_query, "query", "One worker: GPUs, state, labels, instances" },
    { "WORKER.LIST", sizeof "WORKER.LIST" - 1, -1, R, cmd_query, "query", "Worker names [STATE s] [FREE]" },
    { "INSTANCE.GET", sizeof "INSTANCE.GET" - 1, 2, R | J | CMD_JOURNAL_OPTIONAL, cmd_query, "query", "One instance: model, backend, placement" },
    { "INSTANCE.LIST", sizeof "INSTANCE.LIST" - 1, -1, R, cmd_query, "query", "Instance names [WORKER w] [MODEL m] [BACKEND b]" },
    { "POLICY.GET", sizeof "POLICY.GET" - 1, 1, R, cmd_query, "query", "The exclusive backends" },
    { "DIGEST", sizeof "DIGEST" - 1, 1, R, cmd_query, "query", "SHA-256 digest of the committed state" },
    { "AT", sizeof "AT" - 1, -3, R | J, cmd_at, "audit", "A query as of a past seq" },
    { "JOURNAL.HEAD", sizeof "JOURNAL.HEAD" - 1, 1, R | J, cmd_journal_head, "audit", "Last seq and its hash" },
    { "JOURNAL.RANGE", sizeof "JOURNAL.RANGE" - 1, 3, R | J, cmd_journal_range, "audit", "Records <from> <count>" },
    { "JOURNAL.VERIFY", sizeof "JOURNAL.VERIFY" - 1, 1, R | J, cmd_verify, "audit", "Check the whole hash chain and every outcome" },
    { "HISTORY", sizeof "HISTORY" - 1, -3, R | J, cmd_history, "audit", "Records that touched a worker or instance" },
    { "WATCH", sizeof "WATCH" - 1, 2, R | J | CMD_JOURNAL_OPTIONAL, cmd_watch, "audit", "Stream records from a seq, then live" },
};
#undef W
#undef R
#undef J
#define COMMANDS_COUNT (sizeof commands / sizeof commands[0])

static size_t command_count(void) {
    return COMMANDS_COUNT;
}

static const command *command_at(size_t i) {
    assert(i < COMMANDS_COUNT);
    return &commands[i];
}

/* Clients send names as the table spells them almost always: an exact
 * compare finds those, the case-blind one the rest. */
static const command *command_lookup(berth_str name) {
    for (size_t i = 0; i < COMMANDS_COUNT; i++) {
        if (commands[i].name_len == name.len && memcmp(name.ptr, commands[i].name, name.len) == 0) {
            return &commands[i];
        }
    }
    for (size_t i = 0; i < COMMANDS_COUNT; i++) {
        if (commands[i].name_len == name.len && berth_str_eq_word(name, commands[i].name)) {
            return &commands[i];
        }
    }
    return NULL;
}

/* ---- dispatch ---------------------------------------------------------- */

static bool arity_ok(int arity, size_t argc) {
    return arity > 0 ? argc == (size_t)arity : argc >= (size_t)-arity;
}

static bool dispatch_allowed(client *c, const command *cmd, size_t argc, const berth_str *argv) {
    if (c->role == ROLE_NONE && !(cmd->flags & CMD_NOAUTH)) {
        reply_error(&c->out, "NOAUTH", "Authentication required.");
        return false;
    }
    if (c->watching && !(cmd->flags & CMD_WATCHOK)) {
        reply_error(&c->out, "ERR", "only PING and QUIT are allowed on a connection that is watching");
        return false;
    }
    if (!commands_check_query_arity(&c->out, argv[0], cmd->arity, argc)) {
        return false;
    }
    if ((cmd->flags & CMD_WRITE) && c->role != ROLE_ADMIN) {
        reply_error(&c->out, "NOPERM", "this login is read-only: %s needs the admin password",
                    cmd->name);
        return false;
    }
    return true;
}

bool commands_dispatch(client *c, size_t argc, const berth_str *argv) {
    server *s = c->server;
    assert(argc >= 1 && !c->closed && c->parked == PARK_NONE);
    const command *cmd = command_lookup(argv[0]);
    client_drain_done(c);   /* it parks again below, or runs */
    bool pass = c->drain_pass;   /* one write, after a drain it waited out */
    c->drain_pass = false;
    /* A write that will be staged keeps its place in the batch; any other
     * reply must wait for this client's held replies (order) and a read must
     * wait for the staged writes of everyone (durability). On the LMDB road
     * the client waits parked, its command unread, while the loop serves
     * everyone else and the committer drains; a write waits too while a
     * read does, or a stream of writes could keep the state from ever
     * equalling the journal (and net_unpark runs the read first once it
     * does). A write that waited out a drain is staged at its turn even
     * if a read waits again by then: else a client pipelining "write;
     * read" pairs, whose every read parks anew, would hold every other
     * writer back until its pipeline ran dry. On etcd, whose commits run on the loop, the
     * flush is that commit. After a fatal error nothing is held any more
     * (batch_settle_fatal) and nothing waits. */
    bool staged_write = cmd != NULL && (cmd->flags & CMD_WRITE) && c->role == ROLE_ADMIN &&
                        !c->watching && arity_ok(cmd->arity, argc);
    /* A command dispatch_allowed refuses reads nothing: it never waits for
     * the drain (an unauthenticated client must not hold writers back). */
    bool refused = cmd == NULL || (c->role == ROLE_NONE && !(cmd->flags & CMD_NOAUTH)) ||
                   (c->watching && !(cmd->flags & CMD_WATCHOK)) || !arity_ok(cmd->arity, argc);
    bool reads_staged = !staged_write && !refused && (cmd->flags & CMD_READ) &&
                        !batch_state_durable(s);
    bool reads_journal = !staged_write && !refused && (cmd->flags & CMD_JOURNAL) &&
                         !batch_journal_current(s);
    bool order = !staged_write && c->batch_pending > 0;
    berth_jerr stuck = BERTH_J_OK;
    if (reads_journal && batch_writes_stuck(s, &stuck)) {
        /* No checkpoint can run: waiting for one could last until space
         * is freed, and LMDB as it is lacks acknowledged records. */
        reads_journal = false;
        if (!(cmd->flags & CMD_JOURNAL_OPTIONAL) && !order) {
            reply_error(&c->out, "FULL", "the journal cannot take the commit log's last %llu "
                        "acknowledged records now (%s): %s reads the journal and would miss "
                        "them; retry once space is freed",
                        (unsigned long long)(batch_durable_head(s) - batch_journal_head(s)),
                        berth_jerr_name(stuck), cmd->name);
            client_output_added(c);
            return true;
        }
    }
    if (s->pipe != NULL && !s->fatal) {
        if (reads_journal) {
            client_park(c, PARK_JOURNAL);
            batch_want_checkpoint(s);
            return false;
        }
        if (reads_staged || (staged_write && s->drain_waiters > 0 && !pass)) {
            client_park(c, reads_staged ? PARK_READ : PARK_DRAIN);
            return false;
        }
        if (order) {
            client_park(c, PARK_ORDER);
            return false;
        }
    } else if (order || reads_staged) {
        batch_flush(s);
    }
    if (s->fatal && cmd != NULL && (cmd->flags & CMD_READ)) {
        /* The state could not be reloaded after a failed commit: it may
         * hold effects that never became durable. */
        reply_error(&c->out, "IOERR", "berthd is stopping after a journal failure; its state "
                                      "is not served");
    } else if (cmd == NULL) {
        char shown[CMD_NAME_SHOWN_MAX + 1];
        reply_error(&c->out, "ERR", "unknown command '%s'", shown_word(argv[0], shown));
    } else if (dispatch_allowed(c, cmd, argc, argv)) {
        cmd->proc(c, cmd, argc, argv);
        if (c->wants_room) {
            /* Nothing of it was staged or answered: it runs again once the
             * full open batch is handed off (batch_submit). */
            c->wants_room = false;
            client_park(c, PARK_ROOM);
            return false;
        }
    }
    client_output_added(c);
    return true;
}
