/* cli_common.c — the pieces every berth subcommand shares.
 *
 * Owns: the read-only, lock-free open of a data directory (so the tool is
 * safe beside a running berthd), flag parsing, RFC 3339 <-> ms conversion
 * (pure arithmetic: no timezone database, no locale), JSON/XML escaping and
 * the stderr progress bar. Keeping these in one place is what makes every
 * subcommand answer errors, times and exit codes the same way. */
#define _GNU_SOURCE
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "commit_log.h"
#include "guard.h"

#define CLI_PROGRESS_WIDTH 30             /* characters in the bar */
#define CLI_PROGRESS_DELAY_NS 1000000000ull /* draw only once work exceeds a second */
#define CLI_PROGRESS_STRIDE 65536u        /* items between clock reads */
#define CLI_FRACTION_DIGITS_MAX 9         /* RFC 3339 fractions up to ns */
#define CLI_YEAR_MIN 1970
#define CLI_YEAR_MAX 9999
#define CLI_REPLAY_CHUNK_RECORDS (1u << 18) /* records between progress redraws in a replay */

int cli_fail(int exit_code, const char *code, const char *fmt, ...) {
    assert(code != NULL && fmt != NULL);
    assert(exit_code == CLI_EXIT_FINDING || exit_code == CLI_EXIT_USAGE);
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s ", code);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return exit_code;
}

bool cli_wants_help(int argc, char **argv) {
    assert(argc >= 0);
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {   /* after --: words */
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            return true;
        }
    }
    return false;
}

bool cli_flag_value(int argc, char **argv, int *i, const char *name, const char **value,
                    bool *bad) {
    assert(i != NULL && *i < argc && name != NULL && value != NULL && bad != NULL);
    const char *arg = argv[*i];
    size_t name_len = strlen(name);
    if (strncmp(arg, name, name_len) != 0) {
        return false;
    }
    if (arg[name_len] == '=') {
        *value = arg + name_len + 1;
        return true;
    }
    if (arg[name_len] != '\0') {
        return false;
    }
    if (*i + 1 >= argc) {
        fprintf(stderr, "ERR %s needs a value\n", name);
        *bad = true;
        return true;
    }
    *i += 1;
    *value = argv[*i];
    return true;
}

bool cli_parse_u64_text(const char *text, uint64_t *out) {
    assert(text != NULL && out != NULL);
    return berth_parse_u64(berth_str_make(text, strlen(text)), out);
}

bool cli_parse_seq_flag(const char *flag, const char *text, uint64_t *out) {
    assert(flag != NULL && text != NULL && out != NULL);
    if (!cli_parse_u64_text(text, out)) {
        fprintf(stderr, "ERR %s wants a record seq (a decimal number), not '%s'\n", flag, text);
        return false;
    }
    return true;
}

static int beyond_head(uint64_t seq, uint64_t head_seq) {
    return cli_fail(CLI_EXIT_USAGE, "ERR", "seq %" PRIu64 " is beyond the journal head %" PRIu64, seq,
                    head_seq);
}

int cli_at_seq(const cli_store *store, const char *text, uint64_t *seq) {
    assert(store != NULL && text != NULL && seq != NULL);
    if (!cli_parse_seq_flag("--at", text, seq)) {
        return CLI_EXIT_USAGE;
    }
    /* Checked here, not left to cli_state_at: there UINT64_MAX means the
     * head, and a seq typed by a person never does. */
    return *seq > store->head_seq ? beyond_head(*seq, store->head_seq) : CLI_EXIT_OK;
}

int cli_guard_fd = -1;

void cli_guard_result(const void *bytes, size_t len) {
    if (cli_guard_fd >= 0) {
        (void)guard_send_result(cli_guard_fd, bytes, len);
    }
}

void cli_guard_opened(uint64_t head_seq) {
    if (cli_guard_fd >= 0) {
        (void)guard_send_opened(cli_guard_fd, head_seq);
    }
}

void cli_guard_checked(uint64_t seq) {
    if (cli_guard_fd >= 0) {
        (void)guard_send_checked(cli_guard_fd, seq);
    }
}

/* Where out would be written, symbolic links resolved: out itself when it
 * exists, else its directory's real path and its last name. false when
 * that directory does not resolve (the write fails on its own then) and
 * when out is a symbolic link to nowhere (its target is unknowable here). */
static bool out_real_path(const char *out, char *real, size_t size) {
    assert(size >= PATH_MAX);
    if (realpath(out, real) != NULL) {
        return true;
    }
    struct stat st;
    if (lstat(out, &st) == 0) {
        return false;   /* there, but does not resolve: a dangling link */
    }
    const char *slash = strrchr(out, '/');
    char dir[PATH_MAX];
    const char *base = out;
    if (slash == NULL) {
        snprintf(dir, sizeof dir, ".");
    } else {
        size_t len = slash == out ? 1 : (size_t)(slash - out);
        if (len >= sizeof dir) {
            return false;
        }
        memcpy(dir, out, len);
        dir[len] = '\0';
        base = slash + 1;
    }
    char dir_real[PATH_MAX];
    if (realpath(dir, dir_real) == NULL) {
        return false;
    }
    int n = snprintf(real, size, "%s/%s", strcmp(dir_real, "/") == 0 ? "" : dir_real, base);
    return n > 0 && (size_t)n < size;
}

