/* guard.h — a walk over the journal's pages run in a forked child, so that
 * damaged pages kill the child, not the caller (shared by berth and berthd).
 *
 * LMDB trusts its pages: it keeps no checksum, so a flipped byte in a
 * B-tree page (a node pointer, a size) can send a read outside the map and
 * the reader dies of SIGSEGV or SIGBUS before any check of berth's can
 * look at the record. berth's own checks (record hashes, the chain, the
 * meta pages' sizes) run only on bytes LMDB hands back. A walk that reads
 * every page (verify, replay, AT) therefore runs in a child; the child
 * reports its progress and its result over a pipe, and the parent turns a
 * death by signal into a finding that names the last seq the walk checked.
 *
 * The child must not touch any LMDB environment its parent opened (LMDB
 * forbids using an env across fork): it opens the journal itself. Frames on
 * the pipe are a tag byte and a u64 (little-endian, host order: same
 * machine), the result frame followed by that many bytes. */
#ifndef BERTH_GUARD_H
#define BERTH_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define GUARD_RESULT_BYTES_MAX (1ull << 32)  /* a result larger than this is refused */
#define GUARD_TIMEOUT_MS_MAX (1ull << 40)    /* guard_opts.timeout_ms: ~34 years, no overflow in ns */

typedef struct guard_result {
    bool died;                  /* killed by a signal (then signal says which) */
    int signal;
    int exit_code;              /* when !died */
    bool opened;                /* the child reported the journal open */
    uint64_t head_seq;          /* its head then */
    bool progressed;            /* a progress frame came */
    uint64_t checked_seq;       /* the last seq the child reported checked */
    char *bytes;                /* the result frame's bytes (malloc'd), NULL when none */
    size_t len;
    bool timed_out;             /* ran past opts->timeout_ms: SIGKILLed (and reaped unless
                                   unreaped: then died, signal SIGKILL; the frames before it
                                   are kept) */
    bool unreaped;              /* not gone opts->reap_timeout_ms after the end of its frames
                                   (or its SIGKILL): SIGKILLed, left unreaped; the caller owns
                                   pid and must reap it (guard_reap_poll). died, signal and
                                   exit_code then say nothing; no bytes */
    pid_t pid;                  /* the child's, when unreaped */
} guard_result;

/* Runs in the child with the write end of the pipe; returns its exit code
 * (or calls exit itself, where the parent had no threads at the fork). */
typedef int (*guard_fn)(void *arg, int fd);

/* What the caller wants around the child. death_signal: sent to the child
 * when the thread that started it dies (PR_SET_PDEATHSIG; 0 for none):
 * berthd's job thread only ends after its child is reaped, so a killed
 * berthd takes its child along. started, when not NULL, hears the child's
 * pid once it runs and 0 once its frames ended, before it is reaped (so
 * the pid it holds is never one reused by another process): berthd kills
 * a child that outlives its stop with it. timeout_ms: the longest the
 * child may take, from the fork or spawn to the end of its frames, on the
 * monotonic clock (0: no limit); a child past it (hung, stopped, looping on
 * damaged pages whose pointers form a cycle) is SIGKILLed and reaped, and
 * out->timed_out says so. The wait polls the pipe: no busy loop.
 * reap_timeout_ms: the longest the reap may wait once the frames ended (0:
 * no limit). SIGKILL ends even a stopped process, but not one in
 * uninterruptible sleep (D state: a read of a hung network filesystem)
 * until that sleep ends, nor one whose exit a ptracer holds; past the
 * limit the child is SIGKILLed if it was not yet and left to the caller
 * (out->unreaped, out->pid), so a server's thread is not held for ever. */
typedef struct guard_opts {
    int death_signal;
    void (*started)(void *ctx, pid_t pid);
    void *ctx;
    uint64_t timeout_ms;
    uint64_t reap_timeout_ms;
} guard_opts;

