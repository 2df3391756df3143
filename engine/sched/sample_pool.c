/* sample_pool.c - see sample_pool.h.
 *
 * A round: the caller resets the row counter, publishes the job, sets `active` to the number
 * of workers and bumps `round` under the mutex, and broadcasts; every worker that sees a new
 * round takes rows until none is left and decrements `active`; the caller takes rows too, then
 * waits until `active` is 0. Rows are claimed with one atomic add each.
 */
#include "sample_pool.h"

#include "common/err.h"
#include "common/log.h"

#include <stdlib.h>

/* Take rows from the shared counter until none are left. */
static void share(struct samp_pool *p, struct samp *sc)
{
    for (;;) {
        int r = atomic_fetch_add(&p->next, 1);
        if (r >= p->rows) return;
        p->fn(p->ctx, sc, r);
    }
}

static void *worker(void *arg)
{
    struct samp_pool *p = arg;
    uint64_t seen = 0;
    struct samp *sc = NULL;
    pthread_mutex_lock(&p->mu);
    for (int i = 1; i <= p->n_workers && !sc; i++) /* claim a scratch: the first unclaimed */
        if (p->scratch[i]) {
            sc = p->scratch[i];
            p->scratch[i] = NULL;
        }
    ASSERT(sc != NULL); /* one scratch per worker was made before any worker started */
    for (;;) {
        while (!p->stop && p->round == seen) pthread_cond_wait(&p->work, &p->mu);
        if (p->stop) break;
        seen = p->round;
        pthread_mutex_unlock(&p->mu);
        share(p, sc);
        pthread_mutex_lock(&p->mu);
        if (--p->active == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    samp_destroy(sc);
    return NULL;
}

int samp_pool_init(struct samp_pool *p, int n_threads, int vocab, char *err)
{
    int nw = n_threads > 0 ? (n_threads < 64 ? n_threads : 64) : 0;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    p->scratch = calloc((size_t)nw + 1, sizeof *p->scratch);
    if (!p->scratch) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->work);
        pthread_cond_destroy(&p->done);
        return err_set(err, ERR_NOMEM, "engine: out of memory");
    }
    p->n_scratch = nw + 1;
    for (int i = 0; i <= nw; i++) {
        int rc = samp_create(vocab, &p->scratch[i], err);
        if (rc != 0) return rc;
    }
    return 0;
}

int samp_pool_start(struct samp_pool *p, char *err)
{
    int nw = p->n_scratch - 1;
    if (nw <= 0) return 0;
    p->n_workers = nw;
    p->workers = calloc((size_t)nw, sizeof *p->workers);
    if (!p->workers) return err_set(err, ERR_NOMEM, "engine: out of memory");
    for (int i = 0; i < nw; i++)
        if (pthread_create(&p->workers[i], NULL, worker, p) != 0) {
            p->n_workers = i; /* join the ones started; their scratch is theirs */
            return err_set(err, ERR_NOMEM, "engine: cannot start sampling threads");
        }
    return 0;
}

void samp_pool_run(struct samp_pool *p, int n_rows, int parallel, samp_row_fn fn, void *ctx)
{
    atomic_store(&p->next, 0);
    p->rows = n_rows;
    p->fn = fn;
    p->ctx = ctx;
    if (p->n_workers == 0 || !parallel) {
        share(p, p->scratch[0]);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->active = p->n_workers;
    p->round++;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    share(p, p->scratch[0]);
    pthread_mutex_lock(&p->mu);
    while (p->active > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void samp_pool_fini(struct samp_pool *p)
{
    if (!p->scratch) return; /* never initialized (or its mutex already destroyed) */
    if (p->workers) {
        pthread_mutex_lock(&p->mu);
        p->stop = 1;
        pthread_cond_broadcast(&p->work);
        pthread_mutex_unlock(&p->mu);
        for (int i = 0; i < p->n_workers; i++) pthread_join(p->workers[i], NULL);
        free(p->workers);
    }
    for (int i = 0; i < p->n_scratch; i++) samp_destroy(p->scratch[i]);
    free(p->scratch);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
    p->scratch = NULL;
    p->workers = NULL;
}
