/* names.c — name validation, byte-string comparison and number parsing.
 *
 * Every name that enters berth's state passes berth_name_valid; keeping the
 * charset narrow is what lets canonical command text be split on spaces. */
#include "names.h"

#include <assert.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "berth_limits.h"

bool berth_str_eq(berth_str a, berth_str b) {
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

int berth_str_cmp(berth_str a, berth_str b) {
    uint32_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
    if (c != 0) return c;
    return a.len < b.len ? -1 : (a.len > b.len ? 1 : 0);
}

static char ascii_upper(char c) {
    return (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
}

bool berth_str_eq_word(berth_str a, const char *word) {
    assert(word != NULL);
    size_t n = strlen(word);
    if (a.len != n) return false;
    for (size_t i = 0; i < n; i++) {
        if (ascii_upper(a.ptr[i]) != ascii_upper(word[i])) return false;
    }
    return true;
}

/* A name is checked and hashed in one pass over it, eight bytes at a time
 * in pairs: every name parse stores is both, and reading it twice (a
 * sixteen-byte check, then an eight-byte hash loop) was a third of parse's
 * name work. The pairs: each whole sixteen bytes, then the last sixteen
 * (overlapping what came before); a name of 8..15 bytes is its first and
 * last eight; 4..7 bytes its first and last four in one word; 1..3 bytes
 * its first, middle and last byte. The hash takes the same words: a
 * function of the bytes and the length alone, whatever the alignment. */
#define NAME_HASH_SEED 0x9e3779b97f4a7c15ull
#define NAME_HASH_MUL 0xff51afd7ed558ccdull
#define NAME_PAD 0x6161616161616161ull   /* "aaaaaaaa": fills a short name's check, passes */

static inline uint64_t load8(const char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t load4(const char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline uint64_t hash_step(uint64_t h, uint64_t v) {
    h = (h ^ v) * NAME_HASH_MUL;
    return h ^ (h >> 32);
}

/* murmur3's finaliser. */
static inline uint64_t hash_final(uint64_t h) {
    h ^= h >> 33;
    h *= NAME_HASH_MUL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 33);
}

/* Are all sixteen bytes in the charset? It is three byte ranges and '_':
 * '-' to ':' (- . / 0-9 :), and A-Z, a-z, which setting bit 0x20 folds
 * into one (only A-Z move, onto a-z). With SSE2 a range is an add and a
 * signed compare (the range shifted to the bottom of the signed bytes),
 * and the block is loaded straight from the name; GCC's vector extension
 * gives the same elsewhere. The three loads: sixteen bytes at p; eight at
 * p and eight at q; a word v of eight bytes, the rest padding that passes. */
#ifdef __SSE2__
typedef __m128i name_block;
static inline name_block block_at(const char *p) { return _mm_loadu_si128((const __m128i *)(const void *)p); }
static inline name_block block_at2(const char *p, const char *q) {
    return _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)(const void *)p),
                              _mm_loadl_epi64((const __m128i *)(const void *)q));
}
static inline name_block block_word(uint64_t v) { return _mm_set_epi64x((long long)NAME_PAD, (long long)v); }
static inline bool block_ok(name_block v) {
    __m128i letter = _mm_cmplt_epi8(_mm_add_epi8(_mm_or_si128(v, _mm_set1_epi8(0x20)), _mm_set1_epi8((char)(0x80 - 'a'))),
                                    _mm_set1_epi8((char)(0x80 + 26)));
    __m128i punct = _mm_cmplt_epi8(_mm_add_epi8(v, _mm_set1_epi8((char)(0x80 - '-'))),
                                   _mm_set1_epi8((char)(0x80 + (':' - '-' + 1))));
    __m128i under = _mm_cmpeq_epi8(v, _mm_set1_epi8('_'));
    return _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(letter, punct), under)) == 0xffff;
}
#else
typedef unsigned char name_block __attribute__((vector_size(16)));
static inline name_block block_words(uint64_t lo, uint64_t hi) {
    uint64_t lanes[2] = { lo, hi };
    name_block v;
    memcpy(&v, lanes, sizeof v);
    return v;
}
static inline name_block block_at(const char *p) { return block_words(load8(p), load8(p + 8)); }
static inline name_block block_at2(const char *p, const char *q) { return block_words(load8(p), load8(q)); }
static inline name_block block_word(uint64_t v) { return block_words(v, NAME_PAD); }
static inline bool block_ok(name_block v) {
    name_block ok = (name_block)(((v | 0x20) - (unsigned char)'a') <= (unsigned char)('z' - 'a')) |
                    (name_block)((v - (unsigned char)'-') <= (unsigned char)(':' - '-')) |
                    (name_block)(v == (unsigned char)'_');
    uint64_t lanes[2];
    memcpy(lanes, &ok, sizeof lanes);
    return (lanes[0] & lanes[1]) == UINT64_MAX;
}
#endif

