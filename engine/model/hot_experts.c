/* hot_experts.c - routing counts and hot experts wired into a model's backend (see
 * hot_experts.h).
 */
#include "engine/model/hot_experts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"
#include "engine/model/model.h"
#include "engine/model/ops.h"

static int check_shape(const struct model *m, const struct expert_counts *c, char *err)
{
    const struct wt_hparams *hp = model_hparams(m);
    const struct ec_shape *s = ec_shape(c);
    int M = 0;
    while (model_moe(m, M, NULL)) M++;
    if (s->moe_layers != M || s->n_expert != hp->n_routed || s->n_layers != hp->n_layers)
        return err_set(err, ERR_INVAL,
                       "hot experts: the counts are of %d MoE layers x %d experts, the model has "
                       "%d x %d",
                       s->moe_layers, s->n_expert, M, hp->n_routed);
    return 0;
}

int hot_experts_attach(struct model *m, struct ops *o, struct expert_counts *c, char *err)
{
    int rc = check_shape(m, c, err);
    if (rc) return rc;
    struct ops_moe *x;
    for (int i = 0; (x = model_moe(m, i, NULL)); i++) ops_moe_set_counts(o, x, c, i);
    return 0;
}

int hot_experts_place(struct model *m, struct ops *o, const struct expert_counts *c, double budget,
                      struct hot_report *r, char *err)
{
    memset(r, 0, sizeof *r);
    r->budget = budget;
    int rc = check_shape(m, c, err);
    if (rc) return rc;
    const int M = ec_shape(c)->moe_layers, E = ec_shape(c)->n_expert;
    r->experts = M * E;
    size_t *bytes = malloc((size_t)M * E * sizeof *bytes);
    uint8_t *hot = malloc((size_t)M * E);
    if (!bytes || !hot) {
        free(bytes);
        free(hot);
        return err_set(err, ERR_NOMEM, "hot experts: out of memory");
    }
    for (int i = 0; i < M; i++) {
        struct ops_moe *x = model_moe(m, i, NULL);
        for (int e = 0; e < E; e++) bytes[(size_t)i * E + e] = ops_moe_hot_bytes(o, x, e);
    }
    int n = ec_choose_hot(c, bytes, budget, hot, &r->ch);
    if (n < 0) rc = err_set(err, n, "hot experts: out of memory");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* every layer that can hold some gets its set (an empty one clears an earlier set) */
    for (int i = 0; !rc && r->ch.candidates > 0 && i < M; i++) {
        struct ops_moe *x = model_moe(m, i, NULL);
        int any = 0;
        for (int e = 0; e < E; e++) any |= bytes[(size_t)i * E + e] != 0;
        if (any) rc = ops_moe_set_hot(o, x, hot + (size_t)i * E, err);
    }
    if (rc && r->ch.candidates > 0) /* none half-placed: every layer back to none */
        for (int i = 0; i < M; i++) (void)ops_moe_set_hot(o, model_moe(m, i, NULL), NULL, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    r->seconds = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    free(bytes);
    free(hot);
    return rc;
}

void hot_experts_describe(const struct hot_report *r, char *buf, size_t n)
{
    const struct ec_choice *ch = &r->ch;
    if (!ch->candidates) {
        snprintf(buf, n, "none: the backend keeps no routed expert in device memory");
        return;
    }
    int k = snprintf(buf, n,
                     "%d of %d experts (%.2f GiB of %.2f GiB offered; %.1f%% of the routed "
                     "experts) in %d MoE layers, ",
                     ch->chosen, r->experts, ch->bytes / (1 << 30), r->budget / (1 << 30),
                     r->experts ? 100.0 * ch->chosen / r->experts : 0.0, ch->layers);
    if (k < 0 || (size_t)k >= n) return;
    if (ch->from_counts)
        snprintf(buf + k, n - (size_t)k,
                 "the most routed per byte: %.1f%% of the %llu recorded routes; copied in %.2f s",
                 ch->total ? 100.0 * (double)ch->routes / (double)ch->total : 0.0,
                 (unsigned long long)ch->total, r->seconds);
    else
        snprintf(buf + k, n - (size_t)k,
                 "no routes recorded yet: expert 0 of every layer, then expert 1, ...; copied in "
                 "%.2f s",
                 r->seconds);
}
