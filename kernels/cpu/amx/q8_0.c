/* amx/q8_0.c - Q8_0 x Q8_0 for several tokens at once with AMX-INT8.
 *
 * Both operands carry an fp16 scale per 32 quants, so an integer tile product cannot span two
 * blocks: one TDPBSSD (signed x signed) per block, K = 32 bytes, C = 16 rows x 16 tokens int32
 * (exactly the reference's per-block isum), then f += isum * (dw * da) in fp32, per block. The
 * fp32 update (load, convert, multiply, fma per row per block) is the limiter, not the tiles.
 * A needs no unpacking: the tile loads 16 weight rows' 32 quant bytes straight from the matrix
 * (stride = row bytes); a last row tile of fewer than 16 rows is copied into a stage (padded with
 * its last row) first, so no load runs past the matrix. Tokens: groups of up to TT 16-token tiles;
 * per (row block, K chunk of KB blocks) the whole group is packed once into B tiles (a 16 x 16
 * dword transpose of two blocks' quants per token) and each 16-row tile reads its A from L1/L2 for
 * every token tile (weights prefetched one chunk ahead in each row, the first chunk one row tile
 * ahead). Even and odd blocks use tile sets (0, 1, 2) and (3, 4, 5) so consecutive products
 * do not wait on each other; the fp32 update of block b - 1 runs beside the product of block b.
 * Results differ from the scalar reference only by fp32 rounding (one fma per block instead of
 * a multiply and an add). Fewer than AMX_MIN_TOK tokens go to the avx512 column's kernel
 * (cpuq__amx_small).
 * Threads: pure function; the tile configuration is loaded on the calling thread. ~200 KB of
 * stack per call.
 */
#include "kernels/cpu/amx/amx.h"
#include "kernels/cpu/avx512/common.h"
#include "kernels/cpu/avx512/kernels.h"
#include "kernels/cpu/qblocks.h"

#include <stddef.h>

#define KB 32 /* Q8_0 blocks per K chunk (1024 quants) */
#define TT 8  /* 16-token tiles per group */
#define BSZ ((int)sizeof(struct block_q8_0))

struct bpack8 {
    int32_t q[TT][KB][8][16]; /* [tile][block][k4][token] */
    float da[TT][KB][16];
};

/* B tiles of the nt tokens at act (rest zero) for blocks [b0, b0 + nb) */
static void pack_tokens(const char *act, size_t ab, int nt, int64_t b0, int nb,
                        int32_t q[KB][8][16], float da[KB][16])
{
    for (int b = 0; b < nb; b += 2) {
        const char *base = act + (size_t)(b0 + b) * BSZ;
        const int two = b + 1 < nb;
        __m512i r[16];
        for (int t = 0; t < 16; t++) {
            if (t >= nt) {
                r[t] = _mm512_setzero_si512();
                da[b][t] = 0.0f;
                if (two) da[b + 1][t] = 0.0f;
                continue;
            }
            const struct block_q8_0 *x = (const struct block_q8_0 *)(base + (size_t)t * ab);
            __m256i lo = _mm256_loadu_si256((const __m256i *)x[0].qs);
            __m256i hi =
                two ? _mm256_loadu_si256((const __m256i *)x[1].qs) : _mm256_setzero_si256();
            r[t] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            da[b][t] = avx512_f16(x[0].d);
            if (two) da[b + 1][t] = avx512_f16(x[1].d);
        }
        avx512_transpose16(r);
        for (int k = 0; k < 8; k++) _mm512_store_si512(q[b][k], r[k]);
        if (two)
            for (int k = 0; k < 8; k++) _mm512_store_si512(q[b + 1][k], r[8 + k]);
    }
}

/* one token tile against 16 rows for nb blocks: A of block b at a + b * BSZ (row stride as) */
static inline __attribute__((always_inline)) void
tile_chunk(const char *a, size_t as, const float (*dw)[KB], const int32_t (*bq)[8][16],
           const float (*da)[16], int nb, float *acc, int ldacc)
{
    _Alignas(64) int32_t cb[2][16][16]; /* [b & 1][row][token] */
    __m512 f[16];
    for (int i = 0; i < 16; i++) f[i] = _mm512_load_ps(acc + i * ldacc);
    for (int b = 0; b <= nb; b++) {
        if (b < nb) {
            if (b & 1) {
                _tile_loadd(4, a + (size_t)b * BSZ, (long)as);
                _tile_loadd(5, bq[b], 64);
                _tile_zero(3);
                _tile_dpbssd(3, 4, 5);
                _tile_stored(3, cb[1], 64);
            } else {
                _tile_loadd(1, a + (size_t)b * BSZ, (long)as);
                _tile_loadd(2, bq[b], 64);
                _tile_zero(0);
                _tile_dpbssd(0, 1, 2);
                _tile_stored(0, cb[0], 64);
            }
        }
        if (b >= 1) {
            const int p = b - 1;
            const __m512 dav = _mm512_load_ps(da[p]);
            for (int i = 0; i < 16; i++)
                f[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(cb[p & 1][i])),
                                       _mm512_mul_ps(_mm512_set1_ps(dw[i][p]), dav), f[i]);
        }
    }
    for (int i = 0; i < 16; i++) _mm512_store_ps(acc + i * ldacc, f[i]);
}

