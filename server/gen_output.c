/* gen_output.c - what the client of a generation request receives: SSE chunks or one JSON body.
 *
 * What: the OpenAI shapes (docs/api.md). Streaming: gen_sse_start writes each choice's first
 * chunk (chat: the assistant role; completions: the echoed prompt), gen_sse_pending one chunk
 * per piece of text, logprobs or tool-call delta each choice has ready and the chunk with its
 * finish reason, gen_sse_end the error or usage chunk and "data: [DONE]". Chunks are appended
 * to g->sse, which the MHD reader (api_gen.c) drains. Non-streaming: gen_reply_full sends the
 * whole completion (or the request's error) once every choice has finished. Also here: the
 * logprobs entries (chat: {token, logprob, bytes, top_logprobs}; completions: parallel arrays
 * with text_offset), collected as tokens arrive, and usage.
 * Text that is not valid UTF-8 (a token sequence ending inside a character) is sent with
 * U+FFFD in place of each bad byte.
 * Threads: the request's HTTP thread only. Errors: an allocation failure while framing sets
 * g->err_code (ERR_NOMEM), which ends the stream with an error chunk.
 */
#include "gen.h"

#include "common/utf8.h"
#include "metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* s[0..n) as a JSON string: invalid UTF-8 bytes become U+FFFD. */
static json_t *json_lossy(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    if (j) return j;
    struct sbuf fixed = {0};
    if (utf8_append_lossy(&fixed, s, n) == 0) j = json_stringn(fixed.s ? fixed.s : "", fixed.n);
    sbuf_fini(&fixed);
    return j;
}

static json_t *json_lp(float v) { return json_real(isfinite(v) ? v : -9999.0); }

static json_t *token_bytes(const char *piece, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_integer((unsigned char)piece[i]));
    return a;
}

/* chat logprobs entry: {"token","logprob","bytes"} */
static json_t *chat_lp_entry(const struct tok *t, int32_t id, float lp)
{
    size_t n = 0;
    const char *piece = tok_piece(t, id, &n);
    if (!piece) piece = "", n = 0;
    return json_pack("{s:o, s:o, s:o}", "token", json_lossy(piece, n), "logprob", json_lp(lp),
                     "bytes", token_bytes(piece, n));
}

void gen_logprobs_add(struct gen *g, struct choice *c, const struct eng_event *ev)
{
    const struct tok *t = g->srv->tok;
    if (!c->lp) {
        c->lp = g->p.chat ? json_array()
                          : json_pack("{s:[], s:[], s:[], s:[]}", "tokens", "token_logprobs",
                                      "top_logprobs", "text_offset");
        if (!c->lp) return;
    }
    size_t n = 0;
    const char *piece = tok_piece(t, ev->token, &n);
    if (!piece) piece = "", n = 0;
    if (g->p.chat) {
        json_t *e = chat_lp_entry(t, ev->token, ev->logprob);
        json_t *tops = json_array();
        for (int i = 0; i < ev->n_top && i < g->p.top_logprobs; i++)
            json_array_append_new(tops, chat_lp_entry(t, ev->top_ids[i], ev->top_logprobs[i]));
        json_object_set_new(e, "top_logprobs", tops);
        json_array_append_new(c->lp, e);
    } else {
        json_array_append_new(json_object_get(c->lp, "tokens"), json_lossy(piece, n));
        json_array_append_new(json_object_get(c->lp, "token_logprobs"), json_lp(ev->logprob));
        json_t *tops = json_object();
        for (int i = 0; i < ev->n_top && i < g->p.top_logprobs; i++) {
            size_t tn = 0;
            const char *tp = tok_piece(t, ev->top_ids[i], &tn);
            json_t *key = json_lossy(tp ? tp : "", tp ? tn : 0);
            if (key)
                json_object_set_new(tops, json_string_value(key), json_lp(ev->top_logprobs[i]));
            json_decref(key);
        }
        json_array_append_new(json_object_get(c->lp, "top_logprobs"), tops);
        json_array_append_new(json_object_get(c->lp, "text_offset"),
                              json_integer((json_int_t)c->text_off));
        c->text_off += n;
    }
}

void gen_oom(struct gen *g)
{
    g->err_code = ERR_NOMEM;
    snprintf(g->err_msg, sizeof g->err_msg, "out of memory");
}

void gen_sse_event(struct gen *g, const char *name, json_t *obj)
{
    char *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!s ||
        (name && (sbuf_append(&g->sse, "event: ", 7) || sbuf_append(&g->sse, name, strlen(name)) ||
                  sbuf_append(&g->sse, "\n", 1))) ||
        sbuf_append(&g->sse, "data: ", 6) || sbuf_append(&g->sse, s, strlen(s)) ||
        sbuf_append(&g->sse, "\n\n", 2))
        gen_oom(g);
    free(s);
}

