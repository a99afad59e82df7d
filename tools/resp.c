/* resp.c — the RESP request reader (see resp.h for the contract).
 *
 * Owns only grammar and limits: it never allocates, keeps no state but the
 * caller's resp_resume, and reports exactly one of NEED_MORE / COMMAND /
 * ERROR per call. Every length
 * a client declares is checked against a limit before the parser waits for
 * the bytes it announces, so a client claiming a 2 GiB bulk string is refused
 * at once instead of being buffered. */
#include "resp.h"

#include <assert.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define RESP_DIGITS_MAX 18          /* 10^18 - 1 fits int64 without overflow checks per digit */

typedef enum header_status { HEADER_NEED_MORE = 0, HEADER_OK = 1, HEADER_ERROR = 2 } header_status;

static resp_status resp_fail(resp_result *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static resp_status resp_fail(resp_result *out, const char *fmt, ...) {
    assert(out != NULL);
    int prefix = snprintf(out->error, sizeof out->error, "Protocol error: ");
    assert(prefix > 0 && (size_t)prefix < sizeof out->error);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out->error + prefix, sizeof out->error - (size_t)prefix, fmt, ap);
    va_end(ap);
    assert(n >= 0);
    out->status = RESP_ERROR;
    out->consumed = 0;
    out->argc = 0;
    return RESP_ERROR;
}

/* A byte shown in an error message: printable as itself, else as hex, so a
 * binary stream never puts control bytes into a reply. */
static void resp_show_byte(char c, char *out, size_t size) {
    assert(size >= 8);
    unsigned char u = (unsigned char)c;
    if (u >= 0x21 && u <= 0x7e && u != '\'') {
        int n = snprintf(out, size, "'%c'", c);
        assert(n > 0 && (size_t)n < size);
    } else {
        int n = snprintf(out, size, "0x%02x", u);
        assert(n > 0 && (size_t)n < size);
    }
}

/* The common case of resp_header, in one pass: 1 to RESP_DIGITS_MAX digits
 * then CRLF, all in buf. Anything else (a sign, a stray byte, too many
 * digits, bytes still to come) is left to resp_header's checks, so errors
 * and waits stay exactly as they are. */
static bool resp_header_fast(const char *buf, size_t len, size_t pos, int64_t *value,
                             size_t *next) {
    size_t i = pos + 1;
    size_t end = pos + 1 + RESP_DIGITS_MAX;
    if (end > len) {
        end = len;
    }
    int64_t v = 0;
    while (i < end && buf[i] >= '0' && buf[i] <= '9') {
        v = v * 10 + (buf[i] - '0');
        i++;
    }
    if (i == pos + 1 || i + 1 >= len || buf[i] != '\r' || buf[i + 1] != '\n') {
        return false;
    }
    if (buf[pos + 1] == '0' && i > pos + 2) {
        return false;   /* a leading zero: resp_header refuses it */
    }
    *value = v;
    *next = i + 2;
    return true;
}

/* Parse "<type><signed decimal>\r\n" at buf[pos]. The header must end within
 * RESP_HEADER_LEN_MAX bytes; a longer one is an error, not a reason to wait. */
static header_status resp_header(const char *buf, size_t len, size_t pos, const char *what,
                                 int64_t *value, size_t *next, resp_result *out) {
    assert(pos < len);
    if (resp_header_fast(buf, len, pos, value, next)) {
        return HEADER_OK;
    }
    size_t window = len - pos;
    if (window > RESP_HEADER_LEN_MAX) {
        window = RESP_HEADER_LEN_MAX;
    }
    const char *start = buf + pos + 1;
    const char *cr = memchr(start, '\r', window - 1);
    if (cr == NULL) {
        if (len - pos < RESP_HEADER_LEN_MAX) {
            return HEADER_NEED_MORE;
        }
        resp_fail(out, "invalid %s: no CRLF within %d bytes", what, RESP_HEADER_LEN_MAX);
        return HEADER_ERROR;
    }
    size_t cr_at = (size_t)(cr - buf);
    if (cr_at + 1 >= len) {
        return HEADER_NEED_MORE;
    }
    if (buf[cr_at + 1] != '\n') {
        resp_fail(out, "invalid %s: CR not followed by LF", what);
        return HEADER_ERROR;
    }
    const char *p = start;
    bool negative = false;
    if (p < cr && *p == '-') {
        negative = true;
        p++;
    }
    size_t digits = (size_t)(cr - p);
    if (digits == 0 || digits > RESP_DIGITS_MAX) {
        resp_fail(out, "invalid %s: expected 1 to %d digits", what, RESP_DIGITS_MAX);
        return HEADER_ERROR;
    }
    if (negative && *p == '0') {
        /* "-0" (or "-01") is no length any Redis client writes: Redis
         * refuses it, and taking it for 0 would hide a broken writer. */
        resp_fail(out, "invalid %s: a negative length starting with 0", what);
        return HEADER_ERROR;
    }
    if (digits > 1 && *p == '0') {
        /* "$03" or "*01": the same, and Redis refuses it too. */
        resp_fail(out, "invalid %s: a length with a leading zero", what);
        return HEADER_ERROR;
    }
    int64_t v = 0;
    for (; p < cr; p++) {
        if (*p < '0' || *p > '9') {
            char shown[8];
            resp_show_byte(*p, shown, sizeof shown);
            resp_fail(out, "invalid %s: %s is not a digit", what, shown);
            return HEADER_ERROR;
        }
        v = v * 10 + (*p - '0');
    }
    *value = negative ? -v : v;
    *next = cr_at + 2;
    return HEADER_OK;
}

