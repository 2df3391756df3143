/* rope.cu - interleaved RoPE (see rope.h). One thread per rotated pair; the frequency table is
 * computed on the host once (cuk_rope_freqs) so every backend uses the same fp32 values. */
#include "kernels/cuda/rope.h"
#include "kernels/cuda/common.cuh"

#include <math.h>
#include <string.h>

static __device__ __forceinline__ void rope_pair(const struct cuk_rope_args &a, long long idx)
{
    const int half = a.rot_dim / 2;
    int i = (int)(idx % half);
    int h = (int)((idx / half) % a.n_heads);
    int r = (int)(idx / ((long long)half * a.n_heads));
    float *y = a.x + (size_t)r * a.x_ld + (size_t)h * a.head_stride + a.rot_off + 2 * i;
    float sn, cs;
    if (a.cs) {
        cs = a.cs[((size_t)r * half + i) * 2];
        sn = a.cs[((size_t)r * half + i) * 2 + 1];
    } else {
        sincosf(__fmul_rn((float)a.pos[r], a.freqs[i]), &sn, &cs);
    }
    const float *src =
        a.src ? a.src + (size_t)r * a.src_ld + (size_t)h * a.src_head_stride + 2 * i : y;
    float y0 = src[0], y1 = src[1];
    y[0] = __fsub_rn(__fmul_rn(y0, cs), __fmul_rn(y1, sn));
    y[1] = __fadd_rn(__fmul_rn(y0, sn), __fmul_rn(y1, cs));
}

static __host__ __device__ long long rope_total(const struct cuk_rope_args &a)
{
    return (long long)a.m * a.n_heads * (a.rot_dim / 2);
}

/* one thread per pair of a, then of b (b.m == 0: none) */
static __global__ void rope_kernel(const struct cuk_rope_args a, const struct cuk_rope_args b)
{
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long ta = rope_total(a);
    if (idx < ta) rope_pair(a, idx);
    else if (idx - ta < rope_total(b)) rope_pair(b, idx - ta);
}

static int rope_check(const struct cuk_rope_args *a)
{
    const char *op = "rope";
    CUK_REQUIRE(op, a && a->m >= 1 && a->n_heads >= 1 && a->x && a->pos && a->freqs);
    CUK_REQUIRE(op, a->rot_dim >= 2 && a->rot_dim % 2 == 0 && a->rot_dim <= CUK_ROPE_MAX_DIM);
    CUK_REQUIRE(op,
                a->rot_off >= 0 && (a->n_heads == 1 || a->head_stride >= a->rot_off + a->rot_dim));
    CUK_REQUIRE(op, a->x_ld >= (a->n_heads - 1) * a->head_stride + a->rot_off + a->rot_dim);
    CUK_REQUIRE(op, !a->src || (a->src_ld >= 0 && a->src_head_stride >= 0));
    return 0;
}

int cuk_rope2(const struct cuk_rope_args *a, const struct cuk_rope_args *b, cudaStream_t s)
{
    const char *op = "rope";
    struct cuk_rope_args none;
    memset(&none, 0, sizeof none);
    int rc = rope_check(a);
    if (!rc && b && b->m) rc = rope_check(b);
    if (rc) return rc;
    if (!b) b = &none;
    long long total = rope_total(*a) + (b->m ? rope_total(*b) : 0);
    int threads = 256;
    rope_kernel<<<(unsigned)((total + threads - 1) / threads), threads, 0, s>>>(*a, *b);
    CUK_LAUNCHED(op);
    return 0;
}

int cuk_rope(const struct cuk_rope_args *a, cudaStream_t s) { return cuk_rope2(a, NULL, s); }

extern "C" int cuk_rope_freqs(int rot_dim, double theta, double yarn_factor, int orig_max_pos,
                              double beta_fast, double beta_slow, float *out)
{
    if (rot_dim < 2 || rot_dim % 2 || rot_dim > CUK_ROPE_MAX_DIM || !(theta > 1.0) || !out)
        return ERR_INVAL;
    int half = rot_dim / 2;
    float low = 0.0f, high = 0.0f;
    int yarn = yarn_factor > 1.0;
    if (yarn) {
        if (orig_max_pos < 1 || !(beta_fast > 0.0) || !(beta_slow > 0.0)) return ERR_INVAL;
        /* d(r) = rot_dim * ln(L / (2 pi r)) / (2 ln theta) */
        double dfast = rot_dim * log(orig_max_pos / (2.0 * M_PI * beta_fast)) / (2.0 * log(theta));
        double dslow = rot_dim * log(orig_max_pos / (2.0 * M_PI * beta_slow)) / (2.0 * log(theta));
        low = (float)fmax(floor(dfast), 0.0);
        high = (float)fmin(ceil(dslow), (double)(rot_dim - 1));
        if (low == high) high += 0.001f;
    }
    for (int i = 0; i < half; i++) {
        float base =
            1.0f / powf((float)theta, (float)(2 * i) / (float)rot_dim); /* as the reference */
        if (yarn) {
            float ramp = ((float)i - low) / (high - low);
            ramp = fminf(fmaxf(ramp, 0.0f), 1.0f);
            base = base * (1.0f - ramp) + base / (float)yarn_factor * ramp;
        }
        out[i] = base;
    }
    return 0;
}
