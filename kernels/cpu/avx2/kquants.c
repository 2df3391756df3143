/* avx2/kquants.c - Q4_K, Q5_K, Q6_K, IQ4_XS x Q8_K and Q8_0 x Q8_0 dot products (single and
 * multi-token), and the Q8_K / Q8_0 activation quantizers, with AVX2 + FMA + F16C.
 *
 * Same plan as the AVX-512 kernels (avx512/common.h) on 256-bit registers: per super-block the
 * quants are unpacked once to unsigned bytes aligned with their activation bytes; per token
 * vpmaddubsw (exact for these ranges) then vpmaddwd with the sub-block scales as int16 gives
 * exact int32 sums; fp32 accumulation per block, reduced at the end of the row. Tokens go in
 * groups of up to AVX2_TG per weight load (16 registers: small groups). Signed weights (Q8_0) go
 * in as |w| with their signs moved onto the activations (vpsignb).
 * The quantizers are bitwise equal to the scalar reference.
 * Threads: pure functions.
 */
#include "kernels/cpu/avx2/kernels.h"
#include "kernels/cpu/qblocks.h"

#include <immintrin.h>
#include <stddef.h>
#include <string.h>

#define AVX2_TG 4
#define AVX2_INLINE static inline __attribute__((always_inline))

AVX2_INLINE float f16(uint16_t h) { return _cvtsh_ss(h); }

/* software prefetch ahead of the weights (see avx512/common.h) */
#ifndef CPUQ_PF_BYTES
#define CPUQ_PF_BYTES 4096
#endif
AVX2_INLINE void prefetch(const void *p, int n)
{
    for (int o = 0; o < n; o += 64) _mm_prefetch((const char *)p + CPUQ_PF_BYTES + o, _MM_HINT_T0);
}

AVX2_INLINE float hsum(__m256 v)
{
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    return _mm_cvtss_f32(_mm_add_ss(a, _mm_movehdup_ps(a)));
}

AVX2_INLINE __m256i pair16(int lo, int hi) /* int16 lanes 0-7 = lo, 8-15 = hi */
{
    return _mm256_setr_m128i(_mm_set1_epi16((short)lo), _mm_set1_epi16((short)hi));
}

/* every (row, token group) with a constant group size per call of kern (see avx512/common.h) */
// clang-format off
#define KCASE(kern, T) case T: kern(n, wr, at, act_row_bytes, T, yt, ldy); break;
#define MUL_MAT_BODY(kern)                                                             \
    for (int64_t r = 0; r < nrows; r++) {                                              \
        const void *wr = (const char *)w + (size_t)r * w_row_bytes;                    \
        for (int64_t t = 0; t < ntok; t += AVX2_TG) {                                  \
            const char *at = (const char *)act + (size_t)t * act_row_bytes;            \
            float *yt = y + t * ldy + r;                                               \
            switch (ntok - t < AVX2_TG ? ntok - t : AVX2_TG) {                         \
            KCASE(kern, 4) KCASE(kern, 3) KCASE(kern, 2) KCASE(kern, 1)                 \
            default: break;                                                            \
            }                                                                          \
        }                                                                              \
    }
// clang-format on

/* ---- Q4_K */

/* Q4_K, and Q5_K (q5 = 1: the 5th bit of each quant from qh, bit j for sub-block j); both blocks
 * start with d, dmin, scales[12] */
