/* model.c - the DeepSeek-V3 forward pass, written once against ops.h.
 *
 * What: model_create reads hyperparameters and tensors through engine/weights, checks every
 * shape it uses (a missing or misshapen tensor is a load-time error naming it), hands the
 * weights to the caller's backend (ops_lin / ops_moe) and allocates the work buffers for
 * max_batch_tokens once. model_forward runs the DeepSeek-V3 forward (MLA attention, dense and
 * MoE FFN; docs/numerics.md) on a flat batch of tokens from any number of sequences:
 *
 *   h = embed(tokens)                                              residual stream, fp32
 *   per layer:
 *     a   = rmsnorm(h, attn_norm)
 *     q   = q_b(rmsnorm(q_a(a), q_a_norm, 1e-6))   or q_proj(a)     [n, H, nope + rope]
 *     kv  = kv_a(a);  c = rmsnorm(kv[:L], kv_a_norm, 1e-6);  k_pe = rope(kv[L:], pos)
 *     cache[pos] = bf16(c | k_pe)                                   (all tokens, then attend)
 *     q~  = W_UK^T q_nope (per head),  q_pe = rope(q_pe, pos)        [n, H, L + rope]
 *     o~  = softmax(tau * q . cache) . cache[:, :L]                  (absorbed MLA, causal)
 *     h  += o_proj(W_UV o~)
 *     h  += deferred(l - 1)                                          (expert deferral only)
 *     f   = rmsnorm(h, ffn_norm)
 *     h  += dense FFN(f)   or   routed experts(f) + shared experts(f)
 *   logits = lm_head(rmsnorm(h, output_norm)) for the rows asked for
 *
 * Expert deferral (model_set_defer, engine.defer_experts; docs/numerics.md): of each token's
 * routes in every layer but the last, the n with the smallest weights go to deferred(l) instead
 * of h, and enter h after layer l + 1's attention; with ops_cuda their CPU job runs meanwhile.
 *
 * Where the backend fuses (ops.h "fused forms"; ops_cuda): q_a | kv_a and gate | up are one linear
 * each, the norms before FP8 linears hand over their quantized output (ops_rmsnorm_lin), and a
 * decode's q_pe / k_pe RoPE is one call. The layers of a forward are bracketed by
 * ops_graph_begin / ops_graph_end, so a backend can replay them from a CUDA graph.
 *
 * Attention is the absorbed ("latent") form for prefill and decode alike: one code path, the
 * cache is the only key/value source, and chunked prefill / mixed batches need nothing special
 * (a token attends to slots 0..pos of its sequence, written by earlier steps or earlier in this
 * batch's layer pass). Its cost per key is kv_lora + rope per head instead of nope + rope, i.e.
 * prefill does ~3x the attention FLOPs of the naive form. W_UK / W_UV (kv_b, or llama.cpp's split
 * attn_k_b / attn_v_b) are dequantized to fp32 at load.
 *
 * Threads: one caller at a time (the engine thread); the backend uses its own workers.
 * Ownership: the model borrows the weights and the backend (see model.h) and owns the backend
 * handles of its weights and its work buffers, freed by model_destroy.
 * Memory: work buffers are sized for max_batch_tokens at create time; forward allocates nothing
 * (the backend's scratch grows on the first forward of a given size and is then reused). The
 * widest per-token buffers are not kept for a whole step (docs/gpu-memory.md): the absorbed part
 * of attention (q~ = W_UK^T q_nope | rope(q_pe), the attention, W_UV o~) runs in passes of at
 * most ATT_CHUNK tokens, so q~ and o~ (H x (L + rope) and H x L floats a token, 557 KB for V3)
 * have ATT_CHUNK rows; the dense FFN runs in passes of FFN_CHUNK tokens, so the gate/up buffers
 * hold FFN_CHUNK rows of the dense width and max_batch_tokens rows only of the shared experts'
 * (narrower) width (a fused gate|up linear writes both halves into the gate buffer, so its
 * passes hold half as many tokens). A pass is a sub-range of the batch's tokens (for attention: the
 * same sequences and block tables, the tokens' own positions; every token's KV row is stored before
 * the first pass). The CPU backend computes each token on its own, so there the results are
 * bitwise those of one pass; on ops_cuda a GEMM's rounding may depend on its row count (as with
 * chunked prefill). Passes are of even size (the fewest passes of at most the limit), so no pass
 * is a tiny remainder.
 */
#include "engine/model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "engine/model/ops.h"
#include "engine/weights/weights.h"
#include "kernels/cpu/cpuq.h"
#include "kernels/cpu/fp8.h"
#include "kernels/cpu/fpconv.h"

#define LOGIT_ROWS 16 /* lm_head rows computed per pass */
#define ATT_CHUNK 256 /* tokens per absorbed-attention pass (rows of q~ / o~) */
#define FFN_CHUNK 512 /* tokens per dense-FFN pass (rows of gate / up at the dense width) */
#define LATENT_EPS                                                                                 \
    1e-6f /* q_a / kv_a norms: 1e-6 regardless of config (DeepSeek's                               \
           * reference code hard-codes it; rms_norm_eps is the others') */

struct layer {
    float *attn_norm, *ffn_norm, *q_a_norm, *kv_a_norm; /* backend vectors */
    struct ops_lin *q_a, *q_b, *q, *kv_a, *o;
    struct ops_lin *qkv_a; /* q_a | kv_a as one linear (ops_lin_create_cat; then q_a, kv_a NULL) */
    struct ops_lin *gate_up; /* gate | up as one linear (then gate, up NULL) */
    struct ops_heads *wkvb;  /* [H][nope + v][L]: W_UK^h rows then W_UV^h rows */
    int moe;
    struct ops_lin *gate, *up, *down; /* dense FFN or shared experts */
    struct ops_lin *router;
    float *router_bias; /* NULL when absent */
    struct ops_moe *experts;
};

struct bufs { /* [max_batch_tokens, ...] work buffers in backend memory */
    float *h, *a, *qa, *q, *kv, *kvn, *ov, *tmp, *rl, *rw, *ro;
    float *qabs, *att; /* [att_rows, H, L + rope], [att_rows, H, L] */
    float *g, *u;      /* ffn_cap floats each: gate / up of one FFN pass */
    int32_t *rid;
    float *fin, *logits; /* [LOGIT_ROWS, D], [LOGIT_ROWS, V] */
};

/* Deferred routed-expert output waiting to enter a residual stream (engine.defer_experts): one
 * per stream, since a layered pass's crosses model_pass_run calls while forwards run between. */
struct dstate {
    float *buf;  /* [max_tokens, hidden] backend memory (NULL until deferral is on) */
    int pending; /* buf holds the last layer's deferred part, not yet added */
};

