/* moe_ggml.h - the routed experts of one MoE layer on the GPU, reading GGML blocks.
 *
 *   out[t] = sum_{k < top_k} w[t][k] * down_e(SiLU(gate_e x_t) * up_e x_t),  e = ids[t][k]
 *
 * The GPU twin of cpuq_moe_forward (kernels/cpu/moe.h) for experts whose weights sit in device
 * memory as raw GGML blocks (the bytes of the GGUF file / host memory, copied as they are): the
 * building block for streaming routed experts to the GPU during long prefills. Per active expert
 * (ascending id), its gate/up/down blocks are dequantized into a bf16 scratch (dequant_ggml.h,
 * exact fp32 values rounded once to bf16), the expert's tokens are gathered as bf16 rows, and
 * cuBLAS runs tensor-core GEMMs with fp32 accumulation: [gate; up] in one GEMM (fp32 out),
 * h = bf16(SiLU(g) * u) in fp32, then down (fp32 out). Tokens an expert takes are processed in
 * chunks of at most dims.chunk_rows GEMM rows (the dequantized weights are reused across chunks).
 *
 * Grouping: the (token, k) pairs are numbered expert by expert, in token order within an expert
 * (the CPU op's order), on the GPU from the device ids (three small kernels, deterministic);
 * the host copy ids_host (same values) gives each expert's pair count for the GEMM sizes, so
 * the op never waits for the device. The caller guarantees ids_host == ids; if they differ the
 * result is wrong but every access stays in bounds (ids outside [0, n_experts) on the device
 * are treated as -1; gathered/scattered token indices are range-checked).
 *
 * Final sum (fp32, w * d then add, no FMA; deterministic run to run):
 *   dims.k_order = 0: out is zeroed, then each expert's results are added as it finishes, so a
 *     token's terms are summed in ascending expert id. Workspace independent of the pair count
 *     beyond small index arrays.
 *   dims.k_order = 1: every pair's down output is kept ([max_tok * top_k][hidden] fp32) and one
 *     pass sums each token's terms in k order, exactly as cpuq_moe_forward does.
 * Numerics and the tolerance against cpuq_moe_forward: docs/numerics.md ("Routed experts on the
 * GPU from GGML blocks").
 *
 * Types: each matrix any type cuk_dequant_ggml_supported() accepts (experts may differ); an
 * active expert with another type fails the call with ERR_UNSUPPORTED before anything is
 * enqueued, so the caller can run that layer on the CPU.
 *
 * Memory: everything the op touches on the device besides its arguments lies in the caller's
 * workspace (cuk_moe_ggml_workspace bytes for the dims, 256-byte aligned), cuBLAS's included;
 * the op never allocates and never synchronizes (cuBLAS is given the stream and the workspace
 * on every call), so it can be captured in a CUDA graph.
 * Ownership and threads: struct cuk_moe_ggml owns a cuBLAS handle (created with it; creation
 * allocates). One thread at a time per object; the workspace belongs to one call at a time
 * (stream order). Device pointers are borrowed until the stream reaches the work; host arrays
 * (the expert tables, ids_host) only for the duration of the call.
 */
#ifndef TANDEM_CUK_MOE_GGML_H
#define TANDEM_CUK_MOE_GGML_H

#include "kernels/cuda/dequant_ggml.h"

CUK_EXTERN_C_BEGIN

#define CUK_MOE_GGML_MAX_EXPERTS 1024
#define CUK_MOE_GGML_MAX_TOP_K 64
#define CUK_MOE_GGML_CHUNK_DEFAULT 1024
#define CUK_MOE_GGML_CUBLAS_WS ((size_t)32 << 20)

/* What a workspace is planned for. */
struct cuk_moe_ggml_dims {
    int hidden, inter;    /* x / out width; expert intermediate width (multiples of 32) */
    int n_experts, top_k; /* 1..CUK_MOE_GGML_MAX_EXPERTS, 1..CUK_MOE_GGML_MAX_TOP_K */
    int max_tok;          /* most tokens a call takes (max_tok * top_k < 2^31) */
    int chunk_rows;       /* GEMM rows per step; 0: CUK_MOE_GGML_CHUNK_DEFAULT; capped at
                             max_tok * top_k */
    int k_order;          /* 1: sum each token's terms in k order (keeps every pair's output) */
};

/* Workspace bytes for these dims (0 if the dims are invalid). Parts, for DeepSeek-V3 (hidden 7168,
 * inter 2048): 32 MiB cuBLAS + 84 MiB bf16 weights of one expert + 62 KiB per chunk row
 * (1024 rows: 62 MiB) + 12 B per pair slot (max_tok * top_k) + 4 B per expert per 512 slots;
 * k_order replaces the chunk's 28 KiB fp32 down output per row by max_tok * top_k rows of it
 * (1.75 GiB at 8192 tokens, top-8). */
size_t cuk_moe_ggml_workspace(const struct cuk_moe_ggml_dims *d);

struct cuk_moe_ggml;

/* Errors: ERR_CUDA (cuBLAS handle), ERR_NOMEM. */
int cuk_moe_ggml_create(struct cuk_moe_ggml **out, char *err);
void cuk_moe_ggml_destroy(struct cuk_moe_ggml *m);

struct cuk_moe_ggml_args {
    struct cuk_moe_ggml_dims dims; /* those the workspace was sized for */
    /* host arrays [dims.n_experts]: gate[e], up[e] [inter][hidden], down[e] [hidden][inter];
     * .data are device pointers. Only experts some pair routes to are read (others may be
     * zeroed structs). */
    const struct cuk_ggml_mat *gate, *up, *down;
    int n_tok;               /* 0..dims.max_tok */
    const float *x;          /* device [n_tok][x_ld] fp32, 16-byte aligned */
    int64_t x_ld;            /* >= hidden, % 4 == 0 */
    const int32_t *ids;      /* device [n_tok][top_k]; -1 = no expert */
    const int32_t *ids_host; /* host copy of ids */
    const float *w;          /* device [n_tok][top_k] */
    float *out;              /* device [n_tok][out_ld], overwritten, 16-B aligned */
    int64_t out_ld;          /* >= hidden, % 4 == 0; columns beyond hidden untouched */
    void *ws;                /* device, 256-byte aligned */
    size_t ws_bytes;         /* >= cuk_moe_ggml_workspace(&dims) */
};

/* Enqueue the layer on stream s. Errors (nothing is enqueued): ERR_INVAL (shapes, ids_host out of
 * range, workspace too small; message in err), ERR_UNSUPPORTED (an active expert's type has no
 * GPU kernel). ERR_CUDA: a launch or cuBLAS call failed (work may be partly enqueued). */
int cuk_moe_ggml(struct cuk_moe_ggml *m, const struct cuk_moe_ggml_args *a, cudaStream_t s,
                 char *err);

CUK_EXTERN_C_END

#endif
