/* ops_cuda_stream.h - routed experts computed on the GPU from their GGML blocks beside the CPU
 * pool: streamed during long prefills, and hot (device-resident) at every forward (ops_cuda.c's
 * helper; internal to the hybrid backend, not an ops.h API).
 *
 * What: for a forward of at least gpu.prefill_min_tokens tokens, a MoE layer's routed experts
 * that the batch routes to are copied host -> device (from the registered, i.e. pinned, expert
 * weights: made anonymous memory once at load, no staging copy per forward) on a dedicated copy
 * stream into one of
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
 * Hot experts (gpu.hot_experts; docs/gpu.md "Hot experts"): cus_layer_set_hot copies chosen
 * experts of a layer into one device allocation, once; from then on every batch that routes to
 * one of them (decode as well as prefill) takes the same split path: cus_plan puts the hot
 * experts in a group of their own (group 0, ascending id) that needs no copy, the streamed
 * experts (if the batch streams) follow in slot groups, the rest stays on the CPU pool; cus_run
 * computes group 0 straight from the resident blocks. One code path for both: a hot expert is a
 * streamed expert whose copy was made at start-up.
 * Registration: each layer's expert ranges rounded out to pages, minus pages an earlier layer
 * registered (tensors may share a page), in pieces of at most 1 GiB: each piece is replaced by
 * anonymous memory with the same bytes (wt_pages_anonymous: pinning file-backed private pages
 * stalls in some kernels), then cudaHostRegister'ed (ReadOnly | Portable, else Portable). With
 * source 1 (gpu.stream_source = alloc) instead, each layer's experts are copied into one
 * cudaMallocHost block, the driver's own pinned memory, and the caller's views are moved there,
 * so the CPU pool computes from the same copy (registered as one range, freed with the layer). Each
 * layer's time logged (info) and kept for ops_cuda_stats;
 * copies are split at registration boundaries. A failure turns streaming off for the
 * backend with a log line (hot experts need no registration: their one copy is synchronous).
 * Threads: the engine thread (as ops_cuda). Ownership: struct cus owns the copy stream, events,
 * staging slots, workspace and scratch; struct cus_layer its registrations (unregistered by
 * cus_layer_destroy) and its hot experts' device memory; the weight memory is borrowed and must
 * outlive it.
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
    int hot;             /* ops_params.gpu_hot_experts: layers take hot experts */
    int min_tokens;      /* batches of fewer tokens keep the CPU pool */
    size_t buffer_bytes; /* staging: two slots of half of it */
    int split_tokens;    /* 0: rate-based split; N: experts with >= N tokens on the GPU */
    int max_tokens;      /* the backend's largest batch */
    int source;          /* ops_params.gpu_stream_source: 0 register the weights' own pages, 1
                          * a cudaMallocHost copy of each layer's experts (see below) */
};

/* NULL *out (and 0) when o->mode is off and o->hot 0. Staging slots only with o->mode. Errors:
 * ERR_CUDA, ERR_NOMEM. */
int cus_create(const struct cus_opts *o, struct cus **out, char *err);
void cus_destroy(struct cus *s); /* NULL is fine; the device must be idle */

/* The layer's state: sizes the cuk_moe_ggml workspace (first layer; later layers must fit);
 * with streaming on, registers its expert memory. NULL when this layer can neither stream nor
 * hold hot experts (a type without a GPU kernel; with hot experts off also an expert larger than
 * a slot or a failed registration, which turns streaming off for every later layer too); the
 * reason is logged once. With source 1 and streaming set up for the layer, the data pointers of
 * gate/up/down are moved to the layer's pinned copy: create the CPU op from them afterwards, and
 * destroy it before the layer. */
struct cus_layer *cus_layer_create(struct cus *s, int n_expert, struct wt_view *gate,
                                   struct wt_view *up, struct wt_view *down);
void cus_layer_destroy(struct cus *s, struct cus_layer *l); /* after a host synchronization */

/* 1 when a batch of n tokens on layer l (may be NULL) takes the split path: the layer holds hot
 * experts, or the batch streams (at least min_tokens tokens, streaming on and working). */
int cus_wants(const struct cus *s, const struct cus_layer *l, int n);

/* The device bytes expert e of l takes as a hot expert (its three matrices, 256-byte aligned);
 * 0 when it cannot be one (hot experts off, an absent expert). */
size_t cus_expert_bytes(const struct cus *s, const struct cus_layer *l, int e);
/* Make the experts with hot[e] != 0 the layer's hot set (NULL: none), replacing the previous
 * one: one cudaMalloc and synchronous copies from the host weights. The caller has synchronized
 * (nothing in flight reads the old set). ERR_UNSUPPORTED (hot experts off), ERR_NOMEM, ERR_CUDA;
 * on an error the layer has none. */
int cus_layer_set_hot(struct cus *s, struct cus_layer *l, const uint8_t *hot, char *err);

/* Split the layer: hid [n][top_k] (host, kept valid until cus_run) are the routes. Hot experts
 * go to the GPU; when the batch streams, also the experts the split rule picks. Writes cpu_ids
 * (host, [n][top_k]): the routes of experts left on the CPU, -1 elsewhere. Returns the number of
 * GPU experts (hot and streamed); *cpu_pairs the pairs left to the CPU, *hot_pairs those of hot
 * experts. Must be followed by cus_run when it returns > 0. */
int cus_plan(struct cus *s, struct cus_layer *l, const int32_t *hid, int n, int top_k,
             int32_t *cpu_ids, long long *cpu_pairs, long long *hot_pairs);

/* Enqueue the GPU experts of the last plan: out[n][hidden] (device) = their weighted sum
 * (overwritten; the hot group first, then the streamed groups). x, w: device [n][hidden],
 * [n][top_k]. Stream st is the main stream; the staging pinned ids are written here, so the
 * caller must have synchronized st since the previous cus_run (routes come to the host that
 * way). 0 or ERR_* with err. */
int cus_run(struct cus *s, struct cus_layer *l, const float *x, int n, int top_k, const float *w,
            float *out, cudaStream_t st, char *err);

/* After st was synchronized: fold the copy timings of the last run into the rates and stats. */
void cus_collect(struct cus *s, struct ops_cuda_stats *st);
/* A CPU expert job of n tokens: its wall time over its (expert, token) pairs. Only jobs of at
 * least min_tokens tokens (prefill-sized; decode jobs are weight-read bound) and 256 pairs count.
 * The model "CPU time = pairs x seconds per pair" ignores the per-expert weight read, so it
 * underestimates experts with very few tokens: they stay on the CPU slightly too readily. */
void cus_cpu_sample(struct cus *s, int n, double seconds, long long pairs);
/* 1 once streaming was turned off by a failure (registration, memory; logged). Hot experts may
 * still work. */
int cus_failed(const struct cus *s);

#endif
