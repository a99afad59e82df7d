/* fuzz_resp.c — libFuzzer target for berthd's RESP request reader.
 *
 * Owns the reader's promises under hostile bytes: never read outside the
 * buffer, never claim more bytes than it was given, argv words that lie
 * inside the buffer, errors that are NUL-terminated "Protocol error" lines,
 * and NEED_MORE only for a true prefix — feeding the same stream one byte at
 * a time, resuming each parse where the last stopped (resp_resume), must
 * give exactly the commands and error that feeding it whole gives (a
 * command split across thousands of packets is still one command). */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "resp.h"

#define FUZZ_ARGS_MAX 64
#define FUZZ_COMMANDS_MAX 256          /* commands compared per input */

static const resp_limits fuzz_limits = {
    .args_max = FUZZ_ARGS_MAX,
    .bulk_bytes_max = 1024,
    .inline_bytes_max = 1024,
    .command_bytes_max = 8192,
};

typedef struct outcome {
    resp_status status;
    size_t consumed;
    size_t argc;
    uint64_t words_hash;
} outcome;

static uint64_t hash_words(const berth_str *argv, size_t argc) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < argc; i++) {
        for (uint32_t j = 0; j < argv[i].len; j++) h = (h ^ (uint8_t)argv[i].ptr[j]) * 1099511628211ull;
        h = (h ^ 0x100u) * 1099511628211ull;
    }
    return h;
}

static resp_status parse_checked(const char *buf, size_t len, outcome *o, resp_resume *resume) {
    static berth_str argv[FUZZ_ARGS_MAX];
    resp_result r;
    memset(&r, 0xa5, sizeof r);
    resp_status s = resp_parse_resume(buf, len, &fuzz_limits, argv, FUZZ_ARGS_MAX, resume, &r);
    if (s != r.status) abort();
    if (resume != NULL && resume->pos > len) abort();
    if (resume != NULL && s != RESP_NEED_MORE && (resume->pos != 0 || resume->argc != 0)) abort();
    o->status = s;
    o->consumed = 0;
    o->argc = 0;
    o->words_hash = 0;
    if (s == RESP_COMMAND) {
        if (r.consumed == 0 || r.consumed > len) abort();
        if (r.argc > FUZZ_ARGS_MAX) abort();
        for (size_t i = 0; i < r.argc; i++) {
            if (argv[i].len > 0 &&
                (argv[i].ptr < buf || argv[i].ptr + argv[i].len > buf + r.consumed)) abort();
        }
        o->consumed = r.consumed;
        o->argc = r.argc;
        o->words_hash = hash_words(argv, r.argc);
    } else if (s == RESP_ERROR) {
        if (strnlen(r.error, RESP_ERROR_LEN_MAX) == RESP_ERROR_LEN_MAX) abort();
        if (strncmp(r.error, "Protocol error", 14) != 0) abort();
    } else if (s != RESP_NEED_MORE) {
        abort();
    }
    return s;
}

/* Walk the stream whole: each command in turn until NEED_MORE or ERROR. */
static size_t walk_whole(const char *buf, size_t len, outcome *out, size_t cap) {
    size_t n = 0, off = 0;
    while (n < cap) {
        resp_status s = parse_checked(buf + off, len - off, &out[n], NULL);
        n++;
        if (s != RESP_COMMAND) break;
        off += out[n - 1].consumed;
    }
    return n;
}

/* The same stream arriving one byte more at a time, in a buffer of exactly
 * the bytes received so far (ASan catches any read past it), each read
 * going on from the last one's resp_resume as berthd's does. */
static size_t walk_bytewise(const char *buf, size_t len, outcome *out, size_t cap) {
    size_t n = 0, off = 0, have = 0;
    resp_resume resume = { 0, 0 };
    while (n < cap) {
        size_t avail = have - off;
        char *copy = malloc(avail == 0 ? 1 : avail);
        if (copy == NULL) abort();
        memcpy(copy, buf + off, avail);
        outcome o;
        resp_status s = parse_checked(copy, avail, &o, &resume);
        free(copy);
        if (s == RESP_NEED_MORE && have < len) { have++; continue; }
        out[n++] = o;
        if (s != RESP_COMMAND) break;
        off += o.consumed;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static outcome whole[FUZZ_COMMANDS_MAX];
    static outcome bytewise[FUZZ_COMMANDS_MAX];
    const char *buf = (const char *)data;
    size_t a = walk_whole(buf, size, whole, FUZZ_COMMANDS_MAX);
    if (size > 1024) return 0;                      /* byte-wise replay is quadratic: keep it to short streams */
    size_t b = walk_bytewise(buf, size, bytewise, FUZZ_COMMANDS_MAX);
    if (a != b) abort();
    for (size_t i = 0; i < a; i++) {
        if (whole[i].status != bytewise[i].status) abort();
        if (whole[i].consumed != bytewise[i].consumed) abort();
        if (whole[i].argc != bytewise[i].argc) abort();
        if (whole[i].words_hash != bytewise[i].words_hash) abort();
    }
    return 0;
}
