/* test_mla.c - latent cache write (RMSNorm + RoPE -> bf16 paged rows) and absorbed MLA decode
 * over a paged cache with shuffled block tables, vs float64 CPU references. Decode covers one
 * split and many (flash-decoding combine), several queries of different lengths, 16 and 128
 * heads, and prefill-style causal rows (same table, seq_len = pos + 1).
 * MLA prefill as GEMMs (cuk_mla_prefill, mla_prefill.h): one sequence's run of n_q queries from
 * pos0 (0, or across several blocks; a ~2000-position context), 16 and 128 heads, 64- and
 * 16-token blocks of a shuffled table in a pool whose other rows are NaN; fp32 (exact = 1) and
 * TF32 GEMMs, every output element against a float64 reference with a derived bound (see
 * prefill_ref); a workspace that holds only 1-3 queries' scores (several chunks), against the
 * same bound; the same inputs through cuk_mla_decode (causal rows); ERR_INVAL with nothing
 * enqueued (stream capture records no node) for n_q = 0, a workspace short of one query's
 * scores, pos0 + n_q > max_ctx and other bad shapes. */
#include "tests/gpu/gpu_test.h"

#include "common/err.h"
#include "kernels/cuda/mla.h"
#include "kernels/cuda/mla_prefill.h"
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

/* ---- cuk_mla_prefill ---- */

static struct cuk_mla_prefill *g_pf;

#define PF_SCALE 0.1352337789f
#define PF_LAMBDA 4.0

/* float64 reference of mla_prefill.h for queries i < n_q (position pos0 + i sees 0..pos0 + i)
 * over C [pos0 + n_q][576] (the bf16 rows' values), and per output element a bound of the error
 * of each compute mode (tol[0]: exact = 0, TF32; tol[1]: exact = 1, fp32).
 *
 * Derivation. u = 2^-24 (fp32 unit roundoff), lambda = 4, n = 576. For row r (query i, head h,
 * p = pos0 + i, L = p + 1 visible positions) and position t <= p: a_k = scale q_k c_tk,
 * S_t = sum a_k, A_t = sum |a_k|, B_t = sqrt(sum a_k^2), M = max S, P = softmax(S), v_t =
 * c_t[0:512], out_j = sum P_t v_tj, W_j = sum P_t |v_tj|, R_j = sqrt(sum P_t^2 v_tj^2).
 * 1. Score error bound D_t.
 *   exact = 1 (fp32 FMAs, round to nearest): each of the n roundings is at most u times a partial
 *     sum; the test's q has random signs, so the partial sums are a random walk of variance
 *     <= B_t^2 and the roundings add as one: std <= u sqrt(n/3) B_t; bound lambda u sqrt(n) B_t.
 *   exact = 0 (TF32): q_k enters as q_k (1 + e_k), e_k in an interval of width 2^-10 (round to
 *     nearest [-2^-11, 2^-11], truncation (-2^-10, 0]), |E e_k| <= 2^-11; c is bf16, exact in
 *     TF32, and the products are exact in fp32. sum a_k e_k = E[e] S_t + a sum of independent
 *     centred terms, which Hoeffding bounds by lambda 2^-10 B_t (exceeded with probability
 *     2 exp(-2 lambda^2) = 3e-14 a score): 2^-11 |S_t| + lambda 2^-10 B_t. The tensor cores'
 *     fp32 accumulation may truncate (each addition off by < 2u of a value <= A_t): 2u n A_t.
 *   both: alpha scaling, S - M and the softmax's fp32 exp and division (relative error of P_t
 *     <= (4 + 1.2 |S_t - M|) u, __expf's 2 + 1.16|x| ulp included; folded into D_t, which the
 *     propagation below weighs no less): 4u (|S_t| + |M|) + (4 + 1.2 |S_t - M|) u.
 * 2. Propagation through the softmax: to first order out_j moves by sum_t P_t d_t (v_tj - out_j)
 *   (|d_t| <= D_t), at most X_j + |out_j| Dbar with X_j = sum P_t D_t |v_tj|, Dbar = sum P_t D_t;
 *   P~_t / P_t = exp(d_t - log sum P exp(d)) bounds the rest by the factor 1 + 2 max D.
 * 3. The normalizer, a sum of L positive fp32 terms (random-walk roundings of <= u sum each):
 *   lambda sqrt(L) u |out_j|.
 * 4. out = P V: exact = 1: the terms P_t v_tj have random signs, partial sums of variance
 *   <= R_j^2: lambda sqrt(L) u R_j. exact = 0: P rounded to TF32 as q in 1 (V is bf16, exact):
 *   2^-11 |out_j| + lambda 2^-10 R_j, and the truncating accumulation (partial sums <= W_j):
 *   2u L W_j.
 * 5. The fp32 store: u |out_j|.
 * Size, for these inputs (score spread ~2.8): exact = 1 about 2e-5 absolute (out ~0.3); the
 * TF32 bound takes every score's error in the worst direction, about 4% of |out|, while the
 * typical error is ~30x less. The structure (gather, table, causal mask, chunks) is the same in
 * both modes and is held to the tight fp32 bound. */
