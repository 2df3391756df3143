/* tests/kernels/emu/emu_check.c - the AMX multi-token kernels (and the AVX-512 kernels they fall
 * back to, and the AVX-512 grid i-quant mul_mat) against the scalar reference, built by
 * scripts/amx-emu-check.sh with the kernels compiled through the emulating immintrin.h of this
 * folder: token counts 1..150, ragged row and token tiles, several K chunks; tolerance as
 * tests/kernels/test_mul_mat_tiles (the grid i-quants: bit-identical, as they claim). Argument: run
 * only the cases whose name contains it. */
#include "tests/check.h"
#include "common/err.h"
#include "kernels/cpu/cpuq.h"
#include "kernels/cpu/ref/ref.h"
#include "tests/kernels/mm_case.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef void (*mm_fn)(int64_t, const void *, size_t, int64_t, const void *, size_t, int64_t,
                      float *, int64_t);
#define X(name)                                                                                    \
    void name(int64_t, const void *, size_t, int64_t, const void *, size_t, int64_t, float *,      \
              int64_t);
X(cpuq_mul_mat_q4_k_q8_k_amx)
X(cpuq_mul_mat_q5_k_q8_k_amx)
X(cpuq_mul_mat_q6_k_q8_k_amx)
X(cpuq_mul_mat_iq4_xs_q8_k_amx)
X(cpuq_mul_mat_q8_0_q8_0_amx)
X(cpuq_mul_mat_q4_k_q8_k_rows16)
X(cpuq_mul_mat_q6_k_q8_k_rows16)
X(cpuq_mul_mat_q5_k_q8_k_rows16)
X(cpuq_mul_mat_iq4_xs_q8_k_rows16)
X(cpuq_mul_mat_iq2_xxs_q8_k_avx512)
X(cpuq_mul_mat_iq2_xs_q8_k_avx512)
X(cpuq_mul_mat_iq2_s_q8_k_avx512)
X(cpuq_mul_mat_iq3_xxs_q8_k_avx512)
X(cpuq_mul_mat_iq3_s_q8_k_avx512)
X(cpuq_mul_mat_iq1_s_q8_k_avx512)
X(cpuq_mul_mat_iq1_m_q8_k_avx512)
#undef X
static uint64_t st; /* check_seed(): fresh each run, TANDEM_TEST_SEED to repeat one */
static uint32_t rnd(void)
{
    st = st * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(st >> 33);
}
static float frand(void) { return (float)rnd() / 2147483648.0f - 1.0f; }
static int check(const char *nm, mm_fn f, int type, int K, int NR, int NT, int exact)
{
    char err[ERR_LEN];
    const struct cpuq_ops *ref;
    cpuq_ops_get(CPUQ_ISA_SCALAR, &ref, err);
    struct mm_case mc;
    if (mm_case_make(&mc, ref, type, K, NR, NT, frand)) {
        printf("%s: out of memory\n", nm);
        return 1;
    }
    float *y = malloc(sizeof(float) * NR * NT), *yr = mc.yr, *mag = mc.mag;
    if (!y) {
        mm_case_free(&mc);
        return 1;
    }
    int bad = 0;
    for (int ntok = 1; ntok <= NT; ntok += (ntok < 20 ? 1 : 7)) {
        for (int i = 0; i < NT * NR; i++) y[i] = NAN;
        f(K, mc.wq, mc.wrb, NR, mc.aq, mc.arb, ntok, y, NR);
        double worst = 0;
        for (int t = 0; t < NT; t++)
            for (int r = 0; r < NR; r++) {
                if (t >= ntok) {
                    if (!isnan(y[t * NR + r])) {
                        printf("%s: wrote past ntok %d (t %d r %d)\n", nm, ntok, t, r);
                        bad = 1;
                    }
                    continue;
                }
                double e = fabs(y[t * NR + r] - yr[t * NR + r]),
                       tol = exact ? 0 : 2e-6 * mag[t * NR + r] + 1e-6;
                if (!(e <= tol)) {
                    if (!bad)
                        printf("%s K %d NR %d ntok %d: y[%d][%d] = %.9g ref %.9g\n", nm, K, NR,
                               ntok, t, r, y[t * NR + r], yr[t * NR + r]);
                    bad = 1;
                }
                if (tol > 0 && e / tol > worst) worst = e / tol;
            }
        if (bad) break;
    }
    printf("%-28s K %5d NR %3d NT %3d: %s\n", nm, K, NR, NT, bad ? "FAIL" : "ok");
    free(y);
    mm_case_free(&mc);
    return bad;
}
int main(int argc, char **argv)
{
    /* the amx column as dispatch.c builds it (the AMX kernels' small-count fallbacks included) */
    static struct cpuq_ops amx;
    for (int t = 0; t < QTYPE_COUNT_; t++) amx.type[t].vec_dot_type = -1;
    cpuq__fill_scalar(&amx);
    cpuq__fill_avx2(&amx);
    cpuq__fill_avx512(&amx);
    cpuq__fill_amx(&amx);

    st = check_seed();
    int bad = 0;
    const char *only = argc > 1 ? argv[1] : NULL;
#define T(nm, f, type, K, NR, NT)                                                                  \
    if (!only || strstr(nm, only)) bad |= check(nm, f, type, K, NR, NT, 0);
#define TX(nm, f, type, K, NR, NT)                                                                 \
    if (!only || strstr(nm, only)) bad |= check(nm, f, type, K, NR, NT, 1);
    T("q4_K amx", cpuq_mul_mat_q4_k_q8_k_amx, QTYPE_Q4_K, 2560, 37, 150)
    T("q5_K amx", cpuq_mul_mat_q5_k_q8_k_amx, QTYPE_Q5_K, 2560, 37, 150)
    T("q6_K amx", cpuq_mul_mat_q6_k_q8_k_amx, QTYPE_Q6_K, 2560, 37, 150)
    T("iq4_xs amx", cpuq_mul_mat_iq4_xs_q8_k_amx, QTYPE_IQ4_XS, 2560, 37, 150)
    T("q8_0 amx", cpuq_mul_mat_q8_0_q8_0_amx, QTYPE_Q8_0, 2560, 37, 150)
    T("q8_0 amx odd", cpuq_mul_mat_q8_0_q8_0_amx, QTYPE_Q8_0, 2080, 16, 40)
    T("q8_0 amx small", cpuq_mul_mat_q8_0_q8_0_amx, QTYPE_Q8_0, 96, 5, 20)
    T("q4_K amx after q8_0", cpuq_mul_mat_q4_k_q8_k_amx, QTYPE_Q4_K, 1024, 21, 40)
    T("q4_K rows16", cpuq_mul_mat_q4_k_q8_k_rows16, QTYPE_Q4_K, 2560, 37, 40)
    T("q6_K rows16", cpuq_mul_mat_q6_k_q8_k_rows16, QTYPE_Q6_K, 2560, 37, 40)
    T("q5_K rows16", cpuq_mul_mat_q5_k_q8_k_rows16, QTYPE_Q5_K, 2560, 37, 40)
    T("iq4_xs rows16", cpuq_mul_mat_iq4_xs_q8_k_rows16, QTYPE_IQ4_XS, 2560, 37, 40)
    T("q4_K amx column", amx.type[QTYPE_Q4_K].mul_mat, QTYPE_Q4_K, 1024, 21, 40)
    T("q5_K amx column", amx.type[QTYPE_Q5_K].mul_mat, QTYPE_Q5_K, 1024, 21, 40)
    T("q6_K amx column", amx.type[QTYPE_Q6_K].mul_mat, QTYPE_Q6_K, 1024, 21, 40)
    T("q8_0 amx column", amx.type[QTYPE_Q8_0].mul_mat, QTYPE_Q8_0, 1024, 21, 40)
    T("iq4_xs amx column", amx.type[QTYPE_IQ4_XS].mul_mat, QTYPE_IQ4_XS, 1024, 21, 40)
    TX("iq2_xxs avx512", cpuq_mul_mat_iq2_xxs_q8_k_avx512, QTYPE_IQ2_XXS, 2560, 37, 150)
    TX("iq2_xs avx512", cpuq_mul_mat_iq2_xs_q8_k_avx512, QTYPE_IQ2_XS, 2560, 37, 150)
    TX("iq2_s avx512", cpuq_mul_mat_iq2_s_q8_k_avx512, QTYPE_IQ2_S, 2560, 37, 150)
    TX("iq3_xxs avx512", cpuq_mul_mat_iq3_xxs_q8_k_avx512, QTYPE_IQ3_XXS, 2560, 37, 150)
    TX("iq3_s avx512", cpuq_mul_mat_iq3_s_q8_k_avx512, QTYPE_IQ3_S, 2560, 37, 150)
    TX("iq1_s avx512", cpuq_mul_mat_iq1_s_q8_k_avx512, QTYPE_IQ1_S, 2560, 37, 150)
    TX("iq1_m avx512", cpuq_mul_mat_iq1_m_q8_k_avx512, QTYPE_IQ1_M, 2560, 37, 150)
    TX("iq2_xxs amx column", amx.type[QTYPE_IQ2_XXS].mul_mat, QTYPE_IQ2_XXS, 1024, 21, 40)
    TX("iq1_m amx column", amx.type[QTYPE_IQ1_M].mul_mat, QTYPE_IQ1_M, 1024, 21, 40)
    printf(bad ? "FAILED\n" : "ALL OK\n");
    return bad;
}
