/* test_requant_e2e.c - the end-to-end accuracy cost of running a GGUF model's non-expert weights
 * as FP8 (gpu.requant_ggml), measured on the CPU backend.
 *
 * A GGUF user's CPU run computes the attention / dense / shared-expert projections and kv_b from
 * their GGML blocks; the GPU backend computes them from those blocks re-quantized to FP8 e4m3
 * with 128x128 block scales. This test emulates both on the CPU, so the difference is the
 * re-quantization alone (not the GPU's summation orders): a test-only backend ("emu") wraps the
 * CPU backend and, at load, turns each FP8 projection and kv_b of the model into a GGML type T
 * (dequantize, quantize with ggml's reference quantizer: the "GGUF"; a weight whose columns are
 * not whole T blocks takes q8_0, as llama.cpp falls back; tests/engine/ggml_emu.h), then either
 *   A: hands the GGML weight to the CPU backend (the CPU-only run of the GGUF), or
 *   B: re-quantizes it with kernels/cpu/requant_fp8 and hands over the FP8 weight (the GPU run's
 *      weights; kv_b as the fp32 values of that FP8 weight, as ops_cuda expands it).
 * Router, lm_head, norms and embeddings are left as they are (the GPU converts a GGUF's router
 * and lm_head to bf16, W16A32 as on the CPU). Routed experts keep their GGML blocks (CPU pool).
 * Models: models/default (trained, the realistic case) and a fresh `tiny` synth (random weights;
 * needs TANDEM_BIN). For T = q8_0, q6_K, q4_K: NRUN random prompts of 8..24 tokens, logits at
 * every position; printed: relative L2 error of B vs A (median / max over positions) and top-1
 * agreement; the same for B with unquantized activations (the CPU backend's fp8_w8a16: the part
 * due to the weights alone, as e4m3 activations replace the GGML path's 8-bit ones); and A vs the
 * original FP8 model (what the GGUF conversion itself moves).
 * docs/numerics.md quotes the output. Asserted (what a bug would break): every forward succeeds,
 * logits finite, median B-vs-A error <= 0.2. Fresh seed each run (TANDEM_TEST_SEED replays).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "engine/model/model.h"
#include "engine/model/ops_internal.h"
#include "engine/weights/weights.h"
#include "kernels/cpu/cpuq.h"
#include "kernels/cpu/fp8.h"
#include "kernels/cpu/requant_fp8.h"
#include "tests/check.h"
#include "tests/engine/ggml_emu.h"
#include "tests/engine/model_util.h"

#define NRUN 12
#define PMAX 24

/* the CPU backend (W8A16 FP8 linears in mode 3) behind the converting wrapper */
static struct ops *emu_create(int type, int mode)
{
    char err[ERR_LEN];
    struct ops *in = NULL;
    struct ops_params p = {
        .backend = OPS_BACKEND_CPU, .max_tokens = NRUN * PMAX, .fp8_w8a16 = mode == 3};
    CHECK_EQ(ops_create(&p, &in, err), 0);
    return emu_wrap(in, type, mode == 3 ? 2 : mode);
}

/* ---------------------------------------------------------------- measurement */

