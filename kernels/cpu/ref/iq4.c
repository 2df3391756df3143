/* ref/iq4.c - scalar reference for ggml's non-linear 4-bit formats IQ4_NL (32-element blocks,
 * f16 scale) and IQ4_XS (256-element super-blocks, 8 sub-blocks with 6-bit scales).
 *
 * Each nibble indexes cpuq_kvalues_iq4nl. The quantizer follows ggml's quantize_iq4_nl /
 * quantize_iq4_xs without an importance matrix (what llama-quantize writes): weights x^2, a
 * search over 15 candidate scales per 32 values for the best weighted fit, then (IQ4_XS) the
 * sub-block scales quantized to 6 bits against one f16 scale and the values re-picked, or
 * (IQ4_NL) the values re-picked with the final scale. The nearest table value is found exactly
 * (comparing 2x against the sum of neighbours, ties go up). Dots: integer sums of table values
 * times Q8 quants, f32 across blocks. Pure functions: thread-safe.
 */
#include <math.h>
#include <string.h>

#include "kernels/cpu/fpconv.h"
#include "kernels/cpu/ref/ref.h"

#define F16(h) fp_f16_to_f32(h)
#define TO_F16(f) fp_f32_to_f16(f)
#define GROUP_MAX_EPS 1e-15f

const int8_t cpuq_kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                       1,    13,   25,  38,  53,  69,  89,  113};

/* index of the table value nearest to x (table sorted ascending; ties pick the larger) */
static inline int best_index(const int8_t *val, float x)
{
    const float x2 = x + x;
    int idx = 0;
    for (int step = 8; step > 0; step >>= 1) {
        int j = idx + step;
        if (x2 >= (float)(val[j - 1] + val[j])) idx = j;
    }
    return idx;
}

/* One super-block of `sbs` values (32 for IQ4_NL, 256 for IQ4_XS) in sub-blocks of 32.
 * Writes *dh, the nibbles q4 (sbs/2 bytes) and, for IQ4_XS, the 6-bit scales. */
