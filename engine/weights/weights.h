/* weights.h - the model on disk: hyperparameters and one tensor index over every weight file.
 *
 * A model is a directory (or one file) holding any mix of: DeepSeek FP8/BF16 safetensors,
 * GGUF files (single or split), KTransformers' merged safetensors, and tandem's own hybrid
 * safetensors written by `tandem convert`. wt_open() maps every file read-only and privately,
 * validates headers, sizes and offsets, normalizes tensor names to the GGUF convention and
 * reads hyperparameters from config.json or GGUF metadata. wt_validate() then checks that
 * every tensor the architecture needs is present with the right shape and type.
 *
 * Canonical names (GGUF style, llama.cpp's deepseek2 names):
 *   token_embd.weight  output_norm.weight  output.weight
 *   blk.N.attn_norm.weight  blk.N.attn_q_a.weight  blk.N.attn_q_a_norm.weight blk.N.attn_q_b.weight
 *   blk.N.attn_q.weight (no q_lora)  blk.N.attn_kv_a_mqa.weight  blk.N.attn_kv_a_norm.weight
 *   blk.N.attn_kv_b.weight  blk.N.attn_output.weight  blk.N.ffn_norm.weight
 *   or, instead of attn_kv_b, llama.cpp's split blk.N.attn_k_b.weight + blk.N.attn_v_b.weight
 *   dense:  blk.N.ffn_gate.weight  blk.N.ffn_up.weight  blk.N.ffn_down.weight
 *   MoE:    blk.N.ffn_gate_inp.weight (router)  blk.N.exp_probs_b.bias (correction bias)
 *           blk.N.ffn_{gate,up,down}_shexp.weight  (shared experts)
 *           blk.N.ffn_{gate,up,down}_exps.weight   (routed experts, stacked; see wt_expert())
 *           blk.N.ffn_{gate,up,down}_exps.E.weight (one routed expert E, from per-expert HF
 * tensors) HF names map as: model.embed_tokens -> token_embd, model.norm -> output_norm, lm_head ->
 * output, model.layers.N.{input_layernorm -> attn_norm, self_attn.q_a_proj -> attn_q_a,
 *   q_a_layernorm -> attn_q_a_norm, q_b_proj -> attn_q_b, q_proj -> attn_q,
 *   kv_a_proj_with_mqa -> attn_kv_a_mqa, kv_a_layernorm -> attn_kv_a_norm, kv_b_proj -> attn_kv_b,
 *   o_proj -> attn_output, post_attention_layernorm -> ffn_norm, mlp.{gate,up,down}_proj ->
 *   ffn_{gate,up,down}, mlp.gate -> ffn_gate_inp, mlp.gate.e_score_correction_bias ->
 *   exp_probs_b.bias, mlp.shared_experts.X_proj -> ffn_X_shexp, mlp.experts.E.X_proj ->
 *   ffn_X_exps.E}. `X.weight_scale_inv` stays `<canonical X>.weight_scale_inv` (also in the index).
 * MTP layers (index >= num_hidden_layers, blk.N.nextn.*) are skipped (counted in n_nextn).
 * When the same canonical tensor comes from several files, the first one opened wins (safetensors
 * before GGUF within a directory, the model directory before wt_add_dir ones), except routed
 * experts: a stacked GGML tensor (GGUF, KTransformers blob, tandem hybrid) of a later file replaces
 * per-expert tensors, so an FP8 checkpoint plus GGUF experts needs no merge step.
 * FP8 weights carry their scale tensor (`weight_scale_inv`) in wt_tensor.scale.
 *
 * Shapes are row-major, outermost first, as in PyTorch: a linear weight is [out, in]; stacked
 * experts are [n_expert, out, in]. (GGUF's ne[] order is reversed on load.)
 *
 * Threads: open/validate/close on one thread; afterwards the index is read-only and may be read
 * from any thread. Ownership: the index owns the mappings; tensor data pointers are valid until
 * wt_close().
 */
