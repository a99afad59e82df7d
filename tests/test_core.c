/* test_core.c — unit tests of core/: names, every parse error, the canonical
 * text, and every rule of berth_state_apply with the sentence it must say.
 *
 * Owned by the core-tests helper. The tests are written from the contract
 * (the core headers and issue 2, "The model and the rules"), not from the code, so a
 * failure here means the engine left the contract (or the contract moved).
 * Each outcome is checked for its code word and for the parties its sentence
 * must name; the allocation-failure test drives a failing allocator through
 * every allocation of a scenario and proves a failed apply changes nothing. */
#include <assert.h>
#include <check.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sanitizer/asan_interface.h>
#include "test_asan.h"
#include "test_loop.h"

#include "command.h"
#include "berth_limits.h"
#include "names.h"
#include "state.h"

enum {
    dump_size_max = 1 << 20,          /* canonical state dump of a test scenario, bytes */
    alloc_fail_k_max = 1 << 16,       /* bound on the injection loop: allocations per scenario */
    scenario_commands_max = 128,      /* commands in the injection scenario */
    big_text_size_max = 1 << 16,      /* generated over-long command lines, bytes */
};

/* ---- parsing helpers ---------------------------------------------------- */

/* A parsed command with the bytes it points into: cmd must not outlive text. */
typedef struct parsed {
    char text[big_text_size_max];
    berth_str words[BERTH_ARGS_MAX * 2];
    size_t word_count;
    berth_cmd cmd;
    char err[BERTH_ERR_LEN_MAX];
} parsed;

static parsed *parsed_new(void) {
    parsed *p = calloc(1, sizeof *p);
    ck_assert_ptr_nonnull(p);
    return p;
}

/* Split on every single space, so "a  b" yields an empty middle word: that
 * is how a test spells an empty name. */
static size_t split_spaces(const char *text, size_t len, berth_str *words, size_t words_max) {
    size_t n = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && text[i] != ' ') continue;
        LOOP_ASSERT(n < words_max, "more than %zu words", words_max);
        words[n++] = berth_str_make(text + start, i - start);
        start = i + 1;
    }
    return n;
}

/* Parse one line; on failure the message must be a proper "ERR ..." string. */
static int parse_line(parsed *p, const char *line) {
    size_t len = strlen(line);
    LOOP_ASSERT(len < sizeof p->text, "a line of %zu bytes", len);
    memcpy(p->text, line, len + 1);
    p->word_count = split_spaces(p->text, len, p->words, sizeof p->words / sizeof p->words[0]);
    memset(p->err, 'X', sizeof p->err);
    int rc = berth_cmd_parse(&p->cmd, p->word_count, p->words, p->err, sizeof p->err);
    LOOP_ASSERT(rc == 0 || rc == -1, "'%s': parse returned %d", line, rc);
    if (rc == -1) {
        LOOP_ASSERT(memchr(p->err, '\0', sizeof p->err) != NULL, "error not NUL-terminated");
        LOOP_ASSERT(strncmp(p->err, "ERR ", 4) == 0, "error '%s' does not start with ERR", p->err);
        LOOP_ASSERT(strlen(p->err) > 8, "error '%s' says nothing", p->err);
    }
    return rc;
}

static void expect_parse_ok(parsed *p, const char *line) {
    int rc = parse_line(p, line);
    LOOP_ASSERT(rc == 0, "'%s' should parse, got: %s", line, p->err);
}

static void expect_parse_err(parsed *p, const char *line) {
    int rc = parse_line(p, line);
    ck_assert_msg(rc == -1, "'%s' should be a syntax error", line);
}

static bool str_is(berth_str s, const char *c) { return berth_str_eq(s, berth_str_make(c, strlen(c))); }

static berth_str cstr(const char *c) { return berth_str_make(c, strlen(c)); }
static bool id_of_is(const uint8_t id[BERTH_COMMAND_ID_LEN], const char *canonical) {
    uint8_t want[BERTH_COMMAND_ID_LEN];
    berth_command_id(cstr(canonical), want);
    return memcmp(id, want, BERTH_COMMAND_ID_LEN) == 0;
}

/* Field-by-field equality of two parsed commands, REQID excluded: what
 * "parse(canonical(x)) == x" means. */
static bool cmd_same(const berth_cmd *a, const berth_cmd *b) {
    if (a->kind != b->kind || !berth_str_eq(a->name, b->name)) return false;
    if (a->gpu_count != b->gpu_count || a->vram_mib != b->vram_mib) return false;
    if (a->label_count != b->label_count) return false;
    for (uint32_t i = 0; i < a->label_count; i++) {
        if (!berth_str_eq(a->labels[i].key, b->labels[i].key)) return false;
        if (!berth_str_eq(a->labels[i].value, b->labels[i].value)) return false;
    }
    if (!berth_str_eq(a->model, b->model) || !berth_str_eq(a->backend, b->backend)) return false;
    if (a->claim_mib != b->claim_mib || a->place_count != b->place_count) return false;
    for (uint32_t i = 0; i < a->place_count; i++) {
        if (!berth_str_eq(a->place[i].worker, b->place[i].worker)) return false;
        if (a->place[i].all_gpus != b->place[i].all_gpus) return false;
        if (!a->place[i].all_gpus && a->place[i].gpu_mask != b->place[i].gpu_mask) return false;
    }
    if (a->backend_count != b->backend_count) return false;
    for (uint32_t i = 0; i < a->backend_count; i++) {
        if (!berth_str_eq(a->backends[i], b->backends[i])) return false;
    }
    return true;
}

/* A name of exactly len bytes of 'a'..'z' (valid charset), NUL-terminated. */
static void make_name(char *buf, size_t len) {
    for (size_t i = 0; i < len; i++) buf[i] = (char)('a' + (char)(i % 26));
    buf[len] = '\0';
}

/* ---- names -------------------------------------------------------------- */

/* A hang guard, not a timing check: Check's 4 s default is too short for the
 * reqid window test on a loaded 2-core machine or under the sanitizers. */
#define TCASE_TIMEOUT_S 60

START_TEST(test_name_valid) {
    char name[BERTH_NAME_LEN_MAX + 2];
    make_name(name, BERTH_NAME_LEN_MAX);
    ck_assert(berth_name_valid(cstr(name)));
    make_name(name, BERTH_NAME_LEN_MAX + 1);
    ck_assert(!berth_name_valid(cstr(name)));
    ck_assert(!berth_name_valid(berth_str_make("", 0)));
    ck_assert(berth_name_valid(cstr("Az09._:/-")));
    const char *bad[] = { "a b", "a=b", "a,b", "a@b", "a\tb", "a\nb", "a\"b", "a'b", "a\xc3\xa9", "a*", "a+b" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(!berth_name_valid(cstr(bad[i])), "'%s' must be invalid", bad[i]);
    }
    ck_assert(!berth_name_valid(berth_str_make("a\0b", 3)));
}
END_TEST

/* The vectorised check against the charset spelled out byte by byte: every
 * byte value at every position of names of many lengths (so every tail the
 * sixteen-byte blocks leave is exercised), at several alignments. */
static bool name_byte_reference(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == ':' || c == '/' || c == '-';
}

START_TEST(test_name_valid_every_byte) {
    static const uint32_t lengths[] = { 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 127, 128 };
    char buf[BERTH_NAME_LEN_MAX + 32];
    for (size_t li = 0; li < sizeof lengths / sizeof lengths[0]; li++) {
        uint32_t n = lengths[li];
        for (uint32_t align = 0; align < 3; align++) {
            char *name = buf + align;
            for (uint32_t i = 0; i < n; i++) name[i] = (char)('a' + i % 26);
            ck_assert(berth_name_valid(berth_str_make(name, n)));
            for (uint32_t pos = 0; pos < n; pos++) {
                for (int c = 0; c < 256; c++) {
                    name[pos] = (char)c;
                    bool want = name_byte_reference((unsigned char)c);
                    LOOP_ASSERT(berth_name_valid(berth_str_make(name, n)) == want,
                                "length %u, byte 0x%02x at %u", n, c, pos);
                    /* The one-pass check and hash: the same verdict, and the
                     * hash the hash alone gives. */
                    uint64_t h = 0;
                    LOOP_ASSERT(berth_name_valid_hash(berth_str_make(name, n), &h) == want,
                                "length %u, byte 0x%02x at %u: valid_hash", n, c, pos);
                    LOOP_ASSERT(!want || h == berth_name_hash(berth_str_make(name, n)),
                                "length %u, byte 0x%02x at %u: hash", n, c, pos);
                }
                name[pos] = (char)('a' + pos % 26);
            }
        }
    }
    /* Bytes past the end are not the name's: a bad one there changes nothing. */
    memset(buf, 'a', sizeof buf);
    for (uint32_t n = 1; n <= 40; n++) {
        buf[n] = ' ';
        ck_assert(berth_name_valid(berth_str_make(buf, n)));
        buf[n] = 'a';
    }
}
END_TEST

/* The table hash: a function of the bytes alone (not of where they sit),
 * and the hashes a parse leaves in the command are the names'. */
START_TEST(test_name_hash_and_cmd_hashes) {
    char a[64], b[80];
    for (uint32_t n = 0; n <= 40; n++) {
        for (uint32_t i = 0; i < n; i++) a[i] = (char)('A' + (i * 7) % 26);
        memcpy(b + 5, a, n);
        ck_assert_uint_eq(berth_name_hash(berth_str_make(a, n)), berth_name_hash(berth_str_make(b + 5, n)));
        if (n > 0) {
            b[5 + n - 1] ^= 1;   /* the last byte counts, whatever the length */
            ck_assert_uint_ne(berth_name_hash(berth_str_make(a, n)), berth_name_hash(berth_str_make(b + 5, n)));
        }
    }
    const char *lines[] = {
        "DEPLOY inst-1 MODEL m BACKEND vllm ON w1:0,1 worker-two w3:4",
        "WORKER.ADD node-0042 GPUS 8 VRAM 81920 LABEL zone=a rack=r1",
        "RELEASE inst-1",
        "WORKER.CORDON a-rather-long-worker-name-of-forty-bytes-x",
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        static berth_cmd c;
        static berth_str words[BERTH_ARGS_MAX];
        char err[BERTH_ERR_LEN_MAX];
        ck_assert_int_eq(berth_cmd_parse_text(&c, lines[i], strlen(lines[i]), words, BERTH_ARGS_MAX, err, sizeof err), 0);
        ck_assert_uint_eq(c.name_hash, berth_name_hash(c.name));
        for (uint32_t k = 0; k < c.place_count; k++) {
            ck_assert_uint_eq(c.place[k].worker_hash, berth_name_hash(c.place[k].worker));
        }
    }
}
END_TEST

START_TEST(test_parse_u64) {
    uint64_t v = 7;
    ck_assert(berth_parse_u64(cstr("0"), &v) && v == 0);
    ck_assert(berth_parse_u64(cstr("18446744073709551615"), &v) && v == UINT64_MAX);
    ck_assert(berth_parse_u64(cstr("00042"), &v) && v == 42);
    const char *bad[] = { "", "18446744073709551616", "99999999999999999999", "+1", "-1", " 1", "1 ", "1a", "0x10", "1.0" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(!berth_parse_u64(cstr(bad[i]), &v), "'%s' must not parse", bad[i]);
    }
}
END_TEST

START_TEST(test_str_order) {
    ck_assert_int_lt(berth_str_cmp(cstr("a"), cstr("ab")), 0);
    ck_assert_int_gt(berth_str_cmp(cstr("ab"), cstr("a")), 0);
    ck_assert_int_eq(berth_str_cmp(cstr("ab"), cstr("ab")), 0);
    ck_assert_int_lt(berth_str_cmp(cstr("B"), cstr("a")), 0);   /* memcmp order, not locale */
    ck_assert_int_lt(berth_str_cmp(berth_str_make("", 0), cstr("a")), 0);
    ck_assert(berth_str_eq(cstr("x"), cstr("x")));
    ck_assert(!berth_str_eq(cstr("x"), cstr("X")));
    ck_assert(berth_str_eq_word(cstr("dEpLoY"), "DEPLOY"));
    ck_assert(!berth_str_eq_word(cstr("DEPLOYS"), "DEPLOY"));
    ck_assert(!berth_str_eq_word(cstr("DEPLO"), "DEPLOY"));
}
END_TEST

START_TEST(test_kind_and_code_names) {
    ck_assert_str_eq(berth_cmd_kind_name(BERTH_CMD_NONE), "");
    for (int k = 1; k < BERTH_CMD_KIND_COUNT; k++) {
        const char *name = berth_cmd_kind_name((berth_cmd_kind)k);
        ck_assert_uint_gt(strlen(name), 0);
        ck_assert_int_eq(berth_cmd_kind_lookup(cstr(name)), k);
        char lower[64];
        size_t n = strlen(name);
        ck_assert_uint_lt(n, sizeof lower);
        for (size_t i = 0; i <= n; i++) lower[i] = (char)tolower((unsigned char)name[i]);
        ck_assert_int_eq(berth_cmd_kind_lookup(cstr(lower)), k);
    }
    ck_assert_str_eq(berth_cmd_kind_name(BERTH_CMD_WORKER_ADD), "WORKER.ADD");
    ck_assert_str_eq(berth_cmd_kind_name(BERTH_CMD_POLICY_SET), "POLICY.SET");
    ck_assert_int_eq(berth_cmd_kind_lookup(cstr("FROB")), BERTH_CMD_NONE);
    /* Lookup goes by length first: near misses of every length class. */
    const char *near[] = { "DEPLOX", "DEPLOYY", "RELEAS", "RELEASED", "WORKER.AD", "WORKER.ADDX", "POLICY.SEX",
                           "WORKER.CORDOM", "WORKER.REMOVF", "WORKER.UNCORDOX", "WORKER_ADD", "POLICY_SET",
                           "WORKER.CORDON.", "DEPLOY ", " DEPLOY" };
    for (size_t i = 0; i < sizeof near / sizeof near[0]; i++) {
        ck_assert_msg(berth_cmd_kind_lookup(cstr(near[i])) == BERTH_CMD_NONE, "'%s' is no command", near[i]);
    }
    ck_assert_int_eq(berth_cmd_kind_lookup(cstr("Worker.Uncordon")), BERTH_CMD_WORKER_UNCORDON);
    ck_assert_int_eq(berth_cmd_kind_lookup(cstr("policy.SET")), BERTH_CMD_POLICY_SET);
    ck_assert_int_eq(berth_cmd_kind_lookup(berth_str_make("", 0)), BERTH_CMD_NONE);
    const char *codes[BERTH_CODE_COUNT] = { "OK", "EXISTS", "NOWORKER", "CORDONED", "NOGPU",
                                            "EXCLUSIVE", "GPUBUSY", "NOVRAM", "NOINSTANCE", "BUSY" };
    for (int c = 0; c < BERTH_CODE_COUNT; c++) {
        ck_assert_str_eq(berth_code_name((berth_code)c), codes[c]);
        berth_code back = BERTH_CODE_COUNT;
        ck_assert(berth_code_lookup(cstr(codes[c]), &back));
        ck_assert_int_eq(back, c);
    }
    berth_code unused;
    ck_assert(!berth_code_lookup(cstr("NOPE"), &unused));
}
END_TEST

/* ---- parse errors ------------------------------------------------------- */

/* Every malformed form the contract names, one line each. */
static const char *const bad_lines[] = {
    /* names: empty, bad characters, in every name position */
    "WORKER.ADD  GPUS 1",
    "WORKER.ADD w@1 GPUS 1",
    "WORKER.ADD w=1 GPUS 1",
    "WORKER.ADD w,1 GPUS 1",
    "WORKER.ADD w\xc3\xa9 GPUS 1",
    "WORKER.ADD w\t1 GPUS 1",
    "WORKER.CORDON ",
    "WORKER.CORDON w!",
    "WORKER.UNCORDON w#",
    "WORKER.REMOVE w$",
    "RELEASE i%",
    "RELEASE ",
    "DEPLOY i? MODEL m BACKEND vllm ON w1",
    "DEPLOY  MODEL m BACKEND vllm ON w1",
    "DEPLOY i1 MODEL m* BACKEND vllm ON w1",
    "DEPLOY i1 MODEL  BACKEND vllm ON w1",
    "DEPLOY i1 MODEL m BACKEND vl+lm ON w1",
    "DEPLOY i1 MODEL m BACKEND  ON w1",
    "DEPLOY i1 MODEL m BACKEND vllm ON w~1",
    "DEPLOY i1 MODEL m BACKEND vllm ON w1 ",
    "DEPLOY i1 MODEL m BACKEND vllm ON :0",
    /* GPUS out of 0..64, not a number, missing, twice */
    "WORKER.ADD w1 GPUS 65",
    "WORKER.ADD w1 GPUS 4294967297",
    "WORKER.ADD w1 GPUS 18446744073709551616",
    "WORKER.ADD w1 GPUS -1",
    "WORKER.ADD w1 GPUS +1",
    "WORKER.ADD w1 GPUS 1.5",
    "WORKER.ADD w1 GPUS x",
    "WORKER.ADD w1 GPUS",
    "WORKER.ADD w1",
    "WORKER.ADD w1 VRAM 1024",
    "WORKER.ADD w1 GPUS 1 GPUS 2",
    /* VRAM non-numeric, negative, overflow, beyond the limit */
    "WORKER.ADD w1 GPUS 1 VRAM abc",
    "WORKER.ADD w1 GPUS 1 VRAM 8k",
    "WORKER.ADD w1 GPUS 1 VRAM -5",
    "WORKER.ADD w1 GPUS 1 VRAM 18446744073709551616",
    "WORKER.ADD w1 GPUS 1 VRAM 4294967296",
    "WORKER.ADD w1 GPUS 1 VRAM 16777217",
    "WORKER.ADD w1 GPUS 1 VRAM",
    "DEPLOY i1 MODEL m BACKEND vllm VRAM abc ON w1",
    "DEPLOY i1 MODEL m BACKEND vllm VRAM -1 ON w1",
    "DEPLOY i1 MODEL m BACKEND vllm VRAM 99999999999999999999 ON w1",
    "DEPLOY i1 MODEL m BACKEND vllm VRAM 4294967296 ON w1",
    "DEPLOY i1 MODEL m BACKEND vllm VRAM 16777217 ON w1",
    "DEPLOY i1 MODEL m BACKEND vllm VRAM 0 ON w1",
    /* unknown keywords and commands, extra words */
    "WORKER.ADD w1 GPUS 1 COLOR red",
    "DEPLOY i1 MODEL m BACKEND vllm FOO 1 ON w1",
    "DEPLOY i1 MODEL m BACKEND vllm REPLICAS 2 ON w1",
    "WORKER.CORDON w1 NOW",
    "WORKER.REMOVE w1 w2",
    "RELEASE i1 i2",
    "FROB w1",
    "WORKER.LIST",
    "",
    /* DEPLOY without its parts */
    "DEPLOY i1 MODEL m BACKEND vllm",
    "DEPLOY i1 MODEL m BACKEND vllm w1",
    "DEPLOY i1 MODEL m BACKEND vllm ON",
    "DEPLOY i1 MODEL m BACKEND vllm ON REQID r1",
    "DEPLOY i1 BACKEND vllm ON w1",
    "DEPLOY i1 MODEL m ON w1",
    "DEPLOY i1 MODEL m MODEL n BACKEND vllm ON w1",
    "DEPLOY i1",
    "DEPLOY",
    /* a worker listed twice */
    "DEPLOY i1 MODEL m BACKEND vllm ON w1 w1",
    "DEPLOY i1 MODEL m BACKEND vllm ON w1:0 w1:1",
    "DEPLOY i1 MODEL m BACKEND vllm ON w1 w2 w1:3",
    /* a GPU listed twice */
    "DEPLOY i1 MODEL m BACKEND vllm ON w1:0,0",
    "DEPLOY i1 MODEL m BACKEND vllm ON w1:1,0,1",
    "DEPLOY i1 MODEL m BACKEND vllm ON w1 w2:7,7",
    /* GPU index beyond 63, malformed lists */
    "DEPLOY i1 MODEL m BACKEND vllm ON w1:64",
    "DEPLOY i1 MODEL m BACKEND vllm ON w1:0,100",
    "DEPLOY i1 MODEL m BACKEND vllm ON w1:18446744073709551616",
    "DEPLOY i1 MODEL m BACKEND vllm ON w1:0,",
    "DEPLOY i1 MODEL m BACKEND vllm ON w1:,0",
    "DEPLOY i1 MODEL m BACKEND vllm ON w1:0,,1",
    /* labels: no '=', empty key or value, duplicate key */
    "WORKER.ADD w1 GPUS 1 LABEL zone",
    "WORKER.ADD w1 GPUS 1 LABEL",
    "WORKER.ADD w1 GPUS 1 LABEL =a",
    "WORKER.ADD w1 GPUS 1 LABEL a=",
    "WORKER.ADD w1 GPUS 1 LABEL a=b=c",
    "WORKER.ADD w1 GPUS 1 LABEL a@=b",
    "WORKER.ADD w1 GPUS 1 LABEL a=1 a=2",
    "WORKER.ADD w1 GPUS 1 LABEL a=1 LABEL a=1",
    "WORKER.ADD w1 GPUS 1 LABEL a=1 b=2 LABEL a=3",
    "WORKER.ADD w1 GPUS 1 LABEL zone=a rack",
    /* POLICY.SET without EXCLUSIVE, or with a broken list */
    "POLICY.SET vllm",
    "POLICY.SET",
    "POLICY.SET INCLUSIVE vllm",
    "POLICY.SET EXCLUSIVE vllm,vllm",
    "POLICY.SET EXCLUSIVE vllm,,sglang",
    "POLICY.SET EXCLUSIVE vllm@",
    /* REQID without a valid id */
    "RELEASE i1 REQID",
    "RELEASE i1 REQID r!",
    "RELEASE i1 REQID ",
    "WORKER.ADD w1 GPUS 1 REQID",
};

START_TEST(test_parse_errors) {
    parsed *p = parsed_new();
    for (size_t i = 0; i < sizeof bad_lines / sizeof bad_lines[0]; i++) {
        expect_parse_err(p, bad_lines[i]);
    }
    char err[BERTH_ERR_LEN_MAX];
    berth_cmd cmd;
    ck_assert_int_eq(berth_cmd_parse(&cmd, 0, p->words, err, sizeof err), -1);
    ck_assert(strncmp(err, "ERR ", 4) == 0);
    free(p);
}
END_TEST

/* form with its one "%s" replaced by name. */
static void fill_form(char *line, size_t size, const char *form, const char *name) {
    const char *at = strstr(form, "%s");
    ck_assert_ptr_nonnull(at);
    size_t head = (size_t)(at - form);
    size_t nlen = strlen(name);
    size_t tail = strlen(at + 2);
    ck_assert_uint_lt(head + nlen + tail, size);
    memcpy(line, form, head);
    memcpy(line + head, name, nlen);
    memcpy(line + head + nlen, at + 2, tail + 1);
}

