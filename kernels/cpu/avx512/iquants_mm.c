/* avx512/iquants_mm.c - multi-token mul_mat for the grid i-quants (IQ2_XXS, IQ2_XS, IQ2_S,
 * IQ3_XXS, IQ3_S, IQ1_S, IQ1_M) x Q8_K with AVX-512 BW + VNNI.
 *
 * The shape of avx2/iquants_mm.c: rows in blocks of IQ_NR, tokens in chunks of up to IQ_TT, each
 * super-block of the row block decoded once (avx2/iq_decode.h) and dotted with every token of the
 * chunk; 64 values (two sub-blocks) per step. One token: the single-token dots (avx512/iquants.c).
 * Numerics: the +128 offset on the activations: vpmaddubsw of a + 128 (unsigned) with the
 * signed values, VNNI vpdpwssd adding the int16 pairs times the scales into int32, minus the
 * decoded 128 x sum(w x scale) (a weight-only correction, no per-token block sums needed); IQ1_M's
 * delta term uses the sign trick (vpmovb2m of its values negates the activations under a mask;
 * Q8_K activations are in [-127, 127]: exact). Each super-block's integer sum is exact and the f32
 * update is the single-token dots' in the same order: bit-identical to vec_dot and to the scalar
 * reference. Threads: pure functions.
 */
#include "kernels/cpu/avx2/iq_decode.h"
#include "kernels/cpu/avx512/common.h"
#include "kernels/cpu/avx512/kernels.h"

#define IQ_NR 4  /* weight rows per block */
#define IQ_TT 64 /* tokens per chunk */

/* four int32 vectors -> their four lane sums */
AVX512_INLINE __m128i reduce4(__m512i a, __m512i b, __m512i c, __m512i d)
{
#define H(v) _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1))
    const __m256i s =
        _mm256_hadd_epi32(_mm256_hadd_epi32(H(a), H(b)), _mm256_hadd_epi32(H(c), H(d)));
#undef H
    return _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
}

/* activations av negated where the int8 w is negative (IQ1_M's delta term) */
AVX512_INLINE __m512i apply_sign(__m512i av, const int8_t *w)
{
    return _mm512_mask_sub_epi8(av, _mm512_movepi8_mask(_mm512_loadu_si512(w)),
                                _mm512_setzero_si512(), av);
}

/* the four rows' integer sums for one token over one super-block, as f32 (IQ1: with the delta) */
AVX512_INLINE __m128 dot4(const struct iq_sb *dec, const struct block_q8_K *a, enum iq_kind kind)
{
    __m512i s[IQ_NR], e[IQ_NR];
    for (int r = 0; r < IQ_NR; r++) s[r] = e[r] = _mm512_setzero_si512();
    for (int j = 0; j < QK_K / 64; j++) {
        const __m512i av = _mm512_loadu_si512(a->qs + 64 * j);
        const __m512i au = _mm512_xor_si512(av, _mm512_set1_epi8(-128)); /* a + 128 */
        for (int r = 0; r < IQ_NR; r++) {
            const __m512i p = _mm512_maddubs_epi16(au, _mm512_loadu_si512(dec[r].w + 64 * j));
            s[r] = _mm512_dpwssd_epi32(s[r], p, _mm512_loadu_si512(dec[r].sc[2 * j]));
            if (kind == IQ_IQ1M) /* int16 partial sums stay below 4 x 2 x 15 x 127 */
                e[r] = _mm512_add_epi16(e[r],
                                        _mm512_maddubs_epi16(_mm512_loadu_si512(dec[r].m2 + 64 * j),
                                                             apply_sign(av, dec[r].w2 + 64 * j)));
        }
    }
    const __m128i corr = _mm_setr_epi32(dec[0].corr, dec[1].corr, dec[2].corr, dec[3].corr);
    const __m128 f = _mm_cvtepi32_ps(_mm_sub_epi32(reduce4(s[0], s[1], s[2], s[3]), corr));
    if (kind == IQ_PLAIN) return f;
    __m128i ei;
    if (kind == IQ_IQ1S) {
        const __m256i bs = _mm256_loadu_si256((const __m256i *)a->bsums);
        __m256i c[IQ_NR];
        for (int r = 0; r < IQ_NR; r++)
            c[r] = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)dec[r].c1), bs);
        const __m256i h =
            _mm256_hadd_epi32(_mm256_hadd_epi32(c[0], c[1]), _mm256_hadd_epi32(c[2], c[3]));
        ei = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    } else {
        for (int r = 0; r < IQ_NR; r++) e[r] = _mm512_madd_epi16(e[r], _mm512_set1_epi16(1));
        ei = reduce4(e[0], e[1], e[2], e[3]);
    }
    return _mm_add_ps(f, _mm_mul_ps(_mm_set1_ps(CPUQ_IQ1_DELTA), _mm_cvtepi32_ps(ei)));
}