/* One pass: with check, false as soon as a byte is outside the charset
 * (the length is the caller's to check); *hash gets the hash. Always
 * inlined with check a constant, so the hash alone checks nothing and the
 * check alone (its hash unused) multiplies nothing. */
static inline __attribute__((always_inline)) bool name_scan(const char *p, uint32_t n, bool check,
                                                            uint64_t *hash) {
    uint64_t h = NAME_HASH_SEED ^ n;
    if (n >= 16) {
        uint32_t i = 0;
        for (; i + 16 <= n; i += 16) {
            if (check && !block_ok(block_at(p + i))) return false;
            h = hash_step(hash_step(h, load8(p + i)), load8(p + i + 8));
        }
        if (i < n) {
            if (check && !block_ok(block_at(p + n - 16))) return false;
            h = hash_step(hash_step(h, load8(p + n - 16)), load8(p + n - 8));
        }
    } else if (n >= 8) {
        if (check && !block_ok(block_at2(p, p + n - 8))) return false;
        h = hash_step(hash_step(h, load8(p)), load8(p + n - 8));
    } else if (n >= 4) {
        uint64_t v = load4(p) | load4(p + n - 4) << 32;
        if (check && !block_ok(block_word(v))) return false;
        h = hash_step(h, v);
    } else if (n > 0) {
        uint64_t v = (uint64_t)(unsigned char)p[0] | (uint64_t)(unsigned char)p[n / 2] << 8 |
                     (uint64_t)(unsigned char)p[n - 1] << 16;
        if (check && !block_ok(block_word(v | NAME_PAD << 24))) return false;
        h = hash_step(h, v);
    }
    *hash = hash_final(h);
    return true;
}

uint64_t berth_name_hash(berth_str s) {
    assert(s.ptr != NULL || s.len == 0);
    uint64_t h;
    bool ok = name_scan(s.ptr, s.len, false, &h);
    assert(ok);
    (void)ok;
    return h;
}

bool berth_name_valid(berth_str s) {
    if (s.len == 0 || s.len > BERTH_NAME_LEN_MAX) return false;
    uint64_t unused;
    return name_scan(s.ptr, s.len, true, &unused);
}

/* Parse checks and hashes the names apply looks up: one call, one pass. */
bool berth_name_valid_hash(berth_str s, uint64_t *hash) {
    assert(hash != NULL);
    if (s.len == 0 || s.len > BERTH_NAME_LEN_MAX) return false;
    return name_scan(s.ptr, s.len, true, hash);
}

bool berth_parse_u64(berth_str s, uint64_t *out) {
    assert(out != NULL);
    if (s.len == 0 || s.len > 20) return false;
    /* Nineteen digits cannot overflow; only a twentieth needs the check. */
    enum { digits_safe = 19 };
    uint64_t v = 0;
    for (uint32_t i = 0; i < s.len; i++) {
        char c = s.ptr[i];
        if (c < '0' || c > '9') return false;
        uint64_t d = (uint64_t)(c - '0');
        if (i >= digits_safe && v > (UINT64_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}
