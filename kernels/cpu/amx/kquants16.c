/* amx/kquants16.c - the first AMX kernel for Q4_K and Q5_K x Q8_K, one 16-token tile at a time
 * (kept as a fallback for amx/kquants.c: amx/fill.c can point Q4_K/Q5_K back here).
 * (Written for Q4_K below; Q5_K is the same with q = nibble + 16 * (its qh bit), q * 7 <= 217.)
 *
 * The obstacle: Q4_K scales every 32-weight sub-block (6-bit sc), so an integer tile product
 * spanning sub-blocks needs q * sc as the weight operand, up to 15 * 63 = 945: not a byte. The
 * trick: split sc = 8 * hi + lo (hi, lo in 0..7). Both q * hi and q * lo fit in a u8 (<= 105), so
 * two TDPBUSD per 64 quants, one with A = q * lo and one with A = q * hi, accumulate exactly
 *   C_lo[r][t] = sum_k (q * lo)[r][k] * a[t][k],  C_hi likewise,  over a whole super-block,
 * and isum = 8 * C_hi + C_lo = sum_j sc_j * sum_{k in j} q * a, the scalar reference's integer.
 * (vpmullw makes the byte products: both bytes of a 16-bit lane share their sub-block's scale and
 * a product never carries into the next byte.) Per super-block, in fp32:
 *   f[r][t] += da[t] * (isum * d[r] - dmin[r] * sum_j m[r][j] * S_t(j))
 * where S_t(j) is the sum of token t's quants in sub-block j (from Q8_K's bsums) and the min
 * sum is exact in int32 too (vpdpwssd of int16 pairs).
 * f lives in 16 zmm registers (one per weight row, 16 token lanes) for a 16-row tile.
 * Tiles: A = 16 weight rows x 64 bytes (K = 64), B = the tokens' Q8_K quants in AMX's VNNI layout
 * (16 rows of K/4 x 16 tokens x 4 bytes), C = 16 x 16 int32. Tokens are packed once per (token
 * tile, row block, K chunk of up to 8192 quants, i.e. usually once per call) and reused by every
 * 16-row tile of the row block; A is unpacked once per (row tile, super-block) and serves all 16
 * tokens. A row tile streams its 16 rows front to back with software prefetch (without it the
 * kernel was DRAM-latency-bound inside the MoE op). The loop over super-blocks is software
 * pipelined (tiles of s, unpack of s + 1, fp32 update of s - 1) so no load waits on a store just
 * issued (vector stores -> tile loads, tile stores -> vector loads).
 * Results differ from the scalar reference only by fp32 rounding, and do not depend on how rows
 * or tokens are grouped. Fewer than AMX_MIN_TOK tokens go to the AVX-512/AVX2 kernels.
 * Threads: pure function; the tile configuration is loaded on the calling thread.
 */
#include "kernels/cpu/amx/amx.h"
#include "kernels/cpu/avx512/common.h"
#include "kernels/cpu/avx512/kernels.h"
#include "kernels/cpu/qblocks.h"

#include <stddef.h>

#define KC 32    /* super-blocks per packed K chunk (8192 quants: a whole expert row) */
#define PF_SB 16 /* prefetch weights this many super-blocks (2.3 KB) ahead in each row */

/* B tiles of nt tokens (rest zero) for super-blocks [s0, s0 + ns): bp[s][j][k4][t] dwords, gathered
 * 16 tokens at a time; da[s][t]; bs2[s][jp][t] = the int16 pair (S(2jp), S(2jp+1)) where
 * S(j) = bsums[2j] + bsums[2j+1] is the sum of sub-block j's 32 quants (|S| <= 4064) */
static void pack_tokens(const char *act, size_t ab, int nt, int64_t s0, int ns,
                        int32_t bp[KC][8][8][16], float da[KC][16], int32_t bs2[KC][4][16])
{
    const __mmask16 live = (__mmask16)((1u << nt) - 1);
    const __m512i off =
        _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                           _mm512_set1_epi32((int)ab));
    for (int s = 0; s < ns; s++) {
        const char *base = act + (size_t)(s0 + s) * sizeof(struct block_q8_K);
        const char *qs = base + offsetof(struct block_q8_K, qs);
        for (int d = 0; d < 64; d++)
            _mm512_store_si512(
                bp[s][d >> 3][d & 7],
                _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live, off, qs + 4 * d, 1));
        __m512 dav = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live, off,
                                              base + offsetof(struct block_q8_K, d), 1);
        _mm512_store_ps(da[s], dav);
        __m512i sum[8];
        for (int j = 0; j < 8; j++) {
            /* bsums[2j], bsums[2j+1] as one dword: add the two int16 halves */
            __m512i bb =
                _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live, off,
                                            base + offsetof(struct block_q8_K, bsums) + 4 * j, 1);
            sum[j] = _mm512_add_epi32(_mm512_srai_epi32(_mm512_slli_epi32(bb, 16), 16),
                                      _mm512_srai_epi32(bb, 16));
        }
        for (int jp = 0; jp < 4; jp++)
            _mm512_store_si512(
                bs2[s][jp],
                _mm512_or_si512(_mm512_and_si512(sum[2 * jp], _mm512_set1_epi32(0xffff)),
                                _mm512_slli_epi32(sum[2 * jp + 1], 16)));
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

