/* ops_cpu.c - the CPU backend of ops.h: kernels/cpu (GGML formats, FP8) plus the worker pool.
 *
 * What: every op of ops.h on host memory. Linears split their output rows over the pool (each
 * weight row is read once for all tokens of the batch); attention splits (token, head group)
 * items; the cheap element-wise ops run on the calling thread.
 * Numerics: FP8 linears use kernels/cpu/fp8.h (per-token-per-128 activation quantization, block
 * scaled fp32 accumulation); GGML types use cpuq_matmul_rows (activations in the vec_dot_type);
 * BF16/F16/F32 weights run W16A32 (weight rows converted to fp32, fp32 activations, 16-lane fp32
 * accumulation) so the router and lm_head see unrounded activations. Attention: the absorbed MLA
 * form over the latent cache (bf16, or f32: engine.kv_cache_type) with an online fp32 softmax.
 * Determinism: every output element is computed by exactly one item in a fixed order, so results
 * do not depend on the thread count or on scheduling.
 * Threads: one caller thread at a time (the pool's owner); per-thread scratch is indexed by the
 * pool's thread_idx. Memory: scratch grows on demand (first forward of a given size) and is then
 * reused; a failed growth sets the sticky error (ops__fail) and the op does nothing.
 */
#include "engine/model/ops_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "kernels/cpu/cpuq.h"
#include "kernels/cpu/fp8.h"
#include "kernels/cpu/fpconv.h"
#include "kernels/cpu/moe.h"
#include "kernels/cpu/wpool.h"

#define ATT_CHUNK 64    /* keys per online-softmax step */
#define ATT_HEADS 8     /* heads per attention work item */
#define ATT_ROWS 16     /* (token, head) query rows per attention work item at most */
#define ATT_SEG 256     /* keys per attention segment (split mode: per work item) */

struct ops_lin {
    struct wt_view w;
};

struct ops_moe {
    int n_expert;
    int hidden;
    struct cpuq_mat *mats;      /* [3][n_expert]: gate, up, down */
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
    int w8a16;                  /* ops_params.fp8_w8a16 */
    struct scratch act;         /* quantized activations of the current linear */
    struct scratch *thr;        /* [n_threads] per-thread scratch */
    struct scratch att_blk;     /* attention: first batch token of each query block */
    struct scratch att_tab;     /* attention: split-mode item tables */
    struct scratch att_part;    /* attention: split-mode partial results */
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

/* The portable hot loops below are compiled for several ISAs with GCC function multiversioning
 * (target_clones: the loader picks one clone per process). They use 16 independent fp32 lanes
 * and a fixed final reduction and FP contraction is off (-std=c11), so every clone computes the
 * same value bitwise: the vector width only changes speed. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define OPS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define OPS_CLONES
#endif

/* fp32 dot with 16 independent lanes (vectorizable without reassociation; fixed order). */
OPS_CLONES static float dot_f32(const float *a, const float *b, int64_t n)
{
    float acc[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) acc[l] += a[i + l] * b[i + l];
    for (; i < n; i++) acc[i & 15] += a[i] * b[i];
    for (int l = 0; l < 8; l++) acc[l] += acc[l + 8];
    for (int l = 0; l < 4; l++) acc[l] += acc[l + 4];
    return (acc[0] + acc[2]) + (acc[1] + acc[3]);
}

/* The same sum as dot_f32(bf16 row converted to fp32, x): bf16 -> fp32 is exact (a shift). */
OPS_CLONES static float dot_bf16(const uint16_t *w, const float *x, int64_t n)
{
    float acc[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) {
            uint32_t u = (uint32_t)w[i + l] << 16;
            float f;
            memcpy(&f, &u, 4);
            acc[l] += f * x[i + l];
        }
    for (; i < n; i++) acc[i & 15] += fp_bf16_to_f32(w[i]) * x[i];
    for (int l = 0; l < 8; l++) acc[l] += acc[l + 8];
    for (int l = 0; l < 4; l++) acc[l] += acc[l + 4];
    return (acc[0] + acc[2]) + (acc[1] + acc[3]);
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
            m->mats[(size_t)p * n_expert + e] = (struct cpuq_mat){
                .type = v->type, .rows = v->rows, .cols = v->cols, .data = v->data,
                .row_bytes = v->row_bytes, .scale = v->scale};
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

/* Element-wise loops written as fixed 16-wide blocks plus a tail: GCC's -O2 vectorizer (cost
 * model "very-cheap") only vectorizes loops whose trip count it knows. */
OPS_CLONES static void bf16_to_f32_row(const uint16_t *restrict src, float *restrict dst,
                                       int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) {
            uint32_t u = (uint32_t)src[i + l] << 16;
            memcpy(dst + i + l, &u, 4);
        }
    for (; i < n; i++) dst[i] = fp_bf16_to_f32(src[i]);
}

/* y += a * x */
OPS_CLONES static void axpy_f32(float *restrict y, float a, const float *restrict x, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) y[i + l] += a * x[i + l];
    for (; i < n; i++) y[i] += a * x[i];
}

/* y *= a */
OPS_CLONES static void scale_f32(float *y, float a, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) y[i + l] *= a;
    for (; i < n; i++) y[i] *= a;
}

