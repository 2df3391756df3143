/* ops.h - the backend-neutral operations the DeepSeek-V3 forward (model.c) is written against.
 *
 * model.c describes the forward once as a sequence of whole ops on batches; a backend implements
 * them: ops_cpu.c on kernels/cpu and the worker pool (CPU-only mode, CI, the numerics reference
 * of the GPU path) and ops_cuda.c on kernels/cuda (hybrid: routed experts on the CPU pool;
 * docs/gpu.md). ops_create picks one from struct ops_params. Every op works on a batch of n
 * tokens laid out row-major in float buffers that live in the backend's memory (ops_alloc: host
 * memory for the CPU backend, device memory for CUDA). Integer side inputs that describe the
 * batch (token ids, positions, block tables: struct model_batch, batch.h) are host memory; a
 * device backend copies what it needs.
 *
 * Numerics (docs/numerics.md has the whole contract):
 *   - ops_linear on an FP8 weight: activations quantized per token per 128 channels
 *     (s = max(amax, 1e-4) / 448, rounded up to a power of two in the ue8m0 mode of
 *     ops_set_fp8_ue8m0; e4m3 round-to-nearest-even, saturating), fp32 dots per 128-wide K block,
 *     each block scaled by s_act * s_weight and added to an fp32 accumulator. FP8 routed experts
 *     (ops_moe) quantize their activations the same way.
 *   - on a GGML block type: activations quantized to the type's vec_dot_type (Q8_K / Q8_0 / ...),
 *     GGML dot semantics.
 *   - on BF16 / F16 / F32 weights: fp32 activations (no rounding), fp32 accumulation (W16A32; the
 *     router and lm_head are computed this way).
 *   - everything else in fp32: RMSNorm, RoPE, softmax, SwiGLU, router scores.
 *
 * Threads: an ops instance is used by one thread at a time (the engine thread); it may run work
 * on its own workers internally. Besides scratch, an instance holds one numerics setting of the
 * model built on it (ops_set_fp8_ue8m0, set by model_create). Ownership: whoever calls ops_create
 * owns the instance and destroys it (after every model built on it); the instance owns what
 * ops_alloc / ops_lin_create / ops_moe_create return until freed with the matching call; weight
 * data given as struct wt_view is borrowed and must outlive the handle.
 */
#ifndef TANDEM_OPS_H
#define TANDEM_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "engine/model/batch.h"
#include "engine/weights/weights.h"

struct ops;     /* a backend instance */
struct ops_lin; /* a linear weight [rows, cols] as a backend holds it */
struct ops_moe; /* the routed experts of one MoE layer */

/* Which backend ops_create makes (gpu.placement). */
enum ops_backend {
    OPS_BACKEND_CPU = 0, /* ops_cpu: kernels/cpu on the worker pool */
    OPS_BACKEND_HYBRID,  /* ops_cuda: the GPU, routed experts on the CPU pool */
    OPS_BACKEND_GPU,     /* ops_cuda with every MoE layer's routed experts on the GPU too
                          * (re-quantized to FP8; small models) */
    OPS_BACKEND_AUTO,    /* hybrid when a CUDA device is usable, else cpu */
};

