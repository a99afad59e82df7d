/* berth.c — the berth tool's front door: dispatch to git-style subcommands.
 *
 * Owns only the table of subcommands and `berth help`; each subcommand's
 * work and its own --help live in tools/cli_*.c. Every subcommand opens the
 * data directory read-only (see cli_common.c), so the tool never writes to a
 * journal and is safe beside a running berthd; the one exception is
 * `berth history rebuild` (cli_rebuild.c), which rewrites the HISTORY index
 * under berthd's directory lock and so refuses while a berthd runs.
 *
 * Also owns the guard around the subcommands that read a data directory:
 * each runs in a forked child (guard.h), forked here before any thread or
 * journal exists, so a page damaged badly enough to crash LMDB ends in a
 * CORRUPT finding (exit 1) instead of a dead berth. BERTH_UNGUARDED=1 runs
 * them in-process (for tests that show a walk does die unguarded). */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "guard.h"

#define BERTH_TOOL_VERSION "0.1.0"
#define BERTH_OUT_BUFFER_BYTES (1u << 20)   /* stdout block when it is not a terminal */

typedef struct subcommand {
    const char *name;
    int (*main)(int argc, char **argv);
    const char *summary;
    bool guarded;       /* reads a data directory's pages: run in a child */
} subcommand;

static const subcommand subcommands[] = {
    { "status", cli_status_main, "records, chain head, workers, instances, policy, snapshots, size",
      true },
    { "journal", cli_journal_main, "journal dump [--from S] [--to S] | journal verify", true },
    { "replay", cli_replay_main, "the state at a seq or a time (--at SEQ | --at-time RFC3339)",
      true },
    { "history", cli_history_main, "every record that touched a worker or an instance; rebuild",
      true },
    { "whatif", cli_whatif_main, "apply a scenario to a copy of the state, or --rejudge a policy",
      true },
    { "gen", cli_gen_main, "a deterministic synthetic scenario (for simulation and benchmarks)",
      false },
    { "timeline", cli_timeline_main, "an SVG picture: a row per worker, a bar per instance", true },
    /* backup guards its own walk (cli_guarded): it owns DEST.partial. */
    { "backup", cli_backup_main, "a checked copy of the data directory, safe beside berthd (--to DEST)",
      false },
};
#define SUBCOMMAND_COUNT (sizeof subcommands / sizeof subcommands[0])

static void print_help(FILE *out) {
    fputs("usage: berth <command> [options]\n"
          "\n"
          "berth reads a berth data directory read-only (safe beside a running berthd)\n"
          "and answers audit, time-travel and what-if questions by replaying its journal.\n"
          "It writes only where told: `berth history rebuild` rebuilds the HISTORY index\n"
          "(with berthd stopped), `berth backup --to DEST` makes DEST.\n"
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

/* The data directory named by --data DIR or --data=DIR, or NULL. */
static const char *data_arg(int argc, char **argv) {
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--data") == 0 && i + 1 < argc) {
            dir = argv[i + 1];
        } else if (strncmp(argv[i], "--data=", 7) == 0) {
            dir = argv[i] + 7;
        }
    }
    return dir;
}

static bool has_arg(int argc, char **argv, const char *word) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], word) == 0) {
            return true;
        }
    }
    return false;
}

static int run_subcommand(const subcommand *sub, int argc, char **argv) {
    int rc = sub->main(argc, argv);
    assert(rc == CLI_EXIT_OK || rc == CLI_EXIT_FINDING || rc == CLI_EXIT_USAGE);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        return cli_fail(CLI_EXIT_USAGE, "IO", "could not write the output");
    }
    return rc;
}

/* What berth passes on to its guarded child (forward_signal). */
static const int cli_forwarded_signals[] = { SIGTERM, SIGHUP, SIGINT };

/* What the child runs: the subcommand's main, or fn(arg) for a subcommand
 * that guards one step of its own (cli_guarded). */
typedef struct guarded_call {
    const subcommand *sub;
    int argc;
    char **argv;
    int (*fn)(void *arg);
    void *arg;
} guarded_call;

static int run_fn(const guarded_call *call) {
    int rc = call->fn(call->arg);
    assert(rc == CLI_EXIT_OK || rc == CLI_EXIT_FINDING || rc == CLI_EXIT_USAGE);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        return cli_fail(CLI_EXIT_USAGE, "IO", "could not write the output");
    }
    return rc;
}

static int guarded_child(void *arg, int fd) {
    const guarded_call *call = arg;
    cli_guard_fd = fd;
    for (size_t i = 0; i < sizeof cli_forwarded_signals / sizeof cli_forwarded_signals[0]; i++) {
        (void)signal(cli_forwarded_signals[i], SIG_DFL);
    }
    int rc = call->fn != NULL ? run_fn(call) : run_subcommand(call->sub, call->argc, call->argv);
    /* exit, not guard_run's _exit: this child was forked before any thread,
     * so it may end like the whole tool did (atexit handlers: a sanitizer
     * build's leak check runs here). */
    exit(rc);
}

