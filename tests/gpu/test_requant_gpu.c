/* test_requant_gpu.c - GGML-typed non-expert weights on the GPU backend (ops_cuda), re-quantized
 * to FP8 at load (gpu.requant_ggml; kernels/cpu/requant_fp8.h), against the CPU backend.
 *
 * Two backends, cpu and hybrid, get the same weights; for each case the GPU result is compared
 * with two CPU results:
 *   - the CPU backend on the FP8 weight requantized here on the host (what the GPU must be
 *     computing: the same e4m3 bytes and scales under the same FP8 contract): relative L2 error
 *     per token row <= 1e-5 (the GPU's fp32 summation order; test_gemm_fp8 measures 6-9e-8);
 *   - the CPU backend on the GGML weight itself (what a CPU-only run computes): the accuracy cost
 *     of the re-quantization plus e4m3 vs Q8_K activations, printed, median row error <= 0.1.
 * Cases: projections (ops_lin_create) of Q4_K, Q6_K, Q8_0, Q4_0, IQ4_XS, Q5_K, F16 and F32 at
 * 1..40 tokens (the own kernel and its 16-row chunks); a Q8_0 weight with k % 128 != 0 (stays on
 * the CPU backend, bitwise the CPU's); W16A32 linears (ops_lin_create_w16: Q6_K lm_head-like and
 * F32 router-like weights become bf16; compared with the CPU on the bf16-rounded weight, <= 1e-5);
 * per-head kv_b (ops_heads_create on a Q8_0 view: FP8 on the device) through ops_head_matmul at 5
 * and 37 tokens, both halves; gpu_keep_ggml = 1 (gpu.requant_ggml = off): the weight stays on the
 * CPU backend and the result is bitwise the CPU's; NaN / Inf weights give ERR_FORMAT; the load
 * report (ops_cuda_load_stats) counts what was converted. Outputs are poisoned with NaN before
 * each call. Exits 77 without a GPU; fresh seed each run (TANDEM_TEST_SEED replays).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "engine/model/ops.h"
#include "engine/model/ops_cuda.h"
#include "kernels/cpu/cpuq.h"
#include "kernels/cpu/fp8.h"
#include "kernels/cpu/fpconv.h"
#include "kernels/cpu/requant_fp8.h"
#include "tests/check.h"
#include "tests/gpu/gpu_test.h"

#define MAXT 40

static struct ops *cpu, *gpu;
static const struct cpuq_ops *q;

static struct ops *make(const char *placement, int keep_ggml)
{
    char err[ERR_LEN];
    struct ops_params p = {.max_tokens = MAXT, .gpu_keep_ggml = keep_ggml};
    struct ops *o = NULL;
    if (ops_params_parse(&p, placement, NULL, err) || ops_create(&p, &o, err)) {
        fprintf(stderr, "ops_create(%s): %s\n", placement, err);
        exit(1);
    }
    return o;
}

/* a random [rows, cols] weight of `type`: N(0, 1/cols) with rows of varied scale */
static void *weight(int type, int64_t rows, int64_t cols, struct wt_view *v)
{
    size_t rb = cpuq_row_size(type, cols);
    CHECK(rb > 0);
    float *f = malloc((size_t)(rows * cols) * sizeof(float));
    void *d = malloc(rb * (size_t)rows);
    CHECK(f && d);
    for (int64_t r = 0; r < rows; r++) {
        double rs = ldexp(1.0, gt_int(-2, 2)) / sqrt((double)cols);
        for (int64_t c = 0; c < cols; c++) f[r * cols + c] = (float)(gt_normal() * rs);
    }
    cpuq_quantize_rows(q, type, f, d, rows, cols);
    free(f);
    *v = (struct wt_view){.type = type, .rows = rows, .cols = cols, .data = d, .row_bytes = rb};
    return d;
}

