/* command.c — syntax of berth's mutating commands and their canonical text.
 *
 * Parsing checks only what can be known without state (names, numbers,
 * duplicates, arity), so anything it refuses never reaches the journal.
 * The canonical text is the journal's spelling of a command: replay splits
 * it on spaces and parses it again, so parse(canonical(c)) must equal c.
 *
 * Placement words are "<worker>" or "<worker>:<gpu>[,<gpu>...]". Worker names
 * may contain ':', so the GPU list is the suffix after the last ':' only when
 * that suffix is digits and commas. REQID <id>, when present, is the last
 * pair of words. So a typed WORKER.ADD refuses the two names those rules
 * would misread in a plain ON (worker_name_placeable), a typed backend may
 * not be named REQID (backend_name_placeable), and a typed command may not
 * end in a bare REQID. A journal written before that may hold such a
 * worker: "ON host:1:0" places worker host:1, and one named REQID is
 * misread only second to last (refused below). */
#include "command.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

static const char *const kind_names[BERTH_CMD_KIND_COUNT] = {
    [BERTH_CMD_NONE] = "",
    [BERTH_CMD_WORKER_ADD] = "WORKER.ADD",
    [BERTH_CMD_WORKER_CORDON] = "WORKER.CORDON",
    [BERTH_CMD_WORKER_UNCORDON] = "WORKER.UNCORDON",
    [BERTH_CMD_WORKER_REMOVE] = "WORKER.REMOVE",
    [BERTH_CMD_DEPLOY] = "DEPLOY",
    [BERTH_CMD_RELEASE] = "RELEASE",
    [BERTH_CMD_POLICY_SET] = "POLICY.SET",
};

static const uint8_t kind_name_lens[BERTH_CMD_KIND_COUNT] = {
    [BERTH_CMD_NONE] = 0,
    [BERTH_CMD_WORKER_ADD] = sizeof "WORKER.ADD" - 1,
    [BERTH_CMD_WORKER_CORDON] = sizeof "WORKER.CORDON" - 1,
    [BERTH_CMD_WORKER_UNCORDON] = sizeof "WORKER.UNCORDON" - 1,
    [BERTH_CMD_WORKER_REMOVE] = sizeof "WORKER.REMOVE" - 1,
    [BERTH_CMD_DEPLOY] = sizeof "DEPLOY" - 1,
    [BERTH_CMD_RELEASE] = sizeof "RELEASE" - 1,
    [BERTH_CMD_POLICY_SET] = sizeof "POLICY.SET" - 1,
};

const char *berth_cmd_kind_name(berth_cmd_kind kind) {
    assert(kind >= 0 && kind < BERTH_CMD_KIND_COUNT);
    return kind_names[kind];
}

/* Does w spell the upper-case keyword kw (n bytes), in any case? Journal
 * text is canonical, so the exact spelling is tried first; the case-folding
 * loop runs only for a client's lower-case spelling or a mismatch. */
static inline bool word_is(berth_str w, const char *kw, size_t n) {
    if (w.len != n) return false;
    if (memcmp(w.ptr, kw, n) == 0) return true;
    for (size_t i = 0; i < n; i++) {
        char c = w.ptr[i];
        if (c >= 'a' && c <= 'z') c = (char)(c - 'a' + 'A');
        if (c != kw[i]) return false;
    }
    return true;
}

/* Keyword match with the length known at compile time: no strlen per word. */
#define IS(w, kw) word_is((w), (kw), sizeof(kw) - 1)

berth_cmd_kind berth_cmd_kind_lookup(berth_str word) {
    /* The lengths tell all but the WORKER.* trio apart; no strlen per try. */
    switch (word.len) {
    case 6:
        if (IS(word, "DEPLOY")) return BERTH_CMD_DEPLOY;
        break;
    case 7:
        if (IS(word, "RELEASE")) return BERTH_CMD_RELEASE;
        break;
    case 10:
        if (IS(word, "WORKER.ADD")) return BERTH_CMD_WORKER_ADD;
        if (IS(word, "POLICY.SET")) return BERTH_CMD_POLICY_SET;
        break;
    case 13:
        if (IS(word, "WORKER.CORDON")) return BERTH_CMD_WORKER_CORDON;
        if (IS(word, "WORKER.REMOVE")) return BERTH_CMD_WORKER_REMOVE;
        break;
    case 15:
        if (IS(word, "WORKER.UNCORDON")) return BERTH_CMD_WORKER_UNCORDON;
        break;
    default:
        break;
    }
    return BERTH_CMD_NONE;
}

