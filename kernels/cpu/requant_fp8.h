/* requant_fp8.h - re-quantize a 2-D weight of any dequantizable type (GGML blocks, F32, F16,
 * BF16) to DeepSeek's FP8 layout: e4m3 bytes plus one fp32 multiplier per 128 x 128 block.
 *
 * Layout (as fp8.h and DeepSeek's FP8 checkpoints): q[rows][cols] e4m3 bytes, scale
 * [ceil(rows/128)][ceil(cols/128)] fp32 (`weight_scale_inv`), W[r][c] ~ e4m3(q[r][c]) *
 * scale[r/128][c/128]; edge blocks (rows or cols not a multiple of 128) are partial and have a
 * scale of their own.
 * Per block: amax = max |w| over the block's elements (the exact GGML dequantization, the cpuq
 * ops' to_float); s = max(amax / 448, FLT_MIN) (amax = 0: s = 1); q = e4m3_rne_sat(w / s) with
 * fpconv.h's converter. Error per element, from e4m3's 3 mantissa bits (docs/numerics.md):
 *   |e4m3(q) * s - w| <= 2^-4 |w| + 2^-10 s   (normal / subnormal e4m3 range; s = amax / 448),
 * plus fp32 rounding of w / s and the product (a few 2^-24 |w|).
 * Non-finite input (NaN or Inf after dequantization, e.g. in F16/BF16/F32 weights or a block
 * scale) is an error naming the first such element: FP8 has no Inf and a NaN would spread.
 *
 * Memory: work goes one block row (128 rows) at a time through an fp32 scratch of 128 x cols
 * floats (cpuq_requant_fp8_scratch), one per thread; nothing of the size of the weight in fp32.
 * Threads: cpuq_requant_fp8_rows is pure over caller buffers (any thread, distinct block rows);
 * cpuq_requant_fp8 runs block rows on a worker pool from its owner thread and allocates the
 * per-thread scratch for the call. Output is bitwise independent of the pool and thread count.
 */
#ifndef TANDEM_CPUQ_REQUANT_FP8_H
#define TANDEM_CPUQ_REQUANT_FP8_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/cpu/cpuq.h"
#include "kernels/cpu/wpool.h"

/* A 2-D source weight: row r at data + r * row_bytes, cols elements of `type`. */
struct cpuq_requant_src {
    int type; /* enum qtype with a to_float */
    const void *data;
    size_t row_bytes;
    int64_t rows, cols;
};

/* fp_f32_to_e4m3 (fpconv.h: round to nearest even, saturating at 448, NaN -> 0x7f) bit for bit,
 * computed with integer operations: the fast path of the conversion above. */
uint8_t cpuq_e4m3_rne(float f);

/* Bytes of fp32 scratch for one block row: 128 x cols floats. */
size_t cpuq_requant_fp8_scratch(int64_t cols);

/* Whether s can be re-quantized with ops o: a type with a to_float, rows and cols >= 1, cols a
 * whole number of the type's blocks, row_bytes >= the row size. ERR_UNSUPPORTED (type) or
 * ERR_INVAL (shape), with the reason in err. */
int cpuq_requant_fp8_check(const struct cpuq_ops *o, const struct cpuq_requant_src *s, char *err);

/* Block rows [b0, b1) of s (rows 128*b0 .. min(128*b1, rows) - 1) into q (row 0 of the whole
 * weight; row stride cols) and scale (row 0 of the whole grid; stride ceil(cols/128)). scratch:
 * cpuq_requant_fp8_scratch(cols) bytes. s must have passed cpuq_requant_fp8_check. Returns 0, or
 * ERR_FORMAT for a non-finite value (the rows written so far are not meaningful). */
int cpuq_requant_fp8_rows(const struct cpuq_ops *o, const struct cpuq_requant_src *s, int64_t b0,
                          int64_t b1, uint8_t *q, float *scale, float *scratch, char *err);

/* The whole weight: checks s, then every block row on pool (NULL: the calling thread only).
 * q: rows x cols bytes; scale: ceil(rows/128) x ceil(cols/128) floats. Errors as
 * cpuq_requant_fp8_check and _rows (the first failing block row's), ERR_NOMEM. */
int cpuq_requant_fp8(const struct cpuq_ops *o, struct wpool *pool, const struct cpuq_requant_src *s,
                     uint8_t *q, float *scale, char *err);

#endif
