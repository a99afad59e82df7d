/* mkjournal.c — test helper: build a berth data directory from a scenario
 * file through the real engine (the same path berthd's writes take).
 *
 * The berth tool only reads journals, so its tests need journals that a
 * writer produced honestly: this drives berth_engine_submit/commit with
 * deterministic wall-clock times (--time-start + k * --time-step for the
 * k-th commit) so --at-time tests know which seq each time falls on. It
 * prints the engine's own state digest at --digest-at (committing exactly
 * there) and at the head: the reference the tool's replay must match.
 *
 * --raw 1 writes as another writer (a berth before session 7, a tool) could:
 * each command one record appended through journal.h, not the engine, at
 * --time-start + k * --time-step for the k-th record of this run with no
 * clamp (a second run with an earlier --time-start makes times go back),
 * its REQID journaled but neither checked nor put in the window (a REQID
 * repeated in the scenario is repeated in the journal), its outcome from
 * berth_state_apply on the state replayed from the journal so far.
 *
 * --fold-records N folds the HISTORY touch log every N records and waits
 * for each fold after its commit, so the commits after it trim the touch
 * log at known points (a journal whose index cannot be rebuilt from the
 * touch log alone).
 *
 * usage: mkjournal --data DIR --scenario FILE [--batch N] [--snapshot-every N]
 *                  [--time-start MS] [--time-step MS] [--digest-at SEQ] [--actor NAME]
 *                  [--fold-records N] [--raw 1] */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cli_scenario.h"
#include "engine.h"
#include "journal.h"
#include "replay.h"

#define MK_ERR_LEN_MAX 1024
#define MK_BATCH_MAX BERTH_BATCH_RECORDS_MAX

typedef struct mk_opts {
    const char *data;
    const char *scenario;
    uint64_t batch;
    uint64_t snapshot_every;
    uint64_t time_start_ms;
    uint64_t time_step_ms;
    uint64_t digest_at;
    const char *actor;
    uint64_t fold_records;
    uint64_t raw;
} mk_opts;

typedef struct mk_run {
    berth_engine *engine;
    uint64_t commits;
    bool digest_done;
} mk_run;

static int usage(const char *why) {
    fprintf(stderr, "ERR %s\nusage: mkjournal --data DIR --scenario FILE [--batch N] "
                    "[--snapshot-every N] [--time-start MS] [--time-step MS] [--digest-at SEQ] "
                    "[--actor NAME] [--fold-records N] [--raw 1]\n", why);
    return 2;
}

static bool number_flag(const char *arg, const char *name, const char *value, uint64_t *out) {
    if (strcmp(arg, name) != 0) {
        return false;
    }
    *out = strtoull(value, NULL, 10);
    return true;
}

static int parse_opts(int argc, char **argv, mk_opts *o) {
    memset(o, 0, sizeof *o);
    o->batch = 1;
    o->time_start_ms = 1764147600000ull;   /* 2025-11-26T09:00:00Z */
    o->time_step_ms = 1000;
    o->actor = "mkjournal";
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 >= argc) {
            return usage("every option takes a value");
        }
        const char *a = argv[i];
        const char *v = argv[i + 1];
        if (strcmp(a, "--data") == 0) {
            o->data = v;
        } else if (strcmp(a, "--scenario") == 0) {
            o->scenario = v;
        } else if (strcmp(a, "--actor") == 0) {
            o->actor = v;
        } else if (!number_flag(a, "--batch", v, &o->batch) &&
                   !number_flag(a, "--snapshot-every", v, &o->snapshot_every) &&
                   !number_flag(a, "--time-start", v, &o->time_start_ms) &&
                   !number_flag(a, "--time-step", v, &o->time_step_ms) &&
                   !number_flag(a, "--digest-at", v, &o->digest_at) &&
                   !number_flag(a, "--fold-records", v, &o->fold_records) &&
                   !number_flag(a, "--raw", v, &o->raw)) {
            return usage("unknown option");
        }
    }
    if (o->data == NULL || o->scenario == NULL || o->batch == 0 || o->batch > MK_BATCH_MAX ||
        o->fold_records > BERTH_HISTORY_FOLD_RECORDS_MAX) {
        return usage("--data and --scenario are required; --batch is 1..4096, --fold-records"
                     " at most 1048576");
    }
    return 0;
}

