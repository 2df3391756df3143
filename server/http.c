/* http.c - libmicrohttpd daemon: routing, auth, body limits, request ids, replies, errors.
 *
 * What: MHD runs with its internal thread pool over epoll and suspend/resume enabled. For each
 * request MHD calls access_cb several times: the first call (headers only) allocates the
 * http_conn, routes it and rejects early what can be rejected before reading the body (404,
 * 405, 401, 503, 413 by Content-Length); the next calls append body chunks (bounded by
 * server.max_body_bytes, excess is discarded and answered 413); the last call runs the
 * handler. A handler that waits for the engine suspends the connection and sets
 * hc->on_resume, which MHD's next call after MHD_resume_connection runs.
 * Why: every error passes through http_reply_error (one shape, one counter), and no request
 * can make the daemon allocate more than the body limit.
 * Request deadline: MHD's connection timeout is an idle timer that every received byte resets,
 * so a client sending a byte a second would hold a connection slot forever (slow loris). Each
 * connection therefore has a struct http_sock (MHD's socket context, registered in srv->socks)
 * that is "receiving" from its accept, and again from the end of each request, until the last
 * access_cb call of the next request (headers and body complete). A sweeper thread shuts down
 * (shutdown(2), so MHD sees EOF and closes it itself) every connection that has been receiving
 * for more than server.request_timeout_s. A connection waiting for the engine or streaming an
 * answer is not receiving. The registry mutex is also taken by MHD's CLOSED notification, which
 * comes before MHD closes the fd, so the sweeper never touches a closed (or reused) fd.
 * Idle connections: one that has sent no byte (TCP_INFO) within server.first_byte_timeout_s is
 * shut down by the sweeper; near server.max_connections, and beyond server.max_connections_per_ip
 * from one address, each new connection closes the oldest silent one (of that address), so that
 * a flood of idle sockets cannot keep /health or a real client out.
 * Framing: conflicting Content-Length headers, or Content-Length with Transfer-Encoding, are a
 * 400 that closes the connection; a POST body must be declared JSON (415).
 * Invariants: hc is freed only in completed_cb, after hc->on_complete released handler state.
 */
#include "http.h"

#include "common/err.h"
#include "common/log.h"
#include "anthropic.h"
#include "auth.h"
#include "cors.h"
#include "metrics.h"
#include "ui.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/tcp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const struct http_route routes[] = {
    {"/v1/chat/completions", "POST", api_chat_completions, 1, 1},
    {"/v1/completions", "POST", api_completions, 1, 1},
    {"/v1/responses", "POST", api_responses, 1, 1},
    {"/v1/models", "GET", api_models, 1, 1},
    {"/tokenize", "POST", api_tokenize, 1, 1},
    {"/detokenize", "POST", api_detokenize, 1, 1},
    {"/v1/messages", "POST", api_messages, 1, 1},
    {"/v1/messages/count_tokens", "POST", api_messages_count_tokens, 1, 1},
    {"/health", "GET", api_health, 0, 0},
    {"/metrics", "GET", api_metrics, 0, 0},
    {"/", "GET", api_ui, 0, 0}, /* the chat page (ui.h): public; its API calls send the key */
    {"/ui/app.js", "GET", api_ui, 0, 0},
    {"/ui/app.css", "GET", api_ui, 0, 0},
};
#define N_ROUTES (sizeof routes / sizeof routes[0])

/* One TCP connection, for the deadlines. Fields are guarded by http_socks.mu. */
struct http_sock {
    struct http_sock *prev, *next;
    int fd;
    int receiving;          /* waiting for (the rest of) a request */
    int requested;          /* the headers of a request have arrived on it */
    int spoke;              /* it is known to have sent at least one byte */
    int shut;               /* shut down by the sweeper or to make room */
    double t0;              /* when receiving began */
    double opened;          /* when it was accepted */
    int addr_len;           /* 4 (IPv4), 16 (IPv6) or 0 (not an IP socket: no per-address cap) */
    unsigned char addr[16]; /* the client's address */
};