struct model {
    const struct wt_model *w;
    struct wt_hparams hp;
    struct ops *ops;
    int max_tokens;
    int H, L, R, NOPE, V, QD; /* heads, kv_lora, rope dims, nope dims, v dims, q dims per head */
    int kv_dim;
    int att_rows;    /* tokens per attention pass: min(max_tokens, ATT_CHUNK) */
    int64_t ffn_cap; /* floats of g / u: max(max_tokens x shared width,
                      * min(max_tokens, FFN_CHUNK) x dense width) */
    float tau;       /* softmax scale */
    float rope_freq[64];
    struct ops_rope rope;
    struct ops_router router;
    struct ops_lin *embed, *out;
    float *out_norm;
    struct layer *layers;
    struct bufs b;
    model_route_fn route_fn;
    void *route_ud;
    model_lin_fn lin_fn;
    void *lin_ud;
    float *lin_host; /* host copy of a linear's input for the hook */
    size_t lin_host_n;
    int32_t *route_host;           /* [max_tokens][top_k] host copy for the hook */
    const struct cpuq_ops *scalar; /* load-time conversions */
    int defer;                     /* routed experts deferred per token (model_set_defer) */
    struct dstate fwd_d;           /* model_forward's deferred part */
    struct {                       /* the forward in slices (model_pass_*): NULL b = none */
        const struct model_kv *kv;
        const struct model_batch *b;
        int next; /* the next layer to run */
        float *h; /* its residual stream [max_tokens, hidden] (allocated on first use) */
        struct dstate d;
    } pass;
};

/* ---------------------------------------------------------------- loading helpers */

static int tensor_2d(const struct model *m, const char *name, int64_t rows, int64_t cols,
                     struct wt_view *v, char *err)
{
    const struct wt_tensor *t = wt_get(m->w, name);
    if (!t) return err_set(err, ERR_FORMAT, "model: tensor %s is missing", name);
    if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols)
        return err_set(err, ERR_FORMAT,
                       "model: tensor %s has shape [%lld, %lld] (ndim %d), "
                       "expected [%lld, %lld]",
                       name, (long long)t->shape[0], t->ndim > 1 ? (long long)t->shape[1] : 0LL,
                       t->ndim, (long long)rows, (long long)cols);
    int ok = 1;
    size_t rb = qtype_row_bytes(t->type, cols, &ok);
    if (!ok || rb * (size_t)rows > t->nbytes)
        return err_set(err, ERR_FORMAT, "model: tensor %s: bad size for type %s", name,
                       qtype_name(t->type));
    memset(v, 0, sizeof *v);
    v->type = t->type;
    v->rows = rows;
    v->cols = cols;
    v->data = t->data;
    v->row_bytes = rb;
    if (t->type == QTYPE_F8_E4M3) {
        const struct wt_tensor *s = t->scale;
        int64_t sr = cpuq_fp8_nblk(rows), scn = cpuq_fp8_nblk(cols);
        if (!s || s->type != QTYPE_F32 || s->nbytes < (size_t)(sr * scn) * sizeof(float))
            return err_set(err, ERR_FORMAT,
                           "model: FP8 tensor %s lacks a [%lld, %lld] F32 "
                           "weight_scale_inv",
                           name, (long long)sr, (long long)scn);
        v->scale = s->data;
    }
    return 0;
}

static int get_lin(struct model *m, const char *name, int64_t rows, int64_t cols,
                   struct ops_lin **out, char *err)
{
    struct wt_view v;
    int rc = tensor_2d(m, name, rows, cols, &v, err);
    if (rc) return rc;
    char e2[ERR_LEN];
    rc = ops_lin_create(m->ops, &v, out, e2);
    if (rc) return err_set(err, rc, "model: %s: %s", name, e2);
    return 0;
}

/* get_lin for the W16A32 linears (router, lm_head): never converted to FP8 by a backend. */
static int get_lin_w16(struct model *m, const char *name, int64_t rows, int64_t cols,
                       struct ops_lin **out, char *err)
{
    struct wt_view v;
    int rc = tensor_2d(m, name, rows, cols, &v, err);
    if (rc) return rc;
    char e2[ERR_LEN];
    rc = ops_lin_create_w16(m->ops, &v, out, e2);
    if (rc) return err_set(err, rc, "model: %s: %s", name, e2);
    return 0;
}

/* Two projections of one input [ra | rb, cols]: one fused linear *ab when fuse is set and the
 * backend makes it (ops_lin_create_cat; *a, *b stay NULL), else two (*a, *b). */
static int get_lin_pair(struct model *m, const char *na, int64_t ra, const char *nb, int64_t rb,
                        int64_t cols, int fuse, struct ops_lin **a, struct ops_lin **b,
                        struct ops_lin **ab, char *err)
{
    struct wt_view va, vb;
    int rc = tensor_2d(m, na, ra, cols, &va, err);
    if (!rc) rc = tensor_2d(m, nb, rb, cols, &vb, err);
    if (rc) return rc;
    char e2[ERR_LEN];
    if (fuse) { /* a backend that cannot fuse these says ERR_UNSUPPORTED: two linears then */
        rc = ops_lin_create_cat(m->ops, &va, &vb, ab, e2);
        if (!rc || rc == ERR_NOMEM)
            return rc ? err_set(err, rc, "model: %s | %s: %s", na, nb, e2) : 0;
        if (rc != ERR_UNSUPPORTED)
            LOG_NOTICE("model", "%s | %s not fused (%s): two linears", na, nb, e2);
    }
    if ((rc = ops_lin_create(m->ops, &va, a, e2))) return err_set(err, rc, "model: %s: %s", na, e2);
    if ((rc = ops_lin_create(m->ops, &vb, b, e2))) return err_set(err, rc, "model: %s: %s", nb, e2);
    return 0;
}

/* Convert rows of a 2-D view to fp32 on the host (load time only). */
static int view_to_f32(struct model *m, const struct wt_view *v, float *dst, char *err)
{
    if (v->type == QTYPE_F8_E4M3) {
        cpuq_fp8_dequant(v->data, v->scale, v->rows, v->cols, 0, v->rows, dst);
        return 0;
    }
    if (v->type == QTYPE_F32 || v->type == QTYPE_BF16 || v->type == QTYPE_F16) {
        for (int64_t r = 0; r < v->rows; r++) {
            const uint8_t *src = (const uint8_t *)v->data + r * v->row_bytes;
            float *d = dst + r * v->cols;
            for (int64_t c = 0; c < v->cols; c++) {
                uint16_t h;
                if (v->type == QTYPE_F32) {
                    memcpy(d + c, src + 4 * c, 4);
                    continue;
                }
                memcpy(&h, src + 2 * c, 2);
                d[c] = v->type == QTYPE_BF16 ? fp_bf16_to_f32(h) : fp_f16_to_f32(h);
            }
        }
        return 0;
    }
    /* GGML block types: the scalar dequantizers (exact), fetched on first use */
    if (!m->scalar) {
        int rc = cpuq_ops_get(CPUQ_ISA_SCALAR, &m->scalar, err);
        if (rc) return rc;
    }
    const struct cpuq_ops *q = m->scalar;
    if (v->type < 0 || v->type >= QTYPE_COUNT_ || !q->type[v->type].to_float)
        return err_set(err, ERR_UNSUPPORTED, "model: cannot convert type %s to f32",
                       qtype_name(v->type));
    for (int64_t r = 0; r < v->rows; r++)
        q->type[v->type].to_float((const char *)v->data + r * v->row_bytes, dst + r * v->cols,
                                  v->cols);
    return 0;
}

