/* server.h — berthd's private shared structures (not a public header).
 *
 * Owns the shape of the server and of a client as the berthd source files
 * (networking, batch, watch, jobs, commands, query, config, berthd) see them.
 * One libev loop thread owns every field here except the job queue, which
 * the background thread shares under its mutex. Nothing here is used outside
 * tools/berthd. */
#ifndef BERTH_SERVER_H
#define BERTH_SERVER_H

#include <ev.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "engine.h"
#include "journal.h"
#include "berth_limits.h"
#include "names.h"
#include "reply.h"
#include "resp.h"
#include "state.h"

#define BERTHD_VERSION "0.1.0"
#define SERVER_PATH_LEN_MAX 4096            /* data dir, unix socket, config file */
#define SERVER_BIND_LEN_MAX 256
#define SERVER_PASSWORD_LEN_MAX 512
#define SERVER_LISTENERS_MAX 2              /* one TCP, one unix socket */
#define SERVER_BATCH_ENTRIES_MAX 4096       /* replies held for one group commit */
#define SERVER_READ_CHUNK_BYTES 16384       /* one read() per readable event */
#define SERVER_INPUT_CAP_INITIAL 4096
#define SERVER_INPUT_IDLE_CAP_MAX 65536     /* larger idle input buffers are given back */
#define SERVER_OUTPUT_IDLE_CAP_MAX 65536    /* larger drained output buffers are given back */
#define SERVER_COMMIT_ROUNDS_MAX 16         /* commit/resume rounds before the loop polls again */
#define SERVER_WATCH_CHUNK_RECORDS 256      /* records read per catch-up step */
#define SERVER_JOBS_MAX 64                  /* background jobs queued or running */
/* At a stop, the replies already buffered (acknowledged writes among them)
 * keep leaving while their client takes some within SERVER_STOP_STALL_MS,
 * for SERVER_STOP_DRAIN_MS at most; a client that takes none that long is
 * closed with its bytes left unsent, logged. */
#define SERVER_STOP_STALL_MS 2000
#define SERVER_STOP_DRAIN_MS 10000
/* A job's child killed (timeout, stop) is normally gone within
 * milliseconds; one in uninterruptible sleep (a read of a hung network
 * filesystem) goes only when that read does. The job thread waits this
 * long for it, then logs it and leaves it to the loop's reap timer, which
 * looks every SERVER_JOB_REAP_POLL_MS; past SERVER_JOBS_UNREAPED_MAX such
 * processes berthd starts no more job processes until some end. */
#define SERVER_JOB_REAP_WAIT_MS 2000
#define SERVER_JOB_REAP_POLL_MS 500
#define SERVER_JOBS_UNREAPED_MAX 16
/* --job-timeout: a 10M-record verify takes ~6 s in-process here and about
 * 35 s as berthd's job on a loaded machine (docs/server.md, "Audit"), so
 * 600 s leaves a wide margin for larger journals and slower disks while a
 * hung job's child still gives the one job slot back */
#define SERVER_JOB_TIMEOUT_S_DEFAULT 600
#define SERVER_JOB_TIMEOUT_S_MAX (86400u * 365u)   /* a year; 0 is no limit */
#define SERVER_LATENCY_BUCKETS 128          /* commit latency histogram */
#define SERVER_RANGE_COUNT_MAX 1000         /* records per JOURNAL.RANGE / HISTORY reply */
#define SERVER_HISTORY_COUNT_DEFAULT 100
/* Parser limits while a password is set and the connection has not logged
 * in: room for HELLO 3 AUTH <user> <pass> SETNAME <name> with a password of
 * the longest kind, and no more, so an unauthenticated client holds at most
 * a few KiB of input (redis-server caps them at 10 arguments and 16 KiB). */
#define SERVER_UNAUTH_ARGS_MAX 8
#define SERVER_UNAUTH_ARG_BYTES_MAX SERVER_PASSWORD_LEN_MAX
#define SERVER_UNAUTH_COMMAND_BYTES_MAX 4096
/* ...and its replies (refusals, mostly) stop being served past this many
 * unsent bytes, not half of --max-output-bytes (32 MiB by default). */
#define SERVER_UNAUTH_OUTPUT_BYTES_MAX 16384

typedef struct dlink {
    struct dlink *prev;
    struct dlink *next;
} dlink;

#define DLINK_OWNER(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

