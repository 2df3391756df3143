/* avx512/rows16.c - Q4_K, Q5_K, Q6_K and IQ4_XS x Q8_K for 2 or more tokens with AVX-512 VNNI,
 * 16 weight rows in the vector lanes (batched decode: several tokens on one expert).
 *
 * The row kernels of avx512/kquants.c put K in the lanes: per token and super-block they need 8
 * integer ops per row plus a cvt/fma pair and the mins or offset term, all per row, so 8 tokens
 * cost ~5x one token. Here 16 rows share each instruction: a super-block of 16 rows is unpacked
 * once into [k4][row] dwords (4 quant bytes of each row per lane; a 16 x 16 dword transpose per 64
 * quants) with the sub-block scales as [j][row] int32. Then per token, VPDPBUSD of a weight
 * vector with the token's 4 quant bytes broadcast accumulates a sub-block's integer dot for all
 * 16 rows (8 per 32-quant sub-block, Q6_K: 4 per 16-quant one), VPMULLD applies the rows'
 * scales, and one cvt + fma per super-block updates the 16 rows' fp32 sums. Per token and row
 * that is ~6 (Q6_K ~8) ops per super-block instead of ~15-18, while the unpack is paid once for
 * up to 16 tokens. Q4_K/Q5_K mins: dmin * sum_j m_j * S_t(j) with int16 pairs
 * (m(2jp), m(2jp+1)) x (S(2jp), S(2jp+1)) by VPDPWSSD; Q6_K's -32: 32 * sum_j sc_j * bsum_j the
 * same way; IQ4_XS (signed table values) goes in as value + 128 (unsigned, as VPDPBUSD needs)
 * and 128 * sum_j sc_j * S_t(j) comes off the same way. Integer sums per super-block are exact (the
 * reference's), then fp32 as the reference up to rounding (fused multiply-adds); results do not
 * depend on how rows or tokens are grouped. Rows past the end of the matrix repeat the last row and
 * are not stored. Threads: pure functions; ~6 KB of stack.
 */
#include "kernels/cpu/avx2/kernels.h"
#include "kernels/cpu/avx512/common.h"
#include "kernels/cpu/avx512/kernels.h"
#include "kernels/cpu/qblocks.h"

#define TMAX 16 /* tokens per pass (one fp32 accumulator register each) */
#define PF_SB 4 /* prefetch each row this many super-blocks ahead */

/* one super-block of 16 rows */
struct w16 {
    int32_t q[64][16];  /* [k4][row]: quant bytes 4 k4 .. 4 k4 + 3 of each row (unsigned) */
    int32_t sc[16][16]; /* [sub-block][row] scales (Q4_K: 8 sub-blocks of 32, Q6_K: 16 of 16) */
    int32_t sp[8][16];  /* [pair][row]: int16 pairs; Q4_K mins (4 pairs), Q6_K scales (8 pairs) */
    float d[16], dmin[16];
};

AVX512_INLINE int32_t rd32(const void *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* super-block s of rows[0..16) -> W (Q4_K, or Q5_K with its 5th bits: same d, dmin, scales) */
AVX512_INLINE void unpack_q45k(int q5, const void *const rows[16], int64_t s, struct w16 *W)
{
    const __m512i shift = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
    const __m512i m4 = _mm512_set1_epi8(0x0f), one = _mm512_set1_epi8(1);
    const int bsz = q5 ? (int)sizeof(struct block_q5_K) : (int)sizeof(struct block_q4_K);
    const int qs_off =
        q5 ? (int)offsetof(struct block_q5_K, qs) : (int)offsetof(struct block_q4_K, qs);
    for (int i = 0; i < 16; i++) {
        const struct block_q4_K *b =
            (const struct block_q4_K *)((const char *)rows[i] + (size_t)s * bsz);
        for (int o = 0; o < bsz; o += 64)
            _mm_prefetch((const char *)b + PF_SB * bsz + o, _MM_HINT_T0);
        uint64_t sc, mn;
        avx512_kscales(b->scales, &sc, &mn);
        for (int j = 0; j < 8; j++) W->sc[j][i] = (int32_t)((sc >> (8 * j)) & 0xff);
        for (int jp = 0; jp < 4; jp++)
            W->sp[jp][i] =
                (int32_t)(((mn >> (16 * jp)) & 0xff) | ((mn >> (16 * jp + 8)) & 0xff) << 16);
        W->d[i] = avx512_f16(b->d);
        W->dmin[i] = avx512_f16(b->dmin);
    }
    for (int c = 0; c < 4; c++) {
        __m512i r[16];
        for (int i = 0; i < 16; i++) {
            const char *b = (const char *)rows[i] + (size_t)s * bsz;
            __m512i q =
                _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b + qs_off + 32 * c)));
            r[i] = _mm512_and_si512(_mm512_srlv_epi16(q, shift), m4);
            if (q5) { /* bit j of qh[l]: sub-block j = 2c (low half), 2c + 1 (high half) */
                __m512i qh = _mm512_broadcast_i64x4(
                    _mm256_loadu_si256((const __m256i *)((const struct block_q5_K *)b)->qh));
                __m512i hs = _mm512_inserti64x4(_mm512_set1_epi16((short)(2 * c)),
                                                _mm256_set1_epi16((short)(2 * c + 1)), 1);
                __m512i hb = _mm512_and_si512(_mm512_srlv_epi16(qh, hs), one);
                r[i] = _mm512_or_si512(r[i], _mm512_slli_epi16(hb, 4));
            }
        }
        avx512_transpose16(r);
        for (int k = 0; k < 16; k++) _mm512_store_si512(W->q[16 * c + k], r[k]);
    }
}

