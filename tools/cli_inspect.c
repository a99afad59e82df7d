/* cli_inspect.c — the berth tool's read-only audit commands: status, journal
 * dump/verify, replay (time travel) and history, plus the state and record
 * printers the other subcommands reuse.
 *
 * Everything here reads through one read view of a data directory opened
 * read-only without the lock (cli_store), so it can run beside berthd. The
 * state it prints is always one replay proved from the journal; listings
 * come from the state's sorted accessors, never from hash-table order. */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define HISTORY_PAGE_MAX 1024            /* seqs fetched from the index per call */
#define SNAPSHOT_LIST_MAX 4096           /* snapshot seqs read for status */
#define NAME_COLUMN_MIN 8                /* narrowest name column in tables */

/* ---- state printing ---------------------------------------------------- */

void cli_format_gpus(uint64_t mask, char *out) {
    assert(out != NULL);
    size_t n = 0;
    out[0] = '\0';
    uint32_t i = 0;
    while (i < BERTH_GPUS_MAX) {
        if ((mask >> i & 1u) == 0) {
            i++;
            continue;
        }
        uint32_t j = i;
        while (j + 1 < BERTH_GPUS_MAX && (mask >> (j + 1) & 1u) != 0) {
            j++;
        }
        int w = j == i ? snprintf(out + n, CLI_GPU_TEXT_LEN_MAX - n, "%s%u", n ? "," : "", i)
                       : snprintf(out + n, CLI_GPU_TEXT_LEN_MAX - n, "%s%u-%u", n ? "," : "", i, j);
        assert(w > 0 && n + (size_t)w < CLI_GPU_TEXT_LEN_MAX);
        n += (size_t)w;
        i = j + 1;
    }
    if (n == 0) {
        snprintf(out, CLI_GPU_TEXT_LEN_MAX, "-");
    }
}

static void json_gpu_array(FILE *out, uint64_t mask) {
    fputc('[', out);
    bool first = true;
    for (uint32_t i = 0; i < BERTH_GPUS_MAX; i++) {
        if ((mask >> i & 1u) != 0) {
            fprintf(out, "%s%u", first ? "" : ",", i);
            first = false;
        }
    }
    fputc(']', out);
}

static void print_worker_json(FILE *out, const berth_worker *w) {
    const berth_instance *holder = berth_worker_exclusive_holder(w);
    fputs("{\"type\":\"worker\",\"name\":", out);
    cli_json_bstr(out, w->name);
    fprintf(out, ",\"gpus\":%" PRIu32 ",\"vram_mib\":%" PRIu32 ",\"status\":\"%s\",\"added_seq\":%" PRIu64,
            w->gpu_count, w->vram_mib, w->status == BERTH_WORKER_CORDONED ? "cordoned" : "active",
            w->added_seq);
    fputs(",\"labels\":{", out);
    for (uint32_t i = 0; i < w->label_count; i++) {
        fputs(i ? "," : "", out);
        cli_json_bstr(out, w->labels[i].key);
        fputc(':', out);
        cli_json_bstr(out, w->labels[i].value);
    }
    fputs("},\"free_gpus\":", out);
    json_gpu_array(out, berth_worker_free_gpu_mask(w));
    fputs(",\"exclusive_holder\":", out);
    if (holder != NULL) {
        cli_json_bstr(out, holder->name);
    } else {
        fputs("null", out);
    }
    fputs(",\"instances\":[", out);
    for (uint32_t i = 0; i < w->served_count; i++) {
        fputs(i ? "," : "", out);
        cli_json_bstr(out, w->served[i]->name);
    }
    fputs("]}\n", out);
}

static void print_instance_json(FILE *out, const berth_instance *inst) {
    fputs("{\"type\":\"instance\",\"name\":", out);
    cli_json_bstr(out, inst->name);
    fputs(",\"model\":", out);
    cli_json_bstr(out, inst->model);
    fputs(",\"backend\":", out);
    cli_json_bstr(out, inst->backend);
    fprintf(out, ",\"vram_mib\":%" PRIu32 ",\"deploy_seq\":%" PRIu64
                 ",\"distributed\":%s,\"exclusive\":%s,\"placement\":[",
            inst->claim_mib, inst->deploy_seq, inst->distributed ? "true" : "false",
            inst->exclusive ? "true" : "false");
    for (uint32_t i = 0; i < inst->slot_count; i++) {
        fputs(i ? ",{\"worker\":" : "{\"worker\":", out);
        cli_json_bstr(out, inst->slots[i].worker->name);
        fputs(",\"gpus\":", out);
        json_gpu_array(out, inst->slots[i].gpu_mask);
        fputc('}', out);
    }
    fputs("]}\n", out);
}

