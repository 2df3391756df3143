/* hparams.c - model hyperparameters: config.json (jansson) and GGUF `deepseek2.*` metadata in,
 * config.json out, and the expected shape of every canonical tensor.
 *
 * config.json follows HF's DeepseekV3Config / DeepseekV2Config field names; YaRN comes from
 * `rope_scaling` (type or rope_type "yarn") or from newer transformers' `rope_parameters`.
 * topk_method must fit scoring_func (noaux_tc: sigmoid; greedy, group_limited_greedy:
 * softmax); greedy routes without groups (n_group = topk_group = 1 whatever the file says).
 * deepseek_v2 with norm_topk_prob ignores routed_scaling_factor (DeepSeek's V2 gate scales only
 * unnormalized weights), so the scale becomes 1.
 * quantization_config.scale_fmt "ue8m0" (DeepSeek-V3.1) sets fp8_ue8m0; absent or null is the
 * exact scale; any other value is a load error naming the key. config.json out carries it with
 * the FP8 quantization_config.
 * Every value is range-checked (a corrupt config must not drive later allocations): dims up to
 * 2^20, layers up to 1024, experts up to 4096, and the routing constraints (top_k <= experts,
 * n_group divides experts, topk_group <= n_group).
 *
 * GGUF: llama.cpp's deepseek2 keys. Group routing keys (expert_group_count/_used_count) are
 * optional: old files lack them; then DeepSeek-V3's exact shape (256 experts, hidden 7168,
 * sigmoid) gets V3's 8/4 groups and V2/V2.5's (160 experts, hidden 5120, softmax) 8/3, with a
 * warning, anything else no grouping. Softmax gating makes arch "deepseek_v2". MLA-split files
 * (key_length_mla) are read for the head dims. YaRN's beta_fast/slow come from
 * rope.scaling.yarn_beta_fast/_slow when present (newer converters write them), else DeepSeek's
 * 32/1; mscale_all_dim = rope.scaling.yarn_log_multiplier / 0.1. expert_gating_func absent (or 0,
 * "none") means softmax, as llama.cpp reads old DeepSeek-V2 files; 2 is sigmoid. Float keys get
 * the same ranges as in config.json (rope base >= 1, RMS epsilon in [0, 1], YaRN factor >= 1,
 * betas > 0), so NaN or a zero base is a load error rather than NaN logits.
 *
 * Pure functions, thread-safe.
 */
#include "weights_internal.h"
#include "gguf.h"

#include "common/err.h"
#include "common/log.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int wt_layer_is_moe(const struct wt_hparams *hp, int l)
{
    return hp->n_routed > 0 && l >= hp->first_k_dense &&
           (hp->moe_layer_freq <= 1 || l % hp->moe_layer_freq == 0);
}

const char *wt_topk_method(const struct wt_hparams *hp)
{
    return hp->scoring == WT_SCORE_SIGMOID ? "noaux_tc"
           : hp->n_group > 1               ? "group_limited_greedy"
                                           : "greedy";
}

/* ---- config.json ----------------------------------------------------------------------------- */

struct jctx {
    json_t *root;
    const char *src;
    char *err;
};

/* integer field; absent (or null when null_ok) -> def. */
static int jint(struct jctx *c, json_t *obj, const char *key, long long def, long long lo,
                long long hi, int *out)
{
    json_t *v = json_object_get(obj, key);
    long long x = def;
    if (v && !json_is_null(v)) {
        if (json_is_integer(v)) x = json_integer_value(v);
        else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)))
            x = (long long)json_real_value(v);
        else return err_set(c->err, ERR_FORMAT, "%s: '%s' must be an integer", c->src, key);
    }
    if (x < lo || x > hi)
        return err_set(c->err, ERR_FORMAT, "%s: '%s' = %lld out of range [%lld, %lld]", c->src, key,
                       x, lo, hi);
    *out = (int)x;
    return 0;
}

static int jreq(struct jctx *c, json_t *obj, const char *key, long long lo, long long hi, int *out)
{
    if (!json_object_get(obj, key) || json_is_null(json_object_get(obj, key)))
        return err_set(c->err, ERR_FORMAT, "%s: missing '%s'", c->src, key);
    return jint(c, obj, key, 0, lo, hi, out);
}

