/* test_tiktoken.c - the tiktoken-style tokenizer directory (tok_create_tiktoken, tok_load) on a
 * small hand-made vocabulary: the 256 bytes plus a few merges, Kimi's special tokens.
 *   - tiktoken's order: a piece that is a token is that token; else the pair whose
 *     concatenation has the lowest rank merges first, leftmost on ties;
 *   - the special ids follow the last rank (named from added_tokens_decoder, the rest
 *     "<|reserved_token_ID|>"), are matched only with TOK_ENC_SPECIAL and skipped by
 *     TOK_DEC_SKIP_SPECIAL; bos/eos and the chat template come from tokenizer_config.json;
 *   - random byte strings decode back to themselves (seeded);
 *   - malformed files are errors naming the file and line (missing file, bad base64, a rank
 *     given twice, the same bytes twice, bad JSON), never a crash;
 *   - the same vocabulary as llama.cpp's converter writes it into a GGUF (tok_tiktoken_to_gguf:
 *     tokenizer.ggml.model "gpt2", pre "kimi-k2", byte-level token strings, one merge per token
 *     replayed with tiktoken's rule in rank order, specials as control tokens; padded to a larger
 *     model vocabulary with "[PADID]" UNUSED ids) encodes like the directory on random strings
 *     (seeded), and no text gives a padding id. */
#include "../check.h"

#include "../../common/err.h"
#include "../../engine/text/tok.h"
#include "../../engine/weights/gguf.h"

#include <sys/stat.h>
#include <unistd.h>

static char dir[256];

static void b64(const unsigned char *s, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t x = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0) |
                     (i + 2 < n ? s[i + 2] : 0);
        out[o++] = a[x >> 18];
        out[o++] = a[(x >> 12) & 63];
        out[o++] = i + 1 < n ? a[(x >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? a[x & 63] : '=';
    }
    out[o] = 0;
}

/* the model: bytes 0..255 at ranks 0..255, then these merges in rank order */
static const char *const merged[] = {"ab",  "bc", "abc", "cd", "xy", "yx",
                                     "xyx", "he", " he", "ll", "llo"};
#define N_BASE (256 + (int)(sizeof merged / sizeof merged[0]))

/* a richer vocabulary for the GGUF comparison: merges across the places where pre-tokenizers
 * differ, and "pqr", which no pair of tokens builds (only the whole-piece rule finds it) */
static const char *const rich[] = {"ab",
                                   "bc",
                                   "abc",
                                   "cd",
                                   "xy",
                                   "yx",
                                   "xyx",
                                   "he",
                                   " he",
                                   "ll",
                                   "llo",
                                   "\n\n",
                                   "  ",
                                   "   ",
                                   "!!",
                                   "?!",
                                   "'s",
                                   "ab's",
                                   "AB",
                                   "Ab",
                                   "ab\n",
                                   " !",
                                   "12",
                                   "123",
                                   "9a",
                                   "pqr",
                                   "\xe4\xb8",
                                   "\xe4\xb8\xad",
                                   "\xe4\xb8\xad\xe4\xb8\xad",
                                   " ab",
                                   "ab ",
                                   "\t\n",
                                   ".\n",
                                   "\xc3\xa9",
                                   "\xc3\xa9"
                                   "ab",
                                   "'S",
                                   "AB's",
                                   " 1",
                                   "a1",
                                   "\r\n",
                                   "!\n",
                                   " \n"};
#define N_RICH (256 + (int)(sizeof rich / sizeof rich[0]))

static void write_list(const char *const *m, int nm, const char *extra_line, const char *config)
{
    char p[512], enc[64];
    snprintf(p, sizeof p, "%s/tiktoken.model", dir);
    FILE *f = fopen(p, "w");
    CHECK(f);
    for (int b = 0; b < 256; b++) {
        unsigned char c = (unsigned char)b;
        b64(&c, 1, enc);
        fprintf(f, "%s %d\n", enc, b);
    }
    for (int i = 0; i < nm; i++) {
        b64((const unsigned char *)m[i], strlen(m[i]), enc);
        fprintf(f, "%s %d\n", enc, 256 + i);
    }
    if (extra_line) fprintf(f, "%s\n", extra_line);
    CHECK(fclose(f) == 0);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    f = fopen(p, "w");
    CHECK(f);
    fputs(config, f);
    CHECK(fclose(f) == 0);
}

static void write_files(const char *extra_line, const char *config)
{
    write_list(merged, N_BASE - 256, extra_line, config);
}

