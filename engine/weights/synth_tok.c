/* synth_tok.c - the small byte-level BPE tokenizer of synthetic models (`tandem convert synth`).
 *
 * Layout mirrors DeepSeek-V3's tokenizer.json: ids 0..2 are <｜begin▁of▁sentence｜>,
 * <｜end▁of▁sentence｜>, <｜▁pad▁｜>; then the 256 byte tokens (GPT-2 byte-to-unicode alphabet);
 * then merges learned deterministically by plain BPE on a built-in English corpus (most frequent
 * adjacent pair, ties to the lowest ids); then DeepSeek-V3's added tokens (roles, FIM, EOT, tool
 * tokens, <think>/</think>). The pre-tokenizer is DeepSeek-V3's Sequence of three Split regexes
 * plus ByteLevel, the decoder ByteLevel, and a post-processor that prepends BOS.
 * Deterministic: no seed involved, so every synthetic model shares one tokenizer.
 * wt__synth_tokenizer_gguf copies the written files into GGUF tokenizer metadata for the
 * whole-GGUF layout (token types: added special tokens control, other added tokens
 * user-defined, the rest normal).
 *
 * Single-threaded; used only by synth.c.
 */
#include "gguf.h"
#include "synth_internal.h"

#include "common/err.h"
#include "common/utf8.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char corpus[] =
    "The quick brown fox jumps over the lazy dog. A model is a function that maps a sequence of "
    "tokens to a distribution over the next token. The server answers requests from many users "
    "at the same time, and each request has a prompt and a limit on the number of tokens it may "
    "generate. When the user asks a question, the assistant thinks about it and then writes an "
    "answer. The answer should be short, correct and helpful. Experts are small networks; a "
    "router picks a few of them for every token, so only a part of the weights is read for each "
    "step. Memory bandwidth limits the speed of decoding, while prefill is limited by compute. "
    "Hello, how are you today? I am fine, thank you. What is the weather like in the city? It is "
    "sunny and warm, with a light wind from the west. Please write a function that returns the "
    "sum of two numbers. Here is the code you asked for, with a test that checks the result. "
    "The year 2024 had 366 days; the year 2025 has 365. One, two, three, four, five, six, seven, "
    "eight, nine, ten. Numbers like 3.14 and 2.71 are constants that appear in many formulas. "
    "This is a test of the tokenizer. The tokenizer splits text into pieces, and each piece is "
    "a word, a number or a mark of punctuation. Once upon a time there was a little house near "
    "the river, and in the house lived an old man who told stories to the children of the "
    "village every evening after dinner. They listened and laughed and asked for more. "
    "def main():\n    print(\"hello world\")\n    return 0\n\nfor i in range(10):\n    total += i\n"
    "{\"name\": \"get_weather\", \"arguments\": {\"location\": \"Paris\", \"unit\": \"celsius\"}}\n"
    "Thinking step by step: first we read the question, then we plan, then we answer.\n";

static const struct {
    const char *s;
    int special;
} added_tail[] = {
    {"<｜fim▁hole｜>", 0},
    {"<｜fim▁begin｜>", 0},
    {"<｜fim▁end｜>", 0},
    {"<｜User｜>", 0},
    {"<｜Assistant｜>", 0},
    {"<|EOT|>", 1},
    {"<｜tool▁calls▁begin｜>", 0},
    {"<｜tool▁calls▁end｜>", 0},
    {"<｜tool▁call▁begin｜>", 0},
    {"<｜tool▁call▁end｜>", 0},
    {"<｜tool▁outputs▁begin｜>", 0},
    {"<｜tool▁outputs▁end｜>", 0},
    {"<｜tool▁output▁begin｜>", 0},
    {"<｜tool▁output▁end｜>", 0},
    {"<｜tool▁sep｜>", 0},
    {"<think>", 0},
    {"</think>", 0},
};
static const char *added_head[3] = {"<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>",
                                    "<｜▁pad▁｜>"};

#define N_MERGES 480
#define FIRST_BYTE 3
#define MAX_TOK (FIRST_BYTE + 256 + N_MERGES)

/* GPT-2 byte -> unicode code point */
static unsigned byte_cp(int b)
{
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))
        return (unsigned)b;
    int n = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) n++;
    return 256u + (unsigned)n;
}

static int cls(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return 1;
    if (c >= '0' && c <= '9') return 2;
    if (c == ' ' || c == '\n' || c == '\t') return 3;
    return 4;
}

struct word {
    int *tok;
    int n;
};

