/* test_f32.c - the fp32 row kernels (kernels/cpu/f32.h) on fresh random inputs.
 *
 *   - cpuq_dot_f32 / cpuq_dot_bf16 equal, bit for bit, the documented 16-lane order written out
 *     here as plain scalar C (lengths 0..300, so every tail length occurs), and are within 1e-5 of
 *     a float64 dot (relative to the sum of |products|);
 *   - cpuq_bf16_to_f32, cpuq_axpy_f32, cpuq_scale_f32 equal their one-rounding definitions;
 *   - cpuq_rmsnorm_f32 equals its definition over cpuq_dot_f32 bitwise (strided rows, in place)
 *     and is within 1e-5 of float64;
 *   - cpuq_rope_f32 within 1e-5 of a float64 rotation (amplitude 1 and not), in place and not;
 *   - cpuq_swiglu_f32 within 1e-6 of float64;
 *   - cpuq_head_matmul_f32, both orientations, within 1e-5 of float64, and bitwise the same on
 *     one thread and on a pool of three.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "kernels/cpu/f32.h"
#include "kernels/cpu/fpconv.h"
#include "kernels/cpu/wpool.h"
#include "tests/check.h"

static unsigned long long rng;

static double urand(void) /* [0, 1) */
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static int irand(int n) { return (int)(urand() * n); }

static float frand(void) { return (float)(urand() * 4 - 2); }

/* the documented order, scalar */
static float lane_dot(const float *a, const float *b, int n)
{
    float acc[16] = {0};
    for (int i = 0; i < n; i++) {
        float p = a[i] * b[i];
        acc[i % 16] = acc[i % 16] + p;
    }
    for (int l = 0; l < 8; l++) acc[l] = acc[l] + acc[l + 8];
    for (int l = 0; l < 4; l++) acc[l] = acc[l] + acc[l + 4];
    float x = acc[0] + acc[2], y = acc[1] + acc[3];
    return x + y;
}

static void test_dots(void)
{
    float a[300], b[300];
    uint16_t wb[300];
    for (int n = 0; n <= 300; n++) {
        for (int i = 0; i < n; i++) {
            a[i] = frand();
            b[i] = frand();
            wb[i] = fp_f32_to_bf16(frand());
        }
        double d = 0, mag = 0;
        for (int i = 0; i < n; i++) {
            d += (double)a[i] * b[i];
            mag += fabs((double)a[i] * b[i]);
        }
        float got = cpuq_dot_f32(a, b, n);
        CHECK(got == lane_dot(a, b, n));
        CHECK(fabs(got - d) <= 1e-5 * mag + 1e-30);
        float wf[300];
        for (int i = 0; i < n; i++) wf[i] = fp_bf16_to_f32(wb[i]);
        CHECK(cpuq_dot_bf16(wb, b, n) == lane_dot(wf, b, n));
        float conv[300];
        cpuq_bf16_to_f32(wb, conv, n);
        CHECK(n == 0 || memcmp(conv, wf, (size_t)n * sizeof(float)) == 0);
        float y[300], y0[300], s = frand();
        for (int i = 0; i < n; i++) y[i] = y0[i] = frand();
        cpuq_axpy_f32(y, s, a, n);
        for (int i = 0; i < n; i++) CHECK(y[i] == y0[i] + s * a[i]);
        memcpy(y, y0, (size_t)n * sizeof(float));
        cpuq_scale_f32(y, s, n);
        for (int i = 0; i < n; i++) CHECK(y[i] == y0[i] * s);
    }
}

static void test_rmsnorm(void)
{
    for (int c = 0; c < 20; c++) {
        int n = 1 + irand(5), dim = 1 + irand(700), ld = dim + irand(9);
        float eps = urand() < 0.5 ? 1e-6f : 1e-5f;
        float *x = malloc((size_t)n * ld * sizeof(float)), *y = malloc((size_t)n * ld * 4);
        float *g = malloc((size_t)dim * 4);
        CHECK(x && y && g);
        for (int i = 0; i < n * ld; i++) x[i] = frand();
        for (int i = 0; i < dim; i++) g[i] = frand();
        cpuq_rmsnorm_f32(x, ld, g, n, dim, eps, y, ld);
        for (int t = 0; t < n; t++) {
            const float *xt = x + (size_t)t * ld;
            float r = 1.0f / sqrtf(lane_dot(xt, xt, dim) / (float)dim + eps);
            double ss = 0;
            for (int i = 0; i < dim; i++) ss += (double)xt[i] * xt[i];
            double rd = 1.0 / sqrt(ss / dim + eps);
            for (int i = 0; i < dim; i++) {
                float yi = y[(size_t)t * ld + i];
                CHECK(yi == (xt[i] * r) * g[i]);
                CHECK(fabs(yi - xt[i] * rd * g[i]) <= 1e-5 * fabs(xt[i] * rd * g[i]) + 1e-30);
            }
        }
        float *z = malloc((size_t)n * ld * 4); /* in place */
        CHECK(z);
        memcpy(z, x, (size_t)n * ld * 4);
        cpuq_rmsnorm_f32(z, ld, g, n, dim, eps, z, ld);
        for (int t = 0; t < n; t++)
            CHECK(memcmp(z + (size_t)t * ld, y + (size_t)t * ld, (size_t)dim * 4) == 0);
        free(x);
        free(y);
        free(g);
        free(z);
    }
}

