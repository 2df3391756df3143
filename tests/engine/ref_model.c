/* ref_model.c - the naive float64 reference forward (see ref_model.h).
 *
 * What: the forward of docs/model.md written as plainly as possible in double: every weight decoded
 * to a double matrix at create time, one token per step, naive MLA (k_h = [W_UK^h c ; k_pe],
 * v_h = W_UV^h c per head and per cached position, softmax over scores in double), fp64 router,
 * experts, norms and residual stream.
 * Quantization points emulated (the fast path's contract, docs/numerics.md):
 *   - FP8 linears: the input rounded to fp32, then per 128 channels s = max(amax, 1e-4) / 448
 *     (fp32) and q = e4m3(x / s); the product uses q * s against the exact weights. A model with
 *     quantization_config.scale_fmt "ue8m0" (hparams fp8_ue8m0) rounds s up to a power of two
 *     first, here as ldexp(1, ceil(log2 s)) in double (the fast path works on the float's bits).
 *   - GGML weights (routed experts, or any GGML-typed linear): the input quantized to the type's
 *     vec_dot_type with the scalar quantizer and dequantized back, then an exact double dot.
 *     BF16/F16 routed experts likewise (their vec_dot_type rounds the activations); BF16/F16/F32
 *     non-expert linears (router, lm_head, ...) take unrounded activations.
 *   - the latent cache: normalized c_kv and rotated k_pe rounded to bf16 before use.
 * Everything else has no rounding beyond double.
 * Independence: nothing here calls engine/model or a fast kernel; weights come from the weights
 * index (wt_get / wt_expert) and are decoded with fpconv.h and the scalar reference table.
 * Threads: single-threaded.
 */
#include "tests/engine/ref_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "engine/model/model.h"
#include "engine/weights/weights.h"
#include "kernels/cpu/cpuq.h"
#include "kernels/cpu/fpconv.h"

enum act { ACT_NONE, ACT_FP8, ACT_VDT };

/* Distance from a rounding boundary, relative to the largest magnitude of the quantized block
 * (or cache row), under which the reference treats a rounding as a near-tie: the fast path's fp32
 * values differ from these fp64 ones by ~1e-7..1e-5 of the block max. */
#define TIE_REL 2e-5f

struct rmat {
    int rows, cols;
    double *w; /* [rows][cols] exact decoded weights */
    enum act act;
    int vdt; /* ACT_VDT: the activation type */
};

struct rlayer {
    double *attn_norm, *ffn_norm, *q_a_norm, *kv_a_norm;
    struct rmat q_a, q_b, q, kv_a, kv_b, o;
    int moe;
    struct rmat gate, up, down; /* dense or shared */
    struct rmat router;
    double *bias;
    struct rmat *eg, *eu, *ed; /* [n_routed] */
    /* naive cache: per position, per head K (nope + rope) and V */
    double *K, *V;
};

struct ref_model {
    struct wt_hparams hp;
    const struct cpuq_ops *sq; /* scalar table: dequantizers and activation quantizers */
    int max_ctx, n_pos;
    int H, L, R, NOPE, VD;
    double tau, amp;
    double freq[64];
    double *embed; /* [V][D] */
    struct rmat out;
    double *out_norm;
    struct rlayer *layers;
    double min_margin;
    ref_route_hint_fn hint;
    void *hint_ud;
    double hint_tol;
    int hints_taken, hints_refused;
    ref_act_hint_fn act_hint;
    void *act_ud;
    int act_ties, act_ties_hinted, vdt_hinted, moe_ties, moe_ties_flipped;
    int cur_layer;
    int exact;
    double resync_gate, max_layer_err;
    int resyncs;
    ref_kv_hint_fn kv_hint;
    void *kv_ud;
    int kv_ties, kv_ties_hinted;
    uint16_t *hrow;
    float *hx; /* hinted input */
    /* scratch */
    double *x, *a, *t1, *t2, *t3, *t4, *qv, *kv, *att, *sc, *ffo;
    float *fq;
    /* expert deferral (ref_set_defer) */
    int defer;
    double *dfr;       /* the deferred experts' part of the layer before */
    int dfr_pending;   /* dfr not yet added to x */
    struct rtie *ptie; /* [MAX_TIES]: the deferred experts' near-ties, resolved one layer on */
    int n_ptie;
    double min_defer_margin;
    int defer_ties, defer_ties_swapped;
    double *slots; /* [top_k][hidden]: each routed slot's weighted output */
    void *qbuf;
};

/* ---------------------------------------------------------------- decoding */

static int decode_rows(const struct ref_model *r, int type, const void *data, size_t row_bytes,
                       const float *scale, int64_t rows, int64_t cols, double *out, char *err)
{
    float *tmp = malloc((size_t)cols * sizeof(float));
    if (!tmp) return err_set(err, ERR_NOMEM, "ref: out of memory");
    int64_t sc_cols = (cols + 127) / 128;
    for (int64_t i = 0; i < rows; i++) {
        const uint8_t *row = (const uint8_t *)data + (size_t)i * row_bytes;
        double *o = out + (size_t)i * cols;
        switch (type) {
        case QTYPE_F8_E4M3:
            for (int64_t c = 0; c < cols; c++)
                o[c] =
                    (double)fp_e4m3_to_f32(row[c]) * (double)scale[(i / 128) * sc_cols + c / 128];
            break;
        case QTYPE_BF16:
            for (int64_t c = 0; c < cols; c++) {
                uint16_t h;
                memcpy(&h, row + 2 * c, 2);
                o[c] = fp_bf16_to_f32(h);
            }
            break;
        case QTYPE_F16:
            for (int64_t c = 0; c < cols; c++) {
                uint16_t h;
                memcpy(&h, row + 2 * c, 2);
                o[c] = fp_f16_to_f32(h);
            }
            break;
        case QTYPE_F32:
            for (int64_t c = 0; c < cols; c++) {
                float f;
                memcpy(&f, row + 4 * c, 4);
                o[c] = f;
            }
            break;
        default:
            if (type < 0 || type >= QTYPE_COUNT_ || !r->sq->type[type].to_float) {
                free(tmp);
                return err_set(err, ERR_UNSUPPORTED, "ref: cannot decode type %s",
                               qtype_name(type));
            }
            r->sq->type[type].to_float(row, tmp, cols);
            for (int64_t c = 0; c < cols; c++) o[c] = tmp[c];
        }
    }
    free(tmp);
    return 0;
}

static int mat_from_view(const struct ref_model *r, const struct wt_view *v, int expert,
                         struct rmat *m, char *err)
{
    m->rows = (int)v->rows;
    m->cols = (int)v->cols;
    m->w = malloc((size_t)v->rows * v->cols * sizeof(double));
    if (!m->w) return err_set(err, ERR_NOMEM, "ref: out of memory");
    if (v->type == QTYPE_F8_E4M3) {
        m->act = ACT_FP8;
    } else if (v->type == QTYPE_F32 || v->type == QTYPE_BF16 || v->type == QTYPE_F16) {
        m->act = expert ? ACT_VDT : ACT_NONE;
        m->vdt = v->type;
    } else {
        m->act = ACT_VDT;
        m->vdt = r->sq->type[v->type].vec_dot_type;
    }
    return decode_rows(r, v->type, v->data, v->row_bytes, v->scale, v->rows, v->cols, m->w, err);
}

