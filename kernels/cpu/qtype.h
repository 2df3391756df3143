/* qtype.h - every element type tandem can hold, with GGML's numbering for the GGML types.
 *
 * The numeric values of the GGML types equal ggml's `enum ggml_type`, because GGUF files store
 * them on disk. Types GGML does not have (FP8 e4m3, raw bytes) use values from 100 up and never
 * appear in a GGUF tensor header. A "row" of a quantized type is a whole number of blocks; the
 * size of n elements is n / blck * type_size. Pure data: thread-safe.
 */
#ifndef TANDEM_QTYPE_H
#define TANDEM_QTYPE_H

#include <stddef.h>
#include <stdint.h>

enum qtype {
    QTYPE_F32 = 0,
    QTYPE_F16 = 1,
    QTYPE_Q4_0 = 2,
    QTYPE_Q4_1 = 3,
    QTYPE_Q5_0 = 6,
    QTYPE_Q5_1 = 7,
    QTYPE_Q8_0 = 8,
    QTYPE_Q8_1 = 9,
    QTYPE_Q2_K = 10,
    QTYPE_Q3_K = 11,
    QTYPE_Q4_K = 12,
    QTYPE_Q5_K = 13,
    QTYPE_Q6_K = 14,
    QTYPE_Q8_K = 15,
    QTYPE_IQ2_XXS = 16,
    QTYPE_IQ2_XS = 17,
    QTYPE_IQ3_XXS = 18,
    QTYPE_IQ1_S = 19,
    QTYPE_IQ4_NL = 20,
    QTYPE_IQ3_S = 21,
    QTYPE_IQ2_S = 22,
    QTYPE_IQ4_XS = 23,
    QTYPE_I8 = 24,
    QTYPE_I16 = 25,
    QTYPE_I32 = 26,
    QTYPE_I64 = 27,
    QTYPE_F64 = 28,
    QTYPE_IQ1_M = 29,
    QTYPE_BF16 = 30,
    /* not GGML types */
    QTYPE_F8_E4M3 = 100, /* DeepSeek FP8 weights; 128x128 block scales live in a separate tensor */
    QTYPE_U8 = 101,      /* raw bytes (KTransformers' merged expert blobs) */
    QTYPE_COUNT_ = 102
};

struct qtype_traits {
    const char *name; /* ggml's lowercase name: "q4_K", "bf16", ...; tandem: "f8_e4m3", "u8" */
    int blck;         /* elements per block (1 for plain types) */
    int type_size;    /* bytes per block */
    int is_quant;     /* a GGML block format */
};

/* NULL for values that are not a known type (e.g. read from a corrupt file). */
const struct qtype_traits *qtype_traits(int type);
const char *qtype_name(int type);      /* "?" for unknown */
int qtype_from_name(const char *name); /* case-insensitive; -1 if unknown */
/* Bytes for n elements; returns 0 (and *ok = 0) if n is not a multiple of the block or overflows.
 */
size_t qtype_row_bytes(int type, int64_t n, int *ok);

#endif
