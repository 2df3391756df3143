/* common.cuh - shared helpers for the CUDA kernels (the .cu files only; never from C).
 *
 * Check macros for the launchers, warp/block reductions, FP8 e4m3 and bf16 conversions, and the
 * 16-byte streaming load used by the weight-reading kernels. Everything here is header-only and
 * stateless. Launchers return 0 or a negative ERR_* (common/err.h); kernels never report errors
 * themselves, so every launcher validates its arguments before it launches.
 */
#ifndef TANDEM_CUK_COMMON_CUH
#define TANDEM_CUK_COMMON_CUH

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <stdint.h>

extern "C" { /* the project's C headers carry no extern "C" guards of their own */
#include "common/err.h"
#include "common/log.h"
}
#include "kernels/cuda/cuk_types.h"

/* Launcher-side checks: a false condition is a caller bug (bad shape, NULL pointer), reported as
 * ERR_INVAL with a log line naming the op; a failed launch is ERR_CUDA. */
#define CUK_REQUIRE(op, cond)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            LOG_ERR("cuda", "%s: invalid argument: %s", (op), #cond);                              \
            return ERR_INVAL;                                                                      \
        }                                                                                          \
    } while (0)
#define CUK_LAUNCHED(op)                                                                           \
    do {                                                                                           \
        cudaError_t e_ = cudaGetLastError();                                                       \
        if (e_ != cudaSuccess) {                                                                   \
            LOG_ERR("cuda", "%s: launch failed: %s", (op), cudaGetErrorString(e_));                \
            return ERR_CUDA;                                                                       \
        }                                                                                          \
    } while (0)

static __device__ __forceinline__ float cuk_warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

static __device__ __forceinline__ float cuk_warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over a block of blockDim.x threads (a multiple of 32, at most 1024); every thread gets the
 * total. `red` is 32 floats of shared memory; the call starts and ends with a barrier. */
static __device__ __forceinline__ float cuk_block_sum(float v, float *red)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = cuk_warp_sum(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    return cuk_warp_sum(v);
}

static __device__ __forceinline__ float cuk_block_max(float v, float *red)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = cuk_warp_max(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : -INFINITY;
    return cuk_warp_max(v);
}

/* FP8 e4m3 (float8_e4m3fn): round to nearest even, saturating to +-448 (DeepSeek's act_quant). */
static __device__ __forceinline__ uint8_t cuk_f32_to_e4m3(float f)
{
    return (uint8_t)__nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3);
}

/* s rounded up to a power of two on its bits (ue8m0 scales), as kernels/cpu/fp8.h
 * cpuq_fp8_ue8m0: a nonzero mantissa carries one into the exponent and is cleared. */
static __device__ __forceinline__ float cuk_ue8m0(float s)
{
    return __uint_as_float((__float_as_uint(s) + 0x7fffffu) & 0xff800000u);
}

/* The contract's activation quantization of one 128-channel block held by a warp, 4 channels a
 * lane (lane l: channels 4l..4l+3 of the block, zero beyond the row): s = max(amax, 1e-4) / 448,
 * rounded up to a power of two if ue8m0 (cuk_ue8m0), e4m3(v / s). The lane's 4 bytes go to q4
 * (16-byte aligned rows), lane 0 writes the scale. */
static __device__ __forceinline__ void cuk_quant_e4m3_block(const float v[4], int lane,
                                                            uint32_t *q4, float *scale, int ue8m0)
{
    float amax = fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])));
    amax = cuk_warp_max(amax);
    float s = fmaxf(amax, 1e-4f) / 448.0f;
    if (ue8m0) s = cuk_ue8m0(s);
    uint32_t packed = 0;
#pragma unroll
    for (int i = 0; i < 4; i++) packed |= (uint32_t)cuk_f32_to_e4m3(v[i] / s) << (8 * i);
    *q4 = packed;
    if (lane == 0) *scale = s;
}

static __device__ __forceinline__ float cuk_e4m3_to_f32(uint8_t v)
{
    __half_raw h = __nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)v, __NV_E4M3);
    return __half2float(__half(h));
}

static __device__ __forceinline__ float cuk_bf16_to_f32(uint16_t h)
{
    return __uint_as_float((uint32_t)h << 16);
}

static __device__ __forceinline__ uint16_t cuk_f32_to_bf16(float f)
{
    __nv_bfloat16 b = __float2bfloat16_rn(f);
    return *reinterpret_cast<uint16_t *>(&b);
}

/* Store one output element of type CUK_F32 or CUK_BF16; `acc` adds to what is there. */
static __device__ __forceinline__ void cuk_store(void *y, size_t i, int type, float v, int acc)
{
    if (type == CUK_BF16) {
        uint16_t *p = (uint16_t *)y + i;
        if (acc) v += cuk_bf16_to_f32(*p);
        *p = cuk_f32_to_bf16(v);
    } else {
        float *p = (float *)y + i;
        *p = acc ? *p + v : v;
    }
}

/* 16-byte load of data read exactly once (weights): no L1 allocation, read-only path. */
static __device__ __forceinline__ uint4 cuk_ld_stream16(const void *p)
{
    uint4 r;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
        : "l"(p));
    return r;
}

static __host__ __device__ __forceinline__ int cuk_cdiv(int a, int b) { return (a + b - 1) / b; }

#endif