/* IQ4_XS: the table values + 128 (unsigned bytes; the offset is taken out with the bsums), the
 * scales ls - 32 per 32-quant sub-block and as int16 pairs */
AVX512_INLINE void unpack_iq4xs(const void *const rows[16], int64_t s, struct w16 *W)
{
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const __m512i table = _mm512_add_epi8(
        _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)cpuq_kvalues_iq4nl)),
        _mm512_set1_epi8((char)0x80));
    /* per 128-bit lane: low nibbles, high nibbles, low, high */
    const __m512i shift = _mm512_setr_epi64(0, 0, 0x0004000400040004ll, 0x0004000400040004ll, 0, 0,
                                            0x0004000400040004ll, 0x0004000400040004ll);
    for (int i = 0; i < 16; i++) {
        const struct block_iq4_xs *b = (const struct block_iq4_xs *)rows[i] + s;
        for (int o = 0; o < (int)sizeof *b; o += 64)
            _mm_prefetch((const char *)(b + PF_SB) + o, _MM_HINT_T0);
        int sc[8];
        for (int j = 0; j < 8; j++) {
            sc[j] = (((b->scales_l[j / 2] >> (4 * (j % 2))) & 0xf) |
                     (((b->scales_h >> (2 * j)) & 3) << 4)) -
                    32;
            W->sc[j][i] = sc[j];
        }
        for (int jp = 0; jp < 4; jp++)
            W->sp[jp][i] = (int32_t)((uint32_t)(uint16_t)sc[2 * jp] |
                                     (uint32_t)(uint16_t)sc[2 * jp + 1] << 16);
        W->d[i] = avx512_f16(b->d);
    }
    for (int c = 0; c < 4; c++) {
        __m512i r[16];
        for (int i = 0; i < 16; i++) {
            const struct block_iq4_xs *b = (const struct block_iq4_xs *)rows[i] + s;
            __m512i raw =
                _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(b->qs + 32 * c)));
            raw = _mm512_shuffle_i64x2(raw, raw, 0x50); /* 128-bit lanes 0, 0, 1, 1 */
            r[i] = _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srlv_epi16(raw, shift), m4));
        }
        avx512_transpose16(r);
        for (int k = 0; k < 16; k++) _mm512_store_si512(W->q[16 * c + k], r[k]);
    }
}

