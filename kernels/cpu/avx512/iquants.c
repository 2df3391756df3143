/* avx512/iquants.c - IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S and IQ1_M x Q8_K dot products
 * with AVX-512 (single token; several tokens: avx512/iquants_mm.c). The AVX2 kernels
 * (avx2/iquants.c) with two sub-blocks (64 weights) per step.
 *
 * Per 64 weights the grid entries are looked up with scalar indices (masked to their table's
 * size, so any block bytes are safe) and placed in one register with loads only: per quarter a
 * broadcast load and three merge-masked broadcast loads (vpbroadcastq ymm{k} / vpbroadcastd
 * xmm{k}), then vinserti to join the quarters, no vpinsrq / vpinsrd. The stored signs form a
 * 64-bit mask that negates the activations (Q8_K activations are in [-127, 127], so this is
 * exact): explicit sign bytes are read as they are; the 8 x 7 parity-coded bits (IQ2_XXS,
 * IQ3_XXS, IQ2_XS) are spread to bytes in scalar registers (IQ2_XS: vpsrlw + vpackuswb) and given
 * their parity bit by xor-folding, no table. The sub-block scales come as ready int16 rows of
 * avx2/iq_luts.h (a load and a vinserti64x4 from memory, no broadcasts from general registers).
 * vpmaddubsw then vpdpwssd with the scales give exact int32 sums; each super-block's integer sum
 * is reduced and added in f32 in the same order as the scalar reference (ref/iquants.c), so the
 * results are bit-identical to it and to the AVX2 kernels (checked on an AVX2-only machine by
 * scripts/amx-emu-check.sh, whose one-token cases run these functions).
 * Threads: pure functions.
 */
#include "kernels/cpu/avx2/iq_luts.h"
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

/* the 64-bit negation mask of 8 groups' 7 stored sign bits: t holds them in its bytes (bit 7
 * clear); each byte gets bit 7 = the parity of its 7 bits (even parity, = cpuq_iq_ksigns) */
AVX512_INLINE uint64_t kparity8(uint64_t t)
{
    uint64_t p = t ^ t >> 4;
    p ^= p >> 2;
    p ^= p >> 1;
    return t | (p & 0x0101010101010101ull) << 7;
}

/* the same for the 4 x 7 sign bits in bits 0-27 of each u32 half of t (bits 28-31: ignored),
 * spread 28 -> 2 x 14 -> 4 x 7 bits in scalar registers (IQ2_XXS, IQ3_XXS aux words) */
AVX512_INLINE uint64_t ksigns8(uint64_t t)
{
    t = (t & 0x00003fff00003fffull) | (t & 0x0fffc0000fffc000ull) << 2;
    t = (t & 0x007f007f007f007full) | (t & 0x3f803f803f803f80ull) << 1;
    return kparity8(t);
}

/* int32 lanes: acc plus the magnitudes w times activations a negated where bit k of signs is set,
 * int16 pairs scaled by sc16 (vpdpwssd: the exact int32 sum of vpmaddwd then vpaddd) */
AVX512_INLINE __m512i mag_dot(__m512i acc, __m512i w, uint64_t signs, const int8_t *a, __m512i sc16)
{
    const __m512i x = _mm512_loadu_si512(a);
    const __m512i sa = _mm512_mask_sub_epi8(x, (__mmask64)signs, _mm512_setzero_si512(), x);
    return _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(w, sa), sc16);
}

/* int32 lanes: acc plus the IQ1 grid values (-1/0/+1 bytes in g) times activations a, scaled */
AVX512_INLINE __m512i tern_dot(__m512i acc, __m512i g, const int8_t *a, __m512i sc16)
{
    const __m512i x = _mm512_loadu_si512(a), z = _mm512_setzero_si512();
    const __mmask64 pos = _mm512_cmpgt_epi8_mask(g, z), neg = _mm512_cmplt_epi8_mask(g, z);
    const __m512i p = _mm512_mask_sub_epi8(_mm512_maskz_mov_epi8(pos, x), neg, z, x);
    return _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(_mm512_set1_epi8(1), p), sc16);
}