static int get_mat(const struct ref_model *r, const struct wt_model *w, const char *name,
                   struct rmat *m, char *err)
{
    const struct wt_tensor *t = wt_get(w, name);
    if (!t || t->ndim != 2) return err_set(err, ERR_FORMAT, "ref: missing 2-D tensor %s", name);
    int ok = 1;
    struct wt_view v = {.type = t->type,
                        .rows = t->shape[0],
                        .cols = t->shape[1],
                        .data = t->data,
                        .row_bytes = qtype_row_bytes(t->type, t->shape[1], &ok),
                        .scale = t->scale ? t->scale->data : NULL};
    if (!ok) return err_set(err, ERR_FORMAT, "ref: %s: bad row size", name);
    return mat_from_view(r, &v, 0, m, err);
}

/* kv_b [H * (nope + v), L] of layer l; from llama.cpp's split attn_k_b [H, L, nope] (W_UK
 * transposed) and attn_v_b [H, v, L] when the file has no attn_kv_b */
static int get_kv_b(const struct ref_model *r, const struct wt_model *w, int l, struct rmat *m,
                    char *err)
{
    char nm[WT_NAME_LEN];
    snprintf(nm, sizeof nm, "blk.%d.attn_kv_b.weight", l);
    if (wt_get(w, nm)) return get_mat(r, w, nm, m, err);
    const struct wt_tensor *kb = wt_getf(w, "blk.%d.attn_k_b.weight", l);
    const struct wt_tensor *vb = wt_getf(w, "blk.%d.attn_v_b.weight", l);
    int H = r->H, L = r->L, N = r->NOPE, VD = r->VD, ok = 1;
    /* [H, a, b], or stored flat as [H * a, b]; not FP8 (no per-head scales) */
    if (!kb || !vb || kb->ndim < 2 || vb->ndim < 2 || kb->ndim > 3 || vb->ndim > 3 ||
        kb->type == QTYPE_F8_E4M3 || vb->type == QTYPE_F8_E4M3 || kb->shape[kb->ndim - 1] != N ||
        vb->shape[vb->ndim - 1] != L ||
        kb->nbytes < qtype_row_bytes(kb->type, N, &ok) * (size_t)H * L ||
        vb->nbytes < qtype_row_bytes(vb->type, L, &ok) * (size_t)H * VD ||
        kb->shape[0] * (kb->ndim == 3 ? kb->shape[1] : 1) != (int64_t)H * L ||
        vb->shape[0] * (vb->ndim == 3 ? vb->shape[1] : 1) != (int64_t)H * VD)
        return err_set(err, ERR_FORMAT,
                       "ref: layer %d: no attn_kv_b and no [%d,%d,%d] k_b + "
                       "[%d,%d,%d] v_b",
                       l, H, L, N, H, VD, L);
    double *k = malloc(sizeof *k * (size_t)H * L * N), *v = malloc(sizeof *v * (size_t)H * VD * L);
    m->rows = H * (N + VD);
    m->cols = L;
    m->act = ACT_NONE;
    m->w = malloc(sizeof *m->w * (size_t)m->rows * L);
    int rc = (!k || !v || !m->w) ? err_set(err, ERR_NOMEM, "ref: out of memory") : 0;
    if (!rc)
        rc = decode_rows(r, kb->type, kb->data, qtype_row_bytes(kb->type, N, &ok), NULL,
                         (int64_t)H * L, N, k, err);
    if (!rc)
        rc = decode_rows(r, vb->type, vb->data, qtype_row_bytes(vb->type, L, &ok), NULL,
                         (int64_t)H * VD, L, v, err);
    for (int h = 0; !rc && h < H; h++)
        for (int i = 0; i < N + VD; i++)
            for (int c = 0; c < L; c++)
                m->w[((size_t)h * (N + VD) + i) * L + c] =
                    i < N ? k[((size_t)h * L + c) * N + i] : v[((size_t)h * VD + i - N) * L + c];
    free(k);
    free(v);
    return rc;
}

static int get_vec(const struct ref_model *r, const struct wt_model *w, const char *name, int n,
                   int optional, double **out, char *err)
{
    const struct wt_tensor *t = wt_get(w, name);
    *out = NULL;
    if (!t) return optional ? 0 : err_set(err, ERR_FORMAT, "ref: missing tensor %s", name);
    int ok = 1;
    *out = malloc((size_t)n * sizeof(double));
    if (!*out) return err_set(err, ERR_NOMEM, "ref: out of memory");
    return decode_rows(r, t->type, t->data, qtype_row_bytes(t->type, n, &ok), NULL, 1, n, *out,
                       err);
}

/* ---------------------------------------------------------------- math */

/* The fp32 value the contract quantizes: x / s rounded to float. */
static float fp8_ratio(float x, float s) { return (float)((double)x / s); }

/* An e4m3 rounding of v = x / s (|v| <= 448 at the block max) that a perturbation of TIE_REL of
 * the block max could change. */
static int e4m3_near_tie(float v)
{
    const float band = 448.0f * TIE_REL;
    uint8_t q = fp_f32_to_e4m3(v);
    return fp_f32_to_e4m3(v + band) != q || fp_f32_to_e4m3(v - band) != q;
}

/* The scale of a block with largest magnitude amax: max(amax, 1e-4) / 448 in fp32, in the ue8m0
 * mode rounded up to a power of two (computed independently of the fast path's bit trick). */
static float fp8_scale(const struct ref_model *r, float amax)
{
    float s = (amax > 1e-4f ? amax : 1e-4f) / 448.0f;
    return r->hp.fp8_ue8m0 ? (float)ldexp(1.0, (int)ceil(log2((double)s))) : s;
}

/* ue8m0: is the exact scale s within TIE_REL of a power of two, where a perturbation of the
 * block max could double or halve the rounded scale? */
static int ue8m0_near_tie(float amax)
{
    double s = (amax > 1e-4f ? amax : 1e-4f) / 448.0f, p = ldexp(1.0, (int)lround(log2(s)));
    return fabs(s / p - 1.0) < TIE_REL;
}

/* The activation the kernels see for a weight of this matrix; which: enum model_lin of the
 * fast path (-1: no hint, e.g. routed experts). */
