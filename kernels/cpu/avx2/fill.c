/* avx2/fill.c - the avx2 column of the ops table: overrides the scalar reference entries with this
 * ISA's kernels. Built into its own static library with the ISA's -m flags
 * (kernels/cpu/meson.build), so nothing here may run unless dispatch.c found the ISA on this CPU.
 * Thread: called once per table from dispatch.c under pthread_once. */
#include "kernels/cpu/avx2/kernels.h"
#include "kernels/cpu/cpuq.h"

void cpuq__fill_avx2(struct cpuq_ops *o)
{
#define DOT(T, name)                                                                               \
    o->type[T].vec_dot = cpuq_vec_dot_##name##_avx2;                                               \
    o->type[T].mul_mat = cpuq_mul_mat_##name##_avx2;
    DOT(QTYPE_Q4_K, q4_k_q8_k)
    DOT(QTYPE_Q5_K, q5_k_q8_k)
    DOT(QTYPE_Q6_K, q6_k_q8_k)
    DOT(QTYPE_Q8_0, q8_0_q8_0)
    DOT(QTYPE_IQ4_XS, iq4_xs_q8_k)
    /* grid i-quants: mul_mat decodes a super-block once for up to 64 tokens (avx2/iquants_mm.c) */
    DOT(QTYPE_IQ2_XXS, iq2_xxs_q8_k)
    DOT(QTYPE_IQ2_XS, iq2_xs_q8_k)
    DOT(QTYPE_IQ2_S, iq2_s_q8_k)
    DOT(QTYPE_IQ3_XXS, iq3_xxs_q8_k)
    DOT(QTYPE_IQ3_S, iq3_s_q8_k)
    DOT(QTYPE_IQ1_S, iq1_s_q8_k)
    DOT(QTYPE_IQ1_M, iq1_m_q8_k)
#undef DOT
    o->type[QTYPE_Q8_K].from_float = cpuq_quant_q8_k_avx2;
    o->type[QTYPE_Q8_0].from_float = cpuq_quant_q8_0_avx2;
}
