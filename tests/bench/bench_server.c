/* bench_server.c — berth's own RESP load generator for berthd's speed targets.
 *
 * Owns the measurement of durable DEPLOY/RELEASE cycles against a running
 * berthd (issue 3, "Speed"). redis-benchmark cannot drive a stateful cycle
 * (each DEPLOY must be followed by the RELEASE of the same instance, on
 * workers no one else holds), so berth measures itself with this program and
 * bench_server.sh runs the peers (redis-server, PostgreSQL) beside it.
 *
 * Shape: one thread per core, each driving its share of the connections with
 * epoll and nonblocking sockets. Every connection keeps `depth` commands in
 * flight (1: unpipelined). Connection c owns a disjoint pool of workers, so
 * every DEPLOY should succeed: a refusal is counted as an error and printed,
 * never hidden. Latency is measured per command from the moment it is written
 * to the moment its reply is parsed, in 1 µs buckets (exact percentiles).
 *
 * Modes:
 *   add-workers  WORKER.ADD w-0 … w-(N-1), pipelined (EXISTS is accepted so a
 *                rerun on the same data directory works)
 *   cycle        DEPLOY/RELEASE cycles for --seconds after --warmup-seconds
 * Output: one line "RESULT key=value …" that bench_server.sh parses. */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONNECTIONS_MAX 4096
#define THREADS_MAX 64
#define DEPTH_MAX 1024
#define WORKERS_MAX 1000000
#define PLACEMENT_WORKERS_MAX 64
#define COMMAND_BYTES_MAX 2048          /* one encoded RESP command */
#define OUT_BYTES_MAX (DEPTH_MAX * COMMAND_BYTES_MAX)
#define IN_BYTES_MAX (256 * 1024)       /* unparsed reply bytes per connection */
#define ERROR_TEXT_MAX 256
#define LATENCY_US_MAX 1000000          /* histogram range; above lands in the overflow bucket */
#define EPOLL_EVENTS_MAX 256
#define EPOLL_WAIT_MS 10
#define RESP_ITEMS_MAX 1000000          /* elements one reply may announce */
#define SECONDS_MAX 3600

typedef enum { MODE_ADD_WORKERS, MODE_CYCLE } bench_mode;

typedef struct options {
    const char *host;
    int port;
    bench_mode mode;
    uint32_t connections;
    uint32_t threads;
    uint32_t depth;
    uint32_t workers;
    uint32_t placement_workers;
    uint32_t seconds;
    uint32_t warmup_seconds;
    const char *tag;                    /* makes instance names unique per run */
    const char *name;                   /* label for the RESULT line */
} options;

typedef struct histogram {
    uint32_t *buckets;                  /* LATENCY_US_MAX + 1 entries; the last also holds overflow */
    uint64_t count;
    uint64_t max_us;
} histogram;

typedef struct conn {
    int fd;
    uint32_t index;                     /* global connection number */
    uint64_t step;                      /* next command of this connection's stream */
    uint64_t steps_end;                 /* add-workers: stop before this step */
    uint32_t in_flight;
    uint64_t sent_ns[DEPTH_MAX];        /* ring: send time of each command in flight */
    uint32_t sent_head;
    bool stopping;                      /* no new commands; drain the ones in flight */
    bool want_out;                      /* EPOLLOUT armed */
    size_t out_len;
    size_t out_off;
    char out[OUT_BYTES_MAX];
    size_t in_len;
    char in[IN_BYTES_MAX];
} conn;

typedef struct worker_thread {
    pthread_t thread;
    const options *opt;
    uint32_t conn_first;
    uint32_t conn_count;
    conn **conns;
    int epfd;
    histogram hist;
    uint64_t replies;                   /* inside the measurement window */
    uint64_t errors;
    char first_error[ERROR_TEXT_MAX];
    int failed;                         /* a socket or protocol failure: the run is void */
} worker_thread;

/* The window is shared read-only after start: threads compare clocks to it. */
static uint64_t window_start_ns;
static uint64_t window_end_ns;

static uint64_t now_ns(void) {
    struct timespec ts;
    int rc = clock_gettime(CLOCK_MONOTONIC, &ts);
    assert(rc == 0);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "bench_server: %s\n", what);
    exit(2);
}

