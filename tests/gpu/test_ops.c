/* test_ops.c - RMSNorm(+FP8 quant, exact and ue8m0 scales; the plain quantization bit for bit
 * against the CPU's cpuq_fp8_act_quant), the CPU-order RMSNorm, FP8 per-head weights (expansion and
 * the decode matmul), RoPE/YaRN (and its fused forms: out of place, two jobs a launch; the norm
 * with fused quantization: bit for bit the separate kernels), router, SwiGLU(+quant), add,
 * embedding on the GPU vs naive CPU references (float64 unless the op's result depends on fp32
 * rounding, as the router's selection does, or is specified bit for bit against a CPU kernel),
 * fresh random inputs, outputs poisoned before each call. */
#include "tests/gpu/gpu_test.h"

#include "kernels/cuda/elementwise.h"
#include "kernels/cpu/f32.h"
#include "kernels/cpu/fp8.h"
#include "kernels/cuda/gemv_bf16.h"
#include "kernels/cuda/head_matmul.h"
#include "kernels/cuda/norm.h"
#include "kernels/cuda/rope.h"
#include "kernels/cuda/router.h"

/* q/scales vs reference values v: the scale must match max(amax,1e-4)/448 to 1e-5 (ue8m0: be a
 * power of two in [that, twice that), to 1e-5), and each code must decode to within one e4m3 step
 * of v (|v|/8 relative, s*2^-9 in the subnormal range). */
static void check_quant(const char *what, int m, int d, const double *v, const uint8_t *q,
                        const float *qs, int qs_ld, int ue8m0)
{
    struct gt_err es = {0, 0, 0, ue8m0 ? "ue8m0 scales" : "scales"}, eq = {0, 0, 0, what};
    for (int t = 0; t < m; t++)
        for (int b = 0; b < d / 128; b++) {
            double amax = 0.0;
            for (int i = 0; i < 128; i++) amax = fmax(amax, fabs(v[(size_t)t * d + b * 128 + i]));
            double sref = fmax(amax, 1e-4) / 448.0, s = qs[(size_t)b * qs_ld + t];
            if (ue8m0) { /* a wrong scale is reported against 2^ceil(log2 sref) */
                int ex;
                double r = s / sref, want = ldexp(1.0, (int)ceil(log2(sref)));
                int ok = frexp(s, &ex) == 0.5 && r >= 1.0 - 1e-5 && r < 2.0 + 2e-5;
                gt_check(&es, s, ok ? s : want, 1e-6 * want, t * 1000 + b);
            } else {
                gt_check(&es, s, sref, 1e-5 * sref, t * 1000 + b);
            }
            for (int i = 0; i < 128; i++) {
                size_t j = (size_t)t * d + b * 128 + i;
                double deq = fp_e4m3_to_f32(q[j]) * s;
                gt_check(&eq, deq, v[j], fabs(v[j]) / 8.0 + s * 0x1.0p-9, (long)j);
            }
        }
    gt_report(&es);
    gt_report(&eq);
}

static void test_rmsnorm(int m, int d, int type, int with_w, int ue8m0)
{
    float *hx = malloc((size_t)m * d * 4), *hw = malloc((size_t)d * 4);
    double *v = malloc((size_t)m * d * sizeof(double));
    CHECK(hx && hw && v);
    for (size_t i = 0; i < (size_t)m * d; i++)
        hx[i] = (float)(gt_normal() * (1 + 3 * gt_uniform()));
    if (!with_w) /* every third block's max is 448 * 2^k: its scale is a power of two already */
        for (int t = 0; t < m; t++)
            for (int b = 0; b < d / 128; b += 3) {
                float p = ldexpf(448.0f, gt_int(-8, 2)), *xb = hx + (size_t)t * d + b * 128;
                for (int i = 0; i < 128; i++) xb[i] = fminf(fmaxf(xb[i], -p), p);
                xb[gt_int(0, 127)] = gt_uniform() < 0.5 ? p : -p;
            }
    for (int i = 0; i < d; i++) hw[i] = (float)(0.5 + gt_uniform());
    float eps = 1e-6f;
    for (int t = 0; t < m; t++) {
        double ss = 0.0;
        for (int i = 0; i < d; i++) ss += (double)hx[t * d + i] * hx[t * d + i];
        double inv = with_w ? 1.0 / sqrt(ss / d + eps) : 1.0;
        for (int i = 0; i < d; i++)
            v[(size_t)t * d + i] = with_w ? hx[t * d + i] * inv * hw[i] : hx[t * d + i];
    }
    size_t es = type == CUK_BF16 ? 2 : 4;
    float *x = gt_up(hx, (size_t)m * d * 4), *w = gt_up(hw, (size_t)d * 4);
    void *y = gt_dev((size_t)m * d * es);
    uint8_t *q = gt_dev((size_t)m * d);
    int qs_ld = m + 3;
    float *qs = gt_dev((size_t)(d / 128) * qs_ld * 4);
    struct cuk_rmsnorm_quant_args a = {.m = m,
                                       .d = d,
                                       .x = x,
                                       .x_ld = d,
                                       .w = with_w ? w : NULL,
                                       .eps = eps,
                                       .y = y,
                                       .y_type = type,
                                       .y_ld = d,
                                       .q = q,
                                       .q_ld = d,
                                       .q_scale = qs,
                                       .q_scale_ld = qs_ld,
                                       .ue8m0 = ue8m0};
    CHECK_EQ(cuk_rmsnorm_quant(&a, 0), 0);
    void *hy = malloc((size_t)m * d * es);
    uint8_t *hq = malloc((size_t)m * d);
    float *hqs = malloc((size_t)(d / 128) * qs_ld * 4);
    CHECK(hy && hq && hqs);
    gt_down(hy, y, (size_t)m * d * es);
    gt_down(hq, q, (size_t)m * d);
    gt_down(hqs, qs, (size_t)(d / 128) * qs_ld * 4);
    char what[80];
    snprintf(what, sizeof what, "rmsnorm%s m=%d d=%d %s%s", with_w ? "" : "(none)", m, d,
             type == CUK_BF16 ? "bf16" : "f32", ue8m0 ? " ue8m0" : "");
    struct gt_err e = {0, 0, 0, what};
    for (size_t i = 0; i < (size_t)m * d; i++) {
        double got = type == CUK_BF16 ? fp_bf16_to_f32(((uint16_t *)hy)[i]) : ((float *)hy)[i];
        double tol = type == CUK_BF16 ? gt_bf16_tol(v[i]) : fabs(v[i]) * 1e-6 + 1e-30;
        gt_check(&e, got, v[i], tol, (long)i);
    }
    gt_report(&e);
    snprintf(what, sizeof what, "  quant of rmsnorm%s m=%d d=%d%s", with_w ? "" : "(none)", m, d,
             ue8m0 ? " ue8m0" : "");
    check_quant(what, m, d, v, hq, hqs, qs_ld, ue8m0);
    if (!with_w) { /* plain act_quant: bit-exact against the CPU's (kernels/cpu/fp8.h) */
        float *qa = malloc((size_t)d * 4), *sc = malloc((size_t)(d / 128) * 4);
        CHECK(qa && sc);
        for (int t = 0; t < m; t++) {
            cpuq_fp8_act_quant(d, hx + (size_t)t * d, qa, sc, ue8m0);
            for (int b = 0; b < d / 128; b++) {
                CHECK(memcmp(&hqs[b * qs_ld + t], &sc[b], 4) == 0);
                for (int i = 0; i < 128; i++)
                    CHECK_EQ(hq[t * d + b * 128 + i], fp_f32_to_e4m3(qa[b * 128 + i]));
            }
        }
        free(qa);
        free(sc);
        fprintf(stderr, "  act_quant%s bit-exact vs the CPU's cpuq_fp8_act_quant\n",
                ue8m0 ? " ue8m0" : "");
    }
    free(hx);
    free(hw);
    free(v);
    free(hy);
    free(hq);
    free(hqs);
    cudaFree(x);
    cudaFree(w);
    cudaFree(y);
    cudaFree(q);
    cudaFree(qs);
}

