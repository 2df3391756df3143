/* test_requant_e2e.c - the end-to-end accuracy cost of running a GGUF model's non-expert weights
 * as FP8 (gpu.requant_ggml), measured on the CPU backend.
 *
 * A GGUF user's CPU run computes the attention / dense / shared-expert projections and kv_b from
 * their GGML blocks; the GPU backend computes them from those blocks re-quantized to FP8 e4m3
 * with 128x128 block scales. This test emulates both on the CPU, so the difference is the
 * re-quantization alone (not the GPU's summation orders): a test-only backend ("emu") wraps the
 * CPU backend and, at load, turns each FP8 projection and kv_b of the model into a GGML type T
 * (dequantize, quantize with ggml's reference quantizer: the "GGUF"; a weight whose columns are
 * not whole T blocks takes q8_0, as llama.cpp falls back), then either
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
#include "tests/engine/model_util.h"

#define NRUN 12
#define PMAX 24

/* ---------------------------------------------------------------- the emulating backend */

struct emu {
    struct ops base;
    struct ops *in; /* the CPU backend every op goes to */
    int type, mode; /* mode 0: weights as they are; 1: A (GGML); 2: B (GGML -> FP8); 3: B with
                     * unquantized activations (fp8_w8a16) */
    const struct cpuq_ops *q;
    void **own; /* buffers the weight views point at, freed with the backend */
    int n_own, cap;
};

static struct emu *E(struct ops *o) { return (struct emu *)o; }
static const struct emu *Ec(const struct ops *o) { return (const struct emu *)o; }

static void *keep(struct emu *e, void *p)
{
    CHECK(p);
    if (e->n_own == e->cap) {
        e->cap = e->cap ? 2 * e->cap : 64;
        e->own = realloc(e->own, (size_t)e->cap * sizeof *e->own);
        CHECK(e->own);
    }
    e->own[e->n_own++] = p;
    return p;
}

/* the "GGUF" form of an FP8 view's fp32 values f: type T (q8_0 when the columns do not fit) */
static struct wt_view to_ggml(struct emu *e, const float *f, int64_t rows, int64_t cols)
{
    int t = cpuq_row_size(e->type, cols) ? e->type : QTYPE_Q8_0;
    CHECK(cpuq_row_size(t, cols) > 0);
    size_t rb = cpuq_row_size(t, cols);
    void *d = keep(e, malloc(rb * (size_t)rows));
    cpuq_quantize_rows(e->q, t, f, d, rows, cols);
    return (struct wt_view){.type = t, .rows = rows, .cols = cols, .data = d, .row_bytes = rb};
}

static struct wt_view to_fp8(struct emu *e, const struct wt_view *g)
{
    char err[ERR_LEN];
    uint8_t *qb = keep(e, malloc((size_t)(g->rows * g->cols)));
    float *sc =
        keep(e, malloc((size_t)(cpuq_fp8_nblk(g->rows) * cpuq_fp8_nblk(g->cols)) * sizeof(float)));
    struct cpuq_requant_src s = {.type = g->type,
                                 .data = g->data,
                                 .row_bytes = g->row_bytes,
                                 .rows = g->rows,
                                 .cols = g->cols};
    CHECK_EQ(cpuq_requant_fp8(e->q, NULL, &s, qb, sc, err), 0);
    return (struct wt_view){.type = QTYPE_F8_E4M3,
                            .rows = g->rows,
                            .cols = g->cols,
                            .data = qb,
                            .row_bytes = (size_t)g->cols,
                            .scale = sc};
}

static float *dequant(const struct emu *e, const struct wt_view *v)
{
    float *f = malloc((size_t)(v->rows * v->cols) * sizeof(float));
    CHECK(f);
    if (v->type == QTYPE_F8_E4M3)
        cpuq_fp8_dequant(v->data, v->scale, v->rows, v->cols, 0, v->rows, f);
    else
        for (int64_t r = 0; r < v->rows; r++)
            e->q->type[v->type].to_float((const char *)v->data + r * v->row_bytes, f + r * v->cols,
                                         v->cols);
    return f;
}

