/* avx512/iquants.c - IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S and IQ1_M x Q8_K dot products
 * with AVX-512 (single token; several tokens: avx512/iquants_mm.c). The AVX2 kernels
 * (avx2/iquants.c) with two sub-blocks (64 weights) per step.
 *
 * Per 64 weights the grid entries are looked up with scalar indices (masked to their table's
 * size, so any block bytes are safe) and placed in one register; the stored signs form a 64-bit
 * mask that negates the activations (Q8_K activations are in [-127, 127], so this is exact).
 * vpmaddubsw then vpmaddwd with the sub-block scales give exact int32 sums; each super-block's
 * integer sum is reduced and added in f32 in the same order as the scalar reference
 * (ref/iquants.c), so the results are bit-identical to it and to the AVX2 kernels.
 * Threads: pure functions.
 */
#include "kernels/cpu/avx512/common.h"
#include "kernels/cpu/avx512/kernels.h"
#include "kernels/cpu/qblocks.h"
#include "kernels/cpu/ref/iq_grids.h"

AVX512_INLINE uint32_t rd32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

AVX512_INLINE uint64_t rd64(const void *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* the 4 x 7 stored sign bits of aux expanded to 4 sign bytes (even parity) */
AVX512_INLINE uint64_t ksigns4(uint32_t aux)
{
    return cpuq_iq_ksigns[aux & 127] | (uint32_t)cpuq_iq_ksigns[(aux >> 7) & 127] << 8 |
           (uint32_t)cpuq_iq_ksigns[(aux >> 14) & 127] << 16 |
           (uint32_t)cpuq_iq_ksigns[(aux >> 21) & 127] << 24;
}

/* int32 lanes: sum of magnitudes w times activations a negated where bit k of signs is set,
 * int16 pairs scaled by sc16 */
AVX512_INLINE __m512i mag_dot(__m512i w, uint64_t signs, const int8_t *a, __m512i sc16)
{
    const __m512i x = _mm512_loadu_si512(a);
    const __m512i sa = _mm512_mask_sub_epi8(x, (__mmask64)signs, _mm512_setzero_si512(), x);
    return _mm512_madd_epi16(_mm512_maddubs_epi16(w, sa), sc16);
}

/* int32 lanes: sum of IQ1 grid values (-1/0/+1 bytes in g) times activations a, scaled */
AVX512_INLINE __m512i tern_dot(__m512i g, const int8_t *a, __m512i sc16)
{
    const __m512i x = _mm512_loadu_si512(a), z = _mm512_setzero_si512();
    const __mmask64 pos = _mm512_cmpgt_epi8_mask(g, z), neg = _mm512_cmplt_epi8_mask(g, z);
    const __m512i p = _mm512_mask_sub_epi8(_mm512_maskz_mov_epi8(pos, x), neg, z, x);
    return _mm512_madd_epi16(_mm512_maddubs_epi16(_mm512_set1_epi8(1), p), sc16);
}

AVX512_INLINE __m512i grid8(const uint64_t *g, int i0, int i1, int i2, int i3, int i4, int i5,
                            int i6, int i7)
{
    return _mm512_set_epi64((long long)g[i7], (long long)g[i6], (long long)g[i5], (long long)g[i4],
                            (long long)g[i3], (long long)g[i2], (long long)g[i1], (long long)g[i0]);
}

/* int16 lanes 0-7, 8-15, 16-23, 24-31 = a, b, c, d (scales per 16 weights) */
AVX512_INLINE __m512i quad16(int a, int b, int c, int d)
{
    const __m256i lo = _mm256_setr_m128i(_mm_set1_epi16((short)a), _mm_set1_epi16((short)b));
    const __m256i hi = _mm256_setr_m128i(_mm_set1_epi16((short)c), _mm_set1_epi16((short)d));
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* int16 lanes 0-15, 16-31 = a, b (scales per 32 weights) */
AVX512_INLINE __m512i pair16(int a, int b) { return quad16(a, a, b, b); }

void cpuq_vec_dot_iq2_xxs_q8_k_avx512(int64_t n, float *s, const void *w, const void *act)
{
    const struct block_iq2_xxs *x = w;
    const struct block_q8_K *y = act;
    const uint64_t *g = cpuq_iq2xxs_grid;
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m512i acc = _mm512_setzero_si512();
        for (int ib = 0; ib < QK_K / 32; ib += 2) {
            const uint32_t g0 = rd32(x[i].qs + 4 * ib), a0 = rd32(x[i].qs + 4 * ib + 2);
            const uint32_t g1 = rd32(x[i].qs + 4 * ib + 4), a1 = rd32(x[i].qs + 4 * ib + 6);
            const __m512i v = grid8(g, g0 & 0xff, (g0 >> 8) & 0xff, (g0 >> 16) & 0xff, g0 >> 24,
                                    g1 & 0xff, (g1 >> 8) & 0xff, (g1 >> 16) & 0xff, g1 >> 24);
            acc =
                _mm512_add_epi32(acc, mag_dot(v, ksigns4(a0) | ksigns4(a1) << 32, y[i].qs + 32 * ib,
                                              pair16(2 * (a0 >> 28) + 1, 2 * (a1 >> 28) + 1)));
        }
        sumf += avx512_f16(x[i].d) * y[i].d * (float)_mm512_reduce_add_epi32(acc);
    }
    *s = 0.125f * sumf;
}

void cpuq_vec_dot_iq2_xs_q8_k_avx512(int64_t n, float *s, const void *w, const void *act)
{
    const struct block_iq2_xs *x = w;
    const struct block_q8_K *y = act;
    const uint64_t *g = cpuq_iq2xs_grid;
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m512i acc = _mm512_setzero_si512();
        for (int ib = 0; ib < QK_K / 32; ib += 2) {
            const uint16_t *q = x[i].qs + 4 * ib;
            const __m512i v = grid8(g, q[0] & 511, q[1] & 511, q[2] & 511, q[3] & 511, q[4] & 511,
                                    q[5] & 511, q[6] & 511, q[7] & 511);
            uint64_t s8 = 0;
            for (int k = 0; k < 8; k++) s8 |= (uint64_t)cpuq_iq_ksigns[q[k] >> 9] << (8 * k);
            const int c0 = x[i].scales[ib], c1 = x[i].scales[ib + 1];
            acc = _mm512_add_epi32(acc, mag_dot(v, s8, y[i].qs + 32 * ib,
                                                quad16(2 * (c0 & 0xf) + 1, 2 * (c0 >> 4) + 1,
                                                       2 * (c1 & 0xf) + 1, 2 * (c1 >> 4) + 1)));
        }
        sumf += avx512_f16(x[i].d) * y[i].d * (float)_mm512_reduce_add_epi32(acc);
    }
    *s = 0.125f * sumf;
}

