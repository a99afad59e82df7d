/* cli_backup.c — owns `berth backup --data DIR --to DEST`: a copy of a data
 * directory that berthd can start on, taken while berthd runs or not.
 *
 * Why it exists: berth's sentences about damage end "restore DIR from a
 * copy", and `cp` of a live directory is no such copy: data.mdb changes
 * under it, and a torn file may not even open. So:
 *   1. the journal is copied as of one committed state (berth_journal_copy:
 *      LMDB's own copy under a read transaction) into DEST.partial;
 *   2. the HISTORY index is built in the copy from its journal, the walk of
 *      `berth history rebuild`, which checks every record on the way: the
 *      chain, every hash, every recorded outcome. A copy that does not
 *      verify is no backup, and is removed;
 *   3. records berthd acknowledged but had not yet checkpointed into
 *      data.mdb are not in the copy. While berthd runs they are
 *      milliseconds old, and the copy is a consistent earlier state. When
 *      no berthd runs (one crashed and was not restarted) they live only in
 *      DIR's commit log, so the backup is refused until a berthd start has
 *      moved them (an idle berthd's log holds none: it checkpoints each
 *      commit within ~20 ms);
 *   4. DEST.partial is synced and renamed to DEST, and DEST's parent
 *      synced: DEST either does not exist or is a whole, checked copy.
 * DEST.partial is this command's own: made here (mkdir, so never an
 * existing one), removed here on any failure. A backup killed midway leaves
 * it behind; the next backup to DEST refuses and names it. */
#define _XOPEN_SOURCE 700   /* nftw */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "commit_log.h"

#define BACKUP_PARTIAL_SUFFIX ".partial"
#define BACKUP_HEAD_CHECKS 3          /* looks at DIR's head while the log holds records */
#define BACKUP_HEAD_CHECK_MS 30       /* apart: berthd checkpoints every ~20 ms */
#define BACKUP_NFTW_FDS_MAX 16

static const char backup_usage[] =
    "usage: berth backup --data DIR --to DEST [--json]\n"
    "  Copy the data directory DIR to DEST (which must not exist), as of one\n"
    "  committed state, safely beside a running berthd: the journal with its\n"
    "  snapshots, and a HISTORY index built from it. Every record of the copy\n"
    "  is checked (chain, hashes, recorded outcomes) before DEST appears; it\n"
    "  is built in DEST.partial and renamed. berthd starts on DEST as it\n"
    "  would on DIR at that seq. Records a berthd acknowledged but has not\n"
    "  moved out of its commit log yet are not copied: with berthd running\n"
    "  they are milliseconds old; with none running, the backup is refused\n"
    "  until a berthd start has moved them.\n"
    "  Restore: stop berthd, move DIR aside, move DEST to DIR (or start berthd\n"
    "  with --data DEST).\n";

typedef struct backup_opts {
    const char *data;
    const char *to;
    bool json;
} backup_opts;

static int backup_parse(int argc, char **argv, backup_opts *o) {
    bool bad = false;
    for (int i = 1; i < argc && !bad; i++) {
        if (cli_flag_value(argc, argv, &i, "--data", &o->data, &bad)) continue;
        if (cli_flag_value(argc, argv, &i, "--to", &o->to, &bad)) continue;
        if (strcmp(argv[i], "--json") == 0) {
            o->json = true;
            continue;
        }
        fprintf(stderr, "ERR unexpected argument '%s'\n%s", argv[i], backup_usage);
        return CLI_EXIT_USAGE;
    }
    if (bad) return CLI_EXIT_USAGE;
    if (o->data == NULL) return cli_fail(CLI_EXIT_USAGE, "ERR", "no data directory given: use --data DIR");
    if (o->to == NULL) return cli_fail(CLI_EXIT_USAGE, "ERR", "no destination given: use --to DEST");
    if (cli_etcd_on()) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "backup copies a data directory's own files: an etcd "
                        "journal is backed up with etcd's snapshot (etcdctl snapshot save), and a "
                        "replica's local copy with berth backup without --journal etcd");
    }
    return CLI_EXIT_OK;
}

