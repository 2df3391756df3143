/* gpu_test.h - helpers for the GPU tests: skip without a GPU, random inputs, poisoned device
 * buffers, error accounting. Header-only; each test is one program (tests/check.h conventions). */
#ifndef TANDEM_GPU_TEST_H
#define TANDEM_GPU_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "kernels/cpu/fpconv.h"
#include "tests/check.h"

#define CUDA_CHECK(x)                                                                              \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));    \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static inline void gt_require_gpu(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) SKIP("no CUDA device");
}

static unsigned long long gt_state;

static inline unsigned long long gt_u64(void)
{
    unsigned long long z = (gt_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline double gt_uniform(void) { return (gt_u64() >> 11) * 0x1.0p-53; } /* [0, 1) */

static inline double gt_normal(void)
{
    double u = gt_uniform() + 1e-300, v = gt_uniform();
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static inline int gt_int(int lo, int hi)
{
    return lo + (int)(gt_u64() % (unsigned long long)(hi - lo + 1));
}

/* random e4m3 byte from a gaussian of the given scale (never NaN) */
static inline uint8_t gt_e4m3(double sigma) { return fp_f32_to_e4m3((float)(gt_normal() * sigma)); }

static inline void *gt_dev(size_t bytes)
{
    void *p = NULL;
    CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
    CUDA_CHECK(cudaMemset(p, 0xff, bytes ? bytes : 1)); /* NaN for f32, bf16 and e4m3 */
    return p;
}

static inline void *gt_up(const void *h, size_t bytes)
{
    void *p = gt_dev(bytes);
    CUDA_CHECK(cudaMemcpy(p, h, bytes, cudaMemcpyHostToDevice));
    return p;
}

static inline void gt_down(void *h, const void *d, size_t bytes)
{
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost));
}

/* Tolerance of an fp32 result rounded once to bf16: half an ulp is at most 2^-8 |v| (values just
 * above a power of two), plus room for the fp32 arithmetic before the rounding. */
static inline double gt_bf16_tol(double v) { return fabs(v) * (0x1.0p-8 + 1e-5) + 1e-30; }

/* worst |got - ref| / (atol + rtol*scale) over a test; > 1 fails */
struct gt_err {
    double worst;
    long bad;
    long n;
    const char *what;
};

static inline void gt_check(struct gt_err *e, double got, double ref, double tol, long idx)
{
    e->n++;
    double r = isnan(got) || isnan(ref) ? INFINITY : fabs(got - ref) / tol;
    if (r > e->worst) e->worst = r;
    if (!(r <= 1.0)) {
        if (e->bad < 5)
            fprintf(stderr, "  %s[%ld]: got %.9g ref %.9g (tol %.3g)\n", e->what, idx, got, ref,
                    tol);
        e->bad++;
    }
}

static inline void gt_report(const struct gt_err *e)
{
    fprintf(stderr, "%-40s %8ld elements, worst err/tol %.3f, %ld bad\n", e->what, e->n, e->worst,
            e->bad);
    CHECK_EQ(e->bad, 0);
}

#endif
