/* model.h - the DeepSeek-V3 forward pass, described once, run on a batch of tokens.
 *
 * The scheduler (engine/sched) decides which tokens run in a step; the model computes them on a
 * backend (engine/model/ops.h) that the caller creates and hands to model_create. The batch and
 * the KV cache it reads and writes are described in batch.h: a flat list of tokens from one or
 * more sequences, each written to its sequence's paged cache at its position in every layer and
 * attending to positions 0..pos of its sequence (entries of earlier steps are read from the
 * cache; entries of earlier tokens of the same batch are visible too). Logits are produced only
 * for the tokens listed in logits_idx.
 *
 * Threads: a model is used by one thread at a time (the engine thread), the one that uses its
 * backend. Ownership: the model borrows the wt_model and the ops instance (both must outlive it;
 * the caller destroys the ops after model_destroy) and owns its weights' backend handles and its
 * work buffers; the KV storage belongs to the caller (struct model_kv).
 *
 * Errors: model_create names the first missing or misshapen tensor (ERR_FORMAT) or an
 * unsupported weight type (ERR_UNSUPPORTED); model_forward rejects a malformed batch before
 * computing anything (ERR_INVAL; a position at or beyond max_position_embeddings:
 * ERR_CTX_OVERFLOW) and reports a failure inside an op (ERR_NOMEM for scratch growth, or a
 * kernel's error) after the forward.
 */
#ifndef TANDEM_MODEL_H
#define TANDEM_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "engine/model/batch.h"

struct wt_model;
struct wt_hparams;
struct ops;
struct model;

/* Load the weights of w onto the backend o and allocate work buffers for batches of up to
 * max_batch_tokens tokens (o must take batches that large: ops_params.max_tokens). Sets o's FP8
 * activation scale format from w's hparams (ops_set_fp8_ue8m0: one model's format per backend). */
int model_create(const struct wt_model *w, struct ops *o, int max_batch_tokens, struct model **out,
                 char *err);
void model_destroy(struct model *m);
int model_vocab(const struct model *m);
int model_kv_dim(const struct model *m);
int model_n_layers(const struct model *m);

/* Test/debug hook: after the router of every MoE layer, fn gets the experts chosen for each
 * token of the batch (host memory, [n_tokens][top_k], in batch order). Lets the float64 reference
 * follow the fast path's choice at genuine routing near-ties (tests/engine/test_model.c).
 * NULL disables it (the default). Engine thread only. */
typedef void (*model_route_fn)(void *ud, int layer, int n_tokens, const int32_t *ids, int top_k);
void model_set_route_hook(struct model *m, model_route_fn fn, void *ud);

/* Test/debug hook: before each linear of the forward, fn gets its fp32 input ([n_tokens][cols],
 * host memory, batch order). `which` is an enum model_lin; layer is -1 for lm_head, whose input
 * has one row per logits row (after the forward's last linear). Lets the
 * float64 reference take the fast path's rounding direction where its own FP8 activation
 * quantization sits within rounding noise of a tie. NULL disables it (the default). */
enum model_lin {
    MODEL_LIN_Q_A,
    MODEL_LIN_Q_B,
    MODEL_LIN_Q,
    MODEL_LIN_KV_A,
    MODEL_LIN_O,
    MODEL_LIN_GATE,
    MODEL_LIN_UP,
    MODEL_LIN_DOWN, /* dense FFN, or the shared experts */
    MODEL_LIN_ROUTER,
    MODEL_LIN_OUT,
    MODEL_LIN_RESID,       /* not a linear: the residual stream entering layer `layer`
                            * (layer == n_layers: before the final norm) */
    MODEL_LIN_RESID_DEFER, /* not a linear (expert deferral only): the residual stream of layer
                            * `layer` after its attention and the deferred part of the layer
                            * before */
    MODEL_LIN_COUNT
};
typedef void (*model_lin_fn)(void *ud, int layer, int which, int n_tokens, int cols,
                             const float *x);
void model_set_lin_hook(struct model *m, model_lin_fn fn, void *ud);

/* The routed experts of the i-th MoE layer (in layer order; *layer, if given, gets its layer
 * index), NULL past the last: for wiring per-layer backend state (routing counts, hot experts;
 * engine/model/hot_experts.h). The handle stays the model's. */
struct ops_moe;
struct ops_moe *model_moe(const struct model *m, int i, int *layer);

/* Expert deferral (engine.defer_experts; docs/numerics.md "Expert deferral"): from the next
 * forward on, in every layer but the last, each token's n routes of smallest routing weight are
 * computed apart and their weighted sum is added to the residual stream after the next layer's
 * attention instead of after their own layer (so a backend can run them beside that attention).
 * 0 (the default) is the exact forward of before. Allocates one work buffer the first time n > 0.
 * Errors: ERR_INVAL (n outside 0..top_k, or a layered pass running), ERR_NOMEM. */
int model_set_defer(struct model *m, int n, char *err);

/* The hyperparameters the model was built with, and the largest batch it accepts. */
const struct wt_hparams *model_hparams(const struct model *m);
int model_max_batch_tokens(const struct model *m);
/* Run the batch; write n_logits x vocab fp32 logits. Errors: ERR_INVAL for a malformed batch
 * (token id out of range, position beyond a block table, too many tokens). */
int model_forward(struct model *m, const struct model_kv *kv, const struct model_batch *b,
                  float *logits, char *err);

/* The forward of one batch in slices of layers, so that other batches can run between them (a
 * long prefill spread over decode steps: engine/sched/scheduler.c "Layered prefill").
 * model_pass_begin checks b as model_forward does and embeds it into the pass's own residual
 * buffer (max_batch_tokens x hidden floats of backend memory, allocated on first use);
 * model_pass_run runs the next n_layers (>= 1) layers and sets *left to how many remain;
 * model_pass_finish, once none remain, writes the logits as model_forward would and ends the
 * pass; model_pass_abort drops it (the KV rows it wrote are garbage to the caller). The result
 * equals model_forward's bit for bit. Until the pass ends, b, its arrays and kv stay unchanged,
 * and batches run between slices (model_forward) involve none of its sequences. One pass at a
 * time; an error ends the pass. */
int model_pass_begin(struct model *m, const struct model_kv *kv, const struct model_batch *b,
                     char *err);
int model_pass_run(struct model *m, int n_layers, int *left, char *err);
int model_pass_finish(struct model *m, float *logits, char *err);
void model_pass_abort(struct model *m);

#endif
