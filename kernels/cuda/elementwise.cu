/* elementwise.cu - SwiGLU (+ FP8 quantization), residual add, embedding gather (see
 * elementwise.h). SwiGLU with quantization uses one CTA per row and one warp per 128-channel
 * block (4 channels per lane), like norm.cu, so the block amax is a warp reduction. */
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/common.cuh"

static __global__ void swiglu_kernel(const struct cuk_swiglu_args a)
{
    const int row = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nw = blockDim.x >> 5, nblk = cuk_cdiv(a.f, 128);
    const float *g = a.gate + (size_t)row * a.gate_ld, *u = a.up + (size_t)row * a.up_ld;
    for (int b = warp; b < nblk; b += nw) {
        int c0 = b * 128 + lane * 4;
        float v[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int c = c0 + i;
            v[i] = 0.0f;
            if (c < a.f) {
                float x = g[c];
                v[i] = x / (1.0f + expf(-x)) * u[c];
            }
        }
        if (a.y) {
#pragma unroll
            for (int i = 0; i < 4; i++)
                if (c0 + i < a.f) a.y[(size_t)row * a.y_ld + c0 + i] = v[i];
        }
        if (a.q)
            cuk_quant_e4m3_block(v, lane, (uint32_t *)(a.q + (size_t)row * a.q_ld + c0),
                                 &a.q_scale[(size_t)b * a.q_scale_ld + row], a.ue8m0);
    }
}

int cuk_swiglu(const struct cuk_swiglu_args *a, cudaStream_t s)
{
    const char *op = "swiglu";
    CUK_REQUIRE(op, a && a->m >= 1 && a->f >= 1 && a->gate && a->up);
    CUK_REQUIRE(op, a->gate_ld >= a->f && a->up_ld >= a->f && (a->y || a->q));
    CUK_REQUIRE(op, !a->y || a->y_ld >= a->f);
    CUK_REQUIRE(op, !a->q || (a->f % 128 == 0 && a->q_ld >= a->f && a->q_ld % 16 == 0 &&
                              a->q_scale && a->q_scale_ld >= a->m));
    swiglu_kernel<<<a->m, 256, 0, s>>>(*a);
    CUK_LAUNCHED(op);
    return 0;
}

static __global__ void add_kernel(const struct cuk_add_args a)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < a.n;
         i += (size_t)gridDim.x * blockDim.x)
        a.y[i] += a.alpha * a.x[i];
}

int cuk_add(const struct cuk_add_args *a, cudaStream_t s)
{
    const char *op = "add";
    CUK_REQUIRE(op, a && a->y && a->x);
    if (a->n == 0) return 0;
    size_t blocks = (a->n + 255) / 256;
    if (blocks > 4096) blocks = 4096;
    add_kernel<<<(unsigned)blocks, 256, 0, s>>>(*a);
    CUK_LAUNCHED(op);
    return 0;
}

static __global__ void embed_kernel(const struct cuk_embed_args a)
{
    const int row = blockIdx.x;
    const int32_t t = a.tokens[row];
    float *o = a.out + (size_t)row * a.out_ld;
    bool ok = t >= 0 && t < a.vocab;
    const uint16_t *src = a.table + (size_t)(ok ? t : 0) * a.d;
    for (int i = threadIdx.x; i < a.d; i += blockDim.x) o[i] = ok ? cuk_bf16_to_f32(src[i]) : 0.0f;
}

int cuk_embed(const struct cuk_embed_args *a, cudaStream_t s)
{
    const char *op = "embed";
    CUK_REQUIRE(op, a && a->m >= 1 && a->d >= 1 && a->vocab >= 1);
    CUK_REQUIRE(op, a->tokens && a->table && a->out && a->out_ld >= a->d);
    embed_kernel<<<a->m, 256, 0, s>>>(*a);
    CUK_LAUNCHED(op);
    return 0;
}

/* 32x32 tiles through shared memory (padded against bank conflicts): coalesced reads and writes */
static __global__ void transpose_kernel(const struct cuk_transpose_args a)
{
    __shared__ float tile[32][33];
    int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        int r = r0 + i, c = c0 + threadIdx.x;
        float v = 0.0f;
        if (r < a.rows && c < a.cols) {
            size_t o = (size_t)r * a.in_ld + c;
            v = a.type == CUK_BF16 ? cuk_bf16_to_f32(((const uint16_t *)a.in)[o])
                                   : ((const float *)a.in)[o];
        }
        tile[i][threadIdx.x] = v;
    }
    __syncthreads();
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        int c = c0 + i, r = r0 + threadIdx.x;
        if (r < a.rows && c < a.cols)
            cuk_store(a.out, (size_t)c * a.out_ld + r, a.type, tile[threadIdx.x][i], a.accumulate);
    }
}

int cuk_transpose(const struct cuk_transpose_args *a, cudaStream_t s)
{
    const char *op = "transpose";
    CUK_REQUIRE(op, a && a->rows >= 1 && a->cols >= 1 && a->in && a->out);
    CUK_REQUIRE(op, a->in_ld >= a->cols && a->out_ld >= a->rows);
    CUK_REQUIRE(op, a->type == CUK_F32 || a->type == CUK_BF16);
    dim3 grid(cuk_cdiv(a->cols, 32), cuk_cdiv(a->rows, 32));
    transpose_kernel<<<grid, dim3(32, 8), 0, s>>>(*a);
    CUK_LAUNCHED(op);
    return 0;
}

static __global__ void copy_kernel(const struct cuk_copy_args a)
{
    const uint4 *src = (const uint4 *)a.src;
    uint4 *dst = (uint4 *)a.dst;
    size_t n = a.n / 16, stride = (size_t)gridDim.x * blockDim.x;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n; i += 4 * stride) { /* 4 loads in flight per thread */
        uint4 v0 = cuk_ld_stream16(src + i), v1 = cuk_ld_stream16(src + i + stride);
        uint4 v2 = cuk_ld_stream16(src + i + 2 * stride),
              v3 = cuk_ld_stream16(src + i + 3 * stride);
        dst[i] = v0;
        dst[i + stride] = v1;
        dst[i + 2 * stride] = v2;
        dst[i + 3 * stride] = v3;
    }
    for (; i < n; i += stride) dst[i] = cuk_ld_stream16(src + i);
}

int cuk_copy(const struct cuk_copy_args *a, cudaStream_t s)
{
    const char *op = "copy";
    CUK_REQUIRE(op, a && a->dst && a->src && a->n % 16 == 0);
    CUK_REQUIRE(op, ((uintptr_t)a->dst & 15) == 0 && ((uintptr_t)a->src & 15) == 0);
    if (a->n == 0) return 0;
    int dev = 0, sms = 132;
    if (cudaGetDevice(&dev) == cudaSuccess)
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    copy_kernel<<<sms * 8, 256, 0, s>>>(*a);
    CUK_LAUNCHED(op);
    return 0;
}
