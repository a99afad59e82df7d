/* berth.c — the berth tool's front door: dispatch to git-style subcommands.
 *
 * Owns only the table of subcommands and `berth help`; each subcommand's
 * work and its own --help live in tools/cli_*.c. Every subcommand opens the
 * data directory read-only (see cli_common.c), so the tool never writes to a
 * journal and is safe beside a running berthd; the one exception is
 * `berth history rebuild` (cli_rebuild.c), which rewrites the HISTORY index
 * under berthd's directory lock and so refuses while a berthd runs. */
#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define BERTH_TOOL_VERSION "0.1.0"
#define BERTH_OUT_BUFFER_BYTES (1u << 20)   /* stdout block when it is not a terminal */

typedef struct subcommand {
    const char *name;
    int (*main)(int argc, char **argv);
    const char *summary;
} subcommand;

static const subcommand subcommands[] = {
    { "status", cli_status_main, "records, chain head, workers, instances, policy, snapshots, size" },
    { "journal", cli_journal_main, "journal dump [--from S] [--to S] | journal verify" },
    { "replay", cli_replay_main, "the state at a seq or a time (--at SEQ | --at-time RFC3339)" },
    { "history", cli_history_main, "every record that touched a worker or an instance; rebuild" },
    { "whatif", cli_whatif_main, "apply a scenario to a copy of the state, or --rejudge a policy" },
    { "gen", cli_gen_main, "a deterministic synthetic scenario (for simulation and benchmarks)" },
    { "timeline", cli_timeline_main, "an SVG picture: a row per worker, a bar per instance" },
};
#define SUBCOMMAND_COUNT (sizeof subcommands / sizeof subcommands[0])

static void print_help(FILE *out) {
    fputs("usage: berth <command> [options]\n"
          "\n"
          "berth reads a berth data directory read-only (safe beside a running berthd)\n"
          "and answers audit, time-travel and what-if questions by replaying its journal.\n"
          "`berth history rebuild` alone writes: it rebuilds the HISTORY index, with berthd\n"
          "stopped.\n"
          "\n"
          "commands:\n",
          out);
    for (size_t i = 0; i < SUBCOMMAND_COUNT; i++) {
        fprintf(out, "  %-9s %s\n", subcommands[i].name, subcommands[i].summary);
    }
    fputs("\n"
          "Run `berth <command> --help` for a command's options. Output is a human table;\n"
          "--json prints one JSON object per line instead. Exit status: 0 success,\n"
          "1 a finding (verify mismatch, refused what-if under --fail-on-refusal,\n"
          "a differing rejudged decision under --fail-on-diff), 2 usage or input errors.\n"
          "\n"
          "berth on etcd: every command also takes --journal etcd --etcd-endpoints URLS\n"
          "--cluster NAME (and --etcd-cacert/--etcd-cert/--etcd-key, --etcd-user,\n"
          "--etcd-password-file); --data DIR is then a local copy that is brought up to\n"
          "date from etcd first (docs/etcd.md).\n",
          out);
}

static const subcommand *find_subcommand(const char *name) {
    assert(name != NULL);
    for (size_t i = 0; i < SUBCOMMAND_COUNT; i++) {
        if (strcmp(subcommands[i].name, name) == 0) {
            return &subcommands[i];
        }
    }
    return NULL;
}

/* `berth help [command]`: the command's own --help, or the overview. */
static int help_main(int argc, char **argv) {
    if (argc < 3) {
        print_help(stdout);
        return CLI_EXIT_OK;
    }
    const subcommand *sub = find_subcommand(argv[2]);
    if (sub == NULL) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "unknown command '%s': see `berth help`", argv[2]);
    }
    char help_flag[] = "--help";
    char *sub_argv[] = { argv[2], help_flag, NULL };
    return sub->main(2, sub_argv);
}

int main(int argc, char **argv) {
    assert(argc >= 1);
    int taken = cli_etcd_take_flags(&argc, argv);
    if (taken != CLI_EXIT_OK) {
        return taken;
    }
    if (argc < 2) {
        print_help(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "help") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
        return help_main(argc, argv);
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
        printf("berth %s\n", BERTH_TOOL_VERSION);
        return CLI_EXIT_OK;
    }
    const subcommand *sub = find_subcommand(name);
    if (sub == NULL) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "unknown command '%s': see `berth help`", name);
    }
    /* Dumps and rejudges write a lot: big blocks, fewer syscalls. A terminal
     * stays line-buffered so a person sees lines as they come. */
    static char out_buffer[BERTH_OUT_BUFFER_BYTES];
    if (isatty(STDOUT_FILENO) != 1 && setvbuf(stdout, out_buffer, _IOFBF, sizeof out_buffer) != 0) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "cannot set up the output buffer");
    }
    int rc = sub->main(argc - 1, argv + 1);
    assert(rc == CLI_EXIT_OK || rc == CLI_EXIT_FINDING || rc == CLI_EXIT_USAGE);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        return cli_fail(CLI_EXIT_USAGE, "IO", "could not write the output");
    }
    return rc;
}
