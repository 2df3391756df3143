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
 *   - the same vocabulary as llama.cpp's converter writes it into a GGUF (tokenizer.ggml.model
 *     "gpt2", pre "kimi-k2", byte-level token strings, one merge per token replayed with
 *     tiktoken's rule in rank order, specials as control tokens) encodes like the directory on
 *     random strings (seeded). */
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

/* GPT-2's bytes_to_unicode as UTF-8 */
static size_t byte_level(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned b = (unsigned char)s[i], cp = b;
        if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174)) {
            cp = 256;
            for (unsigned x = 0; x < b; x++)
                cp += !((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || x >= 174);
        }
        if (cp < 0x80) out[o++] = (char)cp;
        else {
            out[o++] = (char)(0xc0 | cp >> 6);
            out[o++] = (char)(0x80 | (cp & 63));
        }
    }
    out[o] = 0;
    return o;
}

/* rank of bytes s[0..n) among the base tokens, or -1 */
static int rank_of(const struct tok *t, const char *s, size_t n)
{
    for (int id = 0; id < tok_vocab_size(t) - 256; id++) {
        size_t l;
        const char *p = tok_piece(t, id, &l);
        if (l == n && !memcmp(p, s, n)) return id;
    }
    return -1;
}

/* The merge llama.cpp's converter writes for token `id`: tiktoken's BPE on its bytes with
 * ranks below id; "" where that does not end in two parts. */
static void merge_for(const struct tok *t, int32_t id, char *out)
{
    size_t n;
    const char *s = tok_piece(t, id, &n);
    size_t cut[64], k = n; /* part i is s[cut[i]..cut[i+1]) */
    for (size_t i = 0; i <= n; i++) cut[i] = i;
    for (;;) {
        int best = -1;
        size_t at = 0;
        for (size_t i = 0; i + 2 <= k; i++) {
            int r = rank_of(t, s + cut[i], cut[i + 2] - cut[i]);
            if (r >= 0 && r < id && (best < 0 || r < best)) best = r, at = i;
        }
        if (best < 0) break;
        memmove(cut + at + 1, cut + at + 2, (k - at - 1) * sizeof *cut);
        k--;
    }
    out[0] = 0;
    if (k != 2) return;
    size_t o = byte_level(s, cut[1], out);
    out[o++] = ' ';
    byte_level(s + cut[1], n - cut[1], out + o);
}

static void write_gguf(const struct tok *t, const char *path)
{
    int nv = tok_vocab_size(t), nb = nv - 256, nm = 0;
    char(*str)[64] = calloc((size_t)nv, sizeof *str), (*mer)[64] = calloc((size_t)nb, sizeof *mer);
    const char **tokv = calloc((size_t)nv, sizeof *tokv), **merv = calloc((size_t)nb, sizeof *merv);
    int32_t *type = calloc((size_t)nv, sizeof *type);
    CHECK(str && mer && tokv && merv && type);
    for (int id = 0; id < nv; id++) {
        size_t n;
        const char *p = tok_piece(t, id, &n);
        CHECK(n < 60);
        if (id < nb) byte_level(p, n, str[id]);
        else memcpy(str[id], p, n);
        tokv[id] = str[id];
        type[id] = id < nb ? 1 : 3;
        if (id < 256 || id >= nb) continue;
        merge_for(t, id, mer[nm]);
        if (mer[nm][0]) merv[nm] = mer[nm], nm++;
    }
    CHECK_EQ(nm, nb - 256 - 1); /* all but "pqr" */
    struct gguf_writer *w;
    char err[ERR_LEN] = "";
    CHECK_EQ(gguf_writer_create(path, &w, err), 0);
    CHECK_EQ(gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2"), 0);
    CHECK_EQ(gguf_writer_set_str(w, "tokenizer.ggml.pre", "kimi-k2"), 0);
    CHECK_EQ(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tokv, (size_t)nv), 0);
    CHECK_EQ(gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, type, (size_t)nv),
             0);
    CHECK_EQ(gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merv, (size_t)nm), 0);
    CHECK_EQ(gguf_writer_set_i32(w, "tokenizer.ggml.bos_token_id", nb), 0);
    CHECK_EQ(gguf_writer_begin(w, err), 0);
    CHECK_EQ(gguf_writer_finish(w, err), 0);
    free(str);
    free(mer);
    free(tokv);
    free(merv);
    free(type);
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
    write_gguf(t, path);
    struct tok *g = NULL;
    rc = tok_load(&g, path, err);
    if (rc) fprintf(stderr, "%s\n", err);
    CHECK_EQ(rc, 0);
    CHECK_EQ(tok_vocab_size(g), tok_vocab_size(t));
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
        CHECK_EQ(tok_encode(t, s, n, flags, &a, err), 0);
        CHECK_EQ(tok_encode(g, s, n, flags, &b, err), 0);
        if (a.n != b.n || memcmp(a.v, b.v, a.n * sizeof *a.v))
            fprintf(stderr, "GGUF differs on \"%.*s\"\n", (int)n, s);
        CHECK_EQ(a.n, b.n);
        CHECK(memcmp(a.v, b.v, a.n * sizeof *a.v) == 0);
        tok_ids_fini(&a);
        tok_ids_fini(&b);
    }
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
