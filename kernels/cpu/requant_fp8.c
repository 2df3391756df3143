/* requant_fp8.c - GGML / float weights -> FP8 e4m3 with 128 x 128 block scales (requant_fp8.h).
 *
 * What: per block row, dequantize 128 rows with the ops table's exact to_float into a scratch,
 * reject non-finite values, then per 128-column block take amax, s = amax / 448 and round every
 * element to e4m3 with cpuq_e4m3_rne: bitwise fpconv.h's fp_f32_to_e4m3 (the reference, which
 * test_requant_fp8 compares it with), in integer steps instead of frexpf / nearbyintf calls
 * (about 4x faster overall). Plain scalar code: the only per-ISA part is to_float, which is
 * exact in every ISA, so results do not depend on the ISA or the thread count.
 * Threads: _rows is pure; cpuq_requant_fp8 uses the caller's pool (owner thread only).
 */
#include "kernels/cpu/requant_fp8.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "kernels/cpu/fp8.h"
#include "kernels/cpu/qtype.h"

#define BLK CPUQ_FP8_BLOCK

uint8_t cpuq_e4m3_rne(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    const uint8_t sign = (uint8_t)((b >> 24) & 0x80);
    const uint32_t a = b & 0x7fffffffu;
    if (a > 0x7f800000u) return 0x7f;         /* NaN */
    if (a >= 0x43e00000u) return sign | 0x7e; /* >= 448 (and Inf): saturate */
    if (a < 0x3c800000u) {                    /* below 2^-6: subnormal, step 2^-9 */
        float t;
        memcpy(&t, &a, 4);
        t *= 512.0f;                       /* exact: 0 <= t < 8 */
        t = (t + 8388608.0f) - 8388608.0f; /* round to the nearest integer, ties to even */
        return sign | (uint8_t)t;
    }
    /* keep 3 mantissa bits, round to nearest even (a carry moves to the exponent), rebias 127 ->
     * 7: the result stays <= 0x7e because a < 448 */
    uint32_t r = (a + 0x7ffffu + ((a >> 20) & 1u)) >> 20;
    return sign | (uint8_t)(r - ((127u - 7u) << 3));
}

size_t cpuq_requant_fp8_scratch(int64_t cols)
{
    return cols > 0 ? (size_t)BLK * (size_t)cols * sizeof(float) : 0;
}

int cpuq_requant_fp8_check(const struct cpuq_ops *o, const struct cpuq_requant_src *s, char *err)
{
    if (!o || !s || !s->data) return err_set(err, ERR_INVAL, "requant: no source weight");
    if (s->type < 0 || s->type >= QTYPE_COUNT_ || !o->type[s->type].to_float)
        return err_set(err, ERR_UNSUPPORTED, "requant: type %s has no dequantizer",
                       qtype_name(s->type));
    if (s->rows < 1 || s->cols < 1 || s->rows > ((int64_t)1 << 31) || s->cols > ((int64_t)1 << 31))
        return err_set(err, ERR_INVAL, "requant: shape [%lld, %lld] out of range",
                       (long long)s->rows, (long long)s->cols);
    size_t rb = cpuq_row_size(s->type, s->cols);
    if (!rb)
        return err_set(err, ERR_INVAL, "requant: %lld columns are not whole %s blocks",
                       (long long)s->cols, qtype_name(s->type));
    if (s->row_bytes < rb)
        return err_set(err, ERR_INVAL, "requant: row stride %zu below the %zu bytes of a %s row",
                       s->row_bytes, rb, qtype_name(s->type));
    return 0;
}

