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
 *      commit within ~20 ms); so is one beside a log that cannot be read,
 *      which may hold such records (and which berthd refuses to start on);
 *   4. DEST.partial is synced and renamed to DEST, and DEST's parent
 *      synced: DEST either does not exist or is a whole, checked copy.
 * DEST.partial is this command's own: the parent makes it (mkdir, so never
 * an existing one) and removes it on any failure, the steps that read
 * DIR's pages (1-3) running in a guarded child whose death by damaged pages
 * or by SIGTERM/SIGINT is such a failure too. Only a berth killed outright
 * (SIGKILL) leaves it behind; the next backup to DEST refuses and names it. */
#define _GNU_SOURCE   /* nftw, renameat2 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
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
    "  they are milliseconds old; with none moving them (or a damaged log),\n"
    "  the backup is refused. Run as root, DEST gets DIR's owner and group.\n"
    "  Restore: stop berthd, move DIR aside, move DEST to DIR (or start berthd\n"
    "  with --data DEST).\n";

typedef struct backup_opts {
    const char *data;
    char to[CLI_PATH_LEN_MAX];      /* --to without trailing slashes */
    bool json;
} backup_opts;

/* What the child found, sent to the parent as its result frame. */
typedef struct backup_made {
    uint64_t head_seq;
    uint8_t head_hash[BERTH_HASH_LEN];
    uint64_t records;               /* checked: head_seq */
    uint64_t names;                 /* the rebuilt index's entries */
    uint64_t bytes;                 /* the copy's data.mdb */
} backup_made;

typedef struct backup_run {
    const backup_opts *o;
    const char *partial;
    backup_made made;
    bool made_set;                  /* made holds the child's result (or, unguarded, this process's) */
} backup_run;

static int backup_parse(int argc, char **argv, backup_opts *o) {
    bool bad = false;
    const char *to = NULL;
    for (int i = 1; i < argc && !bad; i++) {
        if (cli_flag_value(argc, argv, &i, "--data", &o->data, &bad)) continue;
        if (cli_flag_value(argc, argv, &i, "--to", &to, &bad)) continue;
        if (strcmp(argv[i], "--json") == 0) {
            o->json = true;
            continue;
        }
        fprintf(stderr, "ERR unexpected argument '%s'\n%s", argv[i], backup_usage);
        return CLI_EXIT_USAGE;
    }
    if (bad) return CLI_EXIT_USAGE;
    if (o->data == NULL) return cli_fail(CLI_EXIT_USAGE, "ERR", "no data directory given: use --data DIR");
    if (to == NULL || to[0] == '\0') {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "no destination given: use --to DEST (a path that does not exist)");
    }
    size_t n = strlen(to);
    while (n > 1 && to[n - 1] == '/') n--;   /* "B/" is B; "/" stays, and exists */
    if (n + sizeof BACKUP_PARTIAL_SUFFIX > sizeof o->to) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "--to %s is too long", to);
    }
    memcpy(o->to, to, n);
    o->to[n] = '\0';
    if (cli_etcd_on()) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "backup copies a data directory's own files: an etcd "
                        "journal is backed up with etcd's snapshot (etcdctl snapshot save), and a "
                        "replica's local copy with berth backup without --journal etcd");
    }
    return CLI_EXIT_OK;
}

/* Neither DEST nor DEST.partial lies inside DIR (or is DIR), and both are
 * free. */