static unsigned long long rng;
static unsigned long long rnd(void)
{
    unsigned long long z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

struct run {
    int n;         /* positions */
    float *logits; /* [n][vocab] */
    int32_t tok[NRUN][PMAX];
    int len[NRUN];
};

/* every prompt's logits at every position, one sequence at a time */
static void forward_all(const struct wt_model *w, int type, int mode, struct run *r, int vocab)
{
    char err[ERR_LEN];
    struct ops *o = emu_create(type, mode);
    struct model *m = NULL;
    if (model_create(w, o, NRUN * PMAX, &m, err)) {
        fprintf(stderr, "model_create: %s\n", err);
        exit(1);
    }
    struct tkv kv;
    CHECK_EQ(tkv_init(&kv, model_n_layers(m), model_kv_dim(m), NRUN, PMAX, 16), 0);
    r->n = 0;
    for (int s = 0; s < NRUN; s++) {
        float *lg = r->logits + (size_t)r->n * vocab;
        if (run_seq(m, &kv, s, r->tok[s], r->len[s], 0, lg, err)) {
            fprintf(stderr, "forward: %s\n", err);
            exit(1);
        }
        CHECK_EQ(ops_error(emu_inner(o), err), 0);
        for (size_t i = 0; i < (size_t)r->len[s] * vocab; i++) CHECK(isfinite(lg[i]));
        r->n += r->len[s];
    }
    tkv_free(&kv);
    model_destroy(m);
    ops_destroy(o);
}

static void compare(const struct run *a, const struct run *b, int vocab, double *med, double *mx,
                    double *top1)
{
    double *e = malloc((size_t)a->n * sizeof(double));
    CHECK(e);
    int agree = 0;
    *mx = 0;
    for (int p = 0; p < a->n; p++) {
        const float *x = a->logits + (size_t)p * vocab, *y = b->logits + (size_t)p * vocab;
        e[p] = rel_err_f(x, y, vocab);
        if (e[p] > *mx) *mx = e[p];
        agree += argmax_fl(x, vocab) == argmax_fl(y, vocab);
    }
    for (int i = 1; i < a->n; i++)
        for (int j = i; j > 0 && e[j] < e[j - 1]; j--) {
            double t = e[j];
            e[j] = e[j - 1];
            e[j - 1] = t;
        }
    *med = e[a->n / 2];
    *top1 = (double)agree / a->n;
    free(e);
}

static void measure(const char *name, const char *dir)
{
    char err[ERR_LEN];
    struct wt_model *w = NULL;
    if (wt_open(dir, &w, err) || wt_validate(w, err)) {
        fprintf(stderr, "%s: %s\n", name, err);
        exit(1);
    }
    int vocab = wt_hparams(w)->vocab_size;
    struct run r[4];
    for (int k = 0; k < 4; k++) {
        r[k].logits = malloc((size_t)NRUN * PMAX * vocab * sizeof(float));
        CHECK(r[k].logits);
    }
    for (int s = 0; s < NRUN; s++) {
        r[0].len[s] = 8 + (int)(rnd() % (PMAX - 7));
        for (int i = 0; i < r[0].len[s]; i++) r[0].tok[s][i] = (int32_t)(rnd() % (unsigned)vocab);
    }
    for (int k = 1; k < 4; k++) {
        memcpy(r[k].tok, r[0].tok, sizeof r[0].tok);
        memcpy(r[k].len, r[0].len, sizeof r[0].len);
    }
    forward_all(w, 0, 0, &r[0], vocab);
    printf("%s (%d positions): logits rel. L2 median / max, top-1 agreement\n", name, r[0].n);
    const int types[] = {QTYPE_Q8_0, QTYPE_Q6_K, QTYPE_Q4_K};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        forward_all(w, types[i], 1, &r[1], vocab);
        forward_all(w, types[i], 2, &r[2], vocab);
        forward_all(w, types[i], 3, &r[3], vocab);
        double m1, x1, t1, m2, x2, t2, m3, x3, t3;
        compare(&r[1], &r[0], vocab, &m1, &x1, &t1);
        compare(&r[2], &r[1], vocab, &m2, &x2, &t2);
        compare(&r[3], &r[1], vocab, &m3, &x3, &t3);
        printf("  %-5s  FP8 re-quantized vs %s: %.4f / %.4f, %5.1f%%;  the same with fp32 "
               "activations (W8A16): %.4f / %.4f, %5.1f%%;  %s vs the FP8 original: %.4f / "
               "%.4f, %5.1f%%\n",
               qtype_name(types[i]), qtype_name(types[i]), m2, x2, 100 * t2, m3, x3, 100 * t3,
               qtype_name(types[i]), m1, x1, 100 * t1);
        CHECK(m2 <= 0.2);
    }
    for (int k = 0; k < 4; k++) free(r[k].logits);
    wt_close(w);
}

int main(void)
{
    rng = check_seed();
    const char *src = getenv("TANDEM_SRC");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/models/default", src ? src : ".");
    if (access(dir, R_OK) == 0) measure("models/default (trained)", dir);
    else printf("models/default: not found, skipped\n");
    char base[] = "/tmp/tandem-requant-XXXXXX";
    CHECK(mkdtemp(base));
    snprintf(dir, sizeof dir, "%s/tiny", base);
    int rc = make_synth("tiny", rng % 1000000007ull, dir, "");
    if (rc == 0) measure("tiny synth (random weights)", dir);
    else printf("tiny: synth %s, skipped\n", rc < 0 ? "needs TANDEM_BIN" : "failed");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", base);
    return 0;
}
