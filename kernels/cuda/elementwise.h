/* elementwise.h - small memory-bound ops of the forward pass: SwiGLU (optionally fused with FP8
 * activation quantization for the down projection), residual add, embedding gather.
 *
 * These are grouped in one file pair because each is a few lines; each still has its own args
 * struct and launcher. Budgets: swiglu reads 8*m*f bytes, writes 4*m*f (+ m*f q); add reads 8*n,
 * writes 4*n; embed reads 2*m*d, writes 4*m*d.
 * Ownership and threads: as for every launcher (cuk_types.h): device pointers are borrowed until
 * the stream reaches the work, launchers hold no state and may be called from any thread.
 */
#ifndef TANDEM_CUK_ELEMENTWISE_H
#define TANDEM_CUK_ELEMENTWISE_H

#include "kernels/cuda/cuk_types.h"

CUK_EXTERN_C_BEGIN

/* h = silu(gate) * up = gate / (1 + exp(-gate)) * up, fp32, for m rows of f values.
 * gate [m][gate_ld], up [m][up_ld] (they may be the two halves of one fused gate|up output);
 * y [m][y_ld] fp32 (optional); q [m][q_ld] e4m3 + q_scale [f/128][q_scale_ld] (optional, as in
 * norm.h: per token per 128 channels, s = max(amax, 1e-4)/448, rounded up to a power of two if
 * ue8m0; f % 128 == 0). */
struct cuk_swiglu_args {
    int m, f;
    const float *gate;
    int gate_ld;
    const float *up;
    int up_ld;
    float *y;
    int y_ld;
    uint8_t *q;
    int q_ld;
    float *q_scale;
    int q_scale_ld;
    int ue8m0;
};
int cuk_swiglu(const struct cuk_swiglu_args *a, cudaStream_t s);

/* y[i] += alpha * x[i] for i < n (fp32 residual add). */
struct cuk_add_args {
    size_t n;
    float *y;
    const float *x;
    float alpha;
};
int cuk_add(const struct cuk_add_args *a, cudaStream_t s);

/* out[r][0..d) = float(table[tokens[r]][0..d)) (bf16 rows); an id outside [0, vocab) gives a row
 * of zeros (callers validate ids on the host; the kernel never reads out of bounds). */
struct cuk_embed_args {
    int m, d, vocab;
    const int32_t *tokens;
    const uint16_t *table;
    float *out;
    int out_ld;
};
int cuk_embed(const struct cuk_embed_args *a, cudaStream_t s);

/* out[c][r] (+)= in[r][c] for r < rows, c < cols, both of type (CUK_F32 or CUK_BF16); used to
 * turn a column-major GEMM result into row-major rows (gemm_fp8's swapped plans). */
struct cuk_transpose_args {
    int rows, cols, type;
    const void *in;
    int in_ld;
    void *out;
    int out_ld;
    int accumulate;
};
int cuk_transpose(const struct cuk_transpose_args *a, cudaStream_t s);

/* dst = src, n bytes (n % 16 == 0, 16-byte aligned): a plain streaming copy kernel, the HBM
 * ceiling that bench_gpu measures beside cudaMemcpy. */
struct cuk_copy_args {
    size_t n;
    void *dst;
    const void *src;
};
int cuk_copy(const struct cuk_copy_args *a, cudaStream_t s);

CUK_EXTERN_C_END

#endif