struct ops_params {
    enum ops_backend backend;
    int max_tokens;        /* the largest batch any op will see (ops_cuda sizes activation
                            * scratch and GEMM plans for it; >= 1) */
    const char *isa;       /* CPU kernels: "auto|amx|avx512|avx2|scalar" (NULL = auto) */
    int n_threads;         /* CPU worker pool participants (0 = all cores) */
    int pin, spin_us;      /* pool: pin workers to CPUs, idle spin before sleeping */
    int fp8_w8a16;         /* FP8 linears with unquantized fp32 activations (W8A16, like
                            * DeepSeek's reference default gemm_impl="bf16" without its bf16
                            * roundings) instead of the contract's e4m3 activations; for
                            * numerics comparisons. CPU backend only. */
    int gpu_device;        /* ops_cuda: the CUDA device */
    int gpu_cublaslt;      /* ops_cuda: FP8 linears of > 16 tokens on cuBLASLt (faster,
                            * ~1e-4 accumulation error) instead of the exact own kernel */
    int gpu_expert_layers; /* hybrid: routed experts of the first N MoE layers on the GPU
                            * (FP8); 0 = none. OPS_BACKEND_GPU: every layer. */
    /* hybrid: routed experts streamed to the GPU for long prefills (docs/gpu.md "Streaming
     * routed experts during prefill"); zero values: off / defaults */
    int gpu_prefill_experts;      /* 0 off, 1 on (setup failures are errors), 2 auto (they log
                                   * and turn it off) */
    int gpu_prefill_min_tokens;   /* batches of at least this many tokens stream (<= 0: 256) */
    int gpu_stream_buffer_mb;     /* staging, two slots (<= 0: 400) */
    int gpu_prefill_split_tokens; /* 0: split experts GPU/CPU from measured rates; N: experts
                                   * with >= N tokens on the GPU (1: all) */
    int gpu_stream_source;        /* 0 register: the weights' pages, made anonymous, pinned in
                                   * place; 1 alloc: a cudaMallocHost copy per layer, which the
                                   * CPU pool reads too */
    int gpu_keep_ggml;            /* ops_cuda, gpu.requant_ggml = off: non-expert weights of a
                                   * GGML or F16/F32 type stay on the CPU backend. 0 (default):
                                   * they are converted at load, projections and kv_b to FP8
                                   * e4m3 with 128x128 block scales, W16A32 linears to bf16
                                   * (docs/gpu.md "Whole-GGUF models") */
    int gpu_hot_experts;          /* hybrid, gpu.hot_experts != off: prepare every MoE layer for
                                   * hot experts (ops_moe_set_hot; the routed-expert op's
                                   * workspace and buffers are allocated at model load). 0: none
                                   * can be placed (ops_moe_hot_bytes is 0) */
    int gpu_prefill_attn_mb;      /* ops_cuda, gpu.prefill_attention_mb: score scratch (MiB) of
                                   * the GEMM attention for runs of >= 64 prompt tokens of one
                                   * sequence (kernels/cuda/mla_prefill.h); 0 = off */
    int gpu_graphs;               /* ops_cuda, gpu.cuda_graphs: forwards of 1..N tokens replay
                                   * a captured CUDA graph of their layers (ops_graph_begin);
                                   * 0 = off */
};

/* The configuration strings gpu.placement ("auto|cpu|hybrid|gpu"; NULL = cpu) and gpu.fp8_gemm
 * ("exact|cublaslt"; NULL = exact) into p->backend and p->gpu_cublaslt. ERR_CONFIG naming the
 * value when one is neither. */
int ops_params_parse(struct ops_params *p, const char *placement, const char *fp8_gemm, char *err);

/* The backend p asks for; OPS_BACKEND_AUTO is resolved here, once. Errors: ERR_UNSUPPORTED (a GPU
 * backend in a build without CUDA, no such CUDA device, an ISA the CPU lacks), ERR_CUDA,
 * ERR_NOMEM, ERR_INVAL (bad params), ERR_INTERNAL. */
int ops_create(const struct ops_params *p, struct ops **out, char *err);
/* The backend ops_create made: cpu, hybrid or gpu (never auto). */
enum ops_backend ops_backend_of(const struct ops *o);
void ops_destroy(struct ops *o);           /* NULL is fine */
const char *ops_name(const struct ops *o); /* "cpu/avx512", "hybrid:<GPU>+cpu/..." */
int ops_n_threads(const struct ops *o);
/* Free memory of the backend's device in bytes and its SM count, for sizing what is allocated
 * after the model's weights and buffers; 0 and 0 for a host-only backend. */
size_t ops_device_free(struct ops *o, int *sms);

/* The sticky error of the ops run since the last call (0 if none; ERR_NOMEM when scratch could not
 * grow, or a kernel's error), with its detail in err; clears it. Ops return void so a forward is a
 * plain sequence of calls; model_forward checks this once at the end. */
int ops_error(struct ops *o, char *err);

/* ---- memory: buffers in the backend's address space */
void *ops_alloc(struct ops *o, size_t bytes); /* zeroed; NULL when out of memory */
void ops_free(struct ops *o, void *p);        /* NULL is fine */
/* host -> backend (dst from ops_alloc) and backend -> host copies */
void ops_upload(struct ops *o, void *dst, const void *src, size_t bytes);
void ops_download(struct ops *o, void *dst, const void *src, size_t bytes);

/* ---- weights */
/* A linear weight from a 2-D view (FP8 with scale, BF16, F16, F32 or any GGML block type with a
 * dot product). ERR_UNSUPPORTED for a type the backend cannot multiply. */
int ops_lin_create(struct ops *o, const struct wt_view *w, struct ops_lin **out, char *err);
/* A linear computed W16A32 by the contract (router, lm_head: docs/model.md §3). As
 * ops_lin_create, except that a backend which converts weight types at load (ops_cuda) never
 * converts it to FP8: a GGML or F32/F16 weight becomes bf16 there (fp32 activations kept). */