/* y[t * ldy + r] for r < nrows, t < ntok (ntok >= 1); post: the dot's final factor */
AVX512_INLINE void iq_mm(int64_t n, const void *w, size_t w_row_bytes, int64_t nrows,
                         const void *act, size_t act_row_bytes, int64_t ntok, float *y, int64_t ldy,
                         size_t blk_bytes, iq_decode_fn decode, enum iq_kind kind, float post)
{
    struct iq_sb dec[IQ_NR];
    float acc[IQ_TT][IQ_NR];
    for (int64_t r0 = 0; r0 < nrows; r0 += IQ_NR) {
        const char *wr[IQ_NR]; /* rows past the end repeat the last one (results dropped) */
        for (int r = 0; r < IQ_NR; r++)
            wr[r] = (const char *)w + (size_t)(r0 + r < nrows ? r0 + r : nrows - 1) * w_row_bytes;
        for (int64_t t0 = 0; t0 < ntok; t0 += IQ_TT) {
            const int tt = (int)(ntok - t0 < IQ_TT ? ntok - t0 : IQ_TT);
            memset(acc, 0, sizeof acc);
            for (int64_t i = 0; i < n / QK_K; i++) {
                for (int r = 0; r < IQ_NR; r++) decode(wr[r] + (size_t)i * blk_bytes, &dec[r]);
                const __m128 dw = _mm_setr_ps(dec[0].d, dec[1].d, dec[2].d, dec[3].d);
                for (int t = 0; t < tt; t++) {
                    const struct block_q8_K *a =
                        (const struct block_q8_K *)((const char *)act +
                                                    (size_t)(t0 + t) * act_row_bytes) +
                        i;
                    const __m128 f = dot4(dec, a, kind);
                    const __m128 d = _mm_mul_ps(dw, _mm_set1_ps(a->d));
                    _mm_storeu_ps(acc[t], _mm_add_ps(_mm_loadu_ps(acc[t]), _mm_mul_ps(d, f)));
                }
            }
            for (int t = 0; t < tt; t++)
                for (int r = 0; r < IQ_NR && r0 + r < nrows; r++)
                    y[(t0 + t) * ldy + r0 + r] = post * acc[t][r];
        }
    }
}

#define IQ_MUL_MAT(name, blk, kind, post)                                                          \
    void cpuq_mul_mat_##name##_q8_k_avx512(int64_t n, const void *w, size_t w_row_bytes,           \
                                           int64_t nrows, const void *act, size_t act_row_bytes,   \
                                           int64_t ntok, float *y, int64_t ldy)                    \
    {                                                                                              \
        if (ntok == 1) {                                                                           \
            for (int64_t r = 0; r < nrows; r++)                                                    \
                cpuq_vec_dot_##name##_q8_k_avx512(n, y + r, (const char *)w + r * w_row_bytes,     \
                                                  act);                                            \
            return;                                                                                \
        }                                                                                          \
        iq_mm(n, w, w_row_bytes, nrows, act, act_row_bytes, ntok, y, ldy, sizeof(struct blk),      \
              iq_decode_##name, kind, post);                                                       \
    }

IQ_MUL_MAT(iq2_xxs, block_iq2_xxs, IQ_PLAIN, 0.125f)
IQ_MUL_MAT(iq2_xs, block_iq2_xs, IQ_PLAIN, 0.125f)
IQ_MUL_MAT(iq2_s, block_iq2_s, IQ_PLAIN, 0.125f)
IQ_MUL_MAT(iq3_xxs, block_iq3_xxs, IQ_PLAIN, 0.25f)
IQ_MUL_MAT(iq3_s, block_iq3_s, IQ_PLAIN, 1.0f)
IQ_MUL_MAT(iq1_s, block_iq1_s, IQ_IQ1S, 1.0f)
IQ_MUL_MAT(iq1_m, block_iq1_m, IQ_IQ1M, 1.0f)
