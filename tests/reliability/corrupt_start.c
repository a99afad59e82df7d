/* corrupt_start.c — damaged data directories handed to a starting berthd.
 *
 * Owns the promise that berthd never serves a broken chain and never
 * crashes on one: it refuses with a message that names the bad seq and how
 * to inspect it (`berth journal verify`), or, for a data file no open can
 * read, to restore a backup; and when only a snapshot is bad it
 * falls back to an older one or to replay from genesis and serves the same
 * state. Cases, each on a fresh copy of a journal written by a real berthd:
 *   flip     one byte of one record's command text flipped on disk (its hash
 *            no longer matches): refuse, naming that record's seq;
 *   hash     one byte of the stored hash of the last record flipped;
 *   truncate the LMDB data file cut to half its size: refuse, no signal;
 *   empty    the LMDB data file cut to 0 bytes, and
 *   missing  the LMDB data file removed (the commit log and the history
 *            index left): refuse, saying the records are lost, and leave
 *            data.mdb as it was (LMDB would make a new, empty journal);
 *   snapshot the newest snapshot's body changed: serve, same answers;
 *   digest   the newest snapshot's trailing digest changed: serve, same answers;
 *   all-snapshots every snapshot damaged: serve from genesis, same answers.
 * The record cases also run `berth journal verify`, which must exit 1 and
 * name the seq.
 *
 *   berth_corrupt_start --berthd PATH [--berth PATH] --work DIR */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "journal.h"
#include "replay.h"

#define CS_PATH_LEN_MAX 4096
#define CS_ERR_LEN_MAX 1024
#define CS_LOG_BYTES_MAX (1u << 20)
#define CS_REFUSE_WAIT_MS 30000          /* berthd must give up on a broken chain within this */
#define CS_REPLY_TIMEOUT_MS 30000
#define CS_SNAPSHOTS_MAX 1024
#define CS_MARKER "corrupt-marker-model-7f3a"
#define CS_RECORDS_AFTER_MARKER 12

static const char *berthd_path, *berth_path, *work;
static int failures;

