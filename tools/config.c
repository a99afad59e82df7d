/* config.c — berthd's settings: defaults, command-line flags, config file.
 *
 * Owns the one table of options so a flag and its config-file line can
 * never disagree: `--port 7420` on the command line is `port 7420` in the
 * file. The file is read first and flags override it. Every numeric option
 * has bounds, so a typo cannot configure an unbounded server. */
#include "server.h"

#include "commit_log.h"
#include "etcd.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_LINE_LEN_MAX 8192
#define CONFIG_LINES_MAX 10000

typedef enum option_kind { OPT_STRING, OPT_U32, OPT_U64, OPT_PASSWORD_FILE, OPT_FLAG } option_kind;

typedef struct option {
    const char *name;
    option_kind kind;
    size_t offset;
    size_t size;            /* OPT_STRING / OPT_PASSWORD_FILE: field bytes */
    uint64_t min;
    uint64_t max;
    const char *help;
} option;

#define FIELD(f) offsetof(server_config, f), sizeof(((server_config *)0)->f)

static const option options[] = {
    { "data", OPT_STRING, FIELD(data_dir), 0, 0, "DIR  data directory (default ./berth-data)" },
    { "bind", OPT_STRING, FIELD(bind), 0, 0, "ADDR  IPv4/IPv6 address to listen on (default 127.0.0.1)" },
    { "port", OPT_U32, FIELD(port), 0, 65535, "N  TCP port, 0 for none (default 7420)" },
    { "unixsocket", OPT_STRING, FIELD(unixsocket), 0, 0, "PATH  also listen on a unix socket" },
    { "requirepass", OPT_STRING, FIELD(admin_password), 0, 0, "PASS  admin password" },
    { "password-file", OPT_PASSWORD_FILE, FIELD(admin_password), 0, 0,
      "FILE  admin password, first line of FILE" },
    { "readonly-password-file", OPT_PASSWORD_FILE, FIELD(readonly_password), 0, 0,
      "FILE  read-only password (queries, audit, WATCH)" },
    { "snapshot-every", OPT_U64, FIELD(snapshot_every), 0, UINT64_MAX,
      "N  records between snapshots, 0 never (default 100000)" },
    { "max-clients", OPT_U32, FIELD(max_clients), 1, 1000000, "N  connections (default 10000)" },
    { "max-args", OPT_U32, FIELD(max_args), BERTH_ARGS_MAX, 65536,
      "N  words in one command (default 1024; at least 512, the longest berth command)" },
    { "max-arg-bytes", OPT_U32, FIELD(max_arg_bytes), 64, 1u << 30,
      "N  bytes in one argument (default 65536)" },
    { "max-inline-bytes", OPT_U32, FIELD(max_inline_bytes), 64, 1u << 30,
      "N  bytes in one inline command line (default 65536)" },
    { "max-command-bytes", OPT_U32, FIELD(max_command_bytes), 256, 1u << 30,
      "N  bytes in one command with framing (default 1048576)" },
    { "max-pipeline", OPT_U32, FIELD(max_pipeline), 1, 1u << 20,
      "N  commands of one client per group commit (default 1024)" },
    { "max-output-bytes", OPT_U64, FIELD(max_output_bytes), 65536, UINT64_MAX / 4,
      "N  output buffer per client; a WATCH client past it catches up from the journal (default 67108864)" },
    { "idle-timeout", OPT_U32, FIELD(idle_timeout_s), 0, 86400 * 365,
      "SECONDS  close idle clients, 0 never (default 300; WATCH clients exempt)" },
    { "output-timeout", OPT_U32, FIELD(output_timeout_s), 0, 86400 * 365,
      "SECONDS  close a client whose pending output made no write progress this long, 0 never "
      "(default 60)" },
    { "auth-timeout", OPT_U32, FIELD(auth_timeout_s), 0, 86400 * 365,
      "SECONDS  with a password set, close a client that has not authenticated this long after "
      "connecting, 0 never (default 10)" },
    { "map-size-max-mib", OPT_U64, FIELD(map_size_max_mib), 0, UINT64_MAX >> 20,
      "MIB  journal map size ceiling; FULL beyond it (default: the journal's, 1 TiB)" },
    { "map-size-initial-mib", OPT_U64, FIELD(map_size_initial_mib), 0, UINT64_MAX >> 20,
      "MIB  journal map size at open, doubled as it fills (default: the journal's, 64 MiB)" },
    { "commit-gather-us", OPT_U32, FIELD(commit_gather_us), 0, 10000,
      "US  wait up to this long for the rest of a write cohort before a commit, 0 never (default 200)" },
    { "job-timeout", OPT_U32, FIELD(job_timeout_s), 0, SERVER_JOB_TIMEOUT_S_MAX,
      "SECONDS  kill a JOURNAL.VERIFY or AT job's process running longer (the client gets TIMEOUT), "
      "0 never (default 600; LMDB journal only)" },
    { "history-fold-records", OPT_U32, FIELD(history_fold_records), 1024, BERTH_HISTORY_FOLD_RECORDS_MAX,
      "N  durable records the HISTORY touch log gathers before a fold into the history index (default 16384)" },
    { "commit-log", OPT_STRING, FIELD(commit_log), 0, 0,
      "on|off  acknowledge a batch after one sync of the commit log (DATA/commit.log and "
      "commit.log.2), moving it into LMDB later "
      "(default on; LMDB journal only; see docs/server.md)" },
    { "checkpoint-priority", OPT_STRING, FIELD(checkpoint_priority), 0, 0,
      "background|normal  run the commit log's checkpoints at SCHED_IDLE while nothing waits on "
      "them, raised the moment something does (default background, where the process may raise "
      "a thread back: CAP_SYS_NICE or RLIMIT_NICE 20; see docs/server.md)" },
    { "commit-on-loop", OPT_STRING, FIELD(commit_on_loop), 0, 0,
      "auto|on|off  write and sync a batch's commit log frame on the event loop's thread instead of "
      "handing it to the committer thread: on always, off never, auto while the frames' average "
      "write and sync takes under --commit-on-loop-us (default auto; with the commit log; see "
      "docs/server.md)" },
    { "commit-on-loop-us", OPT_U32, FIELD(commit_on_loop_us), 1, 10000000,
      "US  with --commit-on-loop auto, commit on the loop while the frames' write and sync average "
      "under this (default 1000)" },
    { "commit-log-mib", OPT_U64, FIELD(commit_log_mib), 80, 16384,
      "MIB  the commit log's two files together when berthd creates them, half each, 80 to 16384 "
      "(default 128)" },
    { "journal", OPT_STRING, FIELD(journal_kind), 0, 0,
      "KIND  lmdb (default) or etcd: the journal replicated on etcd, see docs/etcd.md" },
    { "etcd-endpoints", OPT_STRING, FIELD(etcd_endpoints), 0, 0,
      "URLS  etcd client URLs, comma-separated, tried in turn (default http://127.0.0.1:2379)" },
    { "cluster", OPT_STRING, FIELD(cluster), 0, 0, "NAME  the journal's etcd prefix /berth/NAME/ (default berth)" },
    { "etcd-lease-ttl", OPT_U32, FIELD(etcd_lease_ttl_s), 2, 600,
      "SECONDS  the leader's lease; a follower takes over this long after the leader dies (default 3)" },
    { "etcd-timeout-ms", OPT_U32, FIELD(etcd_timeout_ms), BERTH_ETCD_TIMEOUT_MS_MIN, BERTH_ETCD_TIMEOUT_MS_MAX,
      "MS  every etcd request (append, read, lease, campaign) gives up after this; an append that "
      "times out steps the leader down (default 5000, 100 to 600000)" },
    { "advertise", OPT_STRING, FIELD(advertise), 0, 0,
      "HOST:PORT  address followers name in -READONLY (default bind:port)" },
    { "etcd-cacert", OPT_STRING, FIELD(etcd_cacert), 0, 0, "FILE  CA bundle for https etcd endpoints" },
    { "etcd-cert", OPT_STRING, FIELD(etcd_cert), 0, 0, "FILE  client certificate for etcd" },
    { "etcd-key", OPT_STRING, FIELD(etcd_key), 0, 0, "FILE  client key for etcd" },
    { "etcd-user", OPT_STRING, FIELD(etcd_user), 0, 0, "NAME  etcd auth user" },
    { "etcd-password-file", OPT_PASSWORD_FILE, FIELD(etcd_password), 0, 0,
      "FILE  etcd auth password, first line of FILE" },
    { "help", OPT_FLAG, FIELD(show_help), 0, 0, " show this help" },
    { "version", OPT_FLAG, FIELD(show_version), 0, 0, " print the version" },
};
#define OPTIONS_COUNT (sizeof options / sizeof options[0])

