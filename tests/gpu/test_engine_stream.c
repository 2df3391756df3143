/* test_engine_stream.c - routed experts streamed to the GPU during prefill (gpu.prefill_experts,
 * engine/model/ops_cuda_stream.c) against the CPU forward.
 *
 * A fresh synth model (tiny with 16 heads, 16 routed experts, top-4, experts q4_K_M: gate/up
 * Q4_K + down Q6_K, so the GPU path takes mixed types) is built on the CPU backend and on the
 * hybrid backend in these configurations:
 *   off    hybrid without streaming (today's path: the distance the GPU forward has anyway);
 *   all    streaming forced: prefill_min_tokens 16, prefill_split_tokens 1 (every routed expert
 *          on the GPU), stream_buffer_mb 1 (two experts a slot: 8 groups a layer, so the two
 *          slots are reused and the copy/compute pipeline runs);
 *   split  prefill_split_tokens = the mean tokens per expert: experts above it on the GPU, the
 *          rest on the CPU pool at the same time (checked: both sides non-empty);
 *   auto   the split from the backend's rate estimates (reported).
 * Each drives the same forwards: a prefill of P1 tokens (one sequence, logits at every
 * position), a second chunk of P2 tokens of the same sequence, and 4 decode-size forwards of
 * 4 tokens (below prefill_min_tokens: the ordinary CPU pool).
 * Numerics: the GPU experts compute with bf16 activations and bf16-rounded weights where the CPU
 * quantizes activations to Q8_K (docs/numerics.md section 5: the GPU op is the closer of the two
 * to the exact result; ~1-5% relative L2 between them per layer output), and the forward is
 * chaotic at rounding level on random synth models (test_engine_gpu.c), so logits are compared
 * with the tolerances test_engine_gpu uses: asserted median relative L2 error over positions
 * <= 0.1 and every logit finite; reported: the max, and top-1 agreement with the CPU (expected
 * >= 90%, as for `off`). Asserted from ops_cuda_stats: the streamed configurations streamed
 * (layers, GPU experts, bytes > 0; split: CPU experts too) and `off` did not.
 * Seeds are fresh each run (TANDEM_TEST_SEED replays). Exits 77 without a GPU or without
 * TANDEM_BIN (the tandem executable, for `convert synth`).
 */
#include <math.h>
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
#include "tests/engine/model_util.h"

#define P1 256
#define P2 96
#define ND 4  /* decode-size forwards */
#define NDT 4 /* their tokens */
#define TOL_MED 0.1

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct run {
    float *lg; /* (P1 + P2 + ND * NDT) x V logits */
    struct ops_cuda_stats st;
};

static int drive(const struct wt_model *w, const struct ops_params *op, const int32_t *tok,
                 struct run *r, char *err)
{
    struct ops *o = NULL;
    struct model *m = NULL;
    int rc = tm_create(w, op, &o, &m, err);
    if (rc) return rc;
    int V = model_vocab(m), n = P1 + P2 + ND * NDT;
    struct tkv kv;
    if (tkv_init(&kv, model_n_layers(m), model_kv_dim(m), 1, n + 16, 16)) {
        tm_destroy(o, m);
        return err_set(err, ERR_NOMEM, "kv");
    }
    ops_cuda_stats(o, &r->st, 1);
    rc = run_seq(m, &kv, 0, tok, P1, 0, r->lg, err);
    if (!rc) rc = run_seq(m, &kv, 0, tok + P1, P2, P1, r->lg + (size_t)P1 * V, err);
    for (int d = 0; !rc && d < ND; d++) {
        int p0 = P1 + P2 + d * NDT;
        rc = run_seq(m, &kv, 0, tok + p0, NDT, p0, r->lg + (size_t)p0 * V, err);
    }
    ops_cuda_stats(o, &r->st, 0);
    tkv_free(&kv);
    tm_destroy(o, m);
    return rc;
}

