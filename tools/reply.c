/* reply.c — RESP2/RESP3 encoding into a reusable buffer (see reply.h).
 *
 * Owns the one allocation of each reply buffer. Numbers are formatted by hand
 * because snprintf's locale and format parsing would dominate small replies
 * such as a durable write's ":<seq>\r\n". */
#include "reply.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REPLY_U64_DIGITS_MAX 20
#define REPLY_HEADER_LEN_MAX 32     /* type byte, sign, 20 digits, CRLF */

void reply_init(reply_buf *rb, uint8_t proto) {
    assert(rb != NULL);
    assert(proto == 2 || proto == 3);
    memset(rb, 0, sizeof *rb);
    rb->proto = proto;
}

void reply_free(reply_buf *rb) {
    assert(rb != NULL);
    free(rb->data);
    rb->data = NULL;
    rb->start = rb->len = rb->cap = 0;
}

void reply_consumed(reply_buf *rb, size_t n) {
    assert(n <= reply_pending(rb));
    rb->start += n;
    if (rb->start == rb->len) {
        rb->start = rb->len = 0;
    }
}

void reply_shrink(reply_buf *rb, size_t keep_cap_max) {
    if (rb->len != 0 || rb->cap <= keep_cap_max) {
        return;
    }
    free(rb->data);
    rb->data = NULL;
    rb->cap = 0;
}

/* Growth compacts written bytes away first, then doubles; on failure the
 * buffer is marked failed and its owner drops it. */
char *reply_grow(reply_buf *rb, size_t n) {
    assert(n > 0);
    if (rb->failed) {
        return NULL;
    }
    if (rb->cap - rb->len >= n) {
        return rb->data + rb->len;
    }
    if (rb->start > 0) {
        memmove(rb->data, rb->data + rb->start, rb->len - rb->start);
        rb->len -= rb->start;
        rb->start = 0;
        if (rb->cap - rb->len >= n) {
            return rb->data + rb->len;
        }
    }
    size_t cap = rb->cap == 0 ? REPLY_CAP_INITIAL : rb->cap;
    while (cap - rb->len < n) {
        if (cap > SIZE_MAX / 2) {
            rb->failed = true;
            return NULL;
        }
        cap *= 2;
    }
    char *data = realloc(rb->data, cap);
    if (data == NULL) {
        rb->failed = true;
        return NULL;
    }
    rb->data = data;
    rb->cap = cap;
    return rb->data + rb->len;
}

/* The caller filled the room reply_room gave it up to end. */
static void reply_commit(reply_buf *rb, const char *end) {
    assert(end >= rb->data + rb->len && end <= rb->data + rb->cap);
    rb->len = (size_t)(end - rb->data);
}

void reply_raw(reply_buf *rb, const char *bytes, size_t len) {
    assert(bytes != NULL || len == 0);
    if (len == 0) {
        return;   /* bytes may be NULL (an empty side buffer): memcpy must not see it */
    }
    char *p = reply_room(rb, len);
    if (p == NULL) {
        return;
    }
    memcpy(p, bytes, len);
    reply_commit(rb, p + len);
}

/* "00" to "99": two digits per division. Lengths and counts in a reply are
 * mostly one or two digits, so those skip the loop entirely. */
