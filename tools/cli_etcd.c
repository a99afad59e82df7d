/* cli_etcd.c — owns the berth tool's `--journal etcd` (issue 6): the backend
 * flags every subcommand accepts and the local copy they read.
 *
 * Why a local copy: every subcommand reads a journal through the LMDB
 * reader API (cursors, snapshots, the HISTORY index), and etcd's journal is
 * exactly the records a berthd follower would copy. So with --journal etcd
 * the tool first brings the LMDB journal in --data DIR up to date from etcd
 * the way a follower does (same checks: the local copy must be a prefix;
 * each record replays to its recorded outcome), then runs the subcommand on
 * it unchanged. DIR is a cache: delete it and the next run copies it again.
 * The flags are taken out of argv before the subcommand parses its own, so
 * they may appear anywhere. */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "engine.h"
#include "etcd.h"

#define CLI_ETCD_PASSWORD_LEN_MAX 512

typedef struct cli_etcd_flags {
    bool on;
    const char *journal;
    const char *endpoints;
    const char *cluster;
    const char *cacert;
    const char *cert;
    const char *key;
    const char *user;
    const char *password_file;
    uint32_t lease_ttl_s;   /* accepted for symmetry with berthd; the tool never leads */
    uint32_t timeout_ms;    /* every etcd request; 0: the backend's default */
} cli_etcd_flags;

static cli_etcd_flags flags = { .endpoints = "http://127.0.0.1:2379", .cluster = "berth" };

typedef struct flag_slot {
    const char *name;
    const char **value;
} flag_slot;

/* Take the etcd flags out of argv (any position after the subcommand). */
int cli_etcd_take_flags(int *argc, char **argv) {
    assert(argc != NULL && *argc >= 1);
    const char *ttl = NULL;
    const char *timeout = NULL;
    const flag_slot slots[] = {
        { "--journal", &flags.journal },       { "--etcd-endpoints", &flags.endpoints },
        { "--cluster", &flags.cluster },       { "--etcd-cacert", &flags.cacert },
        { "--etcd-cert", &flags.cert },        { "--etcd-key", &flags.key },
        { "--etcd-user", &flags.user },        { "--etcd-password-file", &flags.password_file },
        { "--etcd-lease-ttl", &ttl },          { "--etcd-timeout-ms", &timeout },
    };
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        bool taken = false;
        for (size_t k = 0; k < sizeof slots / sizeof slots[0] && !taken; k++) {
            bool bad = false;
            int at = i;
            if (cli_flag_value(*argc, argv, &at, slots[k].name, slots[k].value, &bad)) {
                if (bad) return CLI_EXIT_USAGE;
                i = at;
                taken = true;
            }
        }
        if (!taken) argv[out++] = argv[i];
    }
    argv[out] = NULL;
    *argc = out;
    if (flags.journal != NULL && strcmp(flags.journal, "lmdb") != 0 && strcmp(flags.journal, "etcd") != 0) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "--journal must be lmdb or etcd, not '%s'", flags.journal);
    }
    flags.on = flags.journal != NULL && strcmp(flags.journal, "etcd") == 0;
    uint64_t ms = 0;
    if (timeout != NULL && (!cli_parse_u64_text(timeout, &ms) || ms < BERTH_ETCD_TIMEOUT_MS_MIN ||
                            ms > BERTH_ETCD_TIMEOUT_MS_MAX)) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "--etcd-timeout-ms must be %d to %d milliseconds, not '%s'",
                        BERTH_ETCD_TIMEOUT_MS_MIN, BERTH_ETCD_TIMEOUT_MS_MAX, timeout);
    }
    flags.timeout_ms = (uint32_t)ms;
    return CLI_EXIT_OK;
}

static int read_password(char *out, size_t size) {
    FILE *f = fopen(flags.password_file, "r");
    if (f == NULL) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "cannot open %s: %s", flags.password_file, strerror(errno));
    }
    char *got = fgets(out, (int)size, f);
    int rc = fclose(f);
    assert(rc == 0 || rc == EOF);
    if (got == NULL) return cli_fail(CLI_EXIT_USAGE, "ERR", "%s is empty", flags.password_file);
    out[strcspn(out, "\r\n")] = '\0';
    return CLI_EXIT_OK;
}

