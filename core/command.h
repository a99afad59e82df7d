/* command.h — berth's mutating commands: parse words, print canonical text.
 *
 * A command arrives as words (from RESP, a scenario file, or a journal
 * record's canonical text). berth_cmd_parse checks syntax only — names,
 * numbers, duplicates, arity — and never looks at state: a syntax error
 * never reaches the journal. The parsed command points into the words; it
 * allocates nothing. The canonical text (keywords upper-case, GPU lists
 * ascending, labels sorted by key, REQID left out) is what the journal
 * stores, so two spellings of one command journal identically. */
#ifndef BERTH_COMMAND_H
#define BERTH_COMMAND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "berth_limits.h"
#include "names.h"

typedef enum berth_cmd_kind {
    BERTH_CMD_NONE = 0,
    BERTH_CMD_WORKER_ADD,
    BERTH_CMD_WORKER_CORDON,
    BERTH_CMD_WORKER_UNCORDON,
    BERTH_CMD_WORKER_REMOVE,
    BERTH_CMD_DEPLOY,
    BERTH_CMD_RELEASE,
    BERTH_CMD_POLICY_SET,
    BERTH_CMD_KIND_COUNT
} berth_cmd_kind;

/* One worker of a DEPLOY placement. all_gpus: no GPU list was given, so the
 * instance takes every GPU the worker has (resolved against state at apply). */
typedef struct berth_place {
    berth_str worker;
    uint64_t gpu_mask;
    bool all_gpus;
    uint64_t worker_hash;     /* berth_name_hash(worker), set with it */
} berth_place;

typedef struct berth_label {
    berth_str key;
    berth_str value;
} berth_label;

/* Scalars first, arrays last: replay keeps hundreds of parsed commands in
 * flight, and a DEPLOY on a few workers then touches only the first lines. */
typedef struct berth_cmd {
    berth_cmd_kind kind;
    berth_str reqid;          /* len 0: no REQID */
    berth_str name;           /* the worker (WORKER.*) or the instance (DEPLOY, RELEASE) */
    uint64_t name_hash;       /* berth_name_hash(name), set with it */
    /* WORKER.ADD */
    uint32_t gpu_count;
    uint32_t vram_mib;        /* per GPU; 0: registered without VRAM */
    uint32_t label_count;
    /* DEPLOY */
    uint32_t claim_mib;       /* 0: GPUs held whole; else MiB claimed on each GPU */
    berth_str model;
    berth_str backend;
    uint32_t place_count;     /* 1: local; >1: distributed, place[0] is the main worker */
    /* POLICY.SET EXCLUSIVE */
    uint32_t backend_count;
    /* The arrays, each filled from index 0 up to its count. */
    berth_place place[BERTH_PLACEMENT_WORKERS_MAX];
    berth_label labels[BERTH_LABELS_MAX];   /* WORKER.ADD: sorted by key, keys unique */
    berth_str backends[BERTH_POLICY_BACKENDS_MAX];  /* POLICY.SET: sorted, unique */
} berth_cmd;

/* Set name_hash and every place's worker_hash from the names. Parse does
 * it; a command built or renamed by hand should call it before apply. Apply
 * trusts a carried hash only on a hit (replay computes them on its feeder
 * thread); a wrong one costs a re-probe with the recomputed hash, never a
 * wrong outcome. berth_state_apply_precomputed, which replay uses for the
 * commands it parsed itself, trusts them on a miss as well. */
void berth_cmd_hash_names(berth_cmd *cmd);

/* The command's first word, canonical ("WORKER.ADD"); "" for NONE. */
const char *berth_cmd_kind_name(berth_cmd_kind kind);

/* Is words[0] a mutating command berth knows? (case-insensitive) */
berth_cmd_kind berth_cmd_kind_lookup(berth_str word);

/* Parse argc words into cmd. A trailing "REQID <id>" pair is accepted
 * anywhere after the command name's arguments. Returns 0, or -1 with a
 * NUL-terminated message in err (at most err_size bytes, starting "ERR ")
 * that says what was wrong. cmd points into argv's bytes afterwards. */
int berth_cmd_parse(berth_cmd *cmd, size_t argc, const berth_str *argv,
                    char *err, size_t err_size);

/* Write the canonical text of cmd (no REQID) into buf. Returns its length,
 * or 0 if it does not fit (buf of BERTH_COMMAND_LEN_MAX always fits a
 * parsed command). Writes no NUL. */
size_t berth_cmd_canonical(const berth_cmd *cmd, char *buf, size_t size);

/* Is txt (len bytes) exactly cmd's canonical text, as berth_cmd_canonical
 * would write it? Compares as it goes, without writing it out. A journal
 * record's text parses to cmd; only the canonical spelling is what berthd
 * writes (verify's check). */
bool berth_cmd_is_canonical(const berth_cmd *cmd, const char *txt, size_t len);

/* Split canonical text on single spaces into words (no copies: each word
 * points into text). Returns the word count, or 0 if text is empty or has
 * more than words_max words. */
size_t berth_cmd_split(const char *text, size_t len, berth_str *words, size_t words_max);

/* Split and parse in one call: what replay does with a record's command. */
int berth_cmd_parse_text(berth_cmd *cmd, const char *text, size_t len,
                         berth_str *words, size_t words_max,
                         char *err, size_t err_size);

#endif