int ops_lin_create_w16(struct ops *o, const struct wt_view *w, struct ops_lin **out, char *err);
/* The activation scale format of every later FP8 ops_linear and ops_moe: 0 (the default) exact
 * scales; nonzero: ue8m0, each scale rounded up to a power of two (DeepSeek-V3.1's
 * quantization_config.scale_fmt, wt_hparams.fp8_ue8m0; kernels/cpu/fp8.h). One setting per
 * instance, not per weight: model_create sets it from its model's hparams, so models sharing an
 * instance must agree. Call it between forwards only (ops_cuda's CPU experts read it on the CUDA
 * host-function thread while a forward runs). */
void ops_set_fp8_ue8m0(struct ops *o, int on);
/* Model loading is over: the backend logs what loading cost it (ops_cuda: the weights it
 * converted, their sizes and the seconds it took) and frees load-time helpers. Optional; a
 * backend stays usable for more ops_*_create calls afterwards. */
void ops_load_done(struct ops *o);
/* An embedding table: only gathered (ops_embed), never multiplied, so a backend may keep it
 * where a gather is cheapest (ops_cuda: host memory, saving vocab x hidden x 2 bytes of device
 * memory, 1.7 GiB for DeepSeek-V3). Destroy with ops_lin_destroy. */
int ops_table_create(struct ops *o, const struct wt_view *w, struct ops_lin **out, char *err);
void ops_lin_destroy(struct ops *o, struct ops_lin *l);
/* Routed experts of one layer: n_expert views per projection (gate/up [inter, hidden], down
 * [hidden, inter]), all of one type per projection. */
int ops_moe_create(struct ops *o, int n_expert, const struct wt_view *gate,
                   const struct wt_view *up, const struct wt_view *down, struct ops_moe **out,
                   char *err);
void ops_moe_destroy(struct ops *o, struct ops_moe *m);

/* Routing counts (engine/model/expert_counts.h): from now on every ops_moe on m adds the routes
 * it computes to row `row` of c, from whichever thread holds them in host memory (ops_cpu: the
 * caller's; ops_cuda: the expert job's host-function thread, or the engine thread where the
 * routes come to the host anyway); nothing extra is copied. c NULL stops counting. c must
 * outlive m (or the next call). Any backend. */
struct expert_counts;
void ops_moe_set_counts(struct ops *o, struct ops_moe *m, struct expert_counts *c, int row);
/* Hot experts: the device bytes expert e of m takes when kept in device memory by
 * ops_moe_set_hot; 0 when it cannot be (a host backend, ops_params.gpu_hot_experts off, a layer
 * whose experts are on the GPU already, an expert type without a GPU kernel). */
size_t ops_moe_hot_bytes(struct ops *o, const struct ops_moe *m, int e);
/* Keep the experts e with hot[e] != 0 (n_expert entries; NULL = none) in device memory, as the
 * raw blocks they are stored in, replacing the layer's previous hot set: from the next forward
 * on, every batch (decode and prefill) computes the routes to them on the GPU and the rest on
 * the CPU pool at the same time (docs/gpu.md "Hot experts"). Experts with no hot bytes are
 * skipped. Synchronizes. Errors: ERR_UNSUPPORTED (a backend without hot experts), ERR_NOMEM
 * (device memory: the layer then has none), ERR_CUDA. */
int ops_moe_set_hot(struct ops *o, struct ops_moe *m, const uint8_t *hot, char *err);

/* ---- ops on a batch of n tokens */

/* y[t][:] = row tokens[t] of the table (any type with a to_float), as fp32. tokens: host. */
void ops_embed(struct ops *o, const struct ops_lin *table, const int32_t *tokens, int n, float *y);

/* y[t][r] = W[r] . x[t] for r < rows; x [n, cols] and y [n, rows] contiguous. */
void ops_linear(struct ops *o, const struct ops_lin *w, const float *x, int n, float *y);

/* y[t][i] = g[i] * x[t][i] / sqrt(mean_i(x[t][i]^2) + eps), fp32; rows have strides ldx / ldy
 * (in floats), y may equal x. g: dim floats in backend memory. */
void ops_rmsnorm(struct ops *o, const float *x, int ldx, const float *g, int n, int dim, float eps,
                 float *y, int ldy);

/* DeepSeek's interleaved-pair RoPE on n tokens x n_heads vectors of 2 * n_pairs floats:
 * in at x + t*ldx_tok + h*ldx_head, out at y + t*ldy_tok + h*ldy_head (may equal x):
 *   y[2i] = A (x[2i] cos - x[2i+1] sin),  y[2i+1] = A (x[2i] sin + x[2i+1] cos),
 * angle = float(pos[t]) * freq[i] in fp32, A = amp. freq: n_pairs floats in host memory, pos: host.
 */
