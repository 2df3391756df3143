/* avx2/iquants.c - IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S and IQ1_M x Q8_K dot products
 * with AVX2 (single token; several tokens: avx2/iquants_mm.c, which calls these for one).
 *
 * Per 32 weights the four grid entries (IQ3: eight half entries, combined in pairs in scalar
 * registers) are looked up with scalar indices (masked to their table's size, so any block bytes
 * are safe) and placed in one register with vmovq/vmovhpd loads; the stored signs become +1/-1
 * bytes looked up the same way (avx2/iq_luts.h: 8 sign bytes per 7 parity-coded or 8 explicit
 * bits; IQ3_S keeps the vector bit expansion, its load ports being the busier) and moved onto the
 * activations (vpsignb; Q8_K activations are in [-127, 127], so this is exact); sub-block scales
 * are loaded as ready int16 vectors. The dots are bound by the vector ports, so loads replace
 * shuffles where they can. vpmaddubsw then vpmaddwd with the sub-block scales give exact int32
 * sums; each super-block's integer sum is reduced and added in f32 in the same order as the scalar
 * reference (ref/iquants.c), so the results are bit-identical to it.
 * Threads: pure functions.
 */
#include "kernels/cpu/avx2/iq_decode.h"
#include "kernels/cpu/avx2/iq_luts.h"
#include "kernels/cpu/avx2/kernels.h"
#include "kernels/cpu/qblocks.h"
#include "kernels/cpu/ref/iq_grids.h"

#include <immintrin.h>
#include <string.h>

#define AVX2_INLINE static inline __attribute__((always_inline))

AVX2_INLINE float f16(uint16_t h) { return _cvtsh_ss(h); }

AVX2_INLINE int hsum_i32(__m256i v)
{
    __m128i a = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    a = _mm_add_epi32(a, _mm_shuffle_epi32(a, _MM_SHUFFLE(1, 0, 3, 2)));
    a = _mm_add_epi32(a, _mm_shuffle_epi32(a, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(a);
}

/* int32 lanes: sum of magnitudes w times activations a multiplied by the +1 / -1 bytes sg,
 * int16 pairs scaled by sc16 */
AVX2_INLINE __m256i mag_dot(__m256i w, __m256i sg, const int8_t *a, __m256i sc16)
{
    __m256i sa = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)a), sg);
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, sa), sc16);
}

/* four 8-byte table entries in one register: scalar loads into the two halves (vmovq, vmovhpd)
 * rather than vpinsrq, which costs a vector-port shuffle per entry */
AVX2_INLINE __m256i grid4(const uint64_t *g, int i0, int i1, int i2, int i3)
{
    const __m128d lo = _mm_loadh_pd(_mm_castsi128_pd(_mm_loadl_epi64((const __m128i *)(g + i0))),
                                    (const double *)(g + i1));
    const __m128d hi = _mm_loadh_pd(_mm_castsi128_pd(_mm_loadl_epi64((const __m128i *)(g + i2))),
                                    (const double *)(g + i3));
    return _mm256_setr_m128i(_mm_castpd_si128(lo), _mm_castpd_si128(hi));
}

/* the +1 / -1 bytes of four groups' 7 stored sign bits (4 x 7 bits of aux, even parity) */
AVX2_INLINE __m256i ksigns4(uint32_t aux)
{
    return grid4(iq_keven_signs, aux & 127, (aux >> 7) & 127, (aux >> 14) & 127, (aux >> 21) & 127);
}

/* the +1 / -1 bytes of 32 explicit sign bits (4 bytes at p) */
AVX2_INLINE __m256i bsigns4(const uint8_t *p)
{
    return grid4(iq_bit_signs, p[0], p[1], p[2], p[3]);
}

AVX2_INLINE __m256i scale16(int s) /* int16 lanes = 2s + 1 (s < 16) */
{
    return _mm256_load_si256((const __m256i *)iq_scale16[s]);
}

AVX2_INLINE __m256i scale_pair(int b) /* int16 lanes 0-7 = 2 (b & 15) + 1, 8-15 = 2 (b >> 4) + 1 */
{
    return _mm256_load_si256((const __m256i *)iq_scale_pair[b]);
}

