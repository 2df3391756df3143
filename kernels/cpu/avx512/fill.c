/* avx512/fill.c - the avx512 column of the ops table: overrides the scalar reference entries with
 * this ISA's kernels. Built into its own static library with the ISA's -m flags
 * (kernels/cpu/meson.build), so nothing here may run unless dispatch.c found the ISA on this CPU.
 * Thread: called once per table from dispatch.c under pthread_once. */
#include "kernels/cpu/avx2/kernels.h"
#include "kernels/cpu/avx512/kernels.h"
#include "kernels/cpu/cpuq.h"

void cpuq__fill_avx512(struct cpuq_ops *o)
{
#define DOT(T, name)                                                                               \
    o->type[T].vec_dot = cpuq_vec_dot_##name##_avx512;                                             \
    o->type[T].mul_mat = cpuq_mul_mat_##name##_avx512;
    DOT(QTYPE_Q4_K, q4_k_q8_k)
    DOT(QTYPE_Q5_K, q5_k_q8_k)
    DOT(QTYPE_Q6_K, q6_k_q8_k)
    DOT(QTYPE_Q8_0, q8_0_q8_0)
    DOT(QTYPE_IQ4_XS, iq4_xs_q8_k)
    /* Q4_K, Q5_K, IQ4_XS, Q8_0: the AVX2 kernels are faster for 1-3 tokens (avx512/mixed.c) */
    o->type[QTYPE_Q4_K].vec_dot = cpuq_vec_dot_q4_k_q8_k_avx2;
    o->type[QTYPE_Q4_K].mul_mat = cpuq_mul_mat_q4_k_q8_k_mixed;
    o->type[QTYPE_Q5_K].vec_dot = cpuq_vec_dot_q5_k_q8_k_avx2;
    o->type[QTYPE_Q5_K].mul_mat = cpuq_mul_mat_q5_k_q8_k_mixed;
    o->type[QTYPE_IQ4_XS].vec_dot = cpuq_vec_dot_iq4_xs_q8_k_avx2;
    o->type[QTYPE_IQ4_XS].mul_mat = cpuq_mul_mat_iq4_xs_q8_k_mixed;
    o->type[QTYPE_Q8_0].vec_dot = cpuq_vec_dot_q8_0_q8_0_avx2;
    o->type[QTYPE_Q8_0].mul_mat = cpuq_mul_mat_q8_0_q8_0_mixed;
    /* from 2 tokens: 16 weight rows per vector (avx512/rows16.c; 1 token as above), one line each
     */
    o->type[QTYPE_Q4_K].mul_mat = cpuq_mul_mat_q4_k_q8_k_rows16;
    o->type[QTYPE_Q5_K].mul_mat = cpuq_mul_mat_q5_k_q8_k_rows16;
    o->type[QTYPE_Q6_K].mul_mat = cpuq_mul_mat_q6_k_q8_k_rows16;
    o->type[QTYPE_IQ4_XS].mul_mat = cpuq_mul_mat_iq4_xs_q8_k_rows16;
    /* grid i-quants: mul_mat decodes a super-block once for up to 64 tokens (avx512/iquants_mm.c)
     */
    DOT(QTYPE_IQ2_XXS, iq2_xxs_q8_k)
    DOT(QTYPE_IQ2_XS, iq2_xs_q8_k)
    DOT(QTYPE_IQ2_S, iq2_s_q8_k)
    DOT(QTYPE_IQ3_XXS, iq3_xxs_q8_k)
    DOT(QTYPE_IQ3_S, iq3_s_q8_k)
    DOT(QTYPE_IQ1_S, iq1_s_q8_k)
    DOT(QTYPE_IQ1_M, iq1_m_q8_k)
#undef DOT
    o->type[QTYPE_Q8_K].from_float = cpuq_quant_q8_k_avx512;
    o->type[QTYPE_Q8_0].from_float = cpuq_quant_q8_0_avx512;
}
