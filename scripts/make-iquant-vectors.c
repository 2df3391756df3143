/* make-iquant-vectors.c - writes reference data for the i-quants with ggml's own code (built and
 * linked by make-iquant-vectors.sh against a ggml source tree; not part of the tandem build).
 *
 * Output GGUF, laid out like ggml-quants-512x64.gguf: w.src F32 [64 x 512] (rows of 512), x F32
 * [4 x 512], and for each i-quant T: w.T = ggml's quantization of w.src (with a random positive
 * importance matrix, which IQ2_XXS / IQ2_XS / IQ1_S / IQ1_M require), w.T.f32 = ggml's
 * dequantization of w.T, y.T F32 [4 x 64] = ggml's CPU vec_dot of each row of w.T with each row
 * of x quantized to the type's vec_dot_type (Q8_K) by ggml. Inputs come from a fixed-seed
 * generator, so a run is reproducible.
 *
 * Usage: make-iquant-vectors OUT.gguf
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml-cpu.h"
#include "ggml.h"
#include "gguf.h"

enum { ROWS = 64, COLS = 512, NTOK = 4 };

static uint64_t rng = 0x2545f4914f6cdd1dull;
static double urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static float nrand(void)
{
    double u1 = urand(), u2 = urand();
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
}

static struct ggml_tensor *add(struct ggml_context *ctx, struct gguf_context *g, const char *name,
                               enum ggml_type type, int64_t ne0, int64_t ne1, const void *data)
{
    struct ggml_tensor *t = ggml_new_tensor_2d(ctx, type, ne0, ne1);
    ggml_set_name(t, name);
    memcpy(t->data, data, ggml_nbytes(t));
    gguf_add_tensor(g, t);
    return t;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUT.gguf\n", argv[0]);
        return 2;
    }
    static const enum ggml_type types[] = {GGML_TYPE_IQ2_XXS, GGML_TYPE_IQ2_XS, GGML_TYPE_IQ2_S,
                                           GGML_TYPE_IQ3_XXS, GGML_TYPE_IQ3_S,  GGML_TYPE_IQ1_S,
                                           GGML_TYPE_IQ1_M};
    const int ntypes = (int)(sizeof types / sizeof types[0]);
    ggml_cpu_init();
    struct ggml_init_params ip = {64u << 20, NULL, false};
    struct ggml_context *ctx = ggml_init(ip);
    struct gguf_context *g = gguf_init_empty();

    static float w[ROWS * COLS], x[NTOK * COLS], imat[COLS], deq[ROWS * COLS], y[NTOK * ROWS];
    /* rows with different scales and a few outliers, like real weights */
    for (int r = 0; r < ROWS; r++) {
        const float s = 0.02f * (float)(1 + r % 7);
        for (int c = 0; c < COLS; c++)
            w[r * COLS + c] = s * nrand() * (urand() < 0.01 ? 6.0f : 1.0f);
    }
    for (int i = 0; i < NTOK * COLS; i++) x[i] = nrand();
    for (int c = 0; c < COLS; c++) imat[c] = (float)(0.1 + urand() * urand() * 4);
    add(ctx, g, "w.src", GGML_TYPE_F32, COLS, ROWS, w);
    add(ctx, g, "x", GGML_TYPE_F32, COLS, NTOK, x);

    for (int k = 0; k < ntypes; k++) {
        const enum ggml_type t = types[k];
        const char *tn = ggml_type_name(t);
        const size_t rb = ggml_row_size(t, COLS);
        char *q = malloc(rb * ROWS);
        ggml_quantize_init(t);
        ggml_quantize_chunk(t, w, q, 0, ROWS, COLS, imat);
        ggml_get_type_traits(t)->to_float(q, deq, (int64_t)ROWS * COLS);

        const struct ggml_type_traits_cpu *tc = ggml_get_type_traits_cpu(t);
        const enum ggml_type vt = tc->vec_dot_type;
        const size_t ab = ggml_row_size(vt, COLS);
        char *a = malloc(ab * NTOK);
        for (int i = 0; i < NTOK; i++)
            ggml_get_type_traits_cpu(vt)->from_float(x + i * COLS, a + i * ab, COLS);
        for (int i = 0; i < NTOK; i++)
            for (int r = 0; r < ROWS; r++)
                tc->vec_dot(COLS, &y[i * ROWS + r], 0, q + r * rb, 0, a + i * ab, 0, 1);

        char name[64];
        snprintf(name, sizeof name, "w.%s", tn);
        add(ctx, g, name, t, COLS, ROWS, q);
        snprintf(name, sizeof name, "w.%s.f32", tn);
        add(ctx, g, name, GGML_TYPE_F32, COLS, ROWS, deq);
        snprintf(name, sizeof name, "y.%s", tn);
        add(ctx, g, name, GGML_TYPE_F32, ROWS, NTOK, y);
        printf("%-8s vec_dot_type %s, %zu bytes per row\n", tn, ggml_type_name(vt), rb);
        free(q);
        free(a);
    }
    gguf_set_val_str(g, "general.description",
                     "ggml i-quant reference vectors (tandem scripts/make-iquant-vectors.c)");
    if (!gguf_write_to_file(g, argv[1], false)) {
        fprintf(stderr, "cannot write %s\n", argv[1]);
        return 1;
    }
    gguf_free(g);
    ggml_free(ctx);
    ggml_quantize_free();
    return 0;
}