/* y = W x on backend o: x host [n][cols] -> y host [n][rows] */
static void run_lin(struct ops *o, const struct ops_lin *l, const float *x, int n, int64_t rows,
                    int64_t cols, float *y)
{
    char err[ERR_LEN];
    size_t xb = (size_t)n * cols * sizeof(float), yb = (size_t)n * rows * sizeof(float);
    float *dx = ops_alloc(o, xb), *dy = ops_alloc(o, yb);
    CHECK(dx && dy);
    for (size_t i = 0; i < (size_t)n * rows; i++) y[i] = NAN;
    ops_upload(o, dy, y, yb); /* poison */
    ops_upload(o, dx, x, xb);
    ops_linear(o, l, dx, n, dy);
    ops_download(o, y, dy, yb);
    int rc = ops_error(o, err);
    if (rc) fprintf(stderr, "ops_linear: %s\n", err);
    CHECK_EQ(rc, 0);
    ops_free(o, dx);
    ops_free(o, dy);
}

/* relative L2 error of each row of a against b; returns the max, *med the median */
static double row_err(const float *a, const float *b, int n, int64_t len, double *med)
{
    double *e = malloc((size_t)n * sizeof(double)), mx = 0;
    CHECK(e);
    for (int t = 0; t < n; t++) {
        double num = 0, den = 0;
        for (int64_t i = 0; i < len; i++) {
            double d = (double)a[t * len + i] - b[t * len + i];
            CHECK(isfinite(a[t * len + i]));
            num += d * d;
            den += (double)b[t * len + i] * b[t * len + i];
        }
        e[t] = sqrt(num / (den > 0 ? den : 1e-30));
        if (e[t] > mx) mx = e[t];
    }
    for (int i = 1; i < n; i++) /* insertion sort: n is small */
        for (int j = i; j > 0 && e[j] < e[j - 1]; j--) {
            double s = e[j];
            e[j] = e[j - 1];
            e[j - 1] = s;
        }
    *med = e[n / 2];
    free(e);
    return mx;
}

/* v re-quantized on the host: an FP8 view owning *qb / *sc */
static struct wt_view fp8_of(const struct wt_view *v, uint8_t **qb, float **sc)
{
    char err[ERR_LEN];
    *qb = malloc((size_t)(v->rows * v->cols));
    *sc = malloc((size_t)(cpuq_fp8_nblk(v->rows) * cpuq_fp8_nblk(v->cols)) * sizeof(float));
    CHECK(*qb && *sc);
    struct cpuq_requant_src s = {.type = v->type,
                                 .data = v->data,
                                 .row_bytes = v->row_bytes,
                                 .rows = v->rows,
                                 .cols = v->cols};
    CHECK_EQ(cpuq_requant_fp8(q, NULL, &s, *qb, *sc, err), 0);
    return (struct wt_view){.type = QTYPE_F8_E4M3,
                            .rows = v->rows,
                            .cols = v->cols,
                            .data = *qb,
                            .row_bytes = (size_t)v->cols,
                            .scale = *sc};
}

static float *rand_x(int n, int64_t cols)
{
    float *x = malloc((size_t)n * cols * sizeof(float));
    CHECK(x);
    for (int64_t i = 0; i < n * cols; i++) x[i] = (float)gt_normal();
    return x;
}

