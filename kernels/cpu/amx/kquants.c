/* amx/kquants.c - Q4_K, Q5_K, Q6_K and IQ4_XS x Q8_K for several tokens at once with AMX-INT8.
 *
 * All four scale sub-blocks of 16 or 32 weights inside a 256-weight super-block, so an integer
 * tile product over a super-block needs the scale folded into the weight operand (A), and
 * q * scale is not a byte. Each weight becomes two bytes, lo and hi, and two TDPBxxD per 64 quants
 * accumulate C_lo and C_hi over the super-block; isum = C_hi << shift + C_lo is then exactly the
 * scalar reference's integer:
 *  - Q4_K / Q5_K: sc = 8 * hi + lo (hi, lo in 0..7), A bytes q * lo and q * hi (q <= 31, so
 *    <= 217), both unsigned (TDPBUSD), shift 3. The mins go through fp32 with exact int32 sums
 *    of m * bsum: f += da * (isum * d - dmin * sum_j m_j * S_t(j)).
 *  - Q6_K: p = (q - 32) * sc in [-4064, 4096]; IQ4_XS: p = kvalue * (ls - 32), |p| <= 4064. The
 *    int16 p splits into its low byte (unsigned, TDPBUSD) and p >> 8 (signed, in [-16, 16],
 *    TDPBSSD), shift 8. f += da * isum * d.
 * Loop order (per call): tokens in groups of up to TT 16-token tiles; per group, weight rows in
 * blocks of AMX_RB; per block, K in chunks of KC super-blocks. The tokens of the whole group are
 * packed once per (row block, chunk) into B tiles (a 16 x 16 dword transpose of their Q8_K quants,
 * 64 quants per tile); each 16-row tile of the block unpacks its chunk of A once (the costly
 * part: nibbles, high bits, scales) and serves every token tile of the group from it. The steps
 * (token tile, super-block) of a row tile run as one software pipeline (tile products of step j
 * beside the fp32 update of step j - 1), each token tile's 16 x 16 fp32 accumulator in registers
 * while its steps run. KC = 4 keeps the unpacked A (32 KB) in L1 while B streams from L2; weights
 * are prefetched one chunk ahead in each row, and the first chunk one row tile ahead. A ragged
 * last token tile costs its tile products and fp32 updates but no extra packing or unpacking; rows
 * past the end repeat the last row.
 * Results differ from the scalar reference only by fp32 rounding (integer sums exact per
 * super-block, then one fp32 update each) and do not depend on how rows or tokens are grouped.
 * Fewer than AMX_MIN_TOK tokens go to the avx512 column's kernel (cpuq__amx_small).
 * Threads: pure functions; the tile configuration is loaded on the calling thread. ~230 KB of
 * stack per call.
 */
#include "kernels/cpu/amx/amx.h"
#include "kernels/cpu/avx512/common.h"
#include "kernels/cpu/avx512/kernels.h"
#include "kernels/cpu/qblocks.h"

#include <stddef.h>

#define KC 4     /* super-blocks per K chunk: its A (32 KB) stays in L1 for all token tiles */
#define TT 8     /* 16-token tiles per group: one A unpack serves up to 128 tokens */
#define PF_SB KC /* prefetch weights this many super-blocks ahead in each row (the next chunk) */

enum kind { KQ4, KQ5, KQ6, KIQ4 };

/* the tokens of one group for one K chunk */
struct bpack {
    int32_t q[TT][KC][4][16][16]; /* [tile][s][64-quant part][k4][token]: B tiles */
    float da[TT][KC][16];
    int32_t bs2[TT][KC][4][16]; /* Q4_K/Q5_K: int16 pairs (S(2jp), S(2jp+1)), S = 32-quant sum */
};

/* 16 weight rows for one K chunk */
struct apack {
    uint8_t a[KC][2][4][16][64]; /* [s][lo, hi][64-quant part][row][byte] */
    float d[KC][16], dm[KC][16];
    int32_t mp[KC][16][4]; /* Q4_K/Q5_K mins as int16 pairs (m(2jp), m(2jp+1)) */
};

