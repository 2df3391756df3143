// emu_moe_ggml.cpp - host emulation of kernels/cuda/dequant_ggml.cu and moe_ggml.cu plus a fake
// CUDA runtime (host memory), so tests/gpu/test_moe_ggml.c runs on a machine without a GPU.
//
// A development aid, not part of the build: tests/gpu/emu/run.sh extracts the device code that
// can run on the host verbatim from the .cu files (the per-type decoders, dq_stage, the workspace
// layout) and compiles it here with shims (threads run one after another, __fmul_rn & co. as
// plain correctly rounded float ops); the kernel bodies around them (the pass loop, the grouping
// kernels' warp logic, gather/SiLU/scatter/reduce) are re-expressed below, and cuBLAS is a
// sequential fp32 GEMM. It checks the decoders bit for bit, every staged byte and every read
// against the row range, and lets the test's tolerances be calibrated; it cannot check launch
// configurations, cuBLAS arguments or anything timing-related. Found with it: cpuq_moe_forward
// takes activation formats from expert 0 (see test_moe_ggml.c).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <vector>
#include <cuda_runtime_api.h>
extern "C" {
#include "common/err.h"
#include "kernels/cpu/qtype.h"
#include "kernels/cpu/fpconv.h"
#include "kernels/cuda/dequant_ggml.h"
#include "kernels/cuda/moe_ggml.h"
}
#undef __device__
#define __device__
#undef __forceinline__
#define __forceinline__ inline
static inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
static inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
static inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
static inline uint16_t __ushort_as_half(uint16_t h) { return h; }
static inline float __half2float(uint16_t h) { return fp_f16_to_f32(h); }
static inline float __uint_as_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
using std::min; using std::max;
#include "defs.inc"
#include "decoders.inc"
struct emu_dim { int x; };
static emu_dim threadIdx, blockDim = { DQ_THREADS };
static void __syncthreads() {}
static const uint8_t *g_lo, *g_hi;   // the bytes the emulated kernel may read
static void chk(const uint8_t *p) { if (p < g_lo || p >= g_hi) { fprintf(stderr, "EMU: out of range read\n"); abort(); } }

static uint4 cuk_ld_stream16(const void *p) { chk((const uint8_t *)p); chk((const uint8_t *)p + 15); uint4 r; memcpy(&r, p, 16); return r; }
static uint8_t __ldg(const uint8_t *p) { chk(p); return *p; }
#include "stage.inc"

// ---- fake runtime
extern "C" {
cudaError_t cudaGetDeviceCount(int *n) { *n = 1; return cudaSuccess; }
cudaError_t cudaMalloc(void **p, size_t n) { *p = aligned_alloc(256, (n + 255) / 256 * 256); return *p ? cudaSuccess : cudaErrorMemoryAllocation; }
cudaError_t cudaFree(void *p) { free(p); return cudaSuccess; }
cudaError_t cudaMemset(void *p, int v, size_t n) { memset(p, v, n); return cudaSuccess; }
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, enum cudaMemcpyKind) { memcpy(d, s, n); return cudaSuccess; }
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
const char *cudaGetErrorString(cudaError_t) { return "fake"; }
cudaError_t cudaStreamCreate(cudaStream_t *s) { *s = (cudaStream_t)0x10; return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
}