static void act_emulate(struct ref_model *r, const struct rmat *m, int which, const double *x,
                        double *xq)
{
    int n = m->cols;
    if (m->act == ACT_NONE || (r->exact & 1) || (m->act == ACT_VDT && (r->exact & 4)) ||
        (m->act == ACT_FP8 && (r->exact & 8))) {
        memcpy(xq, x, (size_t)n * sizeof(double));
        return;
    }
    for (int i = 0; i < n; i++) r->fq[i] = (float)x[i];
    if (getenv("REF_DEBUG") && which >= 0 && r->act_hint &&
        r->act_hint(r->act_ud, r->cur_layer, which, r->n_pos - 1, r->hx, n)) {
        double d = 0, nx = 0;
        for (int i = 0; i < n; i++) {
            d = fmax(d, fabs(r->fq[i] - r->hx[i]));
            nx = fmax(nx, fabs(r->fq[i]));
        }
        if (d / nx > 1e-5)
            fprintf(stderr, "ref: pos %d layer %d lin %d: input differs by %.3g (rel to max)\n",
                    r->n_pos - 1, r->cur_layer, which, d / nx);
    }
    if (m->act == ACT_FP8) {
        int hinted = -1; /* -1: not asked yet, 0: none, 1: r->hx holds the other input */
        for (int b0 = 0; b0 < n; b0 += 128) {
            int b1 = b0 + 128 < n ? b0 + 128 : n;
            float amax = 0.0f;
            for (int i = b0; i < b1; i++) amax = fabsf(r->fq[i]) > amax ? fabsf(r->fq[i]) : amax;
            float s = fp8_scale(r, amax);
            if (r->hp.fp8_ue8m0 && ue8m0_near_tie(amax)) {
                /* the power-of-two scale of a block max near a boundary: the other one's, if it
                 * is one of the two candidates (the same rule as the e4m3 ties below) */
                r->act_ties++;
                if (hinted < 0)
                    hinted = which >= 0 && r->act_hint &&
                             r->act_hint(r->act_ud, r->cur_layer, which, r->n_pos - 1, r->hx, n);
                if (hinted > 0) {
                    float am2 = 0.0f;
                    for (int j = b0; j < b1; j++)
                        am2 = fabsf(r->hx[j]) > am2 ? fabsf(r->hx[j]) : am2;
                    float s2 = fp8_scale(r, am2);
                    if (s2 == s * 2.0f || s2 == s * 0.5f) {
                        s = s2;
                        r->act_ties_hinted++;
                    }
                }
            }
            for (int i = b0; i < b1; i++) {
                float v = fp8_ratio(r->fq[i], s);
                uint8_t q = fp_f32_to_e4m3(v);
                if (e4m3_near_tie(v)) {
                    r->act_ties++;
                    if (hinted < 0)
                        hinted =
                            which >= 0 && r->act_hint &&
                            r->act_hint(r->act_ud, r->cur_layer, which, r->n_pos - 1, r->hx, n);
                    if (hinted > 0) {
                        float am2 = 0.0f;
                        for (int j = b0; j < b1; j++)
                            am2 = fabsf(r->hx[j]) > am2 ? fabsf(r->hx[j]) : am2;
                        float s2 = fp8_scale(r, am2);
                        uint8_t q2 = fp_f32_to_e4m3(fp8_ratio(r->hx[i], s2));
                        /* only a neighbour of our own value: the other rounding of this tie
                         * (ue8m0: under the same power-of-two scale) */
                        if ((!r->hp.fp8_ue8m0 || s2 == s) &&
                            (q2 == fp_f32_to_e4m3(v + 448.0f * TIE_REL) ||
                             q2 == fp_f32_to_e4m3(v - 448.0f * TIE_REL))) {
                            q = q2;
                            r->act_ties_hinted++;
                        }
                    }
                }
                xq[i] = (double)fp_e4m3_to_f32(q) * s;
            }
        }
        return;
    }
    /* GGML activation types: if the other implementation's input of this linear is known and
     * agrees with ours to within TIE_REL of the largest magnitude, quantize that one, so the two
     * make the same rounding decisions (each element is then a potential near-tie) */
    if (which >= 0 && r->act_hint &&
        r->act_hint(r->act_ud, r->cur_layer, which, r->n_pos - 1, r->hx, n)) {
        float mx = 0, d = 0;
        for (int i = 0; i < n; i++) {
            mx = fmaxf(mx, fabsf(r->fq[i]));
            d = fmaxf(d, fabsf(r->fq[i] - r->hx[i]));
        }
        if (d <= mx * TIE_REL) {
            memcpy(r->fq, r->hx, (size_t)n * sizeof(float));
            r->vdt_hinted++;
        }
    }
    r->sq->type[m->vdt].from_float(r->fq, r->qbuf, n);
    r->sq->type[m->vdt].to_float(r->qbuf, r->fq, n);
    for (int i = 0; i < n; i++) xq[i] = r->fq[i];
}

/* y = W x (with the activation emulation of W); x and y must not overlap */
static void matvec(struct ref_model *r, const struct rmat *m, int which, const double *x, double *y)
{
    double *xq = r->t4;
    act_emulate(r, m, which, x, xq);
    for (int i = 0; i < m->rows; i++) {
        const double *w = m->w + (size_t)i * m->cols;
        double s = 0;
        for (int c = 0; c < m->cols; c++) s += w[c] * xq[c];
        y[i] = s;
    }
}

static void rmsnorm(const double *x, const double *g, int n, double eps, double *y)
{
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double k = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) y[i] = x[i] * k * g[i];
}

static void rope(const struct ref_model *r, double *v, int pos)
{
    for (int i = 0; i < r->R / 2; i++) {
        double ang = pos * r->freq[i], c = cos(ang) * r->amp, s = sin(ang) * r->amp;
        double a = v[2 * i], b = v[2 * i + 1];
        v[2 * i] = a * c - b * s;
        v[2 * i + 1] = a * s + b * c;
    }
}

/* Round the cache row (n values) to bf16 as stored; near-ties (within TIE_REL of the row's
 * largest magnitude from a rounding boundary) take the hinted stored value. */
static void cache_round(struct ref_model *r, int pos, double *v, int off, int n)
{
    int asked = 0, have = 0;
    if (r->exact & 2) return;
    double mx = 0;
    for (int i = 0; i < n; i++) mx = fmax(mx, fabs(v[i]));
    float band = (float)(mx * TIE_REL);
    for (int i = 0; i < n; i++) {
        float f = (float)v[i];
        uint16_t b = fp_f32_to_bf16(f);
        if (fp_f32_to_bf16(f + band) != b || fp_f32_to_bf16(f - band) != b) {
            r->kv_ties++;
            if (!asked) {
                asked = 1;
                have = r->kv_hint && r->kv_hint(r->kv_ud, r->cur_layer, pos, r->hrow);
            }
            if (have && (r->hrow[off + i] == fp_f32_to_bf16(f + band) ||
                         r->hrow[off + i] == fp_f32_to_bf16(f - band))) {
                b = r->hrow[off + i]; /* the other rounding of this tie, nothing else */
                r->kv_ties_hinted++;
            }
        }
        v[i] = fp_bf16_to_f32(b);
    }
}

static double silu(double x) { return x / (1.0 + exp(-x)); }

/* FFN down(silu(gate x) * up x) */
/* hinted: 1 = dense / shared FFN (its linears are observable), 0 = a routed expert (its input
 * is the router's input; its intermediate is not observable) */
static void mlp(struct ref_model *r, const struct rmat *g, const struct rmat *u,
                const struct rmat *d, int hinted, const double *x, double *y)
{
    double *gv = r->t1, *uv = r->t2;
    matvec(r, g, hinted ? MODEL_LIN_GATE : MODEL_LIN_ROUTER, x, gv);
    matvec(r, u, hinted ? MODEL_LIN_UP : MODEL_LIN_ROUTER, x, uv);
    for (int i = 0; i < g->rows; i++) gv[i] = silu(gv[i]) * uv[i];
    matvec(r, d, hinted ? MODEL_LIN_DOWN : -1, gv, y);
}

