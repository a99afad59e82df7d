/* command_id.c — owns a command's identity in the request-id window: the
 * first BERTH_COMMAND_ID_LEN bytes of SHA-256 of its canonical text.
 *
 * Why it is shaped this way: the window must tell a retry from a different
 * command under a used REQID, and it keeps no command text, so the identity
 * must resist collisions a client can search for (FNV-1a 64, used before,
 * fell to Pollard rho in minutes). core links nothing but libc, so it
 * carries its own small SHA-256 (FIPS 180-4): pure, no allocation, no
 * state between calls. It runs only for commands with a REQID, on replay's
 * parsing thread when that thread is ahead. tests/test_replay.c checks it
 * against OpenSSL's at every length around the padding boundaries.
 *
 * 128 bits: finding two commands with one identity then takes about 2^64
 * SHA-256 runs, and only the client that sent both could be fooled (it is
 * answered its own first outcome); matching another client's command
 * (a second preimage) takes about 2^128. The window holds 16,384 entries,
 * kept in every snapshot: 16 bytes each instead of 32 keeps a snapshot
 * about 256 KB smaller. */
#include <assert.h>
#include <string.h>

#include "state.h"

#define SHA256_BLOCK_BYTES 64
#define SHA256_DIGEST_BYTES 32

static const uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline uint32_t ror32(uint32_t x, unsigned n) { return (x >> n) | (x << (32 - n)); }

static void sha256_block(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++) {
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
               (uint32_t)p[4 * i + 3];
    }
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (ror32(e, 6) ^ ror32(e, 11) ^ ror32(e, 25)) + ((e & f) ^ (~e & g)) + sha256_k[i] + w[i];
        uint32_t t2 = (ror32(a, 2) ^ ror32(a, 13) ^ ror32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d;
    h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

void berth_command_id(berth_str canonical, uint8_t id[BERTH_COMMAND_ID_LEN]) {
    assert(canonical.ptr != NULL || canonical.len == 0);
    assert(id != NULL);
    _Static_assert(BERTH_COMMAND_ID_LEN <= SHA256_DIGEST_BYTES, "an identity is a prefix of the digest");
    uint32_t h[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
    const uint8_t *p = (const uint8_t *)canonical.ptr;
    size_t left = canonical.len;
    for (; left >= SHA256_BLOCK_BYTES; left -= SHA256_BLOCK_BYTES, p += SHA256_BLOCK_BYTES) sha256_block(h, p);
    /* The tail, 0x80, zeros, and the bit length: one block, or two when
     * fewer than 9 bytes of the first are left. */
    uint8_t tail[2 * SHA256_BLOCK_BYTES];
    memset(tail, 0, sizeof tail);
    if (left > 0) memcpy(tail, p, left);
    tail[left] = 0x80;
    size_t blocks = left + 9 <= SHA256_BLOCK_BYTES ? 1 : 2;
    uint64_t bits = (uint64_t)canonical.len * 8;
    for (int i = 0; i < 8; i++) tail[blocks * SHA256_BLOCK_BYTES - 1 - i] = (uint8_t)(bits >> (8 * i));
    for (size_t b = 0; b < blocks; b++) sha256_block(h, tail + b * SHA256_BLOCK_BYTES);
    uint8_t digest[SHA256_DIGEST_BYTES];
    for (int i = 0; i < 8; i++) {
        digest[4 * i] = (uint8_t)(h[i] >> 24);
        digest[4 * i + 1] = (uint8_t)(h[i] >> 16);
        digest[4 * i + 2] = (uint8_t)(h[i] >> 8);
        digest[4 * i + 3] = (uint8_t)h[i];
    }
    memcpy(id, digest, BERTH_COMMAND_ID_LEN);
}
