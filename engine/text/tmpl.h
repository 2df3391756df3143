/* tmpl.h - chat templates: OpenAI-style messages -> the prompt text the model was trained on.
 *
 * tandem has built-in renderers for the DeepSeek-V3, DeepSeek-R1 and DeepSeek-R1-0528 chat
 * templates, each byte-identical to the reference Jinja rendering (including its quirks), and
 * recognizes which one a model uses by fingerprinting the chat_template string of
 * tokenizer_config.json (the official templates, known variants of them, and tandem's own Jinja
 * from tmpl_builtin_jinja()). Any other template (TMPL_JINJA) is rendered by the Jinja
 * interpreter of jinja.h through tmpl_jinja_render below; the built-ins stay as fast paths for
 * the templates they recognize (tests/text/jinja_diff.mjs checks both against the same reference).
 *
 * Family differences (all join several system messages with "\n\n" and put them after BOS):
 *   deepseek-v3      generation prompt "<｜Assistant｜>"
 *   deepseek-r1      generation prompt "<｜Assistant｜><think>\n"; assistant history keeps only
 *                    the text after the last "</think>"
 *   deepseek-r1-0528 user turns end with "<｜Assistant｜>" (so the generation prompt is only
 *                    added after assistant/tool turns); assistant messages may carry content
 *                    and tool_calls; tool outputs are closed before the next tool-call
 *                    message; history keeps the text after the last "</think>" as in r1
 * The R1 and R1-0528 references are the published templates as transcribed in
 * tests/text/ref_templates.mjs (see there for provenance).
 *
 * Threads: everything here is pure; call from any thread. Ownership: messages are borrowed; the
 * output string belongs to the caller (struct sbuf of common/sbuf.h, appended to).
 */
#ifndef TANDEM_TMPL_H
#define TANDEM_TMPL_H

#include "tok.h"

#include <jansson.h>

#include <stddef.h>

enum tmpl_kind {
    TMPL_AUTO = 0, /* only as an option value: recognize from the chat_template */
    TMPL_DEEPSEEK_V3,
    TMPL_DEEPSEEK_R1,
    TMPL_DEEPSEEK_R1_0528,
    TMPL_JINJA, /* the model's own template, interpreted (jinja.h) */
};

/* One tool call of an assistant message (OpenAI message.tool_calls[i]). */
struct tmpl_tool_call {
    const char *id;        /* may be NULL (the DeepSeek templates do not render it) */
    const char *type;      /* NULL = "function" */
    const char *name;      /* function.name */
    const char *arguments; /* function.arguments: a JSON text, rendered verbatim */
};

/* One chat message. Strings are NUL-terminated UTF-8. */
struct tmpl_msg {
    const char *role;    /* "system", "user", "assistant", "tool" (others are ignored, as the
                            templates ignore them) */
    const char *content; /* NULL = null/absent content (assistant tool-call messages) */
    const struct tmpl_tool_call *tool_calls; /* NULL = no "tool_calls" key (or null); non-NULL
                                                with n_tool_calls 0 = an empty array */
    size_t n_tool_calls;
    const char *tool_call_id; /* role "tool": the call it answers (not rendered by DeepSeek) */
};

struct tmpl_opts {
    int add_generation_prompt; /* 1: end with the assistant prefix */
    const char *bos_token;     /* text of BOS (tok_bos_text()); NULL = "" */
};

/* "auto"|"deepseek-v3"|"deepseek-r1"|"deepseek-r1-0528"|"jinja" -> kind. 0 or ERR_CONFIG. */
int tmpl_kind_parse(const char *name, enum tmpl_kind *out, char *err);
const char *tmpl_kind_name(enum tmpl_kind k); /* "deepseek-v3", ...; "auto" for AUTO */

/* Recognize a chat_template string. Returns 0 and the kind, or ERR_UNSUPPORTED with a message
 * telling the user to set model.template=deepseek-v3|deepseek-r1|deepseek-r1-0528. */
int tmpl_detect(const char *chat_template, enum tmpl_kind *out, char *err);

/* Start-up selection: `option` is the model.template value; with "auto" the template string is
 * recognized, and an unrecognized one is TMPL_JINJA (NULL template with "auto" or "jinja" is an
 * ERR_CONFIG naming model.template). */
int tmpl_select(const char *option, const char *chat_template, enum tmpl_kind *out, char *err);

/* Append the rendered prompt to out. Returns 0, ERR_INVAL (a message the reference template
 * would fail on: content missing where it is required, unknown kind; err names the message
 * index) or ERR_NOMEM. Nothing is appended on error (out->n is restored). */
