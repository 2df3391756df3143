/* norm.h - the two RMSNorms of the CUDA path.
 *
 * cuk_rmsnorm_quant: RMSNorm fused with FP8 activation quantization (one pass over each row).
 * For each of m rows of d fp32 values:
 *   v = w != NULL ? w * x / sqrt(mean(x^2) + eps) : x          (fp32, one rounding at the store)
 *   y = v                                  if y != NULL (CUK_F32 or CUK_BF16)
 *   per 128 channels j: s = max(amax|v|, 1e-4) / 448; q = e4m3(v / s)     if q != NULL
 *     with ue8m0 != 0, s is first rounded up to a power of two, 2^ceil(log2 s), on its bits
 *     (DeepSeek-V3.1's scale_fmt "ue8m0"; bitwise kernels/cpu/fp8.h's ue8m0 mode)
 * q/q_scale are the activation operand of cuk_gemv_fp8 and gemm_fp8 (DeepSeek's act_quant, on
 * fp32 instead of bf16 input; docs/numerics.md). Layouts (row-major):
 *   x [m][x_ld] fp32;  w [d] fp32 (the bf16 norm weight, widened at load);
 *   y [m][y_ld];  q [m][q_ld] e4m3;  q_scale [d/128][q_scale_ld] fp32, token index contiguous.
 * d % 128 == 0 when q != NULL; q_ld % 16 == 0. Budget: reads 4*m*d bytes (twice, 2nd from L1/L2),
 * writes m*d*(|y| + 1) bytes. Its sum of squares is a block reduction, so the norm may differ
 * from the CPU's by an ulp; the hybrid backend uses it with w = NULL (quantization only).
 *
 * cuk_rmsnorm_f32: the plain fp32 RMSNorm bit-identical to the CPU kernel
 * (kernels/cpu/f32.h cpuq_rmsnorm_f32): for each of m rows,
 *   r = 1 / sqrt(sum(x^2) / d + eps),  y = (x * r) * w
 * with the sum of squares in the CPU's 16-lane order and explicit round-to-nearest operations.
 * Why: the forward quantizes RMSNorm outputs to e4m3, and on bf16 model data many values land
 * exactly on e4m3 rounding midpoints, so a 1-ulp difference in the norm's scale flips roundings
 * everywhere and the GPU forward drifts from the CPU one by a few percent (docs/numerics.md).
 * x [m][x_ld], y [m][y_ld] fp32 (y may equal x); w [d]; d <= CUK_RMSNORM_F32_MAX_D; m = 0 is a
 * no-op. Optionally (q != NULL, d % 128 == 0) the same pass quantizes y for an FP8 linear exactly
 * as cuk_rmsnorm_quant with w = NULL does on the stored y (q [m][q_ld] e4m3, q_scale
 * [d/128][q_scale_ld], ue8m0 as above): bitwise what the separate quantization gives, one launch
 * and one read of y fewer.
 *
 * Ownership and threads: as for every launcher (cuk_types.h): device pointers are borrowed until
 * the stream reaches the work, launchers hold no state and may be called from any thread.
 */
#ifndef TANDEM_CUK_NORM_H
#define TANDEM_CUK_NORM_H

#include "kernels/cuda/cuk_types.h"

CUK_EXTERN_C_BEGIN

struct cuk_rmsnorm_quant_args {
    int m, d;
    const float *x;
    int x_ld;
    const float *w; /* NULL: no normalization (plain act_quant / copy) */
    float eps;
    void *y; /* optional */
    int y_type, y_ld;
    uint8_t *q; /* optional */
    int q_ld;
    float *q_scale;
    int q_scale_ld;
    int ue8m0; /* power-of-two scales (above) */
};

int cuk_rmsnorm_quant(const struct cuk_rmsnorm_quant_args *a, cudaStream_t s);

#define CUK_RMSNORM_F32_MAX_D 12288 /* the row is staged in 48 KB of shared memory */

struct cuk_rmsnorm_f32_args {
    int m, d;
    const float *x;
    int x_ld;
    const float *w;
    float eps;
    float *y;
    int y_ld;
    uint8_t *q; /* optional: fused act_quant of y (above) */
    int q_ld;
    float *q_scale;
    int q_scale_ld;
    int ue8m0;
};

int cuk_rmsnorm_f32(const struct cuk_rmsnorm_f32_args *a, cudaStream_t s);

CUK_EXTERN_C_END

#endif
