/* gen_request.c - a generation request from its body to the engine requests, and its end.
 *
 * What: gen_create checks the body (UTF-8, JSON, every parameter: reqparse.c) and sets up the
 * struct gen; gen_build_requests renders the chat template (api_render_chat), tokenizes each
 * prompt, checks it against the context, and builds one eng_request per choice with its
 * detokenizer, chat pipe and grammar automaton. Nothing is submitted here (api_gen.c does).
 * Error replies: each failure returns the code, the message in err and the "param" the reply
 * names, so the handler sends exactly one error for whichever step failed.
 * Threads: the HTTP thread of the request, before the gen is shared with the engine; gen_free
 * runs on whichever thread drops the last reference (gen.h).
 * Ownership: the gen owns the parsed JSON (root), the parameters, the choices and their
 * detokenizers and pipes; engine requests are owned by the caller of gen_build_requests until
 * eng_submit takes their arrays (gen_request_free frees what is left).
 */
#include "gen.h"

#include "common/err.h"
#include "common/utf8.h"
#include "engine/text/constrain.h"
#include "engine/text/reasoning.h"
#include "served.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* ---- the gen from the body */

static int count_prompts(const struct api_params *p)
{
    if (p->chat || json_is_string(p->prompt)) return 1;
    if (json_is_integer(json_array_get(p->prompt, 0))) return 1;
    return (int)json_array_size(p->prompt);
}

/* ERR_NOMEM with the table's message and no "param". */
static int nomem(const char **param, char *err)
{
    *param = NULL;
    err[0] = 0;
    return ERR_NOMEM;
}

int gen_parse_body(struct http_conn *hc, json_t **root, char *err)
{
    size_t bad_at = 0;
    *root = NULL;
    if (utf8_check(hc->body, hc->body_len, &bad_at) != 0)
        return err_set(err, ERR_UTF8, "the request body is not valid UTF-8 (byte %zu)", bad_at);
    json_error_t je;
    *root = json_loadb(hc->body, hc->body_len, 0, &je);
    if (!*root)
        return err_set(err, ERR_JSON, "malformed JSON at line %d column %d: %s", je.line, je.column,
                       je.text);
    return 0;
}

int gen_create(struct http_conn *hc, enum gen_api api, struct gen **out, const char **param,
               char *err)
{
    json_t *root = NULL;
    *out = NULL;
    *param = NULL;
    int rc = gen_parse_body(hc, &root, err);
    return rc ? rc : gen_create_root(hc, root, api, out, param, err);
}

