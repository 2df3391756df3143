/* scheduler.c - the engine thread: continuous batching over a paged KV cache.
 *
 * What: eng_submit/eng_cancel/eng_drain/eng_stats/eng_info/eng_destroy of engine.h, and the loop
 * that, once per step, admits waiting requests, builds one batch of decode tokens plus prefill
 * chunks, runs the backend's forward, samples and reports tokens.
 *
 * A sequence (struct seq) holds its tokens (prompt, then generated), n_computed (tokens whose KV
 * is in the cache) and its block table. Every running sequence has 1..n pending tokens
 * tokens[n_computed..n_tokens): exactly one for a decoding sequence (the last sampled token), more
 * while its prompt (or, after preemption, prompt + generated) is being prefilled. When the last
 * pending token is computed its logits are sampled. So prefill, decode and recompute after
 * preemption are one mechanism, and recompute reproduces the same KV and the same next tokens
 * (the RNG state travels with the sequence).
 *
 * One step:
 *   1. take new submissions and cancellations from the locked inbox; cancelled sequences finish
 *      at once and free their blocks;
 *   2. admit waiting sequences (lowest priority value first, then arrival) up to max_running,
 *      reusing their longest cached prefix;
 *   3. batch: every decoding sequence gets its one token (oldest first); when a block cannot be
 *      had, the newest running sequence is preempted (blocks freed, back to the waiting queue to
 *      be recomputed later). Then prefills get chunks, oldest first, within max_batch_tokens and
 *      the blocks available (chunked prefill: a long prompt never stalls decoding);
 *   4. forward, commit full blocks to the prefix cache, sample, emit events, retire finished.
 * "Newest" and "oldest" are by (priority, arrival): the running and waiting arrays are kept in
 * that order, so the victim is always the last running sequence.
 *
 * Constrained decoding (eng_request.constraint): its mask runs on the row right before sampling
 * (on whichever thread samples the row), accept on the engine thread in take_sample, destroy
 * when the sequence is finished. Recompute after preemption never re-samples generated tokens,
 * so the constraint's state stays valid across preemption without any replay.
 *
 * Prefill pacing (engine.prefill_step_ratio = r > 1): a prefill chunk riding along with decodes
 * lengthens that step, i.e. every running stream's inter-token latency. The scheduler learns, as
 * exponential moving averages of measured forward times, the cost of a decode-only step and the
 * marginal cost of one prefill token, and while anything is decoding caps the step's prefill
 * tokens at (r - 1) * t_decode / c_prefill (at least one token, so prompts progress). Until
 * t_decode is known a step with decodes carries no prefill (one decode-only step measures it);
 * until c_prefill is known the chunk is PACE_PROBE tokens: a prompt arriving while streams decode
 * never rides along whole. A prefill token late in a long prompt costs more than an early one
 * (attention over more keys); chunks move through a prompt gradually, so the moving average
 * follows. Without decodes, prefill uses the whole max_batch_tokens.
 *
 * Threads and locking: one mutex guards the inbox (new requests, cancel ids), the published
 * stats and the flags; the scheduler state (waiting/running arrays, KV, sampler) belongs to the
 * engine thread alone, which holds no lock while computing or calling callbacks. The thread
 * sleeps on a condition variable when there is nothing to do. Optional sampling workers (their
 * own mutex/condvars) sample the rows of one step in parallel while the engine thread waits for
 * them; each row touches only its own sequence's RNG and the worker's scratch, and events are
 * then emitted by the engine thread in batch order, so results do not depend on the workers.
 */
#include "sched.h"

#include "kv.h"
#include "samp.h"

#include "../../common/err.h"
#include "../../common/log.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define PACE_PROBE 4            /* pacing: prefill tokens of a step while c_prefill is unknown */

struct seq {
    struct eng_request req;     /* copy; prompt moved into tokens */
    int32_t *tokens;            /* [cap] prompt then generated */
    int n_tokens, cap;
    int n_prompt;
    int n_computed;
    int n_generated;
    int max_gen;                /* min(max_tokens, context - n_prompt) */
    int n_cached;               /* prompt tokens reused at the first admission */
    int admitted;               /* prefix-cache statistics counted */
    int prompt_counted;
    uint64_t arrival;
    struct kv_seq kv;
    struct samp_rng rng;
    int chunk;                  /* this step: tokens in the batch */
};

struct engine {
    struct sched_params p;
    struct sched_backend be;
    struct kv_cache *kv;
    struct model_kv mkv;
    void *kv_mem;
    size_t kv_bytes;

    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* wakes the engine thread */
    pthread_cond_t cv_check;    /* eng_debug_check waiting for its result */

    /* --- guarded by mu */
    struct seq **inbox;
    int n_inbox, cap_inbox;
    uint64_t *cancels;
    int n_cancels, cap_cancels;
    int stop, draining, failed;
    int pub_waiting, pub_running;  /* as of the last step, for admission control */
    uint64_t next_id;
    struct eng_stats stats;     /* published after each step */
    int check_req, check_done, check_rc;
    char check_err[ERR_LEN];

    /* --- engine thread only */
    struct seq **waiting;
    int n_waiting, cap_waiting;
    struct seq **running;       /* [max_running] */
    int n_running;
    uint64_t arrivals;
    struct eng_stats st;        /* counters being accumulated */
    double t_decode, c_prefill; /* pacing: EMA seconds per decode-only step, per prefill token */
    /* batch buffers */
    int32_t *b_tokens, *b_pos, *b_seq;  /* [max_batch_tokens] */
    struct model_seq *b_seqs;           /* [max_running] */
    struct seq **b_owner;               /* [max_running] */
    int32_t *b_logits_idx;              /* [max_running] */
    int *b_logit_row;                   /* [max_running] per batch seq, -1 = none */
    float *logits;                      /* [max_running][vocab] */
    struct seq **b_row_owner;           /* [max_running] sequence of each logits row */
    struct samp_out *b_out;             /* [max_running] sampled tokens of this step */

