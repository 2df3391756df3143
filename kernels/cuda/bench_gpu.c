/* bench_gpu.c - GPU kernel benchmark: HBM copy ceiling, FP8 linears (own small-M kernel and
 * cuBLASLt in the same run), MLA decode, MLA prefill as GEMMs against the decode kernel on the
 * same causal rows (see bench_gpu.h).
 *
 * Method (docs/gpu.md): every timed op is captured `iters` times into a CUDA graph (the decode
 * step replays graphs, so launch gaps are not part of the cost), the graph is replayed twice to
 * warm up and then 5 times under CUDA events; the median replay / iters is the time per call.
 * Weights are rotated over enough copies (>= 256 MiB in all) that no call finds its weights in
 * the 50 MB L2. Inputs are random (never zeros). Effective bandwidth counts weight + activation +
 * output bytes once; TFLOP/s counts 2*M*N*K. The same run cross-checks the two FP8 paths against
 * each other (max |own - cuBLASLt| / max |cuBLASLt| at M = 1 and 16).
 */
#include "kernels/cuda/bench_gpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include <cuda_runtime_api.h>

#include "common/err.h"
#include "kernels/cpu/fpconv.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gemm_fp8.h"
#include "kernels/cuda/gemv_bf16.h"
#include "kernels/cuda/mla.h"
#include "kernels/cuda/mla_prefill.h"

struct bshape {
    const char *name;
    int n, k;
};

static const struct bshape bench_shapes[] = {
    {"q_a", 1536, 7168},     {"q_b", 24576, 1536},  {"kv_a", 576, 7168},
    {"kv_b", 32768, 512},    {"o", 7168, 16384},    {"sh_gate", 2048, 7168},
    {"sh_down", 7168, 2048}, {"gate", 18432, 7168}, {"down", 7168, 18432},
};
static const int bench_ms[] = {1, 4, 8, 16, 64, 512, 4096};

#define NS (int)(sizeof bench_shapes / sizeof bench_shapes[0])
#define NM (int)(sizeof bench_ms / sizeof bench_ms[0])

/* small-M kernel variants compared in the same run (variant 0 = the production tuning) */
static const struct cuk_gemv_fp8_tune bench_tunes[] = {
    {2, 0, 2, 0}, {4, 0, 2, 0}, {4, 0, 1, 0}, {4, 0, 3, 0}, {2, 1, 2, 1}, {2, 1, 1, 1},
};
#define NV (int)(sizeof bench_tunes / sizeof bench_tunes[0])

struct result {
    double own_us, cub_us; /* < 0: not run */
    double var_us[NV];
    double bytes, flop;
};

static unsigned long long rng_next(unsigned long long *s)
{
    unsigned long long z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* random e4m3 bytes, never NaN (0x7f / 0xff) */
static void fill_e4m3(uint8_t *p, size_t n, unsigned long long *s)
{
    size_t i = 0;
    while (i < n) {
        unsigned long long r = rng_next(s);
        for (int j = 0; j < 8 && i < n; j++, r >>= 8) {
            uint8_t v = (uint8_t)r;
            if ((v & 0x7f) == 0x7f) v ^= 0x01;
            p[i++] = v;
        }
    }
}

static void fill_scales(float *p, size_t n, unsigned long long *s)
{
    for (size_t i = 0; i < n; i++) p[i] = (float)(0.5 + (rng_next(s) >> 11) * 0x1.0p-53) * 1e-3f;
}

typedef int (*bench_fn)(void *ctx, int iter, cudaStream_t st);

/* median time per call in microseconds, or -1 on failure */
/* one result line into the log, and onto stdout too when the log is a file */
static void put_line(FILE *log, const char *line)
{
    fprintf(log, "%s\n", line);
    if (log != stdout) printf("%s\n", line);
}

static double time_graph(bench_fn fn, void *ctx, int iters, cudaStream_t st)
{
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    double res = -1.0;
    if (cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal) != cudaSuccess) return -1.0;
    int bad = 0;
    for (int i = 0; i < iters && !bad; i++) bad = fn(ctx, i, st) != 0;
    cudaError_t ce = cudaStreamEndCapture(st, &graph);
    if (bad || ce != cudaSuccess) goto out;
    if (cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) goto out;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    for (int w = 0; w < 2; w++) cudaGraphLaunch(exec, st);
    double t[5];
    for (int r = 0; r < 5; r++) {
        float ms = 0.0f;
        cudaEventRecord(e0, st);
        cudaGraphLaunch(exec, st);
        cudaEventRecord(e1, st);
        if (cudaEventSynchronize(e1) != cudaSuccess) goto out;
        cudaEventElapsedTime(&ms, e0, e1);
        t[r] = ms * 1000.0 / iters;
    }
    for (int i = 0; i < 5; i++) /* insertion sort, take the median */
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
            double x = t[j];
            t[j] = t[j - 1];
            t[j - 1] = x;
        }
    res = t[2];
out:
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    return res;
}

