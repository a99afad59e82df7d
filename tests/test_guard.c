/* test_guard.c — unit tests of the walk's child (tools/guard.c).
 *
 * Owns the proof that guard_run's child holds none of its parent's
 * descriptors but 0-2 and its pipe, that the caller hears the child's pid
 * and then 0 before the reap, that a child sending a frame it may not
 * (an unknown tag, a result over the limit) is killed, not waited for,
 * and that one past guard_opts.timeout_ms (stopped, or sleeping) is
 * killed and reaped at its time, keeping the frames it sent; that one
 * killed but not gone (its exit held by a tracer, as D state would) is
 * left unreaped past guard_opts.reap_timeout_ms; and which signal blames
 * what (guard_signal_cause). */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "guard.h"

#define TEST_CHILD_SLEEP_S 60      /* far past Check's timeout: a wait on it fails */
#define TEST_PIDS_MAX 4
#define TEST_TIMEOUT_MS 300        /* the limit the timeout cases give their child */
#define TEST_TIMEOUT_SLACK_MS 4000 /* a loaded machine's lateness past it */

static pid_t started_pids[TEST_PIDS_MAX];
static int started_count;

static void note_started(void *ctx, pid_t pid) {
    (void)ctx;
    if (started_count < TEST_PIDS_MAX) {
        started_pids[started_count] = pid;
    }
    started_count++;
}

static int child_bad_tag(void *arg, int fd) {
    (void)arg;
    unsigned char frame[9] = { 'X' };
    if (write(fd, frame, sizeof frame) != (ssize_t)sizeof frame) {
        return 1;
    }
    (void)sleep(TEST_CHILD_SLEEP_S);
    return 0;
}

static int child_huge_result(void *arg, int fd) {
    (void)arg;
    unsigned char frame[9] = { 'R' };
    uint64_t len = GUARD_RESULT_BYTES_MAX + 1;
    memcpy(frame + 1, &len, sizeof len);
    if (write(fd, frame, sizeof frame) != (ssize_t)sizeof frame) {
        return 1;
    }
    (void)sleep(TEST_CHILD_SLEEP_S);
    return 0;
}

/* Reports the journal open and 16384 records checked, then hangs the way
 * a job's child caught by SIGSTOP does. */
static int child_stops(void *arg, int fd) {
    (void)arg;
    if (guard_send_opened(fd, 100000) != 0 || guard_send_checked(fd, 16384) != 0) {
        return 1;
    }
    (void)raise(SIGSTOP);
    return 0;
}

/* Starts its result frame, then sleeps: a cut result is no result. */
static int child_sleeps_mid_result(void *arg, int fd) {
    (void)arg;
    unsigned char frame[9] = { 'R' };
    uint64_t len = 8;
    memcpy(frame + 1, &len, sizeof len);
    if (write(fd, frame, sizeof frame) != (ssize_t)sizeof frame || write(fd, "half", 4) != 4) {
        return 1;
    }
    (void)sleep(TEST_CHILD_SLEEP_S);
    return 0;
}

static int child_answers(void *arg, int fd) {
    (void)arg;
    return guard_send_result(fd, "done", 4) == 0 ? 0 : 1;
}

