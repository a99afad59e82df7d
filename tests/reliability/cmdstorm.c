/* cmdstorm.c — random commands with random arguments at a live berthd.
 *
 * Owns the promise that no command line, however wrong, crashes berthd,
 * hangs a connection or writes a journal that cannot be replayed. The
 * libFuzzer targets cover the parsers one by one; this drives the whole
 * server — dispatch, argument checks of every query and audit command (AT,
 * HISTORY, JOURNAL.RANGE, CLIENT, INFO, COMMAND, HELLO ...), group commit,
 * snapshots — with words drawn from berth's own vocabulary mixed with edge
 * numbers, odd GPU lists and garbage bytes. Several connections pipeline
 * batches; every command must get exactly one reply. Afterwards berthd must
 * still answer, stop cleanly, and its journal must verify offline (every
 * recorded outcome recomputed) with a replay digest equal to berthd's DIGEST.
 *
 *   berth_cmdstorm --berthd PATH --data DIR [--seconds S] [--connections C] [--seed S] */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"
#include "journal.h"
#include "replay.h"

#define CS_CONNECTIONS_MAX 64
#define CS_BATCH 32                     /* commands pipelined per round */
#define CS_ARGS_MAX 12                  /* random arguments after the command name */
#define CS_WORD_LEN_MAX 300
#define CS_REPLY_TIMEOUT_MS 60000       /* JOURNAL.VERIFY and AT run off the loop; give them time */
#define CS_ERR_LEN_MAX 1024

static const char *const command_names[] = {
    "PING", "ECHO", "AUTH", "HELLO", "CLIENT", "INFO", "COMMAND", "CONFIG",
    "WORKER.ADD", "WORKER.CORDON", "WORKER.UNCORDON", "WORKER.REMOVE", "DEPLOY", "RELEASE",
    "POLICY.SET", "WORKER.GET", "WORKER.LIST", "INSTANCE.GET", "INSTANCE.LIST", "POLICY.GET",
    "DIGEST", "AT", "JOURNAL.HEAD", "JOURNAL.RANGE", "JOURNAL.VERIFY", "HISTORY",
    "worker.add", "deploy", "NOSUCH", "",
};
#define COMMAND_NAME_COUNT (sizeof command_names / sizeof command_names[0])

/* Words with meaning somewhere in berth, and numbers at every edge. */
static const char *const vocabulary[] = {
    "MODEL", "BACKEND", "ON", "VRAM", "GPUS", "LABEL", "REQID", "EXCLUSIVE", "WORKER", "INSTANCE",
    "STATE", "FREE", "ACTIVE", "CORDONED", "SETNAME", "GETNAME", "ID", "SETINFO", "LIST", "COUNT",
    "DOCS", "GET", "server", "state", "stats", "journal", "latency", "clients", "all", "everything",
    "w0", "w1", "w2", "w3", "w1:0", "w1:0,1", "w2:7", "w2:63", "w3:64", "w1:0,0", "w1:", "w:1,",
    "i0", "i1", "i2", "m", "meta/llama-3-70b", "vllm", "sglang", "llama-box", "vllm,sglang", "vllm,vllm",
    "zone=a", "zone=", "=a", "a=b=c", "0", "1", "2", "3", "7", "8", "64", "65", "100", "81920",
    "16777216", "16777217", "-1", "-0", "+1", "1e3", "0x10", "4294967295", "4294967296",
    "9223372036854775807", "9223372036854775808", "18446744073709551615", "18446744073709551616",
    "99999999999999999999999", "AT", "PING", "DIGEST", "WORKER.GET", "INSTANCE.LIST", "JOURNAL.RANGE",
    "HISTORY", "DEPLOY", "", " ", "\t", "\r\n", "a b", "\"quoted\"", "'", "\\", "%s%n", "\xff\xfe",
};
#define VOCABULARY_COUNT (sizeof vocabulary / sizeof vocabulary[0])

typedef struct word {
    char text[CS_WORD_LEN_MAX];
    size_t len;
} word;

static void random_word(h_rng *rng, word *w) {
    uint64_t dice = h_rng_below(rng, 100);
    if (dice < 85) {
        const char *v = vocabulary[h_rng_below(rng, VOCABULARY_COUNT)];
        w->len = strlen(v);
        memcpy(w->text, v, w->len);
        return;
    }
    if (dice < 95) {   /* a long valid-looking name, sometimes over 128 bytes */
        w->len = 1 + (size_t)h_rng_below(rng, 200);
        for (size_t i = 0; i < w->len; i++) w->text[i] = "abcxyz019._:/-"[h_rng_below(rng, 14)];
        return;
    }
    w->len = (size_t)h_rng_below(rng, 40);   /* raw bytes, NUL and CR LF included */
    for (size_t i = 0; i < w->len; i++) w->text[i] = (char)h_rng_next(rng);
}

