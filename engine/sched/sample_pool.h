/* sample_pool.h - threads that sample the logits rows of one engine step in parallel.
 *
 * What: n workers, each with its own sampler scratch (struct samp), plus one scratch for the
 * caller. samp_pool_run hands out rows 0..n-1 through a shared counter: the caller and, when
 * asked to go parallel, every worker take the next unclaimed row and run fn on it, until none
 * is left; it returns when every row is done. fn must touch only what belongs to its row (and
 * the scratch it is given), so the result never depends on which thread took which row.
 * Threads: init, start, run and fini are called by one thread (the engine thread; fini after
 * it stopped). Workers sleep on a condition variable between rounds.
 * Ownership: the pool owns the scratches and the threads; each worker takes one scratch for
 * its lifetime and frees it when it exits.
 */
#ifndef TANDEM_SAMPLE_POOL_H
#define TANDEM_SAMPLE_POOL_H

#include "samp.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/* Sample row `row` with scratch sc. */
typedef void (*samp_row_fn)(void *ctx, struct samp *sc, int row);

struct samp_pool {
    struct samp **scratch; /* [n_scratch]; [0] is the caller's, workers take (and free)
                              one each */
    int n_scratch;
    pthread_t *workers;
    int n_workers;
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    uint64_t round;   /* bumped once per parallel round (under mu) */
    int stop, active; /* under mu */
    /* this round, set before the workers are woken */
    int rows;
    samp_row_fn fn;
    void *ctx;
    atomic_int next; /* the next row to take */
};

/* Scratch for the caller and n_threads workers (capped at 64), for vocabularies of up to
 * `vocab` ids; no thread is started yet. On failure the pool is still safe to fini.
 * Errors: ERR_NOMEM. */
int samp_pool_init(struct samp_pool *p, int n_threads, int vocab, char *err);
/* Start the workers. Errors: ERR_NOMEM (the pool stays safe to fini). */
int samp_pool_start(struct samp_pool *p, char *err);
/* Sample rows 0..n_rows-1: on the calling thread alone unless `parallel` and there are workers. */
void samp_pool_run(struct samp_pool *p, int n_rows, int parallel, samp_row_fn fn, void *ctx);
/* Stop and join the workers, free everything. Accepts a zeroed or partly initialized pool. */
void samp_pool_fini(struct samp_pool *p);

#endif