/* A 1-D tensor of n values (any float-convertible type) as a backend fp32 vector. */
static int get_vec(struct model *m, const char *name, int64_t n, int optional, float **out,
                   char *err)
{
    const struct wt_tensor *t = wt_get(m->w, name);
    *out = NULL;
    if (!t) {
        if (optional) return 0;
        return err_set(err, ERR_FORMAT, "model: tensor %s is missing", name);
    }
    int64_t cnt = 1;
    for (int i = 0; i < t->ndim; i++) cnt *= t->shape[i];
    if (cnt != n || t->ndim < 1 || t->ndim > 2)
        return err_set(err, ERR_FORMAT, "model: tensor %s has %lld values, expected %lld", name,
                       (long long)cnt, (long long)n);
    int ok = 1;
    size_t rb = qtype_row_bytes(t->type, n, &ok);
    if (!ok || rb > t->nbytes) return err_set(err, ERR_FORMAT, "model: tensor %s: bad size", name);
    struct wt_view v = {.type = t->type, .rows = 1, .cols = n, .data = t->data, .row_bytes = rb};
    if (t->type == QTYPE_F8_E4M3)
        return err_set(err, ERR_UNSUPPORTED, "model: tensor %s: FP8 vector", name);
    float *host = malloc((size_t)n * sizeof(float));
    if (!host) return err_set(err, ERR_NOMEM, "model: out of memory");
    int rc = view_to_f32(m, &v, host, err);
    if (!rc) {
        *out = ops_alloc(m->ops, (size_t)n * sizeof(float));
        if (!*out) rc = err_set(err, ERR_NOMEM, "model: out of memory");
        else ops_upload(m->ops, *out, host, (size_t)n * sizeof(float));
    }
    free(host);
    return rc;
}

static double yarn_mscale(double f, double ms) { return f <= 1.0 ? 1.0 : 0.1 * ms * log(f) + 1.0; }

/* RoPE inverse frequencies (YaRN-adjusted as DeepSeek's reference: ramp between beta_fast and
 * beta_slow over the original context), softmax scale (times mscale_all_dim's YaRN factor
 * squared) and cos/sin amplitude. */
static void rope_setup(struct model *m)
{
    const struct wt_hparams *hp = &m->hp;
    int dr = m->R, np = dr / 2;
    double theta = hp->rope_theta > 0 ? hp->rope_theta : 10000.0;
    double f = hp->yarn_factor;
    double lo = 0, hi = 0;
    int yarn = hp->yarn && f > 1.0;
    if (yarn) {
        double L = hp->yarn_orig_ctx > 0 ? hp->yarn_orig_ctx : 4096;
        double dlo = dr * log(L / (2 * M_PI * hp->yarn_beta_fast)) / (2 * log(theta));
        double dhi = dr * log(L / (2 * M_PI * hp->yarn_beta_slow)) / (2 * log(theta));
        lo = floor(dlo) > 0 ? floor(dlo) : 0;
        hi = ceil(dhi) < dr - 1 ? ceil(dhi) : dr - 1;
        if (lo == hi) hi += 0.001;
    }
    for (int i = 0; i < np; i++) {
        double base = pow(theta, -2.0 * i / dr);
        double w = base;
        if (yarn) {
            double ramp = (i - lo) / (hi - lo);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            w = base * (1 - ramp) + base / f * ramp;
        }
        m->rope_freq[i] = (float)w;
    }
    double tau = 1.0 / sqrt((double)(m->NOPE + m->R));
    double amp = 1.0;
    if (yarn) {
        double all = yarn_mscale(f, hp->yarn_mscale_all_dim);
        tau *= all * all;
        amp = yarn_mscale(f, hp->yarn_mscale) / all;
    }
    m->tau = (float)tau;
    m->rope = (struct ops_rope){.n_pairs = np, .freq = m->rope_freq, .amp = (float)amp};
}

static int check_hparams(const struct wt_hparams *hp, char *err)
{
    if (hp->vocab_size <= 0 || hp->hidden <= 0 || hp->n_layers <= 0 || hp->n_heads <= 0 ||
        hp->kv_lora_rank <= 0 || hp->qk_nope <= 0 || hp->qk_rope <= 0 || hp->v_head <= 0 ||
        hp->q_lora_rank < 0)
        return err_set(err, ERR_FORMAT, "model: hyperparameters missing or not positive");
    if (hp->qk_rope % 2 || hp->qk_rope > 128)
        return err_set(err, ERR_UNSUPPORTED, "model: qk_rope_head_dim %d (even, <= 128)",
                       hp->qk_rope);
    for (int l = 0; l < hp->n_layers; l++) {
        if (!wt_layer_is_moe(hp, l)) continue;
        if (hp->n_routed <= 0 || hp->top_k <= 0 || hp->top_k > hp->n_routed || hp->moe_inter <= 0)
            return err_set(err, ERR_FORMAT,
                           "model: MoE layers need n_routed_experts >= "
                           "num_experts_per_tok >= 1 and moe_intermediate_size");
        int ng = hp->n_group > 0 ? hp->n_group : 1, tg = hp->topk_group > 0 ? hp->topk_group : 1;
        if (hp->n_routed % ng || tg > ng || (long)tg * (hp->n_routed / ng) < hp->top_k)
            return err_set(err, ERR_FORMAT,
                           "model: bad expert groups: %d experts, n_group %d, "
                           "topk_group %d, top_k %d",
                           hp->n_routed, hp->n_group, hp->topk_group, hp->top_k);
        break;
    }
    if (hp->inter <= 0 && hp->first_k_dense > 0)
        return err_set(err, ERR_FORMAT, "model: dense layers need intermediate_size");
    return 0;
}

