/* test_resp.c — unit tests for berthd's RESP reader (tools/resp.c) and reply
 * writer (tools/reply.c).
 *
 * Owns the proof that the wire layer is exact: every request form parses to
 * the right words and length, every prefix of a command asks for more bytes
 * and nothing else, every limit and malformed length is a clean error, and
 * every reply type encodes byte-for-byte as RESP2 and RESP3 specify. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reply.h"
#include "resp.h"

#define ARGS_MAX 16

static const resp_limits limits = {
    .args_max = ARGS_MAX,
    .bulk_bytes_max = 64,
    .inline_bytes_max = 80,
    .command_bytes_max = 256,
};

static berth_str argv[ARGS_MAX];

static resp_status parse(const char *buf, size_t len, resp_result *res) {
    return resp_parse(buf, len, &limits, argv, ARGS_MAX, res);
}

static void assert_arg(size_t i, const char *want) {
    ck_assert_uint_eq(argv[i].len, strlen(want));
    ck_assert(memcmp(argv[i].ptr, want, argv[i].len) == 0);
}

/* Every strict prefix of a complete command must be NEED_MORE. */
static void assert_prefixes_need_more(const char *buf, size_t len) {
    for (size_t cut = 0; cut < len; cut++) {
        resp_result res;
        resp_status st = parse(buf, cut, &res);
        ck_assert_msg(st == RESP_NEED_MORE, "prefix of %zu bytes gave %d (%s)", cut, (int)st,
                      res.error);
        ck_assert_uint_eq(res.consumed, 0);
    }
}

static void assert_error(const char *buf, size_t len, const char *fragment) {
    resp_result res;
    resp_status st = parse(buf, len, &res);
    ck_assert_msg(st == RESP_ERROR, "expected an error containing \"%s\", got status %d", fragment,
                  (int)st);
    ck_assert_msg(strncmp(res.error, "Protocol error: ", 16) == 0, "message: %s", res.error);
    ck_assert_msg(strstr(res.error, fragment) != NULL, "\"%s\" not in \"%s\"", fragment, res.error);
}

START_TEST(array_command) {
    static const char cmd[] = "*3\r\n$10\r\nWORKER.ADD\r\n$2\r\nw1\r\n$0\r\n\r\n";
    resp_result res;
    ck_assert_int_eq(parse(cmd, sizeof cmd - 1, &res), RESP_COMMAND);
    ck_assert_uint_eq(res.consumed, sizeof cmd - 1);
    ck_assert_uint_eq(res.argc, 3);
    assert_arg(0, "WORKER.ADD");
    assert_arg(1, "w1");
    assert_arg(2, "");
    assert_prefixes_need_more(cmd, sizeof cmd - 1);
}
END_TEST

START_TEST(array_binary_safe) {
    static const char cmd[] = "*2\r\n$4\r\nECHO\r\n$5\r\na\r\n\0b\r\n";
    resp_result res;
    ck_assert_int_eq(parse(cmd, sizeof cmd - 1, &res), RESP_COMMAND);
    ck_assert_uint_eq(res.argc, 2);
    ck_assert_uint_eq(argv[1].len, 5);
    ck_assert(memcmp(argv[1].ptr, "a\r\n\0b", 5) == 0);
}
END_TEST

START_TEST(pipelined_commands) {
    static const char two[] = "*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\nPING\r\n";
    size_t len = sizeof two - 1;
    resp_result res;
    ck_assert_int_eq(parse(two, len, &res), RESP_COMMAND);
    ck_assert_uint_eq(res.consumed, 14);
    ck_assert_uint_eq(res.argc, 1);
    size_t pos = res.consumed;
    ck_assert_int_eq(parse(two + pos, len - pos, &res), RESP_COMMAND);
    ck_assert_uint_eq(res.argc, 2);
    assert_arg(1, "hi");
    pos += res.consumed;
    ck_assert_int_eq(parse(two + pos, len - pos, &res), RESP_COMMAND);
    ck_assert_uint_eq(res.argc, 1);
    assert_arg(0, "PING");
    pos += res.consumed;
    ck_assert_uint_eq(pos, len);
}
END_TEST

