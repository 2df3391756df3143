/* names.c - tensor name normalization: Hugging Face (DeepSeek) names -> canonical GGUF names.
 *
 * The canonical convention is llama.cpp's deepseek2 naming (see weights.h). HF names are mapped
 * piece by piece; per-expert HF tensors `model.layers.N.mlp.experts.E.gate_proj.weight` become
 * `blk.N.ffn_gate_exps.E.weight` (one expert's slice of the stacked `blk.N.ffn_gate_exps.weight`).
 * A `weight_scale_inv` suffix is kept (`blk.N.attn_q_a.weight_scale_inv`). GGUF and KTransformers
 * names are already canonical. Names that match nothing are kept unchanged (they show up in
 * `tandem inspect` but nothing uses them).
 *
 * Pure functions: thread-safe.
 */
#include "weights_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *hf, *gguf;
} layer_map[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_a_proj.weight", "attn_q_a.weight"},
    {"self_attn.q_a_layernorm.weight", "attn_q_a_norm.weight"},
    {"self_attn.q_b_proj.weight", "attn_q_b.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.kv_a_proj_with_mqa.weight", "attn_kv_a_mqa.weight"},
    {"self_attn.kv_a_layernorm.weight", "attn_kv_a_norm.weight"},
    {"self_attn.kv_b_proj.weight", "attn_kv_b.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
    {"mlp.gate.weight", "ffn_gate_inp.weight"},
    {"mlp.gate.e_score_correction_bias", "exp_probs_b.bias"},
    {"mlp.shared_experts.gate_proj.weight", "ffn_gate_shexp.weight"},
    {"mlp.shared_experts.up_proj.weight", "ffn_up_shexp.weight"},
    {"mlp.shared_experts.down_proj.weight", "ffn_down_shexp.weight"},
};

static const char *proj_names[3] = {"gate", "up", "down"};

/* "123." at s -> value, advancing *s; -1 if not digits followed by '.' */
static long parse_index(const char **s)
{
    char *end;
    if (**s < '0' || **s > '9') return -1;
    long v = strtol(*s, &end, 10);
    if (*end != '.' || v > 1000000) return -1;
    *s = end + 1;
    return v;
}

int wt__canon_name(const char *src, char *out, size_t n, struct wt__name_info *ni)
{
    ni->layer = -1;
    ni->expert = -1;
    ni->proj = -1;
    ni->nextn = 0;
    char suffix[16] = "";
    size_t len = strlen(src);
    char base[256];
    if (len >= sizeof base) return -1;
    memcpy(base, src, len + 1);
    /* split off the FP8 scale suffix: X.weight_scale_inv -> X.weight + "_scale_inv" */
    if (len > 10 && strcmp(base + len - 10, "_scale_inv") == 0) {
        base[len - 10] = 0;
        strcpy(suffix, "_scale_inv");
    }
    const char *s = base;
    int w;
    if (strcmp(s, "model.embed_tokens.weight") == 0) {
        w = snprintf(out, n, "token_embd.weight%s", suffix);
    } else if (strcmp(s, "model.norm.weight") == 0) {
        w = snprintf(out, n, "output_norm.weight%s", suffix);
    } else if (strcmp(s, "lm_head.weight") == 0) {
        w = snprintf(out, n, "output.weight%s", suffix);
    } else if (strncmp(s, "model.layers.", 13) == 0) {
        const char *p = s + 13;
        long l = parse_index(&p);
        if (l < 0) goto keep;
        ni->layer = (int)l;
        for (size_t i = 0; i < sizeof layer_map / sizeof layer_map[0]; i++)
            if (strcmp(p, layer_map[i].hf) == 0) {
                w = snprintf(out, n, "blk.%ld.%s%s", l, layer_map[i].gguf, suffix);
                goto done;
            }
        if (strncmp(p, "mlp.experts.", 12) == 0) {
            const char *q = p + 12;
            long e = parse_index(&q);
            if (e < 0) goto keep;
            for (int k = 0; k < 3; k++) {
                char want[32];
                snprintf(want, sizeof want, "%s_proj.weight", proj_names[k]);
                if (strcmp(q, want) == 0) {
                    ni->expert = (int)e;
                    ni->proj = k;
                    w = snprintf(out, n, "blk.%ld.ffn_%s_exps.%ld.weight%s", l, proj_names[k], e,
                                 suffix);
                    goto done;
                }
            }
        }
        goto keep; /* e.g. MTP-only tensors (enorm, eh_proj): layer is set, so they get skipped */
    } else if (strncmp(s, "blk.", 4) == 0) {
        const char *p = s + 4;
        long l = parse_index(&p);
        if (l >= 0) {
            ni->layer = (int)l;
            if (strncmp(p, "nextn.", 6) == 0) ni->nextn = 1;
            for (int k = 0; k < 3; k++) {
                char want[32];
                snprintf(want, sizeof want, "ffn_%s_exps.", proj_names[k]);
                if (strncmp(p, want, strlen(want)) == 0) ni->proj = k;
            }
        }
        goto keep;
    } else {
        goto keep;
    }
done:
    return (w < 0 || (size_t)w >= n) ? -1 : 0;
keep:
    w = snprintf(out, n, "%s", src);
    return (w < 0 || (size_t)w >= n) ? -1 : 0;
}

int wt__natural_cmp(const char *a, const char *b)
{
    while (*a && *b) {
        if (*a >= '0' && *a <= '9' && *b >= '0' && *b <= '9') {
            char *ea, *eb;
            unsigned long long x = strtoull(a, &ea, 10), y = strtoull(b, &eb, 10);
            if (x != y) return x < y ? -1 : 1;
            if ((ea - a) != (eb - b)) return (ea - a) < (eb - b) ? -1 : 1; /* leading zeros */
            a = ea;
            b = eb;
            continue;
        }
        if (*a != *b) return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
        a++;
        b++;
    }
    return (unsigned char)*a - (unsigned char)*b;
}

const char *wt_proj_name(enum wt_proj p) { return (p >= 0 && p <= 2) ? proj_names[p] : "?"; }

int wt_name_is_routed_expert(const char *canon) { return strstr(canon, "_exps.") != NULL; }

int wt_hf_name(const char *canon, char *out, size_t n)
{
    char base[256], suffix[16] = "";
    size_t len = strlen(canon);
    if (len >= sizeof base) return -1;
    memcpy(base, canon, len + 1);
    if (len > 10 && strcmp(base + len - 10, "_scale_inv") == 0) {
        base[len - 10] = 0;
        strcpy(suffix, "_scale_inv");
    }
    int w = -1;
    if (strcmp(base, "token_embd.weight") == 0)
        w = snprintf(out, n, "model.embed_tokens.weight%s", suffix);
    else if (strcmp(base, "output_norm.weight") == 0)
        w = snprintf(out, n, "model.norm.weight%s", suffix);
    else if (strcmp(base, "output.weight") == 0) w = snprintf(out, n, "lm_head.weight%s", suffix);
    else if (strncmp(base, "blk.", 4) == 0) {
        const char *p = base + 4;
        long l = parse_index(&p);
        if (l < 0) return -1;
        for (size_t i = 0; i < sizeof layer_map / sizeof layer_map[0]; i++)
            if (strcmp(p, layer_map[i].gguf) == 0) {
                w = snprintf(out, n, "model.layers.%ld.%s%s", l, layer_map[i].hf, suffix);
                break;
            }
        for (int k = 0; w < 0 && k < 3; k++) {
            char want[32];
            snprintf(want, sizeof want, "ffn_%s_exps.", proj_names[k]);
            if (strncmp(p, want, strlen(want)) != 0) continue;
            const char *q = p + strlen(want);
            long e = parse_index(&q);
            if (e < 0 || strcmp(q, "weight") != 0) return -1;
            w = snprintf(out, n, "model.layers.%ld.mlp.experts.%ld.%s_proj.weight%s", l, e,
                         proj_names[k], suffix);
        }
    }
    return (w < 0 || (size_t)w >= n) ? -1 : 0;
}