int wt__synth_tokenizer(const char *dir, int *n_vocab, char *err)
{
    /* strings of every token */
    char(*tokstr)[64] = calloc(MAX_TOK, sizeof *tokstr);
    if (!tokstr) return err_set(err, ERR_NOMEM, "out of memory");
    int ntok = FIRST_BYTE + 256;
    for (int b = 0; b < 256; b++) {
        int k = utf8_encode(byte_cp(b), tokstr[FIRST_BYTE + b]);
        tokstr[FIRST_BYTE + b][k] = 0;
    }
    /* pre-split the corpus: optional space + run of one class; digits one at a time */
    int cap = (int)sizeof corpus, nw = 0;
    struct word *w = calloc((size_t)cap, sizeof *w);
    int *pool = malloc(sizeof(int) * sizeof corpus);
    int *cnt = malloc(sizeof(int) * MAX_TOK * MAX_TOK);
    if (!w || !pool || !cnt) {
        free(w);
        free(pool);
        free(cnt);
        free(tokstr);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    int used = 0;
    const unsigned char *s = (const unsigned char *)corpus;
    size_t len = sizeof corpus - 1, i = 0;
    while (i < len) {
        size_t st = i;
        if (s[i] == ' ' && i + 1 < len && cls(s[i + 1]) != 3) i++;
        int c = cls(s[i]);
        i++;
        if (c != 2)
            while (i < len && cls(s[i]) == c) i++;
        w[nw].tok = pool + used;
        w[nw].n = (int)(i - st);
        for (size_t k = st; k < i; k++) pool[used++] = FIRST_BYTE + s[k];
        nw++;
    }
    int merges[N_MERGES][2], nm = 0;
    while (nm < N_MERGES) {
        memset(cnt, 0, sizeof(int) * MAX_TOK * MAX_TOK);
        int best = 0, ba = 0, bb = 0;
        for (int k = 0; k < nw; k++)
            for (int j = 0; j + 1 < w[k].n; j++) {
                int a = w[k].tok[j], b = w[k].tok[j + 1];
                int v = ++cnt[a * MAX_TOK + b];
                if (v > best || (v == best && (a < ba || (a == ba && b < bb)))) {
                    best = v;
                    ba = a;
                    bb = b;
                }
            }
        if (best < 1) break;
        size_t la = strlen(tokstr[ba]), lb = strlen(tokstr[bb]);
        if (la + lb >= sizeof tokstr[0]) break;
        int id = ntok++;
        memcpy(tokstr[id], tokstr[ba], la);
        memcpy(tokstr[id] + la, tokstr[bb], lb + 1);
        merges[nm][0] = ba;
        merges[nm][1] = bb;
        nm++;
        for (int k = 0; k < nw; k++) {
            int o = 0;
            for (int j = 0; j < w[k].n; j++) {
                if (j + 1 < w[k].n && w[k].tok[j] == ba && w[k].tok[j + 1] == bb) {
                    w[k].tok[o++] = id;
                    j++;
                } else {
                    w[k].tok[o++] = w[k].tok[j];
                }
            }
            w[k].n = o;
        }
    }
    free(cnt);
    free(pool);
    free(w);

    /* tokenizer.json */
    json_t *vocab = json_object(), *jm = json_array(), *added = json_array();
    for (int k = 0; k < 3; k++) json_object_set_new(vocab, added_head[k], json_integer(k));
    for (int k = FIRST_BYTE; k < ntok; k++) {
        if (json_object_get(vocab, tokstr[k])) continue; /* cannot happen for BPE; be safe */
        json_object_set_new(vocab, tokstr[k], json_integer(k));
    }
    for (int k = 0; k < nm; k++) {
        char m[160];
        snprintf(m, sizeof m, "%s %s", tokstr[merges[k][0]], tokstr[merges[k][1]]);
        json_array_append_new(jm, json_string(m));
    }
    free(tokstr);
    int id = ntok;
    for (int k = 0; k < 3; k++)
        json_array_append_new(added, json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", k,
                                               "content", added_head[k], "single_word", 0, "lstrip",
                                               0, "rstrip", 0, "normalized", 0, "special", 1));
    for (size_t k = 0; k < sizeof added_tail / sizeof added_tail[0]; k++, id++) {
        json_object_set_new(vocab, added_tail[k].s, json_integer(id));
        json_array_append_new(added,
                              json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", id, "content",
                                        added_tail[k].s, "single_word", 0, "lstrip", 0, "rstrip", 0,
                                        "normalized", 0, "special", added_tail[k].special));
    }
    json_t *pre = json_pack(
        "{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:{s:s}, s:s, s:b}, {s:s, s:{s:s}, s:s, s:b},"
        " {s:s, s:b, s:b, s:b}]}",
        "type", "Sequence", "pretokenizers", "type", "Split", "pattern", "Regex", "\\p{N}{1,3}",
        "behavior", "Isolated", "invert", 0, "type", "Split", "pattern", "Regex",
        "[一-龥぀-ゟ゠-ヿ]+", "behavior", "Isolated", "invert", 0, "type", "Split", "pattern",
        "Regex",
        "[!\"#$%&'()*+,\\-./"
        ":;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
        " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
        "behavior", "Isolated", "invert", 0, "type", "ByteLevel", "add_prefix_space", 0,
        "trim_offsets", 1, "use_regex", 0);
    json_t *post = json_pack("{s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:[{s:{s:s, s:i}}, "
                             "{s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}],"
                             " s:{s:{s:s, s:[i], s:[s]}}}",
                             "type", "TemplateProcessing", "single", "SpecialToken", "id",
                             added_head[0], "type_id", 0, "Sequence", "id", "A", "type_id", 0,
                             "pair", "SpecialToken", "id", added_head[0], "type_id", 0, "Sequence",
                             "id", "A", "type_id", 0, "SpecialToken", "id", added_head[0],
                             "type_id", 1, "Sequence", "id", "B", "type_id", 1, "special_tokens",
                             added_head[0], "id", added_head[0], "ids", 0, "tokens", added_head[0]);
    json_t *model =
        json_pack("{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE", "dropout",
                  "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0,
                  "byte_fallback", 0, "ignore_merges", 0, "vocab", vocab, "merges", jm);
    json_t *root =
        json_pack("{s:s, s:n, s:n, s:o, s:n, s:o, s:o, s:{s:s, s:b, s:b, s:b}, s:o}", "version",
                  "1.0", "truncation", "padding", "added_tokens", added, "normalizer",
                  "pre_tokenizer", pre, "post_processor", post, "decoder", "type", "ByteLevel",
                  "add_prefix_space", 1, "trim_offsets", 1, "use_regex", 1, "model", model);
    if (!root) return err_set(err, ERR_INTERNAL, "building tokenizer.json failed");
    char p[4096];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    int rc = json_dump_file(root, p, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (rc) return err_set(err, ERR_IO, "%s: write failed", p);
    *n_vocab = id;
    return 0;
}

