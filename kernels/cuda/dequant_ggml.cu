/* dequant_ggml.cu - GGML block rows -> bf16 / fp32 rows (see dequant_ggml.h).
 *
 * One CTA of 256 threads per row; a pass covers 2048 elements of the row (8 per thread). The
 * pass's blocks are staged into shared memory as raw bytes: 16-byte read-only streaming loads for
 * the 16-byte-aligned segments that lie wholly inside the pass's byte range, byte loads for the
 * partial segments at either end (block structs are packed and 2-byte aligned at best: Q6_K is 210
 * bytes, Q8_0 34; rows may start anywhere), so no byte outside [src, src + n) is read. Each thread
 * then decodes 8 consecutive elements of one block from shared memory (byte reads, so alignment
 * never matters) with the reference's formula (kernels/cpu/ref: legacy.c, kquants.c, iq4.c,
 * iquants.c, plain.c) written with explicit __fmul_rn / __fadd_rn / __fsub_rn, so nvcc cannot
 * contract a*b-c into an FMA: the fp32 values equal cpuq_dequant_<type>_ref's bit for bit. The 8
 * values go out as one 16-byte store (bf16) or two (fp32).
 */
#include "kernels/cuda/dequant_ggml.h"
#include "kernels/cuda/common.cuh"

extern "C" {
#include "kernels/cpu/qtype.h"
}

#define DQ_THREADS 256
#define DQ_PER_THREAD 8
#define DQ_CHUNK (DQ_THREADS * DQ_PER_THREAD) /* elements per pass */

/* ---- per-type block geometry (GGML's): elements per block, bytes per block */
template <int T> struct dq_geo;
#define DQ_GEO(t, QK_, TS_)                                                                        \
    template <> struct dq_geo<t> {                                                                 \
        static const int qk = QK_, ts = TS_;                                                       \
    };
DQ_GEO(QTYPE_Q4_0, 32, 18)
DQ_GEO(QTYPE_Q4_1, 32, 20)
DQ_GEO(QTYPE_Q5_0, 32, 22)
DQ_GEO(QTYPE_Q5_1, 32, 24)
DQ_GEO(QTYPE_Q8_0, 32, 34)
DQ_GEO(QTYPE_Q2_K, 256, 84)
DQ_GEO(QTYPE_Q3_K, 256, 110)
DQ_GEO(QTYPE_Q4_K, 256, 144)
DQ_GEO(QTYPE_Q5_K, 256, 176)
DQ_GEO(QTYPE_Q6_K, 256, 210)
DQ_GEO(QTYPE_IQ4_NL, 32, 18)
DQ_GEO(QTYPE_IQ4_XS, 256, 136)
DQ_GEO(QTYPE_IQ2_XXS, 256, 66)
DQ_GEO(QTYPE_IQ2_XS, 256, 74)
DQ_GEO(QTYPE_IQ2_S, 256, 82)
DQ_GEO(QTYPE_IQ3_XXS, 256, 98)
DQ_GEO(QTYPE_IQ3_S, 256, 110)
DQ_GEO(QTYPE_IQ1_S, 256, 50)
DQ_GEO(QTYPE_IQ1_M, 256, 56)
DQ_GEO(QTYPE_F32, 1, 4)
DQ_GEO(QTYPE_F16, 1, 2)
DQ_GEO(QTYPE_BF16, 1, 2)
#undef DQ_GEO

/* shared bytes one pass stages: its blocks plus up to 15 bytes of head misalignment, rounded */
template <int T> struct dq_smem {
    static const int n = (DQ_CHUNK / dq_geo<T>::qk) * dq_geo<T>::ts + 32;
};

/* ggml's kvalues_iq4nl (= cpuq_kvalues_iq4nl) */
static __device__ const int8_t dq_kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                                       1,    13,   25,  38,  53,  69,  89,  113};

static __device__ __forceinline__ float dq_f16(const uint8_t *p)
{
    uint16_t h = (uint16_t)(p[0] | (p[1] << 8));
    return __half2float(__ushort_as_half(h));
}