static void test_rope(void)
{
    /* YaRN inverse frequencies of DeepSeek-V3 (its reference code, double precision) */
    static const double spec[32] = {
        1.000000e+00, 7.498942e-01, 5.623413e-01, 4.216965e-01, 3.162278e-01, 2.371374e-01,
        1.778279e-01, 1.333521e-01, 1.000000e-01, 7.498942e-02, 5.623413e-02, 3.900693e-02,
        2.687936e-02, 1.837815e-02, 1.244796e-02, 8.334509e-03, 5.500000e-03, 3.561997e-03,
        2.249365e-03, 1.370514e-03, 7.905694e-04, 4.149904e-04, 1.778279e-04, 3.333804e-05,
        2.500000e-05, 1.874736e-05, 1.405853e-05, 1.054241e-05, 7.905694e-06, 5.928434e-06,
        4.445699e-06, 3.333804e-06};
    float fr[32];
    CHECK_EQ(cuk_rope_freqs(64, 10000.0, 40.0, 4096, 32.0, 1.0, fr), 0);
    struct gt_err ef = {0, 0, 0, "rope yarn freqs vs reference table"};
    for (int i = 0; i < 32; i++) gt_check(&ef, fr[i], spec[i], 2e-6 * spec[i], i);
    gt_report(&ef);

    int m = gt_int(1, 12), H = 128, ld = H * 192;
    float *hx = malloc((size_t)m * ld * 4), *hy = malloc((size_t)m * ld * 4);
    int32_t *hp = malloc((size_t)m * 4);
    CHECK(hx && hy && hp);
    for (size_t i = 0; i < (size_t)m * ld; i++) hx[i] = (float)gt_normal();
    for (int t = 0; t < m; t++) hp[t] = t == 0 ? 0 : gt_int(1, 163839);
    float *x = gt_up(hx, (size_t)m * ld * 4), *f = gt_up(fr, sizeof fr);
    int32_t *p = gt_up(hp, (size_t)m * 4);
    struct cuk_rope_args a = {.m = m,
                              .n_heads = H,
                              .rot_dim = 64,
                              .x = x,
                              .x_ld = ld,
                              .head_stride = 192,
                              .rot_off = 128,
                              .pos = p,
                              .freqs = f};
    CHECK_EQ(cuk_rope(&a, 0), 0);
    gt_down(hy, x, (size_t)m * ld * 4);
    struct gt_err e = {0, 0, 0, "rope q_pe (128 heads, interleaved)"};
    for (int t = 0; t < m; t++)
        for (int h = 0; h < H; h++)
            for (int j = 0; j < 192; j++) {
                size_t o = (size_t)t * ld + h * 192 + j;
                if (j < 128) { /* nope part untouched */
                    CHECK(hy[o] == hx[o]);
                    continue;
                }
                int i = (j - 128) / 2;
                double ang = (double)((float)hp[t] * fr[i]);
                double y0 = hx[o - (j & 1)], y1 = hx[o - (j & 1) + 1];
                double ref =
                    (j & 1) ? y0 * sin(ang) + y1 * cos(ang) : y0 * cos(ang) - y1 * sin(ang);
                gt_check(&e, hy[o], ref, 2e-6 * (fabs(y0) + fabs(y1)) + 1e-30, (long)o);
            }
    gt_report(&e);
    /* with a caller's (cos, sin) table: bit-identical to the same arithmetic in C (fp32, each
     * product and sum rounded, no FMA), which is what the CPU backend computes */
    float *hcs = malloc((size_t)m * 32 * 2 * 4);
    CHECK(hcs != NULL);
    for (int t = 0; t < m; t++)
        for (int i = 0; i < 32; i++) {
            float ang = (float)hp[t] * fr[i];
            hcs[(t * 32 + i) * 2] = cosf(ang);
            hcs[(t * 32 + i) * 2 + 1] = sinf(ang);
        }
    float *cs = gt_up(hcs, (size_t)m * 32 * 2 * 4);
    CUDA_CHECK(cudaMemcpy(x, hx, (size_t)m * ld * 4, cudaMemcpyHostToDevice));
    a.cs = cs;
    CHECK_EQ(cuk_rope(&a, 0), 0);
    gt_down(hy, x, (size_t)m * ld * 4);
    long bad = 0;
    for (int t = 0; t < m; t++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < 32; i++) {
                size_t o = (size_t)t * ld + h * 192 + 128 + 2 * i;
                volatile float c0 = hcs[(t * 32 + i) * 2], s0 = hcs[(t * 32 + i) * 2 + 1];
                volatile float p0 = hx[o] * c0, p1 = hx[o + 1] * s0, p2 = hx[o] * s0,
                               p3 = hx[o + 1] * c0;
                float r0 = p0 - p1, r1 = p2 + p3;
                bad += memcmp(&hy[o], &r0, 4) != 0 || memcmp(&hy[o + 1], &r1, 4) != 0;
            }
    fprintf(stderr, "rope with a (cos, sin) table: %ld of %d pairs differ from the C arithmetic\n",
            bad, m * H * 32);
    CHECK_EQ(bad, 0);
    free(hcs);
    cudaFree(cs);
    free(hx);
    free(hy);
    free(hp);
    cudaFree(x);
    cudaFree(f);
    cudaFree(p);
}