static int jflt(struct jctx *c, json_t *obj, const char *key, double def, double lo, double hi,
                float *out)
{
    json_t *v = json_object_get(obj, key);
    double x = def;
    if (v && !json_is_null(v)) {
        if (!json_is_number(v))
            return err_set(c->err, ERR_FORMAT, "%s: '%s' must be a number", c->src, key);
        x = json_number_value(v);
    }
    if (!(x >= lo && x <= hi))
        return err_set(c->err, ERR_FORMAT, "%s: '%s' = %g out of range [%g, %g]", c->src, key, x,
                       lo, hi);
    *out = (float)x;
    return 0;
}

#define DIM_MAX (1 << 20)

static int check_hp(const struct wt_hparams *hp, const char *src, char *err)
{
    if (hp->top_k > hp->n_routed || (hp->n_routed && hp->top_k < 1))
        return err_set(err, ERR_FORMAT, "%s: num_experts_per_tok %d vs %d experts", src, hp->top_k,
                       hp->n_routed);
    if (hp->n_group < 1 || (hp->n_routed && hp->n_routed % hp->n_group) || hp->topk_group < 1 ||
        hp->topk_group > hp->n_group)
        return err_set(err, ERR_FORMAT, "%s: n_group %d / topk_group %d do not fit %d experts", src,
                       hp->n_group, hp->topk_group, hp->n_routed);
    if (hp->n_routed && hp->moe_inter < 1)
        return err_set(err, ERR_FORMAT, "%s: moe_intermediate_size missing", src);
    if (hp->qk_rope % 2)
        return err_set(err, ERR_FORMAT, "%s: qk_rope_head_dim %d is odd", src, hp->qk_rope);
    return 0;
}

static int parse_rope(struct jctx *c, json_t *rs, struct wt_hparams *hp)
{
    if (!rs || json_is_null(rs)) return 0;
    if (!json_is_object(rs))
        return err_set(c->err, ERR_FORMAT, "%s: rope_scaling must be an object", c->src);
    json_t *t = json_object_get(rs, "rope_type");
    if (!t) t = json_object_get(rs, "type");
    if (!t || !json_is_string(t))
        return err_set(c->err, ERR_FORMAT, "%s: rope scaling without a type", c->src);
    const char *ty = json_string_value(t);
    if (strcmp(ty, "default") == 0) return 0;
    if (strcmp(ty, "yarn") != 0)
        return err_set(c->err, ERR_UNSUPPORTED, "%s: rope scaling type '%s' (only yarn)", c->src,
                       ty);
    hp->yarn = 1;
    int rc = jflt(c, rs, "factor", 1, 1, 1e6, &hp->yarn_factor);
    if (!rc) rc = jflt(c, rs, "beta_fast", 32, 1e-3, 1e6, &hp->yarn_beta_fast);
    if (!rc) rc = jflt(c, rs, "beta_slow", 1, 1e-3, 1e6, &hp->yarn_beta_slow);
    if (!rc) rc = jflt(c, rs, "mscale", 1, 0, 1e3, &hp->yarn_mscale);
    if (!rc) rc = jflt(c, rs, "mscale_all_dim", 0, 0, 1e3, &hp->yarn_mscale_all_dim);
    if (!rc)
        rc = jint(c, rs, "original_max_position_embeddings", 4096, 1, 1 << 26, &hp->yarn_orig_ctx);
    return rc;
}

/* quantization_config.scale_fmt: absent or null (exact activation scales) or "ue8m0"
 * (DeepSeek-V3.1: power-of-two scales); anything else is an error naming the key. */
static int parse_scale_fmt(struct jctx *c, json_t *root, struct wt_hparams *hp)
{
    json_t *qc = json_object_get(root, "quantization_config");
    json_t *sf = json_is_object(qc) ? json_object_get(qc, "scale_fmt") : NULL;
    if (!sf || json_is_null(sf)) return 0;
    if (!json_is_string(sf))
        return err_set(c->err, ERR_FORMAT, "%s: 'quantization_config.scale_fmt' must be a string",
                       c->src);
    if (strcmp(json_string_value(sf), "ue8m0"))
        return err_set(c->err, ERR_UNSUPPORTED,
                       "%s: quantization_config.scale_fmt '%s' (only \"ue8m0\" or null)", c->src,
                       json_string_value(sf));
    hp->fp8_ue8m0 = 1;
    return 0;
}

/* topk_method (HF's default: greedy for V2, noaux_tc for V3) against scoring_func: noaux_tc
 * is sigmoid with the correction bias and top-2-sum group scores; greedy and
 * group_limited_greedy are softmax (V2), greedy ignoring n_group / topk_group. */
