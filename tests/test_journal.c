/* test_journal.c — owns the journal module's unit tests (ctest `journal`).
 *
 * The codec is tested byte by byte (round trip, every truncation, every bit
 * flip, unknown version, trailing bytes, hostile headers, seeded random
 * bytes); the LMDB store through journal.h only, except where a test must
 * plant damage the API can never write (a gap, a flipped stored byte): those
 * open the environment with LMDB directly, in a child process, as another
 * tool would. Every data directory lives under one mkdtemp root made and
 * removed by the unchecked fixture, so a failed test leaves nothing behind.
 * Processes stand in for berthd and its tools where two opens must not share
 * an LMDB environment in one process (LMDB's locks are per process). */
#define _GNU_SOURCE
#include <check.h>
#include <dlfcn.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <lmdb.h>
#include <msgpack.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "journal.h"
#include "backend.h"
#include "berth_limits.h"
#include "fold_sort.h"
#include "history_runs.h"
#include "appender.h"

#include "test_asan.h"
#include "test_valgrind.h"

enum {
    text_len_max = 64,          /* command text of the records tests build */
    batch_small = 64,
    crash_rounds = 3,
    fuzz_inputs = 200000,       /* seeded random inputs to the decoder */
    fuzz_len_max = 300,
    reader_loops_min = 20,      /* the growth test's reader must really run */
    err_len_max = 512
};

/* Check records a location for every ck_assert that passes: a strdup and a
 * write(2) to its message file. The loops here that check once per record,
 * per decoded input or per HISTORY entry passed that way about two million
 * times, and each of those is many times dearer under valgrind than the
 * check itself. loop_assert fails exactly like ck_assert_msg (this file and
 * line, the expression or the message) but costs nothing when it passes. */
#define loop_assert_msg(expr, ...) \
    do { if (!(expr)) ck_abort_msg(__VA_ARGS__); } while (0)
#define loop_assert(expr) loop_assert_msg(expr, "Assertion '%s' failed", #expr)

static char temp_root[] = "/tmp/berth-journal-test-XXXXXX";
static unsigned dir_counter;

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

/* Each test case with this fixture makes a root of its own: mkdtemp
 * overwrote the template's X's the time before. */
static void root_make(void) {
    memcpy(temp_root + sizeof(temp_root) - 7, "XXXXXX", 6);
    ck_assert_ptr_nonnull(mkdtemp(temp_root));
}

/* Where store_disk_full mounts its small tmpfs. */
static void disk_mount_path(char *out, size_t size) {
    int n = snprintf(out, size, "%s/tmpfs", temp_root);
    ck_assert(n > 0 && (size_t)n < size);
}

static void root_remove(void) {
    /* The test runs in a forked child: if it failed, the mount is still up. */
    char mount_path[300];
    disk_mount_path(mount_path, sizeof(mount_path));
    (void)umount2(mount_path, MNT_DETACH);
    int rc = nftw(temp_root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    ck_assert_int_eq(rc, 0);
}

/* A fresh data directory path (not created: the writable open creates it). */
static void dir_fresh(char *out, size_t size) {
    int n = snprintf(out, size, "%s/d%u-%d", temp_root, dir_counter++, (int)getpid());
    ck_assert(n > 0 && (size_t)n < size);
}

/* ---- records --------------------------------------------------------- */

typedef struct built {
    berth_record rec;
    char command[text_len_max];
    char actor[text_len_max];
} built;

/* A deterministic record for seq; its strings live in b. */
static void build(built *b, uint64_t seq) {
    memset(b, 0, sizeof(*b));
    int n = snprintf(b->command, sizeof(b->command), "WORKER.ADD w%" PRIu64 " GPUS 8", seq);
    loop_assert(n > 0 && n < text_len_max);
    int a = snprintf(b->actor, sizeof(b->actor), "ctl-%" PRIu64, seq % 7);
    loop_assert(a > 0 && a < text_len_max);
    b->rec.seq = seq;
    b->rec.time_ms = 1700000000000ull + seq;
    b->rec.actor = berth_str_make(b->actor, (size_t)a);
    b->rec.reqid = berth_str_make("", 0);
    b->rec.command = berth_str_make(b->command, (size_t)n);
    b->rec.code = (uint32_t)(seq % 10);
    b->rec.sentence = berth_str_make("", 0);
}

/* Append n records from head+1 and check the result. */
static berth_jerr append_n(berth_journal *j, uint64_t first, size_t n) {
    built *b = calloc(n, sizeof(*b));
    ck_assert_ptr_nonnull(b);
    berth_record *recs = calloc(n, sizeof(*recs));
    ck_assert_ptr_nonnull(recs);
    for (size_t i = 0; i < n; i++) {
        build(&b[i], first + i);
        recs[i] = b[i].rec;
    }
    berth_jerr err = berth_journal_append(j, recs, NULL, n);
    free(recs);
    free(b);
    return err;
}

/* The writable journal the test has open (tests hold one at a time). A
 * child forked meanwhile exits without closing what it inherited, and
 * valgrind's leak check at that exit calls the journal lost unless a root
 * still points at it; the compiler may reuse a local's register on the
 * child's path, and drop stores to a plain static nobody reads. volatile
 * keeps the store. */
static berth_journal *volatile held_writer;

static berth_journal *open_writer(const char *dir, const berth_journal_options *o) {
    berth_journal *j = NULL;
    char err[err_len_max];
    berth_jerr rc = berth_journal_open_lmdb(&j, dir, o, err, sizeof(err));
    ck_assert_msg(rc == BERTH_J_OK, "open %s: %s %s", dir, berth_jerr_name(rc), err);
    held_writer = j;
    return j;
}

static berth_journal *open_rw(const char *dir, uint64_t map_initial, uint64_t map_max) {
    berth_journal_options o = { .map_size_initial = map_initial, .map_size_max = map_max };
    return open_writer(dir, &o);
}

static void close_rw(berth_journal *j) {
    ck_assert_ptr_eq(j, held_writer);
    held_writer = NULL;
    berth_journal_close(j);
}

/* berth_journal_size's total on disk and the journal environment's map. */
static berth_jerr sizes_of(berth_journal *j, uint64_t *disk, uint64_t *map) {
    berth_journal_sizes sizes;
    berth_jerr err = berth_journal_size(j, &sizes);
    *disk = sizes.disk_bytes;
    *map = sizes.map_bytes;
    return err;
}

static uint64_t head_of(berth_journal *j, uint8_t hash[BERTH_HASH_LEN]) {
    uint64_t seq = 99;
    uint8_t scratch[BERTH_HASH_LEN];
    ck_assert_int_eq(berth_journal_head(j, &seq, hash != NULL ? hash : scratch), BERTH_J_OK);
    return seq;
}

/* Walk 1..head: dense seqs, every hash good, every prev_hash the previous
 * record's hash, and each record as build() made it. Returns the head. */
static uint64_t chain_check(berth_journal *j) {
    berth_journal_reader *r;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    uint64_t head;
    uint8_t head_hash[BERTH_HASH_LEN];
    ck_assert_int_eq(berth_journal_reader_head(r, &head, head_hash), BERTH_J_OK);
    berth_journal_cursor *c;
    ck_assert_int_eq(berth_journal_cursor_open(r, 1, &c), BERTH_J_OK);
    uint8_t prev[BERTH_HASH_LEN] = { 0 };
    uint64_t count = 0;
    berth_record rec;
    const uint8_t *raw;
    size_t raw_len;
    berth_jerr err;
    while ((err = berth_journal_cursor_next(c, &rec, &raw, &raw_len)) == BERTH_J_OK) {
        count++;
        loop_assert_msg(rec.seq == count, "seq %" PRIu64 " where %" PRIu64 " belongs",
                        rec.seq, count);
        loop_assert(berth_record_hash_ok(raw, raw_len));
        loop_assert(memcmp(rec.prev_hash, prev, BERTH_HASH_LEN) == 0);
        built b;
        build(&b, rec.seq);
        loop_assert(rec.command.len == b.rec.command.len &&
                    memcmp(rec.command.ptr, b.command, rec.command.len) == 0);
        loop_assert(rec.time_ms == b.rec.time_ms);
        memcpy(prev, rec.hash, BERTH_HASH_LEN);
    }
    ck_assert_int_eq(err, BERTH_J_NOTFOUND);
    ck_assert_uint_eq(count, head);
    ck_assert_mem_eq(prev, head_hash, BERTH_HASH_LEN);
    berth_journal_cursor_close(c);
    berth_journal_reader_close(r);
    return head;
}

/* ---- children ------------------------------------------------------- */

/* A child is this program run afresh (fork, then exec at once) with
 * --child NAME DIR FD, never a bare fork that goes on running test code:
 * tests fork while a journal's fold thread runs, a fork copies only the
 * forking thread, and a lock another thread held at that moment (the
 * sanitizer's allocator, seen in CI; malloc's) stays held for ever in the
 * child, which then hangs at its first allocation. Every child function is
 * in the table before main (children). */
typedef int (*child_fn)(const char *dir, int fd);
static char self_exe[4096];   /* this program */
static const char *child_name_of(child_fn fn);

/* Start fn(dir, fd) in a fresh process of this program; close_fd (or -1)
 * is closed in the child first (the parent's end of a pipe). */
static pid_t child_spawn(child_fn fn, const char *dir, int fd, int close_fd) {
    const char *name = child_name_of(fn);
    ck_assert_ptr_nonnull(name);
    char fd_text[16];
    int n = snprintf(fd_text, sizeof(fd_text), "%d", fd);
    ck_assert(n > 0 && (size_t)n < sizeof(fd_text));
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (close_fd >= 0) {
            close(close_fd);
        }
        execl(self_exe, self_exe, "--child", name, dir, fd_text, (char *)NULL);
        _exit(126);
    }
    return pid;
}

/* Run fn in a child process; true when it exited 0. */
static bool in_child(child_fn fn, const char *dir, int fd) {
    pid_t pid = child_spawn(fn, dir, fd, -1);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok) {
        fprintf(stderr, "test_journal: child %s (%s, %d) ended with status 0x%x\n",
                child_name_of(fn), dir, fd, (unsigned)status);
    }
    return ok;
}

/* ---- codec ----------------------------------------------------------- */

static size_t encode_full(berth_record *rec, uint8_t *buf, size_t cap) {
    size_t len = berth_record_encode(rec, buf, cap);
    ck_assert_uint_gt(len, 0);
    return len;
}

START_TEST(codec_round_trip) {
    char actor[BERTH_NAME_LEN_MAX], reqid[BERTH_NAME_LEN_MAX];
    char sentence[BERTH_SENTENCE_LEN_MAX - 1];
    static char command[BERTH_COMMAND_LEN_MAX];
    memset(actor, 'a', sizeof(actor));
    memset(reqid, 'r', sizeof(reqid));
    memset(sentence, 's', sizeof(sentence));
    memset(command, 'c', sizeof(command));
    berth_record in = {
        .version = BERTH_RECORD_VERSION, .seq = UINT64_MAX, .time_ms = 1764150000123ull,
        .actor = berth_str_make(actor, sizeof(actor)),
        .reqid = berth_str_make(reqid, sizeof(reqid)),
        .command = berth_str_make(command, sizeof(command)),
        .code = UINT32_MAX, .sentence = berth_str_make(sentence, sizeof(sentence)),
    };
    for (int i = 0; i < BERTH_HASH_LEN; i++) in.prev_hash[i] = (uint8_t)(i * 7 + 1);
    static uint8_t buf[BERTH_RECORD_BYTES_MAX];
    size_t len = encode_full(&in, buf, sizeof(buf));

    uint8_t digest[BERTH_HASH_LEN];
    SHA256(buf, len - 2 - BERTH_HASH_LEN, digest);
    ck_assert_mem_eq(digest, in.hash, BERTH_HASH_LEN);
    ck_assert_mem_eq(buf + len - BERTH_HASH_LEN, in.hash, BERTH_HASH_LEN);
    ck_assert(berth_record_hash_ok(buf, len));

    berth_record out;
    char why[err_len_max];
    ck_assert_int_eq(berth_record_decode(buf, len, &out, why, sizeof(why)), BERTH_J_OK);
    ck_assert_uint_eq(out.version, BERTH_RECORD_VERSION);
    ck_assert_uint_eq(out.seq, UINT64_MAX);
    ck_assert_uint_eq(out.time_ms, 1764150000123ull);
    ck_assert_uint_eq(out.code, UINT32_MAX);
    ck_assert(out.actor.len == sizeof(actor) && memcmp(out.actor.ptr, actor, sizeof(actor)) == 0);
    ck_assert(out.reqid.len == sizeof(reqid) && memcmp(out.reqid.ptr, reqid, sizeof(reqid)) == 0);
    ck_assert(out.command.len == sizeof(command) &&
              memcmp(out.command.ptr, command, sizeof(command)) == 0);
    ck_assert(out.sentence.len == sizeof(sentence) &&
              memcmp(out.sentence.ptr, sentence, sizeof(sentence)) == 0);
    ck_assert_mem_eq(out.prev_hash, in.prev_hash, BERTH_HASH_LEN);
    ck_assert_mem_eq(out.hash, in.hash, BERTH_HASH_LEN);
    /* Strings point into the input, not into a copy. */
    ck_assert((const uint8_t *)out.command.ptr > buf &&
              (const uint8_t *)out.command.ptr < buf + len);

    /* Small values and empty strings take their short forms and come back. */
    built b;
    build(&b, 1);
    b.rec.version = BERTH_RECORD_VERSION;
    size_t small = encode_full(&b.rec, buf, sizeof(buf));
    /* fixarray, fixint version and seq, uint64 time, fixstr actor, empty reqid,
     * fixstr command, fixint code, empty sentence, bin8 prev_hash, bin8 hash. */
    size_t expected = 1 + 1 + 1 + 9 + (1 + b.rec.actor.len) + 1 + (1 + b.rec.command.len) + 1 +
                      1 + (2 + BERTH_HASH_LEN) + (2 + BERTH_HASH_LEN);
    ck_assert_uint_eq(small, expected);
    ck_assert_int_eq(berth_record_decode(buf, small, &out, NULL, 0), BERTH_J_OK);
    ck_assert_uint_eq(out.seq, 1);
    ck_assert_uint_eq(out.actor.len, b.rec.actor.len);
    ck_assert_uint_eq(out.reqid.len, 0);
    ck_assert_uint_eq(out.sentence.len, 0);
    ck_assert_uint_eq(out.code, 1);

    /* A version-1 record, as journals before session 16 hold: the same
     * layout, decoded by both roads and peeked, its version kept. */
    b.rec.version = BERTH_RECORD_VERSION_MIN;
    small = encode_full(&b.rec, buf, sizeof(buf));
    ck_assert_uint_eq(small, expected);
    ck_assert_int_eq(berth_record_decode(buf, small, &out, NULL, 0), BERTH_J_OK);
    ck_assert_uint_eq(out.version, 1);
    uint64_t seq = 0, time_ms = 0;
    ck_assert(berth_record_peek_time(buf, small, &seq, &time_ms));
    ck_assert_uint_eq(seq, 1);
    const uint8_t *prev = NULL, *hash = NULL;
    ck_assert(berth_record_peek_chain(buf, small, &seq, &prev, &hash));
    b.rec.version = BERTH_RECORD_VERSION + 1;
    ck_assert_uint_eq(berth_record_encode(&b.rec, buf, sizeof(buf)), 0);   /* not one this build writes */
}
END_TEST

/* berth_record_peek_time reads what decode would, for every width of the
 * seq and the time, and refuses what does not start as a version-1 body. */
START_TEST(codec_peek_time) {
    static uint8_t buf[BERTH_RECORD_BYTES_MAX];
    const uint64_t values[] = { 1, 127, 128, 255, 256, 65535, 65536, 4294967295ull, 4294967296ull,
                                1764150000123ull, UINT64_MAX };
    const size_t n = sizeof(values) / sizeof(values[0]);
    for (size_t i = 0; i < n; i++) {
        built b;
        build(&b, values[i]);
        b.rec.version = BERTH_RECORD_VERSION;
        b.rec.time_ms = values[n - 1 - i];
        size_t len = encode_full(&b.rec, buf, sizeof(buf));
        uint64_t seq = 0, time_ms = 0;
        ck_assert(berth_record_peek_time(buf, len, &seq, &time_ms));
        berth_record out;
        ck_assert_int_eq(berth_record_decode(buf, len, &out, NULL, 0), BERTH_J_OK);
        ck_assert_uint_eq(seq, out.seq);
        ck_assert_uint_eq(time_ms, out.time_ms);
        ck_assert_uint_eq(time_ms, values[n - 1 - i]);
        ck_assert(!berth_record_peek_time(buf, 3, &seq, &time_ms));   /* cut short */
        buf[1] = BERTH_RECORD_VERSION + 1;
        ck_assert(!berth_record_peek_time(buf, len, &seq, &time_ms));  /* another version */
        buf[1] = BERTH_RECORD_VERSION;
        buf[0] ^= 0x01;
        ck_assert(!berth_record_peek_time(buf, len, &seq, &time_ms));  /* not array(9) */
    }
}
END_TEST

START_TEST(codec_encode_limits) {
    built b;
    build(&b, 5);
    b.rec.version = BERTH_RECORD_VERSION;
    uint8_t buf[256];
    size_t len = encode_full(&b.rec, buf, sizeof(buf));
    for (size_t cap = 0; cap < len; cap++) {
        ck_assert_uint_eq(berth_record_encode(&b.rec, buf, cap), 0);
    }
    char long_name[BERTH_NAME_LEN_MAX + 1];
    memset(long_name, 'x', sizeof(long_name));
    static char long_command[BERTH_COMMAND_LEN_MAX + 1];
    memset(long_command, 'c', sizeof(long_command));
    char long_sentence[BERTH_SENTENCE_LEN_MAX];
    memset(long_sentence, 's', sizeof(long_sentence));
    static uint8_t big[BERTH_RECORD_BYTES_MAX];

    berth_record r = b.rec;
    r.actor = berth_str_make(long_name, sizeof(long_name));
    ck_assert_uint_eq(berth_record_encode(&r, big, sizeof(big)), 0);
    r = b.rec;
    r.reqid = berth_str_make(long_name, sizeof(long_name));
    ck_assert_uint_eq(berth_record_encode(&r, big, sizeof(big)), 0);
    r = b.rec;
    r.command = berth_str_make(long_command, sizeof(long_command));
    ck_assert_uint_eq(berth_record_encode(&r, big, sizeof(big)), 0);
    r = b.rec;
    r.command = berth_str_make("", 0);
    ck_assert_uint_eq(berth_record_encode(&r, big, sizeof(big)), 0);
    r = b.rec;
    r.sentence = berth_str_make(long_sentence, sizeof(long_sentence));
    ck_assert_uint_eq(berth_record_encode(&r, big, sizeof(big)), 0);
    r = b.rec;
    r.version = BERTH_RECORD_VERSION + 1;
    ck_assert_uint_eq(berth_record_encode(&r, big, sizeof(big)), 0);
    r = b.rec;
    r.seq = 0;
    ck_assert_uint_eq(berth_record_encode(&r, big, sizeof(big)), 0);
}
END_TEST

/* The encoder as every journal before the hand-written one was encoded:
 * msgpack-c's packer, field by field, into a growing buffer. */
static int sbuffer_write_checked(void *data, const char *bytes, size_t len) {
    return msgpack_sbuffer_write(data, bytes, len);
}

static void packer_encode(const berth_record *rec, msgpack_sbuffer *sb) {
    msgpack_sbuffer_clear(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, sbuffer_write_checked);
    const berth_str strs[4] = { rec->actor, rec->reqid, rec->command, rec->sentence };
    ck_assert_int_eq(msgpack_pack_array(&pk, 9), 0);
    ck_assert_int_eq(msgpack_pack_uint32(&pk, rec->version), 0);
    ck_assert_int_eq(msgpack_pack_uint64(&pk, rec->seq), 0);
    ck_assert_int_eq(msgpack_pack_uint64(&pk, rec->time_ms), 0);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(msgpack_pack_str_with_body(&pk, strs[i].ptr, strs[i].len), 0);
    }
    ck_assert_int_eq(msgpack_pack_uint32(&pk, rec->code), 0);
    ck_assert_int_eq(msgpack_pack_str_with_body(&pk, strs[3].ptr, strs[3].len), 0);
    ck_assert_int_eq(msgpack_pack_bin_with_body(&pk, rec->prev_hash, BERTH_HASH_LEN), 0);
    uint8_t digest[BERTH_HASH_LEN];
    SHA256((const uint8_t *)sb->data, sb->size, digest);
    ck_assert_int_eq(msgpack_pack_bin_with_body(&pk, digest, BERTH_HASH_LEN), 0);
}

/* Byte for byte what msgpack-c's packer writes, on every integer and string
 * form's edges: the records already on disk must keep their hashes. */
START_TEST(codec_encode_matches_packer) {
    static const uint64_t ints[] = { 0, 1, 127, 128, 255, 256, 65535, 65536, 4294967295ull,
                                     4294967296ull, 1764150000123ull, UINT64_MAX };
    static const uint32_t name_lens[] = { 0, 1, 31, 32, 127, BERTH_NAME_LEN_MAX };
    static const uint32_t command_lens[] = { 1, 31, 32, 255, 256, 4096, BERTH_COMMAND_LEN_MAX };
    static const uint32_t sentence_lens[] = { 0, 31, 32, 255, 256, BERTH_SENTENCE_LEN_MAX - 1 };
    enum { ints_n = sizeof(ints) / sizeof(ints[0]),
           names_n = sizeof(name_lens) / sizeof(name_lens[0]),
           commands_n = sizeof(command_lens) / sizeof(command_lens[0]),
           sentences_n = sizeof(sentence_lens) / sizeof(sentence_lens[0]) };
    static char text[BERTH_COMMAND_LEN_MAX];
    for (size_t i = 0; i < sizeof(text); i++) text[i] = (char)('a' + i % 26);
    static uint8_t buf[BERTH_RECORD_BYTES_MAX];
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    uint32_t checked = 0;
    /* Every combination of one field's edge with the others at a mixed pick. */
    for (uint32_t k = 0; k < ints_n * names_n * commands_n * sentences_n; k++) {
        uint32_t a = k % ints_n, b = k / ints_n % names_n, c = k / ints_n / names_n % commands_n;
        uint32_t d = k / ints_n / names_n / commands_n;
        berth_record rec = {
            .version = BERTH_RECORD_VERSION,
            .seq = ints[a] == 0 ? 1 : ints[a],
            .time_ms = ints[(a + b + d) % ints_n],
            .actor = berth_str_make(text, name_lens[b]),
            .reqid = berth_str_make(text + 1, name_lens[(b + c) % names_n]),
            .command = berth_str_make(text, command_lens[c]),
            .code = (uint32_t)(ints[(a + c) % ints_n] & UINT32_MAX),
            .sentence = berth_str_make(text + 2, sentence_lens[d]),
        };
        for (int i = 0; i < BERTH_HASH_LEN; i++) rec.prev_hash[i] = (uint8_t)(k * 31 + i);
        size_t len = berth_record_encode(&rec, buf, sizeof(buf));
        packer_encode(&rec, &sb);
        loop_assert_msg(len == sb.size && memcmp(buf, sb.data, len) == 0,
                        "combination %u: %zu bytes where the packer wrote %zu", k, len, sb.size);
        loop_assert(memcmp(rec.hash, buf + len - BERTH_HASH_LEN, BERTH_HASH_LEN) == 0);
        checked++;
    }
    ck_assert_uint_eq(checked, ints_n * names_n * commands_n * sentences_n);
    msgpack_sbuffer_destroy(&sb);
    /* Over a limit: nothing encoded. */
    berth_record bad = { .version = BERTH_RECORD_VERSION, .seq = 1,
                         .command = berth_str_make(text, BERTH_COMMAND_LEN_MAX + 0) };
    ck_assert_uint_gt(berth_record_encode(&bad, buf, sizeof(buf)), 0);
    bad.sentence = berth_str_make(text, BERTH_SENTENCE_LEN_MAX);
    ck_assert_uint_eq(berth_record_encode(&bad, buf, sizeof(buf)), 0);
    bad.sentence = berth_str_make(text, 0);
    bad.seq = 0;
    ck_assert_uint_eq(berth_record_encode(&bad, buf, sizeof(buf)), 0);
}
END_TEST

/* The store's encode seam (backend.h) writes what berth_record_encode
 * writes: encoded_len is its exact length (and 0 where it refuses), and
 * encode_sized into exactly that many bytes (the room MDB_RESERVE made)
 * the same bytes and hash, for every command length up to 300 bytes with
 * strings and integers at their form edges. */
START_TEST(codec_encoded_len_matches) {
    static char text[600];
    for (size_t i = 0; i < sizeof(text); i++) text[i] = (char)('a' + i % 26);
    static uint8_t want[BERTH_RECORD_BYTES_MAX], first[BERTH_RECORD_BYTES_MAX];
    static const uint64_t ints[] = { 1, 127, 128, 255, 256, 65535, 65536, 4294967296ull,
                                     UINT64_MAX };
    enum { ints_n = sizeof(ints) / sizeof(ints[0]) };
    uint32_t checked = 0;
    for (uint32_t command_len = 1; command_len < 300; command_len++) {
        for (uint32_t k = 0; k < 4; k++) {
            berth_record rec = {
                .version = BERTH_RECORD_VERSION,
                .seq = ints[(command_len + k) % ints_n],
                .time_ms = ints[(command_len * 3 + k) % ints_n],
                .actor = berth_str_make(text, k % 2 == 0 ? 0 : 1 + command_len % BERTH_NAME_LEN_MAX),
                .reqid = berth_str_make(text + 3, (command_len * 7 + k) % 40),
                .command = berth_str_make(text, command_len),
                .code = (uint32_t)(ints[k % ints_n] & UINT32_MAX),
                .sentence = berth_str_make(text + 5, k < 2 ? 0 : 200 + command_len),
            };
            for (int i = 0; i < BERTH_HASH_LEN; i++) rec.prev_hash[i] = (uint8_t)(command_len * 7 + k + i);
            size_t len = berth_record_encode(&rec, want, sizeof(want));
            loop_assert(len > 0);
            uint8_t want_hash[BERTH_HASH_LEN];
            memcpy(want_hash, rec.hash, BERTH_HASH_LEN);
            loop_assert_msg(berth_record_encoded_len(&rec, false) == len, "command %u/%u: length",
                            command_len, k);
            loop_assert(berth_record_encoded_len(&rec, true) == len);
            memset(rec.hash, 0, BERTH_HASH_LEN);
            loop_assert(berth_record_encode_sized(&rec, first, len));
            loop_assert(memcmp(first, want, len) == 0 && memcmp(rec.hash, want_hash, BERTH_HASH_LEN) == 0);

            checked++;
        }
    }
    ck_assert_uint_eq(checked, 299 * 4);
    /* Refused as berth_record_encode refuses: a bad actor unless the caller
     * vouched for it (the store does only for the bytes it checked), a seq 0. */
    berth_record bad = { .version = BERTH_RECORD_VERSION, .seq = 1,
                         .actor = berth_str_make("a b", 3), .command = berth_str_make(text, 4) };
    ck_assert_uint_eq(berth_record_encode(&bad, want, sizeof(want)), 0);
    ck_assert_uint_eq(berth_record_encoded_len(&bad, false), 0);
    bad.actor = berth_str_make(text, BERTH_NAME_LEN_MAX + 1);
    ck_assert_uint_eq(berth_record_encoded_len(&bad, true), 0);
    bad.actor = berth_str_make(text, 3);
    bad.seq = 0;
    ck_assert_uint_eq(berth_record_encoded_len(&bad, true), 0);
    bad.seq = 1;
    bad.sentence = berth_str_make(text, BERTH_SENTENCE_LEN_MAX);
    ck_assert_uint_eq(berth_record_encoded_len(&bad, true), 0);
}
END_TEST

/* A record's body in a chosen spelling: 0 the widest forms behind a
 * fixarray (uint64, str32), 1 the same behind an array16, 2 every integer
 * as a positive int64; then a correct hash trailer. */
static size_t spell_record(const berth_record *rec, int spelling, uint8_t *buf, size_t cap) {
    size_t len = 0;
    const uint64_t ints[4] = { rec->version, rec->seq, rec->time_ms, rec->code };
    const berth_str strs[4] = { rec->actor, rec->reqid, rec->command, rec->sentence };
    static const int order[9] = { 0, 1, 2, -1, -2, -3, 3, -4, 9 };   /* >=0 int, <0 str */
    ck_assert_uint_le(1 + 9 * 9 + 4 * 5 + rec->command.len + rec->sentence.len + 256, cap);
    if (spelling == 1) {
        buf[len++] = 0xdc;
        buf[len++] = 0;
        buf[len++] = 9;
    } else {
        buf[len++] = 0x99;
    }
    for (int f = 0; f < 9; f++) {
        if (order[f] == 9) {
            buf[len++] = 0xc4;
            buf[len++] = BERTH_HASH_LEN;
            memcpy(buf + len, rec->prev_hash, BERTH_HASH_LEN);
            len += BERTH_HASH_LEN;
        } else if (order[f] >= 0) {
            buf[len++] = spelling == 2 ? 0xd3 : 0xcf;
            for (int i = 7; i >= 0; i--) buf[len++] = (uint8_t)(ints[order[f]] >> (8 * i));
        } else {
            berth_str str = strs[-order[f] - 1];
            buf[len++] = 0xdb;
            for (int i = 3; i >= 0; i--) buf[len++] = (uint8_t)(str.len >> (8 * i));
            memcpy(buf + len, str.ptr, str.len);
            len += str.len;
        }
    }
    uint8_t digest[BERTH_HASH_LEN];
    SHA256(buf, len, digest);
    buf[len++] = 0xc4;
    buf[len++] = BERTH_HASH_LEN;
    memcpy(buf + len, digest, BERTH_HASH_LEN);
    return len + BERTH_HASH_LEN;
}

static bool str_same(berth_str a, berth_str b) {
    return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0;
}

/* Every road through the decoder (the direct one for the forms the encoder
 * writes and their wider widths, the template road for other spellings)
 * gives the same fields. */
