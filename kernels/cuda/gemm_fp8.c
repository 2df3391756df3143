/* gemm_fp8.c - cuBLASLt block-scaled FP8 plans and the M-based dispatch (see gemm_fp8.h).
 *
 * A plan is one matmul descriptor (fp32 compute, A transposed, A/B scale modes BLK128x128_32F /
 * VEC128_32F), the A/B/C layouts and the heuristic's first algorithm for the workspace we own;
 * plans live in a small array searched linearly (a model has ~10 distinct linear shapes per batch
 * bucket). Scale pointers change per call, so gemm_fp8_run_cublas writes them into the cached
 * descriptor just before cublasLtMatmul -- hence one thread at a time per gemm_fp8.
 * Column-major view used with cuBLASLt: W [n][k] row-major is a k x n matrix with ld k (op = T),
 * x [mp][x_ld] is k x mp with ld x_ld, y [mp][y_ld] is n x mp with ld y_ld. If cuBLASLt has no
 * algorithm for that operand order, the plan swaps A and B (NVIDIA's sample order: activations
 * VEC128 as A) and transposes the n x mp result into y (plan_try). The scale pointers must be set
 * before the heuristic (it rejects block scaling without them), so plans set a dummy device
 * pointer; runs set the real ones.
 */
#include "kernels/cuda/gemm_fp8.h"
#include "kernels/cuda/elementwise.h"

#include <stdlib.h>
#include <string.h>

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include "common/err.h"
#include "common/log.h"

struct gemm_plan {
    struct gemm_fp8_shape key; /* key.m is mp */
    int swapped;               /* 0: A = W, D = y; 1: A = x, D = y^T in g->tbuf */
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
};

struct gemm_fp8 {
    cublasLtHandle_t lt;
    void *ws; /* cuBLASLt workspace */
    size_t ws_size;
    void *gemv_ws; /* small-M kernel workspace (zeroed; self-resetting) */
    size_t gemv_ws_size;
    void *tbuf; /* y^T scratch of swapped plans */
    size_t tbuf_size;
    struct gemm_plan *plans;
    int n_plans, cap_plans;
    int exact; /* gemm_fp8_set_exact: own kernel for every m */
};

static int round4(int v) { return (v + 3) / 4 * 4; }

static void shape_norm(const struct gemm_fp8_shape *s, struct gemm_fp8_shape *k)
{
    *k = *s;
    k->m = round4(s->m);
    if (k->x_ld == 0) k->x_ld = s->k;
    if (k->y_ld == 0) k->y_ld = s->n;
    k->accumulate = s->accumulate ? 1 : 0;
}

static struct gemm_plan *plan_find(struct gemm_fp8 *g, const struct gemm_fp8_shape *k)
{
    for (int i = 0; i < g->n_plans; i++)
        if (memcmp(&g->plans[i].key, k, sizeof *k) == 0) return &g->plans[i];
    return NULL;
}

static void plan_fini(struct gemm_plan *p)
{
    if (p->desc) cublasLtMatmulDescDestroy(p->desc);
    if (p->la) cublasLtMatrixLayoutDestroy(p->la);
    if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
    if (p->lc) cublasLtMatrixLayoutDestroy(p->lc);
}

int gemm_fp8_create(size_t workspace_bytes, struct gemm_fp8 **out, char *err)
{
    *out = NULL;
    struct gemm_fp8 *g = calloc(1, sizeof *g);
    if (!g) return err_set(err, ERR_NOMEM, "gemm_fp8: out of memory");
    g->ws_size = workspace_bytes ? workspace_bytes : (size_t)32 << 20;
    if (cublasLtCreate(&g->lt) != CUBLAS_STATUS_SUCCESS) {
        free(g);
        return err_set(err, ERR_CUDA, "gemm_fp8: cublasLtCreate failed");
    }
    cudaError_t e = cudaMalloc(&g->ws, g->ws_size);
    if (e != cudaSuccess) {
        gemm_fp8_destroy(g);
        return err_set(err, ERR_CUDA, "gemm_fp8: workspace of %zu bytes: %s", g->ws_size,
                       cudaGetErrorString(e));
    }
    *out = g;
    return 0;
}

