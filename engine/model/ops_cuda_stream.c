/* ops_cuda_stream.c - routed experts streamed host -> device during long prefills (see
 * ops_cuda_stream.h for the contract and docs/gpu.md for the design).
 *
 * Invariants that would corrupt memory if broken (slot offsets within a slot, group ids within
 * the staging arrays, registration list bounds) are ASSERTed.
 */
#include "engine/model/ops_cuda_stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/moe_ggml.h"

#define EMA 0.3      /* weight of a new rate sample */
#define DEF_GBS 16.0 /* H2D GB/s until measured (the link does 51-55 pinned) */
#define DEF_CPU_S_PAIR                                                                             \
    20e-6 /* CPU seconds per (expert, token) until measured (~48 us for                            \
           * DeepSeek-V3 Q4_K at 45 tokens/s prefill: this favours the CPU) */
#define ALIGN 256
/* most bytes one cudaHostRegister call pins: a layer's experts are registered in pieces of at
 * most this (page multiples), so no single driver call pins gigabytes (DeepSeek-V3: 6.3 GB a
 * layer) and the log can show progress; copies are split at registration boundaries anyway */
#define REG_CHUNK ((uintptr_t)1 << 30)
/* threads copying a piece into anonymous memory (at load, while the CPU pool is idle) */
#define COPY_THREADS 8

struct reg { /* one cudaHostRegister'ed range, or a cudaMallocHost block (alloc) */
    uintptr_t lo, hi;
    const struct cus_layer *owner;
    int alloc;
};

struct cus_layer {
    int n_expert, hidden, inter;
    struct cuk_ggml_mat *src; /* [3][n_expert]: gate, up, down with HOST data pointers */
    size_t *eb;               /* [n_expert]: the expert's bytes in a slot (aligned parts) */
    int stream_ok;            /* streaming may copy this layer's experts (registered, each
                               * fits a slot) */
    /* hot (resident) experts, cus_layer_set_hot */
    void *res_mem;            /* device: their blocks, one allocation */
    struct cuk_ggml_mat *res; /* [3][n_expert]: DEVICE data for the hot ones, zeroed elsewhere */
    int n_res;
    size_t res_bytes;
};

struct cus {
    struct cus_opts o;
    int off;         /* streaming turned off (a failure, logged) */
    cudaStream_t cp; /* the copy stream */
    cudaEvent_t ev_copied[2], ev_free[2];
    int slot_next;
    void *slot[2];
    size_t slot_bytes;
    cudaEvent_t *ev_t; /* [2 * n_ev_t]: per group, copy start / end (copy stream) */
    int n_ev_t;
    double *grp_bytes; /* [n_ev_t] */
    int pend_groups;   /* groups of the last run whose timings are not folded yet */
    /* cuk_moe_ggml */
    struct cuk_moe_ggml *mg;
    struct cuk_moe_ggml_dims dims;
    void *ws;
    size_t ws_bytes;
    float *go; /* device [max_tokens][hidden]: one group's output */
    /* routes per group: pinned host and device [n_groups][n * top_k] */
    int32_t *h_gids, *d_gids;
    size_t gids_n;
    /* the last plan */
    int plan_E, n_groups, plan_n, plan_k;
    const int32_t *plan_hid;                      /* the caller's routes, valid until cus_run */
    int32_t *count, *order, *grp, *gexp, *gstart; /* [E], [E], [E], [E], [E + 1] */
    int32_t *sel;                                 /* [E]: 0 CPU, 1 hot, 2 streamed */
    int n_res_groups;                             /* 1 when group 0 is the hot experts' */
    int plan_cap;
    struct cuk_ggml_mat *tab; /* [3][E]: the device table of one group */
    /* rates */
    double gbs, cpu_s_pair;
    int gbs_measured, cpu_measured;
    /* counters not yet folded into the stats */
    long long n_layers, n_gx, n_cx, n_gp, n_cp;
    long long n_hot_calls, n_hot_pairs, n_hot_rest;
    /* hot experts over every layer (cus_layer_set_hot) */
    int res_experts;
    double res_bytes;
    /* registrations */
    struct reg *regs;
    int n_regs, cap_regs;
    double reg_bytes, reg_s; /* registered now (all layers); seconds registration took */
    int reg_layers;
    /* copy groups (slot fills) not yet folded into the stats */
    long long n_cg;
};

