/* ref/iquants.c - scalar reference for ggml's grid i-quants IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS,
 * IQ3_S, IQ1_S and IQ1_M (256-element super-blocks, activation format Q8_K).
 *
 * Every group of 8 values (IQ3: each half of 8 values) is one entry of a fixed grid
 * (ref/iq_grids.h) times a sub-block scale. IQ2/IQ3 grids hold magnitudes and signs are stored
 * separately: 7 bits per 8 values with the 8th implied by even parity (XXS, XS) or 8 explicit
 * bits (IQ2_S, IQ3_S). IQ1 grids hold -1/0/+1 and every value is shifted by +-1/8 (one sign bit per
 * 32 values for IQ1_S, per 8 for IQ1_M). Decoded value, with d the f16 super-block scale and s the
 * stored sub-block scale:
 *   IQ2_XXS/XS/S  d * (0.5 + s) / 4 * g      IQ3_XXS  d * (0.5 + s) / 2 * g
 *   IQ3_S         d * (1 + 2s) * g            IQ1_S/M  d * (1 + 2s) * (g +- 1/8)
 * Bit layouts: the block structs in qblocks.h and the decoders below.
 *
 * Dequantizers and dots keep ggml's float operation order (bit-exact dequantization; dots are
 * integer sums per sub-block, f32 across super-blocks, scaled at the end like ggml's).
 *
 * The quantizers are NOT ggml's (which searches with an importance matrix): a simple valid
 * encoder. Per sub-block it tries three scales, picking for every group the nearest grid point
 * by brute force (signs from the input; for parity signs the cheapest element is flipped), and
 * refits the best by least squares; then the sub-block scales are quantized against one f16
 * scale, the groups re-picked with their final scales, and the f16 scale refit by least squares.
 * Meant for synthetic models and tests, not for production quantization.
 *
 * Every grid index is masked to its table's size when decoded, so any bytes are safe to decode.
 * Threads: pure functions, except that the first quantizer call builds the encoder's read-only
 * pattern maps under pthread_once.
 */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "kernels/cpu/fpconv.h"
#include "kernels/cpu/ref/iq_grids.h"
#include "kernels/cpu/ref/ref.h"

#define F16(h) fp_f16_to_f32(h)
#define TO_F16(f) fp_f32_to_f16(f)

static inline uint32_t rd32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* ---- decoding helpers */

/* dst[j] = +-(dl * magnitude j of e), negative where bit j of signs is set */
static inline void put8(float *dst, float dl, uint64_t e, unsigned signs)
{
    for (int j = 0; j < 8; j++) {
        const float v = dl * (float)(uint8_t)(e >> (8 * j));
        dst[j] = (signs >> j) & 1 ? -v : v;
    }
}

/* sum_j +-magnitude j of e times q8[j] */
static inline int dot8(uint64_t e, unsigned signs, const int8_t *q8)
{
    int s = 0;
    for (int j = 0; j < 8; j++) {
        const int v = (uint8_t)(e >> (8 * j)) * q8[j];
        s += (signs >> j) & 1 ? -v : v;
    }
    return s;
}

/* two 4-value IQ3 grid entries as one 8-value entry */
static inline uint64_t join4(uint32_t lo, uint32_t hi) { return lo | (uint64_t)hi << 32; }

/* IQ1: dst[j] = dl * (value j of e + delta) */
static inline void put8_iq1(float *dst, float dl, uint64_t e, float delta)
{
    for (int j = 0; j < 8; j++) dst[j] = dl * ((float)(int8_t)(e >> (8 * j)) + delta);
}

static inline int dot8_iq1(uint64_t e, const int8_t *q8)
{
    int s = 0;
    for (int j = 0; j < 8; j++) s += (int8_t)(e >> (8 * j)) * q8[j];
    return s;
}

/* IQ2_S group l (0..3) of sub-block ib: 10-bit grid index */
static inline int iq2s_index(const struct block_iq2_s *b, int ib, int l)
{
    return b->qs[4 * ib + l] | ((b->qh[ib] << (8 - 2 * l)) & 0x300);
}

/* IQ3_S half-group m (0..7) of sub-block ib: 9-bit grid index */
static inline int iq3s_index(const struct block_iq3_s *b, int ib, int m)
{
    return b->qs[8 * ib + m] | (((b->qh[ib] >> m) & 1) << 8);
}

/* IQ1_M: the f16 super-block scale, spread over the top nibbles of the four scale words */
static inline float iq1m_d(const struct block_iq1_m *b, uint16_t sc[4])
{
    memcpy(sc, b->scales, 8);
    return F16((uint16_t)((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) |
                          (sc[3] & 0xf000)));
}

/* IQ1_M group l (0..3) of sub-block ib: 11-bit grid index and delta sign bit */
static inline int iq1m_index(const struct block_iq1_m *b, int ib, int l)
{
    const int nib = (b->qh[2 * ib + l / 2] >> (4 * (l % 2))) & 0xf;
    return b->qs[4 * ib + l] | ((nib & 7) << 8);
}
static inline int iq1m_neg(const struct block_iq1_m *b, int ib, int l)
{
    return (b->qh[2 * ib + l / 2] >> (4 * (l % 2) + 3)) & 1;
}