START_TEST(empty_array) {
    resp_result res;
    ck_assert_int_eq(parse("*0\r\n", 4, &res), RESP_COMMAND);
    ck_assert_uint_eq(res.argc, 0);
    ck_assert_uint_eq(res.consumed, 4);
}
END_TEST

/* A null array, or any negative count, is an empty command as Redis reads
 * it (redis-server 7 ignores "*-1" and answers the next command). */
START_TEST(null_array) {
    resp_result res;
    ck_assert_int_eq(parse("*-1\r\n", 5, &res), RESP_COMMAND);
    ck_assert_uint_eq(res.argc, 0);
    ck_assert_uint_eq(res.consumed, 5);
    ck_assert_int_eq(parse("*-5\r\n*1\r\n$4\r\nPING\r\n", 19, &res), RESP_COMMAND);
    ck_assert_uint_eq(res.argc, 0);
    ck_assert_uint_eq(res.consumed, 5);
    assert_prefixes_need_more("*-1\r\n", 5);
}
END_TEST

START_TEST(inline_commands) {
    static const char line[] = "  WORKER.GET\t  w1  \r\n";
    resp_result res;
    ck_assert_int_eq(parse(line, sizeof line - 1, &res), RESP_COMMAND);
    ck_assert_uint_eq(res.argc, 2);
    ck_assert_uint_eq(res.consumed, sizeof line - 1);
    assert_arg(0, "WORKER.GET");
    assert_arg(1, "w1");
    assert_prefixes_need_more(line, sizeof line - 1);

    ck_assert_int_eq(parse("PING\nPING\n", 10, &res), RESP_COMMAND);
    ck_assert_uint_eq(res.consumed, 5);
    ck_assert_uint_eq(res.argc, 1);

    ck_assert_int_eq(parse("\r\n", 2, &res), RESP_COMMAND);
    ck_assert_uint_eq(res.argc, 0);
    ck_assert_uint_eq(res.consumed, 2);
}
END_TEST

START_TEST(bulk_length_limits) {
    assert_error("*1\r\n$2147483648\r\n", 18, "exceeds the limit of 64 bytes");
    assert_error("*1\r\n$65\r\n", 9, "bulk length 65 exceeds");
    assert_error("*1\r\n$-1\r\n", 9, "negative length");
    assert_error("*2\r\n$4\r\nECHO\r\n$-0\r\n\r\n", 21, "negative length starting with 0");
    assert_error("*1\r\n$abc\r\n", 10, "is not a digit");
    assert_error("*1\r\n$\r\n", 7, "expected 1 to");
    assert_error("*1\r\n$99999999999999999999\r\n", 27, "expected 1 to");
    /* No CRLF within the header window: an error, never an endless wait. */
    assert_error("*1\r\n$111111111111111111111111111111", 34, "no CRLF");
    assert_error("*1\r\n$3\rx", 8, "CR not followed by LF");
}
END_TEST

/* Headers of every width parse to their value: the one-pass common case
 * and the checked path must agree. */
