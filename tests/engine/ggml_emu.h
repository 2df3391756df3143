/* ggml_emu.h - a test-only backend that makes an FP8 model look like a GGUF (header-only).
 *
 * emu_wrap(inner, T, mode) returns an ops backend that forwards every op to `inner` (any backend:
 * ops_cpu or ops_cuda) but changes the weights it is given at load: each FP8 projection
 * (ops_lin_create) and kv_b (ops_heads_create) is dequantized and quantized to the GGML type T
 * with ggml's reference quantizer (q8_0 where the columns are not whole T blocks, as llama.cpp
 * falls back), i.e. the model's "GGUF" form, then handed to `inner`
 *   mode 1: as those GGML blocks (a CPU backend computes them as GGML; ops_cuda re-quantizes them
 *           to FP8 itself, gpu.requant_ggml);
 *   mode 2: re-quantized to FP8 here (kernels/cpu/requant_fp8.h), kv_b as that FP8 weight's fp32
 *           values: what ops_cuda computes, for a CPU backend to emulate it;
 *   mode 0: unchanged.
 * W16A32 linears (router, lm_head), tables, norms and routed experts are passed through. The
 * sticky error stays in the inner backend: check ops_error(emu_inner(o)) after a forward.
 * Threads: as the inner backend. Ownership: the wrapper owns `inner` and the converted weights,
 * freed by ops_destroy.
 */
#ifndef TANDEM_TEST_GGML_EMU_H
#define TANDEM_TEST_GGML_EMU_H

#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "engine/model/ops_internal.h"
#include "kernels/cpu/cpuq.h"
#include "kernels/cpu/fp8.h"
#include "kernels/cpu/requant_fp8.h"
#include "tests/check.h"

struct emu {
    struct ops base;
    struct ops *in; /* the CPU backend every op goes to */
    int type, mode; /* see above: 0 unchanged, 1 GGML, 2 GGML -> FP8 */
    const struct cpuq_ops *q;
    void **own; /* buffers the weight views point at, freed with the backend */
    int n_own, cap;
};

static struct emu *E(struct ops *o) { return (struct emu *)o; }
static const struct emu *Ec(const struct ops *o) { return (const struct emu *)o; }

static void *keep(struct emu *e, void *p)
{
    CHECK(p);
    if (e->n_own == e->cap) {
        e->cap = e->cap ? 2 * e->cap : 64;
        e->own = realloc(e->own, (size_t)e->cap * sizeof *e->own);
        CHECK(e->own);
    }
    e->own[e->n_own++] = p;
    return p;
}

/* the "GGUF" form of an FP8 view's fp32 values f: type T (q8_0 when the columns do not fit) */
static struct wt_view to_ggml(struct emu *e, const float *f, int64_t rows, int64_t cols)
{
    int t = cpuq_row_size(e->type, cols) ? e->type : QTYPE_Q8_0;
    CHECK(cpuq_row_size(t, cols) > 0);
    size_t rb = cpuq_row_size(t, cols);
    void *d = keep(e, malloc(rb * (size_t)rows));
    cpuq_quantize_rows(e->q, t, f, d, rows, cols);
    return (struct wt_view){.type = t, .rows = rows, .cols = cols, .data = d, .row_bytes = rb};
}

static struct wt_view to_fp8(struct emu *e, const struct wt_view *g)
{
    char err[ERR_LEN];
    uint8_t *qb = keep(e, malloc((size_t)(g->rows * g->cols)));
    float *sc =
        keep(e, malloc((size_t)(cpuq_fp8_nblk(g->rows) * cpuq_fp8_nblk(g->cols)) * sizeof(float)));
    struct cpuq_requant_src s = {.type = g->type,
                                 .data = g->data,
                                 .row_bytes = g->row_bytes,
                                 .rows = g->rows,
                                 .cols = g->cols};
    CHECK_EQ(cpuq_requant_fp8(e->q, NULL, &s, qb, sc, err), 0);
    return (struct wt_view){.type = QTYPE_F8_E4M3,
                            .rows = g->rows,
                            .cols = g->cols,
                            .data = qb,
                            .row_bytes = (size_t)g->cols,
                            .scale = sc};
}

