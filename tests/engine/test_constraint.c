/* test_constraint.c - the eng_request constraint hook (engine.h) on the scheduler, fake model.
 *
 * Constraints here are small stand-ins for constrain.h: a "script" that allows exactly one
 * token per step and then only EOS, a "parity" one that allows the even ids (so sampling still
 * chooses), and one that allows nothing. Properties:
 *   - the output is exactly what the constraint allows; EOS ends the request even with
 *     ignore_eos, and a min_tokens larger than the script does not ban the only allowed token;
 *   - accept() sees every generated token exactly once, in order, also when a tiny KV cache
 *     forces preemption and recompute (generated tokens are never re-sampled);
 *   - destroy() runs exactly once per submitted request: at the end, on cancellation, on
 *     shutdown; never when eng_submit fails (the caller still owns it);
 *   - a constraint that allows nothing ends the request with ENG_FINISH_ERROR.
 */
#include "../check.h"

#include "fake_model.h"

#include <math.h>
#include <pthread.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

#define MAXG 256

struct con {
    int kind; /* 0 script, 1 parity, 2 nothing */
    int32_t script[32];
    int n_script;
    int pos; /* accepted tokens */
    int32_t accepted[MAXG];
    int n_destroy; /* under mu */
    int rejected;
};

struct res {
    int32_t toks[MAXG];
    int n, n_done;
    enum eng_finish fin;
    int n_generated;
};

static void con_mask(void *ud, float *logits, int n)
{
    struct con *c = ud;
    for (int i = 0; i < n; i++) {
        int ok = 0;
        if (c->kind == 0) ok = c->pos < c->n_script ? i == c->script[c->pos] : i == FAKE_EOS;
        else if (c->kind == 1) ok = i % 2 == 0 || i == FAKE_EOS;
        if (!ok) logits[i] = -INFINITY;
    }
}

static int con_accept(void *ud, int32_t tok)
{
    struct con *c = ud;
    int ok = c->kind == 0   ? tok == (c->pos < c->n_script ? c->script[c->pos] : FAKE_EOS)
             : c->kind == 1 ? (tok % 2 == 0 || tok == FAKE_EOS)
                            : 0;
    if (!ok) {
        c->rejected++;
        return ERR_INVAL;
    }
    if (c->pos < MAXG) c->accepted[c->pos] = tok;
    c->pos++;
    return 0;
}

static void con_destroy(void *ud)
{
    struct con *c = ud;
    pthread_mutex_lock(&mu);
    c->n_destroy++;
    pthread_mutex_unlock(&mu);
}

