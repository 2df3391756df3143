/* test_iquants.c - the grid i-quants (IQ2_XXS .. IQ1_M) on random block bytes.
 *
 * 1. Random bytes as blocks (the f16 scales made finite): every ISA table's vec_dot equals the
 *    scalar reference bit for bit (the SIMD kernels keep the reference's integer sums and f32
 *    order), and equals the double-precision dot of the dequantized operands to float rounding;
 *    so does every table's multi-token path (cpuq_matmul_rows: mul_mat where there is one) for
 *    the same row against NTOK copies of the activation row.
 * 2. Fuzz: raw random bytes (scales included: NaN / inf allowed) are dequantized and dotted on
 *    every table (vec_dot and the multi-token path). Rows sit at the very end of exactly sized heap
 * buffers, so an out-of-bounds read of a grid or a block shows under the ASan build; results are
 * not checked. Fresh seed each run (check_seed(); replay with TANDEM_TEST_SEED).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "kernels/cpu/cpuq.h"
#include "kernels/cpu/fpconv.h"
#include "kernels/cpu/qblocks.h"
#include "tests/check.h"

static const int types[] = {QTYPE_IQ2_XXS, QTYPE_IQ2_XS, QTYPE_IQ2_S, QTYPE_IQ3_XXS,
                            QTYPE_IQ3_S,   QTYPE_IQ1_S,  QTYPE_IQ1_M};
#define NTYPES (int)(sizeof types / sizeof types[0])

static uint64_t rng_state;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static float frand(void) { return (float)(rnd() >> 40) / 16777216.0f * 2 - 1; }

static void fill_bytes(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(rnd() >> 56);
}

/* give every block of a random row a finite f16 scale in [1/64, 1) */
static void fix_scales(int type, uint8_t *row, int64_t nblk)
{
    const size_t bsz = (size_t)qtype_traits(type)->type_size;
    for (int64_t b = 0; b < nblk; b++) {
        uint8_t *blk = row + (size_t)b * bsz;
        const uint16_t d = fp_f32_to_f16(1.0f / 64 + (float)(rnd() >> 40) / 16777216.0f * 0.98f);
        if (type == QTYPE_IQ1_M) {
            /* the f16 lives in the top nibbles of the four u16 scale words */
            uint16_t sc[4];
            memcpy(sc, blk + offsetof(struct block_iq1_m, scales), 8);
            for (int k = 0; k < 4; k++)
                sc[k] = (uint16_t)((sc[k] & 0x0fff) | (((d >> (4 * k)) & 0xf) << 12));
            memcpy(blk + offsetof(struct block_iq1_m, scales), sc, 8);
        } else {
            memcpy(blk, &d, 2); /* every other i-quant block starts with its f16 d */
        }
    }
}

enum { NBLK = 6, N = NBLK * QK_K, ROWS = 40, NTOK = 3 };

int main(void)
{
    rng_state = check_seed() | 1;
    char err[ERR_LEN];
    const struct cpuq_ops *ref;
    CHECK_EQ(cpuq_ops_get(CPUQ_ISA_SCALAR, &ref, err), 0);
    static float xf[N], wd[N], ad[N];
    const size_t ab = cpuq_row_size(QTYPE_Q8_K, N);
    uint8_t *act = malloc(ab), *acts = malloc(NTOK * ab);
    CHECK(act && acts);
    float ym[NTOK];

    for (int k = 0; k < NTYPES; k++) {
        const int type = types[k];
        const size_t rb = cpuq_row_size(type, N);
        CHECK(rb > 0);
        CHECK_EQ(ref->type[type].vec_dot_type, QTYPE_Q8_K);
        /* exactly sized: the row ends where the buffer ends */
        uint8_t *w = malloc(rb);
        CHECK(w);
        double worst = 0;
        for (int r = 0; r < ROWS; r++) {
            fill_bytes(w, rb);
            fix_scales(type, w, NBLK);
            for (int i = 0; i < N; i++) xf[i] = frand();
            ref->type[QTYPE_Q8_K].from_float(xf, act, N);
            for (int t = 0; t < NTOK; t++) memcpy(acts + t * ab, act, ab);
            ref->type[type].to_float(w, wd, N);
            ref->type[QTYPE_Q8_K].to_float(act, ad, N);
            double exact = 0, mag = 0;
            for (int i = 0; i < N; i++) {
                exact += (double)wd[i] * ad[i];
                mag += fabs((double)wd[i] * ad[i]);
            }
            float s_ref;
            ref->type[type].vec_dot(N, &s_ref, w, act);
            const double rel = fabs(s_ref - exact) / (mag + 1e-30);
            if (rel > worst) worst = rel;
            if (!(rel < 1e-5)) {
                fprintf(stderr, "%s: scalar dot %.9g vs dequantized dot %.9g\n", qtype_name(type),
                        s_ref, exact);
                return 1;
            }
            for (int isa = CPUQ_ISA_AVX2; isa < CPUQ_ISA_COUNT; isa++) {
                const struct cpuq_ops *o;
                if (cpuq_ops_get(isa, &o, NULL) != 0) continue;
                float s;
                o->type[type].vec_dot(N, &s, w, act);
                if (memcmp(&s, &s_ref, 4) != 0) {
                    fprintf(stderr, "%s %s: vec_dot %.9g, scalar %.9g (row %d)\n", o->isa_name,
                            qtype_name(type), s, s_ref, r);
                    return 1;
                }
                cpuq_matmul_rows(o, type, w, rb, 0, 1, N, acts, NTOK, ym, 1);
                for (int t = 0; t < NTOK; t++)
                    if (memcmp(&ym[t], &s_ref, 4) != 0) {
                        fprintf(stderr, "%s %s: mul_mat token %d %.9g, scalar %.9g (row %d)\n",
                                o->isa_name, qtype_name(type), t, ym[t], s_ref, r);
                        return 1;
                    }
            }
        }
        /* fuzz: raw bytes, NaN / inf scales allowed */
        for (int r = 0; r < ROWS; r++) {
            fill_bytes(w, rb);
            for (int isa = 0; isa < CPUQ_ISA_COUNT; isa++) {
                const struct cpuq_ops *o;
                if (cpuq_ops_get(isa, &o, NULL) != 0) continue;
                float s;
                o->type[type].to_float(w, wd, N);
                o->type[type].vec_dot(N, &s, w, act);
                cpuq_matmul_rows(o, type, w, rb, 0, 1, N, acts, NTOK, ym, 1);
            }
        }
        printf("  %-7s random blocks: every ISA equals scalar bitwise; scalar vs dequantized dot "
               "max rel err %.2e; fuzz ok\n",
               qtype_name(type), worst);
        free(w);
    }
    free(act);
    free(acts);
    return 0;
}