/* ---------------------------------------------------------------- router */

static void route(struct ref_model *r, const struct rlayer *ly, int layer, int pos, const double *x,
                  int *ids, double *wts)
{
    const struct wt_hparams *hp = &r->hp;
    const int E = hp->n_routed, K = hp->top_k;
    double *s = r->sc, *b = r->sc + E, *b0 = r->sc + 2 * E, lg[1024];
    int ng = hp->n_group > 0 ? hp->n_group : 1, tg = hp->topk_group > 0 ? hp->topk_group : 1;
    int keep[1024];
    double glast = 0;
    for (int g = 0; g < ng; g++) keep[g] = 1;
    matvec(r, &ly->router, MODEL_LIN_ROUTER, x, b);
    if (hp->scoring == WT_SCORE_SOFTMAX) {
        double mx = b[0], sum = 0;
        for (int e = 1; e < E; e++) mx = b[e] > mx ? b[e] : mx;
        for (int e = 0; e < E; e++) sum += (s[e] = exp(b[e] - mx));
        for (int e = 0; e < E; e++) b[e] = (s[e] /= sum);
    } else {
        for (int e = 0; e < E; e++) {
            s[e] = 1.0 / (1.0 + exp(-b[e]));
            b[e] = s[e] + (ly->bias ? ly->bias[e] : 0.0);
        }
    }
    memcpy(b0, b, (size_t)E * sizeof(double));
    if (ng > 1) {
        int gsz = E / ng;
        for (int g = 0; g < ng; g++) {
            double m1 = -INFINITY, m2 = -INFINITY;
            for (int e = g * gsz; e < (g + 1) * gsz; e++) {
                if (b[e] > m1) {
                    m2 = m1;
                    m1 = b[e];
                } else if (b[e] > m2) {
                    m2 = b[e];
                }
            }
            lg[g] = hp->scoring == WT_SCORE_SOFTMAX ? m1 : m1 + (gsz > 1 ? m2 : 0.0);
        }
        double last = 0;
        for (int g = 0; g < ng; g++) keep[g] = 0;
        for (int k = 0; k < tg; k++) {
            int best = -1;
            for (int g = 0; g < ng; g++)
                if (!keep[g] && (best < 0 || lg[g] > lg[best])) best = g;
            keep[best] = 1;
            last = lg[best];
        }
        glast = last;
        double next = -INFINITY;
        for (int g = 0; g < ng; g++) {
            if (keep[g]) continue;
            next = lg[g] > next ? lg[g] : next;
            for (int e = g * gsz; e < (g + 1) * gsz; e++) b[e] = -INFINITY;
        }
        if (tg < ng && last - next < r->min_margin) r->min_margin = last - next;
        if (getenv("REF_DEBUG") && tg < ng && last - next < 1e-3)
            fprintf(stderr, "ref: pos %d layer %d: group margin %.3g\n", pos, layer, last - next);
    }
    double sum = 0, last = 0;
    for (int k = 0; k < K; k++) {
        int best = -1;
        for (int e = 0; e < E; e++)
            if (b[e] > -INFINITY && (best < 0 || b[e] > b[best])) best = e;
        ids[k] = best;
        last = b[best];
        b[best] = -INFINITY;
        wts[k] = s[best];
        sum += s[best];
    }
    double next = -INFINITY;
    for (int e = 0; e < E; e++) next = b[e] > next ? b[e] : next;
    if (next > -INFINITY && last - next < r->min_margin) r->min_margin = last - next;
    if (getenv("REF_DEBUG") && next > -INFINITY && last - next < 1e-3)
        fprintf(stderr, "ref: pos %d layer %d: routing margin %.3g\n", pos, layer, last - next);
    int32_t hint[64];
    if (r->hint && r->hint(r->hint_ud, layer, pos, hint, K)) {
        /* adopt the other choice only if each differing expert is within tol of a tie */
        int differ = 0, ok = 1, gsz = E / ng;
        for (int k = 0; k < K && ok; k++) {
            int e = hint[k], mine = 0;
            if (e < 0 || e >= E) {
                ok = 0;
                break;
            }
            for (int j = 0; j < K; j++) mine |= ids[j] == e;
            for (int j = 0; j < k; j++) ok &= hint[j] != e;
            if (mine) continue;
            differ = 1;
            double d = last - b0[e];
            if (ng > 1 && !keep[e / gsz]) d = fmax(d, glast - lg[e / gsz]);
            if (d > r->hint_tol) ok = 0;
        }
        if (differ && ok) {
            r->hints_taken++;
            sum = 0;
            for (int k = 0; k < K; k++) {
                ids[k] = hint[k];
                wts[k] = s[hint[k]];
                sum += wts[k];
            }
        } else if (differ) {
            r->hints_refused++;
        }
    }
    double scale = hp->routed_scale > 0 ? hp->routed_scale : 1.0;
    for (int k = 0; k < K; k++) {
        if (hp->norm_topk_prob) wts[k] /= sum;
        wts[k] *= scale;
    }
}

/* ---------------------------------------------------------------- the step */

static void attention(struct ref_model *r, struct rlayer *ly, int pos)
{
    const struct wt_hparams *hp = &r->hp;
    const int H = r->H, L = r->L, R = r->R, N = r->NOPE, VD = r->VD, QD = N + R, D = hp->hidden;
    double *a = r->a, *q = r->qv, *kv = r->kv;
    rmsnorm(r->x, ly->attn_norm, D, hp->rms_eps, a);
    if (hp->q_lora_rank > 0) {
        matvec(r, &ly->q_a, MODEL_LIN_Q_A, a, r->t3);
        rmsnorm(r->t3, ly->q_a_norm, hp->q_lora_rank, 1e-6, r->t3);
        matvec(r, &ly->q_b, MODEL_LIN_Q_B, r->t3, q);
    } else {
        matvec(r, &ly->q, MODEL_LIN_Q, a, q);
    }
    matvec(r, &ly->kv_a, MODEL_LIN_KV_A, a, kv);
    /* the cached latent: normalized c_kv | rotated k_pe, stored in bf16 */
    double *c = r->t3;
    rmsnorm(kv, ly->kv_a_norm, L, 1e-6, c);
    cache_round(r, pos, c, 0, L);
    double *kpe = kv + L;
    rope(r, kpe, pos);
    cache_round(r, pos, kpe, L, R);
    /* materialize this position's per-head K and V from the cached latent */
    for (int h = 0; h < H; h++) {
        double *K = ly->K + ((size_t)pos * H + h) * QD, *Vv = ly->V + ((size_t)pos * H + h) * VD;
        const double *wk = ly->kv_b.w + (size_t)h * (N + VD) * L;
        const double *wv = wk + (size_t)N * L;
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int i = 0; i < L; i++) s += wk[(size_t)j * L + i] * c[i];
            K[j] = s;
        }
        for (int j = 0; j < R; j++) K[N + j] = kpe[j];
        for (int j = 0; j < VD; j++) {
            double s = 0;
            for (int i = 0; i < L; i++) s += wv[(size_t)j * L + i] * c[i];
            Vv[j] = s;
        }
    }
    /* per head: q = [q_nope ; rope(q_pe)], softmax over positions 0..pos */
    double *att = r->att, *sc = r->sc;
    for (int h = 0; h < H; h++) {
        double *qh = q + (size_t)h * QD;
        rope(r, qh + N, pos);
        double mx = -INFINITY;
        for (int t = 0; t <= pos; t++) {
            const double *K = ly->K + ((size_t)t * H + h) * QD;
            double s = 0;
            for (int j = 0; j < QD; j++) s += qh[j] * K[j];
            sc[t] = r->tau * s;
            mx = sc[t] > mx ? sc[t] : mx;
        }
        double sum = 0;
        for (int t = 0; t <= pos; t++) sum += (sc[t] = exp(sc[t] - mx));
        double *oh = att + (size_t)h * VD;
        for (int j = 0; j < VD; j++) oh[j] = 0;
        for (int t = 0; t <= pos; t++) {
            const double *Vv = ly->V + ((size_t)t * H + h) * VD;
            for (int j = 0; j < VD; j++) oh[j] += sc[t] / sum * Vv[j];
        }
    }
    matvec(r, &ly->o, MODEL_LIN_O, att, r->t3);
    for (int i = 0; i < D; i++) r->x[i] += r->t3[i];
}

