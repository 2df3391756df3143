/* moe.h - the routed-expert operation of one MoE layer on the CPU worker pool.
 *
 *   out[t] = sum_{k < top_k} w[t][k] * down_e(SiLU(gate_e x_t) * up_e x_t),  e = ids[t][k]
 *
 * The (token, k) pairs are grouped by expert, so each active expert's weights are streamed once
 * per call however many tokens share it (a row of weights is dotted with all of the expert's
 * tokens while it is in cache). Activations are quantized once per token to the weight type's
 * vec_dot_type (GGML semantics; FP8 weights: DeepSeek's per-128 e4m3 activations), and the
 * intermediate SiLU(g) * u once per pair. Work is split across the pool by (expert, row block)
 * with a decomposition that depends only on the shapes and routes, never on the thread count, and
 * the final sum over k runs in k order: the result is bitwise identical for any thread count.
 *
 * Weights: any type with a vec_dot in the ops table (GGML block types, BF16, F16, F32) or
 * QTYPE_F8_E4M3 with its 128x128 block scales. Within one call all experts' gate matrices share
 * one type (likewise up, likewise down), as in GGUF's 3-D expert tensors.
 *
 * Threads: cpuq_moe_forward runs on the pool's owner thread; the scratch belongs to the caller
 * and is used by one call at a time.
 */
#ifndef TANDEM_CPUQ_MOE_H
#define TANDEM_CPUQ_MOE_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/cpu/cpuq.h"
#include "kernels/cpu/wpool.h"

/* One weight matrix [rows][cols] as the kernels see it (the engine converts its wt_view). Rows are
 * row_bytes apart; scale: FP8 only, [ceil(rows/128)][ceil(cols/128)] multipliers, else NULL. */
struct cpuq_mat {
    int type;
    int64_t rows, cols;
    const void *data;
    size_t row_bytes;
    const float *scale;
};

/* Buffers reused across calls: they grow to the largest call seen and are never shrunk, so the
 * steady state allocates nothing. */
struct cpuq_moe_scratch;
int cpuq_moe_scratch_create(struct cpuq_moe_scratch **out, char *err);
void cpuq_moe_scratch_destroy(struct cpuq_moe_scratch *s);

/* gate[e], up[e]: [inter][hidden]; down[e]: [hidden][inter], for e < n_experts (only experts
 * that some token routes to are read; others may be zeroed structs).
 * x: [n_tok][hidden] fp32; ids, w: [n_tok][top_k]; an id of -1 means "no expert" (skipped).
 * out: [n_tok][hidden], overwritten. p may be NULL (single-threaded). fp8_ue8m0: FP8 experts'
 * activation scales rounded up to powers of two (fp8.h's ue8m0 mode); ignored for other types.
 * Errors: ERR_INVAL (ids out of range, shape or type mismatch, hidden/inter not whole blocks),
 * ERR_UNSUPPORTED (a type without a dot product), ERR_NOMEM (scratch growth). */
int cpuq_moe_forward(struct wpool *p, const struct cpuq_ops *o, const struct cpuq_mat *gate,
                     const struct cpuq_mat *up, const struct cpuq_mat *down, int n_experts,
                     int n_tok, int hidden, const float *x, int top_k, const int32_t *ids,
                     const float *w, float *out, int fp8_ue8m0, struct cpuq_moe_scratch *s,
                     char *err);

#endif
