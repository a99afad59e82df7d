/* harness.c — the reliability programs' RESP client and process control.
 *
 * Owns every byte a harness sends to or reads from berthd and every berthd
 * it starts. The RESP parser is written apart from berthd's own reader on
 * purpose: a test that shared the server's parser would agree with its bugs.
 * Nested replies are parsed with an explicit stack (no recursion) into a flat
 * node array, so one free releases a whole reply. */
#define _GNU_SOURCE
#include "harness.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "commit_log.h"
#include "journal.h"

#define H_STACK_DEPTH_MAX 64        /* nesting of aggregates in one reply */
#define H_READ_CHUNK 65536          /* bytes per read() */
#define H_AGG_COUNT_MAX 10000000    /* elements one aggregate may announce */
#define H_LIVE_MAX 16               /* children spawned and not yet reaped */

/* Every child not yet reaped, so a failing harness never leaves a berthd
 * behind (it would hold its port, its data directory and, in the full-disk
 * test, the tmpfs mount). */
static pid_t live_pids[H_LIVE_MAX];

static void live_add(pid_t pid) {
    for (size_t i = 0; i < H_LIVE_MAX; i++) {
        if (live_pids[i] == 0) { live_pids[i] = pid; return; }
    }
    assert(false && "more than H_LIVE_MAX children alive");
}

static void live_remove(pid_t pid) {
    for (size_t i = 0; i < H_LIVE_MAX; i++) {
        if (live_pids[i] == pid) live_pids[i] = 0;
    }
}

static void live_kill_all(void) {
    for (size_t i = 0; i < H_LIVE_MAX; i++) {
        if (live_pids[i] <= 0) continue;
        (void)kill(live_pids[i], SIGKILL);
        (void)waitpid(live_pids[i], NULL, 0);
        live_pids[i] = 0;
    }
}

void h_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("FAIL ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    live_kill_all();
    exit(1);
}

void h_reply_init(h_reply *reply) {
    assert(reply != NULL);
    memset(reply, 0, sizeof *reply);
}

void h_reply_free(h_reply *reply) {
    assert(reply != NULL);
    free(reply->nodes);
    free(reply->bytes);
    h_reply_init(reply);
}

const h_node *h_reply_root(const h_reply *reply) {
    assert(reply != NULL);
    return reply->count > 0 ? &reply->nodes[0] : NULL;
}

const h_node *h_reply_child(const h_reply *reply, const h_node *node, uint32_t i) {
    assert(reply != NULL);
    if (node == NULL) return NULL;
    uint32_t at = node->first_child;
    for (uint32_t k = 0; k < i && at != UINT32_MAX; k++) {
        assert(at < reply->count);
        at = reply->nodes[at].next_sibling;
    }
    return at == UINT32_MAX ? NULL : &reply->nodes[at];
}

bool h_node_is(const h_node *node, const char *text) {
    if (node == NULL || node->str == NULL) return false;
    size_t n = strlen(text);
    return node->len == n && memcmp(node->str, text, n) == 0;
}

bool h_node_error_code(const h_node *node, const char *code) {
    if (node == NULL || node->type != H_ERROR) return false;
    size_t n = strlen(code);
    if (node->len < n || memcmp(node->str, code, n) != 0) return false;
    return node->len == n || node->str[n] == ' ';
}

const h_node *h_reply_field(const h_reply *reply, const h_node *node, const char *key) {
    if (node == NULL) return NULL;
    if (node->type != H_MAP && node->type != H_ARRAY) return NULL;
    uint32_t at = node->first_child;
    while (at != UINT32_MAX) {
        const h_node *k = &reply->nodes[at];
        if (k->next_sibling == UINT32_MAX) return NULL;
        const h_node *v = &reply->nodes[k->next_sibling];
        if (h_node_is(k, key)) return v;
        at = v->next_sibling;
    }
    return NULL;
}

/* Find "\r\n" at or after pos; returns its index or -1. */
static ssize_t find_crlf(const char *buf, size_t len, size_t pos) {
    for (size_t i = pos; i + 1 < len; i++) {
        if (buf[i] == '\r' && buf[i + 1] == '\n') return (ssize_t)i;
    }
    return -1;
}

