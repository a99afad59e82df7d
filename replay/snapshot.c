/* snapshot.c — owns the canonical snapshot encoding of a berth_state, its
 * digest, and the strict decoder that rebuilds a state from snapshot bytes.
 *
 * Why it is shaped this way: the digest is the project's definition of
 * "equal states", so the encoding lists everything in one canonical order
 * (policy sorted, workers by name, instances by deploy seq, request ids
 * oldest first) and never depends on hash-table order or on how the state
 * was reached. Stored snapshot bytes are that encoding, the anchor (the
 * hash of the journal record at last_seq, which ties the snapshot to one
 * chain: a load compares it with that record's) and a SHA-256 over both,
 * so a load can tell a damaged snapshot from a good one. The state digest
 * covers the encoding only: equal states, equal digests, whatever journal.
 *
 * Layout (msgpack, one top-level array of 6):
 *   [ version, last_seq,
 *     [backend, ...],                                              policy
 *     [[name, gpu_count, vram_mib, status, added_seq, [[k, v], ...]], ...]
 *     [[name, model, backend, claim_mib, deploy_seq, [[worker, gpu_mask], ...]], ...]
 *     [[reqid, command_id (bin 16), seq, code, sentence], ...] ]
 *   followed (stored form only) by 32 raw bytes, the anchor, and 32 raw
 *   bytes, SHA-256 of everything before them.
 * Version 1 (before session 7) kept a 64-bit FNV-1a per request id, which a
 * client could collide, and no anchor, so nothing tied it to its journal:
 * such a snapshot is refused, and replay falls back to an older one or to
 * genesis.
 *
 * The decoder is a hand-written bounds-checked reader rather than
 * msgpack_unpack: snapshots are fuzzed, and a pull reader that allocates
 * nothing cannot be talked into a huge allocation by a forged array count.
 * The encoder mirrors it, writing msgpack's smallest form of each value. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replay.h"

#define SNAPSHOT_TOP_FIELDS 6
#define SNAPSHOT_WORKER_FIELDS 6
#define SNAPSHOT_INSTANCE_FIELDS 6
#define SNAPSHOT_REQID_FIELDS 5
#define SNAPSHOT_LABEL_FIELDS 2
#define SNAPSHOT_SLOT_FIELDS 2
/* Counts a snapshot may claim; each element takes at least one byte, so the
 * remaining length bounds them too, but a named ceiling keeps loops honest. */
#define SNAPSHOT_WORKERS_MAX (1u << 26)
#define SNAPSHOT_INSTANCES_MAX (1u << 26)
#define SNAPSHOT_BYTES_MAX ((size_t)1 << 32)   /* one snapshot, encoded */
#define SNAPSHOT_BUF_INITIAL 4096
#define SNAPSHOT_TRAILER_BYTES (2 * BERTH_HASH_LEN)   /* anchor, then the digest */

/* ---------------------------------------------------------------- encode */

/* A growing output buffer; the first failure sticks so callers check once
 * per field group. msgpack is written by hand (smallest form of each value,
 * as msgpack-c would choose) so that the encoder is the exact mirror of the
 * strict decoder below, which allocates nothing: msgpack-c's unpacker would
 * reserve memory from whatever counts a damaged snapshot declares. */
typedef struct snap_buf {
    uint8_t *data;          /* malloc'd; owned by the buffer until released */
    size_t len;
    size_t cap;
    bool failed;
} snap_buf;

static int buf_put(snap_buf *b, const void *bytes, size_t n) {
    if (b->failed) return -1;
    if (n > SNAPSHOT_BYTES_MAX - b->len) {
        b->failed = true;
        return -1;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : SNAPSHOT_BUF_INITIAL;
        while (cap < b->len + n) cap *= 2;
        uint8_t *grown = realloc(b->data, cap);
        if (grown == NULL) {
            b->failed = true;
            return -1;
        }
        b->data = grown;
        b->cap = cap;
    }
    if (n > 0) memcpy(b->data + b->len, bytes, n);
    b->len += n;
    assert(b->len <= b->cap);
    return 0;
}