/* What out_same_file_in looks for, and where it found it. */
typedef struct same_file_ctx {
    const struct stat *st;
    char *found;
    size_t found_size;
} same_file_ctx;

typedef bool (*dir_visit)(const char *path, const char *name, const struct stat *est,
                          same_file_ctx *ctx);

/* Calls visit on each entry of dir but "..", lstat'ed, until one returns
 * true (then true). A read-only walk: an entry that cannot be named or
 * lstat'ed is passed over. */
static bool dir_walk(const char *dir, dir_visit visit, same_file_ctx *ctx) {
    DIR *d = opendir(dir);
    if (d == NULL) {
        return false;
    }
    bool hit = false;
    struct dirent *e;
    while (!hit && (e = readdir(d)) != NULL) {
        char path[PATH_MAX];
        int n = snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat est;
        if (n > 0 && (size_t)n < sizeof path && strcmp(e->d_name, "..") != 0 &&
            lstat(path, &est) == 0) {
            hit = visit(path, e->d_name, &est, ctx);
        }
    }
    (void)closedir(d);   /* a read-only walk: nothing to lose */
    return hit;
}

/* An entry that is the file ctx->st names (its path into ctx->found). */
static bool visit_same_file(const char *path, const char *name, const struct stat *est,
                            same_file_ctx *ctx) {
    (void)name;
    if (est->st_dev != ctx->st->st_dev || est->st_ino != ctx->st->st_ino) {
        return false;
    }
    snprintf(ctx->found, ctx->found_size, "%s", path);
    return true;
}

/* A directory directly in the data directory (history/, history.rebuild/)
 * holding that file: a data directory is two levels deep. */
static bool visit_subdir(const char *path, const char *name, const struct stat *est,
                         same_file_ctx *ctx) {
    return strcmp(name, ".") != 0 && S_ISDIR(est->st_mode) &&
           dir_walk(path, visit_same_file, ctx);
}

/* true when the data directory, or a directory directly in it, has an
 * entry that is the file st names (its path in found). */
static bool out_same_file_in_data(const char *data, const struct stat *st, char *found,
                                  size_t found_size) {
    same_file_ctx ctx = { st, found, found_size };
    return dir_walk(data, visit_same_file, &ctx) || dir_walk(data, visit_subdir, &ctx);
}

int cli_out_check(const char *flag, const char *out, const char *data_dir) {
    assert(flag != NULL && out != NULL);
    if (strcmp(out, "-") == 0 || data_dir == NULL) {
        return CLI_EXIT_OK;
    }
    char data_real[PATH_MAX];
    if (realpath(data_dir, data_real) == NULL) {
        return CLI_EXIT_OK;     /* no such directory: opening it reports that */
    }
    char out_real[PATH_MAX];
    if (!out_real_path(out, out_real, sizeof out_real)) {
        struct stat st;
        if (lstat(out, &st) == 0) {
            return cli_fail(CLI_EXIT_USAGE, "ERR", "%s %s is a symbolic link that does not "
                            "resolve: berth will not write through it", flag, out);
        }
        return CLI_EXIT_OK;     /* its directory is not there: the write reports that */
    }
    size_t dlen = strlen(data_real);
    bool inside = strcmp(data_real, "/") == 0 ||
                  (strncmp(out_real, data_real, dlen) == 0 &&
                   (out_real[dlen] == '/' || out_real[dlen] == '\0'));
    if (inside) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "%s %s is inside the data directory %s: berth "
                        "only reads a data directory, write the output elsewhere",
                        flag, out, data_dir);
    }
    struct stat st;
    char found[PATH_MAX];
    if (stat(out, &st) == 0 && out_same_file_in_data(data_real, &st, found, sizeof found)) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "%s %s is %s under another name: berth only "
                        "reads a data directory, write the output elsewhere", flag, out, found);
    }
    return CLI_EXIT_OK;
}

/* berthd acknowledges a batch once it is in its commit log and moves it
 * into LMDB later (tools/batch.c, "The commit log"): within milliseconds while
 * it runs, at its next start after a crash. A reader of LMDB alone would
 * miss those records without a word, so say how many there are. Only a
 * note: beside a running berthd the log changes under the count (which may
 * then be off, or fail), and the journal read is still what it is. */
/* Beside a running berthd the walk above often fails with no damage at
 * all: its checkpoints move LMDB's head and rewrite the log files under
 * the walk (a gap after the head this reader saw). So a failure counts only
 * when it stays: the walk again from LMDB's head as it is now, a few times
 * apart, fails each time and the head never moves (a berthd that runs and
 * writes moves it; one that runs idle leaves a log that walks cleanly). */