// ---- dequant emulation (same structure as the kernel: stage, then 256 "threads")
static int geo(int type, int *qk, int *ts)
{
    switch (type) {
#define G(t) case t: *qk = dq_geo<t>::qk; *ts = dq_geo<t>::ts; return 1;
    G(QTYPE_Q4_0) G(QTYPE_Q4_1) G(QTYPE_Q5_0) G(QTYPE_Q5_1) G(QTYPE_Q8_0) G(QTYPE_Q2_K)
    G(QTYPE_Q3_K) G(QTYPE_Q4_K) G(QTYPE_Q5_K) G(QTYPE_Q6_K) G(QTYPE_IQ4_NL) G(QTYPE_IQ4_XS)
    G(QTYPE_F32) G(QTYPE_F16) G(QTYPE_BF16)
#undef G
    default: return 0;
    }
}
extern "C" int cuk_dequant_ggml_supported(int t) { int a, b; return geo(t, &a, &b); }
extern "C" size_t cuk_ggml_row_size(int type, int64_t n)
{
    int qk, ts;
    if (!geo(type, &qk, &ts) || n < 0 || n % qk) return 0;
    return (size_t)(n / qk) * (size_t)ts;
}
template <int T, int F32OUT>
static void dq_emu(const uint8_t *src, size_t row_bytes, int64_t rows, int cols, void *dst, int64_t dst_ld)
{
    typedef dq_geo<T> Gt;
    alignas(16) static uint8_t sm[dq_smem<T>::n];
    int8_t kv[16];
    for (int i = 0; i < 16; i++) kv[i] = dq_kvalues_iq4nl[i];
    for (int64_t row = 0; row < rows; row++) {
        const uint8_t *rs = src + (size_t)row * row_bytes;
        for (int c0 = 0; c0 < cols; c0 += DQ_CHUNK) {
            const int ne = min(DQ_CHUNK, cols - c0);
            const uint8_t *s0 = rs + (size_t)(c0 / Gt::qk) * Gt::ts;
            const int n = (ne / Gt::qk) * Gt::ts;
            memset(sm, 0xcd, sizeof sm);
            if (((uintptr_t)s0 & 15) + n > (int)sizeof sm) { fprintf(stderr, "EMU: smem overflow\n"); abort(); }
            int off = -1;
            for (int tid = 0; tid < DQ_THREADS; tid++) {      // the real dq_stage, thread by thread
                threadIdx.x = tid;
                int o2 = dq_stage(s0, n, sm);
                if (off >= 0 && o2 != off) abort();
                off = o2;
            }
            for (int i = 0; i < off; i++) if (sm[i] != 0xcd) { fprintf(stderr, "EMU: stage wrote below off\n"); abort(); }
            for (int i = off + n; i < (int)sizeof sm; i++) if (sm[i] != 0xcd) { fprintf(stderr, "EMU: stage wrote past end\n"); abort(); }
            for (int i = 0; i < n; i++) if (sm[off + i] != s0[i]) { fprintf(stderr, "EMU: stage byte %d wrong\n", i); abort(); }
            for (int tid = 0; tid < DQ_THREADS; tid++) {
                const int e = DQ_PER_THREAD * tid;
                if (e >= ne) continue;
                float v[8];
                dq_dec<T>::run(sm + off + (e / Gt::qk) * Gt::ts, e % Gt::qk, v, kv);
                const size_t o = (size_t)row * (size_t)dst_ld + (size_t)(c0 + e);
                for (int i = 0; i < 8; i++) {
                    if (F32OUT) ((float *)dst)[o + i] = v[i];
                    else ((uint16_t *)dst)[o + i] = fp_f32_to_bf16(v[i]);
                }
            }
        }
    }
}
extern "C" int cuk_dequant_ggml(const struct cuk_dequant_ggml_args *a, cudaStream_t)
{
    int qk, ts;
    if (!geo(a->src.type, &qk, &ts)) return ERR_UNSUPPORTED;
    if (!(a->src.cols > 0 && a->src.cols % qk == 0 && a->src.cols % 8 == 0)) return ERR_INVAL;
    if (!(a->dst_ld >= a->src.cols && a->dst_ld % 8 == 0)) return ERR_INVAL;
    if (a->src.rows == 0) return 0;
    if (a->src.row_bytes < (size_t)(a->src.cols / qk) * ts) return ERR_INVAL;
    if ((uintptr_t)a->dst & 15) return ERR_INVAL;
    g_lo = (const uint8_t *)a->src.data;
    g_hi = g_lo + (size_t)(a->src.rows - 1) * a->src.row_bytes + (size_t)(a->src.cols / qk) * ts;
    const uint8_t *s = (const uint8_t *)a->src.data;
    switch (a->src.type) {
#define L(t) case t: if (a->dst_type == CUK_F32) dq_emu<t, 1>(s, a->src.row_bytes, a->src.rows, (int)a->src.cols, a->dst, a->dst_ld); \
                     else dq_emu<t, 0>(s, a->src.row_bytes, a->src.rows, (int)a->src.cols, a->dst, a->dst_ld); break;
    L(QTYPE_Q4_0) L(QTYPE_Q4_1) L(QTYPE_Q5_0) L(QTYPE_Q5_1) L(QTYPE_Q8_0) L(QTYPE_Q2_K)
    L(QTYPE_Q3_K) L(QTYPE_Q4_K) L(QTYPE_Q5_K) L(QTYPE_Q6_K) L(QTYPE_IQ4_NL) L(QTYPE_IQ4_XS)
    L(QTYPE_F32) L(QTYPE_F16) L(QTYPE_BF16)
#undef L
    default: return ERR_UNSUPPORTED;
    }
    return 0;
}

