/* journal_speed.c — owns the journal module's speed figures: encode, decode,
 * hash check, durable appends at batch 1, 64 and 1024 (64 and 1024 also
 * with the history index: an instance and two of 10,000 workers per record,
 * as a distributed DEPLOY indexes), and cursor scans.
 *
 * A program, not a test: it prints figures and asserts only correctness
 * (every call succeeds, every decode agrees), never a time. Records are
 * ~200-byte distributed DEPLOYs like the ones berthd journals. Usage:
 *   journal_speed [records]    (default 1000000 for the codec figures)
 * The data directory is made under mkdtemp in /tmp and removed after. */
#define _GNU_SOURCE
#include <assert.h>
#include <stdbool.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "journal.h"

enum {
    text_len_max = 256,
    record_bytes_max = 512,
    records_default = 1000000,
    records_max = 100000000,
    sample_count = 1024            /* distinct encoded records cycled by the codec loops */
};

typedef struct sample {
    char command[text_len_max];
    char reqid[text_len_max];
    char names[3][32];          /* instance, main worker, subordinate */
    berth_str workers[2];
    berth_touched touched;
    berth_record rec;
} sample;

static double now_s(void) {
    struct timespec t;
    int rc = clock_gettime(CLOCK_MONOTONIC, &t);
    assert(rc == 0);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void sample_make(sample *s, uint64_t seq) {
    memset(s, 0, sizeof(*s));
    uint64_t w = (seq * 7919) % 10000;
    int n = snprintf(s->command, sizeof(s->command),
                     "DEPLOY inst-%08" PRIu64 " MODEL meta-llama/Llama-3.1-70B-Instruct BACKEND vllm"
                     " ON w%05" PRIu64 ":0,1,2,3 w%05" PRIu64 ":0,1,2,3", seq, w, (w + 1) % 10000);
    assert(n > 0 && n < text_len_max);
    int r = snprintf(s->reqid, sizeof(s->reqid), "req-%" PRIu64, seq);
    assert(r > 0 && r < text_len_max);
    s->rec.version = BERTH_RECORD_VERSION;
    s->rec.seq = seq;
    s->rec.time_ms = 1764150000000ull + seq;
    s->rec.actor = berth_str_make("controller-1", 12);
    s->rec.reqid = berth_str_make(s->reqid, (size_t)r);
    s->rec.command = berth_str_make(s->command, (size_t)n);
    s->rec.code = 0;
    s->rec.sentence = berth_str_make("", 0);
    int a = snprintf(s->names[0], sizeof(s->names[0]), "inst-%08" PRIu64, seq);
    int b = snprintf(s->names[1], sizeof(s->names[1]), "w%05" PRIu64, w);
    int c = snprintf(s->names[2], sizeof(s->names[2]), "w%05" PRIu64, (w + 1) % 10000);
    assert(a > 0 && b > 0 && c > 0);
    s->workers[0] = berth_str_make(s->names[1], (size_t)b);
    s->workers[1] = berth_str_make(s->names[2], (size_t)c);
    s->touched.instance = berth_str_make(s->names[0], (size_t)a);
    s->touched.worker_count = 2;
    s->touched.workers = s->workers;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

static void codec_figures(uint64_t records) {
    static uint8_t bufs[sample_count][record_bytes_max];
    static size_t lens[sample_count];
    sample s;
    size_t total = 0;
    double t0 = now_s();
    for (uint64_t i = 0; i < records; i++) {
        sample_make(&s, 1 + i);
        size_t len = berth_record_encode(&s.rec, bufs[i % sample_count], record_bytes_max);
        assert(len > 0);
        lens[i % sample_count] = len;
        total += len;
    }
    double t1 = now_s();
    printf("record bytes (mean)        %8.1f\n", (double)total / (double)records);
    printf("encode+hash (incl. text)   %8.2f M records/s\n", (double)records / (t1 - t0) / 1e6);

    uint64_t seq_sum = 0;
    t0 = now_s();
    for (uint64_t i = 0; i < records; i++) {
        berth_record out;
        berth_jerr err = berth_record_decode(bufs[i % sample_count], lens[i % sample_count], &out,
                                             NULL, 0);
        assert(err == BERTH_J_OK);
        seq_sum += out.seq;
    }
    t1 = now_s();
    printf("decode                     %8.2f M records/s\n", (double)records / (t1 - t0) / 1e6);
    assert(seq_sum > 0);

    uint64_t good = 0;
    t0 = now_s();
    for (uint64_t i = 0; i < records; i++) {
        good += berth_record_hash_ok(bufs[i % sample_count], lens[i % sample_count]);
    }
    t1 = now_s();
    assert(good == records);
    printf("hash check (SHA-256)       %8.2f M records/s\n", (double)records / (t1 - t0) / 1e6);
}

/* Durable appends of txns batches; with_history: each record also indexes
 * its instance and two workers, as a distributed DEPLOY does. */
static uint64_t append_figure(berth_journal *j, uint64_t head, size_t batch, uint32_t txns,
                              bool with_history) {
    sample *samples = calloc(batch, sizeof(*samples));
    berth_record *recs = calloc(batch, sizeof(*recs));
    berth_touched *touched = calloc(batch, sizeof(*touched));
    assert(samples != NULL && recs != NULL && touched != NULL);
    double busy = 0;
    for (uint32_t t = 0; t < txns; t++) {
        for (size_t i = 0; i < batch; i++) {
            sample_make(&samples[i], head + 1 + i);
            recs[i] = samples[i].rec;
            touched[i] = samples[i].touched;
        }
        double t0 = now_s();
        berth_jerr err = berth_journal_append(j, recs, with_history ? touched : NULL, batch);
        busy += now_s() - t0;
        if (err != BERTH_J_OK) {
            fprintf(stderr, "append failed: %s\n", berth_jerr_name(err));
            exit(1);
        }
        head += batch;
    }
    printf("durable append batch %-5zu %8.0f records/s (%u commits, %.3f ms each)%s\n", batch,
           (double)batch * txns / busy, txns, busy / txns * 1e3,
           with_history ? ", history index on" : "");
    free(touched);
    free(recs);
    free(samples);
    return head;
}

static void scan_figures(berth_journal *j, uint64_t head) {
    berth_journal_reader *r;
    berth_jerr err = berth_journal_reader_open(j, &r);
    assert(err == BERTH_J_OK);
    berth_journal_cursor *c;
    uint64_t seq, count = 0;
    const uint8_t *raw;
    size_t raw_len;
    double t0 = now_s();
    err = berth_journal_cursor_open(r, 1, &c);
    assert(err == BERTH_J_OK);
    while (berth_journal_cursor_next_raw(c, &seq, &raw, &raw_len) == BERTH_J_OK) count++;
    berth_journal_cursor_close(c);
    double t1 = now_s();
    assert(count == head);
    printf("cursor scan, raw           %8.2f M records/s (%" PRIu64 " records)\n",
           (double)count / (t1 - t0) / 1e6, count);
    count = 0;
    t0 = now_s();
    err = berth_journal_cursor_open(r, 1, &c);
    assert(err == BERTH_J_OK);
    berth_record rec;
    while (berth_journal_cursor_next(c, &rec, NULL, NULL) == BERTH_J_OK) count++;
    berth_journal_cursor_close(c);
    t1 = now_s();
    assert(count == head);
    printf("cursor scan + decode       %8.2f M records/s\n", (double)count / (t1 - t0) / 1e6);
    berth_journal_reader_close(r);
}

int main(int argc, char **argv) {
    uint64_t records = records_default;
    if (argc > 1) {
        records = strtoull(argv[1], NULL, 10);
        if (records == 0 || records > records_max) {
            fprintf(stderr, "ERR records must be 1..%d\n", records_max);
            return 2;
        }
    }
    printf("journal_speed: %" PRIu64 " records for the codec figures, one thread\n", records);
    codec_figures(records);

    char root[] = "/tmp/berth-journal-speed-XXXXXX";
    if (mkdtemp(root) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    char dir[sizeof(root) + 16];
    snprintf(dir, sizeof(dir), "%s/data", root);
    berth_journal *j = NULL;
    char err[256];
    berth_jerr rc = berth_journal_open_lmdb(&j, dir, NULL, err, sizeof(err));
    if (rc != BERTH_J_OK) {
        fprintf(stderr, "open: %s %s\n", berth_jerr_name(rc), err);
        return 1;
    }
    uint64_t head = 0;
    head = append_figure(j, head, 1, 300, false);
    head = append_figure(j, head, 64, 300, false);
    head = append_figure(j, head, 1024, 300, false);
    head = append_figure(j, head, 64, 300, true);
    head = append_figure(j, head, 1024, 300, true);
    scan_figures(j, head);
    berth_journal_sizes sizes;
    rc = berth_journal_size(j, &sizes);
    assert(rc == BERTH_J_OK);
    printf("store: %" PRIu64 " records, %.1f MiB on disk, map %.1f MiB\n", head,
           (double)sizes.disk_bytes / (1 << 20), (double)sizes.map_bytes / (1 << 20));
    berth_journal_close(j);
    return nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : 1;
}