static bool parse_i64(const char *s, size_t n, int64_t *out) {
    if (n == 0 || n > 20) return false;
    bool neg = s[0] == '-';
    size_t i = neg ? 1 : 0;
    if (i == n) return false;
    int64_t v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        if (v > (INT64_MAX - (s[i] - '0')) / 10) return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = neg ? -v : v;
    return true;
}

static int node_push(h_reply *r, h_node node, uint32_t *index) {
    if (r->count == r->cap) {
        if (r->cap >= H_REPLY_NODES_MAX) return -1;
        uint32_t cap = r->cap == 0 ? 16 : r->cap * 2;
        h_node *nodes = realloc(r->nodes, (size_t)cap * sizeof *nodes);
        if (nodes == NULL) return -1;
        r->nodes = nodes;
        r->cap = cap;
    }
    *index = r->count;
    r->nodes[r->count++] = node;
    return 0;
}

static h_type type_of(char c, bool *aggregate, bool *sized) {
    *aggregate = false;
    *sized = false;
    switch (c) {
    case '+': return H_SIMPLE;
    case '-': return H_ERROR;
    case ':': return H_INT;
    case '$': *sized = true; return H_BULK;
    case '=': *sized = true; return H_VERBATIM;
    case '*': *aggregate = true; return H_ARRAY;
    case '%': *aggregate = true; return H_MAP;
    case '~': *aggregate = true; return H_SET;
    case '>': *aggregate = true; return H_PUSH;
    case '_': return H_NIL;
    case ',': return H_DOUBLE;
    case '#': return H_BOOL;
    case '(': return H_BIGNUM;
    default: return H_NONE;
    }
}

typedef struct frame {
    uint32_t node;
    int64_t remaining;
    uint32_t last_child;
} frame;

/* Parse one header (and a bulk body) at *pos into node. 0 done, 1 need
 * more, -1 protocol error. Strings point into buf for now. */
static int parse_one(const char *buf, size_t len, size_t *pos, h_node *node, bool *aggregate) {
    if (*pos >= len) return 1;
    bool sized = false;
    h_type t = type_of(buf[*pos], aggregate, &sized);
    if (t == H_NONE) return -1;
    ssize_t eol = find_crlf(buf, len, *pos + 1);
    if (eol < 0) return (len - *pos > H_LINE_LEN_MAX && (*aggregate || sized)) ? -1 : 1;
    const char *line = buf + *pos + 1;
    size_t line_len = (size_t)eol - (*pos + 1);
    memset(node, 0, sizeof *node);
    node->type = t;
    node->first_child = UINT32_MAX;
    node->next_sibling = UINT32_MAX;
    size_t after = (size_t)eol + 2;
    if (*aggregate || sized) {
        int64_t n = 0;
        if (!parse_i64(line, line_len, &n) || n < -1) return -1;
        if (n == -1) { node->type = H_NIL; *aggregate = false; *pos = after; return 0; }
        if (*aggregate) {
            if (n > H_AGG_COUNT_MAX) return -1;
            node->integer = t == H_MAP ? 2 * n : n;
            *pos = after;
            return 0;
        }
        if ((uint64_t)n > H_REPLY_BYTES_MAX) return -1;
        if (len - after < (size_t)n + 2) return 1;
        if (buf[after + (size_t)n] != '\r' || buf[after + (size_t)n + 1] != '\n') return -1;
        node->str = buf + after;
        node->len = (size_t)n;
        *pos = after + (size_t)n + 2;
        return 0;
    }
    node->str = line;
    node->len = line_len;
    if (t == H_INT && !parse_i64(line, line_len, &node->integer)) return -1;
    if (t == H_BOOL) node->integer = line_len == 1 && line[0] == 't';
    if (t == H_NIL && line_len != 0) return -1;
    *pos = after;
    return 0;
}

/* Link a new node under the frame on top of the stack. */
static void link_child(h_reply *r, frame *top, uint32_t index) {
    if (top->last_child == UINT32_MAX) r->nodes[top->node].first_child = index;
    else r->nodes[top->last_child].next_sibling = index;
    top->last_child = index;
    top->remaining--;
}