static void check_projection(int type, int64_t rows, int64_t cols)
{
    char err[ERR_LEN];
    struct wt_view v, fv;
    void *data = weight(type, rows, cols, &v);
    uint8_t *qb;
    float *sc;
    fv = fp8_of(&v, &qb, &sc);
    struct ops_lin *lg = NULL, *lc = NULL, *lf = NULL;
    struct ops_cuda_load l0, l1;
    ops_cuda_load_stats(gpu, &l0);
    CHECK_EQ(ops_lin_create(gpu, &v, &lg, err), 0);
    ops_cuda_load_stats(gpu, &l1);
    int on_gpu = cols % 128 == 0;
    CHECK_EQ(l1.fp8 - l0.fp8, on_gpu);
    CHECK_EQ(l1.cpu - l0.cpu, !on_gpu);
    CHECK_EQ(ops_lin_create(cpu, &v, &lc, err), 0);
    CHECK_EQ(ops_lin_create(cpu, &fv, &lf, err), 0);
    const int ns[] = {1, 7, 16, gt_int(17, MAXT)};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        int n = ns[i];
        float *x = rand_x(n, cols);
        float *yg = malloc((size_t)n * rows * 4), *yc = malloc((size_t)n * rows * 4),
              *yf = malloc((size_t)n * rows * 4);
        CHECK(yg && yc && yf);
        run_lin(gpu, lg, x, n, rows, cols, yg);
        run_lin(cpu, lc, x, n, rows, cols, yc);
        run_lin(cpu, lf, x, n, rows, cols, yf);
        double med_f, med_c, mx_f = row_err(yg, on_gpu ? yf : yc, n, rows, &med_f);
        double mx_c = row_err(yg, yc, n, rows, &med_c);
        printf("  %-7s [%5lld, %5lld] n=%2d  vs CPU on the FP8 weight %.1e (max)  vs CPU on %s "
               "%.4f median, %.4f max%s\n",
               qtype_name(type), (long long)rows, (long long)cols, n, mx_f, qtype_name(type), med_c,
               mx_c, on_gpu ? "" : "  (k % 128 != 0: CPU backend)");
        if (on_gpu) {
            CHECK(mx_f <= 1e-5);
            CHECK(med_c <= 0.1);
        } else {
            CHECK(mx_c == 0); /* the same CPU kernels on the same bytes */
        }
        free(x);
        free(yg);
        free(yc);
        free(yf);
    }
    ops_lin_destroy(gpu, lg);
    ops_lin_destroy(cpu, lc);
    ops_lin_destroy(cpu, lf);
    free(data);
    free(qb);
    free(sc);
}

/* W16A32: GGML / F32 weights become bf16 on the GPU, never FP8 */
static void check_w16(int type, int64_t rows, int64_t cols)
{
    char err[ERR_LEN];
    struct wt_view v;
    void *data = weight(type, rows, cols, &v);
    uint16_t *b = malloc((size_t)(rows * cols) * 2);
    float *f = malloc((size_t)cols * 4);
    CHECK(b && f);
    for (int64_t r = 0; r < rows; r++) {
        q->type[type].to_float((const char *)v.data + r * v.row_bytes, f, cols);
        for (int64_t c = 0; c < cols; c++) b[r * cols + c] = fp_f32_to_bf16(f[c]);
    }
    struct wt_view bv = {
        .type = QTYPE_BF16, .rows = rows, .cols = cols, .data = b, .row_bytes = (size_t)cols * 2};
    struct ops_lin *lg, *lb, *lc;
    struct ops_cuda_load l0, l1;
    ops_cuda_load_stats(gpu, &l0);
    CHECK_EQ(ops_lin_create_w16(gpu, &v, &lg, err), 0);
    ops_cuda_load_stats(gpu, &l1);
    CHECK_EQ(l1.bf16 - l0.bf16, 1);
    CHECK_EQ(l1.fp8 - l0.fp8, 0);
    CHECK_EQ(ops_lin_create_w16(cpu, &bv, &lb, err), 0);
    CHECK_EQ(ops_lin_create_w16(cpu, &v, &lc, err), 0);
    int n = gt_int(1, MAXT);
    float *x = rand_x(n, cols), *yg = malloc((size_t)n * rows * 4),
          *yb = malloc((size_t)n * rows * 4), *yc = malloc((size_t)n * rows * 4);
    CHECK(yg && yb && yc);
    run_lin(gpu, lg, x, n, rows, cols, yg);
    run_lin(cpu, lb, x, n, rows, cols, yb);
    run_lin(cpu, lc, x, n, rows, cols, yc);
    double mb, mc, xb = row_err(yg, yb, n, rows, &mb);
    row_err(yg, yc, n, rows, &mc);
    printf("  w16 %-7s [%5lld, %5lld] n=%2d  vs CPU on the bf16 weight %.1e  vs CPU on %s %.1e "
           "median\n",
           qtype_name(type), (long long)rows, (long long)cols, n, xb, qtype_name(type), mc);
    CHECK(xb <= 1e-5);
    CHECK(mc <= 2e-2); /* the CPU rounds activations to Q8_K for a GGML weight: ~0.6% */
    ops_lin_destroy(gpu, lg);
    ops_lin_destroy(cpu, lb);
    ops_lin_destroy(cpu, lc);
    free(x);
    free(yg);
    free(yb);
    free(yc);
    free(b);
    free(f);
    free(data);
}

