/* ops_cuda.h - the hybrid CUDA backend's own API beside ops.h: creation (for ops_create) and the
 * statistics and profiling that benchmarks read. Only in builds with CUDA (TANDEM_CUDA).
 *
 * Threads: as ops.h (the thread that uses the ops instance). Ownership: the caller's stats
 * struct is filled in place; nothing is handed out.
 */
#ifndef TANDEM_OPS_CUDA_H
#define TANDEM_OPS_CUDA_H

#include <stddef.h>

#include "engine/model/ops.h"

/* 1 when CUDA device `device` exists and can be used. */
int ops_cuda_usable(int device);

/* GPU ops on p->gpu_device plus an inner CPU backend built from p (routed experts, fallbacks);
 * activation scratch and GEMM plans are sized for p->max_tokens; p->gpu_expert_layers MoE layers
 * (-1: all) get their routed experts on the GPU. Use ops_create, which calls this.
 * Errors: ERR_UNSUPPORTED (no such device), ERR_INVAL, ERR_CUDA, ERR_NOMEM, or the CPU
 * backend's. */
int ops_cuda_create(const struct ops_params *p, struct ops **out, char *err);

/* What model loading converted (ops_params.gpu_keep_ggml = 0; logged by ops_load_done). */
struct ops_cuda_load {
    int fp8;                /* weights re-quantized to FP8: linears, kv_b, GPU experts */
    int bf16;               /* W16A32 linears (router, lm_head) converted to bf16 */
    int cpu;                /* linears left on the inner CPU backend */
    double src_bytes;       /* the converted weights' bytes as stored */
    double dev_bytes;       /* their bytes on the device (e4m3 + scales, bf16) */
    double seconds;         /* host time converting (not the upload) */
    int threads;            /* the load-time pool's threads */
    long long bf16_rounded; /* values the bf16 conversion changed */
};
/* Fills *out (zeros for another backend). */
void ops_cuda_load_stats(struct ops *o, struct ops_cuda_load *out);

enum {
    OPS_PROF_EMBED,
    OPS_PROF_LIN_FP8,
    OPS_PROF_LIN_BF16,
    OPS_PROF_LIN_CPU,
    OPS_PROF_NORM,
    OPS_PROF_ROPE,
    OPS_PROF_HEADMM,
    OPS_PROF_ATTN,
    OPS_PROF_ROUTER,
    OPS_PROF_MOE_IN,
    OPS_PROF_WAIT,
    OPS_PROF_SWIGLU,
    OPS_PROF_ADD,
    OPS_PROF_GATHER,
    OPS_PROF_DOWNLOAD,
    OPS_PROF_N
};
struct ops_cuda_stats {
    long long moe_calls;
    double xfer_s, cpu_experts_s, overlap_gpu_s, idle_s;
    /* with ops_cuda_profile on: main-stream time from the start of each op to the start of the
     * next (its GPU time plus any launch gap after it), by op kind; WAIT = waiting for the CPU
     * experts' result */
    double op_s[OPS_PROF_N];
    long long op_n[OPS_PROF_N];
    /* streamed prefill layers (gpu.prefill_experts; ops_cuda_stream.h): layers streamed, experts
     * and (expert, token) pairs computed on the GPU / left to the CPU pool, expert bytes copied
     * host -> device and the copy stream's time for them (sum over groups: bytes / copy_s is the
     * measured H2D rate); the copy groups (staging-slot fills: more than 2 per layer call means
     * the two slots were reused within a layer); the current rate estimates the split uses; and,
     * not reset, the expert bytes registered (pinned) now and the seconds registration took */
    long long stream_layers, stream_gpu_experts, stream_cpu_experts;
    long long stream_gpu_pairs, stream_cpu_pairs, stream_groups;
    double stream_bytes, stream_copy_s;
    double stream_gbs, stream_cpu_us_pair;
    double stream_reg_bytes, stream_reg_s;
    /* hot experts (gpu.hot_experts; ops_moe_set_hot): expert calls on layers that hold some,
     * routes those computed on the GPU from the resident blocks, the other routes of those calls
     * (CPU pool or streamed); and, not reset, the experts and bytes held now */
    long long hot_calls, hot_gpu_pairs, hot_rest_pairs;
    int hot_experts;
    double hot_bytes;
    /* CUDA graphs (gpu.cuda_graphs; docs/gpu.md): forwards replayed from a graph, captured (and
     * launched), run eagerly in graph mode (the first of a shape, or one that cannot be
     * captured); and, not reset, the graphs held now. Replayed and captured forwards' expert
     * calls add to moe_calls and cpu_experts_s only (no event timings inside a graph).
     * graph_job_restores: expert-job records whose inputs a replay had to put back as its graph
     * captured them (another token count's forward had rewritten them since). */
    long long graph_replays, graph_captures, graph_eager, graph_job_restores;
    int graphs;
    /* gpu.prefill_attention_mb: prompt runs and their tokens attended through the GEMM op */
    long long attn_gemm_runs, attn_gemm_tokens;
};
/* Where the routed-expert layers' time went since the last reset (benchmarks). Per expert call:
 * xfer = hidden states / routes to the host + result back (GPU copy time), cpu_experts = the CPU
 * pool's wall time, overlap_gpu = main-stream GPU time between the inputs' arrival on the host and
 * the join (the shared expert), idle = how long the main stream then waited for the result.
 * All zero for a backend that is not ops_cuda's. Synchronizes. */
void ops_cuda_stats(struct ops *o, struct ops_cuda_stats *out, int reset);
/* Record an event before every op on the main stream (costs ~2 us of host time per op; for
 * benchmarks). No-op on other backends. */
void ops_cuda_profile(struct ops *o, int on);
/* CUDA graphs (ops_params.gpu_graphs) paused (on != 0): forwards that would replay or capture a
 * graph run eagerly with the same kernels and arguments (the step inputs and length-class
 * attention splits of graph mode), the reference a replay must equal bit for bit. No-op on other
 * backends. Call between forwards. */
void ops_cuda_graphs_pause(struct ops *o, int on);
/* "rmsnorm", ...: the name of an OPS_PROF_* kind */
const char *ops_cuda_prof_name(int kind);

#endif