void config_defaults(server_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->data_dir, sizeof cfg->data_dir, "./berth-data");
    snprintf(cfg->bind, sizeof cfg->bind, "127.0.0.1");
    cfg->port = 7420;
    cfg->snapshot_every = 100000;
    cfg->max_clients = 10000;
    cfg->max_args = 1024;
    cfg->max_arg_bytes = 65536;
    cfg->max_inline_bytes = 65536;
    cfg->max_command_bytes = 1u << 20;
    cfg->max_pipeline = 1024;
    cfg->max_output_bytes = 64u << 20;
    cfg->idle_timeout_s = 300;
    cfg->output_timeout_s = 60;
    cfg->auth_timeout_s = 10;
    cfg->map_size_max_mib = 0;
    cfg->map_size_initial_mib = 0;
    snprintf(cfg->journal_kind, sizeof cfg->journal_kind, "lmdb");
    snprintf(cfg->etcd_endpoints, sizeof cfg->etcd_endpoints, "http://127.0.0.1:2379");
    snprintf(cfg->cluster, sizeof cfg->cluster, "berth");
    cfg->etcd_lease_ttl_s = 3;
    cfg->etcd_timeout_ms = BERTH_ETCD_TIMEOUT_MS_DEFAULT;
    cfg->commit_gather_us = 200;
    cfg->history_fold_records = BERTH_HISTORY_FOLD_RECORDS_DEFAULT;
    cfg->job_timeout_s = SERVER_JOB_TIMEOUT_S_DEFAULT;
    snprintf(cfg->commit_log, sizeof cfg->commit_log, "on");
    snprintf(cfg->checkpoint_priority, sizeof cfg->checkpoint_priority, "background");
    snprintf(cfg->commit_on_loop, sizeof cfg->commit_on_loop, "auto");
    cfg->commit_on_loop_us = 1000;
    cfg->commit_log_mib = (2 * BERTH_CLOG_BYTES_DEFAULT) >> 20;   /* two files */
}