    /* sampling workers: rows of a step are shared out through `next` (see sample_rows) */
    struct samp **scratch;              /* [n_scratch]; [0] is the engine thread's, workers take
                                           (and free) one each */
    pthread_t *workers;
    int n_workers, n_scratch;
    pthread_mutex_t smu;
    pthread_cond_t s_work, s_done;
    uint64_t s_gen;                     /* bumped once per parallel round */
    int s_stop, s_active, s_rows;
    atomic_int s_next;
};

int sched_iter_bucket(int n)
{
    int b = 0;
    for (int le = 1; b < ENG_ITER_BUCKETS - 1 && n > le; le *= 2) b++;
    return b;
}

/* ---- sequences */

/* The request ended: release its constraint (engine.h: destroy exactly once). */
static void seq_drop_constraint(struct seq *s)
{
    struct eng_constraint *c = &s->req.constraint;
    if (c->destroy) c->destroy(c->ud);
    memset(c, 0, sizeof *c);
}

static void seq_free(struct seq *s)
{
    if (!s) return;
    seq_drop_constraint(s);
    free(s->tokens);
    free(s->req.samp.logit_bias_ids);
    free(s->req.samp.logit_bias_vals);
    kv_seq_fini(&s->kv);
    free(s);
}

static void emit_done(struct engine *e, struct seq *s, enum eng_finish fin, int err)
{
    struct eng_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = ENG_EV_DONE;
    ev.finish = fin;
    ev.err = err;
    ev.n_prompt = s->n_prompt;
    ev.n_cached = s->n_cached;
    ev.n_generated = s->n_generated;
    (void)e;
    s->req.on_event(s->req.ud, &ev);
}

/* Finish a sequence that is in neither array any more. */
static void seq_finish(struct engine *e, struct seq *s, enum eng_finish fin, int err)
{
    kv_seq_free(e->kv, &s->kv);
    seq_drop_constraint(s);
    emit_done(e, s, fin, err);
    seq_free(s);
}

static int seq_before(const struct seq *a, const struct seq *b)
{
    return a->req.priority < b->req.priority ||
           (a->req.priority == b->req.priority && a->arrival < b->arrival);
}

static int waiting_insert(struct engine *e, struct seq *s)
{
    if (e->n_waiting == e->cap_waiting) {
        int cap = e->cap_waiting ? e->cap_waiting * 2 : 64;
        struct seq **w = realloc(e->waiting, (size_t)cap * sizeof *w);
        if (!w) return ERR_NOMEM;
        e->waiting = w;
        e->cap_waiting = cap;
    }
    int i = e->n_waiting;
    while (i > 0 && seq_before(s, e->waiting[i - 1])) {
        e->waiting[i] = e->waiting[i - 1];
        i--;
    }
    e->waiting[i] = s;
    e->n_waiting++;
    return 0;
}

static void running_insert(struct engine *e, struct seq *s)
{
    int i = e->n_running;
    while (i > 0 && seq_before(s, e->running[i - 1])) {
        e->running[i] = e->running[i - 1];
        i--;
    }
    e->running[i] = s;
    e->n_running++;
}

static void array_remove(struct seq **a, int *n, int i)
{
    memmove(&a[i], &a[i + 1], (size_t)(*n - i - 1) * sizeof *a);
    (*n)--;
}

/* Free the last running sequence's blocks and put it back in the waiting queue. */
static void preempt_last(struct engine *e)
{
    struct seq *s = e->running[--e->n_running];
    kv_seq_free(e->kv, &s->kv);
    s->n_computed = 0;
    e->st.preemptions_total++;
    if (waiting_insert(e, s) != 0) seq_finish(e, s, ENG_FINISH_ERROR, ERR_NOMEM);
}

/* ---- one step */

static void do_cancels(struct engine *e, const uint64_t *ids, int n)
{
    for (int k = 0; k < n; k++) {
        for (int i = 0; i < e->n_running; i++)
            if (e->running[i]->req.id == ids[k]) {
                struct seq *s = e->running[i];
                array_remove(e->running, &e->n_running, i);
                seq_finish(e, s, ENG_FINISH_CANCELLED, 0);
                goto next;
            }
        for (int i = 0; i < e->n_waiting; i++)
            if (e->waiting[i]->req.id == ids[k]) {
                struct seq *s = e->waiting[i];
                array_remove(e->waiting, &e->n_waiting, i);
                seq_finish(e, s, ENG_FINISH_CANCELLED, 0);
                goto next;
            }
    next:;
    }
}