/* ---- decoders: v[i] = element e0 + i of the block at b (shared memory), i < 8.
 * Comments quote the reference expression each one reproduces. */

template <int T> struct dq_dec;

/* Q4_0: dst = ((qs & 0xf) - 8) * d, element j < 16 low nibble of qs[j], else high of qs[j-16] */
template <> struct dq_dec<QTYPE_Q4_0> {
    static __device__ __forceinline__ void run(const uint8_t *b, int e0, float v[8], const int8_t *)
    {
        const float d = dq_f16(b);
        const uint8_t *qs = b + 2;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            int j = e0 + i, q = j < 16 ? qs[j] & 0xf : qs[j - 16] >> 4;
            v[i] = __fmul_rn((float)(q - 8), d);
        }
    }
};

/* Q4_1: dst = q * d + m */
template <> struct dq_dec<QTYPE_Q4_1> {
    static __device__ __forceinline__ void run(const uint8_t *b, int e0, float v[8], const int8_t *)
    {
        const float d = dq_f16(b), m = dq_f16(b + 2);
        const uint8_t *qs = b + 4;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            int j = e0 + i, q = j < 16 ? qs[j] & 0xf : qs[j - 16] >> 4;
            v[i] = __fadd_rn(__fmul_rn((float)q, d), m);
        }
    }
};

/* 5-bit quant of element j of a Q5_0/Q5_1 block: nibble as Q4_0, bit 4 = bit j of qh (LE u32) */
static __device__ __forceinline__ int dq_q5(const uint8_t *qh, const uint8_t *qs, int j)
{
    uint32_t h = (uint32_t)qh[0] | ((uint32_t)qh[1] << 8) | ((uint32_t)qh[2] << 16) |
                 ((uint32_t)qh[3] << 24);
    int lo = j < 16 ? qs[j] & 0xf : qs[j - 16] >> 4;
    return lo | (int)(((h >> j) & 1u) << 4);
}

/* Q5_0: dst = (q - 16) * d */
template <> struct dq_dec<QTYPE_Q5_0> {
    static __device__ __forceinline__ void run(const uint8_t *b, int e0, float v[8], const int8_t *)
    {
        const float d = dq_f16(b);
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = __fmul_rn((float)(dq_q5(b + 2, b + 6, e0 + i) - 16), d);
    }
};

/* Q5_1: dst = q * d + m */
template <> struct dq_dec<QTYPE_Q5_1> {
    static __device__ __forceinline__ void run(const uint8_t *b, int e0, float v[8], const int8_t *)
    {
        const float d = dq_f16(b), m = dq_f16(b + 2);
#pragma unroll
        for (int i = 0; i < 8; i++)
            v[i] = __fadd_rn(__fmul_rn((float)dq_q5(b + 4, b + 8, e0 + i), d), m);
    }
};

/* Q8_0: dst = qs[j] * d */
template <> struct dq_dec<QTYPE_Q8_0> {
    static __device__ __forceinline__ void run(const uint8_t *b, int e0, float v[8], const int8_t *)
    {
        const float d = dq_f16(b);
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = __fmul_rn((float)(int8_t)b[2 + e0 + i], d);
    }
};

/* Q2_K (scales[16] @0, qs[64] @16, d @80, dmin @82): dl = d * (sc & 0xf), ml = dmin * (sc >> 4),
 * dst = dl * q - ml; q of element e (h = e/128, r = e%128) = qs[32h + r%32] >> 2(r/32) & 3.
 * The 8 elements of a thread share one 16-element sub-block. */
template <> struct dq_dec<QTYPE_Q2_K> {
    static __device__ __forceinline__ void run(const uint8_t *b, int e0, float v[8], const int8_t *)
    {
        const float d = dq_f16(b + 80), mn = dq_f16(b + 82);
        const uint8_t sc = b[e0 / 16];
        const float dl = __fmul_rn(d, (float)(sc & 0xf)), ml = __fmul_rn(mn, (float)(sc >> 4));
        const int h = e0 / 128, r0 = e0 % 128, shift = 2 * (r0 / 32);
        const uint8_t *qs = b + 16 + 32 * h;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            int q = (qs[(r0 + i) % 32] >> shift) & 3;
            v[i] = __fsub_rn(__fmul_rn(dl, (float)q), ml);
        }
    }
};