/* Parser context: the words, a cursor, and where errors go. */
typedef struct parser {
    const berth_str *argv;
    size_t argc;
    size_t at;
    char *err;
    size_t err_size;
    const char *cmd_name;
    bool input;     /* words a client typed, not a journal's canonical text */
} parser;

/* Copy at most 64 bytes of untrusted input into an error message, with
 * anything unprintable shown as '?', so errors never carry raw binary. */
static const char *quote_word(berth_str w, char *out, size_t size) {
    assert(size >= 8);
    size_t n = w.len < 64 ? w.len : 64;
    if (n > size - 4) n = size - 4;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)w.ptr[i];
        out[o++] = (c >= 0x20 && c < 0x7f && c != '\'') ? (char)c : '?';
    }
    if (w.len > n) {
        out[o++] = '.';
        out[o++] = '.';
    }
    out[o] = '\0';
    return out;
}

/* The error paths are cold: a journal's text never takes them, so the
 * hot helpers below inline into the command parsers around a call. */
static int fail(parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3), cold, noinline));
static int fail(parser *p, const char *fmt, ...) {
    if (p->err && p->err_size > 0) {
        int n = snprintf(p->err, p->err_size, "ERR ");
        va_list ap;
        va_start(ap, fmt);
        if (n > 0 && (size_t)n < p->err_size) vsnprintf(p->err + n, p->err_size - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static bool at_end(const parser *p) { return p->at >= p->argc; }

static inline int next_word(parser *p, const char *what, berth_str *out) {
    if (at_end(p)) return fail(p, "%s: missing %s", p->cmd_name, what);
    *out = p->argv[p->at++];
    return 0;
}

static __attribute__((cold, noinline)) int bad_name(parser *p, const char *what, berth_str name) {
    char q[80];
    quote_word(name, q, sizeof q);
    return fail(p, "%s: invalid %s '%s': names are 1-%d bytes of [A-Za-z0-9._:/-]", p->cmd_name,
                what, q, BERTH_NAME_LEN_MAX);
}

/* The command's own name: checked and hashed in one pass, for apply. */
static inline int next_name_hash(parser *p, const char *what, berth_str *out, uint64_t *hash) {
    if (next_word(p, what, out) != 0) return -1;
    if (!berth_name_valid_hash(*out, hash)) return bad_name(p, what, *out);
    return 0;
}

static inline int next_name(parser *p, const char *what, berth_str *out) {
    if (next_word(p, what, out) != 0) return -1;
    if (!berth_name_valid(*out)) return bad_name(p, what, *out);
    return 0;
}

static int next_number(parser *p, const char *what, uint64_t min, uint64_t max, uint32_t *out) {
    berth_str w;
    if (next_word(p, what, &w) != 0) return -1;
    uint64_t v;
    if (!berth_parse_u64(w, &v) || v < min || v > max) {
        char q[80];
        quote_word(w, q, sizeof q);
        return fail(p, "%s: %s must be an integer from %llu to %llu, got '%s'", p->cmd_name, what,
                    (unsigned long long)min, (unsigned long long)max, q);
    }
    *out = (uint32_t)v;
    return 0;
}

static __attribute__((cold, noinline)) int unexpected(parser *p) {
    char q[80];
    quote_word(p->argv[p->at], q, sizeof q);
    return fail(p, "%s: unexpected word '%s'", p->cmd_name, q);
}

static int parse_label(parser *p, berth_cmd *cmd, berth_str w) {
    const char *eq = memchr(w.ptr, '=', w.len);
    assert(eq != NULL);
    berth_label l = {
        berth_str_make(w.ptr, (size_t)(eq - w.ptr)),
        berth_str_make(eq + 1, w.len - (size_t)(eq - w.ptr) - 1),
    };
    char q[80];
    if (!berth_name_valid(l.key) || !berth_name_valid(l.value)) {
        return fail(p, "%s: invalid label '%s': key and value are names of [A-Za-z0-9._:/-]",
                    p->cmd_name, quote_word(w, q, sizeof q));
    }
    if (cmd->label_count == BERTH_LABELS_MAX) {
        return fail(p, "%s: more than %d labels", p->cmd_name, BERTH_LABELS_MAX);
    }
    /* Insertion sort keeps labels ordered by key and finds duplicates. */
    uint32_t i = cmd->label_count;
    while (i > 0 && berth_str_cmp(cmd->labels[i - 1].key, l.key) > 0) {
        cmd->labels[i] = cmd->labels[i - 1];
        i--;
    }
    if (i > 0 && berth_str_eq(cmd->labels[i - 1].key, l.key)) {
        memmove(&cmd->labels[i], &cmd->labels[i + 1], (cmd->label_count - i) * sizeof l);
        return fail(p, "%s: label key given twice in '%s'", p->cmd_name, quote_word(w, q, sizeof q));
    }
    cmd->labels[i] = l;
    cmd->label_count++;
    return 0;
}

static bool has_eq(berth_str w) { return memchr(w.ptr, '=', w.len) != NULL; }

/* Two worker names the plain placement syntax misreads: "REQID" (any case),
 * since "ON ... REQID <w>" reads as a request id, and a name ending in
 * ":<digits>", since "ON host:1" reads as worker host's GPU 1 (a name
 * holds no comma, so a longer GPU list cannot be its suffix).
 * A DEPLOY naming such a worker the plain way would silently mean another
 * placement, so a new one is refused. Only typed input is checked: a journal written before this rule
 * may hold such a worker, and replays as it was. */
static int worker_name_placeable(parser *p, berth_str name) {
    char q[80];
    if (IS(name, "REQID")) {
        return fail(p, "%s: a worker cannot be named '%s': in ON ... the words \"REQID <id>\" name a "
                    "request id", p->cmd_name, quote_word(name, q, sizeof q));
    }
    uint32_t i = name.len;
    while (i > 0 && name.ptr[i - 1] >= '0' && name.ptr[i - 1] <= '9') i--;
    if (i > 0 && i < name.len && name.ptr[i - 1] == ':') {
        return fail(p, "%s: a worker cannot be named '%s': in ON ... a name ending in ':%.*s' reads as "
                    "GPUs %.*s of worker '%.*s'", p->cmd_name, quote_word(name, q, sizeof q),
                    (int)(name.len - i), name.ptr + i, (int)(name.len - i), name.ptr + i, (int)(i - 1),
                    name.ptr);
    }
    return 0;
}

/* A backend named "REQID" (any case) could not be named the plain way
 * either: "POLICY.SET EXCLUSIVE REQID vllm", meant as two backends, reads
 * as no backend and request id vllm, which clears the policy. So none is
 * made (DEPLOY) or listed (POLICY.SET). Typed input only, as above. */
static int backend_name_placeable(parser *p, berth_str name) {
    if (!p->input || !IS(name, "REQID")) return 0;
    char q[80];
    return fail(p, "%s: a backend cannot be named '%s': the words \"REQID <id>\" name a request id",
                p->cmd_name, quote_word(name, q, sizeof q));
}

static int parse_worker_add(parser *p, berth_cmd *cmd) {
    if (next_name_hash(p, "worker name", &cmd->name, &cmd->name_hash) != 0) return -1;
    if (p->input && worker_name_placeable(p, cmd->name) != 0) return -1;
    bool seen_gpus = false, seen_vram = false;
    while (!at_end(p)) {
        berth_str w = p->argv[p->at++];
        if (IS(w, "GPUS")) {
            if (seen_gpus) return fail(p, "%s: GPUS given twice", p->cmd_name);
            if (next_number(p, "GPUS", 0, BERTH_GPUS_MAX, &cmd->gpu_count) != 0) return -1;
            seen_gpus = true;
        } else if (IS(w, "VRAM")) {
            if (seen_vram) return fail(p, "%s: VRAM given twice", p->cmd_name);
            if (next_number(p, "VRAM (MiB per GPU)", 1, BERTH_VRAM_MIB_MAX, &cmd->vram_mib) != 0) return -1;
            seen_vram = true;
        } else if (IS(w, "LABEL")) {
            if (at_end(p) || !has_eq(p->argv[p->at])) {
                return fail(p, "%s: LABEL needs <key>=<value>", p->cmd_name);
            }
            while (!at_end(p) && has_eq(p->argv[p->at])) {
                if (parse_label(p, cmd, p->argv[p->at++]) != 0) return -1;
            }
        } else {
            p->at--;
            return unexpected(p);
        }
    }
    if (!seen_gpus) return fail(p, "%s: missing GPUS <n>", p->cmd_name);
    return 0;
}

/* Parse "<gpu>[,<gpu>...]" into a mask; the caller checked the charset. */
static int parse_gpu_list(parser *p, berth_str list, berth_str word, uint64_t *mask) {
    char q[80];
    *mask = 0;
    uint32_t start = 0;
    for (uint32_t i = 0; i <= list.len; i++) {
        if (i < list.len && list.ptr[i] != ',') continue;
        uint64_t g;
        uint32_t n = i - start;
        const char *d = list.ptr + start;
        /* One or two digits, as every canonical list has, without a call;
         * longer runs (leading zeros, overflow) take the general parse. */
        if (n == 1) {
            g = (uint64_t)(d[0] - '0');
        } else if (n == 2) {
            g = (uint64_t)(d[0] - '0') * 10 + (uint64_t)(d[1] - '0');
        } else if (!berth_parse_u64(berth_str_make(d, n), &g)) {
            return fail(p, "%s: bad GPU list in '%s'", p->cmd_name, quote_word(word, q, sizeof q));
        }
        if (g >= BERTH_GPUS_MAX) {
            return fail(p, "%s: GPU index %llu in '%s' is beyond %d", p->cmd_name,
                        (unsigned long long)g, quote_word(word, q, sizeof q), BERTH_GPUS_MAX - 1);
        }
        if (*mask & (1ull << g)) {
            return fail(p, "%s: GPU %llu listed twice in '%s'", p->cmd_name, (unsigned long long)g, quote_word(word, q, sizeof q));
        }
        *mask |= 1ull << g;
        start = i + 1;
    }
    return 0;
}

/* One backward pass finds the GPU list: the suffix after the last ':' is a
 * list when it is non-empty and all digits and commas, so walking back over
 * such bytes and stopping on ':' finds it, and stopping on anything else (or
 * on the word's start) means the word is all worker. */
/* A GPU read backwards by the pass below (g from `digits` digits) into
 * mask, if it is one a canonical list can hold: one or two digits, below
 * 64, not listed before. */
static inline bool place_gpu_plain(uint64_t *mask, uint32_t g, uint32_t digits) {
    if (digits == 0 || digits > 2 || g >= BERTH_GPUS_MAX || (*mask & (1ull << g))) return false;
    *mask |= 1ull << g;
    return true;
}

static int parse_place(parser *p, berth_cmd *cmd, berth_str w) {
    /* The place is built in locals and stored once at the end: a name
     * stored with its 4-byte length and read back by value (8 bytes) right
     * after is a store the load cannot be forwarded from (perf: a seventh
     * of parse's time went to one such read). */
    const char *worker = w.ptr;
    uint32_t worker_len = w.len;
    uint64_t gpu_mask = 0;
    bool all_gpus = true;
    /* The walk back also reads the GPUs as it passes them, so a list as
     * berthd writes it is read once; any other (or a wrong one) is read
     * again by parse_gpu_list, which says what is wrong. */
    uint64_t mask = 0;
    uint32_t g = 0, digits = 0;
    bool plain = true;
    uint32_t i = w.len;
    for (; i > 0; i--) {
        char ch = w.ptr[i - 1];
        if (ch >= '0' && ch <= '9') {
            g = digits == 0 ? (uint32_t)(ch - '0') : g + 10u * (uint32_t)(ch - '0');
            digits++;
            continue;
        }
        if (ch != ',') break;
        plain = place_gpu_plain(&mask, g, digits) && plain;
        digits = 0;
    }
    if (i > 0 && i < w.len && w.ptr[i - 1] == ':') {
        worker_len = i - 1;
        all_gpus = false;
        plain = place_gpu_plain(&mask, g, digits) && plain;
        if (plain) {
            gpu_mask = mask;
        } else if (parse_gpu_list(p, berth_str_make(w.ptr + i, w.len - i), w, &gpu_mask) != 0) {
            return -1;
        }
    }
    char q[80];
    uint64_t worker_hash;
    if (!berth_name_valid_hash(berth_str_make(worker, worker_len), &worker_hash)) {
        return fail(p, "%s: invalid worker name '%s': names are 1-%d bytes of [A-Za-z0-9._:/-]",
                    p->cmd_name, quote_word(berth_str_make(worker, worker_len), q, sizeof q), BERTH_NAME_LEN_MAX);
    }
    for (uint32_t k = 0; k < cmd->place_count; k++) {
        const berth_place *o = &cmd->place[k];
        if (o->worker_hash == worker_hash && o->worker.len == worker_len &&
            memcmp(o->worker.ptr, worker, worker_len) == 0) {
            return fail(p, "%s: worker '%s' listed twice", p->cmd_name,
                        quote_word(berth_str_make(worker, worker_len), q, sizeof q));
        }
    }
    if (cmd->place_count == BERTH_PLACEMENT_WORKERS_MAX) {
        return fail(p, "%s: more than %d workers", p->cmd_name, BERTH_PLACEMENT_WORKERS_MAX);
    }
    cmd->place[cmd->place_count++] =
        (berth_place){ berth_str_make(worker, worker_len), gpu_mask, all_gpus, worker_hash };
    return 0;
}

static int parse_deploy(parser *p, berth_cmd *cmd) {
    if (next_name_hash(p, "instance name", &cmd->name, &cmd->name_hash) != 0) return -1;
    bool seen_on = false;
    while (!at_end(p) && !seen_on) {
        berth_str w = p->argv[p->at++];
        if (IS(w, "MODEL")) {
            if (cmd->model.len) return fail(p, "%s: MODEL given twice", p->cmd_name);
            if (next_name(p, "model name", &cmd->model) != 0) return -1;
        } else if (IS(w, "BACKEND")) {
            if (cmd->backend.len) return fail(p, "%s: BACKEND given twice", p->cmd_name);
            if (next_name(p, "backend name", &cmd->backend) != 0) return -1;
            if (backend_name_placeable(p, cmd->backend) != 0) return -1;
        } else if (IS(w, "VRAM")) {
            if (cmd->claim_mib) return fail(p, "%s: VRAM given twice", p->cmd_name);
            if (next_number(p, "VRAM (MiB per GPU)", 1, BERTH_VRAM_MIB_MAX, &cmd->claim_mib) != 0) return -1;
        } else if (IS(w, "ON")) {
            seen_on = true;
        } else {
            p->at--;
            return unexpected(p);
        }
    }
    if (!cmd->model.len) return fail(p, "%s: missing MODEL <model>", p->cmd_name);
    if (!cmd->backend.len) return fail(p, "%s: missing BACKEND <backend>", p->cmd_name);
    if (!seen_on) return fail(p, "%s: missing ON <worker>[:<gpu>,...] ...", p->cmd_name);
    if (at_end(p)) return fail(p, "%s: ON needs at least one worker", p->cmd_name);
    while (!at_end(p)) {
        if (parse_place(p, cmd, p->argv[p->at++]) != 0) return -1;
    }
    /* The canonical text drops REQID, so a placement ending "REQID <worker>"
     * would be read back by replay as a request id: the journal could not be
     * replayed and berthd would refuse to start. Refuse it here instead. */
    if (cmd->place_count >= 2) {
        const berth_place *pl = &cmd->place[cmd->place_count - 2];
        if (pl->all_gpus && IS(pl->worker, "REQID")) {
            return fail(p, "%s: a worker named REQID cannot be second to last in ON ...: the words "
                        "\"REQID <worker>\" would read as a request id; list it elsewhere", p->cmd_name);
        }
    }
    return 0;
}

static int add_backend(parser *p, berth_cmd *cmd, berth_str b) {
    char q[80];
    if (!berth_name_valid(b)) {
        return fail(p, "%s: invalid backend name '%s'", p->cmd_name, quote_word(b, q, sizeof q));
    }
    if (backend_name_placeable(p, b) != 0) return -1;
    if (cmd->backend_count == BERTH_POLICY_BACKENDS_MAX) {
        return fail(p, "%s: more than %d backends", p->cmd_name, BERTH_POLICY_BACKENDS_MAX);
    }
    uint32_t i = cmd->backend_count;
    while (i > 0 && berth_str_cmp(cmd->backends[i - 1], b) > 0) {
        cmd->backends[i] = cmd->backends[i - 1];
        i--;
    }
    if (i > 0 && berth_str_eq(cmd->backends[i - 1], b)) {
        memmove(&cmd->backends[i], &cmd->backends[i + 1], (cmd->backend_count - i) * sizeof b);
        return fail(p, "%s: backend '%s' listed twice", p->cmd_name, quote_word(b, q, sizeof q));
    }
    cmd->backends[i] = b;
    cmd->backend_count++;
    return 0;
}

static int parse_policy_set(parser *p, berth_cmd *cmd) {
    berth_str w = { NULL, 0 };
    if (next_word(p, "EXCLUSIVE", &w) != 0) return -1;
    if (!IS(w, "EXCLUSIVE")) {
        p->at--;
        return fail(p, "%s: only EXCLUSIVE <backend>[,<backend>...] can be set", p->cmd_name);
    }
    /* Backends as one comma list, several words, or both; none clears the set. */
    while (!at_end(p)) {
        berth_str list = p->argv[p->at++];
        uint32_t start = 0;
        for (uint32_t i = 0; i <= list.len; i++) {
            if (i < list.len && list.ptr[i] != ',') continue;
            if (add_backend(p, cmd, berth_str_make(list.ptr + start, i - start)) != 0) return -1;
            start = i + 1;
        }
    }
    return 0;
}

static size_t canonical_write(const berth_cmd *cmd, char *buf, size_t size);

/* The header promises that a BERTH_COMMAND_LEN_MAX buffer holds any parsed
 * command's canonical text, but 64 workers of 128-byte names with long GPU
 * lists would not fit: such a command is refused here. Canonical text is
 * never longer than the words it came from (same keywords, names and digits,
 * no more separators, no REQID), so only input longer than the limit needs
 * measuring: the caller passes the typed length (a pass over word lengths
 * for words, nothing for text split on spaces). */
static bool canonical_fits(const berth_cmd *cmd, size_t typed) {
    if (typed <= BERTH_COMMAND_LEN_MAX) return true;
    return canonical_write(cmd, NULL, BERTH_COMMAND_LEN_MAX) > 0;
}

/* typed: the words' bytes plus one per word, which text split on single
 * spaces gives as its length plus one without a pass over the words. */
static int parse_words(berth_cmd *cmd, size_t argc, const berth_str *argv, size_t typed, bool input,
                       char *err, size_t err_size) {
    assert(cmd != NULL);
    assert(argv != NULL || argc == 0);
    /* Only the scalars: the arrays are read no further than their counts.
     * In two pieces of at most 64 bytes, which GCC stores inline: one
     * memset of all 104 became `rep stos`, tens of cycles to start, on
     * every replayed record. */
    _Static_assert(offsetof(berth_cmd, place) > 64 && offsetof(berth_cmd, place) <= 128,
                   "the scalars are two pieces");
    memset(cmd, 0, 64);
    memset((char *)cmd + 64, 0, offsetof(berth_cmd, place) - 64);
    parser p = { argv, argc, 1, err, err_size, "", input };
    if (argc == 0) return fail(&p, "empty command");
    cmd->kind = berth_cmd_kind_lookup(argv[0]);
    if (cmd->kind == BERTH_CMD_NONE) {
        char q[80];
        quote_word(argv[0], q, sizeof q);
        return fail(&p, "unknown command '%s'", q);
    }
    p.cmd_name = kind_names[cmd->kind];
    if (argc > BERTH_ARGS_MAX) return fail(&p, "%s: more than %d words", p.cmd_name, BERTH_ARGS_MAX);
    if (argc >= 3 && IS(argv[argc - 2], "REQID")) {
        cmd->reqid = argv[argc - 1];
        p.argc = argc - 2;
        if (!berth_name_valid(cmd->reqid)) {
            char q[80];
            quote_word(cmd->reqid, q, sizeof q);
            return fail(&p, "%s: invalid request id '%s': ids are 1-%d bytes of [A-Za-z0-9._:/-]", p.cmd_name, q,
                        BERTH_NAME_LEN_MAX);
        }
    }
    /* A typed command ending in a bare REQID (a script's "REQID $id" with
     * $id empty) would take the word as a name: the last worker of a DEPLOY,
     * a backend of POLICY.SET. Refused, so it never reaches the journal; a
     * command with one word after its name ("RELEASE REQID") is not
     * ambiguous. */
    if (input && p.argc >= 3 && IS(argv[p.argc - 1], "REQID")) {
        return fail(&p, "%s: REQID needs an id: a command ends with \"REQID <id>\"", p.cmd_name);
    }
    int rc;
    switch (cmd->kind) {
    case BERTH_CMD_WORKER_ADD: rc = parse_worker_add(&p, cmd); break;
    case BERTH_CMD_WORKER_CORDON:
    case BERTH_CMD_WORKER_UNCORDON:
    case BERTH_CMD_WORKER_REMOVE: rc = next_name_hash(&p, "worker name", &cmd->name, &cmd->name_hash); break;
    case BERTH_CMD_DEPLOY: rc = parse_deploy(&p, cmd); break;
    case BERTH_CMD_RELEASE: rc = next_name_hash(&p, "instance name", &cmd->name, &cmd->name_hash); break;
    case BERTH_CMD_POLICY_SET: rc = parse_policy_set(&p, cmd); break;
    default: assert(0 && "unreachable"); return -1;
    }
    if (rc != 0) return rc;
    if (!at_end(&p)) return unexpected(&p);
    assert(cmd->kind != BERTH_CMD_DEPLOY || cmd->place_count >= 1);
    if (!canonical_fits(cmd, typed)) {
        return fail(&p, "%s: command too long: its canonical text exceeds %d bytes", p.cmd_name,
                    BERTH_COMMAND_LEN_MAX);
    }
    /* Names were hashed as they were checked; POLICY.SET has none, and its
     * name_hash is the empty name's, as berth_cmd_hash_names would set. */
    if (cmd->kind == BERTH_CMD_POLICY_SET) cmd->name_hash = berth_name_hash(cmd->name);
    return 0;
}

int berth_cmd_parse(berth_cmd *cmd, size_t argc, const berth_str *argv, char *err, size_t err_size) {
    assert(argv != NULL || argc == 0);
    size_t typed = argc;
    for (size_t i = 0; i < argc; i++) typed += argv[i].len;
    return parse_words(cmd, argc, argv, typed, true, err, err_size);
}

void berth_cmd_hash_names(berth_cmd *cmd) {
    assert(cmd != NULL);
    assert(cmd->place_count <= BERTH_PLACEMENT_WORKERS_MAX);
    cmd->name_hash = berth_name_hash(cmd->name);
    for (uint32_t i = 0; i < cmd->place_count; i++) {
        cmd->place[i].worker_hash = berth_name_hash(cmd->place[i].worker);
    }
}

/* Bounded text builder: overflow sticks, so callers check once at the end.
 * With cmp set it writes nothing and compares instead: a byte that differs
 * from cmp's counts as overflow, so the one writer both spells the
 * canonical text and checks a text against it (verify's canonical check),
 * and the two cannot disagree on what canonical is. */
typedef struct text {
    char *buf;
    const char *cmp;
    size_t size;
    size_t len;
    bool overflow;
} text;

static inline void put(text *t, const char *s, size_t n) {
    if (t->overflow || n > t->size - t->len) {
        t->overflow = true;
        return;
    }
    if (t->cmp) {
        /* A name parsed from cmp points at its own bytes there: when it
         * sits where the canonical text puts it, nothing to compare. */
        if (s != t->cmp + t->len && memcmp(t->cmp + t->len, s, n) != 0) t->overflow = true;
    } else if (t->buf) {
        memcpy(t->buf + t->len, s, n);   /* NULL buf: measure only */
    }
    t->len += n;
}
static inline void put_cstr(text *t, const char *s) { put(t, s, strlen(s)); }
static inline void put_str(text *t, berth_str s) { put(t, s.ptr, s.len); }
/* Decimal without a printf: verify spells every record's numbers. */
static inline void put_u64(text *t, uint64_t v) {
    if (v < 10) {   /* a GPU index, mostly */
        char c = (char)('0' + v);
        put(t, &c, 1);
        return;
    }
    char d[24];
    size_t i = sizeof d;
    do {
        d[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(t, d + i, sizeof d - i);
}

/* The canonical text into buf (or compared with cmp), or only its length
 * when both are NULL. */
static size_t canonical_walk(const berth_cmd *cmd, char *buf, const char *cmp, size_t size) {
    assert(cmd != NULL);
    assert(cmd->kind > BERTH_CMD_NONE && cmd->kind < BERTH_CMD_KIND_COUNT);
    assert(buf == NULL || cmp == NULL);
    text t = { buf, cmp, size, 0, false };
    put(&t, kind_names[cmd->kind], kind_name_lens[cmd->kind]);
    switch (cmd->kind) {
    case BERTH_CMD_WORKER_ADD:
        put_cstr(&t, " ");
        put_str(&t, cmd->name);
        put_cstr(&t, " GPUS ");
        put_u64(&t, cmd->gpu_count);
        if (cmd->vram_mib) {
            put_cstr(&t, " VRAM ");
            put_u64(&t, cmd->vram_mib);
        }
        if (cmd->label_count) put_cstr(&t, " LABEL");
        for (uint32_t i = 0; i < cmd->label_count; i++) {
            put_cstr(&t, " ");
            put_str(&t, cmd->labels[i].key);
            put_cstr(&t, "=");
            put_str(&t, cmd->labels[i].value);
        }
        break;
    case BERTH_CMD_WORKER_CORDON:
    case BERTH_CMD_WORKER_UNCORDON:
    case BERTH_CMD_WORKER_REMOVE:
    case BERTH_CMD_RELEASE:
        put_cstr(&t, " ");
        put_str(&t, cmd->name);
        break;
    case BERTH_CMD_DEPLOY:
        put_cstr(&t, " ");
        put_str(&t, cmd->name);
        put_cstr(&t, " MODEL ");
        put_str(&t, cmd->model);
        put_cstr(&t, " BACKEND ");
        put_str(&t, cmd->backend);
        if (cmd->claim_mib) {
            put_cstr(&t, " VRAM ");
            put_u64(&t, cmd->claim_mib);
        }
        put_cstr(&t, " ON");
        for (uint32_t i = 0; i < cmd->place_count; i++) {
            const berth_place *pl = &cmd->place[i];
            put_cstr(&t, " ");
            put_str(&t, pl->worker);
            if (pl->all_gpus) continue;
            char sep = ':';
            for (uint64_t m = pl->gpu_mask; m; m &= m - 1) {   /* ascending: the set bits only */
                put(&t, &sep, 1);
                put_u64(&t, (uint64_t)__builtin_ctzll(m));
                sep = ',';
            }
        }
        break;
    case BERTH_CMD_POLICY_SET:
        put_cstr(&t, " EXCLUSIVE");
        for (uint32_t i = 0; i < cmd->backend_count; i++) {
            put_cstr(&t, i ? "," : " ");
            put_str(&t, cmd->backends[i]);
        }
        break;
    default: assert(0 && "unreachable"); return 0;
    }
    return t.overflow ? 0 : t.len;
}

static size_t canonical_write(const berth_cmd *cmd, char *buf, size_t size) {
    return canonical_walk(cmd, buf, NULL, size);
}

size_t berth_cmd_canonical(const berth_cmd *cmd, char *buf, size_t size) {
    assert(cmd != NULL && buf != NULL);
    return canonical_write(cmd, buf, size);
}

bool berth_cmd_is_canonical(const berth_cmd *cmd, const char *txt, size_t len) {
    assert(cmd != NULL && (txt != NULL || len == 0));
    if (len == 0) return false;
    return canonical_walk(cmd, NULL, txt, len) == len;
}

/* A word stored whole, in one 16-byte store with its padding zeroed:
 * parse reads each word back by value a few dozen instructions later, and
 * an 8-byte read of a length stored as 4 bytes is not forwarded from the
 * store (perf: the command's first word, read at once, stalled parse). */
static inline void word_store(berth_str *dst, const char *ptr, size_t len) {
#ifdef __SSE2__
    _mm_storeu_si128((__m128i *)(void *)dst,
                     _mm_set_epi64x((long long)(uint32_t)len, (long long)(uintptr_t)ptr));
#else
    *dst = berth_str_make(ptr, len);
#endif
}

/* Replay splits every record. A memchr call per word costs more than the
 * word's bytes, so with SSE2 one compare finds every space in sixteen bytes
 * and the words are cut from the bits; the last block overlaps the one
 * before it (its bits already seen are shifted out) so no load reads past
 * the text. Shorter texts, and machines without SSE2, take memchr. */
size_t berth_cmd_split(const char *txt, size_t len, berth_str *words, size_t words_max) {
    assert(txt != NULL || len == 0);
    if (len == 0) return 0;
    size_t n = 0;
#ifdef __SSE2__
    if (len >= 16) {
        size_t start = 0;
        const __m128i spaces = _mm_set1_epi8(' ');
        size_t i = 0;
        for (;;) {
            size_t at = i + 16 <= len ? i : len - 16;
            __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(txt + at));
            uint32_t m = (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(v, spaces)) >> (i - at);
            while (m) {
                size_t sp = i + (size_t)__builtin_ctz(m);
                if (n == words_max) return 0;
                word_store(&words[n++], txt + start, sp - start);
                start = sp + 1;
                m &= m - 1;
            }
            i = at + 16;
            if (i == len) break;
        }
        if (n == words_max) return 0;
        word_store(&words[n++], txt + start, len - start);
        return n;
    }
#endif
    const char *p = txt, *end = txt + len;
    for (;;) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        const char *stop = sp ? sp : end;
        if (n == words_max) return 0;
        word_store(&words[n++], p, (size_t)(stop - p));
        if (sp == NULL) return n;
        p = sp + 1;
    }
}

int berth_cmd_parse_text(berth_cmd *cmd, const char *txt, size_t len, berth_str *words,
                         size_t words_max, char *err, size_t err_size) {
    size_t n = berth_cmd_split(txt, len, words, words_max);
    if (n == 0) {
        if (err && err_size) snprintf(err, err_size, "ERR command text empty or over %zu words", words_max);
        return -1;
    }
    return parse_words(cmd, n, words, len + 1, false, err, err_size);
}