static void admit(struct engine *e)
{
    while (e->n_running < e->p.max_running && e->n_waiting > 0) {
        struct seq *s = e->waiting[0];
        array_remove(e->waiting, &e->n_waiting, 0);
        int reused = kv_seq_match(e->kv, &s->kv, s->tokens, s->n_tokens);
        /* admit only if the rest of its prompt fits beside one growth block per running
         * sequence: otherwise it would be preempted again at once (head-of-line: FCFS) */
        int need = kv_blocks_for(e->kv, s->n_tokens) - s->kv.n_blocks;
        if (e->n_running > 0 && need > kv_n_available(e->kv) - e->n_running) {
            kv_seq_free(e->kv, &s->kv);
            memmove(&e->waiting[1], &e->waiting[0], (size_t)e->n_waiting * sizeof *e->waiting);
            e->waiting[0] = s;
            e->n_waiting++;
            break;
        }
        s->n_computed = reused;
        if (!s->admitted) {
            s->admitted = 1;
            s->n_cached = reused < s->n_prompt ? reused : s->n_prompt;
            if (e->p.prefix_cache) {
                e->st.prefix_cache_queries += (uint64_t)s->n_prompt;
                e->st.prefix_cache_hits += (uint64_t)s->n_cached;
            }
        }
        running_insert(e, s);
    }
}

/* Tokens banned for this sequence now: before min_tokens, the ones that would stop it (EOS
 * unless ignore_eos, and stop ids), as vLLM does. */
static int banned_ids(const struct engine *e, const struct seq *s, int32_t *out)
{
    int n = 0;
    if (s->n_generated >= s->req.min_tokens) return 0;
    if (e->p.eos_id >= 0 && !s->req.ignore_eos) out[n++] = e->p.eos_id;
    for (int i = 0; i < s->req.n_stop_ids; i++) out[n++] = s->req.stop_ids[i];
    return n;
}

static int is_stop(const struct engine *e, const struct seq *s, int32_t tok)
{
    /* under a constraint EOS is only allowed once the output is complete: it always ends */
    if ((!s->req.ignore_eos || s->req.constraint.mask) && tok == e->p.eos_id) return 1;
    for (int i = 0; i < s->req.n_stop_ids; i++)
        if (tok == s->req.stop_ids[i]) return 1;
    return 0;
}

static int seq_append(struct seq *s, int32_t tok)
{
    if (s->n_tokens == s->cap) {
        int cap = s->cap * 2;
        int32_t *t = realloc(s->tokens, (size_t)cap * sizeof *t);
        if (!t) return ERR_NOMEM;
        s->tokens = t;
        s->cap = cap;
    }
    s->tokens[s->n_tokens++] = tok;
    return 0;
}

/* Sample the next token of s from its logits row with scratch sc. Touches only s (its RNG) and
 * sc, so rows of one step may be sampled on several threads at once. */
static void sample_row(const struct engine *e, struct samp *sc, struct seq *s, float *logits,
                       struct samp_out *so)
{
    int32_t banned[ENG_MAX_STOP_IDS + 1];
    int n_banned = banned_ids(e, s, banned);
    const struct eng_constraint *c = &s->req.constraint;
    if (c->mask) {
        c->mask(c->ud, logits, e->be.n_valid);
        /* min_tokens must not ban the only tokens the constraint allows (its complete output's
         * EOS): every logit would be -inf. Keep the ban only if something else is allowed. */
        if (n_banned > 0) {
            int other = 0;
            for (int i = 0; i < e->be.n_valid && !other; i++) {
                if (logits[i] == -INFINITY) continue;
                other = 1;
                for (int k = 0; k < n_banned; k++) other &= banned[k] != i;
            }
            if (!other) n_banned = 0;
        }
    }
    struct samp_input in = {
        .p = &s->req.samp,
        .prompt = s->tokens,
        .n_prompt = s->n_prompt,
        .gen = s->tokens + s->n_prompt,
        .n_gen = s->n_generated,
        .banned = banned,
        .n_banned = n_banned,
    };
    samp_sample(sc, logits, e->be.n_valid, &in, &s->rng, so);
}

/* Append the sampled token to running[i], report it, retire the sequence if it is done.
 * Returns 1 if the sequence finished (and was removed). Engine thread, in batch order. */
static int take_sample(struct engine *e, int i, const struct samp_out *out)
{
    struct seq *s = e->running[i];
    struct samp_out so = *out;
    enum eng_finish fin = ENG_FINISH_NONE;
    int err = 0;
    if (seq_append(s, so.token) != 0) {
        fin = ENG_FINISH_ERROR;
        err = ERR_NOMEM;
    } else if (s->req.constraint.accept &&
               s->req.constraint.accept(s->req.constraint.ud, so.token) != 0) {
        /* the constraint refused the sampled token: only possible if it allowed nothing */
        s->n_tokens--;
        fin = ENG_FINISH_ERROR;
        err = ERR_INTERNAL;
        LOG_ERR("engine", "request %s: constrained decoding rejected token %d",
                s->req.request_id, (int)so.token);
    } else {
        s->n_generated++;
        e->st.generation_tokens_total++;
        if (is_stop(e, s, so.token)) fin = ENG_FINISH_STOP;
        else if (s->n_generated >= s->max_gen) fin = ENG_FINISH_LENGTH;

        struct eng_event ev;
        memset(&ev, 0, sizeof ev);
        ev.kind = ENG_EV_TOKEN;
        ev.token = so.token;
        ev.logprob = so.logprob;
        ev.n_top = so.n_top;
        memcpy(ev.top_ids, so.top_ids, (size_t)so.n_top * sizeof so.top_ids[0]);
        memcpy(ev.top_logprobs, so.top_logprobs, (size_t)so.n_top * sizeof so.top_logprobs[0]);
        ev.finish = fin == ENG_FINISH_STOP ? ENG_FINISH_STOP : ENG_FINISH_NONE;
        ev.n_prompt = s->n_prompt;
        ev.n_cached = s->n_cached;
        ev.n_generated = s->n_generated;
        s->req.on_event(s->req.ud, &ev);
    }
    if (fin == ENG_FINISH_NONE) return 0;
    array_remove(e->running, &e->n_running, i);
    seq_finish(e, s, fin, err);
    return 1;
}