START_TEST(codec_decode_spellings) {
    static char text[BERTH_COMMAND_LEN_MAX];
    for (size_t i = 0; i < sizeof(text); i++) text[i] = (char)('A' + i % 26);
    static const uint64_t ints[] = { 1, 127, 128, 65536, 4294967296ull, INT64_MAX - 1 };
    static const uint32_t lens[] = { 0, 5, 31, 32, 255, 256 };
    static uint8_t canon[BERTH_RECORD_BYTES_MAX], spelt[BERTH_RECORD_BYTES_MAX];
    for (uint32_t k = 0; k < 36; k++) {
        uint64_t n = ints[k % 6];
        uint32_t l = lens[k / 6];
        berth_record rec = {
            .version = BERTH_RECORD_VERSION, .seq = n, .time_ms = n + 1,
            .actor = berth_str_make(text, l < BERTH_NAME_LEN_MAX ? l : BERTH_NAME_LEN_MAX),
            .reqid = berth_str_make(text + 3, l / 2),
            .command = berth_str_make(text + 1, l + 1),
            .code = (uint32_t)(n & UINT32_MAX), .sentence = berth_str_make(text + 2, l),
        };
        for (int i = 0; i < BERTH_HASH_LEN; i++) rec.prev_hash[i] = (uint8_t)(k + i);
        size_t canon_len = encode_full(&rec, canon, sizeof(canon));
        berth_record want;
        ck_assert_int_eq(berth_record_decode(canon, canon_len, &want, NULL, 0), BERTH_J_OK);
        for (int spelling = 0; spelling < 3; spelling++) {
            size_t len = spell_record(&rec, spelling, spelt, sizeof(spelt));
            berth_record got;
            char why[err_len_max] = "";
            ck_assert_msg(berth_record_decode(spelt, len, &got, why, sizeof(why)) == BERTH_J_OK,
                          "record %u spelling %d: %s", k, spelling, why);
            ck_assert(berth_record_hash_ok(spelt, len));
            ck_assert_uint_eq(got.version, want.version);
            ck_assert_uint_eq(got.seq, want.seq);
            ck_assert_uint_eq(got.time_ms, want.time_ms);
            ck_assert_uint_eq(got.code, want.code);
            ck_assert(str_same(got.actor, want.actor) && str_same(got.reqid, want.reqid));
            ck_assert(str_same(got.command, want.command) && str_same(got.sentence, want.sentence));
            ck_assert_mem_eq(got.prev_hash, want.prev_hash, BERTH_HASH_LEN);
            ck_assert_mem_eq(got.hash, spelt + len - BERTH_HASH_LEN, BERTH_HASH_LEN);
            /* Pointers into the input, and "" (never NULL) for an empty string. */
            ck_assert_ptr_nonnull(got.reqid.ptr);
            ck_assert(got.command.ptr > (const char *)spelt && got.command.ptr < (const char *)spelt + len);
        }
    }
}
END_TEST

static size_t sample_record(uint8_t *buf, size_t cap) {
    built b;
    build(&b, 123456);
    b.rec.version = BERTH_RECORD_VERSION;
    b.rec.reqid = berth_str_make("req-1", 5);
    b.rec.sentence = berth_str_make("worker w1 serves instance big", 29);
    return encode_full(&b.rec, buf, cap);
}

START_TEST(codec_truncated) {
    uint8_t buf[512];
    size_t len = sample_record(buf, sizeof(buf));
    for (size_t cut = 0; cut < len; cut++) {
        /* A copy of exactly cut bytes, so a read past the end is caught by ASan. */
        uint8_t *part = malloc(cut > 0 ? cut : 1);
        ck_assert_ptr_nonnull(part);
        memcpy(part, buf, cut);
        berth_record out;
        char why[err_len_max] = "";
        ck_assert_int_eq(berth_record_decode(part, cut, &out, why, sizeof(why)), BERTH_J_CORRUPT);
        ck_assert_msg(why[0] != '\0', "no reason at length %zu", cut);
        ck_assert(!berth_record_hash_ok(part, cut));
        free(part);
    }
}
END_TEST

START_TEST(codec_flipped) {
    uint8_t buf[512];
    size_t len = sample_record(buf, sizeof(buf));
    uint32_t decoded = 0, refused = 0;
    for (size_t at = 0; at < len; at++) {
        for (int bit = 0; bit < 8; bit++) {
            uint8_t copy[512];
            memcpy(copy, buf, len);
            copy[at] ^= (uint8_t)(1u << bit);
            berth_record out;
            berth_jerr err = berth_record_decode(copy, len, &out, NULL, 0);
            ck_assert(err == BERTH_J_OK || err == BERTH_J_CORRUPT);
            ck_assert_msg(!berth_record_hash_ok(copy, len), "flip at %zu bit %d passes", at, bit);
            if (err == BERTH_J_OK) decoded++; else refused++;
        }
    }
    /* Both outcomes occur: flips in string bytes decode, flips in headers do not. */
    ck_assert_uint_gt(decoded, 0);
    ck_assert_uint_gt(refused, 0);
}
END_TEST

typedef struct sink { uint8_t buf[512]; size_t len; } sink;

static int sink_write(void *data, const char *bytes, size_t len) {
    sink *s = data;
    ck_assert_uint_le(s->len + len, sizeof(s->buf));
    memcpy(s->buf + s->len, bytes, len);
    s->len += len;
    return 0;
}

/* Body with the given version and field count, then a correct hash trailer. */
static size_t craft(sink *s, uint64_t version, uint32_t fields) {
    s->len = 0;
    msgpack_packer pk;
    msgpack_packer_init(&pk, s, sink_write);
    ck_assert_int_eq(msgpack_pack_array(&pk, fields), 0);
    ck_assert_int_eq(msgpack_pack_uint64(&pk, version), 0);
    for (uint32_t i = 1; i < fields; i++) {
        ck_assert_int_eq(msgpack_pack_uint64(&pk, i), 0);
    }
    uint8_t digest[BERTH_HASH_LEN];
    SHA256(s->buf, s->len, digest);
    ck_assert_int_eq(msgpack_pack_bin_with_body(&pk, digest, BERTH_HASH_LEN), 0);
    return s->len;
}

START_TEST(codec_unknown_version) {
    sink s;
    size_t len = craft(&s, BERTH_RECORD_VERSION + 1, 9);
    berth_record out;
    char why[err_len_max];
    ck_assert_int_eq(berth_record_decode(s.buf, len, &out, why, sizeof(why)), BERTH_J_CORRUPT);
    ck_assert_str_eq(why, "unknown format version 3");
    len = craft(&s, 0, 9);
    ck_assert_int_eq(berth_record_decode(s.buf, len, &out, why, sizeof(why)), BERTH_J_CORRUPT);
    ck_assert_str_eq(why, "unknown format version 0");
    ck_assert(berth_record_hash_ok(s.buf, len));   /* well formed, just not ours */
    len = craft(&s, 77, 3);
    ck_assert_int_eq(berth_record_decode(s.buf, len, &out, why, sizeof(why)), BERTH_J_CORRUPT);
    ck_assert_str_eq(why, "unknown format version 77");
    /* Version 1 with the wrong field count or types is refused too. */
    len = craft(&s, 1, 8);
    ck_assert_int_eq(berth_record_decode(s.buf, len, &out, why, sizeof(why)), BERTH_J_CORRUPT);
    ck_assert_ptr_nonnull(strstr(why, "fields"));
    len = craft(&s, 1, 9);
    ck_assert_int_eq(berth_record_decode(s.buf, len, &out, why, sizeof(why)), BERTH_J_CORRUPT);
    ck_assert_ptr_nonnull(strstr(why, "actor"));
}
END_TEST

/* The actor is empty or a name (CLIENT SETNAME's rule): encode refuses
 * anything else, and decode refuses a record another writer spelled so,
 * which a reader's terminal would otherwise act on (review hV6). */
START_TEST(codec_actor_not_name) {
    built b;
    build(&b, 3);
    b.rec.version = BERTH_RECORD_VERSION;
    static const char *const bad[] = { "\x1b]0;pwn\x07", "two words", "a\nb", "caf\xc3\xa9", "x=y" };
    static uint8_t buf[BERTH_RECORD_BYTES_MAX];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        berth_record r = b.rec;
        r.actor = berth_str_make(bad[i], strlen(bad[i]));
        ck_assert_uint_eq(berth_record_encode(&r, buf, sizeof(buf)), 0);
        /* Spelled by hand: the same record with a valid actor of the same
         * length, its bytes then swapped in place (the hash is decode's
         * no concern). */
        char fill[16];
        memset(fill, 'a', sizeof(fill));
        ck_assert_uint_lt(r.actor.len, sizeof(fill));
        r.actor = berth_str_make(fill, strlen(bad[i]));
        size_t len = encode_full(&r, buf, sizeof(buf));
        uint8_t *at = memmem(buf, len, fill, r.actor.len);
        ck_assert_ptr_nonnull(at);
        memcpy(at, bad[i], r.actor.len);
        berth_record out;
        char why[err_len_max] = "";
        ck_assert_int_eq(berth_record_decode(buf, len, &out, why, sizeof(why)), BERTH_J_CORRUPT);
        ck_assert_msg(strstr(why, "actor is not empty or a name") != NULL, "%s", why);
        memcpy(at, fill, r.actor.len);
        ck_assert_int_eq(berth_record_decode(buf, len, &out, why, sizeof(why)), BERTH_J_OK);
        ck_assert_ptr_eq(out.actor.ptr, (const char *)at);   /* the bytes swapped were the actor's */
    }
    berth_record r = b.rec;
    r.actor = berth_str_make("", 0);   /* no CLIENT SETNAME */
    encode_full(&r, buf, sizeof(buf));
}
END_TEST

START_TEST(codec_trailing) {
    uint8_t buf[512];
    size_t len = sample_record(buf, sizeof(buf));
    for (size_t extra = 1; extra <= 40; extra++) {
        memset(buf + len, (int)extra, extra);
        berth_record out;
        char why[err_len_max];
        ck_assert_int_eq(berth_record_decode(buf, len + extra, &out, why, sizeof(why)),
                         BERTH_J_CORRUPT);
        ck_assert_msg(strstr(why, "trailing") != NULL || strstr(why, "hash") != NULL, "%s", why);
    }
}
END_TEST

/* Headers that would make msgpack-c reserve gigabytes, and other shapes no
 * record has: refused at once, whatever follows. */
START_TEST(codec_hostile) {
    static const uint8_t cases[][8] = {
        { 0xdd, 0xff, 0xff, 0xff, 0xff, 0, 0, 0 },   /* array32 of 4G */
        { 0x99, 0xdd, 0x0f, 0xff, 0xff, 0xff, 0, 0 },/* nested array32 */
        { 0x99, 0xdf, 0xff, 0xff, 0xff, 0xff, 0, 0 },/* nested map32 */
        { 0xdf, 0x00, 0x00, 0x00, 0x09, 0, 0, 0 },   /* map body */
        { 0x99, 0xc7, 0xff, 0x01, 0, 0, 0, 0 },      /* ext */
        { 0x99, 0xc1, 0, 0, 0, 0, 0, 0 },            /* never-used byte */
        { 0x99, 0xdb, 0xff, 0xff, 0xff, 0xff, 0, 0 },/* str32 longer than the input */
        { 0xdc, 0xff, 0xff, 0, 0, 0, 0, 0 },         /* array16 of 65535 */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        berth_record out;
        char why[err_len_max];
        ck_assert_int_eq(berth_record_decode(cases[i], sizeof(cases[i]), &out, why, sizeof(why)),
                         BERTH_J_CORRUPT);
    }
}
END_TEST

static uint64_t xorshift(uint64_t *state) {
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

/* Seeded random bytes and random mutations of a good record: any verdict is
 * fine, a crash (or an ASan report under BERTH_SANITIZE) is not. */
START_TEST(codec_random_bytes) {
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    uint8_t good[512];
    size_t good_len = sample_record(good, sizeof(good));
    uint32_t ok = 0;
    for (uint32_t i = 0; i < fuzz_inputs; i++) {
        size_t len = (size_t)(xorshift(&seed) % fuzz_len_max);
        uint8_t *buf = malloc(len > 0 ? len : 1);
        loop_assert(buf != NULL);
        if (i % 2 == 0) {
            for (size_t k = 0; k < len; k++) buf[k] = (uint8_t)xorshift(&seed);
            if (len > 0) buf[0] = (uint8_t)(0x90 + (xorshift(&seed) % 16));
        } else {
            len = len < good_len ? len : good_len;
            memcpy(buf, good, len);
            uint32_t edits = 1 + (uint32_t)(xorshift(&seed) % 4);
            for (uint32_t e = 0; e < edits && len > 0; e++) {
                buf[xorshift(&seed) % len] = (uint8_t)xorshift(&seed);
            }
        }
        berth_record out;
        char why[err_len_max];
        berth_jerr err = berth_record_decode(buf, len, &out, why, sizeof(why));
        loop_assert(err == BERTH_J_OK || err == BERTH_J_CORRUPT);
        if (err == BERTH_J_OK) ok++;
        (void)berth_record_hash_ok(buf, len);
        free(buf);
    }
    ck_assert_uint_lt(ok, fuzz_inputs);
}
END_TEST

/* The decoder's zone is per thread: decodes on many threads at once agree. */
static void *decode_many(void *arg) {
    const uint8_t *buf = arg;
    size_t len = 0;
    memcpy(&len, buf + 600, sizeof(len));
    for (int i = 0; i < 20000; i++) {
        berth_record out;
        if (berth_record_decode(buf, len, &out, NULL, 0) != BERTH_J_OK || out.seq != 123456) {
            return (void *)1;
        }
    }
    return NULL;
}

START_TEST(codec_threads) {
    uint8_t buf[700];
    size_t len = sample_record(buf, 600);
    memcpy(buf + 600, &len, sizeof(len));
    pthread_t t[4];
    for (int i = 0; i < 4; i++) ck_assert_int_eq(pthread_create(&t[i], NULL, decode_many, buf), 0);
    for (int i = 0; i < 4; i++) {
        void *res;
        ck_assert_int_eq(pthread_join(t[i], &res), 0);
        ck_assert_ptr_null(res);
    }
}
END_TEST

START_TEST(jerr_names) {
    ck_assert_str_eq(berth_jerr_name(BERTH_J_OK), "OK");
    ck_assert_str_eq(berth_jerr_name(BERTH_J_FULL), "FULL");
    ck_assert_str_eq(berth_jerr_name(BERTH_J_LOCKED), "LOCKED");
    ck_assert_str_eq(berth_jerr_name(BERTH_J_READONLY), "READONLY");
    ck_assert_str_eq(berth_jerr_name((berth_jerr)99), "UNKNOWN");
}
END_TEST

/* ---- store ----------------------------------------------------------- */

/* A backend whose appends are durable on return (etcd) leaves durable and
 * sync out of its ops table: the durable seq is then its head, and a sync
 * succeeds with nothing to do. */
static uint64_t fake_head_seq;
static berth_jerr fake_head(berth_journal *journal, uint64_t *seq, uint8_t hash[BERTH_HASH_LEN]) {
    (void)journal;
    *seq = fake_head_seq;
    memset(hash, 0, BERTH_HASH_LEN);
    return BERTH_J_OK;
}

START_TEST(durable_without_backend_ops) {
    static const berth_journal_ops fake_ops = { .name = "fake", .head = fake_head };
    berth_journal fake = { &fake_ops };
    uint64_t seq = 0;
    fake_head_seq = 12345;
    ck_assert_int_eq(berth_journal_durable(&fake, &seq), BERTH_J_OK);
    ck_assert_uint_eq(seq, 12345);
    ck_assert_int_eq(berth_journal_sync(&fake), BERTH_J_OK);
    ck_assert_int_eq(berth_journal_maintain(&fake), BERTH_J_OK);
    fake_head_seq = 12346;
    ck_assert_int_eq(berth_journal_durable(&fake, &seq), BERTH_J_OK);
    ck_assert_uint_eq(seq, 12346);
}
END_TEST

/* A backend with no HISTORY index of its own (etcd) leaves the rebuild out
 * of its ops table: both calls are INVALID, finish with a sentence. */
START_TEST(rebuild_without_backend_ops) {
    static const berth_journal_ops fake_ops = { .name = "fake", .head = fake_head };
    berth_journal fake = { &fake_ops };
    berth_touched none = { .instance = berth_str_make("", 0), .worker_count = 0, .workers = NULL };
    ck_assert_int_eq(berth_journal_history_rebuild_add(&fake, 1, &none), BERTH_J_INVALID);
    uint64_t names = 7;
    char err[err_len_max] = "";
    ck_assert_int_eq(berth_journal_history_rebuild_finish(&fake, &names, err, sizeof(err)),
                     BERTH_J_INVALID);
    ck_assert_uint_eq(names, 0);
    ck_assert_msg(strstr(err, "the fake backend keeps no HISTORY index") != NULL, "%s", err);
}
END_TEST

/* A data.mdb that is an LMDB file holding something else (the history
 * index's, given as the data directory) is refused by a writable open,
 * which would otherwise make a journal inside it, and left as it was; an
 * empty new file still becomes a journal. */
START_TEST(store_foreign_lmdb_refused) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    MDB_env *env;
    ck_assert_int_eq(mdb_env_create(&env), 0);
    ck_assert_int_eq(mdb_env_set_maxdbs(env, 4), 0);
    ck_assert_int_eq(mdb_env_open(env, dir, 0, 0600), 0);
    MDB_txn *txn;
    MDB_dbi other;
    ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    ck_assert_int_eq(mdb_dbi_open(txn, "runs0", MDB_CREATE, &other), 0);
    MDB_val k = { 1, (void *)"k" }, v = { 1, (void *)"v" };
    ck_assert_int_eq(mdb_put(txn, other, &k, &v, 0), 0);
    ck_assert_int_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    berth_journal_options rw = { 0 };
    berth_journal *j = NULL;
    char err[512] = "";
    ck_assert_int_eq(berth_journal_open_lmdb(&j, dir, &rw, err, sizeof(err)), BERTH_J_CORRUPT);
    ck_assert_msg(strstr(err, "holds no berth journal") != NULL, "%s", err);

    ck_assert_int_eq(mdb_env_create(&env), 0);
    ck_assert_int_eq(mdb_env_set_maxdbs(env, 4), 0);
    ck_assert_int_eq(mdb_env_open(env, dir, MDB_RDONLY, 0600), 0);
    ck_assert_int_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    MDB_dbi journal_dbi;
    ck_assert_int_eq(mdb_dbi_open(txn, "journal", 0, &journal_dbi), MDB_NOTFOUND);
    mdb_txn_abort(txn);
    mdb_env_close(env);

    char fresh[256];
    dir_fresh(fresh, sizeof(fresh));
    j = open_rw(fresh, 0, 0);
    ck_assert_uint_eq(head_of(j, NULL), 0);
    close_rw(j);
}
END_TEST

START_TEST(store_append_read_reopen) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_rw(dir, 0, 0);
    uint8_t zero[BERTH_HASH_LEN] = { 0 }, hash[BERTH_HASH_LEN];
    ck_assert_uint_eq(head_of(j, hash), 0);
    ck_assert_mem_eq(hash, zero, BERTH_HASH_LEN);
    ck_assert_int_eq(append_n(j, 1, 1), BERTH_J_OK);
    ck_assert_int_eq(append_n(j, 2, 10), BERTH_J_OK);
    ck_assert_int_eq(append_n(j, 12, 100), BERTH_J_OK);
    ck_assert_uint_eq(head_of(j, hash), 111);
    ck_assert_uint_eq(chain_check(j), 111);

    berth_journal_reader *r;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    berth_record rec;
    const uint8_t *raw;
    size_t raw_len;
    ck_assert_int_eq(berth_journal_read(r, 57, &rec, &raw, &raw_len), BERTH_J_OK);
    ck_assert_uint_eq(rec.seq, 57);
    ck_assert(berth_record_hash_ok(raw, raw_len));
    ck_assert_int_eq(berth_journal_read(r, 112, &rec, NULL, NULL), BERTH_J_NOTFOUND);
    ck_assert_int_eq(berth_journal_read(r, 0, &rec, NULL, NULL), BERTH_J_NOTFOUND);
    /* A cursor from the middle, and next_raw. */
    berth_journal_cursor *c;
    ck_assert_int_eq(berth_journal_cursor_open(r, 100, &c), BERTH_J_OK);
    uint64_t seq;
    for (uint64_t want = 100; want <= 111; want++) {
        ck_assert_int_eq(berth_journal_cursor_next_raw(c, &seq, &raw, &raw_len), BERTH_J_OK);
        ck_assert_uint_eq(seq, want);
        ck_assert_int_eq(berth_record_decode(raw, raw_len, &rec, NULL, 0), BERTH_J_OK);
        ck_assert_uint_eq(rec.seq, want);
    }
    ck_assert_int_eq(berth_journal_cursor_next_raw(c, &seq, &raw, &raw_len), BERTH_J_NOTFOUND);
    berth_journal_cursor_close(c);
    ck_assert_int_eq(berth_journal_cursor_open(r, 500, &c), BERTH_J_OK);
    ck_assert_int_eq(berth_journal_cursor_next(c, &rec, NULL, NULL), BERTH_J_NOTFOUND);
    berth_journal_cursor_close(c);
    berth_journal_reader_close(r);

    uint64_t disk, map;
    ck_assert_int_eq(sizes_of(j, &disk, &map), BERTH_J_OK);
    ck_assert_uint_gt(disk, 0);
    ck_assert_uint_ge(map, 64ull << 20);
    close_rw(j);

    /* Reopen: the head and its hash are read back; the chain continues. */
    j = open_rw(dir, 0, 0);
    uint8_t again[BERTH_HASH_LEN];
    ck_assert_uint_eq(head_of(j, again), 111);
    ck_assert_mem_eq(again, hash, BERTH_HASH_LEN);
    ck_assert_int_eq(append_n(j, 112, 5), BERTH_J_OK);
    ck_assert_uint_eq(chain_check(j), 116);
    close_rw(j);
}
END_TEST

/* berth_journal_copy: the journal as of the copy, whatever is appended
 * after it, in a directory a writable open takes as its own; never over a
 * data.mdb, nor into a missing directory. */
START_TEST(store_copy) {
    char dir[256], dest[256];
    dir_fresh(dir, sizeof(dir));
    dir_fresh(dest, sizeof(dest));
    ck_assert_int_eq(mkdir(dest, 0700), 0);
    berth_journal *j = open_rw(dir, 0, 0);
    ck_assert_int_eq(append_n(j, 1, 111), BERTH_J_OK);
    uint8_t hash[BERTH_HASH_LEN];
    ck_assert_uint_eq(head_of(j, hash), 111);
    char err[err_len_max] = "";
    ck_assert_int_eq(berth_journal_copy(j, dest, err, sizeof(err)), BERTH_J_OK);
    ck_assert_int_eq(append_n(j, 112, 5), BERTH_J_OK);
    ck_assert_int_eq(berth_journal_copy(j, dest, err, sizeof(err)), BERTH_J_INVALID);
    ck_assert_msg(strstr(err, "cannot create") != NULL && strstr(err, "File exists") != NULL, "%s", err);
    char missing[300];
    snprintf(missing, sizeof(missing), "%s/none", dest);
    ck_assert_int_eq(berth_journal_copy(j, missing, err, sizeof(err)), BERTH_J_INVALID);
    close_rw(j);

    char path[300];
    struct stat st;
    snprintf(path, sizeof(path), "%s/data.mdb", dest);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0600);
    j = open_rw(dest, 0, 0);
    uint8_t copied[BERTH_HASH_LEN];
    ck_assert_uint_eq(head_of(j, copied), 111);
    ck_assert_mem_eq(copied, hash, BERTH_HASH_LEN);
    ck_assert_uint_eq(chain_check(j), 111);
    ck_assert_int_eq(append_n(j, 112, 5), BERTH_J_OK);
    ck_assert_uint_eq(chain_check(j), 116);
    close_rw(j);
}
END_TEST

/* A read-only open in a process that dies mid-read (SIGKILL: no close)
 * leaves its reader slot taken; berth_journal_readers_clear_dead frees it
 * and counts it, and leaves a live reader's slot alone. */
/* Child: open read-only, take a reader, and die holding it. */
static int child_reader_dies(const char *dir, int unused) {
    (void)unused;
    berth_journal_options o = { .read_only = true, .no_lock = true };
    berth_journal *ro = NULL;
    berth_journal_reader *r = NULL;
    char err[err_len_max];
    if (berth_journal_open_lmdb(&ro, dir, &o, err, sizeof(err)) != BERTH_J_OK ||
        berth_journal_reader_open(ro, &r) != BERTH_J_OK) {
        return 1;
    }
    (void)kill(getpid(), SIGKILL);
    return 2;
}

START_TEST(store_readers_clear_dead) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_rw(dir, 0, 0);
    ck_assert_int_eq(append_n(j, 1, 10), BERTH_J_OK);
    uint32_t cleared = 99;
    ck_assert_int_eq(berth_journal_readers_clear_dead(j, &cleared), BERTH_J_OK);
    ck_assert_uint_eq(cleared, 0);
    berth_journal_reader *live;
    ck_assert_int_eq(berth_journal_reader_open(j, &live), BERTH_J_OK);
    pid_t pid = child_spawn(child_reader_dies, dir, 0, -1);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    ck_assert_int_eq(berth_journal_readers_clear_dead(j, &cleared), BERTH_J_OK);
    ck_assert_uint_ge(cleared, 1);
    ck_assert_int_eq(berth_journal_readers_clear_dead(j, &cleared), BERTH_J_OK);
    ck_assert_uint_eq(cleared, 0);
    uint64_t head = 0;
    uint8_t hash[BERTH_HASH_LEN];
    ck_assert_int_eq(berth_journal_reader_head(live, &head, hash), BERTH_J_OK);
    ck_assert_uint_eq(head, 10);
    berth_journal_reader_close(live);
    close_rw(j);
}
END_TEST

/* Records at every field's limit are written through the batch's cursor onto
 * overflow pages, small ones between them on leaf pages: each stored record
 * is byte for byte what berth_record_encode makes of it, chained. */
START_TEST(store_big_records) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_rw(dir, 0, 0);
    static char command[BERTH_COMMAND_LEN_MAX], sentence[BERTH_SENTENCE_LEN_MAX - 1];
    char name[BERTH_NAME_LEN_MAX];
    for (size_t i = 0; i < sizeof(command); i++) command[i] = (char)('a' + i % 23);
    memset(sentence, 's', sizeof(sentence));
    memset(name, 'n', sizeof(name));
    enum { count = 9 };
    built b[count];
    berth_record recs[count];
    for (int i = 0; i < count; i++) {
        build(&b[i], 1 + (uint64_t)i);
        recs[i] = b[i].rec;
        if (i % 3 == 1) {   /* at every limit */
            recs[i].command = berth_str_make(command, sizeof(command) - (size_t)i);
            recs[i].sentence = berth_str_make(sentence, sizeof(sentence));
            recs[i].actor = berth_str_make(name, sizeof(name));
            recs[i].reqid = berth_str_make(name, sizeof(name));
            recs[i].time_ms = UINT64_MAX;
            recs[i].code = UINT32_MAX;
        }
    }
    ck_assert_int_eq(berth_journal_append(j, recs, NULL, count), BERTH_J_OK);
    berth_journal_reader *r;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    static uint8_t want[BERTH_RECORD_BYTES_MAX];
    uint8_t prev[BERTH_HASH_LEN] = { 0 };
    for (int i = 0; i < count; i++) {
        berth_record copy = recs[i];
        memcpy(copy.prev_hash, prev, BERTH_HASH_LEN);
        size_t want_len = encode_full(&copy, want, sizeof(want));
        berth_record got;
        const uint8_t *raw;
        size_t raw_len;
        ck_assert_int_eq(berth_journal_read(r, 1 + (uint64_t)i, &got, &raw, &raw_len), BERTH_J_OK);
        ck_assert_uint_eq(raw_len, want_len);
        ck_assert_mem_eq(raw, want, want_len);
        ck_assert_mem_eq(recs[i].hash, copy.hash, BERTH_HASH_LEN);
        ck_assert_mem_eq(got.prev_hash, prev, BERTH_HASH_LEN);
        memcpy(prev, got.hash, BERTH_HASH_LEN);
    }
    berth_journal_reader_close(r);
    uint8_t head_hash[BERTH_HASH_LEN];
    ck_assert_uint_eq(head_of(j, head_hash), count);
    ck_assert_mem_eq(head_hash, prev, BERTH_HASH_LEN);
    close_rw(j);
}
END_TEST

START_TEST(store_invalid_batches) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_rw(dir, 0, 0);
    ck_assert_int_eq(append_n(j, 1, 3), BERTH_J_OK);
    uint8_t before[BERTH_HASH_LEN], after[BERTH_HASH_LEN];
    ck_assert_uint_eq(head_of(j, before), 3);
    ck_assert_int_eq(append_n(j, 5, 2), BERTH_J_INVALID);       /* gap */
    ck_assert_int_eq(append_n(j, 3, 2), BERTH_J_INVALID);       /* overlap */
    ck_assert_int_eq(append_n(j, 1, 1), BERTH_J_INVALID);
    ck_assert_int_eq(append_n(j, 4, 0), BERTH_J_INVALID);       /* empty */
    ck_assert_int_eq(append_n(j, 4, BERTH_BATCH_RECORDS_MAX + 1), BERTH_J_INVALID);

    /* A gap inside the batch: nothing of it is written. */
    built b[3];
    berth_record recs[3];
    for (int i = 0; i < 3; i++) { build(&b[i], 4 + (uint64_t)i); recs[i] = b[i].rec; }
    recs[2].seq = 9;
    ck_assert_int_eq(berth_journal_append(j, recs, NULL, 3), BERTH_J_INVALID);

    /* A field over its limit in the last record: nothing written. */
    for (int i = 0; i < 3; i++) recs[i] = b[i].rec;
    char long_name[BERTH_NAME_LEN_MAX + 1];
    memset(long_name, 'x', sizeof(long_name));
    recs[2].actor = berth_str_make(long_name, sizeof(long_name));
    ck_assert_int_eq(berth_journal_append(j, recs, NULL, 3), BERTH_J_INVALID);

    /* An actor of the same length as the record's before but not a name
     * (a space): refused too; the store skips the name scan only for the
     * same bytes. */
    for (int i = 0; i < 3; i++) recs[i] = b[i].rec;
    char spaced[text_len_max];
    memcpy(spaced, b[1].actor, recs[1].actor.len);
    spaced[0] = ' ';
    recs[2].actor = berth_str_make(spaced, recs[1].actor.len);
    ck_assert_int_eq(berth_journal_append(j, recs, NULL, 3), BERTH_J_INVALID);
    recs[2].actor = recs[1].actor;   /* the same bytes: a name already checked */
    recs[1].actor = berth_str_make(spaced, recs[1].actor.len);
    ck_assert_int_eq(berth_journal_append(j, recs, NULL, 3), BERTH_J_INVALID);

    /* Too many bytes: 4096 records of 16 KiB commands exceed the batch cap. */
    static char command[BERTH_COMMAND_LEN_MAX];
    memset(command, 'c', sizeof(command));
    berth_record *many = calloc(BERTH_BATCH_RECORDS_MAX, sizeof(*many));
    ck_assert_ptr_nonnull(many);
    for (size_t i = 0; i < BERTH_BATCH_RECORDS_MAX; i++) {
        many[i] = b[0].rec;
        many[i].seq = 4 + i;
        many[i].command = berth_str_make(command, sizeof(command));
    }
    ck_assert_int_eq(berth_journal_append(j, many, NULL, BERTH_BATCH_RECORDS_MAX),
                     BERTH_J_INVALID);
    free(many);

    ck_assert_uint_eq(head_of(j, after), 3);
    ck_assert_mem_eq(before, after, BERTH_HASH_LEN);
    berth_journal_reader *r;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    berth_record rec;
    ck_assert_int_eq(berth_journal_read(r, 4, &rec, NULL, NULL), BERTH_J_NOTFOUND);
    berth_journal_reader_close(r);
    /* The journal still takes the right next batch. */
    ck_assert_int_eq(append_n(j, 4, 2), BERTH_J_OK);
    ck_assert_uint_eq(chain_check(j), 5);
    close_rw(j);
}
END_TEST

