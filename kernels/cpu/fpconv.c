/* fpconv.c - f16 and FP8 e4m3 conversions (see fpconv.h). Bit manipulation, no tables, so the
 * behaviour on every edge (subnormals, ties, saturation, NaN) is visible in the code. */
#include "fpconv.h"

#include <math.h>

float fp_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13); /* inf / nan */
    } else if (exp == 0) {
        float f = ldexpf((float)man, -24); /* subnormal (or zero) */
        return sign ? -f : f;
    } else {
        u = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t fp_f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    float a = fabsf(f);
    if (isnan(f)) return sign | 0x7e00;
    if (a >= 65520.0f) return sign | 0x7c00;   /* rounds to inf */
    if (a < 6.103515625e-05f) {                /* f16 subnormal range: step 2^-24 */
        float q = nearbyintf(a * 16777216.0f); /* RNE under the default mode */
        return sign | (uint16_t)q;
    }
    uint32_t au = u & 0x7fffffffu;
    uint32_t exp = (au >> 23) - 112, man = au & 0x7fffff;
    uint32_t r = (exp << 10) | (man >> 13);
    uint32_t rest = man & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (r & 1))) r++; /* carries into the exponent correctly */
    return sign | (uint16_t)r;
}

float fp_e4m3_to_f32(uint8_t v)
{
    int sign = v >> 7, exp = (v >> 3) & 0xf, man = v & 7;
    float f;
    if (exp == 0xf && man == 7) return NAN;
    if (exp == 0) f = ldexpf((float)man, -9);    /* subnormal: m/8 * 2^-6 */
    else f = ldexpf((float)(8 + man), exp - 10); /* (1 + m/8) * 2^(e-7) */
    return sign ? -f : f;
}

uint8_t fp_f32_to_e4m3(float f)
{
    if (isnan(f)) return 0x7f;
    uint8_t sign = signbit(f) ? 0x80 : 0;
    float a = fabsf(f);
    if (a >= 448.0f) return sign | 0x7e;  /* saturate to 448 */
    if (a < 0.015625f) {                  /* below 2^-6: subnormal, step 2^-9 */
        float q = nearbyintf(a * 512.0f); /* 0..8; 8 is the smallest normal */
        return sign | (uint8_t)q;
    }
    int e;
    float m = frexpf(a, &e); /* a = m * 2^e, m in [0.5, 1) */
    /* a = (1 + k/8) * 2^(e-1): k = m*16 - 8, rounded to nearest even */
    float k = nearbyintf(m * 16.0f - 8.0f);
    int exp = e - 1 + 7;
    if (k >= 8.0f) {
        k = 0;
        exp++;
    }
    if (exp > 15 || (exp == 15 && k > 6)) return sign | 0x7e;
    return sign | (uint8_t)(exp << 3) | (uint8_t)k;
}
