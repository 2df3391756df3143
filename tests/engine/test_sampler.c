/* test_sampler.c - every sampler knob on small and vocabulary-sized rows.
 *
 * Checks: greedy = argmax (ties to the lowest id); same seed -> same tokens, different seeds
 * differ; top-k / top-p / min-p never draw outside their sets and draw inside them with the
 * expected frequencies; temperature sharpens; penalties and logit bias move the right logits;
 * banned ids are never drawn; logprobs are normalized and top-N is sorted; padding ids are never
 * drawn; a 129,280-entry row works.
 */
#include "../check.h"

#include "../../common/err.h"
#include "../../engine/sched/samp.h"

#include <math.h>
#include <stdint.h>

static struct eng_sampling defaults(void)
{
    struct eng_sampling p;
    memset(&p, 0, sizeof p);
    p.temperature = 1.0f;
    p.top_p = 1.0f;
    p.repetition_penalty = 1.0f;
    return p;
}

static int32_t draw(struct samp *s, const float *row, int n, const struct eng_sampling *p,
                    struct samp_rng *rng, struct samp_out *o)
{
    static float buf[300000];
    memcpy(buf, row, (size_t)n * sizeof *row);
    struct samp_input in = {.p = p};
    samp_sample(s, buf, n, &in, rng, o);
    return o->token;
}