static const char reply_two_digits[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

static uint32_t reply_digit_count(uint64_t v) {
    uint32_t n = 1;
    while (v >= 10000) {
        v /= 10000;
        n += 4;
    }
    return n + (v >= 10) + (v >= 100) + (v >= 1000);
}

/* The decimal digits of v at p; returns the end. */
static char *reply_put_digits(char *p, uint64_t v) {
    if (v < 10) {
        *p = (char)('0' + v);
        return p + 1;
    }
    char *end = p + reply_digit_count(v);
    char *q = end;
    while (v >= 100) {
        q -= 2;
        memcpy(q, reply_two_digits + 2 * (v % 100), 2);
        v /= 100;
    }
    if (v >= 10) {
        q -= 2;
        memcpy(q, reply_two_digits + 2 * v, 2);
    } else {
        *--q = (char)('0' + v);
    }
    assert(q == p);
    return end;
}

static char *reply_put_crlf(char *p) {
    p[0] = '\r';
    p[1] = '\n';
    return p + 2;
}

/* "<type>[-]<value>\r\n" at p; at most REPLY_HEADER_LEN_MAX bytes. */
static char *reply_put_header(char *p, char type, bool negative, uint64_t value) {
    *p++ = type;
    if (negative) {
        *p++ = '-';
    }
    return reply_put_crlf(reply_put_digits(p, value));
}

void reply_header(reply_buf *rb, char type, bool negative, uint64_t value) {
    char *p = reply_room(rb, REPLY_HEADER_LEN_MAX);
    if (p != NULL) {
        reply_commit(rb, reply_put_header(p, type, negative, value));
    }
}

void reply_simple(reply_buf *rb, const char *text) {
    size_t len = strlen(text);
    assert(memchr(text, '\r', len) == NULL && memchr(text, '\n', len) == NULL);
    char *p = reply_room(rb, len + 3);
    if (p == NULL) {
        return;
    }
    *p++ = '+';
    memcpy(p, text, len);
    reply_commit(rb, reply_put_crlf(p + len));
}

/* "-" + line + CRLF with CR/LF replaced: an error is one line on the wire. */
static void reply_error_bytes(reply_buf *rb, const char *code, const char *text, size_t len) {
    size_t code_len = code == NULL ? 0 : strlen(code);
    if (len > REPLY_ERROR_LEN_MAX) {
        len = REPLY_ERROR_LEN_MAX;
    }
    char *p = reply_room(rb, code_len + len + 4);
    if (p == NULL) {
        return;
    }
    *p++ = '-';
    if (code_len > 0) {
        memcpy(p, code, code_len);
        p += code_len;
        *p++ = ' ';
    }
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        *p++ = (c == '\r' || c == '\n') ? ' ' : c;
    }
    reply_commit(rb, reply_put_crlf(p));
}

void reply_error(reply_buf *rb, const char *code, const char *fmt, ...) {
    assert(code != NULL && code[0] != '\0');
    char text[REPLY_ERROR_LEN_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    assert(n >= 0);
    size_t len = (size_t)n < sizeof text ? (size_t)n : sizeof text - 1;
    reply_error_bytes(rb, code, text, len);
}

void reply_error_str(reply_buf *rb, const char *code, berth_str sentence) {
    assert(code != NULL && code[0] != '\0');
    reply_error_bytes(rb, code, sentence.ptr, sentence.len);
}

void reply_error_line(reply_buf *rb, berth_str line) {
    assert(line.len > 0);
    reply_error_bytes(rb, NULL, line.ptr, line.len);
}

void reply_uint(reply_buf *rb, uint64_t value) {
    if (value > (uint64_t)INT64_MAX) {
        /* RESP integers are signed 64-bit; larger values go as text. */
        char tmp[REPLY_U64_DIGITS_MAX];
        char *end = reply_put_digits(tmp, value);
        reply_bulk(rb, tmp, (size_t)(end - tmp));
        return;
    }
    reply_header(rb, ':', false, value);
}

void reply_bulk(reply_buf *rb, const char *bytes, size_t len) {
    assert(bytes != NULL || len == 0);
    char *p = reply_room(rb, len + REPLY_HEADER_LEN_MAX + 2);
    if (p == NULL) {
        return;
    }
    p = reply_put_header(p, '$', false, len);
    if (len > 0) {
        memcpy(p, bytes, len);
    }
    reply_commit(rb, reply_put_crlf(p + len));
}

void reply_bulk_str(reply_buf *rb, berth_str s) {
    reply_bulk(rb, s.ptr, s.len);
}

void reply_bulk_cstr(reply_buf *rb, const char *s) {
    reply_bulk(rb, s, strlen(s));
}

void reply_null(reply_buf *rb) {
    if (rb->proto == 3) {
        reply_raw(rb, "_\r\n", 3);
    } else {
        reply_raw(rb, "$-1\r\n", 5);
    }
}

void reply_bool(reply_buf *rb, bool value) {
    if (rb->proto == 3) {
        reply_raw(rb, value ? "#t\r\n" : "#f\r\n", 4);
    } else {
        reply_raw(rb, value ? ":1\r\n" : ":0\r\n", 4);
    }
}

void reply_push(reply_buf *rb, size_t n) {
    reply_header(rb, rb->proto == 3 ? '>' : '*', false, n);
}

void reply_verbatim(reply_buf *rb, const char *bytes, size_t len) {
    if (rb->proto != 3) {
        reply_bulk(rb, bytes, len);
        return;
    }
    assert(bytes != NULL || len == 0);
    char *p = reply_room(rb, len + REPLY_HEADER_LEN_MAX + 6);
    if (p == NULL) {
        return;
    }
    p = reply_put_header(p, '=', false, len + 4);
    memcpy(p, "txt:", 4);
    p += 4;
    if (len > 0) {
        memcpy(p, bytes, len);
    }
    reply_commit(rb, reply_put_crlf(p + len));
}