/* B tiles of the nt tokens at act (rest zero) for super-blocks [s0, s0 + ns) */
static void pack_tokens(const char *act, size_t ab, int nt, int64_t s0, int ns, int mins,
                        int32_t q[KC][4][16][16], float da[KC][16], int32_t bs2[KC][4][16])
{
    for (int s = 0; s < ns; s++) {
        const char *base = act + (size_t)(s0 + s) * sizeof(struct block_q8_K);
        for (int t = 0; t < 16; t++)
            da[s][t] = t < nt ? ((const struct block_q8_K *)(base + (size_t)t * ab))->d : 0.0f;
        for (int c = 0; c < 4; c++) {
            __m512i r[16];
            for (int t = 0; t < 16; t++)
                r[t] = t < nt ? _mm512_loadu_si512(base + (size_t)t * ab +
                                                   offsetof(struct block_q8_K, qs) + 64 * c)
                              : _mm512_setzero_si512();
            avx512_transpose16(r);
            for (int k = 0; k < 16; k++) _mm512_store_si512(q[s][c][k], r[k]);
        }
        if (!mins) continue;
        for (int t = 0; t < 16; t++) {
            int32_t sj[8] = {0};
            if (t < nt) {
                const int16_t *bs = ((const struct block_q8_K *)(base + (size_t)t * ab))->bsums;
                for (int j = 0; j < 8; j++) sj[j] = bs[2 * j] + bs[2 * j + 1];
            }
            for (int jp = 0; jp < 4; jp++)
                bs2[s][jp][t] =
                    (int32_t)(((uint32_t)sj[2 * jp] & 0xffff) | ((uint32_t)sj[2 * jp + 1] << 16));
        }
    }
}

/* vpshufb controls: from 16 bytes [lo scales 0..7 | hi scales 0..7] in every 128-bit lane, the
 * int16 vector [s(2c) x 16 | s(2c+1) x 16] for s = lo (sel 0..3) or hi (sel 4..7), c = sel % 4 */
static const uint8_t scale_sel[8][64] = {
#define L(b) b, 0x80, b, 0x80, b, 0x80, b, 0x80, b, 0x80, b, 0x80, b, 0x80, b, 0x80
#define S(e)                                                                                       \
    {                                                                                              \
        L(e), L(e), L(e + 1), L(e + 1)                                                             \
    }
    S(0),  S(2),  S(4), S(6), S(8),
    S(10), S(12), S(14)
#undef S
#undef L
};

/* vpermw indices: lanes 0..15 <- element 2j, lanes 16..31 <- element 2j + 1 */
static const int16_t idx_pair8[8][32] = {
#define H(v) v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v
#define P(j)                                                                                       \
    {                                                                                              \
        H(2 * j), H(2 * j + 1)                                                                     \
    }
    P(0), P(1), P(2), P(3), P(4),
    P(5), P(6), P(7)
#undef P
#undef H
};

/* int16 products p0 (quants 0..31 of a part) and p1 (32..63) -> low bytes (unsigned) and high
 * bytes (signed), each in quant order */
static inline __attribute__((always_inline)) void split_store(__m512i p0, __m512i p1, uint8_t *lo,
                                                              uint8_t *hi)
{
    const __m512i ff = _mm512_set1_epi16(0xff);
    const __m512i order = _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7); /* undo the per-lane pack */
    __m512i l = _mm512_packus_epi16(_mm512_and_si512(p0, ff), _mm512_and_si512(p1, ff));
    __m512i h = _mm512_packs_epi16(_mm512_srai_epi16(p0, 8), _mm512_srai_epi16(p1, 8));
    _mm512_store_si512(lo, _mm512_permutexvar_epi64(order, l));
    _mm512_store_si512(hi, _mm512_permutexvar_epi64(order, h));
}

static inline __attribute__((always_inline)) int block_bytes(int kind)
{
    return kind == KQ4   ? (int)sizeof(struct block_q4_K)
           : kind == KQ5 ? (int)sizeof(struct block_q5_K)
           : kind == KQ6 ? (int)sizeof(struct block_q6_K)
                         : (int)sizeof(struct block_iq4_xs);
}

