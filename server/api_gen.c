/* api_gen.c - POST /v1/chat/completions and /v1/completions: request -> engine -> response/SSE.
 *
 * What: one struct gen per HTTP request, with one struct choice per engine request (n choices
 * per prompt; several prompts for legacy completions). The HTTP thread validates (reqparse.c),
 * renders the chat template, tokenizes, submits, then either queues an SSE response whose
 * reader pulls text as it comes (streaming) or suspends the connection until every choice is
 * finished (non-streaming).
 *
 * Threads and handoff:
 *   - engine thread: on_event() appends a copy of the event to g->ev under g->mu, updates the
 *     latency histograms, and resumes the connection if the HTTP side had suspended it. It never
 *     blocks on anything but g->mu (held only for short copies on either side).
 *   - HTTP thread: drain_events() swaps g->ev out under the lock and does the real work outside
 *     it: detokenization with stop strings (detok.h), logprobs JSON, SSE framing.
 *   - main thread: api_gen_probe / api_gen_cancel_all walk the registry (srv->gens_mu, then
 *     g->mu: always in that order).
 *   eng_cancel / eng_submit are never called with g->mu held (the engine may hold its own lock
 *   while it runs our callback).
 * Chat output (docs/structured-output.md): every choice's detokenized text goes through a
 * toolparse_pipe (R1 reasoning split, tool-call parsing), which yields the message fields
 * (non-streaming) or one delta object per SSE chunk (streaming). A request with a grammar (a
 * forced tool call or response_format) gives each choice its own struct constrain, handed to
 * the engine as the request's eng_constraint.
 * Lifetime: g->refs counts the HTTP side (1, released in on_complete) plus one per submitted
 * engine request (released at its ENG_EV_DONE). Whoever drops the last reference frees the gen.
 * Invariants: MHD_resume_connection is called only when g->suspended is set, under g->mu, and
 * g->conn is cleared under g->mu in on_complete, so a resume never targets a closed connection.
 */
#include "../common/err.h"
#include "../common/log.h"
#include "../common/utf8.h"
#include "../engine/text/constrain.h"
#include "../engine/text/detok.h"
#include "../engine/text/reasoning.h"
#include "../engine/text/toolparse.h"
#include "http.h"
#include "metrics.h"
#include "reqparse.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

struct gev {
    int choice;
    struct eng_event ev;
};

struct choice {
    struct gen *g;
    int index;                  /* OpenAI choice index */
    int prompt;                 /* which prompt it continues */
    uint64_t eng_id;
    int submitted;
    int eng_done;               /* DONE received (under g->mu) */
    double t_last;              /* engine thread: time of the previous token (ITL) */
    /* HTTP-thread state */
    struct detok *dt;
    struct sbuf text;        /* non-stream: the whole text; stream: text not yet sent */
    json_t *lp;                 /* logprobs entries not yet emitted (chat: array; legacy: object) */
    size_t text_off;            /* legacy logprobs text_offset */
    int n_gen, n_cached;
    int finished;
    const char *finish;         /* "stop" / "length" */
    int finish_sent;
    int pipe_on;                /* chat: text goes through `pipe` */
    int pipe_done;              /* toolparse_pipe_finish called */
    struct toolparse_pipe pipe;
};

struct gen {
    struct srv *srv;
    struct gen *next, *prev;    /* srv->gens registry (srv->gens_mu) */
    pthread_mutex_t mu;
    /* under mu */
    int refs;
    struct MHD_Connection *conn;
    int suspended;
    int client_gone;
    struct gev *ev;
    size_t n_ev, cap_ev;
    int oom;                    /* an event could not be queued: fail the request */
    /* engine thread only */
    int first_token_seen;
    double t_submit;
    int n_done_engine;
    /* HTTP thread only */
    struct gev *work;
    size_t cap_work;
    struct api_params p;
    json_t *root;
    int n_prompts, n_choices, n_finished;
    int *prompt_len;            /* tokens per prompt */
    int think_open;             /* chat: the rendered prompt left "<think>" open (R1) */
    char **echo;                /* completions echo: prompt text per prompt */
    struct choice *ch;
    char id[64];
    char request_id[64];
    long long created;
    int stream;
    struct sbuf sse;
    size_t sse_off;
    int stream_done;
    int err_code;
    char err_msg[ERR_LEN];
};