struct http_socks {
    pthread_mutex_t mu;
    pthread_cond_t cv;             /* CLOCK_MONOTONIC; signalled to stop the sweeper */
    struct http_sock *head, *tail; /* oldest first */
    int count;
    int make_room_at; /* above this many connections, a silent one is closed for each new one */
    int per_addr;     /* server.max_connections_per_ip (0 = no cap) */
    int stop;
    double timeout;    /* server.request_timeout_s */
    double first_byte; /* server.first_byte_timeout_s */
    pthread_t th;
    int started;
};

double http_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *http_header(struct http_conn *hc, const char *name)
{
    return MHD_lookup_connection_value(hc->conn, MHD_HEADER_KIND, name);
}

/* X-Request-Id: keep [A-Za-z0-9._:-], at most 63 bytes; generate one when nothing is left. */
static void set_request_id(struct http_conn *hc)
{
    const char *in = http_header(hc, "X-Request-Id");
    size_t j = 0;
    for (; in && *in && j + 1 < sizeof hc->request_id; in++) {
        char ch = *in;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '.' || ch == '_' || ch == ':' || ch == '-')
            hc->request_id[j++] = ch;
    }
    hc->request_id[j] = 0;
    if (j == 0) {
        uint64_t n = atomic_fetch_add(&hc->srv->next_id, 1);
        snprintf(hc->request_id, sizeof hc->request_id, "req-%016llx", (unsigned long long)n);
    }
}

void http_add_std_headers(struct http_conn *hc, struct MHD_Response *r)
{
    MHD_add_response_header(r, "X-Request-Id", hc->request_id);
    if (hc->srv->replica[0]) MHD_add_response_header(r, "X-Tandem-Replica", hc->srv->replica);
    if (hc->close) MHD_add_response_header(r, "Connection", "close");
    const char *origins = cors_origin_list(hc->srv->cfg);
    if (!*origins) return;
    MHD_add_response_header(r, "Vary", "Origin");
    const char *allow = cors_allow_origin(origins, http_header(hc, "Origin"));
    if (allow) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", allow);
        MHD_add_response_header(r, "Access-Control-Expose-Headers", "X-Request-Id");
    }
}

static enum MHD_Result queue(struct http_conn *hc, unsigned status, struct MHD_Response *r)
{
    http_add_std_headers(hc, r);
    enum MHD_Result ret = MHD_queue_response(hc->conn, status, r);
    MHD_destroy_response(r);
    hc->responded = 1;
    return ret;
}

enum MHD_Result http_reply_buf(struct http_conn *hc, unsigned status, const char *content_type,
                               const char *buf, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)buf, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    if (content_type) MHD_add_response_header(r, "Content-Type", content_type);
    return queue(hc, status, r);
}

enum MHD_Result http_reply_take(struct http_conn *hc, unsigned status, const char *content_type,
                                char *buf, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(buf);
        return MHD_NO;
    }
    if (content_type) MHD_add_response_header(r, "Content-Type", content_type);
    return queue(hc, status, r);
}

enum MHD_Result http_reply_json(struct http_conn *hc, unsigned status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) return MHD_NO;
    size_t len = strlen(text);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    return queue(hc, status, r);
}

json_t *http_error_body(int code, const char *err, const char *param)
{
    if (code >= 0) code = ERR_INTERNAL;
    const char *msg = err && *err ? err : err_message(code);
    return json_pack("{s:{s:s, s:s, s:o, s:s}}", "error", "message", msg, "type", err_type(code),
                     "param", param && *param ? json_string(param) : json_null(), "code",
                     err_openai_code(code));
}

/* Anthropic's routes answer errors in its shape (anthropic.h) */
static int anthropic_route(const struct http_route *r)
{
    return r && (r->fn == api_messages || r->fn == api_messages_count_tokens);
}

enum MHD_Result http_reply_error(struct http_conn *hc, int code, const char *err, const char *param)
{
    if (code >= 0) code = ERR_INTERNAL;
    const char *msg = err && *err ? err : err_message(code);
    unsigned status = (unsigned)err_http_status(code);
    json_t *e = anthropic_route(hc->route) ? anthropic_error_body(code, msg)
                                           : http_error_body(code, msg, param);
    metrics_error(hc->srv->metrics, code);
    if (status >= 500 && code != ERR_UNAVAILABLE)
        LOG_WARN("http", "%s %s -> %u: %s", hc->request_id, hc->route ? hc->route->path : "?",
                 status, msg);
    else LOG_DEBUG("http", "%s -> %u: %s", hc->request_id, status, msg);
    char *text = e ? json_dumps(e, JSON_COMPACT) : NULL;
    json_decref(e);
    if (!text) return MHD_NO;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    if (code == ERR_QUEUE_FULL || code == ERR_UNAVAILABLE)
        MHD_add_response_header(r, "Retry-After", "1");
    if (code == ERR_AUTH) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    if (code == ERR_METHOD && hc->route) MHD_add_response_header(r, "Allow", hc->route->method);
    return queue(hc, status, r);
}