struct copy_ctx {
    void *a, *b;
    size_t n;
    int kernel;
};
static int copy_fn(void *c, int i, cudaStream_t st)
{
    struct copy_ctx *x = c;
    void *dst = i & 1 ? x->a : x->b;
    const void *src = i & 1 ? x->b : x->a;
    if (x->kernel) {
        struct cuk_copy_args a = {x->n, dst, src};
        return cuk_copy(&a, st);
    }
    return cudaMemcpyAsync(dst, src, x->n, cudaMemcpyDeviceToDevice, st) != cudaSuccess;
}

struct lin_ctx {
    struct gemm_fp8 *g;
    const struct cuk_gemv_fp8_tune *tune; /* non-NULL: cuk_gemv_fp8_tuned with a.workspace */
    int own;                              /* cuk_gemv_fp8 (production tuning), a.workspace */
    struct cuk_gemv_fp8_args a;
    const uint8_t *w0;
    const float *ws0;
    size_t wbytes, sbytes;
    int copies, cublas;
};
static int lin_fn(void *c, int i, cudaStream_t st)
{
    struct lin_ctx *x = c;
    struct cuk_gemv_fp8_args a = x->a;
    a.w = x->w0 + (size_t)(i % x->copies) * x->wbytes;
    a.w_scale = (const float *)((const char *)x->ws0 + (size_t)(i % x->copies) * x->sbytes);
    if (x->tune) return cuk_gemv_fp8_tuned(&a, x->tune, st);
    if (x->own) return cuk_gemv_fp8(&a, st);
    return x->cublas ? gemm_fp8_run_cublas(x->g, &a, st, NULL)
                     : gemm_fp8_linear(x->g, &a, st, NULL);
}

struct mla_ctx {
    struct cuk_mla_decode_args a;
};
static int mla_fn(void *c, int i, cudaStream_t st)
{
    (void)i;
    return cuk_mla_decode(&((struct mla_ctx *)c)->a, st);
}

struct mlap_ctx {
    struct cuk_mla_prefill *m;
    struct cuk_mla_prefill_args a;
};
static int mlap_fn(void *c, int i, cudaStream_t st)
{
    (void)i;
    struct mlap_ctx *x = c;
    return cuk_mla_prefill(x->m, &x->a, st, NULL);
}

static double max_rel_diff_bf16(const uint16_t *a, const uint16_t *b, int rows, int n, int ld)
{
    double md = 0.0, mb = 0.0;
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < n; j++) {
            double x = fp_bf16_to_f32(a[(size_t)r * ld + j]),
                   y = fp_bf16_to_f32(b[(size_t)r * ld + j]);
            if (isnan(x) || isnan(y)) return INFINITY;
            if (fabs(x - y) > md) md = fabs(x - y);
            if (fabs(y) > mb) mb = fabs(y);
        }
    return mb > 0 ? md / mb : md;
}