static void encode(const struct tok *t, const char *s, unsigned flags, const int32_t *want,
                   size_t n)
{
    struct tok_ids ids = {0};
    char err[ERR_LEN] = "";
    CHECK_EQ(tok_encode(t, s, strlen(s), flags, &ids, err), 0);
    if (ids.n != n || memcmp(ids.v, want, n * sizeof *want)) {
        fprintf(stderr, "\"%s\":", s);
        for (size_t i = 0; i < ids.n; i++) fprintf(stderr, " %d", ids.v[i]);
        fprintf(stderr, "\n");
    }
    CHECK_EQ(ids.n, n);
    CHECK(memcmp(ids.v, want, n * sizeof *want) == 0);
    tok_ids_fini(&ids);
}

static void expect_error(const char *extra, const char *config, int rc, const char *want)
{
    write_files(extra, config);
    struct tok *t = NULL;
    char err[ERR_LEN] = "";
    CHECK_EQ(tok_create_tiktoken(&t, dir, err), rc);
    CHECK(t == NULL);
    fprintf(stderr, "expected error: %s\n", err);
    CHECK_CONTAINS(err, want);
}

/* The directory as llama.cpp's converter writes it into a GGUF (tok_tiktoken_to_gguf, the
 * converter tandem's synth uses too), with the model's vocabulary n_vocab (0: the tokenizer's),
 * bos = the first special id. Returns the number of merges written. */
static uint64_t write_gguf(const char *path, int n_vocab, int32_t bos)
{
    struct gguf_writer *w;
    char err[ERR_LEN] = "";
    CHECK_EQ(gguf_writer_create(path, &w, err), 0);
    int rc = tok_tiktoken_to_gguf(w, dir, n_vocab, err);
    if (rc) fprintf(stderr, "%s\n", err);
    CHECK_EQ(rc, 0);
    CHECK_EQ(gguf_writer_set_i32(w, "tokenizer.ggml.bos_token_id", bos), 0);
    CHECK_EQ(gguf_writer_begin(w, err), 0);
    CHECK_EQ(gguf_writer_finish(w, err), 0);
    gguf_writer_destroy(w);
    struct gguf_ctx *g;
    CHECK_EQ(gguf_open(path, &g, err), 0);
    int et;
    uint64_t nm = 0, nt = 0;
    CHECK_EQ(gguf_get_arr(g, gguf_find_key(g, "tokenizer.ggml.merges"), &et, &nm, err), 0);
    int64_t k = gguf_find_key(g, "tokenizer.ggml.tokens");
    CHECK_EQ(gguf_get_arr(g, k, &et, &nt, err), 0);
    CHECK_EQ(nt, (uint64_t)(n_vocab ? n_vocab : N_RICH + 256));
    if (n_vocab) { /* the padding: "[PADID]", UNUSED */
        const char *s;
        size_t l;
        char want[32];
        snprintf(want, sizeof want, "[PAD%d]", n_vocab - 1);
        CHECK_EQ(gguf_arr_str(g, k, (uint64_t)n_vocab - 1, &s, &l, err), 0);
        CHECK(l == strlen(want) && !memcmp(s, want, l));
        int64_t ty = 0;
        CHECK_EQ(gguf_arr_i64(g, gguf_find_key(g, "tokenizer.ggml.token_type"),
                              (uint64_t)n_vocab - 1, &ty, err),
                 0);
        CHECK_EQ(ty, TOK_TYPE_UNUSED);
    }
    gguf_close(g);
    return nm;
}

/* the GGUF form of the rich vocabulary encodes like its directory, with and without special
 * tokens */