static void iq4_quantize_block(int sbs, const float *x, uint16_t *dh, uint8_t *q4,
                               uint16_t *scales_h, uint8_t *scales_l, int ntry)
{
    const int8_t *values = cpuq_kvalues_iq4nl;
    float scales[QK_K / 32], weight[32];
    uint8_t L[QK_K];
    const int nsub = sbs / 32;

    memset(q4, 0, (size_t)sbs / 2);
    *dh = TO_F16(0.f);
    float max_scale = 0, amax_scale = 0;
    for (int ib = 0; ib < nsub; ib++) {
        const float *xb = x + 32 * ib;
        uint8_t *Lb = L + 32 * ib;
        for (int j = 0; j < 32; j++) weight[j] = xb[j] * xb[j];
        float amax = 0, max = 0;
        for (int j = 0; j < 32; j++) {
            float ax = fabsf(xb[j]);
            if (ax > amax) {
                amax = ax;
                max = xb[j];
            }
        }
        if (amax < GROUP_MAX_EPS) {
            scales[ib] = 0;
            memset(Lb, 0, 32);
            continue;
        }
        float d = ntry > 0 ? -max / values[0] : max / values[0];
        float id = 1 / d;
        float sumqx = 0, sumq2 = 0;
        for (int j = 0; j < 32; j++) {
            int l = best_index(values, id * xb[j]);
            Lb[j] = (uint8_t)l;
            float q = values[l], w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
        float best = d * sumqx;
        for (int itry = -ntry; itry <= ntry; itry++) {
            id = (itry + values[0]) / max;
            sumqx = sumq2 = 0;
            for (int j = 0; j < 32; j++) {
                float q = values[best_index(values, id * xb[j])], w = weight[j];
                sumqx += w * q * xb[j];
                sumq2 += w * q * q;
            }
            if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scales[ib] = d;
        if (fabsf(d) > amax_scale) {
            amax_scale = fabsf(d);
            max_scale = d;
        }
    }

    if (nsub > 1) {
        *scales_h = 0;
        float d = -max_scale / 32;
        *dh = TO_F16(d);
        float id = d ? 1 / d : 0.f;
        for (int ib = 0; ib < nsub; ib++) {
            int l = cpuq__nearest_int(id * scales[ib]);
            l = l < -32 ? -32 : l > 31 ? 31 : l;
            float dl = d * l;
            float idl = dl ? 1 / dl : 0.f;
            for (int j = 0; j < 32; j++)
                L[32 * ib + j] = (uint8_t)best_index(values, idl * x[32 * ib + j]);
            l += 32;
            if (ib % 2 == 0) scales_l[ib / 2] = (uint8_t)(l & 0xf);
            else scales_l[ib / 2] |= (uint8_t)((l & 0xf) << 4);
            *scales_h |= (uint16_t)((l >> 4) << (2 * ib));
        }
    } else {
        *dh = TO_F16(scales[0]);
        if (ntry > 0) {
            float id = scales[0] ? 1 / scales[0] : 0;
            for (int j = 0; j < 32; j++) L[j] = (uint8_t)best_index(values, id * x[j]);
        }
    }
    for (int i = 0; i < sbs / 32; i++)
        for (int j = 0; j < 16; j++)
            q4[16 * i + j] = (uint8_t)(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
}

/* the 32 table values of 16 nibble bytes: low nibbles first, then high nibbles */
static inline void unpack32(const uint8_t *qs, int8_t *v)
{
    for (int j = 0; j < 16; j++) {
        v[j] = cpuq_kvalues_iq4nl[qs[j] & 0xf];
        v[j + 16] = cpuq_kvalues_iq4nl[qs[j] >> 4];
    }
}

void cpuq_quant_iq4_nl_ref(const float *src, void *dst, int64_t n)
{
    struct block_iq4_nl *y = dst;
    uint16_t unused_h;
    for (int64_t i = 0; i < n / QK4_NL; i++)
        iq4_quantize_block(QK4_NL, src + QK4_NL * i, &y[i].d, y[i].qs, &unused_h, NULL, 7);
}

void cpuq_dequant_iq4_nl_ref(const void *src, float *dst, int64_t n)
{
    const struct block_iq4_nl *x = src;
    for (int64_t i = 0; i < n / QK4_NL; i++, dst += QK4_NL) {
        const float d = F16(x[i].d);
        for (int j = 0; j < 16; j++) {
            dst[j] = d * cpuq_kvalues_iq4nl[x[i].qs[j] & 0xf];
            dst[j + 16] = d * cpuq_kvalues_iq4nl[x[i].qs[j] >> 4];
        }
    }
}

void cpuq_quant_iq4_xs_ref(const float *src, void *dst, int64_t n)
{
    struct block_iq4_xs *y = dst;
    for (int64_t i = 0; i < n / QK_K; i++)
        iq4_quantize_block(QK_K, src + QK_K * i, &y[i].d, y[i].qs, &y[i].scales_h, y[i].scales_l,
                           7);
}

/* 6-bit scale of IQ4_XS sub-block ib, offset removed */
static inline int iq4xs_scale(const struct block_iq4_xs *b, int ib)
{
    int ls =
        ((b->scales_l[ib / 2] >> (4 * (ib % 2))) & 0xf) | (((b->scales_h >> (2 * ib)) & 3) << 4);
    return ls - 32;
}

void cpuq_dequant_iq4_xs_ref(const void *src, float *dst, int64_t n)
{
    const struct block_iq4_xs *x = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = F16(x[i].d);
        for (int ib = 0; ib < QK_K / 32; ib++, dst += 32) {
            const float dl = d * iq4xs_scale(&x[i], ib);
            const uint8_t *qs = x[i].qs + 16 * ib;
            for (int j = 0; j < 16; j++) {
                dst[j] = dl * cpuq_kvalues_iq4nl[qs[j] & 0xf];
                dst[j + 16] = dl * cpuq_kvalues_iq4nl[qs[j] >> 4];
            }
        }
    }
}

void cpuq_vec_dot_iq4_nl_q8_0_ref(int64_t n, float *s, const void *wrow, const void *act)
{
    const struct block_iq4_nl *x = wrow;
    const struct block_q8_0 *y = act;
    float sum = 0;
    for (int64_t i = 0; i < n / QK4_NL; i++) {
        int8_t v[32];
        unpack32(x[i].qs, v);
        int isum = 0;
        for (int j = 0; j < 32; j++) isum += v[j] * y[i].qs[j];
        sum += F16(x[i].d) * F16(y[i].d) * isum;
    }
    *s = sum;
}

void cpuq_vec_dot_iq4_xs_q8_k_ref(int64_t n, float *s, const void *wrow, const void *act)
{
    const struct block_iq4_xs *x = wrow;
    const struct block_q8_K *y = act;
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int isum = 0;
        for (int ib = 0; ib < QK_K / 32; ib++) {
            int8_t v[32];
            unpack32(x[i].qs + 16 * ib, v);
            const int8_t *a = y[i].qs + 32 * ib;
            int si = 0;
            for (int j = 0; j < 32; j++) si += v[j] * a[j];
            isum += iq4xs_scale(&x[i], ib) * si;
        }
        sum += F16(x[i].d) * y[i].d * isum;
    }
    *s = sum;
}