/* Near-ties of the activation quantizers the routed experts' down projections use (Q8_0: d =
 * amax / 127, round half away; Q8_K: scale -127 / signed max, round half even, clamp 127): for
 * each element whose scaled value lies within TIE_REL (of the block max) of a .5 boundary, its
 * index and the dequantized value of the other rounding. xq: our own dequantized values. */
static int vdt_ties(int vdt, const float *x, const double *xq, int n, int *idx, double *alt,
                    int cap)
{
    int blk = vdt == QTYPE_Q8_0 ? 32 : vdt == QTYPE_Q8_K ? 256 : 0, cnt = 0;
    const double band = 127.0 * TIE_REL;
    for (int b0 = 0; blk && b0 + blk <= n; b0 += blk) {
        float amax = 0, smax = 0;
        for (int i = b0; i < b0 + blk; i++)
            if (fabsf(x[i]) > amax) {
                amax = fabsf(x[i]);
                smax = x[i];
            }
        if (amax == 0) continue;
        float mul, dq;
        if (vdt == QTYPE_Q8_0) {
            float d = amax / 127;
            mul = 1.0f / d;
            dq = fp_f16_to_f32(fp_f32_to_f16(d));
        } else {
            mul = -127.f / smax;
            dq = 1.0f / mul;
        }
        for (int i = b0; i < b0 + blk && cnt < cap; i++) {
            double v = (double)(mul * x[i]), lo = floor(v);
            if (fabs(v - lo - 0.5) >= band) continue;
            double own = round(xq[i] / dq), other = own == lo ? lo + 1 : lo;
            if (other > 127 || other < -128) continue;
            idx[cnt] = i;
            alt[cnt++] = other * dq;
        }
    }
    return cnt;
}

#define MAX_TIES 64

/* An unobservable near-tie of a routed expert's down-projection input: flipping it adds
 * w * d[:, i] * delta to the layer's output. */
struct rtie {
    const struct rmat *d;
    double w, delta;
    int i;
};

/* Expert deferral: which of the K slots are deferred (the nd smallest weights; equal weights, the
 * later slot first), by a stable sort of the slots. Returns the relative weight gap at the cut
 * (INFINITY when nothing is cut) and the two slots beside it: *lo the last deferred, *hi the
 * first immediate. */
static double defer_pick(const double *wts, int K, int nd, unsigned char *dfd, int *lo, int *hi)
{
    int ord[64];
    for (int k = 0; k < K; k++) ord[k] = k;
    for (int i = 1; i < K; i++) /* ascending weight; among equals the later slot first */
        for (int j = i; j > 0; j--) {
            int a = ord[j - 1], b = ord[j];
            if (wts[b] < wts[a] || (wts[b] == wts[a] && b > a)) {
                ord[j - 1] = b;
                ord[j] = a;
            } else {
                break;
            }
        }
    for (int k = 0; k < K; k++) dfd[k] = 0;
    for (int k = 0; k < nd; k++) dfd[ord[k]] = 1;
    if (nd <= 0 || nd >= K) return INFINITY;
    double mx = 0;
    for (int k = 0; k < K; k++) mx = fabs(wts[k]) > mx ? fabs(wts[k]) : mx;
    *lo = ord[nd - 1];
    *hi = ord[nd];
    return (wts[*hi] - wts[*lo]) / (mx > 0 ? mx : 1);
}

/* below this relative weight gap the fast path's fp32 weights may cut the other way */
#define DEFER_TIE 1e-5

