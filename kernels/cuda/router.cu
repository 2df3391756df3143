/* router.cu - group-limited top-k routing (see router.h).
 *
 * One CTA per token, one thread per expert (blockDim = n_experts rounded up to a warp). Group
 * scores are computed serially by one thread per group (groups are small: 32 experts in V3), the
 * groups are chosen by thread 0, then top_k rounds of a block-wide argmax pick the experts; ties
 * go to the lower index in every comparison, so the result is deterministic and matches a
 * straightforward CPU reference.
 */
#include "kernels/cuda/router.h"
#include "kernels/cuda/common.cuh"

#define ROUTER_MAX_E 1024
#define ROUTER_MAX_K 32

/* better(a, b): a has a larger value, or the same value and a lower index */
static __device__ __forceinline__ bool better(float va, int ia, float vb, int ib)
{
    return va > vb || (va == vb && ia < ib);
}

static __global__ void router_kernel(const struct cuk_router_args a)
{
    __shared__ float s[ROUTER_MAX_E], b[ROUTER_MAX_E];
    __shared__ float red[32];
    __shared__ float gscore[ROUTER_MAX_E];
    __shared__ int keep[ROUTER_MAX_E];
    __shared__ float wv[32];
    __shared__ int wi[32];
    __shared__ int sel[ROUTER_MAX_K];
    const int e = threadIdx.x, E = a.n_experts, row = blockIdx.x;
    const float *lg = a.logits + (size_t)row * E;
    float l = e < E ? lg[e] : -INFINITY;
    float sc;
    if (a.scoring == CUK_ROUTER_SOFTMAX) {
        float mx = cuk_block_max(l, red);
        float ex = e < E ? expf(l - mx) : 0.0f;
        float sum = cuk_block_sum(ex, red);
        sc = ex / sum;
    } else {
        sc = 1.0f / (1.0f + expf(-l));
    }
    if (e < E) {
        s[e] = sc;
        b[e] = a.bias ? sc + a.bias[e] : sc;
    }
    __syncthreads();
    if (a.n_group > 1) {
        int gs = E / a.n_group;
        if (e < a.n_group) {
            float t1 = -INFINITY, t2 = -INFINITY;
            for (int i = e * gs; i < (e + 1) * gs; i++) {
                float v = b[i];
                if (v > t1) {
                    t2 = t1;
                    t1 = v;
                } else if (v > t2) {
                    t2 = v;
                }
            }
            /* softmax (V2 group_limited_greedy): the group's max; sigmoid: top-2 sum */
            gscore[e] = a.scoring == CUK_ROUTER_SOFTMAX || gs < 2 ? t1 : t1 + t2;
            keep[e] = 0;
        }
        __syncthreads();
        if (e == 0) {
            for (int r = 0; r < a.topk_group; r++) {
                int best = -1;
                for (int g = 0; g < a.n_group; g++)
                    if (!keep[g] && (best < 0 || gscore[g] > gscore[best])) best = g;
                keep[best] = 1;
            }
        }
        __syncthreads();
        if (e < E && !keep[e / gs]) b[e] = -INFINITY;
        __syncthreads();
    }
    const int lane = e & 31, warp = e >> 5, nw = blockDim.x >> 5;
    bool taken = false;
    for (int k = 0; k < a.top_k; k++) {
        float v = (e < E && !taken) ? b[e] : -INFINITY;
        int idx = (e < E && !taken) ? e : 0x7fffffff;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            float v2 = __shfl_xor_sync(0xffffffffu, v, o);
            int i2 = __shfl_xor_sync(0xffffffffu, idx, o);
            if (better(v2, i2, v, idx)) {
                v = v2;
                idx = i2;
            }
        }
        if (lane == 0) {
            wv[warp] = v;
            wi[warp] = idx;
        }
        __syncthreads();
        if (e == 0) {
            float bv = wv[0];
            int bi = wi[0];
            for (int w = 1; w < nw; w++)
                if (better(wv[w], wi[w], bv, bi)) {
                    bv = wv[w];
                    bi = wi[w];
                }
            sel[k] = bi;
        }
        __syncthreads();
        if (sel[k] == e) taken = true;
    }
    if (e == 0) {
        float sum = 0.0f;
        for (int k = 0; k < a.top_k; k++) sum += s[sel[k]];
        for (int k = 0; k < a.top_k; k++) {
            float w = s[sel[k]];
            if (a.norm_topk) w = w / sum;
            a.ids[(size_t)row * a.top_k + k] = sel[k];
            a.weights[(size_t)row * a.top_k + k] = w * a.scaling;
        }
    }
}

int cuk_router(const struct cuk_router_args *a, cudaStream_t s)
{
    const char *op = "router";
    CUK_REQUIRE(op, a && a->m >= 1 && a->n_experts >= 1 && a->n_experts <= ROUTER_MAX_E);
    CUK_REQUIRE(op, a->top_k >= 1 && a->top_k <= ROUTER_MAX_K && a->top_k <= a->n_experts);
    CUK_REQUIRE(op, a->n_group >= 1 && a->n_experts % a->n_group == 0);
    CUK_REQUIRE(op, a->n_group == 1 || (a->topk_group >= 1 && a->topk_group <= a->n_group &&
                                        a->topk_group * (a->n_experts / a->n_group) >= a->top_k));
    CUK_REQUIRE(op, a->scoring == CUK_ROUTER_SIGMOID || a->scoring == CUK_ROUTER_SOFTMAX);
    CUK_REQUIRE(op, a->logits && a->ids && a->weights);
    int threads = cuk_cdiv(a->n_experts, 32) * 32;
    router_kernel<<<a->m, threads, 0, s>>>(*a);
    CUK_LAUNCHED(op);
    return 0;
}
