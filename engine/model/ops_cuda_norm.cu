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
