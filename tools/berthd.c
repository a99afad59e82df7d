/* berthd.c — berthd's main: configuration, data-directory lock, start-up,
 * signals, orderly shutdown.
 *
 * Owns the process: it opens the journal (which takes the data directory's
 * lock, so a second berthd on the same directory exits with a clear message),
 * opens the engine (newest good snapshot, tail replayed, tail chain checked),
 * logs one start-up line, and runs the loop. SIGTERM and SIGINT stop
 * accepting, commit the batch in flight, send the held replies, refuse each
 * parked command (never a bare close), and close. SIGSEGV, SIGBUS and
 * SIGABRT leave one last line naming the data directory and the check to
 * run (guard.h) before they end the process as before. */
#include "server.h"
#include "guard.h"

#include "commit_log.h"

#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#define BERTHD_ERR_LEN_MAX 1024
#define BERTHD_FDS_RESERVED 64          /* listeners, LMDB, logs, background reader */
#define BERTHD_EXIT_USAGE 2

static void berthd_signal_cb(struct ev_loop *loop, ev_signal *w, int revents) {
    server *s = w->data;
    if (s->stopping) {
        return;
    }
    server_log("received %s: no longer accepting; committing the batch in flight",
               w->signum == SIGTERM ? "SIGTERM" : "SIGINT");
    s->stopping = true;
    net_stop_listening(s);
    batch_flush(s);
    net_write_pending(s);
    ev_break(loop, EVBREAK_ALL);
    (void)revents;
}

/* Each client needs a descriptor: raise the soft limit, or lower max clients
 * to what the system allows (and say so). */
static void berthd_fd_limit(server_config *cfg) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return;
    }
    rlim_t want = (rlim_t)cfg->max_clients + BERTHD_FDS_RESERVED;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want <= rl.rlim_max ? want : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0 && getrlimit(RLIMIT_NOFILE, &rl) != 0) {
            return;
        }
    }
    if (rl.rlim_cur < want) {
        uint32_t allowed = rl.rlim_cur > BERTHD_FDS_RESERVED + 1
                               ? (uint32_t)(rl.rlim_cur - BERTHD_FDS_RESERVED)
                               : 1;
        server_log("open file limit is %llu: lowering --max-clients from %u to %u",
                   (unsigned long long)rl.rlim_cur, cfg->max_clients, allowed);
        cfg->max_clients = allowed;
    }
}

/* The committer, the commit log, then the journal: the committer's last
 * checkpoint (batch.c) writes through both. */
static void berthd_close_journal(server *s) {
    batch_stop_pipe(s);
    if (s->clog != NULL) {
        berth_clog_close(s->clog);
        s->clog = NULL;
    }
    berth_journal_close(s->journal);
    s->journal = NULL;
}

/* Whether the checkpointer may run at SCHED_IDLE (batch.c, "The
 * checkpointer's priority"): asked for, and this process may bring a thread
 * back from it. Said once in the log when asked for and refused. */
static void checkpoint_priority_choose(server *s) {
    s->checkpoint_background = false;
    if (strcmp(s->config.checkpoint_priority, "background") != 0) {
        return;
    }
    s->checkpoint_background = server_thread_background_probe();
    if (!s->checkpoint_background) {
        server_log("the checkpointer runs at the normal priority: this process may not bring a "
                   "thread back from SCHED_IDLE (that takes CAP_SYS_NICE or an RLIMIT_NICE of 20, "
                   "LimitNICE=+0 in a systemd unit); the replies' tail is longer on busy cores "
                   "(docs/server.md, \"The checkpointer's priority\")");
    }
}

/* The commit log (batch.c, "The commit log"): whatever --commit-log says,
 * a log left in DIR is checkpointed first, since it may hold acknowledged
 * records that never reached LMDB (a crash, or a stop whose last checkpoint
 * failed); so this is the recovery. With it on, the log stays open for the
 * committer. */