/* JSON request bodies: application/json or application/SUBTYPE+json, any parameters. A
 * browser can send text/plain, a form type or none at all cross-origin without a preflight. */
static int json_media_type(const char *ct)
{
    if (!ct) return 0;
    while (*ct == ' ' || *ct == '\t') ct++;
    size_t n = strcspn(ct, ";");
    while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t')) n--;
    if (n == 16 && strncasecmp(ct, "application/json", 16) == 0) return 1;
    return n > 17 && strncasecmp(ct, "application/", 12) == 0 && !memchr(ct + 12, '/', n - 12) &&
           strncasecmp(ct + n - 5, "+json", 5) == 0;
}

/* The framing headers: how many Content-Length lines, whether they agree, Transfer-Encoding. */
struct framing {
    int n_length;
    int lengths_differ;
    const char *length;
    int transfer_encoding;
};

static enum MHD_Result framing_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    (void)kind;
    struct framing *f = cls;
    if (strcasecmp(key, "Transfer-Encoding") == 0) f->transfer_encoding = 1;
    if (strcasecmp(key, "Content-Length") != 0) return MHD_YES;
    if (f->n_length++ && strcmp(f->length, value ? value : "") != 0) f->lengths_differ = 1;
    if (!f->length) f->length = value ? value : "";
    return MHD_YES;
}

/* RFC 9110 8.6 / RFC 9112 6.3: a body framed two ways is a request-smuggling vector. */
static int framing_bad(struct http_conn *hc, char *msg)
{
    struct framing f = {0};
    MHD_get_connection_values(hc->conn, MHD_HEADER_KIND, framing_cb, &f);
    if (f.lengths_differ) return snprintf(msg, ERR_LEN, "conflicting Content-Length headers"), 1;
    if (f.n_length && f.transfer_encoding)
        return snprintf(msg, ERR_LEN, "both Content-Length and Transfer-Encoding are set"), 1;
    return 0;
}

/* A URL with a control character (an escaped NUL arrives as DEL, see unescape_cb) matches no
 * route, and is not served by its prefix. */
static int url_has_ctl(const char *url)
{
    for (const unsigned char *p = (const unsigned char *)url; *p; p++)
        if (*p < 0x20 || *p == 0x7f) return 1;
    return 0;
}

