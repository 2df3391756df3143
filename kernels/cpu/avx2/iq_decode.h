/* avx2/iq_decode.h - one super-block of a grid i-quant (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S,
 * IQ1_S, IQ1_M) decoded to signed int8 values and integer sub-block scales, for the multi-token
 * kernels avx2/iquants_mm.c and avx512/iquants_mm.c (AVX2 intrinsics; the AVX-512 library is
 * built with a superset of the flags).
 *
 * The decoded values are exactly those the single-token dots (avx2/iquants.c) form in registers:
 * grid magnitudes with their signs applied (IQ1: the -1/0/+1 grid values), 32 per sub-block, and
 * per sub-block an int16 vector of the scale (2s + 1) in vpmaddubsw's output layout (lanes 0-7:
 * values 0-15, lanes 8-15: values 16-31), and 128 x sum(w x scale), which the kernels subtract
 * after multiplying the activations offset by 128 (a + 128 is unsigned, as vpmaddubsw wants it;
 * 2 x 255 x 62 < 32768, so its int16 pairs do not saturate). A token's integer sums over them are
 * therefore the same integers as the dots' (and the scalar reference's). Grid indices are masked
 * like the dots', so any block bytes are safe. Threads: pure functions writing only *o.
 */
#ifndef TANDEM_CPUQ_AVX2_IQ_DECODE_H
#define TANDEM_CPUQ_AVX2_IQ_DECODE_H

#include "kernels/cpu/qblocks.h"
#include "kernels/cpu/ref/iq_grids.h"

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

/* one decoded super-block of one weight row */
struct iq_sb {
    int8_t w[QK_K];            /* signed values: grid magnitude x sign (IQ1: -1 / 0 / +1) */
    int16_t sc[QK_K / 32][16]; /* per sub-block: 2s + 1 in vpmaddubsw output layout */
    int8_t w2[QK_K];           /* IQ1_M: delta sign x its 16-value scale, per value */
    uint8_t m2[QK_K];          /* IQ1_M: |w2| */
    int16_t c1[QK_K / 16];     /* IQ1_S: delta sign x scale per 16 activations (bsums weights) */
    float d;                   /* the f16 super-block scale */
    int32_t corr;              /* 128 x sum of w x scale: the offset term of (a + 128) . w */
};

/* the extra term a type adds per super-block (integer sum times CPUQ_IQ1_DELTA) */
enum iq_kind { IQ_PLAIN, IQ_IQ1S, IQ_IQ1M };

typedef void (*iq_decode_fn)(const void *blk, struct iq_sb *o);

static inline uint32_t iqd_rd32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* 32 bytes of +1 / -1: byte k is -1 where bit k % 8 of byte k / 8 of s4 is set */
static inline __m256i iqd_sign_bytes(uint32_t s4)
{
    const __m256i pick = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
                                          2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bits = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)s4), pick);
    __m256i m = _mm256_cmpeq_epi8(_mm256_and_si256(v, bits), bits);
    return _mm256_or_si256(m, _mm256_set1_epi8(1));
}

/* the 4 x 7 stored sign bits of aux expanded to 4 sign bytes (even parity) */
static inline uint32_t iqd_ksigns4(uint32_t aux)
{
    return cpuq_iq_ksigns[aux & 127] | (uint32_t)cpuq_iq_ksigns[(aux >> 7) & 127] << 8 |
           (uint32_t)cpuq_iq_ksigns[(aux >> 14) & 127] << 16 |
           (uint32_t)cpuq_iq_ksigns[(aux >> 21) & 127] << 24;
}

static inline __m256i iqd_grid4(const uint64_t *g, int i0, int i1, int i2, int i3)
{
    return _mm256_setr_epi64x((long long)g[i0], (long long)g[i1], (long long)g[i2],
                              (long long)g[i3]);
}

/* 8 bytes of the int8 v */
static inline long long iqd_bcast8(int v)
{
    return (long long)(0x0101010101010101ull * (uint8_t)(int8_t)v);
}

/* sub-block ib: signed values w (|w| in m) and scales lo (values 0-15), hi (16-31) */
static inline void iqd_put(struct iq_sb *o, int ib, __m256i w, int lo, int hi)
{
    _mm256_storeu_si256((__m256i *)(o->w + 32 * ib), w);
    _mm256_storeu_si256((__m256i *)o->sc[ib],
                        _mm256_setr_m128i(_mm_set1_epi16((short)lo), _mm_set1_epi16((short)hi)));
}