/* CPU reference of the router in fp32, written out step by step (kernels/cuda/router.h) */
static void router_ref(const struct cuk_router_args *a, const float *lg, const float *bias,
                       int32_t *ids, float *wts)
{
    int E = a->n_experts;
    float s[1024], b[1024];
    for (int t = 0; t < a->m; t++) {
        const float *l = lg + (size_t)t * E;
        if (a->scoring == CUK_ROUTER_SOFTMAX) {
            float mx = -INFINITY, sum = 0.0f;
            for (int e = 0; e < E; e++) mx = fmaxf(mx, l[e]);
            for (int e = 0; e < E; e++) sum += expf(l[e] - mx);
            for (int e = 0; e < E; e++) s[e] = expf(l[e] - mx) / sum;
        } else {
            for (int e = 0; e < E; e++) s[e] = 1.0f / (1.0f + expf(-l[e]));
        }
        for (int e = 0; e < E; e++) b[e] = bias ? s[e] + bias[e] : s[e];
        if (a->n_group > 1) {
            int gs = E / a->n_group, keep[64] = {0};
            float gsc[64];
            for (int g = 0; g < a->n_group; g++) {
                float t1 = -INFINITY, t2 = -INFINITY;
                for (int e = g * gs; e < (g + 1) * gs; e++) {
                    if (b[e] > t1) {
                        t2 = t1;
                        t1 = b[e];
                    } else if (b[e] > t2) t2 = b[e];
                }
                gsc[g] = a->scoring == CUK_ROUTER_SOFTMAX || gs < 2 ? t1 : t1 + t2;
            }
            for (int r = 0; r < a->topk_group; r++) {
                int best = -1;
                for (int g = 0; g < a->n_group; g++)
                    if (!keep[g] && (best < 0 || gsc[g] > gsc[best])) best = g;
                keep[best] = 1;
            }
            for (int e = 0; e < E; e++)
                if (!keep[e / gs]) b[e] = -INFINITY;
        }
        int taken[1024] = {0};
        float sum = 0.0f;
        for (int k = 0; k < a->top_k; k++) {
            int best = -1;
            for (int e = 0; e < E; e++)
                if (!taken[e] && (best < 0 || b[e] > b[best])) best = e;
            taken[best] = 1;
            ids[t * a->top_k + k] = best;
            sum += s[best];
        }
        for (int k = 0; k < a->top_k; k++) {
            float w = s[ids[t * a->top_k + k]];
            if (a->norm_topk) w = w / sum;
            wts[t * a->top_k + k] = w * a->scaling;
        }
    }
}

static void test_router(int E, int n_group, int topk_group, int top_k, int scoring, int with_bias,
                        int norm, float scaling)
{
    int m = gt_int(1, 33);
    float *hl = malloc((size_t)m * E * 4), *hb = malloc((size_t)E * 4);
    CHECK(hl && hb);
    for (size_t i = 0; i < (size_t)m * E; i++) hl[i] = (float)(gt_normal() * 2.0);
    for (int i = 0; i < E; i++) hb[i] = (float)(gt_normal() * 0.3);
    float *l = gt_up(hl, (size_t)m * E * 4), *b = gt_up(hb, (size_t)E * 4);
    int32_t *ids = gt_dev((size_t)m * top_k * 4);
    float *w = gt_dev((size_t)m * top_k * 4);
    struct cuk_router_args a = {.m = m,
                                .n_experts = E,
                                .n_group = n_group,
                                .topk_group = topk_group,
                                .top_k = top_k,
                                .scoring = scoring,
                                .norm_topk = norm,
                                .scaling = scaling,
                                .logits = l,
                                .bias = with_bias ? b : NULL,
                                .ids = ids,
                                .weights = w};
    CHECK_EQ(cuk_router(&a, 0), 0);
    int32_t *hid = malloc((size_t)m * top_k * 4), *rid = malloc((size_t)m * top_k * 4);
    float *hw = malloc((size_t)m * top_k * 4), *rw = malloc((size_t)m * top_k * 4);
    CHECK(hid && rid && hw && rw);
    gt_down(hid, ids, (size_t)m * top_k * 4);
    gt_down(hw, w, (size_t)m * top_k * 4);
    router_ref(&a, hl, with_bias ? hb : NULL, rid, rw);
    char what[80];
    snprintf(what, sizeof what, "router E=%d groups=%d/%d top%d %s", E, topk_group, n_group, top_k,
             scoring == CUK_ROUTER_SOFTMAX ? "softmax" : "sigmoid");
    struct gt_err e = {0, 0, 0, what};
    for (int i = 0; i < m * top_k; i++) {
        if (hid[i] != rid[i]) fprintf(stderr, "  id[%d]: got %d ref %d\n", i, hid[i], rid[i]);
        CHECK_EQ(hid[i], rid[i]);
        gt_check(&e, hw[i], rw[i], 1e-5 * fabs(rw[i]) + 1e-7, i);
    }
    gt_report(&e);
    free(hl);
    free(hb);
    free(hid);
    free(rid);
    free(hw);
    free(rw);
    cudaFree(l);
    cudaFree(b);
    cudaFree(ids);
    cudaFree(w);
}

