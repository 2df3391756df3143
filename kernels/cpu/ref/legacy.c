/* ref/legacy.c - scalar reference for ggml's 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_0, Q8_1 (weights and the Q8_0/Q8_1 activation formats).
 *
 * Quantizers reproduce ggml's reference quantizers exactly (same float operations in the same
 * order, same truncation/rounding: e.g. Q4_0 uses (int8_t)(x*id + 8.5f), Q8_0 uses roundf), so the
 * same floats give the same GGUF bytes. Dots are integer within a block and accumulate
 * d_w * d_a * isum in f32 across blocks, like ggml. Pure functions: thread-safe.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "kernels/cpu/fpconv.h"
#include "kernels/cpu/ref/ref.h"

#define F16(h) fp_f16_to_f32(h)
#define TO_F16(f) fp_f32_to_f16(f)

/* value with the largest magnitude (first one on ties), as ggml's "max" */
static float signed_absmax(const float *x, int n, float *amax_out)
{
    float amax = 0, max = 0;
    for (int j = 0; j < n; j++)
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    if (amax_out) *amax_out = amax;
    return max;
}

static void min_max(const float *x, int n, float *mn, float *mx)
{
    float lo = FLT_MAX, hi = -FLT_MAX;
    for (int j = 0; j < n; j++) {
        if (x[j] < lo) lo = x[j];
        if (x[j] > hi) hi = x[j];
    }
    *mn = lo;
    *mx = hi;
}

/* ---- Q4_0: x = d * (q - 8), d = max / -8 */

