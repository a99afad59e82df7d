/* cli_timeline.c — `berth timeline`: the journal as a picture (SVG).
 *
 * One row per worker (sorted by name), one bar per instance from its DEPLOY
 * to its RELEASE drawn on every worker of its placement, exclusive holds in
 * a distinct thick outline, refusals as ticks on the row of the worker that
 * refused (a refused DEPLOY lists several: only one of them refused), and a
 * legend. The x axis is the record seq (the journal's
 * own clock: deterministic, and gaps in wall time do not squash the
 * picture); axis labels also show each tick's wall time from its record.
 *
 * At 1,000 workers the rows are cut into groups (default 50 rows), each
 * with its own axis header, in one tall SVG: wherever a reader has scrolled
 * to, an axis is on screen. Coordinates are integer hundredths of a pixel,
 * so the same journal renders to the same bytes.
 *
 * Owns: the model it collects while replaying the range (a string pool,
 * worker rows, bars, ticks; all freed at the end) and the SVG writer. */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_feed.h"

#define TL_LABEL_W 220u                 /* px: worker names column */
#define TL_CHART_W 1400u                /* px: the seq axis */
#define TL_ROW_PAD 2u                   /* px above and below a row's lanes */
#define TL_LANE_H 10u                   /* px per lane: instances side by side on a worker */
#define TL_BAR_H 9u                     /* px: bar height inside a lane */
#define TL_LANES_MAX 64u                /* lanes in one row; more overlap the last */
#define TL_GROUP_GAP 8u                 /* px between groups */
#define TL_GROUP_HEAD_H 40u             /* px: a group's title and axis */
#define TL_LEGEND_H 64u                 /* px */
#define TL_MARGIN 12u                   /* px */
#define TL_AXIS_TICKS 10u               /* intervals on each axis */
#define TL_ROWS_PER_GROUP_DEFAULT 50u
#define TL_ROWS_PER_GROUP_MAX 100000u
#define TL_BARS_MAX (1u << 19)          /* instances in one picture: beyond, no viewer copes; narrow the range */
#define TL_TICKS_MAX (1u << 19)         /* refusal ticks in one picture */
#define TL_WORKERS_MAX (1u << 22)       /* rows in one picture */
#define TL_POOL_BYTES_MAX (1ull << 32)  /* names kept for titles */
#define TL_BACKENDS_MAX 64u             /* legend entries; more share the last colour */
#define TL_PALETTE_SIZE 8u
#define TL_CLOSED UINT64_MAX            /* name map value: instance released */

static const char *const palette[TL_PALETTE_SIZE] = {
    "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#bab0ac",
};

static const char timeline_usage[] =
    "usage: berth timeline --data DIR --out FILE.svg [--from SEQ] [--to SEQ] [--rows-per-group N]\n"
    "  Draw the journal: a row per worker, a bar per instance from deploy to release on each of\n"
    "  its workers, exclusive holds outlined in red, refusals as black ticks. Rows come in groups\n"
    "  (default 50) each with its own axis, so 1,000 workers stay readable. '-' writes stdout.\n";

typedef struct tl_ref {                 /* a string in the pool */
    uint64_t off;
    uint32_t len;
} tl_ref;

typedef struct tl_bar {
    uint64_t start_seq;
    uint64_t end_seq;                   /* 0: still live at the range's end */
    tl_ref name;
    tl_ref model;
    uint32_t backend;                   /* index into backends */
    bool exclusive;
    uint32_t slot_first;                /* into slots */
    uint32_t slot_count;
} tl_bar;

typedef struct tl_tick {
    uint64_t seq;
    uint32_t worker;
    berth_code code;
} tl_tick;

typedef struct timeline {
    uint64_t from;
    uint64_t to;
    uint32_t rows_per_group;
    char *pool;
    uint64_t pool_len, pool_cap;
    cli_name_map worker_ids;            /* name -> worker id */
    tl_ref *workers;
    uint32_t worker_count, worker_cap;
    uint32_t *row_of;                   /* worker id -> row (after sorting) */
    uint16_t *slot_lane;                /* per slot: its lane in the worker's row */
    uint32_t *lanes;                    /* per worker id: lanes its row needs */
    uint64_t *row_y;                    /* per row: top, px */
    uint64_t *group_y;                  /* per group: top, px; [groups] is the bottom */
    cli_name_map live;                  /* instance name -> bar index, or TL_CLOSED */
    tl_bar *bars;
    uint32_t bar_count, bar_cap;
    uint32_t *slots;                    /* worker ids */
    uint32_t slot_count, slot_cap;
    tl_tick *ticks;
    uint32_t tick_count, tick_cap;
    uint64_t unplaced_refusals;         /* refusals naming no known worker */
    tl_ref backends[TL_BACKENDS_MAX];
    uint32_t backend_count;
    uint64_t axis_seq[TL_AXIS_TICKS + 1];
    uint64_t axis_time_ms[TL_AXIS_TICKS + 1];
} timeline;

