/* norm.cu - RMSNorm fused with FP8 activation quantization (see norm.h).
 *
 * One CTA of 256 threads per row. Pass 1 sums squares (fp32, block reduction); pass 2 walks the
 * row in 128-channel blocks, one warp per block, 4 channels per lane (16-byte loads), computes
 * the normalized values, stores y, takes the block amax with a warp reduction and quantizes.
 * The second read of x hits L1/L2. 1/sqrt is IEEE (not rsqrtf) so the CPU reference agrees to
 * rounding.
 */
#include "kernels/cuda/norm.h"
#include "kernels/cuda/common.cuh"

#define NORM_THREADS 256

static __global__ void __launch_bounds__(NORM_THREADS) rmsnorm_kernel(const struct cuk_rmsnorm_args a)
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
                                 &a.q_scale[(size_t)b * a.q_scale_ld + row]);
    }
}

int cuk_rmsnorm(const struct cuk_rmsnorm_args *a, cudaStream_t s)
{
    const char *op = "rmsnorm";
    CUK_REQUIRE(op, a && a->m >= 1 && a->d >= 1 && a->x && a->x_ld >= a->d);
    CUK_REQUIRE(op, a->y || a->q);
    CUK_REQUIRE(op, !a->y || (a->y_ld >= a->d && (a->y_type == CUK_F32 || a->y_type == CUK_BF16)));
    CUK_REQUIRE(op, !a->q || (a->d % 128 == 0 && a->q_ld >= a->d && a->q_ld % 16 == 0 &&
                              a->q_scale && a->q_scale_ld >= a->m));
    CUK_REQUIRE(op, !a->w || a->eps >= 0.0f);
    rmsnorm_kernel<<<a->m, NORM_THREADS, 0, s>>>(*a);
    CUK_LAUNCHED(op);
    return 0;
}
