/* test_mla_cpu.c - the CPU MLA attention kernel (kernels/cpu/mla.h) and its latent cache store on
 * random batch shapes.
 *
 * For random configurations (1..17 heads, so one or several head groups and odd row counts;
 * kv_lora and rope widths that are and are not multiples of the kernel's 16/64-wide tiles;
 * block sizes of 5 or 16 over a shuffled paged cache of bf16 or fp32 rows; contexts up to 700
 * keys, several online-softmax chunks) a batch mixes prefill chunks of several sequences and
 * single decode tokens:
 *   0. cpuq_mla_store writes each token's row (bf16-rounded or exact) at its sequence's slot for
 *      its position and touches no other row;
 *   1. every output row is within 2e-5 (relative L2) of a float64 softmax over the same keys;
 *   2. every token computed alone (a batch of one) gives bitwise the same row as in the batch;
 *   3. one thread and two threads give bitwise the same output.
 * With two threads a small batch over long keys takes the kernel's split mode (one work item per
 * 256-key segment, then a combine pass); one thread never does: 2 and 3 compare the two paths.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "kernels/cpu/fpconv.h"
#include "kernels/cpu/mla.h"
#include "kernels/cpu/wpool.h"
#include "tests/check.h"

#define MAX_SEQ 4
#define MAX_CTX 700

static unsigned long long rng;

static double urand(void) /* [0, 1) */
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static int irand(int n) { return (int)(urand() * n); }

struct cfg {
    int n_heads, kv_lora, rope, block_tokens, f32;
};

struct ctx {
    struct wpool *p1, *p2; /* one thread, two threads */
    struct cpuq_mla_scratch *s1, *s2;
};

/* element i of the cache as fp32 */
static float cache_at(const void *cache, int f32, size_t i)
{
    return f32 ? ((const float *)cache)[i] : fp_bf16_to_f32(((const uint16_t *)cache)[i]);
}

