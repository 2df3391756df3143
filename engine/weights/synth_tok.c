/* synth_tok.c - the small tokenizers of synthetic models (`tandem convert synth`).
 *
 * Both learn the same merges, deterministically, by plain BPE on a built-in English corpus (most
 * frequent adjacent pair, ties to the lowest ids; no seed involved, so every synthetic model of
 * a family shares one tokenizer).
 *
 * DeepSeek's byte-level BPE (wt__synth_tokenizer) mirrors DeepSeek-V3's tokenizer.json: ids 0..2
 * are <｜begin▁of▁sentence｜>, <｜end▁of▁sentence｜>, <｜▁pad▁｜>; then the 256 byte tokens (GPT-2
 * byte-to-unicode alphabet); then the merges; then DeepSeek-V3's added tokens (roles, FIM, EOT,
 * tool tokens, <think>/</think>). The pre-tokenizer is DeepSeek-V3's Sequence of three Split
 * regexes plus ByteLevel, the decoder ByteLevel, and a post-processor that prepends BOS.
 *
 * Kimi's tiktoken-style BPE (wt__synth_tiktoken, presets tiny-kimi and tiny-moonlight) mirrors
 * Kimi-K2's files: tiktoken.model with the 256 bytes at ranks 0..255 and the merges after them
 * (rank = id), then tokenizer_config.json naming Kimi-K2's special tokens at their offsets from
 * the first id after the last rank (added_tokens_decoder; the other special ids are
 * "<|reserved_token_ID|>"), bos [BOS], eos [EOS], and a chat template of Kimi's: Kimi-K2-Thinking's
 * (tool calls, thinking) or Kimi-K2-Instruct's first one, as published (the fixtures
 * tests/text/templates/kimi_k2_thinking.jinja and kimi_k2.jinja hold the same text).
 *
 * wt__synth_tokenizer_gguf copies the written files into GGUF tokenizer metadata for the
 * whole-GGUF layout, as llama.cpp's converter writes them: for tokenizer.json the vocabulary,
 * merges and token types (added special tokens control, other added tokens user-defined, the
 * rest normal) with pre "deepseek-v3"; for tiktoken.model the "kimi-k2" form of
 * tok_tiktoken_to_gguf (engine/text).
 *
 * Single-threaded; used only by synth.c and emit.c.
 */
#include "gguf.h"
#include "synth_internal.h"

#include "common/err.h"
#include "engine/text/tok.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
#define N_LEARN (256 + N_MERGES) /* learned ids: the 256 bytes, then the merges */
#define FIRST_BYTE 3             /* where the bytes start in DeepSeek's layout */
#define TOK_BYTES 64             /* a token's bytes and its ByteLevel string fit in this */

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

/* the learned vocabulary: id k < 256 is byte k, later ids merge[k - 256] */
struct learned {
    char tok[N_LEARN][TOK_BYTES]; /* raw bytes */
    int len[N_LEARN];
    int bl[N_LEARN]; /* length of the ByteLevel string (a byte >= 0x80 or a control is 2) */
    int n;
    int merge[N_MERGES][2];
};

