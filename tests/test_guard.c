/* test_guard.c — unit tests of the walk's child (tools/guard.c).
 *
 * Owns the proof that guard_run's child holds none of its parent's
 * descriptors but 0-2 and its pipe, that the caller hears the child's pid
 * and then 0 before the reap, and that a child sending a frame it may not
 * (an unknown tag, a result over the limit) is killed, not waited for. */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "guard.h"

#define TEST_CHILD_SLEEP_S 60      /* far past Check's timeout: a wait on it fails */
#define TEST_PIDS_MAX 4

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
    const guard_opts opts = { 0, note_started, NULL };
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
    const guard_opts opts = { SIGKILL, note_started, NULL };
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

static Suite *guard_suite(void) {
    Suite *s = suite_create("guard");
    TCase *tc = tcase_create("child");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, malformed_frame_kills_child);
    tcase_add_test(tc, oversized_result_kills_child);
    tcase_add_test(tc, child_holds_no_parent_descriptor);
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
