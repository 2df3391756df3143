/* gemv_bf16.cu - W16A32 small-M linear (see gemv_bf16.h).
 *
 * A CTA of 8 warps owns 4 consecutive weight rows; its warps split K into contiguous ranges and
 * each lane streams 8 bf16 weights (one 16-byte load) of each of the 4 rows per step, multiplying
 * them with the matching 8 activations of every token (fp32, from L1/L2: all CTAs read the same
 * x). MT (the token count rounded up to 1, 2, 4, 8 or 16) is a template parameter so the
 * 4 x MT accumulators stay in registers. Lane partials are summed with shuffles, warps through
 * shared memory in a fixed order (deterministic).
 */
#include "kernels/cuda/gemv_bf16.h"
#include "kernels/cuda/common.cuh"

#define GB_ROWS 4
#define GB_WARPS 8

template <int MT>
static __global__ void __launch_bounds__(GB_WARPS * 32)
    gemv_bf16_kernel(const struct cuk_gemv_bf16_args a)
{
    __shared__ float red[GB_WARPS][GB_ROWS * MT];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int row0 = blockIdx.x * GB_ROWS;
    const int chunks = a.k / 8; /* 16-byte weight chunks per row */
    const int per = (chunks + GB_WARPS - 1) / GB_WARPS;
    const int c0 = warp * per, c1 = min(chunks, c0 + per);
    const uint16_t *wr[GB_ROWS];
#pragma unroll
    for (int r = 0; r < GB_ROWS; r++) wr[r] = a.w + (size_t)min(row0 + r, a.n - 1) * a.k;
    float acc[GB_ROWS][MT];
#pragma unroll
    for (int r = 0; r < GB_ROWS; r++)
#pragma unroll
        for (int t = 0; t < MT; t++) acc[r][t] = 0.0f;

    for (int c = c0 + lane; c < c1; c += 32) {
        uint4 wv[GB_ROWS];
#pragma unroll
        for (int r = 0; r < GB_ROWS; r++) wv[r] = cuk_ld_stream16(wr[r] + (size_t)c * 8);
        float wf[GB_ROWS][8];
#pragma unroll
        for (int r = 0; r < GB_ROWS; r++) {
            const uint32_t u[4] = {wv[r].x, wv[r].y, wv[r].z, wv[r].w};
#pragma unroll
            for (int i = 0; i < 4; i++) {
                wf[r][2 * i] = __uint_as_float(u[i] << 16);
                wf[r][2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
            }
        }
#pragma unroll
        for (int t = 0; t < MT; t++) {
            if (t >= a.m) break;
            const float4 *xp = (const float4 *)(a.x + (size_t)t * a.x_ld + (size_t)c * 8);
            float4 x0 = __ldg(xp), x1 = __ldg(xp + 1);
            const float xv[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
#pragma unroll
            for (int r = 0; r < GB_ROWS; r++)
#pragma unroll
                for (int i = 0; i < 8; i++) acc[r][t] = fmaf(wf[r][i], xv[i], acc[r][t]);
        }
    }
#pragma unroll
    for (int r = 0; r < GB_ROWS; r++)
#pragma unroll
        for (int t = 0; t < MT; t++) {
            float v = cuk_warp_sum(acc[r][t]);
            if (lane == 0) red[warp][r * MT + t] = v;
        }
    __syncthreads();
    for (int e = threadIdx.x; e < GB_ROWS * MT; e += blockDim.x) {
        int r = e / MT, t = e % MT, row = row0 + r;
        if (row >= a.n || t >= a.m) continue;
        float v = 0.0f;
        for (int w2 = 0; w2 < GB_WARPS; w2++) v += red[w2][e];
        float *yp = a.y + (size_t)t * a.y_ld + row;
        *yp = a.accumulate ? *yp + v : v;
    }
}

int cuk_gemv_bf16(const struct cuk_gemv_bf16_args *a, cudaStream_t s)
{
    const char *op = "gemv_bf16";
    CUK_REQUIRE(op, a && a->m >= 1 && a->m <= CUK_GEMV_BF16_MAX_M && a->n >= 1);
    CUK_REQUIRE(op, a->k >= 8 && a->k % 8 == 0 && a->w && a->x && a->y);
    CUK_REQUIRE(op, a->x_ld >= a->k && a->x_ld % 4 == 0 && a->y_ld >= a->n);
    CUK_REQUIRE(op, ((uintptr_t)a->w & 15) == 0 && ((uintptr_t)a->x & 15) == 0);
    unsigned grid = (unsigned)cuk_cdiv(a->n, GB_ROWS);
    if (a->m == 1) gemv_bf16_kernel<1><<<grid, GB_WARPS * 32, 0, s>>>(*a);
    else if (a->m == 2) gemv_bf16_kernel<2><<<grid, GB_WARPS * 32, 0, s>>>(*a);
    else if (a->m <= 4) gemv_bf16_kernel<4><<<grid, GB_WARPS * 32, 0, s>>>(*a);
    else if (a->m <= 8) gemv_bf16_kernel<8><<<grid, GB_WARPS * 32, 0, s>>>(*a);
    else gemv_bf16_kernel<16><<<grid, GB_WARPS * 32, 0, s>>>(*a);
    CUK_LAUNCHED(op);
    return 0;
}