/* Each name position accepts 128 bytes and refuses 129. */
START_TEST(test_parse_name_lengths) {
    static const char *const forms[] = {
        "WORKER.ADD %s GPUS 1",
        "WORKER.CORDON %s",
        "WORKER.UNCORDON %s",
        "WORKER.REMOVE %s",
        "RELEASE %s",
        "DEPLOY %s MODEL m BACKEND vllm ON w1",
        "DEPLOY i1 MODEL %s BACKEND vllm ON w1",
        "DEPLOY i1 MODEL m BACKEND %s ON w1",
        "DEPLOY i1 MODEL m BACKEND vllm ON %s",
        "DEPLOY i1 MODEL m BACKEND vllm ON w0 %s:1",
        "WORKER.ADD w1 GPUS 1 LABEL %s=v",
        "WORKER.ADD w1 GPUS 1 LABEL k=%s",
        "POLICY.SET EXCLUSIVE vllm,%s",
        "RELEASE i1 REQID %s",
    };
    parsed *p = parsed_new();
    char name[BERTH_NAME_LEN_MAX + 2];
    char line[1024];
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        make_name(name, BERTH_NAME_LEN_MAX);
        fill_form(line, sizeof line, forms[i], name);
        expect_parse_ok(p, line);
        make_name(name, BERTH_NAME_LEN_MAX + 1);
        fill_form(line, sizeof line, forms[i], name);
        expect_parse_err(p, line);
    }
    free(p);
}
END_TEST

/* Bounded lists: 32 labels, 64 workers, 64 GPUs pass; one more fails. */
START_TEST(test_parse_list_limits) {
    parsed *p = parsed_new();
    char *line = malloc(big_text_size_max);
    ck_assert_ptr_nonnull(line);
    for (int extra = 0; extra <= 1; extra++) {
        int n = snprintf(line, big_text_size_max, "WORKER.ADD w1 GPUS 1 LABEL");
        for (int i = 0; i < BERTH_LABELS_MAX + extra; i++) {
            n += snprintf(line + n, (size_t)(big_text_size_max - n), " k%02d=v", i);
        }
        ck_assert_int_eq(parse_line(p, line), extra ? -1 : 0);
        if (!extra) ck_assert_uint_eq(p->cmd.label_count, BERTH_LABELS_MAX);

        n = snprintf(line, big_text_size_max, "DEPLOY i1 MODEL m BACKEND vllm ON");
        for (int i = 0; i < BERTH_PLACEMENT_WORKERS_MAX + extra; i++) {
            n += snprintf(line + n, (size_t)(big_text_size_max - n), " w%03d", i);
        }
        ck_assert_int_eq(parse_line(p, line), extra ? -1 : 0);
        if (!extra) ck_assert_uint_eq(p->cmd.place_count, BERTH_PLACEMENT_WORKERS_MAX);

        n = snprintf(line, big_text_size_max, "POLICY.SET EXCLUSIVE");
        for (int i = 0; i < BERTH_POLICY_BACKENDS_MAX + extra; i++) {
            n += snprintf(line + n, (size_t)(big_text_size_max - n), "%sb%02d", i ? "," : " ", i);
        }
        ck_assert_int_eq(parse_line(p, line), extra ? -1 : 0);
        if (!extra) ck_assert_uint_eq(p->cmd.backend_count, BERTH_POLICY_BACKENDS_MAX);
    }
    int n = snprintf(line, big_text_size_max, "DEPLOY i1 MODEL m BACKEND vllm ON w1:0");
    for (int g = 1; g < BERTH_GPUS_MAX; g++) n += snprintf(line + n, (size_t)(big_text_size_max - n), ",%d", g);
    expect_parse_ok(p, line);
    ck_assert(p->cmd.place[0].gpu_mask == UINT64_MAX);
    /* More words than BERTH_ARGS_MAX is refused before anything else. */
    n = snprintf(line, big_text_size_max, "WORKER.ADD w1 GPUS 1 LABEL");
    for (int i = 0; i < BERTH_ARGS_MAX; i++) n += snprintf(line + n, (size_t)(big_text_size_max - n), " k%d=v", i);
    expect_parse_err(p, line);
    free(line);
    free(p);
}
END_TEST

START_TEST(test_parse_fields) {
    parsed *p = parsed_new();
    expect_parse_ok(p, "worker.add gpu-7.rack/2:a GPUS 8 vram 81920 LABEL zone=eu rack=r2 LABEL gen=h100");
    berth_cmd *c = &p->cmd;
    ck_assert_int_eq(c->kind, BERTH_CMD_WORKER_ADD);
    ck_assert(str_is(c->name, "gpu-7.rack/2:a"));
    ck_assert_uint_eq(c->gpu_count, 8);
    ck_assert_uint_eq(c->vram_mib, 81920);
    ck_assert_uint_eq(c->label_count, 3);
    ck_assert(str_is(c->labels[0].key, "gen") && str_is(c->labels[0].value, "h100"));
    ck_assert(str_is(c->labels[1].key, "rack") && str_is(c->labels[1].value, "r2"));
    ck_assert(str_is(c->labels[2].key, "zone") && str_is(c->labels[2].value, "eu"));
    ck_assert_uint_eq(c->reqid.len, 0);

    expect_parse_ok(p, "WORKER.ADD cpu1 GPUS 0");
    ck_assert_uint_eq(c->gpu_count, 0);
    ck_assert_uint_eq(c->vram_mib, 0);
    expect_parse_ok(p, "WORKER.ADD big GPUS 64 VRAM 16777216");
    ck_assert_uint_eq(c->gpu_count, 64);
    ck_assert_uint_eq(c->vram_mib, BERTH_VRAM_MIB_MAX);

    expect_parse_ok(p, "Deploy llama-70b MODEL meta/llama-3-70b BACKEND vllm VRAM 36864 ON w1:3,0 w2 w3:63");
    ck_assert_int_eq(c->kind, BERTH_CMD_DEPLOY);
    ck_assert(str_is(c->name, "llama-70b"));
    ck_assert(str_is(c->model, "meta/llama-3-70b"));
    ck_assert(str_is(c->backend, "vllm"));
    ck_assert_uint_eq(c->claim_mib, 36864);
    ck_assert_uint_eq(c->place_count, 3);
    ck_assert(str_is(c->place[0].worker, "w1") && !c->place[0].all_gpus && c->place[0].gpu_mask == 0x9);
    ck_assert(str_is(c->place[1].worker, "w2") && c->place[1].all_gpus);
    ck_assert(str_is(c->place[2].worker, "w3") && c->place[2].gpu_mask == (1ull << 63));

    expect_parse_ok(p, "DEPLOY i1 MODEL m BACKEND vllm ON w1");
    ck_assert_uint_eq(c->claim_mib, 0);
    ck_assert_uint_eq(c->place_count, 1);

    expect_parse_ok(p, "policy.set exclusive vllm,sglang");
    ck_assert_int_eq(c->kind, BERTH_CMD_POLICY_SET);
    ck_assert_uint_eq(c->backend_count, 2);
    ck_assert(str_is(c->backends[0], "sglang") && str_is(c->backends[1], "vllm"));

    expect_parse_ok(p, "WORKER.CORDON w1");
    ck_assert_int_eq(c->kind, BERTH_CMD_WORKER_CORDON);
    ck_assert(str_is(c->name, "w1"));
    expect_parse_ok(p, "worker.uncordon w1");
    ck_assert_int_eq(c->kind, BERTH_CMD_WORKER_UNCORDON);
    expect_parse_ok(p, "WORKER.REMOVE w1");
    ck_assert_int_eq(c->kind, BERTH_CMD_WORKER_REMOVE);
    expect_parse_ok(p, "release i1");
    ck_assert_int_eq(c->kind, BERTH_CMD_RELEASE);
    ck_assert(str_is(c->name, "i1"));
    free(p);
}
END_TEST

START_TEST(test_parse_reqid) {
    parsed *p = parsed_new();
    expect_parse_ok(p, "DEPLOY i1 MODEL m BACKEND vllm ON w1 w2 REQID req-42");
    ck_assert_uint_eq(p->cmd.place_count, 2);     /* REQID is not a third worker */
    ck_assert(str_is(p->cmd.reqid, "req-42"));
    expect_parse_ok(p, "RELEASE i1 reqid r1");
    ck_assert(str_is(p->cmd.reqid, "r1"));
    ck_assert(str_is(p->cmd.name, "i1"));
    expect_parse_ok(p, "WORKER.ADD w1 GPUS 2 LABEL a=b REQID r2");
    ck_assert_uint_eq(p->cmd.label_count, 1);
    ck_assert(str_is(p->cmd.reqid, "r2"));
    expect_parse_ok(p, "POLICY.SET EXCLUSIVE vllm REQID r3");
    ck_assert_uint_eq(p->cmd.backend_count, 1);
    ck_assert(str_is(p->cmd.reqid, "r3"));
    free(p);
}
END_TEST

/* Worker names the placement syntax cannot name are refused when typed
 * (REQID reads as a request id, a ":<digits>" suffix as GPUs), and still
 * parse as a journal's text, which may hold them from before the rule. */
START_TEST(test_parse_unplaceable_worker) {
    parsed *p = parsed_new();
    static const char *const refused[] = {
        "WORKER.ADD reqid GPUS 0", "WORKER.ADD ReqId GPUS 8", "WORKER.ADD REQID GPUS 1 REQID r",
        "WORKER.ADD host:1 GPUS 0", "WORKER.ADD host:01 GPUS 2", "WORKER.ADD a:b:12 GPUS 1",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        expect_parse_err(p, refused[i]);
        ck_assert_msg(strstr(p->err, "a worker cannot be named") != NULL, "'%s': %s", refused[i], p->err);
    }
    expect_parse_err(p, "WORKER.ADD host:1 GPUS 0");
    ck_assert_msg(strstr(p->err, "reads as GPUs 1 of worker 'host'") != NULL, "%s", p->err);
    static const char *const accepted[] = {
        "WORKER.ADD host: GPUS 0", "WORKER.ADD host:a1 GPUS 1", "WORKER.ADD a:1b GPUS 1",
        "WORKER.ADD 12 GPUS 1", "WORKER.ADD host1 GPUS 1", "WORKER.ADD reqids GPUS 1",
        "WORKER.ADD w GPUS 1 REQID reqid",
    };
    for (size_t i = 0; i < sizeof accepted / sizeof accepted[0]; i++) {
        expect_parse_ok(p, accepted[i]);
    }
    static const char *const journal[] = { "WORKER.ADD reqid GPUS 0", "WORKER.ADD host:1 GPUS 0" };
    for (size_t i = 0; i < sizeof journal / sizeof journal[0]; i++) {
        char err[BERTH_ERR_LEN_MAX] = "";
        berth_cmd cmd;
        ck_assert_msg(berth_cmd_parse_text(&cmd, journal[i], strlen(journal[i]), p->words, BERTH_ARGS_MAX, err,
                                           sizeof err) == 0, "'%s': %s", journal[i], err);
        ck_assert_uint_eq(cmd.kind, BERTH_CMD_WORKER_ADD);
    }
    free(p);
}
END_TEST

/* A typed command ending in a bare REQID (a script's "REQID $id" with $id
 * empty) is refused rather than read as a last worker or a backend, and a
 * backend named REQID is refused as a worker of that name is ("POLICY.SET
 * EXCLUSIVE REQID vllm", meant as two backends, reads as request id vllm
 * and clears the policy). A journal's text is read as it was. */
START_TEST(test_parse_bare_reqid) {
    parsed *p = parsed_new();
    static const char *const no_id[] = {
        "DEPLOY a MODEL m BACKEND vllm ON w1 w2 REQID", "DEPLOY a MODEL m BACKEND vllm ON w1 reqid",
        "POLICY.SET EXCLUSIVE vllm REQID", "WORKER.ADD w GPUS 1 LABEL a=b REQID",
        "DEPLOY a MODEL m BACKEND vllm ON w1 REQID REQID r", "POLICY.SET EXCLUSIVE ReqId",
    };
    for (size_t i = 0; i < sizeof no_id / sizeof no_id[0]; i++) {
        expect_parse_err(p, no_id[i]);
        ck_assert_msg(strstr(p->err, "REQID needs an id") != NULL, "'%s': %s", no_id[i], p->err);
    }
    static const char *const backend[] = {
        "POLICY.SET EXCLUSIVE vllm,reqid", "POLICY.SET EXCLUSIVE reqid vllm REQID r",
        "DEPLOY a MODEL m BACKEND REQID ON w1", "DEPLOY a MODEL m BACKEND reqid ON w1 REQID r",
    };
    for (size_t i = 0; i < sizeof backend / sizeof backend[0]; i++) {
        expect_parse_err(p, backend[i]);
        ck_assert_msg(strstr(p->err, "a backend cannot be named") != NULL, "'%s': %s", backend[i], p->err);
    }
    /* One word after the command's name is not ambiguous; a pair still is a
     * request id, whatever it is called. */
    expect_parse_ok(p, "RELEASE REQID");
    ck_assert(str_is(p->cmd.name, "REQID"));
    expect_parse_ok(p, "WORKER.CORDON reqid");
    expect_parse_ok(p, "RELEASE i1 REQID REQID");
    ck_assert(str_is(p->cmd.reqid, "REQID"));
    expect_parse_ok(p, "POLICY.SET EXCLUSIVE REQID r1");
    ck_assert_uint_eq(p->cmd.backend_count, 0);
    ck_assert(str_is(p->cmd.reqid, "r1"));
    expect_parse_ok(p, "DEPLOY a MODEL m BACKEND vllm ON w1 REQID:0");
    static const char *const journal[] = {
        "DEPLOY a MODEL m BACKEND vllm ON w1 REQID", "POLICY.SET EXCLUSIVE REQID,vllm",
        "DEPLOY a MODEL m BACKEND REQID ON w1",
    };
    for (size_t i = 0; i < sizeof journal / sizeof journal[0]; i++) {
        char err[BERTH_ERR_LEN_MAX] = "";
        berth_cmd cmd;
        ck_assert_msg(berth_cmd_parse_text(&cmd, journal[i], strlen(journal[i]), p->words, BERTH_ARGS_MAX, err,
                                           sizeof err) == 0, "'%s': %s", journal[i], err);
    }
    free(p);
}
END_TEST

/* ---- canonical text ----------------------------------------------------- */

static size_t canonical_of(parsed *p, const char *line, char *buf, size_t size) {
    expect_parse_ok(p, line);
    size_t n = berth_cmd_canonical(&p->cmd, buf, size);
    ck_assert_msg(n > 0 && n < size, "canonical of '%s' did not fit", line);
    buf[n] = '\0';
    ck_assert_msg(strchr(buf, '\0') == buf + n, "canonical text holds a NUL");
    return n;
}

START_TEST(test_canonical_exact) {
    static const char *const pairs[][2] = {
        { "worker.add w1 gpus 8", "WORKER.ADD w1 GPUS 8" },
        { "worker.add w1 gpus 8 vram 81920 label zone=b rack=a", "WORKER.ADD w1 GPUS 8 VRAM 81920 LABEL rack=a zone=b" },
        { "Worker.Add w1 LABEL zone=b GPUS 8 label rack=a VRAM 81920 REQID x",
          "WORKER.ADD w1 GPUS 8 VRAM 81920 LABEL rack=a zone=b" },
        { "worker.cordon w1", "WORKER.CORDON w1" },
        { "worker.uncordon w1", "WORKER.UNCORDON w1" },
        { "worker.remove w1 reqid r", "WORKER.REMOVE w1" },
        { "release Inst-1", "RELEASE Inst-1" },
        { "deploy i1 vram 40960 backend vllm model m on w1:3,0 w2 reqid r9",
          "DEPLOY i1 MODEL m BACKEND vllm VRAM 40960 ON w1:0,3 w2" },
        { "deploy i1 model m backend sglang on w2:7,1,4", "DEPLOY i1 MODEL m BACKEND sglang ON w2:1,4,7" },
        { "policy.set exclusive vllm,sglang", "POLICY.SET EXCLUSIVE sglang,vllm" },
        { "policy.set exclusive vllm", "POLICY.SET EXCLUSIVE vllm" },
    };
    parsed *p = parsed_new();
    char buf[BERTH_COMMAND_LEN_MAX + 1];
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        canonical_of(p, pairs[i][0], buf, sizeof buf);
        ck_assert_str_eq(buf, pairs[i][1]);
    }
    free(p);
}
END_TEST

/* Lines covering every field; parse(canonical(x)) == x for each, and the
 * canonical text is a fixed point. */
static const char *const roundtrip_lines[] = {
    "WORKER.ADD w1 GPUS 0",
    "worker.add node-a.b/c:d GPUS 64 VRAM 16777216 LABEL z=1 a=2 m=3",
    "WORKER.CORDON x", "WORKER.UNCORDON x", "WORKER.REMOVE x", "RELEASE y",
    "DEPLOY i MODEL m BACKEND vllm ON w",
    "deploy i model org/m:v1 backend llama.cpp vram 1 on a:63,0,5 b c:2 reqid q",
    "POLICY.SET EXCLUSIVE c,a,b",
};

START_TEST(test_canonical_roundtrip) {
    parsed *p = parsed_new();
    parsed *q = parsed_new();
    char first[BERTH_COMMAND_LEN_MAX + 1];
    char second[BERTH_COMMAND_LEN_MAX + 1];
    for (size_t i = 0; i < sizeof roundtrip_lines / sizeof roundtrip_lines[0]; i++) {
        size_t n = canonical_of(p, roundtrip_lines[i], first, sizeof first);
        char err[BERTH_ERR_LEN_MAX];
        int rc = berth_cmd_parse_text(&q->cmd, first, n, q->words, BERTH_ARGS_MAX, err, sizeof err);
        ck_assert_msg(rc == 0, "canonical '%s' does not parse: %s", first, err);
        ck_assert_msg(cmd_same(&p->cmd, &q->cmd), "parse(canonical('%s')) differs", roundtrip_lines[i]);
        ck_assert_uint_eq(q->cmd.reqid.len, 0);
        size_t m = berth_cmd_canonical(&q->cmd, second, sizeof second);
        ck_assert_uint_eq(m, n);
        second[m] = '\0';
        ck_assert_str_eq(first, second);
        /* Keywords upper-case: the first word is a canonical kind name. */
        ck_assert_int_ne(berth_cmd_kind_lookup(q->words[0]), BERTH_CMD_NONE);
        ck_assert(strncmp(first, berth_cmd_kind_name(q->cmd.kind), strlen(berth_cmd_kind_name(q->cmd.kind))) == 0);
        ck_assert_msg(strstr(first, "REQID") == NULL && strstr(first, "reqid") == NULL, "REQID in '%s'", first);
        ck_assert_msg(strstr(first, "  ") == NULL, "double space in '%s'", first);
    }
    free(p);
    free(q);
}
END_TEST

START_TEST(test_canonical_spellings_equal) {
    static const char *const groups[][3] = {
        { "WORKER.ADD w1 GPUS 4 VRAM 1024 LABEL b=2 a=1", "worker.add w1 vram 1024 label a=1 label b=2 gpus 4",
          "WORKER.ADD w1 GPUS 4 LABEL b=2 LABEL a=1 VRAM 1024 REQID zz" },
        { "DEPLOY i1 MODEL m BACKEND vllm ON w1:2,1,0 w2:5", "deploy i1 backend vllm model m on w1:0,1,2 w2:5",
          "DEPLOY i1 MODEL m BACKEND vllm ON w1:1,2,0 w2:5 REQID r" },
        { "POLICY.SET EXCLUSIVE vllm,sglang", "policy.set exclusive sglang,vllm", "POLICY.SET EXCLUSIVE sglang vllm" },
    };
    parsed *p = parsed_new();
    char a[BERTH_COMMAND_LEN_MAX + 1];
    char b[BERTH_COMMAND_LEN_MAX + 1];
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) {
        canonical_of(p, groups[i][0], a, sizeof a);
        for (size_t j = 1; j < 3; j++) {
            canonical_of(p, groups[i][j], b, sizeof b);
            ck_assert_str_eq(a, b);
        }
    }
    /* Names keep their case: W1 and w1 are different workers. */
    canonical_of(p, "WORKER.CORDON W1", a, sizeof a);
    canonical_of(p, "WORKER.CORDON w1", b, sizeof b);
    ck_assert_str_ne(a, b);
    free(p);
}
END_TEST

/* berth_cmd_is_canonical(parse(x), x) is exactly "canonical(parse(x)) == x"
 * (verify's check of every record, review hV6), on lines berthd writes and
 * on every other spelling the parser admits. */
static void expect_is_canonical(parsed *p, const char *line, bool want) {
    expect_parse_ok(p, line);
    char buf[BERTH_COMMAND_LEN_MAX];
    size_t n = berth_cmd_canonical(&p->cmd, buf, sizeof buf);
    size_t len = strlen(line);
    bool round_trip = n == len && memcmp(buf, line, len) == 0;
    ck_assert_msg(round_trip == want, "'%s': canonical is '%.*s'", line, (int)n, buf);
    ck_assert_msg(berth_cmd_is_canonical(&p->cmd, line, len) == want, "'%s': is_canonical says %d", line, !want);
    /* a prefix and a longer text are not it either */
    ck_assert(!berth_cmd_is_canonical(&p->cmd, buf, n - 1));
    buf[n] = ' ';
    ck_assert(!berth_cmd_is_canonical(&p->cmd, buf, n + 1));
    ck_assert(berth_cmd_is_canonical(&p->cmd, buf, n));
}

START_TEST(test_is_canonical) {
    static const char *const canonical[] = {
        "WORKER.ADD w1 GPUS 0", "WORKER.ADD w1 GPUS 64 VRAM 16777216 LABEL a=2 m=3 z=1",
        "WORKER.CORDON x", "WORKER.UNCORDON x", "WORKER.REMOVE x", "RELEASE y", "RELEASE REQID",
        "DEPLOY i MODEL m BACKEND vllm ON w", "DEPLOY i MODEL m BACKEND b VRAM 1 ON a:0,5,63 b c:2",
        "DEPLOY i MODEL m BACKEND b ON x:5:1", "POLICY.SET EXCLUSIVE", "POLICY.SET EXCLUSIVE a,b,c",
        "POLICY.SET EXCLUSIVE REQIDS,x",
    };
    static const char *const other[] = {
        "release x", "Release x", "RELEASE a REQID junk", "RELEASE a reqid junk",
        "WORKER.ADD w GPUS 08", "WORKER.ADD w VRAM 8 GPUS 1", "WORKER.ADD w GPUS 1 LABEL b=1 a=2",
        "WORKER.ADD w GPUS 1 LABEL a=1 LABEL b=2", "WORKER.ADD w GPUS 1 label a=1",
        "DEPLOY a MODEL m BACKEND b ON w:3,1", "DEPLOY a MODEL m BACKEND b ON w:01",
        "DEPLOY a MODEL m BACKEND b ON w:1,007", "DEPLOY a BACKEND b MODEL m ON w",
        "DEPLOY a MODEL m BACKEND b on w", "DEPLOY a MODEL m VRAM 5 BACKEND b ON w",
        "DEPLOY a MODEL m BACKEND b VRAM 05 ON w", "POLICY.SET EXCLUSIVE b,a", "POLICY.SET EXCLUSIVE a b",
        "POLICY.SET exclusive a", "POLICY.SET EXCLUSIVE a,b REQID r",
    };
    parsed *p = parsed_new();
    for (size_t i = 0; i < sizeof canonical / sizeof canonical[0]; i++) expect_is_canonical(p, canonical[i], true);
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) expect_is_canonical(p, other[i], false);
    for (size_t i = 0; i < sizeof roundtrip_lines / sizeof roundtrip_lines[0]; i++) {
        expect_parse_ok(p, roundtrip_lines[i]);
        char buf[BERTH_COMMAND_LEN_MAX + 1];
        size_t n = berth_cmd_canonical(&p->cmd, buf, sizeof buf);
        buf[n] = '\0';
        expect_is_canonical(p, buf, true);
    }
    free(p);
}
END_TEST