/* One row of any supported type to fp32. */
static void row_to_f32(const struct ops_cpu *c, const struct wt_view *w, int64_t r, float *dst)
{
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
    if (w->type == QTYPE_F8_E4M3)
        cpuq_fp8_dequant((const uint8_t *)w->data, w->scale, w->rows, w->cols, r, r + 1, dst);
    else if (w->type == QTYPE_F32)
        memcpy(dst, row, (size_t)w->cols * sizeof(float));
    else if (w->type == QTYPE_BF16)
        bf16_to_f32_row((const uint16_t *)row, dst, w->cols);
    else
        c->q->type[w->type].to_float(row, dst, w->cols);
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
    const float *x;             /* fp32 activations (W16A32) */
    const void *act;            /* quantized activations (GGML) or FP8 qa */
    const float *as;            /* FP8 activation scales */
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
    cpuq_matmul_rows(j->c->q, w->type, w->data, w->row_bytes, r0, r1, w->cols, j->act, j->n,
                     j->y, w->rows);
}

static void lin_w16a32_rows(void *ctx, int64_t r0, int64_t r1, int ti)
{
    struct lin_job *j = ctx;
    const struct wt_view *w = j->w;
    float *row = j->c->thr[ti].p;
    for (int64_t r = r0; r < r1; r++) {
        const float *wr = row;
        if (w->type == QTYPE_BF16 && j->n <= 4) {      /* decode: no conversion pass */
            const uint16_t *wb = (const uint16_t *)((const uint8_t *)w->data + (size_t)r * w->row_bytes);
            for (int t = 0; t < j->n; t++)
                j->y[(size_t)t * w->rows + r] = dot_bf16(wb, j->x + (size_t)t * w->cols, w->cols);
            continue;
        }
        if (w->type == QTYPE_F32)
            wr = (const float *)((const uint8_t *)w->data + (size_t)r * w->row_bytes);
        else
            row_to_f32(j->c, w, r, row);
        for (int t = 0; t < j->n; t++)
            j->y[(size_t)t * w->rows + r] = dot_f32(wr, j->x + (size_t)t * w->cols, w->cols);
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
            for (int t = 0; t < n; t++)  /* ISA kernel, bitwise equal to cpuq_fp8_act_quant */
                c->fp8.act_quant(w->cols, x + (size_t)t * w->cols, qa + (size_t)t * w->cols,
                                 as + (size_t)t * nb);
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
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * ldx;
        float *yt = y + (size_t)t * ldy;
        float ss = dot_f32(xt, xt, dim);
        float r = 1.0f / sqrtf(ss / (float)dim + eps);
        for (int i = 0; i < dim; i++) yt[i] = (xt[i] * r) * g[i];
    }
}

static void cpu_rope(struct ops *o, const struct ops_rope *r, const int32_t *pos, int n,
                     int n_heads, const float *x, int ldx_tok, int ldx_head, float *y,
                     int ldy_tok, int ldy_head)
{
    (void)o;
    for (int t = 0; t < n; t++) {
        float p = (float)pos[t];
        for (int i = 0; i < r->n_pairs; i++) {
            float ang = p * r->freq[i];
            float cs = cosf(ang) * r->amp, sn = sinf(ang) * r->amp;
            for (int h = 0; h < n_heads; h++) {
                const float *xh = x + (size_t)t * ldx_tok + (size_t)h * ldx_head;
                float *yh = y + (size_t)t * ldy_tok + (size_t)h * ldy_head;
                float a = xh[2 * i], b = xh[2 * i + 1];
                yh[2 * i] = a * cs - b * sn;
                yh[2 * i + 1] = a * sn + b * cs;
            }
        }
    }
}

struct hmm_job {
    const float *w;
    int64_t w_head;
    int rows, cols, trans, n_heads;
    const float *x;
    int ldx_tok, ldx_head;
    float *y;
    int ldy_tok, ldy_head;
};

OPS_CLONES static void hmm_items(void *ctx, int64_t i0, int64_t i1, int ti)
{
    (void)ti;
    const struct hmm_job *j = ctx;
    for (int64_t it = i0; it < i1; it++) {
        int t = (int)(it / j->n_heads), h = (int)(it % j->n_heads);
        const float *restrict W = j->w + (size_t)h * j->w_head;
        const float *restrict x = j->x + (size_t)t * j->ldx_tok + (size_t)h * j->ldx_head;
        float *restrict y = j->y + (size_t)t * j->ldy_tok + (size_t)h * j->ldy_head;
        if (!j->trans) {
            for (int r = 0; r < j->rows; r++) y[r] = dot_f32(W + (size_t)r * j->cols, x, j->cols);
        } else {
            for (int cc = 0; cc < j->cols; cc++) y[cc] = 0.0f;
            for (int r = 0; r < j->rows; r++) axpy_f32(y, x[r], W + (size_t)r * j->cols, j->cols);
        }
    }
}

static void cpu_head_matmul(struct ops *o, const struct ops_heads *h, int64_t w_off,
                            int64_t w_head, int rows, int cols, int trans, int n, int n_heads,
                            const float *x, int ldx_tok, int ldx_head, float *y, int ldy_tok,
                            int ldy_head)
{
    struct ops_cpu *c = cpu_of(o);
    struct hmm_job j = {h->f32 + w_off, w_head, rows, cols, trans, n_heads, x, ldx_tok, ldx_head, y, ldy_tok,
                        ldy_head};
    wpool_run(c->pool, hmm_items, &j, (int64_t)n * n_heads, 1);
}

