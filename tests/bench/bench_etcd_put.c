/* bench_etcd_put.c — etcd's own single-key put throughput over its v3 JSON
 * gateway, the yardstick for berth on etcd (issue 6, "Speed").
 *
 * Owns one measurement: N client threads, each with its own libcurl handle
 * (one kept-alive HTTP connection, as berthd's), each doing one PUT of a
 * fresh key at a time for --seconds after --warmup-seconds. Every put is a
 * durable raft commit on a quorum, as each berth batch is, so the two are
 * compared over the same gateway, the same members and the same fsyncs.
 * Latency per put in 10 µs buckets. Output: one line "RESULT key=value …"
 * that bench_etcd.sh parses; a failed put is counted and the first printed. */
#include <assert.h>
#include <curl/curl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CLIENTS_MAX 1024
#define SECONDS_MAX 3600
#define VALUE_BYTES_MAX 65536
#define URL_LEN_MAX 512
#define BODY_LEN_MAX (4 * VALUE_BYTES_MAX / 3 + 1024)
#define BUCKET_US 10
#define BUCKETS 100000                  /* 1 s of 10 µs buckets; above: the last */
#define ERROR_TEXT_MAX 256

typedef struct options {
    char url[URL_LEN_MAX];
    uint32_t clients;
    uint32_t seconds;
    uint32_t warmup_seconds;
    uint32_t value_bytes;
} options;

typedef struct client {
    pthread_t thread;
    uint32_t id;
    const options *opt;
    uint64_t puts;                      /* in the measured window */
    uint64_t errors;
    uint32_t *hist;                     /* BUCKETS, owned */
    char first_error[ERROR_TEXT_MAX];
} client;

static atomic_int phase;                /* 0 warmup, 1 measuring, 2 done */

static uint64_t mono_us(void) {
    struct timespec ts;
    int rc = clock_gettime(CLOCK_MONOTONIC, &ts);
    assert(rc == 0);
    (void)rc;
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void die(const char *what) {
    fprintf(stderr, "bench_etcd_put: ERR %s\n", what);
    exit(2);
}

static uint32_t parse_u32(const char *v, uint32_t lo, uint32_t hi, const char *flag) {
    char *end = NULL;
    unsigned long n = strtoul(v, &end, 10);
    if (end == v || *end != '\0' || n < lo || n > hi) {
        fprintf(stderr, "bench_etcd_put: ERR %s wants %u..%u\n", flag, lo, hi);
        exit(2);
    }
    return (uint32_t)n;
}

static void parse(int argc, char **argv, options *opt) {
    memset(opt, 0, sizeof *opt);
    snprintf(opt->url, sizeof opt->url, "http://127.0.0.1:2379");
    opt->clients = 50;
    opt->seconds = 5;
    opt->warmup_seconds = 1;
    opt->value_bytes = 256;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *flag = argv[i], *v = argv[i + 1];
        if (strcmp(flag, "--endpoint") == 0) {
            if (strlen(v) >= sizeof opt->url) die("--endpoint too long");
            snprintf(opt->url, sizeof opt->url, "%s", v);
        } else if (strcmp(flag, "--clients") == 0) opt->clients = parse_u32(v, 1, CLIENTS_MAX, flag);
        else if (strcmp(flag, "--seconds") == 0) opt->seconds = parse_u32(v, 1, SECONDS_MAX, flag);
        else if (strcmp(flag, "--warmup-seconds") == 0) opt->warmup_seconds = parse_u32(v, 0, SECONDS_MAX, flag);
        else if (strcmp(flag, "--value-bytes") == 0) opt->value_bytes = parse_u32(v, 1, VALUE_BYTES_MAX, flag);
        else die("usage: bench_etcd_put [--endpoint URL] [--clients N] [--seconds S] [--warmup-seconds S] [--value-bytes B]");
    }
    if (argc % 2 != 1) die("every flag takes a value");
}

static size_t discard(char *data, size_t size, size_t nmemb, void *arg) {
    char *seen = arg;   /* keep the start of an answer for an error message */
    if (seen[0] == '\0') {
        size_t n = size * nmemb < ERROR_TEXT_MAX - 1 ? size * nmemb : ERROR_TEXT_MAX - 1;
        memcpy(seen, data, n);
        seen[n] = '\0';
    }
    return size * nmemb;
}

/* One PUT of key "/bench/put/<client>/<n>". 0, or -1 with why. */
static int put_once(CURL *curl, const char *url, client *c, uint64_t n, const char *value_b64,
                    char *body, char *answer) {
    char key[64], key_b64[96];
    int klen = snprintf(key, sizeof key, "/bench/put/%u/%llu", c->id, (unsigned long long)n);
    assert(klen > 0 && (size_t)klen < sizeof key);
    EVP_EncodeBlock((unsigned char *)key_b64, (const unsigned char *)key, klen);
    int blen = snprintf(body, BODY_LEN_MAX, "{\"key\":\"%s\",\"value\":\"%s\"}", key_b64, value_b64);
    assert(blen > 0 && blen < BODY_LEN_MAX);
    answer[0] = '\0';
    CURLcode rc = curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    if (rc == CURLE_OK) rc = curl_easy_perform(curl);
    long status = 0;
    if (rc == CURLE_OK) rc = curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (rc != CURLE_OK || status != 200 || strstr(answer, "\"header\"") == NULL) {
        if (c->first_error[0] == '\0') {
            snprintf(c->first_error, sizeof c->first_error, "%s (HTTP %ld) %s", curl_easy_strerror(rc), status, answer);
        }
        return -1;
    }
    return 0;
}

