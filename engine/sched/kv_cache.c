/* kv_cache.c - block allocator, block tables and the exact-match prefix cache.
 *
 * What: hands out KV block ids to sequences (kv.h describes the states). Free blocks sit on a
 * stack; cached blocks with no reference sit on an LRU list (doubly linked through lru_prev /
 * lru_next; head = least recently used); keyed blocks are in a chained hash table whose buckets
 * are indexed by the hash chain value.
 *
 * Why keys include the parent block id and generation: comparing a block's own tokens on a hit
 * is not enough to prove the whole prefix matches (two prefixes could collide in the 64-bit
 * chain hash). Walking from the root and requiring each block's stored parent to be the block
 * matched one level up makes a hit an exact prefix match by induction. Evicting a block bumps its
 * generation, so keys of children stored under the old generation can never match again.
 *
 * Invariants: ref[b] = number of table entries naming b; ref 0 => b is on the free stack (not
 * keyed) or on the LRU list (keyed); ref > 0 => on neither. kv_check verifies this in full (the
 * tests call it after every step); the ASSERTs below check the parts that are cheap at each
 * operation (ids in range, refs never negative, list and stack counts within n_blocks, LRU links
 * consistent, a block keyed at most once), so that broken accounting stops the process at the
 * operation that broke it instead of handing one block to two sequences.
 * Threads: engine thread only.
 */
#include "kv.h"

#include "common/err.h"
#include "common/log.h"

#include <stdlib.h>
#include <string.h>

#define HASH_ROOT 0x6a09e667f3bcc908ull

struct kv_cache {
    int n_blocks, bt, prefix;
    int32_t *ref;
    uint8_t *keyed;
    uint32_t *gen;
    uint64_t *hash;  /* keyed: chain hash */
    uint64_t *salt;  /* keyed: namespace of the sequence that committed it */
    int32_t *parent; /* keyed: parent block id or -1 */
    uint32_t *parent_gen;
    int32_t *toks;  /* keyed: [n_blocks][bt] the block's tokens */
    int32_t *hnext; /* bucket chain */
    int32_t *buckets;
    uint32_t bucket_mask;
    int32_t *free_stack;
    int n_free;
    int32_t *lru_prev, *lru_next;
    int32_t lru_head, lru_tail;
    int n_lru;
};

int kv_create(const struct kv_params *p, struct kv_cache **out, char *err)
{
    *out = NULL;
    if (p->n_blocks < 1 || p->block_tokens < 1 || p->n_blocks > (1 << 30))
        return err_set(err, ERR_INVAL, "kv cache: bad size (%d blocks of %d tokens)", p->n_blocks,
                       p->block_tokens);
    struct kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv) return err_set(err, ERR_NOMEM, "kv cache: out of memory");
    size_t n = (size_t)p->n_blocks;
    kv->n_blocks = p->n_blocks;
    kv->bt = p->block_tokens;
    kv->prefix = p->prefix_cache;
    uint32_t nb = 1;
    while (nb < n && nb < (1u << 30)) nb <<= 1;
    kv->bucket_mask = nb - 1;
    kv->ref = calloc(n, sizeof *kv->ref);
    kv->keyed = calloc(n, 1);
    kv->gen = calloc(n, sizeof *kv->gen);
    kv->hash = calloc(n, sizeof *kv->hash);
    kv->salt = calloc(n, sizeof *kv->salt);
    kv->parent = calloc(n, sizeof *kv->parent);
    kv->parent_gen = calloc(n, sizeof *kv->parent_gen);
    kv->toks = p->prefix_cache ? calloc(n * (size_t)p->block_tokens, sizeof *kv->toks) : NULL;
    kv->hnext = calloc(n, sizeof *kv->hnext);
    kv->buckets = malloc(nb * sizeof *kv->buckets);
    kv->free_stack = malloc(n * sizeof *kv->free_stack);
    kv->lru_prev = malloc(n * sizeof *kv->lru_prev);
    kv->lru_next = malloc(n * sizeof *kv->lru_next);
    if (!kv->ref || !kv->keyed || !kv->gen || !kv->hash || !kv->salt || !kv->parent ||
        !kv->parent_gen || (p->prefix_cache && !kv->toks) || !kv->hnext || !kv->buckets ||
        !kv->free_stack || !kv->lru_prev || !kv->lru_next) {
        kv_destroy(kv);
        return err_set(err, ERR_NOMEM, "kv cache: out of memory for %d blocks", p->n_blocks);
    }
    for (uint32_t i = 0; i < nb; i++) kv->buckets[i] = -1;
    /* the stack pops low ids first */
    for (int i = 0; i < p->n_blocks; i++) kv->free_stack[i] = p->n_blocks - 1 - i;
    kv->n_free = p->n_blocks;
    kv->lru_head = kv->lru_tail = -1;
    *out = kv;
    return 0;
}