/* Grow a dynamic array to hold `need` elements, within `max`. */
static int grow(void **ptr, uint32_t *cap, uint64_t need, size_t elem, uint32_t max) {
    if (need <= *cap) {
        return 0;
    }
    if (need > max) {
        return -1;
    }
    uint64_t cap_new = *cap ? (uint64_t)*cap * 2 : 256;
    cap_new = cap_new > max ? max : cap_new;
    void *p = realloc(*ptr, (size_t)cap_new * elem);
    if (p == NULL) {
        return -1;
    }
    *ptr = p;
    *cap = (uint32_t)cap_new;
    return 0;
}

static int pool_add(timeline *t, berth_str s, tl_ref *ref) {
    if (t->pool_len + s.len > t->pool_cap) {
        uint64_t cap = t->pool_cap ? t->pool_cap * 2 : 65536;
        while (cap < t->pool_len + s.len) {
            cap *= 2;
        }
        if (cap > TL_POOL_BYTES_MAX) {
            return -1;
        }
        char *p = realloc(t->pool, (size_t)cap);
        if (p == NULL) {
            return -1;
        }
        t->pool = p;
        t->pool_cap = cap;
    }
    memcpy(t->pool + t->pool_len, s.ptr, s.len);
    ref->off = t->pool_len;
    ref->len = s.len;
    t->pool_len += s.len;
    return 0;
}

static berth_str pool_str(const timeline *t, tl_ref ref) {
    assert(ref.off + ref.len <= t->pool_len);
    return berth_str_make(t->pool + ref.off, ref.len);
}

/* The worker's id, creating its row when create is set; -1 when unknown
 * (and not created) or out of memory. */
static int64_t worker_id(timeline *t, berth_str name, bool create) {
    uint64_t id = 0;
    if (cli_map_get(&t->worker_ids, name, &id)) {
        return (int64_t)id;
    }
    if (!create) {
        return -1;
    }
    if (grow((void **)&t->workers, &t->worker_cap, (uint64_t)t->worker_count + 1,
             sizeof *t->workers, TL_WORKERS_MAX) != 0 ||
        pool_add(t, name, &t->workers[t->worker_count]) != 0 ||
        cli_map_put(&t->worker_ids, name, t->worker_count) != 0) {
        return -1;
    }
    return (int64_t)t->worker_count++;
}

static uint32_t backend_index(timeline *t, berth_str backend) {
    for (uint32_t i = 0; i < t->backend_count; i++) {
        if (berth_str_eq(pool_str(t, t->backends[i]), backend)) {
            return i;
        }
    }
    if (t->backend_count == TL_BACKENDS_MAX ||
        pool_add(t, backend, &t->backends[t->backend_count]) != 0) {
        return TL_BACKENDS_MAX - 1;   /* past the legend's room: share the last entry */
    }
    return t->backend_count++;
}

/* A bar for a live instance, drawn from start_seq (clipped to the range). */
static int add_bar(timeline *t, const berth_instance *inst, uint64_t start_seq) {
    if (grow((void **)&t->bars, &t->bar_cap, (uint64_t)t->bar_count + 1, sizeof *t->bars,
             TL_BARS_MAX) != 0 ||
        grow((void **)&t->slots, &t->slot_cap, (uint64_t)t->slot_count + inst->slot_count,
             sizeof *t->slots, UINT32_MAX / 2) != 0) {
        return -1;
    }
    tl_bar *bar = &t->bars[t->bar_count];
    memset(bar, 0, sizeof *bar);
    bar->start_seq = start_seq;
    bar->exclusive = inst->exclusive;
    bar->backend = backend_index(t, inst->backend);
    bar->slot_first = t->slot_count;
    if (pool_add(t, inst->name, &bar->name) != 0 || pool_add(t, inst->model, &bar->model) != 0) {
        return -1;
    }
    for (uint32_t i = 0; i < inst->slot_count; i++) {
        int64_t id = worker_id(t, inst->slots[i].worker->name, true);
        if (id < 0) {
            return -1;
        }
        t->slots[t->slot_count++] = (uint32_t)id;
    }
    bar->slot_count = inst->slot_count;
    if (cli_map_put(&t->live, inst->name, t->bar_count) != 0) {
        return -1;
    }
    t->bar_count++;
    return 0;
}

