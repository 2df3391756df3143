/* toolparse.h - DeepSeek tool-call markup in generated text -> OpenAI tool_calls.
 *
 * DeepSeek-V3/R1 write tool calls as ("<｜x｜>" are single added tokens, which the
 * detokenizer emits as their text because they are not "special" in tokenizer.json):
 *
 *   <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGS\n```<｜tool▁call▁end｜>
 *   \n<｜tool▁call▁begin｜>...<｜tool▁call▁end｜><｜tool▁calls▁end｜>
 *
 * DeepSeek-V3.1 (and V3.1-Terminus) drop the type and the json fence (TOOLPARSE_FMT_V31):
 *
 *   <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜>...<｜tool▁calls▁end｜>
 *
 * Kimi-K2 (TOOLPARSE_FMT_KIMI) has markers of its own and names each call functions.NAME:IDX:
 *
 *   <|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:0<|tool_call_argument_begin|>ARGS<|tool_call_end|>...<|tool_calls_section_end|>
 *
 * The format follows the chat template (tmpl_modes_of: a template that writes DeepSeek's
 * markers without a "```json" fence is V3.1's, one that writes Kimi's markers Kimi's); the
 * rules below hold for all three.
 *
 * Parsing (struct toolparse, one per choice, fed the detokenized text in any chunking):
 *   - Text outside a tool block is content. A tail that is a proper prefix of
 *     "<｜tool▁calls▁begin｜>" is held back until the next chunk decides it.
 *   - A block is buffered from "<｜tool▁calls▁begin｜>" to "<｜tool▁calls▁end｜>" and then parsed
 *     as a whole. It becomes tool calls only if every call in it is well formed: type
 *     "function" (or empty), a non-empty NAME without whitespace (one of the request's tools
 *     when names were given), and ARGS (fenced in ```json ... ``` or bare) that parse as a JSON
 *     object with jansson. Otherwise the whole block is dropped: the model's markers never
 *     reach a client. Never an error. A block still open at toolparse_finish() (EOS or
 *     max_tokens before "<｜tool▁calls▁end｜>") is accepted when it holds at least one complete
 *     call and nothing but whitespace after the last one; else it is dropped.
 *   - function.arguments is the model's ARGS text trimmed of surrounding whitespace (valid JSON,
 *     passed on verbatim, as the chat template renders it back verbatim).
 *   - ids are "call_" + 24 alphanumerics from a per-request seed (deterministic for a seed);
 *     in Kimi's format, a call the model wrote as functions.NAME:IDX has that text as its id
 *     (what Kimi's templates render back as tool_call.id and "## Return of ID"); a shorter form
 *     (no prefix or no index) or one too long for the id gets a call_ id.
 * Because a block is committed only once it is complete and valid, the streamed and the
 * non-streamed results are always the same (the calls of one block arrive together, at its
 * end; for streaming each call still gets its own chunks, see toolparse_stream_deltas).
 *
 * Per choice, struct toolparse_pipe (below) chains reasoning.h and this parser and produces the
 * OpenAI delta/message fields, so the server only feeds it text and sends what it returns.
 *
 * Request side (pure helpers for server/): toolparse_req_parse validates `tools`,
 * `tool_choice`, `parallel_tool_calls`; toolparse_tools_prompt renders the tool list as system
 * text (the DeepSeek-V3 templates do not render tool definitions themselves);
 * toolparse_history_calls turns an assistant message's tool_calls into tmpl.h structs.
 *
 * Threads: a struct toolparse is used by one thread at a time (the HTTP thread of its request);
 * the helpers are pure. Ownership: toolparse_create/destroy; strings returned by toolparse_get
 * live until toolparse_destroy; JSON returned by the *_json helpers is a new reference.
 */
#ifndef TANDEM_TOOLPARSE_H
#define TANDEM_TOOLPARSE_H

#include "reasoning.h"
#include "tmpl.h"
#include "tok.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* The markers, as UTF-8 text (the contents of the added tokens 128806..128814). */
#define TOOLPARSE_CALLS_BEGIN "<｜tool▁calls▁begin｜>"
#define TOOLPARSE_CALLS_END "<｜tool▁calls▁end｜>"
#define TOOLPARSE_CALL_BEGIN "<｜tool▁call▁begin｜>"
#define TOOLPARSE_CALL_END "<｜tool▁call▁end｜>"
#define TOOLPARSE_SEP "<｜tool▁sep｜>"
/* Kimi-K2's (TOOLPARSE_FMT_KIMI) */
#define TOOLPARSE_KIMI_CALLS_BEGIN "<|tool_calls_section_begin|>"
#define TOOLPARSE_KIMI_CALLS_END "<|tool_calls_section_end|>"
#define TOOLPARSE_KIMI_CALL_BEGIN "<|tool_call_begin|>"
#define TOOLPARSE_KIMI_ARGS "<|tool_call_argument_begin|>"
#define TOOLPARSE_KIMI_CALL_END "<|tool_call_end|>"