static int berthd_commit_log_open(server *s) {
    bool on = strcmp(s->config.commit_log, "on") == 0;
    char err[BERTHD_ERR_LEN_MAX] = "";
    if (replication_configured(&s->config)) {
        /* A log an LMDB berthd left here holds writes etcd never saw:
         * serving without them would hide acknowledged writes. */
        uint64_t head = 0, pending = 0;
        uint8_t hash[BERTH_HASH_LEN];
        if (berth_clog_exists(s->config.data_dir) &&
            (berth_journal_head(s->journal, &head, hash) != BERTH_J_OK ||
             berth_clog_pending(s->config.data_dir, head, hash, &pending, err, sizeof err) !=
                 BERTH_J_OK ||
             pending > 0)) {
            fprintf(stderr, "berthd: ERR the commit log (%s/%s, %s) holds acknowledged records "
                            "an LMDB berthd wrote that the etcd journal does not have%s%s; start "
                            "once with --journal lmdb to move them, or move the files away\n",
                    s->config.data_dir, BERTH_CLOG_FILE, BERTH_CLOG_FILE2,
                    err[0] != '\0' ? ": " : "", err);
            return -1;
        }
        return 0;
    }
    if (!on && !berth_clog_exists(s->config.data_dir)) {
        return 0;
    }
    berth_clog *log = NULL;
    /* --commit-log-mib sizes the two files together; each is half. */
    uint64_t file_bytes = (s->config.commit_log_mib << 20) / 2;
    berth_jerr jerr = berth_clog_open(&log, s->config.data_dir, file_bytes, err, sizeof err);
    uint64_t moved = 0;
    if (jerr == BERTH_J_OK) {
        jerr = berth_clog_checkpoint(log, s->journal, &moved, err, sizeof err);
    }
    if (jerr != BERTH_J_OK) {
        fprintf(stderr, "berthd: %s cannot move the commit log (%s/%s, %s) into the journal: "
                        "%s\n",
                berth_jerr_name(jerr), s->config.data_dir, BERTH_CLOG_FILE, BERTH_CLOG_FILE2, err);
        if (log != NULL) {
            berth_clog_close(log);
        }
        return -1;
    }
    if (moved > 0) {
        server_log("moved %llu acknowledged records from the commit log (%s/%s, %s) into the "
                   "journal",
                   (unsigned long long)moved, s->config.data_dir, BERTH_CLOG_FILE,
                   BERTH_CLOG_FILE2);
    }
    uint64_t torn_first = 0, torn_last = 0, torn_off = 0;
    const char *torn_path = NULL;
    if (berth_clog_dropped(log, &torn_first, &torn_last, &torn_path, &torn_off)) {
        server_log("dropped the torn frame at offset %llu of %s (seqs %llu..%llu): a crash cut it "
                   "before its sync returned, so none of it was acknowledged (had it been whole "
                   "once, the disk damaged it)",
                   (unsigned long long)torn_off, torn_path, (unsigned long long)torn_first,
                   (unsigned long long)torn_last);
    }
    if (on) {
        s->clog = log;
        checkpoint_priority_choose(s);
    } else {
        berth_clog_close(log);
    }
    return 0;
}