static int add_tick(timeline *t, uint64_t seq, berth_str worker, berth_code code) {
    int64_t id = worker_id(t, worker, false);
    if (id < 0) {
        t->unplaced_refusals++;
        return 0;
    }
    if (grow((void **)&t->ticks, &t->tick_cap, (uint64_t)t->tick_count + 1, sizeof *t->ticks,
             TL_TICKS_MAX) != 0) {
        return -1;
    }
    t->ticks[t->tick_count++] = (tl_tick){ seq, (uint32_t)id, code };
    return 0;
}

/* Rows and bars for everything alive just before the range starts. */
static int seed_from_state(timeline *t, const berth_state *state) {
    size_t wn = berth_state_worker_count(state);
    size_t in = berth_state_instance_count(state);
    const berth_worker **ws = calloc(wn ? wn : 1, sizeof *ws);
    const berth_instance **is = calloc(in ? in : 1, sizeof *is);
    int rc = ws != NULL && is != NULL ? 0 : -1;
    if (rc == 0) {
        size_t n = berth_state_workers_sorted(state, ws, wn);
        assert(n == wn);
        for (size_t i = 0; i < n && rc == 0; i++) {
            rc = worker_id(t, ws[i]->name, true) < 0 ? -1 : 0;
        }
        n = berth_state_instances_sorted(state, is, in);
        assert(n == in);
        for (size_t i = 0; i < n && rc == 0; i++) {
            rc = add_bar(t, is[i], is[i]->deploy_seq);
        }
    }
    free(ws);
    free(is);
    return rc;
}

/* Fold one replayed record (and its recomputed outcome) into the picture. */
static int observe(timeline *t, const berth_state *state, const berth_record *rec,
                   berth_cmd_kind kind, const berth_outcome *out) {
    if (out->code != BERTH_OK) {
        /* A refused DEPLOY touches every worker it lists, but only one of
         * them refused: its row alone gets the tick. EXISTS is the
         * instance's refusal, no worker's. */
        if (kind == BERTH_CMD_DEPLOY) {
            assert(out->refused_by <= out->worker_count);
            if (out->refused_by == 0) {
                t->unplaced_refusals++;
                return 0;
            }
            return add_tick(t, rec->seq, out->workers[out->refused_by - 1], out->code);
        }
        for (uint32_t i = 0; i < out->worker_count; i++) {
            if (add_tick(t, rec->seq, out->workers[i], out->code) != 0) {
                return -1;
            }
        }
        t->unplaced_refusals += out->worker_count == 0 ? 1 : 0;
        return 0;
    }
    if (kind == BERTH_CMD_WORKER_ADD && out->worker_count > 0) {
        return worker_id(t, out->workers[0], true) < 0 ? -1 : 0;
    }
    if (kind == BERTH_CMD_DEPLOY) {
        const berth_instance *inst = berth_state_instance(state, out->instance);
        assert(inst != NULL && inst->deploy_seq == rec->seq);
        return add_bar(t, inst, rec->seq);
    }
    if (kind == BERTH_CMD_RELEASE) {
        uint64_t bar = 0;
        if (cli_map_get(&t->live, out->instance, &bar) && bar != TL_CLOSED) {
            assert(bar < t->bar_count);
            t->bars[bar].end_seq = rec->seq;
            return cli_map_put(&t->live, out->instance, TL_CLOSED);
        }
    }
    return 0;
}

static void note_axis_time(timeline *t, const berth_record *rec) {
    for (uint32_t i = 0; i <= TL_AXIS_TICKS; i++) {
        if (t->axis_seq[i] == rec->seq) {
            t->axis_time_ms[i] = rec->time_ms;
        }
    }
}

/* Fold a batch of the feed into the picture. The picture needs each
 * outcome's code and touched names, never its sentence: apply quietly. */
static int collect_batch(timeline *t, berth_state *state, const cli_feed_batch *batch) {
    static berth_outcome out;
    for (uint32_t i = 0; i < batch->count; i++) {
        const cli_feed_item *item = &batch->items[i];
        char err[CLI_ERR_LEN_MAX] = "";
        if (cli_feed_apply(state, item, true, &out, err, sizeof err) != 0) {
            return cli_fail(CLI_EXIT_FINDING, "CORRUPT", "%s", err);
        }
        note_axis_time(t, &item->rec);
        if (observe(t, state, &item->rec, item->cmd.kind, &out) != 0) {
            return cli_fail(CLI_EXIT_USAGE, "ERR",
                            "the range is too large for one picture: narrow it with --from/--to");
        }
    }
    return CLI_EXIT_OK;
}