void kv_destroy(struct kv_cache *kv)
{
    if (!kv) return;
    free(kv->ref);
    free(kv->keyed);
    free(kv->gen);
    free(kv->hash);
    free(kv->salt);
    free(kv->parent);
    free(kv->parent_gen);
    free(kv->toks);
    free(kv->hnext);
    free(kv->buckets);
    free(kv->free_stack);
    free(kv->lru_prev);
    free(kv->lru_next);
    free(kv);
}

/* b names a block of this cache */
#define ASSERT_BLOCK(kv, b) ASSERT((b) >= 0 && (b) < (kv)->n_blocks)

int kv_block_tokens(const struct kv_cache *kv) { return kv->bt; }
int kv_n_blocks(const struct kv_cache *kv) { return kv->n_blocks; }
int kv_n_free(const struct kv_cache *kv) { return kv->n_free; }
int kv_n_cached_idle(const struct kv_cache *kv) { return kv->n_lru; }
int kv_n_available(const struct kv_cache *kv) { return kv->n_free + kv->n_lru; }

/* ---- hashing */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t chain_hash(uint64_t parent, const int32_t *t, int n)
{
    uint64_t h = mix64(parent ^ 0x9e3779b97f4a7c15ull);
    for (int i = 0; i < n; i++) h = mix64(h ^ (uint32_t)t[i]) + 0x9e3779b97f4a7c15ull;
    return h;
}

/* The chain hash before the first block of a sequence in namespace salt. */
static uint64_t root_hash(uint64_t salt) { return salt ? mix64(HASH_ROOT ^ salt) : HASH_ROOT; }

static int32_t key_find(const struct kv_cache *kv, uint64_t salt, uint64_t h, int32_t parent,
                        uint32_t pgen, const int32_t *t)
{
    for (int32_t b = kv->buckets[h & kv->bucket_mask]; b >= 0; b = kv->hnext[b]) {
        ASSERT_BLOCK(kv, b);
        if (kv->hash[b] == h && kv->salt[b] == salt && kv->parent[b] == parent &&
            kv->parent_gen[b] == pgen &&
            memcmp(&kv->toks[(size_t)b * kv->bt], t, (size_t)kv->bt * sizeof *t) == 0)
            return b;
    }
    return -1;
}

static void key_insert(struct kv_cache *kv, int32_t b, uint64_t salt, uint64_t h, int32_t parent,
                       uint32_t pgen, const int32_t *t)
{
    ASSERT_BLOCK(kv, b);
    ASSERT(!kv->keyed[b]); /* one key per block, one chain entry */
    kv->keyed[b] = 1;
    kv->hash[b] = h;
    kv->salt[b] = salt;
    kv->parent[b] = parent;
    kv->parent_gen[b] = pgen;
    memcpy(&kv->toks[(size_t)b * kv->bt], t, (size_t)kv->bt * sizeof *t);
    int32_t *head = &kv->buckets[h & kv->bucket_mask];
    kv->hnext[b] = *head;
    *head = b;
}

static void key_remove(struct kv_cache *kv, int32_t b)
{
    ASSERT_BLOCK(kv, b);
    ASSERT(kv->keyed[b]);
    int32_t *pp = &kv->buckets[kv->hash[b] & kv->bucket_mask];
    while (*pp != b) {
        ASSERT(*pp >= 0); /* a keyed block is on its bucket's chain */
        pp = &kv->hnext[*pp];
    }
    *pp = kv->hnext[b];
    kv->keyed[b] = 0;
    kv->gen[b]++;
}

/* ---- LRU list */

