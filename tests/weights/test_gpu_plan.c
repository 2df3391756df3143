/* test_gpu_plan.c - engine/model/gpu_plan: the device memory plan from a config alone.
 *   - full DeepSeek-V3 (tests/weights/test_gpu_plan_v3.json, spec section 1): every weight part
 *     equals the bytes computed here from the shapes of spec section 2 and ops_cuda's upload
 *     rules; the layout tandem uses today and the proposed one (embeddings on the host, kv_b in
 *     FP8) are printed; the proposed layout (ops_cuda's now) fits 22 GB with a 32K-token KV
 *     cache, hybrid, at the default 2048 tokens per step and at 1024; model.c's work buffers
 *     (q~ / o~ for one 256-token attention pass, gate / up for one 512-token dense-FFN pass) are
 *     checked byte for byte at batch sizes around the pass sizes;
 *   - monotone in the KV size, the batch size and the GPU expert layers; gpu = all experts;
 *     cpu = nothing; gpu_plan_kv_tokens_fit agrees with gpu_plan_compute;
 *   - the tiny and v3-slice presets' shapes give sane values; bad params are refused;
 *   - `tandem inspect` on a directory holding only config.json, and on the bare file, prints the
 *     plan (text and --json), takes --placement / --gpu-expert-layers / --context, and refuses
 *     bad values and garbage configs with a non-zero exit;
 *   - the plan per device (gpu_plan_devices): the first device's is the plan, the others hold
 *     their runtime alone (hot experts off), or with auto as many whole experts as fit each
 *     device less the margin, or a given size each.
 */
#include "check.h"

#include "common/err.h"
#include "engine/model/expert_counts.h"
#include "engine/model/gpu_plan.h"

#include <jansson.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define GIB (1024.0 * 1024.0 * 1024.0)
#define BUDGET 22e9 /* issue 7: the GPU side of full V3 at 32K in 22 GB */

static double fp8(double r, double c)
{
    return r * c + ceil(r / 128) * (4 * ceil(ceil(c / 128) / 4)) * 4;
}

static void load_v3(struct wt_hparams *hp)
{
    const char *src = getenv("TANDEM_SRC");
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/weights/test_gpu_plan_v3.json", src ? src : ".");
    char err[ERR_LEN] = "";
    int rc = wt_hparams_from_json_file(path, hp, err);
    if (rc) fprintf(stderr, "%s: %s\n", path, err);
    CHECK_EQ(rc, 0);
    CHECK_EQ(hp->n_layers, 61);
    CHECK_EQ(hp->hidden, 7168);
}

/* model.c's work buffers for V3 at max_batch_tokens T, in bytes: per token h, a, tmp, ro (D
 * each), qa (QL), q (H x 192), kv, kvn (576 each), ov (H x 128), router logits (256), ids and
 * weights (8 each); q~ (H x 576) and o~ (H x 512) for min(T, 256) tokens (one attention pass);
 * gate and up of max(T x 2048 (shared expert), min(T, 512) x 18432 (dense FFN, one pass));
 * 16 rows of (D + vocab) for the logits. */
static double v3_act_model(double T)
{
    const double D = 7168, H = 128, QL = 1536, VOC = 129280;
    double per_tok = 4 * D + QL + H * 192 + 2 * 576 + H * 128 + 256 + 2 * 8;
    double att = T < 256 ? T : 256, dense = T < 512 ? T : 512;
    double gu = T * 2048 > dense * 18432 ? T * 2048 : dense * 18432;
    return 4 * (T * per_tok + att * H * (576 + 512) + 2 * gu + 16 * (D + VOC));
}

static void print_plan(const char *title, const struct gpu_plan *pl,
                       const struct gpu_plan_params *p)
{
    char buf[4096];
    int n = gpu_plan_format(pl, p, "  ", buf, sizeof buf);
    CHECK(n > 0 && (size_t)n < sizeof buf);
    printf("%s\n%s", title, buf);
}

