/* test_engine_stream.c - routed experts streamed to the GPU during prefill (gpu.prefill_experts,
 * engine/model/ops_cuda_stream.c) against the CPU forward.
 *
 * The synth model, the forwards and the comparison are tests/gpu/engine_cmp.h's (shared with
 * test_engine_hot.c): a fresh tiny16 with 16 routed experts, top-4, experts q4_K_M, built on the
 * CPU backend and on the hybrid backend in these configurations:
 *   off    hybrid without streaming (today's path: the distance the GPU forward has anyway);
 *   all    streaming forced: prefill_min_tokens 16, prefill_split_tokens 1 (every routed expert
 *          on the GPU), stream_buffer_mb 1 (two experts a slot: 8 groups a layer, so the two
 *          slots are reused and the copy/compute pipeline runs);
 *   split  prefill_split_tokens = the mean tokens per expert: experts above it on the GPU, the
 *          rest on the CPU pool at the same time (checked: both sides non-empty);
 *   rounds split as above with stream_buffer_mb 1: the GPU part of a layer takes several slot
 *          fills while the CPU pool runs its share (the copy/compute pipeline cycling the two
 *          slots beside an expert job on the side stream; group counts vary by layer, so a layer
 *          may start on either slot);
 *   auto   the split from the backend's rate estimates (reported);
 *   alloc  split as above with gpu.stream_source = alloc: the experts copied into cudaMallocHost
 *          blocks that both the copies and the CPU pool read.
 *   gemm   no streaming, gpu.prefill_attention_mb 1: the two prompt chunks attend through the
 *          GEMM op (kernels/cuda/mla_prefill.h; counted: every layer, both chunks), the short
 *          forwards through the kernel;
 *   gemm+s the GEMM attention with the split streaming of `split`.
 * Each drives the same forwards: a prefill of 256 tokens, a second chunk of 96 tokens of the same
 * sequence, then forwards of 4 and of 1 token (below prefill_min_tokens: the ordinary CPU pool).
 * Asserted: the median relative L2 error of the logits (engine_cmp.h's tolerance) and finite
 * logits; from ops_cuda_stats, that the streamed configurations streamed (layers, GPU experts,
 * bytes > 0; split: CPU experts too) and `off` did not; with stream_buffer_mb 1, that layers
 * needed several slot fills (copy groups: more than 2 per layer call on average for `all`, so
 * slots were reused within a layer; more than 1 for `rounds`, whose GPU share depends on the
 * routing; its count is printed). A layer of
 * DeepSeek-V3 at 2K tokens takes ~32 fills of the default 200 MiB slots; here 16 experts of
 * ~255 KB against 512 KiB slots take up to 8.
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
#include "tests/gpu/engine_cmp.h"

int main(void)
{
    unsigned long long seed = check_seed();
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 1) SKIP("no CUDA device");
    if (!getenv("TANDEM_BIN")) SKIP("TANDEM_BIN unset (convert synth)");
    char base[] = "/tmp/tandem-stream-XXXXXX", dir[600], err[ERR_LEN];
    if (ecmp_make_model(base, seed, dir, sizeof dir)) return 1;
    struct wt_model *w = NULL;
    CHECK_EQ(wt_open(dir, &w, err), 0);
    CHECK_EQ(wt_validate(w, err), 0);
    const struct wt_hparams *hp = wt_hparams(w);
    const int V = hp->vocab_size, n = ECMP_N;
    int32_t *tok = ecmp_tokens(seed, V, n);
    CHECK(tok != NULL);
    const int mean_tok = ECMP_P1 * hp->top_k / hp->n_routed;
    struct cfgs {
        const char *tag;
        int mode, min_tokens, buffer_mb, split, source, attn_mb;
    } cs[] = {
        {"off", 0, 0, 0, 0, 0, 0},           {"all", 1, 16, 1, 1, 0, 0},
        {"split", 1, 16, 0, mean_tok, 0, 0}, {"rounds", 1, 16, 1, mean_tok, 0, 0},
        {"auto", 2, 16, 0, 0, 0, 0},         {"alloc", 1, 16, 0, mean_tok, 1, 0},
        {"gemm", 0, 0, 0, 0, 0, 1},          {"gemm+s", 1, 16, 0, mean_tok, 0, 1},
    };
    const int NC = (int)(sizeof cs / sizeof cs[0]);
    struct ecmp_run cpu = {.lg = malloc((size_t)n * V * sizeof(float))};
    struct ops_params op = {.max_tokens = ECMP_P1, .n_threads = 0, .pin = 0};
    CHECK_EQ(ops_params_parse(&op, "cpu", NULL, err), 0);
    CHECK_EQ(ecmp_drive(w, &op, tok, NULL, NULL, &cpu, err), 0);
    int fails = 0;
    for (int i = 0; i < NC; i++) {
        struct ecmp_run g = {.lg = malloc((size_t)n * V * sizeof(float))};
        struct ops_params q = {.max_tokens = ECMP_P1,
                               .n_threads = 0,
                               .pin = 0,
                               .gpu_prefill_experts = cs[i].mode,
                               .gpu_prefill_min_tokens = cs[i].min_tokens,
                               .gpu_stream_buffer_mb = cs[i].buffer_mb,
                               .gpu_prefill_split_tokens = cs[i].split,
                               .gpu_stream_source = cs[i].source,
                               .gpu_prefill_attn_mb = cs[i].attn_mb};
        CHECK_EQ(ops_params_parse(&q, "hybrid", NULL, err), 0);
        int rc = ecmp_drive(w, &q, tok, NULL, NULL, &g, err);
        if (rc) {
            printf("FAIL %s: forward: %s\n", cs[i].tag, err);
            fails++;
            free(g.lg);
            continue;
        }
        const struct ops_cuda_stats *s = &g.st;
        printf("%-6s streamed %lld layer calls: GPU %lld experts / %lld pairs, CPU %lld experts / "
               "%lld pairs; %lld slot fills; %.1f MB copied in %.3f ms (%.1f GB/s); rates now "
               "%.1f GB/s, %.2f us per CPU pair; %.1f MB registered in %.3f s\n",
               cs[i].tag, s->stream_layers, s->stream_gpu_experts, s->stream_gpu_pairs,
               s->stream_cpu_experts, s->stream_cpu_pairs, s->stream_groups, s->stream_bytes / 1e6,
               s->stream_copy_s * 1e3,
               s->stream_copy_s > 0 ? s->stream_bytes / s->stream_copy_s / 1e9 : 0.0, s->stream_gbs,
               s->stream_cpu_us_pair, s->stream_reg_bytes / 1e6, s->stream_reg_s);
        fails += ecmp_compare(cs[i].tag, g.lg, cpu.lg, V, n);
        /* the 256- and 96-token chunks are runs of >= 64 tokens; the 4- and 1-token forwards
         * keep the kernel */
        if ((cs[i].attn_mb > 0) != (s->attn_gemm_runs > 0) ||
            (cs[i].attn_mb && s->attn_gemm_tokens != (long long)(hp->n_layers) * ECMP_P1 +
                                                         (long long)hp->n_layers * ECMP_P2)) {
            printf("FAIL %s: %lld prompt runs (%lld tokens) through the GEMM attention\n",
                   cs[i].tag, s->attn_gemm_runs, s->attn_gemm_tokens);
            fails++;
        }
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
        if (cs[i].mode && cs[i].buffer_mb == 1 &&
            s->stream_groups < (cs[i].split == 1 ? 2 : 1) * s->stream_layers + 1) {
            printf("FAIL %s: %lld slot fills in %lld layer calls: the slots were not cycled\n",
                   cs[i].tag, s->stream_groups, s->stream_layers);
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
