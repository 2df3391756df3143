/* convert.h - writing models: synthetic models, quantization, dequantization, merging.
 *
 * Output layouts:
 *  - synth and quantize write tandem's "no-merge" layout: config.json (with FP8
 *    quantization_config), model.safetensors with HF names (GPU side: FP8 e4m3 linears +
 *    128x128 `weight_scale_inv`, BF16 embeddings/norms/router/lm_head, F32 correction bias),
 *    experts.gguf (routed experts as stacked `blk.N.ffn_{gate,up,down}_exps.weight` of one GGML
 *    type, with deepseek2 metadata), tokenizer.json (tiktoken.model for the Kimi / Moonlight
 *    presets), tokenizer_config.json, generation_config.json. synth can instead write kv_b as
 *    llama.cpp's split `blk.N.attn_k_b` / `attn_v_b` (F32, in the GGUF) and the GGUF as a
 *    gguf-split set `experts-0000K-of-0000N.gguf`; quantize always writes kv_b_proj.
 *  - synth with gguf_only writes llama.cpp's form instead: the whole model in GGUF (model.gguf or
 *    a gguf-split set `model-0000K-of-0000N.gguf`), canonical names, hyperparameters and the
 *    tokenizer (tokenizer.ggml.*, tokenizer.chat_template) as metadata of the first file, and
 *    nothing else in the directory: 2-D weights (embedding, attention, dense and shared FFN,
 *    lm_head) of linears_type, norms, router and correction bias F32, routed experts as above.
 *  - dequant writes model.safetensors with HF names (per-expert), every tensor F32 or BF16, plus
 *    config.json without quantization_config and the tokenizer files: loadable by transformers.
 *  - merge writes tandem's self-describing hybrid safetensors (docs/formats.md): canonical GGUF
 *    names; GGML-typed tensors stored as U8 bytes with `tandem.ggml_type.<name>` and
 *    `tandem.shape.<name>` in __metadata__, plus `tandem.format` = "hybrid",
 *    `tandem.format_version` = "1" and `tandem.config` (the config.json text).
 *
 * Every writer streams one tensor (or one block of rows) at a time: the whole model is never in
 * memory. Generation and quantization run on `threads` pthreads (0 = every online core); the
 * output bytes do not depend on the thread count. Files are written as NAME.tmp and renamed.
 *
 * Threads: each function is called from one thread and returns when done.
 */
#ifndef TANDEM_CONVERT_H
#define TANDEM_CONVERT_H

#include <stdint.h>

/* experts_type value for llama.cpp's Q4_K_M mix of routed experts: gate/up q4_K, down q6_K. */
#define WT_EXPERTS_Q4_K_M 1000

struct wt_synth_opts {
    const char *preset; /* "tiny", "v3-slice", "tiny-v2", "v2-lite-slice", "v2-slice";
                         * NULL when config is given */
    const char *config; /* a config.json to take the shape from (instead of a preset) */
    const char *out;    /* output directory (created) */
    uint64_t seed;
    int experts_type;          /* enum qtype of the routed experts, WT_EXPERTS_Q4_K_M; -1 = q8_0 */
    int dense_layers;          /* -1 = the preset's */
    int moe_layers;            /* -1 = the preset's */
    int n_experts;             /* routed experts per MoE layer; -1 = the preset's */
    int vocab;                 /* vocabulary size; 0 = the preset's */
    int zero;                  /* 1: all-zero weights written as sparse files (shape-only
                                * models); 2: the same except the embeddings, norms, router and
                                * lm_head (random), so tokens still spread over the experts as in
                                * a real model: timing models with realistic expert traffic */
    int threads;               /* 0 = all cores */
    int mla_split;             /* 1: kv_b as llama.cpp's split attn_k_b / attn_v_b (F32) in the
                                * GGUF instead of kv_b_proj in the safetensors; same values */
    int gguf_split;            /* > 1: the GGUF as a gguf-split set of that many files */
    const char *chat_template; /* Jinja for tokenizer_config.json (NULL: a minimal placeholder) */
    int experts_down_type;     /* enum qtype of ffn_down_exps; -1 = as experts_type (a mix like
                                * unsloth's: IQ2_XXS gate/up with IQ3_XXS or Q4_K down) */
    int gguf_only;             /* 1: llama.cpp's whole-model GGUF (see above) */
    int linears_type;          /* gguf_only: enum qtype of the other 2-D weights; -1 = q8_0 */
};

int wt_synth(const struct wt_synth_opts *o, char *err);

/* HF-layout BF16/F32 model -> tandem's no-merge layout (FP8 GPU side, GGML experts of
 * experts_type or WT_EXPERTS_Q4_K_M, -1 = q4_K). Tokenizer files are copied. */
int wt_convert_quantize(const char *model_dir, const char *out, int experts_type, int threads,
                        char *err);

/* Any model tandem reads -> HF-layout F32 (type QTYPE_F32) or BF16 safetensors. */
int wt_convert_dequant(const char *model_dir, const char *out, int type, int threads, char *err);

/* FP8 safetensors directory (+ optional GGUF directory for the routed experts; KTransformers'
 * merged output is accepted as either) -> tandem hybrid safetensors. */
int wt_convert_merge(const char *fp8_dir, const char *gguf_dir, const char *out, char *err);

#endif