#define CLI_CLOG_RECHECKS 3
#define CLI_CLOG_RECHECK_MS 30
static bool cli_clog_stays_bad(const char *dir, const cli_store *store) {
    uint64_t first_head = 0;
    for (int i = 0; i < CLI_CLOG_RECHECKS; i++) {
        struct timespec pause = { 0, CLI_CLOG_RECHECK_MS * 1000000L };
        nanosleep(&pause, NULL);
        uint64_t head = 0;
        uint8_t hash[BERTH_HASH_LEN];
        if (berth_journal_head(store->journal, &head, hash) != BERTH_J_OK) {
            return false;
        }
        if (i == 0) {
            first_head = head;
        } else if (head != first_head) {
            return false;
        }
        uint64_t pending = 0;
        if (berth_clog_pending(dir, head, hash, &pending, NULL, 0) == BERTH_J_OK) {
            return false;
        }
    }
    return true;
}

static void cli_commit_log_note(const char *dir, const cli_store *store) {
    if (store->head_damaged) {
        return;
    }
    uint64_t pending = 0;
    char err[CLI_ERR_LEN_MAX] = "";
    berth_jerr jerr = berth_clog_pending(dir, store->head_seq, store->head_hash, &pending, err,
                                         sizeof err);
    if (jerr != BERTH_J_OK && !cli_clog_stays_bad(dir, store)) {
        return;   /* a running berthd moved the log under the walk */
    }
    if (jerr != BERTH_J_OK) {
        /* berthd refuses to start on such a log (it may hold acknowledged
         * records past what is read here): say so, or every tool would look
         * fine beside a berthd that will not start. */
        fprintf(stderr, "berth: warning: %s %s; berthd will not start on %s, and what is read here "
                        "may lack acknowledged records the commit log holds\n",
                berth_jerr_name(jerr), err, dir);
        return;
    }
    if (jerr == BERTH_J_OK && pending > 0) {
        fprintf(stderr, "berth: note: the commit log in %s (%s, %s) holds %llu acknowledged "
                        "records after seq %llu that the journal read here does not hold yet; "
                        "berthd moves them in within milliseconds while it runs, or when it "
                        "next starts\n",
                dir, BERTH_CLOG_FILE, BERTH_CLOG_FILE2, (unsigned long long)pending,
                (unsigned long long)store->head_seq);
    }
}

/* The entries cli_made_* look at: in the data directory, or in its
 * history/ (in_history). */
static const struct {
    bool in_history;
    const char *name;
} made_names[CLI_MADE_NAMES] = {
    { false, "." }, { false, "LOCK" }, { false, "lock.mdb" }, { false, "data.mdb" },
    { false, "history" }, { true, "data.mdb" }, { true, "lock.mdb" },
};

/* The directory and its history/ as fds (-1 when absent). history/ is
 * opened without following a symbolic link, and each entry stat'd and
 * chown'd without following one: the service's user can write there, and
 * must not turn root's chown onto a file elsewhere. */
typedef struct made_dirs {
    int dir;
    int history;
} made_dirs;

