/* engine_thread.c - the engine: its public API (engine.h) and the engine thread's loop.
 *
 * What: eng_create_backend sets up the KV cache (one anonymous mapping, pages committed as
 * they are first written), the batch buffers and the sampling pool, and starts the engine
 * thread; eng_submit validates a request and puts it in the inbox (ERR_QUEUE_FULL when the
 * bounded queue is full), eng_cancel adds an id to the cancel list; eng_drain, eng_info,
 * eng_stats and eng_debug_check answer from the published state. The thread sleeps until there
 * is work, then once per step swaps the inbox and the cancel list out under the lock, hands
 * them to the scheduler (scheduler.c), runs one step and publishes the stats. A forward
 * failure stops the engine: everything in flight ends with an error, and so does everything
 * submitted afterwards.
 * Threads and locking: one mutex (e->mu) guards the inbox, the cancel list, the published
 * stats and the flags; API calls take it briefly from any thread. The scheduler's state
 * belongs to the engine thread alone, which holds no lock while computing or calling the
 * requests' callbacks.
 * Ownership: after a successful create the engine owns the backend (destroyed by
 * eng_destroy); after a successful eng_submit it owns the request's arrays and constraint.
 */
#include "sched_internal.h"

#include "common/err.h"
#include "common/log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* ---- the thread */

/* Publish the state after a step for eng_stats and admission control (under mu). */
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
            if (sched_enqueue(e, inbox[i]) != 0)
                sched_seq_finish(e, inbox[i], ENG_FINISH_ERROR, ERR_NOMEM);
        sched_cancel(e, cancels, nc);
        if (check) {
            char cerr[ERR_LEN] = "";
            int rc = sched_check(e, cerr);
            pthread_mutex_lock(&e->mu);
            e->check_rc = rc;
            memcpy(e->check_err, cerr, ERR_LEN);
            e->check_req = 0;
            e->check_done = 1;
            pthread_cond_broadcast(&e->cv_check);
            pthread_mutex_unlock(&e->mu);
        }
        if (e->failed) {
            sched_finish_all(e, ENG_FINISH_ERROR, ERR_UNAVAILABLE);
        } else if (e->n_running > 0 || e->n_waiting > 0) {
            int rc = sched_step(e, err);
            if (rc != 0) {
                LOG_ERR("engine", "forward failed, engine stops: %s", err);
                pthread_mutex_lock(&e->mu);
                e->failed = 1;
                pthread_mutex_unlock(&e->mu);
                sched_finish_all(e, ENG_FINISH_ERROR, rc);
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
        if (sched_enqueue(e, e->inbox[i]) != 0)
            sched_seq_finish(e, e->inbox[i], ENG_FINISH_CANCELLED, 0);
    sched_finish_all(e, ENG_FINISH_CANCELLED, 0);
    return NULL;
}

/* ---- public API */

static void engine_free(struct engine *e)
{
    samp_pool_fini(&e->pool);
    free(e->b_row_owner);
    free(e->b_out);
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
    free(e->pass.tokens);
    free(e->pass.pos);
    free(e->pass.seq_idx);
    free(e->pass.logits);
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
        (be->kv_type != MODEL_KV_BF16 && be->kv_type != MODEL_KV_F32) ||
        p->layered_prefill_tokens < 0 ||
        (!be->pass_begin + !be->pass_run + !be->pass_finish + !be->pass_abort) % 4 != 0)
        return err_set(err, ERR_INVAL, "engine: bad parameters");
    struct engine *e = calloc(1, sizeof *e);
    if (!e) return err_set(err, ERR_NOMEM, "engine: out of memory");
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    pthread_cond_init(&e->cv_check, NULL);
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
    if ((rc = samp_pool_init(&e->pool, p->sample_threads, be->vocab, err)) != 0) goto fail;

    /* KV storage: one anonymous mapping, pages committed as they are first written */
    size_t per_layer =
        (size_t)p->kv_blocks * p->kv_block_tokens * be->kv_dim * model_kv_elem_size(be->kv_type);
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
    if (!e->mkv.layer_data || !e->running || !e->b_tokens || !e->b_pos || !e->b_seq || !e->b_seqs ||
        !e->b_owner || !e->b_logits_idx || !e->b_logit_row || !e->logits || !e->b_row_owner ||
        !e->b_out) {
        rc = err_set(err, ERR_NOMEM, "engine: out of memory for batch buffers");
        goto fail;
    }
    if (!be->pass_begin) e->p.layered_prefill_tokens = 0;
    if (e->p.layered_prefill_tokens > 0) {
        e->pass.tokens = malloc((size_t)mb * sizeof *e->pass.tokens);
        e->pass.pos = malloc((size_t)mb * sizeof *e->pass.pos);
        e->pass.seq_idx = calloc((size_t)mb, sizeof *e->pass.seq_idx);
        e->pass.logits = malloc((size_t)be->vocab * sizeof *e->pass.logits);
        if (!e->pass.tokens || !e->pass.pos || !e->pass.seq_idx || !e->pass.logits) {
            rc = err_set(err, ERR_NOMEM, "engine: out of memory for batch buffers");
            goto fail;
        }
    }
    for (int l = 0; l < be->n_layers; l++) e->mkv.layer_data[l] = (char *)e->kv_mem + per_layer * l;
    if ((rc = samp_pool_start(&e->pool, err)) != 0) goto fail;
    e->next_id = 1;
    publish(e);
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        rc = err_set(err, ERR_NOMEM, "engine: cannot start the engine thread");
        goto fail;
    }
    e->thread_started = 1;
    LOG_INFO("engine",
             "KV cache: %d blocks x %d tokens (%.2f GiB, %s), context %d, max_running "
             "%d, max_batch_tokens %d, prefix cache %s",
             p->kv_blocks, p->kv_block_tokens, (double)e->kv_bytes / (1 << 30),
             be->kv_type == MODEL_KV_F32 ? "f32" : "bf16", e->p.context, mr, mb,
             p->prefix_cache ? "on" : "off");
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
                       "tokens (plus at least 1 to generate)",
                       e->p.context, req->n_prompt);

    struct seq *s = sched_seq_new(e, req);
    if (!s) return err_set(err, ERR_NOMEM, "out of memory");

    pthread_mutex_lock(&e->mu);
    if (e->stop || e->draining || e->failed) {
        int failed = e->failed;
        pthread_mutex_unlock(&e->mu);
        sched_seq_free(s);
        return err_set(err, ERR_UNAVAILABLE, failed ? "engine failed" : "server is draining");
    }
    int free_slots = e->p.max_running - e->pub_running;
    if (free_slots < 0) free_slots = 0;
    int queued = e->pub_waiting + e->n_inbox;
    if (queued >= e->p.max_queued + free_slots) {
        pthread_mutex_unlock(&e->mu);
        sched_seq_free(s);
        return err_set(err, ERR_QUEUE_FULL, "server busy: %d requests waiting (engine.max_queued)",
                       queued);
    }
    if (e->n_inbox == e->cap_inbox) {
        int cap = e->cap_inbox ? e->cap_inbox * 2 : 64;
        struct seq **ib = realloc(e->inbox, (size_t)cap * sizeof *ib);
        if (!ib) {
            pthread_mutex_unlock(&e->mu);
            sched_seq_free(s);
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
    memset(&req->constraint, 0, sizeof req->constraint); /* the engine destroys it now */
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
        if (!c) { /* cannot record it; the request still ends by its own limits */
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
    if (e->be.stats) e->be.stats(e->be.ctx, out);
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