AVX2_INLINE void q45k_row(int q5, int64_t n, const void *wv, const char *act, size_t ab, int T,
                          float *y, int64_t ldy)
{
    const int bsz = q5 ? (int)sizeof(struct block_q5_K) : (int)sizeof(struct block_q4_K);
    const int qs_off =
        q5 ? (int)offsetof(struct block_q5_K, qs) : (int)offsetof(struct block_q4_K, qs);
    const __m256i m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    __m256 facc[AVX2_TG], macc[AVX2_TG];
    for (int t = 0; t < T; t++) facc[t] = macc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        const struct block_q4_K *b =
            (const struct block_q4_K *)((const char *)wv + (size_t)i * (size_t)bsz);
        const uint8_t *qs = (const uint8_t *)b + qs_off;
        prefetch(b, bsz);
        __m256i qh = _mm256_setzero_si256();
        if (q5) qh = _mm256_loadu_si256((const __m256i *)((const struct block_q5_K *)b)->qh);
        uint32_t u0, u1, u2;
        memcpy(&u0, b->scales, 4);
        memcpy(&u1, b->scales + 4, 4);
        memcpy(&u2, b->scales + 8, 4);
        uint32_t s_lo = u0 & 0x3f3f3f3fu, m_lo = u1 & 0x3f3f3f3fu;
        uint32_t s_hi = (u2 & 0x0f0f0f0fu) | (((u0 >> 6) & 0x03030303u) << 4);
        uint32_t m_hi = ((u2 >> 4) & 0x0f0f0f0fu) | (((u1 >> 6) & 0x03030303u) << 4);
        /* the 8 scales as int16 in both 128-bit lanes; sub-block j's scale is picked with vpshufb
         */
        const __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(
            _mm_cvtsi64_si128((long long)((uint64_t)s_lo | (uint64_t)s_hi << 32))));
        const __m128i dup = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
        /* built in registers: bytes stored separately and reloaded as one 8-byte load would miss
         * store forwarding (a ~15-cycle stall per block) */
        __m128i mn8 = _mm_cvtsi64_si128((long long)((uint64_t)m_lo | (uint64_t)m_hi << 32));
        const __m256i mins16 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(mn8, dup));
        const float dw = f16(b->d), dmw = f16(b->dmin);
        __m256i iacc[AVX2_TG];
        for (int t = 0; t < T; t++) iacc[t] = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
            __m256i lo = _mm256_and_si256(q, m4),
                    hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            if (q5) {
                __m256i bl = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c)), one);
                __m256i bh =
                    _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c + 1)), one);
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(bl, 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(bh, 4));
            }
            __m256i slo =
                _mm256_shuffle_epi8(sc16, _mm256_set1_epi16((short)(0x0100 + 0x0202 * (2 * c))));
            __m256i shi = _mm256_shuffle_epi8(
                sc16, _mm256_set1_epi16((short)(0x0100 + 0x0202 * (2 * c + 1))));
            for (int t = 0; t < T; t++) {
                const int8_t *aq =
                    ((const struct block_q8_K *)(act + (size_t)t * ab) + i)->qs + 64 * c;
                __m256i pl = _mm256_madd_epi16(
                    _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)aq)), slo);
                __m256i ph = _mm256_madd_epi16(
                    _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(aq + 32))), shi);
                iacc[t] = _mm256_add_epi32(iacc[t], _mm256_add_epi32(pl, ph));
            }
        }
        for (int t = 0; t < T; t++) {
            const struct block_q8_K *a = (const struct block_q8_K *)(act + (size_t)t * ab) + i;
            __m256i mm = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)a->bsums), mins16);
            facc[t] =
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[t]), _mm256_set1_ps(a->d * dw), facc[t]);
            macc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mm), _mm256_set1_ps(a->d * dmw), macc[t]);
        }
    }
    for (int t = 0; t < T; t++) y[t * ldy] = hsum(facc[t]) - hsum(macc[t]);
}

AVX2_INLINE void q4k_row(int64_t n, const void *w, const char *act, size_t ab, int T, float *y,
                         int64_t ldy)
{
    q45k_row(0, n, w, act, ab, T, y, ldy);
}

AVX2_INLINE void q5k_row(int64_t n, const void *w, const char *act, size_t ab, int T, float *y,
                         int64_t ldy)
{
    q45k_row(1, n, w, act, ab, T, y, ldy);
}

/* ---- Q6_K */

AVX2_INLINE void q6k_row(int64_t n, const void *wv, const char *act, size_t ab, int T, float *y,
                         int64_t ldy)
{
    const struct block_q6_K *w = wv;
    const __m256i m4 = _mm256_set1_epi8(0x0f), m3 = _mm256_set1_epi8(3);
    __m256 facc[AVX2_TG], macc[AVX2_TG];
    for (int t = 0; t < T; t++) facc[t] = macc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        const struct block_q6_K *b = w + i;
        prefetch(b, sizeof *b);
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
        const float dw = f16(b->d);
        __m256i iacc[AVX2_TG];
        for (int t = 0; t < T; t++) iacc[t] = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i ql0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
            __m256i ql1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
            for (int m = 0; m < 4; m++) {
                /* elements 128h + 32m .. +31: sub-blocks 8h + 2m, 8h + 2m + 1 */
                __m256i lo = m & 1 ? ql1 : ql0;
                if (m >= 2) lo = _mm256_srli_epi16(lo, 4);
                __m256i hb = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * m), m3);
                __m256i v = _mm256_or_si256(_mm256_and_si256(lo, m4), _mm256_slli_epi16(hb, 4));
                const int j = 8 * h + 2 * m;
                __m256i s = pair16(b->scales[j], b->scales[j + 1]);
                for (int t = 0; t < T; t++) {
                    const int8_t *aq = ((const struct block_q8_K *)(act + (size_t)t * ab) + i)->qs +
                                       128 * h + 32 * m;
                    __m256i p = _mm256_madd_epi16(
                        _mm256_maddubs_epi16(v, _mm256_loadu_si256((const __m256i *)aq)), s);
                    iacc[t] = _mm256_add_epi32(iacc[t], p);
                }
            }
        }
        for (int t = 0; t < T; t++) {
            const struct block_q8_K *a = (const struct block_q8_K *)(act + (size_t)t * ab) + i;
            __m256i mm = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)a->bsums), sc16);
            const float d = dw * a->d;
            facc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[t]), _mm256_set1_ps(d), facc[t]);
            macc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mm), _mm256_set1_ps(32.0f * d), macc[t]);
        }
    }
    for (int t = 0; t < T; t++) y[t * ldy] = hsum(facc[t]) - hsum(macc[t]);
}

