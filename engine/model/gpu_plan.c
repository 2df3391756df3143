/* gpu_plan.c - device memory plan from hyperparameters (see gpu_plan.h).
 *
 * Design: one pass over the layers that mirrors model.c's model_create / load_layer /
 * alloc_bufs and ops_cuda.c's lin_create / grow_scratch / kv_mirror / cu_mla_attn / hbuf, adding
 * the bytes each allocation would take instead of allocating. Every rule that decides where a
 * tensor lives is the backend's own:
 *   - an FP8 linear goes to the GPU when k % 128 == 0: e4m3 data (rows x cols bytes) plus its
 *     fp32 scale grid re-laid to ceil(rows/128) x round_up(k/128, 4); else it stays on the host;
 *   - a BF16 linear (router, embeddings, lm_head, or every projection of a BF16 checkpoint) goes
 *     to the GPU when k % 8 == 0;
 *   - a GGML / F16 / F32 projection (a GGUF) is re-quantized to FP8 at load (requant_ggml) and
 *     then counts as an FP8 linear; with requant_ggml off it stays on the host at its stored
 *     size; a GGUF's router and lm_head become bf16 (counted as BF16 always);
 *   - RMSNorm weights and the correction bias are fp32 vectors (get_vec);
 *   - kv_b is the absorbed W_UK / W_UV pair: ops_cuda keeps an FP8 kv_b as e4m3 + scales and
 *     expands one layer at a time into an fp32 scratch (counted in ws_small); other types are
 *     uploaded as fp32 (kvb_type = F32);
 *   - the KV cache has a device mirror only when attention runs on the GPU (kv_lora 512,
 *     rope 64, heads % 16 == 0: cuk_mla_decode's limits).
 * Run-time sizes take their upper bound: the MLA split-K workspace is the maximum of
 * cuk_mla_decode_workspace_size over every batch size at the longest sequence, times 1.5 (the
 * growth rule of ops_cuda); with gpu.fp8_gemm = cublaslt the swapped-operand buffer is counted
 * at its largest (max_pad x max_n fp32) although it exists only when cuBLASLt refuses the direct
 * operand order (exact mode plans no cuBLASLt shape, its 32 MiB workspace is still allocated);
 * the block-table buffer assumes every batch row belongs to a longest sequence (and, like the MLA
 * workspace and the staging ring, is sized for max_batch_tokens rows although model.c now passes
 * at most ATT_CHUNK rows to ops_mla_attn: a safe upper bound). model.c's work buffers are
 * counted exactly: max_batch_tokens rows of most, ATT_CHUNK rows of q~ / o~, and gate / up of
 * max(max_batch_tokens x shared width, min(max_batch_tokens, FFN_CHUNK) x dense width). The
 * kernels' split-planning formulas (mla.cu mla_plan, gemv_fp8.cu gemv_plan_make) are restated here
 * with the SM count as a parameter: keep them in step when those change. Sizes are doubles (bytes):
 * exact integers far beyond any model (2^53).
 */
#include "engine/model/gpu_plan.h"

#include "common/err.h"
#include "common/log.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MIB (1024.0 * 1024.0)
#define GIB (1024.0 * 1024.0 * 1024.0)
#define LOGIT_ROWS 16            /* model.c: lm_head rows per pass */
#define ATT_CHUNK 256            /* model.c: tokens per absorbed-attention pass (q~ / o~ rows) */
#define FFN_CHUNK 512            /* model.c: tokens per dense-FFN pass (gate / up rows) */
#define CUBLASLT_WS (32.0 * MIB) /* gemm_fp8_create(0, ...) */
#define GEMV_CTAS_PER_SM 2       /* every production tuning of gemv_fp8.cu */
#define GEMV_WARPS 8
#define GEMV_PART_OFFSET (4096.0 * 4)
#define MLA_HG 8 /* mla.cu: heads per CTA, CUDA-core and tensor-core kernels */
#define TC_HEADS 16
#define TC_T 32
#define ALLOC_BIG (1024.0 * 1024.0) /* cudaMalloc: larger blocks take whole 2 MiB pages */
#define ALLOC_PAGE (2.0 * 1024.0 * 1024.0)
#define ALLOC_SMALL 512.0

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
static int64_t round4(int64_t x) { return (x + 3) & ~(int64_t)3; }
static double hbuf_size(double bytes)
{
    return bytes > 0 ? bytes + (double)((int64_t)bytes / 4) + 4096 : 0;
}

void gpu_plan_defaults(struct gpu_plan_params *p)
{
    memset(p, 0, sizeof *p);
    p->placement = GPU_PLACE_HYBRID;
    p->gpu_expert_layers = 0;
    p->expert_type = QTYPE_F8_E4M3;
    p->linear_type = QTYPE_F8_E4M3;
    p->requant_ggml = 1;         /* gpu.requant_ggml's default */
    p->kvb_type = QTYPE_F8_E4M3; /* ops_cuda_heads: FP8 kv_b stays FP8 on the device */
    p->embed_on_gpu = 0;         /* ops_table_create: the table stays in host memory */
    p->kv_tokens = 32768;
    p->max_seq_tokens = 0;
    p->max_batch_tokens = 2048;
    p->kv_block_tokens = 16;
    p->sms = 132;
    p->runtime_reserve = 600 * MIB; /* measured: docs/gpu-memory.md */
    p->prefill_experts = 0;
    p->stream_buffer_mb = 400;
    p->stream_expert_type = QTYPE_Q4_K;
}