/* Q3_K (hmask[32] @0, qs[64] @32, scales[12] @96, d @108): dl = d * (scale - 32),
 * dst = dl * q, q = low 2 bits (as Q2_K) - (hmask[e%32] bit e/32 ? 0 : 4). */
template <> struct dq_dec<QTYPE_Q3_K> {
    static __device__ __forceinline__ void run(const uint8_t *b, int e0, float v[8], const int8_t *)
    {
        const float d = dq_f16(b + 108);
        const uint8_t *s = b + 96;
        const int j = e0 / 16;
        const int lo = j < 8 ? s[j] & 0xf : s[j - 8] >> 4;
        const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        const float dl = __fmul_rn(d, (float)((lo | (hi << 4)) - 32));
        const int h = e0 / 128, r0 = e0 % 128, shift = 2 * (r0 / 32), hb = e0 / 32;
        const uint8_t *qs = b + 32 + 32 * h, *hm = b;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            int l = (r0 + i) % 32;
            int q = ((qs[l] >> shift) & 3) - (((hm[l] >> hb) & 1) ? 0 : 4);
            v[i] = __fmul_rn(dl, (float)q);
        }
    }
};

/* Q4_K/Q5_K: 6-bit scale and min of sub-block j (ggml's get_scale_min_k4) */
static __device__ __forceinline__ void dq_scale_min(int j, const uint8_t *q, int *sc, int *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Q4_K (d @0, dmin @2, scales[12] @4, qs[128] @16): sub-block j = e/32, dl = d * sc, ml = dmin * m,
 * dst = dl * ((qs[32(j/2) + e%32] >> 4(j&1)) & 0xf) - ml */
template <> struct dq_dec<QTYPE_Q4_K> {
    static __device__ __forceinline__ void run(const uint8_t *b, int e0, float v[8], const int8_t *)
    {
        const float d = dq_f16(b), mn = dq_f16(b + 2);
        const int j = e0 / 32, l0 = e0 % 32, shift = (j & 1) * 4;
        int sc, m;
        dq_scale_min(j, b + 4, &sc, &m);
        const float dl = __fmul_rn(d, (float)sc), ml = __fmul_rn(mn, (float)m);
        const uint8_t *q = b + 16 + 32 * (j / 2) + l0;
#pragma unroll
        for (int i = 0; i < 8; i++)
            v[i] = __fsub_rn(__fmul_rn(dl, (float)((q[i] >> shift) & 0xf)), ml);
    }
};

/* Q5_K (d @0, dmin @2, scales[12] @4, qh[32] @16, qs[128] @48): as Q4_K plus 16 if bit j of
 * qh[e%32] */
template <> struct dq_dec<QTYPE_Q5_K> {
    static __device__ __forceinline__ void run(const uint8_t *b, int e0, float v[8], const int8_t *)
    {
        const float d = dq_f16(b), mn = dq_f16(b + 2);
        const int j = e0 / 32, l0 = e0 % 32, shift = (j & 1) * 4;
        int sc, m;
        dq_scale_min(j, b + 4, &sc, &m);
        const float dl = __fmul_rn(d, (float)sc), ml = __fmul_rn(mn, (float)m);
        const uint8_t *q = b + 48 + 32 * (j / 2) + l0, *qh = b + 16 + l0;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            int x = ((q[i] >> shift) & 0xf) + (((qh[i] >> j) & 1) ? 16 : 0);
            v[i] = __fsub_rn(__fmul_rn(dl, (float)x), ml);
        }
    }
};

/* Q6_K (ql[128] @0, qh[64] @128, int8 scales[16] @192, d @208): h = e/128, r = e%128,
 * q = (nibble (r < 64: low, else high) of ql[64h + r%64]) | ((qh[32h + r%32] >> 2(r/32)) & 3) << 4,
 * dst = d * scales[e/16] * (q - 32), evaluated left to right */