/* per-head kv_b from a Q8_0 view: FP8 on the device; both absorbed halves */
static void check_heads(void)
{
    char err[ERR_LEN];
    const int H = 4, NOPE = 128, V = 128, L = 512;
    struct wt_view v;
    void *data = weight(QTYPE_Q8_0, (int64_t)H * (NOPE + V), L, &v);
    float *f32 = malloc((size_t)(v.rows * v.cols) * 4), *rq = malloc((size_t)(v.rows * v.cols) * 4);
    CHECK(f32 && rq);
    for (int64_t r = 0; r < v.rows; r++)
        q->type[QTYPE_Q8_0].to_float((const char *)v.data + r * v.row_bytes, f32 + r * L, L);
    /* the CPU reference: the fp32 values re-quantized to FP8 and back */
    struct wt_view fv32 = {
        .type = QTYPE_F32, .rows = v.rows, .cols = v.cols, .data = f32, .row_bytes = (size_t)L * 4};
    uint8_t *qb;
    float *sc;
    struct wt_view fv = fp8_of(&fv32, &qb, &sc);
    cpuq_fp8_dequant(qb, sc, fv.rows, fv.cols, 0, fv.rows, rq);
    struct ops_heads *hg, *hc;
    struct ops_cuda_load l0, l1;
    ops_cuda_load_stats(gpu, &l0);
    CHECK_EQ(ops_heads_create(gpu, &v, f32, &hg, err), 0);
    ops_cuda_load_stats(gpu, &l1);
    CHECK_EQ(l1.fp8 - l0.fp8, 1);
    CHECK_EQ(ops_heads_create(cpu, &fv, rq, &hc, err), 0);
    const int ns[] = {5, 37};
    for (int i = 0; i < 2; i++)
        for (int half = 0; half < 2; half++) {
            /* W_UK^T q_nope (trans 1: x has NOPE per head, y L) or W_UV o (trans 0: x L, y V) */
            int n = ns[i], rows = half ? V : NOPE, trans = !half;
            int64_t off = half ? (int64_t)NOPE * L : 0, wh = (int64_t)(NOPE + V) * L;
            int xin = trans ? rows : L, yout = trans ? L : rows;
            size_t xb = (size_t)n * H * xin * 4, yb = (size_t)n * H * yout * 4;
            float *x = rand_x(n * H, xin), *yg = malloc(yb), *yc = malloc(yb);
            CHECK(yg && yc);
            struct ops *os[2] = {gpu, cpu};
            const struct ops_heads *hs[2] = {hg, hc};
            float *ys[2] = {yg, yc};
            for (int k = 0; k < 2; k++) {
                float *dx = ops_alloc(os[k], xb), *dy = ops_alloc(os[k], yb);
                CHECK(dx && dy);
                for (size_t j = 0; j < yb / 4; j++) ys[k][j] = NAN;
                ops_upload(os[k], dy, ys[k], yb);
                ops_upload(os[k], dx, x, xb);
                ops_head_matmul(os[k], hs[k], off, wh, rows, L, trans, n, H, dx, H * xin, xin, dy,
                                H * yout, yout);
                ops_download(os[k], ys[k], dy, yb);
                CHECK_EQ(ops_error(os[k], err), 0);
                ops_free(os[k], dx);
                ops_free(os[k], dy);
            }
            double med, mx = row_err(yg, yc, n * H, yout, &med);
            printf("  heads q8_0 -> fp8, %s, n=%2d: vs CPU on the same FP8 values %.1e (max)\n",
                   half ? "W_UV" : "W_UK^T", n, mx);
            CHECK(mx <= 1e-5);
            free(x);
            free(yg);
            free(yc);
        }
    ops_heads_destroy(gpu, hg);
    ops_heads_destroy(cpu, hc);
    free(data);
    free(f32);
    free(rq);
    free(qb);
    free(sc);
}

