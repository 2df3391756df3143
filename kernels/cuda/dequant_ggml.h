/* dequant_ggml.h - GGML block rows -> bf16 (or fp32) rows on the GPU.
 *
 * The device-side twin of kernels/cpu/ref's cpuq_dequant_<type>_ref: the same bytes (GGUF blocks
 * exactly as in host memory / the file, copied to the device) decode to the same fp32 values,
 * bit for bit: every value is formed with the reference's operations in the reference's order
 * with explicit round-to-nearest intrinsics (no FMA contraction), then optionally rounded once to
 * bf16 (round to nearest even). Used by the routed-expert op (moe_ggml.h) to expand an expert's
 * weights into a bf16 scratch for tensor-core GEMMs; dst_type = CUK_F32 is the test hook that
 * exposes the exact fp32 values.
 *
 * Types (enum qtype numbering, kernels/cpu/qtype.h): Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K,
 * Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, the grid i-quants IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S,
 * IQ1_S, IQ1_M, F32, F16, BF16. Any other type (Q8_K, Q8_1, FP8, integers,
 * unknown values) gives ERR_UNSUPPORTED with nothing launched, so callers can keep that tensor
 * on the CPU.
 *
 * Layouts: src rows of cols elements, each cols / blck blocks back to back, rows src.row_bytes
 * apart (>= the row's size; any alignment: the kernel reads raw bytes, staging them through
 * shared memory with 16-byte loads where aligned and byte loads at the edges, never touching a
 * byte outside the rows). dst [rows][dst_ld] of dst_type, 16-byte aligned, dst_ld % 8 == 0,
 * cols % 8 == 0 (every block type has blck 32 or 256). Columns cols..dst_ld-1 are not written.
 * Budget: rows * row_bytes read once, rows * cols * (2 or 4) bytes written; memory bound.
 * Launch: one CTA of 256 threads per row (rows <= 2^31 - 1), 2048 elements per pass.
 * Ownership and threads: as every launcher (cuk_types.h): device pointers are borrowed until the
 * stream reaches the work; no state, callable from any thread.
 */
#ifndef TANDEM_CUK_DEQUANT_GGML_H
#define TANDEM_CUK_DEQUANT_GGML_H

#include "kernels/cuda/cuk_types.h"

CUK_EXTERN_C_BEGIN

/* One GGML-typed weight matrix [rows][cols] in device memory (the GPU twin of cpuq_mat). */
struct cuk_ggml_mat {
    int type; /* enum qtype */
    int64_t rows, cols;
    const void *data; /* device pointer to row 0 */
    size_t row_bytes; /* distance between rows, >= cols / blck * type_size */
};

/* 1 if cuk_dequant_ggml has a kernel for `type`, else 0. */
int cuk_dequant_ggml_supported(int type);

/* Bytes of one row of n elements of a supported type (0 if unsupported or n not whole blocks). */
size_t cuk_ggml_row_size(int type, int64_t n);

struct cuk_dequant_ggml_args {
    struct cuk_ggml_mat src;
    void *dst;      /* [src.rows][dst_ld] */
    int dst_type;   /* CUK_BF16 or CUK_F32 */
    int64_t dst_ld; /* elements */
};

/* Errors: ERR_UNSUPPORTED (type without a kernel), ERR_INVAL (shapes, pointers, alignment; logged),
 * ERR_CUDA (launch failed). rows == 0 is a no-op. */
int cuk_dequant_ggml(const struct cuk_dequant_ggml_args *a, cudaStream_t s);

CUK_EXTERN_C_END

#endif
