/* gemv_fp8.cu - FP8 block-scaled linear for 1..16 tokens, reading each weight byte once.
 *
 * Why an own kernel: cuBLASLt's block-scaled FP8 path refuses M=1, wants M padded to 4, and has
 * a ~14 us floor at K=7168; at decode sizes the op is a pure weight stream (n*k bytes, 2*m*n*k
 * FLOP, <= 32 FLOP/byte), so the goal is HBM bandwidth.
 *
 * How: one warp computes a 16-row tile of W against all (<= 16) tokens with mma.sync
 * m16n8k32 e4m3 (A = 16 weight rows, B = 8 tokens, f32 accumulators). The dot over K is invariant
 * under any permutation of k applied to both operands, so each thread loads 16 contiguous bytes
 * of its weight row and the same 16 bytes of its token row and uses them directly as fragments:
 * thread (g = lane/4, t = lane%4) holds W rows g and g+8 and token g at k = base + 16t .. +15;
 * registers .x/.y feed one mma, .z/.w the next (the A/B fragment k order "4t+i" and "16+4t+i" is
 * mapped onto physical bytes 16t+i and 16t+4+i on both sides). Four mmas cover a 128-wide K block;
 * their f32 sum is scaled by sw*sx and promoted into a separate fp32 accumulator per block.
 *
 * Work split: a CTA of 8 warps covers `tpc` row tiles, with wk = 8/tpc warps per tile striding
 * over the CTA's K blocks; partial tiles are summed through shared memory in a fixed order. When
 * there are too few row tiles to fill the GPU, K is also split across `splits` CTAs: each writes
 * its partial tile to the workspace, and the last CTA to finish (per-tile-group counter, reset by
 * that CTA) sums the partials in split order, so results are deterministic.
 *
 * Invariants: 16 | 128, so a row tile lies inside one 128-row scale block; rows >= n read row
 * n-1 (valid memory) and are never stored; tokens >= m read zeros.
 */
#include "kernels/cuda/gemv_fp8.h"
#include "kernels/cuda/common.cuh"

#define GEMV_WARPS 8

struct gemv_plan {
    int tiles, kb;      /* row tiles of 16, K blocks of 128 */
    int tpc, wk;        /* tiles per CTA, warps per tile (tpc * wk = 8) */
    int groups, splits; /* grid = groups x splits */
    int kps;            /* K blocks per split */
};

struct gemv_params {
    int m, n, k;
    const uint8_t *w;
    const float *ws;
    int ws_ld;
    const uint8_t *x;
    int x_ld;
    const float *xs;
    int xs_ld;
    void *y;
    int y_ld, y_type, acc;
    int tpc, wk, kps, splits, kb;
    float *part;     /* [splits][groups*tpc*16 rows][16 tokens] */
    unsigned *count; /* [groups] */
};

static void gemv_plan_make(int m, int n, int k, int sms, int ctas_per_sm, struct gemv_plan *p)
{
    (void)m;
    p->tiles = cuk_cdiv(n, 16);
    p->kb = k / 128;
    p->wk = GEMV_WARPS;
    while (p->wk > 1 && p->kb < 2 * p->wk) p->wk /= 2; /* >= 2 K blocks per warp if possible */
    p->tpc = GEMV_WARPS / p->wk;
    p->groups = cuk_cdiv(p->tiles, p->tpc);
    p->splits = 1;
    int target = ctas_per_sm * sms;
    if (p->groups < target) {
        int s = cuk_cdiv(target, p->groups);
        int smax = p->kb / p->wk; /* every warp keeps >= 1 K block */
        if (s > smax) s = smax;
        if (s > 16) s = 16;
        if (s > 1) p->splits = s;
    }
    p->kps = cuk_cdiv(p->kb, p->splits);
    p->splits = cuk_cdiv(p->kb, p->kps);
}

/* Workspace layout, the same for every shape and tuning so that one buffer serves them all (one
 * stream at a time): GEMV_COUNTERS counters at offset 0 (zero between calls: the last CTA of a
 * group resets its own), then the partial tiles. A split plan has groups < 16 * SMs <= this. */
