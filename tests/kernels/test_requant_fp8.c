/* test_requant_fp8.c - GGML / float weights re-quantized to FP8 e4m3 with 128 x 128 block scales
 * (kernels/cpu/requant_fp8.h).
 *
 * For every weight type with a quantizer and a dequantizer, on random weights of several shapes
 * (partial 128-blocks in rows and columns, one row, one block): quantize to the type, take the
 * type's exact dequantization G, requantize, and check
 *   - each block's scale is max(amax(G block) / 448, FLT_MIN) (1 for an all-zero block) and each
 *     byte is e4m3_rne_sat(G / scale), from a loop written here;
 *   - the FP8 dequantization D obeys, per element, |D - G| <= 2^-4 |G| + 2^-10 s (3 mantissa bits:
 *     half an ulp of a normal e4m3 value is at most 2^-4 of it; subnormals have a fixed step of
 *     2^-9, half of it 2^-10, in units of s), plus 2^-20 |G| for the fp32 division and product;
 *   - the result is bitwise the same on a pool of 3 threads and on the caller alone;
 *   - the fast e4m3 conversion (cpuq_e4m3_rne) equals fpconv.h's fp_f32_to_e4m3 on every rounding
 *     boundary, special values and random floats.
 * The relative L2 error ||D - G|| / ||G|| per type is printed for Gaussian weights and for
 * "realistic" ones (heavy tails, a few outlier columns 20x larger, rows of varied scale);
 * docs/numerics.md quotes these. Hostile input: NaN / Inf in F16, BF16, F32 weights and in a
 * Q8_0 block scale give ERR_FORMAT naming the row and column; bad shapes, strides and types give
 * ERR_INVAL / ERR_UNSUPPORTED. Fresh seed each run (TANDEM_TEST_SEED replays).
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "kernels/cpu/cpuq.h"
#include "kernels/cpu/fp8.h"
#include "kernels/cpu/fpconv.h"
#include "kernels/cpu/qtype.h"
#include "kernels/cpu/requant_fp8.h"
#include "kernels/cpu/wpool.h"
#include "tests/check.h"

static uint64_t rng_state;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double unif(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }
static float gauss(void)
{
    double u = unif(), v = unif();
    return (float)(sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v));
}

static const struct cpuq_ops *ops;
static struct wpool *pool;

/* weights: kind 0 Gaussian N(0, 1/cols); kind 1 heavy-tailed (Gaussian / sqrt of a chi-square
 * of 4 dof, i.e. Student t4) with rows of scale 2^[-2, 2] and 1% outlier columns x20 */
static void fill(float *w, int64_t rows, int64_t cols, int kind)
{
    float base = 1.0f / sqrtf((float)cols);
    char *outl = calloc((size_t)cols, 1);
    CHECK(outl);
    for (int64_t c = 0; kind && c < cols; c++) outl[c] = rnd() % 100 == 0;
    for (int64_t r = 0; r < rows; r++) {
        float rs = kind ? ldexpf(1.0f, (int)(rnd() % 5) - 2) : 1.0f;
        for (int64_t c = 0; c < cols; c++) {
            float x = gauss();
            if (kind) {
                float chi = 0;
                for (int i = 0; i < 4; i++) {
                    float g = gauss();
                    chi += g * g;
                }
                x /= sqrtf(chi / 4 + 1e-6f);
                if (outl[c]) x *= 20;
            }
            w[r * cols + c] = x * base * rs;
        }
    }
    free(outl);
}

/* relative L2 errors: FP8 vs the GGML dequantization; GGML and FP8 vs the original floats */
struct errs {
    double rq, ggml, total;
};