void gpu_plan_types_from(struct gpu_plan_params *p, const struct wt_model *m)
{
    const struct wt_tensor *kva = wt_get(m, "blk.0.attn_kv_a_mqa.weight");
    const struct wt_tensor *kvb = wt_get(m, "blk.0.attn_kv_b.weight");
    if (kva && kva->type != QTYPE_U8) p->linear_type = kva->type;
    if (kvb && kvb->type != QTYPE_U8)
        p->kvb_type = kvb->type == QTYPE_F8_E4M3 || (kvb->type != QTYPE_BF16 && p->requant_ggml)
                          ? QTYPE_F8_E4M3
                          : QTYPE_F32;
    /* llama.cpp's split form (attn_k_b / attn_v_b, never FP8) reaches ops_cuda as fp32 values */
    if (!kvb && wt_get(m, "blk.0.attn_k_b.weight"))
        p->kvb_type = p->requant_ggml ? QTYPE_F8_E4M3 : QTYPE_F32;
}

int gpu_placement_parse(const char *s)
{
    if (!s) return -1;
    if (!strcmp(s, "cpu")) return GPU_PLACE_CPU;
    if (!strcmp(s, "hybrid")) return GPU_PLACE_HYBRID;
    if (!strcmp(s, "gpu")) return GPU_PLACE_GPU;
    return -1;
}

const char *gpu_placement_name(enum gpu_placement p)
{
    return p == GPU_PLACE_CPU ? "cpu" : p == GPU_PLACE_GPU ? "gpu" : "hybrid";
}

/* ---------------------------------------------------------------- the kernels' planners */

/* gemv_fp8.cu: cuk_gemv_fp8_workspace_size for one [n, k] shape (any m <= 16) */
static double gemv_ws(int64_t n, int64_t k, int sms)
{
    int64_t tiles = cdiv(n, 16), kb = k / 128, wk = GEMV_WARPS;
    while (wk > 1 && kb < 2 * wk) wk /= 2;
    int64_t tpc = GEMV_WARPS / wk, groups = cdiv(tiles, tpc), splits = 1;
    int64_t target = (int64_t)GEMV_CTAS_PER_SM * sms;
    if (groups < target) {
        int64_t s = cdiv(target, groups), smax = kb / wk;
        if (s > smax) s = smax;
        if (s > 16) s = 16;
        if (s > 1) splits = s;
    }
    int64_t kps = cdiv(kb, splits);
    splits = cdiv(kb, kps);
    if (splits == 1) return 0;
    return GEMV_PART_OFFSET + (double)splits * (double)(groups * tpc) * 16 * 16 * 4;
}

/* mla.cu: mla_plan's split count */
static int64_t mla_splits(int64_t n_q, int64_t heads, int hg, int64_t max_len, int sms)
{
    int64_t base = n_q * (heads / hg), target = 2 * (int64_t)sms;
    int64_t minpos = hg == TC_HEADS ? 128 : 256;
    int64_t len = max_len > 0 ? max_len : 1;
    int64_t s = cdiv(target, base > 0 ? base : 1), smax = cdiv(len, minpos);
    if (s > smax) s = smax;
    if (s > 64) s = 64;
    if (s < 1) s = 1;
    int64_t c = cdiv(cdiv(len, s), TC_T) * TC_T;
    return cdiv(len, c);
}

/* max over n_q = 1..max_tokens of cuk_mla_decode_workspace_size(n_q, heads, max_len) */
static double mla_ws_max(int64_t max_tokens, int64_t heads, int64_t max_len, int sms)
{
    double best = 0;
    /* splits > 1 needs n_q * heads / 8 < 2 * sms: no larger n_q can need a workspace */
    int64_t lim = 2 * (int64_t)sms * MLA_HG + 1;
    for (int64_t n = 1; n <= max_tokens && n <= lim; n++) {
        int64_t s1 = mla_splits(n, heads, MLA_HG, max_len, sms);
        int64_t s2 = mla_splits(n, heads, TC_HEADS, max_len, sms);
        int64_t s = s1 > s2 ? s1 : s2;
        if (s == 1) continue;
        double ws = (double)n * heads * s * (512 + 2) * 4;
        if (ws > best) best = ws;
    }
    return best;
}

/* ---------------------------------------------------------------- weights */

struct acc {
    const struct gpu_plan_params *p;
    struct gpu_plan *pl;
};

/* One device allocation (one cudaMalloc) of `bytes`: its rounding goes to pl->rounding. */
static double al(struct gpu_plan *pl, double bytes)
{
    double g = bytes > ALLOC_BIG ? ALLOC_PAGE : ALLOC_SMALL;
    double r = bytes > 0 ? ceil(bytes / g) * g : 0;
    pl->rounding += r - bytes;
    return bytes;
}

/* an FP8 linear shape on the device: scratch and small-M workspace sizing */
static void fp8_shape(struct acc *a, int64_t rows, int64_t cols)
{
    struct gpu_plan *pl = a->pl;
    if (cols > pl->max_k) pl->max_k = cols;
    if (rows > pl->max_n) pl->max_n = rows;
    double g = gemv_ws(rows, cols, a->p->sms);
    if (g > pl->ws_gemv) pl->ws_gemv = g;
}

static double fp8_scales(int64_t rows, int64_t cols)
{
    return (double)cdiv(rows, 128) * round4(cdiv(cols, 128)) * 4;
}

static double fp8_bytes(int64_t rows, int64_t cols)
{
    return (double)rows * cols + fp8_scales(rows, cols);
}

/* bytes of [rows, cols] stored as `type` (GGML row sizes; 4 a value if the rows are not whole
 * blocks, which the loader rejects anyway) */
static double stored_bytes(int type, int64_t rows, int64_t cols)
{
    if (type == QTYPE_F8_E4M3) return fp8_bytes(rows, cols);
    int ok = 0;
    size_t rb = qtype_row_bytes(type, cols, &ok);
    return ok ? (double)rows * (double)rb : (double)rows * (double)cols * 4;
}

