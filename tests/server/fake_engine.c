/* fake_engine.c - a model-free implementation of engine/engine.h for daemon tests.
 *
 * What: one thread that "generates" deterministic text so every HTTP behaviour (errors, SSE,
 * stop strings, cancellation on disconnect, 429, drain, metrics) can be tested without weights.
 * The generated text (its "script") is chosen from the prompt:
 *   - the prompt, decoded without special tokens, contains "ECHO:" -> the text after the last
 *     "ECHO:" (so a test decides the exact output), up to a following "|OHCE" if there is one
 *     (so the template's text after the user message, e.g. R1's "<think>\n", is left out);
 *   - else temperature 0 -> "The quick brown fox jumps over the lazy dog.";
 *   - else "Sample <seed % 10000>: the quick brown fox ..." (same seed -> same text).
 * The script is tokenized with the model directory's tokenizer and emitted one token per step
 * (TANDEM_FAKE_STEP_MS, default 2 ms), then EOS (finish STOP) unless ignore_eos, in which case
 * the script repeats. max_tokens / the context give LENGTH; stop ids give STOP; eng_cancel
 * gives CANCELLED. Queue/running limits, priorities and counters behave like the real engine's
 * contract (max_running, max_queued -> ERR_QUEUE_FULL, eng_drain -> ERR_UNAVAILABLE).
 * Logprobs: the chosen token gets -0.25 - 0.01*i, alternatives are following ids.
 * Threads: callbacks run on the fake engine thread WITH its lock held (the harshest reading
 * of the contract: a callback that called back into eng_* would deadlock).
 * TANDEM_FAKE_LOAD_MS=N: eng_create takes N ms (to observe /health 503 while loading).
 * TANDEM_FAKE_FAIL_AFTER=N: after N steps the engine marks itself failed (sticky) and ends every
 * request with ENG_FINISH_ERROR.
 */
#include "../../common/err.h"
#include "../../config/cfg.h"
#include "../../engine/engine.h"
#include "../../engine/text/tok.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct freq {
    struct eng_request *r;  /* points at req below */
    struct eng_request req; /* the engine's copy (the caller keeps its struct) */
    struct freq *next;
    struct tok_ids script;
    size_t pos;
    int n_gen;
    int cancelled;
};

struct engine {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct freq *waiting, *running;
    int n_wait, n_run;
    int max_running, max_queued, context, kv_tokens;
    int draining, stop, failed;
    int step_ms, fail_after;
    uint64_t next_id;
    struct tok *tok;
    struct eng_stats st;
};

static void emit_done(struct engine *e, struct freq *q, enum eng_finish f, int err)
{
    struct eng_event ev = {0};
    ev.kind = ENG_EV_DONE;
    ev.finish = f;
    ev.err = err;
    ev.n_prompt = q->r->n_prompt;
    ev.n_generated = q->n_gen;
    /* the script ignores a constraint (no logits to mask); it is only owned and destroyed */
    if (q->r->constraint.destroy) q->r->constraint.destroy(q->r->constraint.ud);
    q->r->on_event(q->r->ud, &ev);
    (void)e;
    tok_ids_fini(&q->script);
    free(q->r->prompt);
    free(q->r->samp.logit_bias_ids);
    free(q->r->samp.logit_bias_vals);
    free(q);
}

static void make_script(struct engine *e, struct freq *q)
{
    struct sbuf text = {0};
    tok_decode(e->tok, q->r->prompt, (size_t)q->r->n_prompt, TOK_DEC_SKIP_SPECIAL, &text, NULL);
    const char *src = "The quick brown fox jumps over the lazy dog.";
    char buf[256];
    const char *m = NULL;
    for (const char *p = text.s; p && (p = strstr(p, "ECHO:")); p++) m = p;
    if (m) {
        src = m + 5;
    } else if (q->r->samp.temperature > 0) {
        snprintf(buf, sizeof buf, "Sample %llu: the quick brown fox jumps over the lazy dog.",
                 (unsigned long long)(q->r->samp.seed % 10000));
        src = buf;
    }
    const char *end = m ? strstr(src, "|OHCE") : NULL;
    tok_encode(e->tok, src, end ? (size_t)(end - src) : strlen(src), 0, &q->script, NULL);
    sbuf_fini(&text);
}

static int ctx_full(struct engine *e, struct freq *q)
{
    return q->r->n_prompt + q->n_gen >= e->context;
}

