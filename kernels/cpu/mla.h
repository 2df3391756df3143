/* mla.h - absorbed MLA attention over a paged latent cache on the CPU worker pool, and the store
 * of a batch's latent rows into that cache.
 *
 * The cache (one layer): rows of kv_dim values (the kv_lora normalized latent, then the rope
 * rotated key), bf16 or fp32; position p of a sequence with block table B sits in row
 * B[p / block_tokens] * block_tokens + p % block_tokens.
 * Attention, per token t and head h (q [n][n_heads][kv_dim]: the absorbed query q~ | rotated
 * q_pe; out [n][n_heads][kv_lora]):
 *   out[t,h] = sum_{s <= pos[t]} softmax_s(scale * q[t,h] . k_s) * latent_s
 * over the slots 0..pos[t] of token t's sequence (all of which must be written), fp32 with an
 * online softmax. Causal by absolute position, so prefill chunks, decode tokens and several
 * sequences mix freely in one batch.
 *
 * Numerics, per (token, head) row: within a segment of 256 keys exactly a row-at-a-time online
 * softmax (scores = scale * the 16-lane dot of f32.h, the chunk's running max, corr =
 * expf(m_old - m_new), the sum and accumulator scaled by corr, then p_k = expf(s_k - m) added key
 * by key in order); segments are then folded in key order. Nothing depends on the other rows of
 * the batch or on how the work is cut: batched equals alone, chunked prefill equals one-shot, and
 * any thread count gives the same bits (tests/kernels/test_mla.c).
 *
 * Threads: cpuq_mla_attn runs on the pool's owner thread (NULL pool: the caller alone); the
 * scratch belongs to the caller and serves one call at a time. cpuq_mla_store is pure.
 */
#ifndef TANDEM_CPUQ_MLA_H
#define TANDEM_CPUQ_MLA_H

#include <stdint.h>

#include "kernels/cpu/wpool.h"

/* One layer of the paged latent cache (caller-owned). */
struct cpuq_mla_cache {
    void *data;       /* row r at data + r * kv_dim * (f32 ? 4 : 2) bytes */
    int f32;          /* 1: fp32 rows; 0: bf16 rows (the numerics contract) */
    int kv_dim;       /* values per row: kv_lora + rope */
    int block_tokens; /* rows per block */
};

/* The batch's tokens: token t belongs to sequence seq[t] at absolute position pos[t]; blocks[s]
 * is sequence s's block table, covering every position its tokens use. Tokens of one sequence
 * that follow each other in the batch are attended together (share key loads). */
struct cpuq_mla_batch {
    int n;
    const int32_t *pos;           /* [n] */
    const int32_t *seq;           /* [n] */
    const int32_t *const *blocks; /* [number of sequences] */
};

/* Buffers reused across calls: they grow to the largest call seen and are never shrunk. */
struct cpuq_mla_scratch;
int cpuq_mla_scratch_create(struct cpuq_mla_scratch **out, char *err);
void cpuq_mla_scratch_destroy(struct cpuq_mla_scratch *s); /* NULL is fine */

/* Attention of every token of b (see above) into out. kv_lora <= c->kv_dim. Errors: ERR_NOMEM
 * (scratch growth; out is then not written). */
int cpuq_mla_attn(struct wpool *p, const struct cpuq_mla_cache *c, const struct cpuq_mla_batch *b,
                  int n_heads, int kv_lora, float scale, const float *q, float *out,
                  struct cpuq_mla_scratch *s, char *err);

/* Write x [b->n][c->kv_dim] (fp32) into the cache rows of the batch's positions, rounded to bf16
 * (round to nearest even) or copied as fp32. */
void cpuq_mla_store(const struct cpuq_mla_cache *c, const struct cpuq_mla_batch *b, const float *x);

#endif