/* Point string nodes into the reply's own copy of its bytes. */
static int own_bytes(h_reply *r, const char *buf, size_t used) {
    r->bytes = malloc(used + 1);
    if (r->bytes == NULL) return -1;
    memcpy(r->bytes, buf, used);
    r->bytes[used] = '\0';
    r->bytes_len = used;
    for (uint32_t i = 0; i < r->count; i++) {
        if (r->nodes[i].str != NULL) r->nodes[i].str = r->bytes + (r->nodes[i].str - buf);
    }
    return 0;
}

ssize_t h_parse(const char *buf, size_t len, h_reply *out) {
    assert(buf != NULL || len == 0);
    h_reply r;
    h_reply_init(&r);
    frame stack[H_STACK_DEPTH_MAX];
    size_t depth = 0;
    size_t pos = 0;
    for (;;) {
        h_node node;
        bool aggregate = false;
        int rc = parse_one(buf, len, &pos, &node, &aggregate);
        if (rc != 0) { h_reply_free(&r); return rc < 0 ? -1 : 0; }
        uint32_t index = 0;
        if (node_push(&r, node, &index) != 0) { h_reply_free(&r); return -1; }
        if (depth > 0) link_child(&r, &stack[depth - 1], index);
        if (aggregate && node.integer > 0) {
            if (depth == H_STACK_DEPTH_MAX) { h_reply_free(&r); return -1; }
            stack[depth++] = (frame){ index, node.integer, UINT32_MAX };
        }
        while (depth > 0 && stack[depth - 1].remaining == 0) depth--;
        if (depth == 0) break;
    }
    if (own_bytes(&r, buf, pos) != 0) { h_reply_free(&r); return -1; }
    *out = r;
    assert(pos > 0);
    return (ssize_t)pos;
}

void h_conn_init(h_conn *conn) {
    memset(conn, 0, sizeof *conn);
    conn->fd = -1;
}

static int set_nonblock(int fd) {
    int flags = fcntl(fd, F_GETFL, 0);
    if (flags < 0) return -1;
    return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

int h_conn_open(h_conn *conn, const char *host, int port, int timeout_ms) {
    assert(conn != NULL && host != NULL && port > 0);
    h_conn_init(conn);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    if (set_nonblock(fd) != 0) { close(fd); return -1; }
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) { close(fd); return -1; }
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) { close(fd); return -1; }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (errno != EINPROGRESS) { close(fd); return -1; }
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        if (poll(&p, 1, timeout_ms) != 1) { close(fd); return -1; }
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) { close(fd); return -1; }
    }
    conn->fd = fd;
    return 0;
}

void h_conn_close(h_conn *conn) {
    if (conn->fd >= 0) close(conn->fd);
    free(conn->buf);
    h_conn_init(conn);
}

static int grow(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t c = *cap == 0 ? 256 : *cap;
    while (c < need) c *= 2;
    char *b = realloc(*buf, c);
    if (b == NULL) return -1;
    *buf = b;
    *cap = c;
    return 0;
}

int h_encode_argv(char **out, size_t *len, size_t *cap, size_t argc,
                  const char *const *argv, const size_t *lens) {
    char head[H_LINE_LEN_MAX];
    int n = snprintf(head, sizeof head, "*%zu\r\n", argc);
    assert(n > 0 && (size_t)n < sizeof head);
    if (grow(out, cap, *len + (size_t)n) != 0) return -1;
    memcpy(*out + *len, head, (size_t)n);
    *len += (size_t)n;
    for (size_t i = 0; i < argc; i++) {
        n = snprintf(head, sizeof head, "$%zu\r\n", lens[i]);
        assert(n > 0 && (size_t)n < sizeof head);
        if (grow(out, cap, *len + (size_t)n + lens[i] + 2) != 0) return -1;
        memcpy(*out + *len, head, (size_t)n);
        *len += (size_t)n;
        memcpy(*out + *len, argv[i], lens[i]);
        *len += lens[i];
        memcpy(*out + *len, "\r\n", 2);
        *len += 2;
    }
    return 0;
}

int h_write_all(int fd, const char *bytes, size_t len, int timeout_ms) {
    size_t off = 0;
    while (off < len) {
        ssize_t w = send(fd, bytes + off, len - off, MSG_NOSIGNAL);
        if (w > 0) { off += (size_t)w; continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p = { .fd = fd, .events = POLLOUT };
            if (poll(&p, 1, timeout_ms) != 1) return -1;
            continue;
        }
        return -1;
    }
    return 0;
}