static void mul_mat_q8_0(int64_t n, const void *w, size_t wrb, int64_t nrows, const void *act,
                         size_t ab, int64_t ntok, float *y, int64_t ldy)
{
    amx_tiles_config(32);
    const int64_t nblk = n / QK8_0;
    _Alignas(64) struct bpack8 bp;
    _Alignas(64) float acc[AMX_RB][TT * 16];
    _Alignas(64) float dw[16][KB];
    _Alignas(64) char stage[16][KB * BSZ];
    const __m512i off =
        _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                           _mm512_set1_epi32(BSZ));

    for (int64_t g0 = 0; g0 < ntok; g0 += TT * 16) {
        const int ng = ntok - g0 < TT * 16 ? (int)(ntok - g0) : TT * 16;
        const int ntt = (ng + 15) / 16;
        const char *ag = (const char *)act + (size_t)g0 * ab;
        for (int64_t r0 = 0; r0 < nrows; r0 += AMX_RB) {
            const int nr = nrows - r0 < AMX_RB ? (int)(nrows - r0) : AMX_RB;
            for (int r = 0; r < ((nr + 15) & ~15); r++)
                memset(acc[r], 0, sizeof(float) * 16 * (size_t)ntt);
            for (int64_t b0 = 0; b0 < nblk; b0 += KB) {
                const int nb = nblk - b0 < KB ? (int)(nblk - b0) : KB;
                for (int tt = 0; tt < ntt; tt++) {
                    const int nt = ng - 16 * tt < 16 ? ng - 16 * tt : 16;
                    pack_tokens(ag + (size_t)(16 * tt) * ab, ab, nt, b0, nb, bp.q[tt], bp.da[tt]);
                }
                for (int rt = 0; rt < nr; rt += 16) {
                    const char *rows = (const char *)w + (size_t)(r0 + rt) * wrb + (size_t)b0 * BSZ;
                    const char *a = rows;
                    size_t as = wrb;
                    if (nr - rt < 16) { /* stage the last rows, padded with the last one */
                        for (int i = 0; i < 16; i++) {
                            const int ri = i < nr - rt ? i : nr - rt - 1;
                            memcpy(stage[i], rows + (size_t)ri * wrb, (size_t)nb * BSZ);
                        }
                        a = stage[0];
                        as = sizeof stage[0];
                    }
                    for (int i = 0; i < 16; i++) { /* the rows' scales; prefetch their next chunk */
                        const char *ri = a + (size_t)i * as;
                        for (int j = 0; j < KB; j += 16) {
                            const __mmask16 live = nb - j >= 16 ? 0xffff
                                                   : nb > j     ? (__mmask16)((1u << (nb - j)) - 1)
                                                                : 0;
                            __m512i h = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live,
                                                                    off, ri + (size_t)j * BSZ, 1);
                            _mm512_store_ps(dw[i] + j, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(h)));
                        }
                        if (a == rows && b0 + KB < nblk)
                            for (int o = 0; o < KB * BSZ; o += 64)
                                _mm_prefetch(ri + KB * BSZ + o, _MM_HINT_T0);
                        if (b0 == 0 && rt + 16 + i < nr) /* the next row tile's first chunk */
                            for (int o = 0; o < nb * BSZ; o += 64)
                                _mm_prefetch(rows + (size_t)(16 + i) * wrb + o, _MM_HINT_T0);
                    }
                    for (int tt = 0; tt < ntt; tt++)
                        tile_chunk(a + offsetof(struct block_q8_0, qs), as, (const float(*)[KB])dw,
                                   (const int32_t(*)[8][16])bp.q[tt], (const float(*)[16])bp.da[tt],
                                   nb, &acc[rt][16 * tt], TT * 16);
                }
            }
            for (int r = 0; r < nr; r++)
                for (int t = 0; t < ng; t++) y[(g0 + t) * ldy + r0 + r] = acc[r][t];
        }
    }
}

void cpuq_mul_mat_q8_0_q8_0_amx(int64_t n, const void *w, size_t w_row_bytes, int64_t nrows,
                                const void *act, size_t act_row_bytes, int64_t ntok, float *y,
                                int64_t ldy)
{
    if (ntok < AMX_MIN_TOK)
        cpuq__amx_small[QTYPE_Q8_0](n, w, w_row_bytes, nrows, act, act_row_bytes, ntok, y, ldy);
    else mul_mat_q8_0(n, w, w_row_bytes, nrows, act, act_row_bytes, ntok, y, ldy);
}