/* requant of a [rows, cols] weight of `type` */
static struct errs check_one(int type, int64_t rows, int64_t cols, int kind)
{
    size_t rb = cpuq_row_size(type, cols);
    CHECK(rb > 0);
    float *w = malloc((size_t)(rows * cols) * sizeof(float));
    float *g = malloc((size_t)(rows * cols) * sizeof(float));
    float *d = malloc((size_t)(rows * cols) * sizeof(float));
    uint8_t *src = malloc(rb * (size_t)rows + 16);
    int64_t nbr = cpuq_fp8_nblk(rows), nbc = cpuq_fp8_nblk(cols);
    uint8_t *q1 = malloc((size_t)(rows * cols)), *q2 = malloc((size_t)(rows * cols));
    float *s1 = malloc((size_t)(nbr * nbc) * sizeof(float)),
          *s2 = malloc((size_t)(nbr * nbc) * sizeof(float));
    CHECK(w && g && d && src && q1 && q2 && s1 && s2);
    fill(w, rows, cols, kind);
    if (rows > 3 && kind == 0) /* one all-zero block row segment: scale 1, bytes 0 */
        for (int64_t r = 0; r < rows && r < 128; r++)
            memset(w + r * cols, 0, (size_t)(cols < 128 ? cols : 128) * sizeof(float));
    cpuq_quantize_rows(ops, type, w, src, rows, cols);
    for (int64_t r = 0; r < rows; r++) ops->type[type].to_float(src + rb * r, g + r * cols, cols);
    struct cpuq_requant_src s = {
        .type = type, .data = src, .row_bytes = rb, .rows = rows, .cols = cols};
    char err[ERR_LEN] = "";
    memset(q1, 0x55, (size_t)(rows * cols));
    memset(q2, 0xaa, (size_t)(rows * cols));
    int rc = cpuq_requant_fp8(ops, pool, &s, q1, s1, err);
    if (rc)
        fprintf(stderr, "%s [%lld, %lld]: %s\n", qtype_name(type), (long long)rows, (long long)cols,
                err);
    CHECK_EQ(rc, 0);
    CHECK_EQ(cpuq_requant_fp8(ops, NULL, &s, q2, s2, err), 0);
    CHECK(memcmp(q1, q2, (size_t)(rows * cols)) == 0);
    CHECK(memcmp(s1, s2, (size_t)(nbr * nbc) * sizeof(float)) == 0);
    /* scales and bytes from a plain loop */
    for (int64_t br = 0; br < nbr; br++)
        for (int64_t bc = 0; bc < nbc; bc++) {
            float amax = 0;
            for (int64_t r = br * 128; r < rows && r < br * 128 + 128; r++)
                for (int64_t c = bc * 128; c < cols && c < bc * 128 + 128; c++)
                    amax = fmaxf(amax, fabsf(g[r * cols + c]));
            float sc = amax > 0 ? fmaxf(amax / 448.0f, FLT_MIN) : 1.0f;
            if (s1[br * nbc + bc] != sc) {
                fprintf(stderr, "%s block (%lld, %lld): scale %g, expected %g\n", qtype_name(type),
                        (long long)br, (long long)bc, (double)s1[br * nbc + bc], (double)sc);
                exit(1);
            }
            for (int64_t r = br * 128; r < rows && r < br * 128 + 128; r++)
                for (int64_t c = bc * 128; c < cols && c < bc * 128 + 128; c++)
                    CHECK_EQ(q1[r * cols + c], fp_f32_to_e4m3(g[r * cols + c] / sc));
        }
    cpuq_fp8_dequant(q1, s1, rows, cols, 0, rows, d);
    double num = 0, den = 0, ng = 0, nt = 0, dw = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            double gv = g[r * cols + c], dv = d[r * cols + c];
            double sc = s1[(r / 128) * nbc + c / 128];
            double bound = ldexp(fabs(gv), -4) + ldexp(sc, -10) + ldexp(fabs(gv), -20);
            if (!(fabs(dv - gv) <= bound)) {
                fprintf(stderr, "%s [%lld, %lld] at (%lld, %lld): %.9g vs %.9g, bound %.3g\n",
                        qtype_name(type), (long long)rows, (long long)cols, (long long)r,
                        (long long)c, dv, gv, bound);
                exit(1);
            }
            double wv = w[r * cols + c];
            num += (dv - gv) * (dv - gv);
            den += gv * gv;
            ng += (gv - wv) * (gv - wv);
            nt += (dv - wv) * (dv - wv);
            dw += wv * wv;
        }
    free(w);
    free(g);
    free(d);
    free(src);
    free(q1);
    free(q2);
    free(s1);
    free(s2);
    struct errs e = {den > 0 ? sqrt(num / den) : 0, dw > 0 ? sqrt(ng / dw) : 0,
                     dw > 0 ? sqrt(nt / dw) : 0};
    return e;
}

static int usable(int t)
{
    return t != QTYPE_F8_E4M3 && qtype_traits(t) && ops->type[t].to_float &&
           ops->type[t].from_float;
}

static void check_types(void)
{
    fprintf(stderr, "relative L2 errors, Gaussian | realistic weights: FP8 vs the GGML "
                    "dequantization; GGML vs the original floats; FP8 vs the original floats\n");
    for (int t = 0; t < QTYPE_COUNT_; t++) {
        if (!usable(t)) continue;
        int64_t bl = qtype_traits(t)->blck;
        int64_t unit = bl > 1 ? bl : 1;
        /* shapes: one row, partial row and column blocks, kv_a-like 576 rows, random */
        const int64_t shapes[][2] = {
            {1, 256},       {130, 256},
            {576, 512},     {200, 1280},
            {128, 128 * 3}, {1 + (int64_t)(rnd() % 300), 256 * (1 + (int64_t)(rnd() % 6))}};
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            int64_t cols = shapes[i][1] / unit * unit;
            if (cols < unit || cpuq_row_size(t, cols) == 0) continue;
            check_one(t, shapes[i][0], cols, (int)(i & 1));
        }
        if (bl == 1) { /* plain floats: columns not a multiple of 128 or of 8 */
            check_one(t, 37, 300, 0);
            check_one(t, 3, 1 + (int64_t)(rnd() % 500), 1);
        }
        struct errs e0 = check_one(t, 512, 2048, 0), e1 = check_one(t, 512, 2048, 1);
        fprintf(stderr, "  %-8s %.4f %.4f %.4f | %.4f %.4f %.4f\n", qtype_name(t), e0.rq, e0.ggml,
                e0.total, e1.rq, e1.ggml, e1.total);
    }
}

