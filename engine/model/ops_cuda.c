/* ops_cuda.c - the hybrid GPU+CPU backend of ops.h: kernels/cuda on one device, routed experts
 * (and whatever the GPU kernels cannot run) on an inner CPU backend (ops_cpu.c).
 *
 * What: an adapter from the ops interface to kernels/cuda (and cuBLAS). Buffers from ops_alloc
 * are device memory (cudaMalloc at model_create; none in steady state except the growth noted
 * below). Weights: FP8 linears are uploaded with their scales re-laid to the grid cuBLASLt wants
 * (ld = round_up(k/128, 4)); BF16 linears (router, lm_head) as bf16; the embedding table stays
 * in host memory (ops_table_create). Weights of other types (GGML blocks, F16, F32: a GGUF
 * model) are converted at load unless gpu.requant_ggml = off (ops_params.gpu_keep_ggml):
 * projections and kv_b re-quantized to FP8 e4m3 with 128x128 block scales
 * (kernels/cpu/requant_fp8.h, on a load-time worker pool), W16A32 linears (ops_lin_create_w16:
 * router, lm_head) to bf16. What stays on the host and runs on the CPU backend (download x, CPU
 * op, upload y): FP8 or convertible weights whose k is not a multiple of 128 (bf16: of 8), and
 * with gpu.requant_ggml = off every weight of another type.
 *   - FP8 linear: x is quantized per token per 128 channels (cuk_rmsnorm_quant without a norm;
 *     ue8m0 scales after ops_set_fp8_ue8m0, passed on to the inner CPU backend too), then
 *     gemm_fp8_linear. Exact mode (gpu.fp8_gemm = exact, the default): the own kernel for
 * every row count, > 16 rows in 16-row chunks, fp32-exact block sums. cublaslt mode: a scratch of
 *     `bucket(n)` rows (n <= 16: n; then powers of two up to round_up(max, 4)) and cuBLASLt for
 *     > 16 rows; a padded result lands in a scratch and its n rows are copied out. Plans for
 *     every bucket are built in lin_create (start-up). The quantization is skipped when the
 *     FP8 scratch holds x's already (pq: written by ops_rmsnorm_lin / ops_swiglu_gu in the
 *     norm's / SwiGLU's kernel, or by the previous linear on the same x).
 *   - fused linears (ops_lin_create_cat: q_a|kv_a, gate|up): the FP8 weights concatenated at
 *     load, one GEMM (rows summed in the fused shape's split-K grouping: not bitwise two calls).
 *   - BF16 linear: cuk_gemv_bf16 in chunks of 16 rows (W16A32, as the CPU backend).
 *   - head_matmul: FP8 per-head weights (kv_b) stay e4m3 on the device; up to 16 tokens
 *     cuk_head_matmul_fp8 reads them directly, else they are expanded per layer into one fp32
 *     scratch for cuBLAS SGEMM strided-batched over heads (fp32, TF32 off).
 *   - RMSNorm and RoPE: bit-identical to the CPU backend's (cuk_rmsnorm_f32: the CPU's sum
 *     order; RoPE: the host's cosf/sinf table, no FMA), because e4m3 and bf16 roundings
 *     downstream turn 1-ulp differences into visible ones. RoPE amplitude must be 1; it runs out
 *     of place, two jobs (q_pe, k_pe) in one launch with ops_rope2.
 *   - MLA: on the GPU when the latent is DeepSeek-V3's 512 + 64 and heads % 16 == 0: the KV cache
 *     then lives in a device mirror of the caller's struct model_kv (allocated at the first
 *     forward that uses a given model_kv; the host copy is NOT written). Other shapes (the small
 *     synth models) run attention on the CPU backend over the caller's host cache.
 *   - routed experts (hybrid): on the main stream the normalized hidden states, ids and weights
 *     are copied to pinned host buffers; a side stream waits for that copy, runs the CPU expert
 *     pool in a host-function node (cudaLaunchHostFunc, no CUDA calls inside) and copies the
 *     result back into y. The main stream meanwhile runs the shared expert; the first op that
 *     touches y (ops_add) makes the main stream wait for the side stream's event. The engine
 *     thread does not wait: job records come from a ring (cu_moe).
 *   - expert deferral (ops_moe_defer, engine.defer_experts): the deferred part is a second host
 *     function on the side stream after the immediate part's, on the same pinned inputs; its job
 *     (dpend) is joined only by ops touching its output, CPU work and synchronizations, so the
 *     next layer's attention runs on the GPU meanwhile (cu_moe_defer).
 *   - routed experts on the GPU (gpu.placement = gpu, gpu.expert_layers): FP8 linears made at
 *     load, run per active expert (moe_gpu).
 *   - routed experts streamed to the GPU for long prefills (gpu.prefill_experts, off by default)
 *     and hot experts kept in device memory (gpu.hot_experts, off by default): moe_split with
 *     ops_cuda_stream.c (hot experts from their resident copy, streamed ones copied per expert
 *     group on a copy stream into two staging slots, cuk_moe_ggml on the main stream, the other
 *     experts on the CPU pool at the same time; docs/gpu.md).
 *   - CUDA graphs (gpu.cuda_graphs, ops_graph_begin/end; docs/gpu.md): forwards of 1..N tokens
 *     read their per-step inputs from one device block copied before the layers, size attention
 *     for a length class and take one expert-job record per expert call; per (tokens, class) the
 *     first runs eagerly, the second is captured (the CPU experts as host nodes) and launched,
 *     later ones replay. The records are shared by all token counts, so each graph keeps its
 *     records' inputs as captured and puts them back before a replay (struct job_in). Whatever
 *     needs the host mid-forward keeps its shape eager.
 *   - routing counts (ops_moe_set_counts): added where the routes are on the host anyway: by the
 *     expert job's host function (routes copied from the device for the CPU pool) or, on the
 *     split and GPU-expert paths, by the engine thread after their synchronization.
 * Numerics: as ops.h, except the tensor-core MLA (two-part bf16 q and P: ~5e-6 relative), the
 * GPU experts (re-quantized to FP8) and the fp32 summation orders of the GEMMs;
 * tests/gpu/test_engine_gpu.c checks the whole forward against the CPU backend.
 * Threads: the engine thread; the CUDA host-function thread runs the CPU experts while the engine
 * thread only enqueues GPU work (every CPU fallback op first waits for the side stream).
 * Ownership: as ops.h; the instance owns its streams, device copies of the weights, scratch,
 * pinned staging and the inner CPU backend, all freed by ops_destroy. Invariants that would
 * corrupt memory if broken (staging ring offsets, upload buffer bounds, expert job records) are
 * ASSERTed.
 * Errors: the sticky ops error (ops__fail); kernel launch errors at the call, asynchronous ones at
 * the next download (every forward ends with one).
 */
#include "engine/model/ops_internal.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "engine/model/ops_cuda.h"
#include "engine/model/expert_counts.h"
#include "engine/model/ops_cuda_stream.h"
#include "kernels/cpu/cpuq.h"
#include "kernels/cpu/fp8.h"
#include "kernels/cpu/fpconv.h"
#include "kernels/cpu/requant_fp8.h"
#include "kernels/cpu/wpool.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gemm_fp8.h"
#include "kernels/cuda/gemv_bf16.h"
#include "kernels/cuda/head_matmul.h"
#include "kernels/cuda/mla.h"
#include "kernels/cuda/mla_prefill.h"
#include "kernels/cuda/norm.h"
#include "kernels/cuda/rope.h"
#include "kernels/cuda/router.h"

#define N_HOST 6 /* pinned host scratch: 0-1 CPU fallbacks, 2-4 expert jobs, 5 deferred output */
#define N_JOBS 4 /* expert jobs the engine thread may run ahead by */
#define PROF_EVENTS 1024 /* profile marks between two host synchronizations */

enum lin_kind { LIN_FP8, LIN_BF16, LIN_CPU };

struct ops_lin {
    enum lin_kind kind;
    int rows, cols;
    uint8_t *w;   /* device: e4m3 [rows][cols] or bf16 [rows][cols] */
    float *scale; /* device: [ceil(rows/128)][sld] (FP8) */
    int sld;
    struct ops_lin *cpu; /* LIN_CPU: the inner backend's handle */
};

struct ops_moe {
    struct ops_moe *cpu; /* the inner CPU backend's experts (NULL when on the GPU) */
    int hidden, inter, n_expert;
    struct ops_lin **gpu;      /* GPU experts: [3 * n_expert] gate, up, down as FP8 linears */
    struct cus_layer *st;      /* streaming / hot-expert state (NULL: neither) */
    struct expert_counts *cnt; /* routing counts (ops_moe_set_counts; NULL: none), row cnt_row */
    int cnt_row;
};

struct hbuf { /* pinned host scratch */
    void *p;
    size_t size;
};

/* one routed-expert job on the side stream; written by the engine thread when enqueued, read by
 * the CUDA host-function thread while it runs, reused only after its events completed */
struct moe_job {
    struct ops *cpu;
    double seconds;  /* wall time of the CPU experts (host function) */
    long long pairs; /* (token, expert) pairs it computed (host function) */
    const struct ops_moe *m;
    float *x, *w, *y; /* pinned */
    int32_t *ids;
    int n, top_k;
    int count; /* the host function adds ids to m's routing counts (routes from the device) */
    int part;  /* expert deferral: 0 every route, 1 the immediate ones, 2 the deferred ones */
    int n_defer;
    int32_t *mids; /* part > 0: the part's routes (host function; grown by the engine thread) */
    size_t mids_n;
    int rc;
    char err[ERR_LEN];
    int state;                /* 0 free, 1 enqueued, 2 joined (its ev_j recorded) */
    int graphed;              /* ran in a captured graph: its events hold no timings */
    int slot;                 /* graph-mode record: its index among the forward's expert calls;
                               * a ring record: -1 (error messages only) */
    cudaEvent_t ev_a, ev_in;  /* main stream: before / after the inputs' copy to the host */
    cudaEvent_t ev_c, ev_out; /* side stream: CPU experts done / result back on the device */
    cudaEvent_t ev_j;         /* main stream: where it waits for the result (the join) */
};

#define GRAPH_CLASSES 12 /* context-length classes of graphs: 1K, 2K, ... 2M positions */

/* What an expert job's host function reads from its record besides the result fields: the
 * inputs job_enqueue writes. The graph-mode records are shared by every graph-mode forward (the
 * i-th expert call of any token count uses record i), but a captured host node reads the record
 * when it replays, while the graph's copies into the pinned buffers have the capture's sizes
 * baked in: so each graph keeps these fields as captured and puts them back before a replay
 * (job_in_put), else a replay after another token count's forward would read that forward's n
 * and weight offset (the H100 failure at 87ab9b9, docs/gpu.md). */
struct job_in {
    struct ops *cpu;
    const struct ops_moe *m;
    float *x, *w, *y;
    int32_t *ids;
    int n, top_k, count, part, n_defer;
};

/* A captured forward's layers for one (token count, length class) (ops_graph_begin). */
struct cgraph {
    cudaGraphExec_t exec; /* NULL: not captured */
    int state;            /* 0 unknown, 1 an eager run was capturable, 2 captured, -1 not
                           * capturable (all reset when the epoch changes) */
    const void *h;        /* key: the residual stream, the KV cache, the activation scale format */
    const struct model_kv *kv;
    int ue8m0;
    int n_jobs;         /* expert jobs in the forward */
    struct job_in *jin; /* [n_jobs]: their records' inputs as captured (job_in_put) */
};

/* CUDA graphs of decode steps (gpu.cuda_graphs) and the step inputs every graph-mode forward
 * reads from fixed device addresses instead of staging them per op. */
struct cgraphs {
    int max;            /* ops_params.gpu_graphs: largest token count graphed; 0 off */
    int paused;         /* ops_cuda_graphs_pause: graph-mode forwards run eagerly */
    int on;             /* between ops_graph_begin and ops_graph_end: step inputs in use */
    int capturing;      /* the main stream is capturing */
    int failed;         /* a capture failed: no more graphs in this instance */
    struct cgraph *g;   /* this forward's graph (NULL: paused) */
    struct cgraph *tab; /* [max][GRAPH_CLASSES] */
    const char *bad;    /* why this forward cannot be captured (NULL: it can) */
    const char *told;   /* the last reason logged */
    const int32_t *pos; /* the batch's positions (host: sub-ranges are found by address) */
    int n, np, bt_ld, max_len;
    void *h_in, *d_in; /* the step inputs: pinned block, its device copy */
    size_t in_size;
    int32_t *d_slots, *d_len, *d_bt; /* [n], [n], [n][bt_ld] */
    float *d_cs;                     /* [n][np][2] RoPE (cos, sin) */
    cudaEvent_t ev_in;               /* after the last copy of the block */
    int moe_i;                       /* expert jobs so far in this forward */
    struct moe_job **jobs;           /* one record per expert call of a forward */
    int n_jobs;
    int err0;       /* the sticky error before a capture */
    unsigned epoch; /* the backend's epoch the graphs in tab were made in */
};

struct ops_cuda {
    struct ops base;
    struct ops *cpu; /* inner CPU backend: experts and fallbacks */
    int device, max_tokens, max_pad;
    char name[48];
    cudaStream_t st, side;
    struct ops_cuda_stats stats;
    int exact_gemm;    /* ops_params.gpu_cublaslt == 0 (gemm_fp8_set_exact) */
    int expert_layers; /* ops_params.gpu_expert_layers: MoE layers left to put on the GPU
                        * (-1: all) */
    const struct cpuq_ops *rq_ops;    /* dequantizers for load-time conversions (first use) */
    float *ex_x, *ex_g, *ex_u, *ex_y; /* GPU experts: gathered rows, gate, up, down output */
    int ex_inter;
    int32_t *ex_sort; /* host: GPU experts' counting sort of the routes (grows) */
    size_t ex_sort_n;
    cublasHandle_t blas;
    struct gemm_fp8 *gemm;
    /* FP8 linear scratch */
    uint8_t *xq; /* [max_pad][max_k] */
    float *xs;   /* [max_k/128][max_pad] */
    float *ysc;  /* [max_pad][max_n] */
    int max_k, max_n;
    /* small device side inputs */
    int32_t *d_i32; /* [d_i32_n]: tokens / positions / slots / seq_len */
    size_t d_i32_n;
    int32_t *d_bt; /* block tables per query row */
    size_t d_bt_n;
    float *d_freq;
    float h_freq[64];
    int freq_n;
    float *d_cs;     /* [max_pad][64][2]: RoPE (cos, sin) of the positions in cs_pos */
    int32_t *cs_pos; /* host copy of the positions d_cs holds (cs_n of them) */
    int cs_n;
    uintptr_t cs_src; /* the caller's array they were copied from (a sub-range of it,
                       * e.g. an attention pass, is served from the same table) */
    void *mla_ws;
    size_t mla_ws_size;
    /* GEMM attention of long prompt runs (gpu.prefill_attention_mb; NULL: off) */
    struct cuk_mla_prefill *mlap;
    size_t mlap_score; /* score scratch bytes */
    void *mlap_ws;
    int mlap_ctx; /* contexts mlap_ws holds (0: none yet) */
    int mlap_off; /* the op or its workspace failed once: prompt runs take the kernel */
    /* device mirror of the caller's KV cache (GPU attention only) */
    const struct model_kv *kv_key;
    uint16_t **kv_dev_layer; /* host array of device pointers */
    void *kv_dev;
    int kv_layers, kv_blocks, kv_bt, kv_dim;
    struct hbuf h[N_HOST];
    char *ring; /* pinned staging of small host -> device inputs (ring) */
    size_t ring_size, ring_off;
    struct moe_job jobs[N_JOBS]; /* ring; next_job is the next to use */
    int next_job;
    struct moe_job *pend;  /* the job whose output is not joined yet (NULL: none) */
    struct moe_job *dpend; /* a deferred part's job (ops_moe_defer) not joined yet: joined only
                            * by ops touching its output, CPU work and synchronizations */
    float *dpend_y;
    size_t dpend_bytes;
    int32_t *d_dids; /* expert deferral off the job path: both parts' routes [2][dids_n] */
    size_t dids_n;
    struct { /* ops_kv_store's call, run by the next ops_mla_attn */
        const struct model_kv *kv;
        const struct model_batch *b;
        const float *x;
        int layer;
    } kvs;
    float *heads_f32; /* fp32 expansion of one FP8 ops_heads (heads_cur) */
    size_t heads_size;
    const struct ops_heads *heads_cur;
    struct cus *cus;     /* expert streaming and hot experts (gpu.prefill_experts,
                          * gpu.hot_experts; NULL: both off) */
    int prefill_experts; /* ops_params.gpu_prefill_experts */
    int hot;             /* ops_params.gpu_hot_experts */
    float *s_acc;        /* layer split with the CPU: the GPU part [max_pad][hidden] */
    int s_acc_hidden;
    cudaEvent_t ev_g; /* main stream: the GPU part of a split layer is done */
    float *pend_y;    /* pend's output (device) */
    size_t pend_bytes;
    int keep_ggml;             /* ops_params.gpu_keep_ggml: no load-time conversions */
    struct wpool *rq_pool;     /* load-time conversions (freed by ops_load_done) */
    struct ops_cuda_load load; /* what loading converted */
    struct {                   /* ops_cuda_profile: an event before every op (main stream) */
        int on, n;
        cudaEvent_t ev[PROF_EVENTS];
        uint8_t kind[PROF_EVENTS];
    } prof;
    struct { /* the FP8 scratch (xq, xs) holds x's activation quantization for n rows of d with
              * scale stride mp (ops_rmsnorm_lin, or the last linear's own); x NULL: nothing */
        const float *x;
        int n, d, mp, ue8m0;
    } pq;
    unsigned epoch; /* bumped when a buffer a captured graph may use moves, or weights change */
    struct cgraphs gr;
};

