/* sched_internal.h - the engine's state, shared by the files of engine/sched that run it; not
 * a public API (engine.h and sched.h are).
 *
 * Files:
 *   engine_thread.c  the public API of engine.h (eng_create_backend .. eng_debug_check): the
 *                    engine's memory, the inbox of submissions and cancellations, and the
 *                    engine thread's loop, which hands them to the scheduler once per step;
 *   scheduler.c      the scheduling policy, on the engine thread only: sequences, admission,
 *                    batching, preemption, prefill pacing, sampling and the events reported;
 *   sample_pool.c    the threads that sample the rows of a large step in parallel.
 * Threads and locking: fields marked "under mu" are shared between the engine thread and API
 * callers (any thread); everything else after creation belongs to the engine thread alone,
 * which holds no lock while computing or calling callbacks.
 */
#ifndef TANDEM_SCHED_INTERNAL_H
#define TANDEM_SCHED_INTERNAL_H

#include "sched.h"

#include "kv.h"
#include "samp.h"
#include "sample_pool.h"

#include "common/err.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* One request inside the engine (engine thread, once it left the inbox). */
struct seq {
    struct eng_request req; /* copy; prompt moved into tokens */
    int32_t *tokens;        /* [cap] prompt then generated */
    int n_tokens, cap;
    int n_prompt;
    int n_computed;
    int n_generated;
    int max_gen;  /* min(max_tokens, context - n_prompt) */
    int n_cached; /* prompt tokens reused at the first admission */
    int admitted; /* prefix-cache statistics counted */
    int prompt_counted;
    uint64_t arrival;
    struct kv_seq kv;
    struct samp_rng rng;
    int chunk; /* this step: tokens in the batch */
};

struct engine {
    struct sched_params p;
    struct sched_backend be;
    struct kv_cache *kv;
    struct model_kv mkv;
    void *kv_mem;
    size_t kv_bytes;

    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* wakes the engine thread */
    pthread_cond_t cv_check; /* eng_debug_check waiting for its result */

    /* --- guarded by mu */
    struct seq **inbox;
    int n_inbox, cap_inbox;
    uint64_t *cancels;
    int n_cancels, cap_cancels;
    int stop, draining, failed;
    int pub_waiting, pub_running; /* as of the last step, for admission control */
    uint64_t next_id;
    struct eng_stats stats; /* published after each step */
    int check_req, check_done, check_rc;
    char check_err[ERR_LEN];

    /* --- engine thread only: the scheduler's state (scheduler.c) */
    struct seq **waiting;
    int n_waiting, cap_waiting;
    struct seq **running; /* [max_running] */
    int n_running;
    struct eng_stats st;        /* counters being accumulated */
    double t_decode, c_prefill; /* pacing: EMA seconds per decode-only step, per prefill token */
    struct {                    /* the layered prefill in flight (scheduler.c); seq NULL: none */
        struct seq *seq;
        int chunk;                       /* its tokens */
        int started;                     /* pass_begin done */
        int left;                        /* layers still to run */
        double c_layer;                  /* EMA seconds per layer of a pass (0: unknown) */
        int32_t *tokens, *pos, *seq_idx; /* [max_batch_tokens] its batch */
        struct model_seq mseq;
        int32_t logits_idx;
        struct model_batch b;
        float *logits; /* [vocab] */
        struct samp_out out;
    } pass;
    /* batch buffers */
    int32_t *b_tokens, *b_pos, *b_seq; /* [max_batch_tokens] */
    struct model_seq *b_seqs;          /* [max_running] */
    struct seq **b_owner;              /* [max_running] */
    int32_t *b_logits_idx;             /* [max_running] */
    int *b_logit_row;                  /* [max_running] per batch seq, -1 = none */
    float *logits;                     /* [max_running][vocab] */
    struct seq **b_row_owner;          /* [max_running] sequence of each logits row */
    struct samp_out *b_out;            /* [max_running] sampled tokens of this step */

    struct samp_pool pool; /* sampling workers (sample_pool.c) */
};

/* scheduler.c: sequences */
/* A sequence for req (its prompt copied; the request itself is moved in by the caller), or
 * NULL when out of memory. */
struct seq *sched_seq_new(const struct engine *e, const struct eng_request *req);
void sched_seq_free(struct seq *s); /* accepts NULL */
/* Finish a sequence that is in neither array: free its blocks, report DONE, free it. */
void sched_seq_finish(struct engine *e, struct seq *s, enum eng_finish fin, int err);

/* scheduler.c: called by the engine thread's loop */
int sched_enqueue(struct engine *e, struct seq *s); /* into waiting; 0 or ERR_NOMEM */
void sched_cancel(struct engine *e, const uint64_t *ids, int n);
int sched_step(struct engine *e, char *err); /* 0 or a fatal error */
void sched_finish_all(struct engine *e, enum eng_finish fin, int err);
int sched_check(struct engine *e, char *err); /* eng_debug_check's work */

#endif
