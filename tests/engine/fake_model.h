/* fake_model.h - a tiny deterministic "model" for scheduler tests.
 *
 * The state after tokens t0..tp is a hash chain h_p = mix(h_{p-1}, t_p, p). forward() writes
 * (token, position, h) into the KV row of each token in every layer and reads h_{p-1} back from
 * the row of position p-1 *through the block table*, so any block-table, prefix-sharing or
 * preemption mistake changes the outputs (or is caught: each row must carry its own position
 * and both layers must agree). Logits are a fixed pseudo-random function of h; ids >= n_valid
 * get huge logits, so sampling a padding id is visible. fake_ref_generate() computes what a
 * request must produce when run alone, with the real sampler.
 */
#ifndef TANDEM_FAKE_MODEL_H
#define TANDEM_FAKE_MODEL_H

#include "../../common/err.h"
#include "../../engine/sched/samp.h"
#include "../../engine/sched/sched.h"

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define FAKE_VOCAB 64
#define FAKE_VALID 60
#define FAKE_EOS 3
#define FAKE_LAYERS 2
#define FAKE_KV_DIM 4
#define FAKE_H0 0x2545f491u

struct fake {
    atomic_int delay_us;       /* sleep per forward (to keep requests running) */
    atomic_int delay_token_us; /* and per token of the batch (prefill costs show) */
    atomic_int fail_token;     /* forward fails when it sees this token id (-1 = never) */
    atomic_int hold;           /* while set, a forward waits before it starts (tests order
                                * what happens while the engine is busy, whatever the timing) */
    atomic_long n_forward, n_tokens;
    atomic_int max_seqs_in_batch;
    /* a layered pass (fake_backend_layered): layer 0 computes the chain and writes layer-0 rows,
     * layer 1 writes the layer-1 rows; a decode that reads a row of the pass before its layer 1
     * ran fails ("layers disagree") */
    const struct model_kv *p_kv;
    const struct model_batch *p_b;
    int p_next;
    uint32_t p_h[4096];
    atomic_long n_pass, n_pass_slices, n_pass_abort, max_forwards_in_pass, p_forwards_at_begin;
    atomic_int hold_pass; /* while set, pass_begin waits (after counting the pass) */
};

static inline uint32_t fake_mix(uint32_t h, int32_t tok, int32_t pos)
{
    uint64_t z = ((uint64_t)h << 32) ^ (uint64_t)(uint32_t)tok * 0x9e3779b97f4a7c15ull ^
                 (uint64_t)(uint32_t)pos * 0xc2b2ae3d27d4eb4full;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (uint32_t)(z ^ (z >> 31));
}

static inline void fake_logits(uint32_t h, float *row)
{
    for (int v = 0; v < FAKE_VOCAB; v++) {
        uint32_t x = fake_mix(h, v, 7);
        row[v] = v < FAKE_VALID ? (float)(x % 2000) / 200.0f : 100.0f;
    }
}

static inline int fake_forward(void *ctx, const struct model_kv *kv, const struct model_batch *b,
                               float *logits, char *err)
{
    struct fake *f = ctx;
    uint32_t hs[4096];
    if (b->n_tokens > 4096) return err_set(err, ERR_INVAL, "fake: batch too large");
    while (atomic_load(&f->hold)) usleep(200);
    int us = atomic_load(&f->delay_us) + atomic_load(&f->delay_token_us) * b->n_tokens;
    if (us) usleep((useconds_t)us);
    for (int i = 0; i < b->n_tokens; i++) {
        if (b->tokens[i] == atomic_load(&f->fail_token))
            return err_set(err, ERR_INTERNAL, "fake: failure injected");
        if (b->tokens[i] < 0 || b->tokens[i] >= FAKE_VOCAB)
            return err_set(err, ERR_INVAL, "fake: token %d out of range", b->tokens[i]);
        const struct model_seq *s = &b->seqs[b->seq[i]];
        int pos = b->pos[i], bt = kv->block_tokens;
        if (pos / bt >= s->n_blocks) return err_set(err, ERR_INVAL, "fake: pos beyond table");
        uint32_t prev = FAKE_H0;
        if (pos > 0) {
            int32_t blk = s->blocks[(pos - 1) / bt];
            size_t off = ((size_t)blk * bt + (pos - 1) % bt) * kv->kv_dim;
            const uint16_t *r0 = (const uint16_t *)kv->layer_data[0] + off,
                           *r1 = (const uint16_t *)kv->layer_data[1] + off;
            if (r0[1] != (uint16_t)(pos - 1))
                return err_set(err, ERR_INTERNAL, "fake: KV row of pos %d holds pos %d", pos - 1,
                               r0[1]);
            for (int k = 0; k < 4; k++)
                if ((uint16_t)(r1[k] ^ 0x5555) != r0[k])
                    return err_set(err, ERR_INTERNAL, "fake: layers disagree at pos %d", pos - 1);
            prev = (uint32_t)r0[2] | (uint32_t)r0[3] << 16;
        }
        uint32_t h = fake_mix(prev, b->tokens[i], pos);
        hs[i] = h;
        int32_t blk = s->blocks[pos / bt];
        size_t off = ((size_t)blk * bt + pos % bt) * kv->kv_dim;
        uint16_t row[4] = {(uint16_t)b->tokens[i], (uint16_t)pos, (uint16_t)h, (uint16_t)(h >> 16)};
        for (int k = 0; k < 4; k++) {
            ((uint16_t *)kv->layer_data[0])[off + k] = row[k];
            ((uint16_t *)kv->layer_data[1])[off + k] = row[k] ^ 0x5555;
        }
    }
    for (int j = 0; j < b->n_logits; j++)
        fake_logits(hs[b->logits_idx[j]], logits + (size_t)j * FAKE_VOCAB);
    atomic_fetch_add(&f->n_forward, 1);
    atomic_fetch_add(&f->n_tokens, b->n_tokens);
    if (b->n_seqs > atomic_load(&f->max_seqs_in_batch))
        atomic_store(&f->max_seqs_in_batch, b->n_seqs);
    return 0;
}