json_t *gen_pipe_deltas(struct gen *g, struct choice *c)
{
    json_t *deltas = json_array();
    if (!deltas || toolparse_pipe_deltas(&c->pipe, deltas) != 0) {
        json_decref(deltas);
        gen_oom(g);
        return NULL;
    }
    return deltas;
}

static json_t *usage_json(struct gen *g)
{
    long long prompt = 0, completion = 0, cached = 0;
    for (int i = 0; i < g->n_prompts; i++) prompt += g->prompt_len[i];
    for (int i = 0; i < g->n_choices; i++) {
        completion += g->ch[i].n_gen;
        if (g->ch[i].index % g->p.n == 0) cached += g->ch[i].n_cached;
    }
    return json_pack("{s:I, s:I, s:I, s:{s:I}}", "prompt_tokens", (json_int_t)prompt,
                     "completion_tokens", (json_int_t)completion, "total_tokens",
                     (json_int_t)(prompt + completion), "prompt_tokens_details", "cached_tokens",
                     (json_int_t)cached);
}

static json_t *chunk_base(struct gen *g)
{
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:s, s:[]}", "id", g->id, "object",
                          g->p.chat ? "chat.completion.chunk" : "text_completion", "created",
                          (json_int_t)g->created, "model", g->srv->model_name, "system_fingerprint",
                          g->srv->fingerprint, "choices");
    if (o && g->p.include_usage) json_object_set_new(o, "usage", json_null());
    return o;
}

/* One streaming chunk for choice c with its pending text / logprobs / finish reason. */
static void sse_choice_chunk(struct gen *g, struct choice *c, int with_finish)
{
    json_t *o = chunk_base(g);
    json_t *ch;
    json_t *lp = json_null();
    if (c->lp) {
        lp = g->p.chat ? json_pack("{s:o}", "content", c->lp) : c->lp;
        c->lp = NULL;
    }
    json_t *text = json_lossy(c->text.s ? c->text.s : "", c->text.n);
    if (g->p.chat) {
        json_t *delta = json_object();
        if (!with_finish) json_object_set_new(delta, "content", text);
        else json_decref(text);
        ch = json_pack("{s:i, s:o, s:o, s:o}", "index", c->index, "delta", delta, "logprobs", lp,
                       "finish_reason", with_finish ? json_string(c->finish) : json_null());
    } else {
        ch = json_pack("{s:i, s:o, s:o, s:o}", "index", c->index, "text", text, "logprobs", lp,
                       "finish_reason", with_finish ? json_string(c->finish) : json_null());
    }
    c->text.n = 0;
    if (c->text.s) c->text.s[0] = 0;
    if (with_finish) c->finish_sent = 1;
    json_array_append_new(json_object_get(o, "choices"), ch);
    gen_sse_event(g, NULL, o);
}

/* Chat with a pipe: one chunk per delta the pipe has ready (reasoning/content, then two per new
 * tool call, never merged), pending logprobs riding on the first; then, with_finish, the chunk
 * with the finish reason. */
static void sse_chat_chunks(struct gen *g, struct choice *c, int with_finish)
{
    json_t *deltas = gen_pipe_deltas(g, c);
    if (!deltas) return;
    if (json_array_size(deltas) == 0 && c->lp) json_array_append_new(deltas, json_object());
    size_t i;
    json_t *d;
    json_array_foreach(deltas, i, d)
    {
        json_t *o = chunk_base(g);
        json_t *lp = json_null();
        if (c->lp) {
            lp = json_pack("{s:o}", "content", c->lp);
            c->lp = NULL;
        }
        json_t *ch = json_pack("{s:i, s:O, s:o, s:n}", "index", c->index, "delta", d, "logprobs",
                               lp, "finish_reason");
        if (o && ch) json_array_append_new(json_object_get(o, "choices"), ch);
        else json_decref(ch);
        gen_sse_event(g, NULL, o);
    }
    json_decref(deltas);
    if (!with_finish) return;
    json_t *o = chunk_base(g);
    json_t *ch = json_pack("{s:i, s:{}, s:n, s:s}", "index", c->index, "delta", "logprobs",
                           "finish_reason", toolparse_pipe_finish_reason(&c->pipe, c->finish));
    if (o && ch) json_array_append_new(json_object_get(o, "choices"), ch);
    else json_decref(ch);
    gen_sse_event(g, NULL, o);
    c->finish_sent = 1;
}

