/* gpu_plan.h - the GPU (and pinned host) memory plan of a model, from its hyperparameters alone.
 *
 * gpu_plan_compute() counts, byte for byte, what engine/model/ops_cuda.c and model.c allocate on
 * the device for a config: weights (per part), the device KV cache, the activation buffers of
 * max_batch_tokens, and workspaces; where a size depends on a run-time choice (cuBLASLt's operand
 * order, the longest context seen) it takes the upper bound. Nothing is loaded: `tandem inspect`
 * prints the plan of a bare config.json, and the engine can size its KV cache from it before
 * touching a weight. The weight formats assumed are those of the DeepSeek FP8 checkpoint (every
 * projection e4m3 with 128x128 fp32 block scales, router / embeddings / lm_head bf16, norms and
 * the correction bias fp32 once uploaded) unless gpu_plan_params says otherwise; a GGUF's
 * GGML-typed projections count at their FP8 size when ops_cuda re-quantizes them
 * (gpu.requant_ggml, the default), its router and lm_head as bf16.
 *
 * Pools (device unless said):
 *   weights      uploaded once at model_create (breakdown in struct gpu_plan_weights)
 *   kv           the device mirror of the engine's paged latent cache (ops_cuda kv_mirror):
 *                n_layers x kv_tokens x (kv_lora + rope) bf16; only where attention runs on the
 *                GPU (kv_lora 512, rope 64, heads % 16 == 0), else the cache stays on the host
 *   activations  model.c's work buffers for max_batch_tokens (q~ / o~ for one attention pass,
 *                the dense FFN's gate / up for one FFN pass; with layered_prefill a layered
 *                pass's own residual stream; with defer_experts the deferred experts' part,
 *                once more for a layered pass) + ops_cuda's FP8 linear scratch
 *   workspace    cuBLASLt, the small-M FP8 kernel, MLA split-K, block tables, small inputs
 *   rounding     cudaMalloc granularity: every allocation above 1 MiB takes whole 2 MiB pages
 *   stream       gpu.prefill_experts: two staging slots (gpu.stream_buffer_mb), the routed-expert
 *                op's workspace (kernels/cuda/moe_ggml.h), two [max_batch_tokens][hidden] fp32
 *                buffers and every group's routes; the pinned source is the registered expert
 *                memory itself (not counted: it is the weights)
 *   hot          gpu.hot_experts: routed experts kept in device memory as their GGML blocks
 *                (params.hot_bytes, or with auto what params.device_bytes leaves after every other
 *                pool and a 512 MiB margin, in whole experts of stream_expert_type), plus, when
 *                the stream pool is not counted, the routed-expert op's workspace and its two
 *                buffers (the same ones the stream pool holds)
 *   runtime      CUDA context, cuBLAS handle, small allocations: params.runtime_reserve, default
 *                600 MiB from a measurement (nvidia-smi peak minus the counted pools on an H100;
 *                docs/gpu-memory.md), not counted from code
 *   pinned_host  cudaHostAlloc'd staging (expert in/out slots, input ring); host memory
 *
 * Ownership and threads: pure functions over caller-owned structs; no allocation, no globals;
 * callable from any thread.
 */
#ifndef TANDEM_GPU_PLAN_H
#define TANDEM_GPU_PLAN_H

#include "engine/weights/weights.h"

#include <stddef.h>
#include <stdint.h>

enum gpu_placement { GPU_PLACE_CPU = 0, GPU_PLACE_HYBRID = 1, GPU_PLACE_GPU = 2 };

