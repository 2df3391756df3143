/* test_ggml_ref.c - the scalar reference kernels against data written by ggml itself.
 *
 * Reads the GGUF named by $TANDEM_GGML_REF (default
 * $TANDEM_SHARED/testdata/ggml-quants/ggml-quants-512x64.gguf; skipped when absent) and the
 * i-quant vectors $TANDEM_SRC/tests/data/ggml-iquants-512x64.gguf (tests/data/README.md). For
 * every type T a file holds: w.src (F32 [rows x cols]), w.T = ggml's quantization of w.src, w.T.f32
 * = ggml's dequantization of w.T, x (F32 [ntok x cols]) and y.T = ggml_mul_mat(w.T, x) (F32 [ntok x
 * rows]). Checks, per type:
 *   - dequantize(w.T) == w.T.f32 bit for bit;
 *   - quantize(w.src) == w.T byte for byte (the same GGUF bytes from the same floats), except
 *     for the grid i-quants, whose quantizer is a simple encoder, not ggml's (quant "n/a");
 *   - cpuq_matmul(w.T, x) matches y.T with relative error < 1e-5 (error / max(|y|, rms(y))):
 *     ggml and tandem sum the same integers per block, so only the f32 order of the block sums
 *     and the final scaling can differ.
 * Also runs the same checks through every other ISA table this CPU supports.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "engine/weights/gguf.h"
#include "kernels/cpu/cpuq.h"
#include "tests/check.h"

static const char *const types[] = {"q4_0",  "q4_1",  "q5_0",    "q5_1",   "q8_0",   "q2_K",
                                    "q3_K",  "q4_K",  "q5_K",    "q6_K",   "iq4_xs", "iq4_nl",
                                    "bf16",  "f16",   "iq2_xxs", "iq2_xs", "iq2_s",  "iq3_xxs",
                                    "iq3_s", "iq1_s", "iq1_m"};

/* types whose quantizer is ggml's reference quantizer (bytes must match) */
static int quant_is_ggml(int type)
{
    switch (type) {
    case QTYPE_IQ2_XXS:
    case QTYPE_IQ2_XS:
    case QTYPE_IQ2_S:
    case QTYPE_IQ3_XXS:
    case QTYPE_IQ3_S:
    case QTYPE_IQ1_S:
    case QTYPE_IQ1_M: return 0;
    default: return 1;
    }
}

static const struct gguf_tensor_info *get(struct gguf_ctx *g, const char *name,
                                          struct gguf_tensor_info *ti)
{
    int64_t i = gguf_find_tensor(g, name);
    if (i < 0) return NULL;
    CHECK_EQ(gguf_tensor_info(g, i, ti), 0);
    return ti;
}

/* returns the number of failed checks for one type on one ISA table */
static int check_type(const struct cpuq_ops *o, struct gguf_ctx *g, const char *tname,
                      const float *src, int64_t rows, int64_t cols, const float *x, int64_t ntok)
{
    char name[64];
    struct gguf_tensor_info wq, wf, yt;
    int type = qtype_from_name(tname), fails = 0;
    CHECK(type >= 0);
    snprintf(name, sizeof name, "w.%s", tname);
    if (!get(g, name, &wq)) return 0; /* not in this file */
    CHECK_EQ(wq.type, type);
    CHECK_EQ(wq.ne[0], cols);
    CHECK_EQ(wq.ne[1], rows);
    snprintf(name, sizeof name, "w.%s.f32", tname);
    CHECK(get(g, name, &wf));
    snprintf(name, sizeof name, "y.%s", tname);
    CHECK(get(g, name, &yt));
    CHECK_EQ(yt.ne[0], rows);
    CHECK_EQ(yt.ne[1], ntok);

    const size_t rb = cpuq_row_size(type, cols);
    CHECK_EQ(rb * (size_t)rows, wq.nbytes);

    /* dequantize: bitwise */
    float *deq = malloc(sizeof(float) * (size_t)(rows * cols));
    CHECK(deq);
    for (int64_t r = 0; r < rows; r++)
        o->type[type].to_float((const char *)wq.data + r * rb, deq + r * cols, cols);
    int64_t bad_deq = 0;
    for (int64_t i = 0; i < rows * cols; i++) {
        float ref;
        memcpy(&ref, (const char *)wf.data + 4 * i, 4);
        if (memcmp(&ref, &deq[i], 4) != 0) {
            if (bad_deq == 0)
                printf("  %-7s dequant: first mismatch at %lld: %.9g vs ggml %.9g\n", tname,
                       (long long)i, deq[i], ref);
            bad_deq++;
        }
    }

    /* quantize: bytewise, and count mismatching blocks */
    uint8_t *q = malloc(rb * (size_t)rows);
    CHECK(q);
    cpuq_quantize_rows(o, type, src, q, rows, cols);
    const int bsz = qtype_traits(type)->type_size;
    int64_t bad_blocks = 0, nblocks = (int64_t)(rb * (size_t)rows) / bsz;
    for (int64_t b = 0; b < nblocks; b++)
        if (memcmp(q + b * bsz, (const uint8_t *)wq.data + b * bsz, (size_t)bsz) != 0) {
            if (bad_blocks == 0 && quant_is_ggml(type))
                printf("  %-7s quant: first differing block %lld\n", tname, (long long)b);
            bad_blocks++;
        }

    /* own encoder (i-quants): its round-trip error next to ggml's, which searches harder with
     * an importance matrix; must stay within 1.3x of ggml's */
    if (!quant_is_ggml(type)) {
        float *rt = malloc(sizeof(float) * (size_t)(rows * cols));
        CHECK(rt);
        for (int64_t r = 0; r < rows; r++) o->type[type].to_float(q + r * rb, rt + r * cols, cols);
        double se = 0, seg = 0, sx = 0;
        for (int64_t i = 0; i < rows * cols; i++) {
            se += ((double)rt[i] - src[i]) * ((double)rt[i] - src[i]);
            seg += ((double)deq[i] - src[i]) * ((double)deq[i] - src[i]);
            sx += (double)src[i] * src[i];
        }
        const double e = sqrt(se / sx), eg = sqrt(seg / sx);
        printf("  %-7s %-6s own quantizer rel RMS error %.4f, ggml's %.4f\n", tname, o->isa_name, e,
               eg);
        if (!(e <= 1.3 * eg)) fails++;
        free(rt);
    }

    /* matmul against y.T */
    float *y = malloc(sizeof(float) * (size_t)(rows * ntok));
    void *act = malloc(cpuq_act_size(o, type, cols, ntok) + 1);
    CHECK(y && act);
    CHECK_EQ(cpuq_matmul(o, type, wq.data, rb, rows, cols, x, ntok, y, act), 0);
    double max_rel = 0;
    for (int64_t t = 0; t < ntok; t++) {
        double ss = 0, amax = 0;
        for (int64_t r = 0; r < rows; r++) {
            float ref;
            memcpy(&ref, (const char *)yt.data + 4 * (t * rows + r), 4);
            ss += (double)ref * ref;
        }
        double rms = sqrt(ss / (double)rows);
        for (int64_t r = 0; r < rows; r++) {
            float ref;
            memcpy(&ref, (const char *)yt.data + 4 * (t * rows + r), 4);
            amax = fabs(ref) > rms ? fabs(ref) : rms;
            double rel = fabs((double)y[t * rows + r] - ref) / amax;
            if (rel > max_rel) max_rel = rel;
        }
    }
    int ok_mm = max_rel < 1e-5, exact = quant_is_ggml(type);
    printf("  %-7s %-6s dequant %s (%lld/%lld differ)  quant %s (%lld/%lld blocks differ)  "
           "matmul %s (max rel err %.2e)\n",
           tname, o->isa_name, bad_deq ? "FAIL" : "ok", (long long)bad_deq,
           (long long)(rows * cols),
           !exact       ? "n/a"
           : bad_blocks ? "FAIL"
                        : "ok",
           (long long)bad_blocks, (long long)nblocks, ok_mm ? "ok" : "FAIL", max_rel);
    fails += (bad_deq != 0) + (exact && bad_blocks != 0) + !ok_mm;
    free(deq);
    free(q);
    free(y);
    free(act);
    return fails;
}