ssize_t h_conn_fill(h_conn *conn) {
    assert(conn->fd >= 0);
    if (grow(&conn->buf, &conn->cap, conn->len + H_READ_CHUNK) != 0) return -1;
    ssize_t r = recv(conn->fd, conn->buf + conn->len, conn->cap - conn->len, 0);
    if (r > 0) { conn->len += (size_t)r; return r; }
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
    return -1;
}

int h_conn_take(h_conn *conn, h_reply *reply) {
    ssize_t used = h_parse(conn->buf, conn->len, reply);
    if (used <= 0) return (int)used;
    memmove(conn->buf, conn->buf + used, conn->len - (size_t)used);
    conn->len -= (size_t)used;
    return 1;
}

int h_read_reply(h_conn *conn, h_reply *reply, int timeout_ms) {
    uint64_t deadline = h_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    for (;;) {
        int t = h_conn_take(conn, reply);
        if (t != 0) return t > 0 ? 0 : -1;
        uint64_t now = h_now_ns();
        if (now >= deadline) return -1;
        struct pollfd p = { .fd = conn->fd, .events = POLLIN };
        int pr = poll(&p, 1, (int)((deadline - now) / 1000000ull) + 1);
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) return -1;
        if (h_conn_fill(conn) < 0) return -1;
    }
}

int h_cmdf(h_conn *conn, h_reply *reply, int timeout_ms, const char *fmt, ...) {
    char *text = malloc(H_CMD_TEXT_LEN_MAX);
    if (text == NULL) return -1;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, H_CMD_TEXT_LEN_MAX, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= H_CMD_TEXT_LEN_MAX) { free(text); return -1; }
    const char *words[H_WORDS_MAX];
    size_t lens[H_WORDS_MAX];
    size_t argc = 0;
    char *save = NULL;
    for (char *w = strtok_r(text, " ", &save); w != NULL; w = strtok_r(NULL, " ", &save)) {
        if (argc == H_WORDS_MAX) { free(text); return -1; }
        words[argc] = w;
        lens[argc] = strlen(w);
        argc++;
    }
    char *out = NULL;
    size_t len = 0, cap = 0;
    int rc = h_encode_argv(&out, &len, &cap, argc, words, lens);
    free(text);
    if (rc == 0) rc = h_write_all(conn->fd, out, len, timeout_ms);
    free(out);
    if (rc != 0) return -1;
    return h_read_reply(conn, reply, timeout_ms);
}

int h_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = 0 };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0) {
        port = ntohs(sa.sin_port);
    }
    close(fd);
    return port;
}

pid_t h_spawn(const char *const *argv, const char *log_path) {
    assert(argv != NULL && argv[0] != NULL);
    pid_t pid = fork();
    if (pid > 0) live_add(pid);
    if (pid != 0) return pid;
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) _exit(127);
    if (dup2(fd, 1) < 0 || dup2(fd, 2) < 0) _exit(127);
    close(fd);
    int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd >= 0) { (void)dup2(null_fd, 0); close(null_fd); }
    execv(argv[0], (char *const *)argv);
    _exit(127);
}

int h_wait_pid(pid_t pid, int timeout_ms, int *status) {
    uint64_t deadline = h_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    for (;;) {
        pid_t w = waitpid(pid, status, WNOHANG);
        if (w == pid) { live_remove(pid); return 1; }
        if (w < 0 && errno != EINTR) return -1;
        if (h_now_ns() >= deadline) return 0;
        h_sleep_ms(5);
    }
}

static bool server_answers(int port) {
    h_conn c;
    if (h_conn_open(&c, "127.0.0.1", port, 200) != 0) return false;
    h_reply r;
    h_reply_init(&r);
    bool ok = h_cmdf(&c, &r, 2000, "PING") == 0 && h_node_is(h_reply_root(&r), "PONG");
    h_reply_free(&r);
    h_conn_close(&c);
    return ok;
}