/* a non-finite element of a float weight (or a Q8_0 block scale) at a random place */
static void check_nonfinite(int type, float bad)
{
    int64_t rows = 150, cols = 256;
    size_t rb = cpuq_row_size(type, cols);
    float *w = malloc((size_t)(rows * cols) * sizeof(float));
    uint8_t *src = malloc(rb * (size_t)rows), *q = malloc((size_t)(rows * cols));
    float *sc = malloc(2 * 2 * sizeof(float));
    CHECK(w && src && q && sc);
    fill(w, rows, cols, 0);
    cpuq_quantize_rows(ops, type, w, src, rows, cols);
    int64_t r = (int64_t)(rnd() % rows), c = (int64_t)(rnd() % cols);
    if (type == QTYPE_Q8_0) { /* the f16 scale d of the block holding (r, c): every element */
        uint16_t h = fp_f32_to_f16(bad);
        memcpy(src + rb * r + (size_t)(c / 32) * 34, &h, 2);
        c -= c % 32;
        /* elements of the block equal to 0 stay 0 * Inf = NaN, all non-finite: first is c */
    } else if (type == QTYPE_F32) {
        memcpy(src + rb * r + 4 * c, &bad, 4);
    } else {
        uint16_t h = type == QTYPE_F16 ? fp_f32_to_f16(bad) : fp_f32_to_bf16(bad);
        memcpy(src + rb * r + 2 * c, &h, 2);
    }
    struct cpuq_requant_src s = {
        .type = type, .data = src, .row_bytes = rb, .rows = rows, .cols = cols};
    char err[ERR_LEN] = "", want[64];
    CHECK_EQ(cpuq_requant_fp8(ops, pool, &s, q, sc, err), ERR_FORMAT);
    snprintf(want, sizeof want, "row %lld, column %lld", (long long)r, (long long)c);
    CHECK_CONTAINS(err, want);
    CHECK_CONTAINS(err, qtype_name(type));
    free(w);
    free(src);
    free(q);
    free(sc);
}

static void check_bad_args(void)
{
    uint8_t src[4096] = {0}, q[4096];
    float sc[16];
    char err[ERR_LEN];
    struct cpuq_requant_src s = {.type = QTYPE_Q4_K,
                                 .data = src,
                                 .row_bytes = cpuq_row_size(QTYPE_Q4_K, 256),
                                 .rows = 2,
                                 .cols = 256};
    CHECK_EQ(cpuq_requant_fp8(ops, pool, &s, q, sc, err), 0);
    s.cols = 200; /* not whole Q4_K blocks */
    CHECK_EQ(cpuq_requant_fp8(ops, pool, &s, q, sc, err), ERR_INVAL);
    CHECK_CONTAINS(err, "blocks");
    s.cols = 256;
    s.row_bytes = 10; /* stride below a row */
    CHECK_EQ(cpuq_requant_fp8(ops, pool, &s, q, sc, err), ERR_INVAL);
    s.row_bytes = cpuq_row_size(QTYPE_Q4_K, 256);
    s.rows = 0;
    CHECK_EQ(cpuq_requant_fp8(ops, pool, &s, q, sc, err), ERR_INVAL);
    s.rows = 2;
    s.type = QTYPE_F8_E4M3; /* already FP8: no to_float in the GGML tables */
    int rc = cpuq_requant_fp8(ops, pool, &s, q, sc, err);
    CHECK(rc == ERR_UNSUPPORTED || rc == 0);
    s.type = -3;
    CHECK_EQ(cpuq_requant_fp8(ops, pool, &s, q, sc, err), ERR_UNSUPPORTED);
    s.type = QTYPE_COUNT_;
    CHECK_EQ(cpuq_requant_fp8(ops, pool, &s, q, sc, err), ERR_UNSUPPORTED);
    s.type = QTYPE_Q4_K;
    s.data = NULL;
    CHECK_EQ(cpuq_requant_fp8(ops, pool, &s, q, sc, err), ERR_INVAL);
    CHECK(cpuq_requant_fp8_scratch(7168) == (size_t)128 * 7168 * 4);
}