/* n records from first, chained on prev, encoded with berth_record_encode
 * into bufs[i] (BERTH_RECORD_BYTES_MAX each); out[i] points at them. */
static void encode_chain(uint64_t first, size_t n, const uint8_t prev[BERTH_HASH_LEN],
                         uint8_t (*bufs)[BERTH_RECORD_BYTES_MAX], berth_encoded *out) {
    uint8_t chain[BERTH_HASH_LEN];
    memcpy(chain, prev, BERTH_HASH_LEN);
    for (size_t i = 0; i < n; i++) {
        built b;
        build(&b, first + i);
        b.rec.version = BERTH_RECORD_VERSION;
        memcpy(b.rec.prev_hash, chain, BERTH_HASH_LEN);
        size_t len = berth_record_encode(&b.rec, bufs[i], BERTH_RECORD_BYTES_MAX);
        ck_assert_uint_gt(len, 0);
        memcpy(chain, b.rec.hash, BERTH_HASH_LEN);
        out[i] = (berth_encoded){ bufs[i], len };
    }
}

/* peek_chain finds seq and both hashes without decoding, and refuses bytes
 * that do not end with the two bins or start as a version-1 body. */
START_TEST(codec_peek_chain) {
    static uint8_t bufs[1][BERTH_RECORD_BYTES_MAX];
    uint8_t prev_in[BERTH_HASH_LEN];
    memset(prev_in, 0x5a, sizeof(prev_in));
    berth_encoded e;
    encode_chain(41, 1, prev_in, bufs, &e);
    berth_record rec;
    ck_assert_int_eq(berth_record_decode(e.bytes, e.len, &rec, NULL, 0), BERTH_J_OK);
    uint64_t seq = 0;
    const uint8_t *prev = NULL, *hash = NULL;
    ck_assert(berth_record_peek_chain(e.bytes, e.len, &seq, &prev, &hash));
    ck_assert_uint_eq(seq, 41);
    ck_assert_mem_eq(prev, prev_in, BERTH_HASH_LEN);
    ck_assert_mem_eq(hash, rec.hash, BERTH_HASH_LEN);
    ck_assert(!berth_record_peek_chain(e.bytes, e.len - 1, &seq, &prev, &hash));   /* cut */
    ck_assert(!berth_record_peek_chain(e.bytes, 60, &seq, &prev, &hash));
    ck_assert(!berth_record_peek_chain(e.bytes, 71, &seq, &prev, &hash));   /* under 2 bins + 4 */
    ck_assert(!berth_record_peek_chain(e.bytes, BERTH_RECORD_BYTES_MAX + 1, &seq, &prev, &hash));
    uint8_t *b = bufs[0];
    b[e.len - 34] = 0xc5;                                     /* the hash's bin8 header */
    ck_assert(!berth_record_peek_chain(b, e.len, &seq, &prev, &hash));
    b[e.len - 34] = 0xc4;
    b[e.len - 67] = 0x21;                                     /* prev_hash's length */
    ck_assert(!berth_record_peek_chain(b, e.len, &seq, &prev, &hash));
    b[e.len - 67] = BERTH_HASH_LEN;
    b[1] = BERTH_RECORD_VERSION + 1;
    ck_assert(!berth_record_peek_chain(b, e.len, &seq, &prev, &hash));
    b[1] = BERTH_RECORD_VERSION;
    ck_assert(berth_record_peek_chain(b, e.len, &seq, &prev, &hash));
}
END_TEST

/* append_encoded stores the bytes as they are, moves the head and its
 * hash, takes names into HISTORY, and mixes with plain appends; a batch
 * that does not follow the head (seq or link), or whose bytes do not end
 * as a record, is refused whole; a read-only journal and a backend without
 * the road refuse too. */
START_TEST(store_append_encoded) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_rw(dir, 0, 0);
    ck_assert_int_eq(append_n(j, 1, 3), BERTH_J_OK);
    uint8_t head_hash[BERTH_HASH_LEN];
    ck_assert_uint_eq(head_of(j, head_hash), 3);
    static uint8_t bufs[8][BERTH_RECORD_BYTES_MAX];
    berth_encoded e[8];
    encode_chain(4, 5, head_hash, bufs, e);

    /* Refusals first: nothing of any is written. */
    ck_assert_int_eq(berth_journal_append_encoded(j, e + 1, NULL, 4), BERTH_J_INVALID);   /* gap */
    ck_assert_int_eq(berth_journal_append_encoded(j, e, NULL, 0), BERTH_J_INVALID);
    berth_encoded swapped[2] = { e[0], e[2] };
    ck_assert_int_eq(berth_journal_append_encoded(j, swapped, NULL, 2), BERTH_J_INVALID);
    uint8_t other[BERTH_HASH_LEN];
    memset(other, 0x11, sizeof(other));
    static uint8_t stray[1][BERTH_RECORD_BYTES_MAX];
    berth_encoded unlinked;
    encode_chain(4, 1, other, stray, &unlinked);                 /* seq 4, another prev */
    ck_assert_int_eq(berth_journal_append_encoded(j, &unlinked, NULL, 1), BERTH_J_INVALID);
    berth_encoded cut[2] = { e[0], { e[1].bytes, e[1].len - 1 } };
    ck_assert_int_eq(berth_journal_append_encoded(j, cut, NULL, 2), BERTH_J_INVALID);
    /* A byte of seq 5's command changed, its seq and links intact: its hash
     * is not its body's. The store hashes what it stores: CORRUPT. */
    ck_assert_uint_gt(e[1].bytes[22], 0x20);                 /* ASCII command text */
    bufs[1][22] ^= 0x01;
    ck_assert_int_eq(berth_journal_append_encoded(j, e, NULL, 5), BERTH_J_CORRUPT);
    bufs[1][22] ^= 0x01;
    uint8_t after[BERTH_HASH_LEN];
    ck_assert_uint_eq(head_of(j, after), 3);
    ck_assert_mem_eq(after, head_hash, BERTH_HASH_LEN);

    /* Names, as a commit log's frame carries them. */
    berth_str workers[2] = { berth_str_make("enc-w1", 6), berth_str_make("enc-w2", 6) };
    berth_touched touched[5];
    memset(touched, 0, sizeof(touched));
    touched[1].instance = berth_str_make("enc-i", 5);
    touched[1].workers = workers;
    touched[1].worker_count = 2;
    ck_assert_int_eq(berth_journal_append_encoded(j, e, touched, 5), BERTH_J_OK);
    ck_assert_uint_eq(head_of(j, after), 8);
    ck_assert_mem_eq(after, e[4].bytes + e[4].len - BERTH_HASH_LEN, BERTH_HASH_LEN);
    berth_journal_reader *r;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    for (size_t i = 0; i < 5; i++) {
        const uint8_t *raw;
        size_t raw_len;
        berth_record rec;
        ck_assert_int_eq(berth_journal_read(r, 4 + i, &rec, &raw, &raw_len), BERTH_J_OK);
        ck_assert_uint_eq(raw_len, e[i].len);
        ck_assert_mem_eq(raw, e[i].bytes, raw_len);
    }
    berth_journal_reader_close(r);
    /* A plain append chains on; the whole chain checks. */
    ck_assert_int_eq(append_n(j, 9, 2), BERTH_J_OK);
    ck_assert_uint_eq(chain_check(j), 10);
    uint64_t seqs[4];
    size_t got = 0;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    ck_assert_int_eq(berth_journal_history(r, BERTH_HISTORY_WORKER, workers[1], 1, seqs, 4, &got),
                     BERTH_J_OK);
    ck_assert_uint_eq(got, 1);
    ck_assert_uint_eq(seqs[0], 5);
    berth_journal_reader_close(r);
    close_rw(j);

    /* Read-only: refused. */
    berth_journal_options ro = { .read_only = true };
    berth_journal *rj = NULL;
    char err[err_len_max];
    ck_assert_int_eq(berth_journal_open_lmdb(&rj, dir, &ro, err, sizeof(err)), BERTH_J_OK);
    encode_chain(11, 1, after, bufs, e);
    ck_assert_int_eq(berth_journal_append_encoded(rj, e, NULL, 1), BERTH_J_READONLY);
    berth_journal_close(rj);
}
END_TEST

/* ---- pipelined appends (journal/appender.h) -------------------------- */

/* Submit records first..first+n-1 (build()'s) through the appender; their
 * strings live in a batch the caller keeps until the batch is waited for
 * (the appender copies them at submit, so this also proves reuse is safe). */
static berth_jerr appender_submit_n(berth_appender *p, uint64_t first, size_t n,
                                const berth_touched *touched) {
    built *b = calloc(n, sizeof(*b));
    ck_assert_ptr_nonnull(b);
    berth_record *recs = calloc(n, sizeof(*recs));
    ck_assert_ptr_nonnull(recs);
    for (size_t i = 0; i < n; i++) {
        build(&b[i], first + i);
        recs[i] = b[i].rec;
    }
    berth_jerr err = berth_appender_submit(p, recs, touched, n);
    memset(b, 0xa5, n * sizeof(*b));   /* the appender must hold its own copy */
    free(recs);
    free(b);
    return err;
}

/* Batches through an appender, as many in flight as it takes, store the
 * very bytes plain appends of the same records store (same head hash,
 * same chain); names reach HISTORY; the appender mixes with plain appends
 * between drains. */
START_TEST(store_appender_matches_append) {
    char dir[256], plain_dir[256];
    dir_fresh(dir, sizeof(dir));
    dir_fresh(plain_dir, sizeof(plain_dir));
    static const size_t sizes[] = { 1, 7, 300, 64, 2, 1024, 5, 33 };
    size_t count = sizeof(sizes) / sizeof(sizes[0]);
    uint64_t total = 0;
    for (size_t i = 0; i < count; i++) {
        total += sizes[i];
    }
    berth_journal *j = open_rw(plain_dir, 0, 0);
    uint64_t next = 1;
    for (size_t i = 0; i < count; i++) {
        ck_assert_int_eq(append_n(j, next, sizes[i]), BERTH_J_OK);
        next += sizes[i];
    }
    uint8_t plain_hash[BERTH_HASH_LEN];
    ck_assert_uint_eq(head_of(j, plain_hash), total);
    close_rw(j);

    j = open_rw(dir, 0, 0);
    berth_appender *p = NULL;
    ck_assert_int_eq(berth_appender_open(&p, j), BERTH_J_OK);
    berth_str workers[2] = { berth_str_make("app-w1", 6), berth_str_make("app-w2", 6) };
    berth_touched touched[7];
    memset(touched, 0, sizeof(touched));
    touched[3].instance = berth_str_make("app-i", 5);
    touched[3].workers = workers;
    touched[3].worker_count = 2;
    next = 1;
    uint64_t acked = 0;
    for (size_t i = 0; i < count; i++) {
        if (berth_appender_in_flight(p) == BERTH_APPENDER_DEPTH) {
            uint64_t last = 0;
            ck_assert_int_eq(berth_appender_wait(p, &last), BERTH_J_OK);
            ck_assert_uint_gt(last, acked);
            acked = last;
        }
        ck_assert_int_eq(appender_submit_n(p, next, sizes[i], sizes[i] == 7 ? touched : NULL),
                         BERTH_J_OK);
        next += sizes[i];
    }
    ck_assert_uint_eq(berth_appender_in_flight(p), BERTH_APPENDER_DEPTH);
    while (berth_appender_in_flight(p) > 0) {
        uint64_t last = 0;
        ck_assert_int_eq(berth_appender_wait(p, &last), BERTH_J_OK);
        acked = last;
    }
    ck_assert_uint_eq(acked, total);
    ck_assert_int_eq(berth_appender_wait(p, NULL), BERTH_J_INVALID);   /* none in flight */
    uint8_t hash[BERTH_HASH_LEN];
    ck_assert_uint_eq(head_of(j, hash), total);
    ck_assert_mem_eq(hash, plain_hash, BERTH_HASH_LEN);
    ck_assert_uint_eq(chain_check(j), total);

    /* A plain append between drains, then the appender chains from the head. */
    ck_assert_int_eq(append_n(j, total + 1, 3), BERTH_J_OK);
    ck_assert_int_eq(appender_submit_n(p, total + 4, 10, NULL), BERTH_J_OK);
    ck_assert_int_eq(berth_appender_wait(p, NULL), BERTH_J_OK);
    ck_assert_uint_eq(chain_check(j), total + 13);
    berth_appender_close(p);

    ck_assert_int_eq(berth_journal_lmdb_settle(j), BERTH_J_OK);
    berth_journal_reader *r;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    uint64_t seqs[4];
    size_t got = 0;
    ck_assert_int_eq(berth_journal_history(r, BERTH_HISTORY_WORKER, workers[1], 1, seqs, 4, &got),
                     BERTH_J_OK);
    ck_assert_uint_eq(got, 1);
    ck_assert_uint_eq(seqs[0], 1 + 1 + 3);   /* the 7-record batch starts at seq 2 */
    berth_journal_reader_close(r);
    close_rw(j);
}
END_TEST

/* What submit refuses queues nothing: a seq that does not follow (the head,
 * or the batch in flight), n out of range, a field or a touched name over
 * its limit, a batch past BERTH_APPENDER_DEPTH in flight. Close lets the
 * batches in flight commit. A backend without the encoded road has no
 * appender; a read-only journal's batch fails READONLY at its wait. */
START_TEST(store_appender_refusals) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_rw(dir, 0, 0);
    ck_assert_int_eq(append_n(j, 1, 4), BERTH_J_OK);
    berth_appender *p = NULL;
    ck_assert_int_eq(berth_appender_open(&p, j), BERTH_J_OK);
    ck_assert_int_eq(appender_submit_n(p, 6, 2, NULL), BERTH_J_INVALID);    /* gap after head 4 */
    ck_assert_int_eq(appender_submit_n(p, 4, 2, NULL), BERTH_J_INVALID);    /* overlaps the head */
    ck_assert_int_eq(appender_submit_n(p, 5, 0, NULL), BERTH_J_INVALID);
    ck_assert_int_eq(appender_submit_n(p, 5, BERTH_BATCH_RECORDS_MAX + 1, NULL), BERTH_J_INVALID);
    ck_assert_uint_eq(berth_appender_in_flight(p), 0);
    ck_assert_int_eq(appender_submit_n(p, 5, 3, NULL), BERTH_J_OK);
    ck_assert_int_eq(appender_submit_n(p, 5, 3, NULL), BERTH_J_INVALID);    /* follows 7, not 4 */
    built big;
    build(&big, 8);
    static char long_command[BERTH_RECORD_BYTES_MAX];
    memset(long_command, 'x', sizeof(long_command));
    big.rec.command = berth_str_make(long_command, sizeof(long_command));
    ck_assert_int_eq(berth_appender_submit(p, &big.rec, NULL, 1), BERTH_J_INVALID);
    /* Touched names are checked at submit, not at the wait. */
    build(&big, 8);
    berth_str no_name = berth_str_make("", 0);
    berth_touched bad = { .instance = berth_str_make("", 0), .worker_count = 1, .workers = &no_name };
    ck_assert_int_eq(berth_appender_submit(p, &big.rec, &bad, 1), BERTH_J_INVALID);
    bad.workers = NULL;
    ck_assert_int_eq(berth_appender_submit(p, &big.rec, &bad, 1), BERTH_J_INVALID);
    bad.worker_count = BERTH_PLACEMENT_WORKERS_MAX + 1;
    ck_assert_int_eq(berth_appender_submit(p, &big.rec, &bad, 1), BERTH_J_INVALID);
    ck_assert_uint_eq(berth_appender_in_flight(p), 1);
    uint64_t next = 8;
    while (berth_appender_in_flight(p) < BERTH_APPENDER_DEPTH) {
        ck_assert_int_eq(appender_submit_n(p, next, 2, NULL), BERTH_J_OK);
        next += 2;
    }
    ck_assert_int_eq(appender_submit_n(p, next, 1, NULL), BERTH_J_INVALID);   /* the appender is full */
    ck_assert_uint_eq(berth_appender_in_flight(p), BERTH_APPENDER_DEPTH);
    berth_appender_close(p);   /* without waiting: every batch commits */
    ck_assert_uint_eq(chain_check(j), next - 1);
    close_rw(j);

    static const berth_journal_ops fake_ops = { .name = "fake", .head = fake_head };
    berth_journal fake = { &fake_ops };
    p = (berth_appender *)&fake;
    ck_assert_int_eq(berth_appender_open(&p, &fake), BERTH_J_INVALID);
    ck_assert_ptr_null(p);

    berth_journal_options ro = { .read_only = true };
    berth_journal *rj = NULL;
    char err[err_len_max];
    ck_assert_int_eq(berth_journal_open_lmdb(&rj, dir, &ro, err, sizeof(err)), BERTH_J_OK);
    ck_assert_int_eq(berth_appender_open(&p, rj), BERTH_J_OK);
    ck_assert_int_eq(appender_submit_n(p, next, 1, NULL), BERTH_J_OK);
    ck_assert_int_eq(berth_appender_wait(p, NULL), BERTH_J_READONLY);
    berth_appender_close(p);
    berth_journal_close(rj);
}
END_TEST

/* A full map: the batch that does not fit fails FULL and writes nothing,
 * the batches submitted behind it (chained from it) fail FULL untried and
 * submit refuses until they are waited out, the head stays at the last
 * batch whose wait said OK, and then the appender chains from the head
 * again: still FULL, then, with a bigger cap after a reopen, OK. */
START_TEST(store_appender_full) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_rw(dir, 128 << 10, 1 << 20);
    berth_appender *p = NULL;
    ck_assert_int_eq(berth_appender_open(&p, j), BERTH_J_OK);
    uint64_t next = 1, acked = 0;
    berth_jerr err = BERTH_J_OK;
    uint32_t batches = 0;
    while (err == BERTH_J_OK) {
        if (berth_appender_in_flight(p) == BERTH_APPENDER_DEPTH) {
            uint64_t last = 0;
            err = berth_appender_wait(p, &last);
            if (err != BERTH_J_OK) {
                break;
            }
            acked = last;
        }
        ck_assert_int_eq(appender_submit_n(p, next, batch_small, NULL), BERTH_J_OK);
        next += batch_small;
        batches++;
        ck_assert_uint_lt(batches, 100000);
    }
    ck_assert_int_eq(err, BERTH_J_FULL);
    ck_assert_uint_eq(berth_appender_in_flight(p), BERTH_APPENDER_DEPTH - 1);
    /* Refused until the batches chained from the failed one are out. */
    ck_assert_int_eq(appender_submit_n(p, next, batch_small, NULL), BERTH_J_INVALID);
    while (berth_appender_in_flight(p) > 0) {
        ck_assert_int_eq(berth_appender_wait(p, NULL), BERTH_J_FULL);   /* chained from the failed one */
    }
    uint8_t hash[BERTH_HASH_LEN], again[BERTH_HASH_LEN];
    ck_assert_uint_eq(head_of(j, hash), acked);
    ck_assert_uint_eq(chain_check(j), acked);
    /* Batch by batch, drained each time, until one does not fit (at once,
     * unless its records are smaller than the batch that failed alone):
     * the head moves only with the OKs. */
    for (err = BERTH_J_OK; err == BERTH_J_OK;) {
        ck_assert_int_eq(appender_submit_n(p, acked + 1, batch_small, NULL), BERTH_J_OK);
        err = berth_appender_wait(p, NULL);
        acked += err == BERTH_J_OK ? batch_small : 0;
        ck_assert_uint_lt(acked, next);
    }
    ck_assert_int_eq(err, BERTH_J_FULL);
    ck_assert_uint_eq(head_of(j, hash), acked);
    ck_assert_int_eq(appender_submit_n(p, acked + 1, batch_small, NULL), BERTH_J_OK);
    ck_assert_int_eq(berth_appender_wait(p, NULL), BERTH_J_FULL);    /* still full, intact */
    ck_assert_uint_eq(head_of(j, again), acked);
    ck_assert_mem_eq(hash, again, BERTH_HASH_LEN);
    ck_assert_uint_eq(chain_check(j), acked);
    berth_appender_close(p);
    close_rw(j);

    j = open_rw(dir, 128 << 10, 8 << 20);
    ck_assert_int_eq(berth_appender_open(&p, j), BERTH_J_OK);
    ck_assert_int_eq(appender_submit_n(p, acked + 1, batch_small, NULL), BERTH_J_OK);
    ck_assert_int_eq(appender_submit_n(p, acked + 1 + batch_small, batch_small, NULL), BERTH_J_OK);
    ck_assert_int_eq(berth_appender_wait(p, NULL), BERTH_J_OK);
    ck_assert_int_eq(berth_appender_wait(p, NULL), BERTH_J_OK);
    berth_appender_close(p);
    ck_assert_uint_eq(chain_check(j), acked + 2 * batch_small);
    close_rw(j);
}
END_TEST

/* On a journal opened with defer_meta_sync an append's OK means only
 * committed; an appender's OK still means durable: every batch's wait returns
 * only once berth_journal_durable reaches its last seq, whether the next
 * batch's commit or the appender's own sync (nothing queued) got it there. */
START_TEST(store_appender_durable_deferred) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal_options o = { .defer_meta_sync = true };
    berth_journal *j = open_writer(dir, &o);
    berth_appender *p = NULL;
    ck_assert_int_eq(berth_appender_open(&p, j), BERTH_J_OK);
    uint64_t next = 1;
    for (uint32_t round = 0; round < 40; round++) {
        /* Rounds alternate a full appender with a lone batch (the idle sync). */
        size_t depth = round % 2 == 0 ? BERTH_APPENDER_DEPTH : 1;
        while (berth_appender_in_flight(p) < depth) {
            size_t n = 1 + (next * 7) % 90;
            ck_assert_int_eq(appender_submit_n(p, next, n, NULL), BERTH_J_OK);
            next += n;
        }
        while (berth_appender_in_flight(p) > 0) {
            uint64_t last = 0, durable = 0;
            ck_assert_int_eq(berth_appender_wait(p, &last), BERTH_J_OK);
            ck_assert_int_eq(berth_journal_durable(j, &durable), BERTH_J_OK);
            ck_assert_uint_ge(durable, last);
        }
    }
    berth_appender_close(p);
    ck_assert_uint_eq(chain_check(j), next - 1);
    close_rw(j);
}
END_TEST

/* A store whose room takes one batch of ten records at a time, never
 * more: the appender's merged commits of queued batches fail there, and
 * each is tried again with its first batch alone, so every batch commits.
 * Its first append waits until the test has queued the rest. */
static _Atomic int roomy_release;
static _Atomic uint32_t roomy_appends;
static uint64_t roomy_seq;
static uint8_t roomy_hash[BERTH_HASH_LEN];

static berth_jerr roomy_head(berth_journal *journal, uint64_t *seq, uint8_t hash[BERTH_HASH_LEN]) {
    (void)journal;
    *seq = roomy_seq;
    memcpy(hash, roomy_hash, BERTH_HASH_LEN);
    return BERTH_J_OK;
}

static berth_jerr roomy_append_own(berth_journal *journal, const berth_encoded *records,
                                   const berth_touched *touched, size_t n) {
    (void)journal;
    (void)touched;
    if (atomic_fetch_add(&roomy_appends, 1) == 0) {
        while (!atomic_load(&roomy_release)) {
            (void)usleep(1000);
        }
    }
    if (n > 10) {
        return BERTH_J_FULL;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t seq = 0;
        const uint8_t *prev = NULL, *hash = NULL;
        if (!berth_record_peek_chain(records[i].bytes, records[i].len, &seq, &prev, &hash) ||
            seq != roomy_seq + 1 || memcmp(prev, roomy_hash, BERTH_HASH_LEN) != 0) {
            return BERTH_J_INVALID;
        }
        roomy_seq = seq;
        memcpy(roomy_hash, hash, BERTH_HASH_LEN);
    }
    return BERTH_J_OK;
}

START_TEST(store_appender_merge_retries_alone) {
    static const berth_journal_ops roomy_ops = { .name = "roomy", .head = roomy_head,
                                                 .append_own = roomy_append_own };
    berth_journal roomy = { &roomy_ops };
    roomy_seq = 0;
    memset(roomy_hash, 0, sizeof(roomy_hash));
    atomic_store(&roomy_release, 0);
    atomic_store(&roomy_appends, 0);
    berth_appender *p = NULL;
    ck_assert_int_eq(berth_appender_open(&p, &roomy), BERTH_J_OK);
    uint64_t next = 1;
    while (berth_appender_in_flight(p) < BERTH_APPENDER_DEPTH) {
        ck_assert_int_eq(appender_submit_n(p, next, 10, NULL), BERTH_J_OK);
        next += 10;
    }
    atomic_store(&roomy_release, 1);
    while (berth_appender_in_flight(p) > 0) {
        uint64_t last = 0;
        ck_assert_int_eq(berth_appender_wait(p, &last), BERTH_J_OK);
    }
    ck_assert_uint_eq(roomy_seq, next - 1);
    ck_assert_uint_eq(berth_appender_commits(p), BERTH_APPENDER_DEPTH);
    ck_assert_uint_gt(atomic_load(&roomy_appends), BERTH_APPENDER_DEPTH);   /* merges were tried */
    berth_appender_close(p);
}
END_TEST

START_TEST(store_map_full) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_rw(dir, 128 << 10, 1 << 20);
    uint64_t next = 1;
    berth_jerr err;
    uint32_t batches = 0;
    while ((err = append_n(j, next, batch_small)) == BERTH_J_OK) {
        next += batch_small;
        batches++;
        ck_assert_uint_lt(batches, 100000);
    }
    ck_assert_int_eq(err, BERTH_J_FULL);
    ck_assert_uint_gt(batches, 10);   /* the map grew from 128 KiB before filling */
    uint8_t hash[BERTH_HASH_LEN], again[BERTH_HASH_LEN];
    ck_assert_uint_eq(head_of(j, hash), next - 1);
    ck_assert_int_eq(append_n(j, next, batch_small), BERTH_J_FULL);   /* still full, intact */
    ck_assert_uint_eq(head_of(j, again), next - 1);
    ck_assert_mem_eq(hash, again, BERTH_HASH_LEN);
    ck_assert_uint_eq(chain_check(j), next - 1);
    uint64_t disk, map;
    ck_assert_int_eq(sizes_of(j, &disk, &map), BERTH_J_OK);
    ck_assert_uint_eq(map, 1 << 20);
    close_rw(j);

    /* A bigger cap: the same journal takes more. */
    j = open_rw(dir, 128 << 10, 8 << 20);
    ck_assert_uint_eq(head_of(j, again), next - 1);
    ck_assert_mem_eq(hash, again, BERTH_HASH_LEN);
    for (int i = 0; i < 20; i++) {
        ck_assert_int_eq(append_n(j, next, batch_small), BERTH_J_OK);
        next += batch_small;
    }
    ck_assert_uint_eq(chain_check(j), next - 1);
    close_rw(j);
}
END_TEST

typedef struct reader_load {
    berth_journal *journal;
    atomic_bool stop;
    atomic_uint loops;
    atomic_uint failures;
} reader_load;

/* Open a reader, check the head record and a short walk, close; repeat. */
static void *reader_loop(void *arg) {
    reader_load *load = arg;
    while (!atomic_load(&load->stop)) {
        berth_journal_reader *r;
        if (berth_journal_reader_open(load->journal, &r) != BERTH_J_OK) {
            atomic_fetch_add(&load->failures, 1);
            continue;
        }
        uint64_t head;
        uint8_t hash[BERTH_HASH_LEN];
        berth_record rec;
        const uint8_t *raw;
        size_t raw_len;
        bool good = berth_journal_reader_head(r, &head, hash) == BERTH_J_OK;
        if (good && head > 0) {
            good = berth_journal_read(r, head, &rec, &raw, &raw_len) == BERTH_J_OK &&
                   berth_record_hash_ok(raw, raw_len) && memcmp(rec.hash, hash, BERTH_HASH_LEN) == 0;
            good = good && berth_journal_read(r, 1 + head / 2, &rec, &raw, &raw_len) == BERTH_J_OK &&
                   berth_record_hash_ok(raw, raw_len);
        }
        berth_journal_reader_close(r);
        if (!good) atomic_fetch_add(&load->failures, 1);
        atomic_fetch_add(&load->loops, 1);
        /* Under valgrind, whose threads take turns, a loop that never yields
         * keeps the writer waiting a whole time slice after each of its
         * syscalls: 300 appends took 2-4 minutes instead of 10 s. */
        sched_yield();
    }
    return NULL;
}

START_TEST(store_growth_with_reader) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_rw(dir, 64 << 10, 0);
    reader_load load = { .journal = j };
    atomic_init(&load.stop, false);
    atomic_init(&load.loops, 0);
    atomic_init(&load.failures, 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, reader_loop, &load), 0);
    uint64_t next = 1;
    for (int i = 0; i < 300; i++) {
        ck_assert_int_eq(append_n(j, next, batch_small), BERTH_J_OK);
        next += batch_small;
        /* Let the reader run a while before stopping, however fast appends are. */
        while (i == 299 && atomic_load(&load.loops) < reader_loops_min) {
            sched_yield();
        }
    }
    atomic_store(&load.stop, true);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_uint_eq(atomic_load(&load.failures), 0);
    uint64_t disk, map;
    ck_assert_int_eq(sizes_of(j, &disk, &map), BERTH_J_OK);
    ck_assert_uint_ge(map, 4u << 20);   /* grew many doublings from 64 KiB */
    ck_assert_uint_eq(chain_check(j), next - 1);
    close_rw(j);
}
END_TEST

/* A long reader that leaves when a resize wants it (as a stepped verify
 * does) and opens again at once, back to back: growth goes through every
 * time, with no append failing, though a reader is nearly always open and
 * each one would otherwise be held for longer than a resize waits. */
typedef struct yielding_load {
    berth_journal *journal;
    atomic_bool stop;
    atomic_uint opens;
    atomic_uint asked;      /* readers closed because a resize wanted them */
    atomic_uint failures;
} yielding_load;

