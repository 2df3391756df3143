/* ops_cuda_norm.cu - RMSNorm for ops_cuda.c that reproduces the CPU backend's fp32 result bit for
 * bit (one CTA per row).
 *
 * Why: the forward quantizes RMSNorm outputs to e4m3, and on bf16 model data (embedding rows)
 * many values land exactly on e4m3 rounding midpoints, so a 1-ulp difference in the norm's
 * scale flips roundings everywhere and the GPU forward drifts from the CPU one by a few percent
 * (docs/numerics.md). Summing in the CPU's order (ops_cpu.c dot_f32: 16 independent lanes over
 * i mod 16, then lanes 0..7 += 8..15, 0..3 += 4..7, (l0 + l2) + (l1 + l3)) with explicit
 * round-to-nearest operations (no FMA contraction; the C code is compiled without contraction)
 * gives the identical scale, and y = (x * r) * g is then identical too.
 * Threads: launched on the caller's stream; no state.
 */
#include <stdint.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

extern "C" int opsk_rmsnorm(const float *x, int ldx, const float *g, int n, int dim, float eps,
                            float *y, int ldy, cudaStream_t st);

/* One CTA per row: the row is staged in shared memory by all threads (coalesced), 16 threads of
 * warp 0 then run the CPU's 16 sequential lane sums out of shared memory (the order is fixed, so
 * the chains cannot be split further; from shared memory each step is a few cycles instead of a
 * global-memory round trip), warp 0 reduces as the CPU does, and all threads write y. */
#define NORM_THREADS 256
#define NORM_MAX_DIM 12288                         /* 48 KB of shared memory */

static __global__ void __launch_bounds__(NORM_THREADS)
rmsnorm_cpu_order(const float *x, int ldx, const float *g, int dim, float eps, float *y, int ldy)
{
    __shared__ float xs[NORM_MAX_DIM];
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
            if (i < dim) acc = __fadd_rn(acc, __fmul_rn(xs[i], xs[i]));   /* tail: i & 15 == lane */
        }
        /* lanes 0..7 += 8..15, then 0..3 += 4..7, then (0 + 2) + (1 + 3) */
        float o = __shfl_down_sync(0xffffffffu, acc, 8);
        if (lane < 8) acc = __fadd_rn(acc, o);
        o = __shfl_down_sync(0xffffffffu, acc, 4);
        if (lane < 4) acc = __fadd_rn(acc, o);
        float a2 = __shfl_down_sync(0xffffffffu, acc, 2);     /* lane 0: acc2, lane 1: acc3 */
        float p = __fadd_rn(acc, a2);                          /* lane 0: l0+l2, lane 1: l1+l3 */
        float p1 = __shfl_down_sync(0xffffffffu, p, 1);
        if (lane == 0)
            rs = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(__fdiv_rn(__fadd_rn(p, p1), (float)dim), eps)));
    }
    __syncthreads();
    const float r = rs;
    float *yr = y + (size_t)row * ldy;
    for (int i = tid; i < dim; i += NORM_THREADS) yr[i] = __fmul_rn(__fmul_rn(xs[i], r), g[i]);
}

