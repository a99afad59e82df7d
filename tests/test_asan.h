/* test_asan.h — TEST_ASAN: 1 in an AddressSanitizer build, else 0, for the
 * tests that must skip or adapt there (an address-space limit cannot apply
 * under ASan's shadow memory; its allocator does not poison our spares).
 * GCC defines __SANITIZE_ADDRESS__, clang answers __has_feature. */
#ifndef BERTH_TEST_ASAN_H
#define BERTH_TEST_ASAN_H

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifndef TEST_ASAN
#define TEST_ASAN 0
#endif

#endif