static int emu_lin_create(struct ops *o, const struct wt_view *w, struct ops_lin **out, char *err)
{
    struct emu *e = E(o);
    if (!e->mode || w->type != QTYPE_F8_E4M3) return ops_lin_create(e->in, w, out, err);
    float *f = dequant(e, w);
    struct wt_view g = to_ggml(e, f, w->rows, w->cols);
    free(f);
    if (e->mode == 1) return ops_lin_create(e->in, &g, out, err);
    /* modes 2 and 3 */
    struct wt_view fv = to_fp8(e, &g);
    return ops_lin_create(e->in, &fv, out, err);
}

static int emu_heads_create(struct ops *o, const struct wt_view *v, const float *f32,
                            struct ops_heads **out, char *err)
{
    struct emu *e = E(o);
    if (!e->mode) return ops_heads_create(e->in, v, f32, out, err);
    struct wt_view g = to_ggml(e, f32, v->rows, v->cols);
    struct wt_view w = e->mode == 1 ? g : to_fp8(e, &g);
    float *f = dequant(e, &w);
    int rc = ops_heads_create(e->in, &w, f, out, err);
    free(f);
    return rc;
}

/* everything else: the CPU backend */
static const char *emu_name(const struct ops *o) { return ops_name(Ec(o)->in); }
static int emu_n_threads(const struct ops *o) { return ops_n_threads(Ec(o)->in); }
static void emu_destroy(struct ops *o)
{
    struct emu *e = E(o);
    ops_destroy(e->in);
    for (int i = 0; i < e->n_own; i++) free(e->own[i]);
    free(e->own);
    free(e);
}
static void *emu_alloc(struct ops *o, size_t b) { return ops_alloc(E(o)->in, b); }
static void emu_free(struct ops *o, void *p) { ops_free(E(o)->in, p); }
static void emu_upload(struct ops *o, void *d, const void *s, size_t b)
{
    ops_upload(E(o)->in, d, s, b);
}
static void emu_download(struct ops *o, void *d, const void *s, size_t b)
{
    ops_download(E(o)->in, d, s, b);
}
static int emu_table_create(struct ops *o, const struct wt_view *w, struct ops_lin **out, char *err)
{
    return ops_table_create(E(o)->in, w, out, err);
}
static int emu_lin_w16(struct ops *o, const struct wt_view *w, struct ops_lin **out, char *err)
{
    return ops_lin_create_w16(E(o)->in, w, out, err);
}
static void emu_lin_destroy(struct ops *o, struct ops_lin *l) { ops_lin_destroy(E(o)->in, l); }
static int emu_moe_create(struct ops *o, int n, const struct wt_view *g, const struct wt_view *u,
                          const struct wt_view *d, struct ops_moe **out, char *err)
{
    return ops_moe_create(E(o)->in, n, g, u, d, out, err);
}
static void emu_moe_destroy(struct ops *o, struct ops_moe *m) { ops_moe_destroy(E(o)->in, m); }
static void emu_embed(struct ops *o, const struct ops_lin *t, const int32_t *tok, int n, float *y)
{
    ops_embed(E(o)->in, t, tok, n, y);
}
static void emu_linear(struct ops *o, const struct ops_lin *w, const float *x, int n, float *y)
{
    ops_linear(E(o)->in, w, x, n, y);
}
static void emu_rmsnorm(struct ops *o, const float *x, int ldx, const float *g, int n, int dim,
                        float eps, float *y, int ldy)
{
    ops_rmsnorm(E(o)->in, x, ldx, g, n, dim, eps, y, ldy);
}
static void emu_rope(struct ops *o, const struct ops_rope *r, const int32_t *pos, int n, int nh,
                     const float *x, int lxt, int lxh, float *y, int lyt, int lyh)
{
    ops_rope(E(o)->in, r, pos, n, nh, x, lxt, lxh, y, lyt, lyh);
}
static void emu_heads_destroy(struct ops *o, struct ops_heads *h)
{
    ops_heads_destroy(E(o)->in, h);
}
static void emu_head_matmul(struct ops *o, const struct ops_heads *w, int64_t off, int64_t wh,
                            int rows, int cols, int trans, int n, int nh, const float *x, int lxt,
                            int lxh, float *y, int lyt, int lyh)
{
    ops_head_matmul(E(o)->in, w, off, wh, rows, cols, trans, n, nh, x, lxt, lxh, y, lyt, lyh);
}
static void emu_kv_store(struct ops *o, const struct model_kv *kv, int layer,
                         const struct model_batch *b, const float *x)
{
    ops_kv_store(E(o)->in, kv, layer, b, x);
}
static void emu_mla_attn(struct ops *o, const struct model_kv *kv, int layer,
                         const struct model_batch *b, int nh, int kvl, float scale, const float *q,
                         float *out)
{
    ops_mla_attn(E(o)->in, kv, layer, b, nh, kvl, scale, q, out);
}
static void emu_router(struct ops *o, const struct ops_router *r, const float *lg,
                       const float *bias, int n, int32_t *ids, float *w)
{
    ops_router(E(o)->in, r, lg, bias, n, ids, w);
}
static void emu_moe(struct ops *o, const struct ops_moe *m, const float *x, int n,
                    const int32_t *ids, const float *w, int k, float *y)
{
    ops_moe(E(o)->in, m, x, n, ids, w, k, y);
}
static void emu_swiglu(struct ops *o, const float *g, const float *u, int64_t n, float *y)
{
    ops_swiglu(E(o)->in, g, u, n, y);
}
static void emu_add(struct ops *o, float *y, const float *x, int64_t n)
{
    ops_add(E(o)->in, y, x, n);
}
static void emu_gather(struct ops *o, const float *x, int dim, const int32_t *idx, int n, float *y)
{
    ops_gather(E(o)->in, x, dim, idx, n, y);
}