/* DEST and DEST.partial are both free, and neither lies inside DIR. */
static int backup_paths_check(const backup_opts *o, char *partial, size_t partial_size) {
    int n = snprintf(partial, partial_size, "%s%s", o->to, BACKUP_PARTIAL_SUFFIX);
    if (n < 0 || (size_t)n >= partial_size) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "--to %s is too long", o->to);
    }
    struct stat st;
    if (lstat(o->to, &st) == 0 || errno != ENOENT) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "--to %s already exists: a backup goes to a new "
                        "path, never over anything", o->to);
    }
    if (lstat(partial, &st) == 0 || errno != ENOENT) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "%s already exists: a backup to %s was cut short "
                        "there; remove it and run the backup again", partial, o->to);
    }
    int rc = cli_out_check("--to", o->to, o->data);
    return rc != CLI_EXIT_OK ? rc : cli_out_check("--to", partial, o->data);
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)st;
    (void)ftw;
    int rc = type == FTW_DP ? rmdir(path) : unlink(path);
    return rc == 0 || errno == ENOENT ? 0 : -1;
}

/* fsync the directory at path, so the entries made or renamed in it
 * survive an OS crash. 0, or -1 with errno set. */
static int dir_sync(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int saved = errno;
    (void)close(fd);
    errno = saved;
    return rc;
}

