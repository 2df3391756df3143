/* qblocks.h - GGML block formats, laid out byte for byte as GGUF stores them.
 *
 * Each struct is one block of a quantized row; a row of n elements is n / QK blocks back to back.
 * Half-precision fields are raw IEEE f16 bits (uint16_t; convert with fp_f16_to_f32). Field order,
 * sizes and bit packing follow ggml's ggml-common.h (facts of the file format, re-expressed here);
 * the _Static_asserts tie every size to the table in qtype.c. Pure data: thread-safe.
 *
 * Packing summary (element j of a block, 0-based):
 *   Q4_0  x = d * (q - 8), q = nibble: qs[j] low for j < 16, qs[j-16] high for j >= 16
 *   Q4_1  x = d * q + m
 *   Q5_0  5th bit of element j is bit j of qh (little-endian u32); x = d * (q - 16)
 *   Q5_1  x = d * q + m
 *   Q8_0  x = d * qs[j];  Q8_1 also stores s = d * sum(qs) (activations only)
 *   K-quants: 256-element super-blocks split into 16 or 32 element sub-blocks with quantized
 *   scales (see ref/kquants.c for the exact bit layout of scales/qh/hmask).
 *   IQ4_NL / IQ4_XS: 4-bit indices into the non-linear table cpuq_kvalues_iq4nl (ref/iq4.c).
 *   IQ2_XXS .. IQ1_M: 256-element super-blocks of groups of 8 (IQ3: pairs of 4) whose values are
 *   one entry of a fixed grid (ref/iq_grids.h) times a sub-block scale, with sign bits (IQ2/IQ3)
 *   or a +-1/8 shift (IQ1); the bit layout is spelled out in ref/iquants.c.
 */
#ifndef TANDEM_QBLOCKS_H
#define TANDEM_QBLOCKS_H

#include <stdint.h>

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK8_1 32
#define QK_K 256
#define K_SCALE_SIZE 12 /* Q4_K/Q5_K: 8 scales + 8 mins, 6 bits each, packed in 12 bytes */
#define QK4_NL 32

struct block_q4_0 {
    uint16_t d;            /* f16 scale */
    uint8_t qs[QK4_0 / 2]; /* nibbles */
};

struct block_q4_1 {
    uint16_t d; /* f16 scale */
    uint16_t m; /* f16 minimum (offset) */
    uint8_t qs[QK4_1 / 2];
};

struct block_q5_0 {
    uint16_t d;
    uint8_t qh[4]; /* 5th bits, little-endian u32 */
    uint8_t qs[QK5_0 / 2];
};

struct block_q5_1 {
    uint16_t d;
    uint16_t m;
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
};

struct block_q8_0 {
    uint16_t d;
    int8_t qs[QK8_0];
};

struct block_q8_1 {
    uint16_t d; /* f16 scale */
    uint16_t s; /* f16 of d * sum(qs) */
    int8_t qs[QK8_1];
};

/* 2.625 bits/weight: 16 sub-blocks of 16; scales[i] = 4-bit scale (low) | 4-bit min (high) */
struct block_q2_K {
    uint8_t scales[QK_K / 16];
    uint8_t qs[QK_K / 4]; /* 2-bit quants */
    uint16_t d;           /* super-block scale for the scales */
    uint16_t dmin;        /* super-block scale for the mins */
};

/* 3.4375 bits/weight: 16 sub-blocks of 16 with 6-bit signed scales (offset 32) */
struct block_q3_K {
    uint8_t hmask[QK_K / 8]; /* high bit of each quant */
    uint8_t qs[QK_K / 4];    /* low 2 bits */
    uint8_t scales[12];      /* 16 x 6-bit scales */
    uint16_t d;
};

/* 4.5 bits/weight: 8 sub-blocks of 32, x = d * sc * q - dmin * m */
struct block_q4_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
};

/* 5.5 bits/weight: as Q4_K plus a 5th bit per quant */
struct block_q5_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
};

/* 6.5625 bits/weight: 16 sub-blocks of 16 with int8 scales, x = d * sc * (q - 32) */
struct block_q6_K {
    uint8_t ql[QK_K / 2]; /* low 4 bits */
    uint8_t qh[QK_K / 4]; /* high 2 bits */
    int8_t scales[QK_K / 16];
    uint16_t d;
};

/* activation format of the K-quants: float scale, int8 quants, sums of each 16 quants */
struct block_q8_K {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
};

struct block_iq4_nl {
    uint16_t d;
    uint8_t qs[QK4_NL / 2]; /* nibble layout as Q4_0 */
};

/* 4.25 bits/weight: 8 sub-blocks of 32, 6-bit scales (offset 32): low 4 bits in scales_l
 * (two per byte), high 2 bits in scales_h (2 per sub-block) */