/* Well-formed shapes with typed slots, so the storm also reaches the deep
 * paths (placements that fit, AT far back, HISTORY ranges, REQID retries):
 * $I instance, $W worker, $M model, $B backend, $N number, $P placement,
 * $L label, $E backend list, $Q query word, $R request id, $X any word. */
static const char *const shapes[] = {
    "DEPLOY $I MODEL $M BACKEND $B ON $P $P", "DEPLOY $I MODEL $M BACKEND $B ON $P",
    "DEPLOY $I MODEL $M BACKEND $B VRAM $N ON $P", "DEPLOY $I MODEL $M BACKEND $B ON $P $P REQID $R",
    "RELEASE $I", "RELEASE $I REQID $R", "WORKER.ADD $W GPUS $N", "WORKER.ADD $W GPUS $N VRAM $N LABEL $L",
    "WORKER.CORDON $W", "WORKER.UNCORDON $W", "WORKER.REMOVE $W", "POLICY.SET EXCLUSIVE $E",
    "WORKER.GET $W", "INSTANCE.GET $I", "WORKER.LIST STATE $X FREE", "WORKER.LIST FREE",
    "INSTANCE.LIST WORKER $W MODEL $M BACKEND $B", "INSTANCE.LIST $X $X", "AT $N WORKER.GET $W",
    "AT $N INSTANCE.LIST WORKER $W", "AT $N DIGEST", "AT $N AT $N DIGEST", "AT $N $Q $X",
    "JOURNAL.RANGE $N $N", "JOURNAL.HEAD", "HISTORY WORKER $W", "HISTORY WORKER $W $N $N",
    "HISTORY INSTANCE $I $N $N", "HISTORY $X $X $N", "CLIENT SETNAME $W", "CLIENT GETNAME",
    "INFO $X", "COMMAND INFO $Q", "COMMAND DOCS $Q", "COMMAND COUNT", "ECHO $X", "DIGEST",
};
#define SHAPE_COUNT (sizeof shapes / sizeof shapes[0])

static const char *pick(h_rng *rng, const char *const *pool, size_t n) {
    return pool[h_rng_below(rng, n)];
}

/* Fill one typed slot into w. */
static void fill_slot(h_rng *rng, char type, word *w) {
    static const char *const models[] = { "m", "meta/llama-3-70b", "qwen2" };
    static const char *const backends[] = { "vllm", "sglang", "llama-box" };
    static const char *const lists[] = { "vllm", "vllm,sglang", "sglang", "llama-box,vllm" };
    static const char *const queries[] = { "WORKER.GET", "WORKER.LIST", "INSTANCE.LIST", "POLICY.GET", "DIGEST", "AT", "PING" };
    static const char *const numbers[] = { "0", "1", "2", "3", "5", "8", "10", "50", "100", "1000", "20000",
                                           "81920", "64", "65", "18446744073709551615", "-1", "x" };
    uint64_t k = h_rng_below(rng, 8);
    int n = 0;
    switch (type) {
    case 'I': n = snprintf(w->text, sizeof w->text, "i%" PRIu64, k); break;
    case 'W': n = snprintf(w->text, sizeof w->text, "w%" PRIu64, k % 6); break;
    case 'R': n = snprintf(w->text, sizeof w->text, "r%" PRIu64, h_rng_below(rng, 40)); break;
    case 'M': n = snprintf(w->text, sizeof w->text, "%s", pick(rng, models, 3)); break;
    case 'B': n = snprintf(w->text, sizeof w->text, "%s", pick(rng, backends, 3)); break;
    case 'E': n = snprintf(w->text, sizeof w->text, "%s", pick(rng, lists, 4)); break;
    case 'Q': n = snprintf(w->text, sizeof w->text, "%s", pick(rng, queries, 7)); break;
    case 'N': n = snprintf(w->text, sizeof w->text, "%s", pick(rng, numbers, sizeof numbers / sizeof numbers[0])); break;
    case 'L': n = snprintf(w->text, sizeof w->text, "zone=z%" PRIu64, k); break;
    case 'P':
        n = k < 3 ? snprintf(w->text, sizeof w->text, "w%" PRIu64, h_rng_below(rng, 6))
                  : snprintf(w->text, sizeof w->text, "w%" PRIu64 ":%" PRIu64 ",%" PRIu64, h_rng_below(rng, 6),
                             h_rng_below(rng, 8), h_rng_below(rng, 9));
        break;
    default: random_word(rng, w); return;
    }
    assert(n > 0 && (size_t)n < sizeof w->text);
    w->len = (size_t)n;
}

