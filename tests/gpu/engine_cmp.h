/* engine_cmp.h - helpers of the GPU forward tests that put routed experts on the GPU beside the
 * CPU pool (test_engine_stream.c: streamed; test_engine_hot.c: hot): the synth model they share,
 * the forwards they drive, and the logits comparison with the CPU engine (header-only).
 *
 * The model: `tiny` with 16 heads and kv_lora 512 (so attention runs on the GPU kernels), 16
 * routed experts, top-4, 1 dense + 2 MoE layers, experts q4_K_M (gate/up Q4_K + down Q6_K: the
 * GPU path takes mixed types). The forwards (ecmp_drive): a prefill of ECMP_P1 tokens (one
 * sequence, logits at every position), a second chunk of ECMP_P2 tokens of the same sequence,
 * ECMP_ND4 forwards of 4 tokens and ECMP_ND1 of 1 token (decode sizes).
 * The tolerance (ecmp_compare): the GPU experts compute with bf16 activations and bf16-rounded
 * weights where the CPU quantizes activations to Q8_K (docs/numerics.md section 5: ~1-5%
 * relative L2 between them per layer output), and the forward is chaotic at rounding level on
 * random synth models (test_engine_gpu.c), so logits are compared with test_engine_gpu's
 * tolerance: median relative L2 error over positions <= ECMP_TOL_MED, every logit finite;
 * reported: the max, and top-1 agreement with the CPU.
 */
#ifndef TANDEM_TEST_ENGINE_CMP_H
#define TANDEM_TEST_ENGINE_CMP_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "engine/model/model.h"
#include "engine/model/ops.h"
#include "engine/model/ops_cuda.h"
#include "tests/engine/model_util.h"
#include "tests/gpu/tiny16.h"

#define ECMP_P1 256
#define ECMP_P2 96
#define ECMP_ND4 4 /* forwards of 4 tokens */
#define ECMP_ND1 4 /* forwards of 1 token */
#define ECMP_N (ECMP_P1 + ECMP_P2 + ECMP_ND4 * 4 + ECMP_ND1)
#define ECMP_TOL_MED 0.1

static int ecmp_cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Makes the test model in a fresh directory under base (a mkdtemp template, filled in): its
 * config.json, then `convert synth` into base/model (dir, dir_len bytes). 0, or nonzero with a
 * line printed (the synth log is dir.log). */
static inline int ecmp_make_model(char *base, unsigned long long seed, char *dir, size_t dir_len)
{
    char cfg[600];
    if (!mkdtemp(base)) return -1;
    snprintf(cfg, sizeof cfg, "%s/tiny16.json", base);
    snprintf(dir, dir_len, "%s/model", base);
    if (tiny16_write_config(cfg)) return -1;
    int rc = make_synth(cfg, seed % 1000000007ull, dir, "--experts q4_K_M");
    if (rc) printf("synth failed (%d), see %s.log\n", rc, dir);
    return rc;
}

/* n prompt tokens in [2, V) from the seed (xorshift), malloc'd (NULL when out of memory) */
static inline int32_t *ecmp_tokens(unsigned long long seed, int V, int n)
{
    int32_t *tok = malloc((size_t)n * sizeof *tok);
    unsigned long long r = seed | 1;
    for (int i = 0; tok && i < n; i++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        tok[i] = 2 + (int)(r % (unsigned long long)(V - 2));
    }
    return tok;
}

/* Called after the model is built and before the forwards (e.g. to place hot experts); nonzero
 * fails the drive with err set. */
typedef int (*ecmp_setup_fn)(void *ud, struct ops *o, struct model *m, char *err);

struct ecmp_run {
    float *lg; /* ECMP_N x V logits */
    struct ops_cuda_stats st;
};

/* The forwards on a fresh backend from op (and a model on it): logits and the backend's stats. */
static inline int ecmp_drive(const struct wt_model *w, const struct ops_params *op,
                             const int32_t *tok, ecmp_setup_fn setup, void *ud, struct ecmp_run *r,
                             char *err)
{
    struct ops *o = NULL;
    struct model *m = NULL;
    int rc = tm_create(w, op, &o, &m, err);
    if (rc) return rc;
    int V = model_vocab(m);
    struct tkv kv;
    if (tkv_init(&kv, model_n_layers(m), model_kv_dim(m), 1, ECMP_N + 16, 16)) {
        tm_destroy(o, m);
        return err_set(err, ERR_NOMEM, "kv");
    }
    if (setup) rc = setup(ud, o, m, err);
    ops_cuda_stats(o, &r->st, 1);
    if (!rc) rc = run_seq(m, &kv, 0, tok, ECMP_P1, 0, r->lg, err);
    if (!rc)
        rc = run_seq(m, &kv, 0, tok + ECMP_P1, ECMP_P2, ECMP_P1, r->lg + (size_t)ECMP_P1 * V, err);
    int p0 = ECMP_P1 + ECMP_P2;
    for (int d = 0; !rc && d < ECMP_ND4 + ECMP_ND1; d++) {
        int k = d < ECMP_ND4 ? 4 : 1;
        rc = run_seq(m, &kv, 0, tok + p0, k, p0, r->lg + (size_t)p0 * V, err);
        p0 += k;
    }
    ops_cuda_stats(o, &r->st, 0);
    tkv_free(&kv);
    tm_destroy(o, m);
    return rc;
}

/* Logits of run a against the CPU run c over n positions: returns failed checks. */
static inline int ecmp_compare(const char *tag, const float *a, const float *c, int V, int n)
{
    double *e = malloc((size_t)n * sizeof *e);
    if (!e) return 1;
    int agree = 0, finite = 1;
    for (int t = 0; t < n; t++) {
        const float *x = a + (size_t)t * V, *y = c + (size_t)t * V;
        for (int v = 0; v < V; v++) finite &= isfinite(x[v]) != 0;
        e[t] = rel_err_f(x, y, V);
        agree += argmax_fl(x, V) == argmax_fl(y, V);
    }
    qsort(e, (size_t)n, sizeof *e, ecmp_cmp_d);
    double med = e[n / 2], mx = e[n - 1];
    printf("%-8s logits vs CPU over %d positions: rel L2 median %.2e, max %.2e; top-1 agreement "
           "%d/%d (%.1f%%)%s\n",
           tag, n, med, mx, agree, n, 100.0 * agree / n, finite ? "" : "; NON-FINITE logits");
    free(e);
    int fails = 0;
    if (!finite) fails++;
    if (!(med <= ECMP_TOL_MED)) {
        printf("FAIL %s: median error %.3e > %.1e\n", tag, med, ECMP_TOL_MED);
        fails++;
    }
    return fails;
}

#endif
