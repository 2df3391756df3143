/* test_engine_ggml.c - a whole model with GGML-typed non-expert weights (a GGUF's layout) on the
 * GPU backend against the CPU backend (gpu.requant_ggml).
 *
 * The synth models store attention / dense / shared-expert projections and kv_b as FP8; the
 * test-only wrapper of tests/engine/ggml_emu.h turns them into a GGML type T at load (ggml's
 * reference quantizer; q8_0 where the columns are not whole T blocks), so each backend receives
 * what it would receive from a GGUF. Backends, each with its own KV cache, same prompts:
 *   cpu  : the CPU backend on the GGML weights (a CPU-only run of the GGUF);
 *   gpu  : ops_cuda on the GGML weights, which re-quantizes them to FP8 at load;
 *   cpu8 : the CPU backend on those weights re-quantized to FP8 by the wrapper (what gpu should
 *          compute, up to the GPU's summation orders and the tensor-core MLA);
 *   keep : ops_cuda with gpu_keep_ggml = 1 (gpu.requant_ggml = off): the GGML weights stay on
 *          its CPU backend.
 * Models: models/default (T = q8_0: its 128-wide q_b and kv_b take q8_0 anyway; attention on the
 * CPU fallback) and, with TANDEM_BIN, a fresh tiny16 (16 heads, kv_lora 512: attention on the GPU
 * kernels) with T = q4_K and q6_K. NRUN random prompts of 8..24 tokens, logits at every position.
 * Printed per comparison: relative L2 error of the logits (median / max over positions) and top-1
 * agreement. Asserted, as tests/gpu/test_engine_gpu.c does (what a bug would break; on random
 * weights e4m3 rounding flips make the rest chaotic): every forward succeeds with finite logits;
 * gpu vs cpu8 and keep vs cpu median <= 0.1 (test_engine_gpu's tolerance); gpu vs cpu median
 * <= 0.2 (adds the re-quantization, docs/numerics.md section 6); the load report shows every
 * projection and kv_b re-quantized (8 a layer) and none left on the CPU backend, and with
 * keep, none re-quantized. Exits 77 without a GPU; fresh seed each run (TANDEM_TEST_SEED).
 * TANDEM_TEST_PLACEMENT=cpu runs the test itself without a GPU ("gpu" and "keep" on the CPU
 * backend: gpu vs cpu8 then shows the re-quantization alone, gpu and keep vs cpu are 0; the
 * tolerances are reported, not asserted).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "engine/model/model.h"
#include "engine/model/ops_cuda.h"
#include "engine/weights/weights.h"
#include "tests/check.h"
#include "tests/engine/ggml_emu.h"
#include "tests/engine/model_util.h"
#include "tests/gpu/tiny16.h"
#include "tests/gpu/gpu_test.h"

#define NRUN 16
#define PMAX 24

enum { B_CPU, B_GPU, B_CPU8, B_KEEP, NB };
static const char *bname[NB] = {"cpu", "gpu", "cpu8", "keep"};

struct run {
    int n;
    float *logits;
};

static const char *gpu_placement = "hybrid"; /* TANDEM_TEST_PLACEMENT=cpu: the test alone */

static struct ops *backend(int b, int type)
{
    char err[ERR_LEN];
    struct ops_params p = {.max_tokens = NRUN * PMAX, .gpu_keep_ggml = b == B_KEEP};
    struct ops *in = NULL;
    if (ops_params_parse(&p, b == B_GPU || b == B_KEEP ? gpu_placement : "cpu", NULL, err) ||
        ops_create(&p, &in, err)) {
        fprintf(stderr, "ops_create(%s): %s\n", bname[b], err);
        exit(1);
    }
    return emu_wrap(in, type, b == B_CPU8 ? 2 : 1);
}

/* forward every prompt (one sequence each) on backend b; returns failed checks */
static int forward(const struct wt_model *w, int b, int type, int32_t tok[NRUN][PMAX],
                   const int *len, struct run *r, int vocab)
{
    char err[ERR_LEN];
    struct ops *o = backend(b, type);
    struct model *m = NULL;
    if (model_create(w, o, NRUN * PMAX, &m, err)) {
        fprintf(stderr, "model_create(%s): %s\n", bname[b], err);
        ops_destroy(o);
        return 1;
    }
    int fails = 0, nl = model_n_layers(m);
    if ((b == B_GPU || b == B_KEEP) && ops_backend_of(emu_inner(o)) != OPS_BACKEND_CPU) {
        struct ops_cuda_load l;
        ops_cuda_load_stats(emu_inner(o), &l);
        printf("    %s load: %d re-quantized to FP8, %d to bf16, %d linears on the CPU backend, "
               "%.3f s\n",
               bname[b], l.fp8, l.bf16, l.cpu, l.seconds);
        if (b == B_GPU && (l.fp8 != 8 * nl || l.cpu != 0)) {
            printf("    FAIL: expected %d re-quantized weights and none on the CPU backend\n",
                   8 * nl);
            fails++;
        }
        if (b == B_KEEP && l.fp8 != 0) {
            printf("    FAIL: gpu.requant_ggml = off re-quantized %d weights\n", l.fp8);
            fails++;
        }
    }
    struct tkv kv;
    CHECK_EQ(tkv_init(&kv, nl, model_kv_dim(m), NRUN, PMAX, 16), 0);
    r->n = 0;
    for (int s = 0; s < NRUN && !fails; s++) {
        float *lg = r->logits + (size_t)r->n * vocab;
        int rc = run_seq(m, &kv, s, tok[s], len[s], 0, lg, err);
        if (!rc) rc = ops_error(emu_inner(o), err);
        if (rc) {
            printf("    FAIL: forward on %s: %s\n", bname[b], err);
            fails++;
            break;
        }
        for (size_t i = 0; i < (size_t)len[s] * vocab; i++)
            if (!isfinite(lg[i])) {
                printf("    FAIL: non-finite logit on %s\n", bname[b]);
                fails++;
                break;
            }
        r->n += len[s];
    }
    tkv_free(&kv);
    model_destroy(m);
    ops_destroy(o);
    return fails;
}