static void reg_release(const struct reg *r)
{
    if (r->alloc) cudaFreeHost((void *)r->lo);
    else cudaHostUnregister((void *)r->lo);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static size_t up_align(size_t x) { return (x + ALIGN - 1) & ~(size_t)(ALIGN - 1); }

static size_t mat_bytes(const struct cuk_ggml_mat *m)
{
    if (m->rows <= 0) return 0;
    return (size_t)(m->rows - 1) * m->row_bytes + cuk_ggml_row_size(m->type, m->cols);
}

int cus_create(const struct cus_opts *o, struct cus **out, char *err)
{
    *out = NULL;
    if (o->mode == 0 && !o->hot) return 0;
    struct cus *s = calloc(1, sizeof *s);
    if (!s) return err_set(err, ERR_NOMEM, "cuda ops: out of memory (expert streaming)");
    s->o = *o;
    s->gbs = DEF_GBS;
    s->cpu_s_pair = DEF_CPU_S_PAIR;
    s->slot_bytes = o->mode ? (o->buffer_bytes / 2) & ~(size_t)(ALIGN - 1) : 0;
    int rc = 0;
    if (cudaStreamCreateWithFlags(&s->cp, cudaStreamNonBlocking) != cudaSuccess)
        rc = err_set(err, ERR_CUDA, "cuda ops: expert streaming: copy stream");
    for (int i = 0; !rc && i < 2; i++)
        if (cudaEventCreateWithFlags(&s->ev_copied[i], cudaEventDisableTiming) != cudaSuccess ||
            cudaEventCreateWithFlags(&s->ev_free[i], cudaEventDisableTiming) != cudaSuccess)
            rc = err_set(err, ERR_CUDA, "cuda ops: expert streaming: events");
    for (int i = 0; !rc && o->mode && i < 2; i++)
        if (cudaMalloc(&s->slot[i], s->slot_bytes ? s->slot_bytes : ALIGN) != cudaSuccess)
            rc = err_set(err, ERR_NOMEM,
                         "cuda ops: expert streaming: out of device memory for "
                         "the staging slots (gpu.stream_buffer_mb = %zu)",
                         o->buffer_bytes >> 20);
    if (!rc) rc = cuk_moe_ggml_create(&s->mg, err);
    if (rc) {
        cus_destroy(s);
        return rc;
    }
    *out = s;
    return 0;
}

void cus_destroy(struct cus *s)
{
    if (!s) return;
    if (s->cp) cudaStreamSynchronize(s->cp);
    for (int i = 0; i < 2; i++) {
        if (s->ev_copied[i]) cudaEventDestroy(s->ev_copied[i]);
        if (s->ev_free[i]) cudaEventDestroy(s->ev_free[i]);
        cudaFree(s->slot[i]);
    }
    for (int i = 0; i < 2 * s->n_ev_t; i++)
        if (s->ev_t[i]) cudaEventDestroy(s->ev_t[i]);
    free(s->ev_t);
    free(s->grp_bytes);
    cuk_moe_ggml_destroy(s->mg);
    cudaFree(s->ws);
    cudaFree(s->go);
    cudaFree(s->d_gids);
    cudaFreeHost(s->h_gids);
    free(s->count);
    free(s->order);
    free(s->grp);
    free(s->gexp);
    free(s->gstart);
    free(s->sel);
    free(s->tab);
    for (int i = 0; i < s->n_regs; i++) reg_release(&s->regs[i]);
    free(s->regs);
    if (s->cp) cudaStreamDestroy(s->cp);
    free(s);
}

/* ---------------------------------------------------------------- registration */

/* room for one more registration */
static int reg_reserve(struct cus *s)
{
    if (s->n_regs < s->cap_regs) return 0;
    int cap = s->cap_regs ? 2 * s->cap_regs : 64;
    struct reg *r = realloc(s->regs, (size_t)cap * sizeof *r);
    if (!r) return ERR_NOMEM;
    s->regs = r;
    s->cap_regs = cap;
    return 0;
}

/* register [lo, hi) (page-aligned) in pieces of at most REG_CHUNK bytes, each first made
 * anonymous memory (wt_pages_anonymous): pinning the file-backed private pages themselves stalled
 * for minutes at 100% CPU in the kernel on the GPU machine (6.18), anonymous pages pin at once */
static int reg_add(struct cus *s, const struct cus_layer *l, uintptr_t lo, uintptr_t hi)
{
    for (uintptr_t a = lo; a < hi;) {
        uintptr_t b = hi - a > REG_CHUNK ? a + REG_CHUNK : hi;
        if (reg_reserve(s)) return ERR_NOMEM;
        char err[ERR_LEN];
        if (wt_pages_anonymous((const void *)a, b - a, COPY_THREADS, err) != 0) {
            LOG_WARN("gpu", "expert streaming off: %s; long prompts keep the CPU experts", err);
            return ERR_IO;
        }
        cudaError_t e =
            cudaHostRegister((void *)a, b - a, cudaHostRegisterPortable | cudaHostRegisterReadOnly);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            e = cudaHostRegister((void *)a, b - a, cudaHostRegisterPortable);
        }
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            LOG_WARN("gpu",
                     "expert streaming off: cudaHostRegister of %.1f MiB of expert weights "
                     "failed (%s); long prompts keep the CPU experts",
                     (double)(b - a) / (1 << 20), cudaGetErrorString(e));
            return ERR_CUDA;
        }
        ASSERT(s->n_regs < s->cap_regs);
        s->regs[s->n_regs++] = (struct reg){.lo = a, .hi = b, .owner = l};
        s->reg_bytes += (double)(b - a);
        a = b;
    }
    return 0;
}

