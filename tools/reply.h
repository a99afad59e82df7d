/* reply.h — berthd's RESP2/RESP3 reply writer.
 *
 * Owns the encoding of every reply berthd sends and the growable byte buffer
 * it writes into: each client has one (its output buffer, written to the
 * socket in one write per loop iteration) and background jobs fill their own
 * and hand the bytes over. The buffer is reused for the life of its owner,
 * so the hot path allocates only when a reply outgrows everything seen
 * before. Types that RESP2 lacks degrade the way Redis degrades them: maps
 * become flat field/value arrays, null becomes $-1, booleans become 0/1,
 * verbatim strings become bulk strings, pushes become arrays. */
#ifndef BERTH_REPLY_H
#define BERTH_REPLY_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "names.h"

#define REPLY_CAP_INITIAL 4096          /* first allocation, bytes */
#define REPLY_ERROR_LEN_MAX 2048        /* one error line, bytes incl. code and CRLF */
#define REPLY_LIT_LEN_MAX 99            /* reply_bulk_lit: a length of two digits at most */

typedef struct reply_buf {
    char *data;         /* owned; NULL until the first reply */
    size_t start;       /* bytes before start are already written out */
    size_t len;         /* bytes filled */
    size_t cap;
    uint8_t proto;      /* 2 or 3 */
    bool failed;        /* an allocation failed: contents are incomplete */
} reply_buf;

/* Out of line: make room for n more bytes (compacting, then doubling);
 * NULL, with failed set, when the buffer cannot grow. */
char *reply_grow(reply_buf *rb, size_t n);
/* Where the next n bytes go, or NULL: the caller writes them and adds n
 * (or fewer) to len. The common case, room already there, stays inline. */
static inline char *reply_room(reply_buf *rb, size_t n) {
    assert(n > 0);
    if (!rb->failed && rb->cap - rb->len >= n) {
        return rb->data + rb->len;
    }
    return reply_grow(rb, n);
}

void reply_init(reply_buf *rb, uint8_t proto);
void reply_free(reply_buf *rb);
/* Bytes waiting to be written. */
static inline size_t reply_pending(const reply_buf *rb) {
    return rb->len - rb->start;
}
/* Mark n bytes written; resets to empty (keeping the allocation) when all are. */
void reply_consumed(reply_buf *rb, size_t n);
/* Give back a large allocation once the buffer is empty. */
void reply_shrink(reply_buf *rb, size_t keep_cap_max);
/* Append raw, already-encoded bytes. */
void reply_raw(reply_buf *rb, const char *bytes, size_t len);

void reply_simple(reply_buf *rb, const char *text);                  /* +text */
/* -CODE sentence: CR and LF in the sentence become spaces. */
void reply_error(reply_buf *rb, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void reply_error_str(reply_buf *rb, const char *code, berth_str sentence);
/* A whole "CODE sentence" line as one string (the engine's "ERR ..."). */
void reply_error_line(reply_buf *rb, berth_str line);
/* "<type>[-]<value>\r\n": a length, a count or an integer. */
void reply_header(reply_buf *rb, char type, bool negative, uint64_t value);
/* Most counts and integers in berth's replies are one digit (GPU indexes,
 * small arrays, maps of a few fields): those are four stores, inline. */
static inline void reply_header_small(reply_buf *rb, char type, uint64_t value) {
    if (value < 10 && !rb->failed && rb->cap - rb->len >= 4) {
        char *p = rb->data + rb->len;
        p[0] = type;
        p[1] = (char)('0' + value);
        p[2] = '\r';
        p[3] = '\n';
        rb->len += 4;
        return;
    }
    reply_header(rb, type, false, value);
}
static inline void reply_int(reply_buf *rb, int64_t value) {
    if (value < 0) {
        reply_header(rb, ':', true, (uint64_t)0 - (uint64_t)value);
    } else {
        reply_header_small(rb, ':', (uint64_t)value);
    }
}
void reply_uint(reply_buf *rb, uint64_t value);                      /* as an integer */
void reply_bulk(reply_buf *rb, const char *bytes, size_t len);
void reply_bulk_str(reply_buf *rb, berth_str s);
void reply_bulk_cstr(reply_buf *rb, const char *s);
/* A string literal of 1 to REPLY_LIT_LEN_MAX bytes (a map's field name): its
 * length is a constant, so once inlined the header and the copy are a few
 * stores. */
static inline void reply_bulk_short(reply_buf *rb, const char *bytes, size_t len) {
    assert(len >= 1 && len <= REPLY_LIT_LEN_MAX);
    char *p = reply_room(rb, len + 7);
    if (p == NULL) {
        return;
    }
    *p++ = '$';
    if (len >= 10) {
        *p++ = (char)('0' + len / 10);
    }
    *p++ = (char)('0' + len % 10);
    *p++ = '\r';
    *p++ = '\n';
    memcpy(p, bytes, len);
    p += len;
    *p++ = '\r';
    *p++ = '\n';
    rb->len = (size_t)(p - rb->data);
}
#define reply_bulk_lit(rb, lit) reply_bulk_short((rb), "" lit, sizeof(lit) - 1)
void reply_null(reply_buf *rb);
void reply_bool(reply_buf *rb, bool value);
static inline void reply_array(reply_buf *rb, size_t n) {
    reply_header_small(rb, '*', n);
}
/* RESP3 %pairs, RESP2 a flat array of 2 * pairs. */
static inline void reply_map(reply_buf *rb, size_t pairs) {
    assert(pairs <= SIZE_MAX / 2);
    if (rb->proto == 3) {
        reply_header_small(rb, '%', pairs);
    } else {
        reply_header_small(rb, '*', pairs * 2);
    }
}
void reply_push(reply_buf *rb, size_t n);
/* Long text (INFO): RESP3 verbatim "txt", RESP2 bulk. */
void reply_verbatim(reply_buf *rb, const char *bytes, size_t len);

#endif