static int bench_linear(const struct bshape *sh, const int *ms, int nm, struct gemm_fp8 *g,
                        cudaStream_t st, unsigned long long *seed, struct result *res, FILE *log)
{
    int n = sh->n, k = sh->k, kb = k / 128, nb = (n + 127) / 128;
    int wsld = (kb + 3) / 4 * 4;
    size_t wbytes = (size_t)n * k, sbytes = (size_t)nb * wsld * sizeof(float);
    int copies = (int)(((size_t)256 << 20) / wbytes) + 1;
    if (copies > 64) copies = 64;
    int mmax = 0;
    for (int i = 0; i < nm; i++)
        if (ms[i] > mmax) mmax = ms[i];
    int mpmax = (mmax + 3) / 4 * 4;
    uint8_t *w = NULL, *x = NULL;
    float *ws = NULL, *xs = NULL;
    uint16_t *y = NULL, *y2 = NULL;
    void *vws = NULL;
    size_t vws_size = 0;
    for (int v = 0; v < NV; v++) {
        size_t z = cuk_gemv_fp8_workspace_size_tuned(16, n, k, &bench_tunes[v]);
        if (z > vws_size) vws_size = z;
    }
    for (int m = 1; m <= 16; m++) {
        size_t z = cuk_gemv_fp8_workspace_size(m, n, k);
        if (z > vws_size) vws_size = z;
    }
    uint8_t *hw = malloc(wbytes);
    float *hs = malloc(sbytes);
    uint8_t *hx = malloc((size_t)mpmax * k);
    float *hxs = malloc((size_t)kb * mpmax * sizeof(float));
    uint16_t *hy = malloc((size_t)16 * n * 2), *hy2 = malloc((size_t)16 * n * 2);
    int rc = 1;
    if (!hw || !hs || !hx || !hxs || !hy || !hy2) goto out;
    if (cudaMalloc((void **)&w, wbytes * copies) != cudaSuccess ||
        cudaMalloc((void **)&ws, sbytes * copies) != cudaSuccess ||
        cudaMalloc((void **)&x, (size_t)mpmax * k) != cudaSuccess ||
        cudaMalloc((void **)&xs, (size_t)kb * mpmax * sizeof(float)) != cudaSuccess ||
        cudaMalloc((void **)&y, (size_t)mpmax * n * 2) != cudaSuccess ||
        cudaMalloc((void **)&y2, (size_t)16 * n * 2) != cudaSuccess ||
        (vws_size && cudaMalloc(&vws, vws_size) != cudaSuccess) ||
        (vws_size && cudaMemset(vws, 0, vws_size) != cudaSuccess)) {
        fprintf(stderr, "bench %s: out of device memory\n", sh->name);
        goto out;
    }
    fill_e4m3(hw, wbytes, seed);
    fill_scales(hs, sbytes / sizeof(float), seed);
    fill_e4m3(hx, (size_t)mpmax * k, seed);
    for (size_t i = 0; i < (size_t)kb * mpmax; i++)
        hxs[i] = 1.0f / 448.0f * (float)(1 + (rng_next(seed) & 7));
    cudaMemcpy(w, hw, wbytes, cudaMemcpyHostToDevice);
    cudaMemcpy(ws, hs, sbytes, cudaMemcpyHostToDevice);
    for (int c = 1; c < copies; c++) {
        cudaMemcpy(w + (size_t)c * wbytes, w, wbytes, cudaMemcpyDeviceToDevice);
        cudaMemcpy((char *)ws + (size_t)c * sbytes, ws, sbytes, cudaMemcpyDeviceToDevice);
    }
    cudaMemcpy(x, hx, (size_t)mpmax * k, cudaMemcpyHostToDevice);
    if (cudaDeviceSynchronize() != cudaSuccess) goto out;

    for (int mi = 0; mi < nm; mi++) {
        int m = ms[mi], mp = (m + 3) / 4 * 4;
        struct result *r = &res[mi];
        r->own_us = r->cub_us = -1.0;
        for (int v = 0; v < NV; v++) r->var_us[v] = -1.0;
        r->bytes = (double)wbytes + (double)m * k + (double)m * n * 2;
        r->flop = 2.0 * m * n * k;
        /* activation scales with stride mp (what cuBLASLt needs; the own kernel accepts it) */
        float *hxs_m = malloc((size_t)kb * mp * sizeof(float));
        if (!hxs_m) goto out;
        for (int j = 0; j < kb; j++)
            for (int t = 0; t < mp; t++) hxs_m[(size_t)j * mp + t] = hxs[(size_t)j * mpmax + t];
        cudaMemcpy(xs, hxs_m, (size_t)kb * mp * sizeof(float), cudaMemcpyHostToDevice);
        free(hxs_m);
        struct lin_ctx c;
        memset(&c, 0, sizeof c);
        c.g = g;
        c.w0 = w;
        c.ws0 = ws;
        c.wbytes = wbytes;
        c.sbytes = sbytes;
        c.copies = copies;
        c.a = (struct cuk_gemv_fp8_args){.m = m,
                                         .n = n,
                                         .k = k,
                                         .w = w,
                                         .w_scale = ws,
                                         .w_scale_ld = wsld,
                                         .x = x,
                                         .x_ld = k,
                                         .x_scale = xs,
                                         .x_scale_ld = mp,
                                         .y = y,
                                         .y_ld = n,
                                         .y_type = CUK_BF16};
        double est_us = r->bytes / 2.5e6 + r->flop / 0.8e9; /* rough: 2.5 TB/s, 800 TFLOP/s */
        int iters = (int)(20000.0 / est_us);
        if (iters < 10) iters = 10;
        if (iters > 200) iters = 200;
        char err[ERR_LEN] = "";
        struct gemm_fp8_shape s = {m, n, k, CUK_BF16, 0, k, n};
        if (m <= CUK_GEMV_FP8_MAX_M) {
            if (gemm_fp8_plan(g, &s, 0, err) == 0) {
                struct lin_ctx co = c;
                co.own = 1;
                co.a.workspace = vws;
                co.a.workspace_size = vws_size;
                r->own_us = time_graph(lin_fn, &co, iters, st);
            } else {
                fprintf(stderr, "bench %s m=%d: %s\n", sh->name, m, err);
            }
        }
        if (m <= CUK_GEMV_FP8_MAX_M) {
            struct lin_ctx cv = c;
            cv.a.workspace = vws;
            cv.a.workspace_size = vws_size;
            for (int v = 0; v < NV; v++) {
                cv.tune = &bench_tunes[v];
                r->var_us[v] = time_graph(lin_fn, &cv, iters, st);
            }
        }
        if (gemm_fp8_plan(g, &s, 1, err) == 0) {
            c.cublas = 1;
            r->cub_us = time_graph(lin_fn, &c, iters, st);
        } else {
            fprintf(stderr, "bench %s m=%d cuBLASLt: %s\n", sh->name, m, err);
        }
        /* cross-check the two paths on the first weight copy */
        if ((m == 1 || m == 16) && r->own_us > 0 && r->cub_us > 0) {
            struct cuk_gemv_fp8_args a = c.a;
            a.y = y2;
            a.workspace = vws;
            a.workspace_size = vws_size;
            int e1 = cuk_gemv_fp8(&a, st);
            int e2 = gemm_fp8_run_cublas(g, &c.a, st, NULL);
            if (!e1 && !e2 && cudaStreamSynchronize(st) == cudaSuccess) {
                cudaMemcpy(hy, y, (size_t)m * n * 2, cudaMemcpyDeviceToHost);
                cudaMemcpy(hy2, y2, (size_t)m * n * 2, cudaMemcpyDeviceToHost);
                double d = max_rel_diff_bf16(hy2, hy, m, n, n);
                fprintf(log, "check %-8s m=%-4d own vs cuBLASLt: max|diff|/max|y| = %.3g\n",
                        sh->name, m, d);
                if (log != stdout)
                    printf("check %-8s m=%-4d own vs cuBLASLt: max|diff|/max|y| = %.3g\n", sh->name,
                           m, d);
            }
        }
    }
    rc = 0;
out:
    cudaFree(w);
    cudaFree(ws);
    cudaFree(x);
    cudaFree(xs);
    cudaFree(y);
    cudaFree(y2);
    cudaFree(vws);
    free(hw);
    free(hs);
    free(hx);
    free(hxs);
    free(hy);
    free(hy2);
    cudaGetLastError();
    return rc;
}