static void *yielding_reader_loop(void *arg) {
    yielding_load *load = arg;
    const struct timespec tick = { 0, 1000000 };   /* 1 ms */
    const uint32_t hold_ticks_max = 3000;          /* past grow_wait_ms_max */
    while (!atomic_load(&load->stop)) {
        berth_journal_reader *r;
        if (berth_journal_reader_open(load->journal, &r) != BERTH_J_OK) {
            atomic_fetch_add(&load->failures, 1);
            continue;
        }
        atomic_fetch_add(&load->opens, 1);
        for (uint32_t t = 0; t < hold_ticks_max && !atomic_load(&load->stop); t++) {
            if (berth_journal_readers_wanted(load->journal)) {
                atomic_fetch_add(&load->asked, 1);
                break;
            }
            nanosleep(&tick, NULL);
        }
        berth_journal_reader_close(r);
    }
    return NULL;
}

START_TEST(store_growth_with_yielding_reader) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_rw(dir, 64 << 10, 0);
    ck_assert(!berth_journal_readers_wanted(j));
    yielding_load load = { .journal = j };
    atomic_init(&load.stop, false);
    atomic_init(&load.opens, 0);
    atomic_init(&load.asked, 0);
    atomic_init(&load.failures, 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, yielding_reader_loop, &load), 0);
    while (atomic_load(&load.opens) == 0) sched_yield();
    uint64_t next = 1;
    berth_journal_sizes sizes = { 0 };
    while (sizes.map_bytes < (4u << 20)) {
        berth_jerr err = append_n(j, next, batch_small);
        ck_assert_msg(err == BERTH_J_OK, "append at %" PRIu64 ": %s", next, berth_jerr_name(err));
        next += batch_small;
        ck_assert_int_eq(berth_journal_size(j, &sizes), BERTH_J_OK);
    }
    atomic_store(&load.stop, true);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_uint_eq(atomic_load(&load.failures), 0);
    ck_assert_uint_ge(atomic_load(&load.asked), 1);   /* some growth found a reader open */
    ck_assert(!berth_journal_readers_wanted(j));
    ck_assert_uint_eq(chain_check(j), next - 1);
    close_rw(j);
}
END_TEST

/* A reader held open across appends keeps the map from moving: once the
 * map is full the append waits a bounded time, returns AGAIN (not FULL: the
 * map is far from its cap) with nothing written, and the first append after
 * the reader closes grows and succeeds. */
START_TEST(store_growth_waits_for_reader) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_rw(dir, 64 << 10, 0);
    berth_journal_reader *r;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    uint64_t next = 1;
    berth_jerr err;
    while ((err = append_n(j, next, batch_small)) == BERTH_J_OK) {
        next += batch_small;
        ck_assert_uint_lt(next, 100000);
    }
    ck_assert_int_eq(err, BERTH_J_AGAIN);
    ck_assert_str_eq(berth_jerr_name(err), "AGAIN");
    uint64_t disk, map;
    ck_assert_int_eq(sizes_of(j, &disk, &map), BERTH_J_OK);
    ck_assert_uint_eq(map, 64 << 10);   /* never moved under the open reader */
    uint64_t seen;
    uint8_t hash[BERTH_HASH_LEN];
    ck_assert_int_eq(berth_journal_reader_head(r, &seen, hash), BERTH_J_OK);
    ck_assert_uint_eq(seen, 0);   /* its view is the empty journal it opened on */
    berth_journal_reader_close(r);
    ck_assert_uint_eq(head_of(j, NULL), next - 1);
    ck_assert_int_eq(append_n(j, next, batch_small), BERTH_J_OK);
    ck_assert_int_eq(sizes_of(j, &disk, &map), BERTH_J_OK);
    ck_assert_uint_gt(map, 64 << 10);
    ck_assert_uint_eq(chain_check(j), next - 1 + batch_small);
    close_rw(j);
}
END_TEST

/* Child: a tool holding a read transaction, until it is killed. */
static int child_reader_forever(const char *dir, int fd) {
    berth_journal_options o = { .read_only = true };
    berth_journal *j = NULL;
    berth_journal_reader *r;
    if (berth_journal_open_lmdb(&j, dir, &o, NULL, 0) != BERTH_J_OK) return 1;
    if (berth_journal_reader_open(j, &r) != BERTH_J_OK) return 2;
    if (write(fd, "r", 1) != 1) return 3;
    for (;;) pause();
}

/* Child: count reader slots of dead processes (and free them). */
static int child_count_dead(const char *dir, int want) {
    MDB_env *env;
    int dead = -1;
    if (mdb_env_create(&env) != 0 || mdb_env_set_maxdbs(env, 4) != 0 ||
        mdb_env_open(env, dir, MDB_RDONLY, 0600) != 0 || mdb_reader_check(env, &dead) != 0) {
        return 1;
    }
    mdb_env_close(env);
    return dead == want ? 0 : 2;
}

/* Fork child(dir, fd), which writes a byte to fd per step it finishes;
 * SIGKILL it once it has reported `steps` of them (most likely in the middle
 * of the next) and return every step it reported before it died. */
static uint32_t kill_after_steps(const char *dir, child_fn child, uint32_t steps) {
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = child_spawn(child, dir, fds[1], fds[0]);
    close(fds[1]);
    uint32_t seen = 0;
    char byte;
    while (seen < steps) {
        ck_assert_int_eq(read(fds[0], &byte, 1), 1);
        seen++;
    }
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    while (read(fds[0], &byte, 1) == 1) seen++;   /* steps reported before the kill */
    close(fds[0]);
    return seen;
}

static void reader_killed(const char *dir) {
    ck_assert_uint_eq(kill_after_steps(dir, child_reader_forever, 1), 1);
}

/* A tool killed inside a read transaction leaves its reader slot behind
 * for as long as berthd keeps the environment open; berthd's writes sweep
 * it (before growing the map, which such a slot would otherwise force). */
START_TEST(store_dead_reader_swept) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_rw(dir, 64 << 10, 0);
    ck_assert_int_eq(append_n(j, 1, 3), BERTH_J_OK);
    reader_killed(dir);
    ck_assert(in_child(child_count_dead, dir, 1));   /* it stays (this check frees it) */
    reader_killed(dir);
    uint64_t next = 4, disk, map, map_before;
    ck_assert_int_eq(sizes_of(j, &disk, &map_before), BERTH_J_OK);
    map = map_before;   /* the open's own writes may have grown it already */
    while (map == map_before) {   /* write until the map has grown once more */
        ck_assert_int_eq(append_n(j, next, batch_small), BERTH_J_OK);
        next += batch_small;
        ck_assert_int_eq(sizes_of(j, &disk, &map), BERTH_J_OK);
    }
    ck_assert(in_child(child_count_dead, dir, 0));
    close_rw(j);
}
END_TEST

/* Child: a read-only open beside the writer sees its records; writes refused. */
static int child_read_only(const char *dir, int fd) {
    berth_journal_options o = { .read_only = true, .no_lock = fd != 0 };
    berth_journal *j = NULL;
    if (berth_journal_open_lmdb(&j, dir, &o, NULL, 0) != BERTH_J_OK) return 1;
    uint64_t seq;
    uint8_t hash[BERTH_HASH_LEN];
    if (berth_journal_head(j, &seq, hash) != BERTH_J_OK || seq != 10) return 2;
    if (append_n(j, 11, 1) != BERTH_J_READONLY) return 3;
    if (berth_journal_snapshot_put(j, 5, "x", 1) != BERTH_J_READONLY) return 4;
    berth_journal_reader *r;
    berth_record rec;
    if (berth_journal_reader_open(j, &r) != BERTH_J_OK) return 5;
    if (berth_journal_read(r, 10, &rec, NULL, NULL) != BERTH_J_OK) return 6;
    if (memcmp(rec.hash, hash, BERTH_HASH_LEN) != 0) return 7;
    berth_journal_reader_close(r);
    berth_journal_close(j);
    return 0;
}

START_TEST(store_locked) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_rw(dir, 0, 0);
    ck_assert_int_eq(append_n(j, 1, 10), BERTH_J_OK);
    berth_journal *second = NULL;
    char err[err_len_max];
    ck_assert_int_eq(berth_journal_open_lmdb(&second, dir, NULL, err, sizeof(err)),
                     BERTH_J_LOCKED);
    ck_assert_ptr_null(second);
    char want[err_len_max];
    snprintf(want, sizeof(want), "data directory %s is in use by another berthd (pid %d)", dir,
             (int)getpid());
    ck_assert_str_eq(err, want);
    ck_assert(in_child(child_read_only, dir, 0));
    ck_assert(in_child(child_read_only, dir, 1));
    close_rw(j);
    /* Closed: the lock is free again. */
    j = open_rw(dir, 0, 0);
    close_rw(j);

    /* Read-only opens of a missing directory or one without a journal. */
    berth_journal_options ro = { .read_only = true };
    char missing[300];
    snprintf(missing, sizeof(missing), "%s/none", temp_root);
    ck_assert_int_eq(berth_journal_open_lmdb(&second, missing, &ro, err, sizeof(err)),
                     BERTH_J_NOTFOUND);
    ck_assert_ptr_nonnull(strstr(err, "does not exist"));
    ck_assert_int_eq(mkdir(missing, 0700), 0);
    ck_assert_int_eq(berth_journal_open_lmdb(&second, missing, &ro, err, sizeof(err)),
                     BERTH_J_NOTFOUND);
    ck_assert_ptr_nonnull(strstr(err, "no journal"));
}
END_TEST

typedef struct touched_spec {
    const char *instance;
    const char *workers[3];
} touched_spec;

START_TEST(store_history) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_rw(dir, 0, 0);
    static const touched_spec specs[] = {
        { NULL, { "w1", NULL, NULL } },          /* 1: WORKER.ADD w1 */
        { NULL, { "w2", NULL, NULL } },          /* 2 */
        { "big", { "w1", "w2", NULL } },         /* 3: DEPLOY big ON w1 w2 */
        { "small", { "w2", NULL, NULL } },       /* 4 */
        { NULL, { NULL, NULL, NULL } },          /* 5: POLICY.SET */
        { "big", { "w1", "w2", NULL } },         /* 6: RELEASE big */
        { "w1", { "w10", NULL, NULL } },         /* 7: an instance named like a worker */
    };
    enum { n = sizeof(specs) / sizeof(specs[0]) };
    built b[n];
    berth_record recs[n];
    berth_touched touched[n];
    berth_str names[n][3];
    for (size_t i = 0; i < n; i++) {
        build(&b[i], 1 + i);
        recs[i] = b[i].rec;
        uint32_t count = 0;
        while (count < 3 && specs[i].workers[count] != NULL) {
            names[i][count] = berth_str_make(specs[i].workers[count],
                                             strlen(specs[i].workers[count]));
            count++;
        }
        const char *inst = specs[i].instance;
        touched[i] = (berth_touched){ berth_str_make(inst ? inst : "", inst ? strlen(inst) : 0),
                                      count, names[i] };
    }
    /* Two batches, so the index spans transactions. */
    ck_assert_int_eq(berth_journal_append(j, recs, touched, 4), BERTH_J_OK);
    ck_assert_int_eq(berth_journal_append(j, recs + 4, touched + 4, n - 4), BERTH_J_OK);
    ck_assert_int_eq(append_n(j, n + 1, 3), BERTH_J_OK);   /* no touched at all */

    berth_journal_reader *r;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    uint64_t seqs[16];
    size_t got;
    ck_assert_int_eq(berth_journal_history(r, BERTH_HISTORY_WORKER, berth_str_make("w1", 2), 0,
                                           seqs, 16, &got), BERTH_J_OK);
    ck_assert_uint_eq(got, 3);
    ck_assert(seqs[0] == 1 && seqs[1] == 3 && seqs[2] == 6);
    ck_assert_int_eq(berth_journal_history(r, BERTH_HISTORY_WORKER, berth_str_make("w2", 2), 3,
                                           seqs, 16, &got), BERTH_J_OK);
    ck_assert_uint_eq(got, 3);
    ck_assert(seqs[0] == 3 && seqs[1] == 4 && seqs[2] == 6);
    ck_assert_int_eq(berth_journal_history(r, BERTH_HISTORY_WORKER, berth_str_make("w2", 2), 4,
                                           seqs, 1, &got), BERTH_J_OK);
    ck_assert_uint_eq(got, 1);
    ck_assert_uint_eq(seqs[0], 4);
    ck_assert_int_eq(berth_journal_history(r, BERTH_HISTORY_INSTANCE, berth_str_make("big", 3),
                                           0, seqs, 16, &got), BERTH_J_OK);
    ck_assert_uint_eq(got, 2);
    ck_assert(seqs[0] == 3 && seqs[1] == 6);
    ck_assert_int_eq(berth_journal_history(r, BERTH_HISTORY_INSTANCE, berth_str_make("w1", 2),
                                           0, seqs, 16, &got), BERTH_J_OK);
    ck_assert_uint_eq(got, 1);
    ck_assert_uint_eq(seqs[0], 7);
    ck_assert_int_eq(berth_journal_history(r, BERTH_HISTORY_WORKER, berth_str_make("w", 1),
                                           0, seqs, 16, &got), BERTH_J_OK);
    ck_assert_uint_eq(got, 0);
    ck_assert_int_eq(berth_journal_history(r, BERTH_HISTORY_WORKER, berth_str_make("w10", 3),
                                           8, seqs, 16, &got), BERTH_J_OK);
    ck_assert_uint_eq(got, 0);
    ck_assert_int_eq(berth_journal_history(r, BERTH_HISTORY_WORKER, berth_str_make("w1", 2),
                                           7, seqs, 16, &got), BERTH_J_OK);
    ck_assert_uint_eq(got, 0);
    berth_journal_reader_close(r);
    close_rw(j);
}
END_TEST

START_TEST(store_snapshots) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_rw(dir, 0, 0);
    ck_assert_int_eq(append_n(j, 1, 30), BERTH_J_OK);
    ck_assert_int_eq(berth_journal_snapshot_put(j, 31, "late", 4), BERTH_J_INVALID);
    ck_assert_int_eq(berth_journal_snapshot_put(j, 0, "zero", 4), BERTH_J_INVALID);
    ck_assert_int_eq(berth_journal_snapshot_put(j, 20, "twenty", 6), BERTH_J_OK);
    ck_assert_int_eq(berth_journal_snapshot_put(j, 10, "ten", 3), BERTH_J_OK);
    static uint8_t big[3 << 20];   /* bigger than a page and than half the first map */
    for (size_t i = 0; i < sizeof(big); i++) big[i] = (uint8_t)(i * 31);
    ck_assert_int_eq(berth_journal_snapshot_put(j, 30, big, sizeof(big)), BERTH_J_OK);

    berth_journal_reader *r;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    uint64_t seq;
    const void *bytes;
    size_t len;
    ck_assert_int_eq(berth_journal_snapshot_get(r, 25, &seq, &bytes, &len), BERTH_J_OK);
    ck_assert(seq == 20 && len == 6 && memcmp(bytes, "twenty", 6) == 0);
    ck_assert_int_eq(berth_journal_snapshot_get(r, 20, &seq, &bytes, &len), BERTH_J_OK);
    ck_assert_uint_eq(seq, 20);
    ck_assert_int_eq(berth_journal_snapshot_get(r, 19, &seq, &bytes, &len), BERTH_J_OK);
    ck_assert(seq == 10 && len == 3 && memcmp(bytes, "ten", 3) == 0);
    ck_assert_int_eq(berth_journal_snapshot_get(r, UINT64_MAX, &seq, &bytes, &len), BERTH_J_OK);
    ck_assert(seq == 30 && len == sizeof(big) && memcmp(bytes, big, sizeof(big)) == 0);
    ck_assert_int_eq(berth_journal_snapshot_get(r, 9, &seq, &bytes, &len), BERTH_J_NOTFOUND);
    uint64_t seqs[2];
    size_t n;
    ck_assert_int_eq(berth_journal_snapshot_list(r, seqs, 2, &n), BERTH_J_OK);
    ck_assert_uint_eq(n, 3);
    ck_assert(seqs[0] == 10 && seqs[1] == 20);
    ck_assert_int_eq(berth_journal_snapshot_list(r, NULL, 0, &n), BERTH_J_OK);
    ck_assert_uint_eq(n, 3);
    berth_journal_reader_close(r);
    close_rw(j);

    /* Empty list on a journal with none. */
    dir_fresh(dir, sizeof(dir));
    j = open_rw(dir, 0, 0);
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    ck_assert_int_eq(berth_journal_snapshot_list(r, seqs, 2, &n), BERTH_J_OK);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(berth_journal_snapshot_get(r, UINT64_MAX, &seq, &bytes, &len),
                     BERTH_J_NOTFOUND);
    berth_journal_reader_close(r);
    close_rw(j);
}
END_TEST

/* Snapshots are pruned to the newest BERTH_SNAPSHOTS_KEPT_MAX, oldest first. */
START_TEST(store_snapshots_pruned) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_rw(dir, 0, 0);
    const uint64_t extra = 5, total = BERTH_SNAPSHOTS_KEPT_MAX + extra;
    ck_assert_int_eq(append_n(j, 1, total), BERTH_J_OK);
    for (uint64_t seq = 1; seq <= total; seq++) {
        ck_assert_int_eq(berth_journal_snapshot_put(j, seq, &seq, sizeof(seq)), BERTH_J_OK);
    }
    berth_journal_reader *r;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    uint64_t seqs[BERTH_SNAPSHOTS_KEPT_MAX + 8];
    size_t n;
    ck_assert_int_eq(berth_journal_snapshot_list(r, seqs, BERTH_SNAPSHOTS_KEPT_MAX + 8, &n), BERTH_J_OK);
    ck_assert_uint_eq(n, BERTH_SNAPSHOTS_KEPT_MAX);
    for (size_t i = 0; i < n; i++) ck_assert_uint_eq(seqs[i], extra + 1 + i);
    uint64_t seq;
    const void *bytes;
    size_t len;
    ck_assert_int_eq(berth_journal_snapshot_get(r, extra, &seq, &bytes, &len), BERTH_J_NOTFOUND);
    ck_assert_int_eq(berth_journal_snapshot_get(r, UINT64_MAX, &seq, &bytes, &len), BERTH_J_OK);
    ck_assert(seq == total && len == sizeof(seq) && memcmp(bytes, &total, sizeof(total)) == 0);
    berth_journal_reader_close(r);
    close_rw(j);
}
END_TEST

/* Child: damage the stored journal with LMDB directly (as a disk fault or
 * a hand edit would): delete seq 5 (fd 0) or flip a byte of seq 7 (fd 1). */
static int child_damage(const char *dir, int how) {
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    if (mdb_env_create(&env) != 0 || mdb_env_set_maxdbs(env, 4) != 0 ||
        mdb_env_open(env, dir, 0, 0600) != 0 || mdb_txn_begin(env, NULL, 0, &txn) != 0 ||
        mdb_dbi_open(txn, "journal", MDB_INTEGERKEY, &dbi) != 0) {
        return 1;
    }
    uint64_t seq = how == 0 ? 5 : 7;
    MDB_val key = { sizeof(seq), &seq }, val;
    if (how == 0) {
        if (mdb_del(txn, dbi, &key, NULL) != 0) return 2;
    } else {
        if (mdb_get(txn, dbi, &key, &val) != 0) return 3;
        uint8_t copy[512];
        if (val.mv_size > sizeof(copy)) return 4;
        memcpy(copy, val.mv_data, val.mv_size);
        copy[20] ^= 0x01;   /* inside the command text: still decodes */
        MDB_val put = { val.mv_size, copy };
        if (mdb_put(txn, dbi, &key, &put, 0) != 0) return 5;
    }
    if (mdb_txn_commit(txn) != 0) return 6;
    mdb_env_close(env);
    return 0;
}

START_TEST(store_gap_and_flip) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_rw(dir, 0, 0);
    ck_assert_int_eq(append_n(j, 1, 10), BERTH_J_OK);
    close_rw(j);
    ck_assert(in_child(child_damage, dir, 0));
    ck_assert(in_child(child_damage, dir, 1));

    j = open_rw(dir, 0, 0);
    berth_journal_reader *r;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    berth_journal_cursor *c;
    ck_assert_int_eq(berth_journal_cursor_open(r, 1, &c), BERTH_J_OK);
    berth_record rec;
    for (uint64_t want = 1; want <= 4; want++) {
        ck_assert_int_eq(berth_journal_cursor_next(c, &rec, NULL, NULL), BERTH_J_OK);
        ck_assert_uint_eq(rec.seq, want);
    }
    ck_assert_int_eq(berth_journal_cursor_next(c, &rec, NULL, NULL), BERTH_J_CORRUPT);
    ck_assert_uint_eq(rec.seq, 5);   /* the seq that should have followed */
    ck_assert_int_eq(berth_journal_cursor_next(c, &rec, NULL, NULL), BERTH_J_CORRUPT);
    berth_journal_cursor_close(c);

    /* The flipped record still decodes but its hash no longer matches. */
    const uint8_t *raw;
    size_t raw_len;
    ck_assert_int_eq(berth_journal_read(r, 7, &rec, &raw, &raw_len), BERTH_J_OK);
    ck_assert(!berth_record_hash_ok(raw, raw_len));
    ck_assert_int_eq(berth_journal_read(r, 6, &rec, &raw, &raw_len), BERTH_J_OK);
    ck_assert(berth_record_hash_ok(raw, raw_len));
    berth_journal_reader_close(r);
    close_rw(j);
}
END_TEST

/* Child: append batches of 64 forever, one byte on fd after each commit. */
static int child_append_forever(const char *dir, int fd) {
    berth_journal_options o = { .map_size_initial = 256 << 10 };
    berth_journal *j = NULL;
    if (berth_journal_open_lmdb(&j, dir, &o, NULL, 0) != BERTH_J_OK) return 1;
    uint64_t head;
    uint8_t hash[BERTH_HASH_LEN];
    if (berth_journal_head(j, &head, hash) != BERTH_J_OK) return 2;
    for (;;) {
        if (append_n(j, head + 1, batch_small) != BERTH_J_OK) return 3;
        head += batch_small;
        if (write(fd, "b", 1) != 1) return 4;
    }
}

/* Batches acknowledged by a writer killed after batches_before_kill. */
static uint32_t crash_round(const char *dir, uint32_t batches_before_kill) {
    return kill_after_steps(dir, child_append_forever, batches_before_kill);
}

START_TEST(store_crash_mid_batch) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    uint64_t acknowledged = 0;
    for (uint32_t round = 0; round < crash_rounds; round++) {
        acknowledged += crash_round(dir, 5 + 7 * round) * (uint64_t)batch_small;
        berth_journal *j = open_rw(dir, 0, 0);   /* the dead child's lock is gone */
        uint64_t head = chain_check(j);
        ck_assert_uint_eq(head % batch_small, 0);
        ck_assert_uint_ge(head, acknowledged);   /* nothing acknowledged is lost */
        ck_assert_uint_le(head, acknowledged + batch_small);
        acknowledged = head;
        close_rw(j);
    }
}
END_TEST

/* Child: open read-only on a small map, wait for the writer to grow the
 * file far past it, then read its newest record (adopting the new size). */
static int child_adopt(const char *dir, int fd) {
    berth_journal_options o = { .read_only = true };
    berth_journal *j = NULL;
    if (berth_journal_open_lmdb(&j, dir, &o, NULL, 0) != BERTH_J_OK) return 1;
    uint64_t disk, map_before, map_after;
    if (sizes_of(j, &disk, &map_before) != BERTH_J_OK) return 2;
    char byte;
    if (write(fd, "r", 1) != 1 || read(fd, &byte, 1) != 1) return 3;
    uint64_t head;
    uint8_t hash[BERTH_HASH_LEN];
    if (berth_journal_head(j, &head, hash) != BERTH_J_OK || head != 64 * 400) return 4;
    berth_journal_reader *r;
    berth_record rec;
    if (berth_journal_reader_open(j, &r) != BERTH_J_OK) return 5;
    if (berth_journal_read(r, head, &rec, NULL, NULL) != BERTH_J_OK) return 6;
    berth_journal_reader_close(r);
    if (sizes_of(j, &disk, &map_after) != BERTH_J_OK || map_after <= map_before) return 7;
    berth_journal_close(j);
    return 0;
}

START_TEST(store_reader_adopts_growth) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_rw(dir, 64 << 10, 0);
    ck_assert_int_eq(append_n(j, 1, 1), BERTH_J_OK);
    int fds[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    pid_t pid = child_spawn(child_adopt, dir, fds[1], fds[0]);
    close(fds[1]);
    char byte;
    ck_assert_int_eq(read(fds[0], &byte, 1), 1);
    ck_assert_int_eq(append_n(j, 2, batch_small - 1), BERTH_J_OK);
    for (uint64_t next = batch_small + 1; next < 64 * 400; next += batch_small) {
        ck_assert_int_eq(append_n(j, next, batch_small), BERTH_J_OK);
    }
    ck_assert_uint_eq(head_of(j, NULL), 64 * 400);
    ck_assert_int_eq(write(fds[0], "g", 1), 1);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    close(fds[0]);
    close_rw(j);
}
END_TEST

/* A full disk: a 2 MiB tmpfs with a 700 KiB filler file. Appends stop with
 * FULL, the head and its records stay intact, and once the filler is gone
 * appends resume in the same open journal. Needs root (mount); as any other
 * user the test says so and checks nothing. */
START_TEST(store_disk_full) {
    char disk_mount[300];
    disk_mount_path(disk_mount, sizeof(disk_mount));
    ck_assert_int_eq(mkdir(disk_mount, 0700), 0);
    if (mount("tmpfs", disk_mount, "tmpfs", 0, "size=2m") != 0) {
        fprintf(stderr, "store_disk_full: cannot mount a tmpfs (%s): not checked\n", strerror(errno));
        return;
    }
    char filler[400], dir[400];
    snprintf(filler, sizeof(filler), "%s/filler", disk_mount);
    snprintf(dir, sizeof(dir), "%s/data", disk_mount);
    FILE *f = fopen(filler, "w");
    ck_assert_ptr_nonnull(f);
    static char block[700 << 10];
    ck_assert_uint_eq(fwrite(block, 1, sizeof(block), f), sizeof(block));
    ck_assert_int_eq(fclose(f), 0);

    berth_journal *j = open_rw(dir, 0, 0);
    uint64_t next = 1;
    berth_jerr err;
    while ((err = append_n(j, next, batch_small)) == BERTH_J_OK) {
        next += batch_small;
        ck_assert_uint_lt(next, 1000000);
    }
    ck_assert_int_eq(err, BERTH_J_FULL);
    ck_assert_uint_gt(next, batch_small);
    uint8_t hash[BERTH_HASH_LEN], again[BERTH_HASH_LEN];
    ck_assert_uint_eq(head_of(j, hash), next - 1);
    ck_assert_int_eq(append_n(j, next, batch_small), BERTH_J_FULL);
    ck_assert_uint_eq(head_of(j, again), next - 1);
    ck_assert_mem_eq(hash, again, BERTH_HASH_LEN);
    ck_assert_uint_eq(chain_check(j), next - 1);

    ck_assert_int_eq(unlink(filler), 0);
    ck_assert_int_eq(append_n(j, next, batch_small), BERTH_J_OK);
    ck_assert_uint_eq(chain_check(j), next - 1 + batch_small);
    close_rw(j);
    ck_assert_int_eq(umount(disk_mount), 0);
}
END_TEST

/* ---- HISTORY across the touchlog fold -------------------------------- */

/* These stores fold touchlog into history once fold_records records are
 * unfolded (the history_fold_records option), so a few hundred records
 * cross the threshold several times: exactly on it, just under it, by a
 * batch larger than it, and at a writable open. */
enum {
    fold_records = 64,          /* the history_fold_records option of these tests */
    hist_instances = 5,         /* "inst-0".."inst-4" */
    hist_workers = 24,          /* "w0".."w23" */
    hist_batch = 10,            /* the crash test's batch: its folds land at 70, 140, ... */
    hist_crash_head_max = 300,  /* the crash test's writer stops appending here */
    hist_seqs_max = 512,        /* more than any test's head */
    hist_name_len_max = 16
};

static berth_journal *open_fold(const char *dir, uint32_t fold) {
    berth_journal_options o = { .history_fold_records = fold };
    return open_writer(dir, &o);
}

/* The names record seq touches, a pure function of seq: an instance on
 * three in four records, 0..2 distinct workers, and some records none. */
static int hist_instance_of(uint64_t seq) {
    return seq % 4 == 0 ? -1 : (int)(seq % hist_instances);
}
static uint32_t hist_worker_count(uint64_t seq) {
    return (uint32_t)(seq % 3);
}
static int hist_worker_of(uint64_t seq, uint32_t i) {
    return i == 0 ? (int)(seq % 13) : 13 + (int)(seq % 11);
}

typedef struct hist_names {
    char instance[hist_name_len_max];
    char workers[2][hist_name_len_max];
    berth_str worker_strs[2];
} hist_names;

static void hist_touched(uint64_t seq, hist_names *names, berth_touched *t) {
    memset(t, 0, sizeof(*t));
    int inst = hist_instance_of(seq);
    if (inst >= 0) {
        int n = snprintf(names->instance, sizeof(names->instance), "inst-%d", inst);
        t->instance = berth_str_make(names->instance, (size_t)n);
    }
    t->worker_count = hist_worker_count(seq);
    for (uint32_t i = 0; i < t->worker_count; i++) {
        int n = snprintf(names->workers[i], sizeof(names->workers[i]), "w%d",
                         hist_worker_of(seq, i));
        names->worker_strs[i] = berth_str_make(names->workers[i], (size_t)n);
    }
    t->workers = names->worker_strs;
}

/* Append records first..first+n-1, each with its touched names. */
static berth_jerr append_touched(berth_journal *j, uint64_t first, size_t n) {
    built *b = calloc(n, sizeof(*b));
    berth_record *recs = calloc(n, sizeof(*recs));
    hist_names *names = calloc(n, sizeof(*names));
    berth_touched *touched = calloc(n, sizeof(*touched));
    ck_assert(b != NULL && recs != NULL && names != NULL && touched != NULL);
    for (size_t i = 0; i < n; i++) {
        build(&b[i], first + i);
        recs[i] = b[i].rec;
        hist_touched(first + i, &names[i], &touched[i]);
    }
    berth_jerr err = berth_journal_append(j, recs, touched, n);
    free(touched);
    free(names);
    free(recs);
    free(b);
    return err;
}

/* Independent expectation: seqs in from..head whose names include (kind, id). */
static size_t hist_expect(char kind, int id, uint64_t from, uint64_t head, uint64_t *out,
                          size_t cap) {
    size_t n = 0;
    for (uint64_t s = from > 0 ? from : 1; s <= head && n < cap; s++) {
        bool hit = kind == 'i' && hist_instance_of(s) == id;
        for (uint32_t i = 0; kind == 'w' && i < hist_worker_count(s); i++) {
            hit = hit || hist_worker_of(s, i) == id;
        }
        if (hit) out[n++] = s;
    }
    return n;
}