int h_server_start(h_server *server, const char *berthd, const char *data_dir,
                   const char *const *extra, size_t extra_count, const char *log_path) {
    assert(extra_count + 8 < H_ARGV_MAX);
    memset(server, 0, sizeof *server);
    server->port = h_free_port();
    if (server->port <= 0) return -1;
    snprintf(server->log_path, sizeof server->log_path, "%s", log_path);
    char port_text[16];
    snprintf(port_text, sizeof port_text, "%d", server->port);
    const char *argv[H_ARGV_MAX];
    size_t n = 0;
    argv[n++] = berthd;
    argv[n++] = "--data";
    argv[n++] = data_dir;
    argv[n++] = "--port";
    argv[n++] = port_text;
    for (size_t i = 0; i < extra_count; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    server->pid = h_spawn(argv, log_path);
    if (server->pid < 0) return -1;
    uint64_t deadline = h_now_ns() + (uint64_t)H_START_TIMEOUT_MS * 1000000ull;
    while (h_now_ns() < deadline) {
        int status = 0;
        if (h_wait_pid(server->pid, 0, &status) == 1) { server->pid = -1; return -1; }
        if (server_answers(server->port)) return 0;
        h_sleep_ms(20);
    }
    (void)h_server_stop(server, SIGKILL, 5000);
    return -1;
}

int h_server_stop(h_server *server, int sig, int timeout_ms) {
    if (server->pid <= 0) return -1;
    if (kill(server->pid, sig) != 0) return -1;
    int status = 0;
    int w = h_wait_pid(server->pid, timeout_ms, &status);
    if (w == 0) {
        (void)kill(server->pid, SIGKILL);
        w = h_wait_pid(server->pid, 5000, &status);
    }
    server->pid = -1;
    return w == 1 ? status : -1;
}

uint64_t h_now_ns(void) {
    struct timespec ts;
    int rc = clock_gettime(CLOCK_MONOTONIC, &ts);
    assert(rc == 0);
    (void)rc;
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void h_sleep_ms(uint32_t ms) {
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

long h_rss_kib(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) { kib = strtol(line + 6, NULL, 10); break; }
    }
    fclose(f);
    return kib;
}

long h_fd_count(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (d == NULL) return -1;
    long n = 0;
    for (struct dirent *e = readdir(d); e != NULL; e = readdir(d)) {
        if (e->d_name[0] != '.') n++;
    }
    closedir(d);
    return n;
}

uint64_t h_rng_next(h_rng *rng) {
    /* splitmix64: tiny, seedable, good enough to place kills and pick words. */
    uint64_t z = (rng->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t h_rng_below(h_rng *rng, uint64_t bound) {
    assert(bound > 0);
    return h_rng_next(rng) % bound;
}

long h_raise_nofile(long want) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    rlim_t target = (rlim_t)want;
    if (rl.rlim_max != RLIM_INFINITY && target > rl.rlim_max) target = rl.rlim_max;
    if (rl.rlim_cur < target) {
        rl.rlim_cur = target;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    }
    return (long)rl.rlim_cur;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

uint64_t h_percentile(uint64_t *samples, size_t n, double p) {
    if (n == 0) return 0;
    qsort(samples, n, sizeof *samples, cmp_u64);
    size_t i = (size_t)((p / 100.0) * (double)(n - 1) + 0.5);
    if (i >= n) i = n - 1;
    return samples[i];
}

uint64_t h_recover_commit_log(const char *dir, const char *what) {
    if (!berth_clog_exists(dir)) {
        return 0;
    }
    berth_journal *j = NULL;
    char err[1024] = "";
    berth_journal_options jo = { .defer_meta_sync = true };
    berth_jerr e = berth_journal_open_lmdb(&j, dir, &jo, err, sizeof err);
    if (e != BERTH_J_OK) {
        h_die("%s: open the journal to recover the commit log: %s: %s", what, berth_jerr_name(e), err);
    }
    berth_clog *log = NULL;
    e = berth_clog_open(&log, dir, BERTH_CLOG_BYTES_DEFAULT, err, sizeof err);
    uint64_t moved = 0;
    if (e == BERTH_J_OK) {
        e = berth_clog_checkpoint(log, j, &moved, err, sizeof err);
    }
    if (e != BERTH_J_OK) {
        h_die("%s: recover the commit log: %s: %s", what, berth_jerr_name(e), err);
    }
    berth_clog_close(log);
    berth_journal_close(j);
    return moved;
}