/* Finish every sequence (shutdown or a fatal error). */
static void finish_all(struct engine *e, enum eng_finish fin, int err)
{
    while (e->n_running > 0) {
        struct seq *s = e->running[--e->n_running];
        seq_finish(e, s, fin, err);
    }
    while (e->n_waiting > 0) {
        struct seq *s = e->waiting[--e->n_waiting];
        seq_finish(e, s, fin, err);
    }
}

/* Build the batch into running[0..) chunk fields; returns the number of tokens. */
static int build_batch(struct engine *e)
{
    int budget = e->p.max_batch_tokens, n_tok = 0;
    struct kv_cache *kv = e->kv;
    for (int i = 0; i < e->n_running; i++) e->running[i]->chunk = 0;

    /* decode tokens first, oldest first; preempt the newest when blocks run out */
    for (int i = 0; i < e->n_running && budget > 0; i++) {
        struct seq *s = e->running[i];
        if (s->n_tokens - s->n_computed != 1) continue;
        int preempted_self = 0;
        while (kv_seq_reserve(kv, &s->kv, s->n_tokens) != 0) {
            int self = e->n_running - 1 == i;
            preempt_last(e);
            if (self) {
                preempted_self = 1;
                break;
            }
        }
        if (preempted_self) break;
        s->chunk = 1;
        budget--;
        n_tok++;
    }
    /* prefill chunks in what is left (paced while decoding, see the top of the file) */
    if (n_tok > 0 && e->p.prefill_step_ratio > 1.0) {
        int icap = 0;                                   /* t_decode unknown: decode-only step */
        if (e->t_decode > 0 && e->c_prefill <= 0) {
            icap = PACE_PROBE;                          /* c_prefill unknown: a small chunk */
        } else if (e->t_decode > 0) {
            double cap = (e->p.prefill_step_ratio - 1.0) * e->t_decode / e->c_prefill;
            icap = cap < 1 ? 1 : cap > budget ? budget : (int)cap;
        }
        if (icap < budget) budget = icap;
    }
    for (int i = 0; i < e->n_running && budget > 0; i++) {
        struct seq *s = e->running[i];
        int pending = s->n_tokens - s->n_computed;
        if (pending <= 1) continue;
        int chunk = pending < budget ? pending : budget;
        if (kv_seq_reserve(kv, &s->kv, s->n_computed + chunk) != 0) {
            int fit = (s->kv.n_blocks + kv_n_available(kv)) * kv_block_tokens(kv) - s->n_computed;
            chunk = chunk < fit ? chunk : fit;
            if (chunk <= 0 || kv_seq_reserve(kv, &s->kv, s->n_computed + chunk) != 0) continue;
        }
        s->chunk = chunk;
        budget -= chunk;
        n_tok += chunk;
    }
    return n_tok;
}

/* Take rows from the shared counter until none are left. */
static void sample_share(struct engine *e, struct samp *sc)
{
    for (;;) {
        int r = atomic_fetch_add(&e->s_next, 1);
        if (r >= e->s_rows) return;
        sample_row(e, sc, e->b_row_owner[r], e->logits + (size_t)r * e->be.vocab, &e->b_out[r]);
    }
}

static void *sample_worker(void *arg)
{
    struct engine *e = arg;
    uint64_t seen = 0;
    struct samp *sc = NULL;
    pthread_mutex_lock(&e->smu);
    for (int i = 1; i <= e->n_workers && !sc; i++)  /* claim a scratch: the first unclaimed */
        if (e->scratch[i]) {
            sc = e->scratch[i];
            e->scratch[i] = NULL;
        }
    for (;;) {
        while (!e->s_stop && e->s_gen == seen) pthread_cond_wait(&e->s_work, &e->smu);
        if (e->s_stop) break;
        seen = e->s_gen;
        pthread_mutex_unlock(&e->smu);
        sample_share(e, sc);
        pthread_mutex_lock(&e->smu);
        if (--e->s_active == 0) pthread_cond_signal(&e->s_done);
    }
    pthread_mutex_unlock(&e->smu);
    samp_destroy(sc);
    return NULL;
}

/* Sample rows 0..n-1 of this step into b_out. Rows are shared with the workers when there are
 * several and the work (rows x vocabulary) is worth waking them. */
static void sample_rows(struct engine *e, int n)
{
    atomic_store(&e->s_next, 0);
    e->s_rows = n;
    long long work = (long long)n * e->be.n_valid;
    if (e->n_workers == 0 || n < 2 || work < e->p.sample_min_work) {
        sample_share(e, e->scratch[0]);
        return;
    }
    pthread_mutex_lock(&e->smu);
    e->s_active = e->n_workers;
    e->s_gen++;
    pthread_cond_broadcast(&e->s_work);
    pthread_mutex_unlock(&e->smu);
    sample_share(e, e->scratch[0]);
    pthread_mutex_lock(&e->smu);
    while (e->s_active > 0) pthread_cond_wait(&e->s_done, &e->smu);
    pthread_mutex_unlock(&e->smu);
}

/* Learn step costs for prefill pacing from one forward of n_pre prefill + n_dec decode tokens
 * that took dt seconds (moving averages, weight 1/8 for the newest sample). */
static void pace_update(struct engine *e, int n_pre, int n_dec, double dt)
{
    const double a = 0.125;
    if (n_pre == 0 && n_dec > 0) {
        e->t_decode = e->t_decode > 0 ? (1 - a) * e->t_decode + a * dt : dt;
    } else if (n_pre > 0) {
        double extra = n_dec > 0 && e->t_decode > 0 ? dt - e->t_decode : dt;
        double c = (extra > 0 ? extra : 0) / n_pre;
        e->c_prefill = e->c_prefill > 0 ? (1 - a) * e->c_prefill + a * c : c;
    }
}

