/* test_fp8.c - FP8 block-scaled weights on the CPU (kernels/cpu/fp8.h): activation quantization
 * against its definition, dequantization, and the block linear of every ISA this CPU runs against
 * the scalar reference (bitwise) and against a float64 direct computation (tolerance). Shapes
 * include partial 128-blocks in rows and columns. Random inputs, fresh seed each run. */
#include "../check.h"
#include "common/err.h"
#include "kernels/cpu/cpuq.h"
#include "kernels/cpu/fp8.h"
#include "kernels/cpu/fpconv.h"

#include <stdint.h>

static uint64_t rng_state;
static uint32_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}
static float frand(void) { return (float)rnd() / 2147483648.0f - 1.0f; } /* [-1, 1) */

/* a random non-NaN e4m3 byte */
static uint8_t rand_e4m3(void)
{
    for (;;) {
        uint8_t b = (uint8_t)rnd();
        if ((b & 0x7f) != 0x7f) return b;
    }
}

static void check_act_quant(void)
{
    float x[300], qa[300], s[3];
    for (int i = 0; i < 300; i++) x[i] = frand() * (i < 128 ? 100.0f : 0.01f);
    for (int i = 256; i < 300; i++) x[i] = 0; /* all-zero block: scale clamps to 1e-4/448 */
    cpuq_fp8_act_quant(300, x, qa, s);
    CHECK_NEAR(s[2], 1e-4f / 448.0f, 0);
    for (int b = 0; b < 3; b++) {
        float amax = 0;
        for (int i = b * 128; i < 300 && i < b * 128 + 128; i++) amax = fmaxf(amax, fabsf(x[i]));
        CHECK_NEAR(s[b], fmaxf(amax, 1e-4f) / 448.0f, 0);
        for (int i = b * 128; i < 300 && i < b * 128 + 128; i++) {
            CHECK(fabsf(qa[i]) <= 448.0f);
            CHECK_EQ(fp_f32_to_e4m3(qa[i]), fp_f32_to_e4m3(x[i] / s[b]));
            CHECK_NEAR(qa[i] * s[b], x[i], fabsf(x[i]) * 0.0625 + s[b] * 0.002);
        }
    }
}

static void check_shape(int64_t rows, int64_t cols, int ntok)
{
    int64_t nbr = cpuq_fp8_nblk(rows), nbc = cpuq_fp8_nblk(cols);
    uint8_t *w = malloc((size_t)(rows * cols));
    float *scale = malloc(sizeof(float) * (size_t)(nbr * nbc));
    float *x = malloc(sizeof(float) * (size_t)(ntok * cols));
    float *qa = malloc(sizeof(float) * (size_t)(ntok * cols));
    float *as = malloc(sizeof(float) * (size_t)(ntok * nbc));
    float *wd = malloc(sizeof(float) * (size_t)(rows * cols));
    float *yref = malloc(sizeof(float) * (size_t)(ntok * rows));
    float *y = malloc(sizeof(float) * (size_t)(ntok * rows));
    CHECK(w && scale && x && qa && as && wd && yref && y);
    for (int64_t i = 0; i < rows * cols; i++) w[i] = rand_e4m3();
    for (int64_t i = 0; i < nbr * nbc; i++) scale[i] = (0.5f + (frand() + 1.0f)) * 1e-3f;
    for (int64_t i = 0; i < ntok * cols; i++) x[i] = frand() * (1.0f + (float)(i % 7));
    for (int t = 0; t < ntok; t++)
        cpuq_fp8_act_quant(cols, x + t * cols, qa + t * cols, as + t * nbc);

    /* dequant: definition */
    cpuq_fp8_dequant(w, scale, rows, cols, 0, rows, wd);
    for (int i = 0; i < 50; i++) {
        int64_t r = rnd() % rows, c = rnd() % cols;
        CHECK_NEAR(wd[r * cols + c],
                   fp_e4m3_to_f32(w[r * cols + c]) * scale[(r / 128) * nbc + c / 128], 0);
    }

    struct cpuq_fp8_kern ref;
    char err[ERR_LEN];
    CHECK_EQ(cpuq_fp8_kern_get(CPUQ_ISA_SCALAR, &ref, err), 0);
    cpuq_fp8_linear(&ref, w, scale, rows, cols, 0, rows, ntok, qa, as, yref, rows);

    /* float64 direct computation with the same quantized activations */
    for (int t = 0; t < ntok; t++)
        for (int64_t r = 0; r < rows; r++) {
            double acc = 0, mag = 0;
            for (int64_t c = 0; c < cols; c++) {
                double p = (double)wd[r * cols + c] * qa[t * cols + c] * as[t * nbc + c / 128];
                acc += p;
                mag += fabs(p);
            }
            CHECK_NEAR(yref[t * rows + r], acc, 1e-5 * mag + 1e-30);
        }

    /* every ISA this CPU runs: bitwise equal to the scalar reference, also on a row sub-range */
    for (int isa = CPUQ_ISA_AVX2; isa < CPUQ_ISA_COUNT; isa++) {
        const struct cpuq_ops *o;
        if (cpuq_ops_get(isa, &o, err) != 0) continue;
        struct cpuq_fp8_kern k;
        CHECK_EQ(cpuq_fp8_kern_get(isa, &k, err), 0);
        for (int64_t i = 0; i < ntok * rows; i++) y[i] = NAN;
        int64_t r0 = rows > 3 ? 1 : 0;
        cpuq_fp8_linear(&k, w, scale, rows, cols, r0, rows, ntok, qa, as, y, rows);
        for (int t = 0; t < ntok; t++)
            for (int64_t r = r0; r < rows; r++)
                if (memcmp(&y[t * rows + r - r0], &yref[t * rows + r], 4) != 0) {
                    fprintf(stderr, "%s rows %lld cols %lld tok %d: y[%d][%lld] %.9g != ref %.9g\n",
                            k.isa, (long long)rows, (long long)cols, ntok, t, (long long)r,
                            y[t * rows + r - r0], yref[t * rows + r]);
                    exit(1);
                }
    }
    free(w);
    free(scale);
    free(x);
    free(qa);
    free(as);
    free(wd);
    free(yref);
    free(y);
}