static enum MHD_Result route_first_call(struct http_conn *hc, const char *url, const char *method)
{
    struct srv *s = hc->srv;
    const struct http_route *path_match = NULL;
    char bad[ERR_LEN];
    if (framing_bad(hc, bad)) {
        hc->close = 1;
        return http_reply_error(hc, ERR_INVAL, bad, NULL);
    }
    if (url_has_ctl(url))
        return http_reply_error(hc, ERR_INVAL, "the URL contains a control character", NULL);
    for (size_t i = 0; i < N_ROUTES; i++) {
        if (strcmp(url, routes[i].path) != 0) continue;
        path_match = &routes[i];
        if (strcmp(method, routes[i].method) == 0 ||
            (strcmp(method, "HEAD") == 0 && strcmp(routes[i].method, "GET") == 0)) {
            hc->route = &routes[i];
            break;
        }
    }
    if (!hc->route) {
        if (!path_match) {
            char msg[ERR_LEN];
            snprintf(msg, sizeof msg, "no route %s %.100s", method, url);
            return http_reply_error(hc, ERR_NOT_FOUND, msg, NULL);
        }
        hc->route = path_match;
        /* a CORS preflight, answered only for an allowed Origin (else the 405 below); the
         * headers a client asks for are granted, since its origin is trusted */
        if (strcmp(method, "OPTIONS") == 0 &&
            cors_allow_origin(cors_origin_list(s->cfg), http_header(hc, "Origin"))) {
            struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
            if (!r) return MHD_NO;
            const char *asked = http_header(hc, "Access-Control-Request-Headers");
            MHD_add_response_header(r, "Access-Control-Allow-Methods", path_match->method);
            MHD_add_response_header(r, "Access-Control-Allow-Headers",
                                    asked && cors_headers_echoable(asked)
                                        ? asked
                                        : "Authorization, Content-Type, X-Request-Id, X-Api-Key, "
                                          "Anthropic-Version");
            MHD_add_response_header(r, "Access-Control-Max-Age", "600");
            return queue(hc, 204, r);
        }
        char msg[ERR_LEN];
        snprintf(msg, sizeof msg, "%s does not accept %.20s (use %s)", url, method,
                 path_match->method);
        return http_reply_error(hc, ERR_METHOD, msg, NULL);
    }
    if (hc->route->auth && !auth_check(s->auth, http_header(hc, "Authorization")) &&
        !auth_check_key(s->auth, http_header(hc, "X-Api-Key")))
        return http_reply_error(hc, ERR_AUTH,
                                "invalid or missing API key (send "
                                "'Authorization: Bearer KEY' or 'x-api-key: KEY')",
                                NULL);
    if (hc->route->needs_ready) {
        if (atomic_load(&s->draining))
            return http_reply_error(hc, ERR_UNAVAILABLE, "the server is shutting down", NULL);
        if (!atomic_load_explicit(&s->ready, memory_order_acquire))
            return http_reply_error(hc, ERR_UNAVAILABLE, "the model is still loading", NULL);
    }
    /* every POST route takes a JSON body */
    if (strcmp(hc->route->method, "POST") == 0 && !json_media_type(http_header(hc, "Content-Type")))
        return http_reply_error(hc, ERR_MEDIA_TYPE,
                                "the request body must be sent as 'Content-Type: "
                                "application/json'",
                                NULL);
    const char *cl = http_header(hc, "Content-Length");
    if (cl) {
        char *end;
        unsigned long long n = strtoull(cl, &end, 10);
        if (n > (unsigned long long)s->cfg->server_max_body_bytes) {
            char msg[ERR_LEN];
            snprintf(msg, sizeof msg,
                     "request body of %llu bytes exceeds the limit of %lld "
                     "(server.max_body_bytes)",
                     n, (long long)s->cfg->server_max_body_bytes);
            return http_reply_error(hc, ERR_TOO_LARGE, msg, NULL);
        }
    }
    return MHD_YES;
}

static int body_append(struct http_conn *hc, const char *data, size_t n)
{
    size_t max = (size_t)hc->srv->cfg->server_max_body_bytes;
    if (hc->too_large || hc->body_len + n > max) {
        hc->too_large = 1;
        return 0;
    }
    if (hc->body_len + n + 1 > hc->body_cap) {
        size_t cap = hc->body_cap ? hc->body_cap : 4096;
        while (cap < hc->body_len + n + 1) cap *= 2;
        if (cap > max + 1) cap = max + 1;
        char *b = realloc(hc->body, cap);
        if (!b) return ERR_NOMEM;
        hc->body = b;
        hc->body_cap = cap;
    }
    memcpy(hc->body + hc->body_len, data, n);
    hc->body_len += n;
    hc->body[hc->body_len] = 0;
    return 0;
}

static void sock_set_receiving(struct http_socks *ss, struct http_sock *k, int on)
{
    pthread_mutex_lock(&ss->mu);
    if (on && !k->receiving) k->t0 = http_now();
    k->receiving = on;
    pthread_mutex_unlock(&ss->mu);
}

static void sock_set_requested(struct http_socks *ss, struct http_sock *k)
{
    pthread_mutex_lock(&ss->mu);
    k->requested = 1;
    k->spoke = 1;
    pthread_mutex_unlock(&ss->mu);
}

/* 1 when k has sent nothing yet: no request and no byte received by the kernel (TCP_INFO). A
 * socket whose state cannot be read counts as having spoken. Called with ss->mu held. */
