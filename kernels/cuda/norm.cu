/* norm.cu - the two RMSNorms (see norm.h).
 *
 * cuk_rmsnorm_quant: one CTA of 256 threads per row. Pass 1 sums squares (fp32, block
 * reduction); pass 2 walks the row in 128-channel blocks, one warp per block, 4 channels per lane
 * (16-byte loads), computes the normalized values, stores y, takes the block amax with a warp
 * reduction and quantizes. The second read of x hits L1/L2. 1/sqrt is IEEE (not rsqrtf) so the
 * CPU reference agrees to rounding.
 * cuk_rmsnorm_f32: one CTA per row, the row staged in shared memory, the CPU's lane sums (below).
 * Threads: launchers hold no state.
 */
#include "kernels/cuda/norm.h"
#include "kernels/cuda/common.cuh"

#define NORM_THREADS 256

static __global__ void __launch_bounds__(NORM_THREADS)
    rmsnorm_quant_kernel(const struct cuk_rmsnorm_quant_args a)
{
    __shared__ float red[32];
    const int row = blockIdx.x;
    const float *x = a.x + (size_t)row * a.x_ld;
    float inv = 1.0f;
    if (a.w) {
        float ss = 0.0f;
        for (int i = threadIdx.x; i < a.d; i += blockDim.x) ss += x[i] * x[i];
        ss = cuk_block_sum(ss, red);
        inv = 1.0f / sqrtf(ss / (float)a.d + a.eps);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const int nblk = cuk_cdiv(a.d, 128);
    for (int b = warp; b < nblk; b += nw) {
        float v[4];
        int c0 = b * 128 + lane * 4;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int c = c0 + i;
            v[i] = 0.0f;
            if (c < a.d) v[i] = a.w ? x[c] * inv * a.w[c] : x[c];
        }
        if (a.y) {
#pragma unroll
            for (int i = 0; i < 4; i++)
                if (c0 + i < a.d) cuk_store(a.y, (size_t)row * a.y_ld + c0 + i, a.y_type, v[i], 0);
        }
        if (a.q)
            cuk_quant_e4m3_block(v, lane, (uint32_t *)(a.q + (size_t)row * a.q_ld + c0),
                                 &a.q_scale[(size_t)b * a.q_scale_ld + row], a.ue8m0);
    }
}

int cuk_rmsnorm_quant(const struct cuk_rmsnorm_quant_args *a, cudaStream_t s)
{
    const char *op = "rmsnorm_quant";
    CUK_REQUIRE(op, a && a->m >= 1 && a->d >= 1 && a->x && a->x_ld >= a->d);
    CUK_REQUIRE(op, a->y || a->q);
    CUK_REQUIRE(op, !a->y || (a->y_ld >= a->d && (a->y_type == CUK_F32 || a->y_type == CUK_BF16)));
    CUK_REQUIRE(op, !a->q || (a->d % 128 == 0 && a->q_ld >= a->d && a->q_ld % 16 == 0 &&
                              a->q_scale && a->q_scale_ld >= a->m));
    CUK_REQUIRE(op, !a->w || a->eps >= 0.0f);
    rmsnorm_quant_kernel<<<a->m, NORM_THREADS, 0, s>>>(*a);
    CUK_LAUNCHED(op);
    return 0;
}

/* One CTA per row: the row is staged in shared memory by all threads (coalesced), 16 threads of
 * warp 0 then run the CPU's 16 sequential lane sums out of shared memory (the order is fixed, so
 * the chains cannot be split further; from shared memory each step is a few cycles instead of a
 * global-memory round trip), warp 0 reduces as the CPU does (lanes 0..7 += 8..15, then 0..3 +=
 * 4..7, then (0 + 2) + (1 + 3)), and all threads write y. */
static __global__ void __launch_bounds__(NORM_THREADS)
    rmsnorm_f32_kernel(const struct cuk_rmsnorm_f32_args a)
{
    const float *x = a.x, *g = a.w;
    const int ldx = a.x_ld, dim = a.d, ldy = a.y_ld;
    const float eps = a.eps;
    float *y = a.y;
    __shared__ float xs[CUK_RMSNORM_F32_MAX_D];
    __shared__ float rs;
    const int row = blockIdx.x, tid = threadIdx.x, lane = tid & 31;
    const float *xr = x + (size_t)row * ldx;
    for (int i = tid; i < dim; i += NORM_THREADS) xs[i] = xr[i];
    __syncthreads();
    if (tid < 32) {
        float acc = 0.0f;
        if (lane < 16) {
            int full = dim / 16 * 16, i = lane;
#pragma unroll 8
            for (; i < full; i += 16) acc = __fadd_rn(acc, __fmul_rn(xs[i], xs[i]));
            if (i < dim) acc = __fadd_rn(acc, __fmul_rn(xs[i], xs[i])); /* tail: i & 15 == lane */
        }
        float o = __shfl_down_sync(0xffffffffu, acc, 8);
        if (lane < 8) acc = __fadd_rn(acc, o);
        o = __shfl_down_sync(0xffffffffu, acc, 4);
        if (lane < 4) acc = __fadd_rn(acc, o);
        float a2 = __shfl_down_sync(0xffffffffu, acc, 2); /* lane 0: acc2, lane 1: acc3 */
        float p = __fadd_rn(acc, a2);                     /* lane 0: l0+l2, lane 1: l1+l3 */
        float p1 = __shfl_down_sync(0xffffffffu, p, 1);
        if (lane == 0)
            rs = __fdiv_rn(1.0f,
                           __fsqrt_rn(__fadd_rn(__fdiv_rn(__fadd_rn(p, p1), (float)dim), eps)));
    }
    __syncthreads();
    const float r = rs;
    float *yr = y + (size_t)row * ldy;
    if (!a.q) {
        for (int i = tid; i < dim; i += NORM_THREADS) yr[i] = __fmul_rn(__fmul_rn(xs[i], r), g[i]);
        return;
    }
    /* fused act_quant: one warp per 128-channel block, the values rounded as stored above */
    const int warp = tid >> 5, nblk = dim / 128;
    for (int b = warp; b < nblk; b += NORM_THREADS / 32) {
        int c0 = b * 128 + lane * 4;
        float v[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            v[i] = __fmul_rn(__fmul_rn(xs[c0 + i], r), g[c0 + i]);
            yr[c0 + i] = v[i];
        }
        cuk_quant_e4m3_block(v, lane, (uint32_t *)(a.q + (size_t)row * a.q_ld + c0),
                             &a.q_scale[(size_t)b * a.q_scale_ld + row], a.ue8m0);
    }
}

int cuk_rmsnorm_f32(const struct cuk_rmsnorm_f32_args *a, cudaStream_t s)
{
    const char *op = "rmsnorm_f32";
    CUK_REQUIRE(op, a && a->m >= 0);
    if (a->m == 0) return 0;
    CUK_REQUIRE(op, a->d >= 1 && a->d <= CUK_RMSNORM_F32_MAX_D && a->x && a->w && a->y &&
                        a->x_ld >= a->d && a->y_ld >= a->d);
    CUK_REQUIRE(op, !a->q || (a->d % 128 == 0 && a->q_ld >= a->d && a->q_ld % 16 == 0 &&
                              a->q_scale && a->q_scale_ld >= a->m));
    rmsnorm_f32_kernel<<<a->m, NORM_THREADS, 0, s>>>(*a);
    CUK_LAUNCHED(op);
    return 0;
}
