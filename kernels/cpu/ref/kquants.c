/* ref/kquants.c - scalar reference for ggml's K-quants: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K on 256-element
 * super-blocks, and the Q8_K activation format.
 *
 * Quantizers reproduce ggml's reference quantizers (quantize_row_q*_K_ref, no importance matrix)
 * exactly: the per-sub-block scale searches (a weighted least-squares search over candidate
 * scales for the "scale + min" formats, an iterative refinement for Q3_K, an RMSE search for
 * Q6_K), then quantizing the sub-block scales against one f16 super-block scale, then
 * re-quantizing every element with the scale it will actually be decoded with. Every float
 * expression keeps ggml's operation order, because a one-ulp difference can flip a rounding and
 * change the file's bytes.
 *
 * Bit layouts (element e of a 256-element super-block):
 *  Q2_K  qs: 4 x 2-bit per byte; e in half h = e/128, r = e%128: byte 32h + r%32, shift 2*(r/32);
 *        scales[e/16]: low nibble = scale, high nibble = min.  x = d*sc*q - dmin*m
 *  Q3_K  low 2 bits as Q2_K; bit 2 = hmask[e%32] bit e/32, stored inverted (set = no -4);
 *        16 6-bit scales (offset 32): low 4 bits in scales[0..7] (nibbles), high 2 bits in
 *        scales[8..11].  x = d*(sc-32)*q, q in [-4,3]
 *  Q4_K  qs: chunk c = e/64 of 32 bytes, low nibble for e%64 < 32, high otherwise; 8 6-bit
 *        scale/min pairs packed in 12 bytes (get_scale_min).  x = d*sc*q - dmin*m
 *  Q5_K  as Q4_K plus bit 4 in qh[e%32] bit 2*(e/64) + (e%64 >= 32)
 *  Q6_K  ql: half h = e/128, r = e%128: byte 64h + r%64, high nibble when r >= 64; qh byte
 *        32h + r%32, bits 2*(r/32); int8 scales[e/16].  x = d*sc*(q-32)
 * Dots: integer sums per sub-block times the sub-block scale, summed as int32 per super-block;
 * f32 accumulation across super-blocks (min terms via the Q8_K bsums), like ggml.
 * Pure functions: thread-safe.
 */
#include <math.h>
#include <string.h>

#include "kernels/cpu/fpconv.h"
#include "kernels/cpu/ref/ref.h"

#define F16(h) fp_f16_to_f32(h)
#define TO_F16(f) fp_f32_to_f16(f)
#define GROUP_MAX_EPS 1e-15f

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

/* ---- scale searches (ggml's make_*_quants semantics) */

/* Symmetric quantization of n values to [-nmax, nmax-1] with weights x^2, searching 19 scales
 * around nmax/max for the best weighted fit. L gets q + nmax. Returns the scale. (rmse_type 1,
 * no quant weights: the only variant the reference quantizers use.) */
static float qx_quants(int n, int nmax, const float *x, int8_t *L)
{
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; i++) L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = imax(-nmax, imin(nmax - 1, cpuq__nearest_int(iscale * x[i])));
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = imax(-nmax, imin(nmax - 1, cpuq__nearest_int(iscale * x[i])));
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++)
                L[i] =
                    (int8_t)(nmax + imax(-nmax, imin(nmax - 1, cpuq__nearest_int(iscale * x[i]))));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Q3_K's search: start from nmax/max, then move single quants while the weighted (x^2) fit
 * improves, up to 5 passes. L gets q + nmax. Returns the scale. */
static float q3_quants(int n, int nmax, const float *x, int8_t *L)
{
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; i++) L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = imax(-nmax, imin(nmax - 1, cpuq__nearest_int(iscale * x[i])));
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * L[i] * L[i];
                int nl = imax(-nmax, imin(nmax - 1, cpuq__nearest_int(x[i] * sl2 / slx)));
                if (nl != L[i]) {
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)nl;
                        sumlx = slx;
                        suml2 = sl2;
                        changed++;
                    }
                }
            }
        }
        if (!changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* Asymmetric quantization x ~ scale * L - min, L in [0, nmax], with per-element weights:
 * tries iscale = (rmin + rdelta*is + nmax) / (max - min) for is = 0..nstep, fits scale and min
 * by weighted least squares for each, keeps the lowest weighted error (|err| if use_mad, else
 * err^2). *the_min gets min (>= 0, subtracted). Returns the scale. */
static float qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                         float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                         int use_mad)
{
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; i++) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; i++) {
        int l = cpuq__nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)imax(0, imin(nmax, l));
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = imax(0, imin(nmax, cpuq__nearest_int(iscale * (x[i] - min))));
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                cur_error += weights[i] * diff;
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* Q4_K/Q5_K: 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes */
static inline void get_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

