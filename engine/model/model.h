/* model.h - the DeepSeek-V3 forward pass, described once, run on a batch of tokens.
 *
 * The scheduler (engine/sched) decides which tokens run in a step; the model computes them.
 * A batch is a flat list of tokens from one or more sequences. Token i belongs to sequence
 * seq[i] and sits at absolute position pos[i]; its latent KV entry (the normalized kv_lora_rank
 * latent plus the qk_rope rotated key, bf16) is written to the sequence's block table at slot
 * pos[i] (block = table[pos / block_tokens], row = pos % block_tokens) in every layer, and it
 * attends to positions 0..pos[i] of its sequence (entries of earlier steps are read from the
 * cache; entries of earlier tokens of the same batch are visible too). Logits are produced only
 * for the tokens listed in logits_idx.
 *
 * Threads: a model is used by one thread at a time (the engine thread); it drives the CPU expert
 * pool internally. Ownership: the model borrows the wt_model (which must outlive it) and owns
 * its work buffers; the KV storage belongs to the caller (struct model_kv).
 *
 * Errors: model_create names the first missing or misshapen tensor (ERR_FORMAT), an unsupported
 * weight type (ERR_UNSUPPORTED) or an unavailable cpu.isa (ERR_UNSUPPORTED); model_forward
 * rejects a malformed batch before computing anything (ERR_INVAL; a position at or beyond
 * max_position_embeddings: ERR_CTX_OVERFLOW) and reports a failure inside an op (ERR_NOMEM for
 * scratch growth, or a kernel's error) after the forward.
 *
 * Changes since the first contract (names kept): model_hparams, model_max_batch_tokens and
 * model_isa accessors; test/debug hooks model_set_route_hook and model_set_lin_hook (NULL by
 * default, used by tests/engine/test_model.c). The implementation is engine/model/model.c over
 * the ops interface engine/model/ops.h (CPU backend ops_cpu.c).
 */
#ifndef TANDEM_MODEL_H
#define TANDEM_MODEL_H

#include <stddef.h>
#include <stdint.h>

struct wt_model;
struct wt_hparams;
struct cfg;
struct model;

/* Element type of the latent cache: bf16 is the numerics contract (design.md §5); f32 keeps the
 * latents unrounded at twice the memory (engine.kv_cache_type; the GPU MLA kernels read bf16 only,
 * so with f32 the hybrid backend runs attention on the CPU). */
enum model_kv_type { MODEL_KV_BF16 = 0, MODEL_KV_F32 = 1 };
static inline size_t model_kv_elem_size(int type) { return type == MODEL_KV_F32 ? 4 : 2; }

/* Caller-owned paged KV storage: for each layer, n_blocks blocks of block_tokens rows of
 * kv_dim (= kv_lora_rank + qk_rope) values of `type`; row r of layer l starts at byte
 * (char *)layer_data[l] + r * kv_dim * model_kv_elem_size(type), r = block * block_tokens + i.
 * A zero-initialized struct is bf16. */
struct model_kv {
    int n_layers, n_blocks, block_tokens, kv_dim;
    int type;                   /* enum model_kv_type */
    void **layer_data;
};

struct model_seq {
    const int32_t *blocks;      /* block table: block ids covering positions 0..n_pos-1 */
    int n_blocks;
};

struct model_batch {
    int n_tokens;
    const int32_t *tokens;      /* [n_tokens] */
    const int32_t *pos;         /* [n_tokens] absolute positions */
    const int32_t *seq;         /* [n_tokens] index into seqs */
    int n_seqs;
    const struct model_seq *seqs;
    int n_logits;
    const int32_t *logits_idx;  /* [n_logits] batch indices whose logits are wanted */
};

struct model_params {
    const char *isa;            /* cpu.isa */
    int n_threads;              /* cpu.threads (0 = all cores) */
    int pin, spin_us;
    int max_batch_tokens;       /* largest n_tokens passed to model_forward */
    const char *placement;      /* gpu.placement: "auto|cpu|hybrid|gpu"; NULL = cpu. auto = hybrid
                                 * when a CUDA device is usable, else cpu; gpu = hybrid with every
                                 * layer's routed experts on the GPU too (FP8; small models) */
    int gpu_device;             /* gpu.device */
    const char *gpu_fp8_gemm;   /* gpu.fp8_gemm: "exact" (NULL) | "cublaslt" */
    int gpu_expert_layers;      /* gpu.expert_layers: with hybrid placement, the routed experts
                                 * of the first N MoE layers on the GPU (placement gpu: all) */
    int fp8_w8a16;              /* 1: FP8 linears without activation quantization (W8A16; a
                                 * numerics-comparison mode, CPU backend only; 0 = the contract) */
};

int model_create(const struct wt_model *w, const struct model_params *p, struct model **out,
                 char *err);
void model_destroy(struct model *m);
int model_vocab(const struct model *m);
int model_kv_dim(const struct model *m);
int model_n_layers(const struct model *m);

/* Test/debug hook: after the router of every MoE layer, fn gets the experts chosen for each
 * token of the batch (host memory, [n_tokens][top_k], in batch order). Lets the float64 reference
 * follow the fast path's choice at genuine routing near-ties (tests/engine/test_model.c).
 * NULL disables it (the default). Engine thread only. */
typedef void (*model_route_fn)(void *ud, int layer, int n_tokens, const int32_t *ids, int top_k);
void model_set_route_hook(struct model *m, model_route_fn fn, void *ud);

/* Test/debug hook: before each linear of the forward, fn gets its fp32 input ([n_tokens][cols],
 * host memory, batch order). `which` is an enum model_lin; layer is -1 for lm_head. Lets the
 * float64 reference take the fast path's rounding direction where its own FP8 activation
 * quantization sits within rounding noise of a tie. NULL disables it (the default). */
enum model_lin {
    MODEL_LIN_Q_A, MODEL_LIN_Q_B, MODEL_LIN_Q, MODEL_LIN_KV_A, MODEL_LIN_O,
    MODEL_LIN_GATE, MODEL_LIN_UP, MODEL_LIN_DOWN,   /* dense FFN, or the shared experts */
    MODEL_LIN_ROUTER, MODEL_LIN_OUT,
    MODEL_LIN_RESID,            /* not a linear: the residual stream entering layer `layer`
                                 * (layer == n_layers: before the final norm) */
    MODEL_LIN_COUNT
};
typedef void (*model_lin_fn)(void *ud, int layer, int which, int n_tokens, int cols,
                             const float *x);
void model_set_lin_hook(struct model *m, model_lin_fn fn, void *ud);

/* The hyperparameters the model was built with, and the largest batch it accepts. */
const struct wt_hparams *model_hparams(const struct model *m);
int model_max_batch_tokens(const struct model *m);
/* "cpu/avx512", ...: the backend and kernels in use */
const char *model_isa(const struct model *m);
/* The backend instance (engine/model/ops.h), for benchmarks that read its statistics. */
struct ops;
struct ops *model_backend(struct model *m);
/* Free memory of the model's CUDA device after model_create (weights and work buffers are
 * allocated by then) and its SM count; 0 and 0 on the CPU backend or without CUDA. */
size_t model_gpu_free(struct model *m, int *sms);

/* Run the batch; write n_logits x vocab fp32 logits. Errors: ERR_INVAL for a malformed batch
 * (token id out of range, position beyond a block table, too many tokens). */
int model_forward(struct model *m, const struct model_kv *kv, const struct model_batch *b,
                  float *logits, char *err);

#endif