/* ---- helpers ---- */

static void gen_free(struct gen *g)
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
    free(g->ev);
    free(g->work);
    sbuf_fini(&g->sse);
    api_params_fini(&g->p);
    json_decref(g->root);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

/* Append s[0..n) to a JSON-safe string: invalid UTF-8 bytes become U+FFFD. */
static json_t *json_lossy(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    if (j) return j;
    char *buf = malloc(n * 3 + 1);
    if (!buf) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t bad;
        if (utf8_check(s + i, n - i, &bad) == 0) {
            memcpy(buf + o, s + i, n - i);
            o += n - i;
            break;
        }
        memcpy(buf + o, s + i, bad);
        o += bad;
        memcpy(buf + o, "\xEF\xBF\xBD", 3);
        o += 3;
        i += bad + 1;
    }
    j = json_stringn(buf, o);
    free(buf);
    return j;
}

static json_t *json_lp(float v)
{
    return json_real(isfinite(v) ? v : -9999.0);
}

static json_t *token_bytes(const char *piece, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) json_array_append_new(a, json_integer((unsigned char)piece[i]));
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

static void add_logprobs(struct gen *g, struct choice *c, const struct eng_event *ev)
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
            if (key) json_object_set_new(tops, json_string_value(key), json_lp(ev->top_logprobs[i]));
            json_decref(key);
        }
        json_array_append_new(json_object_get(c->lp, "top_logprobs"), tops);
        json_array_append_new(json_object_get(c->lp, "text_offset"),
                              json_integer((json_int_t)c->text_off));
        c->text_off += n;
    }
}

/* ---- engine side ---- */

static void on_event(void *ud, const struct eng_event *ev)
{
    struct choice *c = ud;
    struct gen *g = c->g;
    struct metrics *m = g->srv->metrics;
    double now = http_now();
    if (ev->kind == ENG_EV_TOKEN) {
        if (!g->first_token_seen) {
            g->first_token_seen = 1;
            metrics_observe(m, MET_TTFT, now - g->t_submit);
            metrics_observe(m, MET_QUEUE, now - g->t_submit);
        } else if (c->t_last > 0) {
            metrics_observe(m, MET_ITL, now - c->t_last);
        }
        c->t_last = now;
    } else {
        metrics_observe(m, MET_PROMPT_TOKENS, ev->n_prompt);
        metrics_observe(m, MET_GEN_TOKENS, ev->n_generated);
        metrics_finished(m, ev->finish == ENG_FINISH_STOP ? MET_FIN_STOP
                            : ev->finish == ENG_FINISH_LENGTH ? MET_FIN_LENGTH
                            : ev->finish == ENG_FINISH_CANCELLED ? MET_FIN_ABORT : MET_FIN_ERROR);
        if (++g->n_done_engine == g->n_choices) metrics_observe(m, MET_E2E, now - g->t_submit);
    }

    pthread_mutex_lock(&g->mu);
    if (g->n_ev == g->cap_ev) {
        size_t cap = g->cap_ev ? g->cap_ev * 2 : 16;
        struct gev *e = realloc(g->ev, cap * sizeof *e);
        if (e) {
            g->ev = e;
            g->cap_ev = cap;
        }
    }
    if (g->n_ev < g->cap_ev) {
        g->ev[g->n_ev].choice = c->index;
        g->ev[g->n_ev].ev = *ev;
        g->n_ev++;
    } else {
        g->oom = 1;          /* never silently drop a token: the request fails instead */
    }
    if (ev->kind == ENG_EV_DONE) {
        c->eng_done = 1;
        g->refs--;
    }
    if (g->suspended && g->conn) {
        g->suspended = 0;
        MHD_resume_connection(g->conn);
    }
    int last = g->refs == 0;
    pthread_mutex_unlock(&g->mu);
    if (last) gen_free(g);
}

/* ---- HTTP side: turning events into text ---- */

static const char *finish_name(enum eng_finish f)
{
    /* CANCELLED only reaches a client still connected when the drain deadline cut it short */
    return f == ENG_FINISH_STOP ? "stop" : "length";
}

