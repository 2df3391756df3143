/* gen.h - one generation request (/v1/chat/completions, /v1/completions, /v1/responses), shared
 * by the files that handle it; nothing outside them uses it.
 *
 * What: one struct gen per HTTP request, with one struct choice per engine request (n choices
 * per prompt; several prompts for legacy completions). The files, in the order a request meets
 * them:
 *   api_gen.c       the two handlers: the steps of a request, the streaming and non-streaming
 *                   response modes, the end of the connection;
 *   gen_request.c   body -> struct gen: validation, chat template, tokenization, the engine
 *                   requests; freeing a gen;
 *   gen_events.c    the handoff from the engine thread: its callback queues events, the HTTP
 *                   side takes them, suspends and resumes the connection;
 *   gen_text.c      queued events -> text per choice: detokenization with stop strings, the
 *                   chat pipe (R1 reasoning split, tool calls);
 *   gen_output.c    the JSON the client sees: SSE chunks, the final JSON body, logprobs, usage;
 *   gen_anthropic.c the same in Anthropic's Messages shape (/v1/messages, api_messages.c);
 *   gen_registry.c  the live requests, for the main loop (drain, disconnect probing).
 * /v1/responses takes the chat path with its own request translation and output (resp.h).
 *
 * Threads and handoff:
 *   - engine thread: gen_on_event() appends a copy of the event to g->q under g->mu, updates the
 *     latency histograms, and resumes the connection if the HTTP side had suspended it. It never
 *     blocks on anything but g->mu (held only for short copies on either side).
 *   - HTTP thread: gen_take_events() swaps g->q's array out under the lock; the real work
 *     (detokenization, logprobs JSON, SSE framing) happens outside it.
 *   - main thread: api_gen_probe / api_gen_cancel_all walk the registry (srv->gens_mu, then
 *     g->mu: always in that order).
 *   eng_cancel / eng_submit are never called with g->mu held (the engine may hold its own lock
 *   while it runs our callback).
 * Chat output (docs/structured-output.md): every choice's detokenized text goes through a
 * toolparse_pipe, which yields the message fields (non-streaming) or one delta object per SSE
 * chunk (streaming). A request with a grammar (a forced tool call or response_format) gives
 * each choice its own struct constrain, handed to the engine as the request's eng_constraint.
 * Lifetime: g->refs counts the HTTP side (1, released when the connection completes) plus one
 * per submitted engine request (released at its ENG_EV_DONE). Whoever drops the last reference
 * frees the gen.
 * Invariants: MHD_resume_connection is called only when g->suspended is set, under g->mu, and
 * g->conn is cleared under g->mu when the connection completes, so a resume never targets a
 * closed connection.
 */
#ifndef TANDEM_SERVER_GEN_H
#define TANDEM_SERVER_GEN_H

#include "common/err.h"
#include "engine/text/detok.h"
#include "engine/text/toolparse.h"
#include "http.h"
#include "reqparse.h"
#include "resp.h"

#include <pthread.h>
#include <stdint.h>

#define GEN_MAX_CHOICES (API_MAX_N * API_MAX_PROMPTS)

/* which API a request came through */
enum gen_api { GEN_COMPLETIONS = 0, GEN_CHAT = 1, GEN_RESPONSES = 2 };

/* One engine event, queued for the HTTP side. */
struct gev {
    int choice; /* index into gen.ch */
    struct eng_event ev;
};

/* The events the engine thread has reported and the HTTP side has not taken yet. The HTTP side
 * takes all of them at once by swapping arrays, so the lock is held for one event copy at most
 * (gen_events.c). */
struct gen_queue {
    /* under gen.mu */
    struct gev *ev;
    size_t n, cap;
    int oom; /* an event could not be queued: fail the request */
    /* HTTP thread only: the array handed out by the last take, reused by the next */
    struct gev *work;
    size_t cap_work;
};

struct choice {
    struct gen *g;
    int index;  /* OpenAI choice index */
    int prompt; /* which prompt it continues */
    uint64_t eng_id;
    int submitted;
    int eng_done;  /* DONE received (under g->mu) */
    double t_last; /* engine thread: time of the previous token (ITL) */
    /* HTTP-thread state */
    struct detok *dt;
    struct sbuf text; /* non-stream: the whole text; stream: text not yet sent */
    json_t *lp;       /* logprobs entries not yet emitted (chat: array; legacy: object) */
    size_t text_off;  /* legacy logprobs text_offset */
    int n_gen, n_cached;
    int finished;
    const char *finish; /* "stop" / "length" */
    int finish_sent;
    int pipe_on;   /* chat: text goes through `pipe` */
    int pipe_done; /* toolparse_pipe_finish called */
    struct toolparse_pipe pipe;
};