#define GEMV_COUNTERS 4096
#define GEMV_PART_OFFSET (GEMV_COUNTERS * sizeof(unsigned))

static size_t gemv_plan_workspace(const struct gemv_plan *p)
{
    if (p->splits == 1) return 0;
    return GEMV_PART_OFFSET + (size_t)p->splits * p->groups * p->tpc * 16 * 16 * sizeof(float);
}

static int gemv_sms(void)
{
    int dev = 0, sms = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
        sms <= 0)
        sms = 132;
    return sms;
}

static __device__ __forceinline__ void mma_e4m3(float c[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                                uint32_t a3, uint32_t b0, uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* One 128-wide K block: wa/wb = rows g / g+8 (two 16-byte halves each), xv[j] = token g + 8j. */
template <int NT>
static __device__ __forceinline__ void block_dot(float c[NT][4], const uint4 wa[2],
                                                 const uint4 wb[2], const uint4 xv[NT][2])
{
#pragma unroll
    for (int j = 0; j < NT; j++) {
        c[j][0] = c[j][1] = c[j][2] = c[j][3] = 0.0f;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            mma_e4m3(c[j], wa[h].x, wb[h].x, wa[h].y, wb[h].y, xv[j][h].x, xv[j][h].y);
            mma_e4m3(c[j], wa[h].z, wb[h].z, wa[h].w, wb[h].w, xv[j][h].z, xv[j][h].w);
        }
    }
}

/* U K blocks (stride wk) starting at kbi: all weight loads first (4*U 16-byte loads in flight
 * per thread), then the activation loads, then the mmas and the scaled promotion into acc. */
/* volatile twins of the loads, for the LATE variant: volatile asm keeps program order, so the
 * activation loads of block u are issued after all weight loads and just before block u's mmas
 * (fewer live registers) */
static __device__ __forceinline__ uint4 ld_stream16_ordered(const void *p)
{
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

static __device__ __forceinline__ uint4 ld_cached16_ordered(const void *p)
{
    uint4 r;
    asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

template <int NT, int U, bool LATE>
static __device__ __forceinline__ void
process_blocks(const struct gemv_params &p, int kbi, const uint8_t *wpa, const uint8_t *wpb,
               const uint8_t *const xp[NT], const bool xok[NT], const float *wsp,
               const int tok0[NT], float acc[NT][4])
{
    const uint4 zero = make_uint4(0, 0, 0, 0);
    uint4 wa[U][2], wb[U][2];
#pragma unroll
    for (int u = 0; u < U; u++) {
        size_t off = (size_t)(kbi + u * p.wk) * 128;
        wa[u][0] = LATE ? ld_stream16_ordered(wpa + off) : cuk_ld_stream16(wpa + off);
        wa[u][1] = LATE ? ld_stream16_ordered(wpa + off + 64) : cuk_ld_stream16(wpa + off + 64);
        wb[u][0] = LATE ? ld_stream16_ordered(wpb + off) : cuk_ld_stream16(wpb + off);
        wb[u][1] = LATE ? ld_stream16_ordered(wpb + off + 64) : cuk_ld_stream16(wpb + off + 64);
    }
    uint4 xv[U][NT][2];
    if (!LATE) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            size_t off = (size_t)(kbi + u * p.wk) * 128;
#pragma unroll
            for (int j = 0; j < NT; j++) {
                xv[u][j][0] = xok[j] ? __ldg((const uint4 *)(xp[j] + off)) : zero;
                xv[u][j][1] = xok[j] ? __ldg((const uint4 *)(xp[j] + off + 64)) : zero;
            }
        }
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
        int b = kbi + u * p.wk;
        if (LATE) {
            size_t off = (size_t)b * 128;
#pragma unroll
            for (int j = 0; j < NT; j++) {
                xv[u][j][0] = xok[j] ? ld_cached16_ordered(xp[j] + off) : zero;
                xv[u][j][1] = xok[j] ? ld_cached16_ordered(xp[j] + off + 64) : zero;
            }
        }
        float c[NT][4];
        block_dot<NT>(c, wa[u], wb[u], xv[u]);
        float sw = __ldg(wsp + b);
        const float *xs = p.xs + (size_t)b * p.xs_ld;
#pragma unroll
        for (int j = 0; j < NT; j++) {
            float s0 = tok0[j] < p.m ? __ldg(xs + tok0[j]) * sw : 0.0f;
            float s1 = tok0[j] + 1 < p.m ? __ldg(xs + tok0[j] + 1) * sw : 0.0f;
            acc[j][0] += c[j][0] * s0;
            acc[j][1] += c[j][1] * s1;
            acc[j][2] += c[j][2] * s0;
            acc[j][3] += c[j][3] * s1;
        }
    }
}

/* NT token tiles of 8, U K blocks per load batch, MINB CTAs per SM asked of the register
 * allocator (0: no bound) */
template <int NT, int U, int MINB, bool LATE>
static __global__ void __launch_bounds__(GEMV_WARPS * 32, MINB)
    gemv_fp8_kernel(const struct gemv_params p)
{
    __shared__ float red[GEMV_WARPS][NT * 4][32];
    __shared__ unsigned last;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int tile_in = warp / p.wk, kw = warp % p.wk;
    const int tile = blockIdx.x * p.tpc + tile_in;
    const int row0 = tile * 16;
    const int split = blockIdx.y;
    const int kb0 = split * p.kps, kb1 = min(p.kb, kb0 + p.kps);

    int ra = min(row0 + g, p.n - 1), rb = min(row0 + g + 8, p.n - 1);
    const uint8_t *wpa = p.w + (size_t)ra * p.k + t * 16;
    const uint8_t *wpb = p.w + (size_t)rb * p.k + t * 16;
    const uint8_t *xp[NT];
    bool xok[NT];
#pragma unroll
    for (int j = 0; j < NT; j++) {
        xok[j] = g + 8 * j < p.m;
        xp[j] = p.x + (size_t)(xok[j] ? g + 8 * j : 0) * p.x_ld + t * 16;
    }
    const float *wsp = p.ws + (size_t)(min(row0, p.n - 1) / 128) * p.ws_ld;
    /* tokens of this thread's accumulators: 8j + 2t and 8j + 2t + 1 */
    int tok0[NT];
#pragma unroll
    for (int j = 0; j < NT; j++) tok0[j] = 8 * j + 2 * t;

    float acc[NT][4];
#pragma unroll
    for (int j = 0; j < NT; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;

    int kbi = kb0 + kw;
    for (; kbi + (U - 1) * p.wk < kb1; kbi += U * p.wk)
        process_blocks<NT, U, LATE>(p, kbi, wpa, wpb, xp, xok, wsp, tok0, acc);
    if (U > 2)
        for (; kbi + p.wk < kb1; kbi += 2 * p.wk)
            process_blocks<NT, 2, LATE>(p, kbi, wpa, wpb, xp, xok, wsp, tok0, acc);
    for (; kbi < kb1; kbi += p.wk)
        process_blocks<NT, 1, LATE>(p, kbi, wpa, wpb, xp, xok, wsp, tok0, acc);

        /* sum the wk warps of each tile in warp order */
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int i = 0; i < 4; i++) red[warp][j * 4 + i][lane] = acc[j][i];
    __syncthreads();
    if (kw == 0) {
        for (int w2 = 1; w2 < p.wk; w2++)
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int i = 0; i < 4; i++) acc[j][i] += red[warp + w2][j * 4 + i][lane];
    }

    if (p.splits == 1) {
        if (kw == 0) {
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    int row = row0 + g + (i >= 2 ? 8 : 0), tok = tok0[j] + (i & 1);
                    if (row < p.n && tok < p.m)
                        cuk_store(p.y, (size_t)tok * p.y_ld + row, p.y_type, acc[j][i], p.acc);
                }
        }
        return;
    }

    /* split K: publish this CTA's partial tiles, the last CTA of the group sums them */
    const int rows_cta = p.tpc * 16;
    float *mine = p.part + ((size_t)split * gridDim.x + blockIdx.x) * rows_cta * 16;
    if (kw == 0) {
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int r = tile_in * 16 + g + (i >= 2 ? 8 : 0), tok = tok0[j] + (i & 1);
                mine[r * 16 + tok] = acc[j][i];
            }
    }
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(&p.count[blockIdx.x], 1u) == (unsigned)p.splits - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    const int mt = min(p.m, 16);
    for (int e = threadIdx.x; e < rows_cta * mt; e += blockDim.x) {
        int r = e / mt, tok = e % mt;
        float v = 0.0f;
        for (int s2 = 0; s2 < p.splits; s2++)
            v += __ldcg(p.part + ((size_t)s2 * gridDim.x + blockIdx.x) * rows_cta * 16 + r * 16 +
                        tok);
        int row = blockIdx.x * rows_cta + r;
        if (row < p.n) cuk_store(p.y, (size_t)tok * p.y_ld + row, p.y_type, v, p.acc);
    }
    if (threadIdx.x == 0) p.count[blockIdx.x] = 0; /* ready for the next call */
}