static int collect(timeline *t, cli_store *store, berth_state *state) {
    cli_feed_options fo = { t->from, t->to, BERTH_CMD_NONE, berth_str_make("", 0), NULL, NULL };
    cli_feed *feed = NULL;
    int rc = cli_feed_start(&feed, store->reader, &fo);
    if (rc != CLI_EXIT_OK) {
        return rc;
    }
    cli_progress progress;
    cli_progress_start(&progress, "timeline", t->to - t->from + 1);
    while (rc == CLI_EXIT_OK) {
        cli_feed_batch batch;
        char err[CLI_ERR_LEN_MAX] = "";
        int got = cli_feed_next(feed, &batch, err, sizeof err);
        if (got <= 0) {
            rc = got == 0 ? CLI_EXIT_OK : cli_fail(CLI_EXIT_FINDING, "CORRUPT", "%s", err);
            break;
        }
        rc = collect_batch(t, state, &batch);
        cli_progress_update(&progress, batch.items[batch.count - 1].rec.seq - t->from + 1);
    }
    cli_progress_end(&progress);
    cli_feed_stop(feed);
    assert(rc != CLI_EXIT_OK || berth_state_last_seq(state) == t->to);
    return rc;
}

/* ---- rendering --------------------------------------------------------- */

static const timeline *sort_ctx;    /* qsort has no context argument */

static int cmp_worker_ids(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a;
    uint32_t y = *(const uint32_t *)b;
    return berth_str_cmp(pool_str(sort_ctx, sort_ctx->workers[x]),
                         pool_str(sort_ctx, sort_ctx->workers[y]));
}

/* Rows sorted by worker name; row_of maps id -> row, order[] row -> id. */
static int assign_rows(timeline *t, uint32_t **order_out) {
    uint32_t n = t->worker_count;
    uint32_t *order = calloc(n ? n : 1, sizeof *order);
    t->row_of = calloc(n ? n : 1, sizeof *t->row_of);
    if (order == NULL || t->row_of == NULL) {
        free(order);
        return -1;
    }
    for (uint32_t i = 0; i < n; i++) {
        order[i] = i;
    }
    sort_ctx = t;
    qsort(order, n, sizeof *order, cmp_worker_ids);
    sort_ctx = NULL;
    for (uint32_t r = 0; r < n; r++) {
        t->row_of[order[r]] = r;
    }
    *order_out = order;
    return 0;
}

/* x of a seq boundary, in hundredths of a pixel: integers only. */
static uint64_t x_of(const timeline *t, uint64_t seq) {
    uint64_t span = t->to - t->from + 1;
    uint64_t s = seq < t->from ? t->from : (seq > t->to + 1 ? t->to + 1 : seq);
    return (uint64_t)TL_LABEL_W * 100 + (s - t->from) * (uint64_t)TL_CHART_W * 100 / span;
}

static uint64_t group_count(const timeline *t) {
    return (t->worker_count + t->rows_per_group - 1) / t->rows_per_group;
}

static uint64_t row_height(const timeline *t, uint32_t row, const uint32_t *order) {
    return 2 * TL_ROW_PAD + (uint64_t)t->lanes[order[row]] * TL_LANE_H;
}

static uint64_t row_top(const timeline *t, uint32_t row) {
    return t->row_y[row];
}

/* The slot's interval on its worker, for lane packing. */
typedef struct lane_item {
    uint32_t worker;
    uint32_t slot;
    uint64_t start;
    uint64_t end;
} lane_item;

static int cmp_lane_items(const void *a, const void *b) {
    const lane_item *x = a;
    const lane_item *y = b;
    if (x->worker != y->worker) return x->worker < y->worker ? -1 : 1;
    if (x->start != y->start) return x->start < y->start ? -1 : 1;
    return x->slot < y->slot ? -1 : (x->slot > y->slot ? 1 : 0);
}

/* Greedy interval packing per worker: each slot takes the first lane free
 * by its start, so instances side by side on a worker never hide each other. */
static void pack_lanes(timeline *t, lane_item *items, uint32_t n) {
    uint64_t lane_end[TL_LANES_MAX];
    uint32_t current = UINT32_MAX;
    for (uint32_t i = 0; i < n; i++) {
        if (items[i].worker != current) {
            current = items[i].worker;
            memset(lane_end, 0, sizeof lane_end);
        }
        uint32_t lane = 0;
        while (lane + 1 < TL_LANES_MAX && lane_end[lane] > items[i].start) {
            lane++;
        }
        lane_end[lane] = items[i].end;
        t->slot_lane[items[i].slot] = (uint16_t)lane;
        if (t->lanes[current] < lane + 1) {
            t->lanes[current] = lane + 1;
        }
    }
}