static void prefill_ref(int H, int pos0, int n_q, const float *hq, const double *C, double *ref,
                        double *tol0, double *tol1)
{
    const double u = 0x1.0p-24, lam = PF_LAMBDA, n = CUK_MLA_DIM;
    int L = pos0 + n_q;
    double *S = malloc((size_t)L * 6 * sizeof(double));
    CHECK(S != NULL);
    double *A = S + L, *B = A + L, *P = B + L, *D0 = P + L, *D1 = D0 + L;
    double q[CUK_MLA_DIM], o[CUK_MLA_LORA], w[CUK_MLA_LORA], x0[CUK_MLA_LORA], x1[CUK_MLA_LORA],
        r2[CUK_MLA_LORA];
    for (int i = 0; i < n_q; i++)
        for (int h = 0; h < H; h++) {
            int p = pos0 + i;
            for (int k = 0; k < CUK_MLA_DIM; k++) q[k] = hq[((size_t)i * H + h) * CUK_MLA_DIM + k];
            double M = -INFINITY;
            for (int t = 0; t <= p; t++) {
                const double *c = C + (size_t)t * CUK_MLA_DIM;
                double s0 = 0, s1 = 0, a0 = 0, a1 = 0, b0 = 0, b1 = 0;
                for (int k = 0; k < CUK_MLA_DIM; k += 2) {
                    double e0 = q[k] * c[k], e1 = q[k + 1] * c[k + 1];
                    s0 += e0;
                    s1 += e1;
                    a0 += fabs(e0);
                    a1 += fabs(e1);
                    b0 += e0 * e0;
                    b1 += e1 * e1;
                }
                S[t] = PF_SCALE * (s0 + s1);
                A[t] = PF_SCALE * (a0 + a1);
                B[t] = PF_SCALE * sqrt(b0 + b1);
                if (S[t] > M) M = S[t];
            }
            double sum = 0.0;
            for (int t = 0; t <= p; t++) sum += (P[t] = exp(S[t] - M));
            double dmax0 = 0, dmax1 = 0, dbar0 = 0, dbar1 = 0;
            for (int t = 0; t <= p; t++) {
                P[t] /= sum;
                double sm = 4 * u * (fabs(S[t]) + fabs(M)) + (4 + 1.2 * fabs(S[t] - M)) * u;
                D1[t] = lam * sqrt(n) * u * B[t] + sm;
                D0[t] = 0x1.0p-11 * fabs(S[t]) + lam * 0x1.0p-10 * B[t] + 2 * u * n * A[t] + sm;
                if (D0[t] > dmax0) dmax0 = D0[t];
                if (D1[t] > dmax1) dmax1 = D1[t];
                dbar0 += P[t] * D0[t];
                dbar1 += P[t] * D1[t];
            }
            for (int j = 0; j < CUK_MLA_LORA; j++) o[j] = w[j] = x0[j] = x1[j] = r2[j] = 0.0;
            for (int t = 0; t <= p; t++) {
                const double *c = C + (size_t)t * CUK_MLA_DIM;
                double pt = P[t], p0 = pt * D0[t], p1 = pt * D1[t], pp = pt * pt;
                for (int j = 0; j < CUK_MLA_LORA; j++) {
                    double v = c[j], av = fabs(v);
                    o[j] += pt * v;
                    w[j] += pt * av;
                    x0[j] += p0 * av;
                    x1[j] += p1 * av;
                    r2[j] += pp * v * v;
                }
            }
            double sl = sqrt((double)(p + 1));
            for (int j = 0; j < CUK_MLA_LORA; j++) {
                size_t e = ((size_t)i * H + h) * CUK_MLA_LORA + j;
                double ao = fabs(o[j]), R = sqrt(r2[j]);
                ref[e] = o[j];
                tol1[e] = (1 + 2 * dmax1) * (x1[j] + ao * dbar1) + lam * sl * u * ao +
                          lam * sl * u * R + u * ao + 1e-30;
                tol0[e] = (1 + 2 * dmax0) * (x0[j] + ao * dbar0) + lam * sl * u * ao +
                          0x1.0p-11 * ao + lam * 0x1.0p-10 * R + 2 * u * (p + 1) * w[j] + u * ao +
                          1e-30;
            }
        }
    free(S);
}