int opsk_rmsnorm(const float *x, int ldx, const float *g, int n, int dim, float eps, float *y,
                 int ldy, cudaStream_t st)
{
    if (n < 1 || dim < 1) return 0;
    if (dim > NORM_MAX_DIM) return -1;     /* the caller reports it (no DeepSeek norm is wider) */
    rmsnorm_cpu_order<<<n, NORM_THREADS, 0, st>>>(x, ldx, g, dim, eps, y, ldy);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

/* FP8 (e4m3, 128x128 block scales [ceil(rows/128)][sld]) -> fp32, one rounding per element:
 * e4m3 value (exact in fp32) times its block's scale with __fmul_rn, as cpuq_fp8_dequant on the
 * CPU does, so the result is bit-identical to the CPU backend's fp32 copy. */
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

extern "C" int opsk_fp8_to_f32(const uint8_t *q, const float *scale, int64_t rows, int64_t cols,
                               int sld, float *out, cudaStream_t st)
{
    if (rows < 1 || cols < 1) return 0;
    int64_t n = rows * cols, blocks = (n + 255) / 256;
    fp8_to_f32<<<(unsigned)(blocks < 4096 ? blocks : 4096), 256, 0, st>>>(q, scale, rows, cols,
                                                                           sld, out);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

/* ---- per-head matmul on FP8 weights for decode-sized batches (n <= 16 tokens)
 * W: e4m3 [*][cols] with 128x128 block scales [.][sld]; head h's matrix = rows r0 + h * hrows ..
 * + rows of W. trans = 0: y[t,h,r] = sum_c W_h[r][c] x[t,h,c] (cols = 512);
 * trans = 1: y[t,h,c] = sum_r W_h[r][c] x[t,h,r] (cols = 512, rows <= 256). One CTA per head
 * reads that head's bytes once with 16-byte (trans 0) or 4-byte (trans 1) coalesced loads; each
 * weight is e4m3 -> fp32 through a table in shared memory, times its block scale with one
 * rounding (__fmul_rn: the value the CPU backend's fp32 copy holds), and summed in fp32 (another
 * order than the CPU's: rounding-level differences). NT = tokens rounded up to a power of two
 * (x rows beyond n are zero, their outputs not written). */
#define HMM_COLS 512
#define HMM_MAXROWS 256

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
           int n, const float *x, int ldx_tok, int ldx_head, float *y, int ldy_tok, int ldy_head)
{
    __shared__ float lut[256];
    __shared__ float xs[NT][HMM_COLS + HMM_COLS / 16];   /* column c at c + c/16: lane l's 16
                                                             columns start at 17 l, no conflicts */
    const int h = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    hmm_table(lut);
    for (int i = threadIdx.x; i < NT * HMM_COLS; i += blockDim.x) {
        int t = i / HMM_COLS, c = i % HMM_COLS;
        xs[t][c + (c >> 4)] = t < n ? x[(size_t)t * ldx_tok + (size_t)h * ldx_head + c] : 0.0f;
    }
    __syncthreads();
    const int c0 = lane * 16, p0 = lane * 17;
    for (int r = warp; r < rows; r += 8) {
        const int64_t row = r0 + (int64_t)h * hrows + r;
        const uint4 v = *(const uint4 *)(q + row * HMM_COLS + c0);
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
           int n, const float *x, int ldx_tok, int ldx_head, float *y, int ldy_tok, int ldy_head)
{
    __shared__ float lut[256];
    __shared__ float xs[HMM_MAXROWS][NT];
    const int h = blockIdx.x, c0 = threadIdx.x * 4;      /* 128 threads x 4 columns = 512 */
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
        const uchar4 v = *(const uchar4 *)(q + row * HMM_COLS + c0);
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

template <int NT>
static void hmm_launch(const uint8_t *q, const float *scale, int sld, int64_t r0, int64_t hrows,
                       int rows, int trans, int n, int nh, const float *x, int ldx_tok,
                       int ldx_head, float *y, int ldy_tok, int ldy_head, cudaStream_t st)
{
    if (trans)
        hmm_cols_k<NT><<<nh, 128, 0, st>>>(q, scale, sld, r0, hrows, rows, n, x, ldx_tok,
                                           ldx_head, y, ldy_tok, ldy_head);
    else
        hmm_rows_k<NT><<<nh, 256, 0, st>>>(q, scale, sld, r0, hrows, rows, n, x, ldx_tok,
                                           ldx_head, y, ldy_tok, ldy_head);
}

/* Returns -1 (nothing launched) when the shape is not one it handles; the caller then expands. */
extern "C" int opsk_head_matmul_fp8(const uint8_t *q, const float *scale, int sld, int64_t r0,
                                    int64_t hrows, int rows, int cols, int trans, int n, int nh,
                                    const float *x, int ldx_tok, int ldx_head, float *y,
                                    int ldy_tok, int ldy_head, cudaStream_t st)
{
    if (n < 1 || n > 16 || cols != HMM_COLS || rows < 1 || rows > HMM_MAXROWS ||
        (trans && (ldy_tok % 4 || ldy_head % 4 || ((uintptr_t)y & 15))))
        return -1;
    if (n == 1) hmm_launch<1>(q, scale, sld, r0, hrows, rows, trans, n, nh, x, ldx_tok, ldx_head, y, ldy_tok, ldy_head, st);
    else if (n <= 2) hmm_launch<2>(q, scale, sld, r0, hrows, rows, trans, n, nh, x, ldx_tok, ldx_head, y, ldy_tok, ldy_head, st);
    else if (n <= 4) hmm_launch<4>(q, scale, sld, r0, hrows, rows, trans, n, nh, x, ldx_tok, ldx_head, y, ldy_tok, ldy_head, st);
    else if (n <= 8) hmm_launch<8>(q, scale, sld, r0, hrows, rows, trans, n, nh, x, ldx_tok, ldx_head, y, ldy_tok, ldy_head, st);
    else hmm_launch<16>(q, scale, sld, r0, hrows, rows, trans, n, nh, x, ldx_tok, ldx_head, y, ldy_tok, ldy_head, st);
    return cudaGetLastError() == cudaSuccess ? 0 : -2;
}