/* one non-expert projection [rows, cols] in the checkpoint's linear type: device bytes (0 when
 * the backend keeps it on the host; then counted in host_linears) */
static double lin(struct acc *a, int type, int64_t rows, int64_t cols)
{
    struct gpu_plan *pl = a->pl;
    if (type != QTYPE_F8_E4M3 && type != QTYPE_BF16 && !a->p->requant_ggml) {
        pl->w.host_linears += stored_bytes(type, rows, cols);
        return 0;
    }
    if (type != QTYPE_BF16) { /* FP8, or re-quantized to it */
        if (cols % 128) {
            pl->w.host_linears += stored_bytes(type, rows, cols);
            return 0;
        }
        fp8_shape(a, rows, cols);
        return al(pl, (double)rows * cols) + al(pl, fp8_scales(rows, cols));
    }
    if (cols % 8) {
        pl->w.host_linears += (double)rows * cols * 2;
        return 0;
    }
    return al(pl, (double)rows * cols * 2);
}

/* one routed expert's three matrices as GPU-resident weights of expert_type */
static int expert_bytes(struct acc *a, int64_t I, int64_t D, double *out, char *err)
{
    int t = a->p->expert_type;
    if (t == QTYPE_F8_E4M3) { /* stacked per layer: no per-expert rounding counted */
        fp8_shape(a, I, D);
        fp8_shape(a, D, I);
        *out = fp8_bytes(I, D) * 2 + fp8_bytes(D, I);
        return 0;
    }
    int ok1 = 1, ok2 = 1;
    size_t r1 = qtype_row_bytes(t, D, &ok1), r2 = qtype_row_bytes(t, I, &ok2);
    if (!ok1 || !ok2 || t == QTYPE_U8)
        return err_set(err, ERR_INVAL,
                       "gpu plan: expert type %s does not fit rows of %lld and "
                       "%lld values",
                       qtype_name(t), (long long)D, (long long)I);
    *out = 2.0 * (double)I * (double)r1 + (double)D * (double)r2;
    return 0;
}

static double kvb_type_alloc(struct gpu_plan *pl, int type, int64_t rows, int64_t cols)
{
    if (type == QTYPE_F8_E4M3) return al(pl, (double)rows * cols) + al(pl, fp8_scales(rows, cols));
    return al(pl, (double)rows * cols * (type == QTYPE_BF16 ? 2 : 4));
}

static int check(const struct wt_hparams *hp, const struct gpu_plan_params *p, char *err)
{
    if (!hp || !p) return err_set(err, ERR_INVAL, "gpu plan: no hparams or params");
    if (hp->vocab_size <= 0 || hp->hidden <= 0 || hp->n_layers <= 0 || hp->n_heads <= 0 ||
        hp->kv_lora_rank <= 0 || hp->qk_nope <= 0 || hp->qk_rope <= 0 || hp->v_head <= 0 ||
        hp->q_lora_rank < 0 || hp->inter < 0 || hp->moe_inter < 0 || hp->n_routed < 0 ||
        hp->n_shared < 0 || hp->top_k < 0)
        return err_set(err, ERR_INVAL, "gpu plan: hyperparameters missing or not positive");
    /* bounds that keep every product below 2^53 (doubles stay exact) */
    const int dims[] = {hp->hidden,      hp->inter,        hp->moe_inter, hp->n_heads,
                        hp->q_lora_rank, hp->kv_lora_rank, hp->qk_nope,   hp->qk_rope,
                        hp->v_head,      hp->n_shared,     hp->top_k};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i] > (1 << 20))
            return err_set(err, ERR_INVAL, "gpu plan: a dimension of %d is beyond 2^20", dims[i]);
    if (hp->vocab_size > (1 << 24) || hp->n_layers > 100000 || hp->n_routed > (1 << 16))
        return err_set(err, ERR_INVAL, "gpu plan: vocab, layers or experts out of range");
    if (p->placement != GPU_PLACE_CPU && p->placement != GPU_PLACE_HYBRID &&
        p->placement != GPU_PLACE_GPU)
        return err_set(err, ERR_INVAL, "gpu plan: placement %d", (int)p->placement);
    if (p->linear_type < 0 || p->linear_type >= QTYPE_COUNT_ || !qtype_traits(p->linear_type) ||
        p->linear_type == QTYPE_U8)
        return err_set(err, ERR_INVAL, "gpu plan: linear type %d", p->linear_type);
    if (p->kvb_type != QTYPE_F32 && p->kvb_type != QTYPE_BF16 && p->kvb_type != QTYPE_F8_E4M3)
        return err_set(err, ERR_INVAL, "gpu plan: kv_b type must be f32, bf16 or f8_e4m3");
    if (p->expert_type < 0 || p->expert_type >= QTYPE_COUNT_)
        return err_set(err, ERR_INVAL, "gpu plan: expert type %d", p->expert_type);
    if (p->kv_tokens < 0 || p->kv_tokens > ((int64_t)1 << 40) || p->max_seq_tokens < 0 ||
        p->max_batch_tokens < 1 || p->max_batch_tokens > (1 << 24) || p->kv_block_tokens < 1 ||
        p->sms < 1 || p->sms > 4096 || p->gpu_expert_layers < 0 || !(p->runtime_reserve >= 0))
        return err_set(err, ERR_INVAL,
                       "gpu plan: kv_tokens, max_batch_tokens, kv_block_tokens, "
                       "sms, gpu_expert_layers or runtime_reserve out of range");
    return 0;
}