static float *dequant(const struct emu *e, const struct wt_view *v)
{
    float *f = malloc((size_t)(v->rows * v->cols) * sizeof(float));
    CHECK(f);
    if (v->type == QTYPE_F8_E4M3)
        cpuq_fp8_dequant(v->data, v->scale, v->rows, v->cols, 0, v->rows, f);
    else
        for (int64_t r = 0; r < v->rows; r++)
            e->q->type[v->type].to_float((const char *)v->data + r * v->row_bytes, f + r * v->cols,
                                         v->cols);
    return f;
}

static int emu_lin_create(struct ops *o, const struct wt_view *w, struct ops_lin **out, char *err)
{
    struct emu *e = E(o);
    if (!e->mode || w->type != QTYPE_F8_E4M3) return ops_lin_create(e->in, w, out, err);
    float *f = dequant(e, w);
    struct wt_view g = to_ggml(e, f, w->rows, w->cols);
    free(f);
    if (e->mode == 1) return ops_lin_create(e->in, &g, out, err);
    struct wt_view fv = to_fp8(e, &g);
    return ops_lin_create(e->in, &fv, out, err);
}

static int emu_heads_create(struct ops *o, const struct wt_view *v, const float *f32,
                            struct ops_heads **out, char *err)
{
    struct emu *e = E(o);
    if (!e->mode) return ops_heads_create(e->in, v, f32, out, err);
    struct wt_view g = to_ggml(e, f32, v->rows, v->cols);
    struct wt_view w = e->mode == 1 ? g : to_fp8(e, &g);
    float *f = dequant(e, &w);
    int rc = ops_heads_create(e->in, &w, f, out, err);
    free(f);
    return rc;
}

/* everything else: the inner backend */
static const char *emu_name(const struct ops *o) { return ops_name(Ec(o)->in); }
static int emu_n_threads(const struct ops *o) { return ops_n_threads(Ec(o)->in); }
static void emu_destroy(struct ops *o)
{
    struct emu *e = E(o);
    ops_destroy(e->in);
    for (int i = 0; i < e->n_own; i++) free(e->own[i]);
    free(e->own);
    free(e);
}
static void *emu_alloc(struct ops *o, size_t b) { return ops_alloc(E(o)->in, b); }
static void emu_free(struct ops *o, void *p) { ops_free(E(o)->in, p); }
static void emu_upload(struct ops *o, void *d, const void *s, size_t b)
{
    ops_upload(E(o)->in, d, s, b);
}
static void emu_download(struct ops *o, void *d, const void *s, size_t b)
{
    ops_download(E(o)->in, d, s, b);
}
static int emu_table_create(struct ops *o, const struct wt_view *w, struct ops_lin **out, char *err)
{
    return ops_table_create(E(o)->in, w, out, err);
}
static int emu_lin_w16(struct ops *o, const struct wt_view *w, struct ops_lin **out, char *err)
{
    return ops_lin_create_w16(E(o)->in, w, out, err);
}
static void emu_lin_destroy(struct ops *o, struct ops_lin *l) { ops_lin_destroy(E(o)->in, l); }
static int emu_moe_create(struct ops *o, int n, const struct wt_view *g, const struct wt_view *u,
                          const struct wt_view *d, struct ops_moe **out, char *err)
{
    return ops_moe_create(E(o)->in, n, g, u, d, out, err);
}
static void emu_moe_destroy(struct ops *o, struct ops_moe *m) { ops_moe_destroy(E(o)->in, m); }
static void emu_embed(struct ops *o, const struct ops_lin *t, const int32_t *tok, int n, float *y)
{
    ops_embed(E(o)->in, t, tok, n, y);
}
static void emu_linear(struct ops *o, const struct ops_lin *w, const float *x, int n, float *y)
{
    ops_linear(E(o)->in, w, x, n, y);
}
static void emu_rmsnorm(struct ops *o, const float *x, int ldx, const float *g, int n, int dim,
                        float eps, float *y, int ldy)
{
    ops_rmsnorm(E(o)->in, x, ldx, g, n, dim, eps, y, ldy);
}
static void emu_rope(struct ops *o, const struct ops_rope *r, const int32_t *pos, int n, int nh,
                     const float *x, int lxt, int lxh, float *y, int lyt, int lyh)
{
    ops_rope(E(o)->in, r, pos, n, nh, x, lxt, lxh, y, lyt, lyh);
}
static void emu_heads_destroy(struct ops *o, struct ops_heads *h)
{
    ops_heads_destroy(E(o)->in, h);
}
static void emu_head_matmul(struct ops *o, const struct ops_heads *w, int64_t off, int64_t wh,
                            int rows, int cols, int trans, int n, int nh, const float *x, int lxt,
                            int lxh, float *y, int lyt, int lyh)
{
    ops_head_matmul(E(o)->in, w, off, wh, rows, cols, trans, n, nh, x, lxt, lxh, y, lyt, lyh);
}
static void emu_kv_store(struct ops *o, const struct model_kv *kv, int layer,
                         const struct model_batch *b, const float *x)
{
    ops_kv_store(E(o)->in, kv, layer, b, x);
}
static void emu_mla_attn(struct ops *o, const struct model_kv *kv, int layer,
                         const struct model_batch *b, int nh, int kvl, float scale, const float *q,
                         float *out)
{
    ops_mla_attn(E(o)->in, kv, layer, b, nh, kvl, scale, q, out);
}
static void emu_router(struct ops *o, const struct ops_router *r, const float *lg,
                       const float *bias, int n, int32_t *ids, float *w)
{
    ops_router(E(o)->in, r, lg, bias, n, ids, w);
}
static void emu_moe(struct ops *o, const struct ops_moe *m, const float *x, int n,
                    const int32_t *ids, const float *w, int k, float *y)
{
    ops_moe(E(o)->in, m, x, n, ids, w, k, y);
}
static void emu_swiglu(struct ops *o, const float *g, const float *u, int64_t n, float *y)
{
    ops_swiglu(E(o)->in, g, u, n, y);
}
static void emu_add(struct ops *o, float *y, const float *x, int64_t n)
{
    ops_add(E(o)->in, y, x, n);
}
static void emu_gather(struct ops *o, const float *x, int dim, const int32_t *idx, int n, float *y)
{
    ops_gather(E(o)->in, x, dim, idx, n, y);
}