struct bf16_ctx {
    struct cuk_gemv_bf16_args a;
    const uint16_t *w0;
    size_t wbytes;
    int copies;
};
static int bf16_fn(void *c, int i, cudaStream_t st)
{
    struct bf16_ctx *x = c;
    struct cuk_gemv_bf16_args a = x->a;
    a.w = (const uint16_t *)((const char *)x->w0 + (size_t)(i % x->copies) * x->wbytes);
    return cuk_gemv_bf16(&a, st);
}

/* W16A32 small-M linear: lm_head and the router logits (bf16 weights, fp32 activations) */
static void bench_bf16(cudaStream_t st, unsigned long long *seed, double copy_gbs, FILE *log)
{
    static const struct {
        const char *name;
        int n, k;
    } sh[] = {{"lm_head", 129280, 7168}, {"router", 256, 7168}};
    static const int ms[] = {1, 4, 8, 16};
    for (int si = 0; si < 2; si++) {
        size_t wbytes = (size_t)sh[si].n * sh[si].k * 2;
        int copies = (int)(((size_t)256 << 20) / wbytes) + 1;
        if (copies > 64) copies = 64;
        uint16_t *w = NULL, *hw = malloc(wbytes);
        float *x = NULL, *y = NULL, *hx = malloc((size_t)16 * sh[si].k * 4);
        if (!hw || !hx || cudaMalloc((void **)&w, wbytes * copies) != cudaSuccess ||
            cudaMalloc((void **)&x, (size_t)16 * sh[si].k * 4) != cudaSuccess ||
            cudaMalloc((void **)&y, (size_t)16 * sh[si].n * 4) != cudaSuccess)
            goto next;
        for (size_t i = 0; i < wbytes / 2; i++)
            hw[i] = fp_f32_to_bf16((float)((rng_next(seed) >> 11) * 0x1.0p-53 - 0.5));
        for (size_t i = 0; i < (size_t)16 * sh[si].k; i++)
            hx[i] = (float)((rng_next(seed) >> 11) * 0x1.0p-53 - 0.5);
        cudaMemcpy(w, hw, wbytes, cudaMemcpyHostToDevice);
        for (int c = 1; c < copies; c++)
            cudaMemcpy((char *)w + (size_t)c * wbytes, w, wbytes, cudaMemcpyDeviceToDevice);
        cudaMemcpy(x, hx, (size_t)16 * sh[si].k * 4, cudaMemcpyHostToDevice);
        for (int mi = 0; mi < 4; mi++) {
            int m = ms[mi];
            struct bf16_ctx c = {{.m = m,
                                  .n = sh[si].n,
                                  .k = sh[si].k,
                                  .w = w,
                                  .x = x,
                                  .x_ld = sh[si].k,
                                  .y = y,
                                  .y_ld = sh[si].n},
                                 w,
                                 wbytes,
                                 copies};
            int iters = wbytes > ((size_t)100 << 20) ? 10 : 100;
            double us = time_graph(bf16_fn, &c, iters, st);
            double bytes = (double)wbytes + (double)m * sh[si].k * 4 + (double)m * sh[si].n * 4;
            char line[200];
            snprintf(line, sizeof line,
                     "gemv_bf16 %-8s M=%-3d %6d x %5d  %9.2f us  %7.0f GB/s (%5.1f%% of copy)  "
                     "%6.1f TFLOP/s",
                     sh[si].name, m, sh[si].n, sh[si].k, us, bytes / us / 1e3,
                     100.0 * bytes / us / 1e3 / copy_gbs, 2.0 * m * sh[si].n * sh[si].k / us / 1e6);
            put_line(log, line);
        }
    next:
        cudaFree(w);
        cudaFree(x);
        cudaFree(y);
        free(hw);
        free(hx);
        cudaGetLastError();
    }
}