void cpuq_quant_q4_0_ref(const float *src, void *dst, int64_t n)
{
    struct block_q4_0 *y = dst;
    for (int64_t i = 0; i < n / QK4_0; i++, src += QK4_0) {
        const float d = signed_absmax(src, QK4_0, NULL) / -8;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = TO_F16(d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            int q0 = (int8_t)(src[j] * id + 8.5f), q1 = (int8_t)(src[j + 16] * id + 8.5f);
            if (q0 > 15) q0 = 15;
            if (q1 > 15) q1 = 15;
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

void cpuq_dequant_q4_0_ref(const void *src, float *dst, int64_t n)
{
    const struct block_q4_0 *x = src;
    for (int64_t i = 0; i < n / QK4_0; i++, dst += QK4_0) {
        const float d = F16(x[i].d);
        for (int j = 0; j < 16; j++) {
            dst[j] = ((x[i].qs[j] & 0xf) - 8) * d;
            dst[j + 16] = ((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}

/* ---- Q4_1: x = d * q + m, d = (max - min) / 15, m = min */

void cpuq_quant_q4_1_ref(const float *src, void *dst, int64_t n)
{
    struct block_q4_1 *y = dst;
    for (int64_t i = 0; i < n / QK4_1; i++, src += QK4_1) {
        float mn, mx;
        min_max(src, QK4_1, &mn, &mx);
        const float d = (mx - mn) / 15;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = TO_F16(d);
        y[i].m = TO_F16(mn);
        for (int j = 0; j < 16; j++) {
            int q0 = (int8_t)((src[j] - mn) * id + 0.5f),
                q1 = (int8_t)((src[j + 16] - mn) * id + 0.5f);
            if (q0 > 15) q0 = 15;
            if (q1 > 15) q1 = 15;
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

void cpuq_dequant_q4_1_ref(const void *src, float *dst, int64_t n)
{
    const struct block_q4_1 *x = src;
    for (int64_t i = 0; i < n / QK4_1; i++, dst += QK4_1) {
        const float d = F16(x[i].d), m = F16(x[i].m);
        for (int j = 0; j < 16; j++) {
            dst[j] = (x[i].qs[j] & 0xf) * d + m;
            dst[j + 16] = (x[i].qs[j] >> 4) * d + m;
        }
    }
}

/* ---- Q5_0: x = d * (q - 16), d = max / -16; bit 4 of element j is bit j of qh */

static void put_q5(uint8_t *qs, uint8_t qh[4], const uint8_t *q)
{
    uint32_t h = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((q[j] & 0xf) | ((q[j + 16] & 0xf) << 4));
        h |= (uint32_t)((q[j] >> 4) & 1) << j;
        h |= (uint32_t)((q[j + 16] >> 4) & 1) << (j + 16);
    }
    memcpy(qh, &h, 4);
}

static void get_q5(const uint8_t *qs, const uint8_t qh[4], uint8_t *q)
{
    uint32_t h;
    memcpy(&h, qh, 4);
    for (int j = 0; j < 16; j++) {
        q[j] = (uint8_t)((qs[j] & 0xf) | (((h >> j) & 1) << 4));
        q[j + 16] = (uint8_t)((qs[j] >> 4) | (((h >> (j + 16)) & 1) << 4));
    }
}

void cpuq_quant_q5_0_ref(const float *src, void *dst, int64_t n)
{
    struct block_q5_0 *y = dst;
    for (int64_t i = 0; i < n / QK5_0; i++, src += QK5_0) {
        const float d = signed_absmax(src, QK5_0, NULL) / -16;
        const float id = d ? 1.0f / d : 0.0f;
        uint8_t q[QK5_0];
        y[i].d = TO_F16(d);
        for (int j = 0; j < QK5_0; j++) {
            int v = (int8_t)(src[j] * id + 16.5f);
            q[j] = (uint8_t)(v > 31 ? 31 : v);
        }
        put_q5(y[i].qs, y[i].qh, q);
    }
}

void cpuq_dequant_q5_0_ref(const void *src, float *dst, int64_t n)
{
    const struct block_q5_0 *x = src;
    for (int64_t i = 0; i < n / QK5_0; i++, dst += QK5_0) {
        const float d = F16(x[i].d);
        uint8_t q[QK5_0];
        get_q5(x[i].qs, x[i].qh, q);
        for (int j = 0; j < QK5_0; j++) dst[j] = (q[j] - 16) * d;
    }
}

/* ---- Q5_1: x = d * q + m, d = (max - min) / 31 */

void cpuq_quant_q5_1_ref(const float *src, void *dst, int64_t n)
{
    struct block_q5_1 *y = dst;
    for (int64_t i = 0; i < n / QK5_1; i++, src += QK5_1) {
        float mn, mx;
        min_max(src, QK5_1, &mn, &mx);
        const float d = (mx - mn) / 31;
        const float id = d ? 1.0f / d : 0.0f;
        uint8_t q[QK5_1];
        y[i].d = TO_F16(d);
        y[i].m = TO_F16(mn);
        for (int j = 0; j < QK5_1; j++) q[j] = (uint8_t)((src[j] - mn) * id + 0.5f);
        put_q5(y[i].qs, y[i].qh, q);
    }
}

void cpuq_dequant_q5_1_ref(const void *src, float *dst, int64_t n)
{
    const struct block_q5_1 *x = src;
    for (int64_t i = 0; i < n / QK5_1; i++, dst += QK5_1) {
        const float d = F16(x[i].d), m = F16(x[i].m);
        uint8_t q[QK5_1];
        get_q5(x[i].qs, x[i].qh, q);
        for (int j = 0; j < QK5_1; j++) dst[j] = q[j] * d + m;
    }
}

/* ---- Q8_0 / Q8_1: x = d * q, d = amax / 127, q = roundf(x / d) */

void cpuq_quant_q8_0_ref(const float *src, void *dst, int64_t n)
{
    struct block_q8_0 *y = dst;
    for (int64_t i = 0; i < n / QK8_0; i++, src += QK8_0) {
        float amax = 0;
        for (int j = 0; j < QK8_0; j++) amax = fmaxf(amax, fabsf(src[j]));
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = TO_F16(d);
        for (int j = 0; j < QK8_0; j++) y[i].qs[j] = (int8_t)roundf(src[j] * id);
    }
}

void cpuq_dequant_q8_0_ref(const void *src, float *dst, int64_t n)
{
    const struct block_q8_0 *x = src;
    for (int64_t i = 0; i < n / QK8_0; i++, dst += QK8_0) {
        const float d = F16(x[i].d);
        for (int j = 0; j < QK8_0; j++) dst[j] = x[i].qs[j] * d;
    }
}

void cpuq_quant_q8_1_ref(const float *src, void *dst, int64_t n)
{
    struct block_q8_1 *y = dst;
    for (int64_t i = 0; i < n / QK8_1; i++, src += QK8_1) {
        float amax = 0;
        for (int j = 0; j < QK8_1; j++) amax = fmaxf(amax, fabsf(src[j]));
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        int sum = 0;
        y[i].d = TO_F16(d);
        for (int j = 0; j < QK8_1; j++) {
            y[i].qs[j] = (int8_t)roundf(src[j] * id);
            sum += y[i].qs[j];
        }
        y[i].s = TO_F16(sum * d);
    }
}

void cpuq_dequant_q8_1_ref(const void *src, float *dst, int64_t n)
{
    const struct block_q8_1 *x = src;
    for (int64_t i = 0; i < n / QK8_1; i++, dst += QK8_1) {
        const float d = F16(x[i].d);
        for (int j = 0; j < QK8_1; j++) dst[j] = x[i].qs[j] * d;
    }
}

/* ---- dots: isum = sum of integer products in a block; sum += isum * (d_w * d_a) [+ m_w * s_a] */

void cpuq_vec_dot_q4_0_q8_0_ref(int64_t n, float *s, const void *wrow, const void *act)
{
    const struct block_q4_0 *x = wrow;
    const struct block_q8_0 *y = act;
    float sum = 0;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        int isum = 0;
        for (int j = 0; j < 16; j++)
            isum +=
                ((x[i].qs[j] & 0xf) - 8) * y[i].qs[j] + ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + 16];
        sum += isum * (F16(x[i].d) * F16(y[i].d));
    }
    *s = sum;
}

void cpuq_vec_dot_q4_1_q8_1_ref(int64_t n, float *s, const void *wrow, const void *act)
{
    const struct block_q4_1 *x = wrow;
    const struct block_q8_1 *y = act;
    float sum = 0;
    for (int64_t i = 0; i < n / QK8_1; i++) {
        int isum = 0;
        for (int j = 0; j < 16; j++)
            isum += (x[i].qs[j] & 0xf) * y[i].qs[j] + (x[i].qs[j] >> 4) * y[i].qs[j + 16];
        sum += (F16(x[i].d) * F16(y[i].d)) * isum + F16(x[i].m) * F16(y[i].s);
    }
    *s = sum;
}

void cpuq_vec_dot_q5_0_q8_0_ref(int64_t n, float *s, const void *wrow, const void *act)
{
    const struct block_q5_0 *x = wrow;
    const struct block_q8_0 *y = act;
    float sum = 0;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        uint8_t q[QK5_0];
        get_q5(x[i].qs, x[i].qh, q);
        int isum = 0;
        for (int j = 0; j < QK5_0; j++) isum += (q[j] - 16) * y[i].qs[j];
        sum += isum * (F16(x[i].d) * F16(y[i].d));
    }
    *s = sum;
}

void cpuq_vec_dot_q5_1_q8_1_ref(int64_t n, float *s, const void *wrow, const void *act)
{
    const struct block_q5_1 *x = wrow;
    const struct block_q8_1 *y = act;
    float sum = 0;
    for (int64_t i = 0; i < n / QK8_1; i++) {
        uint8_t q[QK5_1];
        get_q5(x[i].qs, x[i].qh, q);
        int isum = 0;
        for (int j = 0; j < QK5_1; j++) isum += q[j] * y[i].qs[j];
        sum += (F16(x[i].d) * F16(y[i].d)) * isum + F16(x[i].m) * F16(y[i].s);
    }
    *s = sum;
}

void cpuq_vec_dot_q8_0_q8_0_ref(int64_t n, float *s, const void *wrow, const void *act)
{
    const struct block_q8_0 *x = wrow;
    const struct block_q8_0 *y = act;
    float sum = 0;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        int isum = 0;
        for (int j = 0; j < QK8_0; j++) isum += x[i].qs[j] * y[i].qs[j];
        sum += isum * (F16(x[i].d) * F16(y[i].d));
    }
    *s = sum;
}
