/* api_gen.c - POST /v1/chat/completions, /v1/completions and /v1/responses: request -> engine ->
 * response.
 *
 * What: the two handlers, as a sequence of steps (generate): create the gen from the body and
 * build its engine requests (gen_request.c), submit them all, list the gen in the registry
 * (gen_registry.c), then answer in one of two modes. Streaming queues an SSE response whose
 * reader pulls text as the engine produces it; non-streaming suspends the connection until
 * every choice has finished, then sends one JSON body. Both modes drain the events the engine
 * thread queued (gen_events.c) into text (gen_text.c) and output (gen_output.c), and suspend
 * the connection when nothing is queued; the engine's callback resumes it. The structure shared
 * by these files, their threads and the gen's lifetime are described in gen.h.
 * Threads: MHD's thread of the connection; on_complete releases the HTTP side's reference.
 */
#include "gen.h"

#include "common/log.h"

#include <stdlib.h>
#include <string.h>

/* Events -> text -> (streaming) SSE chunks; then the cancels of choices that stopped, and the
 * end of the stream once every choice has finished or the request failed. */
static void drain_events(struct gen *g)
{
    uint64_t cancel[GEN_MAX_CHOICES];
    int n_cancel = gen_text_update(g, cancel);
    if (g->stream) gen_sse_pending(g);
    for (int i = 0; i < n_cancel; i++) eng_cancel(g->srv->eng, cancel[i]);
    if (g->stream && !g->stream_done && (g->n_finished == g->n_choices || g->err_code)) {
        /* an error ends every choice */
        gen_sse_end(g);
    }
}

/* Streaming: MHD's content reader. Hands out the SSE bytes produced so far; when there are
 * none, drains the queued events, and suspends the connection (returning 0) if that gave none
 * either. */
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
        if (gen_client_gone(g)) return MHD_CONTENT_READER_END_WITH_ERROR;
        drain_events(g);
        if (g->sse.n > g->sse_off || g->stream_done) continue;
        /* the reader runs on the connection's thread: find it through the registry entry */
        if (gen_suspend_if_idle(g, g->conn)) return 0;
    }
}

/* Non-streaming: run on the first call and on every resume until the reply is sent. */
static enum MHD_Result nonstream_step(struct http_conn *hc)
{
    struct gen *g = hc->ud;
    for (;;) {
        if (gen_client_gone(g)) return MHD_NO;
        drain_events(g);
        if (g->n_finished == g->n_choices || g->err_code) {
            hc->on_resume = NULL;
            return gen_reply_full(hc, g);
        }
        if (gen_suspend_if_idle(g, hc->conn)) return MHD_YES;
    }
}

/* The connection is done (answered, or the client went away): leave the registry, cancel what
 * the engine still runs, drop the HTTP side's reference. */
static void on_complete(struct http_conn *hc, enum MHD_RequestTerminationCode toe)
{
    struct gen *g = hc->ud;
    struct srv *s = g->srv;
    uint64_t cancel[GEN_MAX_CHOICES];
    int n_cancel = 0;

    gen_registry_remove(s, g);
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

/* Submit every engine request (freeing reqs). From the first success on, the engine may call
 * gen_on_event at any time. On a failure the requests already submitted are cancelled, the
 * error is answered and the HTTP side's reference dropped: the gen is no longer ours. */
static int submit_all(struct http_conn *hc, struct gen *g, struct eng_request **reqs,
                      enum MHD_Result *reply)
{
    struct srv *s = g->srv;
    char err[ERR_LEN] = "";
    int rc = 0, n_sub = 0;
    g->refs = 1 + g->n_choices;
    g->conn = hc->conn;
    g->t_submit = http_now();
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
        gen_request_free(reqs[i]);
    }
    free(reqs);
    if (rc == 0) return 0;
    /* drop the references of the requests that were never submitted, cancel the rest */
    pthread_mutex_lock(&g->mu);
    g->refs -= g->n_choices - n_sub;
    g->conn = NULL;
    pthread_mutex_unlock(&g->mu);
    for (int i = 0; i < g->n_choices; i++)
        if (g->ch[i].submitted) eng_cancel(s->eng, g->ch[i].eng_id);
    *reply = http_reply_error(hc, rc, err,
                              rc == ERR_CTX_OVERFLOW ? (g->p.chat ? "messages" : "prompt") : NULL);
    pthread_mutex_lock(&g->mu);
    int last = --g->refs == 0;
    pthread_mutex_unlock(&g->mu);
    if (last) gen_free(g);
    return rc;
}

/* Streaming: the first chunks, then an SSE response fed by sse_reader. */
static enum MHD_Result start_stream(struct http_conn *hc, struct gen *g)
{
    gen_sse_start(g);
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

static enum MHD_Result generate(struct http_conn *hc, enum gen_api api)
{
    char err[ERR_LEN] = "";
    const char *param = NULL;
    struct gen *g = NULL;

    /* 1. validate everything before the engine sees anything */
    int rc = gen_create(hc, api, &g, &param, err);
    if (rc) {
        if (g && g->resp) param = resp_param_name(param);
        enum MHD_Result r = http_reply_error(hc, rc, err, param);
        gen_free(g);
        return r;
    }
    return gen_start(hc, g);
}

enum MHD_Result gen_start(struct http_conn *hc, struct gen *g)
{
    char err[ERR_LEN] = "";
    const char *param = NULL;
    struct eng_request **reqs = NULL;

    /* 1b. tokenize, build the engine requests */
    int rc = gen_build_requests(g, &reqs, &param, err);
    if (rc) {
        if (g && g->resp) param = resp_param_name(param);
        enum MHD_Result r = http_reply_error(hc, rc, err, param);
        gen_free(g);
        return r;
    }
    /* 2. submit */
    enum MHD_Result r = MHD_NO;
    if (submit_all(hc, g, reqs, &r) != 0) return r;
    /* 3. list it for the main loop; the connection's end releases it */
    gen_registry_add(hc->srv, g);
    hc->ud = g;
    hc->on_complete = on_complete;
    LOG_DEBUG("gen", "%s: %d choice(s), prompt %d tokens, stream %d", hc->request_id, g->n_choices,
              g->prompt_len[0], g->stream);
    /* 4. answer */
    if (g->stream) return start_stream(hc, g);
    hc->on_resume = nonstream_step;
    return nonstream_step(hc);
}

enum MHD_Result api_chat_completions(struct http_conn *hc) { return generate(hc, GEN_CHAT); }
enum MHD_Result api_completions(struct http_conn *hc) { return generate(hc, GEN_COMPLETIONS); }
enum MHD_Result api_responses(struct http_conn *hc) { return generate(hc, GEN_RESPONSES); }