static void bench_mla(cudaStream_t st, unsigned long long *seed, double copy_gbs, FILE *log)
{
    static const int cases[][2] = {{1, 4096}, {8, 4096}, {1, 32768}, {16, 8192}};
    const int H = 128, bt = 64;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int nq = cases[ci][0], len = cases[ci][1];
        int nblk = (len + bt - 1) / bt;
        size_t rows = (size_t)nq * nblk * bt;
        uint16_t *cache = NULL;
        float *q = NULL, *o = NULL;
        int32_t *table = NULL, *lens = NULL;
        void *wsp = NULL;
        size_t wsz = cuk_mla_decode_workspace_size(nq, H, len);
        uint16_t *hc = malloc(rows * CUK_MLA_DIM * 2);
        float *hq = malloc((size_t)nq * H * CUK_MLA_DIM * 4);
        int32_t *ht = malloc((size_t)nq * nblk * 4), *hl = malloc((size_t)nq * 4);
        if (!hc || !hq || !ht || !hl) goto next;
        for (size_t i = 0; i < rows * CUK_MLA_DIM; i++)
            hc[i] = fp_f32_to_bf16((float)((rng_next(seed) >> 11) * 0x1.0p-53 - 0.5));
        for (size_t i = 0; i < (size_t)nq * H * CUK_MLA_DIM; i++)
            hq[i] = (float)((rng_next(seed) >> 11) * 0x1.0p-53 - 0.5);
        for (int b = 0; b < nq; b++) {
            hl[b] = len;
            for (int j = 0; j < nblk; j++)
                ht[b * nblk + j] = (nq - 1 - b) * nblk + j; /* shuffled */
        }
        if (cudaMalloc((void **)&cache, rows * CUK_MLA_DIM * 2) != cudaSuccess ||
            cudaMalloc((void **)&q, (size_t)nq * H * CUK_MLA_DIM * 4) != cudaSuccess ||
            cudaMalloc((void **)&o, (size_t)nq * H * CUK_MLA_LORA * 4) != cudaSuccess ||
            cudaMalloc((void **)&table, (size_t)nq * nblk * 4) != cudaSuccess ||
            cudaMalloc((void **)&lens, (size_t)nq * 4) != cudaSuccess ||
            (wsz && cudaMalloc(&wsp, wsz) != cudaSuccess))
            goto next;
        cudaMemcpy(cache, hc, rows * CUK_MLA_DIM * 2, cudaMemcpyHostToDevice);
        cudaMemcpy(q, hq, (size_t)nq * H * CUK_MLA_DIM * 4, cudaMemcpyHostToDevice);
        cudaMemcpy(table, ht, (size_t)nq * nblk * 4, cudaMemcpyHostToDevice);
        cudaMemcpy(lens, hl, (size_t)nq * 4, cudaMemcpyHostToDevice);
        for (int exact = 0; exact < 2; exact++) {
            struct mla_ctx c = {{.n_q = nq,
                                 .n_heads = H,
                                 .q = q,
                                 .q_ld = H * CUK_MLA_DIM,
                                 .cache = cache,
                                 .block_tokens = bt,
                                 .block_table = table,
                                 .bt_ld = nblk,
                                 .seq_len = lens,
                                 .max_seq_len = len,
                                 .scale = 0.1352337789f,
                                 .out = o,
                                 .out_ld = H * CUK_MLA_LORA,
                                 .exact = exact,
                                 .workspace = wsp,
                                 .workspace_size = wsz}};
            double us = time_graph(mla_fn, &c, 20, st);
            double bytes = (double)nq * len * CUK_MLA_DIM * 2;
            double flop = 2.0 * nq * H * len * (CUK_MLA_DIM + CUK_MLA_LORA);
            char line[256];
            snprintf(line, sizeof line,
                     "mla_decode %-11s n_q=%-3d ctx=%-6d H=%d %9.1f us %7.1f GB/s (%4.1f%% of "
                     "copy) %6.1f TFLOP/s",
                     exact ? "fp32 cores" : "tensor core", nq, len, H, us, bytes / us / 1e3,
                     100.0 * bytes / us / 1e3 / copy_gbs, flop / us / 1e6);
            put_line(log, line);
        }
    next:
        cudaFree(cache);
        cudaFree(q);
        cudaFree(o);
        cudaFree(table);
        cudaFree(lens);
        cudaFree(wsp);
        free(hc);
        free(hq);
        free(ht);
        free(hl);
        cudaGetLastError();
    }
}

/* MLA prefill of one sequence from position 0, n_q queries, 128 heads: cuk_mla_prefill (TF32
 * GEMMs, 1 GiB of scores a chunk) and the same rows through cuk_mla_decode (tensor cores,
 * seq_len = pos + 1, every row the same table). TFLOP/s counts the causal triangle for both:
 * 2*H*(576+512) FLOP per (query, visible position), n_q (n_q + 1) / 2 pairs (the GEMMs also
 * compute each chunk's masked corner, which is not counted). q holds 64 random queries repeated.
 * The run cross-checks the two on the last 16 queries (the longest rows). */