#ifndef TANDEM_WEIGHTS_H
#define TANDEM_WEIGHTS_H

#include "kernels/cpu/qtype.h"

#include <stddef.h>
#include <stdint.h>

#define WT_MAX_DIMS 4
#define WT_NAME_LEN 96

enum wt_scoring { WT_SCORE_SIGMOID = 0, WT_SCORE_SOFTMAX = 1 };

/* Everything the forward pass needs from config.json / GGUF metadata. */
struct wt_hparams {
    char arch[32]; /* "deepseek_v3" or "deepseek_v2" */
    int vocab_size;
    int hidden;    /* hidden_size (D) */
    int inter;     /* intermediate_size (dense FFN) */
    int moe_inter; /* moe_intermediate_size (per routed expert) */
    int n_layers;  /* num_hidden_layers (MTP layers excluded) */
    int n_heads;
    int q_lora_rank;              /* 0 = plain q_proj (V2-Lite, Moonlight) */
    int kv_lora_rank;             /* 512 */
    int qk_nope, qk_rope, v_head; /* 128, 64, 128 */
    int n_routed, n_shared, top_k;
    int n_group, topk_group;
    int first_k_dense, moe_layer_freq;
    float routed_scale;
    int norm_topk_prob;
    enum wt_scoring scoring; /* softmax: DeepSeek-V2 routing (group score = max, no bias) */
    float rms_eps;
    float rope_theta;
    int yarn; /* rope_scaling type yarn present */
    float yarn_factor, yarn_beta_fast, yarn_beta_slow, yarn_mscale, yarn_mscale_all_dim;
    int yarn_orig_ctx;
    int max_pos; /* max_position_embeddings */
    int bos_id, eos_id;
    int n_nextn; /* MTP layers present on disk (skipped) */
    /* config.json quantization_config.scale_fmt "ue8m0" (DeepSeek-V3.1): FP8 activation scales
     * are rounded up to powers of two (kernels/cpu/fp8.h); 0: exact scales (absent, null; GGUF) */
    int fp8_ue8m0;
};

/* is layer l a MoE layer? */
int wt_layer_is_moe(const struct wt_hparams *hp, int l);
/* HF's topk_method for these hparams: noaux_tc (sigmoid), group_limited_greedy (softmax with
 * n_group > 1) or greedy */
const char *wt_topk_method(const struct wt_hparams *hp);

struct wt_tensor {
    char name[WT_NAME_LEN]; /* canonical name */
    int type;               /* enum qtype */
    int ndim;
    int64_t shape[WT_MAX_DIMS]; /* row-major, outermost first */
    const void *data;           /* mapped, read-only */
    size_t nbytes;
    const struct wt_tensor
        *scale; /* FP8: F32 [ceil(rows/128), ceil(cols/128)] multipliers; else NULL */
    int file;   /* index into the file list, for messages */
};

/* One routed expert's matrix, wherever it is stored (stacked GGUF tensor, per-expert HF tensors,
 * KTransformers blob). rows x cols, row-major, each row row_bytes bytes of `type`. */
struct wt_view {
    int type;
    int64_t rows, cols;
    const void *data;
    size_t row_bytes;
    const float *scale; /* FP8 only: [ceil(rows/128)][ceil(cols/128)] */
};

enum wt_proj { WT_GATE = 0, WT_UP = 1, WT_DOWN = 2 };

struct wt_model;

/* Open a model directory or file (a path to one shard of a gguf-split set opens the set). Maps
 * every weight file; parses config.json (if present; else GGUF metadata, a hybrid file's
 * tandem.config, or config.json in the directory above) into hparams. Errors (ERR_IO,
 * ERR_FORMAT, ERR_UNSUPPORTED, ERR_NOT_FOUND) name file and tensor, or the file to copy where. */
