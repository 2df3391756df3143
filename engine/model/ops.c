/* ops.c - backend choice (ops_create) and the thin dispatch layer of ops.h.
 *
 * What: ops_create turns struct ops_params into one backend (the only place that knows which
 * backends a build has); ops.h's functions then forward to o->vt; the sticky error helpers live
 * here too. Why: model.c is written once against ops.h and the backend is chosen at load time,
 * so the indirection is a table, not #ifdefs.
 * Threads: as the backend (one caller thread at a time); ops_params_parse is pure.
 */
#include "engine/model/ops_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef TANDEM_CUDA
#include "engine/model/ops_cuda.h"
#endif

int ops_params_parse(struct ops_params *p, const char *placement, const char *fp8_gemm, char *err)
{
    if (fp8_gemm && strcmp(fp8_gemm, "exact") && strcmp(fp8_gemm, "cublaslt"))
        return err_set(err, ERR_CONFIG, "model: gpu.fp8_gemm '%s' (exact|cublaslt)", fp8_gemm);
    p->gpu_cublaslt = fp8_gemm && !strcmp(fp8_gemm, "cublaslt");
    const char *pl = placement ? placement : "cpu";
    if (!strcmp(pl, "cpu")) p->backend = OPS_BACKEND_CPU;
    else if (!strcmp(pl, "hybrid")) p->backend = OPS_BACKEND_HYBRID;
    else if (!strcmp(pl, "gpu")) p->backend = OPS_BACKEND_GPU;
    else if (!strcmp(pl, "auto")) p->backend = OPS_BACKEND_AUTO;
    else return err_set(err, ERR_CONFIG, "model: gpu.placement '%s' (auto|cpu|hybrid|gpu)", pl);
    return 0;
}

int ops_create(const struct ops_params *p, struct ops **out, char *err)
{
    *out = NULL;
    enum ops_backend b = p->backend;
    if (b != OPS_BACKEND_CPU && b != OPS_BACKEND_HYBRID && b != OPS_BACKEND_GPU &&
        b != OPS_BACKEND_AUTO)
        return err_set(err, ERR_INVAL, "ops: unknown backend %d", (int)b);
    if (p->max_tokens < 1) return err_set(err, ERR_INVAL, "ops: max_tokens must be >= 1");
    int rc;
#ifdef TANDEM_CUDA
    if (b == OPS_BACKEND_AUTO)
        b = ops_cuda_usable(p->gpu_device) ? OPS_BACKEND_HYBRID : OPS_BACKEND_CPU;
    if (b != OPS_BACKEND_CPU) {
        struct ops_params g = *p;
        if (b == OPS_BACKEND_GPU) g.gpu_expert_layers = -1;
        rc = ops_cuda_create(&g, out, err);
    } else {
        rc = ops_cpu_create(p, out, err);
    }
#else
    if (b == OPS_BACKEND_AUTO) b = OPS_BACKEND_CPU;
    if (b != OPS_BACKEND_CPU)
        return err_set(err, ERR_UNSUPPORTED,
                       "model: gpu.placement=%s but tandem was built "
                       "without CUDA",
                       b == OPS_BACKEND_GPU ? "gpu" : "hybrid");
    rc = ops_cpu_create(p, out, err);
#endif
    if (!rc) (*out)->backend = b;
    return rc;
}

enum ops_backend ops_backend_of(const struct ops *o) { return o->backend; }

size_t ops_device_free(struct ops *o, int *sms)
{
    *sms = 0;
    return o->vt->device_free ? o->vt->device_free(o, sms) : 0;
}

void ops__fail(struct ops *o, int code, const char *msg)
{
    if (o->err_code) return;
    o->err_code = code;
    snprintf(o->err, sizeof o->err, "%s", msg);
}

int ops_error(struct ops *o, char *err)
{
    int rc = o->err_code;
    if (rc && err) snprintf(err, ERR_LEN, "%s", o->err);
    o->err_code = 0;
    o->err[0] = 0;
    return rc;
}

void ops_destroy(struct ops *o)
{
    if (o) o->vt->destroy(o);
}

const char *ops_name(const struct ops *o) { return o->vt->name(o); }
int ops_n_threads(const struct ops *o) { return o->vt->n_threads(o); }
void *ops_alloc(struct ops *o, size_t bytes) { return o->vt->alloc(o, bytes); }

void ops_free(struct ops *o, void *p)
{
    if (p) o->vt->free(o, p);
}

void ops_upload(struct ops *o, void *dst, const void *src, size_t bytes)
{
    o->vt->upload(o, dst, src, bytes);
}

void ops_download(struct ops *o, void *dst, const void *src, size_t bytes)
{
    o->vt->download(o, dst, src, bytes);
}

int ops_lin_create(struct ops *o, const struct wt_view *w, struct ops_lin **out, char *err)
{
    return o->vt->lin_create(o, w, out, err);
}

