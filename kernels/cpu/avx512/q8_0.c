/* avx512/q8_0.c - Q8_0 x Q8_0 and IQ4_XS x Q8_K dot products, and the Q8_0 activation quantizer,
 * with AVX-512 BW + VNNI. Shape of the multi-token kernels: see avx512/common.h.
 *
 * Both weight formats are signed, so the weights go in as |w| (unsigned) and their signs are moved
 * onto the activations (a masked 0 - a), which keeps vpmaddubsw exact: |w| <= 127 and |a| <= 127
 * give pair sums <= 32258 < 2^15 (Q8_0 and Q8_K never produce -128). IQ4_XS nibbles become table
 * values with vpshufb. The Q8_0 quantizer is bitwise equal to the reference (roundf = round half
 * away from zero, done as trunc + a correction).
 * Threads: pure functions.
 */
#include "kernels/cpu/avx512/common.h"
#include "kernels/cpu/avx512/kernels.h"
#include "kernels/cpu/qblocks.h"

AVX512_INLINE float hsum256(__m256 v)
{
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    return _mm_cvtss_f32(_mm_add_ss(a, _mm_movehdup_ps(a)));
}

/* ---- Q8_0: two 32-blocks per 512-bit vector; the last odd block uses 256-bit vectors */

AVX512_INLINE void q80_row(int64_t n, const void *wv, const char *act, size_t ab, int T, float *y,
                           int64_t ldy)
{
    const struct block_q8_0 *w = wv;
    const int64_t nb = n / QK8_0;
    const __m512i ones = _mm512_set1_epi16(1);
    __m512 facc[AVX512_TG];
    __m256 hacc[AVX512_TG];
    for (int t = 0; t < T; t++) {
        facc[t] = _mm512_setzero_ps();
        hacc[t] = _mm256_setzero_ps();
    }
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
        const struct block_q8_0 *b = w + i;
        avx512_prefetch(b, 2 * sizeof *b);
        __m512i wq =
            _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)b[0].qs)),
                               _mm256_loadu_si256((const __m256i *)b[1].qs), 1);
        __m512i uw = _mm512_abs_epi8(wq);
        __mmask64 neg = _mm512_movepi8_mask(wq);
        __m512 dw = _mm512_insertf32x8(_mm512_set1_ps(avx512_f16(b[0].d)),
                                       _mm256_set1_ps(avx512_f16(b[1].d)), 1);
        for (int t = 0; t < T; t++) {
            const struct block_q8_0 *a = (const struct block_q8_0 *)(act + (size_t)t * ab) + i;
            __m512i aq = _mm512_inserti64x4(
                _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)a[0].qs)),
                _mm256_loadu_si256((const __m256i *)a[1].qs), 1);
            aq = _mm512_mask_sub_epi8(aq, neg, _mm512_setzero_si512(), aq);
            __m512i s = _mm512_madd_epi16(_mm512_maddubs_epi16(uw, aq), ones);
            __m512 da = _mm512_insertf32x8(_mm512_set1_ps(avx512_f16(a[0].d)),
                                           _mm256_set1_ps(avx512_f16(a[1].d)), 1);
            facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, da), facc[t]);
        }
    }
    if (i < nb) {
        const struct block_q8_0 *b = w + i;
        __m256i wq = _mm256_loadu_si256((const __m256i *)b->qs);
        __m256i uw = _mm256_abs_epi8(wq);
        const float dw = avx512_f16(b->d);
        for (int t = 0; t < T; t++) {
            const struct block_q8_0 *a = (const struct block_q8_0 *)(act + (size_t)t * ab) + i;
            __m256i sa = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)a->qs), wq);
            __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(uw, sa), _mm256_set1_epi16(1));
            hacc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(dw * avx512_f16(a->d)),
                                      hacc[t]);
        }
    }
    for (int t = 0; t < T; t++) y[t * ldy] = avx512_hsum(facc[t]) + hsum256(hacc[t]);
}

/* ---- IQ4_XS */

