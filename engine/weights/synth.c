/* synth.c - `tandem convert synth`: deterministic random DeepSeek-V3-family models.
 *
 * Presets: `tiny` (hidden 256, 2 heads with the real MLA head dims, q_lora 256, kv_lora 512,
 * 1 dense + 2 MoE layers, 8 routed experts in 4 groups (topk_group 2, top-4), 1 shared expert,
 * moe_inter 256, YaRN; a few MB: every dim is a multiple of 256 so any GGML type applies, and
 * kv_a's 576 rows exercise FP8's ceil-divided scale grid) and `v3-slice` (DeepSeek-V3's true
 * dims, vocab 129280, default 1 dense + 2 MoE layers and 256 experts); DeepSeek-V2's shapes:
 * `tiny-v2` (tiny with V2-Lite's attention and routing), `v2-lite-slice` and `v2-slice` (the
 * true dims of V2-Lite and of V2 / V2.5 236B), `tiny-moonlight` and `tiny-kimi` (tiny with
 * Moonlight's and Kimi-K2's attention, routing and RoPE, and Kimi's tiktoken-style tokenizer:
 * synth_tok.c). Or any config.json. --vocab overrides the vocabulary (raised to the synth
 * tokenizer's size if smaller).
 *
 * Values: linears N(0, 1/in) so activations stay O(1), norm weights 1 + N(0, 0.1^2), embedding
 * N(0, 1), correction bias N(0, 0.02^2). Every block of 128 rows of a tensor draws from its own
 * generator, seeded from (seed, tensor name, block), so the model depends only on the seed, never
 * on the thread count. Normal deviates: Irwin-Hall sum of four uniforms (fast, adequate here).
 * With mla_split, kv_b is written as llama.cpp's split attn_k_b / attn_v_b (F32, in the GGUF)
 * holding exactly the values the kv_b layout's FP8 kv_b_proj dequantizes to, so one seed gives
 * the same model in both layouts. Routed experts take any GGML type, with another for down (a
 * mix like unsloth's dynamic i-quants); gguf_only writes llama.cpp's whole-model GGUF (convert.h).
 *
 * Threads: wt_synth runs on the calling thread plus the emitter's workers.
 */
#include "convert.h"
#include "engine/text/tmpl.h"
#include "synth_internal.h"

#include "common/err.h"
#include "kernels/cpu/cpuq.h"
#include "kernels/cpu/fp8.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    while (*s) h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

/* approximately N(0, 1): sum of four 16-bit uniforms, centred and scaled */
static float gauss(uint64_t *s)
{
    uint64_t r = splitmix(s);
    float u = (float)(r & 0xffff) + (float)((r >> 16) & 0xffff) + (float)((r >> 32) & 0xffff) +
              (float)(r >> 48);
    return (u / 65536.0f - 2.0f) * 1.7320508f;
}

static int fill_random(const struct wt__emitter *em, const struct wt__job *j, int64_t r0, int64_t n,
                       float *out, char *err);

/* Rows [r0, r0 + n) of llama.cpp's split attn_k_b [H, L, nope] / attn_v_b [H, v, L] of a layer,
 * holding the values of that layer's kv_b as the kv_b layout stores them (random, then FP8 per
 * 128-row block as the emitter writes it, then back to f32 as the loader reads it): the kv_b
 * blocks the rows touch are made and round-tripped here. */