/* Fork; the child closes every descriptor but 0, 1, 2 and the pipe's
 * write end (it must hold no listening socket, client socket, LOCK or
 * lock.mdb of its parent's: those would outlive a killed parent), takes
 * opts->death_signal and ends at once if its parent already died; it sets SIGSEGV, SIGBUS, SIGABRT, SIGFPE and SIGILL back to
 * their default action (so it dies of them, whatever handler its parent or
 * a sanitizer installed), runs fn and _exits with its code (stdio is not
 * flushed: fn flushes what it wrote). The parent reads the frames until the
 * child closes the pipe (or opts->timeout_ms passes: the child is then
 * killed) and reaps it. Returns 0 with *out filled (free
 * out->bytes; out->unreaped: the child outlived opts->reap_timeout_ms and
 * is the caller's to reap, whatever its frames were), or -1 with errno when no pipe or child could be had, or a
 * frame was malformed (EPROTO) or too large (EFBIG; the child is then
 * killed, not waited for). opts may be NULL. */
int guard_run(guard_fn fn, void *arg, const guard_opts *opts, guard_result *out);

/* guard_run for a program run afresh: posix_spawn of path with argv, the
 * pipe's write end as descriptor GUARD_SPAWN_FD, no signal blocked. The
 * program calls guard_child_defaults and sends its frames there. For a
 * multi-threaded caller whose fork is not safe: a sanitizer runtime may
 * hold a lock of its own at the fork that the child then waits on for
 * ever (GCC 12's libasan did, in berthd's job children). Same result and
 * errors as guard_run (errno from posix_spawn too). */
#define GUARD_SPAWN_FD 3
int guard_spawn(const char *path, char *const argv[], const guard_opts *opts, guard_result *out);

/* SIGSEGV, SIGBUS, SIGABRT, SIGFPE and SIGILL back to their default
 * action (guard_run's child does it itself). */
void guard_child_defaults(void);

/* In a child (guard_run's does it itself; a spawned program calls it
 * first): close every descriptor above 2 but keep_fd, take death_signal
 * (0: none) for its parent's death, and return -1 when the parent is no
 * longer parent (it died before the signal was set): the caller exits. */
int guard_child_setup(int keep_fd, int death_signal, pid_t parent);

/* In the child: frames for the parent. 0, or -1 with errno. */
int guard_send_opened(int fd, uint64_t head_seq);
int guard_send_checked(int fd, uint64_t seq);
int guard_send_result(int fd, const void *bytes, size_t len);

/* A child guard left unreaped (guard_result.unreaped), reaped if it has
 * ended, without waiting: 1 with *status filled when it was reaped, 0 when
 * it has not ended yet, -1 with errno when pid is no child of ours (ECHILD:
 * someone else reaped it; it is gone either way). */
int guard_reap_poll(pid_t pid, int *status);

/* "SIGSEGV", "SIGBUS", ...; "signal N" for others (static storage). */
const char *guard_signal_name(int sig, char *buf, size_t size);

/* What a child's death by signal says, for berth and berthd alike (one
 * classification, so the CLI and berthd's jobs cannot drift apart):
 * PAGES: SIGSEGV or SIGBUS, a read sent outside the map, which damaged
 * pages are the likely cause of: a finding (CORRUPT). BUG: SIGABRT (an
 * assertion that failed, its message printed first), SIGFPE, SIGILL: an
 * internal error, to be reported with the command; blaming the pages could
 * make an operator throw away a good journal (only an assertion of LMDB's,
 * naming mdb.c, may point at them). OUTSIDE: sent from outside (SIGKILL
 * from the OOM killer or an operator, SIGTERM, SIGINT, SIGPIPE): says
 * nothing of the data or the code. */
typedef enum guard_cause { GUARD_CAUSE_OUTSIDE, GUARD_CAUSE_PAGES, GUARD_CAUSE_BUG } guard_cause;
guard_cause guard_signal_cause(int sig);

/* Last words: handlers for SIGSEGV, SIGBUS and SIGABRT that write one line
 * on stderr (write(2) only: async-signal-safe) naming prog, the data
 * directory, and for SIGSEGV and SIGBUS damaged LMDB pages as the likely
 * cause and `berth journal verify --data DIR` as the next step (for
 * SIGABRT: a failed assertion, an internal error to report), then die of the same signal with its
 * default action (so exit statuses and core dumps stay as they were). The
 * line is composed here; dir may be NULL (the line then says --data DIR).
 * Returns 0, or -1 with errno from sigaction. */
int guard_last_words_install(const char *prog, const char *dir);

#endif
