/* wpool.c - worker pool (wpool.h): one job at a time, chunks handed out by an atomic counter.
 *
 * Job publication: the owner first closes the previous generation (`work` = g << 32 | ~0), then
 * writes the job fields (fn, ctx, n_items, chunk, n_chunks), resets `done`, stores `work` =
 * (g + 1) << 32 | 0 and bumps the futex word `seq`. A thread claims chunk i of generation g by a
 * CAS of `work` from (g << 32 | i) to (g << 32 | i + 1); the CAS fails harmlessly when the owner
 * has moved on to another generation, so a late worker can never take a chunk of a job it did not
 * read, and it reads the job fields only after a successful claim (acquire), when they are
 * guaranteed to be g's: the owner cannot publish g + 1 before every chunk of g has been counted in
 * `done`.
 *
 * Sleeping: a worker spins on `seq` for spin_us, then increments `sleepers` and futex-waits on
 * `seq` (which returns at once if seq already moved). The owner bumps seq and wakes only when
 * sleepers > 0; both sides use sequentially consistent atomics, so no wake-up is lost.
 *
 * Invariants: only the owner writes the job fields and only while no chunk is outstanding;
 * done <= n_chunks; stop is set once, by wpool_destroy.
 */
#include "wpool.h"

#include "common/err.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

struct worker {
    struct wpool *pool;
    pthread_t tid;
    int idx;
};

struct wpool {
    int n_threads; /* participants, caller included */
    int spin_us;
    int n_started; /* workers actually started */
    struct worker *workers;

    /* the current job (written by the owner only between jobs) */
    wpool_fn fn;
    void *ctx;
    int64_t n_items, chunk;
    uint32_t gen;
    _Atomic int64_t n_chunks; /* also read by late workers, hence atomic (see run_chunks) */

    _Atomic uint64_t work; /* gen << 32 | next chunk index */
    _Atomic int64_t done;  /* chunks finished in this generation */
    _Atomic uint32_t seq;  /* futex word: bumped for every job and for stop */
    _Atomic int sleepers;
    _Atomic int stop;
};

static long futex(_Atomic uint32_t *addr, int op, uint32_t val)
{
    return syscall(SYS_futex, (uint32_t *)addr, op, val, NULL, NULL, 0);
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Claim and run chunks of generation gen until none are left. */
static void run_chunks(struct wpool *p, uint32_t gen, int thread_idx)
{
    uint64_t w = atomic_load_explicit(&p->work, memory_order_acquire);
    for (;;) {
        if ((uint32_t)(w >> 32) != gen) return;
        uint64_t i = w & 0xffffffffu;
        /* n_chunks may already be the next job's (the owner writes it after closing `work`),
         * but then `work` has moved and the CAS below fails */
        if ((int64_t)i >= atomic_load(&p->n_chunks)) return;
        if (!atomic_compare_exchange_weak(&p->work, &w, w + 1)) continue;
        int64_t b = (int64_t)i * p->chunk, e = b + p->chunk;
        if (e > p->n_items) e = p->n_items;
        p->fn(p->ctx, b, e, thread_idx);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
        w = atomic_load_explicit(&p->work, memory_order_acquire);
    }
}

static void *worker_main(void *arg)
{
    struct worker *wk = arg;
    struct wpool *p = wk->pool;
    uint32_t seen = 0; /* seq's value before any worker started: a late start misses nothing */
    for (;;) {
        /* wait for seq to move: spin, then sleep */
        uint32_t s = atomic_load_explicit(&p->seq, memory_order_acquire);
        if (s == seen && p->spin_us > 0) {
            int64_t t0 = now_us();
            int n = 0;
            while ((s = atomic_load_explicit(&p->seq, memory_order_acquire)) == seen) {
                cpu_relax();
                if ((++n & 255) == 0 && now_us() - t0 >= p->spin_us) break;
            }
        }
        while (s == seen) {
            atomic_fetch_add(&p->sleepers, 1);
            futex(&p->seq, FUTEX_WAIT_PRIVATE, seen);
            atomic_fetch_sub(&p->sleepers, 1);
            s = atomic_load(&p->seq);
        }
        seen = s;
        if (atomic_load(&p->stop)) return NULL;
        uint64_t w = atomic_load_explicit(&p->work, memory_order_acquire);
        run_chunks(p, (uint32_t)(w >> 32), wk->idx);
    }
}

static void pin_to(pthread_t t, const cpu_set_t *allowed, int i)
{
    int n = CPU_COUNT(allowed), k = i % n;
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (!CPU_ISSET(c, allowed)) continue;
        if (k-- == 0) {
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(c, &one);
            pthread_setaffinity_np(t, sizeof one, &one); /* best effort */
            return;
        }
    }
}