static struct ops_cuda *C(struct ops *o) { return (struct ops_cuda *)o; }

static void cfail(struct ops_cuda *c, int code, const char *what, cudaError_t e)
{
    char msg[ERR_LEN];
    snprintf(msg, sizeof msg, "cuda ops: %s: %s", what, e ? cudaGetErrorString(e) : "failed");
    ops__fail(&c->base, code, msg);
}

#define CK(c, call, what)                                                                          \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) cfail((c), ERR_CUDA, (what), e_);                                   \
    } while (0)
#define KR(c, call, what)                                                                          \
    do {                                                                                           \
        if ((call) != 0) cfail((c), ERR_CUDA, (what), cudaSuccess);                                \
    } while (0)

static int round4(int x) { return (x + 3) & ~3; }

/* rows the FP8 scratch uses for n tokens */
static int bucket(const struct ops_cuda *c, int n)
{
    if (n <= 16) return n;
    int b = 32;
    while (b < n) b *= 2;
    return b < c->max_pad ? b : c->max_pad;
}

/* ---- the prepared FP8 activation (pq): which input the FP8 scratch holds quantized */

static int pq_holds(const struct ops_cuda *c, const float *x, int n, int d, int mp)
{
    return x && c->pq.x == x && c->pq.n == n && c->pq.d == d && c->pq.mp == mp &&
           c->pq.ue8m0 == c->base.fp8_ue8m0;
}

static void pq_set(struct ops_cuda *c, const float *x, int n, int d, int mp)
{
    c->pq.x = x;
    c->pq.n = n;
    c->pq.d = d;
    c->pq.mp = mp;
    c->pq.ue8m0 = c->base.fp8_ue8m0;
}

/* an op writes [p, p + bytes): the prepared quantization is stale if that overlaps its input */
static void pq_wrote(struct ops_cuda *c, const void *p, size_t bytes)
{
    const char *a = (const char *)c->pq.x, *b = (const char *)p;
    if (a && b < a + (size_t)c->pq.n * c->pq.d * sizeof(float) && a < b + bytes) c->pq.x = NULL;
}

/* ---------------------------------------------------------------- pending expert job */

static float ev_ms(cudaEvent_t a, cudaEvent_t b)
{
    float ms = 0;
    return cudaEventElapsedTime(&ms, a, b) == cudaSuccess ? ms : 0.0f;
}

/* profile: mark the start of an op of this kind on the main stream */
static void prof(struct ops_cuda *c, int kind)
{
    if (!c->prof.on) return;
    if (c->prof.n == PROF_EVENTS) { /* full: drop the newest interval's end */
        c->prof.kind[PROF_EVENTS - 1] = (uint8_t)kind;
        return;
    }
    cudaEventRecord(c->prof.ev[c->prof.n], c->st);
    c->prof.kind[c->prof.n++] = (uint8_t)kind;
}

/* after a stream synchronization: every mark but the last has completed; add the intervals to
 * the stats and keep the last mark as the start of the next interval */
static void prof_fold(struct ops_cuda *c)
{
    if (!c->prof.on || c->prof.n < 2) return;
    for (int i = 0; i + 1 < c->prof.n; i++) {
        c->stats.op_s[c->prof.kind[i]] += ev_ms(c->prof.ev[i], c->prof.ev[i + 1]) / 1e3;
        c->stats.op_n[c->prof.kind[i]]++;
    }
    cudaEvent_t e = c->prof.ev[0];
    c->prof.ev[0] = c->prof.ev[c->prof.n - 1];
    c->prof.ev[c->prof.n - 1] = e;
    c->prof.kind[0] = c->prof.kind[c->prof.n - 1];
    c->prof.n = 1;
}

/* the main stream waits for job *jp's result; *jp = NULL */
static void join_job(struct ops_cuda *c, struct moe_job **jp)
{
    prof(c, OPS_PROF_WAIT);
    CK(c, cudaEventRecord((*jp)->ev_j, c->st), "event");
    CK(c, cudaStreamWaitEvent(c->st, (*jp)->ev_out, 0), "stream wait");
    (*jp)->state = 2;
    *jp = NULL;
}

static int within(const void *p, const float *y, size_t bytes)
{
    return (const char *)p >= (const char *)y && (const char *)p < (const char *)y + bytes;
}

/* Make the main stream wait for the expert job if p lies in its output (or always: p = NULL),
 * and for a deferred part's job if p lies in its output. */
static void join(struct ops_cuda *c, const void *p)
{
    if (c->pend && (!p || within(p, c->pend_y, c->pend_bytes))) join_job(c, &c->pend);
    if (c->dpend && p && within(p, c->dpend_y, c->dpend_bytes)) join_job(c, &c->dpend);
}

/* join, and the deferred part's job: before the CPU pool or the jobs' pinned inputs are reused */
static void join_all(struct ops_cuda *c)
{
    join(c, NULL);
    if (c->dpend) join_job(c, &c->dpend);
}

/* A joined job whose events have completed: add its times to the stats, report its error, free
 * the slot. */
static void retire(struct ops_cuda *c, struct moe_job *j)
{
    if (j->state != 2) return;
    j->state = 0;
    struct ops_cuda_stats *t = &c->stats;
    t->moe_calls++;
    t->cpu_experts_s += j->seconds;
    cus_cpu_sample(c->cus, j->n, j->seconds, j->pairs);
    if (!j->graphed) { /* a graph's events were recorded at capture only */
        t->xfer_s += (ev_ms(j->ev_a, j->ev_in) + ev_ms(j->ev_c, j->ev_out)) / 1e3;
        float gpu = ev_ms(j->ev_in, j->ev_j), idle = ev_ms(j->ev_j, j->ev_out);
        t->overlap_gpu_s += gpu / 1e3;
        t->idle_s += (idle > 0 ? idle : 0) / 1e3;
    }
    j->graphed = 0;
    if (j->rc) ops__fail(&c->base, j->rc, j->err);
}

/* A graph-mode forward took a path that a graph cannot replay (a host synchronization, staged
 * host data): it runs eagerly, and its shape is not captured. */
static void not_graphable(struct ops_cuda *c, const char *why)
{
    if (c->gr.on && !c->gr.bad) c->gr.bad = why;
}

/* Wait for all GPU work and every expert job on the host; retire the jobs. */
static void host_sync(struct ops_cuda *c)
{
    not_graphable(c, "a host synchronization");
    join_all(c);
    CK(c, cudaStreamSynchronize(c->st), "synchronize");
    for (int i = 0; i < N_JOBS; i++) retire(c, &c->jobs[i]);
    for (int i = 0; i < c->gr.n_jobs; i++) retire(c, c->gr.jobs[i]);
    prof_fold(c);
    cus_collect(c->cus, &c->stats);
}

static void *hbuf(struct ops_cuda *c, int i, size_t bytes)
{
    ASSERT(i >= 0 && i < N_HOST);
    struct hbuf *h = &c->h[i];
    if (bytes > h->size) {
        host_sync(c); /* the slot may be in use by queued copies */
        c->epoch++;   /* graphs copy through the old address */
        cudaFreeHost(h->p);
        h->p = NULL;
        h->size = 0;
        size_t sz = bytes + bytes / 4 + 4096;
        if (cudaHostAlloc(&h->p, sz, cudaHostAllocDefault) != cudaSuccess) {
            h->p = NULL;
            ops__fail(&c->base, ERR_NOMEM, "cuda ops: out of pinned host memory");
            return NULL;
        }
        h->size = sz;
    }
    return h->p;
}

/* ---------------------------------------------------------------- backend table: basics */

static const char *cu_name(const struct ops *o) { return ((const struct ops_cuda *)o)->name; }
static int cu_n_threads(const struct ops *o)
{
    return ops_n_threads(((const struct ops_cuda *)o)->cpu);
}

static void *cu_alloc(struct ops *o, size_t bytes)
{
    struct ops_cuda *c = C(o);
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 16) != cudaSuccess) return NULL;
    if (cudaMemsetAsync(p, 0, bytes ? bytes : 16, c->st) != cudaSuccess) {
        cudaFree(p);
        return NULL;
    }
    return p;
}

static void cu_free(struct ops *o, void *p)
{
    host_sync(C(o));
    C(o)->epoch++;
    C(o)->pq.x = NULL;
    cudaFree(p);
}

static void cu_upload(struct ops *o, void *dst, const void *src, size_t bytes)
{
    struct ops_cuda *c = C(o);
    not_graphable(c, "an upload");
    c->pq.x = NULL;
    join(c, dst);
    CK(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->st), "upload");
    CK(c, cudaStreamSynchronize(c->st), "upload"); /* src may be pageable and short-lived */
}

static void cu_download(struct ops *o, void *dst, const void *src, size_t bytes)
{
    struct ops_cuda *c = C(o);
    join(c, NULL);
    prof(c, OPS_PROF_DOWNLOAD);
    CK(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->st), "download");
    host_sync(c);
}

/* ---------------------------------------------------------------- weights */

static int plan_fp8(struct ops_cuda *c, int n, int k, char *err)
{
    /* the buckets of bucket(): 1..16 exactly, then powers of two capped at max_pad */
    for (int m = 1;; m = m < 16 ? m + 1 : m * 2) {
        int mb = m > 16 && m > c->max_pad ? c->max_pad : m;
        if (mb > c->max_tokens && mb <= 16) break;
        struct gemm_fp8_shape s = {.m = mb, .n = n, .k = k, .y_type = CUK_F32};
        char e2[ERR_LEN];
        int rc = gemm_fp8_plan(c->gemm, &s, 0, e2);
        if (rc) return err_set(err, rc, "plan m=%d n=%d k=%d: %s", mb, n, k, e2);
        if (mb > 16 && mb >= c->max_pad) break;
        if (mb == 16 && c->max_tokens <= 16) break;
    }
    return 0;
}

/* grow the FP8 linear scratch for a [n, k] weight (create time) */
static int grow_scratch(struct ops_cuda *c, int n, int k, char *err)
{
    c->pq.x = NULL;
    if (k > c->max_k || (n > c->max_n && !c->exact_gemm)) c->epoch++; /* graphs read these */
    if (k > c->max_k) {
        cudaFree(c->xq);
        cudaFree(c->xs);
        c->xq = NULL;
        c->xs = NULL;
        c->max_k = k;
        if (cudaMalloc((void **)&c->xq, (size_t)c->max_pad * k) != cudaSuccess ||
            cudaMalloc((void **)&c->xs, (size_t)(k / 128) * c->max_pad * sizeof(float)) !=
                cudaSuccess ||
            cudaMemset(c->xq, 0, (size_t)c->max_pad * k) != cudaSuccess ||
            cudaMemset(c->xs, 0, (size_t)(k / 128) * c->max_pad * sizeof(float)) != cudaSuccess)
            return err_set(err, ERR_NOMEM, "cuda ops: out of device memory (scratch)");
    }
    if (n > c->max_n && !c->exact_gemm) { /* padded results: cuBLASLt's row buckets only */
        cudaFree(c->ysc);
        c->ysc = NULL;
        c->max_n = n;
        if (cudaMalloc((void **)&c->ysc, (size_t)c->max_pad * n * sizeof(float)) != cudaSuccess)
            return err_set(err, ERR_NOMEM, "cuda ops: out of device memory (scratch)");
    }
    return 0;
}

/* A weight as the GPU takes it: FP8 (k % 128 == 0) and BF16 (k % 8 == 0) views uploaded, the
 * rest left to the inner CPU backend. */
