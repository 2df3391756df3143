/* fp8.h - DeepSeek FP8 (e4m3, 128x128 block scales) on the CPU: dequantize, activation
 * quantization and the W8A8 block linear y = W x, scalar reference plus per-ISA fast paths.
 *
 * Formats (docs/model.md §3):
 *   weight  w[rows][cols] e4m3 bytes; scale[ceil(rows/128)][ceil(cols/128)] fp32 multipliers
 *           (`weight_scale_inv`): W[r][c] = e4m3(w[r][c]) * scale[r/128][c/128]; partial edge
 *           blocks reuse their block's scale.
 *   activation, per token per 128 channels: s = max(amax, 1e-4) / 448, q = e4m3_rne_sat(x / s).
 *           ue8m0 mode (DeepSeek-V3.1's `scale_fmt: "ue8m0"`): s is first rounded up to a power
 *           of two, 2^ceil(log2 s) (cpuq_fp8_ue8m0): x / s is then an exact power-of-two
 *           scaling, and the block's largest |x / s| lies in (224, 448] (when amax >= 1e-4).
 *           Here q is kept as the exact e4m3 *values* in fp32 ("qa"), so kernels never decode
 *           activations per weight row; s has ceil(n/128) entries per token.
 *   linear: y[t][r] = sum_j bd_j * (as[t][j] * ws[r/128][j]), j over 128-wide K blocks, where
 *           bd_j = fp32 dot of the e4m3 values of block j in the canonical order below, and the
 *           sum over j is a sequential fp32 accumulation (DeepSeek's per-block "promotion").
 *
 * Canonical block dot (what makes every ISA bitwise identical to the scalar reference): lane
 * l = 0..15 accumulates k = l, l+16, ... (block-relative, increasing k) in fp32; products of two
 * e4m3 values are exact in fp32 so FMA and mul+add agree. Lanes are then reduced as
 * v[i] += v[i+8] (i<8), v[i] += v[i+4] (i<4), v[i] += v[i+2], v[0] + v[1]. A partial last block
 * behaves as if zero padded. NaN weights (0x7f/0xff) are invalid input: the scalar path yields
 * NaN, SIMD paths a finite value.
 *
 * All functions are pure over caller-owned buffers and thread-safe; callers split rows across
 * threads (see moe.h / wpool.h).
 */
#ifndef TANDEM_CPUQ_FP8_H
#define TANDEM_CPUQ_FP8_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define CPUQ_FP8_BLOCK 128

/* One ISA's FP8 kernel. */
struct cpuq_fp8_kern {
    const char *isa; /* "scalar", "avx2", "avx512" */
    /* For each token t < ntok: y[t*y_stride] = sum over K blocks (as above) of weight row w
     * (n e4m3 bytes, ws = that row's block-scale row, ceil(n/128) entries) against qa + t*a_stride
     * (n e4m3 values as fp32) with scales as + t*as_stride. Overwrites y. */
    void (*dot)(int64_t n, const uint8_t *w, const float *ws, int ntok, const float *qa,
                int64_t a_stride, const float *as, int64_t as_stride, float *y, int64_t y_stride);
    /* cpuq_fp8_act_quant, bitwise equal to it */
    void (*act_quant)(int64_t n, const float *x, float *qa, float *s, int ue8m0);
};

/* The kernel for an ISA (enum cpuq_isa of cpuq.h; AMX uses the AVX-512 kernel): fills *k and
 * returns 0, or ERR_INVAL for an unknown isa. Does not check the running CPU: pass an isa that
 * cpuq_ops_get() accepted (e.g. o->isa). */
int cpuq_fp8_kern_get(int isa, struct cpuq_fp8_kern *k, char *err);

/* Scales: number of 128-blocks covering n. */
static inline int64_t cpuq_fp8_nblk(int64_t n) { return (n + CPUQ_FP8_BLOCK - 1) / CPUQ_FP8_BLOCK; }

/* Dequantize rows [r0, r1) of an FP8 weight into out[(r - r0) * cols + c] (fp32). */
void cpuq_fp8_dequant(const uint8_t *w, const float *scale, int64_t rows, int64_t cols, int64_t r0,
                      int64_t r1, float *out);

/* s rounded up to a power of two (ue8m0), done on the float's bits: a nonzero mantissa carries
 * one into the exponent and is cleared; a power of two (or +Inf) is kept. For the positive normal
 * scales of act_quant (s >= 1e-4 / 448) this is exactly 2^ceil(log2 s), the same bits on every
 * ISA and on the GPU (kernels/cuda/common.cuh cuk_ue8m0). */
static inline float cpuq_fp8_ue8m0(float s)
{
    uint32_t b;
    memcpy(&b, &s, sizeof b);
    b = (b + 0x7fffffu) & 0xff800000u;
    memcpy(&s, &b, sizeof s);
    return s;
}

/* Quantize one token's activation x[n]: qa[n] (e4m3 values as fp32), s[ceil(n/128)]; ue8m0 != 0
 * rounds each scale up to a power of two (cpuq_fp8_ue8m0) before dividing by it. */
void cpuq_fp8_act_quant(int64_t n, const float *x, float *qa, float *s, int ue8m0);

/* y[t][r - r0] = row r of W times token t, for rows [r0, r1) and ntok tokens of already
 * quantized activations (qa [ntok][cols], as [ntok][ceil(cols/128)]); y has row stride y_stride
 * (>= r1 - r0). Single-threaded; split rows across threads for parallelism. */
void cpuq_fp8_linear(const struct cpuq_fp8_kern *k, const uint8_t *w, const float *scale,
                     int64_t rows, int64_t cols, int64_t r0, int64_t r1, int ntok, const float *qa,
                     const float *as, float *y, int64_t y_stride);

/* Per-ISA fill functions (kernels/cpu/<isa>/fp8.c), internal to kernels/cpu. */
void cpuq__fp8_fill_scalar(struct cpuq_fp8_kern *k);
void cpuq__fp8_fill_avx2(struct cpuq_fp8_kern *k);
void cpuq__fp8_fill_avx512(struct cpuq_fp8_kern *k);

#endif