/* o->corr from the stored values and scales (every decoder's last step) */
static inline void iqd_finish(struct iq_sb *o)
{
    __m256i acc = _mm256_setzero_si256();
    for (int ib = 0; ib < QK_K / 32; ib++) {
        const __m256i w = _mm256_loadu_si256((const __m256i *)(o->w + 32 * ib));
        const __m256i sc = _mm256_loadu_si256((const __m256i *)o->sc[ib]);
        acc = _mm256_add_epi32(acc,
                               _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), w), sc));
    }
    __m128i a = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    a = _mm_add_epi32(a, _mm_shuffle_epi32(a, _MM_SHUFFLE(1, 0, 3, 2)));
    a = _mm_add_epi32(a, _mm_shuffle_epi32(a, _MM_SHUFFLE(2, 3, 0, 1)));
    o->corr = 128 * _mm_cvtsi128_si32(a);
}

static inline void iqd_put_signed(struct iq_sb *o, int ib, __m256i mag, uint32_t s4, int lo, int hi)
{
    iqd_put(o, ib, _mm256_sign_epi8(mag, iqd_sign_bytes(s4)), lo, hi);
}

static inline void iq_decode_iq2_xxs(const void *blk, struct iq_sb *o)
{
    const struct block_iq2_xxs *x = blk;
    o->d = _cvtsh_ss(x->d);
    for (int ib = 0; ib < QK_K / 32; ib++) {
        const uint32_t g = iqd_rd32(x->qs + 4 * ib), aux = iqd_rd32(x->qs + 4 * ib + 2);
        const int ls = (int)(2 * (aux >> 28) + 1);
        iqd_put_signed(
            o, ib,
            iqd_grid4(cpuq_iq2xxs_grid, g & 0xff, (g >> 8) & 0xff, (g >> 16) & 0xff, g >> 24),
            iqd_ksigns4(aux), ls, ls);
    }
    iqd_finish(o);
}

static inline void iq_decode_iq2_xs(const void *blk, struct iq_sb *o)
{
    const struct block_iq2_xs *x = blk;
    o->d = _cvtsh_ss(x->d);
    for (int ib = 0; ib < QK_K / 32; ib++) {
        const uint16_t *q = x->qs + 4 * ib;
        const uint32_t s4 = cpuq_iq_ksigns[q[0] >> 9] | (uint32_t)cpuq_iq_ksigns[q[1] >> 9] << 8 |
                            (uint32_t)cpuq_iq_ksigns[q[2] >> 9] << 16 |
                            (uint32_t)cpuq_iq_ksigns[q[3] >> 9] << 24;
        const int sc = x->scales[ib];
        iqd_put_signed(o, ib,
                       iqd_grid4(cpuq_iq2xs_grid, q[0] & 511, q[1] & 511, q[2] & 511, q[3] & 511),
                       s4, 2 * (sc & 0xf) + 1, 2 * (sc >> 4) + 1);
    }
    iqd_finish(o);
}

static inline void iq_decode_iq2_s(const void *blk, struct iq_sb *o)
{
    const struct block_iq2_s *x = blk;
    o->d = _cvtsh_ss(x->d);
    for (int ib = 0; ib < QK_K / 32; ib++) {
        const uint8_t *qs = x->qs + 4 * ib;
        const int qh = x->qh[ib], sc = x->scales[ib];
        iqd_put_signed(o, ib,
                       iqd_grid4(cpuq_iq2s_grid, qs[0] | ((qh << 8) & 0x300),
                                 qs[1] | ((qh << 6) & 0x300), qs[2] | ((qh << 4) & 0x300),
                                 qs[3] | ((qh << 2) & 0x300)),
                       iqd_rd32(x->qs + QK_K / 8 + 4 * ib), 2 * (sc & 0xf) + 1, 2 * (sc >> 4) + 1);
    }
    iqd_finish(o);
}