/* register [lo, hi) (page-rounded) minus what is registered already */
static int reg_range(struct cus *s, const struct cus_layer *l, uintptr_t lo, uintptr_t hi)
{
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    lo &= ~(pg - 1);
    hi = (hi + pg - 1) & ~(pg - 1);
    while (lo < hi) {
        const struct reg *b = NULL;
        for (int i = 0; i < s->n_regs; i++) {
            const struct reg *r = &s->regs[i];
            if (r->hi > lo && r->lo < hi && (!b || r->lo < b->lo)) b = r;
        }
        uintptr_t end = b ? (b->lo > lo ? b->lo : lo) : hi;
        uintptr_t next = b ? b->hi : hi;
        if (end > lo) {
            int rc = reg_add(s, l, lo, end);
            if (rc) return rc;
        }
        lo = next;
    }
    return 0;
}

/* source 1: copy the layer's experts into one cudaMallocHost block and point l->src there */
static int layer_alloc(struct cus *s, struct cus_layer *l)
{
    const int n = 3 * l->n_expert;
    size_t total = 0;
    for (int i = 0; i < n; i++)
        if (l->src[i].data) total += up_align(mat_bytes(&l->src[i]));
    void *h = NULL;
    if (!total || reg_reserve(s)) return ERR_NOMEM;
    cudaError_t e = cudaMallocHost(&h, total);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        LOG_WARN("gpu",
                 "expert streaming off: cudaMallocHost of %.1f MiB for a layer's experts failed "
                 "(%s); long prompts keep the CPU experts",
                 (double)total / (1 << 20), cudaGetErrorString(e));
        return ERR_CUDA;
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        struct cuk_ggml_mat *m = &l->src[i];
        if (!m->data) continue;
        memcpy((char *)h + off, m->data, mat_bytes(m));
        m->data = (char *)h + off;
        off += up_align(mat_bytes(m));
    }
    s->regs[s->n_regs++] =
        (struct reg){.lo = (uintptr_t)h, .hi = (uintptr_t)h + total, .owner = l, .alloc = 1};
    s->reg_bytes += (double)total;
    return 0;
}

