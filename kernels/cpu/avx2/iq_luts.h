/* avx2/iq_luts.h - small lookup tables of the single-token grid i-quant dots (avx2/iquants.c: all
 * of them; avx512/iquants.c: the scale rows only): sign patterns and sub-block scales as ready
 * vectors, so that building them costs loads instead of vector shuffles (the dots are bound by
 * their vector ports). Plain const arrays, no intrinsics: includable from any ISA's library.
 * Generated at compile time by the macros below; static read-only data: thread-safe.
 */
#ifndef TANDEM_CPUQ_AVX2_IQ_LUTS_H
#define TANDEM_CPUQ_AVX2_IQ_LUTS_H

#include <stdint.h>

/* iq_bit_signs[b]: 8 bytes of +1 / -1, byte j -1 where bit j of b is set */
#define IQL_B(b, j) ((((b) >> (j)) & 1 ? 0xffull : 0x01ull) << (8 * (j)))
#define IQL_E(b)                                                                                   \
    (IQL_B(b, 0) | IQL_B(b, 1) | IQL_B(b, 2) | IQL_B(b, 3) | IQL_B(b, 4) | IQL_B(b, 5) |           \
     IQL_B(b, 6) | IQL_B(b, 7))
/* the 7 stored sign bits c with bit 7 = their parity (= cpuq_iq_ksigns[c]) */
#define IQL_K(c)                                                                                   \
    ((c) | (((c) ^ (c) >> 1 ^ (c) >> 2 ^ (c) >> 3 ^ (c) >> 4 ^ (c) >> 5 ^ (c) >> 6) & 1) << 7)
#define IQL_8(M, c) M(c), M(c + 1), M(c + 2), M(c + 3), M(c + 4), M(c + 5), M(c + 6), M(c + 7)
#define IQL_64(M, c)                                                                               \
    IQL_8(M, c), IQL_8(M, c + 8), IQL_8(M, c + 16), IQL_8(M, c + 24), IQL_8(M, c + 32),            \
        IQL_8(M, c + 40), IQL_8(M, c + 48), IQL_8(M, c + 56)
#define IQL_KE(c) IQL_E(IQL_K(c))
static const uint64_t iq_bit_signs[256] = {IQL_64(IQL_E, 0), IQL_64(IQL_E, 64), IQL_64(IQL_E, 128),
                                           IQL_64(IQL_E, 192)};
/* iq_keven_signs[c] = iq_bit_signs[cpuq_iq_ksigns[c]]: 7 stored bits, even parity */
static const uint64_t iq_keven_signs[128] = {IQL_64(IQL_KE, 0), IQL_64(IQL_KE, 64)};

/* iq_scale16[s]: 16 int16 lanes of 2s + 1 */
#define IQL_S2(s) (int16_t)(2 * (s) + 1), (int16_t)(2 * (s) + 1)
#define IQL_S8(s) IQL_S2(s), IQL_S2(s), IQL_S2(s), IQL_S2(s)
#define IQL_SC(s)                                                                                  \
    {                                                                                              \
        IQL_S8(s), IQL_S8(s)                                                                       \
    }
static const int16_t iq_scale16[16][16]
    __attribute__((aligned(32))) = {IQL_8(IQL_SC, 0), IQL_8(IQL_SC, 8)};
/* iq_scale_pair[b]: int16 lanes 0-7 = 2 (b & 15) + 1, lanes 8-15 = 2 (b >> 4) + 1 (the two
 * 4-bit scales of one byte, in vpmaddubsw's output layout for 32 values) */
#define IQL_SP(b)                                                                                  \
    {                                                                                              \
        IQL_S8((b)&15), IQL_S8((b) >> 4)                                                           \
    }
static const int16_t iq_scale_pair[256][16] __attribute__((aligned(32))) = {
    IQL_64(IQL_SP, 0), IQL_64(IQL_SP, 64), IQL_64(IQL_SP, 128), IQL_64(IQL_SP, 192)};

#undef IQL_SP
#undef IQL_SC
#undef IQL_S8
#undef IQL_S2
#undef IQL_KE
#undef IQL_64
#undef IQL_8
#undef IQL_K
#undef IQL_E
#undef IQL_B

#endif