static made_dirs made_dirs_open(const char *dir) {
    made_dirs d = { .dir = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), .history = -1 };
    if (d.dir >= 0) {
        d.history = openat(d.dir, "history", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    return d;
}

static void made_dirs_close(made_dirs *d) {
    if (d->history >= 0) (void)close(d->history);   /* read-only fds: nothing to lose */
    if (d->dir >= 0) (void)close(d->dir);
}

static int made_parent(const made_dirs *d, size_t i) {
    return made_names[i].in_history ? d->history : d->dir;
}

void cli_made_before(cli_made *made, const char *dir) {
    assert(made != NULL && dir != NULL);
    memset(made, 0, sizeof *made);
    made->dir = dir;
    made->root = geteuid() == 0;
    if (!made->root) return;
    made_dirs d = made_dirs_open(dir);
    for (size_t i = 0; i < CLI_MADE_NAMES; i++) {
        struct stat st;
        int at = made_parent(&d, i);
        if (at >= 0 && fstatat(at, made_names[i].name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            made->before[i].found = true;
            made->before[i].dev = st.st_dev;
            made->before[i].ino = st.st_ino;
        }
    }
    made_dirs_close(&d);
}

int cli_made_chown(const cli_made *made, const char *owner_dir) {
    assert(made != NULL && owner_dir != NULL);
    if (!made->root) return CLI_EXIT_OK;
    struct stat owner;
    if (stat(owner_dir, &owner) != 0) {
        return cli_fail(CLI_EXIT_USAGE, "IO", "cannot stat %s to give what berth made in %s to its owner: %s",
                        owner_dir, made->dir, strerror(errno));
    }
    made_dirs d = made_dirs_open(made->dir);
    int rc = CLI_EXIT_OK;
    for (size_t i = 0; i < CLI_MADE_NAMES && rc == CLI_EXIT_OK; i++) {
        struct stat st;
        int at = made_parent(&d, i);
        if (at < 0 || fstatat(at, made_names[i].name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        bool same = made->before[i].found && made->before[i].dev == st.st_dev &&
                    made->before[i].ino == st.st_ino;
        if (same || st.st_uid != 0 || (st.st_uid == owner.st_uid && st.st_gid == owner.st_gid)) continue;
        if (fchownat(at, made_names[i].name, owner.st_uid, owner.st_gid, AT_SYMLINK_NOFOLLOW) != 0) {
            rc = cli_fail(CLI_EXIT_USAGE, "IO", "cannot give %s%s%s, made by berth run as root, to %s's owner "
                          "(uid %u, gid %u): %s; a berthd running as that user cannot open it: chown it",
                          made->dir, made_names[i].in_history ? "/history/" : "/", made_names[i].name,
                          owner_dir, (unsigned)owner.st_uid, (unsigned)owner.st_gid, strerror(errno));
        }
    }
    made_dirs_close(&d);
    return rc;
}

int cli_journal_open_ro(const char *dir, berth_journal **out) {
    assert(dir != NULL && out != NULL);
    berth_journal_options options;
    memset(&options, 0, sizeof options);
    options.read_only = true;
    options.no_lock = true;
    char err[CLI_ERR_LEN_MAX] = "";
    *out = NULL;
    /* Read-only, but LMDB makes a missing lock.mdb (and history/lock.mdb)
     * at open: as root, they go to the directory's owner. */
    cli_made made;
    cli_made_before(&made, dir);
    berth_jerr jerr = berth_journal_open_lmdb(out, dir, &options, err, sizeof err);
    int owned = cli_made_chown(&made, dir);
    if (jerr != BERTH_J_OK) {
        *out = NULL;
        /* A store that is there but damaged is a finding, like a bad record. */
        int code = jerr == BERTH_J_CORRUPT ? CLI_EXIT_FINDING : CLI_EXIT_USAGE;
        return cli_fail(code, berth_jerr_name(jerr), "cannot open data directory %s: %s",
                        dir, err[0] != '\0' ? err : "no berth journal there");
    }
    if (owned != CLI_EXIT_OK) {
        berth_journal_close(*out);
        *out = NULL;
        return owned;
    }
    return CLI_EXIT_OK;
}

int cli_store_open(cli_store *store, const char *dir) {
    assert(store != NULL);
    memset(store, 0, sizeof *store);
    if (dir == NULL) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "no data directory given: use --data DIR");
    }
    store->dir = dir;
    int mirrored = cli_etcd_mirror(dir);
    if (mirrored != CLI_EXIT_OK) {
        return mirrored;
    }
    int opened = cli_journal_open_ro(dir, &store->journal);
    if (opened != CLI_EXIT_OK) {
        return opened;
    }
    berth_jerr jerr = berth_journal_reader_open(store->journal, &store->reader);
    if (jerr != BERTH_J_OK) {
        berth_journal_close(store->journal);
        store->journal = NULL;
        return cli_fail(CLI_EXIT_USAGE, berth_jerr_name(jerr), "cannot read data directory %s", dir);
    }
    jerr = berth_journal_reader_head(store->reader, &store->head_seq, store->head_hash);
    if (jerr == BERTH_J_CORRUPT && store->head_seq > 0) {
        /* A head record that does not decode is a finding about one seq:
         * verify names it, and the records below it stay readable. */
        store->head_damaged = true;
        jerr = BERTH_J_OK;
    }
    if (jerr != BERTH_J_OK) {
        cli_store_close(store);
        return cli_fail(CLI_EXIT_USAGE, berth_jerr_name(jerr), "cannot read the journal head in %s",
                        dir);
    }
    assert(store->journal != NULL && store->reader != NULL);
    cli_commit_log_note(dir, store);
    cli_guard_opened(store->head_seq);
    return CLI_EXIT_OK;
}

void cli_store_close(cli_store *store) {
    assert(store != NULL);
    if (store->reader != NULL) {
        berth_journal_reader_close(store->reader);
        store->reader = NULL;
    }
    if (store->journal != NULL) {
        berth_journal_close(store->journal);
        store->journal = NULL;
    }
}

int cli_store_main(int argc, char **argv, const char *usage, void *opts, cli_parse_fn parse,
                   cli_run_fn run) {
    assert(usage != NULL && opts != NULL && parse != NULL && run != NULL);
    if (cli_wants_help(argc, argv)) {
        fputs(usage, stdout);
        return CLI_EXIT_OK;
    }
    const char *data = NULL;
    int rc = parse(argc, argv, opts, &data);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }
    cli_store store;
    rc = cli_store_open(&store, data);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }
    rc = run(opts, &store);
    cli_store_close(&store);
    return rc;
}

static int replay_failed(berth_jerr jerr, const char *err) {
    int code = jerr == BERTH_J_CORRUPT ? CLI_EXIT_FINDING : CLI_EXIT_USAGE;
    return cli_fail(code, berth_jerr_name(jerr), "replay failed: %s", err);
}

/* Where replay will start: the newest snapshot at or before target (0 for
 * genesis). Only sizes the progress bar's chunks; replay itself still picks
 * and checks the snapshot. */
