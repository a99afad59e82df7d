/* cli_gen.c — `berth gen`: write a deterministic synthetic scenario.
 *
 * The stream itself comes from the berth_gen library (tools/gen.h), shared
 * with the benchmarks and tests, so a scenario printed here is exactly the
 * one they measure. This file owns only the flags and the output: fractions
 * are read as decimal text and turned into integer permille without floating
 * point, so the same command line gives the same bytes on every machine. */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "gen.h"

#define GEN_OPS_MAX (1ull << 40)            /* commands after the workers' WORKER.ADDs */

static const char gen_usage[] =
    "usage: berth gen --workers N --ops M --seed S [--distributed-fraction F]\n"
    "                 [--vram-fraction F] [--reqid-fraction F] [--refusal-fraction F]\n"
    "                 [--churn-fraction F] [--expect]\n"
    "  Print a deterministic scenario: one WORKER.ADD per worker, then M commands (DEPLOY,\n"
    "  RELEASE, some churn, some REQID retries, some chosen to be refused), one per line in the\n"
    "  protocol's words. F is a decimal fraction in [0, 1] with at most three decimals (0.25).\n"
    "  The same flags always print the same bytes. --expect adds a '# expect CODE' comment\n"
    "  line before each command with the generator's predicted outcome code, or RETRY (a REQID\n"
    "  retry) or CONFLICT (a REQID reused for another command: berthd's REQID) and why.\n";

/* "0.25" -> 250: digits, an optional point and at most three decimals. */
static bool parse_permille(const char *text, uint32_t *out) {
    assert(text != NULL && out != NULL);
    const char *p = text;
    uint32_t whole = 0;
    if (*p == '1' || *p == '0') {
        whole = (uint32_t)(*p - '0');
        p++;
    } else if (*p != '.') {
        return false;
    }
    uint32_t frac = 0;
    uint32_t scale = 100;
    if (*p == '.') {
        p++;
        uint32_t digits = 0;
        while (*p >= '0' && *p <= '9') {
            if (digits == 3) {
                return false;
            }
            frac += scale * (uint32_t)(*p - '0');
            scale /= 10;
            digits++;
            p++;
        }
        if (digits == 0) {
            return false;
        }
    }
    uint32_t permille = whole * 1000 + frac;
    if (*p != '\0' || permille > BERTH_GEN_PERMILLE_MAX) {
        return false;
    }
    *out = permille;
    return true;
}

typedef struct gen_flags {
    const char *workers;
    const char *ops;
    const char *seed;
    bool expect;
} gen_flags;

/* The fraction flags map straight onto options fields. */
static bool fraction_flag(int argc, char **argv, int *i, berth_gen_options *o, bool *bad) {
    struct { const char *name; uint32_t *field; } table[] = {
        { "--distributed-fraction", &o->distributed_permille },
        { "--vram-fraction", &o->vram_permille },
        { "--reqid-fraction", &o->reqid_permille },
        { "--refusal-fraction", &o->refusal_permille },
        { "--churn-fraction", &o->churn_permille },
    };
    for (size_t k = 0; k < sizeof table / sizeof table[0]; k++) {
        const char *value = NULL;
        if (cli_flag_value(argc, argv, i, table[k].name, &value, bad)) {
            if (!*bad && !parse_permille(value, table[k].field)) {
                fprintf(stderr, "ERR %s wants a fraction like 0.25 (0 to 1, three decimals at most), not '%s'\n",
                        table[k].name, value);
                *bad = true;
            }
            return true;
        }
    }
    return false;
}

/* Defaults need the seed and worker count, which come from flags too: so
 * fractions are parsed into `fractions` first and copied over the defaults. */
static int parse_gen_flags(int argc, char **argv, gen_flags *f, berth_gen_options *fractions,
                           bool given[5]) {
    memset(f, 0, sizeof *f);
    const uint32_t unset = UINT32_MAX;
    fractions->distributed_permille = unset;
    fractions->vram_permille = unset;
    fractions->reqid_permille = unset;
    fractions->refusal_permille = unset;
    fractions->churn_permille = unset;
    bool bad = false;
    for (int i = 1; i < argc && !bad; i++) {
        if (cli_flag_value(argc, argv, &i, "--workers", &f->workers, &bad) ||
            cli_flag_value(argc, argv, &i, "--ops", &f->ops, &bad) ||
            cli_flag_value(argc, argv, &i, "--seed", &f->seed, &bad) ||
            fraction_flag(argc, argv, &i, fractions, &bad)) {
            continue;
        }
        if (strcmp(argv[i], "--expect") == 0) {
            f->expect = true;
            continue;
        }
        fprintf(stderr, "ERR unknown option '%s'\n%s", argv[i], gen_usage);
        return CLI_EXIT_USAGE;
    }
    if (bad) {
        return CLI_EXIT_USAGE;
    }
    if (f->workers == NULL || f->ops == NULL || f->seed == NULL) {
        fprintf(stderr, "ERR --workers, --ops and --seed are all required\n%s", gen_usage);
        return CLI_EXIT_USAGE;
    }
    given[0] = fractions->distributed_permille != unset;
    given[1] = fractions->vram_permille != unset;
    given[2] = fractions->reqid_permille != unset;
    given[3] = fractions->refusal_permille != unset;
    given[4] = fractions->churn_permille != unset;
    return CLI_EXIT_OK;
}