static void v3_exact(const struct wt_hparams *hp)
{
    struct gpu_plan_params p;
    struct gpu_plan pl;
    char err[ERR_LEN];
    gpu_plan_defaults(&p);
    CHECK_EQ(p.kvb_type, QTYPE_F8_E4M3); /* what ops_cuda does */
    CHECK_EQ(p.embed_on_gpu, 0);
    /* the checks below start from the earlier layout: fp32 kv_b, a device embedding table */
    p.kvb_type = QTYPE_F32;
    p.embed_on_gpu = 1;
    CHECK_EQ(gpu_plan_compute(hp, &p, &pl, err), 0);
    const double D = 7168, H = 128, QL = 1536, L = 512, R = 64, NOPE = 128, V = 128, VOC = 129280;
    double attn = fp8(QL, D) + fp8(H * (NOPE + R), QL) + fp8(L + R, D) + fp8(D, H * V);
    CHECK_EQ(attn, 11010048 + 2688 + 37748736 + 9216 + 4128768 + 1120 + 117440512 + 28672);
    CHECK_EQ(pl.w.attention, 61 * attn);
    CHECK_EQ(pl.w.kv_b, 61 * H * (NOPE + V) * L * 4); /* fp32, as model.c uploads */
    CHECK_EQ(pl.w.dense_ffn, 3 * (2 * fp8(18432, D) + fp8(D, 18432)));
    CHECK_EQ(pl.w.shared_experts, 58 * (2 * fp8(2048, D) + fp8(D, 2048)));
    CHECK_EQ(pl.w.router, 58 * (256 * D * 2 + 256 * 4));
    CHECK_EQ(pl.w.norms, 61 * (2 * D + L + QL) * 4 + D * 4);
    CHECK_EQ(pl.w.embed, VOC * D * 2);
    CHECK_EQ(pl.w.lm_head, VOC * D * 2);
    CHECK_EQ(pl.w.gpu_experts, 0);
    CHECK_EQ(pl.w.host_linears, 0);
    CHECK_EQ(pl.kv_bytes_per_token, 61 * 576 * 2);
    CHECK_EQ(pl.kv, 32768.0 * 61 * 576 * 2);
    CHECK(pl.kv_on_gpu);
    CHECK_EQ(pl.moe_layers, 58);
    CHECK_EQ(pl.max_k, 18432); /* dense down_proj */
    CHECK_EQ(pl.max_n, 24576); /* q_b */
    /* model.c work buffers (v3_act_model), at the default 2048 tokens and around the pass sizes */
    CHECK_EQ(pl.act_model, v3_act_model(2048));
    CHECK_EQ(v3_act_model(2048), 4 * (2048 * (4 * D + QL + H * 192 + 2 * 576 + H * 128 + 256 + 16) +
                                      256 * H * 1088 + 2 * 512 * 18432 + 16 * (D + VOC)));
    {
        const int ts[] = {1, 100, 255, 256, 257, 511, 512, 513, 1024, 4608, 4609, 8192};
        struct gpu_plan_params pt = p;
        struct gpu_plan pq;
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
            pt.max_batch_tokens = ts[i];
            CHECK_EQ(gpu_plan_compute(hp, &pt, &pq, err), 0);
            CHECK_EQ(pq.act_model, v3_act_model(ts[i]));
        }
    }
    CHECK_EQ(pl.act_fp8, 2048.0 * 18432 + 144.0 * 2048 * 4); /* exact GEMM: no padded-y scratch */
    CHECK_EQ(pl.ws_cublaslt, 32 << 20);
    CHECK(pl.ws_gemv > 0 && pl.ws_gemv < 16 * 1048576.0);
    CHECK(pl.ws_mla > 0 && pl.ws_mla < 256 * 1048576.0);
    CHECK_EQ(pl.ws_block_tables, 2048.0 * (32768 / 16) * 8);
    CHECK_NEAR(pl.total,
               pl.weights + pl.kv + pl.activations + pl.workspace + pl.stream + pl.rounding +
                   pl.runtime,
               1);
    CHECK_EQ(pl.stream, 0); /* gpu.prefill_experts off: not counted */
    CHECK(pl.stream_size > 0);
    CHECK(pl.rounding > 0 && pl.rounding < 0.5 * GIB);
    print_plan("DeepSeek-V3, hybrid, 32K context, the earlier layout (embeddings on the GPU, kv_b "
               "fp32):",
               &pl, &p);
    printf("  -> %.2f GB: %s 22 GB\n", pl.total / 1e9,
           pl.total <= BUDGET ? "fits" : "does NOT fit");
    double today = pl.total, today_w = pl.weights;

    /* the options, one at a time */
    struct gpu_plan_params q = p;
    struct gpu_plan o;
    q.embed_on_gpu = 0;
    CHECK_EQ(gpu_plan_compute(hp, &q, &o, err), 0);
    CHECK_EQ(o.w.embed, 0);
    CHECK_EQ(today_w - o.weights, VOC * D * 2);
    CHECK(today - o.total >= VOC * D * 2);
    printf("  embeddings on the host: %.2f GB\n", o.total / 1e9);
    q = p;
    q.kvb_type = QTYPE_F8_E4M3;
    CHECK_EQ(gpu_plan_compute(hp, &q, &o, err), 0);
    CHECK_EQ(o.w.kv_b, 61 * fp8(H * (NOPE + V), L));
    printf("  kv_b in FP8: %.2f GB; in bf16: ", o.total / 1e9);
    q.kvb_type = QTYPE_BF16;
    CHECK_EQ(gpu_plan_compute(hp, &q, &o, err), 0);
    CHECK_EQ(o.w.kv_b, 61 * H * (NOPE + V) * L * 2);
    printf("%.2f GB\n", o.total / 1e9);

    /* proposed: both (what ops_cuda does); fits at the default batch (2048 tokens) and at 1024 */
    q = p;
    q.embed_on_gpu = 0;
    q.kvb_type = QTYPE_F8_E4M3;
    CHECK_EQ(gpu_plan_compute(hp, &q, &o, err), 0);
    print_plan("DeepSeek-V3, hybrid, 32K context, embeddings on the host, kv_b FP8, "
               "max_batch_tokens 2048 (the default):",
               &o, &q);
    printf("  -> %.2f GB (%.2f GiB): %s 22 GB\n", o.total / 1e9, o.total / GIB,
           o.total <= BUDGET ? "fits" : "does NOT fit");
    CHECK(o.total <= BUDGET);
    printf("  KV tokens that fit 22 GB with this layout: %lld\n",
           (long long)gpu_plan_kv_tokens_fit(hp, &q, BUDGET));
    {
        /* gpu.prefill_attention_mb: cuBLAS 32 MiB + the 32K-token sequence's rows as fp32 +
         * the score scratch, in the workspace; still within the budget at 256 MiB */
        struct gpu_plan_params qa = q;
        struct gpu_plan oa;
        CHECK_EQ(o.ws_mla_prefill, 0);
        qa.prefill_attention_mb = 256;
        CHECK_EQ(gpu_plan_compute(hp, &qa, &oa, err), 0);
        CHECK_EQ(oa.ws_mla_prefill, 32.0 * 1048576 + 32768.0 * 576 * 4 + 256.0 * 1048576);
        CHECK_NEAR(oa.workspace - o.workspace, oa.ws_mla_prefill, 1);
        CHECK(oa.total > o.total && oa.total <= BUDGET);
        printf("  with gpu.prefill_attention_mb = 256: %.2f GB\n", oa.total / 1e9);
    }
    q.max_batch_tokens = 1024;
    CHECK_EQ(gpu_plan_compute(hp, &q, &o, err), 0);
    print_plan("DeepSeek-V3, hybrid, 32K context, embeddings on the host, kv_b FP8, "
               "max_batch_tokens 1024:",
               &o, &q);
    printf("  -> %.2f GB (%.2f GiB): %s 22 GB\n", o.total / 1e9, o.total / GIB,
           o.total <= BUDGET ? "fits" : "does NOT fit");
    CHECK(o.total <= BUDGET);
    CHECK(o.total < today);
    int64_t fit = gpu_plan_kv_tokens_fit(hp, &q, BUDGET);
    printf("  KV tokens that fit 22 GB with this layout: %lld\n", (long long)fit);
    CHECK(fit >= 32768);

    /* expert streaming for long prefills (gpu.prefill_experts, default 400 MiB staging, Q4_K):
     * 8 experts of 24.8 MB a slot; the default layout at 32K context stays within 24 GB */
    q.max_batch_tokens = 2048;
    double off_total = 0;
    CHECK_EQ(gpu_plan_compute(hp, &q, &o, err), 0);
    off_total = o.total;
    q.prefill_experts = 1;
    CHECK_EQ(gpu_plan_compute(hp, &q, &o, err), 0);
    print_plan(
        "DeepSeek-V3, hybrid, 32K context, max_batch_tokens 2048, gpu.prefill_experts on:", &o, &q);
    printf("  -> %.2f GB (%.2f GiB): %s 24 GB\n", o.total / 1e9, o.total / GIB,
           o.total <= 24e9 ? "fits" : "does NOT fit");
    CHECK_EQ(o.stream_group, 8);
    CHECK(o.stream == o.stream_size && o.stream > 400 * 1048576.0 && o.stream < 1.0 * GIB);
    CHECK(o.total > off_total && o.total <= 24e9);
    CHECK_NEAR(o.total,
               o.weights + o.kv + o.activations + o.workspace + o.stream + o.rounding + o.runtime,
               1);
    /* with layered prefill on, a pass's residual stream (2048 x 7168 fp32, one 2 MiB-rounded
     * allocation) more; still within 24 GB */
    double layered_off = o.total;
    q.layered_prefill = 1;
    CHECK_EQ(gpu_plan_compute(hp, &q, &o, err), 0);
    CHECK_NEAR(o.total - layered_off, 2048.0 * hp->hidden * 4, 2 * 1048576.0);
    CHECK(o.total > layered_off && o.total <= 24e9);
    printf("  with layered prefill: %.2f GB\n", o.total / 1e9);
    /* expert deferral: its buffer for the forward and one for the layered pass */
    double defer_off = o.total;
    q.defer_experts = 1;
    CHECK_EQ(gpu_plan_compute(hp, &q, &o, err), 0);
    CHECK_NEAR(o.total - defer_off, 2 * 2048.0 * hp->hidden * 4, 4 * 1048576.0);
    q.layered_prefill = 0;
    CHECK_EQ(gpu_plan_compute(hp, &q, &o, err), 0);
    CHECK_NEAR(o.total - layered_off, 2048.0 * hp->hidden * 4, 2 * 1048576.0);
    q.defer_experts = 0;

    /* hot experts (gpu.hot_experts): a given size holds whole Q4_K experts (23.6 MiB each) and
     * adds their bytes plus, without the stream pool, the expert op's workspace and buffers;
     * auto fills a device less every other pool and 512 MiB */
    q.prefill_experts = 0;
    CHECK_EQ(gpu_plan_compute(hp, &q, &o, err), 0);
    CHECK_EQ(o.hot, 0);
    const double ebq = 2.0 * 2048 * (7168 / 256 * 144) + 7168.0 * (2048 / 256 * 144);
    CHECK_EQ(o.expert_bytes, ebq);
    CHECK_EQ(o.routed_experts, 58 * 256);
    double hot_off = o.total;
    q.hot_mode = 2;
    q.hot_bytes = 4600.0 * 1048576;
    CHECK_EQ(gpu_plan_compute(hp, &q, &o, err), 0);
    CHECK_EQ(o.hot_experts, (int64_t)(q.hot_bytes / ebq));
    CHECK(o.hot_ws > 100 * 1048576.0 && o.hot_ws < 300 * 1048576.0);
    CHECK_NEAR(o.hot, q.hot_bytes + o.hot_ws, 1);
    CHECK(o.total >= hot_off + o.hot && o.total < hot_off + o.hot + 8 * 1048576.0);
    CHECK_NEAR(o.total,
               o.weights + o.kv + o.activations + o.workspace + o.stream + o.hot + o.rounding +
                   o.runtime,
               1);
    q.hot_count = 150; /* the engine's own count of what it placed */
    CHECK_EQ(gpu_plan_compute(hp, &q, &o, err), 0);
    CHECK_EQ(o.hot_experts, 150);
    q.hot_count = 0;
    q.prefill_experts = 1; /* the stream pool holds the workspace and buffers */
    CHECK_EQ(gpu_plan_compute(hp, &q, &o, err), 0);
    CHECK_EQ(o.hot_ws, 0);
    q.prefill_experts = 0;
    q.hot_mode = 1;
    q.device_bytes = 80.0 * GIB;
    CHECK_EQ(gpu_plan_compute(hp, &q, &o, err), 0);
    CHECK(o.total <= q.device_bytes - 512 * 1048576.0 &&
          o.total > q.device_bytes - 512 * 1048576.0 - ebq - 4 * 1048576.0);
    CHECK_EQ(o.hot_experts_bytes, o.hot_experts * ebq);
    print_plan("DeepSeek-V3, hybrid, 32K context, gpu.hot_experts auto on an 80 GiB device:", &o,
               &q);
    printf("  -> %lld of %lld experts hot (%.1f%%)\n", (long long)o.hot_experts,
           (long long)o.routed_experts, 100.0 * o.hot_experts / o.routed_experts);
    q.device_bytes = 0; /* unknown: nothing priced */
    CHECK_EQ(gpu_plan_compute(hp, &q, &o, err), 0);
    CHECK_EQ(o.hot_experts_bytes, 0);
    q.hot_mode = 0;

    /* the largest step per layout (for the report) */
    for (int lay = 0; lay < 4; lay++) {
        q = p;
        q.embed_on_gpu = !(lay & 1);
        q.kvb_type = lay & 2 ? QTYPE_F8_E4M3 : QTYPE_F32;
        printf("  embed %s, kv_b %s:", q.embed_on_gpu ? "GPU" : "host", lay & 2 ? "fp8" : "fp32");
        for (int t = 4096; t >= 64; t /= 2) {
            q.max_batch_tokens = t;
            CHECK_EQ(gpu_plan_compute(hp, &q, &o, err), 0);
            printf(" %d:%.2f", t, o.total / 1e9);
        }
        printf(" GB (max_batch_tokens:total)\n");
    }
}