static void usage(void) {
    fprintf(stderr,
            "usage: bench_server [--host H] [--port P] [--mode add-workers|cycle]\n"
            "         [--connections N] [--threads N] [--depth N] [--workers N]\n"
            "         [--placement N] [--seconds S] [--warmup-seconds S] [--tag T] [--name NAME]\n");
    exit(2);
}

static uint32_t parse_u32(const char *text, uint32_t min, uint32_t max, const char *flag) {
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "bench_server: %s wants a number from %u to %u, got '%s'\n", flag, min,
                max, text);
        exit(2);
    }
    return (uint32_t)v;
}

static void options_parse(options *opt, int argc, char **argv) {
    *opt = (options){ .host = "127.0.0.1", .port = 7420, .mode = MODE_CYCLE, .connections = 50,
                      .depth = 1, .workers = 10000, .placement_workers = 2, .seconds = 10,
                      .warmup_seconds = 1, .tag = "r", .name = "berth" };
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    opt->threads = cores < 1 ? 1 : (cores > THREADS_MAX ? THREADS_MAX : (uint32_t)cores);
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (strcmp(flag, "--host") == 0) opt->host = v;
        else if (strcmp(flag, "--port") == 0) opt->port = (int)parse_u32(v, 1, 65535, flag);
        else if (strcmp(flag, "--mode") == 0) {
            if (strcmp(v, "add-workers") == 0) opt->mode = MODE_ADD_WORKERS;
            else if (strcmp(v, "cycle") == 0) opt->mode = MODE_CYCLE;
            else usage();
        } else if (strcmp(flag, "--connections") == 0) opt->connections = parse_u32(v, 1, CONNECTIONS_MAX, flag);
        else if (strcmp(flag, "--threads") == 0) opt->threads = parse_u32(v, 1, THREADS_MAX, flag);
        else if (strcmp(flag, "--depth") == 0) opt->depth = parse_u32(v, 1, DEPTH_MAX, flag);
        else if (strcmp(flag, "--workers") == 0) opt->workers = parse_u32(v, 1, WORKERS_MAX, flag);
        else if (strcmp(flag, "--placement") == 0) opt->placement_workers = parse_u32(v, 1, PLACEMENT_WORKERS_MAX, flag);
        else if (strcmp(flag, "--seconds") == 0) opt->seconds = parse_u32(v, 1, SECONDS_MAX, flag);
        else if (strcmp(flag, "--warmup-seconds") == 0) opt->warmup_seconds = parse_u32(v, 0, SECONDS_MAX, flag);
        else if (strcmp(flag, "--tag") == 0) opt->tag = v;
        else if (strcmp(flag, "--name") == 0) opt->name = v;
        else usage();
    }
    if (opt->threads > opt->connections) opt->threads = opt->connections;
    /* Each connection needs a private pool holding at least one placement. */
    if (opt->mode == MODE_CYCLE && opt->workers / opt->connections < opt->placement_workers)
        die("too few workers: each connection needs --placement workers of its own");
}

/* ---- RESP encoding ---------------------------------------------------- */

/* The load generator shares the two cores with the server it measures, so
 * it builds commands without printf: snprintf was over half of its CPU at
 * 16 commands in flight (docs/bench-server.md, "Session 9: the load
 * generator"), CPU the server then did not get. The bytes are the same. */

/* A bounded text under construction. */
typedef struct text_buf {
    char *p;
    char *end;
} text_buf;

static void put_bytes(text_buf *t, const char *s, size_t len) {
    if ((size_t)(t->end - t->p) < len) die("command over COMMAND_BYTES_MAX");
    memcpy(t->p, s, len);
    t->p += len;
}

/* End the text with a NUL (not counted): names are C strings too. */
static size_t put_end(text_buf *t, const char *start) {
    put_bytes(t, "", 1);
    return (size_t)(t->p - start) - 1;
}

static void put_u64(text_buf *t, uint64_t v) {
    char digits[20];
    size_t n = 0;
    do {
        digits[sizeof digits - 1 - n] = (char)('0' + v % 10);
        n++;
        v /= 10;
    } while (v != 0);
    put_bytes(t, digits + sizeof digits - n, n);
}

/* Append one RESP array of argc words (lens[i] bytes each) to the
 * connection's output. */