static int assign_lanes(timeline *t) {
    lane_item *items = calloc(t->slot_count ? t->slot_count : 1, sizeof *items);
    t->slot_lane = calloc(t->slot_count ? t->slot_count : 1, sizeof *t->slot_lane);
    t->lanes = calloc(t->worker_count ? t->worker_count : 1, sizeof *t->lanes);
    if (items == NULL || t->slot_lane == NULL || t->lanes == NULL) {
        free(items);
        return -1;
    }
    uint32_t n = 0;
    for (uint32_t b = 0; b < t->bar_count; b++) {
        const tl_bar *bar = &t->bars[b];
        for (uint32_t i = 0; i < bar->slot_count; i++) {
            uint32_t slot = bar->slot_first + i;
            items[n++] = (lane_item){ t->slots[slot], slot, bar->start_seq,
                                      bar->end_seq ? bar->end_seq : t->to + 1 };
        }
    }
    assert(n == t->slot_count);
    qsort(items, n, sizeof *items, cmp_lane_items);
    for (uint32_t w = 0; w < t->worker_count; w++) {
        t->lanes[w] = 1;
    }
    pack_lanes(t, items, n);
    free(items);
    return 0;
}

/* Tops of every group and row, in px: rows grow with their lanes. */
static int layout(timeline *t, const uint32_t *order) {
    uint64_t groups = group_count(t);
    t->row_y = calloc(t->worker_count ? t->worker_count : 1, sizeof *t->row_y);
    t->group_y = calloc(groups + 1, sizeof *t->group_y);
    if (t->row_y == NULL || t->group_y == NULL) {
        return -1;
    }
    uint64_t y = TL_LEGEND_H;
    for (uint64_t g = 0; g < groups; g++) {
        t->group_y[g] = y;
        y += TL_GROUP_HEAD_H;
        uint32_t first = (uint32_t)g * t->rows_per_group;
        for (uint32_t r = first; r < t->worker_count && r < first + t->rows_per_group; r++) {
            t->row_y[r] = y;
            y += row_height(t, r, order);
        }
        y += TL_GROUP_GAP;
    }
    t->group_y[groups] = y;
    return 0;
}

static void put_px(FILE *f, uint64_t hundredths) {
    fprintf(f, "%" PRIu64 ".%02" PRIu64, hundredths / 100, hundredths % 100);
}

static void render_legend(FILE *f, const timeline *t, uint64_t live_at_end) {
    fprintf(f, "<g class=\"legend\">\n<text x=\"%u\" y=\"18\" font-size=\"13\" font-weight=\"bold\">"
               "berth timeline: seq %" PRIu64 " to %" PRIu64 ", %" PRIu32 " workers, %" PRIu32
               " instances (%" PRIu64 " live at the end), %" PRIu32 " refusal ticks</text>\n",
            TL_MARGIN, t->from, t->to, t->worker_count, t->bar_count, live_at_end, t->tick_count);
    uint32_t x = TL_MARGIN;
    for (uint32_t i = 0; i < t->backend_count; i++) {
        berth_str b = pool_str(t, t->backends[i]);
        fprintf(f, "<rect x=\"%u\" y=\"30\" width=\"14\" height=\"10\" fill=\"%s\"/>"
                   "<text x=\"%u\" y=\"39\">backend ", x, palette[i % TL_PALETTE_SIZE], x + 18);
        cli_xml_bstr(f, b);
        fputs("</text>\n", f);
        x += 40 + 8 * (b.len + 8);
    }
    fprintf(f, "<rect x=\"%u\" y=\"30\" width=\"14\" height=\"10\" fill=\"#dddddd\" class=\"excl\"/>"
               "<text x=\"%u\" y=\"39\">exclusive hold (red outline)</text>\n", x, x + 18);
    x += 270;
    fprintf(f, "<line x1=\"%u\" y1=\"28\" x2=\"%u\" y2=\"42\" class=\"refusal\"/>"
               "<text x=\"%u\" y=\"39\">refusal</text>\n", x + 7, x + 7, x + 18);
    fprintf(f, "<text x=\"%u\" y=\"56\">x axis: record seq (wall time under each tick); "
               "%" PRIu64 " refusals named no worker row</text>\n</g>\n",
            TL_MARGIN, t->unplaced_refusals);
}

