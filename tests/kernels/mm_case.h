/* mm_case.h - one random multi-token case for the mul_mat kernel tests (test_mul_mat_tiles.c,
 * emu/emu_check.c): NR weight rows and NT token rows of K values (weights scaled 1..5 by position,
 * every 300th activation 30x larger), quantized by the scalar table; per (token, row) the scalar
 * vec_dot as the reference and the sum of |w * a| behind it (the scale of an fp32 tolerance).
 * Header-only; frand returns uniform values in [-1, 1) and is drawn weights first, then tokens. */
#ifndef TANDEM_TESTS_MM_CASE_H
#define TANDEM_TESTS_MM_CASE_H

#include <math.h>
#include <stdlib.h>

#include "kernels/cpu/cpuq.h"

struct mm_case {
    size_t wrb, arb; /* weight / activation row bytes */
    char *wq, *aq;   /* NR quantized weight rows, NT quantized token rows */
    float *yr, *mag; /* [NT][NR]: the reference dots, the sums of |terms| */
};

static inline void mm_case_free(struct mm_case *c)
{
    free(c->wq), free(c->aq), free(c->yr), free(c->mag);
}

/* 0, or -1 when out of memory (c freed) */
static inline int mm_case_make(struct mm_case *c, const struct cpuq_ops *ref, int type, int K,
                               int NR, int NT, float (*frand)(void))
{
    const struct cpuq_type_ops *rt = &ref->type[type];
    const int vt = rt->vec_dot_type;
    c->wrb = cpuq_row_size(type, K);
    c->arb = cpuq_row_size(vt, K);
    float *wf = malloc(sizeof(float) * K * NR), *x = malloc(sizeof(float) * K * NT);
    float *wd = malloc(sizeof(float) * K * NR), *ad = malloc(sizeof(float) * K * NT);
    c->wq = malloc(c->wrb * NR);
    c->aq = malloc(c->arb * NT);
    c->yr = malloc(sizeof(float) * NR * NT);
    c->mag = malloc(sizeof(float) * NR * NT);
    int ok = wf && x && wd && ad && c->wq && c->aq && c->yr && c->mag;
    if (ok) {
        for (int i = 0; i < NR * K; i++) wf[i] = frand() * (1 + (i % 5));
        for (int i = 0; i < NT * K; i++) x[i] = frand() * (i % 300 == 7 ? 30.0f : 1.0f);
        for (int r = 0; r < NR; r++) rt->from_float(wf + (size_t)r * K, c->wq + r * c->wrb, K);
        for (int t = 0; t < NT; t++)
            ref->type[vt].from_float(x + (size_t)t * K, c->aq + t * c->arb, K);
        for (int r = 0; r < NR; r++) rt->to_float(c->wq + r * c->wrb, wd + (size_t)r * K, K);
        for (int t = 0; t < NT; t++)
            ref->type[vt].to_float(c->aq + t * c->arb, ad + (size_t)t * K, K);
        for (int t = 0; t < NT; t++)
            for (int r = 0; r < NR; r++) {
                double m = 0;
                for (int k = 0; k < K; k++)
                    m += fabs((double)wd[(size_t)r * K + k] * ad[(size_t)t * K + k]);
                c->mag[t * NR + r] = (float)m;
                rt->vec_dot(K, &c->yr[t * NR + r], c->wq + r * c->wrb, c->aq + t * c->arb);
            }
    }
    free(wf), free(x), free(wd), free(ad);
    if (!ok) mm_case_free(c);
    return ok ? 0 : -1;
}

#endif