static int fill_mla_split(const struct wt__emitter *em, const struct wt__job *j, int64_t r0,
                          int64_t n, float *out, char *err)
{
    const struct wt_hparams *hp = em->hp;
    const int64_t L = hp->kv_lora_rank, NOPE = hp->qk_nope, HR = NOPE + hp->v_head;
    const int kb = j->init == WT_INIT_K_B;
    struct wt__job kv = {.fmt = WT_FMT_FP8, .ndim = 2, .init = WT_INIT_NORMAL};
    snprintf(kv.name, sizeof kv.name, "model.layers.%d.self_attn.kv_b_proj.weight", j->layer);
    kv.shape[0] = kv.rows = hp->n_heads * HR;
    kv.shape[1] = kv.cols = L;
    kv.std = 1.0f / sqrtf((float)L); /* as emit.c's lin() */
    /* kv_b rows of the first and last output row: k_b row (h, c) -> rows h*HR + [0, NOPE);
     * v_b row (h, i) -> row h*HR + NOPE + i */
    int64_t per = kb ? L : hp->v_head, h0 = r0 / per, h1 = (r0 + n - 1) / per;
    int64_t k0 = kb ? h0 * HR : h0 * HR + NOPE + r0 % per;
    int64_t k1 = kb ? h1 * HR + NOPE : h1 * HR + NOPE + (r0 + n - 1) % per + 1;
    int64_t b0 = k0 / 128, b1 = (k1 + 127) / 128, nr = (b1 - b0) * 128;
    if (nr > kv.rows - b0 * 128) nr = kv.rows - b0 * 128;
    float *x = malloc(sizeof *x * (size_t)(nr * L)), *sc = malloc(sizeof *sc * (size_t)L);
    uint8_t *q = malloc((size_t)(nr * L));
    int rc = (!x || !sc || !q) ? err_set(err, ERR_NOMEM, "out of memory for split kv_b") : 0;
    for (int64_t b = b0; !rc && b < b1; b++) {
        int64_t rows = kv.rows - b * 128 < 128 ? kv.rows - b * 128 : 128;
        float *xb = x + (b - b0) * 128 * L;
        rc = fill_random(em, &kv, b * 128, rows, xb, err);
        if (rc) break;
        wt__fp8_block(xb, rows, L, q, sc);
        cpuq_fp8_dequant(q, sc, rows, L, 0, rows, xb);
    }
    for (int64_t i = 0; !rc && i < n; i++) {
        int64_t r = r0 + i, h = r / per, a = r % per;
        float *o = out + i * j->cols;
        if (kb) /* k_b[h][c][k] = kv_b[h*HR + k][c] */
            for (int64_t k = 0; k < NOPE; k++) o[k] = x[(h * HR + k - b0 * 128) * L + a];
        else memcpy(o, x + (h * HR + NOPE + a - b0 * 128) * L, sizeof *o * (size_t)L);
    }
    free(x);
    free(sc);
    free(q);
    return rc;
}

static int fill_random(const struct wt__emitter *em, const struct wt__job *j, int64_t r0, int64_t n,
                       float *out, char *err)
{
    if (j->init == WT_INIT_K_B || j->init == WT_INIT_V_B)
        return fill_mla_split(em, j, r0, n, out, err);
    uint64_t s = em->seed ^ hash_str(j->name) ^ ((uint64_t)(r0 / 128) * 0xd1342543de82ef95ull);
    splitmix(&s);
    int64_t cnt = n * j->cols;
    for (int64_t i = 0; i < cnt; i++) {
        float g = gauss(&s);
        out[i] = j->init == WT_INIT_NORM ? 1.0f + j->std * g : j->std * g;
    }
    return 0;
}

static void preset_tiny(struct wt_hparams *hp)
{
    memset(hp, 0, sizeof *hp);
    snprintf(hp->arch, sizeof hp->arch, "deepseek_v3");
    hp->hidden = 256;
    hp->inter = 512;
    hp->moe_inter = 256;
    hp->n_layers = 3;
    hp->first_k_dense = 1;
    hp->moe_layer_freq = 1;
    hp->n_heads = 2;
    hp->q_lora_rank = 256;
    hp->kv_lora_rank = 512;
    hp->qk_nope = 128;
    hp->qk_rope = 64;
    hp->v_head = 128;
    hp->n_routed = 8;
    hp->n_shared = 1;
    hp->top_k = 4;
    hp->n_group = 4;
    hp->topk_group = 2;
    hp->routed_scale = 2.5f;
    hp->norm_topk_prob = 1;
    hp->scoring = WT_SCORE_SIGMOID;
    hp->rms_eps = 1e-6f;
    hp->rope_theta = 10000;
    hp->yarn = 1;
    hp->yarn_factor = 4;
    hp->yarn_orig_ctx = 1024;
    hp->yarn_beta_fast = 32;
    hp->yarn_beta_slow = 1;
    hp->yarn_mscale = 1;
    hp->yarn_mscale_all_dim = 1;
    hp->max_pos = 4096;
    hp->bos_id = 0;
    hp->eos_id = 1;
}

static void preset_v3(struct wt_hparams *hp)
{
    preset_tiny(hp);
    hp->vocab_size = 129280;
    hp->hidden = 7168;
    hp->inter = 18432;
    hp->moe_inter = 2048;
    hp->n_layers = 3;
    hp->first_k_dense = 1;
    hp->n_heads = 128;
    hp->q_lora_rank = 1536;
    hp->n_routed = 256;
    hp->top_k = 8;
    hp->n_group = 8;
    hp->topk_group = 4;
    hp->yarn_factor = 40;
    hp->yarn_orig_ctx = 4096;
    hp->max_pos = 163840;
}

/* DeepSeek-V2-Lite's routing and attention at tiny's scale: no q_lora (plain q_proj), softmax
 * greedy top-3 of 8 experts without groups, bias or renormalization, 2 shared experts, YaRN
 * with V2's mscale 0.707. */