static uint64_t test_mono_ms(void) {
    struct timespec ts;
    ck_assert_int_eq(clock_gettime(CLOCK_MONOTONIC, &ts), 0);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* fn's child runs past TEST_TIMEOUT_MS: killed at its time and reaped. */
static void expect_timed_out(guard_fn fn, guard_result *res) {
    started_count = 0;
    const guard_opts opts = { SIGKILL, note_started, NULL, TEST_TIMEOUT_MS, 0 };
    uint64_t t0 = test_mono_ms();
    ck_assert_int_eq(guard_run(fn, NULL, &opts, res), 0);
    uint64_t took_ms = test_mono_ms() - t0;
    ck_assert_uint_ge(took_ms, TEST_TIMEOUT_MS);
    ck_assert_uint_lt(took_ms, TEST_TIMEOUT_MS + TEST_TIMEOUT_SLACK_MS);
    ck_assert(res->timed_out);
    ck_assert(res->died);
    ck_assert_int_eq(res->signal, SIGKILL);
    ck_assert_ptr_null(res->bytes);
    ck_assert_int_eq(started_count, 2);
    ck_assert_int_eq(started_pids[1], 0);
    ck_assert_int_eq(kill(started_pids[0], 0) == -1 && errno == ESRCH, 1);
}

START_TEST(stopped_child_killed_at_timeout) {
    guard_result res;
    expect_timed_out(child_stops, &res);
    ck_assert(res.opened);
    ck_assert_uint_eq(res.head_seq, 100000);
    ck_assert(res.progressed);
    ck_assert_uint_eq(res.checked_seq, 16384);
}
END_TEST

START_TEST(cut_result_at_timeout_is_none) {
    guard_result res;
    expect_timed_out(child_sleeps_mid_result, &res);
    ck_assert_uint_eq(res.len, 0);
}
END_TEST

START_TEST(child_in_time_unaffected) {
    const guard_opts opts = { SIGKILL, NULL, NULL, TEST_TIMEOUT_MS, 0 };
    guard_result res;
    ck_assert_int_eq(guard_run(child_answers, NULL, &opts, &res), 0);
    ck_assert(!res.timed_out);
    ck_assert(!res.died);
    ck_assert_int_eq(res.exit_code, 0);
    ck_assert_uint_eq(res.len, 4);
    ck_assert_int_eq(memcmp(res.bytes, "done", 4), 0);
    free(res.bytes);
}
END_TEST

/* Exit 0 when only 0-2 and the pipe are open; fd_seen (the parent's, open
 * without close-on-exec) must be gone. */
static int child_fds(void *arg, int fd) {
    int inherited = *(const int *)arg;
    if (fcntl(inherited, F_GETFD) != -1 || errno != EBADF) {
        return 2;
    }
    for (int std = 0; std <= 2; std++) {
        if (fcntl(std, F_GETFD) == -1) {
            return 3;
        }
    }
    if (fcntl(fd, F_GETFD) == -1) {
        return 4;
    }
    return 0;
}

static void expect_refused(guard_fn fn, int err) {
    started_count = 0;
    const guard_opts opts = { 0, note_started, NULL, 0, 0 };
    guard_result res;
    errno = 0;
    ck_assert_int_eq(guard_run(fn, NULL, &opts, &res), -1);
    ck_assert_int_eq(errno, err);
    ck_assert_int_eq(started_count, 2);
    ck_assert_int_gt(started_pids[0], 0);
    ck_assert_int_eq(started_pids[1], 0);
    /* reaped: the pid names no process of ours any more */
    ck_assert_int_eq(kill(started_pids[0], 0) == -1 && errno == ESRCH, 1);
}

START_TEST(malformed_frame_kills_child) {
    expect_refused(child_bad_tag, EPROTO);
}
END_TEST

START_TEST(oversized_result_kills_child) {
    expect_refused(child_huge_result, EFBIG);
}
END_TEST

START_TEST(child_holds_no_parent_descriptor) {
    int fd = open("/dev/null", O_RDONLY);   /* no O_CLOEXEC: a fork keeps it */
    ck_assert_int_ge(fd, 0);
    int high = fcntl(fd, F_DUPFD, 100);     /* above the pipe's end too */
    ck_assert_int_ge(high, 100);
    guard_result res;
    started_count = 0;
    const guard_opts opts = { SIGKILL, note_started, NULL, 0, 0 };
    ck_assert_int_eq(guard_run(child_fds, &fd, &opts, &res), 0);
    ck_assert(!res.died);
    ck_assert_int_eq(res.exit_code, 0);
    ck_assert_int_eq(guard_run(child_fds, &high, NULL, &res), 0);
    ck_assert_int_eq(res.exit_code, 0);
    ck_assert_int_eq(started_count, 2);
    ck_assert_int_eq(started_pids[1], 0);
    ck_assert_int_eq(close(fd), 0);
    ck_assert_int_eq(close(high), 0);
}
END_TEST

/* A tracer that attaches to pid and never waits for it: once pid dies it
 * stays a zombie its parent cannot reap until the tracer ends, which is
 * how a killed child in D state (a read of a hung filesystem) looks to
 * its parent. The tracer's pid, once attached. */
static pid_t hold_exit(pid_t pid) {
    int ready[2];
    ck_assert_int_eq(pipe(ready), 0);
    pid_t tracer = fork();
    ck_assert_int_ge(tracer, 0);
    if (tracer == 0) {
        /* dies with the test's process, should an assertion end it first */
        (void)prctl(PR_SET_PDEATHSIG, (unsigned long)SIGKILL);
        char ok = ptrace(PTRACE_SEIZE, pid, NULL, NULL) == 0 ? 'y' : 'n';
        if (write(ready[1], &ok, 1) != 1) {
            _exit(1);
        }
        for (;;) {
            (void)pause();
        }
    }
    char ok = 0;
    ck_assert_int_eq(read(ready[0], &ok, 1), 1);
    ck_assert_int_eq(ok, 'y');
    (void)close(ready[0]);
    (void)close(ready[1]);
    return tracer;
}

static pid_t held_tracer;

static void hold_started(void *ctx, pid_t pid) {
    note_started(ctx, pid);
    if (pid > 0) {
        held_tracer = hold_exit(pid);
    }
}

static int child_sleeps(void *arg, int fd) {
    (void)arg;
    (void)fd;
    (void)sleep(TEST_CHILD_SLEEP_S);
    return 0;
}

/* A child killed at its time that does not go is not waited for past
 * reap_timeout_ms: it comes back unreaped, its pid the caller's, and
 * guard_reap_poll reaps it once it went (without the limit: Check's
 * timeout, the reap waiting on the tracer). */
START_TEST(killed_child_not_gone_left_unreaped) {
    started_count = 0;
    const guard_opts opts = { SIGKILL, hold_started, NULL, TEST_TIMEOUT_MS, TEST_TIMEOUT_MS };
    guard_result res;
    uint64_t t0 = test_mono_ms();
    ck_assert_int_eq(guard_run(child_sleeps, NULL, &opts, &res), 0);
    uint64_t took_ms = test_mono_ms() - t0;
    ck_assert_uint_ge(took_ms, 2 * TEST_TIMEOUT_MS);
    ck_assert_uint_lt(took_ms, 2 * TEST_TIMEOUT_MS + TEST_TIMEOUT_SLACK_MS);
    ck_assert(res.unreaped);
    ck_assert(res.timed_out);
    ck_assert_ptr_null(res.bytes);
    ck_assert_int_eq(started_count, 2);
    ck_assert_int_eq(res.pid, started_pids[0]);
    int status = 0;
    ck_assert_int_eq(guard_reap_poll(res.pid, &status), 0);
    ck_assert_int_eq(kill(held_tracer, SIGKILL), 0);
    ck_assert_int_eq(waitpid(held_tracer, &status, 0), held_tracer);
    int got = 0;
    for (int i = 0; i < 400 && got == 0; i++) {
        got = guard_reap_poll(res.pid, &status);
        if (got == 0) {
            (void)usleep(10000);
        }
    }
    ck_assert_int_eq(got, 1);
    ck_assert(WIFSIGNALED(status));
    ck_assert_int_eq(WTERMSIG(status), SIGKILL);
    ck_assert_int_eq(guard_reap_poll(res.pid, &status), -1);   /* ECHILD: gone */
}
END_TEST

/* With a reap limit, a child that ends by itself is reaped as before. */
START_TEST(reap_limit_leaves_healthy_child_alone) {
    const guard_opts opts = { SIGKILL, NULL, NULL, TEST_TIMEOUT_MS, TEST_TIMEOUT_MS };
    guard_result res;
    ck_assert_int_eq(guard_run(child_answers, NULL, &opts, &res), 0);
    ck_assert(!res.unreaped && !res.died && !res.timed_out);
    ck_assert_int_eq(res.exit_code, 0);
    ck_assert_uint_eq(res.len, 4);
    free(res.bytes);
}
END_TEST

static int child_aborts(void *arg, int fd) {
    (void)arg;
    (void)fd;
    abort();   /* what a failed assert does; guard's child takes the default action */
}

/* One classification for berth and berthd's jobs: only SIGSEGV and SIGBUS
 * blame the pages; SIGABRT, SIGFPE and SIGILL are a bug; the rest came
 * from outside. A child dead of abort() is reported with its signal. */
START_TEST(signal_causes) {
    ck_assert_int_eq(guard_signal_cause(SIGSEGV), GUARD_CAUSE_PAGES);
    ck_assert_int_eq(guard_signal_cause(SIGBUS), GUARD_CAUSE_PAGES);
    ck_assert_int_eq(guard_signal_cause(SIGABRT), GUARD_CAUSE_BUG);
    ck_assert_int_eq(guard_signal_cause(SIGFPE), GUARD_CAUSE_BUG);
    ck_assert_int_eq(guard_signal_cause(SIGILL), GUARD_CAUSE_BUG);
    const int outside[] = { SIGKILL, SIGTERM, SIGINT, SIGPIPE, SIGHUP, SIGQUIT, SIGUSR1 };
    for (size_t i = 0; i < sizeof outside / sizeof outside[0]; i++) {
        ck_assert_int_eq(guard_signal_cause(outside[i]), GUARD_CAUSE_OUTSIDE);
    }
    guard_result res;
    ck_assert_int_eq(guard_run(child_aborts, NULL, NULL, &res), 0);
    ck_assert(res.died);
    ck_assert_int_eq(res.signal, SIGABRT);
    ck_assert_int_eq(guard_signal_cause(res.signal), GUARD_CAUSE_BUG);
}
END_TEST

static Suite *guard_suite(void) {
    Suite *s = suite_create("guard");
    TCase *tc = tcase_create("child");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, malformed_frame_kills_child);
    tcase_add_test(tc, oversized_result_kills_child);
    tcase_add_test(tc, child_holds_no_parent_descriptor);
    tcase_add_test(tc, stopped_child_killed_at_timeout);
    tcase_add_test(tc, cut_result_at_timeout_is_none);
    tcase_add_test(tc, child_in_time_unaffected);
    tcase_add_test(tc, signal_causes);
    tcase_add_test(tc, killed_child_not_gone_left_unreaped);
    tcase_add_test(tc, reap_limit_leaves_healthy_child_alone);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *runner = srunner_create(guard_suite());
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