START_TEST(test_canonical_small_buffer) {
    parsed *p = parsed_new();
    expect_parse_ok(p, "WORKER.ADD w1 GPUS 8");
    char buf[64];
    size_t full = berth_cmd_canonical(&p->cmd, buf, sizeof buf);
    ck_assert_uint_eq(full, strlen("WORKER.ADD w1 GPUS 8"));
    ck_assert_uint_eq(berth_cmd_canonical(&p->cmd, buf, full - 1), 0);
    ck_assert_uint_eq(berth_cmd_canonical(&p->cmd, buf, full), full);
    /* A big command (64 workers x 64 GPUs) still fits. */
    char *line = malloc(big_text_size_max);
    ck_assert_ptr_nonnull(line);
    int n = snprintf(line, big_text_size_max, "DEPLOY i1 MODEL m BACKEND vllm VRAM 16777216 ON");
    for (int w = 0; w < BERTH_PLACEMENT_WORKERS_MAX; w++) {
        n += snprintf(line + n, (size_t)(big_text_size_max - n), " w%02d", w);
        for (int g = 0; g < BERTH_GPUS_MAX; g++) n += snprintf(line + n, (size_t)(big_text_size_max - n), "%c%d", g ? ',' : ':', g);
    }
    expect_parse_ok(p, line);
    char *big = malloc(BERTH_COMMAND_LEN_MAX);
    ck_assert_ptr_nonnull(big);
    ck_assert_uint_gt(berth_cmd_canonical(&p->cmd, big, BERTH_COMMAND_LEN_MAX), 0);
    free(big);
    free(line);
    free(p);
}
END_TEST

/* The header promises a BERTH_COMMAND_LEN_MAX buffer always fits a parsed
 * command: try the largest one the parser can accept (every name 128 bytes,
 * 64 workers with all 64 GPUs listed, 32 labels of 128-byte keys and values). */
START_TEST(test_canonical_always_fits) {
    parsed *p = parsed_new();
    char *line = malloc(big_text_size_max);
    char *buf = malloc(BERTH_COMMAND_LEN_MAX);
    ck_assert(line && buf);
    char name[BERTH_NAME_LEN_MAX + 1];
    make_name(name, BERTH_NAME_LEN_MAX);
    int n = snprintf(line, big_text_size_max, "DEPLOY %s MODEL %s BACKEND %s VRAM 16777216 ON", name, name, name);
    for (int w = 0; w < BERTH_PLACEMENT_WORKERS_MAX; w++) {
        n += snprintf(line + n, (size_t)(big_text_size_max - n), " %.*s%03d", BERTH_NAME_LEN_MAX - 3, name, w);
        for (int g = 0; g < BERTH_GPUS_MAX; g++) n += snprintf(line + n, (size_t)(big_text_size_max - n), "%c%d", g ? ',' : ':', g);
    }
    n += snprintf(line + n, (size_t)(big_text_size_max - n), " REQID %s", name);
    ck_assert_int_lt(n, big_text_size_max - 1);
    if (parse_line(p, line) == 0) {
        ck_assert_msg(berth_cmd_canonical(&p->cmd, buf, BERTH_COMMAND_LEN_MAX) > 0,
                      "a parsed DEPLOY's canonical text does not fit BERTH_COMMAND_LEN_MAX");
    }
    n = snprintf(line, big_text_size_max, "WORKER.ADD %s GPUS 64 VRAM 16777216 LABEL", name);
    for (int i = 0; i < BERTH_LABELS_MAX; i++) {
        n += snprintf(line + n, (size_t)(big_text_size_max - n), " %.*s%03d=%s", BERTH_NAME_LEN_MAX - 3, name, i, name);
    }
    if (parse_line(p, line) == 0) {
        ck_assert_msg(berth_cmd_canonical(&p->cmd, buf, BERTH_COMMAND_LEN_MAX) > 0,
                      "a parsed WORKER.ADD's canonical text does not fit BERTH_COMMAND_LEN_MAX");
    }
    free(buf);
    free(line);
    free(p);
}
END_TEST

/* At the limit exactly: a DEPLOY whose canonical text is BERTH_COMMAND_LEN_MAX
 * bytes parses (even typed longer, with a REQID), one GPU more is refused. */
START_TEST(test_canonical_limit_exact) {
    parsed *p = parsed_new();
    char *line = malloc(big_text_size_max);
    char *buf = malloc(BERTH_COMMAND_LEN_MAX);
    ck_assert(line && buf);
    char name[BERTH_NAME_LEN_MAX + 1];
    make_name(name, BERTH_NAME_LEN_MAX);
    int n = snprintf(line, big_text_size_max, "DEPLOY i MODEL m BACKEND b ON");
    int w = 0;
    for (; w < BERTH_PLACEMENT_WORKERS_MAX && n < BERTH_COMMAND_LEN_MAX; w++) {
        int before = n;
        n += snprintf(line + n, (size_t)(big_text_size_max - n), " %.*s%03d", BERTH_NAME_LEN_MAX - 3, name, w);
        if (n > BERTH_COMMAND_LEN_MAX) {   /* the worker name does not fit: drop it */
            n = before;
            line[n] = '\0';
            break;
        }
        for (int g = 0; g < BERTH_GPUS_MAX; g++) {
            char gpu[8];
            int gl = snprintf(gpu, sizeof gpu, "%c%d", g ? ',' : ':', g);
            if (n + gl > BERTH_COMMAND_LEN_MAX) break;
            memcpy(line + n, gpu, (size_t)gl + 1);
            n += gl;
        }
    }
    ck_assert_int_ge(n, BERTH_COMMAND_LEN_MAX - 4);   /* within one GPU index of the limit */
    int canonical_len = n;
    n += snprintf(line + n, (size_t)(big_text_size_max - n), " REQID %s", name);
    expect_parse_ok(p, line);
    ck_assert_uint_eq(berth_cmd_canonical(&p->cmd, buf, BERTH_COMMAND_LEN_MAX), (size_t)canonical_len);
    ck_assert(memcmp(buf, line, (size_t)canonical_len) == 0);
    /* one more worker pushes the canonical text over: a syntax error */
    line[canonical_len] = '\0';
    snprintf(line + canonical_len, (size_t)(big_text_size_max - canonical_len), " zz:0");
    expect_parse_err(p, line);
    free(buf);
    free(line);
    free(p);
}
END_TEST

START_TEST(test_split) {
    berth_str w[4];
    const char *t = "RELEASE i1";
    ck_assert_uint_eq(berth_cmd_split(t, strlen(t), w, 4), 2);
    ck_assert(str_is(w[0], "RELEASE") && str_is(w[1], "i1"));
    ck_assert_uint_eq(berth_cmd_split("", 0, w, 4), 0);
    t = "a b c d e";
    ck_assert_uint_eq(berth_cmd_split(t, strlen(t), w, 4), 0);
    ck_assert_uint_eq(berth_cmd_split(t, 7, w, 4), 4);   /* "a b c d" */
    ck_assert(str_is(w[3], "d"));
    char err[BERTH_ERR_LEN_MAX];
    berth_cmd cmd;
    ck_assert_int_eq(berth_cmd_parse_text(&cmd, "", 0, w, 4, err, sizeof err), -1);
    ck_assert(strncmp(err, "ERR ", 4) == 0);
}
END_TEST

/* Split against the obvious byte loop: texts of spaces and letters of every
 * length to 80 (so every position of a space within and across the sixteen-
 * byte blocks, and the overlapping last block, is seen), at every words_max
 * that matters. */
static size_t split_reference(const char *t, size_t len, berth_str *w, size_t max) {
    if (len == 0) return 0;
    size_t n = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && t[i] != ' ') continue;
        if (n == max) return 0;
        w[n++] = berth_str_make(t + start, i - start);
        start = i + 1;
    }
    return n;
}

START_TEST(test_split_every_position) {
    uint64_t x = 0x9e3779b97f4a7c15ull;
    char buf[96];
    berth_str got[100], want[100];
    for (int round = 0; round < 20000; round++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        size_t len = (size_t)(x % 81);
        for (size_t i = 0; i < len; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            buf[i] = (x % 5 == 0) ? ' ' : (char)('a' + x % 26);
        }
        size_t max = (size_t)(round % 3 == 0 ? 100 : x % 30);
        size_t n = berth_cmd_split(buf, len, got, max);
        size_t want_n = split_reference(buf, len, want, max);
        LOOP_ASSERT(n == want_n, "round %d: %zu words, want %zu", round, n, want_n);
        for (size_t i = 0; i < n; i++) {
            LOOP_ASSERT(got[i].ptr == want[i].ptr && got[i].len == want[i].len, "round %d word %zu", round, i);
        }
    }
}
END_TEST

/* Exact error texts of the paths parse takes by hand rather than through
 * the general helpers (GPU lists of one and two digits, the backward scan
 * for a placement's list, names checked and hashed at once), recorded from
 * the parser before those paths were written: same input, same words. */
static const struct {
    const char *line;
    const char *err;   /* NULL: parses */
} parse_err_texts[] = {
    { "DEPLOY i1 MODEL m BACKEND b ON w:", NULL },
    { "DEPLOY i1 MODEL m BACKEND b ON w:1a", NULL },
    { "DEPLOY i1 MODEL m BACKEND b ON w:,1", "ERR DEPLOY: bad GPU list in 'w:,1'" },
    { "DEPLOY i1 MODEL m BACKEND b ON w:1,", "ERR DEPLOY: bad GPU list in 'w:1,'" },
    { "DEPLOY i1 MODEL m BACKEND b ON w:1,,2", "ERR DEPLOY: bad GPU list in 'w:1,,2'" },
    { "DEPLOY i1 MODEL m BACKEND b ON w:64", "ERR DEPLOY: GPU index 64 in 'w:64' is beyond 63" },
    { "DEPLOY i1 MODEL m BACKEND b ON w:99", "ERR DEPLOY: GPU index 99 in 'w:99' is beyond 63" },
    { "DEPLOY i1 MODEL m BACKEND b ON w:064", "ERR DEPLOY: GPU index 64 in 'w:064' is beyond 63" },
    { "DEPLOY i1 MODEL m BACKEND b ON w:3,03", "ERR DEPLOY: GPU 3 listed twice in 'w:3,03'" },
    /* The list is read backwards once; the first fault from the left is still the one named. */
    { "DEPLOY i1 MODEL m BACKEND b ON w:64,1,1", "ERR DEPLOY: GPU index 64 in 'w:64,1,1' is beyond 63" },
    { "DEPLOY i1 MODEL m BACKEND b ON w:1,1,64", "ERR DEPLOY: GPU 1 listed twice in 'w:1,1,64'" },
    { "DEPLOY i1 MODEL m BACKEND b ON w:1,,1", "ERR DEPLOY: bad GPU list in 'w:1,,1'" },
    { "DEPLOY i1 MODEL m BACKEND b ON w:100,2,2", "ERR DEPLOY: GPU index 100 in 'w:100,2,2' is beyond 63" },
    { "DEPLOY i1 MODEL m BACKEND b ON w:18446744073709551615",
      "ERR DEPLOY: GPU index 18446744073709551615 in 'w:18446744073709551615' is beyond 63" },
    { "DEPLOY i1 MODEL m BACKEND b ON w:18446744073709551616",
      "ERR DEPLOY: bad GPU list in 'w:18446744073709551616'" },
    { "DEPLOY i1 MODEL m BACKEND b ON :1",
      "ERR DEPLOY: invalid worker name '': names are 1-128 bytes of [A-Za-z0-9._:/-]" },
    { "DEPLOY i1 MODEL m BACKEND b ON w@x:1",
      "ERR DEPLOY: invalid worker name 'w@x': names are 1-128 bytes of [A-Za-z0-9._:/-]" },
    { "DEPLOY i1 MODEL m BACKEND b ON a:b:1 a:b:2", "ERR DEPLOY: worker 'a:b' listed twice" },
    { "DEPLOY i1 MODEL m BACKEND b ON a:b a:b:2", "ERR DEPLOY: worker 'a:b' listed twice" },
    { "DEPLOY i1 MODEL m BACKEND b ON w1 w2 w1:0", "ERR DEPLOY: worker 'w1' listed twice" },
    { "DEPLOY i@1 MODEL m BACKEND b ON w",
      "ERR DEPLOY: invalid instance name 'i@1': names are 1-128 bytes of [A-Za-z0-9._:/-]" },
    { "DEPLOY i1 MODEL m@ BACKEND b ON w",
      "ERR DEPLOY: invalid model name 'm@': names are 1-128 bytes of [A-Za-z0-9._:/-]" },
    { "DEPLOY i1 MODEL m BACKEND b  ON w", "ERR DEPLOY: unexpected word ''" },
    { "DEPLOY i1 MODEL m BACKEND b ON w1  w2",
      "ERR DEPLOY: invalid worker name '': names are 1-128 bytes of [A-Za-z0-9._:/-]" },
    { "DEPLOY i1 MODEL m BACKEND b ON w1 ",
      "ERR DEPLOY: invalid worker name '': names are 1-128 bytes of [A-Za-z0-9._:/-]" },
    { "deploy i1 model m backend b on w1 REQID r@",
      "ERR DEPLOY: invalid request id 'r@': ids are 1-128 bytes of [A-Za-z0-9._:/-]" },
    { "RELEASE ", "ERR RELEASE: invalid instance name '': names are 1-128 bytes of [A-Za-z0-9._:/-]" },
    { "RELEASE \xff", "ERR RELEASE: invalid instance name '?': names are 1-128 bytes of [A-Za-z0-9._:/-]" },
    { "WORKER.ADD w GPUS 65", "ERR WORKER.ADD: GPUS must be an integer from 0 to 64, got '65'" },
    { "WORKER.ADD w GPUS 8 VRAM 0",
      "ERR WORKER.ADD: VRAM (MiB per GPU) must be an integer from 1 to 16777216, got '0'" },
    { "WORKER.CORDON aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
      "ERR WORKER.CORDON: invalid worker name 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa..': "
      "names are 1-128 bytes of [A-Za-z0-9._:/-]" },
    { "POLICY.SET EXCLUSIVE vllm,,x", "ERR POLICY.SET: invalid backend name ''" },
};

START_TEST(test_parse_error_texts) {
    static berth_cmd c;
    static berth_str words[BERTH_ARGS_MAX];
    for (size_t i = 0; i < sizeof parse_err_texts / sizeof parse_err_texts[0]; i++) {
        const char *line = parse_err_texts[i].line;
        char err[BERTH_ERR_LEN_MAX] = "";
        int rc = berth_cmd_parse_text(&c, line, strlen(line), words, BERTH_ARGS_MAX, err, sizeof err);
        if (parse_err_texts[i].err == NULL) {
            ck_assert_msg(rc == 0, "'%s' should parse, got: %s", line, err);
        } else {
            ck_assert_msg(rc == -1, "'%s' should not parse", line);
            ck_assert_str_eq(err, parse_err_texts[i].err);
        }
    }
    ck_assert_int_eq(berth_cmd_parse_text(&c, "DEPLOY i1 MODEL m BACKEND b ON a:b:0,07,63", 42, words,
                                          BERTH_ARGS_MAX, NULL, 0), 0);
    ck_assert(str_is(c.place[0].worker, "a:b") && !c.place[0].all_gpus);
    ck_assert_uint_eq(c.place[0].gpu_mask, 1ull | 1ull << 7 | 1ull << 63);
    /* Lists berthd would not write (three digits, out of order) read to the same GPUs. */
    static const char line[] = "DEPLOY i1 MODEL m BACKEND b ON w:007,9,5 x:63,0 node-42 y:1,10,11";
    ck_assert_int_eq(berth_cmd_parse_text(&c, line, sizeof line - 1, words, BERTH_ARGS_MAX, NULL, 0), 0);
    ck_assert_uint_eq(c.place_count, 4);
    ck_assert(str_is(c.place[0].worker, "w") && c.place[0].gpu_mask == (1ull << 5 | 1ull << 7 | 1ull << 9));
    ck_assert(str_is(c.place[1].worker, "x") && c.place[1].gpu_mask == (1ull | 1ull << 63));
    ck_assert(str_is(c.place[2].worker, "node-42") && c.place[2].all_gpus);
    ck_assert(str_is(c.place[3].worker, "y") && c.place[3].gpu_mask == (1ull << 1 | 1ull << 10 | 1ull << 11));
}
END_TEST

/* Seeded random commands, written out canonically by this test (not by
 * berth_cmd_canonical), parsed back: every field, every hash and the text
 * berth prints again must be what was generated. Names take every byte of
 * the charset and lengths 1..128, so the name checks, the hashes and the
 * split meet every block edge. */
typedef struct gen {
    uint64_t x;
    char text[BERTH_COMMAND_LEN_MAX];
    size_t len;
} gen;

static uint64_t gen_next(gen *g) {
    g->x ^= g->x << 13;
    g->x ^= g->x >> 7;
    g->x ^= g->x << 17;
    return g->x;
}

static void gen_put(gen *g, const char *s, size_t n) {
    LOOP_ASSERT(g->len + n <= sizeof g->text, "generated text of %zu bytes", g->len + n);
    memcpy(g->text + g->len, s, n);
    g->len += n;
}

/* A name: a two-letter prefix that orders it (rank), a random body, and a
 * last byte that is a letter, so a worker's name never reads as a GPU list. */
