/* test_simd_kernels.c - every ISA column this CPU runs against the scalar column, entry by entry:
 * activation quantizers (bitwise), vec_dot and the multi-token mul_mat (all token counts 1..19,
 * several rows, fp32-rounding tolerance relative to the sum of |terms|), for every type with a dot
 * product. Random inputs with fresh seeds; catches a wrong SIMD kernel (A2's), not format bugs
 * (the scalar reference is checked against ggml's data by test_ggml_ref). */
#include "../check.h"
#include "common/err.h"
#include "kernels/cpu/cpuq.h"

#include <stdint.h>

static uint64_t rng_state;
static uint32_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}
static float frand(void) { return (float)rnd() / 2147483648.0f - 1.0f; }

enum { NR = 5, NT = 19, K = 1024 };

int main(void)
{
    rng_state = check_seed();
    char err[ERR_LEN];
    const struct cpuq_ops *ref;
    CHECK_EQ(cpuq_ops_get(CPUQ_ISA_SCALAR, &ref, err), 0);
    static float x[NT * K], wf[NR * K], yr[NT * NR], y[NT * NR], mag[NT * NR];
    static char wq[NR * K * 4], aq[NT * K * 4], aq2[NT * K * 4];
    for (int isa = CPUQ_ISA_AVX2; isa < CPUQ_ISA_COUNT; isa++) {
        const struct cpuq_ops *o;
        if (cpuq_ops_get(isa, &o, err) != 0) continue;
        for (int type = 0; type < QTYPE_COUNT_; type++) {
            const struct cpuq_type_ops *rt = &ref->type[type], *ot = &o->type[type];
            if (!rt->vec_dot || !rt->from_float || rt->vec_dot_type < 0) continue;
            int vt = rt->vec_dot_type;
            CHECK_EQ(ot->vec_dot_type, vt);
            size_t wrb = cpuq_row_size(type, K), arb = cpuq_row_size(vt, K);
            CHECK(wrb && arb && wrb <= sizeof wq / NR && arb <= sizeof aq / NT);
            for (int i = 0; i < NR * K; i++) wf[i] = frand() * (1 + (i % 5));
            for (int i = 0; i < NT * K; i++) x[i] = frand() * (i % 300 == 7 ? 30.0f : 1.0f);
            for (int r = 0; r < NR; r++) rt->from_float(wf + r * K, wq + r * wrb, K);
            /* activation quantizer: bitwise equal to the reference */
            for (int t = 0; t < NT; t++) {
                ref->type[vt].from_float(x + t * K, aq + t * arb, K);
                o->type[vt].from_float(x + t * K, aq2 + t * arb, K);
            }
            if (memcmp(aq, aq2, arb * NT) != 0) {
                fprintf(stderr, "%s: %s from_float differs from the reference\n", o->isa_name,
                        qtype_name(vt));
                return 1;
            }
            /* the weight quantizer of this type too (used by convert) */
            static char wq2[NR * K * 4];
            for (int r = 0; r < NR; r++) ot->from_float(wf + r * K, wq2 + r * wrb, K);
            CHECK(memcmp(wq, wq2, wrb * NR) == 0);
            /* |terms| bound for the tolerance, from the dequantized operands */
            static float wd[NR * K], ad[NT * K];
            for (int r = 0; r < NR; r++) rt->to_float(wq + r * wrb, wd + r * K, K);
            if (ref->type[vt].to_float)
                for (int t = 0; t < NT; t++) ref->type[vt].to_float(aq + t * arb, ad + t * K, K);
            else memcpy(ad, x, sizeof x);
            for (int t = 0; t < NT; t++)
                for (int r = 0; r < NR; r++) {
                    double m = 0;
                    for (int k = 0; k < K; k++) m += fabs((double)wd[r * K + k] * ad[t * K + k]);
                    mag[t * NR + r] = (float)m;
                    rt->vec_dot(K, &yr[t * NR + r], wq + r * wrb, aq + t * arb);
                }
            for (int t = 0; t < NT; t++)
                for (int r = 0; r < NR; r++) {
                    float s;
                    ot->vec_dot(K, &s, wq + r * wrb, aq + t * arb);
                    CHECK_NEAR(s, yr[t * NR + r], 2e-6 * mag[t * NR + r] + 1e-6);
                }
            for (int ntok = 1; ntok <= NT; ntok++) {
                for (int i = 0; i < NT * NR; i++) y[i] = NAN;
                cpuq_matmul_rows(o, type, wq, wrb, 1, NR, K, aq, ntok, y, NR);
                for (int t = 0; t < ntok; t++)
                    for (int r = 1; r < NR; r++)
                        if (!(fabs(y[t * NR + r] - yr[t * NR + r]) <=
                              2e-6 * mag[t * NR + r] + 1e-6)) {
                            fprintf(stderr, "%s %s mul_mat ntok %d: y[%d][%d] = %.9g, ref %.9g\n",
                                    o->isa_name, qtype_name(type), ntok, t, r, y[t * NR + r],
                                    yr[t * NR + r]);
                            return 1;
                        }
            }
            fprintf(stderr, "  %s %s ok\n", o->isa_name, qtype_name(type));
        }
    }
    return 0;
}
