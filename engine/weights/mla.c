/* mla.c - MLA's up-projection kv_b in either stored layout.
 *
 * DeepSeek's checkpoints (and older GGUFs) store `blk.N.attn_kv_b.weight` [H * (nope + v), L]:
 * per head h, nope rows of W_UK then v rows of W_UV. llama.cpp's converter since its 2025 MLA
 * change splits it per head instead (convert_hf_to_gguf.py, DeepseekV2Model.modify_tensors):
 *   blk.N.attn_k_b.weight  [H, L, nope]  W_UK transposed (GGUF ne = {nope, L, H})
 *   blk.N.attn_v_b.weight  [H, v, L]     W_UV as is     (GGUF ne = {L, v, H})
 * wt_kv_b_rows gives the kv_b layout's rows from either, so the forward, the reference and
 * `convert` see one matrix whatever the file holds.
 *
 * Memory: for the split form, one head of k_b ([L, nope] floats) at a time.
 * Threads: read-only on the index; safe from several threads.
 */
#include "weights_internal.h"

#include "common/err.h"
#include "kernels/cpu/cpuq.h"

#include <stdlib.h>

int wt_kv_b_split(const struct wt_model *m, int layer)
{
    return !wt_getf(m, "blk.%d.attn_kv_b.weight", layer) &&
           wt_getf(m, "blk.%d.attn_k_b.weight", layer) &&
           wt_getf(m, "blk.%d.attn_v_b.weight", layer);
}

/* t is [d0, d1, d2] (or, 2-D, [d0 * d1, d2]) of a non-FP8 type with row_bytes per d2-row */
static int check_3d(const struct wt_tensor *t, int64_t d0, int64_t d1, int64_t d2, size_t *rb,
                    char *err)
{
    int ok = 1;
    int shaped = (t->ndim == 3 && t->shape[0] == d0 && t->shape[1] == d1 && t->shape[2] == d2) ||
                 (t->ndim == 2 && t->shape[0] == d0 * d1 && t->shape[1] == d2);
    if (!shaped)
        return err_set(err, ERR_FORMAT, "tensor %s: shape is not [%lld, %lld, %lld]", t->name,
                       (long long)d0, (long long)d1, (long long)d2);
    if (t->type == QTYPE_F8_E4M3)
        return err_set(err, ERR_UNSUPPORTED, "tensor %s: FP8 split MLA tensors", t->name);
    *rb = qtype_row_bytes(t->type, d2, &ok);
    if (!ok || *rb * (size_t)(d0 * d1) > t->nbytes)
        return err_set(err, ERR_FORMAT, "tensor %s: bad size for type %s", t->name,
                       qtype_name(t->type));
    return 0;
}

static int rows_kv_b(const struct cpuq_ops *ops, const struct wt_tensor *t, int64_t rows,
                     int64_t cols, int64_t r0, int64_t n, float *out, char *err)
{
    int ok = 1;
    if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols)
        return err_set(err, ERR_FORMAT, "tensor %s: shape is not [%lld, %lld]", t->name,
                       (long long)rows, (long long)cols);
    size_t rb = qtype_row_bytes(t->type, cols, &ok);
    if (!ok || rb * (size_t)rows > t->nbytes)
        return err_set(err, ERR_FORMAT, "tensor %s: bad size for type %s", t->name,
                       qtype_name(t->type));
    const float *sc = t->scale ? t->scale->data : NULL;
    for (int64_t i = 0; i < n; i++) {
        int rc =
            wt__row_f32(ops, t->type, cols, rb, t->data, sc, r0 + i, out + i * cols, t->name, err);
        if (rc) return rc;
    }
    return 0;
}

int wt_kv_b_rows(const struct wt_model *m, int layer, int64_t r0, int64_t n, float *out, char *err)
{
    const struct wt_hparams *hp = wt_hparams(m);
    const int64_t H = hp->n_heads, L = hp->kv_lora_rank, NOPE = hp->qk_nope, V = hp->v_head;
    const int64_t hr = NOPE + V;
    if (r0 < 0 || n < 0 || r0 + n > H * hr)
        return err_set(err, ERR_INVAL, "kv_b rows [%lld, %lld) out of range", (long long)r0,
                       (long long)(r0 + n));
    const struct cpuq_ops *ops;
    int rc = cpuq_ops_get(CPUQ_ISA_SCALAR, &ops, err);
    if (rc) return rc;
    const struct wt_tensor *kv = wt_getf(m, "blk.%d.attn_kv_b.weight", layer);
    if (kv) return rows_kv_b(ops, kv, H * hr, L, r0, n, out, err);
    const struct wt_tensor *kb = wt_getf(m, "blk.%d.attn_k_b.weight", layer);
    const struct wt_tensor *vb = wt_getf(m, "blk.%d.attn_v_b.weight", layer);
    if (!kb || !vb)
        return err_set(err, ERR_FORMAT,
                       "layer %d has neither attn_kv_b.weight nor both attn_k_b.weight and "
                       "attn_v_b.weight",
                       layer);
    size_t kb_rb, vb_rb;
    if ((rc = check_3d(kb, H, L, NOPE, &kb_rb, err)) || (rc = check_3d(vb, H, V, L, &vb_rb, err)))
        return rc;
    float *head = NULL; /* k_b of head cur: [L][NOPE] */
    int64_t cur = -1;
    for (int64_t i = 0; i < n && !rc; i++) {
        int64_t r = r0 + i, h = r / hr, k = r % hr;
        float *o = out + i * L;
        if (k >= NOPE) { /* W_UV row: v_b row (h, k - NOPE) */
            rc = wt__row_f32(ops, vb->type, L, vb_rb, vb->data, NULL, h * V + k - NOPE, o, vb->name,
                             err);
            continue;
        }
        if (h != cur) {
            if (!head && !(head = malloc(sizeof *head * (size_t)(L * NOPE))))
                return err_set(err, ERR_NOMEM, "out of memory for k_b");
            for (int64_t c = 0; c < L && !rc; c++)
                rc = wt__row_f32(ops, kb->type, NOPE, kb_rb, kb->data, NULL, h * L + c,
                                 head + c * NOPE, kb->name, err);
            if (rc) break;
            cur = h;
        }
        for (int64_t c = 0; c < L; c++) o[c] = head[c * NOPE + k]; /* W_UK[k][c] = k_b[c][k] */
    }
    free(head);
    return rc;
}
