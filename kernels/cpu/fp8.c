/* fp8.c - FP8 e4m3 block-scaled weights on the CPU: the scalar reference and the ISA lookup.
 *
 * What: dequantization, per-token-per-128 activation quantization and the block linear of
 * fp8.h, written plainly so the SIMD variants (kernels/cpu/avx2/fp8.c, avx512/fp8.c) can be
 * checked against it bit for bit: they follow the same canonical lane order (fp8.h).
 * Why keep activations as fp32 values: e4m3 products are exact in fp32, so a kernel that decodes
 * weights once per row and reads fp32 activations computes the very same numbers as one that
 * decodes both, without re-decoding every activation for every weight row.
 * Threads: pure functions over caller buffers.
 */
#include "kernels/cpu/fp8.h"

#include "common/err.h"
#include "kernels/cpu/cpuq.h"
#include "kernels/cpu/fpconv.h"

#include <math.h>
#include <string.h>

void cpuq_fp8_dequant(const uint8_t *w, const float *scale, int64_t rows, int64_t cols, int64_t r0,
                      int64_t r1, float *out)
{
    int64_t nb = cpuq_fp8_nblk(cols);
    (void)rows;
    for (int64_t r = r0; r < r1; r++) {
        const float *srow = scale + (r / CPUQ_FP8_BLOCK) * nb;
        const uint8_t *wr = w + r * cols;
        float *o = out + (r - r0) * cols;
        for (int64_t c = 0; c < cols; c++) o[c] = fp_e4m3_to_f32(wr[c]) * srow[c / CPUQ_FP8_BLOCK];
    }
}

void cpuq_fp8_act_quant(int64_t n, const float *x, float *qa, float *s, int ue8m0)
{
    for (int64_t b = 0; b * CPUQ_FP8_BLOCK < n; b++) {
        int64_t k0 = b * CPUQ_FP8_BLOCK, k1 = k0 + CPUQ_FP8_BLOCK < n ? k0 + CPUQ_FP8_BLOCK : n;
        float amax = 0;
        for (int64_t k = k0; k < k1; k++) amax = fmaxf(amax, fabsf(x[k]));
        float sc = fmaxf(amax, 1e-4f) / 448.0f;
        if (ue8m0) sc = cpuq_fp8_ue8m0(sc);
        s[b] = sc;
        for (int64_t k = k0; k < k1; k++) qa[k] = fp_e4m3_to_f32(fp_f32_to_e4m3(x[k] / sc));
    }
}

/* The canonical 16-lane reduction of fp8.h. */
static float lanes_reduce(float v[16])
{
    for (int i = 0; i < 8; i++) v[i] += v[i + 8];
    for (int i = 0; i < 4; i++) v[i] += v[i + 4];
    for (int i = 0; i < 2; i++) v[i] += v[i + 2];
    return v[0] + v[1];
}

static void dot_scalar(int64_t n, const uint8_t *w, const float *ws, int ntok, const float *qa,
                       int64_t a_stride, const float *as, int64_t as_stride, float *y,
                       int64_t y_stride)
{
    for (int t = 0; t < ntok; t++) {
        const float *a = qa + t * a_stride, *at = as + t * as_stride;
        float acc = 0;
        for (int64_t b = 0; b * CPUQ_FP8_BLOCK < n; b++) {
            int64_t k0 = b * CPUQ_FP8_BLOCK;
            float v[16] = {0};
            for (int64_t k = k0; k < k0 + CPUQ_FP8_BLOCK && k < n; k++)
                v[(k - k0) & 15] += fp_e4m3_to_f32(w[k]) * a[k];
            float term = lanes_reduce(v) * (at[b] * ws[b]); /* separate statement: no FMA */
            acc += term;
        }
        y[t * y_stride] = acc;
    }
}

void cpuq__fp8_fill_scalar(struct cpuq_fp8_kern *k)
{
    k->isa = "scalar";
    k->dot = dot_scalar;
    k->act_quant = cpuq_fp8_act_quant;
}

int cpuq_fp8_kern_get(int isa, struct cpuq_fp8_kern *k, char *err)
{
    memset(k, 0, sizeof *k);
    switch (isa) {
    case CPUQ_ISA_SCALAR: cpuq__fp8_fill_scalar(k); return 0;
#if defined(__x86_64__)
    case CPUQ_ISA_AVX2: cpuq__fp8_fill_avx2(k); return 0;
    case CPUQ_ISA_AVX512:
    case CPUQ_ISA_AMX: cpuq__fp8_fill_avx512(k); return 0;
#endif
    default: return err_set(err, ERR_INVAL, "fp8: unknown isa %d", isa);
    }
}

void cpuq_fp8_linear(const struct cpuq_fp8_kern *k, const uint8_t *w, const float *scale,
                     int64_t rows, int64_t cols, int64_t r0, int64_t r1, int ntok, const float *qa,
                     const float *as, float *y, int64_t y_stride)
{
    int64_t nb = cpuq_fp8_nblk(cols);
    (void)rows;
    for (int64_t r = r0; r < r1; r++)
        k->dot(cols, w + r * cols, scale + (r / CPUQ_FP8_BLOCK) * nb, ntok, qa, cols, as, nb,
               y + (r - r0), y_stride);
}
