/* hot_experts.h - routing counts and hot experts wired into a model's backend.
 *
 * What: hot_experts_attach makes every MoE layer of a model add its routes to a row of a
 * struct expert_counts (ops_moe_set_counts); hot_experts_place asks the backend what each
 * (layer, expert) would take in device memory (ops_moe_hot_bytes), chooses the hot set within a
 * byte budget from the counts (ec_choose_hot: most routes per byte first; without counts expert
 * 0 of every layer, then expert 1, ...) and hands each layer its part (ops_moe_set_hot).
 * docs/gpu.md ("Hot experts") has the design; the engine (engine.c) decides the budget from
 * gpu.hot_experts and the device memory plan.
 * Threads: the thread that owns the model and its backend (the engine's, before serving).
 * Ownership: the counts are borrowed and must outlive the model's use of them (the backend
 * keeps pointers to them until the model is destroyed).
 */
#ifndef TANDEM_HOT_EXPERTS_H
#define TANDEM_HOT_EXPERTS_H

#include <stddef.h>

#include "engine/model/expert_counts.h"

struct model;
struct ops;

/* c's shape must be the model's (ERR_INVAL otherwise). */
int hot_experts_attach(struct model *m, struct ops *o, struct expert_counts *c, char *err);

struct hot_report {
    struct ec_choice ch; /* what was chosen (and placed, when the call succeeded) */
    int experts;         /* routed experts of the model (MoE layers x n_expert) */
    double budget;       /* bytes offered */
    double seconds;      /* the copies to the device */
};

/* Choose and place the hot set within budget bytes. When the backend cannot hold any (a host
 * backend, or every expert 0 bytes) it places nothing and returns 0 with r->ch.candidates = 0.
 * On a failure every layer is left without hot experts and the error returned (ERR_NOMEM,
 * ERR_CUDA, ...). */
int hot_experts_place(struct model *m, struct ops *o, const struct expert_counts *c, double budget,
                      struct hot_report *r, char *err);

/* One line for the log: "N of M experts (x GiB, p% of the routed experts) in L layers, covering
 * q% of the recorded routes" or how the uniform order chose them. */
void hot_experts_describe(const struct hot_report *r, char *buf, size_t n);

#endif
