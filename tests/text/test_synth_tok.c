/* test_synth_tok.c - the tokenizer of a synthetic model is the same in both layouts.
 *
 * For the presets tiny (DeepSeek-V3's byte-level BPE), tiny-kimi and tiny-moonlight (Kimi's
 * tiktoken-style BPE), wt_synth writes the model twice with all-zero weights: as the HF-style
 * no-merge directory (tokenizer.json, or tiktoken.model, + tokenizer_config.json) and as one
 * GGUF (`--layout gguf`: the tokenizer in llama.cpp's metadata form, pre "deepseek-v3" or
 * "kimi-k2"). Both tokenizers must
 *   - be of the expected form (Kimi's: tiktoken.model and no tokenizer.json, Kimi-K2's special
 *     tokens after the last rank, bos [BOS], eos [EOS], the published Kimi chat template
 *     byte for byte as in tests/text/templates/);
 *   - have the same bos/eos, chat template and ids in use (the GGUF's padding ids not counted);
 *   - encode 1500 random strings (seed printed; TANDEM_TEST_SEED replays) to the same ids, with
 *     and without special-token matching, and decode them back to the input;
 *   - render random conversations (system, user, assistant with tool calls, tool turns, tools
 *     declared) through the model's own template identically, and encode the prompts
 *     identically.
 * Runs wt_synth in-process (zero weights: sparse files, milliseconds).
 */
#include "../check.h"

#include "../../common/err.h"
#include "../../common/sbuf.h"
#include "../../engine/text/jinja.h"
#include "../../engine/text/tmpl.h"
#include "../../engine/text/tok.h"
#include "../../engine/weights/convert.h"
#include "../../engine/weights/gguf.h"

#include <sys/stat.h>
#include <unistd.h>

static unsigned long long rng;
static unsigned rnd(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (unsigned)(rng >> 33);
}

/* a random string of about `len` bytes: words, whitespace, numbers, CJK, emoji, both families'
 * special tokens and lookalikes, random code points */
static void random_text(struct sbuf *s, size_t len)
{
    static const char *const parts[] = {"the",
                                        " quick",
                                        " brown",
                                        " fox",
                                        "Hello",
                                        ",",
                                        ".",
                                        "!",
                                        "?",
                                        " ",
                                        "  ",
                                        "\n",
                                        "\n\n",
                                        "\t",
                                        "\r\n",
                                        "123",
                                        "4567",
                                        "0",
                                        "'s",
                                        "'LL",
                                        "don't",
                                        "naïve",
                                        "中文",
                                        "日本語",
                                        "한국어",
                                        "😀",
                                        "👍🏽",
                                        "<|im_end|>",
                                        "<|im_user|>",
                                        "<|im_middle|>",
                                        "[BOS]",
                                        "[EOS]",
                                        "<|tool_call_begin|>",
                                        "<|reserved_token_900|>",
                                        "<｜User｜>",
                                        "<｜end▁of▁sentence｜>",
                                        "<think>",
                                        "</think>",
                                        "<|im_",
                                        "|>",
                                        "<｜",
                                        "[PAD]",
                                        "{\"a\": 1}",
                                        "def f(x):\n    return x"};
    const size_t np = sizeof parts / sizeof parts[0];
    size_t start = s->n;
    while (s->n - start < len) {
        unsigned k = rnd() % 8;
        if (k == 0) { /* a random code point, no surrogate */
            unsigned cp = rnd() % 3 == 0 ? rnd() % 0x800 : rnd() % 0x30000;
            if (cp == 0 || (cp >= 0xd800 && cp <= 0xdfff)) cp = 'x';
            char b[4];
            int n =
                cp < 0x80    ? (b[0] = (char)cp, 1)
                : cp < 0x800 ? (b[0] = (char)(0xc0 | cp >> 6), b[1] = (char)(0x80 | (cp & 63)), 2)
                : cp < 0x10000
                    ? (b[0] = (char)(0xe0 | cp >> 12), b[1] = (char)(0x80 | ((cp >> 6) & 63)),
                       b[2] = (char)(0x80 | (cp & 63)), 3)
                    : (b[0] = (char)(0xf0 | cp >> 18), b[1] = (char)(0x80 | ((cp >> 12) & 63)),
                       b[2] = (char)(0x80 | ((cp >> 6) & 63)), b[3] = (char)(0x80 | (cp & 63)), 4);
            CHECK_EQ(sbuf_append(s, b, (size_t)n), 0);
        } else {
            const char *q = parts[rnd() % np];
            CHECK_EQ(sbuf_append(s, q, strlen(q)), 0);
        }
    }
}