/* IQ1_M 3-bit scale of the 16-element half h of sub-block ib */
static inline int iq1m_scale(const uint16_t sc[4], int ib, int h)
{
    return (sc[ib / 2] >> (6 * (ib % 2) + 3 * h)) & 7;
}

/* ---- dequantization */

void cpuq_dequant_iq2_xxs_ref(const void *src, float *dst, int64_t n)
{
    const struct block_iq2_xxs *x = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = F16(x[i].d);
        for (int ib = 0; ib < QK_K / 32; ib++) {
            const uint32_t grid = rd32(x[i].qs + 4 * ib), aux = rd32(x[i].qs + 4 * ib + 2);
            const float db = d * (0.5f + (float)(aux >> 28)) * 0.25f;
            for (int l = 0; l < 4; l++, dst += 8)
                put8(dst, db, cpuq_iq2xxs_grid[(grid >> (8 * l)) & 0xff],
                     cpuq_iq_ksigns[(aux >> (7 * l)) & 127]);
        }
    }
}

void cpuq_dequant_iq2_xs_ref(const void *src, float *dst, int64_t n)
{
    const struct block_iq2_xs *x = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = F16(x[i].d);
        for (int ib = 0; ib < QK_K / 32; ib++) {
            const float db[2] = {d * (0.5f + (float)(x[i].scales[ib] & 0xf)) * 0.25f,
                                 d * (0.5f + (float)(x[i].scales[ib] >> 4)) * 0.25f};
            for (int l = 0; l < 4; l++, dst += 8) {
                const uint16_t q = x[i].qs[4 * ib + l];
                put8(dst, db[l / 2], cpuq_iq2xs_grid[q & 511], cpuq_iq_ksigns[q >> 9]);
            }
        }
    }
}

void cpuq_dequant_iq2_s_ref(const void *src, float *dst, int64_t n)
{
    const struct block_iq2_s *x = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = F16(x[i].d);
        const uint8_t *signs = x[i].qs + QK_K / 8;
        for (int ib = 0; ib < QK_K / 32; ib++) {
            const float db[2] = {d * (0.5f + (float)(x[i].scales[ib] & 0xf)) * 0.25f,
                                 d * (0.5f + (float)(x[i].scales[ib] >> 4)) * 0.25f};
            for (int l = 0; l < 4; l++, dst += 8)
                put8(dst, db[l / 2], cpuq_iq2s_grid[iq2s_index(&x[i], ib, l)], signs[4 * ib + l]);
        }
    }
}

void cpuq_dequant_iq3_xxs_ref(const void *src, float *dst, int64_t n)
{
    const struct block_iq3_xxs *x = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = F16(x[i].d);
        const uint8_t *qs = x[i].qs;
        for (int ib = 0; ib < QK_K / 32; ib++) {
            const uint32_t aux = rd32(qs + QK_K / 4 + 4 * ib);
            const float db = d * (0.5f + (float)(aux >> 28)) * 0.5f;
            for (int l = 0; l < 4; l++, dst += 8)
                put8(dst, db,
                     join4(cpuq_iq3xxs_grid[qs[8 * ib + 2 * l]],
                           cpuq_iq3xxs_grid[qs[8 * ib + 2 * l + 1]]),
                     cpuq_iq_ksigns[(aux >> (7 * l)) & 127]);
        }
    }
}

void cpuq_dequant_iq3_s_ref(const void *src, float *dst, int64_t n)
{
    const struct block_iq3_s *x = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = F16(x[i].d);
        for (int ib = 0; ib < QK_K / 32; ib++) {
            const int s = (x[i].scales[ib / 2] >> (4 * (ib % 2))) & 0xf;
            const float db = d * (float)(1 + 2 * s);
            for (int l = 0; l < 4; l++, dst += 8)
                put8(dst, db,
                     join4(cpuq_iq3s_grid[iq3s_index(&x[i], ib, 2 * l)],
                           cpuq_iq3s_grid[iq3s_index(&x[i], ib, 2 * l + 1)]),
                     x[i].signs[4 * ib + l]);
        }
    }
}

void cpuq_dequant_iq1_s_ref(const void *src, float *dst, int64_t n)
{
    const struct block_iq1_s *x = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = F16(x[i].d);
        for (int ib = 0; ib < QK_K / 32; ib++) {
            const unsigned qh = x[i].qh[ib];
            const float dl = d * (float)(2 * ((qh >> 12) & 7) + 1);
            const float delta = qh & 0x8000 ? -CPUQ_IQ1_DELTA : CPUQ_IQ1_DELTA;
            for (int l = 0; l < 4; l++, dst += 8)
                put8_iq1(dst, dl,
                         cpuq_iq1s_grid[x[i].qs[4 * ib + l] | (((qh >> (3 * l)) & 7) << 8)], delta);
        }
    }
}

void cpuq_dequant_iq1_m_ref(const void *src, float *dst, int64_t n)
{
    const struct block_iq1_m *x = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        uint16_t sc[4];
        const float d = iq1m_d(&x[i], sc);
        for (int ib = 0; ib < QK_K / 32; ib++)
            for (int l = 0; l < 4; l++, dst += 8) {
                const float dl = d * (float)(2 * iq1m_scale(sc, ib, l / 2) + 1);
                put8_iq1(dst, dl, cpuq_iq1s_grid[iq1m_index(&x[i], ib, l)],
                         iq1m_neg(&x[i], ib, l) ? -CPUQ_IQ1_DELTA : CPUQ_IQ1_DELTA);
            }
    }
}