struct toolparse;

enum toolparse_format {
    TOOLPARSE_FMT_V3 = 0, /* function<sep>NAME\n```json\nARGS\n``` (V3, R1, R1-0528) */
    TOOLPARSE_FMT_V31,    /* NAME<sep>ARGS (V3.1, V3.1-Terminus) */
    TOOLPARSE_FMT_KIMI,   /* Kimi-K2's markers, functions.NAME:IDX<args>ARGS */
};

struct toolparse_call {
    char id[96];     /* "call_" + 24 alphanumerics; Kimi: the model's functions.NAME:IDX */
    char *name;      /* function.name */
    char *arguments; /* function.arguments: a JSON object text */
};

/* names[0..n_names): the request's function names (copied); n_names 0 = accept any name.
 * id_seed: seeds the call ids. Returns 0 or ERR_NOMEM. */
int toolparse_create(struct toolparse **out, uint64_t id_seed, const char *const *names,
                     size_t n_names, char *err);
void toolparse_destroy(struct toolparse *tp); /* accepts NULL */
/* The call syntax to parse (TOOLPARSE_FMT_V3 after create); set before the first feed. */
void toolparse_set_format(struct toolparse *tp, enum toolparse_format f);

/* Feed text[0..n). Content text that is final is appended to `content`; completed tool calls
 * are added to the parser's list (see toolparse_n_calls). Returns 0 or ERR_NOMEM. */
int toolparse_feed(struct toolparse *tp, const char *text, size_t n, struct sbuf *content);

/* End of generation: decide an open block, flush held text. Returns 0 or ERR_NOMEM. */
int toolparse_finish(struct toolparse *tp, struct sbuf *content);

size_t toolparse_n_calls(const struct toolparse *tp);
const struct toolparse_call *toolparse_get(const struct toolparse *tp, size_t i); /* or NULL */
/* 1 while text is held back or a block is being buffered (a streaming server may show it
 * nothing yet), else 0. */
int toolparse_busy(const struct toolparse *tp);

/* ---- OpenAI JSON ---- */

/* message.tool_calls: [{"id","type":"function","function":{"name","arguments"}}...], or NULL
 * when there are no calls (leave the key out then) or out of memory. */
json_t *toolparse_message_json(const struct toolparse *tp);

/* Streaming: for every call i >= *n_sent, append two values to `deltas` (a JSON array), each
 * the "tool_calls" array of one chunk's delta, in this order:
 *   [{"index":i,"id":...,"type":"function","function":{"name":...,"arguments":""}}]
 *   [{"index":i,"function":{"arguments":"..."}}]
 * so the name and the arguments never share a chunk; then *n_sent = toolparse_n_calls().
 * Index = position in this choice's tool_calls. Returns 0 or ERR_NOMEM. */
int toolparse_stream_deltas(const struct toolparse *tp, size_t *n_sent, json_t *deltas);

/* ---- request side ---- */

enum toolparse_choice {
    TOOLPARSE_CHOICE_AUTO = 0, /* default when tools are given */
    TOOLPARSE_CHOICE_NONE,     /* default without tools: tools are not shown to the model */
    TOOLPARSE_CHOICE_REQUIRED, /* must call some tool */
    TOOLPARSE_CHOICE_NAMED,    /* must call `name` */
};

struct toolparse_req {
    const json_t *tools; /* validated "tools" array (borrowed), NULL when absent/empty */
    size_t n_tools;
    const char *names[64]; /* function names, borrowed from `tools` */
    enum toolparse_choice choice;
    const char *choice_name;      /* NAMED: borrowed from the request */
    int parallel;                 /* parallel_tool_calls, default 1 */
    enum toolparse_format format; /* the model's call syntax (set by the server, not parsed) */
};
#define TOOLPARSE_MAX_TOOLS 64

