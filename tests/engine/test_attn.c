/* test_attn.c - the CPU backend's MLA attention (ops_mla_attn, engine/model/ops_cpu.c) on random
 * batch shapes.
 *
 * For random configurations (1..17 heads, so one or several head groups and odd row counts;
 * kv_lora and rope widths that are and are not multiples of the kernel's 16/64-wide tiles;
 * block sizes of 5 or 16 over a shuffled paged cache; contexts up to 700 keys, several online-
 * softmax chunks) a batch mixes prefill chunks of several sequences and single decode tokens:
 *   1. every output row is within 2e-5 (relative L2) of a float64 softmax over the same bf16 keys;
 *   2. every token computed alone (a batch of one) gives bitwise the same row as in the batch;
 *   3. one thread and two threads give bitwise the same output.
 * With two threads a small batch over long keys takes the kernel's split mode (one work item per
 * 256-key segment, then a combine pass); one thread never does: 2 and 3 compare the two paths.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "engine/model/ops.h"
#include "kernels/cpu/fpconv.h"
#include "tests/check.h"

#define MAX_SEQ 4
#define MAX_CTX 700

static unsigned long long rng;

static double urand(void)               /* [0, 1) */
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static int irand(int n) { return (int)(urand() * n); }

struct cfg {
    int n_heads, kv_lora, rope, block_tokens;
};

