/* record.c — owns the journal record's byte layout: encode, decode, hash.
 *
 * The layout is the on-disk contract of every journal, so it lives in one
 * place. An encoded record is two msgpack objects back to back:
 *
 *   body = array(9) [ version   uint   (BERTH_RECORD_VERSION_MIN..BERTH_RECORD_VERSION)
 *                     seq       uint   (>= 1)
 *                     time_ms   uint
 *                     actor     str    (empty, or a name: CLIENT SETNAME's)
 *                     reqid     str    (0..BERTH_NAME_LEN_MAX bytes)
 *                     command   str    (1..BERTH_COMMAND_LEN_MAX bytes)
 *                     code      uint   (fits u32)
 *                     sentence  str    (0..BERTH_SENTENCE_LEN_MAX-1 bytes)
 *                     prev_hash bin 32 ]
 *   hash = bin 32 holding SHA-256(body bytes)
 *
 * The hash trails the body as a fixed 34-byte bin8 (0xc4 0x20 + 32 bytes),
 * so berth_record_hash_ok finds the body without decoding it.
 *
 * Encoding runs msgpack-c's packer template, instantiated over the
 * caller's fixed buffer (no malloc, no callback per field: see "encode"),
 * and hashes with OpenSSL's SHA-256 (libcrypto). A second instantiation,
 * over a sink that only counts, gives a record's exact length before it is
 * written (berth_record_encoded_len), so the LMDB store encodes straight
 * into the room it reserved in a leaf.
 * Decoding has two roads through msgpack-c. The fast one instantiates
 * msgpack-c's own unpacker template (msgpack/unpack_template.h, shipped for
 * exactly this) with callbacks that check each of the body's elements as it
 * arrives and put it into the record: no zone, no object tree, no array of
 * elements walked a second time, strings pointing into the input, and a
 * container that is nested, a map, ext or not a body's length (every known version has the one layout)
 * refused at its header, before anything is sized from it. It is taken
 * only when the record decodes cleanly. Anything else goes the
 * careful road, whose reasons are the ones reported: msgpack_unpack() into
 * a per-thread msgpack_zone that is cleared, never freed, between records.
 * msgpack_unpack sizes a container's element array from the count the input
 * declares, before reading the elements, so six hostile bytes could ask it
 * for gigabytes: a cheap shape gate walks the token headers first and admits
 * only one flat array of scalars, strings and bins that lies wholly inside
 * the input. Both roads take each field through the same checks
 * (field_take), so a record either road accepts decodes to the same fields. */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <msgpack.h>
#include <msgpack/unpack_define.h>
/* SHA256_Init/Update/Final are deprecated in OpenSSL 3.0 but kept through
 * 3.x; the one-shot SHA256() there fetches the algorithm on every call and
 * runs at less than half their speed on a ~200-byte record (1.7 vs 3.8
 * million/s measured here), and the hash bounds verify and append. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#include "backend.h"   /* journal.h, and the encode seam a store uses */
#include "berth_limits.h"

enum {
    record_fields = 9,              /* elements of a body (versions 1 and 2 alike) */
    record_fields_max = 16,         /* elements the shape gate admits (any version) */
    hash_trailer_len = 2 + BERTH_HASH_LEN,  /* bin8 header + digest */
    actor_len_max = BERTH_NAME_LEN_MAX,
    reqid_len_max = BERTH_NAME_LEN_MAX,
    command_len_max = BERTH_COMMAND_LEN_MAX,
    sentence_len_max = BERTH_SENTENCE_LEN_MAX - 1,  /* the limit counts a NUL */
    zone_chunk_size = 1024          /* holds one body's 9 msgpack_objects */
};

_Static_assert(record_fields * sizeof(msgpack_object) < zone_chunk_size,
               "one body's element array must fit the zone's first chunk");
_Static_assert(SHA256_DIGEST_LENGTH == BERTH_HASH_LEN, "hash is SHA-256");

void berth_sha256(const void *bytes, size_t len, uint8_t digest[BERTH_HASH_LEN]) {
    SHA256_CTX ctx;
    /* These return 1 always for in-memory input; checked all the same. */
    int ok = SHA256_Init(&ctx);
    ok &= SHA256_Update(&ctx, bytes, len);
    ok &= SHA256_Final(digest, &ctx);
    assert(ok == 1);
    (void)ok;
}