/* The guarded child, for the handlers below: 0 when none runs (and in the
 * child itself, whose copy was taken before the parent learned the pid). */
static volatile sig_atomic_t cli_child_pid;

static void note_child(void *ctx, pid_t pid) {
    (void)ctx;
    cli_child_pid = (sig_atomic_t)pid;
}

/* SIGTERM, SIGHUP or SIGINT sent to berth's pid alone (a supervisor's kill,
 * not a terminal's Ctrl-C to the group) goes on to the child, which ends
 * of it: run_guarded then ends berth of the same signal, as before. With
 * no child to pass it to (in the child, or before the fork returned) the
 * signal takes its default action here. */
static void forward_signal(int sig) {
    pid_t pid = (pid_t)cli_child_pid;
    if (pid > 0) {
        int saved = errno;
        (void)kill(pid, sig);
        errno = saved;
        return;
    }
    (void)signal(sig, SIG_DFL);
    (void)raise(sig);
}

static int forward_signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof cli_forwarded_signals / sizeof cli_forwarded_signals[0]; i++) {
        if (sigaction(cli_forwarded_signals[i], &sa, NULL) != 0) {
            return -1;
        }
    }
    return 0;
}

/* The child died of damaged pages (most likely): a CORRUPT finding like a
 * bad record's. For verify it names the first seq not shown sound. */
static int report_death(const subcommand *sub, int argc, char **argv, const guard_result *res) {
    char buf[32];
    const char *sig = guard_signal_name(res->signal, buf, sizeof buf);
    const char *dir = data_arg(argc, argv);
    if (dir == NULL) {
        dir = "DIR";
    }
    bool verify = strcmp(sub->name, "journal") == 0 && argc > 1 && strcmp(argv[1], "verify") == 0;
    char what[CLI_ERR_LEN_MAX];
    uint64_t bad = 0;
    if (!res->opened) {
        snprintf(what, sizeof what,
                 "%s/data.mdb is damaged: opening it killed `berth %s` (%s) before any record "
                 "was read; LMDB does not checksum its pages (a meta page is the likely place); "
                 "restore %s from a copy",
                 dir, sub->name, sig, dir);
    } else if (verify) {
        uint64_t checked = res->progressed ? res->checked_seq : 0;
        uint64_t died_by = checked + CLI_VERIFY_STEP_RECORDS < res->head_seq
                               ? checked + CLI_VERIFY_STEP_RECORDS
                               : res->head_seq;
        bad = checked + 1;
        char sound[96] = "before any record checked out";
        if (checked > 0) {
            snprintf(sound, sizeof sound, "after records 1..%" PRIu64 " checked out", checked);
        }
        snprintf(what, sizeof what,
                 "%s/data.mdb's pages are damaged past seq %" PRIu64 ": reading them killed the "
                 "walk (%s) at or before seq %" PRIu64 " (head %" PRIu64 "), %s; LMDB does not "
                 "checksum its pages, so the damaged byte cannot be named; restore %s from a copy",
                 dir, checked, sig, died_by, res->head_seq, sound, dir);
    } else {
        snprintf(what, sizeof what,
                 "%s/data.mdb's pages are damaged: reading them killed `berth %s` (%s); LMDB "
                 "does not checksum its pages; `berth journal verify --data %s` names the last "
                 "seq before the damage; restore %s from a copy",
                 dir, sub->name, sig, dir, dir);
    }
    if (verify && has_arg(argc, argv, "--json")) {
        printf("{\"ok\":false,\"records\":%" PRIu64 ",\"head_seq\":%" PRIu64
               ",\"head_hash\":\"\",\"first_bad_seq\":%" PRIu64 ",\"what\":",
               bad > 0 ? bad - 1 : 0, res->head_seq, bad);
        cli_json_str(stdout, what, strlen(what));
        fputs("}\n", stdout);
        (void)fflush(stdout);
    }
    if (bad > 0) {
        fprintf(stderr, "CORRUPT seq %" PRIu64 ": %s\n", bad, what);
    } else {
        fprintf(stderr, "CORRUPT %s\n", what);
    }
    return CLI_EXIT_FINDING;
}

/* The child died of an internal error (SIGABRT: an assertion, which
 * printed its message; SIGFPE, SIGILL): a bug in berth, and no evidence
 * against the data. Damaged pages would send a read astray (SIGSEGV,
 * SIGBUS); an assertion that fails is berth's own check, and blaming the
 * pages could make an operator throw away a good journal. */
