/* head_matmul.cu - FP8 per-head matrices: expansion to fp32 and the small-batch per-head matmul
 * (see head_matmul.h).
 * Threads: launchers hold no state.
 */
#include "kernels/cuda/head_matmul.h"
#include "kernels/cuda/common.cuh"

#include <cuda_fp16.h>

/* e4m3 value (exact in fp32) times its block's scale with __fmul_rn, as cpuq_fp8_dequant on the
 * CPU does: bit-identical to the CPU backend's fp32 copy. */
static __global__ void fp8_to_f32(const uint8_t *q, const float *scale, int64_t rows, int64_t cols,
                                  int sld, float *out)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, n = rows * cols;
    for (; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / cols, c = i % cols;
        __half_raw h = __nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)q[i], __NV_E4M3);
        out[i] = __fmul_rn(__half2float(__half(h)), scale[(r / 128) * sld + c / 128]);
    }
}

int cuk_fp8_to_f32(const struct cuk_fp8_to_f32_args *a, cudaStream_t s)
{
    const char *op = "fp8_to_f32";
    CUK_REQUIRE(op, a && a->rows >= 0 && a->cols >= 0);
    if (a->rows == 0 || a->cols == 0) return 0;
    CUK_REQUIRE(op, a->q && a->scale && a->out && a->scale_ld >= (a->cols + 127) / 128);
    int64_t n = a->rows * a->cols, blocks = (n + 255) / 256;
    fp8_to_f32<<<(unsigned)(blocks < 4096 ? blocks : 4096), 256, 0, s>>>(
        a->q, a->scale, a->rows, a->cols, a->scale_ld, a->out);
    CUK_LAUNCHED(op);
    return 0;
}

/* ---- per-head matmul on FP8 weights for decode-sized batches (n <= 16 tokens)
 * One CTA per head reads that head's bytes once with 16-byte (trans 0) or 4-byte (trans 1)
 * coalesced loads; each weight is e4m3 -> fp32 through a table in shared memory, times its block
 * scale with one rounding (__fmul_rn: the value the CPU backend's fp32 copy holds), and summed in
 * fp32 (another order than the CPU's: rounding-level differences). NT = tokens rounded up to a
 * power of two (x rows beyond n are zero, their outputs not written). */

static __device__ __forceinline__ void hmm_table(float *lut)
{
    for (int i = threadIdx.x; i < 256; i += blockDim.x) {
        __half_raw hr = __nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)i, __NV_E4M3);
        lut[i] = __half2float(__half(hr));
    }
}

template <int NT>
static __global__ void __launch_bounds__(256)
    hmm_rows_k(const uint8_t *q, const float *scale, int sld, int64_t r0, int64_t hrows, int rows,
               int n, const float *x, int ldx_tok, int ldx_head, float *y, int ldy_tok,
               int ldy_head)
{
    __shared__ float lut[256];
    /* column c at c + c/16: lane l's 16 columns start at 17 l, no bank conflicts */
    __shared__ float xs[NT][CUK_HMM_COLS + CUK_HMM_COLS / 16];
    const int h = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    hmm_table(lut);
    for (int i = threadIdx.x; i < NT * CUK_HMM_COLS; i += blockDim.x) {
        int t = i / CUK_HMM_COLS, c = i % CUK_HMM_COLS;
        xs[t][c + (c >> 4)] = t < n ? x[(size_t)t * ldx_tok + (size_t)h * ldx_head + c] : 0.0f;
    }
    __syncthreads();
    const int c0 = lane * 16, p0 = lane * 17;
    for (int r = warp; r < rows; r += 8) {
        const int64_t row = r0 + (int64_t)h * hrows + r;
        const uint4 v = *(const uint4 *)(q + row * CUK_HMM_COLS + c0);
        const float s = scale[(row / 128) * sld + c0 / 128];
        const uint8_t *b = (const uint8_t *)&v;
        float w[16];
#pragma unroll
        for (int k = 0; k < 16; k++) w[k] = __fmul_rn(lut[b[k]], s);
        float acc[NT];
#pragma unroll
        for (int t = 0; t < NT; t++) {
            float a = 0.0f;
#pragma unroll
            for (int k = 0; k < 16; k++) a = fmaf(w[k], xs[t][p0 + k], a);
            acc[t] = a;
        }
#pragma unroll
        for (int t = 0; t < NT; t++)
            for (int o = 16; o > 0; o >>= 1) acc[t] += __shfl_xor_sync(0xffffffffu, acc[t], o);
        if (lane < NT && lane < n) {
            float out = acc[0];
#pragma unroll
            for (int t = 1; t < NT; t++) out = lane == t ? acc[t] : out;
            y[(size_t)lane * ldy_tok + (size_t)h * ldy_head + r] = out;
        }
    }
}