/* tag followed by the low n bytes of v, big-endian. */
static int buf_put_tagged(snap_buf *b, uint8_t tag, uint64_t v, size_t n) {
    uint8_t out[9];
    assert(n <= 8);
    out[0] = tag;
    for (size_t i = 0; i < n; i++) out[1 + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    return buf_put(b, out, 1 + n);
}

static int pack_uint(snap_buf *b, uint64_t v) {
    if (v <= 0x7f) return buf_put_tagged(b, (uint8_t)v, 0, 0);
    if (v <= UINT8_MAX) return buf_put_tagged(b, 0xcc, v, 1);
    if (v <= UINT16_MAX) return buf_put_tagged(b, 0xcd, v, 2);
    if (v <= UINT32_MAX) return buf_put_tagged(b, 0xce, v, 4);
    return buf_put_tagged(b, 0xcf, v, 8);
}

static int pack_array(snap_buf *b, uint64_t n) {
    assert(n <= UINT32_MAX);
    if (n <= 15) return buf_put_tagged(b, (uint8_t)(0x90 | n), 0, 0);
    if (n <= UINT16_MAX) return buf_put_tagged(b, 0xdc, n, 2);
    return buf_put_tagged(b, 0xdd, n, 4);
}

static int pack_str(snap_buf *b, berth_str s) {
    assert(s.ptr != NULL || s.len == 0);
    int rc;
    if (s.len <= 31) rc = buf_put_tagged(b, (uint8_t)(0xa0 | s.len), 0, 0);
    else if (s.len <= UINT8_MAX) rc = buf_put_tagged(b, 0xd9, s.len, 1);
    else if (s.len <= UINT16_MAX) rc = buf_put_tagged(b, 0xda, s.len, 2);
    else rc = buf_put_tagged(b, 0xdb, s.len, 4);
    if (rc != 0) return -1;
    return buf_put(b, s.ptr, s.len);
}

static int pack_bin(snap_buf *b, const uint8_t *bytes, size_t n) {
    assert(n <= UINT8_MAX);
    if (buf_put_tagged(b, 0xc4, n, 1) != 0) return -1;
    return buf_put(b, bytes, n);
}

static int pack_policy(snap_buf *b, const berth_state *state) {
    const berth_str *backends = NULL;
    uint32_t count = berth_state_policy(state, &backends);
    assert(count <= BERTH_POLICY_BACKENDS_MAX);
    pack_array(b, count);
    for (uint32_t i = 0; i < count; i++) pack_str(b, backends[i]);
    return b->failed ? -1 : 0;
}

static int pack_worker(snap_buf *b, const berth_worker *w) {
    assert(w != NULL);
    assert(w->label_count <= BERTH_LABELS_MAX);
    pack_array(b, SNAPSHOT_WORKER_FIELDS);
    pack_str(b, w->name);
    pack_uint(b, w->gpu_count);
    pack_uint(b, w->vram_mib);
    pack_uint(b, (uint32_t)w->status);
    pack_uint(b, w->added_seq);
    pack_array(b, w->label_count);
    for (uint32_t i = 0; i < w->label_count; i++) {
        pack_array(b, SNAPSHOT_LABEL_FIELDS);
        pack_str(b, w->labels[i].key);
        pack_str(b, w->labels[i].value);
    }
    return b->failed ? -1 : 0;
}

static int pack_workers(snap_buf *b, const berth_state *state) {
    size_t count = berth_state_worker_count(state);
    const berth_worker **sorted = NULL;
    if (count > 0) {
        sorted = malloc(count * sizeof(*sorted));
        if (sorted == NULL) return -1;
    }
    size_t got = count > 0 ? berth_state_workers_sorted(state, sorted, count) : 0;
    assert(got == count);
    (void)got;
    int rc = pack_array(b, count);
    for (size_t i = 0; rc == 0 && i < count; i++) {
        assert(i == 0 || berth_str_cmp(sorted[i - 1]->name, sorted[i]->name) < 0);
        rc = pack_worker(b, sorted[i]);
    }
    free(sorted);
    return rc;
}

static int pack_instance(snap_buf *b, const berth_instance *in) {
    assert(in != NULL);
    assert(in->slot_count >= 1 && in->slot_count <= BERTH_PLACEMENT_WORKERS_MAX);
    pack_array(b, SNAPSHOT_INSTANCE_FIELDS);
    pack_str(b, in->name);
    pack_str(b, in->model);
    pack_str(b, in->backend);
    pack_uint(b, in->claim_mib);
    pack_uint(b, in->deploy_seq);
    pack_array(b, in->slot_count);
    for (uint32_t i = 0; i < in->slot_count; i++) {
        assert(in->slots[i].worker != NULL);
        pack_array(b, SNAPSHOT_SLOT_FIELDS);
        pack_str(b, in->slots[i].worker->name);
        pack_uint(b, in->slots[i].gpu_mask);
    }
    return b->failed ? -1 : 0;
}

/* Deploy seqs are unique (one DEPLOY per record), so this order is total. */
static int instance_deploy_seq_cmp(const void *a, const void *b) {
    const berth_instance *x = *(const berth_instance *const *)a;
    const berth_instance *y = *(const berth_instance *const *)b;
    assert(x == y || x->deploy_seq != y->deploy_seq);
    if (x->deploy_seq < y->deploy_seq) return -1;
    return x->deploy_seq > y->deploy_seq ? 1 : 0;
}

static int pack_instances(snap_buf *b, const berth_state *state) {
    size_t count = berth_state_instance_count(state);
    const berth_instance **sorted = NULL;
    if (count > 0) {
        sorted = malloc(count * sizeof(*sorted));
        if (sorted == NULL) return -1;
    }
    size_t got = count > 0 ? berth_state_instances_sorted(state, sorted, count) : 0;
    assert(got == count);
    (void)got;
    if (count > 1) qsort(sorted, count, sizeof(*sorted), instance_deploy_seq_cmp);
    int rc = pack_array(b, count);
    for (size_t i = 0; rc == 0 && i < count; i++) rc = pack_instance(b, sorted[i]);
    free(sorted);
    return rc;
}

static int pack_reqids(snap_buf *b, const berth_state *state) {
    size_t count = berth_state_reqid_count(state);
    assert(count <= BERTH_REQID_WINDOW);
    pack_array(b, count);
    for (size_t i = 0; i < count; i++) {
        berth_reqid_entry e;
        berth_state_reqid_at(state, i, &e);
        assert((uint32_t)e.code < BERTH_CODE_COUNT);
        pack_array(b, SNAPSHOT_REQID_FIELDS);
        pack_str(b, e.reqid);
        pack_bin(b, e.command_id, BERTH_COMMAND_ID_LEN);
        pack_uint(b, e.seq);
        pack_uint(b, (uint32_t)e.code);
        pack_str(b, e.sentence);
    }
    return b->failed ? -1 : 0;
}

/* The digest-free encoding into b (zeroed by the caller). */
static int encode_body(const berth_state *state, snap_buf *b) {
    pack_array(b, SNAPSHOT_TOP_FIELDS);
    pack_uint(b, BERTH_SNAPSHOT_VERSION);
    pack_uint(b, berth_state_last_seq(state));
    if (b->failed) return -1;
    if (pack_policy(b, state) != 0) return -1;
    if (pack_workers(b, state) != 0) return -1;
    if (pack_instances(b, state) != 0) return -1;
    return pack_reqids(b, state);
}

int berth_snapshot_encode(const berth_state *state, const uint8_t anchor[BERTH_HASH_LEN],
                          uint8_t **bytes, size_t *len) {
    assert(state != NULL && bytes != NULL && len != NULL);
    static const uint8_t unsealed[SNAPSHOT_TRAILER_BYTES];
    snap_buf b = { NULL, 0, 0, false };
    int rc = encode_body(state, &b);
    if (rc == 0) rc = buf_put(&b, unsealed, SNAPSHOT_TRAILER_BYTES);
    if (rc != 0) {
        free(b.data);
        return -1;
    }
    assert(b.len > SNAPSHOT_TRAILER_BYTES);
    if (anchor != NULL) berth_snapshot_seal(b.data, b.len, anchor);
    *len = b.len;
    *bytes = b.data;
    return 0;
}

void berth_snapshot_seal(uint8_t *bytes, size_t len, const uint8_t anchor[BERTH_HASH_LEN]) {
    assert(bytes != NULL && anchor != NULL && len > SNAPSHOT_TRAILER_BYTES);
    uint8_t *at = bytes + len - SNAPSHOT_TRAILER_BYTES;
    memcpy(at, anchor, BERTH_HASH_LEN);
    berth_sha256(bytes, len - BERTH_HASH_LEN, at + BERTH_HASH_LEN);
}

int berth_snapshot_body_digest(const void *bytes, size_t len, uint8_t digest[BERTH_HASH_LEN]) {
    assert(digest != NULL);
    if (bytes == NULL || len <= SNAPSHOT_TRAILER_BYTES) return -1;
    berth_sha256(bytes, len - SNAPSHOT_TRAILER_BYTES, digest);
    return 0;
}

/* Kept in the state until its next change: a client looping DIGEST on an
 * unchanged state costs a copy, not an encoding of everything (hV5). */
_Static_assert(BERTH_STATE_DIGEST_LEN == BERTH_HASH_LEN, "the state keeps one digest");
int berth_state_digest(const berth_state *state, uint8_t digest[BERTH_HASH_LEN]) {
    assert(state != NULL && digest != NULL);
    if (berth_state_digest_cached(state, digest)) return 0;
    snap_buf b = { NULL, 0, 0, false };
    int rc = encode_body(state, &b);
    if (rc == 0) {
        berth_sha256(b.data, b.len, digest);
        berth_state_digest_keep(state, digest);
    }
    free(b.data);
    return rc;
}

void berth_hex(const uint8_t *bytes, size_t len, char *out) {
    static const char digits[] = "0123456789abcdef";
    assert(bytes != NULL || len == 0);
    assert(out != NULL);
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 0x0f];
    }
    out[2 * len] = '\0';
}