static int load_layer(struct model *m, int l, char *err)
{
    const struct wt_hparams *hp = &m->hp;
    struct layer *ly = &m->layers[l];
    const int D = hp->hidden, H = m->H, L = m->L;
    char nm[WT_NAME_LEN];
    int rc;
#define NAME(...) (snprintf(nm, sizeof nm, __VA_ARGS__), nm)
    if ((rc = get_vec(m, NAME("blk.%d.attn_norm.weight", l), D, 0, &ly->attn_norm, err)) ||
        (rc = get_vec(m, NAME("blk.%d.ffn_norm.weight", l), D, 0, &ly->ffn_norm, err)) ||
        (rc = get_vec(m, NAME("blk.%d.attn_kv_a_norm.weight", l), L, 0, &ly->kv_a_norm, err)) ||
        (rc = get_lin(m, NAME("blk.%d.attn_output.weight", l), D, (int64_t)H * m->V, &ly->o, err)))
        return rc;
    if (hp->q_lora_rank > 0) {
        int ql = hp->q_lora_rank;
        char nkv[WT_NAME_LEN];
        snprintf(nkv, sizeof nkv, "blk.%d.attn_kv_a_mqa.weight", l);
        /* q_a | kv_a fused when their output fits the tmp buffer (attention() uses it) */
        if ((rc = get_vec(m, NAME("blk.%d.attn_q_a_norm.weight", l), ql, 0, &ly->q_a_norm, err)) ||
            (rc = get_lin_pair(m, NAME("blk.%d.attn_q_a.weight", l), ql, nkv, L + m->R, D,
                               ql + m->kv_dim <= D, &ly->q_a, &ly->kv_a, &ly->qkv_a, err)) ||
            (rc = get_lin(m, NAME("blk.%d.attn_q_b.weight", l), (int64_t)H * m->QD, ql, &ly->q_b,
                          err)))
            return rc;
    } else if ((rc = get_lin(m, NAME("blk.%d.attn_q.weight", l), (int64_t)H * m->QD, D, &ly->q,
                             err)) ||
               (rc = get_lin(m, NAME("blk.%d.attn_kv_a_mqa.weight", l), L + m->R, D, &ly->kv_a,
                             err))) {
        return rc;
    }
    /* kv_b -> fp32 [H][nope + v][L] (absorbed halves). llama.cpp's split attn_k_b / attn_v_b
     * are rearranged into the same rows and handed over as an fp32 view. */
    {
        struct wt_view v;
        int64_t rows = (int64_t)H * (m->NOPE + m->V);
        int split =
            !wt_getf(m->w, "blk.%d.attn_kv_b.weight", l); /* wt_kv_b_rows names what is missing */
        if (!split && (rc = tensor_2d(m, NAME("blk.%d.attn_kv_b.weight", l), rows, L, &v, err)))
            return rc;
        size_t bytes = (size_t)rows * L * sizeof(float);
        float *host = malloc(bytes);
        if (!host) return err_set(err, ERR_NOMEM, "model: out of memory for kv_b");
        char e2[ERR_LEN];
        if (split) {
            v = (struct wt_view){.type = QTYPE_F32,
                                 .rows = rows,
                                 .cols = L,
                                 .data = host,
                                 .row_bytes = (size_t)L * sizeof(float)};
            if ((rc = wt_kv_b_rows(m->w, l, 0, rows, host, e2)))
                err_set(err, rc, "model: kv_b of layer %d: %s", l, e2);
        } else {
            rc = view_to_f32(m, &v, host, err);
        }
        if (!rc && (rc = ops_heads_create(m->ops, &v, host, &ly->wkvb, e2)))
            err_set(err, rc, "model: kv_b of layer %d: %s", l, e2);
        free(host);
        if (rc) return rc;
    }
    ly->moe = wt_layer_is_moe(hp, l);
    char nup[WT_NAME_LEN];
    if (!ly->moe) {
        snprintf(nup, sizeof nup, "blk.%d.ffn_up.weight", l);
        if ((rc = get_lin_pair(m, NAME("blk.%d.ffn_gate.weight", l), hp->inter, nup, hp->inter, D,
                               m->ffn_cap >= 2 * (int64_t)hp->inter, &ly->gate, &ly->up,
                               &ly->gate_up, err)) ||
            (rc = get_lin(m, NAME("blk.%d.ffn_down.weight", l), D, hp->inter, &ly->down, err)))
            return rc;
        return 0;
    }
    const int E = hp->n_routed, I = hp->moe_inter;
    if ((rc = get_lin_w16(m, NAME("blk.%d.ffn_gate_inp.weight", l), E, D, &ly->router, err)) ||
        (rc = get_vec(m, NAME("blk.%d.exp_probs_b.bias", l), E, 1, &ly->router_bias, err)))
        return rc;
    if (hp->n_shared > 0) {
        int64_t si = (int64_t)hp->n_shared * I;
        snprintf(nup, sizeof nup, "blk.%d.ffn_up_shexp.weight", l);
        if ((rc = get_lin_pair(m, NAME("blk.%d.ffn_gate_shexp.weight", l), si, nup, si, D,
                               m->ffn_cap >= 2 * si, &ly->gate, &ly->up, &ly->gate_up, err)) ||
            (rc = get_lin(m, NAME("blk.%d.ffn_down_shexp.weight", l), D, si, &ly->down, err)))
            return rc;
    }
#undef NAME
    struct wt_view *vs = calloc((size_t)3 * E, sizeof *vs);
    if (!vs) return err_set(err, ERR_NOMEM, "model: out of memory");
    for (int e = 0; e < E && !rc; e++) {
        for (int p = 0; p < 3 && !rc; p++) {
            struct wt_view *v = &vs[(size_t)p * E + e];
            rc = wt_expert(m->w, l, (enum wt_proj)p, e, v, err);
            int64_t er = p == WT_DOWN ? D : I, ec = p == WT_DOWN ? I : D;
            if (!rc && (v->rows != er || v->cols != ec))
                rc = err_set(err, ERR_FORMAT,
                             "model: layer %d expert %d %s is [%lld, %lld], "
                             "expected [%lld, %lld]",
                             l, e,
                             p == 0   ? "gate"
                             : p == 1 ? "up"
                                      : "down",
                             (long long)v->rows, (long long)v->cols, (long long)er, (long long)ec);
        }
    }
    if (!rc) {
        char e2[ERR_LEN];
        rc = ops_moe_create(m->ops, E, vs, vs + E, vs + 2 * E, &ly->experts, e2);
        if (rc) err_set(err, rc, "model: layer %d experts: %s", l, e2);
    }
    free(vs);
    return rc;
}

static int alloc_bufs(struct model *m, char *err)
{
    const struct wt_hparams *hp = &m->hp;
    size_t T = (size_t)m->max_tokens, D = (size_t)hp->hidden, H = (size_t)m->H;
    size_t E = hp->n_routed > 0 ? (size_t)hp->n_routed : 1;
    size_t K = hp->top_k > 0 ? (size_t)hp->top_k : 1;
    size_t ql = hp->q_lora_rank > 0 ? (size_t)hp->q_lora_rank : 1;
    struct bufs *b = &m->b;
#define A(ptr, n)                                                                                  \
    do {                                                                                           \
        if (!((ptr) = ops_alloc(m->ops, (n) * sizeof *(ptr))))                                     \
            return err_set(err, ERR_NOMEM, "model: out of memory for work buffers");               \
    } while (0)
    A(b->h, T * D);
    A(b->a, T * D);
    A(b->qa, T * ql);
    A(b->q, T * H * m->QD);
    A(b->kv, T * m->kv_dim);
    A(b->kvn, T * m->kv_dim);
    A(b->qabs, (size_t)m->att_rows * H * m->kv_dim);
    A(b->att, (size_t)m->att_rows * H * m->L);
    A(b->ov, T * H * m->V);
    A(b->tmp, T * D);
    A(b->ro, T * D);
    A(b->g, (size_t)m->ffn_cap);
    A(b->u, (size_t)m->ffn_cap);
    A(b->rl, T * E);
    A(b->rw, T * K);
    A(b->rid, T * K);
    A(b->fin, (size_t)LOGIT_ROWS * D);
    A(b->logits, (size_t)LOGIT_ROWS * hp->vocab_size);
#undef A
    return 0;
}

