/* api_messages.c - POST /v1/messages and POST /v1/messages/count_tokens (Anthropic).
 *
 * What: both translate the body into a chat completion request (anthropic_req.c). Messages
 * then creates a gen from it, marks it `anthropic` (its answer is built by gen_anthropic.c)
 * and runs it like a chat completion (api_gen.c's gen_start). count_tokens renders the same
 * prompt and answers {"input_tokens": N}, the prompt tokens a Messages request reports.
 * Errors have Anthropic's shape: the routes are marked `anthropic` (http.c).
 * Threads: MHD's thread of the connection.
 */
#include "anthropic.h"
#include "gen.h"
#include "served.h"

#include <stdio.h>
#include <string.h>

/* The body as a chat completion request. */
static int translate(struct http_conn *hc, int count_tokens, json_t **chat, const char **param,
                     char *err)
{
    json_t *in = NULL;
    int rc = gen_parse_body(hc, &in, err);
    if (rc == 0) rc = anthropic_to_chat(in, count_tokens, chat, param, err);
    json_decref(in);
    return rc;
}

enum MHD_Result api_messages(struct http_conn *hc)
{
    char err[ERR_LEN] = "";
    const char *param = NULL;
    json_t *chat = NULL;
    struct gen *g = NULL;
    int rc = translate(hc, 0, &chat, &param, err);
    if (rc == 0) rc = gen_create_root(hc, chat, GEN_CHAT, &g, &param, err);
    if (rc) {
        enum MHD_Result r = http_reply_error(hc, rc, err, param);
        gen_free(g);
        return r;
    }
    g->anthropic = 1;
    const char *dash = strchr(g->id, '-');
    char id[sizeof g->id];
    snprintf(id, sizeof id, "msg_%.50s", dash ? dash + 1 : g->id);
    memcpy(g->id, id, sizeof id);
    return gen_start(hc, g);
}

enum MHD_Result api_messages_count_tokens(struct http_conn *hc)
{
    struct srv *s = hc->srv;
    char err[ERR_LEN] = "";
    const char *param = NULL;
    json_t *chat = NULL;
    struct api_params p;
    struct sbuf text = {0};
    struct tok_ids ids = {0};
    memset(&p, 0, sizeof p);
    int rc = translate(hc, 1, &chat, &param, err);
    if (rc == 0) rc = api_params_parse(chat, 1, &p, &param, err);
    if (rc == 0 && p.model && !served_has(s->cfg->model_served_names, s->model_name, p.model))
        rc = err_set(err, ERR_MODEL_NOT_FOUND, "The model '%.100s' does not exist", p.model);
    if (rc == 0) rc = api_render_chat(s, p.messages, &p.tools, p.chat_template_kwargs, &text, err);
    if (rc == 0) rc = tok_encode(s->tok, text.s ? text.s : "", text.n, TOK_ENC_SPECIAL, &ids, err);
    size_t n = ids.n;
    tok_ids_fini(&ids);
    sbuf_fini(&text);
    api_params_fini(&p);
    json_decref(chat);
    if (rc) return http_reply_error(hc, rc, err, param);
    return http_reply_json(hc, 200, json_pack("{s:I}", "input_tokens", (json_int_t)n));
}