AVX512_INLINE void unpack_q6k(const void *const rows[16], int64_t s, struct w16 *W)
{
    const __m512i m4 = _mm512_set1_epi8(0x0f), m3 = _mm512_set1_epi8(3);
    const __m512i sh02 = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    const __m512i sh46 = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1);
    for (int i = 0; i < 16; i++) {
        const struct block_q6_K *b = (const struct block_q6_K *)rows[i] + s;
        for (int o = 0; o < (int)sizeof *b; o += 64)
            _mm_prefetch((const char *)(b + PF_SB) + o, _MM_HINT_T0);
        for (int j = 0; j < 16; j++) W->sc[j][i] = b->scales[j];
        for (int jp = 0; jp < 8; jp++)
            W->sp[jp][i] = (int32_t)((uint32_t)(uint16_t)b->scales[2 * jp] |
                                     (uint32_t)(uint16_t)b->scales[2 * jp + 1] << 16);
        W->d[i] = avx512_f16(b->d);
    }
    for (int h = 0; h < 2; h++) {
        __m512i r0[16], r1[16];
        for (int i = 0; i < 16; i++) {
            const struct block_q6_K *b = (const struct block_q6_K *)rows[i] + s;
            __m512i ql = _mm512_loadu_si512(b->ql + 64 * h);
            __m512i qh =
                _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b->qh + 32 * h)));
            __m512i h0 = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh02), m3), 4);
            __m512i h1 = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh46), m3), 4);
            r0[i] = _mm512_or_si512(_mm512_and_si512(ql, m4), h0);
            r1[i] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4), h1);
        }
        avx512_transpose16(r0);
        avx512_transpose16(r1);
        for (int k = 0; k < 16; k++) {
            _mm512_store_si512(W->q[16 * (2 * h) + k], r0[k]);
            _mm512_store_si512(W->q[16 * (2 * h + 1) + k], r1[k]);
        }
    }
}

/* f += token a's products with the 16 rows of W: Q4_K/Q5_K (iq4 = 0) or IQ4_XS (iq4 = 1) */
AVX512_INLINE __m512 dot_32(int iq4, const struct w16 *W, const struct block_q8_K *a, __m512 f)
{
    __m512i isum = _mm512_setzero_si512();
    for (int j = 0; j < 8; j++) {
        __m512i acc = _mm512_setzero_si512();
        for (int k = 0; k < 8; k++)
            acc = _mm512_dpbusd_epi32(acc, _mm512_load_si512(W->q[8 * j + k]),
                                      _mm512_set1_epi32(rd32(a->qs + 4 * (8 * j + k))));
        isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(acc, _mm512_load_si512(W->sc[j])));
    }
    /* int16 pairs (S(2jp), S(2jp+1)), S(j) = sum of sub-block j's 32 quants: phaddw gives
     * [S0..S3 S0..S3 | S4..S7 S4..S7] per 128-bit lane, so pairs 0..3 are dwords 0, 1, 4, 5 */
    _Alignas(32) int32_t sp[8];
    const __m256i bs = _mm256_loadu_si256((const __m256i *)a->bsums);
    _mm256_store_si256((__m256i *)sp, _mm256_hadd_epi16(bs, bs));
    __m512i ms = _mm512_dpwssd_epi32(_mm512_setzero_si512(), _mm512_load_si512(W->sp[0]),
                                     _mm512_set1_epi32(sp[0]));
    ms = _mm512_dpwssd_epi32(ms, _mm512_load_si512(W->sp[1]), _mm512_set1_epi32(sp[1]));
    ms = _mm512_dpwssd_epi32(ms, _mm512_load_si512(W->sp[2]), _mm512_set1_epi32(sp[4]));
    ms = _mm512_dpwssd_epi32(ms, _mm512_load_si512(W->sp[3]), _mm512_set1_epi32(sp[5]));
    if (iq4) { /* sum_j sc_j * sum (kv + 128) * a - 128 * sum_j sc_j * S(j) */
        isum = _mm512_sub_epi32(isum, _mm512_slli_epi32(ms, 7));
        __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(isum), _mm512_load_ps(W->d));
        return _mm512_fmadd_ps(v, _mm512_set1_ps(a->d), f);
    }
    __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(isum), _mm512_load_ps(W->d));
    v = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(ms), _mm512_load_ps(W->dmin), v);
    return _mm512_fmadd_ps(v, _mm512_set1_ps(a->d), f);
}