int gpu_plan_compute(const struct wt_hparams *hp, const struct gpu_plan_params *p,
                     struct gpu_plan *out, char *err)
{
    int rc = check(hp, p, err);
    if (rc) return rc;
    memset(out, 0, sizeof *out);
    struct gpu_plan *pl = out;
    struct acc a = {.p = p, .pl = pl};
    const int64_t D = hp->hidden, H = hp->n_heads, L = hp->kv_lora_rank, R = hp->qk_rope;
    const int64_t NOPE = hp->qk_nope, V = hp->v_head, QD = NOPE + R, QL = hp->q_lora_rank;
    const int64_t E = hp->n_routed, I = hp->moe_inter, T = p->max_batch_tokens;
    const int lt = p->linear_type;
    for (int l = 0; l < hp->n_layers; l++) pl->moe_layers += wt_layer_is_moe(hp, l) != 0;
    pl->kv_bytes_per_token = (double)hp->n_layers * (double)(L + R) * 2;
    pl->kv_tokens = p->kv_tokens;
    if (p->placement == GPU_PLACE_CPU) return 0; /* nothing on the device */

    /* ---- weights (model_create, load_layer) */
    struct gpu_plan_weights *w = &pl->w;
    w->embed = p->embed_on_gpu ? lin(&a, QTYPE_BF16, hp->vocab_size, D) : 0;
    w->lm_head = lin(&a, QTYPE_BF16, hp->vocab_size, D);
    w->norms = al(pl, (double)D * 4); /* output_norm */
    int n_gpu = p->placement == GPU_PLACE_GPU           ? pl->moe_layers
                : p->gpu_expert_layers < pl->moe_layers ? p->gpu_expert_layers
                                                        : pl->moe_layers;
    pl->gpu_expert_layers = n_gpu;
    double one_expert = 0;
    if (n_gpu > 0 && (rc = expert_bytes(&a, I, D, &one_expert, err))) return rc;
    int moe_seen = 0;
    for (int l = 0; l < hp->n_layers; l++) {
        w->norms += al(pl, (double)D * 4) * 2 + al(pl, (double)L * 4) +
                    (QL > 0 ? al(pl, (double)QL * 4) : 0);
        w->attention += lin(&a, lt, L + R, D) + lin(&a, lt, D, H * V);
        if (QL > 0) w->attention += lin(&a, lt, QL, D) + lin(&a, lt, H * QD, QL);
        else w->attention += lin(&a, lt, H * QD, D);
        w->kv_b += kvb_type_alloc(pl, p->kvb_type, H * (NOPE + V), L);
        if (!wt_layer_is_moe(hp, l)) {
            /* gate and up: two allocations (a host linear and the rounding count each) */
            w->dense_ffn +=
                lin(&a, lt, hp->inter, D) + lin(&a, lt, hp->inter, D) + lin(&a, lt, D, hp->inter);
            continue;
        }
        w->router += lin(&a, QTYPE_BF16, E, D);
        if (hp->scoring == WT_SCORE_SIGMOID) w->router += al(pl, (double)E * 4); /* bias */
        if (hp->n_shared > 0) {
            int64_t si = (int64_t)hp->n_shared * I;
            w->shared_experts += lin(&a, lt, si, D) + lin(&a, lt, si, D) + lin(&a, lt, D, si);
        }
        if (moe_seen++ < n_gpu) w->gpu_experts += al(pl, (double)E * one_expert);
    }
    pl->weights = w->attention + w->kv_b + w->norms + w->dense_ffn + w->shared_experts + w->router +
                  w->embed + w->lm_head + w->gpu_experts;

    /* ---- KV cache (kv_mirror): only where cuk_mla_decode runs the attention */
    pl->kv_on_gpu = L == 512 && R == 64 && H % 16 == 0;
    int64_t max_seq = p->max_seq_tokens > 0 && p->max_seq_tokens < p->kv_tokens ? p->max_seq_tokens
                                                                                : p->kv_tokens;
    if (pl->kv_on_gpu) pl->kv = al(pl, pl->kv_bytes_per_token * (double)p->kv_tokens);

    /* ---- activations: model.c alloc_bufs + the FP8 linear scratch (grow_scratch) */
    int64_t dense_w = 0, shared_w = 0; /* the FFN widths the layers use */
    for (int l = 0; l < hp->n_layers; l++) {
        if (!wt_layer_is_moe(hp, l)) dense_w = hp->inter;
        else if (hp->n_shared > 0) shared_w = (int64_t)hp->n_shared * I;
    }
    int64_t ffn_max = dense_w > shared_w ? dense_w : shared_w;
    if (ffn_max < 1) ffn_max = 1;
    const int64_t att_rows = T < ATT_CHUNK ? T : ATT_CHUNK;
    const int64_t dense_rows = T < FFN_CHUNK ? T : FFN_CHUNK;
    int64_t ffn_cap = T * shared_w > dense_rows * dense_w ? T * shared_w : dense_rows * dense_w;
    if (ffn_cap < 1) ffn_cap = 1;
    int64_t K = hp->top_k > 0 ? hp->top_k : 1, EE = E > 0 ? E : 1, QLa = QL > 0 ? QL : 1;
    /* per token of max_batch_tokens: h, a, qa, q, kv, kvn, ov, tmp, ro, rl, rw, rid */
    const int64_t bufs[] = {D, D, QLa, H * QD, L + R, L + R, H * V, D, D, EE, K, K};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        pl->act_model += al(pl, 4.0 * (double)T * (double)bufs[i]);
    if (p->layered_prefill) pl->act_model += al(pl, 4.0 * (double)T * (double)D);
    if (p->defer_experts) /* model.c's deferred part: the forward's, and a layered pass's */
        pl->act_model += (p->layered_prefill ? 2 : 1) * al(pl, 4.0 * (double)T * (double)D);
    /* qabs, att (att_rows tokens), g, u (ffn_cap floats), fin, logits (LOGIT_ROWS) */
    pl->act_model += al(pl, 4.0 * (double)att_rows * (double)(H * (L + R))) +
                     al(pl, 4.0 * (double)att_rows * (double)(H * L)) +
                     al(pl, 4.0 * (double)ffn_cap) + al(pl, 4.0 * (double)ffn_cap) +
                     al(pl, 4.0 * LOGIT_ROWS * (double)D) +
                     al(pl, 4.0 * LOGIT_ROWS * (double)hp->vocab_size);
    int64_t max_pad = round4(T);
    if (pl->max_k > 0)
        pl->act_fp8 = al(pl, (double)max_pad * pl->max_k) +
                      al(pl, (double)(pl->max_k / 128) * max_pad * 4) +
                      (p->fp8_gemm_cublaslt ? al(pl, (double)max_pad * pl->max_n * 4) : 0);
    pl->activations = pl->act_model + pl->act_fp8;