static void test_swiglu(int ue8m0)
{
    int m = gt_int(1, 9), f = 2048, ld = 2 * f; /* gate|up fused in one row */
    float *hgu = malloc((size_t)m * ld * 4), *hy = malloc((size_t)m * f * 4);
    double *v = malloc((size_t)m * f * sizeof(double));
    CHECK(hgu && hy && v);
    for (size_t i = 0; i < (size_t)m * ld; i++) hgu[i] = (float)(gt_normal() * 3.0);
    for (int t = 0; t < m; t++)
        for (int i = 0; i < f; i++) {
            double g = hgu[(size_t)t * ld + i], u = hgu[(size_t)t * ld + f + i];
            v[(size_t)t * f + i] = g / (1.0 + exp(-g)) * u;
        }
    float *gu = gt_up(hgu, (size_t)m * ld * 4), *y = gt_dev((size_t)m * f * 4);
    uint8_t *q = gt_dev((size_t)m * f);
    float *qs = gt_dev((size_t)(f / 128) * m * 4);
    struct cuk_swiglu_args a = {.m = m,
                                .f = f,
                                .gate = gu,
                                .gate_ld = ld,
                                .up = gu + f,
                                .up_ld = ld,
                                .y = y,
                                .y_ld = f,
                                .q = q,
                                .q_ld = f,
                                .q_scale = qs,
                                .q_scale_ld = m,
                                .ue8m0 = ue8m0};
    CHECK_EQ(cuk_swiglu(&a, 0), 0);
    uint8_t *hq = malloc((size_t)m * f);
    float *hqs = malloc((size_t)(f / 128) * m * 4);
    CHECK(hq && hqs);
    gt_down(hy, y, (size_t)m * f * 4);
    gt_down(hq, q, (size_t)m * f);
    gt_down(hqs, qs, (size_t)(f / 128) * m * 4);
    struct gt_err e = {0, 0, 0, "swiglu f32"};
    for (size_t i = 0; i < (size_t)m * f; i++)
        gt_check(&e, hy[i], v[i], 4e-6 * fabs(v[i]) + 1e-30, (long)i);
    gt_report(&e);
    check_quant(ue8m0 ? "  quant of swiglu ue8m0" : "  quant of swiglu", m, f, v, hq, hqs, m,
                ue8m0);
    free(hgu);
    free(hy);
    free(v);
    free(hq);
    free(hqs);
    cudaFree(gu);
    cudaFree(y);
    cudaFree(q);
    cudaFree(qs);
}

static void test_add_embed(void)
{
    size_t n = (size_t)gt_int(1, 300000);
    float *hy = malloc(n * 4), *hx = malloc(n * 4), *hr = malloc(n * 4);
    CHECK(hy && hx && hr);
    for (size_t i = 0; i < n; i++) {
        hy[i] = (float)gt_normal();
        hx[i] = (float)gt_normal();
    }
    float *y = gt_up(hy, n * 4), *x = gt_up(hx, n * 4);
    struct cuk_add_args a = {.n = n, .y = y, .x = x, .alpha = 0.75f};
    CHECK_EQ(cuk_add(&a, 0), 0);
    gt_down(hr, y, n * 4);
    struct gt_err e = {0, 0, 0, "add"};
    for (size_t i = 0; i < n; i++) {
        double ref = (double)hy[i] + 0.75 * hx[i];
        gt_check(&e, hr[i], ref, 1.2e-7 * (fabs(hy[i]) + fabs(hx[i])) + 1e-30, (long)i);
    }
    gt_report(&e);
    free(hy);
    free(hx);
    free(hr);
    cudaFree(y);
    cudaFree(x);

    int vocab = 1000, d = 7168, m = gt_int(3, 12);
    uint16_t *ht = malloc((size_t)vocab * d * 2);
    int32_t *hk = malloc((size_t)m * 4);
    float *ho = malloc((size_t)m * d * 4);
    CHECK(ht && hk && ho);
    for (size_t i = 0; i < (size_t)vocab * d; i++) ht[i] = fp_f32_to_bf16((float)gt_normal());
    for (int t = 0; t < m; t++) hk[t] = gt_int(0, vocab - 1);
    hk[0] = -1;
    hk[1] = vocab; /* out of range: zero rows */
    uint16_t *tb = gt_up(ht, (size_t)vocab * d * 2);
    int32_t *tk = gt_up(hk, (size_t)m * 4);
    float *o = gt_dev((size_t)m * d * 4);
    struct cuk_embed_args ea = {
        .m = m, .d = d, .vocab = vocab, .tokens = tk, .table = tb, .out = o, .out_ld = d};
    CHECK_EQ(cuk_embed(&ea, 0), 0);
    gt_down(ho, o, (size_t)m * d * 4);
    for (int t = 0; t < m; t++)
        for (int i = 0; i < d; i++) {
            float ref = t < 2 ? 0.0f : fp_bf16_to_f32(ht[(size_t)hk[t] * d + i]);
            CHECK(ho[(size_t)t * d + i] == ref);
        }
    fprintf(stderr, "%-40s %8ld elements exact\n", "embed", (long)m * d);
    free(ht);
    free(hk);
    free(ho);
    cudaFree(tb);
    cudaFree(tk);
    cudaFree(o);
}

