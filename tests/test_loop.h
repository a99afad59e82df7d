/* test_loop.h — LOOP_ASSERT, the assertion for loops of thousands of steps.
 *
 * Check's ck_assert records every passing assertion's location through its
 * message channel: a write() each, and with CK_FORK=no (valgrind.sh) a read
 * back and decode of every one when the test ends. Millions of them made
 * test_core take 307 s and test_replay 325 s under valgrind (3.0M and 2.0M
 * writes; strace -c), nearly all of it in that channel. LOOP_ASSERT checks
 * the same condition and calls into Check only when it fails, with the
 * condition's text and the caller's message: a failure reads and fails as
 * ck_assert_msg's does, a pass costs nothing. Outside loops, ck_assert. */
#ifndef BERTH_TEST_LOOP_H
#define BERTH_TEST_LOOP_H

#include <check.h>

#define LOOP_ASSERT(cond, ...)                                                             \
    do {                                                                                   \
        if (!(cond)) ck_abort_msg("Assertion '" #cond "' failed: " __VA_ARGS__);           \
    } while (0)

#endif