static void cpu_swiglu(struct ops *o, const float *gate, const float *up, int64_t n, float *y)
{
    (void)o;
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        y[i] = g / (1.0f + expf(-g)) * up[i];
    }
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

static void *kv_slot(const struct model_kv *kv, int layer, const struct model_seq *s, int p)
{
    int32_t blk = s->blocks[p / kv->block_tokens];
    size_t row = (size_t)blk * kv->block_tokens + (size_t)(p % kv->block_tokens);
    return (char *)kv->layer_data[layer] + row * kv->kv_dim * model_kv_elem_size(kv->type);
}

static void cpu_kv_store(struct ops *o, const struct model_kv *kv, int layer,
                         const struct model_batch *b, const float *x)
{
    (void)o;
    for (int t = 0; t < b->n_tokens; t++) {
        void *dst = kv_slot(kv, layer, &b->seqs[b->seq[t]], b->pos[t]);
        const float *src = x + (size_t)t * kv->kv_dim;
        if (kv->type == MODEL_KV_F32) {
            memcpy(dst, src, (size_t)kv->kv_dim * sizeof(float));
            continue;
        }
        uint16_t *d16 = dst;
        for (int i = 0; i < kv->kv_dim; i++) d16[i] = fp_f32_to_bf16(src[i]);
    }
}

/* One cached row as fp32 (bf16 -> fp32 is exact). */
static void kv_load(const struct model_kv *kv, const void *row, float *dst)
{
    if (kv->type == MODEL_KV_F32)
        memcpy(dst, row, (size_t)kv->kv_dim * sizeof(float));
    else
        bf16_to_f32_row(row, dst, kv->kv_dim);
}

/* Attention: flash-style tiles over the paged latent cache (bf16, or f32 with kv_cache_type).
 *
 * Rows: a query row is (token, head). A block is up to ATT_ROWS / heads-per-group consecutive
 * batch tokens of one sequence (part of a prefill chunk, or one decode token); a (block, head
 * group of at most ATT_HEADS) holds at most ATT_ROWS rows. Keys 0..max pos of the block are
 * walked in segments of ATT_SEG keys, each segment in chunks of ATT_CHUNK: a chunk's keys are
 * converted from bf16 once and used by every row; scores are a rows x keys tile product (att_qk),
 * the online softmax runs per row in fp32, and P.V is a rows x kv_lora tile product (att_pv).
 * Causality: a row sees keys <= its own position; the keys of a chunk beyond it get probability
 * 0 (they are written cache slots: the block's largest position bounds them).
 * Numerics, per row: within a segment exactly a row-at-a-time online softmax (scores = scale *
 * dot_f32 over the 16 lanes, the chunk's running max, corr = expf(m_old - m_new), l and the
 * accumulator scaled by corr, then p_k = expf(s_k - m) added key by key in order; a masked key
 * adds 0 * v, which leaves the value unchanged); segments are then folded in key order
 * (att_merge; a row within one segment, <= ATT_SEG keys, is the plain online softmax). Nothing
 * depends on the other rows of the batch or on how the work is cut: batched equals alone,
 * chunked prefill equals one-shot, and any thread count gives the same bits.
 * Work items: plain mode, one per (block, head group), largest first (the last blocks of a
 * prefill see the most keys) so the pool's dynamic chunks balance; split mode (att_plan_split)
 * when a few long (block, head group)s dominate the batch (one decode stream, a small prefill
 * chunk beside short decodes): those run as one item per segment plus a combine pass. */

struct att_job {
    struct ops_cpu *c;
    const struct model_kv *kv;
    int layer;
    const struct model_batch *b;
    int n_heads, kv_lora, groups;
    float scale;
    const float *q;
    float *out;
    const int32_t *blk;         /* [n_blk + 1] first batch token of each block */
    int n_blk;
    /* split mode (att_plan_split) */
    const int32_t *item_bg;     /* [n_items] the (block, group) of each item: block * groups + g */
    const int32_t *item_seg;    /* [n_items] its key segment, -1 = all of them */
    const int32_t *big_item0;   /* [n_big + 1] first item of each split (block, group) */
    int64_t n_items;
    int n_big;
    float *part;                /* per segment item, its partial result (att_part_floats) */
};

/* GCC/clang vector extension: 16 fp32 lanes, the lane layout of dot_f32's accumulators. Plain
 * per-lane IEEE mul and add (FP contraction is off), so any ISA gives the same bits. */
typedef float att_v16 __attribute__((vector_size(64)));

/* (a macro: vectors as by-value arguments or results would change the ABI per clone) */
#define V16(v, p) memcpy(&(v), (p), sizeof(att_v16))

/* dot_f32's final reduction of its 16 lanes */
static inline float v16_reduce(const att_v16 *v)
{
    float a[16];
    memcpy(a, v, sizeof a);
    for (int l = 0; l < 8; l++) a[l] += a[l + 8];
    for (int l = 0; l < 4; l++) a[l] += a[l + 4];
    return (a[0] + a[2]) + (a[1] + a[3]);
}

/* s[r * lds + c] = scale * dot_f32(q[r], k + c * D, D) for 2 rows x 4 keys: 8 independent lane
 * accumulators (dot_f32 alone is bound by one add chain). */