static uint64_t replay_start_guess(cli_store *store, uint64_t target, bool use_snapshots) {
    uint64_t seq = 0;
    const void *bytes = NULL;
    size_t len = 0;
    if (!use_snapshots ||
        berth_journal_snapshot_get(store->reader, target, &seq, &bytes, &len) != BERTH_J_OK) {
        return 0;
    }
    return seq;
}

/* The rest of the way in chunks, drawing progress between them: only when
 * stderr is a terminal, so scripts and measurements take the one-call path. */
static int replay_chunks(cli_store *store, uint64_t target, berth_state *state,
                         berth_replay_stats *stats) {
    cli_progress progress;
    uint64_t base = stats->from_snapshot_seq;
    cli_progress_start(&progress, "replay", target - base);
    progress.next_check = 0;    /* chunks are large: look at the clock after each */
    int rc = CLI_EXIT_OK;
    while (berth_state_last_seq(state) < target) {
        uint64_t last = berth_state_last_seq(state);
        uint64_t next = target - last > CLI_REPLAY_CHUNK_RECORDS ? last + CLI_REPLAY_CHUNK_RECORDS
                                                                 : target;
        berth_replay_stats step;
        memset(&step, 0, sizeof step);
        char err[CLI_ERR_LEN_MAX] = "";
        berth_jerr jerr = berth_replay_forward(store->reader, state, next, &step, err, sizeof err);
        if (jerr != BERTH_J_OK) {
            rc = replay_failed(jerr, err);
            break;
        }
        assert(berth_state_last_seq(state) == next);
        stats->records += step.records;
        cli_progress_update(&progress, next - base);
        progress.next_check = 0;
    }
    cli_progress_end(&progress);
    stats->last_seq = berth_state_last_seq(state);
    return rc;
}

int cli_state_at(cli_store *store, uint64_t target, bool use_snapshots, berth_state **out,
                 berth_replay_stats *stats) {
    assert(store != NULL && store->reader != NULL && out != NULL && stats != NULL);
    memset(stats, 0, sizeof *stats);
    *out = NULL;
    if (target != UINT64_MAX && target > store->head_seq) {
        return beyond_head(target, store->head_seq);
    }
    target = target == UINT64_MAX ? store->head_seq : target;   /* the read view's head is fixed */
    if (target == 0) {
        /* Genesis: nothing to replay; the empty state is the answer. */
        *out = berth_state_new(NULL);
        if (*out == NULL) {
            return cli_fail(CLI_EXIT_USAGE, "NOMEM", "out of memory building the genesis state");
        }
        return CLI_EXIT_OK;
    }
    uint64_t first_stop = target;
    if (isatty(STDERR_FILENO) == 1) {
        uint64_t start = replay_start_guess(store, target, use_snapshots);
        first_stop = target - start > CLI_REPLAY_CHUNK_RECORDS ? start + CLI_REPLAY_CHUNK_RECORDS
                                                               : target;
    }
    char err[CLI_ERR_LEN_MAX] = "";
    uint32_t bad_snapshots = 0;
    berth_jerr jerr = berth_replay_to(store->reader, first_stop, use_snapshots, out, stats,
                                      &bad_snapshots, err, sizeof err);
    if (bad_snapshots > 0) {
        fprintf(stderr, "WARN %" PRIu32 " snapshot(s) failed their check and were skipped\n",
                bad_snapshots);
    }
    if (jerr != BERTH_J_OK) {
        *out = NULL;
        return replay_failed(jerr, err);
    }
    assert(*out != NULL && berth_state_last_seq(*out) == first_stop);
    int rc = first_stop < target ? replay_chunks(store, target, *out, stats) : CLI_EXIT_OK;
    if (rc != CLI_EXIT_OK) {
        berth_state_free(*out);
        *out = NULL;
    }
    return rc;
}

