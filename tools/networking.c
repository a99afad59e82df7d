/* networking.c — berthd's sockets: listeners, clients, reads, writes, limits.
 *
 * Owns every client's lifetime and buffers, and the loop's per-iteration
 * rhythm: read callbacks parse and dispatch commands (writes are staged into
 * the open batch), then the prepare watcher — run by libev just before it
 * would block — collects a batch the committer thread made durable, hands
 * out its held replies, hands the open batch to the committer if it is free,
 * resumes clients that were waiting on a commit (parked ones among them:
 * a command behind held replies, or a read behind staged writes, waits
 * unread in its client's buffer, never on the loop), and writes each client's
 * output with one write(). A client is freed only when nothing refers to it: a batch
 * entry or a background job keeps a closed client's memory alive until the
 * commit or the job is done, so no reply is ever written into freed memory.
 * Also asks the scheduler for a short time slice for the threads a reply
 * waits on (server_thread_short_slice), and moves a thread to the
 * background priority and back (server_thread_background). */
#define _GNU_SOURCE     /* accept4 */
#include "server.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define NET_BACKLOG 511
#define NET_ACCEPTS_PER_EVENT_MAX 1000      /* fairness: new clients do not starve old ones */
#define NET_REJECT_LOG_EVERY 1000           /* log the first refusal and every 1000th */
#define NET_ACCEPT_PAUSE_S 0.1              /* listeners rest this long when accept has no fd */
#define NET_ACCEPT_LOG_EVERY_S 10.0         /* at most one log line per this, for those pauses */
#define NET_PROTOCOL_LOG_FIRST 100         /* then one line per NET_PROTOCOL_LOG_EVERY */
#define NET_PROTOCOL_LOG_EVERY 1000
#define NET_TICK_S 1.0
#define NET_BUFFERS_IDLE_S 2.0             /* idle clients give back their buffers after this */
#define NET_LOG_LINE_LEN_MAX 1024