static void ffn(struct ref_model *r, struct rlayer *ly, int layer, int pos)
{
    const struct wt_hparams *hp = &r->hp;
    const int D = hp->hidden;
    double *f = r->a, *y = r->ffo, *tmp = r->t3;
    struct rtie ties[MAX_TIES]; /* the immediate experts' unobservable near-ties */
    int nt = 0;
    rmsnorm(r->x, ly->ffn_norm, D, hp->rms_eps, f);
    if (!ly->moe) {
        mlp(r, &ly->gate, &ly->up, &ly->down, 1, f, y);
    } else {
        const int K = hp->top_k;
        int ids[64], slot_of[MAX_TIES];
        double wts[64];
        unsigned char dfd[64];
        struct rtie st[MAX_TIES]; /* the experts' own near-ties, by slot (slot_of) */
        int ns = 0;
        route(r, ly, layer, pos, f, ids, wts);
        /* each slot's weighted output, summed into its part once the cut is known */
        double *c = r->slots;
        for (int k = 0; k < K; k++) {
            const struct rmat *g = &ly->eg[ids[k]], *u = &ly->eu[ids[k]], *d = &ly->ed[ids[k]];
            double *gv = r->t1, *uv = r->t2, *xq = r->t4, *ck = c + (size_t)k * D;
            matvec(r, g, MODEL_LIN_ROUTER, f, gv); /* the experts' input is the router's */
            matvec(r, u, MODEL_LIN_ROUTER, f, uv);
            for (int i = 0; i < g->rows; i++) gv[i] = silu(gv[i]) * uv[i];
            act_emulate(r, d, -1, gv, xq);
            for (int i = 0; i < d->cols; i++) r->fq[i] = (float)gv[i];
            if (d->act == ACT_VDT && ns < MAX_TIES) {
                int idx[MAX_TIES];
                double alt[MAX_TIES];
                int cn = vdt_ties(d->vdt, r->fq, xq, d->cols, idx, alt, MAX_TIES - ns);
                for (int j = 0; j < cn; j++, ns++) {
                    st[ns] = (struct rtie){
                        .d = d, .w = wts[k], .delta = alt[j] - xq[idx[j]], .i = idx[j]};
                    slot_of[ns] = k;
                }
            }
            for (int i = 0; i < d->rows; i++) {
                const double *w = d->w + (size_t)i * d->cols;
                double acc = 0;
                for (int cc = 0; cc < d->cols; cc++) acc += w[cc] * xq[cc];
                ck[i] = wts[k] * acc;
            }
        }
        double *sh = tmp; /* shared experts */
        if (ly->gate.w) mlp(r, &ly->gate, &ly->up, &ly->down, 1, f, sh);
        const int nd = r->defer > 0 && layer < hp->n_layers - 1 ? r->defer : 0;
        int lo = 0, hi = 0;
        double gap = defer_pick(wts, K, nd, dfd, &lo, &hi);
        if (gap < r->min_defer_margin) r->min_defer_margin = gap;
        /* A near-tie at the cut: the two choices differ by a whole expert's output, so the fast
         * path's residual after this layer tells which one it made. */
        if (gap < DEFER_TIE && r->act_hint &&
            r->act_hint(r->act_ud, layer + 1, MODEL_LIN_RESID, pos, r->hx, D)) {
            double own = 0, swap = 0;
            for (int i = 0; i < D; i++) {
                double yi = ly->gate.w ? sh[i] : 0;
                for (int k = 0; k < K; k++)
                    if (!dfd[k]) yi += c[(size_t)k * D + i];
                double t = r->hx[i] - (r->x[i] + yi),
                       dsw = c[(size_t)lo * D + i] - c[(size_t)hi * D + i];
                own += t * t;
                swap += (t - dsw) * (t - dsw);
            }
            r->defer_ties++;
            if (swap < own) {
                dfd[lo] = 0;
                dfd[hi] = 1;
                r->defer_ties_swapped++;
            }
        }
        for (int i = 0; i < D; i++) y[i] = 0;
        if (nd) {
            for (int i = 0; i < D; i++) r->dfr[i] = 0;
            r->dfr_pending = 1;
        }
        for (int k = 0; k < K; k++) { /* each part in slot order */
            double *out = dfd[k] ? r->dfr : y;
            for (int i = 0; i < D; i++) out[i] += c[(size_t)k * D + i];
        }
        if (ly->gate.w)
            for (int i = 0; i < D; i++) y[i] += sh[i];
        /* a deferred expert's ties wait for the next layer's output */
        for (int j = 0; j < ns; j++) {
            if (dfd[slot_of[j]]) r->ptie[r->n_ptie++] = st[j];
            else ties[nt++] = st[j];
        }
    }
    /* Resolve those ties the way the other implementation did, judged by its residual stream
     * after this layer: flip a tie when that brings us closer (the changes are nearly
     * orthogonal columns of W_down, so one greedy pass suffices). */
    if (nt && r->act_hint && r->act_hint(r->act_ud, layer + 1, MODEL_LIN_RESID, pos, r->hx, D)) {
        double *dv = tmp;
        for (int j = 0; j < nt; j++) {
            const struct rmat *d = ties[j].d;
            double before = 0, after = 0;
            for (int i = 0; i < D; i++) {
                dv[i] = ties[j].w * d->w[(size_t)i * d->cols + ties[j].i] * ties[j].delta;
                double t = r->hx[i] - (r->x[i] + y[i]);
                before += t * t;
                after += (t - dv[i]) * (t - dv[i]);
            }
            if (after < before) {
                for (int i = 0; i < D; i++) y[i] += dv[i];
                r->moe_ties_flipped++;
            }
        }
        r->moe_ties += nt;
    }
    for (int i = 0; i < D; i++) r->x[i] += y[i];
}

/* compare (and maybe replace) the residual stream with the other implementation's: entering
 * `layer` (which = MODEL_LIN_RESID), or after its attention and the deferred part of the layer
 * before (MODEL_LIN_RESID_DEFER), where the deferred experts' near-ties are resolved first */
static void resync(struct ref_model *r, int layer, int which)
{
    const int D = r->hp.hidden, nt = which == MODEL_LIN_RESID_DEFER ? r->n_ptie : 0;
    if (which == MODEL_LIN_RESID_DEFER) r->n_ptie = 0;
    if (!r->act_hint || !r->act_hint(r->act_ud, layer, which, r->n_pos - 1, r->hx, D)) return;
    /* the deferred experts' int8 near-ties, their part now in r->x: flip one when that brings
     * the stream closer to the other's (as for a layer's own experts, in ffn) */
    for (int j = 0; j < nt; j++) {
        const struct rtie *t = &r->ptie[j];
        double before = 0, after = 0, *dv = r->t1;
        for (int i = 0; i < D; i++) {
            dv[i] = t->w * t->d->w[(size_t)i * t->d->cols + t->i] * t->delta;
            double e = r->hx[i] - r->x[i];
            before += e * e;
            after += (e - dv[i]) * (e - dv[i]);
        }
        if (after < before) {
            for (int i = 0; i < D; i++) r->x[i] += dv[i];
            r->moe_ties_flipped++;
        }
    }
    r->moe_ties += nt;
    double d = 0, nn = 0;
    for (int i = 0; i < D; i++) {
        d += (r->x[i] - r->hx[i]) * (r->x[i] - r->hx[i]);
        nn += (double)r->hx[i] * r->hx[i];
    }
    double rel = sqrt(d / (nn + 1e-300));
    if (getenv("REF_DEBUG") && rel > 1e-5)
        fprintf(stderr, "ref: pos %d layer %d%s: residual differs by %.3g\n", r->n_pos - 1, layer,
                which == MODEL_LIN_RESID_DEFER ? " (+ deferred)" : "", rel);
    if (rel > r->max_layer_err) r->max_layer_err = rel;
    if (r->resync_gate > 0 && rel <= r->resync_gate && layer < r->hp.n_layers) {
        if (rel > 0) r->resyncs++;
        for (int i = 0; i < D; i++) r->x[i] = r->hx[i];
    }
}

int ref_step(struct ref_model *r, int32_t token, double *logits, char *err)
{
    const struct wt_hparams *hp = &r->hp;
    if (r->n_pos >= r->max_ctx) return err_set(err, ERR_INVAL, "ref: sequence full");
    if (token < 0 || token >= hp->vocab_size) return err_set(err, ERR_INVAL, "ref: bad token");
    int pos = r->n_pos++;
    memcpy(r->x, r->embed + (size_t)token * hp->hidden, (size_t)hp->hidden * sizeof(double));
    for (int l = 0; l < hp->n_layers; l++) {
        r->cur_layer = l;
        resync(r, l, MODEL_LIN_RESID);
        attention(r, &r->layers[l], pos);
        if (r->dfr_pending) { /* the layer before's deferred experts, after this attention */
            for (int i = 0; i < hp->hidden; i++) r->x[i] += r->dfr[i];
            r->dfr_pending = 0;
            resync(r, l, MODEL_LIN_RESID_DEFER);
        }
        ffn(r, &r->layers[l], l, pos);
    }
    resync(r, hp->n_layers,
           MODEL_LIN_RESID); /* compare only: the logits come from our own stream */
    r->cur_layer = -1;
    rmsnorm(r->x, r->out_norm, hp->hidden, hp->rms_eps, r->a);
    matvec(r, &r->out, MODEL_LIN_OUT, r->a, logits);
    return 0;
}