void cpuq_vec_dot_iq2_s_q8_k_avx512(int64_t n, float *s, const void *w, const void *act)
{
    const struct block_iq2_s *x = w;
    const struct block_q8_K *y = act;
    const uint64_t *g = cpuq_iq2s_grid;
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m512i acc = _mm512_setzero_si512();
        for (int ib = 0; ib < QK_K / 32; ib += 2) {
            const uint8_t *qs = x[i].qs + 4 * ib;
            const int h0 = x[i].qh[ib], h1 = x[i].qh[ib + 1];
            const __m512i v = grid8(g, qs[0] | ((h0 << 8) & 0x300), qs[1] | ((h0 << 6) & 0x300),
                                    qs[2] | ((h0 << 4) & 0x300), qs[3] | ((h0 << 2) & 0x300),
                                    qs[4] | ((h1 << 8) & 0x300), qs[5] | ((h1 << 6) & 0x300),
                                    qs[6] | ((h1 << 4) & 0x300), qs[7] | ((h1 << 2) & 0x300));
            const int c0 = x[i].scales[ib], c1 = x[i].scales[ib + 1];
            acc = _mm512_add_epi32(acc,
                                   mag_dot(v, rd64(x[i].qs + QK_K / 8 + 4 * ib), y[i].qs + 32 * ib,
                                           quad16(2 * (c0 & 0xf) + 1, 2 * (c0 >> 4) + 1,
                                                  2 * (c1 & 0xf) + 1, 2 * (c1 >> 4) + 1)));
        }
        sumf += avx512_f16(x[i].d) * y[i].d * (float)_mm512_reduce_add_epi32(acc);
    }
    *s = 0.125f * sumf;
}

