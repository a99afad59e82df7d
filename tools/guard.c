/* guard.c — damaged pages kill a child, not berth or berthd (guard.h).
 *
 * Owns the fork, the pipe's frames, the child's time limit, reaping the
 * child (within a limit of its own), and the last-words handlers for a
 * process that dies of damaged pages anyway (berthd's start-up replay,
 * which must run in-process to build the state it serves). */
#define _GNU_SOURCE
#include "guard.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define GUARD_TAG_OPENED 'O'
#define GUARD_TAG_CHECKED 'C'
#define GUARD_TAG_RESULT 'R'
#define GUARD_FRAME_BYTES 9u                 /* tag + u64 */
#define GUARD_LINE_BYTES_MAX 1024u           /* each half of the last words */
#define GUARD_CHILD_EXIT_NOFN 125            /* neither exited nor signalled */
#define GUARD_CHILD_EXIT_ORPHAN 126          /* the parent died before the child ran */
#define GUARD_REAP_POLL_MS_MAX 50u           /* the longest pause between looks at a killed child */

extern char **environ;

static const int guard_fault_signals[] = { SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL };
#define GUARD_FAULT_SIGNALS (sizeof guard_fault_signals / sizeof guard_fault_signals[0])

static int write_all(int fd, const void *bytes, size_t len) {
    const char *p = bytes;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The parent's end of the pipe and the time its child has. */
typedef struct guard_pipe {
    int fd;
    uint64_t deadline_ns;       /* CLOCK_MONOTONIC; 0: none */
    bool timed_out;             /* the deadline passed before the child's frames ended */
} guard_pipe;

/* The monotonic clock: a wall-clock step (NTP, an operator) must neither
 * kill a healthy child nor spare a hung one. */
static uint64_t mono_ns(void) {
    struct timespec ts;
    int rc = clock_gettime(CLOCK_MONOTONIC, &ts);
    assert(rc == 0);
    (void)rc;
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t deadline_of(const guard_opts *opts) {
    if (opts == NULL || opts->timeout_ms == 0) {
        return 0;
    }
    assert(opts->timeout_ms <= GUARD_TIMEOUT_MS_MAX);
    return mono_ns() + opts->timeout_ms * 1000000ull;
}

/* Until p->fd has bytes or its end: 0; -1 with p->timed_out when the
 * deadline passed first, -1 with errno when ppoll failed. Without a
 * deadline the read itself blocks. ppoll sleeps: no busy loop. */
static int wait_readable(guard_pipe *p) {
    if (p->deadline_ns == 0) {
        return 0;
    }
    for (;;) {
        uint64_t now = mono_ns();
        if (now >= p->deadline_ns) {
            p->timed_out = true;
            return -1;
        }
        uint64_t left_ns = p->deadline_ns - now;
        struct timespec left = { (time_t)(left_ns / 1000000000ull), (long)(left_ns % 1000000000ull) };
        struct pollfd pfd = { p->fd, POLLIN, 0 };
        int n = ppoll(&pfd, 1, &left, NULL);
        if (n > 0) {
            return 0;   /* POLLIN, POLLHUP or POLLERR: the read tells which */
        }
        if (n < 0 && errno != EINTR) {
            return -1;
        }
        /* 0 (the time is up: the clock above says so) or a signal */
    }
}

/* Bytes read, short only at end of file; -1 on an error or a timeout. */
static ssize_t read_full(guard_pipe *pipe_end, void *bytes, size_t len) {
    char *p = bytes;
    size_t got = 0;
    while (got < len) {
        if (wait_readable(pipe_end) != 0) {
            return -1;
        }
        ssize_t n = read(pipe_end->fd, p + got, len - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return -1;
        }
        if (n == 0) {
            break;
        }
        got += (size_t)n;
    }
    return (ssize_t)got;
}

static int send_frame(int fd, char tag, uint64_t value) {
    unsigned char frame[GUARD_FRAME_BYTES];
    frame[0] = (unsigned char)tag;
    memcpy(frame + 1, &value, sizeof value);
    return write_all(fd, frame, sizeof frame);
}

int guard_send_opened(int fd, uint64_t head_seq) {
    return send_frame(fd, GUARD_TAG_OPENED, head_seq);
}

int guard_send_checked(int fd, uint64_t seq) {
    return send_frame(fd, GUARD_TAG_CHECKED, seq);
}

int guard_send_result(int fd, const void *bytes, size_t len) {
    assert(bytes != NULL || len == 0);
    if (send_frame(fd, GUARD_TAG_RESULT, (uint64_t)len) != 0) {
        return -1;
    }
    return write_all(fd, bytes, len);
}

/* The parent's half: every frame until the child closes its end. */
static int read_frames(guard_pipe *pipe_end, guard_result *out) {
    for (;;) {
        unsigned char frame[GUARD_FRAME_BYTES];
        ssize_t n = read_full(pipe_end, frame, sizeof frame);
        if (n == 0) {
            return 0;
        }
        if (n < 0) {
            return -1;
        }
        if ((size_t)n < sizeof frame) {
            /* cut mid-frame: the child died writing it; what came is kept */
            return 0;
        }
        uint64_t value;
        memcpy(&value, frame + 1, sizeof value);
        if (frame[0] == GUARD_TAG_OPENED) {
            out->opened = true;
            out->head_seq = value;
        } else if (frame[0] == GUARD_TAG_CHECKED) {
            out->progressed = true;
            out->checked_seq = value;
        } else if (frame[0] == GUARD_TAG_RESULT && out->bytes == NULL) {
            if (value > GUARD_RESULT_BYTES_MAX) {
                errno = EFBIG;
                return -1;
            }
            out->bytes = malloc(value > 0 ? (size_t)value : 1);
            if (out->bytes == NULL) {
                return -1;
            }
            n = read_full(pipe_end, out->bytes, (size_t)value);
            if (n < 0) {
                return -1;
            }
            if ((uint64_t)n < value) {   /* cut: a result only counts whole */
                free(out->bytes);
                out->bytes = NULL;
                return 0;
            }
            out->len = (size_t)value;
        } else {
            errno = EPROTO;
            return -1;
        }
    }
}

void guard_child_defaults(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < GUARD_FAULT_SIGNALS; i++) {
        (void)sigaction(guard_fault_signals[i], &sa, NULL);
    }
}

/* Descriptors lo..hi closed (hi >= lo); a kernel without close_range
 * (before 5.9) gets a loop up to the descriptor limit. */
static void close_fds(unsigned lo, unsigned hi) {
    if (close_range(lo, hi, 0) == 0) {
        return;
    }
    struct rlimit rl;
    unsigned top = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
                           rl.rlim_cur < (rlim_t)hi
                       ? (unsigned)rl.rlim_cur
                       : (hi < 65536u ? hi + 1 : 65536u);
    for (unsigned fd = lo; fd < top; fd++) {
        (void)close((int)fd);
    }
}

int guard_child_setup(int keep_fd, int death_signal, pid_t parent) {
    assert(keep_fd > STDERR_FILENO);
    if (keep_fd > STDERR_FILENO + 1) {
        close_fds(STDERR_FILENO + 1, (unsigned)keep_fd - 1);
    }
    close_fds((unsigned)keep_fd + 1, ~0u);
    if (death_signal != 0 && prctl(PR_SET_PDEATHSIG, (unsigned long)death_signal) != 0) {
        return -1;
    }
    /* A parent that died before the prctl sends nothing: ask. */
    return getppid() == parent ? 0 : -1;
}

int guard_reap_poll(pid_t pid, int *status) {
    assert(pid > 0 && status != NULL);
    pid_t waited;
    do {
        waited = waitpid(pid, status, WNOHANG);
    } while (waited < 0 && errno == EINTR);
    if (waited < 0) {
        return -1;
    }
    return waited == pid ? 1 : 0;
}

/* pid reaped: pid; not ended within timeout_ms (0: no limit): 0; -1 with
 * errno. Polls with WNOHANG, sleeping 1 ms, then longer up to
 * GUARD_REAP_POLL_MS_MAX: a killed child usually goes within the first. */
static pid_t reap_within(pid_t pid, int *status, uint64_t timeout_ms) {
    if (timeout_ms == 0) {
        pid_t waited;
        do {
            waited = waitpid(pid, status, 0);
        } while (waited < 0 && errno == EINTR);
        return waited;
    }
    assert(timeout_ms <= GUARD_TIMEOUT_MS_MAX);
    uint64_t deadline_ns = mono_ns() + timeout_ms * 1000000ull;
    uint64_t pause_ms = 1;
    for (;;) {
        int rc = guard_reap_poll(pid, status);
        if (rc != 0) {
            return rc > 0 ? pid : -1;
        }
        uint64_t now = mono_ns();
        if (now >= deadline_ns) {
            return 0;
        }
        uint64_t pause_ns = pause_ms * 1000000ull;
        if (pause_ns > deadline_ns - now) {
            pause_ns = deadline_ns - now;
        }
        struct timespec ts = { (time_t)(pause_ns / 1000000000ull), (long)(pause_ns % 1000000000ull) };
        (void)nanosleep(&ts, NULL);   /* EINTR: the loop looks again */
        pause_ms = pause_ms * 2 < GUARD_REAP_POLL_MS_MAX ? pause_ms * 2 : GUARD_REAP_POLL_MS_MAX;
    }
}

/* The parent's side: the frames until the child closes the pipe (or its
 * time is up), then the child itself. */
static int collect(pid_t pid, int fd, uint64_t deadline_ns, const guard_opts *opts,
                   guard_result *out) {
    assert(pid > 0 && fd >= 0);
    guard_pipe pipe_end = { fd, deadline_ns, false };
    int rc = read_frames(&pipe_end, out);
    int saved = errno;
    if (opts != NULL && opts->started != NULL) {
        opts->started(opts->ctx, 0);
    }
    if (rc != 0) {
        /* A child that sends what it may not, or is past its time, will
         * not be waited for. SIGKILL ends a stopped child too. */
        (void)kill(pid, SIGKILL);
    }
    /* A child still writing when the parent gave up on its frames gets
     * EPIPE (or SIGPIPE) once the read end closes, and ends. */
    (void)close(fd);
    /* The child alone held the pipe's write end, so its end came with the
     * child's exit (or the SIGKILL above) — yet a process in D state is not
     * gone until its sleep ends: the reap has its own limit. */
    int status = 0;
    pid_t waited = reap_within(pid, &status, opts != NULL ? opts->reap_timeout_ms : 0);
    if (waited == 0) {
        (void)kill(pid, SIGKILL);   /* if not yet: it may not go on on its own either */
        free(out->bytes);
        out->bytes = NULL;
        out->len = 0;
        out->timed_out = pipe_end.timed_out;
        out->unreaped = true;
        out->pid = pid;
        return 0;
    }
    if (pipe_end.timed_out) {
        /* Whatever the frames began to say is not a whole answer. */
        free(out->bytes);
        out->bytes = NULL;
        out->len = 0;
        out->timed_out = true;
        rc = 0;
    }
    if (rc != 0) {
        free(out->bytes);
        out->bytes = NULL;
        errno = saved;
        return -1;
    }
    if (waited != pid) {
        free(out->bytes);
        out->bytes = NULL;
        return -1;
    }
    if (WIFSIGNALED(status)) {
        out->died = true;
        out->signal = WTERMSIG(status);
    } else {
        out->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : GUARD_CHILD_EXIT_NOFN;
    }
    return 0;
}

int guard_run(guard_fn fn, void *arg, const guard_opts *opts, guard_result *out) {
    assert(fn != NULL && out != NULL);
    memset(out, 0, sizeof *out);
    uint64_t deadline_ns = deadline_of(opts);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        return -1;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int saved = errno;
        (void)close(fds[0]);
        (void)close(fds[1]);
        errno = saved;
        return -1;
    }
    if (pid == 0) {
        if (guard_child_setup(fds[1], opts != NULL ? opts->death_signal : 0, parent) != 0) {
            _exit(GUARD_CHILD_EXIT_ORPHAN);
        }
        guard_child_defaults();
        int code = fn(arg, fds[1]);
        _exit(code);
    }
    (void)close(fds[1]);
    if (opts != NULL && opts->started != NULL) {
        opts->started(opts->ctx, pid);
    }
    return collect(pid, fds[0], deadline_ns, opts, out);
}

