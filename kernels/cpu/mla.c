/* mla.c - absorbed MLA attention over the paged latent cache on the worker pool (see mla.h).
 *
 * Threads: work items run on the pool; each writes its own output rows and uses the scratch of
 * the thread that runs it (thread_idx). Memory: the scratch grows on the first call of a given
 * size and is then reused.
 */
#include "kernels/cpu/mla.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "kernels/cpu/f32.h"
#include "kernels/cpu/fpconv.h"

#define ATT_CHUNK 64 /* keys per online-softmax step */
#define ATT_HEADS 8  /* heads per attention work item */
#define ATT_ROWS 16  /* (token, head) query rows per attention work item at most */
#define ATT_SEG 256  /* keys per attention segment (split mode: per work item) */

struct buf {
    void *p;
    size_t size;
};

struct cpuq_mla_scratch {
    struct buf *thr; /* [n_thr] per-thread scratch */
    int n_thr;
    float **thr_p;   /* [n_thr] the same pointers, for the job */
    struct buf blk;  /* first batch token of each query block */
    struct buf tab;  /* split-mode item tables */
    struct buf part; /* split-mode partial results */
};

/* Grow a buffer to at least `size` bytes (64-byte aligned); 0 or ERR_NOMEM. */
static int buf_reserve(struct buf *s, size_t size)
{
    if (s->size >= size) return 0;
    void *p = aligned_alloc(64, (size + 63) / 64 * 64);
    if (!p) return ERR_NOMEM;
    free(s->p);
    s->p = p;
    s->size = size;
    return 0;
}

int cpuq_mla_scratch_create(struct cpuq_mla_scratch **out, char *err)
{
    *out = calloc(1, sizeof **out);
    return *out ? 0 : err_set(err, ERR_NOMEM, "mla: out of memory");
}

void cpuq_mla_scratch_destroy(struct cpuq_mla_scratch *s)
{
    if (!s) return;
    for (int i = 0; i < s->n_thr; i++) free(s->thr[i].p);
    free(s->thr);
    free(s->thr_p);
    free(s->blk.p);
    free(s->tab.p);
    free(s->part.p);
    free(s);
}

/* Per-thread scratch of `size` bytes for n participants. */
static int thr_reserve(struct cpuq_mla_scratch *s, int n, size_t size)
{
    if (n > s->n_thr) {
        struct buf *t = realloc(s->thr, (size_t)n * sizeof *t);
        if (!t) return ERR_NOMEM;
        s->thr = t;
        float **tp = realloc(s->thr_p, (size_t)n * sizeof *tp);
        if (!tp) return ERR_NOMEM;
        s->thr_p = tp;
        memset(s->thr + s->n_thr, 0, (size_t)(n - s->n_thr) * sizeof *t);
        s->n_thr = n;
    }
    for (int i = 0; i < n; i++) {
        if (buf_reserve(&s->thr[i], size)) return ERR_NOMEM;
        s->thr_p[i] = s->thr[i].p;
    }
    return 0;
}

static size_t elem_size(const struct cpuq_mla_cache *c) { return c->f32 ? 4 : 2; }

static void *kv_slot(const struct cpuq_mla_cache *c, const int32_t *blocks, int p)
{
    int32_t blk = blocks[p / c->block_tokens];
    size_t row = (size_t)blk * c->block_tokens + (size_t)(p % c->block_tokens);
    return (char *)c->data + row * c->kv_dim * elem_size(c);
}

void cpuq_mla_store(const struct cpuq_mla_cache *c, const struct cpuq_mla_batch *b, const float *x)
{
    for (int t = 0; t < b->n; t++) {
        void *dst = kv_slot(c, b->blocks[b->seq[t]], b->pos[t]);
        const float *src = x + (size_t)t * c->kv_dim;
        if (c->f32) {
            memcpy(dst, src, (size_t)c->kv_dim * sizeof(float));
            continue;
        }
        uint16_t *d16 = dst;
        for (int i = 0; i < c->kv_dim; i++) d16[i] = fp_f32_to_bf16(src[i]);
    }
}

/* One cached row as fp32 (bf16 -> fp32 is exact). */
static void kv_load(const struct cpuq_mla_cache *c, const void *row, float *dst)
{
    if (c->f32) memcpy(dst, row, (size_t)c->kv_dim * sizeof(float));
    else cpuq_bf16_to_f32(row, dst, c->kv_dim);
}

/* Attention: flash-style tiles over the paged latent cache (bf16, or fp32).
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
 * cpuq_dot_f32 over the 16 lanes, the chunk's running max, corr = expf(m_old - m_new), l and the
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
    const struct cpuq_mla_cache *kv;
    const struct cpuq_mla_batch *b;
    float *const *thr; /* [n_threads] per-thread scratch (att_scratch_floats) */
    int n_threads;
    int n_heads, kv_lora, groups;
    float scale;
    const float *q;
    float *out;
    const int32_t *blk; /* [n_blk + 1] first batch token of each block */
    int n_blk;
    /* split mode (att_plan_split) */
    const int32_t *item_bg;   /* [n_items] the (block, group) of each item: block * groups + g */
    const int32_t *item_seg;  /* [n_items] its key segment, -1 = all of them */
    const int32_t *big_item0; /* [n_big + 1] first item of each split (block, group) */
    int64_t n_items;
    int n_big;
    float *part; /* per segment item, its partial result (att_part_floats) */
};

