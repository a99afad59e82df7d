/* fuzz_scenario.c — libFuzzer target for the scenario file reader.
 *
 * Owns the reader's promises over any file a user may hand `berth whatif`:
 * no crash, no read outside a line, every error names the line it broke on
 * ("... line N: ..."), words point inside the current line and are
 * non-empty, line numbers only grow, and every mutating line goes on to
 * berth_cmd_parse exactly as whatif does. The reader takes a path, so the
 * input is handed over as an in-memory file (memfd) under /proc/self/fd. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cli_scenario.h"
#include "command.h"

#define FUZZ_ERR_LEN_MAX 1024
#define FUZZ_LINES_MAX 100000

static void check_words(const cli_scenario *s) {
    if (s->word_count == 0 || s->word_count > CLI_SCENARIO_WORDS_MAX) abort();
    for (size_t i = 0; i < s->word_count; i++) {
        berth_str w = s->words[i];
        if (w.len > CLI_SCENARIO_LINE_LEN_MAX) abort();
        if (w.len > 0 && (w.ptr < s->line || w.ptr + w.len > s->line + s->line_cap)) abort();
    }
}

static void parse_mutating(const cli_scenario *s) {
    static berth_cmd cmd;
    char err[BERTH_ERR_LEN_MAX];
    err[0] = '\0';
    if (berth_cmd_parse(&cmd, s->word_count, s->words, err, sizeof err) != 0 && strncmp(err, "ERR", 3) != 0) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = memfd_create("scenario", 0);
    if (fd < 0) abort();
    if (size > 0 && write(fd, data, size) != (ssize_t)size) abort();
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    cli_scenario s;
    char err[FUZZ_ERR_LEN_MAX];
    if (cli_scenario_open(&s, path, err, sizeof err) != 0) abort();   /* a readable file always opens */
    uint64_t last_line = 0;
    for (size_t i = 0; i < FUZZ_LINES_MAX; i++) {
        err[0] = '\0';
        int rc = cli_scenario_next(&s, err, sizeof err);
        if (rc == 0) break;
        if (rc < 0) {
            if (strncmp(err, "ERR", 3) != 0 || strstr(err, "line") == NULL) abort();
            break;
        }
        if (rc != 1) abort();
        if (s.line_no <= last_line) abort();
        last_line = s.line_no;
        check_words(&s);
        if (s.kind == CLI_LINE_MUTATING) parse_mutating(&s);
    }
    cli_scenario_close(&s);
    close(fd);
    return 0;
}
