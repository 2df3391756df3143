/* test_wpool.c - the worker pool (kernels/cpu/wpool.h): every item of every job runs exactly
 * once, for many job sizes, chunk sizes and thread counts (oversubscribed too), with spinning
 * and with immediate sleeping; back-to-back jobs; an idle pool that sleeps and wakes again. */
#include "../check.h"
#include "common/err.h"
#include "kernels/cpu/wpool.h"

#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

struct job {
    _Atomic int *hits;
    _Atomic int bad_idx;
    int n_threads;
};

static void fn(void *ctx, int64_t b, int64_t e, int thread_idx)
{
    struct job *j = ctx;
    if (thread_idx < 0 || thread_idx >= j->n_threads) atomic_store(&j->bad_idx, 1);
    for (int64_t i = b; i < e; i++) atomic_fetch_add(&j->hits[i], 1);
}

static uint64_t rng_state;
static uint32_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

int main(void)
{
    rng_state = check_seed();
    char err[ERR_LEN];
    enum { MAXN = 5000 };
    static _Atomic int hits[MAXN];
    int counts[] = {1, 2, 3, 4, 8};
    for (int ci = 0; ci < 5; ci++) {
        for (int spin = 0; spin <= 1; spin++) {
            struct wpool *p;
            CHECK_EQ(wpool_create(counts[ci], ci % 2, spin ? 100 : 0, &p, err), 0);
            CHECK_EQ(wpool_n_threads(p), counts[ci]);
            for (int rep = 0; rep < 300; rep++) {
                int64_t n = rnd() % MAXN, chunk = 1 + rnd() % 64;
                if (rep % 50 == 0) n = 0;
                for (int64_t i = 0; i < n; i++) atomic_store(&hits[i], 0);
                struct job j = {hits, 0, counts[ci]};
                wpool_run(p, fn, &j, n, chunk);
                CHECK_EQ(atomic_load(&j.bad_idx), 0);
                for (int64_t i = 0; i < n; i++) CHECK_EQ(atomic_load(&hits[i]), 1);
                if (rep == 150) usleep(5000); /* let workers fall asleep, then wake them */
            }
            wpool_destroy(p);
        }
    }
    /* NULL pool runs on the caller; destroy(NULL) is fine */
    struct job j = {hits, 0, 1};
    for (int i = 0; i < 10; i++) atomic_store(&hits[i], 0);
    wpool_run(NULL, fn, &j, 10, 3);
    for (int i = 0; i < 10; i++) CHECK_EQ(atomic_load(&hits[i]), 1);
    wpool_destroy(NULL);
    struct wpool *p;
    CHECK(wpool_create(-1, 0, 0, &p, err) == ERR_INVAL);
    CHECK(wpool_create(0, 1, 10, &p, err) == 0);
    CHECK(wpool_n_threads(p) >= 1);
    wpool_destroy(p);
    return 0;
}