// ---- moe emulation
#define MG_SEG 512
#define MG_THREADS 256
#define MG_ALIGN 256
#include "layout.inc"
struct cuk_moe_ggml { int dummy; };
extern "C" int cuk_moe_ggml_create(struct cuk_moe_ggml **out, char *) { *out = (struct cuk_moe_ggml *)calloc(1, sizeof(struct cuk_moe_ggml)); return 0; }
extern "C" void cuk_moe_ggml_destroy(struct cuk_moe_ggml *m) { free(m); }

static int mg_expert(const int32_t *ids, int64_t i, int64_t slots, int E)
{
    if (i >= slots) return -1;
    int e = ids[i];
    return e >= 0 && e < E ? e : -1;
}
static unsigned peers_of(const int *e, int lane) { unsigned m = 0; for (int l = 0; l < 32; l++) if (e[l] == e[lane]) m |= 1u << l; return m; }
static uint16_t bf(float f) { return fp_f32_to_bf16(f); }
static float fb(uint16_t h) { return fp_bf16_to_f32(h); }

extern "C" int cuk_moe_ggml(struct cuk_moe_ggml *m, const struct cuk_moe_ggml_args *a, cudaStream_t s, char *err)
{
    (void)m;
    const struct cuk_moe_ggml_dims *dm = &a->dims;
    struct mg_layout L;
    if (!mg_layout_of(dm, &L)) return err_set(err, ERR_INVAL, "emu: bad dims");
    if (a->n_tok < 0 || a->n_tok > dm->max_tok) return err_set(err, ERR_INVAL, "emu: tokens");
    if (a->n_tok == 0) return 0;
    const int E = dm->n_experts, K = dm->top_k, H = dm->hidden, I = dm->inter, n_tok = a->n_tok;
    if (a->x_ld < H || a->x_ld % 4 || ((uintptr_t)a->x & 15) || a->out_ld < H || a->out_ld % 4 || ((uintptr_t)a->out & 15))
        return err_set(err, ERR_INVAL, "emu: strides");
    if (((uintptr_t)a->ws % MG_ALIGN) || a->ws_bytes < L.total) return err_set(err, ERR_INVAL, "emu: ws");
    std::vector<int32_t> cnt(E, 0);
    const int64_t slots = (int64_t)n_tok * K;
    int dup = 0;
    for (int64_t i = 0; i < slots; i++) {
        const int e = a->ids_host[i];
        if (e == -1) continue;
        if (e < 0 || e >= E) return err_set(err, ERR_INVAL, "emu: id %d", e);
        cnt[e]++;
        for (int64_t j = i - i % K; j < i; j++) dup |= a->ids_host[j] == e;
    }
    for (int e = 0; e < E; e++) {
        if (!cnt[e]) continue;
        const struct cuk_ggml_mat *ms[3] = { &a->gate[e], &a->up[e], &a->down[e] };
        for (int k = 0; k < 3; k++) {
            if (!cuk_dequant_ggml_supported(ms[k]->type)) return err_set(err, ERR_UNSUPPORTED, "emu: type");
            int64_t rows = k < 2 ? I : H, cols = k < 2 ? H : I;
            if (ms[k]->rows != rows || ms[k]->cols != cols) return err_set(err, ERR_INVAL, "emu: shape");
            size_t rb = cuk_ggml_row_size(ms[k]->type, cols);
            if (!rb || !ms[k]->data || ms[k]->row_bytes < rb) return err_set(err, ERR_INVAL, "emu: rows");
        }
    }
    char *ws = (char *)a->ws;
    uint16_t *wgu = (uint16_t *)(ws + L.wgu), *wd = (uint16_t *)(ws + L.wd), *xg = (uint16_t *)(ws + L.xg), *hb = (uint16_t *)(ws + L.h);
    float *cb = (float *)(ws + L.c), *db = (float *)(ws + L.d), *pair_w = (float *)(ws + L.pair_w);
    int32_t *pair_tok = (int32_t *)(ws + L.pair_tok), *pair_of = (int32_t *)(ws + L.pair_of), *segcnt = (int32_t *)(ws + L.segcnt);
    const int64_t nseg = (slots + MG_SEG - 1) / MG_SEG;
    if (!dm->k_order)
        for (int t = 0; t < n_tok; t++) memset(a->out + (size_t)t * a->out_ld, 0, (size_t)H * 4);
    memset(segcnt, 0, (size_t)nseg * E * 4);
    for (int64_t seg = 0; seg < nseg; seg++)                          // mg_count
        for (int st = 0; st < MG_SEG / 32; st++) {
            int ev[32];
            for (int l = 0; l < 32; l++) ev[l] = mg_expert(a->ids, seg * MG_SEG + st * 32 + l, slots, E);
            for (int l = 0; l < 32; l++) {
                unsigned p = peers_of(ev, l);
                if (ev[l] >= 0 && l == __builtin_ffs(p) - 1) segcnt[seg * E + ev[l]] += __builtin_popcount(p);
            }
        }
    {                                                                  // mg_scan
        std::vector<int32_t> tot(1024, 0), sc(1024, 0);
        for (int e = 0; e < E; e++) for (int64_t s2 = 0; s2 < nseg; s2++) tot[e] += segcnt[s2 * E + e];
        int32_t run = 0;
        for (int e = 0; e < 1024; e++) { run += tot[e]; sc[e] = run; }
        for (int e = 0; e < E; e++) {
            int32_t r = sc[e] - tot[e];
            for (int64_t s2 = 0; s2 < nseg; s2++) { int32_t c = segcnt[s2 * E + e]; segcnt[s2 * E + e] = r; r += c; }
        }
    }
    for (int64_t seg = 0; seg < nseg; seg++)                          // mg_place
        for (int st = 0; st < MG_SEG / 32; st++) {
            int ev[32]; unsigned pm[32]; int32_t pos[32];
            for (int l = 0; l < 32; l++) ev[l] = mg_expert(a->ids, seg * MG_SEG + st * 32 + l, slots, E);
            for (int l = 0; l < 32; l++) {
                const int64_t i = seg * MG_SEG + st * 32 + l;
                pm[l] = peers_of(ev, l);
                pos[l] = -1;
                if (ev[l] >= 0) {
                    pos[l] = segcnt[seg * E + ev[l]] + __builtin_popcount(pm[l] & ((1u << l) - 1u));
                    if (pos[l] < 0 || pos[l] >= slots) { fprintf(stderr, "EMU: bad pos\n"); abort(); }
                    pair_tok[pos[l]] = (int32_t)(i / K);
                    pair_w[pos[l]] = a->w[i];
                }
                if (i < slots) pair_of[i] = pos[l];
            }
            for (int l = 0; l < 32; l++)
                if (ev[l] >= 0 && l == __builtin_ffs(pm[l]) - 1) segcnt[seg * E + ev[l]] += __builtin_popcount(pm[l]);
        }
    int64_t base = 0;
    for (int e = 0; e < E; e++) {
        if (!cnt[e]) continue;
        struct cuk_dequant_ggml_args da;
        da.dst_type = CUK_BF16;
        da.src = a->gate[e]; da.dst = wgu; da.dst_ld = H; if (cuk_dequant_ggml(&da, s)) return ERR_CUDA;
        da.src = a->up[e]; da.dst = wgu + (size_t)I * H; if (cuk_dequant_ggml(&da, s)) return ERR_CUDA;
        da.src = a->down[e]; da.dst = wd; da.dst_ld = I; if (cuk_dequant_ggml(&da, s)) return ERR_CUDA;
        for (int64_t c0 = 0; c0 < cnt[e]; c0 += L.chunk) {
            const int64_t p0 = base + c0;
            const int mr = (int)(cnt[e] - c0 < L.chunk ? cnt[e] - c0 : L.chunk);
            float *dd = dm->k_order ? db + (size_t)p0 * H : db;
            for (int r = 0; r < mr; r++) {                             // gather
                const int tok = pair_tok[p0 + r];
                const int ok = tok >= 0 && tok < n_tok;
                for (int c = 0; c < H; c++) xg[(size_t)r * H + c] = bf(ok ? a->x[(size_t)tok * a->x_ld + c] : 0.f);
            }
            for (int r = 0; r < mr; r++)                               // GEMM 1
                for (int n = 0; n < 2 * I; n++) {
                    float acc = 0;
                    for (int k = 0; k < H; k++) acc += fb(wgu[(size_t)n * H + k]) * fb(xg[(size_t)r * H + k]);
                    cb[(size_t)r * 2 * I + n] = acc;
                }
            for (int r = 0; r < mr; r++)                               // silu
                for (int j = 0; j < I; j++) {
                    float g = cb[(size_t)r * 2 * I + j], u = cb[(size_t)r * 2 * I + I + j];
                    hb[(size_t)r * I + j] = bf(__fmul_rn(g / __fadd_rn(1.0f, expf(-g)), u));
                }
            for (int r = 0; r < mr; r++)                               // GEMM 2
                for (int n = 0; n < H; n++) {
                    float acc = 0;
                    for (int k = 0; k < I; k++) acc += fb(wd[(size_t)n * I + k]) * fb(hb[(size_t)r * I + k]);
                    dd[(size_t)r * H + n] = acc;
                }
            if (!dm->k_order)
                for (int r = 0; r < mr; r++) {                         // scatter (both variants: same math)
                    const int tok = pair_tok[p0 + r];
                    if (tok < 0 || tok >= n_tok) continue;
                    for (int c = 0; c < H; c++) {
                        float *o = a->out + (size_t)tok * a->out_ld + c;
                        *o = __fadd_rn(*o, __fmul_rn(pair_w[p0 + r], dd[(size_t)r * H + c]));
                    }
                }
        }
        base += cnt[e];
    }
    (void)dup;
    if (dm->k_order)
        for (int t = 0; t < n_tok; t++)
            for (int c = 0; c < H; c++) {
                float acc = 0;
                for (int k = 0; k < K; k++) {
                    const int p = pair_of[t * K + k];
                    if (p < 0) continue;
                    acc = __fadd_rn(acc, __fmul_rn(a->w[t * K + k], db[(size_t)p * H + c]));
                }
                a->out[(size_t)t * a->out_ld + c] = acc;
            }
    return 0;
}