int guard_spawn(const char *path, char *const argv[], const guard_opts *opts, guard_result *out) {
    assert(path != NULL && argv != NULL && out != NULL);
    memset(out, 0, sizeof *out);
    uint64_t deadline_ns = deadline_of(opts);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        return -1;
    }
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    sigset_t none;
    sigemptyset(&none);
    pid_t pid = -1;
    int rc = posix_spawn_file_actions_init(&actions);
    if (rc != 0) {
        goto fail_fds;
    }
    rc = posix_spawnattr_init(&attr);
    if (rc != 0) {
        goto fail_actions;
    }
    rc = posix_spawn_file_actions_adddup2(&actions, fds[1], GUARD_SPAWN_FD);
    if (rc == 0) {
        rc = posix_spawnattr_setsigmask(&attr, &none);
    }
    if (rc == 0) {
        rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    }
    if (rc == 0) {
        rc = posix_spawn(&pid, path, &actions, &attr, argv, environ);
    }
    (void)posix_spawnattr_destroy(&attr);
fail_actions:
    (void)posix_spawn_file_actions_destroy(&actions);
fail_fds:
    (void)close(fds[1]);
    if (rc != 0) {
        (void)close(fds[0]);
        errno = rc;
        return -1;
    }
    if (opts != NULL && opts->started != NULL) {
        opts->started(opts->ctx, pid);
    }
    return collect(pid, fds[0], deadline_ns, opts, out);
}