template <> struct dq_dec<QTYPE_Q6_K> {
    static __device__ __forceinline__ void run(const uint8_t *b, int e0, float v[8], const int8_t *)
    {
        const float d = dq_f16(b + 208);
        const float ds = __fmul_rn(d, (float)(int8_t)b[192 + e0 / 16]);
        const int h = e0 / 128, r0 = e0 % 128, hs = r0 >= 64 ? 4 : 0, qhs = 2 * (r0 / 32);
        const uint8_t *ql = b + 64 * h, *qh = b + 128 + 32 * h;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            int r = r0 + i;
            int q = ((ql[r % 64] >> hs) & 0xf) | (((qh[r % 32] >> qhs) & 3) << 4);
            v[i] = __fmul_rn(ds, (float)(q - 32));
        }
    }
};

/* IQ4_NL (d @0, qs[16] @2): dst = d * kvalues[nibble], nibbles as Q4_0 */
template <> struct dq_dec<QTYPE_IQ4_NL> {
    static __device__ __forceinline__ void run(const uint8_t *b, int e0, float v[8],
                                               const int8_t *kv)
    {
        const float d = dq_f16(b);
        const uint8_t *qs = b + 2;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            int j = e0 + i, q = j < 16 ? qs[j] & 0xf : qs[j - 16] >> 4;
            v[i] = __fmul_rn(d, (float)kv[q]);
        }
    }
};

/* IQ4_XS (d @0, scales_h u16 @2, scales_l[4] @4, qs[128] @8): sub-block ib = e/32,
 * ls = (scales_l[ib/2] >> 4(ib%2) & 0xf) | ((scales_h >> 2ib) & 3) << 4, dl = d * (ls - 32),
 * dst = dl * kvalues[nibble of qs[16ib + ...] as IQ4_NL] */
template <> struct dq_dec<QTYPE_IQ4_XS> {
    static __device__ __forceinline__ void run(const uint8_t *b, int e0, float v[8],
                                               const int8_t *kv)
    {
        const float d = dq_f16(b);
        const int ib = e0 / 32, j0 = e0 % 32;
        const uint32_t sh = (uint32_t)b[2] | ((uint32_t)b[3] << 8);
        const int ls =
            ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xf) | (int)(((sh >> (2 * ib)) & 3u) << 4);
        const float dl = __fmul_rn(d, (float)(ls - 32));
        const uint8_t *qs = b + 8 + 16 * ib;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            int j = j0 + i, q = j < 16 ? qs[j] & 0xf : qs[j - 16] >> 4;
            v[i] = __fmul_rn(dl, (float)kv[q]);
        }
    }
};

/* ---- grid i-quants (kernels/cpu/ref/iquants.c). The thread's 8 elements are exactly one group
 * of 8 (e0 % 8 == 0): one 8-value grid entry (IQ3: two 4-value ones) times the sub-block scale,
 * with signs (IQ2/IQ3) or a +-1/8 shift (IQ1). Grid indices are masked bit fields of their
 * table's size, so any bytes decode in bounds. Device copies of the CPU's tables: */
#define IQ_TABLE(type, name, n, ...) static __device__ const type dq_##name[n] = {__VA_ARGS__};
#include "kernels/cpu/ref/iq_grids.inc"
#undef IQ_TABLE

static __device__ __forceinline__ uint32_t dq_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* v[j] = +-(dl * magnitude j of e), negative where bit j of signs is set */
static __device__ __forceinline__ void dq_put8(float v[8], float dl, uint64_t e, unsigned signs)
{
#pragma unroll
    for (int j = 0; j < 8; j++) {
        const float m = __fmul_rn(dl, (float)(unsigned)((e >> (8 * j)) & 0xff));
        v[j] = (signs >> j) & 1 ? -m : m;
    }
}