static void on_event(void *ud, const struct eng_event *ev)
{
    struct res *r = ud;
    pthread_mutex_lock(&mu);
    if (ev->kind == ENG_EV_TOKEN) {
        if (r->n < MAXG) r->toks[r->n] = ev->token;
        r->n++;
    } else {
        r->n_done++;
        r->fin = ev->finish;
        r->n_generated = ev->n_generated;
    }
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void wait_done(struct res *r, int n)
{
    pthread_mutex_lock(&mu);
    for (int i = 0; i < n; i++)
        while (r[i].n_done == 0) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

static struct engine *make_engine(struct fake *f, int max_running, int blocks, int bt)
{
    struct sched_params p;
    memset(&p, 0, sizeof p);
    p.max_running = max_running;
    p.max_queued = 1000;
    p.max_batch_tokens = 256;
    p.kv_blocks = blocks;
    p.kv_block_tokens = bt;
    p.prefix_cache = 1;
    p.context = blocks * bt < 1024 ? blocks * bt : 1024;
    p.eos_id = FAKE_EOS;
    snprintf(p.model_name, sizeof p.model_name, "fake");
    p.placement = "cpu";
    struct sched_backend be = fake_backend(f);
    struct engine *e = NULL;
    char err[ERR_LEN];
    CHECK(eng_create_backend(&p, &be, &e, err) == 0);
    return e;
}

static void request(struct eng_request *q, struct res *r, struct con *c, unsigned *rs, int n_prompt,
                    int max_tokens)
{
    memset(q, 0, sizeof *q);
    q->n_prompt = n_prompt;
    q->prompt = malloc((size_t)n_prompt * sizeof(int32_t));
    CHECK(q->prompt);
    for (int i = 0; i < n_prompt; i++) q->prompt[i] = 4 + rand_r(rs) % (FAKE_VALID - 4);
    q->samp.temperature = 1;
    q->samp.top_p = 1;
    q->samp.repetition_penalty = 1;
    q->samp.seed = rand_r(rs);
    q->max_tokens = max_tokens;
    q->on_event = on_event;
    q->ud = r;
    q->constraint = (struct eng_constraint){c, con_mask, con_accept, con_destroy};
}

int main(void)
{
    unsigned rs = (unsigned)check_seed();
    char err[ERR_LEN];

    /* 1. a script under ignore_eos and a min_tokens past its end: script, EOS, STOP */
    {
        struct fake f;
        struct engine *e = make_engine(&f, 4, 64, 16);
        static struct con c;
        static struct res r;
        memset(&c, 0, sizeof c);
        memset(&r, 0, sizeof r);
        c.kind = 0;
        c.n_script = 10;
        for (int i = 0; i < c.n_script; i++) c.script[i] = 4 + rand_r(&rs) % (FAKE_VALID - 4);
        struct eng_request q;
        request(&q, &r, &c, &rs, 5, 100);
        q.ignore_eos = 1;
        q.min_tokens = 50;
        CHECK(eng_submit(e, &q, err) == 0);
        CHECK(q.constraint.mask == NULL); /* taken by the engine */
        wait_done(&r, 1);
        CHECK(r.fin == ENG_FINISH_STOP);
        CHECK(r.n == c.n_script + 1);
        for (int i = 0; i < c.n_script; i++) CHECK(r.toks[i] == c.script[i]);
        CHECK(r.toks[c.n_script] == FAKE_EOS);
        CHECK(c.pos == c.n_script + 1 && c.rejected == 0);
        CHECK(c.n_destroy == 1);
        eng_destroy(e);
    }

    /* 2. many parity constraints, a KV cache small enough to preempt: every generated token is
     * accepted once, in order; destroy once each */
    {
        struct fake f;
        struct engine *e = make_engine(&f, 8, 24, 8);
        enum { N = 24 };
        static struct con c[N];
        static struct res r[N];
        memset(c, 0, sizeof c);
        memset(r, 0, sizeof r);
        for (int i = 0; i < N; i++) {
            c[i].kind = 1;
            struct eng_request q;
            request(&q, &r[i], &c[i], &rs, 1 + rand_r(&rs) % 30, 20 + rand_r(&rs) % 40);
            q.ignore_eos = i % 2;
            CHECK(eng_submit(e, &q, err) == 0);
        }
        wait_done(r, N);
        struct eng_stats st;
        eng_stats(e, &st);
        for (int i = 0; i < N; i++) {
            CHECK(r[i].fin == ENG_FINISH_STOP || r[i].fin == ENG_FINISH_LENGTH);
            CHECK(c[i].rejected == 0);
            CHECK(c[i].pos == r[i].n && r[i].n == r[i].n_generated);
            for (int k = 0; k < r[i].n && k < MAXG; k++) {
                CHECK(r[i].toks[k] == c[i].accepted[k]);
                CHECK(r[i].toks[k] % 2 == 0 || r[i].toks[k] == FAKE_EOS);
            }
            CHECK(c[i].n_destroy == 1);
        }
        fprintf(stderr, "parity: %llu preemptions\n", (unsigned long long)st.preemptions_total);
        eng_destroy(e);
    }

    /* 3. cancellation, shutdown with waiting requests, a failed submit */
    {
        struct fake f;
        struct engine *e = make_engine(&f, 1, 64, 16);
        atomic_store(&f.delay_us, 2000);
        enum { N = 4 };
        static struct con c[N];
        static struct res r[N];
        memset(c, 0, sizeof c);
        memset(r, 0, sizeof r);
        uint64_t ids[N];
        for (int i = 0; i < N; i++) {
            c[i].kind = 1;
            struct eng_request q;
            request(&q, &r[i], &c[i], &rs, 4, 200);
            q.ignore_eos = 1;
            CHECK(eng_submit(e, &q, err) == 0);
            ids[i] = q.id;
        }
        eng_cancel(e, ids[0]);
        wait_done(r, 1);
        CHECK(r[0].fin == ENG_FINISH_CANCELLED && c[0].n_destroy == 1);

        static struct con cf;
        static struct res rf;
        memset(&cf, 0, sizeof cf);
        struct eng_request q;
        request(&q, &rf, &cf, &rs, 4, 10);
        q.max_tokens = 0; /* invalid: the caller keeps the constraint */
        CHECK(eng_submit(e, &q, err) == ERR_INVAL);
        CHECK(q.constraint.ud == &cf && cf.n_destroy == 0);
        free(q.prompt);

        eng_destroy(e); /* running and waiting ones are cancelled */
        for (int i = 1; i < N; i++) CHECK(r[i].n_done == 1 && c[i].n_destroy == 1);
    }

    /* 4. a constraint that allows nothing: the request fails, nothing is reported as text */
    {
        struct fake f;
        struct engine *e = make_engine(&f, 2, 64, 16);
        static struct con c;
        static struct res r;
        memset(&c, 0, sizeof c);
        memset(&r, 0, sizeof r);
        c.kind = 2;
        struct eng_request q;
        request(&q, &r, &c, &rs, 3, 10);
        CHECK(eng_submit(e, &q, err) == 0);
        wait_done(&r, 1);
        CHECK(r.fin == ENG_FINISH_ERROR && r.n == 0 && c.rejected == 1 && c.n_destroy == 1);
        CHECK(eng_debug_check(e, err) == 0);
        eng_destroy(e);
    }
    return 0;
}