int model_create(const struct wt_model *w, struct ops *o, int max_batch_tokens, struct model **out,
                 char *err)
{
    const struct wt_hparams *hp = wt_hparams(w);
    int rc = check_hparams(hp, err);
    if (rc) return rc;
    if (max_batch_tokens < 1)
        return err_set(err, ERR_INVAL, "model: max_batch_tokens must be >= 1");
    struct model *m = calloc(1, sizeof *m);
    if (!m) return err_set(err, ERR_NOMEM, "model: out of memory");
    m->w = w;
    m->hp = *hp;
    m->ops = o;
    ops_set_fp8_ue8m0(o, hp->fp8_ue8m0); /* DeepSeek-V3.1's power-of-two activation scales */
    m->max_tokens = max_batch_tokens;
    m->H = hp->n_heads;
    m->L = hp->kv_lora_rank;
    m->R = hp->qk_rope;
    m->NOPE = hp->qk_nope;
    m->V = hp->v_head;
    m->QD = hp->qk_nope + hp->qk_rope;
    m->kv_dim = m->L + m->R;
    m->att_rows = m->max_tokens < ATT_CHUNK ? m->max_tokens : ATT_CHUNK;
    { /* the FFN widths the layers use: dense (inter), shared experts (n_shared x moe_inter) */
        int64_t dense = 0, shared = 0;
        for (int l = 0; l < hp->n_layers; l++) {
            if (!wt_layer_is_moe(hp, l)) dense = hp->inter;
            else if (hp->n_shared > 0) shared = (int64_t)hp->n_shared * hp->moe_inter;
        }
        int64_t T = m->max_tokens, dense_rows = T < FFN_CHUNK ? T : FFN_CHUNK;
        m->ffn_cap = T * shared > dense_rows * dense ? T * shared : dense_rows * dense;
        if (m->ffn_cap < 1) m->ffn_cap = 1;
    }
    rope_setup(m);
    m->router = (struct ops_router){.n_expert = hp->n_routed,
                                    .top_k = hp->top_k,
                                    .n_group = hp->n_group > 0 ? hp->n_group : 1,
                                    .topk_group = hp->topk_group > 0 ? hp->topk_group : 1,
                                    .softmax = hp->scoring == WT_SCORE_SOFTMAX,
                                    .norm_topk_prob = hp->norm_topk_prob,
                                    .scale = hp->routed_scale > 0 ? hp->routed_scale : 1.0f};

    if (!(m->layers = calloc((size_t)hp->n_layers, sizeof *m->layers))) {
        rc = err_set(err, ERR_NOMEM, "model: out of memory");
        goto fail;
    }
    struct wt_view ev;
    char e2[ERR_LEN];
    if ((rc = tensor_2d(m, "token_embd.weight", hp->vocab_size, hp->hidden, &ev, err)) ||
        (rc = ops_table_create(m->ops, &ev, &m->embed, e2)
                  ? err_set(err, rc, "model: token_embd.weight: %s", e2)
                  : 0) ||
        (rc = get_lin_w16(m, "output.weight", hp->vocab_size, hp->hidden, &m->out, err)) ||
        (rc = get_vec(m, "output_norm.weight", hp->hidden, 0, &m->out_norm, err)))
        goto fail;
    for (int l = 0; l < hp->n_layers; l++)
        if ((rc = load_layer(m, l, err))) goto fail;
    ops_load_done(m->ops); /* the backend's load report (weights it converted) */
    if ((rc = alloc_bufs(m, err))) goto fail;
    if (!(m->route_host =
              malloc((size_t)m->max_tokens * (hp->top_k > 0 ? hp->top_k : 1) * sizeof(int32_t)))) {
        rc = err_set(err, ERR_NOMEM, "model: out of memory");
        goto fail;
    }
    LOG_INFO("model",
             "%d layers, hidden %d, %d heads, vocab %d on %s (%d threads), "
             "max %d tokens per forward",
             hp->n_layers, hp->hidden, m->H, hp->vocab_size, ops_name(m->ops),
             ops_n_threads(m->ops), m->max_tokens);
    *out = m;
    return 0;
fail:
    model_destroy(m);
    return rc;
}

void model_destroy(struct model *m)
{
    if (!m) return;
    struct ops *o = m->ops;
    if (o) {
        if (m->layers) {
            for (int l = 0; l < m->hp.n_layers; l++) {
                struct layer *ly = &m->layers[l];
                ops_free(o, ly->attn_norm);
                ops_free(o, ly->ffn_norm);
                ops_free(o, ly->q_a_norm);
                ops_free(o, ly->kv_a_norm);
                ops_heads_destroy(o, ly->wkvb);
                ops_free(o, ly->router_bias);
                ops_lin_destroy(o, ly->q_a);
                ops_lin_destroy(o, ly->q_b);
                ops_lin_destroy(o, ly->q);
                ops_lin_destroy(o, ly->kv_a);
                ops_lin_destroy(o, ly->qkv_a);
                ops_lin_destroy(o, ly->gate_up);
                ops_lin_destroy(o, ly->o);
                ops_lin_destroy(o, ly->gate);
                ops_lin_destroy(o, ly->up);
                ops_lin_destroy(o, ly->down);
                ops_lin_destroy(o, ly->router);
                ops_moe_destroy(o, ly->experts);
            }
        }
        ops_lin_destroy(o, m->embed);
        ops_lin_destroy(o, m->out);
        ops_free(o, m->out_norm);
        struct bufs *b = &m->b;
        void *all[] = {b->h,   b->a,  b->qa, b->q, b->kv, b->kvn, b->qabs, b->att, b->ov,
                       b->tmp, b->ro, b->g,  b->u, b->rl, b->rw,  b->rid,  b->fin, b->logits};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) ops_free(o, all[i]);
        ops_free(o, m->pass.h);
        ops_free(o, m->fwd_d.buf);
        ops_free(o, m->pass.d.buf);
    }
    free(m->layers);
    free(m->route_host);
    free(m->lin_host);
    free(m);
}

void model_set_lin_hook(struct model *m, model_lin_fn fn, void *ud)
{
    m->lin_fn = fn;
    m->lin_ud = ud;
}

void model_set_route_hook(struct model *m, model_route_fn fn, void *ud)
{
    m->route_fn = fn;
    m->route_ud = ud;
}

int model_set_defer(struct model *m, int n, char *err)
{
    const int k = m->hp.top_k > 0 ? m->hp.top_k : 0;
    if (n < 0 || n > k || n > 64)
        return err_set(err, ERR_INVAL, "model: %d deferred experts per token (0..%d)", n, k);
    if (m->pass.b) return err_set(err, ERR_INVAL, "model: a layered pass is running");
    if (n > 0 && !m->fwd_d.buf &&
        !(m->fwd_d.buf = ops_alloc(m->ops, (size_t)m->max_tokens * m->hp.hidden * sizeof(float))))
        return err_set(err, ERR_NOMEM, "model: out of memory for the deferred experts' buffer");
    m->defer = n;
    return 0;
}

int model_vocab(const struct model *m) { return m->hp.vocab_size; }
int model_kv_dim(const struct model *m) { return m->kv_dim; }
int model_n_layers(const struct model *m) { return m->hp.n_layers; }
int model_max_batch_tokens(const struct model *m) { return m->max_tokens; }
const struct wt_hparams *model_hparams(const struct model *m) { return &m->hp; }