/* logits of run a against the CPU run c: returns failed checks */
static int compare(const char *tag, const float *a, const float *c, int V, int n)
{
    double *e = malloc((size_t)n * sizeof *e);
    int agree = 0, finite = 1;
    for (int t = 0; t < n; t++) {
        const float *x = a + (size_t)t * V, *y = c + (size_t)t * V;
        for (int v = 0; v < V; v++) finite &= isfinite(x[v]) != 0;
        e[t] = rel_err_f(x, y, V);
        agree += argmax_fl(x, V) == argmax_fl(y, V);
    }
    qsort(e, (size_t)n, sizeof *e, cmp_d);
    double med = e[n / 2], mx = e[n - 1];
    printf("%-6s logits vs CPU over %d positions: rel L2 median %.2e, max %.2e; top-1 agreement "
           "%d/%d (%.1f%%)%s\n",
           tag, n, med, mx, agree, n, 100.0 * agree / n, finite ? "" : "; NON-FINITE logits");
    free(e);
    int fails = 0;
    if (!finite) fails++;
    if (!(med <= TOL_MED)) {
        printf("FAIL %s: median error %.3e > %.1e\n", tag, med, TOL_MED);
        fails++;
    }
    return fails;
}

int main(void)
{
    unsigned long long seed = check_seed();
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 1) SKIP("no CUDA device");
    if (!getenv("TANDEM_BIN")) SKIP("TANDEM_BIN unset (convert synth)");
    char base[] = "/tmp/tandem-stream-XXXXXX", cfg[600], dir[600], err[ERR_LEN];
    CHECK(mkdtemp(base));
    snprintf(cfg, sizeof cfg, "%s/tiny16.json", base);
    snprintf(dir, sizeof dir, "%s/model", base);
    FILE *f = fopen(cfg, "w");
    CHECK(f);
    fprintf(f,
            "{\"architectures\": [\"DeepseekV3ForCausalLM\"], \"model_type\": \"deepseek_v3\", "
            "\"vocab_size\": 768,"
            " \"hidden_size\": 512, \"intermediate_size\": 1024, \"moe_intermediate_size\": 256,"
            " \"num_hidden_layers\": 3, \"num_attention_heads\": 16, \"num_key_value_heads\": 16,"
            " \"kv_lora_rank\": 512, \"qk_nope_head_dim\": 128, \"qk_rope_head_dim\": 64,"
            " \"v_head_dim\": 128, \"q_lora_rank\": 256, \"n_routed_experts\": 16,"
            " \"n_shared_experts\": 1, \"num_experts_per_tok\": 4, \"n_group\": 4,"
            " \"topk_group\": 2, \"first_k_dense_replace\": 1, \"moe_layer_freq\": 1,"
            " \"routed_scaling_factor\": 2.5, \"norm_topk_prob\": true,"
            " \"scoring_func\": \"sigmoid\", \"topk_method\": \"noaux_tc\","
            " \"rms_norm_eps\": 1e-6, \"rope_theta\": 10000.0,"
            " \"max_position_embeddings\": 4096, \"bos_token_id\": 0, \"eos_token_id\": 1,"
            " \"hidden_act\": \"silu\", \"tie_word_embeddings\": false,"
            " \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4.0,"
            " \"original_max_position_embeddings\": 1024, \"beta_fast\": 32.0,"
            " \"beta_slow\": 1.0, \"mscale\": 1.0, \"mscale_all_dim\": 1.0}}\n");
    fclose(f);
    int rc = make_synth(cfg, seed % 1000000007ull, dir, "--experts q4_K_M");
    if (rc) {
        printf("synth failed (%d), see %s.log\n", rc, dir);
        return 1;
    }
    struct wt_model *w = NULL;
    CHECK_EQ(wt_open(dir, &w, err), 0);
    CHECK_EQ(wt_validate(w, err), 0);
    const struct wt_hparams *hp = wt_hparams(w);
    const int V = hp->vocab_size, n = P1 + P2 + ND * NDT;
    int32_t *tok = malloc((size_t)n * sizeof *tok);
    unsigned long long r = seed | 1;
    for (int i = 0; i < n; i++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        tok[i] = 2 + (int)(r % (unsigned long long)(V - 2));
    }
    const int mean_tok = P1 * hp->top_k / hp->n_routed;
    struct cfgs {
        const char *tag;
        int mode, min_tokens, buffer_mb, split;
    } cs[] = {
        {"off", 0, 0, 0, 0},
        {"all", 1, 16, 1, 1},
        {"split", 1, 16, 0, mean_tok},
        {"auto", 2, 16, 0, 0},
    };
    const int NC = (int)(sizeof cs / sizeof cs[0]);
    struct run cpu = {.lg = malloc((size_t)n * V * sizeof(float))};
    struct ops_params op = {.max_tokens = P1, .n_threads = 0, .pin = 0};
    CHECK_EQ(ops_params_parse(&op, "cpu", NULL, err), 0);
    CHECK_EQ(drive(w, &op, tok, &cpu, err), 0);
    int fails = 0;
    for (int i = 0; i < NC; i++) {
        struct run g = {.lg = malloc((size_t)n * V * sizeof(float))};
        struct ops_params q = {.max_tokens = P1,
                               .n_threads = 0,
                               .pin = 0,
                               .gpu_prefill_experts = cs[i].mode,
                               .gpu_prefill_min_tokens = cs[i].min_tokens,
                               .gpu_stream_buffer_mb = cs[i].buffer_mb,
                               .gpu_prefill_split_tokens = cs[i].split};
        CHECK_EQ(ops_params_parse(&q, "hybrid", NULL, err), 0);
        rc = drive(w, &q, tok, &g, err);
        if (rc) {
            printf("FAIL %s: forward: %s\n", cs[i].tag, err);
            fails++;
            free(g.lg);
            continue;
        }
        const struct ops_cuda_stats *s = &g.st;
        printf("%-6s streamed %lld layer calls: GPU %lld experts / %lld pairs, CPU %lld experts / "
               "%lld pairs; %.1f MB copied in %.3f ms (%.1f GB/s); rates now %.1f GB/s, %.2f us "
               "per CPU pair\n",
               cs[i].tag, s->stream_layers, s->stream_gpu_experts, s->stream_gpu_pairs,
               s->stream_cpu_experts, s->stream_cpu_pairs, s->stream_bytes / 1e6,
               s->stream_copy_s * 1e3,
               s->stream_copy_s > 0 ? s->stream_bytes / s->stream_copy_s / 1e9 : 0.0, s->stream_gbs,
               s->stream_cpu_us_pair);
        fails += compare(cs[i].tag, g.lg, cpu.lg, V, n);
        if (cs[i].mode == 0 && s->stream_layers) {
            printf("FAIL off: streamed\n");
            fails++;
        }
        if (cs[i].mode && (s->stream_layers < 2 * (hp->n_layers - 1) || s->stream_gpu_experts < 1 ||
                           s->stream_bytes <= 0)) {
            printf("FAIL %s: did not stream every MoE layer of the two prefill chunks\n",
                   cs[i].tag);
            fails++;
        }
        if (cs[i].split == 1 && s->stream_cpu_pairs) {
            printf("FAIL all: %lld pairs on the CPU\n", s->stream_cpu_pairs);
            fails++;
        }
        if (cs[i].split > 1 && (s->stream_cpu_experts < 1 || s->stream_gpu_experts < 1)) {
            printf("FAIL split: GPU %lld / CPU %lld experts: not split\n", s->stream_gpu_experts,
                   s->stream_cpu_experts);
            fails++;
        }
        free(g.lg);
    }
    free(cpu.lg);
    free(tok);
    wt_close(w);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    if (system(cmd) != 0) printf("could not remove %s\n", base);
    printf("%s (%d failed checks)\n", fails ? "FAIL" : "PASS", fails);
    return fails ? 1 : 0;
}