int cli_seq_at_time(cli_store *store, const char *rfc3339, uint64_t *seq) {
    assert(store != NULL && rfc3339 != NULL && seq != NULL);
    uint64_t target_ms = 0;
    if (!cli_parse_rfc3339(rfc3339, &target_ms)) {
        return cli_fail(CLI_EXIT_USAGE, "ERR",
                        "'%s' is not an RFC 3339 time (like 2026-11-26T09:30:00Z)", rfc3339);
    }
    *seq = 0;
    /* A head that does not decode has no time: the records below it do. */
    uint64_t last = store->head_damaged ? store->head_seq - 1 : store->head_seq;
    if (last == 0) {
        return CLI_EXIT_OK;
    }
    /* A scan, not a binary search: this berth stamps no record earlier than
     * the one before it, but a journal written by an older berth whose
     * clock stepped back has times that decrease, and a binary search over
     * them lands on an arbitrary seq. The scan answers "the last record at
     * or before target" exactly either way, and names a decrease. */
    berth_journal_cursor *cursor = NULL;
    berth_jerr jerr = berth_journal_cursor_open(store->reader, 1, &cursor);
    if (jerr != BERTH_J_OK) {
        return cli_fail(CLI_EXIT_FINDING, berth_jerr_name(jerr),
                        "cannot read the records while searching by time");
    }
    uint64_t prev_ms = 0;
    uint64_t first_back = 0;        /* the first seq whose time is below its predecessor's */
    uint64_t first_back_ms = 0;
    uint64_t first_back_prev_ms = 0;
    int rc = CLI_EXIT_OK;
    for (uint64_t want = 1; want <= last; want++) {
        /* Only the time: the rest of the record is not decoded. */
        uint64_t key = 0;
        uint64_t rec_seq = 0;
        uint64_t time_ms = 0;
        const uint8_t *raw = NULL;
        size_t raw_len = 0;
        jerr = berth_journal_cursor_next_raw(cursor, &key, &raw, &raw_len);
        if (jerr != BERTH_J_OK || key != want || !berth_record_peek_time(raw, raw_len, &rec_seq, &time_ms) ||
            rec_seq != want) {
            rc = cli_fail(CLI_EXIT_FINDING, berth_jerr_name(jerr != BERTH_J_OK ? jerr : BERTH_J_CORRUPT),
                          "cannot read record %" PRIu64 " while searching by time: run `berth journal verify`",
                          want);
            break;
        }
        if (want > 1 && time_ms < prev_ms && first_back == 0) {
            first_back = want;
            first_back_ms = time_ms;
            first_back_prev_ms = prev_ms;
        }
        if (time_ms <= target_ms) {
            *seq = want;
        }
        prev_ms = time_ms;
    }
    berth_journal_cursor_close(cursor);
    if (rc == CLI_EXIT_OK && first_back > 0) {
        char back[CLI_TIME_TEXT_LEN_MAX];
        char before[CLI_TIME_TEXT_LEN_MAX];
        cli_format_time(first_back_ms, back);
        cli_format_time(first_back_prev_ms, before);
        fprintf(stderr,
                "WARN record times go backwards at seq %" PRIu64 " (%s after %s at seq %" PRIu64
                "; a clock stepped back under a berth before session 7): seq %" PRIu64
                " is the last record stamped at or before %s, but records before it may be "
                "stamped later; `berth journal dump` shows the times, --at SEQ picks one exactly\n",
                first_back, back, before, first_back - 1, *seq, rfc3339);
    }
    return rc;
}

/* Bytes that need no escape go out in one fwrite per run: rejudge on a big
 * journal prints hundreds of megabytes of these. */
void cli_json_str(FILE *out, const char *bytes, size_t len) {
    assert(out != NULL && (bytes != NULL || len == 0));
    fputc('"', out);
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)bytes[i];
        if (c >= 0x20 && c != 0x7f && c != '"' && c != '\\') {
            continue;
        }
        fwrite(bytes + run, 1, i - run, out);
        run = i + 1;
        if (c == '"' || c == '\\') {
            fputc('\\', out);
            fputc(c, out);
        } else if (c == '\n') {
            fputs("\\n", out);
        } else {
            fprintf(out, "\\u%04x", (unsigned)c);
        }
    }
    fwrite(bytes + run, 1, len - run, out);
    fputc('"', out);
}

void cli_json_bstr(FILE *out, berth_str s) {
    cli_json_str(out, s.ptr, s.len);
}

void cli_xml_bstr(FILE *out, berth_str s) {
    assert(out != NULL && (s.ptr != NULL || s.len == 0));
    for (uint32_t i = 0; i < s.len; i++) {
        char c = s.ptr[i];
        switch (c) {
        case '&': fputs("&amp;", out); break;
        case '<': fputs("&lt;", out); break;
        case '>': fputs("&gt;", out); break;
        case '"': fputs("&quot;", out); break;
        case '\'': fputs("&apos;", out); break;
        default:
            /* Control bytes are not allowed in XML 1.0: show them as '?'. */
            fputc(((unsigned char)c < 0x20 && c != '\t') ? '?' : c, out);
            break;
        }
    }
}

size_t cli_text_str(FILE *out, const char *bytes, size_t len) {
    assert(out != NULL && (bytes != NULL || len == 0));
    size_t run = 0, cols = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)bytes[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') continue;
        fwrite(bytes + run, 1, i - run, out);
        cols += i - run;
        run = i + 1;
        if (c == '\\') {
            fputs("\\\\", out);
            cols += 2;
        } else {
            fprintf(out, "\\x%02x", (unsigned)c);
            cols += 4;
        }
    }
    fwrite(bytes + run, 1, len - run, out);
    return cols + len - run;
}

size_t cli_text_bstr(FILE *out, berth_str s) {
    return cli_text_str(out, s.ptr, s.len);
}

void cli_hex_hash(const uint8_t hash[BERTH_HASH_LEN], char out[CLI_HEX_HASH_LEN]) {
    assert(hash != NULL && out != NULL);
    berth_hex(hash, BERTH_HASH_LEN, out);
    assert(strlen(out) == 2 * BERTH_HASH_LEN);
}