static void print_worker_row(FILE *out, const berth_worker *w, int name_width) {
    char gpus[CLI_GPU_TEXT_LEN_MAX];
    cli_format_gpus(berth_worker_free_gpu_mask(w), gpus);
    const berth_instance *holder = berth_worker_exclusive_holder(w);
    fprintf(out, "%-*.*s %4" PRIu32 " %9" PRIu32 " %-8s %-12s %-16.*s ", name_width,
            (int)w->name.len, w->name.ptr, w->gpu_count, w->vram_mib,
            w->status == BERTH_WORKER_CORDONED ? "cordoned" : "active", gpus,
            holder ? (int)holder->name.len : 1, holder ? holder->name.ptr : "-");
    for (uint32_t i = 0; i < w->served_count; i++) {
        fprintf(out, "%s%.*s", i ? "," : "", (int)w->served[i]->name.len, w->served[i]->name.ptr);
    }
    fputs(w->served_count == 0 ? "-" : "", out);
    for (uint32_t i = 0; i < w->label_count; i++) {
        fprintf(out, "%s%.*s=%.*s", i ? "," : " ", (int)w->labels[i].key.len, w->labels[i].key.ptr,
                (int)w->labels[i].value.len, w->labels[i].value.ptr);
    }
    fputc('\n', out);
}

typedef struct instance_widths {
    int name;
    int model;
    int backend;
} instance_widths;

static void print_instance_row(FILE *out, const berth_instance *inst, const instance_widths *w) {
    fprintf(out, "%-*.*s %-*.*s %-*.*s %9" PRIu32 " %10" PRIu64 " %-9s ", w->name,
            (int)inst->name.len, inst->name.ptr, w->model, (int)inst->model.len, inst->model.ptr,
            w->backend, (int)inst->backend.len, inst->backend.ptr, inst->claim_mib,
            inst->deploy_seq, inst->exclusive ? "yes" : "no");
    for (uint32_t i = 0; i < inst->slot_count; i++) {
        char gpus[CLI_GPU_TEXT_LEN_MAX];
        cli_format_gpus(inst->slots[i].gpu_mask, gpus);
        fprintf(out, "%s%.*s:%s", i ? " " : "", (int)inst->slots[i].worker->name.len,
                inst->slots[i].worker->name.ptr, gpus);
    }
    fputc('\n', out);
}

static int widest(int current, berth_str s) {
    return (int)s.len > current ? (int)s.len : current;
}

static void print_state_header(FILE *out, const berth_state *state, const char *digest_hex,
                               bool json) {
    const berth_str *backends = NULL;
    uint32_t backend_count = berth_state_policy(state, &backends);
    if (json) {
        fprintf(out, "{\"type\":\"state\",\"seq\":%" PRIu64 ",\"digest\":\"%s\",\"workers\":%zu,"
                     "\"instances\":%zu,\"policy\":[",
                berth_state_last_seq(state), digest_hex, berth_state_worker_count(state),
                berth_state_instance_count(state));
        for (uint32_t i = 0; i < backend_count; i++) {
            fputs(i ? "," : "", out);
            cli_json_bstr(out, backends[i]);
        }
        fputs("]}\n", out);
        return;
    }
    fprintf(out, "state at seq %" PRIu64 "\ndigest    %s\npolicy    EXCLUSIVE ",
            berth_state_last_seq(state), digest_hex);
    for (uint32_t i = 0; i < backend_count; i++) {
        fprintf(out, "%s%.*s", i ? "," : "", (int)backends[i].len, backends[i].ptr);
    }
    fprintf(out, "%s\nworkers   %zu\ninstances %zu\n", backend_count ? "" : "(none)",
            berth_state_worker_count(state), berth_state_instance_count(state));
}

static int print_workers(FILE *out, const berth_state *state, bool json) {
    size_t count = berth_state_worker_count(state);
    const berth_worker **workers = calloc(count ? count : 1, sizeof *workers);
    if (workers == NULL) {
        return cli_fail(CLI_EXIT_USAGE, "NOMEM", "out of memory listing %zu workers", count);
    }
    size_t n = berth_state_workers_sorted(state, workers, count);
    assert(n == count);
    int width = NAME_COLUMN_MIN;
    for (size_t i = 0; i < n; i++) {
        width = (int)workers[i]->name.len > width ? (int)workers[i]->name.len : width;
    }
    if (!json && n > 0) {
        fprintf(out, "\n%-*s %4s %9s %-8s %-12s %-16s %s\n", width, "WORKER", "GPUS", "VRAM_MIB",
                "STATUS", "FREE_GPUS", "EXCLUSIVE_BY", "INSTANCES LABELS");
    }
    for (size_t i = 0; i < n; i++) {
        if (json) {
            print_worker_json(out, workers[i]);
        } else {
            print_worker_row(out, workers[i], width);
        }
    }
    free(workers);
    return CLI_EXIT_OK;
}

