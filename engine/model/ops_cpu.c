/* ops_cpu.c - the CPU backend of ops.h: an adapter from the ops interface to kernels/cpu (GGML
 * formats, FP8, fp32 row kernels, MLA attention, routing, routed experts) on the worker pool.
 *
 * What: every op of ops.h on host memory. Linears split their output rows over the pool (each
 * weight row is read once for all tokens of the batch); attention (kernels/cpu/mla.h) splits
 * (token, head group) items; the cheap element-wise ops run on the calling thread.
 * Numerics: FP8 linears use kernels/cpu/fp8.h (per-token-per-128 activation quantization with
 * exact or, after ops_set_fp8_ue8m0, power-of-two scales; block scaled fp32 accumulation); GGML
 * types use cpuq_matmul_rows (activations in the vec_dot_type); BF16/F16/F32 weights run W16A32
 * (weight rows converted to fp32, fp32 activations, the 16-lane fp32 dot of kernels/cpu/f32.h) so
 * the router and lm_head see unrounded activations.
 * Determinism: every output element is computed by exactly one item in a fixed order, so results
 * do not depend on the thread count or on scheduling.
 * Threads: one caller thread at a time (the pool's owner); per-thread scratch is indexed by the
 * pool's thread_idx. Ownership: as ops.h; linear and expert handles keep the caller's weight
 * views (no copies). Memory: scratch grows on demand (first forward of a given size) and is then
 * reused; a failed growth sets the sticky error (ops__fail) and the op does nothing.
 */
#include "engine/model/ops_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "engine/model/expert_counts.h"
#include "kernels/cpu/cpuq.h"
#include "kernels/cpu/f32.h"
#include "kernels/cpu/fp8.h"
#include "kernels/cpu/mla.h"
#include "kernels/cpu/moe.h"
#include "kernels/cpu/router.h"
#include "kernels/cpu/wpool.h"

struct ops_lin {
    struct wt_view w;
};

struct ops_moe {
    int n_expert;
    int hidden;
    struct cpuq_mat *mats;     /* [3][n_expert]: gate, up, down */
    struct expert_counts *cnt; /* routing counts (ops_moe_set_counts; NULL: none), row cnt_row */
    int cnt_row;
};

struct scratch {
    void *p;
    size_t size;
};

struct ops_cpu {
    struct ops base;
    const struct cpuq_ops *q;
    struct cpuq_fp8_kern fp8;
    struct wpool *pool;
    int n_threads;
    char name[32];
    int w8a16;           /* ops_params.fp8_w8a16 */
    struct scratch act;  /* quantized activations of the current linear */
    struct scratch *thr; /* [n_threads] per-thread scratch */
    struct scratch seqs; /* attention, KV store: the batch's block tables */
    struct scratch dids; /* ops_moe_defer: one part's routes */
    struct cpuq_mla_scratch *mla;
    struct cpuq_moe_scratch *moe;
};

static struct ops_cpu *cpu_of(struct ops *o) { return (struct ops_cpu *)o; }

/* Grow a scratch buffer to at least `size` bytes; 0 or ERR_NOMEM. */
static int scratch_reserve(struct scratch *s, size_t size)
{
    if (s->size >= size) return 0;
    void *p = aligned_alloc(64, (size + 63) / 64 * 64);
    if (!p) return ERR_NOMEM;
    free(s->p);
    s->p = p;
    s->size = size;
    return 0;
}

/* Per-thread scratch of `size` bytes for every participant; false (sticky error) on failure. */
static int thr_reserve(struct ops_cpu *c, size_t size)
{
    for (int i = 0; i < c->n_threads; i++) {
        if (scratch_reserve(&c->thr[i], size)) {
            ops__fail(&c->base, ERR_NOMEM, "ops_cpu: out of memory for per-thread scratch");
            return 0;
        }
    }
    return 1;
}

/* ---------------------------------------------------------------- memory */

static const char *cpu_name(const struct ops *o) { return ((const struct ops_cpu *)o)->name; }
static int cpu_n_threads(const struct ops *o) { return ((const struct ops_cpu *)o)->n_threads; }

static void *cpu_alloc(struct ops *o, size_t bytes)
{
    (void)o;
    return calloc(1, bytes ? bytes : 1);
}

static void cpu_free(struct ops *o, void *p)
{
    (void)o;
    free(p);
}

static void cpu_copy(struct ops *o, void *dst, const void *src, size_t bytes)
{
    (void)o;
    memcpy(dst, src, bytes);
}

/* ---------------------------------------------------------------- weights */