struct gpu_plan_params {
    enum gpu_placement placement; /* gpu = routed experts of every MoE layer on the GPU too */
    int gpu_expert_layers;        /* hybrid: experts of the first N MoE layers on the GPU */
    int expert_type;              /* enum qtype of GPU-resident routed experts (F8_E4M3: with
                                     re-laid block scales; a GGML type: its row bytes) */
    int linear_type;              /* non-expert projections as stored: QTYPE_F8_E4M3 (V3/R1
                                     checkpoint), QTYPE_BF16 (V2-Lite, Moonlight), or a GGML /
                                     F16 / F32 type (a GGUF): see requant_ggml */
    int requant_ggml;             /* gpu.requant_ggml: GGML / F16 / F32 projections count as
                                     FP8 (ops_cuda re-quantizes them at load; k % 128 != 0:
                                     host); 0: they stay on the host (host_linears) */
    int kvb_type;                 /* absorbed W_UK/W_UV (kv_b) on the device: QTYPE_F8_E4M3
                                     (ops_cuda for an FP8 checkpoint, and for a GGML / F16 / F32
                                     one with requant_ggml: e4m3 + scales, one layer expanded to
                                     fp32 at a time) or QTYPE_F32 (other types) */
    int embed_on_gpu;             /* 0: rows gathered on the host, uploaded per forward
                                     (ops_cuda); 1: a bf16 table on the device */
    int64_t kv_tokens;            /* tokens of the device KV cache (engine: kv_blocks x
                                     kv_block_tokens; the sum over all sequences) */
    int64_t max_seq_tokens;       /* longest single sequence (MLA split-K workspace, block
                                     tables); 0: kv_tokens */
    int max_batch_tokens;         /* engine.max_batch_tokens */
    int kv_block_tokens;          /* engine.kv_block_tokens */
    int sms;                      /* SMs of the device (132 on H100/H200 SXM) */
    int fp8_gemm_cublaslt;        /* gpu.fp8_gemm = cublaslt: cuBLASLt plans for > 16 rows (and
                                     their swapped-operand buffer); 0 = exact (own kernel) */
    double runtime_reserve;       /* bytes for the CUDA context and cuBLAS (measured) */
    int prefill_experts;          /* gpu.prefill_experts on/auto: the streaming pool counts */
    int stream_buffer_mb;         /* gpu.stream_buffer_mb (two staging slots) */
    int prefill_attention_mb;     /* gpu.prefill_attention_mb: GEMM attention for long prompt
                                     runs (score scratch MiB; 0 off) */
    int stream_expert_type;       /* enum qtype of the streamed (host) experts: slot capacity */
    int layered_prefill;          /* engine.prefill_step_ratio > 1 with
                                     engine.layered_prefill_tokens > 0: a layered pass's
                                     residual stream (max_batch_tokens x hidden fp32) counts */
    int defer_experts;            /* engine.defer_experts > 0: the deferred experts' buffer
                                     (max_batch_tokens x hidden fp32; a layered pass's own too) */
    int hot_mode;                 /* gpu.hot_experts: 0 off, 1 auto (fill device_bytes), 2 the
                                     hot_bytes given */
    double hot_bytes;             /* hot_mode 2: the hot experts' bytes (the engine: what it
                                     placed) */
    int64_t hot_count;            /* hot_mode 2: how many experts that is (0: hot_bytes / one
                                     expert of stream_expert_type) */
    double device_bytes;          /* hot_mode 1: the device's memory (0: unknown, hot 0) */
};

/* Weight bytes on the device, by part (0 where the part stays on the host). */
struct gpu_plan_weights {
    double attention; /* q_a, q_b (or q), kv_a, o: data + re-laid scales */
    double kv_b;      /* absorbed W_UK / W_UV halves, in params.kvb_type */
    double norms;     /* every RMSNorm vector (fp32), incl. the final norm */
    double dense_ffn; /* dense layers' gate/up/down */
    double shared_experts;
    double router;       /* bf16 gate weight + fp32 correction bias */
    double embed;        /* bf16 table, or 0 on the host */
    double lm_head;      /* bf16 */
    double gpu_experts;  /* routed experts placed on the GPU */
    double host_linears; /* host bytes of non-expert linears the GPU cannot take
                            (k % 128 != 0 for FP8, GGML types with requant_ggml off):
                            they run on the CPU backend */
};

struct gpu_plan {
    struct gpu_plan_weights w;
    /* pools, bytes */
    double weights, kv, activations, workspace;
    double rounding; /* cudaMalloc granularity over every allocation above */
    double runtime;  /* params.runtime_reserve */
    double stream;   /* expert streaming (ops_cuda_stream.c): staging slots, the
                        cuk_moe_ggml workspace, group output / GPU-part
                        accumulator, per-group routes; counted in total only with
                        params.prefill_experts (stream_size has it either way) */
    double hot;      /* hot experts (gpu.hot_experts): hot_experts_bytes + hot_ws */
    double total;    /* device: all of the above */
    double pinned_host;
    /* details */
    double act_model; /* model.c work buffers */
    double act_fp8;   /* FP8 activation scratch: e4m3 x, scales, padded y */
    double ws_cublaslt, ws_gemv, ws_gemm_swap, ws_mla, ws_block_tables, ws_small;
    double ws_mla_prefill;     /* gpu.prefill_attention_mb: cuBLAS, fp32 rows of the longest
                                  sequence, score scratch */
    double kv_bytes_per_token; /* all layers */
    int64_t kv_tokens;
    int kv_on_gpu; /* 0: attention and the cache stay on the host */
    int moe_layers, gpu_expert_layers;
    int64_t max_k, max_n; /* widest FP8 linear on the device (scratch sizing) */
    double stream_size, stream_slots, stream_ws; /* the streaming pool's size and parts */
    int stream_group;           /* experts of stream_expert_type per staging slot */
    double hot_experts_bytes;   /* the hot experts themselves */
    double hot_ws;              /* the expert op's workspace and buffers (0 when the stream pool
                                   counts them) */
    double hot_ws_own;          /* the expert op's workspace and buffers on their own (a
                                   device of hot experts alone, gpu_plan_devices) */
    double hot_ws_own_rounding; /* their cudaMalloc rounding */
    double expert_bytes;        /* one routed expert of stream_expert_type on the device */
    int64_t hot_experts;        /* whole experts hot_experts_bytes holds */
    int64_t routed_experts;     /* moe_layers x n_routed */
};

