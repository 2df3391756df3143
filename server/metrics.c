/* metrics.c - histograms and counters in relaxed atomics, rendered as Prometheus text.
 *
 * Each histogram has a fixed ascending bucket list (like vLLM's); observe() finds the first
 * bucket whose bound is >= value and increments it (non-cumulative), render() accumulates.
 * Sums are kept in micro-units in a uint64 so they can be atomic without a lock. Nothing here
 * allocates after create except render's output buffer.
 */
#include "metrics.h"

#include "common/err.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BUCKETS 24

struct hist_def {
    const char *name, *help;
    int nb;
    double le[MAX_BUCKETS];
};

static const struct hist_def hist_defs[MET_HIST_COUNT] = {
    [MET_TTFT] = {"time_to_first_token_seconds",
                  "Time to first token in seconds.",
                  18,
                  {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                   7.5, 10.0, 20.0, 40.0}},
    [MET_ITL] = {"inter_token_latency_seconds",
                 "Time between consecutive output tokens.",
                 18,
                 {0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
                  2.5, 5.0, 7.5, 10.0}},
    [MET_E2E] = {"e2e_request_latency_seconds",
                 "End-to-end request latency in seconds.",
                 19,
                 {0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0,
                  120.0, 240.0, 480.0, 960.0}},
    [MET_QUEUE] = {"request_queue_time_seconds",
                   "Time from submission until the engine reported the first event (queue wait "
                   "plus prefill).",
                   19,
                   {0.001, 0.005, 0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0,
                    15.0, 20.0, 30.0, 60.0, 120.0}},
    [MET_PROMPT_TOKENS] = {"request_prompt_tokens",
                           "Prompt tokens per request.",
                           16,
                           {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000,
                            50000, 100000}},
    [MET_GEN_TOKENS] = {"request_generation_tokens",
                        "Generated tokens per request.",
                        16,
                        {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000,
                         100000}},
};

static const char *finish_names[MET_FIN_COUNT] = {"stop", "length", "abort", "error"};

struct hist {
    _Atomic uint64_t bucket[MAX_BUCKETS + 1]; /* last = +Inf */
    _Atomic uint64_t count;
    _Atomic uint64_t sum_micro;
};

struct metrics {
    char model[160]; /* label-escaped model name */
    struct hist hist[MET_HIST_COUNT];
    _Atomic uint64_t finished[MET_FIN_COUNT];
    _Atomic uint64_t errors[ERR_IDX_COUNT];
};

int metrics_create(const char *model_name, struct metrics **out)
{
    struct metrics *m = calloc(1, sizeof *m);
    if (!m) return ERR_NOMEM;
    /* Prometheus label values escape backslash, quote and newline */
    size_t j = 0;
    for (const char *s = model_name ? model_name : ""; *s && j + 3 < sizeof m->model; s++) {
        if (*s == '\\' || *s == '"') m->model[j++] = '\\';
        if (*s == '\n') {
            m->model[j++] = '\\';
            m->model[j++] = 'n';
            continue;
        }
        m->model[j++] = *s;
    }
    m->model[j] = 0;
    *out = m;
    return 0;
}

void metrics_destroy(struct metrics *m) { free(m); }

void metrics_observe(struct metrics *m, enum metrics_hist h, double v)
{
    if (!m || h < 0 || h >= MET_HIST_COUNT) return;
    const struct hist_def *d = &hist_defs[h];
    int b = 0;
    while (b < d->nb && v > d->le[b]) b++;
    atomic_fetch_add_explicit(&m->hist[h].bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->hist[h].count, 1, memory_order_relaxed);
    if (v > 0)
        atomic_fetch_add_explicit(&m->hist[h].sum_micro, (uint64_t)(v * 1e6 + 0.5),
                                  memory_order_relaxed);
}

void metrics_finished(struct metrics *m, enum metrics_finish f)
{
    if (m && f >= 0 && f < MET_FIN_COUNT)
        atomic_fetch_add_explicit(&m->finished[f], 1, memory_order_relaxed);
}

void metrics_error(struct metrics *m, int code)
{
    if (m && -code > 0 && -code < ERR_IDX_COUNT)
        atomic_fetch_add_explicit(&m->errors[-code], 1, memory_order_relaxed);
}

static uint64_t ld(_Atomic uint64_t *a) { return atomic_load_explicit(a, memory_order_relaxed); }

static void header(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP tandem:%s %s\n# TYPE tandem:%s %s\n", name, help, name, type);
}

/* one unlabelled (but for the model) counter */
static void counter(FILE *f, const char *mn, const char *name, const char *help, uint64_t v)
{
    header(f, name, "counter", help);
    fprintf(f, "tandem:%s{model_name=\"%s\"} %llu\n", name, mn, (unsigned long long)v);
}