/* The grid entries go into lanes with loads: lane 0 by a broadcast load (vpbroadcastq /
 * vpbroadcastd from memory), lanes 1-3 by merge-masked broadcast loads (vpbroadcastq ymm{k},
 * vpbroadcastd xmm{k}: a load and a blend, no shuffle, unlike vpinsrq / vpinsrd); one vinserti
 * per pair of halves. The three lane masks (bits 1, 2, 3) are made once per call and hidden from
 * the compiler, which would otherwise turn a constant one-lane merge back into vpinsrd. */
struct lanes {
    __mmask8 k1, k2, k3;
};

AVX512_INLINE struct lanes lanes_make(void)
{
    unsigned m1 = 2, m2 = 4, m3 = 8;
    __asm__("" : "+r"(m1), "+r"(m2), "+r"(m3));
    return (struct lanes){(__mmask8)m1, (__mmask8)m2, (__mmask8)m3};
}

/* four 8-byte table entries in the 64-bit lanes of a ymm */
AVX512_INLINE __m256i grid4(struct lanes L, const uint64_t *g, int i0, int i1, int i2, int i3)
{
    __m256i v = _mm256_set1_epi64x((long long)g[i0]);
    v = _mm256_mask_mov_epi64(v, L.k1, _mm256_set1_epi64x((long long)g[i1]));
    v = _mm256_mask_mov_epi64(v, L.k2, _mm256_set1_epi64x((long long)g[i2]));
    return _mm256_mask_mov_epi64(v, L.k3, _mm256_set1_epi64x((long long)g[i3]));
}

AVX512_INLINE __m512i grid8(struct lanes L, const uint64_t *g, int i0, int i1, int i2, int i3,
                            int i4, int i5, int i6, int i7)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(grid4(L, g, i0, i1, i2, i3)),
                              grid4(L, g, i4, i5, i6, i7), 1);
}

/* four 4-byte table entries in the 32-bit lanes of an xmm */
AVX512_INLINE __m128i grid4d(struct lanes L, const uint32_t *g, int i0, int i1, int i2, int i3)
{
    __m128i v = _mm_set1_epi32((int)g[i0]);
    v = _mm_mask_mov_epi32(v, L.k1, _mm_set1_epi32((int)g[i1]));
    v = _mm_mask_mov_epi32(v, L.k2, _mm_set1_epi32((int)g[i2]));
    return _mm_mask_mov_epi32(v, L.k3, _mm_set1_epi32((int)g[i3]));
}

/* sixteen 4-byte entries g[q[m] | h(m)] (IQ3 grids) */
#define GRID16D(L, g, I)                                                                           \
    _mm512_inserti64x4(                                                                            \
        _mm512_castsi256_si512(_mm256_setr_m128i(grid4d(L, g, I(0), I(1), I(2), I(3)),             \
                                                 grid4d(L, g, I(4), I(5), I(6), I(7)))),           \
        _mm256_setr_m128i(grid4d(L, g, I(8), I(9), I(10), I(11)),                                  \
                          grid4d(L, g, I(12), I(13), I(14), I(15))),                               \
        1)

/* Scale vectors from ready int16 rows (avx2/iq_luts.h): a 32-byte load and a vinserti64x4 with a
 * memory operand, instead of broadcasts from general registers and shuffles. */
/* int16 lanes 0-15, 16-31 = 2 s0 + 1, 2 s1 + 1 (s0, s1 < 16; scales per 32 weights) */
AVX512_INLINE __m512i scale16x2(int s0, int s1)
{
    return _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_load_si256((const __m256i *)iq_scale16[s0])),
        _mm256_load_si256((const __m256i *)iq_scale16[s1]), 1);
}

/* int16 lanes 0-7, 8-15, 16-23, 24-31 = 2 (b0 & 15) + 1, 2 (b0 >> 4) + 1, 2 (b1 & 15) + 1,
 * 2 (b1 >> 4) + 1 (two bytes of two 4-bit scales; scales per 16 weights) */
