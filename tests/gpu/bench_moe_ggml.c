/* bench_moe_ggml.c - can the GPU consume routed-expert GGML blocks faster than PCIe delivers them?
 *
 * Measures, in one run on one device:
 *   1. pinned host -> device copy bandwidth: cudaMemcpyAsync from cudaHostAlloc memory, one 1 GiB
 *      copy repeated, and expert-sized copies (24.8 MB, one DeepSeek-V3 Q4_K expert) back to back;
 *   2. per GGML type, cuk_moe_ggml (kernels/cuda/moe_ggml.h) at DeepSeek-V3's true dimensions
 *      (hidden 7168, inter 2048, 256 experts, top-8) for prompts of 512, 2048 and 8192 tokens with
 *      uniformly random routes (~16 / 64 / 256 tokens per expert, every expert active): time per
 *      layer, TFLOP/s (6 * pairs * hidden * inter), GB/s of GGML blocks consumed (the active
 *      experts' gate + up + down bytes), and that rate over the 1 GiB pinned copy rate: above 1
 *      the op outruns the link, so streaming experts during prefill is link-bound;
 *   3. per type, the dequantization alone over the same 256 experts (GB/s of blocks): the op's
 *      ceiling when GEMMs are small.
 * Expert weights are random blocks with sane f16 scales (timing does not depend on values); four
 * distinct device copies are shared round-robin by the 256 experts, so consecutive experts never
 * hit the same memory (L2 is 50 MB, an expert 25-47 MB).
 * Usage: bench_moe_ggml [--quick] [--reps N] [--tokens a,b,c] [--k-order] [--chunk N]
 * Prints a table on stdout. Exits 77 without a GPU.
 */
#include "tests/gpu/gpu_test.h"

#include "common/err.h"
#include "kernels/cpu/qtype.h"
#include "kernels/cuda/dequant_ggml.h"
#include "kernels/cuda/moe_ggml.h"

#define HID 7168
#define INTER 2048
#define NEXP 256
#define TOPK 8
#define NDIST 4

static double now_ms(cudaEvent_t a, cudaEvent_t b)
{
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    return ms;
}

/* random blocks, every f16 scale field a sane value (see tests/gpu/test_moe_ggml.c) */
static void fill_blocks(int t, uint8_t *dst, int64_t rows, int64_t cols)
{
    const size_t rs = cuk_ggml_row_size(t, cols);
    uint64_t s = 0x243f6a8885a308d3ull ^ (uint64_t)t;
    for (size_t i = 0; i < rs * (size_t)rows; i += 8) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        size_t n = rs * (size_t)rows - i < 8 ? rs * (size_t)rows - i : 8;
        memcpy(dst + i, &s, n);
    }
    int offs[2] = {-1, -1};
    switch (t) {
    case QTYPE_Q4_1:
    case QTYPE_Q5_1:
    case QTYPE_Q4_K:
    case QTYPE_Q5_K:
        offs[0] = 0;
        offs[1] = 2;
        break;
    case QTYPE_Q2_K:
        offs[0] = 80;
        offs[1] = 82;
        break;
    case QTYPE_Q3_K: offs[0] = 108; break;
    case QTYPE_Q6_K: offs[0] = 208; break;
    case QTYPE_F32:
    case QTYPE_F16:
    case QTYPE_BF16: offs[0] = -2; break;
    default: offs[0] = 0; break;
    }
    if (offs[0] == -2) { /* plain: small finite values */
        for (int64_t i = 0; i < rows * cols; i++) {
            float v = (float)((int)(i % 97) - 48) * 4e-4f;
            if (t == QTYPE_F32) memcpy(dst + 4 * i, &v, 4);
            else {
                uint16_t h = t == QTYPE_F16 ? fp_f32_to_f16(v) : fp_f32_to_bf16(v);
                memcpy(dst + 2 * i, &h, 2);
            }
        }
        return;
    }
    const int ts = qtype_traits(t)->type_size, qk = qtype_traits(t)->blck;
    const uint16_t h = fp_f32_to_f16(1e-4f);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t b = 0; b < cols / qk; b++)
            for (int k = 0; k < 2; k++)
                if (offs[k] >= 0) memcpy(dst + (size_t)r * rs + (size_t)b * ts + offs[k], &h, 2);
}

