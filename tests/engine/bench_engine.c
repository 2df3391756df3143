/* bench_engine.c - aggregate decode throughput of the engine (real model, continuous batching)
 * against concurrency, compared with the MoE expert-touch bound of issue 8.
 *
 * Usage: bench_engine MODEL_DIR [prompt_len=32] [gen_len=64] [concurrency list=1,4,8,16]
 *                     [--section.key=value ...]
 * For each concurrency B, B requests (random prompts, ignore_eos, greedy) are submitted at once
 * and run to the end. Decode throughput = generated tokens / time from the moment every request
 * has its first token to the last DONE (so prefill is excluded); single-stream time t1 = 1 /
 * throughput at B = 1. With E routed experts and top-k routing a step of B tokens touches about
 * E(1-(1-k/E)^B) experts, so if a step costs what its experts cost, throughput is bounded by
 * B / (t1 * touched(B) / k). Printed: tok/s, the bound and the ratio. (On a model whose
 * expert weights fit in cache the step is compute-bound and the bound is loose.)
 */
#include "../check.h"

#include "../../common/err.h"
#include "../../common/log.h"
#include "../../config/cfg.h"
#include "../../engine/engine.h"
#include "../../engine/weights/weights.h"

#include <math.h>
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
static int n_first, n_done;
static double t_all_first;
static int target;

struct rq {
    int got_first;
};

static void on_event(void *ud, const struct eng_event *ev)
{
    struct rq *r = ud;
    pthread_mutex_lock(&mu);
    if (ev->kind == ENG_EV_TOKEN && !r->got_first) {
        r->got_first = 1;
        if (++n_first == target) t_all_first = now_s();
    }
    if (ev->kind == ENG_EV_DONE) n_done++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

int main(int argc, char **argv)
{
    struct cfg c;
    char err[ERR_LEN];
    if (cfg_load(&c, &argc, argv, err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    if (argc < 2) {
        fprintf(stderr, "usage: bench_engine MODEL_DIR [prompt_len] [gen_len] [B1,B2,...]\n");
        return 2;
    }
    log_set_level(LOG_LVL_WARN);
    free(c.model_path);
    c.model_path = strdup(argv[1]);
    int plen = argc > 2 ? atoi(argv[2]) : 32, glen = argc > 3 ? atoi(argv[3]) : 64;
    const char *list = argc > 4 ? argv[4] : "1,4,8,16";
    int conc[32], n_conc = 0;
    for (const char *p = list; *p && n_conc < 32;) {
        conc[n_conc++] = atoi(p);
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    int maxb = 1;
    for (int i = 0; i < n_conc; i++) maxb = conc[i] > maxb ? conc[i] : maxb;
    if (c.engine_max_running < maxb) c.engine_max_running = maxb;

    struct wt_model *w;
    if (wt_open(c.model_path, &w, err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int E = wt_hparams(w)->n_routed, k = wt_hparams(w)->top_k;
    wt_close(w);

    struct engine *e;
    if (eng_create(&c, NULL, NULL, &e, err) != 0) {
        fprintf(stderr, "eng_create: %s\n", err);
        return 1;
    }
    struct eng_info info;
    eng_info(e, &info);
    printf("model %s, %d routed experts, top-%d; prompt %d, generate %d tokens, greedy, "
           "cpu.threads=%lld\n",
           info.model_name, E, k, plen, glen, (long long)c.cpu_threads);
    printf("   B   decode tok/s   per-stream tok/s   bound tok/s   ratio   steps\n");
    double t1 = 0;
    unsigned rs = 12345;
    for (int ci = 0; ci < n_conc; ci++) {
        int B = conc[ci];
        struct rq *r = calloc((size_t)B, sizeof *r);
        n_first = n_done = 0;
        target = B;
        struct eng_stats s0, s1;
        eng_stats(e, &s0);
        for (int i = 0; i < B; i++) {
            struct eng_request q;
            memset(&q, 0, sizeof q);
            q.n_prompt = plen;
            q.prompt = malloc(sizeof(int32_t) * (size_t)plen);
            for (int j = 0; j < plen; j++)
                q.prompt[j] = 3 + (int32_t)(rand_r(&rs) % (unsigned)(info.vocab_size - 3));
            q.samp.top_p = 1;
            q.samp.repetition_penalty = 1;
            q.max_tokens = glen;
            q.ignore_eos = 1;
            q.on_event = on_event;
            q.ud = &r[i];
            if (eng_submit(e, &q, err) != 0) {
                fprintf(stderr, "submit: %s\n", err);
                return 1;
            }
        }
        pthread_mutex_lock(&mu);
        while (n_done < B) pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
        double t_end = now_s();
        eng_stats(e, &s1);
        /* decode: tokens after each request's first one, over the time all were decoding */
        double tput = (double)B * (glen - 1) / (t_end - t_all_first);
        if (B == 1 || t1 == 0) t1 = 1.0 / tput * B;
        double touched = E * (1.0 - pow(1.0 - (double)k / E, B));
        double bound = B / (t1 * touched / k);
        printf("%4d   %12.1f   %16.1f   %11.1f   %5.2f   %5llu\n", B, tput, tput / B, bound,
               tput / bound, (unsigned long long)(s1.steps - s0.steps));
        free(r);
    }
    eng_destroy(e);
    cfg_fini(&c);
    return 0;
}