static void step(struct engine *e)
{
    int eos = tok_eos(e->tok);
    int used = 0;
    struct freq **pp = &e->running;
    while (*pp) {
        struct freq *q = *pp;
        struct eng_request *r = q->r;
        if (e->failed || q->cancelled) {
            *pp = q->next;
            e->n_run--;
            emit_done(e, q, e->failed ? ENG_FINISH_ERROR : ENG_FINISH_CANCELLED,
                      e->failed ? ERR_INTERNAL : 0);
            continue;
        }
        int32_t tok;
        int at_end = q->pos >= q->script.n;
        if (at_end && (r->ignore_eos || q->n_gen < r->min_tokens || eos < 0)) {
            q->pos = 0;
            at_end = q->script.n == 0;
        }
        tok = at_end ? eos : q->script.v[q->pos++];
        if (tok < 0) tok = 0;
        q->n_gen++;
        e->st.generation_tokens_total++;
        struct eng_event ev = {0};
        ev.kind = ENG_EV_TOKEN;
        ev.token = tok;
        ev.logprob = -0.25f - 0.01f * (float)q->n_gen;
        if (r->samp.logprobs) {
            ev.n_top = r->samp.top_logprobs;
            for (int i = 0; i < ev.n_top; i++) {
                ev.top_ids[i] = (tok + i) % tok_vocab_size(e->tok);
                ev.top_logprobs[i] = ev.logprob - (float)i;
            }
        }
        ev.n_prompt = r->n_prompt;
        ev.n_generated = q->n_gen;
        int stop_id = 0;
        for (int i = 0; i < r->n_stop_ids; i++) stop_id |= r->stop_ids[i] == tok;
        enum eng_finish f = ENG_FINISH_NONE;
        if ((tok == eos && !r->ignore_eos) || stop_id) f = ENG_FINISH_STOP;
        else if (q->n_gen >= r->max_tokens || ctx_full(e, q)) f = ENG_FINISH_LENGTH;
        ev.finish = f == ENG_FINISH_STOP ? f : ENG_FINISH_NONE;
        r->on_event(r->ud, &ev);
        if (f != ENG_FINISH_NONE) {
            *pp = q->next;
            e->n_run--;
            emit_done(e, q, f, 0);
            continue;
        }
        used += r->n_prompt + q->n_gen;
        pp = &q->next;
    }
    e->st.steps++;
    e->st.kv_usage = e->kv_tokens ? (double)used / e->kv_tokens : 0;
    e->st.iter_tokens_count++;
    e->st.iter_tokens_sum += (uint64_t)e->n_run;
    int b = 0; /* per-bucket counts, like the engine: le 1, 2, ..., then the rest */
    while (b < ENG_ITER_BUCKETS - 1 && e->n_run > (1 << b)) b++;
    e->st.iter_tokens_bucket[b]++;
}