static resp_status resp_done(resp_result *out, size_t consumed, size_t argc) {
    assert(consumed > 0);
    out->status = RESP_COMMAND;
    out->consumed = consumed;
    out->argc = argc;
    out->error[0] = '\0';
    return RESP_COMMAND;
}

static resp_status resp_need_more(resp_result *out) {
    out->status = RESP_NEED_MORE;
    out->consumed = 0;
    out->argc = 0;
    out->error[0] = '\0';
    return RESP_NEED_MORE;
}

/* One "$<len>\r\n<bytes>\r\n" element at *pos. */
static resp_status resp_bulk(const char *buf, size_t len, const resp_limits *limits,
                             size_t *pos, berth_str *arg, resp_result *out) {
    assert(*pos <= len);
    if (*pos == len) {
        return resp_need_more(out);
    }
    if (buf[*pos] != '$') {
        char shown[8];
        resp_show_byte(buf[*pos], shown, sizeof shown);
        return resp_fail(out, "expected '$' before an argument, got %s", shown);
    }
    int64_t blen = 0;
    size_t data = 0;
    out->headers_read++;
    header_status h = resp_header(buf, len, *pos, "bulk length", &blen, &data, out);
    if (h == HEADER_NEED_MORE) {
        return resp_need_more(out);
    }
    if (h == HEADER_ERROR) {
        return RESP_ERROR;
    }
    if (blen < 0) {
        return resp_fail(out, "invalid bulk length: negative length %lld", (long long)blen);
    }
    if (blen > (int64_t)limits->bulk_bytes_max) {
        return resp_fail(out, "bulk length %lld exceeds the limit of %u bytes",
                         (long long)blen, limits->bulk_bytes_max);
    }
    size_t end = data + (size_t)blen + 2;
    if (end > limits->command_bytes_max) {
        return resp_fail(out, "command exceeds the limit of %u bytes", limits->command_bytes_max);
    }
    if (end > len) {
        return resp_need_more(out);
    }
    if (buf[end - 2] != '\r' || buf[end - 1] != '\n') {
        return resp_fail(out, "expected CRLF after a bulk string of %lld bytes", (long long)blen);
    }
    *arg = berth_str_make(buf + data, (size_t)blen);
    *pos = end;
    return RESP_COMMAND;
}

static resp_status resp_array(const char *buf, size_t len, const resp_limits *limits,
                              berth_str *argv, resp_resume *resume, resp_result *out) {
    int64_t count = 0;
    size_t pos = 0;
    header_status h = resp_header(buf, len, 0, "multibulk length", &count, &pos, out);
    if (h == HEADER_NEED_MORE) {
        return resp_need_more(out);
    }
    if (h == HEADER_ERROR) {
        return RESP_ERROR;
    }
    if (count < 0) {
        count = 0;      /* "*-1", a null array: an empty command, ignored as by Redis */
    }
    if (count > (int64_t)limits->args_max) {
        return resp_fail(out, "%lld arguments exceed the limit of %u",
                         (long long)count, limits->args_max);
    }
    size_t first = pos;
    int64_t i = 0;
    if (resume != NULL && resume->argc > 0) {
        /* The arguments before resume->pos were whole and within the
         * limits when it was set, and those bytes have not changed. */
        assert(resume->argc < (uint64_t)count && resume->pos > first && resume->pos <= len);
        i = (int64_t)resume->argc;
        pos = resume->pos;
    }
    bool resumed = i > 0;
    for (; i < count; i++) {
        resp_status s = resp_bulk(buf, len, limits, &pos, &argv[i], out);
        if (s == RESP_NEED_MORE && resume != NULL && i > 0) {
            resume->pos = pos;      /* resp_bulk left it after the last whole argument */
            resume->argc = (size_t)i;
        }
        if (s != RESP_COMMAND) {
            return s;
        }
    }
    if (resumed) {
        /* argv is the caller's scratch, shared: fill it in one more pass. */
        pos = first;
        for (i = 0; i < count; i++) {
            resp_status s = resp_bulk(buf, len, limits, &pos, &argv[i], out);
            assert(s == RESP_COMMAND);
            (void)s;
        }
    }
    return resp_done(out, pos, (size_t)count);
}

