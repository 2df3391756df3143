/* samp.h - the token sampler: one row of logits + a request's sampling parameters -> a token.
 *
 * Pipeline, in this order (each stage documented in sampler.c):
 *   1. only ids < n_valid are candidates (vocabulary padding rows of lm_head are ignored);
 *   2. logit bias (added), repetition penalty over prompt + generated tokens (HF / llama.cpp:
 *      a positive logit is divided by it, a negative one multiplied), presence and frequency
 *      penalties over the generated tokens (OpenAI: l -= presence * [count > 0] + frequency *
 *      count), banned ids (EOS / stop ids before min_tokens) set to -inf;
 *   3. logprobs, when asked for, are the log-softmax of these logits (after bias, penalties and
 *      bans, before temperature and truncation) -- vLLM's "processed_logprobs";
 *   4. temperature 0 (or top_k 1): argmax, ties to the lowest id. Otherwise: divide by the
 *      temperature, keep the top_k largest, then the smallest set whose probability reaches
 *      top_p, then those with p >= min_p * p_max, and draw from what is left with the request's
 *      RNG. No stage sorts the vocabulary: selections are linear-time partitions.
 * The same logits, parameters and RNG state always give the same token (and RNG state).
 *
 * Threads: a struct samp holds scratch buffers and is used by one thread (the engine thread).
 * A struct samp_rng belongs to one request. Ownership: samp_sample borrows everything; it may
 * modify the logits row in place.
 */
#ifndef TANDEM_SAMP_H
#define TANDEM_SAMP_H

#include "engine/engine.h"

#include <stdint.h>

/* Per-request random state (xoshiro256**), seeded with samp_rng_seed. */
struct samp_rng {
    uint64_t s[4];
};

void samp_rng_seed(struct samp_rng *r, uint64_t seed);
uint64_t samp_rng_next(struct samp_rng *r);
double samp_rng_uniform(struct samp_rng *r); /* [0, 1) with 53 random bits */

struct samp;

/* Scratch for vocabularies of up to `vocab` ids. Errors: ERR_NOMEM, ERR_INVAL (vocab < 1). */
int samp_create(int vocab, struct samp **out, char *err);
void samp_destroy(struct samp *s);

/* What samp_sample needs besides the logits. Arrays are borrowed for the call. */
struct samp_input {
    const struct eng_sampling *p;
    const int32_t *prompt; /* for the repetition penalty */
    int n_prompt;
    const int32_t *gen; /* generated so far (penalties) */
    int n_gen;
    const int32_t *banned; /* ids that must not be drawn (-inf) */
    int n_banned;
};

struct samp_out {
    int32_t token;
    float logprob; /* of `token`, when logprobs or top_logprobs are asked for */
    int n_top;     /* = p->top_logprobs (capped by n_valid) */
    int32_t top_ids[ENG_MAX_TOP_LOGPROBS]; /* descending logprob, ties by lower id */
    float top_logprobs[ENG_MAX_TOP_LOGPROBS];
};

/* Check parameters (ranges, logit bias ids < vocab). Returns 0 or ERR_INVAL naming the field. */
int samp_check(const struct eng_sampling *p, int vocab, char *err);

/* Sample one token from logits[0..n_valid) (modified in place). n_valid <= the vocab given to
 * samp_create. Always succeeds when some id has a finite logit; if every id is banned or -inf,
 * returns the lowest non-banned id (or 0). */
void samp_sample(struct samp *s, float *logits, int n_valid, const struct samp_input *in,
                 struct samp_rng *rng, struct samp_out *out);

#endif
