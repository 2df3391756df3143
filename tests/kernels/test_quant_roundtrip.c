/* test_quant_roundtrip.c - every GGML format on random inputs, and every ISA against the scalar
 * reference.
 *
 * Inputs are fresh each run (check_seed(); replay with TANDEM_TEST_SEED): Gaussian-like values
 * with a random scale per row, occasional outliers, plus a few structured blocks (constant, one
 * spike, tiny, huge). Never all zeros.
 *
 * 1. Round trip (scalar): quantize -> dequantize keeps the relative RMS error under a per-format
 *    ceiling, and the quantizer is deterministic.
 * 2. Dot consistency (scalar): vec_dot(w, a) equals the double-precision dot of the dequantized
 *    w and dequantized activation row, to float rounding.
 * 3. ISA comparison: for every ISA this CPU supports (cpuq_ops_get succeeds), every type's
 *    to_float and from_float are bitwise equal to the scalar reference, vec_dot and
 *    cpuq_matmul / cpuq_matmul_rows (which use the optional mul_mat kernel) agree with the scalar
 *    ones to 1e-5 relative (error / sum |w_i a_i|). Buffers are deliberately misaligned and
 *    lengths vary, so SIMD tails and unaligned loads are exercised (buffers keep only the
 *    alignment of their type, cpuq_type_align()). This is the test that
 *    validates the SIMD kernels of kernels/cpu/<isa>/.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "kernels/cpu/cpuq.h"
#include "kernels/cpu/fpconv.h"
#include "kernels/cpu/qblocks.h"
#include "tests/check.h"

struct fmt {
    int type;
    double ceiling; /* max relative RMS error of a quantize -> dequantize round trip */
};

/* Ceilings for N(0, s^2) data with 0.5% outliers at 8x: about 1.5x the worst relative RMS
 * error seen over 150 runs of 20 rows each (outliers dominate the block formats' error); for the
 * grid i-quants (IQ2_XXS .. IQ1_M, tandem's own encoder, not ggml's) about 1.25x the worst of
 * 15 runs. */
static const struct fmt fmts[] = {
    {QTYPE_F32, 0},        {QTYPE_F16, 1e-3},     {QTYPE_BF16, 5e-3},   {QTYPE_Q4_0, 0.32},
    {QTYPE_Q4_1, 0.21},    {QTYPE_Q5_0, 0.18},    {QTYPE_Q5_1, 0.10},   {QTYPE_Q8_0, 0.02},
    {QTYPE_Q8_1, 0.02},    {QTYPE_Q2_K, 0.80},    {QTYPE_Q3_K, 0.35},   {QTYPE_Q4_K, 0.17},
    {QTYPE_Q5_K, 0.09},    {QTYPE_Q6_K, 0.055},   {QTYPE_Q8_K, 0.05},   {QTYPE_IQ4_NL, 0.25},
    {QTYPE_IQ4_XS, 0.21},  {QTYPE_IQ2_XXS, 0.66}, {QTYPE_IQ2_XS, 0.52}, {QTYPE_IQ2_S, 0.52},
    {QTYPE_IQ3_XXS, 0.33}, {QTYPE_IQ3_S, 0.25},   {QTYPE_IQ1_S, 0.78},  {QTYPE_IQ1_M, 0.63},
};
#define NFMT (sizeof fmts / sizeof fmts[0])

static uint64_t rng_state;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static double urand(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }
static float nrand(void)
{
    double u1 = urand(), u2 = urand();
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
}

/* n random values: N(0, s^2) with s random per call, 0.5% outliers at 8x. */
static void fill_random(float *x, int64_t n)
{
    float s = (float)exp(urand() * 6 - 3);
    for (int64_t i = 0; i < n; i++) {
        x[i] = nrand() * s;
        if (rnd() % 200 == 0) x[i] *= 8;
    }
}

/* overwrite a few 32-element blocks with structured cases quantizers must handle */
static void add_structured(float *x, int64_t n, int type)
{
    if (n < 256) return;
    int64_t b = (int64_t)(rnd() % (uint64_t)(n / 32)) * 32;
    int c = (int)(rnd() % 5);
    if (c == 3 && type == QTYPE_F16) c = 4; /* x 1e4 would overflow f16 */
    switch (c) {
    case 0:
        for (int j = 0; j < 32; j++) x[b + j] = 0.75f;
        break; /* constant */
    case 1:
        for (int j = 0; j < 32; j++) x[b + j] = j == 7 ? -3.0f : 0.0f;
        break; /* one spike */
    case 2:
        for (int j = 0; j < 32; j++) x[b + j] *= 1e-20f;
        break; /* tiny */
    case 3:
        for (int j = 0; j < 32; j++) x[b + j] *= 1e4f;
        break; /* huge */
    default:
        for (int j = 0; j < 32; j++) x[b + j] = fabsf(x[b + j]);
        break; /* one-signed */
    }
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n + 64);
    CHECK(p);
    return p;
}