/* ---- dot products with Q8_K activations */

void cpuq_vec_dot_iq2_xxs_q8_k_ref(int64_t n, float *s, const void *wrow, const void *act)
{
    const struct block_iq2_xxs *x = wrow;
    const struct block_q8_K *y = act;
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = F16(x[i].d) * y[i].d;
        const int8_t *q8 = y[i].qs;
        int bsum = 0;
        for (int ib = 0; ib < QK_K / 32; ib++) {
            const uint32_t grid = rd32(x[i].qs + 4 * ib), aux = rd32(x[i].qs + 4 * ib + 2);
            int sumi = 0;
            for (int l = 0; l < 4; l++, q8 += 8)
                sumi += dot8(cpuq_iq2xxs_grid[(grid >> (8 * l)) & 0xff],
                             cpuq_iq_ksigns[(aux >> (7 * l)) & 127], q8);
            bsum += sumi * (int)(2 * (aux >> 28) + 1);
        }
        sumf += d * (float)bsum;
    }
    *s = 0.125f * sumf;
}

void cpuq_vec_dot_iq2_xs_q8_k_ref(int64_t n, float *s, const void *wrow, const void *act)
{
    const struct block_iq2_xs *x = wrow;
    const struct block_q8_K *y = act;
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = F16(x[i].d) * y[i].d;
        const int8_t *q8 = y[i].qs;
        int bsum = 0;
        for (int ib = 0; ib < QK_K / 32; ib++) {
            int sumi[2] = {0, 0};
            for (int l = 0; l < 4; l++, q8 += 8) {
                const uint16_t q = x[i].qs[4 * ib + l];
                sumi[l / 2] += dot8(cpuq_iq2xs_grid[q & 511], cpuq_iq_ksigns[q >> 9], q8);
            }
            bsum += sumi[0] * (2 * (x[i].scales[ib] & 0xf) + 1) +
                    sumi[1] * (2 * (x[i].scales[ib] >> 4) + 1);
        }
        sumf += d * (float)bsum;
    }
    *s = 0.125f * sumf;
}

void cpuq_vec_dot_iq2_s_q8_k_ref(int64_t n, float *s, const void *wrow, const void *act)
{
    const struct block_iq2_s *x = wrow;
    const struct block_q8_K *y = act;
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = F16(x[i].d) * y[i].d;
        const int8_t *q8 = y[i].qs;
        const uint8_t *signs = x[i].qs + QK_K / 8;
        int bsum = 0;
        for (int ib = 0; ib < QK_K / 32; ib++) {
            int sumi[2] = {0, 0};
            for (int l = 0; l < 4; l++, q8 += 8)
                sumi[l / 2] +=
                    dot8(cpuq_iq2s_grid[iq2s_index(&x[i], ib, l)], signs[4 * ib + l], q8);
            bsum += sumi[0] * (2 * (x[i].scales[ib] & 0xf) + 1) +
                    sumi[1] * (2 * (x[i].scales[ib] >> 4) + 1);
        }
        sumf += d * (float)bsum;
    }
    *s = 0.125f * sumf;
}

void cpuq_vec_dot_iq3_xxs_q8_k_ref(int64_t n, float *s, const void *wrow, const void *act)
{
    const struct block_iq3_xxs *x = wrow;
    const struct block_q8_K *y = act;
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = F16(x[i].d) * y[i].d;
        const int8_t *q8 = y[i].qs;
        const uint8_t *qs = x[i].qs;
        int bsum = 0;
        for (int ib = 0; ib < QK_K / 32; ib++) {
            const uint32_t aux = rd32(qs + QK_K / 4 + 4 * ib);
            int sumi = 0;
            for (int l = 0; l < 4; l++, q8 += 8)
                sumi += dot8(join4(cpuq_iq3xxs_grid[qs[8 * ib + 2 * l]],
                                   cpuq_iq3xxs_grid[qs[8 * ib + 2 * l + 1]]),
                             cpuq_iq_ksigns[(aux >> (7 * l)) & 127], q8);
            bsum += sumi * (int)(2 * (aux >> 28) + 1);
        }
        sumf += d * (float)bsum;
    }
    *s = 0.25f * sumf;
}

void cpuq_vec_dot_iq3_s_q8_k_ref(int64_t n, float *s, const void *wrow, const void *act)
{
    const struct block_iq3_s *x = wrow;
    const struct block_q8_K *y = act;
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = F16(x[i].d) * y[i].d;
        const int8_t *q8 = y[i].qs;
        int bsum = 0;
        for (int ib = 0; ib < QK_K / 32; ib++) {
            int sumi = 0;
            for (int l = 0; l < 4; l++, q8 += 8)
                sumi += dot8(join4(cpuq_iq3s_grid[iq3s_index(&x[i], ib, 2 * l)],
                                   cpuq_iq3s_grid[iq3s_index(&x[i], ib, 2 * l + 1)]),
                             x[i].signs[4 * ib + l], q8);
            bsum += sumi * (2 * ((x[i].scales[ib / 2] >> (4 * (ib % 2))) & 0xf) + 1);
        }
        sumf += d * (float)bsum;
    }
    *s = sumf;
}

