/* bench_sched.c - costs the engine adds around the model: sampling a 129,280-entry row, and the
 * scheduler's per-step / per-token overhead (over the zero-cost fake model of fake_model.h).
 *
 * Usage: bench_sched [n_requests] [tokens_each]    (defaults 64 and 256)
 * Prints one line per measurement; nothing is asserted (timings belong in benchmarks).
 */
#include "../check.h"

#include "fake_model.h"

#include <pthread.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int n_done;

static void on_event(void *ud, const struct eng_event *ev)
{
    (void)ud;
    if (ev->kind != ENG_EV_DONE) return;
    pthread_mutex_lock(&mu);
    n_done++;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
}

static void bench_sampler(void)
{
    const int V = 129280;
    struct samp *s;
    char err[ERR_LEN];
    if (samp_create(V, &s, err) != 0) exit(1);
    float *row = malloc(sizeof(float) * (size_t)V), *buf = malloc(sizeof(float) * (size_t)V);
    struct samp_rng r;
    samp_rng_seed(&r, 1);
    for (int i = 0; i < V; i++) row[i] = (float)(samp_rng_uniform(&r) * 20.0 - 10.0);
    int32_t gen[1000];
    for (int i = 0; i < 1000; i++) gen[i] = (int32_t)(samp_rng_next(&r) % (uint64_t)V);
    struct {
        const char *name;
        float temp, top_p, min_p, pen;
        int top_k, top_lp;
    } cases[] = {
        {"greedy", 0, 1, 0, 0, 0, 0},
        {"temperature 0.7", 0.7f, 1, 0, 0, 0, 0},
        {"top_k 40", 0.7f, 1, 0, 0, 40, 0},
        {"top_p 0.9", 0.7f, 0.9f, 0, 0, 0, 0},
        {"min_p 0.05", 0.7f, 1, 0.05f, 0, 0, 0},
        {"penalties over 1000 tokens", 0.7f, 1, 0, 1, 0, 0},
        {"greedy + top_logprobs 20", 0, 1, 0, 0, 0, 20},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct eng_sampling p;
        memset(&p, 0, sizeof p);
        p.temperature = cases[c].temp;
        p.top_p = cases[c].top_p;
        p.min_p = cases[c].min_p;
        p.top_k = cases[c].top_k;
        p.repetition_penalty = cases[c].pen ? 1.1f : 1.0f;
        p.presence_penalty = cases[c].pen ? 0.5f : 0.0f;
        p.frequency_penalty = cases[c].pen ? 0.5f : 0.0f;
        p.top_logprobs = cases[c].top_lp;
        struct samp_input in = {
            .p = &p, .prompt = gen, .n_prompt = 500, .gen = gen + 500, .n_gen = 500};
        struct samp_out o;
        int iters = 200;
        double t0 = now_s();
        for (int i = 0; i < iters; i++) {
            memcpy(buf, row, sizeof(float) * (size_t)V);
            samp_sample(s, buf, V, &in, &r, &o);
        }
        double us = (now_s() - t0) / iters * 1e6;
        printf("sampler  vocab %d  %-28s %8.1f us/token (incl. a %zu KiB row copy)\n", V,
               cases[c].name, us, sizeof(float) * (size_t)V / 1024);
    }
    samp_destroy(s);
    free(row);
    free(buf);
}

static void bench_scheduler(int n_req, int n_tok, int max_running)
{
    struct fake f;
    struct sched_backend be = fake_backend(&f);
    struct sched_params p;
    memset(&p, 0, sizeof p);
    p.max_running = max_running;
    p.max_queued = 100000;
    p.max_batch_tokens = 2048;
    p.kv_block_tokens = 16;
    p.kv_blocks = (max_running * (n_tok + 64) + 15) / 16 + 64;
    p.prefix_cache = 1;
    p.context = 8192;
    p.eos_id = FAKE_EOS;
    struct engine *e;
    char err[ERR_LEN];
    if (eng_create_backend(&p, &be, &e, err) != 0) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    n_done = 0;
    double t0 = now_s();
    for (int i = 0; i < n_req; i++) {
        struct eng_request q;
        memset(&q, 0, sizeof q);
        q.n_prompt = 32;
        q.prompt = malloc(32 * sizeof(int32_t));
        for (int j = 0; j < 32; j++) q.prompt[j] = (i * 7 + j * 13) % FAKE_VALID;
        q.samp.temperature = 0.8f;
        q.samp.top_p = 0.95f;
        q.samp.repetition_penalty = 1.0f;
        q.samp.seed = (uint64_t)i;
        q.max_tokens = n_tok;
        q.ignore_eos = 1;
        q.on_event = on_event;
        if (eng_submit(e, &q, err) != 0) {
            fprintf(stderr, "%s\n", err);
            exit(1);
        }
    }
    pthread_mutex_lock(&mu);
    while (n_done < n_req) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    double dt = now_s() - t0;
    struct eng_stats st;
    eng_stats(e, &st);
    printf("scheduler  %d requests x (32 prompt + %d generated), max_running %d: %llu steps, "
           "%.2f us/step, %.3f us/generated token (fake model, vocab %d)\n",
           n_req, n_tok, max_running, (unsigned long long)st.steps, dt / (double)st.steps * 1e6,
           dt / (double)st.generation_tokens_total * 1e6, FAKE_VOCAB);
    eng_destroy(e);
}