static void *client_main(void *arg) {
    client *c = arg;
    const options *opt = c->opt;
    CURL *curl = curl_easy_init();
    char *value = malloc(opt->value_bytes);
    char *value_b64 = malloc(4 * (opt->value_bytes / 3 + 1) + 1);
    char *body = malloc(BODY_LEN_MAX);
    char answer[ERROR_TEXT_MAX];
    if (curl == NULL || value == NULL || value_b64 == NULL || body == NULL) die("out of memory");
    memset(value, 'v', opt->value_bytes);
    EVP_EncodeBlock((unsigned char *)value_b64, (const unsigned char *)value, (int)opt->value_bytes);
    char url[URL_LEN_MAX + 16];
    snprintf(url, sizeof url, "%s/v3/kv/put", opt->url);
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (headers == NULL) die("out of memory");
    CURLcode rc = curl_easy_setopt(curl, CURLOPT_URL, url);
    if (rc == CURLE_OK) rc = curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    if (rc == CURLE_OK) rc = curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
    if (rc == CURLE_OK) rc = curl_easy_setopt(curl, CURLOPT_WRITEDATA, answer);
    if (rc == CURLE_OK) rc = curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    if (rc == CURLE_OK) rc = curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
    if (rc != CURLE_OK) die("curl_easy_setopt failed");
    for (uint64_t n = 0; atomic_load(&phase) != 2; n++) {
        uint64_t t0 = mono_us();
        int bad = put_once(curl, opt->url, c, n, value_b64, body, answer);
        uint64_t us = mono_us() - t0;
        if (atomic_load(&phase) != 1) continue;
        if (bad) {
            c->errors++;
            continue;
        }
        c->puts++;
        uint64_t b = us / BUCKET_US;
        c->hist[b < BUCKETS ? b : BUCKETS - 1]++;
    }
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    free(body);
    free(value_b64);
    free(value);
    return NULL;
}

static uint64_t percentile_us(const uint64_t *hist, uint64_t total, double fraction) {
    uint64_t target = (uint64_t)(fraction * (double)total + 0.999999), seen = 0;
    for (uint32_t b = 0; b < BUCKETS; b++) {
        seen += hist[b];
        if (seen >= target && seen > 0) return (uint64_t)(b + 1) * BUCKET_US;
    }
    return (uint64_t)BUCKETS * BUCKET_US;
}

int main(int argc, char **argv) {
    options opt;
    parse(argc, argv, &opt);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) die("curl_global_init failed");
    client *clients = calloc(opt.clients, sizeof *clients);
    uint64_t *merged = calloc(BUCKETS, sizeof *merged);
    if (clients == NULL || merged == NULL) die("out of memory");
    for (uint32_t i = 0; i < opt.clients; i++) {
        clients[i].id = i;
        clients[i].opt = &opt;
        clients[i].hist = calloc(BUCKETS, sizeof *clients[i].hist);
        if (clients[i].hist == NULL) die("out of memory");
        if (pthread_create(&clients[i].thread, NULL, client_main, &clients[i]) != 0) die("pthread_create");
    }
    struct timespec warm = { (time_t)opt.warmup_seconds, 0 };
    nanosleep(&warm, NULL);
    uint64_t t0 = mono_us();
    atomic_store(&phase, 1);
    struct timespec run = { (time_t)opt.seconds, 0 };
    nanosleep(&run, NULL);
    atomic_store(&phase, 2);
    double seconds = (double)(mono_us() - t0) / 1e6;
    uint64_t puts = 0, errors = 0;
    const char *first_error = NULL;
    for (uint32_t i = 0; i < opt.clients; i++) {
        if (pthread_join(clients[i].thread, NULL) != 0) die("pthread_join");
        puts += clients[i].puts;
        errors += clients[i].errors;
        if (first_error == NULL && clients[i].first_error[0] != '\0') first_error = clients[i].first_error;
        for (uint32_t b = 0; b < BUCKETS; b++) merged[b] += clients[i].hist[b];
        free(clients[i].hist);
    }
    printf("RESULT name=etcd_put clients=%u value_bytes=%u puts=%llu seconds=%.3f puts_per_s=%.0f "
           "p50_us=%llu p99_us=%llu errors=%llu\n",
           opt.clients, opt.value_bytes, (unsigned long long)puts, seconds, (double)puts / seconds,
           (unsigned long long)percentile_us(merged, puts, 0.50),
           (unsigned long long)percentile_us(merged, puts, 0.99), (unsigned long long)errors);
    if (first_error != NULL) printf("FIRST_ERROR %s\n", first_error);
    free(merged);
    free(clients);
    curl_global_cleanup();
    return errors == 0 ? 0 : 1;
}