static inline void iq_decode_iq3_xxs(const void *blk, struct iq_sb *o)
{
    const struct block_iq3_xxs *x = blk;
    const uint32_t *g = cpuq_iq3xxs_grid;
    o->d = _cvtsh_ss(x->d);
    for (int ib = 0; ib < QK_K / 32; ib++) {
        const uint8_t *q = x->qs + 8 * ib;
        const uint32_t aux = iqd_rd32(x->qs + QK_K / 4 + 4 * ib);
        const int ls = (int)(2 * (aux >> 28) + 1);
        iqd_put_signed(o, ib,
                       _mm256_setr_epi32((int)g[q[0]], (int)g[q[1]], (int)g[q[2]], (int)g[q[3]],
                                         (int)g[q[4]], (int)g[q[5]], (int)g[q[6]], (int)g[q[7]]),
                       iqd_ksigns4(aux), ls, ls);
    }
    iqd_finish(o);
}

static inline void iq_decode_iq3_s(const void *blk, struct iq_sb *o)
{
    const struct block_iq3_s *x = blk;
    const uint32_t *g = cpuq_iq3s_grid;
    o->d = _cvtsh_ss(x->d);
    for (int ib = 0; ib < QK_K / 32; ib++) {
        const uint8_t *q = x->qs + 8 * ib;
        const int qh = x->qh[ib];
        const int ls = 2 * ((x->scales[ib / 2] >> (4 * (ib % 2))) & 0xf) + 1;
#define I3(m) (int)g[q[m] | (((qh >> (m)) & 1) << 8)]
        iqd_put_signed(o, ib,
                       _mm256_setr_epi32(I3(0), I3(1), I3(2), I3(3), I3(4), I3(5), I3(6), I3(7)),
                       iqd_rd32(x->signs + 4 * ib), ls, ls);
#undef I3
    }
    iqd_finish(o);
}

static inline void iq_decode_iq1_s(const void *blk, struct iq_sb *o)
{
    const struct block_iq1_s *x = blk;
    const uint64_t *g = cpuq_iq1s_grid;
    o->d = _cvtsh_ss(x->d);
    for (int ib = 0; ib < QK_K / 32; ib++) {
        const uint8_t *q = x->qs + 4 * ib;
        const int qh = x->qh[ib], ls = 2 * ((qh >> 12) & 7) + 1;
        iqd_put(o, ib,
                iqd_grid4(g, q[0] | ((qh << 8) & 0x700), q[1] | ((qh << 5) & 0x700),
                          q[2] | ((qh << 2) & 0x700), q[3] | ((qh >> 1) & 0x700)),
                ls, ls);
        o->c1[2 * ib] = o->c1[2 * ib + 1] = (int16_t)(qh & 0x8000 ? -ls : ls);
    }
    iqd_finish(o);
}

static inline void iq_decode_iq1_m(const void *blk, struct iq_sb *o)
{
    const struct block_iq1_m *x = blk;
    const uint64_t *g = cpuq_iq1s_grid;
    uint16_t sc[4];
    memcpy(sc, x->scales, 8);
    o->d = _cvtsh_ss((uint16_t)((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) |
                                (sc[3] & 0xf000)));
    for (int ib = 0; ib < QK_K / 32; ib++) {
        const uint8_t *q = x->qs + 4 * ib;
        const int h0 = x->qh[2 * ib], h1 = x->qh[2 * ib + 1];
        const int s6 = sc[ib / 2] >> (6 * (ib % 2));
        const int lo = 2 * (s6 & 7) + 1, hi = 2 * ((s6 >> 3) & 7) + 1;
        iqd_put(o, ib,
                iqd_grid4(g, q[0] | ((h0 << 8) & 0x700), q[1] | ((h0 << 4) & 0x700),
                          q[2] | ((h1 << 8) & 0x700), q[3] | ((h1 << 4) & 0x700)),
                lo, hi);
        /* per group of 8: the delta's sign times its 16-value scale */
        const __m256i w2 =
            _mm256_setr_epi64x(iqd_bcast8(h0 & 0x08 ? -lo : lo), iqd_bcast8(h0 & 0x80 ? -lo : lo),
                               iqd_bcast8(h1 & 0x08 ? -hi : hi), iqd_bcast8(h1 & 0x80 ? -hi : hi));
        _mm256_storeu_si256((__m256i *)(o->w2 + 32 * ib), w2);
        _mm256_storeu_si256((__m256i *)(o->m2 + 32 * ib), _mm256_abs_epi8(w2));
    }
    iqd_finish(o);
}

#endif