void cpuq_vec_dot_iq2_xxs_q8_k_avx2(int64_t n, float *s, const void *w, const void *act)
{
    const struct block_iq2_xxs *x = w;
    const struct block_q8_K *y = act;
    const uint64_t *g = cpuq_iq2xxs_grid;
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m256i acc = _mm256_setzero_si256();
        for (int ib = 0; ib < QK_K / 32; ib += 2) {
            const uint8_t *q = (const uint8_t *)(x[i].qs + 4 * ib);
            const uint32_t a0 = iqd_rd32(q + 4), a1 = iqd_rd32(q + 12);
            acc = _mm256_add_epi32(acc, mag_dot(grid4(g, q[0], q[1], q[2], q[3]), ksigns4(a0),
                                                y[i].qs + 32 * ib, scale16((int)(a0 >> 28))));
            acc = _mm256_add_epi32(acc, mag_dot(grid4(g, q[8], q[9], q[10], q[11]), ksigns4(a1),
                                                y[i].qs + 32 * ib + 32, scale16((int)(a1 >> 28))));
        }
        sumf += f16(x[i].d) * y[i].d * (float)hsum_i32(acc);
    }
    *s = 0.125f * sumf;
}

void cpuq_vec_dot_iq2_xs_q8_k_avx2(int64_t n, float *s, const void *w, const void *act)
{
    const struct block_iq2_xs *x = w;
    const struct block_q8_K *y = act;
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m256i acc = _mm256_setzero_si256();
        for (int ib = 0; ib < QK_K / 32; ib++) {
            const uint16_t *q = x[i].qs + 4 * ib;
            const __m256i v =
                grid4(cpuq_iq2xs_grid, q[0] & 511, q[1] & 511, q[2] & 511, q[3] & 511);
            const __m256i sg = grid4(iq_keven_signs, q[0] >> 9, q[1] >> 9, q[2] >> 9, q[3] >> 9);
            acc = _mm256_add_epi32(acc,
                                   mag_dot(v, sg, y[i].qs + 32 * ib, scale_pair(x[i].scales[ib])));
        }
        sumf += f16(x[i].d) * y[i].d * (float)hsum_i32(acc);
    }
    *s = 0.125f * sumf;
}

void cpuq_vec_dot_iq2_s_q8_k_avx2(int64_t n, float *s, const void *w, const void *act)
{
    const struct block_iq2_s *x = w;
    const struct block_q8_K *y = act;
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m256i acc = _mm256_setzero_si256();
        for (int ib = 0; ib < QK_K / 32; ib++) {
            const uint8_t *qs = x[i].qs + 4 * ib;
            const int qh = x[i].qh[ib];
            const __m256i v =
                grid4(cpuq_iq2s_grid, qs[0] | ((qh << 8) & 0x300), qs[1] | ((qh << 6) & 0x300),
                      qs[2] | ((qh << 4) & 0x300), qs[3] | ((qh << 2) & 0x300));
            acc = _mm256_add_epi32(acc, mag_dot(v, bsigns4(x[i].qs + QK_K / 8 + 4 * ib),
                                                y[i].qs + 32 * ib, scale_pair(x[i].scales[ib])));
        }
        sumf += f16(x[i].d) * y[i].d * (float)hsum_i32(acc);
    }
    *s = 0.125f * sumf;
}

void cpuq_vec_dot_iq3_xxs_q8_k_avx2(int64_t n, float *s, const void *w, const void *act)
{
    const struct block_iq3_xxs *x = w;
    const struct block_q8_K *y = act;
    const uint32_t *g = cpuq_iq3xxs_grid;
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m256i acc = _mm256_setzero_si256();
        for (int ib = 0; ib < QK_K / 32; ib++) {
            const uint8_t *q = x[i].qs + 8 * ib;
            const uint32_t aux = iqd_rd32(x[i].qs + QK_K / 4 + 4 * ib);
#define P2(a, b) (long long)((uint64_t)g[b] << 32 | g[a])
            const __m256i v =
                _mm256_setr_epi64x(P2(q[0], q[1]), P2(q[2], q[3]), P2(q[4], q[5]), P2(q[6], q[7]));
#undef P2
            acc = _mm256_add_epi32(
                acc, mag_dot(v, ksigns4(aux), y[i].qs + 32 * ib, scale16((int)(aux >> 28))));
        }
        sumf += f16(x[i].d) * y[i].d * (float)hsum_i32(acc);
    }
    *s = 0.25f * sumf;
}

