/* fuzz_cmd_parse.c — libFuzzer target for berth's command parser.
 *
 * Owns the properties every parse must keep, whatever the bytes: no crash or
 * out-of-bounds read, an error message that starts with "ERR", and for every
 * accepted command a canonical text that parses back to itself (canonical is
 * a fixed point). The journal stores canonical text and replay parses it, so
 * a command whose canonical form does not re-parse would make berth write a
 * journal it cannot replay. The input is tried twice: as one text split on
 * single spaces (what replay does) and as words split on NUL bytes (what RESP
 * delivers: any byte, spaces included, may sit inside a word). */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "command.h"
#include "berth_limits.h"
#include "names.h"

#define FUZZ_WORDS_MAX (BERTH_ARGS_MAX + 8)   /* a few over the limit, to hit it */

static void check_err(const char *err) {
    size_t n = strnlen(err, BERTH_ERR_LEN_MAX);
    if (n == BERTH_ERR_LEN_MAX) abort();            /* not NUL-terminated */
    if (strncmp(err, "ERR", 3) != 0) abort();        /* users see a code word first */
}

static void check_names(const berth_cmd *cmd) {
    if (cmd->name.len > 0 && !berth_name_valid(cmd->name)) abort();
    if (cmd->reqid.len > 0 && !berth_name_valid(cmd->reqid)) abort();
    if (cmd->place_count > BERTH_PLACEMENT_WORKERS_MAX) abort();
    if (cmd->label_count > BERTH_LABELS_MAX) abort();
    if (cmd->backend_count > BERTH_POLICY_BACKENDS_MAX) abort();
    for (uint32_t i = 0; i < cmd->place_count; i++) {
        if (!berth_name_valid(cmd->place[i].worker)) abort();
        for (uint32_t j = 0; j < i; j++) {
            if (berth_str_eq(cmd->place[i].worker, cmd->place[j].worker)) abort();
        }
    }
    if (cmd->kind == BERTH_CMD_WORKER_ADD && cmd->gpu_count > BERTH_GPUS_MAX) abort();
}

/* Canonical text of an accepted command must parse and print to itself. */
static void check_canonical(const berth_cmd *cmd) {
    static char text[BERTH_COMMAND_LEN_MAX];
    static char again[BERTH_COMMAND_LEN_MAX];
    static berth_str words[FUZZ_WORDS_MAX];
    static berth_cmd parsed;
    char err[BERTH_ERR_LEN_MAX];
    size_t len = berth_cmd_canonical(cmd, text, sizeof text);
    if (len == 0) abort();                           /* a parsed command always fits */
    if (berth_cmd_parse_text(&parsed, text, len, words, FUZZ_WORDS_MAX, err, sizeof err) != 0) abort();
    if (parsed.kind != cmd->kind) abort();
    if (parsed.reqid.len != 0) abort();              /* REQID is never canonical */
    size_t len2 = berth_cmd_canonical(&parsed, again, sizeof again);
    if (len2 != len || memcmp(text, again, len) != 0) abort();
    if (!berth_cmd_is_canonical(&parsed, text, len)) abort();   /* verify's check agrees */
}

static void try_text(const uint8_t *data, size_t size) {
    static berth_str words[FUZZ_WORDS_MAX];
    static berth_cmd cmd;
    char err[BERTH_ERR_LEN_MAX];
    err[0] = '\0';
    int rc = berth_cmd_parse_text(&cmd, (const char *)data, size, words, FUZZ_WORDS_MAX,
                                  err, sizeof err);
    if (rc != 0) { check_err(err); return; }
    check_names(&cmd);
    check_canonical(&cmd);
    /* verify's check is the round trip: text is canonical iff it prints as itself */
    static char text[BERTH_COMMAND_LEN_MAX];
    size_t len = berth_cmd_canonical(&cmd, text, sizeof text);
    bool round_trip = len == size && memcmp(text, data, size) == 0;
    if (berth_cmd_is_canonical(&cmd, (const char *)data, size) != round_trip) abort();
}

static void try_words(const uint8_t *data, size_t size) {
    static berth_str words[FUZZ_WORDS_MAX];
    static berth_cmd cmd;
    size_t argc = 0;
    size_t start = 0;
    for (size_t i = 0; i <= size && argc < FUZZ_WORDS_MAX; i++) {
        if (i == size || data[i] == 0) {
            words[argc++] = berth_str_make((const char *)data + start, i - start);
            start = i + 1;
        }
    }
    char err[BERTH_ERR_LEN_MAX];
    err[0] = '\0';
    if (berth_cmd_parse(&cmd, argc, words, err, sizeof err) != 0) { check_err(err); return; }
    check_names(&cmd);
    check_canonical(&cmd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    try_text(data, size);
    try_words(data, size);
    return 0;
}