static int print_instances(FILE *out, const berth_state *state, bool json) {
    size_t count = berth_state_instance_count(state);
    const berth_instance **insts = calloc(count ? count : 1, sizeof *insts);
    if (insts == NULL) {
        return cli_fail(CLI_EXIT_USAGE, "NOMEM", "out of memory listing %zu instances", count);
    }
    size_t n = berth_state_instances_sorted(state, insts, count);
    assert(n == count);
    instance_widths w = { NAME_COLUMN_MIN, 5, 7 };
    for (size_t i = 0; i < n; i++) {
        w.name = widest(w.name, insts[i]->name);
        w.model = widest(w.model, insts[i]->model);
        w.backend = widest(w.backend, insts[i]->backend);
    }
    if (!json && n > 0) {
        fprintf(out, "\n%-*s %-*s %-*s %9s %10s %-9s %s\n", w.name, "INSTANCE", w.model, "MODEL",
                w.backend, "BACKEND", "VRAM_MIB", "DEPLOY_SEQ", "EXCLUSIVE", "PLACEMENT");
    }
    for (size_t i = 0; i < n; i++) {
        if (json) {
            print_instance_json(out, insts[i]);
        } else {
            print_instance_row(out, insts[i], &w);
        }
    }
    free(insts);
    return CLI_EXIT_OK;
}

void cli_print_worker(FILE *out, const berth_worker *worker, bool json) {
    assert(out != NULL && worker != NULL);
    if (json) {
        print_worker_json(out, worker);
    } else {
        print_worker_row(out, worker, (int)worker->name.len);
    }
}

void cli_print_instance(FILE *out, const berth_instance *inst, bool json) {
    assert(out != NULL && inst != NULL);
    if (json) {
        print_instance_json(out, inst);
    } else {
        instance_widths w = { (int)inst->name.len, (int)inst->model.len, (int)inst->backend.len };
        print_instance_row(out, inst, &w);
    }
}

int cli_print_state(FILE *out, const berth_state *state, bool json) {
    assert(out != NULL && state != NULL);
    uint8_t digest[BERTH_HASH_LEN];
    if (berth_state_digest(state, digest) != 0) {
        return cli_fail(CLI_EXIT_USAGE, "NOMEM", "out of memory computing the state digest");
    }
    char digest_hex[CLI_HEX_HASH_LEN];
    cli_hex_hash(digest, digest_hex);
    print_state_header(out, state, digest_hex, json);
    int rc = print_workers(out, state, json);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }
    return print_instances(out, state, json);
}

void cli_print_record(FILE *out, const berth_record *rec, bool json) {
    assert(out != NULL && rec != NULL);
    char when[CLI_TIME_TEXT_LEN_MAX];
    cli_format_time(rec->time_ms, when);
    const char *code = rec->code < BERTH_CODE_COUNT ? berth_code_name((berth_code)rec->code) : "?";
    if (!json) {
        /* Decode admits only names as actors, but the strings are another
         * writer's bytes all the same: escaped, never sent to a terminal raw. */
        fprintf(out, "%10" PRIu64 " %s ", rec->seq, when);
        size_t cols = cli_text_bstr(out, rec->actor.len ? rec->actor : berth_str_make("-", 1));
        fprintf(out, "%*s %-10s ", cols < 12 ? (int)(12 - cols) : 0, "", code);
        cli_text_bstr(out, rec->command);
        fputc('\n', out);
        if (rec->code != BERTH_OK) {
            fprintf(out, "%10s ", "");
            cli_text_bstr(out, rec->sentence);
            fputc('\n', out);
        }
        return;
    }
    char hash[CLI_HEX_HASH_LEN];
    char prev[CLI_HEX_HASH_LEN];
    cli_hex_hash(rec->hash, hash);
    cli_hex_hash(rec->prev_hash, prev);
    fprintf(out, "{\"seq\":%" PRIu64 ",\"time_ms\":%" PRIu64 ",\"time\":\"%s\",\"actor\":", rec->seq,
            rec->time_ms, when);
    cli_json_bstr(out, rec->actor);
    fputs(",\"reqid\":", out);
    cli_json_bstr(out, rec->reqid);
    fputs(",\"command\":", out);
    cli_json_bstr(out, rec->command);
    fprintf(out, ",\"code\":\"%s\",\"sentence\":", code);
    cli_json_bstr(out, rec->sentence);
    fprintf(out, ",\"prev_hash\":\"%s\",\"hash\":\"%s\",\"version\":%" PRIu32 "}\n", prev, hash, rec->version);
}

