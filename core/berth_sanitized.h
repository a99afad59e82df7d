/* berth_sanitized.h — whether this build runs under AddressSanitizer or
 * ThreadSanitizer, for the few places that must behave differently there.
 *
 * GCC says so with __SANITIZE_ADDRESS__ / __SANITIZE_THREAD__, clang with
 * __has_feature; one test here keeps every user of it agreeing. Users:
 * tools/jobs.c (a sanitizer's runtime is not fork-safe beside threads),
 * replay/replay.c (sanitizers see no non-temporal store). */
#ifndef BERTH_SANITIZED_H
#define BERTH_SANITIZED_H

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define BERTH_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define BERTH_SANITIZED 1
#endif
#endif
#ifndef BERTH_SANITIZED
#define BERTH_SANITIZED 0
#endif

#endif