/* IQ1: v[j] = dl * (value j of e + delta) */
static __device__ __forceinline__ void dq_put8_iq1(float v[8], float dl, uint64_t e, float delta)
{
#pragma unroll
    for (int j = 0; j < 8; j++)
        v[j] = __fmul_rn(dl, __fadd_rn((float)(int8_t)((e >> (8 * j)) & 0xff), delta));
}

/* the 4-bit-scale formula of IQ2 (k = 0.25) and IQ3_XXS (k = 0.5): d * (0.5 + s) * k */
static __device__ __forceinline__ float dq_half_scale(float d, unsigned s, float k)
{
    return __fmul_rn(__fmul_rn(d, __fadd_rn(0.5f, (float)s)), k);
}

/* IQ2_XXS (d @0, per 32: 4 grid bytes then u32 of 4 x 7 sign bits | scale << 28 @2 + 8ib) */
template <> struct dq_dec<QTYPE_IQ2_XXS> {
    static __device__ __forceinline__ void run(const uint8_t *b, int e0, float v[8], const int8_t *)
    {
        const int ib = e0 / 32, l = (e0 / 8) % 4;
        const uint8_t *q = b + 2 + 8 * ib;
        const uint32_t aux = dq_u32(q + 4);
        dq_put8(v, dq_half_scale(dq_f16(b), aux >> 28, 0.25f), dq_iq2xxs_grid[q[l]],
                dq_iq_ksigns[(aux >> (7 * l)) & 127]);
    }
};

/* IQ2_XS (d @0, u16 qs[32] = 9-bit index | 7 sign bits << 9 @2, scales[8] @66) */
template <> struct dq_dec<QTYPE_IQ2_XS> {
    static __device__ __forceinline__ void run(const uint8_t *b, int e0, float v[8], const int8_t *)
    {
        const int g = e0 / 8, ib = e0 / 32, l = g % 4;
        const unsigned q = (unsigned)b[2 + 2 * g] | ((unsigned)b[3 + 2 * g] << 8);
        const unsigned sc = b[66 + ib];
        dq_put8(v, dq_half_scale(dq_f16(b), l < 2 ? sc & 0xf : sc >> 4, 0.25f),
                dq_iq2xs_grid[q & 511], dq_iq_ksigns[q >> 9]);
    }
};

/* IQ2_S (d @0, qs[32] low index bytes @2, signs[32] @34, qh[8] @66, scales[8] @74) */
template <> struct dq_dec<QTYPE_IQ2_S> {
    static __device__ __forceinline__ void run(const uint8_t *b, int e0, float v[8], const int8_t *)
    {
        const int g = e0 / 8, ib = e0 / 32, l = g % 4;
        const unsigned idx = b[2 + g] | (((unsigned)b[66 + ib] << (8 - 2 * l)) & 0x300);
        const unsigned sc = b[74 + ib];
        dq_put8(v, dq_half_scale(dq_f16(b), l < 2 ? sc & 0xf : sc >> 4, 0.25f), dq_iq2s_grid[idx],
                b[34 + g]);
    }
};

/* IQ3_XXS (d @0, qs[64] 4-value grid indices @2, per 32 a u32 of 4 x 7 sign bits | scale << 28
 * @66 + 4ib) */
template <> struct dq_dec<QTYPE_IQ3_XXS> {
    static __device__ __forceinline__ void run(const uint8_t *b, int e0, float v[8], const int8_t *)
    {
        const int g = e0 / 8, ib = e0 / 32, l = g % 4;
        const uint32_t aux = dq_u32(b + 66 + 4 * ib);
        const uint64_t e =
            dq_iq3xxs_grid[b[2 + 2 * g]] | ((uint64_t)dq_iq3xxs_grid[b[3 + 2 * g]] << 32);
        dq_put8(v, dq_half_scale(dq_f16(b), aux >> 28, 0.5f), e,
                dq_iq_ksigns[(aux >> (7 * l)) & 127]);
    }
};

/* IQ3_S (d @0, qs[64] @2, qh[8] @66 (9th index bits), signs[32] @74, scales[4] @106):
 * dl = d * (1 + 2s) */