/* Apply one fetched feed through the engine, as a berthd follower does. */
static int apply_feed(berth_journal *journal, berth_engine *engine, berth_record *records) {
    berth_etcd_feed feed;
    bool ready = berth_etcd_feed_take(journal, &feed);
    assert(ready);
    (void)ready;
    char err[CLI_ERR_LEN_MAX] = "";
    berth_jerr e = BERTH_J_OK;
    for (uint32_t i = 0; i < feed.count && e == BERTH_J_OK; i++) {
        e = berth_record_decode(feed.raw[i], feed.len[i], &records[i], err, sizeof err);
    }
    if (e == BERTH_J_OK) e = berth_engine_apply_committed(engine, records, feed.count, err, sizeof err);
    berth_etcd_feed_done(journal);
    if (e != BERTH_J_OK) {
        return cli_fail(e == BERTH_J_CORRUPT ? CLI_EXIT_FINDING : CLI_EXIT_USAGE, berth_jerr_name(e),
                        "copying records %" PRIu64 ".. from etcd: %s", feed.first_seq, err);
    }
    return CLI_EXIT_OK;
}

static int copy_all(berth_journal *journal, berth_engine *engine, uint64_t *copied) {
    static berth_record records[BERTH_ETCD_FEED_RECORDS_MAX];
    char err[CLI_ERR_LEN_MAX] = "";
    for (;;) {
        uint32_t count = 0;
        berth_jerr e = berth_etcd_fetch(journal, &count, err, sizeof err);
        if (e != BERTH_J_OK) {
            return cli_fail(e == BERTH_J_CORRUPT ? CLI_EXIT_FINDING : CLI_EXIT_USAGE, berth_jerr_name(e),
                            "reading the etcd journal: %s", err);
        }
        if (count == 0) return CLI_EXIT_OK;
        int rc = apply_feed(journal, engine, records);
        if (rc != CLI_EXIT_OK) return rc;
        *copied += count;
    }
}

bool cli_etcd_on(void) {
    return flags.on;
}

int cli_etcd_mirror(const char *dir) {
    if (!flags.on) return CLI_EXIT_OK;
    if (dir == NULL) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "--journal etcd needs --data DIR: the local copy to read");
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "cannot create %s: %s", dir, strerror(errno));
    }
    char password[CLI_ETCD_PASSWORD_LEN_MAX] = "";
    if (flags.password_file != NULL && read_password(password, sizeof password) != CLI_EXIT_OK) {
        return CLI_EXIT_USAGE;
    }
    berth_etcd_options eo;
    memset(&eo, 0, sizeof eo);
    eo.endpoints = flags.endpoints;
    eo.cluster = flags.cluster;
    eo.cacert = flags.cacert;
    eo.cert = flags.cert;
    eo.key = flags.key;
    eo.user = flags.user;
    eo.password = password;
    eo.request_timeout_ms = flags.timeout_ms;
    char err[CLI_ERR_LEN_MAX] = "";
    berth_journal *journal = NULL;
    berth_jerr e = berth_journal_open_etcd(&journal, dir, NULL, &eo, err, sizeof err);
    if (e != BERTH_J_OK) {
        return cli_fail(e == BERTH_J_CORRUPT ? CLI_EXIT_FINDING : CLI_EXIT_USAGE, berth_jerr_name(e),
                        "cannot open the etcd journal (copy in %s): %s", dir, err);
    }
    berth_engine *engine = NULL;
    e = berth_engine_open(&engine, journal, NULL, NULL, err, sizeof err);
    int rc = CLI_EXIT_OK;
    uint64_t copied = 0;
    if (e != BERTH_J_OK) {
        rc = cli_fail(CLI_EXIT_FINDING, berth_jerr_name(e), "the local copy in %s: %s", dir, err);
    } else {
        rc = copy_all(journal, engine, &copied);
        berth_engine_close(engine);
    }
    berth_journal_close(journal);
    if (rc == CLI_EXIT_OK && copied > 0) {
        fprintf(stderr, "berth: copied %" PRIu64 " records from etcd cluster %s into %s\n", copied,
                flags.cluster, dir);
    }
    return rc;
}
