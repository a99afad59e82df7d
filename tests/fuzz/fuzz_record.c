/* fuzz_record.c — libFuzzer target for the journal record decoder.
 *
 * Owns the decoder's promises over bytes read back from disk, which a torn
 * write or a flipped bit may have changed: no crash and no read outside the
 * record, a reason sentence on CORRUPT, decoded strings that point inside the
 * record, and for every record it accepts: re-encoding gives bytes that
 * decode to the same fields and whose hash checks. berth_record_hash_ok must
 * also survive any bytes (verify calls it before decode). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "journal.h"

#define FUZZ_WHY_LEN_MAX 256

static void check_inside(berth_str s, const uint8_t *data, size_t size) {
    if (s.len == 0) return;
    const uint8_t *p = (const uint8_t *)s.ptr;
    if (p < data || p + s.len > data + size) abort();
}

static bool str_same(berth_str a, berth_str b) {
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static void check_roundtrip(const berth_record *rec) {
    static uint8_t buf[BERTH_RECORD_BYTES_MAX];
    berth_record copy = *rec;
    size_t len = berth_record_encode(&copy, buf, sizeof buf);
    if (len == 0) return;                           /* a field over the encoder's limit */
    if (!berth_record_hash_ok(buf, len)) abort();
    berth_record back;
    char why[FUZZ_WHY_LEN_MAX];
    if (berth_record_decode(buf, len, &back, why, sizeof why) != BERTH_J_OK) abort();
    if (back.seq != rec->seq || back.time_ms != rec->time_ms || back.code != rec->code) abort();
    if (back.version != rec->version) abort();
    if (!str_same(back.actor, rec->actor) || !str_same(back.reqid, rec->reqid)) abort();
    if (!str_same(back.command, rec->command) || !str_same(back.sentence, rec->sentence)) abort();
    if (memcmp(back.prev_hash, rec->prev_hash, BERTH_HASH_LEN) != 0) abort();
    if (memcmp(back.hash, copy.hash, BERTH_HASH_LEN) != 0) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    (void)berth_record_hash_ok(data, size);
    berth_record rec;
    char why[FUZZ_WHY_LEN_MAX];
    memset(why, 0x5a, sizeof why);
    berth_jerr e = berth_record_decode(data, size, &rec, why, sizeof why);
    if (e != BERTH_J_OK) {
        if (e != BERTH_J_CORRUPT) abort();
        if (strnlen(why, sizeof why) == sizeof why || why[0] == '\0') abort();
        return 0;
    }
    check_inside(rec.actor, data, size);
    check_inside(rec.reqid, data, size);
    check_inside(rec.command, data, size);
    check_inside(rec.sentence, data, size);
    if (!berth_record_version_known(rec.version)) abort();
    check_roundtrip(&rec);
    return 0;
}