static void bench_mla_prefill(cudaStream_t st, unsigned long long *seed, FILE *log)
{
    static const int cases[] = {2048, 8192, 16384};
    const int H = 128, bt = 64, qrep = 64, nchk = 16;
    const size_t score_bytes = (size_t)1 << 30;
    const size_t qrow = (size_t)H * CUK_MLA_DIM, orow = (size_t)H * CUK_MLA_LORA;
    struct cuk_mla_prefill *m = NULL;
    char err[ERR_LEN] = "";
    if (cuk_mla_prefill_create(&m, err)) {
        fprintf(stderr, "bench mla_prefill: %s\n", err);
        return;
    }
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int n = cases[ci], nblk = (n + bt - 1) / bt;
        size_t rows = (size_t)nblk * bt;
        uint16_t *cache = NULL;
        float *q = NULL, *o = NULL;
        int32_t *table = NULL, *lens = NULL;
        void *pws = NULL, *dws = NULL;
        size_t pwsz = cuk_mla_prefill_workspace(n, H, score_bytes);
        size_t dwsz = cuk_mla_decode_workspace_size(n, H, n);
        uint16_t *hc = malloc(rows * CUK_MLA_DIM * 2);
        float *hq = malloc(qrep * qrow * 4), *hp = malloc(nchk * orow * 4),
              *hd = malloc(nchk * orow * 4);
        int32_t *ht = malloc((size_t)n * nblk * 4), *hl = malloc((size_t)n * 4);
        if (!hc || !hq || !hp || !hd || !ht || !hl || !pwsz) goto next;
        for (size_t i = 0; i < rows * CUK_MLA_DIM; i++)
            hc[i] = fp_f32_to_bf16((float)((rng_next(seed) >> 11) * 0x1.0p-53 - 0.5));
        for (size_t i = 0; i < qrep * qrow; i++)
            hq[i] = (float)((rng_next(seed) >> 11) * 0x1.0p-53 - 0.5);
        for (int b = 0; b < n; b++) {
            hl[b] = b + 1;
            for (int j = 0; j < nblk; j++) ht[(size_t)b * nblk + j] = nblk - 1 - j; /* shuffled */
        }
        if (cudaMalloc((void **)&cache, rows * CUK_MLA_DIM * 2) != cudaSuccess ||
            cudaMalloc((void **)&q, (size_t)n * qrow * 4) != cudaSuccess ||
            cudaMalloc((void **)&o, (size_t)n * orow * 4) != cudaSuccess ||
            cudaMalloc((void **)&table, (size_t)n * nblk * 4) != cudaSuccess ||
            cudaMalloc((void **)&lens, (size_t)n * 4) != cudaSuccess ||
            cudaMalloc(&pws, pwsz) != cudaSuccess ||
            (dwsz && cudaMalloc(&dws, dwsz) != cudaSuccess)) {
            fprintf(stderr, "bench mla_prefill n_q=%d: out of device memory\n", n);
            goto next;
        }
        cudaMemcpy(cache, hc, rows * CUK_MLA_DIM * 2, cudaMemcpyHostToDevice);
        cudaMemcpy(q, hq, qrep * qrow * 4, cudaMemcpyHostToDevice);
        for (int done = qrep; done < n;) { /* repeat the random queries by doubling */
            int k = done < n - done ? done : n - done;
            cudaMemcpy(q + (size_t)done * qrow, q, (size_t)k * qrow * 4, cudaMemcpyDeviceToDevice);
            done += k;
        }
        cudaMemcpy(table, ht, (size_t)n * nblk * 4, cudaMemcpyHostToDevice);
        cudaMemcpy(lens, hl, (size_t)n * 4, cudaMemcpyHostToDevice);
        struct mlap_ctx pc = {m,
                              {.n_q = n,
                               .n_heads = H,
                               .pos0 = 0,
                               .max_ctx = n,
                               .q = q,
                               .cache = cache,
                               .block_tokens = bt,
                               .block_table = table,
                               .scale = 0.1352337789f,
                               .out = o,
                               .exact = 0,
                               .ws = pws,
                               .ws_bytes = pwsz}};
        struct mla_ctx dc = {{.n_q = n,
                              .n_heads = H,
                              .q = q,
                              .q_ld = (int)qrow,
                              .cache = cache,
                              .block_tokens = bt,
                              .block_table = table,
                              .bt_ld = nblk,
                              .seq_len = lens,
                              .max_seq_len = n,
                              .scale = 0.1352337789f,
                              .out = o,
                              .out_ld = (int)orow,
                              .exact = 0,
                              .workspace = dws,
                              .workspace_size = dwsz}};
        double flop = 2.0 * H * (CUK_MLA_DIM + CUK_MLA_LORA) * ((double)n * (n + 1) / 2);
        int iters = (int)(20000.0 / (flop / 0.4e9)); /* ~20 ms a replay at 400 TFLOP/s */
        if (iters < 1) iters = 1;
        if (iters > 10) iters = 10;
        double pus = time_graph(mlap_fn, &pc, iters, st);
        double dus = time_graph(mla_fn, &dc, iters, st);
        /* cross-check on the last nchk queries */
        double diff = -1.0;
        if (pus > 0 && dus > 0 && cuk_mla_prefill(m, &pc.a, st, NULL) == 0 &&
            cudaMemcpyAsync(hp, o + (size_t)(n - nchk) * orow, nchk * orow * 4,
                            cudaMemcpyDeviceToHost, st) == cudaSuccess &&
            cuk_mla_decode(&dc.a, st) == 0 &&
            cudaMemcpyAsync(hd, o + (size_t)(n - nchk) * orow, nchk * orow * 4,
                            cudaMemcpyDeviceToHost, st) == cudaSuccess &&
            cudaStreamSynchronize(st) == cudaSuccess) {
            double md = 0.0, mp = 0.0;
            for (size_t i = 0; i < nchk * orow; i++) {
                double d = fabs((double)hp[i] - hd[i]);
                if (isnan(d)) md = INFINITY;
                else if (d > md) md = d;
                if (fabs(hp[i]) > mp) mp = fabs(hp[i]);
            }
            diff = mp > 0 ? md / mp : md;
        }
        long per_chunk = (long)(score_bytes / ((size_t)H * 4 * n));
        char line[256];
        snprintf(line, sizeof line,
                 "mla_prefill tensor core n_q=%-5d pos0=0 H=%d %9.1f us %6.1f TFLOP/s (causal; "
                 "%ld queries a chunk)",
                 n, H, pus, pus > 0 ? flop / pus / 1e6 : 0.0, per_chunk < n ? per_chunk : n);
        put_line(log, line);
        snprintf(line, sizeof line,
                 "mla_decode  tensor core n_q=%-5d pos0=0 H=%d %9.1f us %6.1f TFLOP/s (causal "
                 "rows); prefill %.2fx faster, max|diff|/max|out| %.3g",
                 n, H, dus, dus > 0 ? flop / dus / 1e6 : 0.0, pus > 0 && dus > 0 ? dus / pus : 0.0,
                 diff);
        put_line(log, line);
    next:
        cudaFree(cache);
        cudaFree(q);
        cudaFree(o);
        cudaFree(table);
        cudaFree(lens);
        cudaFree(pws);
        cudaFree(dws);
        free(hc);
        free(hq);
        free(hp);
        free(hd);
        free(ht);
        free(hl);
        cudaGetLastError();
    }
    cuk_mla_prefill_destroy(m);
}

