/* ops_cuda_stream.h - streaming routed experts to the GPU during long prefills (ops_cuda.c's
 * helper; internal to the hybrid backend, not an ops.h API).
 *
 * What: for a forward of at least gpu.prefill_min_tokens tokens, a MoE layer's routed experts
 * that the batch routes to are copied host -> device (from the registered, i.e. pinned, expert
 * weights: the GGUF mapping itself, no CPU staging copy) on a dedicated copy stream into one of
 * two staging slots and computed there with cuk_moe_ggml (raw GGML blocks, bf16 tensor-core
 * GEMMs), while the CPU pool computes the experts with few tokens at the same time. docs/gpu.md
 * ("Streaming routed experts during prefill") has the design; in short:
 *   - split (cus_plan): experts sorted by their token count, largest first, go to the GPU while
 *     the link time of the experts moved so far (bytes / measured H2D GB/s) stays below the CPU
 *     time of the experts still left on the CPU (tokens x measured CPU seconds per (expert,
 *     token)); gpu.prefill_split_tokens = N replaces the rule by "N tokens or more: GPU";
 *   - pipeline (cus_run): the GPU experts in ascending id form groups that fit one slot; the copy
 *     stream copies group g+1 into the other slot while the main stream computes group g (events
 *     both ways, no host synchronization); each group's result is added into the output;
 *   - rates: exponential moving averages (weight 0.3) of the copy GB/s (per group, events on the
 *     copy stream, folded in at the next host synchronization) and of the CPU pool's seconds per
 *     (expert, token) pair; conservative defaults until measured (16 GB/s, 20 us).
 * Registration: cudaHostRegister (ReadOnly | Portable, else Portable) of each layer's expert
 * ranges rounded out to pages, minus pages an earlier layer registered (tensors may share a
 * page); copies are split at registration boundaries. A failure turns streaming off for the
 * backend with a log line.
 * Threads: the engine thread (as ops_cuda). Ownership: struct cus owns the copy stream, events,
 * staging slots, workspace and scratch; struct cus_layer its registrations (unregistered by
 * cus_layer_destroy; the weight memory is borrowed and must outlive it).
 */
#ifndef TANDEM_OPS_CUDA_STREAM_H
#define TANDEM_OPS_CUDA_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "engine/model/ops_cuda.h"
#include "engine/weights/weights.h"

struct cus;
struct cus_layer;

struct cus_opts {
    int mode;            /* ops_params.gpu_prefill_experts: 0 off, 1 on, 2 auto */
    int min_tokens;      /* batches of fewer tokens keep the CPU pool */
    size_t buffer_bytes; /* staging: two slots of half of it */
    int split_tokens;    /* 0: rate-based split; N: experts with >= N tokens on the GPU */
    int max_tokens;      /* the backend's largest batch */
};

/* NULL *out (and 0) when o->mode is off. Errors: ERR_CUDA, ERR_NOMEM. */
int cus_create(const struct cus_opts *o, struct cus **out, char *err);
void cus_destroy(struct cus *s); /* NULL is fine; the device must be idle */

/* The layer's streaming state: registers its expert memory, sizes the staging slots and the
 * cuk_moe_ggml workspace (first layer; later layers must fit). NULL when this layer cannot stream
 * (a type without a GPU kernel, an expert larger than a slot, registration failed: then streaming
 * is off for every later layer too); the reason is logged once. */
struct cus_layer *cus_layer_create(struct cus *s, int n_expert, const struct wt_view *gate,
                                   const struct wt_view *up, const struct wt_view *down);
void cus_layer_destroy(struct cus *s, struct cus_layer *l); /* after a host synchronization */

/* 1 when a batch of n tokens on layer l (may be NULL) streams. */
int cus_wants(const struct cus *s, const struct cus_layer *l, int n);

/* Split the layer: hid [n][top_k] (host, kept valid until cus_run) are the routes. Writes cpu_ids
 * (host, [n][top_k]): the routes of experts left on the CPU, -1 elsewhere. Returns the number of
 * GPU experts; *cpu_pairs the pairs left to the CPU. Must be followed by cus_run when it returns >
 * 0. */
int cus_plan(struct cus *s, struct cus_layer *l, const int32_t *hid, int n, int top_k,
             int32_t *cpu_ids, long long *cpu_pairs);

/* Enqueue the GPU experts of the last plan: out[n][hidden] (device) = their weighted sum
 * (overwritten). x, w: device [n][hidden], [n][top_k]. Stream st is the main stream; the staging
 * pinned ids are written here, so the caller must have synchronized st since the previous
 * cus_run (routes come to the host that way). 0 or ERR_* with err. */
int cus_run(struct cus *s, struct cus_layer *l, const float *x, int n, int top_k, const float *w,
            float *out, cudaStream_t st, char *err);

/* After st was synchronized: fold the copy timings of the last run into the rates and stats. */
void cus_collect(struct cus *s, struct ops_cuda_stats *st);
/* A CPU expert job of n tokens: its wall time over its (expert, token) pairs. Only jobs of at
 * least min_tokens tokens (prefill-sized; decode jobs are weight-read bound) and 256 pairs count.
 * The model "CPU time = pairs x seconds per pair" ignores the per-expert weight read, so it
 * underestimates experts with very few tokens: they stay on the CPU slightly too readily. */
void cus_cpu_sample(struct cus *s, int n, double seconds, long long pairs);
/* 1 once streaming was turned off by a failure (registration, memory; logged). */
int cus_failed(const struct cus *s);

#endif