    /* ---- workspace */
    if (pl->max_k > 0) {
        pl->ws_cublaslt = al(pl, CUBLASLT_WS);
        al(pl, pl->ws_gemv);
        /* cuBLASLt's y^T buffer, only when a plan needs the swapped order (upper bound) */
        if (p->fp8_gemm_cublaslt && max_pad > 16)
            pl->ws_gemm_swap = al(pl, (double)max_pad * pl->max_n * 4);
    }
    if (pl->kv_on_gpu) {
        double ws = mla_ws_max(T, H, max_seq, p->sms);
        pl->ws_mla = al(pl, ws + (double)((int64_t)ws / 2));
        pl->ws_block_tables =
            al(pl, (double)T * cdiv(max_seq > 0 ? max_seq : 1, p->kv_block_tokens) * 2 * 4);
        /* GEMM attention of long prompt runs (kernels/cuda/mla_prefill.h): cuBLAS, the longest
         * sequence's rows as fp32, the score scratch; allocated at first use */
        if (p->prefill_attention_mb > 0)
            pl->ws_mla_prefill = al(pl, 32.0 * MIB) +
                                 al(pl, (double)(max_seq > 0 ? max_seq : 1) * (L + R) * 4) +
                                 al(pl, (double)p->prefill_attention_mb * MIB);
    }
    /* small inputs, YaRN frequencies, the RoPE (cos, sin) table, and the fp32 expansion of one
     * layer's FP8 kv_b */
    pl->ws_small = al(pl, (double)(max_pad * 2 + 64) * 4) + al(pl, 64 * 4) +
                   al(pl, (double)max_pad * 64 * 2 * 4) +
                   (p->kvb_type == QTYPE_F8_E4M3 ? al(pl, (double)H * (NOPE + V) * L * 4) : 0);
    pl->workspace = pl->ws_cublaslt + pl->ws_gemv + pl->ws_gemm_swap + pl->ws_mla +
                    pl->ws_mla_prefill + pl->ws_block_tables + pl->ws_small;
    /* ---- expert streaming (ops_cuda_stream.c), counted only when on */
    double s_gids = 0, eb = 0, ws_moe = 0;
    if (pl->moe_layers && E > 0) { /* one expert in its GGML blocks, 256-byte aligned parts */
        int ok1 = 0, ok2 = 0;
        size_t rb1 = qtype_row_bytes(p->stream_expert_type, D, &ok1);
        size_t rb2 = qtype_row_bytes(p->stream_expert_type, I, &ok2);
        eb = ok1 && ok2 ? 2 * ceil((double)I * rb1 / 256) * 256 + ceil((double)D * rb2 / 256) * 256
                        : 0;
        pl->expert_bytes = eb;
        pl->routed_experts = (int64_t)pl->moe_layers * E;
        /* cuk_moe_ggml_workspace (moe_ggml.cu's layout, top_k of the model, chunk 1024 rows) */
        double a256 = 256, S = (double)T * K, C = S < 1024 ? S : 1024, segs = ceil(S / 512);
#define UP(x) (ceil((x) / a256) * a256)
        ws_moe = UP(32.0 * MIB) + UP(2.0 * I * D * 2) + UP((double)D * I * 2) + UP(C * D * 2) +
                 UP(C * 2 * I * 4) + UP(C * I * 2) + UP(C * D * 4) + 3 * UP(S * 4) +
                 UP(segs * (double)E * 4);
#undef UP
    }
    if (pl->moe_layers && E > 0 && p->stream_buffer_mb > 0) {
        const double rnd0 = pl->rounding;
        double slot = (double)(((int64_t)p->stream_buffer_mb << 20) / 2 & ~(int64_t)255);
        pl->stream_group = eb > 0 ? (int)(slot / eb) : 0;
        pl->stream_slots = 2 * al(pl, slot);
        pl->stream_ws = al(pl, ws_moe);
        int64_t groups = pl->stream_group > 0 ? cdiv(E, pl->stream_group) : E;
        s_gids = (double)groups * T * K * 4;
        pl->stream_size = pl->stream_slots + pl->stream_ws + al(pl, (double)T * D * 4) +
                          al(pl, (double)max_pad * D * 4) + al(pl, s_gids);
        if (p->prefill_experts) pl->stream = pl->stream_size;
        else pl->rounding = rnd0;
    }
    pl->runtime = p->runtime_reserve;
    /* ---- hot experts: their blocks, and the expert op's workspace and buffers unless the
     * stream pool has them (one per layer: the blocks' rounding is under a page a layer) */
    if (pl->moe_layers && E > 0 && eb > 0) { /* the same on a device of hot experts alone */
        const double parts[] = {ws_moe, (double)T * D * 4, (double)max_pad * D * 4,
                                (double)T * K * 4};
        for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
            double g = parts[i] > ALLOC_BIG ? ALLOC_PAGE : ALLOC_SMALL;
            pl->hot_ws_own += parts[i];
            pl->hot_ws_own_rounding += ceil(parts[i] / g) * g - parts[i];
        }
    }
    if (p->hot_mode && pl->moe_layers && E > 0 && eb > 0) {
        if (!pl->stream)
            pl->hot_ws = al(pl, ws_moe) + al(pl, (double)T * D * 4) +
                         al(pl, (double)max_pad * D * 4) + al(pl, (double)T * K * 4);
        double hb = p->hot_mode == 2 ? p->hot_bytes : 0;
        if (p->hot_mode == 1 && p->device_bytes > 0) {
            double rest = pl->weights + pl->kv + pl->activations + pl->workspace + pl->stream +
                          pl->rounding + pl->runtime + pl->hot_ws + 512.0 * MIB;
            hb = p->device_bytes > rest ? p->device_bytes - rest : 0;
            hb = floor(hb / eb) * eb;
        }
        double all = eb * (double)pl->routed_experts;
        if (hb > all) hb = all;
        pl->hot_experts_bytes = hb;
        pl->hot_experts =
            p->hot_mode == 2 && p->hot_count > 0 ? p->hot_count : (int64_t)floor(hb / eb);
        pl->hot = pl->hot_experts_bytes + pl->hot_ws;
    }
    pl->total = pl->weights + pl->kv + pl->activations + pl->workspace + pl->stream + pl->hot +
                pl->rounding + pl->runtime;

    /* ---- pinned host: hbuf slots 0-1 (CPU fallbacks: a host embedding table, host linears,
     * CPU attention), 2-4 (expert jobs: x, y, ids + weights), the staging ring */
    double s0 = 0, s1 = 0;
    if (!p->embed_on_gpu) s0 = (double)T * D * 4;
    if (w->host_linears > 0) { /* the widest possible host linear: bounded by the widest dim */
        int64_t wide = D > H * QD ? D : H * QD;
        if (ffn_max > wide) wide = ffn_max;
        if ((double)T * wide * 4 > s0) s0 = (double)T * wide * 4;
        s1 = s0;
    }
    if (!pl->kv_on_gpu) { /* CPU attention: the step's KV rows down (kv_flush), then per
                           * pass (att_rows tokens) q down, o up */
        double kvr = (double)T * (L + R) * 4;
        double q = (double)att_rows * H * (L + R) * 4, o = (double)att_rows * H * L * 4;
        if (kvr > s0) s0 = kvr;
        if (q > s0) s0 = q;
        if (o > s1) s1 = o;
    }
    double x = pl->moe_layers ? (double)T * D * 4 : 0;
    double ring = 2 * MIB;
    if (pl->kv_on_gpu) {
        double need = (double)T * (cdiv(max_seq > 0 ? max_seq : 1, p->kv_block_tokens) + 1) * 4;
        need = (double)(((int64_t)need + 255) & ~(int64_t)255);
        if (2 * need > ring) ring = 2 * need;
    }
    if (pl->stream > 0 || pl->hot > 0) { /* moe_split: routes down (slot 0), CPU routes (slot
                                          * 1), and every group's routes (cus_run) */
        if ((double)T * K * 4 > s0) s0 = (double)T * K * 4;
        if ((double)T * K * 4 > s1) s1 = (double)T * K * 4;
        ring += pl->stream > 0 ? s_gids : (double)T * K * 4;
    }
    pl->pinned_host = hbuf_size(s0) + hbuf_size(s1) + 2 * hbuf_size(x) +
                      (pl->moe_layers ? hbuf_size(2.0 * T * K * 4) : 0) + ring;
    return 0;
}