static berth_str gen_name(gen *g, uint32_t rank) {
    static const char charset[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:/-";
    uint32_t len = gen_next(g) % 8 == 0 ? 3 + (uint32_t)(gen_next(g) % (BERTH_NAME_LEN_MAX - 2))
                                        : 3 + (uint32_t)(gen_next(g) % 20);
    const char *at = g->text + g->len;
    char c[2] = { (char)('a' + rank / 26), (char)('a' + rank % 26) };
    gen_put(g, c, 2);
    for (uint32_t i = 2; i + 1 < len; i++) gen_put(g, &charset[gen_next(g) % (sizeof charset - 1)], 1);
    c[0] = (char)('a' + gen_next(g) % 26);
    gen_put(g, c, 1);
    return berth_str_make(at, len);
}

static void gen_cstr(gen *g, const char *s) { gen_put(g, s, strlen(s)); }
static void gen_u64(gen *g, uint64_t v) {
    char d[24];
    gen_put(g, d, (size_t)snprintf(d, sizeof d, "%llu", (unsigned long long)v));
}

START_TEST(test_parse_random_roundtrip) {
    static gen g;
    static berth_cmd want, got;
    static berth_str words[BERTH_ARGS_MAX];
    static char again[BERTH_COMMAND_LEN_MAX];
    g.x = 0x2545f4914f6cdd1dull;
    static const berth_cmd_kind kinds[] = { BERTH_CMD_WORKER_ADD, BERTH_CMD_WORKER_CORDON, BERTH_CMD_WORKER_UNCORDON,
                                            BERTH_CMD_WORKER_REMOVE, BERTH_CMD_DEPLOY, BERTH_CMD_RELEASE,
                                            BERTH_CMD_POLICY_SET };
    for (int round = 0; round < 20000; round++) {
        memset(&want, 0, sizeof want);
        g.len = 0;
        want.kind = kinds[gen_next(&g) % (sizeof kinds / sizeof kinds[0])];
        gen_cstr(&g, berth_cmd_kind_name(want.kind));
        switch (want.kind) {
        case BERTH_CMD_WORKER_ADD:
            gen_cstr(&g, " ");
            want.name = gen_name(&g, 0);
            want.gpu_count = (uint32_t)(gen_next(&g) % (BERTH_GPUS_MAX + 1));
            gen_cstr(&g, " GPUS ");
            gen_u64(&g, want.gpu_count);
            if (gen_next(&g) % 2) {
                want.vram_mib = 1 + (uint32_t)(gen_next(&g) % BERTH_VRAM_MIB_MAX);
                gen_cstr(&g, " VRAM ");
                gen_u64(&g, want.vram_mib);
            }
            want.label_count = (uint32_t)(gen_next(&g) % 4);
            if (want.label_count) gen_cstr(&g, " LABEL");
            for (uint32_t i = 0; i < want.label_count; i++) {
                gen_cstr(&g, " ");
                want.labels[i].key = gen_name(&g, i);
                gen_cstr(&g, "=");
                want.labels[i].value = gen_name(&g, 0);
            }
            break;
        case BERTH_CMD_DEPLOY:
            gen_cstr(&g, " ");
            want.name = gen_name(&g, 0);
            gen_cstr(&g, " MODEL ");
            want.model = gen_name(&g, 0);
            gen_cstr(&g, " BACKEND ");
            want.backend = gen_name(&g, 0);
            if (gen_next(&g) % 2) {
                want.claim_mib = 1 + (uint32_t)(gen_next(&g) % BERTH_VRAM_MIB_MAX);
                gen_cstr(&g, " VRAM ");
                gen_u64(&g, want.claim_mib);
            }
            gen_cstr(&g, " ON");
            want.place_count = 1 + (uint32_t)(gen_next(&g) % (gen_next(&g) % 8 == 0 ? 64 : 4));
            for (uint32_t i = 0; i < want.place_count; i++) {
                berth_place *pl = &want.place[i];
                gen_cstr(&g, " ");
                pl->worker = gen_name(&g, i);
                pl->worker_hash = berth_name_hash(pl->worker);
                pl->all_gpus = gen_next(&g) % 3 == 0;
                if (pl->all_gpus) continue;
                pl->gpu_mask = gen_next(&g) & gen_next(&g);
                if (pl->gpu_mask == 0) pl->gpu_mask = 1ull << (gen_next(&g) % 64);
                char sep = ':';
                for (uint64_t gi = 0; gi < BERTH_GPUS_MAX; gi++) {
                    if (!(pl->gpu_mask & (1ull << gi))) continue;
                    gen_put(&g, &sep, 1);
                    gen_u64(&g, gi);
                    sep = ',';
                }
            }
            break;
        case BERTH_CMD_POLICY_SET:
            gen_cstr(&g, " EXCLUSIVE");
            want.backend_count = (uint32_t)(gen_next(&g) % 5);
            for (uint32_t i = 0; i < want.backend_count; i++) {
                gen_cstr(&g, i ? "," : " ");
                want.backends[i] = gen_name(&g, i);
            }
            break;
        default:
            gen_cstr(&g, " ");
            want.name = gen_name(&g, 0);
            break;
        }
        want.name_hash = berth_name_hash(want.name);
        char err[BERTH_ERR_LEN_MAX] = "";
        int rc = berth_cmd_parse_text(&got, g.text, g.len, words, BERTH_ARGS_MAX, err, sizeof err);
        LOOP_ASSERT(rc == 0, "round %d: '%.*s': %s", round, (int)g.len, g.text, err);
        LOOP_ASSERT(cmd_same(&got, &want), "round %d: '%.*s'", round, (int)g.len, g.text);
        LOOP_ASSERT(got.name_hash == want.name_hash, "round %d: name hash", round);
        LOOP_ASSERT(got.reqid.len == 0, "round %d: a REQID of %u bytes", round, got.reqid.len);
        for (uint32_t i = 0; i < want.place_count; i++) {
            LOOP_ASSERT(got.place[i].worker_hash == want.place[i].worker_hash, "round %d: worker %u's hash", round, i);
            LOOP_ASSERT(got.place[i].worker.ptr == want.place[i].worker.ptr, "round %d: worker %u's bytes", round, i);
        }
        uint64_t h;
        LOOP_ASSERT(berth_name_valid_hash(want.name.len ? want.name : cstr("x"), &h), "round %d: name", round);
        LOOP_ASSERT(h == berth_name_hash(want.name.len ? want.name : cstr("x")), "round %d: name_valid_hash", round);
        size_t n = berth_cmd_canonical(&got, again, sizeof again);
        LOOP_ASSERT(n == g.len && memcmp(again, g.text, n) == 0, "round %d: canonical differs", round);
    }
}
END_TEST

/* ---- the state machine -------------------------------------------------- */

/* A state plus the scratch needed to feed it text commands. */
typedef struct rig {
    berth_state *state;
    uint64_t seq;
    parsed *p;
    char canonical[BERTH_COMMAND_LEN_MAX + 1];
    size_t canonical_len;
    berth_outcome out;
    bool check_at_end_only;     /* big scenarios: berth_state_check once, not per step */
} rig;

static rig *rig_new(void) {
    rig *r = calloc(1, sizeof *r);
    ck_assert_ptr_nonnull(r);
    r->p = parsed_new();
    r->state = berth_state_new(NULL);
    ck_assert_ptr_nonnull(r->state);
    ck_assert_uint_eq(berth_state_last_seq(r->state), 0);
    return r;
}

static void rig_free(rig *r) {
    berth_state_free(r->state);
    free(r->p);
    free(r);
}

static void rig_check(const rig *r) {
    char why[512] = "";
    LOOP_ASSERT(berth_state_check(r->state, why, sizeof why), "state check failed: %s", why);
}

static void rig_prepare(rig *r, const char *line) {
    expect_parse_ok(r->p, line);
    r->canonical_len = berth_cmd_canonical(&r->p->cmd, r->canonical, sizeof r->canonical);
    LOOP_ASSERT(r->canonical_len > 0, "'%s' has no canonical text", line);
    r->canonical[r->canonical_len] = '\0';
}

/* Apply one text command as the next seq; returns its outcome code. */
static berth_code rig_run(rig *r, const char *line) {
    rig_prepare(r, line);
    memset(&r->out, 0xA5, sizeof r->out);
    int rc = berth_state_apply(r->state, &r->p->cmd, berth_str_make(r->canonical, r->canonical_len), r->seq + 1,
                               &r->out);
    LOOP_ASSERT(rc == 0, "apply '%s' returned %d with the libc allocator", line, rc);
    r->seq++;
    LOOP_ASSERT(berth_state_last_seq(r->state) == r->seq, "'%s': last seq %llu, want %llu", line,
                (unsigned long long)berth_state_last_seq(r->state), (unsigned long long)r->seq);
    LOOP_ASSERT(r->out.code >= BERTH_OK && r->out.code < BERTH_CODE_COUNT, "'%s': code %d", line, (int)r->out.code);
    LOOP_ASSERT(r->out.sentence_len < BERTH_SENTENCE_LEN_MAX, "'%s': sentence of %zu bytes", line,
                (size_t)r->out.sentence_len);
    LOOP_ASSERT(strlen(r->out.sentence) == r->out.sentence_len, "'%s': sentence length %zu, strlen %zu", line,
                (size_t)r->out.sentence_len, strlen(r->out.sentence));
    LOOP_ASSERT(r->out.sentence_len > 0, "'%s': empty sentence", line);
    LOOP_ASSERT(r->out.worker_count <= BERTH_PLACEMENT_WORKERS_MAX, "'%s': %u workers", line,
                (unsigned)r->out.worker_count);
    if (!r->check_at_end_only) rig_check(r);
    return r->out.code;
}

static void expect(rig *r, const char *line, berth_code code) {
    berth_code got = rig_run(r, line);
    ck_assert_msg(got == code, "'%s': expected %s, got %s: %s", line, berth_code_name(code), berth_code_name(got),
                  r->out.sentence);
}

static bool is_word_byte(char c) { return isalnum((unsigned char)c) || c == '_'; }

/* Does the sentence contain word as a whole token (not inside a longer name)? */
static bool has_word(const char *sentence, const char *word) {
    size_t n = strlen(word);
    for (const char *at = strstr(sentence, word); at; at = strstr(at + 1, word)) {
        bool left = at == sentence || !is_word_byte(at[-1]);
        bool right = !is_word_byte(at[n]);
        if (left && right) return true;
    }
    return false;
}

static void says(const rig *r, const char *word) {
    ck_assert_msg(has_word(r->out.sentence, word), "sentence '%s' does not name '%s'", r->out.sentence, word);
}

static void says_not(const rig *r, const char *word) {
    ck_assert_msg(!has_word(r->out.sentence, word), "sentence '%s' names '%s'", r->out.sentence, word);
}

static void says_ci(const rig *r, const char *phrase) {
    char low[BERTH_SENTENCE_LEN_MAX];
    size_t n = strlen(r->out.sentence);
    for (size_t i = 0; i <= n; i++) low[i] = (char)tolower((unsigned char)r->out.sentence[i]);
    ck_assert_msg(strstr(low, phrase) != NULL, "sentence '%s' lacks '%s'", r->out.sentence, phrase);
}

static const berth_worker *worker_of(const rig *r, const char *name) {
    return berth_state_worker(r->state, cstr(name));
}

static const berth_instance *instance_of(const rig *r, const char *name) {
    return berth_state_instance(r->state, cstr(name));
}

static void add_workers(rig *r, const char *gpus_vram, int count) {
    char line[256];
    for (int i = 1; i <= count; i++) {
        snprintf(line, sizeof line, "WORKER.ADD w%d GPUS %s", i, gpus_vram);
        expect(r, line, BERTH_OK);
    }
}

START_TEST(test_worker_add_and_exists) {
    rig *r = rig_new();
    expect(r, "WORKER.ADD w1 GPUS 8 VRAM 81920 LABEL zone=eu rack=r1", BERTH_OK);
    const berth_worker *w = worker_of(r, "w1");
    ck_assert_ptr_nonnull(w);
    ck_assert(str_is(w->name, "w1"));
    ck_assert_uint_eq(w->gpu_count, 8);
    ck_assert_uint_eq(w->vram_mib, 81920);
    ck_assert_int_eq(w->status, BERTH_WORKER_ACTIVE);
    ck_assert_uint_eq(w->added_seq, 1);
    ck_assert_uint_eq(w->label_count, 2);
    ck_assert(str_is(w->labels[0].key, "rack") && str_is(w->labels[0].value, "r1"));
    ck_assert(str_is(w->labels[1].key, "zone") && str_is(w->labels[1].value, "eu"));
    ck_assert_uint_eq(w->served_count, 0);
    ck_assert(berth_worker_free_gpu_mask(w) == 0xFF);
    for (uint32_t g = 0; g < 8; g++) {
        ck_assert_ptr_null(w->gpus[g].whole_holder);
        ck_assert_uint_eq(w->gpus[g].claimed_mib, 0);
        ck_assert_uint_eq(w->gpus[g].claim_count, 0);
    }
    /* The state owns its copy of the name: the command's bytes may go. */
    memset(r->p->text, '#', 64);
    ck_assert(str_is(worker_of(r, "w1")->name, "w1"));

    expect(r, "WORKER.ADD w1 GPUS 2", BERTH_EXISTS);
    says(r, "w1");
    ck_assert_uint_eq(worker_of(r, "w1")->gpu_count, 8);   /* the refusal changed nothing */
    ck_assert_uint_eq(berth_state_worker_count(r->state), 1);

    expect(r, "WORKER.ADD w0 GPUS 0", BERTH_OK);
    expect(r, "WORKER.ADD W1 GPUS 64", BERTH_OK);
    ck_assert(berth_worker_free_gpu_mask(worker_of(r, "W1")) == UINT64_MAX);
    ck_assert(berth_worker_free_gpu_mask(worker_of(r, "w0")) == 0);
    ck_assert_uint_eq(berth_state_worker_count(r->state), 3);
    const berth_worker *sorted[3];
    ck_assert_uint_eq(berth_state_workers_sorted(r->state, sorted, 3), 3);
    ck_assert(str_is(sorted[0]->name, "W1"));   /* memcmp order: upper case first */
    ck_assert(str_is(sorted[1]->name, "w0"));
    ck_assert(str_is(sorted[2]->name, "w1"));
    ck_assert_ptr_null(worker_of(r, "w9"));
    rig_free(r);
}
END_TEST

START_TEST(test_noworker) {
    rig *r = rig_new();
    expect(r, "DEPLOY i1 MODEL m BACKEND vllm ON ghost", BERTH_NOWORKER);
    says(r, "ghost");
    ck_assert_ptr_null(instance_of(r, "i1"));
    expect(r, "WORKER.CORDON ghost", BERTH_NOWORKER);
    says(r, "ghost");
    expect(r, "WORKER.UNCORDON ghost", BERTH_NOWORKER);
    says(r, "ghost");
    expect(r, "WORKER.REMOVE ghost", BERTH_NOWORKER);
    says(r, "ghost");
    add_workers(r, "4", 1);
    expect(r, "DEPLOY i1 MODEL m BACKEND vllm ON w1:0 ghost2:0", BERTH_NOWORKER);   /* subordinate missing */
    says(r, "ghost2");
    ck_assert_uint_eq(berth_state_instance_count(r->state), 0);
    ck_assert(berth_worker_free_gpu_mask(worker_of(r, "w1")) == 0xF);
    rig_free(r);
}
END_TEST

START_TEST(test_noinstance) {
    rig *r = rig_new();
    expect(r, "RELEASE nobody", BERTH_NOINSTANCE);
    says(r, "nobody");
    add_workers(r, "2", 1);
    expect(r, "DEPLOY i1 MODEL m BACKEND vllm ON w1", BERTH_OK);
    expect(r, "RELEASE i1", BERTH_OK);
    expect(r, "RELEASE i1", BERTH_NOINSTANCE);
    says(r, "i1");
    rig_free(r);
}
END_TEST

START_TEST(test_deploy_records_instance) {
    rig *r = rig_new();
    add_workers(r, "8 VRAM 81920", 3);
    expect(r, "DEPLOY big MODEL meta/llama-3-70b BACKEND vllm ON w2:1,0 w1 w3:7", BERTH_OK);
    ck_assert(str_is(r->out.instance, "big"));
    ck_assert_uint_eq(r->out.worker_count, 3);
    ck_assert(str_is(r->out.workers[0], "w2"));
    ck_assert(str_is(r->out.workers[1], "w1"));
    ck_assert(str_is(r->out.workers[2], "w3"));
    const berth_instance *in = instance_of(r, "big");
    ck_assert_ptr_nonnull(in);
    ck_assert(str_is(in->name, "big"));
    ck_assert(str_is(in->model, "meta/llama-3-70b"));
    ck_assert(str_is(in->backend, "vllm"));
    ck_assert_uint_eq(in->claim_mib, 0);
    ck_assert_uint_eq(in->deploy_seq, 4);
    ck_assert(in->distributed);
    ck_assert(in->exclusive);
    ck_assert_uint_eq(in->slot_count, 3);
    ck_assert_ptr_eq(in->slots[0].worker, worker_of(r, "w2"));   /* main first */
    ck_assert(in->slots[0].gpu_mask == 0x3);
    ck_assert_ptr_eq(in->slots[1].worker, worker_of(r, "w1"));
    ck_assert(in->slots[1].gpu_mask == 0xFF);                      /* no list: all GPUs */
    ck_assert(in->slots[2].gpu_mask == 0x80);
    const berth_worker *w1 = worker_of(r, "w1");
    ck_assert_uint_eq(w1->served_count, 1);
    ck_assert_ptr_eq(w1->served[0], in);
    ck_assert_ptr_eq(berth_worker_exclusive_holder(w1), in);
    ck_assert(berth_worker_free_gpu_mask(w1) == 0);
    ck_assert(berth_worker_free_gpu_mask(worker_of(r, "w2")) == 0xFC);
    for (uint32_t g = 0; g < 8; g++) ck_assert_ptr_eq(w1->gpus[g].whole_holder, in);
    ck_assert_ptr_null(worker_of(r, "w2")->gpus[2].whole_holder);
    /* The state owns the names: scribbling over the command text is harmless. */
    memset(r->p->text, '#', strlen("DEPLOY big MODEL meta/llama-3-70b"));
    ck_assert(str_is(instance_of(r, "big")->model, "meta/llama-3-70b"));
    ck_assert_uint_eq(berth_state_instance_count(r->state), 1);

    expect(r, "RELEASE big", BERTH_OK);
    ck_assert(str_is(r->out.instance, "big"));
    ck_assert_ptr_null(instance_of(r, "big"));
    ck_assert_uint_eq(worker_of(r, "w1")->served_count, 0);
    ck_assert_ptr_null(berth_worker_exclusive_holder(worker_of(r, "w1")));
    for (int i = 1; i <= 3; i++) {
        char name[16];
        snprintf(name, sizeof name, "w%d", i);
        ck_assert(berth_worker_free_gpu_mask(worker_of(r, name)) == 0xFF);
    }
    rig_free(r);
}
END_TEST

START_TEST(test_exists_instance_first) {
    rig *r = rig_new();
    add_workers(r, "4", 2);
    expect(r, "DEPLOY i1 MODEL m BACKEND vllm ON w1:0", BERTH_OK);
    expect(r, "DEPLOY i1 MODEL m BACKEND vllm ON w1:1", BERTH_EXISTS);
    says(r, "i1");
    /* EXISTS is judged before any worker: even a missing worker loses to it. */
    expect(r, "DEPLOY i1 MODEL m BACKEND vllm ON ghost", BERTH_EXISTS);
    says(r, "i1");
    ck_assert(instance_of(r, "i1")->slots[0].gpu_mask == 0x1);
    rig_free(r);
}
END_TEST

/* A refused DEPLOY touches every worker it lists; refused_by names the one
 * that refused (the timeline ticks its row only), 0 for EXISTS. */
START_TEST(test_refused_by) {
    rig *r = rig_new();
    add_workers(r, "1", 3);
    expect(r, "WORKER.CORDON w2", BERTH_OK);
    ck_assert_uint_eq(r->out.refused_by, 0);
    expect(r, "DEPLOY a MODEL m BACKEND vllm ON w1 w2 w3", BERTH_CORDONED);
    ck_assert_uint_eq(r->out.worker_count, 3);
    ck_assert_uint_eq(r->out.refused_by, 2);
    expect(r, "DEPLOY a MODEL m BACKEND vllm ON w3 w1 ghost", BERTH_NOWORKER);
    ck_assert_uint_eq(r->out.refused_by, 3);
    expect(r, "DEPLOY a MODEL m BACKEND vllm ON w3", BERTH_OK);
    ck_assert_uint_eq(r->out.refused_by, 0);
    expect(r, "DEPLOY b MODEL m BACKEND vllm ON w1 w3", BERTH_GPUBUSY);
    ck_assert_uint_eq(r->out.refused_by, 2);
    expect(r, "DEPLOY a MODEL m BACKEND vllm ON w1", BERTH_EXISTS);
    ck_assert_uint_eq(r->out.refused_by, 0);
    rig_free(r);
}
END_TEST

START_TEST(test_cordon) {
    rig *r = rig_new();
    add_workers(r, "4", 2);
    expect(r, "DEPLOY i1 MODEL m BACKEND vllm ON w1:0", BERTH_OK);
    expect(r, "WORKER.CORDON w1", BERTH_OK);
    ck_assert_int_eq(worker_of(r, "w1")->status, BERTH_WORKER_CORDONED);
    /* Cordon keeps what the worker serves. */
    ck_assert_ptr_nonnull(instance_of(r, "i1"));
    ck_assert_uint_eq(worker_of(r, "w1")->served_count, 1);
    ck_assert_ptr_eq(worker_of(r, "w1")->gpus[0].whole_holder, instance_of(r, "i1"));
    expect(r, "DEPLOY i2 MODEL m BACKEND vllm ON w1:1", BERTH_CORDONED);
    says(r, "w1");
    expect(r, "DEPLOY i2 MODEL m BACKEND vllm ON w2:0 w1:1", BERTH_CORDONED);   /* as a subordinate too */
    says(r, "w1");
    expect(r, "WORKER.CORDON w1", BERTH_OK);    /* cordoning twice is harmless */
    expect(r, "RELEASE i1", BERTH_OK);          /* releasing on a cordoned worker works */
    expect(r, "WORKER.UNCORDON w1", BERTH_OK);
    ck_assert_int_eq(worker_of(r, "w1")->status, BERTH_WORKER_ACTIVE);
    expect(r, "DEPLOY i2 MODEL m BACKEND vllm ON w2:0 w1:1", BERTH_OK);
    expect(r, "WORKER.UNCORDON w2", BERTH_OK);  /* uncordoning an active worker is harmless */
    rig_free(r);
}
END_TEST

/* Counts in sentences agree with their nouns (review hV6: "keeps its 1
 * instances", "registered with 1 GPUs"). Sentences are recorded outcomes,
 * so these are exact. */
START_TEST(test_sentence_plurals) {
    rig *r = rig_new();
    expect(r, "WORKER.ADD w0 GPUS 0", BERTH_OK);
    ck_assert_str_eq(r->out.sentence, "worker w0 registered with 0 GPUs");
    expect(r, "WORKER.ADD w1 GPUS 1", BERTH_OK);
    ck_assert_str_eq(r->out.sentence, "worker w1 registered with 1 GPU");
    expect(r, "WORKER.ADD v1 GPUS 1 VRAM 24576", BERTH_OK);
    ck_assert_str_eq(r->out.sentence, "worker v1 registered with 1 GPU of 24576 MiB");
    expect(r, "WORKER.ADD w2 GPUS 2 VRAM 81920", BERTH_OK);
    ck_assert_str_eq(r->out.sentence, "worker w2 registered with 2 GPUs of 81920 MiB");
    expect(r, "WORKER.CORDON w1", BERTH_OK);
    ck_assert_str_eq(r->out.sentence, "worker w1 cordoned: it serves no instance and accepts no new ones");
    expect(r, "WORKER.CORDON w1", BERTH_OK);
    ck_assert_str_eq(r->out.sentence, "worker w1 was already cordoned: it serves no instance and accepts no new ones");
    expect(r, "WORKER.UNCORDON w1", BERTH_OK);
    expect(r, "DEPLOY a MODEL m BACKEND vllm ON w1", BERTH_OK);
    expect(r, "WORKER.CORDON w1", BERTH_OK);
    ck_assert_str_eq(r->out.sentence, "worker w1 cordoned: it keeps its 1 instance and accepts no new ones");
    expect(r, "WORKER.CORDON w1", BERTH_OK);
    ck_assert_str_eq(r->out.sentence,
                     "worker w1 was already cordoned: it keeps its 1 instance and accepts no new ones");
    expect(r, "DEPLOY b MODEL m BACKEND vllm VRAM 100 ON w2:0", BERTH_OK);
    expect(r, "DEPLOY c MODEL m BACKEND vllm VRAM 100 ON w2:0", BERTH_OK);
    expect(r, "WORKER.CORDON w2", BERTH_OK);
    ck_assert_str_eq(r->out.sentence, "worker w2 cordoned: it keeps its 2 instances and accepts no new ones");
    expect(r, "WORKER.REMOVE w1", BERTH_BUSY);
    ck_assert_str_eq(r->out.sentence, "worker w1 still serves 1 instance (a); release it before removing the worker");
    expect(r, "WORKER.REMOVE w2", BERTH_BUSY);
    ck_assert_str_eq(r->out.sentence, "worker w2 still serves 2 instances (b, c); release them before removing it");
    expect(r, "WORKER.ADD z0 GPUS 0 VRAM 10", BERTH_OK);
    ck_assert_str_eq(r->out.sentence, "worker z0 registered with 0 GPUs");
    expect(r, "WORKER.UNCORDON w2", BERTH_OK);
    expect(r, "DEPLOY d MODEL m BACKEND vllm VRAM 81900 ON w2:0", BERTH_NOVRAM);
    ck_assert_str_eq(r->out.sentence, "GPU w2:0 has 81720 MiB free of 81920 MiB (200 MiB claimed by b 100 MiB, "
                                      "c 100 MiB); instance d claims 81900 MiB");
    rig_free(r);
}
END_TEST

/* A journal's older records keep the wording they were answered in
 * (core/state.h): wording 1 says what berth said before session 16, and
 * apply goes back to the current wording once set back. Codes and state
 * are the same in both. */
START_TEST(test_sentence_wording_1) {
    rig *r = rig_new();
    berth_state_set_wording(r->state, 1);
    expect(r, "WORKER.ADD w1 GPUS 1", BERTH_OK);
    expect(r, "WORKER.ADD v GPUS 1 VRAM 100", BERTH_OK);
    expect(r, "WORKER.ADD z GPUS 0", BERTH_OK);
    expect(r, "WORKER.ADD z0 GPUS 0 VRAM 10", BERTH_OK);
    ck_assert_str_eq(r->out.sentence, "worker z0 registered with 0 GPUs of 10 MiB");
    expect(r, "WORKER.CORDON w1", BERTH_OK);
    ck_assert_str_eq(r->out.sentence, "worker w1 cordoned: it keeps its 0 instances and accepts no new ones");
    expect(r, "WORKER.UNCORDON w1", BERTH_OK);
    expect(r, "DEPLOY a MODEL m BACKEND vllm ON w1", BERTH_OK);
    expect(r, "WORKER.REMOVE w1", BERTH_BUSY);
    ck_assert_str_eq(r->out.sentence, "worker w1 still serves 1 instance (a); release them before removing it");
    expect(r, "DEPLOY b MODEL m BACKEND vllm VRAM 200 ON v:0", BERTH_NOVRAM);
    ck_assert_str_eq(r->out.sentence, "GPU v:0 has 100 MiB free of 100 (0 MiB claimed); instance b claims 200 MiB");
    expect(r, "DEPLOY b MODEL m BACKEND vllm VRAM 20 ON z", BERTH_NOVRAM);
    ck_assert_str_eq(r->out.sentence, "worker z was registered without VRAM, so instance b cannot claim 20 MiB "
                                      "on its GPUs; register it with VRAM <MiB>");
    berth_state_set_wording(r->state, BERTH_WORDING_CURRENT);
    expect(r, "DEPLOY b MODEL m BACKEND vllm VRAM 200 ON v:0", BERTH_NOVRAM);
    ck_assert_str_eq(r->out.sentence, "GPU v:0 has 100 MiB free of 100 MiB (0 MiB claimed); instance b claims 200 MiB");
    expect(r, "DEPLOY b MODEL m BACKEND vllm VRAM 20 ON z", BERTH_NOVRAM);
    ck_assert_str_eq(r->out.sentence, "worker z has 0 GPUs, so instance b cannot claim 20 MiB on any GPU of it");
    rig_free(r);
}
END_TEST

START_TEST(test_nogpu) {
    rig *r = rig_new();
    add_workers(r, "4", 2);
    expect(r, "WORKER.ADD cpu GPUS 0", BERTH_OK);
    expect(r, "DEPLOY i1 MODEL m BACKEND vllm ON w1:4", BERTH_NOGPU);
    says(r, "w1");
    says(r, "4");
    expect(r, "DEPLOY i1 MODEL m BACKEND vllm ON w1:0,63", BERTH_NOGPU);
    says(r, "w1");
    expect(r, "DEPLOY i1 MODEL m BACKEND vllm ON w1:0 w2:5", BERTH_NOGPU);   /* subordinate */
    says(r, "w2");
    expect(r, "DEPLOY i1 MODEL m BACKEND llama.cpp ON cpu:0", BERTH_NOGPU);
    says(r, "cpu");
    ck_assert_uint_eq(berth_state_instance_count(r->state), 0);
    expect(r, "DEPLOY i1 MODEL m BACKEND vllm ON w1:3", BERTH_OK);
    rig_free(r);
}
END_TEST

/* Issue 2's seed case: two distributed vLLM instances over a shared worker. */
START_TEST(test_seed_case_exclusive) {
    rig *r = rig_new();
    add_workers(r, "8 VRAM 81920", 3);
    expect(r, "WORKER.ADD pad GPUS 1", BERTH_OK);     /* seq 4 */
    expect(r, "WORKER.CORDON pad", BERTH_OK);         /* seq 5 */
    expect(r, "WORKER.UNCORDON pad", BERTH_OK);       /* seq 6 */
    expect(r, "DEPLOY alpha MODEL llama-70b BACKEND vllm ON w1:0,1 w2:0,1", BERTH_OK);   /* seq 7 */
    ck_assert(instance_of(r, "alpha")->exclusive);
    expect(r, "DEPLOY beta MODEL qwen-72b BACKEND vllm ON w2:2,3 w3:0,1", BERTH_EXCLUSIVE);
    says(r, "w2");
    says(r, "alpha");
    says(r, "7");           /* the seq alpha was deployed at */
    says_not(r, "w3");
    says_ci(r, "one distributed vllm instance at a time");
    ck_assert_ptr_null(instance_of(r, "beta"));
    ck_assert(berth_worker_free_gpu_mask(worker_of(r, "w3")) == 0xFF);
    expect(r, "RELEASE alpha", BERTH_OK);
    expect(r, "DEPLOY beta MODEL qwen-72b BACKEND vllm ON w2:2,3 w3:0,1", BERTH_OK);
    ck_assert_ptr_eq(berth_worker_exclusive_holder(worker_of(r, "w2")), instance_of(r, "beta"));
    rig_free(r);
}
END_TEST

/* GPUStack #2807: the clash only on a subordinate; #2828: only on the main. */
START_TEST(test_exclusive_main_and_subordinate) {
    rig *r = rig_new();
    add_workers(r, "8", 5);
    expect(r, "DEPLOY a MODEL m BACKEND vllm ON w1:0 w2:0", BERTH_OK);   /* seq 6 */
    /* subordinate of b is a's subordinate */
    expect(r, "DEPLOY b MODEL m BACKEND vllm ON w3:0 w2:1", BERTH_EXCLUSIVE);
    says(r, "w2");
    says(r, "a");
    says(r, "6");
    /* main of b is a's main */
    expect(r, "DEPLOY b MODEL m BACKEND vllm ON w1:1 w3:0", BERTH_EXCLUSIVE);
    says(r, "w1");
    says(r, "a");
    /* main of b is a's subordinate, and the other way round */
    expect(r, "DEPLOY b MODEL m BACKEND vllm ON w2:1 w4:0", BERTH_EXCLUSIVE);
    says(r, "w2");
    expect(r, "DEPLOY b MODEL m BACKEND vllm ON w4:0 w5:0 w1:1", BERTH_EXCLUSIVE);
    says(r, "w1");
    says_not(r, "w4");
    ck_assert_uint_eq(berth_state_instance_count(r->state), 1);
    expect(r, "DEPLOY b MODEL m BACKEND vllm ON w3:0 w4:0", BERTH_OK);
    /* the first listed clashing worker is the one named */
    expect(r, "DEPLOY c MODEL m BACKEND vllm ON w5:0 w4:1 w2:1", BERTH_EXCLUSIVE);
    says(r, "w4");
    says(r, "b");
    says_not(r, "w2");
    rig_free(r);
}
END_TEST

/* Only distributed instances hold a worker: local ones share freely. */
START_TEST(test_local_instances_share) {
    rig *r = rig_new();
    add_workers(r, "8", 3);
    expect(r, "DEPLOY l1 MODEL m BACKEND vllm ON w1:0", BERTH_OK);
    expect(r, "DEPLOY l2 MODEL m BACKEND vllm ON w1:1", BERTH_OK);
    ck_assert(!instance_of(r, "l1")->distributed);
    ck_assert(!instance_of(r, "l1")->exclusive);
    ck_assert_ptr_null(berth_worker_exclusive_holder(worker_of(r, "w1")));
    expect(r, "DEPLOY l3 MODEL m BACKEND vllm ON w1:1", BERTH_GPUBUSY);
    says(r, "l2");
    says(r, "w1");
    /* a distributed vllm instance may join a worker serving local vllm ones */
    expect(r, "DEPLOY d1 MODEL m BACKEND vllm ON w1:2 w2:0", BERTH_OK);
    /* and a local vllm instance may join a worker held by a distributed one */
    expect(r, "DEPLOY l3 MODEL m BACKEND vllm ON w2:1", BERTH_OK);
    expect(r, "DEPLOY l4 MODEL m BACKEND vllm ON w1:3", BERTH_OK);
    const berth_worker *w1 = worker_of(r, "w1");
    ck_assert_uint_eq(w1->served_count, 4);
    ck_assert_ptr_eq(w1->served[0], instance_of(r, "l1"));   /* deploy-seq order */
    ck_assert_ptr_eq(w1->served[1], instance_of(r, "l2"));
    ck_assert_ptr_eq(w1->served[2], instance_of(r, "d1"));
    ck_assert_ptr_eq(w1->served[3], instance_of(r, "l4"));
    ck_assert_ptr_eq(berth_worker_exclusive_holder(w1), instance_of(r, "d1"));
    ck_assert(berth_worker_free_gpu_mask(w1) == 0xF0);
    rig_free(r);
}
END_TEST

START_TEST(test_gpubusy) {
    rig *r = rig_new();
    add_workers(r, "4 VRAM 40960", 2);
    expect(r, "DEPLOY whole MODEL m BACKEND vllm ON w1:0,1", BERTH_OK);
    expect(r, "DEPLOY x MODEL m BACKEND vllm ON w1:1,2", BERTH_GPUBUSY);
    says(r, "whole");
    says(r, "w1");
    expect(r, "DEPLOY x MODEL m BACKEND vllm ON w1", BERTH_GPUBUSY);   /* all GPUs includes held ones */
    says(r, "whole");
    /* a VRAM claim on a GPU held whole */
    expect(r, "DEPLOY x MODEL m BACKEND vllm VRAM 1024 ON w1:0", BERTH_GPUBUSY);
    says(r, "whole");
    /* a whole-GPU claim on a GPU others claim VRAM on */
    expect(r, "DEPLOY claim MODEL m BACKEND vllm VRAM 1024 ON w1:2", BERTH_OK);
    expect(r, "DEPLOY x MODEL m BACKEND vllm ON w1:2", BERTH_GPUBUSY);
    says(r, "w1");
    says(r, "claim");
    /* a subordinate's GPU (distributed, non-exclusive backend so EXCLUSIVE cannot mask it) */
    expect(r, "DEPLOY x MODEL m BACKEND sglang ON w2:0 w1:0", BERTH_GPUBUSY);
    says(r, "whole");
    ck_assert_uint_eq(berth_state_instance_count(r->state), 2);
    expect(r, "DEPLOY x MODEL m BACKEND sglang ON w2:0 w1:3", BERTH_OK);
    rig_free(r);
}
END_TEST

START_TEST(test_vram_claims_share) {
    rig *r = rig_new();
    expect(r, "WORKER.ADD h100 GPUS 2 VRAM 81920", BERTH_OK);
    /* 0.45 x 81920 = 36864: two vLLM instances at 0.45 share a GPU */
    expect(r, "DEPLOY a MODEL m BACKEND vllm VRAM 36864 ON h100:0", BERTH_OK);
    expect(r, "DEPLOY b MODEL m BACKEND vllm VRAM 36864 ON h100:0", BERTH_OK);
    const berth_worker *w = worker_of(r, "h100");
    ck_assert_uint_eq(w->gpus[0].claimed_mib, 73728);
    ck_assert_uint_eq(w->gpus[0].claim_count, 2);
    ck_assert_ptr_null(w->gpus[0].whole_holder);
    ck_assert(berth_worker_free_gpu_mask(w) == 0x2);
    expect(r, "DEPLOY c MODEL m BACKEND vllm VRAM 8193 ON h100:0", BERTH_NOVRAM);
    says(r, "h100");
    says(r, "0");
    says(r, "8192");     /* free */
    says(r, "73728");    /* claimed */
    says(r, "a");
    says(r, "b");
    /* exactly filling the GPU fits */
    expect(r, "DEPLOY c MODEL m BACKEND vllm VRAM 8192 ON h100:0", BERTH_OK);
    ck_assert_uint_eq(worker_of(r, "h100")->gpus[0].claimed_mib, 81920);
    expect(r, "RELEASE a", BERTH_OK);
    ck_assert_uint_eq(worker_of(r, "h100")->gpus[0].claimed_mib, 45056);
    ck_assert_uint_eq(worker_of(r, "h100")->gpus[0].claim_count, 2);
    /* a claim bigger than a whole empty GPU */
    expect(r, "DEPLOY d MODEL m BACKEND vllm VRAM 81921 ON h100:1", BERTH_NOVRAM);
    says(r, "h100");
    /* the claim is per GPU listed */
    expect(r, "DEPLOY d MODEL m BACKEND vllm VRAM 36864 ON h100", BERTH_OK);
    ck_assert_uint_eq(worker_of(r, "h100")->gpus[1].claimed_mib, 36864);
    ck_assert_uint_eq(worker_of(r, "h100")->gpus[0].claimed_mib, 81920);
    ck_assert_uint_eq(instance_of(r, "d")->claim_mib, 36864);
    rig_free(r);
}
END_TEST

START_TEST(test_novram_without_vram) {
    rig *r = rig_new();
    expect(r, "WORKER.ADD novram GPUS 2", BERTH_OK);
    expect(r, "WORKER.ADD ok GPUS 2 VRAM 24576", BERTH_OK);
    expect(r, "DEPLOY a MODEL m BACKEND vllm VRAM 1024 ON novram:0", BERTH_NOVRAM);
    says(r, "novram");
    expect(r, "DEPLOY a MODEL m BACKEND sglang VRAM 1024 ON ok:0 novram:1", BERTH_NOVRAM);   /* subordinate */
    says(r, "novram");
    expect(r, "DEPLOY a MODEL m BACKEND vllm ON novram:0", BERTH_OK);   /* whole GPUs need no VRAM */
    /* A worker of no GPUs named bare: "all of its GPUs" is none, and the
     * claim is still refused. The reason given is the missing GPUs, which
     * VRAM would not mend (wording 1 named the missing VRAM:
     * test_sentence_wording_1). */
    expect(r, "WORKER.ADD z GPUS 0", BERTH_OK);
    expect(r, "DEPLOY b MODEL m BACKEND vllm VRAM 4096 ON z", BERTH_NOVRAM);
    ck_assert_str_eq(r->out.sentence, "worker z has 0 GPUs, so instance b cannot claim 4096 MiB on any GPU of it");
    expect(r, "DEPLOY b MODEL m BACKEND sglang VRAM 4096 ON ok:1 z", BERTH_NOVRAM);   /* subordinate */
    says(r, "z");
    ck_assert_ptr_null(berth_state_instance(r->state, cstr("b")));
    /* Registered with VRAM but no GPU: the claim has no GPU to go on (it
     * was accepted and claimed nothing); a whole-GPU DEPLOY there is still
     * a CPU instance, VRAM or not. */
    expect(r, "WORKER.ADD zv GPUS 0 VRAM 81920", BERTH_OK);
    expect(r, "DEPLOY b MODEL m BACKEND vllm VRAM 4096 ON zv", BERTH_NOVRAM);
    ck_assert_str_eq(r->out.sentence, "worker zv has 0 GPUs, so instance b cannot claim 4096 MiB on any GPU of it");
    expect(r, "DEPLOY b MODEL m BACKEND sglang VRAM 4096 ON ok:1 zv", BERTH_NOVRAM);   /* subordinate */
    says(r, "zv");
    ck_assert_ptr_null(berth_state_instance(r->state, cstr("b")));
    expect(r, "DEPLOY c MODEL m BACKEND llama.cpp ON zv", BERTH_OK);
    ck_assert_str_eq(r->out.sentence, "instance c deployed on zv");
    rig_free(r);
}
END_TEST

/* A distributed instance of a non-exclusive backend takes GPUs, no hold. */
START_TEST(test_sglang_not_exclusive) {
    rig *r = rig_new();
    add_workers(r, "8", 3);
    ck_assert(berth_state_backend_exclusive(r->state, cstr("vllm")));
    ck_assert(!berth_state_backend_exclusive(r->state, cstr("sglang")));
    const berth_str *pol = NULL;
    ck_assert_uint_eq(berth_state_policy(r->state, &pol), 1);
    ck_assert(str_is(pol[0], "vllm"));
    expect(r, "DEPLOY s1 MODEL m BACKEND sglang ON w1:0 w2:0", BERTH_OK);
    ck_assert(instance_of(r, "s1")->distributed);
    ck_assert(!instance_of(r, "s1")->exclusive);
    ck_assert_ptr_null(berth_worker_exclusive_holder(worker_of(r, "w1")));
    expect(r, "DEPLOY s2 MODEL m BACKEND sglang ON w2:1 w3:0", BERTH_OK);
    /* a vllm distributed instance is not blocked by sglang ones */
    expect(r, "DEPLOY v1 MODEL m BACKEND vllm ON w2:2 w1:1", BERTH_OK);
    ck_assert_ptr_eq(berth_worker_exclusive_holder(worker_of(r, "w2")), instance_of(r, "v1"));
    /* but sglang still needs free GPUs */
    expect(r, "DEPLOY s3 MODEL m BACKEND sglang ON w3:1 w2:0", BERTH_GPUBUSY);
    says(r, "s1");
    /* and an sglang distributed instance may join a vllm-held worker */
    expect(r, "DEPLOY s3 MODEL m BACKEND sglang ON w3:1 w2:3", BERTH_OK);
    rig_free(r);
}
END_TEST

START_TEST(test_policy_set) {
    rig *r = rig_new();
    add_workers(r, "8", 3);
    expect(r, "DEPLOY s1 MODEL m BACKEND sglang ON w1:0 w2:0", BERTH_OK);   /* seq 4 */
    expect(r, "DEPLOY s2 MODEL m BACKEND sglang ON w2:1 w3:0", BERTH_OK);   /* shares w2 */
    expect(r, "POLICY.SET EXCLUSIVE vllm,sglang", BERTH_OK);
    const berth_str *pol = NULL;
    ck_assert_uint_eq(berth_state_policy(r->state, &pol), 2);
    ck_assert(str_is(pol[0], "sglang") && str_is(pol[1], "vllm"));
    ck_assert(berth_state_backend_exclusive(r->state, cstr("sglang")));
    /* existing instances are re-marked, nobody is evicted */
    ck_assert(instance_of(r, "s1")->exclusive);
    ck_assert(instance_of(r, "s2")->exclusive);
    ck_assert_uint_eq(worker_of(r, "w2")->served_count, 2);
    ck_assert_ptr_nonnull(berth_worker_exclusive_holder(worker_of(r, "w2")));
    /* later sglang deploys are judged exclusive */
    expect(r, "DEPLOY s3 MODEL m BACKEND sglang ON w3:1 w1:1", BERTH_EXCLUSIVE);
    says(r, "w3");
    says(r, "s2");
    says(r, "5");
    says_ci(r, "at a time");      /* the rule, naming the exclusive backends */
    says(r, "sglang");
    /* vllm distributed onto a worker with an (now exclusive) sglang holder */
    expect(r, "DEPLOY v1 MODEL m BACKEND vllm ON w1:1 w3:1", BERTH_EXCLUSIVE);
    says(r, "w1");
    says(r, "s1");
    /* drop vllm and sglang from the policy: distributed vllm no longer holds */
    expect(r, "POLICY.SET EXCLUSIVE llama.cpp", BERTH_OK);
    ck_assert(!berth_state_backend_exclusive(r->state, cstr("vllm")));
    ck_assert(!instance_of(r, "s1")->exclusive);
    ck_assert_ptr_null(berth_worker_exclusive_holder(worker_of(r, "w2")));
    expect(r, "DEPLOY v1 MODEL m BACKEND vllm ON w1:1 w3:1", BERTH_OK);
    expect(r, "DEPLOY v2 MODEL m BACKEND vllm ON w1:2 w3:2", BERTH_OK);
    ck_assert(!instance_of(r, "v1")->exclusive);
    /* back to genesis policy: v1 and v2 both hold w1 now, which the check allows */
    expect(r, "POLICY.SET EXCLUSIVE vllm", BERTH_OK);
    ck_assert(instance_of(r, "v1")->exclusive && instance_of(r, "v2")->exclusive);
    ck_assert_uint_eq(berth_state_instance_count(r->state), 4);
    expect(r, "DEPLOY v3 MODEL m BACKEND vllm ON w2:5 w1:5", BERTH_EXCLUSIVE);
    says(r, "w1");
    says(r, "v1");   /* the earliest holder is named */
    rig_free(r);
}
END_TEST

START_TEST(test_remove_busy) {
    rig *r = rig_new();
    add_workers(r, "8", 2);
    expect(r, "DEPLOY a MODEL m BACKEND vllm ON w1:0", BERTH_OK);
    expect(r, "DEPLOY b MODEL m BACKEND vllm ON w1:1", BERTH_OK);
    expect(r, "DEPLOY c MODEL m BACKEND vllm ON w2:0 w1:2", BERTH_OK);
    expect(r, "WORKER.REMOVE w1", BERTH_BUSY);
    says(r, "w1");
    says(r, "3");
    ck_assert_ptr_nonnull(worker_of(r, "w1"));
    expect(r, "RELEASE a", BERTH_OK);
    expect(r, "RELEASE c", BERTH_OK);
    expect(r, "WORKER.REMOVE w1", BERTH_BUSY);
    says(r, "1");
    expect(r, "RELEASE b", BERTH_OK);
    expect(r, "WORKER.REMOVE w1", BERTH_OK);
    ck_assert_ptr_null(worker_of(r, "w1"));
    ck_assert_uint_eq(berth_state_worker_count(r->state), 1);
    expect(r, "DEPLOY a MODEL m BACKEND vllm ON w1:0", BERTH_NOWORKER);
    expect(r, "WORKER.REMOVE w1", BERTH_NOWORKER);
    expect(r, "WORKER.ADD w1 GPUS 2", BERTH_OK);
    ck_assert_uint_eq(worker_of(r, "w1")->added_seq, r->seq);
    ck_assert_uint_eq(worker_of(r, "w1")->gpu_count, 2);
    expect(r, "DEPLOY a MODEL m BACKEND vllm ON w1:0", BERTH_OK);
    rig_free(r);
}
END_TEST

/* The first failure decides, in the documented order. */
START_TEST(test_check_order) {
    rig *r = rig_new();
    add_workers(r, "4 VRAM 1000", 4);
    expect(r, "WORKER.CORDON w4", BERTH_OK);
    /* cordoned and a bad GPU index on one worker: CORDONED */
    expect(r, "DEPLOY x MODEL m BACKEND vllm ON w4:9", BERTH_CORDONED);
    says(r, "w4");
    /* the first worker's failure wins over the second's */
    expect(r, "DEPLOY x MODEL m BACKEND vllm ON w4 ghost", BERTH_CORDONED);
    says(r, "w4");
    expect(r, "DEPLOY x MODEL m BACKEND vllm ON ghost w4", BERTH_NOWORKER);
    says(r, "ghost");
    expect(r, "DEPLOY x MODEL m BACKEND vllm ON w1:7 w4", BERTH_NOGPU);
    says(r, "w1");
    /* NOGPU before EXCLUSIVE on one worker */
    expect(r, "DEPLOY held MODEL m BACKEND vllm ON w1:0 w2:0", BERTH_OK);
    expect(r, "DEPLOY x MODEL m BACKEND vllm ON w3:0 w2:9", BERTH_NOGPU);
    /* EXCLUSIVE before GPUBUSY: the very GPUs held by the holder */
    expect(r, "DEPLOY x MODEL m BACKEND vllm ON w3:0 w2:0", BERTH_EXCLUSIVE);
    says(r, "held");
    /* GPUBUSY before NOVRAM: a too-big claim on a GPU held whole */
    expect(r, "DEPLOY x MODEL m BACKEND vllm VRAM 5000 ON w1:0", BERTH_GPUBUSY);
    says(r, "held");
    /* the first worker's GPUBUSY wins over the second's NOVRAM, and vice versa */
    expect(r, "DEPLOY x MODEL m BACKEND sglang VRAM 5000 ON w1:0 w3:1", BERTH_GPUBUSY);
    expect(r, "DEPLOY x MODEL m BACKEND sglang VRAM 5000 ON w3:1 w1:0", BERTH_NOVRAM);
    says(r, "w3");
    /* EXCLUSIVE on a later worker loses to CORDONED on an earlier one */
    expect(r, "DEPLOY x MODEL m BACKEND vllm ON w4:0 w2:1", BERTH_CORDONED);
    /* and wins over GPUBUSY on a later one */
    expect(r, "DEPLOY x MODEL m BACKEND vllm ON w3:0 w2:1 w1:0", BERTH_EXCLUSIVE);
    says(r, "w2");
    ck_assert_uint_eq(berth_state_instance_count(r->state), 1);
    rig_free(r);
}
END_TEST

START_TEST(test_outcome_after_refusal_is_clean) {
    rig *r = rig_new();
    add_workers(r, "2", 2);
    expect(r, "DEPLOY a MODEL m BACKEND vllm ON w1:0 w2:0", BERTH_OK);
    /* a refusal on the second worker must not leave a half-placed instance */
    expect(r, "DEPLOY b MODEL m BACKEND sglang ON w1:1 w2:0", BERTH_GPUBUSY);
    ck_assert_ptr_null(instance_of(r, "b"));
    ck_assert_uint_eq(worker_of(r, "w1")->served_count, 1);
    ck_assert_ptr_null(worker_of(r, "w1")->gpus[1].whole_holder);
    ck_assert(berth_worker_free_gpu_mask(worker_of(r, "w1")) == 0x2);
    expect(r, "DEPLOY b MODEL m BACKEND sglang ON w1:1 w2:1", BERTH_OK);
    const berth_instance *sorted[2];
    ck_assert_uint_eq(berth_state_instances_sorted(r->state, sorted, 2), 2);
    ck_assert(str_is(sorted[0]->name, "a") && str_is(sorted[1]->name, "b"));
    rig_free(r);
}
END_TEST

static berth_reqid_status rig_submit(rig *r, const char *line, berth_reqid_entry *hit);

/* Sentences that would name more parties than fit are cut, never overrun:
 * 40 claimers with 128-byte names on one GPU, and a policy of 32 long names. */
START_TEST(test_long_sentences_bounded) {
    rig *r = rig_new();
    char line[1024];
    char name[BERTH_NAME_LEN_MAX + 1];
    make_name(name, BERTH_NAME_LEN_MAX);
    expect(r, "WORKER.ADD big GPUS 2 VRAM 16777216", BERTH_OK);
    for (int i = 0; i < 40; i++) {
        snprintf(line, sizeof line, "DEPLOY %.*s%03d MODEL m BACKEND b VRAM 1 ON big:0", BERTH_NAME_LEN_MAX - 3, name, i);
        expect(r, line, BERTH_OK);
    }
    expect(r, "DEPLOY x MODEL m BACKEND b VRAM 16777216 ON big:0", BERTH_NOVRAM);
    ck_assert_uint_eq(r->out.sentence_len, strlen(r->out.sentence));
    ck_assert_uint_lt(r->out.sentence_len, BERTH_SENTENCE_LEN_MAX);
    says(r, "big");
    expect(r, "DEPLOY x MODEL m BACKEND b ON big:0", BERTH_GPUBUSY);
    ck_assert_uint_lt(r->out.sentence_len, BERTH_SENTENCE_LEN_MAX);
    /* the window keeps the cut sentence intact */
    berth_reqid_entry hit;
    ck_assert_int_eq(rig_submit(r, "DEPLOY x MODEL m BACKEND b ON big:1,0 REQID long", &hit), BERTH_REQID_NEW);
    ck_assert_int_eq(r->out.code, BERTH_GPUBUSY);
    ck_assert_int_eq(rig_submit(r, "DEPLOY x MODEL m BACKEND b ON big:0,1 REQID long", &hit), BERTH_REQID_RETRY);
    ck_assert(berth_str_eq(hit.sentence, cstr(r->out.sentence)));

    char *policy = malloc(big_text_size_max);
    ck_assert_ptr_nonnull(policy);
    int n = snprintf(policy, big_text_size_max, "POLICY.SET EXCLUSIVE");
    for (int i = 0; i < BERTH_POLICY_BACKENDS_MAX; i++) {
        n += snprintf(policy + n, (size_t)(big_text_size_max - n), "%c%.*s%02d", i ? ',' : ' ', BERTH_NAME_LEN_MAX - 2, name, i);
    }
    expect(r, policy, BERTH_OK);
    expect(r, "WORKER.ADD w1 GPUS 2", BERTH_OK);
    expect(r, "WORKER.ADD w2 GPUS 2", BERTH_OK);
    snprintf(line, sizeof line, "DEPLOY d1 MODEL m BACKEND %.*s05 ON w1:0 w2:0", BERTH_NAME_LEN_MAX - 2, name);
    expect(r, line, BERTH_OK);
    ck_assert(instance_of(r, "d1")->exclusive);
    snprintf(line, sizeof line, "DEPLOY d2 MODEL m BACKEND %.*s07 ON w2:1 w1:1", BERTH_NAME_LEN_MAX - 2, name);
    expect(r, line, BERTH_EXCLUSIVE);
    ck_assert_uint_lt(r->out.sentence_len, BERTH_SENTENCE_LEN_MAX);
    says(r, "w2");
    says(r, "d1");
    free(policy);
    rig_free(r);
}
END_TEST

/* The GPU list of a DEPLOY's sentence, the plain way: every bit in order,
 * runs of two or more as "a-b". */
static size_t ref_gpu_runs(char *buf, size_t size, uint64_t mask) {
    size_t n = 0;
    const char *sep = ":";
    for (int g = 0; g < 64; g++) {
        if (!(mask & (1ull << g))) continue;
        int end = g;
        while (end + 1 < 64 && (mask & (1ull << (end + 1)))) end++;
        n += (size_t)snprintf(buf + n, size - n, end == g ? "%s%d" : "%s%d-%d", sep, g, end);
        sep = ",";
        g = end;
    }
    return n;
}

/* A sentence cut as fmt_put cuts it: the first LEN_MAX - 1 bytes, the last
 * three of them "...". */
static void ref_cut(char *text) {
    size_t n = strlen(text);
    if (n < BERTH_SENTENCE_LEN_MAX) return;
    text[BERTH_SENTENCE_LEN_MAX - 1] = '\0';
    memcpy(text + BERTH_SENTENCE_LEN_MAX - 4, "...", 3);
}

/* DEPLOY's and RELEASE's sentences are written piece by piece (not through
 * a format): byte for byte what the plain formatting gives, GPU runs at
 * both ends of the mask, and the cut of an over-long sentence. */
START_TEST(test_deploy_sentence_exact) {
    rig *r = rig_new();
    expect(r, "WORKER.ADD big GPUS 64 VRAM 1000", BERTH_OK);
    static const uint64_t masks[] = {
        1ull, 1ull << 63, ~0ull, 0x5555555555555555ull, 0xAAAAAAAAAAAAAAAAull, 0xC000000000000007ull,
        0x8000000000000001ull, 0x7FFFFFFFFFFFFFFEull, 0x00000000000003F0ull | (1ull << 12) | (3ull << 30),
        0xFFFFFFFF00000000ull, 0x00000000FFFFFFFFull, 0x6ull,
    };
    char line[4096], want[4096], runs[1024];
    for (size_t m = 0; m < sizeof masks / sizeof masks[0]; m++) {
        int n = snprintf(line, sizeof line, "DEPLOY i%zu MODEL m BACKEND b VRAM 7 ON big", m);
        const char *sep = ":";
        for (int g = 0; g < 64; g++) {
            if (!(masks[m] & (1ull << g))) continue;
            n += snprintf(line + n, sizeof line - (size_t)n, "%s%d", sep, g);
            sep = ",";
        }
        expect(r, line, BERTH_OK);
        ref_gpu_runs(runs, sizeof runs, masks[m]);
        snprintf(want, sizeof want, "instance i%zu deployed on big%s claiming 7 MiB per GPU", m, runs);
        ck_assert_str_eq(r->out.sentence, want);
        ck_assert_uint_eq(r->out.sentence_len, strlen(want));
        snprintf(line, sizeof line, "RELEASE i%zu", m);
        expect(r, line, BERTH_OK);
        snprintf(want, sizeof want, "instance i%zu released from big", m);
        ck_assert_str_eq(r->out.sentence, want);
    }
    /* 64 workers of long names with long GPU lists: the sentence is cut. */
    char name[BERTH_NAME_LEN_MAX + 1];
    make_name(name, BERTH_NAME_LEN_MAX - 2);
    static char big[1 << 16], bigwant[1 << 16];
    int n = snprintf(big, sizeof big, "DEPLOY wide MODEL m BACKEND vllm VRAM 1 ON");
    int w = snprintf(bigwant, sizeof bigwant, "instance wide deployed on");
    for (int i = 0; i < BERTH_PLACEMENT_WORKERS_MAX; i++) {
        snprintf(line, sizeof line, "WORKER.ADD %s%02d GPUS 64 VRAM 1000", name, i);
        expect(r, line, BERTH_OK);
        uint64_t mask = masks[(size_t)i % (sizeof masks / sizeof masks[0])];
        n += snprintf(big + n, sizeof big - (size_t)n, " %s%02d", name, i);
        const char *sep = ":";
        for (int g = 0; g < 64; g++) {
            if (!(mask & (1ull << g))) continue;
            n += snprintf(big + n, sizeof big - (size_t)n, "%s%d", sep, g);
            sep = ",";
        }
        ref_gpu_runs(runs, sizeof runs, mask);
        w += snprintf(bigwant + w, sizeof bigwant - (size_t)w, "%s %s%02d%s%s", i ? "," : "", name, i, runs,
                      i == 0 ? " (main)" : "");
    }
    snprintf(bigwant + w, sizeof bigwant - (size_t)w,
             " claiming 1 MiB per GPU; holds its workers exclusively as a distributed vllm instance");
    ref_cut(bigwant);
    expect(r, big, BERTH_OK);
    ck_assert_uint_eq(r->out.sentence_len, BERTH_SENTENCE_LEN_MAX - 1);
    ck_assert_str_eq(r->out.sentence, bigwant);
    expect(r, "RELEASE wide", BERTH_OK);
    w = snprintf(bigwant, sizeof bigwant, "instance wide released from");
    for (int i = 0; i < BERTH_PLACEMENT_WORKERS_MAX; i++) {
        w += snprintf(bigwant + w, sizeof bigwant - (size_t)w, "%s %s%02d", i ? "," : "", name, i);
    }
    ref_cut(bigwant);
    ck_assert_str_eq(r->out.sentence, bigwant);
    rig_free(r);
}
END_TEST

/* The pieces of a sentence are copied by fixed-size loads and stores that
 * overlap at the end, with a branch per length class (0-3, 4-7, 8-15,
 * 16-32, longer): names of every length, as the instance and as the
 * worker, give byte for byte the formatted sentence. */
START_TEST(test_sentence_piece_lengths) {
    rig *r = rig_new();
    char line[1024], want[1024], inst[BERTH_NAME_LEN_MAX + 1], wname[BERTH_NAME_LEN_MAX + 1];
    for (size_t len = 1; len <= BERTH_NAME_LEN_MAX; len++) {
        make_name(wname, len);
        wname[0] = 'W';   /* unlike every instance name */
        snprintf(line, sizeof line, "WORKER.ADD %s GPUS 2", wname);
        expect(r, line, BERTH_OK);
        make_name(inst, len);
        snprintf(line, sizeof line, "DEPLOY %s MODEL m BACKEND b ON %s:1", inst, wname);
        expect(r, line, BERTH_OK);
        snprintf(want, sizeof want, "instance %s deployed on %s:1", inst, wname);
        ck_assert_str_eq(r->out.sentence, want);
        ck_assert_uint_eq(r->out.sentence_len, strlen(want));
        snprintf(line, sizeof line, "RELEASE %s", inst);
        expect(r, line, BERTH_OK);
        snprintf(want, sizeof want, "instance %s released from %s", inst, wname);
        ck_assert_str_eq(r->out.sentence, want);
        ck_assert_uint_eq(r->out.sentence_len, strlen(want));
    }
    rig_free(r);
}
END_TEST

/* Thousands of names through the hash tables, with removals in between:
 * every lookup and every sorted listing stays right. */
START_TEST(test_many_names) {
    enum { names_max = 3000 };
    rig *r = rig_new();
    r->check_at_end_only = true;
    char line[256];
    for (int i = 0; i < names_max; i++) {
        snprintf(line, sizeof line, "WORKER.ADD n%05d GPUS 1", (i * 7919) % names_max);   /* scrambled order */
        expect(r, line, BERTH_OK);
    }
    for (int i = 0; i < names_max; i++) {
        snprintf(line, sizeof line, "DEPLOY x%05d MODEL m BACKEND vllm ON n%05d", i, i);
        expect(r, line, BERTH_OK);
    }
    for (int i = 0; i < names_max; i += 2) {
        snprintf(line, sizeof line, "RELEASE x%05d", i);
        expect(r, line, BERTH_OK);
        snprintf(line, sizeof line, "WORKER.REMOVE n%05d", i);
        expect(r, line, BERTH_OK);
    }
    ck_assert_uint_eq(berth_state_worker_count(r->state), names_max / 2);
    ck_assert_uint_eq(berth_state_instance_count(r->state), names_max / 2);
    for (int i = 0; i < names_max; i++) {
        snprintf(line, sizeof line, "n%05d", i);
        ck_assert_msg((worker_of(r, line) != NULL) == (i % 2 == 1), "lookup of %s", line);
        snprintf(line, sizeof line, "x%05d", i);
        const berth_instance *in = instance_of(r, line);
        ck_assert_msg((in != NULL) == (i % 2 == 1), "lookup of %s", line);
        snprintf(line, sizeof line, "n%05d", i);
        if (in) ck_assert(str_is(in->slots[0].worker->name, line));
    }
    const berth_worker **ws = calloc(names_max, sizeof *ws);
    ck_assert_ptr_nonnull(ws);
    ck_assert_uint_eq(berth_state_workers_sorted(r->state, ws, names_max), names_max / 2);
    for (int i = 0; i < names_max / 2; i++) {
        snprintf(line, sizeof line, "n%05d", 2 * i + 1);
        ck_assert(str_is(ws[i]->name, line));
    }
    free(ws);
    rig_check(r);
    rig_free(r);
}
END_TEST

/* Listings through a filter, and the sorted views the state keeps between
 * changes: each answer equals a naive one (every name in order, looked up,
 * filtered), before and after changes that add, remove and re-mark names, so
 * a view kept past a change (a freed instance listed, a new one missing)
 * fails here, and under ASan as a use after free. */
typedef struct list_filter {
    const char *model;      /* NULL: any */
    int status;             /* -1: any */
} list_filter;

static bool keep_model(const berth_instance *in, void *ctx) {
    const list_filter *f = ctx;
    return f->model == NULL || str_is(in->model, f->model);
}

static bool keep_status(const berth_worker *w, void *ctx) {
    const list_filter *f = ctx;
    return f->status < 0 || (int)w->status == f->status;
}

static void expect_listings(rig *r, int names_max) {
    const berth_worker **ws = calloc((size_t)names_max + 1, sizeof *ws);
    const berth_instance **is = calloc((size_t)names_max + 1, sizeof *is);
    ck_assert(ws != NULL && is != NULL);
    char name[32];
    static const char *const models[] = { NULL, "m0", "m1", "m2", "none" };
    for (size_t k = 0; k < sizeof models / sizeof models[0]; k++) {
        list_filter f = { models[k], -1 };
        for (int round = 0; round < 2; round++) {   /* the second answer comes from a kept view */
            size_t n = k == 0 ? berth_state_instances_sorted(r->state, is, names_max)
                              : berth_state_instances_select(r->state, keep_model, &f, is, names_max);
            size_t want = 0;
            for (int i = 0; i < names_max; i++) {
                snprintf(name, sizeof name, "x%05d", i);
                const berth_instance *in = instance_of(r, name);
                if (in == NULL || !keep_model(in, &f)) continue;
                LOOP_ASSERT(want < n && is[want] == in, "instance listing (model %s) at %zu: %s",
                            f.model ? f.model : "any", want, name);
                want++;
            }
            ck_assert_uint_eq(n, want);
        }
    }
    for (int st = -1; st <= 1; st++) {
        list_filter f = { NULL, st };
        for (int round = 0; round < 2; round++) {
            size_t n = st < 0 ? berth_state_workers_sorted(r->state, ws, names_max)
                              : berth_state_workers_select(r->state, keep_status, &f, ws, names_max);
            size_t want = 0;
            for (int i = 0; i < names_max; i++) {
                snprintf(name, sizeof name, "n%05d", i);
                const berth_worker *w = worker_of(r, name);
                if (w == NULL || !keep_status(w, &f)) continue;
                LOOP_ASSERT(want < n && ws[want] == w, "worker listing (status %d) at %zu: %s", st, want, name);
                want++;
            }
            ck_assert_uint_eq(n, want);
        }
    }
    free(ws);
    free(is);
}

START_TEST(test_listing_select_views) {
    enum { names_max = 2000 };
    rig *r = rig_new();
    r->check_at_end_only = true;
    char line[256];
    expect_listings(r, names_max);   /* empty */
    for (int i = 0; i < names_max; i++) {
        snprintf(line, sizeof line, "WORKER.ADD n%05d GPUS 1", (i * 7919) % names_max);   /* scrambled order */
        expect(r, line, BERTH_OK);
    }
    for (int i = 0; i < names_max; i += 2) {
        int j = (i * 7919) % names_max;
        snprintf(line, sizeof line, "DEPLOY x%05d MODEL m%d BACKEND vllm ON n%05d", j, j % 3, j);
        expect(r, line, BERTH_OK);
    }
    expect_listings(r, names_max);
    for (int i = 0; i < names_max; i += 6) {   /* instances freed, workers removed and cordoned */
        snprintf(line, sizeof line, "RELEASE x%05d", i);
        expect(r, line, BERTH_OK);
        snprintf(line, sizeof line, "WORKER.REMOVE n%05d", i);
        expect(r, line, BERTH_OK);
        snprintf(line, sizeof line, "WORKER.CORDON n%05d", i + 1);
        expect(r, line, BERTH_OK);
    }
    expect_listings(r, names_max);
    for (int i = 0; i < names_max; i += 6) {   /* and back, at the same names */
        snprintf(line, sizeof line, "WORKER.ADD n%05d GPUS 1", i);
        expect(r, line, BERTH_OK);
        snprintf(line, sizeof line, "DEPLOY x%05d MODEL m2 BACKEND vllm ON n%05d", i, i);
        expect(r, line, BERTH_OK);
    }
    expect_listings(r, names_max);
    rig_check(r);
    rig_free(r);
}
END_TEST

/* ---- request ids -------------------------------------------------------- */

/* What a server does: check the window, apply only a NEW command. */
static berth_reqid_status rig_submit(rig *r, const char *line, berth_reqid_entry *hit) {
    rig_prepare(r, line);
    LOOP_ASSERT(r->p->cmd.reqid.len > 0, "'%s' has no REQID", line);
    berth_reqid_status st = berth_state_reqid_check(r->state, r->p->cmd.reqid,
                                                    berth_str_make(r->canonical, r->canonical_len), hit);
    if (st != BERTH_REQID_NEW) return st;
    int rc = berth_state_apply(r->state, &r->p->cmd, berth_str_make(r->canonical, r->canonical_len), r->seq + 1,
                               &r->out);
    LOOP_ASSERT(rc == 0, "apply '%s' returned %d", line, rc);
    r->seq++;
    rig_check(r);
    return st;
}

static berth_code rig_submit_line(rig *r, const char *line) {
    berth_reqid_entry hit;
    ck_assert_int_eq(rig_submit(r, line, &hit), BERTH_REQID_NEW);
    return r->out.code;
}

START_TEST(test_reqid_retry_and_conflict) {
    rig *r = rig_new();
    berth_reqid_entry hit;
    ck_assert_int_eq(rig_submit(r, "WORKER.ADD w1 GPUS 2 REQID r1", &hit), BERTH_REQID_NEW);
    ck_assert_int_eq(r->out.code, BERTH_OK);
    char first_sentence[BERTH_SENTENCE_LEN_MAX];
    memcpy(first_sentence, r->out.sentence, sizeof first_sentence);
    ck_assert_uint_eq(berth_state_reqid_count(r->state), 1);
    /* the same command, spelled differently: a retry answered with the first outcome */
    memset(&hit, 0, sizeof hit);
    ck_assert_int_eq(rig_submit(r, "worker.add w1 gpus 2 reqid r1", &hit), BERTH_REQID_RETRY);
    ck_assert_uint_eq(hit.seq, 1);
    ck_assert_int_eq(hit.code, BERTH_OK);
    ck_assert(str_is(hit.reqid, "r1"));
    ck_assert(berth_str_eq(hit.sentence, cstr(first_sentence)));
    ck_assert_uint_eq(berth_state_last_seq(r->state), 1);   /* nothing appended */
    ck_assert(id_of_is(hit.command_id, "WORKER.ADD w1 GPUS 2"));
    /* the same id with another command: a conflict naming the first seq */
    ck_assert_int_eq(rig_submit(r, "WORKER.ADD w1 GPUS 3 REQID r1", &hit), BERTH_REQID_CONFLICT);
    ck_assert_uint_eq(hit.seq, 1);
    ck_assert_int_eq(rig_submit(r, "WORKER.CORDON w1 REQID r1", &hit), BERTH_REQID_CONFLICT);
    /* a refusal is remembered too, and stays the answer after the world changed */
    ck_assert_int_eq(rig_submit(r, "DEPLOY i1 MODEL m BACKEND vllm ON w2 REQID r2", &hit), BERTH_REQID_NEW);
    ck_assert_int_eq(r->out.code, BERTH_NOWORKER);
    ck_assert_uint_eq(r->seq, 2);
    expect(r, "WORKER.ADD w2 GPUS 1", BERTH_OK);
    ck_assert_int_eq(rig_submit(r, "DEPLOY i1 MODEL m BACKEND vllm ON w2 REQID r2", &hit), BERTH_REQID_RETRY);
    ck_assert_int_eq(hit.code, BERTH_NOWORKER);
    ck_assert_uint_eq(hit.seq, 2);
    ck_assert_uint_eq(berth_state_instance_count(r->state), 0);
    /* a command without REQID does not enter the window */
    ck_assert_uint_eq(berth_state_reqid_count(r->state), 2);
    berth_reqid_entry e;
    berth_state_reqid_at(r->state, 0, &e);
    ck_assert(str_is(e.reqid, "r1"));
    ck_assert_uint_eq(e.seq, 1);
    berth_state_reqid_at(r->state, 1, &e);
    ck_assert(str_is(e.reqid, "r2"));
    ck_assert_int_eq(e.code, BERTH_NOWORKER);
    ck_assert(id_of_is(e.command_id, "DEPLOY i1 MODEL m BACKEND vllm ON w2"));
    /* an unknown id is new */
    ck_assert_int_eq(berth_state_reqid_check(r->state, cstr("r3"), cstr("RELEASE x"), &hit), BERTH_REQID_NEW);
    rig_free(r);
}
END_TEST

/* Two RELEASEs with one FNV-1a 64 (found by Pollard rho, review hV6): the
 * window's identity was that hash, so the second under the first's REQID
 * was answered as its retry, leaking the first outcome. */
START_TEST(test_reqid_fnv_collision_is_a_conflict) {
    ck_assert_uint_eq(berth_command_hash(cstr("RELEASE dpxqAPiBDLB")), berth_command_hash(cstr("RELEASE bqvEUO8RCQE")));
    rig *r = rig_new();
    berth_reqid_entry hit;
    ck_assert_int_eq(rig_submit(r, "RELEASE dpxqAPiBDLB REQID r1", &hit), BERTH_REQID_NEW);
    ck_assert_int_eq(r->out.code, BERTH_NOINSTANCE);
    ck_assert_int_eq(rig_submit(r, "RELEASE bqvEUO8RCQE REQID r1", &hit), BERTH_REQID_CONFLICT);
    ck_assert_uint_eq(hit.seq, 1);
    ck_assert_int_eq(rig_submit(r, "RELEASE dpxqAPiBDLB REQID r1", &hit), BERTH_REQID_RETRY);
    rig_free(r);
}
END_TEST

/* The identity is SHA-256's first 16 bytes (FIPS 180-4 vectors; the
 * one- and two-block tails around 55/56 bytes are checked against
 * OpenSSL in test_replay). */
START_TEST(test_command_id_is_sha256_prefix) {
    static const uint8_t empty[BERTH_COMMAND_ID_LEN] = { 0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14,
                                                         0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24 };
    static const uint8_t abc[BERTH_COMMAND_ID_LEN] = { 0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea,
                                                       0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23 };
    static const uint8_t two_blocks[BERTH_COMMAND_ID_LEN] = { 0x24, 0x8d, 0x6a, 0x61, 0xd2, 0x06, 0x38, 0xb8,
                                                              0xe5, 0xc0, 0x26, 0x93, 0x0c, 0x3e, 0x60, 0x39 };
    uint8_t id[BERTH_COMMAND_ID_LEN];
    berth_command_id(berth_str_make("", 0), id);
    ck_assert_mem_eq(id, empty, sizeof id);
    berth_command_id(cstr("abc"), id);
    ck_assert_mem_eq(id, abc, sizeof id);
    berth_command_id(cstr("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"), id);
    ck_assert_mem_eq(id, two_blocks, sizeof id);
}
END_TEST

START_TEST(test_command_hash_is_fnv1a) {
    ck_assert_uint_eq(berth_command_hash(berth_str_make("", 0)), 0xcbf29ce484222325ull);
    ck_assert_uint_eq(berth_command_hash(cstr("a")), 0xaf63dc4c8601ec8cull);
    ck_assert_uint_eq(berth_command_hash(cstr("foobar")), 0x85944171f73967e8ull);
}
END_TEST

/* After BERTH_REQID_WINDOW newer ids the oldest is forgotten, not before. */
START_TEST(test_reqid_window_eviction) {
    rig *r = rig_new();
    berth_reqid_entry hit;
    ck_assert_int_eq(rig_submit(r, "WORKER.ADD w1 GPUS 1 REQID first", &hit), BERTH_REQID_NEW);
    char line[128];
    for (int i = 0; i < BERTH_REQID_WINDOW; i++) {
        if (i == BERTH_REQID_WINDOW - 1) {
            /* window full of first + 16383 newer: first is still remembered */
            ck_assert_uint_eq(berth_state_reqid_count(r->state), BERTH_REQID_WINDOW);
            ck_assert_int_eq(rig_submit(r, "WORKER.ADD w1 GPUS 1 REQID first", &hit), BERTH_REQID_RETRY);
            berth_reqid_entry oldest;
            berth_state_reqid_at(r->state, 0, &oldest);
            ck_assert(str_is(oldest.reqid, "first"));
        }
        snprintf(line, sizeof line, "WORKER.CORDON w1 REQID n%d", i);
        ck_assert_int_eq(rig_submit(r, line, &hit), BERTH_REQID_NEW);
    }
    ck_assert_uint_eq(berth_state_reqid_count(r->state), BERTH_REQID_WINDOW);
    berth_reqid_entry oldest, newest;
    berth_state_reqid_at(r->state, 0, &oldest);
    berth_state_reqid_at(r->state, BERTH_REQID_WINDOW - 1, &newest);
    ck_assert(str_is(oldest.reqid, "n0"));
    snprintf(line, sizeof line, "n%d", BERTH_REQID_WINDOW - 1);
    ck_assert(str_is(newest.reqid, line));
    ck_assert_uint_eq(newest.seq, r->seq);
    /* first is forgotten: the same command is new again (and is applied: EXISTS) */
    ck_assert_int_eq(rig_submit(r, "WORKER.ADD w1 GPUS 1 REQID first", &hit), BERTH_REQID_NEW);
    ck_assert_int_eq(r->out.code, BERTH_EXISTS);
    ck_assert_int_eq(rig_submit(r, "WORKER.CORDON w1 REQID n1", &hit), BERTH_REQID_RETRY);
    ck_assert_int_eq(rig_submit(r, "WORKER.CORDON w1 REQID n0", &hit), BERTH_REQID_NEW);   /* evicted by first */
    rig_free(r);
}
END_TEST

/* ---- allocation failure ------------------------------------------------- */

/* An allocator that fails exactly its fail_at-th call (1-based) and counts
 * live blocks, so a leak or a double free shows up as a nonzero balance. */
typedef struct fail_alloc {
    uint64_t calls;
    uint64_t fail_at;   /* 0: never */
    bool fired;
    int64_t live;
} fail_alloc;

static bool fail_alloc_now(fail_alloc *fa) {
    fa->calls++;
    if (fa->fail_at != 0 && fa->calls == fa->fail_at) {
        fa->fired = true;
        return true;
    }
    return false;
}

static void *fa_alloc(void *ctx, size_t size) {
    fail_alloc *fa = ctx;
    if (fail_alloc_now(fa)) return NULL;
    void *p = malloc(size);
    if (p) fa->live++;
    return p;
}

static void *fa_realloc(void *ctx, void *ptr, size_t size) {
    fail_alloc *fa = ctx;
    if (fail_alloc_now(fa)) return NULL;
    void *q = realloc(ptr, size);
    if (q && !ptr) fa->live++;
    return q;
}

static void fa_free(void *ctx, void *ptr) {
    fail_alloc *fa = ctx;
    if (!ptr) return;
    fa->live--;
    ck_assert_int_ge(fa->live, 0);
    free(ptr);
}

/* A released instance's block is kept for the next DEPLOY: deploy/release
 * cycles stop calling the allocator once the spare lists hold a block of
 * the class, trim gives the spares back, and free returns everything. */
/* Commands built by hand may carry wrong name hashes: apply must still find
 * what is there and store only true hashes (a carried hash saves a rehash on
 * a hit; it never decides). */
START_TEST(test_stale_carried_hashes) {
    berth_state *s = berth_state_new(NULL);
    ck_assert_ptr_nonnull(s);
    rig *r = rig_new();
    static berth_outcome out;
    const char *lines[] = { "WORKER.ADD w1 GPUS 2", "WORKER.ADD w1 GPUS 2", "DEPLOY i1 MODEL m BACKEND vllm ON w1",
                            "DEPLOY i1 MODEL m BACKEND vllm ON w1", "RELEASE i1", "WORKER.REMOVE w1",
                            "WORKER.CORDON w1" };
    const berth_code want[] = { BERTH_OK, BERTH_EXISTS, BERTH_OK, BERTH_EXISTS, BERTH_OK, BERTH_OK, BERTH_NOWORKER };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        rig_prepare(r, lines[i]);
        berth_cmd *c = &r->p->cmd;
        c->name_hash ^= 0x9e3779b97f4a7c15ull;   /* stale */
        for (uint32_t k = 0; k < c->place_count; k++) c->place[k].worker_hash += 1;
        ck_assert_int_eq(berth_state_apply(s, c, berth_str_make(r->canonical, r->canonical_len), i + 1, &out), 0);
        ck_assert_msg(out.code == want[i], "%s: got %s", lines[i], berth_code_name(out.code));
        char why[256];
        ck_assert_msg(berth_state_check(s, why, sizeof why), "%s: %s", lines[i], why);
        if (i == 0) ck_assert_ptr_nonnull(berth_state_worker(s, berth_str_make("w1", 2)));
    }
    ck_assert_uint_eq(berth_state_worker_count(s), 0);
    ck_assert_uint_eq(berth_state_instance_count(s), 0);
    berth_state_free(s);
    rig_free(r);
}
END_TEST