/* GCC/clang vector extension: 16 fp32 lanes, the lane layout of cpuq_dot_f32's accumulators.
 * Plain per-lane IEEE mul and add (FP contraction is off), so any ISA gives the same bits. */
typedef float att_v16 __attribute__((vector_size(64)));

/* (a macro: vectors as by-value arguments or results would change the ABI per clone) */
#define V16(v, p) memcpy(&(v), (p), sizeof(att_v16))

/* cpuq_dot_f32's final reduction of its 16 lanes */
static inline float v16_reduce(const att_v16 *v)
{
    float a[16];
    memcpy(a, v, sizeof a);
    for (int l = 0; l < 8; l++) a[l] += a[l + 8];
    for (int l = 0; l < 4; l++) a[l] += a[l + 4];
    return (a[0] + a[2]) + (a[1] + a[3]);
}

/* s[r * lds + c] = scale * cpuq_dot_f32(q[r], k + c * D, D) for 2 rows x 4 keys: 8 independent
 * lane accumulators (cpuq_dot_f32 alone is bound by one add chain). */
CPUQ_CLONES static void att_qk(const float *q0, const float *q1, const float *k, int D, float scale,
                               float *s, int lds)
{
    const float *k1 = k + D, *k2 = k1 + D, *k3 = k2 + D;
    att_v16 a00 = {0}, a01 = {0}, a02 = {0}, a03 = {0}, a10 = {0}, a11 = {0}, a12 = {0}, a13 = {0};
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
    for (; i < D; i++) { /* cpuq_dot_f32's tail: lane i & 15 */
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
 * order (the same rounding as cpuq_scale_f32 then one cpuq_axpy_f32 per key). Rows at
 * pr + r * ATT_CHUNK, v rows D floats apart, L columns. 64 columns at a time for every row pair, so
 * those columns of the chunk's values stay in L1 while the pairs go by. */
CPUQ_CLONES static void att_pv(float *acc, const float *corr, const float *pr, int rows,
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
    for (int r = 0; r < rows; r++) /* columns past the last 64 */
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
    const int32_t *blocks;         /* the rows' sequence's block table */
    const float *qr[ATT_ROWS + 1]; /* + the pad row of an odd count */
    int np[ATT_ROWS];              /* keys each row sees: pos + 1 */
};

static void att_rows_init(const struct att_job *j, int bi, int g, struct att_rows *w)
{
    const int D = j->kv->kv_dim;
    int nt = j->blk[bi + 1] - j->blk[bi];
    w->t0 = j->blk[bi];
    w->h0 = g * ATT_HEADS;
    w->nh = j->n_heads - w->h0 < ATT_HEADS ? j->n_heads - w->h0 : ATT_HEADS;
    w->rows = nt * w->nh;
    w->rows2 = (w->rows + 1) & ~1; /* an odd last row pairs with itself */
    w->blocks = j->b->blocks[j->b->seq[w->t0]];
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
            kv_load(j->kv, kv_slot(j->kv, w->blocks, p0 + k), kbuf + (size_t)k * D);
        for (int k = nc; k < nc4; k++) /* pad the last key tile (scores unused) */
            memcpy(kbuf + (size_t)k * D, kbuf, (size_t)D * sizeof(float));
        for (int r = 0; r < w->rows2; r += 2)
            for (int k = 0; k < nc4; k += 4)
                att_qk(w->qr[r], w->qr[r + 1], kbuf + (size_t)k * D, D, j->scale,
                       pr + (size_t)r * ATT_CHUNK + k, ATT_CHUNK);
        int kmax = 0; /* keys any row still sees */
        for (int r = 0; r < w->rows2; r++) {
            float *p = pr + (size_t)r * ATT_CHUNK;
            int nk = r < w->rows ? w->np[r] - p0 : 0;
            nk = nk < nc ? nk : nc;
            if (nk <= 0) { /* this row's keys have ended */
                corr[r] = 1.0f;
                for (int k = 0; k < nc; k++) p[k] = 0.0f;
                continue;
            }
            kmax = nk > kmax ? nk : kmax;
            float mx = m[r];
            for (int k = 0; k < nk; k++) mx = p[k] > mx ? p[k] : mx;
            corr[r] = expf(m[r] - mx); /* 0 on the first chunk (m = -inf) */
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
CPUQ_CLONES static void att_blend(float *restrict A, float ca, const float *restrict a, float cb,
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
        cpuq_scale_f32(dst, inv, L);
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
        att_whole(j, j->n_blk - 1 - (int)(it / j->groups), (int)(it % j->groups), j->thr[ti]);
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
    float *kbuf = j->thr[ti];
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
    float *tot = j->thr[ti] + (size_t)ATT_CHUNK * j->kv->kv_dim + (size_t)ATT_ROWS * L;
    for (int64_t k = i0; k < i1; k++) {
        int bg = j->item_bg[j->big_item0[k]];
        struct att_rows w;
        float M[ATT_ROWS], Lt[ATT_ROWS];
        att_rows_init(j, bg / j->groups, bg % j->groups, &w);
        for (int it = j->big_item0[k]; it < j->big_item0[k + 1]; it++) {
            const float *part = j->part + (size_t)it * att_part_floats(L);
            const float *m = part + (size_t)ATT_ROWS * L, *l = m + ATT_ROWS;
            for (int r = 0; r < w.rows; r++)
                att_merge(&M[r], &Lt[r], tot + (size_t)r * L, m[r], l[r], part + (size_t)r * L, L,
                          it == j->big_item0[k]);
        }
        att_finish(j, &w, tot, Lt);
    }
}

/* Plan split mode into s->tab / part and the job; 0 = plain mode, 1 = split, negative =
 * out of memory. Big: a (block, head group) over more than one segment whose work (rows x keys)
 * exceeds 1/(2 n_threads) of the batch's; at most ATT_SPLIT_MAX x n_threads segment items
 * (bounded partial memory), else plain mode. */
#define ATT_SPLIT_MAX 64
static int att_plan_split(struct cpuq_mla_scratch *sc, struct att_job *j)
{
    const struct cpuq_mla_batch *b = j->b;
    const int64_t n_bg = (int64_t)j->n_blk * j->groups;
    if (j->n_threads == 1) return 0;
    double total = 0, maxw = 0; /* work: rows x keys */
    for (int bi = 0; bi < j->n_blk; bi++) {
        int np = 0;
        for (int t = j->blk[bi]; t < j->blk[bi + 1]; t++)
            np = b->pos[t] + 1 > np ? b->pos[t] + 1 : np;
        double w = (double)(j->blk[bi + 1] - j->blk[bi]) * np;
        total += w * j->n_heads;
        maxw = w > maxw ? w : maxw;
    }
    double thresh = total / (2.0 * j->n_threads);
    int hg = j->n_heads < ATT_HEADS ? j->n_heads : ATT_HEADS;
    if (maxw * hg <= thresh) return 0;
    int64_t n_seg = 0, n_big = 0;
    int32_t *item_bg = NULL, *item_seg = NULL, *big_item0 = NULL;
    for (int pass = 0; pass < 2; pass++) { /* count, then fill */
        int64_t it = 0, k = 0;
        for (int phase = 0; phase < 2; phase++) /* big segments first, then the rest */
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
            if (n_big == 0 || n_seg > (int64_t)ATT_SPLIT_MAX * j->n_threads) return 0;
            int64_t n_items = n_seg + n_bg - n_big;
            size_t ints = (size_t)(2 * n_items + n_big + 1);
            if (buf_reserve(&sc->tab, ints * sizeof(int32_t)) ||
                buf_reserve(&sc->part, (size_t)n_seg * att_part_floats(j->kv_lora) * sizeof(float)))
                return ERR_NOMEM;
            item_bg = sc->tab.p;
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
    j->part = sc->part.p;
    return 1;
}

int cpuq_mla_attn(struct wpool *p, const struct cpuq_mla_cache *c, const struct cpuq_mla_batch *b,
                  int n_heads, int kv_lora, float scale, const float *q, float *out,
                  struct cpuq_mla_scratch *s, char *err)
{
    const int n = b->n;
    if (n <= 0) return 0;
    const int n_threads = p ? wpool_n_threads(p) : 1;
    if (thr_reserve(s, n_threads, att_scratch_floats(c->kv_dim, kv_lora) * sizeof(float)) ||
        buf_reserve(&s->blk, ((size_t)n + 1) * sizeof(int32_t)))
        goto nomem;
    /* blocks: runs of consecutive tokens of one sequence, at most ATT_ROWS rows each */
    int hg = n_heads < ATT_HEADS ? n_heads : ATT_HEADS;
    int per_blk = ATT_ROWS / hg;
    int32_t *blk = s->blk.p;
    int n_blk = 0;
    for (int t = 0; t < n; t++)
        if (t == 0 || b->seq[t] != b->seq[t - 1] || t - blk[n_blk - 1] == per_blk) blk[n_blk++] = t;
    blk[n_blk] = n;
    struct att_job j = {.kv = c,
                        .b = b,
                        .thr = s->thr_p,
                        .n_threads = n_threads,
                        .n_heads = n_heads,
                        .kv_lora = kv_lora,
                        .groups = (n_heads + ATT_HEADS - 1) / ATT_HEADS,
                        .scale = scale,
                        .q = q,
                        .out = out,
                        .blk = blk,
                        .n_blk = n_blk};
    int rc = att_plan_split(s, &j);
    if (rc < 0) goto nomem;
    if (rc == 0) {
        wpool_run(p, att_items, &j, (int64_t)n_blk * j.groups, 1);
        return 0;
    }
    wpool_run(p, att_split_items, &j, j.n_items, 1);
    wpool_run(p, att_combine, &j, j.n_big, 1);
    return 0;
nomem:
    return err_set(err, ERR_NOMEM, "mla: out of memory for attention scratch");
}
