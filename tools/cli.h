/* cli.h — what the berth tool's subcommand files share (private to tools/cli_*.c and berth.c).
 *
 * The berth tool is one binary with git-style subcommands. Each subcommand
 * lives in its own file and exposes one entry point here; the shared pieces
 * (read-only open of a data directory, flag parsing, JSON and time
 * formatting, the progress bar) live in cli_common.c so every subcommand
 * behaves the same way: exit 0 on success, 1 on a finding, 2 on usage or
 * input errors; errors on stderr start with a code word. */
#ifndef BERTH_CLI_H
#define BERTH_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "journal.h"
#include "replay.h"
#include "state.h"

#define CLI_EXIT_OK 0
#define CLI_EXIT_FINDING 1
#define CLI_EXIT_USAGE 2

#define CLI_PATH_LEN_MAX 4096            /* data directory, scenario and output paths */
#define CLI_ERR_LEN_MAX 1024             /* one error sentence, bytes incl. NUL */
#define CLI_TIME_TEXT_LEN_MAX 32         /* "2026-11-26T09:04:24.123Z" + NUL */
#define CLI_HEX_HASH_LEN (2 * BERTH_HASH_LEN + 1)

/* Entry points: argv[0] is the subcommand's own name. */
int cli_status_main(int argc, char **argv);
int cli_journal_main(int argc, char **argv);
int cli_replay_main(int argc, char **argv);
int cli_history_main(int argc, char **argv);
int cli_whatif_main(int argc, char **argv);
int cli_gen_main(int argc, char **argv);
int cli_timeline_main(int argc, char **argv);
/* cli_rebuild.c: `berth history rebuild --data DIR` (the one command that
 * writes: it takes the directory lock). CLI_EXIT_*. */
int cli_history_rebuild(const char *dir);
/* The rebuild itself, printing nothing on success: every record replayed
 * and checked (chain, hashes, recorded outcomes: berth_verify_touched), the
 * index written and swapped in. A failure is printed as `berth history
 * rebuild` prints it, or, with quiet set, kept in code and detail (the
 * journal's own words) for the caller to word: CLI_EXIT_FINDING when the
 * journal does not verify or is damaged, CLI_EXIT_USAGE otherwise. */
typedef struct cli_rebuilt {
    bool quiet;           /* in: keep a failure's words, print nothing */
    uint64_t head_seq;
    uint8_t head_hash[BERTH_HASH_LEN];
    uint64_t records;     /* replayed and checked: head_seq */
    uint64_t names;       /* index entries written */
    const char *code;     /* quiet failure: "CORRUPT", "IO", ... */
    char detail[CLI_ERR_LEN_MAX];
} cli_rebuilt;
int cli_history_rebuild_into(const char *dir, cli_rebuilt *out);   /* CLI_EXIT_* */
/* cli_backup.c: `berth backup --data DIR --to DEST`. */
int cli_backup_main(int argc, char **argv);
/* berth.c: run fn(arg) in a guarded child as the walk of `berth argv[0]`
 * (unguarded, in-process, under BERTH_UNGUARDED=1), for a subcommand that
 * owns something outside the child and must undo it however the child
 * ends: cleanup(cleanup_arg) runs in the parent whenever fn did not return
 * CLI_EXIT_OK, before a death is reported (as for a guarded subcommand:
 * CORRUPT naming the data directory, or INTERNAL) or a signal from outside
 * ends berth. On CLI_EXIT_OK, *bytes (malloc'd, the caller frees; NULL
 * when unguarded) and *len are the result frame fn sent with
 * cli_guard_result. CLI_EXIT_*. */
int cli_guarded(int argc, char **argv, int (*fn)(void *arg), void *arg, void (*cleanup)(void *arg),
                void *cleanup_arg, char **bytes, size_t *len);
void cli_guard_result(const void *bytes, size_t len);   /* in the child; nothing otherwise */

/* Usage and errors. cli_fail prints "<code> <sentence>" on stderr and
 * returns exit_code so callers can `return cli_fail(...)`. */