static void render_axis(FILE *f, const timeline *t, uint64_t group, uint32_t first_row,
                        uint32_t rows) {
    uint64_t top = t->group_y[group];
    uint64_t bottom = t->group_y[group + 1] - TL_GROUP_GAP;
    fprintf(f, "<g class=\"group\" id=\"group-%" PRIu64 "\">\n<text x=\"%u\" y=\"%" PRIu64
               "\" font-weight=\"bold\">workers %u to %u</text>\n",
            group, TL_MARGIN, top + 14, first_row + 1, first_row + rows);
    for (uint32_t i = 0; i <= TL_AXIS_TICKS; i++) {
        uint64_t x = x_of(t, t->axis_seq[i] + (i == TL_AXIS_TICKS ? 1 : 0));
        char when[CLI_TIME_TEXT_LEN_MAX];
        cli_format_time(t->axis_time_ms[i], when);
        fputs("<line class=\"grid\" x1=\"", f);
        put_px(f, x);
        fprintf(f, "\" y1=\"%" PRIu64 "\" x2=\"", top + 20);
        put_px(f, x);
        fprintf(f, "\" y2=\"%" PRIu64 "\"/>\n<text class=\"axis\" x=\"", bottom);
        put_px(f, x);
        fprintf(f, "\" y=\"%" PRIu64 "\">%" PRIu64 "</text><text class=\"axis\" x=\"", top + 28,
                t->axis_seq[i]);
        put_px(f, x);
        fprintf(f, "\" y=\"%" PRIu64 "\">%.19s</text>\n", top + 37, when);
    }
    fputs("</g>\n", f);
}

static void render_rows(FILE *f, const timeline *t, const uint32_t *order) {
    fputs("<g class=\"rows\">\n", f);
    for (uint32_t r = 0; r < t->worker_count; r++) {
        uint64_t y = row_top(t, r);
        if (r % 2 == 1) {
            fprintf(f, "<rect class=\"alt\" x=\"%u\" y=\"%" PRIu64 "\" width=\"%u\" height=\"%" PRIu64 "\"/>\n",
                    TL_MARGIN, y, TL_LABEL_W + TL_CHART_W - TL_MARGIN, row_height(t, r, order));
        }
        fprintf(f, "<text x=\"%u\" y=\"%" PRIu64 "\">", TL_MARGIN, y + TL_ROW_PAD + TL_LANE_H - 1);
        cli_xml_bstr(f, pool_str(t, t->workers[order[r]]));
        fputs("</text>\n", f);
    }
    fputs("</g>\n", f);
}

static void render_bar(FILE *f, const timeline *t, const tl_bar *bar) {
    uint64_t x1 = x_of(t, bar->start_seq);
    uint64_t x2 = x_of(t, bar->end_seq ? bar->end_seq : t->to + 1);
    uint64_t w = x2 > x1 + 100 ? x2 - x1 : 100;   /* at least a pixel: every bar is seen */
    fputs("<g class=\"bar\" data-instance=\"", f);
    cli_xml_bstr(f, pool_str(t, bar->name));
    fputs("\"><title>", f);
    cli_xml_bstr(f, pool_str(t, bar->name));
    fputs(" model ", f);
    cli_xml_bstr(f, pool_str(t, bar->model));
    fputs(" backend ", f);
    cli_xml_bstr(f, pool_str(t, t->backends[bar->backend]));
    fprintf(f, ", deployed at seq %" PRIu64 ", ", bar->start_seq);
    if (bar->end_seq) {
        fprintf(f, "released at seq %" PRIu64, bar->end_seq);
    } else {
        fputs("live at the end", f);
    }
    fprintf(f, "%s</title>\n", bar->exclusive ? ", holds its workers exclusively" : "");
    for (uint32_t i = 0; i < bar->slot_count; i++) {
        uint32_t slot = bar->slot_first + i;
        uint32_t row = t->row_of[t->slots[slot]];
        fprintf(f, "<rect%s x=\"", bar->exclusive ? " class=\"excl\"" : "");
        put_px(f, x1);
        fprintf(f, "\" y=\"%" PRIu64 "\" width=\"",
                row_top(t, row) + TL_ROW_PAD + (uint64_t)t->slot_lane[slot] * TL_LANE_H);
        put_px(f, w);
        fprintf(f, "\" height=\"%u\" fill=\"%s\"/>\n", TL_BAR_H,
                palette[bar->backend % TL_PALETTE_SIZE]);
    }
    fputs("</g>\n", f);
}