/* Row offset of position pos of batch sequence si (checked against the block table). */
static inline int fake_row(const struct model_kv *kv, const struct model_seq *s, int pos,
                           size_t *off, char *err)
{
    int bt = kv->block_tokens;
    if (pos < 0 || pos / bt >= s->n_blocks)
        return err_set(err, ERR_INVAL, "fake: pos beyond table");
    *off = ((size_t)s->blocks[pos / bt] * bt + pos % bt) * kv->kv_dim;
    return 0;
}

static inline int fake_pass_begin(void *ctx, const struct model_kv *kv, const struct model_batch *b,
                                  char *err)
{
    struct fake *f = ctx;
    if (f->p_b) return err_set(err, ERR_INTERNAL, "fake: a pass is already running");
    if (b->n_tokens > 4096 || b->n_seqs != 1) return err_set(err, ERR_INVAL, "fake: bad pass");
    f->p_kv = kv;
    f->p_b = b;
    f->p_next = 0;
    atomic_fetch_add(&f->n_pass, 1);
    atomic_store(&f->p_forwards_at_begin, atomic_load(&f->n_forward));
    while (atomic_load(&f->hold_pass)) usleep(200);
    return 0;
}

static inline int fake_pass_run(void *ctx, int n_layers, int *left, char *err)
{
    struct fake *f = ctx;
    const struct model_batch *b = f->p_b;
    const struct model_kv *kv = f->p_kv;
    if (!b) return err_set(err, ERR_INTERNAL, "fake: no pass");
    atomic_fetch_add(&f->n_pass_slices, 1);
    long during = atomic_load(&f->n_forward) - atomic_load(&f->p_forwards_at_begin);
    if (during > atomic_load(&f->max_forwards_in_pass))
        atomic_store(&f->max_forwards_in_pass, during);
    const struct model_seq *s = &b->seqs[0];
    for (int k = 0; k < n_layers && f->p_next < FAKE_LAYERS; k++, f->p_next++) {
        usleep((useconds_t)(atomic_load(&f->delay_token_us) * b->n_tokens / FAKE_LAYERS));
        uint16_t *l0 = kv->layer_data[0], *l1 = kv->layer_data[1];
        for (int i = 0; i < b->n_tokens; i++) {
            int pos = b->pos[i];
            size_t off = 0, poff = 0;
            if (fake_row(kv, s, pos, &off, err)) return ERR_INVAL;
            if (f->p_next == 1) {
                if (l0[off + 1] != (uint16_t)pos)
                    return err_set(err, ERR_INTERNAL, "fake: pass row of pos %d lost", pos);
                for (int c = 0; c < 4; c++) l1[off + c] = l0[off + c] ^ 0x5555;
                continue;
            }
            uint32_t prev = FAKE_H0;
            if (pos > 0) {
                if (fake_row(kv, s, pos - 1, &poff, err)) return ERR_INVAL;
                if (l0[poff + 1] != (uint16_t)(pos - 1))
                    return err_set(err, ERR_INTERNAL, "fake: KV row of pos %d holds pos %d",
                                   pos - 1, l0[poff + 1]);
                prev = (uint32_t)l0[poff + 2] | (uint32_t)l0[poff + 3] << 16;
            }
            uint32_t h = fake_mix(prev, b->tokens[i], pos);
            f->p_h[i] = h;
            uint16_t row[4] = {(uint16_t)b->tokens[i], (uint16_t)pos, (uint16_t)h,
                               (uint16_t)(h >> 16)};
            memcpy(l0 + off, row, sizeof row);
        }
    }
    *left = FAKE_LAYERS - f->p_next;
    return 0;
}