static int lin_supported(const struct ops_cpu *c, int type)
{
    if (type == QTYPE_F8_E4M3 || type == QTYPE_F32 || type == QTYPE_BF16 || type == QTYPE_F16)
        return 1;
    const struct qtype_traits *tr = qtype_traits(type);
    return tr && tr->is_quant && c->q->type[type].vec_dot && c->q->type[type].vec_dot_type >= 0;
}

static int cpu_lin_create(struct ops *o, const struct wt_view *w, struct ops_lin **out, char *err)
{
    struct ops_cpu *c = cpu_of(o);
    if (!lin_supported(c, w->type))
        return err_set(err, ERR_UNSUPPORTED, "ops_cpu: no linear for weight type %s",
                       qtype_name(w->type));
    if (w->type == QTYPE_F8_E4M3 && !w->scale)
        return err_set(err, ERR_FORMAT, "ops_cpu: FP8 weight without scales");
    struct ops_lin *l = calloc(1, sizeof *l);
    if (!l) return err_set(err, ERR_NOMEM, "ops_cpu: out of memory");
    l->w = *w;
    *out = l;
    return 0;
}

static void cpu_lin_destroy(struct ops *o, struct ops_lin *l)
{
    (void)o;
    free(l);
}

static int cpu_moe_create(struct ops *o, int n_expert, const struct wt_view *gate,
                          const struct wt_view *up, const struct wt_view *down,
                          struct ops_moe **out, char *err)
{
    (void)o;
    if (n_expert < 1) return err_set(err, ERR_INVAL, "ops_cpu: no experts");
    struct ops_moe *m = calloc(1, sizeof *m);
    if (m) m->mats = calloc((size_t)3 * n_expert, sizeof *m->mats);
    if (!m || !m->mats) {
        free(m);
        return err_set(err, ERR_NOMEM, "ops_cpu: out of memory");
    }
    const struct wt_view *src[3] = {gate, up, down};
    for (int p = 0; p < 3; p++)
        for (int e = 0; e < n_expert; e++) {
            const struct wt_view *v = &src[p][e];
            m->mats[(size_t)p * n_expert + e] = (struct cpuq_mat){.type = v->type,
                                                                  .rows = v->rows,
                                                                  .cols = v->cols,
                                                                  .data = v->data,
                                                                  .row_bytes = v->row_bytes,
                                                                  .scale = v->scale};
        }
    m->n_expert = n_expert;
    m->hidden = (int)gate[0].cols;
    *out = m;
    return 0;
}

static void cpu_moe_destroy(struct ops *o, struct ops_moe *m)
{
    (void)o;
    free(m->mats);
    free(m);
}

static void cpu_moe_set_counts(struct ops *o, struct ops_moe *m, struct expert_counts *c, int row)
{
    (void)o;
    m->cnt = c;
    m->cnt_row = row;
}

/* One row of any supported type to fp32. */
static void row_to_f32(const struct ops_cpu *c, const struct wt_view *w, int64_t r, float *dst)
{
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
    if (w->type == QTYPE_F8_E4M3)
        cpuq_fp8_dequant((const uint8_t *)w->data, w->scale, w->rows, w->cols, r, r + 1, dst);
    else if (w->type == QTYPE_F32) memcpy(dst, row, (size_t)w->cols * sizeof(float));
    else if (w->type == QTYPE_BF16) cpuq_bf16_to_f32((const uint16_t *)row, dst, w->cols);
    else c->q->type[w->type].to_float(row, dst, w->cols);
}

static void cpu_embed(struct ops *o, const struct ops_lin *table, const int32_t *tokens, int n,
                      float *y)
{
    struct ops_cpu *c = cpu_of(o);
    for (int t = 0; t < n; t++) row_to_f32(c, &table->w, tokens[t], y + (size_t)t * table->w.cols);
}

/* ---------------------------------------------------------------- linear */

struct lin_job {
    struct ops_cpu *c;
    const struct wt_view *w;
    const float *x;  /* fp32 activations (W16A32) */
    const void *act; /* quantized activations (GGML) or FP8 qa */
    const float *as; /* FP8 activation scales */
    int n;
    float *y;
};

static void lin_fp8_rows(void *ctx, int64_t r0, int64_t r1, int ti)
{
    (void)ti;
    struct lin_job *j = ctx;
    const struct wt_view *w = j->w;
    cpuq_fp8_linear(&j->c->fp8, w->data, w->scale, w->rows, w->cols, r0, r1, j->n, j->act, j->as,
                    j->y + r0, w->rows);
}