int tmpl_render(enum tmpl_kind k, const struct tmpl_msg *msgs, size_t n_msgs,
                const struct tmpl_opts *o, struct sbuf *out, char *err);

/* ---- caller text stays plain text
 *
 * A rendered prompt is encoded with special-token matching on (TOK_ENC_SPECIAL), which the
 * template's own markers ("<｜User｜>", tool-call blocks) need; text the caller supplied must not
 * become those control tokens. The server marks the caller's JSON before rendering: every string
 * (object keys too) goes through tok_mark_plain, which puts the marker U+FDD0 inside each place
 * where an added token starts. Rendering keeps the markers inside the spans that came from the
 * caller whatever the template does with them (copying, joining, slicing by character, tojson,
 * which writes non-ASCII as is), and tok_encode with TOK_ENC_MARKED drops them after matching
 * added tokens: caller text gets the ids it would get as plain text, template text keeps its
 * markers. Costs at most 4 bytes per marked character. Limit: a template that ends its own text
 * with part of an added token that caller text completes joins them (no DeepSeek template does).
 */

/* A deep copy of v with every string value and object key marked (tok_mark_plain). With
 * parse_args (interpreted templates), a tool call's function.arguments holding the JSON text of
 * an object becomes that object, marked: it is what tmpl_jinja_render would parse and render with
 * tojson, and parsing first means JSON escapes such as \u003c cannot hide a token from the
 * marking. NULL for NULL v or on ERR_NOMEM. */
json_t *tmpl_plain_json(const struct tok *t, const json_t *v, int parse_args);

/* tandem's own Jinja source of a built-in template, by name ("deepseek-v3", "deepseek-r1",
 * "deepseek-r1-0528"), or NULL for an unknown name. It renders byte-identically to the official
 * template, and tmpl_detect recognizes it. Static storage. */
const char *tmpl_builtin_jinja(const char *name);

/* ---- interpreted templates (TMPL_JINJA) */

struct jinja;

/* One conversation for an interpreted template. The template sees the variables messages,
 * tools (when non-NULL), add_generation_prompt, bos_token, eos_token and every key of kwargs
 * (chat_template_kwargs; "messages" and "tools" there are ERR_INVAL). messages are the
 * request's, with normalizations as OpenAI-compatible servers do: role "developer" is "system",
 * content given as an array of text parts becomes one string, and a tool call's
 * function.arguments that is a JSON text of an object becomes that object (templates render it
 * with tojson) unless args_text is set. */
struct tmpl_jinja_ctx {
    const json_t *messages; /* array of message objects (borrowed) */
    const json_t *tools;    /* array or NULL */
    const json_t *kwargs;   /* object or NULL */
    int add_generation_prompt;
    const char *bos_token, *eos_token; /* NULL = "" */
    int args_text; /* 1: tool-call arguments stay JSON text (tmpl_modes.args_text) */
};

/* Render; 0, ERR_INVAL (the template failed: raise_exception, a type error, a limit; err says
 * which) or ERR_NOMEM. Nothing is appended on error. Any thread; t is only read. */
int tmpl_jinja_render(const struct jinja *t, const struct tmpl_jinja_ctx *c, struct sbuf *out,
                      char *err);

/* What an interpreted template implies for parsing the model's output (docs/chat-templates.md):
 * deepseek_tools: it writes DeepSeek's tool-call markers, so tool calls in the output use them
 * (else tool calls are not parsed: the text stays content); v31_tools: it writes them without a
 * "```json" fence, NAME<｜tool▁sep｜>ARGS (DeepSeek-V3.1: toolparse.h TOOLPARSE_FMT_V31);
 * args_text: it never applies tojson to a tool call's arguments (V3.1 concatenates them as a
 * string), so they reach it as the request's JSON text; kimi_tools: it writes Kimi-K2's
 * "<|tool_calls_section_begin|>" (TOOLPARSE_FMT_KIMI; such a template renders `tools` itself);
 * think: it mentions "<think>", so reasoning is split as for DeepSeek-R1. */
struct tmpl_modes {
    int deepseek_tools, v31_tools, args_text, kimi_tools, think;
};
void tmpl_modes_of(const char *chat_template, struct tmpl_modes *m);

/* The text of a template file (model.chat_template_file), at most 1 MiB, into *out (malloc'd,
 * NUL-terminated). 0, ERR_CONFIG (unreadable, too large, or holding a NUL byte) or ERR_NOMEM. */
int tmpl_read_file(const char *path, char **out, char *err);

#endif
