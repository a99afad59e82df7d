/* names.h — the one rule for every name berth stores.
 *
 * Workers, instances, models, backends, request ids, label keys and values:
 * 1..BERTH_NAME_LEN_MAX bytes of [A-Za-z0-9._:/-]. The charset has no space,
 * '=' or ',' so canonical command text splits back into words unambiguously. */
#ifndef BERTH_NAMES_H
#define BERTH_NAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A byte string that points into someone else's buffer; never owns. */
typedef struct berth_str {
    const char *ptr;
    uint32_t len;
} berth_str;

static inline berth_str berth_str_make(const char *ptr, size_t len) {
    berth_str s = { ptr, (uint32_t)len };
    return s;
}
bool berth_str_eq(berth_str a, berth_str b);
/* memcmp order, shorter first on a common prefix: the one sort order of output. */
int berth_str_cmp(berth_str a, berth_str b);
/* Case-insensitive ASCII compare with a NUL-terminated keyword. */
bool berth_str_eq_word(berth_str a, const char *word);

/* The hash berth's tables place a name by: eight bytes per step, then
 * murmur3's finaliser. It only places entries in tables that are never
 * iterated for output, so nothing berth says depends on its value. Parse
 * computes it once per name so apply (another thread, in replay) need not. */
uint64_t berth_name_hash(berth_str s);

/* True when s is a valid name (length and charset). */
bool berth_name_valid(berth_str s);

/* berth_name_valid and, when true, berth_name_hash into *hash, in one pass
 * and one call: what parse does with every name it hashes. */
bool berth_name_valid_hash(berth_str s, uint64_t *hash);

/* Parse a decimal u64 with no sign, no spaces, no leading '+'; false on
 * overflow or any other byte. */
bool berth_parse_u64(berth_str s, uint64_t *out);

#endif