static size_t emu_device_free(struct ops *o, int *sms) { return ops_device_free(E(o)->in, sms); }

static const struct ops_vt emu_vt = {
    .name = emu_name,
    .n_threads = emu_n_threads,
    .destroy = emu_destroy,
    .alloc = emu_alloc,
    .free = emu_free,
    .upload = emu_upload,
    .download = emu_download,
    .lin_create = emu_lin_create,
    .lin_create_w16 = emu_lin_w16,
    .table_create = emu_table_create,
    .lin_destroy = emu_lin_destroy,
    .moe_create = emu_moe_create,
    .moe_destroy = emu_moe_destroy,
    .embed = emu_embed,
    .linear = emu_linear,
    .rmsnorm = emu_rmsnorm,
    .rope = emu_rope,
    .heads_create = emu_heads_create,
    .heads_destroy = emu_heads_destroy,
    .head_matmul = emu_head_matmul,
    .kv_store = emu_kv_store,
    .mla_attn = emu_mla_attn,
    .router = emu_router,
    .moe = emu_moe,
    .swiglu = emu_swiglu,
    .add = emu_add,
    .gather = emu_gather,
    .device_free = emu_device_free,
};

/* A wrapper around inner (which it then owns) converting weights to `type` by `mode`. */
static struct ops *emu_wrap(struct ops *inner, int type, int mode)
{
    char err[ERR_LEN];
    struct emu *e = calloc(1, sizeof *e);
    CHECK(e);
    e->base.vt = &emu_vt;
    e->base.backend = ops_backend_of(inner);
    e->in = inner;
    e->type = type;
    e->mode = mode;
    CHECK_EQ(cpuq_ops_get(CPUQ_ISA_SCALAR, &e->q, err), 0);
    return &e->base;
}

static struct ops *emu_inner(struct ops *o) { return E(o)->in; }

#endif