static size_t shaped_command(h_rng *rng, word *words) {
    const char *shape = shapes[h_rng_below(rng, SHAPE_COUNT)];
    size_t argc = 0;
    for (const char *p = shape; *p != '\0' && argc <= CS_ARGS_MAX;) {
        size_t len = strcspn(p, " ");
        word *w = &words[argc++];
        if (p[0] == '$') fill_slot(rng, p[1], w);
        else { memcpy(w->text, p, len); w->len = len; }
        p += len;
        while (*p == ' ') p++;
    }
    return argc;
}

/* One random command: a name, then 0..CS_ARGS_MAX words. Returns argc. */
static size_t random_command(h_rng *rng, word *words) {
    if (h_rng_below(rng, 100) < 60) return shaped_command(rng, words);
    const char *name = command_names[h_rng_below(rng, COMMAND_NAME_COUNT)];
    words[0].len = strlen(name);
    memcpy(words[0].text, name, words[0].len);
    size_t argc = 1 + (size_t)h_rng_below(rng, CS_ARGS_MAX + 1);
    for (size_t i = 1; i < argc; i++) random_word(rng, &words[i]);
    /* Keep the count of replies exact: no QUIT, no WATCH stream, no HELLO 2/3 switch mid-batch
     * (HELLO still runs with other arguments, and AUTH with any). */
    if (strcmp(name, "HELLO") == 0 && argc > 1 && (words[1].len == 1 && (words[1].text[0] == '2' || words[1].text[0] == '3'))) {
        words[1].text[0] = '9';
    }
    return argc;
}

typedef struct stats {
    uint64_t commands;
    uint64_t replies_ok;
    uint64_t replies_error;
    uint64_t appended;      /* integer replies to mutating commands: journal records */
} stats;

static void storm_round(h_conn *c, h_rng *rng, stats *st) {
    static word words[CS_ARGS_MAX + 1];
    const char *argv[CS_ARGS_MAX + 1];
    size_t lens[CS_ARGS_MAX + 1];
    char *out = NULL;
    size_t len = 0, cap = 0;
    for (int k = 0; k < CS_BATCH; k++) {
        size_t argc = random_command(rng, words);
        for (size_t i = 0; i < argc; i++) { argv[i] = words[i].text; lens[i] = words[i].len; }
        if (h_encode_argv(&out, &len, &cap, argc, argv, lens) != 0) h_die("ERR out of memory");
    }
    if (h_write_all(c->fd, out, len, CS_REPLY_TIMEOUT_MS) != 0) h_die("berthd stopped reading a connection");
    free(out);
    for (int k = 0; k < CS_BATCH; k++) {
        h_reply r;
        h_reply_init(&r);
        if (h_read_reply(c, &r, CS_REPLY_TIMEOUT_MS) != 0) {
            h_die("command %d of a batch got no reply (after %" PRIu64 " commands)", k, st->commands);
        }
        const h_node *n = h_reply_root(&r);
        if (n->type == H_ERROR) st->replies_error++;
        else st->replies_ok++;
        h_reply_free(&r);
        st->commands++;
    }
}

/* A valid base so that queries and refusals meet real state. */
static void seed_state(int port) {
    static const char *const base[] = {
        "WORKER.ADD w0 GPUS 8 VRAM 81920 LABEL zone=a", "WORKER.ADD w1 GPUS 8 VRAM 81920",
        "WORKER.ADD w2 GPUS 64", "WORKER.ADD w3 GPUS 0", "DEPLOY i0 MODEL m BACKEND vllm ON w0 w1",
        "DEPLOY i1 MODEL m BACKEND vllm VRAM 20000 ON w2:0,1", "WORKER.CORDON w3",
    };
    h_conn c;
    if (h_conn_open(&c, "127.0.0.1", port, 5000) != 0) h_die("cannot connect");
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++) {
        h_reply r;
        h_reply_init(&r);
        if (h_cmdf(&c, &r, CS_REPLY_TIMEOUT_MS, "%s", base[i]) != 0) h_die("no reply to %s", base[i]);
        h_reply_free(&r);
    }
    h_conn_close(&c);
}

static void digest_live(int port, char *hex, size_t size) {
    h_conn c;
    h_reply r;
    h_reply_init(&r);
    if (h_conn_open(&c, "127.0.0.1", port, 5000) != 0 || h_cmdf(&c, &r, CS_REPLY_TIMEOUT_MS, "DIGEST") != 0) {
        h_die("berthd does not answer DIGEST after the storm");
    }
    const h_node *n = h_reply_root(&r);
    snprintf(hex, size, "%.*s", n->str ? (int)n->len : 0, n->str ? n->str : "");
    h_reply_free(&r);
    h_conn_close(&c);
}

