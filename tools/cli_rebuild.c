/* cli_rebuild.c — owns `berth history rebuild --data DIR`: the HISTORY index
 * of a data directory built again from its journal.
 *
 * Why it exists: the index (DIR/history) is derived, but once the journal's
 * touch log was trimmed the names of older records live only there, so a
 * missing or damaged index made every writable open, berthd's start
 * included, refuse the directory. The names are what the engine's apply
 * computed for each record; the journal layer cannot compute them, so this
 * command replays the whole journal from genesis through replay's verify
 * walk (every hash and recorded outcome checked, the same apply as berthd's
 * at append) and hands each record's names to a journal opened for the
 * rebuild, which writes the new index beside the old one and swaps it in
 * (journal/lmdb_store.c, "Rebuilding the index"). It is the one berth
 * command that writes: it takes the directory lock like berthd, so it
 * refuses (LOCKED) while a berthd runs there. */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

typedef struct rebuild_feed {
    berth_journal *journal;
    cli_progress progress;
} rebuild_feed;

static berth_jerr rebuild_take(void *ctx, uint64_t seq, const berth_touched *touched) {
    rebuild_feed *feed = ctx;
    cli_progress_update(&feed->progress, seq);
    return berth_journal_history_rebuild_add(feed->journal, seq, touched);
}

/* A failure: printed as cli_fail would, or kept in out for the caller to
 * word (out->quiet). Returns exit_code. */
static int rebuild_fail(cli_rebuilt *out, int exit_code, const char *code, const char *dir,
                        const char *what, const char *detail, const char *tail) {
    if (!out->quiet) {
        return cli_fail(exit_code, code, "%s %s%s%s%s", what, dir, detail[0] ? ": " : "", detail, tail);
    }
    out->code = code;
    snprintf(out->detail, sizeof out->detail, "%s", detail);
    return exit_code;
}

/* Walk the journal into the rebuild open, then swap the index in. */
static int rebuild_run(const char *dir, berth_journal *journal, cli_rebuilt *out) {
    berth_journal_reader *reader = NULL;
    berth_jerr jerr = berth_journal_reader_open(journal, &reader);
    if (jerr != BERTH_J_OK) {
        return rebuild_fail(out, CLI_EXIT_USAGE, berth_jerr_name(jerr), dir, "cannot read the journal in", "", "");
    }
    jerr = berth_journal_reader_head(reader, &out->head_seq, out->head_hash);
    rebuild_feed feed = { .journal = journal };
    cli_progress_start(&feed.progress, "rebuild", out->head_seq);
    berth_verify_report report;
    memset(&report, 0, sizeof report);
    if (jerr == BERTH_J_OK) {
        jerr = berth_verify_touched(reader, rebuild_take, &feed, &report);
    }
    cli_progress_end(&feed.progress);
    berth_journal_reader_close(reader);
    if (jerr != BERTH_J_OK) {
        /* A journal that does not verify is a finding; the index is left as it was. */
        return rebuild_fail(out, jerr == BERTH_J_CORRUPT ? CLI_EXIT_FINDING : CLI_EXIT_USAGE,
                            berth_jerr_name(jerr), dir, "cannot rebuild the history index of", report.what,
                            "; nothing was changed");
    }
    assert(report.records == out->head_seq);
    out->records = report.records;
    char err[CLI_ERR_LEN_MAX] = "";
    jerr = berth_journal_history_rebuild_finish(journal, &out->names, err, sizeof err);
    if (jerr != BERTH_J_OK) {
        return rebuild_fail(out, CLI_EXIT_USAGE, berth_jerr_name(jerr), dir, "cannot rebuild the history index of",
                            err, "");
    }
    return CLI_EXIT_OK;
}

int cli_history_rebuild_into(const char *dir, cli_rebuilt *out) {
    assert(dir != NULL && out != NULL);
    bool quiet = out->quiet;
    memset(out, 0, sizeof *out);
    out->quiet = quiet;
    berth_journal_options options;
    memset(&options, 0, sizeof options);
    options.history_rebuild = true;
    char err[CLI_ERR_LEN_MAX] = "";
    berth_journal *journal = NULL;
    /* As root, the new history/ (and a lock.mdb or LOCK the open makes)
     * go to the directory's owner, whatever the rebuild's outcome: else
     * berthd, run as that user, cannot open its index. */
    cli_made made;
    cli_made_before(&made, dir);
    berth_jerr jerr = berth_journal_open_lmdb(&journal, dir, &options, err, sizeof err);
    int rc = CLI_EXIT_OK;
    if (jerr != BERTH_J_OK) {
        int code = jerr == BERTH_J_CORRUPT ? CLI_EXIT_FINDING : CLI_EXIT_USAGE;
        rc = rebuild_fail(out, code, berth_jerr_name(jerr), dir, "cannot open data directory",
                          err[0] != '\0' ? err : "no berth journal there", "");
    } else {
        rc = rebuild_run(dir, journal, out);
        berth_journal_close(journal);
    }
    int owned = cli_made_chown(&made, dir);   /* its failure printed */
    if (rc == CLI_EXIT_OK && owned != CLI_EXIT_OK && out->quiet) {
        out->code = "IO";
        snprintf(out->detail, sizeof out->detail, "cannot give what it made to the owner of %s", dir);
    }
    return rc != CLI_EXIT_OK ? rc : owned;
}

int cli_history_rebuild(const char *dir) {
    if (dir == NULL) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "no data directory given: use --data DIR");
    }
    if (cli_etcd_on()) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "history rebuild works on the data directory itself"
                        " (an etcd replica's local copy is one): run it without --journal etcd");
    }
    uint64_t start_ns = cli_monotonic_ns();
    cli_rebuilt done = { .quiet = false };
    int rc = cli_history_rebuild_into(dir, &done);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }
    double secs = (double)(cli_monotonic_ns() - start_ns) / 1e9;
    printf("rebuilt the history index of %s: %" PRIu64 " records replayed, %" PRIu64
           " names written, %.3f s\n", dir, done.records, done.names, secs);
    return CLI_EXIT_OK;
}
