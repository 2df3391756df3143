/* moe.c - routed experts of one MoE layer on the worker pool (moe.h).
 *
 * One call is five pool jobs, each a pure function of the previous ones' outputs:
 *   1. per token: quantize x_t to the activation format of gate (and of up, if different), into
 *      the slot of every (t, k) pair; pairs are numbered expert by expert (counting sort, then
 *      token order), so one expert's activations are contiguous;
 *   2. per (expert, row block of inter): gate and up rows against all of the expert's pairs,
 *      then h = SiLU(g) * u in place of g;
 *   3. per pair: quantize h to down's activation format;
 *   4. per (expert, row block of hidden): down rows against the expert's pairs -> d[pair];
 *   5. per token: out_t = sum over k in order of w[t][k] * d[pair(t, k)].
 * Every output element is written by exactly one work item, and the items (row blocks whose
 * size depends only on the routes) do not depend on the thread count, so results are bitwise
 * identical for any number of threads. Each weight row is read once per call, while it is dotted
 * with all of its expert's tokens (cpuq_matmul_rows / the FP8 kernel take several tokens per row).
 *
 * Activation formats: GGML types use their vec_dot_type rows (cpuq_row_size bytes); FP8 uses a
 * row of floats [cols e4m3 values | ceil(cols/128) scales] so the FP8 kernel reads both with
 * one stride.
 * Threads: the owner thread runs the jobs; the scratch is touched by one call at a time.
 */
#include "kernels/cpu/moe.h"

#include "common/err.h"
#include "kernels/cpu/fp8.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* weight rows per work item: small items balance 1-token decode; with several tokens per expert
 * bigger items let the multi-token kernels reuse packed activations (AMX) over more rows */
#define MOE_RB_SMALL 64
#define MOE_RB_LARGE 128

struct buf {
    void *p;
    size_t cap;
};

struct cpuq_moe_scratch {
    struct buf cnt, base, active, pair_tok, pair_of;
    struct buf act_g, act_u, act_d; /* per pair activations */
    struct buf g, u, d;             /* per pair fp32 outputs */
};

static int buf_need(struct buf *b, size_t n)
{
    if (n <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < n) cap *= 2;
    void *p = NULL;
    if (posix_memalign(&p, 64, cap) != 0) return ERR_NOMEM;
    free(b->p);
    b->p = p;
    b->cap = cap;
    return 0;
}

int cpuq_moe_scratch_create(struct cpuq_moe_scratch **out, char *err)
{
    *out = calloc(1, sizeof **out);
    return *out ? 0 : err_set(err, ERR_NOMEM, "moe: out of memory");
}

void cpuq_moe_scratch_destroy(struct cpuq_moe_scratch *s)
{
    if (!s) return;
    struct buf *all[] = {&s->cnt,   &s->base,  &s->active, &s->pair_tok, &s->pair_of, &s->act_g,
                         &s->act_u, &s->act_d, &s->g,      &s->u,        &s->d};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]->p);
    free(s);
}

/* ---- activation formats */

static size_t act_bytes(const struct cpuq_ops *o, int type, int64_t cols)
{
    if (type == QTYPE_F8_E4M3) return (size_t)(cols + cpuq_fp8_nblk(cols)) * sizeof(float);
    return cpuq_row_size(o->type[type].vec_dot_type, cols);
}

static void act_quant(const struct cpuq_ops *o, const struct cpuq_fp8_kern *k8, int ue8m0, int type,
                      const float *x, int64_t cols, void *dst)
{
    if (type == QTYPE_F8_E4M3) {
        float *f = dst;
        k8->act_quant(cols, x, f, f + cols, ue8m0);
    } else {
        o->type[o->type[type].vec_dot_type].from_float(x, dst, cols);
    }
}

/* same activation format? (then gate and up share the quantized rows) */
static int same_act(const struct cpuq_ops *o, int t1, int t2)
{
    if (t1 == QTYPE_F8_E4M3 || t2 == QTYPE_F8_E4M3) return t1 == t2;
    return o->type[t1].vec_dot_type == o->type[t2].vec_dot_type;
}

/* Prefetch the first bytes of rows [r0, r1): the kernels prefetch a few KB ahead of where they
 * read, which leaves the start of each work item cold. */
static void prefetch_rows(const struct cpuq_mat *m, int64_t r0, int64_t r1)
{
    size_t n = (size_t)(r1 - r0) * m->row_bytes;
    if (n > 4096) n = 4096;
    const char *p = (const char *)m->data + (size_t)r0 * m->row_bytes;
    for (size_t o = 0; o < n; o += 64) __builtin_prefetch(p + o);
}