int cpuq_requant_fp8_rows(const struct cpuq_ops *o, const struct cpuq_requant_src *s, int64_t b0,
                          int64_t b1, uint8_t *q, float *scale, float *scratch, char *err)
{
    const int64_t R = s->rows, K = s->cols, nbc = cpuq_fp8_nblk(K);
    for (int64_t br = b0; br < b1; br++) {
        const int64_t r0 = br * BLK, r1 = r0 + BLK < R ? r0 + BLK : R;
        for (int64_t r = r0; r < r1; r++) {
            float *f = scratch + (r - r0) * K;
            o->type[s->type].to_float((const char *)s->data + (size_t)r * s->row_bytes, f, K);
            for (int64_t c = 0; c < K; c++)
                if (!isfinite(f[c]))
                    return err_set(err, ERR_FORMAT,
                                   "requant: %s weight has a non-finite value (%g) at row %lld, "
                                   "column %lld",
                                   qtype_name(s->type), (double)f[c], (long long)r, (long long)c);
        }
        for (int64_t bc = 0; bc < nbc; bc++) {
            const int64_t c0 = bc * BLK, c1 = c0 + BLK < K ? c0 + BLK : K;
            float amax = 0.0f;
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++)
                    amax = fmaxf(amax, fabsf(scratch[(r - r0) * K + c]));
            /* no subnormal scales: a GPU kernel may flush them to zero */
            float sc = amax > 0.0f ? fmaxf(amax / 448.0f, FLT_MIN) : 1.0f;
            scale[br * nbc + bc] = sc;
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++)
                    q[r * K + c] = cpuq_e4m3_rne(scratch[(r - r0) * K + c] / sc);
        }
    }
    return 0;
}

struct job {
    const struct cpuq_ops *o;
    const struct cpuq_requant_src *s;
    uint8_t *q;
    float *scale;
    float **scratch; /* per thread */
    /* per thread: its lowest failing block row (-1: none), that row's code and message */
    int64_t *bad;
    int *rc;
    char (*err)[ERR_LEN];
};

static void run_rows(void *ctx, int64_t b0, int64_t b1, int t)
{
    struct job *j = ctx;
    for (int64_t b = b0; b < b1; b++) {
        char e[ERR_LEN];
        int rc = cpuq_requant_fp8_rows(j->o, j->s, b, b + 1, j->q, j->scale, j->scratch[t], e);
        if (rc && (j->bad[t] < 0 || b < j->bad[t])) {
            j->bad[t] = b;
            j->rc[t] = rc;
            snprintf(j->err[t], ERR_LEN, "%s", e);
        }
    }
}

int cpuq_requant_fp8(const struct cpuq_ops *o, struct wpool *pool, const struct cpuq_requant_src *s,
                     uint8_t *q, float *scale, char *err)
{
    int rc = cpuq_requant_fp8_check(o, s, err);
    if (rc) return rc;
    const int nt = pool ? wpool_n_threads(pool) : 1;
    const int64_t nbr = cpuq_fp8_nblk(s->rows);
    struct job j = {.o = o, .s = s, .q = q, .scale = scale};
    j.scratch = calloc((size_t)nt, sizeof *j.scratch);
    j.rc = calloc((size_t)nt, sizeof *j.rc);
    j.err = calloc((size_t)nt, sizeof *j.err);
    j.bad = malloc((size_t)nt * sizeof *j.bad);
    if (!j.scratch || !j.rc || !j.err || !j.bad) rc = ERR_NOMEM;
    for (int t = 0; !rc && t < nt; t++) {
        j.bad[t] = -1;
        if (!(j.scratch[t] = malloc(cpuq_requant_fp8_scratch(s->cols)))) rc = ERR_NOMEM;
    }
    if (rc) err_set(err, rc, "requant: out of memory for the scratch");
    else wpool_run(pool, run_rows, &j, nbr, 1);
    int best = -1; /* the lowest failing block row's message, whichever thread ran it */
    for (int t = 0; !rc && t < nt; t++)
        if (j.bad[t] >= 0 && (best < 0 || j.bad[t] < j.bad[best])) best = t;
    if (best >= 0) rc = err_set(err, j.rc[best], "%s", j.err[best]);
    for (int t = 0; j.scratch && t < nt; t++) free(j.scratch[t]);
    free(j.scratch);
    free(j.rc);
    free(j.err);
    free(j.bad);
    return rc;
}
