/* test_fpconv.c - small-float conversions: exhaustive round trips for every f16 and e4m3 code,
 * and f32 -> format rounding checked against the nearest representable value on random inputs. */
#include "../check.h"
#include "kernels/cpu/fpconv.h"

#include <stdint.h>

static uint64_t rng_state;
static uint32_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

int main(void)
{
    rng_state = check_seed();
    /* every e4m3 code decodes and re-encodes to itself (NaN aside) */
    for (int v = 0; v < 256; v++) {
        float f = fp_e4m3_to_f32((uint8_t)v);
        if ((v & 0x7f) == 0x7f) {
            CHECK(isnan(f));
            continue;
        }
        if (v == 0x80) {
            CHECK(f == 0.0f && signbit(f));
            continue;
        }
        CHECK_EQ(fp_f32_to_e4m3(f), v);
    }
    CHECK_NEAR(fp_e4m3_to_f32(0x7e), 448.0, 0);
    CHECK_NEAR(fp_e4m3_to_f32(0x01), 1.0 / 512, 0);
    CHECK_EQ(fp_f32_to_e4m3(1e9f), 0x7e);
    CHECK_EQ(fp_f32_to_e4m3(-1e9f), 0xfe);
    /* random f32: encoded value is a nearest e4m3 value, ties to even */
    for (int i = 0; i < 200000; i++) {
        float x = ((float)rnd() / 4294967296.0f * 2 - 1) * ldexpf(1.0f, (int)(rnd() % 24) - 14);
        uint8_t q = fp_f32_to_e4m3(x);
        float y = fp_e4m3_to_f32(q), err = fabsf(y - x);
        for (int v = 0; v < 256; v++) {
            if ((v & 0x7f) == 0x7f) continue;
            float z = fp_e4m3_to_f32((uint8_t)v);
            if (fabsf(x) > 448) continue;
            if (fabsf(z - x) < err) {
                fprintf(stderr, "x=%g encoded %g but %g is closer\n", x, y, z);
                return 1;
            }
            if (fabsf(z - x) == err && z != y && (q & 1) && fabsf(x) < 448) {
                fprintf(stderr, "x=%g tie not to even (%g vs %g)\n", x, y, z);
                return 1;
            }
        }
    }
    /* every finite f16 code round-trips; bf16 too */
    for (int v = 0; v < 65536; v++) {
        float f = fp_f16_to_f32((uint16_t)v);
        if (isnan(f)) continue;
        CHECK_EQ(fp_f32_to_f16(f), v);
        float b = fp_bf16_to_f32((uint16_t)v);
        if (!isnan(b)) CHECK_EQ(fp_f32_to_bf16(b), v);
    }
    for (int i = 0; i < 200000; i++) {
        uint32_t u = rnd();
        float x;
        memcpy(&x, &u, 4);
        if (isnan(x) || fabsf(x) > 60000) continue;
        float y = fp_f16_to_f32(fp_f32_to_f16(x));
        double ulp = fabs(x) < 6.103515625e-05 ? ldexp(1, -24) : ldexp(1, ilogb(x) - 10);
        CHECK(fabs((double)y - x) <= ulp / 2);
        float b = fp_bf16_to_f32(fp_f32_to_bf16(x));
        CHECK(fabs((double)b - x) <= fabs(x) * ldexp(1, -8) + 1e-38);
    }
    return 0;
}