static void out_command_n(conn *c, uint32_t argc, const char *const *argv, const size_t *lens) {
    assert(argc > 0 && argc <= 2 * PLACEMENT_WORKERS_MAX + 16);
    char buf[COMMAND_BYTES_MAX];
    text_buf t = { buf, buf + sizeof buf };
    put_bytes(&t, "*", 1);
    put_u64(&t, argc);
    put_bytes(&t, "\r\n", 2);
    for (uint32_t i = 0; i < argc; i++) {
        assert(lens[i] == strlen(argv[i]));
        put_bytes(&t, "$", 1);
        put_u64(&t, lens[i]);
        put_bytes(&t, "\r\n", 2);
        put_bytes(&t, argv[i], lens[i]);
        put_bytes(&t, "\r\n", 2);
    }
    size_t len = (size_t)(t.p - buf);
    assert(c->out_len + len <= sizeof c->out);
    memcpy(c->out + c->out_len, buf, len);
    c->out_len += len;
}

/* "<prefix><n>" into out (cap bytes); its length. */
static size_t name_u64(char *out, size_t cap, const char *prefix, size_t prefix_len, uint64_t n) {
    text_buf t = { out, out + cap };
    put_bytes(&t, prefix, prefix_len);
    put_u64(&t, n);
    return put_end(&t, out);
}

/* The stream of connection c: step 2k deploys instance k on the next
 * placement of c's pool, step 2k+1 releases it. A release always follows its
 * deploy in the same connection, so at most one of c's instances is live.
 * Instance k of connection i is i-<tag>-<i>-<k>; workers are w-<n>. */
static void out_cycle_step(const options *opt, conn *c) {
    uint64_t k = c->step / 2;
    char instance[96];
    text_buf t = { instance, instance + sizeof instance };
    put_bytes(&t, "i-", 2);
    put_bytes(&t, opt->tag, strlen(opt->tag));
    put_bytes(&t, "-", 1);
    put_u64(&t, c->index);
    put_bytes(&t, "-", 1);
    put_u64(&t, k);
    size_t instance_len = put_end(&t, instance);
    if (c->step % 2 == 1) {
        const char *argv[2] = { "RELEASE", instance };
        const size_t lens[2] = { 7, instance_len };
        out_command_n(c, 2, argv, lens);
        return;
    }
    uint32_t pool = opt->workers / opt->connections;
    uint32_t placements = pool / opt->placement_workers;
    assert(placements > 0);
    uint32_t first = c->index * pool + (uint32_t)(k % placements) * opt->placement_workers;
    char names[PLACEMENT_WORKERS_MAX][24];
    const char *argv[8 + PLACEMENT_WORKERS_MAX] = { "DEPLOY", instance, "MODEL", "llama-70b",
                                                    "BACKEND", "vllm", "ON" };
    size_t lens[8 + PLACEMENT_WORKERS_MAX] = { 6, instance_len, 5, 9, 7, 4, 2 };
    uint32_t argc = 7;
    for (uint32_t i = 0; i < opt->placement_workers; i++) {
        lens[argc] = name_u64(names[i], sizeof names[i], "w-", 2, first + i);
        argv[argc++] = names[i];
    }
    out_command_n(c, argc, argv, lens);
}

static void out_add_worker_step(conn *c) {
    char name[24];
    size_t len = name_u64(name, sizeof name, "w-", 2, c->step);
    const char *argv[8] = { "WORKER.ADD", name, "GPUS", "8", "VRAM", "81920", "LABEL", "zone=a" };
    size_t lens[8] = { 10, len, 4, 1, 4, 5, 5, 6 };
    out_command_n(c, 8, argv, lens);
}

/* ---- RESP reply parsing ----------------------------------------------- */

/* Find the CRLF ending the line at p; NULL when it has not arrived yet. */
static const char *line_end(const char *p, const char *end) {
    const char *cr = memchr(p, '\r', (size_t)(end - p));
    if (cr == NULL || cr + 1 >= end) return NULL;
    if (cr[1] != '\n') die("reply line without CRLF");
    return cr;
}