/* ---- status ------------------------------------------------------------ */

static const char status_usage[] =
    "usage: berth status --data DIR [--json]\n"
    "  Records, chain head, workers, instances, policy, snapshots and size on disk.\n";

static int status_print(cli_store *store, const berth_state *state, bool json) {
    uint64_t snap_seqs[SNAPSHOT_LIST_MAX];
    size_t snap_count = 0;
    berth_jerr jerr = berth_journal_snapshot_list(store->reader, snap_seqs, SNAPSHOT_LIST_MAX,
                                                  &snap_count);
    if (jerr != BERTH_J_OK) {
        return cli_fail(CLI_EXIT_USAGE, berth_jerr_name(jerr), "cannot list snapshots");
    }
    size_t listed = snap_count < SNAPSHOT_LIST_MAX ? snap_count : SNAPSHOT_LIST_MAX;
    uint64_t newest = listed ? snap_seqs[listed - 1] : 0;
    berth_journal_sizes sizes;
    jerr = berth_journal_size(store->journal, &sizes);
    if (jerr != BERTH_J_OK) {
        return cli_fail(CLI_EXIT_USAGE, berth_jerr_name(jerr), "cannot read the store's size");
    }
    char head[CLI_HEX_HASH_LEN];
    cli_hex_hash(store->head_hash, head);
    const berth_str *backends = NULL;
    uint32_t backend_count = berth_state_policy(state, &backends);
    if (json) {
        fprintf(stdout, "{\"records\":%" PRIu64 ",\"head_hash\":\"%s\",\"workers\":%zu,\"instances\":%zu,"
                        "\"policy\":[",
                store->head_seq, head, berth_state_worker_count(state),
                berth_state_instance_count(state));
        for (uint32_t i = 0; i < backend_count; i++) {
            fputs(i ? "," : "", stdout);
            cli_json_bstr(stdout, backends[i]);
        }
        fprintf(stdout, "],\"snapshots\":%zu,\"newest_snapshot_seq\":%" PRIu64
                        ",\"disk_bytes\":%" PRIu64 ",\"map_bytes\":%" PRIu64
                        ",\"history_disk_bytes\":%" PRIu64 ",\"history_map_bytes\":%" PRIu64 "}\n",
                snap_count, newest, sizes.disk_bytes, sizes.map_bytes, sizes.history_disk_bytes,
                sizes.history_map_bytes);
        return CLI_EXIT_OK;
    }
    printf("records    %" PRIu64 "\nhead       %s\nworkers    %zu\ninstances  %zu\npolicy     EXCLUSIVE ",
           store->head_seq, head, berth_state_worker_count(state), berth_state_instance_count(state));
    for (uint32_t i = 0; i < backend_count; i++) {
        printf("%s%.*s", i ? "," : "", (int)backends[i].len, backends[i].ptr);
    }
    printf("%s\nsnapshots  %zu", backend_count ? "" : "(none)", snap_count);
    if (snap_count > 0) {
        printf(" (newest at seq %" PRIu64 ")", newest);
    }
    printf("\ndisk       %" PRIu64 " bytes (history index %" PRIu64 " of them; map %" PRIu64
           " bytes, history map %" PRIu64 ")\n", sizes.disk_bytes, sizes.history_disk_bytes,
           sizes.map_bytes, sizes.history_map_bytes);
    return CLI_EXIT_OK;
}

int cli_status_main(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        fputs(status_usage, stdout);
        return CLI_EXIT_OK;
    }
    const char *data = NULL;
    bool json = false;
    bool bad = false;
    for (int i = 1; i < argc && !bad; i++) {
        if (cli_flag_value(argc, argv, &i, "--data", &data, &bad)) {
            continue;
        }
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
            continue;
        }
        fprintf(stderr, "ERR unknown option '%s'\n%s", argv[i], status_usage);
        return CLI_EXIT_USAGE;
    }
    if (bad) {
        return CLI_EXIT_USAGE;
    }
    cli_store store;
    int rc = cli_store_open(&store, data);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }
    berth_state *state = NULL;
    berth_replay_stats stats;
    rc = cli_state_at(&store, UINT64_MAX, true, &state, &stats);
    if (rc == CLI_EXIT_OK) {
        rc = status_print(&store, state, json);
        berth_state_free(state);
    }
    cli_store_close(&store);
    return rc;
}