/* one call of cuk_mla_prefill on stream 0 into the NaN-poisoned out, with a fresh workspace of
 * cuk_mla_prefill_workspace(max_ctx, H, score_bytes) bytes; result copied to ho */
static void run_prefill(struct cuk_mla_prefill_args a, size_t score_bytes, float *ho)
{
    char err[ERR_LEN] = "";
    size_t wsb = cuk_mla_prefill_workspace(a.max_ctx, a.n_heads, score_bytes);
    CHECK(wsb > score_bytes);
    a.ws = gt_dev(wsb);
    a.ws_bytes = wsb;
    size_t no = (size_t)a.n_q * a.n_heads * CUK_MLA_LORA;
    CUDA_CHECK(cudaMemset(a.out, 0xff, no * 4));
    int rc = cuk_mla_prefill(g_pf, &a, 0, err);
    if (rc) fprintf(stderr, "cuk_mla_prefill: %d %s\n", rc, err);
    CHECK_EQ(rc, 0);
    gt_down(ho, a.out, no * 4);
    cudaFree(a.ws);
}

static void check_prefill(const char *name, const float *got, const double *ref, const double *tol,
                          size_t n)
{
    struct gt_err e = {0, 0, 0, name};
    double num = 0.0, den = 0.0;
    for (size_t j = 0; j < n; j++) {
        gt_check(&e, got[j], ref[j], tol[j], (long)j);
        num += (got[j] - ref[j]) * (got[j] - ref[j]);
        den += ref[j] * ref[j];
    }
    fprintf(stderr, "%-40s rel. Frobenius error %.3g\n", name, sqrt(num / (den > 0 ? den : 1)));
    gt_report(&e);
}

/* n_q queries of one sequence from pos0, H heads, bt-token blocks; limited: also a workspace of
 * 1-3 queries' scores (several chunks) */
