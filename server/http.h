/* http.h - the HTTP front end: libmicrohttpd daemon, routing, bodies, replies, the server state.
 *
 * struct srv is the daemon's shared state, created by cmd_serve.c (which owns it) and passed to
 * every module; nothing here is a global. struct http_conn is one HTTP request: it is created
 * on MHD's first call for a request, carries the routed handler, the request id and the body,
 * and is freed in MHD's request-completed callback.
 *
 * Threads:
 *   - handlers run on MHD's pool threads, one thread per connection at a time;
 *   - the engine thread only touches a request through gen_events.c's event callback, which
 *     resumes suspended connections (MHD_resume_connection is thread-safe);
 *   - main (libuv loop) reads srv->ready/draining and walks srv's generation registry.
 * Ownership: an http_conn owns its body; a handler that needs to live past its first call
 * stores its state in hc->ud with hc->on_resume / hc->on_complete callbacks; on_complete
 * (always called exactly once if set) must release hc->ud.
 */
#ifndef TANDEM_SERVER_HTTP_H
#define TANDEM_SERVER_HTTP_H

#include "config/cfg.h"
#include "engine/engine.h"
#include "engine/text/tmpl.h"
#include "engine/text/tok.h"

#include <microhttpd.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

struct auth;
struct metrics;
struct gen;
struct http_socks;
struct http_sock;

struct srv {
    const struct cfg *cfg;
    /* set once before `ready` becomes 1 (release), read after seeing ready == 1 (acquire) */
    struct engine *eng;
    struct tok *tok;
    struct constrain_vocab *cvocab; /* constrained decoding tables for tok (constrain.h) */
    enum tmpl_kind tmpl;
    struct jinja *jinja;          /* TMPL_JINJA: the parsed template (immutable; NULL otherwise) */
    struct tmpl_modes tmpl_modes; /* TMPL_JINJA: tool-call and reasoning parsing it implies */
    struct eng_info info;
    char model_name[128];
    char fingerprint[32]; /* system_fingerprint */
    char replica[64];     /* server.replica_name: X-Tandem-Replica (replica.h); "" = none */
    long long created;    /* unix time of start (models' "created") */
    struct metrics *metrics;
    struct auth *auth;
    struct MHD_Daemon *mhd;
    int listen_fd;            /* socket-activated fd, or -1 */
    int quiesced_fd;          /* http.c: the listening socket after http_quiesce, or -1 */
    _Atomic int ready;        /* model loaded and engine running */
    _Atomic int leaving;      /* SIGTERM received: /health says draining (replica.h) */
    _Atomic int draining;     /* draining (after the grace): no new work */
    _Atomic uint64_t next_id; /* for generated request / completion ids */
    struct http_socks *socks; /* http.c: open connections, for the request deadline */
    /* registry of live generation requests (gen_registry.c), for drain and disconnect probing */
    pthread_mutex_t gens_mu;
    struct gen *gens;
    int n_gens;
};

struct http_conn;
typedef enum MHD_Result (*http_handler_fn)(struct http_conn *hc);

struct http_conn {
    struct srv *srv;
    struct MHD_Connection *conn;
    const struct http_route *route;
    char request_id[64];
    char *body; /* NUL-terminated; body_len bytes */
    size_t body_len, body_cap;
    size_t body_seen; /* bytes received, kept or not */
    int too_large;
    int started; /* the handler has run once */
    int responded;
    int close;              /* the reply closes the connection (Connection: close) */
    double t_start;         /* monotonic seconds */
    struct http_sock *sock; /* its connection (http.c), for the request deadline */
    void *ud;               /* handler state */
    enum MHD_Result (*on_resume)(struct http_conn *hc);
    void (*on_complete)(struct http_conn *hc, enum MHD_RequestTerminationCode toe);
};

struct http_route {
    const char *path;
    const char *method; /* "GET" or "POST" */
    http_handler_fn fn;
    int auth;        /* requires an API key when keys are configured */
    int needs_ready; /* 503 until the model is loaded, and while draining */
};

/* Start the daemon on cfg's host/port (or srv->listen_fd), and the thread that closes
 * connections which do not deliver a complete request within server.request_timeout_s. Errors:
 * ERR_IO (bind/listen failed), ERR_CONFIG (bad host), ERR_NOMEM. */
int http_start(struct srv *s, char *err);
/* Stop accepting connections (MHD_quiesce_daemon); existing ones continue. */
void http_quiesce(struct srv *s);
void http_stop(struct srv *s); /* accepts a srv that never started */

double http_now(void); /* CLOCK_MONOTONIC seconds */

/* Replies (call at most once per request). All add X-Request-Id, X-Tandem-Replica (when
 * server.replica_name is set) and CORS (when configured). */
enum MHD_Result http_reply_json(struct http_conn *hc, unsigned status, json_t *body_take);
enum MHD_Result http_reply_buf(struct http_conn *hc, unsigned status, const char *content_type,
                               const char *buf, size_t len);
/* As http_reply_buf, but takes buf (malloc'ed; freed by MHD, or here on failure). */
enum MHD_Result http_reply_take(struct http_conn *hc, unsigned status, const char *content_type,
                                char *buf, size_t len);
/* The one place an ERR_* becomes an HTTP error: {"error":{"message","type","param","code"}}
 * (Anthropic's {"type":"error","error":{"type","message"}} on its routes) with the status of
 * err.h's table; message = err (or the table's text when err is NULL/empty);
 * param may be NULL. Adds Retry-After on 429, Allow on 405, WWW-Authenticate on 401; counts the
 * error in /metrics. */
enum MHD_Result http_reply_error(struct http_conn *hc, int code, const char *err,
                                 const char *param);
/* The error object {"error":{...}} of http_reply_error, for errors inside an SSE stream. */
json_t *http_error_body(int code, const char *err, const char *param);
/* Add the standard headers (X-Request-Id, CORS) to a response built elsewhere (SSE). */
void http_add_std_headers(struct http_conn *hc, struct MHD_Response *r);

const char *http_header(struct http_conn *hc, const char *name);

/* The route table entries implemented in api_*.c */
enum MHD_Result api_chat_completions(struct http_conn *hc);
enum MHD_Result api_completions(struct http_conn *hc);
enum MHD_Result api_responses(struct http_conn *hc); /* resp.h */
enum MHD_Result api_models(struct http_conn *hc);
enum MHD_Result api_health(struct http_conn *hc);
enum MHD_Result api_metrics(struct http_conn *hc);
enum MHD_Result api_tokenize(struct http_conn *hc);
enum MHD_Result api_detokenize(struct http_conn *hc);
enum MHD_Result api_messages(struct http_conn *hc);
enum MHD_Result api_messages_count_tokens(struct http_conn *hc);

/* gen_request.c: render chat messages (validated by api_params_parse) with the model's
 * template; `tools` (may be NULL) adds the tool list to the system text
 * (toolparse_tools_prompt) of the DeepSeek templates, or is the `tools` variable of an
 * interpreted one; kwargs (may be NULL): chat_template_kwargs, for interpreted templates. */
struct toolparse_req;
int api_render_chat(struct srv *s, const json_t *messages, const struct toolparse_req *tools,
                    const json_t *kwargs, struct sbuf *out, char *err);

/* gen_registry.c: the registry of live generation requests, for the main loop */
int api_gen_count(struct srv *s);       /* live generation requests */
void api_gen_cancel_all(struct srv *s); /* drain deadline: cancel everything in flight */
void api_gen_probe(struct srv *s);      /* cancel requests whose client went away */

#endif
