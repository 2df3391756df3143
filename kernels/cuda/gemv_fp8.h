/* gemv_fp8.h - FP8 block-scaled linear for decode-sized M (1..16 tokens): y = x W^T.
 *
 * Semantics (DeepSeek's fp8_gemm; docs/model.md §3):
 *   y[m,n] = sum_j ( sum_{k in block j} qx[m,k] qw[n,k] ) * sx[j,m] * sw[n/128, j]
 * Each 128-wide K block is a separate dot (tensor-core mma, e4m3 x e4m3 -> f32), scaled, then
 * added to an fp32 accumulator. N need not be a multiple of 128 (kv_a: 576 rows); K must be a
 * multiple of 128 (act_quant asserts the same).
 *
 * Layouts (row-major, device memory, 16-byte aligned rows):
 *   w        [n][k]         e4m3, row n at w + n*k
 *   w_scale  [ceil(n/128)][w_scale_ld]  fp32 multipliers (weight_scale_inv); w_scale_ld >= k/128
 *   x        [m][x_ld]      e4m3 activations, x_ld >= k, multiple of 16
 *   x_scale  [k/128][x_scale_ld]  fp32, token index contiguous (cuBLASLt's VEC128 layout, the
 *                           one cuk_rmsnorm writes), x_scale_ld >= m
 *   y        [m][y_ld]      CUK_F32 or CUK_BF16; accumulate != 0 adds to y (residual fusion)
 * Budget: reads n*k weight bytes once (plus m*k activation bytes, mostly from L2), 2*m*n*k FLOP.
 * Shapes with few row tiles split K across blocks; those need `workspace` of
 * cuk_gemv_fp8_workspace_size() bytes, zeroed once at allocation (it holds counters that each call
 * leaves at zero). One workspace, sized for the largest shape, serves every shape and tuning, as
 * long as the calls are serialized (one stream).
 * Ownership and threads: as for every launcher (cuk_types.h): device pointers (the workspace
 * included) are borrowed until the stream reaches the work; launchers hold no state and may be
 * called from any thread, but calls sharing a workspace must be on one stream.
 */
#ifndef TANDEM_CUK_GEMV_FP8_H
#define TANDEM_CUK_GEMV_FP8_H

#include "kernels/cuda/cuk_types.h"

CUK_EXTERN_C_BEGIN

#define CUK_GEMV_FP8_MAX_M 16

struct cuk_gemv_fp8_args {
    int m, n, k;
    const uint8_t *w;
    const float *w_scale;
    int w_scale_ld;
    const uint8_t *x;
    int x_ld;
    const float *x_scale;
    int x_scale_ld;
    void *y;
    int y_ld;
    int y_type; /* enum cuk_dtype */
    int accumulate;
    void *workspace; /* may be NULL when cuk_gemv_fp8_workspace_size() is 0 */
    size_t workspace_size;
};

/* Bytes of workspace the shape needs on the current device with the production tuning (0 when it
 * does not split K). */
size_t cuk_gemv_fp8_workspace_size(int m, int n, int k);

int cuk_gemv_fp8(const struct cuk_gemv_fp8_args *a, cudaStream_t s);

/* 1 when the own kernel is the faster path for this shape on the H100 (m <= 8 always; m 9..16
 * unless its grid is 1 to 1.5 waves, measured slower than cuBLASLt); gemm_fp8_linear follows it. */
int cuk_gemv_fp8_prefer(int m, int n, int k);

/* Tuning knobs, for bench_gpu's comparison of variants (NULL = the production choice):
 * unroll = K blocks per load batch (2 or 4), occupancy = ask ptxas for 4 (m <= 8) / 3 CTAs per SM,
 * ctas_per_sm = how many CTAs per SM the K split aims for when row tiles are few, late_x = load
 * each block's activations just before its mmas (fewer live registers). The workspace size
 * depends on ctas_per_sm. */
struct cuk_gemv_fp8_tune {
    int unroll, occupancy, ctas_per_sm, late_x;
};
size_t cuk_gemv_fp8_workspace_size_tuned(int m, int n, int k, const struct cuk_gemv_fp8_tune *t);
int cuk_gemv_fp8_tuned(const struct cuk_gemv_fp8_args *a, const struct cuk_gemv_fp8_tune *t,
                       cudaStream_t s);

CUK_EXTERN_C_END

#endif