/* One scheduling step; returns 0 or a fatal error. */
static int step(struct engine *e, char *err)
{
    admit(e);
    int n_tok = build_batch(e);
    while (n_tok == 0 && e->n_running > 1) {
        /* every running sequence is prefilling and none can get a block: make room */
        preempt_last(e);
        n_tok = build_batch(e);
    }
    if (n_tok == 0) {
        /* cannot happen: context <= KV capacity, so a lone sequence always fits */
        if (e->n_running == 1) {
            struct seq *s = e->running[--e->n_running];
            LOG_ERR("engine", "request %s cannot get KV blocks", s->req.request_id);
            seq_finish(e, s, ENG_FINISH_ERROR, ERR_INTERNAL);
        }
        return 0;
    }

    int nt = 0, ns = 0, nl = 0, n_dec = 0;
    for (int i = 0; i < e->n_running; i++) {
        struct seq *s = e->running[i];
        if (s->chunk == 0) continue;
        n_dec += s->chunk == 1 && s->n_tokens - s->n_computed == 1;
        for (int j = 0; j < s->chunk; j++) {
            int pos = s->n_computed + j;
            e->b_tokens[nt] = s->tokens[pos];
            e->b_pos[nt] = pos;
            e->b_seq[nt] = ns;
            nt++;
        }
        e->b_seqs[ns] = (struct model_seq){.blocks = s->kv.blocks, .n_blocks = s->kv.n_blocks};
        e->b_owner[ns] = s;
        if (s->n_computed + s->chunk == s->n_tokens) {
            e->b_logit_row[ns] = nl;
            e->b_logits_idx[nl++] = nt - 1;
        } else {
            e->b_logit_row[ns] = -1;
        }
        ns++;
    }
    struct model_batch b = {
        .n_tokens = nt, .tokens = e->b_tokens, .pos = e->b_pos, .seq = e->b_seq,
        .n_seqs = ns, .seqs = e->b_seqs, .n_logits = nl, .logits_idx = e->b_logits_idx,
    };
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = e->be.forward(e->be.ctx, &e->mkv, &b, e->logits, err);
    if (rc != 0) return rc;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    pace_update(e, nt - n_dec, n_dec,
                (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9);

    e->st.steps++;
    e->st.iter_tokens_bucket[sched_iter_bucket(nt)]++;
    e->st.iter_tokens_count++;
    e->st.iter_tokens_sum += (uint64_t)nt;

    /* commit full blocks; list the rows to sample */
    for (int k = 0; k < ns; k++) {
        struct seq *s = e->b_owner[k];
        s->n_computed += s->chunk;
        kv_seq_commit(e->kv, &s->kv, s->tokens, s->n_computed);
        if (!s->prompt_counted && s->n_computed >= s->n_prompt) {
            s->prompt_counted = 1;
            e->st.prompt_tokens_total += (uint64_t)s->n_prompt;
        }
        if (e->b_logit_row[k] >= 0) e->b_row_owner[e->b_logit_row[k]] = s;
    }
    /* sample every row (in parallel when worth it), then report in batch order */
    sample_rows(e, nl);
    for (int r = 0; r < nl; r++) {
        struct seq *s = e->b_row_owner[r];
        int i = 0;
        while (e->running[i] != s) i++;
        take_sample(e, i, &e->b_out[r]);
    }
    return 0;
}

/* ---- the thread */

static void publish(struct engine *e)
{
    e->st.running = e->n_running;
    e->st.waiting = e->n_waiting + e->n_inbox;
    int nb = kv_n_blocks(e->kv);
    e->st.kv_usage = (double)(nb - kv_n_available(e->kv)) / nb;
    e->st.failed = e->failed;
    e->stats = e->st;
    e->pub_running = e->n_running;
    e->pub_waiting = e->n_waiting;
}

static int debug_check(struct engine *e, char *err)
{
    int n = e->n_running + e->n_waiting;
    const struct kv_seq **seqs = malloc((size_t)(n + 1) * sizeof *seqs);
    if (!seqs) return err_set(err, ERR_NOMEM, "check: out of memory");
    for (int i = 0; i < e->n_running; i++) seqs[i] = &e->running[i]->kv;
    for (int i = 0; i < e->n_waiting; i++) seqs[e->n_running + i] = &e->waiting[i]->kv;
    int rc = kv_check(e->kv, seqs, n, err);
    free(seqs);
    if (rc == 0 && n == 0 && kv_n_available(e->kv) != kv_n_blocks(e->kv))
        rc = err_set(err, ERR_INTERNAL, "idle engine: %d of %d blocks still referenced",
                     kv_n_blocks(e->kv) - kv_n_available(e->kv), kv_n_blocks(e->kv));
    return rc;
}

static void *engine_main(void *arg)
{
    struct engine *e = arg;
    uint64_t *cancels = NULL;
    int cap_cancels = 0;
    struct seq **inbox = NULL;
    int cap_inbox = 0;
    char err[ERR_LEN];
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->stop && e->n_inbox == 0 && e->n_cancels == 0 && !e->check_req &&
               e->n_waiting == 0 && e->n_running == 0)
            pthread_cond_wait(&e->cv, &e->mu);
        if (e->stop) {
            pthread_mutex_unlock(&e->mu);
            break;
        }
        /* swap the inbox and the cancel list out; the inbox moves into `waiting` unlocked */
        struct seq **ib = e->inbox;
        int n_ib = e->n_inbox, cap_ib = e->cap_inbox;
        e->inbox = inbox;
        e->cap_inbox = cap_inbox;
        e->n_inbox = 0;
        inbox = ib;
        cap_inbox = cap_ib;
        e->pub_waiting += n_ib;
        /* swap the cancel list out */
        uint64_t *c = e->cancels;
        int nc = e->n_cancels, cc = e->cap_cancels;
        e->cancels = cancels;
        e->cap_cancels = cap_cancels;
        e->n_cancels = 0;
        cancels = c;
        cap_cancels = cc;
        int check = e->check_req;
        pthread_mutex_unlock(&e->mu);

        for (int i = 0; i < n_ib; i++)
            if (waiting_insert(e, inbox[i]) != 0) seq_finish(e, inbox[i], ENG_FINISH_ERROR, ERR_NOMEM);
        do_cancels(e, cancels, nc);
        if (check) {
            char cerr[ERR_LEN] = "";
            int rc = debug_check(e, cerr);
            pthread_mutex_lock(&e->mu);
            e->check_rc = rc;
            memcpy(e->check_err, cerr, ERR_LEN);
            e->check_req = 0;
            e->check_done = 1;
            pthread_cond_broadcast(&e->cv_check);
            pthread_mutex_unlock(&e->mu);
        }
        if (e->failed) {
            finish_all(e, ENG_FINISH_ERROR, ERR_UNAVAILABLE);
        } else if (e->n_running > 0 || e->n_waiting > 0) {
            int rc = step(e, err);
            if (rc != 0) {
                LOG_ERR("engine", "forward failed, engine stops: %s", err);
                pthread_mutex_lock(&e->mu);
                e->failed = 1;
                pthread_mutex_unlock(&e->mu);
                finish_all(e, ENG_FINISH_ERROR, rc);
            }
        }
        pthread_mutex_lock(&e->mu);
        publish(e);
        pthread_mutex_unlock(&e->mu);
    }
    free(cancels);
    free(inbox);
    /* shutdown: everything still known gets its DONE */
    pthread_mutex_lock(&e->mu);
    int n_ib = e->n_inbox;
    e->n_inbox = 0;
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < n_ib; i++)
        if (waiting_insert(e, e->inbox[i]) != 0) seq_finish(e, e->inbox[i], ENG_FINISH_CANCELLED, 0);
    finish_all(e, ENG_FINISH_CANCELLED, 0);
    return NULL;
}