static void test_transpose(int type, int acc)
{
    int rows = gt_int(1, 300), cols = gt_int(1, 70), in_ld = cols + gt_int(0, 5),
        out_ld = rows + gt_int(0, 5);
    size_t es = type == CUK_BF16 ? 2 : 4;
    char *hin = malloc((size_t)rows * in_ld * es), *hout = malloc((size_t)cols * out_ld * es);
    float *base = malloc((size_t)cols * out_ld * 4);
    CHECK(hin && hout && base);
    for (size_t i = 0; i < (size_t)rows * in_ld; i++) {
        float v = (float)gt_normal();
        if (type == CUK_BF16) ((uint16_t *)hin)[i] = fp_f32_to_bf16(v);
        else ((float *)hin)[i] = v;
    }
    for (size_t i = 0; i < (size_t)cols * out_ld; i++) {
        float v = (float)gt_normal();
        if (type == CUK_BF16) {
            ((uint16_t *)hout)[i] = fp_f32_to_bf16(v);
            v = fp_bf16_to_f32(fp_f32_to_bf16(v));
        } else ((float *)hout)[i] = v;
        base[i] = v;
    }
    void *in = gt_up(hin, (size_t)rows * in_ld * es),
         *out = acc ? gt_up(hout, (size_t)cols * out_ld * es) : gt_dev((size_t)cols * out_ld * es);
    struct cuk_transpose_args a = {.rows = rows,
                                   .cols = cols,
                                   .type = type,
                                   .in = in,
                                   .in_ld = in_ld,
                                   .out = out,
                                   .out_ld = out_ld,
                                   .accumulate = acc};
    CHECK_EQ(cuk_transpose(&a, 0), 0);
    gt_down(hout, out, (size_t)cols * out_ld * es);
    struct gt_err e = {0, 0, 0,
                       type == CUK_BF16 ? (acc ? "transpose bf16 acc" : "transpose bf16")
                                        : (acc ? "transpose f32 acc" : "transpose f32")};
    for (int c = 0; c < cols; c++)
        for (int r = 0; r < rows; r++) {
            size_t o = (size_t)c * out_ld + r, i = (size_t)r * in_ld + c;
            double got =
                type == CUK_BF16 ? fp_bf16_to_f32(((uint16_t *)hout)[o]) : ((float *)hout)[o];
            double v = type == CUK_BF16 ? fp_bf16_to_f32(((uint16_t *)hin)[i]) : ((float *)hin)[i];
            double ref = v + (acc ? base[o] : 0.0);
            gt_check(&e, got, ref,
                     type == CUK_BF16 && acc ? gt_bf16_tol(ref) : fabs(ref) * 1e-7 + 1e-30,
                     (long)o);
        }
    gt_report(&e);
    free(hin);
    free(hout);
    free(base);
    cudaFree(in);
    cudaFree(out);
}

/* W16A32 linear: y = x W^T with bf16 weights, fp32 activations and accumulation */
static void test_gemv_bf16(int m, int n, int k, int acc)
{
    int x_ld = k + 4 * gt_int(0, 3), y_ld = n + gt_int(0, 5);
    uint16_t *hw = malloc((size_t)n * k * 2);
    float *hx = malloc((size_t)m * x_ld * 4), *hy = malloc((size_t)m * y_ld * 4),
          *base = malloc((size_t)m * y_ld * 4);
    CHECK(hw && hx && hy && base);
    for (size_t i = 0; i < (size_t)n * k; i++) hw[i] = fp_f32_to_bf16((float)(gt_normal() * 0.05));
    for (size_t i = 0; i < (size_t)m * x_ld; i++) hx[i] = (float)gt_normal();
    for (size_t i = 0; i < (size_t)m * y_ld; i++) base[i] = (float)gt_normal();
    uint16_t *w = gt_up(hw, (size_t)n * k * 2);
    float *x = gt_up(hx, (size_t)m * x_ld * 4),
          *y = acc ? gt_up(base, (size_t)m * y_ld * 4) : gt_dev((size_t)m * y_ld * 4);
    struct cuk_gemv_bf16_args a = {.m = m,
                                   .n = n,
                                   .k = k,
                                   .w = w,
                                   .x = x,
                                   .x_ld = x_ld,
                                   .y = y,
                                   .y_ld = y_ld,
                                   .accumulate = acc};
    CHECK_EQ(cuk_gemv_bf16(&a, 0), 0);
    gt_down(hy, y, (size_t)m * y_ld * 4);
    char what[80];
    snprintf(what, sizeof what, "gemv_bf16 m=%d n=%d k=%d%s", m, n, k, acc ? " acc" : "");
    struct gt_err e = {0, 0, 0, what};
    for (int t = 0; t < m; t++) {
        for (int r = 0; r < n; r++) {
            double d = 0.0, S = 0.0;
            for (int i = 0; i < k; i++) {
                double p = (double)fp_bf16_to_f32(hw[(size_t)r * k + i]) * hx[(size_t)t * x_ld + i];
                d += p;
                S += fabs(p);
            }
            double ref = d + (acc ? base[(size_t)t * y_ld + r] : 0.0);
            gt_check(&e, hy[(size_t)t * y_ld + r], ref, 2e-5 * S + 1e-6 * fabs(ref) + 1e-30,
                     (long)t * n + r);
        }
        for (int r = n; r < y_ld && !acc; r++)
            CHECK(isnan(hy[(size_t)t * y_ld + r])); /* untouched */
    }
    gt_report(&e);
    free(hw);
    free(hx);
    free(hy);
    free(base);
    cudaFree(w);
    cudaFree(x);
    cudaFree(y);
}

/* cuk_rmsnorm_f32: bit for bit the CPU kernel cpuq_rmsnorm_f32 (strided rows, and in place) */
static void test_rmsnorm_f32(int m, int d, int ld)
{
    float *hx = malloc((size_t)m * ld * 4), *hw = malloc((size_t)d * 4);
    float *ref = malloc((size_t)m * ld * 4), *hy = malloc((size_t)m * ld * 4);
    CHECK(hx && hw && ref && hy);
    for (size_t i = 0; i < (size_t)m * ld; i++)
        hx[i] = (float)(gt_normal() * (1 + 3 * gt_uniform()));
    for (int i = 0; i < d; i++) hw[i] = (float)(0.5 + gt_uniform());
    float eps = 1e-6f;
    cpuq_rmsnorm_f32(hx, ld, hw, m, d, eps, ref, ld);
    float *x = gt_up(hx, (size_t)m * ld * 4), *w = gt_up(hw, (size_t)d * 4);
    float *y = gt_dev((size_t)m * ld * 4);
    struct cuk_rmsnorm_f32_args a = {
        .m = m, .d = d, .x = x, .x_ld = ld, .w = w, .eps = eps, .y = y, .y_ld = ld};
    CHECK_EQ(cuk_rmsnorm_f32(&a, 0), 0);
    gt_down(hy, y, (size_t)m * ld * 4);
    for (int t = 0; t < m; t++)
        CHECK(memcmp(hy + (size_t)t * ld, ref + (size_t)t * ld, (size_t)d * 4) == 0);
    a.y = x; /* in place */
    CHECK_EQ(cuk_rmsnorm_f32(&a, 0), 0);
    gt_down(hy, x, (size_t)m * ld * 4);
    for (int t = 0; t < m; t++)
        CHECK(memcmp(hy + (size_t)t * ld, ref + (size_t)t * ld, (size_t)d * 4) == 0);
    fprintf(stderr, "rmsnorm_f32 m=%d d=%d: bit-exact vs the CPU kernel\n", m, d);
    free(hx);
    free(hw);
    free(ref);
    free(hy);
    cudaFree(x);
    cudaFree(w);
    cudaFree(y);
}