static void verify_offline(const char *dir, const char *live_hex) {
    berth_journal *j = NULL;
    char err[CS_ERR_LEN_MAX];
    berth_journal_options jo = { .read_only = true, .no_lock = true };
    if (berth_journal_open_lmdb(&j, dir, &jo, err, sizeof err) != BERTH_J_OK) h_die("open the journal: %s", err);
    berth_journal_reader *reader = NULL;
    if (berth_journal_reader_open(j, &reader) != BERTH_J_OK) h_die("reader");
    berth_verify_report rep;
    memset(&rep, 0, sizeof rep);
    berth_jerr e = berth_verify(reader, &rep);
    if (e != BERTH_J_OK || !rep.ok) h_die("the journal berthd wrote does not verify: seq %" PRIu64 ": %s", rep.first_bad_seq, rep.what);
    berth_state *state = NULL;
    uint32_t bad = 0;
    e = berth_replay_to(reader, UINT64_MAX, false, &state, NULL, &bad, err, sizeof err);
    if (e != BERTH_J_OK) h_die("replay: %s", err);
    uint8_t digest[BERTH_HASH_LEN];
    char hex[2 * BERTH_HASH_LEN + 1];
    if (berth_state_digest(state, digest) != 0) h_die("ERR out of memory");
    berth_hex(digest, BERTH_HASH_LEN, hex);
    if (strcmp(hex, live_hex) != 0) h_die("berthd's DIGEST %s differs from a replay of its journal (%s)", live_hex, hex);
    printf("cmdstorm: journal verified (%" PRIu64 " records); DIGEST equals a replay from genesis\n", rep.records);
    berth_state_free(state);
    berth_journal_reader_close(reader);
    berth_journal_close(j);
}

int main(int argc, char **argv) {
    const char *berthd = NULL, *data = NULL;
    uint32_t seconds = 10, connections = 8;
    uint64_t seed = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--berthd") == 0) berthd = argv[i + 1];
        else if (strcmp(argv[i], "--data") == 0) data = argv[i + 1];
        else if (strcmp(argv[i], "--seconds") == 0) seconds = (uint32_t)strtoul(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--connections") == 0) connections = (uint32_t)strtoul(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--seed") == 0) seed = strtoull(argv[i + 1], NULL, 10);
        else h_die("usage: berth_cmdstorm --berthd PATH --data DIR [--seconds S] [--connections C] [--seed S]");
    }
    if (berthd == NULL || data == NULL || connections == 0 || connections > CS_CONNECTIONS_MAX) {
        h_die("usage: berth_cmdstorm --berthd PATH --data DIR [--seconds S] [--connections 1..%d] [--seed S]", CS_CONNECTIONS_MAX);
    }
    signal(SIGPIPE, SIG_IGN);
    char log_path[4096], cmd[4200];
    snprintf(log_path, sizeof log_path, "%s.log", data);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", data, log_path);
    if (system(cmd) != 0) h_die("cannot clear %s", data);
    const char *extra[] = { "--snapshot-every", "50" };
    h_server server;
    if (h_server_start(&server, berthd, data, extra, 2, log_path) != 0) h_die("berthd did not start; see %s", log_path);
    seed_state(server.port);
    static h_conn conns[CS_CONNECTIONS_MAX];
    for (uint32_t i = 0; i < connections; i++) {
        if (h_conn_open(&conns[i], "127.0.0.1", server.port, 5000) != 0) h_die("cannot connect");
    }
    h_rng rng = { seed };
    stats st = { 0 };
    uint64_t end = h_now_ns() + (uint64_t)seconds * 1000000000ull;
    for (uint64_t round = 0; h_now_ns() < end; round++) {
        storm_round(&conns[round % connections], &rng, &st);
        int status = 0;
        if (h_wait_pid(server.pid, 0, &status) == 1) h_die("berthd died (status %d) after %" PRIu64 " commands; see %s", status, st.commands, log_path);
    }
    for (uint32_t i = 0; i < connections; i++) h_conn_close(&conns[i]);
    char live[2 * BERTH_HASH_LEN + 1];
    digest_live(server.port, live, sizeof live);
    int status = h_server_stop(&server, SIGTERM, 30000);
    if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) h_die("berthd did not stop cleanly (status %d); see %s", status, log_path);
    printf("cmdstorm: seed %" PRIu64 ", %" PRIu64 " random commands over %u connections in %u s: %" PRIu64
           " answered, %" PRIu64 " refused or errors, none unanswered\n",
           seed, st.commands, connections, seconds, st.replies_ok, st.replies_error);
    verify_offline(data, live);
    return 0;
}