/* apply_expect says exactly what apply says, code and state alike, and
 * builds the sentence only when the code is not the expected one. */
START_TEST(test_apply_expect) {
    static const struct { const char *line; berth_code code; } steps[] = {
        { "WORKER.ADD w1 GPUS 2 VRAM 1000", BERTH_OK },
        { "WORKER.ADD w1 GPUS 2", BERTH_EXISTS },
        { "WORKER.ADD w2 GPUS 2", BERTH_OK },
        { "WORKER.ADD w3 GPUS 2", BERTH_OK },
        { "DEPLOY a MODEL m BACKEND vllm ON w1 w2", BERTH_OK },
        { "DEPLOY b MODEL m BACKEND vllm ON w3 w2", BERTH_EXCLUSIVE },
        { "DEPLOY a MODEL m BACKEND vllm ON w3", BERTH_EXISTS },
        { "DEPLOY c MODEL m BACKEND vllm ON w9", BERTH_NOWORKER },
        { "DEPLOY c MODEL m BACKEND vllm ON w3:1,5", BERTH_NOGPU },
        { "DEPLOY c MODEL m BACKEND sglang ON w3:0", BERTH_OK },
        { "DEPLOY d MODEL m BACKEND sglang ON w3:0", BERTH_GPUBUSY },
        { "WORKER.ADD w4 GPUS 1 VRAM 1000", BERTH_OK },
        { "DEPLOY e MODEL m BACKEND sglang VRAM 600 ON w4:0", BERTH_OK },
        { "DEPLOY f MODEL m BACKEND sglang VRAM 600 ON w4:0", BERTH_NOVRAM },
        { "WORKER.CORDON w3", BERTH_OK },
        { "DEPLOY g MODEL m BACKEND sglang ON w3:1", BERTH_CORDONED },
        { "RELEASE zz", BERTH_NOINSTANCE },
        { "WORKER.REMOVE w3", BERTH_BUSY },
        { "RELEASE a", BERTH_OK },
        { "POLICY.SET EXCLUSIVE sglang,vllm", BERTH_OK },
        { "WORKER.UNCORDON w3", BERTH_OK },
        { "DEPLOY h MODEL m BACKEND vllm ON w2 REQID r1", BERTH_OK },
        { "RELEASE c", BERTH_OK },
        { "WORKER.REMOVE w3", BERTH_OK },
    };
    berth_state *st[3];
    for (int k = 0; k < 3; k++) {
        st[k] = berth_state_new(NULL);
        ck_assert_ptr_nonnull(st[k]);
    }
    rig *r = rig_new();
    static berth_outcome want, same, other;
    bool seen[BERTH_CODE_COUNT] = { false };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        rig_prepare(r, steps[i].line);
        berth_str canonical = berth_str_make(r->canonical, r->canonical_len);
        uint64_t seq = i + 1;
        ck_assert_int_eq(berth_state_apply(st[0], &r->p->cmd, canonical, seq, &want), 0);
        ck_assert_msg(want.code == steps[i].code, "%s: %s", steps[i].line, berth_code_name(want.code));
        ck_assert_uint_gt(want.sentence_len, 0);
        seen[want.code] = true;
        berth_code differs = (berth_code)((want.code + 1) % BERTH_CODE_COUNT);
        ck_assert_int_eq(berth_state_apply_expect(st[1], &r->p->cmd, canonical, seq, want.code, &same), 0);
        ck_assert_int_eq(berth_state_apply_expect(st[2], &r->p->cmd, canonical, seq, differs, &other), 0);
        ck_assert_int_eq(same.code, want.code);
        ck_assert_int_eq(other.code, want.code);
        /* The window keeps a REQID's sentence, so then it is always built. */
        ck_assert_uint_eq(same.sentence_len, r->p->cmd.reqid.len ? want.sentence_len : 0);
        ck_assert_uint_eq(other.sentence_len, want.sentence_len);
        ck_assert_str_eq(other.sentence, want.sentence);
        for (int k = 1; k < 3; k++) {
            char why[256];
            ck_assert_msg(berth_state_check(st[k], why, sizeof why), "%s", why);
            ck_assert_uint_eq(berth_state_worker_count(st[k]), berth_state_worker_count(st[0]));
            ck_assert_uint_eq(berth_state_instance_count(st[k]), berth_state_instance_count(st[0]));
        }
    }
    for (int c = 0; c < BERTH_CODE_COUNT; c++) ck_assert_msg(seen[c], "no step says %s", berth_code_name((berth_code)c));
    for (int k = 0; k < 3; k++) berth_state_free(st[k]);
    rig_free(r);
}
END_TEST

