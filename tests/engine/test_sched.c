/* test_sched.c - the engine thread and scheduler over the fake model (fake_model.h).
 *
 * Every case goes through the public API (eng_submit / eng_cancel / events) of an engine built
 * with eng_create_backend, and ends with eng_debug_check (block accounting, no leaks).
 * Properties: many concurrent requests (greedy and seeded sampling, penalties, stop ids,
 * min_tokens, EOS) give exactly what each gives alone; chunked prefill; a tiny KV cache forces
 * preemption and recompute with identical output; prefix reuse gives identical output to no
 * reuse and is reported; cancellation (running and waiting), queue-full, context overflow, bad
 * input, priority order, drain, shutdown and a failing forward each deliver exactly one DONE.
 */
#include "../check.h"

#include "fake_model.h"

#include <pthread.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int start_counter;

#define MAXG 512

struct res {
    int32_t toks[MAXG];
    int n;
    int n_done;
    enum eng_finish fin;
    int token_stop_flag; /* a TOKEN event carried finish = STOP */
    int err;
    int n_cached, n_generated, n_prompt;
    int start_order; /* order of the first token among all requests */
    uint64_t id;     /* the engine's id (submit_spec) */
    float logprob0;
    int n_top0;
};

static void on_event(void *ud, const struct eng_event *ev)
{
    struct res *r = ud;
    pthread_mutex_lock(&mu);
    if (ev->kind == ENG_EV_TOKEN) {
        if (r->n == 0) r->start_order = ++start_counter;
        if (r->n == 0) {
            r->logprob0 = ev->logprob;
            r->n_top0 = ev->n_top;
        }
        if (r->n < MAXG) r->toks[r->n] = ev->token;
        r->n++;
        if (ev->finish == ENG_FINISH_STOP) r->token_stop_flag++;
        CHECK(r->n_done == 0);
    } else {
        r->n_done++;
        r->fin = ev->finish;
        r->err = ev->err;
        r->n_cached = ev->n_cached;
        r->n_generated = ev->n_generated;
        r->n_prompt = ev->n_prompt;
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

static void wait_tokens(struct res *r, int n)
{
    pthread_mutex_lock(&mu);
    while (r->n < n && r->n_done == 0) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

static struct sched_params params(int max_running, int max_batch, int blocks, int bt)
{
    struct sched_params p;
    memset(&p, 0, sizeof p);
    p.max_running = max_running;
    p.max_queued = 1000;
    p.max_batch_tokens = max_batch;
    p.kv_blocks = blocks;
    p.kv_block_tokens = bt;
    p.prefix_cache = 1;
    p.context = 1024;
    p.bos_id = 0;
    p.eos_id = FAKE_EOS;
    snprintf(p.model_name, sizeof p.model_name, "fake");
    p.placement = "cpu";
    return p;
}

static void check_engine(struct engine *e)
{
    char err[ERR_LEN];
    if (eng_debug_check(e, err) != 0) {
        fprintf(stderr, "engine accounting: %s\n", err);
        exit(1);
    }
}

/* A request description that can be submitted many times. */
struct spec {
    int32_t prompt[600];
    int n_prompt;
    struct eng_request req; /* template: prompt/bias pointers unset */
    int32_t bias_id;
    float bias_val;
    int has_bias;
};

static void spec_random(struct spec *s, unsigned *rs, int shared_prefix_len, const int32_t *prefix)
{
    memset(s, 0, sizeof *s);
    s->n_prompt = 1 + rand_r(rs) % 120;
    if (shared_prefix_len) s->n_prompt = shared_prefix_len + 1 + rand_r(rs) % 40;
    for (int i = 0; i < s->n_prompt; i++)
        s->prompt[i] = i < shared_prefix_len ? prefix[i] : rand_r(rs) % FAKE_VOCAB;
    struct eng_request *q = &s->req;
    q->max_tokens = 1 + rand_r(rs) % 60;
    q->samp.top_p = 1.0f;
    q->samp.repetition_penalty = 1.0f;
    q->samp.temperature = 0.0f;
    q->samp.seed = (uint64_t)rand_r(rs);
    int kind = rand_r(rs) % 5;
    if (kind >= 1) q->samp.temperature = 0.5f + (float)(rand_r(rs) % 100) / 100.0f;
    if (kind == 2) {
        q->samp.top_k = 1 + rand_r(rs) % 10;
        q->samp.top_p = 0.9f;
        q->samp.min_p = 0.05f;
    }
    if (kind == 3) {
        q->samp.presence_penalty = 0.5f;
        q->samp.frequency_penalty = 0.3f;
        q->samp.repetition_penalty = 1.3f;
        s->has_bias = 1;
        s->bias_id = rand_r(rs) % FAKE_VALID;
        s->bias_val = 2.0f;
    }
    q->ignore_eos = rand_r(rs) % 3 == 0;
    if (rand_r(rs) % 4 == 0) q->min_tokens = rand_r(rs) % 10;
    if (rand_r(rs) % 4 == 0) {
        q->n_stop_ids = 1;
        q->stop_ids[0] = rand_r(rs) % FAKE_VALID;
    }
    q->samp.logprobs = 1;
    q->samp.top_logprobs = rand_r(rs) % 4;
}

static int submit_spec(struct engine *e, const struct spec *s, struct res *r, char *err)
{
    struct eng_request q = s->req;
    q.prompt = malloc(sizeof(int32_t) * (size_t)s->n_prompt);
    memcpy(q.prompt, s->prompt, sizeof(int32_t) * (size_t)s->n_prompt);
    q.n_prompt = s->n_prompt;
    if (s->has_bias) {
        q.samp.n_logit_bias = 1;
        q.samp.logit_bias_ids = malloc(sizeof(int32_t));
        q.samp.logit_bias_vals = malloc(sizeof(float));
        q.samp.logit_bias_ids[0] = s->bias_id;
        q.samp.logit_bias_vals[0] = s->bias_val;
    }
    q.on_event = on_event;
    q.ud = r;
    memset(r, 0, sizeof *r);
    int rc = eng_submit(e, &q, err);
    if (rc == 0) r->id = q.id;
    if (rc != 0) {
        free(q.prompt);
        free(q.samp.logit_bias_ids);
        free(q.samp.logit_bias_vals);
    }
    return rc;
}

static void check_against_ref(const struct spec *s, const struct res *r, int context)
{
    int32_t ref[MAXG];
    enum eng_finish fin = ENG_FINISH_NONE;
    struct eng_request q = s->req;
    q.n_prompt = s->n_prompt;
    int32_t bid = s->bias_id;
    float bval = s->bias_val;
    if (s->has_bias) {
        q.samp.n_logit_bias = 1;
        q.samp.logit_bias_ids = &bid;
        q.samp.logit_bias_vals = &bval;
    }
    int n = fake_ref_generate(&q, s->prompt, context, ref, MAXG, &fin);
    CHECK_EQ(r->n_done, 1);
    CHECK_EQ(r->fin, fin);
    CHECK_EQ(r->n, n);
    CHECK_EQ(r->n_generated, n);
    CHECK_EQ(r->n_prompt, s->n_prompt);
    for (int i = 0; i < n; i++) {
        if (r->toks[i] != ref[i]) fprintf(stderr, "token %d differs\n", i);
        CHECK_EQ(r->toks[i], ref[i]);
        CHECK(r->toks[i] < FAKE_VALID);
    }
    CHECK_EQ(r->token_stop_flag, fin == ENG_FINISH_STOP ? 1 : 0);
}

/* Run all specs concurrently on an engine with the given shape; check each against its
 * reference; return the engine's stats. */
static int token_delay_us;                      /* fake cost per batch token in run_all */
static int layered;                             /* run_all: the fake backend runs layered passes */
static long last_passes, last_forwards_in_pass; /* of the last run_all */

static struct eng_stats run_all(const struct spec *specs, int n, struct sched_params p)
{
    struct fake f;
    struct sched_backend be = layered ? fake_backend_layered(&f) : fake_backend(&f);
    atomic_store(&f.delay_token_us, token_delay_us);
    struct engine *e;
    char err[ERR_LEN];
    CHECK_EQ(eng_create_backend(&p, &be, &e, err), 0);
    struct res *r = calloc((size_t)n, sizeof *r);
    for (int i = 0; i < n; i++) {
        if (submit_spec(e, &specs[i], &r[i], err) != 0) {
            fprintf(stderr, "submit %d: %s\n", i, err);
            exit(1);
        }
    }
    wait_done(r, n);
    check_engine(e);
    for (int i = 0; i < n; i++) check_against_ref(&specs[i], &r[i], p.context);
    struct eng_stats st;
    eng_stats(e, &st);
    CHECK_EQ(st.running, 0);
    CHECK_EQ(st.waiting, 0);
    uint64_t gen = 0, sum = 0;
    for (int i = 0; i < n; i++) gen += (uint64_t)r[i].n;
    CHECK_EQ(st.generation_tokens_total, gen);
    for (int i = 0; i < ENG_ITER_BUCKETS; i++) sum += st.iter_tokens_bucket[i];
    CHECK_EQ(sum, st.iter_tokens_count);
    CHECK_EQ(st.iter_tokens_sum, (uint64_t)atomic_load(&f.n_tokens));
    CHECK(st.steps > 0);
    CHECK(n < 2 || atomic_load(&f.max_seqs_in_batch) > 1 || p.max_running == 1);
    last_passes = atomic_load(&f.n_pass);
    last_forwards_in_pass = atomic_load(&f.max_forwards_in_pass);
    eng_destroy(e);
    free(r);
    return st;
}

/* A request that decodes for a long time (ignore_eos, greedy). */
static void spec_long_decode(struct spec *s, unsigned *rs, int n_prompt, int max_tokens)
{
    memset(s, 0, sizeof *s);
    s->n_prompt = n_prompt;
    for (int i = 0; i < n_prompt; i++) s->prompt[i] = rand_r(rs) % FAKE_VOCAB;
    s->req.max_tokens = max_tokens;
    s->req.ignore_eos = 1;
    s->req.samp.top_p = 1.0f;
    s->req.samp.repetition_penalty = 1.0f;
    s->req.samp.seed = (uint64_t)rand_r(rs);
}

/* Layered passes step by step: a long prompt arriving while a stream decodes runs as a pass with
 * a decode step between its two layers, gives its reference output, and a pass cancelled in
 * flight is aborted with its blocks freed. */
static void layered_pass_checks(unsigned *rs)
{
    char err[ERR_LEN];
    struct fake f;
    struct sched_backend be = fake_backend_layered(&f);
    atomic_store(&f.delay_us, 500);      /* a decode step: ~0.5 ms */
    atomic_store(&f.delay_token_us, 50); /* a pass layer of 256 tokens: ~6 ms, so k = 1 */
    struct sched_params p = params(4, 256, 512, 16);
    p.prefill_step_ratio = 2.0;
    p.layered_prefill_tokens = 64;
    struct engine *e;
    CHECK_EQ(eng_create_backend(&p, &be, &e, err), 0);
    static struct spec a, b, c;
    static struct res ra, rb, rc;
    spec_long_decode(&a, rs, 5, 400);
    spec_long_decode(&b, rs, 300, 5);
    spec_long_decode(&c, rs, 300, 5);
    CHECK_EQ(submit_spec(e, &a, &ra, err), 0);
    wait_tokens(&ra, 3);
    CHECK_EQ(submit_spec(e, &b, &rb, err), 0);
    wait_done(&rb, 1);
    check_against_ref(&b, &rb, p.context);
    CHECK_EQ(atomic_load(&f.n_pass), 1); /* 256 tokens as a pass, the last 44 paced */
    CHECK(atomic_load(&f.max_forwards_in_pass) >= 1);
    CHECK_EQ(ra.n_done, 0); /* a still decoding: c's pass starts beside it */
    atomic_store(&f.hold_pass, 1);
    CHECK_EQ(submit_spec(e, &c, &rc, err), 0);
    while (atomic_load(&f.n_pass) < 2) usleep(100);
    eng_cancel(e, rc.id);
    atomic_store(&f.hold_pass, 0);
    wait_done(&rc, 1);
    CHECK_EQ(rc.fin, ENG_FINISH_CANCELLED);
    CHECK_EQ(atomic_load(&f.n_pass_abort), 1);
    check_engine(e);
    wait_done(&ra, 1);
    check_against_ref(&a, &ra, p.context);
    check_engine(e);
    eng_destroy(e);
}

int main(void)
{
    unsigned long long seed = check_seed();
    unsigned rs = (unsigned)seed;
    char err[ERR_LEN];
    enum { N = 40 };
    static struct spec specs[N];
    for (int i = 0; i < N; i++) spec_random(&specs[i], &rs, 0, NULL);

    /* 1. concurrency: alone (max_running 1) and together give the reference output */
    {
        run_all(specs, N, params(1, 64, 512, 16));
        struct eng_stats st = run_all(specs, N, params(8, 64, 512, 16));
        CHECK_EQ(st.preemptions_total, 0);
        run_all(specs, N, params(16, 16, 512, 4));    /* tiny budget: lots of chunking */
        run_all(specs, N, params(32, 2048, 1024, 1)); /* block = 1 token */
    }

    /* 1a. rows sampled on 3 extra threads: same outputs */
    {
        struct sched_params p = params(16, 64, 512, 16);
        p.sample_threads = 3;
        p.sample_min_work = 0;
        run_all(specs, N, p);
    }

    /* 1b. prefill pacing on (it only changes chunk sizes): same outputs */
    {
        struct sched_params p = params(8, 256, 512, 16);
        p.prefill_step_ratio = 1.5;
        token_delay_us = 20;
        run_all(specs, N, p);
        token_delay_us = 0;
    }

    /* 1c. layered prefill (long prompts while others decode): same outputs, passes ran, and
     * decode steps ran in the middle of passes; with preemption too */
    {
        struct sched_params p = params(8, 256, 512, 16);
        p.prefill_step_ratio = 1.5;
        p.layered_prefill_tokens = 32;
        token_delay_us = 20;
        layered = 1;
        run_all(specs, N, p);
        CHECK(last_passes > 0);
        CHECK(last_forwards_in_pass > 0);
        run_all(specs, N, params(8, 256, 512, 16)); /* pacing off: no passes */
        CHECK_EQ(last_passes, 0);
        p = params(8, 256, 24, 8);
        p.prefill_step_ratio = 1.5;
        p.layered_prefill_tokens = 32;
        struct eng_stats st = run_all(specs, N, p);
        CHECK(st.preemptions_total > 0);
        layered = 0;
        token_delay_us = 0;
    }
    layered_pass_checks(&rs);

    /* 2. preemption: a KV cache of 24 blocks x 8 tokens = 192 tokens for 8 running */
    {
        struct eng_stats st = run_all(specs, N, params(8, 64, 24, 8));
        CHECK(st.preemptions_total > 0);
        struct sched_params p = params(8, 64, 24, 8);
        p.prefix_cache = 0;
        st = run_all(specs, N, p);
        CHECK(st.preemptions_total > 0);
    }

    /* 3. prefix reuse: requests sharing a 200-token prefix, sequentially and concurrently */
    {
        int32_t prefix[200];
        for (int i = 0; i < 200; i++) prefix[i] = rand_r(&rs) % FAKE_VOCAB;
        enum { M = 12 };
        static struct spec ps[M];
        for (int i = 0; i < M; i++) spec_random(&ps[i], &rs, 200, prefix);
        struct fake f;
        struct sched_backend be = fake_backend(&f);
        struct engine *e;
        struct sched_params p = params(4, 64, 256, 16);
        CHECK_EQ(eng_create_backend(&p, &be, &e, err), 0);
        static struct res r[M];
        for (int i = 0; i < M; i++) {
            CHECK_EQ(submit_spec(e, &ps[i], &r[i], err), 0);
            wait_done(&r[i], 1);
            check_against_ref(&ps[i], &r[i], p.context);
            if (i > 0) CHECK(r[i].n_cached >= 192); /* 12 full blocks of the prefix */
            check_engine(e);
        }
        /* a multi-turn continuation: prompt + its own answer + more reuses beyond the prefix */
        struct spec turn2 = ps[0];
        int n = turn2.n_prompt;
        for (int i = 0; i < r[0].n && n < 560; i++) turn2.prompt[n++] = r[0].toks[i];
        for (int i = 0; i < 30; i++) turn2.prompt[n++] = rand_r(&rs) % FAKE_VOCAB;
        turn2.n_prompt = n;
        struct res r2;
        CHECK_EQ(submit_spec(e, &turn2, &r2, err), 0);
        wait_done(&r2, 1);
        check_against_ref(&turn2, &r2, p.context);
        CHECK(r2.n_cached >= ((ps[0].n_prompt + r[0].n - 1) / 16) * 16 - 16);
        struct eng_stats st;
        eng_stats(e, &st);
        CHECK(st.prefix_cache_hits > 0);
        CHECK(st.prefix_cache_queries >= st.prefix_cache_hits);
        check_engine(e);
        eng_destroy(e);
        /* concurrently, and with the cache off: the same outputs */
        run_all(ps, M, params(4, 64, 256, 16));
        p.prefix_cache = 0;
        st = run_all(ps, M, p);
        CHECK_EQ(st.prefix_cache_hits, 0);
    }

    /* 4. cancellation of running and waiting requests; shutdown with requests in flight */
    {
        struct fake f;
        struct sched_backend be = fake_backend(&f);
        atomic_store(&f.delay_us, 500);
        struct engine *e;
        struct sched_params p = params(2, 64, 256, 16);
        CHECK_EQ(eng_create_backend(&p, &be, &e, err), 0);
        static struct spec ls[6];
        static struct res r[6];
        uint64_t ids[6];
        for (int i = 0; i < 6; i++) {
            spec_random(&ls[i], &rs, 0, NULL);
            ls[i].req.max_tokens = 100000;
            ls[i].req.ignore_eos = 1;
            ls[i].req.n_stop_ids = 0;
            struct eng_request q = ls[i].req;
            q.n_prompt = ls[i].n_prompt;
            q.prompt = malloc(sizeof(int32_t) * (size_t)q.n_prompt);
            memcpy(q.prompt, ls[i].prompt, sizeof(int32_t) * (size_t)q.n_prompt);
            q.samp.n_logit_bias = 0;
            q.on_event = on_event;
            q.ud = &r[i];
            CHECK_EQ(eng_submit(e, &q, err), 0);
            CHECK(q.id != 0);
            ids[i] = q.id;
        }
        wait_tokens(&r[0], 3);
        wait_tokens(&r[1], 3);
        eng_cancel(e, ids[0]); /* running */
        eng_cancel(e, ids[4]); /* waiting */
        eng_cancel(e, 99999);  /* unknown: ignored */
        wait_done(&r[0], 1);
        wait_done(&r[4], 1);
        CHECK_EQ(r[0].fin, ENG_FINISH_CANCELLED);
        CHECK_EQ(r[4].fin, ENG_FINISH_CANCELLED);
        CHECK_EQ(r[4].n, 0);
        check_engine(e);
        eng_cancel(e, ids[0]); /* finished: ignored */
        /* drain: no new requests, running ones continue */
        eng_drain(e);
        struct res rx;
        CHECK_EQ(submit_spec(e, &specs[0], &rx, err), ERR_UNAVAILABLE);
        /* shutdown: the rest get exactly one DONE, CANCELLED */
        eng_destroy(e);
        for (int i = 0; i < 6; i++) {
            CHECK_EQ(r[i].n_done, 1);
            CHECK_EQ(r[i].fin, ENG_FINISH_CANCELLED);
        }
    }

    /* 5. queue full, context overflow, bad input */
    {
        struct fake f;
        struct sched_backend be = fake_backend(&f);
        atomic_store(&f.delay_us, 300);
        struct engine *e;
        struct sched_params p = params(2, 64, 64, 16);
        p.max_queued = 3;
        p.context = 300;
        CHECK_EQ(eng_create_backend(&p, &be, &e, err), 0);
        static struct spec ls[6];
        static struct res r[6];
        int accepted = 0, full = 0;
        uint64_t ids[6];
        for (int i = 0; i < 6; i++) {
            spec_random(&ls[i], &rs, 0, NULL);
            ls[i].req.max_tokens = 100000;
            ls[i].req.ignore_eos = 1;
            ls[i].req.n_stop_ids = 0;
            ls[i].has_bias = 0;
            struct eng_request q = ls[i].req;
            q.n_prompt = ls[i].n_prompt;
            q.prompt = malloc(sizeof(int32_t) * (size_t)q.n_prompt);
            memcpy(q.prompt, ls[i].prompt, sizeof(int32_t) * (size_t)q.n_prompt);
            q.on_event = on_event;
            q.ud = &r[i];
            int rc = eng_submit(e, &q, err);
            if (rc == 0) {
                ids[accepted++] = q.id;
            } else {
                CHECK_EQ(rc, ERR_QUEUE_FULL);
                CHECK(q.prompt != NULL); /* still the caller's */
                free(q.prompt);
                full++;
            }
        }
        CHECK_EQ(accepted, 5); /* 2 running slots + 3 queued */
        CHECK_EQ(full, 1);
        /* context: prompt + 1 > 300 */
        struct spec big;
        memset(&big, 0, sizeof big);
        big.n_prompt = 300;
        big.req = ls[0].req;
        struct res rb;
        CHECK_EQ(submit_spec(e, &big, &rb, err), ERR_CTX_OVERFLOW);
        CHECK_CONTAINS(err, "300");
        big.n_prompt = 0;
        CHECK_EQ(submit_spec(e, &big, &rb, err), ERR_INVAL);
        big.n_prompt = 5;
        big.prompt[2] = FAKE_VOCAB;
        CHECK_EQ(submit_spec(e, &big, &rb, err), ERR_INVAL);
        big.prompt[2] = 1;
        big.req.max_tokens = 0;
        CHECK_EQ(submit_spec(e, &big, &rb, err), ERR_INVAL);
        big.req.max_tokens = 5;
        big.req.samp.top_p = 2.0f;
        CHECK_EQ(submit_spec(e, &big, &rb, err), ERR_INVAL);
        /* requests run until the context end: finish LENGTH at 300 tokens total */
        for (int i = 0; i < accepted; i++) eng_cancel(e, ids[i]);
        wait_done(r, 5);
        check_engine(e);
        big.req = ls[0].req;
        big.req.max_tokens = 100000;
        big.req.ignore_eos = 1;
        big.n_prompt = 290;
        for (int i = 0; i < 290; i++) big.prompt[i] = i % FAKE_VALID;
        atomic_store(&f.delay_us, 0);
        CHECK_EQ(submit_spec(e, &big, &rb, err), 0);
        wait_done(&rb, 1);
        CHECK_EQ(rb.fin, ENG_FINISH_LENGTH);
        CHECK_EQ(rb.n, 10);
        check_against_ref(&big, &rb, 300);
        check_engine(e);
        eng_destroy(e);
    }

    /* 6. priority: lower first, FCFS among equals */
    {
        struct fake f;
        struct sched_backend be = fake_backend(&f);
        atomic_store(&f.delay_us, 2000);
        struct engine *e;
        struct sched_params p = params(1, 64, 64, 16);
        CHECK_EQ(eng_create_backend(&p, &be, &e, err), 0);
        static struct spec ls[5];
        static struct res r[5];
        int prio[5] = {0, 5, 0, 5, -1};
        for (int i = 0; i < 5; i++) {
            spec_random(&ls[i], &rs, 0, NULL);
            ls[i].req.max_tokens = i == 0 ? 8 : 3;
            ls[i].req.ignore_eos = 1;
            ls[i].req.n_stop_ids = 0;
            ls[i].req.priority = prio[i];
            CHECK_EQ(submit_spec(e, &ls[i], &r[i], err), 0);
            if (i == 0) { /* the first one is running and stays so until all are queued: at
                           * most the forward in flight completes before the hold */
                wait_tokens(&r[0], 1);
                atomic_store(&f.hold, 1);
            }
        }
        atomic_store(&f.hold, 0);
        wait_done(r, 5);
        CHECK_EQ(r[0].start_order < r[4].start_order, 1);
        CHECK(r[4].start_order < r[2].start_order);
        CHECK(r[2].start_order < r[1].start_order);
        CHECK(r[1].start_order < r[3].start_order);
        check_engine(e);
        eng_destroy(e);
    }

    /* 7. a failing forward: every request gets DONE with ERROR, the engine refuses new ones */
    {
        struct fake f;
        struct sched_backend be = fake_backend(&f);
        struct engine *e;
        struct sched_params p = params(4, 64, 64, 16);
        CHECK_EQ(eng_create_backend(&p, &be, &e, err), 0);
        atomic_store(&f.fail_token, 63);
        static struct spec ls[3];
        static struct res r[3];
        int n_ok = 0;
        for (int i = 0; i < 3; i++) {
            spec_random(&ls[i], &rs, 0, NULL);
            ls[i].prompt[0] = 63;
            int rc = submit_spec(e, &ls[i], &r[n_ok], err);
            if (i == 0) CHECK_EQ(rc, 0);
            if (rc == 0) n_ok++;
            else CHECK_EQ(rc, ERR_UNAVAILABLE); /* the engine already failed */
        }
        wait_done(r, n_ok);
        for (int i = 0; i < n_ok; i++) CHECK_EQ(r[i].fin, ENG_FINISH_ERROR);
        struct eng_stats st;
        eng_stats(e, &st);
        CHECK(st.failed);
        struct res rx;
        CHECK_EQ(submit_spec(e, &specs[0], &rx, err), ERR_UNAVAILABLE);
        check_engine(e);
        eng_destroy(e);
    }

    /* 8. eng_info */
    {
        struct fake f;
        struct sched_backend be = fake_backend(&f);
        struct engine *e;
        struct sched_params p = params(4, 64, 10, 16);
        p.context = 0;
        CHECK_EQ(eng_create_backend(&p, &be, &e, err), 0);
        struct eng_info info;
        eng_info(e, &info);
        CHECK_EQ(info.context, 160); /* capped by the KV cache */
        CHECK_EQ(info.vocab_size, FAKE_VOCAB);
        CHECK_EQ(info.eos_id, FAKE_EOS);
        CHECK_STR(info.model_name, "fake");
        eng_destroy(e);
    }
    return 0;
}