/* cuk_fp8_to_f32: bit for bit cpuq_fp8_dequant (rows and cols not multiples of 128) */
static void test_fp8_to_f32(int64_t rows, int64_t cols)
{
    int64_t sr = (rows + 127) / 128, sc = (cols + 127) / 128;
    uint8_t *hq = malloc((size_t)(rows * cols));
    float *hs = malloc((size_t)(sr * sc) * 4), *ref = malloc((size_t)(rows * cols) * 4);
    float *hy = malloc((size_t)(rows * cols) * 4);
    CHECK(hq && hs && ref && hy);
    for (int64_t i = 0; i < rows * cols; i++) {
        uint8_t b = (uint8_t)gt_int(0, 255);
        hq[i] = (b & 0x7f) == 0x7f ? 0x3f : b; /* no NaN codes */
    }
    for (int64_t i = 0; i < sr * sc; i++) hs[i] = (float)(gt_uniform() * 1e-2 + 1e-4);
    cpuq_fp8_dequant(hq, hs, rows, cols, 0, rows, ref);
    uint8_t *q = gt_up(hq, (size_t)(rows * cols));
    float *s = gt_up(hs, (size_t)(sr * sc) * 4), *y = gt_dev((size_t)(rows * cols) * 4);
    struct cuk_fp8_to_f32_args a = {
        .rows = rows, .cols = cols, .q = q, .scale = s, .scale_ld = (int)sc, .out = y};
    CHECK_EQ(cuk_fp8_to_f32(&a, 0), 0);
    gt_down(hy, y, (size_t)(rows * cols) * 4);
    CHECK(memcmp(hy, ref, (size_t)(rows * cols) * 4) == 0);
    fprintf(stderr, "fp8_to_f32 %lldx%lld: bit-exact vs cpuq_fp8_dequant\n", (long long)rows,
            (long long)cols);
    free(hq);
    free(hs);
    free(ref);
    free(hy);
    cudaFree(q);
    cudaFree(s);
    cudaFree(y);
}

/* cuk_head_matmul_fp8: the hybrid backend's per-head matmul on FP8 weights (kv_b's absorbed
 * halves at decode), against a float64 reference of the dequantized weights */

static void test_head_matmul_fp8(int n, int trans, int r0)
{
    const int H = 4, hrows = 256, rows = 128, cols = 512, R = H * hrows, sld = cols / 128;
    const int in = trans ? rows : cols, out = trans ? cols : rows;
    const int ldx_head = in + 8, ldx_tok = H * ldx_head, ldy_head = out + 4, ldy_tok = H * ldy_head;
    uint8_t *hq = malloc((size_t)R * cols);
    float *hs = malloc((size_t)(R / 128) * sld * 4), *hx = malloc((size_t)n * ldx_tok * 4);
    float *hy = malloc((size_t)n * ldy_tok * 4);
    CHECK(hq && hs && hx && hy);
    for (size_t i = 0; i < (size_t)R * cols; i++) {
        uint8_t b = (uint8_t)gt_int(0, 255);
        hq[i] = (b & 0x7f) == 0x7f ? 0x3f : b; /* no NaN codes */
    }
    for (int i = 0; i < (R / 128) * sld; i++) hs[i] = (float)(gt_uniform() * 1e-3 + 1e-4);
    for (size_t i = 0; i < (size_t)n * ldx_tok; i++) hx[i] = (float)gt_normal();
    uint8_t *q = gt_up(hq, (size_t)R * cols);
    float *s = gt_up(hs, (size_t)(R / 128) * sld * 4), *x = gt_up(hx, (size_t)n * ldx_tok * 4);
    float *y = gt_dev((size_t)n * ldy_tok * 4);
    struct cuk_head_matmul_fp8_args a = {.q = q,
                                         .scale = s,
                                         .scale_ld = sld,
                                         .r0 = r0,
                                         .head_rows = hrows,
                                         .rows = rows,
                                         .cols = cols,
                                         .trans = trans,
                                         .n = n,
                                         .n_heads = H,
                                         .x = x,
                                         .x_ld_tok = ldx_tok,
                                         .x_ld_head = ldx_head,
                                         .y = y,
                                         .y_ld_tok = ldy_tok,
                                         .y_ld_head = ldy_head};
    CHECK(cuk_head_matmul_fp8_fits(&a));
    CHECK_EQ(cuk_head_matmul_fp8(&a, 0), 0);
    gt_down(hy, y, (size_t)n * ldy_tok * 4);
    char name[96];
    snprintf(name, sizeof name, "head matmul fp8 trans=%d n=%d r0=%d", trans, n, r0);
    struct gt_err e = {0, 0, 0, name};
    for (int t = 0; t < n; t++)
        for (int h = 0; h < H; h++)
            for (int o = 0; o < out; o++) {
                double acc = 0, mag = 0;
                for (int k = 0; k < in; k++) {
                    int r = trans ? k : o, c = trans ? o : k;
                    int64_t row = r0 + (int64_t)h * hrows + r;
                    double w = (double)(fp_e4m3_to_f32(hq[row * cols + c]) *
                                        hs[(row / 128) * sld + c / 128]);
                    double xv = hx[(size_t)t * ldx_tok + (size_t)h * ldx_head + k];
                    acc += w * xv;
                    mag += fabs(w * xv);
                }
                gt_check(&e, hy[(size_t)t * ldy_tok + (size_t)h * ldy_head + o], acc,
                         4e-6 * mag + 1e-30, (long)(t * 100000 + h * 1000 + o));
            }
    gt_report(&e);
    free(hq);
    free(hs);
    free(hx);
    free(hy);
    cudaFree(q);
    cudaFree(s);
    cudaFree(x);
    cudaFree(y);
}

