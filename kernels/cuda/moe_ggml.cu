/* moe_ggml.cu - routed experts of one MoE layer on the GPU from GGML blocks (see moe_ggml.h).
 *
 * One call enqueues, on the caller's stream:
 *   1. out = 0 (expert order only);
 *   2. grouping, from the device ids, in segments of MG_SEG slots (one warp each):
 *      count (per segment and expert, __match_any_sync per 32 slots), scan (one CTA: expert
 *      totals, their exclusive prefix = expert base, then each segment's starting position per
 *      expert), place (each warp walks its segment again in slot order: rank among equal ids
 *      below it in the step + the running position) -> pair_tok, pair_w in pair order and
 *      pair_of per slot. Pairs are thereby numbered expert by expert, in slot (= token) order
 *      within an expert, like cpuq_moe_forward's counting sort; the same numbering the host
 *      derives from ids_host to size the GEMMs;
 *   3. per active expert (ascending id): gate and up dequantized into rows [0, inter) and
 *      [inter, 2 inter) of one bf16 [2 inter][hidden] scratch, down into [hidden][inter]; then per
 *      chunk of at most chunk_rows of its pairs: gather bf16(x[tok]) rows, GEMM [m][2 inter] fp32
 *      = xg . [gate; up]^T, h = bf16(SiLU(g) * u) (fp32 math: g / (1 + expf(-g)) * u), GEMM
 *      [m][hidden] fp32 = h . down^T, then (expert order) out[tok] += w * d, no atomics: a chunk's
 *      tokens are distinct unless a token routes to one expert twice, which the host detects and
 *      then adds the chunk's rows one after another;
 *   4. (k order) out[t] = sum over k in order of w[t][k] * d[pair_of[t][k]].
 * cuBLAS: cublasGemmEx bf16 x bf16 -> fp32, CUBLAS_COMPUTE_32F, default (tensor-op) algorithm,
 * W as the transposed operand (column-major view: C^T[n][m] = W[n][k] . X^T[k][m]).
 */
#include "kernels/cuda/moe_ggml.h"
#include "kernels/cuda/common.cuh"

#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>

extern "C" {
#include "kernels/cpu/qtype.h"
}

#define MG_SEG 512 /* slots per grouping segment (one warp) */
#define MG_THREADS 256
#define MG_ALIGN 256

struct cuk_moe_ggml {
    cublasHandle_t blas;
};

/* ---- workspace layout */

struct mg_layout {
    int64_t slots; /* max_tok * top_k */
    int chunk;     /* GEMM rows per step */
    int64_t nseg;  /* grouping segments of MG_SEG slots */
    size_t cublas, wgu, wd, xg, c, h, d, pair_tok, pair_w, pair_of, segcnt, total;
};

static size_t mg_up(size_t v) { return (v + MG_ALIGN - 1) / MG_ALIGN * MG_ALIGN; }

static int mg_dims_ok(const struct cuk_moe_ggml_dims *d)
{
    return d && d->hidden >= 32 && d->hidden % 32 == 0 && d->inter >= 32 && d->inter % 32 == 0 &&
           d->n_experts >= 1 && d->n_experts <= CUK_MOE_GGML_MAX_EXPERTS && d->top_k >= 1 &&
           d->top_k <= CUK_MOE_GGML_MAX_TOP_K && d->max_tok >= 1 &&
           (int64_t)d->max_tok * d->top_k < 0x7fffffff && d->chunk_rows >= 0 &&
           (d->k_order == 0 || d->k_order == 1);
}