static int learn(struct learned *v, char *err)
{
    for (int b = 0; b < 256; b++) {
        v->tok[b][0] = (char)b;
        v->len[b] = 1;
        char u[4];
        v->bl[b] = (int)tok_bytelevel_encode(v->tok[b], 1, u);
    }
    v->n = 256;
    /* pre-split the corpus: optional space + run of one class; digits one at a time */
    int cap = (int)sizeof corpus, nw = 0;
    struct word *w = calloc((size_t)cap, sizeof *w);
    int *pool = malloc(sizeof(int) * sizeof corpus);
    int *cnt = malloc(sizeof(int) * N_LEARN * N_LEARN);
    if (!w || !pool || !cnt) {
        free(w);
        free(pool);
        free(cnt);
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
        for (size_t k = st; k < i; k++) pool[used++] = s[k];
        nw++;
    }
    while (v->n < N_LEARN) {
        memset(cnt, 0, sizeof(int) * N_LEARN * N_LEARN);
        int best = 0, ba = 0, bb = 0;
        for (int k = 0; k < nw; k++)
            for (int j = 0; j + 1 < w[k].n; j++) {
                int a = w[k].tok[j], b = w[k].tok[j + 1];
                int c = ++cnt[a * N_LEARN + b];
                if (c > best || (c == best && (a < ba || (a == ba && b < bb)))) {
                    best = c;
                    ba = a;
                    bb = b;
                }
            }
        if (best < 1 || v->bl[ba] + v->bl[bb] >= TOK_BYTES) break;
        int id = v->n++;
        memcpy(v->tok[id], v->tok[ba], (size_t)v->len[ba]);
        memcpy(v->tok[id] + v->len[ba], v->tok[bb], (size_t)v->len[bb]);
        v->len[id] = v->len[ba] + v->len[bb];
        v->bl[id] = v->bl[ba] + v->bl[bb];
        v->merge[id - 256][0] = ba;
        v->merge[id - 256][1] = bb;
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
    return 0;
}

int wt__synth_tokenizer(const char *dir, int *n_vocab, char *err)
{
    struct learned *lv = malloc(sizeof *lv);
    if (!lv) return err_set(err, ERR_NOMEM, "out of memory");
    int rc = learn(lv, err);
    if (rc) {
        free(lv);
        return rc;
    }
    /* DeepSeek's ids: the learned id k is FIRST_BYTE + k */
    int ntok = FIRST_BYTE + lv->n, nm = lv->n - 256;
    char(*tokstr)[2 * TOK_BYTES + 1] = malloc((size_t)lv->n * sizeof *tokstr);
    if (!tokstr) {
        free(lv);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    for (int k = 0; k < lv->n; k++) tok_bytelevel_encode(lv->tok[k], (size_t)lv->len[k], tokstr[k]);

    /* tokenizer.json */
    json_t *vocab = json_object(), *jm = json_array(), *added = json_array();
    for (int k = 0; k < 3; k++) json_object_set_new(vocab, added_head[k], json_integer(k));
    for (int k = 0; k < lv->n; k++) {
        if (json_object_get(vocab, tokstr[k])) continue; /* cannot happen for BPE; be safe */
        json_object_set_new(vocab, tokstr[k], json_integer(FIRST_BYTE + k));
    }
    for (int k = 0; k < nm; k++) {
        char m[4 * TOK_BYTES + 2];
        snprintf(m, sizeof m, "%s %s", tokstr[lv->merge[k][0]], tokstr[lv->merge[k][1]]);
        json_array_append_new(jm, json_string(m));
    }
    free(tokstr);
    free(lv);
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
    rc = json_dump_file(root, p, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (rc) return err_set(err, ERR_IO, "%s: write failed", p);
    *n_vocab = id;
    return 0;
}

/* ---------------------------------------------------------------- Kimi's tiktoken-style BPE */

/* Kimi-K2's named special tokens, by offset from the first id after the last rank (163584 in
 * Kimi-K2 and Moonlight) */
static const struct {
    int off;
    const char *s;
} kimi_named[] = {
    {0, "[BOS]"},
    {1, "[EOS]"},
    {2, "<|im_end|>"},
    {3, "<|im_user|>"},
    {4, "<|im_assistant|>"},
    {6, "<|start_header_id|>"},
    {7, "<|end_header_id|>"},
    {9, "[EOT]"},
    {10, "<|im_system|>"},
    {11, "<|tool_calls_section_begin|>"},
    {12, "<|tool_calls_section_end|>"},
    {13, "<|tool_call_begin|>"},
    {14, "<|tool_call_argument_begin|>"},
    {15, "<|tool_call_end|>"},
    {17, "<|im_middle|>"},
    {254, "[UNK]"},
    {255, "[PAD]"},
};

/* Kimi-K2-Thinking's chat template as published (= tests/text/templates/kimi_k2_thinking.jinja) */
static const char kimi_k2_thinking_jinja[] =
    "{%- macro render_content(msg) -%}\n"
    "    {%- set c = msg.get('content') -%}\n"
    "    {%- if c is string -%}\n"
    "      {{ c }}\n"
    "    {%- elif c is not none -%}\n"
    "      {% for content in c -%}\n"
    "        {% if content['type'] == 'image' or 'image' in content or 'image_url' in content -%}\n"
    "          <|media_start|>image<|media_content|><|media_pad|><|media_end|>\n"
    "        {% else -%}\n"
    "          {{ content['text'] }}\n"
    "        {%- endif -%}\n"
    "      {%- endfor -%}\n"
    "    {%- endif -%}\n"
    "{%- endmacro -%}\n"
    "\n"
    "{% macro set_roles(message) -%}\n"
    "  {%- set role_name =  message.get('name') or  message['role'] -%}\n"
    "  {%- if message['role'] == 'user' -%}\n"
    "    <|im_user|>{{role_name}}<|im_middle|>\n"
    "  {%- elif message['role'] == 'assistant' -%}\n"
    "    <|im_assistant|>{{role_name}}<|im_middle|>\n"
    "  {%- else -%}\n"
    "    <|im_system|>{{role_name}}<|im_middle|>\n"
    "  {%- endif -%}\n"
    "{%- endmacro -%}\n"
    "\n"
    "\n"
    "{%- macro render_toolcalls(message) -%}\n"
    "  <|tool_calls_section_begin|>\n"
    "  {%- for tool_call in message['tool_calls'] -%}\n"
    "    {%- set formatted_id = tool_call['id'] -%}\n"
    "    <|tool_call_begin|>{{ formatted_id }}<|tool_call_argument_begin|>{% if "
    "tool_call['function']['arguments'] is string %}{{ tool_call['function']['arguments'] }}{% "
    "else %}{{ tool_call['function']['arguments'] | tojson }}{% endif %}<|tool_call_end|>\n"
    "  {%- endfor -%}\n"
    "  <|tool_calls_section_end|>\n"
    "{%- endmacro -%}\n"
    "\n"
    "\n"
    "{# Find last non-tool-call assisitant message #}\n"
    "{%- set ns = namespace(last_non_tool_call_assistant_msg=-1) -%}\n"
    "{%- for idx in range(messages|length-1, -1, -1) -%}\n"
    "    {%- if messages[idx]['role'] == 'assistant' and not messages[idx].get('tool_calls') -%}\n"
    "        {%- set ns.last_non_tool_call_assistant_msg = idx -%}\n"
    "        {%- break -%}\n"
    "    {%- endif -%}\n"
    "{%- endfor -%}\n"
    "\n"
    "{# split all messages into history & suffix, reasoning_content in suffix should be "
    "reserved.#}\n"
    "{%- set hist_msgs = messages[:ns.last_non_tool_call_assistant_msg+1] -%}\n"
    "{%- set suffix_msgs = messages[ns.last_non_tool_call_assistant_msg+1:] -%}\n"
    "\n"
    "{%- if tools -%}\n"
    "  <|im_system|>tool_declare<|im_middle|>{{ tools | tojson() }}<|im_end|>\n"
    "{%- endif -%}\n"
    "\n"
    "{%- if messages|length == 0 or messages[0]['role'] != 'system' -%}\n"
    "  <|im_system|>system<|im_middle|>You are Kimi, an AI assistant created by Moonshot "
    "AI.<|im_end|>\n"
    "{%- endif -%}\n"
    "  \n"
    "{%- for message in hist_msgs -%}\n"
    "  {{set_roles(message)}}\n"
    "  {%- if message['role'] == 'assistant' -%}\n"
    "    <think></think>{{render_content(message)}}\n"
    "    {%- if message.get('tool_calls') -%}\n"
    "      {{render_toolcalls(message)}}\n"
    "    {%- endif -%}\n"
    "  {%- elif message['role'] == 'tool' -%}\n"
    "    {%- set tool_call_id = message.tool_call_id -%}\n"
    "    ## Return of {{ tool_call_id }}\n"
    "{{render_content(message)}}\n"
    "  {%- elif message['content'] is not none -%}\n"
    "    {{render_content(message)}}\n"
    "  {%- endif -%}\n"
    "  <|im_end|>\n"
    "{%- endfor -%}\n"
    "\n"
    "{%- for message in suffix_msgs -%}\n"
    "  {{set_roles(message)}}\n"
    "  {%- if message['role'] == 'assistant' -%}\n"
    "    {%- set rc = message.get('reasoning_content', '') -%}\n"
    "    <think>{{rc}}</think>{{render_content(message)}}\n"
    "    {%- if message.get('tool_calls') -%}\n"
    "     {{render_toolcalls(message)}}\n"
    "    {%- endif -%}\n"
    "  {%- elif message['role'] == 'tool' -%}\n"
    "    {%- set tool_call_id = message.tool_call_id -%}\n"
    "    ## Return of {{ tool_call_id }}\n"
    "{{render_content(message)}}\n"
    "  {%- elif message['content'] is not none -%}\n"
    "    {{render_content(message)}}\n"
    "  {%- endif -%}\n"
    "  <|im_end|>\n"
    "{%- endfor -%}\n"
    "\n"
    "\n"
    "{%- if add_generation_prompt -%}\n"
    "  <|im_assistant|>assistant<|im_middle|>\n"
    "{%- endif -%}\n";

/* Kimi-K2-Instruct's first chat template as published (= tests/text/templates/kimi_k2.jinja) */
static const char kimi_k2_jinja[] =
    "{% if tools -%}\n"
    "    {{ '<|im_system|>tool_declare<|im_middle|>' -}}\n"
    "    {{- tools | tojson -}}\n"
    "    {{ '<|im_end|>' -}}\n"
    "{%- endif -%}\n"
    "\n"
    "{%- for message in messages -%}\n"
    "  {%- if loop.first and messages[0]['role'] != 'system' -%}\n"
    "    {{ '<|im_system|>system<|im_middle|>You are a helpful assistant<|im_end|>' }}\n"
    "  {%- endif -%}\n"
    "  {%- if message['role'] == 'system' -%}\n"
    "    {{ '<|im_system|>system<|im_middle|>' }}\n"
    "  {%- elif message['role'] == 'user' -%}\n"
    "    {{ '<|im_user|>user<|im_middle|>' }}\n"
    "  {%- elif message['role'] == 'assistant' -%}\n"
    "    {{ '<|im_assistant|>assistant<|im_middle|>' }}\n"
    "  {%- elif message['role'] == 'tool' -%}\n"
    "    {{ '<|im_system|>tool<|im_middle|>' }}\n"
    "  {%- endif -%}\n"
    "\n"
    "  {%- if message['content'] is string -%}\n"
    "    {{- message['content'] + '<|im_end|>' -}}\n"
    "  {%- else -%}\n"
    "    {%- for content in message['content'] -%}\n"
    "      {%- if content['type'] == 'image' or 'image' in content or 'image_url' in content -%}\n"
    "        {{ '<|media_start|>image<|media_content|><|media_pad|><|media_end|>' }}\n"
    "      {%- else -%}\n"
    "        {{ content['text'] }}\n"
    "      {%- endif -%}\n"
    "    {%- endfor -%}\n"
    "    {{ '<|im_end|>' }}\n"
    "  {%- endif -%}\n"
    "{%- endfor -%}\n"
    "\n"
    "{%- if add_generation_prompt -%}\n"
    "  {{ '<|im_assistant|>assistant<|im_middle|>' }}\n"
    "{%- endif -%}";

const char *wt__synth_kimi_template(int thinking)
{
    return thinking ? kimi_k2_thinking_jinja : kimi_k2_jinja;
}

static void b64(const char *in, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *s = (const unsigned char *)in;
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

int wt__synth_tiktoken(const char *dir, const char *chat_template, int max_len, int *n_vocab,
                       int *bos, int *eos, char *err)
{
    struct learned *lv = malloc(sizeof *lv);
    if (!lv) return err_set(err, ERR_NOMEM, "out of memory");
    int rc = learn(lv, err);
    char p[4096];
    snprintf(p, sizeof p, "%s/tiktoken.model", dir);
    FILE *f = rc ? NULL : fopen(p, "w");
    if (!rc && !f) rc = err_set(err, ERR_IO, "%s: cannot create", p);
    for (int k = 0; !rc && k < lv->n; k++) {
        char enc[TOK_BYTES * 2];
        b64(lv->tok[k], (size_t)lv->len[k], enc);
        if (fprintf(f, "%s %d\n", enc, k) < 0) rc = err_set(err, ERR_IO, "%s: write failed", p);
    }
    if (f && fclose(f) != 0 && !rc) rc = err_set(err, ERR_IO, "%s: write failed", p);
    int n_base = lv->n;
    free(lv);
    if (rc) return rc;
    json_t *dec = json_object();
    for (size_t k = 0; k < sizeof kimi_named / sizeof kimi_named[0]; k++) {
        char id[16];
        snprintf(id, sizeof id, "%d", n_base + kimi_named[k].off);
        json_object_set_new(dec, id,
                            json_pack("{s:s, s:b, s:b, s:b, s:b, s:b}", "content", kimi_named[k].s,
                                      "lstrip", 0, "normalized", 0, "rstrip", 0, "single_word", 0,
                                      "special", 1));
    }
    json_t *o =
        json_pack("{s:o, s:s, s:b, s:s, s:i, s:s, s:s, s:s, s:s}", "added_tokens_decoder", dec,
                  "bos_token", "[BOS]", "clean_up_tokenization_spaces", 0, "eos_token", "[EOS]",
                  "model_max_length", max_len, "pad_token", "[PAD]", "tokenizer_class",
                  "TikTokenTokenizer", "unk_token", "[UNK]", "chat_template", chat_template);
    if (!o) return err_set(err, ERR_INTERNAL, "building tokenizer_config.json failed");
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    rc = json_dump_file(o, p, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (rc) return err_set(err, ERR_IO, "%s: write failed", p);
    *n_vocab = n_base + 256;
    *bos = n_base;
    *eos = n_base + 1;
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

int wt__synth_tokenizer_gguf(struct gguf_writer *w, const char *dir, int n_vocab, char *err)
{
    char p[4096];
    json_error_t je;
    snprintf(p, sizeof p, "%s/tiktoken.model", dir);
    if (access(p, R_OK) == 0) return tok_tiktoken_to_gguf(w, dir, n_vocab, err);
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