static void *engine_main(void *arg)
{
    struct engine *e = arg;
    pthread_mutex_lock(&e->mu);
    while (!e->stop) {
        /* drop cancelled waiting requests, admit by priority (FCFS among equals) */
        struct freq **pp = &e->waiting;
        while (*pp) {
            struct freq *q = *pp;
            if (q->cancelled || e->failed) {
                *pp = q->next;
                e->n_wait--;
                emit_done(e, q, e->failed ? ENG_FINISH_ERROR : ENG_FINISH_CANCELLED,
                          e->failed ? ERR_INTERNAL : 0);
            } else {
                pp = &q->next;
            }
        }
        while (e->waiting && e->n_run < e->max_running) {
            struct freq **best = &e->waiting;
            for (struct freq **it = &e->waiting; *it; it = &(*it)->next)
                if ((*it)->r->priority < (*best)->r->priority) best = it;
            struct freq *q = *best;
            *best = q->next;
            e->n_wait--;
            make_script(e, q);
            e->st.prompt_tokens_total += (uint64_t)q->r->n_prompt;
            e->st.prefix_cache_queries += (uint64_t)q->r->n_prompt;
            q->next = NULL;
            struct freq **tail = &e->running;
            while (*tail) tail = &(*tail)->next;
            *tail = q;
            e->n_run++;
        }
        if (!e->running) {
            e->st.kv_usage = 0;
            e->st.running = 0;
            e->st.waiting = e->n_wait;
            pthread_cond_wait(&e->cv, &e->mu);
            continue;
        }
        pthread_mutex_unlock(&e->mu);
        struct timespec ts = {e->step_ms / 1000, (long)(e->step_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&e->mu);
        if (e->fail_after > 0 && e->st.steps >= (uint64_t)e->fail_after) {
            e->failed = 1;
            e->st.failed = 1;
        }
        step(e);
        e->st.running = e->n_run;
        e->st.waiting = e->n_wait;
    }
    /* shutdown: every request still held gets its DONE */
    while (e->running) {
        struct freq *q = e->running;
        e->running = q->next;
        emit_done(e, q, ENG_FINISH_CANCELLED, 0);
    }
    while (e->waiting) {
        struct freq *q = e->waiting;
        e->waiting = q->next;
        emit_done(e, q, ENG_FINISH_CANCELLED, 0);
    }
    e->n_run = e->n_wait = 0;
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

int eng_create(const struct cfg *cfg, void (*progress)(void *ud, double frac, const char *what),
               void *progress_ud, struct engine **out, char *err)
{
    struct engine *e = calloc(1, sizeof *e);
    if (!e) return err_set(err, ERR_NOMEM, "out of memory");
    int rc = tok_create_dir(&e->tok, cfg->model_path, err);
    if (rc) {
        free(e);
        return rc;
    }
    if (progress) progress(progress_ud, 0.5, "fake engine: tokenizer loaded");
    const char *load_ms = getenv("TANDEM_FAKE_LOAD_MS"); /* pretend loading takes a while */
    if (load_ms) usleep((useconds_t)atoi(load_ms) * 1000);
    e->max_running = (int)cfg->engine_max_running;
    e->max_queued = (int)cfg->engine_max_queued;
    e->context = cfg->model_context > 0 ? (int)cfg->model_context : 2048;
    e->kv_tokens = e->context * e->max_running;
    const char *s = getenv("TANDEM_FAKE_STEP_MS");
    e->step_ms = s ? atoi(s) : 2;
    s = getenv("TANDEM_FAKE_FAIL_AFTER");
    e->fail_after = s ? atoi(s) : 0;
    e->next_id = 1;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    if (pthread_create(&e->th, NULL, engine_main, e) != 0) {
        tok_destroy(e->tok);
        free(e);
        return err_set(err, ERR_INTERNAL, "cannot start the engine thread");
    }
    if (progress) progress(progress_ud, 1.0, "fake engine ready");
    *out = e;
    return 0;
}

void eng_destroy(struct engine *e)
{
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    e->stop = 1;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->th, NULL);
    tok_destroy(e->tok);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

int eng_submit(struct engine *e, struct eng_request *req, char *err)
{
    if (req->n_prompt <= 0) return err_set(err, ERR_INVAL, "empty prompt");
    if (req->max_tokens < 1) return err_set(err, ERR_INVAL, "max_tokens must be >= 1");
    for (int i = 0; i < req->n_prompt; i++)
        if (req->prompt[i] < 0 || req->prompt[i] >= tok_vocab_size(e->tok))
            return err_set(err, ERR_INVAL, "token id %d out of range", req->prompt[i]);
    if (req->n_prompt + 1 > e->context)
        return err_set(err, ERR_CTX_OVERFLOW, "prompt of %d tokens does not fit the context of %d",
                       req->n_prompt, e->context);
    pthread_mutex_lock(&e->mu);
    int rc = 0;
    if (e->draining || e->failed || e->stop)
        rc = err_set(err, ERR_UNAVAILABLE, "the engine is not accepting requests");
    else if (e->n_wait >= e->max_queued + (e->max_running - e->n_run))
        rc = err_set(err, ERR_QUEUE_FULL, "the request queue is full (%d waiting)", e->n_wait);
    struct freq *q = rc ? NULL : calloc(1, sizeof *q);
    if (!rc && !q) rc = err_set(err, ERR_NOMEM, "out of memory");
    if (!rc) {
        req->id = e->next_id++;
        q->req = *req; /* copy the struct, take the arrays */
        q->r = &q->req;
        req->prompt = NULL;
        req->samp.logit_bias_ids = NULL;
        req->samp.logit_bias_vals = NULL;
        memset(&req->constraint, 0, sizeof req->constraint); /* taken: destroyed at DONE */
        struct freq **tail = &e->waiting;
        while (*tail) tail = &(*tail)->next;
        *tail = q;
        e->n_wait++;
        e->st.waiting = e->n_wait;
        pthread_cond_signal(&e->cv);
    }
    pthread_mutex_unlock(&e->mu);
    return rc;
}

void eng_cancel(struct engine *e, uint64_t id)
{
    pthread_mutex_lock(&e->mu);
    for (struct freq *q = e->running; q; q = q->next)
        if (q->r->id == id) q->cancelled = 1;
    for (struct freq *q = e->waiting; q; q = q->next)
        if (q->r->id == id) q->cancelled = 1;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

void eng_drain(struct engine *e)
{
    pthread_mutex_lock(&e->mu);
    e->draining = 1;
    pthread_mutex_unlock(&e->mu);
}

void eng_info(const struct engine *e, struct eng_info *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->model_name, sizeof out->model_name, "fake");
    out->vocab_size = tok_vocab_size(e->tok);
    out->context = e->context;
    out->bos_id = tok_bos(e->tok);
    out->eos_id = tok_eos(e->tok);
    out->kv_blocks = e->kv_tokens / 16;
    out->kv_block_tokens = 16;
    out->placement = "cpu";
}

void eng_stats(struct engine *e, struct eng_stats *out)
{
    pthread_mutex_lock(&e->mu);
    *out = e->st;
    out->running = e->n_run;
    out->waiting = e->n_wait;
    pthread_mutex_unlock(&e->mu);
}