static void same_ids(const struct tok *a, const struct tok *b, const char *s, size_t n,
                     unsigned flags, const char *what)
{
    char err[ERR_LEN] = "";
    struct tok_ids x = {0}, y = {0};
    CHECK_EQ(tok_encode(a, s, n, flags, &x, err), 0);
    CHECK_EQ(tok_encode(b, s, n, flags, &y, err), 0);
    if (x.n != y.n || memcmp(x.v, y.v, x.n * sizeof *x.v))
        fprintf(stderr, "%s: the GGUF encodes differently: \"%.*s\"\n", what, (int)n, s);
    CHECK_EQ(x.n, y.n);
    CHECK(memcmp(x.v, y.v, x.n * sizeof *x.v) == 0);
    struct sbuf d = {0};
    CHECK_EQ(tok_decode(a, x.v, x.n, 0, &d, err), 0);
    CHECK(d.n == n && memcmp(d.s, s, n) == 0);
    sbuf_fini(&d);
    tok_ids_fini(&x);
    tok_ids_fini(&y);
}

static json_t *random_str(size_t len)
{
    struct sbuf s = {0};
    random_text(&s, len);
    json_t *j = json_stringn(s.s, s.n);
    sbuf_fini(&s);
    return j;
}

/* a random conversation with tools and tool calls (Kimi-style ids) */
static json_t *random_chat(void)
{
    json_t *m = json_array();
    if (rnd() % 2)
        json_array_append_new(
            m, json_pack("{s:s, s:o}", "role", "system", "content", random_str(20 + rnd() % 40)));
    int turns = 1 + (int)(rnd() % 3);
    for (int t = 0; t < turns; t++) {
        json_array_append_new(
            m, json_pack("{s:s, s:o}", "role", "user", "content", random_str(10 + rnd() % 60)));
        if (t == turns - 1 && rnd() % 2) break;
        if (rnd() % 2) {
            char id[48];
            snprintf(id, sizeof id, "functions.get_weather:%d", t);
            json_array_append_new(
                m, json_pack("{s:s, s:o, s:[{s:s, s:s, s:{s:s, s:{s:o}}}]}", "role", "assistant",
                             "content", random_str(rnd() % 20), "tool_calls", "id", id, "type",
                             "function", "function", "name", "get_weather", "arguments", "city",
                             random_str(5 + rnd() % 10)));
            json_array_append_new(m, json_pack("{s:s, s:s, s:o}", "role", "tool", "tool_call_id",
                                               id, "content", random_str(10 + rnd() % 30)));
        }
        json_array_append_new(m, json_pack("{s:s, s:o}", "role", "assistant", "content",
                                           random_str(10 + rnd() % 60)));
    }
    return m;
}

/* the JSON text of v (valid until the next call) */
static const char *json_dumps_tmp(const json_t *v)
{
    static char *last;
    free(last);
    last = json_dumps(v, JSON_COMPACT);
    CHECK(last);
    return last;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    struct sbuf s = {0};
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) CHECK_EQ(sbuf_append(&s, buf, n), 0);
    fclose(f);
    CHECK_EQ(sbuf_append(&s, "", 1), 0);
    return s.s;
}

static void gguf_pre(const char *path, const char *want)
{
    char err[ERR_LEN] = "";
    struct gguf_ctx *g;
    CHECK_EQ(gguf_open(path, &g, err), 0);
    const char *pre = NULL;
    CHECK_EQ(gguf_find_str(g, "tokenizer.ggml.pre", &pre, err), 0);
    CHECK_STR(pre, want);
    gguf_close(g);
}