START_TEST(header_widths) {
#define LIT(s) s, sizeof s - 1
    resp_result res;
    ck_assert_int_eq(parse(LIT("*1\r\n$3\r\nabc\r\n"), &res), RESP_COMMAND);
    assert_arg(0, "abc");
    ck_assert_int_eq(parse(LIT("*1\r\n$0\r\n\r\n"), &res), RESP_COMMAND);
    assert_arg(0, "");
    /* Leading zeros, as Redis: refused by the one-pass case and the checked one alike. */
    assert_error(LIT("*1\r\n$03\r\nabc\r\n"), "leading zero");
    assert_error(LIT("*01\r\n$3\r\nabc\r\n"), "leading zero");
    assert_error(LIT("*1\r\n$00\r\n\r\n"), "leading zero");
    assert_error(LIT("*1\r\n$0000000000000000003\r\nabc\r\n"), "expected 1 to 18 digits");
    assert_error(LIT("*1\r\n$999999999999999999\r\n"), "bulk length 999999999999999999 exceeds");
    assert_error(LIT("*1\r\n$1000000000000000000\r\n"), "expected 1 to 18 digits");
    assert_error(LIT("*000000000000000017\r\n"), "leading zero");
    assert_error(LIT("*1\r\n$1x\r\n"), "'x' is not a digit");
    assert_error(LIT("*1\r\n$1\rx\r\n"), "CR not followed by LF");
    ck_assert_int_eq(parse(LIT("*1\r\n$12"), &res), RESP_NEED_MORE);
    ck_assert_int_eq(parse(LIT("*1\r\n$12\r"), &res), RESP_NEED_MORE);
    assert_prefixes_need_more(LIT("*1\r\n$12\r\n012345678901\r\n"));
#undef LIT
}
END_TEST

START_TEST(multibulk_limits) {
    assert_error("*17\r\n", 5, "17 arguments exceed the limit of 16");
    assert_error("*2147483648\r\n", 13, "exceed the limit");
    assert_error("*x\r\n", 4, "is not a digit");
    assert_error("*-\r\n", 4, "expected 1 to");
    assert_error("*-x\r\n", 5, "is not a digit");
    assert_error("*2\r\n:1\r\n", 8, "expected '$'");
    assert_error("*1\r\n$2\r\nabcd\r\n", 14, "expected CRLF after a bulk string");
}
END_TEST

START_TEST(command_bytes_limit) {
    /* Five 60-byte arguments: each within its own limit, together over 256. */
    char buf[512];
    size_t len = (size_t)snprintf(buf, sizeof buf, "*5\r\n");
    for (int i = 0; i < 5; i++) {
        len += (size_t)snprintf(buf + len, sizeof buf - len, "$60\r\n%060d\r\n", i);
    }
    assert_error(buf, len, "command exceeds the limit of 256 bytes");
    /* Caught as soon as the offending header arrives, before its bytes do. */
    size_t header_only = 4 + 4 * 66 + 5;
    assert_error(buf, header_only, "command exceeds");
}
END_TEST

START_TEST(inline_limits) {
    char buf[200];
    memset(buf, 'a', sizeof buf);
    assert_error(buf, 82, "inline command longer than 80 bytes");
    resp_result res;
    ck_assert_int_eq(parse(buf, 80, &res), RESP_NEED_MORE);
    char words[64];
    size_t len = 0;
    for (int i = 0; i < ARGS_MAX + 1; i++) {
        words[len++] = 'x';
        words[len++] = ' ';
    }
    words[len++] = '\n';
    assert_error(words, len, "more than 16 arguments");
    /* One inline word may hold what one bulk string may, no more. */
    char line[200];
    size_t n = 0;
    memcpy(line, "ECHO ", 5);
    n = 5;
    memset(line + n, 'b', 64 + 1);   /* limits.bulk_bytes_max + 1 */
    n += 64 + 1;
    line[n++] = '\n';
    assert_error(line, n, "inline argument of");
    line[n - 2] = '\n';
    ck_assert_int_eq(parse(line, n - 1, &res), RESP_COMMAND);
    ck_assert_uint_eq(res.argc, 2);
    ck_assert_uint_eq(argv[1].len, 64);
}
END_TEST

/* Deterministic garbage: the reader must only ever return its three answers
 * and never claim bytes it was not given. */