OPS_CLONES static void att_qk(const float *q0, const float *q1, const float *k, int D,
                              float scale, float *s, int lds)
{
    const float *k1 = k + D, *k2 = k1 + D, *k3 = k2 + D;
    att_v16 a00 = {0}, a01 = {0}, a02 = {0}, a03 = {0}, a10 = {0}, a11 = {0}, a12 = {0},
            a13 = {0};
    int i = 0;
    for (; i + 16 <= D; i += 16) {
        att_v16 x0, x1, y;
        V16(x0, q0 + i);
        V16(x1, q1 + i);
        V16(y, k + i);
        a00 += x0 * y;
        a10 += x1 * y;
        V16(y, k1 + i);
        a01 += x0 * y;
        a11 += x1 * y;
        V16(y, k2 + i);
        a02 += x0 * y;
        a12 += x1 * y;
        V16(y, k3 + i);
        a03 += x0 * y;
        a13 += x1 * y;
    }
    for (; i < D; i++) {                                /* dot_f32's tail: lane i & 15 */
        a00[i & 15] += q0[i] * k[i];
        a01[i & 15] += q0[i] * k1[i];
        a02[i & 15] += q0[i] * k2[i];
        a03[i & 15] += q0[i] * k3[i];
        a10[i & 15] += q1[i] * k[i];
        a11[i & 15] += q1[i] * k1[i];
        a12[i & 15] += q1[i] * k2[i];
        a13[i & 15] += q1[i] * k3[i];
    }
    s[0] = scale * v16_reduce(&a00);
    s[1] = scale * v16_reduce(&a01);
    s[2] = scale * v16_reduce(&a02);
    s[3] = scale * v16_reduce(&a03);
    s[lds + 0] = scale * v16_reduce(&a10);
    s[lds + 1] = scale * v16_reduce(&a11);
    s[lds + 2] = scale * v16_reduce(&a12);
    s[lds + 3] = scale * v16_reduce(&a13);
}

/* For rows r < rows (even): acc_r = acc_r * corr_r, then acc_r += p_r[k] * v_k for k < nk in
 * order (the same rounding as scale_f32 then one axpy_f32 per key). Rows at pr + r * ATT_CHUNK,
 * v rows D floats apart, L columns. 64 columns at a time for every row pair, so those columns
 * of the chunk's values stay in L1 while the pairs go by. */
OPS_CLONES static void att_pv(float *acc, const float *corr, const float *pr, int rows,
                              const float *v, int D, int L, int nk)
{
    int c = 0;
    for (; c + 64 <= L; c += 64)
        for (int r = 0; r < rows; r += 2) {
            float *acc0 = acc + (size_t)r * L + c, *acc1 = acc0 + L;
            const float *p0 = pr + (size_t)r * ATT_CHUNK, *p1 = p0 + ATT_CHUNK;
            float corr0 = corr[r], corr1 = corr[r + 1];
            att_v16 a0, a1, a2, a3, b0, b1, b2, b3, y0, y1, y2, y3;
            V16(a0, acc0);
            V16(a1, acc0 + 16);
            V16(a2, acc0 + 32);
            V16(a3, acc0 + 48);
            V16(b0, acc1);
            V16(b1, acc1 + 16);
            V16(b2, acc1 + 32);
            V16(b3, acc1 + 48);
            a0 *= corr0;
            a1 *= corr0;
            a2 *= corr0;
            a3 *= corr0;
            b0 *= corr1;
            b1 *= corr1;
            b2 *= corr1;
            b3 *= corr1;
            const float *vk = v + c;
            for (int k = 0; k < nk; k++, vk += D) {
                V16(y0, vk);
                V16(y1, vk + 16);
                V16(y2, vk + 32);
                V16(y3, vk + 48);
                float s = p0[k], t = p1[k];
                a0 += s * y0;
                a1 += s * y1;
                a2 += s * y2;
                a3 += s * y3;
                b0 += t * y0;
                b1 += t * y1;
                b2 += t * y2;
                b3 += t * y3;
            }
            memcpy(acc0, &a0, 64);
            memcpy(acc0 + 16, &a1, 64);
            memcpy(acc0 + 32, &a2, 64);
            memcpy(acc0 + 48, &a3, 64);
            memcpy(acc1, &b0, 64);
            memcpy(acc1 + 16, &b1, 64);
            memcpy(acc1 + 32, &b2, 64);
            memcpy(acc1 + 48, &b3, 64);
        }
    for (int r = 0; r < rows; r++)                      /* columns past the last 64 */
        for (int cc = c; cc < L; cc++) {
            float x = acc[(size_t)r * L + cc] * corr[r];
            for (int k = 0; k < nk; k++) x += pr[(size_t)r * ATT_CHUNK + k] * v[(size_t)k * D + cc];
            acc[(size_t)r * L + cc] = x;
        }
}

/* Thread scratch of one item, in floats: keys [ATT_CHUNK][D], the segment's accumulators
 * [ATT_ROWS][L], the rows' running totals [ATT_ROWS][L], probabilities [ATT_ROWS][ATT_CHUNK]. */
static size_t att_scratch_floats(int D, int L)
{
    return (size_t)ATT_CHUNK * D + (size_t)2 * ATT_ROWS * L + (size_t)ATT_ROWS * ATT_CHUNK;
}

