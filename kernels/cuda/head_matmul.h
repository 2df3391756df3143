/* head_matmul.h - per-head matrices stored as FP8 (the absorbed MLA halves W_UK / W_UV of kv_b):
 * expansion to fp32, and a per-head matrix product that reads the FP8 bytes directly for
 * decode-sized batches.
 *
 * Weights: W e4m3 [rows][cols] with 128x128 block scales [ceil(rows/128)][scale_ld] fp32;
 * W[r][c] = e4m3(q[r][c]) * scale[r/128][c/128], one fp32 rounding (__fmul_rn) per element: the
 * values kernels/cpu/fp8.h cpuq_fp8_dequant gives, bit for bit.
 *
 * cuk_fp8_to_f32: out [rows][cols] = W.
 * cuk_head_matmul_fp8: head h's matrix W_h = rows r0 + h * head_rows .. + rows - 1 of W (all
 * cols), on n tokens x n_heads vectors (x[t,h,:] at x + t*x_ld_tok + h*x_ld_head, likewise y):
 *   trans = 0: y[t,h,r] = sum_c W_h[r][c] x[t,h,c]
 *   trans = 1: y[t,h,c] = sum_r W_h[r][c] x[t,h,r]
 * summed in fp32 in another order than the CPU's (rounding-level differences). Only the shapes
 * cuk_head_matmul_fp8_fits accepts (1..16 tokens, cols = 512, 1..256 rows; trans = 1 needs y
 * 16-byte aligned with ld % 4 == 0); callers expand other shapes with cuk_fp8_to_f32 and use a
 * GEMM.
 *
 * Ownership and threads: as for every launcher (cuk_types.h): device pointers are borrowed until
 * the stream reaches the work, launchers hold no state and may be called from any thread.
 */
#ifndef TANDEM_CUK_HEAD_MATMUL_H
#define TANDEM_CUK_HEAD_MATMUL_H

#include "kernels/cuda/cuk_types.h"

CUK_EXTERN_C_BEGIN

struct cuk_fp8_to_f32_args {
    int64_t rows, cols;
    const uint8_t *q;   /* [rows][cols] e4m3 */
    const float *scale; /* [ceil(rows/128)][scale_ld] */
    int scale_ld;
    float *out; /* [rows][cols] */
};

int cuk_fp8_to_f32(const struct cuk_fp8_to_f32_args *a, cudaStream_t s);

#define CUK_HMM_COLS 512
#define CUK_HMM_MAX_ROWS 256
#define CUK_HMM_MAX_TOKENS 16

struct cuk_head_matmul_fp8_args {
    const uint8_t *q;   /* W: e4m3 [*][CUK_HMM_COLS] */
    const float *scale; /* [*][scale_ld] */
    int scale_ld;
    int64_t r0, head_rows; /* head h's first row: r0 + h * head_rows */
    int rows, cols, trans;
    int n, n_heads; /* tokens, heads */
    const float *x;
    int x_ld_tok, x_ld_head;
    float *y;
    int y_ld_tok, y_ld_head;
};

/* 1 when the shape is one cuk_head_matmul_fp8 takes. */
int cuk_head_matmul_fp8_fits(const struct cuk_head_matmul_fp8_args *a);
int cuk_head_matmul_fp8(const struct cuk_head_matmul_fp8_args *a, cudaStream_t s);

CUK_EXTERN_C_END

#endif