void cpuq_vec_dot_iq3_s_q8_k_avx2(int64_t n, float *s, const void *w, const void *act)
{
    const struct block_iq3_s *x = w;
    const struct block_q8_K *y = act;
    const uint32_t *g = cpuq_iq3s_grid;
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m256i acc = _mm256_setzero_si256();
        for (int ib = 0; ib < QK_K / 32; ib++) {
            const uint8_t *q = x[i].qs + 8 * ib;
            const int qh = x[i].qh[ib];
#define I3(m) g[q[m] | (((qh >> (m)) & 1) << 8)]
#define P2(a, b) (long long)((uint64_t)I3(b) << 32 | I3(a))
            const __m256i v = _mm256_setr_epi64x(P2(0, 1), P2(2, 3), P2(4, 5), P2(6, 7));
#undef P2
#undef I3
            const int ls = (x[i].scales[ib / 2] >> (4 * (ib % 2))) & 0xf;
            acc = _mm256_add_epi32(acc, mag_dot(v, iqd_sign_bytes(iqd_rd32(x[i].signs + 4 * ib)),
                                                y[i].qs + 32 * ib, scale16(ls)));
        }
        sumf += f16(x[i].d) * y[i].d * (float)hsum_i32(acc);
    }
    *s = sumf;
}

/* int32 lanes: sum of IQ1 grid values (-1/0/+1 bytes in g) times activations a, scaled */
AVX2_INLINE __m256i tern_dot(__m256i g, const int8_t *a, __m256i sc16)
{
    __m256i p = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)a), g);
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), p), sc16);
}

void cpuq_vec_dot_iq1_s_q8_k_avx2(int64_t n, float *s, const void *w, const void *act)
{
    const struct block_iq1_s *x = w;
    const struct block_q8_K *y = act;
    const uint64_t *g = cpuq_iq1s_grid;
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        __m256i acc = _mm256_setzero_si256();
        int sumi1 = 0;
        for (int ib = 0; ib < QK_K / 32; ib++) {
            const uint8_t *q = x[i].qs + 4 * ib;
            const int qh = x[i].qh[ib], ls = 2 * ((qh >> 12) & 7) + 1;
            const __m256i v = grid4(g, q[0] | ((qh << 8) & 0x700), q[1] | ((qh << 5) & 0x700),
                                    q[2] | ((qh << 2) & 0x700), q[3] | ((qh >> 1) & 0x700));
            acc = _mm256_add_epi32(acc, tern_dot(v, y[i].qs + 32 * ib, scale16((qh >> 12) & 7)));
            sumi1 += ls * (qh & 0x8000 ? -1 : 1) * (y[i].bsums[2 * ib] + y[i].bsums[2 * ib + 1]);
        }
        sumf += f16(x[i].d) * y[i].d * ((float)hsum_i32(acc) + CPUQ_IQ1_DELTA * (float)sumi1);
    }
    *s = sumf;
}

void cpuq_vec_dot_iq1_m_q8_k_avx2(int64_t n, float *s, const void *w, const void *act)
{
    const struct block_iq1_m *x = w;
    const struct block_q8_K *y = act;
    const uint64_t *g = cpuq_iq1s_grid;
    static const uint64_t pm[2] = {0x0101010101010101ull, ~0ull}; /* +1 / -1 bytes */
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        uint16_t sc[4];
        memcpy(sc, x[i].scales, 8);
        const float d = f16((uint16_t)((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) |
                                       ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000)));
        __m256i acc1 = _mm256_setzero_si256(), acc2 = _mm256_setzero_si256();
        for (int ib = 0; ib < QK_K / 32; ib++) {
            const uint8_t *q = x[i].qs + 4 * ib;
            const int h0 = x[i].qh[2 * ib], h1 = x[i].qh[2 * ib + 1];
            const __m256i v = grid4(g, q[0] | ((h0 << 8) & 0x700), q[1] | ((h0 << 4) & 0x700),
                                    q[2] | ((h1 << 8) & 0x700), q[3] | ((h1 << 4) & 0x700));
            /* +1 / -1 per group of 8: the sign of each group's delta */
            const __m256i ds =
                grid4(pm, (h0 >> 3) & 1, (h0 >> 7) & 1, (h1 >> 3) & 1, (h1 >> 7) & 1);
            const int s6 = sc[ib / 2] >> (6 * (ib % 2));
            const __m256i sc16 = scale_pair((s6 & 7) | (s6 << 1 & 0x70));
            acc1 = _mm256_add_epi32(acc1, tern_dot(v, y[i].qs + 32 * ib, sc16));
            acc2 = _mm256_add_epi32(acc2, tern_dot(ds, y[i].qs + 32 * ib, sc16));
        }
        sumf += d * y[i].d * ((float)hsum_i32(acc1) + CPUQ_IQ1_DELTA * (float)hsum_i32(acc2));
    }
    *s = sumf;
}