static void check_gguf(uint64_t seed)
{
    char path[512], cfg[256], err[ERR_LEN] = "";
    snprintf(cfg, sizeof cfg,
             "{\"added_tokens_decoder\": {\"%d\": {\"content\": \"[BOS]\", \"special\": true},"
             " \"%d\": {\"content\": \"<|im_end|>\", \"special\": true}}}",
             N_RICH, N_RICH + 1);
    write_list(rich, N_RICH - 256, NULL, cfg);
    struct tok *t = NULL;
    int rc = tok_create_tiktoken(&t, dir, err);
    if (rc) fprintf(stderr, "%s\n", err);
    CHECK_EQ(rc, 0);
    snprintf(path, sizeof path, "%s/kimi.gguf", dir);
    /* one merge per token of two or more bytes, all but "pqr" (no pair of tokens builds it) */
    CHECK_EQ(write_gguf(path, 0, N_RICH), (uint64_t)(N_RICH - 256 - 1));
    struct tok *g = NULL;
    rc = tok_load(&g, path, err);
    if (rc) fprintf(stderr, "%s\n", err);
    CHECK_EQ(rc, 0);
    CHECK_EQ(tok_vocab_size(g), tok_vocab_size(t));
    /* a model vocabulary larger than the tokenizer: "[PADID]" ids that no text gives */
    snprintf(path, sizeof path, "%s/kimi-pad.gguf", dir);
    write_gguf(path, N_RICH + 256 + 40, N_RICH);
    struct tok *gp = NULL;
    CHECK_EQ(tok_load(&gp, path, err), 0);
    CHECK_EQ(tok_vocab_size(gp), N_RICH + 256 + 40);
    CHECK_EQ(tok_n_used(gp), N_RICH + 256);
    unlink(path);
    snprintf(path, sizeof path, "%s/kimi.gguf", dir);
    CHECK_EQ(tok_bos(g), N_RICH);
    CHECK_EQ(tok_find(g, "<|im_end|>"), N_RICH + 1);
    CHECK(tok_is_special(g, N_RICH + 1) && !tok_is_special(g, 'a'));
    static const char *const parts[] = {"ab",
                                        "c",
                                        "d",
                                        "x",
                                        "y",
                                        " ",
                                        "  ",
                                        "\n",
                                        "\r\n",
                                        "\t",
                                        "\xe4\xb8\xad",
                                        "llo",
                                        "he",
                                        "H",
                                        "9",
                                        "123",
                                        "1",
                                        "!",
                                        "?!",
                                        ".",
                                        "'",
                                        "\r",
                                        "\xc3\xa9",
                                        "\xc3\x89",
                                        "'s",
                                        "'S",
                                        "'ll",
                                        "AB",
                                        "Ab",
                                        "pqr",
                                        "<|im_end|>",
                                        "[BOS]",
                                        "\xe3\x80\x80",
                                        "\xcc\x81",
                                        "\xf0\x9f\x98\x80"};
    const int np = (int)(sizeof parts / sizeof parts[0]);
    uint64_t r = seed ^ 0x9e3779b97f4a7c15ull;
    for (int it = 0; it < 2000; it++) {
        char s[256];
        size_t n = 0;
        while (n < 80) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            const char *p = parts[(r >> 33) % (uint64_t)np];
            memcpy(s + n, p, strlen(p));
            n += strlen(p);
        }
        unsigned flags = it & 1 ? TOK_ENC_SPECIAL : 0;
        struct tok_ids a = {0}, b = {0};
        struct tok_ids c = {0};
        CHECK_EQ(tok_encode(t, s, n, flags, &a, err), 0);
        CHECK_EQ(tok_encode(g, s, n, flags, &b, err), 0);
        CHECK_EQ(tok_encode(gp, s, n, flags, &c, err), 0);
        if (a.n != b.n || memcmp(a.v, b.v, a.n * sizeof *a.v))
            fprintf(stderr, "GGUF differs on \"%.*s\"\n", (int)n, s);
        CHECK_EQ(a.n, b.n);
        CHECK(memcmp(a.v, b.v, a.n * sizeof *a.v) == 0);
        CHECK_EQ(a.n, c.n);
        CHECK(memcmp(a.v, c.v, a.n * sizeof *a.v) == 0);
        tok_ids_fini(&a);
        tok_ids_fini(&b);
        tok_ids_fini(&c);
    }
    /* the padding ids are never text, also as their own name */
    struct tok_ids pad = {0};
    char padname[32];
    snprintf(padname, sizeof padname, "[PAD%d]", N_RICH + 256 + 3);
    CHECK_EQ(tok_encode(gp, padname, strlen(padname), TOK_ENC_SPECIAL, &pad, err), 0);
    for (size_t i = 0; i < pad.n; i++) CHECK(pad.v[i] < N_RICH + 256);
    tok_ids_fini(&pad);
    tok_destroy(gp);
    tok_destroy(g);
    tok_destroy(t);
    unlink(path);
}

static const char config[] =
    "{\"added_tokens_decoder\": {\"267\": {\"content\": \"[BOS]\", \"special\": true},"
    " \"268\": {\"content\": \"[EOS]\", \"special\": true},"
    " \"269\": {\"content\": \"<|im_end|>\", \"special\": true}},"
    " \"bos_token\": \"[BOS]\", \"eos_token\": {\"content\": \"[EOS]\"},"
    " \"chat_template\": \"{{ messages }}\"}";