/* ---- journal dump / verify --------------------------------------------- */

static const char journal_usage[] =
    "usage: berth journal dump --data DIR [--from SEQ] [--to SEQ] [--json]\n"
    "       berth journal verify --data DIR [--json]\n"
    "  dump: every record in [from, to] with time, actor, command, outcome (and hashes in --json).\n"
    "  verify: walk the hash chain and recompute every outcome; exit 1 naming the first bad seq.\n";

typedef struct range_opts {
    const char *data;
    uint64_t from;
    uint64_t to;
    bool json;
} range_opts;

/* Shared by dump and timeline-like commands: --data, --from, --to, --json. */
static int parse_range_opts(int argc, char **argv, range_opts *opts, const char *usage) {
    memset(opts, 0, sizeof *opts);
    opts->from = 1;
    opts->to = UINT64_MAX;
    const char *to_text = NULL;
    bool bad = false;
    for (int i = 1; i < argc && !bad; i++) {
        const char *value = NULL;
        if (cli_flag_value(argc, argv, &i, "--data", &opts->data, &bad)) {
            continue;
        }
        if (cli_flag_value(argc, argv, &i, "--from", &value, &bad)) {
            bad = bad || !cli_parse_seq_flag("--from", value, &opts->from);
            continue;
        }
        if (cli_flag_value(argc, argv, &i, "--to", &value, &bad)) {
            bad = bad || !cli_parse_seq_flag("--to", value, &opts->to);
            to_text = value;
            continue;
        }
        if (strcmp(argv[i], "--json") == 0) {
            opts->json = true;
            continue;
        }
        fprintf(stderr, "ERR unknown option '%s'\n%s", argv[i], usage);
        return CLI_EXIT_USAGE;
    }
    if (bad) {
        return CLI_EXIT_USAGE;
    }
    if (opts->to == 0) {
        /* Not "before --from 1": the user may never have typed a --from. */
        return cli_fail(CLI_EXIT_USAGE, "ERR", "--to %s names no record: seqs start at 1", to_text);
    }
    if (opts->from == 0) {
        opts->from = 1;
    }
    if (opts->to < opts->from) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "--to %" PRIu64 " is before --from %" PRIu64, opts->to,
                        opts->from);
    }
    return CLI_EXIT_OK;
}

static int dump_range(cli_store *store, const range_opts *opts) {
    uint64_t to = opts->to < store->head_seq ? opts->to : store->head_seq;
    if (opts->from > to) {
        return CLI_EXIT_OK;   /* an empty range is an empty answer, not an error */
    }
    berth_journal_cursor *cursor = NULL;
    berth_jerr jerr = berth_journal_cursor_open(store->reader, opts->from, &cursor);
    if (jerr != BERTH_J_OK) {
        return cli_fail(CLI_EXIT_USAGE, berth_jerr_name(jerr), "cannot read from seq %" PRIu64,
                        opts->from);
    }
    if (!opts->json) {
        printf("%10s %-24s %-12s %-10s %s\n", "SEQ", "TIME", "ACTOR", "OUTCOME", "COMMAND");
    }
    cli_progress progress;
    cli_progress_start(&progress, "dump", to - opts->from + 1);
    int rc = CLI_EXIT_OK;
    for (uint64_t expect = opts->from; expect <= to; expect++) {
        berth_record rec;
        jerr = berth_journal_cursor_next(cursor, &rec, NULL, NULL);
        if (jerr != BERTH_J_OK) {
            rc = cli_fail(CLI_EXIT_FINDING, berth_jerr_name(jerr),
                          "record %" PRIu64 " cannot be read: run `berth journal verify`", expect);
            break;
        }
        assert(rec.seq == expect);
        cli_print_record(stdout, &rec, opts->json);
        cli_progress_update(&progress, expect - opts->from + 1);
    }
    cli_progress_end(&progress);
    berth_journal_cursor_close(cursor);
    return rc;
}

static int journal_dump(int argc, char **argv) {
    range_opts opts;
    int rc = parse_range_opts(argc, argv, &opts, journal_usage);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }
    cli_store store;
    rc = cli_store_open(&store, opts.data);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }
    rc = dump_range(&store, &opts);
    cli_store_close(&store);
    return rc;
}

/* report->what names the seq itself ("seq N: hash mismatch", "seq N missing
 * (...)") when it is about one; verify's line names it once. */
