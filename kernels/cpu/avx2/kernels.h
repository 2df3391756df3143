/* avx2/kernels.h - the AVX2 kernels of kernels/cpu/avx2/, for avx2/fill.c and tests.
 * Semantics: cpuq.h (vec_dot / mul_mat / from_float of struct cpuq_type_ops). Pure functions. */
#ifndef TANDEM_CPUQ_AVX2_KERNELS_H
#define TANDEM_CPUQ_AVX2_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#define CPUQ_AVX2_DOT(name)                                                                        \
    void cpuq_vec_dot_##name##_avx2(int64_t n, float *s, const void *w, const void *act);          \
    void cpuq_mul_mat_##name##_avx2(int64_t n, const void *w, size_t w_row_bytes, int64_t nrows,   \
                                    const void *act, size_t act_row_bytes, int64_t ntok, float *y, \
                                    int64_t ldy);

CPUQ_AVX2_DOT(q4_k_q8_k)
CPUQ_AVX2_DOT(q5_k_q8_k)
CPUQ_AVX2_DOT(q6_k_q8_k)
CPUQ_AVX2_DOT(q8_0_q8_0)
CPUQ_AVX2_DOT(iq4_xs_q8_k)
/* grid i-quants: single-token dots (avx2/iquants.c) and multi-token mul_mat (avx2/iquants_mm.c),
 * both bit-identical to the scalar reference */
CPUQ_AVX2_DOT(iq2_xxs_q8_k)
CPUQ_AVX2_DOT(iq2_xs_q8_k)
CPUQ_AVX2_DOT(iq2_s_q8_k)
CPUQ_AVX2_DOT(iq3_xxs_q8_k)
CPUQ_AVX2_DOT(iq3_s_q8_k)
CPUQ_AVX2_DOT(iq1_s_q8_k)
CPUQ_AVX2_DOT(iq1_m_q8_k)
#undef CPUQ_AVX2_DOT

void cpuq_quant_q8_k_avx2(const float *src, void *dst, int64_t n);
void cpuq_quant_q8_0_avx2(const float *src, void *dst, int64_t n);

#endif
