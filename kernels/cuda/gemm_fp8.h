/* gemm_fp8.h - FP8 block-scaled linears for any M: cuBLASLt plans plus the small-M kernel.
 *
 * The same semantics and layouts as gemv_fp8.h (struct cuk_gemv_fp8_args describes every FP8
 * linear: y[m][n] (+)= x[m][k] W[n][k]^T with 128x128 weight scales and per-token-per-128
 * activation scales). cuBLASLt runs it with A = W (e4m3, BLK128x128_32F scales, transposed),
 * B = x (e4m3, VEC128_32F scales), fp32 compute with per-block promotion (fast accumulation off),
 * bf16 or fp32 output. cuBLASLt refuses M=1 and wants M a multiple of 4, so it runs with
 * mp = round_up(m, 4) rows; the caller's buffers must allow that:
 *   - x has mp rows (rows m..mp-1 are read, their results land in y rows m..mp-1: scratch),
 *   - x_scale_ld == mp (cuBLASLt reads the scale grid with that stride),
 *   - y has mp rows, w_scale_ld == round_up(k/128, 4) (DeepSeek's grid when k/128 % 4 == 0).
 *
 * Ownership and threads: a gemm_fp8 owns the cuBLASLt handle, its workspace, the small-M
 * kernel's workspace and the plan cache. Create it and plan every shape at start-up (plans
 * allocate); gemm_fp8_run/linear never allocate, never autotune, and fail with ERR_INVAL for a
 * shape that was not planned. One thread and one stream at a time use a gemm_fp8 (the engine
 * thread), since runs set per-call scale pointers on the cached descriptors. Every call may be
 * captured into a CUDA graph.
 */
#ifndef TANDEM_GEMM_FP8_H
#define TANDEM_GEMM_FP8_H

#include "kernels/cuda/gemv_fp8.h"

CUK_EXTERN_C_BEGIN

struct gemm_fp8;

/* what a plan is keyed on; x_ld/y_ld 0 mean k/n */
struct gemm_fp8_shape {
    int m, n, k;
    int y_type; /* enum cuk_dtype */
    int accumulate;
    int x_ld, y_ld;
};

/* workspace_bytes: cuBLASLt workspace (0: 32 MiB). Errors: ERR_CUDA, ERR_NOMEM. */
int gemm_fp8_create(size_t workspace_bytes, struct gemm_fp8 **out, char *err);
void gemm_fp8_destroy(struct gemm_fp8 *g);

/* Build (once) what running this shape needs: for m <= CUK_GEMV_FP8_MAX_M the small-M kernel's
 * workspace; a cuBLASLt plan (descriptors + heuristic algorithm for mp = round_up(m,4)) when
 * use_cublas is set or gemm_fp8_linear will send the shape to cuBLASLt (m > 16, or
 * !cuk_gemv_fp8_prefer). ERR_UNSUPPORTED when cuBLASLt has no algorithm. */
int gemm_fp8_plan(struct gemm_fp8 *g, const struct gemm_fp8_shape *s, int use_cublas, char *err);

/* cuBLASLt for this linear (a->workspace ignored). */
int gemm_fp8_run_cublas(struct gemm_fp8 *g, const struct cuk_gemv_fp8_args *a, cudaStream_t st,
                        char *err);

/* Exact mode (off by default): gemm_fp8_linear runs every m on the own kernel, m > 16 as 16-row
 * chunks, so every 128-wide K block is summed exactly in fp32 as the numerics contract says.
 * cuBLASLt's block-scaled FP8 path keeps only ~1e-4 relative accuracy (measured: relative
 * Frobenius error 1.3e-4 against 7e-8 for the own kernel, tests/gpu/test_gemm_fp8), enough to
 * make GPU and CPU engines diverge; it is several times faster for large m. Set before planning:
 * plans follow the mode. */
void gemm_fp8_set_exact(struct gemm_fp8 *g, int on);
/* The production entry: the own kernel where cuk_gemv_fp8_prefer() says so or in exact mode
 * (workspace from g), else cuBLASLt. */
int gemm_fp8_linear(struct gemm_fp8 *g, const struct cuk_gemv_fp8_args *a, cudaStream_t st,
                    char *err);

CUK_EXTERN_C_END

#endif