/* Remove DEST.partial, which this command made: it is never a backup. */
static void partial_remove(const char *partial) {
    if (nftw(partial, remove_entry, BACKUP_NFTW_FDS_MAX, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT) {
        fprintf(stderr, "berth: warning: could not remove %s (%s): it is not a backup; remove it\n",
                partial, strerror(errno));
    }
}

/* The head of the journal in dir, read-only. CLI_EXIT_*. */
static int head_of(const char *dir, uint64_t *seq, uint8_t hash[BERTH_HASH_LEN]) {
    berth_journal_options options;
    memset(&options, 0, sizeof options);
    options.read_only = true;
    options.no_lock = true;
    char err[CLI_ERR_LEN_MAX] = "";
    berth_journal *journal = NULL;
    berth_jerr jerr = berth_journal_open_lmdb(&journal, dir, &options, err, sizeof err);
    if (jerr == BERTH_J_OK) {
        jerr = berth_journal_head(journal, seq, hash);
        berth_journal_close(journal);
    }
    if (jerr != BERTH_J_OK) {
        return cli_fail(jerr == BERTH_J_CORRUPT ? CLI_EXIT_FINDING : CLI_EXIT_USAGE, berth_jerr_name(jerr),
                        "cannot read the journal head in %s%s%s", dir, err[0] ? ": " : "", err);
    }
    return CLI_EXIT_OK;
}

/* Step 3: refuse a copy that lacks acknowledged records nobody is moving
 * into DIR's data.mdb. berthd running moves DIR's head within a few
 * checkpoints; a head that stays put while the log holds records past it
 * means they wait for a berthd start. CLI_EXIT_*. */
static int pending_check(const char *dir, uint64_t copy_seq, const uint8_t copy_hash[BERTH_HASH_LEN]) {
    uint64_t pending = 0;
    char err[CLI_ERR_LEN_MAX] = "";
    berth_jerr jerr = berth_clog_pending(dir, copy_seq, copy_hash, &pending, err, sizeof err);
    if (jerr != BERTH_J_OK || pending == 0) {
        return CLI_EXIT_OK;   /* a log moving under the walk, or a damaged one: the open warned */
    }
    for (int i = 0; i < BACKUP_HEAD_CHECKS; i++) {
        struct timespec pause = { 0, BACKUP_HEAD_CHECK_MS * 1000000L };
        nanosleep(&pause, NULL);
        uint64_t head = 0;
        uint8_t hash[BERTH_HASH_LEN];
        int rc = head_of(dir, &head, hash);
        if (rc != CLI_EXIT_OK) return rc;
        if (head != copy_seq) return CLI_EXIT_OK;   /* a berthd is checkpointing */
    }
    return cli_fail(CLI_EXIT_USAGE, "ERR", "the commit log in %s holds %" PRIu64 " acknowledged records after "
                    "seq %" PRIu64 " that its data.mdb does not hold yet, and no berthd is moving them in: "
                    "a backup now would lack them; start berthd on %s once (its start moves them), then "
                    "back up again", dir, pending, copy_seq, dir);
}

/* Steps 1-3 into partial, which exists and is empty. CLI_EXIT_*. */
static int backup_build(const backup_opts *o, const char *partial, cli_rebuilt *done, uint64_t *bytes) {
    berth_journal_options options;
    memset(&options, 0, sizeof options);
    options.read_only = true;
    options.no_lock = true;
    char err[CLI_ERR_LEN_MAX] = "";
    berth_journal *journal = NULL;
    berth_jerr jerr = berth_journal_open_lmdb(&journal, o->data, &options, err, sizeof err);
    if (jerr != BERTH_J_OK) {
        return cli_fail(jerr == BERTH_J_CORRUPT ? CLI_EXIT_FINDING : CLI_EXIT_USAGE, berth_jerr_name(jerr),
                        "cannot open data directory %s: %s", o->data, err[0] ? err : "no berth journal there");
    }
    cli_guard_opened(0);
    jerr = berth_journal_copy(journal, partial, err, sizeof err);
    berth_journal_close(journal);
    if (jerr != BERTH_J_OK) {
        return cli_fail(CLI_EXIT_USAGE, berth_jerr_name(jerr), "cannot back up %s: %s", o->data, err);
    }
    /* The copy's head is known once its journal opens, which (its touch
     * log trimmed, its index not yet made) only the rebuild's open does. */
    int rc = cli_history_rebuild_into(partial, done);
    if (rc == CLI_EXIT_OK) rc = pending_check(o->data, done->head_seq, done->head_hash);
    if (rc != CLI_EXIT_OK) return rc;
    char path[CLI_PATH_LEN_MAX + sizeof "/data.mdb"];
    struct stat st;
    snprintf(path, sizeof path, "%s/data.mdb", partial);
    *bytes = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
    return CLI_EXIT_OK;
}

/* Step 4: DEST appears whole, or not at all. */
static int backup_publish(const backup_opts *o, const char *partial) {
    if (dir_sync(partial) != 0 || rename(partial, o->to) != 0) {
        return cli_fail(CLI_EXIT_USAGE, "IO", "cannot move %s to %s: %s", partial, o->to, strerror(errno));
    }
    char parent[CLI_PATH_LEN_MAX];
    snprintf(parent, sizeof parent, "%s", o->to);
    char *slash = strrchr(parent, '/');
    if (slash == NULL) {
        snprintf(parent, sizeof parent, ".");
    } else if (slash == parent) {
        parent[1] = '\0';
    } else {
        *slash = '\0';
    }
    if (dir_sync(parent) != 0) {
        return cli_fail(CLI_EXIT_USAGE, "IO", "cannot sync %s after moving the backup in: %s", parent,
                        strerror(errno));
    }
    return CLI_EXIT_OK;
}

static void backup_print(const backup_opts *o, const cli_rebuilt *done, uint64_t bytes, double secs) {
    char hex[CLI_HEX_HASH_LEN];
    cli_hex_hash(done->head_hash, hex);
    if (o->json) {
        fputs("{\"data\":", stdout);
        cli_json_str(stdout, o->data, strlen(o->data));
        fputs(",\"to\":", stdout);
        cli_json_str(stdout, o->to, strlen(o->to));
        printf(",\"head_seq\":%" PRIu64 ",\"head_hash\":\"%s\",\"records_checked\":%" PRIu64
               ",\"data_mdb_bytes\":%" PRIu64 ",\"history_names\":%" PRIu64 ",\"seconds\":%.3f}\n",
               done->head_seq, hex, done->records, bytes, done->names, secs);
        return;
    }
    printf("backed up %s to %s: records 1..%" PRIu64 " (head hash %s), every one checked; data.mdb %" PRIu64
           " bytes, history index rebuilt (%" PRIu64 " names); %.3f s\n",
           o->data, o->to, done->head_seq, hex, bytes, done->names, secs);
}

int cli_backup_main(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        fputs(backup_usage, stdout);
        return CLI_EXIT_OK;
    }
    backup_opts o = { 0 };
    int rc = backup_parse(argc, argv, &o);
    if (rc != CLI_EXIT_OK) return rc;
    char partial[CLI_PATH_LEN_MAX];
    rc = backup_paths_check(&o, partial, sizeof partial);
    if (rc != CLI_EXIT_OK) return rc;
    uint64_t start_ns = cli_monotonic_ns();
    if (mkdir(partial, 0700) != 0) {
        return cli_fail(CLI_EXIT_USAGE, "IO", "cannot make %s: %s", partial, strerror(errno));
    }
    cli_rebuilt done;
    memset(&done, 0, sizeof done);
    uint64_t bytes = 0;
    rc = backup_build(&o, partial, &done, &bytes);
    if (rc == CLI_EXIT_OK) rc = backup_publish(&o, partial);
    if (rc != CLI_EXIT_OK) {
        partial_remove(partial);
        return rc;
    }
    backup_print(&o, &done, bytes, (double)(cli_monotonic_ns() - start_ns) / 1e9);
    return CLI_EXIT_OK;
}
