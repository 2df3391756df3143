/* engine.h - the engine thread: the contract between server/ (and `tandem chat`) and engine/.
 *
 * The engine owns the model, the KV cache, the scheduler and the CPU expert pool. Callers hand it
 * tokenized requests; it batches prefill and decode of all running requests, samples, and reports
 * each generated token through the request's callback.
 *
 * Threads:
 *   - eng_create/eng_destroy: the main thread.
 *   - eng_submit, eng_cancel, eng_stats, eng_info: any thread (internally locked, never block on
 *     the engine's compute; eng_submit fails fast with ERR_QUEUE_FULL).
 *   - on_event callbacks run on the engine thread. They must not block: copy what is needed,
 *     queue it, wake the consumer (e.g. MHD_resume_connection / uv_async_send), return.
 * Ownership:
 *   - eng_submit takes the request's arrays (prompt and logit_bias ids/vals, which must be
 *     malloc'd) on success and sets those pointers to NULL; on failure the caller still owns them
 *     and no callback ever runs. The struct eng_request itself is copied: the caller keeps (and
 *     frees, if it allocated it) the struct in every case, and may read req->id after success.
 *   - The request's constraint (struct eng_constraint, when its mask is set) is taken with the
 *     arrays on success: the engine calls its destroy exactly once when the request ends (also
 *     on cancellation, errors and shutdown), on the engine thread, before the DONE event. On
 *     failure the caller still owns it.
 *   - After the ENG_EV_DONE event of a request, the engine never touches it or its `ud` again.
 *     Exactly one ENG_EV_DONE is delivered for every successfully submitted request, also when it
 *     is cancelled or the engine shuts down, so `ud` can be freed there.
 */
#ifndef TANDEM_ENGINE_H
#define TANDEM_ENGINE_H

#include <stdint.h>

struct cfg;
struct engine;

#define ENG_MAX_TOP_LOGPROBS 20
#define ENG_MAX_STOP_IDS 8

struct eng_sampling {
    float temperature;        /* 0 = greedy (argmax); default 1 */
    float top_p;              /* 1 = off */
    int top_k;                /* 0 = off */
    float min_p;              /* 0 = off */
    float presence_penalty;   /* OpenAI semantics, -2..2 */
    float frequency_penalty;  /* -2..2 */
    float repetition_penalty; /* 1 = off (llama.cpp / HF semantics) */
    uint64_t seed;            /* per-request RNG seed (server picks a random one if unset) */
    int n_logit_bias;
    int32_t *logit_bias_ids; /* malloc'd, owned by the request */
    float *logit_bias_vals;
    int logprobs;     /* report the chosen token's logprob */
    int top_logprobs; /* 0..ENG_MAX_TOP_LOGPROBS alternatives */
};

enum eng_finish {
    ENG_FINISH_NONE = 0,
    ENG_FINISH_STOP,      /* EOS or a stop token */
    ENG_FINISH_LENGTH,    /* max_tokens or the context end */
    ENG_FINISH_CANCELLED, /* eng_cancel or engine shutdown */
    ENG_FINISH_ERROR,     /* see eng_event.err */
};

/* Every sampled token is reported as ENG_EV_TOKEN, also the one that ends the request: a token
 * that stops it (EOS unless ignore_eos, or one of stop_ids) carries finish = ENG_FINISH_STOP in
 * its TOKEN event (leave it out of the text; it counts in n_generated, as in vLLM's usage); all
 * other TOKEN events have finish = ENG_FINISH_NONE. Then ENG_EV_DONE follows with the reason. */
enum eng_event_kind { ENG_EV_TOKEN = 1, ENG_EV_DONE = 2 };

struct eng_event {
    enum eng_event_kind kind;
    /* ENG_EV_TOKEN */
    int32_t token;
    float logprob; /* if samp.logprobs or top_logprobs (else 0): log-softmax of
                      the logits after logit bias, penalties, bans and the
                      constraint's mask, before temperature / top-k / top-p */
    int n_top;
    int32_t top_ids[ENG_MAX_TOP_LOGPROBS];
    float top_logprobs[ENG_MAX_TOP_LOGPROBS];
    /* ENG_EV_DONE (finish/err); counts are valid in both kinds */
    enum eng_finish finish;
    int err;         /* ERR_* when finish == ENG_FINISH_ERROR */
    int n_prompt;    /* prompt tokens */
    int n_cached;    /* prompt tokens served from the prefix cache */
    int n_generated; /* tokens generated so far */
};

typedef void (*eng_event_cb)(void *ud, const struct eng_event *ev);