/* The query rows of one (block, head group): row r = token t0 + r / nh, head h0 + r % nh. */
struct att_rows {
    int t0, h0, nh, rows, rows2, npmax;
    const struct model_seq *s;
    const float *qr[ATT_ROWS + 1];                      /* + the pad row of an odd count */
    int np[ATT_ROWS];                                   /* keys each row sees: pos + 1 */
};

static void att_rows_init(const struct att_job *j, int bi, int g, struct att_rows *w)
{
    const int D = j->kv->kv_dim;
    int nt = j->blk[bi + 1] - j->blk[bi];
    w->t0 = j->blk[bi];
    w->h0 = g * ATT_HEADS;
    w->nh = j->n_heads - w->h0 < ATT_HEADS ? j->n_heads - w->h0 : ATT_HEADS;
    w->rows = nt * w->nh;
    w->rows2 = (w->rows + 1) & ~1;                      /* an odd last row pairs with itself */
    w->s = &j->b->seqs[j->b->seq[w->t0]];
    w->npmax = 0;
    for (int r = 0; r < w->rows; r++) {
        int t = w->t0 + r / w->nh;
        w->qr[r] = j->q + ((size_t)t * j->n_heads + w->h0 + r % w->nh) * D;
        w->np[r] = j->b->pos[t] + 1;
        w->npmax = w->np[r] > w->npmax ? w->np[r] : w->npmax;
    }
    if (w->rows2 > w->rows) w->qr[w->rows] = w->qr[w->rows - 1];
}

/* Keys [k0, k1) for every row, an online softmax from scratch: per row the max m (-inf when the
 * row sees none of these keys), the sum l and the unnormalized accumulator acc [rows2][L]. */
static void att_segment(const struct att_job *j, const struct att_rows *w, int k0, int k1,
                        float *kbuf, float *pr, float *acc, float *m, float *l)
{
    const int D = j->kv->kv_dim, L = j->kv_lora;
    float corr[ATT_ROWS + 1];
    for (int r = 0; r < w->rows2; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }
    memset(acc, 0, (size_t)w->rows2 * L * sizeof(float));
    for (int p0 = k0; p0 < k1; p0 += ATT_CHUNK) {
        int nc = k1 - p0 < ATT_CHUNK ? k1 - p0 : ATT_CHUNK;
        int nc4 = (nc + 3) & ~3;
        for (int k = 0; k < nc; k++)
            kv_load(j->kv, kv_slot(j->kv, j->layer, w->s, p0 + k), kbuf + (size_t)k * D);
        for (int k = nc; k < nc4; k++)                  /* pad the last key tile (scores unused) */
            memcpy(kbuf + (size_t)k * D, kbuf, (size_t)D * sizeof(float));
        for (int r = 0; r < w->rows2; r += 2)
            for (int k = 0; k < nc4; k += 4)
                att_qk(w->qr[r], w->qr[r + 1], kbuf + (size_t)k * D, D, j->scale,
                       pr + (size_t)r * ATT_CHUNK + k, ATT_CHUNK);
        int kmax = 0;                                   /* keys any row still sees */
        for (int r = 0; r < w->rows2; r++) {
            float *p = pr + (size_t)r * ATT_CHUNK;
            int nk = r < w->rows ? w->np[r] - p0 : 0;
            nk = nk < nc ? nk : nc;
            if (nk <= 0) {                              /* this row's keys have ended */
                corr[r] = 1.0f;
                for (int k = 0; k < nc; k++) p[k] = 0.0f;
                continue;
            }
            kmax = nk > kmax ? nk : kmax;
            float mx = m[r];
            for (int k = 0; k < nk; k++) mx = p[k] > mx ? p[k] : mx;
            corr[r] = expf(m[r] - mx);                  /* 0 on the first chunk (m = -inf) */
            float sum = l[r] * corr[r];
            for (int k = 0; k < nk; k++) {
                p[k] = expf(p[k] - mx);
                sum += p[k];
            }
            for (int k = nk; k < nc; k++) p[k] = 0.0f;
            m[r] = mx;
            l[r] = sum;
        }
        att_pv(acc, corr, pr, w->rows2, kbuf, D, L, kmax);
    }
}

/* A = A * ca + a * cb over n floats */
OPS_CLONES static void att_blend(float *restrict A, float ca, const float *restrict a, float cb,
                                 int n)
{
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++) A[i + k] = A[i + k] * ca + a[i + k] * cb;
    for (; i < n; i++) A[i] = A[i] * ca + a[i] * cb;
}

/* Fold one segment's (m, l, a) of a row into the row's running (M, Lt, A); segments in key
 * order, the first one copied as is (so a row within one segment is exactly the plain online
 * softmax). A segment the row does not reach (m = -inf) is skipped. */
static void att_merge(float *M, float *Lt, float *A, float m, float l, const float *a, int L,
                      int first)
{
    if (m == -INFINITY) return;
    if (first) {
        *M = m;
        *Lt = l;
        memcpy(A, a, (size_t)L * sizeof(float));
        return;
    }
    float mx = m > *M ? m : *M;
    float ca = expf(*M - mx), cb = expf(m - mx);
    *Lt = *Lt * ca + l * cb;
    *M = mx;
    att_blend(A, ca, a, cb, L);
}

