/* gen_registry.c - the live generation requests, for the main loop.
 *
 * What: every generation request that was submitted to the engine is listed in srv->gens from
 * then until its connection completes. The main loop counts them while draining
 * (api_gen_count), cancels them all at the drain deadline or on a second SIGINT
 * (api_gen_cancel_all) and, on a timer, probes the connections of requests waiting for the
 * engine (suspended, so MHD is not watching them): a peer that closed its end gets its engine
 * requests cancelled at once and its connection resumed, so MHD closes it (api_gen_probe).
 * Threads: add and remove on HTTP threads, the rest on the main thread; the list is under
 * srv->gens_mu, each gen's fields under its g->mu, always taken in that order. eng_cancel is
 * called with g->mu released.
 * Ownership: the list does not hold a reference: a gen leaves it (gen_registry_remove, on the
 * HTTP side) before its HTTP reference is dropped.
 */
#include "gen.h"

#include "common/log.h"

#include <errno.h>
#include <sys/socket.h>

void gen_registry_add(struct srv *s, struct gen *g)
{
    pthread_mutex_lock(&s->gens_mu);
    g->next = s->gens;
    if (s->gens) s->gens->prev = g;
    s->gens = g;
    s->n_gens++;
    pthread_mutex_unlock(&s->gens_mu);
}

void gen_registry_remove(struct srv *s, struct gen *g)
{
    pthread_mutex_lock(&s->gens_mu);
    if (g->prev) g->prev->next = g->next;
    else if (s->gens == g) s->gens = g->next;
    if (g->next) g->next->prev = g->prev;
    g->next = g->prev = NULL;
    s->n_gens--;
    pthread_mutex_unlock(&s->gens_mu);
}

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
        uint64_t ids[GEN_MAX_CHOICES];
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
                MHD_resume_connection(g->conn); /* lets MHD close it and run on_complete */
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