int wpool_create(int n_threads, int pin, int spin_us, struct wpool **out, char *err)
{
    *out = NULL;
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0 || CPU_COUNT(&allowed) == 0) {
        CPU_ZERO(&allowed);
        CPU_SET(0, &allowed);
    }
    if (n_threads == 0) n_threads = CPU_COUNT(&allowed);
    if (n_threads < 1 || n_threads > 4096)
        return err_set(err, ERR_INVAL, "wpool: bad thread count %d", n_threads);
    if (spin_us < 0) return err_set(err, ERR_INVAL, "wpool: bad spin_us %d", spin_us);
    struct wpool *p = calloc(1, sizeof *p);
    if (!p) return err_set(err, ERR_NOMEM, "wpool: out of memory");
    p->n_threads = n_threads;
    p->spin_us = spin_us;
    atomic_init(&p->work, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->seq, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->n_chunks, 0);
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads - 1, sizeof *p->workers);
        if (!p->workers) {
            free(p);
            return err_set(err, ERR_NOMEM, "wpool: out of memory");
        }
    }
    for (int i = 1; i < n_threads; i++) {
        struct worker *wk = &p->workers[i - 1];
        wk->pool = p;
        wk->idx = i;
        int rc = pthread_create(&wk->tid, NULL, worker_main, wk);
        if (rc != 0) {
            wpool_destroy(p);
            return err_set(err, ERR_INTERNAL, "wpool: cannot start thread %d: errno %d", i, rc);
        }
        p->n_started++;
        if (pin) pin_to(wk->tid, &allowed, i);
    }
    *out = p;
    return 0;
}

void wpool_destroy(struct wpool *p)
{
    if (!p) return;
    atomic_store(&p->stop, 1);
    atomic_fetch_add(&p->seq, 1);
    futex(&p->seq, FUTEX_WAKE_PRIVATE, INT_MAX);
    for (int i = 0; i < p->n_started; i++) pthread_join(p->workers[i].tid, NULL);
    free(p->workers);
    free(p);
}

int wpool_n_threads(const struct wpool *p) { return p ? p->n_threads : 1; }

void wpool_run(struct wpool *p, wpool_fn fn, void *ctx, int64_t n_items, int64_t chunk)
{
    if (n_items <= 0) return;
    if (chunk < 1) chunk = 1;
    int64_t n_chunks = (n_items + chunk - 1) / chunk;
    if (!p || p->n_threads == 1 || n_chunks == 1 || n_chunks >= 0xffffffffll) {
        fn(ctx, 0, n_items, 0);
        return;
    }
    /* close the previous generation so no late claim can succeed, then publish this job */
    atomic_store(&p->work, ((uint64_t)p->gen << 32) | 0xffffffffu);
    p->fn = fn;
    p->ctx = ctx;
    p->n_items = n_items;
    p->chunk = chunk;
    atomic_store(&p->n_chunks, n_chunks);
    p->gen++;
    atomic_store(&p->done, 0);
    atomic_store(&p->work, (uint64_t)p->gen << 32);
    atomic_fetch_add(&p->seq, 1);
    if (atomic_load(&p->sleepers) > 0) futex(&p->seq, FUTEX_WAKE_PRIVATE, INT_MAX);
    run_chunks(p, p->gen, 0);
    /* wait for chunks other threads are still running (yield if they were descheduled) */
    for (int n = 1; atomic_load_explicit(&p->done, memory_order_acquire) < n_chunks; n++) {
        cpu_relax();
        if ((n & 1023) == 0) sched_yield();
    }
}
