/* resp.h - POST /v1/responses (OpenAI's Responses API, stateless) on top of the chat machinery.
 *
 * A Responses request is translated into a chat completions body (resp_request.c): `input`
 * items become messages, `instructions` a system message, `tools` / `tool_choice` /
 * `text.format` / `max_output_tokens` their chat equivalents. That body then takes the chat path
 * of gen.h unchanged (validation, template, tokenization, grammar, the choice's toolparse_pipe);
 * only the output differs: resp_output.c turns the pipe's message or deltas into the Responses
 * object and its SSE events. Nothing is stored: previous_response_id / conversation are refused.
 *
 * Threads: everything runs on the request's HTTP thread (resp_translate is pure, any thread).
 * Ownership: struct resp belongs to its gen (gen->resp, freed by gen_free through resp_free);
 * it holds a reference to the original request and owns the translated chat body.
 */
#ifndef TANDEM_SERVER_RESP_H
#define TANDEM_SERVER_RESP_H

#include "common/sbuf.h"
#include "http.h"

#include <jansson.h>

struct gen;

/* limits on the request side (the body size is bounded by the HTTP layer already) */
#define RESP_MAX_ITEMS 4096 /* input items */
#define RESP_MAX_PARTS 256  /* content parts of one item */

/* resp_request.c */
/* Translate a Responses request (any JSON value) into a chat completions body (*chat, a new
 * object). Returns 0, or ERR_INVAL with *param naming the Responses field and err the reason
 * (unsupported features included), or ERR_NOMEM. Pure. */
int resp_translate(const json_t *req, json_t **chat, const char **param, char *err);
/* The Responses field for a "param" named by chat validation (max_tokens -> max_output_tokens,
 * messages -> input, response_format -> text.format, ...). */
const char *resp_param_name(const char *chat_param);

/* The streaming state of one response (resp_output.c); one output item is open at a time. */
enum resp_item { RESP_ITEM_NONE = 0, RESP_ITEM_REASONING, RESP_ITEM_MESSAGE };

struct resp {
    json_t *req;  /* the original request (for the echoed fields) */
    json_t *chat; /* the translated chat body (api_params borrows from it) */
    /* streaming */
    long long seq;         /* next sequence_number */
    json_t *output;        /* finished output items, in order */
    enum resp_item open;   /* the item receiving text, if any */
    char open_id[80];      /* its id */
    struct sbuf open_text; /* its text so far */
    int calls_open;        /* a function_call item waits for its arguments delta */
    json_t *call;          /* that item */
    struct sbuf reasoning; /* all reasoning text (usage.reasoning_tokens) */
    int ended;             /* response.completed / incomplete / error written */
};

/* Build the resp of a request: translate it (see resp_translate). *out is NULL on error. */
int resp_create(const json_t *req, struct resp **out, const char **param, char *err);
void resp_free(struct resp *r); /* accepts NULL */

/* resp_output.c: the counterparts of gen_sse_start / gen_sse_pending / gen_sse_end /
 * gen_reply_full for a gen with g->resp set. */
void resp_sse_start(struct gen *g);
void resp_sse_pending(struct gen *g);
void resp_sse_end(struct gen *g);
enum MHD_Result resp_reply_full(struct http_conn *hc, struct gen *g);

#endif