static inline void dlink_init(dlink *head) {
    head->prev = head->next = head;
}
static inline bool dlink_linked(const dlink *l) {
    return l->next != NULL && l->next != l;
}
static inline void dlink_push(dlink *head, dlink *l) {
    l->prev = head->prev;
    l->next = head;
    head->prev->next = l;
    head->prev = l;
}
/* Move every link of list `from` (a head) to the front of list `head`,
 * in order; from is left empty. */
static inline void dlink_splice_front(dlink *head, dlink *from) {
    if (from->next == from) {
        return;
    }
    from->prev->next = head->next;
    head->next->prev = from->prev;
    head->next = from->next;
    from->next->prev = head;
    dlink_init(from);
}
static inline void dlink_remove(dlink *l) {
    if (l->next == NULL) {
        return;
    }
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->prev = l->next = NULL;
}

typedef struct server_config {
    char data_dir[SERVER_PATH_LEN_MAX];
    char bind[SERVER_BIND_LEN_MAX];
    uint32_t port;                      /* 0: no TCP listener */
    char unixsocket[SERVER_PATH_LEN_MAX];
    char admin_password[SERVER_PASSWORD_LEN_MAX];
    char readonly_password[SERVER_PASSWORD_LEN_MAX];
    uint64_t snapshot_every;
    uint32_t max_clients;
    uint32_t max_args;
    uint32_t max_arg_bytes;
    uint32_t max_inline_bytes;
    uint32_t max_command_bytes;
    uint32_t max_pipeline;
    uint64_t max_output_bytes;
    uint32_t idle_timeout_s;            /* 0: never */
    uint32_t output_timeout_s;          /* output pending with no write progress; 0: never */
    uint32_t auth_timeout_s;            /* a password is set and no AUTH this long; 0: never */
    uint64_t map_size_max_mib;          /* 0: the journal's default */
    uint64_t map_size_initial_mib;      /* 0: the journal's default */
    uint32_t commit_gather_us;          /* wait for the rest of a write cohort; 0: never */
    uint32_t history_fold_records;      /* the LMDB journal's fold threshold (journal.h) */
    uint32_t job_timeout_s;             /* a job's child past it is killed (jobs.c); 0: never */
    char commit_log[8];                 /* "on" (default) or "off": batch.c, "The commit log" */
    char checkpoint_priority[16];       /* "background" (default) or "normal": batch.c,
                                           "The checkpointer's priority" */
    char commit_on_loop[8];             /* "auto" (default), "on" or "off": batch.c,
                                           "Committing on the loop" */
    uint32_t commit_on_loop_us;         /* auto: on the loop while frames average under it */
    uint64_t commit_log_mib;            /* DIR/commit.log's size when berthd creates it */
    bool show_help;
    bool show_version;
    /* issue 6: the journal on etcd (replication.c, docs/etcd.md) */
    char journal_kind[16];              /* "lmdb" (default) or "etcd" */
    char etcd_endpoints[SERVER_PATH_LEN_MAX];
    char cluster[SERVER_BIND_LEN_MAX];
    uint32_t etcd_lease_ttl_s;
    uint32_t etcd_timeout_ms;           /* every etcd request (--etcd-timeout-ms) */
    char advertise[SERVER_BIND_LEN_MAX];   /* host:port in the leader key; "": bind:port */
    char etcd_cacert[SERVER_PATH_LEN_MAX];
    char etcd_cert[SERVER_PATH_LEN_MAX];
    char etcd_key[SERVER_PATH_LEN_MAX];
    char etcd_user[SERVER_BIND_LEN_MAX];
    char etcd_password[SERVER_PASSWORD_LEN_MAX];
} server_config;

typedef enum client_role { ROLE_NONE = 0, ROLE_READONLY = 1, ROLE_ADMIN = 2 } client_role;

/* Why a client's next command waits, unread, instead of blocking the loop
 * (commands.c's ordering rule; networking.c resumes it). */
typedef enum client_park_why {
    PARK_NONE = 0,
    PARK_ORDER = 1,     /* until its own held replies are sent */
    PARK_DRAIN = 2,     /* a write while a read waits: until the state equals the
                           durable journal */
    PARK_READ = 3,      /* a read: the same */
    PARK_ROOM = 4,      /* a write that found the open batch full: until it is
                           handed to the committer */
    PARK_JOURNAL = 5,   /* a read of the journal itself (JOURNAL.*, HISTORY, AT,
                           WATCH, INSTANCE.GET): as PARK_READ, and until the
                           LMDB journal holds the durable head (a checkpoint of
                           the commit log) */
} client_park_why;

