/* f32.c - fp32 row kernels in a fixed summation order (see f32.h).
 *
 * Element-wise loops are written as fixed 16-wide blocks plus a tail: GCC's -O2 vectorizer (cost
 * model "very-cheap") only vectorizes loops whose trip count it knows.
 * Threads: no state; cpuq_head_matmul_f32 splits its items over the caller's pool.
 */
#include "kernels/cpu/f32.h"

#include <math.h>
#include <string.h>

#include "kernels/cpu/fpconv.h"

CPUQ_CLONES float cpuq_dot_f32(const float *a, const float *b, int64_t n)
{
    float acc[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) acc[l] += a[i + l] * b[i + l];
    for (; i < n; i++) acc[i & 15] += a[i] * b[i];
    for (int l = 0; l < 8; l++) acc[l] += acc[l + 8];
    for (int l = 0; l < 4; l++) acc[l] += acc[l + 4];
    return (acc[0] + acc[2]) + (acc[1] + acc[3]);
}

CPUQ_CLONES float cpuq_dot_bf16(const uint16_t *w, const float *x, int64_t n)
{
    float acc[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) {
            uint32_t u = (uint32_t)w[i + l] << 16;
            float f;
            memcpy(&f, &u, 4);
            acc[l] += f * x[i + l];
        }
    for (; i < n; i++) acc[i & 15] += fp_bf16_to_f32(w[i]) * x[i];
    for (int l = 0; l < 8; l++) acc[l] += acc[l + 8];
    for (int l = 0; l < 4; l++) acc[l] += acc[l + 4];
    return (acc[0] + acc[2]) + (acc[1] + acc[3]);
}

CPUQ_CLONES void cpuq_bf16_to_f32(const uint16_t *restrict src, float *restrict dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) {
            uint32_t u = (uint32_t)src[i + l] << 16;
            memcpy(dst + i + l, &u, 4);
        }
    for (; i < n; i++) dst[i] = fp_bf16_to_f32(src[i]);
}

CPUQ_CLONES void cpuq_axpy_f32(float *restrict y, float a, const float *restrict x, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) y[i + l] += a * x[i + l];
    for (; i < n; i++) y[i] += a * x[i];
}

CPUQ_CLONES void cpuq_scale_f32(float *y, float a, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) y[i + l] *= a;
    for (; i < n; i++) y[i] *= a;
}

void cpuq_rmsnorm_f32(const float *x, int ldx, const float *g, int n, int dim, float eps, float *y,
                      int ldy)
{
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * ldx;
        float *yt = y + (size_t)t * ldy;
        float ss = cpuq_dot_f32(xt, xt, dim);
        float r = 1.0f / sqrtf(ss / (float)dim + eps);
        for (int i = 0; i < dim; i++) yt[i] = (xt[i] * r) * g[i];
    }
}

void cpuq_rope_f32(int n_pairs, const float *freq, float amp, const int32_t *pos, int n,
                   int n_heads, const float *x, int ldx_tok, int ldx_head, float *y, int ldy_tok,
                   int ldy_head)
{
    for (int t = 0; t < n; t++) {
        float p = (float)pos[t];
        for (int i = 0; i < n_pairs; i++) {
            float ang = p * freq[i];
            float cs = cosf(ang) * amp, sn = sinf(ang) * amp;
            for (int h = 0; h < n_heads; h++) {
                const float *xh = x + (size_t)t * ldx_tok + (size_t)h * ldx_head;
                float *yh = y + (size_t)t * ldy_tok + (size_t)h * ldy_head;
                float a = xh[2 * i], b = xh[2 * i + 1];
                yh[2 * i] = a * cs - b * sn;
                yh[2 * i + 1] = a * sn + b * cs;
            }
        }
    }
}

void cpuq_swiglu_f32(const float *gate, const float *up, int64_t n, float *y)
{
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        y[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

struct hmm_job {
    const float *w;
    int64_t w_head;
    int rows, cols, trans, n_heads;
    const float *x;
    int ldx_tok, ldx_head;
    float *y;
    int ldy_tok, ldy_head;
};

CPUQ_CLONES static void hmm_items(void *ctx, int64_t i0, int64_t i1, int ti)
{
    (void)ti;
    const struct hmm_job *j = ctx;
    for (int64_t it = i0; it < i1; it++) {
        int t = (int)(it / j->n_heads), h = (int)(it % j->n_heads);
        const float *restrict W = j->w + (size_t)h * j->w_head;
        const float *restrict x = j->x + (size_t)t * j->ldx_tok + (size_t)h * j->ldx_head;
        float *restrict y = j->y + (size_t)t * j->ldy_tok + (size_t)h * j->ldy_head;
        if (!j->trans) {
            for (int r = 0; r < j->rows; r++)
                y[r] = cpuq_dot_f32(W + (size_t)r * j->cols, x, j->cols);
        } else {
            for (int cc = 0; cc < j->cols; cc++) y[cc] = 0.0f;
            for (int r = 0; r < j->rows; r++)
                cpuq_axpy_f32(y, x[r], W + (size_t)r * j->cols, j->cols);
        }
    }
}

void cpuq_head_matmul_f32(struct wpool *p, const float *w, int64_t w_head, int rows, int cols,
                          int trans, int n, int n_heads, const float *x, int ldx_tok, int ldx_head,
                          float *y, int ldy_tok, int ldy_head)
{
    struct hmm_job j = {w, w_head,  rows,     cols, trans,   n_heads,
                        x, ldx_tok, ldx_head, y,    ldy_tok, ldy_head};
    wpool_run(p, hmm_items, &j, (int64_t)n * n_heads, 1);
}