AVX512_INLINE void iq4xs_row(int64_t n, const void *wv, const char *act, size_t ab, int T, float *y,
                             int64_t ldy)
{
    const struct block_iq4_xs *w = wv;
    const __m512i table =
        _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)cpuq_kvalues_iq4nl));
    /* per 128-bit lane: low nibbles, high nibbles, low, high */
    const __m512i shift = _mm512_setr_epi64(0, 0, 0x0004000400040004ll, 0x0004000400040004ll, 0, 0,
                                            0x0004000400040004ll, 0x0004000400040004ll);
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    __m512 facc[AVX512_TG];
    for (int t = 0; t < T; t++) facc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        const struct block_iq4_xs *b = w + i;
        avx512_prefetch(b, sizeof *b);
        /* the 8 sub-block scales (offset removed) as int16 in lanes 0..7 */
        uint32_t l;
        memcpy(&l, b->scales_l, 4);
        const __m128i lv = _mm_cvtsi32_si128((int)l), n4 = _mm_set1_epi8(0x0f);
        __m128i lo =
            _mm_unpacklo_epi8(_mm_and_si128(lv, n4), _mm_and_si128(_mm_srli_epi16(lv, 4), n4));
        __m256i hi =
            _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(b->scales_h),
                                               _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)),
                             _mm256_set1_epi32(3));
        __m256i ls =
            _mm256_sub_epi32(_mm256_or_si256(_mm256_cvtepu8_epi32(lo), _mm256_slli_epi32(hi, 4)),
                             _mm256_set1_epi32(32));
        __m512i sc16 = _mm512_castsi128_si512(_mm256_cvtepi32_epi16(ls));
        __m512i scv[4], uw[4];
        __mmask64 neg[4];
        for (int c = 0; c < 4; c++) {
            scv[c] = _mm512_permutexvar_epi16(_mm512_loadu_si512(idx_pair[c]), sc16);
            __m512i x =
                _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b->qs + 32 * c)));
            x = _mm512_shuffle_i64x2(x, x, _MM_SHUFFLE(3, 1, 2, 0));
            __m512i v =
                _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srlv_epi16(x, shift), m4));
            uw[c] = _mm512_abs_epi8(v);
            neg[c] = _mm512_movepi8_mask(v);
        }
        const float dw = avx512_f16(b->d);
        for (int t = 0; t < T; t++) {
            const struct block_q8_K *a = (const struct block_q8_K *)(act + (size_t)t * ab) + i;
            __m512i acc = _mm512_setzero_si512();
            for (int c = 0; c < 4; c++) {
                __m512i aq = _mm512_loadu_si512(a->qs + 64 * c);
                aq = _mm512_mask_sub_epi8(aq, neg[c], _mm512_setzero_si512(), aq);
                acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(uw[c], aq), scv[c]);
            }
            facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(dw * a->d), facc[t]);
        }
    }
    for (int t = 0; t < T; t++) y[t * ldy] = avx512_hsum(facc[t]);
}

AVX512_DEFINE_DOT(q8_0_q8_0, q80_row)
AVX512_DEFINE_DOT(iq4_xs_q8_k, iq4xs_row)

/* ---- Q8_0 activations, bitwise equal to cpuq_quant_q8_0_ref */

void cpuq_quant_q8_0_avx512(const float *src, void *dst, int64_t n)
{
    struct block_q8_0 *y = dst;
    const __m512 sign = _mm512_set1_ps(-0.0f), half = _mm512_set1_ps(0.5f),
                 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n / QK8_0; i++, src += QK8_0) {
        __m512 x0 = _mm512_loadu_ps(src), x1 = _mm512_loadu_ps(src + 16);
        float amax = _mm512_reduce_max_ps(
            _mm512_max_ps(_mm512_andnot_ps(sign, x0), _mm512_andnot_ps(sign, x1)));
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = (uint16_t)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        for (int h = 0; h < 2; h++) {
            __m512 v = _mm512_mul_ps(h ? x1 : x0, _mm512_set1_ps(id));
            __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            __m512 frac = _mm512_andnot_ps(sign, _mm512_sub_ps(v, t));
            __mmask16 up = _mm512_cmp_ps_mask(frac, half, _CMP_GE_OQ);
            __m512 r = _mm512_mask_add_ps(t, up, t, _mm512_or_ps(one, _mm512_and_ps(sign, v)));
            _mm_storeu_si128((__m128i *)(y[i].qs + 16 * h),
                             _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(r)));
        }
    }
}