void gemm_fp8_destroy(struct gemm_fp8 *g)
{
    if (!g) return;
    for (int i = 0; i < g->n_plans; i++) plan_fini(&g->plans[i]);
    free(g->plans);
    cudaFree(g->ws);
    cudaFree(g->gemv_ws);
    cudaFree(g->tbuf);
    if (g->lt) cublasLtDestroy(g->lt);
    free(g);
}

#define LT_TRY(call, what)                                                                         \
    do {                                                                                           \
        cublasStatus_t st_ = (call);                                                               \
        if (st_ != CUBLAS_STATUS_SUCCESS) {                                                        \
            rc = err_set(err, st_ == CUBLAS_STATUS_NOT_SUPPORTED ? ERR_UNSUPPORTED : ERR_CUDA,     \
                         "gemm_fp8 %dx%dx%d: %s: %s", k.m, k.n, k.k, (what),                       \
                         cublasGetStatusName(st_));                                                \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

/* One cuBLASLt configuration. swapped = 0: A = W (k x n, op T, BLK128x128 scales), B = x (k x mp,
 * VEC128), D = y (n x mp, ld y_ld). swapped = 1 (NVIDIA's sample order): A = x (k x mp, op T,
 * VEC128), B = W (k x n, op N, BLK128x128), D = y^T (mp x n, ld mp) in a scratch buffer that
 * cuk_transpose turns into y. Both read the scale grids with the same strides. */
static int plan_try(struct gemm_fp8 *g, const struct gemm_fp8_shape *key, int swapped,
                    struct gemm_plan *out, char *err)
{
    struct gemm_fp8_shape k = *key;
    struct gemm_plan p;
    memset(&p, 0, sizeof p);
    p.key = k;
    p.swapped = swapped;
    int rc = 0;
    cublasLtMatmulPreference_t pref = NULL;
    cudaDataType_t yt = k.y_type == CUK_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    LT_TRY(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc");
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    LT_TRY(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta),
           "transa");
    LT_TRY(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb),
           "transb");
    int32_t blk = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F,
            vec = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    int32_t ma = swapped ? vec : blk, mb = swapped ? blk : vec;
    LT_TRY(
        cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &ma, sizeof ma),
        "a scale mode");
    LT_TRY(
        cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mb, sizeof mb),
        "b scale mode");
    /* the heuristic rejects block scaling without scale pointers: any device pointer will do here,
     * runs set the real ones */
    const void *dummy = g->ws;
    LT_TRY(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &dummy,
                                          sizeof dummy),
           "a scale");
    LT_TRY(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &dummy,
                                          sizeof dummy),
           "b scale");
    if (!swapped) {
        LT_TRY(cublasLtMatrixLayoutCreate(&p.la, CUDA_R_8F_E4M3, k.k, k.n, k.k), "layout a");
        LT_TRY(cublasLtMatrixLayoutCreate(&p.lb, CUDA_R_8F_E4M3, k.k, k.m, k.x_ld), "layout b");
        LT_TRY(cublasLtMatrixLayoutCreate(&p.lc, yt, k.n, k.m, k.y_ld), "layout c");
    } else {
        LT_TRY(cublasLtMatrixLayoutCreate(&p.la, CUDA_R_8F_E4M3, k.k, k.m, k.x_ld), "layout a");
        LT_TRY(cublasLtMatrixLayoutCreate(&p.lb, CUDA_R_8F_E4M3, k.k, k.n, k.k), "layout b");
        LT_TRY(cublasLtMatrixLayoutCreate(&p.lc, yt, k.m, k.n, k.m), "layout c");
    }
    LT_TRY(cublasLtMatmulPreferenceCreate(&pref), "preference");
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                &g->ws_size, sizeof g->ws_size),
           "workspace pref");
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    LT_TRY(cublasLtMatmulAlgoGetHeuristic(g->lt, p.desc, p.la, p.lb, p.lc, p.lc, pref, 1, &res,
                                          &found),
           "heuristic");
    if (found < 1) {
        rc = err_set(err, ERR_UNSUPPORTED, "gemm_fp8 %dx%dx%d: cuBLASLt found no algorithm", k.m,
                     k.n, k.k);
        goto fail;
    }
    p.algo = res.algo;
    cublasLtMatmulPreferenceDestroy(pref);
    *out = p;
    return 0;