static int parse_topk_method(struct jctx *c, json_t *root, int v2, struct wt_hparams *hp)
{
    json_t *tm = json_object_get(root, "topk_method");
    if (tm && !json_is_null(tm) && !json_is_string(tm))
        return err_set(c->err, ERR_FORMAT, "%s: 'topk_method' must be a string", c->src);
    const char *m = json_is_string(tm) ? json_string_value(tm) : (v2 ? "greedy" : "noaux_tc");
    int sig = hp->scoring == WT_SCORE_SIGMOID, noaux = strcmp(m, "noaux_tc") == 0;
    int greedy = strcmp(m, "greedy") == 0, limited = strcmp(m, "group_limited_greedy") == 0;
    if (!noaux && !greedy && !limited)
        return err_set(c->err, ERR_UNSUPPORTED,
                       "%s: topk_method '%s' (greedy, group_limited_greedy or noaux_tc)", c->src,
                       m);
    if (noaux != sig)
        return err_set(c->err, ERR_UNSUPPORTED, "%s: topk_method '%s' with scoring_func '%s'",
                       c->src, m, sig ? "sigmoid" : "softmax");
    if (greedy) hp->n_group = hp->topk_group = 1;
    return 0;
}

int wt_hparams_from_json_text(const char *text, size_t len, struct wt_hparams *hp, char *err)
{
    return wt__hparams_json(text, len, "config.json", hp, err);
}

int wt__hparams_json(const char *text, size_t len, const char *src, struct wt_hparams *hp,
                     char *err)
{
    memset(hp, 0, sizeof *hp);
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return err_set(err, ERR_FORMAT, "%s: bad JSON at line %d: %s", src, je.line, je.text);
    struct jctx c = {root, src, err};
    int rc = 0;
    if (!json_is_object(root)) {
        rc = err_set(err, ERR_FORMAT, "%s: not a JSON object", src);
        goto out;
    }
    json_t *mt = json_object_get(root, "model_type");
    const char *mts = json_is_string(mt) ? json_string_value(mt) : "deepseek_v3";
    if (strcmp(mts, "deepseek_v3") && strcmp(mts, "deepseek_v2") && strcmp(mts, "kimi_k2")) {
        rc = err_set(err, ERR_UNSUPPORTED, "%s: model_type '%s' is not a DeepSeek-V3/V2 model", src,
                     mts);
        goto out;
    }
    snprintf(hp->arch, sizeof hp->arch, "%s",
             strcmp(mts, "deepseek_v2") ? "deepseek_v3" : "deepseek_v2");
    int v2 = strcmp(hp->arch, "deepseek_v2") == 0;
    json_t *q = json_object_get(root, "q_lora_rank");
    if ((rc = jreq(&c, root, "vocab_size", 1, 1 << 24, &hp->vocab_size)) ||
        (rc = jreq(&c, root, "hidden_size", 1, DIM_MAX, &hp->hidden)) ||
        (rc = jreq(&c, root, "intermediate_size", 1, DIM_MAX, &hp->inter)) ||
        (rc = jint(&c, root, "moe_intermediate_size", 0, 0, DIM_MAX, &hp->moe_inter)) ||
        (rc = jreq(&c, root, "num_hidden_layers", 1, 1024, &hp->n_layers)) ||
        (rc = jreq(&c, root, "num_attention_heads", 1, 4096, &hp->n_heads)) ||
        (rc = jint(&c, root, "q_lora_rank", 0, 0, DIM_MAX, &hp->q_lora_rank)) ||
        (rc = jint(&c, root, "kv_lora_rank", 512, 1, DIM_MAX, &hp->kv_lora_rank)) ||
        (rc = jint(&c, root, "qk_nope_head_dim", 128, 1, 4096, &hp->qk_nope)) ||
        (rc = jint(&c, root, "qk_rope_head_dim", 64, 2, 4096, &hp->qk_rope)) ||
        (rc = jint(&c, root, "v_head_dim", 128, 1, 4096, &hp->v_head)) ||
        (rc = jint(&c, root, "n_routed_experts", 0, 0, 4096, &hp->n_routed)) ||
        (rc = jint(&c, root, "n_shared_experts", 0, 0, 64, &hp->n_shared)) ||
        (rc = jint(&c, root, "num_experts_per_tok", 0, 0, 4096, &hp->top_k)) ||
        (rc = jint(&c, root, "n_group", 1, 1, 4096, &hp->n_group)) ||
        (rc = jint(&c, root, "topk_group", 1, 1, 4096, &hp->topk_group)) ||
        (rc = jint(&c, root, "first_k_dense_replace", 0, 0, 1024, &hp->first_k_dense)) ||
        (rc = jint(&c, root, "moe_layer_freq", 1, 1, 1024, &hp->moe_layer_freq)) ||
        (rc = jflt(&c, root, "routed_scaling_factor", 1, 0, 1e6, &hp->routed_scale)) ||
        (rc = jflt(&c, root, "rms_norm_eps", 1e-6, 0, 1, &hp->rms_eps)) ||
        (rc = jint(&c, root, "max_position_embeddings", 4096, 1, 1 << 26, &hp->max_pos)) ||
        (rc = jint(&c, root, "bos_token_id", 0, 0, 1 << 24, &hp->bos_id)) ||
        (rc = jint(&c, root, "eos_token_id", 1, 0, 1 << 24, &hp->eos_id)) ||
        (rc = jint(&c, root, "num_nextn_predict_layers", 0, 0, 64, &hp->n_nextn)))
        goto out;
    (void)q;
    json_t *ntp = json_object_get(root, "norm_topk_prob");
    hp->norm_topk_prob = ntp ? json_is_true(ntp) : !v2;
    /* DeepSeek-V2's gate scales by routed_scaling_factor only when it does not renormalize */
    if (v2 && hp->norm_topk_prob && hp->top_k > 1 && hp->routed_scale != 1) {
        LOG_WARN("weights", "%s: deepseek_v2 with norm_topk_prob: routed_scaling_factor %g unused",
                 src, (double)hp->routed_scale);
        hp->routed_scale = 1;
    }
    json_t *sf = json_object_get(root, "scoring_func");
    const char *sfs = json_is_string(sf) ? json_string_value(sf) : (v2 ? "softmax" : "sigmoid");
    if (strcmp(sfs, "sigmoid") == 0) hp->scoring = WT_SCORE_SIGMOID;
    else if (strcmp(sfs, "softmax") == 0) hp->scoring = WT_SCORE_SOFTMAX;
    else {
        rc = err_set(err, ERR_UNSUPPORTED, "%s: scoring_func '%s'", src, sfs);
        goto out;
    }
    if ((rc = parse_topk_method(&c, root, v2, hp))) goto out;
    if ((rc = parse_scale_fmt(&c, root, hp))) goto out;
    json_t *rp = json_object_get(root, "rope_parameters");
    json_t *rs = json_object_get(root, "rope_scaling");
    float theta = 10000;
    if ((rc = jflt(&c, root, "rope_theta", 10000, 1, 1e12, &theta))) goto out;
    if (json_is_object(rp) && json_object_get(rp, "rope_theta") &&
        (rc = jflt(&c, rp, "rope_theta", 10000, 1, 1e12, &theta)))
        goto out;
    hp->rope_theta = theta;
    if ((rc = parse_rope(&c, (rs && !json_is_null(rs)) ? rs : rp, hp))) goto out;
    rc = check_hp(hp, src, err);
out:
    json_decref(root);
    return rc;
}