int wt_open(const char *path, struct wt_model **out, char *err);
/* Add GGUF (or other) weight files of another directory, e.g. --experts-from. */
int wt_add_dir(struct wt_model *m, const char *dir, char *err);
/* Check every tensor the architecture needs (shapes, types, FP8 scale shapes). */
int wt_validate(const struct wt_model *m, char *err);
void wt_close(struct wt_model *m);
/* Replace the pages of [p, p + n), rounded out to whole pages, of a model mapping by private
 * anonymous pages holding the same bytes; pointers into them stay valid. For memory about to be
 * pinned (cudaHostRegister): a long-term pin of file-backed private pages can stall in the
 * kernel, while anonymous pages pin like any malloc'd buffer. Costs one copy of the range
 * (the file's page cache becomes reclaimable), on up to `threads` threads. Call before other
 * threads read the range. Errors: ERR_NOMEM, ERR_IO (the mapping could not be replaced; it is
 * left as it was). */
int wt_pages_anonymous(const void *p, size_t n, int threads, char *err);

const struct wt_hparams *wt_hparams(const struct wt_model *m);
const char *wt_dir(const struct wt_model *m); /* the model directory */
int wt_count(const struct wt_model *m);
const struct wt_tensor *wt_at(const struct wt_model *m, int i);
const struct wt_tensor *wt_get(const struct wt_model *m, const char *name); /* NULL if absent */
/* printf-style lookup: wt_getf(m, "blk.%d.attn_norm.weight", l) */
const struct wt_tensor *wt_getf(const struct wt_model *m, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Routed expert e of MoE layer l. */
int wt_expert(const struct wt_model *m, int layer, enum wt_proj p, int e, struct wt_view *out,
              char *err);
/* MLA's kv_b of layer l in kv_b_proj's layout (per head: nope rows of W_UK, then v rows of
 * W_UV; kv_lora_rank columns) as f32 rows [r0, r0 + n), read from `blk.l.attn_kv_b.weight` or
 * from llama.cpp's split `blk.l.attn_k_b.weight` [H, L, nope] + `blk.l.attn_v_b.weight`
 * [H, v, L] (mla.c). wt_kv_b_split: 1 if layer l has only the split form. */
int wt_kv_b_rows(const struct wt_model *m, int layer, int64_t r0, int64_t n, float *out, char *err);
int wt_kv_b_split(const struct wt_model *m, int layer);
/* What loading skipped, for the log and `tandem inspect`: "" or e.g. "19 MTP tensors (...):
 * blk.61.*" (logged once at open, never per tensor). */
const char *wt_skipped(const struct wt_model *m);
const char *wt_file_name(const struct wt_model *m, int file);
int wt_n_files(const struct wt_model *m);

/* ---- helpers (pure, thread-safe) */
const char *wt_proj_name(enum wt_proj p);            /* "gate", "up", "down" */
int wt_name_is_routed_expert(const char *canonical); /* ffn_*_exps (stacked or per expert) */
/* canonical -> Hugging Face name (per-expert form for blk.N.ffn_X_exps.E.weight); -1 if none */
int wt_hf_name(const char *canonical, char *out, size_t n);
/* Parse a config.json (DeepSeek-V3/V2 family; rope_scaling or rope_parameters). */
int wt_hparams_from_json_file(const char *path, struct wt_hparams *hp, char *err);
int wt_hparams_from_json_text(const char *text, size_t len, struct wt_hparams *hp, char *err);
/* hparams -> config.json text (malloc'd, caller frees); NULL on out of memory. Carries
 * quantization_config for FP8 when fp8 != 0 (with scale_fmt "ue8m0" when hp->fp8_ue8m0). */
char *wt_hparams_to_json(const struct wt_hparams *hp, int fp8);
/* Expected shape of a canonical tensor under hp (ndim 0 if the name is not a model tensor).
 * Stacked experts: [n_routed, rows, cols]; per expert: [rows, cols]. */
int wt_expected_shape(const struct wt_hparams *hp, const char *canonical, int64_t *shape);

#endif
