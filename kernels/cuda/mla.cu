/* mla.cu - latent-cache write and absorbed MLA decode attention (see mla.h).
 *
 * Decode: grid (query, head group of 8, K split). A CTA of 8 warps holds the 8 query heads in
 * shared memory (fp32, 18 KB) and streams the sequence's cache rows in tiles of 16 positions
 * (bf16, 18 KB), so each cache row is read once per 8 heads. Warp w is head w: each lane owns
 * 18 of the 576 dims for the scores (warp-sum per position) and 16 of the 512 output dims; the
 * softmax is online (running max m, sum l, rescaled accumulator), all in fp32. With more than one
 * split, each CTA writes (acc, m, l) to the workspace and a combine kernel merges the splits in
 * order (flash-decoding). This is a CUDA-core kernel: simple and exact; a tensor-core (wgmma)
 * version is future work (see docs/gpu.md).
 *
 * Invariants: tile rows past the end of the sequence are zero-filled and masked with -inf; a
 * split with no positions writes m = -inf, l = 0 and drops out of the combine.
 */
#include "kernels/cuda/mla.h"
#include "kernels/cuda/common.cuh"

#define MLA_HG 8
#define MLA_T 16
#define MLA_DVEC (CUK_MLA_DIM / 8) /* 72 uint4 per cache row */
#define TC_T 32                    /* positions per tile of the tensor-core kernel */

static __global__ void __launch_bounds__(128) kv_store_kernel(const struct cuk_mla_kv_store_args a)
{
    __shared__ float red[32];
    const int r = blockIdx.x;
    const int slot = a.slots[r];
    const float *kv = a.kv + (size_t)r * a.kv_ld;
    float inv = 1.0f;
    if (a.w) {
        float ss = 0.0f;
        for (int i = threadIdx.x; i < CUK_MLA_LORA; i += blockDim.x) ss += kv[i] * kv[i];
        ss = cuk_block_sum(ss, red);
        inv = 1.0f / sqrtf(ss / (float)CUK_MLA_LORA + a.eps);
    }
    if (slot < 0) return;
    uint16_t *dst = a.cache + (size_t)slot * CUK_MLA_DIM;
    for (int i = threadIdx.x; i < CUK_MLA_LORA; i += blockDim.x)
        dst[i] = cuk_f32_to_bf16(a.w ? kv[i] * inv * a.w[i] : kv[i]);
    if (!a.freqs) {
        for (int i = threadIdx.x; i < CUK_MLA_ROPE; i += blockDim.x)
            dst[CUK_MLA_LORA + i] = cuk_f32_to_bf16(kv[CUK_MLA_LORA + i]);
    } else if (threadIdx.x < CUK_MLA_ROPE / 2) {
        int i = threadIdx.x;
        float ang = (float)a.pos[r] * a.freqs[i];
        float sn, cs;
        sincosf(ang, &sn, &cs);
        float y0 = kv[CUK_MLA_LORA + 2 * i], y1 = kv[CUK_MLA_LORA + 2 * i + 1];
        dst[CUK_MLA_LORA + 2 * i] = cuk_f32_to_bf16(y0 * cs - y1 * sn);
        dst[CUK_MLA_LORA + 2 * i + 1] = cuk_f32_to_bf16(y0 * sn + y1 * cs);
    }
}

int cuk_mla_kv_store(const struct cuk_mla_kv_store_args *a, cudaStream_t s)
{
    const char *op = "mla_kv_store";
    CUK_REQUIRE(op, a && a->m >= 1 && a->kv && a->kv_ld >= CUK_MLA_DIM);
    CUK_REQUIRE(op, (!a->freqs || a->pos) && a->slots && a->cache && a->eps >= 0.0f);
    kv_store_kernel<<<a->m, 128, 0, s>>>(*a);
    CUK_LAUNCHED(op);
    return 0;
}

struct mla_params {
    struct cuk_mla_decode_args a;
    int splits, chunk;
    float *part_o;  /* [n_q*H*splits][512] */
    float *part_ml; /* [n_q*H*splits][2] */
};