/* A backend with DeepSeek-V3's vocabulary whose forward only writes pseudo-random logits, to
 * time sampling inside the engine (serial vs the sampling workers). */
#define BIG_VOCAB 129280
static int big_forward(void *ctx, const struct model_kv *kv, const struct model_batch *b,
                       float *logits, char *err)
{
    (void)ctx, (void)kv, (void)err;
    for (int j = 0; j < b->n_logits; j++) {
        uint32_t x = (uint32_t)b->tokens[b->logits_idx[j]] * 2654435761u +
                     (uint32_t)b->pos[b->logits_idx[j]];
        float *row = logits + (size_t)j * BIG_VOCAB;
        for (int v = 0; v < BIG_VOCAB; v++) {
            x = x * 1664525u + 1013904223u;
            row[v] = (float)(x >> 8) * (1.0f / 16777216.0f) * 20.0f - 10.0f;
        }
    }
    return 0;
}

static void bench_big_vocab(int sample_threads, float temperature)
{
    struct sched_backend be = {.vocab = BIG_VOCAB,
                               .n_valid = BIG_VOCAB,
                               .n_layers = 1,
                               .kv_dim = 1,
                               .forward = big_forward};
    struct sched_params p;
    memset(&p, 0, sizeof p);
    p.max_running = 16;
    p.max_queued = 1000;
    p.max_batch_tokens = 256;
    p.kv_block_tokens = 16;
    p.kv_blocks = 16 * 8;
    p.context = 128;
    p.eos_id = -1;
    p.sample_threads = sample_threads;
    p.sample_min_work = 1 << 17;
    struct engine *e;
    char err[ERR_LEN];
    if (eng_create_backend(&p, &be, &e, err) != 0) exit(1);
    n_done = 0;
    double t0 = now_s();
    for (int i = 0; i < 16; i++) {
        struct eng_request q;
        memset(&q, 0, sizeof q);
        q.n_prompt = 4;
        q.prompt = malloc(4 * sizeof(int32_t));
        for (int j = 0; j < 4; j++) q.prompt[j] = i + j;
        q.samp.temperature = temperature;
        q.samp.top_p = 1.0f;
        q.samp.repetition_penalty = 1.0f;
        q.samp.seed = (uint64_t)i;
        q.max_tokens = 64;
        q.on_event = on_event;
        if (eng_submit(e, &q, err) != 0) exit(1);
    }
    pthread_mutex_lock(&mu);
    while (n_done < 16) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    double dt = now_s() - t0;
    struct eng_stats st;
    eng_stats(e, &st);
    printf("engine sampling  16 rows x vocab %d, temperature %.1f, %d sampling worker(s): %.0f "
           "us/step "
           "(incl. writing the logits)\n",
           BIG_VOCAB, temperature, sample_threads, dt / (double)st.steps * 1e6);
    eng_destroy(e);
}

int main(int argc, char **argv)
{
    int n_req = argc > 1 ? atoi(argv[1]) : 64;
    int n_tok = argc > 2 ? atoi(argv[2]) : 256;
    if (n_req < 1 || n_tok < 1) return 2;
    bench_sampler();
    bench_scheduler(n_req, n_tok, 1);
    bench_scheduler(n_req, n_tok, 16);
    bench_scheduler(n_req, n_tok, 64);
    for (int t = 0; t < 2; t++) {
        bench_big_vocab(0, t ? 0.7f : 0.0f);
        bench_big_vocab(1, t ? 0.7f : 0.0f);
    }
    return 0;
}