/* ---------------------------------------------------------------- decode */

/* A bounds-checked pull reader over the snapshot bytes. The first failure
 * sticks: every later read fails too, and why keeps the first reason. */
typedef struct snap_reader {
    const uint8_t *start;
    const uint8_t *p;
    const uint8_t *end;
    bool failed;
    char why[160];
} snap_reader;

static bool reader_fail(snap_reader *r, const char *what) {
    if (!r->failed) {
        r->failed = true;
        snprintf(r->why, sizeof(r->why), "%s at byte %zu", what, (size_t)(r->p - r->start));
    }
    return false;
}

static bool read_be(snap_reader *r, size_t n, uint64_t *out) {
    assert(n >= 1 && n <= 8);
    if (r->failed) return false;
    if ((size_t)(r->end - r->p) < n) return reader_fail(r, "truncated");
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v = (v << 8) | r->p[i];
    r->p += n;
    *out = v;
    return true;
}

static bool read_tag(snap_reader *r, uint8_t *tag) {
    if (r->failed) return false;
    if (r->p >= r->end) return reader_fail(r, "truncated");
    *tag = *r->p++;
    return true;
}

static bool read_uint(snap_reader *r, uint64_t *out) {
    uint8_t tag = 0;
    if (!read_tag(r, &tag)) return false;
    if (tag <= 0x7f) {
        *out = tag;
        return true;
    }
    switch (tag) {
    case 0xcc: return read_be(r, 1, out);
    case 0xcd: return read_be(r, 2, out);
    case 0xce: return read_be(r, 4, out);
    case 0xcf: return read_be(r, 8, out);
    default: return reader_fail(r, "expected an unsigned integer");
    }
}