/* ---- public API */

static void engine_free(struct engine *e)
{
    if (e->workers) {
        pthread_mutex_lock(&e->smu);
        e->s_stop = 1;
        pthread_cond_broadcast(&e->s_work);
        pthread_mutex_unlock(&e->smu);
        for (int i = 0; i < e->n_workers; i++) pthread_join(e->workers[i], NULL);
        free(e->workers);
    }
    for (int i = 0; e->scratch && i < e->n_scratch; i++) samp_destroy(e->scratch[i]);
    free(e->scratch);
    free(e->b_row_owner);
    free(e->b_out);
    pthread_mutex_destroy(&e->smu);
    pthread_cond_destroy(&e->s_work);
    pthread_cond_destroy(&e->s_done);
    kv_destroy(e->kv);
    if (e->kv_mem) munmap(e->kv_mem, e->kv_bytes);
    free(e->mkv.layer_data);
    free(e->inbox);
    free(e->cancels);
    free(e->waiting);
    free(e->running);
    free(e->b_tokens);
    free(e->b_pos);
    free(e->b_seq);
    free(e->b_seqs);
    free(e->b_owner);
    free(e->b_logits_idx);
    free(e->b_logit_row);
    free(e->logits);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    pthread_cond_destroy(&e->cv_check);
    free(e);
}

int eng_create_backend(const struct sched_params *p, const struct sched_backend *be,
                       struct engine **out, char *err)
{
    *out = NULL;
    if (p->max_running < 1 || p->max_batch_tokens < 1 || p->kv_blocks < 1 ||
        p->kv_block_tokens < 1 || p->max_queued < 0 || be->vocab < 1 || be->n_valid < 1 ||
        be->n_valid > be->vocab || be->n_layers < 1 || be->kv_dim < 1 || !be->forward ||
        (be->kv_type != MODEL_KV_BF16 && be->kv_type != MODEL_KV_F32))
        return err_set(err, ERR_INVAL, "engine: bad parameters");
    struct engine *e = calloc(1, sizeof *e);
    if (!e) return err_set(err, ERR_NOMEM, "engine: out of memory");
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    pthread_cond_init(&e->cv_check, NULL);
    pthread_mutex_init(&e->smu, NULL);
    pthread_cond_init(&e->s_work, NULL);
    pthread_cond_init(&e->s_done, NULL);
    e->p = *p;
    e->be = *be;
    /* a decode step needs one token slot per running sequence */
    if (e->p.max_running > e->p.max_batch_tokens) e->p.max_running = e->p.max_batch_tokens;
    /* and one logits row each: keep that buffer under 1 GiB */
    int max_rows = (int)((1ll << 30) / ((long long)be->vocab * (long long)sizeof(float)));
    if (max_rows < 1) max_rows = 1;
    if (e->p.max_running > max_rows) {
        LOG_WARN("engine", "engine.max_running capped at %d (logits buffer)", max_rows);
        e->p.max_running = max_rows;
    }
    long long kv_tokens = (long long)p->kv_blocks * p->kv_block_tokens;
    if (e->p.context <= 0 || e->p.context > kv_tokens)
        e->p.context = kv_tokens > (1 << 30) ? (1 << 30) : (int)kv_tokens;