/* Howard Hinnant's days-from-civil: proleptic Gregorian, exact integers. */
static int64_t days_from_civil(int64_t y, uint32_t m, uint32_t d) {
    assert(m >= 1 && m <= 12 && d >= 1 && d <= 31);
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    uint32_t yoe = (uint32_t)(y - era * 400);
    uint32_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    uint32_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, uint32_t *m, uint32_t *d) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    uint32_t doe = (uint32_t)(z - era * 146097);
    uint32_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    uint32_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    uint32_t mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
    assert(*m >= 1 && *m <= 12 && *d >= 1 && *d <= 31);
}

void cli_format_time(uint64_t time_ms, char out[CLI_TIME_TEXT_LEN_MAX]) {
    assert(out != NULL);
    uint64_t secs = time_ms / 1000;
    int64_t days = (int64_t)(secs / 86400);
    uint32_t sod = (uint32_t)(secs % 86400);
    int64_t y = 0;
    uint32_t m = 0;
    uint32_t d = 0;
    civil_from_days(days, &y, &m, &d);
    int n = snprintf(out, CLI_TIME_TEXT_LEN_MAX, "%04" PRId64 "-%02u-%02uT%02u:%02u:%02u.%03uZ", y,
                     m, d, sod / 3600, (sod / 60) % 60, sod % 60, (unsigned)(time_ms % 1000));
    assert(n > 0 && n < CLI_TIME_TEXT_LEN_MAX);
}

/* Read exactly `digits` decimal digits at *p; advance. */
static bool take_digits(const char **p, uint32_t digits, uint32_t *out) {
    uint32_t v = 0;
    for (uint32_t i = 0; i < digits; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9') {
            return false;
        }
        v = v * 10 + (uint32_t)(c - '0');
    }
    *p += digits;
    *out = v;
    return true;
}

static bool take_char(const char **p, const char *allowed) {
    if (**p == '\0' || strchr(allowed, **p) == NULL) {
        return false;
    }
    *p += 1;
    return true;
}

static uint32_t month_days(uint32_t y, uint32_t m) {
    static const uint32_t days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    assert(m >= 1 && m <= 12);
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return days[m - 1] + (m == 2 && leap ? 1 : 0);
}

/* The fraction after the seconds, as milliseconds (extra digits truncated). */
static bool take_fraction_ms(const char **p, uint32_t *ms) {
    *ms = 0;
    if (**p != '.') {
        return true;
    }
    *p += 1;
    uint32_t digits = 0;
    uint32_t scale = 100;
    while (**p >= '0' && **p <= '9') {
        if (digits == CLI_FRACTION_DIGITS_MAX) {
            return false;
        }
        *ms += scale * (uint32_t)(**p - '0');
        scale /= 10;
        digits++;
        *p += 1;
    }
    return digits > 0;
}

/* "Z" or "+hh:mm" / "-hh:mm": the offset east of UTC, in seconds. */
static bool take_offset(const char **p, int64_t *offset_s) {
    if (take_char(p, "Zz")) {
        *offset_s = 0;
        return true;
    }
    char sign = **p;
    uint32_t oh = 0;
    uint32_t om = 0;
    if (!take_char(p, "+-") || !take_digits(p, 2, &oh) || !take_char(p, ":") ||
        !take_digits(p, 2, &om) || oh > 23 || om > 59) {
        return false;
    }
    *offset_s = (int64_t)(oh * 3600 + om * 60) * (sign == '-' ? -1 : 1);
    return true;
}

bool cli_parse_rfc3339(const char *text, uint64_t *time_ms) {
    assert(text != NULL && time_ms != NULL);
    const char *p = text;
    uint32_t y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0, ms = 0;
    if (!take_digits(&p, 4, &y) || !take_char(&p, "-") || !take_digits(&p, 2, &mo) ||
        !take_char(&p, "-") || !take_digits(&p, 2, &d) || !take_char(&p, "Tt ") ||
        !take_digits(&p, 2, &h) || !take_char(&p, ":") || !take_digits(&p, 2, &mi) ||
        !take_char(&p, ":") || !take_digits(&p, 2, &s) || !take_fraction_ms(&p, &ms)) {
        return false;
    }
    int64_t offset_s = 0;
    if (!take_offset(&p, &offset_s) || *p != '\0') {
        return false;
    }
    /* Second 60 is a leap second: count it as the next second's start. */
    if (y < CLI_YEAR_MIN || y > CLI_YEAR_MAX || mo < 1 || mo > 12 || d < 1 ||
        d > month_days(y, mo) || h > 23 || mi > 59 || s > 60) {
        return false;
    }
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - offset_s;
    if (secs < 0) {
        return false;
    }
    *time_ms = (uint64_t)secs * 1000 + ms;
    return true;
}