static int sock_silent(struct http_sock *k)
{
    if (k->spoke || k->requested) return 0;
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    memset(&ti, 0, sizeof ti);
    if (getsockopt(k->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
        len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof ti.tcpi_bytes_received ||
        ti.tcpi_bytes_received > 0)
        k->spoke = 1;
    return !k->spoke;
}

/* Called with ss->mu held: shut down k, so that MHD sees EOF and closes it itself. */
static void sock_shut(struct http_sock *k)
{
    shutdown(k->fd, SHUT_RDWR);
    k->shut = 1;
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls)
{
    (void)version;
    struct srv *s = cls;
    struct http_conn *hc = *con_cls;
    if (!hc) {
        hc = calloc(1, sizeof *hc);
        if (!hc) return MHD_NO;
        hc->srv = s;
        hc->conn = conn;
        hc->t_start = http_now();
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        hc->sock = ci ? ci->socket_context : NULL;
        *con_cls = hc;
        set_request_id(hc);
        if (hc->sock) sock_set_requested(s->socks, hc->sock);
        return route_first_call(hc, url, method);
    }
    if (*upload_size) {
        hc->body_seen += *upload_size;
        int rc = hc->responded ? 0 : body_append(hc, upload, *upload_size);
        *upload_size = 0;
        /* an oversized (chunked) body is discarded, and answered 413 at its end; one that goes
         * on more than 1 MiB beyond the limit just gets the connection closed */
        if (rc != 0 || hc->body_seen > (size_t)s->cfg->server_max_body_bytes + (1u << 20))
            return MHD_NO;
        return MHD_YES;
    }
    if (hc->sock) sock_set_receiving(s->socks, hc->sock, 0);
    if (hc->on_resume) return hc->on_resume(hc);
    if (hc->responded || hc->started) return MHD_YES;
    hc->started = 1;
    if (hc->too_large) {
        char msg[ERR_LEN];
        snprintf(msg, sizeof msg,
                 "request body exceeds the limit of %lld bytes "
                 "(server.max_body_bytes)",
                 (long long)s->cfg->server_max_body_bytes);
        return http_reply_error(hc, ERR_TOO_LARGE, msg, NULL);
    }
    if (!hc->body) {
        hc->body = calloc(1, 1);
        if (!hc->body) return MHD_NO;
    }
    return hc->route->fn(hc);
}

static void completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    struct http_conn *hc = *con_cls;
    if (!hc) return;
    *con_cls = NULL;
    if (hc->on_complete) hc->on_complete(hc, toe);
    if (hc->sock) sock_set_receiving(hc->srv->socks, hc->sock, 1); /* the next request's clock */
    if (hc->route && hc->route->fn != api_health && hc->route->fn != api_metrics)
        LOG_INFO("http", "%s %s %s %.3fs%s", hc->request_id, hc->route->method, hc->route->path,
                 http_now() - hc->t_start,
                 toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection closed early)");
    free(hc->body);
    free(hc);
}

static int same_addr(const struct http_sock *a, const struct http_sock *b)
{
    return a->addr_len && a->addr_len == b->addr_len && memcmp(a->addr, b->addr, a->addr_len) == 0;
}

