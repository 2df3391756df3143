/* qtype.c - the traits table of qtype.h. Block sizes are ggml's (bit-compatible layouts). */
#include "qtype.h"

#include <strings.h>

/* clang-format off */
static const struct qtype_traits qtype_table[QTYPE_COUNT_] = {
    [QTYPE_F32] = {"f32", 1, 4, 0},
    [QTYPE_F16] = {"f16", 1, 2, 0},
    [QTYPE_Q4_0] = {"q4_0", 32, 18, 1},
    [QTYPE_Q4_1] = {"q4_1", 32, 20, 1},
    [QTYPE_Q5_0] = {"q5_0", 32, 22, 1},
    [QTYPE_Q5_1] = {"q5_1", 32, 24, 1},
    [QTYPE_Q8_0] = {"q8_0", 32, 34, 1},
    [QTYPE_Q8_1] = {"q8_1", 32, 36, 1},
    [QTYPE_Q2_K] = {"q2_K", 256, 84, 1},
    [QTYPE_Q3_K] = {"q3_K", 256, 110, 1},
    [QTYPE_Q4_K] = {"q4_K", 256, 144, 1},
    [QTYPE_Q5_K] = {"q5_K", 256, 176, 1},
    [QTYPE_Q6_K] = {"q6_K", 256, 210, 1},
    [QTYPE_Q8_K] = {"q8_K", 256, 292, 1},
    [QTYPE_IQ2_XXS] = {"iq2_xxs", 256, 66, 1},
    [QTYPE_IQ2_XS] = {"iq2_xs", 256, 74, 1},
    [QTYPE_IQ3_XXS] = {"iq3_xxs", 256, 98, 1},
    [QTYPE_IQ1_S] = {"iq1_s", 256, 50, 1},
    [QTYPE_IQ4_NL] = {"iq4_nl", 32, 18, 1},
    [QTYPE_IQ3_S] = {"iq3_s", 256, 110, 1},
    [QTYPE_IQ2_S] = {"iq2_s", 256, 82, 1},
    [QTYPE_IQ4_XS] = {"iq4_xs", 256, 136, 1},
    [QTYPE_I8] = {"i8", 1, 1, 0},
    [QTYPE_I16] = {"i16", 1, 2, 0},
    [QTYPE_I32] = {"i32", 1, 4, 0},
    [QTYPE_I64] = {"i64", 1, 8, 0},
    [QTYPE_F64] = {"f64", 1, 8, 0},
    [QTYPE_IQ1_M] = {"iq1_m", 256, 56, 1},
    [QTYPE_BF16] = {"bf16", 1, 2, 0},
    [QTYPE_F8_E4M3] = {"f8_e4m3", 1, 1, 0},
    [QTYPE_U8] = {"u8", 1, 1, 0},
};
/* clang-format on */

const struct qtype_traits *qtype_traits(int type)
{
    if (type < 0 || type >= QTYPE_COUNT_ || !qtype_table[type].name) return NULL;
    return &qtype_table[type];
}

const char *qtype_name(int type)
{
    const struct qtype_traits *t = qtype_traits(type);
    return t ? t->name : "?";
}

int qtype_from_name(const char *name)
{
    for (int i = 0; i < QTYPE_COUNT_; i++)
        if (qtype_table[i].name && strcasecmp(qtype_table[i].name, name) == 0) return i;
    return -1;
}

size_t qtype_row_bytes(int type, int64_t n, int *ok)
{
    const struct qtype_traits *t = qtype_traits(type);
    if (!t || n < 0 || n % t->blck != 0 ||
        n / t->blck > (int64_t)(SIZE_MAX / 2 / (size_t)t->type_size)) {
        if (ok) *ok = 0;
        return 0;
    }
    if (ok) *ok = 1;
    return (size_t)(n / t->blck) * (size_t)t->type_size;
}
