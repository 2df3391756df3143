/* avx512/kernels.h - the AVX-512 kernels of kernels/cpu/avx512/, for avx512/fill.c and tests.
 * Semantics: cpuq.h (vec_dot / mul_mat / from_float of struct cpuq_type_ops). Pure functions. */
#ifndef TANDEM_CPUQ_AVX512_KERNELS_H
#define TANDEM_CPUQ_AVX512_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#define CPUQ_AVX512_DOT(name)                                                                      \
    void cpuq_vec_dot_##name##_avx512(int64_t n, float *s, const void *w, const void *act);        \
    void cpuq_mul_mat_##name##_avx512(int64_t n, const void *w, size_t w_row_bytes, int64_t nrows, \
                                      const void *act, size_t act_row_bytes, int64_t ntok,         \
                                      float *y, int64_t ldy);

CPUQ_AVX512_DOT(q4_k_q8_k)
CPUQ_AVX512_DOT(q5_k_q8_k)
CPUQ_AVX512_DOT(q6_k_q8_k)
CPUQ_AVX512_DOT(q8_0_q8_0)
CPUQ_AVX512_DOT(iq4_xs_q8_k)

/* avx512/mixed.c: AVX2 kernel below 4 tokens, AVX-512 from 4 */
void cpuq_mul_mat_q4_k_q8_k_mixed(int64_t n, const void *w, size_t w_row_bytes, int64_t nrows,
                                  const void *act, size_t act_row_bytes, int64_t ntok, float *y,
                                  int64_t ldy);
void cpuq_mul_mat_q5_k_q8_k_mixed(int64_t n, const void *w, size_t w_row_bytes, int64_t nrows,
                                  const void *act, size_t act_row_bytes, int64_t ntok, float *y,
                                  int64_t ldy);
void cpuq_mul_mat_iq4_xs_q8_k_mixed(int64_t n, const void *w, size_t w_row_bytes, int64_t nrows,
                                    const void *act, size_t act_row_bytes, int64_t ntok, float *y,
                                    int64_t ldy);
void cpuq_mul_mat_q8_0_q8_0_mixed(int64_t n, const void *w, size_t w_row_bytes, int64_t nrows,
                                  const void *act, size_t act_row_bytes, int64_t ntok, float *y,
                                  int64_t ldy);

/* avx512/rows16.c: 16 weight rows per vector, for 2 or more tokens (1 token: the row kernels) */
#define CPUQ_ROWS16(name)                                                                          \
    void cpuq_mul_mat_##name##_rows16(int64_t n, const void *w, size_t w_row_bytes, int64_t nrows, \
                                      const void *act, size_t act_row_bytes, int64_t ntok,         \
                                      float *y, int64_t ldy);
CPUQ_ROWS16(q4_k_q8_k)
CPUQ_ROWS16(q5_k_q8_k)
CPUQ_ROWS16(q6_k_q8_k)
CPUQ_ROWS16(iq4_xs_q8_k)
#undef CPUQ_ROWS16

/* grid i-quants: single-token dots (avx512/iquants.c) and multi-token mul_mat
 * (avx512/iquants_mm.c), both bit-identical to the scalar reference */
CPUQ_AVX512_DOT(iq2_xxs_q8_k)
CPUQ_AVX512_DOT(iq2_xs_q8_k)
CPUQ_AVX512_DOT(iq2_s_q8_k)
CPUQ_AVX512_DOT(iq3_xxs_q8_k)
CPUQ_AVX512_DOT(iq3_s_q8_k)
CPUQ_AVX512_DOT(iq1_s_q8_k)
CPUQ_AVX512_DOT(iq1_m_q8_k)
#undef CPUQ_AVX512_DOT

void cpuq_quant_q8_k_avx512(const float *src, void *dst, int64_t n);
void cpuq_quant_q8_0_avx512(const float *src, void *dst, int64_t n);

#endif
