/* test_engine_defer.c - expert deferral (engine.defer_experts, model_set_defer) on the hybrid
 * backend against the CPU engine with the same deferral.
 *
 * The synth model, the forwards and the tolerance are tests/gpu/engine_cmp.h's: a fresh tiny16
 * (attention on the GPU kernels) with 16 routed experts, top-4, experts q4_K_M, 1 dense + 2 MoE
 * layers (the first MoE layer defers, the last does not); a prefill of 256 tokens, a chunk of 96,
 * forwards of 4 tokens and of 1 token. The CPU engine runs with 0, 1 and 2 deferred experts per
 * token; hybrid configurations (each on a fresh backend):
 *   d0       no deferral (the distance the GPU forward has anyway);
 *   d1, d2   1 and 2 deferred: the deferred part as a second CPU job on the side stream, joined
 *            only by the add after the next layer's attention (ops_cuda.c, cu_moe_defer);
 *   d2-str   2 deferred with gpu.prefill_experts forced (split_tokens 1, min_tokens 16): prefill
 *            chunks take the synchronous path (both parts in turn through the streamed split),
 *            decode-size forwards the job path.
 * Asserted per configuration: the logits against the CPU engine's with the same deferral (median
 * relative L2 <= 0.1, finite: engine_cmp.h); for d2, that they are closer to it than to the CPU
 * engine without deferral (the deferral is really computed, not dropped); from ops_cuda_stats,
 * that the job path ran one CPU job more per deferring layer (3 jobs a forward instead of 2).
 * Seeds are fresh each run (TANDEM_TEST_SEED replays). Exits 77 without a GPU or without
 * TANDEM_BIN (the tandem executable, for `convert synth`).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cuda_runtime_api.h>

#include "common/err.h"
#include "engine/model/model.h"
#include "engine/model/ops.h"
#include "engine/model/ops_cuda.h"
#include "engine/weights/weights.h"
#include "tests/check.h"
#include "tests/gpu/engine_cmp.h"

static int set_defer(void *ud, struct ops *o, struct model *m, char *err)
{
    (void)o;
    return model_set_defer(m, *(const int *)ud, err);
}

/* median relative L2 error of a against b over n positions */
static double median_err(const float *a, const float *b, int V, int n)
{
    double *e = malloc((size_t)n * sizeof *e);
    if (!e) return INFINITY;
    for (int t = 0; t < n; t++) e[t] = rel_err_f(a + (size_t)t * V, b + (size_t)t * V, V);
    qsort(e, (size_t)n, sizeof *e, ecmp_cmp_d);
    double med = e[n / 2];
    free(e);
    return med;
}

int main(void)
{
    unsigned long long seed = check_seed();
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 1) SKIP("no CUDA device");
    if (!getenv("TANDEM_BIN")) SKIP("TANDEM_BIN unset (convert synth)");
    char base[] = "/tmp/tandem-defer-XXXXXX", dir[600], err[ERR_LEN];
    if (ecmp_make_model(base, seed, dir, sizeof dir)) return 1;
    struct wt_model *w = NULL;
    CHECK_EQ(wt_open(dir, &w, err), 0);
    CHECK_EQ(wt_validate(w, err), 0);
    const struct wt_hparams *hp = wt_hparams(w);
    const int V = hp->vocab_size, n = ECMP_N;
    int32_t *tok = ecmp_tokens(seed, V, n);
    CHECK(tok != NULL);
    static const int defers[3] = {0, 1, 2};
    struct ecmp_run cpu[3];
    for (int d = 0; d < 3; d++) {
        cpu[d].lg = malloc((size_t)n * V * sizeof(float));
        struct ops_params op = {.max_tokens = ECMP_P1, .n_threads = 0, .pin = 0};
        CHECK_EQ(ops_params_parse(&op, "cpu", NULL, err), 0);
        CHECK_EQ(ecmp_drive(w, &op, tok, set_defer, (void *)&defers[d], &cpu[d], err), 0);
    }
    printf("CPU: deferral 1 vs none: median rel L2 %.3g; 2 vs none: %.3g\n",
           median_err(cpu[1].lg, cpu[0].lg, V, n), median_err(cpu[2].lg, cpu[0].lg, V, n));
    struct cfgs {
        const char *tag;
        int defer, stream;
    } cs[] = {{"d0", 0, 0}, {"d1", 1, 0}, {"d2", 2, 0}, {"d2-str", 2, 1}};
    const int NC = (int)(sizeof cs / sizeof cs[0]);
    long long calls0 = 0;
    int fails = 0;
    for (int i = 0; i < NC; i++) {
        struct ecmp_run g = {.lg = malloc((size_t)n * V * sizeof(float))};
        struct ops_params q = {.max_tokens = ECMP_P1, .n_threads = 0, .pin = 0};
        if (cs[i].stream) {
            q.gpu_prefill_experts = 1;
            q.gpu_prefill_min_tokens = 16;
            q.gpu_prefill_split_tokens = 1;
        }
        CHECK_EQ(ops_params_parse(&q, "hybrid", NULL, err), 0);
        int rc = ecmp_drive(w, &q, tok, set_defer, &cs[i].defer, &g, err);
        if (rc) {
            printf("FAIL %s: forward: %s\n", cs[i].tag, err);
            fails++;
            free(g.lg);
            continue;
        }
        const struct ops_cuda_stats *s = &g.st;
        printf("%-6s %lld CPU jobs: CPU experts %.3f ms, GPU work beside them %.3f ms, GPU idle "
               "%.3f ms\n",
               cs[i].tag, s->moe_calls, s->cpu_experts_s * 1e3, s->overlap_gpu_s * 1e3,
               s->idle_s * 1e3);
        fails += ecmp_compare(cs[i].tag, g.lg, cpu[cs[i].defer].lg, V, n);
        if (cs[i].defer == 2) {
            double same = median_err(g.lg, cpu[2].lg, V, n),
                   none = median_err(g.lg, cpu[0].lg, V, n);
            printf("%-6s median rel L2 vs CPU deferral 2: %.3g, vs CPU without: %.3g\n", cs[i].tag,
                   same, none);
            if (!(same < none)) {
                printf("FAIL %s: not closer to the CPU's deferral than to none\n", cs[i].tag);
                fails++;
            }
        }
        if (!cs[i].stream && cs[i].defer == 0) calls0 = s->moe_calls;
        if (!cs[i].stream && cs[i].defer > 0 && calls0 > 0 && s->moe_calls * 2 != calls0 * 3) {
            printf("FAIL %s: %lld CPU jobs, expected %lld (one more per deferring layer)\n",
                   cs[i].tag, s->moe_calls, calls0 * 3 / 2);
            fails++;
        }
        free(g.lg);
    }
    for (int d = 0; d < 3; d++) free(cpu[d].lg);
    free(tok);
    wt_close(w);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    if (system(cmd) != 0) printf("could not remove %s\n", base);
    printf("%s (%d failed checks)\n", fails ? "FAIL" : "PASS", fails);
    return fails ? 1 : 0;
}