static void render_ticks(FILE *f, const timeline *t, const uint32_t *order) {
    fputs("<g class=\"refusals\">\n", f);
    for (uint32_t i = 0; i < t->tick_count; i++) {
        const tl_tick *k = &t->ticks[i];
        uint64_t x = (x_of(t, k->seq) + x_of(t, k->seq + 1)) / 2;
        uint32_t row = t->row_of[k->worker];
        uint64_t y = row_top(t, row);
        fputs("<line class=\"refusal\" x1=\"", f);
        put_px(f, x);
        fprintf(f, "\" y1=\"%" PRIu64 "\" x2=\"", y);
        put_px(f, x);
        fprintf(f, "\" y2=\"%" PRIu64 "\"><title>seq %" PRIu64 " refused by ",
                y + row_height(t, row, order), k->seq);
        cli_xml_bstr(f, pool_str(t, t->workers[k->worker]));
        fprintf(f, ": %s</title></line>\n", berth_code_name(k->code));
    }
    fputs("</g>\n", f);
}

static void render(FILE *f, const timeline *t, const uint32_t *order) {
    uint64_t groups = group_count(t);
    uint64_t height = t->group_y[groups] + TL_MARGIN;
    uint32_t width = TL_LABEL_W + TL_CHART_W + 2 * TL_MARGIN + 120;
    uint64_t live_at_end = 0;
    for (uint32_t i = 0; i < t->bar_count; i++) {
        live_at_end += t->bars[i].end_seq == 0 ? 1 : 0;
    }
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%u\" height=\"%" PRIu64
               "\" viewBox=\"0 0 %u %" PRIu64 "\" font-family=\"monospace\" font-size=\"10\">\n"
               "<title>berth timeline, seq %" PRIu64 " to %" PRIu64 "</title>\n"
               "<style>.excl{stroke:#d62728;stroke-width:2} .refusal{stroke:#000;stroke-width:1.5}"
               " .grid{stroke:#ccc;stroke-width:0.5} .alt{fill:#f3f3f3} .axis{fill:#555;font-size:8px}"
               "</style>\n<rect width=\"100%%\" height=\"100%%\" fill=\"#fff\"/>\n",
            width, height, width, height, t->from, t->to);
    render_legend(f, t, live_at_end);
    render_rows(f, t, order);
    for (uint64_t g = 0; g < groups; g++) {
        uint32_t first = (uint32_t)g * t->rows_per_group;
        uint32_t rows = t->worker_count - first < t->rows_per_group ? t->worker_count - first
                                                                      : t->rows_per_group;
        render_axis(f, t, g, first, rows);
    }
    fputs("<g class=\"bars\">\n", f);
    for (uint32_t i = 0; i < t->bar_count; i++) {
        render_bar(f, t, &t->bars[i]);
    }
    fputs("</g>\n", f);
    render_ticks(f, t, order);
    fputs("</svg>\n", f);
}

static int write_svg(const timeline *t, const char *path, const uint32_t *order) {
    bool to_stdout = strcmp(path, "-") == 0;
    FILE *f = to_stdout ? stdout : fopen(path, "w");
    if (f == NULL) {
        return cli_fail(CLI_EXIT_USAGE, "IO", "cannot write %s: %s", path, strerror(errno));
    }
    render(f, t, order);
    bool failed = ferror(f) != 0;
    if (!to_stdout && fclose(f) != 0) {
        failed = true;
    }
    if (failed) {
        return cli_fail(CLI_EXIT_USAGE, "IO", "could not write all of %s", path);
    }
    return CLI_EXIT_OK;
}

/* ---- command ----------------------------------------------------------- */

typedef struct timeline_opts {
    const char *data;
    const char *out;
    uint64_t from;
    uint64_t to;
    uint64_t rows_per_group;
} timeline_opts;

static int parse_timeline_opts(int argc, char **argv, timeline_opts *o) {
    memset(o, 0, sizeof *o);
    o->from = 1;
    o->to = UINT64_MAX;
    o->rows_per_group = TL_ROWS_PER_GROUP_DEFAULT;
    const char *to_text = NULL;
    bool bad = false;
    for (int i = 1; i < argc && !bad; i++) {
        const char *v = NULL;
        if (cli_flag_value(argc, argv, &i, "--data", &o->data, &bad) ||
            cli_flag_value(argc, argv, &i, "--out", &o->out, &bad)) {
            continue;
        }
        if (cli_flag_value(argc, argv, &i, "--from", &v, &bad)) {
            bad = bad || !cli_parse_seq_flag("--from", v, &o->from);
        } else if (cli_flag_value(argc, argv, &i, "--to", &v, &bad)) {
            bad = bad || !cli_parse_seq_flag("--to", v, &o->to);
            to_text = v;
        } else if (cli_flag_value(argc, argv, &i, "--rows-per-group", &v, &bad)) {
            bad = bad || !cli_parse_seq_flag("--rows-per-group", v, &o->rows_per_group);
        } else {
            fprintf(stderr, "ERR unknown option '%s'\n%s", argv[i], timeline_usage);
            return CLI_EXIT_USAGE;
        }
    }
    if (bad) {
        return CLI_EXIT_USAGE;
    }
    if (o->out == NULL) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "give --out FILE.svg (or --out - for stdout)");
    }
    if (o->rows_per_group == 0 || o->rows_per_group > TL_ROWS_PER_GROUP_MAX) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "--rows-per-group wants 1 to %u", TL_ROWS_PER_GROUP_MAX);
    }
    if (o->to == 0) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "--to %s names no record: seqs start at 1", to_text);
    }
    o->from = o->from == 0 ? 1 : o->from;
    return CLI_EXIT_OK;
}