static int cmp_range(const void *a, const void *b)
{
    const uintptr_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* copy src (host) -> dst on the copy stream, split at registration boundaries (one copy must not
 * span two registrations, or registered and pageable memory) */
static int copy_h2d(struct cus *s, void *dst, const void *src, size_t bytes)
{
    uintptr_t p = (uintptr_t)src;
    char *d = dst;
    while (bytes) {
        size_t n = bytes;
        for (int i = 0; i < s->n_regs; i++) {
            const struct reg *r = &s->regs[i];
            if (r->lo <= p && p < r->hi) {
                if (r->hi - p < n) n = r->hi - p;
            } else if (r->lo > p && r->lo - p < n) {
                n = r->lo - p; /* pageable up to the next registration */
            }
        }
        if (cudaMemcpyAsync(d, (const void *)p, n, cudaMemcpyHostToDevice, s->cp) != cudaSuccess)
            return ERR_CUDA;
        p += n;
        d += n;
        bytes -= n;
    }
    return 0;
}

/* ---------------------------------------------------------------- layers */

static int grow_plan(struct cus *s, int E)
{
    if (E <= s->plan_cap) return 0;
    int32_t *a = realloc(s->count, (size_t)E * 4), *b = NULL, *c = NULL, *d = NULL, *g = NULL;
    if (a) s->count = a;
    if (a && (b = realloc(s->order, (size_t)E * 4))) s->order = b;
    if (b && (c = realloc(s->grp, (size_t)E * 4))) s->grp = c;
    if (c && (d = realloc(s->gexp, (size_t)E * 4))) s->gexp = d;
    if (d && (g = realloc(s->gstart, ((size_t)E + 1) * 4))) s->gstart = g;
    int32_t *sl = g ? realloc(s->sel, (size_t)E * 4) : NULL;
    if (sl) s->sel = sl;
    struct cuk_ggml_mat *t = sl ? realloc(s->tab, (size_t)3 * E * sizeof *t) : NULL;
    if (!t) return ERR_NOMEM;
    s->tab = t;
    memset(t, 0, (size_t)3 * E * sizeof *t);
    /* timing events: up to one group per expert */
    cudaEvent_t *ev = realloc(s->ev_t, (size_t)2 * E * sizeof *ev);
    if (!ev) return ERR_NOMEM;
    s->ev_t = ev;
    double *gb = realloc(s->grp_bytes, (size_t)E * sizeof *gb);
    if (!gb) return ERR_NOMEM;
    s->grp_bytes = gb;
    for (int i = 2 * s->n_ev_t; i < 2 * E; i++) ev[i] = NULL;
    for (int i = 2 * s->n_ev_t; i < 2 * E; i++)
        if (cudaEventCreate(&ev[i]) != cudaSuccess) {
            for (int j = 2 * s->n_ev_t; j < i; j++) cudaEventDestroy(ev[j]);
            return ERR_CUDA;
        }
    s->n_ev_t = E;
    s->plan_cap = E;
    return 0;
}

static void layer_free(struct cus_layer *l)
{
    if (!l) return;
    cudaFree(l->res_mem);
    free(l->res);
    free(l->src);
    free(l->eb);
    free(l);
}

static void unregister_layer(struct cus *s, const struct cus_layer *l)
{
    for (int i = 0; i < s->n_regs;)
        if (s->regs[i].owner == l) {
            reg_release(&s->regs[i]);
            s->reg_bytes -= (double)(s->regs[i].hi - s->regs[i].lo);
            s->regs[i] = s->regs[--s->n_regs];
        } else {
            i++;
        }
}

struct cus_layer *cus_layer_create(struct cus *s, int n_expert, struct wt_view *gate,
                                   struct wt_view *up, struct wt_view *down)
{
    if (!s || (s->off && !s->o.hot)) return NULL;
    const char *why = NULL;
    struct cus_layer *l = calloc(1, sizeof *l);
    uintptr_t *rg = NULL;
    if (!l || !(l->src = calloc((size_t)3 * n_expert, sizeof *l->src)) ||
        !(l->eb = calloc((size_t)n_expert, sizeof *l->eb)) ||
        !(l->res = calloc((size_t)3 * n_expert, sizeof *l->res)) ||
        !(rg = malloc((size_t)6 * n_expert * sizeof *rg))) {
        why = "out of memory";
        goto off;
    }
    l->n_expert = n_expert;
    for (int e = 0; e < n_expert; e++) /* an unrouted expert may be a zeroed view */
        if (gate[e].data) {
            l->hidden = (int)gate[e].cols;
            l->inter = (int)gate[e].rows;
            break;
        }
    int nr = 0, fits = 1;
    for (int e = 0; e < n_expert; e++) {
        const struct wt_view *v[3] = {&gate[e], &up[e], &down[e]};
        for (int p = 0; p < 3; p++) {
            struct cuk_ggml_mat *m = &l->src[p * n_expert + e];
            *m = (struct cuk_ggml_mat){.type = v[p]->type,
                                       .rows = v[p]->rows,
                                       .cols = v[p]->cols,
                                       .data = v[p]->data,
                                       .row_bytes = v[p]->row_bytes};
            if (!v[p]->data) continue; /* an absent expert is never routed to */
            if (!cuk_dequant_ggml_supported(m->type) || !mat_bytes(m)) {
                why = "an expert type without a GPU dequantizer";
                goto skip;
            }
            l->eb[e] += up_align(mat_bytes(m));
            rg[2 * nr] = (uintptr_t)m->data;
            rg[2 * nr + 1] = (uintptr_t)m->data + mat_bytes(m);
            nr++;
        }
        if (l->eb[e] > s->slot_bytes) fits = 0;
    }
    if (grow_plan(s, n_expert)) {
        why = "out of memory";
        goto off;
    }
    /* the workspace: sized by the first layer, later layers must fit it */
    struct cuk_moe_ggml_dims d = {.hidden = l->hidden,
                                  .inter = l->inter,
                                  .n_experts = n_expert,
                                  .top_k = 8,
                                  .max_tok = s->o.max_tokens};
    if (!s->ws) {
        s->dims = d;
        s->ws_bytes = cuk_moe_ggml_workspace(&d);
        if (!s->ws_bytes) {
            why = "expert shapes the GPU op does not take";
            goto skip;
        }
        if (cudaMalloc(&s->ws, s->ws_bytes) != cudaSuccess ||
            cudaMalloc((void **)&s->go, (size_t)s->o.max_tokens * l->hidden * sizeof(float)) !=
                cudaSuccess) {
            why = "out of device memory for the workspace";
            goto off;
        }
    } else if (d.hidden != s->dims.hidden || d.inter != s->dims.inter ||
               d.n_experts != s->dims.n_experts) {
        why = "expert shapes differ from the first MoE layer's";
        goto skip;
    }
    /* streaming: register the expert memory (merged ranges); hot experts alone need none */
    if (s->o.mode && !s->off && !fits)
        LOG_INFO("gpu",
                 "expert streaming: a MoE layer keeps the CPU pool for long prompts: an expert "
                 "larger than a staging slot (raise gpu.stream_buffer_mb)");
    if (s->o.mode && !s->off && fits) {
        qsort(rg, (size_t)nr, 2 * sizeof *rg, cmp_range);
        int failed = 0;
        /* registration copies the experts' pages into anonymous memory (reading the file) and
         * pins them, which takes a while for big models; the log shows how long, layer by layer */
        if (!s->reg_layers) {
            double b = 0;
            for (int i = 0; i < nr; i++) b += (double)(rg[2 * i + 1] - rg[2 * i]);
            if (s->o.source == 1)
                LOG_INFO("gpu",
                         "expert streaming: copying each MoE layer's expert weights into pinned "
                         "memory (cudaMallocHost; the CPU pool reads the copy), %.1f MiB in the "
                         "first",
                         b / (1 << 20));
            else
                LOG_INFO("gpu",
                         "expert streaming: registering each MoE layer's expert weights (copied "
                         "into anonymous memory, then pinned by cudaHostRegister), %.1f MiB in "
                         "the first, in pieces of at most %d MiB",
                         b / (1 << 20), (int)(REG_CHUNK >> 20));
        }
        const double t0 = now_s(), b0 = s->reg_bytes;
        if (s->o.source == 1) failed = layer_alloc(s, l) != 0; /* logged */
        for (int i = 0; !failed && s->o.source != 1 && i < nr;) {
            uintptr_t lo = rg[2 * i], hi = rg[2 * i + 1];
            int j = i + 1;
            for (; j < nr && rg[2 * j] <= hi + (uintptr_t)sysconf(_SC_PAGESIZE); j++)
                if (rg[2 * j + 1] > hi) hi = rg[2 * j + 1];
            failed = reg_range(s, l, lo, hi) != 0; /* reg_add logged it */
            i = j;
        }
        const double lb = s->reg_bytes - b0, dt = now_s() - t0;
        s->reg_s += dt;
        s->reg_layers++;
        LOG_INFO("gpu",
                 "expert streaming: MoE layer %d: %.1f MiB registered in %.2f s%s (all so far: "
                 "%.2f GiB in %.1f s, %d ranges)",
                 s->reg_layers, lb / (1 << 20), dt, failed ? " (failed)" : "",
                 s->reg_bytes / (1 << 30), s->reg_s, s->n_regs);
        if (failed) { /* streaming off for every layer; hot experts still may be placed */
            s->off = 1;
            unregister_layer(s, l);
            if (!s->o.hot) {
                free(rg);
                layer_free(l);
                return NULL;
            }
        } else {
            l->stream_ok = 1;
            if (s->o.source == 1) /* the CPU pool reads the pinned copy too */
                for (int e = 0; e < n_expert; e++) {
                    gate[e].data = l->src[e].data;
                    up[e].data = l->src[n_expert + e].data;
                    down[e].data = l->src[2 * n_expert + e].data;
                }
        }
    }
    free(rg);
    if (!l->stream_ok && !s->o.hot) {
        layer_free(l);
        return NULL;
    }
    return l;
skip: /* this layer keeps the CPU pool */
    LOG_INFO("gpu", "expert streaming / hot experts: a MoE layer stays on the CPU pool: %s", why);
    free(rg);
    layer_free(l);
    return NULL;
off:
    LOG_WARN("gpu", "expert streaming and hot experts off: %s", why);
    s->off = 1;
    s->o.hot = 0;
    free(rg);
    if (l) unregister_layer(s, l); /* none of them is in use yet */
    layer_free(l);
    return NULL;
}

void cus_layer_destroy(struct cus *s, struct cus_layer *l)
{
    if (!l) return;
    if (s) {
        if (s->cp) cudaStreamSynchronize(s->cp);
        unregister_layer(s, l);
        s->res_experts -= l->n_res;
        s->res_bytes -= (double)l->res_bytes;
    }
    layer_free(l);
}

size_t cus_expert_bytes(const struct cus *s, const struct cus_layer *l, int e)
{
    if (!s || !s->o.hot || !l || e < 0 || e >= l->n_expert) return 0;
    return l->eb[e];
}

int cus_layer_set_hot(struct cus *s, struct cus_layer *l, const uint8_t *hot, char *err)
{
    const int E = l->n_expert;
    cudaFree(l->res_mem); /* the caller synchronized: no work reads it */
    l->res_mem = NULL;
    memset(l->res, 0, (size_t)3 * E * sizeof *l->res);
    s->res_experts -= l->n_res;
    s->res_bytes -= (double)l->res_bytes;
    l->n_res = 0;
    l->res_bytes = 0;
    if (!hot) return 0;
    if (!s->o.hot) return err_set(err, ERR_UNSUPPORTED, "cuda ops: hot experts are off");
    size_t tot = 0;
    for (int e = 0; e < E; e++)
        if (hot[e]) tot += l->eb[e];
    if (!tot) return 0;
    if (cudaMalloc(&l->res_mem, tot) != cudaSuccess) {
        (void)cudaGetLastError();
        l->res_mem = NULL;
        return err_set(err, ERR_NOMEM, "cuda ops: hot experts: no %.1f MiB of device memory",
                       (double)tot / (1 << 20));
    }
    char *base = l->res_mem;
    size_t off = 0;
    int n = 0;
    for (int e = 0; e < E; e++) {
        if (!hot[e] || !l->eb[e]) continue;
        for (int p = 0; p < 3; p++) {
            const struct cuk_ggml_mat *m = &l->src[p * E + e];
            size_t b = mat_bytes(m);
            ASSERT(off + b <= tot);
            if (copy_h2d(s, base + off, m->data, b) ||
                cudaStreamSynchronize(s->cp) != cudaSuccess) {
                (void)cudaGetLastError();
                cudaFree(l->res_mem);
                l->res_mem = NULL;
                memset(l->res, 0, (size_t)3 * E * sizeof *l->res);
                return err_set(err, ERR_CUDA, "cuda ops: hot experts: copy to the device");
            }
            l->res[p * E + e] = *m;
            l->res[p * E + e].data = base + off;
            off += up_align(b);
        }
        n++;
    }
    l->n_res = n;
    l->res_bytes = tot;
    s->res_experts += n;
    s->res_bytes += (double)tot;
    return 0;
}

/* does a batch of n tokens on l stream its non-hot experts? */
static int streams(const struct cus *s, const struct cus_layer *l, int n)
{
    return s->o.mode && !s->off && l->stream_ok && n >= s->o.min_tokens;
}

int cus_wants(const struct cus *s, const struct cus_layer *l, int n)
{
    return s && l && n >= 1 && n <= s->o.max_tokens && (l->n_res > 0 || streams(s, l, n));
}

/* ---------------------------------------------------------------- plan and run */

/* qsort_r order of expert ids: most tokens first (count = the int32_t array ctx), then by id */
static int cmp_count_desc(const void *a, const void *b, void *ctx)
{
    const int32_t *count = ctx;
    int x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (count[x] != count[y]) return count[x] > count[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

int cus_plan(struct cus *s, struct cus_layer *l, const int32_t *hid, int n, int top_k,
             int32_t *cpu_ids, long long *cpu_pairs, long long *hot_pairs)
{
    const int E = l->n_expert;
    const int64_t np = (int64_t)n * top_k;
    const int stream = streams(s, l, n);
    ASSERT(E <= s->plan_cap);
    memset(s->count, 0, (size_t)E * 4);
    for (int64_t p = 0; p < np; p++)
        if (hid[p] >= 0 && hid[p] < E) s->count[hid[p]]++;
    int na = 0, nh = 0;
    for (int e = 0; e < E; e++) {
        s->grp[e] = -1;
        s->sel[e] = 0;
        if (!s->count[e]) continue;
        if (l->res[e].data) { /* hot: always on the GPU, no copy */
            s->sel[e] = 1;
            nh++;
        } else {
            s->order[na++] = e; /* the active experts that are not hot */
        }
    }
    /* which of the others are streamed */
    if (stream && s->o.split_tokens > 0) {
        for (int i = 0; i < na; i++)
            if (s->count[s->order[i]] >= s->o.split_tokens) s->sel[s->order[i]] = 2;
    } else if (stream) {
        qsort_r(s->order, (size_t)na, sizeof *s->order, cmp_count_desc, s->count);
        double cpu_rest = 0, link = 0;
        for (int i = 0; i < na; i++) cpu_rest += s->count[s->order[i]] * s->cpu_s_pair;
        for (int i = 0; i < na; i++) {
            int e = s->order[i];
            double g = (double)l->eb[e] / (s->gbs * 1e9);
            if (link + g >= cpu_rest) break;
            link += g;
            cpu_rest -= s->count[e] * s->cpu_s_pair;
            s->sel[e] = 2;
        }
    }
    /* groups: the hot experts first (group 0, ascending id, no copy), then the streamed ones in
     * ascending id, each group filling one slot */
    int G = 0, ng = 0, gx = 0;
    if (nh) {
        s->gstart[G++] = 0;
        for (int e = 0; e < E; e++)
            if (s->sel[e] == 1) {
                s->grp[e] = 0;
                s->gexp[ng++] = e;
            }
    }
    s->n_res_groups = G;
    size_t fill = 0;
    int first = 1;
    for (int e = 0; e < E; e++) {
        if (s->sel[e] != 2) continue;
        if (first || fill + l->eb[e] > s->slot_bytes) {
            s->gstart[G++] = ng;
            fill = 0;
            first = 0;
        }
        fill += l->eb[e];
        s->grp[e] = G - 1;
        s->gexp[ng++] = e;
        gx++;
    }
    s->gstart[G] = ng;
    s->n_groups = G;
    s->plan_E = E;
    s->plan_n = n;
    s->plan_k = top_k;
    s->plan_hid = hid;
    /* the CPU's routes, and each group's */
    long long cp = 0, gp = 0, hp = 0;
    for (int64_t p = 0; p < np; p++) {
        int e = hid[p] >= 0 && hid[p] < E ? hid[p] : -1;
        int on_gpu = e >= 0 && s->grp[e] >= 0;
        cpu_ids[p] = on_gpu ? -1 : e;
        cp += e >= 0 && !on_gpu;
        gp += on_gpu && s->sel[e] == 2;
        hp += on_gpu && s->sel[e] == 1;
    }
    *cpu_pairs = cp;
    *hot_pairs = hp;
    if (stream) {
        s->n_layers++;
        s->n_gx += gx;
        s->n_cx += na - gx;
        s->n_gp += gp;
        s->n_cp += cp;
    }
    if (l->n_res) {
        s->n_hot_calls++;
        s->n_hot_pairs += hp;
        s->n_hot_rest += cp + gp;
    }
    return ng;
}

int cus_run(struct cus *s, struct cus_layer *l, const float *x, int n, int top_k, const float *w,
            float *out, cudaStream_t st, char *err)
{
    ASSERT(n == s->plan_n && top_k == s->plan_k && l->n_expert == s->plan_E);
    const int E = l->n_expert, G = s->n_groups, R = s->n_res_groups;
    const size_t np = (size_t)n * top_k;
    if (G == 0) return 0;
    if (top_k != s->dims.top_k) { /* the workspace was planned for top-8 */
        struct cuk_moe_ggml_dims d = s->dims;
        d.top_k = top_k;
        size_t need = cuk_moe_ggml_workspace(&d);
        if (need > s->ws_bytes) {
            cudaFree(s->ws);
            s->ws = NULL;
            if (cudaMalloc(&s->ws, need) != cudaSuccess) {
                s->ws_bytes = 0;
                s->off = 1;
                s->o.hot = 0;
                return err_set(err, ERR_NOMEM, "cuda ops: expert streaming: workspace");
            }
            s->ws_bytes = need;
        }
        s->dims.top_k = top_k;
    }
    /* every group's routes: the host copy and one upload (st was synchronized by the caller) */
    if ((size_t)G * np > s->gids_n) {
        cudaFreeHost(s->h_gids);
        cudaFree(s->d_gids);
        s->h_gids = s->d_gids = NULL;
        s->gids_n = 0;
        size_t want = (size_t)G * np;
        if (cudaHostAlloc((void **)&s->h_gids, want * 4, cudaHostAllocDefault) != cudaSuccess ||
            cudaMalloc((void **)&s->d_gids, want * 4) != cudaSuccess) {
            cudaFreeHost(s->h_gids);
            s->h_gids = NULL;
            return err_set(err, ERR_NOMEM, "cuda ops: expert streaming: routes buffer");
        }
        s->gids_n = want;
    }
    const int32_t *hid = s->plan_hid;
    for (int g = 0; g < G; g++) {
        int32_t *gi = s->h_gids + (size_t)g * np;
        for (size_t p = 0; p < np; p++) {
            int e = hid[p];
            gi[p] = e >= 0 && e < E && s->grp[e] == g ? e : -1;
        }
    }
    if (cudaMemcpyAsync(s->d_gids, s->h_gids, (size_t)G * np * 4, cudaMemcpyHostToDevice, st) !=
        cudaSuccess)
        return err_set(err, ERR_CUDA, "cuda ops: expert streaming: routes upload");
    struct cuk_ggml_mat *tg = s->tab, *tu = s->tab + E, *td = s->tab + 2 * E;
    int rc = 0;
    for (int g = 0; !rc && g < G; g++) {
        int k = -1;  /* the staging slot of a copied group */
        if (g < R) { /* the hot experts: their device copies, nothing to wait for */
            for (int i = s->gstart[g]; i < s->gstart[g + 1]; i++)
                for (int p = 0; p < 3; p++) s->tab[p * E + s->gexp[i]] = l->res[p * E + s->gexp[i]];
        } else {
            const int cg = g - R; /* the copy group (timing events) */
            k = s->slot_next;
            s->slot_next ^= 1;
            /* copy stream: the slot's previous group must be computed; copy this group into it */
            char *base = s->slot[k];
            size_t off = 0;
            double bytes = 0;
            if (cudaStreamWaitEvent(s->cp, s->ev_free[k], 0) != cudaSuccess ||
                cudaEventRecord(s->ev_t[2 * cg], s->cp) != cudaSuccess) {
                rc = err_set(err, ERR_CUDA, "cuda ops: expert streaming: copy stream");
                break;
            }
            for (int i = s->gstart[g]; !rc && i < s->gstart[g + 1]; i++) {
                int e = s->gexp[i];
                for (int p = 0; p < 3; p++) {
                    const struct cuk_ggml_mat *m = &l->src[p * E + e];
                    struct cuk_ggml_mat *t = &s->tab[p * E + e];
                    size_t b = mat_bytes(m);
                    ASSERT(off + b <= s->slot_bytes);
                    *t = *m;
                    t->data = base + off;
                    if (copy_h2d(s, base + off, m->data, b)) {
                        rc = err_set(err, ERR_CUDA, "cuda ops: expert streaming: copy");
                        break;
                    }
                    off += up_align(b);
                    bytes += (double)b;
                }
            }
            s->grp_bytes[cg] = bytes;
            if (rc || cudaEventRecord(s->ev_t[2 * cg + 1], s->cp) != cudaSuccess ||
                cudaEventRecord(s->ev_copied[k], s->cp) != cudaSuccess) {
                rc = rc ? rc : err_set(err, ERR_CUDA, "cuda ops: expert streaming: copy stream");
                break;
            }
            s->pend_groups = cg + 1;
            s->n_cg++;
            /* main stream: wait for the copy, compute the group, free the slot */
            if (cudaStreamWaitEvent(st, s->ev_copied[k], 0) != cudaSuccess) {
                rc = err_set(err, ERR_CUDA, "cuda ops: expert streaming: stream wait");
                break;
            }
        }
        float *o = g == 0 ? out : s->go;
        struct cuk_moe_ggml_args a = {.dims = s->dims,
                                      .gate = tg,
                                      .up = tu,
                                      .down = td,
                                      .n_tok = n,
                                      .x = x,
                                      .x_ld = l->hidden,
                                      .ids = s->d_gids + (size_t)g * np,
                                      .ids_host = s->h_gids + (size_t)g * np,
                                      .w = w,
                                      .out = o,
                                      .out_ld = l->hidden,
                                      .ws = s->ws,
                                      .ws_bytes = s->ws_bytes};
        rc = cuk_moe_ggml(s->mg, &a, st, err);
        if (!rc && g > 0) {
            struct cuk_add_args ad = {
                .n = (size_t)n * l->hidden, .y = out, .x = s->go, .alpha = 1.0f};
            if (cuk_add(&ad, st)) rc = err_set(err, ERR_CUDA, "cuda ops: expert streaming: add");
        }
        if (!rc && k >= 0 && cudaEventRecord(s->ev_free[k], st) != cudaSuccess)
            rc = err_set(err, ERR_CUDA, "cuda ops: expert streaming: event");
        for (int i = s->gstart[g]; i < s->gstart[g + 1]; i++) /* the table back to zeroes */
            for (int p = 0; p < 3; p++) s->tab[p * E + s->gexp[i]] = (struct cuk_ggml_mat){0};
    }
    if (rc && G > R) s->off = 1; /* the failure is reported; later layers keep the CPU pool */
    return rc;
}

void cus_collect(struct cus *s, struct ops_cuda_stats *st)
{
    if (!s) return;
    double bytes = 0, sec = 0;
    for (int g = 0; g < s->pend_groups; g++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, s->ev_t[2 * g], s->ev_t[2 * g + 1]) != cudaSuccess) {
            (void)cudaGetLastError();
            continue;
        }
        bytes += s->grp_bytes[g];
        sec += ms / 1e3;
    }
    s->pend_groups = 0;
    if (sec > 0 && bytes >= 64e6) { /* enough bytes for a meaningful rate */
        double gbs = bytes / sec / 1e9;
        s->gbs = s->gbs_measured ? (1 - EMA) * s->gbs + EMA * gbs : gbs;
        s->gbs_measured = 1;
    }
    st->stream_bytes += bytes;
    st->stream_copy_s += sec;
    st->stream_layers += s->n_layers;
    st->stream_gpu_experts += s->n_gx;
    st->stream_cpu_experts += s->n_cx;
    st->stream_gpu_pairs += s->n_gp;
    st->stream_cpu_pairs += s->n_cp;
    st->stream_groups += s->n_cg;
    s->n_layers = s->n_gx = s->n_cx = s->n_gp = s->n_cp = s->n_cg = 0;
    st->stream_reg_bytes = s->reg_bytes;
    st->stream_reg_s = s->reg_s;
    st->stream_gbs = s->gbs;
    st->stream_cpu_us_pair = s->cpu_s_pair * 1e6;
    st->hot_calls += s->n_hot_calls;
    st->hot_gpu_pairs += s->n_hot_pairs;
    st->hot_rest_pairs += s->n_hot_rest;
    s->n_hot_calls = s->n_hot_pairs = s->n_hot_rest = 0;
    st->hot_experts = s->res_experts;
    st->hot_bytes = s->res_bytes;
}

int cus_failed(const struct cus *s) { return s && s->off; }

void cus_cpu_sample(struct cus *s, int n, double seconds, long long pairs)
{
    if (!s || n < s->o.min_tokens || pairs < 256 || !(seconds > 0)) return;
    double v = seconds / (double)pairs;
    s->cpu_s_pair = s->cpu_measured ? (1 - EMA) * s->cpu_s_pair + EMA * v : v;
    s->cpu_measured = 1;
}