    int rc;
    struct kv_params kp = {p->kv_blocks, p->kv_block_tokens, p->prefix_cache};
    if ((rc = kv_create(&kp, &e->kv, err)) != 0) goto fail;
    /* sampler scratch: one for the engine thread, one per sampling worker */
    int nw = p->sample_threads > 0 ? (p->sample_threads < 64 ? p->sample_threads : 64) : 0;
    e->scratch = calloc((size_t)nw + 1, sizeof *e->scratch);
    if (!e->scratch) {
        rc = err_set(err, ERR_NOMEM, "engine: out of memory");
        goto fail;
    }
    e->n_scratch = nw + 1;
    for (int i = 0; i <= nw; i++)
        if ((rc = samp_create(be->vocab, &e->scratch[i], err)) != 0) goto fail;

    /* KV storage: one anonymous mapping, pages committed as they are first written */
    size_t per_layer = (size_t)p->kv_blocks * p->kv_block_tokens * be->kv_dim *
                       model_kv_elem_size(be->kv_type);
    e->kv_bytes = per_layer * be->n_layers;
    e->kv_mem = mmap(NULL, e->kv_bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (e->kv_mem == MAP_FAILED) {
        e->kv_mem = NULL;
        rc = err_set(err, ERR_NOMEM, "engine: cannot map %.2f GiB of KV cache",
                     (double)e->kv_bytes / (1 << 30));
        goto fail;
    }
    e->mkv.n_layers = be->n_layers;
    e->mkv.n_blocks = p->kv_blocks;
    e->mkv.block_tokens = p->kv_block_tokens;
    e->mkv.kv_dim = be->kv_dim;
    e->mkv.type = be->kv_type;
    e->mkv.layer_data = calloc((size_t)be->n_layers, sizeof *e->mkv.layer_data);
    int mr = e->p.max_running, mb = e->p.max_batch_tokens;
    e->running = calloc((size_t)mr, sizeof *e->running);
    e->b_tokens = malloc((size_t)mb * sizeof *e->b_tokens);
    e->b_pos = malloc((size_t)mb * sizeof *e->b_pos);
    e->b_seq = malloc((size_t)mb * sizeof *e->b_seq);
    e->b_seqs = malloc((size_t)mr * sizeof *e->b_seqs);
    e->b_owner = malloc((size_t)mr * sizeof *e->b_owner);
    e->b_logits_idx = malloc((size_t)mr * sizeof *e->b_logits_idx);
    e->b_logit_row = malloc((size_t)mr * sizeof *e->b_logit_row);
    e->logits = malloc((size_t)mr * be->vocab * sizeof *e->logits);
    e->b_row_owner = malloc((size_t)mr * sizeof *e->b_row_owner);
    e->b_out = malloc((size_t)mr * sizeof *e->b_out);
    if (!e->mkv.layer_data || !e->running || !e->b_tokens || !e->b_pos || !e->b_seq ||
        !e->b_seqs || !e->b_owner || !e->b_logits_idx || !e->b_logit_row || !e->logits ||
        !e->b_row_owner || !e->b_out) {
        rc = err_set(err, ERR_NOMEM, "engine: out of memory for batch buffers");
        goto fail;
    }
    for (int l = 0; l < be->n_layers; l++)
        e->mkv.layer_data[l] = (char *)e->kv_mem + per_layer * l;
    if (nw > 0) {
        e->n_workers = nw;
        e->workers = calloc((size_t)nw, sizeof *e->workers);
        if (!e->workers) {
            rc = err_set(err, ERR_NOMEM, "engine: out of memory");
            goto fail;
        }
        for (int i = 0; i < nw; i++)
            if (pthread_create(&e->workers[i], NULL, sample_worker, e) != 0) {
                e->n_workers = i;       /* join the ones started; their scratch is theirs */
                rc = err_set(err, ERR_NOMEM, "engine: cannot start sampling threads");
                goto fail;
            }
    }
    e->next_id = 1;
    publish(e);
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        rc = err_set(err, ERR_NOMEM, "engine: cannot start the engine thread");
        goto fail;
    }
    e->thread_started = 1;
    LOG_INFO("engine", "KV cache: %d blocks x %d tokens (%.2f GiB, %s), context %d, max_running "
             "%d, max_batch_tokens %d, prefix cache %s", p->kv_blocks, p->kv_block_tokens,
             (double)e->kv_bytes / (1 << 30), be->kv_type == MODEL_KV_F32 ? "f32" : "bf16",
             e->p.context, mr, mb, p->prefix_cache ? "on" : "off");
    *out = e;
    return 0;
fail:
    engine_free(e);
    return rc;
}

void eng_destroy(struct engine *e)
{
    if (!e) return;
    if (e->thread_started) {
        pthread_mutex_lock(&e->mu);
        e->stop = 1;
        pthread_cond_signal(&e->cv);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->thread, NULL);
    }
    if (e->be.destroy) e->be.destroy(e->be.ctx);
    engine_free(e);
}