int wt_hparams_from_json_file(const char *path, struct wt_hparams *hp, char *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(err, ERR_IO, "%s: cannot open", path);
    char *buf = malloc(1 << 20);
    size_t n = buf ? fread(buf, 1, 1 << 20, f) : 0;
    int big = buf && n == (1 << 20);
    fclose(f);
    if (!buf) return err_set(err, ERR_NOMEM, "out of memory");
    int rc = big ? err_set(err, ERR_FORMAT, "%s: larger than 1 MiB", path)
                 : wt__hparams_json(buf, n, path, hp, err);
    free(buf);
    return rc;
}

/* the shortest decimal that reads back as the same float, as a double: 1e-6f -> 1e-06, not
 * 9.9999999747524271e-07 */
static double f2d(float f)
{
    char b[32];
    for (int p = 1; p < 10; p++) {
        snprintf(b, sizeof b, "%.*g", p, (double)f);
        double d = strtod(b, NULL);
        if ((float)d == f) return d;
    }
    return (double)f;
}

char *wt_hparams_to_json(const struct wt_hparams *hp, int fp8)
{
    int v2 = strcmp(hp->arch, "deepseek_v2") == 0;
    json_t *o = json_pack(
        "{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i,"
        " s:i, s:i, s:i, s:f, s:b, s:s, s:s, s:f, s:f, s:i, s:i, s:i, s:s, s:b, s:b, s:f, s:i, "
        "s:i}",
        "architectures", v2 ? "DeepseekV2ForCausalLM" : "DeepseekV3ForCausalLM", "model_type",
        hp->arch, "vocab_size", hp->vocab_size, "hidden_size", hp->hidden, "intermediate_size",
        hp->inter, "moe_intermediate_size", hp->moe_inter, "num_hidden_layers", hp->n_layers,
        "num_attention_heads", hp->n_heads, "num_key_value_heads", hp->n_heads, "kv_lora_rank",
        hp->kv_lora_rank, "qk_nope_head_dim", hp->qk_nope, "qk_rope_head_dim", hp->qk_rope,
        "v_head_dim", hp->v_head, "n_routed_experts", hp->n_routed, "n_shared_experts",
        hp->n_shared, "num_experts_per_tok", hp->top_k, "n_group", hp->n_group, "topk_group",
        hp->topk_group, "first_k_dense_replace", hp->first_k_dense, "moe_layer_freq",
        hp->moe_layer_freq, "routed_scaling_factor", f2d(hp->routed_scale), "norm_topk_prob",
        hp->norm_topk_prob, "scoring_func", hp->scoring == WT_SCORE_SIGMOID ? "sigmoid" : "softmax",
        "topk_method", wt_topk_method(hp), "rms_norm_eps", f2d(hp->rms_eps), "rope_theta",
        f2d(hp->rope_theta), "max_position_embeddings", hp->max_pos, "bos_token_id", hp->bos_id,
        "eos_token_id", hp->eos_id, "hidden_act", "silu", "tie_word_embeddings", 0,
        "attention_bias", 0, "attention_dropout", 0.0, "num_nextn_predict_layers", 0, "head_dim",
        hp->qk_rope);
    if (!o) return NULL;
    json_object_set_new(o, "q_lora_rank",
                        hp->q_lora_rank ? json_integer(hp->q_lora_rank) : json_null());
    json_object_set_new(o, "torch_dtype", json_string("bfloat16"));
    json_object_set_new(o, "rope_interleave", json_true());
    if (hp->yarn)
        json_object_set_new(o, "rope_scaling",
                            json_pack("{s:s, s:s, s:f, s:i, s:f, s:f, s:f, s:f}", "type", "yarn",
                                      "rope_type", "yarn", "factor", f2d(hp->yarn_factor),
                                      "original_max_position_embeddings", hp->yarn_orig_ctx,
                                      "beta_fast", f2d(hp->yarn_beta_fast), "beta_slow",
                                      f2d(hp->yarn_beta_slow), "mscale", f2d(hp->yarn_mscale),
                                      "mscale_all_dim", f2d(hp->yarn_mscale_all_dim)));
    else json_object_set_new(o, "rope_scaling", json_null());
    if (fp8) {
        json_t *qc = json_pack("{s:s, s:s, s:[i,i], s:s}", "quant_method", "fp8", "fmt", "e4m3",
                               "weight_block_size", 128, 128, "activation_scheme", "dynamic");
        if (qc && hp->fp8_ue8m0) json_object_set_new(qc, "scale_fmt", json_string("ue8m0"));
        json_object_set_new(o, "quantization_config", qc);
    }
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
    json_decref(o);
    return s;
}