START_TEST(garbage_is_contained) {
    uint64_t x = 0x9e3779b97f4a7c15ull;
    char buf[300];
    for (int round = 0; round < 20000; round++) {
        size_t len = (size_t)(round % (int)sizeof buf);
        for (size_t i = 0; i < len; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            static const char alphabet[] = "*$\r\n0123456789-:abc ";
            buf[i] = (x & 3) == 0 ? (char)(x >> 8) : alphabet[(x >> 8) % (sizeof alphabet - 1)];
        }
        resp_result res;
        resp_status st = parse(buf, len, &res);
        ck_assert(st == RESP_NEED_MORE || st == RESP_COMMAND || st == RESP_ERROR);
        if (st == RESP_COMMAND) {
            ck_assert(res.consumed > 0 && res.consumed <= len);
            ck_assert_uint_le(res.argc, ARGS_MAX);
            for (size_t i = 0; i < res.argc; i++) {
                ck_assert(argv[i].ptr >= buf && argv[i].ptr + argv[i].len <= buf + len);
            }
        } else {
            ck_assert_uint_eq(res.consumed, 0);
        }
    }
}
END_TEST

/* ---- reply writer ------------------------------------------------------ */

static void assert_bytes(const reply_buf *rb, const char *want) {
    size_t n = strlen(want);
    ck_assert_msg(reply_pending(rb) == n && memcmp(rb->data + rb->start, want, n) == 0,
                  "got \"%.*s\", want \"%s\"", (int)reply_pending(rb), rb->data + rb->start, want);
}

/* Fed in pieces with a resp_resume, as berthd feeds a connection's reads,
 * a command parses exactly as it does whole: the same words, length and
 * errors, at every cut and piece size; the resume is zero after each
 * command or error. */
static void assert_resumed_equal(const char *buf, size_t len, size_t step) {
    resp_result whole;
    berth_str want[ARGS_MAX];
    resp_status want_st = parse(buf, len, &whole);
    memcpy(want, argv, sizeof want);
    resp_resume resume = { 0, 0 };
    resp_result res;
    resp_status st = RESP_NEED_MORE;
    for (size_t have = 0; st == RESP_NEED_MORE; have = have + step > len ? len : have + step) {
        memset(argv, 0, sizeof argv);
        st = resp_parse_resume(buf, have, &limits, argv, ARGS_MAX, &resume, &res);
        ck_assert_uint_le(resume.pos, have);
        if (have == len) {
            break;
        }
    }
    ck_assert_msg(st == want_st, "step %zu: status %d, whole %d", step, (int)st, (int)want_st);
    ck_assert_uint_eq(resume.pos, st == RESP_NEED_MORE ? resume.pos : 0);
    ck_assert_uint_eq(resume.argc, st == RESP_NEED_MORE ? resume.argc : 0);
    if (st == RESP_COMMAND) {
        ck_assert_uint_eq(res.consumed, whole.consumed);
        ck_assert_uint_eq(res.argc, whole.argc);
        for (size_t i = 0; i < res.argc; i++) {
            ck_assert(argv[i].ptr == want[i].ptr && argv[i].len == want[i].len);
        }
    } else if (st == RESP_ERROR) {
        ck_assert_str_eq(res.error, whole.error);
    }
}

START_TEST(resume_equals_whole) {
    static const char *const cmds[] = {
        "*3\r\n$10\r\nWORKER.ADD\r\n$2\r\nw1\r\n$0\r\n\r\n",
        "*5\r\n$1\r\na\r\n$3\r\nb\rc\r\n$1\r\n\n\r\n$12\r\n0123456789ab\r\n$1\r\nz\r\nPING\r\n",
        "DEPLOY i MODEL m BACKEND vllm ON w1 w2\r\n",
        "  PING   x\n",
        "*0\r\n",
        "*2\r\n$4\r\nECHO\r\n$65\r\n",                              /* bulk over its limit */
        "*3\r\n$1\r\na\r\n$1\r\nbX\r\n$1\r\nc\r\n",                /* no CRLF after a bulk */
        "*2\r\n$1\r\na\r\n#1\r\nb\r\n",                            /* not a bulk */
        "*17\r\n",                                                  /* too many arguments */
        "*4\r\n$60\r\n012345678901234567890123456789012345678901234567890123456789\r\n"
        "$60\r\n012345678901234567890123456789012345678901234567890123456789\r\n"
        "$60\r\n012345678901234567890123456789012345678901234567890123456789\r\n"
        "$60\r\n012345678901234567890123456789012345678901234567890123456789\r\n",  /* over 256 bytes */
    };
    for (size_t k = 0; k < sizeof cmds / sizeof cmds[0]; k++) {
        for (size_t step = 1; step <= 9; step++) {
            assert_resumed_equal(cmds[k], strlen(cmds[k]), step);
        }
    }
    char line[100];   /* an inline line over its limit, arriving a byte at a time */
    memset(line, 'x', sizeof line);
    for (size_t step = 1; step <= 9; step++) {
        assert_resumed_equal(line, sizeof line, step);
    }
}
END_TEST

