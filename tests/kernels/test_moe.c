/* test_moe.c - the MoE expert op (kernels/cpu/moe.h): against a single-threaded float64 reference
 * on dequantized weights and unquantized activations (within quantization tolerance), and bitwise
 * identical across thread counts 1, 2, 3 and 5, for every weight type whose kernels exist, every
 * ISA this CPU runs, FP8 with block scales (also with ue8m0 activation scales: within the same
 * tolerance, and not the exact-scale result), skipped (-1) routes and repeated experts. Random
 * inputs, fresh seed each run. */
#include "../check.h"
#include "common/err.h"
#include "kernels/cpu/cpuq.h"
#include "kernels/cpu/fp8.h"
#include "kernels/cpu/fpconv.h"
#include "kernels/cpu/moe.h"

#include <stdint.h>

static uint64_t rng_state;
static uint32_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}
static float frand(void) { return (float)rnd() / 2147483648.0f - 1.0f; }

struct expert_set {
    struct cpuq_mat *gate, *up, *down;
    float **fg, **fu, **fd; /* dequantized weights */
};

/* a random matrix of `type`, and its dequantized floats */
static void make_mat(const struct cpuq_ops *o, int type, int64_t rows, int64_t cols,
                     struct cpuq_mat *m, float **deq)
{
    float *f = malloc(sizeof(float) * (size_t)(rows * cols));
    CHECK(f);
    for (int64_t i = 0; i < rows * cols; i++) f[i] = frand() * 0.1f;
    m->type = type;
    m->rows = rows;
    m->cols = cols;
    m->scale = NULL;
    if (type == QTYPE_F8_E4M3) {
        int64_t nbr = cpuq_fp8_nblk(rows), nbc = cpuq_fp8_nblk(cols);
        uint8_t *q = malloc((size_t)(rows * cols));
        float *sc = malloc(sizeof(float) * (size_t)(nbr * nbc));
        CHECK(q && sc);
        for (int64_t i = 0; i < nbr * nbc; i++) sc[i] = (1.0f + frand() * 0.5f) * (0.1f / 448.0f);
        for (int64_t i = 0; i < rows * cols; i++)
            q[i] = fp_f32_to_e4m3(f[i] / sc[(i / cols / 128) * nbc + (i % cols) / 128]);
        cpuq_fp8_dequant(q, sc, rows, cols, 0, rows, f);
        m->data = q;
        m->row_bytes = (size_t)cols;
        m->scale = sc;
    } else {
        size_t rb = cpuq_row_size(type, cols);
        void *q = malloc(rb * (size_t)rows);
        CHECK(q);
        cpuq_quantize_rows(o, type, f, q, rows, cols);
        for (int64_t r = 0; r < rows; r++)
            o->type[type].to_float((char *)q + r * rb, f + r * cols, cols);
        m->data = q;
        m->row_bytes = rb;
    }
    *deq = f;
}

static void free_mat(struct cpuq_mat *m, float *deq)
{
    free((void *)m->data);
    free((void *)m->scale);
    free(deq);
}

static void reference(const struct expert_set *es, int n_tok, int hidden, int inter, const float *x,
                      int top_k, const int32_t *ids, const float *w, double *ref)
{
    double *h = malloc(sizeof(double) * (size_t)inter);
    for (int t = 0; t < n_tok; t++) {
        const float *xt = x + (size_t)t * hidden;
        for (int i = 0; i < hidden; i++) ref[(size_t)t * hidden + i] = 0;
        for (int k = 0; k < top_k; k++) {
            int e = ids[t * top_k + k];
            if (e < 0) continue;
            for (int r = 0; r < inter; r++) {
                double g = 0, u = 0;
                for (int c = 0; c < hidden; c++) {
                    g += (double)es->fg[e][(size_t)r * hidden + c] * xt[c];
                    u += (double)es->fu[e][(size_t)r * hidden + c] * xt[c];
                }
                h[r] = g / (1 + exp(-g)) * u;
            }
            for (int r = 0; r < hidden; r++) {
                double d = 0;
                for (int c = 0; c < inter; c++)
                    d += (double)es->fd[e][(size_t)r * inter + c] * h[c];
                ref[(size_t)t * hidden + r] += w[t * top_k + k] * d;
            }
        }
    }
    free(h);
}