char *metrics_render(struct metrics *m, const struct eng_stats *st, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) return NULL;
    const char *mn = m->model;
    struct eng_stats zero = {0};
    if (!st) st = &zero;

    header(f, "num_requests_running", "gauge", "Requests in the running batch.");
    fprintf(f, "tandem:num_requests_running{model_name=\"%s\"} %d\n", mn, st->running);
    header(f, "num_requests_waiting", "gauge", "Requests waiting for a batch slot.");
    fprintf(f, "tandem:num_requests_waiting{model_name=\"%s\"} %d\n", mn, st->waiting);
    header(f, "kv_cache_usage_perc", "gauge", "KV cache usage, 0..1 (1 = full).");
    fprintf(f, "tandem:kv_cache_usage_perc{model_name=\"%s\"} %.6f\n", mn, st->kv_usage);
    counter(f, mn, "prompt_tokens_total", "Prefill tokens processed.", st->prompt_tokens_total);
    counter(f, mn, "generation_tokens_total", "Generated tokens.", st->generation_tokens_total);
    counter(f, mn, "prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache.",
            st->prefix_cache_queries);
    counter(f, mn, "prefix_cache_hits_total", "Prompt tokens found in the prefix cache.",
            st->prefix_cache_hits);
    counter(f, mn, "num_preemptions_total", "Requests preempted (recomputed) for KV space.",
            st->preemptions_total);
    counter(f, mn, "engine_steps_total", "Engine iterations (the watchdog heartbeat).", st->steps);
    counter(f, mn, "expert_routes_total",
            "Routed (token, expert) pairs computed, all MoE layers (the routing counts).",
            st->expert_routes_total);
    counter(f, mn, "hot_expert_routes_total",
            "Of those, pairs computed by hot experts in device memory (gpu.hot_experts).",
            st->hot_expert_routes_total);
    header(f, "hot_experts", "gauge", "Routed experts held in device memory (gpu.hot_experts).");
    fprintf(f, "tandem:hot_experts{model_name=\"%s\"} %d\n", mn, st->hot_experts);
    header(f, "hot_expert_bytes", "gauge", "Device memory the hot experts take, bytes.");
    fprintf(f, "tandem:hot_expert_bytes{model_name=\"%s\"} %llu\n", mn,
            (unsigned long long)st->hot_expert_bytes);
    header(f, "engine_failed", "gauge", "1 after a fatal engine error.");
    fprintf(f, "tandem:engine_failed{model_name=\"%s\"} %d\n", mn, st->failed ? 1 : 0);

    header(f, "request_success_total", "counter", "Finished requests by finish reason.");
    for (int i = 0; i < MET_FIN_COUNT; i++)
        fprintf(f, "tandem:request_success_total{model_name=\"%s\",finished_reason=\"%s\"} %llu\n",
                mn, finish_names[i], (unsigned long long)ld(&m->finished[i]));

    header(f, "http_errors_total", "counter", "Error responses by tandem error code.");
    for (int i = 1; i < ERR_IDX_COUNT; i++) {
        uint64_t c = ld(&m->errors[i]);
        if (c)
            fprintf(f,
                    "tandem:http_errors_total{model_name=\"%s\",code=\"%s\",status=\"%d\"} "
                    "%llu\n",
                    mn, err_name(-i), err_http_status(-i), (unsigned long long)c);
    }

    for (int h = 0; h < MET_HIST_COUNT; h++) {
        const struct hist_def *d = &hist_defs[h];
        struct hist *hs = &m->hist[h];
        header(f, d->name, "histogram", d->help);
        uint64_t cum = 0;
        for (int b = 0; b < d->nb; b++) {
            cum += ld(&hs->bucket[b]);
            fprintf(f, "tandem:%s_bucket{model_name=\"%s\",le=\"%g\"} %llu\n", d->name, mn,
                    d->le[b], (unsigned long long)cum);
        }
        cum += ld(&hs->bucket[d->nb]);
        fprintf(f, "tandem:%s_bucket{model_name=\"%s\",le=\"+Inf\"} %llu\n", d->name, mn,
                (unsigned long long)cum);
        fprintf(f, "tandem:%s_sum{model_name=\"%s\"} %.6f\n", d->name, mn,
                (double)ld(&hs->sum_micro) / 1e6);
        fprintf(f, "tandem:%s_count{model_name=\"%s\"} %llu\n", d->name, mn,
                (unsigned long long)cum);
    }

    /* engine step sizes: bucket b < ENG_ITER_BUCKETS-1 holds steps of <= 2^b tokens, the last
     * one the rest (the engine keeps per-bucket counts; accumulate here). Should an engine keep
     * them cumulative instead, the counts do not sum to iter_tokens_count: use them as they are. */
    header(f, "iteration_tokens_total", "histogram", "Tokens processed per engine step.");
    uint64_t total = 0;
    for (int b = 0; b < ENG_ITER_BUCKETS; b++) total += st->iter_tokens_bucket[b];
    int cumulative = total != st->iter_tokens_count;
    uint64_t cum = 0;
    for (int b = 0; b < ENG_ITER_BUCKETS - 1; b++) {
        cum = cumulative ? st->iter_tokens_bucket[b] : cum + st->iter_tokens_bucket[b];
        fprintf(f, "tandem:iteration_tokens_total_bucket{model_name=\"%s\",le=\"%d\"} %llu\n", mn,
                1 << b, (unsigned long long)cum);
    }
    fprintf(f, "tandem:iteration_tokens_total_bucket{model_name=\"%s\",le=\"+Inf\"} %llu\n", mn,
            (unsigned long long)st->iter_tokens_count);
    fprintf(f, "tandem:iteration_tokens_total_sum{model_name=\"%s\"} %llu\n", mn,
            (unsigned long long)st->iter_tokens_sum);
    fprintf(f, "tandem:iteration_tokens_total_count{model_name=\"%s\"} %llu\n", mn,
            (unsigned long long)st->iter_tokens_count);

    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}