void cpuq_vec_dot_iq3_xxs_q8_k_avx512(int64_t n, float *s, const void *w, const void *act)
{
    const struct block_iq3_xxs *x = w;
    const struct block_q8_K *y = act;
    const uint32_t *g = cpuq_iq3xxs_grid;
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m512i acc = _mm512_setzero_si512();
        for (int ib = 0; ib < QK_K / 32; ib += 2) {
            const uint8_t *q = x[i].qs + 8 * ib;
            const uint32_t a0 = rd32(x[i].qs + QK_K / 4 + 4 * ib);
            const uint32_t a1 = rd32(x[i].qs + QK_K / 4 + 4 * ib + 4);
            const __m512i v = _mm512_set_epi32(
                (int)g[q[15]], (int)g[q[14]], (int)g[q[13]], (int)g[q[12]], (int)g[q[11]],
                (int)g[q[10]], (int)g[q[9]], (int)g[q[8]], (int)g[q[7]], (int)g[q[6]], (int)g[q[5]],
                (int)g[q[4]], (int)g[q[3]], (int)g[q[2]], (int)g[q[1]], (int)g[q[0]]);
            acc =
                _mm512_add_epi32(acc, mag_dot(v, ksigns4(a0) | ksigns4(a1) << 32, y[i].qs + 32 * ib,
                                              pair16(2 * (a0 >> 28) + 1, 2 * (a1 >> 28) + 1)));
        }
        sumf += avx512_f16(x[i].d) * y[i].d * (float)_mm512_reduce_add_epi32(acc);
    }
    *s = 0.25f * sumf;
}

void cpuq_vec_dot_iq3_s_q8_k_avx512(int64_t n, float *s, const void *w, const void *act)
{
    const struct block_iq3_s *x = w;
    const struct block_q8_K *y = act;
    const uint32_t *g = cpuq_iq3s_grid;
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m512i acc = _mm512_setzero_si512();
        for (int ib = 0; ib < QK_K / 32; ib += 2) {
            const uint8_t *q = x[i].qs + 8 * ib;
            const int qh = x[i].qh[ib] | x[i].qh[ib + 1] << 8; /* bit m: 9th bit of index m */
#define I3(m) (int)g[q[m] | (((qh >> (m)) & 1) << 8)]
            const __m512i v =
                _mm512_set_epi32(I3(15), I3(14), I3(13), I3(12), I3(11), I3(10), I3(9), I3(8),
                                 I3(7), I3(6), I3(5), I3(4), I3(3), I3(2), I3(1), I3(0));
#undef I3
            const int sc = x[i].scales[ib / 2]; /* ib even: both nibbles of one byte */
            acc = _mm512_add_epi32(acc, mag_dot(v, rd64(x[i].signs + 4 * ib), y[i].qs + 32 * ib,
                                                pair16(2 * (sc & 0xf) + 1, 2 * (sc >> 4) + 1)));
        }
        sumf += avx512_f16(x[i].d) * y[i].d * (float)_mm512_reduce_add_epi32(acc);
    }
    *s = sumf;
}