/* ---------------------------------------------------------------- lifecycle */

static double mscale(double f, double m) { return f <= 1.0 ? 1.0 : 0.1 * m * log(f) + 1.0; }

static void setup_rope(struct ref_model *r)
{
    const struct wt_hparams *hp = &r->hp;
    const double th = hp->rope_theta > 0 ? hp->rope_theta : 10000.0, f = hp->yarn_factor;
    const int dr = r->R;
    int yarn = hp->yarn && f > 1.0;
    double lo = 0, hi = 1;
    if (yarn) {
        double Lo = hp->yarn_orig_ctx > 0 ? hp->yarn_orig_ctx : 4096;
        lo = floor(dr * log(Lo / (2 * M_PI * hp->yarn_beta_fast)) / (2 * log(th)));
        hi = ceil(dr * log(Lo / (2 * M_PI * hp->yarn_beta_slow)) / (2 * log(th)));
        if (lo < 0) lo = 0;
        if (hi > dr - 1) hi = dr - 1;
        if (lo == hi) hi += 0.001;
    }
    for (int i = 0; i < dr / 2; i++) {
        double base = 1.0 / pow(th, (2.0 * i) / dr);
        if (!yarn) {
            r->freq[i] = base;
            continue;
        }
        double ramp = fmin(fmax((i - lo) / (hi - lo), 0.0), 1.0);
        r->freq[i] = base / f * ramp + base * (1.0 - ramp);
    }
    r->tau = 1.0 / sqrt((double)(r->NOPE + r->R));
    r->amp = 1.0;
    if (yarn) {
        double m = mscale(f, hp->yarn_mscale_all_dim);
        r->tau *= m * m;
        r->amp = mscale(f, hp->yarn_mscale) / m;
    }
}

static void free_mat(struct rmat *m) { free(m->w); }

void ref_destroy(struct ref_model *r)
{
    if (!r) return;
    if (r->layers) {
        for (int l = 0; l < r->hp.n_layers; l++) {
            struct rlayer *ly = &r->layers[l];
            free(ly->attn_norm);
            free(ly->ffn_norm);
            free(ly->q_a_norm);
            free(ly->kv_a_norm);
            free(ly->bias);
            struct rmat *ms[] = {&ly->q_a, &ly->q_b,  &ly->q,  &ly->kv_a, &ly->kv_b,
                                 &ly->o,   &ly->gate, &ly->up, &ly->down, &ly->router};
            for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) free_mat(ms[i]);
            for (int e = 0; ly->eg && e < r->hp.n_routed; e++) {
                free_mat(&ly->eg[e]);
                free_mat(&ly->eu[e]);
                free_mat(&ly->ed[e]);
            }
            free(ly->eg);
            free(ly->eu);
            free(ly->ed);
            free(ly->K);
            free(ly->V);
        }
    }
    free(r->layers);
    free(r->embed);
    free_mat(&r->out);
    free(r->out_norm);
    double *sc[] = {r->x,  r->a,  r->t1,  r->t2, r->t3,  r->t4,
                    r->qv, r->kv, r->att, r->sc, r->ffo, r->dfr};
    for (size_t i = 0; i < sizeof sc / sizeof sc[0]; i++) free(sc[i]);
    free(r->fq);
    free(r->hx);
    free(r->hrow);
    free(r->qbuf);
    free(r->ptie);
    free(r->slots);
    free(r);
}

void ref_reset(struct ref_model *r)
{
    r->n_pos = 0;
    r->min_margin = INFINITY;
    r->hints_taken = r->hints_refused = 0;
    r->act_ties = r->act_ties_hinted = r->vdt_hinted = r->moe_ties = r->moe_ties_flipped = 0;
    r->kv_ties = r->kv_ties_hinted = 0;
    r->max_layer_err = 0;
    r->resyncs = 0;
    r->dfr_pending = 0;
    r->n_ptie = 0;
    r->min_defer_margin = INFINITY;
    r->defer_ties = r->defer_ties_swapped = 0;
}

void ref_set_defer(struct ref_model *r, int n) { r->defer = n; }
double ref_min_defer_margin(const struct ref_model *r) { return r->min_defer_margin; }
int ref_defer_ties(const struct ref_model *r) { return r->defer_ties; }
int ref_defer_ties_swapped(const struct ref_model *r) { return r->defer_ties_swapped; }

void ref_set_act_hint(struct ref_model *r, ref_act_hint_fn fn, void *ud)
{
    r->act_hint = fn;
    r->act_ud = ud;
}

void ref_set_resync(struct ref_model *r, double gate) { r->resync_gate = gate; }
void ref_set_exact(struct ref_model *r, int exact) { r->exact = exact; }
double ref_max_layer_err(const struct ref_model *r) { return r->max_layer_err; }
int ref_resyncs(const struct ref_model *r) { return r->resyncs; }

void ref_set_kv_hint(struct ref_model *r, ref_kv_hint_fn fn, void *ud)
{
    r->kv_hint = fn;
    r->kv_ud = ud;
}

int ref_kv_ties(const struct ref_model *r) { return r->kv_ties; }
int ref_kv_ties_hinted(const struct ref_model *r) { return r->kv_ties_hinted; }

int ref_moe_ties(const struct ref_model *r) { return r->moe_ties; }
int ref_moe_ties_flipped(const struct ref_model *r) { return r->moe_ties_flipped; }

int ref_act_ties(const struct ref_model *r) { return r->act_ties; }
int ref_act_ties_hinted(const struct ref_model *r) { return r->act_ties_hinted; }

void ref_set_route_hint(struct ref_model *r, ref_route_hint_fn fn, void *ud, double tol)
{
    r->hint = fn;
    r->hint_ud = ud;
    r->hint_tol = tol;
}

int ref_hints_taken(const struct ref_model *r) { return r->hints_taken; }
int ref_hints_refused(const struct ref_model *r) { return r->hints_refused; }

int ref_vocab(const struct ref_model *r) { return r->hp.vocab_size; }
double ref_min_route_margin(const struct ref_model *r) { return r->min_margin; }

