/* synth_internal.h - shared by synth.c, synth_tok.c and convert.c (engine/weights only).
 *
 * The emitter: a list of output tensors ("jobs"), each produced block of rows by block of rows
 * (128 rows: one FP8 scale row) as f32 by a fill callback (random for synth, read-and-dequantize
 * for quantize/dequant), converted to the output format on worker threads and streamed to a
 * safetensors or GGUF writer in order.
 */
#ifndef TANDEM_SYNTH_INTERNAL_H
#define TANDEM_SYNTH_INTERNAL_H

#include "weights.h"

#include <stdint.h>

struct cpuq_ops;
struct sft_writer;
struct gguf_writer;

/* Write dir/tokenizer.json; *n_vocab = number of token ids used. */
int wt__synth_tokenizer(const char *dir, int *n_vocab, char *err);
/* Write dir/tokenizer_config.json with the given chat template. */
int wt__synth_tokenizer_config(const char *dir, const char *chat_template, int max_len, char *err);
/* Write Kimi's tiktoken-style tokenizer to dir: tiktoken.model and tokenizer_config.json (Kimi's
 * special tokens, bos [BOS], eos [EOS], the chat template); *n_vocab = ids used (the ranks and
 * 256 special ids), *bos / *eos their ids. */
int wt__synth_tiktoken(const char *dir, const char *chat_template, int max_len, int *n_vocab,
                       int *bos, int *eos, char *err);
/* Kimi's published chat templates: Kimi-K2-Thinking's (thinking 1) or Kimi-K2-Instruct's first
 * one. Static storage. */
const char *wt__synth_kimi_template(int thinking);
/* Set the tokenizer.ggml.* keys and tokenizer.chat_template of w from the tokenizer files in dir
 * as llama.cpp's converter writes them: tokenizer.json + tokenizer_config.json (a BPE
 * tokenizer, pre "deepseek-v3"), or tiktoken.model + tokenizer_config.json (pre "kimi-k2",
 * tok_tiktoken_to_gguf; ids up to n_vocab - 1 beyond the tokenizer as "[PADID]"). */
int wt__synth_tokenizer_gguf(struct gguf_writer *w, const char *dir, int n_vocab, char *err);

enum wt__fmt { WT_FMT_BF16, WT_FMT_F32, WT_FMT_FP8, WT_FMT_GGML };
/* WT_INIT_K_B / WT_INIT_V_B: synth's split MLA tensors, taken from layer `layer`'s random kv_b
 * after its FP8 round trip, so both MLA layouts hold the same values */
enum wt__init { WT_INIT_NORMAL, WT_INIT_NORM, WT_INIT_BIAS, WT_INIT_K_B, WT_INIT_V_B };
enum wt__src { WT_SRC_TENSOR, WT_SRC_STACKED, WT_SRC_EXPERT };

struct wt__job {
    char name[WT_NAME_LEN];  /* output name */
    char canon[WT_NAME_LEN]; /* canonical name (the source for quantize/dequant) */
    int fmt;                 /* enum wt__fmt */
    int gtype;               /* WT_FMT_GGML: enum qtype */
    int ndim;
    int64_t shape[3];
    int64_t rows, cols; /* flattened: rows = product of all but the last dim */
    int init;           /* synth: enum wt__init */
    float std;
    int src; /* quantize/dequant: enum wt__src */
    int layer, proj, expert;
};

struct wt__emitter {
    const struct cpuq_ops *ops;
    int threads;
    int zero; /* skip: sparse all-zero output */
    uint64_t seed;
    const struct wt_model *model; /* source model (quantize/dequant) */
    const struct wt_hparams *hp;  /* the model being written */
    /* rows [r0, r0 + n) of job j as f32 (n x cols) */
    int (*fill)(const struct wt__emitter *em, const struct wt__job *j, int64_t r0, int64_t n,
                float *out, char *err);
};

/* hp as llama.cpp's deepseek2.* GGUF metadata (+ general.architecture, bos/eos ids); 0 or an
 * error code (out of memory) */
int wt__gguf_meta(struct gguf_writer *w, const struct wt_hparams *hp);
/* bytes of the job's output tensor (not counting an FP8 scale) */
size_t wt__job_bytes(const struct wt__job *j);
/* declare job (and its FP8 scale tensor) in a writer */
int wt__job_declare_sft(struct sft_writer *w, const struct wt__job *j, char *err);
int wt__job_declare_gguf(struct gguf_writer *w, const struct wt__job *j, char *err);
/* produce job's data (and FP8 scale) into exactly one of the writers */
int wt__emit(const struct wt__emitter *em, const struct wt__job *j, struct sft_writer *sw,
             struct gguf_writer *gw, char *err);
/* The no-merge layout's choices beyond the hyperparameters. */
struct wt__layout {
    int experts_type; /* enum qtype of the routed experts, or WT_EXPERTS_Q4_K_M */
    int experts_down; /* enum qtype of ffn_down_exps; -1: as experts_type */
    int mla_split;    /* 1: kv_b as llama.cpp's split attn_k_b / attn_v_b (F32) in the GGUF */
    int gguf_split;   /* 1: one GGUF file; N > 1: a gguf-split set X-0000K-of-0000N.gguf */
    int gguf_only;    /* 1: every tensor in the GGUF (model*.gguf), canonical names, no
                       * safetensors or config.json; 0: the no-merge layout (experts*.gguf) */
    int linears;      /* gguf_only: enum qtype of the 2-D non-expert weights */
};

/* FP8 e4m3 of nr rows x C floats as the emitter writes it: q[nr x C], scales[ceil(C/128)] (one
 * per 128 columns: amax / 448, 1 for an all-zero block) */
void wt__fp8_block(const float *x, int64_t nr, int64_t C, uint8_t *q, float *scales);
/* the layout's tensor plan for hp: *st (safetensors, HF names), *gg (GGUF; with gguf_only
 * every tensor, *st empty) */
int wt__plan(const struct wt_hparams *hp, const struct wt__layout *lay, struct wt__job **st,
             int *n_st, struct wt__job **gg, int *n_gg, char *err);
/* write a whole model to dir: the no-merge layout (weights, config, generation config), or
 * with gguf_only the GGUF file(s) alone, the tokenizer taken from dir's tokenizer files (which
 * the caller removes afterwards) */
int wt__write_model(const struct wt__emitter *em, const struct wt_hparams *hp,
                    const struct wt__layout *lay, const char *dir, char *err);
/* mkdir -p */
int wt__mkdirs(const char *dir, char *err);
int wt__nthreads(int threads);

#endif
