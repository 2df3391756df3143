/* test_vocab_gguf.c - llama.cpp's tokenizer cases for the DeepSeek-LLM and DeepSeek-Coder
 * vocabularies: vocab loaded from the vocab-only GGUF, every case must give the expected ids.
 *
 * Data: $TANDEM_SHARED/testdata/llama-vocab/ggml-vocab-deepseek-{llm,coder}.gguf(.inp/.out);
 * .inp holds strings separated by "\n__ggml_vocab_test__\n", .out one line of ids per string
 * (no BOS, special tokens not parsed). Skips (77) when the data is absent.
 */
#include "../check.h"

#include "../../common/err.h"
#include "../../engine/text/tok.h"
#include "../../engine/weights/gguf.h"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    CHECK(b && fread(b, 1, (size_t)n, f) == (size_t)n);
    b[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return b;
}

static int run_vocab(const char *dir, const char *name)
{
    char path[4096], err[ERR_LEN] = "";
    snprintf(path, sizeof path, "%s/%s.gguf", dir, name);
    struct gguf_ctx *g;
    int rc = gguf_open(path, &g, err);
    if (rc) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    struct tok *t;
    rc = tok_create_gguf(&t, g, err);
    gguf_close(g);
    if (rc) {
        fprintf(stderr, "%s: %s\n", name, err);
        return 1;
    }

    size_t ni, no;
    snprintf(path, sizeof path, "%s/%s.gguf.inp", dir, name);
    char *inp = slurp(path, &ni);
    snprintf(path, sizeof path, "%s/%s.gguf.out", dir, name);
    char *outp = slurp(path, &no);
    CHECK(inp && outp);
    const char *sep = "\n__ggml_vocab_test__\n";
    char *p = inp, *line = outp;
    int cases = 0, bad = 0;
    struct tok_ids ids = {0};
    for (;;) {
        char *q = strstr(p, sep);
        if (!q) break;
        char *nl = strchr(line, '\n');
        CHECK(nl);
        *nl = 0;
        ids.n = 0;
        rc = tok_encode(t, p, (size_t)(q - p), 0, &ids, err);
        CHECK_EQ(rc, 0);
        /* compare with the expected line */
        char got[65536];
        size_t o = 0;
        for (size_t i = 0; i < ids.n && o + 16 < sizeof got; i++)
            o += (size_t)snprintf(got + o, sizeof got - o, " %d", ids.v[i]);
        got[o] = 0;
        if (strcmp(got, line) != 0) {
            fprintf(stderr, "%s case %d: \"%.*s\"\n  want:%s\n  got: %s\n", name, cases,
                    (int)(q - p), p, line, got);
            bad++;
        }
        /* decoding gives the input back */
        struct sbuf s = {0};
        CHECK_EQ(tok_decode(t, ids.v, ids.n, 0, &s, err), 0);
        CHECK_EQ(s.n, (size_t)(q - p));
        CHECK(s.n == 0 || memcmp(s.s, p, s.n) == 0);
        sbuf_fini(&s);
        cases++;
        p = q + strlen(sep);
        line = nl + 1;
    }
    fprintf(stderr, "%s: %d cases, %d mismatches\n", name, cases, bad);
    tok_ids_fini(&ids);
    free(inp);
    free(outp);
    tok_destroy(t);
    CHECK(cases > 0);
    return bad;
}

int main(void)
{
    const char *shared = getenv("TANDEM_SHARED");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/testdata/llama-vocab", shared ? shared : "../shared");
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/ggml-vocab-deepseek-llm.gguf", dir);
    FILE *f = fopen(probe, "rb");
    if (!f) SKIP("%s absent", probe);
    fclose(f);
    int bad =
        run_vocab(dir, "ggml-vocab-deepseek-llm") + run_vocab(dir, "ggml-vocab-deepseek-coder");
    return bad ? 1 : 0;
}
