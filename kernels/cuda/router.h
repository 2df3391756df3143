/* router.h - MoE routing: scores, group-limited top-k, gate weights (spec 3.6).
 *
 * Per token (row of logits [m][n_experts], fp32; the router GEMM is done by the caller):
 *   s = sigmoid(logits) (CUK_ROUTER_SIGMOID) or softmax(logits) (CUK_ROUTER_SOFTMAX), fp32
 *   b = s + bias (bias may be NULL) -- used only for selection
 *   n_group > 1: group score = sum of the two largest b in each group of n_experts/n_group
 *                consecutive experts (softmax: the largest, V2's group_limited_greedy); keep
 *                the topk_group best groups, b = -inf elsewhere
 *   ids = top_k experts by b (ties: lower index first), in descending order of b
 *   w = s[ids]; if norm_topk: w /= sum(w); w *= scaling
 * Outputs ids [m][top_k] int32 and weights [m][top_k] fp32. n_experts <= 1024, top_k <= 32.
 * Ownership and threads: as for every launcher (cuk_types.h): device pointers are borrowed until
 * the stream reaches the work, launchers hold no state and may be called from any thread.
 */
#ifndef TANDEM_CUK_ROUTER_H
#define TANDEM_CUK_ROUTER_H

#include "kernels/cuda/cuk_types.h"

CUK_EXTERN_C_BEGIN

enum cuk_router_scoring { CUK_ROUTER_SIGMOID = 0, CUK_ROUTER_SOFTMAX = 1 };

struct cuk_router_args {
    int m, n_experts, n_group, topk_group, top_k;
    int scoring; /* enum cuk_router_scoring */
    int norm_topk;
    float scaling;       /* routed_scaling_factor */
    const float *logits; /* [m][n_experts] */
    const float *bias;   /* [n_experts] e_score_correction_bias, or NULL */
    int32_t *ids;        /* [m][top_k] */
    float *weights;      /* [m][top_k] */
};

int cuk_router(const struct cuk_router_args *a, cudaStream_t s);

CUK_EXTERN_C_END

#endif