void cpuq_vec_dot_iq1_s_q8_k_ref(int64_t n, float *s, const void *wrow, const void *act)
{
    const struct block_iq1_s *x = wrow;
    const struct block_q8_K *y = act;
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const int8_t *q8 = y[i].qs;
        int sumi = 0, sumi1 = 0;
        for (int ib = 0; ib < QK_K / 32; ib++) {
            const unsigned qh = x[i].qh[ib];
            const int ls = 2 * ((qh >> 12) & 7) + 1;
            int lsum = 0;
            for (int l = 0; l < 4; l++, q8 += 8)
                lsum += dot8_iq1(cpuq_iq1s_grid[x[i].qs[4 * ib + l] | (((qh >> (3 * l)) & 7) << 8)],
                                 q8);
            sumi += ls * lsum;
            sumi1 += ls * (qh & 0x8000 ? -1 : 1) * (y[i].bsums[2 * ib] + y[i].bsums[2 * ib + 1]);
        }
        sumf += F16(x[i].d) * y[i].d * ((float)sumi + CPUQ_IQ1_DELTA * (float)sumi1);
    }
    *s = sumf;
}

void cpuq_vec_dot_iq1_m_q8_k_ref(int64_t n, float *s, const void *wrow, const void *act)
{
    const struct block_iq1_m *x = wrow;
    const struct block_q8_K *y = act;
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        uint16_t sc[4];
        const float d = iq1m_d(&x[i], sc);
        const int8_t *q8 = y[i].qs;
        int sumi1 = 0, sumi2 = 0;
        for (int ib = 0; ib < QK_K / 32; ib++) {
            int sum1[2] = {0, 0}, sum2[2] = {0, 0};
            for (int l = 0; l < 4; l++, q8 += 8) {
                int qsum = 0;
                for (int j = 0; j < 8; j++) qsum += q8[j];
                sum1[l / 2] += dot8_iq1(cpuq_iq1s_grid[iq1m_index(&x[i], ib, l)], q8);
                sum2[l / 2] += iq1m_neg(&x[i], ib, l) ? -qsum : qsum;
            }
            const int ls1 = 2 * iq1m_scale(sc, ib, 0) + 1, ls2 = 2 * iq1m_scale(sc, ib, 1) + 1;
            sumi1 += sum1[0] * ls1 + sum1[1] * ls2;
            sumi2 += sum2[0] * ls1 + sum2[1] * ls2;
        }
        sumf += d * y[i].d * ((float)sumi1 + CPUQ_IQ1_DELTA * (float)sumi2);
    }
    *s = sumf;
}

/* ---- quantization (a simple valid encoder, see the header comment) */

enum { SIGN_PARITY, SIGN_FULL, SIGN_SHIFT };

/* what the encoder needs to know of a format */
struct iq_fmt {
    const void *grid; /* the grid table, read as gsz bytes per entry (little-endian host) */
    int gsz;          /* values per grid entry: 8, or 4 (IQ3) */
    int ngrid;        /* grid entries */
    int sign;         /* SIGN_PARITY: 7 stored bits; SIGN_FULL: 8; SIGN_SHIFT: IQ1 +-delta */
    int sub;          /* elements per sub-block scale: 32 or 16 */
    int dsub;         /* IQ1: elements sharing one delta sign (32 or 8) */
    int nlev;         /* sub-block scale levels (8 or 16) */
    float la, lb;     /* sub-block scale s multiplies d by la + lb * s */
    float gmax;       /* largest grid magnitude */
    int map;          /* which grid_maps[] entry indexes this grid */
};

/* clang-format off */
/*                                      grid              gsz ngrid sign         sub dsub nlev la      lb     gmax    map */
static const struct iq_fmt fmt_iq2xxs = {cpuq_iq2xxs_grid, 8, 256,  SIGN_PARITY, 32, 0,  16, 0.125f, 0.25f, 43,     0};
static const struct iq_fmt fmt_iq2xs  = {cpuq_iq2xs_grid,  8, 512,  SIGN_PARITY, 16, 0,  16, 0.125f, 0.25f, 43,     1};
static const struct iq_fmt fmt_iq2s   = {cpuq_iq2s_grid,   8, 1024, SIGN_FULL,   16, 0,  16, 0.125f, 0.25f, 43,     2};
static const struct iq_fmt fmt_iq3xxs = {cpuq_iq3xxs_grid, 4, 256,  SIGN_PARITY, 32, 0,  16, 0.25f,  0.5f,  62,     3};
static const struct iq_fmt fmt_iq3s   = {cpuq_iq3s_grid,   4, 512,  SIGN_FULL,   32, 0,  16, 1.0f,   2.0f,  15,     4};
static const struct iq_fmt fmt_iq1s   = {cpuq_iq1s_grid,   8, 2048, SIGN_SHIFT,  32, 32, 8,  1.0f,   2.0f,  1.125f, 5};
static const struct iq_fmt fmt_iq1m   = {cpuq_iq1s_grid,   8, 2048, SIGN_SHIFT,  16, 8,  8,  1.0f,   2.0f,  1.125f, 5};
/* clang-format on */

/* value j (0..gsz-1) of grid entry idx: a magnitude (IQ2/IQ3) or -1/0/+1 (IQ1) */
static inline int grid_val(const struct iq_fmt *f, int idx, int j)
{
    const uint8_t b = ((const uint8_t *)f->grid)[idx * f->gsz + j];
    return f->sign == SIGN_SHIFT ? (int8_t)b : b;
}

