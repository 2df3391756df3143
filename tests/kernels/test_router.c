/* test_router.c - MoE routing on the CPU (kernels/cpu/router.h) against a sort-based reference.
 *
 * For random router shapes (8..256 experts, 1..8 groups with topk_group of them kept, top_k up to
 * what the kept groups hold, sigmoid with or without a correction bias, or softmax; with and
 * without norm_topk_prob) and fresh random logits, every token's experts must equal the
 * reference's exactly and its weights to 1e-6 (relative). The reference computes the same fp32
 * scores but selects by sorting (value descending, index ascending) instead of repeated argmax:
 * groups by their score (sum of the two largest biased scores, or the largest score for
 * softmax), then experts of the kept groups. Half the cases draw logits from a few values so that
 * ties are common and the lower-index rule is exercised.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/router.h"
#include "tests/check.h"

static unsigned long long rng;

static double urand(void) /* [0, 1) */
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static int irand(int n) { return (int)(urand() * n); }

struct kv {
    float v;
    int i;
};

static int by_value_desc(const void *a, const void *b)
{
    const struct kv *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->i - y->i;
}

/* one token's routing, the reference way */
static void ref_route(const struct cpuq_router *r, const float *lg, const float *bias, int32_t *ids,
                      float *w)
{
    const int E = r->n_expert, G = r->n_group, gsz = E / G;
    float *s = malloc((size_t)E * sizeof(float)), *b = malloc((size_t)E * sizeof(float));
    struct kv *kv = malloc((size_t)E * sizeof *kv);
    int *keep = calloc((size_t)G, sizeof(int));
    CHECK(s && b && kv && keep);
    if (r->softmax) {
        float mx = lg[0], sum = 0.0f;
        for (int e = 1; e < E; e++) mx = lg[e] > mx ? lg[e] : mx;
        for (int e = 0; e < E; e++) sum += (s[e] = expf(lg[e] - mx));
        for (int e = 0; e < E; e++) b[e] = (s[e] /= sum);
    } else {
        for (int e = 0; e < E; e++) {
            s[e] = 1.0f / (1.0f + expf(-lg[e]));
            b[e] = bias ? s[e] + bias[e] : s[e];
        }
    }
    if (G > 1) {
        struct kv gs[64];
        for (int g = 0; g < G; g++) {
            for (int e = 0; e < gsz; e++) kv[e] = (struct kv){b[g * gsz + e], e};
            qsort(kv, (size_t)gsz, sizeof *kv, by_value_desc);
            float score = r->softmax ? kv[0].v : kv[0].v + (gsz > 1 ? kv[1].v : 0.0f);
            gs[g] = (struct kv){score, g};
        }
        qsort(gs, (size_t)G, sizeof gs[0], by_value_desc);
        for (int k = 0; k < r->topk_group; k++) keep[gs[k].i] = 1;
    } else {
        keep[0] = 1;
    }
    int n = 0;
    for (int e = 0; e < E; e++)
        if (keep[e / gsz]) kv[n++] = (struct kv){b[e], e};
    qsort(kv, (size_t)n, sizeof *kv, by_value_desc);
    float sum = 0.0f;
    for (int k = 0; k < r->top_k; k++) {
        ids[k] = kv[k].i;
        w[k] = s[kv[k].i];
        sum += w[k];
    }
    for (int k = 0; k < r->top_k; k++) {
        if (r->norm_topk_prob) w[k] /= sum;
        w[k] *= r->scale;
    }
    free(s);
    free(b);
    free(kv);
    free(keep);
}

static void run_case(int c)
{
    static const int groups[] = {1, 2, 4, 8};
    struct cpuq_router r = {0};
    r.n_group = groups[irand(4)];
    r.n_expert = r.n_group * (1 + irand(256 / r.n_group));
    if (r.n_expert < 8) r.n_expert = 8 * r.n_group;
    r.topk_group = 1 + irand(r.n_group);
    int kept = r.topk_group * (r.n_expert / r.n_group);
    r.top_k = 1 + irand(kept < 8 ? kept : 8);
    r.softmax = urand() < 0.3;
    r.norm_topk_prob = urand() < 0.5;
    r.scale = urand() < 0.5 ? 1.0f : (float)(1 + urand() * 3);
    const int n = 1 + irand(40), E = r.n_expert, ties = c % 2;
    float *lg = malloc((size_t)n * E * sizeof(float)), *bias = malloc((size_t)E * sizeof(float));
    int32_t *ids = malloc((size_t)n * r.top_k * sizeof(int32_t)), rid[64];
    float *w = malloc((size_t)n * r.top_k * sizeof(float)), rw[64];
    float *scratch = malloc(cpuq_route_scratch(&r) * sizeof(float));
    CHECK(lg && bias && ids && w && scratch);
    for (size_t i = 0; i < (size_t)n * E; i++)
        lg[i] = ties ? (float)(irand(5) - 2) : (float)(urand() * 8 - 4);
    for (int e = 0; e < E; e++) bias[e] = ties ? (float)irand(2) * 0.25f : (float)(urand() * 0.2);
    const float *bp = !r.softmax && urand() < 0.7 ? bias : NULL;
    cpuq_route(&r, lg, bp, n, ids, w, scratch);
    for (int t = 0; t < n; t++) {
        ref_route(&r, lg + (size_t)t * E, bp, rid, rw);
        for (int k = 0; k < r.top_k; k++) {
            int32_t got = ids[(size_t)t * r.top_k + k];
            float gw = w[(size_t)t * r.top_k + k];
            if (got != rid[k] || !(fabsf(gw - rw[k]) <= 1e-6f * fabsf(rw[k])))
                fprintf(stderr,
                        "case %d token %d k %d: expert %d weight %g, reference %d %g "
                        "(E %d, groups %d/%d, top_k %d, %s)\n",
                        c, t, k, got, gw, rid[k], rw[k], E, r.topk_group, r.n_group, r.top_k,
                        r.softmax ? "softmax" : "sigmoid");
            CHECK_EQ(got, rid[k]);
            CHECK(fabsf(gw - rw[k]) <= 1e-6f * fabsf(rw[k]));
        }
    }
    free(lg);
    free(bias);
    free(ids);
    free(w);
    free(scratch);
}

int main(void)
{
    rng = check_seed();
    for (int c = 0; c < 200; c++) run_case(c);
    fprintf(stderr, "200 router cases match the reference\n");
    return 0;
}