void cpuq_vec_dot_iq1_s_q8_k_avx512(int64_t n, float *s, const void *w, const void *act)
{
    const struct block_iq1_s *x = w;
    const struct block_q8_K *y = act;
    const uint64_t *g = cpuq_iq1s_grid;
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m512i acc = _mm512_setzero_si512();
        int sumi1 = 0;
        for (int ib = 0; ib < QK_K / 32; ib += 2) {
            const uint8_t *q = x[i].qs + 4 * ib;
            const int h0 = x[i].qh[ib], h1 = x[i].qh[ib + 1];
            const int l0 = 2 * ((h0 >> 12) & 7) + 1, l1 = 2 * ((h1 >> 12) & 7) + 1;
            const __m512i v = grid8(g, q[0] | ((h0 << 8) & 0x700), q[1] | ((h0 << 5) & 0x700),
                                    q[2] | ((h0 << 2) & 0x700), q[3] | ((h0 >> 1) & 0x700),
                                    q[4] | ((h1 << 8) & 0x700), q[5] | ((h1 << 5) & 0x700),
                                    q[6] | ((h1 << 2) & 0x700), q[7] | ((h1 >> 1) & 0x700));
            acc = _mm512_add_epi32(acc, tern_dot(v, y[i].qs + 32 * ib, pair16(l0, l1)));
            sumi1 += l0 * (h0 & 0x8000 ? -1 : 1) * (y[i].bsums[2 * ib] + y[i].bsums[2 * ib + 1]);
            sumi1 +=
                l1 * (h1 & 0x8000 ? -1 : 1) * (y[i].bsums[2 * ib + 2] + y[i].bsums[2 * ib + 3]);
        }
        sumf += avx512_f16(x[i].d) * y[i].d *
                ((float)_mm512_reduce_add_epi32(acc) + CPUQ_IQ1_DELTA * (float)sumi1);
    }
    *s = sumf;
}

void cpuq_vec_dot_iq1_m_q8_k_avx512(int64_t n, float *s, const void *w, const void *act)
{
    const struct block_iq1_m *x = w;
    const struct block_q8_K *y = act;
    const uint64_t *g = cpuq_iq1s_grid;
    const long long pos = 0x0101010101010101ll, neg = -1;
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        uint16_t sc[4];
        memcpy(sc, x[i].scales, 8);
        const float d = avx512_f16((uint16_t)((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) |
                                              ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000)));
        __m512i acc1 = _mm512_setzero_si512(), acc2 = _mm512_setzero_si512();
        for (int ib = 0; ib < QK_K / 32; ib += 2) {
            const uint8_t *q = x[i].qs + 4 * ib;
            const int h0 = x[i].qh[2 * ib], h1 = x[i].qh[2 * ib + 1];
            const int h2 = x[i].qh[2 * ib + 2], h3 = x[i].qh[2 * ib + 3];
            const __m512i v = grid8(g, q[0] | ((h0 << 8) & 0x700), q[1] | ((h0 << 4) & 0x700),
                                    q[2] | ((h1 << 8) & 0x700), q[3] | ((h1 << 4) & 0x700),
                                    q[4] | ((h2 << 8) & 0x700), q[5] | ((h2 << 4) & 0x700),
                                    q[6] | ((h3 << 8) & 0x700), q[7] | ((h3 << 4) & 0x700));
            /* +1 / -1 per group of 8: the sign of each group's delta */
            const __m512i ds = _mm512_set_epi64(h3 & 0x80 ? neg : pos, h3 & 0x08 ? neg : pos,
                                                h2 & 0x80 ? neg : pos, h2 & 0x08 ? neg : pos,
                                                h1 & 0x80 ? neg : pos, h1 & 0x08 ? neg : pos,
                                                h0 & 0x80 ? neg : pos, h0 & 0x08 ? neg : pos);
            const int s6 = sc[ib / 2]; /* ib even: the low 12 bits, sub-blocks ib and ib + 1 */
            const __m512i sc16 = quad16(2 * (s6 & 7) + 1, 2 * ((s6 >> 3) & 7) + 1,
                                        2 * ((s6 >> 6) & 7) + 1, 2 * ((s6 >> 9) & 7) + 1);
            acc1 = _mm512_add_epi32(acc1, tern_dot(v, y[i].qs + 32 * ib, sc16));
            acc2 = _mm512_add_epi32(acc2, tern_dot(ds, y[i].qs + 32 * ib, sc16));
        }
        sumf += d * y[i].d *
                ((float)_mm512_reduce_add_epi32(acc1) +
                 CPUQ_IQ1_DELTA * (float)_mm512_reduce_add_epi32(acc2));
    }
    *s = sumf;
}