/* the codes of one super-block, before packing */
struct iq_codes {
    float d;                /* super-block scale (an f16 value) */
    uint8_t ls[QK_K / 16];  /* sub-block scale levels */
    uint16_t idx[QK_K / 4]; /* grid index per gsz values */
    uint8_t sign[QK_K / 8]; /* per 8 values: bit j set = value j negative (IQ2/IQ3) */
    uint8_t neg[QK_K / 8];  /* per 8 values: IQ1 delta is -1/8 */
};

/* The grids use few distinct values per coordinate (IQ2: 3, IQ3: 8, IQ1: 3). A map from the
 * pattern of per-coordinate nearest values to the grid entry with exactly that pattern finds the
 * nearest entry without a search whenever that pattern is on the grid (the squared distance is
 * separable, so it is then the nearest entry). Built once (pthread_once), read-only after. */
#define IQ_MAP_MAX 6561 /* 3^8 >= 8^4 */
struct iq_map {
    int nlev;                /* distinct values, ascending in lev[] */
    float lev[8];            /* as grid_val() decodes them */
    int16_t idx[IQ_MAP_MAX]; /* pattern key -> grid entry, -1 if not on the grid */
};
static struct iq_map grid_maps[6];
static pthread_once_t grid_maps_once = PTHREAD_ONCE_INIT;

static const struct iq_fmt *const map_fmt[6] = {&fmt_iq2xxs, &fmt_iq2xs, &fmt_iq2s,
                                                &fmt_iq3xxs, &fmt_iq3s,  &fmt_iq1s};

static void build_grid_maps(void)
{
    for (int m = 0; m < 6; m++) {
        const struct iq_fmt *f = map_fmt[m];
        struct iq_map *mp = &grid_maps[m];
        int seen[256] = {0};
        for (int k = 0; k < f->ngrid; k++)
            for (int j = 0; j < f->gsz; j++) seen[grid_val(f, k, j) + 128] = 1;
        mp->nlev = 0;
        for (int v = 0; v < 256; v++)
            if (seen[v] && mp->nlev < 8) mp->lev[mp->nlev++] = (float)(v - 128);
        for (int i = 0; i < IQ_MAP_MAX; i++) mp->idx[i] = -1;
        for (int k = f->ngrid - 1; k >= 0; k--) {
            int key = 0;
            for (int j = f->gsz - 1; j >= 0; j--) {
                int l = 0;
                while (l < mp->nlev - 1 && mp->lev[l] != (float)grid_val(f, k, j)) l++;
                key = key * mp->nlev + l;
            }
            if (key < IQ_MAP_MAX) mp->idx[key] = (int16_t)k;
        }
    }
}

/* squared distance of t[0..n) to grid entry g, given up once it reaches `stop` */
static inline float dist(const uint8_t *g, const float *t, int n, int sgn, float stop)
{
    float e = 0;
    for (int j = 0; j < n && e < stop; j++) {
        const float r = t[j] - (float)(sgn ? (int8_t)g[j] : g[j]);
        e += r * r;
    }
    return e;
}

/* Nearest grid entry to t[0..gsz) (t >= 0 for IQ2/IQ3) by squared distance, exactly. The
 * distance to an entry is the separable optimum plus a cost c[j][v] >= 0 per coordinate where the
 * entry leaves that coordinate's nearest value. So: the optimum pattern if it is on the grid;
 * else the cheapest entry among those leaving it in 1 or 2 coordinates (pattern map lookups),
 * kept if no entry leaving 3 or more coordinates can cost less (a lower bound from the 3
 * smallest per-coordinate costs); else a search over all entries, starting from the best found
 * (or `hint`), giving an entry up as soon as its partial distance reaches the best so far. */
