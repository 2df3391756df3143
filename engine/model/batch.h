/* batch.h - what one forward step runs on: the caller's paged latent KV cache and a batch of
 * tokens from one or more sequences. Plain views shared by the model (model.h), the backends
 * (ops.h) and the scheduler, so none of them needs another's header.
 *
 * A batch is a flat list of tokens. Token i belongs to sequence seq[i] and sits at absolute
 * position pos[i]; its latent KV entry (the normalized kv_lora_rank latent plus the qk_rope
 * rotated key) is written to the sequence's block table at slot pos[i] (block =
 * blocks[pos / block_tokens], row = pos % block_tokens) in every layer, and it attends to
 * positions 0..pos[i] of its sequence.
 *
 * Ownership: every pointer is borrowed from the caller for the duration of one call; nothing
 * here allocates. Threads: plain data.
 */
#ifndef TANDEM_MODEL_BATCH_H
#define TANDEM_MODEL_BATCH_H

#include <stddef.h>
#include <stdint.h>

/* Element type of the latent cache: bf16 is the numerics contract (docs/numerics.md); f32 keeps
 * the latents unrounded at twice the memory (engine.kv_cache_type; the GPU MLA kernels read bf16
 * only, so with f32 the hybrid backend runs attention on the CPU). */
enum model_kv_type { MODEL_KV_BF16 = 0, MODEL_KV_F32 = 1 };
static inline size_t model_kv_elem_size(int type) { return type == MODEL_KV_F32 ? 4 : 2; }

/* Caller-owned paged KV storage: for each layer, n_blocks blocks of block_tokens rows of
 * kv_dim (= kv_lora_rank + qk_rope) values of `type`; row r of layer l starts at byte
 * (char *)layer_data[l] + r * kv_dim * model_kv_elem_size(type), r = block * block_tokens + i.
 * A zero-initialized struct is bf16. */
struct model_kv {
    int n_layers, n_blocks, block_tokens, kv_dim;
    int type; /* enum model_kv_type */
    void **layer_data;
};

struct model_seq {
    const int32_t *blocks; /* block table: block ids covering positions 0..n_pos-1 */
    int n_blocks;
};

struct model_batch {
    int n_tokens;
    const int32_t *tokens; /* [n_tokens] */
    const int32_t *pos;    /* [n_tokens] absolute positions */
    const int32_t *seq;    /* [n_tokens] index into seqs */
    int n_seqs;
    const struct model_seq *seqs;
    int n_logits;
    const int32_t *logits_idx; /* [n_logits] batch indices whose logits are wanted */
};

#endif