int gen_create_root(struct http_conn *hc, json_t *root, enum gen_api api, struct gen **out,
                    const char **param, char *err)
{
    int chat = api != GEN_COMPLETIONS;
    struct srv *s = hc->srv;
    *out = NULL;
    *param = NULL;
    struct gen *g = calloc(1, sizeof *g);
    if (!g) {
        json_decref(root);
        return nomem(param, err);
    }
    *out = g;
    pthread_mutex_init(&g->mu, NULL);
    g->srv = s;
    g->root = root;
    snprintf(g->request_id, sizeof g->request_id, "%s", hc->request_id);
    const json_t *body = root;
    if (api == GEN_RESPONSES) { /* validated as the chat body it translates to */
        int rc = resp_create(root, &g->resp, param, err);
        if (rc) return rc;
        body = g->resp->chat;
    }
    int rc = api_params_parse(body, chat, &g->p, param, err);
    if (rc) return rc;
    if (g->p.model && !served_has(s->cfg->model_served_names, s->model_name, g->p.model)) {
        *param = "model";
        return err_set(err, ERR_MODEL_NOT_FOUND, "The model '%.100s' does not exist", g->p.model);
    }
    if (chat && s->tmpl == TMPL_JINJA && !s->tmpl_modes.deepseek_tools &&
        (g->p.tools.choice == TOOLPARSE_CHOICE_REQUIRED ||
         g->p.tools.choice == TOOLPARSE_CHOICE_NAMED)) {
        /* forcing a call constrains the output to DeepSeek's markup, which such a template
         * does not use */
        *param = "tool_choice";
        return err_set(err, ERR_INVAL,
                       "this model's chat template has no tool-call format tandem parses: "
                       "'tool_choice' must be \"auto\" or \"none\"");
    }

    uint64_t idn = atomic_fetch_add(&s->next_id, 1);
    if (api == GEN_RESPONSES)
        snprintf(g->id, sizeof g->id, "resp_%s%016llx", s->fingerprint + 3,
                 (unsigned long long)idn);
    else
        snprintf(g->id, sizeof g->id, "%s-%s%016llx", chat ? "chatcmpl" : "cmpl",
                 s->fingerprint + 3, (unsigned long long)idn);
    g->created = (long long)time(NULL);
    g->stream = g->p.stream;
    g->n_prompts = count_prompts(&g->p);
    g->n_choices = g->n_prompts * g->p.n;
    if (g->n_choices > GEN_MAX_CHOICES) {
        *param = "n";
        return err_set(err, ERR_INVAL, "too many choices (prompts x n)");
    }
    g->ch = calloc((size_t)g->n_choices, sizeof *g->ch);
    g->prompt_len = calloc((size_t)g->n_prompts, sizeof *g->prompt_len);
    g->echo = calloc((size_t)g->n_prompts, sizeof *g->echo);
    if (!g->ch || !g->prompt_len || !g->echo) return nomem(param, err);
    for (int i = 0; i < g->p.samp.n_logit_bias; i++)
        if (g->p.samp.logit_bias_ids[i] >= s->info.vocab_size) {
            *param = "logit_bias";
            return err_set(err, ERR_INVAL,
                           "'logit_bias' token id %d is outside the vocabulary "
                           "(0..%d)",
                           g->p.samp.logit_bias_ids[i], s->info.vocab_size - 1);
        }
    if (!g->p.seed_set &&
        getrandom(&g->p.samp.seed, sizeof g->p.samp.seed, 0) != (ssize_t)sizeof g->p.samp.seed)
        g->p.samp.seed = (uint64_t)time(NULL) ^ idn;
    return 0;
}

/* ---- prompts and engine requests */

/* An interpreted template: the messages, and `tools` as a variable; a template that writes
 * DeepSeek's tool-call markers also gets the tool list in its system text, as the built-ins do
 * (the DeepSeek templates never render `tools`). */