/* Defaults: hybrid, FP8 linears (GGML ones re-quantized), kv_b FP8, embeddings on the host (what
 * ops_cuda does), FP8 GPU experts, 32768 KV tokens, max_batch_tokens 2048, 16-token blocks, 132
 * SMs, exact FP8 GEMM (no cuBLASLt plans), 600 MiB runtime, expert streaming off (400 MiB staging,
 * Q4_K experts), hot experts off. */
void gpu_plan_defaults(struct gpu_plan_params *p);

/* linear_type and kvb_type from a loaded model's tensors (layer 0's kv_a and kv_b), as ops_cuda
 * will place them given p->requant_ggml (set that first): a BF16 or GGUF checkpoint's
 * projections, its kv_b as FP8 (FP8, or re-quantized) or fp32. Tensors that are absent leave
 * the defaults. */
void gpu_plan_types_from(struct gpu_plan_params *p, const struct wt_model *m);

/* Compute the plan. Errors: ERR_INVAL (bad params or hparams; err says which). */
int gpu_plan_compute(const struct wt_hparams *hp, const struct gpu_plan_params *p,
                     struct gpu_plan *out, char *err);

/* The most KV tokens (a multiple of kv_block_tokens) whose plan fits in budget bytes with p's
 * other settings (p->kv_tokens ignored; max_seq_tokens 0 follows the KV size); 0 when nothing
 * fits or the KV stays on the host (then check gpu_plan_compute's total). */
int64_t gpu_plan_kv_tokens_fit(const struct wt_hparams *hp, const struct gpu_plan_params *p,
                               double budget);

/* The plan per device of gpu.devices (docs/gpu.md, "Several GPUs"). The first device is the
 * primary one and takes the whole plan of gpu_plan_compute (pl0, computed by the caller); every
 * other device holds only hot experts: with hot_mode 2 the given hot_bytes each (in whole experts),
 * with hot_mode 1 what device_bytes leaves after its own pools and the 512 MiB margin, in whole
 * experts; and, with hot_mode on, the routed-expert op's workspace and its two
 * [max_batch_tokens][hidden] fp32 buffers (the hidden states copied in, the outputs copied back),
 * plus runtime_reserve (the CUDA context; NCCL's own buffers are not counted). The devices take hot
 * experts in list order until every routed expert is hot (no expert is hot twice). With hot_mode 0
 * such a device holds nothing but its context. */
struct gpu_plan_dev {
    int device;  /* CUDA ordinal */
    int primary; /* 1: the first device (pl0) */
    double hot_experts_bytes;
    int64_t hot_experts; /* whole experts */
    double hot_ws;       /* the expert op's workspace and buffers */
    double rounding, runtime;
    double total;
};
/* ERR_INVAL when n < 1 or above 16. */
int gpu_plan_devices(const struct gpu_plan *pl0, const struct gpu_plan_params *p, const int *ids,
                     int n, struct gpu_plan_dev *out, char *err);
/* One header line and one line per device (each starting with indent). */
int gpu_plan_devices_format(const struct gpu_plan_dev *d, int n, const struct gpu_plan *pl0,
                            const char *indent, char *buf, size_t len);
/* Log it at info level (tag "gpu"). */
void gpu_plan_devices_log(const struct gpu_plan_dev *d, int n, const struct gpu_plan *pl0);

/* "cpu" | "hybrid" | "gpu" -> placement; -1 if unknown. */
int gpu_placement_parse(const char *s);
const char *gpu_placement_name(enum gpu_placement p);

/* The plan as text, one line per pool and weight part, sizes in GiB (each line starts with
 * indent; lines end in '\n'). Returns the length snprintf would have written. */
int gpu_plan_format(const struct gpu_plan *pl, const struct gpu_plan_params *p, const char *indent,
                    char *buf, size_t n);

/* Log the plan at info level (tag "gpu"), one line per line of gpu_plan_format. */
void gpu_plan_log(const struct gpu_plan *pl, const struct gpu_plan_params *p);

#endif
