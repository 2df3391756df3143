/* test_mul_mat_tiles.c - every ISA column this CPU runs (AVX2, AVX-512, AMX) against the scalar
 * reference for the multi-token mul_mat of the MoE types (Q4_K, Q5_K, Q6_K, Q8_0, IQ4_XS and the
 * seven grid i-quants IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S) at
 * shapes that cross the AMX kernels' boundaries: 37 rows (a ragged 16-row tile), token counts
 * 1..150 (ragged 16-token tiles, the 128-token group), K = 2560 (several K chunks; Q8_0 also
 * 2080 = an odd number of blocks). Tolerance: fp32 rounding relative to the sum of |terms|, as
 * test_simd_kernels; the grid i-quants' kernels claim bit-identical results, so theirs must be
 * equal to the reference. Skips (77) where only the scalar column exists. */
#include "../check.h"
#include "common/err.h"
#include "kernels/cpu/cpuq.h"
#include "tests/kernels/mm_case.h"

#include <stdint.h>
#include <stdlib.h>

static uint64_t rng_state;
static uint32_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}
static float frand(void) { return (float)rnd() / 2147483648.0f - 1.0f; }

enum { NR = 37, NT = 150 };

static int check_type(const struct cpuq_ops *ref, const struct cpuq_ops *const *cols, int ncols,
                      int type, int K, int exact)
{
    struct mm_case mc;
    CHECK(mm_case_make(&mc, ref, type, K, NR, NT, frand) == 0);
    float *y = malloc(sizeof(float) * NR * NT), *yr = mc.yr, *mag = mc.mag;
    CHECK(y != NULL);
    int bad = 0;
    for (int c = 0; c < ncols && !bad; c++) {
        for (int ntok = 1; ntok <= NT && !bad; ntok += ntok < 20 ? 1 : 7) {
            for (int i = 0; i < NT * NR; i++) y[i] = NAN;
            cpuq_matmul_rows(cols[c], type, mc.wq, mc.wrb, 0, NR, K, mc.aq, ntok, y, NR);
            for (int t = 0; t < NT && !bad; t++)
                for (int r = 0; r < NR && !bad; r++) {
                    const float v = y[t * NR + r];
                    const float want = yr[t * NR + r];
                    if (t >= ntok ? !isnan(v)
                        : exact   ? !(v == want)
                                  : !(fabs(v - want) <= 2e-6 * mag[t * NR + r] + 1e-6)) {
                        fprintf(stderr, "%s %s K %d ntok %d: y[%d][%d] = %.9g, ref %.9g\n",
                                cols[c]->isa_name, qtype_name(type), K, ntok, t, r, v,
                                yr[t * NR + r]);
                        bad = 1;
                    }
                }
        }
        if (!bad) fprintf(stderr, "  %s %s K %d ok\n", cols[c]->isa_name, qtype_name(type), K);
    }
    free(y);
    mm_case_free(&mc);
    return bad;
}

int main(void)
{
    rng_state = check_seed();
    char err[ERR_LEN];
    const struct cpuq_ops *ref, *cols[CPUQ_ISA_COUNT];
    int ncols = 0;
    CHECK_EQ(cpuq_ops_get(CPUQ_ISA_SCALAR, &ref, err), 0);
    for (int isa = CPUQ_ISA_AVX2; isa < CPUQ_ISA_COUNT; isa++)
        if (cpuq_ops_get(isa, &cols[ncols], err) == 0) ncols++;
    if (ncols == 0) {
        fprintf(stderr, "no SIMD column on this CPU: skipped\n");
        return 77;
    }
    const int types[] = {QTYPE_Q4_K, QTYPE_Q5_K, QTYPE_Q6_K, QTYPE_Q8_0, QTYPE_IQ4_XS};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (check_type(ref, cols, ncols, types[i], 2560, 0)) return 1;
    if (check_type(ref, cols, ncols, QTYPE_Q8_0, 2080, 0)) return 1;
    const int grid[] = {QTYPE_IQ1_S, QTYPE_IQ1_M,   QTYPE_IQ2_XXS, QTYPE_IQ2_XS,
                        QTYPE_IQ2_S, QTYPE_IQ3_XXS, QTYPE_IQ3_S};
    for (size_t i = 0; i < sizeof grid / sizeof grid[0]; i++)
        if (check_type(ref, cols, ncols, grid[i], 2560, 1)) return 1;
    return 0;
}