/* the fast e4m3 conversion equals fpconv.h's reference on every rounding boundary (each
 * midpoint between adjacent e4m3 values and its float neighbours, both signs), special values
 * and 2^22 random bit patterns */
static void check_e4m3(void)
{
    float vals[128];
    int nv = 0;
    for (int c = 0; c <= 0x7e; c++) vals[nv++] = fp_e4m3_to_f32((uint8_t)c); /* 0 .. 448 */
    long n = 0;
    for (int i = 0; i + 1 < nv; i++) {
        float mid = (vals[i] + vals[i + 1]) / 2, xs[7];
        xs[0] = mid;
        xs[1] = nextafterf(mid, 0);
        xs[2] = nextafterf(mid, INFINITY);
        xs[3] = vals[i];
        xs[4] = nextafterf(vals[i], INFINITY);
        xs[5] = nextafterf(vals[i + 1], 0);
        xs[6] = vals[i + 1];
        for (int k = 0; k < 7; k++)
            for (int sg = 0; sg < 2; sg++) {
                float x = sg ? -xs[k] : xs[k];
                if (cpuq_e4m3_rne(x) != fp_f32_to_e4m3(x)) {
                    fprintf(stderr, "e4m3(%a): %02x, reference %02x\n", (double)x, cpuq_e4m3_rne(x),
                            fp_f32_to_e4m3(x));
                    exit(1);
                }
                n++;
            }
    }
    const float sp[] = {0.0f,      -0.0f,         448.0f,         464.0f,        464.0001f,
                        480.0f,    1e30f,         INFINITY,       -INFINITY,     NAN,
                        -NAN,      FLT_MIN,       1e-45f,         -1e-45f,       FLT_MAX,
                        0.015625f, 0.0009765625f, 0.00048828125f, 0.0146484375f, 447.99997f};
    for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++)
        CHECK_EQ(cpuq_e4m3_rne(sp[i]), fp_f32_to_e4m3(sp[i]));
    for (long i = 0; i < (1l << 22); i++) {
        uint32_t b = (uint32_t)rnd();
        float x;
        if (i & 1) b = (b & 0x807fffffu) | ((uint32_t)(110 + rnd() % 32) << 23); /* near range */
        memcpy(&x, &b, 4);
        if (cpuq_e4m3_rne(x) != fp_f32_to_e4m3(x)) {
            fprintf(stderr, "e4m3(%a): %02x, reference %02x\n", (double)x, cpuq_e4m3_rne(x),
                    fp_f32_to_e4m3(x));
            exit(1);
        }
    }
    fprintf(stderr, "e4m3 fast conversion: %ld boundary values and 2^22 random floats match\n", n);
}

/* BF16 weights far below FLT_MIN * 448: the scale stays normal (FLT_MIN) and the error small */
static void check_tiny(void)
{
    const int64_t cols = 128;
    uint16_t src[128];
    for (int c = 0; c < cols; c++) src[c] = fp_f32_to_bf16(ldexpf(gauss(), -130));
    uint8_t q[128];
    float sc, d[128];
    struct cpuq_requant_src s = {
        .type = QTYPE_BF16, .data = src, .row_bytes = sizeof src, .rows = 1, .cols = cols};
    char err[ERR_LEN];
    CHECK_EQ(cpuq_requant_fp8(ops, NULL, &s, q, &sc, err), 0);
    CHECK(sc == FLT_MIN);
    cpuq_fp8_dequant(q, &sc, 1, cols, 0, 1, d);
    for (int c = 0; c < cols; c++) {
        float g = fp_bf16_to_f32(src[c]);
        CHECK(fabsf(d[c] - g) <= ldexpf(fabsf(g), -4) + ldexpf(FLT_MIN, -10));
    }
}

int main(void)
{
    rng_state = check_seed();
    char err[ERR_LEN];
    CHECK_EQ(cpuq_ops_get(cpuq_isa_detect(), &ops, err), 0);
    CHECK_EQ(wpool_create(3, 0, 0, &pool, err), 0);
    check_e4m3();
    check_bad_args();
    check_tiny();
    for (int i = 0; i < 3; i++) {
        check_nonfinite(QTYPE_F16, i == 0 ? NAN : i == 1 ? INFINITY : -INFINITY);
        check_nonfinite(QTYPE_BF16, i == 0 ? NAN : i == 1 ? INFINITY : -INFINITY);
        check_nonfinite(QTYPE_F32, i == 0 ? NAN : i == 1 ? INFINITY : -INFINITY);
        check_nonfinite(QTYPE_Q8_0, i == 0 ? NAN : i == 1 ? INFINITY : -INFINITY);
    }
    check_types();
    wpool_destroy(pool);
    return 0;
}