typedef struct client {
    uint64_t id;
    int fd;
    struct server *server;
    ev_io read_watcher;
    ev_io write_watcher;
    char *in;                           /* owned input buffer */
    size_t in_len;
    size_t in_cap;
    resp_resume parse_resume;           /* how far the partial command at in[0] was checked */
    reply_buf out;                      /* owned output buffer */
    char actor[BERTH_NAME_LEN_MAX];
    uint32_t actor_len;
    client_role role;
    char peer[64];                      /* for log lines */
    bool reading;                       /* read watcher started */
    bool writing;                       /* write watcher started */
    bool eof;                           /* peer closed its side */
    bool close_after_flush;
    const char *close_reason;           /* set: drop at the next write, log this (static text) */
    bool closed;                        /* fd closed; freed when no one refers to it */
    bool job_pending;                   /* a background job will answer next */
    bool watching;
    bool watch_live;                    /* caught up: gets each commit as it lands */
    uint64_t watch_wait_logged;         /* the seq it was logged waiting at, on a commit log no
                                           checkpoint can take (watch.c); 0: none */
    uint32_t batch_pending;             /* entries in the open batch */
    client_park_why parked;             /* its next command waits (PARK_NONE: no) */
    bool wants_room;                    /* batch_submit found the open batch full */
    bool drain_held;                    /* resumed from PARK_READ; still in drain_waiters
                                           until its command runs (client_drain_done) */
    bool drain_pass;                    /* resumed from PARK_DRAIN: its next command, a
                                           write, is staged though reads wait */
    uint64_t watch_next_seq;
    ev_tstamp last_active;
    ev_tstamp connected_at;             /* --auth-timeout counts from here */
    ev_tstamp write_progress_at;        /* write() last moved bytes */
    int out_unsent_seen;                /* the kernel's unacknowledged bytes at the last tick */
    ev_tstamp stall_since;              /* first tick that saw its output stuck; 0: none */
    dlink link_all;
    dlink link_write;                   /* output waiting for this iteration's write */
    dlink link_resume;                  /* input to process again after a commit */
    dlink link_watch;
    dlink link_park;                    /* on server.parked while parked */
} client;

typedef struct batch_entry {
    client *client;
    berth_submit_result result;
} batch_entry;

typedef struct server_stats {
    uint64_t connections_received;
    uint64_t connections_rejected;
    uint64_t accept_pauses;             /* accept failed for want of descriptors or memory */
    uint64_t commands_processed;
    uint64_t writes_staged;
    uint64_t commits;
    uint64_t commit_failures;
    uint64_t commit_syncs;              /* syncs with no commit, for an unsynced batch */
    uint64_t commits_on_loop;           /* of commits, written and synced on the loop's thread */
    uint64_t records_committed;
    uint64_t protocol_errors;
    uint64_t watch_disconnects;         /* WATCH clients berthd let go (stalled, journal unreadable) */
    uint64_t watch_catchups;            /* a commit past a live watcher's room: back to catch-up */
    uint64_t idle_disconnects;
    uint64_t output_limit_disconnects;
    uint64_t output_stall_disconnects;  /* --output-timeout */
    uint64_t jobs_run;
    uint64_t jobs_timed_out;            /* --job-timeout killed the job's child */
    uint64_t latency_us[SERVER_LATENCY_BUCKETS]; /* commit latency histogram counts */
} server_stats;

struct job;

typedef struct job_queue {
    pthread_t thread;
    bool started;
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    bool stop;                          /* under mutex */
    struct job *todo_head;              /* under mutex */
    struct job *todo_tail;
    struct job *done_head;              /* under mutex */
    pid_t child_pid;                    /* under mutex: the running job's child, 0 when none */
    bool child_killed;                  /* under mutex: jobs_stop killed that child */
    pid_t unreaped[SERVER_JOBS_UNREAPED_MAX];   /* under mutex: killed children not yet gone */
    uint64_t unreaped_killed_ms[SERVER_JOBS_UNREAPED_MAX];  /* monotonic, at the hand-over */
    uint32_t unreaped_count;            /* under mutex */
    ev_timer reap_timer;                /* loop thread: looks at unreaped[] while any */
    uint32_t outstanding;               /* loop thread only */
    ev_async async;
} job_queue;

