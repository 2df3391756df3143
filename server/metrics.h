/* metrics.h - Prometheus metrics of the daemon (GET /metrics), vLLM names under `tandem:`.
 *
 * The server side keeps per-request histograms (TTFT, inter-token latency, end-to-end latency,
 * queue time, prompt and generation tokens per request), finished-request counters by reason and
 * error counters by code; gauges and engine-wide counters come from eng_stats() at render time.
 *
 * Threads: every observe/count function is lock-free (relaxed atomics) and may be called from
 * any thread, including the engine thread's event callback. metrics_render from any thread.
 * Ownership: metrics_create allocates; metrics_destroy frees (NULL ok).
 */
#ifndef TANDEM_SERVER_METRICS_H
#define TANDEM_SERVER_METRICS_H

#include "engine/engine.h"

#include <stddef.h>

struct metrics;

enum metrics_hist {
    MET_TTFT,          /* time_to_first_token_seconds */
    MET_ITL,           /* inter_token_latency_seconds */
    MET_E2E,           /* e2e_request_latency_seconds */
    MET_QUEUE,         /* request_queue_time_seconds */
    MET_PROMPT_TOKENS, /* request_prompt_tokens */
    MET_GEN_TOKENS,    /* request_generation_tokens */
    MET_HIST_COUNT
};

enum metrics_finish { MET_FIN_STOP, MET_FIN_LENGTH, MET_FIN_ABORT, MET_FIN_ERROR, MET_FIN_COUNT };

/* model_name is copied (label-escaped). Returns 0 or ERR_NOMEM. */
int metrics_create(const char *model_name, struct metrics **out);
void metrics_destroy(struct metrics *m);

void metrics_observe(struct metrics *m, enum metrics_hist h, double value);
void metrics_finished(struct metrics *m, enum metrics_finish f);
void metrics_error(struct metrics *m, int code); /* an ERR_* sent as an HTTP error */

/* The whole exposition text (malloc'd, *len bytes, NUL-terminated) or NULL on ENOMEM. `st` may
 * be NULL before the engine exists. */
char *metrics_render(struct metrics *m, const struct eng_stats *st, size_t *len);

#endif
