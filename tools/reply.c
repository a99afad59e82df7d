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

/* Room for n more bytes. Growth compacts written bytes away first, then
 * doubles; on failure the buffer is marked failed and its owner drops it. */
static bool reply_reserve(reply_buf *rb, size_t n) {
    if (rb->failed) {
        return false;
    }
    if (rb->cap - rb->len >= n) {
        return true;
    }
    if (rb->start > 0) {
        memmove(rb->data, rb->data + rb->start, rb->len - rb->start);
        rb->len -= rb->start;
        rb->start = 0;
        if (rb->cap - rb->len >= n) {
            return true;
        }
    }
    size_t cap = rb->cap == 0 ? REPLY_CAP_INITIAL : rb->cap;
    while (cap - rb->len < n) {
        if (cap > SIZE_MAX / 2) {
            rb->failed = true;
            return false;
        }
        cap *= 2;
    }
    char *data = realloc(rb->data, cap);
    if (data == NULL) {
        rb->failed = true;
        return false;
    }
    rb->data = data;
    rb->cap = cap;
    return true;
}

void reply_raw(reply_buf *rb, const char *bytes, size_t len) {
    assert(bytes != NULL || len == 0);
    if (len == 0) {
        return;   /* bytes may be NULL (an empty side buffer): memcpy must not see it */
    }
    if (!reply_reserve(rb, len)) {
        return;
    }
    memcpy(rb->data + rb->len, bytes, len);
    rb->len += len;
}

/* Digits of v, written backwards from end; returns the first digit. */
static char *reply_digits(uint64_t v, char *end) {
    char *p = end;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return p;
}

/* "<type><value>\r\n" for lengths and integers. */
static void reply_header(reply_buf *rb, char type, bool negative, uint64_t value) {
    char tmp[REPLY_HEADER_LEN_MAX];
    char *end = tmp + sizeof tmp - 2;
    char *p = reply_digits(value, end);
    if (negative) {
        *--p = '-';
    }
    *--p = type;
    assert(p >= tmp);
    end[0] = '\r';
    end[1] = '\n';
    reply_raw(rb, p, (size_t)(end + 2 - p));
}

void reply_simple(reply_buf *rb, const char *text) {
    size_t len = strlen(text);
    assert(memchr(text, '\r', len) == NULL && memchr(text, '\n', len) == NULL);
    if (!reply_reserve(rb, len + 3)) {
        return;
    }
    rb->data[rb->len++] = '+';
    memcpy(rb->data + rb->len, text, len);
    rb->len += len;
    rb->data[rb->len++] = '\r';
    rb->data[rb->len++] = '\n';
}

/* "-" + line + CRLF with CR/LF replaced: an error is one line on the wire. */
static void reply_error_bytes(reply_buf *rb, const char *code, const char *text, size_t len) {
    size_t code_len = code == NULL ? 0 : strlen(code);
    if (len > REPLY_ERROR_LEN_MAX) {
        len = REPLY_ERROR_LEN_MAX;
    }
    if (!reply_reserve(rb, code_len + len + 4)) {
        return;
    }
    char *p = rb->data + rb->len;
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
    *p++ = '\r';
    *p++ = '\n';
    rb->len = (size_t)(p - rb->data);
    assert(rb->len <= rb->cap);
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

void reply_int(reply_buf *rb, int64_t value) {
    if (value < 0) {
        reply_header(rb, ':', true, (uint64_t)0 - (uint64_t)value);
    } else {
        reply_header(rb, ':', false, (uint64_t)value);
    }
}

void reply_uint(reply_buf *rb, uint64_t value) {
    if (value > (uint64_t)INT64_MAX) {
        /* RESP integers are signed 64-bit; larger values go as text. */
        char tmp[REPLY_HEADER_LEN_MAX];
        char *end = tmp + sizeof tmp;
        char *p = reply_digits(value, end);
        reply_bulk(rb, p, (size_t)(end - p));
        return;
    }
    reply_header(rb, ':', false, value);
}

void reply_bulk(reply_buf *rb, const char *bytes, size_t len) {
    assert(bytes != NULL || len == 0);
    if (!reply_reserve(rb, len + REPLY_HEADER_LEN_MAX + 2)) {
        return;
    }
    reply_header(rb, '$', false, len);
    memcpy(rb->data + rb->len, bytes, len);
    rb->len += len;
    rb->data[rb->len++] = '\r';
    rb->data[rb->len++] = '\n';
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

void reply_array(reply_buf *rb, size_t n) {
    reply_header(rb, '*', false, n);
}

void reply_map(reply_buf *rb, size_t pairs) {
    if (rb->proto == 3) {
        reply_header(rb, '%', false, pairs);
    } else {
        assert(pairs <= SIZE_MAX / 2);
        reply_header(rb, '*', false, pairs * 2);
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
    if (!reply_reserve(rb, len + REPLY_HEADER_LEN_MAX + 6)) {
        return;
    }
    reply_header(rb, '=', false, len + 4);
    memcpy(rb->data + rb->len, "txt:", 4);
    rb->len += 4;
    memcpy(rb->data + rb->len, bytes, len);
    rb->len += len;
    rb->data[rb->len++] = '\r';
    rb->data[rb->len++] = '\n';
}