void gen_sse_start(struct gen *g)
{
    if (g->anthropic) return gen_anth_sse_start(g);
    if (g->resp) {
        resp_sse_start(g);
        return;
    }
    for (int i = 0; i < g->n_choices; i++) {
        struct choice *c = &g->ch[i];
        json_t *o = chunk_base(g);
        json_t *ch;
        if (g->p.chat) {
            ch = json_pack("{s:i, s:{s:s, s:s}, s:n, s:n}", "index", c->index, "delta", "role",
                           "assistant", "content", "", "logprobs", "finish_reason");
        } else {
            const char *e = g->p.echo ? g->echo[c->prompt] : "";
            ch = json_pack("{s:i, s:s, s:n, s:n}", "index", c->index, "text", e, "logprobs",
                           "finish_reason");
            if (g->p.echo == 0) { /* nothing to say yet for legacy completions */
                json_decref(ch);
                json_decref(o);
                continue;
            }
        }
        json_array_append_new(json_object_get(o, "choices"), ch);
        gen_sse_event(g, NULL, o);
    }
}

void gen_sse_pending(struct gen *g)
{
    if (g->anthropic) return gen_anth_sse_pending(g);
    if (g->resp) {
        resp_sse_pending(g);
        return;
    }
    for (int i = 0; i < g->n_choices; i++) {
        struct choice *c = &g->ch[i];
        if (c->finish_sent) continue;
        if (c->pipe_on) {
            sse_chat_chunks(g, c, c->finished);
            continue;
        }
        if (c->text.n || c->lp) sse_choice_chunk(g, c, 0);
        if (c->finished) sse_choice_chunk(g, c, 1);
    }
}

void gen_sse_end(struct gen *g)
{
    if (g->anthropic) return gen_anth_sse_end(g);
    if (g->resp) {
        resp_sse_end(g);
        return;
    }
    if (g->err_code) {
        metrics_error(g->srv->metrics, g->err_code);
        gen_sse_event(g, NULL, http_error_body(g->err_code, g->err_msg, NULL));
    } else if (g->p.include_usage) {
        json_t *o = chunk_base(g);
        json_object_set_new(o, "usage", usage_json(g));
        gen_sse_event(g, NULL, o);
    }
    sbuf_append(&g->sse, "data: [DONE]\n\n", 14);
    g->stream_done = 1;
}

enum MHD_Result gen_reply_full(struct http_conn *hc, struct gen *g)
{
    if (g->anthropic) return gen_anth_reply_full(hc, g);
    if (g->resp) return resp_reply_full(hc, g);
    if (g->err_code) return http_reply_error(hc, g->err_code, g->err_msg, NULL);
    json_t *choices = json_array();
    for (int i = 0; i < g->n_choices; i++) {
        struct choice *c = &g->ch[i];
        json_t *lp = json_null();
        if (g->p.logprobs) {
            if (!c->lp)
                c->lp = g->p.chat ? json_array()
                                  : json_pack("{s:[], s:[], s:[], s:[]}", "tokens",
                                              "token_logprobs", "top_logprobs", "text_offset");
            lp = g->p.chat ? json_pack("{s:o}", "content", c->lp) : c->lp;
            c->lp = NULL;
        }
        json_t *o;
        if (g->p.chat && c->pipe_on) {
            json_t *msg = json_pack("{s:s}", "role", "assistant");
            if (!msg || toolparse_pipe_message(&c->pipe, msg) != 0 ||
                json_object_set_new(msg, "refusal", json_null()) != 0) {
                json_decref(msg);
                json_decref(lp);
                json_decref(choices);
                return http_reply_error(hc, ERR_NOMEM, NULL, NULL);
            }
            o = json_pack("{s:i, s:o, s:o, s:s}", "index", c->index, "message", msg, "logprobs", lp,
                          "finish_reason",
                          toolparse_pipe_finish_reason(&c->pipe, c->finish ? c->finish : "stop"));
        } else if (g->p.chat) {
            o = json_pack("{s:i, s:{s:s, s:o, s:n}, s:o, s:s}", "index", c->index, "message",
                          "role", "assistant", "content",
                          json_lossy(c->text.s ? c->text.s : "", c->text.n), "refusal", "logprobs",
                          lp, "finish_reason", c->finish ? c->finish : "stop");
        } else {
            struct sbuf t = {0};
            if (g->p.echo) sbuf_append(&t, g->echo[c->prompt], strlen(g->echo[c->prompt]));
            sbuf_append(&t, c->text.s ? c->text.s : "", c->text.n);
            o = json_pack("{s:i, s:o, s:o, s:s}", "index", c->index, "text",
                          json_lossy(t.s ? t.s : "", t.n), "logprobs", lp, "finish_reason",
                          c->finish ? c->finish : "stop");
            sbuf_fini(&t);
        }
        json_array_append_new(choices, o);
    }
    json_t *r = json_pack("{s:s, s:s, s:I, s:s, s:s, s:o, s:o}", "id", g->id, "object",
                          g->p.chat ? "chat.completion" : "text_completion", "created",
                          (json_int_t)g->created, "model", g->srv->model_name, "system_fingerprint",
                          g->srv->fingerprint, "choices", choices, "usage", usage_json(g));
    if (!r) return http_reply_error(hc, ERR_NOMEM, NULL, NULL);
    return http_reply_json(hc, 200, r);
}