struct ops_rope {
    int n_pairs;       /* qk_rope / 2 */
    const float *freq; /* [n_pairs] (YaRN-adjusted) inverse frequencies */
    float amp;         /* cos/sin amplitude (YaRN mscale ratio; 1 for every shipped model) */
};
void ops_rope(struct ops *o, const struct ops_rope *r, const int32_t *pos, int n, int n_heads,
              const float *x, int ldx_tok, int ldx_head, float *y, int ldy_tok, int ldy_head);

/* Per-head matrices (the absorbed kv_b halves), created from the weight view v and its fp32
 * values (host, v->rows x v->cols, e.g. FP8 blocks times scales): the CPU backend keeps the fp32
 * copy; ops_cuda keeps an FP8 view as e4m3 + scales on the device (a quarter of the memory) and
 * expands it to fp32 into one scratch when a forward first uses it, so both compute with the same
 * fp32 values. A GGML, F16 or F32 view is re-quantized there from f32 to FP8 (unless
 * gpu_keep_ggml): then the GPU computes with the FP8 values, within e4m3's rounding of the CPU's;
 * BF16 keeps the fp32 copy. Destroy with
 * ops_heads_destroy. */
struct ops_heads;
int ops_heads_create(struct ops *o, const struct wt_view *v, const float *f32,
                     struct ops_heads **out, char *err);
void ops_heads_destroy(struct ops *o, struct ops_heads *h);

/* Per-head matrices W_h = W + w_off + h*w_head (rows x cols, row-major, W = the heads' fp32
 * values):
 *   trans = 0: y[t,h,r] = sum_c W_h[r][c] x[t,h,c]      (x has cols, y has rows per head)
 *   trans = 1: y[t,h,c] = sum_r W_h[r][c] x[t,h,r]      (x has rows, y has cols per head)
 * x[t,h,:] at x + t*ldx_tok + h*ldx_head, likewise y. Used for the absorbed MLA projections. */
void ops_head_matmul(struct ops *o, const struct ops_heads *w, int64_t w_off, int64_t w_head,
                     int rows, int cols, int trans, int n, int n_heads, const float *x, int ldx_tok,
                     int ldx_head, float *y, int ldy_tok, int ldy_head);

/* Write the batch's latent KV rows (x [n, kv->kv_dim] fp32: normalized latent | rotated k_pe)
 * into layer `layer` of the paged cache as bf16, token t at its sequence's slot pos[t]. The batch
 * must have been checked by model_forward (positions inside block tables). */
void ops_kv_store(struct ops *o, const struct model_kv *kv, int layer, const struct model_batch *b,
                  const float *x);

/* Absorbed MLA attention over the paged cache for every token of the batch, causal by absolute
 * position within each sequence (token t sees slots 0..pos[t] of its sequence, which must all be
 * written). q [n, n_heads, kv_dim]: per head q~ (kv_lora values) | rotated q_pe (rope values).
 * out [n, n_heads, kv_lora]: sum_s softmax_s(scale * q . k_s) * latent_s, fp32 softmax. */
void ops_mla_attn(struct ops *o, const struct model_kv *kv, int layer, const struct model_batch *b,
                  int n_heads, int kv_lora, float scale, const float *q, float *out);

/* Router: logits [n, n_expert] -> ids [n, top_k], weights [n, top_k] (backend memory).
 * sigmoid: s = sigmoid(logit), b = s + bias (bias may be NULL) for selection only; group limit
 * (n_group > 1): group score = sum of its 2 largest b, keep topk_group groups, the rest -inf;
 * top_k by b (ties: lower index); w = s (unbiased), / sum if norm_topk_prob, * scale.
 * softmax: s = softmax(logits), group score = max s (V2 group_limited_greedy), top_k by s, w = s,
 * normalized if norm_topk_prob, * scale. All fp32. */
struct ops_router {
    int n_expert, top_k, n_group, topk_group;
    int softmax; /* 0 = sigmoid (noaux_tc), 1 = softmax (V2) */
    int norm_topk_prob;
    float scale; /* routed_scaling_factor */
};
void ops_router(struct ops *o, const struct ops_router *r, const float *logits, const float *bias,
                int n, int32_t *ids, float *w);

/* Routed experts: y[t] = sum_k w[t][k] * down_e(silu(gate_e x[t]) * up_e x[t]), e = ids[t][k].
 * Overwrites y [n, hidden]. Each active expert's weights are read once for all its tokens. */