/* ---- GGUF metadata --------------------------------------------------------------------------- */

static int g_int(const struct gguf_ctx *g, const char *arch, const char *key, int req, int def,
                 int lo, int hi, int *out, char *err)
{
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    int64_t v;
    int rc = gguf_find_i64(g, k, &v, err);
    if (rc == ERR_NOT_FOUND) {
        if (req) return err_set(err, ERR_FORMAT, "%s: GGUF metadata lacks %s", gguf_path(g), k);
        v = def;
    } else if (rc) {
        return rc;
    }
    if (v < lo || v > hi)
        return err_set(err, ERR_FORMAT, "%s: %s = %lld out of range [%d, %d]", gguf_path(g), k,
                       (long long)v, lo, hi);
    *out = (int)v;
    return 0;
}

/* float key; absent -> def. Ranges as for config.json (NaN fails the range test). */
static int g_flt(const struct gguf_ctx *g, const char *arch, const char *key, double def, double lo,
                 double hi, float *out, char *err)
{
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    double v;
    int rc = gguf_find_f64(g, k, &v, err);
    if (rc == ERR_NOT_FOUND) v = def;
    else if (rc) return rc;
    if (!(v >= lo && v <= hi))
        return err_set(err, ERR_FORMAT, "%s: %s = %g out of range [%g, %g]", gguf_path(g), k, v, lo,
                       hi);
    *out = (float)v;
    return 0;
}

