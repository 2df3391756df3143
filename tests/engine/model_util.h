/* model_util.h - helpers shared by the model tests, benchmark and dump_logits (header-only).
 *
 * A model on its own backend, a simple paged KV cache for tests (every sequence gets its own run
 * of blocks), a synth model maker, batch builders and comparisons. Not part of the engine: the
 * scheduler owns the real KV allocator.
 */
#ifndef TANDEM_TEST_MODEL_UTIL_H
#define TANDEM_TEST_MODEL_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "engine/model/model.h"
#include "engine/model/ops.h"

/* A backend from p and a model of w on it for batches of up to p->max_tokens tokens. On failure
 * nothing is left (*o and *m NULL). Free with tm_destroy. */
static inline int tm_create(const struct wt_model *w, const struct ops_params *p, struct ops **o,
                            struct model **m, char *err)
{
    *m = NULL;
    int rc = ops_create(p, o, err);
    if (rc) return rc;
    rc = model_create(w, *o, p->max_tokens, m, err);
    if (rc) {
        ops_destroy(*o);
        *o = NULL;
    }
    return rc;
}

/* the model first, then the backend it was built on; NULLs are fine */
static inline void tm_destroy(struct ops *o, struct model *m)
{
    model_destroy(m);
    ops_destroy(o);
}

struct tkv {
    struct model_kv kv;
    int32_t *tables; /* [max_seqs][blocks_per_seq] */
    int blocks_per_seq;
};

/* max_seqs sequences of up to max_tokens each, block size bt, elements of `type` (enum
 * model_kv_type); sequence s owns blocks s*bps .. s*bps+bps-1, listed in reverse order so block
 * order never equals position order. Unwritten slots hold NaN, so reading one shows. */
static inline int tkv_init_type(struct tkv *t, int n_layers, int kv_dim, int max_seqs,
                                int max_tokens, int bt, int type)
{
    memset(t, 0, sizeof *t);
    t->blocks_per_seq = (max_tokens + bt - 1) / bt;
    t->kv.n_layers = n_layers;
    t->kv.kv_dim = kv_dim;
    t->kv.block_tokens = bt;
    t->kv.type = type;
    t->kv.n_blocks = t->blocks_per_seq * max_seqs;
    t->kv.layer_data = calloc((size_t)n_layers, sizeof(void *));
    t->tables = malloc((size_t)t->kv.n_blocks * sizeof(int32_t));
    if (!t->kv.layer_data || !t->tables) return -1;
    size_t n = (size_t)t->kv.n_blocks * bt * kv_dim;
    for (int l = 0; l < n_layers; l++) {
        t->kv.layer_data[l] = malloc(n * model_kv_elem_size(type));
        if (!t->kv.layer_data[l]) return -1;
        if (type == MODEL_KV_F32)
            for (size_t i = 0; i < n; i++) ((float *)t->kv.layer_data[l])[i] = NAN;
        else
            for (size_t i = 0; i < n; i++) ((uint16_t *)t->kv.layer_data[l])[i] = 0x7fc0;
    }
    for (int s = 0; s < max_seqs; s++)
        for (int i = 0; i < t->blocks_per_seq; i++)
            t->tables[s * t->blocks_per_seq + i] =
                s * t->blocks_per_seq + (t->blocks_per_seq - 1 - i);
    return 0;
}

/* the same with the contract's bf16 cache */
static inline int tkv_init(struct tkv *t, int n_layers, int kv_dim, int max_seqs, int max_tokens,
                           int bt)
{
    return tkv_init_type(t, n_layers, kv_dim, max_seqs, max_tokens, bt, MODEL_KV_BF16);
}

static inline void tkv_free(struct tkv *t)
{
    for (int l = 0; t->kv.layer_data && l < t->kv.n_layers; l++) free(t->kv.layer_data[l]);
    free(t->kv.layer_data);
    free(t->tables);
}

static inline struct model_seq tkv_seq(const struct tkv *t, int s)
{
    struct model_seq q = {t->tables + (size_t)s * t->blocks_per_seq, t->blocks_per_seq};
    return q;
}

/* Forward tokens[0..n) of one sequence (slot `s` of the tkv) at positions p0..p0+n-1, logits for
 * every token (logits: n x vocab), or only for the last one if last_only. */
static inline int run_seq_ex(struct model *m, struct tkv *t, int s, const int32_t *tokens, int n,
                             int p0, int last_only, float *logits, char *err);
static inline int run_seq(struct model *m, struct tkv *t, int s, const int32_t *tokens, int n,
                          int p0, float *logits, char *err)
{
    return run_seq_ex(m, t, s, tokens, n, p0, 0, logits, err);
}

static inline int run_seq_ex(struct model *m, struct tkv *t, int s, const int32_t *tokens, int n,
                             int p0, int last_only, float *logits, char *err)
{
    int32_t *pos = malloc((size_t)n * 4), *seq = calloc((size_t)n, 4), *li = malloc((size_t)n * 4);
    struct model_seq sq = tkv_seq(t, s);
    for (int i = 0; i < n; i++) {
        pos[i] = p0 + i;
        li[i] = i;
    }
    struct model_batch b = {.n_tokens = n,
                            .tokens = tokens,
                            .pos = pos,
                            .seq = seq,
                            .n_seqs = 1,
                            .seqs = &sq,
                            .n_logits = last_only ? 1 : n,
                            .logits_idx = last_only ? li + n - 1 : li};
    int rc = model_forward(m, &t->kv, &b, logits, err);
    free(pos);
    free(seq);
    free(li);
    return rc;
}

/* ||a - b||_2 / ||b||_2 over n values */
static inline double rel_err_f(const float *a, const float *b, int n)
{
    double d = 0, r = 0;
    for (int i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        r += (double)b[i] * b[i];
    }
    return sqrt(d) / (sqrt(r) + 1e-30);
}

static inline double rel_err_fd(const float *a, const double *b, int n)
{
    double d = 0, r = 0;
    for (int i = 0; i < n; i++) {
        d += (a[i] - b[i]) * (a[i] - b[i]);
        r += b[i] * b[i];
    }
    return sqrt(d) / (sqrt(r) + 1e-30);
}

static inline int argmax_fl(const float *v, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return b;
}

static inline int argmax_db(const double *v, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return b;
}

/* Make a synth model: `$TANDEM_BIN convert synth --preset P --seed S --out DIR [extra]`.
 * Returns the command's exit status (0 ok), or -1 if TANDEM_BIN is unset. */
static inline int make_synth(const char *preset, unsigned long long seed, const char *dir,
                             const char *extra)
{
    const char *bin = getenv("TANDEM_BIN");
    if (!bin) return -1;
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "'%s' convert synth --preset %s --seed %llu --out '%s' %s "
             ">'%s.log' 2>&1",
             bin, preset, seed, dir, extra ? extra : "", dir);
    int st = system(cmd);
    return st == -1 ? -1 : (st >> 8) & 0xff;
}

#endif