static void test_rope(void)
{
    for (int c = 0; c < 20; c++) {
        int np = 1 + irand(32), n = 1 + irand(6), nh = 1 + irand(4);
        int ldh = 2 * np + irand(5), ldt = nh * ldh + irand(3);
        float amp = urand() < 0.5 ? 1.0f : (float)(0.5 + urand());
        float freq[32];
        int32_t pos[6];
        for (int i = 0; i < np; i++) freq[i] = powf(10000.0f, -2.0f * i / (2 * np));
        for (int t = 0; t < n; t++) pos[t] = irand(5000);
        float *x = malloc((size_t)n * ldt * 4), *y = malloc((size_t)n * ldt * 4);
        CHECK(x && y);
        for (int i = 0; i < n * ldt; i++) x[i] = frand();
        int inplace = c % 2;
        if (inplace) memcpy(y, x, (size_t)n * ldt * 4);
        cpuq_rope_f32(np, freq, amp, pos, n, nh, inplace ? y : x, ldt, ldh, y, ldt, ldh);
        for (int t = 0; t < n; t++)
            for (int h = 0; h < nh; h++)
                for (int i = 0; i < np; i++) {
                    const float *xh = x + (size_t)t * ldt + (size_t)h * ldh;
                    const float *yh = y + (size_t)t * ldt + (size_t)h * ldh;
                    double ang = (double)(float)((float)pos[t] * freq[i]);
                    double cs = cos(ang) * amp, sn = sin(ang) * amp;
                    double r0 = xh[2 * i] * cs - xh[2 * i + 1] * sn;
                    double r1 = xh[2 * i] * sn + xh[2 * i + 1] * cs;
                    double mag = (fabs(xh[2 * i]) + fabs(xh[2 * i + 1])) * amp;
                    CHECK(fabs(yh[2 * i] - r0) <= 1e-5 * mag + 1e-30);
                    CHECK(fabs(yh[2 * i + 1] - r1) <= 1e-5 * mag + 1e-30);
                }
        free(x);
        free(y);
    }
}

static void test_swiglu(void)
{
    int n = 1000;
    float *g = malloc((size_t)n * 4), *u = malloc((size_t)n * 4), *y = malloc((size_t)n * 4);
    CHECK(g && u && y);
    for (int i = 0; i < n; i++) {
        g[i] = (float)(urand() * 20 - 10);
        u[i] = frand();
    }
    cpuq_swiglu_f32(g, u, n, y);
    for (int i = 0; i < n; i++) {
        double r = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
        CHECK(fabs(y[i] - r) <= 1e-6 * fabs(r) + 1e-30);
    }
    cpuq_swiglu_f32(g, u, n, g); /* in place */
    CHECK(memcmp(g, y, (size_t)n * 4) == 0);
    free(g);
    free(u);
    free(y);
}

static void test_head_matmul(struct wpool *pool)
{
    for (int c = 0; c < 12; c++) {
        int H = 1 + irand(5), rows = 1 + irand(40), cols = 1 + irand(70), trans = c % 2;
        int n = 1 + irand(5), in = trans ? rows : cols, out = trans ? cols : rows;
        int64_t wh = (int64_t)rows * cols + irand(7);
        int ldxh = in + irand(3), ldxt = H * ldxh + irand(3);
        int ldyh = out + irand(3), ldyt = H * ldyh + irand(3);
        float *w = malloc((size_t)wh * H * 4), *x = malloc((size_t)n * ldxt * 4);
        float *y1 = calloc((size_t)n * ldyt, 4), *y2 = calloc((size_t)n * ldyt, 4);
        CHECK(w && x && y1 && y2);
        for (int64_t i = 0; i < wh * H; i++) w[i] = frand();
        for (int i = 0; i < n * ldxt; i++) x[i] = frand();
        cpuq_head_matmul_f32(NULL, w, wh, rows, cols, trans, n, H, x, ldxt, ldxh, y1, ldyt, ldyh);
        cpuq_head_matmul_f32(pool, w, wh, rows, cols, trans, n, H, x, ldxt, ldxh, y2, ldyt, ldyh);
        CHECK(memcmp(y1, y2, (size_t)n * ldyt * 4) == 0);
        for (int t = 0; t < n; t++)
            for (int h = 0; h < H; h++)
                for (int o = 0; o < out; o++) {
                    double acc = 0, mag = 0;
                    for (int k = 0; k < in; k++) {
                        int r = trans ? k : o, cc = trans ? o : k;
                        double p = (double)w[h * wh + (int64_t)r * cols + cc] *
                                   x[(size_t)t * ldxt + (size_t)h * ldxh + k];
                        acc += p;
                        mag += fabs(p);
                    }
                    float got = y1[(size_t)t * ldyt + (size_t)h * ldyh + o];
                    CHECK(fabs(got - acc) <= 1e-5 * mag + 1e-30);
                }
        free(w);
        free(x);
        free(y1);
        free(y2);
    }
}

int main(void)
{
    rng = check_seed();
    char err[ERR_LEN];
    struct wpool *pool = NULL;
    CHECK_EQ(wpool_create(3, 0, 0, &pool, err), 0);
    test_dots();
    test_rmsnorm();
    test_rope();
    test_swiglu();
    test_head_matmul(pool);
    wpool_destroy(pool);
    fprintf(stderr, "f32 kernels match their definitions and float64\n");
    return 0;
}