static void preset_tiny_v2(struct wt_hparams *hp)
{
    preset_tiny(hp);
    snprintf(hp->arch, sizeof hp->arch, "deepseek_v2");
    hp->q_lora_rank = 0;
    hp->n_shared = 2;
    hp->top_k = 3;
    hp->n_group = 1;
    hp->topk_group = 1;
    hp->routed_scale = 1;
    hp->norm_topk_prob = 0;
    hp->scoring = WT_SCORE_SOFTMAX;
    hp->yarn_mscale = 0.707f;
    hp->yarn_mscale_all_dim = 0.707f;
}

/* DeepSeek-V2-Lite's true dims (config_16B): hidden 2048, 16 heads, 64 experts (inter 1408),
 * 2 shared, top-6, dense inter 10944, vocab 102400, YaRN x40 from 4096 */
static void preset_v2_lite(struct wt_hparams *hp)
{
    preset_tiny_v2(hp);
    hp->vocab_size = 102400;
    hp->hidden = 2048;
    hp->inter = 10944;
    hp->moe_inter = 1408;
    hp->n_heads = 16;
    hp->n_routed = 64;
    hp->top_k = 6;
    hp->yarn_factor = 40;
    hp->yarn_orig_ctx = 4096;
    hp->max_pos = 163840;
}

/* DeepSeek-V2 / V2.5 (236B, config_236B): hidden 5120, 128 heads, q_lora 1536, 160 experts
 * (inter 1536) in 8 groups keeping 3 (group_limited_greedy), top-6, scale 16 */
static void preset_v2(struct wt_hparams *hp)
{
    preset_v2_lite(hp);
    hp->hidden = 5120;
    hp->inter = 12288;
    hp->moe_inter = 1536;
    hp->n_heads = 128;
    hp->q_lora_rank = 1536;
    hp->n_routed = 160;
    hp->n_group = 8;
    hp->topk_group = 3;
    hp->routed_scale = 16;
    hp->yarn_mscale = 1; /* V2 / V2.5's rope_scaling: mscale 1.0 / 1.0 */
    hp->yarn_mscale_all_dim = 1;
}

/* Moonlight-16B-A3B's attention and routing at tiny's scale: no q_lora, sigmoid with the
 * correction bias and no groups, top-3 of 8 renormalized times 2.446, 2 shared experts, eps
 * 1e-5, plain RoPE (theta 50000, no YaRN) */
static void preset_tiny_moonlight(struct wt_hparams *hp)
{
    preset_tiny(hp);
    hp->q_lora_rank = 0;
    hp->n_shared = 2;
    hp->top_k = 3;
    hp->n_group = 1;
    hp->topk_group = 1;
    hp->routed_scale = 2.446f;
    hp->rms_eps = 1e-5f;
    hp->rope_theta = 50000;
    hp->yarn = 0;
}

/* Kimi-K2's at tiny's scale: q_lora, one group, top-4 of 8 times 2.827, YaRN x32 with
 * beta_fast = beta_slow = 1, theta 50000 */
static void preset_tiny_kimi(struct wt_hparams *hp)
{
    preset_tiny(hp);
    hp->n_group = 1;
    hp->topk_group = 1;
    hp->routed_scale = 2.827f;
    hp->rope_theta = 50000;
    hp->yarn_factor = 32;
    hp->yarn_beta_fast = 1;
    hp->yarn_beta_slow = 1;
}

/* kimi: the preset carries Kimi's tiktoken-style tokenizer with Kimi-K2-Thinking's chat
 * template (1) or Kimi-K2-Instruct's (2); 0: DeepSeek-V3's byte-level BPE */
static const struct {
    const char *name;
    void (*fn)(struct wt_hparams *);
    int kimi;
} presets[] = {{"tiny", preset_tiny, 0},          {"v3-slice", preset_v3, 0},
               {"tiny-v2", preset_tiny_v2, 0},    {"v2-lite-slice", preset_v2_lite, 0},
               {"v2-slice", preset_v2, 0},        {"tiny-moonlight", preset_tiny_moonlight, 2},
               {"tiny-kimi", preset_tiny_kimi, 1}};

/* a GGML type or F32/F16/BF16 that can store weights (not FP8, integers or activation types) */
static int weight_type(int t)
{
    const struct qtype_traits *tr = t >= 0 && t < 100 ? qtype_traits(t) : NULL;
    if (!tr || t == QTYPE_F8_E4M3 || t == QTYPE_U8 || t == QTYPE_Q8_K || t == QTYPE_Q8_1) return 0;
    return tr->is_quant || t == QTYPE_F32 || t == QTYPE_F16 || t == QTYPE_BF16;
}