static void check(bool ok, const char *what_case, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void check(bool ok, const char *what_case, const char *fmt, ...) {
    if (ok) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL %s: ", what_case);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    failures++;
}

static void run_shell(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void run_shell(const char *fmt, ...) {
    char cmd[3 * CS_PATH_LEN_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof cmd) h_die("command too long");
    if (system(cmd) != 0) h_die("'%s' failed", cmd);
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "r");
    if (f == NULL) return strdup("");
    char *buf = calloc(1, CS_LOG_BYTES_MAX + 1);
    if (buf == NULL) h_die("ERR out of memory");
    size_t n = fread(buf, 1, CS_LOG_BYTES_MAX, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* True when text mentions the number seq as a whole word. */
static bool names_seq(const char *text, uint64_t seq) {
    char num[32];
    int n = snprintf(num, sizeof num, "%" PRIu64, seq);
    for (const char *p = strstr(text, num); p != NULL; p = strstr(p + 1, num)) {
        bool left = p == text || (p[-1] < '0' || p[-1] > '9');
        bool right = p[n] < '0' || p[n] > '9';
        if (left && right) return true;
    }
    return false;
}

static int command(h_conn *c, const char *what, const char *fmt_text) {
    h_reply r;
    h_reply_init(&r);
    if (h_cmdf(c, &r, CS_REPLY_TIMEOUT_MS, "%s", fmt_text) != 0) h_die("%s: no reply to %s", what, fmt_text);
    const h_node *n = h_reply_root(&r);
    int seq = n->type == H_INT ? (int)n->integer : -1;
    h_reply_free(&r);
    return seq;
}

/* A journal written by a real berthd: 3 workers, churn, the marker DEPLOY
 * in the middle; snapshots every 5 records when snapshot_every says so. */
static uint64_t build_base(const char *dir, const char *snapshot_every) {
    char log[CS_PATH_LEN_MAX];
    snprintf(log, sizeof log, "%s.log", dir);
    const char *extra[] = { "--snapshot-every", snapshot_every };
    h_server s;
    if (h_server_start(&s, berthd_path, dir, extra, 2, log) != 0) h_die("berthd did not start on %s; see %s", dir, log);
    h_conn c;
    if (h_conn_open(&c, "127.0.0.1", s.port, 5000) != 0) h_die("cannot connect");
    command(&c, "base", "WORKER.ADD w1 GPUS 8 VRAM 81920 LABEL zone=a");
    command(&c, "base", "WORKER.ADD w2 GPUS 8");
    command(&c, "base", "WORKER.ADD w3 GPUS 4");
    command(&c, "base", "DEPLOY a MODEL llama BACKEND vllm ON w1 w2");
    command(&c, "base", "DEPLOY b MODEL qwen BACKEND vllm ON w2 w3");
    int marker = command(&c, "base", "DEPLOY m MODEL " CS_MARKER " BACKEND llama-box ON w3:0");
    if (marker <= 0) h_die("the marker DEPLOY was not committed");
    char text[256];
    for (int i = 0; i < CS_RECORDS_AFTER_MARKER; i++) {
        snprintf(text, sizeof text, i % 2 ? "RELEASE x%d" : "DEPLOY x%d MODEL m BACKEND vllm VRAM 1000 ON w1:7", i / 2);
        command(&c, "base", text);
    }
    h_conn_close(&c);
    int status = h_server_stop(&s, SIGTERM, 30000);
    if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) h_die("berthd did not stop cleanly; see %s", log);
    return (uint64_t)marker;
}

/* Flip one bit in every copy of the ml bytes of marker in path (bit 5 of
 * byte 3: a letter's case, so text stays text and only hashes notice). */
static int flip_marker(const char *path, const char *marker, size_t ml) {
    int fd = open(path, O_RDWR);
    if (fd < 0) h_die("open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) h_die("fstat: %s", strerror(errno));
    char *buf = malloc((size_t)st.st_size);
    if (buf == NULL || pread(fd, buf, (size_t)st.st_size, 0) != st.st_size) h_die("read %s", path);
    int flipped = 0;
    for (char *p = memmem(buf, (size_t)st.st_size, marker, ml); p != NULL;
         p = memmem(p + ml, (size_t)(buf + st.st_size - (p + ml)), marker, ml)) {
        char c = (char)(p[3] ^ 0x20);
        if (pwrite(fd, &c, 1, p + 3 - buf) != 1) h_die("pwrite: %s", strerror(errno));
        flipped++;
    }
    free(buf);
    if (fsync(fd) != 0 || close(fd) != 0) h_die("fsync %s", path);
    return flipped;
}

static void read_head(const char *dir, uint64_t *seq, uint8_t hash[BERTH_HASH_LEN]) {
    berth_journal *j = NULL;
    char err[CS_ERR_LEN_MAX];
    berth_journal_options jo = { .read_only = true, .no_lock = true };
    if (berth_journal_open_lmdb(&j, dir, &jo, err, sizeof err) != BERTH_J_OK) h_die("open %s: %s", dir, err);
    if (berth_journal_head(j, seq, hash) != BERTH_J_OK) h_die("head of %s", dir);
    berth_journal_close(j);
}

typedef struct start_result {
    bool served;          /* answered PING */
    bool signaled;        /* died of a signal (a crash) */
    int exit_code;
    char *log;            /* owned */
} start_result;

/* Start berthd on dir; it either serves (then it is stopped) or exits. */
static start_result try_start(const char *dir, const char *log) {
    start_result res = { 0 };
    unlink(log);
    char port[16];
    snprintf(port, sizeof port, "%d", h_free_port());
    const char *argv[] = { berthd_path, "--data", dir, "--port", port, NULL };
    pid_t pid = h_spawn(argv, log);
    if (pid < 0) h_die("spawn berthd");
    uint64_t deadline = h_now_ns() + (uint64_t)CS_REFUSE_WAIT_MS * 1000000ull;
    int status = 0;
    while (h_now_ns() < deadline) {
        if (h_wait_pid(pid, 50, &status) == 1) {
            res.signaled = WIFSIGNALED(status);
            res.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            res.log = read_text(log);
            return res;
        }
        h_conn c;
        if (h_conn_open(&c, "127.0.0.1", atoi(port), 100) == 0) {
            h_conn_close(&c);
            res.served = true;
            break;
        }
    }
    if (!res.served) { kill(pid, SIGKILL); (void)h_wait_pid(pid, 5000, &status); }
    else { kill(pid, SIGTERM); (void)h_wait_pid(pid, 30000, &status); }
    res.log = read_text(log);
    return res;
}

/* `berth journal verify --data dir`: exit code and output. */
static int berth_verify_cli(const char *dir, char **output) {
    char out_path[CS_PATH_LEN_MAX];
    snprintf(out_path, sizeof out_path, "%s.verify.txt", dir);
    unlink(out_path);
    const char *argv[] = { berth_path, "journal", "verify", "--data", dir, NULL };
    pid_t pid = h_spawn(argv, out_path);
    int status = 0;
    if (pid < 0 || h_wait_pid(pid, 120000, &status) != 1) h_die("berth journal verify did not finish");
    *output = read_text(out_path);
    if (WIFSIGNALED(status)) return -WTERMSIG(status);
    return WEXITSTATUS(status);
}

/* seq 0: the damage has no seq (a cut file); then `berth journal verify` may
 * also answer 2 (its input cannot be opened) instead of 1 (a finding). */
static void expect_refusal(const char *name, const char *dir, uint64_t seq) {
    char log[CS_PATH_LEN_MAX];
    snprintf(log, sizeof log, "%s.log", dir);
    start_result r = try_start(dir, log);
    check(!r.served, name, "berthd served a broken chain");
    check(!r.signaled, name, "berthd crashed (signal) instead of refusing; log: %s", log);
    check(r.served || r.signaled || r.exit_code != 0, name, "berthd exited 0 on a broken chain");
    /* A record's damage is inspected with `berth journal verify`; a data file
     * no open can read (cut, its meta pages or head record damaged) refuses
     * verify alike, so its way out is a backup. */
    check(strstr(r.log, "berth journal verify") != NULL || strstr(r.log, "from a backup (`berth backup`") != NULL, name,
          "the message tells neither how to inspect (`berth journal verify`) nor to restore a backup: %s", r.log);
    if (seq != 0) check(names_seq(r.log, seq), name, "the message does not name seq %" PRIu64 ": %s", seq, r.log);
    char *first_line = r.log;
    printf("%s: berthd refused (exit %d): %.*s\n", name, r.exit_code, (int)strcspn(first_line, "\n"), first_line);
    if (strstr(r.log, "\n") != NULL && strlen(r.log) > strcspn(r.log, "\n") + 1) {
        printf("%s:   log: %s", name, r.log);
    }
    free(r.log);
    if (berth_path == NULL || berth_path[0] == '\0') return;
    char *out = NULL;
    int code = berth_verify_cli(dir, &out);
    check(code == 1, name, "berth journal verify exited %d (want 1: a finding): %s", code, out);
    check(strstr(out, "CORRUPT") != NULL, name, "berth journal verify does not say CORRUPT: %s", out);
    if (seq != 0) check(names_seq(out, seq), name, "berth journal verify does not name seq %" PRIu64 ": %s", seq, out);
    printf("%s: berth journal verify exit %d: %.*s\n", name, code, (int)strcspn(out, "\n"), out);
    free(out);
}

/* data.mdb emptied or removed beside the rest of a journal's files. */
static void expect_lost(const char *name, const char *dir, bool missing) {
    char log[CS_PATH_LEN_MAX], file[CS_PATH_LEN_MAX + 16];
    snprintf(log, sizeof log, "%s.log", dir);
    snprintf(file, sizeof file, "%s/data.mdb", dir);
    start_result r = try_start(dir, log);
    check(!r.served, name, "berthd served a new, empty journal in place of the lost one");
    check(!r.signaled && r.exit_code != 0, name, "berthd did not refuse cleanly (exit %d, signal %d)", r.exit_code,
          r.signaled);
    check(strstr(r.log, "records are lost") != NULL && strstr(r.log, "data.mdb") != NULL, name,
          "the message does not say data.mdb's records are lost: %s", r.log);
    struct stat st;
    bool now_missing = stat(file, &st) != 0;
    check(missing ? now_missing : !now_missing && st.st_size == 0, name,
          "the refused start changed data.mdb (%s, %lld bytes)", now_missing ? "missing" : "present",
          now_missing ? 0LL : (long long)st.st_size);
    printf("%s: berthd refused (exit %d): %.*s\n", name, r.exit_code, (int)strcspn(r.log, "\n"), r.log);
    free(r.log);
    if (berth_path == NULL || berth_path[0] == '\0') return;
    char *out = NULL;
    int code = berth_verify_cli(dir, &out);
    check(code != 0 && strstr(out, "records verified") == NULL, name,
          "berth journal verify exited %d on a lost journal: %s", code, out);
    printf("%s: berth journal verify exit %d: %.*s\n", name, code, (int)strcspn(out, "\n"), out);
    free(out);
}

/* Raw replies to the state queries, for comparing two starts. */
static char *state_answers(int port) {
    h_conn c;
    if (h_conn_open(&c, "127.0.0.1", port, 5000) != 0) h_die("cannot connect for queries");
    static const char *const queries[] = { "JOURNAL.HEAD", "WORKER.LIST", "INSTANCE.LIST", "POLICY.GET",
                                           "WORKER.GET w1", "WORKER.GET w2", "WORKER.GET w3", "INSTANCE.GET a",
                                           "INSTANCE.GET b", "INSTANCE.GET m" };
    size_t cap = 1 << 16, len = 0;
    char *all = calloc(1, cap);
    if (all == NULL) h_die("ERR out of memory");
    for (size_t i = 0; i < sizeof queries / sizeof queries[0]; i++) {
        h_reply r;
        h_reply_init(&r);
        if (h_cmdf(&c, &r, CS_REPLY_TIMEOUT_MS, "%s", queries[i]) != 0) h_die("no reply to %s", queries[i]);
        if (len + r.bytes_len + 1 >= cap) h_die("answers too long");
        memcpy(all + len, r.bytes, r.bytes_len);
        len += r.bytes_len;
        h_reply_free(&r);
    }
    h_conn_close(&c);
    return all;
}

static char *serve_and_answer(const char *dir, char **log_text) {
    char log[CS_PATH_LEN_MAX];
    snprintf(log, sizeof log, "%s.log", dir);
    unlink(log);
    h_server s;
    if (h_server_start(&s, berthd_path, dir, NULL, 0, log) != 0) {
        *log_text = read_text(log);
        return NULL;
    }
    char *answers = state_answers(s.port);
    (void)h_server_stop(&s, SIGTERM, 30000);
    *log_text = read_text(log);
    return answers;
}

/* Damage snapshots in dir: the newest only, or all; in the body or in the
 * trailing digest. Returns how many were damaged. */
static size_t damage_snapshots(const char *dir, bool all, bool in_digest) {
    berth_journal *j = NULL;
    char err[CS_ERR_LEN_MAX];
    berth_journal_options jo = { 0 };
    if (berth_journal_open_lmdb(&j, dir, &jo, err, sizeof err) != BERTH_J_OK) h_die("open %s: %s", dir, err);
    berth_journal_reader *reader = NULL;
    if (berth_journal_reader_open(j, &reader) != BERTH_J_OK) h_die("reader");
    static uint64_t seqs[CS_SNAPSHOTS_MAX];
    size_t n = 0;
    if (berth_journal_snapshot_list(reader, seqs, CS_SNAPSHOTS_MAX, &n) != BERTH_J_OK) h_die("snapshot list");
    if (n == 0 || n > CS_SNAPSHOTS_MAX) h_die("want 1..%d snapshots in %s, found %zu", CS_SNAPSHOTS_MAX, dir, n);
    size_t first = all ? 0 : n - 1;
    size_t damaged = 0;
    for (size_t i = first; i < n; i++) {
        uint64_t seq = 0;
        const void *bytes = NULL;
        size_t len = 0;
        if (berth_journal_snapshot_get(reader, seqs[i], &seq, &bytes, &len) != BERTH_J_OK || seq != seqs[i]) h_die("snapshot get %" PRIu64, seqs[i]);
        uint8_t *copy = malloc(len);
        if (copy == NULL || len <= BERTH_HASH_LEN) h_die("snapshot of %zu bytes", len);
        memcpy(copy, bytes, len);
        size_t at = in_digest ? len - BERTH_HASH_LEN / 2 : (len - BERTH_HASH_LEN) / 2;
        copy[at] ^= 0x01;
        /* The reader pins the old bytes; write through a fresh view after closing it. */
        berth_journal_reader_close(reader);
        if (berth_journal_snapshot_put(j, seqs[i], copy, len) != BERTH_J_OK) h_die("snapshot put %" PRIu64, seqs[i]);
        free(copy);
        if (berth_journal_reader_open(j, &reader) != BERTH_J_OK) h_die("reader");
        damaged++;
    }
    berth_journal_reader_close(reader);
    berth_journal_close(j);
    return damaged;
}

static void snapshot_case(const char *name, const char *base, const char *good, bool all, bool in_digest) {
    char dir[CS_PATH_LEN_MAX];
    snprintf(dir, sizeof dir, "%s/%s", work, name);
    run_shell("rm -rf '%s' && cp -a '%s' '%s'", dir, base, dir);
    size_t damaged = damage_snapshots(dir, all, in_digest);
    char *log = NULL;
    char *answers = serve_and_answer(dir, &log);
    check(answers != NULL, name, "berthd refused to start when only %zu snapshot(s) were bad: %s", damaged, log);
    if (answers != NULL) {
        check(strcmp(answers, good) == 0, name, "berthd serves a different state after the fallback");
        check(strstr(log, "damaged snapshot") != NULL, name, "berthd's log does not mention the damaged snapshot: %s",
              log);
        printf("%s: %zu snapshot(s) damaged, berthd fell back and serves the same state%s\n", name, damaged,
               strstr(log, "damaged snapshot") ? " (its log mentions the damaged snapshot)" : "");
    }
    free(answers);
    free(log);
}

int main(int argc, char **argv) {
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--berthd") == 0) berthd_path = argv[i + 1];
        else if (strcmp(argv[i], "--berth") == 0) berth_path = argv[i + 1];
        else if (strcmp(argv[i], "--work") == 0) work = argv[i + 1];
        else h_die("usage: berth_corrupt_start --berthd PATH [--berth PATH] --work DIR");
    }
    if (berthd_path == NULL || work == NULL) h_die("usage: berth_corrupt_start --berthd PATH [--berth PATH] --work DIR");
    signal(SIGPIPE, SIG_IGN);
    run_shell("rm -rf '%s' && mkdir -p '%s'", work, work);
    char base[CS_PATH_LEN_MAX], snap_base[CS_PATH_LEN_MAX], dir[CS_PATH_LEN_MAX], file[CS_PATH_LEN_MAX + 16];

    snprintf(base, sizeof base, "%s/base", work);
    uint64_t marker_seq = build_base(base, "0");
    printf("base: the marker DEPLOY is seq %" PRIu64 "\n", marker_seq);

    snprintf(dir, sizeof dir, "%s/flip", work);
    run_shell("rm -rf '%s' && cp -a '%s' '%s'", dir, base, dir);
    snprintf(file, sizeof file, "%s/data.mdb", dir);
    int copies = flip_marker(file, CS_MARKER, strlen(CS_MARKER));
    if (copies == 0) h_die("the marker is not in %s: is the LMDB file named data.mdb?", file);
    printf("flip: flipped one bit in %d on-disk copy(ies) of seq %" PRIu64 "'s command\n", copies, marker_seq);
    expect_refusal("flip", dir, marker_seq);

    snprintf(dir, sizeof dir, "%s/hash", work);
    run_shell("rm -rf '%s' && cp -a '%s' '%s'", dir, base, dir);
    uint64_t head = 0;
    uint8_t head_hash[BERTH_HASH_LEN];
    read_head(dir, &head, head_hash);
    snprintf(file, sizeof file, "%s/data.mdb", dir);
    copies = flip_marker(file, (const char *)head_hash, BERTH_HASH_LEN);
    if (copies == 0) h_die("the head's hash is not in %s", file);
    printf("hash: flipped one bit in %d on-disk copy(ies) of seq %" PRIu64 "'s stored hash\n", copies, head);
    expect_refusal("hash", dir, head);

    snprintf(dir, sizeof dir, "%s/truncate", work);
    run_shell("rm -rf '%s' && cp -a '%s' '%s'", dir, base, dir);
    snprintf(file, sizeof file, "%s/data.mdb", dir);
    struct stat st;
    if (stat(file, &st) != 0) h_die("stat %s", file);
    if (truncate(file, st.st_size / 2) != 0) h_die("truncate %s", file);
    printf("truncate: data.mdb cut from %lld to %lld bytes\n", (long long)st.st_size, (long long)st.st_size / 2);
    expect_refusal("truncate", dir, 0);

    snprintf(dir, sizeof dir, "%s/empty", work);
    run_shell("rm -rf '%s' && cp -a '%s' '%s'", dir, base, dir);
    snprintf(file, sizeof file, "%s/data.mdb", dir);
    if (truncate(file, 0) != 0) h_die("truncate %s", file);
    expect_lost("empty", dir, false);

    snprintf(dir, sizeof dir, "%s/missing", work);
    run_shell("rm -rf '%s' && cp -a '%s' '%s'", dir, base, dir);
    snprintf(file, sizeof file, "%s/data.mdb", dir);
    if (unlink(file) != 0) h_die("unlink %s", file);
    expect_lost("missing", dir, true);

    snprintf(snap_base, sizeof snap_base, "%s/snapbase", work);
    build_base(snap_base, "5");
    char *log = NULL;
    char *good = serve_and_answer(snap_base, &log);
    if (good == NULL) h_die("berthd did not serve the undamaged snapshot journal: %s", log);
    free(log);
    snapshot_case("snapshot", snap_base, good, false, false);
    snapshot_case("digest", snap_base, good, false, true);
    snapshot_case("all-snapshots", snap_base, good, true, false);
    free(good);

    printf("corrupt_start: %s (%d failure(s))\n", failures ? "FAILED" : "ok", failures);
    return failures == 0 ? 0 : 1;
}