template <int NT>
static __global__ void __launch_bounds__(128)
    hmm_cols_k(const uint8_t *q, const float *scale, int sld, int64_t r0, int64_t hrows, int rows,
               int n, const float *x, int ldx_tok, int ldx_head, float *y, int ldy_tok,
               int ldy_head)
{
    __shared__ float lut[256];
    __shared__ float xs[CUK_HMM_MAX_ROWS][NT];
    const int h = blockIdx.x, c0 = threadIdx.x * 4; /* 128 threads x 4 columns = 512 */
    hmm_table(lut);
    for (int i = threadIdx.x; i < rows * NT; i += blockDim.x) {
        int r = i / NT, t = i % NT;
        xs[r][t] = t < n ? x[(size_t)t * ldx_tok + (size_t)h * ldx_head + r] : 0.0f;
    }
    __syncthreads();
    float acc[NT][4];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;
    for (int r = 0; r < rows; r++) {
        const int64_t row = r0 + (int64_t)h * hrows + r;
        const uchar4 v = *(const uchar4 *)(q + row * CUK_HMM_COLS + c0);
        const float s = scale[(row / 128) * sld + c0 / 128];
        const float w0 = __fmul_rn(lut[v.x], s), w1 = __fmul_rn(lut[v.y], s);
        const float w2 = __fmul_rn(lut[v.z], s), w3 = __fmul_rn(lut[v.w], s);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const float xv = xs[r][t];
            acc[t][0] = fmaf(w0, xv, acc[t][0]);
            acc[t][1] = fmaf(w1, xv, acc[t][1]);
            acc[t][2] = fmaf(w2, xv, acc[t][2]);
            acc[t][3] = fmaf(w3, xv, acc[t][3]);
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++)
        if (t < n)
            *(float4 *)(y + (size_t)t * ldy_tok + (size_t)h * ldy_head + c0) =
                make_float4(acc[t][0], acc[t][1], acc[t][2], acc[t][3]);
}

template <int NT> static void hmm_launch(const struct cuk_head_matmul_fp8_args *a, cudaStream_t st)
{
    if (a->trans)
        hmm_cols_k<NT><<<a->n_heads, 128, 0, st>>>(a->q, a->scale, a->scale_ld, a->r0, a->head_rows,
                                                   a->rows, a->n, a->x, a->x_ld_tok, a->x_ld_head,
                                                   a->y, a->y_ld_tok, a->y_ld_head);
    else
        hmm_rows_k<NT><<<a->n_heads, 256, 0, st>>>(a->q, a->scale, a->scale_ld, a->r0, a->head_rows,
                                                   a->rows, a->n, a->x, a->x_ld_tok, a->x_ld_head,
                                                   a->y, a->y_ld_tok, a->y_ld_head);
}

int cuk_head_matmul_fp8_fits(const struct cuk_head_matmul_fp8_args *a)
{
    return a->n >= 1 && a->n <= CUK_HMM_MAX_TOKENS && a->cols == CUK_HMM_COLS && a->rows >= 1 &&
           a->rows <= CUK_HMM_MAX_ROWS &&
           (!a->trans ||
            (a->y_ld_tok % 4 == 0 && a->y_ld_head % 4 == 0 && ((uintptr_t)a->y & 15) == 0));
}

int cuk_head_matmul_fp8(const struct cuk_head_matmul_fp8_args *a, cudaStream_t s)
{
    const char *op = "head_matmul_fp8";
    CUK_REQUIRE(op, a && cuk_head_matmul_fp8_fits(a) && a->n_heads >= 1 && a->q && a->scale &&
                        a->x && a->y);
    /* NT: the tokens rounded up to a power of two */
    if (a->n == 1) hmm_launch<1>(a, s);
    else if (a->n <= 2) hmm_launch<2>(a, s);
    else if (a->n <= 4) hmm_launch<4>(a, s);
    else if (a->n <= 8) hmm_launch<8>(a, s);
    else hmm_launch<16>(a, s);
    CUK_LAUNCHED(op);
    return 0;
}
