/* rope.h - DeepSeek's interleaved-pair RoPE with YaRN frequencies (spec 3.4.3-3.4.4).
 *
 * For every row r < m, head h < n_heads, pair i < rot_dim/2, with y = x + r*x_ld + h*head_stride
 * + rot_off and angle = float(pos[r]) * freqs[i] (fp32 product, accurate sincosf):
 *   y'[2i] = y[2i] cos - y[2i+1] sin;   y'[2i+1] = y[2i] sin + y[2i+1] cos      (in place, fp32,
 *   each product and sum rounded separately: no FMA contraction, as C's -std=c11 on the CPU)
 * q_pe: rot_off 128, head_stride 192, n_heads H over the q_b output; k_pe: rot_off 512,
 * n_heads 1 over the kv_a output (cuk_mla_kv_store does that one fused with the cache write).
 * Out of place (src != NULL): the pair is read from src + r*src_ld + h*src_head_stride + 2i instead
 * (src already points at the first rotated value) and written to y as above; same arithmetic.
 * cuk_rope2 runs two such jobs (e.g. q_pe and k_pe of a layer) in one launch.
 * Budget: 8*m*n_heads*rot_dim bytes moved.
 * Ownership and threads: as for every launcher (cuk_types.h): device pointers are borrowed until
 * the stream reaches the work, launchers hold no state and may be called from any thread.
 */
#ifndef TANDEM_CUK_ROPE_H
#define TANDEM_CUK_ROPE_H

#include "kernels/cuda/cuk_types.h"

CUK_EXTERN_C_BEGIN

#define CUK_ROPE_MAX_DIM 256

struct cuk_rope_args {
    int m, n_heads, rot_dim;
    float *x;
    int x_ld, head_stride, rot_off;
    const int32_t *pos; /* [m] absolute positions */
    const float *freqs; /* [rot_dim/2] device copy of cuk_rope_freqs() */
    const float *cs;    /* optional [m][rot_dim/2][2] (cos, sin) per row and pair, computed by
                           the caller (the hybrid engine passes the CPU's cosf/sinf values, so
                           both backends rotate bit-identically); NULL = sincosf here */
    const float *src;   /* optional: out of place (above) */
    int src_ld, src_head_stride;
};

int cuk_rope(const struct cuk_rope_args *a, cudaStream_t s);
/* a and b in one launch (b->m == 0: a alone); each validated as cuk_rope's */
int cuk_rope2(const struct cuk_rope_args *a, const struct cuk_rope_args *b, cudaStream_t s);

/* Host: the per-pair angular frequencies (fp32, like the references). yarn_factor <= 1 gives plain
 * RoPE theta^(-2i/rot_dim); otherwise YaRN's ramp between orig_max_pos, beta_fast, beta_slow.
 * Writes rot_dim/2 floats to out. Returns ERR_INVAL for a non-even rot_dim or bad values. */
int cuk_rope_freqs(int rot_dim, double theta, double yarn_factor, int orig_max_pos,
                   double beta_fast, double beta_slow, float *out);

CUK_EXTERN_C_END

#endif