/* gpu.requant_ggml = off: the weight stays on the CPU backend, bitwise the CPU's result */
static void check_keep(void)
{
    char err[ERR_LEN];
    struct ops *g = make("hybrid", 1);
    struct wt_view v;
    void *data = weight(QTYPE_Q4_K, 300, 1024, &v);
    struct ops_lin *lg, *lc;
    CHECK_EQ(ops_lin_create(g, &v, &lg, err), 0);
    CHECK_EQ(ops_lin_create(cpu, &v, &lc, err), 0);
    struct ops_cuda_load l;
    ops_cuda_load_stats(g, &l);
    CHECK_EQ(l.fp8, 0);
    CHECK_EQ(l.cpu, 1);
    int n = 9;
    float *x = rand_x(n, 1024), *yg = malloc((size_t)n * 300 * 4),
          *yc = malloc((size_t)n * 300 * 4);
    CHECK(yg && yc);
    run_lin(g, lg, x, n, 300, 1024, yg);
    run_lin(cpu, lc, x, n, 300, 1024, yc);
    CHECK(memcmp(yg, yc, (size_t)n * 300 * 4) == 0);
    printf("  gpu_keep_ggml = 1: q4_K stays on the CPU backend, bitwise equal\n");
    ops_lin_destroy(g, lg);
    ops_lin_destroy(cpu, lc);
    ops_load_done(g);
    ops_destroy(g);
    free(x);
    free(yg);
    free(yc);
    free(data);
}

/* NaN / Inf in F16 and F32 weights: a clear error, nothing created */
static void check_hostile(void)
{
    char err[ERR_LEN];
    struct wt_view v;
    void *data = weight(QTYPE_F16, 256, 512, &v);
    uint16_t nan16 = fp_f32_to_f16(NAN);
    memcpy((char *)data + 77 * v.row_bytes + 2 * 300, &nan16, 2);
    struct ops_lin *l = NULL;
    CHECK_EQ(ops_lin_create(gpu, &v, &l, err), ERR_FORMAT);
    CHECK_CONTAINS(err, "row 77, column 300");
    CHECK(l == NULL);
    free(data);
    data = weight(QTYPE_F32, 64, 512, &v);
    float inf = INFINITY;
    memcpy((char *)data + 5 * v.row_bytes + 4 * 9, &inf, 4);
    CHECK_EQ(ops_lin_create_w16(gpu, &v, &l, err), ERR_FORMAT);
    CHECK_CONTAINS(err, "row 5, column 9");
    free(data);
    printf("  NaN / Inf weights: ERR_FORMAT naming the element\n");
}

int main(void)
{
    gt_require_gpu();
    gt_state = check_seed();
    char err[ERR_LEN];
    CHECK_EQ(cpuq_ops_get(CPUQ_ISA_SCALAR, &q, err), 0);
    cpu = make("cpu", 0);
    gpu = make("hybrid", 0);
    printf("projections (re-quantized to FP8 on the GPU backend):\n");
    const int types[] = {QTYPE_Q4_K, QTYPE_Q6_K,   QTYPE_Q8_0, QTYPE_Q4_0,
                         QTYPE_Q5_K, QTYPE_IQ4_XS, QTYPE_F16,  QTYPE_F32};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        check_projection(types[i], 128 * gt_int(1, 6) + gt_int(0, 127), 256 * gt_int(1, 8));
    check_projection(QTYPE_Q4_K, 576, 7168); /* kv_a: a partial scale row */
    check_projection(QTYPE_Q8_0, 200, 320);  /* k % 128 != 0: CPU backend */
    printf("W16A32 linears (bf16 on the GPU backend):\n");
    check_w16(QTYPE_Q6_K, 1000 + gt_int(0, 500), 512);
    check_w16(QTYPE_F32, 64, 1024);
    printf("per-head weights:\n");
    check_heads();
    check_keep();
    check_hostile();
    ops_load_done(gpu); /* the load report; the backend stays usable */
    check_projection(QTYPE_Q8_0, 130, 256);
    struct ops_cuda_load l;
    ops_cuda_load_stats(gpu, &l);
    printf("load report: %d fp8, %d bf16, %d on the CPU, %.3f s converting\n", l.fp8, l.bf16, l.cpu,
           l.seconds);
    CHECK(l.fp8 >= 11 && l.bf16 == 2);
    ops_destroy(gpu);
    ops_destroy(cpu);
    printf("requant gpu ok\n");
    return 0;
}