static uint64_t hist_got[hist_seqs_max];
static uint64_t hist_want[hist_seqs_max];

static void hist_check_one(berth_journal_reader *r, char kind, int id, uint64_t from,
                           uint64_t head, size_t cap) {
    char name[hist_name_len_max];
    int len = snprintf(name, sizeof(name), kind == 'i' ? "inst-%d" : "w%d", id);
    size_t got = 99;
    berth_jerr err = berth_journal_history(r, (berth_history_kind)kind,
                                           berth_str_make(name, (size_t)len), from, hist_got,
                                           cap, &got);
    loop_assert_msg(err == BERTH_J_OK, "%s from %" PRIu64 ": %s", name, from,
                    berth_jerr_name(err));
    size_t want = hist_expect(kind, id, from, head, hist_want, cap);
    loop_assert_msg(got == want, "%s from %" PRIu64 " cap %zu: %zu seqs, want %zu", name, from,
                    cap, got, want);
    for (size_t i = 0; i < want; i++) {
        loop_assert_msg(hist_got[i] == hist_want[i], "%s from %" PRIu64 " [%zu]: %" PRIu64
                        " want %" PRIu64, name, from, i, hist_got[i], hist_want[i]);
    }
}

/* Every name (and one never touched) from every start 0..head+1, so every
 * query that spans a fold boundary, starts on one or lies wholly on either
 * side of it is checked, as full lists and capped at 3. */
static void hist_check_from(berth_journal_reader *r, uint64_t from, uint64_t head) {
    for (int id = 0; id <= hist_instances; id++) {
        hist_check_one(r, 'i', id, from, head, hist_seqs_max);
        hist_check_one(r, 'i', id, from, head, 3);
    }
    for (int id = 0; id <= hist_workers; id++) {
        hist_check_one(r, 'w', id, from, head, hist_seqs_max);
        hist_check_one(r, 'w', id, from, head, 3);
    }
}

static void hist_check_all(berth_journal *j) {
    berth_journal_reader *r;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    uint64_t head;
    uint8_t hash[BERTH_HASH_LEN];
    ck_assert_int_eq(berth_journal_reader_head(r, &head, hash), BERTH_J_OK);
    ck_assert_uint_lt(head, hist_seqs_max);
    /* Under valgrind every 7th start and the last two: each path is still
     * taken, at a seventh of the cost; the other builds take every start. */
    uint64_t stride = test_under_valgrind() ? 7 : 1;
    for (uint64_t from = 0; from <= head + 1; from += stride) {
        hist_check_from(r, from, head);
    }
    if (stride > 1) {
        hist_check_from(r, head, head);
        hist_check_from(r, head + 1, head);
    }
    berth_journal_reader_close(r);
}

static bool hist_touches_any(uint64_t seq) {
    return hist_instance_of(seq) >= 0 || hist_worker_count(seq) > 0;
}

/* The first seq >= seq that touched a name (records that touched none have
 * no touchlog entry). */
static uint64_t hist_next_touching(uint64_t seq) {
    while (!hist_touches_any(seq)) seq++;
    return seq;
}

/* The store's fold state, read with LMDB directly (in a child): the history
 * environment's folded_seq, the main environment's trimmed_seq and head,
 * whether touchlog holds exactly the touching seqs trimmed+1..head (the
 * trim deleted only folded entries, and lost none) and whether history
 * holds nothing past folded_seq. */
typedef struct fold_state {
    uint64_t folded, trimmed, head;
    bool touchlog_exact, history_bounded;
} fold_state;

static int u64_meta(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t *out) {
    MDB_val key = { strlen(name), (void *)name }, val;
    if (mdb_get(txn, dbi, &key, &val) != 0 || val.mv_size != sizeof(*out)) return 1;
    memcpy(out, val.mv_data, sizeof(*out));
    return 0;
}

/* The runs (journal/history_runs.h), read with LMDB directly: every run's
 * seqs ascend within its range, no two runs overlap, none reaches past
 * folded_seq, and each key's run id is one runlist names at the level of
 * the database it is in. Clears history_bounded otherwise; MDB_NOTFOUND
 * when it could read them. */
static int runs_bounded(MDB_txn *txn, fold_state *st) {
    MDB_dbi runs[hist_run_levels], runlist;
    int open_rc = mdb_dbi_open(txn, "runlist", 0, &runlist);
    if (open_rc == MDB_NOTFOUND) {
        return MDB_NOTFOUND;   /* an index made before runs */
    }
    for (uint32_t l = 0; l < hist_run_levels && open_rc == 0; l++) {
        open_rc = mdb_dbi_open(txn, hist_runs_db_names[l], 0, &runs[l]);
    }
    if (open_rc != 0) {
        return 8;
    }
    enum { ids_max = 256 };
    uint64_t ids[ids_max], firsts[ids_max], lasts[ids_max];
    uint32_t levels[ids_max];
    size_t nruns = 0;
    MDB_cursor *cursor;
    MDB_val key, val;
    if (mdb_cursor_open(txn, runlist, &cursor) != 0) return 9;
    uint64_t prev_last = 0;
    int rc;
    for (rc = mdb_cursor_get(cursor, &key, &val, MDB_FIRST); rc == 0 && nruns < ids_max;
         rc = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) {
        if (key.mv_size != 8 || val.mv_size != 32) return 10;
        const uint8_t *b = key.mv_data;
        uint64_t first = 0;
        for (int i = 0; i < 8; i++) first = (first << 8) | b[i];
        memcpy(&lasts[nruns], val.mv_data, 8);
        memcpy(&ids[nruns], (const uint8_t *)val.mv_data + 8, 8);
        memcpy(&levels[nruns], (const uint8_t *)val.mv_data + 24, 4);
        firsts[nruns] = first;
        st->history_bounded = st->history_bounded && first > prev_last &&
                              lasts[nruns] >= first && lasts[nruns] <= st->folded;
        prev_last = lasts[nruns];
        nruns++;
    }
    mdb_cursor_close(cursor);
    if (rc != MDB_NOTFOUND) return 11;
    for (uint32_t l = 0; l < hist_run_levels && rc == MDB_NOTFOUND; l++) {
        if (mdb_cursor_open(txn, runs[l], &cursor) != 0) return 12;
        for (rc = mdb_cursor_get(cursor, &key, &val, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) {
            const uint8_t *b = key.mv_data;
            uint64_t id = 0;
            for (int i = 0; i < 8 && key.mv_size >= 8; i++) id = (id << 8) | b[i];
            size_t r = 0;
            while (r < nruns && ids[r] != id) r++;
            bool ok = key.mv_size > 9 && r < nruns && levels[r] == l && val.mv_size > 0 &&
                      val.mv_size % 8 == 0;
            uint64_t prev = 0;
            for (size_t i = 0; ok && i < val.mv_size / 8; i++) {
                uint64_t seq;
                memcpy(&seq, (const uint8_t *)val.mv_data + 8 * i, 8);
                ok = seq > prev && seq >= firsts[r] && seq <= lasts[r];
                prev = seq;
            }
            st->history_bounded = st->history_bounded && ok;
        }
        mdb_cursor_close(cursor);
    }
    return rc;
}

static int fold_state_read(const char *dir, fold_state *st) {
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta, touchlog, journal;
    if (mdb_env_create(&env) != 0 || mdb_env_set_maxdbs(env, 8) != 0 ||
        mdb_env_open(env, dir, MDB_RDONLY, 0600) != 0 ||
        mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) != 0 ||
        mdb_dbi_open(txn, "meta", 0, &meta) != 0 ||
        mdb_dbi_open(txn, "touchlog", MDB_INTEGERKEY, &touchlog) != 0 ||
        mdb_dbi_open(txn, "journal", MDB_INTEGERKEY, &journal) != 0) {
        return 1;
    }
    if (u64_meta(txn, meta, "trimmed_seq", &st->trimmed) != 0) return 2;
    MDB_stat journal_stat;
    if (mdb_stat(txn, journal, &journal_stat) != 0) return 3;
    st->head = journal_stat.ms_entries;   /* seqs are dense from 1 */
    MDB_cursor *cursor;
    if (mdb_cursor_open(txn, touchlog, &cursor) != 0) return 3;
    uint64_t expect = hist_next_touching(st->trimmed + 1);
    bool exact = true;
    MDB_val key, val;
    int rc = mdb_cursor_get(cursor, &key, &val, MDB_FIRST);
    for (; rc == 0 && exact; rc = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) {
        uint64_t seq;
        memcpy(&seq, key.mv_data, sizeof(seq));
        exact = seq == expect;
        expect = hist_next_touching(expect + 1);
    }
    st->touchlog_exact = exact && rc == MDB_NOTFOUND && expect > st->head;
    mdb_cursor_close(cursor);
    mdb_txn_abort(txn);
    mdb_env_close(env);

    char hdir[300];
    snprintf(hdir, sizeof(hdir), "%s/history", dir);
    MDB_dbi history;
    if (mdb_env_create(&env) != 0 || mdb_env_set_maxdbs(env, 8) != 0 ||
        mdb_env_open(env, hdir, MDB_RDONLY, 0600) != 0 ||
        mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) != 0 ||
        mdb_dbi_open(txn, "meta", 0, &meta) != 0 ||
        mdb_dbi_open(txn, "history", MDB_DUPSORT | MDB_DUPFIXED, &history) != 0) {
        return 4;
    }
    if (u64_meta(txn, meta, "folded_seq", &st->folded) != 0) return 5;
    if (mdb_cursor_open(txn, history, &cursor) != 0) return 6;
    st->history_bounded = true;
    for (rc = mdb_cursor_get(cursor, &key, &val, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) {
        const uint8_t *b = val.mv_data;
        uint64_t seq = 0;
        for (int i = 0; i < 8; i++) seq = (seq << 8) | b[i];
        st->history_bounded = st->history_bounded && seq <= st->folded;
    }
    mdb_cursor_close(cursor);
    if (rc == MDB_NOTFOUND) rc = runs_bounded(txn, st);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return rc == MDB_NOTFOUND ? 0 : 7;
}

/* Child: exits 0 when the history environment's folded_seq is `want` (< 0:
 * any within one threshold of the head) and the layout is sound: trimmed
 * <= folded <= head, touchlog exact after trimmed, history nothing past
 * folded. */
static int child_folded_is(const char *dir, int want) {
    fold_state st;
    int rc = fold_state_read(dir, &st);
    if (rc != 0) return 10 + rc;
    if (want >= 0 ? st.folded != (uint64_t)want : st.head - st.folded >= fold_records) return 4;
    if (st.trimmed > st.folded || st.folded > st.head) return 5;
    if (!st.touchlog_exact) return 6;
    return st.history_bounded ? 0 : 7;
}

/* Child: exits 0 when the touch log is trimmed through exactly `want`. */
static int child_trimmed_is(const char *dir, int want) {
    fold_state st;
    int rc = fold_state_read(dir, &st);
    if (rc != 0) return 10 + rc;
    if (st.trimmed != (uint64_t)want) return 4;
    return st.touchlog_exact ? 0 : 5;
}

/* Wait for the folder thread to fold whatever is due. */
static void settle(berth_journal *j) {
    ck_assert_int_eq(berth_journal_lmdb_settle(j), BERTH_J_OK);
}

/* Appends fold on a thread of their own: after each settled append the
 * history environment holds every record up to the head once the backlog
 * reached the threshold, and the append after a fold trims the touch log
 * up to it. Queries are exact throughout. */
/* One fold with a key of far more seqs than one MDB_MULTIPLE put takes
 * (fold_put_seqs_max, 256), and the same name twice in one record: HISTORY
 * lists every seq once, in order, from the index alone. */
START_TEST(store_history_fold_hot_key) {
    enum { hot_records = 700, hot_batch = 100, hot_fold = hot_records };
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_fold(dir, hot_fold);
    static built b[hot_batch];
    static berth_record recs[hot_batch];
    static berth_touched touched[hot_batch];
    const berth_str hot[2] = { berth_str_make("w-hot", 5), berth_str_make("w-hot", 5) };
    for (uint64_t first = 1; first <= hot_records; first += hot_batch) {
        for (size_t i = 0; i < hot_batch; i++) {
            build(&b[i], first + i);
            recs[i] = b[i].rec;
            touched[i] = (berth_touched){ .instance = berth_str_make("inst-hot", 8),
                                          .worker_count = (first + i) % 2 ? 1 : 2,
                                          .workers = hot };
        }
        ck_assert_int_eq(berth_journal_append(j, recs, touched, hot_batch), BERTH_J_OK);
    }
    settle(j);
    berth_fold_stats st;
    ck_assert_int_eq(berth_journal_fold_stats(j, &st), BERTH_J_OK);
    ck_assert_uint_eq(st.folded_seq, hot_records);   /* all of it from the index */
    ck_assert_uint_eq(st.folds, 1);
    berth_journal_reader *r;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    for (int kind = 0; kind < 2; kind++) {
        berth_str name = kind ? hot[0] : berth_str_make("inst-hot", 8);
        berth_history_kind k = kind ? BERTH_HISTORY_WORKER : BERTH_HISTORY_INSTANCE;
        for (uint64_t from = 0; from <= hot_records + 1; from += 37) {
            size_t got = 0;
            ck_assert_int_eq(berth_journal_history(r, k, name, from, hist_got, hist_seqs_max,
                                                   &got), BERTH_J_OK);
            uint64_t start = from > 0 ? from : 1;
            size_t want = start > hot_records ? 0 : hot_records + 1 - start;
            want = want < hist_seqs_max ? want : hist_seqs_max;
            ck_assert_uint_eq(got, want);
            for (size_t i = 0; i < got; i++) {
                ck_assert_uint_eq(hist_got[i], start + i);
            }
        }
    }
    berth_journal_reader_close(r);
    close_rw(j);
}
END_TEST

START_TEST(store_history_fold) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_fold(dir, fold_records);
    uint64_t head = 0;
    for (int i = 0; i < 7; i++) {   /* 63 records: one short of the threshold */
        ck_assert_int_eq(append_touched(j, head + 1, 9), BERTH_J_OK);
        head += 9;
        settle(j);
    }
    ck_assert_uint_eq(head, fold_records - 1);
    ck_assert(in_child(child_folded_is, dir, 0));
    hist_check_all(j);
    ck_assert_int_eq(append_touched(j, head + 1, 1), BERTH_J_OK);   /* exactly on it */
    head += 1;
    hist_check_all(j);   /* folded or not: exact */
    settle(j);
    ck_assert(in_child(child_folded_is, dir, fold_records));
    ck_assert(in_child(child_trimmed_is, dir, 0));   /* no append since the fold */
    hist_check_all(j);
    ck_assert_int_eq(append_touched(j, head + 1, fold_records - 1), BERTH_J_OK);
    head += fold_records - 1;
    settle(j);
    ck_assert(in_child(child_folded_is, dir, fold_records));   /* 63 unfolded again */
    ck_assert(in_child(child_trimmed_is, dir, fold_records));  /* that append trimmed */
    hist_check_all(j);
    ck_assert_int_eq(append_touched(j, head + 1, fold_records + 1), BERTH_J_OK);
    head += fold_records + 1;   /* a second fold, of a backlog twice the threshold */
    ck_assert_uint_eq(head, 192);
    settle(j);
    ck_assert(in_child(child_folded_is, dir, 192));
    hist_check_all(j);
    /* a tail after it, whose 120-entry trim budget covers the 117 folded
     * entries left (an append deletes at most 64, or twice its records) */
    ck_assert_int_eq(append_touched(j, head + 1, 60), BERTH_J_OK);
    head += 60;
    settle(j);
    ck_assert(in_child(child_folded_is, dir, 192));
    ck_assert(in_child(child_trimmed_is, dir, 192));
    hist_check_all(j);
    close_rw(j);

    j = open_fold(dir, fold_records);   /* the tail survives a reopen, unfolded */
    settle(j);
    ck_assert(in_child(child_folded_is, dir, 192));
    hist_check_all(j);
    ck_assert_uint_eq(chain_check(j), head);
    close_rw(j);
    j = open_fold(dir, 0);   /* the default threshold is far above a 60-record tail */
    settle(j);
    ck_assert(in_child(child_folded_is, dir, 192));
    close_rw(j);
    j = open_fold(dir, 32);   /* a lower threshold: the open folds the tail */
    settle(j);
    ck_assert(in_child(child_folded_is, dir, (int)head));
    hist_check_all(j);
    ck_assert_uint_eq(chain_check(j), head);
    close_rw(j);
}
END_TEST

/* The seq the touch log is trimmed through once its first `entries`
 * entries are gone: just before the next touching record. */
static uint64_t hist_trimmed_after(uint64_t entries) {
    uint64_t seq = hist_next_touching(1);
    for (uint64_t i = 0; i < entries; i++) {
        seq = hist_next_touching(seq + 1);
    }
    return seq - 1;
}

/* The trim after a fold is paced: an append deletes at most 64 folded
 * entries, or twice its own records, so no single commit carries a fold's
 * worth of deletes (1,024 of them took 0.36 ms, on a commit the whole
 * cohort waited for), and it still outpaces the appends. */
START_TEST(store_history_trim_paced) {
    enum { fold = 256, trim_min = 64 };   /* trim_entries_per_append_min in lmdb_store.c */
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_fold(dir, fold);
    ck_assert_int_eq(append_touched(j, 1, fold), BERTH_J_OK);
    settle(j);
    ck_assert(in_child(child_folded_is, dir, fold));
    ck_assert(in_child(child_trimmed_is, dir, 0));
    uint64_t head = fold;
    for (uint64_t k = 1; k <= 2; k++) {   /* one-record appends: trim_min entries each */
        ck_assert_int_eq(append_touched(j, head + 1, 1), BERTH_J_OK);
        head++;
        ck_assert(in_child(child_trimmed_is, dir, (int)hist_trimmed_after(k * trim_min)));
        hist_check_all(j);
    }
    /* 100 records may delete 200 entries: the rest of the folded ones. */
    ck_assert_uint_gt(hist_trimmed_after(2 * trim_min + 200), fold);
    ck_assert_int_eq(append_touched(j, head + 1, 100), BERTH_J_OK);
    head += 100;
    ck_assert(in_child(child_trimmed_is, dir, fold));
    hist_check_all(j);
    settle(j);
    close_rw(j);
}
END_TEST

/* The option's limits: over the maximum nothing is opened or created; at
 * the maximum and at 1 (a fold after every append) it works. */
START_TEST(store_history_fold_option) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal_options o = { .history_fold_records = BERTH_HISTORY_FOLD_RECORDS_MAX + 1 };
    berth_journal *j = NULL;
    char err[err_len_max] = "";
    ck_assert_int_eq(berth_journal_open_lmdb(&j, dir, &o, err, sizeof(err)), BERTH_J_INVALID);
    ck_assert_ptr_null(j);
    ck_assert_str_eq(err, "the history_fold_records option is over its maximum of 1048576 records");
    struct stat st;
    ck_assert_int_eq(stat(dir, &st), -1);   /* nothing created */
    ck_assert_int_eq(errno, ENOENT);

    j = open_fold(dir, BERTH_HISTORY_FOLD_RECORDS_MAX);
    ck_assert_int_eq(append_touched(j, 1, 5), BERTH_J_OK);
    settle(j);
    ck_assert(in_child(child_folded_is, dir, 0));
    close_rw(j);
    j = open_fold(dir, 1);   /* the open folds the 5-record backlog */
    settle(j);
    ck_assert(in_child(child_folded_is, dir, 5));
    for (uint64_t head = 5; head < 12; head++) {
        ck_assert_int_eq(append_touched(j, head + 1, 1), BERTH_J_OK);
        settle(j);
        ck_assert(in_child(child_folded_is, dir, (int)head + 1));
        ck_assert(in_child(child_trimmed_is, dir, (int)head));   /* trimmed by this append */
    }
    hist_check_all(j);
    close_rw(j);
}
END_TEST

/* Child: append touched batches until killed, one byte after each. */
static int child_append_touched_forever(const char *dir, int fd) {
    berth_journal_options o = { .history_fold_records = fold_records };
    berth_journal *j = NULL;
    if (berth_journal_open_lmdb(&j, dir, &o, NULL, 0) != BERTH_J_OK) return 1;
    uint64_t head;
    uint8_t hash[BERTH_HASH_LEN];
    if (berth_journal_head(j, &head, hash) != BERTH_J_OK) return 2;
    while (head + hist_batch <= hist_crash_head_max) {
        if (append_touched(j, head + 1, hist_batch) != BERTH_J_OK) return 3;
        head += hist_batch;
        if (write(fd, "b", 1) != 1) return 4;
    }
    for (;;) pause();
}

/* A writer killed at any point of its folder's work (gathering, writing the
 * history environment, between that commit and the append that trims, or
 * inside the trimming append) leaves history exact and the layout sound;
 * the next open folds any due backlog. Several kills at different points
 * of the same store. */
START_TEST(store_history_crash_at_fold) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    uint64_t head = 0;
    const uint32_t steps[] = { fold_records / hist_batch, 3, 7, 1, 9 };
    for (size_t k = 0; k < sizeof(steps) / sizeof(steps[0]); k++) {
        uint32_t acknowledged = kill_after_steps(dir, child_append_touched_forever, steps[k]);
        ck_assert_uint_ge(acknowledged, steps[k]);
        berth_journal *j = open_fold(dir, fold_records);
        uint64_t now = chain_check(j);
        ck_assert_uint_ge(now, head + (uint64_t)steps[k] * hist_batch);
        ck_assert_uint_eq(now % hist_batch, 0);
        head = now;
        hist_check_all(j);   /* exact before the folder had a chance, too */
        settle(j);
        ck_assert(in_child(child_folded_is, dir, -1));
        hist_check_all(j);
        close_rw(j);
        if (head + 10 * hist_batch > hist_crash_head_max) {
            break;
        }
    }
    ck_assert_uint_ge(head, 3 * fold_records);   /* several folds happened */
}
END_TEST

/* The folder racing queries: appends with a fold every 8 records while
 * another thread checks HISTORY against each reader's own head; every
 * answer is exact whichever side of a fold or trim the reader fell on. */
typedef struct race_arg {
    berth_journal *journal;
    _Atomic bool done;
    _Atomic uint32_t wrong;
    _Atomic uint32_t queries;
} race_arg;

static void *race_reader(void *p) {
    race_arg *a = p;
    uint64_t got[hist_seqs_max];
    uint64_t want[hist_seqs_max];
    while (!atomic_load(&a->done)) {
        berth_journal_reader *r;
        if (berth_journal_reader_open(a->journal, &r) != BERTH_J_OK) {
            atomic_fetch_add(&a->wrong, 1);
            continue;
        }
        uint64_t head;
        uint8_t hash[BERTH_HASH_LEN];
        if (berth_journal_reader_head(r, &head, hash) != BERTH_J_OK) atomic_fetch_add(&a->wrong, 1);
        for (int id = 0; id < hist_workers; id++) {
            for (uint64_t from = 0; from <= head; from += head / 3 + 1) {
                char name[hist_name_len_max];
                int len = snprintf(name, sizeof(name), "w%d", id);
                size_t n = 0;
                berth_jerr err = berth_journal_history(r, BERTH_HISTORY_WORKER,
                                                       berth_str_make(name, (size_t)len), from,
                                                       got, hist_seqs_max, &n);
                size_t m = hist_expect('w', id, from, head, want, hist_seqs_max);
                if (err != BERTH_J_OK || n != m || memcmp(got, want, n * sizeof(got[0])) != 0) {
                    atomic_fetch_add(&a->wrong, 1);
                }
                atomic_fetch_add(&a->queries, 1);
            }
        }
        berth_journal_reader_close(r);
    }
    return NULL;
}

START_TEST(store_history_fold_races_queries) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_fold(dir, 8);
    race_arg a = { .journal = j };
    pthread_t readers[2];
    for (int i = 0; i < 2; i++) ck_assert_int_eq(pthread_create(&readers[i], NULL, race_reader, &a), 0);
    /* Under valgrind, whose one-at-a-time threads let the spinning readers
     * starve the writer (74 s for 480 records), 120: still 15 folds raced. */
    const uint64_t records = test_under_valgrind() ? 120 : 480;
    for (uint64_t head = 0; head < records; head += 3) {
        ck_assert_int_eq(append_touched(j, head + 1, 3), BERTH_J_OK);
    }
    atomic_store(&a.done, true);
    for (int i = 0; i < 2; i++) ck_assert_int_eq(pthread_join(readers[i], NULL), 0);
    uint32_t wrong = atomic_load(&a.wrong);
    uint32_t queries = atomic_load(&a.queries);
    ck_assert_uint_eq(wrong, 0);
    ck_assert_uint_gt(queries, 0);
    settle(j);
    ck_assert(in_child(child_folded_is, dir, -1));
    hist_check_all(j);
    close_rw(j);
}
END_TEST

static void hist_env_remove(const char *dir) {
    char path[300];
    const char *files[] = { "data.mdb", "lock.mdb" };
    for (size_t i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "%s/history/%s", dir, files[i]);
        ck_assert_int_eq(unlink(path), 0);
    }
    snprintf(path, sizeof(path), "%s/history", dir);
    ck_assert_int_eq(rmdir(path), 0);
}

/* Child: rewrite a store whose names are all still in touchlog (no trim
 * yet) into store format 1, as the berth before session 4 left it: the
 * names of records up to `folded` in a history db inside the main
 * environment, the rest in touchlog, folded_seq in meta; folded < 0: the
 * pre-touchlog layout (every name in history, no touchlog, no folded_seq).
 * The caller removes the history environment. */
static int child_make_legacy(const char *dir, int folded) {
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta, touchlog, history, journal;
    if (mdb_env_create(&env) != 0 || mdb_env_set_maxdbs(env, 8) != 0 ||
        mdb_env_open(env, dir, 0, 0600) != 0 || mdb_txn_begin(env, NULL, 0, &txn) != 0 ||
        mdb_dbi_open(txn, "meta", 0, &meta) != 0 ||
        mdb_dbi_open(txn, "journal", MDB_INTEGERKEY, &journal) != 0 ||
        mdb_dbi_open(txn, "touchlog", MDB_INTEGERKEY, &touchlog) != 0 ||
        mdb_dbi_open(txn, "history", MDB_CREATE | MDB_DUPSORT | MDB_DUPFIXED, &history) != 0) {
        return 1;
    }
    uint64_t trimmed = 99;
    if (u64_meta(txn, meta, "trimmed_seq", &trimmed) != 0 || trimmed != 0) return 2;
    MDB_stat js;
    if (mdb_stat(txn, journal, &js) != 0) return 2;
    uint64_t through = folded < 0 ? js.ms_entries : (uint64_t)folded;
    MDB_cursor *cursor;
    if (mdb_cursor_open(txn, touchlog, &cursor) != 0) return 2;
    MDB_val key, val;
    int rc = mdb_cursor_get(cursor, &key, &val, MDB_FIRST);
    while (rc == 0) {
        uint64_t seq;
        memcpy(&seq, key.mv_data, sizeof(seq));
        if (seq > through) break;
        uint8_t seq_be[8];
        for (int i = 0; i < 8; i++) seq_be[i] = (uint8_t)(seq >> (56 - 8 * i));
        const uint8_t *p = val.mv_data;
        for (size_t at = 0; at + 2 <= val.mv_size; at += 2 + p[at + 1]) {
            uint8_t k[1 + BERTH_NAME_LEN_MAX];
            k[0] = p[at];
            memcpy(k + 1, p + at + 2, p[at + 1]);
            MDB_val hk = { 1 + (size_t)p[at + 1], k }, hv = { 8, seq_be };
            if (mdb_put(txn, history, &hk, &hv, 0) != 0) return 3;
        }
        if (mdb_cursor_del(cursor, 0) != 0) return 3;
        rc = mdb_cursor_get(cursor, &key, &val, MDB_FIRST);
    }
    mdb_cursor_close(cursor);
    if (rc != 0 && rc != MDB_NOTFOUND) return 4;
    MDB_val tk = { 11, (void *)"trimmed_seq" };
    MDB_val fk = { 10, (void *)"folded_seq" }, fv = { sizeof(through), &through };
    uint32_t format = 1;
    MDB_val vk = { 6, (void *)"format" }, vv = { sizeof(format), &format };
    if (mdb_del(txn, meta, &tk, NULL) != 0 || mdb_put(txn, meta, &vk, &vv, 0) != 0) return 5;
    if (folded < 0 ? mdb_drop(txn, touchlog, 1) != 0 : mdb_put(txn, meta, &fk, &fv, 0) != 0) {
        return 6;
    }
    if (mdb_txn_commit(txn) != 0) return 7;
    mdb_env_close(env);
    return 0;
}

/* Child: a read-only open answers history exactly. */
static int child_reads_exact(const char *dir, int unused) {
    (void)unused;
    berth_journal_options o = { .read_only = true, .no_lock = true };
    berth_journal *j = NULL;
    if (berth_journal_open_lmdb(&j, dir, &o, NULL, 0) != BERTH_J_OK) return 1;
    hist_check_all(j);   /* a failed check exits the child non-zero */
    berth_journal_close(j);
    return 0;
}

/* Child: exits 0 when the main environment is format `want` (0: 3) with
 * no history db. */
static int child_migrated(const char *dir, int want) {
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta, history;
    if (mdb_env_create(&env) != 0 || mdb_env_set_maxdbs(env, 8) != 0 ||
        mdb_env_open(env, dir, MDB_RDONLY, 0600) != 0 ||
        mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) != 0 ||
        mdb_dbi_open(txn, "meta", 0, &meta) != 0) {
        return 1;
    }
    MDB_val key = { 6, (void *)"format" }, val;
    uint32_t format = 0;
    if (mdb_get(txn, meta, &key, &val) != 0 || val.mv_size != 4) return 2;
    memcpy(&format, val.mv_data, 4);
    if (format != (uint32_t)(want != 0 ? want : 3)) return 3;   /* 1 -> 2 (moved) -> 3 (runs) */
    MDB_val fk = { 10, (void *)"folded_seq" };
    if (mdb_get(txn, meta, &fk, &val) != MDB_NOTFOUND) return 4;
    if (mdb_dbi_open(txn, "history", 0, &history) != MDB_NOTFOUND) return 5;
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return 0;
}

/* Child: a stale history environment, as a migration cut short and then a
 * berth of the old format writing on would leave: a wrong name and a
 * folded_seq past the head. The next migration must not trust it. */