/* median and max relative L2 over positions, top-1 agreement; prints; fails above tol */
static int compare(const char *what, const struct run *a, const struct run *b, int vocab,
                   double tol)
{
    double *e = malloc((size_t)a->n * sizeof(double)), mx = 0;
    CHECK(e);
    int agree = 0;
    for (int p = 0; p < a->n; p++) {
        const float *x = a->logits + (size_t)p * vocab, *y = b->logits + (size_t)p * vocab;
        e[p] = rel_err_f(x, y, vocab);
        if (e[p] > mx) mx = e[p];
        agree += argmax_fl(x, vocab) == argmax_fl(y, vocab);
    }
    for (int i = 1; i < a->n; i++)
        for (int j = i; j > 0 && e[j] < e[j - 1]; j--) {
            double t = e[j];
            e[j] = e[j - 1];
            e[j - 1] = t;
        }
    double med = e[a->n / 2];
    free(e);
    int bad = !(med <= tol) && strcmp(gpu_placement, "cpu") != 0; /* cpu: report only */
    printf("    %-14s median %.2e  max %.2e  top-1 %5.1f%%  (median <= %g: %s)\n", what, med, mx,
           100.0 * agree / a->n, tol, bad ? "FAIL" : "ok");
    return bad;
}

static unsigned long long rng;

static int run_model(const char *name, const char *dir, int type)
{
    char err[ERR_LEN];
    struct wt_model *w = NULL;
    if (wt_open(dir, &w, err) || wt_validate(w, err)) {
        printf("%s: %s\n", name, err);
        return 1;
    }
    int vocab = wt_hparams(w)->vocab_size, fails = 0;
    int32_t tok[NRUN][PMAX];
    int len[NRUN];
    for (int s = 0; s < NRUN; s++) {
        len[s] = 8 + (int)(gt_u64() % (PMAX - 7));
        for (int i = 0; i < len[s]; i++) tok[s][i] = (int32_t)(gt_u64() % (unsigned)vocab);
    }
    printf("%s, projections and kv_b as %s:\n", name, qtype_name(type));
    struct run r[NB];
    for (int b = 0; b < NB; b++) {
        r[b].logits = malloc((size_t)NRUN * PMAX * vocab * sizeof(float));
        CHECK(r[b].logits);
        fails += forward(w, b, type, tok, len, &r[b], vocab);
    }
    if (!fails) {
        fails += compare("gpu vs cpu8", &r[B_GPU], &r[B_CPU8], vocab, 0.1);
        fails += compare("keep vs cpu", &r[B_KEEP], &r[B_CPU], vocab, 0.1);
        fails += compare("gpu vs cpu", &r[B_GPU], &r[B_CPU], vocab, 0.2);
        compare("cpu8 vs cpu", &r[B_CPU8], &r[B_CPU], vocab, 1.0); /* the requant, for reference */
    }
    for (int b = 0; b < NB; b++) free(r[b].logits);
    wt_close(w);
    return fails;
}

int main(void)
{
    if (getenv("TANDEM_TEST_PLACEMENT")) gpu_placement = getenv("TANDEM_TEST_PLACEMENT");
    else gt_require_gpu();
    rng = check_seed();
    gt_state = rng;
    int fails = 0;
    const char *src = getenv("TANDEM_SRC");
    char dir[600];
    snprintf(dir, sizeof dir, "%s/models/default", src ? src : ".");
    if (access(dir, R_OK) == 0) fails += run_model("models/default", dir, QTYPE_Q8_0);
    else printf("models/default: not found, skipped\n");
    if (!getenv("TANDEM_BIN")) {
        printf("TANDEM_BIN unset: tiny16 skipped\n");
    } else {
        char base[] = "/tmp/tandem-ggml-XXXXXX";
        CHECK(mkdtemp(base));
        char cfg[600];
        snprintf(cfg, sizeof cfg, "%s/tiny16.json", base);
        CHECK(tiny16_write_config(cfg) == 0); /* 16 heads, kv_lora 512 (GPU attention) */
        snprintf(dir, sizeof dir, "%s/tiny16", base);
        int rc = make_synth(cfg, rng % 1000000007ull, dir, "");
        if (rc) {
            printf("tiny16: synth failed (%d), see %s.log\n", rc, dir);
            fails++;
        } else {
            fails += run_model("tiny16", dir, QTYPE_Q4_K);
            fails += run_model("tiny16", dir, QTYPE_Q6_K);
        }
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
        if (system(cmd) != 0) printf("could not remove %s\n", base);
    }
    printf("%s (%d failed checks)\n", fails ? "FAIL" : "PASS", fails);
    return fails ? 1 : 0;
}
