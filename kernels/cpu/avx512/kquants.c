/* avx512/kquants.c - K-quant dot products (Q4_K, Q5_K, Q6_K x Q8_K) and the Q8_K activation
 * quantizer with AVX-512 BW + VNNI. Shape of the multi-token kernels: see avx512/common.h.
 *
 * Per 256-weight super-block the quants are unpacked once into four 64-byte vectors of unsigned
 * values (Q4_K 0..15, Q5_K 0..31, Q6_K 0..63, each byte aligned with its Q8_K activation byte),
 * and the sub-block scales into int16 vectors lined up with vpmaddubsw's output. Per token:
 * vpmaddubsw (u8 x s8 -> s16 pairs, no saturation possible for these ranges: 63*127*2 < 2^15)
 * then vpdpwssd with the scales accumulates sc * q * a exactly in int32. Offsets (Q4_K/Q5_K
 * mins, Q6_K's -32) use the activation's bsums. Q8_K quantization is bitwise equal to the scalar
 * reference (same fp32 operations, RNE conversion).
 * Threads: pure functions.
 */
#include "kernels/cpu/avx512/common.h"
#include "kernels/cpu/avx512/kernels.h"
#include "kernels/cpu/qblocks.h"

/* ---- Q4_K / Q5_K */

AVX512_INLINE void q45k_scales(const uint8_t *packed, __m512i scv[4], __m256i *mins16)
{
    uint64_t sc, mn;
    avx512_kscales(packed, &sc, &mn);
    __m512i sc16 = _mm512_cvtepu8_epi16(_mm256_zextsi128_si256(_mm_cvtsi64_si128((long long)sc)));
    for (int c = 0; c < 4; c++)
        scv[c] = _mm512_permutexvar_epi16(_mm512_loadu_si512(idx_pair[c]), sc16);
    const __m128i dup = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    *mins16 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(_mm_cvtsi64_si128((long long)mn), dup));
}

/* per-token part shared by Q4_K and Q5_K */
#define Q45K_TOKENS(T)                                                                             \
    for (int t = 0; t < (T); t++) {                                                                \
        const struct block_q8_K *a = (const struct block_q8_K *)(act + (size_t)t * ab) + i;        \
        __m512i acc = _mm512_setzero_si512();                                                      \
        for (int c = 0; c < 4; c++)                                                                \
            acc = _mm512_dpwssd_epi32(                                                             \
                acc, _mm512_maddubs_epi16(wq[c], _mm512_loadu_si512(a->qs + 64 * c)), scv[c]);     \
        __m256i mm = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)a->bsums), mins16);     \
        facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(a->d * dw), facc[t]);    \
        macc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mm), _mm256_set1_ps(a->d * dmw), macc[t]);    \
    }

#define ROW_INIT(T)                                                                                \
    __m512 facc[AVX512_TG];                                                                        \
    __m256 macc[AVX512_TG];                                                                        \
    for (int t = 0; t < (T); t++) {                                                                \
        facc[t] = _mm512_setzero_ps();                                                             \
        macc[t] = _mm256_setzero_ps();                                                             \
    }

AVX512_INLINE float hsum256(__m256 v)
{
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    return _mm_cvtss_f32(_mm_add_ss(a, _mm_movehdup_ps(a)));
}

#define ROW_STORE(T)                                                                               \
    for (int t = 0; t < (T); t++) y[t * ldy] = avx512_hsum(facc[t]) - hsum256(macc[t]);

AVX512_INLINE void q4k_row(int64_t n, const void *wv, const char *act, size_t ab, int T, float *y,
                           int64_t ldy)
{
    const struct block_q4_K *w = wv;
    const __m512i shift = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    ROW_INIT(T)
    for (int64_t i = 0; i < n / QK_K; i++) {
        const struct block_q4_K *b = w + i;
        avx512_prefetch(b, sizeof *b);
        __m512i scv[4], wq[4];
        __m256i mins16;
        q45k_scales(b->scales, scv, &mins16);
        for (int c = 0; c < 4; c++) {
            __m512i q =
                _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b->qs + 32 * c)));
            wq[c] = _mm512_and_si512(_mm512_srlv_epi16(q, shift), m4);
        }
        const float dw = avx512_f16(b->d), dmw = avx512_f16(b->dmin);
        Q45K_TOKENS(T)
    }
    ROW_STORE(T)
}

AVX512_INLINE void q5k_row(int64_t n, const void *wv, const char *act, size_t ab, int T, float *y,
                           int64_t ldy)
{
    const struct block_q5_K *w = wv;
    const __m512i shift = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
    const __m512i m4 = _mm512_set1_epi8(0x0f), one = _mm512_set1_epi8(1);
    ROW_INIT(T)
    for (int64_t i = 0; i < n / QK_K; i++) {
        const struct block_q5_K *b = w + i;
        avx512_prefetch(b, sizeof *b);
        __m512i scv[4], wq[4];
        __m256i mins16;
        q45k_scales(b->scales, scv, &mins16);
        __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)b->qh));
        for (int c = 0; c < 4; c++) {
            __m512i q =
                _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b->qs + 32 * c)));
            /* bit j of qh[l] is the 5th bit of sub-block j: j = 2c (low half), 2c+1 (high half) */
            __m512i hs = _mm512_inserti64x4(_mm512_set1_epi16((short)(2 * c)),
                                            _mm256_set1_epi16((short)(2 * c + 1)), 1);
            __m512i hb = _mm512_and_si512(_mm512_srlv_epi16(qh, hs), one);
            wq[c] = _mm512_or_si512(_mm512_and_si512(_mm512_srlv_epi16(q, shift), m4),
                                    _mm512_slli_epi16(hb, 4));
        }
        const float dw = avx512_f16(b->d), dmw = avx512_f16(b->dmin);
        Q45K_TOKENS(T)
    }
    ROW_STORE(T)
}