/* y[t * ldy + r] = row r of m . act row t, r in [r0, r1), t < ntok */
static void mat_rows(const struct cpuq_ops *o, const struct cpuq_fp8_kern *k8,
                     const struct cpuq_mat *m, int64_t r0, int64_t r1, const void *act,
                     int64_t ntok, float *y, int64_t ldy)
{
    if (m->type == QTYPE_F8_E4M3) {
        int64_t nb = cpuq_fp8_nblk(m->cols), stride = m->cols + nb;
        const float *a = act;
        for (int64_t r = r0; r < r1; r++)
            k8->dot(m->cols, (const uint8_t *)m->data + (size_t)r * m->row_bytes,
                    m->scale + (r / CPUQ_FP8_BLOCK) * nb, (int)ntok, a, stride, a + m->cols, stride,
                    y + r, ldy);
        return;
    }
    cpuq_matmul_rows(o, m->type, m->data, m->row_bytes, r0, r1, m->cols, act, ntok, y, ldy);
}

/* ---- the call */

struct moe_ctx {
    const struct cpuq_ops *o;
    struct cpuq_fp8_kern k8;
    int ue8m0; /* FP8 activation scales rounded up to powers of two */
    const struct cpuq_mat *gate, *up, *down;
    int n_tok, top_k, hidden, inter, share_gu;
    int gt, ut, dt; /* the routed experts' types (an unrouted expert may be zeroed) */
    const float *x, *w;
    float *out;
    const int32_t *cnt, *base, *active, *pair_of;
    int n_active;
    int64_t rb, nrb_inter, nrb_hidden;
    size_t ab_g, ab_u, ab_d;
    char *act_g, *act_u, *act_d;
    float *g, *u, *d;
};

static void job_quant_tokens(void *arg, int64_t b, int64_t e, int thread_idx)
{
    struct moe_ctx *c = arg;
    (void)thread_idx;
    for (int64_t t = b; t < e; t++) {
        const float *xt = c->x + t * c->hidden;
        int first = -1;
        for (int k = 0; k < c->top_k; k++) {
            int p = c->pair_of[t * c->top_k + k];
            if (p < 0) continue;
            if (first < 0) {
                act_quant(c->o, &c->k8, c->ue8m0, c->gt, xt, c->hidden,
                          c->act_g + (size_t)p * c->ab_g);
                if (!c->share_gu)
                    act_quant(c->o, &c->k8, c->ue8m0, c->ut, xt, c->hidden,
                              c->act_u + (size_t)p * c->ab_u);
                first = p;
            } else {
                memcpy(c->act_g + (size_t)p * c->ab_g, c->act_g + (size_t)first * c->ab_g, c->ab_g);
                if (!c->share_gu)
                    memcpy(c->act_u + (size_t)p * c->ab_u, c->act_u + (size_t)first * c->ab_u,
                           c->ab_u);
            }
        }
    }
}

static void job_gate_up(void *arg, int64_t b, int64_t e, int thread_idx)
{
    struct moe_ctx *c = arg;
    (void)thread_idx;
    for (int64_t it = b; it < e; it++) {
        int ex = c->active[it / c->nrb_inter];
        int64_t r0 = (it % c->nrb_inter) * c->rb, r1 = r0 + c->rb;
        if (r1 > c->inter) r1 = c->inter;
        int64_t base = c->base[ex], n = c->cnt[ex];
        float *g = c->g + base * c->inter, *u = c->u + base * c->inter;
        prefetch_rows(&c->gate[ex], r0, r1);
        prefetch_rows(&c->up[ex], r0, r1);
        const char *au = c->share_gu ? c->act_g : c->act_u;
        size_t abu = c->share_gu ? c->ab_g : c->ab_u;
        mat_rows(c->o, &c->k8, &c->gate[ex], r0, r1, c->act_g + (size_t)base * c->ab_g, n, g,
                 c->inter);
        mat_rows(c->o, &c->k8, &c->up[ex], r0, r1, au + (size_t)base * abu, n, u, c->inter);
        for (int64_t t = 0; t < n; t++)
            for (int64_t r = r0; r < r1; r++) {
                float gv = g[t * c->inter + r];
                g[t * c->inter + r] = gv / (1.0f + expf(-gv)) * u[t * c->inter + r];
            }
    }
}

static void job_quant_inter(void *arg, int64_t b, int64_t e, int thread_idx)
{
    struct moe_ctx *c = arg;
    (void)thread_idx;
    for (int64_t p = b; p < e; p++)
        act_quant(c->o, &c->k8, c->ue8m0, c->dt, c->g + p * c->inter, c->inter,
                  c->act_d + (size_t)p * c->ab_d);
}

