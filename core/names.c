/* names.c — name validation, byte-string comparison and number parsing.
 *
 * Every name that enters berth's state passes berth_name_valid; keeping the
 * charset narrow is what lets canonical command text be split on spaces. */
#include "names.h"

#include <assert.h>
#include <string.h>

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

/* The hash's body, shared by berth_name_hash and berth_name_valid_hash so
 * the fused one costs no call. */
static inline uint64_t name_hash(const char *p, uint32_t n) {
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = (h ^ v) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
        p += 8;
        n -= 8;
    }
    /* The last 0..7 bytes by fixed-size loads (overlapping when n < 8), so
     * no call to memcpy for a variable length. */
    uint64_t v = 0;
    if (n >= 4) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + n - 4, 4);
        v = lo | ((uint64_t)hi << 32);
    } else if (n > 0) {
        v = (uint64_t)(unsigned char)p[0] | (uint64_t)(unsigned char)p[n / 2] << 8 |
            (uint64_t)(unsigned char)p[n - 1] << 16;
    }
    h ^= v;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 33);
}

uint64_t berth_name_hash(berth_str s) {
    assert(s.ptr != NULL || s.len == 0);
    return name_hash(s.ptr, s.len);
}

/* Sixteen bytes per step: names are checked on every replayed record. The
 * charset is four byte ranges: '-' to ':' (- . / 0-9 :), A-Z, '_', a-z.
 * GCC's vector extension compiles to SSE2 here and to NEON or plain code
 * elsewhere; unsigned lanes make each range one subtract and compare. */
typedef unsigned char name_block __attribute__((vector_size(16)));
#define NAME_BLOCK_BYTES 16u

static bool name_block_ok(name_block v) {
    name_block ok = (name_block)((v - (unsigned char)'-') <= (unsigned char)(':' - '-')) |
                    (name_block)((v - (unsigned char)'A') <= (unsigned char)('Z' - 'A')) |
                    (name_block)(v == (unsigned char)'_') |
                    (name_block)((v - (unsigned char)'a') <= (unsigned char)('z' - 'a'));
    uint64_t lanes[2];
    memcpy(lanes, &ok, sizeof lanes);
    return (lanes[0] & lanes[1]) == UINT64_MAX;
}

static inline bool name_valid(berth_str s) {
    if (s.len == 0 || s.len > BERTH_NAME_LEN_MAX) return false;
    uint32_t i = 0;
    name_block v;
    for (; i + NAME_BLOCK_BYTES <= s.len; i += NAME_BLOCK_BYTES) {
        memcpy(&v, s.ptr + i, NAME_BLOCK_BYTES);
        if (!name_block_ok(v)) return false;
    }
    if (i == s.len) return true;
    if (s.len >= NAME_BLOCK_BYTES) {
        /* The last sixteen bytes, overlapping what passed already. */
        memcpy(&v, s.ptr + s.len - NAME_BLOCK_BYTES, NAME_BLOCK_BYTES);
        return name_block_ok(v);
    }
    /* A short name: two fixed-size loads that overlap cover every length
     * without reading past it; the rest of the block is a byte that passes. */
    memset(&v, 'a', NAME_BLOCK_BYTES);
    unsigned char *b = (unsigned char *)&v;
    uint32_t n = s.len;
    if (n >= 8) {
        memcpy(b, s.ptr, 8);
        memcpy(b + 8, s.ptr + n - 8, 8);
    } else if (n >= 4) {
        memcpy(b, s.ptr, 4);
        memcpy(b + 4, s.ptr + n - 4, 4);
    } else {
        b[0] = (unsigned char)s.ptr[0];
        b[1] = (unsigned char)s.ptr[n / 2];
        b[2] = (unsigned char)s.ptr[n - 1];
    }
    return name_block_ok(v);
}

bool berth_name_valid(berth_str s) { return name_valid(s); }

/* Parse checks and hashes the names apply looks up: one call, not two. */
bool berth_name_valid_hash(berth_str s, uint64_t *hash) {
    assert(hash != NULL);
    if (!name_valid(s)) return false;
    *hash = name_hash(s.ptr, s.len);
    return true;
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