static void lin_ggml_rows(void *ctx, int64_t r0, int64_t r1, int ti)
{
    (void)ti;
    struct lin_job *j = ctx;
    const struct wt_view *w = j->w;
    cpuq_matmul_rows(j->c->q, w->type, w->data, w->row_bytes, r0, r1, w->cols, j->act, j->n, j->y,
                     w->rows);
}

static void lin_w16a32_rows(void *ctx, int64_t r0, int64_t r1, int ti)
{
    struct lin_job *j = ctx;
    const struct wt_view *w = j->w;
    float *row = j->c->thr[ti].p;
    for (int64_t r = r0; r < r1; r++) {
        const float *wr = row;
        if (w->type == QTYPE_BF16 && j->n <= 4) { /* decode: no conversion pass */
            const uint16_t *wb =
                (const uint16_t *)((const uint8_t *)w->data + (size_t)r * w->row_bytes);
            for (int t = 0; t < j->n; t++)
                j->y[(size_t)t * w->rows + r] =
                    cpuq_dot_bf16(wb, j->x + (size_t)t * w->cols, w->cols);
            continue;
        }
        if (w->type == QTYPE_F32)
            wr = (const float *)((const uint8_t *)w->data + (size_t)r * w->row_bytes);
        else row_to_f32(j->c, w, r, row);
        for (int t = 0; t < j->n; t++)
            j->y[(size_t)t * w->rows + r] = cpuq_dot_f32(wr, j->x + (size_t)t * w->cols, w->cols);
    }
}

/* rows per pool chunk: about 4 chunks per thread, at least 16 rows */
static int64_t row_chunk(const struct ops_cpu *c, int64_t rows)
{
    int64_t ch = rows / ((int64_t)c->n_threads * 4);
    return ch < 16 ? 16 : ch;
}

static void cpu_linear(struct ops *o, const struct ops_lin *l, const float *x, int n, float *y)
{
    struct ops_cpu *c = cpu_of(o);
    const struct wt_view *w = &l->w;
    struct lin_job j = {.c = c, .w = w, .x = x, .n = n, .y = y};
    if (n <= 0) return;
    if (w->type == QTYPE_F8_E4M3) {
        int64_t nb = cpuq_fp8_nblk(w->cols);
        size_t need = ((size_t)n * w->cols + (size_t)n * nb) * sizeof(float);
        if (scratch_reserve(&c->act, need)) {
            ops__fail(o, ERR_NOMEM, "ops_cpu: out of memory for FP8 activations");
            return;
        }
        float *qa = c->act.p, *as = qa + (size_t)n * w->cols;
        if (c->w8a16) {
            /* the kernel's block math with the raw activations and unit activation scales */
            for (size_t i = 0; i < (size_t)n * nb; i++) as[i] = 1.0f;
            qa = (float *)x;
        } else {
            for (int t = 0; t < n; t++) /* ISA kernel, bitwise equal to cpuq_fp8_act_quant */
                c->fp8.act_quant(w->cols, x + (size_t)t * w->cols, qa + (size_t)t * w->cols,
                                 as + (size_t)t * nb, o->fp8_ue8m0);
        }
        j.act = qa;
        j.as = as;
        wpool_run(c->pool, lin_fp8_rows, &j, w->rows, row_chunk(c, w->rows));
    } else if (w->type == QTYPE_F32 || w->type == QTYPE_BF16 || w->type == QTYPE_F16) {
        if (!thr_reserve(c, (size_t)w->cols * sizeof(float))) return;
        wpool_run(c->pool, lin_w16a32_rows, &j, w->rows, row_chunk(c, w->rows));
    } else {
        size_t need = cpuq_act_size(c->q, w->type, w->cols, n);
        if (!need || scratch_reserve(&c->act, need)) {
            ops__fail(o, ERR_NOMEM, "ops_cpu: cannot size activations for a GGML linear");
            return;
        }
        cpuq_quantize_act(c->q, w->type, x, w->cols, n, c->act.p);
        j.act = c->act.p;
        wpool_run(c->pool, lin_ggml_rows, &j, w->rows, row_chunk(c, w->rows));
    }
}

/* ---------------------------------------------------------------- norm, rope, element-wise */

static void cpu_rmsnorm(struct ops *o, const float *x, int ldx, const float *g, int n, int dim,
                        float eps, float *y, int ldy)
{
    (void)o;
    cpuq_rmsnorm_f32(x, ldx, g, n, dim, eps, y, ldy);
}

