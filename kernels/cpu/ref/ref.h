/* ref.h - the scalar reference kernels (kernels/cpu/ref/), for dispatch.c, the ISA columns (as
 * fall-backs and for tails) and tests. Internal to kernels/cpu: callers elsewhere use cpuq.h.
 *
 * Names: cpuq_dequant_<type>_ref(src, dst, n), cpuq_quant_<type>_ref(src, dst, n) and
 * cpuq_vec_dot_<type>_<acttype>_ref(n, s, w, act), n a whole number of blocks. Pure functions:
 * thread-safe. Semantics: see cpuq.h (ggml's, bit for bit).
 */
#ifndef TANDEM_CPUQ_REF_H
#define TANDEM_CPUQ_REF_H

#include <stdint.h>
#include <string.h>

#include "kernels/cpu/cpuq.h"
#include "kernels/cpu/qblocks.h"

/* fill every entry of a table with the scalar reference (dispatch.c) */
void cpuq__fill_scalar(struct cpuq_ops *o);

#define CPUQ_REF_DECL(t)                                                                           \
    void cpuq_dequant_##t##_ref(const void *src, float *dst, int64_t n);                           \
    void cpuq_quant_##t##_ref(const float *src, void *dst, int64_t n);

CPUQ_REF_DECL(f32)
CPUQ_REF_DECL(f16)
CPUQ_REF_DECL(bf16)
CPUQ_REF_DECL(q4_0)
CPUQ_REF_DECL(q4_1)
CPUQ_REF_DECL(q5_0)
CPUQ_REF_DECL(q5_1)
CPUQ_REF_DECL(q8_0)
CPUQ_REF_DECL(q8_1)
CPUQ_REF_DECL(q2_k)
CPUQ_REF_DECL(q3_k)
CPUQ_REF_DECL(q4_k)
CPUQ_REF_DECL(q5_k)
CPUQ_REF_DECL(q6_k)
CPUQ_REF_DECL(q8_k)
CPUQ_REF_DECL(iq4_nl)
CPUQ_REF_DECL(iq4_xs)
CPUQ_REF_DECL(iq2_xxs)
CPUQ_REF_DECL(iq2_xs)
CPUQ_REF_DECL(iq2_s)
CPUQ_REF_DECL(iq3_xxs)
CPUQ_REF_DECL(iq3_s)
CPUQ_REF_DECL(iq1_s)
CPUQ_REF_DECL(iq1_m)
#undef CPUQ_REF_DECL

#define CPUQ_REF_DOT(w, a)                                                                         \
    void cpuq_vec_dot_##w##_##a##_ref(int64_t n, float *s, const void *wrow, const void *act);

CPUQ_REF_DOT(f32, f32)
CPUQ_REF_DOT(f16, f16)
CPUQ_REF_DOT(bf16, bf16)
CPUQ_REF_DOT(q4_0, q8_0)
CPUQ_REF_DOT(q4_1, q8_1)
CPUQ_REF_DOT(q5_0, q8_0)
CPUQ_REF_DOT(q5_1, q8_1)
CPUQ_REF_DOT(q8_0, q8_0)
CPUQ_REF_DOT(q2_k, q8_k)
CPUQ_REF_DOT(q3_k, q8_k)
CPUQ_REF_DOT(q4_k, q8_k)
CPUQ_REF_DOT(q5_k, q8_k)
CPUQ_REF_DOT(q6_k, q8_k)
CPUQ_REF_DOT(iq4_nl, q8_0)
CPUQ_REF_DOT(iq4_xs, q8_k)
CPUQ_REF_DOT(iq2_xxs, q8_k)
CPUQ_REF_DOT(iq2_xs, q8_k)
CPUQ_REF_DOT(iq2_s, q8_k)
CPUQ_REF_DOT(iq3_xxs, q8_k)
CPUQ_REF_DOT(iq3_s, q8_k)
CPUQ_REF_DOT(iq1_s, q8_k)
CPUQ_REF_DOT(iq1_m, q8_k)
#undef CPUQ_REF_DOT

/* ggml's nearest_int: round to nearest, ties to even, for |x| < 2^22 */
static inline int cpuq__nearest_int(float x)
{
    float v = x + 12582912.0f;
    int32_t i;
    memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

#endif