int main(void)
{
    unsigned long long seed = check_seed();
    snprintf(dir, sizeof dir, "/tmp/tandem-test-tiktoken-%d", (int)getpid());
    CHECK(mkdir(dir, 0700) == 0);
    CHECK_EQ(N_BASE, 267);
    write_files(NULL, config);
    struct tok *t = NULL;
    char err[ERR_LEN] = "";
    int rc = tok_load(&t, dir, err); /* a directory with tiktoken.model and no tokenizer.json */
    if (rc) fprintf(stderr, "%s\n", err);
    CHECK_EQ(rc, 0);
    CHECK_EQ(tok_vocab_size(t), N_BASE + 256);
    CHECK_EQ(tok_bos(t), 267);
    CHECK_EQ(tok_eos(t), 268);
    CHECK_STR(tok_bos_text(t), "[BOS]");
    CHECK_STR(tok_chat_template(t), "{{ messages }}");
    CHECK_EQ(tok_find(t, "<|im_end|>"), 269);
    CHECK_EQ(tok_find(t, "<|reserved_token_270|>"), 270);
    CHECK_EQ(tok_find(t, "<|reserved_token_522|>"), 522);
    CHECK(tok_is_special(t, 269) && !tok_is_special(t, 97));

    /* a piece that is a token; merges by the rank of the concatenation */
    encode(t, "abc", 0, (const int32_t[]){258}, 1);
    encode(t, "abcd", 0, (const int32_t[]){258, 'd'}, 2);   /* ab, then abc */
    encode(t, "bcd", 0, (const int32_t[]){257, 'd'}, 2);    /* bc (257) before cd (259) */
    encode(t, "xyxy", 0, (const int32_t[]){260, 260}, 2);   /* xy leftmost, twice */
    encode(t, "yxyx", 0, (const int32_t[]){'y', 262}, 2);   /* x+y at 1 (xy), then xy+x */
    encode(t, " hello", 0, (const int32_t[]){264, 266}, 2); /* he, " he", ll, llo */
    encode(t, "hello", 0, (const int32_t[]){263, 266}, 2);
    /* special tokens only when asked for */
    encode(t, "ab<|im_end|>", TOK_ENC_SPECIAL, (const int32_t[]){256, 269}, 2);
    encode(t, "ab[BOS]", 0, (const int32_t[]){256, '[', 'B', 'O', 'S', ']'}, 6);
    /* Kimi's pattern: Han runs, numbers by three, punctuation runs stay apart from letters */
    encode(t, "12345", 0, (const int32_t[]){'1', '2', '3', '4', '5'}, 5);
    struct sbuf out = {0};
    int32_t ids[3] = {256, 269, 258};
    CHECK_EQ(tok_decode(t, ids, 3, TOK_DEC_SKIP_SPECIAL, &out, err), 0);
    CHECK_EQ(out.n, 5);
    CHECK(memcmp(out.s, "ababc", 5) == 0);
    sbuf_fini(&out);

    /* random UTF-8 text decodes back to itself */
    uint64_t r = seed;
    for (int it = 0; it < 200; it++) {
        char s[64];
        size_t n = 0;
        while (n < 40) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            static const char *const parts[] = {"ab",           "c",   "x",  "y", " ", "\n",
                                                "\xe4\xb8\xad", "llo", "he", "9", "!", "\xc3\xa9",
                                                "'s",           "AB"};
            const char *p = parts[(r >> 33) % 14];
            memcpy(s + n, p, strlen(p));
            n += strlen(p);
        }
        struct tok_ids v = {0};
        CHECK_EQ(tok_encode(t, s, n, 0, &v, err), 0);
        CHECK_EQ(tok_decode(t, v.v, v.n, 0, &out, err), 0);
        CHECK_EQ(out.n, n);
        CHECK(memcmp(out.s, s, n) == 0);
        out.n = 0;
        tok_ids_fini(&v);
    }
    sbuf_fini(&out);
    tok_destroy(t);
    check_gguf(seed);

    /* malformed files */
    expect_error("YWJj", config, ERR_FORMAT, "tiktoken.model:268: not \"BASE64 RANK\"");
    expect_error("YW=j 300", config, ERR_FORMAT, ":268:");
    expect_error("eHl6 3", config, ERR_FORMAT, "rank 3 given twice");
    expect_error("YWI= 400", config, ERR_FORMAT, "occur twice");
    expect_error(NULL, "{\"added_tokens_decoder\": [", ERR_FORMAT, "tokenizer_config.json");
    expect_error(NULL, "{\"added_tokens_decoder\": {\"x\": {\"content\": \"a\"}}}", ERR_FORMAT,
                 "added_tokens_decoder entry 'x'");
    char p[512];
    snprintf(p, sizeof p, "%s/tiktoken.model", dir);
    unlink(p);
    CHECK_EQ(tok_create_tiktoken(&t, dir, err), ERR_IO);
    CHECK_CONTAINS(err, "tiktoken.model");
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    unlink(p);
    rmdir(dir);
    return 0;
}