static int mg_layout_of(const struct cuk_moe_ggml_dims *d, struct mg_layout *L)
{
    if (!mg_dims_ok(d)) return 0;
    memset(L, 0, sizeof *L);
    const size_t H = (size_t)d->hidden, I = (size_t)d->inter;
    L->slots = (int64_t)d->max_tok * d->top_k;
    int64_t ch = d->chunk_rows ? d->chunk_rows : CUK_MOE_GGML_CHUNK_DEFAULT;
    L->chunk = (int)(ch < L->slots ? ch : L->slots);
    L->nseg = (L->slots + MG_SEG - 1) / MG_SEG;
    const size_t S = (size_t)L->slots, C = (size_t)L->chunk;
    size_t o = 0;
    L->cublas = o;
    o += mg_up(CUK_MOE_GGML_CUBLAS_WS);
    L->wgu = o;
    o += mg_up(2 * I * H * 2);
    L->wd = o;
    o += mg_up(H * I * 2);
    L->xg = o;
    o += mg_up(C * H * 2);
    L->c = o;
    o += mg_up(C * 2 * I * 4);
    L->h = o;
    o += mg_up(C * I * 2);
    L->d = o;
    o += mg_up((d->k_order ? S : C) * H * 4);
    L->pair_tok = o;
    o += mg_up(S * 4);
    L->pair_w = o;
    o += mg_up(S * 4);
    L->pair_of = o;
    o += mg_up(S * 4);
    L->segcnt = o;
    o += mg_up((size_t)L->nseg * (size_t)d->n_experts * 4);
    L->total = o;
    return 1;
}

extern "C" size_t cuk_moe_ggml_workspace(const struct cuk_moe_ggml_dims *d)
{
    struct mg_layout L;
    return mg_layout_of(d, &L) ? L.total : 0;
}

/* ---- grouping kernels */

/* the slot's expert, or -1 for none / out of range */
static __device__ __forceinline__ int mg_expert(const int32_t *ids, int64_t i, int64_t slots, int E)
{
    if (i >= slots) return -1;
    int e = ids[i];
    return e >= 0 && e < E ? e : -1;
}

/* segcnt[seg][e] = pairs of expert e in segment seg (segcnt zeroed before) */
static __global__ void __launch_bounds__(MG_THREADS)
    mg_count(const int32_t *ids, int64_t slots, int E, int64_t nseg, int32_t *segcnt)
{
    const int lane = threadIdx.x & 31;
    const int64_t seg = ((int64_t)blockIdx.x * MG_THREADS + threadIdx.x) >> 5;
    if (seg >= nseg) return; /* whole warps exit together */
    int32_t *cnt = segcnt + seg * E;
    for (int st = 0; st < MG_SEG / 32; st++) {
        const int64_t i = seg * MG_SEG + st * 32 + lane;
        const int e = mg_expert(ids, i, slots, E);
        const unsigned peers = __match_any_sync(0xffffffffu, e);
        if (e >= 0 && lane == __ffs(peers) - 1) cnt[e] += __popc(peers);
        __syncwarp();
    }
}

/* One CTA of 1024 threads (E <= 1024): expert totals, their exclusive prefix (the expert's first
 * pair), then segcnt[seg][e] <- the position of the first pair of expert e in segment seg. */
static __global__ void __launch_bounds__(1024) mg_scan(int E, int64_t nseg, int32_t *segcnt)
{
    __shared__ int32_t sc[1024];
    const int e = threadIdx.x;
    int32_t tot = 0;
    if (e < E)
        for (int64_t s = 0; s < nseg; s++) tot += segcnt[s * E + e];
    sc[e] = tot;
    __syncthreads();
    for (int o = 1; o < 1024; o <<= 1) { /* inclusive Hillis-Steele */
        int32_t v = e >= o ? sc[e - o] : 0;
        __syncthreads();
        sc[e] += v;
        __syncthreads();
    }
    if (e < E) {
        int32_t run = sc[e] - tot; /* exclusive */
        for (int64_t s = 0; s < nseg; s++) {
            int32_t c = segcnt[s * E + e];
            segcnt[s * E + e] = run;
            run += c;
        }
    }
}

static __global__ void __launch_bounds__(MG_THREADS)
    mg_place(const int32_t *ids, const float *w, int64_t slots, int top_k, int E, int64_t nseg,
             int32_t *segcnt, int32_t *pair_tok, float *pair_w, int32_t *pair_of)
{
    const int lane = threadIdx.x & 31;
    const int64_t seg = ((int64_t)blockIdx.x * MG_THREADS + threadIdx.x) >> 5;
    if (seg >= nseg) return;
    int32_t *pos = segcnt + seg * E;
    for (int st = 0; st < MG_SEG / 32; st++) {
        const int64_t i = seg * MG_SEG + st * 32 + lane;
        const int e = mg_expert(ids, i, slots, E);
        const unsigned peers = __match_any_sync(0xffffffffu, e);
        int32_t p = -1;
        if (e >= 0) {
            p = pos[e] + __popc(peers & ((1u << lane) - 1u));
            pair_tok[p] = (int32_t)(i / top_k);
            pair_w[p] = w[i];
        }
        if (i < slots) pair_of[i] = p;
        __syncwarp();
        if (e >= 0 && lane == __ffs(peers) - 1) pos[e] += __popc(peers);
        __syncwarp();
    }
}