static int nearest(const struct iq_fmt *f, const float *t, int hint)
{
    const struct iq_map *mp = &grid_maps[f->map];
    const int n = f->gsz, nl = mp->nlev;
    int l0[8], pw[8], key0 = 0;
    float c[8][8], cmin[8];
    for (int j = n - 1; j >= 0; j--) {
        int l = 0;
        for (int v = 1; v < nl; v++)
            if (fabsf(t[j] - mp->lev[v]) < fabsf(t[j] - mp->lev[l])) l = v;
        l0[j] = l;
        key0 = key0 * nl + l;
    }
    if (mp->idx[key0] >= 0) return mp->idx[key0];
    for (int j = 0, p = 1; j < n; j++, p *= nl) {
        pw[j] = p;
        const float e0 = (t[j] - mp->lev[l0[j]]) * (t[j] - mp->lev[l0[j]]);
        cmin[j] = INFINITY;
        for (int v = 0; v < nl; v++) {
            c[j][v] = (t[j] - mp->lev[v]) * (t[j] - mp->lev[v]) - e0;
            if (v != l0[j] && c[j][v] < cmin[j]) cmin[j] = c[j][v];
        }
    }
    int best = -1;
    float best_c = INFINITY;
    for (int j = 0; j < n; j++)
        for (int a = 0; a < nl; a++) {
            if (a == l0[j]) continue;
            const int k1 = key0 + (a - l0[j]) * pw[j];
            if (mp->idx[k1] >= 0 && c[j][a] < best_c) {
                best_c = c[j][a];
                best = mp->idx[k1];
            }
            for (int i = j + 1; i < n; i++)
                for (int b2 = 0; b2 < nl; b2++) {
                    if (b2 == l0[i]) continue;
                    const int k2 = k1 + (b2 - l0[i]) * pw[i];
                    if (mp->idx[k2] >= 0 && c[j][a] + c[i][b2] < best_c) {
                        best_c = c[j][a] + c[i][b2];
                        best = mp->idx[k2];
                    }
                }
        }
    /* the 3 smallest per-coordinate costs bound every entry leaving 3 or more coordinates */
    float m1 = INFINITY, m2 = INFINITY, m3 = INFINITY;
    for (int j = 0; j < n; j++) {
        const float v = cmin[j];
        if (v < m1) {
            m3 = m2;
            m2 = m1;
            m1 = v;
        } else if (v < m2) {
            m3 = m2;
            m2 = v;
        } else if (v < m3) {
            m3 = v;
        }
    }
    if (best >= 0 && (n < 3 || best_c <= m1 + m2 + m3)) return best;

    const uint8_t *g = f->grid;
    const int sgn = f->sign == SIGN_SHIFT;
    if (best < 0) best = hint;
    float best_e = dist(g + best * n, t, n, sgn, INFINITY);
    for (int k = 0; k < f->ngrid; k++, g += n) {
        const float e = dist(g, t, n, sgn, best_e);
        if (e < best_e) {
            best_e = e;
            best = k;
        }
    }
    return best;
}

/* decoded value (in units of the sub-block scale) of element j of the group of 8 at g8 */
static float code_val(const struct iq_fmt *f, const struct iq_codes *c, int g8, int j)
{
    const int per = 8 / f->gsz;
    const float g = (float)grid_val(f, c->idx[per * g8 + j / f->gsz], j % f->gsz);
    if (f->sign == SIGN_SHIFT) return g + (c->neg[g8] ? -CPUQ_IQ1_DELTA : CPUQ_IQ1_DELTA);
    return (c->sign[g8] >> j) & 1 ? -g : g;
}

/* Codes the 8 values x (group g8 of the block) with scale dl and IQ1 delta sign neg; returns the
 * squared error. */
static float code8(const struct iq_fmt *f, const float *x, float dl, int neg, struct iq_codes *c,
                   int g8)
{
    const float id = dl > 0 ? 1 / dl : 0;
    const int per = 8 / f->gsz;
    float t[8];
    unsigned sg = 0;
    for (int j = 0; j < 8; j++) {
        if (f->sign == SIGN_SHIFT) {
            t[j] = x[j] * id + (neg ? CPUQ_IQ1_DELTA : -CPUQ_IQ1_DELTA);
        } else {
            t[j] = fabsf(x[j]) * id;
            if (x[j] < 0) sg |= 1u << j;
        }
    }
    for (int h = 0; h < per; h++)
        c->idx[per * g8 + h] = (uint16_t)nearest(f, t + h * f->gsz, c->idx[per * g8 + h]);
    if (f->sign == SIGN_PARITY && __builtin_popcount(sg) % 2) {
        /* flip the value whose sign costs least: error grows by 4 * |t| * g */
        int jmin = 0;
        float cmin = INFINITY;
        for (int j = 0; j < 8; j++) {
            const float cost = t[j] * (float)grid_val(f, c->idx[per * g8 + j / f->gsz], j % f->gsz);
            if (cost < cmin) {
                cmin = cost;
                jmin = j;
            }
        }
        sg ^= 1u << jmin;
    }
    c->sign[g8] = (uint8_t)sg;
    c->neg[g8] = (uint8_t)neg;
    float e = 0;
    for (int j = 0; j < 8; j++) {
        const float r = x[j] - dl * code_val(f, c, g8, j);
        e += r * r;
    }
    return e;
}

/* Codes n values x (n a multiple of f->dsub or 8) starting at group g8 with scale dl, trying
 * both IQ1 delta signs per delta group; returns the squared error. */
static float code_span(const struct iq_fmt *f, const float *x, int n, float dl, struct iq_codes *c,
                       int g8)
{
    if (f->sign != SIGN_SHIFT) {
        float e = 0;
        for (int k = 0; k < n / 8; k++) e += code8(f, x + 8 * k, dl, 0, c, g8 + k);
        return e;
    }
    float e = 0;
    for (int s = 0; s < n; s += f->dsub) {
        struct iq_codes alt = *c;
        float e0 = 0, e1 = 0;
        for (int k = 0; k < f->dsub / 8; k++) {
            e0 += code8(f, x + s + 8 * k, dl, 0, c, g8 + s / 8 + k);
            e1 += code8(f, x + s + 8 * k, dl, 1, &alt, g8 + s / 8 + k);
        }
        if (e1 < e0) {
            for (int k = 0; k < f->dsub / 8; k++) {
                const int g = g8 + s / 8 + k;
                c->sign[g] = alt.sign[g];
                c->neg[g] = alt.neg[g];
                for (int h = 0; h < 8 / f->gsz; h++)
                    c->idx[8 / f->gsz * g + h] = alt.idx[8 / f->gsz * g + h];
            }
        }
        e += e1 < e0 ? e1 : e0;
    }
    return e;
}