template <> struct dq_dec<QTYPE_IQ3_S> {
    static __device__ __forceinline__ void run(const uint8_t *b, int e0, float v[8], const int8_t *)
    {
        const int g = e0 / 8, ib = e0 / 32, l = g % 4;
        const unsigned qh = b[66 + ib];
        const unsigned i0 = b[2 + 2 * g] | (((qh >> (2 * l)) & 1) << 8);
        const unsigned i1 = b[3 + 2 * g] | (((qh >> (2 * l + 1)) & 1) << 8);
        const int s = (b[106 + ib / 2] >> (4 * (ib % 2))) & 0xf;
        dq_put8(v, __fmul_rn(dq_f16(b), (float)(1 + 2 * s)),
                dq_iq3s_grid[i0] | ((uint64_t)dq_iq3s_grid[i1] << 32), b[74 + g]);
    }
};

/* IQ1_S (d @0, qs[32] @2, u16 qh[8] @34 = 4 x 3 index bits | scale << 12 | delta sign << 15):
 * dl = d * (2s + 1), dst = dl * (grid + delta) */
template <> struct dq_dec<QTYPE_IQ1_S> {
    static __device__ __forceinline__ void run(const uint8_t *b, int e0, float v[8], const int8_t *)
    {
        const int g = e0 / 8, ib = e0 / 32, l = g % 4;
        const unsigned qh = (unsigned)b[34 + 2 * ib] | ((unsigned)b[35 + 2 * ib] << 8);
        const float dl = __fmul_rn(dq_f16(b), (float)(2 * ((qh >> 12) & 7) + 1));
        dq_put8_iq1(v, dl, dq_iq1s_grid[b[2 + g] | (((qh >> (3 * l)) & 7) << 8)],
                    qh & 0x8000 ? -0.125f : 0.125f);
    }
};

/* IQ1_M (qs[32] @0, qh[16] @32 = per group a nibble: 3 index bits | delta sign << 3, scales @48
 * = 4 u16: 3-bit scales per 16 elements, the f16 d in their top nibbles) */
template <> struct dq_dec<QTYPE_IQ1_M> {
    static __device__ __forceinline__ void run(const uint8_t *b, int e0, float v[8], const int8_t *)
    {
        const int g = e0 / 8, ib = e0 / 32, l = g % 4;
        unsigned sc[4];
#pragma unroll
        for (int k = 0; k < 4; k++)
            sc[k] = (unsigned)b[48 + 2 * k] | ((unsigned)b[49 + 2 * k] << 8);
        const unsigned dh =
            (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000);
        const float d = __half2float(__ushort_as_half((unsigned short)dh));
        const float dl =
            __fmul_rn(d, (float)(2 * ((sc[ib / 2] >> (6 * (ib % 2) + 3 * (l / 2))) & 7) + 1));
        const unsigned nib = (b[32 + 2 * ib + l / 2] >> (4 * (l % 2))) & 0xf;
        dq_put8_iq1(v, dl, dq_iq1s_grid[b[g] | ((nib & 7) << 8)], nib & 8 ? -0.125f : 0.125f);
    }
};

/* plain types: b points at element e0's bytes (blck 1), e0 == 0 */
template <> struct dq_dec<QTYPE_F32> {
    static __device__ __forceinline__ void run(const uint8_t *b, int, float v[8], const int8_t *)
    {
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const uint8_t *p = b + 4 * i;
            v[i] = __uint_as_float((uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
                                   ((uint32_t)p[3] << 24));
        }
    }
};
template <> struct dq_dec<QTYPE_F16> {
    static __device__ __forceinline__ void run(const uint8_t *b, int, float v[8], const int8_t *)
    {
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = dq_f16(b + 2 * i);
    }
};
template <> struct dq_dec<QTYPE_BF16> {
    static __device__ __forceinline__ void run(const uint8_t *b, int, float v[8], const int8_t *)
    {
#pragma unroll
        for (int i = 0; i < 8; i++)
            v[i] = __uint_as_float(((uint32_t)b[2 * i] | ((uint32_t)b[2 * i + 1] << 8)) << 16);
    }
};