static void sock_set_addr(struct http_sock *k, const struct sockaddr *sa)
{
    if (sa && sa->sa_family == AF_INET) {
        memcpy(k->addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        k->addr_len = 4;
    } else if (sa && sa->sa_family == AF_INET6) {
        memcpy(k->addr, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        k->addr_len = 16;
    }
}

/* Close the oldest connection that has sent nothing (from fresh's address when same_peer), so
 * that a client with a real request (a health check) still finds a slot. Looks at a bounded
 * number of candidates; returns 1 when one was closed. Called with ss->mu held; `fresh` is the
 * one just accepted. */
static int make_room(struct http_socks *ss, struct http_sock *fresh, int same_peer)
{
    int looked = 0;
    for (struct http_sock *k = ss->head; k && k != fresh && looked < 64; k = k->next) {
        if (k->shut || k->spoke || k->requested || (same_peer && !same_addr(k, fresh))) continue;
        looked++;
        if (!sock_silent(k)) continue;
        sock_shut(k);
        LOG_DEBUG("http", "closed a silent connection to make room (%d open)", ss->count);
        return 1;
    }
    return 0;
}

/* Called with ss->mu held: the open connections from fresh's address, fresh included. */
static int peer_count(struct http_socks *ss, struct http_sock *fresh)
{
    int n = 0;
    for (struct http_sock *k = ss->head; k; k = k->next) n += !k->shut && same_addr(k, fresh);
    return n;
}

/* MHD_OPTION_NOTIFY_CONNECTION: register each connection from accept to close. */
static void conn_notify_cb(void *cls, struct MHD_Connection *conn, void **socket_context,
                           enum MHD_ConnectionNotificationCode code)
{
    struct http_socks *ss = ((struct srv *)cls)->socks;
    struct http_sock *k = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        k = ci ? calloc(1, sizeof *k) : NULL;
        if (!k) return; /* not tracked: only the idle timeout applies to it */
        k->fd = ci->connect_fd;
        k->receiving = 1;
        k->t0 = k->opened = http_now();
        pthread_mutex_lock(&ss->mu);
        k->prev = ss->tail;
        if (ss->tail) ss->tail->next = k;
        else ss->head = k;
        ss->tail = k;
        ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        sock_set_addr(k, ci ? ci->client_addr : NULL);
        /* over the per-address cap: that address's oldest silent connection makes way, else
         * the new one is refused */
        if (ss->per_addr && k->addr_len && peer_count(ss, k) > ss->per_addr &&
            !make_room(ss, k, 1)) {
            sock_shut(k);
            LOG_DEBUG("http", "refused a connection over server.max_connections_per_ip");
        }
        if (++ss->count > ss->make_room_at) make_room(ss, k, 0);
        pthread_mutex_unlock(&ss->mu);
        *socket_context = k;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && k) {
        pthread_mutex_lock(&ss->mu);
        if (k->prev) k->prev->next = k->next;
        else ss->head = k->next;
        if (k->next) k->next->prev = k->prev;
        else ss->tail = k->prev;
        ss->count--;
        pthread_mutex_unlock(&ss->mu);
        free(k);
        *socket_context = NULL;
    }
}

/* The sweeper: every 250 ms, shut down connections past the request deadline. */
static void *sweeper_main(void *arg)
{
    struct http_socks *ss = arg;
    pthread_mutex_lock(&ss->mu);
    while (!ss->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 250 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&ss->cv, &ss->mu, &ts);
        double now = http_now();
        int n = 0, mute = 0;
        for (struct http_sock *k = ss->head; k && !ss->stop; k = k->next) {
            if (!k->receiving || k->shut) continue;
            if (now - k->t0 > ss->timeout) {
                sock_shut(k);
                n++;
            } else if (now - k->opened > ss->first_byte && sock_silent(k)) {
                sock_shut(k);
                mute++;
            }
        }
        if (n)
            LOG_INFO("http",
                     "closed %d connection(s) that sent no complete request within %.0fs "
                     "(server.request_timeout_s)",
                     n, ss->timeout);
        if (mute)
            LOG_DEBUG("http",
                      "closed %d connection(s) that sent nothing within %.0fs "
                      "(server.first_byte_timeout_s)",
                      mute, ss->first_byte);
    }
    pthread_mutex_unlock(&ss->mu);
    return NULL;
}

static int socks_start(struct srv *s, char *err)
{
    struct http_socks *ss = calloc(1, sizeof *ss);
    if (!ss) return err_set(err, ERR_NOMEM, "out of memory");
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ss->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&ss->mu, NULL);
    ss->timeout = (double)s->cfg->server_request_timeout_s;
    ss->first_byte = (double)s->cfg->server_first_byte_timeout_s;
    int max = (int)s->cfg->server_max_connections;
    ss->make_room_at = max - (max / 16 > 1 ? max / 16 : 1);
    ss->per_addr = (int)s->cfg->server_max_connections_per_ip;
    s->socks = ss;
    if (pthread_create(&ss->th, NULL, sweeper_main, ss) != 0)
        return err_set(err, ERR_NOMEM, "cannot start the request-deadline thread");
    ss->started = 1;
    return 0;
}