int cli_fail(int exit_code, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bool cli_wants_help(int argc, char **argv);

/* Flag parsing: `--name VALUE` or `--name=VALUE`. On a match advances *i past
 * the value and sets *value; a missing value is reported and sets *bad. */
bool cli_flag_value(int argc, char **argv, int *i, const char *name, const char **value,
                    bool *bad);
bool cli_parse_u64_text(const char *text, uint64_t *out);
bool cli_parse_seq_flag(const char *flag, const char *text, uint64_t *out);

/* A data directory opened read-only, without taking berthd's lock, and one
 * read view over it: safe beside a running berthd. */
typedef struct cli_store {
    berth_journal *journal;
    berth_journal_reader *reader;
    uint64_t head_seq;
    uint8_t head_hash[BERTH_HASH_LEN];   /* zeros when head_damaged */
    bool head_damaged;   /* record head_seq does not decode (reader_head's CORRUPT) */
    const char *dir;     /* the data directory as given (the caller's string) */
} cli_store;
int cli_store_open(cli_store *store, const char *dir);   /* CLI_EXIT_* */
/* The journal alone, opened as cli_store_open opens it (read-only, no
 * lock: safe beside berthd); CLI_EXIT_*, the failure printed. */
int cli_journal_open_ro(const char *dir, berth_journal **out);
/* berth is read-only on a data directory: a file it is told to write (an
 * --out) may not lie inside data_dir nor be one of its files under another
 * name (a hard link, a symbolic link). CLI_EXIT_OK, or CLI_EXIT_USAGE with
 * the reason printed. "-" (stdout) always passes. */
int cli_out_check(const char *flag, const char *out, const char *data_dir);
/* berth run as root on a service's data directory (the unit's DynamicUser
 * owns it) must leave nothing there that berthd, running as that user,
 * cannot open: LMDB makes lock.mdb and history/lock.mdb at any open, a
 * rebuild makes a new history/, a backup all of DEST. cli_made_before
 * notes which of a data directory's own entries exist (the directory,
 * LOCK, lock.mdb, data.mdb, history/ and its data.mdb and lock.mdb); after
 * berth wrote there, cli_made_chown gives each that is new since (not
 * there before, or another inode) and root's to the owner and group of
 * owner_dir. Both do nothing unless berth runs as root. */
#define CLI_MADE_NAMES 7
typedef struct cli_made {
    bool root;                    /* geteuid() == 0 at cli_made_before */
    const char *dir;
    struct {
        bool found;
        dev_t dev;
        ino_t ino;
    } before[CLI_MADE_NAMES];
} cli_made;
void cli_made_before(cli_made *made, const char *dir);
int cli_made_chown(const cli_made *made, const char *owner_dir);   /* CLI_EXIT_*, failure printed */
/* cli_etcd.c (issue 6): `--journal etcd --etcd-endpoints URLS --cluster NAME`
 * and TLS/auth flags, taken out of argv before any subcommand parses it; with
 * them, cli_store_open first brings the copy in --data DIR up to date from
 * etcd. Both return CLI_EXIT_*. */
int cli_etcd_take_flags(int *argc, char **argv);
int cli_etcd_mirror(const char *dir);
bool cli_etcd_on(void);   /* --journal etcd was given */
void cli_store_close(cli_store *store);
/* The prologue of a subcommand that reads one data directory: --help prints
 * usage; parse fills opts and names the directory in *data (CLI_EXIT_*); the
 * store is opened read-only for run and closed after, whatever run returns. */
typedef int (*cli_parse_fn)(int argc, char **argv, void *opts, const char **data);
typedef int (*cli_run_fn)(const void *opts, cli_store *store);
int cli_store_main(int argc, char **argv, const char *usage, void *opts, cli_parse_fn parse,
                   cli_run_fn run);                     /* CLI_EXIT_* */

/* berth.c runs a subcommand that reads a data directory in a forked child
 * (guard.h), so damaged LMDB pages kill the child and the parent reports
 * them as a finding. In that child cli_guard_fd is the pipe to the parent
 * (-1 otherwise, and then these do nothing): cli_store_open reports the
 * open and its head, a walk the last seq it checked. A failed write only
 * costs the parent its detail. */
#define CLI_VERIFY_STEP_RECORDS 16384u   /* verify's records between progress reports */
extern int cli_guard_fd;
void cli_guard_opened(uint64_t head_seq);
void cli_guard_checked(uint64_t seq);

/* Replay into a new state as of target (UINT64_MAX: head); owner frees. */
int cli_state_at(cli_store *store, uint64_t target, bool use_snapshots, berth_state **out,
                 berth_replay_stats *stats);          /* CLI_EXIT_* */
uint64_t cli_monotonic_ns(void);                      /* for --stats figures on stderr only */

/* The state as tables (human) or one JSON object per line: a header line,
 * then every worker and every instance, sorted by name. */
int cli_print_state(FILE *out, const berth_state *state, bool json);   /* CLI_EXIT_* */
/* One worker or instance: a table row (human) or a JSON object line. */
void cli_print_worker(FILE *out, const berth_worker *worker, bool json);
void cli_print_instance(FILE *out, const berth_instance *inst, bool json);
/* One record as a dump line (human) or a JSON object. */
void cli_print_record(FILE *out, const berth_record *rec, bool json);
/* "0-3,6" for a GPU mask; out holds CLI_GPU_TEXT_LEN_MAX bytes. */
#define CLI_GPU_TEXT_LEN_MAX (BERTH_GPUS_MAX * 4)
void cli_format_gpus(uint64_t mask, char *out);
/* Resolve an RFC 3339 time to the last seq recorded at or before it (0: none);
 * warns on stderr when the journal's record times go backwards. */
int cli_seq_at_time(cli_store *store, const char *rfc3339, uint64_t *seq);
/* Parse --at's seq and refuse one past the head, UINT64_MAX included
 * (cli_state_at's "the head"). CLI_EXIT_*. */
int cli_at_seq(const cli_store *store, const char *text, uint64_t *seq);

/* Text helpers. */
void cli_json_str(FILE *out, const char *bytes, size_t len);     /* quoted, escaped */
void cli_json_bstr(FILE *out, berth_str s);
void cli_format_time(uint64_t time_ms, char out[CLI_TIME_TEXT_LEN_MAX]);
bool cli_parse_rfc3339(const char *text, uint64_t *time_ms);
void cli_hex_hash(const uint8_t hash[BERTH_HASH_LEN], char out[CLI_HEX_HASH_LEN]);
void cli_xml_bstr(FILE *out, berth_str s);                      /* escaped for XML text */
/* For a terminal: printable ASCII as is, a backslash doubled, any other byte as
 * \xNN, so no journal bytes act on the reader's terminal. Returns the
 * columns written (for padding). */
size_t cli_text_str(FILE *out, const char *bytes, size_t len);
size_t cli_text_bstr(FILE *out, berth_str s);

/* Name -> u64 map (open addressing, growable). Lookups only: its order
 * never reaches any output. Keys are copied; the map owns them. */
#define CLI_MAP_SLOTS_MAX (1ull << 30)
typedef struct cli_map_entry {
    char *key;
    uint32_t key_len;
    uint64_t value;
} cli_map_entry;
typedef struct cli_name_map {
    cli_map_entry *slots;
    uint64_t cap;          /* power of two */
    uint64_t used;
} cli_name_map;
int cli_map_init(cli_name_map *map, uint64_t cap_initial);   /* 0 or -1 (memory) */
void cli_map_free(cli_name_map *map);
bool cli_map_get(const cli_name_map *map, berth_str key, uint64_t *value);
int cli_map_put(cli_name_map *map, berth_str key, uint64_t value);  /* 0 or -1 (memory, full) */

/* Progress on stderr: drawn only when stderr is a terminal and the work has
 * already taken over a second. The clock only decides whether to draw;
 * nothing it reads reaches stdout. */
typedef struct cli_progress {
    const char *label;
    uint64_t total;
    uint64_t start_ns;
    uint64_t next_check;
    bool tty;
    bool drawn;
} cli_progress;
void cli_progress_start(cli_progress *progress, const char *label, uint64_t total);
void cli_progress_update(cli_progress *progress, uint64_t done);
void cli_progress_end(cli_progress *progress);

#endif