static int render_jinja(struct srv *s, const json_t *messages, const struct toolparse_req *tools,
                        const json_t *kwargs, struct sbuf *out, char *err)
{
    int on = tools && tools->n_tools && tools->choice != TOOLPARSE_CHOICE_NONE;
    struct sbuf tools_text = {0};
    json_t *msgs = json_incref((json_t *)messages);
    int rc = 0;
    if (on && s->tmpl_modes.deepseek_tools) {
        json_t *first = json_array_get(messages, 0);
        const char *r0 = json_string_value(json_object_get(first, "role"));
        int sys_first = r0 && (strcmp(r0, "system") == 0 || strcmp(r0, "developer") == 0);
        char *own = NULL;
        if (toolparse_tools_prompt(tools, &tools_text) ||
            (sys_first && api_content_text(json_object_get(first, "content"), &own))) {
            rc = err_set(err, ERR_NOMEM, "out of memory");
            goto out;
        }
        struct sbuf joined = {0};
        if ((own && own[0] &&
             (sbuf_append(&joined, own, strlen(own)) || sbuf_append(&joined, "\n\n", 2))) ||
            sbuf_append(&joined, tools_text.s, tools_text.n))
            rc = ERR_NOMEM;
        free(own);
        json_t *sys =
            rc ? NULL : json_pack("{s:s,s:s%}", "role", "system", "content", joined.s, joined.n);
        sbuf_fini(&joined);
        json_decref(msgs);
        msgs = sys ? json_copy((json_t *)messages) : NULL;
        if (!sys || !msgs ||
            (sys_first ? json_array_set_new(msgs, 0, sys) : json_array_insert_new(msgs, 0, sys))) {
            rc = err_set(err, ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    struct tmpl_jinja_ctx c = {.messages = msgs,
                               .tools = on ? tools->tools : NULL,
                               .kwargs = kwargs,
                               .add_generation_prompt = 1,
                               .bos_token = tok_bos_text(s->tok),
                               .eos_token = tok_eos_text(s->tok)};
    rc = tmpl_jinja_render(s->jinja, &c, out, err);
out:
    json_decref(msgs);
    sbuf_fini(&tools_text);
    return rc;
}

int api_render_chat(struct srv *s, const json_t *messages, const struct toolparse_req *tools,
                    const json_t *kwargs, struct sbuf *out, char *err)
{
    if (s->tmpl == TMPL_JINJA) return render_jinja(s, messages, tools, kwargs, out, err);
    size_t n_in = json_array_size(messages);
    /* the tool list joins the first system message, or becomes one in front (msgs[0]) */
    struct sbuf tools_text = {0};
    if (tools && toolparse_tools_prompt(tools, &tools_text) != 0)
        return err_set(err, ERR_NOMEM, "out of memory");
    int sys_first = 0;
    if (n_in > 0) {
        const char *r0 = json_string_value(json_object_get(json_array_get(messages, 0), "role"));
        sys_first = r0 && (strcmp(r0, "system") == 0 || strcmp(r0, "developer") == 0);
    }
    size_t extra = tools_text.n && !sys_first ? 1 : 0;
    size_t n = n_in + extra;
    struct tmpl_msg *msgs = calloc(n, sizeof *msgs);
    char **texts = calloc(n, sizeof *texts);
    struct tmpl_tool_call **calls = calloc(n, sizeof *calls);
    int rc = 0;
    if (!msgs || !texts || !calls) {
        rc = err_set(err, ERR_NOMEM, "out of memory");
        goto out;
    }
    if (extra) {
        msgs[0].role = "system";
        msgs[0].content = tools_text.s;
    }
    for (size_t i = extra; i < n; i++) {
        json_t *m = json_array_get(messages, i - extra);
        const char *role = json_string_value(json_object_get(m, "role"));
        json_t *content = json_object_get(m, "content");
        msgs[i].role = strcmp(role, "developer") == 0 ? "system" : role;
        if (content && !json_is_null(content)) {
            if (api_content_text(content, &texts[i]) != 0) {
                rc = err_set(err, ERR_NOMEM, "out of memory");
                goto out;
            }
            msgs[i].content = texts[i];
        }
        if (i == 0 && tools_text.n) { /* a system message first: the tool list joins it */
            struct sbuf joined = {0};
            const char *own = texts[0] ? texts[0] : "";
            if (sbuf_append(&joined, own, strlen(own)) ||
                (own[0] && sbuf_append(&joined, "\n\n", 2)) ||
                sbuf_append(&joined, tools_text.s, tools_text.n)) {
                sbuf_fini(&joined);
                rc = err_set(err, ERR_NOMEM, "out of memory");
                goto out;
            }
            free(texts[0]);
            texts[0] = joined.s; /* NUL-terminated by sbuf_append */
            msgs[0].content = texts[0];
        }
        size_t n_calls = 0;
        if ((rc = toolparse_history_calls(m, &calls[i], &n_calls, err)) != 0) goto out;
        msgs[i].tool_calls = calls[i]; /* NULL when absent; non-NULL for [] too */
        msgs[i].n_tool_calls = n_calls;
        json_t *tcid = json_object_get(m, "tool_call_id");
        if (json_is_string(tcid)) msgs[i].tool_call_id = json_string_value(tcid);
    }
    struct tmpl_opts o = {.add_generation_prompt = 1, .bos_token = tok_bos_text(s->tok)};
    rc = tmpl_render(s->tmpl, msgs, n, &o, out, err);
out:
    for (size_t i = 0; texts && i < n; i++) free(texts[i]);
    for (size_t i = 0; calls && i < n; i++) free(calls[i]);
    free(calls);
    free(texts);
    free(msgs);
    sbuf_fini(&tools_text);
    return rc;
}

/* Tokens of prompt number `i` (a malloc'd array in *ids, *n). */
static int prompt_tokens(struct gen *g, int i, int32_t **ids, int *n, const char **param, char *err)
{
    struct srv *s = g->srv;
    struct tok_ids out = {0};
    int rc = 0;
    *param = g->p.chat ? "messages" : "prompt";
    if (g->p.chat) {
        struct sbuf text = {0};
        rc = api_render_chat(s, g->p.messages, &g->p.tools, g->p.chat_template_kwargs, &text, err);
        if (rc == 0) g->think_open = reasoning_prompt_open(text.s ? text.s : "", text.n);
        if (rc == 0)
            rc = tok_encode(s->tok, text.s ? text.s : "", text.n, TOK_ENC_SPECIAL, &out, err);
        sbuf_fini(&text);
    } else {
        const json_t *pr = g->p.prompt;
        const json_t *one = json_is_array(pr) && !json_is_integer(json_array_get(pr, 0))
                                ? json_array_get(pr, (size_t)i)
                                : pr;
        if (json_is_string(one)) {
            rc = tok_encode(s->tok, json_string_value(one), json_string_length(one),
                            TOK_ENC_SPECIAL | TOK_ENC_BOS, &out, err);
            if (rc == 0 && g->p.echo) {
                g->echo[i] = strdup(json_string_value(one));
                if (!g->echo[i]) rc = err_set(err, ERR_NOMEM, "out of memory");
            }
        } else {
            for (size_t k = 0; rc == 0 && k < json_array_size(one); k++) {
                json_int_t id = json_integer_value(json_array_get(one, k));
                if (id < 0 || id >= s->info.vocab_size)
                    rc = err_set(err, ERR_INVAL,
                                 "'prompt' token id %lld is outside the "
                                 "vocabulary (0..%d)",
                                 (long long)id, s->info.vocab_size - 1);
                else rc = tok_ids_push(&out, (int32_t)id);
            }
            if (rc == 0 && g->p.echo) {
                struct sbuf t = {0};
                rc = tok_decode(s->tok, out.v, out.n, 0, &t, err);
                g->echo[i] = rc == 0 ? strndup(t.s ? t.s : "", t.n) : NULL;
                if (rc == 0 && !g->echo[i]) rc = err_set(err, ERR_NOMEM, "out of memory");
                sbuf_fini(&t);
            }
        }
    }
    if (rc == 0 && out.n == 0) rc = err_set(err, ERR_INVAL, "the prompt is empty");
    if (rc) {
        tok_ids_fini(&out);
        return rc;
    }
    *ids = out.v;
    *n = (int)out.n;
    return 0;
}

/* A prompt of n tokens and the completion asked for must fit the context: ERR_CTX_OVERFLOW
 * otherwise, with OpenAI's message. */
static int check_context(const struct gen *g, int n, const char **param, char *err)
{
    int ctx = g->srv->info.context, max_tokens = g->p.max_tokens;
    if (n + 1 <= ctx && (!max_tokens || n + max_tokens <= ctx)) return 0;
    *param = max_tokens && n + 1 <= ctx ? "max_tokens" : (g->p.chat ? "messages" : "prompt");
    if (max_tokens)
        return err_set(err, ERR_CTX_OVERFLOW,
                       "This model's maximum context length is %d tokens. "
                       "However, you requested %d tokens (%d in the prompt, %d for the "
                       "completion). Please reduce the prompt or max_tokens.",
                       ctx, n + max_tokens, n, max_tokens);
    return err_set(err, ERR_CTX_OVERFLOW,
                   "This model's maximum context length is %d tokens. "
                   "However, the prompt has %d tokens (at least %d are needed with one "
                   "generated token).",
                   ctx, n, n + 1);
}

/* The k-th choice of prompt pi: its detokenizer (with the stop strings) and, for chat, its pipe
 * (R1 reasoning split, tool-call parsing). */
static int choice_init(struct gen *g, int pi, int k, const char **param, char *err)
{
    struct srv *s = g->srv;
    int ci = pi * g->p.n + k;
    struct choice *c = &g->ch[ci];
    c->g = g;
    c->index = ci;
    c->prompt = pi;
    /* chat: special tokens are dropped by gen_text.c, except those the pipe parses */
    int rc = detok_create(&c->dt, s->tok, (const char *const *)g->p.stop, (size_t)g->p.n_stop,
                          g->p.chat ? 0 : DETOK_SKIP_SPECIAL, err);
    if (rc) {
        *param = "stop";
        return rc;
    }
    if (!g->p.chat) return 0;
    /* reasoning split for the R1 templates (-1: none), tool parsing when tools */
    int rflags = -1;
    if (s->tmpl == TMPL_DEEPSEEK_R1 || s->tmpl == TMPL_DEEPSEEK_R1_0528 ||
        (s->tmpl == TMPL_JINJA && s->tmpl_modes.think))
        rflags = (int)((g->think_open ? REASONING_START_THINKING : 0) |
                       (g->p.reasoning_inline ? REASONING_INLINE : 0));
    /* an interpreted template without DeepSeek's tool-call markers: the output is plain text */
    int parse_tools = s->tmpl != TMPL_JINJA || s->tmpl_modes.deepseek_tools;
    rc = toolparse_pipe_init(&c->pipe, rflags, parse_tools ? &g->p.tools : NULL, g->p.samp.seed + k,
                             err);
    if (rc) return rc;
    c->pipe_on = 1;
    return 0;
}

/* The engine request of choice c (the k-th sample of its prompt ids[0..n)). 0 or ERR_NOMEM. */
static int build_request(struct gen *g, struct choice *c, const int32_t *ids, int n, int max_tokens,
                         int k, struct eng_request **out, char *err)
{
    struct eng_request *r = calloc(1, sizeof *r);
    if (!r) return ERR_NOMEM;
    *out = r;
    snprintf(r->request_id, sizeof r->request_id, "%s", g->request_id);
    r->n_prompt = n;
    r->prompt = malloc((size_t)n * sizeof(int32_t));
    if (!r->prompt) return ERR_NOMEM;
    memcpy(r->prompt, ids, (size_t)n * sizeof(int32_t));
    r->samp = g->p.samp;
    r->samp.seed = g->p.samp.seed + (uint64_t)k;
    r->samp.logit_bias_ids = NULL;
    r->samp.logit_bias_vals = NULL;
    size_t nb = (size_t)g->p.samp.n_logit_bias;
    if (nb) {
        r->samp.logit_bias_ids = malloc(nb * sizeof(int32_t));
        r->samp.logit_bias_vals = malloc(nb * sizeof(float));
        if (!r->samp.logit_bias_ids || !r->samp.logit_bias_vals) return ERR_NOMEM;
        memcpy(r->samp.logit_bias_ids, g->p.samp.logit_bias_ids, nb * sizeof(int32_t));
        memcpy(r->samp.logit_bias_vals, g->p.samp.logit_bias_vals, nb * sizeof(float));
    }
    r->max_tokens = max_tokens;
    r->min_tokens = g->p.min_tokens < max_tokens ? g->p.min_tokens : max_tokens;
    r->ignore_eos = g->p.ignore_eos;
    r->priority = g->p.priority;
    r->on_event = gen_on_event;
    r->ud = c;
    if (g->p.grammar) { /* structured output / forced tool call: one automaton per choice */
        struct constrain *con = NULL;
        int rc = constrain_create(g->srv->cvocab, g->p.grammar, &con, err);
        if (rc) return rc;
        r->constraint = (struct eng_constraint){con, constrain_hook_mask, constrain_hook_accept,
                                                constrain_hook_destroy};
    }
    return 0;
}

/* The grammar's whitespace limit for a structured.whitespace value (docs/structured-output.md). */
static uint16_t grammar_ws(const char *mode)
{
    if (strcmp(mode, "free") == 0) return JSONSCHEMA_WS_FREE;
    return strcmp(mode, "bounded") == 0 ? CONSTRAIN_MAX_WS : 0;
}

int gen_build_requests(struct gen *g, struct eng_request ***out, const char **param, char *err)
{
    struct srv *s = g->srv;
    *out = NULL;
    struct eng_request **reqs = calloc((size_t)g->n_choices, sizeof *reqs);
    if (!reqs) return nomem(param, err);
    int ctx = s->info.context, rc = 0;
    for (int pi = 0; pi < g->n_prompts && rc == 0; pi++) {
        int32_t *ids = NULL;
        int n = 0;
        rc = prompt_tokens(g, pi, &ids, &n, param, err);
        if (rc) break;
        g->prompt_len[pi] = n;
        rc = check_context(g, n, param, err);
        if (rc == 0 && pi == 0 && g->p.grammar) /* structured.whitespace */
            jsonschema_set_whitespace(g->p.grammar, grammar_ws(s->cfg->structured_whitespace));
        /* an R1 prompt that opened <think>: the constrained answer closes it first */
        if (rc == 0 && g->p.chat && pi == 0 && g->think_open && g->p.grammar &&
            jsonschema_add_prefix(g->p.grammar, "</think>\n\n") != 0)
            rc = ERR_NOMEM;
        int max_tokens = g->p.max_tokens;
        if (!max_tokens) {
            max_tokens = (int)s->cfg->engine_max_tokens_default;
            if (max_tokens > ctx - n) max_tokens = ctx - n;
        }
        for (int k = 0; k < g->p.n && rc == 0; k++) {
            int ci = pi * g->p.n + k;
            rc = choice_init(g, pi, k, param, err);
            if (rc == 0) rc = build_request(g, &g->ch[ci], ids, n, max_tokens, k, &reqs[ci], err);
        }
        free(ids);
    }
    if (rc) {
        for (int i = 0; i < g->n_choices; i++) gen_request_free(reqs[i]);
        free(reqs);
        if (rc == ERR_NOMEM) {
            if (!err[0]) snprintf(err, ERR_LEN, "out of memory");
            *param = NULL;
        }
        return rc;
    }
    *out = reqs;
    return 0;
}

/* ---- freeing */

void gen_request_free(struct eng_request *r)
{
    if (!r) return;
    free(r->prompt);
    free(r->samp.logit_bias_ids);
    free(r->samp.logit_bias_vals);
    if (r->constraint.destroy) r->constraint.destroy(r->constraint.ud); /* not submitted */
    free(r);
}

void gen_free(struct gen *g)
{
    if (!g) return;
    for (int i = 0; g->ch && i < g->n_choices; i++) {
        detok_destroy(g->ch[i].dt);
        sbuf_fini(&g->ch[i].text);
        if (g->ch[i].pipe_on) toolparse_pipe_fini(&g->ch[i].pipe);
        json_decref(g->ch[i].lp);
    }
    for (int i = 0; g->echo && i < g->n_prompts; i++) free(g->echo[i]);
    free(g->echo);
    free(g->ch);
    free(g->prompt_len);
    gen_queue_fini(&g->q);
    sbuf_fini(&g->sse);
    api_params_fini(&g->p);
    resp_free(g->resp); /* after the params, which borrow its chat body */
    json_decref(g->root);
    pthread_mutex_destroy(&g->mu);
    free(g);
}