/* ---- encode ----------------------------------------------------------- */

/* The encoder is msgpack-c's own packer template (msgpack/pack_template.h,
 * shipped for instantiating packers), instantiated here over a bounded
 * buffer whose append is an inline copy. msgpack_packer reaches its sink
 * through a function pointer, a call and a few-byte memcpy per field, which
 * was a fifth of a durable append's CPU; the instantiation is the same code
 * choosing the same forms (the smallest: fixint, uint8..uint64; fixstr,
 * str8..str32; bin8 for the hashes), so every record keeps its bytes and
 * hash (test_journal's codec_encode_matches_packer holds it byte for byte
 * against msgpack_pack_* at every form's edges). */

typedef struct pack_sink {
    uint8_t *at;
    uint8_t *end;
} pack_sink;

/* Overflow empties the room, so every later append fails too: one check at
 * the end of a record tells whether all of it fit. */
static inline int pack_sink_append(pack_sink *sink, const void *bytes, size_t len) {
    assert(sink->at <= sink->end);
    if ((size_t)(sink->end - sink->at) < len) {
        sink->end = sink->at;
        return -1;
    }
    memcpy(sink->at, bytes, len);
    sink->at += len;
    return 0;
}

#define msgpack_pack_inline_func(name) static inline int berth_pack##name
#define msgpack_pack_inline_func_cint(name) static inline int berth_pack##name
#define msgpack_pack_inline_func_fixint(name) static inline int berth_pack_fix##name
#define msgpack_pack_user pack_sink *
#define msgpack_pack_append_buffer(user, buf, len) return pack_sink_append(user, buf, len)
#include <msgpack/pack_template.h>

/* The same template over a sink that only counts: a record's exact length
 * before it is written (berth_record_encoded_len, for MDB_RESERVE), from
 * msgpack-c's own choice of forms, not a second copy of it. The compiler
 * drops the bytes the template builds for a sink that never reads them. */
typedef struct count_sink {
    size_t len;
} count_sink;

static inline int count_sink_append(count_sink *sink, const void *bytes, size_t len) {
    (void)bytes;
    sink->len += len;
    return 0;
}

#undef msgpack_pack_inline_func_cint
#undef msgpack_pack_inline_func_fixint
#define msgpack_pack_inline_func(name) static inline int berth_count##name
#define msgpack_pack_inline_func_cint(name) static inline int berth_count##name
#define msgpack_pack_inline_func_fixint(name) static inline int berth_count_fix##name
#define msgpack_pack_user count_sink *
#define msgpack_pack_append_buffer(user, buf, len) return count_sink_append(user, buf, len)
#include <msgpack/pack_template.h>

static bool str_fits(berth_str s, uint32_t len_min, uint32_t len_max) {
    assert(s.ptr != NULL || s.len == 0);
    return s.len >= len_min && s.len <= len_max;
}

/* The actor is empty or a name, as berthd's CLIENT SETNAME admits: no
 * record carries control bytes for a reader's terminal to act on. */
static bool actor_valid(berth_str actor) {
    return actor.len == 0 || berth_name_valid(actor);
}

/* actor_checked: the caller found this actor valid already (a batch's
 * records mostly share one), so its name scan is skipped. */
static bool record_fields_valid(const berth_record *rec, bool actor_checked) {
    return berth_record_version_known(rec->version) && rec->seq >= 1 &&
           str_fits(rec->actor, 0, actor_len_max) && (actor_checked || actor_valid(rec->actor)) &&
           str_fits(rec->reqid, 0, reqid_len_max) &&
           str_fits(rec->command, 1, command_len_max) &&
           str_fits(rec->sentence, 0, sentence_len_max);
}

/* A record body's fields in order, over either instantiation of the
 * template (P: its prefix): pack_body writes them, count_body counts their
 * bytes. One list, so the length MDB_RESERVE gets and the bytes written
 * cannot disagree on a field or a form. Return codes are folded with |: a
 * full pack_sink fails every later append, so the sink's state at the end
 * says the same as the first failure. */
#define BODY_STR(P, sink, s)                                    \
    do {                                                        \
        rc |= P##_str(sink, (s).len);                           \
        if ((s).len > 0) {                                      \
            rc |= P##_str_body(sink, (s).ptr, (s).len);         \
        }                                                       \
    } while (0)
