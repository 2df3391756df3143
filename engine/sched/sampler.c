/* sampler.c - token sampling over a large vocabulary without sorting it.
 *
 * What: see samp.h for the pipeline. Why this shape: DeepSeek-V3 has 129,280 logits per token
 * and a step samples up to max_running rows, so every stage is linear in the vocabulary: the
 * penalties touch only the ids that occurred (a count array that is reset after use), top-k and
 * top-p are quickselect-style partitions, min-p is one pass, and logprob top-N keeps a small
 * insertion-sorted array.
 *
 * Determinism: candidates are ordered by a total order (larger value first, then lower id), so
 * the top-k set, the nucleus and the order in which the draw walks the survivors depend only on
 * the values, never on pivot choices. Same logits + parameters + RNG state -> same token.
 *
 * Threads: a struct samp is owned by the engine thread; nothing here is shared.
 */
#include "samp.h"

#include "common/err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- RNG: xoshiro256** seeded through splitmix64 (public-domain algorithms by Vigna) */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void samp_rng_seed(struct samp_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t samp_rng_next(struct samp_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double samp_rng_uniform(struct samp_rng *r) { return (double)(samp_rng_next(r) >> 11) * 0x1.0p-53; }

/* ---- a fast exp for probabilities
 *
 * exp(x) = 2^n * 2^f with n = round(x log2 e), |f| <= 1/2, 2^f from a degree-6 polynomial
 * (relative error below 2e-7, well under what sampling or logprobs can notice). libm's exp is
 * the single largest cost of sampling a 129k row otherwise. Branch-free so that loops over a
 * row vectorize; inputs below -87 (and -inf) give exactly 0. */
static inline float fast_exp(float x)
{
    float c = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    float y = c * 1.44269504088896341f;
    float n = (y + 12582912.0f) - 12582912.0f; /* round to nearest (|y| < 2^22), no libm */
    float f = y - n;
    float p = 1.5403530e-4f;
    p = p * f + 1.3333558e-3f;
    p = p * f + 9.6181291e-3f;
    p = p * f + 5.5504109e-2f;
    p = p * f + 2.4022651e-1f;
    p = p * f + 6.9314718e-1f;
    p = p * f + 1.0f;
    union {
        uint32_t u;
        float f;
    } b = {.u = (uint32_t)((int32_t)n + 127) << 23};
    return x >= -87.0f ? p * b.f : 0.0f;
}

/* The same on 4 lanes with GCC/Clang vector extensions (16-byte vectors: the x86-64 / AArch64
 * baseline, no ISA flags); comparisons give all-ones lane masks. */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

static inline v4f v4_sel(v4i m, v4f a, v4f b) { return (v4f)(((v4i)a & m) | ((v4i)b & ~m)); }

static inline v4f fast_exp4(v4f x)
{
    const v4f lo = {-87, -87, -87, -87}, hi = {88, 88, 88, 88}, zero = {0, 0, 0, 0};
    v4f c = v4_sel(x < lo, lo, x);
    c = v4_sel(c > hi, hi, c);
    v4f y = c * 1.44269504088896341f;
    v4f n = (y + 12582912.0f) - 12582912.0f;
    v4f f = y - n;
    v4f p = f * 1.5403530e-4f + 1.3333558e-3f;
    p = p * f + 9.6181291e-3f;
    p = p * f + 5.5504109e-2f;
    p = p * f + 2.4022651e-1f;
    p = p * f + 6.9314718e-1f;
    p = p * f + 1.0f;
    v4i bits = (__builtin_convertvector(n, v4i) + 127) << 23;
    return v4_sel(x >= lo, p * (v4f)bits, zero);
}

/* pr[i] = exp((l[i] - m) * inv_t) for i < n (lane results equal fast_exp's) */
static void exp_row(const float *restrict l, int n, float m, float inv_t, float *restrict pr)
{
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v4f x0, x1;
        memcpy(&x0, l + i, sizeof x0);
        memcpy(&x1, l + i + 4, sizeof x1);
        v4f r0 = fast_exp4((x0 - m) * inv_t), r1 = fast_exp4((x1 - m) * inv_t);
        memcpy(pr + i, &r0, sizeof r0);
        memcpy(pr + i + 4, &r1, sizeof r1);
    }
    for (; i < n; i++) pr[i] = fast_exp((l[i] - m) * inv_t);
}

/* Sum of v[0..n) over entries >= thr, with 8 independent float accumulators (so the adds
 * pipeline and vectorize), returned as a double. */