/* least-squares scale for n values x against the current codes (times mult) from group g8 */
static float ls_scale(const struct iq_fmt *f, const float *x, int n, const struct iq_codes *c,
                      int g8)
{
    double sxq = 0, sqq = 0;
    for (int k = 0; k < n; k++) {
        const float q = code_val(f, c, g8 + k / 8, k % 8);
        sxq += (double)x[k] * q;
        sqq += (double)q * q;
    }
    return sqq > 0 && sxq > 0 ? (float)(sxq / sqq) : 0.f;
}

/* best scale of one sub-block: the best of a few trial scales, refit by least squares */
static float best_sub_scale(const struct iq_fmt *f, const float *x, struct iq_codes *c, int g8)
{
    static const float trial[] = {0.55f, 0.75f, 0.95f};
    float amax = 0;
    for (int k = 0; k < f->sub; k++) amax = fmaxf(amax, fabsf(x[k]));
    if (!(amax > 0)) return 0;
    float best = 0, best_e = INFINITY;
    for (size_t t = 0; t < sizeof trial / sizeof trial[0]; t++) {
        const float dl = trial[t] * amax / f->gmax;
        const float e = code_span(f, x, f->sub, dl, c, g8);
        if (e < best_e) {
            best_e = e;
            best = dl;
        }
    }
    code_span(f, x, f->sub, best, c, g8);
    const float dl = ls_scale(f, x, f->sub, c, g8);
    return dl > 0 ? dl : best;
}

static void iq_quantize_block(const struct iq_fmt *f, const float *x, struct iq_codes *c)
{
    const int nsub = QK_K / f->sub;
    float dl[QK_K / 16];
    pthread_once(&grid_maps_once, build_grid_maps);
    memset(c, 0, sizeof *c);
    float dmax = 0;
    for (int k = 0; k < nsub; k++) {
        dl[k] = best_sub_scale(f, x + k * f->sub, c, k * f->sub / 8);
        dmax = fmaxf(dmax, dl[k]);
    }
    float d = F16(TO_F16(dmax / (f->la + f->lb * (float)(f->nlev - 1))));
    if (!(d > 0) || !isfinite(d)) {
        memset(c, 0, sizeof *c);
        return;
    }
    /* nearest level for every sub-block, then the codes with the scale they will decode with */
    for (int k = 0; k < nsub; k++) {
        int best = 0;
        for (int s = 1; s < f->nlev; s++)
            if (fabsf(d * (f->la + f->lb * (float)s) - dl[k]) <
                fabsf(d * (f->la + f->lb * (float)best) - dl[k]))
                best = s;
        c->ls[k] = (uint8_t)best;
        code_span(f, x + k * f->sub, f->sub, d * (f->la + f->lb * (float)best), c, k * f->sub / 8);
    }
    /* least-squares refit of d with the codes fixed, kept if it lowers the error */
    double sxq = 0, sqq = 0, e_old = 0, e_new = 0;
    for (int k = 0; k < QK_K; k++) {
        const float q = (f->la + f->lb * (float)c->ls[k / f->sub]) * code_val(f, c, k / 8, k % 8);
        sxq += (double)x[k] * q;
        sqq += (double)q * q;
    }
    const float d2 = sqq > 0 && sxq > 0 ? F16(TO_F16((float)(sxq / sqq))) : 0.f;
    for (int k = 0; k < QK_K; k++) {
        const float q = (f->la + f->lb * (float)c->ls[k / f->sub]) * code_val(f, c, k / 8, k % 8);
        e_old += ((double)x[k] - d * q) * ((double)x[k] - d * q);
        e_new += ((double)x[k] - d2 * q) * ((double)x[k] - d2 * q);
    }
    c->d = d2 > 0 && isfinite(d2) && e_new < e_old ? d2 : d;
}

/* the 7 stored sign bits of 8 values with even parity */
static inline unsigned sign7(const struct iq_codes *c, int g8) { return c->sign[g8] & 127u; }

void cpuq_quant_iq2_xxs_ref(const float *src, void *dst, int64_t n)
{
    struct block_iq2_xxs *y = dst;
    struct iq_codes c;
    for (int64_t i = 0; i < n / QK_K; i++) {
        iq_quantize_block(&fmt_iq2xxs, src + QK_K * i, &c);
        y[i].d = TO_F16(c.d);
        for (int ib = 0; ib < QK_K / 32; ib++) {
            uint32_t grid = 0, aux = (uint32_t)c.ls[ib] << 28;
            for (int l = 0; l < 4; l++) {
                grid |= (uint32_t)c.idx[4 * ib + l] << (8 * l);
                aux |= sign7(&c, 4 * ib + l) << (7 * l);
            }
            memcpy(y[i].qs + 4 * ib, &grid, 4);
            memcpy(y[i].qs + 4 * ib + 2, &aux, 4);
        }
    }
}

void cpuq_quant_iq2_xs_ref(const float *src, void *dst, int64_t n)
{
    struct block_iq2_xs *y = dst;
    struct iq_codes c;
    for (int64_t i = 0; i < n / QK_K; i++) {
        iq_quantize_block(&fmt_iq2xs, src + QK_K * i, &c);
        y[i].d = TO_F16(c.d);
        for (int ib = 0; ib < QK_K / 32; ib++) {
            y[i].scales[ib] = (uint8_t)(c.ls[2 * ib] | c.ls[2 * ib + 1] << 4);
            for (int l = 0; l < 4; l++)
                y[i].qs[4 * ib + l] = (uint16_t)(c.idx[4 * ib + l] | sign7(&c, 4 * ib + l) << 9);
        }
    }
}