static int print_digest(const char *label, const berth_engine *engine) {
    uint8_t digest[BERTH_HASH_LEN];
    char hex[2 * BERTH_HASH_LEN + 1];
    if (berth_state_digest(berth_engine_state(engine), digest) != 0) {
        fprintf(stderr, "NOMEM digest\n");
        return 2;
    }
    berth_hex(digest, BERTH_HASH_LEN, hex);
    printf("%s %" PRIu64 " %s\n", label, berth_engine_head_seq(engine), hex);
    return 0;
}

static int commit(const mk_opts *o, mk_run *run) {
    if (berth_engine_staged(run->engine) == 0) {
        return 0;
    }
    uint64_t time_ms = o->time_start_ms + run->commits * o->time_step_ms;
    berth_jerr jerr = berth_engine_commit(run->engine, time_ms);
    if (jerr != BERTH_J_OK) {
        fprintf(stderr, "%s commit failed\n", berth_jerr_name(jerr));
        return 2;
    }
    run->commits++;
    if (o->fold_records != 0) {
        jerr = berth_journal_lmdb_settle(berth_engine_journal(run->engine));
        if (jerr != BERTH_J_OK) {
            fprintf(stderr, "%s history fold failed\n", berth_jerr_name(jerr));
            return 2;
        }
    }
    if (o->digest_at != 0 && !run->digest_done && berth_engine_head_seq(run->engine) == o->digest_at) {
        run->digest_done = true;
        return print_digest("digest", run->engine);
    }
    return 0;
}

static int submit_line(const mk_opts *o, mk_run *run, const cli_scenario *sc) {
    berth_submit_result result;
    berth_str actor = berth_str_make(o->actor, strlen(o->actor));
    berth_engine_submit(run->engine, sc->word_count, sc->words, actor, &result);
    if (result.kind == BERTH_SUBMIT_BATCH_FULL) {
        int rc = commit(o, run);
        if (rc != 0) {
            return rc;
        }
        berth_engine_submit(run->engine, sc->word_count, sc->words, actor, &result);
    }
    if (result.kind == BERTH_SUBMIT_SYNTAX || result.kind == BERTH_SUBMIT_NOMEM ||
        result.kind == BERTH_SUBMIT_BATCH_FULL) {
        fprintf(stderr, "ERR scenario %s line %" PRIu64 ": %s\n", sc->path, sc->line_no,
                result.sentence);
        return 2;
    }
    /* Commit where a digest was asked for, and at every batch boundary. */
    bool at_digest = result.kind == BERTH_SUBMIT_STAGED && result.seq == o->digest_at;
    if (at_digest || berth_engine_staged(run->engine) >= o->batch) {
        return commit(o, run);
    }
    return 0;
}

