/* scheduler.c - the scheduling policy: continuous batching over a paged KV cache.
 *
 * What: once per step (sched_step, called by the engine thread's loop in engine_thread.c),
 * admit waiting requests, build one batch of decode tokens plus prefill chunks, run the
 * backend's forward, sample and report tokens. Also the sequences' lifecycle: waiting queue,
 * cancellation, finishing.
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
 *   1. (engine_thread.c) new submissions enter the waiting queue and cancellations are applied:
 *      cancelled sequences finish at once and free their blocks;
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
 * Layered prefill (engine.layered_prefill_tokens = N > 0, with pacing on and a backend that runs
 * a forward in slices of layers, model.h model_pass_*): small paced chunks are slow where the
 * cost of a chunk is mostly reading weights (routed experts read once per chunk, or streamed to
 * the GPU), so while sequences decode, a prompt with at least N tokens left instead prefills a
 * whole chunk (up to max_batch_tokens) as a pass whose layers are spread over the following
 * steps: each step runs the decode batch, then k layers of the pass, k = (r - 1) * t_decode /
 * c_layer (at least 1; c_layer the learned seconds per pass layer), so decodes wait for k
 * layers, never for the whole chunk. Without decodes the pass runs its remaining layers at once.
 * The pass's sequence takes no other tokens meanwhile; preempting or cancelling it aborts the
 * pass (its KV rows are then freed with it). One pass at a time.
 *
 * Threads: the engine thread only; no lock is held here. Sampling may run on the pool's
 * workers (sample_pool.c): each row touches only its own sequence's RNG and constraint and the
 * worker's scratch, and events are emitted by the engine thread afterwards in batch order, so
 * results do not depend on the workers.
 * Invariants (ASSERTed where an index is used): running has room for max_running sequences
 * and holds n_running; a sampled row's sequence is running; a batch never exceeds
 * max_batch_tokens tokens or max_running sequences.
 */
#include "sched_internal.h"

#include "common/err.h"
#include "common/log.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PACE_PROBE 4 /* pacing: prefill tokens of a step while c_prefill is unknown */

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

/* The sequence of a request (its tokens and RNG; the request is moved in by eng_submit). */
struct seq *sched_seq_new(const struct engine *e, const struct eng_request *req)
{
    struct seq *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->cap = req->n_prompt + 16;
    s->tokens = malloc((size_t)s->cap * sizeof *s->tokens);
    if (!s->tokens) {
        free(s);
        return NULL;
    }
    memcpy(s->tokens, req->prompt, (size_t)req->n_prompt * sizeof *s->tokens);
    s->n_tokens = s->n_prompt = req->n_prompt;
    int room = e->p.context - req->n_prompt;
    s->max_gen = req->max_tokens < room ? req->max_tokens : room;
    kv_seq_init(&s->kv);
    kv_seq_set_salt(&s->kv, req->cache_salt);
    samp_rng_seed(&s->rng, req->samp.seed);
    return s;
}

void sched_seq_free(struct seq *s)
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

void sched_seq_finish(struct engine *e, struct seq *s, enum eng_finish fin, int err)
{
    kv_seq_free(e->kv, &s->kv);
    seq_drop_constraint(s);
    emit_done(e, s, fin, err);
    sched_seq_free(s);
}

static int seq_before(const struct seq *a, const struct seq *b)
{
    return a->req.priority < b->req.priority ||
           (a->req.priority == b->req.priority && a->arrival < b->arrival);
}

/* Into the waiting queue, in (priority, arrival) order. */
int sched_enqueue(struct engine *e, struct seq *s)
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
    ASSERT(e->n_running < e->p.max_running); /* running holds max_running */
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
    ASSERT(i >= 0 && i < *n);
    memmove(&a[i], &a[i + 1], (size_t)(*n - i - 1) * sizeof *a);
    (*n)--;
}

/* End the layered pass of s, if it has one, without its results. */
static void pass_drop(struct engine *e, const struct seq *s)
{
    if (!e->pass.seq || e->pass.seq != s) return;
    if (e->pass.started) e->be.pass_abort(e->be.ctx);
    e->pass.seq = NULL;
}

/* Free the last running sequence's blocks and put it back in the waiting queue. */
static void preempt_last(struct engine *e)
{
    ASSERT(e->n_running > 0);
    struct seq *s = e->running[--e->n_running];
    pass_drop(e, s);
    kv_seq_free(e->kv, &s->kv);
    s->n_computed = 0;
    e->st.preemptions_total++;
    if (sched_enqueue(e, s) != 0) sched_seq_finish(e, s, ENG_FINISH_ERROR, ERR_NOMEM);
}

/* ---- one step */