static void check_preset(const char *preset, const char *fixture, const char *root)
{
    char dir[256], gdir[256], p[1024], err[ERR_LEN] = "";
    snprintf(dir, sizeof dir, "%s/%s", root, preset);
    snprintf(gdir, sizeof gdir, "%s/%s-gguf", root, preset);
    struct wt_synth_opts o = {.preset = preset,
                              .out = dir,
                              .seed = 1,
                              .experts_type = -1,
                              .dense_layers = -1,
                              .moe_layers = -1,
                              .n_experts = -1,
                              .zero = 1,
                              .threads = 1,
                              .experts_down_type = -1,
                              .linears_type = -1};
    int rc = wt_synth(&o, err);
    if (rc) fprintf(stderr, "synth %s: %s\n", preset, err);
    CHECK_EQ(rc, 0);
    o.out = gdir;
    o.gguf_only = 1;
    rc = wt_synth(&o, err);
    if (rc) fprintf(stderr, "synth %s --layout gguf: %s\n", preset, err);
    CHECK_EQ(rc, 0);

    struct tok *a = NULL, *b = NULL;
    CHECK_EQ(tok_load(&a, dir, err), 0);
    snprintf(p, sizeof p, "%s/model.gguf", gdir);
    CHECK_EQ(tok_load(&b, gdir, err), 0);
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    int kimi = fixture != NULL;
    CHECK_EQ(access(p, F_OK) == 0, !kimi);
    snprintf(p, sizeof p, "%s/tiktoken.model", dir);
    CHECK_EQ(access(p, F_OK) == 0, kimi);
    snprintf(p, sizeof p, "%s/model.gguf", gdir);
    gguf_pre(p, kimi ? "kimi-k2" : "deepseek-v3");
    CHECK(tok_vocab_size(b) >= tok_vocab_size(a));
    CHECK_EQ(tok_n_used(a), tok_vocab_size(a)); /* the GGUF's padding ids are not in use */
    CHECK_EQ(tok_n_used(b), tok_vocab_size(a));
    CHECK_EQ(tok_bos(a), tok_bos(b));
    CHECK_EQ(tok_eos(a), tok_eos(b));
    CHECK_STR(tok_bos_text(a), tok_bos_text(b));
    CHECK_STR(tok_eos_text(a), tok_eos_text(b));
    CHECK(tok_chat_template(a) && tok_chat_template(b));
    CHECK_STR(tok_chat_template(a), tok_chat_template(b));
    if (kimi) {
        int32_t first = tok_vocab_size(a) - 256; /* the first special id */
        CHECK_STR(tok_bos_text(a), "[BOS]");
        CHECK_STR(tok_eos_text(a), "[EOS]");
        CHECK_EQ(tok_bos(a), first);
        CHECK_EQ(tok_find(a, "<|im_end|>"), first + 2);
        CHECK_EQ(tok_find(b, "<|im_middle|>"), first + 17);
        CHECK_EQ(tok_find(b, "<|tool_call_argument_begin|>"), first + 14);
        CHECK(tok_is_special(b, first + 17));
        const char *src = getenv("TANDEM_SRC");
        if (src) { /* the published template, byte for byte */
            snprintf(p, sizeof p, "%s/tests/text/templates/%s", src, fixture);
            char *want = slurp(p);
            CHECK(want);
            CHECK_STR(tok_chat_template(a), want);
            free(want);
        }
    }

    struct sbuf s = {0};
    for (int it = 0; it < 1500; it++) {
        s.n = 0;
        random_text(&s, 1 + rnd() % 120);
        same_ids(a, b, s.s, s.n, it % 2 ? TOK_ENC_SPECIAL : 0, preset);
    }

    struct jinja *ja = NULL, *jb = NULL;
    CHECK_EQ(jinja_parse(tok_chat_template(a), &ja, err), 0);
    CHECK_EQ(jinja_parse(tok_chat_template(b), &jb, err), 0);
    json_t *tools =
        json_loads("[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", "
                   "\"description\": \"Weather of a city\", \"parameters\": {\"type\": "
                   "\"object\", \"properties\": {\"city\": {\"type\": \"string\"}}}}}]",
                   0, NULL);
    CHECK(tools);
    int rendered = 0;
    for (int it = 0; it < 100; it++) {
        json_t *msgs = random_chat();
        struct tmpl_jinja_ctx c = {.messages = msgs,
                                   .tools = it % 2 ? tools : NULL,
                                   .add_generation_prompt = it % 3 != 0,
                                   .bos_token = tok_bos_text(a),
                                   .eos_token = tok_eos_text(a)};
        struct tmpl_jinja_ctx d = c;
        d.bos_token = tok_bos_text(b);
        d.eos_token = tok_eos_text(b);
        struct sbuf x = {0}, y = {0};
        char e1[ERR_LEN] = "", e2[ERR_LEN] = "";
        int r1 = tmpl_jinja_render(ja, &c, &x, e1), r2 = tmpl_jinja_render(jb, &d, &y, e2);
        CHECK_EQ(r1, r2);
        CHECK_STR(e1, e2); /* a template may refuse a conversation: both the same way */
        if (!r1) {
            rendered++;
            CHECK(x.n == y.n && memcmp(x.s, y.s, x.n) == 0);
            if (kimi) CHECK(strstr(x.s, "<|im_user|>") != NULL);
            if (!strcmp(preset, "tiny-kimi") && strstr(json_dumps_tmp(msgs), "tool_calls"))
                CHECK(strstr(x.s, "<|tool_call_begin|>functions.get_weather:") != NULL);
            same_ids(a, b, x.s, x.n, TOK_ENC_SPECIAL, "chat prompt");
        }
        sbuf_fini(&x);
        sbuf_fini(&y);
        json_decref(msgs);
    }
    fprintf(stderr, "%s: 1500 strings and %d of 100 conversations identical in both layouts\n",
            preset, rendered);
    CHECK(rendered >= 50);
    json_decref(tools);
    jinja_free(ja);
    jinja_free(jb);
    sbuf_fini(&s);
    tok_destroy(a);
    tok_destroy(b);
    snprintf(p, sizeof p, "rm -rf '%s' '%s'", dir, gdir);
    CHECK(system(p) == 0);
}

int main(void)
{
    rng = check_seed();
    char root[64];
    snprintf(root, sizeof root, "/tmp/tandem-test-synth-tok-%d", (int)getpid());
    CHECK(mkdir(root, 0700) == 0);
    check_preset("tiny", NULL, root);
    check_preset("tiny-kimi", "kimi_k2_thinking.jinja", root);
    check_preset("tiny-moonlight", "kimi_k2.jinja", root);
    rmdir(root);
    return 0;
}