uint64_t now_ms_wall(void) {
    struct timespec ts;
    int rc = clock_gettime(CLOCK_REALTIME, &ts);
    assert(rc == 0);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t now_ns_mono(void) {
    struct timespec ts;
    int rc = clock_gettime(CLOCK_MONOTONIC, &ts);
    assert(rc == 0);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Why: at 50 unpipelined connections the reply tail was CPU, not disk. A
 * slow commit (over 2 ms, about 1 in 50 on the 2-core bench machine) spent
 * 3 ms of its time runnable but not running: the committer, woken from its
 * fdatasync, waited behind whatever held the core for the default slice
 * (1.4 ms on that kernel) or two, and the loop likewise before it could
 * answer (docs/bench-server.md, "session 5"). Linux 6.12 and later let a
 * SCHED_OTHER thread ask for a shorter slice (sched_attr.sched_runtime,
 * 0.1 ms at the least), with no privilege: its share of the CPU stays the
 * same, it is only served sooner and in shorter turns, so a thread that
 * runs tens of µs per wake-up preempts on waking instead of queueing.
 * Older kernels ignore the field; elsewhere this does nothing. The policy
 * and the nice value are kept (sched_setattr would set both). */
#define SERVER_SLICE_US 100
void server_thread_short_slice(void) {
#if defined(__linux__) && defined(SYS_sched_setattr)
    struct {                        /* struct sched_attr, SCHED_ATTR_SIZE_VER0 */
        uint32_t size;
        uint32_t policy;
        uint64_t flags;
        int32_t nice;
        uint32_t priority;
        uint64_t runtime_ns;
        uint64_t deadline_ns;
        uint64_t period_ns;
    } attr;
    _Static_assert(sizeof attr == 48, "sched_attr, first version");
    memset(&attr, 0, sizeof attr);
    attr.size = sizeof attr;
    attr.flags = 0x08;              /* SCHED_FLAG_KEEP_POLICY: SCHED_BATCH stays, RT refuses */
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, 0);   /* the calling thread's */
    if (errno != 0) {
        return;
    }
    attr.nice = nice;
    attr.runtime_ns = (uint64_t)SERVER_SLICE_US * 1000u;
    (void)syscall(SYS_sched_setattr, 0, &attr, 0);   /* best effort: a hint, never a need */
#endif
}

/* Why a background priority, and why it must be reversible: see batch.c,
 * "The checkpointer's priority". SCHED_IDLE runs a thread only on a core no
 * other thread wants, and yields that core at once to any thread that
 * wakes. Any thread may lower itself there; coming back to SCHED_OTHER
 * takes CAP_SYS_NICE or an RLIMIT_NICE of at least 20 (the kernel counts
 * SCHED_IDLE as nice 20), and a thread stuck there would starve whenever
 * the cores are busy. So a probe thread tries the round trip first, and
 * only where it comes back does berthd send its checkpointer down. */
bool server_thread_background(pid_t tid, bool background) {
#if defined(__linux__) && defined(SCHED_IDLE)
    /* The system call on the thread's id, not pthread_setschedparam: glibc
     * holds the target's descriptor lock across that call, so a thread that
     * lowered itself and was preempted before letting go would hold up
     * every raise meant for it. */
    struct sched_param param;
    memset(&param, 0, sizeof param);
    return sched_setscheduler(tid, background ? SCHED_IDLE : SCHED_OTHER, &param) == 0;
#else
    (void)tid;
    (void)background;
    return false;
#endif
}

pid_t server_thread_id(void) {
#if defined(__linux__) && defined(SYS_gettid)
    return (pid_t)syscall(SYS_gettid);
#else
    return 0;
#endif
}

static void *background_probe_thread(void *arg) {
    bool *ok = arg;
    pid_t self = server_thread_id();
    *ok = self != 0 && server_thread_background(self, true) &&
          server_thread_background(self, false);
    return NULL;   /* left at SCHED_IDLE if the way back failed: it ends here */
}

bool server_thread_background_probe(void) {
    bool ok = false;
    pthread_t probe;
    if (pthread_create(&probe, NULL, background_probe_thread, &ok) != 0) {
        return false;
    }
    int rc = pthread_join(probe, NULL);
    assert(rc == 0);
    (void)rc;
    return ok;
}

void server_log(const char *fmt, ...) {
    char line[NET_LOG_LINE_LEN_MAX];
    struct timespec ts;
    int rc = clock_gettime(CLOCK_REALTIME, &ts);
    assert(rc == 0);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    int m = snprintf(line + n, sizeof line - n, ".%03ldZ berthd[%d] ", ts.tv_nsec / 1000000L,
                     (int)getpid());
    assert(m > 0);
    n += (size_t)m;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(line + n, sizeof line - n, fmt, ap);
    va_end(ap);
    assert(k >= 0);
    fprintf(stderr, "%s\n", line);
}

/* A client that has not logged in (a password is set) is parsed with
 * tight limits, so one that never authenticates can hold a few KiB of
 * input, not --max-command-bytes: the role is checked only once a whole
 * command has been parsed. */
static bool client_unauth(const client *c) {
    return c->role == ROLE_NONE;
}

static const resp_limits *client_limits(const client *c) {
    return client_unauth(c) ? &c->server->limits_unauth : &c->server->limits;
}

static size_t net_input_max(const client *c) {
    return (size_t)client_limits(c)->command_bytes_max + SERVER_READ_CHUNK_BYTES;
}

/* ---- lifetime ---------------------------------------------------------- */

static void client_free(client *c) {
    assert(c->closed && c->batch_pending == 0 && !c->job_pending);
    free(c->in);
    reply_free(&c->out);
    free(c);
}

void client_release(client *c) {
    if (c->closed && c->batch_pending == 0 && !c->job_pending) {
        client_free(c);
    }
}

static void client_unpark(client *c) {
    if (c->parked == PARK_NONE) {
        return;
    }
    server *s = c->server;
    dlink_remove(&c->link_park);
    if (c->parked == PARK_DRAIN || c->parked == PARK_READ || c->parked == PARK_JOURNAL) {
        assert(s->drain_waiters > 0);
        s->drain_waiters--;
    }
    c->parked = PARK_NONE;
}

void client_drain_done(client *c) {
    if (c->drain_held) {
        assert(c->server->drain_waiters > 0);
        c->server->drain_waiters--;
        c->drain_held = false;
    }
}

void client_close(client *c, const char *why) {
    if (c->closed) {
        return;
    }
    server *s = c->server;
    if (why != NULL) {
        server_log("client id=%llu %s closed: %s", (unsigned long long)c->id, c->peer, why);
    }
    ev_io_stop(s->loop, &c->read_watcher);
    ev_io_stop(s->loop, &c->write_watcher);
    c->reading = c->writing = false;
    int rc = close(c->fd);
    assert(rc == 0 || errno == EINTR || errno == ECONNRESET);
    c->fd = -1;
    dlink_remove(&c->link_all);
    dlink_remove(&c->link_write);
    dlink_remove(&c->link_resume);
    client_unpark(c);
    client_drain_done(c);
    if (c->watching) {
        watch_stop(c);
    }
    assert(s->client_count > 0);
    s->client_count--;
    c->closed = true;
    client_release(c);
}

static void client_set_reading(client *c, bool on) {
    if (c->closed || on == c->reading) {
        return;
    }
    if (on) {
        ev_io_start(c->server->loop, &c->read_watcher);
    } else {
        ev_io_stop(c->server->loop, &c->read_watcher);
    }
    c->reading = on;
}

void client_output_added(client *c) {
    if (!c->closed && c->link_write.next == NULL) {
        dlink_push(&c->server->pending_writes, &c->link_write);
    }
}

void client_resume(client *c) {
    if (!c->closed && c->link_resume.next == NULL) {
        dlink_push(&c->server->resume, &c->link_resume);
    }
}

void client_park(client *c, client_park_why why) {
    server *s = c->server;
    assert(!c->closed && c->parked == PARK_NONE && why != PARK_NONE);
    c->parked = why;
    if (why == PARK_DRAIN || why == PARK_READ || why == PARK_JOURNAL) {
        s->drain_waiters++;
    }
    dlink_push(&s->parked, &c->link_park);
}

/* Resume, in park order, every parked client whose reason is gone; each
 * parses its command again (and may park again: a reader behind a write
 * another resumed client staged first). After a fatal error every reason is
 * gone: the writes still staged in the engine will never become durable,
 * and each waiting command is answered with -IOERR (commands_dispatch).
 *
 * The clients resumed from a drain go ahead of every other resumed client
 * (writers batch_release resumed among them): its readers first, then its
 * writers. A reader keeps counting in drain_waiters until its command runs
 * (a writer does not, or two resumed writers would park each other again
 * forever): otherwise a writer pipelining "write; PING" would stage its
 * next write first, the reader would find writes staged and park again,
 * every sync, until the writer's pipeline ran dry. So a parked read runs
 * within one or two syncs. A writer resumed from a drain gets a pass for
 * that write (drain_pass): a reader that ran first may have staged a write
 * of its own and parked on its next read, and without the pass the writer
 * would park behind it again, every sync, until the reader's pipeline ran
 * dry. Every client waiting on a drain thus moves one command a sync. */
static void net_unpark(server *s) {
    bool durable = s->parked.next != &s->parked && (s->fatal || batch_state_durable(s));
    /* A read of the journal also waits for LMDB to hold the durable head
     * (the commit log's checkpoint, batch.c), asked for again while it waits. */
    berth_jerr stuck = BERTH_J_OK;
    bool current = durable && (s->fatal || batch_journal_current(s) ||
                               batch_writes_stuck(s, &stuck));   /* see commands_dispatch */
    bool journal_waits = false;
    /* Writers held back for such a read stay back until it runs: otherwise
     * each checkpoint would find a newer batch durable and the read would
     * wait for ever. */
    bool journal_parked = false;
    for (dlink *j = s->parked.next; j != &s->parked && !journal_parked; j = j->next) {
        journal_parked = DLINK_OWNER(j, client, link_park)->parked == PARK_JOURNAL;
    }
    dlink first;                    /* readers resumed from the drain */
    dlink_init(&first);
    dlink writers;                  /* then its writers */
    dlink_init(&writers);
    dlink *l = s->parked.next;
    while (l != &s->parked) {
        client *c = DLINK_OWNER(l, client, link_park);
        l = l->next;
        bool go = durable;
        if (c->parked == PARK_ORDER) {
            go = c->batch_pending == 0 || s->fatal;
        } else if (c->parked == PARK_ROOM) {
            go = s->batch_count == 0 || s->fatal;   /* the full batch was handed off */
        } else if (c->parked == PARK_JOURNAL) {
            go = current;
            journal_waits = journal_waits || !go;
        } else if (c->parked == PARK_DRAIN) {
            go = durable && (current || !journal_parked);
        }
        if (!go) {
            continue;
        }
        if (c->parked == PARK_READ || c->parked == PARK_JOURNAL) {
            assert(!c->drain_held);
            dlink_remove(&c->link_park);
            c->parked = PARK_NONE;
            c->drain_held = true;           /* drain_waiters keeps counting it */
            dlink_remove(&c->link_resume);  /* batch_release may have queued it */
            dlink_push(&first, &c->link_resume);
        } else if (c->parked == PARK_DRAIN) {
            client_unpark(c);               /* a writer holds no other writer back */
            c->drain_pass = true;
            dlink_remove(&c->link_resume);
            dlink_push(&writers, &c->link_resume);
        } else {
            client_unpark(c);
            client_resume(c);
        }
    }
    if (journal_waits) {
        batch_want_checkpoint(s);
    }
    dlink_splice_front(&s->resume, &writers);
    dlink_splice_front(&s->resume, &first);
}

void net_refuse_parked(server *s) {
    while (s->parked.next != &s->parked) {
        client *c = DLINK_OWNER(s->parked.next, client, link_park);
        assert(!c->closed && c->batch_pending == 0);
        client_unpark(c);
        reply_error(&c->out, "ERR", "berthd is stopping: this command waited behind a commit "
                                    "and was not run; retry it after the restart");
        client_output_added(c);
        c->in_len = 0;      /* nothing after it runs either */
        c->parse_resume = (resp_resume){ 0, 0 };
    }
}

bool client_output_over(const client *c, size_t limit) {
    return reply_pending(&c->out) > limit;
}

/* ---- input ------------------------------------------------------------- */

/* Unsent output past which c is not served until it reads its replies. */
static size_t client_output_pause_bytes(const client *c) {
    return client_unauth(c) ? SERVER_UNAUTH_OUTPUT_BYTES_MAX
                            : (size_t)(c->server->config.max_output_bytes / 2);
}

static bool client_paused(client *c) {
    server *s = c->server;
    if (c->closed || c->close_after_flush || c->close_reason != NULL || c->job_pending ||
        c->parked != PARK_NONE) {
        return true;
    }
    if (c->batch_pending >= s->config.max_pipeline) {
        return true;        /* batch_release resumes it when its replies go */
    }
    /* Backpressure: a client that does not read its replies stops being
     * served until it does (the write callback resumes it). */
    return client_output_over(c, client_output_pause_bytes(c));
}

static void client_protocol_error(client *c, const char *error) {
    server *s = c->server;
    s->stats.protocol_errors++;
    assert(c->batch_pending == 0);
    char text[RESP_ERROR_LEN_MAX + 128];
    if (client_unauth(c)) {
        const resp_limits *l = &s->limits_unauth;
        snprintf(text, sizeof text, "%s (before AUTH: %u arguments, %u bytes each, %u bytes a command)",
                 error, l->args_max, l->bulk_bytes_max, l->command_bytes_max);
        error = text;
    }
    reply_error(&c->out, "ERR", "%s", error);
    c->close_after_flush = true;
    client_output_added(c);
    /* A flood of hostile connections must not become a flood of log lines. */
    uint64_t n = s->stats.protocol_errors;
    if (n <= NET_PROTOCOL_LOG_FIRST || n % NET_PROTOCOL_LOG_EVERY == 0) {
        server_log("client id=%llu %s: %s; closing (%llu protocol errors so far)",
                   (unsigned long long)c->id, c->peer, error, (unsigned long long)n);
    }
}

static void client_process_input(client *c) {
    server *s = c->server;
    size_t pos = 0;
    resp_result res;
    while (pos < c->in_len && !client_paused(c)) {
        /* A partial command is checked once: the next read goes on from
         * where this one stopped (resp.h), so trickling it costs no more
         * than sending it whole. */
        resp_status st = resp_parse_resume(c->in + pos, c->in_len - pos, client_limits(c), s->argv,
                                           s->limits.args_max, &c->parse_resume, &res);
        if (st == RESP_NEED_MORE) {
            break;
        }
        if (st == RESP_ERROR && c->batch_pending > 0) {
            /* Like any reply that is not a staged write, the error waits
             * for this client's held replies, or it would pair -ERR with a
             * write that was applied: parse it again once they are sent. */
            if (s->pipe != NULL && !s->fatal) {
                client_park(c, PARK_ORDER);
                break;
            }
            batch_flush(s);
            assert(c->batch_pending == 0);   /* a flush that turned fatal answered them too */
        }
        if (st == RESP_ERROR) {
            client_protocol_error(c, res.error);
            pos = c->in_len;
            break;
        }
        assert(res.consumed > 0 && pos + res.consumed <= c->in_len);
        if (res.argc > 0) {
            s->stats.commands_processed++;   /* before: INFO counts itself */
            if (!commands_dispatch(c, res.argc, s->argv)) {
                s->stats.commands_processed--;
                break;      /* parked: the command stays in the buffer */
            }
        }
        pos += res.consumed;
    }
    if (c->closed) {
        return;
    }
    client_drain_done(c);   /* paused before its command ran: writes wait no more */
    if (pos > 0) {
        memmove(c->in, c->in + pos, c->in_len - pos);
        c->in_len -= pos;
    }
    if (c->in_len == 0 && c->in_cap > SERVER_INPUT_IDLE_CAP_MAX) {
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
    client_set_reading(c, !c->eof && !c->close_after_flush && c->in_len < net_input_max(c));
    if (c->eof || c->close_after_flush || reply_pending(&c->out) > 0) {
        client_output_added(c);     /* the write path decides whether to close */
    }
}

static bool client_grow_input(client *c) {
    size_t max = net_input_max(c);
    if (c->in_cap - c->in_len >= SERVER_READ_CHUNK_BYTES || c->in_cap >= max) {
        return c->in_cap > c->in_len;
    }
    size_t cap = c->in_cap == 0 ? SERVER_INPUT_CAP_INITIAL : c->in_cap;
    while (cap - c->in_len < SERVER_READ_CHUNK_BYTES && cap < max) {
        cap = cap * 2 > max ? max : cap * 2;
    }
    char *in = realloc(c->in, cap);
    if (in == NULL) {
        return false;
    }
    c->in = in;
    c->in_cap = cap;
    return true;
}

static void client_read_cb(struct ev_loop *loop, ev_io *w, int revents) {
    client *c = w->data;
    assert(!c->closed && (revents & EV_READ));
    if (!client_grow_input(c)) {
        client_set_reading(c, false);
        if (c->in_cap == 0) {
            client_close(c, "out of memory for its input buffer");
        }
        return;
    }
    size_t room = c->in_cap - c->in_len;
    ssize_t n = read(c->fd, c->in + c->in_len, room);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            return;
        }
        client_close(c, errno == ECONNRESET ? NULL : strerror(errno));
        return;
    }
    c->last_active = ev_now(loop);
    if (n == 0) {
        c->eof = true;
        client_set_reading(c, false);
    }
    c->in_len += (size_t)n;
    client_process_input(c);
}

