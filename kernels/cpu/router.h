/* router.h - MoE routing on the CPU: expert scores, group-limited top-k and gate weights.
 *
 * Per token (row of logits [n][n_expert], fp32; the router GEMM is the caller's):
 *   sigmoid (DeepSeek-V3 noaux_tc): s = 1 / (1 + expf(-logit)), b = s + bias (bias may be NULL)
 *     for selection only; with n_group > 1 a group's score is the sum of its 2 largest b.
 *   softmax (DeepSeek-V2): s = softmax(logits) (max subtracted, expf, divided by the sum), b = s;
 *     a group's score is its largest s (group_limited_greedy).
 *   n_group > 1: keep the topk_group best groups of n_expert / n_group consecutive experts (ties:
 *     lower index), b = -inf elsewhere.
 *   ids = top_k experts by b (ties: lower index), in descending order of b;
 *   w = s[ids] (unbiased), divided by their sum if norm_topk_prob, times scale.
 * All fp32; kernels/cuda/router.h computes the same selection on the GPU.
 *
 * Threads: pure over caller-owned buffers (scratch included); callable from any thread.
 */
#ifndef TANDEM_CPUQ_ROUTER_H
#define TANDEM_CPUQ_ROUTER_H

#include <stddef.h>
#include <stdint.h>

struct cpuq_router {
    int n_expert, top_k;
    int n_group, topk_group; /* 1, 1: no group limit; n_expert % n_group == 0 */
    int softmax;             /* 0 = sigmoid (noaux_tc), 1 = softmax (V2) */
    int norm_topk_prob;
    float scale; /* routed_scaling_factor */
};

/* Floats of scratch cpuq_route needs: 3 * n_expert + n_group. */
size_t cpuq_route_scratch(const struct cpuq_router *r);

/* logits [n][n_expert] -> ids [n][top_k], w [n][top_k]. bias: [n_expert] or NULL.
 * top_k must not exceed the experts of topk_group groups. */
void cpuq_route(const struct cpuq_router *r, const float *logits, const float *bias, int n,
                int32_t *ids, float *w, float *scratch);

#endif