static void lru_push_tail(struct kv_cache *kv, int32_t b)
{
    ASSERT(kv->keyed[b] && kv->ref[b] == 0);
    ASSERT(kv->n_lru + kv->n_free < kv->n_blocks);
    kv->lru_prev[b] = kv->lru_tail;
    kv->lru_next[b] = -1;
    if (kv->lru_tail >= 0) kv->lru_next[kv->lru_tail] = b;
    else kv->lru_head = b;
    kv->lru_tail = b;
    kv->n_lru++;
}

static void lru_unlink(struct kv_cache *kv, int32_t b)
{
    ASSERT(kv->n_lru > 0 && kv->keyed[b]);
    int32_t p = kv->lru_prev[b], n = kv->lru_next[b];
    ASSERT(p >= 0 ? kv->lru_next[p] == b : kv->lru_head == b);
    ASSERT(n >= 0 ? kv->lru_prev[n] == b : kv->lru_tail == b);
    if (p >= 0) kv->lru_next[p] = n;
    else kv->lru_head = n;
    if (n >= 0) kv->lru_prev[n] = p;
    else kv->lru_tail = p;
    kv->n_lru--;
}

/* ---- sequences */

void kv_seq_init(struct kv_seq *s)
{
    memset(s, 0, sizeof *s);
    s->key_parent = -1;
    s->key_hash = HASH_ROOT;
}

void kv_seq_set_salt(struct kv_seq *s, uint64_t salt)
{
    ASSERT(s->n_blocks == 0);
    s->salt = salt;
    s->key_hash = root_hash(salt);
}

void kv_seq_fini(struct kv_seq *s)
{
    free(s->blocks);
    kv_seq_init(s);
}

static int table_push(struct kv_seq *s, int32_t b)
{
    if (s->n_blocks == s->cap) {
        int cap = s->cap ? s->cap * 2 : 16;
        int32_t *nb = realloc(s->blocks, (size_t)cap * sizeof *nb);
        if (!nb) return ERR_NOMEM;
        s->blocks = nb;
        s->cap = cap;
    }
    s->blocks[s->n_blocks++] = b;
    return 0;
}

static void ref_take(struct kv_cache *kv, int32_t b)
{
    ASSERT_BLOCK(kv, b);
    ASSERT(kv->ref[b] >= 0);
    ASSERT(kv->ref[b] > 0 || kv->keyed[b]); /* unreferenced: only a cached block */
    if (kv->ref[b]++ == 0 && kv->keyed[b]) lru_unlink(kv, b);
}

static void ref_drop(struct kv_cache *kv, int32_t b)
{
    ASSERT_BLOCK(kv, b);
    ASSERT(kv->ref[b] > 0); /* refs never go negative */
    if (--kv->ref[b] > 0) return;
    if (kv->keyed[b]) {
        lru_push_tail(kv, b);
    } else {
        ASSERT(kv->n_free + kv->n_lru < kv->n_blocks);
        kv->free_stack[kv->n_free++] = b;
    }
}

void kv_seq_free(struct kv_cache *kv, struct kv_seq *s)
{
    for (int i = s->n_blocks - 1; i >= 0; i--) ref_drop(kv, s->blocks[i]);
    s->n_blocks = 0;
    s->n_keyed = 0;
    s->key_parent = -1;
    s->key_parent_gen = 0;
    s->key_hash = root_hash(s->salt);
}

int kv_seq_match(struct kv_cache *kv, struct kv_seq *s, const int32_t *tokens, int n)
{
    if (!kv->prefix || s->n_blocks != 0 || n < 1) return 0;
    int max_blocks = (n - 1) / kv->bt;
    int matched = 0;
    while (matched < max_blocks) {
        const int32_t *t = tokens + (size_t)matched * kv->bt;
        uint64_t h = chain_hash(s->key_hash, t, kv->bt);
        int32_t b = key_find(kv, s->salt, h, s->key_parent, s->key_parent_gen, t);
        if (b < 0 || table_push(s, b) != 0) break;
        ref_take(kv, b);
        s->key_hash = h;
        s->key_parent = b;
        s->key_parent_gen = kv->gen[b];
        matched++;
    }
    s->n_keyed = matched;
    return matched * kv->bt;
}