/* unpack super-block s of 16 rows: A bytes q * lo and q * hi per 64 quants, d, dmin, and the
 * mins as int16 pairs (m(2jp), m(2jp+1)) */
static inline __attribute__((always_inline)) void unpack_rows(const uint8_t *const rows[16], int s,
                                                              int q5, uint8_t alo[4][16][64],
                                                              uint8_t ahi[4][16][64], float dw[16],
                                                              float dmin[16], int32_t mp[16][4])
{
    const __m512i shift = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
    const __m512i m4 = _mm512_set1_epi8(0x0f), one = _mm512_set1_epi8(1);
    /* Q4_K and Q5_K share d, dmin and scales at the start of the block */
    const int bsz = q5 ? (int)sizeof(struct block_q5_K) : (int)sizeof(struct block_q4_K);
    const int qs_off =
        q5 ? (int)offsetof(struct block_q5_K, qs) : (int)offsetof(struct block_q4_K, qs);
    for (int i = 0; i < 16; i++) {
        const struct block_q4_K *b = (const struct block_q4_K *)(rows[i] + (size_t)s * bsz);
        const uint8_t *qs = (const uint8_t *)b + qs_off;
        for (int o = 0; o < bsz; o += 64)
            _mm_prefetch((const char *)b + PF_SB * bsz + o, _MM_HINT_T0);
        __m512i qh = _mm512_setzero_si512();
        if (q5)
            qh = _mm512_broadcast_i64x4(
                _mm256_loadu_si256((const __m256i *)((const struct block_q5_K *)b)->qh));
        uint64_t sc, mn;
        avx512_kscales(b->scales, &sc, &mn);
        const uint64_t lo = sc & 0x0707070707070707ull, hi = (sc >> 3) & 0x0707070707070707ull;
        const __m512i s8 = _mm512_broadcast_i32x4(_mm_set_epi64x((long long)hi, (long long)lo));
        _mm_store_si128((__m128i *)mp[i], _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)mn)));
        dw[i] = avx512_f16(b->d);
        dmin[i] = avx512_f16(b->dmin);
        for (int c = 0; c < 4; c++) {
            __m512i q = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(qs + 32 * c)));
            q = _mm512_and_si512(_mm512_srlv_epi16(q, shift), m4);
            if (q5) { /* bit j of qh[l]: sub-block j = 2c (low half), 2c + 1 (high half) */
                __m512i hs = _mm512_inserti64x4(_mm512_set1_epi16((short)(2 * c)),
                                                _mm256_set1_epi16((short)(2 * c + 1)), 1);
                __m512i hb = _mm512_and_si512(_mm512_srlv_epi16(qh, hs), one);
                q = _mm512_or_si512(q, _mm512_slli_epi16(hb, 4));
            }
            __m512i slo = _mm512_shuffle_epi8(s8, _mm512_loadu_si512(scale_sel[c]));
            __m512i shi = _mm512_shuffle_epi8(s8, _mm512_loadu_si512(scale_sel[c + 4]));
            _mm512_store_si512(alo[c][i], _mm512_mullo_epi16(q, slo));
            _mm512_store_si512(ahi[c][i], _mm512_mullo_epi16(q, shi));
        }
    }
}