static inline void put_scale_min(int j, uint8_t *q, uint8_t ls, uint8_t lm)
{
    if (j < 4) {
        q[j] = ls;
        q[j + 4] = lm;
    } else {
        q[j + 4] = (uint8_t)((ls & 0xf) | ((lm & 0xf) << 4));
        q[j - 4] |= (uint8_t)((ls >> 4) << 6);
        q[j] |= (uint8_t)((lm >> 4) << 6);
    }
}

/* Q3_K: signed 6-bit scale of sub-block j (0..15), offset removed */
static inline int q3_scale(const uint8_t *s, int j)
{
    int lo = j < 8 ? s[j] & 0xf : s[j - 8] >> 4;
    int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

/* pack 256 2-bit values (Q2_K/Q3_K low bits) */
static void pack_2bit(uint8_t *qs, const uint8_t *L)
{
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; l++)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                                      (L[j + l + 96] << 6));
}

/* All 256 quants of a block as int8, in element order (for dots and dequantization). */
static void unpack_q2(const struct block_q2_K *b, int8_t *q)
{
    for (int h = 0; h < 2; h++)
        for (int s = 0; s < 4; s++)
            for (int l = 0; l < 32; l++)
                q[128 * h + 32 * s + l] = (b->qs[32 * h + l] >> (2 * s)) & 3;
}

static void unpack_q3(const struct block_q3_K *b, int8_t *q)
{
    for (int h = 0; h < 2; h++)
        for (int s = 0; s < 4; s++)
            for (int l = 0; l < 32; l++) {
                const int e = 128 * h + 32 * s + l;
                q[e] = (int8_t)(((b->qs[32 * h + l] >> (2 * s)) & 3) -
                                (((b->hmask[l] >> (e / 32)) & 1) ? 0 : 4));
            }
}