/* row i, super-block s of the chunk: A bytes and the row's scales */
static inline __attribute__((always_inline)) void unpack_one(int kind, const uint8_t *blk, int i,
                                                             int s, struct apack *ap)
{
    const int bsz = block_bytes(kind);
    for (int o = 0; o < bsz; o += 64)
        _mm_prefetch((const char *)blk + PF_SB * bsz + o, _MM_HINT_T0);
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    if (kind == KQ4 || kind == KQ5) {
        const __m512i shift = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
        const __m512i one = _mm512_set1_epi8(1);
        /* Q4_K and Q5_K share d, dmin and scales at the start of the block */
        const struct block_q4_K *b = (const struct block_q4_K *)blk;
        const uint8_t *qs = kind == KQ5 ? ((const struct block_q5_K *)blk)->qs : b->qs;
        __m512i qh = _mm512_setzero_si512();
        if (kind == KQ5)
            qh = _mm512_broadcast_i64x4(
                _mm256_loadu_si256((const __m256i *)((const struct block_q5_K *)blk)->qh));
        uint64_t sc, mn;
        avx512_kscales(b->scales, &sc, &mn);
        const uint64_t lo = sc & 0x0707070707070707ull, hi = (sc >> 3) & 0x0707070707070707ull;
        const __m512i s8 = _mm512_broadcast_i32x4(_mm_set_epi64x((long long)hi, (long long)lo));
        _mm_store_si128((__m128i *)ap->mp[s][i],
                        _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)mn)));
        ap->d[s][i] = avx512_f16(b->d);
        ap->dm[s][i] = avx512_f16(b->dmin);
        for (int c = 0; c < 4; c++) {
            __m512i q = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(qs + 32 * c)));
            q = _mm512_and_si512(_mm512_srlv_epi16(q, shift), m4);
            if (kind == KQ5) { /* bit j of qh[l]: sub-block j = 2c (low half), 2c + 1 (high) */
                __m512i hs = _mm512_inserti64x4(_mm512_set1_epi16((short)(2 * c)),
                                                _mm256_set1_epi16((short)(2 * c + 1)), 1);
                __m512i hb = _mm512_and_si512(_mm512_srlv_epi16(qh, hs), one);
                q = _mm512_or_si512(q, _mm512_slli_epi16(hb, 4));
            }
            __m512i slo = _mm512_shuffle_epi8(s8, _mm512_loadu_si512(scale_sel[c]));
            __m512i shi = _mm512_shuffle_epi8(s8, _mm512_loadu_si512(scale_sel[c + 4]));
            _mm512_store_si512(ap->a[s][0][c][i], _mm512_mullo_epi16(q, slo));
            _mm512_store_si512(ap->a[s][1][c][i], _mm512_mullo_epi16(q, shi));
        }
    } else if (kind == KQ6) {
        const struct block_q6_K *b = (const struct block_q6_K *)blk;
        const __m512i m3 = _mm512_set1_epi8(3), k32 = _mm512_set1_epi16(32);
        const __m512i sh02 = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
        const __m512i sh46 = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1);
        const __m512i sc16 = _mm512_castsi256_si512(
            _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales)));
        __m512i wq[4];
        for (int h = 0; h < 2; h++) {
            __m512i ql = _mm512_loadu_si512(b->ql + 64 * h);
            __m512i qh =
                _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b->qh + 32 * h)));
            __m512i h0 = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh02), m3), 4);
            __m512i h1 = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh46), m3), 4);
            wq[2 * h] = _mm512_or_si512(_mm512_and_si512(ql, m4), h0);
            wq[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4), h1);
        }
        ap->d[s][i] = avx512_f16(b->d);
        for (int c = 0; c < 4; c++) { /* part c: sub-blocks 4c .. 4c + 3 of 16 quants */
            __m512i q0 = _mm512_cvtepu8_epi16(_mm512_castsi512_si256(wq[c]));
            __m512i q1 = _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(wq[c], 1));
            __m512i s0 = _mm512_permutexvar_epi16(_mm512_loadu_si512(idx_pair8[2 * c]), sc16);
            __m512i s1 = _mm512_permutexvar_epi16(_mm512_loadu_si512(idx_pair8[2 * c + 1]), sc16);
            split_store(_mm512_mullo_epi16(_mm512_sub_epi16(q0, k32), s0),
                        _mm512_mullo_epi16(_mm512_sub_epi16(q1, k32), s1), ap->a[s][0][c][i],
                        ap->a[s][1][c][i]);
        }
    } else { /* IQ4_XS */
        const struct block_iq4_xs *b = (const struct block_iq4_xs *)blk;
        const __m512i table =
            _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)cpuq_kvalues_iq4nl));
        /* per 128-bit lane: low nibbles, high nibbles, low, high */
        const __m512i shift = _mm512_setr_epi64(0, 0, 0x0004000400040004ll, 0x0004000400040004ll, 0,
                                                0, 0x0004000400040004ll, 0x0004000400040004ll);
        ap->d[s][i] = avx512_f16(b->d);
        for (int c = 0; c < 4; c++) { /* part c: sub-blocks 2c, 2c + 1 of 32 quants */
            int sc[2];
            for (int h = 0; h < 2; h++) {
                const int ib = 2 * c + h;
                sc[h] = (((b->scales_l[ib / 2] >> (4 * (ib % 2))) & 0xf) |
                         (((b->scales_h >> (2 * ib)) & 3) << 4)) -
                        32;
            }
            __m512i raw =
                _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(b->qs + 32 * c)));
            raw = _mm512_shuffle_i64x2(raw, raw, 0x50); /* 128-bit lanes 0, 0, 1, 1 */
            __m512i kv =
                _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srlv_epi16(raw, shift), m4));
            __m512i v0 = _mm512_cvtepi8_epi16(_mm512_castsi512_si256(kv));
            __m512i v1 = _mm512_cvtepi8_epi16(_mm512_extracti64x4_epi64(kv, 1));
            split_store(_mm512_mullo_epi16(v0, _mm512_set1_epi16((short)sc[0])),
                        _mm512_mullo_epi16(v1, _mm512_set1_epi16((short)sc[1])), ap->a[s][0][c][i],
                        ap->a[s][1][c][i]);
        }
    }
}