int ops_lin_create_w16(struct ops *o, const struct wt_view *w, struct ops_lin **out, char *err)
{
    return o->vt->lin_create_w16 ? o->vt->lin_create_w16(o, w, out, err)
                                 : o->vt->lin_create(o, w, out, err);
}

void ops_set_fp8_ue8m0(struct ops *o, int on)
{
    o->fp8_ue8m0 = on != 0;
    if (o->vt->set_fp8_ue8m0) o->vt->set_fp8_ue8m0(o, o->fp8_ue8m0);
}

void ops_load_done(struct ops *o)
{
    if (o->vt->load_done) o->vt->load_done(o);
}

int ops_table_create(struct ops *o, const struct wt_view *w, struct ops_lin **out, char *err)
{
    return o->vt->table_create ? o->vt->table_create(o, w, out, err)
                               : o->vt->lin_create(o, w, out, err);
}

void ops_lin_destroy(struct ops *o, struct ops_lin *l)
{
    if (l) o->vt->lin_destroy(o, l);
}

int ops_moe_create(struct ops *o, int n_expert, const struct wt_view *gate,
                   const struct wt_view *up, const struct wt_view *down, struct ops_moe **out,
                   char *err)
{
    return o->vt->moe_create(o, n_expert, gate, up, down, out, err);
}

void ops_moe_destroy(struct ops *o, struct ops_moe *m)
{
    if (m) o->vt->moe_destroy(o, m);
}

void ops_moe_set_counts(struct ops *o, struct ops_moe *m, struct expert_counts *c, int row)
{
    if (m) o->vt->moe_set_counts(o, m, c, row);
}

size_t ops_moe_hot_bytes(struct ops *o, const struct ops_moe *m, int e)
{
    return m && o->vt->moe_hot_bytes ? o->vt->moe_hot_bytes(o, m, e) : 0;
}

int ops_moe_set_hot(struct ops *o, struct ops_moe *m, const uint8_t *hot, char *err)
{
    if (!m || !o->vt->moe_set_hot)
        return err_set(err, ERR_UNSUPPORTED, "%s: no hot experts on this backend", ops_name(o));
    return o->vt->moe_set_hot(o, m, hot, err);
}

void ops_embed(struct ops *o, const struct ops_lin *table, const int32_t *tokens, int n, float *y)
{
    o->vt->embed(o, table, tokens, n, y);
}

void ops_linear(struct ops *o, const struct ops_lin *w, const float *x, int n, float *y)
{
    o->vt->linear(o, w, x, n, y);
}

void ops_rmsnorm(struct ops *o, const float *x, int ldx, const float *g, int n, int dim, float eps,
                 float *y, int ldy)
{
    o->vt->rmsnorm(o, x, ldx, g, n, dim, eps, y, ldy);
}

void ops_rope(struct ops *o, const struct ops_rope *r, const int32_t *pos, int n, int n_heads,
              const float *x, int ldx_tok, int ldx_head, float *y, int ldy_tok, int ldy_head)
{
    o->vt->rope(o, r, pos, n, n_heads, x, ldx_tok, ldx_head, y, ldy_tok, ldy_head);
}

int ops_heads_create(struct ops *o, const struct wt_view *v, const float *f32,
                     struct ops_heads **out, char *err)
{
    *out = NULL;
    if (o->vt->heads_create) return o->vt->heads_create(o, v, f32, out, err);
    struct ops_heads *h = calloc(1, sizeof *h);
    size_t bytes = (size_t)v->rows * (size_t)v->cols * sizeof(float);
    if (!h || !(h->f32 = ops_alloc(o, bytes))) {
        free(h);
        return err_set(err, ERR_NOMEM, "ops: out of memory for per-head weights");
    }
    ops_upload(o, h->f32, f32, bytes);
    h->rows = v->rows;
    h->cols = v->cols;
    *out = h;
    return 0;
}

void ops_heads_destroy(struct ops *o, struct ops_heads *h)
{
    if (!h) return;
    if (o->vt->heads_destroy) {
        o->vt->heads_destroy(o, h);
        return;
    }
    ops_free(o, h->f32);
    free(h);
}

void ops_head_matmul(struct ops *o, const struct ops_heads *w, int64_t w_off, int64_t w_head,
                     int rows, int cols, int trans, int n, int n_heads, const float *x, int ldx_tok,
                     int ldx_head, float *y, int ldy_tok, int ldy_head)
{
    o->vt->head_matmul(o, w, w_off, w_head, rows, cols, trans, n, n_heads, x, ldx_tok, ldx_head, y,
                       ldy_tok, ldy_head);
}

void ops_kv_store(struct ops *o, const struct model_kv *kv, int layer, const struct model_batch *b,
                  const float *x)
{
    o->vt->kv_store(o, kv, layer, b, x);
}