int wt__hparams_gguf(const struct gguf_ctx *g, struct wt_hparams *hp, char *err)
{
    memset(hp, 0, sizeof *hp);
    const char *arch;
    int rc = gguf_find_str(g, "general.architecture", &arch, err);
    if (rc == ERR_NOT_FOUND)
        return err_set(err, ERR_FORMAT, "%s: GGUF without general.architecture", gguf_path(g));
    if (rc) return rc;
    if (strcmp(arch, "deepseek2") != 0)
        return err_set(err, ERR_UNSUPPORTED, "%s: GGUF architecture '%s' (only deepseek2)",
                       gguf_path(g), arch);
    snprintf(hp->arch, sizeof hp->arch, "deepseek_v3");
    int blocks = 0, key_len = 0, val_len = 0, gating = 0, kl_mla = 0, vl_mla = 0;
    if ((rc = g_int(g, arch, "block_count", 1, 0, 1, 1100, &blocks, err)) ||
        (rc = g_int(g, arch, "nextn_predict_layers", 0, 0, 0, 64, &hp->n_nextn, err)) ||
        (rc = g_int(g, arch, "embedding_length", 1, 0, 1, DIM_MAX, &hp->hidden, err)) ||
        (rc = g_int(g, arch, "feed_forward_length", 1, 0, 1, DIM_MAX, &hp->inter, err)) ||
        (rc =
             g_int(g, arch, "expert_feed_forward_length", 0, 0, 0, DIM_MAX, &hp->moe_inter, err)) ||
        (rc = g_int(g, arch, "attention.head_count", 1, 0, 1, 4096, &hp->n_heads, err)) ||
        (rc = g_int(g, arch, "attention.q_lora_rank", 0, 0, 0, DIM_MAX, &hp->q_lora_rank, err)) ||
        (rc = g_int(g, arch, "attention.kv_lora_rank", 1, 0, 1, DIM_MAX, &hp->kv_lora_rank, err)) ||
        (rc = g_int(g, arch, "attention.key_length", 1, 0, 1, 1 << 16, &key_len, err)) ||
        (rc = g_int(g, arch, "attention.value_length", 1, 0, 1, 1 << 16, &val_len, err)) ||
        (rc = g_int(g, arch, "attention.key_length_mla", 0, 0, 0, 1 << 16, &kl_mla, err)) ||
        (rc = g_int(g, arch, "attention.value_length_mla", 0, 0, 0, 1 << 16, &vl_mla, err)) ||
        (rc = g_int(g, arch, "rope.dimension_count", 1, 0, 2, 4096, &hp->qk_rope, err)) ||
        (rc = g_int(g, arch, "expert_count", 0, 0, 0, 4096, &hp->n_routed, err)) ||
        (rc = g_int(g, arch, "expert_shared_count", 0, 0, 0, 64, &hp->n_shared, err)) ||
        (rc = g_int(g, arch, "expert_used_count", 0, 0, 0, 4096, &hp->top_k, err)) ||
        (rc = g_int(g, arch, "expert_group_count", 0, 1, 1, 4096, &hp->n_group, err)) ||
        (rc = g_int(g, arch, "expert_group_used_count", 0, 1, 1, 4096, &hp->topk_group, err)) ||
        (rc =
             g_int(g, arch, "leading_dense_block_count", 0, 0, 0, 1100, &hp->first_k_dense, err)) ||
        (rc = g_int(g, arch, "expert_gating_func", 0, 0, 0, 2, &gating, err)) ||
        (rc = g_int(g, arch, "context_length", 0, 4096, 1, 1 << 26, &hp->max_pos, err)) ||
        (rc = g_flt(g, arch, "expert_weights_scale", 1.0, 0, 1e6, &hp->routed_scale, err)) ||
        (rc = g_flt(g, arch, "attention.layer_norm_rms_epsilon", 1e-6, 0, 1, &hp->rms_eps, err)) ||
        (rc = g_flt(g, arch, "rope.freq_base", 10000, 1, 1e12, &hp->rope_theta, err)))
        return rc;
    /* Older DeepSeek-V3/R1 GGUFs lack the group keys although the model routes with 8 groups
     * keeping 4: recognize V3's exact shape rather than silently routing without groups. */
    char gk[128];
    snprintf(gk, sizeof gk, "%s.expert_group_count", arch);
    if (gguf_find_key(g, gk) < 0 && hp->n_routed == 256 && hp->hidden == 7168 && gating == 2) {
        hp->n_group = 8;
        hp->topk_group = 4;
        LOG_WARN("weights", "%s: no %s; assuming DeepSeek-V3's 8 groups / top-4 groups",
                 gguf_path(g), gk);
    }
    /* likewise DeepSeek-V2 / V2.5 (236B: 160 experts, hidden 5120, softmax): 8 groups, top-3 */
    if (gguf_find_key(g, gk) < 0 && hp->n_routed == 160 && hp->hidden == 5120 && gating != 2) {
        hp->n_group = 8;
        hp->topk_group = 3;
        LOG_WARN("weights", "%s: no %s; assuming DeepSeek-V2's 8 groups / top-3 groups",
                 gguf_path(g), gk);
    }
    if (hp->n_nextn >= blocks)
        return err_set(err, ERR_FORMAT, "%s: nextn_predict_layers >= block_count", gguf_path(g));
    hp->n_layers = blocks - hp->n_nextn;
    hp->moe_layer_freq = 1;
    int qk = kl_mla ? kl_mla : key_len, v = vl_mla ? vl_mla : val_len;
    if (qk <= hp->qk_rope)
        return err_set(err, ERR_FORMAT, "%s: key_length %d <= rope dims %d", gguf_path(g), qk,
                       hp->qk_rope);
    hp->qk_nope = qk - hp->qk_rope;
    hp->v_head = v;
    /* 0 (none: files older than the key) -> softmax, as llama.cpp; 1 softmax; 2 sigmoid.
     * Softmax routing is DeepSeek-V2's (greedy, or group-limited with max group scores). */
    hp->scoring = gating == 2 ? WT_SCORE_SIGMOID : WT_SCORE_SOFTMAX;
    if (hp->scoring == WT_SCORE_SOFTMAX) snprintf(hp->arch, sizeof hp->arch, "deepseek_v2");
    int64_t b;
    char k[128];
    snprintf(k, sizeof k, "%s.expert_weights_norm", arch);
    int64_t ki = gguf_find_key(g, k);
    hp->norm_topk_prob = 0;
    if (ki >= 0 && (rc = gguf_get_bool(g, ki, &hp->norm_topk_prob, err))) return rc;
    /* vocabulary: explicit key, else the token list */
    int vs = 0;
    if ((rc = g_int(g, arch, "vocab_size", 0, 0, 0, 1 << 24, &vs, err))) return rc;
    if (!vs) {
        ki = gguf_find_key(g, "tokenizer.ggml.tokens");
        int et;
        uint64_t n = 0;
        if (ki >= 0 && gguf_get_arr(g, ki, &et, &n, err) == 0 && n <= (1 << 24)) vs = (int)n;
    }
    hp->vocab_size = vs; /* 0: taken from token_embd by the caller */
    hp->bos_id = 0;
    hp->eos_id = 1;
    if (gguf_find_i64(g, "tokenizer.ggml.bos_token_id", &b, NULL) == 0 && b >= 0 && b < (1 << 24))
        hp->bos_id = (int)b;
    if (gguf_find_i64(g, "tokenizer.ggml.eos_token_id", &b, NULL) == 0 && b >= 0 && b < (1 << 24))
        hp->eos_id = (int)b;
    const char *st;
    snprintf(k, sizeof k, "%s.rope.scaling.type", arch);
    if (gguf_find_str(g, k, &st, NULL) == 0 && strcmp(st, "yarn") == 0) {
        float lm = 0;
        hp->yarn = 1;
        if ((rc = g_flt(g, arch, "rope.scaling.factor", 1, 1, 1e6, &hp->yarn_factor, err)) ||
            (rc = g_flt(g, arch, "rope.scaling.yarn_beta_fast", 32, 1e-3, 1e6, &hp->yarn_beta_fast,
                        err)) ||
            (rc = g_flt(g, arch, "rope.scaling.yarn_beta_slow", 1, 1e-3, 1e6, &hp->yarn_beta_slow,
                        err)) ||
            (rc = g_int(g, arch, "rope.scaling.original_context_length", 0, 4096, 1, 1 << 26,
                        &hp->yarn_orig_ctx, err)) ||
            (rc = g_flt(g, arch, "rope.scaling.yarn_log_multiplier", 0.1, 0, 100, &lm, err)))
            return rc;
        hp->yarn_mscale = hp->yarn_mscale_all_dim = lm / 0.1f;
    }
    return check_hp(hp, gguf_path(g), err);
}