int cmp(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void fill_random(float *row, int n, struct samp_rng *r, float scale)
{
    for (int i = 0; i < n; i++) row[i] = (float)(samp_rng_uniform(r) * 2.0 - 1.0) * scale;
}

int main(void)
{
    unsigned long long seed = check_seed();
    struct samp_rng gen;
    samp_rng_seed(&gen, seed);
    char err[ERR_LEN];
    struct samp *s;
    const int V = 129280;
    CHECK_EQ(samp_create(V, &s, err), 0);
    static float row[129280];
    struct samp_out o;
    struct samp_rng rng;

    /* greedy: argmax, ties to the lowest id */
    {
        struct eng_sampling p = defaults();
        p.temperature = 0;
        fill_random(row, V, &gen, 5.0f);
        row[777] = 50.0f;
        row[90000] = 50.0f;
        samp_rng_seed(&rng, 1);
        CHECK_EQ(draw(s, row, V, &p, &rng, &o), 777);
        p.temperature = 0.7f;
        p.top_k = 1;
        CHECK_EQ(draw(s, row, V, &p, &rng, &o), 777);
    }

    /* seeds: same seed, same sequence; different seeds differ */
    {
        struct eng_sampling p = defaults();
        fill_random(row, V, &gen, 1.0f);
        struct samp_rng a, b, c;
        samp_rng_seed(&a, 42);
        samp_rng_seed(&b, 42);
        samp_rng_seed(&c, 43);
        int same_ab = 1, same_ac = 1;
        for (int i = 0; i < 20; i++) {
            int32_t ta = draw(s, row, V, &p, &a, &o);
            int32_t tb = draw(s, row, V, &p, &b, &o);
            int32_t tc = draw(s, row, V, &p, &c, &o);
            same_ab &= ta == tb;
            same_ac &= ta == tc;
        }
        CHECK(same_ab);
        CHECK(!same_ac);
    }

    /* top-k: only the k largest; roughly uniform when they are equal */
    {
        struct eng_sampling p = defaults();
        const int V2 = 3000; /* frequencies on a small row; one full-size draw */
        fill_random(row, V, &gen, 1.0f);
        int top[5] = {5, 1000, 1500, 2000, 2999};
        for (int i = 0; i < 5; i++) row[top[i]] = 10.0f;
        p.top_k = 5;
        samp_rng_seed(&rng, seed);
        {
            int32_t t0 = draw(s, row, V, &p, &rng, &o);
            CHECK(t0 == 5 || t0 == 1000 || t0 == 1500 || t0 == 2000 || t0 == 2999);
        }
        int hits[5] = {0};
        for (int it = 0; it < 2000; it++) {
            int32_t t = draw(s, row, V2, &p, &rng, &o);
            int k = -1;
            for (int i = 0; i < 5; i++)
                if (t == top[i]) k = i;
            CHECK(k >= 0);
            hits[k]++;
        }
        for (int i = 0; i < 5; i++) CHECK(hits[i] > 300 && hits[i] < 500);
    }

    /* top-p on a known distribution: p = [0.5, 0.25, 0.125, 0.0625, ...] */
    {
        const int n = 20;
        float small[20];
        for (int i = 0; i < n; i++) small[i] = (float)(-i * log(2.0));
        struct eng_sampling p = defaults();
        p.top_p = 0.7f; /* nucleus = {0, 1}: 0.5 + 0.25 >= 0.7 */
        samp_rng_seed(&rng, seed);
        int c0 = 0, c1 = 0;
        for (int it = 0; it < 3000; it++) {
            int32_t t = draw(s, small, n, &p, &rng, &o);
            CHECK(t == 0 || t == 1);
            c0 += t == 0;
            c1 += t == 1;
        }
        CHECK_NEAR((double)c0 / 3000, 2.0 / 3, 0.05);
        p.top_p = 0.5f; /* exactly the first */
        for (int it = 0; it < 100; it++) CHECK_EQ(draw(s, small, n, &p, &rng, &o), 0);
        /* the same on a shuffled full-size row */
        fill_random(row, V, &gen, 1.0f);
        for (int i = 0; i < V; i++) row[i] -= 40.0f;
        int ids[4] = {9, 70000, 3, 129000};
        for (int i = 0; i < 4; i++) row[ids[i]] = (float)(-i * log(2.0));
        p.top_p = 0.8f; /* 0.5 + 0.25 + 0.125 (of ~0.9375) */
        for (int it = 0; it < 500; it++) {
            int32_t t = draw(s, row, V, &p, &rng, &o);
            CHECK(t == 9 || t == 70000 || t == 3);
        }
    }

    /* top-p on a full random row against a sorted reference nucleus */
    {
        struct eng_sampling p = defaults();
        p.top_p = 0.6f;
        for (int i = 0; i < V; i++) { /* a peaked row: a few hundred ids carry the mass */
            double u = samp_rng_uniform(&gen);
            row[i] = (float)(u < 0.003 ? 8.0 + 4.0 * samp_rng_uniform(&gen) : 6.0 * u - 3.0);
        }
        static float sorted[129280];
        float m = -1e30f;
        for (int i = 0; i < V; i++) m = row[i] > m ? row[i] : m;
        double z = 0;
        for (int i = 0; i < V; i++) z += exp((double)row[i] - m);
        memcpy(sorted, row, sizeof sorted);
        qsort(sorted, (size_t)V, sizeof *sorted, cmp); /* descending */
        double acc = 0;
        float cutoff = sorted[0];
        for (int i = 0; i < V && acc < 0.6 * z; i++) {
            acc += exp((double)sorted[i] - m);
            cutoff = sorted[i];
        }
        samp_rng_seed(&rng, seed);
        int distinct = 0;
        static uint8_t hit[129280];
        memset(hit, 0, sizeof hit);
        for (int it = 0; it < 300; it++) {
            int32_t t = draw(s, row, V, &p, &rng, &o);
            CHECK(row[t] >= cutoff - 1e-6f);
            distinct += !hit[t];
            hit[t] = 1;
        }
        CHECK(distinct > 10);
    }

    /* min-p: keep p >= min_p * p_max */
    {
        float small[4] = {0.0f, (float)log(0.5), (float)log(0.2), (float)log(0.05)};
        struct eng_sampling p = defaults();
        p.min_p = 0.3f;
        samp_rng_seed(&rng, seed);
        for (int it = 0; it < 500; it++) {
            int32_t t = draw(s, small, 4, &p, &rng, &o);
            CHECK(t == 0 || t == 1);
        }
    }

    /* temperature: low temperature concentrates on the max */
    {
        float small[2] = {1.0f, 0.0f};
        struct eng_sampling p = defaults();
        p.temperature = 0.1f; /* p(1) = 1/(1+e^10) ~ 4.5e-5 */
        samp_rng_seed(&rng, seed);
        int c1 = 0;
        for (int it = 0; it < 2000; it++) c1 += draw(s, small, 2, &p, &rng, &o) == 1;
        CHECK(c1 <= 3);
        p.temperature = 1.0f; /* p(1) = 0.269 */
        c1 = 0;
        for (int it = 0; it < 4000; it++) c1 += draw(s, small, 2, &p, &rng, &o) == 1;
        CHECK_NEAR((double)c1 / 4000, 1.0 / (1.0 + exp(1.0)), 0.03);
    }

    /* logit bias forces a token; -100 excludes one */
    {
        struct eng_sampling p = defaults();
        fill_random(row, V, &gen, 3.0f);
        int32_t ids[2] = {4242, 17};
        float vals[2] = {100.0f, -100.0f};
        p.n_logit_bias = 1;
        p.logit_bias_ids = ids;
        p.logit_bias_vals = vals;
        samp_rng_seed(&rng, seed);
        for (int it = 0; it < 20; it++) CHECK_EQ(draw(s, row, V, &p, &rng, &o), 4242);
        p.temperature = 0;
        CHECK_EQ(draw(s, row, V, &p, &rng, &o), 4242);
        float small[3] = {5.0f, 1.0f, 0.0f};
        int32_t id0 = 0;
        float m100 = -100.0f;
        p.logit_bias_ids = &id0;
        p.logit_bias_vals = &m100;
        CHECK_EQ(draw(s, small, 3, &p, &rng, &o), 1);
        CHECK_EQ(samp_check(&p, 3, err), 0);
        id0 = 3;
        CHECK_EQ(samp_check(&p, 3, err), ERR_INVAL);
    }

    /* penalties: exact logit changes, observed through logprobs of a greedy draw */
    {
        float small[4] = {2.0f, -1.0f, 1.0f, 0.5f};
        int32_t prompt[2] = {0, 1};
        int32_t gen_ids[3] = {2, 2, 3};
        struct eng_sampling p = defaults();
        p.temperature = 0;
        p.top_logprobs = 4;
        p.repetition_penalty = 2.0f;
        p.presence_penalty = 0.5f;
        p.frequency_penalty = 0.25f;
        float buf[4];
        memcpy(buf, small, sizeof buf);
        struct samp_input in = {
            .p = &p, .prompt = prompt, .n_prompt = 2, .gen = gen_ids, .n_gen = 3};
        samp_sample(s, buf, 4, &in, &rng, &o);
        /* 0: 2/2 = 1; 1: -1*2 = -2; 2: 1/2 - 0.5 - 0.5 = -0.5; 3: 0.5/2 - 0.5 - 0.25 = -0.5 */
        CHECK_NEAR(buf[0], 1.0, 1e-6);
        CHECK_NEAR(buf[1], -2.0, 1e-6);
        CHECK_NEAR(buf[2], -0.5, 1e-6);
        CHECK_NEAR(buf[3], -0.5, 1e-6);
        CHECK_EQ(o.token, 0);
        /* top logprobs sorted, ties by lower id, normalized */
        CHECK_EQ(o.n_top, 4);
        CHECK_EQ(o.top_ids[0], 0);
        CHECK_EQ(o.top_ids[1], 2);
        CHECK_EQ(o.top_ids[2], 3);
        CHECK_EQ(o.top_ids[3], 1);
        double z = 0;
        for (int i = 0; i < 4; i++) z += exp(o.top_logprobs[i]);
        CHECK_NEAR(z, 1.0, 1e-5);
        CHECK_NEAR(o.logprob, o.top_logprobs[0], 1e-7);
        /* the scratch counters were reset: a second call without penalties changes nothing */
        struct eng_sampling q = defaults();
        q.temperature = 0;
        memcpy(buf, small, sizeof buf);
        struct samp_input in2 = {
            .p = &q, .prompt = prompt, .n_prompt = 2, .gen = gen_ids, .n_gen = 3};
        samp_sample(s, buf, 4, &in2, &rng, &o);
        for (int i = 0; i < 4; i++) CHECK_NEAR(buf[i], small[i], 0);
    }

    /* banned ids and padding: never drawn */
    {
        struct eng_sampling p = defaults();
        fill_random(row, V, &gen, 1.0f);
        row[100] = 30.0f;
        for (int i = V - 500; i < V; i++) row[i] = 60.0f; /* padding rows, huge logits */
        int32_t banned[1] = {100};
        samp_rng_seed(&rng, seed);
        for (int it = 0; it < 50; it++) {
            float *buf = malloc((size_t)V * sizeof *buf);
            memcpy(buf, row, (size_t)V * sizeof *buf);
            struct samp_input in = {.p = &p, .banned = banned, .n_banned = 1};
            samp_sample(s, buf, V - 500, &in, &rng, &o);
            CHECK(o.token != 100 && o.token < V - 500);
            free(buf);
        }
    }

    /* logprobs on a full row: normalization and shape */
    {
        struct eng_sampling p = defaults();
        p.logprobs = 1;
        p.top_logprobs = ENG_MAX_TOP_LOGPROBS;
        fill_random(row, V, &gen, 4.0f);
        float ref[129280];
        memcpy(ref, row, sizeof ref);
        samp_rng_seed(&rng, seed);
        draw(s, row, V, &p, &rng, &o);
        double m = -1e30, z = 0;
        for (int i = 0; i < V; i++) m = ref[i] > m ? ref[i] : m;
        for (int i = 0; i < V; i++) z += exp(ref[i] - m);
        double lse = m + log(z);
        CHECK_NEAR(o.logprob, ref[o.token] - lse, 1e-4);
        CHECK_EQ(o.n_top, ENG_MAX_TOP_LOGPROBS);
        for (int i = 0; i < o.n_top; i++) {
            CHECK_NEAR(o.top_logprobs[i], ref[o.top_ids[i]] - lse, 1e-4);
            if (i) CHECK(o.top_logprobs[i] <= o.top_logprobs[i - 1]);
        }
        /* the top list holds the largest values: nothing left out is above its last one (a
         * count of the values above it would be wrong when the last one ties with another:
         * 129280 random floats hold equal values often enough) */
        float last = ref[o.top_ids[o.n_top - 1]];
        static uint8_t listed[129280];
        memset(listed, 0, sizeof listed);
        for (int i = 0; i < o.n_top; i++) {
            CHECK(!listed[o.top_ids[i]]);
            listed[o.top_ids[i]] = 1;
        }
        for (int i = 0; i < V; i++)
            if (!listed[i]) CHECK(ref[i] <= last);
    }

    /* parameter checks */
    {
        struct eng_sampling p = defaults();
        CHECK_EQ(samp_check(&p, 10, err), 0);
        p.top_p = 0;
        CHECK_EQ(samp_check(&p, 10, err), ERR_INVAL);
        p = defaults();
        p.temperature = -1;
        CHECK_EQ(samp_check(&p, 10, err), ERR_INVAL);
        p = defaults();
        p.top_logprobs = 21;
        CHECK_EQ(samp_check(&p, 10, err), ERR_INVAL);
        p = defaults();
        p.repetition_penalty = 0;
        CHECK_EQ(samp_check(&p, 10, err), ERR_INVAL);
    }

    samp_destroy(s);
    return 0;
}