/* ---- output ------------------------------------------------------------ */

static bool client_done(const client *c) {
    if (c->batch_pending > 0 || c->job_pending || c->link_resume.next != NULL ||
        c->parked != PARK_NONE) {
        return false;
    }
    return c->close_after_flush || c->eof;
}

static void client_write(client *c) {
    server *s = c->server;
    if (c->close_reason != NULL) {
        client_close(c, c->close_reason);
        return;
    }
    if (c->out.failed) {
        client_close(c, "out of memory for its output buffer");
        return;
    }
    bool was_over = client_output_over(c, client_output_pause_bytes(c));
    while (reply_pending(&c->out) > 0) {
        ssize_t n = write(c->fd, c->out.data + c->out.start, reply_pending(&c->out));
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            }
            if (errno == EINTR) {
                continue;
            }
            client_close(c, errno == EPIPE || errno == ECONNRESET ? NULL : strerror(errno));
            return;
        }
        reply_consumed(&c->out, (size_t)n);
        c->write_progress_at = ev_now(s->loop);
    }
    bool drained = reply_pending(&c->out) == 0;
    if (drained != !c->writing) {
        if (drained) {
            ev_io_stop(s->loop, &c->write_watcher);
        } else {
            ev_io_start(s->loop, &c->write_watcher);
        }
        c->writing = !drained;
    }
    if (was_over && !client_output_over(c, client_output_pause_bytes(c))) {
        client_resume(c);
    }
    if (drained) {
        reply_shrink(&c->out, SERVER_OUTPUT_IDLE_CAP_MAX);
        if (client_done(c)) {
            client_close(c, NULL);
        }
    }
}