AVX512_INLINE __m512 dot_q6k(const struct w16 *W, const struct block_q8_K *a, __m512 f)
{
    __m512i isum = _mm512_setzero_si512(), os = _mm512_setzero_si512();
    for (int j = 0; j < 16; j++) {
        __m512i acc = _mm512_setzero_si512();
        for (int k = 0; k < 4; k++)
            acc = _mm512_dpbusd_epi32(acc, _mm512_load_si512(W->q[4 * j + k]),
                                      _mm512_set1_epi32(rd32(a->qs + 4 * (4 * j + k))));
        isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(acc, _mm512_load_si512(W->sc[j])));
    }
    /* the -32 offset: 32 * sum_j sc_j * bsum_j, bsums read as int16 pairs */
    for (int jp = 0; jp < 8; jp++)
        os = _mm512_dpwssd_epi32(os, _mm512_load_si512(W->sp[jp]),
                                 _mm512_set1_epi32(rd32(a->bsums + 2 * jp)));
    isum = _mm512_sub_epi32(isum, _mm512_slli_epi32(os, 5));
    __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(isum), _mm512_load_ps(W->d));
    return _mm512_fmadd_ps(v, _mm512_set1_ps(a->d), f);
}

/* rows [r0, r0 + nr) (nr <= 16) x tokens [0, T) (T <= TMAX) */
enum kind { RQ4, RQ5, RQ6, RIQ4 };

/* rows [r0, r0 + nr) (nr <= 16) x tokens [0, T) (T <= TMAX) */
AVX512_INLINE void rows16(int kind, int64_t n, const void *w, size_t wrb, int64_t r0, int nr,
                          const char *act, size_t ab, int T, float *y, int64_t ldy)
{
    _Alignas(64) struct w16 W;
    const void *rows[16];
    for (int i = 0; i < 16; i++)
        rows[i] = (const char *)w + (size_t)(r0 + (i < nr ? i : nr - 1)) * wrb;
    __m512 f[TMAX];
    for (int t = 0; t < TMAX; t++) f[t] = _mm512_setzero_ps();
    for (int64_t s = 0; s < n / QK_K; s++) {
        if (kind == RQ6) unpack_q6k(rows, s, &W);
        else if (kind == RIQ4) unpack_iq4xs(rows, s, &W);
        else unpack_q45k(kind == RQ5, rows, s, &W);
        for (int t = 0; t < T; t++) {
            const struct block_q8_K *a = (const struct block_q8_K *)(act + (size_t)t * ab) + s;
            f[t] = kind == RQ6 ? dot_q6k(&W, a, f[t]) : dot_32(kind == RIQ4, &W, a, f[t]);
        }
    }
    const __mmask16 live = (__mmask16)((1u << nr) - 1);
    for (int t = 0; t < T; t++) _mm512_mask_storeu_ps(y + t * ldy + r0, live, f[t]);
}

AVX512_INLINE void mul_mat_rows16(int kind, int64_t n, const void *w, size_t wrb, int64_t nrows,
                                  const void *act, size_t ab, int64_t ntok, float *y, int64_t ldy)
{
    for (int64_t t0 = 0; t0 < ntok; t0 += TMAX) {
        const int T = ntok - t0 < TMAX ? (int)(ntok - t0) : TMAX;
        const char *at = (const char *)act + (size_t)t0 * ab;
        for (int64_t r0 = 0; r0 < nrows; r0 += 16)
            rows16(kind, n, w, wrb, r0, nrows - r0 < 16 ? (int)(nrows - r0) : 16, at, ab, T,
                   y + t0 * ldy, ldy);
    }
}

/* 1 token: the row kernels (AVX2 for Q4_K, Q5_K, IQ4_XS, faster there; AVX-512 for Q6_K) */
#define ROWS16(name, kind, one)                                                                    \
    void cpuq_mul_mat_##name##_rows16(int64_t n, const void *w, size_t w_row_bytes, int64_t nrows, \
                                      const void *act, size_t act_row_bytes, int64_t ntok,         \
                                      float *y, int64_t ldy)                                       \
    {                                                                                              \
        if (ntok < 2) one(n, w, w_row_bytes, nrows, act, act_row_bytes, ntok, y, ldy);             \
        else mul_mat_rows16(kind, n, w, w_row_bytes, nrows, act, act_row_bytes, ntok, y, ldy);     \
    }

ROWS16(q4_k_q8_k, RQ4, cpuq_mul_mat_q4_k_q8_k_avx2)
ROWS16(q5_k_q8_k, RQ5, cpuq_mul_mat_q5_k_q8_k_avx2)
ROWS16(q6_k_q8_k, RQ6, cpuq_mul_mat_q6_k_q8_k_avx512)
ROWS16(iq4_xs_q8_k, RIQ4, cpuq_mul_mat_iq4_xs_q8_k_avx2)