START_TEST(test_instance_blocks_reused) {
    fail_alloc fa = { 0, 0, false, 0 };
    berth_allocator al = { fa_alloc, fa_realloc, fa_free, &fa };
    berth_state *s = berth_state_new(&al);
    ck_assert_ptr_nonnull(s);
    rig *scratch = rig_new();
    static berth_outcome out;
    uint64_t seq = 0;
    char line[256];
    const char *setup[] = { "WORKER.ADD w1 GPUS 8", "WORKER.ADD w2 GPUS 8" };
    for (size_t i = 0; i < 2; i++) {
        rig_prepare(scratch, setup[i]);
        ck_assert_int_eq(berth_state_apply(s, &scratch->p->cmd, berth_str_make(scratch->canonical, scratch->canonical_len),
                                           ++seq, &out), 0);
    }
    uint64_t calls_after_first = 0;
    int64_t live_after_first = 0;
    for (int round = 0; round < 50; round++) {
        /* Two shapes whose blocks differ by more than a size class (64 bytes
         * of model name): two spare lists, one block each. */
        const char *forms[] = { "DEPLOY i%03d MODEL m BACKEND vllm ON w1:%d",
                                "DEPLOY i%03d MODEL m-of-a-name-long-enough-to-need-a-larger-block-of-memory-xx "
                                "BACKEND vllm ON w1:%d w2" };
        snprintf(line, sizeof line, forms[round % 2], round, round % 8);
        rig_prepare(scratch, line);
        ck_assert_int_eq(berth_state_apply(s, &scratch->p->cmd, berth_str_make(scratch->canonical, scratch->canonical_len),
                                           ++seq, &out), 0);
        ck_assert_int_eq(out.code, BERTH_OK);
        snprintf(line, sizeof line, "i%03d", round);
        const void *kept = berth_state_instance(s, berth_str_make(line, strlen(line)));
        ck_assert_ptr_nonnull(kept);
        snprintf(line, sizeof line, "RELEASE i%03d", round);
        rig_prepare(scratch, line);
        ck_assert_int_eq(berth_state_apply(s, &scratch->p->cmd, berth_str_make(scratch->canonical, scratch->canonical_len),
                                           ++seq, &out), 0);
        ck_assert_int_eq(out.code, BERTH_OK);
#if TEST_ASAN
        /* On its spare list the block is poisoned: a kept pointer is still a use after free. */
        ck_assert(__asan_address_is_poisoned(kept));
        ck_assert(__asan_address_is_poisoned((const char *)kept + 31));
#endif
        (void)kept;
        char why[256];
        ck_assert_msg(berth_state_check(s, why, sizeof why), "%s", why);
        if (round == 1) {
            calls_after_first = fa.calls;
            live_after_first = fa.live;
        }
    }
    ck_assert_uint_eq(fa.calls, calls_after_first);   /* every later DEPLOY reused a block */
    ck_assert_int_eq(fa.live, live_after_first);
    berth_state_trim(s);
    ck_assert_int_eq(fa.live, live_after_first - 2);  /* the two spares went back */
    ck_assert_uint_eq(berth_state_instance_count(s), 0);
    berth_state_free(s);
    ck_assert_int_eq(fa.live, 0);
    rig_free(scratch);
}
END_TEST

