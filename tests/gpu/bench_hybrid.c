/* bench_hybrid.c - the hybrid GPU+CPU decode step, timed (not a test; GPU machine).
 *
 *   bench_hybrid --model DIR [--batch B] [--steps S] [--prompt P] [--placement hybrid|cpu]
 *                [--threads N] [--spin-us N] [--dram-gbs X] [--profile 1]
 *                [--stream off|all|split|auto] [--split-tokens N] [--buffer-mb N]
 *                [--min-tokens N] [--source register|alloc] [--graphs N] [--defer N]
 *                [--attn-mb N]
 *
 * Builds the model with the given placement (default hybrid), prefills B sequences of P random
 * tokens each (one forward per sequence, last-token logits: tokens/s), then runs S decode steps of
 * B tokens (one per sequence) and prints the step time and, per MoE layer and step, where the
 * routed-expert layers' time went (ops_cuda_stats: CPU experts, transfers, GPU work overlapped, GPU
 * idle waiting for the experts). The projection to DeepSeek-V3's 61 layers (3 dense + 58 MoE)
 * scales the measured step: t61 = t_step * 58 / n_moe (dense layers and lm_head counted as if MoE
 * layers: an upper bound), shown beside the bandwidth bound --dram-gbs / 11.5 GB per token (default
 * 103 GB/s, the DRAM read bandwidth measured on the GPU machine). scripts/gpu-run.sh engine instead
 * derives the per-MoE-layer cost from two slices with 1 and 3 MoE layers (the honest projection).
 * --profile 1 also prints the main stream's time per op kind and step (ops_cuda_profile: an event
 * before every op, so each op's GPU time plus the launch gap after it).
 * --stream: routed experts streamed to the GPU during prefill (gpu.prefill_experts on,
 * ops_cuda_stream.c): all = every routed expert on the GPU (prefill_split_tokens 1), split = those
 * with >= --split-tokens tokens (default: the mean per expert), auto = the backend's rate-based
 * split; --min-tokens (default 256), --buffer-mb (default 400) and --source (gpu.stream_source,
 * default register) as the options. Prints the best
 * prefill forward time and, per streamed layer call, the experts on each side, the expert bytes
 * copied, the H2D rate measured in this run (copy-stream time only) and the PCIe bound (bytes /
 * that rate). Prompts up to 16384 tokens (one forward each; --batch 2 gives a warm second one).
 * --graphs N: gpu.cuda_graphs = N (decode steps of up to N tokens replay a CUDA graph of their
 * layers; docs/gpu.md); the first three decode steps are then warm-up (eager graph-mode steps
 * and the capture), and the graphs' replays / captures are printed. --profile 1 turns graphs off
 * (profile events are per op), so compare step times without --profile.
 * --defer N: expert deferral (engine.defer_experts) with N experts per token (docs/gpu.md);
 * forwards with it are not graphed.
 * --attn-mb N: gpu.prefill_attention_mb = N (prompt runs of >= 64 tokens attend through the GEMM
 * op with N MiB of score scratch; kernels/cuda/mla_prefill.h); 0 (default) = the per-query kernel.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"
#include "engine/model/model.h"
#include "engine/model/ops.h"
#include "engine/model/ops_cuda.h"
#include "engine/weights/weights.h"
#include "tests/engine/model_util.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *placement = "hybrid";
    int B = 1, S = 16, P = 64, threads = 0, profile = 0, spin_us = 50;
    int split_tokens = -1, buffer_mb = 400, min_tokens = 256, graphs = 0, defer = 0, attn_mb = 0;
    const char *stream = "off", *source = "register";
    double dram = 103.0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) dir = argv[i + 1];
        else if (!strcmp(argv[i], "--batch")) B = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) S = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--profile")) profile = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--spin-us")) spin_us = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--prompt")) P = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--placement")) placement = argv[i + 1];
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--dram-gbs")) dram = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--stream")) stream = argv[i + 1];
        else if (!strcmp(argv[i], "--split-tokens")) split_tokens = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--buffer-mb")) buffer_mb = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--min-tokens")) min_tokens = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--source")) source = argv[i + 1];
        else if (!strcmp(argv[i], "--graphs")) graphs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--defer")) defer = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--attn-mb")) attn_mb = atoi(argv[i + 1]);
        else dir = NULL, i = argc;
    }
    int smode = !strcmp(stream, "off")     ? 0
                : !strcmp(stream, "all")   ? 1
                : !strcmp(stream, "split") ? 2
                : !strcmp(stream, "auto")  ? 3
                                           : -1;
    const int ssrc = !strcmp(source, "register") ? 0 : !strcmp(source, "alloc") ? 1 : -1;
    if (!dir || B < 1 || B > 64 || S < 1 || P < 1 || P > 16384 || smode < 0 || ssrc < 0 ||
        graphs < 0 || graphs > 64 || attn_mb < 0 || attn_mb > 65536) {
        fprintf(stderr, "usage: bench_hybrid --model DIR [--batch 1..64] [--steps S] "
                        "[--prompt 1..16384] [--placement hybrid|cpu] [--threads N] [--dram-gbs X] "
                        "[--stream off|all|split|auto] [--split-tokens N] [--buffer-mb N] "
                        "[--min-tokens N] [--source register|alloc] [--graphs 0..64] "
                        "[--defer N] [--attn-mb 0..65536]\n");
        return 2;
    }
    char err[ERR_LEN];
    struct wt_model *w = NULL;
    if (wt_open(dir, &w, err) || wt_validate(w, err)) {
        fprintf(stderr, "bench_hybrid: %s\n", err);
        return 1;
    }
    struct ops *o = NULL;
    struct model *m = NULL;
    struct ops_params op = {
        .max_tokens = P > B ? P : B, .n_threads = threads, .pin = 1, .spin_us = spin_us};
    op.gpu_graphs = graphs;
    op.gpu_prefill_attn_mb = attn_mb;
    if (smode) {
        op.gpu_prefill_experts = 1;
        op.gpu_prefill_min_tokens = min_tokens;
        op.gpu_stream_buffer_mb = buffer_mb;
        op.gpu_stream_source = ssrc;
        op.gpu_prefill_split_tokens = smode == 1 ? 1 : smode == 3 ? 0 : split_tokens;
    }
    if (smode == 2 && split_tokens < 0) { /* split at the mean tokens per expert (before the
                                           * backend exists: one registration of the experts) */
        const struct wt_hparams *wh = wt_hparams(w);
        op.gpu_prefill_split_tokens = P * wh->top_k / (wh->n_routed > 0 ? wh->n_routed : 1);
        if (op.gpu_prefill_split_tokens < 2) op.gpu_prefill_split_tokens = 2;
    }
    double t0 = now();
    if (ops_params_parse(&op, placement, NULL, err) || tm_create(w, &op, &o, &m, err)) {
        fprintf(stderr, "bench_hybrid: %s\n", err);
        return 1;
    }
    const struct wt_hparams *hp = model_hparams(m);
    int n_moe = 0;
    for (int l = 0; l < hp->n_layers; l++) n_moe += wt_layer_is_moe(hp, l);
    if (model_set_defer(m, defer, err)) {
        fprintf(stderr, "bench_hybrid: %s\n", err);
        return 1;
    }
    printf("model %s: %d layers (%d MoE), backend %s, load %.1f s, %d deferred experts\n", dir,
           hp->n_layers, n_moe, ops_name(o), now() - t0, defer);
    if (smode) { /* how long pinning the expert weights took (part of the load) */
        struct ops_cuda_stats rs;
        ops_cuda_stats(o, &rs, 0);
        printf("stream registration: %.2f GiB of expert weights pinned in %.2f s\n",
               rs.stream_reg_bytes / (1 << 30), rs.stream_reg_s);
    }
    fflush(stdout);
    struct tkv kv;
    if (tkv_init(&kv, model_n_layers(m), model_kv_dim(m), B, P + S + 1, 64)) return 1;
    int V = model_vocab(m);
    float *logits = malloc((size_t)B * V * sizeof(float));
    int32_t *tok = malloc((size_t)P * 4);
    if (!logits || !tok) return 1;
    unsigned long long r = 88172645463325252ull;
    double tp = 0, tbest = 1e30;
    struct ops_cuda_stats st;
    ops_cuda_stats(o, &st, 1);
    for (int s = 0; s < B; s++) {
        for (int i = 0; i < P; i++) {
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;
            tok[i] = 2 + (int)(r % (unsigned long long)(V - 2));
        }
        int32_t *pp = malloc((size_t)P * 4), *ps = calloc((size_t)P, 4), last = P - 1;
        if (!pp || !ps) return 1;
        for (int i = 0; i < P; i++) pp[i] = i;
        struct model_seq q = tkv_seq(&kv, s);
        struct model_batch pb = {.n_tokens = P,
                                 .tokens = tok,
                                 .pos = pp,
                                 .seq = ps,
                                 .n_seqs = 1,
                                 .seqs = &q,
                                 .n_logits = 1,
                                 .logits_idx = &last};
        double a = now();
        int rc = model_forward(m, &kv.kv, &pb, logits, err);
        free(pp);
        free(ps);
        if (rc) {
            fprintf(stderr, "bench_hybrid: prefill: %s\n", err);
            return 1;
        }
        double ta = now() - a;
        fprintf(stderr, "bench_hybrid: prefill forward %d of %d: %.1f ms\n", s + 1, B, ta * 1e3);
        tp += ta;
        tbest = ta < tbest ? ta : tbest;
    }
    printf("prefill: %d x %d tokens, %.1f tokens/s (one forward per sequence, logits for the last "
           "token); best %.3f ms per forward (stream %s, attention %s)\n",
           B, P, B * P / tp, tbest * 1e3, stream, attn_mb ? "gemm" : "kernel");
    ops_cuda_stats(o, &st, 1);
    if (smode && st.stream_layers > 0) {
        double k = 1.0 / (double)st.stream_layers;
        double gbs = st.stream_copy_s > 0 ? st.stream_bytes / st.stream_copy_s / 1e9 : 0;
        printf("stream: %lld layer calls (split tokens %d); per layer call: GPU %.1f experts "
               "(%.0f pairs), CPU %.1f experts (%.0f pairs), %.1f slot fills, %.1f MB copied; "
               "H2D %.2f GB/s "
               "measured; PCIe bound %.3f ms/layer; CPU experts %.3f ms/layer; rates now %.1f "
               "GB/s, %.2f us per CPU pair\n",
               st.stream_layers, op.gpu_prefill_split_tokens, st.stream_gpu_experts * k,
               st.stream_gpu_pairs * k, st.stream_cpu_experts * k, st.stream_cpu_pairs * k,
               st.stream_groups * k, st.stream_bytes * k / 1e6, gbs,
               gbs > 0 ? st.stream_bytes * k / (gbs * 1e9) * 1e3 : 0.0, st.cpu_experts_s * k * 1e3,
               st.stream_gbs, st.stream_cpu_us_pair);
    }
    if (profile) ops_cuda_profile(o, 1);
    ops_cuda_stats(o, &st, 1);
    int32_t dt[64], pos[64], seq[64], li[64];
    struct model_seq sq[64];
    for (int s = 0; s < B; s++) {
        sq[s] = tkv_seq(&kv, s);
        seq[s] = s;
        li[s] = s;
    }
    double best = 1e30, sum = 0;
    /* graphs: an eager graph-mode step (it may grow buffers, which drops graphs: a second one),
     * then the capture */
    const int warm = graphs && !profile ? 3 : 1;
    if (graphs && profile) fprintf(stderr, "bench_hybrid: --profile turns CUDA graphs off\n");
    for (int step = 0; step < S + warm; step++) {
        for (int s = 0; s < B; s++) {
            dt[s] = 2 + (step * 31 + s * 7) % (V - 2);
            pos[s] = P + step;
        }
        struct model_batch b = {.n_tokens = B,
                                .tokens = dt,
                                .pos = pos,
                                .seq = seq,
                                .n_seqs = B,
                                .seqs = sq,
                                .n_logits = B,
                                .logits_idx = li};
        double a = now();
        if (model_forward(m, &kv.kv, &b, logits, err)) {
            fprintf(stderr, "bench_hybrid: decode: %s\n", err);
            return 1;
        }
        double t = now() - a;
        if (step < warm) { /* warm-up (first use of the decode shapes) */
            ops_cuda_stats(o, &st, 1);
            continue;
        }
        sum += t;
        best = t < best ? t : best;
    }
    ops_cuda_stats(o, &st, 0);
    double step = sum / S;
    printf("decode: batch %d, %d steps: mean %.3f ms/step (best %.3f), %.1f tokens/s\n", B, S,
           step * 1e3, best * 1e3, B / step);
    if (graphs)
        printf("CUDA graphs (gpu.cuda_graphs %d): %lld steps replayed, %lld captured, %lld eager\n",
               graphs, st.graph_replays, st.graph_captures, st.graph_eager);
    if (st.moe_calls > 0) {
        /* with deferral a deferring layer runs two jobs: per layer, not per job */
        double k = 1e3 / (defer > 0 ? (double)n_moe * S : (double)st.moe_calls);
        printf("per MoE layer and step (%lld expert calls): CPU experts %.3f ms, transfers %.3f "
               "ms, GPU overlapped %.3f ms, GPU idle waiting %.3f ms\n",
               st.moe_calls, st.cpu_experts_s * k, st.xfer_s * k, st.overlap_gpu_s * k,
               st.idle_s * k);
        printf("step time / sum of CPU expert time: %.2f\n", step / (st.cpu_experts_s / S));
    }
    if (profile) {
        printf("main stream per step, by op kind (ms; calls):");
        for (int k = 0; k < OPS_PROF_N; k++)
            if (st.op_n[k])
                printf("%s %s %.3f (%lld)", k % 4 ? "," : "\n ", ops_cuda_prof_name(k),
                       st.op_s[k] * 1e3 / S, st.op_n[k] / S);
        printf("\n");
    }
    if (n_moe > 0) {
        double t61 = step * 58.0 / n_moe;
        printf("projection to 61 layers: %.1f ms/step, %.2f tokens/s at batch %d; bandwidth "
               "bound %.2f tokens/s (%.0f GB/s / 11.5 GB) at batch 1\n",
               t61 * 1e3, B / t61, B, dram / 11.5, dram);
    }
    free(logits);
    free(tok);
    tkv_free(&kv);
    tm_destroy(o, m);
    wt_close(w);
    return 0;
}