/* ---- Q6_K */

static const int16_t idx_quad[4][32] = {
#define Q(q)                                                                                       \
    {                                                                                              \
        4 * q, 4 * q, 4 * q, 4 * q, 4 * q, 4 * q, 4 * q, 4 * q, 4 * q + 1, 4 * q + 1, 4 * q + 1,   \
            4 * q + 1, 4 * q + 1, 4 * q + 1, 4 * q + 1, 4 * q + 1, 4 * q + 2, 4 * q + 2,           \
            4 * q + 2, 4 * q + 2, 4 * q + 2, 4 * q + 2, 4 * q + 2, 4 * q + 2, 4 * q + 3,           \
            4 * q + 3, 4 * q + 3, 4 * q + 3, 4 * q + 3, 4 * q + 3, 4 * q + 3, 4 * q + 3            \
    }
    Q(0), Q(1), Q(2), Q(3)
#undef Q
};

AVX512_INLINE void q6k_row(int64_t n, const void *wv, const char *act, size_t ab, int T, float *y,
                           int64_t ldy)
{
    const struct block_q6_K *w = wv;
    const __m512i m4 = _mm512_set1_epi8(0x0f), m3 = _mm512_set1_epi8(3);
    const __m512i sh02 = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    const __m512i sh46 = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1);
    ROW_INIT(T)
    for (int64_t i = 0; i < n / QK_K; i++) {
        const struct block_q6_K *b = w + i;
        avx512_prefetch(b, sizeof *b);
        __m256i sc16lo = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
        __m512i sc16 = _mm512_castsi256_si512(sc16lo);
        __m512i scv[4], wq[4];
        for (int q = 0; q < 4; q++)
            scv[q] = _mm512_permutexvar_epi16(_mm512_loadu_si512(idx_quad[q]), sc16);
        for (int h = 0; h < 2; h++) {
            __m512i ql = _mm512_loadu_si512(b->ql + 64 * h);
            __m512i qh =
                _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b->qh + 32 * h)));
            __m512i h0 = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh02), m3), 4);
            __m512i h1 = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh46), m3), 4);
            wq[2 * h] = _mm512_or_si512(_mm512_and_si512(ql, m4), h0);
            wq[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4), h1);
        }
        const float dw = avx512_f16(b->d);
        for (int t = 0; t < T; t++) {
            const struct block_q8_K *a = (const struct block_q8_K *)(act + (size_t)t * ab) + i;
            __m512i acc = _mm512_setzero_si512();
            for (int q = 0; q < 4; q++)
                acc = _mm512_dpwssd_epi32(
                    acc, _mm512_maddubs_epi16(wq[q], _mm512_loadu_si512(a->qs + 64 * q)), scv[q]);
            __m256i mm = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)a->bsums), sc16lo);
            const float d = dw * a->d;
            facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(d), facc[t]);
            macc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mm), _mm256_set1_ps(32.0f * d), macc[t]);
        }
    }
    ROW_STORE(T)
}

/* ---- entry points */

AVX512_DEFINE_DOT(q4_k_q8_k, q4k_row)
AVX512_DEFINE_DOT(q5_k_q8_k, q5k_row)
AVX512_DEFINE_DOT(q6_k_q8_k, q6k_row)

/* ---- Q8_K activations: bitwise equal to cpuq_quant_q8_k_ref */

void cpuq_quant_q8_k_avx512(const float *src, void *dst, int64_t n)
{
    struct block_q8_K *y = dst;
    const __m512 sign = _mm512_set1_ps(-0.0f);
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        __m512 vmax = _mm512_setzero_ps();
        for (int j = 0; j < QK_K; j += 16)
            vmax = _mm512_max_ps(vmax, _mm512_andnot_ps(sign, _mm512_loadu_ps(src + j)));
        const float amax = _mm512_reduce_max_ps(vmax);
        if (!amax) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        /* the first element with |x| == amax gives the sign, like the reference's scan */
        float max = 0;
        for (int j = 0; j < QK_K; j += 16) {
            __mmask16 k = _mm512_cmp_ps_mask(_mm512_andnot_ps(sign, _mm512_loadu_ps(src + j)),
                                             _mm512_set1_ps(amax), _CMP_EQ_OQ);
            if (k) {
                max = src[j + __builtin_ctz(k)];
                break;
            }
        }
        const float iscale = -127.f / max;
        const __m512 vs = _mm512_set1_ps(iscale);
        const __m512i lim = _mm512_set1_epi32(127);
        for (int j = 0; j < QK_K; j += 16) {
            __m512i q = _mm512_min_epi32(
                _mm512_cvtps_epi32(_mm512_mul_ps(vs, _mm512_loadu_ps(src + j))), lim);
            _mm_storeu_si128((__m128i *)(y[i].qs + j), _mm512_cvtepi32_epi8(q));
            y[i].bsums[j / 16] = (int16_t)_mm512_reduce_add_epi32(q);
        }
        y[i].d = 1 / iscale;
    }
}