int wt__synth_tokenizer_config(const char *dir, const char *chat_template, int max_len, char *err)
{
    json_t *o = json_pack("{s:b, s:b, s:s, s:s, s:s, s:b, s:b, s:i, s:s, s:s}", "add_bos_token", 1,
                          "add_eos_token", 0, "bos_token", added_head[0], "eos_token",
                          added_head[1], "pad_token", added_head[1], "clean_up_tokenization_spaces",
                          0, "legacy", 1, "model_max_length", max_len, "tokenizer_class",
                          "LlamaTokenizerFast", "chat_template", chat_template);
    if (!o) return err_set(err, ERR_INTERNAL, "building tokenizer_config.json failed");
    char p[4096];
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    int rc = json_dump_file(o, p, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    return rc ? err_set(err, ERR_IO, "%s: write failed", p) : 0;
}

/* token type of an added token, as llama.cpp's converter assigns it */
#define TT_NORMAL 1
#define TT_CONTROL 3
#define TT_USER 4

int wt__synth_tokenizer_gguf(struct gguf_writer *w, const char *dir, char *err)
{
    char p[4096];
    json_error_t je;
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    json_t *tj = json_load_file(p, 0, &je);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    json_t *cj = json_load_file(p, 0, &je);
    json_t *vocab = json_object_get(json_object_get(tj, "model"), "vocab");
    json_t *merges = json_object_get(json_object_get(tj, "model"), "merges");
    json_t *added = json_object_get(tj, "added_tokens");
    const char *tmpl = json_string_value(json_object_get(cj, "chat_template"));
    int rc = 0;
    if (!json_is_object(vocab) || !json_is_array(merges) || !json_is_array(added) || !tmpl)
        rc = err_set(err, ERR_FORMAT, "%s: the synthetic tokenizer files are incomplete", dir);
    /* ids are dense 0..n-1 (synth_tok.c assigns them so) */
    size_t n = rc ? 0 : json_object_size(vocab), nm = rc ? 0 : json_array_size(merges);
    const char **tok = calloc(n + 1, sizeof *tok), **mer = calloc(nm + 1, sizeof *mer);
    int32_t *type = calloc(n + 1, sizeof *type);
    if (!rc && (!tok || !mer || !type)) rc = err_set(err, ERR_NOMEM, "out of memory");
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val)
    {
        json_int_t id = json_integer_value(val);
        if (rc || id < 0 || (size_t)id >= n || tok[id]) {
            if (!rc) rc = err_set(err, ERR_FORMAT, "tokenizer.json: token ids are not 0..%zu", n);
            break;
        }
        tok[id] = key;
        type[id] = TT_NORMAL;
    }
    for (size_t i = 0; !rc && i < json_array_size(added); i++) {
        json_t *a = json_array_get(added, i);
        json_int_t id = json_integer_value(json_object_get(a, "id"));
        if (id >= 0 && (size_t)id < n)
            type[id] = json_is_true(json_object_get(a, "special")) ? TT_CONTROL : TT_USER;
    }
    for (size_t i = 0; !rc && i < nm; i++)
        if (!(mer[i] = json_string_value(json_array_get(merges, i))))
            rc = err_set(err, ERR_FORMAT, "tokenizer.json: merge %zu is not a string", i);
    int bad = 0;
    if (!rc) {
        bad |= gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
        bad |= gguf_writer_set_str(w, "tokenizer.ggml.pre", "deepseek-v3");
        bad |= gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tok, n);
        bad |= gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, type, n);
        bad |= gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", mer, nm);
        bad |= gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", 1);
        bad |= gguf_writer_set_str(w, "tokenizer.chat_template", tmpl);
        if (bad) rc = err_set(err, ERR_NOMEM, "out of memory for the GGUF tokenizer");
    }
    free(tok);
    free(mer);
    free(type);
    json_decref(tj);
    json_decref(cj);
    return rc;
}