static int load_layer(struct ref_model *r, const struct wt_model *w, int l, char *err)
{
    const struct wt_hparams *hp = &r->hp;
    struct rlayer *ly = &r->layers[l];
    char nm[WT_NAME_LEN];
    int rc;
#define NM(...) (snprintf(nm, sizeof nm, __VA_ARGS__), nm)
    if ((rc =
             get_vec(r, w, NM("blk.%d.attn_norm.weight", l), hp->hidden, 0, &ly->attn_norm, err)) ||
        (rc = get_vec(r, w, NM("blk.%d.ffn_norm.weight", l), hp->hidden, 0, &ly->ffn_norm, err)) ||
        (rc = get_vec(r, w, NM("blk.%d.attn_kv_a_norm.weight", l), r->L, 0, &ly->kv_a_norm, err)) ||
        (rc = get_mat(r, w, NM("blk.%d.attn_kv_a_mqa.weight", l), &ly->kv_a, err)) ||
        (rc = get_kv_b(r, w, l, &ly->kv_b, err)) ||
        (rc = get_mat(r, w, NM("blk.%d.attn_output.weight", l), &ly->o, err)))
        return rc;
    if (hp->q_lora_rank > 0) {
        if ((rc = get_vec(r, w, NM("blk.%d.attn_q_a_norm.weight", l), hp->q_lora_rank, 0,
                          &ly->q_a_norm, err)) ||
            (rc = get_mat(r, w, NM("blk.%d.attn_q_a.weight", l), &ly->q_a, err)) ||
            (rc = get_mat(r, w, NM("blk.%d.attn_q_b.weight", l), &ly->q_b, err)))
            return rc;
    } else if ((rc = get_mat(r, w, NM("blk.%d.attn_q.weight", l), &ly->q, err))) {
        return rc;
    }
    ly->moe = wt_layer_is_moe(hp, l);
    if (!ly->moe) {
        if ((rc = get_mat(r, w, NM("blk.%d.ffn_gate.weight", l), &ly->gate, err)) ||
            (rc = get_mat(r, w, NM("blk.%d.ffn_up.weight", l), &ly->up, err)) ||
            (rc = get_mat(r, w, NM("blk.%d.ffn_down.weight", l), &ly->down, err)))
            return rc;
    } else {
        if ((rc = get_mat(r, w, NM("blk.%d.ffn_gate_inp.weight", l), &ly->router, err)) ||
            (rc = get_vec(r, w, NM("blk.%d.exp_probs_b.bias", l), hp->n_routed, 1, &ly->bias, err)))
            return rc;
        if (hp->n_shared > 0 &&
            ((rc = get_mat(r, w, NM("blk.%d.ffn_gate_shexp.weight", l), &ly->gate, err)) ||
             (rc = get_mat(r, w, NM("blk.%d.ffn_up_shexp.weight", l), &ly->up, err)) ||
             (rc = get_mat(r, w, NM("blk.%d.ffn_down_shexp.weight", l), &ly->down, err))))
            return rc;
        int E = hp->n_routed;
        ly->eg = calloc((size_t)E, sizeof *ly->eg);
        ly->eu = calloc((size_t)E, sizeof *ly->eu);
        ly->ed = calloc((size_t)E, sizeof *ly->ed);
        if (!ly->eg || !ly->eu || !ly->ed) return err_set(err, ERR_NOMEM, "ref: out of memory");
        struct rmat *dst[3] = {ly->eg, ly->eu, ly->ed};
        for (int e = 0; e < E; e++)
            for (int p = 0; p < 3; p++) {
                struct wt_view v;
                if ((rc = wt_expert(w, l, (enum wt_proj)p, e, &v, err)) ||
                    (rc = mat_from_view(r, &v, 1, &dst[p][e], err)))
                    return rc;
            }
    }
#undef NM
    size_t per = (size_t)r->max_ctx * r->H;
    ly->K = malloc(per * (r->NOPE + r->R) * sizeof(double));
    ly->V = malloc(per * r->VD * sizeof(double));
    if (!ly->K || !ly->V) return err_set(err, ERR_NOMEM, "ref: out of memory");
    return 0;
}

int ref_create(const struct wt_model *w, int max_ctx, struct ref_model **out, char *err)
{
    struct ref_model *r = calloc(1, sizeof *r);
    if (!r) return err_set(err, ERR_NOMEM, "ref: out of memory");
    r->hp = *wt_hparams(w);
    const struct wt_hparams *hp = &r->hp;
    r->max_ctx = max_ctx;
    r->H = hp->n_heads;
    r->L = hp->kv_lora_rank;
    r->R = hp->qk_rope;
    r->NOPE = hp->qk_nope;
    r->VD = hp->v_head;
    int rc = cpuq_ops_get(CPUQ_ISA_SCALAR, &r->sq, err);
    if (rc) goto fail;
    if (hp->top_k > 64 || hp->n_group > 1024 || hp->n_routed > 4096 || r->R > 128) {
        rc = err_set(err, ERR_UNSUPPORTED, "ref: config too large for the reference");
        goto fail;
    }
    setup_rope(r);
    /* scratch sized by the widest vector */
    size_t wmax = (size_t)hp->vocab_size;
    size_t cand[] = {(size_t)hp->hidden,
                     (size_t)hp->inter,
                     (size_t)hp->moe_inter * (hp->n_shared > 0 ? hp->n_shared : 1),
                     (size_t)r->H * (r->NOPE + r->R),
                     (size_t)r->H * r->VD,
                     (size_t)(r->L + r->R),
                     (size_t)hp->q_lora_rank,
                     (size_t)max_ctx,
                     (size_t)hp->n_routed * 3};
    for (size_t i = 0; i < sizeof cand / sizeof cand[0]; i++)
        wmax = cand[i] > wmax ? cand[i] : wmax;
    wmax += 256;
    double **sc[] = {&r->x,  &r->a,  &r->t1,  &r->t2, &r->t3,  &r->t4,
                     &r->qv, &r->kv, &r->att, &r->sc, &r->ffo, &r->dfr};
    for (size_t i = 0; i < sizeof sc / sizeof sc[0]; i++)
        if (!(*sc[i] = calloc(wmax, sizeof(double)))) {
            rc = err_set(err, ERR_NOMEM, "ref: out of memory");
            goto fail;
        }
    r->fq = calloc(wmax, sizeof(float));
    r->hx = calloc(wmax, sizeof(float));
    r->hrow = calloc(wmax, sizeof(uint16_t));
    r->qbuf = calloc(wmax, 8);
    r->ptie = calloc(MAX_TIES, sizeof *r->ptie);
    r->slots = calloc((size_t)(hp->top_k > 0 ? hp->top_k : 1) * hp->hidden, sizeof(double));
    r->embed = malloc((size_t)hp->vocab_size * hp->hidden * sizeof(double));
    r->layers = calloc((size_t)hp->n_layers, sizeof *r->layers);
    if (!r->fq || !r->hx || !r->hrow || !r->qbuf || !r->ptie || !r->slots || !r->embed ||
        !r->layers) {
        rc = err_set(err, ERR_NOMEM, "ref: out of memory");
        goto fail;
    }
    {
        const struct wt_tensor *t = wt_get(w, "token_embd.weight");
        int ok = 1;
        if (!t) {
            rc = err_set(err, ERR_FORMAT, "ref: missing token_embd.weight");
            goto fail;
        }
        if ((rc = decode_rows(r, t->type, t->data, qtype_row_bytes(t->type, hp->hidden, &ok),
                              t->scale ? t->scale->data : NULL, hp->vocab_size, hp->hidden,
                              r->embed, err)))
            goto fail;
    }
    if ((rc = get_mat(r, w, "output.weight", &r->out, err)) ||
        (rc = get_vec(r, w, "output_norm.weight", hp->hidden, 0, &r->out_norm, err)))
        goto fail;
    for (int l = 0; l < hp->n_layers; l++)
        if ((rc = load_layer(r, w, l, err))) goto fail;
    ref_reset(r);
    *out = r;
    return 0;
fail:
    ref_destroy(r);
    return rc;
}
