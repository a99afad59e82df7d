/* clog_sync_fail.c — a checkpoint of the commit log frees its file only once
 * LMDB holds the frames durably, even when the sync that should prove it
 * fails on a retry.
 *
 * Run under disk_shim (clog_sync_fail.sh) with BERTH_SHIM_CTL: each data-file
 * sync is slowed so a thread can fail exactly the one it picks. The sealed
 * file's checkpoint first fails its journal sync with ENOSPC (FULL: the file
 * stays sealed, as it must). berthd retries it with nothing left to move, so
 * the journal's sync rewrites a meta page; that commit's own sync then fails
 * with EIO. Before session 22 the retry returned OK on a failed sync, the
 * file was freed, the next seal made it active, new frames overwrote
 * acknowledged ones, and after a power loss those were in neither LMDB nor
 * the log. "run" prints the highest seq it acknowledged on stdout; the OS
 * crash is the script's copy of what the shim's disk holds; "recover DIR
 * SEQ" opens that image, and must find every acknowledged seq.
 *
 *   clog_sync_fail run DIR        (under LD_PRELOAD=disk_shim)
 *   clog_sync_fail recover DIR SEQ */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "commit_log.h"
#include "journal.h"

enum { batch_records = 10, text_len_max = 64, delay_ms = 400, poll_us = 2000, arm_wait_ms = 30000 };

static const char *ctl_dir;

static void die(const char *what, berth_jerr e, const char *err) {
    fprintf(stderr, "clog_sync_fail: %s: %s %s\n", what, berth_jerr_name(e), err != NULL ? err : "");
    exit(1);
}

static int syncs_started(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/syncs", ctl_dir);
    FILE *f = fopen(path, "r");
    if (f == NULL) return 0;
    int n = 0, c;
    while ((c = fgetc(f)) != EOF) n += c == '\n';
    fclose(f);
    return n;
}

/* Written aside and renamed into place: the shim reads an empty file as EIO,
 * and a file being written is empty for a moment (lib.sh's shim_arm). */
static void ctl_put(const char *name, const char *text) {
    char path[512], tmp[520];
    snprintf(path, sizeof path, "%s/%s", ctl_dir, name);
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", ctl_dir, name);
    FILE *f = fopen(tmp, "w");
    if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0 || rename(tmp, path) != 0) {
        fprintf(stderr, "clog_sync_fail: cannot write %s: %s\n", path, strerror(errno));
        exit(1);
    }
}

/* Fail the nth data-file sync from now with errno_text: a thread waits for
 * it to start (the shim notes it, then sleeps delay_ms) and arms it. */
typedef struct armer {
    pthread_t thread;
    int target;
    const char *errno_text;
} armer;

static void *armer_main(void *arg) {
    armer *a = arg;
    for (int waited_us = 0; syncs_started() < a->target; waited_us += poll_us) {
        if (waited_us > arm_wait_ms * 1000) {
            fprintf(stderr, "clog_sync_fail: sync %d never started (the syncs a checkpoint makes changed?)\n",
                    a->target);
            exit(1);
        }
        usleep(poll_us);
    }
    ctl_put("fail.data", a->errno_text);
    return NULL;
}

static void arm(armer *a, int nth, const char *errno_text) {
    a->target = syncs_started() + nth;
    a->errno_text = errno_text;
    if (pthread_create(&a->thread, NULL, armer_main, a) != 0) {
        fprintf(stderr, "clog_sync_fail: cannot start a thread\n");
        exit(1);
    }
}

/* Appends seqs first..first+n-1; returns the last seq if acknowledged, else 0. */
static uint64_t append(berth_clog *log, uint64_t first) {
    berth_record r[batch_records];
    static char text[batch_records][text_len_max];
    for (size_t i = 0; i < batch_records; i++) {
        memset(&r[i], 0, sizeof r[i]);
        r[i].seq = first + i;
        r[i].time_ms = 1700000000000ull + first + i;
        snprintf(text[i], sizeof text[i], "WORKER.ADD w%" PRIu64 " GPUS 8", first + i);
        r[i].command = berth_str_make(text[i], strlen(text[i]));
        r[i].actor = berth_str_make("", 0);
        r[i].reqid = berth_str_make("", 0);
        r[i].sentence = berth_str_make("ok", 2);
    }
    berth_jerr e = berth_clog_append(log, r, NULL, batch_records);
    fprintf(stderr, "append %" PRIu64 "..%" PRIu64 ": %s\n", first, first + batch_records - 1, berth_jerr_name(e));
    return e == BERTH_J_OK ? first + batch_records - 1 : 0;
}