typedef struct server {
    struct ev_loop *loop;
    server_config config;
    resp_limits limits;
    resp_limits limits_unauth;          /* before AUTH (SERVER_UNAUTH_*), never above limits */
    berth_journal *journal;
    berth_engine *engine;
    struct replication *replication;    /* replication.c; NULL on the LMDB journal */
    int listen_fds[SERVER_LISTENERS_MAX];
    ev_io listen_watchers[SERVER_LISTENERS_MAX];
    uint32_t listener_count;
    ev_timer accept_pause;              /* listeners stopped after accept ran out of descriptors */
    ev_tstamp accept_logged_at;         /* the last such pause logged; 0: none yet */
    bool unix_bound;                    /* unix_dev/unix_ino: the socket file berthd bound, */
    dev_t unix_dev;                     /* the only file at --unixsocket it removes at stop */
    ino_t unix_ino;
    ev_prepare prepare;
    ev_idle idle;
    ev_timer tick;
    ev_tstamp tick_prev;                /* the last tick's time (output progress) */
    ev_signal sigterm;
    ev_signal sigint;
    bool stopping;
    bool fatal;                         /* the engine became unusable */
    uint64_t next_client_id;
    uint32_t client_count;
    uint32_t watcher_count;
    dlink clients;
    dlink pending_writes;
    dlink resume;
    dlink watchers;
    dlink parked;                       /* clients whose next command waits, in park order */
    uint32_t drain_waiters;             /* of them PARK_DRAIN and PARK_READ, and the
                                           drain_held: new writes wait too */
    batch_entry *batch;                 /* SERVER_BATCH_ENTRIES_MAX entries, owned */
    uint32_t batch_count;
    batch_entry *inflight;              /* the batch the committer holds; same size, owned */
    uint32_t inflight_count;
    uint64_t inflight_last_seq;         /* its last record's seq */
    uint64_t inflight_t0_ns;            /* when it was handed off */
    batch_entry *unsynced;              /* committed, held until durable; same size, owned */
    uint32_t unsynced_count;
    uint64_t unsynced_last_seq;         /* its last record's seq */
    uint64_t unknown_last_seq;          /* last seq answered "outcome unknown"; 0: none */
    bool sync_probe;                    /* a commit hit an I/O error: sync before going on */
    uint64_t durable_head;              /* with pipe: the last seq known durable */
    struct pipe_journal *pipe;          /* batch.c's committer; NULL on etcd (synchronous) */
    struct berth_clog *clog;            /* the commit log (--commit-log on), owned; or NULL */
    bool checkpoint_background;         /* with clog: its checkpointer may run at SCHED_IDLE
                                           (--checkpoint-priority, and the probe allows) */
    berth_engine_options engine_options;   /* to reopen the engine after a failed commit */
    uint32_t last_batch_count;          /* the cohort expected in the next batch (gather) */
    uint64_t last_commit_us;            /* latency of the last commit */
    bool gathered;                      /* this batch is waiting (or waited) for its cohort */
    uint64_t gather_start_ns;           /* when it began to wait */
    berth_str *argv;                    /* limits.args_max words, owned */
    const void **scratch;               /* sorted listings, owned, grows */
    size_t scratch_cap;
    reply_buf watch_resp2;              /* one commit's records encoded once */
    reply_buf watch_resp3;
    bool watch_reader_failed;           /* catch-up could not open a reader: retry at the
                                           next tick, not on every turn of the loop */
    job_queue jobs;
    server_stats stats;
    ev_tstamp started_at;
    uint64_t start_records;
    uint64_t start_ms;
} server;

/* config.c */
void config_defaults(server_config *cfg);
/* Flags, with --config FILE read first so flags override it. Returns 0, or
 * -1 with err (usage errors). */
int config_parse(server_config *cfg, int argc, char **argv, char *err, size_t err_size);
int config_check(const server_config *cfg, char *err, size_t err_size);
void config_usage(void);

/* networking.c */
int net_listen(server *s, char *err, size_t err_size);
void net_stop_listening(server *s);
void net_start(server *s);                 /* watchers: prepare, idle, tick */
void client_close(client *c, const char *why);
void client_release(client *c);            /* drop a reference held by a batch or job */
void client_output_added(client *c);       /* queue c for this iteration's write */
void client_resume(client *c);             /* process c's buffered input after a commit */
/* Leave c's next command unparsed until why no longer holds (net_unpark). */
void client_park(client *c, client_park_why why);
/* c, resumed from a drain, reached its command (or cannot): writes need no
 * longer wait for it. */