static void choice_finish(struct gen *g, struct choice *c, const char *reason)
{
    if (c->finished) return;
    c->finished = 1;
    c->finish = reason;
    g->n_finished++;
}

static void sse_event(struct gen *g, json_t *obj)
{
    char *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!s) {
        g->err_code = ERR_NOMEM;
        return;
    }
    if (sbuf_append(&g->sse, "data: ", 6) || sbuf_append(&g->sse, s, strlen(s)) ||
        sbuf_append(&g->sse, "\n\n", 2))
        g->err_code = ERR_NOMEM;
    free(s);
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
                          (json_int_t)g->created, "model", g->srv->model_name,
                          "system_fingerprint", g->srv->fingerprint, "choices");
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
    sse_event(g, o);
}

/* Chat with a pipe: one chunk per delta the pipe has ready (reasoning/content, then two per new
 * tool call, never merged), pending logprobs riding on the first; then, with_finish, the chunk
 * with the finish reason. */
static void sse_chat_chunks(struct gen *g, struct choice *c, int with_finish)
{
    json_t *deltas = json_array();
    if (!deltas || toolparse_pipe_deltas(&c->pipe, deltas) != 0) {
        json_decref(deltas);
        g->err_code = ERR_NOMEM;
        snprintf(g->err_msg, sizeof g->err_msg, "out of memory");
        return;
    }
    if (json_array_size(deltas) == 0 && c->lp) json_array_append_new(deltas, json_object());
    size_t i;
    json_t *d;
    json_array_foreach(deltas, i, d) {
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
        sse_event(g, o);
    }
    json_decref(deltas);
    if (!with_finish) return;
    json_t *o = chunk_base(g);
    json_t *ch = json_pack("{s:i, s:{}, s:n, s:s}", "index", c->index, "delta", "logprobs",
                           "finish_reason", toolparse_pipe_finish_reason(&c->pipe, c->finish));
    if (o && ch) json_array_append_new(json_object_get(o, "choices"), ch);
    else json_decref(ch);
    sse_event(g, o);
    c->finish_sent = 1;
}

static void sse_start(struct gen *g)
{
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
            if (g->p.echo == 0) {       /* nothing to say yet for legacy completions */
                json_decref(ch);
                json_decref(o);
                continue;
            }
        }
        json_array_append_new(json_object_get(o, "choices"), ch);
        sse_event(g, o);
    }
}

static void sse_end(struct gen *g)
{
    if (g->err_code) {
        metrics_error(g->srv->metrics, g->err_code);
        sse_event(g, http_error_body(g->err_code, g->err_msg, NULL));
    } else if (g->p.include_usage) {
        json_t *o = chunk_base(g);
        json_object_set_new(o, "usage", usage_json(g));
        sse_event(g, o);
    }
    sbuf_append(&g->sse, "data: [DONE]\n\n", 14);
    g->stream_done = 1;
}

