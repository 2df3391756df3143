/* ref_model.h - a naive float64 reference of the whole DeepSeek-V3 forward, for tests only.
 *
 * Shares no code with the fast path (engine/model, kernels/cpu fast kernels): it decodes every
 * weight to double itself (fpconv.h for FP8/BF16/F16; the scalar GGML dequantizers, which are
 * validated against ggml's own data, for expert blocks), runs attention in the naive
 * (non-absorbed) form with per-head K and V materialized from the cached latents, and does all
 * arithmetic in double. It emulates the contract's quantization points only: FP8 activations per
 * token per 128 channels (power-of-two scales for a scale_fmt "ue8m0" model), GGML activations
 * in the weight type's vec_dot_type for routed experts, and bf16 storage of the latent cache.
 *
 * One sequence at a time, one token per step (the causal forward of a prompt token by token is
 * the same math as a prefill). Threads: single-threaded; not thread-safe.
 */
#ifndef TANDEM_REF_MODEL_H
#define TANDEM_REF_MODEL_H

#include <stdint.h>

struct wt_model;
struct ref_model;

/* Decode all weights (max_ctx: longest sequence). Errors as weights/model loading. */
int ref_create(const struct wt_model *w, int max_ctx, struct ref_model **out, char *err);
void ref_destroy(struct ref_model *r);
/* Exact mode (for comparisons with unquantized implementations such as HF transformers in
 * float32), a bit mask of roundings to leave out: 1 = all activation quantization, 2 = the bf16
 * cache rounding, 4 = the GGML (expert) activation quantization only, 8 = the FP8 activation
 * quantization only (tandem's fp8_w8a16 mode). 7 = none at all. */
void ref_set_exact(struct ref_model *r, int exact);
/* Start a new sequence at position 0. */
void ref_reset(struct ref_model *r);
/* Run the next token of the sequence; logits[vocab] in double. ERR_INVAL when full. */
int ref_step(struct ref_model *r, int32_t token, double *logits, char *err);
int ref_vocab(const struct ref_model *r);
/* Smallest routing margin seen since ref_reset (selection score of the k-th chosen expert minus
 * the best unchosen one, and likewise at the group cut), relative: a near-tie indicator. */
double ref_min_route_margin(const struct ref_model *r);

/* Routing hints: before picking the experts of (layer, pos) the reference asks fn for another
 * implementation's choice (fn returns 0 when it has none). It adopts that choice only when it is
 * a near-tie under its own fp64 scores: every hinted expert it would not have picked has a
 * selection score (and group score) within tol of its own last pick. A hint outside that band is
 * ignored, so a real routing bug still shows as a logits mismatch. */
typedef int (*ref_route_hint_fn)(void *ud, int layer, int pos, int32_t *ids, int top_k);
void ref_set_route_hint(struct ref_model *r, ref_route_hint_fn fn, void *ud, double tol);
/* Activation hints: where the reference's own FP8 activation quantization of a linear's input
 * lies within 1e-5 (relative) of an e4m3 rounding boundary, it asks fn for the other
 * implementation's fp32 input of that linear (which: enum model_lin; fn returns 0 if it has
 * none) and rounds that element the way the contract rounds the other's value. Likewise, for a
 * ue8m0 model (power-of-two scales), a block whose exact scale lies that close to a power of two
 * takes the other's scale when it is the neighbouring power. Elsewhere the reference's own values
 * decide. */
typedef int (*ref_act_hint_fn)(void *ud, int layer, int which, int pos, float *x, int cols);
void ref_set_act_hint(struct ref_model *r, ref_act_hint_fn fn, void *ud);
/* e4m3 near-ties (and ue8m0 scale near-ties) met since ref_reset, and how many of them were
 * decided by a hint. */
int ref_act_ties(const struct ref_model *r);
int ref_act_ties_hinted(const struct ref_model *r);
/* Cache hints: where the reference's own bf16 rounding of a latent cache value (normalized c_kv
 * or rotated k_pe) lies within 1e-5 (relative) of a tie, it takes the bf16 value another
 * implementation stored: fn(ud, layer, pos, row) fills row[kv_lora + rope] (0: none). */
typedef int (*ref_kv_hint_fn)(void *ud, int layer, int pos, uint16_t *row);
void ref_set_kv_hint(struct ref_model *r, ref_kv_hint_fn fn, void *ud);
int ref_kv_ties(const struct ref_model *r);
int ref_kv_ties_hinted(const struct ref_model *r);
/* Resynchronization: at the start of every layer (and before the final norm) the reference asks
 * the activation hint for the other implementation's residual stream (which = MODEL_LIN_RESID);
 * it records the relative L2 difference to its own and, if it is <= gate, continues from the
 * other's values. This bounds the effect of roundings it cannot observe (the routed experts'
 * internal activations) to one layer. gate <= 0 disables it (pure end-to-end). */
void ref_set_resync(struct ref_model *r, double gate);
/* Largest per-layer residual-stream difference seen since ref_reset, and how many resyncs. */
double ref_max_layer_err(const struct ref_model *r);
int ref_resyncs(const struct ref_model *r);
/* Near-ties of the routed experts' internal (down-projection input) int8 roundings, which the
 * other implementation does not expose: the reference resolves each by the other's residual
 * stream after the layer (if an activation hint gives it). Met, and flipped, since ref_reset. */
int ref_moe_ties(const struct ref_model *r);
int ref_moe_ties_flipped(const struct ref_model *r);
/* Near-tie choices adopted, and hints refused (too far from a tie), since ref_reset. */
int ref_hints_taken(const struct ref_model *r);
int ref_hints_refused(const struct ref_model *r);

/* Expert deferral (engine.defer_experts, docs/numerics.md): in every layer but the last, the n
 * routes of smallest weight (equal weights: the later slot) are summed apart and added to the
 * residual stream after the next layer's attention. 0 (the default): none. There the reference
 * resolves their near-ties of the down-projection input and resynchronizes as at a layer start,
 * against the other implementation's stream at that point (activation hint, which =
 * MODEL_LIN_RESID_DEFER). */
void ref_set_defer(struct ref_model *r, int n);
/* Smallest relative weight gap at the deferral cut since ref_reset: a near-tie indicator. Where
 * the gap is below 1e-5 the reference takes the cut the other implementation's residual stream
 * after the layer (activation hint, MODEL_LIN_RESID) shows: its own or the two slots beside the
 * cut swapped. Such near-ties met, and swapped, since ref_reset. */
double ref_min_defer_margin(const struct ref_model *r);
int ref_defer_ties(const struct ref_model *r);
int ref_defer_ties_swapped(const struct ref_model *r);

#endif