void config_usage(void) {
    printf("usage: berthd [--config FILE] [options]\n\n"
           "berthd serves berth's allocation journal over RESP (redis-cli works).\n"
           "Every option can also be a line \"name value\" in the config file.\n\n");
    printf("  --config FILE  read options from FILE first\n");
    for (size_t i = 0; i < OPTIONS_COUNT; i++) {
        printf("  --%s %s\n", options[i].name, options[i].help);
    }
}

static const option *config_find(const char *name) {
    for (size_t i = 0; i < OPTIONS_COUNT; i++) {
        if (strcmp(options[i].name, name) == 0) {
            return &options[i];
        }
    }
    return NULL;
}

/* First line of a file, without its newline: a password kept out of argv. */
static int config_read_password(const char *path, char *out, size_t size, char *err, size_t err_size) {
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, err_size, "cannot open password file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[SERVER_PASSWORD_LEN_MAX + 2];
    char *got = fgets(line, sizeof line, f);
    int closed = fclose(f);
    assert(closed == 0 || closed == EOF);
    if (got == NULL) {
        snprintf(err, err_size, "password file %s is empty", path);
        return -1;
    }
    size_t len = strcspn(line, "\r\n");
    line[len] = '\0';
    if (len == 0 || len >= size) {
        snprintf(err, err_size, "password file %s: the password must be 1 to %zu bytes on the first line",
                 path, size - 1);
        return -1;
    }
    memcpy(out, line, len + 1);
    return 0;
}