static bool read_u32(snap_reader *r, uint32_t *out) {
    uint64_t v = 0;
    if (!read_uint(r, &v)) return false;
    if (v > UINT32_MAX) return reader_fail(r, "integer out of range");
    *out = (uint32_t)v;
    return true;
}

/* Array header; the count must be plausible for the bytes left. */
static bool read_array(snap_reader *r, uint32_t *count) {
    uint8_t tag = 0;
    uint64_t n = 0;
    if (!read_tag(r, &tag)) return false;
    if ((tag & 0xf0) == 0x90) {
        n = tag & 0x0f;
    } else if (tag == 0xdc) {
        if (!read_be(r, 2, &n)) return false;
    } else if (tag == 0xdd) {
        if (!read_be(r, 4, &n)) return false;
    } else {
        return reader_fail(r, "expected an array");
    }
    if (n > (uint64_t)(r->end - r->p)) return reader_fail(r, "array longer than the snapshot");
    *count = (uint32_t)n;
    return true;
}

static bool read_array_exact(snap_reader *r, uint32_t want) {
    uint32_t n = 0;
    if (!read_array(r, &n)) return false;
    if (n != want) return reader_fail(r, "array of the wrong length");
    return true;
}

static bool read_str(snap_reader *r, berth_str *out, uint32_t len_max) {
    uint8_t tag = 0;
    uint64_t n = 0;
    if (!read_tag(r, &tag)) return false;
    if ((tag & 0xe0) == 0xa0) {
        n = tag & 0x1f;
    } else if (tag == 0xd9) {
        if (!read_be(r, 1, &n)) return false;
    } else if (tag == 0xda) {
        if (!read_be(r, 2, &n)) return false;
    } else if (tag == 0xdb) {
        if (!read_be(r, 4, &n)) return false;
    } else {
        return reader_fail(r, "expected a string");
    }
    if (n > len_max) return reader_fail(r, "string over its limit");
    if (n > (uint64_t)(r->end - r->p)) return reader_fail(r, "string runs past the end");
    *out = berth_str_make((const char *)r->p, (size_t)n);
    r->p += n;
    return true;
}