struct ops_moe *model_moe(const struct model *m, int i, int *layer)
{
    for (int l = 0; l < m->hp.n_layers; l++)
        if (m->layers[l].moe && i-- == 0) {
            if (layer) *layer = l;
            return m->layers[l].experts;
        }
    return NULL;
}

/* ---------------------------------------------------------------- forward */

static int check_batch(const struct model *m, const struct model_kv *kv,
                       const struct model_batch *b, char *err)
{
    const struct wt_hparams *hp = &m->hp;
    if (!kv || kv->n_layers != hp->n_layers || kv->kv_dim != m->kv_dim || kv->block_tokens < 1 ||
        kv->n_blocks < 1 || !kv->layer_data ||
        (kv->type != MODEL_KV_BF16 && kv->type != MODEL_KV_F32))
        return err_set(err, ERR_INVAL,
                       "model: KV cache does not match the model (%d layers, "
                       "kv_dim %d, bf16 or f32)",
                       hp->n_layers, m->kv_dim);
    if (b->n_tokens < 1 || b->n_tokens > m->max_tokens)
        return err_set(err, ERR_INVAL, "model: batch of %d tokens (1..%d)", b->n_tokens,
                       m->max_tokens);
    if (b->n_seqs < 1 || !b->seqs || !b->tokens || !b->pos || !b->seq)
        return err_set(err, ERR_INVAL, "model: batch without tokens, positions or sequences");
    if (b->n_logits < 0 || b->n_logits > b->n_tokens || (b->n_logits && !b->logits_idx))
        return err_set(err, ERR_INVAL, "model: %d logits rows for %d tokens", b->n_logits,
                       b->n_tokens);
    for (int s = 0; s < b->n_seqs; s++) {
        const struct model_seq *sq = &b->seqs[s];
        if (sq->n_blocks < 0 || (sq->n_blocks && !sq->blocks))
            return err_set(err, ERR_INVAL, "model: sequence %d has a bad block table", s);
        for (int i = 0; i < sq->n_blocks; i++)
            if (sq->blocks[i] < 0 || sq->blocks[i] >= kv->n_blocks)
                return err_set(err, ERR_INVAL, "model: sequence %d block %d is %d (of %d)", s, i,
                               sq->blocks[i], kv->n_blocks);
    }
    for (int t = 0; t < b->n_tokens; t++) {
        if (b->tokens[t] < 0 || b->tokens[t] >= hp->vocab_size)
            return err_set(err, ERR_INVAL, "model: token id %d out of range (vocab %d)",
                           b->tokens[t], hp->vocab_size);
        if (b->seq[t] < 0 || b->seq[t] >= b->n_seqs)
            return err_set(err, ERR_INVAL, "model: token %d has sequence %d of %d", t, b->seq[t],
                           b->n_seqs);
        if (b->pos[t] < 0 || (hp->max_pos > 0 && b->pos[t] >= hp->max_pos))
            return err_set(err, ERR_CTX_OVERFLOW,
                           "model: position %d outside the context of "
                           "%d",
                           b->pos[t], hp->max_pos);
        if (b->pos[t] / kv->block_tokens >= b->seqs[b->seq[t]].n_blocks)
            return err_set(err, ERR_INVAL,
                           "model: position %d beyond its block table (%d "
                           "blocks of %d)",
                           b->pos[t], b->seqs[b->seq[t]].n_blocks, kv->block_tokens);
    }
    for (int i = 0; i < b->n_logits; i++)
        if (b->logits_idx[i] < 0 || b->logits_idx[i] >= b->n_tokens)
            return err_set(err, ERR_INVAL, "model: logits index %d out of range", b->logits_idx[i]);
    return 0;
}

/* The test hook's host copy: rows [t0, t0 + n) of an input of `total` rows x cols, downloaded
 * from x (n rows) into lin_host at row t0. 0 when the host copy could not grow (the hook is then
 * skipped, as without a hook). */
static int hook_rows(struct model *m, const float *x, int t0, int n, int total, int cols)
{
    size_t need = (size_t)total * cols;
    if (need > m->lin_host_n) {
        float *p = realloc(m->lin_host, need * sizeof(float));
        if (!p) return 0;
        m->lin_host = p;
        m->lin_host_n = need;
    }
    ops_download(m->ops, m->lin_host + (size_t)t0 * cols, x, (size_t)n * cols * sizeof(float));
    return 1;
}

/* the test hook on a linear's whole input x [n, cols] */
static void hook(struct model *m, int layer, int which, int cols, const float *x, int n)
{
    if (m->lin_fn && hook_rows(m, x, 0, n, n, cols))
        m->lin_fn(m->lin_ud, layer, which, n, cols, m->lin_host);
}

/* ops_linear, with the test hook (input cols = the weight's columns) */
static void lin(struct model *m, int layer, int which, const struct ops_lin *w, int cols,
                const float *x, int n, float *y)
{
    hook(m, layer, which, cols, x, n);
    ops_linear(m->ops, w, x, n, y);
}

/* Tokens per pass when n tokens are run in passes of at most max: the fewest passes, of even
 * size (the last one may be shorter by less than the number of passes). */
static int pass_tokens(int n, int max)
{
    if (max < 1) max = 1;
    int k = (n + max - 1) / max;
    return (n + k - 1) / k;
}

/* Tokens [t0, t0 + n) of batch bt as a batch: the same sequences, no logits rows. */
static struct model_batch sub_batch(const struct model_batch *bt, int t0, int n)
{
    struct model_batch s = *bt;
    s.n_tokens = n;
    s.tokens = bt->tokens + t0;
    s.pos = bt->pos + t0;
    s.seq = bt->seq + t0;
    s.n_logits = 0;
    s.logits_idx = NULL;
    return s;
}

/* the residual stream entering layer l (which: MODEL_LIN_RESID), or after its attention and the
 * deferred part (MODEL_LIN_RESID_DEFER), for the test hook */
static void resid_hook(struct model *m, const float *h, int l, int n, int which)
{
    if (!m->lin_fn) return;
    size_t need = (size_t)n * m->hp.hidden;
    if (need > m->lin_host_n) {
        float *p = realloc(m->lin_host, need * sizeof(float));
        if (!p) return;
        m->lin_host = p;
        m->lin_host_n = need;
    }
    ops_download(m->ops, m->lin_host, h, need * sizeof(float));
    m->lin_fn(m->lin_ud, l, which, n, m->hp.hidden, m->lin_host);
}