static long long line_number(const char *p, const char *cr) {
    char tmp[32];
    size_t len = (size_t)(cr - p);
    if (len == 0 || len >= sizeof tmp) die("reply with a bad length");
    memcpy(tmp, p, len);
    tmp[len] = '\0';
    char *end = NULL;
    long long v = strtoll(tmp, &end, 10);
    if (*end != '\0') die("reply with a non-numeric length");
    return v;
}

/* Parse one whole reply at buf (any RESP2/RESP3 shape, nested aggregates
 * handled by counting the items still owed, no recursion). Returns the bytes
 * it spans, or 0 when incomplete. *is_error: the top-level item was '-'. */
static size_t reply_parse(const char *buf, size_t len, bool *is_error, char *error_text) {
    assert(buf != NULL && is_error != NULL && error_text != NULL);
    const char *p = buf;
    const char *end = buf + len;
    uint64_t owed = 1;
    bool top = true;
    while (owed > 0) {
        if (p >= end) return 0;
        char type = *p;
        const char *cr = line_end(p + 1, end);
        if (cr == NULL) return 0;
        owed--;
        if (top) {
            *is_error = type == '-' || type == '!';
            if (type == '-') {
                size_t n = (size_t)(cr - p - 1);
                if (n >= ERROR_TEXT_MAX) n = ERROR_TEXT_MAX - 1;
                memcpy(error_text, p + 1, n);
                error_text[n] = '\0';
            }
            top = false;
        }
        if (type == '$' || type == '!' || type == '=') {
            long long n = line_number(p + 1, cr);
            p = cr + 2;
            if (n < 0) continue;    /* null bulk */
            if ((size_t)(end - p) < (size_t)n + 2) return 0;
            p += n + 2;
            continue;
        }
        if (type == '*' || type == '~' || type == '>' || type == '%' || type == '|') {
            long long n = line_number(p + 1, cr);
            p = cr + 2;
            if (n > RESP_ITEMS_MAX) die("reply announces too many items");
            if (n > 0) owed += (uint64_t)n * ((type == '%' || type == '|') ? 2u : 1u);
            /* An attribute '|' precedes the real reply: owe one more. */
            if (type == '|') owed++;
            continue;
        }
        if (strchr("+-:_#,(", type) == NULL) die("reply of an unknown type");
        p = cr + 2;
    }
    assert(p > buf && p <= end);
    return (size_t)(p - buf);
}

/* ---- connections ------------------------------------------------------ */

static int conn_open(const options *opt) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket failed");
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)opt->port) };
    if (inet_pton(AF_INET, opt->host, &addr.sin_addr) != 1) die("--host wants an IPv4 address");
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) die("TCP_NODELAY failed");
    int rc = connect(fd, (struct sockaddr *)&addr, sizeof addr);
    if (rc != 0 && errno != EINPROGRESS) die("connect failed (is the server up?)");
    return fd;
}

static void histogram_add(histogram *h, uint64_t ns) {
    assert(h->buckets != NULL);
    uint64_t us = ns / 1000u;
    if (us > h->max_us) h->max_us = us;
    h->buckets[us > LATENCY_US_MAX ? LATENCY_US_MAX : us]++;
    h->count++;
}

static bool conn_has_more(const options *opt, const conn *c) {
    if (c->stopping) return false;
    if (opt->mode == MODE_ADD_WORKERS) return c->step < c->steps_end;
    return true;
}

/* Top the pipeline up to depth and try to write it. */
static void conn_fill(worker_thread *t, conn *c) {
    const options *opt = t->opt;
    uint64_t at = now_ns();
    if (opt->mode == MODE_CYCLE && at >= window_end_ns && c->step % 2 == 0) c->stopping = true;
    while (c->in_flight < opt->depth && conn_has_more(opt, c)) {
        if (opt->mode == MODE_ADD_WORKERS) out_add_worker_step(c);
        else out_cycle_step(opt, c);
        c->sent_ns[(c->sent_head + c->in_flight) % DEPTH_MAX] = at;
        c->in_flight++;
        c->step += opt->mode == MODE_ADD_WORKERS ? opt->connections : 1;
        /* Stop only between cycles, so no instance is left deployed. */
        if (opt->mode == MODE_CYCLE && at >= window_end_ns && c->step % 2 == 0) c->stopping = true;
    }
    assert(c->in_flight <= opt->depth && c->out_off <= c->out_len);
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOTCONN)) break;
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) die("write to the server failed");
        c->out_off += (size_t)n;
    }
    if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
    bool want_out = c->out_len > 0;
    if (want_out != c->want_out) {
        struct epoll_event ev = { .events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c };
        if (epoll_ctl(t->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) die("epoll_ctl failed");
        c->want_out = want_out;
    }
}