static void client_write_cb(struct ev_loop *loop, ev_io *w, int revents) {
    client *c = w->data;
    assert(!c->closed && (revents & EV_WRITE));
    client_write(c);
}

void net_write_pending(server *s) {
    while (s->pending_writes.next != &s->pending_writes) {
        dlink *l = s->pending_writes.next;
        dlink_remove(l);
        client *c = DLINK_OWNER(l, client, link_write);
        client_write(c);
    }
}

/* ---- accept ------------------------------------------------------------ */

static void client_peer_name(client *c, const struct sockaddr_storage *ss, socklen_t len) {
    if (ss->ss_family == AF_UNIX || len == 0) {
        snprintf(c->peer, sizeof c->peer, "unix");
        return;
    }
    char host[INET6_ADDRSTRLEN];
    uint16_t port = 0;
    const void *addr = NULL;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        addr = &in->sin_addr;
        port = ntohs(in->sin_port);
    } else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        addr = &in6->sin6_addr;
        port = ntohs(in6->sin6_port);
    }
    if (inet_ntop(ss->ss_family, addr, host, sizeof host) == NULL) {
        snprintf(host, sizeof host, "?");
    }
    snprintf(c->peer, sizeof c->peer, "%s:%u", host, (unsigned)port);
}

static void client_new(server *s, int fd, const struct sockaddr_storage *ss, socklen_t len) {
    client *c = calloc(1, sizeof *c);
    if (c == NULL) {
        server_log("out of memory for a new client; closing its connection");
        int rc = close(fd);
        assert(rc == 0 || errno == EINTR);
        return;
    }
    c->server = s;
    c->fd = fd;
    c->id = ++s->next_client_id;
    c->role = s->config.admin_password[0] != '\0' ? ROLE_NONE : ROLE_ADMIN;
    reply_init(&c->out, 2);
    client_peer_name(c, ss, len);
    if (ss->ss_family != AF_UNIX) {
        int one = 1;
        if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
            server_log("client id=%llu: TCP_NODELAY: %s", (unsigned long long)c->id, strerror(errno));
        }
    }
    ev_io_init(&c->read_watcher, client_read_cb, fd, EV_READ);
    ev_io_init(&c->write_watcher, client_write_cb, fd, EV_WRITE);
    c->read_watcher.data = c;
    c->write_watcher.data = c;
    c->last_active = ev_now(s->loop);
    c->connected_at = c->last_active;
    dlink_push(&s->clients, &c->link_all);
    s->client_count++;
    s->stats.connections_received++;
    client_set_reading(c, true);
}