/* ---- IQ4_XS: nibbles index the non-linear table (vpshufb), signs moved onto the activations */

/* the 8 sub-block scales of an IQ4_XS block, offset removed, as int32 */
AVX2_INLINE __m256i iq4xs_scales(const struct block_iq4_xs *b)
{
    uint32_t l;
    memcpy(&l, b->scales_l, 4);
    const __m128i m4 = _mm_set1_epi8(0x0f), lv = _mm_cvtsi32_si128((int)l);
    /* low 4 bits: nibble ib of scales_l (byte ib / 2, low nibble first) */
    __m128i lo = _mm_unpacklo_epi8(_mm_and_si128(lv, m4), _mm_and_si128(_mm_srli_epi16(lv, 4), m4));
    /* high 2 bits: bits 2ib, 2ib + 1 of scales_h */
    __m256i hi = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(b->scales_h),
                                                    _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)),
                                  _mm256_set1_epi32(3));
    return _mm256_sub_epi32(_mm256_or_si256(_mm256_cvtepu8_epi32(lo), _mm256_slli_epi32(hi, 4)),
                            _mm256_set1_epi32(32));
}

AVX2_INLINE void iq4xs_row(int64_t n, const void *wv, const char *act, size_t ab, int T, float *y,
                           int64_t ldy)
{
    const struct block_iq4_xs *w = wv;
    const __m256i table =
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)cpuq_kvalues_iq4nl));
    const __m128i m4 = _mm_set1_epi8(0x0f);
    __m256 facc[AVX2_TG];
    for (int t = 0; t < T; t++) facc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        const struct block_iq4_xs *b = w + i;
        prefetch(b, sizeof *b);
        __m256i iacc[AVX2_TG];
        for (int t = 0; t < T; t++) iacc[t] = _mm256_setzero_si256();
        _Alignas(32) int32_t ls[8];
        _mm256_store_si256((__m256i *)ls, iq4xs_scales(b));
        for (int ib = 0; ib < 8; ib++) {
            const __m256i sc = _mm256_set1_epi16((short)ls[ib]);
            __m128i q = _mm_loadu_si128((const __m128i *)(b->qs + 16 * ib));
            /* elements 0..15 = low nibbles, 16..31 = high nibbles */
            __m256i idx =
                _mm256_setr_m128i(_mm_and_si128(q, m4), _mm_and_si128(_mm_srli_epi16(q, 4), m4));
            __m256i v = _mm256_shuffle_epi8(table, idx);
            __m256i uv = _mm256_abs_epi8(v);
            for (int t = 0; t < T; t++) {
                const int8_t *aq =
                    ((const struct block_q8_K *)(act + (size_t)t * ab) + i)->qs + 32 * ib;
                __m256i sa = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)aq), v);
                __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(uv, sa), sc);
                iacc[t] = _mm256_add_epi32(iacc[t], p);
            }
        }
        const float dw = f16(b->d);
        for (int t = 0; t < T; t++) {
            const struct block_q8_K *a = (const struct block_q8_K *)(act + (size_t)t * ab) + i;
            facc[t] =
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[t]), _mm256_set1_ps(dw * a->d), facc[t]);
        }
    }
    for (int t = 0; t < T; t++) y[t * ldy] = hsum(facc[t]);
}

/* ---- Q8_0 */

AVX2_INLINE void q80_row(int64_t n, const void *wv, const char *act, size_t ab, int T, float *y,
                         int64_t ldy)
{
    const struct block_q8_0 *w = wv;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 facc[AVX2_TG];
    for (int t = 0; t < T; t++) facc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const struct block_q8_0 *b = w + i;
        if ((i & 1) == 0) prefetch(b, 2 * sizeof *b);
        __m256i wq = _mm256_loadu_si256((const __m256i *)b->qs);
        __m256i uw = _mm256_abs_epi8(wq);
        const float dw = f16(b->d);
        for (int t = 0; t < T; t++) {
            const struct block_q8_0 *a = (const struct block_q8_0 *)(act + (size_t)t * ab) + i;
            __m256i sa = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)a->qs), wq);
            __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(uw, sa), ones);
            facc[t] =
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(dw * f16(a->d)), facc[t]);
        }
    }
    for (int t = 0; t < T; t++) y[t * ldy] = hsum(facc[t]);
}