static int type_ok(const struct cpuq_ops *o, int type)
{
    if (type == QTYPE_F8_E4M3) return 1;
    const struct cpuq_type_ops *t = &o->type[type];
    if (!t->vec_dot || !t->from_float || !t->to_float || t->vec_dot_type < 0) return 0;
    return o->type[t->vec_dot_type].from_float != NULL;
}

static void run_case(int isa, int type, int hidden, int inter, int n_experts, int n_tok, int top_k)
{
    char err[ERR_LEN];
    const struct cpuq_ops *o;
    if (cpuq_ops_get(isa, &o, err) != 0) return;
    if (!type_ok(o, type)) {
        fprintf(stderr, "  (%s: no kernels for %s yet, skipped)\n", cpuq_isa_name(isa),
                qtype_name(type));
        return;
    }
    struct expert_set es;
    es.gate = calloc((size_t)n_experts, sizeof *es.gate);
    es.up = calloc((size_t)n_experts, sizeof *es.up);
    es.down = calloc((size_t)n_experts, sizeof *es.down);
    es.fg = calloc((size_t)n_experts, sizeof *es.fg);
    es.fu = calloc((size_t)n_experts, sizeof *es.fu);
    es.fd = calloc((size_t)n_experts, sizeof *es.fd);
    for (int e = 0; e < n_experts; e++) {
        make_mat(o, type, inter, hidden, &es.gate[e], &es.fg[e]);
        make_mat(o, type, inter, hidden, &es.up[e], &es.fu[e]);
        make_mat(o, type, hidden, inter, &es.down[e], &es.fd[e]);
    }
    float *x = malloc(sizeof(float) * (size_t)n_tok * hidden);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n_tok * top_k);
    float *w = malloc(sizeof(float) * (size_t)n_tok * top_k);
    for (int i = 0; i < n_tok * hidden; i++) x[i] = frand() * 2.0f;
    for (int i = 0; i < n_tok * top_k; i++) {
        ids[i] = (int32_t)(rnd() % (unsigned)n_experts);
        if (rnd() % 13 == 0) ids[i] = -1;
        w[i] = 0.2f + frand() * 0.1f;
    }
    double *ref = malloc(sizeof(double) * (size_t)n_tok * hidden);
    reference(&es, n_tok, hidden, inter, x, top_k, ids, w, ref);

    float *out1 = malloc(sizeof(float) * (size_t)n_tok * hidden);
    float *out = malloc(sizeof(float) * (size_t)n_tok * hidden);
    struct cpuq_moe_scratch *s;
    CHECK_EQ(cpuq_moe_scratch_create(&s, err), 0);
    CHECK_EQ(cpuq_moe_forward(NULL, o, es.gate, es.up, es.down, n_experts, n_tok, hidden, x, top_k,
                              ids, w, out1, 0, s, err),
             0);
    double en = 0, rn = 0;
    for (int i = 0; i < n_tok * hidden; i++) {
        en += (out1[i] - ref[i]) * (out1[i] - ref[i]);
        rn += ref[i] * ref[i];
    }
    double rel = sqrt(en / (rn + 1e-30));
    double tol = type == QTYPE_F8_E4M3 ? 0.03 : 0.01;
    fprintf(stderr, "  %s %s hidden %d inter %d tok %d: rel err %.2e\n", cpuq_isa_name(isa),
            qtype_name(type), hidden, inter, n_tok, rel);
    CHECK(rel < tol);
    if (type == QTYPE_F8_E4M3) { /* ue8m0 activation scales: as close, not the same numbers */
        CHECK_EQ(cpuq_moe_forward(NULL, o, es.gate, es.up, es.down, n_experts, n_tok, hidden, x,
                                  top_k, ids, w, out, 1, s, err),
                 0);
        double eu = 0;
        for (int i = 0; i < n_tok * hidden; i++) eu += (out[i] - ref[i]) * (out[i] - ref[i]);
        fprintf(stderr, "  %s %s ue8m0 activation scales: rel err %.2e\n", cpuq_isa_name(isa),
                qtype_name(type), sqrt(eu / (rn + 1e-30)));
        CHECK(sqrt(eu / (rn + 1e-30)) < tol);
        CHECK(memcmp(out, out1, sizeof(float) * (size_t)n_tok * hidden) != 0);
    }
    int threads[] = {1, 2, 3, 5};
    for (int i = 0; i < 4; i++) {
        struct wpool *p;
        CHECK_EQ(wpool_create(threads[i], 0, 20, &p, err), 0);
        for (int rep = 0; rep < 2; rep++) {
            memset(out, 0xff, sizeof(float) * (size_t)n_tok * hidden);
            CHECK_EQ(cpuq_moe_forward(p, o, es.gate, es.up, es.down, n_experts, n_tok, hidden, x,
                                      top_k, ids, w, out, 0, s, err),
                     0);
            CHECK(memcmp(out, out1, sizeof(float) * (size_t)n_tok * hidden) == 0);
        }
        wpool_destroy(p);
    }
    /* experts that no token routes to may be zeroed structs (expert 0 among them): the result
     * is the same as with every expert given */
    {
        int32_t *ids2 = malloc(sizeof(int32_t) * (size_t)n_tok * top_k);
        struct cpuq_mat *g2 = calloc((size_t)n_experts, sizeof *g2);
        struct cpuq_mat *u2 = calloc((size_t)n_experts, sizeof *u2);
        struct cpuq_mat *d2 = calloc((size_t)n_experts, sizeof *d2);
        float *out2 = malloc(sizeof(float) * (size_t)n_tok * hidden);
        CHECK(ids2 && g2 && u2 && d2 && out2);
        for (int i = 0; i < n_tok * top_k; i++) {
            ids2[i] = ids[i] == 0 ? 1 : ids[i];
            if (ids2[i] >= 0) {
                g2[ids2[i]] = es.gate[ids2[i]];
                u2[ids2[i]] = es.up[ids2[i]];
                d2[ids2[i]] = es.down[ids2[i]];
            }
        }
        CHECK_EQ(cpuq_moe_forward(NULL, o, es.gate, es.up, es.down, n_experts, n_tok, hidden, x,
                                  top_k, ids2, w, out, 0, s, err),
                 0);
        CHECK_EQ(cpuq_moe_forward(NULL, o, g2, u2, d2, n_experts, n_tok, hidden, x, top_k, ids2, w,
                                  out2, 0, s, err),
                 0);
        CHECK(memcmp(out, out2, sizeof(float) * (size_t)n_tok * hidden) == 0);
        free(ids2);
        free(g2);
        free(u2);
        free(d2);
        free(out2);
    }
    /* a bad route is an error, not a crash */
    int32_t saved = ids[0];
    ids[0] = n_experts;
    CHECK_EQ(cpuq_moe_forward(NULL, o, es.gate, es.up, es.down, n_experts, n_tok, hidden, x, top_k,
                              ids, w, out, 0, s, err),
             ERR_INVAL);
    ids[0] = saved;
    cpuq_moe_scratch_destroy(s);
    for (int e = 0; e < n_experts; e++) {
        free_mat(&es.gate[e], es.fg[e]);
        free_mat(&es.up[e], es.fu[e]);
        free_mat(&es.down[e], es.fd[e]);
    }
    free(es.gate);
    free(es.up);
    free(es.down);
    free(es.fg);
    free(es.fu);
    free(es.fd);
    free(x);
    free(ids);
    free(w);
    free(ref);
    free(out1);
    free(out);
}

int main(void)
{
    rng_state = check_seed();
    int types[] = {QTYPE_Q4_K, QTYPE_Q6_K, QTYPE_Q8_0, QTYPE_Q5_K, QTYPE_IQ4_XS,
                   QTYPE_Q4_0, QTYPE_BF16, QTYPE_F16,  QTYPE_F32,  QTYPE_F8_E4M3};
    for (int isa = 0; isa < CPUQ_ISA_COUNT; isa++)
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            run_case(isa, types[i], 512, 256, 6, 9 + (int)(rnd() % 8), 4);
    run_case(CPUQ_ISA_SCALAR, QTYPE_F8_E4M3, 300, 200, 5, 7, 3); /* partial FP8 blocks */
    run_case(cpuq_isa_detect(), QTYPE_F8_E4M3, 300, 200, 5, 7, 3);
    return 0;
}