static void net_reject(server *s, int fd) {
    static const char msg[] = "-ERR max number of clients reached\r\n";
    ssize_t n = write(fd, msg, sizeof msg - 1);
    (void)n;    /* best effort: the connection is being refused anyway */
    int rc = close(fd);
    assert(rc == 0 || errno == EINTR);
    if (s->stats.connections_rejected % NET_REJECT_LOG_EVERY == 0) {
        server_log("refused a connection: max clients (%u) reached; %llu refused so far",
                   s->config.max_clients, (unsigned long long)s->stats.connections_rejected + 1);
    }
    s->stats.connections_rejected++;
}

static void net_listeners_set(server *s, bool on) {
    for (uint32_t i = 0; i < s->listener_count; i++) {
        if (on) {
            ev_io_start(s->loop, &s->listen_watchers[i]);
        } else {
            ev_io_stop(s->loop, &s->listen_watchers[i]);
        }
    }
}

static void net_accept_resume_cb(struct ev_loop *loop, ev_timer *w, int revents) {
    server *s = w->data;
    assert(revents & EV_TIMER);
    if (!s->stopping) {
        net_listeners_set(s, true);
    }
    (void)loop;
}

/* Out of descriptors (or kernel memory), accept leaves the connection
 * queued, so a level-triggered listener would fire again at once: a core
 * spinning and a log line per turn for as long as the shortage lasts. The
 * listeners rest instead, and the line is written once per
 * NET_ACCEPT_LOG_EVERY_S with the count; the queued connections wait in
 * the backlog and are accepted once descriptors are free again. */
static void net_accept_pause(server *s, int err) {
    net_listeners_set(s, false);
    ev_timer_stop(s->loop, &s->accept_pause);
    ev_timer_set(&s->accept_pause, NET_ACCEPT_PAUSE_S, 0.);
    ev_timer_start(s->loop, &s->accept_pause);
    s->stats.accept_pauses++;
    ev_tstamp now = ev_now(s->loop);
    if (s->accept_logged_at == 0 || now - s->accept_logged_at >= NET_ACCEPT_LOG_EVERY_S) {
        s->accept_logged_at = now;
        server_log("accept: %s: not accepting for %.0f ms at a time (%llu pauses so far; "
                   "INFO stats accept_pauses)",
                   strerror(err), NET_ACCEPT_PAUSE_S * 1000, (unsigned long long)s->stats.accept_pauses);
    }
}

static void net_accept_cb(struct ev_loop *loop, ev_io *w, int revents) {
    server *s = w->data;
    assert(revents & EV_READ);
    for (uint32_t i = 0; i < NET_ACCEPTS_PER_EVENT_MAX; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(w->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            if (err == EMFILE || err == ENFILE || err == ENOMEM || err == ENOBUFS) {
                net_accept_pause(s, err);
            } else if (err != EAGAIN && err != EWOULDBLOCK && err != EINTR && err != ECONNABORTED) {
                server_log("accept: %s", strerror(err));
            }
            return;
        }
        if (s->client_count >= s->config.max_clients || s->stopping) {
            net_reject(s, fd);
            continue;
        }
        client_new(s, fd, &ss, len);
    }
    (void)loop;
}