static int child_stale_hist_env(const char *dir, int unused) {
    (void)unused;
    char hdir[300];
    snprintf(hdir, sizeof(hdir), "%s/history", dir);
    if (mkdir(hdir, 0700) != 0) return 1;
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta, history;
    if (mdb_env_create(&env) != 0 || mdb_env_set_maxdbs(env, 2) != 0 ||
        mdb_env_open(env, hdir, 0, 0600) != 0 || mdb_txn_begin(env, NULL, 0, &txn) != 0 ||
        mdb_dbi_open(txn, "meta", MDB_CREATE, &meta) != 0 ||
        mdb_dbi_open(txn, "history", MDB_CREATE | MDB_DUPSORT | MDB_DUPFIXED, &history) != 0) {
        return 2;
    }
    uint64_t folded = 999;
    uint8_t seq_be[8] = { 0, 0, 0, 0, 0, 0, 0, 3 };
    MDB_val fk = { 10, (void *)"folded_seq" }, fv = { 8, &folded };
    MDB_val hk = { 3, (void *)"ww0" }, hv = { 8, seq_be };
    if (mdb_put(txn, meta, &fk, &fv, 0) != 0 || mdb_put(txn, history, &hk, &hv, 0) != 0 ||
        mdb_txn_commit(txn) != 0) {
        return 3;
    }
    mdb_env_close(env);
    return 0;
}

/* A store of the format before session 4 (history inside the main
 * environment), in both of its shapes, and with a stale history
 * environment beside it: a read-only open reads it in place; the first
 * writable open moves history into DIR/history (folded_seq and trimmed_seq
 * = the old folded_seq), drops the old db and flips the format; every
 * answer is exact before, after, across a reopen and as the new store
 * grows and folds. */
START_TEST(store_history_migrate) {
    const int shapes[] = { -1, 13, 13 };   /* pre-touchlog; a folded prefix; + stale env */
    for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
        char dir[256];
        dir_fresh(dir, sizeof(dir));
        berth_journal *j = open_fold(dir, fold_records);
        ck_assert_int_eq(append_touched(j, 1, hist_batch), BERTH_J_OK);
        ck_assert_int_eq(append_touched(j, 1 + hist_batch, hist_batch), BERTH_J_OK);
        settle(j);
        close_rw(j);
        ck_assert(in_child(child_make_legacy, dir, shapes[k]));
        hist_env_remove(dir);
        if (k == 2) ck_assert(in_child(child_stale_hist_env, dir, 0));
        ck_assert(in_child(child_reads_exact, dir, 0));   /* format 1, read in place */
        uint64_t folded = shapes[k] < 0 ? 2 * hist_batch : (uint64_t)shapes[k];
        j = open_fold(dir, fold_records);   /* migrates */
        ck_assert(in_child(child_migrated, dir, 0));
        hist_check_all(j);
        settle(j);
        ck_assert(in_child(child_folded_is, dir, (int)folded));
        ck_assert(in_child(child_trimmed_is, dir, (int)folded));
        ck_assert(in_child(child_reads_exact, dir, 0));   /* format 2, read-only */
        close_rw(j);
        j = open_fold(dir, fold_records);   /* nothing left to migrate */
        settle(j);
        ck_assert(in_child(child_folded_is, dir, (int)folded));
        hist_check_all(j);
        uint64_t head = 2 * hist_batch;
        ck_assert_int_eq(append_touched(j, head + 1, fold_records), BERTH_J_OK);
        head += fold_records;
        settle(j);
        ck_assert(in_child(child_folded_is, dir, (int)head));
        hist_check_all(j);
        /* enough records that the trim's budget (twice them) takes every
         * folded entry at once */
        ck_assert_int_eq(append_touched(j, head + 1, fold_records), BERTH_J_OK);
        ck_assert(in_child(child_trimmed_is, dir, (int)head));
        hist_check_all(j);
        close_rw(j);
        ck_assert(in_child(child_reads_exact, dir, 0));
    }
}
END_TEST

/* Append and fold 5 records at a time from head + 1 up to head + n. */
static void fold_fives(berth_journal *j, uint64_t head, uint64_t n) {
    for (uint64_t at = head; at < head + n; at += 5) {
        ck_assert_int_eq(append_touched(j, at + 1, 5), BERTH_J_OK);
        settle(j);
    }
}

/* Runs and their merges (journal/history_runs.h): a fold every 5 records
 * over 500 writes 100 runs of level 0; every 8 of them merge into one of
 * level 1 (12 merges), the first 8 of those into one of level 2. So 9 runs
 * stay: 1 + 4 + 4. Every query, across every boundary of every level,
 * stays exact; the layout is sound; a reopen counts the same runs. */
START_TEST(store_history_runs_merge) {
    enum { runs_fold = 4, runs_step = 5, runs_head = 500 };   /* fold_fives: 5 a fold */
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_fold(dir, runs_fold);
    fold_fives(j, 0, runs_head);
    berth_fold_stats st;
    ck_assert_int_eq(berth_journal_fold_stats(j, &st), BERTH_J_OK);
    ck_assert_uint_eq(st.folded_seq, runs_head);
    ck_assert_uint_eq(st.folds, runs_head / runs_step);
    ck_assert_uint_eq(st.merges, 12 + 1);
    ck_assert_uint_eq(st.runs, 1 + 4 + 4);
    ck_assert(in_child(child_folded_is, dir, runs_head));
    hist_check_all(j);
    close_rw(j);
    ck_assert(in_child(child_reads_exact, dir, 0));
    j = open_fold(dir, runs_fold);
    ck_assert_int_eq(berth_journal_fold_stats(j, &st), BERTH_J_OK);
    ck_assert_uint_eq(st.runs, 1 + 4 + 4);
    ck_assert_uint_eq(st.merges, 0);
    hist_check_all(j);
    close_rw(j);
}
END_TEST

/* Names that share long stems, in both kinds: the sort and the run
 * writer's same-key test (history_runs.c, item_same_key) must tell apart
 * names that differ only past the 7-byte prefix, at byte 7, in the last of
 * an 8-byte step or only in length, and the same bytes under two kinds. */
static const char *const long_names[] = {
    "abcdefg",  "abcdefgh", "abcdefgi", "abcdefghijklmno", "abcdefghijklmnp",
    "abcdefghijklmnop", "abcdefghijklmnoq", "abcdefghijklmnopq", "abcdefgX",
    "abcdefghijklmnopqrstuvwx", "abcdefghijklmnopqrstuvwy",
    "abcdefghijklmnopqrstuvwxyz0123456789-abcdefghijklmnopqrstuvwxyz0123456789",
    "abcdefghijklmnopqrstuvwxyz0123456789-abcdefghijklmnopqrstuvwxyz0123456780",
};
enum { long_name_count = sizeof long_names / sizeof long_names[0], long_head = 400 };

static size_t long_instance_of(uint64_t seq) { return (size_t)(seq * 7 % long_name_count); }
static size_t long_worker_of(uint64_t seq) { return (size_t)(seq * 5 % long_name_count); }

START_TEST(store_history_long_names) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_fold(dir, 4);
    for (uint64_t at = 0; at < long_head; at += 5) {   /* a fold every 5: runs and merges */
        built b[5];
        berth_record recs[5];
        berth_touched touched[5];
        berth_str workers[5];
        for (size_t i = 0; i < 5; i++) {
            uint64_t seq = at + 1 + i;
            build(&b[i], seq);
            recs[i] = b[i].rec;
            const char *in = long_names[long_instance_of(seq)];
            const char *w = long_names[long_worker_of(seq)];
            workers[i] = berth_str_make(w, strlen(w));
            touched[i] = (berth_touched){ .instance = berth_str_make(in, strlen(in)),
                                          .workers = &workers[i], .worker_count = 1 };
        }
        ck_assert_int_eq(berth_journal_append(j, recs, touched, 5), BERTH_J_OK);
        settle(j);
    }
    berth_fold_stats st;
    ck_assert_int_eq(berth_journal_fold_stats(j, &st), BERTH_J_OK);
    ck_assert_uint_eq(st.folded_seq, long_head);
    ck_assert_uint_gt(st.merges, 0);
    berth_journal_reader *r;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    for (size_t k = 0; k < long_name_count; k++) {
        for (int kind = 0; kind < 2; kind++) {
            size_t want = 0;
            for (uint64_t seq = 1; seq <= long_head; seq++) {
                size_t of = kind == 0 ? long_instance_of(seq) : long_worker_of(seq);
                if (of == k) hist_want[want++] = seq;
            }
            size_t got = 0;
            berth_str name = berth_str_make(long_names[k], strlen(long_names[k]));
            ck_assert_int_eq(berth_journal_history(r, kind == 0 ? BERTH_HISTORY_INSTANCE
                                                                : BERTH_HISTORY_WORKER,
                                                   name, 0, hist_got, hist_seqs_max, &got),
                             BERTH_J_OK);
            ck_assert_msg(got == want, "%s (%s): %zu seqs, want %zu", long_names[k],
                          kind == 0 ? "instance" : "worker", got, want);
            for (size_t i = 0; i < want; i++) ck_assert_uint_eq(hist_got[i], hist_want[i]);
        }
    }
    berth_journal_reader_close(r);
    close_rw(j);
}
END_TEST

static int merge_hook_rc;         /* what the merge hook returns */
static int merge_hook_calls;
static int merge_hook_fail(void) {
    merge_hook_calls++;
    return merge_hook_rc;
}
static int merge_hook_die(void) {
    _exit(42);   /* killed after the merge's writes, before its commit */
}

static void runs_are(berth_journal *j, uint64_t runs, uint64_t merges) {
    berth_fold_stats st;
    ck_assert_int_eq(berth_journal_fold_stats(j, &st), BERTH_J_OK);
    ck_assert_uint_eq(st.runs, runs);
    ck_assert_uint_eq(st.merges, merges);
}

/* A merge that fails never stops the folds nor loses a name: for want of
 * room (ENOSPC) it is tried again after the next fold; for an I/O error
 * there are no more merges in this process, and the next open merges
 * again. Every query stays exact throughout. */
START_TEST(store_history_merge_fails) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_fold(dir, 4);
    merge_hook_rc = ENOSPC;
    merge_hook_calls = 0;
    berth_journal_lmdb_merge_hook_set(merge_hook_fail);
    fold_fives(j, 0, 40);   /* 8 runs: the merge fails for room */
    ck_assert_int_eq(merge_hook_calls, 1);
    runs_are(j, 8, 0);
    hist_check_all(j);
    merge_hook_rc = 0;
    fold_fives(j, 40, 5);   /* tried again: the newest 8 of the 9 merge */
    ck_assert_int_eq(merge_hook_calls, 2);
    runs_are(j, 2, 1);
    hist_check_all(j);
    merge_hook_rc = EIO;
    fold_fives(j, 45, 40);  /* fails for I/O: no more merges, folds go on */
    ck_assert_int_eq(merge_hook_calls, 3);
    fold_fives(j, 85, 40);
    ck_assert_int_eq(merge_hook_calls, 3);
    runs_are(j, 2 + 16, 1);
    berth_fold_stats st;
    ck_assert_int_eq(berth_journal_fold_stats(j, &st), BERTH_J_OK);
    ck_assert_uint_eq(st.folded_seq, 125);
    ck_assert(in_child(child_folded_is, dir, 125));
    hist_check_all(j);
    close_rw(j);
    merge_hook_rc = 0;
    j = open_fold(dir, 4);
    /* A new process merges again: the newest 8 of the 17 runs of level 0
     * after the one of level 1, then the 8 older of them before it (not
     * the newest any more, but 8 in a row). */
    fold_fives(j, 125, 5);
    ck_assert_int_eq(merge_hook_calls, 5);
    runs_are(j, 1 + 1 + 1 + 2, 2);
    ck_assert(in_child(child_folded_is, dir, 130));
    hist_check_all(j);
    close_rw(j);
    berth_journal_lmdb_merge_hook_set(NULL);
}
END_TEST

/* Child: fold 40 records 5 at a time; the merge the 8th run makes due
 * ends the process before its commit. */
static int child_dies_merging(const char *dir, int unused) {
    (void)unused;
    berth_journal *j = open_fold(dir, 4);
    berth_journal_lmdb_merge_hook_set(merge_hook_die);
    for (uint64_t head = 0; head < 40; head += 5) {
        if (append_touched(j, head + 1, 5) != BERTH_J_OK) return 1;
        if (berth_journal_lmdb_settle(j) != BERTH_J_OK) return 2;
    }
    return 3;   /* the merge never ran */
}

/* A process killed in a merge, between its writes and its commit, leaves
 * the runs as they were: the next open reads them exactly, and the next
 * fold merges. */
START_TEST(store_history_killed_merging) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    pid_t pid = child_spawn(child_dies_merging, dir, 0, -1);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 42);
    ck_assert(in_child(child_folded_is, dir, 40));
    berth_journal *j = open_fold(dir, 4);
    runs_are(j, 8, 0);
    hist_check_all(j);
    fold_fives(j, 40, 5);
    runs_are(j, 2, 1);
    ck_assert(in_child(child_folded_is, dir, 45));
    hist_check_all(j);
    close_rw(j);
}
END_TEST

static MDB_env *hist_env_raw(const char *dir, unsigned int flags) {
    char hdir[300];
    snprintf(hdir, sizeof(hdir), "%s/history", dir);
    MDB_env *env;
    if (mdb_env_create(&env) != 0) return NULL;
    if (mdb_env_set_maxdbs(env, 8) != 0 || mdb_env_open(env, hdir, flags, 0600) != 0) {
        mdb_env_close(env);
        return NULL;
    }
    return env;
}

/* Child: turn a history index's runs back into the layout before them (a
 * key per name, its seqs as big-endian duplicates; no layout, legacy_end
 * or next_run_id), as a berth before session 9 left it. */
static int child_runs_to_legacy(const char *dir, int unused) {
    (void)unused;
    MDB_env *env = hist_env_raw(dir, 0);
    MDB_txn *txn;
    MDB_dbi meta, history, runs[hist_run_levels], runlist;
    if (env == NULL || mdb_txn_begin(env, NULL, 0, &txn) != 0 ||
        mdb_dbi_open(txn, "meta", 0, &meta) != 0 ||
        mdb_dbi_open(txn, "history", MDB_DUPSORT | MDB_DUPFIXED, &history) != 0 ||
        mdb_dbi_open(txn, "runlist", 0, &runlist) != 0) {
        return 1;
    }
    MDB_cursor *cursor;
    MDB_val key, val;
    int rc = MDB_NOTFOUND;
    for (uint32_t l = 0; l < hist_run_levels && rc == MDB_NOTFOUND; l++) {
        if (mdb_dbi_open(txn, hist_runs_db_names[l], 0, &runs[l]) != 0) return 1;
        if (mdb_cursor_open(txn, runs[l], &cursor) != 0) return 2;
        for (rc = mdb_cursor_get(cursor, &key, &val, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) {
            MDB_val hk = { key.mv_size - 8, (uint8_t *)key.mv_data + 8 };
            for (size_t i = 0; i < val.mv_size / 8; i++) {
                uint64_t seq;
                memcpy(&seq, (const uint8_t *)val.mv_data + 8 * i, 8);
                uint8_t be[8];
                for (int b = 0; b < 8; b++) be[b] = (uint8_t)(seq >> (56 - 8 * b));
                MDB_val hv = { 8, be };
                if (mdb_put(txn, history, &hk, &hv, 0) != 0) return 3;
            }
        }
        mdb_cursor_close(cursor);
    }
    if (rc != MDB_NOTFOUND) return 4;
    const char *keys[] = { "layout", "legacy_end", "next_run_id" };
    for (size_t k = 0; k < 3; k++) {
        MDB_val mk = { strlen(keys[k]), (void *)keys[k] };
        if (mdb_del(txn, meta, &mk, NULL) != 0) return 5;
    }
    for (uint32_t l = 0; l < hist_run_levels; l++) {
        if (mdb_drop(txn, runs[l], 1) != 0) return 6;
    }
    if (mdb_drop(txn, runlist, 1) != 0) return 6;
    if (mdb_txn_commit(txn) != 0) return 7;
    mdb_env_close(env);
    return 0;
}

/* Child: set the journal's store format (its meta "format") to `format`. */
static int child_set_format(const char *dir, int format) {
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta;
    if (mdb_env_create(&env) != 0 || mdb_env_set_maxdbs(env, 8) != 0 ||
        mdb_env_open(env, dir, 0, 0600) != 0 || mdb_txn_begin(env, NULL, 0, &txn) != 0 ||
        mdb_dbi_open(txn, "meta", 0, &meta) != 0) {
        return 1;
    }
    uint32_t f = (uint32_t)format;
    MDB_val key = { 6, (void *)"format" }, val = { sizeof(f), &f };
    if (mdb_put(txn, meta, &key, &val, 0) != 0 || mdb_txn_commit(txn) != 0) return 2;
    mdb_env_close(env);
    return 0;
}

/* A fresh store (into dir) of 60 records folded 5 at a time, whose index
 * is then turned back into the layout before runs (child_runs_to_legacy). */
static void store_made_before_runs(char *dir, size_t size) {
    dir_fresh(dir, size);
    berth_journal *j = open_fold(dir, 4);
    fold_fives(j, 0, 60);
    close_rw(j);
    ck_assert(in_child(child_runs_to_legacy, dir, 0));
}

/* A store of format 2 (before session 9: its index a key per name) is read
 * in place; the first writable open makes it format 3 (so that a berth of
 * an earlier session refuses it rather than read the runs as missing names)
 * before any run is written, and then folds as runs. */
START_TEST(store_history_format2_upgrade) {
    char dir[256];
    store_made_before_runs(dir, sizeof(dir));
    ck_assert(in_child(child_set_format, dir, 2));
    ck_assert(in_child(child_migrated, dir, 2));
    ck_assert(in_child(child_reads_exact, dir, 0));
    berth_journal *j = open_fold(dir, 4);
    ck_assert(in_child(child_migrated, dir, 3));
    hist_check_all(j);
    fold_fives(j, 60, 100);
    berth_fold_stats st;
    ck_assert_int_eq(berth_journal_fold_stats(j, &st), BERTH_J_OK);
    ck_assert_uint_eq(st.folded_seq, 160);
    ck_assert_uint_eq(st.merges, 2);   /* the 20 runs after seq 60: 8 + 8 merged, 4 left */
    ck_assert_uint_eq(st.runs, 2 + 4);
    ck_assert(in_child(child_folded_is, dir, 160));
    hist_check_all(j);
    close_rw(j);
    ck_assert(in_child(child_reads_exact, dir, 0));
}
END_TEST

/* Child: a writer appends records 61..100 and folds them (as runs). */
static int child_fold_more(const char *dir, int unused) {
    (void)unused;
    berth_journal *j = open_fold(dir, 4);
    for (uint64_t head = 60; head < 100; head += 5) {
        if (append_touched(j, head + 1, 5) != BERTH_J_OK) return 1;
        if (berth_journal_lmdb_settle(j) != BERTH_J_OK) return 2;
    }
    berth_journal_close(j);
    return 0;
}

/* An index made before runs (its names as duplicates per name) is read in
 * place, read-only; a writer's first open keeps it as records 1..folded and
 * folds the rest into runs, which then merge, and queries read both. A
 * read-only open made before that upgrade says to reopen (IO) rather than
 * answer short. */
START_TEST(store_history_runs_after_legacy) {
    char dir[256];
    store_made_before_runs(dir, sizeof(dir));
    ck_assert(in_child(child_reads_exact, dir, 0));   /* the old layout, read in place */
    ck_assert(in_child(child_folded_is, dir, 60));

    berth_journal_options ro = { .read_only = true, .no_lock = true };
    berth_journal *old_reader = NULL;
    ck_assert_int_eq(berth_journal_open_lmdb(&old_reader, dir, &ro, NULL, 0), BERTH_J_OK);
    ck_assert(in_child(child_fold_more, dir, 0));   /* upgrades, folds 61..100 as runs */
    berth_journal_reader *r;
    ck_assert_int_eq(berth_journal_reader_open(old_reader, &r), BERTH_J_OK);
    size_t got = 0;
    ck_assert_int_eq(berth_journal_history(r, BERTH_HISTORY_WORKER, berth_str_make("w1", 2), 0,
                                           hist_got, hist_seqs_max, &got), BERTH_J_IO);
    berth_journal_reader_close(r);
    berth_journal_close(old_reader);

    berth_journal *j = open_fold(dir, 4);
    hist_check_all(j);
    fold_fives(j, 100, 300);   /* runs of level 1 and 2 */
    berth_fold_stats st;
    ck_assert_int_eq(berth_journal_fold_stats(j, &st), BERTH_J_OK);
    ck_assert_uint_eq(st.folded_seq, 400);
    ck_assert_uint_gt(st.merges, 0);
    ck_assert(in_child(child_folded_is, dir, 400));
    hist_check_all(j);
    close_rw(j);
    ck_assert(in_child(child_reads_exact, dir, 0));
}
END_TEST

/* Child: cut one runs value to 7 bytes (w1's, in the first run of level `level`). */
static int child_cut_run_value(const char *dir, int level) {
    MDB_env *env = hist_env_raw(dir, 0);
    MDB_txn *txn;
    MDB_dbi runs;
    if (env == NULL || mdb_txn_begin(env, NULL, 0, &txn) != 0 ||
        mdb_dbi_open(txn, hist_runs_db_names[level], 0, &runs) != 0) {
        return 1;
    }
    MDB_cursor *cursor;
    MDB_val key, val;
    if (mdb_cursor_open(txn, runs, &cursor) != 0) return 2;
    int rc;
    for (rc = mdb_cursor_get(cursor, &key, &val, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cursor, &key, &val, MDB_NEXT)) {
        if (key.mv_size == 11 && memcmp((const uint8_t *)key.mv_data + 8, "ww1", 3) == 0) break;
    }
    if (rc != 0) return 3;
    uint8_t seven[7] = { 0 };
    MDB_val cut = { sizeof(seven), seven };
    if (mdb_cursor_put(cursor, &key, &cut, MDB_CURRENT) != 0) return 4;
    mdb_cursor_close(cursor);
    if (mdb_txn_commit(txn) != 0) return 5;
    mdb_env_close(env);
    return 0;
}

/* A damaged run is CORRUPT for the name it holds, never a crash or a short
 * answer; other names still answer. */
START_TEST(store_history_run_damaged) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_fold(dir, 4);
    fold_fives(j, 0, 40);
    close_rw(j);
    ck_assert(in_child(child_cut_run_value, dir, 1));   /* 8 folds: one run of level 1 */
    berth_journal_options ro = { .read_only = true, .no_lock = true };
    ck_assert_int_eq(berth_journal_open_lmdb(&j, dir, &ro, NULL, 0), BERTH_J_OK);
    berth_journal_reader *r;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    size_t got = 99;
    ck_assert_int_eq(berth_journal_history(r, BERTH_HISTORY_WORKER, berth_str_make("w1", 2), 0,
                                           hist_got, hist_seqs_max, &got), BERTH_J_CORRUPT);
    ck_assert_uint_eq(got, 0);
    ck_assert_int_eq(berth_journal_history(r, BERTH_HISTORY_WORKER, berth_str_make("w2", 2), 0,
                                           hist_got, hist_seqs_max, &got), BERTH_J_OK);
    ck_assert_uint_eq(got, hist_expect('w', 2, 0, 40, hist_want, hist_seqs_max));
    berth_journal_reader_close(r);
    berth_journal_close(j);
}
END_TEST

/* A history environment that is missing while the touch log was trimmed
 * cannot be rebuilt: writable and read-only opens refuse, naming it. One
 * missing before any trim is simply created again (touchlog holds all). */
START_TEST(store_history_env_missing) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_fold(dir, fold_records);
    ck_assert_int_eq(append_touched(j, 1, hist_batch), BERTH_J_OK);
    close_rw(j);
    hist_env_remove(dir);
    ck_assert(in_child(child_reads_exact, dir, 0));   /* untrimmed: touchlog holds all */
    j = open_fold(dir, fold_records);
    hist_check_all(j);
    ck_assert_int_eq(append_touched(j, 1 + hist_batch, fold_records), BERTH_J_OK);
    settle(j);
    ck_assert_int_eq(append_touched(j, 1 + hist_batch + fold_records, fold_records), BERTH_J_OK);
    ck_assert(in_child(child_trimmed_is, dir, hist_batch + fold_records));   /* all at once */
    close_rw(j);
    hist_env_remove(dir);
    char err[err_len_max] = "";
    berth_journal_options o = { .history_fold_records = fold_records };
    ck_assert_int_eq(berth_journal_open_lmdb(&j, dir, &o, err, sizeof(err)), BERTH_J_CORRUPT);
    ck_assert_ptr_null(j);
    ck_assert_msg(strstr(err, "/history is missing and the touch log was trimmed through seq 74")
                  != NULL, "%s", err);
    char hint[err_len_max];
    snprintf(hint, sizeof(hint), "rebuild it from the journal with `berth history rebuild --data %s`",
             dir);
    ck_assert_msg(strstr(err, hint) != NULL, "%s", err);
    berth_journal_options ro = { .read_only = true, .no_lock = true };
    ck_assert_int_eq(berth_journal_open_lmdb(&j, dir, &ro, err, sizeof(err)), BERTH_J_CORRUPT);
    ck_assert_ptr_null(j);
    ck_assert_msg(strstr(err, "/history is missing") != NULL && strstr(err, hint) != NULL, "%s", err);
}
END_TEST

static uint64_t file_bytes(const char *dir, const char *name) {
    char path[300];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

/* The size on disk counts the history index's file too (it used to count
 * data.mdb alone), and gives it apart, on writable and read-only opens. */
START_TEST(store_size_counts_history) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_fold(dir, fold_records);
    ck_assert_int_eq(append_touched(j, 1, 4 * fold_records), BERTH_J_OK);
    settle(j);
    berth_journal_options ro = { .read_only = true, .no_lock = true };
    berth_journal *r = NULL;
    ck_assert_int_eq(berth_journal_open_lmdb(&r, dir, &ro, NULL, 0), BERTH_J_OK);
    berth_journal *opens[] = { j, r };
    for (size_t i = 0; i < 2; i++) {
        berth_journal_sizes sizes;
        ck_assert_int_eq(berth_journal_size(opens[i], &sizes), BERTH_J_OK);
        uint64_t history = file_bytes(dir, "history/data.mdb");
        ck_assert_uint_gt(history, 0);
        ck_assert_uint_eq(sizes.history_disk_bytes, history);
        ck_assert_uint_eq(sizes.disk_bytes, file_bytes(dir, "data.mdb") + history);
        ck_assert_uint_ge(sizes.map_bytes, file_bytes(dir, "data.mdb"));
        ck_assert_uint_ge(sizes.history_map_bytes, history);
    }
    berth_journal_close(r);
    close_rw(j);
}
END_TEST

/* A cut history file is refused by name (not a SIGBUS at the first query),
 * and one emptied, which LMDB would take for a new environment, does not
 * fit a trimmed touch log. */
START_TEST(store_history_env_damaged) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_fold(dir, fold_records);
    ck_assert_int_eq(append_touched(j, 1, 3 * fold_records), BERTH_J_OK);
    settle(j);
    ck_assert_int_eq(append_touched(j, 1 + 3 * fold_records, 3 * fold_records / 2), BERTH_J_OK);
    ck_assert(in_child(child_trimmed_is, dir, 3 * fold_records));   /* all at once */
    close_rw(j);
    char file[300];
    snprintf(file, sizeof(file), "%s/history/data.mdb", dir);
    struct stat st;
    ck_assert_int_eq(stat(file, &st), 0);
    ck_assert_int_eq(truncate(file, st.st_size / 2), 0);
    char err[err_len_max] = "";
    berth_journal_options o = { .history_fold_records = fold_records };
    ck_assert_int_eq(berth_journal_open_lmdb(&j, dir, &o, err, sizeof(err)), BERTH_J_CORRUPT);
    char hint[err_len_max];
    snprintf(hint, sizeof(hint), "rebuild it from the journal with `berth history rebuild --data %s`",
             dir);
    ck_assert_msg(strstr(err, "/history/data.mdb is truncated") != NULL && strstr(err, hint) != NULL,
                  "%s", err);
    berth_journal_options ro = { .read_only = true, .no_lock = true };
    ck_assert_int_eq(berth_journal_open_lmdb(&j, dir, &ro, err, sizeof(err)), BERTH_J_CORRUPT);
    ck_assert_msg(strstr(err, "/history/data.mdb is truncated") != NULL && strstr(err, hint) != NULL,
                  "%s", err);
    ck_assert_int_eq(truncate(file, 0), 0);
    /* read-only, an empty file is no index (it used to be an IO error that
     * named nothing); a writable open would have set it up as a new one */
    ck_assert_int_eq(berth_journal_open_lmdb(&j, dir, &ro, err, sizeof(err)), BERTH_J_CORRUPT);
    ck_assert_msg(strstr(err, "is missing (or empty)") != NULL && strstr(err, hint) != NULL, "%s", err);
    ck_assert_int_eq(berth_journal_open_lmdb(&j, dir, &o, err, sizeof(err)), BERTH_J_CORRUPT);
    ck_assert_msg(strstr(err, "does not fit the journal") != NULL && strstr(err, hint) != NULL,
                  "%s", err);
}
END_TEST

/* A history index copied in from another journal whose seqs it fits
 * (same head, same folds) is refused by the hash of record 1 it was built
 * from, writable and read-only, so HISTORY never answers from another
 * journal's records; its own journal opens it as before. */
START_TEST(store_history_other_journal) {
    char a[256], b[256];
    dir_fresh(a, sizeof(a));
    dir_fresh(b, sizeof(b));
    berth_journal *j = open_fold(a, fold_records);
    ck_assert_int_eq(append_touched(j, 1, 3 * fold_records), BERTH_J_OK);
    settle(j);
    close_rw(j);
    j = open_fold(b, fold_records);
    built first;
    build(&first, 1);
    first.rec.time_ms += 1;   /* another journal: the same commands at another time */
    ck_assert_int_eq(berth_journal_append(j, &first.rec, NULL, 1), BERTH_J_OK);
    ck_assert_int_eq(append_touched(j, 2, 3 * fold_records - 1), BERTH_J_OK);
    settle(j);
    close_rw(j);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s/history' && cp -a '%s/history' '%s/history'", b, a, b);
    ck_assert_int_eq(system(cmd), 0);
    char err[err_len_max] = "";
    char hint[err_len_max];
    snprintf(hint, sizeof(hint), "rebuild it from the journal with `berth history rebuild --data %s`", b);
    berth_journal_options o = { .history_fold_records = fold_records };
    ck_assert_int_eq(berth_journal_open_lmdb(&j, b, &o, err, sizeof(err)), BERTH_J_CORRUPT);
    ck_assert_msg(strstr(err, "belongs to another journal") != NULL && strstr(err, hint) != NULL, "%s", err);
    berth_journal_options ro = { .read_only = true, .no_lock = true };
    ck_assert_int_eq(berth_journal_open_lmdb(&j, b, &ro, err, sizeof(err)), BERTH_J_CORRUPT);
    ck_assert_msg(strstr(err, "belongs to another journal") != NULL && strstr(err, hint) != NULL, "%s", err);
    ck_assert_int_eq(berth_journal_open_lmdb(&j, a, &ro, err, sizeof(err)), BERTH_J_OK);
    berth_journal_close(j);
    j = open_fold(a, fold_records);
    close_rw(j);
}
END_TEST