fail:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    plan_fini(&p);
    return rc;
}

static int plan_cublas(struct gemm_fp8 *g, const struct gemm_fp8_shape *key, char *err)
{
    struct gemm_plan p;
    char err1[ERR_LEN] = "";
    int rc = plan_try(g, key, 0, &p, err1);
    if (rc) {
        rc = plan_try(g, key, 1, &p, err);
        if (rc) {
            LOG_WARN("gemm", "cuBLASLt has no plan for %dx%dx%d: %s; swapped: %s", key->m, key->n,
                     key->k, err1, err ? err : "");
            return rc;
        }
        LOG_INFO("gemm", "cuBLASLt %dx%dx%d: swapped operand order (y^T + transpose); direct: %s",
                 key->m, key->n, key->k, err1);
        size_t need = (size_t)key->m * key->n * (key->y_type == CUK_BF16 ? 2 : 4);
        if (need > g->tbuf_size) {
            void *t = NULL;
            cudaError_t e = cudaMalloc(&t, need);
            if (e != cudaSuccess) {
                plan_fini(&p);
                return err_set(err, ERR_CUDA, "gemm_fp8_plan: %zu bytes: %s", need,
                               cudaGetErrorString(e));
            }
            cudaFree(g->tbuf);
            g->tbuf = t;
            g->tbuf_size = need;
        }
    }
    if (g->n_plans == g->cap_plans) {
        int cap = g->cap_plans ? 2 * g->cap_plans : 16;
        struct gemm_plan *np = realloc(g->plans, (size_t)cap * sizeof *np);
        if (!np) {
            plan_fini(&p);
            return err_set(err, ERR_NOMEM, "gemm_fp8: out of memory");
        }
        g->plans = np;
        g->cap_plans = cap;
    }
    g->plans[g->n_plans++] = p;
    return 0;
}

int gemm_fp8_plan(struct gemm_fp8 *g, const struct gemm_fp8_shape *s, int use_cublas, char *err)
{
    if (!g || !s || s->m < 1 || s->n < 1 || s->k < 128 || s->k % 128 ||
        (s->y_type != CUK_F32 && s->y_type != CUK_BF16))
        return err_set(err, ERR_INVAL, "gemm_fp8_plan: bad shape");
    struct gemm_fp8_shape k;
    shape_norm(s, &k);
    if (k.x_ld < k.k || k.y_ld < k.n) return err_set(err, ERR_INVAL, "gemm_fp8_plan: bad strides");
    /* what gemm_fp8_linear will use: exact mode runs m > 16 as 16-row chunks of the own kernel */
    int m_own = s->m;
    if (g->exact && m_own > CUK_GEMV_FP8_MAX_M) m_own = CUK_GEMV_FP8_MAX_M;
    if (!g->exact && !cuk_gemv_fp8_prefer(s->m, s->n, s->k)) use_cublas = 1;
    if (m_own <= CUK_GEMV_FP8_MAX_M) {
        size_t need = cuk_gemv_fp8_workspace_size(m_own, s->n, s->k);
        if (g->exact && s->m > CUK_GEMV_FP8_MAX_M) { /* the last chunk may be shorter */
            size_t r = cuk_gemv_fp8_workspace_size(
                s->m % CUK_GEMV_FP8_MAX_M ? s->m % CUK_GEMV_FP8_MAX_M : m_own, s->n, s->k);
            need = r > need ? r : need;
        }
        if (need > g->gemv_ws_size) {
            void *p = NULL;
            cudaError_t e = cudaMalloc(&p, need);
            if (e == cudaSuccess) e = cudaMemset(p, 0, need);
            if (e != cudaSuccess) {
                cudaFree(p);
                return err_set(err, ERR_CUDA, "gemm_fp8_plan: %zu bytes: %s", need,
                               cudaGetErrorString(e));
            }
            cudaFree(g->gemv_ws); /* synchronizes: plans are made at start-up */
            g->gemv_ws = p;
            g->gemv_ws_size = need;
        }
        if (!use_cublas) return 0;
    }
    if (plan_find(g, &k)) return 0;
    return plan_cublas(g, &k, err);
}