static double masked_sum(const float *restrict v, int n, float thr)
{
    float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) a[k] += v[i + k] >= thr ? v[i + k] : 0.0f;
    double z = 0.0;
    for (; i < n; i++) z += v[i] >= thr ? v[i] : 0.0f;
    for (int k = 0; k < 8; k++) z += a[k];
    return z;
}

/* log(sum(exp(l[i] - m))) + m over l[0..n) (NaN-free), with pr[0..n) as scratch */
static double log_sum_exp(const float *l, int n, float m, float *pr)
{
    exp_row(l, n, m, 1.0f, pr);
    double z = 0.0;
    for (int i = 0; i < n; i += 4096) z += masked_sum(pr + i, n - i < 4096 ? n - i : 4096, 0.0f);
    return (double)m + log(z);
}

/* ---- scratch */

#define SAMP_BLK 1024

struct cand {
    float v; /* logit, then unnormalized probability */
    int32_t id;
};

struct samp {
    int vocab;
    struct cand *c;       /* [vocab] candidates */
    float *pr;            /* [vocab] unnormalized probabilities */
    double *blk;          /* [vocab / SAMP_BLK + 1] their block sums */
    double tp_mass[1024]; /* top-p buckets (TOP_P_BUCKETS) */
    int tp_count[1024];
    int32_t *cnt;  /* [vocab] occurrence counts, all zero between calls */
    uint8_t *seen; /* [vocab] repetition-penalty marks, all zero between calls */
};

int samp_create(int vocab, struct samp **out, char *err)
{
    *out = NULL;
    if (vocab < 1) return err_set(err, ERR_INVAL, "sampler: vocabulary size %d", vocab);
    struct samp *s = calloc(1, sizeof *s);
    if (!s) return err_set(err, ERR_NOMEM, "sampler: out of memory");
    s->vocab = vocab;
    s->c = malloc((size_t)vocab * sizeof *s->c);
    s->cnt = calloc((size_t)vocab, sizeof *s->cnt);
    s->seen = calloc((size_t)vocab, 1);
    s->pr = malloc((size_t)vocab * sizeof *s->pr);
    s->blk = malloc(((size_t)vocab / SAMP_BLK + 1) * sizeof *s->blk);
    if (!s->c || !s->cnt || !s->seen || !s->pr || !s->blk) {
        samp_destroy(s);
        return err_set(err, ERR_NOMEM, "sampler: out of memory for a vocabulary of %d", vocab);
    }
    *out = s;
    return 0;
}

void samp_destroy(struct samp *s)
{
    if (!s) return;
    free(s->c);
    free(s->cnt);
    free(s->seen);
    free(s->pr);
    free(s->blk);
    free(s);
}

int samp_check(const struct eng_sampling *p, int vocab, char *err)
{
    if (!(p->temperature >= 0.0f && p->temperature <= 100.0f))
        return err_set(err, ERR_INVAL, "temperature must be in [0, 100], got %g", p->temperature);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return err_set(err, ERR_INVAL, "top_p must be in (0, 1], got %g", p->top_p);
    if (p->top_k < 0) return err_set(err, ERR_INVAL, "top_k must be >= 0, got %d", p->top_k);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return err_set(err, ERR_INVAL, "min_p must be in [0, 1], got %g", p->min_p);
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return err_set(err, ERR_INVAL, "presence_penalty must be in [-2, 2], got %g",
                       p->presence_penalty);
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return err_set(err, ERR_INVAL, "frequency_penalty must be in [-2, 2], got %g",
                       p->frequency_penalty);
    if (!(p->repetition_penalty > 0.0f && p->repetition_penalty <= 100.0f))
        return err_set(err, ERR_INVAL, "repetition_penalty must be in (0, 100], got %g",
                       p->repetition_penalty);
    if (p->top_logprobs < 0 || p->top_logprobs > ENG_MAX_TOP_LOGPROBS)
        return err_set(err, ERR_INVAL, "top_logprobs must be in [0, %d], got %d",
                       ENG_MAX_TOP_LOGPROBS, p->top_logprobs);
    if (p->n_logit_bias < 0 || (p->n_logit_bias > 0 && (!p->logit_bias_ids || !p->logit_bias_vals)))
        return err_set(err, ERR_INVAL, "logit_bias: bad array");
    for (int i = 0; i < p->n_logit_bias; i++) {
        if (p->logit_bias_ids[i] < 0 || p->logit_bias_ids[i] >= vocab)
            return err_set(err, ERR_INVAL, "logit_bias: token id %d out of range [0, %d)",
                           (int)p->logit_bias_ids[i], vocab);
        if (!(p->logit_bias_vals[i] >= -100.0f && p->logit_bias_vals[i] <= 100.0f))
            return err_set(err, ERR_INVAL, "logit_bias: value for token %d must be in [-100, 100]",
                           (int)p->logit_bias_ids[i]);
    }
    return 0;
}