/* every token tile of the group against the unpacked chunk of 16 rows:
 * acc[i][16 * tt + t] += rows x tokens. One software pipeline over the steps (tt, s): the tile
 * products of step j run beside the fp32 update of step j - 1, across token tiles too; the 16 x 16
 * accumulator of a token tile lives in registers from its first step's update to its last's. */
static inline __attribute__((always_inline)) void tile_group(int kind, const struct apack *ap,
                                                             const struct bpack *bp, int ntt,
                                                             int ns, float *acc, int ldacc)
{
    _Alignas(64) int32_t clo[2][16][16], chi[2][16][16]; /* [j & 1][row][token] */
    __m512 f[16];
    const int nj = ntt * ns;
    for (int j = 0; j <= nj; j++) {
        if (j < nj) {
            const int tt = j / ns, s = j % ns;
            _tile_zero(0);
            _tile_zero(3);
            for (int c = 0; c < 4; c++) {
                _tile_loadd(2, bp->q[tt][s][c], 64);
                _tile_loadd(1, ap->a[s][0][c], 64);
                _tile_dpbusd(0, 1, 2);
                _tile_loadd(4, ap->a[s][1][c], 64);
                if (kind == KQ4 || kind == KQ5) _tile_dpbusd(3, 4, 2);
                else _tile_dpbssd(3, 4, 2);
            }
            _tile_stored(0, clo[j & 1], 64);
            _tile_stored(3, chi[j & 1], 64);
        }
        if (j >= 1) {
            const int p = j - 1, tt = p / ns, s = p % ns;
            float *at = acc + 16 * tt;
            if (s == 0)
                for (int i = 0; i < 16; i++) f[i] = _mm512_load_ps(at + i * ldacc);
            const __m512 dav = _mm512_load_ps(bp->da[tt][s]);
            for (int i = 0; i < 16; i++) {
                __m512i is = _mm512_add_epi32(_mm512_slli_epi32(_mm512_load_si512(chi[p & 1][i]),
                                                                kind == KQ4 || kind == KQ5 ? 3 : 8),
                                              _mm512_load_si512(clo[p & 1][i]));
                __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(is), _mm512_set1_ps(ap->d[s][i]));
                if (kind == KQ4 || kind == KQ5) { /* sum_j m[i][j] * S_t(j), exact in int32 */
                    __m512i mi = _mm512_setzero_si512();
                    for (int jp = 0; jp < 4; jp++)
                        mi = _mm512_dpwssd_epi32(mi, _mm512_load_si512(bp->bs2[tt][s][jp]),
                                                 _mm512_set1_epi32(ap->mp[s][i][jp]));
                    v = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(mi), _mm512_set1_ps(ap->dm[s][i]), v);
                }
                f[i] = _mm512_fmadd_ps(v, dav, f[i]);
            }
            if (s == ns - 1)
                for (int i = 0; i < 16; i++) _mm512_store_ps(at + i * ldacc, f[i]);
        }
    }
}

