/* anthropic.h - Anthropic's Messages API (POST /v1/messages, /v1/messages/count_tokens).
 *
 * A Messages request is translated into the body of a chat completion (anthropic_req.c) and
 * then runs through the chat machinery unchanged (reqparse.c, gen_request.c, the engine,
 * gen_text.c); only the answer has its own shape (gen_anthropic.c). The handlers are in
 * api_messages.c; docs/api.md lists which fields are honored, ignored and refused.
 *
 * Threads: pure functions, any thread. Ownership: anthropic_to_chat returns a new JSON object
 * (the caller decrefs it); anthropic_error_body returns a new reference.
 */
#ifndef TANDEM_SERVER_ANTHROPIC_H
#define TANDEM_SERVER_ANTHROPIC_H

#include <jansson.h>

#define ANTHROPIC_MAX_MESSAGES 10000 /* messages in one request */
#define ANTHROPIC_MAX_BLOCKS 10000   /* content blocks in one message */

/* Translate a Messages request (in: any JSON value) into a chat completion request: system ->
 * a system message, content blocks -> text, tool_use -> tool_calls, tool_result -> tool
 * messages, tools / tool_choice / stop_sequences / thinking -> their chat counterparts.
 * count_tokens: max_tokens is not required (/v1/messages/count_tokens). Returns 0 with *out
 * set, or ERR_INVAL (err says why, *param names the field) or ERR_NOMEM. */
int anthropic_to_chat(const json_t *in, int count_tokens, json_t **out, const char **param,
                      char *err);

/* Anthropic's error type for an ERR_* code (by its HTTP status): "invalid_request_error",
 * "authentication_error", "not_found_error", "rate_limit_error", "overloaded_error",
 * "api_error", ... */
const char *anthropic_error_type(int code);

/* {"type":"error","error":{"type":...,"message":...}}; msg NULL or "" = the table's text. */
json_t *anthropic_error_body(int code, const char *msg);

#endif
