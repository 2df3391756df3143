/* test_mla.c - latent cache write (RMSNorm + RoPE -> bf16 paged rows) and absorbed MLA decode
 * over a paged cache with shuffled block tables, vs float64 CPU references. Decode covers one
 * split and many (flash-decoding combine), several queries of different lengths, 16 and 128
 * heads, and prefill-style causal rows (same table, seq_len = pos + 1). */
#include "tests/gpu/gpu_test.h"

#include "kernels/cuda/mla.h"
#include "kernels/cuda/rope.h"

static void test_kv_store(int fused)
{
    int m = gt_int(1, 20), ld = CUK_MLA_DIM + 64, rows = 256;
    float *hkv = malloc((size_t)m * ld * 4), hw[CUK_MLA_LORA], fr[32];
    int32_t *hp = malloc((size_t)m * 4), *hs = malloc((size_t)m * 4);
    uint16_t *hc = malloc((size_t)rows * CUK_MLA_DIM * 2);
    CHECK(hkv && hp && hs && hc);
    for (size_t i = 0; i < (size_t)m * ld; i++) hkv[i] = (float)(gt_normal() * 2.0);
    for (int i = 0; i < CUK_MLA_LORA; i++) hw[i] = (float)(0.5 + gt_uniform());
    CHECK_EQ(cuk_rope_freqs(64, 10000.0, 40.0, 4096, 32.0, 1.0, fr), 0);
    int perm[256];
    for (int i = 0; i < rows; i++) perm[i] = i;
    for (int i = rows - 1; i > 0; i--) {
        int j = gt_int(0, i), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int t = 0; t < m; t++) {
        hp[t] = gt_int(0, 100000);
        hs[t] = t == 1 ? -1 : perm[t]; /* token 1 skipped */
    }
    float *kv = gt_up(hkv, (size_t)m * ld * 4), *w = gt_up(hw, sizeof hw),
          *f = gt_up(fr, sizeof fr);
    int32_t *p = gt_up(hp, (size_t)m * 4), *s = gt_up(hs, (size_t)m * 4);
    uint16_t *c = gt_dev((size_t)rows * CUK_MLA_DIM * 2);
    struct cuk_mla_kv_store_args a = {.m = m,
                                      .kv = kv,
                                      .kv_ld = ld,
                                      .w = fused ? w : NULL,
                                      .eps = 1e-6f,
                                      .pos = p,
                                      .freqs = fused ? f : NULL,
                                      .slots = s,
                                      .cache = c};
    CHECK_EQ(cuk_mla_kv_store(&a, 0), 0);
    gt_down(hc, c, (size_t)rows * CUK_MLA_DIM * 2);
    struct gt_err e = {
        0, 0, 0, fused ? "mla_kv_store (norm + rope -> bf16)" : "mla_kv_store (plain -> bf16)"};
    char written[256] = {0};
    for (int t = 0; t < m; t++) {
        if (hs[t] < 0) continue;
        written[hs[t]] = 1;
        const float *x = hkv + (size_t)t * ld;
        const uint16_t *row = hc + (size_t)hs[t] * CUK_MLA_DIM;
        double ss = 0.0;
        for (int i = 0; i < CUK_MLA_LORA; i++) ss += (double)x[i] * x[i];
        double inv = 1.0 / sqrt(ss / CUK_MLA_LORA + 1e-6);
        for (int i = 0; i < CUK_MLA_LORA; i++) {
            double ref = fused ? x[i] * inv * hw[i] : x[i];
            gt_check(&e, fp_bf16_to_f32(row[i]), ref, gt_bf16_tol(ref), t * 1000 + i);
        }
        for (int i = 0; i < 32; i++) {
            double ang = fused ? (double)((float)hp[t] * fr[i]) : 0.0, y0 = x[512 + 2 * i],
                   y1 = x[513 + 2 * i];
            double r0 = y0 * cos(ang) - y1 * sin(ang), r1 = y0 * sin(ang) + y1 * cos(ang);
            gt_check(&e, fp_bf16_to_f32(row[512 + 2 * i]), r0, gt_bf16_tol(r0) + 1e-5,
                     t * 1000 + 512 + 2 * i);
            gt_check(&e, fp_bf16_to_f32(row[513 + 2 * i]), r1, gt_bf16_tol(r1) + 1e-5,
                     t * 1000 + 513 + 2 * i);
        }
    }
    for (int r = 0; r < rows; r++)
        if (!written[r])
            for (int i = 0; i < CUK_MLA_DIM; i++) CHECK_EQ(hc[(size_t)r * CUK_MLA_DIM + i], 0xffff);
    gt_report(&e);
    free(hkv);
    free(hp);
    free(hs);
    free(hc);
    cudaFree(kv);
    cudaFree(w);
    cudaFree(f);
    cudaFree(p);
    cudaFree(s);
    cudaFree(c);
}