/* ---- per-chunk kernels (one CTA per row; rows = pairs of the chunk) */

/* xg[r][:] = bf16(x[tok][:]), tok = pair_tok[r]; a token index out of range gives a zero row */
static __global__ void __launch_bounds__(MG_THREADS)
    mg_gather(const float *x, int64_t x_ld, const int32_t *pair_tok, int n_tok, int hidden,
              __nv_bfloat16 *xg)
{
    const int64_t r = blockIdx.x;
    const int tok = pair_tok[r];
    const int ok = tok >= 0 && tok < n_tok;
    const float4 *xs = (const float4 *)(x + (ok ? (size_t)tok * (size_t)x_ld : 0));
    __nv_bfloat162 *dst = (__nv_bfloat162 *)(xg + (size_t)r * hidden);
    for (int c = threadIdx.x; c < hidden / 4; c += blockDim.x) {
        float4 v = ok ? xs[c] : make_float4(0.f, 0.f, 0.f, 0.f);
        dst[2 * c] = __floats2bfloat162_rn(v.x, v.y);
        dst[2 * c + 1] = __floats2bfloat162_rn(v.z, v.w);
    }
}

/* h[r][j] = bf16(SiLU(g) * u), g = c[r][j], u = c[r][inter + j]; fp32 as the CPU op:
 * g / (1 + expf(-g)) * u, correctly rounded ops, no contraction */
static __global__ void __launch_bounds__(MG_THREADS)
    mg_silu(const float *c, int inter, __nv_bfloat16 *h)
{
    const int64_t r = blockIdx.x;
    const float4 *g4 = (const float4 *)(c + (size_t)r * 2 * inter);
    const float4 *u4 = (const float4 *)(c + (size_t)r * 2 * inter + inter);
    __nv_bfloat162 *dst = (__nv_bfloat162 *)(h + (size_t)r * inter);
    for (int j = threadIdx.x; j < inter / 4; j += blockDim.x) {
        const float4 g = g4[j], u = u4[j];
        const float gv[4] = {g.x, g.y, g.z, g.w}, uv[4] = {u.x, u.y, u.z, u.w};
        float o[4];
#pragma unroll
        for (int i = 0; i < 4; i++)
            o[i] = __fmul_rn(__fdiv_rn(gv[i], __fadd_rn(1.0f, expf(-gv[i]))), uv[i]);
        dst[2 * j] = __floats2bfloat162_rn(o[0], o[1]);
        dst[2 * j + 1] = __floats2bfloat162_rn(o[2], o[3]);
    }
}

static __device__ __forceinline__ float4 mg_axpy(float4 o, float w, float4 d)
{
    o.x = __fadd_rn(o.x, __fmul_rn(w, d.x));
    o.y = __fadd_rn(o.y, __fmul_rn(w, d.y));
    o.z = __fadd_rn(o.z, __fmul_rn(w, d.z));
    o.w = __fadd_rn(o.w, __fmul_rn(w, d.w));
    return o;
}

/* out[tok] += w * d[r] for the chunk's rows (distinct tokens), one CTA per row */
static __global__ void __launch_bounds__(MG_THREADS)
    mg_scatter(const float *d, const int32_t *pair_tok, const float *pair_w, int n_tok, int hidden,
               float *out, int64_t out_ld)
{
    const int64_t r = blockIdx.x;
    const int tok = pair_tok[r];
    if (tok < 0 || tok >= n_tok) return;
    const float wr = pair_w[r];
    const float4 *src = (const float4 *)(d + (size_t)r * hidden);
    float4 *o = (float4 *)(out + (size_t)tok * (size_t)out_ld);
    for (int c = threadIdx.x; c < hidden / 4; c += blockDim.x) o[c] = mg_axpy(o[c], wr, src[c]);
}