static bool resp_is_space(char c) {
    return c == ' ' || c == '\t';
}

/* Inline: one line of words separated by spaces or tabs, ended by LF with an
 * optional CR. No quoting: berth's names contain no spaces. */
static resp_status resp_inline(const char *buf, size_t len, const resp_limits *limits,
                               berth_str *argv, resp_resume *resume, resp_result *out) {
    size_t window = len;
    if (window > (size_t)limits->inline_bytes_max + 2) {
        window = (size_t)limits->inline_bytes_max + 2;
    }
    size_t from = resume != NULL ? resume->pos : 0;   /* bytes already known to hold no LF */
    assert(from <= window);
    const char *nl = memchr(buf + from, '\n', window - from);
    if (nl == NULL) {
        if (len > (size_t)limits->inline_bytes_max + 1) {
            return resp_fail(out, "inline command longer than %u bytes", limits->inline_bytes_max);
        }
        if (resume != NULL) {
            resume->pos = window;
        }
        return resp_need_more(out);
    }
    size_t line_end = (size_t)(nl - buf);
    size_t consumed = line_end + 1;
    if (line_end > 0 && buf[line_end - 1] == '\r') {
        line_end--;
    }
    if (line_end > limits->inline_bytes_max) {
        return resp_fail(out, "inline command longer than %u bytes", limits->inline_bytes_max);
    }
    size_t argc = 0;
    size_t i = 0;
    while (i < line_end) {
        while (i < line_end && resp_is_space(buf[i])) {
            i++;
        }
        if (i == line_end) {
            break;
        }
        size_t word = i;
        while (i < line_end && !resp_is_space(buf[i])) {
            i++;
        }
        if (argc == limits->args_max) {
            return resp_fail(out, "inline command has more than %u arguments", limits->args_max);
        }
        /* The same per-argument limit as a bulk string's (before AUTH too):
         * the framing must not decide what one argument may hold. */
        if (i - word > limits->bulk_bytes_max) {
            return resp_fail(out, "inline argument of %zu bytes exceeds the limit of %u bytes",
                             i - word, limits->bulk_bytes_max);
        }
        argv[argc++] = berth_str_make(buf + word, i - word);
    }
    return resp_done(out, consumed, argc);
}

resp_status resp_parse(const char *buf, size_t len, const resp_limits *limits,
                       berth_str *argv, size_t argv_cap, resp_result *out) {
    return resp_parse_resume(buf, len, limits, argv, argv_cap, NULL, out);
}

resp_status resp_parse_resume(const char *buf, size_t len, const resp_limits *limits,
                              berth_str *argv, size_t argv_cap, resp_resume *resume,
                              resp_result *out) {
    assert(limits != NULL && argv != NULL && out != NULL);
    assert(buf != NULL || len == 0);
    assert(argv_cap >= limits->args_max);
    assert(limits->args_max > 0 && limits->inline_bytes_max <= limits->command_bytes_max);
    assert(resume == NULL || resume->pos <= len);
    out->headers_read = 0;
    if (len == 0) {
        return resp_need_more(out);
    }
    resp_status s = buf[0] == '*' ? resp_array(buf, len, limits, argv, resume, out)
                                  : resp_inline(buf, len, limits, argv, resume, out);
    if (s != RESP_NEED_MORE && resume != NULL) {
        resume->pos = 0;
        resume->argc = 0;
    }
    assert(s != RESP_COMMAND || (out->consumed > 0 && out->consumed <= len));
    assert(s != RESP_COMMAND || out->argc <= limits->args_max);
    return s;
}