/* A worker keeps its first served entries inside its own block and moves
 * them to a list of their own past that: many instances on one worker, in
 * deploy order, released from the middle, and the failure of the move's
 * allocation leaving the state as it was. */
START_TEST(test_served_list_grows) {
    rig *r = rig_new();
    expect(r, "WORKER.ADD big GPUS 64 VRAM 1000", BERTH_OK);
    char line[128];
    for (int i = 0; i < 64; i++) {
        snprintf(line, sizeof line, "DEPLOY i%02d MODEL m BACKEND sglang ON big:%d", i, i);
        expect(r, line, BERTH_OK);
    }
    const berth_worker *w = berth_state_worker(r->state, cstr("big"));
    ck_assert_uint_eq(w->served_count, 64);
    for (int i = 0; i < 64; i++) {
        snprintf(line, sizeof line, "i%02d", i);
        ck_assert(str_is(w->served[i]->name, line));
    }
    for (int i = 10; i < 60; i += 3) {
        snprintf(line, sizeof line, "RELEASE i%02d", i);
        expect(r, line, BERTH_OK);
    }
    expect(r, "WORKER.REMOVE big", BERTH_BUSY);
    rig_free(r);

    /* The fifth instance needs the list moved out of the block: fail that allocation. */
    for (uint64_t fail_at = 1; fail_at < 40; fail_at++) {
        fail_alloc fa = { 0, 0, false, 0 };
        berth_allocator al = { fa_alloc, fa_realloc, fa_free, &fa };
        berth_state *s = berth_state_new(&al);
        ck_assert_ptr_nonnull(s);
        rig *scratch = rig_new();
        static berth_outcome out;
        uint64_t seq = 0;
        for (int i = -1; i < 8; i++) {
            if (i < 0) snprintf(line, sizeof line, "WORKER.ADD w GPUS 8");
            else snprintf(line, sizeof line, "DEPLOY j%d MODEL m BACKEND vllm ON w:%d", i, i);
            rig_prepare(scratch, line);
            berth_str canon = berth_str_make(scratch->canonical, scratch->canonical_len);
            fa.calls = 0;
            fa.fail_at = fail_at;
            fa.fired = false;
            int rc = berth_state_apply(s, &scratch->p->cmd, canon, seq + 1, &out);
            fa.fail_at = 0;
            if (rc != 0) {
                ck_assert(fa.fired);
                ck_assert_uint_eq(berth_state_last_seq(s), seq);
                rc = berth_state_apply(s, &scratch->p->cmd, canon, seq + 1, &out);
            }
            ck_assert_int_eq(rc, 0);
            ck_assert_int_eq(out.code, BERTH_OK);
            seq++;
            char why[256];
            ck_assert_msg(berth_state_check(s, why, sizeof why), "%s", why);
        }
        ck_assert_uint_eq(berth_state_worker(s, cstr("w"))->served_count, 8);
        berth_state_free(s);
        ck_assert_int_eq(fa.live, 0);
        rig_free(scratch);
    }
}
END_TEST

/* Bounded text appender for the canonical dump. */
typedef struct dump {
    char *buf;
    size_t len;
} dump;