static int config_set(server_config *cfg, const option *opt, const char *value,
                      char *err, size_t err_size) {
    char *field = (char *)cfg + opt->offset;
    if (opt->kind == OPT_FLAG) {
        *(bool *)field = true;
        return 0;
    }
    assert(value != NULL);
    if (opt->kind == OPT_STRING) {
        size_t len = strlen(value);
        /* An empty value is a slip (an unset shell variable), never a
         * setting: `--requirepass ""` would silently mean no password and
         * `--data ""` fail later as a data-directory error (exit 1, which a
         * service manager restarts) instead of a usage error. */
        if (len == 0) {
            snprintf(err, err_size, "ERR --%s needs a value, got an empty one", opt->name);
            return -1;
        }
        if (len >= opt->size) {
            snprintf(err, err_size, "ERR --%s: value longer than %zu bytes", opt->name, opt->size - 1);
            return -1;
        }
        memcpy(field, value, len + 1);
        return 0;
    }
    if (opt->kind == OPT_PASSWORD_FILE) {
        char why[SERVER_PATH_LEN_MAX + 128];
        if (config_read_password(value, field, opt->size, why, sizeof why) != 0) {
            snprintf(err, err_size, "ERR --%s: %s", opt->name, why);
            return -1;
        }
        return 0;
    }
    uint64_t v = 0;
    if (!berth_parse_u64(berth_str_make(value, strlen(value)), &v) || v < opt->min || v > opt->max) {
        snprintf(err, err_size, "ERR --%s: expected a whole number from %llu to %llu, got \"%s\"",
                 opt->name, (unsigned long long)opt->min, (unsigned long long)opt->max, value);
        return -1;
    }
    if (opt->kind == OPT_U32) {
        *(uint32_t *)field = (uint32_t)v;
    } else {
        *(uint64_t *)field = v;
    }
    return 0;
}

static bool config_blank(char c) {
    return c == ' ' || c == '\t';
}

/* One "name value" line; '#' starts a comment line. Blanks after the value
 * are dropped: an editor's trailing space must not turn "data DIR " into a
 * new, empty directory or a password into one AUTH never matches. A '#'
 * after a blank inside the value is refused rather than guessed at: as a
 * comment it would silently cut a password that contains " #", as part of
 * the value it would silently keep a comment in one. */
static int config_file_line(server_config *cfg, char *line, const char *path, uint32_t lineno,
                            char *err, size_t err_size) {
    line[strcspn(line, "\r\n")] = '\0';
    char *name = line + strspn(line, " \t");
    if (*name == '\0' || *name == '#') {
        return 0;
    }
    char *end = name + strcspn(name, " \t");
    char *value = end + strspn(end, " \t");
    *end = '\0';
    size_t value_len = strlen(value);
    while (value_len > 0 && config_blank(value[value_len - 1])) {
        value[--value_len] = '\0';
    }
    for (size_t i = 1; i < value_len; i++) {
        if (value[i] == '#' && config_blank(value[i - 1])) {
            snprintf(err, err_size,
                     "ERR %s:%u: the value of \"%s\" contains \"#\" after a blank; comments go on "
                     "lines of their own (a line starting with #), not after a value",
                     path, lineno, name);
            return -1;
        }
    }
    const option *opt = config_find(name);
    if (opt == NULL || opt->kind == OPT_FLAG) {
        snprintf(err, err_size, "ERR %s:%u: unknown option \"%s\"", path, lineno, name);
        return -1;
    }
    if (*value == '\0') {
        snprintf(err, err_size, "ERR %s:%u: option \"%s\" needs a value", path, lineno, name);
        return -1;
    }
    char why[1024];
    if (config_set(cfg, opt, value, why, sizeof why) != 0) {
        snprintf(err, err_size, "ERR %s:%u: %s", path, lineno, why + 4);
        return -1;
    }
    return 0;
}

static int config_file(server_config *cfg, const char *path, char *err, size_t err_size) {
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, err_size, "ERR cannot open config file %s: %s", path, strerror(errno));
        return -1;
    }
    static char line[CONFIG_LINE_LEN_MAX];
    int rc = 0;
    for (uint32_t lineno = 1; rc == 0 && fgets(line, sizeof line, f) != NULL; lineno++) {
        if (lineno > CONFIG_LINES_MAX) {
            snprintf(err, err_size, "ERR %s: more than %d lines", path, CONFIG_LINES_MAX);
            rc = -1;
            break;
        }
        rc = config_file_line(cfg, line, path, lineno, err, err_size);
    }
    if (fclose(f) != 0 && rc == 0) {
        snprintf(err, err_size, "ERR cannot read config file %s", path);
        rc = -1;
    }
    return rc;
}