static int report_internal(const subcommand *sub, int argc, char **argv, const guard_result *res) {
    char buf[32];
    const char *sig = guard_signal_name(res->signal, buf, sizeof buf);
    const char *dir = data_arg(argc, argv);
    fprintf(stderr, "INTERNAL `berth %s` stopped on an internal error (%s%s): a bug in berth, not "
                    "damage to %s; please report it with this command and `berth --version`:\n  berth %s",
            sub->name, sig, res->signal == SIGABRT ? ": an assertion failed, its message is above" : "",
            dir != NULL ? dir : "the data directory", sub->name);
    for (int i = 1; i < argc; i++) {
        fprintf(stderr, " %s", argv[i]);
    }
    fprintf(stderr, "\n(only if the assertion's message names mdb.c, LMDB's own check, may "
                    "data.mdb be damaged: `berth journal verify` says)\n");
    return CLI_EXIT_USAGE;
}

/* The child's run and its end: its exit code, or a death reported. cleanup
 * (may be NULL) runs first whenever the child did not exit 0. On exit 0,
 * *bytes and *len (when bytes is not NULL) take its result frame. */
static int guarded_run(const guarded_call *call, void (*cleanup)(void *), void *cleanup_arg, char **bytes,
                       size_t *len) {
    /* Nothing may sit in stdout's buffer: the child would print it too. */
    int rc = CLI_EXIT_OK;
    if (fflush(stdout) != 0) {
        rc = cli_fail(CLI_EXIT_USAGE, "IO", "could not write the output");
    } else if (forward_signals_install() != 0) {
        rc = cli_fail(CLI_EXIT_USAGE, "ERR", "cannot install the signal handlers");
    }
    /* SIGTERM when berth dies of what it cannot pass on (SIGKILL): no
     * child walks on, or holds the LOCK (history rebuild), without it.
     * No time limit, nor on the reap: a person or script runs berth and can
     * stop it. */
    const guard_opts opts = { SIGTERM, note_child, NULL, 0, 0 };
    guard_result res;
    memset(&res, 0, sizeof res);
    if (rc == CLI_EXIT_OK && guard_run(guarded_child, (void *)call, &opts, &res) != 0) {
        rc = cli_fail(CLI_EXIT_USAGE, "ERR", "cannot start the walk in a child process: %s", strerror(errno));
    }
    if (rc != CLI_EXIT_OK || res.died || res.exit_code != CLI_EXIT_OK) {
        if (cleanup != NULL) {
            cleanup(cleanup_arg);
        }
    }
    if (rc != CLI_EXIT_OK) {
        return rc;
    }
    if (!res.died) {
        if (res.exit_code == CLI_EXIT_OK && bytes != NULL) {
            *bytes = res.bytes;
            *len = res.len;
        } else {
            free(res.bytes);
        }
        return res.exit_code == CLI_EXIT_OK || res.exit_code == CLI_EXIT_FINDING
                   ? res.exit_code
                   : CLI_EXIT_USAGE;
    }
    free(res.bytes);
    guard_cause cause = guard_signal_cause(res.signal);
    if (cause == GUARD_CAUSE_OUTSIDE) {
        /* Sent from outside (SIGPIPE from `| head`, SIGTERM, SIGKILL): end
         * the same way, as the unguarded tool did. */
        (void)signal(res.signal, SIG_DFL);
        (void)raise(res.signal);
        return CLI_EXIT_USAGE;
    }
    if (cause == GUARD_CAUSE_BUG) {
        return report_internal(call->sub, call->argc, call->argv, &res);
    }
    return report_death(call->sub, call->argc, call->argv, &res);
}

static bool unguarded_asked(void) {
    const char *unguarded = getenv("BERTH_UNGUARDED");
    return unguarded != NULL && strcmp(unguarded, "1") == 0;
}

static int run_guarded(const subcommand *sub, int argc, char **argv) {
    if (unguarded_asked()) {
        return run_subcommand(sub, argc, argv);
    }
    guarded_call call = { sub, argc, argv, NULL, NULL };
    return guarded_run(&call, NULL, NULL, NULL, NULL);
}

int cli_guarded(int argc, char **argv, int (*fn)(void *arg), void *arg, void (*cleanup)(void *arg),
                void *cleanup_arg, char **bytes, size_t *len) {
    assert(argc >= 1 && fn != NULL && bytes != NULL && len != NULL);
    const subcommand *sub = find_subcommand(argv[0]);
    assert(sub != NULL && !sub->guarded);
    *bytes = NULL;
    *len = 0;
    if (unguarded_asked()) {
        int rc = fn(arg);
        if (rc != CLI_EXIT_OK && cleanup != NULL) {
            cleanup(cleanup_arg);
        }
        return rc;
    }
    guarded_call call = { sub, argc, argv, fn, arg };
    return guarded_run(&call, cleanup, cleanup_arg, bytes, len);
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
    if (guard_last_words_install("berth", data_arg(argc, argv)) != 0) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "cannot install the signal handlers");
    }
    if (sub->guarded && !cli_wants_help(argc - 1, argv + 1)) {
        return run_guarded(sub, argc - 1, argv + 1);
    }
    return run_subcommand(sub, argc - 1, argv + 1);
}