/* Validate tools / tool_choice / parallel_tool_calls of a chat request (root: object). Each
 * tool must be {"type":"function","function":{"name": non-empty [A-Za-z0-9_.-]{1,64},
 * "description"?: string, "parameters"?: object, "strict"?: bool}}; names unique; at most
 * TOOLPARSE_MAX_TOOLS. tool_choice: "auto"|"none"|"required"|{"type":"function","function":
 * {"name": one of the tools}}; "required"/named without tools is an error. Returns 0, or
 * ERR_INVAL with *param naming the field ("tools", "tool_choice", "parallel_tool_calls"). */
int toolparse_req_parse(const json_t *root, struct toolparse_req *r, const char **param, char *err);

/* Append the tool list as system-prompt text (nothing when the choice is NONE or there are no
 * tools): each function's name, description and parameters schema, the exact call syntax (of
 * r->format), and
 * for REQUIRED/NAMED an instruction to call. The server joins it to the system message (after
 * the user's system text, "\n\n"-separated; or as the only system message). 0 or ERR_NOMEM. */
int toolparse_tools_prompt(const struct toolparse_req *r, struct sbuf *out);

/* An assistant message's "tool_calls" (OpenAI shape) -> tmpl.h calls. *calls is malloc'd (free
 * it), its strings are borrowed from msg; *calls = NULL, *n = 0 when the key is absent/null.
 * Errors: ERR_INVAL (wrong shape; err says which field), ERR_NOMEM. */
int toolparse_history_calls(const json_t *msg, struct tmpl_tool_call **calls, size_t *n, char *err);

/* ---- per-choice output pipeline for the server ----
 *
 * Detokenized text -> reasoning split (R1 templates) -> tool-call parsing (when tools are on)
 * -> OpenAI message / delta fields. One per choice, HTTP thread. Caller storage (init/fini). */
struct toolparse_pipe {
    int split_reasoning; /* reasoning_content is produced */
    struct reasoning rs;
    struct toolparse *tp;  /* NULL when tool calls are not parsed */
    struct sbuf content;   /* pending content (streaming) / all of it (non-streaming) */
    struct sbuf reasoning; /* pending reasoning_content / all of it */
    struct sbuf scratch;
    size_t calls_sent;
    int think_tok; /* toolparse_pipe_wants: a <think> token opened a block not yet closed */
    int tool_tok;  /* ... and a tool-calls-begin token opened a block not yet closed */
};

/* reasoning_flags: -1 = no splitting (deepseek-v3 template), else REASONING_* flags (see
 * reasoning.h and reasoning_prompt_open). req: the parsed tools (and req->format); NULL or
 * choice NONE = no tool parsing. seed: for the call ids. Returns 0 or ERR_NOMEM. */
int toolparse_pipe_init(struct toolparse_pipe *p, int reasoning_flags,
                        const struct toolparse_req *req, uint64_t seed, char *err);
void toolparse_pipe_fini(struct toolparse_pipe *p);

/* Does this pipe consume the text of an added token (piece[0..len))? When reasoning is split
 * (or kept inline): 1 for a "<think>" that opens a block and a "</think>" that closes one
 * (tracked per token: call it for every added token, in order). When tool calls are parsed,
 * outside a think block: 1 for the calls-begin marker, and inside the block it opens for the
 * other four markers. Else 0. The server gives the pipe no text of an
 * added token it does not consume, so no other marker of the model (<｜User｜>, a stray <think>,
 * ...) reaches a client. */
int toolparse_pipe_wants(struct toolparse_pipe *p, const char *piece, size_t len);

/* Feed detokenized text; end of generation. Return 0 or ERR_NOMEM. */
int toolparse_pipe_feed(struct toolparse_pipe *p, const char *text, size_t n);
int toolparse_pipe_finish(struct toolparse_pipe *p);

/* Streaming: append to `deltas` (a JSON array) the delta objects to send now, one per chunk,
 * in order: {"reasoning_content": ..., "content": ...} with what is pending (keys only when
 * non-empty; nothing when both are), then two {"tool_calls": [...]} deltas per new call (see
 * toolparse_stream_deltas). Pending text is cleared. Returns 0 or ERR_NOMEM. */
int toolparse_pipe_deltas(struct toolparse_pipe *p, json_t *deltas);

/* Non-streaming: set "content" (null when empty and there are tool calls), "reasoning_content"
 * (when splitting) and "tool_calls" (when any) on the message object. 0 or ERR_NOMEM. */
int toolparse_pipe_message(struct toolparse_pipe *p, json_t *message);

/* The finish_reason to report: "tool_calls" when calls were made and the engine said "stop",
 * else engine_reason. */
const char *toolparse_pipe_finish_reason(const struct toolparse_pipe *p, const char *engine_reason);

#endif