/* The resume is what makes a trickled command cost linear work: 2,000
 * arguments fed 64 bytes at a time read each header about twice with it,
 * and hundreds of times each without (every read started over: hV5 measured
 * 1.6-1.9 s of berthd CPU for 60,000 arguments). */
START_TEST(resume_linear_work) {
    enum { args = 2000, piece = 64 };
    static berth_str many[4096];
    static const resp_limits wide = { 4096, 64, 80, 1u << 20 };
    char *buf = malloc(16 + args * 7);
    ck_assert_ptr_nonnull(buf);
    size_t len = (size_t)sprintf(buf, "*%d\r\n", args);
    for (int i = 0; i < args; i++) {
        memcpy(buf + len, "$1\r\nx\r\n", 7);
        len += 7;
    }
    for (int with_resume = 0; with_resume <= 1; with_resume++) {
        resp_resume resume = { 0, 0 };
        resp_result res;
        resp_status st = RESP_NEED_MORE;
        size_t work = 0, calls = 0;
        for (size_t have = piece; st == RESP_NEED_MORE; have = have + piece > len ? len : have + piece) {
            st = resp_parse_resume(buf, have, &wide, many, 4096, with_resume ? &resume : NULL, &res);
            work += res.headers_read;
            calls++;
        }
        ck_assert_int_eq(st, RESP_COMMAND);
        ck_assert_uint_eq(res.argc, args);
        ck_assert_uint_eq(res.consumed, len);
        ck_assert(many[args - 1].len == 1 && many[args - 1].ptr == buf + len - 3);
        if (with_resume) {
            ck_assert_msg(work <= 2 * args + calls, "%zu headers read over %zu calls", work, calls);
        } else {
            ck_assert_msg(work > 50 * args, "without a resume: %zu headers read", work);
        }
    }
    free(buf);
}
END_TEST

START_TEST(reply_scalars) {
    reply_buf rb;
    reply_init(&rb, 2);
    reply_simple(&rb, "PONG");
    reply_int(&rb, -42);
    reply_int(&rb, 0);
    reply_uint(&rb, 18446744073709551615ull);
    reply_bulk(&rb, "a\r\nb", 4);
    reply_bulk_cstr(&rb, "");
    assert_bytes(&rb, "+PONG\r\n:-42\r\n:0\r\n$20\r\n18446744073709551615\r\n$4\r\na\r\nb\r\n$0\r\n\r\n");
    reply_free(&rb);
}
END_TEST

START_TEST(reply_errors) {
    reply_buf rb;
    reply_init(&rb, 2);
    reply_error(&rb, "EXCLUSIVE", "worker %s held\r\nby a", "w2");
    reply_error_line(&rb, berth_str_make("ERR bad\nname", 12));
    reply_error_str(&rb, "NOPERM", berth_str_make("read-only", 9));
    assert_bytes(&rb, "-EXCLUSIVE worker w2 held  by a\r\n-ERR bad name\r\n-NOPERM read-only\r\n");
    reply_free(&rb);
}
END_TEST