static int berthd_open(server *s) {
    char err[BERTHD_ERR_LEN_MAX] = "";
    if (mkdir(s->config.data_dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "berthd: ERR cannot create data directory %s: %s\n", s->config.data_dir,
                strerror(errno));
        return -1;
    }
    berth_journal_options jopt;
    memset(&jopt, 0, sizeof jopt);
    jopt.map_size_max = s->config.map_size_max_mib << 20;
    jopt.map_size_initial = s->config.map_size_initial_mib << 20;
    /* The meta page's sync is berthd's (batch.c, pipe_run), which answers
     * a write only once the journal says it is durable. (The etcd journal
     * ignores it.) */
    jopt.defer_meta_sync = true;
    jopt.history_fold_records = s->config.history_fold_records;
    berth_jerr jerr = replication_configured(&s->config)
                          ? (berth_jerr)replication_open(s, &jopt, err, sizeof err)
                          : berth_journal_open_lmdb(&s->journal, s->config.data_dir, &jopt, err, sizeof err);
    if (jerr == BERTH_J_LOCKED) {
        fprintf(stderr, "berthd: LOCKED %s; stop the other berthd or use another --data\n", err);
        return -1;
    }
    if (jerr != BERTH_J_OK) {
        fprintf(stderr, "berthd: %s cannot open the journal in %s: %s\n", berth_jerr_name(jerr),
                s->config.data_dir, err);
        return -1;
    }
    if (berthd_commit_log_open(s) != 0) {
        berth_journal_close(s->journal);
        s->journal = NULL;
        return -1;
    }
    /* The LMDB journal is committed on batch.c's committer thread; etcd's
     * commits stay on the loop, fenced by replication.c. */
    if (!replication_configured(&s->config) && batch_start_pipe(s) != BERTH_J_OK) {
        fprintf(stderr, "berthd: NOMEM cannot start the committer thread\n");
        berthd_close_journal(s);
        return -1;
    }
    berth_engine_options *eopt = &s->engine_options;
    memset(eopt, 0, sizeof *eopt);
    eopt->snapshot_every = s->config.snapshot_every;
    replication_engine_options(s, eopt);
    berth_replay_stats stats;
    memset(&stats, 0, sizeof stats);
    uint64_t t0 = now_ns_mono();
    jerr = berth_engine_open(&s->engine, batch_engine_journal(s), eopt, &stats, err, sizeof err);
    uint64_t elapsed_ms = (now_ns_mono() - t0) / 1000000u;
    if (jerr != BERTH_J_OK) {
        fprintf(stderr, "berthd: %s cannot load the journal in %s: %s\n", berth_jerr_name(jerr),
                s->config.data_dir, err);
        berthd_close_journal(s);
        replication_free(s);
        return -1;
    }
    const berth_state *st = berth_engine_state(s->engine);
    s->start_records = berth_engine_head_seq(s->engine);
    s->durable_head = s->start_records;
    s->start_ms = elapsed_ms;
    server_log("loaded %s: %llu records (snapshot at seq %llu, %llu replayed), %zu workers, "
               "%zu instances in %llu ms",
               s->config.data_dir, (unsigned long long)s->start_records,
               (unsigned long long)stats.from_snapshot_seq, (unsigned long long)stats.records,
               berth_state_worker_count(st), berth_state_instance_count(st),
               (unsigned long long)elapsed_ms);
    if (stats.bad_snapshots > 0) {
        server_log("skipped %u damaged snapshot(s), which failed their check, for an older one or "
                   "genesis: the state is the same; `berth journal verify --data %s` names them",
                   (unsigned)stats.bad_snapshots, s->config.data_dir);
    }
    return 0;
}

static int berthd_init(server *s) {
    /* Not libev's default loop: that one reaps every child at SIGCHLD
     * (waitpid(-1)), and the job thread must reap its own to learn how
     * each died (jobs.c, guard.c). berthd watches no child of its own. */
    s->loop = ev_loop_new(EVFLAG_AUTO);
    if (s->loop == NULL) {
        fprintf(stderr, "berthd: ERR cannot initialise libev\n");
        return -1;
    }
    dlink_init(&s->clients);
    dlink_init(&s->pending_writes);
    dlink_init(&s->resume);
    dlink_init(&s->watchers);
    dlink_init(&s->parked);
    s->limits.args_max = s->config.max_args;
    s->limits.bulk_bytes_max = s->config.max_arg_bytes;
    s->limits.inline_bytes_max = s->config.max_inline_bytes;
    s->limits.command_bytes_max = s->config.max_command_bytes;
    s->limits_unauth = s->limits;
    if (s->limits_unauth.args_max > SERVER_UNAUTH_ARGS_MAX) {
        s->limits_unauth.args_max = SERVER_UNAUTH_ARGS_MAX;
    }
    if (s->limits_unauth.bulk_bytes_max > SERVER_UNAUTH_ARG_BYTES_MAX) {
        s->limits_unauth.bulk_bytes_max = SERVER_UNAUTH_ARG_BYTES_MAX;
    }
    if (s->limits_unauth.command_bytes_max > SERVER_UNAUTH_COMMAND_BYTES_MAX) {
        s->limits_unauth.command_bytes_max = SERVER_UNAUTH_COMMAND_BYTES_MAX;
    }
    if (s->limits_unauth.inline_bytes_max > s->limits_unauth.command_bytes_max) {
        s->limits_unauth.inline_bytes_max = s->limits_unauth.command_bytes_max;
    }
    s->argv = calloc(s->config.max_args, sizeof *s->argv);
    reply_init(&s->watch_resp2, 2);
    reply_init(&s->watch_resp3, 3);
    if (s->argv == NULL || batch_init(s) != 0) {
        fprintf(stderr, "berthd: ERR out of memory at start\n");
        return -1;
    }
    if (jobs_start(s) != 0) {
        fprintf(stderr, "berthd: ERR cannot start the background thread\n");
        return -1;
    }
    return 0;
}