/* all checks of one file on every ISA table this CPU supports; -1 if the file is absent */
static int check_file(const char *path)
{
    char err[ERR_LEN];
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("%s: not found, skipped\n", path);
        return -1;
    }
    fclose(f);

    struct gguf_ctx *g = NULL;
    if (gguf_open(path, &g, err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    struct gguf_tensor_info ws, xs;
    CHECK(get(g, "w.src", &ws));
    CHECK(get(g, "x", &xs));
    CHECK_EQ(ws.type, QTYPE_F32);
    CHECK_EQ(xs.type, QTYPE_F32);
    const int64_t cols = ws.ne[0], rows = ws.ne[1], ntok = xs.ne[1];
    CHECK_EQ(xs.ne[0], cols);
    printf("%s: %lld rows x %lld cols, %lld tokens\n", path, (long long)rows, (long long)cols,
           (long long)ntok);
    /* aligned copies of the float inputs */
    float *src = malloc(sizeof(float) * (size_t)(rows * cols));
    float *x = malloc(sizeof(float) * (size_t)(ntok * cols));
    CHECK(src && x);
    memcpy(src, ws.data, sizeof(float) * (size_t)(rows * cols));
    memcpy(x, xs.data, sizeof(float) * (size_t)(ntok * cols));

    int fails = 0;
    for (int isa = 0; isa < CPUQ_ISA_COUNT; isa++) {
        const struct cpuq_ops *o;
        if (cpuq_ops_get(isa, &o, NULL) != 0) continue;
        for (size_t k = 0; k < sizeof types / sizeof types[0]; k++)
            fails += check_type(o, g, types[k], src, rows, cols, x, ntok);
    }
    free(src);
    free(x);
    gguf_close(g);
    return fails;
}

int main(void)
{
    char path[4096];
    const char *env = getenv("TANDEM_GGML_REF");
    if (env && *env) {
        snprintf(path, sizeof path, "%s", env);
    } else {
        const char *shared = getenv("TANDEM_SHARED");
        snprintf(path, sizeof path, "%s/testdata/ggml-quants/ggml-quants-512x64.gguf",
                 shared ? shared : "../shared");
    }
    int f1 = check_file(path);
    const char *srcdir = getenv("TANDEM_SRC");
    snprintf(path, sizeof path, "%s/tests/data/ggml-iquants-512x64.gguf", srcdir ? srcdir : ".");
    int f2 = check_file(path);
    if (f1 < 0 && f2 < 0) SKIP("no ggml reference data found");
    int fails = (f1 > 0 ? f1 : 0) + (f2 > 0 ? f2 : 0);
    if (fails) printf("%d checks failed\n", fails);
    return fails ? 1 : 0;
}