const char *guard_signal_name(int sig, char *buf, size_t size) {
    switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGABRT: return "SIGABRT";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    case SIGKILL: return "SIGKILL";
    case SIGTERM: return "SIGTERM";
    case SIGPIPE: return "SIGPIPE";
    default: break;
    }
    assert(buf != NULL && size > 0);
    snprintf(buf, size, "signal %d", sig);
    return buf;
}

guard_cause guard_signal_cause(int sig) {
    if (sig == SIGSEGV || sig == SIGBUS) {
        return GUARD_CAUSE_PAGES;
    }
    for (size_t i = 0; i < GUARD_FAULT_SIGNALS; i++) {
        if (guard_fault_signals[i] == sig) {
            return GUARD_CAUSE_BUG;   /* SIGABRT, SIGFPE, SIGILL */
        }
    }
    return GUARD_CAUSE_OUTSIDE;
}

/* ---- last words ---------------------------------------------------------- */

/* Composed at install: the handler only writes them around the signal's name. */
static char last_words_head[GUARD_LINE_BYTES_MAX];
static size_t last_words_head_len;
static char last_words_tail[GUARD_LINE_BYTES_MAX];
static size_t last_words_tail_len;
static char last_words_abort_tail[GUARD_LINE_BYTES_MAX];   /* SIGABRT's: an assertion */
static size_t last_words_abort_tail_len;

