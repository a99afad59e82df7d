/* be64.h — 64-bit big-endian keys, whose byte order is their number order
 * under LMDB's default key compare (internal to the LMDB store:
 * lmdb_store.c, history_runs.c). */
#ifndef BERTH_BE64_H
#define BERTH_BE64_H

#include <stdint.h>

static inline void be64_put(uint8_t out[8], uint64_t v) {
    for (int i = 7; i >= 0; i--) {
        out[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
}

static inline uint64_t be64_get(const uint8_t in[8]) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | in[i];
    }
    return v;
}

#endif