void ops_mla_attn(struct ops *o, const struct model_kv *kv, int layer, const struct model_batch *b,
                  int n_heads, int kv_lora, float scale, const float *q, float *out)
{
    o->vt->mla_attn(o, kv, layer, b, n_heads, kv_lora, scale, q, out);
}

void ops_router(struct ops *o, const struct ops_router *r, const float *logits, const float *bias,
                int n, int32_t *ids, float *w)
{
    o->vt->router(o, r, logits, bias, n, ids, w);
}

void ops_moe(struct ops *o, const struct ops_moe *m, const float *x, int n, const int32_t *ids,
             const float *w, int top_k, float *y)
{
    o->vt->moe(o, m, x, n, ids, w, top_k, y);
}

void ops_moe_defer(struct ops *o, const struct ops_moe *m, const float *x, int n,
                   const int32_t *ids, const float *w, int top_k, int n_defer, float *y,
                   float *y_def)
{
    if (n_defer < 1 || n_defer > top_k || top_k > 64) {
        ops__fail(o, ERR_INVAL, "ops: n_defer outside 1..top_k (top_k <= 64)");
        return;
    }
    o->vt->moe_defer(o, m, x, n, ids, w, top_k, n_defer, y, y_def);
}

void ops__defer_ids(const int32_t *ids, const float *w, int n, int top_k, int n_defer, int part,
                    int32_t *out)
{
    for (int64_t t = 0; t < n; t++) {
        const int32_t *it = ids + t * top_k;
        const float *wt = w + t * top_k;
        int32_t *ot = out + t * top_k;
        uint64_t def = 0; /* bit k: slot k deferred (top_k <= 64) */
        for (int d = 0; d < n_defer; d++) {
            int best = -1; /* the smallest weight left; from the last slot, so ties go late */
            for (int k = top_k - 1; k >= 0; k--)
                if (it[k] >= 0 && !(def >> k & 1) && (best < 0 || wt[k] < wt[best])) best = k;
            if (best < 0) break;
            def |= 1ull << best;
        }
        for (int k = 0; k < top_k; k++) ot[k] = (int)(def >> k & 1) == part ? it[k] : -1;
    }
}

void ops_swiglu(struct ops *o, const float *gate, const float *up, int64_t n, float *y)
{
    o->vt->swiglu(o, gate, up, n, y);
}

void ops_add(struct ops *o, float *y, const float *x, int64_t n) { o->vt->add(o, y, x, n); }

void ops_gather(struct ops *o, const float *x, int dim, const int32_t *idx, int n, float *y)
{
    o->vt->gather(o, x, dim, idx, n, y);
}

/* ---- fused forms: the plain ops where a backend has none */

void ops_rmsnorm_lin(struct ops *o, const float *x, int ldx, const float *g, int n, int dim,
                     float eps, float *y, int ldy, const struct ops_lin *next)
{
    if (o->vt->rmsnorm_lin) o->vt->rmsnorm_lin(o, x, ldx, g, n, dim, eps, y, ldy, next);
    else o->vt->rmsnorm(o, x, ldx, g, n, dim, eps, y, ldy);
}

int ops_lin_create_cat(struct ops *o, const struct wt_view *a, const struct wt_view *b,
                       struct ops_lin **out, char *err)
{
    *out = NULL;
    if (!o->vt->lin_create_cat)
        return err_set(err, ERR_UNSUPPORTED, "ops: %s fuses no linears", ops_name(o));
    return o->vt->lin_create_cat(o, a, b, out, err);
}

void ops_swiglu_gu(struct ops *o, const float *gu, int n, int dim, float *y,
                   const struct ops_lin *next)
{
    if (o->vt->swiglu_gu) {
        o->vt->swiglu_gu(o, gu, n, dim, y, next);
        return;
    }
    for (int t = 0; t < n; t++)
        o->vt->swiglu(o, gu + (size_t)t * 2 * dim, gu + (size_t)t * 2 * dim + dim, dim,
                      y + (size_t)t * dim);
}

void ops_rope2(struct ops *o, const struct ops_rope *r, const int32_t *pos, int n,
               const struct ops_rope_job *a, const struct ops_rope_job *b)
{
    if (o->vt->rope2) {
        o->vt->rope2(o, r, pos, n, a, b);
        return;
    }
    const struct ops_rope_job *j[2] = {a, b};
    for (int i = 0; i < 2; i++)
        if (j[i])
            o->vt->rope(o, r, pos, n, j[i]->n_heads, j[i]->x, j[i]->ldx_tok, j[i]->ldx_head,
                        j[i]->y, j[i]->ldy_tok, j[i]->ldy_head);
}

int ops_graph_begin(struct ops *o, const struct model_kv *kv, const struct model_batch *b,
                    const struct ops_rope *rope, const void *h)
{
    return o->vt->graph_begin ? o->vt->graph_begin(o, kv, b, rope, h) : 0;
}

int ops_graph_end(struct ops *o) { return o->vt->graph_end ? o->vt->graph_end(o) : 0; }