static void dumpf(dump *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void dumpf(dump *d, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(d->buf + d->len, dump_size_max - d->len, fmt, ap);
    va_end(ap);
    LOOP_ASSERT(n >= 0 && (size_t)n < dump_size_max - d->len, "a dump past %d bytes", dump_size_max);
    d->len += (size_t)n;
}

static void dump_worker(dump *d, const berth_worker *w) {
    dumpf(d, "worker %.*s gpus=%u vram=%u status=%d added=%llu labels=", (int)w->name.len, w->name.ptr, w->gpu_count,
          w->vram_mib, (int)w->status, (unsigned long long)w->added_seq);
    for (uint32_t i = 0; i < w->label_count; i++) {
        dumpf(d, "%.*s=%.*s,", (int)w->labels[i].key.len, w->labels[i].key.ptr, (int)w->labels[i].value.len,
              w->labels[i].value.ptr);
    }
    dumpf(d, " served=");
    for (uint32_t i = 0; i < w->served_count; i++) dumpf(d, "%.*s,", (int)w->served[i]->name.len, w->served[i]->name.ptr);
    const berth_instance *h = berth_worker_exclusive_holder(w);
    dumpf(d, " holder=%.*s free=%llx\n", h ? (int)h->name.len : 0, h ? h->name.ptr : "",
          (unsigned long long)berth_worker_free_gpu_mask(w));
    for (uint32_t g = 0; g < w->gpu_count; g++) {
        const berth_instance *wh = w->gpus[g].whole_holder;
        dumpf(d, "  gpu %u whole=%.*s claimed=%u count=%u\n", g, wh ? (int)wh->name.len : 0, wh ? wh->name.ptr : "",
              w->gpus[g].claimed_mib, w->gpus[g].claim_count);
    }
}

static void dump_instance(dump *d, const berth_instance *in) {
    dumpf(d, "instance %.*s model=%.*s backend=%.*s claim=%u seq=%llu dist=%d excl=%d slots=", (int)in->name.len,
          in->name.ptr, (int)in->model.len, in->model.ptr, (int)in->backend.len, in->backend.ptr, in->claim_mib,
          (unsigned long long)in->deploy_seq, (int)in->distributed, (int)in->exclusive);
    for (uint32_t i = 0; i < in->slot_count; i++) {
        dumpf(d, "%.*s:%llx,", (int)in->slots[i].worker->name.len, in->slots[i].worker->name.ptr,
              (unsigned long long)in->slots[i].gpu_mask);
    }
    dumpf(d, "\n");
}

/* Everything the public API can say about a state, as text. */
static void dump_state(const berth_state *s, dump *d) {
    d->len = 0;
    dumpf(d, "seq %llu\npolicy", (unsigned long long)berth_state_last_seq(s));
    const berth_str *pol = NULL;
    uint32_t np = berth_state_policy(s, &pol);
    for (uint32_t i = 0; i < np; i++) dumpf(d, " %.*s", (int)pol[i].len, pol[i].ptr);
    dumpf(d, "\n");
    size_t nw = berth_state_worker_count(s);
    const berth_worker **ws = calloc(nw + 1, sizeof *ws);
    LOOP_ASSERT(ws != NULL, "out of memory");
    LOOP_ASSERT(berth_state_workers_sorted(s, ws, nw) == nw, "fewer than %zu workers sorted", nw);
    for (size_t i = 0; i < nw; i++) dump_worker(d, ws[i]);
    free(ws);
    size_t ni = berth_state_instance_count(s);
    const berth_instance **is = calloc(ni + 1, sizeof *is);
    LOOP_ASSERT(is != NULL, "out of memory");
    LOOP_ASSERT(berth_state_instances_sorted(s, is, ni) == ni, "fewer than %zu instances sorted", ni);
    for (size_t i = 0; i < ni; i++) dump_instance(d, is[i]);
    free(is);
    size_t nr = berth_state_reqid_count(s);
    for (size_t i = 0; i < nr; i++) {
        berth_reqid_entry e;
        berth_state_reqid_at(s, i, &e);
        char id[2 * BERTH_COMMAND_ID_LEN + 1];
        for (size_t k = 0; k < BERTH_COMMAND_ID_LEN; k++) snprintf(id + 2 * k, 3, "%02x", e.command_id[k]);
        dumpf(d, "reqid %.*s id=%s seq=%llu code=%d %.*s\n", (int)e.reqid.len, e.reqid.ptr, id,
              (unsigned long long)e.seq, (int)e.code, (int)e.sentence.len, e.sentence.ptr);
    }
    char why[512] = "";
    LOOP_ASSERT(berth_state_check(s, why, sizeof why), "state check failed: %s", why);
}

/* A scenario touching every allocation path: names, labels, slots, served
 * lists growing past small capacities, policy, the reqid window, removal. */
static const char *const alloc_scenario[] = {
    "POLICY.SET EXCLUSIVE vllm,sglang REQID p1",
    "WORKER.ADD w1 GPUS 8 VRAM 81920 LABEL zone=eu rack=r1 gen=h100",
    "WORKER.ADD w2 GPUS 8 VRAM 81920 LABEL zone=eu REQID add-w2",
    "WORKER.ADD w3 GPUS 4",
    "WORKER.ADD w4 GPUS 0 LABEL cpu=yes",
    "WORKER.ADD w1 GPUS 1 REQID dup",
    "DEPLOY d1 MODEL meta/llama-3-70b BACKEND vllm ON w1:0,1 w2:0,1 REQID dep-d1",
    "DEPLOY d2 MODEL qwen BACKEND vllm ON w2:2 w3:0",
    "DEPLOY l1 MODEL m BACKEND vllm VRAM 36864 ON w1:2",
    "DEPLOY l2 MODEL m BACKEND vllm VRAM 36864 ON w1:2",
    "DEPLOY l3 MODEL m BACKEND vllm VRAM 36864 ON w1:2 REQID full",
    "DEPLOY l4 MODEL m BACKEND llama.cpp ON w1:3",
    "DEPLOY l5 MODEL m BACKEND llama.cpp ON w1:4",
    "DEPLOY l6 MODEL m BACKEND llama.cpp ON w1:5",
    "DEPLOY l7 MODEL m BACKEND llama.cpp ON w1:6",
    "DEPLOY l8 MODEL m BACKEND llama.cpp ON w1:7",
    "DEPLOY c1 MODEL m BACKEND llama.cpp ON w4",
    "DEPLOY s1 MODEL m BACKEND sglang VRAM 1024 ON w2:3,4 w1:2",
    "POLICY.SET EXCLUSIVE vllm",
    "DEPLOY s2 MODEL m BACKEND sglang ON w2:5 w3:1",
    "WORKER.CORDON w3",
    "DEPLOY x MODEL m BACKEND vllm ON w3:2",
    "RELEASE l1 REQID rel-l1",
    "RELEASE ghost",
    "WORKER.REMOVE w3",
    "RELEASE d2",
    "RELEASE s2",
    "WORKER.REMOVE w3 REQID rm-w3",
    "WORKER.ADD w3 GPUS 2 VRAM 1024 LABEL a=b",
    "WORKER.UNCORDON w1",
    "RELEASE d1",
    "DEPLOY d3 MODEL m BACKEND vllm VRAM 512 ON w3 w2:6",
    "RELEASE l8",
};

enum { alloc_scenario_len = sizeof alloc_scenario / sizeof alloc_scenario[0] };

typedef struct scenario_ref {
    berth_code code[alloc_scenario_len];
    char *sentence[alloc_scenario_len];
    dump final;
} scenario_ref;

/* Run the scenario on a state with allocator fa; when ref->final.len == 0
 * record the reference, else compare with it. A failed apply must leave
 * the dump unchanged and then succeed on the retry. */
typedef int (*apply_fn)(berth_state *, const berth_cmd *, berth_str, uint64_t, berth_outcome *);

static void run_alloc_scenario(fail_alloc *fa, scenario_ref *ref, rig *scratch, dump *before, dump *after,
                               bool quiet) {
    apply_fn apply = quiet ? berth_state_apply_quiet : berth_state_apply;
    berth_allocator al = { fa_alloc, fa_realloc, fa_free, fa };
    berth_state *s = berth_state_new(&al);
    if (!s) {
        ck_assert_msg(fa->fired, "berth_state_new returned NULL with memory available");
        ck_assert_int_eq(fa->live, 0);
        return;
    }
    bool recording = ref->final.len == 0;
    for (uint64_t i = 0; i < alloc_scenario_len; i++) {
        rig_prepare(scratch, alloc_scenario[i]);
        berth_str canon = berth_str_make(scratch->canonical, scratch->canonical_len);
        dump_state(s, before);
        int rc = apply(s, &scratch->p->cmd, canon, i + 1, &scratch->out);
        if (rc == -1) {
            LOOP_ASSERT(fa->fired, "apply returned -1 with memory available at '%s'", alloc_scenario[i]);
            dump_state(s, after);
            LOOP_ASSERT(before->len == after->len && memcmp(before->buf, after->buf, before->len) == 0,
                        "failed allocation %llu changed the state at '%s':\nbefore:\n%s\nafter:\n%s",
                        (unsigned long long)fa->fail_at, alloc_scenario[i], before->buf, after->buf);
            rc = apply(s, &scratch->p->cmd, canon, i + 1, &scratch->out);
        }
        LOOP_ASSERT(rc == 0, "apply '%s' failed after the allocator recovered", alloc_scenario[i]);
        if (recording) {
            ref->code[i] = scratch->out.code;
            ref->sentence[i] = strdup(scratch->out.sentence);
            ck_assert_ptr_nonnull(ref->sentence[i]);
        } else {
            LOOP_ASSERT(scratch->out.code == ref->code[i], "'%s': code %s, the reference's %s", alloc_scenario[i],
                        berth_code_name(scratch->out.code), berth_code_name(ref->code[i]));
            /* quiet apply keeps the sentence only for a REQID's window entry */
            if (!quiet || scratch->p->cmd.reqid.len) {
                LOOP_ASSERT(strcmp(scratch->out.sentence, ref->sentence[i]) == 0, "'%s': '%s', the reference's '%s'",
                            alloc_scenario[i], scratch->out.sentence, ref->sentence[i]);
            } else {
                LOOP_ASSERT(scratch->out.sentence_len == 0, "'%s': a quiet sentence of %u bytes", alloc_scenario[i],
                            scratch->out.sentence_len);
            }
        }
    }
    dump_state(s, after);
    if (recording) {
        memcpy(ref->final.buf, after->buf, after->len + 1);
        ref->final.len = after->len;
    } else {
        ck_assert_msg(after->len == ref->final.len && memcmp(after->buf, ref->final.buf, after->len) == 0,
                      "final state differs after failure at allocation %llu", (unsigned long long)fa->fail_at);
    }
    berth_state_free(s);
    ck_assert_msg(fa->live == 0, "%lld blocks leaked (failure at allocation %llu)", (long long)fa->live,
                  (unsigned long long)fa->fail_at);
}

START_TEST(test_alloc_failure_every_k) {
    rig *scratch = rig_new();
    scenario_ref *ref = calloc(1, sizeof *ref);
    ck_assert_ptr_nonnull(ref);
    ref->final.buf = malloc(dump_size_max);
    dump before = { malloc(dump_size_max), 0 };
    dump after = { malloc(dump_size_max), 0 };
    ck_assert(ref->final.buf && before.buf && after.buf);

    fail_alloc fa = { 0, 0, false, 0 };
    run_alloc_scenario(&fa, ref, scratch, &before, &after, false);
    ck_assert_uint_gt(ref->final.len, 0);
    uint64_t total = fa.calls;
    /* The scenario does allocate: not on every command (instance blocks come
     * back from spare lists, served lists start inside the worker's block),
     * but at least once for every two, so every-k failures land all over it. */
    ck_assert_uint_ge(total, alloc_scenario_len / 2);
    /* The reference saw the outcomes the rules demand, so it is worth comparing to. */
    ck_assert_int_eq(ref->code[5], BERTH_EXISTS);
    ck_assert_int_eq(ref->code[7], BERTH_EXCLUSIVE);
    ck_assert_int_eq(ref->code[10], BERTH_NOVRAM);
    ck_assert_int_eq(ref->code[24], BERTH_BUSY);
    ck_assert_int_eq(ref->code[31], BERTH_OK);

    /* Replay's quiet apply goes through the same allocations and must end equal. */
    for (int quiet = 0; quiet <= 1; quiet++) {
        uint64_t k = 1;
        for (; k <= alloc_fail_k_max; k++) {
            fail_alloc f = { 0, k, false, 0 };
            run_alloc_scenario(&f, ref, scratch, &before, &after, quiet);
            if (!f.fired) break;
        }
        ck_assert_uint_lt(k, alloc_fail_k_max);
        ck_assert_uint_ge(k, total);   /* every allocation point of the clean run was failed once */
    }
    for (size_t i = 0; i < alloc_scenario_len; i++) free(ref->sentence[i]);
    free(ref->final.buf);
    free(ref);
    free(before.buf);
    free(after.buf);
    rig_free(scratch);
}
END_TEST

/* ---- restore (snapshot load) ------------------------------------------- */

/* Rebuild src through the restore API from what its queries say; -1 when a
 * restore call refuses. */
static int restore_copy(const berth_state *src, berth_state *dst) {
    const berth_str *pol = NULL;
    uint32_t np = berth_state_policy(src, &pol);
    if (berth_state_restore_policy(dst, pol, np) != 0) return -1;
    size_t nw = berth_state_worker_count(src);
    const berth_worker **ws = calloc(nw + 1, sizeof *ws);
    ck_assert_ptr_nonnull(ws);
    ck_assert_uint_eq(berth_state_workers_sorted(src, ws, nw), nw);
    int rc = 0;
    for (size_t i = 0; i < nw && rc == 0; i++) {
        rc = berth_state_restore_worker(dst, ws[i]->name, ws[i]->gpu_count, ws[i]->vram_mib, ws[i]->status,
                                        ws[i]->added_seq, ws[i]->labels, ws[i]->label_count);
    }
    free(ws);
    size_t ni = berth_state_instance_count(src);
    const berth_instance **is = calloc(ni + 1, sizeof *is);
    ck_assert_ptr_nonnull(is);
    ck_assert_uint_eq(berth_state_instances_sorted(src, is, ni), ni);
    for (size_t a = 0; a < ni; a++) {   /* deploy-seq order, by selection */
        for (size_t b = a + 1; b < ni; b++) {
            if (is[b]->deploy_seq < is[a]->deploy_seq) {
                const berth_instance *t = is[a];
                is[a] = is[b];
                is[b] = t;
            }
        }
    }
    for (size_t a = 0; a < ni && rc == 0; a++) {
        berth_str names[BERTH_PLACEMENT_WORKERS_MAX];
        uint64_t masks[BERTH_PLACEMENT_WORKERS_MAX];
        for (uint32_t k = 0; k < is[a]->slot_count; k++) {
            names[k] = is[a]->slots[k].worker->name;
            masks[k] = is[a]->slots[k].gpu_mask;
        }
        rc = berth_state_restore_instance(dst, is[a]->name, is[a]->model, is[a]->backend, is[a]->claim_mib,
                                          is[a]->deploy_seq, names, masks, is[a]->slot_count);
    }
    free(is);
    for (size_t i = 0; i < berth_state_reqid_count(src) && rc == 0; i++) {
        berth_reqid_entry e;
        berth_state_reqid_at(src, i, &e);
        rc = berth_state_restore_reqid(dst, &e);
    }
    if (rc == 0) berth_state_set_last_seq(dst, berth_state_last_seq(src));
    return rc;
}

/* A state with everything in it, cordons and a policy change included,
 * restores to an identical dump and then judges identically. */
START_TEST(test_restore_roundtrip) {
    rig *r = rig_new();
    expect(r, "WORKER.ADD w1 GPUS 8 VRAM 81920 LABEL zone=eu rack=r1", BERTH_OK);
    expect(r, "WORKER.ADD w2 GPUS 4 VRAM 40960", BERTH_OK);
    expect(r, "WORKER.ADD w3 GPUS 2", BERTH_OK);
    expect(r, "DEPLOY d1 MODEL m BACKEND vllm ON w1:0 w2:0", BERTH_OK);
    expect(r, "DEPLOY c1 MODEL m BACKEND vllm VRAM 36864 ON w1:1", BERTH_OK);
    expect(r, "DEPLOY c2 MODEL m BACKEND sglang VRAM 36864 ON w1:1 w2:1", BERTH_OK);
    expect(r, "DEPLOY l1 MODEL m BACKEND llama.cpp ON w3", BERTH_OK);
    expect(r, "WORKER.CORDON w3", BERTH_OK);
    expect(r, "WORKER.CORDON w1", BERTH_OK);
    ck_assert_int_eq(rig_submit_line(r, "RELEASE ghost REQID g1"), BERTH_NOINSTANCE);
    rig_check(r);
    berth_state *copy = berth_state_new(NULL);
    ck_assert_ptr_nonnull(copy);
    ck_assert_int_eq(restore_copy(r->state, copy), 0);
    dump a = { malloc(dump_size_max), 0 };
    dump b = { malloc(dump_size_max), 0 };
    ck_assert(a.buf && b.buf);
    dump_state(r->state, &a);
    dump_state(copy, &b);
    ck_assert_str_eq(a.buf, b.buf);
    /* the restored state judges the next command exactly as the live one */
    berth_outcome out;
    expect(r, "DEPLOY d2 MODEL m BACKEND vllm ON w1:2 w2:2", BERTH_CORDONED);
    ck_assert_int_eq(berth_state_apply(copy, &r->p->cmd, berth_str_make(r->canonical, r->canonical_len), r->seq, &out), 0);
    ck_assert_int_eq(out.code, BERTH_CORDONED);
    ck_assert_str_eq(out.sentence, r->out.sentence);
    berth_reqid_entry hit;
    ck_assert_int_eq(berth_state_reqid_check(copy, cstr("g1"), cstr("RELEASE ghost"), &hit), BERTH_REQID_RETRY);
    free(a.buf);
    free(b.buf);
    berth_state_free(copy);
    rig_free(r);
}
END_TEST

/* A policy change may leave two exclusive holders on one worker; that state
 * is legal (nobody is evicted), so its snapshot must restore. */
START_TEST(test_restore_two_exclusive_holders) {
    rig *r = rig_new();
    add_workers(r, "4", 3);
    expect(r, "DEPLOY s1 MODEL m BACKEND sglang ON w1:0 w2:0", BERTH_OK);
    expect(r, "DEPLOY s2 MODEL m BACKEND sglang ON w2:1 w3:0", BERTH_OK);
    expect(r, "POLICY.SET EXCLUSIVE sglang", BERTH_OK);
    ck_assert(instance_of(r, "s1")->exclusive && instance_of(r, "s2")->exclusive);
    berth_state *copy = berth_state_new(NULL);
    ck_assert_ptr_nonnull(copy);
    ck_assert_int_eq(restore_copy(r->state, copy), 0);
    char why[256] = "";
    ck_assert_msg(berth_state_check(copy, why, sizeof why), "restored state fails its check: %s", why);
    ck_assert(berth_state_instance(copy, cstr("s2"))->exclusive);
    ck_assert_uint_eq(berth_state_worker(copy, cstr("w2"))->served_count, 2);
    berth_state_free(copy);
    rig_free(r);
}
END_TEST

/* Input that breaks an invariant is refused, and nothing is half-restored. */
START_TEST(test_restore_rejects) {
    berth_state *s = berth_state_new(NULL);
    ck_assert_ptr_nonnull(s);
    berth_str bad_policy[2] = { cstr("vllm"), cstr("sglang") };   /* not sorted */
    ck_assert_int_eq(berth_state_restore_policy(s, bad_policy, 2), -1);
    berth_str policy[1] = { cstr("vllm") };
    ck_assert_int_eq(berth_state_restore_policy(s, policy, 1), 0);
    ck_assert_int_eq(berth_state_restore_worker(s, cstr("w1"), 2, 1000, BERTH_WORKER_ACTIVE, 1, NULL, 0), 0);
    ck_assert_int_eq(berth_state_restore_worker(s, cstr("w1"), 2, 0, BERTH_WORKER_ACTIVE, 2, NULL, 0), -1);   /* duplicate */
    ck_assert_int_eq(berth_state_restore_worker(s, cstr("w@"), 2, 0, BERTH_WORKER_ACTIVE, 2, NULL, 0), -1);
    ck_assert_int_eq(berth_state_restore_worker(s, cstr("w9"), 65, 0, BERTH_WORKER_ACTIVE, 2, NULL, 0), -1);
    berth_label unsorted[2] = { { cstr("z"), cstr("1") }, { cstr("a"), cstr("2") } };
    ck_assert_int_eq(berth_state_restore_worker(s, cstr("w9"), 1, 0, BERTH_WORKER_ACTIVE, 2, unsorted, 2), -1);
    ck_assert_int_eq(berth_state_restore_worker(s, cstr("w2"), 2, 0, BERTH_WORKER_CORDONED, 2, NULL, 0), 0);
    berth_str w1[1] = { cstr("w1") };
    berth_str ghost[1] = { cstr("ghost") };
    berth_str twice[2] = { cstr("w1"), cstr("w1") };
    uint64_t m1[2] = { 0x1, 0x2 };
    ck_assert_int_eq(berth_state_restore_instance(s, cstr("a"), cstr("m"), cstr("vllm"), 0, 3, w1, m1, 1), 0);
    ck_assert_int_eq(berth_state_restore_instance(s, cstr("a"), cstr("m"), cstr("vllm"), 0, 4, w1, m1 + 1, 1), -1);
    ck_assert_int_eq(berth_state_restore_instance(s, cstr("b"), cstr("m"), cstr("vllm"), 0, 4, w1, m1, 1), -1);   /* GPU held twice */
    ck_assert_int_eq(berth_state_restore_instance(s, cstr("b"), cstr("m"), cstr("vllm"), 0, 4, ghost, m1, 1), -1);
    ck_assert_int_eq(berth_state_restore_instance(s, cstr("b"), cstr("m"), cstr("vllm"), 0, 4, twice, m1, 2), -1);
    uint64_t beyond[1] = { 0x4 };
    ck_assert_int_eq(berth_state_restore_instance(s, cstr("b"), cstr("m"), cstr("vllm"), 0, 4, w1, beyond, 1), -1);
    ck_assert_int_eq(berth_state_restore_instance(s, cstr("b"), cstr("m"), cstr("vllm"), 2000, 4, w1, m1 + 1, 1), -1);   /* over VRAM */
    ck_assert_int_eq(berth_state_instance_count(s), 1);
    ck_assert_ptr_null(berth_state_instance(s, cstr("b")));
    ck_assert(berth_worker_free_gpu_mask(berth_state_worker(s, cstr("w1"))) == 0x2);
    /* a cordoned worker still takes its restored instances */
    berth_str w2[1] = { cstr("w2") };
    ck_assert_int_eq(berth_state_restore_instance(s, cstr("c"), cstr("m"), cstr("vllm"), 0, 5, w2, m1, 1), 0);
    ck_assert_int_eq(berth_state_worker(s, cstr("w2"))->status, BERTH_WORKER_CORDONED);
    berth_reqid_entry e = { .reqid = cstr("r1"), .seq = 6, .code = BERTH_NOINSTANCE, .sentence = cstr("gone") };
    berth_command_id(cstr("RELEASE x"), e.command_id);
    ck_assert_int_eq(berth_state_restore_reqid(s, &e), 0);
    ck_assert_int_eq(berth_state_restore_reqid(s, &e), -1);   /* duplicate id */
    berth_state_set_last_seq(s, 6);
    ck_assert_uint_eq(berth_state_last_seq(s), 6);
    char why[256] = "";
    ck_assert_msg(berth_state_check(s, why, sizeof why), "%s", why);
    berth_state_free(s);
}
END_TEST

/* ---- suite -------------------------------------------------------------- */

static Suite *core_suite(void) {
    Suite *s = suite_create("core");
    TCase *names = tcase_create("names");
    tcase_add_test(names, test_name_valid);
    tcase_add_test(names, test_name_valid_every_byte);
    tcase_add_test(names, test_name_hash_and_cmd_hashes);
    tcase_add_test(names, test_stale_carried_hashes);
    tcase_add_test(names, test_apply_expect);
    tcase_add_test(names, test_parse_u64);
    tcase_add_test(names, test_str_order);
    tcase_add_test(names, test_kind_and_code_names);
    tcase_set_timeout(names, TCASE_TIMEOUT_S);
    suite_add_tcase(s, names);

    TCase *parse = tcase_create("parse");
    tcase_add_test(parse, test_parse_errors);
    tcase_add_test(parse, test_parse_name_lengths);
    tcase_add_test(parse, test_parse_list_limits);
    tcase_add_test(parse, test_parse_fields);
    tcase_add_test(parse, test_parse_reqid);
    tcase_add_test(parse, test_parse_unplaceable_worker);
    tcase_add_test(parse, test_parse_bare_reqid);
    tcase_add_test(parse, test_canonical_exact);
    tcase_add_test(parse, test_canonical_roundtrip);
    tcase_add_test(parse, test_canonical_spellings_equal);
    tcase_add_test(parse, test_canonical_small_buffer);
    tcase_add_test(parse, test_is_canonical);
    tcase_add_test(parse, test_canonical_always_fits);
    tcase_add_test(parse, test_canonical_limit_exact);
    tcase_add_test(parse, test_split);
    tcase_add_test(parse, test_split_every_position);
    tcase_add_test(parse, test_parse_error_texts);
    tcase_add_test(parse, test_parse_random_roundtrip);
    tcase_set_timeout(parse, TCASE_TIMEOUT_S);
    suite_add_tcase(s, parse);

    TCase *rules = tcase_create("rules");
    tcase_add_test(rules, test_worker_add_and_exists);
    tcase_add_test(rules, test_deploy_sentence_exact);
    tcase_add_test(rules, test_sentence_piece_lengths);
    tcase_add_test(rules, test_noworker);
    tcase_add_test(rules, test_noinstance);
    tcase_add_test(rules, test_deploy_records_instance);
    tcase_add_test(rules, test_exists_instance_first);
    tcase_add_test(rules, test_refused_by);
    tcase_add_test(rules, test_cordon);
    tcase_add_test(rules, test_sentence_plurals);
    tcase_add_test(rules, test_sentence_wording_1);
    tcase_add_test(rules, test_nogpu);
    tcase_add_test(rules, test_seed_case_exclusive);
    tcase_add_test(rules, test_exclusive_main_and_subordinate);
    tcase_add_test(rules, test_local_instances_share);
    tcase_add_test(rules, test_gpubusy);
    tcase_add_test(rules, test_vram_claims_share);
    tcase_add_test(rules, test_novram_without_vram);
    tcase_add_test(rules, test_sglang_not_exclusive);
    tcase_add_test(rules, test_policy_set);
    tcase_add_test(rules, test_remove_busy);
    tcase_add_test(rules, test_check_order);
    tcase_add_test(rules, test_outcome_after_refusal_is_clean);
    tcase_add_test(rules, test_long_sentences_bounded);
    tcase_add_test(rules, test_many_names);
    tcase_add_test(rules, test_listing_select_views);
    tcase_set_timeout(rules, TCASE_TIMEOUT_S);
    suite_add_tcase(s, rules);

    TCase *restore = tcase_create("restore");
    tcase_add_test(restore, test_restore_roundtrip);
    tcase_add_test(restore, test_restore_two_exclusive_holders);
    tcase_add_test(restore, test_restore_rejects);
    tcase_set_timeout(restore, TCASE_TIMEOUT_S);
    suite_add_tcase(s, restore);

    TCase *reqid = tcase_create("reqid");
    tcase_add_test(reqid, test_reqid_retry_and_conflict);
    tcase_add_test(reqid, test_command_hash_is_fnv1a);
    tcase_add_test(reqid, test_command_id_is_sha256_prefix);
    tcase_add_test(reqid, test_reqid_fnv_collision_is_a_conflict);
    tcase_add_test(reqid, test_reqid_window_eviction);
    tcase_set_timeout(reqid, TCASE_TIMEOUT_S);
    suite_add_tcase(s, reqid);

    TCase *alloc = tcase_create("alloc");
    tcase_add_test(alloc, test_alloc_failure_every_k);
    tcase_add_test(alloc, test_instance_blocks_reused);
    tcase_add_test(alloc, test_served_list_grows);
    tcase_set_timeout(alloc, TCASE_TIMEOUT_S);
    suite_add_tcase(s, alloc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(core_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