static void conn_on_reply(worker_thread *t, conn *c, bool is_error, const char *error_text,
                          uint64_t at) {
    assert(c->in_flight > 0);
    uint64_t sent = c->sent_ns[c->sent_head];
    c->sent_head = (c->sent_head + 1) % DEPTH_MAX;
    c->in_flight--;
    /* add-workers tolerates EXISTS so a rerun on the same data works. */
    bool tolerated = t->opt->mode == MODE_ADD_WORKERS && strncmp(error_text, "EXISTS", 6) == 0;
    if (is_error && !tolerated) {
        if (t->errors == 0) snprintf(t->first_error, sizeof t->first_error, "%s", error_text);
        t->errors++;
    }
    if (sent >= window_start_ns && at <= window_end_ns) {
        histogram_add(&t->hist, at - sent);
        t->replies++;
    }
}

static void conn_read(worker_thread *t, conn *c) {
    for (;;) {
        if (c->in_len == sizeof c->in) die("a reply larger than IN_BYTES_MAX");
        ssize_t n = read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n < 0 && errno == EINTR) continue;
        if (n == 0) die("the server closed a connection");
        if (n < 0) die("read from the server failed");
        c->in_len += (size_t)n;
    }
    uint64_t at = now_ns();
    size_t off = 0;
    for (;;) {
        bool is_error = false;
        char error_text[ERROR_TEXT_MAX] = "";
        size_t used = reply_parse(c->in + off, c->in_len - off, &is_error, error_text);
        if (used == 0) break;
        if (c->in_flight == 0) die("a reply nobody asked for");
        conn_on_reply(t, c, is_error, error_text, at);
        off += used;
    }
    assert(off <= c->in_len);
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
}

static bool thread_done(const worker_thread *t) {
    for (uint32_t i = 0; i < t->conn_count; i++) {
        const conn *c = t->conns[i];
        if (c->in_flight > 0 || conn_has_more(t->opt, c)) return false;
    }
    return true;
}

static void *thread_main(void *arg) {
    worker_thread *t = arg;
    struct epoll_event events[EPOLL_EVENTS_MAX];
    for (uint32_t i = 0; i < t->conn_count; i++) conn_fill(t, t->conns[i]);
    while (!thread_done(t)) {
        int n = epoll_wait(t->epfd, events, EPOLL_EVENTS_MAX, EPOLL_WAIT_MS);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("epoll_wait failed");
        for (int i = 0; i < n; i++) {
            conn *c = events[i].data.ptr;
            if (events[i].events & (EPOLLERR | EPOLLHUP)) die("a connection failed");
            if (events[i].events & EPOLLIN) conn_read(t, c);
            conn_fill(t, c);
        }
        /* The window may close while a connection is idle between replies. */
        if (n == 0)
            for (uint32_t i = 0; i < t->conn_count; i++) conn_fill(t, t->conns[i]);
    }
    return NULL;
}

/* ---- setup, run, report ----------------------------------------------- */

static void thread_setup(worker_thread *t, const options *opt, uint32_t first, uint32_t count) {
    *t = (worker_thread){ .opt = opt, .conn_first = first, .conn_count = count };
    t->hist.buckets = calloc(LATENCY_US_MAX + 1, sizeof *t->hist.buckets);
    t->conns = calloc(count, sizeof *t->conns);
    if (t->hist.buckets == NULL || t->conns == NULL) die("out of memory");
    t->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (t->epfd < 0) die("epoll_create1 failed");
    for (uint32_t i = 0; i < count; i++) {
        conn *c = calloc(1, sizeof *c);
        if (c == NULL) die("out of memory");
        c->index = first + i;
        c->fd = conn_open(opt);
        c->step = opt->mode == MODE_ADD_WORKERS ? c->index : 0;
        c->steps_end = opt->workers;
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) die("epoll_ctl failed");
        t->conns[i] = c;
    }
}