AVX512_INLINE __m512i scale_pair2(int b0, int b1)
{
    return _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_load_si256((const __m256i *)iq_scale_pair[b0])),
        _mm256_load_si256((const __m256i *)iq_scale_pair[b1]), 1);
}

void cpuq_vec_dot_iq2_xxs_q8_k_avx512(int64_t n, float *s, const void *w, const void *act)
{
    const struct block_iq2_xxs *x = w;
    const struct block_q8_K *y = act;
    const uint64_t *g = cpuq_iq2xxs_grid;
    const struct lanes L = lanes_make();
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m512i acc = _mm512_setzero_si512();
        for (int ib = 0; ib < QK_K / 32; ib += 2) {
            const uint8_t *q = (const uint8_t *)(x[i].qs + 4 * ib); /* 4 grid bytes, aux u32 */
            const uint64_t aux = rd32(q + 4) | (uint64_t)rd32(q + 12) << 32;
            const __m512i v = grid8(L, g, q[0], q[1], q[2], q[3], q[8], q[9], q[10], q[11]);
            acc = mag_dot(acc, v, ksigns8(aux), y[i].qs + 32 * ib,
                          scale16x2((int)(aux >> 28) & 15, (int)(aux >> 60)));
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
    const struct lanes L = lanes_make();
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m512i acc = _mm512_setzero_si512();
        for (int ib = 0; ib < QK_K / 32; ib += 2) {
            const uint16_t *q = x[i].qs + 4 * ib;
            const __m512i v = grid8(L, g, q[0] & 511, q[1] & 511, q[2] & 511, q[3] & 511,
                                    q[4] & 511, q[5] & 511, q[6] & 511, q[7] & 511);
            /* the 8 x 7 sign bits (bits 9-15 of each u16) packed into bytes: vpsrlw, vpackuswb */
            const __m128i sb = _mm_srli_epi16(_mm_loadu_si128((const __m128i *)q), 9);
            const uint64_t s8 = kparity8((uint64_t)_mm_cvtsi128_si64(_mm_packus_epi16(sb, sb)));
            acc = mag_dot(acc, v, s8, y[i].qs + 32 * ib,
                          scale_pair2(x[i].scales[ib], x[i].scales[ib + 1]));
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
    const struct lanes L = lanes_make();
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m512i acc = _mm512_setzero_si512();
        for (int ib = 0; ib < QK_K / 32; ib += 2) {
            const uint8_t *qs = x[i].qs + 4 * ib;
            const int h0 = x[i].qh[ib], h1 = x[i].qh[ib + 1];
            const __m512i v = grid8(L, g, qs[0] | ((h0 << 8) & 0x300), qs[1] | ((h0 << 6) & 0x300),
                                    qs[2] | ((h0 << 4) & 0x300), qs[3] | ((h0 << 2) & 0x300),
                                    qs[4] | ((h1 << 8) & 0x300), qs[5] | ((h1 << 6) & 0x300),
                                    qs[6] | ((h1 << 4) & 0x300), qs[7] | ((h1 << 2) & 0x300));
            acc = mag_dot(acc, v, rd64(x[i].qs + QK_K / 8 + 4 * ib), y[i].qs + 32 * ib,
                          scale_pair2(x[i].scales[ib], x[i].scales[ib + 1]));
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
    const struct lanes L = lanes_make();
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m512i acc = _mm512_setzero_si512();
        for (int ib = 0; ib < QK_K / 32; ib += 2) {
            const uint8_t *q = x[i].qs + 8 * ib;
            const uint64_t aux = rd64(x[i].qs + QK_K / 4 + 4 * ib); /* two u32 */
#define I3(m) q[m]
            const __m512i v = GRID16D(L, g, I3);
#undef I3
            acc = mag_dot(acc, v, ksigns8(aux), y[i].qs + 32 * ib,
                          scale16x2((int)(aux >> 28) & 15, (int)(aux >> 60)));
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
    const struct lanes L = lanes_make();
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m512i acc = _mm512_setzero_si512();
        for (int ib = 0; ib < QK_K / 32; ib += 2) {
            const uint8_t *q = x[i].qs + 8 * ib;
            const int qh = x[i].qh[ib] | x[i].qh[ib + 1] << 8; /* bit m: 9th bit of index m */
#define I3(m) (q[m] | (((qh >> (m)) & 1) << 8))
            const __m512i v = GRID16D(L, g, I3);
#undef I3
            const int sc = x[i].scales[ib / 2]; /* ib even: both nibbles of one byte */
            acc = mag_dot(acc, v, rd64(x[i].signs + 4 * ib), y[i].qs + 32 * ib,
                          scale16x2(sc & 0xf, sc >> 4));
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
    const struct lanes L = lanes_make();
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m512i acc = _mm512_setzero_si512();
        int sumi1 = 0;
        for (int ib = 0; ib < QK_K / 32; ib += 2) {
            const uint8_t *q = x[i].qs + 4 * ib;
            const int h0 = x[i].qh[ib], h1 = x[i].qh[ib + 1];
            const int l0 = 2 * ((h0 >> 12) & 7) + 1, l1 = 2 * ((h1 >> 12) & 7) + 1;
            const __m512i v = grid8(L, g, q[0] | ((h0 << 8) & 0x700), q[1] | ((h0 << 5) & 0x700),
                                    q[2] | ((h0 << 2) & 0x700), q[3] | ((h0 >> 1) & 0x700),
                                    q[4] | ((h1 << 8) & 0x700), q[5] | ((h1 << 5) & 0x700),
                                    q[6] | ((h1 << 2) & 0x700), q[7] | ((h1 >> 1) & 0x700));
            acc = tern_dot(acc, v, y[i].qs + 32 * ib, scale16x2((h0 >> 12) & 7, (h1 >> 12) & 7));
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
    const __m512i pos = _mm512_set1_epi8(1), neg = _mm512_set1_epi8(-1);
    const __m512i dbits =
        _mm512_setr_epi64(0x08, 0x80, 0x0800, 0x8000, 0x080000, 0x800000, 0x08000000, 0x80000000);
    const struct lanes L = lanes_make();
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
            const __m512i v = grid8(L, g, q[0] | ((h0 << 8) & 0x700), q[1] | ((h0 << 4) & 0x700),
                                    q[2] | ((h1 << 8) & 0x700), q[3] | ((h1 << 4) & 0x700),
                                    q[4] | ((h2 << 8) & 0x700), q[5] | ((h2 << 4) & 0x700),
                                    q[6] | ((h3 << 8) & 0x700), q[7] | ((h3 << 4) & 0x700));
            /* +1 / -1 per group of 8: the sign of each group's delta (bits 3, 7 of h0..h3),
             * tested in the broadcast u32 of h0..h3 and blended */
            const __mmask8 dn =
                _mm512_test_epi64_mask(_mm512_set1_epi32((int)rd32(x[i].qh + 2 * ib)), dbits);
            const __m512i ds = _mm512_mask_blend_epi64(dn, pos, neg);
            /* ib even: the low 12 bits, sub-blocks ib and ib + 1, as two scale-pair bytes */
            const int s6 = sc[ib / 2];
            const __m512i sc16 =
                scale_pair2((s6 & 7) | (s6 << 1 & 0x70), (s6 >> 6 & 7) | (s6 >> 5 & 0x70));
            acc1 = tern_dot(acc1, v, y[i].qs + 32 * ib, sc16);
            acc2 = tern_dot(acc2, ds, y[i].qs + 32 * ib, sc16);
        }
        sumf += d * y[i].d *
                ((float)_mm512_reduce_add_epi32(acc1) +
                 CPUQ_IQ1_DELTA * (float)_mm512_reduce_add_epi32(acc2));
    }
    *s = sumf;
}
