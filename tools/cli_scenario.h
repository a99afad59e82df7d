/* cli_scenario.h — reading scenario files: one command per line, in exactly
 * the protocol's words (what redis-cli would send), '#' comments, blank lines.
 *
 * Shared by `berth whatif` and the tests' journal builder, so a scenario
 * means the same thing wherever it is read. The reader splits words like
 * redis-cli does for names berth accepts (spaces and tabs separate; a word
 * may be wrapped in "double" or 'single' quotes) and says which line broke. */
#ifndef BERTH_CLI_SCENARIO_H
#define BERTH_CLI_SCENARIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "berth_limits.h"
#include "names.h"

#define CLI_SCENARIO_LINE_LEN_MAX 65536   /* bytes in one scenario line */
#define CLI_SCENARIO_WORDS_MAX (BERTH_ARGS_MAX + 2)  /* + REQID pair */

typedef enum cli_line_kind {
    CLI_LINE_MUTATING = 0,   /* a command berth journals */
    CLI_LINE_QUERY,          /* a read-only command a server would answer */
} cli_line_kind;

typedef struct cli_scenario {
    FILE *file;
    bool owns_file;
    const char *path;
    uint64_t line_no;
    char *line;              /* getline buffer, owned */
    size_t line_cap;
    size_t word_count;
    berth_str words[CLI_SCENARIO_WORDS_MAX];   /* point into line */
    cli_line_kind kind;
} cli_scenario;

/* path "-" reads stdin. Returns 0, or -1 with a sentence in err. */
int cli_scenario_open(cli_scenario *scenario, const char *path, char *err, size_t err_size);
/* Next command line: 1 (words filled), 0 at the end, -1 with err naming
 * the line ("ERR scenario FILE line N: ..."). Syntax of mutating commands
 * is checked later by berth_cmd_parse; this splits, classifies and checks a
 * query's word count against berthd's arity for it. */
int cli_scenario_next(cli_scenario *scenario, char *err, size_t err_size);
void cli_scenario_close(cli_scenario *scenario);

#endif
