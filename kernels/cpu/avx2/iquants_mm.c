/* avx2/iquants_mm.c - multi-token mul_mat for the grid i-quants (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS,
 * IQ3_S, IQ1_S, IQ1_M) x Q8_K with AVX2.
 *
 * Rows go in blocks of IQ_NR, tokens in chunks of up to IQ_TT: each super-block of the row block
 * is decoded once (avx2/iq_decode.h: signed int8 values and int16 scales, about 1 KB a row) and
 * then dotted with every token of the chunk, so the grid lookups and sign expansion are paid once
 * per chunk instead of once per token. One token: the single-token dots (avx2/iquants.c).
 * Numerics: per token and sub-block vpmaddubsw of the activations offset to unsigned (a + 128)
 * with the signed values, vpmaddwd with the scales, minus the decoded 128 x sum(w x scale), give
 * exact int32 sums (IQ1_M's delta term: vpsignb moves the signs onto the activations); each
 * super-block's integer sum, and the f32 update d * a.d * sum (IQ1: + 1/8 x the delta sum), are
 * those of the single-token dots in the same order, so every result is bit-identical to
 * vec_dot (and to the scalar reference). Threads: pure functions.
 */
#include "kernels/cpu/avx2/iq_decode.h"
#include "kernels/cpu/avx2/kernels.h"

#define IQ_NR 4  /* weight rows per block */
#define IQ_TT 64 /* tokens per chunk */
#define AVX2_INLINE static inline __attribute__((always_inline))

/* four int32 vectors -> their four lane sums */
AVX2_INLINE __m128i reduce4(__m256i a, __m256i b, __m256i c, __m256i d)
{
    const __m256i s = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
    return _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
}

/* the four rows' integer sums for one token over one super-block, as f32 (IQ1: with the delta) */
AVX2_INLINE __m128 dot4(const struct iq_sb *dec, const struct block_q8_K *a, enum iq_kind kind)
{
    __m256i s[IQ_NR], e[IQ_NR];
    for (int r = 0; r < IQ_NR; r++) s[r] = e[r] = _mm256_setzero_si256();
    for (int ib = 0; ib < QK_K / 32; ib++) {
        const __m256i av = _mm256_loadu_si256((const __m256i *)(a->qs + 32 * ib));
        const __m256i au = _mm256_xor_si256(av, _mm256_set1_epi8(-128)); /* a + 128 */
        for (int r = 0; r < IQ_NR; r++) {
            const __m256i w = _mm256_loadu_si256((const __m256i *)(dec[r].w + 32 * ib));
            const __m256i sc = _mm256_loadu_si256((const __m256i *)dec[r].sc[ib]);
            s[r] = _mm256_add_epi32(s[r], _mm256_madd_epi16(_mm256_maddubs_epi16(au, w), sc));
            if (kind == IQ_IQ1M) { /* int16 partial sums stay below 8 x 2 x 15 x 127 */
                const __m256i w2 = _mm256_loadu_si256((const __m256i *)(dec[r].w2 + 32 * ib));
                const __m256i m2 = _mm256_loadu_si256((const __m256i *)(dec[r].m2 + 32 * ib));
                e[r] = _mm256_add_epi16(e[r], _mm256_maddubs_epi16(m2, _mm256_sign_epi8(av, w2)));
            }
        }
    }
    const __m128i corr = _mm_setr_epi32(dec[0].corr, dec[1].corr, dec[2].corr, dec[3].corr);
    const __m128 f = _mm_cvtepi32_ps(_mm_sub_epi32(reduce4(s[0], s[1], s[2], s[3]), corr));
    if (kind == IQ_PLAIN) return f;
    if (kind == IQ_IQ1S) {
        const __m256i bs = _mm256_loadu_si256((const __m256i *)a->bsums);
        for (int r = 0; r < IQ_NR; r++)
            e[r] = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)dec[r].c1), bs);
    } else {
        for (int r = 0; r < IQ_NR; r++) e[r] = _mm256_madd_epi16(e[r], _mm256_set1_epi16(1));
    }
    const __m128 fe = _mm_cvtepi32_ps(reduce4(e[0], e[1], e[2], e[3]));
    return _mm_add_ps(f, _mm_mul_ps(_mm_set1_ps(CPUQ_IQ1_DELTA), fe));
}

/* y[t * ldy + r] for r < nrows, t < ntok (ntok >= 1); post: the dot's final factor */
AVX2_INLINE void iq_mm(int64_t n, const void *w, size_t w_row_bytes, int64_t nrows, const void *act,
                       size_t act_row_bytes, int64_t ntok, float *y, int64_t ldy, size_t blk_bytes,
                       iq_decode_fn decode, enum iq_kind kind, float post)
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
    void cpuq_mul_mat_##name##_q8_k_avx2(int64_t n, const void *w, size_t w_row_bytes,             \
                                         int64_t nrows, const void *act, size_t act_row_bytes,     \
                                         int64_t ntok, float *y, int64_t ldy)                      \
    {                                                                                              \
        if (ntok == 1) {                                                                           \
            for (int64_t r = 0; r < nrows; r++)                                                    \
                cpuq_vec_dot_##name##_q8_k_avx2(n, y + r, (const char *)w + r * w_row_bytes, act); \
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