static int net_listen_tcp(server *s, char *err, size_t err_size) {
    char port[16];
    snprintf(port, sizeof port, "%u", s->config.port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(s->config.bind, port, &hints, &ai);
    if (rc != 0) {
        snprintf(err, err_size, "ERR cannot resolve --bind %s: %s", s->config.bind, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, NET_BACKLOG) != 0) {
        snprintf(err, err_size, "ERR cannot listen on %s:%u: %s", s->config.bind, s->config.port,
                 strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    return fd;
}

/* What is at the --unixsocket path before the bind. Nothing: fine. A
 * socket nobody accepts on (connect refused): the stale file of an earlier
 * run, removed. A socket something accepts on, even another berthd on
 * another data directory (the LOCK guards only its own), or anything not a
 * socket (a mistyped path naming a file): refused, never removed. */
static int net_unix_clear(const char *path, const struct sockaddr_un *sun, char *err,
                          size_t err_size) {
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT) {
            return 0;
        }
        snprintf(err, err_size, "ERR --unixsocket %s: cannot stat it: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, err_size, "ERR --unixsocket %s exists and is not a socket; berthd removes only "
                                "a stale socket there: choose another path or remove it",
                 path);
        return -1;
    }
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (probe < 0) {
        snprintf(err, err_size, "ERR --unixsocket %s: socket: %s", path, strerror(errno));
        return -1;
    }
    int rc = connect(probe, (const struct sockaddr *)sun, sizeof *sun);
    int probe_errno = errno;
    int closed = close(probe);
    assert(closed == 0 || errno == EINTR);
    if (rc == 0 || probe_errno == EAGAIN) {     /* accepted, or a full backlog: alive */
        snprintf(err, err_size, "ERR --unixsocket %s is in use: a process accepts connections on it "
                                "(another berthd?)",
                 path);
        return -1;
    }
    if (probe_errno != ECONNREFUSED) {
        snprintf(err, err_size, "ERR --unixsocket %s: cannot tell whether the socket there is stale "
                                "(connect: %s); not removing it",
                 path, strerror(probe_errno));
        return -1;
    }
    if (unlink(path) != 0 && errno != ENOENT) {
        snprintf(err, err_size, "ERR --unixsocket %s: cannot remove the stale socket: %s", path,
                 strerror(errno));
        return -1;
    }
    return 0;
}

static int net_listen_unix(server *s, char *err, size_t err_size) {
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    if (strlen(s->config.unixsocket) >= sizeof sun.sun_path) {
        snprintf(err, err_size, "ERR --unixsocket path longer than %zu bytes", sizeof sun.sun_path - 1);
        return -1;
    }
    memcpy(sun.sun_path, s->config.unixsocket, strlen(s->config.unixsocket) + 1);
    if (net_unix_clear(s->config.unixsocket, &sun, err, err_size) != 0) {
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof sun) != 0 || listen(fd, NET_BACKLOG) != 0) {
        snprintf(err, err_size, "ERR cannot listen on --unixsocket %s: %s", s->config.unixsocket,
                 strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    struct stat st;
    if (lstat(s->config.unixsocket, &st) == 0 && S_ISSOCK(st.st_mode)) {
        s->unix_bound = true;
        s->unix_dev = st.st_dev;
        s->unix_ino = st.st_ino;
    }
    return fd;
}

static void net_add_listener(server *s, int fd) {
    assert(s->listener_count < SERVER_LISTENERS_MAX);
    uint32_t i = s->listener_count++;
    s->listen_fds[i] = fd;
    ev_io_init(&s->listen_watchers[i], net_accept_cb, fd, EV_READ);
    s->listen_watchers[i].data = s;
    ev_io_start(s->loop, &s->listen_watchers[i]);
}

int net_listen(server *s, char *err, size_t err_size) {
    ev_timer_init(&s->accept_pause, net_accept_resume_cb, NET_ACCEPT_PAUSE_S, 0.);
    s->accept_pause.data = s;
    /* The unix socket first: when its path is refused, no TCP listener
     * has yet taken a connection that would then be dropped. */
    if (s->config.unixsocket[0] != '\0') {
        int fd = net_listen_unix(s, err, err_size);
        if (fd < 0) {
            return -1;
        }
        net_add_listener(s, fd);
    }
    if (s->config.port != 0) {
        int fd = net_listen_tcp(s, err, err_size);
        if (fd < 0) {
            net_stop_listening(s);      /* closes and removes the unix socket bound above */
            return -1;
        }
        net_add_listener(s, fd);
    }
    assert(s->listener_count > 0);
    return 0;
}

void net_stop_listening(server *s) {
    ev_timer_stop(s->loop, &s->accept_pause);
    for (uint32_t i = 0; i < s->listener_count; i++) {
        ev_io_stop(s->loop, &s->listen_watchers[i]);
        int rc = close(s->listen_fds[i]);
        assert(rc == 0 || errno == EINTR);
    }
    s->listener_count = 0;
    if (!s->unix_bound) {
        return;
    }
    s->unix_bound = false;
    /* Only the file berthd bound: if it was removed and the path reused
     * (another server's socket, anything), that is not ours to delete. */
    struct stat st;
    if (lstat(s->config.unixsocket, &st) != 0) {
        if (errno != ENOENT) {
            server_log("not removing --unixsocket %s: cannot stat it: %s", s->config.unixsocket,
                       strerror(errno));
        }
        return;
    }
    if (!S_ISSOCK(st.st_mode) || st.st_dev != s->unix_dev || st.st_ino != s->unix_ino) {
        server_log("not removing --unixsocket %s: it is no longer the socket berthd bound",
                   s->config.unixsocket);
        return;
    }
    if (unlink(s->config.unixsocket) != 0 && errno != ENOENT) {
        server_log("cannot remove --unixsocket %s: %s", s->config.unixsocket, strerror(errno));
    }
}

/* ---- the loop's rhythm ------------------------------------------------- */

static void net_prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents) {
    server *s = w->data;
    batch_reap(s);                       /* replies of a commit the committer finished */
    bool on_loop = batch_commits_on_loop(s);
    if (s->pipe != NULL && !batch_may_gather(s)) {
        /* Hand the open batch to the committer before the replies are
         * written: its disk work then overlaps their write()s. (On the etcd
         * road batch_step commits in place, a network round trip, and a
         * batch written on the loop blocks it for a sync: there the replies
         * go first.) */
        if (on_loop) {
            net_write_pending(s);
        }
        batch_step(s);
    }
    net_write_pending(s);
    if (batch_gather(s)) {
        ev_idle_start(loop, &s->idle);   /* read the cohort without blocking, then commit */
        return;
    }
    for (uint32_t round = 0; round < SERVER_COMMIT_ROUNDS_MAX; round++) {
        if (round > 0 && on_loop) {
            net_write_pending(s);   /* the last round's replies wait behind no sync */
        }
        batch_step(s);
        net_unpark(s);
        if (s->resume.next == &s->resume) {
            break;
        }
        /* Detach the list first: processing may re-queue a client. */
        dlink pending;
        dlink_init(&pending);
        pending.next = s->resume.next;
        pending.prev = s->resume.prev;
        pending.next->prev = &pending;
        pending.prev->next = &pending;
        dlink_init(&s->resume);
        while (pending.next != &pending) {
            dlink *l = pending.next;
            dlink_remove(l);
            client_process_input(DLINK_OWNER(l, client, link_resume));
        }
    }
    watch_pump(s);
    net_write_pending(s);
    /* Decided after the writes: a write that drained a paused client's
     * output queues it for resumption, and nothing else would wake us. A
     * batch waiting for a busy committer does not spin the loop: the
     * committer's ev_async wakes it. A watcher whose catch-up step was
     * written out whole to the kernel waits on no readiness: it is work. */
    bool busy = batch_can_step(s) || s->resume.next != &s->resume || watch_ready(s);
    if (busy) {
        ev_idle_start(loop, &s->idle);   /* poll without blocking: work is waiting */
    } else {
        ev_idle_stop(loop, &s->idle);
    }
    (void)revents;
}

static void net_idle_cb(struct ev_loop *loop, ev_idle *w, int revents) {
    /* Nothing: an active idle watcher only keeps the next poll from blocking. */
    (void)loop;
    (void)w;
    (void)revents;
}

/* A client quiet for NET_BUFFERS_IDLE_S gives its empty buffers back, so ten
 * thousand idle connections cost their client structs, not their buffers. */
static void client_trim_idle(client *c, ev_tstamp idle_s) {
    if (idle_s < NET_BUFFERS_IDLE_S || c->watching) {
        return;
    }
    if (c->in_len == 0 && c->in != NULL) {
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
    reply_shrink(&c->out, 0);
}

/* Once a tick: true when c's pending output has made no progress for
 * --output-timeout. Progress is berthd's write() moving bytes since the last
 * tick, or the peer taking bytes out of the kernel's socket buffers
 * (SIOCOUTQ, the bytes not yet acknowledged, shrank since the last tick, or
 * is empty: then berthd, busy, has simply not written since): a slow reader
 * drains megabytes of kernel buffers before berthd's write() moves a byte
 * again. The clock starts at the first tick that sees no progress, so a
 * loop busy for a while (no tick, no write) does not count against c. */
/* Whether the peer emptied some of its socket since the last look (the
 * kernel's unsent bytes shrank, or none are left): progress even when no
 * write() ran. */
static bool client_peer_took(client *c) {
    int unsent = 0;
    bool known = ioctl(c->fd, SIOCOUTQ, &unsent) == 0;
    bool took = known && (unsent < c->out_unsent_seen || unsent == 0);
    if (known) {
        c->out_unsent_seen = unsent;
    }
    return took;
}

static bool client_output_stalled(client *c, ev_tstamp now, ev_tstamp prev_tick) {
    server *s = c->server;
    if (!c->writing || s->config.output_timeout_s == 0) {
        c->stall_since = 0;
        return false;
    }
    if (client_peer_took(c) || c->write_progress_at >= prev_tick) {
        c->stall_since = 0;
        return false;
    }
    if (c->stall_since == 0) {
        c->stall_since = now;
        return false;
    }
    return now - c->stall_since >= (ev_tstamp)s->config.output_timeout_s;
}

static void net_tick_cb(struct ev_loop *loop, ev_timer *w, int revents) {
    server *s = w->data;
    ev_tstamp now = ev_now(loop);
    ev_tstamp prev_tick = s->tick_prev;
    s->tick_prev = now;
    s->watch_reader_failed = false;   /* watch_pump tries a reader again */
    dlink *l = s->clients.next;
    while (l != &s->clients) {
        client *c = DLINK_OWNER(l, client, link_all);
        l = l->next;
        /* A client that stops reading would pin its output buffer (up to
         * --max-output-bytes and past) for as long as it stays connected:
         * backpressure only stops serving it. Its writes have stalled when
         * the write watcher waits (c->writing) and nothing went out. */
        if (client_output_stalled(c, now, prev_tick)) {
            s->stats.output_stall_disconnects++;
            if (c->watching) {
                /* The one way a WATCH client that stops reading goes: its
                 * buffer is bounded (watch.c), so only time tells. */
                s->stats.watch_disconnects++;
                client_close(c, "output timeout: a WATCH client that stopped reading (its "
                                "records made no write progress for --output-timeout seconds)");
            } else {
                client_close(c, "output timeout: its replies made no write progress for "
                                "--output-timeout seconds (it does not read them)");
            }
            continue;
        }
        /* A connection that never logs in holds a client slot and its
         * buffers (a few KiB: the limits before AUTH) for no one. */
        if (client_unauth(c) && s->config.auth_timeout_s != 0 &&
            now - c->connected_at > (ev_tstamp)s->config.auth_timeout_s) {
            client_close(c, "auth timeout: not authenticated within --auth-timeout seconds");
            continue;
        }
        if (c->watching || c->job_pending || c->batch_pending > 0 || c->parked != PARK_NONE ||
            reply_pending(&c->out) > 0) {
            continue;
        }
        ev_tstamp idle_s = now - c->last_active;
        if (s->config.idle_timeout_s != 0 && idle_s > (ev_tstamp)s->config.idle_timeout_s) {
            s->stats.idle_disconnects++;
            client_close(c, "idle timeout");
            continue;
        }
        client_trim_idle(c, idle_s);
    }
    (void)revents;
}

void net_start(server *s) {
    ev_prepare_init(&s->prepare, net_prepare_cb);
    s->prepare.data = s;
    ev_prepare_start(s->loop, &s->prepare);
    ev_idle_init(&s->idle, net_idle_cb);
    s->idle.data = s;
    ev_timer_init(&s->tick, net_tick_cb, NET_TICK_S, NET_TICK_S);
    s->tick.data = s;
    ev_timer_start(s->loop, &s->tick);
}

static bool client_output_stuck(const client *c) {
    return !c->closed && c->close_reason == NULL && !c->out.failed && reply_pending(&c->out) > 0;
}

static void drain_give_up(client *c, ev_tstamp stalled_s) {
    server_log("client id=%llu %s: %zu bytes of replies unsent at the stop (it took none for %.1f s)",
               (unsigned long long)c->id, c->peer, reply_pending(&c->out), stalled_s);
    client_close(c, NULL);
}

/* The loop no longer runs: its clock is brought forward by hand, and a
 * client's write_progress_at moves when write() moved bytes (client_write)
 * or the peer emptied its socket (client_peer_took), since POLLOUT comes
 * only once a third of a large send buffer is free. */
void net_drain_output(server *s) {
    net_write_pending(s);
    size_t fds_max = s->client_count;
    struct pollfd *fds = fds_max > 0 ? calloc(fds_max, sizeof *fds) : NULL;
    client **owners = fds_max > 0 ? calloc(fds_max, sizeof *owners) : NULL;
    ev_now_update(s->loop);
    ev_tstamp began = ev_now(s->loop);
    ev_tstamp until = began + SERVER_STOP_DRAIN_MS / 1000.0;
    const ev_tstamp stall_s = SERVER_STOP_STALL_MS / 1000.0;
    while (fds != NULL && owners != NULL) {
        ev_now_update(s->loop);
        ev_tstamp now = ev_now(s->loop);
        size_t n = 0;
        dlink *next = NULL;
        for (dlink *l = s->clients.next; l != &s->clients && n < fds_max; l = next) {
            next = l->next;
            client *c = DLINK_OWNER(l, client, link_all);
            if (!client_output_stuck(c)) {
                continue;
            }
            if (client_peer_took(c)) {
                c->write_progress_at = now;
            }
            ev_tstamp since = c->write_progress_at > began ? c->write_progress_at : began;
            if (now >= until || now - since >= stall_s) {
                drain_give_up(c, now - since);
                continue;
            }
            fds[n] = (struct pollfd){ .fd = c->fd, .events = POLLOUT };
            owners[n++] = c;
        }
        if (n == 0) {
            break;
        }
        ev_tstamp wait_s = until - now < stall_s / 4 ? until - now : stall_s / 4;
        int ready = poll(fds, (nfds_t)n, (int)(wait_s * 1000.0) + 1);
        if (ready < 0 && errno != EINTR) {
            break;
        }
        ev_now_update(s->loop);
        /* client_write may close (and free) owners[i] only: the others stay
         * valid, and the next round lists the clients again. */
        for (size_t i = 0; ready > 0 && i < n; i++) {
            if (fds[i].revents != 0) {
                client_write(owners[i]);
            }
        }
    }
    free(fds);
    free(owners);
    dlink *next = NULL;
    for (dlink *l = s->clients.next; l != &s->clients; l = next) {   /* no memory, or poll failed */
        next = l->next;
        client *c = DLINK_OWNER(l, client, link_all);
        if (client_output_stuck(c)) {
            drain_give_up(c, ev_now(s->loop) - began);
        }
    }
}

void net_close_all(server *s) {
    while (s->clients.next != &s->clients) {
        client *c = DLINK_OWNER(s->clients.next, client, link_all);
        client_close(c, NULL);
    }
    assert(s->client_count == 0);
}
