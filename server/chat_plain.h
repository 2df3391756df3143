/* chat_plain.h - the token ids of a chat prompt, with the caller's text kept plain text.
 *
 * Unless model.parse_special_in_content is set (trusted callers), the messages (every role:
 * content, tool-call names and arguments, tool results), the tool definitions and
 * chat_template_kwargs are marked with tmpl_plain_json before the template renders them, and the
 * rendered text is encoded with TOK_ENC_SPECIAL | TOK_ENC_MARKED: "<｜Assistant｜>" typed by a
 * caller is ordinary text, the template's own markers are control tokens (tmpl.h tells how).
 * Every chat-shaped request uses it: /v1/chat/completions, /v1/responses, /v1/messages (and
 * count_tokens), /tokenize with messages.
 *
 * Threads: the request's HTTP thread; s is only read. Ownership: out is the caller's.
 */
#ifndef TANDEM_SERVER_CHAT_PLAIN_H
#define TANDEM_SERVER_CHAT_PLAIN_H

#include "engine/text/tok.h"
#include "http.h"

#include <jansson.h>

/* The ids of a chat prompt (messages validated by api_params_parse; tools and kwargs may be
 * NULL), appended to out; *think_open (may be NULL): the prompt leaves "<think>" open (R1).
 * 0, or the error of rendering (ERR_INVAL with err) or encoding, or ERR_NOMEM. */
int chat_prompt_tokens(struct srv *s, const json_t *messages, const struct toolparse_req *tools,
                       const json_t *kwargs, struct tok_ids *out, int *think_open, char *err);

#endif