static void job_down(void *arg, int64_t b, int64_t e, int thread_idx)
{
    struct moe_ctx *c = arg;
    (void)thread_idx;
    for (int64_t it = b; it < e; it++) {
        int ex = c->active[it / c->nrb_hidden];
        int64_t r0 = (it % c->nrb_hidden) * c->rb, r1 = r0 + c->rb;
        if (r1 > c->hidden) r1 = c->hidden;
        int64_t base = c->base[ex];
        prefetch_rows(&c->down[ex], r0, r1);
        mat_rows(c->o, &c->k8, &c->down[ex], r0, r1, c->act_d + (size_t)base * c->ab_d, c->cnt[ex],
                 c->d + base * c->hidden, c->hidden);
    }
}

static void job_reduce(void *arg, int64_t b, int64_t e, int thread_idx)
{
    struct moe_ctx *c = arg;
    (void)thread_idx;
    for (int64_t t = b; t < e; t++) {
        float *o = c->out + t * c->hidden;
        memset(o, 0, sizeof(float) * (size_t)c->hidden);
        for (int k = 0; k < c->top_k; k++) {
            int p = c->pair_of[t * c->top_k + k];
            if (p < 0) continue;
            float wk = c->w[t * c->top_k + k];
            const float *d = c->d + (int64_t)p * c->hidden;
            for (int64_t i = 0; i < c->hidden; i++) {
                float term = wk * d[i];
                o[i] += term;
            }
        }
    }
}

/* check one matrix against the expected type and shape */
static int check_mat(const struct cpuq_ops *o, const struct cpuq_mat *m, const char *what, int e,
                     int type, int64_t rows, int64_t cols, char *err)
{
    if (m->type != type)
        return err_set(err, ERR_INVAL, "moe: %s of expert %d has type %s, expected %s", what, e,
                       qtype_name(m->type), qtype_name(type));
    if (m->rows != rows || m->cols != cols)
        return err_set(err, ERR_INVAL, "moe: %s of expert %d is %lldx%lld, expected %lldx%lld",
                       what, e, (long long)m->rows, (long long)m->cols, (long long)rows,
                       (long long)cols);
    if (!m->data) return err_set(err, ERR_INVAL, "moe: %s of expert %d has no data", what, e);
    if (type == QTYPE_F8_E4M3) {
        if (!m->scale)
            return err_set(err, ERR_INVAL, "moe: FP8 %s of expert %d has no scale", what, e);
        if (m->row_bytes < (size_t)cols)
            return err_set(err, ERR_INVAL, "moe: %s of expert %d: row_bytes too small", what, e);
        return 0;
    }
    if (type < 0 || type >= QTYPE_COUNT_ || !o->type[type].vec_dot)
        return err_set(err, ERR_UNSUPPORTED, "moe: %s type %s has no dot product", what,
                       qtype_name(type));
    size_t rb = cpuq_row_size(type, cols);
    if (rb == 0 || cpuq_row_size(o->type[type].vec_dot_type, cols) == 0)
        return err_set(err, ERR_INVAL, "moe: %s of expert %d: %lld columns are not whole %s blocks",
                       what, e, (long long)cols, qtype_name(type));
    if (m->row_bytes < rb)
        return err_set(err, ERR_INVAL, "moe: %s of expert %d: row_bytes too small", what, e);
    return 0;
}