static void att_finish(const struct att_job *j, const struct att_rows *w, const float *A,
                       const float *Lt)
{
    const int L = j->kv_lora;
    for (int r = 0; r < w->rows; r++) {
        float *dst = j->out + ((size_t)(w->t0 + r / w->nh) * j->n_heads + w->h0 + r % w->nh) * L;
        float inv = 1.0f / Lt[r];
        memcpy(dst, A + (size_t)r * L, (size_t)L * sizeof(float));
        scale_f32(dst, inv, L);
    }
}

/* One (block, head group), all its key segments in order. */
static void att_whole(const struct att_job *j, int bi, int g, float *scr)
{
    const int D = j->kv->kv_dim, L = j->kv_lora;
    float *kbuf = scr, *acc = kbuf + (size_t)ATT_CHUNK * D;
    float *tot = acc + (size_t)ATT_ROWS * L, *pr = tot + (size_t)ATT_ROWS * L;
    struct att_rows w;
    float m[ATT_ROWS + 1], l[ATT_ROWS + 1], M[ATT_ROWS], Lt[ATT_ROWS];
    att_rows_init(j, bi, g, &w);
    for (int k0 = 0; k0 < w.npmax; k0 += ATT_SEG) {
        int k1 = w.npmax - k0 < ATT_SEG ? w.npmax : k0 + ATT_SEG;
        att_segment(j, &w, k0, k1, kbuf, pr, acc, m, l);
        for (int r = 0; r < w.rows; r++)
            att_merge(&M[r], &Lt[r], tot + (size_t)r * L, m[r], l[r], acc + (size_t)r * L, L,
                      k0 == 0);
    }
    att_finish(j, &w, tot, Lt);
}

/* Plain mode: item = (block, head group), the last blocks (the most keys) first. */
static void att_items(void *ctx, int64_t i0, int64_t i1, int ti)
{
    const struct att_job *j = ctx;
    for (int64_t it = i0; it < i1; it++)
        att_whole(j, j->n_blk - 1 - (int)(it / j->groups), (int)(it % j->groups), j->c->thr[ti].p);
}

/* Split mode, for batches whose work is dominated by a few (block, head group)s over long keys
 * (one decode stream, a small prefill chunk beside short decodes): those "big" ones are cut into
 * one item per ATT_SEG-key segment, each writing its partial (m, l, acc) to part; att_combine
 * then folds each big one's partials in key order, the same folds att_whole does, so the output
 * is bitwise the same as in plain mode. Items: the segments of the big ones first, then the
 * others whole. Partial of segment item i at part + i * att_part_floats(L): acc [ATT_ROWS][L],
 * m [ATT_ROWS], l [ATT_ROWS]. */
static size_t att_part_floats(int L) { return (size_t)ATT_ROWS * (L + 2); }

static void att_split_items(void *ctx, int64_t i0, int64_t i1, int ti)
{
    const struct att_job *j = ctx;
    const int D = j->kv->kv_dim, L = j->kv_lora;
    float *kbuf = j->c->thr[ti].p;
    float *acc = kbuf + (size_t)ATT_CHUNK * D;
    float *pr = acc + (size_t)2 * ATT_ROWS * L;
    for (int64_t it = i0; it < i1; it++) {
        int bg = j->item_bg[it], seg = j->item_seg[it];
        if (seg < 0) {
            att_whole(j, bg / j->groups, bg % j->groups, kbuf);
            continue;
        }
        struct att_rows w;
        float m[ATT_ROWS + 1], l[ATT_ROWS + 1];
        att_rows_init(j, bg / j->groups, bg % j->groups, &w);
        int k0 = seg * ATT_SEG, k1 = w.npmax - k0 < ATT_SEG ? w.npmax : k0 + ATT_SEG;
        float *part = j->part + (size_t)it * att_part_floats(L);
        att_segment(j, &w, k0, k1, kbuf, pr, part, m, l);
        memcpy(part + (size_t)ATT_ROWS * L, m, (size_t)w.rows * sizeof(float));
        memcpy(part + (size_t)ATT_ROWS * L + ATT_ROWS, l, (size_t)w.rows * sizeof(float));
    }
}

/* item = one big (block, head group): fold its segments' partials, write its rows */
static void att_combine(void *ctx, int64_t i0, int64_t i1, int ti)
{
    const struct att_job *j = ctx;
    const int L = j->kv_lora;
    float *tot = (float *)j->c->thr[ti].p + (size_t)ATT_CHUNK * j->kv->kv_dim + (size_t)ATT_ROWS * L;
    for (int64_t k = i0; k < i1; k++) {
        int bg = j->item_bg[j->big_item0[k]];
        struct att_rows w;
        float M[ATT_ROWS], Lt[ATT_ROWS];
        att_rows_init(j, bg / j->groups, bg % j->groups, &w);
        for (int it = j->big_item0[k]; it < j->big_item0[k + 1]; it++) {
            const float *part = j->part + (size_t)it * att_part_floats(L);
            const float *m = part + (size_t)ATT_ROWS * L, *l = m + ATT_ROWS;
            for (int r = 0; r < w.rows; r++)
                att_merge(&M[r], &Lt[r], tot + (size_t)r * L, m[r], l[r], part + (size_t)r * L,
                          L, it == j->big_item0[k]);
        }
        att_finish(j, &w, tot, Lt);
    }
}