static inline __attribute__((always_inline)) void mul_mat_k(int kind, int64_t n, const void *w,
                                                            size_t w_row_bytes, int64_t nrows,
                                                            const void *act, size_t ab,
                                                            int64_t ntok, float *y, int64_t ldy)
{
    const int bsz = block_bytes(kind), mins = kind == KQ4 || kind == KQ5;
    amx_tiles_config(64);
    const int64_t nsb = n / QK_K;
    _Alignas(64) struct bpack bp;
    _Alignas(64) struct apack ap;
    _Alignas(64) float acc[AMX_RB][TT * 16];

    for (int64_t g0 = 0; g0 < ntok; g0 += TT * 16) {
        const int ng = ntok - g0 < TT * 16 ? (int)(ntok - g0) : TT * 16;
        const int ntt = (ng + 15) / 16;
        const char *ag = (const char *)act + (size_t)g0 * ab;
        for (int64_t r0 = 0; r0 < nrows; r0 += AMX_RB) {
            const int nr = nrows - r0 < AMX_RB ? (int)(nrows - r0) : AMX_RB;
            for (int r = 0; r < ((nr + 15) & ~15); r++)
                memset(acc[r], 0, sizeof(float) * 16 * (size_t)ntt);
            for (int64_t s0 = 0; s0 < nsb; s0 += KC) {
                const int ns = nsb - s0 < KC ? (int)(nsb - s0) : KC;
                for (int tt = 0; tt < ntt; tt++) {
                    const int nt = ng - 16 * tt < 16 ? ng - 16 * tt : 16;
                    pack_tokens(ag + (size_t)(16 * tt) * ab, ab, nt, s0, ns, mins, bp.q[tt],
                                bp.da[tt], bp.bs2[tt]);
                }
                for (int rt = 0; rt < nr; rt += 16) {
                    for (int i = 0; i < 16; i++) {
                        const int ri = rt + i < nr ? rt + i : nr - 1; /* pad with the last row */
                        const uint8_t *row =
                            (const uint8_t *)w + (size_t)(r0 + ri) * w_row_bytes + (size_t)s0 * bsz;
                        for (int s = 0; s < ns; s++)
                            unpack_one(kind, row + (size_t)s * bsz, i, s, &ap);
                        /* the first chunk of the next row tile (later chunks: PF_SB) */
                        if (s0 == 0 && rt + 16 + i < nr)
                            for (int o = 0; o < ns * bsz; o += 64)
                                _mm_prefetch((const char *)w +
                                                 (size_t)(r0 + rt + 16 + i) * w_row_bytes + o,
                                             _MM_HINT_T0);
                    }
                    tile_group(kind, &ap, &bp, ntt, ns, acc[rt], TT * 16);
                }
            }
            for (int r = 0; r < nr; r++)
                for (int t = 0; t < ng; t++) y[(g0 + t) * ldy + r0 + r] = acc[r][t];
        }
    }
}

#define AMX_KERNEL(name, kind, type)                                                               \
    void cpuq_mul_mat_##name##_amx(int64_t n, const void *w, size_t w_row_bytes, int64_t nrows,    \
                                   const void *act, size_t act_row_bytes, int64_t ntok, float *y,  \
                                   int64_t ldy)                                                    \
    {                                                                                              \
        if (ntok < AMX_MIN_TOK)                                                                    \
            cpuq__amx_small[type](n, w, w_row_bytes, nrows, act, act_row_bytes, ntok, y, ldy);     \
        else mul_mat_k(kind, n, w, w_row_bytes, nrows, act, act_row_bytes, ntok, y, ldy);          \
    }

AMX_KERNEL(q4_k_q8_k, KQ4, QTYPE_Q4_K)
AMX_KERNEL(q5_k_q8_k, KQ5, QTYPE_Q5_K)
AMX_KERNEL(q6_k_q8_k, KQ6, QTYPE_Q6_K)
AMX_KERNEL(iq4_xs_q8_k, KIQ4, QTYPE_IQ4_XS)
