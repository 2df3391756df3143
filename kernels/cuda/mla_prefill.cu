/* mla_prefill.cu - absorbed MLA over a prefill run of one sequence as GEMMs (see mla_prefill.h).
 *
 * Workspace: [cuBLAS 32 MiB][C: max_ctx x 576 fp32][scores]. One call enqueues:
 *   1. gather: C[t] = float(cache[row(t)]) for t < L (one CTA per position, 8-byte loads);
 *   2. per chunk of qc queries (rows R = qc * H, context Lc = pos0 + last query + 1, score row
 *      stride ldS = Lc rounded up to 4 floats):
 *        S[R][Lc]   = scale * Q[R][576] . C[Lc][576]^T       cuBLAS (column-major: S^T = C^T' Q)
 *        softmax    one CTA per row: max and sum over t <= p, then P in place (0 beyond p)
 *        O[R][512]  = P[R][Lc] . C[Lc][0:512]                cuBLAS (column-major: O^T = Cv P^T)
 * The GEMMs see row-major matrices as their column-major transposes, so no data is transposed.
 */
#include "kernels/cuda/mla_prefill.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/mla.h"

#include <stdlib.h>

#include <cublas_v2.h>

#define MP_ALIGN 256
#define MP_GATHER_THREADS 160 /* 144 threads move 4 values each */
#define MP_SOFTMAX_THREADS 256

struct cuk_mla_prefill {
    cublasHandle_t blas;
};

static size_t mp_up(size_t v) { return (v + MP_ALIGN - 1) / MP_ALIGN * MP_ALIGN; }
static int64_t mp_ld(int64_t n) { return (n + 3) & ~(int64_t)3; }

/* ---- kernels */

static __global__ void __launch_bounds__(MP_GATHER_THREADS)
    mp_gather(const uint16_t *__restrict__ cache, const int32_t *__restrict__ block_table,
              int block_tokens, float *__restrict__ ctx)
{
    const int t = blockIdx.x, i = threadIdx.x;
    if (i >= CUK_MLA_DIM / 4) return;
    const int64_t row = (int64_t)block_table[t / block_tokens] * block_tokens + t % block_tokens;
    const uint2 v = ((const uint2 *)(cache + row * CUK_MLA_DIM))[i];
    float4 f;
    f.x = __uint_as_float(v.x << 16);
    f.y = __uint_as_float(v.x & 0xffff0000u);
    f.z = __uint_as_float(v.y << 16);
    f.w = __uint_as_float(v.y & 0xffff0000u);
    ((float4 *)(ctx + (int64_t)t * CUK_MLA_DIM))[i] = f;
}

/* Row r of the chunk: query q0 + r / H at position pos0 + q0 + r / H sees n = that + 1 scores. */
static __global__ void __launch_bounds__(MP_SOFTMAX_THREADS)
    mp_softmax(float *__restrict__ S, int64_t ldS, int Lc, int H, int first_len)
{
    __shared__ float red[32];
    const int64_t r = blockIdx.x;
    const int n = first_len + (int)(r / H);
    float4 *row = (float4 *)(S + r * ldS);
    const int quads = (Lc + 3) / 4, nq = (n + 3) / 4;
    float m = -INFINITY;
    for (int j = threadIdx.x; j < nq; j += blockDim.x) {
        const float4 v = row[j];
        const int t = 4 * j;
        m = fmaxf(m, v.x);
        if (t + 1 < n) m = fmaxf(m, v.y);
        if (t + 2 < n) m = fmaxf(m, v.z);
        if (t + 3 < n) m = fmaxf(m, v.w);
    }
    m = cuk_block_max(m, red);
    float s = 0.0f;
    for (int j = threadIdx.x; j < nq; j += blockDim.x) {
        const float4 v = row[j];
        const int t = 4 * j;
        s += expf(v.x - m);
        if (t + 1 < n) s += expf(v.y - m);
        if (t + 2 < n) s += expf(v.z - m);
        if (t + 3 < n) s += expf(v.w - m);
    }
    const float inv = 1.0f / cuk_block_sum(s, red);
    for (int j = threadIdx.x; j < quads; j += blockDim.x) {
        const float4 v = row[j];
        const int t = 4 * j;
        float4 p;
        p.x = t < n ? expf(v.x - m) * inv : 0.0f;
        p.y = t + 1 < n ? expf(v.y - m) * inv : 0.0f;
        p.z = t + 2 < n ? expf(v.z - m) * inv : 0.0f;
        p.w = t + 3 < n ? expf(v.w - m) * inv : 0.0f;
        row[j] = p;
    }
}

/* ---- host side */

extern "C" int cuk_mla_prefill_create(struct cuk_mla_prefill **out, char *err)
{
    *out = NULL;
    struct cuk_mla_prefill *m = (struct cuk_mla_prefill *)calloc(1, sizeof *m);
    if (!m) return err_set(err, ERR_NOMEM, "mla_prefill: out of memory");
    if (cublasCreate(&m->blas) != CUBLAS_STATUS_SUCCESS) {
        free(m);
        return err_set(err, ERR_CUDA, "mla_prefill: cublasCreate failed");
    }
    *out = m;
    return 0;
}