/* Plan split mode into c->att_tab / att_part and the job; 0 = plain mode, 1 = split, negative =
 * out of memory. Big: a (block, head group) over more than one segment whose work (rows x keys)
 * exceeds 1/(2 n_threads) of the batch's; at most ATT_SPLIT_MAX x n_threads segment items
 * (bounded partial memory), else plain mode. */
#define ATT_SPLIT_MAX 64
static int att_plan_split(struct ops_cpu *c, struct att_job *j)
{
    const struct model_batch *b = j->b;
    const int64_t n_bg = (int64_t)j->n_blk * j->groups;
    if (c->n_threads == 1) return 0;
    double total = 0, maxw = 0;                         /* work: rows x keys */
    for (int bi = 0; bi < j->n_blk; bi++) {
        int np = 0;
        for (int t = j->blk[bi]; t < j->blk[bi + 1]; t++) np = b->pos[t] + 1 > np ? b->pos[t] + 1 : np;
        double w = (double)(j->blk[bi + 1] - j->blk[bi]) * np;
        total += w * j->n_heads;
        maxw = w > maxw ? w : maxw;
    }
    double thresh = total / (2.0 * c->n_threads);
    int hg = j->n_heads < ATT_HEADS ? j->n_heads : ATT_HEADS;
    if (maxw * hg <= thresh) return 0;
    int64_t n_seg = 0, n_big = 0;
    int32_t *item_bg = NULL, *item_seg = NULL, *big_item0 = NULL;
    for (int pass = 0; pass < 2; pass++) {              /* count, then fill */
        int64_t it = 0, k = 0;
        for (int phase = 0; phase < 2; phase++)         /* big segments first, then the rest */
            for (int bi = j->n_blk - 1; bi >= 0; bi--) {
                int np = 0;
                for (int t = j->blk[bi]; t < j->blk[bi + 1]; t++)
                    np = b->pos[t] + 1 > np ? b->pos[t] + 1 : np;
                for (int g = 0; g < j->groups; g++) {
                    int nh = j->n_heads - g * ATT_HEADS < ATT_HEADS ? j->n_heads - g * ATT_HEADS
                                                                    : ATT_HEADS;
                    double w = (double)(j->blk[bi + 1] - j->blk[bi]) * nh * np;
                    int big = np > ATT_SEG && w > thresh, bg = bi * j->groups + g;
                    if (phase == 0 && big) {
                        if (pass == 1) big_item0[k] = (int32_t)it;
                        k++;
                        for (int s = 0; s < (np + ATT_SEG - 1) / ATT_SEG; s++, it++)
                            if (pass == 1) {
                                item_bg[it] = bg;
                                item_seg[it] = s;
                            }
                    } else if (phase == 1 && !big) {
                        if (pass == 1) {
                            item_bg[it] = bg;
                            item_seg[it] = -1;
                        }
                        it++;
                    }
                }
            }
        if (pass == 0) {
            n_big = k;
            n_seg = it - (n_bg - n_big);
            if (n_big == 0 || n_seg > (int64_t)ATT_SPLIT_MAX * c->n_threads) return 0;
            int64_t n_items = n_seg + n_bg - n_big;
            size_t ints = (size_t)(2 * n_items + n_big + 1);
            if (scratch_reserve(&c->att_tab, ints * sizeof(int32_t)) ||
                scratch_reserve(&c->att_part, (size_t)n_seg * att_part_floats(j->kv_lora) *
                                                  sizeof(float)))
                return ERR_NOMEM;
            item_bg = c->att_tab.p;
            item_seg = item_bg + n_items;
            big_item0 = item_seg + n_items;
        } else {
            big_item0[k] = (int32_t)n_seg;
            j->item_bg = item_bg;
            j->item_seg = item_seg;
            j->big_item0 = big_item0;
        }
    }
    j->n_items = n_seg + n_bg - n_big;
    j->n_big = (int)n_big;
    j->part = c->att_part.p;
    return 1;
}

static void cpu_mla_attn(struct ops *o, const struct model_kv *kv, int layer,
                         const struct model_batch *b, int n_heads, int kv_lora, float scale,
                         const float *q, float *out)
{
    struct ops_cpu *c = cpu_of(o);
    const int n = b->n_tokens;
    if (n <= 0) return;
    if (!thr_reserve(c, att_scratch_floats(kv->kv_dim, kv_lora) * sizeof(float))) return;
    if (scratch_reserve(&c->att_blk, ((size_t)n + 1) * sizeof(int32_t))) goto nomem;
    /* blocks: runs of consecutive tokens of one sequence, at most ATT_ROWS rows each */
    int hg = n_heads < ATT_HEADS ? n_heads : ATT_HEADS;
    int per_blk = ATT_ROWS / hg;
    int32_t *blk = c->att_blk.p;
    int n_blk = 0;
    for (int t = 0; t < n; t++)
        if (t == 0 || b->seq[t] != b->seq[t - 1] || t - blk[n_blk - 1] == per_blk)
            blk[n_blk++] = t;
    blk[n_blk] = n;
    struct att_job j = {.c = c, .kv = kv, .layer = layer, .b = b, .n_heads = n_heads,
                        .kv_lora = kv_lora, .groups = (n_heads + ATT_HEADS - 1) / ATT_HEADS,
                        .scale = scale, .q = q, .out = out, .blk = blk, .n_blk = n_blk};
    int rc = att_plan_split(c, &j);
    if (rc < 0) goto nomem;
    if (rc == 0) {
        wpool_run(c->pool, att_items, &j, (int64_t)n_blk * j.groups, 1);
        return;
    }
    wpool_run(c->pool, att_split_items, &j, j.n_items, 1);
    wpool_run(c->pool, att_combine, &j, j.n_big, 1);
    return;
nomem:
    ops__fail(o, ERR_NOMEM, "ops_cpu: out of memory for attention scratch");
}