#define BODY_FIELDS(P, sink, rec)                               \
    do {                                                        \
        rc |= P##_array(sink, record_fields);                   \
        rc |= P##_uint32(sink, (rec)->version);                 \
        rc |= P##_uint64(sink, (rec)->seq);                     \
        rc |= P##_uint64(sink, (rec)->time_ms);                 \
        BODY_STR(P, sink, (rec)->actor);                        \
        BODY_STR(P, sink, (rec)->reqid);                        \
        BODY_STR(P, sink, (rec)->command);                      \
        rc |= P##_uint32(sink, (rec)->code);                    \
        BODY_STR(P, sink, (rec)->sentence);                     \
        rc |= P##_bin(sink, BERTH_HASH_LEN);                    \
        rc |= P##_bin_body(sink, (rec)->prev_hash, BERTH_HASH_LEN); \
    } while (0)

static int pack_bin32(pack_sink *sink, const uint8_t bytes[BERTH_HASH_LEN]) {
    return berth_pack_bin(sink, BERTH_HASH_LEN) | berth_pack_bin_body(sink, bytes, BERTH_HASH_LEN);
}

static int pack_body(pack_sink *sink, const berth_record *rec) {
    int rc = 0;
    BODY_FIELDS(berth_pack, sink, rec);
    return rc;
}

static size_t count_body(const berth_record *rec) {
    count_sink sink = { 0 };
    int rc = 0;
    BODY_FIELDS(berth_count, &sink, rec);
    assert(rc == 0);   /* counting cannot fail */
    (void)rc;
    return sink.len;
}

/* Pack the body into buf's room, hash it, pack the hash: the record's
 * length, or 0 when it did not fit. Fields already checked. */
static size_t encode_checked(berth_record *rec, uint8_t *buf, size_t room) {
    pack_sink sink = { buf, buf + room };
    if (pack_body(&sink, rec) != 0) {
        return 0;
    }
    size_t body_len = (size_t)(sink.at - buf);
    berth_sha256(buf, body_len, rec->hash);
    if (pack_bin32(&sink, rec->hash) != 0) {
        return 0;
    }
    size_t len = (size_t)(sink.at - buf);
    assert(len == body_len + hash_trailer_len && len <= room);
    return len;
}

size_t berth_record_encode(berth_record *rec, uint8_t *buf, size_t cap) {
    assert(rec != NULL);
    assert(buf != NULL || cap == 0);
    if (!record_fields_valid(rec, false)) {
        return 0;
    }
    return encode_checked(rec, buf, cap < BERTH_RECORD_BYTES_MAX ? cap : BERTH_RECORD_BYTES_MAX);
}

size_t berth_record_encoded_len(const berth_record *rec, bool actor_checked) {
    assert(rec != NULL);
    if (!record_fields_valid(rec, actor_checked)) {
        return 0;
    }
    size_t len = count_body(rec) + hash_trailer_len;
    return len <= BERTH_RECORD_BYTES_MAX ? len : 0;
}

bool berth_record_encode_sized(berth_record *rec, uint8_t *buf, size_t len) {
    assert(rec != NULL && buf != NULL && len > 0 && len <= BERTH_RECORD_BYTES_MAX);
    return encode_checked(rec, buf, len) == len;
}

/* ---- shape gate ------------------------------------------------------ */