uint64_t cli_monotonic_ns(void) {
    struct timespec ts;
    int rc = clock_gettime(CLOCK_MONOTONIC, &ts);
    assert(rc == 0);
    (void)rc;
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void cli_progress_start(cli_progress *progress, const char *label, uint64_t total) {
    assert(progress != NULL && label != NULL);
    memset(progress, 0, sizeof *progress);
    progress->label = label;
    progress->total = total;
    progress->tty = isatty(STDERR_FILENO) == 1;
    progress->start_ns = progress->tty ? cli_monotonic_ns() : 0;
    progress->next_check = CLI_PROGRESS_STRIDE;
}

void cli_progress_update(cli_progress *progress, uint64_t done) {
    assert(progress != NULL);
    if (!progress->tty || done < progress->next_check) {
        return;
    }
    progress->next_check = done + CLI_PROGRESS_STRIDE;
    if (cli_monotonic_ns() - progress->start_ns < CLI_PROGRESS_DELAY_NS) {
        return;
    }
    char bar[CLI_PROGRESS_WIDTH + 1];
    uint64_t total = progress->total > done ? progress->total : done;
    uint32_t filled = total == 0 ? 0 : (uint32_t)(done * CLI_PROGRESS_WIDTH / total);
    assert(filled <= CLI_PROGRESS_WIDTH);
    memset(bar, '#', filled);
    memset(bar + filled, ' ', CLI_PROGRESS_WIDTH - filled);
    bar[CLI_PROGRESS_WIDTH] = '\0';
    fprintf(stderr, "\r%s [%s] %3u%% %" PRIu64 "/%" PRIu64, progress->label, bar,
            total == 0 ? 0u : (unsigned)(done * 100 / total), done, total);
    fflush(stderr);
    progress->drawn = true;
}

void cli_progress_end(cli_progress *progress) {
    assert(progress != NULL);
    if (progress->drawn) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
        progress->drawn = false;
    }
}

/* ---- name map ---------------------------------------------------------- */

static uint64_t map_hash(berth_str key) {
    return berth_command_hash(key);   /* FNV-1a 64: fine for names, and already ours */
}

int cli_map_init(cli_name_map *map, uint64_t cap_initial) {
    assert(map != NULL && cap_initial > 0 && cap_initial <= CLI_MAP_SLOTS_MAX);
    uint64_t cap = 16;
    while (cap < cap_initial) {
        cap *= 2;
    }
    map->slots = calloc(cap, sizeof *map->slots);
    map->cap = map->slots != NULL ? cap : 0;
    map->used = 0;
    return map->slots != NULL ? 0 : -1;
}

void cli_map_free(cli_name_map *map) {
    assert(map != NULL);
    for (uint64_t i = 0; i < map->cap; i++) {
        free(map->slots[i].key);
    }
    free(map->slots);
    map->slots = NULL;
    map->cap = 0;
    map->used = 0;
}

static cli_map_entry *map_find(cli_map_entry *slots, uint64_t cap, berth_str key) {
    assert((cap & (cap - 1)) == 0);
    uint64_t i = map_hash(key) & (cap - 1);
    for (uint64_t probes = 0; probes < cap; probes++) {
        cli_map_entry *e = &slots[i];
        if (e->key == NULL || (e->key_len == key.len && memcmp(e->key, key.ptr, key.len) == 0)) {
            return e;
        }
        i = (i + 1) & (cap - 1);
    }
    assert(false && "the map is never more than half full");
    return NULL;
}

bool cli_map_get(const cli_name_map *map, berth_str key, uint64_t *value) {
    assert(map != NULL && map->slots != NULL && value != NULL);
    const cli_map_entry *e = map_find(map->slots, map->cap, key);
    if (e->key == NULL) {
        return false;
    }
    *value = e->value;
    return true;
}

/* Double the table; keys move, nothing is copied twice. */
static int map_grow(cli_name_map *map) {
    if (map->cap >= CLI_MAP_SLOTS_MAX) {
        return -1;
    }
    uint64_t cap = map->cap * 2;
    cli_map_entry *slots = calloc(cap, sizeof *slots);
    if (slots == NULL) {
        return -1;
    }
    for (uint64_t i = 0; i < map->cap; i++) {
        if (map->slots[i].key != NULL) {
            berth_str key = berth_str_make(map->slots[i].key, map->slots[i].key_len);
            *map_find(slots, cap, key) = map->slots[i];
        }
    }
    free(map->slots);
    map->slots = slots;
    map->cap = cap;
    return 0;
}

int cli_map_put(cli_name_map *map, berth_str key, uint64_t value) {
    assert(map != NULL && map->slots != NULL && key.len > 0);
    cli_map_entry *e = map_find(map->slots, map->cap, key);
    if (e->key != NULL) {
        e->value = value;
        return 0;
    }
    if ((map->used + 1) * 2 > map->cap) {
        if (map_grow(map) != 0) {
            return -1;
        }
        e = map_find(map->slots, map->cap, key);
        assert(e->key == NULL);
    }
    e->key = malloc(key.len);
    if (e->key == NULL) {
        return -1;
    }
    memcpy(e->key, key.ptr, key.len);
    e->key_len = key.len;
    e->value = value;
    map->used++;
    return 0;
}