void cpuq_quant_iq2_s_ref(const float *src, void *dst, int64_t n)
{
    struct block_iq2_s *y = dst;
    struct iq_codes c;
    for (int64_t i = 0; i < n / QK_K; i++) {
        iq_quantize_block(&fmt_iq2s, src + QK_K * i, &c);
        y[i].d = TO_F16(c.d);
        memset(y[i].qh, 0, sizeof y[i].qh);
        for (int ib = 0; ib < QK_K / 32; ib++) {
            y[i].scales[ib] = (uint8_t)(c.ls[2 * ib] | c.ls[2 * ib + 1] << 4);
            for (int l = 0; l < 4; l++) {
                const int g = 4 * ib + l;
                y[i].qs[g] = (uint8_t)c.idx[g];
                y[i].qh[ib] |= (uint8_t)((c.idx[g] >> 8) << (2 * l));
                y[i].qs[QK_K / 8 + g] = c.sign[g];
            }
        }
    }
}

void cpuq_quant_iq3_xxs_ref(const float *src, void *dst, int64_t n)
{
    struct block_iq3_xxs *y = dst;
    struct iq_codes c;
    for (int64_t i = 0; i < n / QK_K; i++) {
        iq_quantize_block(&fmt_iq3xxs, src + QK_K * i, &c);
        y[i].d = TO_F16(c.d);
        for (int k = 0; k < QK_K / 4; k++) y[i].qs[k] = (uint8_t)c.idx[k];
        for (int ib = 0; ib < QK_K / 32; ib++) {
            uint32_t aux = (uint32_t)c.ls[ib] << 28;
            for (int l = 0; l < 4; l++) aux |= sign7(&c, 4 * ib + l) << (7 * l);
            memcpy(y[i].qs + QK_K / 4 + 4 * ib, &aux, 4);
        }
    }
}

void cpuq_quant_iq3_s_ref(const float *src, void *dst, int64_t n)
{
    struct block_iq3_s *y = dst;
    struct iq_codes c;
    for (int64_t i = 0; i < n / QK_K; i++) {
        iq_quantize_block(&fmt_iq3s, src + QK_K * i, &c);
        y[i].d = TO_F16(c.d);
        memset(y[i].qh, 0, sizeof y[i].qh);
        memset(y[i].scales, 0, sizeof y[i].scales);
        for (int ib = 0; ib < QK_K / 32; ib++) {
            y[i].scales[ib / 2] |= (uint8_t)(c.ls[ib] << (4 * (ib % 2)));
            for (int m = 0; m < 8; m++) {
                y[i].qs[8 * ib + m] = (uint8_t)c.idx[8 * ib + m];
                y[i].qh[ib] |= (uint8_t)((c.idx[8 * ib + m] >> 8) << m);
            }
            for (int l = 0; l < 4; l++) y[i].signs[4 * ib + l] = c.sign[4 * ib + l];
        }
    }
}

void cpuq_quant_iq1_s_ref(const float *src, void *dst, int64_t n)
{
    struct block_iq1_s *y = dst;
    struct iq_codes c;
    for (int64_t i = 0; i < n / QK_K; i++) {
        iq_quantize_block(&fmt_iq1s, src + QK_K * i, &c);
        y[i].d = TO_F16(c.d);
        for (int ib = 0; ib < QK_K / 32; ib++) {
            unsigned qh = (unsigned)c.ls[ib] << 12 | (unsigned)c.neg[4 * ib] << 15;
            for (int l = 0; l < 4; l++) {
                y[i].qs[4 * ib + l] = (uint8_t)c.idx[4 * ib + l];
                qh |= (unsigned)(c.idx[4 * ib + l] >> 8) << (3 * l);
            }
            y[i].qh[ib] = (uint16_t)qh;
        }
    }
}

void cpuq_quant_iq1_m_ref(const float *src, void *dst, int64_t n)
{
    struct block_iq1_m *y = dst;
    struct iq_codes c;
    for (int64_t i = 0; i < n / QK_K; i++) {
        iq_quantize_block(&fmt_iq1m, src + QK_K * i, &c);
        const uint16_t d16 = TO_F16(c.d);
        uint16_t sc[4];
        for (int k = 0; k < 4; k++) sc[k] = (uint16_t)(((d16 >> (4 * k)) & 0xf) << 12);
        memset(y[i].qh, 0, sizeof y[i].qh);
        for (int ib = 0; ib < QK_K / 32; ib++) {
            sc[ib / 2] |= (uint16_t)((c.ls[2 * ib] | c.ls[2 * ib + 1] << 3) << (6 * (ib % 2)));
            for (int l = 0; l < 4; l++) {
                const int g = 4 * ib + l;
                y[i].qs[g] = (uint8_t)c.idx[g];
                y[i].qh[2 * ib + l / 2] |=
                    (uint8_t)(((c.idx[g] >> 8) | c.neg[g] << 3) << (4 * (l % 2)));
            }
        }
        memcpy(y[i].scales, sc, 8);
    }
}