static uint64_t read_be(const uint8_t *p, size_t width) {
    assert(width == 1 || width == 2 || width == 4 || width == 8);
    uint64_t v = 0;
    for (size_t i = 0; i < width; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* Header width and payload-length width of a scalar, str or bin token, by
 * its first byte. false for containers, ext and the never-used 0xc1: no
 * record field is one of those. */
static bool flat_token_form(uint8_t b, size_t *head, size_t *len_width, size_t *fixed) {
    *head = 1;
    *len_width = 0;
    *fixed = 0;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
        return true;                                   /* fixint, nil, bool */
    }
    if (b >= 0xa0 && b <= 0xbf) {
        *fixed = b & 0x1f;                             /* fixstr */
        return true;
    }
    switch (b) {
    case 0xcc: case 0xd0: *fixed = 1; return true;
    case 0xcd: case 0xd1: *fixed = 2; return true;
    case 0xca: case 0xce: case 0xd2: *fixed = 4; return true;
    case 0xcb: case 0xcf: case 0xd3: *fixed = 8; return true;
    case 0xc4: case 0xd9: *len_width = 1; return true;   /* bin8, str8 */
    case 0xc5: case 0xda: *len_width = 2; return true;   /* bin16, str16 */
    case 0xc6: case 0xdb: *len_width = 4; return true;   /* bin32, str32 */
    default: return false;
    }
}

/* Advance *off past one flat token of bytes[0..len). */
static bool skip_flat_token(const uint8_t *bytes, size_t len, size_t *off) {
    assert(*off <= len);
    if (*off == len) {
        return false;
    }
    size_t head, len_width, payload;
    if (!flat_token_form(bytes[*off], &head, &len_width, &payload)) {
        return false;
    }
    size_t left = len - *off - head;   /* head is 1 and *off < len */
    if (len_width > 0) {
        if (left < len_width) {
            return false;
        }
        payload = (size_t)read_be(bytes + *off + head, len_width);
        left -= len_width;
        head += len_width;
    }
    if (payload > left) {
        return false;
    }
    *off += head + payload;
    return true;
}

/* Array header at bytes[0]: element count and header width. */
static bool array_header(const uint8_t *bytes, size_t len, uint64_t *count, size_t *head) {
    if (len == 0) {
        return false;
    }
    uint8_t b = bytes[0];
    if (b >= 0x90 && b <= 0x9f) {
        *count = b & 0x0f;
        *head = 1;
        return true;
    }
    size_t width = b == 0xdc ? 2 : b == 0xdd ? 4 : 0;
    if (width == 0 || len < 1 + width) {
        return false;
    }
    *count = read_be(bytes + 1, width);
    *head = 1 + width;
    return true;
}

static void why_set(char *why, size_t why_size, const char *fmt, unsigned long long a,
                    unsigned long long b) {
    if (why != NULL && why_size > 0) {
        int n = snprintf(why, why_size, fmt, a, b);
        assert(n >= 0);
    }
}

/* Find the body's length: one flat array of at most record_fields_max
 * elements, followed by the hash trailer and nothing else. */
static berth_jerr body_shape(const uint8_t *bytes, size_t len, size_t *body_len,
                             char *why, size_t why_size) {
    uint64_t count;
    size_t off;
    if (!array_header(bytes, len, &count, &off)) {
        why_set(why, why_size, "record does not start with a msgpack array (%llu bytes)",
                len, 0);
        return BERTH_J_CORRUPT;
    }
    if (count > record_fields_max) {
        why_set(why, why_size, "record body has %llu fields, at most %llu are possible",
                count, record_fields_max);
        return BERTH_J_CORRUPT;
    }
    for (uint64_t i = 0; i < count; i++) {
        if (!skip_flat_token(bytes, len, &off)) {
            why_set(why, why_size, "record field %llu is truncated or of an impossible type"
                    " (at byte %llu)", i, off);
            return BERTH_J_CORRUPT;
        }
    }
    *body_len = off;
    if (len - off < hash_trailer_len) {
        why_set(why, why_size, "record hash is missing or truncated (%llu of %llu bytes)",
                len - off, hash_trailer_len);
        return BERTH_J_CORRUPT;
    }
    if (len - off > hash_trailer_len) {
        why_set(why, why_size, "record has %llu trailing bytes after its hash",
                len - off - hash_trailer_len, 0);
        return BERTH_J_CORRUPT;
    }
    if (bytes[off] != 0xc4 || bytes[off + 1] != BERTH_HASH_LEN) {
        why_set(why, why_size, "record hash is not a 32-byte bin (header 0x%02llx 0x%02llx)",
                bytes[off], bytes[off + 1]);
        return BERTH_J_CORRUPT;
    }
    return BERTH_J_OK;
}

/* ---- decode ---------------------------------------------------------- */

static pthread_once_t zone_key_once = PTHREAD_ONCE_INIT;
static pthread_key_t zone_key;
static bool zone_key_ready;
/* The zone of this thread; the key's destructor frees it at thread exit. */
static _Thread_local msgpack_zone *thread_zone;

static void zone_destroy(void *zone) {
    msgpack_zone_free(zone);
}

static void zone_key_create(void) {
    zone_key_ready = pthread_key_create(&zone_key, zone_destroy) == 0;
}

static msgpack_zone *zone_of_thread(void) {
    if (thread_zone != NULL) {
        return thread_zone;
    }
    int rc = pthread_once(&zone_key_once, zone_key_create);
    if (rc != 0 || !zone_key_ready) {
        return NULL;
    }
    msgpack_zone *zone = msgpack_zone_new(zone_chunk_size);
    if (zone == NULL) {
        return NULL;
    }
    if (pthread_setspecific(zone_key, zone) != 0) {
        msgpack_zone_free(zone);
        return NULL;
    }
    thread_zone = zone;
    return zone;
}

static const char *const field_names[record_fields] = {
    "version", "seq", "time_ms", "actor", "reqid", "command", "code", "sentence",
    "prev_hash"
};

enum { actor_not_name = record_fields + 1 };   /* body_fields: the actor is a string, not a name */

/* Field i (1..8) of a body into out, by the element's type:
 * false when it is of the wrong type or out of its limits. The actor's
 * charset is checked apart (actor_valid), so the careful road can say
 * which. Both roads take every field through these: the careful one from
 * the decoded array (field_take), the fast one as each element arrives. */
static inline bool take_uint(uint32_t i, uint64_t v, berth_record *out) {
    switch (i) {
    case 1: out->seq = v; return v != 0;
    case 2: out->time_ms = v; return true;
    case 6: out->code = (uint32_t)v; return v <= UINT32_MAX;
    default: return false;
    }
}

static inline bool take_str(uint32_t i, const char *p, uint32_t len, berth_record *out) {
    berth_str str = berth_str_make(len > 0 ? p : "", len);
    switch (i) {
    case 3: out->actor = str; return len <= actor_len_max;
    case 4: out->reqid = str; return len <= reqid_len_max;
    case 5: out->command = str; return len >= 1 && len <= command_len_max;
    case 7: out->sentence = str; return len <= sentence_len_max;
    default: return false;
    }
}

static inline bool take_bin(uint32_t i, const char *p, uint32_t len, berth_record *out) {
    if (i != 8 || len != BERTH_HASH_LEN) return false;
    memcpy(out->prev_hash, p, BERTH_HASH_LEN);
    return true;
}

static bool field_take(uint32_t i, const msgpack_object *o, berth_record *out) {
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return take_uint(i, o->via.u64, out);
    case MSGPACK_OBJECT_STR: return take_str(i, o->via.str.ptr, o->via.str.size, out);
    case MSGPACK_OBJECT_BIN: return take_bin(i, o->via.bin.ptr, o->via.bin.size, out);
    default: return false;
    }
}

