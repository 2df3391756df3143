/* ref/plain.c - scalar reference for the plain float types: f32, f16, bf16.
 *
 * Conversions round to nearest even (fpconv.h). Dots follow ggml's scalar path: each product is
 * formed in f32 and summed in double, then rounded to f32 once. f16 weights dot f16 activations
 * and bf16 weights dot bf16 activations, as in ggml. Pure functions: thread-safe.
 */
#include <string.h>

#include "kernels/cpu/fpconv.h"
#include "kernels/cpu/ref/ref.h"

void cpuq_dequant_f32_ref(const void *src, float *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void cpuq_quant_f32_ref(const float *src, void *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void cpuq_dequant_f16_ref(const void *src, float *dst, int64_t n)
{
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; i++) dst[i] = fp_f16_to_f32(h[i]);
}

void cpuq_quant_f16_ref(const float *src, void *dst, int64_t n)
{
    uint16_t *h = dst;
    for (int64_t i = 0; i < n; i++) h[i] = fp_f32_to_f16(src[i]);
}

void cpuq_dequant_bf16_ref(const void *src, float *dst, int64_t n)
{
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; i++) dst[i] = fp_bf16_to_f32(h[i]);
}

void cpuq_quant_bf16_ref(const float *src, void *dst, int64_t n)
{
    uint16_t *h = dst;
    for (int64_t i = 0; i < n; i++) h[i] = fp_f32_to_bf16(src[i]);
}

void cpuq_vec_dot_f32_f32_ref(int64_t n, float *s, const void *wrow, const void *act)
{
    const float *w = wrow, *a = act;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += (double)(w[i] * a[i]);
    *s = (float)sum;
}

void cpuq_vec_dot_f16_f16_ref(int64_t n, float *s, const void *wrow, const void *act)
{
    const uint16_t *w = wrow, *a = act;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += (double)(fp_f16_to_f32(w[i]) * fp_f16_to_f32(a[i]));
    *s = (float)sum;
}

void cpuq_vec_dot_bf16_bf16_ref(int64_t n, float *s, const void *wrow, const void *act)
{
    const uint16_t *w = wrow, *a = act;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += (double)(fp_bf16_to_f32(w[i]) * fp_bf16_to_f32(a[i]));
    *s = (float)sum;
}