START_TEST(reply_resp2_degrades) {
    reply_buf rb;
    reply_init(&rb, 2);
    reply_null(&rb);
    reply_bool(&rb, true);
    reply_bool(&rb, false);
    reply_map(&rb, 2);
    reply_array(&rb, 3);
    reply_push(&rb, 3);
    reply_verbatim(&rb, "x:1", 3);
    assert_bytes(&rb, "$-1\r\n:1\r\n:0\r\n*4\r\n*3\r\n*3\r\n$3\r\nx:1\r\n");
    reply_free(&rb);
}
END_TEST

START_TEST(reply_resp3_types) {
    reply_buf rb;
    reply_init(&rb, 3);
    reply_null(&rb);
    reply_bool(&rb, true);
    reply_bool(&rb, false);
    reply_map(&rb, 2);
    reply_array(&rb, 3);
    reply_push(&rb, 3);
    reply_verbatim(&rb, "x:1", 3);
    assert_bytes(&rb, "_\r\n#t\r\n#f\r\n%2\r\n*3\r\n>3\r\n=7\r\ntxt:x:1\r\n");
    reply_free(&rb);
}
END_TEST

START_TEST(reply_growth_and_consume) {
    reply_buf rb;
    reply_init(&rb, 2);
    char big[3 * REPLY_CAP_INITIAL];
    memset(big, 'z', sizeof big);
    reply_bulk(&rb, big, sizeof big);
    ck_assert(!rb.failed);
    ck_assert_uint_eq(reply_pending(&rb), sizeof big + 10);   /* "$12288\r\n" ... "\r\n" */
    reply_consumed(&rb, 5);
    ck_assert_uint_eq(reply_pending(&rb), sizeof big + 5);
    ck_assert(memcmp(rb.data + rb.start, "8\r\nzz", 5) == 0);
    reply_consumed(&rb, reply_pending(&rb));
    ck_assert_uint_eq(rb.len, 0);
    ck_assert_uint_eq(rb.start, 0);
    reply_shrink(&rb, REPLY_CAP_INITIAL);
    ck_assert(rb.data == NULL);
    reply_int(&rb, 7);
    assert_bytes(&rb, ":7\r\n");
    reply_free(&rb);
}
END_TEST

/* Every width of every number, against snprintf: the hand formatting
 * (two digits per division, the inline one-digit case) must not differ. */
START_TEST(reply_number_widths) {
    reply_buf rb;
    reply_init(&rb, 2);
    char want[64];
    uint64_t v = 1;
    for (int k = 0; k <= 19; k++, v *= 10) {
        const uint64_t around[3] = { v - 1, v, v + 1 };
        for (int j = 0; j < 3; j++) {
            uint64_t u = around[j];
            reply_consumed(&rb, reply_pending(&rb));
            reply_uint(&rb, u);
            if (u > (uint64_t)INT64_MAX) {
                int n = snprintf(want, sizeof want, "%llu", (unsigned long long)u);
                snprintf(want, sizeof want, "$%d\r\n%llu\r\n", n, (unsigned long long)u);
            } else {
                snprintf(want, sizeof want, ":%llu\r\n", (unsigned long long)u);
            }
            assert_bytes(&rb, want);
            if (u <= (uint64_t)INT64_MAX) {
                reply_consumed(&rb, reply_pending(&rb));
                reply_int(&rb, -(int64_t)u);
                snprintf(want, sizeof want, ":%lld\r\n", -(long long)u);
                assert_bytes(&rb, want);
                reply_consumed(&rb, reply_pending(&rb));
                reply_array(&rb, (size_t)u);
                snprintf(want, sizeof want, "*%llu\r\n", (unsigned long long)u);
                assert_bytes(&rb, want);
            }
        }
    }
    reply_consumed(&rb, reply_pending(&rb));
    reply_int(&rb, INT64_MIN);
    reply_uint(&rb, UINT64_MAX);
    assert_bytes(&rb, ":-9223372036854775808\r\n$20\r\n18446744073709551615\r\n");
    reply_free(&rb);
}
END_TEST