extern "C" void cuk_mla_prefill_destroy(struct cuk_mla_prefill *m)
{
    if (!m) return;
    cublasDestroy(m->blas);
    free(m);
}

static size_t mp_ctx_bytes(int max_ctx) { return mp_up((size_t)max_ctx * CUK_MLA_DIM * 4); }

extern "C" size_t cuk_mla_prefill_workspace(int max_ctx, int n_heads, size_t score_bytes)
{
    if (max_ctx < 1 || n_heads < 1 || score_bytes < (size_t)n_heads * 4 * mp_ld(max_ctx)) return 0;
    return CUK_MLA_PREFILL_CUBLAS_WS + mp_ctx_bytes(max_ctx) + mp_up(score_bytes);
}

static int mp_gemm(cublasHandle_t h, cublasOperation_t ta, int m, int n, int k, float alpha,
                   const float *A, int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc,
                   int exact, char *err)
{
    const float zero = 0.0f;
    cublasStatus_t st = cublasGemmEx(h, ta, CUBLAS_OP_N, m, n, k, &alpha, A, CUDA_R_32F, (int)lda,
                                     B, CUDA_R_32F, (int)ldb, &zero, C, CUDA_R_32F, (int)ldc,
                                     exact ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_TF32,
                                     CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS)
        return err_set(err, ERR_CUDA, "mla_prefill: cublasGemmEx %dx%dx%d failed (status %d)", m, n,
                       k, (int)st);
    return 0;
}

extern "C" int cuk_mla_prefill(struct cuk_mla_prefill *m, const struct cuk_mla_prefill_args *a,
                               cudaStream_t s, char *err)
{
    if (!m || !a || a->n_q < 1 || a->n_heads < 1 || a->pos0 < 0 || a->max_ctx < 1 ||
        a->pos0 > a->max_ctx - a->n_q || a->block_tokens < 1 || !a->q || !a->cache ||
        !a->block_table || !a->out || !a->ws || (a->exact != 0 && a->exact != 1))
        return err_set(err, ERR_INVAL, "mla_prefill: invalid arguments");
    const int H = a->n_heads, L = a->pos0 + a->n_q;
    const size_t fixed = CUK_MLA_PREFILL_CUBLAS_WS + mp_ctx_bytes(a->max_ctx);
    const size_t row_bytes = (size_t)mp_ld(L) * 4;
    if (a->ws_bytes < fixed || (a->ws_bytes - fixed) / row_bytes < (size_t)H)
        return err_set(err, ERR_INVAL,
                       "mla_prefill: workspace of %zu bytes holds no query's scores for context %d",
                       a->ws_bytes, L);
    /* queries per chunk: what the score scratch holds, and fewer than 2^31 scores */
    int64_t qc = (int64_t)((a->ws_bytes - fixed) / row_bytes) / H;
    const int64_t cap = (int64_t)0x7fffffff / ((int64_t)H * mp_ld(L));
    if (qc > cap) qc = cap;
    if (qc > a->n_q) qc = a->n_q;
    if (qc < 1) return err_set(err, ERR_INVAL, "mla_prefill: context %d too long", L);

    char *ws = (char *)a->ws;
    float *ctx = (float *)(ws + CUK_MLA_PREFILL_CUBLAS_WS), *S = (float *)(ws + fixed);
    if (cublasSetStream(m->blas, s) != CUBLAS_STATUS_SUCCESS ||
        cublasSetWorkspace(m->blas, ws, CUK_MLA_PREFILL_CUBLAS_WS) != CUBLAS_STATUS_SUCCESS)
        return err_set(err, ERR_CUDA, "mla_prefill: cuBLAS stream/workspace");

    mp_gather<<<L, MP_GATHER_THREADS, 0, s>>>(a->cache, a->block_table, a->block_tokens, ctx);
    if (cudaGetLastError() != cudaSuccess)
        return err_set(err, ERR_CUDA, "mla_prefill: gather launch failed");
    for (int q0 = 0; q0 < a->n_q; q0 += (int)qc) {
        const int nq = a->n_q - q0 < qc ? a->n_q - q0 : (int)qc;
        const int Lc = a->pos0 + q0 + nq, R = nq * H;
        const int64_t ldS = mp_ld(Lc);
        int rc;
        if ((rc = mp_gemm(m->blas, CUBLAS_OP_T, Lc, R, CUK_MLA_DIM, a->scale, ctx, CUK_MLA_DIM,
                          a->q + (size_t)q0 * H * CUK_MLA_DIM, CUK_MLA_DIM, S, ldS, a->exact, err)))
            return rc;
        mp_softmax<<<R, MP_SOFTMAX_THREADS, 0, s>>>(S, ldS, Lc, H, a->pos0 + q0 + 1);
        if (cudaGetLastError() != cudaSuccess)
            return err_set(err, ERR_CUDA, "mla_prefill: softmax launch failed");
        if ((rc = mp_gemm(m->blas, CUBLAS_OP_N, CUK_MLA_LORA, R, Lc, 1.0f, ctx, CUK_MLA_DIM, S, ldS,
                          a->out + (size_t)q0 * H * CUK_MLA_LORA, CUK_MLA_LORA, a->exact, err)))
            return rc;
    }
    return 0;
}