static void socks_stop(struct srv *s)
{
    struct http_socks *ss = s->socks;
    if (!ss) return;
    if (ss->started) {
        pthread_mutex_lock(&ss->mu);
        ss->stop = 1;
        pthread_cond_signal(&ss->cv);
        pthread_mutex_unlock(&ss->mu);
        pthread_join(ss->th, NULL);
    }
    pthread_cond_destroy(&ss->cv);
    pthread_mutex_destroy(&ss->mu);
    free(ss);
    s->socks = NULL;
}

/* MHD_OPTION_UNESCAPE_CALLBACK: percent-decoding as MHD does it, except that a decoded NUL
 * becomes DEL, so that "/health%00" is not cut short to "/health" (url_has_ctl rejects it). */
static size_t unescape_cb(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    size_t n = MHD_http_unescape(s);
    for (size_t i = 0; i < n; i++)
        if (s[i] == 0) s[i] = 0x7f;
    return n;
}

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n') line[--n] = 0;
    LOG_DEBUG("mhd", "%s", line);
}

int http_start(struct srv *s, char *err)
{
    const struct cfg *c = s->cfg;
    s->quiesced_fd = -1;
    unsigned flags =
        MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (s->listen_fd < 0) {
        struct addrinfo hints = {0}, *ai = NULL;
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE;
        int gai = getaddrinfo(c->server_host, NULL, &hints, &ai);
        if (gai != 0 || !ai)
            return err_set(err, ERR_CONFIG, "server.host '%s': %s", c->server_host,
                           gai_strerror(gai));
        memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
        freeaddrinfo(ai);
        if (ss.ss_family == AF_INET6) {
            ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)c->server_port);
            flags |= MHD_USE_IPv6;
        } else {
            ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)c->server_port);
        }
    }
    int rc = socks_start(s, err);
    if (rc != 0) {
        socks_stop(s);
        return rc;
    }
    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)completed_cb, s},
        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)conn_notify_cb, s},
        {MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)c->server_threads, NULL},
        {MHD_OPTION_CONNECTION_LIMIT, (intptr_t)c->server_max_connections, NULL},
        {MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t)unescape_cb, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)c->server_idle_timeout_s, NULL},
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_logger, NULL},
        {MHD_OPTION_LISTEN_BACKLOG_SIZE, 512, NULL},
        {s->listen_fd >= 0 ? MHD_OPTION_LISTEN_SOCKET : MHD_OPTION_SOCK_ADDR,
         s->listen_fd >= 0 ? s->listen_fd : 0, s->listen_fd >= 0 ? NULL : (void *)&ss},
        {MHD_OPTION_END, 0, NULL},
    };
    s->mhd = MHD_start_daemon(flags, s->listen_fd >= 0 ? 0 : (uint16_t)c->server_port, NULL, NULL,
                              access_cb, s, MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (!s->mhd) {
        socks_stop(s);
        if (s->listen_fd >= 0)
            return err_set(err, ERR_IO, "cannot serve on the socket-activated fd %d", s->listen_fd);
        return err_set(err, ERR_IO,
                       "cannot listen on %s:%lld (address in use or not "
                       "permitted?)",
                       c->server_host, (long long)c->server_port);
    }
    return 0;
}

/* MHD_quiesce_daemon only asks MHD's threads to drop the listening socket: each removes it
 * from its epoll set when it next wakes, after the call has returned. So the socket is closed
 * only after MHD_stop_daemon has joined them (http_stop); closing it here would race with them
 * (and the fd number could be reused meanwhile). A socket of our own stops listening at once
 * (shutdown), so new connections are refused during the drain; one passed by systemd is shared
 * with it and is left listening there, for the next instance. */
void http_quiesce(struct srv *s)
{
    if (!s->mhd || s->quiesced_fd >= 0) return;
    MHD_socket fd = MHD_quiesce_daemon(s->mhd);
    if (fd == MHD_INVALID_SOCKET) return;
    if (s->listen_fd < 0) shutdown(fd, SHUT_RDWR);
    s->quiesced_fd = fd;
}

void http_stop(struct srv *s)
{
    if (s->mhd) {
        MHD_stop_daemon(s->mhd);
        if (s->quiesced_fd >= 0) close(s->quiesced_fd);
        s->quiesced_fd = -1;
    }
    s->mhd = NULL;
    socks_stop(s); /* after MHD: every connection has been closed and unregistered */
}