/* cuk_rmsnorm_f32 with the fused act_quant: y, codes and scales bit for bit those of the plain
 * norm followed by cuk_rmsnorm_quant without a norm on its output (what the hybrid backend did
 * before the fusion) */
static void test_rmsnorm_f32_quant(int m, int d, int ld, int ue8m0)
{
    const int mp = (m + 3) & ~3, nb = d / 128;
    float *hx = malloc((size_t)m * ld * 4), *hw = malloc((size_t)d * 4);
    float *y1 = malloc((size_t)m * d * 4), *y2 = malloc((size_t)m * d * 4);
    uint8_t *q1 = malloc((size_t)m * d), *q2 = malloc((size_t)m * d);
    float *s1 = malloc((size_t)nb * mp * 4), *s2 = malloc((size_t)nb * mp * 4);
    CHECK(hx && hw && y1 && y2 && q1 && q2 && s1 && s2);
    for (size_t i = 0; i < (size_t)m * ld; i++)
        hx[i] = (float)(gt_normal() * (1 + 3 * gt_uniform()));
    for (int i = 0; i < d; i++) hw[i] = (float)(0.5 + gt_uniform());
    float *x = gt_up(hx, (size_t)m * ld * 4), *w = gt_up(hw, (size_t)d * 4);
    float *y = gt_dev((size_t)m * d * 4), *qs = gt_dev((size_t)nb * mp * 4);
    uint8_t *q = gt_dev((size_t)m * d);
    struct cuk_rmsnorm_f32_args a = {
        .m = m, .d = d, .x = x, .x_ld = ld, .w = w, .eps = 1e-6f, .y = y, .y_ld = d};
    CHECK_EQ(cuk_rmsnorm_f32(&a, 0), 0);
    struct cuk_rmsnorm_quant_args b = {.m = m,
                                       .d = d,
                                       .x = y,
                                       .x_ld = d,
                                       .q = q,
                                       .q_ld = d,
                                       .q_scale = qs,
                                       .q_scale_ld = mp,
                                       .ue8m0 = ue8m0};
    CHECK_EQ(cuk_rmsnorm_quant(&b, 0), 0);
    gt_down(y1, y, (size_t)m * d * 4);
    gt_down(q1, q, (size_t)m * d);
    gt_down(s1, qs, (size_t)nb * mp * 4);
    CUDA_CHECK(cudaMemset(y, 0xff, (size_t)m * d * 4));
    CUDA_CHECK(cudaMemset(q, 0x7f, (size_t)m * d));
    CUDA_CHECK(cudaMemset(qs, 0xff, (size_t)nb * mp * 4));
    a.q = q;
    a.q_ld = d;
    a.q_scale = qs;
    a.q_scale_ld = mp;
    a.ue8m0 = ue8m0;
    CHECK_EQ(cuk_rmsnorm_f32(&a, 0), 0);
    gt_down(y2, y, (size_t)m * d * 4);
    gt_down(q2, q, (size_t)m * d);
    gt_down(s2, qs, (size_t)nb * mp * 4);
    CHECK(memcmp(y1, y2, (size_t)m * d * 4) == 0);
    CHECK(memcmp(q1, q2, (size_t)m * d) == 0);
    for (int b2 = 0; b2 < nb; b2++)
        CHECK(memcmp(s1 + (size_t)b2 * mp, s2 + (size_t)b2 * mp, (size_t)m * 4) == 0);
    fprintf(stderr, "rmsnorm_f32 + fused quant m=%d d=%d ue8m0=%d: bit-exact vs two kernels\n", m,
            d, ue8m0);
    free(hx);
    free(hw);
    free(y1);
    free(y2);
    free(q1);
    free(q2);
    free(s1);
    free(s2);
    cudaFree(x);
    cudaFree(w);
    cudaFree(y);
    cudaFree(qs);
    cudaFree(q);
}

/* cuk_rope out of place and cuk_rope2 (k_pe and q_pe in one launch) against the copy + in-place
 * rotation the hybrid backend did before: bit for bit, untouched elements untouched */