static void test_prefill(int H, int pos0, int n_q, int bt, int limited, const char *what)
{
    int L = pos0 + n_q, max_ctx = L + gt_int(0, 100);
    int nblk = (L + bt - 1) / bt, pool = 2 * nblk + 3;
    size_t rows = (size_t)pool * bt, nqe = (size_t)n_q * H * CUK_MLA_DIM,
           noe = (size_t)n_q * H * CUK_MLA_LORA;
    uint16_t *hc = malloc(rows * CUK_MLA_DIM * 2);
    float *hq = malloc(nqe * 4), *ho[2] = {malloc(noe * 4), malloc(noe * 4)}, *hd = malloc(noe * 4);
    double *C = malloc((size_t)L * CUK_MLA_DIM * sizeof(double)), *ref = malloc(noe * 8),
           *tol[2] = {malloc(noe * 8), malloc(noe * 8)};
    int32_t *perm = malloc((size_t)pool * 4), *hdt = malloc((size_t)n_q * nblk * 4),
            *hl = malloc((size_t)n_q * 4);
    CHECK(hc && hq && ho[0] && ho[1] && hd && C && ref && tol[0] && tol[1] && perm && hdt && hl);
    /* a pool of twice the blocks needed, shuffled; rows outside positions 0..L-1 stay NaN */
    memset(hc, 0xff, rows * CUK_MLA_DIM * 2);
    for (int i = 0; i < pool; i++) perm[i] = i;
    for (int i = pool - 1; i > 0; i--) {
        int j = gt_int(0, i), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int t = 0; t < L; t++) {
        uint16_t *row = hc + ((size_t)perm[t / bt] * bt + t % bt) * CUK_MLA_DIM;
        for (int k = 0; k < CUK_MLA_DIM; k++) {
            row[k] = fp_f32_to_bf16((float)(gt_uniform() * 2 - 1));
            C[(size_t)t * CUK_MLA_DIM + k] = fp_bf16_to_f32(row[k]);
        }
    }
    /* scores spread ~ scale * 1.5 * sqrt(576 / 3) = 2.8: softmax neither flat nor one-hot */
    for (size_t i = 0; i < nqe; i++) hq[i] = (float)(gt_normal() * 1.5);
    prefill_ref(H, pos0, n_q, hq, C, ref, tol[0], tol[1]);

    uint16_t *c = gt_up(hc, rows * CUK_MLA_DIM * 2);
    float *q = gt_up(hq, nqe * 4), *o = gt_dev(noe * 4);
    int32_t *t = gt_up(perm, (size_t)nblk * 4);
    struct cuk_mla_prefill_args a = {.n_q = n_q,
                                     .n_heads = H,
                                     .pos0 = pos0,
                                     .max_ctx = max_ctx,
                                     .q = q,
                                     .cache = c,
                                     .block_tokens = bt,
                                     .block_table = t,
                                     .scale = PF_SCALE,
                                     .out = o};
    /* one query's scores: H rows of L floats, each padded to 16 bytes (mla_prefill.cu's stride) */
    size_t one = (size_t)H * 4 * ((L + 3) & ~3);
    char name[160];
    for (int exact = 1; exact >= 0; exact--) {
        a.exact = exact;
        /* scores of every query at max_ctx: one chunk */
        run_prefill(a, (size_t)H * 4 * ((max_ctx + 3) & ~3) * n_q, ho[exact]);
        snprintf(name, sizeof name, "mla_prefill %s %s (H=%d pos0=%d n_q=%d bt=%d)",
                 exact ? "fp32" : "tf32", what, H, pos0, n_q, bt);
        check_prefill(name, ho[exact], ref, tol[exact], noe);
        if (limited) {
            /* a workspace for this context (max_ctx = L) holding k queries' scores */
            struct cuk_mla_prefill_args b = a;
            int k = gt_int(1, 3);
            b.max_ctx = L;
            run_prefill(b, one * k + (size_t)gt_int(0, (int)one - 256), hd); /* mp_up: < k + 1 */
            snprintf(name, sizeof name, "mla_prefill %s %s, %d-query chunks",
                     exact ? "fp32" : "tf32", what, k);
            check_prefill(name, hd, ref, tol[exact], noe);
        }
    }

    /* the same rows through cuk_mla_decode (tensor cores; seq_len = pos + 1, the same table) */
    for (int i = 0; i < n_q; i++) {
        hl[i] = pos0 + i + 1;
        for (int b = 0; b < nblk; b++) hdt[(size_t)i * nblk + b] = perm[b];
    }
    int32_t *dt = gt_up(hdt, (size_t)n_q * nblk * 4), *dl = gt_up(hl, (size_t)n_q * 4);
    size_t dwsz = cuk_mla_decode_workspace_size(n_q, H, L);
    void *dws = dwsz ? gt_dev(dwsz) : NULL;
    struct cuk_mla_decode_args da = {.n_q = n_q,
                                     .n_heads = H,
                                     .q = q,
                                     .q_ld = H * CUK_MLA_DIM,
                                     .cache = c,
                                     .block_tokens = bt,
                                     .block_table = dt,
                                     .bt_ld = nblk,
                                     .seq_len = dl,
                                     .max_seq_len = L,
                                     .scale = PF_SCALE,
                                     .out = o,
                                     .out_ld = H * CUK_MLA_LORA,
                                     .exact = 0,
                                     .workspace = dws,
                                     .workspace_size = dwsz};
    CUDA_CHECK(cudaMemset(o, 0xff, noe * 4));
    CHECK_EQ(cuk_mla_decode(&da, 0), 0);
    gt_down(hd, o, noe * 4);
    /* |prefill - decode| within the prefill bound plus the one test_decode1 holds the decode
     * tensor-core path to (8e-5 + 4e-4 |ref|) */
    for (int exact = 1; exact >= 0; exact--) {
        snprintf(name, sizeof name, "mla_prefill %s vs mla_decode, %s", exact ? "fp32" : "tf32",
                 what);
        struct gt_err e = {0, 0, 0, name};
        for (size_t j = 0; j < noe; j++)
            gt_check(&e, ho[exact][j], hd[j], tol[exact][j] + 8e-5 + 4e-4 * fabs(ref[j]), (long)j);
        gt_report(&e);
    }
    free(hc);
    free(hq);
    free(ho[0]);
    free(ho[1]);
    free(hd);
    free(C);
    free(ref);
    free(tol[0]);
    free(tol[1]);
    free(perm);
    free(hdt);
    free(hl);
    cudaFree(c);
    cudaFree(q);
    cudaFree(o);
    cudaFree(t);
    cudaFree(dt);
    cudaFree(dl);
    cudaFree(dws);
}

/* cuk_mla_prefill(a) must return ERR_INVAL with a message and enqueue nothing: called while
 * stream s is being captured, the captured graph has no node */