static inline int fake_pass_finish(void *ctx, float *logits, char *err)
{
    struct fake *f = ctx;
    const struct model_batch *b = f->p_b;
    if (!b || f->p_next < FAKE_LAYERS) return err_set(err, ERR_INTERNAL, "fake: pass not done");
    for (int j = 0; j < b->n_logits; j++)
        fake_logits(f->p_h[b->logits_idx[j]], logits + (size_t)j * FAKE_VOCAB);
    atomic_fetch_add(&f->n_tokens, b->n_tokens);
    f->p_b = NULL;
    return 0;
}

static inline void fake_pass_abort(void *ctx)
{
    struct fake *f = ctx;
    f->p_b = NULL;
    atomic_fetch_add(&f->n_pass_abort, 1);
}

static inline struct sched_backend fake_backend(struct fake *f)
{
    memset(f, 0, sizeof *f);
    atomic_store(&f->fail_token, -1);
    struct sched_backend be = {
        .ctx = f,
        .vocab = FAKE_VOCAB,
        .n_valid = FAKE_VALID,
        .n_layers = FAKE_LAYERS,
        .kv_dim = FAKE_KV_DIM,
        .forward = fake_forward,
        .destroy = NULL,
    };
    return be;
}

/* What `req` must produce alone: tokens into out (up to max_out), returns the count and the
 * finish reason. Mirrors the scheduler's stop rules. */
static inline int fake_ref_generate(const struct eng_request *req, const int32_t *prompt,
                                    int context, int32_t *out, int max_out, enum eng_finish *fin)
{
    struct samp *s;
    char err[ERR_LEN];
    if (samp_create(FAKE_VOCAB, &s, err) != 0) return -1;
    struct samp_rng rng;
    samp_rng_seed(&rng, req->samp.seed);
    int32_t *all = malloc(sizeof(int32_t) * (size_t)(req->n_prompt + max_out + 1));
    memcpy(all, prompt, sizeof(int32_t) * (size_t)req->n_prompt);
    uint32_t h = FAKE_H0;
    for (int p = 0; p < req->n_prompt; p++) h = fake_mix(h, prompt[p], p);
    int room = context - req->n_prompt;
    int max_gen = req->max_tokens < room ? req->max_tokens : room;
    int n = 0;
    *fin = ENG_FINISH_LENGTH;
    float row[FAKE_VOCAB];
    while (n < max_gen && n < max_out) {
        fake_logits(h, row);
        int32_t banned[ENG_MAX_STOP_IDS + 1];
        int nb = 0;
        if (n < req->min_tokens) {
            if (!req->ignore_eos) banned[nb++] = FAKE_EOS;
            for (int i = 0; i < req->n_stop_ids; i++) banned[nb++] = req->stop_ids[i];
        }
        struct samp_input in = {.p = &req->samp,
                                .prompt = all,
                                .n_prompt = req->n_prompt,
                                .gen = all + req->n_prompt,
                                .n_gen = n,
                                .banned = banned,
                                .n_banned = nb};
        struct samp_out o;
        samp_sample(s, row, FAKE_VALID, &in, &rng, &o);
        out[n] = o.token;
        all[req->n_prompt + n] = o.token;
        n++;
        int stop = (!req->ignore_eos && o.token == FAKE_EOS);
        for (int i = 0; i < req->n_stop_ids; i++) stop |= o.token == req->stop_ids[i];
        if (stop) {
            *fin = ENG_FINISH_STOP;
            break;
        }
        h = fake_mix(h, o.token, req->n_prompt + n - 1);
    }
    free(all);
    samp_destroy(s);
    return n;
}

/* fake_backend with layered passes. */
static inline struct sched_backend fake_backend_layered(struct fake *f)
{
    struct sched_backend be = fake_backend(f);
    be.pass_begin = fake_pass_begin;
    be.pass_run = fake_pass_run;
    be.pass_finish = fake_pass_finish;
    be.pass_abort = fake_pass_abort;
    return be;
}

#endif