/* Stage bytes [src, src + n) into sm (16-byte aligned) at offset off = src % 16; returns off.
 * Whole aligned 16-byte segments use one streaming load, the partial ones at the ends byte
 * loads, so nothing outside the range is read. Ends with a barrier. */
static __device__ __forceinline__ int dq_stage(const uint8_t *src, int n, uint8_t *sm)
{
    const uintptr_t a0 = (uintptr_t)src & ~(uintptr_t)15;
    const int off = (int)((uintptr_t)src - a0);
    const int nseg = (off + n + 15) / 16;
    for (int s = threadIdx.x; s < nseg; s += blockDim.x) {
        const int lo = 16 * s, hi = lo + 16;
        const uint8_t *g = (const uint8_t *)a0 + lo;
        if (lo >= off && hi <= off + n) {
            *(uint4 *)(sm + lo) = cuk_ld_stream16(g);
        } else {
            const int b0 = max(lo, off), b1 = min(hi, off + n);
            for (int i = b0; i < b1; i++) sm[i] = __ldg(g + (i - lo));
        }
    }
    __syncthreads();
    return off;
}

template <int T, int F32OUT>
static __global__ void __launch_bounds__(DQ_THREADS)
    dq_kernel(const uint8_t *src, size_t row_bytes, int cols, void *dst, int64_t dst_ld)
{
    typedef dq_geo<T> G;
    __shared__ __align__(16) uint8_t sm[dq_smem<T>::n];
    __shared__ int8_t kv[16];
    if (threadIdx.x < 16) kv[threadIdx.x] = dq_kvalues_iq4nl[threadIdx.x];
    const int64_t row = blockIdx.x;
    const uint8_t *rs = src + (size_t)row * row_bytes;
    for (int c0 = 0; c0 < cols; c0 += DQ_CHUNK) {
        const int ne = min(DQ_CHUNK, cols - c0); /* a multiple of 8 and of qk */
        const int off = dq_stage(rs + (size_t)(c0 / G::qk) * G::ts, (ne / G::qk) * G::ts, sm);
        const int e = DQ_PER_THREAD * threadIdx.x; /* element within the pass */
        if (e < ne) {
            float v[8];
            dq_dec<T>::run(sm + off + (e / G::qk) * G::ts, e % G::qk, v, kv);
            const size_t o = (size_t)row * (size_t)dst_ld + (size_t)(c0 + e);
            if (F32OUT) {
                float4 *p = (float4 *)((float *)dst + o);
                p[0] = make_float4(v[0], v[1], v[2], v[3]);
                p[1] = make_float4(v[4], v[5], v[6], v[7]);
            } else {
                uint4 u;
                u.x = (uint32_t)cuk_f32_to_bf16(v[0]) | ((uint32_t)cuk_f32_to_bf16(v[1]) << 16);
                u.y = (uint32_t)cuk_f32_to_bf16(v[2]) | ((uint32_t)cuk_f32_to_bf16(v[3]) << 16);
                u.z = (uint32_t)cuk_f32_to_bf16(v[4]) | ((uint32_t)cuk_f32_to_bf16(v[5]) << 16);
                u.w = (uint32_t)cuk_f32_to_bf16(v[6]) | ((uint32_t)cuk_f32_to_bf16(v[7]) << 16);
                *(uint4 *)((uint16_t *)dst + o) = u;
            }
        }
        __syncthreads(); /* sm is reused next pass */
    }
}

/* ---- host side */

