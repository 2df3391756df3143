/* sched.h - engine internals shared by engine/engine.c (model loading) and engine/sched (the
 * engine thread and its API: engine_thread.c; the scheduler: scheduler.c), and test hooks.
 *
 * The scheduler never calls the model directly: it drives a struct sched_backend, whose forward
 * has model_forward's contract (engine/model/model.h). engine.c wraps the real model in one;
 * tests wrap a small deterministic fake, so the scheduler is tested without weights.
 *
 * Threads: eng_create_backend on the main thread; the backend's forward runs on the engine
 * thread; destroy runs in eng_destroy after the engine thread has stopped.
 */
#ifndef TANDEM_SCHED_H
#define TANDEM_SCHED_H

#include "engine/engine.h"
#include "engine/model/model.h"

#include <stdint.h>

struct sched_backend {
    void *ctx;
    int vocab;            /* logits row width; token ids must be < vocab */
    int n_valid;          /* ids >= n_valid (vocabulary padding) are never sampled */
    int n_layers, kv_dim; /* KV storage shape per token */
    int kv_type;          /* enum model_kv_type (0 = bf16) */
    int (*forward)(void *ctx, const struct model_kv *kv, const struct model_batch *b, float *logits,
                   char *err);
    void (*destroy)(void *ctx); /* may be NULL */
    /* optional (all NULL: no layered prefill): one batch's forward in slices of layers, with
     * other forwards between them (model.h, model_pass_*) */
    int (*pass_begin)(void *ctx, const struct model_kv *kv, const struct model_batch *b, char *err);
    int (*pass_run)(void *ctx, int n_layers, int *left, char *err);
    int (*pass_finish)(void *ctx, float *logits, char *err);
    void (*pass_abort)(void *ctx);
    /* optional: the backend's own counters into eng_stats (expert routes, hot experts); called
     * by eng_stats on the caller's thread, so it reads only thread-safe state */
    void (*stats)(void *ctx, struct eng_stats *out);
};

struct sched_params {
    int max_running, max_queued, max_batch_tokens;
    int kv_blocks, kv_block_tokens, prefix_cache;
    int context;                /* prompt + generated; capped at kv_blocks * kv_block_tokens */
    double prefill_step_ratio;  /* > 1: limit prefill chunks while decoding (scheduler.c) */
    int layered_prefill_tokens; /* while pacing, a prompt with at least this many tokens left
                                 * prefills as a layered pass (0: never; scheduler.c) */
    int sample_threads;         /* threads sampling beside the engine thread (0 = none) */
    int sample_min_work;        /* parallel sampling only when rows x vocab >= this */
    int32_t bos_id, eos_id;     /* eos_id < 0: none */
    char model_name[128];
    const char *placement; /* static string */
};

/* Start an engine over a backend. On success the engine owns the backend (destroy is called by
 * eng_destroy); on failure the caller still owns it. Errors: ERR_INVAL, ERR_NOMEM. */
int eng_create_backend(const struct sched_params *p, const struct sched_backend *be,
                       struct engine **out, char *err);

/* Tests: run kv_check on the engine thread between steps (and, when nothing is running or
 * waiting, check that no block is referenced). Blocks until done. Returns 0 or ERR_INTERNAL. */
int eng_debug_check(struct engine *e, char *err);

/* Log2 bucket of an iteration's token count for eng_stats.iter_tokens_bucket. */
int sched_iter_bucket(int n_tokens);

#endif
