/* f32.h - fp32 row kernels of the CPU forward in a fixed summation order: dot products, RMSNorm,
 * RoPE, SwiGLU and the per-head matrix products of absorbed MLA.
 *
 * Order (what makes the results independent of ISA, inlining and thread count): a dot product
 * runs 16 independent fp32 lanes, lane l summing the products of elements i = l, l+16, ... in
 * increasing i, then lanes 0..7 += 8..15, 0..3 += 4..7 and (l0 + l2) + (l1 + l3). Element-wise
 * kernels round once per operation as written. The hot loops are built for several ISAs with
 * GCC function multiversioning (CPUQ_CLONES: the loader picks one clone per process); with FP
 * contraction off (-std=c11) every clone computes the same bits: the vector width changes only
 * the speed. GPU kernels that must agree bit for bit (kernels/cuda/norm.h, cuk_rmsnorm_f32)
 * follow the same order.
 *
 * Threads: pure functions over caller-owned buffers, callable from any thread;
 * cpuq_head_matmul_f32 runs on the pool it is given (its owner thread only, see wpool.h).
 */
#ifndef TANDEM_CPUQ_F32_H
#define TANDEM_CPUQ_F32_H

#include <stdint.h>

#include "kernels/cpu/wpool.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CPUQ_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CPUQ_CLONES
#endif

/* sum_i a[i] * b[i] in the order above */
float cpuq_dot_f32(const float *a, const float *b, int64_t n);
/* the same sum as cpuq_dot_f32(bf16 row w widened to fp32, x): bf16 -> fp32 is exact */
float cpuq_dot_bf16(const uint16_t *w, const float *x, int64_t n);
/* dst[i] = fp32(src[i]) for bf16 src (exact) */
void cpuq_bf16_to_f32(const uint16_t *restrict src, float *restrict dst, int64_t n);
/* y[i] += a * x[i] */
void cpuq_axpy_f32(float *restrict y, float a, const float *restrict x, int64_t n);
/* y[i] *= a */
void cpuq_scale_f32(float *y, float a, int64_t n);

/* For n rows t: r = 1 / sqrtf(cpuq_dot_f32(x_t, x_t, dim) / dim + eps), y_t[i] = (x_t[i] * r) *
 * g[i]. Rows ldx / ldy floats apart; y may equal x. */
void cpuq_rmsnorm_f32(const float *x, int ldx, const float *g, int n, int dim, float eps, float *y,
                      int ldy);

/* DeepSeek's interleaved-pair RoPE on n tokens x n_heads vectors of 2 * n_pairs floats, in at
 * x + t*ldx_tok + h*ldx_head, out at y + t*ldy_tok + h*ldy_head (y may equal x):
 *   y[2i] = x[2i] c - x[2i+1] s,  y[2i+1] = x[2i] s + x[2i+1] c,
 * c = cosf(a) * amp, s = sinf(a) * amp, a = float(pos[t]) * freq[i] in fp32. */
void cpuq_rope_f32(int n_pairs, const float *freq, float amp, const int32_t *pos, int n,
                   int n_heads, const float *x, int ldx_tok, int ldx_head, float *y, int ldy_tok,
                   int ldy_head);

/* y[i] = gate[i] / (1 + expf(-gate[i])) * up[i] over n floats; y may equal gate. */
void cpuq_swiglu_f32(const float *gate, const float *up, int64_t n, float *y);

/* Per-head matrices W_h = w + h * w_head (rows x cols, row-major fp32) on n tokens x n_heads
 * vectors, x[t,h,:] at x + t*ldx_tok + h*ldx_head, likewise y:
 *   trans = 0: y[t,h,r] = cpuq_dot_f32(W_h[r], x[t,h], cols)
 *   trans = 1: y[t,h,c] = sum_r W_h[r][c] x[t,h,r], accumulated in r order (cpuq_axpy_f32)
 * One work item per (token, head) on pool p (NULL: the caller alone). */
void cpuq_head_matmul_f32(struct wpool *p, const float *w, int64_t w_head, int rows, int cols,
                          int trans, int n, int n_heads, const float *x, int ldx_tok, int ldx_head,
                          float *y, int ldy_tok, int ldy_head);

#endif