static int dq_geometry(int type, int *qk, int *ts)
{
    /* clang-format off */
    switch (type) {
#define G(t) case t: *qk = dq_geo<t>::qk; *ts = dq_geo<t>::ts; return 1;
        G(QTYPE_Q4_0) G(QTYPE_Q4_1) G(QTYPE_Q5_0) G(QTYPE_Q5_1) G(QTYPE_Q8_0) G(QTYPE_Q2_K)
        G(QTYPE_Q3_K) G(QTYPE_Q4_K) G(QTYPE_Q5_K) G(QTYPE_Q6_K) G(QTYPE_IQ4_NL) G(QTYPE_IQ4_XS)
        G(QTYPE_IQ2_XXS) G(QTYPE_IQ2_XS) G(QTYPE_IQ2_S) G(QTYPE_IQ3_XXS) G(QTYPE_IQ3_S)
        G(QTYPE_IQ1_S) G(QTYPE_IQ1_M) G(QTYPE_F32) G(QTYPE_F16) G(QTYPE_BF16)
#undef G
    default: return 0;
    }
    /* clang-format on */
}

extern "C" int cuk_dequant_ggml_supported(int type)
{
    int qk, ts;
    return dq_geometry(type, &qk, &ts);
}

extern "C" size_t cuk_ggml_row_size(int type, int64_t n)
{
    int qk, ts;
    if (!dq_geometry(type, &qk, &ts) || n < 0 || n % qk) return 0;
    return (size_t)(n / qk) * (size_t)ts;
}

template <int T> static void dq_launch(const struct cuk_dequant_ggml_args *a, cudaStream_t s)
{
    const dim3 grid((unsigned)a->src.rows);
    if (a->dst_type == CUK_F32)
        dq_kernel<T, 1><<<grid, DQ_THREADS, 0, s>>>((const uint8_t *)a->src.data, a->src.row_bytes,
                                                    (int)a->src.cols, a->dst, a->dst_ld);
    else
        dq_kernel<T, 0><<<grid, DQ_THREADS, 0, s>>>((const uint8_t *)a->src.data, a->src.row_bytes,
                                                    (int)a->src.cols, a->dst, a->dst_ld);
}

extern "C" int cuk_dequant_ggml(const struct cuk_dequant_ggml_args *a, cudaStream_t s)
{
    const char *op = "dequant_ggml";
    CUK_REQUIRE(op, a != NULL);
    int qk, ts;
    if (!dq_geometry(a->src.type, &qk, &ts)) return ERR_UNSUPPORTED;
    CUK_REQUIRE(op, a->src.rows >= 0 && a->src.rows <= 0x7fffffff);
    CUK_REQUIRE(op, a->src.cols > 0 && a->src.cols <= 0x7fffffff);
    CUK_REQUIRE(op, a->src.cols % qk == 0 && a->src.cols % 8 == 0);
    CUK_REQUIRE(op, a->dst_type == CUK_F32 || a->dst_type == CUK_BF16);
    CUK_REQUIRE(op, a->dst_ld >= a->src.cols && a->dst_ld % 8 == 0);
    if (a->src.rows == 0) return 0;
    CUK_REQUIRE(op, a->src.data != NULL && a->dst != NULL);
    CUK_REQUIRE(op, ((uintptr_t)a->dst & 15) == 0);
    CUK_REQUIRE(op, a->src.row_bytes >= (size_t)(a->src.cols / qk) * (size_t)ts);
    /* clang-format off */
    switch (a->src.type) {
#define L(t) case t: dq_launch<t>(a, s); break;
        L(QTYPE_Q4_0) L(QTYPE_Q4_1) L(QTYPE_Q5_0) L(QTYPE_Q5_1) L(QTYPE_Q8_0) L(QTYPE_Q2_K)
        L(QTYPE_Q3_K) L(QTYPE_Q4_K) L(QTYPE_Q5_K) L(QTYPE_Q6_K) L(QTYPE_IQ4_NL) L(QTYPE_IQ4_XS)
        L(QTYPE_IQ2_XXS) L(QTYPE_IQ2_XS) L(QTYPE_IQ2_S) L(QTYPE_IQ3_XXS) L(QTYPE_IQ3_S)
        L(QTYPE_IQ1_S) L(QTYPE_IQ1_M) L(QTYPE_F32) L(QTYPE_F16) L(QTYPE_BF16)
#undef L
    default: return ERR_UNSUPPORTED;
    }
    /* clang-format on */
    CUK_LAUNCHED(op);
    return 0;
}