int wt_synth(const struct wt_synth_opts *o, char *err)
{
    struct wt_hparams hp;
    int rc;
    size_t np = sizeof presets / sizeof presets[0], p = 0;
    if (o->config) {
        if ((rc = wt_hparams_from_json_file(o->config, &hp, err))) return rc;
    } else {
        while (p < np && (!o->preset || strcmp(o->preset, presets[p].name))) p++;
        if (p == np)
            return err_set(err, ERR_INVAL,
                           "unknown preset '%s' (tiny, v3-slice, tiny-v2, v2-lite-slice, "
                           "v2-slice, tiny-moonlight, tiny-kimi or a config.json)",
                           o->preset ? o->preset : "");
        presets[p].fn(&hp);
    }
    if (o->vocab > 0) hp.vocab_size = o->vocab;
    if (o->dense_layers >= 0 || o->moe_layers >= 0) {
        int d = o->dense_layers >= 0 ? o->dense_layers : hp.first_k_dense;
        int m = o->moe_layers >= 0 ? o->moe_layers : hp.n_layers - hp.first_k_dense;
        if (d + m < 1 || d + m > 1024) return err_set(err, ERR_INVAL, "need 1..1024 layers");
        hp.first_k_dense = d;
        hp.n_layers = d + m;
        hp.moe_layer_freq = 1;
    }
    if (o->n_experts >= 0) {
        if (o->n_experts < 1 || o->n_experts > 4096)
            return err_set(err, ERR_INVAL, "--experts-n must be 1..4096");
        hp.n_routed = o->n_experts;
        if (hp.top_k > hp.n_routed) hp.top_k = hp.n_routed;
        while (hp.n_group > 1 && (hp.n_routed % hp.n_group || hp.n_routed / hp.n_group < 2))
            hp.n_group /= 2;
        if (hp.topk_group > hp.n_group) hp.topk_group = hp.n_group;
        if (hp.n_group == 1) hp.topk_group = 1;
    }
    int gtype = o->experts_type >= 0 ? o->experts_type : QTYPE_Q8_0;
    int dtype = o->experts_down_type, ltype = o->linears_type >= 0 ? o->linears_type : QTYPE_Q8_0;
    if (gtype != WT_EXPERTS_Q4_K_M && !weight_type(gtype))
        return err_set(err, ERR_INVAL, "experts type %s cannot hold weights", qtype_name(gtype));
    if (dtype >= 0 && !weight_type(dtype))
        return err_set(err, ERR_INVAL, "experts down type %s cannot hold weights",
                       qtype_name(dtype));
    if (o->gguf_only && !weight_type(ltype))
        return err_set(err, ERR_INVAL, "linears type %s cannot hold weights", qtype_name(ltype));
    if ((rc = wt__mkdirs(o->out, err))) return rc;
    int ntok, kimi = o->config ? 0 : presets[p].kimi;
    if (kimi) {
        const char *t = o->chat_template ? o->chat_template : wt__synth_kimi_template(kimi == 1);
        if ((rc = wt__synth_tiktoken(o->out, t, hp.max_pos, &ntok, &hp.bos_id, &hp.eos_id, err)))
            return rc;
    } else {
        if ((rc = wt__synth_tokenizer(o->out, &ntok, err))) return rc;
        if ((rc = wt__synth_tokenizer_config(
                 o->out, o->chat_template ? o->chat_template : tmpl_builtin_jinja("deepseek-v3"),
                 hp.max_pos, err)))
            return rc;
    }
    if (!hp.vocab_size || hp.vocab_size < ntok) hp.vocab_size = (ntok + 127) / 128 * 128;
    const struct cpuq_ops *ops = NULL;
    if ((rc = cpuq_ops_get(cpuq_isa_detect(), &ops, err))) return rc;
    struct wt__emitter em = {ops, o->threads, o->zero, o->seed, NULL, &hp, fill_random};
    struct wt__layout lay = {.experts_type = gtype,
                             .experts_down = dtype,
                             .mla_split = o->mla_split,
                             .gguf_split = o->gguf_split,
                             .gguf_only = o->gguf_only,
                             .linears = ltype};
    rc = wt__write_model(&em, &hp, &lay, o->out, err);
    /* the whole-GGUF form carries the tokenizer in its metadata: nothing else in the directory */
    const char *tok_files[2] = {kimi ? "tiktoken.model" : "tokenizer.json",
                                "tokenizer_config.json"};
    for (int i = 0; !rc && o->gguf_only && i < 2; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", o->out, tok_files[i]);
        if (remove(p) != 0) rc = err_set(err, ERR_IO, "cannot remove %s", p);
    }
    return rc;
}