static void cpu_rope(struct ops *o, const struct ops_rope *r, const int32_t *pos, int n,
                     int n_heads, const float *x, int ldx_tok, int ldx_head, float *y, int ldy_tok,
                     int ldy_head)
{
    (void)o;
    cpuq_rope_f32(r->n_pairs, r->freq, r->amp, pos, n, n_heads, x, ldx_tok, ldx_head, y, ldy_tok,
                  ldy_head);
}

static void cpu_head_matmul(struct ops *o, const struct ops_heads *h, int64_t w_off, int64_t w_head,
                            int rows, int cols, int trans, int n, int n_heads, const float *x,
                            int ldx_tok, int ldx_head, float *y, int ldy_tok, int ldy_head)
{
    cpuq_head_matmul_f32(cpu_of(o)->pool, h->f32 + w_off, w_head, rows, cols, trans, n, n_heads, x,
                         ldx_tok, ldx_head, y, ldy_tok, ldy_head);
}

static void cpu_swiglu(struct ops *o, const float *gate, const float *up, int64_t n, float *y)
{
    (void)o;
    cpuq_swiglu_f32(gate, up, n, y);
}

static void cpu_add(struct ops *o, float *y, const float *x, int64_t n)
{
    (void)o;
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

static void cpu_gather(struct ops *o, const float *x, int dim, const int32_t *idx, int n, float *y)
{
    (void)o;
    for (int i = 0; i < n; i++)
        memmove(y + (size_t)i * dim, x + (size_t)idx[i] * dim, (size_t)dim * sizeof(float));
}

/* ---------------------------------------------------------------- KV cache and attention */

/* The kernels' view of layer `layer` of kv and of batch b (the sequences' block tables as a
 * list of pointers); 0 (sticky error) when that list cannot grow. */
static int mla_views(struct ops_cpu *c, const struct model_kv *kv, int layer,
                     const struct model_batch *b, struct cpuq_mla_cache *cache,
                     struct cpuq_mla_batch *mb)
{
    if (scratch_reserve(&c->seqs, (size_t)b->n_seqs * sizeof(const int32_t *))) {
        ops__fail(&c->base, ERR_NOMEM, "ops_cpu: out of memory for block tables");
        return 0;
    }
    const int32_t **tables = c->seqs.p;
    for (int s = 0; s < b->n_seqs; s++) tables[s] = b->seqs[s].blocks;
    *cache = (struct cpuq_mla_cache){.data = kv->layer_data[layer],
                                     .f32 = kv->type == MODEL_KV_F32,
                                     .kv_dim = kv->kv_dim,
                                     .block_tokens = kv->block_tokens};
    *mb = (struct cpuq_mla_batch){.n = b->n_tokens, .pos = b->pos, .seq = b->seq, .blocks = tables};
    return 1;
}

static void cpu_kv_store(struct ops *o, const struct model_kv *kv, int layer,
                         const struct model_batch *b, const float *x)
{
    struct cpuq_mla_cache cache;
    struct cpuq_mla_batch mb;
    if (mla_views(cpu_of(o), kv, layer, b, &cache, &mb)) cpuq_mla_store(&cache, &mb, x);
}

static void cpu_mla_attn(struct ops *o, const struct model_kv *kv, int layer,
                         const struct model_batch *b, int n_heads, int kv_lora, float scale,
                         const float *q, float *out)
{
    struct ops_cpu *c = cpu_of(o);
    struct cpuq_mla_cache cache;
    struct cpuq_mla_batch mb;
    char err[ERR_LEN];
    if (!mla_views(c, kv, layer, b, &cache, &mb)) return;
    int rc = cpuq_mla_attn(c->pool, &cache, &mb, n_heads, kv_lora, scale, q, out, c->mla, err);
    if (rc) ops__fail(o, rc, err);
}

/* ---------------------------------------------------------------- router */

static void cpu_router(struct ops *o, const struct ops_router *r, const float *logits,
                       const float *bias, int n, int32_t *ids, float *w)
{
    struct ops_cpu *c = cpu_of(o);
    const struct cpuq_router cr = {.n_expert = r->n_expert,
                                   .top_k = r->top_k,
                                   .n_group = r->n_group,
                                   .topk_group = r->topk_group,
                                   .softmax = r->softmax,
                                   .norm_topk_prob = r->norm_topk_prob,
                                   .scale = r->scale};
    if (!thr_reserve(c, cpuq_route_scratch(&cr) * sizeof(float))) return;
    cpuq_route(&cr, logits, bias, n, ids, w, c->thr[0].p);
}

/* ---------------------------------------------------------------- routed experts */

static void cpu_moe(struct ops *o, const struct ops_moe *m, const float *x, int n,
                    const int32_t *ids, const float *w, int top_k, float *y)
{
    struct ops_cpu *c = cpu_of(o);
    char err[ERR_LEN];
    const struct cpuq_mat *g = m->mats, *u = g + m->n_expert, *d = u + m->n_expert;
    ec_add(m->cnt, m->cnt_row, ids, (int64_t)n * top_k); /* routes are host memory here */
    int rc = cpuq_moe_forward(c->pool, c->q, g, u, d, m->n_expert, n, m->hidden, x, top_k, ids, w,
                              y, o->fp8_ue8m0, c->moe, err);
    if (rc) ops__fail(o, rc, err);
}

/* The routes counted once, then each part as ops_moe with the other part's routes at -1. */
static void cpu_moe_defer(struct ops *o, const struct ops_moe *m, const float *x, int n,
                          const int32_t *ids, const float *w, int top_k, int n_defer, float *y,
                          float *y_def)
{
    struct ops_cpu *c = cpu_of(o);
    char err[ERR_LEN];
    const struct cpuq_mat *g = m->mats, *u = g + m->n_expert, *d = u + m->n_expert;
    if (scratch_reserve(&c->dids, (size_t)n * top_k * sizeof(int32_t))) {
        ops__fail(o, ERR_NOMEM, "ops_cpu: out of memory for deferred routes");
        return;
    }
    ec_add(m->cnt, m->cnt_row, ids, (int64_t)n * top_k);
    for (int part = 0; part < 2; part++) {
        ops__defer_ids(ids, w, n, top_k, n_defer, part, c->dids.p);
        int rc = cpuq_moe_forward(c->pool, c->q, g, u, d, m->n_expert, n, m->hidden, x, top_k,
                                  c->dids.p, w, part ? y_def : y, o->fp8_ue8m0, c->moe, err);
        if (rc) {
            ops__fail(o, rc, err);
            return;
        }
    }
}

/* ---------------------------------------------------------------- lifecycle */

static void cpu_destroy(struct ops *o)
{
    struct ops_cpu *c = cpu_of(o);
    cpuq_moe_scratch_destroy(c->moe);
    wpool_destroy(c->pool);
    if (c->thr)
        for (int i = 0; i < c->n_threads; i++) free(c->thr[i].p);
    free(c->thr);
    free(c->act.p);
    free(c->seqs.p);
    free(c->dids.p);
    cpuq_mla_scratch_destroy(c->mla);
    free(c);
}

static const struct ops_vt cpu_vt = {
    .name = cpu_name,
    .n_threads = cpu_n_threads,
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .lin_create = cpu_lin_create,
    .lin_destroy = cpu_lin_destroy,
    .moe_create = cpu_moe_create,
    .moe_destroy = cpu_moe_destroy,
    .moe_set_counts = cpu_moe_set_counts,
    .embed = cpu_embed,
    .linear = cpu_linear,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .head_matmul = cpu_head_matmul,
    .kv_store = cpu_kv_store,
    .mla_attn = cpu_mla_attn,
    .router = cpu_router,
    .moe = cpu_moe,
    .moe_defer = cpu_moe_defer,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
    .gather = cpu_gather,
};

int ops_cpu_create(const struct ops_params *p, struct ops **out, char *err)
{
    struct ops_cpu *c = calloc(1, sizeof *c);
    if (!c) return err_set(err, ERR_NOMEM, "ops_cpu: out of memory");
    c->base.vt = &cpu_vt;
    c->w8a16 = p->fp8_w8a16;
    int rc = cpuq_ops_select(p->isa && p->isa[0] ? p->isa : "auto", &c->q, err);
    if (!rc) rc = cpuq_fp8_kern_get(c->q->isa, &c->fp8, err);
    if (!rc) rc = wpool_create(p->n_threads, p->pin, p->spin_us, &c->pool, err);
    if (!rc) {
        c->n_threads = wpool_n_threads(c->pool);
        c->thr = calloc((size_t)c->n_threads, sizeof *c->thr);
        if (!c->thr) rc = err_set(err, ERR_NOMEM, "ops_cpu: out of memory");
    }
    if (!rc) rc = cpuq_moe_scratch_create(&c->moe, err);
    if (!rc) rc = cpuq_mla_scratch_create(&c->mla, err);
    if (rc) {
        cpu_destroy(&c->base);
        return rc;
    }
    snprintf(c->name, sizeof c->name, "cpu/%s%s", c->q->isa_name, c->w8a16 ? "/w8a16" : "");
    *out = &c->base;
    return 0;
}