/* n_q queries, H heads; lens[b] given; block table per query over a shared shuffled cache */
/* exact = 1: the fp32 path, checked to fp32 rounding. exact = 0: the tensor-core path, which
 * splits q and P into two bf16 parts each (|x - hi - lo| <= 2^-18 |x|): checked against the same
 * unrounded reference with 4x the fp32 path's tolerance, and a relative Frobenius error bound
 * (1e-4) that one bf16 rounding of q or P (measured 5e-4) would break. */
static void test_decode1(int n_q, int H, const int *lens, int bt, const char *what, int exact)
{
    int maxlen = 0;
    for (int b = 0; b < n_q; b++)
        if (lens[b] > maxlen) maxlen = lens[b];
    int nblk = (maxlen + bt - 1) / bt, total = n_q * nblk;
    size_t rows = (size_t)total * bt;
    uint16_t *hc = malloc(rows * CUK_MLA_DIM * 2);
    float *hq = malloc((size_t)n_q * H * CUK_MLA_DIM * 4),
          *ho = malloc((size_t)n_q * H * CUK_MLA_LORA * 4);
    int32_t *ht = malloc((size_t)total * 4), *perm = malloc((size_t)total * 4);
    CHECK(hc && hq && ho && ht && perm);
    for (size_t i = 0; i < rows * CUK_MLA_DIM; i++)
        hc[i] = fp_f32_to_bf16((float)(gt_uniform() * 2 - 1));
    for (size_t i = 0; i < (size_t)n_q * H * CUK_MLA_DIM; i++) hq[i] = (float)(gt_normal() * 2.0);
    for (int i = 0; i < total; i++) perm[i] = i;
    for (int i = total - 1; i > 0; i--) {
        int j = gt_int(0, i), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int i = 0; i < total; i++) ht[i] = perm[i];
    int32_t hl[64];
    for (int b = 0; b < n_q; b++) hl[b] = lens[b];
    uint16_t *c = gt_up(hc, rows * CUK_MLA_DIM * 2);
    float *q = gt_up(hq, (size_t)n_q * H * CUK_MLA_DIM * 4),
          *o = gt_dev((size_t)n_q * H * CUK_MLA_LORA * 4);
    int32_t *t = gt_up(ht, (size_t)total * 4), *l = gt_up(hl, (size_t)n_q * 4);
    size_t wsz = cuk_mla_decode_workspace_size(n_q, H, maxlen);
    void *ws = wsz ? gt_dev(wsz) : NULL;
    float scale = 0.1352337789f;
    struct cuk_mla_decode_args a = {.n_q = n_q,
                                    .n_heads = H,
                                    .q = q,
                                    .q_ld = H * CUK_MLA_DIM,
                                    .cache = c,
                                    .block_tokens = bt,
                                    .block_table = t,
                                    .bt_ld = nblk,
                                    .seq_len = l,
                                    .max_seq_len = maxlen,
                                    .scale = scale,
                                    .out = o,
                                    .out_ld = H * CUK_MLA_LORA,
                                    .exact = exact,
                                    .workspace = ws,
                                    .workspace_size = wsz};
    CHECK_EQ(cuk_mla_decode(&a, 0), 0);
    gt_down(ho, o, (size_t)n_q * H * CUK_MLA_LORA * 4);
    char name[120];
    snprintf(name, sizeof name, "mla_decode%s %s (n_q=%d H=%d max=%d)", exact ? "" : " tc", what,
             n_q, H, maxlen);
    struct gt_err e = {0, 0, 0, name};
    double *sc = malloc((size_t)maxlen * sizeof(double)), acc[CUK_MLA_LORA], num = 0.0, den = 0.0;
    CHECK(sc != NULL);
    for (int b = 0; b < n_q; b++)
        for (int h = 0; h < H; h++) {
            const float *qh = hq + ((size_t)b * H + h) * CUK_MLA_DIM;
            double mx = -INFINITY, sum = 0.0;
            for (int p = 0; p < lens[b]; p++) {
                const uint16_t *row =
                    hc + ((size_t)ht[b * nblk + p / bt] * bt + p % bt) * CUK_MLA_DIM;
                double d = 0.0;
                for (int i = 0; i < CUK_MLA_DIM; i++) {
                    d += (double)qh[i] * fp_bf16_to_f32(row[i]);
                }
                sc[p] = d * scale;
                if (sc[p] > mx) mx = sc[p];
            }
            for (int i = 0; i < CUK_MLA_LORA; i++) acc[i] = 0.0;
            for (int p = 0; p < lens[b]; p++) {
                const uint16_t *row =
                    hc + ((size_t)ht[b * nblk + p / bt] * bt + p % bt) * CUK_MLA_DIM;
                double pe = exp(sc[p] - mx);
                sum += pe;
                for (int i = 0; i < CUK_MLA_LORA; i++) acc[i] += pe * fp_bf16_to_f32(row[i]);
            }
            for (int i = 0; i < CUK_MLA_LORA; i++) {
                size_t j = ((size_t)b * H + h) * CUK_MLA_LORA + i;
                double ref = acc[i] / sum;
                gt_check(&e, ho[j], ref, exact ? 2e-5 + 1e-4 * fabs(ref) : 8e-5 + 4e-4 * fabs(ref),
                         (long)j);
                num += (ho[j] - ref) * (ho[j] - ref);
                den += ref * ref;
            }
        }
    double rel = sqrt(num / (den > 0 ? den : 1));
    fprintf(stderr, "%-40s rel. Frobenius error %.3g\n", name, rel);
    gt_report(&e);
    CHECK(rel <= (exact ? 1e-5 : 1e-4));
    free(sc);
    free(hc);
    free(hq);
    free(ho);
    free(ht);
    free(perm);
    cudaFree(c);
    cudaFree(q);
    cudaFree(o);
    cudaFree(t);
    cudaFree(l);
    cudaFree(ws);
}

static void test_decode(int n_q, int H, const int *lens, int bt, const char *what)
{
    test_decode1(n_q, H, lens, bt, what, 1);
    test_decode1(n_q, H, lens, bt, what, 0);
}

int main(void)
{
    gt_require_gpu();
    gt_state = check_seed();
    test_kv_store(1);
    test_kv_store(0);
    int one[1] = {gt_int(1, 40)};
    test_decode(1, 128, one, 64, "short, one split");
    int several[5];
    for (int i = 0; i < 5; i++) several[i] = gt_int(1, 3000);
    test_decode(5, 16, several, 16, "mixed lengths, split");
    int longer[2] = {gt_int(2000, 9000), gt_int(1, 300)};
    test_decode(2, 128, longer, 64, "long, split");
    /* prefill of a 37-token chunk at positions p0..p0+36: causal rows, seq_len = pos + 1 */
    int p0 = gt_int(0, 500), causal[37];
    for (int i = 0; i < 37; i++) causal[i] = p0 + i + 1;
    test_decode(37, 16, causal, 32, "causal prefill rows");
    fprintf(stderr, "test_mla: all passed\n");
    return 0;
}
