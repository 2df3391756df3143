/* gen_events.c - the handoff between the engine thread and a request's HTTP side.
 *
 * What: the engine thread reports each token and the end of each choice through gen_on_event,
 * which records latency metrics, appends a copy of the event to the gen's queue and resumes the
 * connection if the HTTP side had suspended it for lack of events. The HTTP side takes the
 * whole queue at once (gen_take_events: the queued array and the previous one swap places, so
 * neither side copies more than one event under the lock) and suspends the connection when
 * nothing is queued (gen_suspend_if_idle).
 * Threads: gen_on_event runs on the engine thread, everything else on the request's HTTP
 * thread; the queue, refs, conn, suspended and client_gone are under g->mu, held only for
 * these short steps. gen_on_event drops the reference of a finished engine request and frees
 * the gen when it was the last (gen.h).
 * Invariants: 0 <= q.n <= q.cap; every queued event names one of the gen's choices. An event
 * that cannot be queued is never dropped silently: q.oom fails the request.
 */
#include "gen.h"

#include "common/log.h"
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>

/* Append one event (under g->mu). 0, or ERR_NOMEM when the queue cannot grow. */
static int queue_push(struct gen_queue *q, int choice, const struct eng_event *ev)
{
    ASSERT(q->n <= q->cap);
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 16;
        struct gev *e = realloc(q->ev, cap * sizeof *e);
        if (!e) return ERR_NOMEM;
        q->ev = e;
        q->cap = cap;
    }
    q->ev[q->n].choice = choice;
    q->ev[q->n].ev = *ev;
    q->n++;
    return 0;
}

void gen_queue_fini(struct gen_queue *q)
{
    free(q->ev);
    free(q->work);
}

/* Latency and token metrics of one event (engine thread: first_token_seen, t_last and
 * n_done_engine are its own). */
static void observe(struct gen *g, struct choice *c, const struct eng_event *ev)
{
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
        metrics_finished(m, ev->finish == ENG_FINISH_STOP        ? MET_FIN_STOP
                            : ev->finish == ENG_FINISH_LENGTH    ? MET_FIN_LENGTH
                            : ev->finish == ENG_FINISH_CANCELLED ? MET_FIN_ABORT
                                                                 : MET_FIN_ERROR);
        if (++g->n_done_engine == g->n_choices) metrics_observe(m, MET_E2E, now - g->t_submit);
    }
}

void gen_on_event(void *ud, const struct eng_event *ev)
{
    struct choice *c = ud;
    struct gen *g = c->g;
    ASSERT(c->index >= 0 && c->index < g->n_choices && &g->ch[c->index] == c);
    observe(g, c, ev);

    pthread_mutex_lock(&g->mu);
    if (queue_push(&g->q, c->index, ev) != 0)
        g->q.oom = 1; /* never silently drop a token: the request fails instead */
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

size_t gen_take_events(struct gen *g, const struct gev **evs)
{
    struct gen_queue *q = &g->q;
    pthread_mutex_lock(&g->mu);
    ASSERT(q->n <= q->cap);
    struct gev *tmp = q->work;
    size_t tmp_cap = q->cap_work;
    size_t n = q->n;
    q->work = q->ev;
    q->cap_work = q->cap;
    q->ev = tmp;
    q->cap = tmp_cap;
    q->n = 0;
    if (q->oom && !g->err_code) {
        g->err_code = ERR_NOMEM;
        snprintf(g->err_msg, sizeof g->err_msg, "out of memory while queueing tokens");
    }
    pthread_mutex_unlock(&g->mu);
    *evs = q->work;
    return n;
}

int gen_suspend_if_idle(struct gen *g, struct MHD_Connection *conn)
{
    int done = 0;
    pthread_mutex_lock(&g->mu);
    if (g->q.n == 0 && !g->client_gone && !g->q.oom) {
        g->suspended = 1;
        MHD_suspend_connection(conn);
        done = 1;
    }
    pthread_mutex_unlock(&g->mu);
    return done;
}

int gen_client_gone(struct gen *g)
{
    pthread_mutex_lock(&g->mu);
    int gone = g->client_gone;
    pthread_mutex_unlock(&g->mu);
    return gone;
}