int kv_seq_reserve(struct kv_cache *kv, struct kv_seq *s, int n_tokens)
{
    int need = kv_blocks_for(kv, n_tokens) - s->n_blocks;
    if (need <= 0) return 0;
    if (need > kv->n_free + kv->n_lru) return ERR_NOMEM;
    for (int i = 0; i < need; i++) {
        int32_t b;
        if (kv->n_free > 0) {
            b = kv->free_stack[--kv->n_free];
            ASSERT_BLOCK(kv, b);
            ASSERT(kv->ref[b] == 0 && !kv->keyed[b]);
        } else {
            b = kv->lru_head;    /* evict the least recently used */
            ASSERT_BLOCK(kv, b); /* n_lru > 0 here, so the list is not empty */
            ASSERT(kv->ref[b] == 0);
            lru_unlink(kv, b);
            key_remove(kv, b);
        }
        if (table_push(s, b) != 0) {
            ASSERT(kv->n_free + kv->n_lru < kv->n_blocks);
            kv->free_stack[kv->n_free++] = b;
            return ERR_NOMEM; /* earlier blocks stay in the table */
        }
        kv->ref[b] = 1;
    }
    return 0;
}

void kv_seq_commit(struct kv_cache *kv, struct kv_seq *s, const int32_t *tokens, int n_computed)
{
    if (!kv->prefix) return;
    int full = n_computed / kv->bt;
    if (full > s->n_blocks) full = s->n_blocks;
    while (s->n_keyed < full) {
        int i = s->n_keyed;
        const int32_t *t = tokens + (size_t)i * kv->bt;
        uint64_t h = chain_hash(s->key_hash, t, kv->bt);
        int32_t canon = key_find(kv, s->salt, h, s->key_parent, s->key_parent_gen, t);
        if (canon < 0) { /* first of its kind: key our own block */
            canon = s->blocks[i];
            ASSERT_BLOCK(kv, canon);
            ASSERT(kv->ref[canon] > 0); /* our table holds it */
            key_insert(kv, canon, s->salt, h, s->key_parent, s->key_parent_gen, t);
        }
        s->key_hash = h;
        s->key_parent = canon;
        s->key_parent_gen = kv->gen[canon];
        s->n_keyed++;
    }
}

int kv_check(const struct kv_cache *kv, const struct kv_seq *const *seqs, int n_seqs, char *err)
{
    int rc = 0;
    int32_t *want = calloc((size_t)kv->n_blocks, sizeof *want);
    uint8_t *where = calloc((size_t)kv->n_blocks, 1); /* 1 free, 2 lru */
    if (!want || !where) {
        rc = err_set(err, ERR_NOMEM, "kv_check: out of memory");
        goto out;
    }
    for (int i = 0; i < n_seqs; i++)
        for (int j = 0; j < seqs[i]->n_blocks; j++) {
            int32_t b = seqs[i]->blocks[j];
            if (b < 0 || b >= kv->n_blocks) {
                rc = err_set(err, ERR_INTERNAL, "seq %d table[%d] = %d out of range", i, j, b);
                goto out;
            }
            want[b]++;
        }
    for (int i = 0; i < kv->n_free; i++) {
        int32_t b = kv->free_stack[i];
        if (where[b]) {
            rc = err_set(err, ERR_INTERNAL, "block %d twice on the free list", b);
            goto out;
        }
        where[b] = 1;
    }
    int n = 0;
    for (int32_t b = kv->lru_head; b >= 0; b = kv->lru_next[b]) {
        if (where[b] || ++n > kv->n_lru) {
            rc = err_set(err, ERR_INTERNAL, "block %d: LRU list corrupt", b);
            goto out;
        }
        where[b] = 2;
    }
    if (n != kv->n_lru) {
        rc = err_set(err, ERR_INTERNAL, "LRU count %d, list length %d", kv->n_lru, n);
        goto out;
    }
    for (int b = 0; b < kv->n_blocks; b++) {
        if (kv->ref[b] != want[b]) {
            rc = err_set(err, ERR_INTERNAL, "block %d: ref %d but %d table entries", b, kv->ref[b],
                         want[b]);
            goto out;
        }
        int ok = kv->ref[b] > 0
                     ? where[b] == 0
                     : (where[b] == 1 && !kv->keyed[b]) || (where[b] == 2 && kv->keyed[b]);
        if (!ok) {
            rc = err_set(err, ERR_INTERNAL, "block %d: ref %d, keyed %d, list %d", b, kv->ref[b],
                         kv->keyed[b], where[b]);
            goto out;
        }
    }
out:
    free(want);
    free(where);
    return rc;
}
