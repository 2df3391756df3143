/* test_fp8.c - FP8 block-scaled weights on the CPU (kernels/cpu/fp8.h): activation quantization
 * against its definition, exact and ue8m0 (power-of-two scales, checked against 2^ceil(log2 s)
 * computed here with ldexp/log2 in double), every ISA's act_quant bitwise against the scalar one
 * in both modes, dequantization, and the block linear of every ISA this CPU runs against the
 * scalar reference (bitwise) and against a float64 direct computation (tolerance). Shapes include
 * partial 128-blocks in rows and columns. Random inputs, fresh seed each run. */
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
    cpuq_fp8_act_quant(300, x, qa, s, 0);
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

/* ue8m0: the scale is 2^ceil(log2(max(amax, 1e-4) / 448)) (the fp32 quotient, as DeepSeek's
 * act_quant computes it), taken here through log2/ldexp in double; q = e4m3(x / s). Blocks of
 * random magnitudes (2^-40 .. 2^20), all-zero blocks, and blocks whose max(amax, 1e-4) / 448 is
 * exactly a power of two or one ulp above one (where rounding up doubles the scale). */
static void check_act_quant_ue8m0(void)
{
    enum { N = 700 };
    static float x[N], qa[N], qe[N], s[8], se[8];
    int pow2_kept = 0, rounded = 0, differs = 0;
    for (int rep = 0; rep < 400; rep++) {
        int n = 1 + (int)(rnd() % N);
        for (int b0 = 0; b0 < n; b0 += 128) {
            int b1 = b0 + 128 < n ? b0 + 128 : n, kind = (int)(rnd() % 6);
            float mag = ldexpf(1.0f, (int)(rnd() % 61) - 40);
            for (int i = b0; i < b1; i++) x[i] = kind == 0 ? 0.0f : frand() * mag;
            if (kind >= 4) { /* |x| max = 448 * 2^k (exactly, or one ulp above) at a random spot */
                float p = 448.0f * ldexpf(1.0f, (int)(rnd() % 40) - 20);
                if (kind == 5) p = nextafterf(p, INFINITY);
                for (int i = b0; i < b1; i++) x[i] = fminf(fmaxf(x[i], -p), p);
                x[b0 + (int)(rnd() % (unsigned)(b1 - b0))] = rnd() % 2 ? p : -p;
            }
        }
        cpuq_fp8_act_quant(n, x, qa, s, 1);
        cpuq_fp8_act_quant(n, x, qe, se, 0);
        for (int b = 0; b < cpuq_fp8_nblk(n); b++) {
            int b0 = b * 128, b1 = b0 + 128 < n ? b0 + 128 : n;
            float amax = 0;
            for (int i = b0; i < b1; i++) amax = fmaxf(amax, fabsf(x[i]));
            float exact = fmaxf(amax, 1e-4f) / 448.0f;
            float want = (float)ldexp(1.0, (int)ceil(log2((double)exact)));
            if (memcmp(&s[b], &want, 4) != 0) {
                fprintf(stderr, "ue8m0: block %d amax %.9g: scale %.9g, want %.9g\n", b,
                        (double)amax, (double)s[b], (double)want);
                exit(1);
            }
            CHECK(s[b] >= exact && s[b] < 2.0f * exact);
            CHECK_NEAR(se[b], exact, 0); /* the exact mode is unchanged */
            pow2_kept += s[b] == exact;
            rounded += s[b] > exact;
            float qmax = 0;
            for (int i = b0; i < b1; i++) {
                float q = fp_e4m3_to_f32(fp_f32_to_e4m3((float)((double)x[i] / want)));
                if (memcmp(&qa[i], &q, 4) != 0) {
                    fprintf(stderr, "ue8m0: x[%d] = %.9g (s %.9g): q %.9g, want %.9g\n", i,
                            (double)x[i], (double)want, (double)qa[i], (double)q);
                    exit(1);
                }
                CHECK(fabsf(qa[i]) <= 448.0f);
                qmax = fmaxf(qmax, fabsf(qa[i]));
                /* the error bound of docs/numerics.md, both modes: 2^-4 |x| (e4m3 normals),
                 * 2^-10 s (subnormals; s < 2 s_exact in the ue8m0 mode) */
                CHECK(fabs((double)qa[i] * s[b] - x[i]) <=
                      fmax(fabs(x[i]) * 0x1p-4, s[b] * 0x1p-10) * (1 + 1e-6));
                CHECK(fabs((double)qe[i] * se[b] - x[i]) <=
                      fmax(fabs(x[i]) * 0x1p-4, se[b] * 0x1p-10) * (1 + 1e-6));
                differs += memcmp(&qa[i], &qe[i], 4) != 0;
            }
            if (amax >= 1e-4f) CHECK(qmax >= 224.0f); /* one bit of headroom at most */
        }
    }
    fprintf(stderr,
            "ue8m0: scales kept (already powers of two) %d, rounded up %d; %d codes "
            "differ from the exact-scale mode\n",
            pow2_kept, rounded, differs);
    CHECK(pow2_kept > 0 && rounded > 0 && differs > 0);
}

