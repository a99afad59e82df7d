/* harness.h — the shared toolkit of berth's reliability programs.
 *
 * Owns: a small RESP2/RESP3 client (blocking and incremental), starting and
 * killing berthd, a seeded PRNG and a few measurements (time, RSS). The
 * crash loop, the full-disk test and the hostile-client test all drive a
 * real berthd the way a controller would, so they share this code instead
 * of each growing its own half-client. Nothing here links berth's own
 * libraries: the client must not share a bug with the server it judges. */
#ifndef BERTH_HARNESS_H
#define BERTH_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define H_REPLY_NODES_MAX 1000000u      /* nodes in one parsed reply */
#define H_REPLY_BYTES_MAX (64u << 20)   /* one reply's bytes */
#define H_LINE_LEN_MAX 64               /* a RESP header line (type, length) */
#define H_WORDS_MAX 600                 /* words in one command sent by h_cmdf */
#define H_CMD_TEXT_LEN_MAX 65536        /* text given to h_cmdf */
#define H_START_TIMEOUT_MS 60000        /* berthd must answer PING within this after spawn */
#define H_ARGV_MAX 64                   /* berthd command-line words */

typedef enum h_type {
    H_NONE = 0,
    H_SIMPLE,   /* +OK */
    H_ERROR,    /* -ERR ... */
    H_INT,      /* :42 */
    H_BULK,     /* $n */
    H_NIL,      /* $-1, *-1, _ */
    H_ARRAY,    /* *n */
    H_MAP,      /* %n: 2n children, key then value */
    H_SET,      /* ~n */
    H_PUSH,     /* >n */
    H_DOUBLE,   /* ,1.5 */
    H_BOOL,     /* #t */
    H_VERBATIM, /* =n */
    H_BIGNUM,   /* (n */
} h_type;

typedef struct h_node {
    h_type type;
    int64_t integer;        /* H_INT, H_BOOL; aggregates: element count */
    const char *str;        /* SIMPLE, ERROR, BULK, DOUBLE, VERBATIM, BIGNUM: into h_reply.bytes */
    size_t len;
    uint32_t first_child;   /* index into nodes; UINT32_MAX: none */
    uint32_t next_sibling;  /* UINT32_MAX: last */
} h_node;

/* One complete reply. Owns its node array and a copy of its bytes. */
typedef struct h_reply {
    h_node *nodes;          /* nodes[0] is the root */
    uint32_t count;
    uint32_t cap;
    char *bytes;
    size_t bytes_len;
} h_reply;

void h_reply_init(h_reply *reply);
void h_reply_free(h_reply *reply);
const h_node *h_reply_root(const h_reply *reply);
/* i-th child of an aggregate node; NULL when out of range. */
const h_node *h_reply_child(const h_reply *reply, const h_node *node, uint32_t i);
/* For H_MAP or a flat RESP2 field/value array: the value after key `key`. */
const h_node *h_reply_field(const h_reply *reply, const h_node *node, const char *key);
/* True when the node is a string-like reply equal to text. */
bool h_node_is(const h_node *node, const char *text);
/* True when an error node starts with the code word (e.g. "FULL"). */
bool h_node_error_code(const h_node *node, const char *code);

/* Parse one reply from buf[0..len). Returns bytes consumed (>0), 0 when
 * more bytes are needed, -1 on a protocol violation. */
ssize_t h_parse(const char *buf, size_t len, h_reply *out);

/* A client connection with its own read buffer. */
typedef struct h_conn {
    int fd;
    char *buf;
    size_t len;
    size_t cap;
} h_conn;

void h_conn_init(h_conn *conn);
/* Connect to host:port; blocking I/O with the given timeout. 0 or -1. */
int h_conn_open(h_conn *conn, const char *host, int port, int timeout_ms);
void h_conn_close(h_conn *conn);
/* Append the RESP array of argv to out (grows *out). 0 or -1. */
int h_encode_argv(char **out, size_t *len, size_t *cap, size_t argc,
                  const char *const *argv, const size_t *lens);
/* Write every byte (blocking, poll-based). 0 or -1. */
int h_write_all(int fd, const char *bytes, size_t len, int timeout_ms);
/* Read one reply (blocking up to timeout_ms). 0, or -1 on EOF, timeout or
 * protocol error. */
int h_read_reply(h_conn *conn, h_reply *reply, int timeout_ms);
/* Non-blocking: pull whatever is readable into the buffer. Returns bytes
 * read (>0), 0 when nothing was ready, -1 on EOF or error. */
ssize_t h_conn_fill(h_conn *conn);
/* Take one complete reply from the buffer if there is one: 1 taken,
 * 0 incomplete, -1 protocol error. */
int h_conn_take(h_conn *conn, h_reply *reply);
/* Send a command given as space-separated words and read its reply. */
int h_cmdf(h_conn *conn, h_reply *reply, int timeout_ms, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* berthd processes. */
typedef struct h_server {
    pid_t pid;
    int port;
    char log_path[512];
} h_server;

/* A TCP port that was free a moment ago on 127.0.0.1. */
int h_free_port(void);
/* Spawn argv (argv[0] is the program path) with stdout and stderr appended
 * to log_path. Returns the pid or -1. */
pid_t h_spawn(const char *const *argv, const char *log_path);
/* Start berthd: path --data dir --port p plus extra words; waits until it
 * answers PING. Returns 0, or -1 (then the process is reaped). */
int h_server_start(h_server *server, const char *berthd, const char *data_dir,
                   const char *const *extra, size_t extra_count, const char *log_path);
/* Send sig and reap. Returns the wait status, or -1. */
int h_server_stop(h_server *server, int sig, int timeout_ms);
/* Wait for pid to exit within timeout_ms: 1 exited (*status set), 0 still running, -1 error. */
int h_wait_pid(pid_t pid, int timeout_ms, int *status);

/* Measurements and randomness. */
uint64_t h_now_ns(void);
void h_sleep_ms(uint32_t ms);
/* VmRSS of pid in KiB, or -1. */
long h_rss_kib(pid_t pid);
/* Open file descriptors of pid, or -1. */
long h_fd_count(pid_t pid);
typedef struct h_rng { uint64_t s; } h_rng;
uint64_t h_rng_next(h_rng *rng);
/* Uniform in [0, bound); bound > 0. */
uint64_t h_rng_below(h_rng *rng, uint64_t bound);
/* Raise RLIMIT_NOFILE to at least want (or the hard limit). Returns the soft limit now. */
long h_raise_nofile(long want);
/* Percentile p (0..100) of n samples, sorting them in place. */
uint64_t h_percentile(uint64_t *samples, size_t n, double p);

/* What berthd's start does first (tools/berthd.c): move the frames its
 * commit log holds past LMDB's head into LMDB, so an offline check sees
 * the journal that start would serve. Returns the records moved (0 when
 * there is no DIR/commit.log); dies naming what on failure. */
uint64_t h_recover_commit_log(const char *dir, const char *what);

/* Print to stderr with the program name and exit(1): a harness failure. */
void h_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