static bool read_bin_exact(snap_reader *r, uint8_t *out, size_t want) {
    uint8_t tag = 0;
    uint64_t n = 0;
    if (!read_tag(r, &tag)) return false;
    if (tag != 0xc4) return reader_fail(r, "expected bytes");
    if (!read_be(r, 1, &n)) return false;
    if (n != want) return reader_fail(r, "bytes of the wrong length");
    if (n > (uint64_t)(r->end - r->p)) return reader_fail(r, "bytes run past the end");
    memcpy(out, r->p, want);
    r->p += want;
    return true;
}

static bool read_name(snap_reader *r, berth_str *out) {
    if (!read_str(r, out, BERTH_NAME_LEN_MAX)) return false;
    if (!berth_name_valid(*out)) return reader_fail(r, "invalid name");
    return true;
}

static bool decode_policy(snap_reader *r, berth_str backends[BERTH_POLICY_BACKENDS_MAX],
                          uint32_t *policy_count) {
    uint32_t count = 0;
    if (!read_array(r, &count)) return false;
    if (count > BERTH_POLICY_BACKENDS_MAX) return reader_fail(r, "too many policy backends");
    for (uint32_t i = 0; i < count; i++) {
        if (!read_name(r, &backends[i])) return false;
        if (i > 0 && berth_str_cmp(backends[i - 1], backends[i]) >= 0) {
            return reader_fail(r, "policy backends not sorted");
        }
    }
    *policy_count = count;
    return true;
}

/* The policy goes in last: restoring instances under today's policy would
 * judge ones deployed under an older, laxer one as EXCLUSIVE conflicts. An
 * empty policy while they are restored, then the real one (which re-marks
 * every instance), gives the same state without that judgement. */
static bool restore_policy(snap_reader *r, berth_state *state, const berth_str *backends, uint32_t count) {
    if (berth_state_restore_policy(state, backends, count) != 0) {
        return reader_fail(r, "policy refused by the state");
    }
    return true;
}

static bool decode_worker(snap_reader *r, berth_state *state, uint64_t last_seq, berth_str *prev_name) {
    berth_str name;
    uint32_t gpu_count = 0, vram_mib = 0, status = 0, label_count = 0;
    uint64_t added_seq = 0;
    berth_label labels[BERTH_LABELS_MAX];
    if (!read_array_exact(r, SNAPSHOT_WORKER_FIELDS)) return false;
    if (!read_name(r, &name)) return false;
    if (!read_u32(r, &gpu_count) || !read_u32(r, &vram_mib) || !read_u32(r, &status)) return false;
    if (!read_uint(r, &added_seq) || !read_array(r, &label_count)) return false;
    if (gpu_count > BERTH_GPUS_MAX) return reader_fail(r, "worker with too many GPUs");
    if (vram_mib > BERTH_VRAM_MIB_MAX) return reader_fail(r, "worker VRAM over its limit");
    if (status > BERTH_WORKER_CORDONED) return reader_fail(r, "unknown worker status");
    if (label_count > BERTH_LABELS_MAX) return reader_fail(r, "too many labels");
    if (added_seq == 0 || added_seq > last_seq) return reader_fail(r, "worker added after the snapshot's seq");
    if (prev_name->len > 0 && berth_str_cmp(*prev_name, name) >= 0) {
        return reader_fail(r, "workers not sorted by name");
    }
    for (uint32_t i = 0; i < label_count; i++) {
        if (!read_array_exact(r, SNAPSHOT_LABEL_FIELDS)) return false;
        if (!read_name(r, &labels[i].key) || !read_name(r, &labels[i].value)) return false;
        if (i > 0 && berth_str_cmp(labels[i - 1].key, labels[i].key) >= 0) {
            return reader_fail(r, "labels not sorted by key");
        }
    }
    if (berth_state_restore_worker(state, name, gpu_count, vram_mib, (berth_worker_status)status,
                                   added_seq, labels, label_count) != 0) {
        return reader_fail(r, "worker refused by the state");
    }
    *prev_name = name;
    return true;
}