/* Fill out from a body; returns the index of the first bad field,
 * actor_not_name, or record_fields when all are good. */
static uint32_t body_fields(const msgpack_object *f, berth_record *out) {
    for (uint32_t i = 1; i < record_fields; i++) {
        if (!field_take(i, &f[i], out)) return i;
        if (i == 3 && !actor_valid(out->actor)) return actor_not_name;
    }
    return record_fields;
}

static berth_jerr body_decode(const msgpack_object *body, berth_record *out,
                              char *why, size_t why_size) {
    if (body->type != MSGPACK_OBJECT_ARRAY || body->via.array.size == 0) {
        why_set(why, why_size, "record body is not a non-empty array", 0, 0);
        return BERTH_J_CORRUPT;
    }
    const msgpack_object *f = body->via.array.ptr;
    if (f[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        why_set(why, why_size, "record format version is not an unsigned integer", 0, 0);
        return BERTH_J_CORRUPT;
    }
    if (f[0].via.u64 > UINT32_MAX || !berth_record_version_known((uint32_t)f[0].via.u64)) {
        why_set(why, why_size, "unknown format version %llu", f[0].via.u64, 0);
        return BERTH_J_CORRUPT;
    }
    if (body->via.array.size != record_fields) {
        why_set(why, why_size, "record has %llu fields, its format version has %llu",
                body->via.array.size, record_fields);
        return BERTH_J_CORRUPT;
    }
    out->version = (uint32_t)f[0].via.u64;
    uint32_t bad = body_fields(f, out);
    if (bad == actor_not_name) {
        if (why != NULL && why_size > 0) {
            int n = snprintf(why, why_size, "record field actor is not empty or a name of 1-%d bytes "
                             "of [A-Za-z0-9._:/-] (what CLIENT SETNAME admits)", BERTH_NAME_LEN_MAX);
            assert(n >= 0);
        }
        return BERTH_J_CORRUPT;
    }
    if (bad != record_fields) {
        if (why != NULL && why_size > 0) {
            int n = snprintf(why, why_size, "record field %s is of the wrong type or out of"
                             " its limits", field_names[bad]);
            assert(n >= 0);
        }
        return BERTH_J_CORRUPT;
    }
    return BERTH_J_OK;
}

/* ---- the fast road: msgpack-c's unpacker template ------------------- */

/* The template's object is what a callback hands it: here only whether it
 * was the body's array, since each element goes into the record in its own
 * callback (the template calls them in the body's order, each element's
 * before the array counts it). A msgpack_object was a 24-byte struct that
 * the template copies by value per element, written field by field and
 * read back whole: a store the load cannot be forwarded from, which cost
 * replay more time than anything else in decode (perf on 2M records). */
typedef unsigned int flat_obj;
/* The per-element callbacks, inlined into the template's loop: a call per
 * element cost more than the element (GCC left some out of line). */
#define FLAT_HOT static inline __attribute__((always_inline))
#define FLAT_VALUE 0u
#define FLAT_BODY 1u

/* The template's user data: the record the body's elements go into, each
 * checked as it arrives (take_*), so a body the fast road accepts has had
 * every check the careful road makes, with no array to walk again. */
typedef struct flat_user {
    berth_record *out;
    uint32_t taken;             /* the body's elements so far */
    bool in_array;              /* the body's array has begun: no second container */
} flat_user;

/* The callbacks return 0 to go on, -1 to stop (the careful road then says
 * why). An element outside the body's array, or of a type no field has
 * (nil, bool, float, a negative integer), stops it. */
static flat_obj flat_root(flat_user *u) {
    (void)u;
    return FLAT_VALUE;
}

/* The next element: the version first (any other version takes the
 * careful road, which names it), then field `taken`. */
FLAT_HOT int flat_next(flat_user *u, uint32_t *i) {
    if (!u->in_array) return -1;
    *i = u->taken++;
    return 0;
}

FLAT_HOT int flat_u64(flat_user *u, uint64_t d, flat_obj *o) {
    *o = FLAT_VALUE;
    uint32_t i;
    if (flat_next(u, &i) != 0) return -1;
    if (i == 0) {
        if (d > UINT32_MAX || !berth_record_version_known((uint32_t)d)) return -1;
        u->out->version = (uint32_t)d;
        return 0;
    }
    return take_uint(i, d, u->out) ? 0 : -1;
}
FLAT_HOT int flat_uint8(flat_user *u, uint8_t d, flat_obj *o) { return flat_u64(u, d, o); }
FLAT_HOT int flat_uint16(flat_user *u, uint16_t d, flat_obj *o) { return flat_u64(u, d, o); }
FLAT_HOT int flat_uint32(flat_user *u, uint32_t d, flat_obj *o) { return flat_u64(u, d, o); }
FLAT_HOT int flat_uint64(flat_user *u, uint64_t d, flat_obj *o) { return flat_u64(u, d, o); }

/* msgpack-c types a non-negative signed integer as positive, as here. */
static int flat_i64(flat_user *u, int64_t d, flat_obj *o) {
    if (d >= 0) return flat_u64(u, (uint64_t)d, o);
    return -1;
}
static int flat_int8(flat_user *u, int8_t d, flat_obj *o) { return flat_i64(u, d, o); }
static int flat_int16(flat_user *u, int16_t d, flat_obj *o) { return flat_i64(u, d, o); }
static int flat_int32(flat_user *u, int32_t d, flat_obj *o) { return flat_i64(u, d, o); }
static int flat_int64(flat_user *u, int64_t d, flat_obj *o) { return flat_i64(u, d, o); }

static int flat_refuse(flat_user *u, flat_obj *o) {
    (void)u;
    *o = FLAT_VALUE;
    return -1;
}
static int flat_float(flat_user *u, float d, flat_obj *o) { (void)d; return flat_refuse(u, o); }
static int flat_double(flat_user *u, double d, flat_obj *o) { (void)d; return flat_refuse(u, o); }
static int flat_nil(flat_user *u, flat_obj *o) { return flat_refuse(u, o); }
static int flat_true(flat_user *u, flat_obj *o) { return flat_refuse(u, o); }
static int flat_false(flat_user *u, flat_obj *o) { return flat_refuse(u, o); }

/* The one container a body may be, and only of a body's
 * length: refused before its count sizes anything. Any other array takes
 * the careful road, which says what it is. */
static int flat_array(flat_user *u, unsigned int n, flat_obj *o) {
    if (u->in_array || n != record_fields) return -1;
    u->in_array = true;
    *o = FLAT_BODY;
    return 0;
}
/* Its element was taken by its own callback already. */
static int flat_array_item(flat_user *u, flat_obj *c, flat_obj o) {
    (void)u; (void)c; (void)o;
    return 0;
}
static int flat_map(flat_user *u, unsigned int n, flat_obj *o) {
    (void)n;
    return flat_refuse(u, o);
}
static int flat_map_item(flat_user *u, flat_obj *c, flat_obj k, flat_obj v) {
    (void)u; (void)c; (void)k; (void)v;
    return -1;
}
FLAT_HOT int flat_str(flat_user *u, const char *b, const char *p, unsigned int l, flat_obj *o) {
    (void)b;
    *o = FLAT_VALUE;
    uint32_t i;
    if (flat_next(u, &i) != 0 || !take_str(i, p, l, u->out)) return -1;
    /* The actor checked from p and l, not read back from out: the length
     * was just stored as 4 bytes, and a by-value read takes 8 there, which
     * the store cannot forward to (a fifth of decode's time in perf). */
    return i == 3 && !actor_valid(berth_str_make(l > 0 ? p : "", l)) ? -1 : 0;
}
FLAT_HOT int flat_bin(flat_user *u, const char *b, const char *p, unsigned int l, flat_obj *o) {
    (void)b;
    *o = FLAT_VALUE;
    uint32_t i;
    if (flat_next(u, &i) != 0) return -1;
    return take_bin(i, p, l, u->out) ? 0 : -1;
}
static int flat_ext(flat_user *u, const char *b, const char *p, unsigned int l, flat_obj *o) {
    (void)b; (void)p; (void)l;
    return flat_refuse(u, o);
}

#define msgpack_unpack_struct(name) struct flat_unpack##name
#define msgpack_unpack_func(ret, name) static ret flat_unpack##name
#define msgpack_unpack_callback(name) flat##name
#define msgpack_unpack_object flat_obj
#define msgpack_unpack_user flat_user
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#include <msgpack/unpack_template.h>
#pragma GCC diagnostic pop

/* The fast road; BERTH_J_CORRUPT means only "take the careful road"
 * (out may then hold some fields: the careful road fills it again). */
static berth_jerr decode_fast(const uint8_t *bytes, size_t len, berth_record *out) {
    struct flat_unpack_context ctx;
    ctx.user.out = out;
    ctx.user.taken = 0;
    ctx.user.in_array = false;
    flat_unpack_init(&ctx);
    size_t off = 0;
    int rc = flat_unpack_execute(&ctx, (const char *)bytes, len, &off);
    if (rc != 1 || len - off != hash_trailer_len) return BERTH_J_CORRUPT;
    if (bytes[off] != 0xc4 || bytes[off + 1] != BERTH_HASH_LEN) return BERTH_J_CORRUPT;
    /* A complete body is the one array, every element taken. */
    if (flat_unpack_data(&ctx) != FLAT_BODY || ctx.user.taken != record_fields) return BERTH_J_CORRUPT;
    memcpy(out->hash, bytes + off + 2, BERTH_HASH_LEN);
    return BERTH_J_OK;
}

/* One msgpack unsigned integer at *at, any width; false past end or when
 * the byte there starts something else. */
static bool peek_uint(const uint8_t *bytes, size_t len, size_t *at, uint64_t *out) {
    if (*at >= len) return false;
    uint8_t tag = bytes[*at];
    if (tag <= 0x7f) {
        *out = tag;
        *at += 1;
        return true;
    }
    size_t width = tag == 0xcc ? 1 : tag == 0xcd ? 2 : tag == 0xce ? 4 : tag == 0xcf ? 8 : 0;
    if (width == 0 || len - *at - 1 < width) return false;
    *out = read_be(bytes + *at + 1, width);
    *at += 1 + width;
    return true;
}

bool berth_record_peek_time(const uint8_t *bytes, size_t len, uint64_t *seq, uint64_t *time_ms) {
    assert(bytes != NULL || len == 0);
    assert(seq != NULL && time_ms != NULL);
    _Static_assert(record_fields <= 15, "a fixarray header");
    size_t at = 1;
    uint64_t version = 0;
    return len > hash_trailer_len && bytes[0] == (0x90 | record_fields) &&
           peek_uint(bytes, len, &at, &version) && version <= UINT32_MAX &&
           berth_record_version_known((uint32_t)version) &&
           peek_uint(bytes, len, &at, seq) && peek_uint(bytes, len, &at, time_ms);
}

bool berth_record_peek_chain(const uint8_t *bytes, size_t len, uint64_t *seq,
                             const uint8_t **prev_hash, const uint8_t **hash) {
    assert(bytes != NULL || len == 0);
    assert(seq != NULL && prev_hash != NULL && hash != NULL);
    uint64_t time_ms = 0;
    /* The body's last element is prev_hash, a bin8 of 32 just before the
     * hash trailer (both fixed-size, so found from the end). */
    if (len < 2 * hash_trailer_len + 4 || len > BERTH_RECORD_BYTES_MAX ||
        !berth_record_peek_time(bytes, len, seq, &time_ms)) {
        return false;
    }
    const uint8_t *prev = bytes + len - 2 * hash_trailer_len;
    const uint8_t *own = bytes + len - hash_trailer_len;
    if (prev[0] != 0xc4 || prev[1] != BERTH_HASH_LEN || own[0] != 0xc4 || own[1] != BERTH_HASH_LEN) {
        return false;
    }
    *prev_hash = prev + 2;
    *hash = own + 2;
    return true;
}

berth_jerr berth_record_decode(const uint8_t *bytes, size_t len, berth_record *out,
                               char *why, size_t why_size) {
    assert(bytes != NULL || len == 0);
    assert(out != NULL);
    if (len > 0 && decode_fast(bytes, len, out) == BERTH_J_OK) {
        if (why != NULL && why_size > 0) {
            why[0] = '\0';
        }
        return BERTH_J_OK;
    }
    if (why != NULL && why_size > 0) {
        why[0] = '\0';
    }
    size_t body_len = 0;
    berth_jerr err = body_shape(bytes, len, &body_len, why, why_size);
    if (err != BERTH_J_OK) {
        return err;
    }
    assert(body_len > 0 && body_len + hash_trailer_len == len);
    msgpack_zone *zone = zone_of_thread();
    if (zone == NULL) {
        why_set(why, why_size, "out of memory for the record decoder", 0, 0);
        return BERTH_J_NOMEM;
    }
    msgpack_zone_clear(zone);
    msgpack_object body;
    size_t off = 0;
    msgpack_unpack_return rc = msgpack_unpack((const char *)bytes, body_len, &off, zone, &body);
    if (rc != MSGPACK_UNPACK_SUCCESS || off != body_len) {
        why_set(why, why_size, "record body does not decode as msgpack (code %llu)",
                (unsigned long long)(rc < 0 ? -rc : rc), 0);
        return BERTH_J_CORRUPT;
    }
    err = body_decode(&body, out, why, why_size);
    if (err == BERTH_J_OK) {
        memcpy(out->hash, bytes + body_len + 2, BERTH_HASH_LEN);
    }
    return err;
}

bool berth_record_hash_ok(const uint8_t *bytes, size_t len) {
    assert(bytes != NULL || len == 0);
    if (len <= hash_trailer_len) {
        return false;
    }
    size_t body_len = len - hash_trailer_len;
    if (bytes[body_len] != 0xc4 || bytes[body_len + 1] != BERTH_HASH_LEN) {
        return false;
    }
    uint8_t digest[BERTH_HASH_LEN];
    berth_sha256(bytes, body_len, digest);
    return memcmp(digest, bytes + body_len + 2, BERTH_HASH_LEN) == 0;
}
