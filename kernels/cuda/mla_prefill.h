/* mla_prefill.h - absorbed MLA for a run of consecutive prefill tokens of one sequence, as
 * cuBLAS GEMMs over the sequence's latent rows: the math of cuk_mla_decode's causal rows
 * (mla.h), at tensor-core GEMM rates instead of a per-query kernel.
 *
 * For query i < n_q at position p = pos0 + i and head h (score row r = i * n_heads + h), with
 * C[t] the fp32 value of the cache row of position t (576 bf16: latent, then rotated k_pe):
 *   S[r][t]   = scale * (q[i][h] . C[t])                 t <= p   (576-dim dot)
 *   P[r][t]   = exp(S[r][t] - max) / sum                 t <= p   (0 for t > p)
 *   out[i][h] = sum_t P[r][t] * C[t][0:512]
 * Steps on the caller's stream: C[0..L) (L = pos0 + n_q) gathered from the paged cache into an
 * fp32 [L][576] scratch; then per chunk of queries (as many as the score scratch holds):
 * S = Q C^T (one GEMM, alpha = scale), the causal softmax in place (one CTA per row, fp32),
 * out = P C[:, 0:512] (one GEMM).
 * Compute (exact): 0 = TF32 tensor cores (CUBLAS_COMPUTE_32F_FAST_TF32: q and P rounded to a
 * 10-bit mantissa inside the GEMMs, C is bf16 and so exact; fp32 accumulation); 1 = fp32
 * (CUBLAS_COMPUTE_32F), kept as a check. Numerics: docs/numerics.md ("MLA prefill as GEMMs").
 * Cost: 2*H*(576+512) FLOP per (query, position) over the rectangle each chunk covers (a chunk's
 * rows all run to its last query's position); the scores cross HBM about five times
 * (GEMM write, two softmax reads, softmax write, GEMM read), 4 bytes each.
 *
 * Layout: q [n_q][n_heads * 576] and out [n_q][n_heads * 512], fp32, rows contiguous (so the
 * n_q * n_heads (query, head) rows are one matrix with stride 576 / 512).
 *
 * Workspace: cuk_mla_prefill_workspace(max_ctx, n_heads, score_bytes): the cuBLAS workspace,
 * the gathered rows for a context of up to max_ctx positions and score_bytes of scores, which
 * must hold one query's scores at max_ctx (n_heads * 4 * ld(max_ctx) bytes, ld = the context
 * rounded up to 4 floats; else it returns 0). A call with context L takes as many queries per
 * chunk as the scores hold: score_bytes / (n_heads * 4 * ld(L)), rounded down.
 *
 * Ownership and threads: struct cuk_mla_prefill owns a cuBLAS handle (creation allocates). One
 * thread at a time per object; the workspace belongs to one call at a time (stream order). The
 * op never allocates or synchronizes after creation. Device pointers are borrowed until the
 * stream reaches the work.
 */
#ifndef TANDEM_CUK_MLA_PREFILL_H
#define TANDEM_CUK_MLA_PREFILL_H

#include "kernels/cuda/cuk_types.h"

CUK_EXTERN_C_BEGIN

#define CUK_MLA_PREFILL_CUBLAS_WS ((size_t)32 << 20)

struct cuk_mla_prefill;

/* Errors: ERR_CUDA (cuBLAS handle), ERR_NOMEM. */
int cuk_mla_prefill_create(struct cuk_mla_prefill **out, char *err);
void cuk_mla_prefill_destroy(struct cuk_mla_prefill *m);

/* Workspace bytes for contexts up to max_ctx positions (0 if an argument is out of range). */
size_t cuk_mla_prefill_workspace(int max_ctx, int n_heads, size_t score_bytes);

struct cuk_mla_prefill_args {
    int n_q, n_heads; /* n_q >= 1, n_heads >= 1 */
    int pos0;         /* position of query 0 (>= 0); query i attends to positions 0..pos0 + i */
    int max_ctx;      /* the workspace's max_ctx; pos0 + n_q <= max_ctx */
    const float *q;   /* [n_q][n_heads * 576] fp32 */
    const uint16_t *cache;
    int block_tokens;
    const int32_t *block_table; /* blocks covering positions 0..pos0 + n_q - 1 */
    float scale;
    float *out; /* [n_q][n_heads * 512] fp32, overwritten */
    int exact;  /* 0: TF32 tensor cores, 1: fp32 */
    void *ws;   /* 256-byte aligned */
    size_t ws_bytes;
};

/* Enqueue on stream s. Errors (nothing enqueued): ERR_INVAL (shapes, workspace too small for
 * one query; message in err). ERR_CUDA: a launch or cuBLAS call failed (work may be partly
 * enqueued). */
int cuk_mla_prefill(struct cuk_mla_prefill *m, const struct cuk_mla_prefill_args *a, cudaStream_t s,
                    char *err);

CUK_EXTERN_C_END

#endif