/* ---- expected shapes ------------------------------------------------------------------------- */

static int set_shape(int64_t *s, int n, int64_t a, int64_t b, int64_t c)
{
    s[0] = a;
    s[1] = b;
    s[2] = c;
    return n;
}

int wt_expected_shape(const struct wt_hparams *hp, const char *name, int64_t *s)
{
    int64_t D = hp->hidden, H = hp->n_heads, V = hp->vocab_size, E = hp->n_routed;
    int64_t qk = hp->qk_nope + hp->qk_rope, Im = hp->moe_inter, Is = (int64_t)hp->n_shared * Im;
    char base[WT_NAME_LEN];
    size_t len = strlen(name);
    if (len >= sizeof base) return 0;
    memcpy(base, name, len + 1);
    int scale = 0;
    if (len > 10 && strcmp(base + len - 10, "_scale_inv") == 0) {
        base[len - 10] = 0;
        scale = 1;
    }
    int n = 0;
    if (strcmp(base, "token_embd.weight") == 0 || strcmp(base, "output.weight") == 0)
        n = set_shape(s, 2, V, D, 0);
    else if (strcmp(base, "output_norm.weight") == 0) n = set_shape(s, 1, D, 0, 0);
    else if (strncmp(base, "blk.", 4) == 0) {
        const char *p = strchr(base + 4, '.');
        if (!p) return 0;
        p++;
        int e = -1, k = -1, end = 0;
        char tail[64];
        if (strstr(p, "_exps.") &&
            ((sscanf(p, "ffn_%63[a-z]_exps.%d.weight%n", tail, &e, &end) == 2 && !p[end]) ||
             (sscanf(p, "ffn_%63[a-z]_exps.weight%n", tail, &end) == 1 && !p[end]))) {
            k = strcmp(tail, "gate") == 0   ? 0
                : strcmp(tail, "up") == 0   ? 1
                : strcmp(tail, "down") == 0 ? 2
                                            : -1;
            if (k < 0) return 0;
            int64_t r = k == 2 ? D : Im, c = k == 2 ? Im : D;
            if (strstr(p, "_exps.weight")) n = set_shape(s, 3, E, r, c);
            else n = set_shape(s, 2, r, c, 0);
        } else if (!strcmp(p, "attn_norm.weight") || !strcmp(p, "ffn_norm.weight"))
            n = set_shape(s, 1, D, 0, 0);
        else if (!strcmp(p, "attn_q_a.weight")) n = set_shape(s, 2, hp->q_lora_rank, D, 0);
        else if (!strcmp(p, "attn_q_a_norm.weight")) n = set_shape(s, 1, hp->q_lora_rank, 0, 0);
        else if (!strcmp(p, "attn_q_b.weight")) n = set_shape(s, 2, H * qk, hp->q_lora_rank, 0);
        else if (!strcmp(p, "attn_q.weight")) n = set_shape(s, 2, H * qk, D, 0);
        else if (!strcmp(p, "attn_kv_a_mqa.weight"))
            n = set_shape(s, 2, hp->kv_lora_rank + hp->qk_rope, D, 0);
        else if (!strcmp(p, "attn_kv_a_norm.weight")) n = set_shape(s, 1, hp->kv_lora_rank, 0, 0);
        else if (!strcmp(p, "attn_kv_b.weight"))
            n = set_shape(s, 2, H * (hp->qk_nope + hp->v_head), hp->kv_lora_rank, 0);
        else if (!strcmp(p, "attn_k_b.weight")) /* llama.cpp's split kv_b (mla.c) */
            n = set_shape(s, 3, H, hp->kv_lora_rank, hp->qk_nope);
        else if (!strcmp(p, "attn_v_b.weight"))
            n = set_shape(s, 3, H, hp->v_head, hp->kv_lora_rank);
        else if (!strcmp(p, "attn_output.weight")) n = set_shape(s, 2, D, H * hp->v_head, 0);
        else if (!strcmp(p, "ffn_gate.weight") || !strcmp(p, "ffn_up.weight"))
            n = set_shape(s, 2, hp->inter, D, 0);
        else if (!strcmp(p, "ffn_down.weight")) n = set_shape(s, 2, D, hp->inter, 0);
        else if (!strcmp(p, "ffn_gate_inp.weight")) n = set_shape(s, 2, E, D, 0);
        else if (!strcmp(p, "exp_probs_b.bias")) n = set_shape(s, 1, E, 0, 0);
        else if (!strcmp(p, "ffn_gate_shexp.weight") || !strcmp(p, "ffn_up_shexp.weight"))
            n = set_shape(s, 2, Is, D, 0);
        else if (!strcmp(p, "ffn_down_shexp.weight")) n = set_shape(s, 2, D, Is, 0);
    }
    if (!n || !scale) return n;
    if (n < 2) return 0;
    /* FP8 scale grid over the last two dims (stacked: per expert) */
    int64_t r = s[n - 2], c = s[n - 1];
    s[n - 2] = (r + 127) / 128;
    s[n - 1] = (c + 127) / 128;
    return n;
}