struct gen {
    struct srv *srv;
    struct gen *next, *prev; /* srv->gens registry (srv->gens_mu) */
    pthread_mutex_t mu;
    /* under mu */
    int refs;
    struct MHD_Connection *conn;
    int suspended;
    int client_gone;
    struct gen_queue q;
    /* engine thread only */
    int first_token_seen;
    double t_submit;
    int n_done_engine;
    /* HTTP thread only */
    struct api_params p;
    json_t *root;
    int n_prompts, n_choices, n_finished;
    int *prompt_len; /* tokens per prompt */
    int think_open;  /* chat: the rendered prompt left "<think>" open (R1) */
    char **echo;     /* completions echo: prompt text per prompt */
    struct choice *ch;
    char id[64];
    char request_id[64];
    long long created;
    int stream;
    struct sbuf sse; /* SSE bytes not yet handed to MHD, from sse_off */
    size_t sse_off;
    int stream_done;
    int err_code;
    char err_msg[ERR_LEN];
    /* /v1/messages: the answer has Anthropic's shape (gen_anthropic.c) */
    int anthropic;
    int anth_blocks; /* streaming: content blocks started so far */
    int anth_open;   /* streaming: the open block, 0 none, else 'k' thinking, 't' text, 'u' tool */
    struct resp *resp; /* /v1/responses: its request and output state (resp.h), else NULL */
};

/* gen_request.c */
/* The body as JSON: UTF-8 and JSON checked (ERR_UTF8, ERR_JSON with err). */
int gen_parse_body(struct http_conn *hc, json_t **root, char *err);
/* gen_create for a parsed body (root: taken, also on error). */
int gen_create_root(struct http_conn *hc, json_t *root, enum gen_api api, struct gen **out,
                    const char **param, char *err);
/* Check the body (UTF-8, JSON, parameters) and create the gen. On error *out may hold a gen to
 * free, and rc, err and *param are what the error reply says. */
int gen_create(struct http_conn *hc, enum gen_api api, struct gen **out, const char **param,
               char *err);
/* Tokenize every prompt and build one engine request per choice (in *out, n_choices of them,
 * before anything is submitted). On error nothing is left to free but the gen, and rc, err and
 * *param are what the error reply says. */
int gen_build_requests(struct gen *g, struct eng_request ***out, const char **param, char *err);
void gen_request_free(struct eng_request *r); /* an engine request (its arrays, if still held) */
void gen_free(struct gen *g);                 /* accepts NULL */

/* api_gen.c: build, submit and answer a created gen (the gen is no longer the caller's). */
enum MHD_Result gen_start(struct http_conn *hc, struct gen *g);

/* gen_events.c */
void gen_on_event(void *ud, const struct eng_event *ev); /* engine thread; ud = the choice */
/* HTTP thread: take every queued event (valid until the next take); a failed queueing sets the
 * request's error. */
size_t gen_take_events(struct gen *g, const struct gev **evs);
/* Suspend conn when nothing is queued and the client is still there. Returns 1 if suspended. */
int gen_suspend_if_idle(struct gen *g, struct MHD_Connection *conn);
int gen_client_gone(struct gen *g);
void gen_queue_fini(struct gen_queue *q);

/* gen_text.c: take the queued events and turn them into each choice's text. Returns the number
 * of engine requests to cancel (stopped by a stop string or failed), their ids in cancel
 * (room for GEN_MAX_CHOICES). */
int gen_text_update(struct gen *g, uint64_t *cancel);

/* gen_output.c */
void gen_oom(struct gen *g); /* the gen ends with ERR_NOMEM */
/* Append one SSE event, "event: NAME\n" (when name is not NULL) and "data: JSON\n\n" (takes obj;
 * NULL or a failed write ends the gen with ERR_NOMEM). */
void gen_sse_event(struct gen *g, const char *name, json_t *obj);
/* The deltas c's chat pipe has ready (toolparse_pipe_deltas), or NULL (ERR_NOMEM set). */
json_t *gen_pipe_deltas(struct gen *g, struct choice *c);
void gen_logprobs_add(struct gen *g, struct choice *c, const struct eng_event *ev);
void gen_sse_start(struct gen *g);   /* the first chunk of each choice */
void gen_sse_pending(struct gen *g); /* chunks for whatever each choice has ready */
void gen_sse_end(struct gen *g);     /* the error or usage chunk, then [DONE] */
enum MHD_Result gen_reply_full(struct http_conn *hc, struct gen *g); /* non-streaming */

/* gen_anthropic.c: gen_output.c's four for a gen with `anthropic` set */
void gen_anth_sse_start(struct gen *g);
void gen_anth_sse_pending(struct gen *g);
void gen_anth_sse_end(struct gen *g);
enum MHD_Result gen_anth_reply_full(struct http_conn *hc, struct gen *g);

/* gen_registry.c (and api_gen_count / api_gen_cancel_all / api_gen_probe of http.h) */
void gen_registry_add(struct srv *s, struct gen *g);
void gen_registry_remove(struct srv *s, struct gen *g);

#endif