static void berthd_signals(server *s) {
    ev_signal_init(&s->sigterm, berthd_signal_cb, SIGTERM);
    ev_signal_init(&s->sigint, berthd_signal_cb, SIGINT);
    s->sigterm.data = s;
    s->sigint.data = s;
    ev_signal_start(s->loop, &s->sigterm);
    ev_signal_start(s->loop, &s->sigint);
}

static void berthd_shutdown(server *s) {
    if (!s->stopping) {
        net_stop_listening(s);
    }
    if (!s->fatal) {
        batch_flush(s);
    }
    if (s->fatal) {
        batch_abandon(s);   /* also when the flush itself turned fatal */
    }
    net_refuse_parked(s);
    net_write_pending(s);
    jobs_stop(s);           /* answers the clients waiting for a job */
    net_drain_output(s);
    net_close_all(s);
    batch_free(s);
    replication_stop(s);
    berth_engine_close(s->engine);
    berthd_close_journal(s);
    replication_free(s);
    free(s->argv);
    free((void *)s->scratch);
    reply_free(&s->watch_resp2);
    reply_free(&s->watch_resp3);
    server_log("stopped cleanly%s", s->fatal ? " after a journal failure" : "");
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], JOBS_CHILD_FLAG) == 0) {
        return jobs_child_main(argc, argv);   /* a job's own process (jobs.c) */
    }
    static server s;
    char err[BERTHD_ERR_LEN_MAX] = "";
    config_defaults(&s.config);
    if (config_parse(&s.config, argc, argv, err, sizeof err) != 0) {
        fprintf(stderr, "berthd: %s\n", err);
        return BERTHD_EXIT_USAGE;
    }
    if (s.config.show_help) {
        config_usage();
        return 0;
    }
    if (s.config.show_version) {
        printf("berthd %s\n", BERTHD_VERSION);
        return 0;
    }
    if (config_check(&s.config, err, sizeof err) != 0) {
        fprintf(stderr, "berthd: %s\n", err);
        return BERTHD_EXIT_USAGE;
    }
    /* A start-up replay (or any read) that damaged LMDB pages crash says
     * so before the process dies; jobs read in children (jobs.c). */
    if (guard_last_words_install("berthd", s.config.data_dir) != 0) {
        fprintf(stderr, "berthd: ERR cannot install the signal handlers\n");
        return 1;
    }
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        fprintf(stderr, "berthd: ERR cannot ignore SIGPIPE\n");
        return 1;
    }
    berthd_fd_limit(&s.config);
    if (berthd_init(&s) != 0 || berthd_open(&s) != 0) {
        return 1;
    }
    s.started_at = ev_now(s.loop);
    if (net_listen(&s, err, sizeof err) != 0) {
        fprintf(stderr, "berthd: %s\n", err);
        jobs_stop(&s);
        berth_engine_close(s.engine);
        berthd_close_journal(&s);
        replication_free(&s);
        return 1;
    }
    net_start(&s);
    berthd_signals(&s);
    if (replication_start(&s, err, sizeof err) != 0) {
        fprintf(stderr, "berthd: %s\n", err);
        s.fatal = true;
        berthd_shutdown(&s);
        return 1;
    }
    char where[SERVER_BIND_LEN_MAX + SERVER_PATH_LEN_MAX + 32] = "";
    if (s.config.port != 0) {
        snprintf(where, sizeof where, "tcp %s:%u", s.config.bind, s.config.port);
    }
    if (s.config.unixsocket[0] != '\0') {
        size_t used = strlen(where);
        snprintf(where + used, sizeof where - used, "%sunix %s", used > 0 ? ", " : "",
                 s.config.unixsocket);
    }
    server_log("ready on %s; max %u clients; snapshot every %llu records%s", where,
               s.config.max_clients, (unsigned long long)s.config.snapshot_every,
               s.config.admin_password[0] != '\0' ? "; password required" : "");
    server_thread_short_slice();   /* the loop; after every other thread started */
    ev_run(s.loop, 0);
    berthd_shutdown(&s);
    return s.fatal ? 1 : 0;
}