static int lin_upload(struct ops_cuda *c, const struct wt_view *w, struct ops_lin **out, char *err)
{
    struct ops_lin *l = calloc(1, sizeof *l);
    if (!l) return err_set(err, ERR_NOMEM, "cuda ops: out of memory");
    l->rows = (int)w->rows;
    l->cols = (int)w->cols;
    int rc = 0;
    if (w->type == QTYPE_F8_E4M3 && w->cols % 128 == 0) {
        l->kind = LIN_FP8;
        int sr = (int)((w->rows + 127) / 128), sc = (int)(w->cols / 128);
        l->sld = round4(sc);
        float *hs = calloc((size_t)sr * l->sld, sizeof(float));
        if (!hs) rc = err_set(err, ERR_NOMEM, "cuda ops: out of memory");
        for (int r = 0; !rc && r < sr; r++)
            memcpy(hs + (size_t)r * l->sld, w->scale + (size_t)r * sc, (size_t)sc * sizeof(float));
        if (!rc &&
            (cudaMalloc((void **)&l->w, (size_t)w->rows * w->cols) != cudaSuccess ||
             cudaMalloc((void **)&l->scale, (size_t)sr * l->sld * sizeof(float)) != cudaSuccess))
            rc = err_set(err, ERR_NOMEM, "cuda ops: out of device memory for a weight");
        if (!rc && w->row_bytes == (size_t)w->cols &&
            cudaMemcpy(l->w, w->data, (size_t)w->rows * w->cols, cudaMemcpyHostToDevice) !=
                cudaSuccess)
            rc = err_set(err, ERR_CUDA, "cuda ops: weight upload failed");
        for (int64_t r = 0; !rc && w->row_bytes != (size_t)w->cols && r < w->rows; r++)
            if (cudaMemcpy(l->w + r * w->cols, (const char *)w->data + r * w->row_bytes,
                           (size_t)w->cols, cudaMemcpyHostToDevice) != cudaSuccess)
                rc = err_set(err, ERR_CUDA, "cuda ops: weight upload failed");
        if (!rc && cudaMemcpy(l->scale, hs, (size_t)sr * l->sld * sizeof(float),
                              cudaMemcpyHostToDevice) != cudaSuccess)
            rc = err_set(err, ERR_CUDA, "cuda ops: scale upload failed");
        free(hs);
        if (!rc) rc = grow_scratch(c, l->rows, l->cols, err);
        if (!rc) rc = plan_fp8(c, l->rows, l->cols, err);
    } else if (w->type == QTYPE_BF16 && w->cols % 8 == 0) {
        l->kind = LIN_BF16;
        size_t rb = (size_t)w->cols * 2;
        if (cudaMalloc((void **)&l->w, (size_t)w->rows * rb) != cudaSuccess)
            rc = err_set(err, ERR_NOMEM, "cuda ops: out of device memory for a weight");
        else if (w->row_bytes == rb)
            rc = cudaMemcpy(l->w, w->data, (size_t)w->rows * rb, cudaMemcpyHostToDevice)
                     ? err_set(err, ERR_CUDA, "cuda ops: weight upload failed")
                     : 0;
        for (int64_t r = 0; !rc && w->row_bytes != rb && r < w->rows; r++)
            if (cudaMemcpy(l->w + r * rb, (const char *)w->data + r * w->row_bytes, rb,
                           cudaMemcpyHostToDevice) != cudaSuccess)
                rc = err_set(err, ERR_CUDA, "cuda ops: weight upload failed");
    } else {
        l->kind = LIN_CPU;
        rc = ops_lin_create(c->cpu, w, &l->cpu, err);
        c->load.cpu++;
    }
    if (rc) {
        cudaFree(l->w);
        cudaFree(l->scale);
        free(l);
        return rc;
    }
    *out = l;
    return 0;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* The dequantizers (this CPU's best ISA: to_float is exact in every ISA, cpuq.h) and the
 * load-time pool, made on first use. */
static int load_tools(struct ops_cuda *c, char *err)
{
    int rc = 0;
    if (!c->rq_ops) rc = cpuq_ops_get(cpuq_isa_detect(), &c->rq_ops, err);
    if (!rc && !c->rq_pool) rc = wpool_create(ops_n_threads(c->cpu), 0, 0, &c->rq_pool, err);
    if (!rc) c->load.threads = wpool_n_threads(c->rq_pool);
    return rc;
}

/* Whether a weight of `type` can be converted on the host (a dequantizer exists). */
static int convertible(struct ops_cuda *c, int type)
{
    char e[ERR_LEN];
    return type >= 0 && type < QTYPE_COUNT_ && type != QTYPE_F8_E4M3 && !load_tools(c, e) &&
           c->rq_ops->type[type].to_float;
}

/* v re-quantized to FP8 on the host: *q [rows][cols] e4m3 and *s the ceil-divided scale grid,
 * both malloc'd (the caller frees them). file_bytes: v's size as stored, for the load report. */
static int requant_host(struct ops_cuda *c, const struct wt_view *v, double file_bytes, uint8_t **q,
                        float **s, char *err)
{
    *q = NULL;
    *s = NULL;
    int rc = load_tools(c, err);
    if (rc) return rc;
    size_t n = (size_t)v->rows * (size_t)v->cols;
    size_t ns = (size_t)cpuq_fp8_nblk(v->rows) * (size_t)cpuq_fp8_nblk(v->cols);
    *q = malloc(n ? n : 1);
    *s = malloc((ns ? ns : 1) * sizeof(float));
    if (!*q || !*s) rc = err_set(err, ERR_NOMEM, "cuda ops: out of memory re-quantizing a weight");
    struct cpuq_requant_src src = {.type = v->type,
                                   .data = v->data,
                                   .row_bytes = v->row_bytes,
                                   .rows = v->rows,
                                   .cols = v->cols};
    double t0 = now_s();
    if (!rc) rc = cpuq_requant_fp8(c->rq_ops, c->rq_pool, &src, *q, *s, err);
    if (rc) {
        free(*q);
        free(*s);
        *q = NULL;
        *s = NULL;
        return rc;
    }
    c->load.seconds += now_s() - t0;
    c->load.fp8++;
    c->load.src_bytes += file_bytes;
    c->load.dev_bytes += (double)n + (double)ns * sizeof(float);
    return 0;
}

/* A projection of a convertible type as an FP8 linear: re-quantized on the host, uploaded. */
static int lin_requant(struct ops_cuda *c, const struct wt_view *w, struct ops_lin **out, char *err)
{
    uint8_t *q;
    float *s;
    double fb = (double)cpuq_row_size(w->type, w->cols) * (double)w->rows;
    int rc = requant_host(c, w, fb, &q, &s, err);
    if (rc) return rc;
    struct wt_view fv = {.type = QTYPE_F8_E4M3,
                         .rows = w->rows,
                         .cols = w->cols,
                         .data = q,
                         .row_bytes = (size_t)w->cols,
                         .scale = s};
    rc = lin_upload(c, &fv, out, err);
    free(q);
    free(s);
    return rc;
}

/* Projections: FP8 and BF16 as they are; other types re-quantized to FP8 when the FP8 kernels
 * take the shape (k % 128 == 0) and gpu.requant_ggml is on, else the CPU backend. */
static int cu_lin_create(struct ops *o, const struct wt_view *w, struct ops_lin **out, char *err)
{
    struct ops_cuda *c = C(o);
    if (c->keep_ggml || w->type == QTYPE_F8_E4M3 || w->type == QTYPE_BF16 || w->cols % 128 ||
        !convertible(c, w->type))
        return lin_upload(c, w, out, err);
    return lin_requant(c, w, out, err);
}

/* v as an FP8 view: itself, or re-quantized on the host into *q / *s (freed by the caller) */
static int fp8_view(struct ops_cuda *c, const struct wt_view *v, struct wt_view *out, uint8_t **q,
                    float **s, char *err)
{
    *q = NULL;
    *s = NULL;
    *out = *v;
    if (v->type == QTYPE_F8_E4M3) return 0;
    double fb = (double)cpuq_row_size(v->type, v->cols) * (double)v->rows;
    int rc = requant_host(c, v, fb, q, s, err);
    if (rc) return rc;
    *out = (struct wt_view){.type = QTYPE_F8_E4M3,
                            .rows = v->rows,
                            .cols = v->cols,
                            .data = *q,
                            .row_bytes = (size_t)v->cols,
                            .scale = *s};
    return 0;
}

/* a's rows then b's as one FP8 linear: both FP8 (or converted to it at load as cu_lin_create
 * would), a's rows a multiple of 128 so that b's 128-row scale blocks keep their grid. Each
 * weight is re-quantized on its own first, so the rows' values are those of two linears. */
static int cu_lin_create_cat(struct ops *o, const struct wt_view *a, const struct wt_view *b,
                             struct ops_lin **out, char *err)
{
    struct ops_cuda *c = C(o);
    const struct wt_view *v[2] = {a, b};
    if (a->cols != b->cols || a->cols % 128 || a->rows % 128)
        return err_set(err, ERR_UNSUPPORTED, "cuda ops: shapes not fusable");
    for (int i = 0; i < 2; i++)
        if (v[i]->type != QTYPE_F8_E4M3 &&
            (c->keep_ggml || v[i]->type == QTYPE_BF16 || !convertible(c, v[i]->type)))
            return err_set(err, ERR_UNSUPPORTED, "cuda ops: not an FP8 linear");
    struct wt_view f[2];
    uint8_t *q[2] = {NULL, NULL}, *w = NULL;
    float *sc[2] = {NULL, NULL}, *ws = NULL;
    int rc = fp8_view(c, a, &f[0], &q[0], &sc[0], err);
    if (!rc) rc = fp8_view(c, b, &f[1], &q[1], &sc[1], err);
    const int64_t k = a->cols, kb = k / 128, ra = a->rows, rb = b->rows;
    const int64_t sa = ra / 128, sb = (rb + 127) / 128;
    if (!rc && (!(w = malloc((size_t)(ra + rb) * k)) ||
                !(ws = malloc((size_t)(sa + sb) * kb * sizeof(float)))))
        rc = err_set(err, ERR_NOMEM, "cuda ops: out of memory fusing two linears");
    for (int i = 0; !rc && i < 2; i++) {
        int64_t r0 = i ? ra : 0, s0 = i ? sa : 0, sr = i ? sb : sa;
        for (int64_t r = 0; r < f[i].rows; r++)
            memcpy(w + (size_t)(r0 + r) * k, (const uint8_t *)f[i].data + r * f[i].row_bytes,
                   (size_t)k);
        memcpy(ws + (size_t)s0 * kb, f[i].scale, (size_t)sr * kb * sizeof(float));
    }
    if (!rc) {
        struct wt_view fv = {.type = QTYPE_F8_E4M3,
                             .rows = ra + rb,
                             .cols = k,
                             .data = w,
                             .row_bytes = (size_t)k,
                             .scale = ws};
        rc = lin_upload(c, &fv, out, err);
    }
    for (int i = 0; i < 2; i++) {
        free(q[i]);
        free(sc[i]);
    }
    free(w);
    free(ws);
    return rc;
}

/* bf16 conversion of rows on the load-time pool: per thread a row of fp32 scratch, the count
 * of values it rounded and its first non-finite value (lowest row) */
struct bf16_job {
    const struct cpuq_ops *ops;
    const struct wt_view *w;
    uint16_t *b;
    float **f;
    long long *rounded;
    int64_t *bad_r, *bad_c; /* -1: none */
};

static void bf16_rows(void *ctx, int64_t r0, int64_t r1, int t)
{
    struct bf16_job *j = ctx;
    const struct wt_view *w = j->w;
    float *f = j->f[t];
    for (int64_t r = r0; r < r1; r++) {
        j->ops->type[w->type].to_float((const char *)w->data + r * w->row_bytes, f, w->cols);
        uint16_t *br = j->b + r * w->cols;
        for (int64_t k = 0; k < w->cols; k++) {
            if (!isfinite(f[k]) && (j->bad_r[t] < 0 || r < j->bad_r[t])) {
                j->bad_r[t] = r;
                j->bad_c[t] = k;
            }
            br[k] = fp_f32_to_bf16(f[k]);
            j->rounded[t] += fp_bf16_to_f32(br[k]) != f[k];
        }
    }
}

/* W16A32 linears (router, lm_head): a convertible type becomes bf16 (round to nearest even, on
 * the load-time pool), never FP8; non-finite values are an error. */
static int cu_lin_create_w16(struct ops *o, const struct wt_view *w, struct ops_lin **out,
                             char *err)
{
    struct ops_cuda *c = C(o);
    if (c->keep_ggml || w->type == QTYPE_F8_E4M3 || w->type == QTYPE_BF16 || w->cols % 8 ||
        !convertible(c, w->type))
        return lin_upload(c, w, out, err);
    struct cpuq_requant_src src = {.type = w->type,
                                   .data = w->data,
                                   .row_bytes = w->row_bytes,
                                   .rows = w->rows,
                                   .cols = w->cols};
    int rc = cpuq_requant_fp8_check(c->rq_ops, &src, err);
    if (rc) return rc;
    double t0 = now_s();
    const int nt = c->load.threads;
    struct bf16_job j = {.ops = c->rq_ops, .w = w};
    j.b = malloc((size_t)w->rows * (size_t)w->cols * 2);
    j.f = calloc((size_t)nt, sizeof *j.f);
    j.rounded = calloc((size_t)nt, sizeof *j.rounded);
    j.bad_r = malloc((size_t)nt * sizeof *j.bad_r);
    j.bad_c = malloc((size_t)nt * sizeof *j.bad_c);
    if (!j.b || !j.f || !j.rounded || !j.bad_r || !j.bad_c) rc = ERR_NOMEM;
    for (int t = 0; !rc && t < nt; t++) {
        j.bad_r[t] = -1;
        if (!(j.f[t] = malloc((size_t)w->cols * sizeof(float)))) rc = ERR_NOMEM;
    }
    if (rc) err_set(err, rc, "cuda ops: out of memory converting a weight");
    else wpool_run(c->rq_pool, bf16_rows, &j, w->rows, 64);
    long long rounded = 0;
    int bad = -1;
    for (int t = 0; !rc && t < nt; t++) {
        rounded += j.rounded[t];
        if (j.bad_r[t] >= 0 && (bad < 0 || j.bad_r[t] < j.bad_r[bad])) bad = t;
    }
    if (!rc && bad >= 0) { /* the value itself: that row converted again */
        float *row = j.f[0];
        c->rq_ops->type[w->type].to_float((const char *)w->data + j.bad_r[bad] * w->row_bytes, row,
                                          w->cols);
        rc = err_set(err, ERR_FORMAT,
                     "cuda ops: %s weight has a non-finite value (%g) at row %lld, column %lld",
                     qtype_name(w->type), (double)row[j.bad_c[bad]], (long long)j.bad_r[bad],
                     (long long)j.bad_c[bad]);
    }
    if (!rc) {
        c->load.seconds += now_s() - t0;
        c->load.bf16++;
        c->load.bf16_rounded += rounded;
        c->load.src_bytes += (double)cpuq_row_size(w->type, w->cols) * (double)w->rows;
        c->load.dev_bytes += (double)w->rows * (double)w->cols * 2;
        struct wt_view bv = {.type = QTYPE_BF16,
                             .rows = w->rows,
                             .cols = w->cols,
                             .data = j.b,
                             .row_bytes = (size_t)w->cols * 2};
        rc = lin_upload(c, &bv, out, err);
    }
    for (int t = 0; j.f && t < nt; t++) free(j.f[t]);
    free(j.f);
    free(j.b);
    free(j.rounded);
    free(j.bad_r);
    free(j.bad_c);
    return rc;
}

/* the embedding table stays in host memory (the inner CPU backend's); cu_embed gathers there */
static int cu_table_create(struct ops *o, const struct wt_view *w, struct ops_lin **out, char *err)
{
    struct ops_cuda *c = C(o);
    struct ops_lin *l = calloc(1, sizeof *l);
    if (!l) return err_set(err, ERR_NOMEM, "cuda ops: out of memory");
    l->kind = LIN_CPU;
    l->rows = (int)w->rows;
    l->cols = (int)w->cols;
    int rc = ops_table_create(c->cpu, w, &l->cpu, err);
    if (rc) {
        free(l);
        return rc;
    }
    *out = l;
    return 0;
}

static void cu_lin_destroy(struct ops *o, struct ops_lin *l)
{
    struct ops_cuda *c = C(o);
    host_sync(c);
    c->epoch++;
    cudaFree(l->w);
    cudaFree(l->scale);
    ops_lin_destroy(c->cpu, l->cpu);
    free(l);
}

/* One expert projection as an FP8 linear on the device: FP8 views as they are; any other type
 * (GGML blocks, floats) re-quantized to e4m3 with 128x128 block scales (requant_host). So GPU
 * experts are not bit-identical to the CPU pool's GGML ones: e4m3 keeps 3 mantissa bits where
 * Q4_K keeps a 4-bit code on a 6-bit scale; docs/gpu.md gives the measured effect. */
static int expert_lin(struct ops_cuda *c, const struct wt_view *v, struct ops_lin **out, char *err)
{
    if (v->type == QTYPE_F8_E4M3) return lin_upload(c, v, out, err);
    if (!convertible(c, v->type))
        return err_set(err, ERR_UNSUPPORTED, "cuda ops: GPU experts: cannot convert %s",
                       qtype_name(v->type));
    return lin_requant(c, v, out, err);
}

static void cu_moe_destroy(struct ops *o, struct ops_moe *m)
{
    struct ops_cuda *c = C(o);
    host_sync(c);
    c->epoch++;
    if (m->cpu) ops_moe_destroy(c->cpu, m->cpu);
    cus_layer_destroy(c->cus, m->st);
    for (int i = 0; m->gpu && i < 3 * m->n_expert; i++)
        if (m->gpu[i]) cu_lin_destroy(o, m->gpu[i]);
    free(m->gpu);
    free(m);
}

static int cu_moe_create(struct ops *o, int n_expert, const struct wt_view *gate,
                         const struct wt_view *up, const struct wt_view *down, struct ops_moe **out,
                         char *err)
{
    struct ops_cuda *c = C(o);
    c->epoch++; /* work buffers of GPU / hot experts may move */
    struct ops_moe *m = calloc(1, sizeof *m);
    if (!m) return err_set(err, ERR_NOMEM, "cuda ops: out of memory");
    for (int e = 0; e < n_expert; e++) /* an unrouted expert may be a zeroed view */
        if (gate[e].data || e == n_expert - 1) {
            m->hidden = (int)gate[e].cols;
            m->inter = (int)gate[e].rows;
            break;
        }
    m->n_expert = n_expert;
    int rc = 0;
    if (c->expert_layers != 0) { /* this layer's experts go to the GPU */
        if (c->expert_layers > 0) c->expert_layers--;
        m->gpu = calloc((size_t)3 * n_expert, sizeof *m->gpu);
        if (!m->gpu) rc = err_set(err, ERR_NOMEM, "cuda ops: out of memory");
        for (int e = 0; !rc && e < n_expert; e++)
            if ((rc = expert_lin(c, &gate[e], &m->gpu[3 * e], err)) ||
                (rc = expert_lin(c, &up[e], &m->gpu[3 * e + 1], err)) ||
                (rc = expert_lin(c, &down[e], &m->gpu[3 * e + 2], err)))
                break;
        if (!rc && m->inter > c->ex_inter) { /* work buffers for max_tokens rows */
            size_t hb = (size_t)c->max_pad * m->hidden * 4, ib = (size_t)c->max_pad * m->inter * 4;
            cudaFree(c->ex_g);
            cudaFree(c->ex_u);
            c->ex_g = c->ex_u = NULL;
            if (cudaMalloc((void **)&c->ex_g, ib) != cudaSuccess ||
                cudaMalloc((void **)&c->ex_u, ib) != cudaSuccess ||
                (!c->ex_x && cudaMalloc((void **)&c->ex_x, hb) != cudaSuccess) ||
                (!c->ex_y && cudaMalloc((void **)&c->ex_y, hb) != cudaSuccess))
                rc = err_set(err, ERR_NOMEM, "cuda ops: out of device memory (GPU experts)");
            else c->ex_inter = m->inter;
        }
    } else {
        /* the streaming state first: with gpu.stream_source = alloc it moves the views to its
         * pinned copy, which the CPU pool then reads */
        struct wt_view *vs = c->cus ? malloc((size_t)3 * n_expert * sizeof *vs) : NULL;
        if (c->cus && !vs) rc = err_set(err, ERR_NOMEM, "cuda ops: out of memory");
        if (vs) {
            memcpy(vs, gate, (size_t)n_expert * sizeof *vs);
            memcpy(vs + n_expert, up, (size_t)n_expert * sizeof *vs);
            memcpy(vs + 2 * n_expert, down, (size_t)n_expert * sizeof *vs);
            m->st = cus_layer_create(c->cus, n_expert, vs, vs + n_expert, vs + 2 * n_expert);
            gate = vs;
            up = vs + n_expert;
            down = vs + 2 * n_expert;
        }
        if (!rc) rc = ops_moe_create(c->cpu, n_expert, gate, up, down, &m->cpu, err);
        free(vs);
        if (!rc && c->cus && c->prefill_experts == 1 && cus_failed(c->cus))
            rc = err_set(err, ERR_CUDA,
                         "cuda ops: gpu.prefill_experts = on, but the expert "
                         "streaming could not be set up (the log says why; auto turns it off "
                         "instead)");
        if (!rc && m->st && m->hidden > c->s_acc_hidden) {
            cudaFree(c->s_acc);
            c->s_acc = NULL;
            c->s_acc_hidden = 0;
            if (cudaMalloc((void **)&c->s_acc, (size_t)c->max_pad * m->hidden * sizeof(float)) !=
                cudaSuccess)
                rc = err_set(err, ERR_NOMEM,
                             "cuda ops: out of device memory (expert streaming / hot experts)");
            else c->s_acc_hidden = m->hidden;
        }
    }
    if (rc) {
        cu_moe_destroy(o, m);
        return rc;
    }
    *out = m;
    return 0;
}

static void cu_moe_set_counts(struct ops *o, struct ops_moe *m, struct expert_counts *cnt, int row)
{
    host_sync(C(o)); /* no expert job in flight reads the old pointer */
    C(o)->epoch++;   /* graphs' job records say whether to count */
    m->cnt = cnt;
    m->cnt_row = row;
}

static size_t cu_moe_hot_bytes(struct ops *o, const struct ops_moe *m, int e)
{
    struct ops_cuda *c = C(o);
    return c->hot && !m->gpu ? cus_expert_bytes(c->cus, m->st, e) : 0;
}

static int cu_moe_set_hot(struct ops *o, struct ops_moe *m, const uint8_t *hot, char *err)
{
    struct ops_cuda *c = C(o);
    if (!m->st) {
        if (!hot) return 0;
        return err_set(err, ERR_UNSUPPORTED, "cuda ops: this MoE layer takes no hot experts (%s)",
                       !c->hot  ? "ops_params.gpu_hot_experts is off"
                       : m->gpu ? "its experts are on the GPU already"
                                : "see the log");
    }
    host_sync(c); /* nothing in flight reads the layer's previous hot set */
    c->epoch++;
    return cus_layer_set_hot(c->cus, m->st, hot, err);
}

/* ---------------------------------------------------------------- CPU fallbacks */

/* download n floats from device p into pinned slot i */
static float *to_host(struct ops_cuda *c, int i, const void *p, size_t bytes)
{
    void *h = hbuf(c, i, bytes);
    if (!h) return NULL;
    CK(c, cudaMemcpyAsync(h, p, bytes, cudaMemcpyDeviceToHost, c->st), "download");
    return h;
}

static void to_dev(struct ops_cuda *c, void *d, const void *h, size_t bytes)
{
    not_graphable(c, "a CPU fallback op");
    CK(c, cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, c->st), "upload");
    CK(c, cudaStreamSynchronize(c->st), "upload"); /* the pinned slot is reused next */
}

/* Pinned staging space for a small input of the next kernel: taken from a ring, so no
 * synchronization is needed until it wraps (then the queued copies must have run first). */
static void *stage(struct ops_cuda *c, size_t bytes)
{
    not_graphable(c, "staged host inputs"); /* a replay would copy the capture's values */
    bytes = (bytes + 255) & ~(size_t)255;
    if (bytes > c->ring_size) {
        host_sync(c);
        c->epoch++;
        cudaFreeHost(c->ring);
        c->ring = NULL;
        c->ring_size = c->ring_off = 0;
        if (cudaHostAlloc((void **)&c->ring, 2 * bytes, cudaHostAllocDefault) != cudaSuccess) {
            c->ring = NULL;
            ops__fail(&c->base, ERR_NOMEM, "cuda ops: out of pinned host memory");
            return NULL;
        }
        c->ring_size = 2 * bytes;
    }
    if (c->ring_off + bytes > c->ring_size) {
        host_sync(c);
        c->ring_off = 0;
    }
    ASSERT(c->ring && c->ring_off <= c->ring_size && bytes <= c->ring_size - c->ring_off);
    void *p = c->ring + c->ring_off;
    c->ring_off += bytes;
    return p;
}

/* upload n int32 values already in staging memory (from stage()) */
static const int32_t *push(struct ops_cuda *c, const int32_t *h, int n, int off)
{
    ASSERT(n >= 0 && off >= 0 && (size_t)off + (size_t)n <= c->d_i32_n);
    CK(c,
       cudaMemcpyAsync(c->d_i32 + off, h, (size_t)n * sizeof(int32_t), cudaMemcpyHostToDevice,
                       c->st),
       "upload ints");
    return c->d_i32 + off;
}

/* upload n int32 host values (v: any host memory) to the small device int buffer at offset off;
 * stream-ordered, so the device buffer can be reused by the next op */
static const int32_t *ints(struct ops_cuda *c, const int32_t *v, int n, int off)
{
    ASSERT(n >= 0 && off >= 0 && (size_t)off + (size_t)n <= c->d_i32_n);
    int32_t *h = stage(c, (size_t)n * sizeof(int32_t));
    if (!h) return c->d_i32 + off;
    memcpy(h, v, (size_t)n * sizeof(int32_t));
    CK(c,
       cudaMemcpyAsync(c->d_i32 + off, h, (size_t)n * sizeof(int32_t), cudaMemcpyHostToDevice,
                       c->st),
       "upload ints");
    return c->d_i32 + off;
}

/* ---------------------------------------------------------------- ops */

static void cu_embed(struct ops *o, const struct ops_lin *t, const int32_t *tokens, int n, float *y)
{
    struct ops_cuda *c = C(o);
    join(c, NULL);
    prof(c, OPS_PROF_EMBED);
    pq_wrote(c, y, (size_t)n * t->cols * sizeof(float));
    if (t->kind == LIN_BF16) {
        struct cuk_embed_args a = {.m = n,
                                   .d = t->cols,
                                   .vocab = t->rows,
                                   .tokens = ints(c, tokens, n, 0),
                                   .table = (uint16_t *)t->w,
                                   .out = y,
                                   .out_ld = t->cols};
        KR(c, cuk_embed(&a, c->st), "embed");
        return;
    }
    host_sync(c);
    size_t bytes = (size_t)n * t->cols * sizeof(float);
    float *h = hbuf(c, 0, bytes);
    if (!h) return;
    if (t->kind == LIN_CPU) ops_embed(c->cpu, t->cpu, tokens, n, h);
    else {
        ops__fail(o, ERR_UNSUPPORTED, "cuda ops: embedding table must be bf16 or a host type");
        return;
    }
    to_dev(c, y, h, bytes);
}

/* The scale stride an FP8 linear of n rows uses, or 0 when its input cannot be prepared for
 * `next` (not an FP8 linear of dim columns, or a shape the scratch does not hold). */
static int pq_mp(const struct ops_cuda *c, const struct ops_lin *next, int n, int dim)
{
    if (!next || next->kind != LIN_FP8 || next->cols != dim || dim % 128 || dim > c->max_k ||
        n < 1 || n > c->max_tokens)
        return 0;
    return round4(c->exact_gemm ? n : bucket(c, n));
}

static void cu_linear(struct ops *o, const struct ops_lin *w, const float *x, int n, float *y)
{
    struct ops_cuda *c = C(o);
    join(c, x);
    join(c, y);
    prof(c, w->kind == LIN_BF16  ? OPS_PROF_LIN_BF16
            : w->kind == LIN_CPU ? OPS_PROF_LIN_CPU
                                 : OPS_PROF_LIN_FP8);
    if (w->kind != LIN_FP8) pq_wrote(c, y, (size_t)n * w->rows * sizeof(float));
    if (w->kind == LIN_BF16) {
        for (int i = 0; i < n; i += CUK_GEMV_BF16_MAX_M) {
            int m = n - i < CUK_GEMV_BF16_MAX_M ? n - i : CUK_GEMV_BF16_MAX_M;
            struct cuk_gemv_bf16_args a = {.m = m,
                                           .n = w->rows,
                                           .k = w->cols,
                                           .w = (const uint16_t *)w->w,
                                           .x = x + (size_t)i * w->cols,
                                           .x_ld = w->cols,
                                           .y = y + (size_t)i * w->rows,
                                           .y_ld = w->rows};
            KR(c, cuk_gemv_bf16(&a, c->st), "gemv_bf16");
        }
        return;
    }
    if (w->kind == LIN_CPU) {
        join(c, NULL);
        float *hx = to_host(c, 0, x, (size_t)n * w->cols * sizeof(float));
        float *hy = hbuf(c, 1, (size_t)n * w->rows * sizeof(float));
        if (!hx || !hy) return;
        host_sync(c);
        ops_linear(c->cpu, w->cpu, hx, n, hy);
        to_dev(c, y, hy, (size_t)n * w->rows * sizeof(float));
        return;
    }
    int mb = c->exact_gemm ? n : bucket(c, n), mp = round4(mb);
    if (!pq_holds(c, x, n, w->cols, mp)) { /* else a fused norm / SwiGLU or the last linear did */
        struct cuk_rmsnorm_quant_args q = {.m = n,
                                           .d = w->cols,
                                           .x = x,
                                           .x_ld = w->cols,
                                           .q = c->xq,
                                           .q_ld = w->cols,
                                           .q_scale = c->xs,
                                           .q_scale_ld = mp,
                                           .ue8m0 = o->fp8_ue8m0};
        KR(c, cuk_rmsnorm_quant(&q, c->st), "act quant");
        pq_set(c, x, n, w->cols, mp);
    }
    pq_wrote(c, y, (size_t)n * w->rows * sizeof(float));
    int direct = c->exact_gemm || mp == n; /* exact: the own kernel writes just n rows */
    struct cuk_gemv_fp8_args a = {.m = mb,
                                  .n = w->rows,
                                  .k = w->cols,
                                  .w = w->w,
                                  .w_scale = w->scale,
                                  .w_scale_ld = w->sld,
                                  .x = c->xq,
                                  .x_ld = w->cols,
                                  .x_scale = c->xs,
                                  .x_scale_ld = mp,
                                  .y = direct ? (void *)y : (void *)c->ysc,
                                  .y_ld = w->rows,
                                  .y_type = CUK_F32};
    char e2[ERR_LEN];
    if (gemm_fp8_linear(c->gemm, &a, c->st, e2)) {
        ops__fail(o, ERR_CUDA, e2);
        return;
    }
    if (!direct)
        CK(c,
           cudaMemcpyAsync(y, c->ysc, (size_t)n * w->rows * sizeof(float), cudaMemcpyDeviceToDevice,
                           c->st),
           "copy");
}

static void cu_rmsnorm(struct ops *o, const float *x, int ldx, const float *g, int n, int dim,
                       float eps, float *y, int ldy)
{
    struct ops_cuda *c = C(o);
    join(c, x);
    join(c, y);
    prof(c, OPS_PROF_NORM);
    pq_wrote(c, y, n > 0 ? ((size_t)(n - 1) * ldy + dim) * sizeof(float) : 0);
    /* the CPU's summation order, not cuk_rmsnorm_quant's: see kernels/cuda/norm.h why */
    struct cuk_rmsnorm_f32_args a = {
        .m = n, .d = dim, .x = x, .x_ld = ldx, .w = g, .eps = eps, .y = y, .y_ld = ldy};
    KR(c, cuk_rmsnorm_f32(&a, c->st), "rmsnorm");
}

/* The norm with next's activation quantization in the same kernel (bitwise the separate one's:
 * kernels/cuda/norm.h); next's ops_linear on y then skips its own. */
static void cu_rmsnorm_lin(struct ops *o, const float *x, int ldx, const float *g, int n, int dim,
                           float eps, float *y, int ldy, const struct ops_lin *next)
{
    struct ops_cuda *c = C(o);
    int mp = pq_mp(c, next, n, dim);
    if (!mp || ldy != dim || dim > CUK_RMSNORM_F32_MAX_D) {
        cu_rmsnorm(o, x, ldx, g, n, dim, eps, y, ldy);
        return;
    }
    join(c, x);
    join(c, y);
    prof(c, OPS_PROF_NORM);
    pq_wrote(c, y, (size_t)n * dim * sizeof(float));
    struct cuk_rmsnorm_f32_args a = {.m = n,
                                     .d = dim,
                                     .x = x,
                                     .x_ld = ldx,
                                     .w = g,
                                     .eps = eps,
                                     .y = y,
                                     .y_ld = ldy,
                                     .q = c->xq,
                                     .q_ld = dim,
                                     .q_scale = c->xs,
                                     .q_scale_ld = mp,
                                     .ue8m0 = o->fp8_ue8m0};
    KR(c, cuk_rmsnorm_f32(&a, c->st), "rmsnorm");
    pq_set(c, y, n, dim, mp);
}

/* The device (cos, sin) table of n positions pos (host), [n][n_pairs][2], or NULL after a
 * failure. Computed here exactly as the CPU backend does (cosf/sinf of the fp32 angle), so both
 * rotate bit-identically (device sincosf differs by an ulp now and then, and one ulp flips bf16
 * roundings of the cached k_pe). Every RoPE call of a forward uses the batch's positions or, in
 * model.c's attention passes, a sub-range of the same array: the table is built once per forward
 * (at the k_pe call over the whole batch) and a sub-range is served at its offset; the copy in
 * cs_pos checks that the values are still the same. A graph-mode forward reads the step inputs'
 * table (built by ops_graph_begin), never a staged one. */
static const float *rope_cs(struct ops_cuda *c, const struct ops_rope *r, const int32_t *pos, int n)
{
    struct cgraphs *g = &c->gr;
    if (g->on && pos >= g->pos && pos + n <= g->pos + g->n && r->n_pairs == g->np)
        return g->d_cs + (size_t)(pos - g->pos) * g->np * 2;
    if (r->n_pairs != c->freq_n || memcmp(r->freq, c->h_freq, (size_t)r->n_pairs * 4)) {
        not_graphable(c, "a RoPE table upload");
        memcpy(c->h_freq, r->freq, (size_t)r->n_pairs * 4);
        c->freq_n = r->n_pairs;
        c->cs_n = 0;
        CK(c, cudaMemcpy(c->d_freq, c->h_freq, (size_t)r->n_pairs * 4, cudaMemcpyHostToDevice),
           "freq upload");
    }
    uintptr_t src = (uintptr_t)pos, off = (src - c->cs_src) / sizeof *pos;
    if (src < c->cs_src || (src - c->cs_src) % sizeof *pos ||
        off + (uintptr_t)n > (uintptr_t)c->cs_n ||
        memcmp(pos, c->cs_pos + off, (size_t)n * sizeof *pos)) {
        size_t cb = (size_t)n * r->n_pairs * 2 * sizeof(float);
        float *h = stage(c, cb);
        if (!h) return NULL;
        for (int t = 0; t < n; t++) {
            float p = (float)pos[t];
            for (int i = 0; i < r->n_pairs; i++) {
                float ang = p * r->freq[i];
                h[((size_t)t * r->n_pairs + i) * 2] = cosf(ang);
                h[((size_t)t * r->n_pairs + i) * 2 + 1] = sinf(ang);
            }
        }
        CK(c, cudaMemcpyAsync(c->d_cs, h, cb, cudaMemcpyHostToDevice, c->st), "upload");
        memcpy(c->cs_pos, pos, (size_t)n * sizeof *pos);
        c->cs_n = n;
        c->cs_src = src;
        off = 0;
    }
    return c->d_cs + (size_t)off * r->n_pairs * 2;
}

/* The kernel's arguments for one job (out of place when x != y: no copy first) */
static struct cuk_rope_args rope_args(struct ops_cuda *c, const struct ops_rope *r, int n,
                                      const float *cs, const struct ops_rope_job *j)
{
    struct cuk_rope_args a = {.m = n,
                              .n_heads = j->n_heads,
                              .rot_dim = 2 * r->n_pairs,
                              .x = j->y,
                              .x_ld = j->ldy_tok,
                              .head_stride = j->ldy_head,
                              .rot_off = 0,
                              .pos = c->d_i32, /* unused with a cs table */
                              .freqs = c->d_freq,
                              .cs = cs};
    if (j->x != j->y) {
        a.src = j->x;
        a.src_ld = j->ldx_tok;
        a.src_head_stride = j->ldx_head;
    }
    return a;
}

static void cu_rope2(struct ops *o, const struct ops_rope *r, const int32_t *pos, int n,
                     const struct ops_rope_job *ja, const struct ops_rope_job *jb)
{
    struct ops_cuda *c = C(o);
    join(c, NULL);
    prof(c, OPS_PROF_ROPE);
    c->pq.x = NULL;
    if (r->amp != 1.0f || r->n_pairs > 64) {
        ops__fail(o, ERR_UNSUPPORTED, "cuda ops: RoPE amplitude != 1 or > 128 dims");
        return;
    }
    ASSERT(n >= 0 && n <= c->max_pad); /* cs_pos and d_cs hold max_pad positions */
    if (n == 0) return;
    const float *cs = rope_cs(c, r, pos, n);
    if (!cs) return;
    struct cuk_rope_args a = rope_args(c, r, n, cs, ja), b = {0};
    if (jb) b = rope_args(c, r, n, cs, jb);
    KR(c, cuk_rope2(&a, jb ? &b : NULL, c->st), "rope");
}

static void cu_rope(struct ops *o, const struct ops_rope *r, const int32_t *pos, int n, int nh,
                    const float *x, int ldx_tok, int ldx_head, float *y, int ldy_tok, int ldy_head)
{
    struct ops_rope_job j = {.n_heads = nh,
                             .x = x,
                             .ldx_tok = ldx_tok,
                             .ldx_head = ldx_head,
                             .y = y,
                             .ldy_tok = ldy_tok,
                             .ldy_head = ldy_head};
    cu_rope2(o, r, pos, n, &j, NULL);
}

/* Per-head weights: an FP8 view stays e4m3 + its scales on the device (kv_b: 16 MiB a layer for
 * DeepSeek-V3 instead of 64 MiB in fp32); so does a GGML / F16 / F32 one after re-quantization
 * (unless gpu.requant_ggml = off). Up to 16 tokens head_matmul reads it directly
 * (cuk_head_matmul_fp8); larger batches expand it into one shared fp32 scratch at the first
 * head_matmul that uses it (W_UK then W_UV of a layer share one expansion; ~35 us a V3 layer) and
 * run SGEMM. Other types keep an fp32 copy. */
static int cu_heads_create(struct ops *o, const struct wt_view *v, const float *f32,
                           struct ops_heads **out, char *err)
{
    struct ops_cuda *c = C(o);
    struct ops_heads *h = calloc(1, sizeof *h);
    if (!h) return err_set(err, ERR_NOMEM, "cuda ops: out of memory");
    h->rows = v->rows;
    h->cols = v->cols;
    c->epoch++; /* the shared expansion scratch may move */
    size_t n = (size_t)v->rows * (size_t)v->cols, fb = n * sizeof(float);
    int rc = 0;
    if (v->type != QTYPE_F8_E4M3 && v->type != QTYPE_BF16 && !c->keep_ggml) {
        /* GGML / F16 / F32: re-quantize the fp32 values to FP8 (BF16 keeps the fp32 copy, as
         * BF16 linears stay bf16) */
        free(h);
        struct wt_view fv = {.type = QTYPE_F32,
                             .rows = v->rows,
                             .cols = v->cols,
                             .data = f32,
                             .row_bytes = (size_t)v->cols * sizeof(float)};
        uint8_t *q;
        float *s;
        int ok = 1;
        size_t rb = qtype_row_bytes(v->type, v->cols, &ok);
        rc = requant_host(c, &fv, ok ? (double)rb * (double)v->rows : (double)fb, &q, &s, err);
        if (rc) return rc;
        fv.type = QTYPE_F8_E4M3;
        fv.data = q;
        fv.row_bytes = (size_t)v->cols;
        fv.scale = s;
        rc = cu_heads_create(o, &fv, NULL, out, err);
        free(q);
        free(s);
        return rc;
    }
    if (v->type == QTYPE_F8_E4M3) {
        size_t sb = (size_t)((v->rows + 127) / 128) * (size_t)((v->cols + 127) / 128) * 4;
        if (cudaMalloc((void **)&h->q, n) != cudaSuccess ||
            cudaMalloc((void **)&h->scale, sb) != cudaSuccess)
            rc = err_set(err, ERR_NOMEM, "cuda ops: out of device memory for per-head weights");
        for (int64_t r = 0; !rc && r < v->rows; r++)
            if (cudaMemcpy(h->q + r * v->cols, (const char *)v->data + r * v->row_bytes,
                           (size_t)v->cols, cudaMemcpyHostToDevice) != cudaSuccess)
                rc = err_set(err, ERR_CUDA, "cuda ops: weight upload failed");
        if (!rc && cudaMemcpy(h->scale, v->scale, sb, cudaMemcpyHostToDevice) != cudaSuccess)
            rc = err_set(err, ERR_CUDA, "cuda ops: scale upload failed");
        if (!rc && fb > c->heads_size) {
            cudaFree(c->heads_f32);
            c->heads_size = 0;
            if (cudaMalloc((void **)&c->heads_f32, fb) != cudaSuccess) {
                c->heads_f32 = NULL;
                rc = err_set(err, ERR_NOMEM, "cuda ops: out of device memory (heads scratch)");
            } else {
                c->heads_size = fb;
            }
        }
    } else if (cudaMalloc((void **)&h->f32, fb) != cudaSuccess) {
        rc = err_set(err, ERR_NOMEM, "cuda ops: out of device memory for per-head weights");
    } else if (cudaMemcpy(h->f32, f32, fb, cudaMemcpyHostToDevice) != cudaSuccess) {
        rc = err_set(err, ERR_CUDA, "cuda ops: weight upload failed");
    }
    if (rc) {
        cudaFree(h->q);
        cudaFree(h->scale);
        cudaFree(h->f32);
        free(h);
        return rc;
    }
    *out = h;
    return 0;
}

static void cu_heads_destroy(struct ops *o, struct ops_heads *h)
{
    struct ops_cuda *c = C(o);
    host_sync(c);
    c->epoch++;
    if (c->heads_cur == h) c->heads_cur = NULL;
    cudaFree(h->q);
    cudaFree(h->scale);
    cudaFree(h->f32);
    free(h);
}

static void cu_head_matmul(struct ops *o, const struct ops_heads *h, int64_t w_off, int64_t w_head,
                           int rows, int cols, int trans, int n, int nh, const float *x,
                           int ldx_tok, int ldx_head, float *y, int ldy_tok, int ldy_head)
{
    struct ops_cuda *c = C(o);
    join(c, NULL);
    prof(c, OPS_PROF_HEADMM);
    c->pq.x = NULL; /* strided output: simply forget */
    const float *w = h->f32;
    /* decode-sized batches read the FP8 weights directly (other shapes: expand) */
    if (!w && cols == h->cols && w_off % h->cols == 0 && w_head % h->cols == 0) {
        struct cuk_head_matmul_fp8_args a = {.q = h->q,
                                             .scale = h->scale,
                                             .scale_ld = (int)((h->cols + 127) / 128),
                                             .r0 = w_off / h->cols,
                                             .head_rows = w_head / h->cols,
                                             .rows = rows,
                                             .cols = cols,
                                             .trans = trans,
                                             .n = n,
                                             .n_heads = nh,
                                             .x = x,
                                             .x_ld_tok = ldx_tok,
                                             .x_ld_head = ldx_head,
                                             .y = y,
                                             .y_ld_tok = ldy_tok,
                                             .y_ld_head = ldy_head};
        if (cuk_head_matmul_fp8_fits(&a)) {
            KR(c, cuk_head_matmul_fp8(&a, c->st), "head matmul fp8");
            return;
        }
    }
    if (!w) {
        if (c->heads_cur != h) {
            struct cuk_fp8_to_f32_args a = {.rows = h->rows,
                                            .cols = h->cols,
                                            .q = h->q,
                                            .scale = h->scale,
                                            .scale_ld = (int)((h->cols + 127) / 128),
                                            .out = c->heads_f32};
            KR(c, cuk_fp8_to_f32(&a, c->st), "fp8 expand");
            c->heads_cur = h;
        }
        w = c->heads_f32;
    }
    w += w_off;
    const float one = 1.0f, zero = 0.0f;
    /* column-major view: W_h is cols x rows (ld cols), X_h is (in) x n (ld ldx_tok) */
    cublasStatus_t s;
    if (!trans)
        s = cublasSgemmStridedBatched(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, rows, n, cols, &one, w,
                                      cols, w_head, x, ldx_tok, ldx_head, &zero, y, ldy_tok,
                                      ldy_head, nh);
    else
        s = cublasSgemmStridedBatched(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, cols, n, rows, &one, w,
                                      cols, w_head, x, ldx_tok, ldx_head, &zero, y, ldy_tok,
                                      ldy_head, nh);
    if (s != CUBLAS_STATUS_SUCCESS) ops__fail(o, ERR_CUDA, "cuda ops: cublasSgemmStridedBatched");
}

static int gpu_mla(const struct model_kv *kv, int n_heads)
{
    /* the tensor-core path's limits; an f32 cache stays on the host (CPU attention) */
    return kv->kv_dim == CUK_MLA_DIM && n_heads % 16 == 0 && kv->type == MODEL_KV_BF16;
}

/* the device mirror of kv (allocated when kv changes: the first forward on a new cache) */
static int kv_mirror(struct ops_cuda *c, const struct model_kv *kv)
{
    if (c->kv_dev && c->kv_key == kv && c->kv_layers == kv->n_layers &&
        c->kv_blocks == kv->n_blocks && c->kv_bt == kv->block_tokens && c->kv_dim == kv->kv_dim)
        return 0;
    host_sync(c);
    c->epoch++;
    cudaFree(c->kv_dev);
    c->kv_dev = NULL;
    free(c->kv_dev_layer);
    size_t per = (size_t)kv->n_blocks * kv->block_tokens * kv->kv_dim * sizeof(uint16_t);
    c->kv_dev_layer = calloc((size_t)kv->n_layers, sizeof *c->kv_dev_layer);
    if (!c->kv_dev_layer || cudaMalloc(&c->kv_dev, per * kv->n_layers) != cudaSuccess) {
        c->kv_dev = NULL;
        char msg[ERR_LEN];
        snprintf(msg, sizeof msg,
                 "cuda ops: no device memory for the KV cache (%.2f GiB; lower "
                 "engine.kv_blocks)",
                 (double)per * kv->n_layers / (1 << 30));
        ops__fail(&c->base, ERR_NOMEM, msg);
        return -1;
    }
    for (int l = 0; l < kv->n_layers; l++)
        c->kv_dev_layer[l] = (uint16_t *)((char *)c->kv_dev + per * l);
    c->kv_key = kv;
    c->kv_layers = kv->n_layers;
    c->kv_blocks = kv->n_blocks;
    c->kv_bt = kv->block_tokens;
    c->kv_dim = kv->kv_dim;
    LOG_INFO("ops", "device KV cache: %d layers x %d blocks of %d tokens (%.2f GiB)", kv->n_layers,
             kv->n_blocks, kv->block_tokens, (double)per * kv->n_layers / (1 << 30));
    return 0;
}

/* Store the pending kv rows on the side where attention runs (GPU mirror or host cache). */
static void kv_flush(struct ops_cuda *c, int gpu)
{
    const struct model_kv *kv = c->kvs.kv;
    const struct model_batch *b = c->kvs.b;
    if (!kv) return;
    c->kvs.kv = NULL;
    int n = b->n_tokens;
    if (!gpu) {
        float *h = to_host(c, 0, c->kvs.x, (size_t)n * kv->kv_dim * sizeof(float));
        if (!h) return;
        host_sync(c);
        ops_kv_store(c->cpu, kv, c->kvs.layer, b, h);
        return;
    }
    if (kv_mirror(c, kv)) return;
    const int32_t *d_slots;
    if (c->gr.on && b->pos == c->gr.pos && n == c->gr.n) { /* the step inputs' */
        d_slots = c->gr.d_slots;
    } else {
        int32_t *slots = stage(c, (size_t)n * sizeof(int32_t));
        if (!slots) return;
        for (int t = 0; t < n; t++) {
            const struct model_seq *s = &b->seqs[b->seq[t]];
            int p = b->pos[t];
            slots[t] = s->blocks[p / kv->block_tokens] * kv->block_tokens + p % kv->block_tokens;
        }
        d_slots = push(c, slots, n, 0);
    }
    struct cuk_mla_kv_store_args a = {.m = n,
                                      .kv = c->kvs.x,
                                      .kv_ld = kv->kv_dim,
                                      .slots = d_slots,
                                      .cache = c->kv_dev_layer[c->kvs.layer]};
    KR(c, cuk_mla_kv_store(&a, c->st), "kv_store");
}

/* Deferred: whether the cache lives on the device depends on the attention shape, which the next
 * ops_mla_attn gives (model.c calls the two in pairs; x stays untouched in between). */
static void cu_kv_store(struct ops *o, const struct model_kv *kv, int layer,
                        const struct model_batch *b, const float *x)
{
    struct ops_cuda *c = C(o);
    join(c, NULL);
    kv_flush(c, c->kv_dev != NULL);
    c->kvs.kv = kv;
    c->kvs.b = b;
    c->kvs.x = x;
    c->kvs.layer = layer;
}

/* grow the attention workspace to ws bytes (and half again); 0 when out of memory */
static int mla_ws_fit(struct ops_cuda *c, size_t ws)
{
    if (ws <= c->mla_ws_size) return 1;
    host_sync(c); /* queued attention may use the old one */
    c->epoch++;
    cudaFree(c->mla_ws);
    c->mla_ws_size = 0;
    if (cudaMalloc(&c->mla_ws, ws + ws / 2) != cudaSuccess) {
        c->mla_ws = NULL;
        ops__fail(&c->base, ERR_NOMEM, "cuda ops: out of device memory (attention workspace)");
        return 0;
    }
    c->mla_ws_size = ws + ws / 2;
    return 1;
}

/* Prompt runs of at least this many tokens take the GEMM attention (gpu.prefill_attention_mb). */
#define MLA_GEMM_RUN 64

/* grow the GEMM attention's workspace to contexts of L positions (to a multiple of 4096 where
 * the score scratch allows); 0 when the scratch cannot hold one query's scores at L (the run
 * keeps the kernel) or the device is out of memory (every later run too) */
static int mlap_fit(struct ops_cuda *c, int nh, int L)
{
    if (!c->mlap || c->mlap_off || cuk_mla_prefill_workspace(L, nh, c->mlap_score) == 0) return 0;
    if (L <= c->mlap_ctx) return 1;
    int ctx = (int)(((int64_t)L + 4095) / 4096 * 4096);
    if (ctx < L || cuk_mla_prefill_workspace(ctx, nh, c->mlap_score) == 0) ctx = L;
    size_t ws = cuk_mla_prefill_workspace(ctx, nh, c->mlap_score);
    host_sync(c); /* queued attention may use the old one */
    c->epoch++;
    cudaFree(c->mlap_ws);
    c->mlap_ctx = 0;
    if (cudaMalloc(&c->mlap_ws, ws) != cudaSuccess) {
        c->mlap_ws = NULL;
        cudaGetLastError();
        LOG_WARN("gpu",
                 "prefill attention: no device memory for %.0f MiB of workspace "
                 "(context %d); prompt runs take the per-query kernel from now on",
                 (double)ws / (1 << 20), L);
        c->mlap_off = 1; /* no host synchronization and allocation attempt per layer */
        return 0;
    }
    c->mlap_ctx = ctx;
    return 1;
}

/* the kernel on query rows [t0, t1) of a batch's arguments */
static void mla_rows(struct ops_cuda *c, const struct cuk_mla_decode_args *da, int t0, int t1)
{
    struct cuk_mla_decode_args a = *da;
    a.n_q = t1 - t0;
    a.q += (size_t)t0 * a.q_ld;
    a.block_table += (size_t)t0 * a.bt_ld;
    a.seq_len += t0;
    a.out += (size_t)t0 * a.out_ld;
    KR(c, cuk_mla_decode(&a, c->st), "mla_decode");
}

/* A batch's attention: runs of >= MLA_GEMM_RUN consecutive tokens of one sequence at consecutive
 * positions as GEMMs, the tokens between them through the kernel (in as few launches as the runs
 * allow). */
static void mla_split(struct ops_cuda *c, const struct model_batch *b,
                      const struct cuk_mla_decode_args *da)
{
    const int n = b->n_tokens, nh = da->n_heads;
    int d0 = 0; /* first row not yet given to either */
    for (int t0 = 0; t0 < n;) {
        int t1 = t0 + 1;
        while (t1 < n && b->seq[t1] == b->seq[t0] && b->pos[t1] == b->pos[t1 - 1] + 1) t1++;
        if (t1 - t0 >= MLA_GEMM_RUN && mlap_fit(c, nh, b->pos[t0] + (t1 - t0))) {
            if (t0 > d0) mla_rows(c, da, d0, t0);
            struct cuk_mla_prefill_args pa = {
                .n_q = t1 - t0,
                .n_heads = nh,
                .pos0 = b->pos[t0],
                .max_ctx = c->mlap_ctx,
                .q = da->q + (size_t)t0 * da->q_ld,
                .cache = da->cache,
                .block_tokens = da->block_tokens,
                .block_table = da->block_table + (size_t)t0 * da->bt_ld,
                .scale = da->scale,
                .out = da->out + (size_t)t0 * da->out_ld,
                .exact = 0,
                .ws = c->mlap_ws,
                .ws_bytes = cuk_mla_prefill_workspace(c->mlap_ctx, nh, c->mlap_score)};
            char e2[ERR_LEN];
            if (cuk_mla_prefill(c->mlap, &pa, c->st, e2)) {
                /* the kernel rewrites every output row of the run, whatever the op left: this
                 * run and the later ones go to it (a sticky CUDA error fails it too) */
                LOG_WARN("gpu",
                         "prefill attention: %s; prompt runs take the per-query kernel "
                         "from now on",
                         e2);
                c->mlap_off = 1;
                t0 = t1;
                continue;
            }
            c->stats.attn_gemm_runs++;
            c->stats.attn_gemm_tokens += t1 - t0;
            d0 = t1;
        }
        t0 = t1;
    }
    if (n > d0) mla_rows(c, da, d0, n);
}

static void cu_mla_attn(struct ops *o, const struct model_kv *kv, int layer,
                        const struct model_batch *b, int nh, int kv_lora, float scale,
                        const float *q, float *out)
{
    struct ops_cuda *c = C(o);
    join(c, NULL);
    prof(c, OPS_PROF_ATTN);
    int n = b->n_tokens;
    c->pq.x = NULL;
    int gpu = gpu_mla(kv, nh) && kv_lora == CUK_MLA_LORA;
    kv_flush(c, gpu);
    if (!gpu) {
        size_t qb = (size_t)n * nh * kv->kv_dim * sizeof(float);
        size_t ob = (size_t)n * nh * kv_lora * sizeof(float);
        float *hq = to_host(c, 0, q, qb), *ho = hbuf(c, 1, ob);
        if (!hq || !ho) return;
        host_sync(c);
        ops_mla_attn(c->cpu, kv, layer, b, nh, kv_lora, scale, hq, ho);
        to_dev(c, out, ho, ob);
        return;
    }
    if (kv_mirror(c, kv)) return;
    struct cgraphs *g = &c->gr;
    if (g->on && b->pos >= g->pos && b->pos + n <= g->pos + g->n) {
        /* the step inputs: block tables, lengths and the length class's split plan */
        size_t off = (size_t)(b->pos - g->pos);
        if (!mla_ws_fit(c, cuk_mla_decode_workspace_size(n, nh, g->max_len))) return;
        struct cuk_mla_decode_args a = {.n_q = n,
                                        .n_heads = nh,
                                        .q = q,
                                        .q_ld = nh * CUK_MLA_DIM,
                                        .cache = c->kv_dev_layer[layer],
                                        .block_tokens = kv->block_tokens,
                                        .block_table = g->d_bt + off * g->bt_ld,
                                        .bt_ld = g->bt_ld,
                                        .seq_len = g->d_len + off,
                                        .max_seq_len = g->max_len,
                                        .scale = scale,
                                        .out = out,
                                        .out_ld = nh * kv_lora,
                                        .workspace = c->mla_ws,
                                        .workspace_size = c->mla_ws_size};
        KR(c, cuk_mla_decode(&a, c->st), "mla_decode");
        return;
    }
    int bt_ld = 1, max_len = 1;
    for (int s = 0; s < b->n_seqs; s++)
        if (b->seqs[s].n_blocks > bt_ld) bt_ld = b->seqs[s].n_blocks;
    size_t need = (size_t)n * bt_ld;
    int32_t *len = stage(c, (need + n) * sizeof(int32_t)), *hb = len + n; /* one piece */
    if (!len) return;
    if (need > c->d_bt_n) {
        c->epoch++;
        cudaFree(c->d_bt);
        c->d_bt_n = 0;
        if (cudaMalloc((void **)&c->d_bt, need * 2 * sizeof(int32_t)) != cudaSuccess) {
            c->d_bt = NULL;
            ops__fail(o, ERR_NOMEM, "cuda ops: out of device memory (block tables)");
            return;
        }
        c->d_bt_n = need * 2;
    }
    for (int t = 0; t < n; t++) {
        const struct model_seq *s = &b->seqs[b->seq[t]];
        memcpy(hb + (size_t)t * bt_ld, s->blocks, (size_t)s->n_blocks * sizeof(int32_t));
        for (int i = s->n_blocks; i < bt_ld; i++) hb[(size_t)t * bt_ld + i] = 0;
        len[t] = b->pos[t] + 1;
        if (len[t] > max_len) max_len = len[t];
    }
    if (!mla_ws_fit(c, cuk_mla_decode_workspace_size(n, nh, max_len))) return;
    CK(c, cudaMemcpyAsync(c->d_bt, hb, need * sizeof(int32_t), cudaMemcpyHostToDevice, c->st),
       "upload");
    struct cuk_mla_decode_args a = {.n_q = n,
                                    .n_heads = nh,
                                    .q = q,
                                    .q_ld = nh * CUK_MLA_DIM,
                                    .cache = c->kv_dev_layer[layer],
                                    .block_tokens = kv->block_tokens,
                                    .block_table = c->d_bt,
                                    .bt_ld = bt_ld,
                                    .seq_len = push(c, len, n, 0),
                                    .max_seq_len = max_len,
                                    .scale = scale,
                                    .out = out,
                                    .out_ld = nh * kv_lora,
                                    .workspace = c->mla_ws,
                                    .workspace_size = c->mla_ws_size};
    if (c->mlap && n >= MLA_GEMM_RUN) mla_split(c, b, &a);
    else KR(c, cuk_mla_decode(&a, c->st), "mla_decode");
}

static void cu_router(struct ops *o, const struct ops_router *r, const float *logits,
                      const float *bias, int n, int32_t *ids, float *w)
{
    struct ops_cuda *c = C(o);
    join(c, NULL);
    prof(c, OPS_PROF_ROUTER);
    pq_wrote(c, ids, (size_t)n * r->top_k * sizeof(int32_t));
    pq_wrote(c, w, (size_t)n * r->top_k * sizeof(float));
    struct cuk_router_args a = {.m = n,
                                .n_experts = r->n_expert,
                                .n_group = r->n_group,
                                .topk_group = r->topk_group,
                                .top_k = r->top_k,
                                .scoring = r->softmax ? CUK_ROUTER_SOFTMAX : CUK_ROUTER_SIGMOID,
                                .norm_topk = r->norm_topk_prob,
                                .scaling = r->scale,
                                .logits = logits,
                                .bias = bias,
                                .ids = ids,
                                .weights = w};
    KR(c, cuk_router(&a, c->st), "router");
}

static void CUDART_CB moe_host(void *ud)
{
    struct moe_job *j = ud;
    struct timespec t0, t1;
    if (j->count) ec_add(j->m->cnt, j->m->cnt_row, j->ids, (int64_t)j->n * j->top_k);
    const int32_t *ids = j->ids;
    if (j->part) { /* expert deferral: this part's routes, the others at -1 */
        ops__defer_ids(j->ids, j->w, j->n, j->top_k, j->n_defer, j->part - 1, j->mids);
        ids = j->mids;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ops_moe(j->cpu, j->m->cpu, j->x, j->n, ids, j->w, j->top_k, j->y);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long pairs = 0;
    for (long long i = 0; i < (long long)j->n * j->top_k; i++) pairs += ids[i] >= 0;
    j->pairs = pairs;
    j->seconds = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    char e2[ERR_LEN];
    int rc = ops_error(j->cpu, e2);
    if (rc && !j->rc) { /* which record, and its shape: a record read with another forward's
                         * inputs shows here (docs/gpu.md, CUDA graphs) */
        j->rc = rc;
        snprintf(j->err, sizeof j->err,
                 "cuda ops: CPU experts (%s record %d, %d tokens x %d routes%s): %.150s",
                 j->slot < 0 ? "ring" : "graph-mode", j->slot, j->n, j->top_k,
                 j->graphed ? ", in a graph" : "", e2);
    }
}

static void cu_swiglu(struct ops *o, const float *gate, const float *up, int64_t n, float *y);

/* Routed experts on the GPU (gpu.placement = gpu, or the first gpu.expert_layers MoE layers):
 * the routes come to the host (one synchronization per layer), then per active expert its
 * tokens' rows are gathered, run through gate/up (FP8 linears), SwiGLU and down, and added into
 * y scaled by their routing weights. A loop of small launches: meant for small models, where the
 * experts fit the GPU; big models keep the CPU pool. */
static void moe_gpu(struct ops_cuda *c, const struct ops_moe *m, const float *x, int n,
                    const int32_t *ids, const float *w, int top_k, float *y)
{
    size_t kb = (size_t)n * top_k * sizeof(float), hb = (size_t)m->hidden * sizeof(float);
    const int32_t *hid = (const int32_t *)to_host(c, 0, ids, kb);
    const float *hw = to_host(c, 1, w, kb);
    if (!hid || !hw) return;
    host_sync(c);
    ec_add(m->cnt, m->cnt_row, hid, (int64_t)n * top_k);
    CK(c, cudaMemsetAsync(y, 0, (size_t)n * hb, c->st), "memset");
    /* the (token, k) pairs grouped by expert: counting sort, token order within an expert */
    const int E = m->n_expert, np = n * top_k;
    size_t need = (size_t)np + (size_t)E + 1;
    if (need > c->ex_sort_n) {
        int32_t *p = realloc(c->ex_sort, need * sizeof *p);
        if (!p) {
            ops__fail(&c->base, ERR_NOMEM, "cuda ops: out of memory (GPU experts)");
            return;
        }
        c->ex_sort = p;
        c->ex_sort_n = need;
    }
    int32_t *start = c->ex_sort, *pair = c->ex_sort + E + 1;
    memset(start, 0, ((size_t)E + 1) * sizeof *start);
    for (int p = 0; p < np; p++)
        if (hid[p] >= 0 && hid[p] < E) start[hid[p] + 1]++;
    for (int e = 0; e < E; e++) start[e + 1] += start[e];
    for (int p = 0; p < np; p++) /* start[e] moves to the end of expert e */
        if (hid[p] >= 0 && hid[p] < E) pair[start[hid[p]]++] = p;
    for (int e = E; e > 0; e--) start[e] = start[e - 1];
    start[0] = 0;
    for (int e = 0; e < E; e++) {
        const int32_t *pe = pair + start[e];
        int ne = start[e + 1] - start[e];
        if (!ne) continue;
        for (int i = 0; i < ne; i++)
            CK(c,
               cudaMemcpyAsync(c->ex_x + (size_t)i * m->hidden,
                               x + (size_t)(pe[i] / top_k) * m->hidden, hb,
                               cudaMemcpyDeviceToDevice, c->st),
               "gather");
        c->pq.x = NULL; /* ex_x has new rows */
        cu_linear(&c->base, m->gpu[3 * e], c->ex_x, ne, c->ex_g);
        cu_linear(&c->base, m->gpu[3 * e + 1], c->ex_x, ne, c->ex_u);
        cu_swiglu(&c->base, c->ex_g, c->ex_u, (int64_t)ne * m->inter, c->ex_g);
        cu_linear(&c->base, m->gpu[3 * e + 2], c->ex_g, ne, c->ex_y);
        for (int i = 0; i < ne; i++) {
            struct cuk_add_args a = {.n = (size_t)m->hidden,
                                     .y = y + (size_t)(pe[i] / top_k) * m->hidden,
                                     .x = c->ex_y + (size_t)i * m->hidden,
                                     .alpha = hw[pe[i]]};
            KR(c, cuk_add(&a, c->st), "add");
        }
    }
}

/* Enqueue the CPU experts of a layer as a job on the side stream (see cu_moe). Routes: device
 * ids (copied with x and w; the host function adds them to the routing counts), or host_ids
 * (any host memory; only after a host synchronization, when no job uses the pinned slots; the
 * caller counted the routes). finish = 0 leaves the job open: the caller enqueues more
 * side-stream work after the result's copy into y and then calls job_finish. */
static struct moe_job *job_enqueue(struct ops_cuda *c, const struct ops_moe *m, const float *x,
                                   int n, const int32_t *ids, const int32_t *host_ids,
                                   const float *w, int top_k, float *y, int finish, int part,
                                   int n_defer);
static void job_finish(struct ops_cuda *c, struct moe_job *j, float *y, size_t bytes);
static struct moe_job *step_job(struct ops_cuda *c);

/* a record's events (the ring's are destroyed in place, a graph job's with its memory) */
static void job_events_destroy(struct moe_job *j)
{
    cudaEvent_t *ev[] = {&j->ev_a, &j->ev_in, &j->ev_c, &j->ev_out, &j->ev_j};
    for (int e = 0; e < 5; e++)
        if (*ev[e]) cudaEventDestroy(*ev[e]);
}

static void job_free(struct moe_job *j)
{
    if (!j) return;
    job_events_destroy(j);
    free(j->mids);
    free(j);
}

/* Routed experts partly on the GPU (ops_cuda_stream.h): hot experts at every forward, streamed
 * ones for long prefills. The routes come to the host (one synchronization per layer) and are
 * counted there; cus_plan splits the active experts between the GPU and the CPU pool; the CPU
 * part runs as an ordinary expert job on the side stream while the main stream computes the GPU
 * part (cus_run) into s_acc; the side stream then waits for the GPU part and adds it into y after
 * the CPU result's copy, so the join (ev_out) covers both. A layer with no CPU part writes y on
 * the main stream directly; one with no GPU part is an ordinary job. */
static void moe_split(struct ops_cuda *c, const struct ops_moe *m, const float *x, int n,
                      const int32_t *ids, const float *w, int top_k, float *y)
{
    size_t kb = (size_t)n * top_k * sizeof(int32_t);
    const int32_t *hid = (const int32_t *)to_host(c, 0, ids, kb);
    int32_t *cids = hbuf(c, 1, kb);
    if (!hid || !cids) return;
    host_sync(c);
    ec_add(m->cnt, m->cnt_row, hid, (int64_t)n * top_k);
    long long cpairs = 0, hpairs = 0;
    int ngx = cus_plan(c->cus, m->st, hid, n, top_k, cids, &cpairs, &hpairs);
    ec_add_hot(m->cnt, hpairs);
    if (ngx == 0) { /* every route on the CPU: the routes are on the host (and counted) */
        job_enqueue(c, m, x, n, NULL, hid, w, top_k, y, 1, 0, 0);
        return;
    }
    struct moe_job *j = NULL;
    float *gout = y;
    if (cpairs > 0) {
        ASSERT(c->s_acc && c->s_acc_hidden >= m->hidden && n <= c->max_pad);
        if (!(j = job_enqueue(c, m, x, n, NULL, cids, w, top_k, y, 0, 0, 0))) return;
        gout = c->s_acc;
    }
    char e2[ERR_LEN];
    c->pq.x = NULL;
    int rc = cus_run(c->cus, m->st, x, n, top_k, w, gout, c->st, e2);
    if (rc) ops__fail(&c->base, rc, e2);
    if (!j) return;
    /* side stream: after the CPU part's copy into y, wait for the GPU part and add it */
    size_t yb = (size_t)n * m->hidden * sizeof(float);
    CK(c, cudaEventRecord(c->ev_g, c->st), "event");
    CK(c, cudaStreamWaitEvent(c->side, c->ev_g, 0), "stream wait");
    if (!rc) {
        struct cuk_add_args a = {.n = (size_t)n * m->hidden, .y = y, .x = c->s_acc, .alpha = 1.0f};
        KR(c, cuk_add(&a, c->side), "add");
    }
    job_finish(c, j, y, yb);
}

/* The next expert-job record of a graph-mode forward: one per expert call, each with its own
 * events, made on first use (an eager forward of the shape runs before its capture) and kept at
 * a fixed address, which a captured host node refers to. Record i serves the i-th expert call
 * of every graph-mode forward, whatever its token count: a replay first puts back the inputs its
 * graph captured (struct job_in, cu_graph_begin). */
static struct moe_job *step_job(struct ops_cuda *c)
{
    struct cgraphs *g = &c->gr;
    if (g->moe_i == g->n_jobs) {
        if (g->capturing) { /* the eager run had fewer: a different forward */
            not_graphable(c, "a new expert-job record");
            ops__fail(&c->base, ERR_INTERNAL, "cuda ops: graph capture needs a new job record");
            return NULL;
        }
        struct moe_job **a = realloc(g->jobs, (size_t)(g->n_jobs + 1) * sizeof *a);
        struct moe_job *j = calloc(1, sizeof *j);
        if (a) g->jobs = a;
        if (!a || !j || cudaEventCreate(&j->ev_a) != cudaSuccess ||
            cudaEventCreate(&j->ev_in) != cudaSuccess || cudaEventCreate(&j->ev_c) != cudaSuccess ||
            cudaEventCreate(&j->ev_out) != cudaSuccess ||
            cudaEventCreate(&j->ev_j) != cudaSuccess) {
            job_free(j);
            ops__fail(&c->base, ERR_NOMEM, "cuda ops: out of memory (expert-job records)");
            return NULL;
        }
        j->slot = g->n_jobs;
        g->jobs[g->n_jobs++] = j;
    }
    return g->jobs[g->moe_i++];
}

/* No host synchronization: the engine thread enqueues and goes on with the next layers, so their
 * launches hide under the CPU experts. The pinned buffers are shared by consecutive jobs: job
 * i+1's input copy is ordered on the main stream after its wait for job i's result, i.e. after
 * job i's host function and result copy. Only the job record itself is host-written while an
 * older job may run, hence the ring of N_JOBS records. */
static void cu_moe(struct ops *o, const struct ops_moe *m, const float *x, int n,
                   const int32_t *ids, const float *w, int top_k, float *y)
{
    struct ops_cuda *c = C(o);
    join_all(c);
    prof(c, OPS_PROF_MOE_IN);
    pq_wrote(c, y, (size_t)n * m->hidden * sizeof(float));
    if (m->gpu) {
        moe_gpu(c, m, x, n, ids, w, top_k, y);
        return;
    }
    if (cus_wants(c->cus, m->st, n)) {
        moe_split(c, m, x, n, ids, w, top_k, y);
        return;
    }
    job_enqueue(c, m, x, n, ids, NULL, w, top_k, y, 1, 0, 0);
}

/* The next job record, free, with room for n x top_k part routes (top_k 0: none needed): a
 * graph-mode forward's own record for this expert call (step_job), else the ring's next (one used
 * N_JOBS jobs ago has been joined long since: wait for it on the host). NULL (sticky error) when
 * none can be had. */
static struct moe_job *job_take(struct ops_cuda *c, int n, int top_k)
{
    struct moe_job *j;
    if (c->gr.on) {
        if (!(j = step_job(c))) return NULL;
    } else {
        ASSERT(c->next_job >= 0 && c->next_job < N_JOBS);
        j = &c->jobs[c->next_job];
        if (j->state) {
            ASSERT(j->state == 2 && j != c->pend && j != c->dpend);
            CK(c, cudaEventSynchronize(j->ev_j), "synchronize");
            retire(c, j);
        }
        c->next_job = (c->next_job + 1) % N_JOBS;
    }
    ASSERT(j->state == 0); /* a record still in use by the host-function thread */
    size_t need = (size_t)n * top_k;
    if (need > j->mids_n) {
        int32_t *p = realloc(j->mids, need * sizeof *p);
        if (!p) {
            ops__fail(&c->base, ERR_NOMEM, "cuda ops: out of memory (deferred routes)");
            return NULL;
        }
        j->mids = p;
        j->mids_n = need;
    }
    return j;
}

/* Expert deferral, on the job path: the immediate part is an ordinary job (its output y joined as
 * usual); the deferred part is a second host function on the side stream right after it, on the
 * same pinned inputs, its result copied into y_def and joined only when an op touches y_def (the
 * add after the next layer's attention), so it runs beside that attention. Off the job path (GPU
 * experts, hot or streamed ones) both parts run in turn, each as ops_moe with its routes. */
static void moe_defer_sync(struct ops_cuda *c, const struct ops_moe *m, const float *x, int n,
                           const int32_t *ids, const float *w, int top_k, int n_defer, float *y,
                           float *y_def);

static void cu_moe_defer(struct ops *o, const struct ops_moe *m, const float *x, int n,
                         const int32_t *ids, const float *w, int top_k, int n_defer, float *y,
                         float *y_def)
{
    struct ops_cuda *c = C(o);
    join_all(c);
    prof(c, OPS_PROF_MOE_IN);
    /* not captured yet: the deferred job's join in the next layer is untested in a graph */
    not_graphable(c, "expert deferral");
    pq_wrote(c, y, (size_t)n * m->hidden * sizeof(float));
    pq_wrote(c, y_def, (size_t)n * m->hidden * sizeof(float));
    if (m->gpu || cus_wants(c->cus, m->st, n)) {
        moe_defer_sync(c, m, x, n, ids, w, top_k, n_defer, y, y_def);
        return;
    }
    struct moe_job *a = job_enqueue(c, m, x, n, ids, NULL, w, top_k, y, 1, 1, n_defer);
    if (!a) return;
    size_t xb = (size_t)n * m->hidden * sizeof(float);
    float *hy = hbuf(c, 5, xb);
    struct moe_job *j = hy ? job_take(c, n, top_k) : NULL;
    if (!j) return;
    j->cpu = c->cpu;
    j->seconds = 0;
    j->pairs = 0;
    j->m = m;
    j->x = a->x;
    j->ids = a->ids;
    j->w = a->w;
    j->y = hy;
    j->n = n;
    j->top_k = top_k;
    j->rc = 0;
    j->err[0] = 0;
    j->count = 0; /* the immediate part's job counted the routes */
    j->part = 2;
    j->n_defer = n_defer;
    j->state = 1;
    /* no input copy: its "inputs ready" marks are where it starts on the side stream */
    CK(c, cudaEventRecord(j->ev_a, c->side), "event");
    CK(c, cudaEventRecord(j->ev_in, c->side), "event");
    CK(c, cudaLaunchHostFunc(c->side, moe_host, j), "host func");
    CK(c, cudaEventRecord(j->ev_c, c->side), "event");
    CK(c, cudaMemcpyAsync(y_def, hy, xb, cudaMemcpyHostToDevice, c->side), "moe out");
    CK(c, cudaEventRecord(j->ev_out, c->side), "event");
    c->dpend = j;
    c->dpend_y = y_def;
    c->dpend_bytes = xb;
}

static void moe_defer_sync(struct ops_cuda *c, const struct ops_moe *m, const float *x, int n,
                           const int32_t *ids, const float *w, int top_k, int n_defer, float *y,
                           float *y_def)
{
    size_t np = (size_t)n * top_k, kb = np * sizeof(int32_t);
    const int32_t *hid = (const int32_t *)to_host(c, 0, ids, kb);
    const float *hw = to_host(c, 1, w, kb);
    if (!hid || !hw) return;
    host_sync(c);
    if (np > c->dids_n) {
        cudaFree(c->d_dids);
        c->d_dids = NULL;
        c->dids_n = 0;
        if (cudaMalloc((void **)&c->d_dids, 2 * kb) != cudaSuccess) {
            c->d_dids = NULL;
            ops__fail(&c->base, ERR_NOMEM, "cuda ops: out of device memory (deferred routes)");
            return;
        }
        c->dids_n = np;
    }
    for (int part = 0; part < 2; part++) {
        int32_t *h = stage(c, kb);
        if (!h) return;
        ops__defer_ids(hid, hw, n, top_k, n_defer, part, h);
        CK(c, cudaMemcpyAsync(c->d_dids + part * np, h, kb, cudaMemcpyHostToDevice, c->st),
           "upload routes");
    }
    for (int part = 0; part < 2; part++) {
        const int32_t *d = c->d_dids + part * np;
        float *out = part ? y_def : y;
        if (m->gpu) moe_gpu(c, m, x, n, d, w, top_k, out);
        else moe_split(c, m, x, n, d, w, top_k, out);
    }
}

static struct moe_job *job_enqueue(struct ops_cuda *c, const struct ops_moe *m, const float *x,
                                   int n, const int32_t *ids, const int32_t *host_ids,
                                   const float *w, int top_k, float *y, int finish, int part,
                                   int n_defer)
{
    size_t xb = (size_t)n * m->hidden * sizeof(float), kb = (size_t)n * top_k * sizeof(float);
    float *hx = hbuf(c, 2, xb), *hy = hbuf(c, 3, xb);
    char *hk = hbuf(c, 4, 2 * kb);
    if (!hx || !hy || !hk) return NULL;
    if (c->gr.on && host_ids) not_graphable(c, "host routes");
    /* a graph's saved records (job_in) are checked against its token count at replay */
    if (c->gr.on && n != c->gr.n) not_graphable(c, "an expert call of another token count");
    struct moe_job *j = job_take(c, n, part ? top_k : 0);
    if (!j) return NULL;
    j->cpu = c->cpu;
    j->seconds = 0;
    j->pairs = 0;
    j->m = m;
    j->x = hx;
    j->y = hy;
    j->ids = (int32_t *)hk;
    j->w = (float *)(hk + kb);
    j->n = n;
    j->top_k = top_k;
    j->rc = 0;
    j->err[0] = 0;
    j->count = !host_ids && m->cnt;
    j->part = part;
    j->n_defer = n_defer;
    j->state = 1;
    if (host_ids) memcpy(j->ids, host_ids, kb);
    CK(c, cudaEventRecord(j->ev_a, c->st), "event");
    CK(c, cudaMemcpyAsync(hx, x, xb, cudaMemcpyDeviceToHost, c->st), "moe in");
    if (!host_ids) CK(c, cudaMemcpyAsync(j->ids, ids, kb, cudaMemcpyDeviceToHost, c->st), "moe in");
    CK(c, cudaMemcpyAsync(j->w, w, kb, cudaMemcpyDeviceToHost, c->st), "moe in");
    CK(c, cudaEventRecord(j->ev_in, c->st), "event");
    CK(c, cudaStreamWaitEvent(c->side, j->ev_in, 0), "stream wait");
    CK(c, cudaLaunchHostFunc(c->side, moe_host, j), "host func");
    CK(c, cudaEventRecord(j->ev_c, c->side), "event");
    CK(c, cudaMemcpyAsync(y, hy, xb, cudaMemcpyHostToDevice, c->side), "moe out");
    if (finish) job_finish(c, j, y, xb);
    return j;
}

static void job_finish(struct ops_cuda *c, struct moe_job *j, float *y, size_t bytes)
{
    CK(c, cudaEventRecord(j->ev_out, c->side), "event");
    c->pend = j;
    c->pend_y = y;
    c->pend_bytes = bytes;
}

static void cu_swiglu(struct ops *o, const float *gate, const float *up, int64_t n, float *y)
{
    struct ops_cuda *c = C(o);
    join(c, gate);
    join(c, up);
    join(c, y);
    prof(c, OPS_PROF_SWIGLU);
    pq_wrote(c, y, (size_t)n * sizeof(float));
    static const int fs[] = {2048, 1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1};
    int f = 1;
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
        if (n % fs[i] == 0) {
            f = fs[i];
            break;
        }
    struct cuk_swiglu_args a = {.m = (int)(n / f),
                                .f = f,
                                .gate = gate,
                                .gate_ld = f,
                                .up = up,
                                .up_ld = f,
                                .y = y,
                                .y_ld = f};
    KR(c, cuk_swiglu(&a, c->st), "swiglu");
}

/* SwiGLU on gate|up halves, with down's activation quantization fused when it can be */
static void cu_swiglu_gu(struct ops *o, const float *gu, int n, int dim, float *y,
                         const struct ops_lin *next)
{
    struct ops_cuda *c = C(o);
    join(c, gu);
    join(c, y);
    prof(c, OPS_PROF_SWIGLU);
    pq_wrote(c, y, (size_t)n * dim * sizeof(float));
    int mp = pq_mp(c, next, n, dim);
    struct cuk_swiglu_args a = {.m = n,
                                .f = dim,
                                .gate = gu,
                                .gate_ld = 2 * dim,
                                .up = gu + dim,
                                .up_ld = 2 * dim,
                                .y = y,
                                .y_ld = dim};
    if (mp) {
        a.q = c->xq;
        a.q_ld = dim;
        a.q_scale = c->xs;
        a.q_scale_ld = mp;
        a.ue8m0 = o->fp8_ue8m0;
    }
    KR(c, cuk_swiglu(&a, c->st), "swiglu");
    if (mp) pq_set(c, y, n, dim, mp);
}

static void cu_add(struct ops *o, float *y, const float *x, int64_t n)
{
    struct ops_cuda *c = C(o);
    join(c, x);
    join(c, y);
    prof(c, OPS_PROF_ADD);
    pq_wrote(c, y, (size_t)n * sizeof(float));
    struct cuk_add_args a = {.n = (size_t)n, .y = y, .x = x, .alpha = 1.0f};
    KR(c, cuk_add(&a, c->st), "add");
}

static void cu_gather(struct ops *o, const float *x, int dim, const int32_t *idx, int n, float *y)
{
    struct ops_cuda *c = C(o);
    join(c, NULL);
    prof(c, OPS_PROF_GATHER);
    not_graphable(c, "a gather (host indices)");
    pq_wrote(c, y, (size_t)n * dim * sizeof(float));
    for (int i = 0; i < n; i++)
        CK(c,
           cudaMemcpyAsync(y + (size_t)i * dim, x + (size_t)idx[i] * dim,
                           (size_t)dim * sizeof(float), cudaMemcpyDeviceToDevice, c->st),
           "gather");
}

/* ---------------------------------------------------------------- CUDA graphs
 *
 * A graph-mode forward (gpu.cuda_graphs, 1..max tokens) reads its per-step host inputs (cache
 * slots, sequence lengths, block tables, the RoPE table) from one device block that
 * ops_graph_begin fills from a pinned block with one copy before the layers, instead of staging
 * them per op; its attention uses the batch's length class (1024 * 2^k positions) for the block
 * table width and the split plan, so the kernels' arguments depend only on the token count and
 * the class; its expert jobs get one record each. Per (count, class): the first forward runs
 * eagerly and notes whether anything in it cannot be replayed (not_graphable); the next one is
 * captured (cudaStreamBeginCapture on the main stream; the side stream joins through the expert
 * jobs' events, their CPU work becomes host nodes) and launched; later ones replay the graph.
 * A host node reads its job record when it runs, so each graph saves its records' inputs at
 * capture and a replay puts them back (job_in). Graphs are dropped when a buffer they use moves
 * or weights change (epoch). */

/* a graph's captured state (exec, saved job inputs) freed, its key forgotten */
static void graph_clear(struct cgraph *gp)
{
    if (gp->exec) cudaGraphExecDestroy(gp->exec);
    free(gp->jin);
    memset(gp, 0, sizeof *gp);
}

static void graphs_drop(struct ops_cuda *c)
{
    for (int i = 0; c->gr.tab && i < c->gr.max * GRAPH_CLASSES; i++) graph_clear(&c->gr.tab[i]);
}

/* job_in of a record: save (at capture), put back (before a replay), compare */
static void job_in_get(const struct moe_job *j, struct job_in *s)
{
    *s = (struct job_in){.cpu = j->cpu,
                         .m = j->m,
                         .x = j->x,
                         .w = j->w,
                         .y = j->y,
                         .ids = j->ids,
                         .n = j->n,
                         .top_k = j->top_k,
                         .count = j->count,
                         .part = j->part,
                         .n_defer = j->n_defer};
}

static void job_in_put(struct moe_job *j, const struct job_in *s)
{
    j->cpu = s->cpu;
    j->m = s->m;
    j->x = s->x;
    j->w = s->w;
    j->y = s->y;
    j->ids = s->ids;
    j->n = s->n;
    j->top_k = s->top_k;
    j->count = s->count;
    j->part = s->part;
    j->n_defer = s->n_defer;
}

static int job_in_same(const struct job_in *a, const struct job_in *b)
{
    return a->cpu == b->cpu && a->m == b->m && a->x == b->x && a->w == b->w && a->y == b->y &&
           a->ids == b->ids && a->n == b->n && a->top_k == b->top_k && a->count == b->count &&
           a->part == b->part && a->n_defer == b->n_defer;
}

/* the length class of a longest sequence len: k with 1024 * 2^k >= len (its length in *cls_len),
 * -1 above the last */
static int len_class(int len, int *cls_len)
{
    int k = 0, l = 1024;
    while (l < len && k < GRAPH_CLASSES - 1) {
        l *= 2;
        k++;
    }
    *cls_len = l;
    return l >= len ? k : -1;
}

static size_t align64(size_t b) { return (b + 63) & ~(size_t)63; }

/* Batch b's step inputs for a length class of cls_len positions, copied to the device block. */
static int step_inputs(struct ops_cuda *c, const struct model_kv *kv, const struct model_batch *b,
                       const struct ops_rope *r, int cls_len)
{
    struct cgraphs *g = &c->gr;
    const int n = b->n_tokens, bt = kv->block_tokens, np = r->n_pairs;
    const int bt_ld = (cls_len + bt - 1) / bt;
    size_t o_len = align64((size_t)n * 4), o_bt = o_len + align64((size_t)n * 4);
    size_t o_cs = o_bt + align64((size_t)n * bt_ld * 4), size = o_cs + (size_t)n * np * 2 * 4;
    if (size > g->in_size) {
        host_sync(c);
        c->epoch++;
        cudaFreeHost(g->h_in);
        cudaFree(g->d_in);
        g->h_in = g->d_in = NULL;
        g->in_size = 0;
        if (cudaHostAlloc(&g->h_in, 2 * size, cudaHostAllocDefault) != cudaSuccess ||
            cudaMalloc(&g->d_in, 2 * size) != cudaSuccess) {
            cudaFreeHost(g->h_in);
            g->h_in = NULL;
            g->d_in = NULL;
            LOG_WARN("gpu", "CUDA graphs: no memory for the step inputs; forwards run eagerly");
            return ERR_NOMEM;
        }
        g->in_size = 2 * size;
    }
    if (cudaEventSynchronize(g->ev_in) != cudaSuccess) return ERR_CUDA; /* last copy done */
    char *h = g->h_in;
    int32_t *slots = (int32_t *)h, *len = (int32_t *)(h + o_len), *tab = (int32_t *)(h + o_bt);
    float *cs = (float *)(h + o_cs);
    for (int t = 0; t < n; t++) {
        const struct model_seq *s = &b->seqs[b->seq[t]];
        int p = b->pos[t], nb = s->n_blocks < bt_ld ? s->n_blocks : bt_ld;
        slots[t] = s->blocks[p / bt] * bt + p % bt;
        len[t] = p + 1;
        memcpy(tab + (size_t)t * bt_ld, s->blocks, (size_t)nb * sizeof(int32_t));
        for (int i = nb; i < bt_ld; i++) tab[(size_t)t * bt_ld + i] = 0;
        float fp = (float)p; /* rope_cs's arithmetic */
        for (int i = 0; i < np; i++) {
            float ang = fp * r->freq[i];
            cs[((size_t)t * np + i) * 2] = cosf(ang);
            cs[((size_t)t * np + i) * 2 + 1] = sinf(ang);
        }
    }
    if (cudaMemcpyAsync(g->d_in, h, size, cudaMemcpyHostToDevice, c->st) != cudaSuccess ||
        cudaEventRecord(g->ev_in, c->st) != cudaSuccess)
        return ERR_CUDA;
    char *d = g->d_in;
    g->d_slots = (int32_t *)d;
    g->d_len = (int32_t *)(d + o_len);
    g->d_bt = (int32_t *)(d + o_bt);
    g->d_cs = (float *)(d + o_cs);
    g->pos = b->pos;
    g->n = n;
    g->np = np;
    g->bt_ld = bt_ld;
    g->max_len = cls_len;
    return 0;
}

static int cu_graph_begin(struct ops *o, const struct model_kv *kv, const struct model_batch *b,
                          const struct ops_rope *r, const void *h)
{
    struct ops_cuda *c = C(o);
    struct cgraphs *g = &c->gr;
    const int n = b->n_tokens;
    if (!g->max || g->failed || n > g->max || c->prof.on || r->amp != 1.0f || r->n_pairs > 64 ||
        o->err_code)
        return 0; /* eager, as without graphs */
    int max_len = 1, cls_len;
    for (int t = 0; t < n; t++)
        if (b->pos[t] + 1 > max_len) max_len = b->pos[t] + 1;
    int k = len_class(max_len, &cls_len);
    if (k < 0) return 0;
    join_all(c); /* a deferred part's job too: the graph's copies rewrite the pinned inputs */
    for (int i = 0; i < g->n_jobs; i++) /* a forward without logits left jobs unretired */
        if (g->jobs[i]->state) {
            host_sync(c);
            break;
        }
    if (step_inputs(c, kv, b, r, cls_len)) return 0;
    if (g->epoch != c->epoch) { /* buffers moved or weights changed since the captures */
        graphs_drop(c);
        g->epoch = c->epoch;
    }
    struct cgraph *gp = g->paused ? NULL : &g->tab[(size_t)(n - 1) * GRAPH_CLASSES + k];
    if (gp && (gp->h != h || gp->kv != kv || gp->ue8m0 != o->fp8_ue8m0)) { /* another key */
        graph_clear(gp);
        gp->h = h;
        gp->kv = kv;
        gp->ue8m0 = o->fp8_ue8m0;
    }
    g->on = 1;
    g->g = gp;
    g->bad = NULL;
    g->moe_i = 0;
    c->pq.x = NULL;
    c->heads_cur = NULL; /* a graph's kv_b expansions are its own */
    if (gp && gp->state == 2) {
        ASSERT(gp->n_jobs <= g->n_jobs && (gp->jin || !gp->n_jobs));
        for (int i = 0; i < gp->n_jobs; i++) {
            struct moe_job *j = g->jobs[i];
            /* the inputs as captured (another token count's forward may have rewritten the
             * record since: the host node would read its n and weight offset against this
             * graph's copies), then what the host node fills in */
            struct job_in now;
            job_in_get(j, &now);
            ASSERT(j->state == 0 && gp->jin[i].n == n && gp->jin[i].part == 0);
            if (!job_in_same(&now, &gp->jin[i])) {
                job_in_put(j, &gp->jin[i]);
                c->stats.graph_job_restores++;
            }
            j->rc = 0;
            j->err[0] = 0;
            j->seconds = 0;
            j->pairs = 0;
            j->state = 2;
            j->graphed = 1;
        }
        CK(c, cudaGraphLaunch(gp->exec, c->st), "graph launch");
        c->stats.graph_replays++;
        g->on = 0;
        return 1;
    }
    if (gp && gp->state == 1) {
        g->err0 = o->err_code;
        if (cudaStreamBeginCapture(c->st, cudaStreamCaptureModeThreadLocal) == cudaSuccess) {
            g->capturing = 1;
        } else {
            (void)cudaGetLastError();
            gp->state = -1;
        }
    }
    return 0;
}

/* A failed capture: forget what the captured ops left in the host state (nothing ran). */
static void capture_failed(struct ops_cuda *c, cudaError_t e)
{
    struct cgraphs *g = &c->gr;
    enum cudaStreamCaptureStatus cs;
    cudaGraph_t side = NULL;
    if (cudaStreamIsCapturing(c->side, &cs) == cudaSuccess && cs != cudaStreamCaptureStatusNone &&
        cudaStreamEndCapture(c->side, &side) == cudaSuccess && side)
        cudaGraphDestroy(side);
    (void)cudaGetLastError();
    if (!g->err0) ops_error(&c->base, NULL); /* the errors of the invalidated capture */
    LOG_WARN("gpu",
             "CUDA graph capture of a %d-token forward failed (%s): graphs off, forwards "
             "run eagerly",
             g->n, g->bad ? g->bad : cudaGetErrorString(e));
    g->failed = 1;
    if (g->g) g->g->state = -1;
    g->g = NULL;
    for (int i = 0; i < g->n_jobs; i++) {
        g->jobs[i]->state = 0;
        g->jobs[i]->graphed = 0;
    }
    c->pend = NULL;
    c->pq.x = NULL;
    c->heads_cur = NULL;
    c->kvs.kv = NULL;
    g->moe_i = 0;
    g->bad = NULL;
}

static int cu_graph_end(struct ops *o)
{
    struct ops_cuda *c = C(o);
    struct cgraphs *g = &c->gr;
    if (!g->on) return 0;
    struct cgraph *gp = g->g;
    if (g->capturing) {
        g->capturing = 0;
        join(c, NULL);
        cudaGraph_t graph = NULL;
        cudaGraphExec_t exec = NULL;
        cudaError_t e = cudaStreamEndCapture(c->st, &graph);
        if (e == cudaSuccess && (g->bad || o->err_code != g->err0))
            e = cudaErrorStreamCaptureInvalidated;
        if (e == cudaSuccess) e = cudaGraphInstantiate(&exec, graph, 0);
        if (graph) cudaGraphDestroy(graph);
        struct job_in *jin = NULL; /* the host nodes' records' inputs, kept for replays */
        if (e == cudaSuccess && g->moe_i > 0 && !(jin = malloc((size_t)g->moe_i * sizeof *jin))) {
            cudaGraphExecDestroy(exec);
            e = cudaErrorMemoryAllocation;
        }
        if (e != cudaSuccess) {
            capture_failed(c, e);
            return 1; /* run the layers again, eagerly (g->on stays set) */
        }
        for (int i = 0; i < g->moe_i; i++) {
            ASSERT(g->jobs[i]->n == g->n && g->jobs[i]->part == 0);
            job_in_get(g->jobs[i], &jin[i]);
        }
        free(gp->jin);
        gp->jin = jin;
        gp->exec = exec;
        gp->state = 2;
        gp->n_jobs = g->moe_i;
        for (int i = 0; i < g->moe_i; i++) g->jobs[i]->graphed = 1;
        CK(c, cudaGraphLaunch(exec, c->st), "graph launch"); /* this forward's work */
        c->stats.graph_captures++;
        g->on = 0;
        return 0;
    }
    if (gp) {
        gp->state = g->bad ? -1 : 1;
        if (g->bad && g->told != g->bad)
            LOG_INFO("gpu", "CUDA graphs: %d-token forwards run eagerly: %s", g->n, g->bad);
        if (g->bad) g->told = g->bad;
    }
    c->stats.graph_eager++;
    g->on = 0;
    return 0;
}

static void cu_destroy(struct ops *o)
{
    struct ops_cuda *c = C(o);
    if (c->st) {
        join_all(c);
        cudaStreamSynchronize(c->st);
    }
    for (int i = 0; i < PROF_EVENTS; i++)
        if (c->prof.ev[i]) cudaEventDestroy(c->prof.ev[i]);
    for (int i = 0; i < N_JOBS; i++) {
        job_events_destroy(&c->jobs[i]);
        free(c->jobs[i].mids);
    }
    cudaFree(c->d_dids);
    graphs_drop(c);
    free(c->gr.tab);
    for (int i = 0; i < c->gr.n_jobs; i++) job_free(c->gr.jobs[i]);
    free(c->gr.jobs);
    if (c->gr.ev_in) cudaEventDestroy(c->gr.ev_in);
    cudaFreeHost(c->gr.h_in);
    cudaFree(c->gr.d_in);
    cudaFree(c->xq);
    cudaFree(c->xs);
    cudaFree(c->ysc);
    cudaFree(c->d_i32);
    cudaFree(c->d_bt);
    cudaFree(c->d_freq);
    cudaFree(c->d_cs);
    free(c->cs_pos);
    cudaFree(c->mla_ws);
    cudaFree(c->mlap_ws);
    cuk_mla_prefill_destroy(c->mlap);
    cudaFree(c->heads_f32);
    cudaFree(c->ex_x);
    cudaFree(c->ex_g);
    cudaFree(c->ex_u);
    cudaFree(c->ex_y);
    cus_destroy(c->cus);
    wpool_destroy(c->rq_pool);
    cudaFree(c->s_acc);
    if (c->ev_g) cudaEventDestroy(c->ev_g);
    free(c->ex_sort);
    cudaFree(c->kv_dev);
    free(c->kv_dev_layer);
    for (int i = 0; i < N_HOST; i++) cudaFreeHost(c->h[i].p);
    cudaFreeHost(c->ring);
    gemm_fp8_destroy(c->gemm);
    if (c->blas) cublasDestroy(c->blas);
    if (c->side) cudaStreamDestroy(c->side);
    if (c->st) cudaStreamDestroy(c->st);
    ops_destroy(c->cpu);
    free(c);
}

static size_t cu_device_free(struct ops *o, int *sms);

/* the load report (ops_load_done): what was converted, sizes, host seconds; the pool goes */
static void cu_load_done(struct ops *o)
{
    struct ops_cuda *c = C(o);
    const struct ops_cuda_load *l = &c->load;
    if (l->fp8 || l->bf16)
        LOG_INFO("gpu",
                 "load: %d weights re-quantized to FP8 e4m3 (128x128 block scales) and %d "
                 "converted to bf16, %.2f GiB as stored -> %.2f GiB on the device, %.2f s of "
                 "conversion on %d threads",
                 l->fp8, l->bf16, l->src_bytes / (1 << 30), l->dev_bytes / (1 << 30), l->seconds,
                 l->threads);
    if (l->bf16_rounded)
        LOG_INFO("gpu", "load: bf16 conversion rounded %lld values (router / lm_head)",
                 l->bf16_rounded);
    if (l->cpu)
        LOG_NOTICE("gpu",
                   "load: %d linears stay on the CPU backend (%s; each call copies its input "
                   "and output over PCIe)",
                   l->cpu,
                   c->keep_ggml ? "gpu.requant_ggml = off, or k not a multiple of 128"
                                : "k not a multiple of 128, or a type without a dequantizer");
    wpool_destroy(c->rq_pool);
    c->rq_pool = NULL;
}

/* the inner CPU backend (experts, fallbacks) quantizes FP8 activations the same way */
static void cu_set_fp8_ue8m0(struct ops *o, int on) { ops_set_fp8_ue8m0(C(o)->cpu, on); }

static const struct ops_vt cuda_vt = {
    .name = cu_name,
    .n_threads = cu_n_threads,
    .destroy = cu_destroy,
    .alloc = cu_alloc,
    .free = cu_free,
    .upload = cu_upload,
    .download = cu_download,
    .lin_create = cu_lin_create,
    .lin_create_w16 = cu_lin_create_w16,
    .load_done = cu_load_done,
    .table_create = cu_table_create,
    .lin_destroy = cu_lin_destroy,
    .moe_create = cu_moe_create,
    .moe_destroy = cu_moe_destroy,
    .moe_set_counts = cu_moe_set_counts,
    .moe_hot_bytes = cu_moe_hot_bytes,
    .moe_set_hot = cu_moe_set_hot,
    .embed = cu_embed,
    .linear = cu_linear,
    .rmsnorm = cu_rmsnorm,
    .rope = cu_rope,
    .heads_create = cu_heads_create,
    .heads_destroy = cu_heads_destroy,
    .head_matmul = cu_head_matmul,
    .kv_store = cu_kv_store,
    .mla_attn = cu_mla_attn,
    .router = cu_router,
    .moe = cu_moe,
    .moe_defer = cu_moe_defer,
    .swiglu = cu_swiglu,
    .add = cu_add,
    .gather = cu_gather,
    .rmsnorm_lin = cu_rmsnorm_lin,
    .lin_create_cat = cu_lin_create_cat,
    .swiglu_gu = cu_swiglu_gu,
    .rope2 = cu_rope2,
    .graph_begin = cu_graph_begin,
    .graph_end = cu_graph_end,
    .device_free = cu_device_free,
    .set_fp8_ue8m0 = cu_set_fp8_ue8m0,
};

static size_t cu_device_free(struct ops *o, int *sms)
{
    struct ops_cuda *c = C(o);
    size_t free_b = 0, total_b = 0;
    if (cudaSetDevice(c->device) != cudaSuccess ||
        cudaMemGetInfo(&free_b, &total_b) != cudaSuccess ||
        cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, c->device) != cudaSuccess)
        return 0;
    return free_b;
}

void ops_cuda_profile(struct ops *o, int on)
{
    struct ops_cuda *c = C(o);
    if (o->vt != &cuda_vt || c->prof.on == !!on) return;
    host_sync(c);
    if (on)
        for (int i = 0; i < PROF_EVENTS; i++)
            if (!c->prof.ev[i] && cudaEventCreate(&c->prof.ev[i]) != cudaSuccess) {
                ops__fail(o, ERR_CUDA, "cuda ops: profile events");
                return;
            }
    c->prof.on = !!on;
    c->prof.n = 0;
}

void ops_cuda_graphs_pause(struct ops *o, int on)
{
    if (o->vt == &cuda_vt) C(o)->gr.paused = !!on;
}

const char *ops_cuda_prof_name(int kind)
{
    static const char *names[OPS_PROF_N] = {"embed",   "linear fp8", "linear bf16",  "linear cpu",
                                            "rmsnorm", "rope",       "head matmul",  "attention",
                                            "router",  "experts in", "wait experts", "swiglu",
                                            "add",     "gather",     "download"};
    return kind >= 0 && kind < OPS_PROF_N ? names[kind] : "?";
}

void ops_cuda_load_stats(struct ops *o, struct ops_cuda_load *out)
{
    if (o->vt != &cuda_vt) {
        memset(out, 0, sizeof *out);
        return;
    }
    *out = C(o)->load;
}

void ops_cuda_stats(struct ops *o, struct ops_cuda_stats *out, int reset)
{
    struct ops_cuda *c = C(o);
    if (o->vt != &cuda_vt) {
        memset(out, 0, sizeof *out);
        return;
    }
    host_sync(c);
    *out = c->stats;
    out->graphs = 0;
    for (int i = 0; c->gr.tab && i < c->gr.max * GRAPH_CLASSES; i++)
        out->graphs += !!c->gr.tab[i].exec;
    if (reset) memset(&c->stats, 0, sizeof c->stats);
}

int ops_cuda_usable(int device)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
    return device >= 0 && device < n;
}