/* the same with repeated tokens: a thread owns 4 columns and adds the rows in order */
static __global__ void __launch_bounds__(MG_THREADS)
    mg_scatter_serial(const float *d, int m, const int32_t *pair_tok, const float *pair_w,
                      int n_tok, int hidden, float *out, int64_t out_ld)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= hidden / 4) return;
    for (int r = 0; r < m; r++) {
        const int tok = pair_tok[r];
        if (tok < 0 || tok >= n_tok) continue;
        float4 *o = (float4 *)(out + (size_t)tok * (size_t)out_ld) + c;
        *o = mg_axpy(*o, pair_w[r], ((const float4 *)(d + (size_t)r * hidden))[c]);
    }
}

/* k order: out[t] = 0 + w[t][0] d[pair_of[t][0]] + ... (skipping -1), one CTA per token */
static __global__ void __launch_bounds__(MG_THREADS)
    mg_reduce_k(const float *d, const int32_t *pair_of, const float *w, int top_k, int hidden,
                float *out, int64_t out_ld)
{
    const int64_t t = blockIdx.x;
    float4 *o = (float4 *)(out + (size_t)t * (size_t)out_ld);
    for (int c = threadIdx.x; c < hidden / 4; c += blockDim.x) {
        float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
        for (int k = 0; k < top_k; k++) {
            const int p = pair_of[t * top_k + k];
            if (p < 0) continue;
            acc = mg_axpy(acc, w[t * top_k + k], ((const float4 *)(d + (size_t)p * hidden))[c]);
        }
        o[c] = acc;
    }
}

/* ---- host side */

extern "C" int cuk_moe_ggml_create(struct cuk_moe_ggml **out, char *err)
{
    *out = NULL;
    struct cuk_moe_ggml *m = (struct cuk_moe_ggml *)calloc(1, sizeof *m);
    if (!m) return err_set(err, ERR_NOMEM, "moe_ggml: out of memory");
    if (cublasCreate(&m->blas) != CUBLAS_STATUS_SUCCESS) {
        free(m);
        return err_set(err, ERR_CUDA, "moe_ggml: cublasCreate failed");
    }
    /* reductions in the compute type (fp32) even where an output type is narrower */
    cublasSetMathMode(m->blas, CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
    *out = m;
    return 0;
}

extern "C" void cuk_moe_ggml_destroy(struct cuk_moe_ggml *m)
{
    if (!m) return;
    cublasDestroy(m->blas);
    free(m);
}

static int mg_check_mat(const struct cuk_ggml_mat *m, const char *what, int e, int64_t rows,
                        int64_t cols, char *err)
{
    if (!cuk_dequant_ggml_supported(m->type))
        return err_set(err, ERR_UNSUPPORTED, "moe_ggml: %s of expert %d has type %s: no GPU kernel",
                       what, e, qtype_name(m->type));
    if (m->rows != rows || m->cols != cols)
        return err_set(err, ERR_INVAL, "moe_ggml: %s of expert %d is %lldx%lld, expected %lldx%lld",
                       what, e, (long long)m->rows, (long long)m->cols, (long long)rows,
                       (long long)cols);
    size_t rb = cuk_ggml_row_size(m->type, cols);
    if (rb == 0)
        return err_set(err, ERR_INVAL,
                       "moe_ggml: %s of expert %d: %lld columns are not whole %s blocks", what, e,
                       (long long)cols, qtype_name(m->type));
    if (!m->data || m->row_bytes < rb)
        return err_set(err, ERR_INVAL, "moe_ggml: %s of expert %d: no data or row_bytes too small",
                       what, e);
    return 0;
}

static int mg_gemm(cublasHandle_t h, int n, int m, int k, const void *W, const void *X, float *Y,
                   char *err)
{
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t st =
        cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &one, W, CUDA_R_16BF, k, X, CUDA_R_16BF,
                     k, &zero, Y, CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS)
        return err_set(err, ERR_CUDA, "moe_ggml: cublasGemmEx %dx%dx%d failed (status %d)", n, m, k,
                       (int)st);
    return 0;
}

#define MG_LAUNCHED(what)                                                                          \
    do {                                                                                           \
        cudaError_t e_ = cudaGetLastError();                                                       \
        if (e_ != cudaSuccess)                                                                     \
            return err_set(err, ERR_CUDA, "moe_ggml: %s: %s", (what), cudaGetErrorString(e_));     \
    } while (0)