static int build(const mk_opts *o, mk_run *run) {
    cli_scenario sc;
    char err[MK_ERR_LEN_MAX];
    if (cli_scenario_open(&sc, o->scenario, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    int rc = 0;
    for (;;) {
        int got = cli_scenario_next(&sc, err, sizeof err);
        if (got < 0) {
            fprintf(stderr, "%s\n", err);
            rc = 2;
            break;
        }
        if (got == 0) {
            rc = commit(o, run);
            break;
        }
        if (sc.kind == CLI_LINE_QUERY) {
            continue;
        }
        rc = submit_line(o, run, &sc);
        if (rc != 0) {
            break;
        }
    }
    cli_scenario_close(&sc);
    return rc;
}

/* One scenario line as one record, past the engine (--raw). */
static int raw_append(const mk_opts *o, berth_journal *journal, berth_state *state, uint64_t k,
                      const cli_scenario *sc) {
    static berth_cmd cmd;
    static berth_outcome out;
    static char canonical[BERTH_COMMAND_LEN_MAX];
    char perr[BERTH_ERR_LEN_MAX];
    if (berth_cmd_parse(&cmd, sc->word_count, sc->words, perr, sizeof perr) != 0) {
        fprintf(stderr, "ERR scenario %s line %" PRIu64 ": %s\n", sc->path, sc->line_no, perr);
        return 2;
    }
    size_t len = berth_cmd_canonical(&cmd, canonical, sizeof canonical);
    if (len == 0) {
        fprintf(stderr, "ERR scenario %s line %" PRIu64 ": too long\n", sc->path, sc->line_no);
        return 2;
    }
    berth_str reqid = cmd.reqid;
    cmd.reqid = berth_str_make("", 0);   /* applied without: a repeat must not assert */
    uint64_t seq = berth_state_last_seq(state) + 1;
    if (berth_state_apply(state, &cmd, berth_str_make(canonical, len), seq, &out) != 0) {
        fprintf(stderr, "NOMEM apply\n");
        return 2;
    }
    berth_record rec;
    memset(&rec, 0, sizeof rec);
    rec.seq = seq;
    rec.time_ms = o->time_start_ms + k * o->time_step_ms;
    rec.actor = berth_str_make(o->actor, strlen(o->actor));
    rec.reqid = reqid;
    rec.command = berth_str_make(canonical, len);
    rec.code = (uint32_t)out.code;
    rec.sentence = berth_str_make(out.sentence, out.sentence_len);
    berth_jerr jerr = berth_journal_append(journal, &rec, NULL, 1);
    if (jerr != BERTH_J_OK) {
        fprintf(stderr, "%s append failed\n", berth_jerr_name(jerr));
        return 2;
    }
    return 0;
}

static int raw_build(const mk_opts *o, berth_journal *journal) {
    berth_journal_reader *reader = NULL;
    berth_state *state = NULL;
    char err[MK_ERR_LEN_MAX] = "";
    berth_jerr jerr = berth_journal_reader_open(journal, &reader);
    if (jerr == BERTH_J_OK) {
        berth_replay_stats stats;
        jerr = berth_replay_to(reader, UINT64_MAX, false, &state, &stats, NULL, err, sizeof err);
        berth_journal_reader_close(reader);
    }
    if (jerr != BERTH_J_OK) {
        fprintf(stderr, "%s replay: %s\n", berth_jerr_name(jerr), err);
        return 2;
    }
    cli_scenario sc;
    if (cli_scenario_open(&sc, o->scenario, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        berth_state_free(state);
        return 2;
    }
    int rc = 0;
    for (uint64_t k = 0; rc == 0;) {
        int got = cli_scenario_next(&sc, err, sizeof err);
        if (got <= 0) {
            rc = got < 0 ? 2 : 0;
            if (got < 0) {
                fprintf(stderr, "%s\n", err);
            }
            break;
        }
        if (sc.kind == CLI_LINE_MUTATING) {
            rc = raw_append(o, journal, state, k++, &sc);
        }
    }
    cli_scenario_close(&sc);
    if (rc == 0) {
        printf("head %" PRIu64 "\n", berth_state_last_seq(state));
    }
    berth_state_free(state);
    return rc;
}

int main(int argc, char **argv) {
    mk_opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc != 0) {
        return rc;
    }
    berth_journal_options jo;
    memset(&jo, 0, sizeof jo);
    jo.history_fold_records = (uint32_t)o.fold_records;
    berth_journal *journal = NULL;
    char err[MK_ERR_LEN_MAX] = "";
    berth_jerr jerr = berth_journal_open_lmdb(&journal, o.data, &jo, err, sizeof err);
    if (jerr != BERTH_J_OK) {
        fprintf(stderr, "%s cannot open %s: %s\n", berth_jerr_name(jerr), o.data, err);
        return 2;
    }
    if (o.raw != 0) {
        rc = raw_build(&o, journal);
        berth_journal_close(journal);
        return rc;
    }
    berth_engine_options eo = { .snapshot_every = o.snapshot_every, .dry_run = false };
    berth_replay_stats stats;
    mk_run run = { NULL, 0, false };
    jerr = berth_engine_open(&run.engine, journal, &eo, &stats, err, sizeof err);
    if (jerr != BERTH_J_OK) {
        fprintf(stderr, "%s engine: %s\n", berth_jerr_name(jerr), err);
        berth_journal_close(journal);
        return 2;
    }
    rc = build(&o, &run);
    if (rc == 0) {
        rc = print_digest("head", run.engine);
    }
    berth_engine_close(run.engine);
    berth_journal_close(journal);
    return rc;
}
