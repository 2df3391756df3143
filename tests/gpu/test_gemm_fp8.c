/* test_gemm_fp8.c - FP8 block-scaled linear (own small-M kernel and cuBLASLt) vs a float64 CPU
 * reference of DeepSeek's fp8_gemm semantics, on fresh random inputs.
 *
 * Tolerances: the tensor cores sum each 128-wide block of exact e4m3 products with limited
 * accumulator precision (DeepSeek-V3 paper: ~14 bits), so each element must satisfy
 * |got - ref| <= 2e-3 * S + (bf16 ? 2^-8 |ref| : 0), S = sum_j sx sw sum_k |qx qw| (what rounding
 * can act on), and the whole output ||got - ref|| / ||ref|| <= 1e-3 (a wrong scale for one block
 * or a wrong row would show as > 1e-2). Outputs are poisoned with NaN before every call; rows
 * outside [0, m) and columns outside [0, n) must stay untouched for the own kernel.
 */
#include "tests/gpu/gpu_test.h"

#include "common/err.h"
#include "kernels/cuda/gemm_fp8.h"

struct lin {
    int m, mp, n, k, kb, nb, wsld;
    uint8_t *hw, *hx;
    float *hws, *hxs;
    double *ref, *S;
};

static void lin_make(struct lin *L, int m, int n, int k)
{
    L->m = m;
    L->mp = (m + 3) / 4 * 4;
    L->n = n;
    L->k = k;
    L->kb = k / 128;
    L->nb = (n + 127) / 128;
    L->wsld = (L->kb + 3) / 4 * 4;
    L->hw = malloc((size_t)n * k);
    L->hx = malloc((size_t)L->mp * k);
    L->hws = calloc((size_t)L->nb * L->wsld, sizeof(float));
    L->hxs = calloc((size_t)L->kb * L->mp, sizeof(float));
    L->ref = malloc((size_t)m * n * sizeof(double));
    L->S = malloc((size_t)m * n * sizeof(double));
    CHECK(L->hw && L->hx && L->hws && L->hxs && L->ref && L->S);
    for (size_t i = 0; i < (size_t)n * k; i++) L->hw[i] = gt_e4m3(60.0);
    for (size_t i = 0; i < (size_t)L->mp * k; i++) L->hx[i] = gt_e4m3(60.0);
    for (int i = 0; i < L->nb; i++)
        for (int j = 0; j < L->kb; j++)
            L->hws[i * L->wsld + j] = (float)(1e-3 * (0.5 + 1.5 * gt_uniform()));
    for (int j = 0; j < L->kb; j++)
        for (int t = 0; t < L->mp; t++)
            L->hxs[j * L->mp + t] = (float)(1e-2 * (0.5 + 1.5 * gt_uniform()));
    float wtab[256];
    for (int v = 0; v < 256; v++) wtab[v] = fp_e4m3_to_f32((uint8_t)v);
    for (int t = 0; t < m; t++)
        for (int r = 0; r < n; r++) {
            double acc = 0.0, S = 0.0;
            for (int j = 0; j < L->kb; j++) {
                double d = 0.0, da = 0.0;
                const uint8_t *wr = L->hw + (size_t)r * k + j * 128,
                              *xr = L->hx + (size_t)t * k + j * 128;
                for (int i = 0; i < 128; i++) {
                    double p = (double)wtab[wr[i]] * wtab[xr[i]];
                    d += p;
                    da += fabs(p);
                }
                double sc = (double)L->hws[(r / 128) * L->wsld + j] * L->hxs[j * L->mp + t];
                acc += d * sc;
                S += da * sc;
            }
            L->ref[(size_t)t * n + r] = acc;
            L->S[(size_t)t * n + r] = S;
        }
}

static void lin_free(struct lin *L)
{
    free(L->hw);
    free(L->hx);
    free(L->hws);
    free(L->hxs);
    free(L->ref);
    free(L->S);
}

/* compare y (host copy, [rows][n] of type) against the reference (+ base when accumulating) */
static double lin_check(const struct lin *L, const void *y, int type, const float *base,
                        const char *what)
{
    struct gt_err e = {0, 0, 0, what};
    double num = 0.0, den = 0.0;
    for (int t = 0; t < L->m; t++)
        for (int r = 0; r < L->n; r++) {
            size_t i = (size_t)t * L->n + r;
            double got =
                type == CUK_BF16 ? fp_bf16_to_f32(((const uint16_t *)y)[i]) : ((const float *)y)[i];
            double ref = L->ref[i] + (base ? base[i] : 0.0);
            double tol = 2e-3 * L->S[i] + (type == CUK_BF16 ? gt_bf16_tol(ref) : 0.0) + 1e-30;
            gt_check(&e, got, ref, tol, (long)i);
            num += (got - ref) * (got - ref);
            den += ref * ref;
        }
    double rel = sqrt(num / (den > 0 ? den : 1.0));
    fprintf(stderr, "%-40s rel. Frobenius error %.3g\n", what, rel);
    gt_report(&e);
    CHECK(rel <= (type == CUK_BF16 ? 4e-3 : 1e-3));
    return rel;
}