static void run_case(const struct cfg *cf, struct ops *o1, struct ops *o2)
{
    const int H = cf->n_heads, L = cf->kv_lora, D = L + cf->rope, BT = cf->block_tokens;
    const int blocks_per_seq = (MAX_CTX + BT - 1) / BT, n_blocks = MAX_SEQ * blocks_per_seq;
    uint16_t *cache = malloc((size_t)n_blocks * BT * D * sizeof(uint16_t));
    int32_t *perm = malloc((size_t)n_blocks * sizeof(int32_t));
    CHECK(cache && perm);
    for (int i = 0; i < n_blocks; i++) perm[i] = i;
    for (int i = n_blocks - 1; i > 0; i--) {            /* shuffled block tables */
        int k = irand(i + 1), t = perm[i];
        perm[i] = perm[k];
        perm[k] = t;
    }
    for (size_t i = 0; i < (size_t)n_blocks * BT * D; i++)
        cache[i] = fp_f32_to_bf16((float)(urand() * 2 - 1));
    void *layers[1] = {cache};
    struct model_kv kv = {.n_layers = 1, .n_blocks = n_blocks, .block_tokens = BT, .kv_dim = D,
                          .layer_data = layers};
    struct model_seq seqs[MAX_SEQ];
    for (int s = 0; s < MAX_SEQ; s++)
        seqs[s] = (struct model_seq){perm + (size_t)s * blocks_per_seq, blocks_per_seq};

    /* the batch: per sequence either a prefill chunk [start, end) or one decode token */
    int32_t pos[MAX_SEQ * MAX_CTX], seq[MAX_SEQ * MAX_CTX], tok[MAX_SEQ * MAX_CTX];
    int n = 0, n_seqs = 1 + irand(MAX_SEQ);
    for (int s = 0; s < n_seqs; s++) {
        int end = 1 + irand(MAX_CTX), len = urand() < 0.4 ? 1 : 1 + irand(end < 70 ? end : 70);
        for (int p = end - len; p < end; p++) {
            pos[n] = p;
            seq[n] = s;
            tok[n++] = 0;
        }
    }
    struct model_batch b = {.n_tokens = n, .tokens = tok, .pos = pos, .seq = seq,
                            .n_seqs = n_seqs, .seqs = seqs};
    float *q = malloc((size_t)n * H * D * sizeof(float));
    float *out1 = malloc((size_t)n * H * L * sizeof(float));
    float *out2 = malloc((size_t)n * H * L * sizeof(float));
    float *one = malloc((size_t)H * L * sizeof(float));
    double *w = malloc(MAX_CTX * sizeof(double)), *ref = malloc((size_t)L * sizeof(double));
    CHECK(q && out1 && out2 && one && w && ref);
    for (size_t i = 0; i < (size_t)n * H * D; i++) q[i] = (float)(urand() * 2 - 1);
    float scale = (float)(0.5 / (1 + irand(4)));
    char err[ERR_LEN];

    ops_mla_attn(o1, &kv, 0, &b, H, L, scale, q, out1);
    CHECK_EQ(ops_error(o1, err), 0);
    ops_mla_attn(o2, &kv, 0, &b, H, L, scale, q, out2);
    CHECK_EQ(ops_error(o2, err), 0);
    CHECK(memcmp(out1, out2, (size_t)n * H * L * sizeof(float)) == 0);        /* 3 */

    double worst = 0;
    for (int t = 0; t < n; t++) {
        const struct model_seq *s = &seqs[seq[t]];
        for (int h = 0; h < H; h++) {
            const float *qh = q + ((size_t)t * H + h) * D;
            double mx = -1e300, sum = 0, num = 0, den = 0;
            for (int p = 0; p <= pos[t]; p++) {
                const uint16_t *k = cache + ((size_t)s->blocks[p / BT] * BT + p % BT) * D;
                double d = 0;
                for (int i = 0; i < D; i++) d += (double)qh[i] * fp_bf16_to_f32(k[i]);
                w[p] = scale * d;
                mx = w[p] > mx ? w[p] : mx;
            }
            for (int i = 0; i < L; i++) ref[i] = 0;
            for (int p = 0; p <= pos[t]; p++) {
                const uint16_t *k = cache + ((size_t)s->blocks[p / BT] * BT + p % BT) * D;
                double e = exp(w[p] - mx);
                sum += e;
                for (int i = 0; i < L; i++) ref[i] += e * fp_bf16_to_f32(k[i]);
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
            CHECK(rel <= 2e-5);                                                /* 1 */
        }
        struct model_batch b1 = {.n_tokens = 1, .tokens = tok, .pos = pos + t, .seq = seq + t,
                                 .n_seqs = n_seqs, .seqs = seqs};
        ops_mla_attn(o2, &kv, 0, &b1, H, L, scale, q + (size_t)t * H * D, one);
        CHECK_EQ(ops_error(o2, err), 0);
        CHECK(memcmp(one, out1 + (size_t)t * H * L, (size_t)H * L * sizeof(float)) == 0); /* 2 */
    }
    fprintf(stderr, "heads %d, kv_lora %d, rope %d, block %d: %d tokens of %d sequences, "
            "max rel err %.3g\n", H, L, cf->rope, BT, n, n_seqs, worst);
    free(q);
    free(out1);
    free(out2);
    free(one);
    free(w);
    free(ref);
    free(cache);
    free(perm);
}

int main(void)
{
    rng = check_seed();
    char err[ERR_LEN];
    struct ops *o1 = NULL, *o2 = NULL;
    struct ops_params p1 = {.n_threads = 1}, p2 = {.n_threads = 2};
    CHECK_EQ(ops_cpu_create(&p1, &o1, err), 0);
    CHECK_EQ(ops_cpu_create(&p2, &o2, err), 0);
    const struct cfg fixed[] = {
        {2, 512, 64, 16},                               /* tiny */
        {9, 512, 64, 16},                               /* two head groups, odd rows */
        {3, 40, 7, 5},                                  /* tails: L % 64, D % 16 */
    };
    for (int i = 0; i < 3; i++) run_case(&fixed[i], o1, o2);
    for (int i = 0; i < 6; i++) {
        struct cfg cf = {1 + irand(17), 8 + irand(140), 1 + irand(70), urand() < 0.5 ? 5 : 16};
        run_case(&cf, o1, o2);
    }
    ops_destroy(o1);
    ops_destroy(o2);
    return 0;
}