static void timeline_free(timeline *t) {
    free(t->pool);
    free(t->workers);
    free(t->row_of);
    free(t->slot_lane);
    free(t->lanes);
    free(t->row_y);
    free(t->group_y);
    free(t->bars);
    free(t->slots);
    free(t->ticks);
    if (t->worker_ids.slots != NULL) {
        cli_map_free(&t->worker_ids);
    }
    if (t->live.slots != NULL) {
        cli_map_free(&t->live);
    }
}

static int timeline_setup(timeline *t, const timeline_opts *o, uint64_t head) {
    memset(t, 0, sizeof *t);
    t->from = o->from;
    t->to = o->to < head ? o->to : head;
    t->rows_per_group = (uint32_t)o->rows_per_group;
    if (head == 0) {
        /* Not "no records in seq 1 to 0": nothing was asked amiss. */
        return cli_fail(CLI_EXIT_USAGE, "ERR", "the journal is empty: no records to draw");
    }
    if (t->from > t->to) {
        return cli_fail(CLI_EXIT_USAGE, "ERR", "no records in seq %" PRIu64 " to %" PRIu64
                        " (the journal ends at %" PRIu64 ")", o->from, t->to, head);
    }
    for (uint32_t i = 0; i <= TL_AXIS_TICKS; i++) {
        t->axis_seq[i] = t->from + (t->to - t->from) * i / TL_AXIS_TICKS;
    }
    if (cli_map_init(&t->worker_ids, 1024) != 0 || cli_map_init(&t->live, 1024) != 0) {
        return cli_fail(CLI_EXIT_USAGE, "NOMEM", "out of memory");
    }
    return CLI_EXIT_OK;
}

static int timeline_run(const timeline_opts *o, cli_store *store) {
    static timeline t;
    int rc = timeline_setup(&t, o, store->head_seq);
    berth_state *state = NULL;
    berth_replay_stats stats;
    if (rc == CLI_EXIT_OK) {
        rc = cli_state_at(store, t.from - 1, true, &state, &stats);
    }
    if (rc == CLI_EXIT_OK && seed_from_state(&t, state) != 0) {
        rc = cli_fail(CLI_EXIT_USAGE, "NOMEM", "out of memory reading the state at seq %" PRIu64,
                      t.from - 1);
    }
    if (rc == CLI_EXIT_OK) {
        rc = collect(&t, store, state);
    }
    uint32_t *order = NULL;
    if (rc == CLI_EXIT_OK &&
        (assign_rows(&t, &order) != 0 || assign_lanes(&t) != 0 || layout(&t, order) != 0)) {
        rc = cli_fail(CLI_EXIT_USAGE, "NOMEM", "out of memory sorting rows");
    }
    if (rc == CLI_EXIT_OK) {
        rc = write_svg(&t, o->out, order);
    }
    free(order);
    if (state != NULL) {
        berth_state_free(state);
    }
    timeline_free(&t);
    return rc;
}

/* cli_store_main's shapes for this command's options. */
static int parse_timeline_any(int argc, char **argv, void *opts, const char **data) {
    timeline_opts *o = opts;
    int rc = parse_timeline_opts(argc, argv, o);
    *data = o->data;
    if (rc == CLI_EXIT_OK) {
        rc = cli_out_check("--out", o->out, o->data);   /* never the journal's own files */
    }
    return rc;
}

static int timeline_run_any(const void *opts, cli_store *store) {
    return timeline_run(opts, store);
}

int cli_timeline_main(int argc, char **argv) {
    timeline_opts o;
    return cli_store_main(argc, argv, timeline_usage, &o, parse_timeline_any, timeline_run_any);
}