static void monotone(const struct wt_hparams *hp)
{
    struct gpu_plan_params p;
    struct gpu_plan a, b;
    char err[ERR_LEN];
    gpu_plan_defaults(&p);
    unsigned long long seed = check_seed();
    srand((unsigned)seed);
    double prev = 0;
    for (int64_t ctx = 0; ctx <= 163840; ctx += 1 + rand() % 9000) {
        p.kv_tokens = ctx;
        CHECK_EQ(gpu_plan_compute(hp, &p, &a, err), 0);
        CHECK(a.total >= prev);
        CHECK(a.kv == (double)ctx * 61 * 1152);
        prev = a.total;
    }
    gpu_plan_defaults(&p);
    prev = 0;
    for (int t = 1; t <= 8192; t += 1 + rand() % 300) {
        p.max_batch_tokens = t;
        CHECK_EQ(gpu_plan_compute(hp, &p, &a, err), 0);
        CHECK(a.activations >= 0 && a.total > 0);
        CHECK(a.weights + a.kv + a.activations > prev);
        prev = a.weights + a.kv + a.activations;
    }
    gpu_plan_defaults(&p);
    prev = 0;
    double one = 0;
    for (int n = 0; n <= 60; n++) {
        p.gpu_expert_layers = n;
        CHECK_EQ(gpu_plan_compute(hp, &p, &a, err), 0);
        CHECK_EQ(a.gpu_expert_layers, n < 58 ? n : 58);
        if (n == 1) one = a.w.gpu_experts;
        CHECK_EQ(a.w.gpu_experts, one * a.gpu_expert_layers);
        CHECK(n == 0 || a.total > prev || n > 58);
        prev = a.total;
    }
    /* one FP8 layer of 256 experts: 3 matrices of 2048 x 7168 plus scales */
    CHECK_EQ(one, 256 * (2 * fp8(2048, 7168) + fp8(7168, 2048)));
    p.placement = GPU_PLACE_GPU;
    p.gpu_expert_layers = 0;
    CHECK_EQ(gpu_plan_compute(hp, &p, &b, err), 0);
    CHECK_EQ(b.gpu_expert_layers, 58);
    CHECK_EQ(b.w.gpu_experts, 58 * one);
    printf("gpu placement (all experts FP8 on the GPU): %.1f GiB\n", b.total / GIB);
    p.expert_type = QTYPE_Q4_K;
    CHECK_EQ(gpu_plan_compute(hp, &p, &b, err), 0);
    CHECK_EQ(b.w.gpu_experts, 58.0 * 256 * 3 * 2048 * 7168 / 256 * 144);
    p.expert_type = QTYPE_Q4_0; /* 2048 and 7168 are multiples of 32 */
    CHECK_EQ(gpu_plan_compute(hp, &p, &b, err), 0);
    p.placement = GPU_PLACE_CPU;
    CHECK_EQ(gpu_plan_compute(hp, &p, &b, err), 0);
    CHECK_EQ(b.total, 0);
    CHECK_EQ(b.weights, 0);
    CHECK_EQ(b.pinned_host, 0);
    char buf[512];
    gpu_plan_format(&b, &p, "", buf, sizeof buf);
    CHECK_CONTAINS(buf, "nothing on the GPU");

    /* kv fit: the answer fits, one more block does not */
    gpu_plan_defaults(&p);
    p.embed_on_gpu = 0;
    p.kvb_type = QTYPE_F8_E4M3;
    for (int i = 0; i < 5; i++) {
        double budget = 22e9 + (double)(rand() % 100000) * 1e5;
        int64_t k = gpu_plan_kv_tokens_fit(hp, &p, budget);
        CHECK(k > 0 && k % 16 == 0);
        p.kv_tokens = k;
        CHECK_EQ(gpu_plan_compute(hp, &p, &a, err), 0);
        CHECK(a.total <= budget);
        p.kv_tokens = k + 16;
        CHECK_EQ(gpu_plan_compute(hp, &p, &a, err), 0);
        CHECK(a.total > budget);
    }
    CHECK_EQ(gpu_plan_kv_tokens_fit(hp, &p, 1e9), 0); /* the weights alone do not fit */
}