/* the total order: a before b */
static inline int cand_before(const struct cand *a, const struct cand *b)
{
    return a->v > b->v || (a->v == b->v && a->id < b->id);
}

static inline void cand_swap(struct cand *a, struct cand *b)
{
    struct cand t = *a;
    *a = *b;
    *b = t;
}

/* Partition c[lo..hi) (hi - lo >= 1) around a median-of-three pivot: afterwards the elements
 * before the returned index come before the pivot in the total order, those after it after. */
static int partition(struct cand *c, int lo, int hi)
{
    int mid = lo + (hi - lo) / 2, last = hi - 1;
    if (cand_before(&c[mid], &c[lo])) cand_swap(&c[mid], &c[lo]);
    if (cand_before(&c[last], &c[lo])) cand_swap(&c[last], &c[lo]);
    if (cand_before(&c[last], &c[mid])) cand_swap(&c[last], &c[mid]);
    /* now c[lo] <= c[mid] <= c[last] in order "before"; use the median as pivot */
    cand_swap(&c[mid], &c[last]);
    int q = lo;
    for (int i = lo; i < last; i++)
        if (cand_before(&c[i], &c[last])) cand_swap(&c[i], &c[q++]);
    cand_swap(&c[q], &c[last]);
    return q;
}

/* Rearrange c[0..n) so that c[0..k) are the k first in the total order (unordered). */
static void select_top_k(struct cand *c, int n, int k)
{
    int lo = 0, hi = n;
    while (hi - lo > 1) {
        int q = partition(c, lo, hi);
        if (q == k || q + 1 == k) return;
        if (q > k) hi = q;
        else lo = q + 1;
    }
}

/* c[0..n) hold unnormalized probabilities. Rearrange so that c[0..m) are the smallest leading
 * set in the total order whose mass reaches `target`; return m (n if nothing reaches it). */
static int select_mass(struct cand *c, int n, double target)
{
    double acc = 0.0;
    int lo = 0, hi = n;
    while (lo < hi) {
        int q = partition(c, lo, hi);
        double gt = 0.0;
        for (int i = lo; i < q; i++) gt += c[i].v;
        if (acc + gt >= target && q > lo) {
            hi = q;
        } else if (acc + gt + c[q].v >= target) {
            return q + 1;
        } else {
            acc += gt + c[q].v;
            lo = q + 1;
        }
    }
    return lo > 0 ? lo : n;
}

/* The nucleus: as select_mass with target = top_p * total, in two linear passes. Probabilities
 * (0 < v <= 1) are bucketed by their float bits (exponent and 3 mantissa bits: each bucket spans
 * a factor 2^(1/8), larger values in lower buckets); buckets before the one where the
 * cumulative mass crosses the target are wholly in, and only that boundary bucket is
 * partitioned. The result is the same set as select_mass's. */
#define TOP_P_BUCKETS 1024
static int select_top_p(struct cand *c, int n, double total, double top_p, double *mass, int *count)
{
    double target = top_p * total;
    if (n < 4096) return select_mass(c, n, target);
    memset(mass, 0, TOP_P_BUCKETS * sizeof *mass);
    memset(count, 0, TOP_P_BUCKETS * sizeof *count);
    uint32_t one = 0x3f800000u;
    for (int i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &c[i].v, sizeof bits);
        uint32_t b = (one - bits) >> 20;
        if (b >= TOP_P_BUCKETS) b = TOP_P_BUCKETS - 1;
        mass[b] += c[i].v;
        count[b]++;
    }
    double acc = 0.0;
    int bnd = 0, before = 0;
    while (bnd < TOP_P_BUCKETS - 1 && acc + mass[bnd] < target) {
        acc += mass[bnd];
        before += count[bnd++];
    }
    /* move the buckets before bnd to the front, then bucket bnd after them */
    int front = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = front; i < n; i++) {
            uint32_t bits;
            memcpy(&bits, &c[i].v, sizeof bits);
            uint32_t b = (one - bits) >> 20;
            if (b >= TOP_P_BUCKETS) b = TOP_P_BUCKETS - 1;
            if (pass == 0 ? (int)b < bnd : (int)b == bnd) cand_swap(&c[i], &c[front++]);
        }
    return before + select_mass(c + before, front - before, target - acc);
}