int gemm_fp8_run_cublas(struct gemm_fp8 *g, const struct cuk_gemv_fp8_args *a, cudaStream_t st,
                        char *err)
{
    struct gemm_fp8_shape s = {a->m, a->n, a->k, a->y_type, a->accumulate, a->x_ld, a->y_ld}, k;
    shape_norm(&s, &k);
    struct gemm_plan *p = plan_find(g, &k);
    if (!p)
        return err_set(err, ERR_INVAL,
                       "gemm_fp8: no plan for m=%d n=%d k=%d (plan shapes at start-up)", a->m, a->n,
                       a->k);
    if (a->x_scale_ld != k.m || a->w_scale_ld != round4(a->k / 128))
        return err_set(err, ERR_INVAL, "gemm_fp8: scale strides %d/%d, cuBLASLt needs %d/%d",
                       a->x_scale_ld, a->w_scale_ld, k.m, round4(a->k / 128));
    const void *sa = a->w_scale, *sb = a->x_scale;
    cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof sa);
    cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof sb);
    float alpha = 1.0f, beta = a->accumulate && !p->swapped ? 1.0f : 0.0f;
    cublasStatus_t r;
    if (!p->swapped)
        r = cublasLtMatmul(g->lt, p->desc, &alpha, a->w, p->la, a->x, p->lb, &beta, a->y, p->lc,
                           a->y, p->lc, &p->algo, g->ws, g->ws_size, st);
    else
        r = cublasLtMatmul(g->lt, p->desc, &alpha, a->x, p->la, a->w, p->lb, &beta, g->tbuf, p->lc,
                           g->tbuf, p->lc, &p->algo, g->ws, g->ws_size, st);
    if (r != CUBLAS_STATUS_SUCCESS)
        return err_set(err, ERR_CUDA, "gemm_fp8 %dx%dx%d: cublasLtMatmul: %s", k.m, k.n, k.k,
                       cublasGetStatusName(r));
    if (p->swapped) {
        struct cuk_transpose_args t = {.rows = a->n,
                                       .cols = a->m,
                                       .type = a->y_type,
                                       .in = g->tbuf,
                                       .in_ld = k.m,
                                       .out = a->y,
                                       .out_ld = a->y_ld,
                                       .accumulate = a->accumulate};
        int rc = cuk_transpose(&t, st);
        if (rc) return err_set(err, rc, "gemm_fp8: transpose failed");
    }
    return 0;
}

void gemm_fp8_set_exact(struct gemm_fp8 *g, int on) { g->exact = on ? 1 : 0; }

int gemm_fp8_linear(struct gemm_fp8 *g, const struct cuk_gemv_fp8_args *a, cudaStream_t st,
                    char *err)
{
    if (!g->exact && !cuk_gemv_fp8_prefer(a->m, a->n, a->k))
        return gemm_fp8_run_cublas(g, a, st, err);
    /* the own kernel, in chunks of at most 16 rows (x, its scales and y offset by the chunk) */
    size_t ysz = a->y_type == CUK_BF16 ? 2 : 4;
    for (int i = 0; i < a->m; i += CUK_GEMV_FP8_MAX_M) {
        struct cuk_gemv_fp8_args b = *a;
        b.m = a->m - i < CUK_GEMV_FP8_MAX_M ? a->m - i : CUK_GEMV_FP8_MAX_M;
        b.x = a->x + (size_t)i * a->x_ld;
        b.x_scale = a->x_scale + i; /* [k/128][x_scale_ld], token-contiguous */
        b.y = (char *)a->y + (size_t)i * a->y_ld * ysz;
        b.workspace = g->gemv_ws;
        b.workspace_size = g->gemv_ws_size;
        int rc = cuk_gemv_fp8(&b, st);
        if (rc)
            return err_set(err, rc, "gemm_fp8: small-M kernel failed (m=%d n=%d k=%d)", b.m, a->n,
                           a->k);
    }
    return 0;
}