static void thread_teardown(worker_thread *t) {
    for (uint32_t i = 0; i < t->conn_count; i++) {
        int rc = close(t->conns[i]->fd);
        assert(rc == 0);
        free(t->conns[i]);
    }
    free(t->conns);
    free(t->hist.buckets);
    int rc = close(t->epfd);
    assert(rc == 0);
}

static uint64_t percentile_us(const uint64_t *merged, uint64_t count, uint64_t max_us,
                              double fraction) {
    if (count == 0) return 0;
    uint64_t rank = (uint64_t)(fraction * (double)count);
    if (rank >= count) rank = count - 1;
    uint64_t seen = 0;
    for (uint64_t us = 0; us <= LATENCY_US_MAX; us++) {
        seen += merged[us];
        if (seen > rank) return us < LATENCY_US_MAX ? us : max_us;
    }
    return max_us;
}

static void report(const options *opt, worker_thread *threads, uint32_t nthreads,
                   double seconds) {
    uint64_t *merged = calloc(LATENCY_US_MAX + 1, sizeof *merged);
    if (merged == NULL) die("out of memory");
    uint64_t replies = 0, errors = 0, count = 0, max_us = 0;
    const char *first_error = "";
    for (uint32_t i = 0; i < nthreads; i++) {
        worker_thread *t = &threads[i];
        for (uint64_t us = 0; us <= LATENCY_US_MAX; us++) merged[us] += t->hist.buckets[us];
        replies += t->replies;
        count += t->hist.count;
        if (t->hist.max_us > max_us) max_us = t->hist.max_us;
        if (t->errors > 0 && errors == 0) first_error = t->first_error;
        errors += t->errors;
    }
    assert(count == replies);
    printf("RESULT name=%s mode=%s connections=%u threads=%u depth=%u placement=%u "
           "commands=%llu seconds=%.3f cmds_per_s=%.0f p50_us=%llu p99_us=%llu p999_us=%llu "
           "max_us=%llu errors=%llu\n",
           opt->name, opt->mode == MODE_CYCLE ? "cycle" : "add-workers", opt->connections,
           nthreads, opt->depth, opt->placement_workers, (unsigned long long)replies, seconds,
           seconds > 0 ? (double)replies / seconds : 0.0,
           (unsigned long long)percentile_us(merged, count, max_us, 0.50),
           (unsigned long long)percentile_us(merged, count, max_us, 0.99),
           (unsigned long long)percentile_us(merged, count, max_us, 0.999),
           (unsigned long long)max_us, (unsigned long long)errors);
    if (errors > 0) printf("FIRST_ERROR %s\n", first_error);
    free(merged);
}

int main(int argc, char **argv) {
    options opt;
    options_parse(&opt, argc, argv);
    static worker_thread threads[THREADS_MAX];
    uint32_t per = opt.connections / opt.threads;
    uint32_t extra = opt.connections % opt.threads;
    uint32_t first = 0;
    for (uint32_t i = 0; i < opt.threads; i++) {
        uint32_t count = per + (i < extra ? 1 : 0);
        thread_setup(&threads[i], &opt, first, count);
        first += count;
    }
    assert(first == opt.connections);
    uint64_t start = now_ns();
    if (opt.mode == MODE_CYCLE) {
        window_start_ns = start + (uint64_t)opt.warmup_seconds * 1000000000u;
        window_end_ns = window_start_ns + (uint64_t)opt.seconds * 1000000000u;
    } else {
        window_start_ns = start;
        window_end_ns = UINT64_MAX;
    }
    for (uint32_t i = 0; i < opt.threads; i++)
        if (pthread_create(&threads[i].thread, NULL, thread_main, &threads[i]) != 0)
            die("pthread_create failed");
    for (uint32_t i = 0; i < opt.threads; i++)
        if (pthread_join(threads[i].thread, NULL) != 0) die("pthread_join failed");
    uint64_t end = now_ns();
    double seconds = opt.mode == MODE_CYCLE ? (double)opt.seconds
                                            : (double)(end - start) / 1e9;
    report(&opt, threads, opt.threads, seconds);
    uint64_t errors = 0;
    for (uint32_t i = 0; i < opt.threads; i++) {
        errors += threads[i].errors;
        thread_teardown(&threads[i]);
    }
    return errors == 0 ? 0 : 1;
}