START_TEST(reply_bulk_widths) {
    reply_buf rb;
    reply_init(&rb, 3);
    char bytes[200];
    char want[256];
    memset(bytes, 'q', sizeof bytes);
    for (size_t len = 0; len <= 150; len++) {
        reply_consumed(&rb, reply_pending(&rb));
        reply_bulk(&rb, bytes, len);
        snprintf(want, sizeof want, "$%zu\r\n%.*s\r\n", len, (int)len, bytes);
        assert_bytes(&rb, want);
    }
    reply_consumed(&rb, reply_pending(&rb));
    reply_bulk_lit(&rb, "a");
    reply_bulk_lit(&rb, "123456789");
    reply_bulk_lit(&rb, "1234567890");
    reply_bulk_lit(&rb, "exclusive_holder");
    reply_map(&rb, 12);
    assert_bytes(&rb, "$1\r\na\r\n$9\r\n123456789\r\n$10\r\n1234567890\r\n"
                      "$16\r\nexclusive_holder\r\n%12\r\n");
    reply_free(&rb);
}
END_TEST

/* The inline one-digit path when the buffer is exactly full or has
 * failed: it grows like every other writer, and writes nothing once failed. */
START_TEST(reply_small_at_capacity) {
    reply_buf rb;
    reply_init(&rb, 2);
    char fill[REPLY_CAP_INITIAL];
    memset(fill, 'f', sizeof fill);
    reply_raw(&rb, fill, sizeof fill - 2);
    ck_assert_uint_eq(rb.cap, REPLY_CAP_INITIAL);
    reply_int(&rb, 7);
    reply_array(&rb, 0);
    reply_bulk_lit(&rb, "name");
    ck_assert_uint_eq(reply_pending(&rb), sizeof fill - 2 + 4 + 4 + 10);
    ck_assert(memcmp(rb.data + sizeof fill - 2, ":7\r\n*0\r\n$4\r\nname\r\n", 18) == 0);
    size_t before = reply_pending(&rb);
    rb.failed = true;
    reply_int(&rb, 3);
    reply_map(&rb, 1);
    reply_bulk_lit(&rb, "x");
    reply_uint(&rb, 12345);
    ck_assert_uint_eq(reply_pending(&rb), before);
    reply_free(&rb);
}
END_TEST

static Suite *resp_suite(void) {
    Suite *s = suite_create("resp");
    TCase *reader = tcase_create("reader");
    tcase_add_test(reader, array_command);
    tcase_add_test(reader, array_binary_safe);
    tcase_add_test(reader, pipelined_commands);
    tcase_add_test(reader, empty_array);
    tcase_add_test(reader, null_array);
    tcase_add_test(reader, inline_commands);
    tcase_add_test(reader, bulk_length_limits);
    tcase_add_test(reader, header_widths);
    tcase_add_test(reader, multibulk_limits);
    tcase_add_test(reader, command_bytes_limit);
    tcase_add_test(reader, inline_limits);
    tcase_add_test(reader, garbage_is_contained);
    tcase_add_test(reader, resume_equals_whole);
    tcase_add_test(reader, resume_linear_work);
    suite_add_tcase(s, reader);
    TCase *writer = tcase_create("writer");
    tcase_add_test(writer, reply_scalars);
    tcase_add_test(writer, reply_errors);
    tcase_add_test(writer, reply_resp2_degrades);
    tcase_add_test(writer, reply_resp3_types);
    tcase_add_test(writer, reply_growth_and_consume);
    tcase_add_test(writer, reply_number_widths);
    tcase_add_test(writer, reply_bulk_widths);
    tcase_add_test(writer, reply_small_at_capacity);
    suite_add_tcase(s, writer);
    return s;
}

int main(void) {
    SRunner *runner = srunner_create(resp_suite());
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