int eng_submit(struct engine *e, struct eng_request *req, char *err)
{
    if (!req || !req->on_event) return err_set(err, ERR_INVAL, "request without a callback");
    if (!req->prompt || req->n_prompt < 1) return err_set(err, ERR_INVAL, "empty prompt");
    for (int i = 0; i < req->n_prompt; i++)
        if (req->prompt[i] < 0 || req->prompt[i] >= e->be.vocab)
            return err_set(err, ERR_INVAL, "prompt token %d (id %d) out of range [0, %d)", i,
                           (int)req->prompt[i], e->be.vocab);
    if (req->max_tokens < 1)
        return err_set(err, ERR_INVAL, "max_tokens must be >= 1, got %d", req->max_tokens);
    if (req->min_tokens < 0)
        return err_set(err, ERR_INVAL, "min_tokens must be >= 0, got %d", req->min_tokens);
    if (req->n_stop_ids < 0 || req->n_stop_ids > ENG_MAX_STOP_IDS)
        return err_set(err, ERR_INVAL, "at most %d stop token ids", ENG_MAX_STOP_IDS);
    for (int i = 0; i < req->n_stop_ids; i++)
        if (req->stop_ids[i] < 0 || req->stop_ids[i] >= e->be.vocab)
            return err_set(err, ERR_INVAL, "stop token id %d out of range", (int)req->stop_ids[i]);
    int rc = samp_check(&req->samp, e->be.vocab, err);
    if (rc != 0) return rc;
    if (req->n_prompt + 1 > e->p.context)
        return err_set(err, ERR_CTX_OVERFLOW,
                       "this model's maximum context length is %d tokens, but the prompt has %d "
                       "tokens (plus at least 1 to generate)", e->p.context, req->n_prompt);

    struct seq *s = calloc(1, sizeof *s);
    if (!s) return err_set(err, ERR_NOMEM, "out of memory");
    s->cap = req->n_prompt + 16;
    s->tokens = malloc((size_t)s->cap * sizeof *s->tokens);
    if (!s->tokens) {
        free(s);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    memcpy(s->tokens, req->prompt, (size_t)req->n_prompt * sizeof *s->tokens);
    s->n_tokens = s->n_prompt = req->n_prompt;
    int room = e->p.context - req->n_prompt;
    s->max_gen = req->max_tokens < room ? req->max_tokens : room;
    kv_seq_init(&s->kv);
    samp_rng_seed(&s->rng, req->samp.seed);

    pthread_mutex_lock(&e->mu);
    if (e->stop || e->draining || e->failed) {
        pthread_mutex_unlock(&e->mu);
        seq_free(s);
        return err_set(err, ERR_UNAVAILABLE, e->failed ? "engine failed" : "server is draining");
    }
    int free_slots = e->p.max_running - e->pub_running;
    if (free_slots < 0) free_slots = 0;
    if (e->pub_waiting + e->n_inbox >= e->p.max_queued + free_slots) {
        pthread_mutex_unlock(&e->mu);
        seq_free(s);
        return err_set(err, ERR_QUEUE_FULL, "server busy: %d requests waiting (engine.max_queued)",
                       e->pub_waiting + e->n_inbox);
    }
    if (e->n_inbox == e->cap_inbox) {
        int cap = e->cap_inbox ? e->cap_inbox * 2 : 64;
        struct seq **ib = realloc(e->inbox, (size_t)cap * sizeof *ib);
        if (!ib) {
            pthread_mutex_unlock(&e->mu);
            seq_free(s);
            return err_set(err, ERR_NOMEM, "out of memory");
        }
        e->inbox = ib;
        e->cap_inbox = cap;
    }
    req->id = e->next_id++;
    s->arrival = req->id;
    /* the engine takes the arrays; the struct itself is copied */
    s->req = *req;
    free(req->prompt);
    s->req.prompt = NULL;
    req->prompt = NULL;
    req->samp.logit_bias_ids = NULL;
    req->samp.logit_bias_vals = NULL;
    memset(&req->constraint, 0, sizeof req->constraint);   /* the engine destroys it now */
    e->inbox[e->n_inbox++] = s;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return 0;
}

void eng_cancel(struct engine *e, uint64_t id)
{
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    if (e->n_cancels == e->cap_cancels) {
        int cap = e->cap_cancels ? e->cap_cancels * 2 : 64;
        uint64_t *c = realloc(e->cancels, (size_t)cap * sizeof *c);
        if (!c) {       /* cannot record it; the request still ends by its own limits */
            pthread_mutex_unlock(&e->mu);
            LOG_WARN("engine", "out of memory recording a cancellation");
            return;
        }
        e->cancels = c;
        e->cap_cancels = cap;
    }
    e->cancels[e->n_cancels++] = id;
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
    snprintf(out->model_name, sizeof out->model_name, "%s", e->p.model_name);
    out->vocab_size = e->be.vocab;
    out->context = e->p.context;
    out->bos_id = e->p.bos_id;
    out->eos_id = e->p.eos_id;
    out->kv_blocks = e->p.kv_blocks;
    out->kv_block_tokens = e->p.kv_block_tokens;
    out->placement = e->p.placement ? e->p.placement : "cpu";
}

void eng_stats(struct engine *e, struct eng_stats *out)
{
    pthread_mutex_lock(&e->mu);
    *out = e->stats;
    out->waiting = e->pub_waiting + e->n_inbox;
    out->failed = e->failed;
    pthread_mutex_unlock(&e->mu);
}

int eng_debug_check(struct engine *e, char *err)
{
    pthread_mutex_lock(&e->mu);
    e->check_req = 1;
    e->check_done = 0;
    pthread_cond_signal(&e->cv);
    while (!e->check_done) pthread_cond_wait(&e->cv_check, &e->mu);
    int rc = e->check_rc;
    if (rc != 0 && err) memcpy(err, e->check_err, ERR_LEN);
    pthread_mutex_unlock(&e->mu);
    return rc;
}