/* the own kernel, called directly; twice (split-K counters must reset), once accumulating */
static void test_gemv_tuned(int m, int n, int k, int type, const struct cuk_gemv_fp8_tune *tune)
{
    struct lin L;
    lin_make(&L, m, n, k);
    size_t es = type == CUK_BF16 ? 2 : 4;
    uint8_t *w = gt_up(L.hw, (size_t)n * k), *x = gt_up(L.hx, (size_t)L.mp * k);
    float *ws = gt_up(L.hws, (size_t)L.nb * L.wsld * 4),
          *xs = gt_up(L.hxs, (size_t)L.kb * L.mp * 4);
    int yld = n + 8; /* a padded stride: columns n..n+7 untouched */
    void *y = gt_dev((size_t)m * yld * es);
    size_t wsz = cuk_gemv_fp8_workspace_size_tuned(m, n, k, tune);
    void *wsp = NULL;
    if (wsz) {
        CUDA_CHECK(cudaMalloc(&wsp, wsz));
        CUDA_CHECK(cudaMemset(wsp, 0, wsz));
    }
    struct cuk_gemv_fp8_args a = {.m = m,
                                  .n = n,
                                  .k = k,
                                  .w = w,
                                  .w_scale = ws,
                                  .w_scale_ld = L.wsld,
                                  .x = x,
                                  .x_ld = k,
                                  .x_scale = xs,
                                  .x_scale_ld = L.mp,
                                  .y = y,
                                  .y_ld = yld,
                                  .y_type = type,
                                  .workspace = wsp,
                                  .workspace_size = wsz};
    char *hy = malloc((size_t)m * yld * es), *packed = malloc((size_t)m * n * es);
    float *base = malloc((size_t)m * n * 4);
    CHECK(hy && packed && base);
    char what[96];
    for (int rep = 0; rep < 3; rep++) {
        int acc = rep == 2;
        if (acc) { /* accumulate onto random fp32/bf16 values */
            for (int t = 0; t < m; t++)
                for (int r = 0; r < yld; r++) {
                    float v = (float)gt_normal();
                    if (type == CUK_BF16) {
                        ((uint16_t *)hy)[(size_t)t * yld + r] = fp_f32_to_bf16(v);
                        v = fp_bf16_to_f32(fp_f32_to_bf16(v));
                    } else {
                        ((float *)hy)[(size_t)t * yld + r] = v;
                    }
                    if (r < n) base[(size_t)t * n + r] = v;
                }
            CUDA_CHECK(cudaMemcpy(y, hy, (size_t)m * yld * es, cudaMemcpyHostToDevice));
        } else {
            CUDA_CHECK(cudaMemset(y, 0xff, (size_t)m * yld * es));
        }
        a.accumulate = acc;
        CHECK_EQ(cuk_gemv_fp8_tuned(&a, tune, 0), 0);
        gt_down(hy, y, (size_t)m * yld * es);
        for (int t = 0; t < m; t++) {
            memcpy(packed + (size_t)t * n * es, hy + (size_t)t * yld * es, (size_t)n * es);
            for (int r = n; r < yld && !acc; r++) { /* padding columns stay poisoned */
                double v = type == CUK_BF16 ? fp_bf16_to_f32(((uint16_t *)hy)[(size_t)t * yld + r])
                                            : ((float *)hy)[(size_t)t * yld + r];
                CHECK(isnan(v));
            }
        }
        snprintf(what, sizeof what, "gemv%s m=%d n=%d k=%d %s%s", tune ? " (variant)" : "", m, n, k,
                 type == CUK_BF16 ? "bf16" : "f32",
                 acc   ? " acc"
                 : rep ? " again"
                       : "");
        lin_check(&L, packed, type, acc ? base : NULL, what);
    }
    free(hy);
    free(packed);
    free(base);
    cudaFree(w);
    cudaFree(x);
    cudaFree(ws);
    cudaFree(xs);
    cudaFree(y);
    cudaFree(wsp);
    lin_free(&L);
}

static void test_gemv(int m, int n, int k, int type) { test_gemv_tuned(m, n, k, type, NULL); }

/* through gemm_fp8: cuBLASLt (use_cublas) or the dispatch (gemm_fp8_linear); returns the
 * relative Frobenius error (0 when cuBLASLt has no algorithm for fp32 output) */