static void attention(struct model *m, int l, const struct model_kv *kv,
                      const struct model_batch *bt)
{
    struct ops *o = m->ops;
    struct bufs *b = &m->b;
    const struct layer *ly = &m->layers[l];
    const int n = bt->n_tokens, H = m->H, L = m->L, QD = m->QD, KD = m->kv_dim, D = m->hp.hidden;
    const int step = pass_tokens(n, m->att_rows);
    /* q_pe's RoPE at the kv_a one's call (one launch) when the absorbed part is one pass */
    const int rope_early = ly->qkv_a && step == n;
    struct ops_rope_job qpe = {.n_heads = H,
                               .x = b->q + m->NOPE,
                               .ldx_tok = H * QD,
                               .ldx_head = QD,
                               .y = b->qabs + L,
                               .ldy_tok = H * KD,
                               .ldy_head = KD};

    const struct ops_lin *first = ly->qkv_a ? ly->qkv_a : ly->q_a ? ly->q_a : ly->q;
    ops_rmsnorm_lin(o, b->h, D, ly->attn_norm, n, D, m->hp.rms_eps, b->a, D, first);
    if (ly->qkv_a) {
        /* one linear: [n][ql | kv_dim] into tmp (free until o_proj), then the two halves */
        const int ql = m->hp.q_lora_rank, QK = ql + KD;
        float *qk = b->tmp;
        hook(m, l, MODEL_LIN_Q_A, D, b->a, n);
        hook(m, l, MODEL_LIN_KV_A, D, b->a, n);
        ops_linear(o, ly->qkv_a, b->a, n, qk);
        ops_rmsnorm_lin(o, qk, QK, ly->q_a_norm, n, ql, LATENT_EPS, b->qa, ql, ly->q_b);
        lin(m, l, MODEL_LIN_Q_B, ly->q_b, ql, b->qa, n, b->q);
        ops_rmsnorm(o, qk + ql, QK, ly->kv_a_norm, n, L, LATENT_EPS, b->kvn, KD);
        struct ops_rope_job kpe = {
            .n_heads = 1, .x = qk + ql + L, .ldx_tok = QK, .y = b->kvn + L, .ldy_tok = KD};
        ops_rope2(o, &m->rope, bt->pos, n, &kpe, rope_early ? &qpe : NULL);
    } else {
        if (ly->q_a) {
            int ql = m->hp.q_lora_rank;
            lin(m, l, MODEL_LIN_Q_A, ly->q_a, D, b->a, n, b->qa);
            ops_rmsnorm_lin(o, b->qa, ql, ly->q_a_norm, n, ql, LATENT_EPS, b->qa, ql, ly->q_b);
            lin(m, l, MODEL_LIN_Q_B, ly->q_b, ql, b->qa, n, b->q);
        } else {
            lin(m, l, MODEL_LIN_Q, ly->q, D, b->a, n, b->q);
        }
        /* latent KV: normalized c_kv | rotated k_pe, into the cache */
        lin(m, l, MODEL_LIN_KV_A, ly->kv_a, D, b->a, n, b->kv);
        ops_rmsnorm(o, b->kv, KD, ly->kv_a_norm, n, L, LATENT_EPS, b->kvn, KD);
        ops_rope(o, &m->rope, bt->pos, n, 1, b->kv + L, KD, 0, b->kvn + L, KD, 0);
    }
    ops_kv_store(o, kv, l, bt, b->kvn);
    /* the absorbed part in passes of at most att_rows tokens (every token's KV row is stored) */
    for (int t0 = 0; t0 < n; t0 += step) {
        const int nc = n - t0 < step ? n - t0 : step;
        const struct model_batch sb = sub_batch(bt, t0, nc);
        const float *q = b->q + (size_t)t0 * H * QD;
        /* absorbed query: q~ = W_UK^T q_nope | rope(q_pe) */
        ops_head_matmul(o, ly->wkvb, 0, (int64_t)(m->NOPE + m->V) * L, m->NOPE, L, 1, nc, H, q,
                        H * QD, QD, b->qabs, H * KD, KD);
        if (!rope_early)
            ops_rope(o, &m->rope, sb.pos, nc, H, q + m->NOPE, H * QD, QD, b->qabs + L, H * KD, KD);
        ops_mla_attn(o, kv, l, &sb, H, L, m->tau, b->qabs, b->att);
        /* W_UV o~ per head */
        ops_head_matmul(o, ly->wkvb, (int64_t)m->NOPE * L, (int64_t)(m->NOPE + m->V) * L, m->V, L,
                        0, nc, H, b->att, H * L, L, b->ov + (size_t)t0 * H * m->V, H * m->V, m->V);
    }
    lin(m, l, MODEL_LIN_O, ly->o, H * m->V, b->ov, n, b->tmp);
    ops_add(o, b->h, b->tmp, (int64_t)n * D);
}

/* down(silu(gate x) * up x) into out [n, D], for the dense FFN and the shared experts: in passes
 * of as many tokens as the gate / up buffers hold at this width (all n for the shared experts,
 * FFN_CHUNK or more for the dense FFN). The hook sees each linear's whole input once, as if in one
 * pass (down's input is gathered on the host pass by pass). */
static void mlp(struct model *m, int l, const struct layer *ly, const float *x, int n, float *out)
{
    const struct wt_hparams *hp = &m->hp;
    struct ops *o = m->ops;
    const int D = hp->hidden;
    const int64_t I = ly->moe ? (int64_t)hp->n_shared * hp->moe_inter : hp->inter;
    /* fused gate|up: its [nc][2I] output in g, SwiGLU into u */
    const int64_t fit = m->ffn_cap / (ly->gate_up ? 2 * I : I);
    const int step = pass_tokens(n, fit < n ? (int)fit : n);
    int hooked = m->lin_fn != NULL;
    hook(m, l, MODEL_LIN_GATE, D, x, n);
    hook(m, l, MODEL_LIN_UP, D, x, n);
    for (int t0 = 0; t0 < n; t0 += step) {
        const int nc = n - t0 < step ? n - t0 : step;
        float *h = m->b.g;
        if (ly->gate_up) {
            ops_linear(o, ly->gate_up, x + (size_t)t0 * D, nc, m->b.g);
            ops_swiglu_gu(o, m->b.g, nc, (int)I, m->b.u, ly->down);
            h = m->b.u;
        } else {
            ops_linear(o, ly->gate, x + (size_t)t0 * D, nc, m->b.g);
            ops_linear(o, ly->up, x + (size_t)t0 * D, nc, m->b.u);
            ops_swiglu(o, m->b.g, m->b.u, (int64_t)nc * I, m->b.g);
        }
        if (hooked) hooked = hook_rows(m, h, t0, nc, n, (int)I);
        ops_linear(o, ly->down, h, nc, out + (size_t)t0 * D);
    }
    if (hooked) m->lin_fn(m->lin_ud, l, MODEL_LIN_DOWN, n, (int)I, m->lin_host);
}