static void presets(void)
{
    /* tiny (synth.c): hidden 256, 2 heads: attention and the KV cache stay on the host */
    struct wt_hparams hp = {.vocab_size = 1024,
                            .hidden = 256,
                            .inter = 512,
                            .moe_inter = 256,
                            .n_layers = 3,
                            .n_heads = 2,
                            .q_lora_rank = 256,
                            .kv_lora_rank = 512,
                            .qk_nope = 128,
                            .qk_rope = 64,
                            .v_head = 128,
                            .n_routed = 8,
                            .n_shared = 1,
                            .top_k = 4,
                            .n_group = 4,
                            .topk_group = 2,
                            .first_k_dense = 1,
                            .moe_layer_freq = 1,
                            .scoring = WT_SCORE_SIGMOID};
    struct gpu_plan_params p;
    struct gpu_plan pl;
    char err[ERR_LEN];
    gpu_plan_defaults(&p);
    CHECK_EQ(gpu_plan_compute(&hp, &p, &pl, err), 0);
    CHECK(!pl.kv_on_gpu);
    CHECK_EQ(pl.kv, 0);
    CHECK_EQ(pl.ws_mla, 0);
    CHECK(pl.weights > 1e6 && pl.weights < 20e6);
    CHECK_EQ(pl.moe_layers, 2);
    CHECK_EQ(pl.w.host_linears, 0);
    print_plan("tiny preset, hybrid:", &pl, &p);
    /* 16 heads (tiny16): attention on the GPU */
    hp.n_heads = 16;
    CHECK_EQ(gpu_plan_compute(&hp, &p, &pl, err), 0);
    CHECK(pl.kv_on_gpu);
    CHECK_EQ(pl.kv, 32768.0 * 3 * 1152);
    /* an FP8 linear with k % 128 != 0 stays on the host */
    hp.hidden = 200;
    CHECK_EQ(gpu_plan_compute(&hp, &p, &pl, err), 0);
    CHECK(pl.w.host_linears > 0);
    /* a BF16 checkpoint (V2-Lite-like: no q_lora) */
    hp.hidden = 256;
    hp.q_lora_rank = 0;
    p.linear_type = QTYPE_BF16;
    CHECK_EQ(gpu_plan_compute(&hp, &p, &pl, err), 0);
    CHECK_EQ(pl.max_k, 0);
    CHECK_EQ(pl.act_fp8, 0);
    CHECK_EQ(pl.ws_cublaslt, 0);
    CHECK_EQ(pl.w.attention, 3.0 * 2 * (576 * 256 + 256 * 16 * 128 + 16 * 192 * 256));

    /* v3-slice (synth.c): V3's dims, 3 layers (1 dense + 2 MoE) */
    struct wt_hparams v3;
    load_v3(&v3);
    v3.n_layers = 3;
    v3.first_k_dense = 1;
    gpu_plan_defaults(&p);
    CHECK_EQ(gpu_plan_compute(&v3, &p, &pl, err), 0);
    CHECK(pl.kv_on_gpu);
    CHECK_EQ(pl.moe_layers, 2);
    CHECK(pl.weights > 2 * GIB &&
          pl.weights < 4 * GIB); /* lm_head 1.73 GiB + 3 layers (embeddings on the host) */
    print_plan("v3-slice (1 dense + 2 MoE), hybrid:", &pl, &p);

    /* bad input */
    gpu_plan_defaults(&p);
    p.max_batch_tokens = 0;
    CHECK_EQ(gpu_plan_compute(&v3, &p, &pl, err), ERR_INVAL);
    gpu_plan_defaults(&p);
    p.kvb_type = QTYPE_Q4_K;
    CHECK_EQ(gpu_plan_compute(&v3, &p, &pl, err), ERR_INVAL);
    gpu_plan_defaults(&p);
    p.placement = (enum gpu_placement)7;
    CHECK_EQ(gpu_plan_compute(&v3, &p, &pl, err), ERR_INVAL);
    gpu_plan_defaults(&p);
    p.placement = GPU_PLACE_GPU;
    p.expert_type = QTYPE_Q4_K;
    v3.moe_inter = 2000; /* not a multiple of 256 */
    CHECK_EQ(gpu_plan_compute(&v3, &p, &pl, err), ERR_INVAL);
    CHECK_CONTAINS(err, "q4_K");
    v3.moe_inter = 2048;
    v3.hidden = 1 << 21;
    CHECK_EQ(gpu_plan_compute(&v3, &p, &pl, err), ERR_INVAL);
    v3.hidden = 7168;
    v3.vocab_size = 1 << 30;
    CHECK_EQ(gpu_plan_compute(&v3, &p, &pl, err), ERR_INVAL);
    struct wt_hparams zero = {0};
    CHECK_EQ(gpu_plan_compute(&zero, &p, &pl, err), ERR_INVAL);
    CHECK_EQ(gpu_placement_parse("hybrid"), GPU_PLACE_HYBRID);
    CHECK_EQ(gpu_placement_parse("cpu"), GPU_PLACE_CPU);
    CHECK_EQ(gpu_placement_parse("gpu"), GPU_PLACE_GPU);
    CHECK_EQ(gpu_placement_parse("auto"), -1);
    /* a short buffer truncates, returns the full length */
    char small[16];
    int n = gpu_plan_format(&pl, &p, "", small, sizeof small);
    CHECK(n > 16 && strlen(small) == 15);
}