static void unpack_q6(const struct block_q6_K *b, int8_t *q)
{
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        for (int l = 0; l < 32; l++) {
            q[128 * h + l] = (int8_t)(((ql[l] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32);
            q[128 * h + l + 32] = (int8_t)(((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32);
            q[128 * h + l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            q[128 * h + l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
    }
}

/* sum of a[l] * b[l] over 16 int8 pairs */
static inline int dot16(const int8_t *a, const int8_t *b)
{
    int s = 0;
    for (int l = 0; l < 16; l++) s += a[l] * b[l];
    return s;
}

/* ---- Q2_K */

void cpuq_quant_q2_k_ref(const float *src, void *dst, int64_t n)
{
    struct block_q2_K *y = dst;
    uint8_t L[QK_K], Laux[16];
    float weights[16], mins[QK_K / 16], scales[QK_K / 16];
    const float q4scale = 15.f;
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        const float *x = src;
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < QK_K / 16; j++) {
            for (int l = 0; l < 16; l++) weights[l] = fabsf(x[16 * j + l]);
            scales[j] = qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f,
                                    0.1f, 15, 1);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        if (max_scale > 0) {
            float iscale = q4scale / max_scale;
            for (int j = 0; j < QK_K / 16; j++)
                y[i].scales[j] = (uint8_t)cpuq__nearest_int(iscale * scales[j]);
            y[i].d = TO_F16(max_scale / q4scale);
        } else {
            for (int j = 0; j < QK_K / 16; j++) y[i].scales[j] = 0;
            y[i].d = TO_F16(0.f);
        }
        if (max_min > 0) {
            float iscale = q4scale / max_min;
            for (int j = 0; j < QK_K / 16; j++)
                y[i].scales[j] |= (uint8_t)(cpuq__nearest_int(iscale * mins[j]) << 4);
            y[i].dmin = TO_F16(max_min / q4scale);
        } else {
            y[i].dmin = TO_F16(0.f);
        }
        for (int j = 0; j < QK_K / 16; j++) {
            const float d = F16(y[i].d) * (y[i].scales[j] & 0xf);
            if (!d) continue;
            const float dm = F16(y[i].dmin) * (y[i].scales[j] >> 4);
            for (int ii = 0; ii < 16; ii++) {
                int l = cpuq__nearest_int((x[16 * j + ii] + dm) / d);
                L[16 * j + ii] = (uint8_t)imax(0, imin(3, l));
            }
        }
        pack_2bit(y[i].qs, L);
    }
}

void cpuq_dequant_q2_k_ref(const void *src, float *dst, int64_t n)
{
    const struct block_q2_K *x = src;
    int8_t q[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, dst += QK_K) {
        const float d = F16(x[i].d), min = F16(x[i].dmin);
        unpack_q2(&x[i], q);
        for (int j = 0; j < QK_K / 16; j++) {
            const uint8_t sc = x[i].scales[j];
            const float dl = d * (sc & 0xf), ml = min * (sc >> 4);
            for (int l = 0; l < 16; l++) dst[16 * j + l] = dl * q[16 * j + l] - ml;
        }
    }
}

/* ---- Q3_K */

void cpuq_quant_q3_k_ref(const float *src, void *dst, int64_t n)
{
    struct block_q3_K *y = dst;
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        const float *x = src;
        float max_scale = 0, amax = 0;
        for (int j = 0; j < QK_K / 16; j++) {
            scales[j] = q3_quants(16, 4, x + 16 * j, L + 16 * j);
            float scale = fabsf(scales[j]);
            if (scale > amax) {
                amax = scale;
                max_scale = scales[j];
            }
        }
        memset(y[i].scales, 0, 12);
        if (max_scale) {
            float iscale = -32.f / max_scale;
            for (int j = 0; j < QK_K / 16; j++) {
                int8_t l8 = (int8_t)cpuq__nearest_int(iscale * scales[j]);
                int l = imax(-32, imin(31, l8)) + 32;
                if (j < 8) y[i].scales[j] = (uint8_t)(l & 0xf);
                else y[i].scales[j - 8] |= (uint8_t)((l & 0xf) << 4);
                y[i].scales[j % 4 + 8] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
            }
            y[i].d = TO_F16(1 / iscale);
        } else {
            y[i].d = TO_F16(0.f);
        }
        for (int j = 0; j < QK_K / 16; j++) {
            const float d = F16(y[i].d) * q3_scale(y[i].scales, j);
            if (!d) continue;
            for (int ii = 0; ii < 16; ii++) {
                int l = cpuq__nearest_int(x[16 * j + ii] / d);
                L[16 * j + ii] = (int8_t)(imax(-4, imin(3, l)) + 4);
            }
        }
        uint8_t U[QK_K];
        memset(y[i].hmask, 0, QK_K / 8);
        for (int j = 0; j < QK_K; j++) {
            int l = L[j];
            if (l > 3) {
                y[i].hmask[j % 32] |= (uint8_t)(1u << (j / 32));
                l -= 4;
            }
            U[j] = (uint8_t)l;
        }
        pack_2bit(y[i].qs, U);
    }
}

void cpuq_dequant_q3_k_ref(const void *src, float *dst, int64_t n)
{
    const struct block_q3_K *x = src;
    int8_t q[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, dst += QK_K) {
        const float d_all = F16(x[i].d);
        unpack_q3(&x[i], q);
        for (int j = 0; j < QK_K / 16; j++) {
            const float dl = d_all * q3_scale(x[i].scales, j);
            for (int l = 0; l < 16; l++) dst[16 * j + l] = dl * q[16 * j + l];
        }
    }
}

/* ---- Q4_K and Q5_K share the scale/min search and packing */

static void q45k_scales(const float *x, int nmax, float rmin, float rdelta, int nstep, uint8_t *L,
                        uint16_t *d_out, uint16_t *dmin_out, uint8_t *packed)
{
    uint8_t Laux[32];
    float weights[32], mins[QK_K / 32], scales[QK_K / 32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 32; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin,
                                rdelta, nstep, 0);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    memset(packed, 0, K_SCALE_SIZE);
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t ls = (uint8_t)cpuq__nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)cpuq__nearest_int(inv_min * mins[j]);
        put_scale_min(j, packed, ls > 63 ? 63 : ls, lm > 63 ? 63 : lm);
    }
    *d_out = TO_F16(max_scale / 63.f);
    *dmin_out = TO_F16(max_min / 63.f);
    /* re-quantize with the scales as they will be decoded */
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t sc, m;
        get_scale_min(j, packed, &sc, &m);
        const float d = F16(*d_out) * sc;
        if (!d) continue;
        const float dm = F16(*dmin_out) * m;
        for (int ii = 0; ii < 32; ii++) {
            int l = cpuq__nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)imax(0, imin(nmax, l));
        }
    }
}

void cpuq_quant_q4_k_ref(const float *src, void *dst, int64_t n)
{
    struct block_q4_K *y = dst;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        q45k_scales(src, 15, -1.f, 0.1f, 20, L, &y[i].d, &y[i].dmin, y[i].scales);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                y[i].qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + l + 32] << 4));
    }
}

