/* test_valgrind.h — test_under_valgrind(): true when the test runs under
 * valgrind (tests/reliability/valgrind.sh), for the few tests that repeat
 * one path many times and may repeat it fewer times there.
 *
 * Memcheck is there to find a bad read or write on each path, which one
 * pass finds as well as the native build's thousands; it costs 30-50x per
 * pass. A test that scales down under it keeps every kind of step and
 * every assertion, and the native and sanitizer builds keep the full
 * counts. RUNNING_ON_VALGRIND comes from Debian's valgrind package (which
 * setup-debian.sh installs); without the header the answer is false and
 * every count stays full. */
#ifndef BERTH_TEST_VALGRIND_H
#define BERTH_TEST_VALGRIND_H

#include <stdbool.h>

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define TEST_HAVE_VALGRIND_H 1
#endif
#endif

static inline bool test_under_valgrind(void) {
#ifdef TEST_HAVE_VALGRIND_H
    return RUNNING_ON_VALGRIND != 0;
#else
    return false;
#endif
}

#endif