static bool what_names_seq(const berth_verify_report *report) {
    char prefix[32];
    int n = snprintf(prefix, sizeof prefix, "seq %" PRIu64, report->first_bad_seq);
    assert(n > 0 && (size_t)n < sizeof prefix);
    size_t len = (size_t)n;
    return strncmp(report->what, prefix, len) == 0 &&
           (report->what[len] == ':' || report->what[len] == ' ');
}

static int verify_print(const cli_store *store, const berth_verify_report *report, bool json) {
    char hex[CLI_HEX_HASH_LEN];
    cli_hex_hash(store->head_hash, hex);
    char head[CLI_HEX_HASH_LEN + 2];   /* JSON: the quoted hash, or null when the head
                                        * record does not decode (it has none to read) */
    int n = snprintf(head, sizeof head, store->head_damaged ? "null" : "\"%s\"", hex);
    assert(n > 0 && (size_t)n < sizeof head);
    if (json) {
        printf("{\"ok\":%s,\"records\":%" PRIu64 ",\"head_seq\":%" PRIu64 ",\"head_hash\":%s,"
               "\"first_bad_seq\":%" PRIu64 ",\"what\":",
               report->ok ? "true" : "false", report->records, store->head_seq, head,
               report->first_bad_seq);
        cli_json_str(stdout, report->what, strnlen(report->what, sizeof report->what));
        fputs("}\n", stdout);
    } else if (report->ok) {
        printf("OK %" PRIu64 " records verified; head seq %" PRIu64 " hash %s\n", report->records,
               store->head_seq, hex);
    }
    if (!report->ok) {
        /* The finding goes to stderr too, so a script that only checks the
         * exit status still leaves a reason in its log. */
        /* what may quote a recorded sentence: escaped like dump's strings. */
        if (what_names_seq(report)) {
            fputs("CORRUPT ", stderr);
        } else {
            fprintf(stderr, "CORRUPT seq %" PRIu64 ": ", report->first_bad_seq);
        }
        cli_text_str(stderr, report->what, strnlen(report->what, sizeof report->what));
        fputc('\n', stderr);
        return CLI_EXIT_FINDING;
    }
    return CLI_EXIT_OK;
}

/* berth_verify in steps within the one reader, so that under berth.c's
 * guard the parent hears the last seq checked after each: a walk killed by
 * damaged pages is then reported past that seq (guard.h). The result is
 * berth_verify's whatever the steps (replay.h). */
static berth_jerr verify_walk(cli_store *store, berth_verify_report *report) {
    berth_verify_run *run = berth_verify_begin(store->reader, UINT64_MAX);
    if (run == NULL) {
        memset(report, 0, sizeof *report);
        snprintf(report->what, sizeof report->what, "out of memory");
        return BERTH_J_NOMEM;
    }
    uint64_t checked = 0;
    while (!berth_verify_step(run, store->reader, CLI_VERIFY_STEP_RECORDS, NULL, NULL)) {
        checked = checked + CLI_VERIFY_STEP_RECORDS;
        cli_guard_checked(checked);
    }
    return berth_verify_end(run, report);
}

static int journal_verify(int argc, char **argv) {
    range_opts opts;
    int rc = parse_range_opts(argc, argv, &opts, journal_usage);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }
    if (opts.from != 1 || opts.to != UINT64_MAX) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "verify always checks the whole chain: drop --from/--to");
    }
    cli_store store;
    rc = cli_store_open(&store, opts.data);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }
    berth_verify_report report;
    memset(&report, 0, sizeof report);
    berth_jerr jerr = verify_walk(&store, &report);
    if (jerr != BERTH_J_OK && report.ok) {
        rc = cli_fail(CLI_EXIT_USAGE, berth_jerr_name(jerr), "verify could not run to the end");
    } else {
        if (jerr != BERTH_J_OK && report.first_bad_seq == 0) {
            report.ok = false;
        }
        rc = verify_print(&store, &report, opts.json);
    }
    cli_store_close(&store);
    return rc;
}

int cli_journal_main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(journal_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    }
    if (cli_wants_help(argc, argv)) {
        fputs(journal_usage, stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(argv[1], "dump") == 0) {
        return journal_dump(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "verify") == 0) {
        return journal_verify(argc - 1, argv + 1);
    }
    fprintf(stderr, "ERR unknown journal command '%s'\n%s", argv[1], journal_usage);
    return CLI_EXIT_USAGE;
}

/* ---- replay ------------------------------------------------------------ */

static const char replay_usage[] =
    "usage: berth replay --data DIR [--at SEQ | --at-time RFC3339] [--json] [--genesis] [--stats]\n"
    "  The state as of a record seq (default: the head) or as of a wall-clock time (the last\n"
    "  record at or before it). --genesis replays from seq 1, ignoring snapshots; --stats prints\n"
    "  records/s on stderr.\n";