void cpuq_dequant_q4_k_ref(const void *src, float *dst, int64_t n)
{
    const struct block_q4_K *x = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = F16(x[i].d), min = F16(x[i].dmin);
        for (int j = 0; j < QK_K / 32; j++) {
            uint8_t sc, m;
            get_scale_min(j, x[i].scales, &sc, &m);
            const float dl = d * sc, ml = min * m;
            const uint8_t *q = x[i].qs + 32 * (j / 2);
            const int shift = (j & 1) * 4;
            for (int l = 0; l < 32; l++) *dst++ = dl * ((q[l] >> shift) & 0xf) - ml;
        }
    }
}

void cpuq_quant_q5_k_ref(const float *src, void *dst, int64_t n)
{
    struct block_q5_K *y = dst;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        q45k_scales(src, 31, -0.5f, 0.1f, 15, L, &y[i].d, &y[i].dmin, y[i].scales);
        memset(y[i].qh, 0, QK_K / 8);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) {
                int l1 = L[64 * c + l], l2 = L[64 * c + l + 32];
                if (l1 > 15) {
                    l1 -= 16;
                    y[i].qh[l] |= (uint8_t)(1u << (2 * c));
                }
                if (l2 > 15) {
                    l2 -= 16;
                    y[i].qh[l] |= (uint8_t)(2u << (2 * c));
                }
                y[i].qs[32 * c + l] = (uint8_t)(l1 | (l2 << 4));
            }
    }
}

void cpuq_dequant_q5_k_ref(const void *src, float *dst, int64_t n)
{
    const struct block_q5_K *x = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = F16(x[i].d), min = F16(x[i].dmin);
        for (int j = 0; j < QK_K / 32; j++) {
            uint8_t sc, m;
            get_scale_min(j, x[i].scales, &sc, &m);
            const float dl = d * sc, ml = min * m;
            const uint8_t *q = x[i].qs + 32 * (j / 2);
            const int shift = (j & 1) * 4;
            for (int l = 0; l < 32; l++) {
                int v = ((q[l] >> shift) & 0xf) + ((x[i].qh[l] >> j) & 1 ? 16 : 0);
                *dst++ = dl * v - ml;
            }
        }
    }
}

/* ---- Q6_K */

void cpuq_quant_q6_k_ref(const float *src, void *dst, int64_t n)
{
    struct block_q6_K *y = dst;
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        const float *x = src;
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < QK_K / 16; ib++) {
            const float scale = qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
            scales[ib] = scale;
            if (fabsf(scale) > max_abs_scale) {
                max_abs_scale = fabsf(scale);
                max_scale = scale;
            }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        float iscale = -128.f / max_scale;
        y[i].d = TO_F16(1 / iscale);
        for (int ib = 0; ib < QK_K / 16; ib++)
            y[i].scales[ib] = (int8_t)imin(127, cpuq__nearest_int(iscale * scales[ib]));
        for (int j = 0; j < QK_K / 16; j++) {
            float d = F16(y[i].d) * y[i].scales[j];
            if (!d) continue;
            for (int ii = 0; ii < 16; ii++) {
                int l = cpuq__nearest_int(x[16 * j + ii] / d);
                L[16 * j + ii] = (int8_t)(imax(-32, imin(31, l)) + 32);
            }
        }
        memset(y[i].ql, 0, sizeof y[i].ql);
        memset(y[i].qh, 0, sizeof y[i].qh);
        for (int e = 0; e < QK_K; e++) {
            int h = e / 128, r = e % 128, q = (uint8_t)L[e];
            y[i].ql[64 * h + r % 64] |= (uint8_t)((q & 0xf) << (r >= 64 ? 4 : 0));
            y[i].qh[32 * h + r % 32] |= (uint8_t)((q >> 4) << (2 * (r / 32)));
        }
    }
}

void cpuq_dequant_q6_k_ref(const void *src, float *dst, int64_t n)
{
    const struct block_q6_K *x = src;
    int8_t q[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, dst += QK_K) {
        const float d = F16(x[i].d);
        unpack_q6(&x[i], q);
        for (int e = 0; e < QK_K; e++) dst[e] = d * x[i].scales[e / 16] * q[e];
    }
}

/* ---- Q8_K: d = max / -127 (sign of the largest-magnitude value), q = round(x / d) */

