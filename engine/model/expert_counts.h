/* expert_counts.h - routing counts per (MoE layer, expert): recorded while serving, kept in a
 * small file across restarts, and the choice of the hot experts (those kept in device memory,
 * gpu.hot_experts; engine/model/hot_experts.h places them) made from them.
 *
 * What: one 64-bit counter per (MoE layer, routed expert), incremented by one for every (token,
 * expert) route a forward computes. The backends feed them from the routes they already have in
 * host memory (ops_moe_set_counts in ops.h): ops_cpu in its ops_moe, ops_cuda from the expert
 * job's host copy of the routes or, on the hot/streaming path, from the routes it brings to the
 * host anyway; nothing is downloaded for the counts alone. A call adds to its row in one pass
 * (a local histogram, then one atomic add per expert it routed to), so counting costs a few
 * nanoseconds per route.
 *
 * The file (ec_save / ec_load): text, so a person can read it:
 *     tandem-expert-counts 1
 *     shape layers 61 moe_layers 58 experts 256 top_k 8 hidden 7168
 *     routes 123456
 *     layer 3 c0 c1 ... c255        (one line per MoE layer, model layer index first)
 *     ...
 *     end 0123456789abcdef          (FNV-1a 64 of every byte before this line)
 * ec_save writes it to a fresh temporary file beside `path` (path.tmp.PID.N, O_EXCL), fsyncs and
 * renames it over `path`: a reader (or a crash) sees the old file or the new one, never a mix,
 * and several concurrent writers (threads, or two processes on one path) each rename a complete
 * file (the last rename wins). ec_load reads the whole file and checks everything (magic,
 * version, the shape against this model's, every line, the checksum) before it adds a single
 * count: a missing file is ERR_NOT_FOUND, a malformed or truncated one ERR_FORMAT, another
 * model's shape ERR_INVAL, each with a message naming the file; the counts are then unchanged.
 *
 * Choice (ec_choose_hot): every (layer, expert) that may be hot has its device bytes; they are
 * taken greedily by recorded routes per byte, most first (equal sizes: most routed first),
 * ties in ascending expert id and then ascending layer, each one that still fits the budget.
 * Without counts (a first start) that order is expert 0 of every MoE layer, then expert 1 of
 * every layer, ...: the budget is spread evenly over the layers.
 *
 * Counts are cumulative (no decay); the routes of this process are also counted on their own
 * (ec_routes: /metrics), apart from what a file added.
 *
 * Threads: ec_add / ec_add_hot from any thread, concurrently (relaxed atomics); ec_get,
 * ec_snapshot, ec_routes, ec_save from any thread (a snapshot is not a consistent cut across
 * counters while adds run: each counter is read once); ec_load before the counts are shared
 * (it is not atomic as a whole); the autosave thread (ec_autosave_start) is started and stopped
 * by one owner thread. Ownership: the creator (the engine: struct eng_model) owns the counts and
 * destroys them after everything that adds to them (the model, the backend).
 */
#ifndef TANDEM_EXPERT_COUNTS_H
#define TANDEM_EXPERT_COUNTS_H

#include <stddef.h>
#include <stdint.h>

#include "engine/weights/weights.h"

struct expert_counts;

/* What the counts are of; a file must match all of it. */
struct ec_shape {
    int n_layers;   /* the model's layers */
    int moe_layers; /* rows: one per MoE layer */
    int n_expert;   /* columns */
    int top_k;
    int hidden;
};

/* Counts for the model hp describes (its MoE layers in order). ERR_INVAL when it has no MoE
 * layer or absurd sizes, ERR_NOMEM. */
int ec_create(const struct wt_hparams *hp, struct expert_counts **out, char *err);
void ec_destroy(struct expert_counts *c); /* stops the autosave thread first; NULL is fine */

const struct ec_shape *ec_shape(const struct expert_counts *c);
int ec_layer_of(const struct expert_counts *c, int row); /* model layer index of a row */

/* Add the routes ids[0..n) of a call on MoE row `row` (ids outside [0, n_expert): not routed). */
void ec_add(struct expert_counts *c, int row, const int32_t *ids, int64_t n);
/* Routes of this process computed by hot (device-resident) experts: for /metrics. */
void ec_add_hot(struct expert_counts *c, int64_t routes);

uint64_t ec_get(const struct expert_counts *c, int row, int e);
void ec_snapshot(const struct expert_counts *c, uint64_t *out); /* [moe_layers][n_expert] */
uint64_t ec_total(const struct expert_counts *c);               /* the sum of every counter */
uint64_t ec_routes(const struct expert_counts *c);              /* routes added by this process */
uint64_t ec_hot_routes(const struct expert_counts *c);

/* Atomic write (see above). ERR_IO with the path and the reason. Any thread. */
int ec_save(const struct expert_counts *c, const char *path, char *err);
/* Add the counts of a file (see above). ERR_NOT_FOUND, ERR_FORMAT, ERR_INVAL, ERR_IO, ERR_NOMEM;
 * on any error nothing is added. */
int ec_load(struct expert_counts *c, const char *path, char *err);

/* Save to path every period_ms milliseconds on a thread of its own (only when the counts changed
 * since the last save; failures are logged, warn, once per distinct message in a row), and once
 * more when stopped. ERR_NOMEM / ERR_INTERNAL (thread creation). One autosave per counts. */
int ec_autosave_start(struct expert_counts *c, const char *path, int period_ms, char *err);
/* Stop the thread and write the file a last time; 0 or the last write's error. No-op (0) when
 * no autosave runs. */
int ec_autosave_stop(struct expert_counts *c, char *err);

/* A candidate of the hot-set choice and the choice's order: routes per byte, most first; then
 * expert id; then row (ec_choose_hot and hot_place, its several-GPU form, sort by it). */
struct ec_cand {
    uint64_t routes;
    size_t bytes;
    int row, e;
};
int ec_cand_cmp(const void *a, const void *b); /* a qsort comparator of struct ec_cand */

/* The hot-set choice (see above). bytes[row * n_expert + e]: the device bytes expert e of that
 * row would take, 0 when it cannot be hot. Writes hot[row * n_expert + e] = 1 for the chosen, 0
 * for the rest; fills *out. Returns the number chosen (0 when nothing fits; ERR_NOMEM). */
struct ec_choice {
    int chosen, candidates; /* experts chosen / with bytes > 0 */
    int layers;             /* rows with at least one chosen expert */
    double bytes;           /* their bytes */
    uint64_t routes, total; /* recorded routes of the chosen / of every expert */
    int from_counts;        /* 0: no route recorded yet (the uniform order) */
};
int ec_choose_hot(const struct expert_counts *c, const size_t *bytes, double budget, uint8_t *hot,
                  struct ec_choice *out);

/* gpu.hot_experts: "off", "auto" (what the device has left after the weights, the KV cache and
 * the work buffers) or a whole number of MiB (1..16777216). ERR_CONFIG naming the value. */
enum ec_hot_mode { EC_HOT_OFF = 0, EC_HOT_AUTO = 1, EC_HOT_MIB = 2 };
int ec_parse_hot(const char *s, enum ec_hot_mode *mode, long long *mib, char *err);

#endif