static int build_options(const gen_flags *f, const berth_gen_options *fractions,
                         const bool given[5], berth_gen_options *o, uint64_t *ops) {
    uint64_t workers = 0;
    uint64_t seed = 0;
    if (!cli_parse_u64_text(f->workers, &workers) || workers == 0 ||
        workers > BERTH_GEN_WORKERS_MAX) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "--workers wants 1 to %u, not '%s'",
                        BERTH_GEN_WORKERS_MAX, f->workers);
    }
    if (!cli_parse_u64_text(f->ops, ops) || *ops > GEN_OPS_MAX) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "--ops wants 0 to %llu, not '%s'",
                        (unsigned long long)GEN_OPS_MAX, f->ops);
    }
    if (!cli_parse_u64_text(f->seed, &seed)) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "--seed wants a decimal u64, not '%s'", f->seed);
    }
    berth_gen_options_default(o, seed, (uint32_t)workers);
    if (given[0]) o->distributed_permille = fractions->distributed_permille;
    if (given[1]) o->vram_permille = fractions->vram_permille;
    if (given[2]) o->reqid_permille = fractions->reqid_permille;
    if (given[3]) o->refusal_permille = fractions->refusal_permille;
    if (given[4]) o->churn_permille = fractions->churn_permille;
    return CLI_EXIT_OK;
}

static const char *expect_text(const berth_gen_command *c) {
    if (c->expect == BERTH_GEN_EXPECT_CONFLICT) {
        return "CONFLICT (REQID reused: refused, nothing appended)";
    }
    if (c->expect == BERTH_GEN_EXPECT_RETRY) {
        return "RETRY (first outcome, nothing appended)";
    }
    return berth_code_name(c->code);
}

static int emit(berth_gen *g, uint64_t total, bool expect) {
    berth_gen_command *c = malloc(sizeof *c);
    if (c == NULL) {
        return cli_fail(CLI_EXIT_USAGE, "NOMEM", "out of memory");
    }
    cli_progress progress;
    cli_progress_start(&progress, "gen", total);
    int rc = CLI_EXIT_OK;
    for (uint64_t i = 0; i < total; i++) {
        if (berth_gen_next(g, c) != 0) {
            rc = cli_fail(CLI_EXIT_USAGE, "NOMEM", "out of memory after %" PRIu64 " commands", i);
            break;
        }
        assert(c->text_len > 0 && c->text_len < BERTH_GEN_TEXT_LEN_MAX);
        if (expect) {
            printf("# expect %s\n", expect_text(c));
        }
        fwrite(c->text, 1, c->text_len, stdout);
        fputc('\n', stdout);
        if (ferror(stdout)) {
            rc = cli_fail(CLI_EXIT_USAGE, "IO", "could not write the scenario");
            break;
        }
        cli_progress_update(&progress, i + 1);
    }
    cli_progress_end(&progress);
    free(c);
    return rc;
}

int cli_gen_main(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        fputs(gen_usage, stdout);
        return CLI_EXIT_OK;
    }
    gen_flags flags;
    berth_gen_options fractions;
    bool given[5] = { false, false, false, false, false };
    int rc = parse_gen_flags(argc, argv, &flags, &fractions, given);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }
    berth_gen_options options;
    uint64_t ops = 0;
    rc = build_options(&flags, &fractions, given, &options, &ops);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }
    char err[CLI_ERR_LEN_MAX];
    berth_gen *g = NULL;
    if (berth_gen_init(&g, &options, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return CLI_EXIT_USAGE;
    }
    /* The workers come first in the stream: --ops counts what follows. */
    rc = emit(g, (uint64_t)options.workers + ops, flags.expect);
    berth_gen_free(g);
    return rc;
}