/* Keep the top n entries (descending, ties by lower id) of logits[0..n_valid) in ids/vals. */
static int top_n_logits(const float *l, int n_valid, int n, int32_t *ids, float *vals)
{
    int have = 0;
    for (int i = 0; i < n_valid; i++) {
        float v = l[i];
        if (have == n && !(v > vals[n - 1])) continue; /* equal values keep the lower id */
        int j = have < n ? have++ : n - 1;
        while (j > 0 && v > vals[j - 1]) {
            vals[j] = vals[j - 1];
            ids[j] = ids[j - 1];
            j--;
        }
        vals[j] = v;
        ids[j] = i;
    }
    return have;
}

static void apply_penalties(struct samp *s, float *l, int n_valid, const struct samp_input *in)
{
    const struct eng_sampling *p = in->p;
    for (int i = 0; i < p->n_logit_bias; i++) {
        int32_t id = p->logit_bias_ids[i];
        if (id >= 0 && id < n_valid) l[id] += p->logit_bias_vals[i];
    }
    if (p->repetition_penalty != 1.0f) {
        float rp = p->repetition_penalty;
        for (int pass = 0; pass < 2; pass++) {
            const int32_t *t = pass ? in->gen : in->prompt;
            int n = pass ? in->n_gen : in->n_prompt;
            for (int i = 0; i < n; i++) {
                int32_t id = t[i];
                if (id < 0 || id >= n_valid || s->seen[id]) continue;
                s->seen[id] = 1;
                l[id] = l[id] > 0.0f ? l[id] / rp : l[id] * rp;
            }
        }
        for (int pass = 0; pass < 2; pass++) {
            const int32_t *t = pass ? in->gen : in->prompt;
            int n = pass ? in->n_gen : in->n_prompt;
            for (int i = 0; i < n; i++)
                if (t[i] >= 0 && t[i] < n_valid) s->seen[t[i]] = 0;
        }
    }
    if (p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f) {
        for (int i = 0; i < in->n_gen; i++)
            if (in->gen[i] >= 0 && in->gen[i] < n_valid) s->cnt[in->gen[i]]++;
        for (int i = 0; i < in->n_gen; i++) {
            int32_t id = in->gen[i];
            if (id < 0 || id >= n_valid || s->cnt[id] == 0) continue;
            l[id] -= p->presence_penalty + p->frequency_penalty * (float)s->cnt[id];
            s->cnt[id] = 0;
        }
    }
    for (int i = 0; i < in->n_banned; i++)
        if (in->banned[i] >= 0 && in->banned[i] < n_valid) l[in->banned[i]] = -INFINITY;
}

void samp_sample(struct samp *s, float *l, int n_valid, const struct samp_input *in,
                 struct samp_rng *rng, struct samp_out *out)
{
    const struct eng_sampling *p = in->p;
    if (n_valid > s->vocab) n_valid = s->vocab;
    apply_penalties(s, l, n_valid, in);
    /* one pass: NaN -> -inf, the max and the argmax (ties to the lowest id) */
    float lmax = -INFINITY;
    int32_t amax = -1;
    for (int i = 0; i < n_valid; i++) {
        float v = l[i];
        if (isnan(v)) {
            l[i] = -INFINITY;
        } else if (v > lmax) {
            lmax = v;
            amax = i;
        }
    }
    int want_lp = p->logprobs || p->top_logprobs > 0;
    /* the log-softmax normalizer of the processed logits, only when logprobs are wanted */
    double lse = want_lp && lmax > -INFINITY ? log_sum_exp(l, n_valid, lmax, s->pr) : 0.0;

