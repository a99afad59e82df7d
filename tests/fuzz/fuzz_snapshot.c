/* fuzz_snapshot.c — libFuzzer target for the snapshot decoder.
 *
 * Owns the decoder's promises over a snapshot read from disk: no crash, no
 * read outside the bytes, no leak (LeakSanitizer), an error sentence on
 * refusal, and for every snapshot it accepts: the state passes
 * berth_state_check (restore must refuse anything that breaks an
 * invariant, or berthd would serve an impossible cluster), and encoding it
 * again gives bytes that decode to a state with the same digest and encode
 * to the same bytes (the canonical encoding is a fixed point).
 *
 * Stored snapshots end with an anchor and a SHA-256 of body and anchor, so
 * random mutations would almost never get past the digest check. The first
 * input byte picks the mode: even, the rest is a body and the target
 * appends a zero anchor and the true digest
 * (so the fuzzer explores the decoder behind the check); odd, the rest is
 * handed over as it is (the check itself, and truncated trailers). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "replay.h"
#include "state.h"

#define FUZZ_ERR_LEN_MAX 512

static void check_accepted(berth_state *state, const uint8_t anchor[BERTH_HASH_LEN]) {
    char why[FUZZ_ERR_LEN_MAX];
    if (!berth_state_check(state, why, sizeof why)) abort();
    uint8_t *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    if (berth_snapshot_encode(state, anchor, &a, &alen) != 0) abort();
    berth_state *again = NULL;
    char err[FUZZ_ERR_LEN_MAX];
    uint8_t anchor_again[BERTH_HASH_LEN];
    if (berth_snapshot_decode(a, alen, &again, anchor_again, err, sizeof err) != 0) abort();
    if (memcmp(anchor, anchor_again, BERTH_HASH_LEN) != 0) abort();
    if (berth_snapshot_encode(again, anchor_again, &b, &blen) != 0) abort();
    if (alen != blen || memcmp(a, b, alen) != 0) abort();
    uint8_t d1[BERTH_HASH_LEN], d2[BERTH_HASH_LEN];
    if (berth_state_digest(state, d1) != 0 || berth_state_digest(again, d2) != 0) abort();
    if (memcmp(d1, d2, BERTH_HASH_LEN) != 0) abort();
    if (berth_state_last_seq(state) != berth_state_last_seq(again)) abort();
    free(a);
    free(b);
    berth_state_free(again);
}

static void decode_one(const uint8_t *data, size_t size) {
    berth_state *state = NULL;
    char err[FUZZ_ERR_LEN_MAX];
    memset(err, 0x5a, sizeof err);
    uint8_t anchor[BERTH_HASH_LEN];
    if (berth_snapshot_decode(data, size, &state, anchor, err, sizeof err) != 0) {
        if (state != NULL) abort();                 /* a refused snapshot hands back nothing */
        if (strnlen(err, sizeof err) == sizeof err || err[0] == '\0') abort();
        return;
    }
    if (state == NULL) abort();
    check_accepted(state, anchor);
    berth_state_free(state);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    if (data[0] & 1) { decode_one(data + 1, size - 1); return 0; }
    /* body, a zero anchor, and the digest over both */
    uint8_t *stored = calloc(1, size - 1 + 2 * BERTH_HASH_LEN);
    if (stored == NULL) abort();
    if (size > 1) memcpy(stored, data + 1, size - 1);
    SHA256(stored, size - 1 + BERTH_HASH_LEN, stored + size - 1 + BERTH_HASH_LEN);
    decode_one(stored, size - 1 + 2 * BERTH_HASH_LEN);
    free(stored);
    return 0;
}