static bool decode_workers(snap_reader *r, berth_state *state, uint64_t last_seq) {
    uint32_t count = 0;
    berth_str prev = berth_str_make("", 0);
    if (!read_array(r, &count)) return false;
    if (count > SNAPSHOT_WORKERS_MAX) return reader_fail(r, "too many workers");
    for (uint32_t i = 0; i < count; i++) {
        if (!decode_worker(r, state, last_seq, &prev)) return false;
    }
    return true;
}

static bool decode_instance(snap_reader *r, berth_state *state, uint64_t *prev_seq) {
    berth_str name, model, backend;
    uint32_t claim_mib = 0, slot_count = 0;
    uint64_t deploy_seq = 0;
    berth_str workers[BERTH_PLACEMENT_WORKERS_MAX];
    uint64_t masks[BERTH_PLACEMENT_WORKERS_MAX];
    if (!read_array_exact(r, SNAPSHOT_INSTANCE_FIELDS)) return false;
    if (!read_name(r, &name) || !read_name(r, &model) || !read_name(r, &backend)) return false;
    if (!read_u32(r, &claim_mib) || !read_uint(r, &deploy_seq)) return false;
    if (!read_array(r, &slot_count)) return false;
    if (slot_count < 1 || slot_count > BERTH_PLACEMENT_WORKERS_MAX) {
        return reader_fail(r, "instance with a bad slot count");
    }
    if (claim_mib > BERTH_VRAM_MIB_MAX) return reader_fail(r, "claim over its limit");
    if (deploy_seq <= *prev_seq) return reader_fail(r, "instances not in deploy-seq order");
    for (uint32_t i = 0; i < slot_count; i++) {
        if (!read_array_exact(r, SNAPSHOT_SLOT_FIELDS)) return false;
        if (!read_name(r, &workers[i]) || !read_uint(r, &masks[i])) return false;
        /* A DEPLOY names GPUs or takes them all, so only a worker without
         * GPUs is held with none (restore checks the rest of the mask). */
        const berth_worker *w = berth_state_worker(state, workers[i]);
        if (w != NULL && w->gpu_count > 0 && masks[i] == 0) {
            return reader_fail(r, "instance holds no GPU on a worker that has GPUs");
        }
    }
    if (berth_state_restore_instance(state, name, model, backend, claim_mib, deploy_seq,
                                     workers, masks, slot_count) != 0) {
        return reader_fail(r, "instance refused by the state");
    }
    *prev_seq = deploy_seq;
    return true;
}

static bool decode_instances(snap_reader *r, berth_state *state, uint64_t last_seq) {
    uint32_t count = 0;
    uint64_t prev_seq = 0;
    if (!read_array(r, &count)) return false;
    if (count > SNAPSHOT_INSTANCES_MAX) return reader_fail(r, "too many instances");
    for (uint32_t i = 0; i < count; i++) {
        if (!decode_instance(r, state, &prev_seq)) return false;
    }
    if (prev_seq > last_seq) return reader_fail(r, "instance deployed after the snapshot's seq");
    return true;
}

