/* router.c - MoE routing on the CPU (see router.h).
 * Threads: no state.
 */
#include "kernels/cpu/router.h"

#include <math.h>
#include <string.h>

/* Index of the largest v[i] among i < n with v[i] > -inf, lowest index on ties; -1 if none. */
static int argmax_f(const float *v, int n)
{
    int best = -1;
    for (int i = 0; i < n; i++)
        if (v[i] > -INFINITY && (best < 0 || v[i] > v[best])) best = i;
    return best;
}

size_t cpuq_route_scratch(const struct cpuq_router *r)
{
    return (size_t)3 * r->n_expert + (size_t)r->n_group;
}

void cpuq_route(const struct cpuq_router *r, const float *logits, const float *bias, int n,
                int32_t *ids, float *w, float *scratch)
{
    const int E = r->n_expert;
    float *s = scratch, *sel = s + E, *tmp = sel + E, *gs = tmp + E;
    for (int t = 0; t < n; t++) {
        const float *lg = logits + (size_t)t * E;
        if (r->softmax) {
            float mx = lg[0], sum = 0.0f;
            for (int e = 1; e < E; e++) mx = lg[e] > mx ? lg[e] : mx;
            for (int e = 0; e < E; e++) sum += (s[e] = expf(lg[e] - mx));
            for (int e = 0; e < E; e++) sel[e] = (s[e] /= sum);
        } else {
            for (int e = 0; e < E; e++) {
                s[e] = 1.0f / (1.0f + expf(-lg[e]));
                sel[e] = bias ? s[e] + bias[e] : s[e];
            }
        }
        if (r->n_group > 1) {
            int gsz = E / r->n_group;
            for (int g = 0; g < r->n_group; g++) {
                const float *v = sel + (size_t)g * gsz;
                if (r->softmax) { /* V2: max score of the group */
                    gs[g] = v[argmax_f(v, gsz)];
                } else { /* V3: sum of the two largest */
                    memcpy(tmp, v, (size_t)gsz * sizeof(float));
                    int a = argmax_f(tmp, gsz);
                    float top = tmp[a];
                    tmp[a] = -INFINITY;
                    int b2 = gsz > 1 ? argmax_f(tmp, gsz) : -1;
                    gs[g] = top + (b2 >= 0 ? tmp[b2] : 0.0f);
                }
            }
            /* keep the topk_group best groups (ties: lower index); mask the rest with -inf */
            for (int g = 0; g < r->n_group; g++) tmp[g] = 0.0f;
            for (int k = 0; k < r->topk_group; k++) {
                int g = argmax_f(gs, r->n_group);
                if (g < 0) break;
                tmp[g] = 1.0f;
                gs[g] = -INFINITY;
            }
            for (int g = 0; g < r->n_group; g++)
                if (tmp[g] == 0.0f)
                    for (int e = 0; e < gsz; e++) sel[(size_t)g * gsz + e] = -INFINITY;
        }
        int32_t *it = ids + (size_t)t * r->top_k;
        float *wt = w + (size_t)t * r->top_k, sum = 0.0f;
        for (int k = 0; k < r->top_k; k++) {
            int e = argmax_f(sel, E);
            if (e < 0) e = 0; /* cannot happen with top_k <= kept experts */
            sel[e] = -INFINITY;
            it[k] = e;
            wt[k] = s[e];
            sum += s[e];
        }
        for (int k = 0; k < r->top_k; k++) {
            if (r->norm_topk_prob) wt[k] /= sum;
            wt[k] *= r->scale;
        }
    }
}