/* Finish the sequences with these ids (running or waiting; unknown ids were already done). */
void sched_cancel(struct engine *e, const uint64_t *ids, int n)
{
    for (int k = 0; k < n; k++) {
        for (int i = 0; i < e->n_running; i++)
            if (e->running[i]->req.id == ids[k]) {
                struct seq *s = e->running[i];
                pass_drop(e, s);
                array_remove(e->running, &e->n_running, i);
                sched_seq_finish(e, s, ENG_FINISH_CANCELLED, 0);
                goto next;
            }
        for (int i = 0; i < e->n_waiting; i++)
            if (e->waiting[i]->req.id == ids[k]) {
                struct seq *s = e->waiting[i];
                array_remove(e->waiting, &e->n_waiting, i);
                sched_seq_finish(e, s, ENG_FINISH_CANCELLED, 0);
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
            ASSERT(e->n_waiting < e->cap_waiting); /* s's own slot, just vacated */
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
    ASSERT(i >= 0 && i < e->n_running);
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
        LOG_ERR("engine", "request %s: constrained decoding rejected token %d", s->req.request_id,
                (int)so.token);
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
    sched_seq_finish(e, s, fin, err);
    return 1;
}

/* Finish every sequence (shutdown or a fatal error). */
void sched_finish_all(struct engine *e, enum eng_finish fin, int err)
{
    while (e->n_running > 0) {
        struct seq *s = e->running[--e->n_running];
        pass_drop(e, s);
        sched_seq_finish(e, s, fin, err);
    }
    while (e->n_waiting > 0) {
        struct seq *s = e->waiting[--e->n_waiting];
        sched_seq_finish(e, s, fin, err);
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
    /* a long prompt while decoding: a layered pass (see the top of the file) */
    if (n_tok > 0 && e->p.prefill_step_ratio > 1.0 && e->p.layered_prefill_tokens > 0 &&
        !e->pass.seq) {
        for (int i = 0; i < e->n_running; i++) {
            struct seq *s = e->running[i];
            int pending = s->n_tokens - s->n_computed;
            if (pending < 2 || pending < e->p.layered_prefill_tokens) continue;
            int chunk = pending < e->p.max_batch_tokens ? pending : e->p.max_batch_tokens;
            if (kv_seq_reserve(kv, &s->kv, s->n_computed + chunk) != 0) continue;
            e->pass.seq = s;
            e->pass.chunk = chunk;
            e->pass.started = 0;
            break;
        }
    }
    /* prefill chunks in what is left (paced while decoding, see the top of the file) */
    if (n_tok > 0 && e->p.prefill_step_ratio > 1.0) {
        int icap = 0; /* t_decode unknown: decode-only step */
        if (e->t_decode > 0 && e->c_prefill <= 0) {
            icap = PACE_PROBE; /* c_prefill unknown: a small chunk */
        } else if (e->t_decode > 0) {
            double cap = (e->p.prefill_step_ratio - 1.0) * e->t_decode / e->c_prefill;
            icap = cap < 1 ? 1 : cap > budget ? budget : (int)cap;
        }
        if (icap < budget) budget = icap;
    }
    for (int i = 0; i < e->n_running && budget > 0; i++) {
        struct seq *s = e->running[i];
        int pending = s->n_tokens - s->n_computed;
        if (pending <= 1 || s == e->pass.seq) continue;
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

/* Sample row r of this step (a sample_pool job). */
static void sample_one(void *ctx, struct samp *sc, int r)
{
    struct engine *e = ctx;
    sample_row(e, sc, e->b_row_owner[r], e->logits + (size_t)r * e->be.vocab, &e->b_out[r]);
}

/* Sample rows 0..n-1 of this step into b_out. Rows are shared with the workers when there are
 * several and the work (rows x vocabulary) is worth waking them. */
static void sample_rows(struct engine *e, int n)
{
    long long work = (long long)n * e->be.n_valid;
    samp_pool_run(&e->pool, n, n >= 2 && work >= e->p.sample_min_work, sample_one, e);
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

/* Sample the layered pass's logits row (a sample_pool job on the engine thread). */
static void sample_pass(void *ctx, struct samp *sc, int r)
{
    struct engine *e = ctx;
    (void)r;
    sample_row(e, sc, e->pass.seq, e->pass.logits, &e->pass.out);
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) * 1e-9;
}

/* Advance the layered pass: begin it, run its next layers (all of them when nothing decodes),
 * and when none are left, finish it like a batch of its own. 0 or a fatal error. */
static int pass_step(struct engine *e, int decoding, char *err)
{
    struct seq *s = e->pass.seq;
    const struct sched_backend *be = &e->be;
    int rc;
    if (!e->pass.started) {
        int c = e->pass.chunk;
        for (int j = 0; j < c; j++) {
            e->pass.tokens[j] = s->tokens[s->n_computed + j];
            e->pass.pos[j] = s->n_computed + j;
        }
        e->pass.mseq = (struct model_seq){.blocks = s->kv.blocks, .n_blocks = s->kv.n_blocks};
        e->pass.logits_idx = c - 1;
        e->pass.b = (struct model_batch){
            .n_tokens = c,
            .tokens = e->pass.tokens,
            .pos = e->pass.pos,
            .seq = e->pass.seq_idx,
            .n_seqs = 1,
            .seqs = &e->pass.mseq,
            .n_logits = s->n_computed + c == s->n_tokens,
            .logits_idx = &e->pass.logits_idx,
        };
        if ((rc = be->pass_begin(be->ctx, &e->mkv, &e->pass.b, err)) != 0) {
            e->pass.seq = NULL;
            return rc;
        }
        e->pass.started = 1;
        e->pass.left = be->n_layers;
    }
    int k = e->pass.left;
    if (decoding) {
        k = 1;
        if (e->pass.c_layer > 0 && e->t_decode > 0) {
            double cap = (e->p.prefill_step_ratio - 1.0) * e->t_decode / e->pass.c_layer;
            k = cap < 1 ? 1 : cap > e->pass.left ? e->pass.left : (int)cap;
        }
    }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int left = 0;
    if ((rc = be->pass_run(be->ctx, k, &left, err)) != 0) {
        e->pass.seq = NULL;
        return rc;
    }
    double c = seconds_since(&t0) / (e->pass.left - left > 0 ? e->pass.left - left : 1);
    e->pass.c_layer = e->pass.c_layer > 0 ? 0.875 * e->pass.c_layer + 0.125 * c : c;
    e->pass.left = left;
    if (left > 0) return 0;

    rc = be->pass_finish(be->ctx, e->pass.logits, err);
    if (rc != 0) {
        e->pass.seq = NULL;
        return rc;
    }
    e->st.steps++;
    e->st.iter_tokens_bucket[sched_iter_bucket(e->pass.chunk)]++;
    e->st.iter_tokens_count++;
    e->st.iter_tokens_sum += (uint64_t)e->pass.chunk;
    s->n_computed += e->pass.chunk;
    kv_seq_commit(e->kv, &s->kv, s->tokens, s->n_computed);
    if (!s->prompt_counted && s->n_computed >= s->n_prompt) {
        s->prompt_counted = 1;
        e->st.prompt_tokens_total += (uint64_t)s->n_prompt;
    }
    int sample = e->pass.b.n_logits > 0;
    if (sample) samp_pool_run(&e->pool, 1, 0, sample_pass, e);
    e->pass.seq = NULL;
    if (sample) {
        int i = 0;
        while (i < e->n_running && e->running[i] != s) i++;
        ASSERT(i < e->n_running); /* the pass's sequence is running until it ends */
        take_sample(e, i, &e->pass.out);
    }
    return 0;
}

/* Run the batch build_batch chose: forward, commit, sample, report. n_dec: its decode tokens. */
static int step_batch(struct engine *e, int *n_dec_out, char *err)
{
    int nt = 0, ns = 0, nl = 0, n_dec = 0;
    for (int i = 0; i < e->n_running; i++) {
        struct seq *s = e->running[i];
        if (s->chunk == 0) continue;
        n_dec += s->chunk == 1 && s->n_tokens - s->n_computed == 1;
        ASSERT(nt + s->chunk <= e->p.max_batch_tokens && ns < e->p.max_running);
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
        .n_tokens = nt,
        .tokens = e->b_tokens,
        .pos = e->b_pos,
        .seq = e->b_seq,
        .n_seqs = ns,
        .seqs = e->b_seqs,
        .n_logits = nl,
        .logits_idx = e->b_logits_idx,
    };
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = e->be.forward(e->be.ctx, &e->mkv, &b, e->logits, err);
    if (rc != 0) return rc;
    pace_update(e, nt - n_dec, n_dec, seconds_since(&t0));
    *n_dec_out = n_dec;

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
        while (i < e->n_running && e->running[i] != s) i++;
        ASSERT(i < e->n_running); /* rows belong to running sequences, in batch order */
        take_sample(e, i, &e->b_out[r]);
    }
    return 0;
}

/* One scheduling step; returns 0 or a fatal error. */
int sched_step(struct engine *e, char *err)
{
    admit(e);
    int n_tok = build_batch(e);
    while (n_tok == 0 && !e->pass.seq && e->n_running > 1) {
        /* every running sequence is prefilling and none can get a block: make room */
        preempt_last(e);
        n_tok = build_batch(e);
    }
    if (n_tok == 0 && !e->pass.seq) {
        /* cannot happen: context <= KV capacity, so a lone sequence always fits */
        if (e->n_running == 1) {
            struct seq *s = e->running[--e->n_running];
            LOG_ERR("engine", "request %s cannot get KV blocks", s->req.request_id);
            sched_seq_finish(e, s, ENG_FINISH_ERROR, ERR_INTERNAL);
        }
        return 0;
    }
    int n_dec = 0, rc = n_tok > 0 ? step_batch(e, &n_dec, err) : 0;
    if (rc == 0 && e->pass.seq) rc = pass_step(e, n_dec > 0, err);
    return rc;
}

/* The KV accounting checked against every sequence's block table (eng_debug_check). */
int sched_check(struct engine *e, char *err)
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