int bench_gpu_main(int argc, char **argv)
{
    const char *out_path = NULL;
    int quick = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc) out_path = argv[++i];
        else if (!strcmp(argv[i], "--quick")) quick = 1;
        else {
            fprintf(stderr, "usage: bench gpu [--out FILE] [--quick]\n");
            return 1;
        }
    }
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 1) {
        fprintf(stderr, "bench gpu: no CUDA device\n");
        return 77;
    }
    struct cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    FILE *log = stdout;
    if (out_path && !(log = fopen(out_path, "w"))) {
        fprintf(stderr, "bench gpu: cannot write %s\n", out_path);
        return 1;
    }
    cudaStream_t st;
    if (cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking) != cudaSuccess) return 1;
    unsigned long long seed = 0x5eed1234abcdull;
    fprintf(log, "device: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount,
            prop.l2CacheSize >> 20);

    /* HBM copy ceiling: 1 GiB device-to-device, bytes read + written, cudaMemcpy and a kernel;
     * the larger is the ceiling the ratios use */
    struct copy_ctx cc = {NULL, NULL, (size_t)1 << 30, 0};
    double copy_gbs = 0.0, memcpy_gbs = 0.0, kcopy_gbs = 0.0;
    if (cudaMalloc(&cc.a, cc.n) == cudaSuccess && cudaMalloc(&cc.b, cc.n) == cudaSuccess) {
        cudaMemset(cc.a, 1, cc.n);
        cudaMemset(cc.b, 2, cc.n);
        double us = time_graph(copy_fn, &cc, 10, st);
        memcpy_gbs = us > 0 ? 2.0 * cc.n / us / 1e3 : 0.0;
        cc.kernel = 1;
        us = time_graph(copy_fn, &cc, 10, st);
        kcopy_gbs = us > 0 ? 2.0 * cc.n / us / 1e3 : 0.0;
    }
    cudaFree(cc.a);
    cudaFree(cc.b);
    copy_gbs = memcpy_gbs > kcopy_gbs ? memcpy_gbs : kcopy_gbs;
    fprintf(
        log,
        "HBM copy bandwidth (1 GiB D2D, read+write): cudaMemcpy %.0f GB/s, copy kernel %.0f GB/s\n",
        memcpy_gbs, kcopy_gbs);
    if (copy_gbs <= 0) return 1;

    struct gemm_fp8 *g = NULL;
    char err[ERR_LEN];
    if (gemm_fp8_create(0, &g, err)) {
        fprintf(stderr, "bench gpu: %s\n", err);
        return 1;
    }
    static const int quick_ms[] = {1, 16, 4096};
    const int *ms = quick ? quick_ms : bench_ms;
    int nm = quick ? 3 : NM;
    struct result res[NS][NM];
    for (int si = 0; si < NS; si++)
        for (int mi = 0; mi < NM; mi++) {
            memset(&res[si][mi], 0, sizeof res[si][mi]);
            res[si][mi].own_us = res[si][mi].cub_us = res[si][mi].var_us[0] = -1.0;
        }
    fprintf(log, "\n%-8s %5s %6s %6s | %9s %8s %6s %7s | %9s %8s %6s %7s | %s\n", "shape", "M", "N",
            "K", "own us", "GB/s", "%copy", "TFLOP/s", "cuBLASLt", "GB/s", "%copy", "TFLOP/s",
            "cuBLASLt/own, path of gemm_fp8_linear");
    for (int si = 0; si < NS; si++) {
        if (bench_linear(&bench_shapes[si], ms, nm, g, st, &seed, res[si], log)) continue;
        for (int mi = 0; mi < nm; mi++) {
            struct result *r = &res[si][mi];
            char a[64] = "        -        -      -       -",
                 b[64] = "        -        -      -       -", sp[32] = "-";
            if (r->own_us > 0)
                snprintf(a, sizeof a, "%9.2f %8.0f %5.1f%% %7.1f", r->own_us,
                         r->bytes / r->own_us / 1e3, 100.0 * r->bytes / r->own_us / 1e3 / copy_gbs,
                         r->flop / r->own_us / 1e6);
            if (r->cub_us > 0)
                snprintf(b, sizeof b, "%9.2f %8.0f %5.1f%% %7.1f", r->cub_us,
                         r->bytes / r->cub_us / 1e3, 100.0 * r->bytes / r->cub_us / 1e3 / copy_gbs,
                         r->flop / r->cub_us / 1e6);
            const char *path = cuk_gemv_fp8_prefer(ms[mi], bench_shapes[si].n, bench_shapes[si].k)
                                   ? "own"
                                   : "cuBLASLt";
            if (r->own_us > 0 && r->cub_us > 0)
                snprintf(sp, sizeof sp, "%.2f  %s", r->cub_us / r->own_us, path);
            else snprintf(sp, sizeof sp, "-     %s", path);
            fprintf(log, "%-8s %5d %6d %6d | %s | %s | %s\n", bench_shapes[si].name, ms[mi],
                    bench_shapes[si].n, bench_shapes[si].k, a, b, sp);
        }
    }
    /* small-M variants: time per call, and the mean time ratio to variant 0 over M = 1..16 */
    double vsum[NV] = {0};
    int vcnt[NV] = {0};
    fprintf(log,
            "\nsmall-M kernel variants (unroll, occupancy, CTAs/SM target, late x), us per "
            "call:\n%-8s %5s",
            "shape", "M");
    for (int v = 0; v < NV; v++)
        fprintf(log, " v%d(%d,%d,%d,%d)", v, bench_tunes[v].unroll, bench_tunes[v].occupancy,
                bench_tunes[v].ctas_per_sm, bench_tunes[v].late_x);
    fprintf(log, "\n");
    for (int si = 0; si < NS; si++)
        for (int mi = 0; mi < nm; mi++) {
            struct result *r = &res[si][mi];
            if (r->var_us[0] <= 0) continue;
            fprintf(log, "%-8s %5d", bench_shapes[si].name, ms[mi]);
            for (int v = 0; v < NV; v++) {
                fprintf(log, " %13.2f", r->var_us[v]);
                if (r->var_us[v] > 0) {
                    vsum[v] += r->var_us[v] / r->var_us[0];
                    vcnt[v]++;
                }
            }
            fprintf(log, "\n");
        }
    char vline[256];
    int vl = snprintf(vline, sizeof vline, "variants, mean time vs v0 over all shapes, M<=16:");
    for (int v = 0; v < NV && vl < (int)sizeof vline; v++)
        vl += snprintf(vline + vl, sizeof vline - vl, " v%d %.3f", v,
                       vcnt[v] ? vsum[v] / vcnt[v] : 0.0);
    fprintf(log, "%s\n\n", vline);
    bench_mla(st, &seed, copy_gbs, log);
    bench_mla_prefill(st, &seed, log);
    bench_bf16(st, &seed, copy_gbs, log);
    gemm_fp8_destroy(g);
    cudaStreamDestroy(st);
    if (log != stdout) fclose(log);

    /* the short table, last */
    printf("%s\n", vline);
    printf("\nHBM copy: cudaMemcpy %.0f GB/s, kernel %.0f GB/s. FP8 linear per call (graph "
           "replay), own vs cuBLASLt:\n",
           memcpy_gbs, kcopy_gbs);
    printf("%-8s %6s | %7s %6s %7s | %7s %6s %7s %-8s | %9s %7s\n", "shape", "W MB", "M=1 own",
           "%copy", "cuBL M4", "M16 own", "%copy", "cuBL", "path", "M4096 us", "TFLOP/s");
    for (int si = 0; si < NS; si++) {
        const struct bshape *sh = &bench_shapes[si];
        double w_mb = (double)sh->n * sh->k / 1e6;
        struct result *r1 = NULL, *r16 = NULL, *rb = NULL;
        for (int mi = 0; mi < nm; mi++) {
            if (ms[mi] == 1) r1 = &res[si][mi];
            if (ms[mi] == 16) r16 = &res[si][mi];
            if (ms[mi] == 4096) rb = &res[si][mi];
        }
        printf("%-8s %6.1f | %7.2f %5.1f%% %7.2f | %7.2f %5.1f%% %7.2f %-8s | %9.1f %7.0f\n",
               sh->name, w_mb, r1 ? r1->own_us : -1,
               r1 && r1->own_us > 0 ? 100.0 * r1->bytes / r1->own_us / 1e3 / copy_gbs : 0,
               r1 ? r1->cub_us : -1, r16 ? r16->own_us : -1,
               r16 && r16->own_us > 0 ? 100.0 * r16->bytes / r16->own_us / 1e3 / copy_gbs : 0,
               r16 ? r16->cub_us : -1, cuk_gemv_fp8_prefer(16, sh->n, sh->k) ? "own" : "cuBLASLt",
               rb ? rb->cub_us : -1, rb && rb->cub_us > 0 ? rb->flop / rb->cub_us / 1e6 : 0);
    }
    return 0;
}