typedef struct replay_opts {
    const char *data;
    const char *at;
    const char *at_time;
    bool json;
    bool genesis;
    bool stats;
} replay_opts;

static int parse_replay_opts(int argc, char **argv, replay_opts *opts) {
    memset(opts, 0, sizeof *opts);
    bool bad = false;
    for (int i = 1; i < argc && !bad; i++) {
        if (cli_flag_value(argc, argv, &i, "--data", &opts->data, &bad) ||
            cli_flag_value(argc, argv, &i, "--at-time", &opts->at_time, &bad) ||
            cli_flag_value(argc, argv, &i, "--at", &opts->at, &bad)) {
            continue;
        }
        if (strcmp(argv[i], "--json") == 0 || strcmp(argv[i], "--genesis") == 0 ||
            strcmp(argv[i], "--stats") == 0) {
            opts->json = opts->json || argv[i][2] == 'j';
            opts->genesis = opts->genesis || argv[i][2] == 'g';
            opts->stats = opts->stats || argv[i][2] == 's';
            continue;
        }
        fprintf(stderr, "ERR unknown option '%s'\n%s", argv[i], replay_usage);
        return CLI_EXIT_USAGE;
    }
    if (bad) {
        return CLI_EXIT_USAGE;
    }
    if (opts->at != NULL && opts->at_time != NULL) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "give --at or --at-time, not both");
    }
    return CLI_EXIT_OK;
}

static int replay_target(cli_store *store, const replay_opts *opts, uint64_t *target) {
    *target = store->head_seq;
    if (opts->at != NULL) {
        return cli_at_seq(store, opts->at, target);
    }
    if (opts->at_time != NULL) {
        return cli_seq_at_time(store, opts->at_time, target);
    }
    return CLI_EXIT_OK;
}

int cli_replay_main(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        fputs(replay_usage, stdout);
        return CLI_EXIT_OK;
    }
    replay_opts opts;
    int rc = parse_replay_opts(argc, argv, &opts);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }
    cli_store store;
    rc = cli_store_open(&store, opts.data);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }
    uint64_t target = 0;
    rc = replay_target(&store, &opts, &target);
    berth_state *state = NULL;
    berth_replay_stats stats;
    uint64_t start_ns = cli_monotonic_ns();
    if (rc == CLI_EXIT_OK) {
        rc = cli_state_at(&store, target, !opts.genesis, &state, &stats);
    }
    uint64_t elapsed_ns = cli_monotonic_ns() - start_ns;
    if (rc == CLI_EXIT_OK) {
        if (opts.stats) {
            double secs = (double)elapsed_ns / 1e9;
            fprintf(stderr, "replay: %" PRIu64 " records after snapshot %" PRIu64 " in %.3f s = %.0f records/s\n",
                    stats.records, stats.from_snapshot_seq, secs,
                    secs > 0 ? (double)stats.records / secs : 0.0);
        }
        rc = cli_print_state(stdout, state, opts.json);
        berth_state_free(state);
    }
    cli_store_close(&store);
    return rc;
}

/* ---- history ----------------------------------------------------------- */

static const char history_usage[] =
    "usage: berth history --data DIR [--json] [--] (worker W | instance I)\n"
    "       berth history rebuild --data DIR\n"
    "  Every record that touched the worker or instance, from the history index, with outcome.\n"
    "  The word after worker/instance is the name, even one starting with '-'; -- ends the options.\n"
    "  rebuild: build the index again from the journal (replayed and verified from genesis)\n"
    "  when it is missing or damaged; takes the directory lock, so stop berthd first.\n"
    "  Run as root, the new index gets DIR's owner and group.\n";