static char *run(const char *cmd, int *status)
{
    FILE *f = popen(cmd, "r");
    CHECK(f);
    size_t cap = 1 << 16, n = 0, k;
    char *buf = malloc(cap);
    CHECK(buf);
    while ((k = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += k;
        if (n + 1 == cap) {
            buf = realloc(buf, cap *= 2);
            CHECK(buf);
        }
    }
    buf[n] = 0;
    int st = pclose(f);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return buf;
}

static void inspect(void)
{
    const char *bin = getenv("TANDEM_BIN"), *src = getenv("TANDEM_SRC");
    if (!bin || !src) {
        printf("inspect: TANDEM_BIN/TANDEM_SRC not set, skipped\n");
        return;
    }
    char root[256], cmd[2048], cfg[1024];
    snprintf(root, sizeof root, "/tmp/tandem-test-gpu-plan-%d", (int)getpid());
    CHECK(mkdir(root, 0700) == 0);
    snprintf(cfg, sizeof cfg, "%s/tests/weights/test_gpu_plan_v3.json", src);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s/config.json'", cfg, root);
    CHECK(system(cmd) == 0);
    int st;
    /* a directory with only config.json */
    snprintf(cmd, sizeof cmd, "'%s' inspect '%s' --context 32768 2>&1", bin, root);
    char *out = run(cmd, &st);
    printf("%s", out);
    CHECK_EQ(st, 0);
    CHECK_CONTAINS(out, "61 layers (3 dense, 58 MoE)");
    CHECK_CONTAINS(out, "GPU plan: placement hybrid, 32768 KV tokens");
    CHECK_CONTAINS(out, "kv_b");
    CHECK_CONTAINS(out, "config only");
    free(out);
    /* the bare file, JSON, other placements */
    snprintf(cmd, sizeof cmd, "'%s' inspect '%s' --json --placement gpu 2>/dev/null", bin, cfg);
    out = run(cmd, &st);
    CHECK_EQ(st, 0);
    json_t *j = json_loads(out, 0, NULL);
    CHECK(j);
    json_t *gp = json_object_get(j, "gpu_plan");
    CHECK(gp);
    CHECK_STR(json_string_value(json_object_get(gp, "placement")), "gpu");
    CHECK_EQ(json_integer_value(json_object_get(gp, "gpu_expert_layers")), 58);
    json_t *wj = json_object_get(gp, "weights");
    CHECK(json_integer_value(json_object_get(wj, "gpu_experts")) > 600e9);
    CHECK_EQ(json_integer_value(json_object_get(gp, "kv_tokens")), 163840); /* max positions */
    json_decref(j);
    free(out);
    snprintf(cmd, sizeof cmd,
             "'%s' inspect '%s' --json --context 4096 --gpu-expert-layers 2 "
             "2>/dev/null",
             bin, cfg);
    out = run(cmd, &st);
    CHECK_EQ(st, 0);
    j = json_loads(out, 0, NULL);
    CHECK(j);
    gp = json_object_get(j, "gpu_plan");
    CHECK_EQ(json_integer_value(json_object_get(gp, "gpu_expert_layers")), 2);
    CHECK_EQ(json_integer_value(json_object_get(gp, "kv")), 4096LL * 61 * 1152);
    CHECK(json_integer_value(json_object_get(gp, "total")) > 20e9);
    json_decref(j);
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' inspect '%s' --placement cpu 2>&1", bin, cfg);
    out = run(cmd, &st);
    CHECK_EQ(st, 0);
    CHECK_CONTAINS(out, "nothing on the GPU");
    free(out);
    /* --devices: the plan per device, text and JSON */
    snprintf(cmd, sizeof cmd,
             "'%s' inspect '%s' --context 32768 --hot-experts auto --device-gib 80 "
             "--devices 0,1 2>&1",
             bin, cfg);
    out = run(cmd, &st);
    CHECK_EQ(st, 0);
    CHECK_CONTAINS(out, "GPU plan per device (2 devices");
    CHECK_CONTAINS(out, "hot experts only");
    free(out);
    snprintf(cmd, sizeof cmd,
             "'%s' inspect '%s' --json --hot-experts 1024 --devices 2,0,1 2>/dev/null", bin, cfg);
    out = run(cmd, &st);
    CHECK_EQ(st, 0);
    j = json_loads(out, 0, NULL);
    CHECK(j);
    json_t *ds = json_object_get(j, "gpu_devices");
    CHECK_EQ(json_array_size(ds), 3);
    CHECK_EQ(json_integer_value(json_object_get(json_array_get(ds, 0), "device")), 2);
    CHECK(json_is_true(json_object_get(json_array_get(ds, 0), "primary")));
    CHECK_EQ(json_integer_value(json_object_get(json_array_get(ds, 2), "hot_experts")), 43);
    json_decref(j);
    free(out);
    /* --devices with --expert-counts: the hot experts placed over the devices, each device's
     * share of a skewed routing histogram; the two equal devices near each other */
    {
        struct wt_hparams hv;
        load_v3(&hv);
        struct expert_counts *ec = NULL;
        char e2[ERR_LEN], counts[512];
        CHECK_EQ(ec_create(&hv, &ec, e2), 0);
        unsigned long long z = 12345;
        int32_t ids[1024];
        for (int r = 0; r < ec_shape(ec)->moe_layers; r++)
            for (int k = 0; k < 8; k++) {
                for (int i = 0; i < 1024; i++) {
                    z = z * 6364136223846793005ull + 1442695040888963407ull;
                    double u = (double)(z >> 11) * 0x1.0p-53;
                    ids[i] = (int32_t)(256 * u * u * u); /* expert 0 most routed */
                }
                ec_add(ec, r, ids, 1024);
            }
        snprintf(counts, sizeof counts, "%s/counts", root);
        CHECK_EQ(ec_save(ec, counts, e2), 0);
        ec_destroy(ec);
        snprintf(cmd, sizeof cmd,
                 "'%s' inspect '%s' --json --context 32768 --hot-experts auto --device-gib 80 "
                 "--devices 0,1,2 --expert-counts '%s' 2>/dev/null",
                 bin, cfg, counts);
        out = run(cmd, &st);
        CHECK_EQ(st, 0);
        j = json_loads(out, 0, NULL);
        CHECK(j);
        json_t *hd = json_object_get(j, "hot_devices");
        CHECK_EQ(json_array_size(hd), 3);
        double sh[3], all = 0;
        long long experts = 0;
        for (int i = 0; i < 3; i++) {
            json_t *e = json_array_get(hd, (size_t)i);
            sh[i] = json_real_value(json_object_get(e, "route_share"));
            experts += json_integer_value(json_object_get(e, "experts"));
            all += sh[i];
        }
        CHECK_EQ(experts, 2572 + 2 * 3408); /* the per-device plan's hot experts */
        CHECK(all > 0.5 && all <= 1.0);
        CHECK(fabs(sh[1] - sh[2]) < 0.01);
        printf("inspect --devices 0,1,2 --expert-counts: route shares %.3f %.3f %.3f\n", sh[0],
               sh[1], sh[2]);
        json_decref(j);
        free(out);
    }
    /* bad values */
    const char *bad[] = {"--placement auto",      "--placement",  "--gpu-expert-layers -1",
                         "--gpu-expert-layers x", "--context 0",  "--devices 0,0",
                         "--devices -1",          "--devices x,1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(cmd, sizeof cmd, "'%s' inspect '%s' %s 2>&1", bin, cfg, bad[i]);
        free(run(cmd, &st));
        CHECK_EQ(st, 2);
    }
    /* garbage and empty configs, and a directory without one */
    snprintf(cmd, sizeof cmd, "printf 'not json{' > '%s/config.json'", root);
    CHECK(system(cmd) == 0);
    snprintf(cmd, sizeof cmd, "'%s' inspect '%s' 2>&1", bin, root);
    out = run(cmd, &st);
    CHECK(st != 0 && st != 2);
    CHECK(strlen(out) > 0);
    free(out);
    snprintf(cmd, sizeof cmd, "printf '{}' > '%s/config.json'", root);
    CHECK(system(cmd) == 0);
    snprintf(cmd, sizeof cmd, "'%s' inspect '%s/config.json' 2>&1", bin, root);
    out = run(cmd, &st);
    CHECK(st != 0 && st != 2);
    free(out);
    snprintf(cmd, sizeof cmd, "rm -f '%s/config.json' && '%s' inspect '%s' 2>&1", root, bin, root);
    out = run(cmd, &st);
    CHECK(st != 0 && st != 2);
    free(out);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    CHECK(system(cmd) == 0);
}

/* A GGUF checkpoint (GGML-typed projections): re-quantized at load (gpu.requant_ggml, the
 * default) the plan is the FP8 checkpoint's byte for byte; with requant off the projections stay
 * on the host at their stored size and nothing of them is on the device. */
static void v3_ggml(const struct wt_hparams *hp)
{
    struct gpu_plan_params p, q;
    struct gpu_plan a, b;
    char err[ERR_LEN];
    gpu_plan_defaults(&p);
    CHECK_EQ(p.requant_ggml, 1);
    CHECK_EQ(gpu_plan_compute(hp, &p, &a, err), 0);
    const int types[] = {QTYPE_Q4_K, QTYPE_Q6_K, QTYPE_Q8_0, QTYPE_F16, QTYPE_F32, QTYPE_IQ4_XS};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        q = p;
        q.linear_type = types[i];
        CHECK_EQ(gpu_plan_compute(hp, &q, &b, err), 0);
        CHECK_EQ(b.w.attention, a.w.attention);
        CHECK_EQ(b.w.dense_ffn, a.w.dense_ffn);
        CHECK_EQ(b.w.shared_experts, a.w.shared_experts);
        CHECK_EQ(b.w.kv_b, a.w.kv_b);
        CHECK_EQ(b.w.host_linears, 0);
        CHECK_EQ(b.total, a.total);
    }
    q = p;
    q.linear_type = QTYPE_Q4_K;
    print_plan("DeepSeek-V3, Q4_K GGUF, re-quantized (gpu.requant_ggml = on):", &b, &q);
    q.requant_ggml = 0;
    q.kvb_type = QTYPE_F32;
    CHECK_EQ(gpu_plan_compute(hp, &q, &b, err), 0);
    CHECK_EQ(b.w.attention, 0);
    CHECK_EQ(b.w.dense_ffn, 0);
    CHECK_EQ(b.w.shared_experts, 0);
    CHECK_EQ(b.max_k, 0); /* no FP8 linear on the device: no FP8 scratch */
    CHECK_EQ(b.act_fp8, 0);
    const double D = 7168;
    double att = 1536 * D + 24576 * 1536 + 576 * D + D * 16384;
    double el = 61 * att + 3 * 3 * 18432 * D + 58 * 3 * 2048 * D;
    CHECK_EQ(b.w.host_linears, el / 256 * 144); /* Q4_K: 144 bytes a 256-value block */
    CHECK_EQ(b.w.kv_b, 61 * 128.0 * 256 * 512 * 4);
    CHECK(b.total < a.total);
    print_plan("DeepSeek-V3, Q4_K GGUF, gpu.requant_ggml = off:", &b, &q);
    /* a GGML type whose blocks do not fit is counted at 4 bytes a value, never an error */
    q.linear_type = QTYPE_U8;
    CHECK_EQ(gpu_plan_compute(hp, &q, &b, err), ERR_INVAL);
}