/* a pointer off bytes past a malloc'd buffer start (off < 64): misaligned on purpose */
static void *mis(void *p, int off) { return (char *)p + off; }

static int blck(int type) { return qtype_traits(type)->blck; }

/* length: a multiple of the block (and of 256 for K-quants), varied to hit SIMD tails */
static int64_t pick_len(int type)
{
    static const int mult[] = {1, 2, 3, 5, 8, 9, 17};
    int b = blck(type) < 32 ? 32 : blck(type);
    return (int64_t)b * mult[rnd() % 7];
}

/* ---- 1 + 2: scalar round trip and dot consistency */
static void check_scalar(const struct cpuq_ops *o)
{
    for (size_t f = 0; f < NFMT; f++) {
        const int type = fmts[f].type;
        const struct cpuq_type_ops *to = &o->type[type];
        CHECK(to->to_float && to->from_float);
        double worst = 0;
        for (int iter = 0; iter < 20; iter++) {
            const int64_t n = pick_len(type);
            const size_t rb = cpuq_row_size(type, n);
            float *x = xmalloc(sizeof(float) * (size_t)n), *y = xmalloc(sizeof(float) * (size_t)n);
            uint8_t *q = xmalloc(rb), *q2 = xmalloc(rb);
            fill_random(x, n);
            to->from_float(x, q, n);
            to->from_float(x, q2, n);
            CHECK(memcmp(q, q2, rb) == 0); /* deterministic */
            to->to_float(q, y, n);
            double se = 0, sx = 0;
            for (int64_t i = 0; i < n; i++) {
                se += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
                sx += (double)x[i] * x[i];
            }
            double rel = sqrt(se / sx);
            if (rel > worst) worst = rel;

            if (to->vec_dot) {
                /* dot consistency against the dequantized operands */
                const int vt = to->vec_dot_type;
                const size_t ab = cpuq_row_size(vt, n);
                float *a = xmalloc(sizeof(float) * (size_t)n),
                      *ad = xmalloc(sizeof(float) * (size_t)n);
                uint8_t *aq = xmalloc(ab);
                fill_random(a, n);
                o->type[vt].from_float(a, aq, n);
                o->type[vt].to_float(aq, ad, n);
                double exact = 0, mag = 0;
                for (int64_t i = 0; i < n; i++) {
                    exact += (double)y[i] * ad[i];
                    mag += fabs((double)y[i] * ad[i]);
                }
                /* Q8_1 keeps s = d * sum(q) as f16, so the min term m * s of Q4_1/Q5_1 carries
                 * an f16 rounding (ggml's format): allow it. Both weight blocks start d, m. */
                double tol = 1e-5 * mag + 1e-30;
                if (vt == QTYPE_Q8_1) {
                    const size_t wb = (size_t)qtype_traits(type)->type_size;
                    for (int64_t b = 0; b < n / QK8_1; b++) {
                        uint16_t m, s16;
                        memcpy(&m, q + b * wb + 2, 2);
                        memcpy(&s16, aq + b * sizeof(struct block_q8_1) + 2, 2);
                        tol += fabs((double)fp_f16_to_f32(m) * fp_f16_to_f32(s16)) / 1024;
                    }
                }
                float s = NAN;
                to->vec_dot(n, &s, q, aq);
                if (!(fabs(s - exact) <= tol)) {
                    fprintf(stderr, "%s: vec_dot %.9g vs dequantized dot %.9g (n=%lld)\n",
                            qtype_name(type), s, exact, (long long)n);
                    CHECK(0);
                }
                free(a);
                free(ad);
                free(aq);
            }
            free(x);
            free(y);
            free(q);
            free(q2);
        }
        printf("  %-7s round-trip rel RMS error %.4f (ceiling %.4f)\n", qtype_name(type), worst,
               fmts[f].ceiling);
        if (!(worst <= fmts[f].ceiling)) {
            fprintf(stderr, "%s: round-trip error %.5f above ceiling %.5f\n", qtype_name(type),
                    worst, fmts[f].ceiling);
            CHECK(0);
        }
    }
}

