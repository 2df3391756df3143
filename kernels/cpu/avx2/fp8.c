/* avx2/fp8.c - the FP8 block linear of fp8.h with AVX2 + FMA + F16C, bitwise equal to the
 * scalar reference. Same decoding trick as avx512/fp8.c (e4m3 byte -> f16 bits -> f32, values
 * scaled by 2^-8 exactly); the canonical 16 lanes live in two 8-wide accumulators (lanes 0-7,
 * 8-15). A partial last block is copied into zero-padded buffers. Threads: pure function.
 */
#include "kernels/cpu/fp8.h"

#include <immintrin.h>
#include <string.h>

static inline __m256 e4m3x8_scaled(const uint8_t *p)
{
    __m128i b = _mm_loadl_epi64((const __m128i *)p);
    __m128i h = _mm_slli_epi16(_mm_cvtepi8_epi16(b), 7);
    return _mm256_cvtph_ps(_mm_and_si128(h, _mm_set1_epi16((short)0xbf80)));
}

static inline float reduce16(__m256 lo, __m256 hi)
{
    __m256 a = _mm256_add_ps(lo, hi);
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    return _mm_cvtss_f32(_mm_add_ss(c, _mm_movehdup_ps(c)));
}

static void dot_avx2(int64_t n, const uint8_t *w, const float *ws, int ntok, const float *qa,
                     int64_t a_stride, const float *as, int64_t as_stride, float *y,
                     int64_t y_stride)
{
    uint8_t wpad[128];
    float apad[128];
    for (int t = 0; t < ntok; t++) y[t * y_stride] = 0.0f;
    for (int64_t b = 0, k0 = 0; k0 < n; b++, k0 += 128) {
        int64_t len = n - k0 < 128 ? n - k0 : 128;
        const uint8_t *wb = w + k0;
        if (len < 128) {
            memset(wpad, 0, sizeof wpad);
            memcpy(wpad, wb, (size_t)len);
            wb = wpad;
        }
        __m256 wv[16];
        for (int v = 0; v < 16; v++) wv[v] = e4m3x8_scaled(wb + 8 * v);
        for (int t = 0; t < ntok; t++) {
            const float *a = qa + t * a_stride + k0;
            if (len < 128) {
                memset(apad, 0, sizeof apad);
                memcpy(apad, a, (size_t)len * sizeof(float));
                a = apad;
            }
            __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
            for (int v = 0; v < 8; v++) {
                lo = _mm256_fmadd_ps(wv[2 * v], _mm256_loadu_ps(a + 16 * v), lo);
                hi = _mm256_fmadd_ps(wv[2 * v + 1], _mm256_loadu_ps(a + 16 * v + 8), hi);
            }
            float bd = reduce16(lo, hi) * 256.0f;
            float term = bd * (as[t * as_stride + b] * ws[b]); /* separate statement: no FMA */
            y[t * y_stride] += term;
        }
    }
}

/* Activation quantization, bitwise equal to cpuq_fp8_act_quant (the method of avx512/fp8.c);
 * a partial block's tail goes through a zero-padded buffer. */
static void act_quant_avx2(int64_t n, const float *x, float *qa, float *s, int ue8m0)
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    float xin[128], qout[128];
    for (int64_t b = 0, k0 = 0; k0 < n; b++, k0 += 128) {
        int64_t len = n - k0 < 128 ? n - k0 : 128;
        const float *xb = x + k0;
        if (len < 128) {
            memset(xin, 0, sizeof xin);
            memcpy(xin, xb, (size_t)len * sizeof(float));
            xb = xin;
        }
        __m256 vmax = _mm256_setzero_ps();
        for (int k = 0; k < 128; k += 8)
            vmax = _mm256_max_ps(vmax, _mm256_and_ps(_mm256_loadu_ps(xb + k), absmask));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        float sc = (amax > 1e-4f ? amax : 1e-4f) / 448.0f;
        if (ue8m0) sc = cpuq_fp8_ue8m0(sc);
        s[b] = sc;
        const __m256 vsc = _mm256_set1_ps(sc);
        float *qb = len < 128 ? qout : qa + k0;
        for (int k = 0; k < 128; k += 8) {
            __m256 v = _mm256_div_ps(_mm256_loadu_ps(xb + k), vsc);
            __m256 a = _mm256_min_ps(_mm256_and_ps(v, absmask), _mm256_set1_ps(448.0f));
            __m256i bits = _mm256_castps_si256(a);
            __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 20), _mm256_set1_epi32(1));
            __m256i rn = _mm256_and_si256(
                _mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7ffff)), lsb),
                _mm256_set1_epi32((int)0xfff00000u));
            __m256 sub = _mm256_mul_ps(
                _mm256_cvtepi32_ps(_mm256_cvtps_epi32(_mm256_mul_ps(a, _mm256_set1_ps(512.0f)))),
                _mm256_set1_ps(1.0f / 512.0f));
            __m256 small = _mm256_cmp_ps(a, _mm256_set1_ps(0.015625f), _CMP_LT_OQ);
            __m256 r = _mm256_blendv_ps(_mm256_castsi256_ps(rn), sub, small);
            _mm256_storeu_ps(qb + k, _mm256_or_ps(r, _mm256_andnot_ps(absmask, v)));
        }
        if (len < 128) memcpy(qa + k0, qout, (size_t)len * sizeof(float));
    }
}

void cpuq__fp8_fill_avx2(struct cpuq_fp8_kern *k)
{
    k->isa = "avx2";
    k->dot = dot_avx2;
    k->act_quant = act_quant_avx2;
}