static void run_case(const struct cfg *cf, struct ctx *cx)
{
    const int H = cf->n_heads, L = cf->kv_lora, D = L + cf->rope, BT = cf->block_tokens;
    const int blocks_per_seq = (MAX_CTX + BT - 1) / BT, n_blocks = MAX_SEQ * blocks_per_seq;
    const size_t n_elem = (size_t)n_blocks * BT * D, esz = cf->f32 ? 4 : 2;
    void *cache = malloc(n_elem * esz), *before = malloc(n_elem * esz);
    int32_t *perm = malloc((size_t)n_blocks * sizeof(int32_t));
    CHECK(cache && before && perm);
    for (int i = 0; i < n_blocks; i++) perm[i] = i;
    for (int i = n_blocks - 1; i > 0; i--) { /* shuffled block tables */
        int k = irand(i + 1), t = perm[i];
        perm[i] = perm[k];
        perm[k] = t;
    }
    for (size_t i = 0; i < n_elem; i++) {
        float v = (float)(urand() * 2 - 1);
        if (cf->f32) ((float *)cache)[i] = v;
        else ((uint16_t *)cache)[i] = fp_f32_to_bf16(v);
    }
    const struct cpuq_mla_cache kc = {
        .data = cache, .f32 = cf->f32, .kv_dim = D, .block_tokens = BT};
    const int32_t *tables[MAX_SEQ];
    for (int s = 0; s < MAX_SEQ; s++) tables[s] = perm + (size_t)s * blocks_per_seq;

    /* the batch: per sequence either a prefill chunk [start, end) or one decode token */
    int32_t pos[MAX_SEQ * MAX_CTX], seq[MAX_SEQ * MAX_CTX];
    int n = 0, n_seqs = 1 + irand(MAX_SEQ);
    for (int s = 0; s < n_seqs; s++) {
        int end = 1 + irand(MAX_CTX), len = urand() < 0.4 ? 1 : 1 + irand(end < 70 ? end : 70);
        for (int p = end - len; p < end; p++) {
            pos[n] = p;
            seq[n] = s;
            n++;
        }
    }
    const struct cpuq_mla_batch b = {.n = n, .pos = pos, .seq = seq, .blocks = tables};

    /* 0: the store, checked against a copy of the cache before it */
    float *x = calloc((size_t)n * D, sizeof(float));
    CHECK(x);
    for (size_t i = 0; i < (size_t)n * D; i++) x[i] = (float)(urand() * 4 - 2);
    memcpy(before, cache, n_elem * esz);
    cpuq_mla_store(&kc, &b, x);
    char *written = calloc((size_t)n_blocks * BT, 1);
    CHECK(written);
    for (int t = 0; t < n; t++) {
        size_t row = (size_t)tables[seq[t]][pos[t] / BT] * BT + pos[t] % BT;
        written[row] = 1;
        for (int i = 0; i < D; i++) {
            float want = cf->f32 ? x[(size_t)t * D + i]
                                 : fp_bf16_to_f32(fp_f32_to_bf16(x[(size_t)t * D + i]));
            CHECK(cache_at(cache, cf->f32, row * D + i) == want);
        }
    }
    for (size_t r = 0; r < (size_t)n_blocks * BT; r++)
        if (!written[r])
            CHECK(memcmp((char *)cache + r * D * esz, (char *)before + r * D * esz, D * esz) == 0);
    free(written);
    free(x);

    float *q = malloc((size_t)n * H * D * sizeof(float));
    float *out1 = malloc((size_t)n * H * L * sizeof(float));
    float *out2 = malloc((size_t)n * H * L * sizeof(float));
    float *one = malloc((size_t)H * L * sizeof(float));
    double *w = malloc(MAX_CTX * sizeof(double)), *ref = malloc((size_t)L * sizeof(double));
    CHECK(q && out1 && out2 && one && w && ref);
    for (size_t i = 0; i < (size_t)n * H * D; i++) q[i] = (float)(urand() * 2 - 1);
    float scale = (float)(0.5 / (1 + irand(4)));
    char err[ERR_LEN];

    CHECK_EQ(cpuq_mla_attn(cx->p1, &kc, &b, H, L, scale, q, out1, cx->s1, err), 0);
    CHECK_EQ(cpuq_mla_attn(cx->p2, &kc, &b, H, L, scale, q, out2, cx->s2, err), 0);
    CHECK(memcmp(out1, out2, (size_t)n * H * L * sizeof(float)) == 0); /* 3 */

    double worst = 0;
    for (int t = 0; t < n; t++) {
        const int32_t *blocks = tables[seq[t]];
        for (int h = 0; h < H; h++) {
            const float *qh = q + ((size_t)t * H + h) * D;
            double mx = -1e300, sum = 0, num = 0, den = 0;
            for (int p = 0; p <= pos[t]; p++) {
                size_t k = ((size_t)blocks[p / BT] * BT + p % BT) * D;
                double d = 0;
                for (int i = 0; i < D; i++) d += (double)qh[i] * cache_at(cache, cf->f32, k + i);
                w[p] = scale * d;
                mx = w[p] > mx ? w[p] : mx;
            }
            for (int i = 0; i < L; i++) ref[i] = 0;
            for (int p = 0; p <= pos[t]; p++) {
                size_t k = ((size_t)blocks[p / BT] * BT + p % BT) * D;
                double e = exp(w[p] - mx);
                sum += e;
                for (int i = 0; i < L; i++) ref[i] += e * cache_at(cache, cf->f32, k + i);
            }
            const float *got = out1 + ((size_t)t * H + h) * L;
            for (int i = 0; i < L; i++) {
                double r = ref[i] / sum;
                num += (got[i] - r) * (got[i] - r);
                den += r * r;
            }
            double rel = sqrt(num / (den > 1e-30 ? den : 1e-30));
            worst = rel > worst ? rel : worst;
            if (!(rel <= 2e-5))
                fprintf(stderr, "token %d (pos %d) head %d: rel err %.3g\n", t, pos[t], h, rel);
            CHECK(rel <= 2e-5); /* 1 */
        }
        const struct cpuq_mla_batch b1 = {.n = 1, .pos = pos + t, .seq = seq + t, .blocks = tables};
        CHECK_EQ(
            cpuq_mla_attn(cx->p2, &kc, &b1, H, L, scale, q + (size_t)t * H * D, one, cx->s2, err),
            0);
        CHECK(memcmp(one, out1 + (size_t)t * H * L, (size_t)H * L * sizeof(float)) == 0); /* 2 */
    }
    fprintf(stderr,
            "heads %d, kv_lora %d, rope %d, block %d, %s cache: %d tokens of %d "
            "sequences, max rel err %.3g\n",
            H, L, cf->rope, BT, cf->f32 ? "f32" : "bf16", n, n_seqs, worst);
    free(q);
    free(out1);
    free(out2);
    free(one);
    free(w);
    free(ref);
    free(cache);
    free(before);
    free(perm);
}

int main(void)
{
    rng = check_seed();
    char err[ERR_LEN];
    struct ctx cx = {0};
    CHECK_EQ(wpool_create(1, 0, 0, &cx.p1, err), 0);
    CHECK_EQ(wpool_create(2, 0, 0, &cx.p2, err), 0);
    CHECK_EQ(cpuq_mla_scratch_create(&cx.s1, err), 0);
    CHECK_EQ(cpuq_mla_scratch_create(&cx.s2, err), 0);
    const struct cfg fixed[] = {
        {2, 512, 64, 16, 0}, /* tiny */
        {9, 512, 64, 16, 0}, /* two head groups, odd rows */
        {3, 40, 7, 5, 0},    /* tails: L % 64, D % 16 */
        {4, 512, 64, 16, 1}, /* fp32 cache */
    };
    for (int i = 0; i < 4; i++) run_case(&fixed[i], &cx);
    for (int i = 0; i < 6; i++) {
        struct cfg cf = {1 + irand(17), 8 + irand(140), 1 + irand(70), urand() < 0.5 ? 5 : 16,
                         urand() < 0.3};
        run_case(&cf, &cx);
    }
    cpuq_mla_scratch_destroy(cx.s1);
    cpuq_mla_scratch_destroy(cx.s2);
    wpool_destroy(cx.p1);
    wpool_destroy(cx.p2);
    return 0;
}
