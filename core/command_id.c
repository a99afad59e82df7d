/* command_id.c — owns a command's identity in the request-id window: the
 * first BERTH_COMMAND_ID_LEN bytes of SHA-256 of its canonical text.
 *
 * Why it is shaped this way: the window must tell a retry from a different
 * command under a used REQID, and it keeps no command text, so the identity
 * must resist collisions a client can search for (FNV-1a 64, used before,
 * fell to Pollard rho in minutes). The hash is OpenSSL's (libcrypto), the
 * one the journal's records use: a hash is what a well-kept library is for,
 * and its SHA256_Init/Update/Final are pure computation over the caller's
 * bytes (no I/O, no clock, no allocation, no shared state; the one-shot
 * SHA256() is avoided because it fetches the algorithm through OpenSSL's
 * provider locks), so core stays pure. It runs only for commands with a
 * REQID, and replay and the engine pass the digest in precomputed
 * (berth_state_precompute_id) from their parsing threads.
 *
 * 128 bits: finding two commands with one identity then takes about 2^64
 * SHA-256 runs, and only the client that sent both could be fooled (it is
 * answered its own first outcome); matching another client's command
 * (a second preimage) takes about 2^128. The window holds 16,384 entries,
 * kept in every snapshot: 16 bytes each instead of 32 keeps a snapshot
 * about 256 KB smaller. */
#include <assert.h>
#include <string.h>

#define OPENSSL_SUPPRESS_DEPRECATED   /* SHA256_Init/Update/Final: see above */
#include <openssl/sha.h>

#include "state.h"

void berth_command_id(berth_str canonical, uint8_t id[BERTH_COMMAND_ID_LEN]) {
    assert(canonical.ptr != NULL || canonical.len == 0);
    assert(id != NULL);
    _Static_assert(BERTH_COMMAND_ID_LEN <= SHA256_DIGEST_LENGTH, "an identity is a prefix of the digest");
    uint8_t digest[SHA256_DIGEST_LENGTH];
    SHA256_CTX ctx;
    /* These return 1 always for in-memory input; checked all the same. */
    int ok = SHA256_Init(&ctx);
    ok &= SHA256_Update(&ctx, canonical.ptr, canonical.len);
    ok &= SHA256_Final(digest, &ctx);
    assert(ok == 1);
    (void)ok;
    memcpy(id, digest, BERTH_COMMAND_ID_LEN);
}