/* ds: the stream's deferred part; layer l defers when deferral is on and it is not the last */
static void ffn(struct model *m, int l, int n, struct dstate *ds)
{
    struct ops *o = m->ops;
    struct bufs *b = &m->b;
    const struct layer *ly = &m->layers[l];
    const int D = m->hp.hidden;
    /* the first FP8 linear on the normalized input: the dense / shared gate (the router is
     * W16A32) */
    const struct ops_lin *first = ly->gate_up ? ly->gate_up : ly->gate;
    ops_rmsnorm_lin(o, b->h, D, ly->ffn_norm, n, D, m->hp.rms_eps, b->a, D, first);
    if (!ly->moe) {
        mlp(m, l, ly, b->a, n, b->tmp);
        ops_add(o, b->h, b->tmp, (int64_t)n * D);
        return;
    }
    lin(m, l, MODEL_LIN_ROUTER, ly->router, D, b->a, n, b->rl);
    ops_router(o, &m->router, b->rl, ly->router_bias, n, b->rid, b->rw);
    if (m->route_fn) {
        ops_download(o, m->route_host, b->rid, (size_t)n * m->hp.top_k * sizeof(int32_t));
        m->route_fn(m->route_ud, l, n, m->route_host, m->hp.top_k);
    }
    if (m->defer > 0 && l < m->hp.n_layers - 1) {
        ops_moe_defer(o, ly->experts, b->a, n, b->rid, b->rw, m->hp.top_k, m->defer, b->ro,
                      ds->buf);
        ds->pending = 1;
    } else {
        ops_moe(o, ly->experts, b->a, n, b->rid, b->rw, m->hp.top_k, b->ro);
    }
    if (ly->gate || ly->gate_up) {
        mlp(m, l, ly, b->a, n, b->tmp);
        ops_add(o, b->ro, b->tmp, (int64_t)n * D);
    }
    ops_add(o, b->h, b->ro, (int64_t)n * D);
}

/* Layers [l0, l1) of batch bt on the residual stream h (the forward's own b->h, or a pass's)
 * with its deferred part ds: the layer code works on b->h, so it is pointed at h for the
 * duration. A part deferred by layer l - 1 enters h after layer l's attention. */
static void run_layers(struct model *m, float *h, struct dstate *ds, int l0, int l1,
                       const struct model_kv *kv, const struct model_batch *bt)
{
    float *keep = m->b.h;
    m->b.h = h;
    for (int l = l0; l < l1; l++) {
        resid_hook(m, h, l, bt->n_tokens, MODEL_LIN_RESID);
        attention(m, l, kv, bt);
        if (ds->pending) {
            ops_add(m->ops, h, ds->buf, (int64_t)bt->n_tokens * m->hp.hidden);
            ds->pending = 0;
            resid_hook(m, h, l, bt->n_tokens, MODEL_LIN_RESID_DEFER);
        }
        ffn(m, l, bt->n_tokens, ds);
    }
    m->b.h = keep;
}

/* Final norm and lm_head of the rows bt->logits_idx of h, into logits (host). */
static void head(struct model *m, const float *h, const struct model_batch *bt, float *logits)
{
    struct ops *o = m->ops;
    struct bufs *b = &m->b;
    const int D = m->hp.hidden, V = m->hp.vocab_size;
    int hooked = m->lin_fn != NULL;
    for (int i0 = 0; i0 < bt->n_logits; i0 += LOGIT_ROWS) {
        int nr = bt->n_logits - i0 < LOGIT_ROWS ? bt->n_logits - i0 : LOGIT_ROWS;
        ops_gather(o, h, D, bt->logits_idx + i0, nr, b->fin);
        ops_rmsnorm(o, b->fin, D, m->out_norm, nr, D, m->hp.rms_eps, b->fin, D);
        if (hooked) hooked = hook_rows(m, b->fin, i0, nr, bt->n_logits, D);
        ops_linear(o, m->out, b->fin, nr, b->logits);
        ops_download(o, logits + (size_t)i0 * V, b->logits, (size_t)nr * V * sizeof(float));
    }
    /* the lm_head's input, one row per logits row */
    if (hooked) m->lin_fn(m->lin_ud, -1, MODEL_LIN_OUT, bt->n_logits, D, m->lin_host);
}

int model_forward(struct model *m, const struct model_kv *kv, const struct model_batch *bt,
                  float *logits, char *err)
{
    int rc = check_batch(m, kv, bt, err);
    if (rc) return rc;
    const int n = bt->n_tokens, L = m->hp.n_layers;
    ops_embed(m->ops, m->embed, bt->tokens, n, m->b.h);
    /* the layers, replayed from a CUDA graph where the backend has one for this shape (never
     * with test hooks: they download mid-forward; nor with expert deferral, not graphed yet, so a
     * graph captured without it is never replayed with it on); end asks again after a failed
     * capture */
    int hooked = m->lin_fn || m->route_fn || m->defer > 0;
    if (hooked || !ops_graph_begin(m->ops, kv, bt, &m->rope, m->b.h)) {
        do {
            m->fwd_d.pending = 0;
            run_layers(m, m->b.h, &m->fwd_d, 0, L, kv, bt);
        } while (!hooked && ops_graph_end(m->ops));
    }
    resid_hook(m, m->b.h, L, n, MODEL_LIN_RESID);
    head(m, m->b.h, bt, logits);
    return ops_error(m->ops, err);
}

int model_pass_begin(struct model *m, const struct model_kv *kv, const struct model_batch *bt,
                     char *err)
{
    if (m->pass.b) return err_set(err, ERR_INVAL, "model: a layered pass is already running");
    int rc = check_batch(m, kv, bt, err);
    if (rc) return rc;
    if (!m->pass.h &&
        !(m->pass.h = ops_alloc(m->ops, (size_t)m->max_tokens * m->hp.hidden * sizeof(float))))
        return err_set(err, ERR_NOMEM, "model: out of memory for a layered pass's buffer");
    if (m->defer > 0 && !m->pass.d.buf &&
        !(m->pass.d.buf = ops_alloc(m->ops, (size_t)m->max_tokens * m->hp.hidden * sizeof(float))))
        return err_set(err, ERR_NOMEM, "model: out of memory for a layered pass's buffer");
    m->pass.d.pending = 0;
    ops_embed(m->ops, m->embed, bt->tokens, bt->n_tokens, m->pass.h);
    if ((rc = ops_error(m->ops, err)) != 0) return rc;
    m->pass.kv = kv;
    m->pass.b = bt;
    m->pass.next = 0;
    return 0;
}

int model_pass_run(struct model *m, int n_layers, int *left, char *err)
{
    if (!m->pass.b) return err_set(err, ERR_INVAL, "model: no layered pass is running");
    int l1 = m->pass.next + (n_layers > 0 ? n_layers : 1);
    if (l1 > m->hp.n_layers) l1 = m->hp.n_layers;
    run_layers(m, m->pass.h, &m->pass.d, m->pass.next, l1, m->pass.kv, m->pass.b);
    m->pass.next = l1;
    *left = m->hp.n_layers - l1;
    int rc = ops_error(m->ops, err);
    if (rc) m->pass.b = NULL;
    return rc;
}

int model_pass_finish(struct model *m, float *logits, char *err)
{
    const struct model_batch *bt = m->pass.b;
    if (!bt || m->pass.next < m->hp.n_layers)
        return err_set(err, ERR_INVAL, "model: the layered pass has layers left");
    m->pass.b = NULL;
    resid_hook(m, m->pass.h, m->hp.n_layers, bt->n_tokens, MODEL_LIN_RESID);
    head(m, m->pass.h, bt, logits);
    return ops_error(m->ops, err);
}

void model_pass_abort(struct model *m) { m->pass.b = NULL; }