static int backup_paths_check(const backup_opts *o, char *partial, size_t partial_size) {
    int n = snprintf(partial, partial_size, "%s%s", o->to, BACKUP_PARTIAL_SUFFIX);
    assert(n > 0 && (size_t)n < partial_size);
    int rc = cli_out_check("--to", o->to, o->data);
    if (rc == CLI_EXIT_OK) rc = cli_out_check("--to", partial, o->data);
    if (rc != CLI_EXIT_OK) return rc;
    struct stat st;
    if (lstat(o->to, &st) == 0 || errno != ENOENT) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "--to %s already exists: a backup goes to a new "
                        "path, never over anything", o->to);
    }
    if (lstat(partial, &st) == 0 || errno != ENOENT) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "%s already exists: berth backup builds a backup to %s "
                        "there, so it is another backup still running, one killed outright, or not a "
                        "backup's at all; once no backup to %s runs, remove it or choose another --to",
                        partial, o->to, o->to);
    }
    return CLI_EXIT_OK;
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
static void partial_remove(void *arg) {
    const char *partial = arg;
    if (nftw(partial, remove_entry, BACKUP_NFTW_FDS_MAX, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT) {
        fprintf(stderr, "berth: warning: could not remove %s (%s): it is not a backup; remove it\n",
                partial, strerror(errno));
    }
}

/* The head of the journal in dir, read-only. CLI_EXIT_*. */
static int head_of(const char *dir, uint64_t *seq, uint8_t hash[BERTH_HASH_LEN]) {
    berth_journal *journal = NULL;
    int rc = cli_journal_open_ro(dir, &journal);
    if (rc != CLI_EXIT_OK) return rc;
    berth_jerr jerr = berth_journal_head(journal, seq, hash);
    berth_journal_close(journal);
    if (jerr != BERTH_J_OK) {
        return cli_fail(jerr == BERTH_J_CORRUPT ? CLI_EXIT_FINDING : CLI_EXIT_USAGE, berth_jerr_name(jerr),
                        "cannot read the journal head in %s", dir);
    }
    return CLI_EXIT_OK;
}

/* Step 3: refuse a copy that may lack acknowledged records: DIR's commit
 * log holds records past the copy's head, or cannot be read (damaged: then
 * berthd will not start on DIR, and what it holds is unknown). Beside a
 * running berthd the log changes under the walk and may not read cleanly,
 * and records past the head are milliseconds from data.mdb: its
 * checkpoints move DIR's head, and then the copy is simply an earlier
 * state. So only what stays over a few looks counts. CLI_EXIT_*. */
static int pending_check(const char *dir, uint64_t copy_seq, const uint8_t copy_hash[BERTH_HASH_LEN]) {
    uint64_t pending = 0;
    char err[CLI_ERR_LEN_MAX] = "";
    berth_jerr jerr = BERTH_J_OK;
    for (int i = 0; i < BACKUP_HEAD_CHECKS; i++) {
        if (i > 0) {
            struct timespec pause = { 0, BACKUP_HEAD_CHECK_MS * 1000000L };
            nanosleep(&pause, NULL);
        }
        err[0] = '\0';
        jerr = berth_clog_pending(dir, copy_seq, copy_hash, &pending, err, sizeof err);
        if (jerr == BERTH_J_OK && pending == 0) return CLI_EXIT_OK;
        uint64_t head = 0;
        uint8_t hash[BERTH_HASH_LEN];
        int rc = head_of(dir, &head, hash);
        if (rc != CLI_EXIT_OK) return rc;
        if (head != copy_seq) return CLI_EXIT_OK;   /* a berthd is checkpointing */
    }
    if (jerr != BERTH_J_OK) {
        return cli_fail(CLI_EXIT_FINDING, berth_jerr_name(jerr), "cannot back up %s: %s; berthd will not "
                        "start on %s, and the acknowledged records that log may hold past seq %" PRIu64
                        " would be missing from the backup", dir, err, dir, copy_seq);
    }
    return cli_fail(CLI_EXIT_USAGE, "ERR", "the commit log in %s holds %" PRIu64 " acknowledged records after "
                    "seq %" PRIu64 " that its data.mdb does not hold yet, and its head did not move in %d ms: "
                    "no berthd runs on %s, or its checkpoints fail (its log says why); a backup now would lack "
                    "them: start berthd on %s (its start moves them) or mend what stops its checkpoints, then "
                    "back up again", dir, pending, copy_seq, BACKUP_HEAD_CHECKS * BACKUP_HEAD_CHECK_MS, dir, dir);
}

/* The copy's check failed: word it for a backup (the rebuild's own words
 * name the copy, which is removed). CLI_EXIT_*. */
static int check_failed(const backup_run *run, int rc, const cli_rebuilt *done) {
    if (rc == CLI_EXIT_FINDING) {
        return cli_fail(rc, done->code, "cannot back up %s: its copy does not verify: %s; the copy is "
                        "removed, and %s/data.mdb holds the same bytes (`berth journal verify --data %s`)",
                        run->o->data, done->detail, run->o->data, run->o->data);
    }
    return cli_fail(rc, done->code, "cannot back up %s: checking its copy in %s failed: %s", run->o->data,
                    run->partial, done->detail);
}

/* Steps 1-3, in the guarded child: into partial, which exists and is
 * empty. CLI_EXIT_*; on OK, run->made is filled and sent to the parent. */
static int backup_build(void *arg) {
    backup_run *run = arg;
    /* A file size limit (ulimit -f) then fails the write with EFBIG, which
     * is reported (FULL), instead of killing the copy. */
    (void)signal(SIGXFSZ, SIG_IGN);
    berth_journal *journal = NULL;
    int rc = cli_journal_open_ro(run->o->data, &journal);
    if (rc != CLI_EXIT_OK) return rc;
    cli_guard_opened(0);
    char err[CLI_ERR_LEN_MAX] = "";
    berth_jerr jerr = berth_journal_copy(journal, run->partial, err, sizeof err);
    berth_journal_close(journal);
    if (jerr != BERTH_J_OK) {
        return cli_fail(CLI_EXIT_USAGE, berth_jerr_name(jerr), "cannot back up %s: %s", run->o->data, err);
    }
    /* The copy's head is known once its journal opens, which (its touch
     * log trimmed, its index not yet made) only the rebuild's open does. */
    cli_rebuilt done = { .quiet = true };
    rc = cli_history_rebuild_into(run->partial, &done);
    if (rc != CLI_EXIT_OK) return check_failed(run, rc, &done);
    rc = pending_check(run->o->data, done.head_seq, done.head_hash);
    if (rc != CLI_EXIT_OK) return rc;
    char path[CLI_PATH_LEN_MAX + sizeof "/data.mdb"];
    struct stat st;
    snprintf(path, sizeof path, "%s/data.mdb", run->partial);
    run->made = (backup_made){ .head_seq = done.head_seq, .records = done.records, .names = done.names,
                               .bytes = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0 };
    memcpy(run->made.head_hash, done.head_hash, BERTH_HASH_LEN);
    run->made_set = true;
    cli_guard_result(&run->made, sizeof run->made);
    return CLI_EXIT_OK;
}

/* The parent of DEST, for its sync. */
static void parent_of(const char *path, char *out, size_t out_size) {
    snprintf(out, out_size, "%s", path);
    char *slash = strrchr(out, '/');
    if (slash == NULL) {
        snprintf(out, out_size, ".");
    } else if (slash == out) {
        out[1] = '\0';
    } else {
        *slash = '\0';
    }
}

/* Step 4: DEST appears whole, or not at all; never over anything, even a
 * directory made at DEST while the backup ran (rename would replace an
 * empty one). A filesystem without RENAME_NOREPLACE gets the check and
 * rename apart. */
static int backup_publish(const backup_opts *o, const char *partial) {
    if (dir_sync(partial) != 0) {
        return cli_fail(CLI_EXIT_USAGE, "IO", "cannot sync %s: %s", partial, strerror(errno));
    }
    int rc = renameat2(AT_FDCWD, partial, AT_FDCWD, o->to, RENAME_NOREPLACE);
    if (rc != 0 && errno == EINVAL) {
        struct stat st;
        rc = lstat(o->to, &st) == 0 ? (errno = EEXIST, -1) : rename(partial, o->to);
    }
    if (rc != 0) {
        return cli_fail(CLI_EXIT_USAGE, errno == EEXIST ? "ERR" : "IO", "cannot move %s to %s: %s%s", partial,
                        o->to, strerror(errno), errno == EEXIST ? " (made while the backup ran)" : "");
    }
    char parent[CLI_PATH_LEN_MAX];
    parent_of(o->to, parent, sizeof parent);
    if (dir_sync(parent) != 0) {
        return cli_fail(CLI_EXIT_USAGE, "IO", "%s is whole, but syncing %s after moving it in failed (%s): "
                        "an OS crash may lose the move", o->to, parent, strerror(errno));
    }
    return CLI_EXIT_OK;
}

static void backup_print(const backup_opts *o, const backup_made *made, double secs) {
    char hex[CLI_HEX_HASH_LEN];
    cli_hex_hash(made->head_hash, hex);
    if (o->json) {
        fputs("{\"data\":", stdout);
        cli_json_str(stdout, o->data, strlen(o->data));
        fputs(",\"to\":", stdout);
        cli_json_str(stdout, o->to, strlen(o->to));
        printf(",\"head_seq\":%" PRIu64 ",\"head_hash\":\"%s\",\"records_checked\":%" PRIu64
               ",\"data_mdb_bytes\":%" PRIu64 ",\"history_names\":%" PRIu64 ",\"seconds\":%.3f}\n",
               made->head_seq, hex, made->records, made->bytes, made->names, secs);
        return;
    }
    /* An empty journal holds no records: not "records 1..0". */
    char records[CLI_HEX_HASH_LEN + 96];
    if (made->head_seq > 0) {
        snprintf(records, sizeof records, "records 1..%" PRIu64 " (head hash %s), every one checked",
                 made->head_seq, hex);
    } else {
        snprintf(records, sizeof records, "no records, the journal is empty (head hash %s)", hex);
    }
    printf("backed up %s to %s: %s; data.mdb %" PRIu64 " bytes, history index rebuilt (%" PRIu64
           " names); %.3f s\n", o->data, o->to, records, made->bytes, made->names, secs);
}

int cli_backup_main(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        fputs(backup_usage, stdout);
        return CLI_EXIT_OK;
    }
    backup_opts o;
    memset(&o, 0, sizeof o);
    int rc = backup_parse(argc, argv, &o);
    if (rc != CLI_EXIT_OK) return rc;
    char partial[CLI_PATH_LEN_MAX];
    rc = backup_paths_check(&o, partial, sizeof partial);
    if (rc != CLI_EXIT_OK) return rc;
    uint64_t start_ns = cli_monotonic_ns();
    cli_made made;
    cli_made_before(&made, partial);
    if (mkdir(partial, 0700) != 0) {
        return cli_fail(CLI_EXIT_USAGE, "IO", "cannot make %s: %s", partial, strerror(errno));
    }
    backup_run run = { .o = &o, .partial = partial };
    char *bytes = NULL;
    size_t len = 0;
    rc = cli_guarded(argc, argv, backup_build, &run, partial_remove, partial, &bytes, &len);
    if (rc == CLI_EXIT_OK && bytes != NULL) {
        if (len == sizeof run.made) {
            memcpy(&run.made, bytes, len);
            run.made_set = true;
        } else {
            rc = cli_fail(CLI_EXIT_USAGE, "INTERNAL", "the backup's child sent %zu bytes, not %zu", len,
                          sizeof run.made);
        }
    }
    free(bytes);
    if (rc == CLI_EXIT_OK && !run.made_set) {
        rc = cli_fail(CLI_EXIT_USAGE, "INTERNAL", "the backup's child ended well but sent no result");
    }
    /* As root, DEST goes to DIR's owner before it appears: restored in
     * DIR's place, berthd runs as that user and must open all of it. */
    if (rc == CLI_EXIT_OK) rc = cli_made_chown(&made, o.data);
    if (rc == CLI_EXIT_OK) rc = backup_publish(&o, partial);
    if (rc != CLI_EXIT_OK) {
        partial_remove(partial);
        return rc;
    }
    backup_print(&o, &run.made, (double)(cli_monotonic_ns() - start_ns) / 1e9);
    return CLI_EXIT_OK;
}