static void pcie(double *gbs_1g, double *gbs_expert)
{
    const size_t big = (size_t)1 << 30, ex = 24772608; /* 3 x 2048 x 7168 Q4_K */
    void *h, *d;
    CUDA_CHECK(cudaHostAlloc(&h, big, cudaHostAllocDefault));
    CUDA_CHECK(cudaMalloc(&d, big));
    memset(h, 1, big);
    cudaStream_t s;
    cudaEvent_t a, b;
    CUDA_CHECK(cudaStreamCreate(&s));
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
    CUDA_CHECK(cudaMemcpyAsync(d, h, big, cudaMemcpyHostToDevice, s)); /* warm-up */
    CUDA_CHECK(cudaEventRecord(a, s));
    for (int i = 0; i < 4; i++) CUDA_CHECK(cudaMemcpyAsync(d, h, big, cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaEventRecord(b, s));
    CUDA_CHECK(cudaEventSynchronize(b));
    *gbs_1g = 4.0 * big / (now_ms(a, b) * 1e6);
    const int n = (int)(big / ex);
    CUDA_CHECK(cudaEventRecord(a, s));
    for (int i = 0; i < n; i++)
        CUDA_CHECK(cudaMemcpyAsync((char *)d + (size_t)i * ex, (char *)h + (size_t)i * ex, ex,
                                   cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaEventRecord(b, s));
    CUDA_CHECK(cudaEventSynchronize(b));
    *gbs_expert = (double)n * ex / (now_ms(a, b) * 1e6);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    cudaStreamDestroy(s);
    cudaFreeHost(h);
    cudaFree(d);
}

int main(int argc, char **argv)
{
    int reps = 3, quick = 0, k_order = 0, chunk = 0;
    int toks[8] = {512, 2048, 8192}, n_toks = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--k-order")) k_order = 1;
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--chunk") && i + 1 < argc) chunk = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) {
            n_toks = 0;
            for (char *p = strtok(argv[++i], ","); p && n_toks < 8; p = strtok(NULL, ","))
                toks[n_toks++] = atoi(p);
        } else {
            fprintf(stderr,
                    "usage: %s [--quick] [--reps N] [--tokens a,b,c] [--k-order] [--chunk N]\n",
                    argv[0]);
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    gt_require_gpu();
    gt_state = 12345;
    int max_tok = 0;
    for (int i = 0; i < n_toks; i++) {
        if (toks[i] < 1 || toks[i] > 65536) {
            fprintf(stderr, "bad token count %d\n", toks[i]);
            return 2;
        }
        if (toks[i] > max_tok) max_tok = toks[i];
    }
    struct cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, %d SMs, %.1f GiB\n", prop.name, prop.multiProcessorCount,
           prop.totalGlobalMem / 1073741824.0);
    double pc, pce;
    pcie(&pc, &pce);
    printf("pinned H2D cudaMemcpyAsync: %.1f GB/s (1 GiB copies), %.1f GB/s (24.8 MB expert-sized "
           "copies)\n",
           pc, pce);

    const int all[] = {QTYPE_Q4_K, QTYPE_Q5_K,   QTYPE_Q6_K, QTYPE_Q8_0, QTYPE_IQ4_XS,
                       QTYPE_Q2_K, QTYPE_Q3_K,   QTYPE_Q4_0, QTYPE_Q4_1, QTYPE_Q5_0,
                       QTYPE_Q5_1, QTYPE_IQ4_NL, QTYPE_BF16, QTYPE_F16};
    const int n_types = quick ? 5 : (int)(sizeof all / sizeof all[0]);

    /* inputs for the largest prompt */
    float *hx = malloc((size_t)max_tok * HID * 4), *hw = malloc((size_t)max_tok * TOPK * 4);
    int32_t *hids = malloc((size_t)max_tok * TOPK * 4);
    CHECK(hx && hw && hids);
    for (size_t i = 0; i < (size_t)max_tok * HID; i++) hx[i] = (float)(gt_normal());
    for (int t = 0; t < max_tok; t++)
        for (int k = 0; k < TOPK; k++) {
            int e, again;
            do {
                e = gt_int(0, NEXP - 1);
                again = 0;
                for (int j = 0; j < k; j++) again |= hids[t * TOPK + j] == e;
            } while (again);
            hids[t * TOPK + k] = e;
            hw[t * TOPK + k] = (float)(0.1 + 0.2 * gt_uniform());
        }
    float *dx = gt_up(hx, (size_t)max_tok * HID * 4), *dw = gt_up(hw, (size_t)max_tok * TOPK * 4);
    int32_t *dids = gt_up(hids, (size_t)max_tok * TOPK * 4);
    float *dout = gt_dev((size_t)max_tok * HID * 4);
    struct cuk_moe_ggml_dims dims = {.hidden = HID,
                                     .inter = INTER,
                                     .n_experts = NEXP,
                                     .top_k = TOPK,
                                     .max_tok = max_tok,
                                     .chunk_rows = chunk,
                                     .k_order = k_order};
    const size_t wsb = cuk_moe_ggml_workspace(&dims);
    void *ws = gt_dev(wsb);
    printf("workspace: %.1f MiB (chunk_rows %d, %s order)\n", wsb / 1048576.0,
           chunk ? chunk : CUK_MOE_GGML_CHUNK_DEFAULT, k_order ? "k" : "expert");
    struct cuk_moe_ggml *m;
    char err[ERR_LEN];
    CHECK_EQ(cuk_moe_ggml_create(&m, err), 0);
    cudaStream_t st;
    cudaEvent_t ea, eb;
    CUDA_CHECK(cudaStreamCreate(&st));
    CUDA_CHECK(cudaEventCreate(&ea));
    CUDA_CHECK(cudaEventCreate(&eb));

    printf("\n%-7s %7s %8s %6s %9s %8s %9s %8s %10s %9s\n", "type", "MB/exp", "tokens", "active",
           "ms/layer", "TFLOP/s", "blocks GB/s", "/PCIe", "tok/s", "dq GB/s");
    for (int ti = 0; ti < n_types; ti++) {
        const int t = all[ti];
        const size_t rg = cuk_ggml_row_size(t, HID), rd = cuk_ggml_row_size(t, INTER);
        const size_t bg = rg * INTER, bd = rd * HID, per_exp = 2 * bg + bd;
        uint8_t *hg = malloc(bg), *hd = malloc(bd);
        CHECK(hg && hd);
        fill_blocks(t, hg, INTER, HID);
        fill_blocks(t, hd, HID, INTER);
        void *dgm[NDIST], *dum[NDIST], *ddm[NDIST];
        for (int i = 0; i < NDIST; i++) {
            dgm[i] = gt_up(hg, bg);
            dum[i] = gt_up(hg, bg);
            ddm[i] = gt_up(hd, bd);
        }
        struct cuk_ggml_mat g[NEXP], u[NEXP], d[NEXP];
        for (int e = 0; e < NEXP; e++) {
            g[e] = (struct cuk_ggml_mat){t, INTER, HID, dgm[e % NDIST], rg};
            u[e] = (struct cuk_ggml_mat){t, INTER, HID, dum[e % NDIST], rg};
            d[e] = (struct cuk_ggml_mat){t, HID, INTER, ddm[e % NDIST], rd};
        }
        /* dequantization alone: all 256 experts' three matrices */
        void *scratch = (char *)ws + 0; /* any 88 MB of the workspace */
        CHECK(wsb >= (size_t)3 * INTER * HID * 2);
        double dq_ms = 1e30;
        for (int r = 0; r < reps + 1; r++) {
            CUDA_CHECK(cudaEventRecord(ea, st));
            for (int e = 0; e < NEXP; e++) {
                struct cuk_dequant_ggml_args da = {
                    .src = g[e], .dst = scratch, .dst_type = CUK_BF16, .dst_ld = HID};
                CHECK_EQ(cuk_dequant_ggml(&da, st), 0);
                da.src = u[e];
                da.dst = (char *)scratch + (size_t)INTER * HID * 2;
                CHECK_EQ(cuk_dequant_ggml(&da, st), 0);
                da.src = d[e];
                da.dst = (char *)scratch + (size_t)2 * INTER * HID * 2;
                da.dst_ld = INTER;
                CHECK_EQ(cuk_dequant_ggml(&da, st), 0);
            }
            CUDA_CHECK(cudaEventRecord(eb, st));
            CUDA_CHECK(cudaEventSynchronize(eb));
            if (r > 0 && now_ms(ea, eb) < dq_ms) dq_ms = now_ms(ea, eb);
        }
        const double dq_gbs = (double)NEXP * per_exp / (dq_ms * 1e6);
        for (int ni = 0; ni < n_toks; ni++) {
            const int n = toks[ni];
            int act[NEXP] = {0}, n_active = 0;
            for (int i = 0; i < n * TOPK; i++) act[hids[i]] = 1;
            for (int e = 0; e < NEXP; e++) n_active += act[e];
            struct cuk_moe_ggml_args a = {.dims = dims,
                                          .gate = g,
                                          .up = u,
                                          .down = d,
                                          .n_tok = n,
                                          .x = dx,
                                          .x_ld = HID,
                                          .ids = dids,
                                          .ids_host = hids,
                                          .w = dw,
                                          .out = dout,
                                          .out_ld = HID,
                                          .ws = ws,
                                          .ws_bytes = wsb};
            int rc = cuk_moe_ggml(m, &a, st, err); /* warm-up (cuBLAS heuristics) */
            if (rc) {
                printf("%-7s cuk_moe_ggml failed: %s\n", qtype_name(t), err);
                break;
            }
            double best = 1e30;
            for (int r = 0; r < reps; r++) {
                CUDA_CHECK(cudaEventRecord(ea, st));
                CHECK_EQ(cuk_moe_ggml(m, &a, st, err), 0);
                CUDA_CHECK(cudaEventRecord(eb, st));
                CUDA_CHECK(cudaEventSynchronize(eb));
                if (now_ms(ea, eb) < best) best = now_ms(ea, eb);
            }
            const double flop = 6.0 * n * TOPK * (double)HID * INTER;
            const double gbs = (double)n_active * per_exp / (best * 1e6);
            printf("%-7s %7.1f %8d %6d %9.2f %8.1f %9.1f %8.2f %10.0f %9.1f\n", qtype_name(t),
                   per_exp / 1e6, n, n_active, best, flop / (best * 1e9), gbs, gbs / pc,
                   n / (best * 1e-3), dq_gbs);
        }
        fflush(stdout);
        for (int i = 0; i < NDIST; i++) {
            cudaFree(dgm[i]);
            cudaFree(dum[i]);
            cudaFree(ddm[i]);
        }
        free(hg);
        free(hd);
    }
    printf("\n/PCIe: blocks consumed per second over the 1 GiB pinned copy rate (%.1f GB/s); > 1 "
           "means a\n"
           "layer's experts are dequantized and multiplied faster than the link delivers them.\n"
           "tok/s: prompt tokens per second through one MoE layer's routed experts on the GPU "
           "alone.\n",
           pc);
    cuk_moe_ggml_destroy(m);
    cudaEventDestroy(ea);
    cudaEventDestroy(eb);
    cudaStreamDestroy(st);
    cudaFree(dx);
    cudaFree(dw);
    cudaFree(dids);
    cudaFree(dout);
    cudaFree(ws);
    free(hx);
    free(hw);
    free(hids);
    return 0;
}