/* ---- damaged LMDB meta pages ------------------------------------------- */

/* Bytes of one LMDB 0.9 meta page (64-bit: a 16-byte page header, then
 * MDB_meta), the fields store_meta_damaged damages. */
enum {
    meta_flags_at = 10,         /* the page header's mp_flags (P_META 0x08) */
    meta_magic_at = 16,
    meta_version_at = 20,
    meta_psize_at = 40,         /* mm_dbs[FREE_DBI].md_pad */
    meta_main_root_at = 128,    /* mm_dbs[MAIN_DBI].md_root */
    meta_last_pg_at = 136,
    meta_txnid_at = 144
};

typedef struct meta_damage {
    int page;                   /* 0, 1, or -1: the newer (the one LMDB opens) */
    size_t at;
    uint8_t xor;
    const char *says;
} meta_damage;

static const meta_damage meta_damages[] = {
    { 1, meta_psize_at + 2, 0x5a, "meta page 1 says page size" },   /* hV3's SIGBUS */
    { 0, meta_psize_at + 1, 0x5a, "meta page 0 says page size" },
    { 1, meta_psize_at + 1, 0x30, "meta page 1 says page size 8192 where meta page 0 says 4096" },
    { 1, meta_magic_at, 0x5a, "meta page 1 has no LMDB magic" },
    { 0, meta_flags_at, 0x08, "is not an LMDB file (meta page 0 has no meta page mark)" },
    { 0, meta_version_at, 0x5a, "says data version" },
    { -1, meta_last_pg_at + 1, 0x5a, "is truncated: it has" },
    { -1, meta_last_pg_at + 7, 0x5a, "says its last page is" },
    { -1, meta_main_root_at + 2, 0x5a, "as the root of its main tree" },
};

static char meta_file[300];

/* Child: both opens, read-only and writable, of the copy in dir. which < 0:
 * both must succeed; else both must refuse it by name as meta_damages[which]
 * says (a fault in LMDB kills the child: a failure here, not of the runner). */
static int child_opens(const char *dir, int which) {
    const meta_damage *d = which < 0 ? NULL : &meta_damages[which];
    berth_journal_options ro = { .read_only = true, .no_lock = true };
    berth_journal_options rw = { 0 };
    const berth_journal_options *opts[] = { &ro, &rw };
    for (int i = 0; i < 2; i++) {
        berth_journal *j = NULL;
        char err[err_len_max] = "";
        berth_jerr rc = berth_journal_open_lmdb(&j, dir, opts[i], err, sizeof(err));
        bool as_expected = d == NULL ? rc == BERTH_J_OK
                                     : rc == BERTH_J_CORRUPT && strstr(err, meta_file) != NULL &&
                                           strstr(err, d->says) != NULL &&
                                           (strstr(meta_file, "/history/") != NULL ||
                                            strstr(err, "restore the data directory from a backup") != NULL);
        if (!as_expected) {
            fprintf(stderr, "case %d open %d: %s: %s\n", which, i, berth_jerr_name(rc), err);
            return 1 + i;
        }
        if (rc == BERTH_J_OK) berth_journal_close(j);
    }
    return 0;
}

static void file_put(const char *file, const uint8_t *bytes, size_t len) {
    FILE *f = fopen(file, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(bytes, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

static uint8_t *file_get(const char *file, size_t *len) {
    struct stat st;
    ck_assert_int_eq(stat(file, &st), 0);
    uint8_t *bytes = malloc((size_t)st.st_size);
    ck_assert_ptr_nonnull(bytes);
    FILE *f = fopen(file, "rb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fread(bytes, 1, (size_t)st.st_size, f), (size_t)st.st_size);
    ck_assert_int_eq(fclose(f), 0);
    *len = (size_t)st.st_size;
    return bytes;
}

/* One flipped byte of a meta page (hV3's review: the page size of the
 * newer one) made every open die of SIGBUS inside mdb_env_open. Each
 * damage is refused by name, before LMDB maps the file; the same file,
 * healthy, fresh and grown, opens. */
START_TEST(store_meta_damaged) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_rw(dir, 256 << 10, 0);   /* small: the map grows */
    ck_assert_int_eq(append_n(j, 1, 3000), BERTH_J_OK);
    close_rw(j);
    ck_assert(in_child(child_opens, dir, -1));
    snprintf(meta_file, sizeof(meta_file), "%s/data.mdb", dir);
    size_t len = 0;
    uint8_t *good = file_get(meta_file, &len);
    ck_assert_uint_ge(len, 4 * 4096);
    ck_assert_uint_eq(sizeof(size_t), 8);   /* the offsets above are 64-bit LMDB's */
    uint32_t psize;
    memcpy(&psize, good + meta_psize_at, sizeof(psize));
    ck_assert_uint_eq(psize, 4096);
    uint64_t txnid[2];
    memcpy(&txnid[0], good + meta_txnid_at, sizeof(txnid[0]));
    memcpy(&txnid[1], good + psize + meta_txnid_at, sizeof(txnid[1]));
    int newer = txnid[1] > txnid[0] ? 1 : 0;
    uint8_t *bad = malloc(len);
    ck_assert_ptr_nonnull(bad);
    for (size_t i = 0; i < sizeof(meta_damages) / sizeof(meta_damages[0]); i++) {
        const meta_damage *d = &meta_damages[i];
        memcpy(bad, good, len);
        bad[(size_t)(d->page < 0 ? newer : d->page) * psize + d->at] ^= d->xor;
        file_put(meta_file, bad, len);
        ck_assert_msg(in_child(child_opens, dir, (int)i), "case %zu (%s)", i, d->says);
    }
    file_put(meta_file, good, len);
    ck_assert(in_child(child_opens, dir, -1));

    /* The history index's file, opened the same way. */
    char hfile[300];
    snprintf(hfile, sizeof(hfile), "%s/history/data.mdb", dir);
    size_t hlen = 0;
    uint8_t *hgood = file_get(hfile, &hlen);
    memcpy(bad, hgood, hlen < len ? hlen : len);
    bad[psize + meta_psize_at + 2] ^= 0x5a;
    file_put(hfile, bad, hlen);
    char err[err_len_max] = "";
    berth_journal_options o = { 0 };
    ck_assert_int_eq(berth_journal_open_lmdb(&j, dir, &o, err, sizeof(err)), BERTH_J_CORRUPT);
    ck_assert_msg(strstr(err, hfile) != NULL && strstr(err, "meta page 1 says page size") != NULL &&
                  strstr(err, "berth history rebuild") != NULL, "%s", err);
    file_put(hfile, hgood, hlen);
    ck_assert(in_child(child_opens, dir, -1));
    free(hgood);
    free(bad);
    free(good);
}
END_TEST

/* ---- one sync per commit (defer_meta_sync) ---------------------------- */

static uint64_t durable_of(berth_journal *j) {
    uint64_t seq = 99;
    ck_assert_int_eq(berth_journal_durable(j, &seq), BERTH_J_OK);
    ck_assert_uint_le(seq, head_of(j, NULL));
    return seq;
}

static berth_journal *open_deferred(const char *dir, uint32_t fold) {
    berth_journal_options o = { .defer_meta_sync = true, .history_fold_records = fold };
    return open_writer(dir, &o);
}

/* The durable seq trails by exactly the last commit, whose meta page only
 * the next commit's data sync or berth_journal_sync makes durable; it never
 * claims a commit no sync has covered. */
START_TEST(store_deferred_durable_seq) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_deferred(dir, 0);
    ck_assert_uint_eq(durable_of(j), 0);
    ck_assert_int_eq(berth_journal_sync(j), BERTH_J_OK);   /* nothing to cover: still fine */
    ck_assert_uint_eq(durable_of(j), 0);
    ck_assert_int_eq(append_n(j, 1, 5), BERTH_J_OK);
    ck_assert_uint_eq(head_of(j, NULL), 5);
    ck_assert_uint_eq(durable_of(j), 0);                   /* committed, not yet durable */
    ck_assert_int_eq(append_n(j, 6, 3), BERTH_J_OK);
    ck_assert_uint_eq(durable_of(j), 5);                   /* this commit's sync covered 1..5 */
    for (uint64_t first = 9; first < 9 + 10 * 4; first += 4) {
        ck_assert_int_eq(append_n(j, first, 4), BERTH_J_OK);
        ck_assert_uint_eq(durable_of(j), first - 1);
    }
    ck_assert_uint_eq(head_of(j, NULL), 48);
    ck_assert_int_eq(berth_journal_sync(j), BERTH_J_OK);
    ck_assert_uint_eq(durable_of(j), 48);
    ck_assert_int_eq(berth_journal_sync(j), BERTH_J_OK);   /* idempotent */
    ck_assert_uint_eq(durable_of(j), 48);
    /* A snapshot is a commit too: its sync covers the batch before it. */
    ck_assert_int_eq(append_n(j, 49, 2), BERTH_J_OK);
    ck_assert_uint_eq(durable_of(j), 48);
    ck_assert_int_eq(berth_journal_snapshot_put(j, 50, "state", 5), BERTH_J_OK);
    ck_assert_uint_eq(durable_of(j), 50);
    /* A failed append commits nothing and moves nothing. */
    ck_assert_int_eq(append_n(j, 60, 1), BERTH_J_INVALID);
    ck_assert_uint_eq(durable_of(j), 50);
    ck_assert_uint_eq(chain_check(j), 50);
    close_rw(j);

    /* Reopen, deferred or not: everything appended is there and durable
     * (a clean close syncs, and every writable open syncs once). */
    j = open_deferred(dir, 0);
    ck_assert_uint_eq(head_of(j, NULL), 50);
    ck_assert_uint_eq(durable_of(j), 50);
    ck_assert_int_eq(append_n(j, 51, 1), BERTH_J_OK);
    ck_assert_uint_eq(durable_of(j), 50);
    close_rw(j);
    j = open_rw(dir, 0, 0);
    ck_assert_uint_eq(chain_check(j), 51);
    ck_assert_uint_eq(durable_of(j), 51);
    close_rw(j);
}
END_TEST

/* Deferred, the folder folds only durable records: a name of a record an
 * OS crash could still undo never reaches the history environment, which
 * syncs every commit. berth_journal_maintain has nothing to do. */
START_TEST(store_deferred_fold_durable) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_deferred(dir, fold_records);
    ck_assert_int_eq(berth_journal_maintain(j), BERTH_J_OK);
    ck_assert_int_eq(append_touched(j, 1, fold_records), BERTH_J_OK);
    ck_assert_uint_eq(durable_of(j), 0);
    settle(j);
    ck_assert(in_child(child_folded_is, dir, 0));   /* 64 committed, none durable */
    hist_check_all(j);
    ck_assert_int_eq(append_touched(j, fold_records + 1, 3), BERTH_J_OK);
    ck_assert_uint_eq(durable_of(j), fold_records);
    settle(j);
    ck_assert(in_child(child_folded_is, dir, fold_records));   /* not 67: 65..67 not durable */
    hist_check_all(j);
    ck_assert_int_eq(append_touched(j, fold_records + 4, fold_records - 3), BERTH_J_OK);
    settle(j);
    ck_assert(in_child(child_folded_is, dir, fold_records));   /* durable 67: not due */
    ck_assert(in_child(child_trimmed_is, dir, fold_records));
    ck_assert_int_eq(berth_journal_sync(j), BERTH_J_OK);        /* durable 128: due */
    settle(j);
    ck_assert(in_child(child_folded_is, dir, 2 * fold_records));
    ck_assert_int_eq(berth_journal_maintain(j), BERTH_J_OK);
    hist_check_all(j);
    close_rw(j);
}
END_TEST

/* Without the option (and so on etcd, whose LMDB copy never defers) the
 * durable seq is the head after every append, and a sync has nothing to do. */
START_TEST(store_default_durable_is_head) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_rw(dir, 0, 0);
    ck_assert_uint_eq(durable_of(j), 0);
    for (uint64_t first = 1; first < 1 + 5 * 7; first += 7) {
        ck_assert_int_eq(append_n(j, first, 7), BERTH_J_OK);
        ck_assert_uint_eq(durable_of(j), first + 6);
    }
    ck_assert_int_eq(berth_journal_sync(j), BERTH_J_OK);
    ck_assert_uint_eq(durable_of(j), 35);
    close_rw(j);
}
END_TEST

/* ---- a failed sync (defer_meta_sync) ---------------------------------- */

/* The disk failing one sync: LMDB (a shared library) calls this fdatasync,
 * which fails once with the armed errno, as a failed writeback reports it,
 * and counts every call; otherwise it is the C library's. */
static _Atomic int sync_fail_errno;
static _Atomic uint32_t syncs_called;
static _Atomic uint32_t sync_fail_at;   /* nonzero: the call that brings syncs_called to it fails (EIO) */

/* Nonzero: the call that brings syncs_called to sync_hold_at sets
 * sync_held, waits until sync_hold_released, then fails with this errno
 * (or, when it is negative, syncs as usual). */
static _Atomic int sync_hold_errno;
static _Atomic uint32_t sync_hold_at;
static _Atomic int sync_held;
static _Atomic int sync_hold_released;

int fdatasync(int fd) {
    static int (*real_fdatasync)(int);
    uint32_t called = atomic_fetch_add(&syncs_called, 1) + 1;
    if (called == atomic_load(&sync_fail_at)) {
        atomic_store(&sync_fail_at, 0);
        errno = EIO;
        return -1;
    }
    if (atomic_load(&sync_hold_errno) != 0 && called == atomic_load(&sync_hold_at)) {
        atomic_store(&sync_held, 1);
        while (!atomic_load(&sync_hold_released)) {
            (void)usleep(1000);
        }
        int held_errno = atomic_exchange(&sync_hold_errno, 0);
        if (held_errno > 0) {
            errno = held_errno;
            return -1;
        }
    }
    int err = atomic_exchange(&sync_fail_errno, 0);
    if (err != 0) {
        errno = err;
        return -1;
    }
    if (real_fdatasync == NULL) {
        real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
        ck_assert_ptr_nonnull(real_fdatasync);
    }
    return real_fdatasync(fd);
}

/* Child: the id of the last committed write transaction, to fd. */
static int child_txnid(const char *dir, int fd) {
    MDB_env *env;
    MDB_envinfo info;
    if (mdb_env_create(&env) != 0 || mdb_env_set_maxdbs(env, 8) != 0 ||
        mdb_env_open(env, dir, MDB_RDONLY, 0600) != 0 || mdb_env_info(env, &info) != 0) {
        return 1;
    }
    uint64_t txnid = info.me_last_txnid;
    mdb_env_close(env);
    return write(fd, &txnid, sizeof txnid) == (ssize_t)sizeof txnid ? 0 : 2;
}

/* The meta page the store's newest meta carries: which commit it is. */
static uint64_t txnid_of(const char *dir) {
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    ck_assert(in_child(child_txnid, dir, fds[1]));
    uint64_t txnid = 0;
    ck_assert_int_eq(read(fds[0], &txnid, sizeof txnid), (ssize_t)sizeof txnid);
    ck_assert_int_eq(close(fds[0]), 0);
    ck_assert_int_eq(close(fds[1]), 0);
    return txnid;
}

/* Every writable open commits a fresh meta page over the same tree: after
 * a failed sync the page cache may hold the head's meta page marked clean,
 * which a sync alone would never write. The records stay as they were. */
START_TEST(store_open_rewrites_meta) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_deferred(dir, 0);
    ck_assert_int_eq(append_n(j, 1, 3), BERTH_J_OK);
    close_rw(j);
    for (int deferred = 0; deferred < 2; deferred++) {
        uint64_t before = txnid_of(dir);
        j = deferred ? open_deferred(dir, 0) : open_rw(dir, 0, 0);
        ck_assert_uint_eq(durable_of(j), 3);
        close_rw(j);
        ck_assert_uint_gt(txnid_of(dir), before);
    }
    j = open_rw(dir, 0, 0);
    ck_assert_uint_eq(chain_check(j), 3);
    close_rw(j);
}
END_TEST

/* A commit whose sync fails with ENOSPC may have lost the meta page of the
 * commit before it (the failed sync was the one meant to cover it): a later
 * plain sync proves nothing, so the journal commits and syncs a fresh meta
 * page before it calls anything durable again, and stays writable. An I/O
 * error is sticky. */
START_TEST(store_deferred_failed_sync) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_deferred(dir, 0);
    ck_assert_int_eq(append_n(j, 1, 5), BERTH_J_OK);
    ck_assert_uint_eq(durable_of(j), 0);
    atomic_store(&sync_fail_errno, ENOSPC);
    ck_assert_int_eq(append_n(j, 6, 3), BERTH_J_FULL);
    ck_assert_uint_eq(head_of(j, NULL), 5);
    ck_assert_uint_eq(durable_of(j), 0);
    uint64_t before = txnid_of(dir);
    ck_assert_int_eq(berth_journal_sync(j), BERTH_J_OK);
    ck_assert_uint_eq(durable_of(j), 5);
    ck_assert_uint_eq(txnid_of(dir), before + 1);   /* a fresh meta page, not a plain sync */
    /* The next append after a failed one syncs its own meta page at once. */
    ck_assert_int_eq(append_n(j, 6, 3), BERTH_J_OK);
    atomic_store(&sync_fail_errno, EDQUOT);
    ck_assert_int_eq(append_n(j, 9, 1), BERTH_J_FULL);
    ck_assert_uint_eq(durable_of(j), 5);
    uint32_t syncs = atomic_load(&syncs_called);
    ck_assert_int_eq(append_n(j, 9, 2), BERTH_J_OK);
    ck_assert_uint_eq(atomic_load(&syncs_called) - syncs, 2);   /* its data, then its meta */
    ck_assert_uint_eq(durable_of(j), 8);
    syncs = atomic_load(&syncs_called);
    ck_assert_int_eq(append_n(j, 11, 1), BERTH_J_OK);           /* and then one sync again */
    ck_assert_uint_eq(atomic_load(&syncs_called) - syncs, 1);
    ck_assert_uint_eq(durable_of(j), 10);
    /* EIO: nothing later can prove the lost pages durable. */
    atomic_store(&sync_fail_errno, EIO);
    ck_assert_int_eq(append_n(j, 12, 1), BERTH_J_IO);
    ck_assert_int_eq(berth_journal_sync(j), BERTH_J_IO);
    ck_assert_int_eq(append_n(j, 12, 1), BERTH_J_IO);
    ck_assert_uint_eq(durable_of(j), 10);
    close_rw(j);
    j = open_rw(dir, 0, 0);
    ck_assert_uint_eq(chain_check(j), 11);
    ck_assert_uint_eq(durable_of(j), 11);
    close_rw(j);
}
END_TEST

/* An appender's own sync (nothing queued behind a committed batch) fails
 * for room, not sticky: that batch is answered FULL although it committed,
 * the batch submitted while the sync ran fails untried (it chains from
 * records that are not durable), submit refuses while it is in flight, and
 * once it is waited out the appender chains from the head, which holds the
 * first batch; the next batch's OK makes both durable. */
START_TEST(store_appender_failed_sync) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_deferred(dir, 0);
    berth_appender *p = NULL;
    ck_assert_int_eq(berth_appender_open(&p, j), BERTH_J_OK);
    ck_assert_int_eq(appender_submit_n(p, 1, 10, NULL), BERTH_J_OK);
    ck_assert_int_eq(berth_appender_wait(p, NULL), BERTH_J_OK);
    ck_assert_uint_eq(durable_of(j), 10);
    /* The next batch's commit syncs once (its data); the sync after it,
     * the appender's own, is held until the third batch is queued. */
    atomic_store(&sync_held, 0);
    atomic_store(&sync_hold_released, 0);
    atomic_store(&sync_hold_at, atomic_load(&syncs_called) + 2);
    atomic_store(&sync_hold_errno, ENOSPC);
    ck_assert_int_eq(appender_submit_n(p, 11, 10, NULL), BERTH_J_OK);
    for (uint32_t waited_ms = 0; !atomic_load(&sync_held); waited_ms++) {
        ck_assert_uint_lt(waited_ms, 60000);
        (void)usleep(1000);
    }
    ck_assert_int_eq(appender_submit_n(p, 21, 10, NULL), BERTH_J_OK);
    atomic_store(&sync_hold_released, 1);
    ck_assert_int_eq(berth_appender_wait(p, NULL), BERTH_J_FULL);
    ck_assert_int_eq(appender_submit_n(p, 31, 10, NULL), BERTH_J_INVALID);   /* one in flight */
    ck_assert_int_eq(berth_appender_wait(p, NULL), BERTH_J_FULL);
    ck_assert_uint_eq(head_of(j, NULL), 20);   /* committed, not acknowledged */
    ck_assert_uint_eq(durable_of(j), 10);
    ck_assert_int_eq(appender_submit_n(p, 21, 10, NULL), BERTH_J_OK);
    ck_assert_int_eq(berth_appender_wait(p, NULL), BERTH_J_OK);
    ck_assert_uint_ge(durable_of(j), 30);
    berth_appender_close(p);
    ck_assert_uint_eq(chain_check(j), 30);
    close_rw(j);
}
END_TEST

/* While a commit's sync is held, the batches submitted behind it queue,
 * and the next commit takes them all (one write transaction): two commits
 * for eight batches, each batch's wait OK and durable, with touched names
 * on some batches only, and the same bytes as plain appends would store. */
START_TEST(store_appender_merges_queued) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_rw(dir, 0, 0);
    berth_appender *p = NULL;
    ck_assert_int_eq(berth_appender_open(&p, j), BERTH_J_OK);
    atomic_store(&sync_held, 0);
    atomic_store(&sync_hold_released, 0);
    atomic_store(&sync_hold_at, atomic_load(&syncs_called) + 1);
    atomic_store(&sync_hold_errno, -1);
    berth_str workers[1] = { berth_str_make("merge-w", 7) };
    berth_touched touched[50];
    memset(touched, 0, sizeof(touched));
    touched[49].instance = berth_str_make("merge-i", 7);
    touched[49].workers = workers;
    touched[49].worker_count = 1;
    uint64_t next = 1;
    ck_assert_int_eq(appender_submit_n(p, next, 50, NULL), BERTH_J_OK);
    next += 50;
    for (uint32_t waited_ms = 0; !atomic_load(&sync_held); waited_ms++) {
        ck_assert_uint_lt(waited_ms, 60000);
        (void)usleep(1000);
    }
    while (berth_appender_in_flight(p) < BERTH_APPENDER_DEPTH) {
        bool named = berth_appender_in_flight(p) % 2 == 0;
        ck_assert_int_eq(appender_submit_n(p, next, 50, named ? touched : NULL), BERTH_J_OK);
        next += 50;
    }
    atomic_store(&sync_hold_released, 1);
    while (berth_appender_in_flight(p) > 0) {
        uint64_t last = 0, durable = 0;
        ck_assert_int_eq(berth_appender_wait(p, &last), BERTH_J_OK);
        ck_assert_int_eq(berth_journal_durable(j, &durable), BERTH_J_OK);
        ck_assert_uint_ge(durable, last);
    }
    ck_assert_uint_eq(berth_appender_commits(p), 2);
    berth_appender_close(p);
    ck_assert_uint_eq(chain_check(j), next - 1);
    ck_assert_int_eq(berth_journal_lmdb_settle(j), BERTH_J_OK);
    berth_journal_reader *r;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    uint64_t seqs[8];
    size_t got = 0;
    ck_assert_int_eq(berth_journal_history(r, BERTH_HISTORY_WORKER, workers[0], 1, seqs, 8, &got),
                     BERTH_J_OK);
    ck_assert_uint_eq(got, 3);          /* batches 2, 4 and 6 carry names, on their last record */
    ck_assert_uint_eq(seqs[0], 150);
    berth_journal_reader_close(r);
    close_rw(j);
}
END_TEST

/* Child: a read-only open cannot know what the writer synced. */
static int child_durable_readonly(const char *dir, int fd) {
    (void)fd;
    berth_journal_options o = { .read_only = true, .defer_meta_sync = true };
    berth_journal *j = NULL;
    if (berth_journal_open_lmdb(&j, dir, &o, NULL, 0) != BERTH_J_OK) return 1;
    uint64_t seq = 0;
    if (berth_journal_durable(j, &seq) != BERTH_J_READONLY) return 2;
    if (berth_journal_sync(j) != BERTH_J_READONLY) return 3;
    uint8_t hash[BERTH_HASH_LEN];
    if (berth_journal_head(j, &seq, hash) != BERTH_J_OK || seq != 4) return 4;
    berth_journal_close(j);
    return 0;
}

START_TEST(store_deferred_read_only) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_deferred(dir, 0);
    ck_assert_int_eq(append_n(j, 1, 4), BERTH_J_OK);
    ck_assert(in_child(child_durable_readonly, dir, 0));   /* committed records are visible */
    close_rw(j);
}
END_TEST

/* Child: a deferred writer that reports each seq once berth_journal_durable
 * covers it (as berthd acknowledges), syncing after every other batch,
 * until killed. */
static int child_deferred_writer(const char *dir, int fd) {
    berth_journal_options o = { .defer_meta_sync = true };
    berth_journal *j = NULL;
    if (berth_journal_open_lmdb(&j, dir, &o, NULL, 0) != BERTH_J_OK) return 1;
    uint64_t head = 0, acked = 0;
    uint8_t hash[BERTH_HASH_LEN];
    if (berth_journal_head(j, &head, hash) != BERTH_J_OK) return 2;
    if (berth_journal_durable(j, &acked) != BERTH_J_OK || acked != head) return 3;
    for (uint32_t batch = 0;; batch++) {
        if (append_n(j, head + 1, batch_small) != BERTH_J_OK) return 4;
        head += batch_small;
        if (batch % 2 == 1 && berth_journal_sync(j) != BERTH_J_OK) return 5;
        uint64_t durable = 0;
        if (berth_journal_durable(j, &durable) != BERTH_J_OK || durable > head) return 6;
        for (; acked < durable; acked += batch_small) {
            if (write(fd, "a", 1) != 1) return 7;
        }
    }
}

/* kill -9 at any point: every seq reported durable is there after reopen,
 * the journal ends on a batch boundary and the reopened durable seq is its
 * head. (A process crash keeps the page cache; what an OS crash could undo
 * is only ever the commits not yet reported.) */
START_TEST(store_deferred_kill) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    uint64_t acknowledged = 0;
    for (uint32_t round = 0; round < crash_rounds; round++) {
        acknowledged += kill_after_steps(dir, child_deferred_writer, 3 + 5 * round) *
                        (uint64_t)batch_small;
        berth_journal *j = open_deferred(dir, 0);
        uint64_t head = chain_check(j);
        ck_assert_uint_eq(head % batch_small, 0);
        ck_assert_uint_ge(head, acknowledged);
        ck_assert_uint_eq(durable_of(j), head);
        acknowledged = head;
        close_rw(j);
    }
}
END_TEST


/* ---- history environment faults (review of session 4) ---- */

/* A batch whose 4 workers per record are named after the record alone, so
 * every fold adds new keys and the history file grows quickly. */
static berth_jerr append_unique(berth_journal *j, uint64_t first, size_t n) {
    built *b = calloc(n, sizeof(*b));
    berth_record *recs = calloc(n, sizeof(*recs));
    char (*names)[4][40] = calloc(n, sizeof(*names));
    berth_str (*ws)[4] = calloc(n, sizeof(*ws));
    berth_touched *touched = calloc(n, sizeof(*touched));
    ck_assert(b != NULL && recs != NULL && names != NULL && ws != NULL && touched != NULL);
    for (size_t i = 0; i < n; i++) {
        build(&b[i], first + i);
        recs[i] = b[i].rec;
        for (int w = 0; w < 4; w++) {
            int len = snprintf(names[i][w], 40, "uniq-worker-%llu-%d",
                               (unsigned long long)(first + i), w);
            ws[i][w] = berth_str_make(names[i][w], (size_t)len);
        }
        touched[i].workers = ws[i];
        touched[i].worker_count = 4;
    }
    berth_jerr err = berth_journal_append(j, recs, touched, n);
    free(touched);
    free(ws);
    free(names);
    free(recs);
    free(b);
    return err;
}

/* HISTORY of append_unique's worker `uniq-worker-SEQ-1` is exactly {seq}. */
static void unique_check(berth_journal *j, uint64_t seq) {
    berth_journal_reader *r;
    ck_assert_int_eq(berth_journal_reader_open(j, &r), BERTH_J_OK);
    char name[40];
    int len = snprintf(name, sizeof(name), "uniq-worker-%llu-1", (unsigned long long)seq);
    uint64_t got[4];
    size_t n = 0;
    ck_assert_int_eq(berth_journal_history(r, BERTH_HISTORY_WORKER,
                                           berth_str_make(name, (size_t)len), 0, got, 4, &n),
                     BERTH_J_OK);
    berth_journal_reader_close(r);
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(got[0], seq);
}

/* A history file larger than map_size_initial reopens (LMDB maps only the
 * used pages of an existing file; the open's folded_seq rewrite needs more). */
START_TEST(hist_env_reopen_big) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal_options o = { .history_fold_records = 4000, .map_size_initial = 64 << 10 };
    uint64_t head = 0;
    for (int cycle = 0; cycle < 4; cycle++) {
        berth_journal *j = NULL;
        char err[err_len_max] = "";
        berth_jerr rc = berth_journal_open_lmdb(&j, dir, &o, err, sizeof(err));
        ck_assert_msg(rc == BERTH_J_OK, "reopen %d: %s %s", cycle, berth_jerr_name(rc), err);
        for (int i = 0; i < 4; i++) {
            ck_assert_int_eq(append_unique(j, head + 1, 1000), BERTH_J_OK);
            head += 1000;
        }
        ck_assert_int_eq(berth_journal_lmdb_settle(j), BERTH_J_OK);
        unique_check(j, 1);
        unique_check(j, head);
        berth_journal_close(j);
    }
    char file[300];
    struct stat st;
    snprintf(file, sizeof(file), "%s/history/data.mdb", dir);
    ck_assert_int_eq(stat(file, &st), 0);
    ck_assert_int_gt(st.st_size, 64 << 10);   /* the case under test */
}
END_TEST

static double cpu_seconds(void) {
    struct rusage ru;
    ck_assert_int_eq(getrusage(RUSAGE_SELF, &ru), 0);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* A fold that fails (history map at its cap) is retried once a second, not
 * in a loop: the folder's timed wait must use the clock its deadline uses. */
START_TEST(hist_fold_retry_waits) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal_options o = { .history_fold_records = 64, .map_size_initial = 1 << 20,
                                .map_size_max = 3 << 20 };
    berth_journal *j = open_writer(dir, &o);
    uint64_t head = 0;
    berth_jerr fe = BERTH_J_OK;
    for (int i = 0; i < 400 && fe == BERTH_J_OK; i++) {
        ck_assert_int_eq(append_unique(j, head + 1, 50), BERTH_J_OK);
        head += 50;
        fe = berth_journal_lmdb_settle(j);
    }
    ck_assert_int_eq(fe, BERTH_J_FULL);   /* the case under test: folds now fail */
    double before = cpu_seconds();
    sleep(3);
    double used = cpu_seconds() - before;
    ck_assert_msg(used < 0.5, "the folder used %.2f s of CPU in 3 s idle", used);
    unique_check(j, head);   /* still exact, from the touch log */
    close_rw(j);
}
END_TEST