/* ---------------------------------------------------------------- router */

/* Index of the largest v[i] among i < n with v[i] > -inf, lowest index on ties; -1 if none. */
static int argmax_f(const float *v, int n)
{
    int best = -1;
    for (int i = 0; i < n; i++)
        if (v[i] > -INFINITY && (best < 0 || v[i] > v[best])) best = i;
    return best;
}

static void cpu_router(struct ops *o, const struct ops_router *r, const float *logits,
                       const float *bias, int n, int32_t *ids, float *w)
{
    struct ops_cpu *c = cpu_of(o);
    const int E = r->n_expert;
    if (!thr_reserve(c, (size_t)(3 * E + r->n_group) * sizeof(float))) return;
    float *s = c->thr[0].p, *sel = s + E, *tmp = sel + E, *gs = tmp + E;
    for (int t = 0; t < n; t++) {
        const float *lg = logits + (size_t)t * E;
        if (r->softmax) {
            float mx = lg[0], sum = 0.0f;
            for (int e = 1; e < E; e++) mx = lg[e] > mx ? lg[e] : mx;
            for (int e = 0; e < E; e++) sum += (s[e] = expf(lg[e] - mx));
            for (int e = 0; e < E; e++) sel[e] = (s[e] /= sum);
        } else {
            for (int e = 0; e < E; e++) {
                s[e] = 1.0f / (1.0f + expf(-lg[e]));
                sel[e] = bias ? s[e] + bias[e] : s[e];
            }
        }
        if (r->n_group > 1) {
            int gsz = E / r->n_group;
            for (int g = 0; g < r->n_group; g++) {
                const float *v = sel + (size_t)g * gsz;
                if (r->softmax) {                       /* V2: max score of the group */
                    gs[g] = v[argmax_f(v, gsz)];
                } else {                                /* V3: sum of the two largest */
                    memcpy(tmp, v, (size_t)gsz * sizeof(float));
                    int a = argmax_f(tmp, gsz);
                    float top = tmp[a];
                    tmp[a] = -INFINITY;
                    int b2 = gsz > 1 ? argmax_f(tmp, gsz) : -1;
                    gs[g] = top + (b2 >= 0 ? tmp[b2] : 0.0f);
                }
            }
            /* keep the topk_group best groups (ties: lower index); mask the rest with -inf */
            for (int g = 0; g < r->n_group; g++) tmp[g] = 0.0f;
            for (int k = 0; k < r->topk_group; k++) {
                int g = argmax_f(gs, r->n_group);
                if (g < 0) break;
                tmp[g] = 1.0f;
                gs[g] = -INFINITY;
            }
            for (int g = 0; g < r->n_group; g++)
                if (tmp[g] == 0.0f)
                    for (int e = 0; e < gsz; e++) sel[(size_t)g * gsz + e] = -INFINITY;
        }
        int32_t *it = ids + (size_t)t * r->top_k;
        float *wt = w + (size_t)t * r->top_k, sum = 0.0f;
        for (int k = 0; k < r->top_k; k++) {
            int e = argmax_f(sel, E);
            if (e < 0) e = 0;                           /* cannot happen with top_k <= kept experts */
            sel[e] = -INFINITY;
            it[k] = e;
            wt[k] = s[e];
            sum += s[e];
        }
        for (int k = 0; k < r->top_k; k++) {
            if (r->norm_topk_prob) wt[k] /= sum;
            wt[k] *= r->scale;
        }
    }
}

/* ---------------------------------------------------------------- routed experts */

static void cpu_moe(struct ops *o, const struct ops_moe *m, const float *x, int n,
                    const int32_t *ids, const float *w, int top_k, float *y)
{
    struct ops_cpu *c = cpu_of(o);
    char err[ERR_LEN];
    const struct cpuq_mat *g = m->mats, *u = g + m->n_expert, *d = u + m->n_expert;
    int rc = cpuq_moe_forward(c->pool, c->q, g, u, d, m->n_expert, n, m->hidden, x, top_k, ids,
                              w, y, c->moe, err);
    if (rc) ops__fail(o, rc, err);
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
    free(c->att_blk.p);
    free(c->att_tab.p);
    free(c->att_part.p);
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
    .embed = cpu_embed,
    .linear = cpu_linear,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .head_matmul = cpu_head_matmul,
    .kv_store = cpu_kv_store,
    .mla_attn = cpu_mla_attn,
    .router = cpu_router,
    .moe = cpu_moe,
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
    if (rc) {
        cpu_destroy(&c->base);
        return rc;
    }
    snprintf(c->name, sizeof c->name, "cpu/%s%s", c->q->isa_name, c->w8a16 ? "/w8a16" : "");
    *out = &c->base;
    return 0;
}