static inline __attribute__((always_inline)) void
mul_mat_q45k(int q5, int64_t n, const void *w, size_t w_row_bytes, int64_t nrows, const void *act,
             size_t act_row_bytes, int64_t ntok, float *y, int64_t ldy)
{
    const int bsz = q5 ? (int)sizeof(struct block_q5_K) : (int)sizeof(struct block_q4_K);
    amx_tiles_config(64);
    const int64_t nsb = n / QK_K;
    _Alignas(64) int32_t bp[KC][8][8][16];
    _Alignas(64) float da[KC][16];
    _Alignas(64) int32_t bs2[KC][4][16];
    _Alignas(64) uint8_t alo[2][4][16][64], ahi[2][4][16][64]; /* [s&1][c][row][64 quants] */
    _Alignas(64) int32_t clo[2][16][16], chi[2][16][16];       /* [s&1][row][token] */
    _Alignas(64) float dw[3][16], dmn[3][16];
    _Alignas(64) int32_t mp[3][16][4];
    _Alignas(64) float acc[AMX_RB][16];

    for (int64_t t0 = 0; t0 < ntok; t0 += 16) {
        const int nt = ntok - t0 < 16 ? (int)(ntok - t0) : 16;
        const char *at = (const char *)act + (size_t)t0 * act_row_bytes;
        for (int64_t r0 = 0; r0 < nrows; r0 += AMX_RB) {
            const int nr = nrows - r0 < AMX_RB ? (int)(nrows - r0) : AMX_RB;
            memset(acc, 0, sizeof acc);
            for (int64_t s0 = 0; s0 < nsb; s0 += KC) {
                const int ns = nsb - s0 < KC ? (int)(nsb - s0) : KC;
                pack_tokens(at, act_row_bytes, nt, s0, ns, bp, da, bs2);
                for (int rt = 0; rt < nr; rt += 16) {
                    const uint8_t *rows[16];
                    for (int i = 0; i < 16; i++) {
                        int ri = rt + i < nr ? rt + i : nr - 1; /* pad with the last row */
                        rows[i] =
                            (const uint8_t *)w + (size_t)(r0 + ri) * w_row_bytes + (size_t)s0 * bsz;
                    }
                    __m512 f[16];
                    for (int i = 0; i < 16; i++) f[i] = _mm512_load_ps(acc[rt + i]);
                    unpack_rows(rows, 0, q5, alo[0], ahi[0], dw[0], dmn[0], mp[0]);
                    for (int s = 0; s <= ns; s++) {
                        if (s < ns) {
                            _tile_zero(0);
                            _tile_zero(3);
                            for (int c = 0; c < 4; c++) {
                                _tile_loadd(2, bp[s][2 * c], 64); /* K 64c .. 64c + 63 */
                                _tile_loadd(1, alo[s & 1][c][0], 64);
                                _tile_dpbusd(0, 1, 2);
                                _tile_loadd(4, ahi[s & 1][c][0], 64);
                                _tile_dpbusd(3, 4, 2);
                            }
                            _tile_stored(0, clo[s & 1], 64);
                            _tile_stored(3, chi[s & 1], 64);
                        }
                        if (s + 1 < ns)
                            unpack_rows(rows, s + 1, q5, alo[(s + 1) & 1], ahi[(s + 1) & 1],
                                        dw[(s + 1) % 3], dmn[(s + 1) % 3], mp[(s + 1) % 3]);
                        if (s >= 1) {
                            const int p = s - 1;
                            const __m512 dav = _mm512_load_ps(da[p]);
                            const float *d = dw[p % 3], *dm = dmn[p % 3];
                            int32_t(*m)[4] = mp[p % 3];
                            for (int i = 0; i < 16; i++) {
                                __m512i is = _mm512_add_epi32(
                                    _mm512_slli_epi32(_mm512_load_si512(chi[p & 1][i]), 3),
                                    _mm512_load_si512(clo[p & 1][i]));
                                /* sum_j m[i][j] * S_t(j), exact in int32 */
                                __m512i mi = _mm512_setzero_si512();
                                for (int jp = 0; jp < 4; jp++)
                                    mi = _mm512_dpwssd_epi32(mi, _mm512_load_si512(bs2[p][jp]),
                                                             _mm512_set1_epi32(m[i][jp]));
                                __m512 v =
                                    _mm512_mul_ps(_mm512_cvtepi32_ps(is), _mm512_set1_ps(d[i]));
                                v = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(mi), _mm512_set1_ps(dm[i]),
                                                     v);
                                f[i] = _mm512_fmadd_ps(v, dav, f[i]);
                            }
                        }
                    }
                    for (int i = 0; i < 16; i++) _mm512_store_ps(acc[rt + i], f[i]);
                }
            }
            for (int r = 0; r < nr; r++)
                for (int t = 0; t < nt; t++) y[(t0 + t) * ldy + r0 + r] = acc[r][t];
        }
    }
}

void cpuq_mul_mat_q4_k_q8_k_amx16(int64_t n, const void *w, size_t w_row_bytes, int64_t nrows,
                                  const void *act, size_t act_row_bytes, int64_t ntok, float *y,
                                  int64_t ldy)
{
    if (ntok < AMX_MIN_TOK)
        cpuq_mul_mat_q4_k_q8_k_mixed(n, w, w_row_bytes, nrows, act, act_row_bytes, ntok, y, ldy);
    else mul_mat_q45k(0, n, w, w_row_bytes, nrows, act, act_row_bytes, ntok, y, ldy);
}

void cpuq_mul_mat_q5_k_q8_k_amx16(int64_t n, const void *w, size_t w_row_bytes, int64_t nrows,
                                  const void *act, size_t act_row_bytes, int64_t ntok, float *y,
                                  int64_t ldy)
{
    if (ntok < AMX_MIN_TOK)
        cpuq_mul_mat_q5_k_q8_k_mixed(n, w, w_row_bytes, nrows, act, act_row_bytes, ntok, y, ldy);
    else mul_mat_q45k(1, n, w, w_row_bytes, nrows, act, act_row_bytes, ntok, y, ldy);
}
