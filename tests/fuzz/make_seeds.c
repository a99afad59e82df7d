/* make_seeds.c — writes the seed corpora of the record and snapshot fuzzers.
 *
 * Owns how the committed seeds under tests/fuzz/corpus/fuzz_record and
 * fuzz_snapshot were made: with berth's real encoders, from a fixed command
 * stream, so every seed is a well-formed input the fuzzer mutates from
 * (random bytes would almost never get past the msgpack header). Run it
 * again after a format change:
 *     berth_fuzz_seeds tests/fuzz/corpus */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "journal.h"
#include "replay.h"
#include "state.h"

#define SEEDS_PATH_LEN_MAX 4096
#define SEEDS_ERR_LEN_MAX 512

static const char *const seed_commands[] = {
    "WORKER.ADD w1 GPUS 8 VRAM 81920 LABEL rack=r1 LABEL zone=a",
    "WORKER.ADD w2 GPUS 8 VRAM 81920",
    "WORKER.ADD w3 GPUS 4",
    "WORKER.ADD w4 GPUS 0",
    "DEPLOY llama MODEL meta/llama-3-70b BACKEND vllm ON w1 w2",
    "DEPLOY qwen MODEL qwen2 BACKEND vllm ON w2 w3",
    "DEPLOY small MODEL m BACKEND llama-box ON w3:0,1",
    "DEPLOY shared-a MODEL m BACKEND vllm VRAM 30000 ON w4",
    "WORKER.CORDON w3",
    "POLICY.SET EXCLUSIVE sglang,vllm",
    "RELEASE llama",
    "DEPLOY qwen MODEL qwen2 BACKEND vllm ON w2 w3 REQID retry-1",
    "WORKER.REMOVE w2",
};
#define SEED_COMMAND_COUNT (sizeof seed_commands / sizeof seed_commands[0])

static void die(const char *what) {
    fprintf(stderr, "ERR berth_fuzz_seeds: %s\n", what);
    exit(1);
}

static void write_file(const char *dir, const char *name, const void *bytes, size_t len) {
    char path[SEEDS_PATH_LEN_MAX];
    int n = snprintf(path, sizeof path, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof path) die("path too long");
    FILE *f = fopen(path, "wb");
    if (f == NULL) die(path);
    if (fwrite(bytes, 1, len, f) != len) die(path);
    if (fclose(f) != 0) die(path);
}

/* A snapshot seed: a mode byte, then either the body alone (mode 0: the
 * fuzzer appends the digest) or the stored bytes with their digest (mode 1). */
static void write_snapshot(const char *dir, const char *name, const uint8_t *bytes, size_t len) {
    static uint8_t buf[1u << 20];
    if (len + 1 > sizeof buf || len < 2 * BERTH_HASH_LEN) die("snapshot seed size");
    char with_mode[64];
    buf[0] = 0;   /* the body alone: the target adds a zero anchor and the digest */
    memcpy(buf + 1, bytes, len - 2 * BERTH_HASH_LEN);
    snprintf(with_mode, sizeof with_mode, "%s-body", name);
    write_file(dir, with_mode, buf, len + 1 - 2 * BERTH_HASH_LEN);
    buf[0] = 1;
    memcpy(buf + 1, bytes, len);
    snprintf(with_mode, sizeof with_mode, "%s-stored", name);
    write_file(dir, with_mode, buf, len + 1);
}

static void make_dir(const char *root, const char *sub, char *out) {
    int n = snprintf(out, SEEDS_PATH_LEN_MAX, "%s/%s", root, sub);
    if (n < 0 || n >= SEEDS_PATH_LEN_MAX) die("path too long");
    if (mkdir(out, 0755) != 0 && errno != EEXIST) die(out);
}

/* Apply command i to state as seq, filling a record of it. */
static void apply_one(berth_state *state, size_t i, uint64_t seq, berth_record *rec,
                      char *canonical, berth_outcome *out) {
    static berth_str words[BERTH_ARGS_MAX];
    static berth_cmd cmd;
    char err[BERTH_ERR_LEN_MAX];
    const char *text = seed_commands[i];
    if (berth_cmd_parse_text(&cmd, text, strlen(text), words, BERTH_ARGS_MAX, err, sizeof err) != 0) die(err);
    size_t len = berth_cmd_canonical(&cmd, canonical, BERTH_COMMAND_LEN_MAX);
    if (len == 0) die("canonical");
    if (berth_state_apply(state, &cmd, berth_str_make(canonical, len), seq, out) != 0) die("apply");
    memset(rec, 0, sizeof *rec);
    rec->seq = seq;
    rec->time_ms = 1795000000000ull + seq * 1000u;
    rec->actor = berth_str_make(seq % 2 ? "controller" : "", seq % 2 ? 10 : 0);
    rec->reqid = cmd.reqid;
    rec->command = berth_str_make(canonical, len);
    rec->code = (uint32_t)out->code;
    rec->sentence = berth_str_make(out->sentence, out->sentence_len);
    rec->version = BERTH_RECORD_VERSION;
    memset(rec->prev_hash, (int)seq, BERTH_HASH_LEN);
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: berth_fuzz_seeds <corpus-root>\n"); return 2; }
    char rec_dir[SEEDS_PATH_LEN_MAX], snap_dir[SEEDS_PATH_LEN_MAX];
    make_dir(argv[1], "fuzz_record", rec_dir);
    make_dir(argv[1], "fuzz_snapshot", snap_dir);
    berth_state *state = berth_state_new(NULL);
    if (state == NULL) die("out of memory");
    static char canonical[BERTH_COMMAND_LEN_MAX];
    static uint8_t buf[BERTH_RECORD_BYTES_MAX];
    static berth_outcome out;
    char name[64];
    uint8_t *snap = NULL;
    size_t snap_len = 0;
    static const uint8_t genesis_anchor[BERTH_HASH_LEN];
    if (berth_snapshot_encode(state, genesis_anchor, &snap, &snap_len) != 0) die("snapshot encode");
    write_snapshot(snap_dir, "genesis", snap, snap_len);
    free(snap);
    for (size_t i = 0; i < SEED_COMMAND_COUNT; i++) {
        berth_record rec;
        apply_one(state, i, i + 1, &rec, canonical, &out);
        size_t len = berth_record_encode(&rec, buf, sizeof buf);
        if (len == 0) die("record encode");
        snprintf(name, sizeof name, "record-%02zu", i + 1);
        write_file(rec_dir, name, buf, len);
        if (berth_snapshot_encode(state, rec.hash, &snap, &snap_len) != 0) die("snapshot encode");
        snprintf(name, sizeof name, "after-%02zu", i + 1);
        write_snapshot(snap_dir, name, snap, snap_len);
        free(snap);
    }
    berth_state_free(state);
    printf("seeds: %zu records, %zu snapshots in %s\n", SEED_COMMAND_COUNT, 2 * (SEED_COMMAND_COUNT + 1), argv[1]);
    return 0;
}