static void last_words_put(const char *bytes, size_t len) {
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, bytes, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return;
        }
        bytes += n;
        len -= (size_t)n;
    }
}

static void last_words_handler(int sig) {
    int saved = errno;
    const char *name = sig == SIGSEGV ? "SIGSEGV" : sig == SIGBUS ? "SIGBUS" : "SIGABRT";
    last_words_put(last_words_head, last_words_head_len);
    last_words_put(name, strlen(name));
    if (sig == SIGABRT) {
        last_words_put(last_words_abort_tail, last_words_abort_tail_len);
    } else {
        last_words_put(last_words_tail, last_words_tail_len);
    }
    errno = saved;
    /* SA_RESETHAND put the default action back; raised again, the signal
     * is delivered when this handler returns (a fault would recur anyway)
     * and ends the process as it would have without us. */
    (void)raise(sig);
}

int guard_last_words_install(const char *prog, const char *dir) {
    assert(prog != NULL);
    const char *shown = dir != NULL ? dir : "DIR";
    int n = snprintf(last_words_head, sizeof last_words_head, "%s: FATAL ", prog);
    if (n < 0 || (size_t)n >= sizeof last_words_head) {
        n = 0;
    }
    last_words_head_len = (size_t)n;
    n = snprintf(last_words_tail, sizeof last_words_tail,
                 " (data directory %s): the likely cause is damaged journal pages in "
                 "%s/data.mdb (LMDB does not checksum its pages, so one flipped byte can crash "
                 "a reader); next: `berth journal verify --data %s` names the damage; restore "
                 "the directory from a copy\n",
                 shown, shown, shown);
    if (n < 0 || (size_t)n >= sizeof last_words_tail) {
        n = snprintf(last_words_tail, sizeof last_words_tail,
                     " reading the data directory: most likely damaged LMDB pages; run "
                     "`berth journal verify --data DIR`\n");
        assert(n > 0 && (size_t)n < sizeof last_words_tail);
    }
    last_words_tail_len = (size_t)n;
    /* An assertion that failed is a bug, not evidence about the data; only
     * LMDB's own (its message names mdb.c) come from its pages. */
    n = snprintf(last_words_abort_tail, sizeof last_words_abort_tail,
                 " (data directory %s): an internal check failed (its message is above): a bug "
                 "in %s, not damage to the data; please report it with the command that ran "
                 "(only if the message names mdb.c, LMDB's, may %s/data.mdb be damaged: "
                 "`berth journal verify --data %s`)\n",
                 shown, prog, shown, shown);
    if (n < 0 || (size_t)n >= sizeof last_words_abort_tail) {
        n = snprintf(last_words_abort_tail, sizeof last_words_abort_tail,
                     ": an internal check failed (its message is above): a bug; please report "
                     "it with the command that ran\n");
        assert(n > 0 && (size_t)n < sizeof last_words_abort_tail);
    }
    last_words_abort_tail_len = (size_t)n;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = last_words_handler;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    const int sigs[] = { SIGSEGV, SIGBUS, SIGABRT };
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        if (sigaction(sigs[i], &sa, NULL) != 0) {
            return -1;
        }
    }
    return 0;
}