int64_t gpu_plan_kv_tokens_fit(const struct wt_hparams *hp, const struct gpu_plan_params *p,
                               double budget)
{
    struct gpu_plan_params q = *p;
    struct gpu_plan pl;
    int64_t bt = p->kv_block_tokens > 0 ? p->kv_block_tokens : 1;
    q.kv_tokens = 0;
    if (gpu_plan_compute(hp, &q, &pl, NULL) || !pl.kv_on_gpu || pl.total > budget) return 0;
    int64_t lo = 0, hi = 1; /* in blocks: lo fits, hi does not (after the doubling) */
    for (;;) {
        q.kv_tokens = hi * bt;
        if (gpu_plan_compute(hp, &q, &pl, NULL) || pl.total > budget) break;
        lo = hi;
        if (hi > ((int64_t)1 << 40) / bt / 2) return lo * bt;
        hi *= 2;
    }
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        q.kv_tokens = mid * bt;
        if (gpu_plan_compute(hp, &q, &pl, NULL) == 0 && pl.total <= budget) lo = mid;
        else hi = mid;
    }
    return lo * bt;
}

/* ---------------------------------------------------------------- text */

struct out {
    char *buf;
    size_t n, len;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = o->len < o->n ? o->n - o->len : 0;
    int k = vsnprintf(room ? o->buf + o->len : NULL, room, fmt, ap);
    va_end(ap);
    if (k > 0) o->len += (size_t)k;
}

static const char *tname(int t)
{
    return t == QTYPE_F8_E4M3 ? "fp8"
           : t == QTYPE_BF16  ? "bf16"
           : t == QTYPE_F32   ? "fp32"
                              : qtype_name(t);
}