/* Move queued events to the HTTP side and process them. Returns with cancels issued. */
static void drain_events(struct gen *g)
{
    uint64_t cancel[API_MAX_N * API_MAX_PROMPTS];
    int n_cancel = 0;
    char err[ERR_LEN];

    pthread_mutex_lock(&g->mu);
    struct gev *tmp = g->work;
    size_t tmp_cap = g->cap_work;
    struct gev *evs = g->ev;
    size_t n = g->n_ev;
    g->work = evs;
    g->cap_work = g->cap_ev;
    g->ev = tmp;
    g->cap_ev = tmp_cap;
    g->n_ev = 0;
    if (g->oom && !g->err_code) {
        g->err_code = ERR_NOMEM;
        snprintf(g->err_msg, sizeof g->err_msg, "out of memory while queueing tokens");
    }
    pthread_mutex_unlock(&g->mu);

    for (size_t i = 0; i < n; i++) {
        const struct eng_event *ev = &evs[i].ev;
        struct choice *c = &g->ch[evs[i].choice];
        if (c->n_cached < ev->n_cached) c->n_cached = ev->n_cached;
        if (c->finished) continue;
        if (ev->kind == ENG_EV_TOKEN) {
            c->n_gen++;
            if (ev->finish == ENG_FINISH_STOP) continue;   /* EOS / stop id: not part of the text */
            if (g->p.logprobs) add_logprobs(g, c, ev);
            int rc = detok_feed(c->dt, ev->token, &c->text, err);
            if (rc == DETOK_STOPPED) {
                choice_finish(g, c, "stop");
                cancel[n_cancel++] = c->eng_id;
            } else if (rc < 0) {
                g->err_code = rc;
                snprintf(g->err_msg, sizeof g->err_msg, "%s", err);
                choice_finish(g, c, "stop");
                cancel[n_cancel++] = c->eng_id;
            }
        } else {
            if (ev->finish == ENG_FINISH_ERROR) {
                g->err_code = ev->err ? ev->err : ERR_INTERNAL;
                snprintf(g->err_msg, sizeof g->err_msg, "generation failed: %s",
                         err_message(g->err_code));
            }
            /* the U+FFFD that replaces an unfinished last character can complete a stop
             * string: then the choice ends with "stop" */
            int frc = detok_finish(c->dt, &c->text);
            if (frc < 0) g->err_code = ERR_NOMEM;
            choice_finish(g, c, frc == DETOK_STOPPED ? "stop" : finish_name(ev->finish));
        }
    }
    /* chat: the new text goes through the choice's pipe (reasoning split, tool calls) */
    for (int i = 0; i < g->n_choices; i++) {
        struct choice *c = &g->ch[i];
        if (!c->pipe_on || c->pipe_done) continue;
        int rc = c->text.n ? toolparse_pipe_feed(&c->pipe, c->text.s, c->text.n) : 0;
        c->text.n = 0;
        if (rc == 0 && c->finished) {
            c->pipe_done = 1;
            rc = toolparse_pipe_finish(&c->pipe);
        }
        if (rc != 0 && !g->err_code) {
            g->err_code = ERR_NOMEM;
            snprintf(g->err_msg, sizeof g->err_msg, "out of memory");
        }
    }
    for (int i = 0; g->stream && i < g->n_choices; i++) {
        struct choice *c = &g->ch[i];
        if (c->finish_sent) continue;
        if (c->pipe_on) {
            sse_chat_chunks(g, c, c->finished);
            continue;
        }
        if (c->text.n || c->lp) sse_choice_chunk(g, c, 0);
        if (c->finished) sse_choice_chunk(g, c, 1);
    }
    for (int i = 0; i < n_cancel; i++) eng_cancel(g->srv->eng, cancel[i]);
    if (g->stream && !g->stream_done && (g->n_finished == g->n_choices || g->err_code)) {
        /* an error ends every choice */
        sse_end(g);
    }
}

/* Under g->mu: nothing queued and not finished -> suspend. Returns 1 if suspended. */
static int suspend_if_idle(struct gen *g, struct MHD_Connection *conn)
{
    int done = 0;
    pthread_mutex_lock(&g->mu);
    if (g->n_ev == 0 && !g->client_gone && !g->oom) {
        g->suspended = 1;
        MHD_suspend_connection(conn);
        done = 1;
    }
    pthread_mutex_unlock(&g->mu);
    return done;
}

static int is_client_gone(struct gen *g)
{
    pthread_mutex_lock(&g->mu);
    int gone = g->client_gone;
    pthread_mutex_unlock(&g->mu);
    return gone;
}

static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct gen *g = cls;
    for (;;) {
        if (g->sse.n > g->sse_off) {
            size_t k = g->sse.n - g->sse_off;
            if (k > max) k = max;
            memcpy(buf, g->sse.s + g->sse_off, k);
            g->sse_off += k;
            if (g->sse_off == g->sse.n) g->sse_off = g->sse.n = 0;
            return (ssize_t)k;
        }
        if (g->stream_done) return MHD_CONTENT_READER_END_OF_STREAM;
        if (is_client_gone(g)) return MHD_CONTENT_READER_END_WITH_ERROR;
        drain_events(g);
        if (g->sse.n > g->sse_off || g->stream_done) continue;
        /* the reader runs on the connection's thread: find it through the registry entry */
        if (suspend_if_idle(g, g->conn)) return 0;
    }
}