int config_parse(server_config *cfg, int argc, char **argv, char *err, size_t err_size) {
    assert(argc >= 1);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                snprintf(err, err_size, "ERR --config needs a file");
                return -1;
            }
            if (config_file(cfg, argv[i + 1], err, err_size) != 0) {
                return -1;
            }
        }
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0) {
            i++;
            continue;
        }
        if (strncmp(argv[i], "--", 2) != 0) {
            snprintf(err, err_size, "ERR unexpected argument \"%s\" (see --help)", argv[i]);
            return -1;
        }
        const option *opt = config_find(argv[i] + 2);
        if (opt == NULL) {
            snprintf(err, err_size, "ERR unknown option \"%s\" (see --help)", argv[i]);
            return -1;
        }
        const char *value = NULL;
        if (opt->kind != OPT_FLAG) {
            if (i + 1 >= argc) {
                snprintf(err, err_size, "ERR %s needs a value", argv[i]);
                return -1;
            }
            value = argv[++i];
        }
        if (config_set(cfg, opt, value, err, err_size) != 0) {
            return -1;
        }
    }
    return 0;
}

/* Loopback: 127.0.0.0/8, ::1, or the name localhost. */
static bool config_bind_loopback(const char *bind) {
    if (strcmp(bind, "localhost") == 0) {
        return true;
    }
    struct in_addr v4;
    if (inet_pton(AF_INET, bind, &v4) == 1) {
        return (ntohl(v4.s_addr) >> 24) == 127;
    }
    struct in6_addr v6;
    if (inet_pton(AF_INET6, bind, &v6) == 1) {
        return memcmp(&v6, &in6addr_loopback, sizeof v6) == 0;
    }
    return false;
}

int config_check(const server_config *cfg, char *err, size_t err_size) {
    if (strcmp(cfg->journal_kind, "lmdb") != 0 && strcmp(cfg->journal_kind, "etcd") != 0) {
        snprintf(err, err_size, "ERR --journal must be lmdb or etcd, not \"%s\"", cfg->journal_kind);
        return -1;
    }
    if (strcmp(cfg->commit_log, "on") != 0 && strcmp(cfg->commit_log, "off") != 0) {
        snprintf(err, err_size, "ERR --commit-log must be on or off, not \"%s\"", cfg->commit_log);
        return -1;
    }
    if (strcmp(cfg->checkpoint_priority, "background") != 0 &&
        strcmp(cfg->checkpoint_priority, "normal") != 0) {
        snprintf(err, err_size, "ERR --checkpoint-priority must be background or normal, not \"%s\"",
                 cfg->checkpoint_priority);
        return -1;
    }
    if (strcmp(cfg->commit_on_loop, "auto") != 0 && strcmp(cfg->commit_on_loop, "on") != 0 &&
        strcmp(cfg->commit_on_loop, "off") != 0) {
        snprintf(err, err_size, "ERR --commit-on-loop must be auto, on or off, not \"%s\"", cfg->commit_on_loop);
        return -1;
    }
    if (cfg->port == 0 && cfg->unixsocket[0] == '\0') {
        snprintf(err, err_size, "ERR nothing to listen on: --port is 0 and no --unixsocket given");
        return -1;
    }
    if (cfg->port != 0 && !config_bind_loopback(cfg->bind) && cfg->admin_password[0] == '\0') {
        snprintf(err, err_size,
                 "ERR refusing to listen on %s without a password: set --requirepass or "
                 "--password-file, or bind to 127.0.0.1",
                 cfg->bind);
        return -1;
    }
    if (cfg->readonly_password[0] != '\0' && cfg->admin_password[0] == '\0') {
        snprintf(err, err_size,
                 "ERR --readonly-password-file needs an admin password too (--requirepass or "
                 "--password-file)");
        return -1;
    }
    if (cfg->readonly_password[0] != '\0' &&
        strcmp(cfg->readonly_password, cfg->admin_password) == 0) {
        snprintf(err, err_size, "ERR the read-only password must differ from the admin password");
        return -1;
    }
    if (cfg->max_inline_bytes > cfg->max_command_bytes || cfg->max_arg_bytes > cfg->max_command_bytes) {
        snprintf(err, err_size,
                 "ERR --max-inline-bytes and --max-arg-bytes must not exceed --max-command-bytes");
        return -1;
    }
    if (cfg->max_args < BERTH_ARGS_MAX) {
        snprintf(err, err_size, "ERR --max-args must be at least %d, the longest berth command",
                 BERTH_ARGS_MAX);
        return -1;
    }
    return 0;
}
