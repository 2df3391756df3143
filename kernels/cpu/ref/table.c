/* ref/table.c - the scalar column of the ops table: every type's reference kernels and its
 * activation (vec_dot) type, as in ggml's CPU type traits. Called by dispatch.c for every ISA's
 * table before the ISA's own kernels override entries. */
#include "kernels/cpu/ref/ref.h"

static void set(struct cpuq_ops *o, int t, void (*to)(const void *, float *, int64_t),
                void (*from)(const float *, void *, int64_t), int vt,
                void (*dot)(int64_t, float *, const void *, const void *))
{
    o->type[t].to_float = to;
    o->type[t].from_float = from;
    o->type[t].vec_dot_type = dot ? vt : -1;
    o->type[t].vec_dot = dot;
    o->type[t].mul_mat = NULL;
}

void cpuq__fill_scalar(struct cpuq_ops *o)
{
    set(o, QTYPE_F32, cpuq_dequant_f32_ref, cpuq_quant_f32_ref, QTYPE_F32,
        cpuq_vec_dot_f32_f32_ref);
    set(o, QTYPE_F16, cpuq_dequant_f16_ref, cpuq_quant_f16_ref, QTYPE_F16,
        cpuq_vec_dot_f16_f16_ref);
    set(o, QTYPE_BF16, cpuq_dequant_bf16_ref, cpuq_quant_bf16_ref, QTYPE_BF16,
        cpuq_vec_dot_bf16_bf16_ref);
    set(o, QTYPE_Q4_0, cpuq_dequant_q4_0_ref, cpuq_quant_q4_0_ref, QTYPE_Q8_0,
        cpuq_vec_dot_q4_0_q8_0_ref);
    set(o, QTYPE_Q4_1, cpuq_dequant_q4_1_ref, cpuq_quant_q4_1_ref, QTYPE_Q8_1,
        cpuq_vec_dot_q4_1_q8_1_ref);
    set(o, QTYPE_Q5_0, cpuq_dequant_q5_0_ref, cpuq_quant_q5_0_ref, QTYPE_Q8_0,
        cpuq_vec_dot_q5_0_q8_0_ref);
    set(o, QTYPE_Q5_1, cpuq_dequant_q5_1_ref, cpuq_quant_q5_1_ref, QTYPE_Q8_1,
        cpuq_vec_dot_q5_1_q8_1_ref);
    set(o, QTYPE_Q8_0, cpuq_dequant_q8_0_ref, cpuq_quant_q8_0_ref, QTYPE_Q8_0,
        cpuq_vec_dot_q8_0_q8_0_ref);
    set(o, QTYPE_Q8_1, cpuq_dequant_q8_1_ref, cpuq_quant_q8_1_ref, -1, NULL); /* activations only */
    set(o, QTYPE_Q2_K, cpuq_dequant_q2_k_ref, cpuq_quant_q2_k_ref, QTYPE_Q8_K,
        cpuq_vec_dot_q2_k_q8_k_ref);
    set(o, QTYPE_Q3_K, cpuq_dequant_q3_k_ref, cpuq_quant_q3_k_ref, QTYPE_Q8_K,
        cpuq_vec_dot_q3_k_q8_k_ref);
    set(o, QTYPE_Q4_K, cpuq_dequant_q4_k_ref, cpuq_quant_q4_k_ref, QTYPE_Q8_K,
        cpuq_vec_dot_q4_k_q8_k_ref);
    set(o, QTYPE_Q5_K, cpuq_dequant_q5_k_ref, cpuq_quant_q5_k_ref, QTYPE_Q8_K,
        cpuq_vec_dot_q5_k_q8_k_ref);
    set(o, QTYPE_Q6_K, cpuq_dequant_q6_k_ref, cpuq_quant_q6_k_ref, QTYPE_Q8_K,
        cpuq_vec_dot_q6_k_q8_k_ref);
    set(o, QTYPE_Q8_K, cpuq_dequant_q8_k_ref, cpuq_quant_q8_k_ref, -1, NULL); /* activations only */
    set(o, QTYPE_IQ4_NL, cpuq_dequant_iq4_nl_ref, cpuq_quant_iq4_nl_ref, QTYPE_Q8_0,
        cpuq_vec_dot_iq4_nl_q8_0_ref);
    set(o, QTYPE_IQ4_XS, cpuq_dequant_iq4_xs_ref, cpuq_quant_iq4_xs_ref, QTYPE_Q8_K,
        cpuq_vec_dot_iq4_xs_q8_k_ref);
    /* i-quants: the quantizer is a simple encoder, not ggml's (ref/iquants.c) */
#define IQ(T, t)                                                                                   \
    set(o, T, cpuq_dequant_##t##_ref, cpuq_quant_##t##_ref, QTYPE_Q8_K,                            \
        cpuq_vec_dot_##t##_q8_k_ref);
    IQ(QTYPE_IQ2_XXS, iq2_xxs)
    IQ(QTYPE_IQ2_XS, iq2_xs)
    IQ(QTYPE_IQ2_S, iq2_s)
    IQ(QTYPE_IQ3_XXS, iq3_xxs)
    IQ(QTYPE_IQ3_S, iq3_s)
    IQ(QTYPE_IQ1_S, iq1_s)
    IQ(QTYPE_IQ1_M, iq1_m)
#undef IQ
}