/* Production tuning, from bench_gpu's variant table on the H100 (docs/performance.md). What
 * decides is wave quantization: the CTAs of one launch should fit the resident slots (CTAs per SM
 * from ptxas' register counts: m <= 8: 4 with unroll 2, 3 with unroll 4; m > 8 with late
 * activation loads and the occupancy bound: 3) or be several waves anyway. m <= 8: unroll 4
 * (deeper loads) unless the grid fits one wave only with unroll 2. m > 8: unroll 2, late x,
 * 3 CTAs per SM; a grid of 1 to 1.5 waves (the N = 7168 shapes) loses its tail to cuBLASLt, so
 * cuk_gemv_fp8_prefer() sends those to cuBLASLt. */
static const struct cuk_gemv_fp8_tune tune_m8_u2 = {2, 0, 2, 0}, tune_m8_u4 = {4, 0, 2, 0};
static const struct cuk_gemv_fp8_tune tune_m16 = {2, 1, 2, 1};

static int gemv_grid_ctas(int m, int n, int k, int sms, const struct cuk_gemv_fp8_tune *t)
{
    struct gemv_plan pl;
    gemv_plan_make(m, n, k, sms, t->ctas_per_sm, &pl);
    return pl.groups * pl.splits;
}

static const struct cuk_gemv_fp8_tune *gemv_tune_for(int m, int n, int k)
{
    if (m > 8) return &tune_m16;
    int sms = gemv_sms(), ctas = gemv_grid_ctas(m, n, k, sms, &tune_m8_u2);
    return ctas > 3 * sms && ctas <= 4 * sms ? &tune_m8_u2 : &tune_m8_u4;
}

