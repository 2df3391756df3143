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
 * Invariants: hc is freed only in completed_cb, after hc->on_complete released handler state.
 */
#include "http.h"

#include "common/err.h"
#include "common/log.h"
#include "anthropic.h"
#include "auth.h"
#include "metrics.h"
#include "ui.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* One TCP connection, for the request deadline. Fields are guarded by http_socks.mu. */
struct http_sock {
    struct http_sock *prev, *next;
    int fd;
    int receiving; /* waiting for (the rest of) a request */
    int shut;      /* the sweeper shut it down */
    double t0;     /* when receiving began */
};

struct http_socks {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC; signalled to stop the sweeper */
    struct http_sock *head;
    int stop;
    double timeout; /* server.request_timeout_s */
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
    if (hc->srv->cfg->server_cors) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
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

static enum MHD_Result route_first_call(struct http_conn *hc, const char *url, const char *method)
{
    struct srv *s = hc->srv;
    const struct http_route *path_match = NULL;
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
        if (strcmp(method, "OPTIONS") == 0 && s->cfg->server_cors) {
            struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
            if (!r) return MHD_NO;
            MHD_add_response_header(r, "Access-Control-Allow-Methods", path_match->method);
            MHD_add_response_header(r, "Access-Control-Allow-Headers",
                                    "Authorization, Content-Type, X-Request-Id, X-Api-Key, "
                                    "Anthropic-Version");
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
        k->t0 = http_now();
        pthread_mutex_lock(&ss->mu);
        k->next = ss->head;
        if (ss->head) ss->head->prev = k;
        ss->head = k;
        pthread_mutex_unlock(&ss->mu);
        *socket_context = k;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && k) {
        pthread_mutex_lock(&ss->mu);
        if (k->prev) k->prev->next = k->next;
        else ss->head = k->next;
        if (k->next) k->next->prev = k->prev;
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
        int n = 0;
        for (struct http_sock *k = ss->head; k && !ss->stop; k = k->next) {
            if (!k->receiving || k->shut || now - k->t0 <= ss->timeout) continue;
            shutdown(k->fd, SHUT_RDWR);
            k->shut = 1;
            n++;
        }
        if (n)
            LOG_INFO("http",
                     "closed %d connection(s) that sent no complete request within %.0fs "
                     "(server.request_timeout_s)",
                     n, ss->timeout);
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