#define DEFINE_DOT(name, rowfn)                                                                    \
    void cpuq_vec_dot_##name##_avx2(int64_t n, float *s, const void *w, const void *act)           \
    {                                                                                              \
        rowfn(n, w, act, 0, 1, s, 0);                                                              \
    }                                                                                              \
    void cpuq_mul_mat_##name##_avx2(int64_t n, const void *w, size_t w_row_bytes, int64_t nrows,   \
                                    const void *act, size_t act_row_bytes, int64_t ntok, float *y, \
                                    int64_t ldy)                                                   \
    {                                                                                              \
        MUL_MAT_BODY(rowfn)                                                                        \
    }

DEFINE_DOT(q4_k_q8_k, q4k_row)
DEFINE_DOT(q5_k_q8_k, q5k_row)
DEFINE_DOT(q6_k_q8_k, q6k_row)
DEFINE_DOT(q8_0_q8_0, q80_row)
DEFINE_DOT(iq4_xs_q8_k, iq4xs_row)

/* ---- activation quantizers, bitwise equal to the scalar reference */

void cpuq_quant_q8_k_avx2(const float *src, void *dst, int64_t n)
{
    struct block_q8_K *y = dst;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < n / QK_K; i++, src += QK_K) {
        __m256 vmax = _mm256_setzero_ps();
        for (int j = 0; j < QK_K; j += 8)
            vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, _mm256_loadu_ps(src + j)));
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_movehdup_ps(m));
        const float amax = _mm_cvtss_f32(m);
        if (!amax) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        float max = 0;
        for (int j = 0; j < QK_K; j += 8) {
            int k =
                _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(src + j)),
                                                 _mm256_set1_ps(amax), _CMP_EQ_OQ));
            if (k) {
                max = src[j + __builtin_ctz((unsigned)k)];
                break;
            }
        }
        const float iscale = -127.f / max;
        const __m256 vs = _mm256_set1_ps(iscale);
        const __m256i lim = _mm256_set1_epi32(127);
        for (int j = 0; j < QK_K; j += 16) {
            __m256i q0 = _mm256_min_epi32(
                _mm256_cvtps_epi32(_mm256_mul_ps(vs, _mm256_loadu_ps(src + j))), lim);
            __m256i q1 = _mm256_min_epi32(
                _mm256_cvtps_epi32(_mm256_mul_ps(vs, _mm256_loadu_ps(src + j + 8))), lim);
            __m256i s = _mm256_add_epi32(q0, q1);
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            s4 = _mm_hadd_epi32(s4, s4);
            s4 = _mm_hadd_epi32(s4, s4);
            y[i].bsums[j / 16] = (int16_t)_mm_cvtsi128_si32(s4);
            /* int32 -> int8, values in [-127, 127] */
            __m256i p16 = _mm256_packs_epi32(q0, q1); /* per 128-bit lane */
            __m128i p8 =
                _mm_packs_epi16(_mm256_castsi256_si128(p16), _mm256_extracti128_si256(p16, 1));
            /* lane order after the packs: q0[0..3] q1[0..3] q0[4..7] q1[4..7] */
            p8 = _mm_shuffle_epi8(
                p8, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15));
            _mm_storeu_si128((__m128i *)(y[i].qs + j), p8);
        }
        y[i].d = 1 / iscale;
    }
}

void cpuq_quant_q8_0_avx2(const float *src, void *dst, int64_t n)
{
    struct block_q8_0 *y = dst;
    const __m256 sign = _mm256_set1_ps(-0.0f), half = _mm256_set1_ps(0.5f),
                 one = _mm256_set1_ps(1.0f);
    for (int64_t i = 0; i < n / QK8_0; i++, src += QK8_0) {
        __m256 x[4], vmax = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            x[k] = _mm256_loadu_ps(src + 8 * k);
            vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, x[k]));
        }
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_movehdup_ps(m));
        const float d = _mm_cvtss_f32(m) / 127;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = (uint16_t)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            __m256 v = _mm256_mul_ps(x[k], _mm256_set1_ps(id));
            __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            __m256 frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
            __m256 up = _mm256_and_ps(_mm256_cmp_ps(frac, half, _CMP_GE_OQ),
                                      _mm256_or_ps(one, _mm256_and_ps(sign, v)));
            q[k] = _mm256_cvttps_epi32(_mm256_add_ps(t, up));
        }
        __m256i p01 = _mm256_packs_epi32(q[0], q[1]), p23 = _mm256_packs_epi32(q[2], q[3]);
        __m256i p = _mm256_packs_epi16(p01, p23);
        /* undo the per-lane interleave of the two packs */
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)y[i].qs, p);
    }
}