/* every ISA's act_quant is bitwise equal to the scalar reference, subnormal range included */
static void check_act_quant_isa(void)
{
    enum { N = 1000 };
    static float x[N], qa[N], qr[N], s[8], sr[8];
    char err[ERR_LEN];
    for (int isa = CPUQ_ISA_AVX2; isa < CPUQ_ISA_COUNT; isa++) {
        const struct cpuq_ops *o;
        if (cpuq_ops_get(isa, &o, err) != 0) continue;
        struct cpuq_fp8_kern k;
        CHECK_EQ(cpuq_fp8_kern_get(isa, &k, err), 0);
        int lens[] = {1, 16, 127, 128, 129, 300, N};
        for (int rep = 0; rep < 20; rep++)
            for (int li = 0; li < 7; li++) {
                int n = lens[li];
                for (int i = 0; i < n; i++) {
                    float mag = (rnd() % 4 == 0) ? 1000.0f : (rnd() % 3 == 0 ? 1e-3f : 1.0f);
                    x[i] = frand() * mag;
                    if (rnd() % 50 == 0) x[i] = 0.0f;
                    if (rnd() % 97 == 0) x[i] = -0.0f;
                }
                if (rep == 0) memset(x, 0, sizeof(float) * (size_t)n); /* all-zero blocks */
                cpuq_fp8_act_quant(n, x, qr, sr);
                k.act_quant(n, x, qa, s);
                if (memcmp(qa, qr, sizeof(float) * (size_t)n) != 0 ||
                    memcmp(s, sr, sizeof(float) * (size_t)cpuq_fp8_nblk(n)) != 0) {
                    for (int i = 0; i < n; i++)
                        if (memcmp(&qa[i], &qr[i], 4) != 0) {
                            fprintf(stderr, "%s act_quant n %d: qa[%d] = %.9g, ref %.9g (x %.9g)\n",
                                    k.isa, n, i, qa[i], qr[i], x[i]);
                            break;
                        }
                    exit(1);
                }
            }
    }
}

int main(void)
{
    rng_state = check_seed();
    check_act_quant();
    check_act_quant_isa();
    check_shape(1, 128, 1);
    check_shape(130, 256, 3);
    check_shape(576, 512, 2); /* kv_a-like: partial row block */
    check_shape(200, 300, 5); /* partial column block */
    check_shape(64, 7168, 9);
    check_shape(37, 1000 + (int64_t)(rnd() % 200), 1 + (int)(rnd() % 8));
    return 0;
}