    int32_t tok;
    if (p->temperature <= 0.0f || p->top_k == 1 || lmax == -INFINITY) {
        tok = amax < 0 ? 0 : amax;
        if (lmax == -INFINITY) { /* everything banned: lowest unbanned id */
            tok = 0;
            for (int32_t id = 0; id < n_valid; id++) {
                int banned = 0;
                for (int j = 0; j < in->n_banned; j++) banned |= in->banned[j] == id;
                if (!banned) {
                    tok = id;
                    break;
                }
            }
        }
    } else if (p->top_k == 0 && p->top_p >= 1.0f) {
        /* temperature (and min-p) only: no candidate list. Probabilities relative to the max
         * (which maps to exactly 1, so min-p is a plain threshold), block sums, then the draw
         * finds its block and walks inside it. */
        float thr = p->min_p > 0.0f ? p->min_p : 0.0f;
        exp_row(l, n_valid, lmax, 1.0f / p->temperature, s->pr);
        int nb = (n_valid + SAMP_BLK - 1) / SAMP_BLK;
        double total = 0.0;
        for (int b = 0; b < nb; b++) {
            int lo = b * SAMP_BLK, n = n_valid - lo < SAMP_BLK ? n_valid - lo : SAMP_BLK;
            s->blk[b] = masked_sum(s->pr + lo, n, thr);
            total += s->blk[b];
        }
        double r = samp_rng_uniform(rng) * total, acc = 0.0;
        int b = 0;
        while (b < nb - 1 && !(r < acc + s->blk[b])) acc += s->blk[b++];
        while (b > 0 && s->blk[b] <= 0.0) b--; /* rounding at the very end */
        int lo = b * SAMP_BLK, hi = lo + SAMP_BLK < n_valid ? lo + SAMP_BLK : n_valid;
        tok = amax;
        for (int i = lo; i < hi; i++) {
            float v = s->pr[i];
            if (!(v >= thr) || v <= 0.0f) continue;
            tok = i; /* the last eligible if r is not reached */
            acc += v;
            if (r < acc) break;
        }
    } else {
        /* candidates: the logits divided by the temperature, relative to the max; ids more than
         * 40 below the max (relative probability < 5e-18) are left out */
        struct cand *c = s->c;
        int n = 0;
        float inv_t = 1.0f / p->temperature;
        double total = 0.0;
        if (p->top_k > 0 && p->top_k <= ENG_MAX_TOP_LOGPROBS * 4 && p->top_k < n_valid) {
            /* small k: one pass keeping a sorted array of the k largest (rare inserts) */
            int32_t ids[ENG_MAX_TOP_LOGPROBS * 4];
            float vals[ENG_MAX_TOP_LOGPROBS * 4];
            int k = top_n_logits(l, n_valid, p->top_k, ids, vals);
            for (int i = 0; i < k; i++) {
                float x = (vals[i] - lmax) * inv_t;
                if (x < -40.0f) break;
                c[n] = (struct cand){fast_exp(x), ids[i]};
                total += c[n++].v;
            }
        } else {
            /* probabilities of the whole row (vectorized), kept above exp(-40) */
            exp_row(l, n_valid, lmax, inv_t, s->pr);
            for (int i = 0; i < n_valid; i++)
                if (s->pr[i] >= 4.25e-18f) c[n++] = (struct cand){s->pr[i], i};
            if (p->top_k > 0 && p->top_k < n) {
                select_top_k(c, n, p->top_k); /* exp is monotonic: same set */
                n = p->top_k;
            }
            for (int i = 0; i < n; i++) total += c[i].v;
        }
        if (p->top_p < 1.0f && n > 1) {
            n = select_top_p(c, n, total, p->top_p, s->tp_mass, s->tp_count);
            total = 0.0;
            for (int i = 0; i < n; i++) total += c[i].v;
        }
        if (p->min_p > 0.0f) {
            int m = 0;
            total = 0.0;
            for (int i = 0; i < n; i++)
                if (c[i].v >= p->min_p) { /* p_max is 1 */
                    c[m++] = c[i];
                    total += c[i].v;
                }
            n = m;
        }
        double r = samp_rng_uniform(rng) * total, acc = 0.0;
        tok = c[n - 1].id;
        for (int i = 0; i < n; i++) {
            acc += c[i].v;
            if (r < acc) {
                tok = c[i].id;
                break;
            }
        }
    }

    out->token = tok;
    out->logprob = want_lp ? (float)((double)l[tok] - lse) : 0.0f;
    out->n_top = 0;
    int want = p->top_logprobs < n_valid ? p->top_logprobs : n_valid;
    if (want > 0) {
        float vals[ENG_MAX_TOP_LOGPROBS];
        out->n_top = top_n_logits(l, n_valid, want, out->top_ids, vals);
        for (int i = 0; i < out->n_top; i++) out->top_logprobs[i] = (float)((double)vals[i] - lse);
    }
}