static __global__ void __launch_bounds__(MLA_HG * 32) mla_decode_kernel(const struct mla_params p)
{
    __shared__ float q_s[MLA_HG][CUK_MLA_DIM];
    __shared__ __align__(16) uint16_t kv_s[MLA_T][CUK_MLA_DIM];
    __shared__ float sc_s[MLA_HG][MLA_T];
    const struct cuk_mla_decode_args &a = p.a;
    const int b = blockIdx.x, hg = blockIdx.y, sp = blockIdx.z;
    const int lane = threadIdx.x & 31, h = threadIdx.x >> 5;
    const float *qg = a.q + (size_t)b * a.q_ld + (size_t)hg * MLA_HG * CUK_MLA_DIM;
    for (int i = threadIdx.x; i < MLA_HG * CUK_MLA_DIM; i += blockDim.x) (&q_s[0][0])[i] = qg[i];
    const int len = a.seq_len[b];
    const int start = sp * p.chunk, end = min(len, start + p.chunk);
    const int32_t *bt = a.block_table + (size_t)b * a.bt_ld;

    float m = -INFINITY, l = 0.0f, acc[CUK_MLA_LORA / 32];
#pragma unroll
    for (int i = 0; i < CUK_MLA_LORA / 32; i++) acc[i] = 0.0f;

    for (int t0 = start; t0 < end; t0 += MLA_T) {
        __syncthreads(); /* previous tile consumed, q_s ready */
        for (int i = threadIdx.x; i < MLA_T * MLA_DVEC; i += blockDim.x) {
            int r = i / MLA_DVEC, c = i % MLA_DVEC, pos = t0 + r;
            uint4 v = make_uint4(0, 0, 0, 0);
            if (pos < end) {
                size_t row =
                    (size_t)bt[pos / a.block_tokens] * a.block_tokens + pos % a.block_tokens;
                v = __ldg((const uint4 *)(a.cache + row * CUK_MLA_DIM) + c);
            }
            ((uint4 *)&kv_s[r][0])[c] = v;
        }
        __syncthreads();
        /* scores of this head for the tile's 16 positions -> sc_s[h][t] (lane 0 writes) */
        for (int t = 0; t < MLA_T; t++) {
            float part = 0.0f;
#pragma unroll
            for (int j = 0; j < CUK_MLA_DIM / 32; j++)
                part += q_s[h][lane + 32 * j] * cuk_bf16_to_f32(kv_s[t][lane + 32 * j]);
            part = cuk_warp_sum(part);
            if (lane == 0) sc_s[h][t] = t0 + t < end ? part * a.scale : -INFINITY;
        }
        __syncwarp();
        float sv = sc_s[h][lane & (MLA_T - 1)];
        float mnew = fmaxf(m, cuk_warp_max(sv));
        float corr = expf(m - mnew); /* m = -inf on the first tile: 0 */
        float pe = expf(sv - mnew);  /* lanes t and t+16 hold the same */
        float psum = cuk_warp_sum(lane < MLA_T ? pe : 0.0f);
        __syncwarp();
        if (lane < MLA_T) sc_s[h][lane] = pe;
        __syncwarp();
        l = l * corr + psum;
#pragma unroll
        for (int i = 0; i < CUK_MLA_LORA / 32; i++) acc[i] *= corr;
#pragma unroll 4
        for (int t = 0; t < MLA_T; t++) {
            float pt = sc_s[h][t];
#pragma unroll
            for (int i = 0; i < CUK_MLA_LORA / 32; i++)
                acc[i] += pt * cuk_bf16_to_f32(kv_s[t][lane + 32 * i]);
        }
        __syncwarp();
        m = mnew;
    }

    const int head = hg * MLA_HG + h;
    if (p.splits == 1) {
        float inv = l > 0.0f ? 1.0f / l : 0.0f;
        float *o = a.out + (size_t)b * a.out_ld + (size_t)head * CUK_MLA_LORA;
#pragma unroll
        for (int i = 0; i < CUK_MLA_LORA / 32; i++) o[lane + 32 * i] = acc[i] * inv;
        return;
    }
    size_t slot = ((size_t)b * a.n_heads + head) * p.splits + sp;
    float *po = p.part_o + slot * CUK_MLA_LORA;
#pragma unroll
    for (int i = 0; i < CUK_MLA_LORA / 32; i++) po[lane + 32 * i] = acc[i];
    if (lane == 0) {
        p.part_ml[slot * 2] = m;
        p.part_ml[slot * 2 + 1] = l;
    }
}