static int mg_dequant(const struct cuk_ggml_mat *src, void *dst, int64_t ld, cudaStream_t s,
                      char *err)
{
    struct cuk_dequant_ggml_args da;
    da.src = *src;
    da.dst = dst;
    da.dst_type = CUK_BF16;
    da.dst_ld = ld;
    int rc = cuk_dequant_ggml(&da, s);
    return rc ? err_set(err, rc, "moe_ggml: dequantization (%s) failed", qtype_name(src->type)) : 0;
}

extern "C" int cuk_moe_ggml(struct cuk_moe_ggml *m, const struct cuk_moe_ggml_args *a,
                            cudaStream_t s, char *err)
{
    if (!m || !a) return err_set(err, ERR_INVAL, "moe_ggml: NULL argument");
    const struct cuk_moe_ggml_dims *dm = &a->dims;
    struct mg_layout L;
    if (!mg_layout_of(dm, &L))
        return err_set(err, ERR_INVAL,
                       "moe_ggml: bad dims (hidden %d, inter %d, experts %d, top_k %d, "
                       "max_tok %d)",
                       dm->hidden, dm->inter, dm->n_experts, dm->top_k, dm->max_tok);
    if (a->n_tok < 0 || a->n_tok > dm->max_tok)
        return err_set(err, ERR_INVAL, "moe_ggml: %d tokens, planned for at most %d", a->n_tok,
                       dm->max_tok);
    if (a->n_tok == 0) return 0;
    const int E = dm->n_experts, K = dm->top_k, H = dm->hidden, I = dm->inter, n_tok = a->n_tok;
    if (!a->gate || !a->up || !a->down || !a->x || !a->ids || !a->ids_host || !a->w || !a->out ||
        !a->ws)
        return err_set(err, ERR_INVAL, "moe_ggml: NULL argument");
    if (a->x_ld < H || a->x_ld % 4 || ((uintptr_t)a->x & 15) || a->out_ld < H || a->out_ld % 4 ||
        ((uintptr_t)a->out & 15))
        return err_set(err, ERR_INVAL,
                       "moe_ggml: x/out need 16-byte alignment and strides >= hidden, "
                       "multiples of 4 (x_ld %lld, out_ld %lld)",
                       (long long)a->x_ld, (long long)a->out_ld);
    if (((uintptr_t)a->ws % MG_ALIGN) || a->ws_bytes < L.total)
        return err_set(err, ERR_INVAL,
                       "moe_ggml: workspace of %zu bytes (need %zu, 256-byte aligned)", a->ws_bytes,
                       L.total);

    /* pairs per expert from the host ids; repeated experts within a token */
    int32_t cnt[CUK_MOE_GGML_MAX_EXPERTS];
    memset(cnt, 0, sizeof(int32_t) * (size_t)E);
    const int64_t slots = (int64_t)n_tok * K;
    int dup = 0;
    for (int64_t i = 0; i < slots; i++) {
        const int e = a->ids_host[i];
        if (e == -1) continue;
        if (e < 0 || e >= E)
            return err_set(err, ERR_INVAL, "moe_ggml: expert id %d out of range [0, %d)", e, E);
        cnt[e]++;
        for (int64_t j = i - i % K; j < i; j++) dup |= a->ids_host[j] == e;
    }
    for (int e = 0; e < E; e++) {
        if (!cnt[e]) continue;
        int rc;
        if ((rc = mg_check_mat(&a->gate[e], "gate", e, I, H, err)) ||
            (rc = mg_check_mat(&a->up[e], "up", e, I, H, err)) ||
            (rc = mg_check_mat(&a->down[e], "down", e, H, I, err)))
            return rc;
    }

    char *ws = (char *)a->ws;
    __nv_bfloat16 *wgu = (__nv_bfloat16 *)(ws + L.wgu), *wd = (__nv_bfloat16 *)(ws + L.wd);
    __nv_bfloat16 *xg = (__nv_bfloat16 *)(ws + L.xg), *hb = (__nv_bfloat16 *)(ws + L.h);
    float *cb = (float *)(ws + L.c), *db = (float *)(ws + L.d), *pair_w = (float *)(ws + L.pair_w);
    int32_t *pair_tok = (int32_t *)(ws + L.pair_tok), *pair_of = (int32_t *)(ws + L.pair_of);
    int32_t *segcnt = (int32_t *)(ws + L.segcnt);
    const int64_t nseg = (slots + MG_SEG - 1) / MG_SEG;

    /* 1. out = 0 (k order overwrites every row) */
    if (!dm->k_order) {
        cudaError_t ce = a->out_ld == H
                             ? cudaMemsetAsync(a->out, 0, (size_t)n_tok * (size_t)H * 4, s)
                             : cudaMemset2DAsync(a->out, (size_t)a->out_ld * 4, 0, (size_t)H * 4,
                                                 (size_t)n_tok, s);
        if (ce != cudaSuccess)
            return err_set(err, ERR_CUDA, "moe_ggml: memset: %s", cudaGetErrorString(ce));
    }

    /* 2. grouping */
    if (cudaMemsetAsync(segcnt, 0, (size_t)nseg * (size_t)E * 4, s) != cudaSuccess)
        return err_set(err, ERR_CUDA, "moe_ggml: memset of the counters failed");
    const unsigned gblocks = (unsigned)((nseg * 32 + MG_THREADS - 1) / MG_THREADS);
    mg_count<<<gblocks, MG_THREADS, 0, s>>>(a->ids, slots, E, nseg, segcnt);
    mg_scan<<<1, 1024, 0, s>>>(E, nseg, segcnt);
    mg_place<<<gblocks, MG_THREADS, 0, s>>>(a->ids, a->w, slots, K, E, nseg, segcnt, pair_tok,
                                            pair_w, pair_of);
    MG_LAUNCHED("grouping");

    /* 3. experts */
    if (cublasSetStream(m->blas, s) != CUBLAS_STATUS_SUCCESS ||
        cublasSetWorkspace(m->blas, ws + L.cublas, CUK_MOE_GGML_CUBLAS_WS) != CUBLAS_STATUS_SUCCESS)
        return err_set(err, ERR_CUDA, "moe_ggml: cuBLAS stream/workspace");
    int64_t base = 0;
    for (int e = 0; e < E; e++) {
        if (!cnt[e]) continue;
        int rc;
        if ((rc = mg_dequant(&a->gate[e], wgu, H, s, err)) ||
            (rc = mg_dequant(&a->up[e], wgu + (size_t)I * H, H, s, err)) ||
            (rc = mg_dequant(&a->down[e], wd, I, s, err)))
            return rc;
        for (int64_t c0 = 0; c0 < cnt[e]; c0 += L.chunk) {
            const int64_t p0 = base + c0;
            const int mr = (int)(cnt[e] - c0 < L.chunk ? cnt[e] - c0 : L.chunk);
            float *dd = dm->k_order ? db + (size_t)p0 * H : db;
            mg_gather<<<mr, MG_THREADS, 0, s>>>(a->x, a->x_ld, pair_tok + p0, n_tok, H, xg);
            MG_LAUNCHED("gather");
            if ((rc = mg_gemm(m->blas, 2 * I, mr, H, wgu, xg, cb, err))) return rc;
            mg_silu<<<mr, MG_THREADS, 0, s>>>(cb, I, hb);
            MG_LAUNCHED("silu");
            if ((rc = mg_gemm(m->blas, H, mr, I, wd, hb, dd, err))) return rc;
            if (!dm->k_order) {
                if (dup)
                    mg_scatter_serial<<<(unsigned)((H / 4 + MG_THREADS - 1) / MG_THREADS),
                                        MG_THREADS, 0, s>>>(dd, mr, pair_tok + p0, pair_w + p0,
                                                            n_tok, H, a->out, a->out_ld);
                else
                    mg_scatter<<<mr, MG_THREADS, 0, s>>>(dd, pair_tok + p0, pair_w + p0, n_tok, H,
                                                         a->out, a->out_ld);
                MG_LAUNCHED("scatter");
            }
        }
        base += cnt[e];
    }

    /* 4. k order */
    if (dm->k_order) {
        mg_reduce_k<<<n_tok, MG_THREADS, 0, s>>>(db, pair_of, a->w, K, H, a->out, a->out_ld);
        MG_LAUNCHED("reduce");
    }
    return 0;
}