static void test_rope_fused(void)
{
    const int m = gt_int(1, 16), H = 128, QD = 192, KD = 576, L = 512, QK = 2112;
    float fr[32];
    CHECK_EQ(cuk_rope_freqs(64, 10000.0, 40.0, 4096, 32.0, 1.0, fr), 0);
    size_t nq = (size_t)m * H * QD, nqa = (size_t)m * H * KD, nk = (size_t)m * QK,
           nkv = (size_t)m * KD;
    float *hq = malloc(nq * 4), *hk = malloc(nk * 4), *hcs = malloc((size_t)m * 64 * 4);
    float *r1 = malloc(nqa * 4), *r2 = malloc(nqa * 4), *k1 = malloc(nkv * 4),
          *k2 = malloc(nkv * 4);
    int32_t *hp = malloc((size_t)m * 4);
    CHECK(hq && hk && hcs && r1 && r2 && k1 && k2 && hp);
    for (size_t i = 0; i < nq; i++) hq[i] = (float)gt_normal();
    for (size_t i = 0; i < nk; i++) hk[i] = (float)gt_normal();
    for (int t = 0; t < m; t++) {
        hp[t] = gt_int(0, 163839);
        for (int i = 0; i < 32; i++) {
            float ang = (float)hp[t] * fr[i];
            hcs[(t * 32 + i) * 2] = cosf(ang);
            hcs[(t * 32 + i) * 2 + 1] = sinf(ang);
        }
    }
    float *q = gt_up(hq, nq * 4), *k = gt_up(hk, nk * 4), *cs = gt_up(hcs, (size_t)m * 64 * 4);
    float *f = gt_up(fr, sizeof fr), *qa = gt_dev(nqa * 4), *kv = gt_dev(nkv * 4);
    int32_t *p = gt_up(hp, (size_t)m * 4);
    CUDA_CHECK(cudaMemset(qa, 0x7f, nqa * 4));
    CUDA_CHECK(cudaMemset(kv, 0x7f, nkv * 4));
    /* before: a strided copy of the rotated dims, then in place */
    CUDA_CHECK(cudaMemcpy2D(qa + L, (size_t)KD * 4, q + 128, (size_t)QD * 4, 64 * 4, (size_t)m * H,
                            cudaMemcpyDeviceToDevice));
    CUDA_CHECK(cudaMemcpy2D(kv + L, (size_t)KD * 4, k + 1536 + L, (size_t)QK * 4, 64 * 4, (size_t)m,
                            cudaMemcpyDeviceToDevice));
    struct cuk_rope_args aq = {.m = m,
                               .n_heads = H,
                               .rot_dim = 64,
                               .x = qa + L,
                               .x_ld = H * KD,
                               .head_stride = KD,
                               .pos = p,
                               .freqs = f,
                               .cs = cs};
    struct cuk_rope_args ak = {.m = m,
                               .n_heads = 1,
                               .rot_dim = 64,
                               .x = kv + L,
                               .x_ld = KD,
                               .pos = p,
                               .freqs = f,
                               .cs = cs};
    CHECK_EQ(cuk_rope(&aq, 0), 0);
    CHECK_EQ(cuk_rope(&ak, 0), 0);
    gt_down(r1, qa, nqa * 4);
    gt_down(k1, kv, nkv * 4);
    /* now: out of place, both in one launch */
    CUDA_CHECK(cudaMemset(qa, 0x7f, nqa * 4));
    CUDA_CHECK(cudaMemset(kv, 0x7f, nkv * 4));
    aq.src = q + 128;
    aq.src_ld = H * QD;
    aq.src_head_stride = QD;
    ak.src = k + 1536 + L;
    ak.src_ld = QK;
    CHECK_EQ(cuk_rope2(&ak, &aq, 0), 0);
    gt_down(r2, qa, nqa * 4);
    gt_down(k2, kv, nkv * 4);
    CHECK(memcmp(r1, r2, nqa * 4) == 0);
    CHECK(memcmp(k1, k2, nkv * 4) == 0);
    fprintf(stderr, "rope out of place, q_pe + k_pe in one launch (m=%d): bit-exact\n", m);
    free(hq);
    free(hk);
    free(hcs);
    free(r1);
    free(r2);
    free(k1);
    free(k2);
    free(hp);
    cudaFree(q);
    cudaFree(k);
    cudaFree(cs);
    cudaFree(f);
    cudaFree(qa);
    cudaFree(kv);
    cudaFree(p);
}

int main(void)
{
    gt_require_gpu();
    gt_state = check_seed();
    test_rmsnorm(gt_int(1, 17), 7168, CUK_F32, 1, 0);
    test_rmsnorm(gt_int(1, 5), 1536, CUK_BF16, 1, 0);
    test_rmsnorm(gt_int(1, 5), 512, CUK_F32, 1, 0);
    test_rmsnorm(gt_int(1, 5), 2048, CUK_F32, 0, 0);
    /* DeepSeek-V3.1's ue8m0 (power-of-two) activation scales */
    test_rmsnorm(gt_int(1, 17), 7168, CUK_F32, 1, 1);
    test_rmsnorm(gt_int(1, 5), 2048, CUK_F32, 0, 1);
    test_rmsnorm(gt_int(1, 5), 7168, CUK_F32, 0, 1);
    test_rmsnorm_f32(gt_int(1, 17), 7168, 7168);
    test_rmsnorm_f32(gt_int(1, 5), 512, 576); /* kv_a latent: ld = kv_dim */
    test_rmsnorm_f32(gt_int(1, 5), gt_int(1, 3000), 3001);
    test_fp8_to_f32(gt_int(1, 700), gt_int(1, 700));
    test_fp8_to_f32(32768, 512); /* a DeepSeek-V3 kv_b */
    test_rmsnorm_f32_quant(gt_int(1, 16), 7168, 7168, 0);
    test_rmsnorm_f32_quant(gt_int(1, 16), 1536, 2112, 0); /* q_a half of the fused q_a|kv_a */
    test_rmsnorm_f32_quant(gt_int(1, 16), 7168, 7168, 1);
    test_rope();
    test_rope_fused();
    test_head_matmul_fp8(1, 1, 0); /* W_UK^T q_nope */
    test_head_matmul_fp8(gt_int(2, 16), 1, 0);
    test_head_matmul_fp8(gt_int(9, 16), 1, 0);
    test_head_matmul_fp8(1, 0, 128); /* W_UV o~ */
    test_head_matmul_fp8(gt_int(2, 8), 0, 128);
    test_head_matmul_fp8(gt_int(9, 16), 0, 128);
    test_router(256, 8, 4, 8, CUK_ROUTER_SIGMOID, 1, 1, 2.5f);   /* DeepSeek-V3 */
    test_router(64, 1, 1, 6, CUK_ROUTER_SOFTMAX, 0, 0, 1.0f);    /* V2-Lite */
    test_router(160, 8, 3, 6, CUK_ROUTER_SOFTMAX, 0, 0, 16.0f);  /* V2 / V2.5: max per group */
    test_router(384, 1, 1, 8, CUK_ROUTER_SIGMOID, 1, 1, 2.827f); /* Kimi-K2-like */
    test_swiglu(0);
    test_swiglu(1);
    test_add_embed();
    test_gemv_bf16(1, 256, 7168, 0); /* router logits */
    test_gemv_bf16(gt_int(2, 16), gt_int(1, 3000), 8 * gt_int(1, 900), 0);
    test_gemv_bf16(gt_int(1, 16), 1027, 7168, 1);
    for (int m = 1; m <= 16; m++) test_gemv_bf16(m, 37, 64, m & 1);
    test_transpose(CUK_F32, 0);
    test_transpose(CUK_BF16, 0);
    test_transpose(CUK_F32, 1);
    test_transpose(CUK_BF16, 1);
    fprintf(stderr, "test_ops: all passed\n");
    return 0;
}
