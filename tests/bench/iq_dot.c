/* iq_dot.c - in-cache speed of the single-token dots (vec_dot) of Q4_K and the seven grid
 * i-quants in one ISA column: one thread, 64 rows of 7168 weights (random blocks with sane f16
 * scales) against one Q8_K row, 400 passes, best of 7; weights/ns, GB/s of blocks, the time per
 * weight relative to Q4_K, and whether every row's result equals the scalar column's bitwise (the
 * grid i-quants must; Q4_K's SIMD dots sum in another float order).
 * Not part of the meson build (a developer's check of kernel changes); against a configured
 * build directory B:
 *   cc -O2 -std=gnu11 -I. -IB tests/bench/iq_dot.c -o /tmp/iq_dot -Wl,--start-group
 *      B/libtandem_kernels_cpu.a B/kernels/cpu/libcpuq_*.a B/libtandem_common.a -Wl,--end-group
 *      -lm -lpthread
 *   /tmp/iq_dot avx2      (or avx512, amx, scalar)
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"
#include "kernels/cpu/cpuq.h"
#include "kernels/cpu/fpconv.h"
#include "kernels/cpu/qblocks.h"
#include "kernels/cpu/qtype.h"

static uint64_t st = 88172645463325252ull;
static uint64_t rnd(void)
{
    st ^= st << 13;
    st ^= st >> 7;
    st ^= st << 17;
    return st;
}
static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
enum { N = 7168, ROWS = 64 };
int main(int argc, char **argv)
{
    char err[ERR_LEN];
    const struct cpuq_ops *o, *ref;
    if (cpuq_ops_get(cpuq_isa_parse(argc > 1 ? argv[1] : "avx2"), &o, err)) {
        puts(err);
        return 1;
    }
    cpuq_ops_get(CPUQ_ISA_SCALAR, &ref, err);
    int types[] = {QTYPE_Q4_K,    QTYPE_IQ2_XXS, QTYPE_IQ2_XS, QTYPE_IQ2_S,
                   QTYPE_IQ3_XXS, QTYPE_IQ3_S,   QTYPE_IQ1_S,  QTYPE_IQ1_M};
    static float xf[N];
    for (int i = 0; i < N; i++) xf[i] = (float)((int64_t)(rnd() >> 40) - (1 << 23)) / (1 << 23);
    double q4 = 0;
    for (int k = 0; k < 8; k++) {
        int type = types[k];
        size_t rb = cpuq_row_size(type, N);
        uint8_t *w = malloc(rb * ROWS);
        for (size_t i = 0; i < rb * ROWS; i++) w[i] = (uint8_t)(rnd() >> 56);
        const size_t bsz = (size_t)qtype_traits(type)->type_size;
        for (size_t b = 0; b < rb * ROWS / bsz; b++) {
            uint16_t d = fp_f32_to_f16(0.01f + (float)(rnd() >> 40) / 16777216.0f * 0.5f);
            uint8_t *blk = w + b * bsz;
            if (type == QTYPE_IQ1_M) {
                uint16_t sc[4];
                memcpy(sc, blk + offsetof(struct block_iq1_m, scales), 8);
                for (int j = 0; j < 4; j++)
                    sc[j] = (uint16_t)((sc[j] & 0x0fff) | (((d >> (4 * j)) & 0xf) << 12));
                memcpy(blk + offsetof(struct block_iq1_m, scales), sc, 8);
            } else memcpy(blk, &d, 2);
            if (type == QTYPE_Q4_K) memcpy(blk + 2, &d, 2);
        }
        int vt = o->type[type].vec_dot_type;
        uint8_t *a = malloc(cpuq_row_size(vt, N));
        ref->type[vt].from_float(xf, a, N);
        float s, r;
        double chk = 0;
        int bad = 0;
        for (int rr = 0; rr < ROWS; rr++) {
            o->type[type].vec_dot(N, &s, w + rr * rb, a);
            ref->type[type].vec_dot(N, &r, w + rr * rb, a);
            if (memcmp(&s, &r, 4)) bad++;
        }
        int reps = 400;
        double best = 1e9;
        for (int t = 0; t < 7; t++) {
            double t0 = now();
            for (int it = 0; it < reps; it++)
                for (int rr = 0; rr < ROWS; rr++) {
                    o->type[type].vec_dot(N, &s, w + rr * rb, a);
                    chk += s;
                }
            double dt = now() - t0;
            if (dt < best) best = dt;
        }
        double wpn = (double)N * ROWS * reps / (best * 1e9);
        if (k == 0) q4 = wpn;
        printf("%-8s %-7s %7.2f weights/ns  %6.2f GB/s  x%.2f of q4_K time  %s\n", qtype_name(type),
               argc > 1 ? argv[1] : "avx2", wpn, rb * ROWS * reps / best / 1e9, q4 / wpn,
               bad ? "differs from scalar" : "bitwise = scalar");
        (void)chk;
        free(w);
        free(a);
    }
    return 0;
}
