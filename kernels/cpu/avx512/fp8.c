/* avx512/fp8.c - the FP8 block linear of fp8.h with AVX-512 (F + BW + VL), bitwise equal to the
 * scalar reference.
 *
 * Decoding e4m3 without a table: a byte b = s eeee mmm, sign-extended to 16 bits and shifted
 * left by 7, then masked with 0xbf80, is the f16 number s 0eeee mmm0000000, whose value is
 * e4m3(b) * 2^-8 exactly (f16 bias 15 vs e4m3 bias 7; e4m3 subnormals land on f16 subnormals,
 * which vcvtph2ps converts exactly and without microcode assists). Products of two such values
 * are exact, so a block dot computed on weights scaled by 2^-8 is the true block dot times 2^-8
 * bit for bit; multiplying back by 256 is exact too.
 * Loop order: per 128-wide K block, the weight block is decoded once into 8 registers and then
 * dotted with every token (one register chain per token in the canonical lane order).
 * Threads: pure function.
 */
#include "kernels/cpu/fp8.h"

#include <immintrin.h>

static inline __m512 e4m3x16_scaled(__m128i b)
{
    __m256i h = _mm256_slli_epi16(_mm256_cvtepi8_epi16(b), 7);
    h = _mm256_and_si256(h, _mm256_set1_epi16((short)0xbf80));
    return _mm512_cvtph_ps(h);
}

/* canonical reduction of fp8.h: v[i]+v[i+8], +4, +2, +1 */
static inline float reduce16(__m512 v)
{
    __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    return _mm_cvtss_f32(_mm_add_ss(c, _mm_movehdup_ps(c)));
}

static void dot_avx512(int64_t n, const uint8_t *w, const float *ws, int ntok, const float *qa,
                       int64_t a_stride, const float *as, int64_t as_stride, float *y,
                       int64_t y_stride)
{
    for (int t = 0; t < ntok; t++) y[t * y_stride] = 0.0f;
    for (int64_t b = 0, k0 = 0; k0 < n; b++, k0 += 128) {
        int64_t len = n - k0 < 128 ? n - k0 : 128;
        int nv = (int)((len + 15) / 16);
        __m512 wv[8];
        __mmask16 mk[8];
        for (int v = 0; v < nv; v++) {
            int64_t rem = len - 16 * v;
            mk[v] = rem >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << rem) - 1);
            wv[v] = e4m3x16_scaled(_mm_maskz_loadu_epi8(mk[v], w + k0 + 16 * v));
        }
        for (int t = 0; t < ntok; t++) {
            const float *a = qa + t * a_stride + k0;
            __m512 acc = _mm512_setzero_ps();
            if (nv == 8) {
                for (int v = 0; v < 8; v++)
                    acc = _mm512_fmadd_ps(wv[v], _mm512_loadu_ps(a + 16 * v), acc);
            } else {
                for (int v = 0; v < nv; v++)
                    acc = _mm512_fmadd_ps(wv[v], _mm512_maskz_loadu_ps(mk[v], a + 16 * v), acc);
            }
            float bd = reduce16(acc) * 256.0f;
            float term = bd * (as[t * as_stride + b] * ws[b]); /* separate statement: no FMA */
            y[t * y_stride] += term;
        }
    }
}

/* Activation quantization, bitwise equal to cpuq_fp8_act_quant: the same fp32 division by the
 * scale, then e4m3 round-to-nearest-even done on the float bits. |v| is clamped to 448 first
 * (saturation; 448 is representable so rounding cannot exceed it); for |v| >= 2^-6 the f32
 * mantissa is rounded to 3 bits (adding 0x7ffff plus the kept lsb, then masking, which carries
 * into the exponent when needed); below 2^-6 (e4m3 subnormals, spacing 2^-9) the value is
 * rounded to a multiple of 2^-9 with an RNE conversion. The sign is put back at the end. */
static void act_quant_avx512(int64_t n, const float *x, float *qa, float *s, int ue8m0)
{
    const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    for (int64_t b = 0, k0 = 0; k0 < n; b++, k0 += 128) {
        int64_t len = n - k0 < 128 ? n - k0 : 128;
        __m512 vmax = _mm512_setzero_ps();
        for (int64_t k = 0; k < len; k += 16) {
            __mmask16 m = len - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (len - k)) - 1);
            vmax =
                _mm512_max_ps(vmax, _mm512_and_ps(_mm512_maskz_loadu_ps(m, x + k0 + k), absmask));
        }
        float amax = _mm512_reduce_max_ps(vmax);
        float sc = (amax > 1e-4f ? amax : 1e-4f) / 448.0f;
        if (ue8m0) sc = cpuq_fp8_ue8m0(sc);
        s[b] = sc;
        const __m512 vsc = _mm512_set1_ps(sc);
        for (int64_t k = 0; k < len; k += 16) {
            __mmask16 m = len - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (len - k)) - 1);
            __m512 v = _mm512_div_ps(_mm512_maskz_loadu_ps(m, x + k0 + k), vsc);
            __m512 a = _mm512_min_ps(_mm512_and_ps(v, absmask), _mm512_set1_ps(448.0f));
            __m512i bits = _mm512_castps_si512(a);
            __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 20), _mm512_set1_epi32(1));
            __m512i rn = _mm512_and_si512(
                _mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7ffff)), lsb),
                _mm512_set1_epi32((int)0xfff00000u));
            __m512 sub = _mm512_mul_ps(
                _mm512_cvtepi32_ps(_mm512_cvtps_epi32(_mm512_mul_ps(a, _mm512_set1_ps(512.0f)))),
                _mm512_set1_ps(1.0f / 512.0f));
            __mmask16 small = _mm512_cmp_ps_mask(a, _mm512_set1_ps(0.015625f), _CMP_LT_OQ);
            __m512 r = _mm512_mask_blend_ps(small, _mm512_castsi512_ps(rn), sub);
            r = _mm512_or_ps(r, _mm512_andnot_ps(absmask, v)); /* sign */
            _mm512_mask_storeu_ps(qa + k0 + k, m, r);
        }
    }
}

void cpuq__fp8_fill_avx512(struct cpuq_fp8_kern *k)
{
    k->isa = "avx512";
    k->dot = dot_avx512;
    k->act_quant = act_quant_avx512;
}