/* gpu_plan_devices: the first device takes the whole plan, the others hot experts alone */
static void devices(const struct wt_hparams *hp)
{
    struct gpu_plan_params p;
    struct gpu_plan pl;
    struct gpu_plan_dev d[16];
    char err[ERR_LEN], buf[4096];
    const int ids[] = {0, 1, 3, 2};
    const double MiB = 1024.0 * 1024.0, GiB = 1024.0 * MiB;
    gpu_plan_defaults(&p);
    p.kv_tokens = 32768;
    /* one device: the plan itself */
    CHECK_EQ(gpu_plan_compute(hp, &p, &pl, err), 0);
    CHECK_EQ(gpu_plan_devices(&pl, &p, ids, 1, d, err), 0);
    CHECK(d[0].primary && d[0].device == 0 && d[0].total == pl.total);
    /* hot experts off: the others hold their runtime alone */
    CHECK_EQ(gpu_plan_devices(&pl, &p, ids, 4, d, err), 0);
    for (int i = 1; i < 4; i++) {
        CHECK(!d[i].primary && d[i].device == ids[i]);
        CHECK(d[i].total == p.runtime_reserve && d[i].hot_experts == 0);
    }
    /* auto on 80 GiB devices: each fits with the margin, in whole experts, and holds more hot
     * experts than the primary device */
    p.hot_mode = 1;
    p.device_bytes = 80 * GiB;
    CHECK_EQ(gpu_plan_compute(hp, &p, &pl, err), 0);
    CHECK_EQ(gpu_plan_devices(&pl, &p, ids, 4, d, err), 0);
    CHECK(d[0].total == pl.total && d[0].hot_experts == pl.hot_experts);
    for (int i = 1; i < 4; i++) {
        CHECK(d[i].total <= p.device_bytes - 512 * MiB);
        CHECK(d[i].total > p.device_bytes - 512 * MiB - pl.expert_bytes);
        CHECK(d[i].hot_experts_bytes == (double)d[i].hot_experts * pl.expert_bytes);
        CHECK(d[i].hot_experts > pl.hot_experts);
        CHECK(d[i].hot_ws == pl.hot_ws_own && d[i].hot_ws > 0);
    }
    /* eight devices hold every expert once, no more */
    const int ids8[] = {0, 1, 2, 3, 4, 5, 6, 7};
    struct gpu_plan_dev d8[8];
    CHECK_EQ(gpu_plan_devices(&pl, &p, ids8, 8, d8, err), 0);
    int64_t all = 0;
    for (int i = 0; i < 8; i++) {
        all += d8[i].hot_experts;
        CHECK(d8[i].hot_experts_bytes == (double)d8[i].hot_experts * pl.expert_bytes);
    }
    CHECK_EQ(all, pl.routed_experts);
    CHECK_EQ(d8[7].hot_experts, 0);
    CHECK(d8[7].total == p.runtime_reserve); /* nothing left to hold: no workspace either */
    int n = gpu_plan_devices_format(d, 4, &pl, "  ", buf, sizeof buf);
    CHECK(n > 0 && (size_t)n < sizeof buf);
    CHECK_CONTAINS(buf, "device 3");
    CHECK_CONTAINS(buf, "hot experts only");
    printf("%s", buf);
    /* a given size: that many bytes (in whole experts) on each other device */
    p.hot_mode = 2;
    p.hot_bytes = 4096 * MiB;
    CHECK_EQ(gpu_plan_compute(hp, &p, &pl, err), 0);
    CHECK_EQ(gpu_plan_devices(&pl, &p, ids, 2, d, err), 0);
    CHECK(d[1].hot_experts_bytes == (double)d[1].hot_experts * pl.expert_bytes);
    CHECK(d[1].hot_experts_bytes <= p.hot_bytes);
    CHECK_EQ(d[1].hot_experts, (int64_t)(p.hot_bytes / pl.expert_bytes));
    CHECK_EQ(gpu_plan_devices(&pl, &p, ids, 0, d, err), ERR_INVAL);
    CHECK_EQ(gpu_plan_devices(&pl, &p, ids, 17, d, err), ERR_INVAL);
}

int main(void)
{
    struct wt_hparams hp;
    load_v3(&hp);
    v3_exact(&hp);
    v3_ggml(&hp);
    monotone(&hp);
    presets();
    inspect();
    devices(&hp);
    printf("gpu plan ok\n");
    return 0;
}