/* ---- 3: one ISA against the scalar reference */
static void check_isa(const struct cpuq_ops *ref, const struct cpuq_ops *o)
{
    for (size_t f = 0; f < NFMT; f++) {
        const int type = fmts[f].type;
        const struct cpuq_type_ops *rt = &ref->type[type], *ot = &o->type[type];
        CHECK(ot->to_float && ot->from_float);
        CHECK_EQ(ot->vec_dot_type, rt->vec_dot_type);
        CHECK_EQ(ot->vec_dot != NULL, rt->vec_dot != NULL);
        for (int iter = 0; iter < 12; iter++) {
            const int64_t n = pick_len(type);
            const size_t rb = cpuq_row_size(type, n);
            /* misaligned for SIMD, but keeping the type's own alignment (as GGUF rows do) */
            const int off = (int)cpuq_type_align(type) * (1 + (int)(rnd() % 7));
            float *xb = xmalloc(sizeof(float) * (size_t)n);
            fill_random(xb, n);
            add_structured(xb, n, type);
            /* misaligned float input too (by whole floats, as real callers may do) */
            float *xf = xmalloc(sizeof(float) * (size_t)(n + 3));
            float *x = xf + rnd() % 4;
            memcpy(x, xb, sizeof(float) * (size_t)n);
            uint8_t *qr_buf = xmalloc(rb), *qo_buf = xmalloc(rb);
            uint8_t *qr = mis(qr_buf, off), *qo = mis(qo_buf, off);
            rt->from_float(x, qr, n);
            memset(qo, 0xa5, rb);
            ot->from_float(x, qo, n);
            if (memcmp(qr, qo, rb) != 0) {
                fprintf(stderr, "%s/%s: from_float differs from scalar (n=%lld)\n", o->isa_name,
                        qtype_name(type), (long long)n);
                CHECK(0);
            }
            float *yr = xmalloc(sizeof(float) * (size_t)n),
                  *yo_buf = xmalloc(sizeof(float) * (size_t)(n + 1));
            float *yo = yo_buf + 1;
            rt->to_float(qr, yr, n);
            ot->to_float(qr, yo, n);
            if (memcmp(yr, yo, sizeof(float) * (size_t)n) != 0) {
                fprintf(stderr, "%s/%s: to_float differs from scalar (n=%lld)\n", o->isa_name,
                        qtype_name(type), (long long)n);
                CHECK(0);
            }
            if (rt->vec_dot) {
                const int vt = rt->vec_dot_type;
                const size_t ab = cpuq_row_size(vt, n);
                float *a = xmalloc(sizeof(float) * (size_t)n),
                      *ad = xmalloc(sizeof(float) * (size_t)n);
                uint8_t *ar_buf = xmalloc(ab), *ao_buf = xmalloc(ab);
                const int aoff = (int)cpuq_type_align(vt) * (1 + (int)(rnd() % 7));
                uint8_t *ar = mis(ar_buf, aoff), *ao = mis(ao_buf, aoff);
                fill_random(a, n);
                ref->type[vt].from_float(a, ar, n);
                o->type[vt].from_float(a, ao, n);
                CHECK(memcmp(ar, ao, ab) == 0); /* activation quantizer: bitwise too */
                ref->type[vt].to_float(ar, ad, n);
                double mag = 0;
                for (int64_t i = 0; i < n; i++) mag += fabs((double)yr[i] * ad[i]);
                float sr = NAN, so = NAN;
                rt->vec_dot(n, &sr, qr, ar);
                ot->vec_dot(n, &so, qr, ar);
                if (!(fabs((double)sr - so) <= 1e-5 * mag + 1e-30) &&
                    !(sr == so || (isnan(sr) && isnan(so)))) {
                    fprintf(stderr, "%s/%s: vec_dot %.9g vs scalar %.9g (n=%lld, sum|wa| %.3g)\n",
                            o->isa_name, qtype_name(type), so, sr, (long long)n, mag);
                    CHECK(0);
                }
                free(a);
                free(ad);
                free(ar_buf);
                free(ao_buf);
            }
            free(xb);
            free(xf);
            free(qr_buf);
            free(qo_buf);
            free(yr);
            free(yo_buf);
        }
    }
}