int cuk_gemv_fp8_prefer(int m, int n, int k)
{
    if (m < 1 || m > CUK_GEMV_FP8_MAX_M || n < 1 || k < 128 || k % 128) return 0;
    if (m <= 8) return 1;
    int sms = gemv_sms(), ctas = gemv_grid_ctas(m, n, k, sms, &tune_m16);
    return !(ctas > 3 * sms && 2 * ctas <= 9 * sms);
}

size_t cuk_gemv_fp8_workspace_size_tuned(int m, int n, int k, const struct cuk_gemv_fp8_tune *t)
{
    if (m < 1 || n < 1 || k < 128 || k % 128) return 0;
    if (!t) { /* a workspace that fits every production tuning */
        size_t a = cuk_gemv_fp8_workspace_size_tuned(m, n, k, &tune_m8_u2);
        size_t b = cuk_gemv_fp8_workspace_size_tuned(m, n, k, &tune_m8_u4);
        size_t c = cuk_gemv_fp8_workspace_size_tuned(m, n, k, &tune_m16);
        return a > b ? (a > c ? a : c) : (b > c ? b : c);
    }
    struct gemv_plan pl;
    gemv_plan_make(m, n, k, gemv_sms(), t->ctas_per_sm, &pl);
    return gemv_plan_workspace(&pl);
}

size_t cuk_gemv_fp8_workspace_size(int m, int n, int k)
{
    return cuk_gemv_fp8_workspace_size_tuned(m, n, k, NULL);
}

