/* cli_scenario.c — the scenario file reader (see cli_scenario.h).
 *
 * Owns the line buffer and the word split. A scenario must be pipeable into
 * redis-cli unchanged, so anything that is not a command a berthd answers is
 * an error here, named by line, rather than something silently skipped. */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "command.h"
#include "cli_scenario.h"

/* Every command berthd's table does not flag write (COMMAND INFO shows
 * "readonly"), and nothing else: a what-if has no server to ask, so these
 * are recognised and left unanswered, and a word berthd refuses (SELECT) is
 * refused here too. Each has berthd's arity (Redis's: n words exactly, -n at
 * least n), so a line berthd would answer "wrong number of arguments" is an
 * error here, not a query skipped or answered with a word missing. berthd's
 * table is its own (tools/commands.c); the test server_scenario_words
 * compares the two lists and their arities, so keep them equal. */
static const struct query_word {
    const char *word;
    int arity;
} query_words[] = {
    { "PING", -1 }, { "ECHO", 2 }, { "QUIT", -1 }, { "AUTH", -2 }, { "HELLO", -1 },
    { "CLIENT", -2 }, { "INFO", -1 }, { "COMMAND", -1 }, { "CONFIG", -2 },
    { "WORKER.GET", 2 }, { "WORKER.LIST", -1 }, { "INSTANCE.GET", 2 }, { "INSTANCE.LIST", -1 },
    { "POLICY.GET", 1 }, { "DIGEST", 1 }, { "AT", -3 }, { "JOURNAL.HEAD", 1 },
    { "JOURNAL.RANGE", 3 }, { "JOURNAL.VERIFY", 1 }, { "HISTORY", -3 }, { "WATCH", 2 },
};
#define QUERY_WORD_COUNT (sizeof query_words / sizeof query_words[0])

int cli_scenario_open(cli_scenario *scenario, const char *path, char *err, size_t err_size) {
    assert(scenario != NULL && path != NULL && err != NULL);
    memset(scenario, 0, sizeof *scenario);
    scenario->path = path;
    if (strcmp(path, "-") == 0) {
        scenario->file = stdin;
        scenario->path = "(stdin)";
        return 0;
    }
    scenario->file = fopen(path, "r");
    if (scenario->file == NULL) {
        snprintf(err, err_size, "ERR cannot open scenario %s: %s", path, strerror(errno));
        return -1;
    }
    scenario->owns_file = true;
    return 0;
}

void cli_scenario_close(cli_scenario *scenario) {
    assert(scenario != NULL);
    if (scenario->owns_file && scenario->file != NULL) {
        int rc = fclose(scenario->file);
        (void)rc;   /* read-only stream: nothing buffered can be lost */
    }
    scenario->file = NULL;
    free(scenario->line);
    scenario->line = NULL;
}

static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Split line[0..len) into words in place; quotes are stripped. */
static int split_words(cli_scenario *s, size_t len, char *err, size_t err_size) {
    char *p = s->line;
    char *end = s->line + len;
    s->word_count = 0;
    while (p < end) {
        while (p < end && is_space(*p)) {
            p++;
        }
        if (p == end) {
            break;
        }
        if (s->word_count == CLI_SCENARIO_WORDS_MAX) {
            snprintf(err, err_size, "ERR scenario %s line %" PRIu64 ": more than %d words", s->path,
                     s->line_no, CLI_SCENARIO_WORDS_MAX);
            return -1;
        }
        char *start = p;
        if (*p == '"' || *p == '\'') {
            char quote = *p;
            start = ++p;
            while (p < end && *p != quote) {
                p++;
            }
            if (p == end) {
                snprintf(err, err_size, "ERR scenario %s line %" PRIu64 ": unterminated %c quote",
                         s->path, s->line_no, quote);
                return -1;
            }
            s->words[s->word_count++] = berth_str_make(start, (size_t)(p - start));
            p++;
            continue;
        }
        while (p < end && !is_space(*p)) {
            p++;
        }
        s->words[s->word_count++] = berth_str_make(start, (size_t)(p - start));
    }
    return 0;
}

static const struct query_word *query_lookup_word(berth_str word) {
    for (size_t i = 0; i < QUERY_WORD_COUNT; i++) {
        if (berth_str_eq_word(word, query_words[i].word)) {
            return &query_words[i];
        }
    }
    return NULL;
}

static bool arity_ok(int arity, size_t word_count) {
    return arity > 0 ? word_count == (size_t)arity : word_count >= (size_t)-arity;
}

/* Comment or blank: nothing but spaces before an optional '#'. */
static bool is_blank(const char *line, size_t len) {
    for (size_t i = 0; i < len; i++) {
        if (line[i] == '#') {
            return true;
        }
        if (!is_space(line[i])) {
            return false;
        }
    }
    return true;
}

static int classify(cli_scenario *s, char *err, size_t err_size) {
    assert(s->word_count > 0);
    if (berth_cmd_kind_lookup(s->words[0]) != BERTH_CMD_NONE) {
        s->kind = CLI_LINE_MUTATING;
        return 1;
    }
    int shown = (int)(s->words[0].len > 64 ? 64 : s->words[0].len);
    const struct query_word *query = query_lookup_word(s->words[0]);
    if (query != NULL && arity_ok(query->arity, s->word_count)) {
        s->kind = CLI_LINE_QUERY;
        return 1;
    }
    if (query != NULL) {
        /* berthd's words for it, the command as typed. */
        snprintf(err, err_size,
                 "ERR scenario %s line %" PRIu64 ": wrong number of arguments for '%.*s' command",
                 s->path, s->line_no, shown, s->words[0].ptr);
        return -1;
    }
    snprintf(err, err_size, "ERR scenario %s line %" PRIu64 ": unknown command '%.*s'", s->path,
             s->line_no, shown, s->words[0].ptr);
    return -1;
}

int cli_scenario_next(cli_scenario *s, char *err, size_t err_size) {
    assert(s != NULL && s->file != NULL && err != NULL);
    for (;;) {
        errno = 0;
        ssize_t n = getline(&s->line, &s->line_cap, s->file);
        if (n < 0) {
            if (ferror(s->file)) {
                snprintf(err, err_size, "ERR cannot read scenario %s after line %" PRIu64 ": %s",
                         s->path, s->line_no, strerror(errno));
                return -1;
            }
            return 0;
        }
        s->line_no++;
        if ((size_t)n > CLI_SCENARIO_LINE_LEN_MAX) {
            snprintf(err, err_size, "ERR scenario %s line %" PRIu64 ": longer than %d bytes",
                     s->path, s->line_no, CLI_SCENARIO_LINE_LEN_MAX);
            return -1;
        }
        if (is_blank(s->line, (size_t)n)) {
            continue;
        }
        if (split_words(s, (size_t)n, err, err_size) != 0) {
            return -1;
        }
        assert(s->word_count > 0);
        return classify(s, err, err_size);
    }
}