static __global__ void mla_combine_kernel(const struct mla_params p)
{
    const int bh = blockIdx.x, b = bh / p.a.n_heads, head = bh % p.a.n_heads;
    const float *ml = p.part_ml + (size_t)bh * p.splits * 2;
    float mx = -INFINITY;
    for (int s = 0; s < p.splits; s++) mx = fmaxf(mx, ml[2 * s]);
    float L = 0.0f;
    for (int s = 0; s < p.splits; s++)
        if (ml[2 * s + 1] > 0.0f) L += ml[2 * s + 1] * expf(ml[2 * s] - mx);
    float inv = L > 0.0f ? 1.0f / L : 0.0f;
    float *o = p.a.out + (size_t)b * p.a.out_ld + (size_t)head * CUK_MLA_LORA;
    for (int d = threadIdx.x; d < CUK_MLA_LORA; d += blockDim.x) {
        float v = 0.0f;
        for (int s = 0; s < p.splits; s++)
            if (ml[2 * s + 1] > 0.0f)
                v +=
                    p.part_o[((size_t)bh * p.splits + s) * CUK_MLA_LORA + d] * expf(ml[2 * s] - mx);
        o[d] = v * inv;
    }
}

/* ---- tensor-core decode (exact = 0) ----
 * CTA = 4 warps, 16 heads of one query, tiles of TC_T = 32 positions. Scores: warp w computes the
 * partial S_w[16 x 32] over its 144 of the 576 dims with mma.sync m16n8k16 bf16 (A = q, held in
 * registers as two bf16 parts hi + lo, two mmas each; B = cache tile in shared memory with a
 * padded row stride so fragment loads hit 32 different banks); the 4 partials are summed in
 * shared memory. Softmax: 8 lanes per head, online max/sum in fp32, P stored as two bf16 parts.
 * The cache itself is bf16, so hi + lo makes the products as exact as an fp32 kernel's (rounding
 * q and P to one bf16 each, as DeepSeek's reference does, cost 2e-3 relative error at the
 * attention output, which FP8 re-quantization downstream amplified into GPU/CPU divergence).
 * Output: warp w owns dims [128w, 128w+128) of all 16 heads (16 n8 tiles, 64 f32 accumulators per
 * lane), O = O*corr + P V with mma (A = P, B = cache rows read as k-pairs of one column). The next
 * tile's cache rows stream into the second buffer with cp.async while this one is computed. */
#define TC_HEADS 16
#define TC_WARPS 4
#define TC_LD 584 /* 576 + 8: row stride of 292 words -> rows g land on banks 4g + t */
#define TC_PLD 40

struct tc_smem {
    uint16_t kv[2][TC_T][TC_LD]; /* double buffer: tile i+1 loads (cp.async) under tile i */
    float spart[TC_WARPS][TC_HEADS][TC_T];
    uint16_t p[TC_HEADS][TC_PLD], pl[TC_HEADS][TC_PLD]; /* P = p + pl, two bf16 parts */
    float corr[TC_HEADS], m[TC_HEADS], l[TC_HEADS];
};