static enum MHD_Result reply_full(struct http_conn *hc, struct gen *g)
{
    if (g->err_code) return http_reply_error(hc, g->err_code, g->err_msg, NULL);
    json_t *choices = json_array();
    for (int i = 0; i < g->n_choices; i++) {
        struct choice *c = &g->ch[i];
        json_t *lp = json_null();
        if (g->p.logprobs) {
            if (!c->lp) c->lp = g->p.chat ? json_array()
                                          : json_pack("{s:[], s:[], s:[], s:[]}", "tokens",
                                                      "token_logprobs", "top_logprobs",
                                                      "text_offset");
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
            o = json_pack("{s:i, s:o, s:o, s:s}", "index", c->index, "message", msg, "logprobs",
                          lp, "finish_reason",
                          toolparse_pipe_finish_reason(&c->pipe, c->finish ? c->finish : "stop"));
        } else if (g->p.chat) {
            o = json_pack("{s:i, s:{s:s, s:o, s:n}, s:o, s:s}", "index", c->index, "message",
                          "role", "assistant", "content",
                          json_lossy(c->text.s ? c->text.s : "", c->text.n), "refusal",
                          "logprobs", lp, "finish_reason", c->finish ? c->finish : "stop");
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
                          (json_int_t)g->created, "model", g->srv->model_name,
                          "system_fingerprint", g->srv->fingerprint, "choices", choices, "usage",
                          usage_json(g));
    if (!r) return http_reply_error(hc, ERR_NOMEM, NULL, NULL);
    return http_reply_json(hc, 200, r);
}

static enum MHD_Result nonstream_step(struct http_conn *hc)
{
    struct gen *g = hc->ud;
    for (;;) {
        if (is_client_gone(g)) return MHD_NO;
        drain_events(g);
        if (g->n_finished == g->n_choices || g->err_code) {
            hc->on_resume = NULL;
            return reply_full(hc, g);
        }
        if (suspend_if_idle(g, hc->conn)) return MHD_YES;
    }
}

static void on_complete(struct http_conn *hc, enum MHD_RequestTerminationCode toe)
{
    (void)toe;
    struct gen *g = hc->ud;
    struct srv *s = g->srv;
    uint64_t cancel[API_MAX_N * API_MAX_PROMPTS];
    int n_cancel = 0;

    pthread_mutex_lock(&s->gens_mu);
    if (g->prev) g->prev->next = g->next;
    else if (s->gens == g) s->gens = g->next;
    if (g->next) g->next->prev = g->prev;
    g->next = g->prev = NULL;
    s->n_gens--;
    pthread_mutex_unlock(&s->gens_mu);

    pthread_mutex_lock(&g->mu);
    g->conn = NULL;
    g->suspended = 0;
    for (int i = 0; i < g->n_choices; i++)
        if (g->ch[i].submitted && !g->ch[i].eng_done) cancel[n_cancel++] = g->ch[i].eng_id;
    int last = --g->refs == 0;
    pthread_mutex_unlock(&g->mu);
    /* a client that went away (or a finished response) cancels whatever is still running */
    for (int i = 0; i < n_cancel; i++) eng_cancel(s->eng, cancel[i]);
    if (n_cancel && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        LOG_INFO("gen", "%s: client went away, cancelled %d request(s)", g->request_id, n_cancel);
    if (last) gen_free(g);
}

/* ---- the registry, for the main loop ---- */

int api_gen_count(struct srv *s)
{
    pthread_mutex_lock(&s->gens_mu);
    int n = s->n_gens;
    pthread_mutex_unlock(&s->gens_mu);
    return n;
}

static void cancel_where(struct srv *s, int only_gone_clients)
{
    pthread_mutex_lock(&s->gens_mu);
    for (struct gen *g = s->gens; g; g = g->next) {
        uint64_t ids[API_MAX_N * API_MAX_PROMPTS];
        int n = 0;
        pthread_mutex_lock(&g->mu);
        int cancel = !only_gone_clients;
        if (only_gone_clients && g->suspended && g->conn && !g->client_gone) {
            const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(g->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
            char b;
            ssize_t r = ci ? recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) : 1;
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                cancel = 1;
                g->client_gone = 1;
                g->suspended = 0;
                MHD_resume_connection(g->conn);   /* lets MHD close it and run on_complete */
            }
        }
        if (cancel)
            for (int i = 0; i < g->n_choices; i++)
                if (g->ch[i].submitted && !g->ch[i].eng_done) ids[n++] = g->ch[i].eng_id;
        pthread_mutex_unlock(&g->mu);
        for (int i = 0; i < n; i++) eng_cancel(s->eng, ids[i]);
        if (n && only_gone_clients)
            LOG_INFO("gen", "%s: client disconnected, cancelled %d request(s)", g->request_id, n);
    }
    pthread_mutex_unlock(&s->gens_mu);
}

void api_gen_cancel_all(struct srv *s) { cancel_where(s, 0); }
void api_gen_probe(struct srv *s) { cancel_where(s, 1); }

/* ---- building the requests ---- */

int api_render_chat(struct srv *s, const json_t *messages, const struct toolparse_req *tools,
                    struct sbuf *out, char *err)
{
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
        if (i == 0 && tools_text.n) {   /* a system message first: the tool list joins it */
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
            texts[0] = joined.s;        /* NUL-terminated by sbuf_append */
            msgs[0].content = texts[0];
        }
        size_t n_calls = 0;
        if ((rc = toolparse_history_calls(m, &calls[i], &n_calls, err)) != 0) goto out;
        msgs[i].tool_calls = calls[i];      /* NULL when absent; non-NULL for [] too */
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
        rc = api_render_chat(s, g->p.messages, &g->p.tools, &text, err);
        if (rc == 0) g->think_open = reasoning_prompt_open(text.s ? text.s : "", text.n);
        if (rc == 0) rc = tok_encode(s->tok, text.s ? text.s : "", text.n, TOK_ENC_SPECIAL, &out, err);
        sbuf_fini(&text);
    } else {
        const json_t *pr = g->p.prompt;
        const json_t *one = json_is_array(pr) && !json_is_integer(json_array_get(pr, 0))
                                ? json_array_get(pr, (size_t)i) : pr;
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
                    rc = err_set(err, ERR_INVAL, "'prompt' token id %lld is outside the "
                                 "vocabulary (0..%d)", (long long)id, s->info.vocab_size - 1);
                else
                    rc = tok_ids_push(&out, (int32_t)id);
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

static int count_prompts(const struct api_params *p)
{
    if (p->chat || json_is_string(p->prompt)) return 1;
    if (json_is_integer(json_array_get(p->prompt, 0))) return 1;
    return (int)json_array_size(p->prompt);
}

static enum MHD_Result fail(struct http_conn *hc, struct gen *g, int code, const char *err,
                            const char *param)
{
    enum MHD_Result r = http_reply_error(hc, code, err, param);
    gen_free(g);
    return r;
}

static void free_request(struct eng_request *r)
{
    if (!r) return;
    free(r->prompt);
    free(r->samp.logit_bias_ids);
    free(r->samp.logit_bias_vals);
    if (r->constraint.destroy) r->constraint.destroy(r->constraint.ud);  /* not submitted */
    free(r);
}

/* The engine request of choice c (the k-th sample of its prompt ids[0..n)). 0 or ERR_NOMEM. */
static int build_request(struct gen *g, struct choice *c, const char *request_id,
                         const int32_t *ids, int n, int max_tokens, int k,
                         struct eng_request **out, char *err)
{
    struct eng_request *r = calloc(1, sizeof *r);
    if (!r) return ERR_NOMEM;
    *out = r;
    snprintf(r->request_id, sizeof r->request_id, "%s", request_id);
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
    r->on_event = on_event;
    r->ud = c;
    if (g->p.grammar) {     /* structured output / forced tool call: one automaton per choice */
        struct constrain *con = NULL;
        int rc = constrain_create(g->srv->cvocab, g->p.grammar, &con, err);
        if (rc) return rc;
        r->constraint = (struct eng_constraint){con, constrain_hook_mask, constrain_hook_accept,
                                                constrain_hook_destroy};
    }
    return 0;
}

static enum MHD_Result generate(struct http_conn *hc, int chat)
{
    struct srv *s = hc->srv;
    char err[ERR_LEN] = "";
    const char *param = NULL;
    size_t bad_at = 0;

    if (utf8_check(hc->body, hc->body_len, &bad_at) != 0) {
        snprintf(err, sizeof err, "the request body is not valid UTF-8 (byte %zu)", bad_at);
        return http_reply_error(hc, ERR_UTF8, err, NULL);
    }
    json_error_t je;
    json_t *root = json_loadb(hc->body, hc->body_len, 0, &je);
    if (!root) {
        snprintf(err, sizeof err, "malformed JSON at line %d column %d: %s", je.line, je.column,
                 je.text);
        return http_reply_error(hc, ERR_JSON, err, NULL);
    }
    struct gen *g = calloc(1, sizeof *g);
    if (!g) {
        json_decref(root);
        return http_reply_error(hc, ERR_NOMEM, NULL, NULL);
    }
    pthread_mutex_init(&g->mu, NULL);
    g->srv = s;
    g->root = root;
    snprintf(g->request_id, sizeof g->request_id, "%s", hc->request_id);
    int rc = api_params_parse(root, chat, &g->p, &param, err);
    if (rc) return fail(hc, g, rc, err, param);

    uint64_t idn = atomic_fetch_add(&s->next_id, 1);
    snprintf(g->id, sizeof g->id, "%s-%s%016llx", chat ? "chatcmpl" : "cmpl", s->fingerprint + 3,
             (unsigned long long)idn);
    g->created = (long long)time(NULL);
    g->stream = g->p.stream;
    g->n_prompts = count_prompts(&g->p);
    g->n_choices = g->n_prompts * g->p.n;
    if (g->n_choices > API_MAX_N * API_MAX_PROMPTS)
        return fail(hc, g, ERR_INVAL, "too many choices (prompts x n)", "n");
    g->ch = calloc((size_t)g->n_choices, sizeof *g->ch);
    g->prompt_len = calloc((size_t)g->n_prompts, sizeof *g->prompt_len);
    g->echo = calloc((size_t)g->n_prompts, sizeof *g->echo);
    if (!g->ch || !g->prompt_len || !g->echo) return fail(hc, g, ERR_NOMEM, NULL, NULL);
    for (int i = 0; i < g->p.samp.n_logit_bias; i++)
        if (g->p.samp.logit_bias_ids[i] >= s->info.vocab_size) {
            snprintf(err, sizeof err, "'logit_bias' token id %d is outside the vocabulary "
                     "(0..%d)", g->p.samp.logit_bias_ids[i], s->info.vocab_size - 1);
            return fail(hc, g, ERR_INVAL, err, "logit_bias");
        }
    if (!g->p.seed_set && getrandom(&g->p.samp.seed, sizeof g->p.samp.seed, 0) !=
                              (ssize_t)sizeof g->p.samp.seed)
        g->p.samp.seed = (uint64_t)time(NULL) ^ idn;

    /* tokenize every prompt and build the engine requests before submitting any */
    struct eng_request **reqs = calloc((size_t)g->n_choices, sizeof *reqs);
    if (!reqs) return fail(hc, g, ERR_NOMEM, NULL, NULL);
    int ctx = s->info.context;
    for (int pi = 0; pi < g->n_prompts && rc == 0; pi++) {
        int32_t *ids = NULL;
        int n = 0;
        rc = prompt_tokens(g, pi, &ids, &n, &param, err);
        if (rc) break;
        g->prompt_len[pi] = n;
        int max_tokens = g->p.max_tokens;
        if (n + 1 > ctx || (max_tokens && n + max_tokens > ctx)) {
            param = max_tokens && n + 1 <= ctx ? "max_tokens" : (chat ? "messages" : "prompt");
            if (max_tokens)
                snprintf(err, sizeof err, "This model's maximum context length is %d tokens. "
                         "However, you requested %d tokens (%d in the prompt, %d for the "
                         "completion). Please reduce the prompt or max_tokens.", ctx,
                         n + max_tokens, n, max_tokens);
            else
                snprintf(err, sizeof err, "This model's maximum context length is %d tokens. "
                         "However, the prompt has %d tokens (at least %d are needed with one "
                         "generated token).", ctx, n, n + 1);
            free(ids);
            rc = ERR_CTX_OVERFLOW;
            break;
        }
        /* an R1 prompt that opened <think>: the constrained answer closes it first */
        if (chat && pi == 0 && g->think_open && g->p.grammar &&
            jsonschema_add_prefix(g->p.grammar, "</think>\n\n") != 0) {
            free(ids);
            rc = ERR_NOMEM;
            break;
        }
        if (!max_tokens) {
            max_tokens = (int)s->cfg->engine_max_tokens_default;
            if (max_tokens > ctx - n) max_tokens = ctx - n;
        }
        for (int k = 0; k < g->p.n && rc == 0; k++) {
            int ci = pi * g->p.n + k;
            struct choice *c = &g->ch[ci];
            c->g = g;
            c->index = ci;
            c->prompt = pi;
            rc = detok_create(&c->dt, s->tok, (const char *const *)g->p.stop, (size_t)g->p.n_stop,
                              DETOK_SKIP_SPECIAL, err);
            if (rc) {
                param = "stop";
                break;
            }
            if (chat) {
                /* reasoning split for the R1 templates (-1: none), tool parsing when tools */
                int rflags = -1;
                if (s->tmpl == TMPL_DEEPSEEK_R1 || s->tmpl == TMPL_DEEPSEEK_R1_0528)
                    rflags = (int)((g->think_open ? REASONING_START_THINKING : 0) |
                                   (g->p.reasoning_inline ? REASONING_INLINE : 0));
                rc = toolparse_pipe_init(&c->pipe, rflags, &g->p.tools, g->p.samp.seed + k, err);
                if (rc) break;
                c->pipe_on = 1;
            }
            rc = build_request(g, c, hc->request_id, ids, n, max_tokens, k, &reqs[ci], err);
        }
        free(ids);
    }
    if (rc) {
        for (int i = 0; i < g->n_choices; i++) free_request(reqs[i]);
        free(reqs);
        if (rc == ERR_NOMEM && !err[0]) snprintf(err, sizeof err, "out of memory");
        return fail(hc, g, rc, err, rc == ERR_NOMEM ? NULL : param);
    }

    /* submit: from here on the engine may call on_event at any time */
    g->refs = 1 + g->n_choices;
    g->conn = hc->conn;
    g->t_submit = http_now();
    int n_sub = 0;
    for (int i = 0; i < g->n_choices; i++) {
        if (rc == 0) rc = eng_submit(s->eng, reqs[i], err);
        if (rc == 0) {
            g->ch[i].eng_id = reqs[i]->id;
            pthread_mutex_lock(&g->mu);
            g->ch[i].submitted = 1;
            pthread_mutex_unlock(&g->mu);
            n_sub++;
        }
        /* the engine copied the struct and took the arrays (set to NULL) on success */
        free_request(reqs[i]);
    }
    free(reqs);
    if (rc) {
        /* drop the references of the requests that were never submitted, cancel the rest */
        pthread_mutex_lock(&g->mu);
        g->refs -= g->n_choices - n_sub;
        g->conn = NULL;
        pthread_mutex_unlock(&g->mu);
        for (int i = 0; i < g->n_choices; i++)
            if (g->ch[i].submitted) eng_cancel(s->eng, g->ch[i].eng_id);
        enum MHD_Result r = http_reply_error(hc, rc, err, rc == ERR_CTX_OVERFLOW ?
                                             (chat ? "messages" : "prompt") : NULL);
        pthread_mutex_lock(&g->mu);
        int last = --g->refs == 0;
        pthread_mutex_unlock(&g->mu);
        if (last) gen_free(g);
        return r;
    }

    pthread_mutex_lock(&s->gens_mu);
    g->next = s->gens;
    if (s->gens) s->gens->prev = g;
    s->gens = g;
    s->n_gens++;
    pthread_mutex_unlock(&s->gens_mu);
    hc->ud = g;
    hc->on_complete = on_complete;
    LOG_DEBUG("gen", "%s: %d choice(s), prompt %d tokens, stream %d", hc->request_id,
              g->n_choices, g->prompt_len[0], g->stream);

    if (!g->stream) {
        hc->on_resume = nonstream_step;
        return nonstream_step(hc);
    }
    sse_start(g);
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_reader, g, NULL);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    http_add_std_headers(hc, resp);
    enum MHD_Result ret = MHD_queue_response(hc->conn, 200, resp);
    MHD_destroy_response(resp);
    hc->responded = 1;
    return ret;
}

enum MHD_Result api_chat_completions(struct http_conn *hc) { return generate(hc, 1); }
enum MHD_Result api_completions(struct http_conn *hc) { return generate(hc, 0); }