static const struct ops_vt emu_vt = {
    .name = emu_name,
    .n_threads = emu_n_threads,
    .destroy = emu_destroy,
    .alloc = emu_alloc,
    .free = emu_free,
    .upload = emu_upload,
    .download = emu_download,
    .lin_create = emu_lin_create,
    .lin_create_w16 = emu_lin_w16,
    .table_create = emu_table_create,
    .lin_destroy = emu_lin_destroy,
    .moe_create = emu_moe_create,
    .moe_destroy = emu_moe_destroy,
    .embed = emu_embed,
    .linear = emu_linear,
    .rmsnorm = emu_rmsnorm,
    .rope = emu_rope,
    .heads_create = emu_heads_create,
    .heads_destroy = emu_heads_destroy,
    .head_matmul = emu_head_matmul,
    .kv_store = emu_kv_store,
    .mla_attn = emu_mla_attn,
    .router = emu_router,
    .moe = emu_moe,
    .swiglu = emu_swiglu,
    .add = emu_add,
    .gather = emu_gather,
};

static struct ops *emu_create(int type, int mode)
{
    char err[ERR_LEN];
    struct emu *e = calloc(1, sizeof *e);
    CHECK(e);
    e->base.vt = &emu_vt;
    e->base.backend = OPS_BACKEND_CPU;
    e->type = type;
    e->mode = mode;
    struct ops_params p = {
        .backend = OPS_BACKEND_CPU, .max_tokens = NRUN * PMAX, .fp8_w8a16 = mode == 3};
    CHECK_EQ(ops_create(&p, &e->in, err), 0);
    CHECK_EQ(cpuq_ops_get(CPUQ_ISA_SCALAR, &e->q, err), 0);
    return &e->base;
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
        CHECK_EQ(ops_error(E(o)->in, err), 0);
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