int cpuq_moe_forward(struct wpool *p, const struct cpuq_ops *o, const struct cpuq_mat *gate,
                     const struct cpuq_mat *up, const struct cpuq_mat *down, int n_experts,
                     int n_tok, int hidden, const float *x, int top_k, const int32_t *ids,
                     const float *w, float *out, int fp8_ue8m0, struct cpuq_moe_scratch *s,
                     char *err)
{
    if (n_tok < 0 || top_k < 0 || n_experts < 1 || hidden < 1)
        return err_set(err, ERR_INVAL,
                       "moe: bad sizes (tokens %d, top_k %d, experts %d, hidden %d)", n_tok, top_k,
                       n_experts, hidden);
    if (n_tok == 0) return 0;
    if (!o || !gate || !up || !down || !x || !ids || !w || !out || !s)
        return err_set(err, ERR_INVAL, "moe: NULL argument");
    int64_t n_slots = (int64_t)n_tok * top_k;
    int rc;
    if ((rc = buf_need(&s->cnt, sizeof(int32_t) * ((size_t)n_experts + 1))) ||
        (rc = buf_need(&s->base, sizeof(int32_t) * ((size_t)n_experts + 1))) ||
        (rc = buf_need(&s->active, sizeof(int32_t) * (size_t)n_experts)) ||
        (rc = buf_need(&s->pair_of, sizeof(int32_t) * ((size_t)n_slots + 1))))
        return err_set(err, rc, "moe: out of memory");
    int32_t *cnt = s->cnt.p, *base = s->base.p, *active = s->active.p, *pair_of = s->pair_of.p;

    /* count pairs per expert */
    memset(cnt, 0, sizeof(int32_t) * (size_t)n_experts);
    for (int64_t i = 0; i < n_slots; i++) {
        if (ids[i] == -1) continue;
        if (ids[i] < 0 || ids[i] >= n_experts)
            return err_set(err, ERR_INVAL, "moe: expert id %d out of range [0, %d)", ids[i],
                           n_experts);
        cnt[ids[i]]++;
    }
    int n_active = 0, first = -1;
    int64_t n_pairs = 0;
    for (int e = 0; e < n_experts; e++) {
        base[e] = (int32_t)n_pairs;
        n_pairs += cnt[e];
        if (cnt[e]) {
            active[n_active++] = e;
            if (first < 0) first = e;
        }
    }
    if (n_active == 0) {
        memset(out, 0, sizeof(float) * (size_t)n_tok * (size_t)hidden);
        return 0;
    }

    /* shapes and types: every active expert like the first one */
    int gt = gate[first].type, ut = up[first].type, dt = down[first].type;
    int64_t inter = gate[first].rows;
    if (inter < 1 || inter > (1 << 30)) return err_set(err, ERR_INVAL, "moe: bad inter size");
    for (int i = 0; i < n_active; i++) {
        int e = active[i];
        if ((rc = check_mat(o, &gate[e], "gate", e, gt, inter, hidden, err)) ||
            (rc = check_mat(o, &up[e], "up", e, ut, inter, hidden, err)) ||
            (rc = check_mat(o, &down[e], "down", e, dt, hidden, inter, err)))
            return rc;
    }

    /* number the pairs expert by expert, in token order within an expert */
    memset(cnt, 0, sizeof(int32_t) * (size_t)n_experts);
    for (int64_t i = 0; i < n_slots; i++)
        pair_of[i] = ids[i] == -1 ? -1 : base[ids[i]] + cnt[ids[i]]++;

    struct moe_ctx c = {
        .o = o,
        .ue8m0 = fp8_ue8m0,
        .gate = gate,
        .up = up,
        .down = down,
        .n_tok = n_tok,
        .top_k = top_k,
        .hidden = hidden,
        .inter = (int)inter,
        .share_gu = same_act(o, gt, ut),
        .gt = gt,
        .ut = ut,
        .dt = dt,
        .x = x,
        .w = w,
        .out = out,
        .cnt = cnt,
        .base = base,
        .active = active,
        .pair_of = pair_of,
        .n_active = n_active,
        .rb = n_pairs >= 4 * (int64_t)n_active ? MOE_RB_LARGE : MOE_RB_SMALL,
        .ab_g = act_bytes(o, gt, hidden),
        .ab_u = act_bytes(o, ut, hidden),
        .ab_d = act_bytes(o, dt, inter),
    };
    c.nrb_inter = (inter + c.rb - 1) / c.rb;
    c.nrb_hidden = (hidden + c.rb - 1) / c.rb;
    if ((rc = cpuq_fp8_kern_get(o->isa, &c.k8, err))) return rc;
    size_t np = (size_t)n_pairs;
    if ((rc = buf_need(&s->act_g, np * c.ab_g)) ||
        (!c.share_gu && (rc = buf_need(&s->act_u, np * c.ab_u))) ||
        (rc = buf_need(&s->act_d, np * c.ab_d)) ||
        (rc = buf_need(&s->g, np * (size_t)inter * sizeof(float))) ||
        (rc = buf_need(&s->u, np * (size_t)inter * sizeof(float))) ||
        (rc = buf_need(&s->d, np * (size_t)hidden * sizeof(float))))
        return err_set(err, rc, "moe: out of memory for %lld pairs", (long long)n_pairs);
    c.act_g = s->act_g.p;
    c.act_u = s->act_u.p;
    c.act_d = s->act_d.p;
    c.g = s->g.p;
    c.u = s->u.p;
    c.d = s->d.p;

    wpool_run(p, job_quant_tokens, &c, n_tok, 1);
    wpool_run(p, job_gate_up, &c, (int64_t)n_active * c.nrb_inter, 1);
    wpool_run(p, job_quant_inter, &c, n_pairs, 1);
    wpool_run(p, job_down, &c, (int64_t)n_active * c.nrb_hidden, 1);
    wpool_run(p, job_reduce, &c, n_tok, 1);
    return 0;
}