/* Informational (docs/numerics.md): the relative RMS error sqrt(sum (q s - x)^2 / sum x^2) of
 * both modes on 4000 blocks of 128 N(0, 1) values, and on blocks whose channel 0 is 100x larger
 * (an outlier channel, as LLM activations have): in the exact mode the block max maps to 448
 * itself (no error), with ue8m0 it is rounded like any other element. */
static void measure_ue8m0(void)
{
    for (int outlier = 0; outlier < 2; outlier++) {
        double e2[2] = {0, 0}, x2 = 0;
        float x[128], qa[128], s[1];
        for (int blk = 0; blk < 4000; blk++) {
            for (int i = 0; i < 128; i++) { /* Box-Muller */
                double u1 = (rnd() + 0.5) / 4294967296.0, u2 = rnd() / 4294967296.0;
                x[i] = (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
                if (outlier && i == 0) x[i] *= 100.0f;
                x2 += (double)x[i] * x[i];
            }
            for (int m = 0; m < 2; m++) {
                cpuq_fp8_act_quant(128, x, qa, s, m);
                for (int i = 0; i < 128; i++) {
                    double d = (double)qa[i] * s[0] - x[i];
                    e2[m] += d * d;
                }
            }
        }
        fprintf(stderr, "%s: relative RMS quantization error exact %.3g, ue8m0 %.3g\n",
                outlier ? "N(0,1) with a 100x channel" : "N(0,1) blocks", sqrt(e2[0] / x2),
                sqrt(e2[1] / x2));
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
        cpuq_fp8_act_quant(cols, x + t * cols, qa + t * cols, as + t * nbc, 0);

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

/* every ISA's act_quant is bitwise equal to the scalar reference, subnormal range included, with
 * exact and with ue8m0 scales */
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
        for (int rep = 0; rep < 40; rep++) /* odd reps: ue8m0 */
            for (int li = 0; li < 7; li++) {
                int n = lens[li];
                for (int i = 0; i < n; i++) {
                    float mag = (rnd() % 4 == 0) ? 1000.0f : (rnd() % 3 == 0 ? 1e-3f : 1.0f);
                    x[i] = frand() * mag;
                    if (rnd() % 50 == 0) x[i] = 0.0f;
                    if (rnd() % 97 == 0) x[i] = -0.0f;
                }
                if (rep == 0) memset(x, 0, sizeof(float) * (size_t)n); /* all-zero blocks */
                int ue8m0 = rep % 2;
                cpuq_fp8_act_quant(n, x, qr, sr, ue8m0);
                k.act_quant(n, x, qa, s, ue8m0);
                if (memcmp(qa, qr, sizeof(float) * (size_t)n) != 0 ||
                    memcmp(s, sr, sizeof(float) * (size_t)cpuq_fp8_nblk(n)) != 0) {
                    for (int i = 0; i < n; i++)
                        if (memcmp(&qa[i], &qr[i], 4) != 0) {
                            fprintf(stderr,
                                    "%s act_quant%s n %d: qa[%d] = %.9g, ref %.9g (x %.9g)\n",
                                    k.isa, ue8m0 ? " ue8m0" : "", n, i, qa[i], qr[i], x[i]);
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
    check_act_quant_ue8m0();
    measure_ue8m0();
    check_act_quant_isa();
    check_shape(1, 128, 1);
    check_shape(130, 256, 3);
    check_shape(576, 512, 2); /* kv_a-like: partial row block */
    check_shape(200, 300, 5); /* partial column block */
    check_shape(64, 7168, 9);
    check_shape(37, 1000 + (int64_t)(rnd() % 200), 1 + (int)(rnd() % 8));
    return 0;
}