static void expect_inval(const struct cuk_mla_prefill_args *a, cudaStream_t s, const char *what)
{
    char err[ERR_LEN] = "";
    cudaGraph_t g = NULL;
    size_t nodes = 1;
    CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
    int rc = cuk_mla_prefill(g_pf, a, s, err);
    CUDA_CHECK(cudaStreamEndCapture(s, &g));
    CUDA_CHECK(cudaGraphGetNodes(g, NULL, &nodes));
    CUDA_CHECK(cudaGraphDestroy(g));
    fprintf(stderr, "  %s: %d (%s), %zu nodes captured\n", what, rc, err, nodes);
    CHECK_EQ(rc, ERR_INVAL);
    CHECK(err[0] != '\0');
    CHECK_EQ(nodes, 0);
}

static void test_prefill_errors(void)
{
    int H = 16, pos0 = 150, n_q = 50, bt = 16, L = pos0 + n_q, nblk = (L + bt - 1) / bt;
    size_t rows = (size_t)nblk * bt, one = (size_t)H * 4 * ((L + 3) & ~3);
    uint16_t *hc = malloc(rows * CUK_MLA_DIM * 2);
    float *hq = malloc((size_t)n_q * H * CUK_MLA_DIM * 4);
    int32_t ht[16];
    CHECK(hc && hq && nblk <= 16);
    for (size_t i = 0; i < rows * CUK_MLA_DIM; i++)
        hc[i] = fp_f32_to_bf16((float)(gt_uniform() * 2 - 1));
    for (size_t i = 0; i < (size_t)n_q * H * CUK_MLA_DIM; i++) hq[i] = (float)gt_normal();
    for (int b = 0; b < nblk; b++) ht[b] = nblk - 1 - b;
    uint16_t *c = gt_up(hc, rows * CUK_MLA_DIM * 2);
    float *q = gt_up(hq, (size_t)n_q * H * CUK_MLA_DIM * 4),
          *o = gt_dev((size_t)n_q * H * CUK_MLA_LORA * 4);
    int32_t *t = gt_up(ht, (size_t)nblk * 4);
    size_t wsb = cuk_mla_prefill_workspace(L, H, one), small = wsb - one / 2;
    CHECK(wsb > one);
    CHECK_EQ(cuk_mla_prefill_workspace(0, H, one), 0);
    CHECK_EQ(cuk_mla_prefill_workspace(L, 0, one), 0);
    void *ws = gt_dev(wsb);
    struct cuk_mla_prefill_args a = {.n_q = n_q,
                                     .n_heads = H,
                                     .pos0 = pos0,
                                     .max_ctx = L,
                                     .q = q,
                                     .cache = c,
                                     .block_tokens = bt,
                                     .block_table = t,
                                     .scale = PF_SCALE,
                                     .out = o,
                                     .exact = 0,
                                     .ws = ws,
                                     .ws_bytes = wsb};
    char err[ERR_LEN] = "";
    /* the workspace that holds exactly one query's scores works (n_q chunks) */
    CHECK_EQ(cuk_mla_prefill(g_pf, &a, 0, err), 0);
    CUDA_CHECK(cudaDeviceSynchronize());
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    struct cuk_mla_prefill_args b = a;
    b.n_q = 0;
    expect_inval(&b, s, "n_q = 0");
    b = a;
    b.ws_bytes = small;
    expect_inval(&b, s, "workspace short of one query's scores");
    b = a;
    b.max_ctx = L - 1;
    expect_inval(&b, s, "pos0 + n_q > max_ctx");
    b = a;
    b.pos0 = -1;
    expect_inval(&b, s, "pos0 < 0");
    b = a;
    b.n_heads = 0;
    expect_inval(&b, s, "n_heads = 0");
    CUDA_CHECK(cudaStreamDestroy(s));
    CUDA_CHECK(cudaDeviceSynchronize());
    fprintf(stderr, "mla_prefill errors: ERR_INVAL, nothing enqueued\n");
    free(hc);
    free(hq);
    cudaFree(c);
    cudaFree(q);
    cudaFree(o);
    cudaFree(t);
    cudaFree(ws);
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
    char err[ERR_LEN] = "";
    CHECK_EQ(cuk_mla_prefill_create(&g_pf, err), 0);
    test_prefill(16, 0, gt_int(1, 300), 64, 1, "from 0");
    test_prefill(128, gt_int(0, 400), gt_int(1, 40), 64, 1, "offset");
    test_prefill(128, 0, gt_int(1, 96), 64, 0, "from 0");
    test_prefill(16, gt_int(1, 300), gt_int(1, 300), 16, 1, "16-token blocks");
    test_prefill(16, gt_int(1900, 2100), gt_int(1, 48), 64, 1, "long context");
    test_prefill_errors();
    cuk_mla_prefill_destroy(g_pf);
    fprintf(stderr, "test_mla: all passed\n");
    return 0;
}