/* cpuq_matmul and cpuq_matmul_rows (sub-ranges) of an ISA against the scalar table */
static void check_matmul(const struct cpuq_ops *ref, const struct cpuq_ops *o)
{
    for (size_t f = 0; f < NFMT; f++) {
        const int type = fmts[f].type;
        if (!ref->type[type].vec_dot) continue;
        for (int iter = 0; iter < 4; iter++) {
            const int64_t cols = pick_len(type), rows = 1 + (int64_t)(rnd() % 37);
            const int64_t ntok = 1 + (int64_t)(rnd() % (iter == 0 ? 1 : 17));
            const size_t rb = cpuq_row_size(type, cols);
            float *w = xmalloc(sizeof(float) * (size_t)(rows * cols));
            float *x = xmalloc(sizeof(float) * (size_t)(ntok * cols));
            fill_random(w, rows * cols);
            fill_random(x, ntok * cols);
            uint8_t *wq = xmalloc(rb * (size_t)rows);
            cpuq_quantize_rows(ref, type, w, wq, rows, cols);
            const size_t as = cpuq_act_size(o, type, cols, ntok);
            CHECK(as > 0);
            CHECK_EQ(as, cpuq_act_size(ref, type, cols, ntok));
            void *act_r = xmalloc(as), *act_o = xmalloc(as);
            float *yr = xmalloc(sizeof(float) * (size_t)(rows * ntok));
            float *yo = xmalloc(sizeof(float) * (size_t)(rows * ntok));
            CHECK_EQ(cpuq_matmul(ref, type, wq, rb, rows, cols, x, ntok, yr, act_r), 0);
            CHECK_EQ(cpuq_matmul(o, type, wq, rb, rows, cols, x, ntok, yo, act_o), 0);
            CHECK(memcmp(act_r, act_o, as) == 0);
            /* plus a sub-range through matmul_rows (the worker-pool entry), with a wider ldy */
            const int64_t r0 = (int64_t)(rnd() % (uint64_t)rows),
                          r1 = r0 + 1 + (int64_t)(rnd() % (uint64_t)(rows - r0));
            const int64_t ldy = rows + 3;
            float *ys = xmalloc(sizeof(float) * (size_t)(ldy * ntok));
            for (int64_t i = 0; i < ldy * ntok; i++) ys[i] = -12345.0f;
            cpuq_matmul_rows(o, type, wq, rb, r0, r1, cols, act_o, ntok, ys, ldy);
            float *wd = xmalloc(sizeof(float) * (size_t)cols),
                  *ad = xmalloc(sizeof(float) * (size_t)cols);
            const int vt = ref->type[type].vec_dot_type;
            const size_t ab = cpuq_row_size(vt, cols);
            for (int64_t t = 0; t < ntok; t++) {
                ref->type[vt].to_float((char *)act_r + (size_t)t * ab, ad, cols);
                for (int64_t r = 0; r < rows; r++) {
                    ref->type[type].to_float(wq + (size_t)r * rb, wd, cols);
                    double mag = 0;
                    for (int64_t k = 0; k < cols; k++) mag += fabs((double)wd[k] * ad[k]);
                    double tol = 1e-5 * mag + 1e-30;
                    double e1 = fabs((double)yr[t * rows + r] - yo[t * rows + r]);
                    if (!(e1 <= tol)) {
                        fprintf(stderr,
                                "%s/%s matmul [t=%lld r=%lld] %.9g vs scalar %.9g "
                                "(rows %lld cols %lld ntok %lld)\n",
                                o->isa_name, qtype_name(type), (long long)t, (long long)r,
                                yo[t * rows + r], yr[t * rows + r], (long long)rows,
                                (long long)cols, (long long)ntok);
                        CHECK(0);
                    }
                    float v = ys[t * ldy + r];
                    if (r >= r0 && r < r1) {
                        CHECK(fabs((double)v - yr[t * rows + r]) <= tol);
                    } else {
                        CHECK(v == -12345.0f); /* rows outside the range untouched */
                    }
                }
            }
            free(w);
            free(x);
            free(wq);
            free(act_r);
            free(act_o);
            free(yr);
            free(yo);
            free(ys);
            free(wd);
            free(ad);
        }
    }
}

int main(void)
{
    rng_state = check_seed() | 1;
    const struct cpuq_ops *ref;
    char err[ERR_LEN];
    CHECK_EQ(cpuq_ops_get(CPUQ_ISA_SCALAR, &ref, err), 0);
    printf("scalar reference:\n");
    check_scalar(ref);
    check_matmul(ref, ref);
    for (int isa = CPUQ_ISA_SCALAR + 1; isa < CPUQ_ISA_COUNT; isa++) {
        const struct cpuq_ops *o;
        if (cpuq_ops_get(isa, &o, err) != 0) {
            printf("%s: not supported here (%s)\n", cpuq_isa_name(isa), err);
            continue;
        }
        check_isa(ref, o);
        check_matmul(ref, o);
        printf("%s: every type matches the scalar reference\n", o->isa_name);
    }
    return 0;
}