void client_drain_done(client *c);
bool client_output_over(const client *c, size_t limit);
/* At shutdown, once the batches are answered: each parked client hears that
 * its waiting command was not run (after its earlier replies), never a bare
 * close. */
void net_refuse_parked(server *s);
void net_write_pending(server *s);
/* At shutdown, after the last replies are queued: write every client's
 * buffered output until it is gone, the client stalls or the drain's time
 * is up (SERVER_STOP_STALL_MS, SERVER_STOP_DRAIN_MS), with the loop no
 * longer running (no reads, no new WATCH frames), so a clean stop
 * does not cut a reply, an acknowledgement or a frame in half. */
void net_drain_output(server *s);
void net_close_all(server *s);
uint64_t now_ms_wall(void);
uint64_t now_ns_mono(void);
void server_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void server_thread_short_slice(void);   /* the calling thread: a short slice (networking.c) */
/* The thread tid (server_thread_id) to SCHED_IDLE (background) or back to
 * SCHED_OTHER; false where the scheduler refuses or has no SCHED_IDLE
 * (networking.c). */
bool server_thread_background(pid_t tid, bool background);
pid_t server_thread_id(void);   /* the calling thread's kernel id; 0 where none */
/* true when a thread of this process may go to SCHED_IDLE and come back
 * (CAP_SYS_NICE, or RLIMIT_NICE >= 20): tried on a thread of its own. */
bool server_thread_background_probe(void);

/* batch.c */
int batch_init(server *s);
void batch_free(server *s);
/* Stage one mutating command; its reply is held until the batch commits. */
void batch_submit(client *c, size_t argc, const berth_str *argv);
/* Commit the open batch and the one in flight (if any), wait until they
 * are durable (syncing if need be), and hand every held reply to its
 * client: afterwards the engine's state equals the durable journal. */
void batch_flush(server *s);
/* Shutdown after a fatal error: answer every uncommitted write -IOERR. */
void batch_abandon(server *s);
/* The LMDB road: start the committer thread over s->journal. Before the
 * engine opens; the engine then appends to batch_engine_journal(s). */
berth_jerr batch_start_pipe(server *s);
berth_journal *batch_engine_journal(server *s);
void batch_stop_pipe(server *s);             /* after the engine closed */
/* The last seq on disk: what clients may be shown. */
uint64_t batch_durable_head(const server *s);
/* The last seq the LMDB journal holds, never past the durable head: with
 * the commit log it trails it until a checkpoint; else it is the durable
 * head. What reads the journal (readers, WATCH catch-up) reads this far. */
uint64_t batch_journal_head(const server *s);
/* batch_state_durable, and the LMDB journal holds the durable head. */
bool batch_journal_current(const server *s);
/* A reader waits for the LMDB journal: ask the committer for a checkpoint. */
void batch_want_checkpoint(server *s);
/* True (and *err why) while checkpoints fail and the log is half full:
 * new writes are refused with that error. */
bool batch_writes_stuck(const server *s, berth_jerr *err);
/* With the commit log: the records of the batch in the committer's slot
 * when they are exactly first..last (hashes set), for WATCH's live frames;
 * NULL otherwise. Valid until the next hand-off. */
const berth_record *batch_slot_records(const server *s, uint64_t first, uint64_t last);
typedef struct batch_clog_stats {
    bool enabled;
    uint64_t checkpointed_seq;          /* the LMDB journal's head */
    uint64_t checkpoints;
    uint64_t checkpoints_sealed;        /* of them, by the checkpointer thread */
    uint64_t checkpoint_failures;
    uint64_t checkpoint_records;
    uint64_t used_bytes;                /* the log's current generation */
    uint64_t size_bytes;
    berth_jerr stuck;                   /* OK, or why writes are refused */
    bool background;                    /* the checkpointer may run at SCHED_IDLE */
    uint64_t boosts;                    /* urges: times something came to wait on it */
    uint64_t holder_raises;             /* raises: it held a lock another thread wanted */
    uint64_t background_runs;           /* checkpoints it began at SCHED_IDLE */
    const char *on_loop;                /* --commit-on-loop: "auto", "on" or "off" */
    uint64_t frame_us_avg;              /* a frame's write and sync, averaged */
} batch_clog_stats;
void batch_commit_log_stats(const server *s, batch_clog_stats *out);
/* Without blocking: answer a batch the committer finished, if any. */
void batch_reap(server *s);
/* Without blocking: answer a batch the committer finished, hand off the
 * open batch if the committer is free (the etcd road commits it now). */