template <int NT, bool LATE>
static void gemv_launch2(const struct gemv_params &p, dim3 grid, int unroll, int occ,
                         cudaStream_t s)
{
    const int OCC = NT == 1 ? 4 : 3; /* CTAs per SM asked for with occ */
    if (unroll >= 4) {
        if (occ) gemv_fp8_kernel<NT, 4, OCC, LATE><<<grid, GEMV_WARPS * 32, 0, s>>>(p);
        else gemv_fp8_kernel<NT, 4, 0, LATE><<<grid, GEMV_WARPS * 32, 0, s>>>(p);
    } else {
        if (occ) gemv_fp8_kernel<NT, 2, OCC, LATE><<<grid, GEMV_WARPS * 32, 0, s>>>(p);
        else gemv_fp8_kernel<NT, 2, 0, LATE><<<grid, GEMV_WARPS * 32, 0, s>>>(p);
    }
}

template <int NT>
static void gemv_launch(const struct gemv_params &p, dim3 grid, const struct cuk_gemv_fp8_tune *t,
                        cudaStream_t s)
{
    if (t->late_x) gemv_launch2<NT, true>(p, grid, t->unroll, t->occupancy, s);
    else gemv_launch2<NT, false>(p, grid, t->unroll, t->occupancy, s);
}

int cuk_gemv_fp8_tuned(const struct cuk_gemv_fp8_args *a, const struct cuk_gemv_fp8_tune *t,
                       cudaStream_t s)
{
    const char *op = "gemv_fp8";
    CUK_REQUIRE(op, a && a->m >= 1 && a->m <= CUK_GEMV_FP8_MAX_M && a->n >= 1);
    CUK_REQUIRE(op, a->k >= 128 && a->k % 128 == 0);
    if (!t) t = gemv_tune_for(a->m, a->n, a->k);
    CUK_REQUIRE(op, a->w && a->w_scale && a->x && a->x_scale && a->y);
    CUK_REQUIRE(op, a->w_scale_ld >= a->k / 128 && a->x_scale_ld >= a->m);
    CUK_REQUIRE(op, a->x_ld >= a->k && a->x_ld % 16 == 0 && a->y_ld >= a->n);
    CUK_REQUIRE(op, ((uintptr_t)a->w & 15) == 0 && ((uintptr_t)a->x & 15) == 0);
    CUK_REQUIRE(op, a->y_type == CUK_F32 || a->y_type == CUK_BF16);
    CUK_REQUIRE(op, t->ctas_per_sm >= 1 && t->ctas_per_sm <= 16);

    struct gemv_plan pl;
    gemv_plan_make(a->m, a->n, a->k, gemv_sms(), t->ctas_per_sm, &pl);
    size_t need = gemv_plan_workspace(&pl);
    CUK_REQUIRE(op, need == 0 || (a->workspace && a->workspace_size >= need));

    struct gemv_params p;
    p.m = a->m;
    p.n = a->n;
    p.k = a->k;
    p.w = a->w;
    p.ws = a->w_scale;
    p.ws_ld = a->w_scale_ld;
    p.x = a->x;
    p.x_ld = a->x_ld;
    p.xs = a->x_scale;
    p.xs_ld = a->x_scale_ld;
    p.y = a->y;
    p.y_ld = a->y_ld;
    p.y_type = a->y_type;
    p.acc = a->accumulate;
    p.tpc = pl.tpc;
    p.wk = pl.wk;
    p.kps = pl.kps;
    p.splits = pl.splits;
    p.kb = pl.kb;
    CUK_REQUIRE(op, need == 0 || pl.groups <= GEMV_COUNTERS);
    p.count = (unsigned *)a->workspace;
    p.part = need ? (float *)((char *)a->workspace + GEMV_PART_OFFSET) : NULL;
    dim3 grid(pl.groups, pl.splits);
    if (a->m <= 8) gemv_launch<1>(p, grid, t, s);
    else gemv_launch<2>(p, grid, t, s);
    CUK_LAUNCHED(op);
    return 0;
}

int cuk_gemv_fp8(const struct cuk_gemv_fp8_args *a, cudaStream_t s)
{
    return cuk_gemv_fp8_tuned(a, NULL, s);
}