static berth_jerr checkpoint_sealed(berth_clog *log, berth_journal *j, armer *a, const char *what) {
    char err[512] = "";
    uint64_t moved = 0;
    berth_jerr e = berth_clog_checkpoint_sealed(log, j, &moved, err, sizeof err);
    if (pthread_join(a->thread, NULL) != 0) exit(1);
    fprintf(stderr, "%s: %s %s (moved %" PRIu64 ")\n", what, berth_jerr_name(e), err, moved);
    return e;
}

static int run(berth_journal *j, berth_clog *log) {
    uint64_t acked = append(log, 1);
    if (acked == 0 || !berth_clog_seal(log)) die("the first frames and their seal", BERTH_J_IO, NULL);
    char delay[16];
    snprintf(delay, sizeof delay, "%d", delay_ms);
    ctl_put("delay_ms.data", delay);
    armer a;
    /* The append's commit syncs (1st); the journal's sync (2nd) has no room. */
    arm(&a, 2, "28");
    berth_jerr e = checkpoint_sealed(log, j, &a, "checkpoint of the sealed file");
    if (e != BERTH_J_FULL) die("the first checkpoint should be FULL", e, NULL);
    /* berthd's retry, nothing left to move: the meta page rewrite's commit
     * sync (1st) succeeds, the meta sync (2nd) fails. */
    arm(&a, 2, "5");
    e = checkpoint_sealed(log, j, &a, "its retry");
    char path[512];
    snprintf(path, sizeof path, "%s/fail.data", ctl_dir);
    if (access(path, F_OK) == 0) {
        fprintf(stderr, "clog_sync_fail: the armed sync failure was never used: nothing was tested\n");
        exit(1);
    }
    if (e != BERTH_J_IO) {
        uint64_t head = 0, durable = 0;
        uint8_t hash[BERTH_HASH_LEN];
        (void)berth_journal_head(j, &head, hash);
        (void)berth_journal_durable(j, &durable);
        fprintf(stderr, "clog_sync_fail: the retry said %s with the journal durable to %" PRIu64 " of %" PRIu64
                "; the sealed file must stay sealed\n", berth_jerr_name(e), durable, head);
        /* Go on all the same: what a power loss then costs is the finding. */
    }
    snprintf(path, sizeof path, "%s/delay_ms.data", ctl_dir);
    (void)unlink(path);
    /* berthd goes on: frames, a seal (of a freed file, if the retry said OK),
     * frames. Each acknowledged one must survive the power loss below. */
    uint64_t last = append(log, 11);
    acked = last != 0 ? last : acked;
    fprintf(stderr, "seal: %s\n", berth_clog_seal(log) ? "a file is sealed" : "nothing to seal");
    last = last != 0 ? append(log, 21) : 0;
    acked = last != 0 ? last : acked;
    printf("%" PRIu64 "\n", acked);
    fflush(stdout);
    _exit(0);   /* the power loss: the script keeps only what the shim's disk holds */
}

int main(int argc, char **argv) {
    if (argc < 3 || (strcmp(argv[1], "recover") == 0 && argc != 4)) {
        fprintf(stderr, "usage: clog_sync_fail run DIR | recover DIR SEQ\n");
        return 2;
    }
    const char *dir = argv[2];
    ctl_dir = getenv("BERTH_SHIM_CTL");
    bool recover = strcmp(argv[1], "recover") == 0;
    if (!recover && ctl_dir == NULL) {
        fprintf(stderr, "clog_sync_fail: run needs BERTH_SHIM_CTL (disk_shim)\n");
        return 2;
    }
    char err[512] = "";
    berth_journal_options o = { .defer_meta_sync = true };
    berth_journal *j = NULL;
    berth_jerr e = berth_journal_open_lmdb(&j, dir, &o, err, sizeof err);
    if (e != BERTH_J_OK) die("open the journal", e, err);
    berth_clog *log = NULL;
    e = berth_clog_open(&log, dir, 1u << 20, err, sizeof err);
    if (e != BERTH_J_OK) die("open the commit log", e, err);
    uint64_t moved = 0;
    e = berth_clog_checkpoint(log, j, &moved, err, sizeof err);
    if (e != BERTH_J_OK) die("the full checkpoint at open", e, err);
    if (!recover) return run(j, log);
    uint64_t want = strtoull(argv[3], NULL, 10), head = 0;
    uint8_t hash[BERTH_HASH_LEN];
    e = berth_journal_head(j, &head, hash);
    if (e != BERTH_J_OK) die("the head", e, NULL);
    fprintf(stderr, "after the power loss: head %" PRIu64 ", acknowledged up to %" PRIu64 "\n", head, want);
    if (head < want) {
        fprintf(stderr, "clog_sync_fail: acknowledged seqs %" PRIu64 "..%" PRIu64 " are lost\n", head + 1, want);
        return 1;
    }
    berth_clog_close(log);
    berth_journal_close(j);
    return 0;
}