static int history_print(cli_store *store, berth_history_kind kind, berth_str name, bool json) {
    uint64_t seqs[HISTORY_PAGE_MAX];
    uint64_t from = 1;
    uint64_t shown = 0;
    if (!json) {
        printf("%10s %-24s %-12s %-10s %s\n", "SEQ", "TIME", "ACTOR", "OUTCOME", "COMMAND");
    }
    for (;;) {
        size_t n = 0;
        berth_jerr jerr = berth_journal_history(store->reader, kind, name, from, seqs,
                                                HISTORY_PAGE_MAX, &n);
        if (jerr == BERTH_J_CORRUPT) {
            /* The index does not fit this journal (another directory's, or
             * damaged): a finding, with the cure berthd's refusal names. */
            return cli_fail(CLI_EXIT_FINDING, berth_jerr_name(jerr),
                            "the history index %s/history does not fit the journal (it is damaged or "
                            "another journal's): rebuild it with `berth history rebuild --data %s`, "
                            "with berthd stopped", store->dir, store->dir);
        }
        if (jerr != BERTH_J_OK) {
            return cli_fail(CLI_EXIT_FINDING, berth_jerr_name(jerr), "cannot read the history index in "
                            "%s/history", store->dir);
        }
        assert(n <= HISTORY_PAGE_MAX);
        for (size_t i = 0; i < n; i++) {
            assert(seqs[i] >= from);
            berth_record rec;
            jerr = berth_journal_read(store->reader, seqs[i], &rec, NULL, NULL);
            if (jerr != BERTH_J_OK) {
                return cli_fail(CLI_EXIT_FINDING, berth_jerr_name(jerr),
                                "record %" PRIu64 " named by the history index cannot be read",
                                seqs[i]);
            }
            cli_print_record(stdout, &rec, json);
            shown++;
        }
        if (n < HISTORY_PAGE_MAX) {
            break;
        }
        from = seqs[n - 1] + 1;
    }
    if (!json && shown == 0) {
        printf("(no record touched %s %.*s)\n", kind == BERTH_HISTORY_WORKER ? "worker" : "instance",
               (int)name.len, name.ptr);
    }
    return CLI_EXIT_OK;
}

/* Names may start with '-' ([A-Za-z0-9._:/-]): the word after worker or
 * instance is the name whatever it looks like, and after -- every word is
 * a word, not an option. */
static bool history_name_next(const char *const *words, int word_count) {
    return word_count == 1 && (strcmp(words[0], "worker") == 0 || strcmp(words[0], "instance") == 0);
}

static bool history_wants_help(int argc, char **argv) {
    const char *words[2] = { NULL, NULL };
    int word_count = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--") == 0) {
            return false;
        }
        if (history_name_next(words, word_count)) {
            words[word_count++] = arg;
        } else if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            return true;
        } else if (strcmp(arg, "--data") == 0) {
            i++;   /* its value, whatever it is */
        } else if (arg[0] != '-' && word_count < 2) {
            words[word_count++] = arg;
        }
    }
    return false;
}

int cli_history_main(int argc, char **argv) {
    if (history_wants_help(argc, argv)) {
        fputs(history_usage, stdout);
        return CLI_EXIT_OK;
    }
    const char *data = NULL;
    const char *words[2] = { NULL, NULL };
    int word_count = 0;
    bool json = false;
    bool bad = false;
    bool options_ended = false;
    for (int i = 1; i < argc && !bad; i++) {
        const char *arg = argv[i];
        if (options_ended || history_name_next(words, word_count) || arg[0] != '-') {
            if (word_count == 2) {
                fprintf(stderr, "ERR unexpected argument '%s'\n%s", arg, history_usage);
                return CLI_EXIT_USAGE;
            }
            words[word_count++] = arg;
        } else if (strcmp(arg, "--") == 0) {
            options_ended = true;
        } else if (cli_flag_value(argc, argv, &i, "--data", &data, &bad)) {
            continue;
        } else if (strcmp(arg, "--json") == 0) {
            json = true;
        } else {
            fprintf(stderr, "ERR unexpected argument '%s'\n%s", arg, history_usage);
            return CLI_EXIT_USAGE;
        }
    }
    if (bad) {
        return CLI_EXIT_USAGE;
    }
    if (word_count == 1 && strcmp(words[0], "rebuild") == 0) {
        if (json) {
            /* Its one line of text is all it prints: say so, rather than
             * that rebuild is not `worker NAME`. */
            fprintf(stderr, "ERR history rebuild takes no --json\n%s", history_usage);
            return CLI_EXIT_USAGE;
        }
        return cli_history_rebuild(data);
    }
    if (word_count != 2 || (strcmp(words[0], "worker") != 0 && strcmp(words[0], "instance") != 0)) {
        fprintf(stderr, "ERR say `worker NAME` or `instance NAME`\n%s", history_usage);
        return CLI_EXIT_USAGE;
    }
    berth_str name = berth_str_make(words[1], strlen(words[1]));
    if (!berth_name_valid(name)) {
        return cli_fail(CLI_EXIT_USAGE, "ERR",
                        "'%s' is not a valid name (1-128 bytes of A-Z a-z 0-9 . _ : / -)", words[1]);
    }
    berth_history_kind kind = words[0][0] == 'w' ? BERTH_HISTORY_WORKER : BERTH_HISTORY_INSTANCE;
    cli_store store;
    int rc = cli_store_open(&store, data);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }
    rc = history_print(&store, kind, name, json);
    cli_store_close(&store);
    return rc;
}
