/* ops_internal.h - the backend table behind ops.h, for ops.c and the backends (ops_cpu.c,
 * ops_cuda.c) only.
 *
 * A backend embeds `struct ops` as the first member of its own state and points vt at a static
 * table. The sticky error: an op that cannot run (e.g. scratch memory could not grow) records the
 * first error in `err_code`/`err` and returns; model_forward checks ops_error() after a forward.
 * Threads and ownership: as ops.h.
 */
#ifndef TANDEM_OPS_INTERNAL_H
#define TANDEM_OPS_INTERNAL_H

#include "common/err.h"
#include "engine/model/ops.h"

struct ops_vt {
    const char *(*name)(const struct ops *o);
    int (*n_threads)(const struct ops *o);
    void (*destroy)(struct ops *o);
    void *(*alloc)(struct ops *o, size_t bytes);
    void (*free)(struct ops *o, void *p);
    void (*upload)(struct ops *o, void *dst, const void *src, size_t bytes);
    void (*download)(struct ops *o, void *dst, const void *src, size_t bytes);
    int (*lin_create)(struct ops *o, const struct wt_view *w, struct ops_lin **out, char *err);
    /* optional (NULL: lin_create): see ops_table_create */
    int (*table_create)(struct ops *o, const struct wt_view *w, struct ops_lin **out, char *err);
    /* optional (NULL: lin_create): see ops_lin_create_w16 */
    int (*lin_create_w16)(struct ops *o, const struct wt_view *w, struct ops_lin **out, char *err);
    /* optional (NULL: nothing to report): see ops_load_done */
    void (*load_done)(struct ops *o);
    void (*lin_destroy)(struct ops *o, struct ops_lin *l);
    int (*moe_create)(struct ops *o, int n_expert, const struct wt_view *gate,
                      const struct wt_view *up, const struct wt_view *down, struct ops_moe **out,
                      char *err);
    void (*moe_destroy)(struct ops *o, struct ops_moe *m);
    void (*moe_set_counts)(struct ops *o, struct ops_moe *m, struct expert_counts *c, int row);
    /* optional (NULL: no hot experts; see ops_moe_hot_bytes / ops_moe_set_hot) */
    size_t (*moe_hot_bytes)(struct ops *o, const struct ops_moe *m, int e);
    int (*moe_set_hot)(struct ops *o, struct ops_moe *m, const uint8_t *hot, char *err);
    void (*embed)(struct ops *o, const struct ops_lin *table, const int32_t *tokens, int n,
                  float *y);
    void (*linear)(struct ops *o, const struct ops_lin *w, const float *x, int n, float *y);
    void (*rmsnorm)(struct ops *o, const float *x, int ldx, const float *g, int n, int dim,
                    float eps, float *y, int ldy);
    void (*rope)(struct ops *o, const struct ops_rope *r, const int32_t *pos, int n, int n_heads,
                 const float *x, int ldx_tok, int ldx_head, float *y, int ldy_tok, int ldy_head);
    /* optional (NULL: ops.c keeps an fp32 copy in ops_alloc memory) */
    int (*heads_create)(struct ops *o, const struct wt_view *v, const float *f32,
                        struct ops_heads **out, char *err);
    void (*heads_destroy)(struct ops *o, struct ops_heads *h);
    void (*head_matmul)(struct ops *o, const struct ops_heads *w, int64_t w_off, int64_t w_head,
                        int rows, int cols, int trans, int n, int n_heads, const float *x,
                        int ldx_tok, int ldx_head, float *y, int ldy_tok, int ldy_head);
    void (*kv_store)(struct ops *o, const struct model_kv *kv, int layer,
                     const struct model_batch *b, const float *x);
    void (*mla_attn)(struct ops *o, const struct model_kv *kv, int layer,
                     const struct model_batch *b, int n_heads, int kv_lora, float scale,
                     const float *q, float *out);
    void (*router)(struct ops *o, const struct ops_router *r, const float *logits,
                   const float *bias, int n, int32_t *ids, float *w);
    void (*moe)(struct ops *o, const struct ops_moe *m, const float *x, int n, const int32_t *ids,
                const float *w, int top_k, float *y);
    void (*moe_defer)(struct ops *o, const struct ops_moe *m, const float *x, int n,
                      const int32_t *ids, const float *w, int top_k, int n_defer, float *y,
                      float *y_def);
    void (*swiglu)(struct ops *o, const float *gate, const float *up, int64_t n, float *y);
    void (*add)(struct ops *o, float *y, const float *x, int64_t n);
    void (*gather)(struct ops *o, const float *x, int dim, const int32_t *idx, int n, float *y);
    /* optional fused forms (NULL: the plain ops; see ops.h) */
    void (*rmsnorm_lin)(struct ops *o, const float *x, int ldx, const float *g, int n, int dim,
                        float eps, float *y, int ldy, const struct ops_lin *next);
    int (*lin_create_cat)(struct ops *o, const struct wt_view *a, const struct wt_view *b,
                          struct ops_lin **out, char *err);
    void (*swiglu_gu)(struct ops *o, const float *gu, int n, int dim, float *y,
                      const struct ops_lin *next);
    void (*rope2)(struct ops *o, const struct ops_rope *r, const int32_t *pos, int n,
                  const struct ops_rope_job *a, const struct ops_rope_job *b);
    /* optional (NULL: no graphs): see ops_graph_begin */
    int (*graph_begin)(struct ops *o, const struct model_kv *kv, const struct model_batch *b,
                       const struct ops_rope *rope, const void *h);
    int (*graph_end)(struct ops *o);
    /* optional (NULL: a host backend, 0 bytes): see ops_device_free */
    size_t (*device_free)(struct ops *o, int *sms);
    /* optional (NULL: nothing more to do): ops_set_fp8_ue8m0 has set o->fp8_ue8m0; a backend
     * with an inner backend (ops_cuda's CPU one) passes the setting on */
    void (*set_fp8_ue8m0)(struct ops *o, int on);
};

/* What ops_heads_create makes. f32: the fp32 values in backend memory (ops_alloc), or NULL when
 * the backend keeps another form (ops_cuda: e4m3 q + scale on the device, see there). */
struct ops_heads {
    float *f32;
    int64_t rows, cols;
    uint8_t *q;
    float *scale;
};

struct ops {
    const struct ops_vt *vt;
    enum ops_backend backend; /* set by ops_create (ops_backend_of) */
    int fp8_ue8m0;            /* ops_set_fp8_ue8m0; the FP8 linears and experts read it per op */
    int err_code;             /* sticky: first error of an op since the last ops_error() */
    char err[ERR_LEN];
};

/* Record an op failure (keeps the first one). */
void ops__fail(struct ops *o, int code, const char *msg);

/* Expert deferral's split of host routes (ops_moe_defer): out = ids with the routes of the other
 * part set to -1 (part 0: keep the immediate routes, 1: keep the deferred ones). Per token the
 * n_defer routes of smallest w are deferred, equal weights the later slot first; ids of -1 stay
 * -1 and are never chosen. */
void ops__defer_ids(const int32_t *ids, const float *w, int n, int top_k, int n_defer, int part,
                    int32_t *out);

/* The CPU backend (ops_create's for OPS_BACKEND_CPU, and ops_cuda's inner one); uses p's CPU
 * fields. Errors: ERR_UNSUPPORTED (ISA not available), ERR_NOMEM, ERR_INTERNAL. */
int ops_cpu_create(const struct ops_params *p, struct ops **out, char *err);

#endif