int gpu_plan_format(const struct gpu_plan *pl, const struct gpu_plan_params *p, const char *ind,
                    char *buf, size_t n)
{
    struct out o = {.buf = buf, .n = n, .len = 0};
    if (n) buf[0] = 0;
    if (!ind) ind = "";
    const struct gpu_plan_weights *w = &pl->w;
    put(&o,
        "%sGPU plan: placement %s, %lld KV tokens, max_batch_tokens %d, %d of %d MoE layers' "
        "experts on the GPU\n",
        ind, gpu_placement_name(p->placement), (long long)pl->kv_tokens, p->max_batch_tokens,
        pl->gpu_expert_layers, pl->moe_layers);
    if (p->placement == GPU_PLACE_CPU) {
        put(&o, "%s  nothing on the GPU (cpu placement)\n", ind);
        return (int)o.len;
    }
    put(&o, "%s  weights       %8.2f GiB\n", ind, pl->weights / GIB);
    const int lt = p->linear_type, ggml = lt != QTYPE_F8_E4M3 && lt != QTYPE_BF16;
    char lts[96];
    if (!ggml) snprintf(lts, sizeof lts, "%s%s", tname(lt), lt == QTYPE_BF16 ? "" : " + scales");
    else if (p->requant_ggml)
        snprintf(lts, sizeof lts, "fp8 + scales, re-quantized from %s at load", tname(lt));
    else snprintf(lts, sizeof lts, "%s stays on the host (gpu.requant_ggml = off)", tname(lt));
    put(&o, "%s    attention   %8.2f GiB  q_a/q_b/kv_a/o, %s\n", ind, w->attention / GIB, lts);
    put(&o, "%s    kv_b        %8.2f GiB  absorbed W_UK/W_UV, %s\n", ind, w->kv_b / GIB,
        tname(p->kvb_type));
    put(&o, "%s    dense_ffn   %8.2f GiB  %s\n", ind, w->dense_ffn / GIB, lts);
    put(&o, "%s    shared_exp  %8.2f GiB  %s\n", ind, w->shared_experts / GIB, lts);
    put(&o, "%s    router      %8.2f GiB  bf16 + fp32 bias\n", ind, w->router / GIB);
    put(&o, "%s    norms       %8.2f GiB  fp32\n", ind, w->norms / GIB);
    put(&o, "%s    embed       %8.2f GiB  %s\n", ind, w->embed / GIB,
        p->embed_on_gpu ? "bf16 on the GPU" : "on the host (row gather + upload)");
    put(&o, "%s    lm_head     %8.2f GiB  bf16\n", ind, w->lm_head / GIB);
    put(&o, "%s    gpu_experts %8.2f GiB  %d layers, %s\n", ind, w->gpu_experts / GIB,
        pl->gpu_expert_layers, tname(p->expert_type));
    if (w->host_linears > 0)
        put(&o, "%s    (%.2f GiB of linears stay on the host: %s)\n", ind, w->host_linears / GIB,
            ggml && !p->requant_ggml ? "gpu.requant_ggml = off" : "k not a multiple of 128/8");
    if (pl->kv_on_gpu)
        put(&o, "%s  kv            %8.2f GiB  %.0f B/token (bf16 latent, all layers)\n", ind,
            pl->kv / GIB, pl->kv_bytes_per_token);
    else
        put(&o, "%s  kv            %8.2f GiB  on the host (attention shape not on the GPU path)\n",
            ind, 0.0);
    put(&o, "%s  activations   %8.2f GiB  work buffers %.2f + fp8 scratch %.2f\n", ind,
        pl->activations / GIB, pl->act_model / GIB, pl->act_fp8 / GIB);
    put(&o,
        "%s  workspace     %8.2f GiB  cublasLt %.0f MiB, gemv %.1f MiB, gemm swap <= %.0f "
        "MiB, mla <= %.1f MiB, prefill attention %.0f MiB, block tables <= %.1f MiB\n",
        ind, pl->workspace / GIB, pl->ws_cublaslt / MIB, pl->ws_gemv / MIB, pl->ws_gemm_swap / MIB,
        pl->ws_mla / MIB, pl->ws_mla_prefill / MIB, pl->ws_block_tables / MIB);
    if (pl->stream_size > 0)
        put(&o,
            "%s  stream        %8.2f GiB  gpu.prefill_experts %s %.2f GiB: staging 2 x %.0f "
            "MiB (%d %s experts a slot), expert op workspace %.0f MiB, buffers %.0f MiB\n",
            ind, pl->stream / GIB, p->prefill_experts ? "on:" : "off; on would add",
            pl->stream_size / GIB, pl->stream_slots / 2 / MIB, pl->stream_group,
            tname(p->stream_expert_type), pl->stream_ws / MIB,
            (pl->stream_size - pl->stream_slots - pl->stream_ws) / MIB);
    if (pl->moe_layers && pl->expert_bytes > 0) {
        if (!p->hot_mode)
            put(&o, "%s  hot           %8.2f GiB  gpu.hot_experts off (%.1f MiB a %s expert)\n",
                ind, 0.0, pl->expert_bytes / MIB, tname(p->stream_expert_type));
        else if (p->hot_mode == 1 && !(p->device_bytes > 0))
            put(&o,
                "%s  hot           %8.2f GiB  gpu.hot_experts auto: what the device has free "
                "after the pools above, less 512 MiB, at start-up (%.1f MiB a %s expert; give "
                "the device size to price it); expert op workspace and buffers %.0f MiB\n",
                ind, pl->hot / GIB, pl->expert_bytes / MIB, tname(p->stream_expert_type),
                pl->hot_ws / MIB);
        else
            put(&o,
                "%s  hot           %8.2f GiB  gpu.hot_experts %s: %lld of %lld %s experts "
                "(%.1f%%) at %.1f MiB each, %.2f GiB; expert op workspace and buffers %.0f MiB%s\n",
                ind, pl->hot / GIB, p->hot_mode == 1 ? "auto" : "given", (long long)pl->hot_experts,
                (long long)pl->routed_experts, tname(p->stream_expert_type),
                pl->routed_experts ? 100.0 * (double)pl->hot_experts / (double)pl->routed_experts
                                   : 0.0,
                pl->expert_bytes / MIB, pl->hot_experts_bytes / GIB, pl->hot_ws / MIB,
                pl->stream > 0 ? " (in the stream pool)" : "");
    }
    put(&o, "%s  rounding      %8.2f GiB  cudaMalloc granularity (2 MiB pages above 1 MiB)\n", ind,
        pl->rounding / GIB);
    put(&o, "%s  runtime       %8.2f GiB  CUDA context, cuBLAS, small allocations (measured)\n",
        ind, pl->runtime / GIB);
    put(&o, "%s  total         %8.2f GiB  (%.2f GB)\n", ind, pl->total / GIB, pl->total / 1e9);
    put(&o, "%s  pinned host   %8.2f GiB\n", ind, pl->pinned_host / GIB);
    return (int)o.len;
}