void cpuq_quant_q8_k_ref(const float *src, void *dst, int64_t n)
{
    struct block_q8_K *y = dst;
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        float max = 0, amax = 0;
        for (int j = 0; j < QK_K; j++) {
            float ax = fabsf(src[j]);
            if (ax > amax) {
                amax = ax;
                max = src[j];
            }
        }
        if (!amax) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; j++)
            y[i].qs[j] = (int8_t)imin(127, cpuq__nearest_int(iscale * src[j]));
        for (int j = 0; j < QK_K / 16; j++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += y[i].qs[16 * j + l];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
    }
}

void cpuq_dequant_q8_k_ref(const void *src, float *dst, int64_t n)
{
    const struct block_q8_K *x = src;
    for (int64_t i = 0; i < n / QK_K; i++, dst += QK_K)
        for (int j = 0; j < QK_K; j++) dst[j] = x[i].d * x[i].qs[j];
}

/* ---- dots against Q8_K */

void cpuq_vec_dot_q2_k_q8_k_ref(int64_t n, float *s, const void *wrow, const void *act)
{
    const struct block_q2_K *x = wrow;
    const struct block_q8_K *y = act;
    int8_t q[QK_K];
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        unpack_q2(&x[i], q);
        int summs = 0, isum = 0;
        for (int j = 0; j < QK_K / 16; j++) {
            summs += y[i].bsums[j] * (x[i].scales[j] >> 4);
            isum += (x[i].scales[j] & 0xf) * dot16(q + 16 * j, y[i].qs + 16 * j);
        }
        const float dall = y[i].d * F16(x[i].d), dmin = y[i].d * F16(x[i].dmin);
        sum += dall * isum - dmin * summs;
    }
    *s = sum;
}

void cpuq_vec_dot_q3_k_q8_k_ref(int64_t n, float *s, const void *wrow, const void *act)
{
    const struct block_q3_K *x = wrow;
    const struct block_q8_K *y = act;
    int8_t q[QK_K];
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        unpack_q3(&x[i], q);
        int isum = 0;
        for (int j = 0; j < QK_K / 16; j++)
            isum += q3_scale(x[i].scales, j) * dot16(q + 16 * j, y[i].qs + 16 * j);
        sum += F16(x[i].d) * y[i].d * isum;
    }
    *s = sum;
}

void cpuq_vec_dot_q4_k_q8_k_ref(int64_t n, float *s, const void *wrow, const void *act)
{
    const struct block_q4_K *x = wrow;
    const struct block_q8_K *y = act;
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int isum = 0, summs = 0;
        for (int j = 0; j < QK_K / 32; j++) {
            uint8_t sc, m;
            get_scale_min(j, x[i].scales, &sc, &m);
            const uint8_t *q = x[i].qs + 32 * (j / 2);
            const int shift = (j & 1) * 4;
            const int8_t *a = y[i].qs + 32 * j;
            int si = 0;
            for (int l = 0; l < 32; l++) si += ((q[l] >> shift) & 0xf) * a[l];
            isum += sc * si;
            summs += m * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
        }
        const float d = y[i].d * F16(x[i].d), dmin = y[i].d * F16(x[i].dmin);
        sum += d * isum - dmin * summs;
    }
    *s = sum;
}

void cpuq_vec_dot_q5_k_q8_k_ref(int64_t n, float *s, const void *wrow, const void *act)
{
    const struct block_q5_K *x = wrow;
    const struct block_q8_K *y = act;
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int isum = 0, summs = 0;
        for (int j = 0; j < QK_K / 32; j++) {
            uint8_t sc, m;
            get_scale_min(j, x[i].scales, &sc, &m);
            const uint8_t *q = x[i].qs + 32 * (j / 2);
            const int shift = (j & 1) * 4;
            const int8_t *a = y[i].qs + 32 * j;
            int si = 0;
            for (int l = 0; l < 32; l++)
                si += (((q[l] >> shift) & 0xf) + (((x[i].qh[l] >> j) & 1) << 4)) * a[l];
            isum += sc * si;
            summs += m * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
        }
        const float d = y[i].d * F16(x[i].d), dmin = y[i].d * F16(x[i].dmin);
        sum += d * isum - dmin * summs;
    }
    *s = sum;
}

void cpuq_vec_dot_q6_k_q8_k_ref(int64_t n, float *s, const void *wrow, const void *act)
{
    const struct block_q6_K *x = wrow;
    const struct block_q8_K *y = act;
    int8_t q[QK_K];
    float sum = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        unpack_q6(&x[i], q);
        int isum = 0;
        for (int j = 0; j < QK_K / 16; j++)
            isum += x[i].scales[j] * dot16(q + 16 * j, y[i].qs + 16 * j);
        sum += F16(x[i].d) * y[i].d * isum;
    }
    *s = sum;
}
