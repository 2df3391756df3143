/* avx512/common.h - helpers shared by the AVX-512 kernels (internal to kernels/cpu/avx512).
 *
 * The multi-token kernels (cpuq_type_ops.mul_mat) share one shape: for each weight row, tokens
 * go in groups of up to AVX512_TG; each super-block of the row is unpacked once into registers
 * and then dotted with every token of the group, so one weight load serves up to AVX512_TG tokens.
 * Per token, integer block dots are exact; they are converted to fp32 per block and accumulated
 * in 16 fp32 lanes, reduced at the end of the row. The result for (row, token) does not depend
 * on which other tokens share its group (deterministic), and differs from the scalar reference
 * only by fp32 rounding (the reference accumulates one scalar per block).
 */
#ifndef TANDEM_CPUQ_AVX512_COMMON_H
#define TANDEM_CPUQ_AVX512_COMMON_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define AVX512_TG 8 /* tokens per group */
#define AVX512_INLINE static inline __attribute__((always_inline))

/* vpermw indices: lanes 0..15 <- element 2c, lanes 16..31 <- element 2c+1 of an int16 vector
 * (broadcasts a pair of per-sub-block scales; used by the Q4_K/Q5_K and IQ4_XS kernels) */
static const int16_t idx_pair[4][32] = {
#define P(c)                                                                                       \
    {                                                                                              \
        2 * c, 2 * c, 2 * c, 2 * c, 2 * c, 2 * c, 2 * c, 2 * c, 2 * c, 2 * c, 2 * c, 2 * c, 2 * c, \
            2 * c, 2 * c, 2 * c, 2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1, \
            2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1,           \
            2 * c + 1, 2 * c + 1, 2 * c + 1                                                        \
    }
    P(0), P(1), P(2), P(3)
#undef P
};

AVX512_INLINE float avx512_f16(uint16_t h) { return _cvtsh_ss(h); }

/* Run kern(T) over every (row, token group): kern is an always-inline function taking
 * (n, w_row, act, act_row_bytes, T, y, ldy) that writes y[t * ldy] for t < T; each case passes
 * a constant T so the compiler specializes the token loops. */
// clang-format off
#define AVX512_KCASE(kern, T) case T: kern(n, wr, at, act_row_bytes, T, yt, ldy); break;
#define AVX512_MUL_MAT_BODY(kern)                                                      \
    for (int64_t r = 0; r < nrows; r++) {                                              \
        const void *wr = (const char *)w + (size_t)r * w_row_bytes;                    \
        for (int64_t t = 0; t < ntok; t += AVX512_TG) {                                \
            const char *at = (const char *)act + (size_t)t * act_row_bytes;            \
            float *yt = y + t * ldy + r;                                               \
            switch (ntok - t < AVX512_TG ? ntok - t : AVX512_TG) {                     \
            AVX512_KCASE(kern, 8) AVX512_KCASE(kern, 7) AVX512_KCASE(kern, 6)           \
            AVX512_KCASE(kern, 5) AVX512_KCASE(kern, 4) AVX512_KCASE(kern, 3)           \
            AVX512_KCASE(kern, 2) AVX512_KCASE(kern, 1)                                 \
            default: break;                                                            \
            }                                                                          \
        }                                                                              \
    }
// clang-format on

/* Unpack the 12 packed 6-bit scale/min bytes of Q4_K/Q5_K into 8 scales and 8 mins (bytes). */
AVX512_INLINE void avx512_kscales(const uint8_t *q, uint64_t *sc, uint64_t *mn)
{
    uint32_t u0, u1, u2;
    memcpy(&u0, q, 4);
    memcpy(&u1, q + 4, 4);
    memcpy(&u2, q + 8, 4);
    uint32_t s_lo = u0 & 0x3f3f3f3fu, m_lo = u1 & 0x3f3f3f3fu;
    uint32_t s_hi = (u2 & 0x0f0f0f0fu) | (((u0 >> 6) & 0x03030303u) << 4);
    uint32_t m_hi = ((u2 >> 4) & 0x0f0f0f0fu) | (((u1 >> 6) & 0x03030303u) << 4);
    *sc = (uint64_t)s_lo | (uint64_t)s_hi << 32;
    *mn = (uint64_t)m_lo | (uint64_t)m_hi << 32;
}

AVX512_INLINE float avx512_hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

/* Software prefetch CPUQ_PF_BYTES ahead of the weight bytes a row kernel is about to read: the
 * hardware prefetcher alone left 1-token decode at ~52% of DRAM bandwidth on 16 cores; 2-4 KB
 * ahead gave 80-100% (kernels read rows back to back, so running past a row's end prefetches the
 * next row). One prefetch per 64-byte line of [p, p + n). */
#ifndef CPUQ_PF_BYTES
#define CPUQ_PF_BYTES 4096
#endif
AVX512_INLINE void avx512_prefetch(const void *p, int n)
{
    for (int o = 0; o < n; o += 64) _mm_prefetch((const char *)p + CPUQ_PF_BYTES + o, _MM_HINT_T0);
}

/* The vec_dot (one token) and mul_mat (several) entry points of a row kernel `rowfn`. */
#define AVX512_DEFINE_DOT(name, rowfn)                                                             \
    void cpuq_vec_dot_##name##_avx512(int64_t n, float *s, const void *w, const void *act)         \
    {                                                                                              \
        rowfn(n, w, act, 0, 1, s, 0);                                                              \
    }                                                                                              \
    void cpuq_mul_mat_##name##_avx512(int64_t n, const void *w, size_t w_row_bytes, int64_t nrows, \
                                      const void *act, size_t act_row_bytes, int64_t ntok,         \
                                      float *y, int64_t ldy)                                       \
    {                                                                                              \
        AVX512_MUL_MAT_BODY(rowfn)                                                                 \
    }

/* r[k] <- dword k of every r[t] (16 x 16 dwords) */
AVX512_INLINE void avx512_transpose16(__m512i r[16])
{
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int h = 0; h < 16; h += 8)
        for (int i = 0; i < 4; i++) {
            t[h + i] = _mm512_shuffle_i32x4(r[h + i], r[h + i + 4], 0x88);
            t[h + i + 4] = _mm512_shuffle_i32x4(r[h + i], r[h + i + 4], 0xdd);
        }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
    }
}

#endif