int ops_cuda_create(const struct ops_params *p, struct ops **out, char *err)
{
    const int device = p->gpu_device, max_tokens = p->max_tokens;
    *out = NULL;
    if (!ops_cuda_usable(device))
        return err_set(err, ERR_UNSUPPORTED, "cuda ops: no usable CUDA device %d", device);
    if (max_tokens < 1) return err_set(err, ERR_INVAL, "cuda ops: max_tokens must be >= 1");
    struct ops_cuda *c = calloc(1, sizeof *c);
    if (!c) return err_set(err, ERR_NOMEM, "cuda ops: out of memory");
    c->base.vt = &cuda_vt;
    c->device = device;
    c->max_tokens = max_tokens;
    c->max_pad = round4(max_tokens);
    int rc = 0;
    if (cudaSetDevice(device) != cudaSuccess ||
        cudaStreamCreateWithFlags(&c->st, cudaStreamNonBlocking) != cudaSuccess ||
        cudaStreamCreateWithFlags(&c->side, cudaStreamNonBlocking) != cudaSuccess) {
        rc = err_set(err, ERR_CUDA, "cuda ops: stream creation failed on device %d", device);
        goto fail;
    }
    for (int i = 0; i < N_JOBS; i++) {
        struct moe_job *j = &c->jobs[i];
        j->slot = -1;
        if (cudaEventCreate(&j->ev_a) != cudaSuccess || cudaEventCreate(&j->ev_in) != cudaSuccess ||
            cudaEventCreate(&j->ev_c) != cudaSuccess ||
            cudaEventCreate(&j->ev_out) != cudaSuccess ||
            cudaEventCreate(&j->ev_j) != cudaSuccess) {
            rc = err_set(err, ERR_CUDA, "cuda ops: event creation failed on device %d", device);
            goto fail;
        }
    }
    if (cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS ||
        cublasSetStream(c->blas, c->st) != CUBLAS_STATUS_SUCCESS ||
        cublasSetMathMode(c->blas, CUBLAS_PEDANTIC_MATH) != CUBLAS_STATUS_SUCCESS) {
        rc = err_set(err, ERR_CUDA, "cuda ops: cuBLAS initialization failed");
        goto fail;
    }
    if ((rc = gemm_fp8_create(0, &c->gemm, err))) goto fail;
    c->exact_gemm = !p->gpu_cublaslt;
    c->expert_layers = p->gpu_expert_layers;
    c->keep_ggml = p->gpu_keep_ggml;
    gemm_fp8_set_exact(c->gemm, c->exact_gemm);
    size_t ni = (size_t)c->max_pad * 2 + 64;
    c->d_i32_n = ni;
    if (cudaMalloc((void **)&c->d_i32, ni * sizeof(int32_t)) != cudaSuccess ||
        cudaMalloc((void **)&c->d_freq, 64 * sizeof(float)) != cudaSuccess ||
        cudaMalloc((void **)&c->d_cs, (size_t)c->max_pad * 64 * 2 * sizeof(float)) != cudaSuccess ||
        !(c->cs_pos = malloc((size_t)c->max_pad * sizeof(int32_t))) || !stage(c, (size_t)1 << 20)) {
        rc = err_set(err, ERR_NOMEM, "cuda ops: out of device or pinned memory");
        goto fail;
    }
    c->ring_off = 0;
    if ((rc = ops_cpu_create(p, &c->cpu, err))) goto fail;
    c->prefill_experts = p->gpu_prefill_experts;
    c->hot = p->gpu_hot_experts != 0;
    if (p->gpu_prefill_experts || c->hot) { /* expert streaming for long prefills, hot experts */
        struct cus_opts so = {
            .mode = p->gpu_prefill_experts,
            .hot = c->hot,
            .min_tokens = p->gpu_prefill_min_tokens > 0 ? p->gpu_prefill_min_tokens : 256,
            .buffer_bytes = (size_t)(p->gpu_stream_buffer_mb > 0 ? p->gpu_stream_buffer_mb : 400)
                            << 20,
            .split_tokens = p->gpu_prefill_split_tokens,
            .max_tokens = max_tokens,
            .source = p->gpu_stream_source};
        char e2[ERR_LEN];
        if (cudaEventCreateWithFlags(&c->ev_g, cudaEventDisableTiming) != cudaSuccess) {
            rc = err_set(err, ERR_CUDA, "cuda ops: event creation failed on device %d", device);
            goto fail;
        }
        if ((rc = cus_create(&so, &c->cus, e2))) {
            if (p->gpu_prefill_experts == 1) { /* on: an error; auto: off */
                rc = err_set(err, rc, "%s", e2);
                goto fail;
            }
            LOG_WARN("gpu", "expert streaming and hot experts off: %s", e2);
            c->hot = 0;
            rc = 0;
        }
    }
    if (p->gpu_prefill_attn_mb > 0) {
        char e2[ERR_LEN];
        if ((rc = cuk_mla_prefill_create(&c->mlap, e2))) {
            rc = err_set(err, rc, "cuda ops: %s", e2);
            goto fail;
        }
        c->mlap_score = (size_t)p->gpu_prefill_attn_mb << 20;
    }
    c->gr.max = p->gpu_graphs < 0 ? 0 : p->gpu_graphs > 64 ? 64 : p->gpu_graphs;
    if (c->gr.max &&
        (!(c->gr.tab = calloc((size_t)c->gr.max * GRAPH_CLASSES, sizeof *c->gr.tab)) ||
         cudaEventCreateWithFlags(&c->gr.ev_in, cudaEventDisableTiming) != cudaSuccess)) {
        rc = err_set(err, ERR_NOMEM, "cuda ops: out of memory (CUDA graphs)");
        goto fail;
    }
    if (c->gr.max)
        LOG_INFO("gpu",
                 "CUDA graphs: forwards of 1..%d tokens replay their layers' graph "
                 "(captured at a shape's second use)",
                 c->gr.max);
    struct cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) prop.name[0] = 0;
    snprintf(c->name, sizeof c->name, "hybrid:%.16s+%s", prop.name, ops_name(c->cpu));
    *out = &c->base;
    return 0;
fail:
    cu_destroy(&c->base);
    return rc;
}
