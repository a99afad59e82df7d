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

/* One table lookup per byte: names are checked on every replayed record. */
static const bool name_byte_ok[256] = {
    ['a' ... 'z'] = true, ['A' ... 'Z'] = true, ['0' ... '9'] = true,
    ['.'] = true, ['_'] = true, [':'] = true, ['/'] = true, ['-'] = true,
};

bool berth_name_valid(berth_str s) {
    if (s.len == 0 || s.len > BERTH_NAME_LEN_MAX) return false;
    for (uint32_t i = 0; i < s.len; i++) {
        if (!name_byte_ok[(unsigned char)s.ptr[i]]) return false;
    }
    return true;
}

bool berth_parse_u64(berth_str s, uint64_t *out) {
    assert(out != NULL);
    if (s.len == 0 || s.len > 20) return false;
    uint64_t v = 0;
    for (uint32_t i = 0; i < s.len; i++) {
        char c = s.ptr[i];
        if (c < '0' || c > '9') return false;
        uint64_t d = (uint64_t)(c - '0');
        if (v > (UINT64_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}