static double test_gemm(struct gemm_fp8 *g, int m, int n, int k, int type, int cublas)
{
    double rel = 0;
    struct lin L;
    lin_make(&L, m, n, k);
    size_t es = type == CUK_BF16 ? 2 : 4;
    uint8_t *w = gt_up(L.hw, (size_t)n * k), *x = gt_up(L.hx, (size_t)L.mp * k);
    float *ws = gt_up(L.hws, (size_t)L.nb * L.wsld * 4),
          *xs = gt_up(L.hxs, (size_t)L.kb * L.mp * 4);
    void *y = gt_dev((size_t)L.mp * n * es);
    char err[ERR_LEN] = "";
    struct gemm_fp8_shape s = {m, n, k, type, 0, 0, 0};
    int rc = gemm_fp8_plan(g, &s, cublas, err);
    if (rc == ERR_UNSUPPORTED && type == CUK_F32) {
        fprintf(stderr, "NOTE: cuBLASLt m=%d n=%d k=%d fp32 output: %s (not used by tandem)\n", m,
                n, k, err);
        goto out;
    }
    if (rc) fprintf(stderr, "plan: %s\n", err);
    CHECK_EQ(rc, 0);
    struct cuk_gemv_fp8_args a = {.m = m,
                                  .n = n,
                                  .k = k,
                                  .w = w,
                                  .w_scale = ws,
                                  .w_scale_ld = L.wsld,
                                  .x = x,
                                  .x_ld = k,
                                  .x_scale = xs,
                                  .x_scale_ld = L.mp,
                                  .y = y,
                                  .y_ld = n,
                                  .y_type = type};
    rc = cublas ? gemm_fp8_run_cublas(g, &a, 0, err) : gemm_fp8_linear(g, &a, 0, err);
    if (rc) fprintf(stderr, "run: %s\n", err);
    CHECK_EQ(rc, 0);
    void *hy = malloc((size_t)L.mp * n * es);
    CHECK(hy != NULL);
    gt_down(hy, y, (size_t)L.mp * n * es);
    char what[96];
    snprintf(what, sizeof what, "%s m=%d n=%d k=%d %s", cublas ? "cuBLASLt" : "linear", m, n, k,
             type == CUK_BF16 ? "bf16" : "f32");
    rel = lin_check(&L, hy, type, NULL, what);
    free(hy);
out:
    cudaFree(w);
    cudaFree(x);
    cudaFree(ws);
    cudaFree(xs);
    cudaFree(y);
    lin_free(&L);
    return rel;
}

int main(void)
{
    gt_require_gpu();
    gt_state = check_seed();
    /* own kernel: M = 1..16, N = 576 (kv_a), non-multiples of 16, split-K and not */
    test_gemv(1, 576, 7168, CUK_F32);
    test_gemv(1, 576, 7168, CUK_BF16);
    test_gemv(gt_int(2, 8), 200, 1024, CUK_F32);
    test_gemv(gt_int(9, 16), 1000, 512, CUK_BF16);
    test_gemv(16, 4096, 1536, CUK_F32);
    test_gemv(gt_int(1, 16), gt_int(1, 40) * 8 + gt_int(0, 7), 128 * gt_int(1, 20), CUK_F32);
    test_gemv(8, 2048, 2048, CUK_BF16);
    /* every compiled variant of the kernel (bench_gpu compares their speed) */
    static const struct cuk_gemv_fp8_tune tunes[] = {
        {4, 0, 2, 0}, {2, 1, 2, 0}, {2, 0, 4, 1}, {4, 1, 4, 1}, {4, 0, 2, 1}};
    for (int i = 0; i < 5; i++) {
        test_gemv_tuned(gt_int(1, 8), 576, 7168, CUK_F32, &tunes[i]);
        test_gemv_tuned(gt_int(9, 16), 1536, 128 * gt_int(9, 40), CUK_BF16, &tunes[i]);
    }

    struct gemm_fp8 *g = NULL;
    char err[ERR_LEN];
    if (gemm_fp8_create(0, &g, err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    test_gemm(g, 3, 576, 7168, CUK_BF16, 0);   /* dispatch -> own kernel */
    test_gemm(g, 64, 576, 7168, CUK_BF16, 0);  /* dispatch -> cuBLASLt */
    test_gemm(g, 16, 7168, 2048, CUK_BF16, 0); /* m 9..16 with a 1..1.5-wave grid -> cuBLASLt */
    test_gemm(g, 12, 4096, 7168, CUK_F32, 0);  /* m 9..16 -> own kernel */
    test_gemm(g, 1, 576, 7168, CUK_BF16, 1);   /* M=1 padded to 4 */
    test_gemm(g, 16, 1536, 7168, CUK_BF16, 1);
    test_gemm(g, gt_int(17, 300), 1024, 512, CUK_BF16, 1);
    test_gemm(g, 128, 2048, 1536, CUK_F32, 1);
    gemm_fp8_destroy(g);
    /* exact mode (what ops_cuda uses by default): every m on the own kernel in 16-row chunks, so
     * fp32 output is exact to fp32 rounding (cuBLASLt above: ~1e-4) */
    CHECK_EQ(gemm_fp8_create(0, &g, err), 0);
    gemm_fp8_set_exact(g, 1);
    CHECK(test_gemm(g, gt_int(17, 300), 1024, 512, CUK_F32, 0) <= 1e-6);
    CHECK(test_gemm(g, 128, 2048, 1536, CUK_F32, 0) <= 1e-6);
    CHECK(test_gemm(g, 16 * gt_int(2, 8) + gt_int(1, 15), 576, 7168, CUK_F32, 0) <= 1e-6);
    test_gemm(g, gt_int(17, 100), 1536, 7168, CUK_BF16, 0);
    gemm_fp8_destroy(g);
    fprintf(stderr, "test_gemm_fp8: all passed\n");
    return 0;
}