static __device__ __forceinline__ void mma_bf16(float c[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                                uint32_t a3, uint32_t b0, uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ uint32_t lds32(const uint16_t *p) { return *(const uint32_t *)p; }

/* (x, y) -> packed bf16 pairs hi = (bf16(x), bf16(y)) and lo = the rounded remainders */
static __device__ __forceinline__ void split_bf16x2(float x, float y, uint32_t *hi, uint32_t *lo)
{
    uint16_t hx = cuk_f32_to_bf16(x), hy = cuk_f32_to_bf16(y);
    uint16_t lx = cuk_f32_to_bf16(x - cuk_bf16_to_f32(hx)),
             ly = cuk_f32_to_bf16(y - cuk_bf16_to_f32(hy));
    *hi = (uint32_t)hx | ((uint32_t)hy << 16);
    *lo = (uint32_t)lx | ((uint32_t)ly << 16);
}

/* 16-byte global -> shared copy that bypasses registers; src_bytes = 0 zero-fills */
static __device__ __forceinline__ void cp_async16(void *dst, const void *src, int src_bytes)
{
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(src_bytes)
                 : "memory");
}

/* issue the loads of the tile at t0 (positions >= end read as zeros) into kv buffer buf */
static __device__ __forceinline__ void tc_load_tile(struct tc_smem &S, int buf,
                                                    const struct cuk_mla_decode_args &a,
                                                    const int32_t *bt, int t0, int end, int tid)
{
    for (int i = tid; i < TC_T * MLA_DVEC; i += TC_WARPS * 32) {
        int r = i / MLA_DVEC, c = i % MLA_DVEC, pos = t0 + r;
        const uint16_t *src = a.cache; /* any valid address when zero-filling */
        int bytes = 0;
        if (pos < end) {
            size_t row = (size_t)bt[pos / a.block_tokens] * a.block_tokens + pos % a.block_tokens;
            src = a.cache + row * CUK_MLA_DIM + c * 8;
            bytes = 16;
        }
        cp_async16(&S.kv[buf][r][c * 8], src, bytes);
    }
    asm volatile("cp.async.commit_group;" ::: "memory");
}

static __global__ void __launch_bounds__(TC_WARPS * 32)
    mla_decode_tc_kernel(const struct mla_params p)
{
    extern __shared__ __align__(16) unsigned char smem_raw[];
    struct tc_smem &S = *reinterpret_cast<struct tc_smem *>(smem_raw);
    const struct cuk_mla_decode_args &a = p.a;
    const int b = blockIdx.x, hg = blockIdx.y, sp = blockIdx.z;
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g = lane >> 2, t = lane & 3;

    /* this warp's q fragments (dims [144w, 144w + 144) of 16 heads), straight from global into
     * registers, each fp32 value split into two bf16 parts q = qh + ql (|q - qh - ql| <= 2^-18
     * |q|), so the scores are q.k to fp32 accuracy with two mmas instead of one */
    const float *qg = a.q + (size_t)b * a.q_ld + (size_t)hg * TC_HEADS * CUK_MLA_DIM;
    uint32_t qh[9][4], ql[9][4];
#pragma unroll
    for (int kc = 0; kc < 9; kc++) {
        int k0 = w * 144 + kc * 16 + 2 * t;
        const int rows[4] = {g, g + 8, g, g + 8}, cols[4] = {k0, k0, k0 + 8, k0 + 8};
#pragma unroll
        for (int f = 0; f < 4; f++) {
            float2 v = *(const float2 *)(qg + (size_t)rows[f] * CUK_MLA_DIM + cols[f]);
            split_bf16x2(v.x, v.y, &qh[kc][f], &ql[kc][f]);
        }
    }
    if (tid < TC_HEADS) {
        S.m[tid] = -INFINITY;
        S.l[tid] = 0.0f;
    }
    const int len = a.seq_len[b];
    const int start = sp * p.chunk, end = min(len, start + p.chunk);
    const int32_t *bt = a.block_table + (size_t)b * a.bt_ld;
    float acc[16][4];
#pragma unroll
    for (int i = 0; i < 16; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;

    if (start < end) tc_load_tile(S, 0, a, bt, start, end, tid);
    for (int t0 = start, it = 0; t0 < end; t0 += TC_T, it++) {
        const int cur = it & 1;
        if (t0 + TC_T < end) { /* prefetch the next tile */
            tc_load_tile(S, cur ^ 1, a, bt, t0 + TC_T, end, tid);
            asm volatile("cp.async.wait_group 1;" ::: "memory");
        } else {
            asm volatile("cp.async.wait_group 0;" ::: "memory");
        }
        __syncthreads(); /* tile cur (and q, m, l) visible */
        /* partial scores over dims [144w, 144w + 144) */
        float sc[4][4];
#pragma unroll
        for (int j = 0; j < 4; j++) sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.0f;
#pragma unroll
        for (int kc = 0; kc < 9; kc++) {
            int k0 = w * 144 + kc * 16 + 2 * t;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                uint32_t b0 = lds32(&S.kv[cur][8 * j + g][k0]),
                         b1 = lds32(&S.kv[cur][8 * j + g][k0 + 8]);
                mma_bf16(sc[j], qh[kc][0], qh[kc][1], qh[kc][2], qh[kc][3], b0, b1);
                mma_bf16(sc[j], ql[kc][0], ql[kc][1], ql[kc][2], ql[kc][3], b0, b1);
            }
        }
#pragma unroll
        for (int j = 0; j < 4; j++) {
            S.spart[w][g][8 * j + 2 * t] = sc[j][0];
            S.spart[w][g][8 * j + 2 * t + 1] = sc[j][1];
            S.spart[w][g + 8][8 * j + 2 * t] = sc[j][2];
            S.spart[w][g + 8][8 * j + 2 * t + 1] = sc[j][3];
        }
        __syncthreads();
        /* online softmax: 8 lanes per head, 4 positions per lane */
        {
            int hh = w * 4 + (lane >> 3), p0 = (lane & 7) * 4;
            float v[4], mx = -INFINITY;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float x = S.spart[0][hh][p0 + i] + S.spart[1][hh][p0 + i] + S.spart[2][hh][p0 + i] +
                          S.spart[3][hh][p0 + i];
                v[i] = t0 + p0 + i < end ? x * a.scale : -INFINITY;
                mx = fmaxf(mx, v[i]);
            }
#pragma unroll
            for (int o = 1; o < 8; o <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            float mold = S.m[hh], mnew = fmaxf(mold, mx);
            float c = expf(mold - mnew), sum = 0.0f;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float e = expf(v[i] - mnew);
                sum += e;
                uint16_t eh = cuk_f32_to_bf16(e);
                S.p[hh][p0 + i] = eh;
                S.pl[hh][p0 + i] = cuk_f32_to_bf16(e - cuk_bf16_to_f32(eh));
            }
#pragma unroll
            for (int o = 1; o < 8; o <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
            __syncwarp();
            if ((lane & 7) == 0) {
                S.l[hh] = S.l[hh] * c + sum;
                S.m[hh] = mnew;
                S.corr[hh] = c;
            }
        }
        __syncthreads();
        /* O = O * corr + P V over this warp's 128 dims */
        float cg = S.corr[g], cg8 = S.corr[g + 8];
#pragma unroll
        for (int nt = 0; nt < 16; nt++) {
            acc[nt][0] *= cg;
            acc[nt][1] *= cg;
            acc[nt][2] *= cg8;
            acc[nt][3] *= cg8;
        }
#pragma unroll
        for (int kc = 0; kc < 2; kc++) {
            int k0 = kc * 16 + 2 * t;
            uint32_t a0 = lds32(&S.p[g][k0]), a1 = lds32(&S.p[g + 8][k0]);
            uint32_t a2 = lds32(&S.p[g][k0 + 8]), a3 = lds32(&S.p[g + 8][k0 + 8]);
            uint32_t l0 = lds32(&S.pl[g][k0]), l1 = lds32(&S.pl[g + 8][k0]);
            uint32_t l2 = lds32(&S.pl[g][k0 + 8]), l3 = lds32(&S.pl[g + 8][k0 + 8]);
#pragma unroll
            for (int nt = 0; nt < 16; nt++) {
                int d = w * 128 + nt * 8 + g;
                uint32_t b0 = (uint32_t)S.kv[cur][k0][d] | ((uint32_t)S.kv[cur][k0 + 1][d] << 16);
                uint32_t b1 =
                    (uint32_t)S.kv[cur][k0 + 8][d] | ((uint32_t)S.kv[cur][k0 + 9][d] << 16);
                mma_bf16(acc[nt], a0, a1, a2, a3, b0, b1);
                mma_bf16(acc[nt], l0, l1, l2, l3, b0, b1);
            }
        }
        __syncthreads(); /* buffer cur free for the prefetch after next */
    }
    const int h0 = hg * TC_HEADS;
    if (p.splits == 1) {
        float lg = S.l[g], lg8 = S.l[g + 8];
        float ig = lg > 0.0f ? 1.0f / lg : 0.0f, ig8 = lg8 > 0.0f ? 1.0f / lg8 : 0.0f;
        float *o = a.out + (size_t)b * a.out_ld;
#pragma unroll
        for (int nt = 0; nt < 16; nt++) {
            int d = w * 128 + nt * 8 + 2 * t;
            *(float2 *)(o + (size_t)(h0 + g) * CUK_MLA_LORA + d) =
                make_float2(acc[nt][0] * ig, acc[nt][1] * ig);
            *(float2 *)(o + (size_t)(h0 + g + 8) * CUK_MLA_LORA + d) =
                make_float2(acc[nt][2] * ig8, acc[nt][3] * ig8);
        }
        return;
    }
    size_t slot_g = ((size_t)b * a.n_heads + h0 + g) * p.splits + sp;
    size_t slot_g8 = ((size_t)b * a.n_heads + h0 + g + 8) * p.splits + sp;
#pragma unroll
    for (int nt = 0; nt < 16; nt++) {
        int d = w * 128 + nt * 8 + 2 * t;
        *(float2 *)(p.part_o + slot_g * CUK_MLA_LORA + d) = make_float2(acc[nt][0], acc[nt][1]);
        *(float2 *)(p.part_o + slot_g8 * CUK_MLA_LORA + d) = make_float2(acc[nt][2], acc[nt][3]);
    }
    if (tid < TC_HEADS) {
        size_t slot = ((size_t)b * a.n_heads + h0 + tid) * p.splits + sp;
        p.part_ml[slot * 2] = S.m[tid];
        p.part_ml[slot * 2 + 1] = S.l[tid];
    }
}

static void mla_plan(int n_q, int n_heads, int hg, int max_len, int *splits, int *chunk)
{
    int dev = 0, sms = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
        sms <= 0)
        sms = 132;
    int base = n_q * (n_heads / hg);
    /* tensor-core CTAs: 2 fit an SM (103 KB of shared memory); splits of >= 128 positions */
    int target = 2 * sms, minpos = hg == TC_HEADS ? 128 : 256;
    int s = cuk_cdiv(target, base > 0 ? base : 1);
    int smax = cuk_cdiv(max_len > 0 ? max_len : 1, minpos);
    if (s > smax) s = smax;
    if (s > 64) s = 64;
    if (s < 1) s = 1;
    int c =
        cuk_cdiv(cuk_cdiv(max_len > 0 ? max_len : 1, s), TC_T) * TC_T; /* both tiles divide it */
    *chunk = c;
    *splits = cuk_cdiv(max_len > 0 ? max_len : 1, c);
}