void ops_moe(struct ops *o, const struct ops_moe *m, const float *x, int n, const int32_t *ids,
             const float *w, int top_k, float *y);

/* Routed experts with deferral (engine.defer_experts; docs/numerics.md "Expert deferral"): as
 * ops_moe, but of each token's top_k routes the n_defer with the smallest weights w (equal
 * weights: the later slot first) are "deferred": y[t] sums the other routes and y_def[t] the
 * deferred ones, each in slot order as ops_moe (1 <= n_defer <= top_k; n_defer = top_k leaves y
 * zero). Overwrites y and y_def. y_def may still be being written when the call returns (ops_cuda:
 * a CPU job that runs while the following ops are enqueued): the caller reads it only through
 * later ops (ops_add), which are ordered after it, and keeps it untouched until then. */
void ops_moe_defer(struct ops *o, const struct ops_moe *m, const float *x, int n,
                   const int32_t *ids, const float *w, int top_k, int n_defer, float *y,
                   float *y_def);

/* y[i] = silu(gate[i]) * up[i] over n * dim floats (contiguous), fp32. y may equal gate. */
void ops_swiglu(struct ops *o, const float *gate, const float *up, int64_t n, float *y);

/* y[i] += x[i] over n floats. */
void ops_add(struct ops *o, float *y, const float *x, int64_t n);

/* y[i][:] = x[idx[i]][:] for i < n, rows of dim floats. idx: host. */
void ops_gather(struct ops *o, const float *x, int dim, const int32_t *idx, int n, float *y);

/* ---- fused forms (a backend may do less work; each has the result of the plain ops) */

/* ops_rmsnorm whose output y (ldy == dim) is next read by ops_linear(next, y, n): a backend may
 * prepare that linear's input in the same pass (ops_cuda: the FP8 activation quantization, into
 * the scratch the linear then reads instead of quantizing again). next may be NULL. */
void ops_rmsnorm_lin(struct ops *o, const float *x, int ldx, const float *g, int n, int dim,
                     float eps, float *y, int ldy, const struct ops_lin *next);

/* One linear of a's rows followed by b's (same cols): y[t] = a x[t] | b x[t], so two projections
 * of one input cost one call. Each row as ops_lin_create would compute it, up to the backend's
 * summation order (ops_cuda: its FP8 kernel splits K by the shape, so the rows' fp32 sums may
 * round differently than in two calls). ERR_UNSUPPORTED when the backend does not fuse these
 * views (the CPU backend, non-FP8 weights, a's rows not a multiple of 128): use two linears. */
int ops_lin_create_cat(struct ops *o, const struct wt_view *a, const struct wt_view *b,
                       struct ops_lin **out, char *err);

/* SwiGLU on a fused gate|up output: y[t][i] = silu(gu[t][i]) * gu[t][dim + i] for t < n, i < dim;
 * gu [n][2 dim], y [n][dim]; fp32 as ops_swiglu. next as in ops_rmsnorm_lin (may be NULL). */
void ops_swiglu_gu(struct ops *o, const float *gu, int n, int dim, float *y,
                   const struct ops_lin *next);

/* Two RoPE jobs at the same positions (e.g. a layer's k_pe and q_pe), each as ops_rope; a backend
 * may run them in one launch. b may be NULL. */
struct ops_rope_job {
    int n_heads;
    const float *x;
    int ldx_tok, ldx_head;
    float *y;
    int ldy_tok, ldy_head;
};
void ops_rope2(struct ops *o, const struct ops_rope *r, const int32_t *pos, int n,
               const struct ops_rope_job *a, const struct ops_rope_job *b);

/* ---- decode-step graphs (ops_cuda with gpu.cuda_graphs; docs/gpu.md "CUDA graphs")
 *
 * model_forward brackets the layer ops of a forward (not the embedding gather, not the head):
 *   if (!ops_graph_begin(o, kv, b, rope, h)) { layers; if (ops_graph_end(o)) layers again; }
 * begin returns 1 when the backend replayed a graph captured earlier for this shape (the layers'
 * work is enqueued; the caller skips the layer ops), 0 when the caller runs them (eagerly, or
 * while the backend captures them); end returns 1 when a capture failed and nothing ran (the
 * caller runs the layers again, eagerly). h: the residual stream the layers work on (part of the
 * graph's key, with the KV cache). The layer ops must be the same sequence for every forward of
 * a shape (no test hooks). Backends without graphs: begin returns 0, end 0. */
int ops_graph_begin(struct ops *o, const struct model_kv *kv, const struct model_batch *b,
                    const struct ops_rope *rope, const void *h);
int ops_graph_end(struct ops *o);

#endif