void batch_step(server *s);
/* True when batch_step may write and sync a batch on the loop's thread
 * (--commit-on-loop, with the commit log): it then blocks for a sync. */
bool batch_commits_on_loop(const server *s);
/* True when the engine's state equals the durable journal: nothing staged,
 * in flight or waiting for its sync, so a read may be answered. */
bool batch_state_durable(const server *s);
/* True when batch_step would hand off or commit something now. */
bool batch_can_step(server *s);
/* Before the loop polls: true when the batch should wait a moment for the
 * rest of its cohort (the caller then polls without blocking). */
bool batch_gather(server *s);
/* batch_gather's test without its clock: false when it would surely not wait. */
bool batch_may_gather(server *s);
uint64_t latency_percentile_us(const server_stats *stats, double fraction);

/* watch.c */
void watch_start(client *c, uint64_t from_seq);
void watch_stop(client *c);
void watch_pump(server *s);                /* catch-up steps, paced by output buffers */
bool watch_ready(server *s);               /* a catch-up step could run now */
void watch_committed(server *s, uint64_t first_seq, uint64_t last_seq);
/* One record as a map (RESP3) or flat array (RESP2). */
void reply_record(reply_buf *rb, const berth_record *rec);

/* jobs.c */
/* In a sanitizer build a job runs in berthd run afresh as `berthd
 * --job-child DIR KIND SEQ PROTO PPID WORD…` (jobs.c): main hands such a
 * command line to jobs_child_main first thing; it returns the exit code. */
#define JOBS_CHILD_FLAG "--job-child"
int jobs_child_main(int argc, char **argv);
int jobs_start(server *s);
void jobs_stop(server *s);
/* Killed job processes not yet gone (INFO's background_job_processes_unreaped). */
uint32_t jobs_unreaped(server *s);
/* Queue JOURNAL.VERIFY or AT for c; c is blocked until the answer. */
bool jobs_submit_verify(client *c);
bool jobs_submit_at(client *c, uint64_t seq, size_t argc, const berth_str *argv);

/* query.c: answers over any state (the live one or an AT replay). */
typedef struct query_ctx {
    const berth_state *state;
    berth_journal_reader *reader;         /* may be NULL: the server opens one on demand */
    berth_journal *journal;
    const void ***scratch;                 /* sorted listings */
    size_t *scratch_cap;
} query_ctx;
typedef void (*query_fn)(const query_ctx *ctx, size_t argc, const berth_str *argv, reply_buf *rb);
/* The query named argv[0], or NULL. arity_out gets its Redis-style arity. */
query_fn query_lookup(berth_str name, int *arity_out);
void query_digest(const query_ctx *ctx, size_t argc, const berth_str *argv, reply_buf *rb);

/* replication.c: berthd on the etcd journal (issue 6) */
bool replication_configured(const server_config *cfg);
/* Open s->journal on etcd; a berth_jerr, with err. */
int replication_open(server *s, const berth_journal_options *jopt, char *err, size_t err_size);
void replication_engine_options(const server *s, berth_engine_options *eopt);
int replication_start(server *s, char *err, size_t err_size);   /* after the engine opens */
void replication_stop(server *s);                                /* before the journal closes */
void replication_free(server *s);                                /* after it closed */
/* Not the leader: answer -READONLY naming the leader and return true. */
bool replication_refuse_write(client *c);
size_t replication_info(server *s, char *buf, size_t size);  /* snprintf's: the length it needs */
bool replication_is_replica(server *s);  /* an etcd follower (or stopped): writes get READONLY */

/* commands.c */
/* Run one command; false when it must wait (the client is parked and the
 * command stays unread, to be parsed again when it resumes). */
bool commands_dispatch(client *c, size_t argc, const berth_str *argv);
/* Arity and name check shared with AT: -1 and an error reply when bad. */
bool commands_check_query_arity(reply_buf *rb, berth_str name, int arity, size_t argc);

#endif
