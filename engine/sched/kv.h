/* kv.h - paged KV cache accounting: blocks, per-sequence block tables, the prefix cache.
 *
 * The cache is n_blocks blocks of block_tokens token slots each; one block id covers the same
 * slots in every layer (the storage itself is a struct model_kv owned by the engine; this module
 * only hands out block ids). A sequence's block table lists the blocks covering its positions
 * 0, block_tokens, 2*block_tokens, ...; blocks are taken on demand as it grows.
 *
 * Block states:
 *   free     on the free list, ref 0, no key;
 *   private  ref > 0, no key (a partly filled block, or a full one whose key was already cached);
 *   cached   has a prefix key (it is full and its content is known); ref >= 0; with ref 0 it is on
 *            the LRU list and may be evicted (its key dropped) when the free list is empty.
 * A prefix key is (salt, parent block id, parent generation, the block's block_tokens token ids),
 * bucketed by a hash chain hash(parent hash, tokens). A lookup walks from the first block and
 * compares parent and tokens exactly, so a hit is always exactly the same prefix of tokens: no
 * hash collision can make two different prefixes share KV. A block's generation changes when it
 * is evicted, which orphans the keys of its cached children (they are evicted in turn by LRU).
 * The salt is the sequence's namespace: a sequence only matches blocks committed under the same
 * salt (also compared exactly), so callers in different namespaces never see each other's
 * prefixes (cache hits and timing would tell them; server/cache_scope.h).
 *
 * Accounting invariant (kv_check): every block is exactly one of free / referenced / cached with
 * ref 0 (LRU), and refs equal the number of block-table entries pointing at each block.
 *
 * Threads: used only by the engine thread. Ownership: the cache owns its arrays; a struct kv_seq
 * is caller storage (init/fini) whose block array the cache manages.
 */
#ifndef TANDEM_KV_H
#define TANDEM_KV_H

#include <stdint.h>

struct kv_cache;

struct kv_seq {
    int32_t *blocks; /* block table */
    int n_blocks, cap;
    int n_keyed;        /* leading blocks whose prefix key is known (cached or dup) */
    int32_t key_parent; /* canonical cached block of block n_keyed-1, or -1 */
    uint32_t key_parent_gen;
    uint64_t key_hash; /* hash chain up to block n_keyed-1 */
    uint64_t salt;     /* prefix-cache namespace (kv_seq_set_salt) */
};

struct kv_params {
    int n_blocks;
    int block_tokens;
    int prefix_cache; /* 0: no keys, freed blocks go straight to the free list */
};

/* Errors: ERR_INVAL (sizes), ERR_NOMEM. */
int kv_create(const struct kv_params *p, struct kv_cache **out, char *err);
void kv_destroy(struct kv_cache *kv);

void kv_seq_init(struct kv_seq *s);
/* Put an empty seq (just initialized) in namespace `salt` (0 = the common one, the default);
 * kv_seq_free keeps it. */
void kv_seq_set_salt(struct kv_seq *s, uint64_t salt);
/* Release the table's memory (call kv_seq_free first if it still holds blocks). */
void kv_seq_fini(struct kv_seq *s);
/* Drop all of the sequence's references (cached blocks stay cached; others become free). The
 * seq is empty afterwards and may be reused. Tail blocks go to the LRU first, so a sequence's
 * last blocks are evicted before its first ones. */
void kv_seq_free(struct kv_cache *kv, struct kv_seq *s);

/* For an empty seq: reuse the longest cached prefix of tokens[0..n) made of whole blocks, but
 * never all n tokens (the last one is always recomputed so there are logits). Returns the
 * number of tokens reused (a multiple of block_tokens, possibly 0). Never fails. */
int kv_seq_match(struct kv_cache *kv, struct kv_seq *s, const int32_t *tokens, int n);

/* Make the block table cover positions 0..n_tokens-1, taking free blocks and then evicting
 * least-recently-used cached blocks. All or nothing: returns 0, or ERR_NOMEM (nothing taken)
 * when not enough blocks are available. */
int kv_seq_reserve(struct kv_cache *kv, struct kv_seq *s, int n_tokens);

/* tokens[0..n_computed) are now in the cache: give every newly full block its prefix key. */
void kv_seq_commit(struct kv_cache *kv, struct kv_seq *s, const int32_t *tokens, int n_computed);

int kv_block_tokens(const struct kv_cache *kv);
int kv_n_blocks(const struct kv_cache *kv);
int kv_n_free(const struct kv_cache *kv);        /* free list only */
int kv_n_cached_idle(const struct kv_cache *kv); /* cached with ref 0 (evictable) */
int kv_n_available(const struct kv_cache *kv);   /* free + evictable */
/* Blocks needed to hold n tokens. */
static inline int kv_blocks_for(const struct kv_cache *kv, int n)
{
    int bt = kv_block_tokens(kv);
    return (n + bt - 1) / bt;
}

/* Verify the accounting invariant against the given live sequences. Returns 0, or
 * ERR_INTERNAL with the first inconsistency in err. Costs O(n_blocks + table sizes). */
int kv_check(const struct kv_cache *kv, const struct kv_seq *const *seqs, int n_seqs, char *err);

#endif