struct block_iq4_xs {
    uint16_t d;
    uint16_t scales_h;
    uint8_t scales_l[QK_K / 64];
    uint8_t qs[QK_K / 2];
};

/* 2.0625 bits/weight: per 32 elements 4 u16 = 4 grid bytes (8 bits each), then one u32 with
 * 4 x 7 sign bits and a 4-bit scale in bits 28-31 */
struct block_iq2_xxs {
    uint16_t d;
    uint16_t qs[QK_K / 8];
};

/* 2.3125 bits/weight: per group of 8 a u16 = 9-bit grid index | 7 sign bits << 9; two 4-bit
 * scales per 32 elements */
struct block_iq2_xs {
    uint16_t d;
    uint16_t qs[QK_K / 8];
    uint8_t scales[QK_K / 32];
};

/* 2.5625 bits/weight: 10-bit grid indices (low 8 in qs[0..31], high 2 in qh), 8 explicit sign
 * bits per group (qs[32..63]), two 4-bit scales per 32 elements */
struct block_iq2_s {
    uint16_t d;
    uint8_t qs[QK_K / 4];
    uint8_t qh[QK_K / 32];
    uint8_t scales[QK_K / 32];
};

/* 3.0625 bits/weight: 8-bit indices of 4-value grid points (qs[0..63]), then per 32 elements a
 * u32 of 4 x 7 sign bits and a 4-bit scale (qs[64..95]) */
struct block_iq3_xxs {
    uint16_t d;
    uint8_t qs[3 * QK_K / 8];
};

/* 3.4375 bits/weight: 9-bit indices of 4-value grid points (low 8 in qs, 9th in qh), 8 explicit
 * sign bits per group of 8, one 4-bit scale per 32 elements */
struct block_iq3_s {
    uint16_t d;
    uint8_t qs[QK_K / 4];
    uint8_t qh[QK_K / 32];
    uint8_t signs[QK_K / 8];
    uint8_t scales[QK_K / 64];
};

/* 1.5625 bits/weight: 11-bit indices of ternary grid points (low 8 in qs, 3 high in qh), per 32
 * elements qh = 4 x 3 index bits | 3-bit scale << 12 | delta sign << 15 */
struct block_iq1_s {
    uint16_t d;
    uint8_t qs[QK_K / 8];
    uint16_t qh[QK_K / 32];
};

/* 1.75 bits/weight: 11-bit indices (low 8 in qs; per group a nibble of qh = 3 high bits | delta
 * sign << 3), 3-bit scales per 16 elements; the f16 super-block scale is spread over the top
 * nibbles of the four u16 words of scales */
struct block_iq1_m {
    uint8_t qs[QK_K / 8];
    uint8_t qh[QK_K / 16];
    uint8_t scales[QK_K / 32];
};

_Static_assert(sizeof(struct block_q4_0) == 18, "block_q4_0 size");
_Static_assert(sizeof(struct block_q4_1) == 20, "block_q4_1 size");
_Static_assert(sizeof(struct block_q5_0) == 22, "block_q5_0 size");
_Static_assert(sizeof(struct block_q5_1) == 24, "block_q5_1 size");
_Static_assert(sizeof(struct block_q8_0) == 34, "block_q8_0 size");
_Static_assert(sizeof(struct block_q8_1) == 36, "block_q8_1 size");
_Static_assert(sizeof(struct block_q2_K) == 84, "block_q2_K size");
_Static_assert(sizeof(struct block_q3_K) == 110, "block_q3_K size");
_Static_assert(sizeof(struct block_q4_K) == 144, "block_q4_K size");
_Static_assert(sizeof(struct block_q5_K) == 176, "block_q5_K size");
_Static_assert(sizeof(struct block_q6_K) == 210, "block_q6_K size");
_Static_assert(sizeof(struct block_q8_K) == 292, "block_q8_K size");
_Static_assert(sizeof(struct block_iq4_nl) == 18, "block_iq4_nl size");
_Static_assert(sizeof(struct block_iq4_xs) == 136, "block_iq4_xs size");
_Static_assert(sizeof(struct block_iq2_xxs) == 66, "block_iq2_xxs size");
_Static_assert(sizeof(struct block_iq2_xs) == 74, "block_iq2_xs size");
_Static_assert(sizeof(struct block_iq2_s) == 82, "block_iq2_s size");
_Static_assert(sizeof(struct block_iq3_xxs) == 98, "block_iq3_xxs size");
_Static_assert(sizeof(struct block_iq3_s) == 110, "block_iq3_s size");
_Static_assert(sizeof(struct block_iq1_s) == 50, "block_iq1_s size");
_Static_assert(sizeof(struct block_iq1_m) == 56, "block_iq1_m size");

/* the 16 values an IQ4_NL / IQ4_XS nibble indexes (ggml's kvalues_iq4nl) */
extern const int8_t cpuq_kvalues_iq4nl[16];

#endif