size_t cuk_mla_decode_workspace_size(int n_q, int n_heads, int max_seq_len)
{
    if (n_q < 1 || n_heads < MLA_HG) return 0;
    int s1, s2, chunk;
    mla_plan(n_q, n_heads, MLA_HG, max_seq_len, &s1, &chunk);
    mla_plan(n_q, n_heads, TC_HEADS, max_seq_len, &s2, &chunk);
    int splits = s1 > s2 ? s1 : s2;
    if (splits == 1) return 0;
    return (size_t)n_q * n_heads * splits * (CUK_MLA_LORA + 2) * sizeof(float);
}

int cuk_mla_decode(const struct cuk_mla_decode_args *a, cudaStream_t s)
{
    const char *op = "mla_decode";
    CUK_REQUIRE(op, a && a->n_q >= 1 && a->n_heads >= MLA_HG && a->n_heads % MLA_HG == 0);
    CUK_REQUIRE(op, a->exact || a->n_heads % TC_HEADS == 0);
    CUK_REQUIRE(op, a->q && a->q_ld >= a->n_heads * CUK_MLA_DIM && a->q_ld % 4 == 0 && a->cache);
    CUK_REQUIRE(op, ((uintptr_t)a->q & 15) == 0 && a->block_tokens >= 1);
    CUK_REQUIRE(op, a->block_table && a->seq_len && a->max_seq_len >= 1 && a->bt_ld >= 1);
    CUK_REQUIRE(op, (long long)a->bt_ld * a->block_tokens >= a->max_seq_len);
    CUK_REQUIRE(op, a->out && a->out_ld >= a->n_heads * CUK_MLA_LORA);
    CUK_REQUIRE(op, ((uintptr_t)a->cache & 15) == 0 && a->scale > 0.0f);
    struct mla_params p;
    p.a = *a;
    int hg = a->exact ? MLA_HG : TC_HEADS;
    mla_plan(a->n_q, a->n_heads, hg, a->max_seq_len, &p.splits, &p.chunk);
    size_t need = cuk_mla_decode_workspace_size(a->n_q, a->n_heads, a->max_seq_len);
    CUK_REQUIRE(op, p.splits == 1 || (a->workspace && a->workspace_size >= need));
    p.part_o = (float *)a->workspace;
    p.part_ml = p.part_o ? p.part_o + (size_t)a->n_q * a->n_heads * p.splits * CUK_MLA_LORA : NULL;
    dim3 grid(a->n_q, a->n_heads / hg, p.splits);
    if (a->exact) {
        mla_decode_kernel<<<grid, MLA_HG * 32, 0, s>>>(p);
    } else {
        cudaFuncSetAttribute(mla_decode_tc_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)sizeof(struct tc_smem));
        mla_decode_tc_kernel<<<grid, TC_WARPS * 32, sizeof(struct tc_smem), s>>>(p);
    }
    CUK_LAUNCHED(op);
    if (p.splits > 1) {
        mla_combine_kernel<<<a->n_q * a->n_heads, 128, 0, s>>>(p);
        CUK_LAUNCHED(op);
    }
    return 0;
}