/* Migrating a format 1 store whose main map fills during the finishing
 * transaction (it drops the whole legacy history db): the grown retry
 * must drop it again, not fail on a handle the first attempt closed. */
START_TEST(hist_migrate_tight_map) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal_options o0 = { .history_fold_records = BERTH_HISTORY_FOLD_RECORDS_MAX };
    berth_journal *j = open_writer(dir, &o0);
    uint64_t head = 0;
    for (int i = 0; i < 30; i++) {
        ck_assert_int_eq(append_unique(j, head + 1, 1000), BERTH_J_OK);
        head += 1000;
    }
    close_rw(j);
    ck_assert(in_child(child_make_legacy, dir, (int)head));
    hist_env_remove(dir);
    berth_journal_options o = { .history_fold_records = 4000, .map_size_initial = 64 << 10 };
    for (int k = 0; k < 2; k++) {
        char err[err_len_max] = "";
        j = NULL;
        berth_jerr rc = berth_journal_open_lmdb(&j, dir, &o, err, sizeof(err));
        ck_assert_msg(rc == BERTH_J_OK, "open %d: %s %s", k, berth_jerr_name(rc), err);
        unique_check(j, 1);
        unique_check(j, head);
        berth_journal_close(j);
    }
    ck_assert(in_child(child_migrated, dir, 0));
}
END_TEST

static int child_open_close_writable(const char *dir, int unused) {
    (void)unused;
    berth_journal_options o = { .history_fold_records = fold_records };
    berth_journal *j = NULL;
    char err[err_len_max] = "";
    berth_jerr rc = berth_journal_open_lmdb(&j, dir, &o, err, sizeof(err));
    if (rc != BERTH_J_OK) {
        fprintf(stderr, "child open: %s %s\n", berth_jerr_name(rc), err);
        return 1;
    }
    berth_journal_close(j);
    return 0;
}

/* A read-only open of a format 1 store, then a writer migrates it: the
 * reader's HISTORY is exact or an error, never a short list with OK. */
START_TEST(hist_ro_legacy_then_migrated) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_fold(dir, fold_records);
    ck_assert_int_eq(append_touched(j, 1, hist_batch), BERTH_J_OK);
    ck_assert_int_eq(append_touched(j, 1 + hist_batch, hist_batch), BERTH_J_OK);
    settle(j);
    close_rw(j);
    ck_assert(in_child(child_make_legacy, dir, 13));
    hist_env_remove(dir);
    berth_journal_options ro = { .read_only = true, .no_lock = true };
    berth_journal *r = NULL;
    char err[err_len_max] = "";
    ck_assert_int_eq(berth_journal_open_lmdb(&r, dir, &ro, err, sizeof(err)), BERTH_J_OK);
    uint64_t want[hist_seqs_max];
    size_t m = hist_expect('w', 1, 0, 2 * hist_batch, want, hist_seqs_max);
    ck_assert_uint_gt(m, 0);
    uint64_t got[hist_seqs_max];
    size_t n = 0;
    berth_journal_reader *rd;
    ck_assert_int_eq(berth_journal_reader_open(r, &rd), BERTH_J_OK);
    ck_assert_int_eq(berth_journal_history(rd, BERTH_HISTORY_WORKER, berth_str_make("w1", 2), 0,
                                           got, hist_seqs_max, &n), BERTH_J_OK);
    berth_journal_reader_close(rd);
    ck_assert_uint_eq(n, m);
    ck_assert(in_child(child_open_close_writable, dir, 0));   /* migrates */
    ck_assert_int_eq(berth_journal_reader_open(r, &rd), BERTH_J_OK);
    n = 0;
    berth_jerr e = berth_journal_history(rd, BERTH_HISTORY_WORKER, berth_str_make("w1", 2), 0,
                                         got, hist_seqs_max, &n);
    berth_journal_reader_close(rd);
    berth_journal_close(r);
    ck_assert_msg(e != BERTH_J_OK || n == m, "answered %zu of %zu names with OK", n, m);
    ck_assert(e == BERTH_J_OK || n == 0);
    ck_assert(in_child(child_reads_exact, dir, 0));   /* a fresh reader is exact */
}
END_TEST

/* Child: with too little address space for the folder's buffers, the open
 * fails NOMEM, or it opens and folds; exit 1: it opened with a folder that
 * never folds (settle reports the NOMEM nobody was told of). */
static int child_open_short_of_memory(const char *dir, int extra_mib) {
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL || fscanf(f, "%ld", &pages) != 1) return 2;
    fclose(f);
    struct rlimit lim;
    lim.rlim_cur = lim.rlim_max = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) +
                                  ((rlim_t)extra_mib << 20);
    if (setrlimit(RLIMIT_AS, &lim) != 0) return 2;
    berth_journal_options o = { .history_fold_records = fold_records,
                                .map_size_initial = 1 << 20 };
    berth_journal *j = NULL;
    char err[err_len_max] = "";
    berth_jerr rc = berth_journal_open_lmdb(&j, dir, &o, err, sizeof(err));
    if (rc == BERTH_J_NOMEM) {
        return strstr(err, "memory") != NULL ? 0 : 3;
    }
    if (rc != BERTH_J_OK) {
        fprintf(stderr, "open short of memory: %s %s\n", berth_jerr_name(rc), err);
        return 2;
    }
    berth_jerr settled = berth_journal_lmdb_settle(j);
    berth_journal_close(j);
    return settled == BERTH_J_OK ? 0 : 1;
}

/* The folder's buffers are taken at the open, which fails NOMEM without
 * them, rather than an open whose folder silently never folds. */
START_TEST(hist_fold_buffers_at_open) {
    if (TEST_ASAN) {
        return;   /* ASan reserves terabytes of address space: RLIMIT_AS cannot apply */
    }
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_fold(dir, fold_records);
    ck_assert_int_eq(append_touched(j, 1, 2 * fold_records), BERTH_J_OK);
    close_rw(j);
    ck_assert(in_child(child_open_short_of_memory, dir, 40));
    ck_assert(in_child(child_open_close_writable, dir, 0));   /* with room: opens */
}
END_TEST

/* Directories fsynced (the journal calls this fsync, as LMDB calls the
 * fdatasync above): their inodes, for hist_dirs_synced. */
enum { dirs_synced_max = 64 };
static pthread_mutex_t dirs_synced_mutex = PTHREAD_MUTEX_INITIALIZER;
static ino_t dirs_synced[dirs_synced_max];
static size_t dirs_synced_n;

static ino_t dir_sync_fails;   /* a directory whose fsync fails (EIO); 0: none */

int fsync(int fd) {
    static int (*real_fsync)(int);
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        pthread_mutex_lock(&dirs_synced_mutex);
        if (dirs_synced_n < dirs_synced_max) {
            dirs_synced[dirs_synced_n++] = st.st_ino;
        }
        bool fails = dir_sync_fails != 0 && st.st_ino == dir_sync_fails;
        pthread_mutex_unlock(&dirs_synced_mutex);
        if (fails) {
            errno = EIO;
            return -1;
        }
    }
    if (real_fsync == NULL) {
        real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
        ck_assert_ptr_nonnull(real_fsync);
    }
    return real_fsync(fd);
}

static bool dir_was_synced(const char *path) {
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    bool found = false;
    pthread_mutex_lock(&dirs_synced_mutex);
    for (size_t i = 0; i < dirs_synced_n; i++) {
        found = found || dirs_synced[i] == st.st_ino;
    }
    pthread_mutex_unlock(&dirs_synced_mutex);
    return found;
}

/* A writable open syncs DIR/history (the entries of its new files) and
 * DIR (the entry of history/) before anything relies on them. */
START_TEST(hist_dirs_synced) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    pthread_mutex_lock(&dirs_synced_mutex);
    dirs_synced_n = 0;
    pthread_mutex_unlock(&dirs_synced_mutex);
    berth_journal *j = open_fold(dir, fold_records);
    char path[300];
    snprintf(path, sizeof(path), "%s/history", dir);
    ck_assert(dir_was_synced(path));
    ck_assert(dir_was_synced(dir));
    close_rw(j);
}
END_TEST

/* Creating the data directory syncs its parent, so the new entry survives
 * an OS crash (hV3: only history/ and DIR were synced); a failed sync fails
 * the open, and the next open, finding no data.mdb yet, syncs it again. */
START_TEST(dir_parent_synced) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    struct stat st;
    ck_assert_int_eq(stat(temp_root, &st), 0);
    pthread_mutex_lock(&dirs_synced_mutex);
    dirs_synced_n = 0;
    dir_sync_fails = st.st_ino;
    pthread_mutex_unlock(&dirs_synced_mutex);
    berth_journal *j = NULL;
    char err[err_len_max] = "";
    berth_journal_options o = { 0 };
    ck_assert_int_eq(berth_journal_open_lmdb(&j, dir, &o, err, sizeof(err)), BERTH_J_IO);
    ck_assert_msg(strstr(err, "cannot sync the directory") != NULL && strstr(err, temp_root) != NULL,
                  "%s", err);
    pthread_mutex_lock(&dirs_synced_mutex);
    dirs_synced_n = 0;
    dir_sync_fails = 0;
    pthread_mutex_unlock(&dirs_synced_mutex);
    j = open_rw(dir, 0, 0);
    ck_assert(dir_was_synced(temp_root));
    close_rw(j);
    pthread_mutex_lock(&dirs_synced_mutex);
    dirs_synced_n = 0;
    pthread_mutex_unlock(&dirs_synced_mutex);
    j = open_rw(dir, 0, 0);   /* an existing journal: its parent is left alone */
    ck_assert(!dir_was_synced(temp_root));
    close_rw(j);
}
END_TEST

/* A read-only open whose history environment exists but cannot be opened
 * (here its lock file is a link into nowhere: ENOENT) fails, instead of
 * taking the error for "no history environment" and keeping one that
 * never opened for later queries. */
START_TEST(hist_ro_env_open_fails) {
    char dir[256];
    dir_fresh(dir, sizeof(dir));
    berth_journal *j = open_fold(dir, fold_records);
    ck_assert_int_eq(append_touched(j, 1, hist_batch), BERTH_J_OK);   /* no fold: untrimmed */
    close_rw(j);
    char lock[300];
    char nowhere[300];
    snprintf(lock, sizeof(lock), "%s/history/lock.mdb", dir);
    snprintf(nowhere, sizeof(nowhere), "%s/nowhere/lock.mdb", dir);
    ck_assert_int_eq(unlink(lock), 0);
    ck_assert_int_eq(symlink(nowhere, lock), 0);
    berth_journal_options ro = { .read_only = true, .no_lock = true };
    berth_journal *r = NULL;
    char err[err_len_max] = "";
    berth_jerr rc = berth_journal_open_lmdb(&r, dir, &ro, err, sizeof(err));
    if (rc == BERTH_J_OK) {
        berth_journal_close(r);
    }
    ck_assert_msg(rc == BERTH_J_IO, "read-only open: %s %s", berth_jerr_name(rc), err);
    ck_assert_ptr_nonnull(strstr(err, "history index"));
}
END_TEST

/* A format 1 store (all names still in the main environment), for the
 * migration tests: 2 batches, folded through 13. */
static void legacy_store(const char *dir) {
    berth_journal *j = open_fold(dir, fold_records);
    ck_assert_int_eq(append_touched(j, 1, hist_batch), BERTH_J_OK);
    ck_assert_int_eq(append_touched(j, 1 + hist_batch, hist_batch), BERTH_J_OK);
    settle(j);
    close_rw(j);
    ck_assert(in_child(child_make_legacy, dir, 13));
    hist_env_remove(dir);
}

/* The sync after the migration's finishing commit fails: the open fails
 * IO saying the store was moved (not "unchanged"), and the next open
 * serves the moved store exactly. */
START_TEST(hist_migrate_sync_fails) {
    char dry[256];
    char dir[256];
    dir_fresh(dry, sizeof(dry));
    dir_fresh(dir, sizeof(dir));
    legacy_store(dry);
    legacy_store(dir);
    /* the same open on a twin store counts its syncs: the migration's
     * closing sync is the last before the open returns (no fold is due) */
    atomic_store(&syncs_called, 0);
    berth_journal *j = open_fold(dry, fold_records);
    uint32_t syncs = atomic_load(&syncs_called);
    close_rw(j);
    ck_assert_uint_gt(syncs, 0);
    /* The upgrade to format 3 (runs) syncs after the migration: fail the
     * syncs from the last back until the one that is the migration's. */
    berth_journal_options o = { .history_fold_records = fold_records };
    char err[err_len_max] = "";
    berth_jerr rc = BERTH_J_OK;
    bool found = false;
    for (uint32_t at = syncs; at > 0 && at + 8 > syncs && !found; at--) {
        if (at < syncs) {
            dir_fresh(dir, sizeof(dir));   /* the last try changed its store */
            legacy_store(dir);
        }
        atomic_store(&syncs_called, 0);
        atomic_store(&sync_fail_at, at);
        j = NULL;
        err[0] = '\0';
        rc = berth_journal_open_lmdb(&j, dir, &o, err, sizeof(err));
        atomic_store(&sync_fail_at, 0);
        if (rc == BERTH_J_OK) {
            berth_journal_close(j);
        }
        found = rc == BERTH_J_IO && strstr(err, "format 2") != NULL;
    }
    ck_assert_msg(found, "open: %s %s", berth_jerr_name(rc), err);
    ck_assert_msg(strstr(err, "unchanged") == NULL, "says: %s", err);
    ck_assert(in_child(child_migrated, dir, 2));   /* moved; runs at the next open */
    j = open_fold(dir, fold_records);
    hist_check_all(j);
    close_rw(j);
}
END_TEST

/* ---- the fold's sort (fold_sort.c) ----------------------------------- */

enum {
    sort_trials = 300,
    sort_items_max = 4000,
    sort_pool_names = 64,
};

/* A name of the pool: lengths around the radix keys' edges (7, 8, 15, 16
 * bytes) and beyond, from a small alphabet over shared stems, so equal
 * keys, names that are prefixes of others and long names that agree in
 * their first 15 bytes all come up often. */
static uint8_t sort_name_make(uint64_t *seed, char *out) {
    static const char *stems[] = { "", "w-", "i-d16r0-12-", "i-d16r0-12-3456",
                                   "llama-70b-prod-replica-" };
    const char *stem = stems[xorshift(seed) % (sizeof stems / sizeof stems[0])];
    size_t len = strlen(stem);
    memcpy(out, stem, len);
    size_t more = (size_t)(xorshift(seed) % 6);
    if (xorshift(seed) % 8 == 0) {
        more = (size_t)(xorshift(seed) % BERTH_NAME_LEN_MAX);
    }
    if (len + more == 0) {
        more = 1;
    }
    if (len + more > BERTH_NAME_LEN_MAX) {
        more = BERTH_NAME_LEN_MAX - len;
    }
    for (size_t i = 0; i < more; i++) {
        out[len + i] = (char)("ab-0\xff"[xorshift(seed) % 5]);   /* 0xff: unsigned compare */
    }
    return (uint8_t)(len + more);
}

static bool fold_items_same(const fold_item *x, const fold_item *y, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (x[i].kind != y[i].kind || x[i].len != y[i].len || x[i].seq != y[i].seq ||
            x[i].prefix != y[i].prefix || memcmp(x[i].name, y[i].name, x[i].len) != 0) {
            return false;
        }
    }
    return true;
}

/* fold_sort orders exactly as the qsort it replaced, on seeded random
 * batches in seq order (the fast path) with repeated names, repeated seqs
 * and the same name twice in one record; and on the same batches shuffled
 * (the fallback). */
START_TEST(fold_sort_matches_qsort) {
    static char pool[sort_pool_names][BERTH_NAME_LEN_MAX];
    static uint8_t pool_len[sort_pool_names];
    static fold_item got[sort_items_max], want[sort_items_max];
    uint64_t seed = 0x2545f4914f6cdd1dull;
    size_t fast = 0;
    fold_sort_scratch scratch = { 0 };   /* kept across trials, as the folder keeps it */
    for (int trial = 0; trial < sort_trials; trial++) {
        size_t names = 1 + (size_t)(xorshift(&seed) % sort_pool_names);
        for (size_t k = 0; k < names; k++) {
            pool_len[k] = sort_name_make(&seed, pool[k]);
        }
        size_t n = (size_t)(xorshift(&seed) % sort_items_max);
        if (trial < 3) {
            n = (size_t)trial;   /* 0, 1 and 2 items */
        }
        uint64_t seq = 1 + xorshift(&seed) % 1000;
        for (size_t i = 0; i < n; i++) {
            if (xorshift(&seed) % 3 == 0) {
                seq += 1 + xorshift(&seed) % 3;   /* else: the same record */
            }
            size_t k = (size_t)(xorshift(&seed) % names);
            char kind = xorshift(&seed) % 2 ? BERTH_HISTORY_WORKER : BERTH_HISTORY_INSTANCE;
            const uint8_t *name = (const uint8_t *)pool[k];
            got[i] = (fold_item){ .prefix = fold_prefix(kind, name, pool_len[k]), .name = name,
                                  .seq = seq, .len = pool_len[k], .kind = kind };
        }
        memcpy(want, got, n * sizeof *got);
        qsort(want, n, sizeof *want, fold_item_cmp);
        bool took_fast = fold_sort(got, n, &scratch);
        ck_assert_msg(fold_items_same(got, want, n), "trial %d: %zu items out of order", trial, n);
        fast += took_fast;
        ck_assert(took_fast || n >= 2);

        for (size_t i = n; i > 1; i--) {   /* shuffled: seqs fall, so the fallback */
            size_t r = (size_t)(xorshift(&seed) % i);
            fold_item t = got[i - 1];
            got[i - 1] = got[r];
            got[r] = t;
        }
        bool falls = false;
        for (size_t i = 1; i < n; i++) {
            falls = falls || got[i].seq < got[i - 1].seq;
        }
        ck_assert(fold_sort(got, n, NULL) == !falls);
        ck_assert_msg(fold_items_same(got, want, n), "trial %d shuffled: out of order", trial);
    }
    ck_assert_uint_eq(fast, sort_trials);
    fold_sort_scratch_free(&scratch);
}
END_TEST

/* The long-name runs: many names alike in their first 15 bytes, beside the
 * 15-byte name they all extend, in seq order against their key order. */
START_TEST(fold_sort_long_runs) {
    enum { count = 500 };
    static char names[count][32];
    static fold_item got[count], want[count];
    for (size_t i = 0; i < count; i++) {
        size_t len = 15;
        memcpy(names[i], "i-d16r0-12-3456", len);
        if (i + 1 < count) {
            len = (size_t)snprintf(names[i], sizeof names[i], "i-d16r0-12-3456-%zu", count - i);
        }
        const uint8_t *name = (const uint8_t *)names[i];
        got[i] = (fold_item){ .prefix = fold_prefix(BERTH_HISTORY_INSTANCE, name, len), .name = name,
                              .seq = 10 + i, .len = (uint8_t)len, .kind = BERTH_HISTORY_INSTANCE };
    }
    memcpy(want, got, sizeof got);
    qsort(want, count, sizeof *want, fold_item_cmp);
    ck_assert(fold_sort(got, count, NULL));
    ck_assert(fold_items_same(got, want, count));
    ck_assert_uint_eq(got[0].len, 15);   /* the shortest first */
}
END_TEST

/* A kept scratch: reused by a fold-sized sort, given back after a larger
 * one (fold_sort.h), the order right either way. */
START_TEST(fold_sort_scratch_kept_or_freed) {
    enum { big = (1 << 17) + 1000, small = 3000, names = 97 };
    static char pool[names][24];
    static uint8_t pool_len[names];
    for (size_t k = 0; k < names; k++) {
        pool_len[k] = (uint8_t)snprintf(pool[k], sizeof pool[k], "i-r-%zu-%zu", k % 7, k * 7919);
    }
    fold_item *got = malloc(big * sizeof *got);
    fold_item *want = malloc(big * sizeof *want);
    ck_assert(got != NULL && want != NULL);
    fold_sort_scratch scratch = { 0 };
    const size_t sizes[] = { small, big, small };
    for (size_t round = 0; round < 3; round++) {
        size_t n = sizes[round];
        for (size_t i = 0; i < n; i++) {
            size_t k = (i * 31 + round) % names;
            char kind = i % 3 == 0 ? BERTH_HISTORY_WORKER : BERTH_HISTORY_INSTANCE;
            const uint8_t *name = (const uint8_t *)pool[k];
            got[i] = (fold_item){ .prefix = fold_prefix(kind, name, pool_len[k]), .name = name,
                                  .seq = 1 + i / 2, .len = pool_len[k], .kind = kind };
        }
        memcpy(want, got, n * sizeof *got);
        qsort(want, n, sizeof *want, fold_item_cmp);
        void *before = scratch.block;
        ck_assert(fold_sort(got, n, &scratch));
        ck_assert(fold_items_same(got, want, n));
        if (n == big) {
            ck_assert_ptr_null(scratch.block);   /* given back */
            ck_assert_uint_eq(scratch.items_cap, 0);
        } else {
            ck_assert_ptr_nonnull(scratch.block);
            ck_assert_uint_ge(scratch.items_cap, n);
            if (round == 0) ck_assert_ptr_null(before);
        }
    }
    /* An owner that keeps whatever it sorted (a rebuild) keeps the big one. */
    scratch.keep_items_max = SIZE_MAX;
    for (size_t i = 0; i < big; i++) {
        got[i].seq = 1 + i;   /* the last round's names, in seq order */
    }
    ck_assert(fold_sort(got, big, &scratch));
    ck_assert_ptr_nonnull(scratch.block);
    ck_assert_uint_ge(scratch.items_cap, big);
    fold_sort_scratch_free(&scratch);
    free(got);
    free(want);
}
END_TEST

static Suite *journal_suite(void) {
    Suite *s = suite_create("journal");
    TCase *codec = tcase_create("codec");
    tcase_add_test(codec, codec_round_trip);
    tcase_add_test(codec, codec_peek_time);
    tcase_add_test(codec, codec_peek_chain);
    tcase_add_test(codec, codec_encode_limits);
    tcase_add_test(codec, codec_encode_matches_packer);
    tcase_add_test(codec, codec_encoded_len_matches);
    tcase_add_test(codec, codec_decode_spellings);
    tcase_add_test(codec, codec_truncated);
    tcase_add_test(codec, codec_flipped);
    tcase_add_test(codec, codec_unknown_version);
    tcase_add_test(codec, codec_actor_not_name);
    tcase_add_test(codec, codec_trailing);
    tcase_add_test(codec, codec_hostile);
    tcase_add_test(codec, codec_random_bytes);
    tcase_add_test(codec, codec_threads);
    tcase_add_test(codec, jerr_names);
    tcase_add_test(codec, durable_without_backend_ops);
    tcase_add_test(codec, rebuild_without_backend_ops);
    tcase_add_test(codec, fold_sort_matches_qsort);
    tcase_add_test(codec, fold_sort_long_runs);
    tcase_add_test(codec, fold_sort_scratch_kept_or_freed);
    tcase_set_timeout(codec, 120);
    suite_add_tcase(s, codec);

    TCase *store = tcase_create("store");
    tcase_add_unchecked_fixture(store, root_make, root_remove);
    tcase_add_test(store, store_append_read_reopen);
    tcase_add_test(store, store_foreign_lmdb_refused);
    tcase_add_test(store, store_copy);
    tcase_add_test(store, store_readers_clear_dead);
    tcase_add_test(store, store_big_records);
    tcase_add_test(store, store_invalid_batches);
    tcase_add_test(store, store_append_encoded);
    tcase_add_test(store, store_map_full);
    tcase_add_test(store, store_appender_matches_append);
    tcase_add_test(store, store_appender_refusals);
    tcase_add_test(store, store_appender_full);
    tcase_add_test(store, store_appender_merge_retries_alone);
    tcase_add_test(store, store_appender_durable_deferred);
    tcase_add_test(store, store_growth_with_reader);
    tcase_add_test(store, store_growth_waits_for_reader);
    tcase_add_test(store, store_growth_with_yielding_reader);
    tcase_add_test(store, store_dead_reader_swept);
    tcase_add_test(store, store_locked);
    tcase_add_test(store, store_history);
    tcase_add_test(store, store_snapshots);
    tcase_add_test(store, store_snapshots_pruned);
    tcase_add_test(store, store_gap_and_flip);
    tcase_add_test(store, store_crash_mid_batch);
    tcase_add_test(store, store_reader_adopts_growth);
    tcase_add_test(store, store_disk_full);
    tcase_add_test(store, store_history_fold);
    tcase_add_test(store, store_history_trim_paced);
    tcase_add_test(store, store_history_fold_hot_key);
    tcase_add_test(store, store_history_fold_option);
    tcase_add_test(store, store_history_crash_at_fold);
    tcase_add_test(store, store_history_fold_races_queries);
    tcase_add_test(store, store_history_migrate);
    tcase_add_test(store, store_history_runs_merge);
    tcase_add_test(store, store_history_long_names);
    tcase_add_test(store, store_history_runs_after_legacy);
    tcase_add_test(store, store_history_format2_upgrade);
    tcase_add_test(store, store_history_run_damaged);
    tcase_add_test(store, store_history_merge_fails);
    tcase_add_test(store, store_history_killed_merging);
    tcase_add_test(store, store_history_env_missing);
    tcase_add_test(store, store_history_env_damaged);
    tcase_add_test(store, store_history_other_journal);
    tcase_add_test(store, store_meta_damaged);
    tcase_add_test(store, store_size_counts_history);
    tcase_add_test(store, store_deferred_durable_seq);
    tcase_add_test(store, store_deferred_fold_durable);
    tcase_add_test(store, store_default_durable_is_head);
    tcase_add_test(store, store_open_rewrites_meta);
    tcase_add_test(store, store_deferred_failed_sync);
    tcase_add_test(store, store_appender_failed_sync);
    tcase_add_test(store, store_appender_merges_queued);
    tcase_add_test(store, store_deferred_read_only);
    tcase_add_test(store, store_deferred_kill);
    tcase_set_timeout(store, 240);
    suite_add_tcase(s, store);

    TCase *hist = tcase_create("history_faults");
    tcase_add_unchecked_fixture(hist, root_make, root_remove);
    tcase_add_test(hist, hist_env_reopen_big);
    tcase_add_test(hist, hist_fold_retry_waits);
    tcase_add_test(hist, hist_migrate_tight_map);
    tcase_add_test(hist, hist_ro_legacy_then_migrated);
    tcase_add_test(hist, hist_fold_buffers_at_open);
    tcase_add_test(hist, hist_dirs_synced);
    tcase_add_test(hist, dir_parent_synced);
    tcase_add_test(hist, hist_ro_env_open_fails);
    tcase_add_test(hist, hist_migrate_sync_fails);
    tcase_set_timeout(hist, 240);
    suite_add_tcase(s, hist);
    return s;
}

/* Every function a test runs as a child (child_spawn). */
#define CHILD(f) { #f, f }
static const struct {
    const char *name;
    child_fn fn;
} children[] = {
    CHILD(child_reader_forever), CHILD(child_count_dead),
    CHILD(child_read_only), CHILD(child_damage),
    CHILD(child_append_forever), CHILD(child_adopt),
    CHILD(child_folded_is), CHILD(child_trimmed_is),
    CHILD(child_append_touched_forever), CHILD(child_make_legacy),
    CHILD(child_reads_exact), CHILD(child_migrated),
    CHILD(child_stale_hist_env), CHILD(child_dies_merging),
    CHILD(child_runs_to_legacy), CHILD(child_set_format),
    CHILD(child_fold_more), CHILD(child_cut_run_value),
    CHILD(child_opens), CHILD(child_txnid),
    CHILD(child_durable_readonly), CHILD(child_deferred_writer),
    CHILD(child_open_close_writable), CHILD(child_open_short_of_memory),
    CHILD(child_reader_dies),
};
#undef CHILD

static const char *child_name_of(child_fn fn) {
    for (size_t i = 0; i < sizeof(children) / sizeof(children[0]); i++) {
        if (children[i].fn == fn) {
            return children[i].name;
        }
    }
    return NULL;
}

/* --child NAME DIR FD: run that child here and exit with what it returns.
 * It runs as a test of its own, in this process (no fork), since children
 * call the helpers above, whose checks are Check's: a failed one ends the
 * test, and the child then exits 124. */
static const char *child_args[3];

START_TEST(child_run) {
    for (size_t i = 0; i < sizeof(children) / sizeof(children[0]); i++) {
        if (strcmp(children[i].name, child_args[0]) == 0) {
            int rc = children[i].fn(child_args[1], atoi(child_args[2]));
            fflush(NULL);
            _exit(rc);
        }
    }
    ck_abort_msg("no child named %s", child_args[0]);
}
END_TEST

static int child_main(const char *name, const char *dir, const char *fd_text) {
    child_args[0] = name;
    child_args[1] = dir;
    child_args[2] = fd_text;
    /* The parent's selection (CK_RUN_CASE=store, say) would skip this one. */
    static const char *const selection[] = { "CK_RUN_SUITE", "CK_RUN_CASE", "CK_INCLUDE_TAGS",
                                             "CK_EXCLUDE_TAGS" };
    for (size_t i = 0; i < sizeof(selection) / sizeof(selection[0]); i++) {
        unsetenv(selection[i]);
    }
    Suite *suite = suite_create("child");
    TCase *tc = tcase_create("child");
    tcase_add_test(tc, child_run);
    suite_add_tcase(suite, tc);
    SRunner *runner = srunner_create(suite);
    srunner_set_fork_status(runner, CK_NOFORK);
    srunner_run_all(runner, CK_SILENT);
    /* child_run ends the process unless a check failed: say which. */
    TestResult **failures = srunner_failures(runner);
    for (int i = 0; failures != NULL && i < srunner_ntests_failed(runner); i++) {
        fprintf(stderr, "test_journal: child %s: %s:%d: %s\n", name, tr_lfile(failures[i]),
                tr_lno(failures[i]), tr_msg(failures[i]));
    }
    if (srunner_ntests_failed(runner) == 0) {
        fprintf(stderr, "test_journal: child %s did not run\n", name);
    }
    free(failures);
    srunner_free(runner);
    return 124;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "--child") == 0) {
        return child_main(argv[2], argv[3], argv[4]);
    }
    if (realpath(argv[0], self_exe) == NULL) {
        perror(argv[0]);
        return EXIT_FAILURE;
    }
    SRunner *runner = srunner_create(journal_suite());
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