static void log_lines(char *buf)
{
    for (char *s = buf, *e; *s; s = e + 1) {
        e = strchr(s, '\n');
        if (!e) {
            LOG_INFO("gpu", "%s", s);
            break;
        }
        *e = 0;
        LOG_INFO("gpu", "%s", s);
    }
}

void gpu_plan_log(const struct gpu_plan *pl, const struct gpu_plan_params *p)
{
    char buf[8192];
    gpu_plan_format(pl, p, "", buf, sizeof buf);
    log_lines(buf);
}

/* ---------------------------------------------------------------- several devices */

int gpu_plan_devices(const struct gpu_plan *pl0, const struct gpu_plan_params *p, const int *ids,
                     int n, struct gpu_plan_dev *out, char *err)
{
    if (n < 1 || n > 16) return err_set(err, ERR_INVAL, "gpu plan: %d devices (1..16)", n);
    memset(out, 0, (size_t)n * sizeof *out);
    out[0].device = ids[0];
    out[0].primary = 1;
    out[0].hot_experts_bytes = pl0->hot_experts_bytes;
    out[0].hot_experts = pl0->hot_experts;
    out[0].hot_ws = pl0->hot_ws;
    out[0].rounding = pl0->rounding;
    out[0].runtime = pl0->runtime;
    out[0].total = pl0->total;
    const double eb = pl0->expert_bytes;
    int64_t left = pl0->routed_experts - pl0->hot_experts; /* no expert is hot twice */
    for (int i = 1; i < n; i++) {
        struct gpu_plan_dev *d = &out[i];
        d->device = ids[i];
        d->runtime = p->runtime_reserve;
        if (p->hot_mode && eb > 0 && pl0->routed_experts > 0) {
            d->hot_ws = pl0->hot_ws_own;
            d->rounding = pl0->hot_ws_own_rounding;
            double hb = p->hot_mode == 2 ? p->hot_bytes : 0;
            if (p->hot_mode == 1 && p->device_bytes > 0) {
                double rest = d->hot_ws + d->rounding + d->runtime + 512.0 * MIB;
                hb = p->device_bytes > rest ? floor((p->device_bytes - rest) / eb) * eb : 0;
            }
            int64_t k = (int64_t)floor(hb / eb);
            if (k > left) k = left > 0 ? left : 0;
            left -= k;
            d->hot_experts = k;
            d->hot_experts_bytes = (double)k * eb;
            if (!k) d->hot_ws = d->rounding = 0; /* nothing to compute there */
        }
        d->total = d->hot_experts_bytes + d->hot_ws + d->rounding + d->runtime;
    }
    return 0;
}

int gpu_plan_devices_format(const struct gpu_plan_dev *d, int n, const struct gpu_plan *pl0,
                            const char *ind, char *buf, size_t len)
{
    struct out o = {.buf = buf, .n = len, .len = 0};
    if (len) buf[0] = 0;
    if (!ind) ind = "";
    int64_t hot = 0;
    for (int i = 0; i < n; i++) hot += d[i].hot_experts;
    put(&o, "%sGPU plan per device (%d device%s, %lld hot experts in all):\n", ind, n,
        n == 1 ? "" : "s", (long long)hot);
    for (int i = 0; i < n; i++) {
        if (d[i].primary)
            put(&o,
                "%s  device %-3d %8.2f GiB  primary: the plan above (attention, dense layers, "
                "shared experts, router, KV cache, work buffers), %lld hot experts\n",
                ind, d[i].device, d[i].total / GIB, (long long)d[i].hot_experts);
        else if (d[i].hot_experts_bytes > 0 || d[i].hot_ws > 0)
            put(&o,
                "%s  device %-3d %8.2f GiB  hot experts only: %lld (%.2f GiB at %.1f MiB each), "
                "expert op workspace and buffers %.0f MiB, runtime %.2f GiB\n",
                ind, d[i].device, d[i].total / GIB, (long long)d[i].hot_experts,
                d[i].hot_experts_bytes / GIB, pl0->expert_bytes / MIB, d[i].hot_ws / MIB,
                d[i].runtime / GIB);
        else
            put(&o,
                "%s  device %-3d %8.2f GiB  nothing but its runtime (gpu.hot_experts off, or no "
                "expert left for it)\n",
                ind, d[i].device, d[i].total / GIB);
    }
    return (int)o.len;
}

void gpu_plan_devices_log(const struct gpu_plan_dev *d, int n, const struct gpu_plan *pl0)
{
    char buf[4096];
    gpu_plan_devices_format(d, n, pl0, "", buf, sizeof buf);
    log_lines(buf);
}