/* Constrained decoding (structured output, forced tool calls): a per-request hook, unused when
 * mask is NULL. Called on the engine thread (mask possibly on a sampling worker, but never
 * concurrently for one request):
 *   - mask(ud, logits, n): set the logits of the ids < n that may not come next to -inf; called
 *     on the request's row right before sampling (before logit bias and penalties, which leave
 *     -inf alone);
 *   - accept(ud, token): advance by the sampled token; nonzero ends the request with
 *     ENG_FINISH_ERROR (err ERR_INTERNAL; cannot happen unless mask allowed nothing);
 *   - destroy(ud): the request ended (see Ownership above).
 * Under a constraint, EOS ends the request even with ignore_eos (the constraint allows EOS only
 * when its output is complete), and the min_tokens ban on EOS / stop ids is dropped when it would
 * leave no allowed token. Preemption does not re-sample generated tokens (recompute only rebuilds
 * their KV), so accept() sees every generated token exactly once. */
struct eng_constraint {
    void *ud;
    void (*mask)(void *ud, float *logits, int n);
    int (*accept)(void *ud, int32_t token);
    void (*destroy)(void *ud);
};

struct eng_request {
    uint64_t id;         /* assigned by eng_submit; use it for eng_cancel */
    char request_id[64]; /* the X-Request-Id, for logs */
    int32_t *prompt;     /* malloc'd token ids, owned by the request */
    int n_prompt;
    struct eng_sampling samp;
    int max_tokens; /* >= 1 */
    int min_tokens; /* EOS/stop tokens are suppressed before this many tokens */
    int ignore_eos;
    int priority;   /* lower runs first; FCFS among equals */
    int n_stop_ids; /* extra stop token ids besides the model's EOS */
    int32_t stop_ids[ENG_MAX_STOP_IDS];
    struct eng_constraint constraint; /* zeroed = none; see above */
    uint64_t cache_salt; /* prefix-cache namespace: cached blocks are shared only between requests
                            with equal salts (0 = the common one; server/cache_scope.h) */
    eng_event_cb on_event;
    void *ud;
};

struct eng_info {
    char model_name[128];
    int vocab_size;
    int context; /* maximum prompt + generated tokens */
    int32_t bos_id, eos_id;
    int kv_blocks, kv_block_tokens;
    const char *placement; /* "cpu", "hybrid", "gpu" */
};

#define ENG_ITER_BUCKETS 12 /* iteration_tokens histogram: <=1,2,4,...,2048, +Inf */

struct eng_stats {
    int running, waiting;
    double kv_usage; /* 0..1 */
    uint64_t prompt_tokens_total, generation_tokens_total;
    uint64_t prefix_cache_queries, prefix_cache_hits; /* in tokens, like vLLM */
    uint64_t preemptions_total;
    uint64_t steps; /* heartbeat: advances while the engine makes progress */
    uint64_t iter_tokens_bucket[ENG_ITER_BUCKETS]; /* cumulative counts per le bucket */
    uint64_t iter_tokens_count, iter_tokens_sum;
    int failed; /* sticky: a fatal engine error happened */
    /* routed experts (a MoE model): (token, expert) routes computed since start, those computed
     * by hot experts in device memory, and the hot experts held (gpu.hot_experts) */
    uint64_t expert_routes_total, hot_expert_routes_total;
    int hot_experts;
    uint64_t hot_expert_bytes;
};

/* Loads the model named by cfg->model_path (weights, validation, KV cache, expert pool) and
 * starts the engine thread. `progress` (may be NULL) is called on the calling thread during load
 * with a fraction 0..1 and a short description. */
int eng_create(const struct cfg *cfg, void (*progress)(void *ud, double frac, const char *what),
               void *progress_ud, struct engine **out, char *err);
/* Stops the thread: running requests get ENG_EV_DONE with ENG_FINISH_CANCELLED. NULL is ok. */
void eng_destroy(struct engine *e);

/* Queue a request. Errors: ERR_QUEUE_FULL (429), ERR_CTX_OVERFLOW (prompt + 1 > context, or the
 * prompt can never fit in the KV cache), ERR_INVAL (empty prompt, bad ids or parameters),
 * ERR_UNAVAILABLE (draining / failed). On success req->id is set and the engine owns req. */
int eng_submit(struct engine *e, struct eng_request *req, char *err);
/* Cancel by id (unknown or finished ids are ignored). Its DONE event follows promptly. */
void eng_cancel(struct engine *e, uint64_t id);
/* Stop admitting new requests (eng_submit -> ERR_UNAVAILABLE); running ones continue. */
void eng_drain(struct engine *e);

void eng_info(const struct engine *e, struct eng_info *out);
void eng_stats(struct engine *e, struct eng_stats *out);

#endif