static bool decode_reqids(snap_reader *r, berth_state *state, uint64_t last_seq) {
    uint32_t count = 0;
    uint64_t prev_seq = 0;
    if (!read_array(r, &count)) return false;
    if (count > BERTH_REQID_WINDOW) return reader_fail(r, "request-id window over its limit");
    for (uint32_t i = 0; i < count; i++) {
        berth_reqid_entry e;
        uint32_t code = 0;
        if (!read_array_exact(r, SNAPSHOT_REQID_FIELDS)) return false;
        if (!read_name(r, &e.reqid) || !read_bin_exact(r, e.command_id, BERTH_COMMAND_ID_LEN)) return false;
        if (!read_uint(r, &e.seq) || !read_u32(r, &code)) return false;
        if (!read_str(r, &e.sentence, BERTH_SENTENCE_LEN_MAX - 1)) return false;
        if (code >= BERTH_CODE_COUNT) return reader_fail(r, "unknown outcome code");
        if (e.seq <= prev_seq || e.seq > last_seq) return reader_fail(r, "request ids out of order");
        e.code = (berth_code)code;
        if (berth_state_restore_reqid(state, &e) != 0) {
            return reader_fail(r, "request id refused by the state");
        }
        prev_seq = e.seq;
    }
    return true;
}

static bool decode_body(snap_reader *r, berth_state *state) {
    uint32_t version = 0;
    uint64_t last_seq = 0;
    if (!read_array_exact(r, SNAPSHOT_TOP_FIELDS)) return false;
    if (!read_u32(r, &version)) return false;
    if (version != BERTH_SNAPSHOT_VERSION) return reader_fail(r, "unknown snapshot version");
    if (!read_uint(r, &last_seq)) return false;
    berth_str policy[BERTH_POLICY_BACKENDS_MAX];
    uint32_t policy_count = 0;
    if (!decode_policy(r, policy, &policy_count)) return false;
    if (!restore_policy(r, state, policy, 0) || !decode_workers(r, state, last_seq)) return false;
    if (!decode_instances(r, state, last_seq) || !decode_reqids(r, state, last_seq)) return false;
    if (!restore_policy(r, state, policy, policy_count)) return false;
    if (r->p != r->end) return reader_fail(r, "trailing bytes after the state");
    berth_state_set_last_seq(state, last_seq);
    return true;
}

/* The version a snapshot says it has, read before its digest is checked:
 * only to name an old format as such rather than as damage. 0: none. */
static uint32_t version_said(const uint8_t *bytes, size_t len) {
    if (len < 2 || bytes[0] != (0x90 | SNAPSHOT_TOP_FIELDS) || bytes[1] > 0x7f) return 0;
    return bytes[1];
}

int berth_snapshot_decode(const void *bytes, size_t len, berth_state **out,
                          uint8_t anchor[BERTH_HASH_LEN], char *err, size_t err_size) {
    assert(out != NULL);
    assert(err != NULL || err_size == 0);
    *out = NULL;
    uint32_t said = bytes != NULL ? version_said(bytes, len) : 0;
    if (said != 0 && said != BERTH_SNAPSHOT_VERSION) {
        if (err_size > 0) {
            snprintf(err, err_size, "snapshot format version %u, not %u (older snapshots are not used; "
                     "replay falls back)", said, BERTH_SNAPSHOT_VERSION);
        }
        return -1;
    }
    if (bytes == NULL || len <= SNAPSHOT_TRAILER_BYTES) {
        if (err_size > 0) snprintf(err, err_size, "snapshot too short (%zu bytes)", len);
        return -1;
    }
    const uint8_t *body = bytes;
    size_t body_len = len - SNAPSHOT_TRAILER_BYTES;
    uint8_t digest[BERTH_HASH_LEN];
    berth_sha256(body, len - BERTH_HASH_LEN, digest);
    if (memcmp(digest, body + len - BERTH_HASH_LEN, BERTH_HASH_LEN) != 0) {
        if (err_size > 0) snprintf(err, err_size, "snapshot digest mismatch (bytes changed)");
        return -1;
    }
    berth_state *state = berth_state_new(NULL);
    if (state == NULL) {
        if (err_size > 0) snprintf(err, err_size, "out of memory loading the snapshot");
        return -1;
    }
    snap_reader r = { .start = body, .p = body, .end = body + body_len, .failed = false, .why = "" };
    if (!decode_body(&r, state)) {
        if (err_size > 0) snprintf(err, err_size, "snapshot does not decode: %s", r.why);
        berth_state_free(state);
        return -1;
    }
    char why[256];
    if (!berth_state_check(state, why, sizeof(why))) {
        if (err_size > 0) snprintf(err, err_size, "snapshot breaks an invariant: %s", why);
        berth_state_free(state);
        return -1;
    }
    if (anchor != NULL) memcpy(anchor, body + body_len, BERTH_HASH_LEN);
    *out = state;
    return 0;
}
