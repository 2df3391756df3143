/* reqparse.h - validate the JSON body of /v1/chat/completions and /v1/completions.
 *
 * Turns a parsed jansson object into struct api_params: every field of docs/api.md is checked
 * for type and range; the first bad one gives ERR_INVAL with *param set to its name (for the
 * error's "param" field) and a message in err. Unknown fields are ignored; null means absent.
 * The prompt/messages themselves are only shape-checked here (api_params.messages/prompt stay
 * borrowed from the root object); templating and tokenization happen in gen_request.c.
 *
 * Chat requests also get tools (toolparse_req_parse), the grammar of a forced tool call or of
 * response_format (jsonschema.h) and the reasoning option; assistant messages may carry
 * tool_calls with null content, tool messages a tool_call_id.
 *
 * Threads: pure functions, any thread. Ownership: api_params_parse allocates the stop strings,
 * logit_bias arrays and the grammar reference; api_params_fini frees them (accepts a zeroed
 * struct). tools borrows from the root object.
 */
#ifndef TANDEM_SERVER_REQPARSE_H
#define TANDEM_SERVER_REQPARSE_H

#include "engine/engine.h"
#include "engine/text/jsonschema.h"
#include "engine/text/toolparse.h"

#include <jansson.h>
#include <stdint.h>

#define API_MAX_STOP 4
#define API_MAX_STOP_LEN 256
#define API_MAX_N 16
#define API_MAX_PROMPTS 16
#define API_MAX_LOGIT_BIAS 1024

struct api_params {
    int chat;               /* 1: chat completions, 0: legacy completions */
    const char *model;      /* borrowed from the JSON; NULL when absent */
    const json_t *messages; /* chat: validated array of messages (borrowed) */
    const json_t *prompt;   /* completions: string, [string], [int] or [[int]] (borrowed) */
    int stream, include_usage;
    int max_tokens; /* 0 = not given */
    int min_tokens;
    struct eng_sampling samp; /* logit_bias arrays owned here until handed to the engine */
    int seed_set;
    int n;            /* choices per prompt, 1..API_MAX_N */
    int logprobs;     /* report logprobs at all */
    int top_logprobs; /* 0..ENG_MAX_TOP_LOGPROBS */
    int ignore_eos;
    int priority;
    int echo;               /* completions: prepend the prompt to the text */
    const char *cache_salt; /* prefix-cache namespace (server/cache_scope.h), or NULL; borrowed */
    size_t cache_salt_len;  /* 1..CACHE_SCOPE_MAX_SALT */
    int n_stop;
    char *stop[API_MAX_STOP]; /* malloc'd, non-empty */
    /* chat only (docs/structured-output.md) */
    struct toolparse_req tools; /* tools / tool_choice / parallel_tool_calls (borrows root) */
    struct jsonschema_grammar *grammar; /* constrained decoding: a forced tool call, else
                                           response_format; NULL = none (owned reference) */
    int reasoning_inline; /* "reasoning_format": "none": keep <think>...</think> in content */
    const json_t *chat_template_kwargs; /* object of extra template variables, or NULL
                                           (borrowed; at most API_MAX_KWARGS keys and
                                           API_MAX_KWARGS_BYTES of JSON) */
};
#define API_MAX_KWARGS 64
#define API_MAX_KWARGS_BYTES 65536

/* Validate `root` (must be an object). Returns 0, or ERR_INVAL with *param (static or borrowed
 * string naming the field, "" when none) and err. On error p is finalized-safe. */
int api_params_parse(const json_t *root, int chat, struct api_params *p, const char **param,
                     char *err);
void api_params_fini(struct api_params *p);

/* Text of one chat message's content (string or array of text parts) appended to *out
 * (malloc'd, NUL-terminated). Content must have passed api_params_parse. 0 or ERR_NOMEM. */
int api_content_text(const json_t *content, char **out);

#endif
